"""The main job: flow-consistency refinement on Ray Train, end to end.

    python jobs/refine.py                       # the embedded default: data, base model, refine, table
    python jobs/refine.py --set scaling.num_workers=2 --set run.name=ref2
    python jobs/refine.py --config my_run.yaml --resume
    ray job submit --working-dir . -- python jobs/refine.py --set data.root=/shared/synth ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # jobs/_args.py, also under `ray job submit`

import _args  # noqa: E402

from raymotion.train.launch import refine_job  # noqa: E402

if __name__ == "__main__":
    args = _args.parser(__doc__.splitlines()[0]).parse_args()
    _args.run(args, lambda: refine_job(_args.config(args), resume=args.resume))

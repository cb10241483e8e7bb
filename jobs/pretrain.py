"""Supervised pretraining on an annotation fraction, on Ray Train (renders the benchmark if missing).

    python jobs/pretrain.py --set train.fraction=0.05 --set run.name=pre5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _args  # noqa: E402

from raymotion.train.launch import pretrain_job  # noqa: E402

if __name__ == "__main__":
    args = _args.parser(__doc__.splitlines()[0]).parse_args()
    _args.run(args, lambda: pretrain_job(_args.config(args), resume=args.resume))

"""Ray Tune + Optuna sweeps of refinement from a sweep file (tune_configs/*.yaml).

    python jobs/sweep.py --config tune_configs/smoke.yaml
    python jobs/sweep.py --config tune_configs/paper_table.yaml     # rerun after an interruption to continue
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _args  # noqa: E402

from raymotion.tune.search_space import load_sweep  # noqa: E402
from raymotion.tune.sweep import run_sweep  # noqa: E402

if __name__ == "__main__":
    parser = _args.parser(__doc__.splitlines()[0], config_args=False)
    parser.add_argument("--config", required=True, help="a sweep file, e.g. tune_configs/smoke.yaml")
    args = parser.parse_args()
    print(f"results: {_args.run(args, lambda: run_sweep(load_sweep(args.config)))}")

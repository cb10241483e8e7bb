"""Ray Tune + Optuna sweeps of refinement from a sweep file (tune_configs/*.yaml).

    python jobs/sweep.py --config tune_configs/smoke.yaml
    python jobs/sweep.py --config tune_configs/paper_table.yaml     # rerun after an interruption to continue
"""

import argparse
import sys

from raymotion.tune.search_space import load_sweep
from raymotion.tune.sweep import run_sweep

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a sweep file, e.g. tune_configs/smoke.yaml")
    args = parser.parse_args()
    try:
        spec = load_sweep(args.config)
    except (ValueError, FileNotFoundError) as err:
        print(f"sweep.py: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"results: {run_sweep(spec)}")

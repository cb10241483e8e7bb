"""Copy a pretraining run's checkpoint into raymotion/assets/base_models as a shipped base model.

    python tools/ship_base_model.py runs/base-f10 --name small_cnn64_f10

Keeps what refinement needs (weights in float16, halving the file; the step; the resolved config, which
``launch.shipped_base_model`` matches against a run's recipe) and the run's metrics; drops the optimiser.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from raymotion.config import Config, to_dict
from raymotion.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from raymotion.train.launch import BASE_MODELS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    state = load_checkpoint(args.run_dir / CHECKPOINT_NAME)
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    out = BASE_MODELS_DIR / f"{args.name}.pt"
    save_checkpoint(out, {"model": weights, "step": state["step"], "kind": "pretrain",
                          "config": to_dict(Config.from_dict(state["config"])),
                          "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

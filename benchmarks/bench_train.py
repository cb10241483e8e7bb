"""Ray Train 1 worker against local mode, and 2 workers against 1, side by side in one run.

    python benchmarks/bench_train.py --pretrained runs/base-f10/checkpoint.pt [--steps 40] [--stage refine]
        [--data data/synth/default] [--crop-size 64]

Three refinement runs of the same config (the embedded-default recipe: small CNN, 64 px crops, low-res
body, 16 pairs + 32 labelled frames per worker and step, video pairs read locally with the flow cache, so
that the data pipeline is not what is measured), all with one torch thread per process:
  local  - the training function in Ray Train's local mode (``num_workers=0``: this process, no DDP), what
           ``raymotion refine`` runs;
  ray x1 - Ray Train, 1 worker (DDP wrapper, ray.train.report, checkpoints);
  ray x2 - Ray Train, 2 workers (gloo all-reduce), each with its own batch: twice the samples per step.
Steady-state speed is taken from log.jsonl's wall clock between the first logged step after warm-up and
the last step (start-up and final evaluation excluded); start-up is reported apart. Prints samples/s,
the overhead of Ray Train x1 against local mode (Ray's published figure: within 2.5 % of native DDP) and the
scaling of x2 against x1 (the limit on this 2-core machine is 2.0x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from raymotion.config import load_config
from raymotion.train.launch import run_training



def steady_rate(directory: Path, *, skip: int) -> tuple[float, float]:
    """(steps/s between the first logged step >= skip and the last, wall seconds at that first step)."""
    rows = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "wall_s" in r and "loss" in r]
    first = next(r for r in rows if r["step"] >= skip)
    last = rows[-1]
    return (last["step"] - first["step"]) / (last["wall_s"] - first["wall_s"]), first["wall_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", default="data/synth/default")
    parser.add_argument("--crop-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    skip = max(2, args.steps // 5)
    runs = Path(tempfile.mkdtemp(prefix="bench_train_"))
    base = {"data.root": str(Path(args.data).resolve()), "data.crop_size": args.crop_size,
            "run.output_dir": str(runs), "train.pretrained": str(Path(args.pretrained).resolve()),
            "train.refine_steps": args.steps, "train.log_every": 1, "train.checkpoint_every": args.steps,
            "train.eval_every": args.steps, "train.max_eval_clips": 2, "data.video_source": "local",
            "scaling.threads_per_worker": 1}
    results = {}
    try:
        cfg = load_config(overrides={**base, "run.name": "local"})
        tic = time.perf_counter()
        run_training(cfg, "refine", local=True)
        results["local"] = (*steady_rate(runs / "local", skip=skip), time.perf_counter() - tic, 1)
        for workers in (1, 2):
            name = f"ray{workers}"
            cfg = load_config(overrides={**base, "run.name": name, "scaling.num_workers": workers})
            tic = time.perf_counter()
            run_training(cfg, "refine")
            results[name] = (*steady_rate(runs / name, skip=skip), time.perf_counter() - tic, workers)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    batch = cfg.train.pair_batch_size + cfg.train.batch_size
    print(f"\nrefine, {args.steps} steps, {args.crop_size} px, per worker and step: {cfg.train.pair_batch_size} "
          f"pairs + {cfg.train.batch_size} labelled frames; {os.cpu_count()} CPUs")
    print(f"{'run':8s} {'workers':>7s} {'steps/s':>8s} {'samples/s':>10s} {'first logged step at':>21s} {'total s':>8s}")
    for name, (rate, start, total, workers) in results.items():
        print(f"{name:8s} {workers:7d} {rate:8.3f} {rate * batch * workers:10.1f} {start:20.1f}s {total:8.1f}")
    local, one, two = results["local"][0], results["ray1"][0], results["ray2"][0] * 2
    print(f"\nRay Train x1 / local mode, steps/s: {one / local:.3f} (overhead {100 * (1 - one / local):+.1f} %)")
    print(f"Ray Train x2 / x1, samples/s: {two / one:.2f}x (limit 2.0x on 2 cores)")


if __name__ == "__main__":
    main()

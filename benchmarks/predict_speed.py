"""Frames/s of `raymotion predict` without and with the overlay, and of jobs/predict.py with 1 and 2 actors,
side by side in one run.

    python benchmarks/predict_speed.py [--checkpoint raymotion/assets/base_models/small_cnn64_f05.pt]
        [--data data/synth/default] [--split video] [--clips 6]

The input is the first ``--clips`` clips of a benchmark split (the default benchmark's video split: 224 px, 32
frames each), each predicted with its labels' boxes (one person per frame), as clip folders:
  predict         - ``predict_to_folder`` in this process on each clip in turn, predict.overlay=false;
  predict+overlay - the same with the mesh overlay (OSMesa on CPUs, EGL on GPU machines) written as MP4;
  job x1, job x2  - jobs/predict.py's ``predict_videos`` on Ray Data with 1 and 2 actors, one torch thread per
                    actor, without and with the overlay (Ray already started: its start-up is not counted, the
                    actors' is).
The in-process runs use one torch thread too, so that x1 and predict do the same work per core.
Each row: frames, wall seconds, frames/s end to end and its ratio to the in-process run with the same overlay
setting; for the jobs also the steady rate, frames / (seconds the actors spent on videos / actors), which leaves
out the actors' start-up (importing torch and Ray Data's worker, loading the model: ~10-15 s here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BASE_MODEL = ROOT / "raymotion" / "assets" / "base_models" / "small_cnn64_f05.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(BASE_MODEL))
    parser.add_argument("--data", default="data/synth/default")
    parser.add_argument("--split", default="video")
    parser.add_argument("--clips", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

    import ray

    from raymotion.predict.pipeline import list_videos, predict_videos
    from raymotion.predict.run import Predictor, predict_config, predict_to_folder

    videos = list_videos(Path(args.data).resolve() / "manifest.parquet", split=args.split)[:args.clips]
    out = Path(tempfile.mkdtemp(prefix="predict_speed_"))
    results: dict[str, tuple[int, float, float]] = {}  # frames, wall seconds, steady seconds
    try:
        for name, overlay in (("predict", "false"), ("predict+overlay", "true")):
            predictor = Predictor.from_checkpoint(args.checkpoint, overrides=[f"predict.overlay={overlay}"])
            tic, frames = time.perf_counter(), 0
            for video in videos:
                frames += predict_to_folder(predictor, video["input"], out / name / video["name"], progress=False).frames
            seconds = time.perf_counter() - tic
            results[name] = (frames, seconds, seconds)
        ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 2, include_dashboard=False, log_to_driver=False)
        for overlay in ("false", "true"):
            for actors in (1, 2):
                cfg, _ = predict_config(args.checkpoint, overrides=[f"predict.overlay={overlay}",
                                                                    f"predict.actors={actors}", "predict.actor_threads=1"])
                name = f"job x{actors}" + ("+overlay" if overlay == "true" else "")
                summary = predict_videos(cfg, checkpoint=args.checkpoint, videos=videos, out_dir=out / name)
                results[name] = (summary.frames, summary.seconds, summary.busy_s / actors)
    finally:
        ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{len(videos)} clips of {args.data} ({args.split}), checkpoint {Path(args.checkpoint).name}, "
          f"{os.cpu_count()} CPUs, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'run':20s} {'frames':>7s} {'seconds':>8s} {'frames/s':>9s} {'vs in-process':>14s} {'steady frames/s':>16s}")
    for name, (frames, seconds, steady) in results.items():
        base = results["predict+overlay" if name.endswith("overlay") else "predict"]
        ratio = (frames / seconds) / (base[0] / base[1])
        print(f"{name:20s} {frames:7d} {seconds:8.1f} {frames / seconds:9.2f} {ratio:13.2f}x {frames / steady:16.2f}")


if __name__ == "__main__":
    main()

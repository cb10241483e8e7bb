"""Generation throughput of `raymotion synth`: parallel worker processes against one serial process.

    python benchmarks/bench_synth.py [--clips 12] [--frames 16] [--workers 2] [--set synth.image_size=224 ...]

Renders the same clips (video split, default camera and texture) twice into temporary folders, once with
synth.num_workers=1 and once with --workers, and prints frames/s for each and their ratio. Worker start-up
(imports, body model, GL context) is included: it is what a user waits for.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from raymotion.config import load_config
from raymotion.synth.generate import generate


def run(workers: int, args: argparse.Namespace, out_dir: str) -> float:
    overrides = [
        f"synth.out_dir={out_dir}",
        "synth.labelled_clips=0",
        f"synth.video_clips={args.clips}",
        f"synth.video_frames={args.frames}",
        "synth.val_clips=0",
        "synth.test_clips=0",
        f"synth.num_workers={workers}",
        *args.overrides,
    ]
    cfg = load_config(overrides=overrides)
    start = time.perf_counter()
    generate(cfg, progress=False)
    return args.clips * args.frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as serial_dir, tempfile.TemporaryDirectory() as parallel_dir:
        serial = run(1, args, serial_dir)
        parallel = run(args.workers, args, parallel_dir)
    print(f"{args.clips} clips x {args.frames} frames")
    print(f"serial (1 process):        {serial:6.1f} frames/s")
    print(f"parallel ({args.workers} processes):    {parallel:6.1f} frames/s")
    print(f"parallel / serial:         {parallel / serial:6.2f}x")


if __name__ == "__main__":
    main()

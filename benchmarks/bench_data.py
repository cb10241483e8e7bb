"""The frame-pair pipeline without training: Ray Data against a plain single-process loop, one run.

    python benchmarks/bench_data.py [--data data/synth/default] [--max-clips 24] [--crop-size 128]
        [--window 32] [--gap 1] [--flow-actors 2] [--decoder auto] [--plain-threads N]

Both do the same work on the first --max-clips clips of the video split: decode every frame, crop each
frame with its own box, and estimate DIS flow forward and backward per pair. The plain loop uses PyAV
(``read_video``) like ``VideoPairs``; the pipeline picks its decoder ('auto': DALI CPU for VP9 here).
Pipeline time includes Ray Data's start-up of the stage actors but not ``ray.init``. Prints pairs/s for
each, their ratio, decoded frames per used frame, and summed seconds per stage (from ``PipelineReport``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from raymotion.data.crops import crop_box, crop_image
from raymotion.data.decode import read_video
from raymotion.data.pipeline import PipelineReport, build_pair_dataset
from raymotion.flow.estimator import make_flow_estimator
from raymotion.synth.generate import read_manifest


def subset(data: Path, max_clips: int, out: Path) -> Path:
    """A manifest holding only the first ``max_clips`` video clips (paths still point into ``data``)."""
    rows = [r for r in read_manifest(data).to_pylist() if r["split"] == "video"][:max_clips]
    for row in rows:
        row["path"] = str(data.resolve() / row["path"])
        row["labels_path"] = str(data.resolve() / row["labels_path"])
    pq.write_table(pa.Table.from_pylist(rows), out / "manifest.parquet")
    return out


def plain_loop(root: Path, args: argparse.Namespace) -> tuple[int, float]:
    if args.plain_threads is not None:
        cv2.setNumThreads(args.plain_threads)
    start = time.perf_counter()
    estimator = make_flow_estimator("dis")
    pairs = 0
    for row in read_manifest(root).to_pylist():
        frames_THW3 = read_video(row["path"], expected_frames=row["frames"])
        box_T4 = pq.read_table(row["labels_path"], columns=["box_xyxy"]).column("box_xyxy").combine_chunks()
        box_T4 = box_T4.flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
        center_T2, side_T = crop_box(box_T4, scale=1.3)
        crops = [crop_image(f, center_2=c, side=s, size=args.crop_size) for f, c, s in zip(frames_THW3, center_T2, side_T)]
        for t in range(len(crops) - args.gap):
            estimator(crops[t], crops[t + args.gap])
            estimator(crops[t + args.gap], crops[t])
            pairs += 1
    return pairs, time.perf_counter() - start


def pipeline(root: Path, args: argparse.Namespace) -> tuple[int, float, dict]:
    report = PipelineReport()
    start = time.perf_counter()
    ds = build_pair_dataset(root, crop_size=args.crop_size, bbox_scale=1.3, gap=args.gap, window=args.window,
                            decoder=args.decoder, flow_concurrency=args.flow_actors, report=report)
    pairs, first_batch_s = 0, None
    for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
        pairs += len(batch["t"])
        first_batch_s = first_batch_s or time.perf_counter() - start
    summary = report.summary()
    summary["first_batch_s"] = first_batch_s
    return pairs, time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synth/default"))
    parser.add_argument("--max-clips", type=int, default=24)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--gap", type=int, default=1)
    parser.add_argument("--flow-actors", type=int, default=2)
    parser.add_argument("--decoder", default="auto")
    parser.add_argument("--plain-threads", type=int, default=None,
                        help="OpenCV threads in the plain loop (default: OpenCV's own choice, one per core)")
    parser.add_argument("--num-cpus", type=int, default=4,
                        help="Ray's logical CPUs: more than the actors take, so Ray Data can schedule (FACTS.md)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = subset(args.data, args.max_clips, Path(tmp))
        plain_pairs, plain_s = plain_loop(root, args)
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            pipe_pairs, pipe_s, summary = pipeline(root, args)
        finally:
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert pipe_pairs == plain_pairs, (pipe_pairs, plain_pairs)
    used = max(summary["used_frames"], 1)
    print(f"{args.max_clips} clips, {plain_pairs} pairs, crop {args.crop_size} px, gap {args.gap}, window {args.window}, "
          f"decoders {summary['backends']}, {args.flow_actors} flow actors")
    print(f"| {'':28} | {'pairs/s':>8} | {'seconds':>8} |")
    print(f"| {f'plain loop (cv2 threads {cv2.getNumThreads()})':28} | {plain_pairs / plain_s:8.1f} | {plain_s:8.2f} |")
    print(f"| {'Ray Data pipeline':28} | {pipe_pairs / pipe_s:8.1f} | {pipe_s:8.2f} |")
    print(f"ratio pipeline / plain: {plain_s / pipe_s:.2f}x (target >= 1.6)")
    print(f"pipeline: first batch after {summary['first_batch_s']:.2f} s (actor start-up, imports, first windows)")
    print(f"decoded frames per used frame: {summary['decoded_frames'] / used:.3f} (target <= 1.1)")
    print(f"stage seconds (summed over actors): decode+crop {summary['decode_crop_s']:.2f}, flow {summary['flow_s']:.2f}; "
          f"skipped windows {len(summary['skipped'])}")


if __name__ == "__main__":
    main()

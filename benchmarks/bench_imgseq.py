"""Decode speed of image-sequence clips against video clips, side by side, on the same frames (CPU).

Run: python benchmarks/bench_imgseq.py [--data data/synth/default] [--clips 8] [--repeats 5] [--jpeg-quality 95]

Takes the first ``--clips`` clips of the benchmark's video split, decodes each video once with PyAV and writes its
frames as PNG (lossless) and JPEG files in a temporary folder (not timed). Then it times what a pipeline's decode
stage does for one window (``data.decode_window`` frames, default 64: the whole of a 32-frame clip) with each
backend: the video with PyAV and with DALI's CPU decoder (VP9), and the frames with OpenCV and with DALI's CPU
image decoder (``decode.read_video_window``, ``decode.read_image_window``). One thread each (cv2.setNumThreads(1),
DALI num_threads=1), as a pipeline actor holding one CPU. The backends alternate within each repeat, so that
load from other processes on a shared machine hits them alike; frames/s = frames / median seconds per pass over
the clips, after one warm-up pass (DALI builds its pipelines there). Bytes per frame are the files' sizes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from raymotion.config import Config
from raymotion.data.decode import read_image_window, read_video_pyav, read_video_window, video_codec
from raymotion.data.manifest import read_manifest
from timing import alternating_medians


def write_frames(frames_THW3: np.ndarray, folder: Path, *, suffix: str, params: list[int]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{t:06d}{suffix}" for t in range(len(frames_THW3))]
    for path, frame_HW3 in zip(paths, frames_THW3):
        cv2.imwrite(str(path), np.ascontiguousarray(frame_HW3[..., ::-1]), params)
    return paths


def main() -> None:
    cfg = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=cfg.data.root, help="a benchmark folder (docs/data_format.md)")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--window", type=int, default=cfg.data.decode_window, help="frames per decode window")
    parser.add_argument("--jpeg-quality", type=int, default=95)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    root = Path(args.data)
    rows = [row for row in read_manifest(root).to_pylist() if row["split"] == "video"][:args.clips]
    if not rows:
        raise SystemExit(f"{root} has no video clips")
    videos = [root / row["path"] for row in rows]
    frames = sum(int(row["frames"]) for row in rows)
    with tempfile.TemporaryDirectory() as tmp:
        pngs, jpegs = [], []
        for i, video in enumerate(videos):
            frames_THW3 = read_video_pyav(video)
            pngs.append(write_frames(frames_THW3, Path(tmp) / f"png{i}", suffix=".png", params=[]))
            jpegs.append(write_frames(frames_THW3, Path(tmp) / f"jpg{i}", suffix=".jpg",
                                      params=[cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality]))

        def video_pass(backend: str) -> Callable[[], int]:
            def run() -> int:
                for row, video in zip(rows, videos):
                    for first in range(0, int(row["frames"]), args.window):
                        num = min(args.window, int(row["frames"]) - first)
                        read_video_window(video, first_frame=first, num_frames=num, backend=backend)
                return frames
            return run

        def image_pass(clips: list[list[Path]], backend: str) -> Callable[[], int]:
            def run() -> int:
                for paths in clips:
                    for first in range(0, len(paths), args.window):
                        num = min(args.window, len(paths) - first)
                        read_image_window(paths, first_frame=first, num_frames=num, backend=backend, bad_input="fail")
                return frames
            return run

        passes = {"video pyav": video_pass("pyav"), "video dali_cpu": video_pass("dali_cpu"),
                  "png opencv": image_pass(pngs, "opencv"), "png dali_cpu_images": image_pass(pngs, "dali_cpu_images"),
                  "jpeg opencv": image_pass(jpegs, "opencv"),
                  "jpeg dali_cpu_images": image_pass(jpegs, "dali_cpu_images")}
        seconds = alternating_medians(passes, args.repeats)
        sizes = {"video": sum(v.stat().st_size for v in videos),
                 "png": sum(p.stat().st_size for clip in pngs for p in clip),
                 "jpeg": sum(p.stat().st_size for clip in jpegs for p in clip)}
    height, width = int(rows[0]["height"]), int(rows[0]["width"])
    print(f"{len(rows)} clips of {root} ({frames} frames, {width}x{height}, codec {video_codec(videos[0])}), "
          f"windows of {args.window}, JPEG quality {args.jpeg_quality}, {args.repeats} repeats, 1 thread; "
          f"load average {os.getloadavg()[0]:.2f}")
    video_fps = frames / seconds["video pyav"]
    print(f"{'source, backend':<24} {'frames/s':>9} {'x video pyav':>13} {'KiB/frame':>10}")
    for name, s in seconds.items():
        kib = sizes[name.split()[0]] / frames / 1024
        print(f"{name:<24} {frames / s:>9.0f} {frames / s / video_fps:>13.2f} {kib:>10.1f}")


if __name__ == "__main__":
    main()

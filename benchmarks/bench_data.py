"""The frame-pair pipeline without training: Ray Data against a plain single-process loop, in one run.

    python benchmarks/bench_data.py [--max-clips 0] [--decoder auto] [--source streamed|precomputed]
        [--plain-threads 0] [--config X.yaml] [--set data.root=data/synth/default --set data.decode_window=32
        --set data.flow_actors=2 --set data.crop_size=128 ...]

Prints pairs/s of the plain loop and of the pipeline end to end, the pipeline's start-up (time to the first
batch) and steady-state rate apart, their ratios, decoded frames per used frame, and seconds per stage.
The settings the library has come from the config (data.root, data.crop_size, data.bbox_scale,
data.decode_window, train.video_gap, flow.*, data.flow_actors, data.pair_store, scaling.decode_gpus,
scaling.flow_gpus); the flags are what only a benchmark chooses.

Both sides do the same work on the first ``max_clips`` clips of the video split: decode every frame, crop
each frame with its own box, and estimate flow forward and backward per pair. The plain loop is the
library's single-process path without its flow cache (``labels.read_decoded``, ``video_pairs.crop_clip``,
``video_pairs.estimate_pair_flows``, as ``VideoPairs``: whole clips decoded with PyAV) and leaves OpenCV its own
thread pool (``plain_threads=0``; DIS runs parts of each field in parallel); each
pipeline actor holds one CPU and runs OpenCV single-threaded (``pipeline.FlowStage``).

Sources: 'streamed' times ``build_pair_dataset`` on the CPU (``flow_actors`` actors that each decode and
estimate flow; no GPU share is reserved, so a forced 'dali_mixed' decoder is refused by name);
'precomputed' times reading the pair store back (``flow_store.read_pairs``), after computing the store
when it is missing (reported apart, never in the read time).

Timing: the plain loop runs before Ray starts, so Ray's idle processes do not slow it. The pipeline time
runs from building the dataset to its last batch: it includes Ray Data's start-up of the stage actors
(process start, imports, first windows), reported apart as the time to the first batch, and the
steady-state rate after that batch; ``ray.init`` is timed apart and not counted.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2

from raymotion.config import Config, load_config
from raymotion.data.flow_store import PairSpec, check_store, precompute_pairs, read_pairs
from raymotion.data.labels import read_decoded, read_labels
from raymotion.data.video_pairs import crop_clip, estimate_pair_flows
from raymotion.data.manifest import read_manifest
from raymotion.data.decode import AUTO_DECODER
from raymotion.data.pipeline import PipelineReport, build_pair_dataset, select_windows
from raymotion.errors import report_user_error
from raymotion.flow.estimator import make_flow_estimator

SOURCES = ("streamed", "precomputed")
TARGET_RATIO = 1.6
"""The issue's target: pipeline pairs/s >= 1.6x the plain loop's, end to end."""
TARGET_DECODED_PER_USED = 1.1


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchSettings:
    """One benchmark run: the config, and what only a benchmark chooses (defaults: ``main``'s flags). For the
    default benchmark all 64 clips x 31 pairs = 1,984 pairs at gap 1 are about the least work for which the
    pipeline's start-up (~26 s measured once on 2 busy cores) leaves the end-to-end ratio meaningful;
    ``format_bench`` prints the break-even workload for the measured start-up and steady rate."""

    cfg: Config
    """data.root, data.crop_size, data.bbox_scale, data.decode_window, train.video_gap, flow.*,
    data.flow_actors, data.pair_store ('precomputed': '' = <data.root>/pairs), scaling.decode_gpus,
    scaling.flow_gpus."""
    max_clips: int | None
    """First clips of the video split (None: all)."""
    decoder: str
    """The pipeline's decoder: one of ``decode.DECODERS`` (``data.decoder``)."""
    source: str
    """'streamed' (decode + crop + flow actors) or 'precomputed' (read the pair store back)."""
    plain_threads: int
    """OpenCV threads in the plain loop; 0 = OpenCV's own choice (one per core)."""
    batch_size: int
    """Rows per batch the consumer (this process) takes from the pipeline."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchResult:
    """Counts and seconds of one run; rates and ratios are derived (properties)."""

    settings: BenchSettings
    clips: int
    pairs: int
    plain_s: float
    plain_cv2_threads: int
    ray_start_s: float
    pipeline_s: float
    """Building the dataset -> last batch consumed."""
    first_batch_s: float
    first_batch_pairs: int
    decoded_frames: int
    used_frames: int
    stage_s: dict[str, float]
    """Seconds summed over actors: decode_crop_s, flow_s (for 'precomputed': how the store was made)."""
    backends: dict[str, int]
    skipped: int
    store: str = ""
    store_compute_s: float | None = None
    """'precomputed': seconds this run spent computing the store (None: it was already there)."""
    store_record: dict[str, Any] = field(default_factory=dict)

    @property
    def plain_rate(self) -> float:
        return self.pairs / self.plain_s

    @property
    def pipeline_rate(self) -> float:
        return self.pairs / self.pipeline_s

    @property
    def steady_rate(self) -> float:
        """Pairs/s after the first batch (nan when there was only one batch)."""
        span = self.pipeline_s - self.first_batch_s
        rest = self.pairs - self.first_batch_pairs
        return rest / span if rest > 0 and span > 0 else math.nan

    @property
    def ratio(self) -> float:
        return self.plain_s / self.pipeline_s

    @property
    def break_even_pairs(self) -> float:
        """Pairs at which the end-to-end ratio would reach ``TARGET_RATIO`` with this run's start-up and
        steady rates (inf when the steady-state ratio is not above the target): an extrapolation, labelled
        as one where printed."""
        # N / plain_rate >= TARGET_RATIO * (first_batch_s + N / steady_rate), solved for N
        margin = 1.0 / self.plain_rate - TARGET_RATIO / self.steady_rate
        return TARGET_RATIO * self.first_batch_s / margin if margin > 0 else math.inf

    @property
    def decoded_per_used(self) -> float:
        return self.decoded_frames / max(self.used_frames, 1)


def plain_loop(settings: BenchSettings) -> tuple[int, float, int]:
    """The pipeline's work in one process, through the library's single-process path: (pairs, seconds,
    OpenCV threads used)."""
    cfg = settings.cfg
    root, gap = Path(cfg.data.root), cfg.train.video_gap
    windows = select_windows(root, split="video", gap=gap, window=cfg.data.decode_window,
                             max_clips=settings.max_clips)
    rows = read_manifest(root).to_pylist()
    clips = [rows[i] for i in sorted({w["clip_index"] for w in windows})]
    previous = cv2.getNumThreads()
    if settings.plain_threads:
        cv2.setNumThreads(settings.plain_threads)
    threads = cv2.getNumThreads()
    try:
        start = time.perf_counter()
        estimator = make_flow_estimator(cfg.flow)
        pairs = 0
        for row in clips:
            frames_THW3, _ = read_decoded(root, row, decoder="cpu")
            labels, _ = read_labels(root, row, ["box_xyxy"], bad_input="fail")
            crops, _ = crop_clip(frames_THW3, labels["box_xyxy"], crop_size=cfg.data.crop_size,
                                 bbox_scale=cfg.data.bbox_scale)
            estimate_pair_flows(estimator, crops, gap=gap, num_pairs=len(crops) - gap)
            pairs += len(crops) - gap
        return pairs, time.perf_counter() - start, threads
    finally:
        cv2.setNumThreads(previous)


def _consume(dataset: Any, batch_size: int, *, start: float) -> tuple[int, float, float, int]:
    """Iterate a dataset whose building began at ``start`` (perf_counter): (pairs, seconds to the last batch,
    seconds to the first batch, pairs in the first batch)."""
    pairs, first_s, first_pairs = 0, math.nan, 0
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        if not pairs:
            first_s, first_pairs = time.perf_counter() - start, len(batch["t"])
        pairs += len(batch["t"])
    return pairs, time.perf_counter() - start, first_s, first_pairs


def run_bench(settings: BenchSettings, *, start_ray: Callable[[], None]) -> BenchResult:
    """Plain loop, then ``start_ray()`` (e.g. ``launch.init_ray``; a no-op when Ray is up), then the pipeline.

    Raises:
        ValueError: an unknown source (the message lists the valid ones), or a setting the pipeline refuses.
        RuntimeError: the two sides produced different numbers of pairs.
    """
    if settings.source not in SOURCES:
        raise ValueError(f"source={settings.source!r}; choose one of: {', '.join(SOURCES)}")
    cfg = settings.cfg
    plain_pairs, plain_s, threads = plain_loop(settings)
    start = time.perf_counter()
    start_ray()
    ray_start_s = time.perf_counter() - start
    store_fields: dict[str, Any] = {}
    if settings.source == "streamed":
        report = PipelineReport()
        start = time.perf_counter()
        dataset = build_pair_dataset(
            cfg.data.root, split="video", crop_size=cfg.data.crop_size, bbox_scale=cfg.data.bbox_scale,
            gap=cfg.train.video_gap, window=cfg.data.decode_window, flow=cfg.flow.estimator, flow_config=cfg.flow,
            decoder=settings.decoder, flow_concurrency=cfg.data.flow_actors, max_clips=settings.max_clips,
            report=report, decode_gpus=cfg.scaling.decode_gpus, flow_gpus=cfg.scaling.flow_gpus)
        pairs, pipeline_s, first_s, first_pairs = _consume(dataset, settings.batch_size, start=start)
        summary = report.summary()
        counts = {"decoded_frames": summary["decoded_frames"], "used_frames": summary["used_frames"],
                  "stage_s": {"decode_crop_s": summary["decode_crop_s"], "flow_s": summary["flow_s"]},
                  "backends": summary["backends"], "skipped": len(summary["skipped"])}
    else:
        spec = PairSpec(data_root=cfg.data.root, split="video", crop_size=cfg.data.crop_size,
                        bbox_scale=cfg.data.bbox_scale, gap=cfg.train.video_gap, flow=cfg.flow.estimator,
                        flow_config=cfg.flow, max_clips=settings.max_clips, decoder=settings.decoder)
        store = precompute_pairs(spec, out_dir=cfg.data.pair_store or None, window=cfg.data.decode_window,
                                 flow_concurrency=cfg.data.flow_actors)
        record = check_store(store.folder)
        made = record["pipeline"]
        start = time.perf_counter()
        pairs, pipeline_s, first_s, first_pairs = _consume(read_pairs(store.folder), settings.batch_size,
                                                           start=start)
        counts = {"decoded_frames": made["decoded_frames"], "used_frames": made["used_frames"],
                  "stage_s": {"decode_crop_s": made["decode_crop_s"], "flow_s": made["flow_s"]},
                  "backends": made["backends"], "skipped": 0}
        store_fields = {"store": str(store.folder), "store_compute_s": None if store.reused else store.seconds,
                        "store_record": record}
    if pairs != plain_pairs:
        raise RuntimeError(f"the pipeline gave {pairs} pairs, the plain loop {plain_pairs}: they did not do the "
                           "same work")
    clips = len({w["clip_index"] for w in select_windows(cfg.data.root, split="video", gap=cfg.train.video_gap,
                                                         window=cfg.data.decode_window,
                                                         max_clips=settings.max_clips)})
    return BenchResult(settings=settings, clips=clips, pairs=pairs, plain_s=plain_s, plain_cv2_threads=threads,
                       ray_start_s=ray_start_s, pipeline_s=pipeline_s, first_batch_s=first_s,
                       first_batch_pairs=first_pairs, **counts, **store_fields)


def format_bench(result: BenchResult) -> str:
    """The result as the table and lines ``main`` prints."""
    s, cfg = result.settings, result.settings.cfg
    if s.source == "streamed":
        side, actors = "Ray Data pipeline", (f"{cfg.data.flow_actors} decode+flow actors (fused on CPU; cv2 "
                                             "threads 1 each)")
    else:
        side, actors = "Ray Data read of the pair store", "read tasks"
    lines = [
        f"{result.clips} clips, {result.pairs} pairs, crop {cfg.data.crop_size} px, gap {cfg.train.video_gap}, "
        f"window {cfg.data.decode_window}, flow {cfg.flow.estimator}, decoder {s.decoder} -> {result.backends}, "
        f"source {s.source}: {actors}",
        f"| {'':44} | {'pairs/s':>8} | {'seconds':>8} |",
        f"| {f'plain loop (PyAV, cv2 threads {result.plain_cv2_threads})':44} | {result.plain_rate:8.1f} | "
        f"{result.plain_s:8.2f} |",
        f"| {side + ', end to end':44} | {result.pipeline_rate:8.1f} | {result.pipeline_s:8.2f} |",
        f"| {'  start-up (to the first batch)':44} | {'':8} | {result.first_batch_s:8.2f} |",
        f"| {'  steady state (after the first batch)':44} | {result.steady_rate:8.1f} | "
        f"{result.pipeline_s - result.first_batch_s:8.2f} |",
        f"ratio pipeline / plain: end to end {result.ratio:.2f}x (target >= {TARGET_RATIO}), steady state "
        f"{result.steady_rate / result.plain_rate:.2f}x; ray.init {result.ray_start_s:.2f} s (not counted)",
        f"start-up is {result.first_batch_s / result.pipeline_s:.0%} of the pipeline's time; extrapolated from "
        f"these rates, the end-to-end ratio reaches {TARGET_RATIO}x from {result.break_even_pairs:.0f} pairs",
        f"decoded frames per used frame: {result.decoded_per_used:.3f} (target <= {TARGET_DECODED_PER_USED})"
        + ("" if s.source == "streamed" else " when the store was made"),
        f"stage seconds (summed over actors): decode+crop {result.stage_s['decode_crop_s']:.2f}, "
        f"flow {result.stage_s['flow_s']:.2f}; skipped windows {result.skipped}",
    ]
    if s.source == "precomputed":
        made = (f"computed in this run in {result.store_compute_s:.1f} s (not counted)" if result.store_compute_s
                is not None else f"reused (computed in {result.store_record['seconds']:.1f} s at "
                f"{result.store_record['written_at']})")
        lines.append(f"pair store {result.store}: {made}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and the config, run the benchmark, print its table. Errors in the config or the input
    end with one message and exit code 2 (as the ``raymotion`` command's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-clips", type=int, default=0,
                        help="first clips of the video split to use (0: all; 64 in the default benchmark)")
    parser.add_argument("--decoder", default=AUTO_DECODER, help="pipeline decoder (data.decoder): auto, cpu, dali_cpu, dali_mixed")
    parser.add_argument("--source", choices=SOURCES, default="streamed",
                        help="streamed: decode + crop + flow actors; precomputed: read the pair store back "
                        "(computed first when missing, not timed)")
    parser.add_argument("--plain-threads", type=int, default=0,
                        help="OpenCV threads of the plain loop (0: OpenCV's own choice, one per core)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch this process takes")
    parser.add_argument("--config", help="YAML file of config overrides (nested or dotted keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set data.decode_window=32 (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="with an error, print its traceback too")
    args = parser.parse_args(argv)
    from raymotion.train.launch import absolute_paths, init_ray

    try:
        cfg = absolute_paths(load_config(args.config, args.overrides))
        settings = BenchSettings(cfg=cfg, max_clips=args.max_clips or None, decoder=args.decoder,
                                 source=args.source, plain_threads=args.plain_threads, batch_size=args.batch_size)
        print(format_bench(run_bench(settings, start_ray=lambda: init_ray(cfg))))
    except Exception as err:
        if not report_user_error("bench_data.py", err, verbose=args.verbose):
            raise
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

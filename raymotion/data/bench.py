"""The frame-pair pipeline without training: Ray Data against a plain single-process loop, in one run.

    run_bench(BenchSettings(data_root=...), start_ray=...) -> BenchResult;  format_bench(result) -> str

``raymotion bench-data`` and benchmarks/bench_data.py call it. Both sides do the same work on the first
``max_clips`` clips of the video split: decode every frame, crop each frame with its own box, and estimate
flow forward and backward per pair. The plain loop decodes whole clips with PyAV (as ``VideoPairs``) and
leaves OpenCV its own thread pool (``plain_threads=0``; DIS runs parts of each field in parallel); each
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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import pyarrow.parquet as pq

from raymotion.data.crops import crop_box, crop_image
from raymotion.data.decode import read_video
from raymotion.data.flow_store import PairSpec, check_store, precompute_pairs, read_pairs
from raymotion.data.pipeline import AUTO_DECODER, PipelineReport, build_pair_dataset, select_windows
from raymotion.flow.estimator import make_flow_estimator
from raymotion.data.manifest import read_manifest

SOURCES = ("streamed", "precomputed")
TARGET_RATIO = 1.6
"""The issue's target: pipeline pairs/s >= 1.6x the plain loop's, end to end."""
TARGET_DECODED_PER_USED = 1.1


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchSettings:
    """One benchmark run. By default every clip of the video split: for the default benchmark 64 clips x 31
    pairs = 1,984 pairs at gap 1, about the least work for which the pipeline's start-up (~26 s measured
    once on 2 busy cores) leaves the end-to-end ratio meaningful; ``format_bench`` prints the break-even
    workload for the measured start-up and steady rate."""

    data_root: str
    max_clips: int | None = None
    """First clips of the video split (None: all)."""
    crop_size: int = 128
    bbox_scale: float = 1.3
    gap: int = 1
    window: int = 32
    flow: str = "dis"
    flow_actors: int = 2
    decoder: str = AUTO_DECODER
    source: str = "streamed"
    plain_threads: int = 0
    """OpenCV threads in the plain loop; 0 = OpenCV's own choice (one per core)."""
    store_dir: str = ""
    """'precomputed': the folder holding pair stores ('' = <data_root>/pairs)."""
    batch_size: int = 64
    """Rows per batch the consumer (this process) takes from the pipeline."""
    decode_gpus: float = 0.0
    """GPU share per decode actor (``scaling.decode_gpus``; > 0: NVDEC)."""
    flow_gpus: float = 0.0
    """GPU share per flow actor (``scaling.flow_gpus``; > 0: RAFT / dali_of on the GPU)."""


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
    """The pipeline's work in one process: (pairs, seconds, OpenCV threads used)."""
    root = Path(settings.data_root)
    windows = select_windows(root, split="video", gap=settings.gap, window=settings.window,
                             max_clips=settings.max_clips)
    rows = read_manifest(root).to_pylist()
    clips = [rows[i] for i in sorted({w["clip_index"] for w in windows})]
    previous = cv2.getNumThreads()
    if settings.plain_threads:
        cv2.setNumThreads(settings.plain_threads)
    threads = cv2.getNumThreads()
    try:
        start = time.perf_counter()
        estimator = make_flow_estimator(settings.flow)
        pairs = 0
        for row in clips:
            frames_THW3 = read_video(root / row["path"], expected_frames=row["frames"], backend="pyav")
            boxes = pq.read_table(root / row["labels_path"], columns=["box_xyxy"]).column("box_xyxy").combine_chunks()
            box_T4 = boxes.flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
            center_T2, side_T = crop_box(box_T4, scale=settings.bbox_scale)
            crops = [crop_image(frame, center_2=c, side=s, size=settings.crop_size)
                     for frame, c, s in zip(frames_THW3, center_T2, side_T)]
            for t in range(len(crops) - settings.gap):
                estimator(crops[t], crops[t + settings.gap])
                estimator(crops[t + settings.gap], crops[t])
                pairs += 1
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
    plain_pairs, plain_s, threads = plain_loop(settings)
    start = time.perf_counter()
    start_ray()
    ray_start_s = time.perf_counter() - start
    store_fields: dict[str, Any] = {}
    if settings.source == "streamed":
        report = PipelineReport()
        start = time.perf_counter()
        dataset = build_pair_dataset(
            settings.data_root, split="video", crop_size=settings.crop_size, bbox_scale=settings.bbox_scale,
            gap=settings.gap, window=settings.window, flow=settings.flow, decoder=settings.decoder,
            flow_concurrency=settings.flow_actors, max_clips=settings.max_clips, report=report,
            decode_gpus=settings.decode_gpus, flow_gpus=settings.flow_gpus)
        pairs, pipeline_s, first_s, first_pairs = _consume(dataset, settings.batch_size, start=start)
        summary = report.summary()
        counts = {"decoded_frames": summary["decoded_frames"], "used_frames": summary["used_frames"],
                  "stage_s": {"decode_crop_s": summary["decode_crop_s"], "flow_s": summary["flow_s"]},
                  "backends": summary["backends"], "skipped": len(summary["skipped"])}
    else:
        spec = PairSpec(data_root=settings.data_root, split="video", crop_size=settings.crop_size,
                        bbox_scale=settings.bbox_scale, gap=settings.gap, flow=settings.flow,
                        max_clips=settings.max_clips, decoder=settings.decoder)
        store = precompute_pairs(spec, out_dir=settings.store_dir or None, window=settings.window,
                                 flow_concurrency=settings.flow_actors)
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
    clips = len({w["clip_index"] for w in select_windows(settings.data_root, split="video", gap=settings.gap,
                                                         window=settings.window, max_clips=settings.max_clips)})
    return BenchResult(settings=settings, clips=clips, pairs=pairs, plain_s=plain_s, plain_cv2_threads=threads,
                       ray_start_s=ray_start_s, pipeline_s=pipeline_s, first_batch_s=first_s,
                       first_batch_pairs=first_pairs, **counts, **store_fields)


def format_bench(result: BenchResult) -> str:
    """The result as the table and lines ``raymotion bench-data`` prints."""
    s = result.settings
    if s.source == "streamed":
        side, actors = "Ray Data pipeline", (f"{s.flow_actors} decode+flow actors (fused on CPU; cv2 threads 1 "
                                             "each)")
    else:
        side, actors = "Ray Data read of the pair store", "read tasks"
    lines = [
        f"{result.clips} clips, {result.pairs} pairs, crop {s.crop_size} px, gap {s.gap}, window {s.window}, "
        f"flow {s.flow}, decoder {s.decoder} -> {result.backends}, source {s.source}: {actors}",
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

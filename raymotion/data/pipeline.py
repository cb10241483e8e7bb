"""Frame pairs (or 3-frame windows) of unannotated video as a Ray Data dataset: windows -> decode + crop -> flow.

The Ray version of ``raymotion.data.video_pairs.VideoPairs`` (same crops, same flow estimators, same keys),
streaming instead of in memory. Each clip is cut into windows of consecutive frames
(``raymotion.data.manifest.pair_windows``), so every frame is decoded about once per epoch.

    windows (from_items) -> map_batches(DecodeCropStage) -> map_batches(FlowStage) -> rows, one per pair
    windows (from_items) -> map_batches(DecodeFlowStage: both in one actor; CPU-only)  -> the same rows

GPUs are asked for, never guessed: ``build_pair_dataset(decode_gpus=..., flow_gpus=...)`` (the config's
``scaling.decode_gpus`` / ``scaling.flow_gpus``) is the GPU share each decode / flow actor reserves, 0 = CPU.
A snapshot of the cluster's GPUs cannot decide it: on a warm cluster those GPUs may all be held by training
workers (a GPU-asking actor would never start), and on an autoscaling cluster with a CPU-only head there are
none yet. Whether the whole run fits is checked before training starts (``raymotion.train.plan``). An actor
that reserved no GPU runs its work on the CPU even where CUDA is visible: Ray 2.60 leaves
CUDA_VISIBLE_DEVICES alone for actors that asked for no GPU (``ray._private.accelerators.accelerator``),
so ``torch.cuda.is_available()`` there would put RAFT on GPU 0 beside a training worker.

Rows (numpy): image1, image2 (S, S, 3) uint8 RGB crops of frames t and t + gap (normalise on the
training side with ``crops.normalise_image``: uint8 moves 4x fewer bytes); flow_fwd, flow_bwd (2, S, S)
float32, crop pixels (dx, dy), as ``VideoPairs``; crop1, crop2 (3,) float32 (center x, center y, side),
image pixels, for reprojection; clip_index (row in manifest.parquet); t (frame index of image1).
With ``frames_per_item=3`` (the temporal-context variant, model.film) each row is a 3-frame window
t - gap, t, t + gap: the same keys for its last pair plus image0 and crop0 of frame t - gap, as
``VideoPairs(frames_per_item=3)``; pairs whose frame t has no frame gap before it are not rows then.

Clips are videos or image sequences (a folder or list of JPEG/PNG frames, ``manifest.clip_frame_paths``); a
window of an image sequence reads only its own files, and its frames may differ in size (a manifest size of 0).

Bad input (a missing, corrupt or truncated video, a missing or corrupt frame file, a frame past the end, frames
of another size than the manifest's, a box outside the frame or not finite, a labels file without box_xyxy, a
clip too short for the gap):
``bad_input='fail'`` raises naming the file and frame; ``'skip'`` drops that window, logs a warning
naming it, and records it in the ``PipelineReport`` passed as ``report=``: after the dataset has been
consumed, ``report.summary()['skipped']`` lists every skipped window and why.

Legend: T = frames of a window, P = pairs, S = crop side (pixels); trailing digits are literal sizes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import ray

from raymotion.config import FlowConfig, check_values
from raymotion.data.crops import box_problems, crop_box, crop_image
from raymotion.data.decode import AUTO_DECODER, DECODERS, backend_for, read_image_window, read_video_window, video_codec
from raymotion.data.manifest import (check_bad_input, check_clip_lengths, check_frame_size, clip_frame_paths,
                                     pair_windows, read_columns, read_manifest, warn_skipped)
from raymotion.flow.estimator import make_flow_estimator

logger = logging.getLogger(__name__)

ACTOR_CPUS = 1.0
"""CPUs every stage actor reserves: its OpenCV / decoder work runs on one thread (``FlowStage``)."""


@ray.remote(num_cpus=0)
class _ReportActor:
    """Counters the stages send to (fire-and-forget); holds no CPU."""

    def __init__(self) -> None:
        self.counts = {"windows": 0, "decoded_frames": 0, "used_frames": 0, "pairs": 0,
                       "decode_crop_s": 0.0, "flow_s": 0.0, "flow_pairs": 0}
        self.skipped: list[str] = []
        self.backends: dict[str, int] = {}

    def add(self, **counts: float) -> None:
        for name, value in counts.items():
            self.counts[name] += value

    def add_backend(self, backend: str) -> None:
        self.backends[backend] = self.backends.get(backend, 0) + 1

    def skip(self, message: str) -> None:
        self.skipped.append(message)

    def summary(self) -> dict:
        return {**self.counts, "skipped": list(self.skipped), "backends": dict(self.backends)}


class PipelineReport:
    """What a pair pipeline did: windows, decoded and used frames, stage seconds, skipped windows.

    Create it on the driver (Ray must be initialised), pass it to ``build_pair_dataset(report=...)``,
    consume the dataset, then call ``summary()``. Counts accumulate over every pass over the dataset.
    """

    def __init__(self) -> None:
        self.actor = _ReportActor.remote()

    def summary(self) -> dict:
        """Counts so far: windows, decoded_frames, used_frames, pairs, decode_crop_s, flow_s (summed over
        actors), backends ({backend: windows}), skipped (one message per skipped window)."""
        return ray.get(self.actor.summary.remote())


class DecoderChoice:
    """A stage actor's decoder backend per clip (``decode.backend_for``): 'auto' picks from the clip's kind and
    codec (DALI 'mixed', i.e. NVDEC or nvJPEG, when Ray gave this actor a GPU; else DALI's CPU decoder for images
    and VP8/VP9/MJPEG, PyAV for other codecs); a forced ``decoder`` names the family. Logs each backend the
    first time it is used. Build it inside the actor."""

    def __init__(self, decoder: str, *, what: str) -> None:
        self.decoder, self.what = decoder, what
        # Ray's assignment, not torch.cuda: the actor may hold a GPU only if it asked for one, and this
        # keeps torch out of the check.
        self.cuda_available = bool(ray.get_gpu_ids())
        self._logged: set[str] = set()

    def __call__(self, path: Path, *, images: bool) -> str:
        codec = video_codec(path) if self.decoder == AUTO_DECODER and not images else None
        backend = backend_for(self.decoder, images=images, codec=codec, cuda_available=self.cuda_available)
        if backend not in self._logged:
            self._logged.add(backend)
            logger.info("decoding %s with %s (decoder=%r, CUDA %s; first clip %s)", self.what, backend, self.decoder,
                        "available" if self.cuda_available else "unavailable", path)
        return backend


class DecodeCropStage:
    """``map_batches`` stage: windows -> one row per frame pair, with both frames cropped by their own box.

    Decoder: ``DecoderChoice`` (``data.decoder``). The DALI pipeline is built inside this actor, never in the
    driver (FACTS.md). The choice is logged once per backend.
    """

    def __init__(self, *, data_root: str, crop_size: int, bbox_scale: float, gap: int, decoder: str,
                 bad_input: str, report: PipelineReport | None, frames_per_item: int = 2) -> None:
        self.data_root = Path(data_root)
        self.crop_size, self.bbox_scale, self.gap = crop_size, bbox_scale, gap
        self.frames_per_item = frames_per_item
        self.bad_input = bad_input
        self.report = report.actor if report is not None else None
        cv2.setNumThreads(1)  # one CPU per actor (see FlowStage)
        self._backend = DecoderChoice(decoder, what="video windows")

    def _window(self, window: dict) -> tuple[dict[str, np.ndarray], int, str]:
        first, num = int(window["first_frame"]), int(window["num_frames"])
        frames_THW3, decoded, backend, _ = read_window(self.data_root, window, first_frame=first, num_frames=num,
                                                       clip_frames=int(window["clip_frames"]), choice=self._backend)
        labels_path = self.data_root / window["labels_path"]
        if not window["labels_path"] or not labels_path.is_file():
            raise FileNotFoundError(f"labels of clip {window['clip_id']} not found: {labels_path!s} (boxes are needed to crop)")
        boxes = read_columns(labels_path, ["box_xyxy"], what="the boxes crop every frame").column("box_xyxy").combine_chunks()
        if len(boxes) < first + num:
            raise ValueError(f"{labels_path} has {len(boxes)} rows; frame {first + num - 1} has no box")
        box_T4 = boxes.slice(first, num).flatten().to_numpy(zero_copy_only=False).reshape(num, 4)
        height_T, width_T = np.array([frame.shape[:2] for frame in frames_THW3]).reshape(-1, 2).T
        problems = box_problems(box_T4, width=width_T, height=height_T)
        if problems:
            t, problem = next(iter(problems.items()))  # the first bad box
            raise ValueError(f"{labels_path} frame {first + t}: {problem}")
        center_T2, side_T = crop_box(box_T4, scale=self.bbox_scale)
        crops_TSS3 = np.stack([crop_image(frame, center_2=c, side=s, size=self.crop_size)
                               for frame, c, s in zip(frames_THW3, center_T2, side_T)])
        params_T3 = np.concatenate([center_T2, side_T[:, None]], axis=1).astype(np.float32)
        i1 = np.arange((self.frames_per_item - 2) * self.gap, num - self.gap)  # window_pairs, window-relative
        i2 = i1 + self.gap
        rows = {
            "image1": crops_TSS3[i1], "image2": crops_TSS3[i2], "crop1": params_T3[i1], "crop2": params_T3[i2],
            "clip_index": np.full(len(i1), int(window["clip_index"]), dtype=np.int64),
            "t": (first + i1).astype(np.int64),
        }
        if self.frames_per_item == 3:
            rows.update({"image0": crops_TSS3[i1 - self.gap], "crop0": params_T3[i1 - self.gap]})
        return rows, decoded, backend

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        kept, decoded_total = each_window(
            batch, self._window, bad_input=self.bad_input, report=self.report,
            describe=lambda w: f"window frames {w['first_frame']}..{w['first_frame'] + w['num_frames'] - 1} "
                               f"of clip {w['clip_id']}")
        out = [rows for _, rows in kept]
        used_total = sum(int(window["num_frames"]) for window, _ in kept)
        if self.report is not None:
            self.report.add.remote(windows=len(out), decoded_frames=decoded_total, used_frames=used_total,
                                   pairs=sum(len(r["t"]) for r in out), decode_crop_s=time.perf_counter() - start)
        if not out:
            size = self.crop_size
            frames = ("0", "1", "2") if self.frames_per_item == 3 else ("1", "2")
            return {**{f"image{i}": np.zeros((0, size, size, 3), np.uint8) for i in frames},
                    **{f"crop{i}": np.zeros((0, 3), np.float32) for i in frames},
                    "clip_index": np.zeros(0, np.int64), "t": np.zeros(0, np.int64)}
        return {name: np.concatenate([r[name] for r in out]) for name in out[0]}


def read_window(data_root: Path, window: dict, *, first_frame: int, num_frames: int, clip_frames: int,
                choice: DecoderChoice, bad_input: str = "fail") -> tuple[np.ndarray | list, int, str, dict[int, str]]:
    """Frames [first_frame, first_frame + num_frames) of a clip (a video, or an image sequence: only those files
    are read), checked against the clip's manifest row (``window``: its clip_id, path, width, height;
    ``clip_frames``: its frame count). A bad video raises naming the file (the stages' bad-input policy then
    drops the window or clip: ``each_window``); so does a bad frame file, unless ``bad_input='skip'``.

    Returns:
        frames: (T, H, W, 3) uint8 for a video; T frames (H_t, W_t, 3) for an image sequence (None: left out).
        decoded: frames decoded (a video window counts those from the keyframe before it).
        backend: the backend that decoded them (``decode.VIDEO_BACKENDS`` or ``decode.IMAGE_BACKENDS``).
        bad: {clip frame: message} of the frame files left out ('skip').
    """
    paths = clip_frame_paths(data_root, {"clip_id": window["clip_id"], "path": window["path"], "frames": clip_frames})
    if paths is not None:
        backend = choice(paths[0].parent, images=True)
        frames, decoded, bad = read_image_window(paths, first_frame=first_frame, num_frames=num_frames,
                                                 backend=backend, bad_input=bad_input)
        for frame_HW3, path in zip(frames, paths[first_frame:]):
            if frame_HW3 is not None:
                check_frame_size(window, height=frame_HW3.shape[0], width=frame_HW3.shape[1], path=path)
        return frames, decoded, backend, bad
    path = data_root / window["path"]
    backend = choice(path, images=False)
    frames_THW3, decoded = read_video_window(path, first_frame=first_frame, num_frames=num_frames, backend=backend)
    if len(frames_THW3) < num_frames:
        raise ValueError(f"video {path} ends before frame {first_frame + len(frames_THW3)}: the window needs frames "
                         f"{first_frame}..{first_frame + num_frames - 1} and the manifest says {clip_frames} frames; "
                         "the file is truncated, regenerate it")
    check_frame_size(window, height=frames_THW3.shape[1], width=frames_THW3.shape[2], path=path)
    return frames_THW3, decoded, backend, {}


def each_window(batch: dict[str, np.ndarray], work, *, bad_input: str, report, describe) -> tuple[list, int]:
    """Run ``work(window) -> (rows, decoded frames, backend)`` on every window of a ``map_batches`` batch
    under the bad-input policy: 'fail' re-raises, 'skip' logs ``skipped <describe(window)>: <error>``, tells
    ``report`` (the stage's ``_ReportActor`` handle, or None) and goes on.

    Returns ([(window, rows) of the windows kept], decoded frames summed over them).
    """
    kept, decoded_total = [], 0
    for i in range(len(batch["clip_id"])):
        window = {name: values[i] for name, values in batch.items()}
        try:
            rows, decoded, backend = work(window)
        except (ValueError, FileNotFoundError) as err:
            if bad_input == "fail":
                raise
            message = f"skipped {describe(window)}: {err}"
            logger.warning(message)
            if report is not None:
                report.skip.remote(message)
            continue
        kept.append((window, rows))
        decoded_total += decoded
        if report is not None:
            report.add_backend.remote(backend)
    return kept, decoded_total


class FlowStage:
    """``map_batches`` stage: adds flow_fwd (crop 1 -> crop 2) and flow_bwd (crop 2 -> crop 1), (2, S, S)
    float32 crop pixels, computed with a ``raymotion.flow.estimator`` estimator (default OpenCV DIS)."""

    def __init__(self, *, flow_config: FlowConfig, report: PipelineReport | None) -> None:
        # The actor holds one CPU; OpenCV's own thread pool would oversubscribe the cores that the other
        # actors hold (on 2 busy cores DIS took 38 ms per 128 px pair with 2 threads, 27 ms with 1).
        cv2.setNumThreads(1)
        self.estimator = make_flow_estimator(flow_config)
        self.report = report.actor if report is not None else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        image1, image2 = batch["image1"], batch["image2"]
        size = image1.shape[1] if image1.ndim == 4 else 0
        if len(image1):  # one call per direction: RAFT and DALI run the whole batch on the device at once
            batch["flow_fwd"] = self.estimator.batch(image1, image2).transpose(0, 3, 1, 2)
            batch["flow_bwd"] = self.estimator.batch(image2, image1).transpose(0, 3, 1, 2)
        else:
            batch["flow_fwd"] = batch["flow_bwd"] = np.zeros((0, 2, size, size), np.float32)
        if self.report is not None:
            self.report.add.remote(flow_s=time.perf_counter() - start, flow_pairs=len(image1))
        return batch


def select_windows(data_root: str | Path, *, split: str, gap: int, window: int,
                   max_clips: int | None, frames_per_item: int = 2, bad_input: str = "fail") -> list[dict]:
    """The windows ``build_pair_dataset`` decodes: those of the first ``max_clips`` clips of ``split`` that
    hold an item (None: every clip), in manifest order; rows as ``manifest.pair_windows``'s. A clip too short
    for an item fails naming ``train.video_gap`` (``bad_input='fail'``) or is skipped with a warning ('skip';
    ``manifest.check_clip_lengths``)."""
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips={max_clips} must be >= 1, or None for all clips")
    rows = read_manifest(data_root).to_pylist()
    warn_skipped(check_clip_lengths([row for row in rows if row["split"] == split][:max_clips], split=split,
                                    gap=gap, bad_input=bad_input, frames_per_item=frames_per_item),
                 what="video clips")
    windows = pair_windows(rows, split=split, gap=gap, window=window, frames_per_item=frames_per_item)
    if max_clips is not None:
        kept = set(sorted({w["clip_index"] for w in windows})[:max_clips])
        windows = [w for w in windows if w["clip_index"] in kept]
    if not windows:
        raise ValueError(f"split {split!r} of {data_root} has no clip longer than {frames_per_item - 1} * "
                         f"gap={gap} frames")
    return windows


class DecodeFlowStage:
    """``map_batches`` stage: ``DecodeCropStage`` then ``FlowStage`` in one actor, for CPU-only work.

    Decoding is small next to CPU flow (about 1:15 for DIS at 128 px), so on a CPU machine one actor per
    core doing both beats a decode actor feeding flow actors: one process fewer to start and no crops
    handed between processes. On GPUs the stages stay apart (NVDEC decode, flow on GPU actors).
    """

    def __init__(self, *, decode: dict, flow: dict) -> None:
        self.decode = DecodeCropStage(**decode)
        self.flow = FlowStage(**flow)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.flow(self.decode(batch))


GPU_FLOW_ESTIMATORS = ("raft_small", "raft_large", "dali_of")
"""Flow estimators that can use a GPU; 'dali_of' can use nothing else."""
CPU_DECODERS = ("cpu", "dali_cpu")


def stage_gpu_problems(*, decoder: str, decode_gpus: float, flow: str | None, flow_device: str,
                       flow_gpus: float) -> list[tuple[str, float, str]]:
    """What is wrong with the GPU shares of a pair pipeline, as (argument, value, why) triples; [] = nothing.

    The arguments are ``build_pair_dataset``'s and, with the prefix 'scaling.', the config's keys, so the
    pipeline (ValueError) and the resource plan (ConfigError) report the same problems. A GPU share that the
    stage's work never uses is refused too: it would hold a GPU (or part of one) away from training.

    Args:
        decoder: one of ``decode.DECODERS`` (``data.decoder``).
        decode_gpus, flow_gpus: GPU share per decode / flow actor: 0, a share in (0, 1] or a whole number.
        flow: the flow estimator name, or None for no flow stage.
        flow_device: ``flow.device`` ('auto', 'cpu', 'cuda'; where RAFT runs).
    """
    problems = []
    for name, value in (("decode_gpus", decode_gpus), ("flow_gpus", flow_gpus)):
        if value < 0 or (value > 1 and not float(value).is_integer()):
            problems.append((name, value, "expected 0 (CPU), a GPU share in (0, 1] or a whole number of GPUs"))
    if decoder == "dali_mixed" and decode_gpus == 0:
        problems.append(("decode_gpus", decode_gpus, "decoder='dali_mixed' decodes with NVDEC on a GPU and a decode "
                         "actor with decode_gpus=0 reserves none: set decode_gpus > 0 (e.g. 0.25) or use decoder "
                         f"'{AUTO_DECODER}', {' or '.join(repr(d) for d in CPU_DECODERS)}"))
    if decoder in CPU_DECODERS and decode_gpus > 0:
        problems.append(("decode_gpus", decode_gpus, f"decoder={decoder!r} decodes on the CPU and would hold that GPU "
                         f"share unused: set decode_gpus=0, or decoder '{AUTO_DECODER}' or 'dali_mixed' for NVDEC"))
    if flow is None:
        if flow_gpus > 0:
            problems.append(("flow_gpus", flow_gpus, "there is no flow stage (flow=None): set flow_gpus=0"))
    elif flow_gpus == 0 and flow == "dali_of":
        problems.append(("flow_gpus", flow_gpus, "flow estimator 'dali_of' runs on the GPU's optical-flow engine only "
                         "and a flow actor with flow_gpus=0 reserves no GPU: set flow_gpus > 0 (e.g. 1 or 0.5), or "
                         "choose a CPU estimator: 'dis', 'farneback', or RAFT with flow.device=auto or cpu"))
    elif flow_gpus == 0 and flow in GPU_FLOW_ESTIMATORS and flow_device == "cuda":
        problems.append(("flow_gpus", flow_gpus, f"flow.device='cuda' asks {flow!r} for a GPU and a flow actor with "
                         "flow_gpus=0 reserves none: set flow_gpus > 0, or flow.device=auto or cpu for RAFT on the CPU"))
    elif flow_gpus > 0 and (flow not in GPU_FLOW_ESTIMATORS or (flow != "dali_of" and flow_device == "cpu")):
        where = "flow.device='cpu' runs it" if flow in GPU_FLOW_ESTIMATORS else "it runs"
        problems.append(("flow_gpus", flow_gpus, f"flow estimator {flow!r} would hold that GPU share unused ({where} on "
                         "the CPU): set flow_gpus=0, or use 'raft_small', 'raft_large' or 'dali_of' on the GPU"))
    return problems


def check_stage_gpus(*, decoder: str, decode_gpus: float, flow: str | None, flow_device: str,
                     flow_gpus: float) -> None:
    """Raise a ValueError for the first of ``stage_gpu_problems``, naming the argument, its value and the
    ``scaling.*`` key that sets it; the pair and the labelled pipelines both check their shares with it."""
    problems = stage_gpu_problems(decoder=decoder, decode_gpus=decode_gpus, flow=flow, flow_device=flow_device,
                                  flow_gpus=flow_gpus)
    if problems:
        name, value, why = problems[0]
        raise ValueError(f"{name}={value!r} (scaling.{name}): {why}")


def actor_flow_config(flow: str, flow_config: FlowConfig | None, *, flow_gpus: float) -> FlowConfig:
    """The flow config a flow actor builds its estimator from: estimator ``flow`` with ``flow_config``'s
    settings (None: the defaults), and RAFT on the CPU when the actor reserved no GPU (CUDA may still be
    visible to it: module doc)."""
    cfg = dataclasses.replace(flow_config or FlowConfig(), estimator=flow)
    if flow_gpus == 0 and flow in GPU_FLOW_ESTIMATORS and cfg.device == "auto":
        return dataclasses.replace(cfg, device="cpu")
    return cfg


def check_decode_args(*, bad_input: str, decoder: str) -> None:
    """Raise a ValueError listing the valid choices unless ``bad_input`` and ``decoder`` are known."""
    check_bad_input(bad_input)
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r} (data.decoder); choose one of: {', '.join(DECODERS)}")


def build_pair_dataset(
    data_root: str | Path,
    *,
    split: str = "video",
    crop_size: int,
    bbox_scale: float,
    gap: int = 1,
    window: int,
    frames_per_item: int = 2,
    flow: str | None = "dis",
    flow_config: FlowConfig | None = None,
    decoder: str = AUTO_DECODER,
    bad_input: str = "fail",
    decode_concurrency: int = 1,
    flow_concurrency: int = 1,
    decode_gpus: float = 0.0,
    flow_gpus: float = 0.0,
    flow_batch_size: int = 16,
    max_clips: int | None = None,
    fuse: bool | None = None,
    report: PipelineReport | None = None,
) -> ray.data.Dataset:
    """The frame pairs (t, t + gap) of every clip of a split, as a lazy Ray Data dataset (rows: module doc).

    Args:
        data_root: a benchmark folder (docs/data_format.md).
        crop_size: S, crop side in pixels; bbox_scale: crop side / longest box side (1.3 usual).
        gap, window, frames_per_item: see ``manifest.pair_windows`` (window: ``data.decode_window``); 3 frames
            per item: rows are 3-frame windows (module doc). For clips with one keyframe (the synthetic benchmark's), a window covering
            the whole clip decodes each frame exactly once.
        flow: a flow estimator name (a ``flow.estimator`` choice), or None for no flow stage.
        flow_config: the ``flow`` config section, for estimators with settings (RAFT's weights, ...); its
            ``estimator`` is replaced by ``flow``.
        decoder: one of ``decode.DECODERS`` (``data.decoder``). 'auto' picks per clip inside the actor from the
            clip and what Ray gave it (``DecoderChoice``): NVDEC / nvJPEG when the actor holds a GPU share, a CPU
            decoder otherwise.
        bad_input: 'fail' (raise naming the file and frame) or 'skip' (drop the window, see module doc).
        decode_concurrency, flow_concurrency: actors per stage, each holding 1 CPU (plus its GPU share).
            Keep CPUs free for Ray Data's own tasks: a pipeline hangs when actors take every CPU (FACTS.md).
        decode_gpus: GPU share each decode actor reserves (``scaling.decode_gpus``): 0 = CPU decoding;
            > 0 = NVDEC, e.g. 0.25 = four decode actors per GPU. 'dali_mixed' needs > 0.
        flow_gpus: GPU share each flow actor reserves (``scaling.flow_gpus``): > 0 runs RAFT / 'dali_of' on
            it; 0 runs the estimator on the CPU ('dali_of' needs > 0). Shares: ``stage_gpu_problems``.
        max_clips: use the first this many clips of the split (None: all), as ``video_pairs.VideoPairs`` does.
        fuse: decode and flow in the same ``flow_concurrency`` actors (``DecodeFlowStage``, each reserving the
            larger GPU share; decode_concurrency and flow_batch_size then unused), or in two stages.
            None: fused when neither stage reserves a GPU. The rows are the same either way (tested).
        report: collects counts and skipped windows (``PipelineReport``).

    Raises:
        ValueError: a bad argument, naming it (and for the GPU shares the ``scaling.*`` key that sets it).
    """
    check_decode_args(bad_input=bad_input, decoder=decoder)
    check_values({"data.crop_size": crop_size, "data.bbox_scale": bbox_scale})
    if flow is not None:  # fail here, on the driver; the estimators are built in the actors
        check_values({"flow.estimator": flow})
    check_stage_gpus(decoder=decoder, decode_gpus=decode_gpus, flow=flow,
                     flow_device=flow_config.device if flow_config is not None else "auto", flow_gpus=flow_gpus)
    windows = select_windows(data_root, split=split, gap=gap, window=window, max_clips=max_clips,
                             frames_per_item=frames_per_item, bad_input=bad_input)
    if fuse is None:
        fuse = decode_gpus == 0 and flow_gpus == 0
    decode_kwargs = {"data_root": str(data_root), "crop_size": crop_size, "bbox_scale": bbox_scale, "gap": gap,
                     "decoder": decoder, "bad_input": bad_input, "report": report, "frames_per_item": frames_per_item}
    flow_kwargs = {"flow_config": actor_flow_config(flow, flow_config, flow_gpus=flow_gpus) if flow else None,
                   "report": report}
    dataset = ray.data.from_items(windows, override_num_blocks=min(len(windows), 64))
    if flow is not None and fuse:
        return dataset.map_batches(
            DecodeFlowStage, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=flow_concurrency), num_cpus=ACTOR_CPUS,
            num_gpus=max(decode_gpus, flow_gpus),
            fn_constructor_kwargs={"decode": decode_kwargs, "flow": flow_kwargs})
    dataset = dataset.map_batches(
        DecodeCropStage, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=decode_concurrency),
        num_cpus=ACTOR_CPUS, num_gpus=decode_gpus, fn_constructor_kwargs=decode_kwargs,
    )
    if flow is not None:
        dataset = dataset.map_batches(
            FlowStage, batch_size=flow_batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=flow_concurrency), num_cpus=ACTOR_CPUS, num_gpus=flow_gpus,
            fn_constructor_kwargs=flow_kwargs,
        )
    return dataset

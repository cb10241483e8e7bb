"""Labelled frames as a Ray Data dataset: clips -> decode + crop -> per-row item (augmentation) -> rows.

The Ray version of ``raymotion.data.frames.LabelledFrames``, streaming instead of in memory. The same
clips (``frames.select_clips``), the same crops (``crops.crop_box``/``crop_image``, and for augmentation the
larger source crop of ``frames.augmented_store_size``) and the same item function (``frames.labelled_item``),
so without augmentation a row equals a ``LabelledFrames`` item.

    clips (from_items, one window per clip and epoch) -> map_batches(LabelledDecodeStage)  [actors]
        -> map_batches(labelled_items)  [tasks: augmentation + normalisation]  -> rows, one per frame

Rows (numpy; the keys, dtypes and shapes of a ``LabelledFrames`` item): image (3, S, S) float32,
ImageNet-normalised RGB; joints2d (24, 2) float32, normalised crop coordinates; joints2d_vis (24,) float32;
joints3d (24, 3) and eval_joints3d (14, 3) float32, metres, camera frame; pose_cam (24, 3) float32
axis-angle; betas (10,) float32; has_smpl, has_joints3d () float32 1.0 or 0.0 (partial labels); clip_index (row in manifest.parquet) and frame,
int64. Images travel as float32 (4x the bytes of uint8) because the colour gain is applied before
normalising, exactly as ``LabelledFrames`` does; at S = 128 a row is ~197 KB.

Augmentation (``augment=True``): each row draws a ``crops.Augmentation`` from a torch generator seeded
with (seed, epoch, clip_index, frame) (``row_augmentation``), so the dataset is deterministic given its
arguments whatever the order, actor or block a row goes through. One pass over a dataset built with
``epochs=E`` holds every frame E times, with a fresh draw per epoch; iterating the same dataset again
repeats the same draws (build it with the epochs a run needs, or with another seed).

Bad input (a missing, corrupt or truncated video or frame file, a frame past the end of the clip, a missing labels
file, a label file whose rows disagree with the manifest, a box empty or outside the frame):
``bad_input='fail'`` raises naming the file (and frame where there is one); ``'skip'`` drops that clip
(a frame whose labels are NaN/inf or whose box is empty, or a missing or corrupt frame file of an image-sequence
clip: that frame only), logs a warning naming it, and
records it in the ``pipeline.PipelineReport`` passed as ``report=``. The
report's counts here: windows (clips decoded), decoded_frames, used_frames (rows), decode_crop_s, skipped.

On a Ray Train worker (the dataset passed as ``datasets={'labelled': ds}``):

    shard = ray.train.get_dataset_shard("labelled")
    for batch in shard.iter_torch_batches(batch_size=B, drop_last=True, local_shuffle_buffer_size=8 * B,
                                          local_shuffle_seed=seed):
        loss, logs = pretrain_loss(model, body, batch, cfg.loss)   # or refine_loss(..., labelled=batch)

gives exactly the dict ``default_collate`` makes of B ``LabelledFrames`` items (``as_step_batch`` converts
a numpy batch from ``iter_batches``; torch batches need no conversion).

Legend: T = frames of a clip, N = rows, J = joints, A = stored source-crop side, S = crop side (pixels).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import ray
import torch

from raymotion.body.joints import NUM_EVAL_JOINTS, NUM_SMPL_JOINTS
from raymotion.config import check_values
from raymotion.data.crops import Augmentation, crop_box, crop_image, sample_augmentation
from raymotion.data.decode import AUTO_DECODER
from raymotion.data.frames import (LABELLED_ITEM_LABELS, augmented_store_size, labelled_item,
                                   selected_clip_rows)
from raymotion.data.labels import frame_sizes, read_labels
from raymotion.data.pipeline import (DecoderChoice, PipelineReport, check_decode_args, check_stage_gpus, each_window,
                                     read_window)

logger = logging.getLogger(__name__)

CLIPS_PER_DECODE_BATCH = 8
"""Clips per call of the decode stage: labelled clips are short (3 frames in the default benchmark), so
one clip per call would make blocks of a few rows each and Ray Data's per-block overhead would dominate."""
ROWS_PER_ITEM_BATCH = 32
"""Rows per call of the item stage."""
MAX_WINDOW_BLOCKS = 64
"""Blocks the clip list is cut into (more blocks: finer scheduling, more overhead)."""

NUM_LABEL_BETAS = 10
"""Betas per frame in labels.parquet (docs/data_format.md); only the shape of empty batches needs it."""

# Shapes of the rows the item stage emits (per row), for empty batches.
_ROW_SHAPES: dict[str, tuple[tuple[int, ...], type]] = {
    "joints2d": ((NUM_SMPL_JOINTS, 2), np.float32),
    "joints2d_vis": ((NUM_SMPL_JOINTS,), np.float32),
    "joints3d": ((NUM_SMPL_JOINTS, 3), np.float32),
    "joints3d_conf": ((NUM_SMPL_JOINTS,), np.float32),
    "eval_joints3d": ((NUM_EVAL_JOINTS, 3), np.float32),
    "pose_cam": ((NUM_SMPL_JOINTS, 3), np.float32),
    "betas": ((NUM_LABEL_BETAS,), np.float32),
    "has_smpl": ((), np.float32),
    "has_joints3d": ((), np.float32),
    "clip_index": ((), np.int64),
    "frame": ((), np.int64),
}
STEP_BATCH_KEYS = ("image", *_ROW_SHAPES)
"""The keys of a row, and of the labelled batch ``train.step`` reads (image, joints2d, ... frame)."""


def labelled_windows(data_root: str | Path, *, split: str, fraction: float, fraction_seed: int, epochs: int,
                     seed: int) -> list[dict]:
    """One decode window per selected clip and epoch: the clips ``LabelledFrames`` would use.

    Pure apart from reading manifest.parquet. The clips are ``frames.select_clips`` of the split (same
    fraction and seed, same clips); within each epoch they come in a seeded order (seed, epoch), so that
    a local shuffle buffer mixes different clips in different epochs.

    Returns:
        One dict per (epoch, clip): clip_id, path, labels_path, frames, width, height (as in the manifest),
        clip_index (row in manifest.parquet), epoch.
    """
    chosen = selected_clip_rows(Path(data_root), split, fraction=fraction, seed=fraction_seed)
    windows = []
    for epoch in range(epochs):
        for i in np.random.default_rng([seed, epoch]).permutation(len(chosen)):
            clip_index, row = chosen[int(i)]
            windows.append({
                "clip_id": row["clip_id"], "path": row["path"], "labels_path": row["labels_path"],
                "frames": int(row["frames"]), "width": int(row["width"]), "height": int(row["height"]),
                "clip_index": clip_index, "epoch": epoch,
            })
    return windows


def row_augmentation(*, seed: int, epoch: int, clip_index: int, frame: int) -> Augmentation:
    """The augmentation of one row: ``crops.sample_augmentation`` from a generator seeded by the row's identity.

    The four integers are hashed with numpy's ``SeedSequence`` (well-mixed: nearby ids give unrelated draws).
    """
    key = np.random.SeedSequence([seed, epoch, clip_index, frame]).generate_state(1, dtype=np.uint64)[0]
    return sample_augmentation(torch.Generator().manual_seed(int(key)))


class LabelledDecodeStage:
    """``map_batches`` stage: clips -> one row per frame with its stored uint8 crop and raw labels.

    The stored crop is the final crop, or with ``augment`` the larger source crop every augmented crop is
    resampled from (``frames.augmented_store_size``), as ``LabelledFrames`` stores them. Clips are videos or
    image sequences. Decoder: ``pipeline.DecoderChoice`` (``data.decoder``); DALI pipelines are built in this
    actor, never in the driver (FACTS.md). A bad frame file is left out under bad_input='skip' (counted).
    """

    def __init__(self, *, data_root: str, crop_size: int, bbox_scale: float, augment: bool, decoder: str,
                 bad_input: str, report: PipelineReport | None) -> None:
        self.data_root = Path(data_root)
        self.crop_size, self.bbox_scale = crop_size, bbox_scale
        self.store_size = augmented_store_size(crop_size) if augment else crop_size
        self.bad_input = bad_input
        self.report = report.actor if report is not None else None
        cv2.setNumThreads(1)  # one CPU per actor
        self._backend = DecoderChoice(decoder, what="labelled clips")

    def _clip(self, window: dict) -> tuple[dict[str, np.ndarray], int, str]:
        num = int(window["frames"])
        frames_THW3, decoded, backend, bad_frames = read_window(
            self.data_root, window, first_frame=0, num_frames=num, clip_frames=num, choice=self._backend,
            bad_input=self.bad_input)
        labels, bad = read_labels(self.data_root, window, ["box_xyxy", *LABELLED_ITEM_LABELS],
                                   bad_input=self.bad_input, frame_hw_T2=frame_sizes(frames_THW3))
        bad.update(bad_frames)  # a frame that did not decode: its own message
        for message in bad.values():  # bad_input='skip': the frame is left out and counted
            logger.warning(message)
            if self.report is not None:
                self.report.skip.remote(message)
        kept_T = np.array([t for t in range(num) if t not in bad], dtype=np.int64)
        labels = {name: values[kept_T] for name, values in labels.items()}
        center_T2, side_T = crop_box(labels.pop("box_xyxy"), scale=self.bbox_scale)
        store_side_T = side_T * (self.store_size / self.crop_size)
        size = self.store_size
        source_TAA3 = np.array([crop_image(frames_THW3[t], center_2=c, side=side, size=size)
                                for t, c, side in zip(kept_T, center_T2, store_side_T)], np.uint8).reshape(-1, size, size, 3)
        rows = {"source": source_TAA3, "center": center_T2, "side": side_T, **labels,
                "clip_index": np.full(len(kept_T), int(window["clip_index"]), dtype=np.int64),
                "frame": kept_T,
                "epoch": np.full(len(kept_T), int(window["epoch"]), dtype=np.int64)}
        return rows, decoded, backend

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        kept, decoded_total = each_window(
            batch, self._clip, bad_input=self.bad_input, report=self.report,
            describe=lambda w: f"labelled clip {w['clip_id']} (epoch {w['epoch']})")
        out = [rows for _, rows in kept]
        if self.report is not None:
            self.report.add.remote(windows=len(out), decoded_frames=decoded_total,
                                   used_frames=sum(len(r["frame"]) for r in out),
                                   decode_crop_s=time.perf_counter() - start)
        if not out:
            return self._empty()
        return {name: np.concatenate([r[name] for r in out]) for name in out[0]}

    def _empty(self) -> dict[str, np.ndarray]:
        """A zero-row batch with this stage's columns (every clip of the batch skipped)."""
        joints = {"joints2d": (NUM_SMPL_JOINTS, 2), "joints2d_visible": (NUM_SMPL_JOINTS,),
                  "joints2d_conf": (NUM_SMPL_JOINTS,), "joints3d_cam": (NUM_SMPL_JOINTS, 3),
                  "joints3d_conf": (NUM_SMPL_JOINTS,),
                  "eval_joints3d_cam": (NUM_EVAL_JOINTS, 3), "pose_cam": (NUM_SMPL_JOINTS, 3),
                  "betas": (NUM_LABEL_BETAS,), "has_smpl": (), "has_joints3d": ()}
        empty = {"source": np.zeros((0, self.store_size, self.store_size, 3), np.uint8),
                 "center": np.zeros((0, 2)), "side": np.zeros(0)}
        empty.update({name: np.zeros((0, *shape), bool if name in ("joints2d_visible", "has_smpl", "has_joints3d") else np.float32)
                      for name, shape in joints.items()})
        empty.update({name: np.zeros(0, np.int64) for name in ("clip_index", "frame", "epoch")})
        return empty


def labelled_items(batch: dict[str, np.ndarray], *, crop_size: int, augment: bool, seed: int) -> dict[str, np.ndarray]:
    """``map_batches`` stage: decoded frames -> rows (module doc), one ``frames.labelled_item`` per row.

    With ``augment`` each row's augmentation is ``row_augmentation(seed, epoch, clip_index, frame)``.
    """
    # One CPU per task: OpenCV's pool would oversubscribe the cores (torch already gets OMP_NUM_THREADS=1
    # from Ray; setting it here would also leak into a caller's process, e.g. a test calling this directly).
    cv2.setNumThreads(1)
    items = []
    for i in range(len(batch["frame"])):
        # Copies: Ray's batches are read-only views, and torch warns on wrapping those.
        labels = {name: np.array(batch[name][i]) for name in ("center", "side", *LABELLED_ITEM_LABELS)}
        augmentation = row_augmentation(seed=seed, epoch=int(batch["epoch"][i]), clip_index=int(batch["clip_index"][i]),
                                        frame=int(batch["frame"][i])) if augment else None
        items.append(labelled_item(batch["source"][i], labels, crop_size=crop_size, augmentation=augmentation))
    if not items:
        empty = {name: np.zeros((0, *shape), dtype) for name, (shape, dtype) in _ROW_SHAPES.items()}
        return {"image": np.zeros((0, 3, crop_size, crop_size), np.float32), **empty}
    out = {name: np.stack([item[name] for item in items]) for name in items[0]}
    out["clip_index"] = batch["clip_index"].astype(np.int64)
    out["frame"] = batch["frame"].astype(np.int64)
    return out


def build_labelled_dataset(
    data_root: str | Path,
    *,
    split: str = "labelled",
    crop_size: int,
    bbox_scale: float,
    fraction: float,
    fraction_seed: int,
    augment: bool,
    seed: int,
    epochs: int = 1,
    decoder: str = AUTO_DECODER,
    bad_input: str = "fail",
    report: PipelineReport | None = None,
    concurrency: int = 1,
    decode_gpus: float = 0.0,
) -> ray.data.Dataset:
    """Every frame of a seeded fraction of a split's clips, as a lazy Ray Data dataset (rows: module doc).

    Args:
        data_root: a benchmark folder (docs/data_format.md).
        split: one of ``frames.LABELLED_SPLITS``.
        crop_size: S, crop side in pixels; bbox_scale: crop side / longest box side (1.3 usual).
        fraction, fraction_seed: which clips (``frames.select_clips``; ``train.fraction`` and
            ``train.fraction_seed``, as ``train.components.labelled_frames`` passes them to ``LabelledFrames``).
        augment: draw a ``crops.Augmentation`` per row (module doc); False gives ``LabelledFrames`` items.
        seed: seeds the augmentation and the clip order of each epoch (``run.seed``).
        epochs: passes over the frames in one pass over the dataset, each with fresh augmentations.
        decoder: one of ``decode.DECODERS`` (``data.decoder``; 'auto': ``pipeline.DecoderChoice``).
        bad_input: 'fail' (raise naming the file and frame) or 'skip' (drop the clip, see module doc).
        report: collects counts and skipped clips (``pipeline.PipelineReport``; Ray must be initialised).
        concurrency: decode actors, each holding 1 CPU (and ``decode_gpus``); the item stage runs at
            most this many tasks of 1 CPU. Keep CPUs free for Ray Data's own tasks and the trainers: a
            pipeline hangs when actors take every CPU (FACTS.md).
        decode_gpus: GPU share each decode actor reserves (``scaling.decode_gpus``): 0 decodes on the CPU;
            > 0 lets 'auto' (and requires 'dali_mixed') decode with NVDEC. A config value, never a snapshot
            of the cluster (train/plan.py).
    """
    check_values({"data.crop_size": crop_size, "data.bbox_scale": bbox_scale})
    check_decode_args(bad_input=bad_input, decoder=decoder)
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1 (passes over the labelled frames)")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1 (decode actors)")
    if seed < 0 or fraction_seed < 0:
        raise ValueError(f"seed={seed} and fraction_seed={fraction_seed} must be >= 0")
    windows = labelled_windows(data_root, split=split, fraction=fraction, fraction_seed=fraction_seed,
                               epochs=epochs, seed=seed)
    check_stage_gpus(decoder=decoder, decode_gpus=decode_gpus, flow=None, flow_device="auto", flow_gpus=0.0)
    dataset = ray.data.from_items(windows, override_num_blocks=min(len(windows), MAX_WINDOW_BLOCKS))
    dataset = dataset.map_batches(
        LabelledDecodeStage, batch_size=CLIPS_PER_DECODE_BATCH, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1, num_gpus=decode_gpus,
        fn_constructor_kwargs={"data_root": str(data_root), "crop_size": crop_size, "bbox_scale": bbox_scale,
                               "augment": augment, "decoder": decoder, "bad_input": bad_input, "report": report},
    )
    return dataset.map_batches(
        labelled_items, batch_size=ROWS_PER_ITEM_BATCH, batch_format="numpy", num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=concurrency),
        fn_kwargs={"crop_size": crop_size, "augment": augment, "seed": seed},
    )


def as_step_batch(batch: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of rows (numpy from ``iter_batches`` or torch from ``iter_torch_batches``) -> the labelled
    batch dict ``train.step`` reads: the same keys, every value a tensor (numpy arrays are wrapped without
    a copy). Torch batches pass through unchanged: no renames or normalisation are needed.

    Raises:
        ValueError: a key of ``STEP_BATCH_KEYS`` is missing (not a labelled-pipeline batch).
    """
    missing = [key for key in STEP_BATCH_KEYS if key not in batch]
    if missing:
        raise ValueError(f"batch lacks {', '.join(missing)}; a labelled batch has: {', '.join(STEP_BATCH_KEYS)}")
    return {key: torch.as_tensor(batch[key]) for key in STEP_BATCH_KEYS}

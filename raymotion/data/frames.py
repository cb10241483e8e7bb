"""Single-process, in-memory datasets over a benchmark folder (docs/data_format.md): no Ray.

``LabelledFrames`` feeds the supervised and anchoring batches; ``VideoPairs`` feeds the unannotated
frame pairs of flow-consistency refinement. Both decode every clip once at construction, keep uint8
crops in memory (flows as float16) and return torch tensors, so a plain DataLoader can batch them.
The Ray Data pipelines do the same work with the same ``raymotion.data.crops`` functions (and, for
labelled frames, the same ``labelled_item``).

Tensor naming legend: N = frames, P = pairs, T = frames of one clip, J = joints, S = crop side
(pixels), H, W = image height and width; trailing digits are literal sizes.
Returned images are (3, S, S) float32, RGB, ImageNet-normalised (``crops.IMAGENET_MEAN/STD``);
2D joints are normalised crop coordinates n = 2 p / S - 1; 3D joints are metres, camera frame.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from raymotion.body.joints import EVAL_FLIP_PERM, NUM_EVAL_JOINTS, NUM_SMPL_JOINTS, SMPL_FLIP_PERM
from raymotion.data.crops import (
    SCALE_JITTER,
    Augmentation,
    box_problems,
    crop_box,
    crop_flow,
    crop_image,
    crop_matrix,
    normalise_image,
    sample_augmentation,
    to_normalised,
    transform_points,
)
from raymotion.config import FlowConfig, check_values
from raymotion.geometry.pose3d import flip_points3d, flip_pose, rotate_points3d, rotate_pose
from raymotion.data.decode import read_video
from raymotion.flow.estimator import make_flow_estimator
from raymotion.data.manifest import (check_bad_input, check_clip_lengths, check_frame_size, check_frames_per_item,
                                       read_columns, read_manifest, warn_skipped)

LABELLED_SPLITS = ("labelled", "val", "test")
"""Splits whose labels ``LabelledFrames`` may read (never 'video': its labels are not for training)."""
GROUND_TRUTH_FLOW = "ground_truth"
"""``VideoPairs(flow=...)`` value for the renderer's exact flow (flow.npz)."""


def read_decoded(data_dir: Path, row: dict) -> np.ndarray:
    """A clip's frames (T, H, W, 3) uint8, checked against the manifest row's frame count and size."""
    path = data_dir / row["path"]
    frames_THW3 = read_video(path, expected_frames=row["frames"])
    check_frame_size(row, height=frames_THW3.shape[1], width=frames_THW3.shape[2], path=path)
    return frames_THW3


# Per-frame label columns (docs/data_format.md) and their per-frame shapes.
_LABEL_SHAPES: dict[str, tuple[int, ...]] = {
    "box_xyxy": (4,),
    "pose_cam": (NUM_SMPL_JOINTS, 3),
    "betas": (-1,),
    "transl_cam": (3,),
    "intrinsics": (4,),
    "joints2d": (NUM_SMPL_JOINTS, 2),
    "joints2d_visible": (NUM_SMPL_JOINTS,),
    "joints3d_cam": (NUM_SMPL_JOINTS, 3),
    "eval_joints3d_cam": (NUM_EVAL_JOINTS, 3),
}


def select_clips(num_clips: int, *, fraction: float, seed: int, max_clips: int | None = None) -> np.ndarray:
    """The annotation-fraction subset: a seeded permutation of the clips, then a prefix.

    The same seed gives the same subset, and a larger fraction a superset of a smaller one. At
    least one clip is kept; ``max_clips`` caps the prefix further (for quick runs and tests).

    Returns:
        (K,) sorted indices into the split's clips.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1] (the share of labelled clips to use)")
    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips={max_clips} must be >= 1, or None for no cap")
    order = np.random.default_rng(seed).permutation(num_clips)
    count = max(1, round(fraction * num_clips))
    if max_clips is not None:
        count = min(count, max_clips)
    return np.sort(order[:count])


def _split_rows(data_dir: Path, split: str, choices: tuple[str, ...] | None) -> list[tuple[int, dict]]:
    """(manifest row index, row) of every clip of ``split``, in manifest order.

    ``choices``: the splits allowed here; None allows every split the manifest holds.
    """
    manifest = read_manifest(data_dir).to_pylist()
    if choices is None:
        choices = tuple(sorted({row["split"] for row in manifest}))
    if split not in choices:
        raise ValueError(f"split={split!r} is not valid here; choose one of: {', '.join(choices)}")
    rows = [(i, row) for i, row in enumerate(manifest) if row["split"] == split]
    if not rows:
        raise ValueError(f"the manifest of {data_dir} lists no clips in split {split!r}")
    return rows


def label_problems(labels: dict[str, np.ndarray], *, width: int, height: int) -> dict[int, str]:
    """Frame -> what is wrong with its labels (the first problem): a value that is not finite (NaN or inf),
    naming the column, or a box with nothing to crop (``crops.box_problems``). Frames without one are absent."""
    problems: dict[int, str] = {}
    for name, values_T in labels.items():
        flat_TX = values_T.reshape(len(values_T), -1)
        if name == "box_xyxy":
            found = box_problems(flat_TX, width=width, height=height)
        else:
            found = {}
            for t in np.flatnonzero(~np.isfinite(flat_TX).all(axis=1)).tolist():
                i = int(np.flatnonzero(~np.isfinite(flat_TX[t]))[0])
                found[t] = f"{name} is not finite ({flat_TX[t, i]} at value {i})"
        for t, problem in found.items():
            problems.setdefault(t, problem)
    return dict(sorted(problems.items()))


def read_labels(data_dir: Path, row: dict, columns: list[str], *,
                 bad_input: str) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """The named label columns of one clip, as (T, ...) arrays, and its bad frames (``label_problems``).

    Checks the columns exist, the row count, and every frame's values: with ``bad_input='fail'`` a bad
    frame raises naming the file, the frame and the column; with 'skip' the bad frames are returned as
    {frame: message} for the caller to leave out (and count).
    """
    if not row["labels_path"]:
        raise ValueError(f"clip {row['clip_id']} has no labels_path in the manifest; its boxes are needed to crop")
    path = data_dir / row["labels_path"]
    if not path.is_file():
        raise FileNotFoundError(f"labels of clip {row['clip_id']} not found: {path}")
    table = read_columns(path, columns, what="label columns read here")
    if table.num_rows != row["frames"]:
        raise ValueError(f"{path} has {table.num_rows} rows but the manifest says {row['frames']} frames")
    labels = {}
    for name in columns:
        flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        labels[name] = flat.reshape(table.num_rows, *_LABEL_SHAPES[name])
    problems = label_problems(labels, width=row["width"], height=row["height"])
    if problems and bad_input == "fail":
        frame, problem = next(iter(problems.items()))
        others = f" ({len(problems) - 1} more bad frame(s) in this file)" if len(problems) > 1 else ""
        raise ValueError(f"{path} frame {frame}: {problem}{others}; fix the labels, or set data.bad_input=skip to "
                         "leave such frames out (counted)")
    return labels, {frame: f"skipped {path} frame {frame}: {problem}" for frame, problem in problems.items()}


def augmented_store_size(crop_size: int) -> int:
    """Side (pixels) of the source crop kept per frame for augmentation: the final crop scaled up to
    1 + SCALE_JITTER and turned by any angle fits inside it (the circumscribed circle of that square),
    at the final crop's pixel density and with the same centre."""
    return math.ceil(crop_size * (1.0 + SCALE_JITTER) * math.sqrt(2.0))


LABELLED_ITEM_LABELS = ("joints2d", "joints2d_visible", "joints3d_cam", "eval_joints3d_cam", "pose_cam", "betas")
"""The label columns ``labelled_item`` reads (besides the crop's ``center`` and ``side``)."""


def labelled_item(source_HW3: np.ndarray, labels: dict[str, np.ndarray], *, crop_size: int,
                  augmentation: Augmentation | None) -> dict[str, np.ndarray]:
    """One labelled frame's model input and targets, from its stored crop and labels. Pure; numpy out.

    ``LabelledFrames`` and the Ray Data pipeline (``raymotion.data.labelled_pipeline``) both build their
    items with this function.

    Args:
        source_HW3: the frame's stored uint8 RGB crop. With ``augmentation=None``: the final (S, S, 3)
            crop, used as is. Otherwise the (A, A, 3) source crop, A = ``augmented_store_size(S)``, with
            the final crop's centre and pixel density; the item is resampled from it (the identity
            ``Augmentation()`` resamples too).
        labels: one frame's labels: center (2,) and side () of the un-augmented crop, image pixels
            (``crops.crop_box``); joints2d (24, 2) image pixels; joints2d_visible (24,) bool;
            joints3d_cam (24, 3) and eval_joints3d_cam (14, 3) metres, camera frame; pose_cam (24, 3)
            axis-angle; betas (10,). Other keys are ignored.
        crop_size: S, crop pixels.
        augmentation: see ``LabelledFrames``; None for none.

    Returns:
        image (3, S, S) float32 ImageNet-normalised RGB; joints2d (24, 2) normalised crop coordinates;
        joints2d_vis (24,) 1.0 where visible and inside the crop; joints3d (24, 3); eval_joints3d (14, 3);
        pose_cam (24, 3); betas (10,); has_smpl () 1.0. All float32.
    """
    aug = augmentation or Augmentation()
    if abs(aug.scale - 1.0) > SCALE_JITTER + 1e-9:
        raise ValueError(f"augmentation scale={aug.scale} is outside the stored range 1 +/- {SCALE_JITTER}")
    if augmentation is not None:
        # The source crop shares the box centre and pixel density, so the final crop is the
        # square of side scale * S around its centre.
        half = source_HW3.shape[0] / 2.0
        crop_HW3 = crop_image(source_HW3, center_2=(half, half), side=aug.scale * crop_size, size=crop_size,
                              rotation_deg=aug.rotation_deg, flip=aug.flip)
    else:
        crop_HW3 = source_HW3
    matrix_23 = crop_matrix(labels["center"], aug.scale * labels["side"], crop_size, aug.rotation_deg, aug.flip)
    joints2d_J2 = to_normalised(transform_points(labels["joints2d"], matrix_23), size=crop_size)
    visible_J = labels["joints2d_visible"].copy()
    joints3d_J3 = rotate_points3d(labels["joints3d_cam"], aug.rotation_deg)
    eval_joints3d_E3 = rotate_points3d(labels["eval_joints3d_cam"], aug.rotation_deg)
    pose_J3 = rotate_pose(labels["pose_cam"], aug.rotation_deg)
    if aug.flip:
        # The crop is mirrored, so the joint at a left joint's pixel is now a right joint.
        joints2d_J2 = joints2d_J2[list(SMPL_FLIP_PERM)]
        visible_J = visible_J[list(SMPL_FLIP_PERM)]
        joints3d_J3 = flip_points3d(joints3d_J3, SMPL_FLIP_PERM)
        eval_joints3d_E3 = flip_points3d(eval_joints3d_E3, EVAL_FLIP_PERM)
        pose_J3 = flip_pose(pose_J3, SMPL_FLIP_PERM)
    visible_J &= (np.abs(joints2d_J2) <= 1.0).all(axis=1)
    gain_3 = None if aug.gain_3 == (1.0, 1.0, 1.0) else np.asarray(aug.gain_3)
    return {
        "image": normalise_image(crop_HW3, gain_3=gain_3).numpy(),
        "joints2d": np.asarray(joints2d_J2, dtype=np.float32),
        "joints2d_vis": np.asarray(visible_J, dtype=np.float32),
        "joints3d": np.asarray(joints3d_J3, dtype=np.float32),
        "eval_joints3d": np.asarray(eval_joints3d_E3, dtype=np.float32),
        "pose_cam": np.asarray(pose_J3, dtype=np.float32),
        "betas": np.array(labels["betas"], dtype=np.float32),
        "has_smpl": np.array(1.0, dtype=np.float32),
    }


class LabelledFrames(Dataset):
    """Every frame of a seeded fraction of the labelled clips, cropped around its own box.

    ``shard=(rank, world)`` keeps only the frames n = rank (mod world) of that list (a Ray Train worker's
    share; clips with none of them are not even decoded), so each worker holds 1/world of the crops; with
    (0, 1) every frame. Item i of shard r is frame r + i * world of the unsharded dataset.

    ``__getitem__`` returns a dict of tensors:
        image (3, S, S) float32, ImageNet-normalised RGB;
        joints2d (24, 2) normalised crop coordinates; joints2d_vis (24,) 1.0 where the label says
            visible AND the joint falls inside the crop [-1, 1]^2, else 0.0;
        joints3d (24, 3) and eval_joints3d (14, 3) metres, camera frame (labels joints3d_cam and
            eval_joints3d_cam); pose_cam (24, 3) axis-angle, root orientation in the camera frame;
        betas (10,); has_smpl 1.0; clip_index (row of the clip in manifest.parquet); frame.

    With ``augment=True`` every item draws a ``crops.Augmentation`` (ranges in raymotion.data.crops:
    scale x[0.75, 1.25], rotation U(-30, 30) deg with probability 0.6, flip with probability 0.5,
    per-channel gain U(0.6, 1.4)) from torch's RNG, and the labels follow: 2D joints through the same
    affine map as the pixels; 3D joints and the root orientation rotate about the camera z axis;
    a flip mirrors x, swaps left/right joints and mirrors the pose (SPIN's flip_pose). To allow
    this the dataset keeps a larger uint8 source crop per frame (side ceil(S * 1.25 * sqrt 2), at
    the final crop's pixel density, so every scale and rotation stays inside it), about 3x the memory
    of plain crops, and each item is resampled from it (two bilinear resamplings in all).

    Bad input: a missing or truncated video, frames of another size than the manifest row's, a labels file
    without a needed column, or a frame whose labels hold NaN/inf or whose box is empty raise naming the file
    (and frame and column) with ``bad_input='fail'`` (``data.bad_input``); with 'skip' such frames are left out,
    counted in ``skipped`` (one message each) and logged in one warning.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        split: str,
        crop_size: int,
        bbox_scale: float,
        fraction: float = 1.0,
        seed: int = 0,
        augment: bool = False,
        max_clips: int | None = None,
        shard: tuple[int, int] = (0, 1),
        bad_input: str = "fail",
    ) -> None:
        check_values({"data.crop_size": crop_size, "data.bbox_scale": bbox_scale})
        check_bad_input(bad_input)
        rank, num_shards = shard
        if not 0 <= rank < num_shards:
            raise ValueError(f"shard={shard}: the rank must be in [0, {num_shards}) (a worker's (rank, world size))")
        data_dir = Path(data_dir)
        rows = _split_rows(data_dir, split, LABELLED_SPLITS)
        chosen = select_clips(len(rows), fraction=fraction, seed=seed, max_clips=max_clips)
        self.crop_size = crop_size
        self.augment = augment
        # Stored crop side: the final crop, or the source crop that holds every augmented crop.
        self._store_size = augmented_store_size(crop_size) if augment else crop_size
        self.clip_ids = [rows[i][1]["clip_id"] for i in chosen]
        self.skipped: list[str] = []  # one message per frame left out as bad input (bad_input='skip')

        columns = list(_LABEL_SHAPES)
        crops, labels, clip_index, frame_index = [], [], [], []
        first = 0  # index of the clip's first frame among all frames of the chosen clips
        for i in chosen:
            manifest_index, row = rows[i]
            # This shard's frames of the clip: global frame indices n = rank (mod num_shards).
            kept_T = np.arange((rank - first) % num_shards, row["frames"], num_shards)
            first += row["frames"]
            if len(kept_T) == 0:
                continue  # nothing of this clip in the shard: not even decoded
            frames_THW3 = read_decoded(data_dir, row)
            clip_labels, bad = read_labels(data_dir, row, columns, bad_input=bad_input)
            self.skipped += [bad[t] for t in kept_T if t in bad]
            kept_T = np.array([t for t in kept_T if t not in bad], dtype=np.int64)
            center_T2, side_T = crop_box(clip_labels["box_xyxy"], scale=bbox_scale)
            store_side_T = side_T * (self._store_size / crop_size)
            for t in kept_T:
                crops.append(crop_image(frames_THW3[t], center_2=center_T2[t], side=store_side_T[t], size=self._store_size))
            clip_labels["center"], clip_labels["side"] = center_T2, side_T
            labels.append({name: values[kept_T] for name, values in clip_labels.items()})
            clip_index += [manifest_index] * len(kept_T)
            frame_index += kept_T.tolist()
            del frames_THW3  # only the shard's crops are kept: memory is bounded by the shard
        warn_skipped(self.skipped, what=f"labelled frames of split {split!r}")
        if not crops and self.skipped:
            raise ValueError(f"every labelled frame of this shard was left out as bad input: {self.skipped[0]}")
        if not crops:
            raise ValueError(f"{first} labelled frames cannot be split into {num_shards} shards: lower "
                             "scaling.num_workers")
        self._crops_NHW3 = np.stack(crops)
        self._labels = {name: np.concatenate([clip[name] for clip in labels]) for name in labels[0]}
        self._clip_index_N = np.asarray(clip_index)
        self._frame_N = np.asarray(frame_index)

    def __len__(self) -> int:
        return len(self._crops_NHW3)

    @property
    def nbytes(self) -> int:
        """Bytes held: the stored crops and the labels."""
        return self._crops_NHW3.nbytes + sum(values.nbytes for values in self._labels.values())

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return self.get(index, augmentation=sample_augmentation() if self.augment else None)

    def clip_and_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) clip index (manifest row) and (N,) frame index of every item, without reading the items
        (sequential evaluation orders the items by them)."""
        return self._clip_index_N.copy(), self._frame_N.copy()

    def get(self, index: int, *, augmentation: Augmentation | None = None) -> dict[str, torch.Tensor | int]:
        """Item ``index`` with a given augmentation (None: none); ``__getitem__`` draws one."""
        if augmentation is not None and not self.augment and augmentation != Augmentation():
            raise ValueError("this LabelledFrames was built with augment=False and keeps only the final crops; "
                             "build it with augment=True to apply an augmentation")
        lab = {name: values[index] for name, values in self._labels.items()}
        arrays = labelled_item(self._crops_NHW3[index], lab, crop_size=self.crop_size,
                               augmentation=(augmentation or Augmentation()) if self.augment else None)
        item: dict[str, torch.Tensor | int] = {name: torch.from_numpy(value) for name, value in arrays.items()}
        item["clip_index"] = int(self._clip_index_N[index])
        item["frame"] = int(self._frame_N[index])
        return item


def crop_clip(frames_THW3: np.ndarray, box_T4: np.ndarray, *, crop_size: int, bbox_scale: float,
              blank: Collection[int] = ()) -> tuple[list[np.ndarray], np.ndarray]:
    """Every frame of a clip cropped around its own box (``crops.crop_box``, ``crops.crop_image``).

    Args:
        frames_THW3: (T, H, W, 3) uint8 RGB frames. box_T4: (T, 4) boxes (x0, y0, x1, y1), image pixels.
        blank: frames that get an all-zero crop instead (bad frames under ``bad_input='skip'``: their box
            may be NaN; no kept pair uses them).

    Returns:
        crops: T arrays (S, S, 3) uint8. params_T3: (T, 3) float64 (center x, center y, side), image pixels.
    """
    center_T2, side_T = crop_box(box_T4, scale=bbox_scale)
    empty = np.zeros((crop_size, crop_size, 3), np.uint8)
    crops = [empty if t in blank else crop_image(frame, center_2=c, side=s, size=crop_size)
             for t, (frame, c, s) in enumerate(zip(frames_THW3, center_T2, side_T))]
    return crops, np.concatenate([center_T2, side_T[:, None]], axis=1)


def estimate_pair_flows(estimator, crops: list[np.ndarray], *, gap: int,
                        num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward (crop t -> crop t + gap) and backward flow of the first ``num_pairs`` pairs of a clip's
    crops, each (P, S, S, 2) float32, crop pixels."""
    forward = np.stack([estimator(crops[t], crops[t + gap]) for t in range(num_pairs)])
    backward = np.stack([estimator(crops[t + gap], crops[t]) for t in range(num_pairs)])
    return forward, backward


def _estimated_crop_flows(cache: Path, estimator, crops: list[np.ndarray], *, gap: int,
                          num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward estimator flow between the crops of each pair, (P, S, S, 2) float16.

    Estimating flow dominates building a VideoPairs (two DIS calls per pair), and it depends only on the
    video, the crops and the estimator, so it is cached beside the clip (written atomically) and reused
    by later runs. Delete the flow_*.npz files to recompute.
    """
    size = crops[0].shape[0] if crops else 0
    if cache.is_file():
        with np.load(cache) as data:
            if data["forward"].shape == (num_pairs, size, size, 2):
                return data["forward"], data["backward"]
    forward, backward = (flows.astype(np.float16) for flows in
                         estimate_pair_flows(estimator, crops, gap=gap, num_pairs=num_pairs))
    tmp = cache.with_name(f".{cache.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, forward=forward, backward=backward)
    os.replace(tmp, cache)
    return forward, backward


class VideoPairs(Dataset):
    """All frame pairs (t, t + gap) of the clips of a split, each frame cropped with its own box,
    with optical flow between the two crops in both directions.

    ``flow``: an estimator name (a ``flow.estimator`` choice, e.g. 'dis'), run on
    the two crops once at construction (forward crop1 -> crop2, backward crop2 -> crop1), or
    'ground_truth': the renderer's exact flow (flow.npz; gap 1 only) mapped to the crops with
    ``crops.crop_flow``, NaN (off the body) set to 0 and reported in the validity masks.
    ``flow_config``: the ``flow`` config section, for estimators with settings (RAFT's weights and
    iterations); the cache file is named by the estimator's ``tag``, so changed settings recompute.

    ``__getitem__`` returns a dict of tensors:
        image1, image2 (3, S, S) float32, ImageNet-normalised RGB of frames t and t + gap;
        flow_fwd (2, S, S) float32, crop pixels (dx, dy) on crop 1's grid: the content at crop-1
            pixel x is at x + flow in crop 2; flow_bwd (2, S, S) likewise from crop 2 to crop 1;
        flow_valid_fwd, flow_valid_bwd (S, S) bool: on the body for ground truth, all True for
            estimators;
        crop1, crop2 (3,) float32: (center x, center y, side) of each crop, image pixels;
        clip_index (row of the clip in manifest.parquet); t (frame index of image1).

    ``frames_per_item=3`` (the temporal-context variant, model.film; METHOD.md 5) makes each item a 3-frame window
    t - gap, t, t + gap: the pair (t, t + gap) with all the keys above (its flow is the window's, between the
    last two frames), plus image0 (3, S, S) and crop0 (3,) of frame t - gap. Only pairs whose frame t has a
    frame ``gap`` before it in the clip are windows, so a clip of T frames yields T - 2 gap of them, and
    window item i of a clip is its pair item i + gap. The flow cache is the pairs' (shared).

    ``with_labels=True`` adds each frame's labels with suffix 1 or 2 (and 0 for windows): pose_cam (24, 3), betas (10,),
    transl_cam (3,), intrinsics (4,) = fx, fy, cx, cy image pixels, joints3d (24, 3), eval_joints3d
    (14, 3), joints2d (24, 2) normalised coordinates of that frame's crop, joints2d_vis (24,).
    It exists for diagnostics (scoring the flow loss at the true meshes) and oracle baselines only:
    training code must NOT pass it, because the 'video' split stands for unannotated video
    (docs/data_format.md). Without it only the boxes are read from labels.parquet.

    Bad input: a clip whose video is missing, undecodable, shorter than its manifest row or of another frame
    size raises (naming the file); a clip of ``gap`` frames or fewer raises naming ``train.video_gap``; a
    frame whose read labels hold NaN/inf or whose box is empty raises naming the file, frame and column. With
    ``bad_input='skip'`` (``data.bad_input``) such clips and the pairs of such frames are left out instead,
    one message each in ``skipped``, logged in one warning (a broken video still raises). Memory: uint8 crops once per frame and two float16
    flows per pair (S = 128: 48 KiB per frame, 128 KiB per pair, plus 32 KiB of masks for ground truth).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        split: str = "video",
        crop_size: int,
        bbox_scale: float,
        flow: str = "dis",
        flow_config: FlowConfig | None = None,
        gap: int = 1,
        frames_per_item: int = 2,
        max_clips: int | None = None,
        with_labels: bool = False,
        bad_input: str = "fail",
    ) -> None:
        check_values({"data.crop_size": crop_size, "data.bbox_scale": bbox_scale})
        check_frames_per_item(frames_per_item)
        check_bad_input(bad_input)
        if flow != GROUND_TRUTH_FLOW:  # an estimator: the config's rule for flow.estimator
            check_values({"flow.estimator": flow})
        if gap < 1:
            raise ValueError(f"gap={gap} must be >= 1 frame")
        if flow == GROUND_TRUTH_FLOW and gap != 1:
            raise ValueError(f"flow='ground_truth' needs gap=1 (flow.npz holds consecutive frames only), got gap={gap}")
        if max_clips is not None and max_clips < 1:
            raise ValueError(f"max_clips={max_clips} must be >= 1, or None for all clips")
        data_dir = Path(data_dir)
        rows = _split_rows(data_dir, split, None)[:max_clips]
        self.skipped = check_clip_lengths([row for _, row in rows], split=split, gap=gap, bad_input=bad_input,
                                          frames_per_item=frames_per_item)
        rows = [(i, row) for i, row in rows if row["frames"] > (frames_per_item - 1) * gap]
        if not rows:
            raise ValueError(f"no clip of split {split!r} holds an item at train.video_gap={gap}: {self.skipped[0]}")
        if flow == GROUND_TRUTH_FLOW:
            missing = [row["clip_id"] for _, row in rows if not row["flow_path"]]
            if missing:
                raise ValueError(f"flow='ground_truth' but clip(s) {', '.join(missing[:5])} of split {split!r} "
                                 "have no flow_path in the manifest; use an estimator, e.g. flow='dis'")
        self.crop_size = crop_size
        self.flow = flow
        self.gap = gap
        self.frames_per_item = frames_per_item
        self.with_labels = with_labels
        estimator = None if flow == GROUND_TRUTH_FLOW else make_flow_estimator(
            dataclasses.replace(flow_config or FlowConfig(), estimator=flow))
        columns = list(_LABEL_SHAPES) if with_labels else ["box_xyxy"]

        crops, crop_params, labels, first, clip_index, t_index = [], [], [], [], [], []
        flows_fwd, flows_bwd, valid_fwd, valid_bwd = [], [], [], []
        for manifest_index, row in rows:
            frames_THW3 = read_decoded(data_dir, row)
            clip_labels, bad = read_labels(data_dir, row, columns, bad_input=bad_input)
            self.skipped += list(bad.values())
            offset = len(crops)
            clip_crops, params_T3 = crop_clip(frames_THW3, clip_labels["box_xyxy"], crop_size=crop_size,
                                              bbox_scale=bbox_scale, blank=set(bad))
            center_T2, side_T = params_T3[:, :2], params_T3[:, 2]
            crops += clip_crops
            crop_params.append(params_T3)
            labels.append(clip_labels)
            num_pairs = row["frames"] - gap
            kept_P = [t for t in range(num_pairs) if t not in bad and t + gap not in bad]
            first += [offset + t for t in kept_P]
            clip_index += [manifest_index] * len(kept_P)
            t_index += kept_P
            if estimator is not None:
                cache = data_dir / row["path"]
                cache = cache.with_name(f"flow_{estimator.tag}_{crop_size}px_x{bbox_scale:g}_gap{gap}.npz")
                forward_PSS2, backward_PSS2 = _estimated_crop_flows(cache, estimator, clip_crops, gap=gap, num_pairs=num_pairs)
                flows_fwd += list(forward_PSS2[kept_P])
                flows_bwd += list(backward_PSS2[kept_P])
                continue
            with np.load(data_dir / row["flow_path"]) as npz:
                forward_THW2, backward_THW2 = npz["forward"], npz["backward"]
            if len(forward_THW2) != row["frames"] - 1 or len(backward_THW2) != row["frames"] - 1:
                raise ValueError(f"{data_dir / row['flow_path']} holds {len(forward_THW2)} forward flows; "
                                 f"expected frames - 1 = {row['frames'] - 1}")
            for t in kept_P:
                one = {"center1_2": center_T2[t], "side1": side_T[t], "center2_2": center_T2[t + 1], "side2": side_T[t + 1]}
                two = {"center1_2": center_T2[t + 1], "side1": side_T[t + 1], "center2_2": center_T2[t], "side2": side_T[t]}
                for image_flow, kw, out, valid in ((forward_THW2[t], one, flows_fwd, valid_fwd),
                                                   (backward_THW2[t], two, flows_bwd, valid_bwd)):
                    crop_flow_SS2 = crop_flow(image_flow, size=crop_size, **kw)
                    finite_SS = np.isfinite(crop_flow_SS2).all(axis=-1)
                    out.append(np.where(finite_SS[..., None], crop_flow_SS2, 0.0).astype(np.float16))
                    valid.append(finite_SS)

        warn_skipped(self.skipped, what=f"clips or frames of split {split!r}")
        self._crops_NHW3 = np.stack(crops)
        self._crop_params_N3 = np.concatenate(crop_params).astype(np.float32)
        self._labels = {name: np.concatenate([clip[name] for clip in labels]) for name in labels[0]}
        self._first_P = np.asarray(first, dtype=np.int64)
        self._clip_index_P = np.asarray(clip_index, dtype=np.int64)
        self._t_P = np.asarray(t_index, dtype=np.int64)
        # Items: every pair, or (windows) the pairs whose first frame has a frame `gap` before it.
        self._pair_I = np.flatnonzero(self._t_P >= (frames_per_item - 2) * gap)
        empty = np.zeros((0, crop_size, crop_size, 2), dtype=np.float16)
        self._flow_fwd_PSS2 = np.stack(flows_fwd) if flows_fwd else empty
        self._flow_bwd_PSS2 = np.stack(flows_bwd) if flows_bwd else empty
        self._valid_fwd_PSS = np.stack(valid_fwd) if valid_fwd else None
        self._valid_bwd_PSS = np.stack(valid_bwd) if valid_bwd else None

    def __len__(self) -> int:
        return len(self._pair_I)

    def __getitem__(self, item_index: int) -> dict[str, torch.Tensor | int]:
        index = int(self._pair_I[item_index])  # the pair (the window's last pair)
        n1 = int(self._first_P[index])
        n2 = n1 + self.gap
        size = self.crop_size
        all_valid = torch.ones(size, size, dtype=torch.bool)
        item: dict[str, torch.Tensor | int] = {
            "image1": normalise_image(self._crops_NHW3[n1]),
            "image2": normalise_image(self._crops_NHW3[n2]),
            "flow_fwd": torch.from_numpy(self._flow_fwd_PSS2[index].astype(np.float32).transpose(2, 0, 1)),
            "flow_bwd": torch.from_numpy(self._flow_bwd_PSS2[index].astype(np.float32).transpose(2, 0, 1)),
            "flow_valid_fwd": all_valid if self._valid_fwd_PSS is None else torch.from_numpy(self._valid_fwd_PSS[index]),
            "flow_valid_bwd": all_valid if self._valid_bwd_PSS is None else torch.from_numpy(self._valid_bwd_PSS[index]),
            "crop1": torch.from_numpy(self._crop_params_N3[n1]),
            "crop2": torch.from_numpy(self._crop_params_N3[n2]),
            "clip_index": int(self._clip_index_P[index]),
            "t": int(self._t_P[index]),
        }
        frames = (("1", n1), ("2", n2))
        if self.frames_per_item == 3:
            n0 = n1 - self.gap
            item["image0"] = normalise_image(self._crops_NHW3[n0])
            item["crop0"] = torch.from_numpy(self._crop_params_N3[n0])
            frames = (("0", n0), *frames)
        if self.with_labels:
            for suffix, n in frames:
                item.update(self._frame_labels(n, suffix))
        return item

    def _frame_labels(self, n: int, suffix: str) -> dict[str, torch.Tensor]:
        lab = {name: values[n] for name, values in self._labels.items()}
        center_x, center_y, side = self._crop_params_N3[n].astype(np.float64)
        joints2d_J2 = to_normalised(transform_points(lab["joints2d"], crop_matrix((center_x, center_y), side, self.crop_size)),
                                    size=self.crop_size)
        visible_J = lab["joints2d_visible"] & (np.abs(joints2d_J2) <= 1.0).all(axis=1)
        values = {
            "pose_cam": lab["pose_cam"], "betas": lab["betas"], "transl_cam": lab["transl_cam"],
            "intrinsics": lab["intrinsics"], "joints3d": lab["joints3d_cam"], "eval_joints3d": lab["eval_joints3d_cam"],
            "joints2d": joints2d_J2, "joints2d_vis": visible_J,
        }
        return {name + suffix: torch.as_tensor(value, dtype=torch.float32) for name, value in values.items()}


def mean_param_targets(data_root: str | Path, *, bbox_scale: float, split: str = "labelled") -> dict[str, torch.Tensor]:
    """The labels ``raymotion.models.mean_params.fit_mean_params`` averages, of every frame of a split:
    pose_N243 (axis-angle, camera frame), betas_NK, and joints2d_NJ2 in normalised crop coordinates of each
    frame's crop (``crops.crop_box`` with ``bbox_scale``), float32 tensors.

    Every label is checked as it is read (columns, row counts, finite values): one NaN would make every
    mean NaN, so a bad frame raises naming the file, the frame and the column.
    """
    data_root = Path(data_root)
    rows = [r for r in read_manifest(data_root).to_pylist() if r["split"] == split]
    if not rows:
        raise ValueError(f"{data_root / 'manifest.parquet'} has no '{split}' clips to average")
    columns = ["pose_cam", "betas", "joints2d", "box_xyxy"]
    tables = [read_labels(data_root, r, columns, bad_input="fail")[0] for r in rows]
    labels = {name: np.concatenate([t[name] for t in tables]) for name in columns}
    joints2d_NJ2 = torch.tensor(labels["joints2d"], dtype=torch.float32)
    centre_N2, side_N = crop_box(labels["box_xyxy"], scale=bbox_scale)
    centre_N2 = torch.as_tensor(centre_N2, dtype=torch.float32)
    side_N = torch.as_tensor(side_N, dtype=torch.float32)
    return {
        "pose_N243": torch.tensor(labels["pose_cam"], dtype=torch.float32),
        "betas_NK": torch.tensor(labels["betas"], dtype=torch.float32),
        "joints2d_NJ2": 2.0 * (joints2d_NJ2 - centre_N2[:, None]) / side_N[:, None, None],
    }

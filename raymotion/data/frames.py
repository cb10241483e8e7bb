"""Labelled frames in memory over a benchmark folder (docs/data_format.md): no Ray.

``LabelledFrames`` feeds the supervised and anchoring batches: it decodes every clip of a seeded fraction once
at construction, keeps uint8 crops in memory and returns torch tensors, so a plain DataLoader can batch them.
The labelled Ray Data pipeline (``raymotion.data.labelled_pipeline``) builds its rows with the same
``labelled_item``. The unannotated frame pairs of refinement are ``raymotion.data.video_pairs.VideoPairs``.

Tensor naming legend: N = frames, T = frames of one clip, J = joints, S = crop side (pixels), H, W = image
height and width; trailing digits are literal sizes.
Returned images are (3, S, S) float32, RGB, ImageNet-normalised (``crops.IMAGENET_MEAN/STD``);
2D joints are normalised crop coordinates n = 2 p / S - 1; 3D joints are metres, camera frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from raymotion.body.joints import EVAL_FLIP_PERM, SMPL_FLIP_PERM
from raymotion.config import check_values
from raymotion.data.crops import (
    SCALE_JITTER,
    Augmentation,
    crop_box,
    crop_image,
    normalise_image,
    sample_augmentation,
)
from raymotion.data.decode import AUTO_DECODER
from raymotion.data.labels import LABEL_SHAPES, frame_sizes, read_decoded, read_labels, split_rows
from raymotion.data.manifest import UNRENDERED, check_bad_input, clip_exists, warn_skipped
from raymotion.geometry.crop_maps import crop_matrix, to_normalised, transform_points
from raymotion.geometry.pose3d import flip_points3d, flip_pose, rotate_points3d, rotate_pose

LABELLED_SPLITS = ("labelled", "val", "test")
"""Splits whose labels ``LabelledFrames`` may read (never 'video': its labels are not for training)."""


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


def selected_clip_rows(data_dir: Path, split: str, *, fraction: float, seed: int,
                       max_clips: int | None = None) -> list[tuple[int, dict]]:
    """(manifest row index, row) of the annotation-fraction subset of a labelled split (``select_clips``), in
    manifest order. Raises naming the clips when a chosen clip's video is not on disk: a benchmark rendered only
    for the clips one run reads (``synth.generate``'s ``only``, listed in ``UNRENDERED``) lacks the others."""
    rows = split_rows(data_dir, split, LABELLED_SPLITS)
    chosen = [rows[int(i)] for i in select_clips(len(rows), fraction=fraction, seed=seed, max_clips=max_clips)]
    missing = [row["path"] for _, row in chosen if not clip_exists(data_dir, row)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        hint = (f" ({data_dir / UNRENDERED} lists the clips not rendered yet)" if (data_dir / UNRENDERED).is_file()
                else "")
        raise FileNotFoundError(
            f"{len(missing)} clip(s) of split {split!r} chosen at train.fraction={fraction:g} have no video or frames in "
            f"{data_dir} ({shown}){hint}; render them with `raymotion synth --set synth.out_dir={data_dir}` (skips "
            "the clips already there), or choose a fraction whose clips are there")
    return chosen


def augmented_store_size(crop_size: int) -> int:
    """Side (pixels) of the source crop kept per frame for augmentation: the final crop scaled up to
    1 + SCALE_JITTER and turned by any angle fits inside it (the circumscribed circle of that square),
    at the final crop's pixel density and with the same centre."""
    return math.ceil(crop_size * (1.0 + SCALE_JITTER) * math.sqrt(2.0))


LABELLED_ITEM_LABELS = ("joints2d", "joints2d_visible", "joints2d_conf", "joints3d_cam", "joints3d_conf", "eval_joints3d_cam", "pose_cam",
                        "betas", "has_smpl", "has_joints3d")
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
            joints2d_conf, joints3d_conf (24,) weight of each 2D / 3D joint in [0, 1]; has_smpl, has_joints3d () bool; joints3d_cam (24, 3) and eval_joints3d_cam (14, 3) metres, camera frame; pose_cam (24, 3)
            axis-angle; betas (10,). Other keys are ignored.
        crop_size: S, crop pixels.
        augmentation: see ``LabelledFrames``; None for none.

    Returns:
        image (3, S, S) float32 ImageNet-normalised RGB; joints2d (24, 2) normalised crop coordinates;
        joints2d_vis (24,) the joint's confidence (joints2d_conf) where visible and inside the crop, else 0;
        joints3d (24, 3); joints3d_conf (24,) weight of each 3D joint; eval_joints3d (14, 3); pose_cam (24, 3);
        betas (10,); has_smpl and has_joints3d ()
        1.0 or 0.0 (the losses mask what a frame lacks). All float32.
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
    conf_J = np.asarray(labels["joints2d_conf"], dtype=np.float32)
    conf3d_J = np.asarray(labels["joints3d_conf"], dtype=np.float32)
    joints3d_J3 = rotate_points3d(labels["joints3d_cam"], aug.rotation_deg)
    eval_joints3d_E3 = rotate_points3d(labels["eval_joints3d_cam"], aug.rotation_deg)
    pose_J3 = rotate_pose(labels["pose_cam"], aug.rotation_deg)
    if aug.flip:
        # The crop is mirrored, so the joint at a left joint's pixel is now a right joint.
        joints2d_J2 = joints2d_J2[list(SMPL_FLIP_PERM)]
        visible_J = visible_J[list(SMPL_FLIP_PERM)]
        conf_J = conf_J[list(SMPL_FLIP_PERM)]
        conf3d_J = conf3d_J[list(SMPL_FLIP_PERM)]
        joints3d_J3 = flip_points3d(joints3d_J3, SMPL_FLIP_PERM)
        eval_joints3d_E3 = flip_points3d(eval_joints3d_E3, EVAL_FLIP_PERM)
        pose_J3 = flip_pose(pose_J3, SMPL_FLIP_PERM)
    visible_J &= (np.abs(joints2d_J2) <= 1.0).all(axis=1)
    gain_3 = None if aug.gain_3 == (1.0, 1.0, 1.0) else np.asarray(aug.gain_3)
    return {
        "image": normalise_image(crop_HW3, gain_3=gain_3).numpy(),
        "joints2d": np.asarray(joints2d_J2, dtype=np.float32),
        "joints2d_vis": np.where(visible_J, conf_J, 0.0).astype(np.float32),
        "joints3d": np.asarray(joints3d_J3, dtype=np.float32),
        "joints3d_conf": conf3d_J,
        "eval_joints3d": np.asarray(eval_joints3d_E3, dtype=np.float32),
        "pose_cam": np.asarray(pose_J3, dtype=np.float32),
        "betas": np.array(labels["betas"], dtype=np.float32),
        "has_smpl": np.array(labels["has_smpl"], dtype=np.float32),
        "has_joints3d": np.array(labels["has_joints3d"], dtype=np.float32),
    }


class LabelledFrames(Dataset):
    """Every frame of a seeded fraction of the labelled clips, cropped around its own box.

    ``shard=(rank, world)`` keeps only the frames n = rank (mod world) of that list (a Ray Train worker's
    share; clips with none of them are not even decoded), so each worker holds 1/world of the crops; with
    (0, 1) every frame. Item i of shard r is frame r + i * world of the unsharded dataset.

    ``__getitem__`` returns a dict of tensors:
        image (3, S, S) float32, ImageNet-normalised RGB;
        joints2d (24, 2) normalised crop coordinates; joints2d_vis (24,) the joint's confidence
            (label joints2d_conf; 1.0 by default) where the label says visible AND the joint falls inside the
            crop [-1, 1]^2, else 0.0;
        joints3d (24, 3) and eval_joints3d (14, 3) metres, camera frame (labels joints3d_cam and
            eval_joints3d_cam); pose_cam (24, 3) axis-angle, root orientation in the camera frame;
        betas (10,); has_smpl, has_joints3d 1.0 or 0.0 (partial labels; the losses mask what is absent);
        clip_index (row of the clip in manifest.parquet); frame.

    With ``augment=True`` every item draws a ``crops.Augmentation`` (ranges in raymotion.data.crops:
    scale x[0.75, 1.25], rotation U(-30, 30) deg with probability 0.6, flip with probability 0.5,
    per-channel gain U(0.6, 1.4)) from torch's RNG, and the labels follow: 2D joints through the same
    affine map as the pixels; 3D joints and the root orientation rotate about the camera z axis;
    a flip mirrors x, swaps left/right joints and mirrors the pose (SPIN's flip_pose). To allow
    this the dataset keeps a larger uint8 source crop per frame (side ceil(S * 1.25 * sqrt 2), at
    the final crop's pixel density, so every scale and rotation stays inside it), about 3x the memory
    of plain crops, and each item is resampled from it (two bilinear resamplings in all).

    Clips are videos or image sequences (``manifest.clip_frame_paths``), decoded with ``decoder``
    (``data.decoder``; see ``labels.read_decoded``); frames of an image sequence may differ in size.

    Bad input: a missing or truncated video, frames of another size than the manifest row's, a labels file
    without a needed column, a missing or undecodable frame file, or a frame whose labels hold NaN/inf or whose
    box is empty raise naming the file (and frame and column) with ``bad_input='fail'`` (``data.bad_input``);
    with 'skip' such frames (not videos) are left out, counted in ``skipped`` (one message each) and logged in
    one warning.
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
        decoder: str = AUTO_DECODER,
    ) -> None:
        check_values({"data.crop_size": crop_size, "data.bbox_scale": bbox_scale, "data.decoder": decoder})
        check_bad_input(bad_input)
        rank, num_shards = shard
        if not 0 <= rank < num_shards:
            raise ValueError(f"shard={shard}: the rank must be in [0, {num_shards}) (a worker's (rank, world size))")
        data_dir = Path(data_dir)
        chosen = selected_clip_rows(data_dir, split, fraction=fraction, seed=seed, max_clips=max_clips)
        self.crop_size = crop_size
        self.augment = augment
        # Stored crop side: the final crop, or the source crop that holds every augmented crop.
        self._store_size = augmented_store_size(crop_size) if augment else crop_size
        self.clip_ids = [row["clip_id"] for _, row in chosen]
        self.skipped: list[str] = []  # one message per frame left out as bad input (bad_input='skip')

        columns = list(LABEL_SHAPES)
        crops, labels, clip_index, frame_index = [], [], [], []
        first = 0  # index of the clip's first frame among all frames of the chosen clips
        for manifest_index, row in chosen:
            # This shard's frames of the clip: global frame indices n = rank (mod num_shards).
            kept_T = np.arange((rank - first) % num_shards, row["frames"], num_shards)
            first += row["frames"]
            if len(kept_T) == 0:
                continue  # nothing of this clip in the shard: not even decoded
            frames_THW3, bad_frames = read_decoded(data_dir, row, decoder=decoder, bad_input=bad_input)
            clip_labels, bad = read_labels(data_dir, row, columns, bad_input=bad_input,
                                           frame_hw_T2=frame_sizes(frames_THW3))
            bad.update(bad_frames)  # a frame that did not decode: its own message
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

    def frame_labels(self, names: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
        """Label columns (docs/data_format.md) of every item, (N, ...) in item order, without reading the items
        (evaluation protocols read campose_valid, joints2d_conf, gender)."""
        return {name: self._labels[name].copy() for name in names}

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

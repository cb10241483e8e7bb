"""Frame pairs of unannotated video in memory, with optical flow between their crops (docs/data_format.md):
no Ray.

``VideoPairs`` feeds the unannotated frame pairs of flow-consistency refinement: it decodes every clip once
at construction, keeps uint8 crops (flows as float16) in memory and returns torch tensors. The Ray Data
pipeline (``raymotion.data.pipeline``) streams the same rows with the same crops and flow estimators.

Tensor naming legend: P = pairs, T = frames of one clip, S = crop side (pixels), H, W = image height and
width; trailing digits are literal sizes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from raymotion.config import FlowConfig, check_values
from raymotion.data.crops import crop_box, crop_flow, crop_image, normalise_image
from raymotion.data.decode import AUTO_DECODER
from raymotion.data.labels import LABEL_SHAPES, frame_sizes, read_decoded, read_labels, split_rows
from raymotion.data.manifest import (check_bad_input, check_clip_lengths, check_frames_per_item, clip_frame_paths,
                                     warn_skipped)
from raymotion.flow.estimator import make_flow_estimator
from raymotion.geometry.crop_maps import crop_matrix, to_normalised, transform_points

GROUND_TRUTH_FLOW = "ground_truth"
"""``VideoPairs(flow=...)`` value for the renderer's exact flow (flow.npz)."""


def crop_clip(frames_THW3: np.ndarray, box_T4: np.ndarray, *, crop_size: int, bbox_scale: float,
              blank: Collection[int] = ()) -> tuple[list[np.ndarray], np.ndarray]:
    """Every frame of a clip cropped around its own box (``crops.crop_box``, ``crops.crop_image``).

    Args:
        frames_THW3: (T, H, W, 3) uint8 RGB frames, or T frames (H_t, W_t, 3) of their own sizes (None where
            blank). box_T4: (T, 4) boxes (x0, y0, x1, y1), image pixels.
        blank: frames that get an all-zero crop instead (bad frames under ``bad_input='skip'``: their box
            may be NaN, their image missing; no kept pair uses them).

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


def flow_cache_path(data_dir: Path, row: dict, name: str) -> Path:
    """Where ``VideoPairs`` caches a clip's estimated flow: beside a video; for an image sequence (whose frames
    may sit outside ``data_dir``, several clips in one folder) in ``<data_dir>/<split>/<clip_id>/``."""
    if clip_frame_paths(data_dir, row) is None:
        return (data_dir / row["path"]).with_name(name)
    folder = data_dir / row["split"] / row["clip_id"]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


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
        decoder: str = AUTO_DECODER,
    ) -> None:
        check_values({"data.crop_size": crop_size, "data.bbox_scale": bbox_scale, "data.decoder": decoder})
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
        rows = split_rows(data_dir, split, None)[:max_clips]
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
        columns = list(LABEL_SHAPES) if with_labels else ["box_xyxy"]

        crops, crop_params, labels, first, clip_index, t_index = [], [], [], [], [], []
        flows_fwd, flows_bwd, valid_fwd, valid_bwd = [], [], [], []
        for manifest_index, row in rows:
            frames_THW3, bad_frames = read_decoded(data_dir, row, decoder=decoder, bad_input=bad_input)
            clip_labels, bad = read_labels(data_dir, row, columns, bad_input=bad_input,
                                           frame_hw_T2=frame_sizes(frames_THW3))
            bad.update(bad_frames)  # a frame that did not decode: its own message
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
                cache = flow_cache_path(data_dir, row, f"flow_{estimator.tag}_{crop_size}px_x{bbox_scale:g}_gap{gap}.npz")
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

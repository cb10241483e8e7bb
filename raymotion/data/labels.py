"""A clip's frames and its label columns, read and checked (docs/data_format.md); no Ray.

The single-process datasets (``raymotion.data.frames.LabelledFrames``,
``raymotion.data.video_pairs.VideoPairs``), the labelled Ray Data pipeline and the mean-parameter fit read
clips through these functions, so a bad file, frame or value is named the same way everywhere
(docs/bad_input.md).

Legend: N = frames, T = frames of one clip, J = joints, H, W = image height and width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raymotion.body.joints import NUM_EVAL_JOINTS, NUM_SMPL_JOINTS
from raymotion.data.crops import box_problems, crop_box
from raymotion.data.decode import AUTO_DECODER, backend_for, read_image_window, read_video
from raymotion.data.manifest import check_frame_size, clip_frame_paths, read_columns, read_manifest


def read_decoded(data_dir: Path, row: dict, *, decoder: str = AUTO_DECODER,
                 bad_input: str = "fail") -> tuple[list[np.ndarray | None] | np.ndarray, dict[int, str]]:
    """Every frame of a clip, a video or an image sequence (``manifest.clip_frame_paths``), checked against the
    manifest row's frame count and size (a row of width = height = 0: sizes vary, nothing to check).

    ``decoder``: ``data.decoder``; 'auto' decodes with the CPU decoders here (PyAV, OpenCV: the in-process
    datasets' results were measured with PyAV's pixels, and DALI's VP9 colours differ from them by up to 15
    levels); the others as ``decode.backend_for`` (without a GPU share, 'dali_mixed' uses CUDA device 0).
    ``bad_input``: for image sequences, a missing or undecodable frame raises naming the file ('fail') or is
    None in the frames and listed in ``bad`` ('skip'); a video is whole or raises.

    Returns:
        frames: (T, H, W, 3) uint8 RGB for a video; for an image sequence T arrays (H_t, W_t, 3) or None.
        bad: {frame: message} of the frames left out (image sequences under 'skip').
    """
    paths = clip_frame_paths(data_dir, row)
    backend = backend_for("cpu" if decoder == AUTO_DECODER else decoder, images=paths is not None, codec=None,
                          cuda_available=False)  # unused: the decoder is never 'auto' here
    if paths is None:
        path = data_dir / row["path"]
        frames_THW3 = read_video(path, expected_frames=row["frames"], backend=backend)
        check_frame_size(row, height=frames_THW3.shape[1], width=frames_THW3.shape[2], path=path)
        return frames_THW3, {}
    frames, _, bad = read_image_window(paths, first_frame=0, num_frames=len(paths), backend=backend,
                                       bad_input=bad_input)
    for frame_HW3, path in zip(frames, paths):
        if frame_HW3 is not None:
            check_frame_size(row, height=frame_HW3.shape[0], width=frame_HW3.shape[1], path=path)
    return frames, bad


def frame_sizes(frames: list[np.ndarray | None] | np.ndarray) -> np.ndarray:
    """(T, 2) (height, width) of each decoded frame; inf for a frame left out (None: any box fits)."""
    return np.array([(np.inf, np.inf) if f is None else f.shape[:2] for f in frames], dtype=np.float64).reshape(-1, 2)


# Per-frame label columns (docs/data_format.md) and their per-frame shapes.
LABEL_SHAPES: dict[str, tuple[int, ...]] = {
    "box_xyxy": (4,),
    "pose_cam": (NUM_SMPL_JOINTS, 3),
    "betas": (-1,),
    "transl_cam": (3,),
    "intrinsics": (4,),
    "joints2d": (NUM_SMPL_JOINTS, 2),
    "joints2d_visible": (NUM_SMPL_JOINTS,),
    "joints3d_cam": (NUM_SMPL_JOINTS, 3),
    "eval_joints3d_cam": (NUM_EVAL_JOINTS, 3),
    "joints2d_conf": (NUM_SMPL_JOINTS,),
    "joints3d_conf": (NUM_SMPL_JOINTS,),
    "has_smpl": (),
    "has_joints3d": (),
    "campose_valid": (),
    "gender": (),
}

GENDERS = ("neutral", "male", "female")
"""The values of the ``gender`` label column."""

# Partial labels (docs/data_format.md): columns a real dataset may lack. A labels file without one loads
# with the value that means what older files meant (every label present, neutral body, weight = visibility);
# the losses mask what a frame lacks (SPIN: has_smpl masks pose/betas, confidence weights keypoints).
OPTIONAL_LABELS: tuple[str, ...] = ("joints2d_conf", "joints3d_conf", "has_smpl", "has_joints3d", "campose_valid", "gender")
"""Label columns a labels.parquet may omit; ``read_labels`` fills them with ``default_label``."""


def default_label(name: str, labels: dict[str, np.ndarray], num_frames: int) -> np.ndarray:
    """The value of an optional label column (``OPTIONAL_LABELS``) that a labels file omits, for its
    ``num_frames`` rows: has_smpl, has_joints3d, campose_valid True; gender 'neutral'; joints3d_conf 1;
    joints2d_conf the visibility as 0/1 (``labels['joints2d_visible']``, or 1 when that was not read either)."""
    if name in ("has_smpl", "has_joints3d", "campose_valid"):
        return np.ones(num_frames, dtype=bool)
    if name == "gender":
        return np.full(num_frames, "neutral", dtype=object)
    if name == "joints3d_conf":
        return np.ones((num_frames, NUM_SMPL_JOINTS), dtype=np.float32)
    if name == "joints2d_conf":
        if "joints2d_visible" in labels:
            return labels["joints2d_visible"].astype(np.float32)
        return np.ones((num_frames, NUM_SMPL_JOINTS), dtype=np.float32)
    raise ValueError(f"{name!r} is not an optional label column; those are {', '.join(OPTIONAL_LABELS)}")


def split_rows(data_dir: Path, split: str, choices: tuple[str, ...] | None) -> list[tuple[int, dict]]:
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


def label_problems(labels: dict[str, np.ndarray], *, width: float | np.ndarray,
                   height: float | np.ndarray) -> dict[int, str]:
    """Frame -> what is wrong with its labels (the first problem): a value that is not finite (NaN or inf),
    naming the column, or a box with nothing to crop (``crops.box_problems``; the frame size: one for the clip,
    or (T,) per frame). Frames without one are absent."""
    problems: dict[int, str] = {}
    for name, values_T in labels.items():
        if name == "gender":
            found = {int(t): f"gender is {values_T[t]!r}, not one of {', '.join(GENDERS)}"
                     for t in np.flatnonzero(~np.isin(values_T, GENDERS))}
            for t, problem in found.items():
                problems.setdefault(t, problem)
            continue
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


def read_labels(data_dir: Path, row: dict, columns: list[str], *, bad_input: str,
                frame_hw_T2: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """The named label columns of one clip, as (T, ...) arrays, and its bad frames (``label_problems``).

    A column of ``OPTIONAL_LABELS`` that the file lacks gets ``default_label`` (files written before partial
    labels load unchanged). Checks the other columns exist, the row count, and every frame's values: with
    ``bad_input='fail'`` a bad frame raises naming the file, the frame and the column; with 'skip' the bad
    frames are returned as
    {frame: message} for the caller to leave out (and count). Boxes are checked against ``frame_hw_T2``, the
    decoded frames' (height, width) (``frame_sizes``), else the row's size; a row of size 0 (sizes vary) without
    decoded sizes checks only that each box is finite and not empty.
    """
    if not row["labels_path"]:
        raise ValueError(f"clip {row['clip_id']} has no labels_path in the manifest; its boxes are needed to crop")
    path = data_dir / row["labels_path"]
    if not path.is_file():
        raise FileNotFoundError(f"labels of clip {row['clip_id']} not found: {path}")
    present = set(pq.read_schema(path).names)
    stored = [name for name in columns if name in present or name not in OPTIONAL_LABELS]
    table = read_columns(path, stored, what="label columns read here")
    if table.num_rows != row["frames"]:
        raise ValueError(f"{path} has {table.num_rows} rows but the manifest says {row['frames']} frames")
    labels = {}
    for name in stored:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):
            column = column.flatten()
        flat = column.to_numpy(zero_copy_only=False)
        labels[name] = flat.reshape(table.num_rows, *LABEL_SHAPES[name])
    for name in columns:
        if name not in labels:
            labels[name] = default_label(name, labels, table.num_rows)
    labels = {name: labels[name] for name in columns}
    if frame_hw_T2 is not None:
        height, width = frame_hw_T2[:, 0], frame_hw_T2[:, 1]
    else:
        height, width = (int(row["height"]) or np.inf), (int(row["width"]) or np.inf)
    problems = label_problems(labels, width=width, height=height)
    if problems and bad_input == "fail":
        frame, problem = next(iter(problems.items()))
        others = f" ({len(problems) - 1} more bad frame(s) in this file)" if len(problems) > 1 else ""
        raise ValueError(f"{path} frame {frame}: {problem}{others}; fix the labels, or set data.bad_input=skip to "
                         "leave such frames out (counted)")
    return labels, {frame: f"skipped {path} frame {frame}: {problem}" for frame, problem in problems.items()}


def mean_param_targets(data_root: str | Path, *, bbox_scale: float, split: str = "labelled") -> dict[str, torch.Tensor]:
    """The labels ``raymotion.models.mean_params.fit_mean_params`` averages, of every frame of a split that has
    SMPL labels (``has_smpl``): pose_N243 (axis-angle, camera frame), betas_NK, joints2d_NJ2 in normalised crop
    coordinates of each frame's crop (``crops.crop_box`` with ``bbox_scale``) and joints2d_weight_NJ (the 2D
    joints' ``joints2d_conf``, which weighs the camera fit; 1 for files without that column), float32 tensors.

    Every label is checked as it is read (columns, row counts, finite values): one NaN would make every
    mean NaN, so a bad frame raises naming the file, the frame and the column.
    """
    data_root = Path(data_root)
    rows = [r for r in read_manifest(data_root).to_pylist() if r["split"] == split]
    if not rows:
        raise ValueError(f"{data_root / 'manifest.parquet'} has no '{split}' clips to average")
    columns = ["pose_cam", "betas", "joints2d", "box_xyxy", "joints2d_conf", "has_smpl"]
    tables = []
    for row in rows:
        table = read_labels(data_root, row, columns, bad_input="fail")[0]
        if "joints2d_conf" not in pq.read_schema(data_root / row["labels_path"]).names:
            # No confidence column (the synthetic benchmark): every 2D joint is an exact projection, occluded or
            # not, and the fit has always used them all.
            table["joints2d_conf"] = np.ones_like(table["joints2d_conf"])
        tables.append(table)
    labels = {name: np.concatenate([t[name] for t in tables]) for name in columns}
    keep_N = labels["has_smpl"] & ((labels["joints2d_conf"] > 0).sum(axis=1) >= 2)
    if not keep_N.any():
        raise ValueError(f"no '{split}' frame of {data_root} has SMPL labels (has_smpl) and two labelled 2D joints "
                         "to fit the mean parameters to; import a set with SMPL fits (e.g. EFT's), or pass "
                         "model.mean_params a file computed elsewhere")
    labels = {name: values[keep_N] for name, values in labels.items()}
    joints2d_NJ2 = torch.tensor(labels["joints2d"], dtype=torch.float32)
    centre_N2, side_N = crop_box(labels["box_xyxy"], scale=bbox_scale)
    centre_N2 = torch.as_tensor(centre_N2, dtype=torch.float32)
    side_N = torch.as_tensor(side_N, dtype=torch.float32)
    return {
        "pose_N243": torch.tensor(labels["pose_cam"], dtype=torch.float32),
        "betas_NK": torch.tensor(labels["betas"], dtype=torch.float32),
        "joints2d_NJ2": 2.0 * (joints2d_NJ2 - centre_N2[:, None]) / side_N[:, None, None],
        "joints2d_weight_NJ": torch.tensor(labels["joints2d_conf"], dtype=torch.float32),
    }

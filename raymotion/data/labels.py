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
}


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

    Checks the columns exist, the row count, and every frame's values: with ``bad_input='fail'`` a bad
    frame raises naming the file, the frame and the column; with 'skip' the bad frames are returned as
    {frame: message} for the caller to leave out (and count). Boxes are checked against ``frame_hw_T2``, the
    decoded frames' (height, width) (``frame_sizes``), else the row's size; a row of size 0 (sizes vary) without
    decoded sizes checks only that each box is finite and not empty.
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
        labels[name] = flat.reshape(table.num_rows, *LABEL_SHAPES[name])
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

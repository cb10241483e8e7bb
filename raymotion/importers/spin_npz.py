"""SPIN / EFT preprocessed npz files (nkolot/SPIN ``datasets/preprocess``; /work/shared/FORMATS.md) -> raymotion.

Keys read: imgname, center, scale (required); part (N, 24, 3), S (N, 24, 4), pose (N, 72), shape (N, 10),
has_smpl (N,), gender (N,) where the file has them. What each becomes (docs/data_format.md):
- box_xyxy: the square of side 200 * scale / ``scale_factor`` around center (``common.spin_box_to_xyxy``).
- joints2d / joints2d_visible / joints2d_conf: ``part`` onto the SMPL joints by name (``SMPL_FROM_SPIN_GT``),
  + 0.5 px (SPIN's pixel centres are at integers); joints without a namesake get confidence 0.
- eval_joints2d, eval_joints3d_cam: the first 14 of ``part`` / ``S`` (SPIN's J24_TO_J14); joints3d_cam and
  joints3d_conf: ``S`` onto the SMPL joints by name, its 4th column the confidence; has_joints3d where S is.
- pose_cam (the file's pose: root orientation already in the camera frame), betas, has_smpl (the file's, or
  ones where pose exists and has_smpl does not, as SPIN's loader does), gender ('m' -> male, 'f' -> female).
The images stay where they are (``image_root`` / imgname); they are unrelated frames, grouped into clips of
``clip_frames`` images in file order (an image-sequence clip; width/height 0 where their sizes differ).
An image that is missing or unreadable, or whose box lies outside it, is left out and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from raymotion.body.joints import EVAL_FROM_SPIN_GT, NUM_SMPL_JOINTS, SMPL_FROM_SPIN_GT
from raymotion.importers.common import PIXEL_CENTRE_SHIFT, check_rows, map_joints, require, spin_box_to_xyxy
from raymotion.importers.writer import ImportSummary, import_image_set

NUM_SPIN_GT_JOINTS = 24
GENDER_CODES = {"m": "male", "male": "male", "f": "female", "female": "female", "n": "neutral", "neutral": "neutral"}
"""The gender strings SPIN-style files hold, and what they mean."""
FIX = ("re-create the file with SPIN's preprocessing (datasets/preprocess/*.py), or give the npz the importer "
       "expects (docs/importing.md)")


def read_spin_npz(path: Path) -> dict[str, np.ndarray]:
    """The keys of a SPIN npz this importer reads, checked for presence, shape and a common row count."""
    if not path.is_file():
        raise FileNotFoundError(f"SPIN npz not found: {path}")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable npz ({err}); {FIX}") from None
    arrays = {"imgname": require(data, "imgname", path=path, shape=(None,), fix=FIX),
              "center": require(data, "center", path=path, shape=(None, 2), fix=FIX),
              "scale": require(data, "scale", path=path, shape=(None,), fix=FIX)}
    optional = {"part": (None, NUM_SPIN_GT_JOINTS, 3), "S": (None, NUM_SPIN_GT_JOINTS, 4),
                "pose": (None, NUM_SMPL_JOINTS * 3), "shape": (None, 10), "has_smpl": (None,), "gender": (None,)}
    for key, shape in optional.items():
        if key in data:
            arrays[key] = require(data, key, path=path, shape=shape, fix=FIX)
    check_rows(arrays, path=path)
    if "gender" in arrays:
        unknown = sorted({str(g) for g in arrays["gender"]} - set(GENDER_CODES))
        if unknown:
            raise ValueError(f"{path}: key 'gender' holds {unknown}; expected one of {sorted(GENDER_CODES)}")
    return arrays


def spin_labels(arrays: dict[str, np.ndarray], rows: np.ndarray, *, scale_factor: float) -> dict[str, np.ndarray]:
    """The raymotion label columns (docs/data_format.md) of the file's ``rows``, by the module doc's rules."""
    labels = {"box_xyxy": spin_box_to_xyxy(arrays["center"][rows], arrays["scale"][rows], scale_factor=scale_factor)}
    if "part" in arrays:
        part_NS3 = arrays["part"][rows].astype(np.float64)
        mapped_NJ3, _ = map_joints(part_NS3, SMPL_FROM_SPIN_GT)
        labels["joints2d"] = mapped_NJ3[..., :2] + PIXEL_CENTRE_SHIFT
        labels["joints2d_visible"] = mapped_NJ3[..., 2] > 0
        labels["joints2d_conf"] = mapped_NJ3[..., 2]
        labels["eval_joints2d"] = part_NS3[:, list(EVAL_FROM_SPIN_GT), :2] + PIXEL_CENTRE_SHIFT
    if "S" in arrays:
        s_NS4 = arrays["S"][rows].astype(np.float64)
        mapped_NJ4, _ = map_joints(s_NS4, SMPL_FROM_SPIN_GT)
        labels["joints3d_cam"] = mapped_NJ4[..., :3]
        labels["joints3d_conf"] = mapped_NJ4[..., 3]
        labels["eval_joints3d_cam"] = s_NS4[:, list(EVAL_FROM_SPIN_GT), :3]
    if "pose" in arrays:
        labels["pose_cam"] = arrays["pose"][rows]
        labels["has_smpl"] = (arrays["has_smpl"][rows] > 0) if "has_smpl" in arrays else np.ones(len(rows), bool)
        if "shape" in arrays:
            labels["betas"] = arrays["shape"][rows]
    if "gender" in arrays:
        labels["gender"] = np.array([GENDER_CODES[str(g)] for g in arrays["gender"][rows]])
    return labels


def import_spin_npz(npz_path: str | Path, *, image_root: str | Path, out_dir: str | Path, split: str = "labelled",
                    scale_factor: float = 1.2, clip_frames: int = 100, copy_frames: bool = False,
                    progress: bool = True) -> ImportSummary:
    """Import one SPIN/EFT npz (module doc) into ``out_dir``'s ``split``; returns what was kept and dropped.

    ``scale_factor``: how the file's scale was made from the person box (1.2: 3DPW, COCO, MPI-INF-3DHP, EFT;
    0.9: Human3.6M). ``clip_frames``: images per clip.
    """
    npz_path, image_root = Path(npz_path), Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"image root {image_root} is not a folder; give the folder the npz's imgname paths "
                                "are relative to (e.g. the 3DPW or COCO root)")
    arrays = read_spin_npz(npz_path)
    return import_image_set(
        source=npz_path, images=[image_root / str(name) for name in arrays["imgname"]],
        boxes_N4=spin_box_to_xyxy(arrays["center"], arrays["scale"], scale_factor=scale_factor),
        labels_of=lambda rows: spin_labels(arrays, rows, scale_factor=scale_factor), out_dir=out_dir, split=split,
        clip_frames=clip_frames, copy_frames=copy_frames, progress=progress)

"""MMHuman3D HumanData files (``docs/human_data.md``, ``mmhuman3d/data/data_structures/human_data.py``;
/work/shared/FORMATS.md) -> raymotion clips of unrelated images.

A HumanData file is an ``np.savez_compressed`` npz whose dict-valued entries (smpl, meta) are 0-d object arrays:
pickles inside the zip. They are read through the restricted unpickler of ``raymotion.data.boxes`` (numpy arrays
and plain containers only), never with ``allow_pickle=True``; plain arrays are read without pickle.

Keys read: image_path (N,), bbox_xywh (N, 4 or 5: x_min, y_min, w, h[, conf]) (required); keypoints2d (N, K, 3)
with keypoints2d_mask (K,) and keypoints2d_convention; keypoints3d (N, K, 4) with keypoints3d_mask and
keypoints3d_convention; smpl {global_orient (N, 3), body_pose (N, 23, 3), betas (N, 10), transl (N, 3)}; meta
{gender} where present. Annotations are in OpenCV camera space (FORMATS.md), so smpl's pose is ``pose_cam`` and
its transl ``transl_cam`` (for the SMPL body it was fitted with). Keypoint conventions read (joints onto the SMPL
joints by name, the rest confidence 0): 'smpl' and 'smpl_45' (their first 24 are SMPL's), 'smpl_49' (OpenPose's
25, then SPIN's 24 GT joints: the evaluation joints too) and 'human_data' (190: its first 22 are SMPL's first 22,
its last two SMPL's hands). Pixels as SPIN's: + 0.5 on the way in. Images and boxes are checked as spin-npz's
(``writer.import_image_set``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from raymotion.body.joints import EVAL_FROM_SPIN_GT, NUM_BODY_JOINTS, NUM_SMPL_JOINTS, SMPL_FROM_SPIN_GT, SMPL_JOINT
from raymotion.data.boxes import unpickle_restricted
from raymotion.importers.common import PIXEL_CENTRE_SHIFT, check_rows, map_joints, require
from raymotion.importers.writer import ImportSummary, import_image_set

FIX = "re-create it with MMHuman3D's converters (tools/convert_datasets.py), or give a HumanData npz (docs/importing.md)"
NUM_OPENPOSE_JOINTS = 25
HUMAN_DATA_SIZE = 190
GENDER_CODES = {"m": "male", "male": "male", "f": "female", "female": "female", "n": "neutral", "neutral": "neutral"}


def _human_data_to_smpl() -> tuple[int, ...]:
    """SMPL joint -> its index among the 190 'human_data' keypoints: SMPL's first 22 joints lead that list in
    SMPL's order, and SMPL's hands ('left_hand', 'right_hand') end it (mmhuman3d keypoints_mapping/human_data.py)."""
    index = list(range(NUM_BODY_JOINTS - 1))  # pelvis .. right_wrist (22 joints)
    index += [HUMAN_DATA_SIZE - 2, HUMAN_DATA_SIZE - 1]  # left_hand, right_hand
    assert len(index) == NUM_SMPL_JOINTS and SMPL_JOINT["right_wrist"] == NUM_BODY_JOINTS - 2
    return tuple(index)


SMPL_FROM_CONVENTION: dict[str, tuple[int, ...]] = {
    "smpl": tuple(range(NUM_SMPL_JOINTS)),
    "smpl_45": tuple(range(NUM_SMPL_JOINTS)),
    "smpl_49": tuple(-1 if i < 0 else NUM_OPENPOSE_JOINTS + i for i in SMPL_FROM_SPIN_GT),
    "human_data": _human_data_to_smpl(),
}
"""Keypoint convention -> the SMPL joints' indices in it (-1: none)."""
CONVENTION_SIZES = {"smpl": NUM_SMPL_JOINTS, "smpl_45": 45, "smpl_49": 49, "human_data": HUMAN_DATA_SIZE}


def _read_header(handle: Any) -> np.dtype:
    """The dtype of a .npy stream, leaving ``handle`` at the start of its data (numpy's public header readers)."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(handle)[2]


def read_human_data(path: Path) -> dict[str, Any]:
    """Every entry of a HumanData npz: plain arrays without pickle, object arrays (dicts, lists of strings)
    through the restricted unpickler; 0-d object arrays unwrapped to their object."""
    if not path.is_file():
        raise FileNotFoundError(f"HumanData npz not found: {path}")
    entries: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as handle:
                    if not _read_header(handle).hasobject:
                        value = None
                    else:  # numpy writes an object array as one pickle after the header
                        value = unpickle_restricted(handle, path=path, encoding="latin1")
                if value is None:
                    with archive.open(member) as handle:
                        value = np.lib.format.read_array(handle, allow_pickle=False)
                key = member.removesuffix(".npy")
                entries[key] = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable HumanData npz ({type(err).__name__}: {err}); {FIX}") from None
    except ValueError as err:
        raise ValueError(f"{err}; {FIX}") from None
    return entries


def boxes_xyxy(data: dict[str, Any]) -> np.ndarray:
    """(N, 4) the file's bbox_xywh as (x0, y0, x1, y1) in raymotion pixels."""
    box_N4 = np.asarray(data["bbox_xywh"], dtype=np.float64)[:, :4]
    return np.concatenate([box_N4[:, :2], box_N4[:, :2] + box_N4[:, 2:]], axis=1) + PIXEL_CENTRE_SHIFT


def _masked(data: dict[str, Any], key: str, rows: np.ndarray) -> np.ndarray:
    """``data[key][rows]`` with its last column (the confidence) times ``<key>_mask`` (K,) where the file has one."""
    values = np.array(data[key], dtype=np.float64)[rows]
    if f"{key}_mask" in data:
        values[..., -1] *= np.asarray(data[f"{key}_mask"], dtype=np.float64)
    return values


def _convention(data: dict[str, Any], key: str, *, path: Path, size: int) -> tuple[int, ...]:
    name = str(np.asarray(data.get(f"{key}_convention", "human_data")))
    if name not in SMPL_FROM_CONVENTION:
        raise ValueError(f"{path}: {key}_convention is {name!r}, which raymotion does not map; convert the keypoints "
                         f"to one of {', '.join(SMPL_FROM_CONVENTION)} with mmhuman3d's convert_kps first")
    if size != CONVENTION_SIZES[name]:
        raise ValueError(f"{path}: key {key!r} has {size} keypoints, but convention {name!r} has "
                         f"{CONVENTION_SIZES[name]}; {FIX}")
    return SMPL_FROM_CONVENTION[name]


def human_data_labels(data: dict[str, Any], rows: np.ndarray, *, path: Path) -> dict[str, np.ndarray]:
    """The raymotion label columns of the file's ``rows`` (module doc)."""
    labels: dict[str, np.ndarray] = {"box_xyxy": boxes_xyxy(data)[rows]}
    if "keypoints2d" in data:
        keypoints_NK3 = _masked(data, "keypoints2d", rows)
        index = _convention(data, "keypoints2d", path=path, size=keypoints_NK3.shape[1])
        mapped_NJ3, _ = map_joints(keypoints_NK3, index)
        labels["joints2d"] = mapped_NJ3[..., :2] + PIXEL_CENTRE_SHIFT
        labels["joints2d_conf"] = mapped_NJ3[..., 2]
        labels["joints2d_visible"] = mapped_NJ3[..., 2] > 0
    if "keypoints3d" in data:
        keypoints_NK4 = _masked(data, "keypoints3d", rows)
        index = _convention(data, "keypoints3d", path=path, size=keypoints_NK4.shape[1])
        mapped_NJ4, _ = map_joints(keypoints_NK4, index)
        labels["joints3d_cam"] = mapped_NJ4[..., :3]
        labels["joints3d_conf"] = mapped_NJ4[..., 3]
        if str(np.asarray(data.get("keypoints3d_convention"))) == "smpl_49":  # SPIN's GT joints: the 14 eval joints
            labels["eval_joints3d_cam"] = keypoints_NK4[:, NUM_OPENPOSE_JOINTS:][:, list(EVAL_FROM_SPIN_GT), :3]
    smpl = data.get("smpl")
    if isinstance(smpl, dict) and "global_orient" in smpl and "body_pose" in smpl:
        num = len(rows)
        labels["pose_cam"] = np.concatenate([np.asarray(smpl["global_orient"])[rows].reshape(num, 3),
                                             np.asarray(smpl["body_pose"])[rows].reshape(num, -1)], axis=1)
        if "betas" in smpl:
            labels["betas"] = np.asarray(smpl["betas"])[rows, :10]
        if "transl" in smpl:
            labels["transl_cam"] = np.asarray(smpl["transl"])[rows]
    gender = (data.get("meta") or {}).get("gender") if isinstance(data.get("meta"), dict) else None
    if gender is not None:
        values = [gender] * len(data["image_path"]) if isinstance(gender, str) else list(gender)
        labels["gender"] = np.array([GENDER_CODES.get(str(values[n]), "neutral") for n in rows.tolist()])
    return labels


def check_human_data(data: dict[str, Any], *, path: Path) -> None:
    """The keys used, present and of the right shape, with one row per image."""
    arrays = {"image_path": require(data, "image_path", path=path, shape=(None,), fix=FIX),
              "bbox_xywh": require(data, "bbox_xywh", path=path, shape=(None, None), fix=FIX)}
    if arrays["bbox_xywh"].shape[1] not in (4, 5):
        raise ValueError(f"{path}: key 'bbox_xywh' has shape {arrays['bbox_xywh'].shape}, expected (N, 4) or (N, 5); "
                         f"{FIX}")
    if "keypoints2d" in data:
        arrays["keypoints2d"] = require(data, "keypoints2d", path=path, shape=(None, None, 3), fix=FIX)
    if "keypoints3d" in data:
        arrays["keypoints3d"] = require(data, "keypoints3d", path=path, shape=(None, None, 4), fix=FIX)
    smpl = data.get("smpl")
    if isinstance(smpl, dict):
        shapes = {"global_orient": (None, 3), "body_pose": (None, NUM_BODY_JOINTS, 3), "betas": (None, None),
                  "transl": (None, 3)}
        for key, shape in shapes.items():
            if key in smpl:
                arrays[f"smpl.{key}"] = require(smpl, key, path=path, shape=shape, fix=f"(in smpl) {FIX}")
    check_rows(arrays, path=path)


def import_humandata(npz_path: str | Path, *, image_root: str | Path, out_dir: str | Path, split: str = "labelled",
                     clip_frames: int = 100, copy_frames: bool = False, progress: bool = True) -> ImportSummary:
    """Import one HumanData npz (module doc) into ``out_dir``'s ``split``; returns what was kept and dropped."""
    npz_path, image_root = Path(npz_path), Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"image root {image_root} is not a folder; give the folder the file's image_path "
                                "entries are relative to")
    data = read_human_data(npz_path)
    check_human_data(data, path=npz_path)
    return import_image_set(
        source=npz_path, images=[image_root / str(name) for name in data["image_path"]], boxes_N4=boxes_xyxy(data),
        labels_of=lambda rows: human_data_labels(data, rows, path=npz_path), out_dir=out_dir, split=split,
        clip_frames=clip_frames, copy_frames=copy_frames, progress=progress)

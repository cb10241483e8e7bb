"""What several importers need: checked arrays from a dataset file, joint maps, image sizes, SPIN's boxes.

Legend: N = rows of a dataset file, S = the dataset's joints, J = SMPL joints; trailing digits are literal sizes.
Pixels: raymotion's pixel centres are at i + 0.5 (docs/data_format.md); the field's preprocessed files put them at
i (SPIN, 3DPW's detections, MMHuman3D), so ``PIXEL_CENTRE_SHIFT`` is added on the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

PIXEL_CENTRE_SHIFT = 0.5
"""raymotion pixel coordinate = the field's (pixel centres at integers) + 0.5."""
SPIN_BOX_UNIT = 200.0
"""SPIN's ``scale`` is the box side in units of 200 px (utils/imutils.py)."""


def require(data: Mapping[str, Any], key: str, *, path: Path, shape: tuple[int | None, ...] | None = None,
            fix: str) -> np.ndarray:
    """``data[key]`` as an array, checked: a missing key or a wrong shape raises naming the file, the key, what
    was found and ``fix``. ``shape``: expected dims, None for any size (the first is the row count)."""
    if key not in data:
        raise ValueError(f"{path}: key {key!r} is missing (it has {', '.join(sorted(data))}); {fix}")
    values = np.asarray(data[key])
    if shape is not None and (values.ndim != len(shape)
                              or any(s is not None and s != v for s, v in zip(shape, values.shape))):
        expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{path}: key {key!r} has shape {values.shape}, expected {expected}; {fix}")
    return values


def check_rows(arrays: Mapping[str, np.ndarray], *, path: Path) -> int:
    """The common row count of a file's per-row arrays; a mismatch raises naming the keys."""
    counts = {key: len(values) for key, values in arrays.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{path}: the per-image keys disagree on the number of rows: "
                         f"{', '.join(f'{k} {n}' for k, n in counts.items())}; the file is damaged, re-create it")
    return next(iter(counts.values()))


def map_joints(values_NSX: np.ndarray, index_J: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's joints onto another joint set: ``values_NSX[:, index_J]``, zeros where the index is -1.

    Returns:
        values_NJX: (N, J, X) the mapped values.
        present_J: (J,) bool, True where the joint has a namesake.
    """
    index = np.asarray(index_J)
    present_J = index >= 0
    values_NJX = np.zeros((values_NSX.shape[0], len(index), *values_NSX.shape[2:]), dtype=np.float64)
    values_NJX[:, present_J] = values_NSX[:, index[present_J]]
    return values_NJX, present_J


def spin_box_to_xyxy(center_N2: np.ndarray, scale_N: np.ndarray, *, scale_factor: float) -> np.ndarray:
    """SPIN's (center, scale) -> a square person box (x0, y0, x1, y1) in raymotion pixels.

    SPIN's crop is the square of side 200 * scale around center (pixel centres at integers); its files made
    scale as ``scale_factor`` x max(w, h) / 200 (1.2 for 3DPW, COCO, MPI-INF-3DHP; 0.9 for Human3.6M's tight
    mask boxes), so the box returned has side 200 * scale / scale_factor: the person box, which
    ``data.bbox_scale`` enlarges again as for every other dataset.
    """
    center_N2 = np.asarray(center_N2, dtype=np.float64) + PIXEL_CENTRE_SHIFT
    half_N1 = (SPIN_BOX_UNIT * np.asarray(scale_N, dtype=np.float64) / scale_factor / 2.0)[:, None]
    return np.concatenate([center_N2 - half_N1, center_N2 + half_N1], axis=1)


def xyxy_to_spin_box(box_xyxy_N4: np.ndarray, *, scale_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``spin_box_to_xyxy`` for any box: (center (N, 2), scale (N,)) as SPIN's preprocessing
    makes them, scale = scale_factor * max(w, h) / 200 (the box's longer side)."""
    box = np.asarray(box_xyxy_N4, dtype=np.float64)
    center_N2 = (box[:, :2] + box[:, 2:]) / 2.0 - PIXEL_CENTRE_SHIFT
    scale_N = scale_factor * np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) / SPIN_BOX_UNIT
    return center_N2, scale_N


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its header, or None when it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None


def box_outside(box_4: np.ndarray, *, width: int, height: int) -> bool:
    """True when a box (x0, y0, x1, y1) is not finite, empty or wholly outside a width x height image."""
    x0, y0, x1, y1 = box_4
    return (not np.isfinite(box_4).all() or x1 <= x0 or y1 <= y0 or x1 <= 0 or y1 <= 0
            or x0 >= width or y0 >= height)


def clip_size(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """A clip's manifest (width, height): the frames' common size, or (0, 0) where they differ."""
    return sizes[0] if len(set(sizes)) == 1 else (0, 0)

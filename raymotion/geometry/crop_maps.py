"""The affine map of a square crop, in numpy: image pixels <-> crop pixels <-> normalised crop coordinates.

Pure numpy (no torch): the 2D side of a crop augmentation; its 3D side (rotating and mirroring poses about the
camera) is ``raymotion.geometry.pose3d``, and the same map for torch tensors without rotation or flip is
``raymotion.geometry.camera.image_to_crop``. ``raymotion.data.crops`` crops images and flow with it.

Legend: N = points; trailing digits are literal sizes (``points_N2`` is (N, 2), ``matrix_23`` is (2, 3)).

Coordinates (docs/data_format.md, raymotion.geometry.camera):
    Pixels: x is the column, y the row; the origin is the top-left CORNER of the top-left pixel, so
        pixel (i, j) has its centre at (i + 0.5, j + 0.5). Image and crop pixels both use this.
    A crop is the square of side ``side`` image pixels centred at ``center``, rotated by
        ``rotation_deg`` and optionally mirrored, resampled to ``size`` x ``size`` pixels. Its affine
        map (``crop_matrix``) is p_crop = S/2 + (S / side) * F R (p_image - center), with
        R = [[cos, -sin], [sin, cos]] and F = diag(-1, 1) when flipped (mirror about the crop's
        vertical centre line, applied after the rotation, as SPIN crops then flips).
        Without rotation and flip this is exactly ``raymotion.geometry.image_to_crop``.
    Rotation sign: +theta turns the x axis towards the y axis. Because y points down, +theta is a
        CLOCKWISE turn of the displayed picture, and it equals rotating the camera-frame body by
        +theta about the camera z axis (``raymotion.geometry.pose3d.rotation_about_z``), which is what
        ``pose3d.rotate_pose`` and ``pose3d.rotate_points3d`` do: the projected 3D labels then match the
        rotated 2D labels up to a translation (the crop turns about the box centre, the camera about its principal point;
        a crop camera absorbs translations).
    Normalised crop coordinates: n = 2 p / S - 1, -1 at the left/top edge, +1 at the right/bottom.
"""

from __future__ import annotations

import math

import numpy as np


def crop_matrix(
    center_2: np.ndarray | tuple[float, float],
    side: float,
    size: int,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """The affine map from image pixels to crop pixels (see the module docstring).

    Args:
        center_2: (2,) crop centre (x, y), image pixels.
        side: crop side, image pixels (> 0).
        size: S, crop side, crop pixels.
        rotation_deg: rotation, degrees (+ turns x towards y: clockwise as displayed).
        flip: mirror the crop horizontally (after the rotation).

    Returns:
        matrix_23: (2, 3) float64 [L | t] with p_crop = L p_image + t, both pixel-corner convention.
    """
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    linear_22 = (size / side) * np.array([[cos, -sin], [sin, cos]])
    if flip:
        linear_22[0] *= -1.0
    transl_2 = size / 2.0 - linear_22 @ np.asarray(center_2, dtype=np.float64)
    return np.concatenate([linear_22, transl_2[:, None]], axis=1)


def invert_affine(matrix_23: np.ndarray) -> np.ndarray:
    """(2, 3) inverse of an invertible affine map [L | t]: [L^-1 | -L^-1 t]."""
    inv_22 = np.linalg.inv(matrix_23[:, :2])
    return np.concatenate([inv_22, (-inv_22 @ matrix_23[:, 2])[:, None]], axis=1)


def transform_points(points_N2: np.ndarray, matrix_23: np.ndarray) -> np.ndarray:
    """Apply an affine map to points: L p + t.

    Args:
        points_N2: (..., N, 2) points (x, y), pixels of the map's source (e.g. image pixels).
        matrix_23: (2, 3) affine map, e.g. from ``crop_matrix``.

    Returns:
        (..., N, 2) points in the map's target pixels (e.g. crop pixels), float64.
    """
    points = np.asarray(points_N2, dtype=np.float64)
    return points @ matrix_23[:, :2].T + matrix_23[:, 2]


def to_normalised(points_crop_N2: np.ndarray, *, size: int) -> np.ndarray:
    """Crop pixels -> normalised crop coordinates: n = 2 p / S - 1 (-1 and +1 at the crop edges)."""
    return 2.0 * np.asarray(points_crop_N2) / size - 1.0


def from_normalised(points_norm_N2: np.ndarray, *, size: int) -> np.ndarray:
    """Normalised crop coordinates -> crop pixels: p = (n + 1) S / 2."""
    return (np.asarray(points_norm_N2) + 1.0) * size / 2.0

"""3D pose geometry of a crop augmentation: mirror or rotate camera-frame poses and joints about the camera.

Pure numpy (the root rotation through ``raymotion.geometry.rotations``). The 2D side (the crop's affine map)
is ``raymotion.geometry.crop_maps``; its module docstring states the shared conventions: +theta turns the x axis
towards the y axis (clockwise as displayed, y pointing down), and a flip mirrors x after the rotation.

Legend: J = joints (24 SMPL joints for poses); trailing digits are literal sizes (``pose_J3`` is (J, 3)).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from raymotion.geometry.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle

# Mirroring x (M = diag(-1, 1, 1)) conjugates each rotation: M R(v) M = R(det(M) M v) = R((x, -y, -z)).
_MIRROR_AXIS_ANGLE_3 = np.array([1.0, -1.0, -1.0], dtype=np.float32)


def flip_pose(pose_J3: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """Mirror an SMPL axis-angle pose about the camera's y-z plane (SPIN's flip_pose).

    Swaps left and right joint rotations and negates the y and z axis-angle components. For a
    left-right symmetric body (SMPL and the embedded body are, to ~0.03 mm at rest) the posed joints
    become ``flip_points3d`` of the original ones, up to a translation.

    Args:
        pose_J3: (24, 3) axis-angle, radians, root (camera-frame orientation) first.
        perm: the left/right swap of the 24 joints (``raymotion.body.joints.SMPL_FLIP_PERM``).

    Returns:
        (24, 3) the mirrored pose. Applying it twice gives the input back.
    """
    return pose_J3[list(perm)] * _MIRROR_AXIS_ANGLE_3


def flip_points3d(points_J3: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    """Mirror camera-frame joints (x -> -x) and swap left and right.

    Args:
        points_J3: (J, 3) joints, metres, camera frame.
        perm: the left/right swap matching J (``raymotion.body.joints.SMPL_FLIP_PERM`` or ``EVAL_FLIP_PERM``).
    """
    return points_J3[list(perm)] * np.array([-1.0, 1.0, 1.0], dtype=points_J3.dtype)


def rotation_about_z(rotation_deg: float) -> np.ndarray:
    """(3, 3) rotation by ``rotation_deg`` about the camera z axis; turns x towards y, like the crop."""
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def rotate_points3d(points_J3: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Rotate camera-frame points about the camera z axis (the 3D label of a rotated crop).

    Args:
        points_J3: (J, 3) points, metres, camera frame.
        rotation_deg: the crop's rotation, degrees.
    """
    return (points_J3 @ rotation_about_z(rotation_deg).T).astype(points_J3.dtype)


def rotate_pose(pose_J3: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Rotate the root orientation of an axis-angle pose about the camera z axis (SPIN's rot_aa).

    Args:
        pose_J3: (24, 3) axis-angle, radians, root orientation in the camera frame first.
        rotation_deg: the crop's rotation, degrees.

    Returns:
        (24, 3) pose whose body is ``rotate_points3d`` of the original body (about the root joint).
    """
    if rotation_deg == 0.0:
        return pose_J3.copy()
    root_33 = axis_angle_to_rotmat(torch.as_tensor(pose_J3[0], dtype=torch.float64))
    rotated_33 = torch.as_tensor(rotation_about_z(rotation_deg)) @ root_33
    out = pose_J3.copy()
    out[0] = rotmat_to_axis_angle(rotated_33).numpy()
    return out

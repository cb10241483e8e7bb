"""What ``raymotion predict`` exports, as pure functions: the full-image camera, the posed body in it, the 2D
joints, temporal smoothing, and the files (predictions.npz with its conventions, .obj meshes).

Legend: N rows (one person in one frame), J = 24 SMPL joints, E = 14 evaluation joints, V vertices, F faces,
K shape coefficients; trailing digits are literal sizes.

Conventions (also written into predictions.npz's ``metadata`` and the README):
- Camera frame: OpenCV's, x right, y down, z forward, metres. The full-image camera is a pinhole with focal
  length ``focal_length`` px and its principal point at the image centre (W/2, H/2).
- Pixels: x the column, y the row, origin at the top-left CORNER of the top-left pixel (pixel centres at
  i + 0.5).
- ``pose``: SMPL axis-angle (24 x 3, radians) relative to each joint's parent; joint 0 is the global
  orientation in the camera frame (an upright person has it near 180 degrees about x, since y points down).
  ``rotmats`` are the same rotations as matrices.
- ``cam_crop``: the model's weak-perspective camera in its crop, (s, tx, ty): normalised crop coordinates
  n = s * X_xy + (tx, ty), n in [-1, 1] across the crop (scale, then shift; SPIN/HMR2 shift, then scale).
- ``transl_cam``: the translation that puts the body ``body(pose, betas)`` into the full-image camera, found
  from ``cam_crop`` and the crop box (CLIFF's crop-to-full-image camera; ``geometry.camera``).
- ``joints3d_cam`` (24 SMPL joints), ``eval_joints3d_cam`` (the 14 LSP-style evaluation joints),
  ``verts_cam``: the posed body plus ``transl_cam``, camera frame, metres.
- ``joints2d``, ``eval_joints2d``: the perspective projection of the 3D joints by the full-image camera,
  pixels. Up to the weak-perspective approximation (below a pixel at the default focal length) they equal
  the model's own crop projection mapped into the image.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from raymotion.body.body_model import BodyModel
from raymotion.body.joints import EVAL_JOINT_NAMES, SMPL_JOINT_NAMES
from raymotion.geometry import SPIN_CROP_SIZE, SPIN_FOCAL_LENGTH, crop_cam_to_full_image_translation, perspective_project

SMOOTHING_TRUNCATE_SIGMAS = 3.0
"""The Gaussian of predict.smoothing='gaussian' is cut at 3 standard deviations."""

CONVENTIONS = {
    "camera_frame": "OpenCV: x right, y down, z forward; metres",
    "camera": "pinhole, focal_length px (per row), principal point at the image centre (width/2, height/2)",
    "pixels": "x = column, y = row; origin at the top-left corner of the top-left pixel (pixel centres at i + 0.5)",
    "pose": "SMPL axis-angle, radians, (24, 3) flattened to 72, each joint relative to its parent; joint 0 = global "
            "orientation in the camera frame",
    "rotmats": "the same rotations as (24, 3, 3) matrices",
    "cam_crop": "weak perspective in the crop: normalised crop coords n = s * X_xy + (tx, ty), n in [-1, 1]",
    "transl_cam": "body(pose, betas) + transl_cam = the body in the camera frame, metres",
    "joints3d_cam": "24 SMPL joints (joint_names), camera frame, metres",
    "eval_joints3d_cam": "14 evaluation joints (eval_joint_names), camera frame, metres",
    "joints2d": "perspective projection of joints3d_cam by the full-image camera, pixels",
    "box_xyxy": "the person box given (or the whole frame), pixels; the model saw the square crop of side crop_side "
                "around crop_center",
}


def default_focal_length(width: int, height: int) -> float:
    """SPIN's 5000 px at a 224 px image, scaled to the image's longer side (predict.focal_length=0)."""
    return SPIN_FOCAL_LENGTH / SPIN_CROP_SIZE * max(width, height)


def full_image_translation(cam_N3: Tensor, *, crop_center_N2: Tensor, crop_side_N: Tensor, image_size_N2: Tensor,
                           focal_length_N: Tensor) -> Tensor:
    """(N, 3) transl_cam, metres, of the full-image camera (``geometry.crop_cam_to_full_image_translation``).

    Args:
        cam_N3: (N, 3) weak-perspective crop camera (s, tx, ty).
        crop_center_N2, crop_side_N: the square crop the model saw, image pixels.
        image_size_N2: (N, 2) image (width, height), pixels. focal_length_N: (N,) pixels.
    """
    return crop_cam_to_full_image_translation(cam_N3, box_center_B2=crop_center_N2, box_size_B=crop_side_N,
                                              image_size_B2=image_size_N2, focal_length=focal_length_N)


def posed_in_camera(body_model: BodyModel, *, rotmats_NJ33: Tensor, betas_NK: Tensor, transl_N3: Tensor,
                    image_size_N2: Tensor, focal_length_N: Tensor, with_verts: bool) -> dict[str, Tensor]:
    """The body in the full-image camera and its 2D joints.

    Returns:
        joints3d_cam (N, 24, 3) and eval_joints3d_cam (N, 14, 3), metres, camera frame; joints2d (N, 24, 2) and
        eval_joints2d (N, 14, 2), pixels; verts_cam (N, V, 3) when ``with_verts``.
    """
    out = body_model(rotmats_BJ33=rotmats_NJ33, betas_BK=betas_NK)
    principal_N2 = image_size_N2 / 2.0
    result = {"joints3d_cam": out.joints_BJ3 + transl_N3[:, None], "eval_joints3d_cam": out.eval_joints_B143 + transl_N3[:, None]}
    for name in ("joints", "eval_joints"):
        result[f"{name}2d"] = perspective_project(result[f"{name}3d_cam"], focal_length=focal_length_N[:, None],
                                                  principal_point=principal_N2, transl_B3=torch.zeros_like(transl_N3))
    if with_verts:
        result["verts_cam"] = out.verts_BV3 + transl_N3[:, None]
    return result


def nearest_rotation(matrix_N33: Tensor) -> Tensor:
    """(N, 3, 3) the rotation closest (Frobenius) to each matrix: U diag(1, 1, det(U V^T)) V^T of its SVD."""
    u_N33, _, vt_N33 = torch.linalg.svd(matrix_N33)
    sign_N = torch.det(u_N33 @ vt_N33)
    fix_N3 = torch.ones(matrix_N33.shape[0], 3, dtype=matrix_N33.dtype)
    fix_N3[:, 2] = sign_N
    return u_N33 @ torch.diag_embed(fix_N3) @ vt_N33


def track_segments(frame_N: np.ndarray, track_N: np.ndarray) -> list[np.ndarray]:
    """Row indices of each run of consecutive frames of one track, in frame order (a missing frame starts a
    new run: smoothing never bridges a gap)."""
    segments = []
    for track in np.unique(track_N):
        rows = np.flatnonzero(track_N == track)
        rows = rows[np.argsort(frame_N[rows], kind="stable")]
        breaks = np.flatnonzero(np.diff(frame_N[rows]) != 1) + 1
        segments += np.split(rows, breaks)
    return segments


def gaussian_smooth_rows(values_TX: np.ndarray, *, sigma: float) -> np.ndarray:
    """Smooth (T, X) values along T with a Gaussian of ``sigma`` rows, cut at 3 sigma; at the ends the kernel is
    renormalised over the rows that exist (no padding pulls the ends towards zero or towards a copy)."""
    radius = int(math.ceil(SMOOTHING_TRUNCATE_SIGMAS * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel_K = np.exp(-0.5 * (offsets / sigma) ** 2)
    num_rows = len(values_TX)
    total_TX = np.zeros_like(values_TX, dtype=np.float64)
    weight_T = np.zeros(num_rows)
    for offset, weight in zip(offsets, kernel_K):
        lo, hi = max(0, -offset), min(num_rows, num_rows - offset)
        if lo >= hi:
            continue
        total_TX[lo:hi] += weight * values_TX[lo + offset:hi + offset]
        weight_T[lo:hi] += weight
    return total_TX / weight_T[:, None]


def smooth_tracks(frame_N: np.ndarray, track_N: np.ndarray, *, rotmats_NJ33: Tensor, betas_NK: Tensor,
                  transl_N3: Tensor, sigma: float) -> tuple[Tensor, Tensor, Tensor]:
    """predict.smoothing='gaussian': each track's rotations (element-wise, then ``nearest_rotation``), betas and
    transl_cam smoothed over each run of consecutive frames (``track_segments``). Returns new tensors."""
    rotmats, betas, transl = rotmats_NJ33.clone(), betas_NK.clone(), transl_N3.clone()
    for rows in track_segments(frame_N, track_N):
        if len(rows) < 2:
            continue
        index = torch.as_tensor(rows)
        flat_TX = torch.cat([rotmats_NJ33[index].flatten(1), betas_NK[index], transl_N3[index]], dim=1)
        smooth_TX = torch.as_tensor(gaussian_smooth_rows(flat_TX.double().numpy(), sigma=sigma), dtype=rotmats.dtype)
        num_rot = rotmats_NJ33[0].numel()
        num_betas = betas_NK.shape[1]
        rotmats[index] = nearest_rotation(smooth_TX[:, :num_rot].reshape(-1, 3, 3)).reshape(len(rows), -1, 3, 3)
        betas[index] = smooth_TX[:, num_rot:num_rot + num_betas]
        transl[index] = smooth_TX[:, num_rot + num_betas:]
    return rotmats, betas, transl


def metadata(**fields: Any) -> dict[str, Any]:
    """predictions.npz's ``metadata`` (a JSON string): the conventions, joint names, and ``fields`` (the
    checkpoint, the model keys, the focal-length rule, smoothing, ...)."""
    return {"format": "raymotion predictions v1", "conventions": CONVENTIONS, "joint_names": list(SMPL_JOINT_NAMES),
            "eval_joint_names": list(EVAL_JOINT_NAMES), **fields}


def write_predictions(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write predictions.npz atomically (a temp file renamed over it): ``arrays`` plus ``metadata``, a JSON
    string. It loads with ``np.load(path, allow_pickle=False)``; ``json.loads(str(data['metadata']))``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, metadata=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_obj(path: Path, verts_V3: np.ndarray, faces_F3: np.ndarray) -> None:
    """A Wavefront .obj of one mesh (vertices in metres, camera frame; faces 1-based as the format wants)."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts_V3.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces_F3.tolist()]
    path.write_text("\n".join(lines) + "\n")

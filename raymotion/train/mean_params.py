"""The regressor's starting point for a dataset: mean joint rotations, betas and camera of its labelled pool.

SPIN ships such a file for SMPL (smpl_mean_params.npz); ``raymotion mean-params`` makes one from any
dataset in raymotion's format, and the one shipped for the embedded body came from the default
synthetic benchmark (see README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raymotion.body.joints import NUM_SMPL_JOINTS
from raymotion.data.crops import crop_box
from raymotion.data.frames import _read_labels
from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_rot6d
from raymotion.models.regressor import MeanParams
from raymotion.data.manifest import read_manifest


def _project_to_rotation(matrix_33: torch.Tensor) -> torch.Tensor:
    """The rotation nearest to a 3x3 matrix (SVD with the determinant fixed to +1)."""
    u, _, vt = torch.linalg.svd(matrix_33)
    fix = torch.diag(torch.tensor([1.0, 1.0, float(torch.sign(torch.det(u @ vt)))]))
    return u @ fix @ vt


def compute_mean_params(data_root: str | Path, *, bbox_scale: float, body_model, split: str = "labelled") -> MeanParams:
    """Mean parameters of a labelled split.

    Joint rotations: the rotation nearest to the mean rotation matrix of each joint; the root keeps the
    upright, camera-facing orientation of ``MeanParams.default`` (people face every way in the data, so
    the mean root rotation is degenerate). Betas: their mean. Camera: the mean of per-frame least-squares
    fits of (s, tx, ty) mapping the labelled body's joints onto the labelled 2D joints in normalised
    crop coordinates.
    """
    data_root = Path(data_root)
    rows = [r for r in read_manifest(data_root).to_pylist() if r["split"] == split]
    if not rows:
        raise ValueError(f"{data_root / 'manifest.parquet'} has no '{split}' clips to average")
    columns = ["pose_cam", "betas", "joints2d", "box_xyxy"]
    # Checked like every label read (columns, row counts, finite values): one NaN would make every mean NaN.
    tables = [_read_labels(data_root, r, columns, bad_input="fail")[0] for r in rows]
    pose_N243 = torch.tensor(np.concatenate([t["pose_cam"] for t in tables]), dtype=torch.float32)
    betas_NK = torch.tensor(np.concatenate([t["betas"] for t in tables]), dtype=torch.float32)
    joints2d_NJ2 = torch.tensor(np.concatenate([t["joints2d"] for t in tables]), dtype=torch.float32)
    boxes_N4 = np.concatenate([t["box_xyxy"] for t in tables])
    rotmats_NJ33 = axis_angle_to_rotmat(pose_N243)
    default = MeanParams.default(num_betas=betas_NK.shape[1])
    mean_J33 = torch.stack([_project_to_rotation(rotmats_NJ33[:, j].mean(dim=0)) for j in range(NUM_SMPL_JOINTS)])
    mean_J33[0] = axis_angle_to_rotmat(torch.tensor([np.pi, 0.0, 0.0]))
    # Camera: normalised crop coordinates of the labelled joints, and the labelled body at the origin.
    centre_N2, side_N = crop_box(boxes_N4, scale=bbox_scale)
    norm_NJ2 = 2.0 * (joints2d_NJ2 - torch.as_tensor(centre_N2, dtype=torch.float32)[:, None]) / torch.as_tensor(side_N, dtype=torch.float32)[:, None, None]
    cams = []
    with torch.no_grad():
        for start in range(0, len(pose_N243), 512):
            out = body_model(rotmats_BJ33=rotmats_NJ33[start:start + 512], betas_BK=betas_NK[start:start + 512])
            xy_BJ2 = out.joints_BJ3[..., :2]
            target_BJ2 = norm_NJ2[start:start + 512]
            # n = s * xy + t per frame: least squares with centred coordinates.
            xy_c = xy_BJ2 - xy_BJ2.mean(dim=1, keepdim=True)
            n_c = target_BJ2 - target_BJ2.mean(dim=1, keepdim=True)
            scale_B = (xy_c * n_c).sum(dim=(1, 2)) / (xy_c**2).sum(dim=(1, 2))
            transl_B2 = target_BJ2.mean(dim=1) - scale_B[:, None] * xy_BJ2.mean(dim=1)
            cams.append(torch.cat([scale_B[:, None], transl_B2], dim=1))
    return MeanParams(
        rot6d_J6=rotmat_to_rot6d(mean_J33),
        betas_K=betas_NK.mean(dim=0),
        cam_3=torch.cat(cams).mean(dim=0),
    )

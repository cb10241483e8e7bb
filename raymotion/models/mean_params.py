"""The regressor's starting point for a dataset: mean joint rotations, betas and camera of its labelled pool.

SPIN ships such a file for SMPL (smpl_mean_params.npz); ``raymotion mean-params`` makes one from any
dataset in raymotion's format (the labels: ``raymotion.data.labels.mean_param_targets``), and the one
shipped for the embedded body came from the default synthetic benchmark (see README).

Legend: N labelled frames, J = 24 SMPL joints, K shape coefficients; trailing digits are literal sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from raymotion.body.joints import NUM_SMPL_JOINTS
from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_rot6d
from raymotion.models.regressor import MeanParams


def _project_to_rotation(matrix_33: torch.Tensor) -> torch.Tensor:
    """The rotation nearest to a 3x3 matrix (SVD with the determinant fixed to +1)."""
    u, _, vt = torch.linalg.svd(matrix_33)
    fix = torch.diag(torch.tensor([1.0, 1.0, float(torch.sign(torch.det(u @ vt)))]))
    return u @ fix @ vt


def fit_mean_params(*, pose_N243: torch.Tensor, betas_NK: torch.Tensor, joints2d_NJ2: torch.Tensor,
                    body_model, joints2d_weight_NJ: torch.Tensor | None = None) -> MeanParams:
    """Mean parameters of labelled frames.

    Joint rotations: the rotation nearest to the mean rotation matrix of each joint; the root keeps the
    upright, camera-facing orientation of ``MeanParams.default`` (people face every way in the data, so
    the mean root rotation is degenerate). Betas: their mean. Camera: the mean of per-frame least-squares
    fits of (s, tx, ty) mapping the labelled body's joints onto the labelled 2D joints.

    Args:
        pose_N243: (N, 24, 3) axis-angle, radians, camera frame. betas_NK: (N, K).
        joints2d_NJ2: (N, 24, 2) labelled 2D joints, normalised crop coordinates (-1..1 across the crop).
        body_model: the ``BodyModel`` the regressor predicts.
        joints2d_weight_NJ: (N, 24) weight of each 2D joint in the camera fit (partial labels: 0 for a joint a
            dataset lacks); None weighs all 1. Each frame needs two joints of positive weight.
    """
    rotmats_NJ33 = axis_angle_to_rotmat(pose_N243)
    mean_J33 = torch.stack([_project_to_rotation(rotmats_NJ33[:, j].mean(dim=0)) for j in range(NUM_SMPL_JOINTS)])
    mean_J33[0] = axis_angle_to_rotmat(torch.tensor([np.pi, 0.0, 0.0]))
    cams = []
    with torch.no_grad():
        for start in range(0, len(pose_N243), 512):
            out = body_model(rotmats_BJ33=rotmats_NJ33[start:start + 512], betas_BK=betas_NK[start:start + 512])
            xy_BJ2 = out.joints_BJ3[..., :2]
            target_BJ2 = joints2d_NJ2[start:start + 512]
            w_BJ1 = (torch.ones_like(target_BJ2[..., :1]) if joints2d_weight_NJ is None
                     else joints2d_weight_NJ[start:start + 512, :, None].to(target_BJ2.dtype))
            # n = s * xy + t per frame: (weighted) least squares with (weighted-)centred coordinates.
            xy_mean_B12 = (w_BJ1 * xy_BJ2).sum(dim=1, keepdim=True) / w_BJ1.sum(dim=1, keepdim=True)
            n_mean_B12 = (w_BJ1 * target_BJ2).sum(dim=1, keepdim=True) / w_BJ1.sum(dim=1, keepdim=True)
            xy_c, n_c = xy_BJ2 - xy_mean_B12, target_BJ2 - n_mean_B12
            scale_B = (w_BJ1 * xy_c * n_c).sum(dim=(1, 2)) / (w_BJ1 * xy_c**2).sum(dim=(1, 2))
            transl_B2 = n_mean_B12[:, 0] - scale_B[:, None] * xy_mean_B12[:, 0]
            cams.append(torch.cat([scale_B[:, None], transl_B2], dim=1))
    return MeanParams(
        rot6d_J6=rotmat_to_rot6d(mean_J33),
        betas_K=betas_NK.mean(dim=0),
        cam_3=torch.cat(cams).mean(dim=0),
    )

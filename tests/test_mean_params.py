"""The regressor's mean parameters fitted to labelled frames, against values known by construction."""

import math

import torch
from torch.testing import assert_close

from raymotion.body.body_model import BodyModel
from raymotion.geometry import axis_angle_to_rotmat, rot6d_to_rotmat
from raymotion.models.mean_params import fit_mean_params


def test_fit_recovers_the_pose_betas_and_the_camera_that_made_the_labels(two_bone_arrays):
    body = BodyModel.from_arrays(two_bone_arrays)
    num = 4
    pose_N243 = torch.zeros(num, 24, 3)
    pose_N243[:, 1, 2] = 0.3  # every frame: the left hip turned 0.3 rad about z
    betas_NK = torch.arange(num * 10, dtype=torch.float32).reshape(num, 10) / 100.0
    with torch.no_grad():
        joints_NJ3 = body(rotmats_BJ33=axis_angle_to_rotmat(pose_N243), betas_BK=betas_NK).joints_BJ3
    cam_3 = torch.tensor([0.8, 0.1, -0.2])  # n = s * xy + (tx, ty)
    joints2d_NJ2 = cam_3[0] * joints_NJ3[..., :2] + cam_3[1:]
    params = fit_mean_params(pose_N243=pose_N243, betas_NK=betas_NK, joints2d_NJ2=joints2d_NJ2, body_model=body)
    rotmats_J33 = rot6d_to_rotmat(params.rot6d_J6[None])[0]
    assert_close(rotmats_J33[1], axis_angle_to_rotmat(torch.tensor([0.0, 0.0, 0.3])), atol=1e-5, rtol=0)
    assert_close(rotmats_J33[0], axis_angle_to_rotmat(torch.tensor([math.pi, 0.0, 0.0])), atol=1e-5,
                 rtol=0)  # the root stays upright
    assert_close(params.betas_K, betas_NK.mean(dim=0))
    assert_close(params.cam_3, cam_3, atol=1e-5, rtol=0)


def test_the_camera_fit_ignores_2d_joints_of_weight_0(two_bone_arrays):
    """Partial labels: joints a dataset lacks (weight 0, placeholder zeros) do not pull the camera."""
    body = BodyModel.from_arrays(two_bone_arrays)
    pose_N243 = torch.zeros(2, 24, 3)
    pose_N243[:, 1, 2] = 0.3
    betas_NK = torch.zeros(2, 10)
    betas_NK[:, 0] = 1.0
    with torch.no_grad():
        joints_NJ3 = body(rotmats_BJ33=axis_angle_to_rotmat(pose_N243), betas_BK=betas_NK).joints_BJ3
    cam_3 = torch.tensor([0.8, 0.1, -0.2])
    joints2d_NJ2 = cam_3[0] * joints_NJ3[..., :2] + cam_3[1:]
    weight_NJ = torch.zeros(2, 24)
    weight_NJ[:, :2] = 1.0  # the root and the left hip: two distinct joints
    joints2d_NJ2[:, 2:] = 0.0  # the rest absent
    params = fit_mean_params(pose_N243=pose_N243, betas_NK=betas_NK, joints2d_NJ2=joints2d_NJ2, body_model=body,
                             joints2d_weight_NJ=weight_NJ)
    assert_close(params.cam_3, cam_3, atol=1e-5, rtol=0)

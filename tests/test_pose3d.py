"""3D pose geometry of augmentation: mirrored and rotated poses pose the body as the mirrored and rotated
joints say; the left/right joint swaps (body.joints) name every joint's twin."""

import numpy as np
import pytest
import torch

from raymotion.body.body_model import BodyModel, embedded_body_path
from raymotion.body.joints import EVAL_FLIP_PERM, EVAL_JOINT, EVAL_JOINT_NAMES, SMPL_FLIP_PERM, SMPL_JOINT, SMPL_JOINT_NAMES
from raymotion.geometry import axis_angle_to_rotmat
from raymotion.geometry.pose3d import flip_points3d, flip_pose, rotate_points3d, rotate_pose, rotation_about_z


def test_rotation_about_z_by_hand():
    np.testing.assert_allclose(rotation_about_z(90.0), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(rotate_points3d(np.array([[1.0, 0.0, 2.0]]), 90.0), [[0.0, 1.0, 2.0]], atol=1e-15)


def test_flip_maps_every_left_joint_to_its_right_twin():
    for names, perm in ((SMPL_JOINT_NAMES, SMPL_FLIP_PERM), (EVAL_JOINT_NAMES, EVAL_FLIP_PERM)):
        for i, name in enumerate(names):
            mirrored = names[perm[i]]
            if name.startswith("left_"):
                assert mirrored == "right_" + name[5:]
            elif name.startswith("right_"):
                assert mirrored == "left_" + name[6:]
            else:
                assert mirrored == name
    assert SMPL_FLIP_PERM[SMPL_JOINT["left_wrist"]] == SMPL_JOINT["right_wrist"]
    assert EVAL_FLIP_PERM[EVAL_JOINT["right_ankle"]] == EVAL_JOINT["left_ankle"]


def test_flipping_twice_is_the_identity():
    rng = np.random.default_rng(3)
    pose_J3 = rng.normal(size=(24, 3)).astype(np.float32)
    joints_J3 = rng.normal(size=(24, 3)).astype(np.float32)
    np.testing.assert_array_equal(flip_pose(flip_pose(pose_J3, SMPL_FLIP_PERM), SMPL_FLIP_PERM), pose_J3)
    np.testing.assert_array_equal(flip_points3d(flip_points3d(joints_J3, SMPL_FLIP_PERM), SMPL_FLIP_PERM), joints_J3)
    # SPIN's flip_pose on the root: the y and z axis-angle components change sign.
    np.testing.assert_array_equal(flip_pose(pose_J3, SMPL_FLIP_PERM)[0], pose_J3[0] * [1, -1, -1])


@pytest.fixture(scope="module")
def body():
    return BodyModel.from_file(embedded_body_path("anny_lowres"))


def _pose_body(body, pose_J3, betas_K):
    with torch.no_grad():
        out = body(rotmats_BJ33=axis_angle_to_rotmat(torch.as_tensor(pose_J3))[None], betas_BK=torch.as_tensor(betas_K)[None])
    return out.joints_BJ3[0].numpy(), out.eval_joints_B143[0].numpy()


def test_rotate_pose_rotates_the_posed_body_about_the_camera_z_axis(body):
    rng = np.random.default_rng(4)
    pose_J3 = (0.3 * rng.normal(size=(24, 3))).astype(np.float32)
    betas_K = rng.normal(size=10).astype(np.float32)
    joints_J3, eval_E3 = _pose_body(body, pose_J3, betas_K)
    rotated_J3, rotated_eval_E3 = _pose_body(body, rotate_pose(pose_J3, 25.0), betas_K)
    np.testing.assert_allclose(rotated_J3 - rotated_J3[0], rotate_points3d(joints_J3 - joints_J3[0], 25.0), atol=1e-5)
    np.testing.assert_allclose(rotated_eval_E3 - rotated_J3[0], rotate_points3d(eval_E3 - joints_J3[0], 25.0), atol=1e-5)


def test_flip_pose_mirrors_the_posed_body(body):
    rng = np.random.default_rng(5)
    pose_J3 = (0.3 * rng.normal(size=(24, 3))).astype(np.float32)
    betas_K = rng.normal(size=10).astype(np.float32)
    joints_J3, eval_E3 = _pose_body(body, pose_J3, betas_K)
    flipped_J3, flipped_eval_E3 = _pose_body(body, flip_pose(pose_J3, SMPL_FLIP_PERM), betas_K)
    mirrored_J3 = flip_points3d(joints_J3, SMPL_FLIP_PERM)
    mirrored_eval_E3 = flip_points3d(eval_E3, EVAL_FLIP_PERM)
    # The embedded body is left-right symmetric to ~0.1 mm.
    np.testing.assert_allclose(flipped_J3 - flipped_J3[0], mirrored_J3 - mirrored_J3[0], atol=5e-4)
    np.testing.assert_allclose(flipped_eval_E3 - flipped_J3[0], mirrored_eval_E3 - mirrored_J3[0], atol=5e-4)

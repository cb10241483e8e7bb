import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from raymotion.body.joints import EVAL_HIP_PAIR, EVAL_JOINT, NUM_EVAL_JOINTS
from raymotion.eval.metrics import (
    clustered_mean_se,
    accel_error_mm,
    accel_mm,
    mpjpe_mm,
    pa_mpjpe_mm,
    pelvis_from_hips,
    procrustes_align,
    pve_mm,
    similarity_transform,
)
from raymotion.geometry import axis_angle_to_rotmat


def _reference_similarity_transform(S1: np.ndarray, S2: np.ndarray) -> np.ndarray:
    """SPIN's compute_similarity_transform (utils/pose_utils.py), written from the published
    algorithm: S1, S2 are (J, 3); returns S1 aligned to S2."""
    S1, S2 = S1.T, S2.T
    mu1 = S1.mean(axis=1, keepdims=True)
    mu2 = S2.mean(axis=1, keepdims=True)
    X1, X2 = S1 - mu1, S2 - mu2
    var1 = np.sum(X1**2)
    K = X1 @ X2.T
    U, _, Vh = np.linalg.svd(K)
    V = Vh.T
    Z = np.eye(3)
    Z[-1, -1] *= np.sign(np.linalg.det(U @ V.T))
    R = V @ Z @ U.T
    scale = np.trace(R @ K) / var1
    t = mu2 - scale * (R @ mu1)
    return (scale * R @ S1 + t).T


def _reference_pa_mpjpe_mm(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    aligned = np.stack([_reference_similarity_transform(p, t) for p, t in zip(pred, target)])
    return np.linalg.norm(aligned - target, axis=-1).mean(axis=-1) * 1000.0


def _random_joints(batch: int, *, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, NUM_EVAL_JOINTS, 3, generator=gen, dtype=torch.float64) * 0.4


# ---- MPJPE ----------------------------------------------------------------------------------------


def test_mpjpe_ignores_a_global_translation():
    target = _random_joints(3, seed=0)
    pred = target + torch.tensor([0.3, -1.0, 2.5], dtype=torch.float64)
    assert_close(mpjpe_mm(pred, target), torch.zeros(3, dtype=torch.float64))


def test_mpjpe_of_one_moved_joint_by_hand():
    target = _random_joints(1, seed=1)
    pred = target.clone()
    pred[0, EVAL_JOINT["head_top"]] += torch.tensor([0.03, 0.04, 0.0], dtype=torch.float64)  # 50 mm
    assert_close(mpjpe_mm(pred, target), torch.tensor([50.0 / NUM_EVAL_JOINTS], dtype=torch.float64))


def test_mpjpe_aligns_at_mid_hips():
    # Moving the left hip by 20 mm moves the pelvis by 10 mm: every joint, both hips included,
    # is then 10 mm off.
    target = _random_joints(1, seed=2)
    pred = target.clone()
    pred[0, EVAL_JOINT["left_hip"], 0] += 0.02
    assert_close(mpjpe_mm(pred, target), torch.tensor([10.0], dtype=torch.float64))
    assert set(EVAL_HIP_PAIR) == {EVAL_JOINT["left_hip"], EVAL_JOINT["right_hip"]}


def test_pelvis_from_hips_is_the_hip_mid_point():
    joints = torch.zeros(1, NUM_EVAL_JOINTS, 3)
    joints[0, EVAL_JOINT["left_hip"]] = torch.tensor([1.0, 2.0, 3.0])
    joints[0, EVAL_JOINT["right_hip"]] = torch.tensor([3.0, 0.0, -1.0])
    assert_close(pelvis_from_hips(joints), torch.tensor([[2.0, 1.0, 1.0]]))


# ---- Procrustes / PA-MPJPE ------------------------------------------------------------------------


def test_pa_mpjpe_is_zero_for_a_similar_copy():
    pred = _random_joints(4, seed=3)
    rotmat = axis_angle_to_rotmat(torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64))
    target = 1.7 * pred @ rotmat.transpose(-1, -2) + torch.tensor([0.5, -0.2, 4.0], dtype=torch.float64)
    assert_close(pa_mpjpe_mm(pred, target), torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    assert_close(procrustes_align(pred, target), target)
    scale, rot, transl = similarity_transform(pred, target)
    assert_close(scale, torch.full((4,), 1.7, dtype=torch.float64))
    assert_close(rot, rotmat.expand(4, 3, 3))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pa_mpjpe_matches_reference_spin_implementation(dtype):
    pred = _random_joints(8, seed=4)
    target = _random_joints(8, seed=5)
    expected = _reference_pa_mpjpe_mm(pred.numpy(), target.numpy())
    got = pa_mpjpe_mm(pred.to(dtype), target.to(dtype))
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    assert_close(got.double(), torch.from_numpy(expected), atol=tol, rtol=tol)
    aligned_expected = np.stack(
        [_reference_similarity_transform(p, t) for p, t in zip(pred.numpy(), target.numpy())]
    )
    assert_close(procrustes_align(pred, target), torch.from_numpy(aligned_expected))


def test_procrustes_never_reflects():
    # A mirrored copy is matched perfectly only by a reflection, which Procrustes must refuse.
    pred = _random_joints(2, seed=6)
    target = pred * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    _, rot, _ = similarity_transform(pred, target)
    assert_close(torch.linalg.det(rot), torch.ones(2, dtype=torch.float64))
    errors = pa_mpjpe_mm(pred, target)
    assert (errors > 1.0).all()
    assert_close(errors, torch.from_numpy(_reference_pa_mpjpe_mm(pred.numpy(), target.numpy())))


# ---- PVE ------------------------------------------------------------------------------------------


def test_pve_of_a_known_offset():
    f64 = torch.float64
    target_verts = torch.zeros(1, 4, 3, dtype=f64)
    pred_verts = target_verts + torch.tensor([5.0, 5.0, 5.0], dtype=f64)  # the whole mesh is translated
    pred_verts[0, 2] += torch.tensor([0.0, 0.006, 0.008], dtype=f64)  # 10 mm on one vertex
    pred_pelvis = torch.tensor([[5.0, 5.0, 5.0]], dtype=f64)
    target_pelvis = torch.zeros(1, 3, dtype=f64)
    expected = torch.tensor([10.0 / 4], dtype=f64)
    assert_close(pve_mm(pred_verts, target_verts, pred_pelvis, target_pelvis), expected)


# ---- acceleration -----------------------------------------------------------------------------------


def test_accel_error_of_constant_velocity_is_zero():
    t_T11 = torch.arange(7, dtype=torch.float64)[:, None, None]
    target = torch.randn(1, 3, 3, dtype=torch.float64) + 0.01 * t_T11
    pred = torch.randn(1, 3, 3, dtype=torch.float64) + torch.tensor([0.0, -0.02, 0.05]) * t_T11
    assert_close(accel_error_mm(pred, target), torch.zeros(5, dtype=torch.float64))
    assert_close(accel_mm(pred), torch.zeros(5, dtype=torch.float64))


def test_accel_error_of_a_quadratic_by_hand():
    # x(t) = 0.001 t^2 m has second difference 0.002 m = 2 mm per frame^2 at every frame.
    t_T = torch.arange(6, dtype=torch.float64)
    target = torch.zeros(6, 2, 3, dtype=torch.float64)
    pred = target.clone()
    pred[:, :, 0] = 0.001 * t_T[:, None] ** 2
    assert_close(accel_error_mm(pred, target), torch.full((4,), 2.0, dtype=torch.float64))
    assert_close(accel_mm(pred), torch.full((4,), 2.0, dtype=torch.float64))


def test_accel_error_keeps_only_fully_visible_triplets():
    # x(t) = 0.001 t^3 m: second difference at t is 0.001 (6 t + 6) m; with frame 2 invalid only
    # the triplet (3, 4, 5) survives: 0.001 * 24 m = 24 mm.
    t_T = torch.arange(6, dtype=torch.float64)
    target = torch.zeros(6, 1, 3, dtype=torch.float64)
    pred = target.clone()
    pred[:, 0, 1] = 0.001 * t_T**3
    vis = torch.tensor([True, True, False, True, True, True])
    assert_close(accel_error_mm(pred, target, vis_T=vis), torch.tensor([24.0], dtype=torch.float64))


def test_clustered_se_of_equal_clips_is_the_std_of_clip_means():
    # Clips of 2 frames with means 1, 2, 6: std(ddof=1) = sqrt(((1-3)^2 + (2-3)^2 + (6-3)^2) / 2) = sqrt(7).
    values_N = torch.tensor([0.0, 2.0, 2.0, 2.0, 5.0, 7.0])
    cluster_N = torch.tensor([4, 4, 9, 9, 1, 1])
    mean, se = clustered_mean_se(values_N, cluster_N)
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx(math.sqrt(7.0) / math.sqrt(3.0))


def test_clustered_se_weights_unequal_clips_by_their_frames():
    # Clip a = [0, 0, 0] (residual sum -3 with mean 1), clip b = [4] (residual sum +3): SE^2 = 2/1 * 18 / 16.
    mean, se = clustered_mean_se(torch.tensor([0.0, 0.0, 0.0, 4.0]), torch.tensor([0, 0, 0, 1]))
    assert mean == pytest.approx(1.0)
    assert se == pytest.approx(math.sqrt(2.0 * 18.0 / 16.0))


def test_clustered_se_is_nan_for_one_clip():
    mean, se = clustered_mean_se(torch.tensor([1.0, 3.0]), torch.tensor([7, 7]))
    assert mean == 2.0 and math.isnan(se)

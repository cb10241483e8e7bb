import math

import pytest
import torch
from torch.testing import assert_close

from raymotion.losses.regularizers import SCHEDULE_KINDS, anchor_loss, schedule_value
from raymotion.losses.supervised import (
    SUPERVISED_TERMS,
    SupervisedWeights,
    betas_loss,
    betas_prior_loss,
    camera_loss,
    keypoint_2d_loss,
    keypoint_3d_loss,
    pose_loss,
    supervised_loss,
)


# ---- SMPL parameter terms ---------------------------------------------------------------------------


def test_pose_loss_by_hand_ignores_unlabelled_samples():
    pred = torch.eye(3).expand(2, 1, 3, 3).clone()
    gt = pred.clone()
    pred[0, 0, 1, 2] += 0.3  # labelled sample: squared error 0.09 over 9 entries
    pred[1] += 100.0  # unlabelled sample: ignored
    assert_close(pose_loss(pred, gt, torch.tensor([True, False])), torch.tensor(0.01))


def test_betas_loss_by_hand():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0], [5.0, 5.0]])
    gt = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # samples 0 and 1 labelled: (1 + 4 + 1 + 1) / 4
    assert_close(betas_loss(pred, gt, torch.tensor([1.0, 1.0, 0.0])), torch.tensor(7.0 / 4.0))


def test_smpl_terms_are_zero_not_nan_without_labels():
    pred_rot = torch.randn(2, 24, 3, 3, requires_grad=True)
    pred_betas = torch.randn(2, 10, requires_grad=True)
    none = torch.tensor([False, False])
    loss = pose_loss(pred_rot, torch.randn(2, 24, 3, 3), none)
    loss = loss + betas_loss(pred_betas, torch.randn(2, 10), none)
    assert_close(loss, torch.tensor(0.0))
    loss.backward()
    assert_close(pred_rot.grad, torch.zeros_like(pred_rot))


def test_betas_prior_by_hand():
    assert_close(betas_prior_loss(torch.tensor([[1.0, 2.0], [3.0, 0.0]])), torch.tensor(3.5))


# ---- keypoints and camera ---------------------------------------------------------------------------


def test_keypoint_2d_loss_by_hand_averages_over_all_entries():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    gt = torch.tensor([[[0.5, 0.0], [0.0, 0.0]]])
    vis = torch.tensor([[1.0, 0.0]])
    # (1 * 0.25 + 1 * 0 + 0 * 1 + 0 * 1) / 4 entries
    assert_close(keypoint_2d_loss(pred, gt, vis), torch.tensor(0.0625))


def test_keypoint_3d_loss_by_hand_is_pelvis_centred():
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    pred = gt + torch.tensor([3.0, -2.0, 7.0])  # translation: removed by centring
    pred[0, 1, 0] += 0.2
    assert_close(keypoint_3d_loss(pred, gt, torch.tensor([True]), pelvis_index=0), torch.tensor(0.04 / 9))
    zero = keypoint_3d_loss(pred, gt, torch.tensor([False]), pelvis_index=0)
    assert_close(zero, torch.tensor(0.0))


def test_camera_loss_by_hand():
    cam = torch.tensor([[0.0, 0.3, -0.1], [0.1, 0.0, 0.0]])
    assert_close(camera_loss(cam), torch.tensor((1.0 + math.exp(-2.0)) / 2.0))


# ---- weights ----------------------------------------------------------------------------------------


def test_supervised_weights_defaults_follow_spin():
    weights = SupervisedWeights()
    assert (weights.pose, weights.betas, weights.betas_prior) == (1.0, 0.001, 1.0)
    assert (weights.kp2d, weights.kp3d, weights.cam, weights.overall) == (5.0, 5.0, 1.0, 60.0)


def test_supervised_loss_combines_terms_by_hand():
    terms = {name: torch.tensor(1.0) for name in SUPERVISED_TERMS}
    terms["kp2d"] = torch.tensor(2.0)
    total, weighted = supervised_loss(terms, SupervisedWeights())
    # 60 * (1 + 0.001 + 1 + 5 * 2 + 5 + 1)
    assert_close(total, torch.tensor(60.0 * 18.001))
    assert_close(weighted["kp2d"], torch.tensor(600.0))
    assert_close(torch.stack(list(weighted.values())).sum(), total)
    total, _ = supervised_loss(terms, SupervisedWeights(kp2d=0.0, overall=1.0))
    assert_close(total, torch.tensor(8.001))


def test_supervised_loss_rejects_wrong_keys():
    terms = {name: torch.tensor(1.0) for name in SUPERVISED_TERMS if name != "cam"}
    terms["kp3D"] = torch.tensor(1.0)
    with pytest.raises(ValueError, match=r"missing \['cam'\], unknown \['kp3D'\]"):
        supervised_loss(terms, SupervisedWeights())


def test_supervised_weights_reject_negative_values():
    with pytest.raises(ValueError, match=r"SupervisedWeights.kp3d .* got -1.0"):
        SupervisedWeights(kp3d=-1.0)


# ---- anchoring --------------------------------------------------------------------------------------


def test_anchor_loss_by_hand_and_detaches_the_frozen_copy():
    frozen_joints = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], requires_grad=True)
    pred_joints = (frozen_joints.detach() + 5.0).requires_grad_()
    with torch.no_grad():
        pred_joints[0, 1, 2] += 0.3  # 0.09 over 6 entries after centring
    frozen_betas = torch.zeros(1, 4, requires_grad=True)
    pred_betas = torch.tensor([[1.0, 0.0, 0.0, 1.0]], requires_grad=True)
    joints_term, betas_term = anchor_loss(
        pred_joints, frozen_joints, pred_betas, frozen_betas, pelvis_index=0
    )
    assert_close(joints_term, torch.tensor(0.09 / 6))
    assert_close(betas_term, torch.tensor(0.5))
    (joints_term + betas_term).backward()
    assert frozen_joints.grad is None and frozen_betas.grad is None
    assert pred_joints.grad is not None and pred_betas.grad is not None


# ---- schedules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("constant", 7, 1.0),
        ("linear", 0, 1.0),
        ("linear", 5, 0.5),
        ("linear", 10, 0.0),
        ("linear", 25, 0.0),
        ("cosine", 0, 1.0),
        ("cosine", 5, 0.5),
        ("cosine", 10, 0.0),
        ("step", 2, 1.0),
        ("step", 3, 0.1),
        ("step", 7, 0.01),
    ],
)
def test_schedule_values_by_hand(kind, step, expected):
    value = schedule_value(kind, step, total_steps=10, start=1.0, end=0.0, milestones=(6, 3), gamma=0.1)
    assert value == pytest.approx(expected)


def test_cosine_schedule_quarter_way_by_hand():
    # end + (start - end) * (1 + cos(pi / 4)) / 2
    value = schedule_value("cosine", 25, total_steps=100, start=2.0, end=1.0)
    assert value == pytest.approx(1.0 + (1.0 + math.sqrt(0.5)) / 2.0)


def test_schedule_rejects_unknown_kind_listing_the_kinds():
    with pytest.raises(ValueError, match="exponential") as info:
        schedule_value("exponential", 0, total_steps=10, start=1.0, end=0.0)
    assert all(kind in str(info.value) for kind in SCHEDULE_KINDS)
    with pytest.raises(ValueError, match="step must be >= 0"):
        schedule_value("linear", -1, total_steps=10, start=1.0, end=0.0)


def test_stand_in_detector_noise_and_dropout_match_their_settings():
    from raymotion.train.step import stand_in_detections

    generator = torch.Generator().manual_seed(0)
    joints_BJ2 = torch.zeros(500, 24, 2)
    visible_BJ = torch.ones(500, 24)
    visible_BJ[:, 0] = 0.0  # never visible: never detected
    det_BJ2, conf_BJ = stand_in_detections(joints_BJ2, visible_BJ, noise_px=4.0, dropout=0.25, crop_size=64,
                                           generator=generator)
    # 4 px at a 64 px crop is 4 * 2 / 64 = 0.125 normalised units.
    assert abs(float(det_BJ2.std()) - 0.125) < 0.005
    assert (conf_BJ[:, 0] == 0).all()
    assert abs(float(conf_BJ[:, 1:].mean()) - 0.75) < 0.02
    exact_BJ2, exact_conf_BJ = stand_in_detections(joints_BJ2 + 0.3, visible_BJ, noise_px=0.0, dropout=0.0, crop_size=64)
    assert torch.equal(exact_BJ2, joints_BJ2 + 0.3) and torch.equal(exact_conf_BJ, visible_BJ)

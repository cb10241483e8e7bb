"""Partial labels (docs/data_format.md): optional label columns, their defaults, and the masked losses."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.testing import assert_close

from raymotion.body.joints import NUM_EVAL_JOINTS, NUM_SMPL_JOINTS
from raymotion.config import LossConfig
from raymotion.data.frames import LABELLED_ITEM_LABELS, labelled_item
from raymotion.data.labels import LABEL_SHAPES, OPTIONAL_LABELS, read_labels
from raymotion.losses.supervised import keypoint_3d_loss
from raymotion.train.step import supervised_terms

FRAMES = 2


def _required_columns() -> dict[str, list]:
    """Two frames of the columns every labels file had before partial labels (finite, box inside a 100 px image)."""
    columns: dict[str, list] = {"clip_id": ["c"] * FRAMES, "frame": list(range(FRAMES))}
    for name, shape in LABEL_SHAPES.items():
        if name in OPTIONAL_LABELS:
            continue
        size = int(np.prod([10 if s == -1 else s for s in shape]))
        if name == "joints2d_visible":
            columns[name] = [[True, False] * (NUM_SMPL_JOINTS // 2)] * FRAMES
        elif name == "box_xyxy":
            columns[name] = [[10.0, 20.0, 50.0, 90.0]] * FRAMES
        else:
            columns[name] = [[0.1] * size] * FRAMES
    return columns


def _write(tmp_path, columns: dict[str, list]) -> dict:
    pq.write_table(pa.table(columns), tmp_path / "labels.parquet")
    return {"clip_id": "c", "labels_path": "labels.parquet", "frames": FRAMES, "width": 100, "height": 100}


def test_a_labels_file_without_the_optional_columns_loads_with_what_it_meant(tmp_path):
    row = _write(tmp_path, _required_columns())
    labels, bad = read_labels(tmp_path, row, list(LABEL_SHAPES), bad_input="fail")
    assert bad == {}
    np.testing.assert_array_equal(labels["has_smpl"], [True, True])
    np.testing.assert_array_equal(labels["has_joints3d"], [True, True])
    np.testing.assert_array_equal(labels["campose_valid"], [True, True])
    np.testing.assert_array_equal(labels["joints3d_conf"], np.ones((FRAMES, NUM_SMPL_JOINTS), np.float32))
    assert list(labels["gender"]) == ["neutral", "neutral"]
    # The 2D joint weights are the visibility, as before.
    np.testing.assert_array_equal(labels["joints2d_conf"], labels["joints2d_visible"].astype(np.float32))


def test_partial_label_columns_are_read_as_written(tmp_path):
    columns = _required_columns()
    columns.update({"has_smpl": [True, False], "has_joints3d": [False, True], "campose_valid": [True, False],
                    "gender": ["female", "male"], "joints2d_conf": [[0.5] * NUM_SMPL_JOINTS, [0.25] * NUM_SMPL_JOINTS]})
    row = _write(tmp_path, columns)
    labels, _ = read_labels(tmp_path, row, list(LABEL_SHAPES), bad_input="fail")
    np.testing.assert_array_equal(labels["has_smpl"], [True, False])
    np.testing.assert_array_equal(labels["has_joints3d"], [False, True])
    np.testing.assert_array_equal(labels["campose_valid"], [True, False])
    assert list(labels["gender"]) == ["female", "male"]
    assert labels["joints2d_conf"].shape == (FRAMES, NUM_SMPL_JOINTS)
    np.testing.assert_array_equal(labels["joints2d_conf"][1], np.full(NUM_SMPL_JOINTS, 0.25, np.float32))


def test_an_unknown_gender_is_named_with_the_file_and_frame(tmp_path):
    columns = _required_columns()
    columns["gender"] = ["neutral", "m"]
    row = _write(tmp_path, columns)
    with pytest.raises(ValueError, match=r"labels.parquet frame 1: gender is 'm', not one of neutral, male, female"):
        read_labels(tmp_path, row, ["gender"], bad_input="fail")
    _, bad = read_labels(tmp_path, row, ["gender"], bad_input="skip")
    assert list(bad) == [1]


def test_a_labelled_item_weights_2d_joints_by_confidence_and_carries_the_masks():
    size = 16
    labels = {
        "center": np.array([8.0, 8.0]), "side": np.array(16.0),
        "joints2d": np.full((NUM_SMPL_JOINTS, 2), 8.0), "joints2d_visible": np.arange(NUM_SMPL_JOINTS) % 2 == 0,
        "joints2d_conf": np.full(NUM_SMPL_JOINTS, 0.3, np.float32), "joints3d_conf": np.arange(NUM_SMPL_JOINTS) / 24.0,
        "joints3d_cam": np.zeros((NUM_SMPL_JOINTS, 3)), "eval_joints3d_cam": np.zeros((NUM_EVAL_JOINTS, 3)),
        "pose_cam": np.zeros((NUM_SMPL_JOINTS, 3)), "betas": np.zeros(10),
        "has_smpl": np.array(False), "has_joints3d": np.array(True),
    }
    assert set(LABELLED_ITEM_LABELS) <= set(labels)
    item = labelled_item(np.zeros((size, size, 3), np.uint8), labels, crop_size=size, augmentation=None)
    # Visible joints weigh their confidence, hidden ones 0: 0.3 at even joints.
    np.testing.assert_allclose(item["joints2d_vis"], np.where(np.arange(NUM_SMPL_JOINTS) % 2 == 0, 0.3, 0.0), rtol=1e-6)
    np.testing.assert_allclose(item["joints3d_conf"], np.arange(NUM_SMPL_JOINTS) / 24.0, rtol=1e-6)
    assert item["has_smpl"] == 0.0 and item["has_joints3d"] == 1.0


def test_supervised_terms_use_only_the_labels_each_frame_has():
    """Two frames: frame 0 fully labelled, frame 1 with 2D keypoints only (has_smpl 0, has_joints3d 0) whose
    SMPL and 3D labels are wildly wrong; the terms equal frame 0's alone, by hand."""
    joints = NUM_SMPL_JOINTS
    pred_rot = torch.eye(3).expand(2, joints, 3, 3).clone()
    gt_pose = torch.zeros(2, joints, 3)
    gt_pose[0, 0, 0] = 0.0
    gt_pose[1] = 2.0  # ignored: frame 1 has no SMPL
    pred_rot[0, 1, 0, 0] = 1.3  # frame 0: one entry off by 0.3 -> 0.09 over 24 * 9 entries
    pred_joints = torch.zeros(2, joints, 3)
    gt_joints = torch.zeros(2, joints, 3)
    gt_joints[0, 3, 2] = 0.6  # frame 0: one coordinate off by 0.6 -> 0.36 over 24 * 3 entries
    gt_joints[1] = torch.randn(joints, 3) * 10  # ignored: no 3D joints
    gt_2d = torch.zeros(2, joints, 2)
    gt_2d[:, :, 0] = 0.5  # every joint off by 0.5 in x: squared error 0.25
    conf = torch.zeros(2, joints)
    conf[0, 0] = 1.0
    conf[1, 0] = 0.5
    batch = {"pose_cam": gt_pose, "betas": torch.zeros(2, 10), "joints2d": gt_2d, "joints2d_vis": conf,
             "joints3d": gt_joints, "has_smpl": torch.tensor([1.0, 0.0]), "has_joints3d": torch.tensor([1.0, 0.0]),
             "joints3d_conf": torch.ones(2, joints)}
    params = SimpleNamespace(rotmats_BJ33=pred_rot, betas_BK=torch.zeros(2, 10),
                             cam_B3=torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    pred = SimpleNamespace(params=params, body=SimpleNamespace(joints_BJ3=pred_joints))
    cfg = LossConfig(pose=1.0, betas=1.0, betas_prior=1.0, kp2d=1.0, kp3d=1.0, cam=1.0)
    terms = supervised_terms(pred, batch, cfg)
    assert_close(terms["pose"], torch.tensor(0.09 / (joints * 9)))
    assert_close(terms["betas"], torch.tensor(0.0))
    # Pelvis-centred: joint 3 only moves (the pelvis is joint 0).
    assert_close(terms["kp3d"], torch.tensor(0.36 / (joints * 3)))
    # SPIN's reduction: sum of conf * squared error over all 2 * 24 * 2 entries; only x of joint 0 is weighted.
    assert_close(terms["kp2d"], torch.tensor((1.0 + 0.5) * 0.25 / (2 * joints * 2)))


def test_the_3d_joint_loss_weighs_each_joint_by_its_confidence():
    """SPIN's per-joint 3D confidence: a joint the dataset lacks (conf 0) adds nothing; conf 0.5 halves."""
    joints = NUM_SMPL_JOINTS
    pred = torch.zeros(1, joints, 3)
    gt = torch.zeros(1, joints, 3)
    gt[0, 3, 0] = 1.0  # error 1 at joint 3
    gt[0, 5, 1] = 2.0  # error 4 at joint 5, which the dataset lacks
    conf = torch.ones(1, joints)
    conf[0, 3] = 0.5
    conf[0, 5] = 0.0
    loss = keypoint_3d_loss(pred, gt, torch.ones(1), pelvis_index=0, conf_BJ=conf)
    assert_close(loss, torch.tensor(0.5 / (joints * 3)))

"""Evaluation protocols (eval.protocol; raymotion/eval/protocols.py) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raymotion.body.joints import EVAL_JOINT, NUM_EVAL_JOINTS, NUM_SMPL_JOINTS, SMPL_JOINT
from raymotion.eval.evaluate import score, score_protocol
from raymotion.eval.protocols import PROTOCOLS, VIBE_LIMB_JOINTS, chunk_rows, keypoints_valid

VERTS = 5


def _skeleton() -> torch.Tensor:
    """(14, 3) a fixed skeleton with its hips at x = -0.1 and 0.1 (mid-hips at the origin)."""
    joints = torch.linspace(-0.5, 0.5, NUM_EVAL_JOINTS * 3, dtype=torch.float64).reshape(NUM_EVAL_JOINTS, 3)
    joints[EVAL_JOINT["left_hip"]] = torch.tensor([0.1, 0.0, 0.0])
    joints[EVAL_JOINT["right_hip"]] = torch.tensor([-0.1, 0.0, 0.0])
    return joints


def _arrays(num: int) -> tuple[dict, dict]:
    """Prediction = truth = the fixed skeleton in every frame; a toy mesh at the origin."""
    joints = _skeleton().expand(num, -1, -1).clone()
    verts = torch.zeros(num, VERTS, 3, dtype=torch.float64)
    pred = {"eval_joints_NE3": joints.clone(), "verts_NV3": verts.clone()}
    truth = {"eval_joints_NE3": joints.clone(), "verts_NV3": verts.clone(), "verts_pelvis_N3": torch.zeros(num, 3,
             dtype=torch.float64), "body_eval_joints_NE3": joints.clone()}
    return pred, truth


def _labels(num: int, *, campose_valid=None, conf=1.0) -> dict[str, np.ndarray]:
    return {"campose_valid": np.ones(num, bool) if campose_valid is None else np.asarray(campose_valid),
            "joints2d_conf": np.full((num, NUM_SMPL_JOINTS), conf, np.float32),
            "joints2d_visible": np.ones((num, NUM_SMPL_JOINTS), bool), "has_joints3d": np.ones(num, bool)}


def test_the_vibe_frame_rule_counts_the_12_limb_keypoints_above_0_3():
    assert sorted(VIBE_LIMB_JOINTS) == sorted(SMPL_JOINT[f"{side}_{part}"] for side in ("left", "right")
                                             for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))
    conf = np.zeros((3, NUM_SMPL_JOINTS))
    conf[:, SMPL_JOINT["head"]] = 1.0  # not a limb joint: never counted
    conf[0, list(VIBE_LIMB_JOINTS[:7])] = 0.31  # 7 > 6: scored
    conf[1, list(VIBE_LIMB_JOINTS[:6])] = 0.9  # 6: not scored
    conf[2, list(VIBE_LIMB_JOINTS)] = 0.3  # at the threshold: not detected
    np.testing.assert_array_equal(keypoints_valid(conf), [True, False, False])


def test_chunks_are_whole_non_overlapping_runs_of_16_kept_frames_per_clip():
    clip = np.array([0] * 40 + [1] * 10)
    frame = np.concatenate([np.arange(40)[::-1], np.arange(10)])  # rows out of frame order
    keep = np.ones(50, bool)
    keep[[39 - 3]] = False  # clip 0's frame 3 is not scored: its chunks are the next kept frames
    chunks = chunk_rows(clip, frame, keep)
    assert len(chunks) == 2  # clip 0: 39 kept -> 2 chunks (7 left out); clip 1: 10 < 16 -> none
    assert [frame[c].tolist() for c in chunks] == [[0, 1, 2, *range(4, 17)], list(range(17, 33))]


def test_spin_scores_campose_valid_frames_without_pve_or_acceleration():
    pred, truth = _arrays(3)
    # Right ankle 14 mm off in frame 0, 28 mm in frame 2; frame 1 wildly off but not campose_valid.
    pred["eval_joints_NE3"][0, EVAL_JOINT["right_ankle"], 0] += 0.014
    pred["eval_joints_NE3"][1] += torch.randn(NUM_EVAL_JOINTS, 3, dtype=torch.float64)
    pred["eval_joints_NE3"][2, EVAL_JOINT["right_ankle"], 0] += 0.028
    clip, frame = np.zeros(3, np.int64), np.arange(3)
    metrics = score_protocol(pred, truth, clip, frame, _labels(3, campose_valid=[True, False, True]), protocol="spin")
    assert metrics["mpjpe_mm"] == pytest.approx((14 / 14 + 28 / 14) / 2)
    assert metrics["num_frames"] == 2
    assert math.isnan(metrics["pve_mm"]) and math.isnan(metrics["accel_error_mm"])


def test_vibe_scores_against_the_neutral_body_on_16_frame_chunks():
    num = 18  # one chunk of 16; 2 frames left out
    pred, truth = _arrays(num)
    # The labels' (gendered) joints differ from the neutral body's; the prediction matches the neutral body.
    truth["eval_joints_NE3"][:, EVAL_JOINT["neck"], 0] += 0.05
    # Right wrist accelerates: x = 0.001 t^2 m, a second difference of 2 mm/frame^2 at one joint of 14.
    t = torch.arange(num, dtype=torch.float64)
    pred["eval_joints_NE3"][:, EVAL_JOINT["right_wrist"], 0] += 0.001 * t**2
    truth["body_eval_joints_NE3"][:, EVAL_JOINT["right_wrist"], 0] += 0.001 * t**2
    truth["eval_joints_NE3"][:, EVAL_JOINT["right_wrist"], 0] += 0.001 * t**2
    clip, frame = np.zeros(num, np.int64), np.arange(num)
    metrics = score_protocol(pred, truth, clip, frame, _labels(num), protocol="vibe")
    assert metrics["num_frames"] == 16
    assert metrics["mpjpe_mm"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["accel_error_mm"] == pytest.approx(0.0, abs=1e-9)
    # Against the labels' joints instead ('synthetic'): the neck's 50 mm shows (50 / 14 per frame).
    assert score(pred, truth, clip, frame)["mpjpe_mm"] == pytest.approx(50 / 14)
    # Acceleration error by hand: the truth does not accelerate, the prediction does at 1 joint of 14.
    truth["body_eval_joints_NE3"][:, EVAL_JOINT["right_wrist"], 0] -= 0.001 * t**2
    metrics = score_protocol(pred, truth, clip, frame, _labels(num), protocol="vibe")
    assert metrics["accel_error_mm"] == pytest.approx(2.0 / 14)


def test_a_protocol_that_scores_no_frame_says_so():
    pred, truth = _arrays(4)
    with pytest.raises(ValueError, match=r"eval.protocol=vibe: none of the 4 frames passes its frame rule"):
        score_protocol(pred, truth, np.zeros(4, np.int64), np.arange(4), _labels(4, conf=0.1), protocol="vibe")


def test_every_protocol_records_how_it_scored():
    for name, protocol in PROTOCOLS.items():
        record = protocol.record()
        assert record["name"] == name and record["accel_units"] == "mm/frame^2" and "mid-hips" in record["root"]
    assert (PROTOCOLS["spin"].ground_truth, PROTOCOLS["vibe"].ground_truth) == ("labels", "neutral")


@pytest.mark.render
def test_evaluate_scores_a_split_under_each_protocol(tiny_benchmark):
    from raymotion.body.body_model import load_body_model
    from raymotion.config import BodyConfig
    from raymotion.data.frames import LabelledFrames
    from raymotion.eval.evaluate import MeanPoseBaseline, evaluate
    from raymotion.models.regressor import MeanParams

    frames = LabelledFrames(tiny_benchmark, split="test", crop_size=32, bbox_scale=1.3)
    body = load_body_model(BodyConfig(model="anny_lowres"))
    rot6d = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]).repeat(NUM_SMPL_JOINTS, 1)
    model = MeanPoseBaseline(MeanParams(rot6d_J6=rot6d, betas_K=torch.zeros(10), cam_3=torch.tensor([0.9, 0.0, 0.0])))
    synthetic = evaluate(model, body, frames)
    # The benchmark's labels have no campose_valid column: every frame is valid, so SPIN's frames are all frames.
    spin = evaluate(model, body, frames, protocol="spin")
    assert spin["mpjpe_mm"] == pytest.approx(synthetic["mpjpe_mm"]) and math.isnan(spin["pve_mm"])
    assert spin["num_frames"] == synthetic["num_frames"] == len(frames)
    # VIBE's chunks need 16 valid frames of a clip; the tiny benchmark's test clips have 4.
    with pytest.raises(ValueError, match="eval.protocol=vibe: none of the"):
        evaluate(model, body, frames, protocol="vibe")


def test_spin_refuses_frames_without_3d_joint_labels():
    pred, truth = _arrays(2)
    labels = {**_labels(2), "has_joints3d": np.array([True, False])}
    with pytest.raises(ValueError, match=r"eval.protocol=spin scores against the labels' 3D joints, but 1 of its "
                                         r"frames have none.*eval.protocol=vibe"):
        score_protocol(pred, truth, np.zeros(2, np.int64), np.arange(2), labels, protocol="spin")

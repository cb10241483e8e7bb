"""Procedural motion families: shapes, determinism, speed bound, joint limits and per-family kinematics.

Legend: T frames, J = 24 SMPL joints; poses are (T, J, 3) axis-angle in radians.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raymotion.body.joints import NUM_SMPL_JOINTS, SMPL_JOINT, SMPL_JOINT_NAMES
from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle
from raymotion.synth.motions import (
    JOINT_LIMITS_DEG,
    MAX_JOINT_SPEED_DEG_S,
    MOTION_FAMILIES,
    NOMINAL_LEG_M,
    clamp_to_limits,
    motion_clip,
    sample_motion_params,
    turn_duration_s,
)

FPS = 30.0
NUM_FRAMES = 90  # 3 s
SEEDS = range(6)
SPEED_SEEDS = range(25)
EMBEDDED_LOWRES_BODY = Path(__file__).resolve().parent.parent / "raymotion" / "assets" / "anny_smpl_lowres.npz"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tensors here are tiny: thread start-up dominates (10-40x slower with 2 threads on a busy CPU)."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _clip(family: str, seed: int, num_frames: int = NUM_FRAMES, **overrides):
    params = sample_motion_params(family, np.random.default_rng(seed))
    params.update(overrides)
    return params, motion_clip(family, params, num_frames=num_frames, fps=FPS)


def _rotmats(pose_TJ3: np.ndarray) -> torch.Tensor:
    return axis_angle_to_rotmat(torch.from_numpy(pose_TJ3).double())


def _yaw_deg_T(root_T33: torch.Tensor) -> np.ndarray:
    """Unwrapped yaw (about +y) of root rotations that are pure yaws, degrees."""
    return np.degrees(np.unwrap(torch.atan2(root_T33[:, 0, 2], root_T33[:, 2, 2]).numpy()))


@pytest.mark.parametrize("family", MOTION_FAMILIES)
def test_every_family_gives_finite_float32_poses_and_root_path(family):
    _, clip = _clip(family, seed=0)
    assert clip.family == family
    assert clip.pose_T243.shape == (NUM_FRAMES, NUM_SMPL_JOINTS, 3)
    assert clip.root_transl_T3.shape == (NUM_FRAMES, 3)
    assert clip.pose_T243.dtype == np.float32 and clip.root_transl_T3.dtype == np.float32
    assert np.isfinite(clip.pose_T243).all() and np.isfinite(clip.root_transl_T3).all()


@pytest.mark.parametrize("family", MOTION_FAMILIES)
def test_same_seed_gives_same_params_and_clip_whatever_the_global_rng(family):
    np.random.seed(1)
    params_a, clip_a = _clip(family, seed=7)
    np.random.seed(2)
    params_b, clip_b = _clip(family, seed=7)
    assert params_a == params_b
    json.dumps(params_a)  # plain values: the writer can store them
    np.testing.assert_array_equal(clip_a.pose_T243, clip_b.pose_T243)
    np.testing.assert_array_equal(clip_a.root_transl_T3, clip_b.root_transl_T3)
    params_c, _ = _clip(family, seed=8)
    assert params_c != params_a


@pytest.mark.parametrize("family", MOTION_FAMILIES)
def test_longer_clip_starts_with_the_shorter_one(family):
    _, short = _clip(family, seed=3, num_frames=20)
    _, long = _clip(family, seed=3, num_frames=70)
    np.testing.assert_allclose(long.pose_T243[:20], short.pose_T243, atol=1e-6)
    np.testing.assert_allclose(long.root_transl_T3[:20], short.root_transl_T3, atol=1e-6)


@pytest.mark.parametrize("family", MOTION_FAMILIES)
def test_no_joint_turns_faster_than_the_speed_bound_at_30_fps(family):
    max_step_deg = MAX_JOINT_SPEED_DEG_S / FPS  # 10 deg per frame
    for seed in SPEED_SEEDS:
        _, clip = _clip(family, seed)
        rotmats_TJ33 = _rotmats(clip.pose_T243)
        step_TJ33 = rotmats_TJ33[:-1].transpose(-1, -2) @ rotmats_TJ33[1:]
        step_deg_TJ = np.degrees(rotmat_to_axis_angle(step_TJ33).norm(dim=-1).numpy())
        worst = np.unravel_index(step_deg_TJ.argmax(), step_deg_TJ.shape)
        assert step_deg_TJ.max() < max_step_deg, (
            f"{family} seed {seed}: {SMPL_JOINT_NAMES[worst[1]]} turned {step_deg_TJ.max():.2f} deg in one frame"
        )


def test_joint_limit_table_covers_every_body_joint_and_contains_the_rest_pose():
    assert set(JOINT_LIMITS_DEG) == set(SMPL_JOINT_NAMES[1:])
    for name, limits in JOINT_LIMITS_DEG.items():
        assert len(limits) == 3
        for lo, hi in limits:
            assert lo <= 0.0 <= hi, name
    for side in ("left", "right"):  # knees flex one way only
        assert JOINT_LIMITS_DEG[f"{side}_knee"][0][0] == 0.0
    (lx, ly, lz), (rx, ry, rz) = JOINT_LIMITS_DEG["left_shoulder"], JOINT_LIMITS_DEG["right_shoulder"]
    assert rx == lx and ry == (-ly[1], -ly[0]) and rz == (-lz[1], -lz[0])


def test_clamp_to_limits_clips_body_joints_and_leaves_the_root():
    pose_TJ3 = np.full((2, NUM_SMPL_JOINTS, 3), 3.0, dtype=np.float32)
    clamped = clamp_to_limits(pose_TJ3)
    assert clamped.dtype == np.float32
    np.testing.assert_array_equal(clamped[:, 0], pose_TJ3[:, 0])
    knee = SMPL_JOINT["left_knee"]
    np.testing.assert_allclose(np.degrees(clamped[:, knee, 0]), JOINT_LIMITS_DEG["left_knee"][0][1], rtol=1e-6)
    np.testing.assert_allclose(np.degrees(clamp_to_limits(-pose_TJ3)[:, knee, 0]), 0.0, atol=1e-6)


def test_spline_poses_respect_the_joint_limits():
    lo_J3 = np.array([[lo for lo, _ in JOINT_LIMITS_DEG[n]] for n in SMPL_JOINT_NAMES[1:]])
    hi_J3 = np.array([[hi for _, hi in JOINT_LIMITS_DEG[n]] for n in SMPL_JOINT_NAMES[1:]])
    tolerance_deg = 1e-3
    for seed in range(10):
        _, clip = _clip("spline", seed, num_frames=150)
        body_TJ3 = np.degrees(clip.pose_T243[:, 1:])
        assert (body_TJ3 >= lo_J3 - tolerance_deg).all() and (body_TJ3 <= hi_J3 + tolerance_deg).all()
        assert np.ptp(body_TJ3, axis=0).max() > 10.0  # it does move


def test_walk_moves_forward_along_its_heading():
    for seed in SEEDS:
        params, clip = _clip("walk", seed, turn_rate_deg_s=0.0)
        displacement_3 = clip.root_transl_T3[-1] - clip.root_transl_T3[0]
        heading = math.radians(params["heading_deg"])
        along = displacement_3[0] * math.sin(heading) + displacement_3[2] * math.cos(heading)
        across = displacement_3[0] * math.cos(heading) - displacement_3[2] * math.sin(heading)
        duration_s = (NUM_FRAMES - 1) / FPS
        assert 0.9 * duration_s < along < 1.8 * duration_s  # 0.9-1.8 m/s
        assert abs(across) < 1e-3
        # The body faces where it walks: the root's mean yaw is the heading.
        yaw_T = _yaw_deg_T(_rotmats(clip.pose_T243[:, 0]))
        assert abs((yaw_T.mean() - params["heading_deg"] + 180.0) % 360.0 - 180.0) < 3.0


def test_walk_on_an_arc_turns_its_heading():
    params, clip = _clip("walk", seed=0, turn_rate_deg_s=20.0)
    yaw_T = _yaw_deg_T(_rotmats(clip.pose_T243[:, 0]))
    assert yaw_T[-1] - yaw_T[0] == pytest.approx(20.0 * (NUM_FRAMES - 1) / FPS, abs=15.0)  # +- pelvis twist


@pytest.mark.parametrize("family", ["walk", "run"])
def test_gait_legs_alternate_and_arms_swing_against_them(family):
    """Hips in anti-phase; each arm swings forward while the leg on its side swings back."""
    _, clip = _clip(family, seed=0)
    rotmats_TJ33 = _rotmats(clip.pose_T243)
    leg_down_3 = torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
    arm_out_3 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)

    def forward_z(joint: str, bone_3: torch.Tensor) -> np.ndarray:
        return (rotmats_TJ33[:, SMPL_JOINT[joint]] @ bone_3)[:, 2].numpy()

    left_leg, right_leg = forward_z("left_hip", leg_down_3), forward_z("right_hip", leg_down_3)
    left_arm = forward_z("left_shoulder", arm_out_3)
    assert np.corrcoef(left_leg, right_leg)[0, 1] < -0.95
    assert np.corrcoef(left_leg, left_arm)[0, 1] < -0.9
    knee_T = np.degrees(clip.pose_T243[:, SMPL_JOINT["left_knee"], 0])
    assert knee_T.min() >= 0.0 and np.ptp(knee_T) > 30.0  # the knee bends in swing


def test_run_has_a_faster_cadence_and_speed_than_walk():
    for seed in SEEDS:
        walk_params, walk = _clip("walk", seed, turn_rate_deg_s=0.0)
        run_params, run = _clip("run", seed, turn_rate_deg_s=0.0)
        assert 0.9 <= walk_params["frequency_hz"] <= 1.1 < 1.3 <= run_params["frequency_hz"] <= 1.6
        assert np.linalg.norm(run.root_transl_T3[-1] - run.root_transl_T3[0]) > np.linalg.norm(
            walk.root_transl_T3[-1] - walk.root_transl_T3[0]
        )


def test_squat_lowers_the_root_and_keeps_it_over_the_feet():
    for seed in SEEDS:
        params, clip = _clip("squat", seed, num_frames=150)  # 5 s: at least one whole squat
        height_T = clip.root_transl_T3[:, 1]
        assert height_T.max() - height_T.min() == pytest.approx(params["drop_m"], rel=1e-3)
        horizontal_m = np.linalg.norm(clip.root_transl_T3[:, [0, 2]], axis=1).max()
        assert horizontal_m == pytest.approx(params["hip_back_ratio"] * params["drop_m"], rel=1e-3)
        knee_T = np.degrees(clip.pose_T243[:, SMPL_JOINT["left_knee"]])
        assert np.ptp(np.linalg.norm(knee_T, axis=1)) > 30.0


def test_turn_changes_yaw_by_the_sampled_amount():
    for seed in SEEDS:
        params = sample_motion_params("turn", np.random.default_rng(seed))
        num_frames = int(math.ceil(turn_duration_s(params) * FPS)) + 10
        clip = motion_clip("turn", params, num_frames=num_frames, fps=FPS)
        yaw_T = _yaw_deg_T(_rotmats(clip.pose_T243[:, 0]))
        assert yaw_T[0] == pytest.approx((params["heading_deg"] + 180.0) % 360.0 - 180.0, abs=1e-3)
        assert yaw_T[-1] - yaw_T[0] == pytest.approx(params["yaw_change_deg"], abs=1e-2)
        assert np.abs(clip.root_transl_T3[:, [0, 2]]).max() == 0.0  # on the spot


def test_jumping_jacks_abduct_both_arms_and_legs_symmetrically():
    mirror_3 = np.array([1.0, -1.0, -1.0], dtype=np.float32)  # x -> -x keeps x, negates y and z
    for seed in SEEDS:
        params, clip = _clip("jumping_jacks", seed)
        for joint in ("shoulder", "elbow", "hip"):
            left_T3 = clip.pose_T243[:, SMPL_JOINT[f"left_{joint}"]]
            right_T3 = clip.pose_T243[:, SMPL_JOINT[f"right_{joint}"]]
            np.testing.assert_allclose(left_T3, right_T3 * mirror_3, atol=1e-6)
        arm_raise_deg_T = np.degrees(clip.pose_T243[:, SMPL_JOINT["left_shoulder"], 2])
        hip_abduct_deg_T = np.degrees(clip.pose_T243[:, SMPL_JOINT["left_hip"], 2])
        assert np.ptp(arm_raise_deg_T) > 0.9 * params["arm_raise_deg"]
        # Arms and legs open together.
        assert np.corrcoef(arm_raise_deg_T, hip_abduct_deg_T)[0, 1] > 0.99


def test_wave_oscillates_the_forearm_of_one_arm():
    params, clip = _clip("wave", seed=0)
    side, other = ("left", "right") if params["arm"] == "left" else ("right", "left")
    elbow_deg_T = np.degrees(np.linalg.norm(clip.pose_T243[:, SMPL_JOINT[f"{side}_elbow"]], axis=1))
    assert np.ptp(elbow_deg_T) == pytest.approx(2.0 * params["wave_amplitude_deg"], rel=0.1)
    assert np.ptp(clip.pose_T243[:, SMPL_JOINT[f"{other}_elbow"]]) == 0.0


def test_arm_raise_lifts_the_chosen_arms():
    for arms in ("left", "right", "both"):
        _, clip = _clip("arm_raise", seed=0, arms=arms, num_frames=150)
        moved = {
            side: np.ptp(clip.pose_T243[:, SMPL_JOINT[f"{side}_shoulder"]], axis=0).max() > math.radians(45.0)
            for side in ("left", "right")
        }
        assert moved == {"left": arms != "right", "right": arms != "left"}


def test_unknown_family_raises_and_lists_the_families():
    with pytest.raises(ValueError, match="jumping_jacks"):
        sample_motion_params("moonwalk", np.random.default_rng(0))
    with pytest.raises(ValueError, match="spline"):
        motion_clip("moonwalk", {}, num_frames=3, fps=FPS)


def test_standing_root_stays_near_the_rest_height():
    """The root path keeps the nominal ankles on the ground: it never rises above the rest pose's height
    (except in flight) and never sinks by more than a leg length."""
    for family in ("walk", "arm_raise", "wave", "turn", "spline"):
        _, clip = _clip(family, seed=0)
        height_T = clip.root_transl_T3[:, 1]
        assert height_T.max() <= 1e-6 and height_T.min() > -0.5 * NOMINAL_LEG_M


@pytest.mark.parametrize("family", ["walk", "squat"])
def test_feet_stay_below_the_pelvis_on_the_embedded_body(family):
    if not EMBEDDED_LOWRES_BODY.is_file():
        pytest.skip(f"{EMBEDDED_LOWRES_BODY} is not baked yet")
    from raymotion.body.body_model import BodyModel

    body = BodyModel.from_file(EMBEDDED_LOWRES_BODY)
    _, clip = _clip(family, seed=0, num_frames=60)
    rotmats_TJ33 = axis_angle_to_rotmat(torch.from_numpy(clip.pose_T243))
    with torch.no_grad():
        out = body(rotmats_BJ33=rotmats_TJ33, betas_BK=torch.zeros(len(rotmats_TJ33), body.num_betas))
    joints_TJ3 = out.joints_BJ3.numpy() + clip.root_transl_T3[:, None]
    pelvis_y_T = joints_TJ3[:, SMPL_JOINT["pelvis"], 1]
    for foot in ("left_ankle", "right_ankle", "left_foot", "right_foot"):
        assert (joints_TJ3[:, SMPL_JOINT[foot], 1] < pelvis_y_T - 0.2).all(), foot

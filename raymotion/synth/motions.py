"""Procedural motions in SMPL axis-angle: eight families with randomised parameters per clip.

No free motion capture exists for the embedded body, so every motion is a closed-form function of time.

Legend: T = frames, J = 24 SMPL joints (``raymotion.body.joints.SMPL_JOINT_NAMES``), root first, K = spline
keyframes. Poses are (T, J, 3) axis-angle in radians (the root entry is the global orientation); ``_T33``
arrays hold one 3x3 rotation per frame (numpy float64 while building). Frame: SMPL's (y up, the body faces
+z, the subject's left is +x), metres, seconds.
Sign conventions used by the helpers below (left side; the right side is the mirror image, x -> -x):
- about +x by a negative angle swings a hanging limb forward (hip flexion); knees flex about +x;
  a positive x rotation at the root or spine leans the trunk forward; at the ankle it points the toes down;
- about +z by a negative angle lowers the left arm from the T-pose; by a positive one abducts the left leg;
- about +y by a positive angle turns the left toes outwards; at the left elbow a negative one flexes it.

Speeds. At 30 fps the flow estimators track about 1 px of motion per frame pair at a 224 px crop and all
fail at 3.5 px (FACTS.md, second probe), so every family is tuned to natural but unhurried speeds: the
rotation of any joint between two frames stays below ``MAX_JOINT_SPEED_DEG_S`` (300 deg/s, i.e. 10 deg per
frame at 30 fps; tests/test_motions.py checks it for every family). That covers walking and jogging
(peak knee speed of a walk ~350 deg/s) but not sprinting or a gym-pace jumping jack (~1,000 deg/s), whose
ranges are slowed down on purpose (see the per-family tables). The root path is not bounded by this:
walking moves the root 3-6 cm per frame, jogging 6-12 cm; the person crop should follow the root.
Measured over 100 clips per family at 30 fps (peak joint rotation per frame, deg; mean per-frame motion of
the 24 joints relative to the pelvis, px, for a 1.7 m body filling 85 % of a 224 px crop; hands and feet
move more than the mesh on average): walk 8.7 / 1.7, run 9.0 / 2.4, arm_raise 7.5 / 0.4, wave 8.0 / 0.2,
squat 6.2 / 0.7, jumping_jacks 9.3 / 1.0, turn 7.0 / 0.5, spline 5.2 / 0.9. Sampling a clip with a frame
stride multiplies these.

Feet on the ground. The vertical root path puts the lowest ankle of a nominal adult leg
(``NOMINAL_*`` below) at its rest height; the squat plants both ankles by inverse kinematics of that leg.
For other body shapes the feet stay roughly, not exactly, on the ground (errors of a few centimetres).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from raymotion.body.joints import NUM_SMPL_JOINTS, SMPL_JOINT, SMPL_JOINT_NAMES
from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle

MOTION_FAMILIES: tuple[str, ...] = (
    "walk",
    "run",
    "arm_raise",
    "wave",
    "squat",
    "jumping_jacks",
    "turn",
    "spline",
)

# The bound on any joint's rotation speed (including the root's), deg/s; 10 deg per frame at 30 fps.
MAX_JOINT_SPEED_DEG_S = 300.0

# A nominal adult leg (the SMPL mean body's joint offsets, rounded): pelvis joint -> hip joint, and
# segment lengths. Used only to keep the feet near the ground; betas change them by a few centimetres.
NOMINAL_HIP_OFFSET_M = (0.06, -0.09, 0.0)  # left hip; the right one mirrors x
NOMINAL_THIGH_M = 0.39  # hip -> knee
NOMINAL_SHIN_M = 0.42  # knee -> ankle
NOMINAL_LEG_M = NOMINAL_THIGH_M + NOMINAL_SHIN_M


@dataclass(frozen=True)
class MotionClip:
    """One procedural clip.

    pose_T243: (T, 24, 3) float32 axis-angle, radians; the root (index 0) is the global orientation in the
        body/world frame (y up).
    root_transl_T3: (T, 3) float32 translation of the body, metres, body/world frame (y up): x, z are the
        root's horizontal path (walk and run start at 0; a squat moves back over the feet; the others stay
        at 0), y keeps the lowest (nominal) ankle at its rest-pose height (0 when standing straight).
    family: the motion family (one of ``MOTION_FAMILIES``), the clip's ``motion`` label.
    """

    pose_T243: np.ndarray
    root_transl_T3: np.ndarray
    family: str


# ---- Joint limits ----------------------------------------------------------------------------------

# Plausible ranges of each body joint's axis-angle components, degrees, as (min, max) per x, y, z, in the
# joint's parent frame at the T-pose (the limits of the left side; the right side mirrors them). Sources:
# textbook ranges of motion (e.g. AAOS), shared out along SMPL's chains (three spine joints, neck + head).
_LEFT_AND_CENTRE_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    # x: flexion forward is negative (120 deg) / extension 30; y: inward/outward rotation; z: abduction > 0.
    "left_hip": ((-120.0, 30.0), (-40.0, 40.0), (-30.0, 50.0)),
    # The knee flexes one way only (x >= 0) and barely twists.
    "left_knee": ((0.0, 145.0), (-10.0, 10.0), (-5.0, 5.0)),
    # x: dorsiflexion 30 (toes up, negative) / plantarflexion 50; z: inversion / eversion.
    "left_ankle": ((-30.0, 50.0), (-20.0, 20.0), (-25.0, 25.0)),
    # Toes: extension (up, negative) 45, flexion 20.
    "left_foot": ((-45.0, 20.0), (-5.0, 5.0), (-5.0, 5.0)),
    # Each of three spine joints: x forward flexion 30 / extension 15; y axial turn; z side bend.
    "spine1": ((-15.0, 30.0), (-20.0, 20.0), (-15.0, 15.0)),
    "spine2": ((-15.0, 30.0), (-20.0, 20.0), (-15.0, 15.0)),
    "spine3": ((-15.0, 30.0), (-20.0, 20.0), (-15.0, 15.0)),
    "neck": ((-30.0, 40.0), (-40.0, 40.0), (-25.0, 25.0)),
    "head": ((-30.0, 30.0), (-40.0, 40.0), (-20.0, 20.0)),
    # Clavicle: y protraction (forward, negative) 25 / retraction 10; z elevation (shrug) 30 / depression 10.
    "left_collar": ((-10.0, 10.0), (-25.0, 10.0), (-10.0, 30.0)),
    # The T-pose arm lies along +x: x twists it about its length; y swings it forward (negative, 110) or
    # back 40; z lowers it (negative, 90 = straight down) or raises it overhead.
    "left_shoulder": ((-90.0, 90.0), (-110.0, 40.0), (-90.0, 90.0)),
    # The elbow is a hinge about y (flexion negative on the left); x: a little forearm twist.
    "left_elbow": ((-20.0, 20.0), (-145.0, 0.0), (-5.0, 5.0)),
    # x: forearm pronation/supination share; y: radial/ulnar deviation; z: flexion/extension (palm down).
    "left_wrist": ((-60.0, 60.0), (-25.0, 25.0), (-70.0, 70.0)),
    "left_hand": ((-20.0, 20.0), (-20.0, 20.0), (-40.0, 20.0)),
}


def _mirror_limits(limits_xyz: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    """Limits of the right-side joint: mirroring x -> -x keeps the x component and negates y and z."""
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = limits_xyz
    return ((x_lo, x_hi), (-y_hi, -y_lo), (-z_hi, -z_lo))


# Every body joint (all of SMPL's joints but the root, whose global orientation is unconstrained).
JOINT_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {
    name: (
        _LEFT_AND_CENTRE_LIMITS_DEG[name]
        if name in _LEFT_AND_CENTRE_LIMITS_DEG
        else _mirror_limits(_LEFT_AND_CENTRE_LIMITS_DEG["left_" + name.removeprefix("right_")])
    )
    for name in SMPL_JOINT_NAMES[1:]
}

# (24, 3) lower and upper bounds in radians; the root row is unbounded.
_LIMITS_LO_J3 = np.full((NUM_SMPL_JOINTS, 3), -np.inf)
_LIMITS_HI_J3 = np.full((NUM_SMPL_JOINTS, 3), np.inf)
for _name, _limits in JOINT_LIMITS_DEG.items():
    _LIMITS_LO_J3[SMPL_JOINT[_name]] = np.radians([lo for lo, _ in _limits])
    _LIMITS_HI_J3[SMPL_JOINT[_name]] = np.radians([hi for _, hi in _limits])


def clamp_to_limits(pose_TJ3: np.ndarray) -> np.ndarray:
    """Clip each body joint's axis-angle components to ``JOINT_LIMITS_DEG``; the root is left alone.

    An approximation: a box on the three axis-angle components is not an anatomical joint cone, but for the
    moderate angles used here each component is close to the rotation about that axis.

    Args:
        pose_TJ3: (..., 24, 3) axis-angle, radians.

    Returns:
        (..., 24, 3) the clipped pose, same dtype.
    """
    return np.clip(pose_TJ3, _LIMITS_LO_J3, _LIMITS_HI_J3).astype(pose_TJ3.dtype)


# ---- Rotation helpers (all angles in degrees, one per frame) ------------------------------------------


def _rot_T(axis: str, angle_deg_T: np.ndarray) -> np.ndarray:
    """(T, 3, 3) float64 rotations about a coordinate axis by (T,) angles in degrees."""
    angle_T = np.radians(angle_deg_T)
    cos_T, sin_T = np.cos(angle_T), np.sin(angle_T)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]  # the plane it turns, in right-hand order
    rot_T33 = np.zeros((len(angle_T), 3, 3))
    rot_T33[:, "xyz".index(axis), "xyz".index(axis)] = 1.0
    rot_T33[:, i, i], rot_T33[:, i, j] = cos_T, -sin_T
    rot_T33[:, j, i], rot_T33[:, j, j] = sin_T, cos_T
    return rot_T33


# Reflecting x -> -x maps a rotation R to S R S with S = diag(-1, 1, 1): entry (i, j) times s_i s_j.
_MIRROR_SIGNS_33 = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])


def _mirror(rot_T33: np.ndarray) -> np.ndarray:
    """The left-side rotation ``rot_T33`` reflected to the right side (x -> -x)."""
    return rot_T33 * _MIRROR_SIGNS_33


def _leg(flex_deg_T: np.ndarray, abduct_deg_T: np.ndarray, toe_out_deg_T: np.ndarray) -> np.ndarray:
    """Left hip: turn the toes out, abduct sideways, then flex forward (positive = forward)."""
    return _rot_T("x", -flex_deg_T) @ _rot_T("z", abduct_deg_T) @ _rot_T("y", toe_out_deg_T)


def _hanging_arm(down_deg_T: np.ndarray, swing_deg_T: np.ndarray) -> np.ndarray:
    """Left shoulder: lower the arm from the T-pose by ``down``, then swing it forward (positive)."""
    return _rot_T("x", -swing_deg_T) @ _rot_T("z", -down_deg_T)


def _elbow(flex_deg_T: np.ndarray) -> np.ndarray:
    """Left elbow: hinge flexion (positive), the forearm moving forward from the T-pose."""
    return _rot_T("y", -flex_deg_T)


def _set_pair(rot: dict[str, np.ndarray], joint: str, left_T33: np.ndarray, right_as_left_T33: np.ndarray) -> None:
    """Set ``left_<joint>`` and ``right_<joint>``; the right one is given as its left-side mirror image."""
    rot["left_" + joint] = left_T33
    rot["right_" + joint] = _mirror(right_as_left_T33)


def _rotmats_from(rot: dict[str, np.ndarray], num_frames: int) -> np.ndarray:
    """(T, 24, 3, 3) joint rotations: ``rot``'s entries by joint name, identity elsewhere."""
    rotmats_TJ33 = np.tile(np.eye(3), (num_frames, NUM_SMPL_JOINTS, 1, 1))
    for name, rot_T33 in rot.items():
        rotmats_TJ33[:, SMPL_JOINT[name]] = rot_T33
    return rotmats_TJ33


def _nominal_hip_offset(sign: float) -> np.ndarray:
    """(3,) pelvis joint -> hip joint of the nominal leg, metres: sign +1 for the left hip, -1 for the right."""
    return np.array(NOMINAL_HIP_OFFSET_M) * np.array([sign, 1.0, 1.0])


def _nominal_ankles_T23(rotmats_TJ33: np.ndarray) -> np.ndarray:
    """(T, 2, 3) left and right ankle positions relative to the root joint for the nominal leg, metres.

    The root rotation is included, so the positions are in the body/world frame.
    """
    ankles = []
    for side, sign in (("left", 1.0), ("right", -1.0)):
        hip_offset_3 = _nominal_hip_offset(sign)
        thigh_3 = np.array([0.0, -NOMINAL_THIGH_M, 0.0])
        shin_3 = np.array([0.0, -NOMINAL_SHIN_M, 0.0])
        hip_T33 = rotmats_TJ33[:, SMPL_JOINT[f"{side}_hip"]]
        knee_T33 = rotmats_TJ33[:, SMPL_JOINT[f"{side}_knee"]]
        knee_to_ankle_T3 = knee_T33 @ shin_3
        hip_to_ankle_T3 = np.einsum("tij,tj->ti", hip_T33, thigh_3 + knee_to_ankle_T3)
        ankles.append(np.einsum("tij,tj->ti", rotmats_TJ33[:, 0], hip_offset_3 + hip_to_ankle_T3))
    return np.stack(ankles, axis=1)


def _ground_height_T(rotmats_TJ33: np.ndarray) -> np.ndarray:
    """(T,) root height, metres, that keeps the lowest nominal ankle at its rest-pose height."""
    rest_ankle_y = NOMINAL_HIP_OFFSET_M[1] - NOMINAL_LEG_M
    return rest_ankle_y - _nominal_ankles_T23(rotmats_TJ33)[:, :, 1].min(axis=1)


def _raised_cosine(theta_T: np.ndarray) -> np.ndarray:
    """0 at theta = 0, 1 at theta = pi: a smooth 0 -> 1 -> 0 cycle."""
    return 0.5 * (1.0 - np.cos(theta_T))


def _bump(theta_T: np.ndarray, peak: float) -> np.ndarray:
    """A smooth periodic bump in [0, 1], 1 at theta = peak and 0 half a cycle away; narrower than a cosine.

    Its slope is at most 0.65 per radian.
    """
    return (0.5 * (1.0 + np.cos(theta_T - peak))) ** 2


def _uniform(rng: np.random.Generator, ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """One uniform draw per named range, as plain floats (so parameters serialise to JSON)."""
    return {key: float(rng.uniform(lo, hi)) for key, (lo, hi) in ranges.items()}


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


# ---- walk and run ----------------------------------------------------------------------------------

# Walking at natural speed (gait-lab averages for adults: ~1 stride/s, hip 40-50 deg peak to peak, knee
# ~60 deg in swing, arms ~30 deg peak to peak).
WALK_RANGES: dict[str, tuple[float, float]] = {
    "frequency_hz": (0.9, 1.1),  # gait cycles (two steps) per second
    "phase": (0.0, 1.0),  # where in the gait cycle the clip starts
    "heading_deg": (0.0, 360.0),  # global yaw at frame 0
    "hip_amplitude_deg": (20.0, 28.0),  # hip flexion/extension, each way; sets the stride length
    "knee_stance_deg": (5.0, 12.0),  # knee flexion kept through stance
    "knee_swing_deg": (40.0, 55.0),  # extra knee flexion at mid-swing
    "ankle_amplitude_deg": (5.0, 12.0),  # push-off plantarflexion / heel-strike dorsiflexion
    "arm_down_deg": (65.0, 80.0),  # arms lowered from the T-pose
    "arm_swing_deg": (10.0, 25.0),  # arm swing each way, opposite to the legs
    "elbow_flex_deg": (10.0, 30.0),
    "toe_out_deg": (0.0, 10.0),
    "pelvis_twist_deg": (2.0, 6.0),  # pelvis yaw following the legs; the chest counter-rotates
    "lean_deg": (0.0, 5.0),  # forward trunk lean
    "asymmetry": (-0.1, 0.1),  # left amplitudes x (1 + a), right x (1 - a)
    "turn_rate_deg_s": (-25.0, 25.0),  # heading change on an arc (radius >= ~2.5 m); 0 on straight clips
}
# Fraction of walking and running clips that follow a straight line rather than an arc.
GAIT_STRAIGHT_PROBABILITY = 0.5

# Jogging: the cadence and knee ranges stop short of running fast so joint speeds stay below
# MAX_JOINT_SPEED_DEG_S at 30 fps (a sprint's knee reaches ~1,000 deg/s).
RUN_RANGES: dict[str, tuple[float, float]] = {
    "frequency_hz": (1.3, 1.5),
    "phase": (0.0, 1.0),
    "heading_deg": (0.0, 360.0),
    "hip_amplitude_deg": (22.0, 28.0),
    "knee_stance_deg": (20.0, 30.0),  # runners never straighten the knee
    "knee_swing_deg": (35.0, 42.0),
    "ankle_amplitude_deg": (8.0, 15.0),
    "arm_down_deg": (65.0, 80.0),
    "arm_swing_deg": (15.0, 28.0),
    "elbow_flex_deg": (70.0, 95.0),  # elbows bent near 90 deg
    "toe_out_deg": (0.0, 8.0),
    "pelvis_twist_deg": (3.0, 8.0),
    "lean_deg": (5.0, 12.0),  # forward trunk lean of a runner
    "asymmetry": (-0.05, 0.05),
    "turn_rate_deg_s": (-25.0, 25.0),
    "flight_fraction": (0.2, 0.5),  # stride gained in flight, relative to the stance stride
    "flight_height_m": (0.02, 0.05),  # root rise during the flight phases
}

# Phase of the left leg's peak knee flexion within the gait cycle: theta = pi is mid-swing (sin(theta)
# > 0 means the left leg is behind; the right leg mirrors it half a cycle later).
KNEE_PEAK_THETA = math.pi
# The chest turns back by this multiple of the pelvis twist (spread over the three spine joints).
CHEST_COUNTER_TWIST = 1.5
# Share of the trunk lean the neck takes back, so the gaze stays ahead.
NECK_LEAN_COMPENSATION = 0.5


def _sample_gait(rng: np.random.Generator, ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    params = _uniform(rng, ranges)
    if rng.random() < GAIT_STRAIGHT_PROBABILITY:
        params["turn_rate_deg_s"] = 0.0
    return params


def _gait(
    p: dict[str, Any], t_T: np.ndarray, *, flight_fraction: float, flight_height_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Walk or run: sinusoid legs and arms, heading along an arc, root path from the stride length."""
    theta_T = 2.0 * math.pi * (p["frequency_hz"] * t_T + p["phase"])
    swing_T = np.sin(theta_T)  # > 0: left leg behind, right leg ahead
    one_T = np.ones_like(t_T)
    left_gain, right_gain = 1.0 + p["asymmetry"], 1.0 - p["asymmetry"]
    # Knee flexion: a bump narrower than a sinusoid, centred on each leg's mid-swing.
    knee_bump_left_T = _bump(theta_T, KNEE_PEAK_THETA)
    knee_bump_right_T = _bump(theta_T, KNEE_PEAK_THETA + math.pi)
    rot: dict[str, np.ndarray] = {}
    _set_pair(
        rot,
        "hip",
        _leg(-left_gain * p["hip_amplitude_deg"] * swing_T, 0.0 * one_T, p["toe_out_deg"] * one_T),
        _leg(right_gain * p["hip_amplitude_deg"] * swing_T, 0.0 * one_T, p["toe_out_deg"] * one_T),
    )
    _set_pair(
        rot,
        "knee",
        _rot_T("x", p["knee_stance_deg"] + left_gain * p["knee_swing_deg"] * knee_bump_left_T),
        _rot_T("x", p["knee_stance_deg"] + right_gain * p["knee_swing_deg"] * knee_bump_right_T),
    )
    # Toes down (push-off) while the leg is behind, up (heel strike) while it is ahead.
    _set_pair(
        rot,
        "ankle",
        _rot_T("x", p["ankle_amplitude_deg"] * swing_T),
        _rot_T("x", -p["ankle_amplitude_deg"] * swing_T),
    )
    _set_pair(
        rot,
        "shoulder",
        _hanging_arm(p["arm_down_deg"] * one_T, left_gain * p["arm_swing_deg"] * swing_T),
        _hanging_arm(p["arm_down_deg"] * one_T, -right_gain * p["arm_swing_deg"] * swing_T),
    )
    _set_pair(rot, "elbow", _elbow(p["elbow_flex_deg"] * one_T), _elbow(p["elbow_flex_deg"] * one_T))
    chest_twist_T = -CHEST_COUNTER_TWIST * p["pelvis_twist_deg"] * swing_T / 3.0
    for spine in ("spine1", "spine2", "spine3"):
        rot[spine] = _rot_T("x", p["lean_deg"] / 3.0 * one_T) @ _rot_T("y", chest_twist_T)
    rot["neck"] = _rot_T("x", -NECK_LEAN_COMPENSATION * p["lean_deg"] * one_T)
    # The pelvis turns with the leg that swings forward: sin > 0 (left leg behind) turns the left hip back.
    yaw_T = p["heading_deg"] + p["turn_rate_deg_s"] * t_T
    rot["pelvis"] = _rot_T("y", yaw_T + p["pelvis_twist_deg"] * swing_T)
    rotmats_TJ33 = _rotmats_from(rot, len(t_T))

    # Forward speed = stride length x cadence; a stride (two steps) covers four times the hip's reach.
    stride_m = 4.0 * NOMINAL_LEG_M * math.sin(math.radians(p["hip_amplitude_deg"])) * (1.0 + flight_fraction)
    speed_m_s = stride_m * p["frequency_hz"]
    yaw_rad_T = np.radians(yaw_T)
    velocity_T3 = speed_m_s * np.stack((np.sin(yaw_rad_T), np.zeros_like(t_T), np.cos(yaw_rad_T)), axis=1)
    transl_T3 = np.zeros((len(t_T), 3))
    if len(t_T) > 1:  # trapezoid rule: the heading turns by under a degree per frame
        transl_T3[1:] = np.cumsum(0.5 * (velocity_T3[1:] + velocity_T3[:-1]) * np.diff(t_T)[:, None], axis=0)
    # Flight: the root rises while the legs are furthest apart (after a push-off, before the next landing).
    transl_T3[:, 1] = _ground_height_T(rotmats_TJ33) + flight_height_m * swing_T**2
    return rotmats_TJ33, transl_T3


def _walk(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gait(p, t_T, flight_fraction=0.0, flight_height_m=0.0)


def _run(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _gait(p, t_T, flight_fraction=p["flight_fraction"], flight_height_m=p["flight_height_m"])


# ---- arm_raise and wave -----------------------------------------------------------------------------

ARM_RAISE_RANGES: dict[str, tuple[float, float]] = {
    "frequency_hz": (0.25, 0.45),  # raise-and-lower cycles per second (2.2-4 s each)
    "phase": (0.0, 1.0),
    "heading_deg": (0.0, 360.0),
    "raise_deg": (90.0, 160.0),  # arm elevation at the top, from hanging (160 = nearly overhead)
    "arm_down_deg": (65.0, 80.0),
    "elbow_flex_deg": (0.0, 20.0),
    "second_arm_lag": (0.0, 0.1),  # with both arms: the right arm's delay, in cycles
    "second_arm_gain": (0.85, 1.0),  # with both arms: the right arm's share of the elevation
}
ARM_RAISE_ARMS = ("left", "right", "both")
ARM_RAISE_DIRECTIONS = ("sideways", "forward")


def _sample_arm_raise(rng: np.random.Generator) -> dict[str, Any]:
    params = _uniform(rng, ARM_RAISE_RANGES)
    params["arms"] = _choice(rng, ARM_RAISE_ARMS)
    params["direction"] = _choice(rng, ARM_RAISE_DIRECTIONS)
    return params


def _arm_raise(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One or both arms rise (sideways or forward) and come back down, over and over."""
    one_T = np.ones_like(t_T)
    down_T = p["arm_down_deg"] * one_T
    theta_T = 2.0 * math.pi * (p["frequency_hz"] * t_T + p["phase"])
    raise_T = p["raise_deg"] * _raised_cosine(theta_T)
    lag_rad = 2.0 * math.pi * p["second_arm_lag"]
    lagged_T = p["second_arm_gain"] * p["raise_deg"] * _raised_cosine(theta_T - lag_rad)
    left_raise_T, right_raise_T = {
        "left": (raise_T, 0.0 * one_T),
        "right": (0.0 * one_T, raise_T),
        "both": (raise_T, lagged_T),
    }[p["arms"]]

    def arm(elevation_T: np.ndarray) -> np.ndarray:
        if p["direction"] == "sideways":
            return _rot_T("z", elevation_T - down_T)
        return _hanging_arm(down_T, elevation_T)

    rot: dict[str, np.ndarray] = {"pelvis": _rot_T("y", p["heading_deg"] * one_T)}
    _set_pair(rot, "shoulder", arm(left_raise_T), arm(right_raise_T))
    _set_pair(rot, "elbow", _elbow(p["elbow_flex_deg"] * one_T), _elbow(p["elbow_flex_deg"] * one_T))
    return _rotmats_from(rot, len(t_T)), np.zeros((len(t_T), 3))


WAVE_RANGES: dict[str, tuple[float, float]] = {
    "frequency_hz": (1.2, 2.0),  # waves per second (a brisk wave is 2-3 Hz: slowed for the speed bound)
    "phase": (0.0, 1.0),
    "heading_deg": (0.0, 360.0),
    "upper_arm_raise_deg": (60.0, 100.0),  # sideways elevation of the upper arm from hanging
    "elbow_flex_deg": (60.0, 100.0),  # mean elbow flexion; 90 = forearm vertical
    "wave_amplitude_deg": (10.0, 20.0),  # forearm swing each way
    "wrist_amplitude_deg": (0.0, 15.0),  # hand flap each way
    "arm_down_deg": (65.0, 80.0),  # the other arm hangs
}
WAVE_ARMS = ("left", "right")
# The waving upper arm turns outwards about its length so that elbow flexion lifts the forearm.
WAVE_HUMERUS_TWIST_DEG = 90.0
# The hand flaps a quarter cycle behind the forearm.
WAVE_WRIST_LAG_RAD = 0.5 * math.pi


def _sample_wave(rng: np.random.Generator) -> dict[str, Any]:
    params = _uniform(rng, WAVE_RANGES)
    params["arm"] = _choice(rng, WAVE_ARMS)
    return params


def _wave(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One arm raised to the side, forearm up, swinging side to side; the other arm hangs."""
    one_T = np.ones_like(t_T)
    theta_T = 2.0 * math.pi * (p["frequency_hz"] * t_T + p["phase"])
    waving_shoulder = _rot_T("z", (p["upper_arm_raise_deg"] - p["arm_down_deg"]) * one_T) @ _rot_T(
        "x", -WAVE_HUMERUS_TWIST_DEG * one_T
    )
    waving_elbow = _elbow(p["elbow_flex_deg"] + p["wave_amplitude_deg"] * np.sin(theta_T))
    waving_wrist = _rot_T("z", p["wrist_amplitude_deg"] * np.sin(theta_T - WAVE_WRIST_LAG_RAD))
    hanging_shoulder = _hanging_arm(p["arm_down_deg"] * one_T, 0.0 * one_T)
    identity = _rot_T("x", 0.0 * one_T)
    rot: dict[str, np.ndarray] = {"pelvis": _rot_T("y", p["heading_deg"] * one_T)}
    if p["arm"] == "left":
        _set_pair(rot, "shoulder", waving_shoulder, hanging_shoulder)
        _set_pair(rot, "elbow", waving_elbow, identity)
        _set_pair(rot, "wrist", waving_wrist, identity)
    else:
        _set_pair(rot, "shoulder", hanging_shoulder, waving_shoulder)
        _set_pair(rot, "elbow", identity, waving_elbow)
        _set_pair(rot, "wrist", identity, waving_wrist)
    return _rotmats_from(rot, len(t_T)), np.zeros((len(t_T), 3))


# ---- squat and jumping jacks ------------------------------------------------------------------------

SQUAT_RANGES: dict[str, tuple[float, float]] = {
    "frequency_hz": (0.25, 0.5),  # squats per second (2-4 s each)
    "phase": (0.0, 1.0),
    "heading_deg": (0.0, 360.0),
    "drop_m": (0.15, 0.45),  # how far the root sinks at the bottom (0.45 m: thighs about parallel)
    "hip_back_ratio": (0.3, 0.7),  # the root moves back by this fraction of its drop, over the heels
    "pelvis_tilt_deg": (10.0, 30.0),  # forward tilt of the pelvis at the bottom
    "spine_lean_deg": (0.0, 15.0),  # extra trunk lean at the bottom, over the three spine joints
    "stance_abduct_deg": (5.0, 15.0),  # feet apart: each leg's angle from vertical when standing
    "toe_out_deg": (0.0, 20.0),  # the knees track over the toes
    "arms_forward_deg": (0.0, 90.0),  # arms raised forward at the bottom, for balance
    "arm_down_deg": (65.0, 80.0),
}


def _leg_ik(
    root_T33: np.ndarray, hip_T3: np.ndarray, ankle_T3: np.ndarray, knee_dir_T3: np.ndarray, foot_T33: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-bone inverse kinematics of the nominal leg, in the body/world frame.

    Args:
        root_T33: (T, 3, 3) global orientation of the pelvis.
        hip_T3: (T, 3) hip joint position, metres.
        ankle_T3: (T, 3) where the ankle must be, metres.
        knee_dir_T3: (T, 3) unit vector the knee points towards (the toes' direction), not along the leg.
        foot_T33: (T, 3, 3) global orientation the foot must have.

    Returns:
        Local hip, knee and ankle rotations, (T, 3, 3) each.
    """
    hip_to_ankle_T3 = ankle_T3 - hip_T3
    reach_T1 = np.linalg.norm(hip_to_ankle_T3, axis=-1, keepdims=True)
    along_T3 = hip_to_ankle_T3 / reach_T1
    across_T3 = knee_dir_T3 - (knee_dir_T3 * along_T3).sum(-1, keepdims=True) * along_T3
    across_T3 = across_T3 / np.linalg.norm(across_T3, axis=-1, keepdims=True)
    thigh, shin = NOMINAL_THIGH_M, NOMINAL_SHIN_M
    # Law of cosines: the thigh's angle off the hip -> ankle line, and the knee's interior angle.
    cos_thigh_T1 = np.clip((thigh**2 + reach_T1**2 - shin**2) / (2.0 * thigh * reach_T1), -1.0, 1.0)
    sin_thigh_T1 = np.sqrt(1.0 - cos_thigh_T1**2)
    cos_knee_inner_T = np.clip((thigh**2 + shin**2 - reach_T1[:, 0] ** 2) / (2.0 * thigh * shin), -1.0, 1.0)
    knee_flex_deg_T = 180.0 - np.degrees(np.arccos(cos_knee_inner_T))
    # The thigh's frame: its bone runs along -y, the knee points along +z, the hinge axis is +x.
    thigh_dir_T3 = cos_thigh_T1 * along_T3 + sin_thigh_T1 * across_T3
    knee_forward_T3 = -sin_thigh_T1 * along_T3 + cos_thigh_T1 * across_T3
    thigh_T33 = np.stack((np.cross(-thigh_dir_T3, knee_forward_T3), -thigh_dir_T3, knee_forward_T3), axis=-1)
    knee_T33 = _rot_T("x", knee_flex_deg_T)
    ankle_T33 = (thigh_T33 @ knee_T33).transpose(0, 2, 1) @ foot_T33
    return root_T33.transpose(0, 2, 1) @ thigh_T33, knee_T33, ankle_T33


def _squat(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The root sinks and moves back, the trunk leans, and the legs follow by inverse kinematics.

    The ankles stay where they stand and the feet stay flat, for the nominal leg.
    """
    one_T = np.ones_like(t_T)
    depth_T = _raised_cosine(2.0 * math.pi * (p["frequency_hz"] * t_T + p["phase"]))  # 0 standing, 1 bottom
    tilt_T = p["pelvis_tilt_deg"] * depth_T
    heading_T33 = _rot_T("y", p["heading_deg"] * one_T)
    root_T33 = heading_T33 @ _rot_T("x", tilt_T)
    # Standing, each leg leans out by the stance angle, so the root sits that much below the rest pose.
    abduct = math.radians(p["stance_abduct_deg"])
    standing_y = -NOMINAL_LEG_M * (1.0 - math.cos(abduct))
    body_transl_T3 = np.stack(
        (0.0 * one_T, standing_y - p["drop_m"] * depth_T, -p["hip_back_ratio"] * p["drop_m"] * depth_T), axis=1
    )
    transl_T3 = np.einsum("tij,tj->ti", heading_T33, body_transl_T3)
    rot: dict[str, np.ndarray] = {"pelvis": root_T33}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        hip_offset_3 = _nominal_hip_offset(sign)
        hip_T3 = transl_T3 + root_T33 @ hip_offset_3
        ankle_T3 = heading_T33 @ (hip_offset_3 + NOMINAL_LEG_M * np.array([sign * math.sin(abduct), -1.0, 0.0]))
        foot_T33 = heading_T33 @ _rot_T("y", sign * p["toe_out_deg"] * one_T)
        knee_dir_T3 = foot_T33[:, :, 2]  # the foot's forward axis
        rot[f"{side}_hip"], rot[f"{side}_knee"], rot[f"{side}_ankle"] = _leg_ik(
            root_T33, hip_T3, ankle_T3, knee_dir_T3, foot_T33
        )
    for spine in ("spine1", "spine2", "spine3"):
        rot[spine] = _rot_T("x", p["spine_lean_deg"] * depth_T / 3.0)
    rot["neck"] = _rot_T("x", -NECK_LEAN_COMPENSATION * (tilt_T + p["spine_lean_deg"] * depth_T))
    arm = _hanging_arm(p["arm_down_deg"] * one_T, p["arms_forward_deg"] * depth_T)
    _set_pair(rot, "shoulder", arm, arm)
    return _rotmats_from(rot, len(t_T)), transl_T3


JUMPING_JACKS_RANGES: dict[str, tuple[float, float]] = {
    # Slow jacks: a gym pace (~1.2 Hz) would swing the arms ~1,000 deg/s, over MAX_JOINT_SPEED_DEG_S.
    "frequency_hz": (0.4, 0.6),  # jacks (out and in) per second
    "phase": (0.0, 1.0),
    "heading_deg": (0.0, 360.0),
    "arm_raise_deg": (100.0, 150.0),  # sideways arm elevation from hanging at the open position
    "leg_abduct_deg": (10.0, 20.0),  # each leg, at the open position
    "hop_height_m": (0.02, 0.06),  # root rise while the legs open or close
    "arm_down_deg": (65.0, 80.0),
    "elbow_flex_deg": (0.0, 15.0),
}


def _jumping_jacks(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Arms and legs abduct together, symmetric left/right, with a small hop at each transition."""
    one_T = np.ones_like(t_T)
    theta_T = 2.0 * math.pi * (p["frequency_hz"] * t_T + p["phase"])
    open_T = _raised_cosine(theta_T)  # 0 closed, 1 open
    arm = _rot_T("z", p["arm_raise_deg"] * open_T - p["arm_down_deg"])
    leg = _leg(0.0 * one_T, p["leg_abduct_deg"] * open_T, 0.0 * one_T)
    rot: dict[str, np.ndarray] = {"pelvis": _rot_T("y", p["heading_deg"] * one_T)}
    _set_pair(rot, "shoulder", arm, arm)
    _set_pair(rot, "elbow", _elbow(p["elbow_flex_deg"] * one_T), _elbow(p["elbow_flex_deg"] * one_T))
    _set_pair(rot, "hip", leg, leg)
    rotmats_TJ33 = _rotmats_from(rot, len(t_T))
    transl_T3 = np.zeros((len(t_T), 3))
    # Airborne while the limbs move fastest (half-way between closed and open).
    transl_T3[:, 1] = _ground_height_T(rotmats_TJ33) + p["hop_height_m"] * np.sin(theta_T) ** 2
    return rotmats_TJ33, transl_T3


# ---- turn -------------------------------------------------------------------------------------------

TURN_RANGES: dict[str, tuple[float, float]] = {
    "heading_deg": (0.0, 360.0),  # yaw before the turn
    "yaw_change_deg": (60.0, 270.0),  # size of the turn; the sign is drawn separately
    "turn_rate_deg_s": (45.0, 90.0),  # mean yaw rate; the turn lasts |yaw_change| / rate seconds
    "start_s": (0.0, 0.5),  # when the turn begins
    "step_frequency_hz": (1.0, 1.5),  # stepping cycles (left + right) per second while turning
    "step_knee_deg": (15.0, 25.0),  # knee flexion of a lifted foot
    "phase": (0.0, 1.0),  # of the stepping
    "arm_down_deg": (65.0, 80.0),
    "elbow_flex_deg": (5.0, 25.0),
}


def _sample_turn(rng: np.random.Generator) -> dict[str, Any]:
    params = _uniform(rng, TURN_RANGES)
    params["yaw_change_deg"] *= float(rng.choice((-1.0, 1.0)))
    return params


def turn_duration_s(params: dict[str, Any]) -> float:
    """Seconds from the start of a turn clip until the turn is complete (``start_s`` + turning time)."""
    return params["start_s"] + abs(params["yaw_change_deg"]) / params["turn_rate_deg_s"]


def _turn(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn on the spot: the yaw eases from the heading by ``yaw_change_deg``, stepping while it turns."""
    one_T = np.ones_like(t_T)
    progress_T = np.clip((t_T - p["start_s"]) / (turn_duration_s(p) - p["start_s"]), 0.0, 1.0)
    yaw_T = p["heading_deg"] + p["yaw_change_deg"] * _raised_cosine(math.pi * progress_T)
    # Stepping in place, as strong as the turn is fast (zero before and after).
    stepping_T = np.sin(math.pi * progress_T)
    step_theta_T = 2.0 * math.pi * (p["step_frequency_hz"] * t_T + p["phase"])
    lift_left_T = stepping_T * np.maximum(0.0, np.sin(step_theta_T)) ** 2
    lift_right_T = stepping_T * np.maximum(0.0, -np.sin(step_theta_T)) ** 2
    rot: dict[str, np.ndarray] = {"pelvis": _rot_T("y", yaw_T)}
    # A lifted foot: the hip flexes by half the knee's flexion, so the shin hangs back a little.
    _set_pair(
        rot,
        "hip",
        _leg(0.5 * p["step_knee_deg"] * lift_left_T, 0.0 * one_T, 0.0 * one_T),
        _leg(0.5 * p["step_knee_deg"] * lift_right_T, 0.0 * one_T, 0.0 * one_T),
    )
    _set_pair(
        rot, "knee", _rot_T("x", p["step_knee_deg"] * lift_left_T), _rot_T("x", p["step_knee_deg"] * lift_right_T)
    )
    arm = _hanging_arm(p["arm_down_deg"] * one_T, 0.0 * one_T)
    _set_pair(rot, "shoulder", arm, arm)
    _set_pair(rot, "elbow", _elbow(p["elbow_flex_deg"] * one_T), _elbow(p["elbow_flex_deg"] * one_T))
    rotmats_TJ33 = _rotmats_from(rot, len(t_T))
    transl_T3 = np.zeros((len(t_T), 3))
    transl_T3[:, 1] = _ground_height_T(rotmats_TJ33)
    return rotmats_TJ33, transl_T3


# ---- spline -----------------------------------------------------------------------------------------

SPLINE_RANGES: dict[str, tuple[float, float]] = {
    "heading_deg": (0.0, 360.0),
    "yaw_drift_deg_s": (-20.0, 20.0),  # slow turn of the whole body
    "key_spacing_s": (0.8, 1.5),  # time between keyframes
    "amplitude": (0.3, 0.7),  # keyframes use this fraction of each joint's limit range (either side of 0)
}
# The legs use a smaller share of their range, so the body mostly stands.
SPLINE_LEG_AMPLITUDE_SCALE = 0.5
SPLINE_LEG_JOINTS = tuple(
    f"{side}_{part}" for side in ("left", "right") for part in ("hip", "knee", "ankle", "foot")
)
# Root tilt (x, z) keyframes stay within this many degrees; its yaw only drifts.
SPLINE_ROOT_TILT_DEG = 10.0
# Consecutive keyframes differ by at most this speed times the key spacing, on each axis. A Catmull-Rom
# curve moves at most twice as fast as its keys' steps (per axis), clamping never speeds it up, and
# axis-angle -> rotation never lengthens a path,
# so joints turn at most 2 * sqrt(3) * 80 ~ 280 deg/s, under MAX_JOINT_SPEED_DEG_S.
SPLINE_MAX_KEY_SPEED_DEG_S = 80.0


def _sample_spline(rng: np.random.Generator) -> dict[str, Any]:
    params = _uniform(rng, SPLINE_RANGES)
    params["seed"] = int(rng.integers(2**31))  # the keyframes' generator; their number depends on T
    return params


def _spline_key_box_J3(amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """(24, 3) lower and upper keyframe bounds, radians: the joint limits scaled towards 0."""
    scale_J1 = np.full((NUM_SMPL_JOINTS, 1), amplitude)
    for name in SPLINE_LEG_JOINTS:
        scale_J1[SMPL_JOINT[name]] *= SPLINE_LEG_AMPLITUDE_SCALE
    lo_J3, hi_J3 = scale_J1 * _LIMITS_LO_J3, scale_J1 * _LIMITS_HI_J3
    root_tilt = math.radians(SPLINE_ROOT_TILT_DEG)
    lo_J3[0], hi_J3[0] = (-root_tilt, 0.0, -root_tilt), (root_tilt, 0.0, root_tilt)
    return lo_J3, hi_J3


def _catmull_rom(keys_KJ3: np.ndarray, s_T: np.ndarray) -> np.ndarray:
    """Uniform Catmull-Rom curve through keys 1..K-2 at key coordinates ``s_T`` (key k sits at s = k - 1)."""
    segment_T = np.floor(s_T).astype(int) + 1
    u_T11 = (s_T - np.floor(s_T))[:, None, None]
    p0, p1, p2, p3 = (keys_KJ3[segment_T + offset] for offset in (-1, 0, 1, 2))
    return 0.5 * (
        2.0 * p1
        + (p2 - p0) * u_T11
        + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * u_T11**2
        + (3.0 * p1 - p0 - 3.0 * p2 + p3) * u_T11**3
    )


def _spline(p: dict[str, Any], t_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every joint follows a Catmull-Rom curve through random keyframes within its limits."""
    lo_J3, hi_J3 = _spline_key_box_J3(p["amplitude"])
    s_T = t_T / p["key_spacing_s"]
    num_keys = int(np.floor(s_T[-1])) + 4  # one before t = 0, two after the last frame
    key_rng = np.random.default_rng(p["seed"])
    # A bounded random walk between keys (limits the speed), kept inside the box.
    max_step = math.radians(SPLINE_MAX_KEY_SPEED_DEG_S) * p["key_spacing_s"]
    keys_KJ3 = np.empty((num_keys, NUM_SMPL_JOINTS, 3))
    keys_KJ3[0] = key_rng.uniform(lo_J3, hi_J3)
    steps_KJ3 = key_rng.uniform(-max_step, max_step, size=(num_keys - 1, NUM_SMPL_JOINTS, 3))
    for k in range(1, num_keys):
        keys_KJ3[k] = np.clip(keys_KJ3[k - 1] + steps_KJ3[k - 1], lo_J3, hi_J3)
    # The curve can overshoot its keys between them: clamp to the joint limits.
    pose_TJ3 = clamp_to_limits(_catmull_rom(keys_KJ3, s_T))
    rotmats_TJ33 = axis_angle_to_rotmat(torch.from_numpy(pose_TJ3)).numpy()
    yaw_T = p["heading_deg"] + p["yaw_drift_deg_s"] * t_T
    rotmats_TJ33[:, 0] = _rot_T("y", yaw_T) @ rotmats_TJ33[:, 0]
    transl_T3 = np.zeros((len(t_T), 3))
    transl_T3[:, 1] = _ground_height_T(rotmats_TJ33)
    return rotmats_TJ33, transl_T3


# ---- Public API -------------------------------------------------------------------------------------

_SAMPLERS: dict[str, Callable[[np.random.Generator], dict[str, Any]]] = {
    "walk": lambda rng: _sample_gait(rng, WALK_RANGES),
    "run": lambda rng: _sample_gait(rng, RUN_RANGES),
    "arm_raise": _sample_arm_raise,
    "wave": _sample_wave,
    "squat": lambda rng: _uniform(rng, SQUAT_RANGES),
    "jumping_jacks": lambda rng: _uniform(rng, JUMPING_JACKS_RANGES),
    "turn": _sample_turn,
    "spline": _sample_spline,
}
_BUILDERS: dict[str, Callable[[dict[str, Any], np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "walk": _walk,
    "run": _run,
    "arm_raise": _arm_raise,
    "wave": _wave,
    "squat": _squat,
    "jumping_jacks": _jumping_jacks,
    "turn": _turn,
    "spline": _spline,
}


def _check_family(family: str) -> None:
    if family not in MOTION_FAMILIES:
        raise ValueError(f"motion family {family!r} is not known; choose one of {list(MOTION_FAMILIES)}")


def sample_motion_params(family: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one clip's parameters for ``family`` from ``rng`` (and nothing else).

    Returns:
        A dict of plain floats, ints and strings (JSON-serialisable); the ranges are the module's
        ``<FAMILY>_RANGES`` tables.
    """
    _check_family(family)
    return _SAMPLERS[family](rng)


def motion_clip(family: str, params: dict[str, Any], *, num_frames: int, fps: float) -> MotionClip:
    """The clip of ``family`` with ``params`` (from ``sample_motion_params``), sampled at ``fps``.

    Deterministic: the same arguments give the same clip, and a longer clip starts with the shorter one.
    """
    _check_family(family)
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    t_T = np.arange(num_frames, dtype=np.float64) / fps
    rotmats_TJ33, transl_T3 = _BUILDERS[family](params, t_T)
    return MotionClip(
        pose_T243=rotmat_to_axis_angle(torch.from_numpy(rotmats_TJ33)).numpy().astype(np.float32),
        root_transl_T3=transl_T3.astype(np.float32),
        family=family,
    )


def _rot(axis: str, angle_rad: float) -> Tensor:
    """(3, 3) rotation about a coordinate axis (for ``walk_pose``)."""
    vec = torch.zeros(3, dtype=torch.float64)
    vec["xyz".index(axis)] = angle_rad
    return axis_angle_to_rotmat(vec)


def walk_pose(
    phase: float,
    *,
    hip_amplitude_deg: float = 28.0,
    knee_amplitude_deg: float = 45.0,
    arm_swing_deg: float = 22.0,
    arm_down_deg: float = 72.0,
    elbow_bend_deg: float = 20.0,
) -> Tensor:
    """A sinusoid walking gait at ``phase`` in [0, 1) of the gait cycle (one pose, for pictures).

    Returns:
        (24, 3) axis-angle, radians, float64. The root is left at identity.
    """
    theta = 2.0 * math.pi * phase
    swing = math.sin(theta)  # > 0: left leg back, right leg forward
    pose_J33 = torch.eye(3, dtype=torch.float64).repeat(NUM_SMPL_JOINTS, 1, 1)
    hip = math.radians(hip_amplitude_deg)
    knee = math.radians(knee_amplitude_deg)
    pose_J33[SMPL_JOINT["left_hip"]] = _rot("x", hip * swing)
    pose_J33[SMPL_JOINT["right_hip"]] = _rot("x", -hip * swing)
    # The knee bends most while its leg swings forward (its hip angle moves towards flexion).
    pose_J33[SMPL_JOINT["left_knee"]] = _rot("x", knee * (0.15 + 0.85 * max(0.0, -math.cos(theta))))
    pose_J33[SMPL_JOINT["right_knee"]] = _rot("x", knee * (0.15 + 0.85 * max(0.0, math.cos(theta))))
    # Arms: lower from the T-pose, then swing opposite to the legs; elbows slightly bent forward.
    arm = math.radians(arm_swing_deg)
    down = math.radians(arm_down_deg)
    elbow = math.radians(elbow_bend_deg)
    pose_J33[SMPL_JOINT["left_shoulder"]] = _rot("x", -arm * swing) @ _rot("z", -down)
    pose_J33[SMPL_JOINT["right_shoulder"]] = _rot("x", arm * swing) @ _rot("z", down)
    pose_J33[SMPL_JOINT["left_elbow"]] = _rot("y", -elbow)
    pose_J33[SMPL_JOINT["right_elbow"]] = _rot("y", elbow)
    return rotmat_to_axis_angle(pose_J33)

"""Scenes of the benchmark: subjects, cameras and the plan of clips per split (pure, deterministic).

Legend: T frames, K shape coefficients.
Frames: the world is the body model's (y up; metres). Cameras follow OpenCV (x right, y down, z forward):
a world point X maps to X_cam = R X + t, then u = fx X_cam/Z + cx, v = fy Y_cam/Z + cy (pixel-corner
origin, so pixel centres are at i + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raymotion.config import SynthConfig
from raymotion.synth.motions import MOTION_FAMILIES

SPLITS = ("labelled", "video", "val", "test")
# Betas are drawn from N(0, BETA_STD^2) clipped to +/- BETA_CLIP: the embedded body's betas have unit
# variance over its sampled phenotypes, so this spans most of its adult shapes without extremes.
BETA_STD = 0.8
BETA_CLIP = 2.0
# Height of the standing body used to place the camera, metres (close to the embedded body's mean).
NOMINAL_BODY_HEIGHT_M = 1.72
# A background "plane" this far behind the person moves with the panning camera.
BACKGROUND_DEPTH_BEHIND_M = 2.0


@dataclass(frozen=True, slots=True)
class ClipPlan:
    """Everything that determines one clip; rendering it is a pure function of this and the config."""

    clip_id: str
    split: str
    subject: int
    motion: str
    seed: int
    num_frames: int
    frame_stride: int


def plan_clips(cfg: SynthConfig) -> list[ClipPlan]:
    """All clips of the benchmark, in a fixed order; the same config gives the same plan.

    Subjects 0 .. num_train_subjects-1 appear in 'labelled' and 'video'; the held-out subjects after them
    appear only in 'val' and 'test'. Motion families cycle through every split so each has all of them;
    the motions' parameters are new random draws per clip.
    """
    counts = {
        "labelled": (cfg.labelled_clips, cfg.labelled_frames, cfg.labelled_stride),
        "video": (cfg.video_clips, cfg.video_frames, 1),
        "val": (cfg.val_clips, cfg.eval_frames, 1),
        "test": (cfg.test_clips, cfg.eval_frames, 1),
    }
    rng = np.random.default_rng(cfg.seed)
    plans: list[ClipPlan] = []
    for split in SPLITS:
        num_clips, num_frames, stride = counts[split]
        heldout = split in ("val", "test")
        first = cfg.num_train_subjects if heldout else 0
        num_subjects = cfg.num_heldout_subjects if heldout else cfg.num_train_subjects
        families = rng.permutation(np.resize(np.arange(len(MOTION_FAMILIES)), num_clips))
        for index in range(num_clips):
            plans.append(
                ClipPlan(
                    clip_id=f"{split}_{index:05d}",
                    split=split,
                    subject=first + int(rng.integers(num_subjects)),
                    motion=MOTION_FAMILIES[int(families[index])],
                    seed=int(rng.integers(2**31)),
                    num_frames=num_frames,
                    frame_stride=stride,
                )
            )
    return plans


def subject_betas(subject: int, *, seed: int, num_betas: int) -> np.ndarray:
    """(K,) float32 shape coefficients of a subject (a function of the subject id and benchmark seed)."""
    rng = np.random.default_rng([seed, subject, 1])
    return np.clip(rng.normal(0.0, BETA_STD, size=num_betas), -BETA_CLIP, BETA_CLIP).astype(np.float32)


def subject_rng(subject: int, *, seed: int) -> np.random.Generator:
    """The generator of a subject's appearance (texture)."""
    return np.random.default_rng([seed, subject, 2])


def look_at(eye_3: np.ndarray, target_3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World -> OpenCV camera for a camera at ``eye_3`` looking at ``target_3`` with world +y up.

    Returns:
        R_33, t_3 such that X_cam = R X + t.
    """
    forward = target_3 - eye_3
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation_33 = np.stack([right, down, forward])
    return rotation_33, -rotation_33 @ eye_3


@dataclass(frozen=True, slots=True)
class CameraTrack:
    """A pinhole camera per frame: shared intrinsics, per-frame extrinsics."""

    focal_px: float
    image_size: int
    rotation_T33: np.ndarray
    transl_T3: np.ndarray
    background_shift_T2: np.ndarray
    """(T, 2) how far the background has moved since frame 0, pixels."""

    @property
    def principal_px(self) -> float:
        return self.image_size / 2.0


def body_heading(root_rotmat_33: np.ndarray) -> float:
    """Yaw (radians, about world +y) of the direction the body faces (its local +z axis)."""
    forward_3 = root_rotmat_33[:, 2]
    return math.atan2(forward_3[0], forward_3[2])


def camera_track(cfg: SynthConfig, root_transl_T3: np.ndarray, rng: np.random.Generator, *,
                 heading_rad: float = 0.0) -> CameraTrack:
    """A camera that frames the body (``body_fill`` of the frame height) and pans with its root path.

    It stands at azimuth ``heading_rad`` + U(``cfg.view_yaw_deg``) about the body's frame-0 position:
    azimuth = heading puts it straight in front of a body whose frame-0 facing is ``heading_rad``.

    The camera's distance follows from the focal length: d = f * height / (fill * image_size), so the
    near-orthographic default (f = 5000 px at 224 px) sits ~50 m away, as SPIN's convention assumes.
    """
    focal = cfg.focal_length_224 * cfg.image_size / 224.0
    distance = focal * NOMINAL_BODY_HEIGHT_M / (cfg.body_fill * cfg.image_size)
    elevation = math.radians(rng.uniform(*cfg.elevation_deg))
    azimuth = heading_rad + math.radians(rng.uniform(*cfg.view_yaw_deg))
    direction_3 = np.array(
        [math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation)]
    )
    # The look-at target: the root path (followed by cfg.camera_follow) at the frame-0 root height, so
    # vertical motion (a jump, a squat) shows in the image.
    start_3 = root_transl_T3[0]
    target_T3 = start_3 + cfg.camera_follow * (root_transl_T3 - start_3) * np.array([1.0, 0.0, 1.0])
    rotation_33, _ = look_at(target_T3[0] + distance * direction_3, target_T3[0])
    eyes_T3 = target_T3 + distance * direction_3
    transl_T3 = -(rotation_33 @ eyes_T3.T).T
    # Background plane behind the person: it shifts opposite to the camera's motion, plus a slow drift.
    pan_T2 = focal * ((rotation_33 @ (eyes_T3 - eyes_T3[0]).T).T[:, :2]) / (distance + BACKGROUND_DEPTH_BEHIND_M)
    drift_2 = rng.uniform(-cfg.background_drift_px, cfg.background_drift_px, size=2)
    num_frames = root_transl_T3.shape[0]
    shift_T2 = -pan_T2 + np.arange(num_frames)[:, None] * drift_2
    return CameraTrack(
        focal_px=focal,
        image_size=cfg.image_size,
        rotation_T33=np.broadcast_to(rotation_33, (num_frames, 3, 3)).copy(),
        transl_T3=transl_T3,
        background_shift_T2=shift_T2,
    )

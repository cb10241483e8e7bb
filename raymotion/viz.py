"""Pictures for people: the body in a pose, seen from three sides."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch

from raymotion.body.body_model import BodyModel, load_body_model
from raymotion.config import Config
from raymotion.geometry import axis_angle_to_rotmat
from raymotion.synth.motions import walk_pose

# Views of the picture: rotation of the body about the vertical axis, degrees (0 = facing the camera).
VIEW_YAWS_DEG = (20.0, 90.0, 150.0)
# Fraction of the image height the body fills, and the focal length in image sizes (a mild telephoto).
BODY_FILL = 0.85
FOCAL_IN_IMAGE_SIZES = 2.5


def pose_for(motion: str, phase: float) -> torch.Tensor:
    """(24, 3) axis-angle for a named pose."""
    if motion == "walk":
        return walk_pose(phase)
    if motion == "tpose":
        return torch.zeros(24, 3, dtype=torch.float64)
    raise ValueError(f"render.motion={motion!r} is not a known pose; choose 'walk' or 'tpose'")


def posed_views(body: BodyModel, pose_J3: torch.Tensor, yaws_deg: tuple[float, ...]) -> torch.Tensor:
    """The mean-shape body in ``pose_J3``, turned about the vertical axis once per view.

    Returns:
        (N, V, 3) vertices in the body frame (y up), metres, one row per yaw.
    """
    rotmats_J33 = axis_angle_to_rotmat(pose_J3.float())
    num_views = len(yaws_deg)
    rotmats_NJ33 = rotmats_J33.unsqueeze(0).repeat(num_views, 1, 1, 1)
    yaw_N3 = torch.zeros(num_views, 3)
    yaw_N3[:, 1] = torch.tensor([math.radians(y) for y in yaws_deg])
    rotmats_NJ33[:, 0] = axis_angle_to_rotmat(yaw_N3) @ rotmats_NJ33[:, 0]
    with torch.no_grad():
        out = body(rotmats_BJ33=rotmats_NJ33, betas_BK=torch.zeros(num_views, body.num_betas))
    return out.verts_BV3


def render_body_picture(cfg: Config) -> Path:
    """Render ``cfg.body`` in ``cfg.render.motion`` from three sides into ``cfg.render.output`` (PNG)."""
    from raymotion.synth.render import Intrinsics, MeshRenderer

    body = load_body_model(cfg.body)
    size = cfg.render.image_size
    verts_NV3 = posed_views(body, pose_for(cfg.render.motion, cfg.render.phase), VIEW_YAWS_DEG).numpy()
    faces_F3 = body.faces_F3.numpy()
    focal = FOCAL_IN_IMAGE_SIZES * size
    intrinsics = Intrinsics(fx=focal, fy=focal, cx=size / 2, cy=size / 2, width=size, height=size)
    panels = []
    with MeshRenderer(width=size, height=size) as renderer:
        for verts_V3 in verts_NV3:
            lo, hi = verts_V3.min(axis=0), verts_V3.max(axis=0)
            centre = (lo + hi) / 2
            distance = focal * (hi[1] - lo[1]) / (BODY_FILL * size)
            # Body frame (y up, facing +z) -> OpenCV camera frame (y down, z forward) with the camera on
            # the body's +z side looking back at it: flip y and z, push the body `distance` away.
            verts_cam_V3 = (verts_V3 - centre) * np.array([1.0, -1.0, -1.0]) + np.array([0.0, 0.0, distance])
            rgb_HW3, _ = renderer.render(verts_cam_V3, faces_F3, intrinsics=intrinsics)
            panels.append(rgb_HW3)
    picture = np.concatenate(panels, axis=1)
    out = Path(cfg.render.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out}; check that render.output names a writable .png path")
    return out

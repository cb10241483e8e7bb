"""Run a regressor over a labelled split and score it. No training code.

Legend: N frames, E = 14 evaluation joints, V vertices, J = 24 SMPL joints.
Predictions and ground truth are compared in the camera's orientation, each aligned at its own pelvis
(the mid-point of the hips of the 14 evaluation joints), in millimetres.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import Tensor, nn

from raymotion.body.body_model import BodyModel
from raymotion.body.joints import EVAL_HIP_PAIR
from raymotion.eval.metrics import accel_error_mm, mpjpe_mm, pa_mpjpe_mm, pve_mm
from raymotion.geometry import axis_angle_to_rotmat, rot6d_to_rotmat
from raymotion.models.regressor import MeanParams, RegressorOutput

METRIC_KEYS = ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_error_mm")


class MeanPoseBaseline(nn.Module):
    """A constant predictor: the mean parameters for every image (the baseline a model must beat)."""

    def __init__(self, mean_params: MeanParams) -> None:
        super().__init__()
        self.mean_params = mean_params

    def forward(self, images_B3HW: Tensor) -> RegressorOutput:
        batch = images_B3HW.shape[0]
        rot6d_BJ6 = self.mean_params.rot6d_J6.expand(batch, -1, -1)
        return RegressorOutput(
            rotmats_BJ33=rot6d_to_rotmat(rot6d_BJ6),
            rot6d_BJ6=rot6d_BJ6,
            betas_BK=self.mean_params.betas_K.expand(batch, -1),
            cam_B3=self.mean_params.cam_3.expand(batch, -1),
            feature_BD=images_B3HW.new_zeros(batch, 0),
        )


def _pelvis(joints_BE3: Tensor) -> Tensor:
    return joints_BE3[:, list(EVAL_HIP_PAIR)].mean(dim=1)


@torch.no_grad()
def predict_frames(model: nn.Module, body_model: BodyModel, frames, *, batch_size: int = 64) -> dict[str, Tensor]:
    """Eval joints and vertices of every frame of ``frames`` (a LabelledFrames dataset)."""
    model.eval()
    joints, verts = [], []
    for start in range(0, len(frames), batch_size):
        images = torch.stack([frames[i]["image"] for i in range(start, min(start + batch_size, len(frames)))])
        params = model(images)
        out = body_model(rotmats_BJ33=params.rotmats_BJ33, betas_BK=params.betas_BK)
        joints.append(out.eval_joints_B143)
        verts.append(out.verts_BV3)
    return {"eval_joints_NE3": torch.cat(joints), "verts_NV3": torch.cat(verts)}


@torch.no_grad()
def ground_truth(body_model: BodyModel, frames, *, batch_size: int = 256) -> dict[str, Tensor]:
    """Ground-truth eval joints (from the labels, camera frame) and vertices (the labelled body posed at the
    origin in the camera's orientation) with that body's pelvis, for aligning the vertices."""
    joints, verts, pelvis = [], [], []
    for start in range(0, len(frames), batch_size):
        items = [frames[i] for i in range(start, min(start + batch_size, len(frames)))]
        pose = torch.stack([item["pose_cam"] for item in items])
        betas = torch.stack([item["betas"] for item in items])
        out = body_model(rotmats_BJ33=axis_angle_to_rotmat(pose), betas_BK=betas)
        verts.append(out.verts_BV3)
        pelvis.append(_pelvis(out.eval_joints_B143))  # the posed body sits at the origin, not where the camera saw it
        joints.append(torch.stack([item["eval_joints3d"] for item in items]))
    return {"eval_joints_NE3": torch.cat(joints), "verts_NV3": torch.cat(verts), "verts_pelvis_N3": torch.cat(pelvis)}


def score(pred: dict[str, Tensor], truth: dict[str, Tensor], clip_index_N: np.ndarray, frame_N: np.ndarray) -> dict[str, float]:
    """METHOD.md 6 metrics, plus frame-to-frame joint motion of the prediction and of the truth (mm)."""
    pj, tj = pred["eval_joints_NE3"], truth["eval_joints_NE3"]
    metrics = {
        "mpjpe_mm": float(mpjpe_mm(pj, tj).mean()),
        "pa_mpjpe_mm": float(pa_mpjpe_mm(pj, tj).mean()),
        "pve_mm": float(pve_mm(pred["verts_NV3"], truth["verts_NV3"], _pelvis(pj), truth["verts_pelvis_N3"]).mean()),
    }
    # Sequences: consecutive frames of one clip, pelvis-centred (acceleration and frame-to-frame motion).
    by_clip: dict[int, list[int]] = defaultdict(list)
    for n, clip in enumerate(clip_index_N):
        by_clip[int(clip)].append(n)
    accels, pred_motion, true_motion = [], [], []
    for rows in by_clip.values():
        rows = sorted(rows, key=lambda n: frame_N[n])
        if len(rows) < 3:
            continue
        p = pj[rows] - _pelvis(pj[rows])[:, None]
        t = tj[rows] - _pelvis(tj[rows])[:, None]
        accels.append(float(np.mean(np.asarray(accel_error_mm(p, t)))))
        pred_motion.append(float((p[1:] - p[:-1]).norm(dim=-1).mean() * 1000))
        true_motion.append(float((t[1:] - t[:-1]).norm(dim=-1).mean() * 1000))
    metrics["accel_error_mm"] = float(np.mean(accels)) if accels else float("nan")
    metrics["pred_motion_mm"] = float(np.mean(pred_motion)) if pred_motion else float("nan")
    metrics["true_motion_mm"] = float(np.mean(true_motion)) if true_motion else float("nan")
    metrics["num_frames"] = float(len(clip_index_N))
    return metrics


def evaluate(model: nn.Module, body_model: BodyModel, frames) -> dict[str, float]:
    """Score ``model`` on a LabelledFrames split (val or test)."""
    clip_index = np.array([frames[i]["clip_index"] for i in range(len(frames))])
    frame = np.array([frames[i]["frame"] for i in range(len(frames))])
    return score(predict_frames(model, body_model, frames), ground_truth(body_model, frames), clip_index, frame)

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
from torch.utils.data import default_collate

from raymotion.body.body_model import BodyModel
from raymotion.body.joints import EVAL_HIP_PAIR
from raymotion.eval.metrics import accel_error_mm, mpjpe_mm, pa_mpjpe_mm, pve_mm
from raymotion.geometry import axis_angle_to_rotmat, rot6d_to_rotmat
from raymotion.models.regressor import MeanParams, RegressorOutput

METRIC_KEYS = ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_error_mm")
SCORE_KEYS = (*METRIC_KEYS, "pred_motion_mm", "true_motion_mm", "num_frames")
"""Every key ``score`` returns (runs report them on the val split as ``val/<key>``)."""


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
def predict_and_truth(model: nn.Module, body_model: BodyModel, frames, *, batch_size: int = 64) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """One pass over ``frames`` (a LabelledFrames dataset; each item is read once).

    Returns:
        pred: ``eval_joints_NE3`` and ``verts_NV3`` of the model's bodies;
        truth: ``eval_joints_NE3`` (labels, camera frame), ``verts_NV3`` (the labelled body posed at the origin
            in the camera's orientation) and ``verts_pelvis_N3`` (that body's pelvis, for aligning the vertices);
        clip_index_N, frame_N: which clip and frame each row is.
    """
    model.eval()
    pred: dict[str, list[Tensor]] = defaultdict(list)
    truth: dict[str, list[Tensor]] = defaultdict(list)
    clip_index, frame = [], []
    device = next(model.parameters(), torch.empty(0)).device
    for start in range(0, len(frames), batch_size):
        batch = default_collate([frames[i] for i in range(start, min(start + batch_size, len(frames)))])
        params = model(batch["image"].to(device))
        out = body_model(rotmats_BJ33=params.rotmats_BJ33.float(), betas_BK=params.betas_BK.float())
        pred["eval_joints_NE3"].append(out.eval_joints_B143.cpu())
        pred["verts_NV3"].append(out.verts_BV3.cpu())
        gt = body_model(rotmats_BJ33=axis_angle_to_rotmat(batch["pose_cam"].to(device)), betas_BK=batch["betas"].to(device))
        truth["eval_joints_NE3"].append(batch["eval_joints3d"])
        truth["verts_NV3"].append(gt.verts_BV3.cpu())
        truth["verts_pelvis_N3"].append(_pelvis(gt.eval_joints_B143).cpu())  # the posed body sits at the origin
        clip_index.append(np.asarray(batch["clip_index"]))
        frame.append(np.asarray(batch["frame"]))
    return (
        {k: torch.cat(v) for k, v in pred.items()},
        {k: torch.cat(v) for k, v in truth.items()},
        np.concatenate(clip_index),
        np.concatenate(frame),
    )


def score(pred: dict[str, Tensor], truth: dict[str, Tensor], clip_index_N: np.ndarray, frame_N: np.ndarray) -> dict[str, float]:
    """METHOD.md 6 metrics, plus frame-to-frame joint motion of the prediction and of the truth (mm).

    Raises:
        ValueError: a prediction or ground-truth array is NaN/inf for some frame (named by clip index and
            frame): a metric is never silently NaN. Labels and body models are checked when loaded, so this
            names a model whose outputs are not finite.
    """
    for side, arrays in (("the model's prediction", pred), ("the ground truth", truth)):
        for name, values in arrays.items():
            bad_N = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
            if bad_N.any():
                n = int(bad_N.nonzero()[0])
                raise ValueError(f"{side} ({name}) is not finite for {int(bad_N.sum())} of {len(values)} frames "
                                 f"(first: clip {int(clip_index_N[n])} of the manifest, frame {int(frame_N[n])}); "
                                 "the metrics would be NaN")
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
    return score(*predict_and_truth(model, body_model, frames))

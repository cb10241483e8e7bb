"""One optimisation step's loss, for pretraining and for refinement. No Ray, no optimiser, no I/O.

Legend: B batch (labelled frames or video pairs), V vertices, F faces, J = 24 SMPL joints, K betas,
S crop size (pixels), H = W = S.
Frames: the regressor's body is posed at the origin in the camera's orientation (x right, y down,
z forward; metres); the weak-perspective camera (s, tx, ty) maps it into normalised crop coordinates
n = s * X_xy + t, and pixels p = (n + 1) / 2 * S (pixel-corner origin).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raymotion.body.body_model import BodyModel, BodyOutput
from raymotion.body.joints import SMPL_JOINT
from raymotion.config import LossConfig
from raymotion.geometry import axis_angle_to_rotmat, weak_perspective_project, weak_perspective_to_normalised
from raymotion.losses.consistency import flow_consistency_loss, flow_visibility
from raymotion.losses.regularizers import anchor_loss, schedule_value
from raymotion.losses.supervised import (
    betas_loss,
    betas_prior_loss,
    camera_loss,
    keypoint_2d_loss,
    keypoint_3d_loss,
    pose_loss,
)
from raymotion.losses.texture import sample_vertex_colors, texture_consistency_loss
from raymotion.models.regressor import RegressorOutput, push_context, start_context

PELVIS = SMPL_JOINT["pelvis"]
FIELDS = tuple(field.name for field in dataclasses.fields(RegressorOutput))


@dataclass(frozen=True, slots=True)
class Prediction:
    """The regressor's output and the body it describes."""

    params: RegressorOutput
    body: BodyOutput


def pose(body_model: BodyModel, params: RegressorOutput) -> Prediction:
    """Pose the body with regressed parameters."""
    return Prediction(params=params, body=body_model(rotmats_BJ33=params.rotmats_BJ33, betas_BK=params.betas_BK))


def predict(model: nn.Module, body_model: BodyModel, images_B3HW: Tensor, *, film: bool = False) -> Prediction:
    """Regress parameters from single crops and pose the body with them.

    ``film``: the model is a FiLM regressor; each crop is then a clip of one frame, conditioned by the start
    rule (``start_context``: its own context-free prediction, twice), as evaluation conditions a clip's first
    frame.
    """
    if film:
        return pose(body_model, model(images_B3HW, start_context(model, images_B3HW)))
    return pose(body_model, model(images_B3HW))


def video_params(model: nn.Module, video: dict[str, Tensor]) -> RegressorOutput:
    """The regressor's parameters for the last pair of a video batch, frames [image1; image2] stacked: (2B, ...).

    Pairs (``image1``, ``image2``) go through the model as one batch of single frames. A FiLM batch holds
    3-frame windows (``image0``, ``image1``, ``image2`` = frames t - 2g, t - g, t) and is read as a clip of
    3 frames with evaluation's rule (``raymotion.eval.evaluate.predict_in_context``): frame t - 2g starts the
    history (``start_context``) and is predicted without gradient; frame t - g is predicted with the context
    [c(t - 2g), y(t - 2g)] and frame t with [y(t - 2g), y(t - g)], both with gradient (c: context-free
    prediction, y: FiLM prediction; contexts are always detached). So frame t sees exactly the context it
    would see in evaluation, and the flow term (on the last pair) trains both its frames.
    """
    if "image0" not in video:
        return model(torch.cat([video["image1"], video["image2"]]))
    context_B2P = start_context(model, video["image0"])
    with torch.no_grad():
        oldest = model(video["image0"], context_B2P)
    context_B2P = push_context(context_B2P, oldest)
    middle = model(video["image1"], context_B2P)
    newest = model(video["image2"], push_context(context_B2P, middle))
    return RegressorOutput(*(torch.cat([getattr(middle, name), getattr(newest, name)]) for name in FIELDS))


def supervised_terms(pred: Prediction, batch: dict[str, Tensor], cfg: LossConfig) -> dict[str, Tensor]:
    """METHOD.md 2: the weighted terms of L_sup (before the overall factor) on a labelled batch.

    Partial labels (docs/data_format.md) are masked as SPIN does: ``has_smpl`` masks the pose and betas terms,
    ``has_joints3d`` the 3D-joint term (``joints3d_conf`` weighting its joints), and ``joints2d_vis`` (confidence x visibility) weights the 2D joints.
    """
    has_smpl_B = batch["has_smpl"]
    gt_rotmats_BJ33 = axis_angle_to_rotmat(batch["pose_cam"])
    pred_norm_BJ2 = weak_perspective_to_normalised(pred.body.joints_BJ3, pred.params.cam_B3)
    return {
        "pose": cfg.pose * pose_loss(pred.params.rotmats_BJ33, gt_rotmats_BJ33, has_smpl_B),
        "betas": cfg.betas * betas_loss(pred.params.betas_BK, batch["betas"], has_smpl_B),
        "betas_prior": cfg.betas_prior * betas_prior_loss(pred.params.betas_BK),
        "kp2d": cfg.kp2d * keypoint_2d_loss(pred_norm_BJ2, batch["joints2d"], batch["joints2d_vis"]),
        "kp3d": cfg.kp3d * keypoint_3d_loss(pred.body.joints_BJ3, batch["joints3d"], batch["has_joints3d"],
                                                pelvis_index=PELVIS, conf_BJ=batch["joints3d_conf"]),
        "cam": cfg.cam * camera_loss(pred.params.cam_B3),
    }


def supervised_loss(pred: Prediction, batch: dict[str, Tensor], cfg: LossConfig) -> tuple[Tensor, dict[str, float]]:
    """L_sup = supervised_scale * sum of weighted terms; returns the loss and its terms for logging."""
    terms = supervised_terms(pred, batch, cfg)
    total = cfg.supervised_scale * sum(terms.values())
    return total, {f"sup/{k}": float(v.detach()) for k, v in terms.items()}


def pretrain_loss(
    model: nn.Module, body_model: BodyModel, batch: dict[str, Tensor], cfg: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """The pretraining step's loss: L_sup on a labelled batch."""
    pred = predict(model, body_model, batch["image"])
    total, logs = supervised_loss(pred, batch, cfg)
    logs["loss"] = float(total.detach())
    return total, logs


def refine_loss(
    model: nn.Module,
    frozen: nn.Module,
    body_model: BodyModel,
    pairs: dict[str, Tensor],
    labelled: dict[str, Tensor],
    cfg: LossConfig,
    *,
    step: int,
    total_steps: int,
) -> tuple[Tensor, dict[str, float]]:
    """METHOD.md 3-5: W_sup L_sup (labelled batch) + W_flow L_flow + anchors + TexturePose on video pairs.

    ``pairs`` holds crops of frames t and t+1 (``image1``, ``image2``), the optical flow between the two
    crops in both directions (``flow_fwd``, ``flow_bwd``: (B, 2, S, S) crop pixels) and, for the oracle,
    ``flow_valid_fwd``/``flow_valid_bwd``. The temporal-context variant (model.film, METHOD.md 5) passes
    3-frame windows instead: the same keys for the last pair plus ``image0``, the frame before ``image1``
    (``VideoPairs(frames_per_item=3)``); the model and the frozen anchor copy then predict the last pair in context
    (``video_params``), the labelled frames as one-frame clips (``predict(film=True)``), and the flow,
    anchor, TexturePose and keypoint terms read the last pair as they read a pair. No labels of the video
    frames are read, except with
    ``cfg.video_kp2d_weight > 0``: then ``joints2d1/2`` and ``joints2d_vis1/2`` feed ``stand_in_detections``
    (a detector's noisy, incomplete 2D keypoints; the paper's optional 2D term).
    """
    film = "image0" in pairs
    num_pairs = pairs["image1"].shape[0]
    crop_size = pairs["image1"].shape[-1]
    pred = pose(body_model, video_params(model, pairs))
    verts_pix_2BV2 = weak_perspective_project(pred.body.verts_BV3, pred.params.cam_B3, crop_size=crop_size)
    verts_pix_2BV3 = torch.cat([verts_pix_2BV2, pred.body.verts_BV3[..., 2:]], dim=-1)
    pix1_BV3, pix2_BV3 = verts_pix_2BV3[:num_pairs], verts_pix_2BV3[num_pairs:]
    vis_BV = flow_visibility(
        pix1_BV3, pix2_BV3, body_model.faces_F3, height=crop_size, width=crop_size, mode=cfg.flow_visibility
    )
    if "flow_valid_fwd" in pairs:  # exact flow exists only on the body: keep vertices where it does
        vis_BV = vis_BV & _sample_mask(pairs["flow_valid_fwd"], pix1_BV3) & _sample_mask(pairs["flow_valid_bwd"], pix2_BV3)
    flow = flow_consistency_loss(
        pix1_BV3[..., :2],
        pix2_BV3[..., :2],
        pairs["flow_fwd"],
        pairs["flow_bwd"],
        vis_BV,
        crop_size=crop_size,
        max_flow_224=cfg.flow_max_224,
        normaliser_floor_px=cfg.flow_normaliser_floor_px,
    )
    sup_pred = predict(model, body_model, labelled["image"], film=film)
    sup, logs = supervised_loss(sup_pred, labelled, cfg)

    anchor_scale = schedule_value(
        cfg.anchor_schedule,
        step,
        total_steps=total_steps,
        start=1.0,
        end=cfg.anchor_end_factor,
        milestones=cfg.anchor_milestones,
        gamma=cfg.anchor_gamma,
    )
    with torch.no_grad():
        frozen_pred = pose(body_model, video_params(frozen, pairs))
    anchor_joints, anchor_betas = anchor_loss(
        pred.body.joints_BJ3,
        frozen_pred.body.joints_BJ3,
        pred.params.betas_BK,
        frozen_pred.params.betas_BK,
        pelvis_index=PELVIS,
    )
    total = (
        cfg.supervised_weight * sup
        + cfg.flow_weight * flow.loss
        + anchor_scale * (cfg.anchor_joints * anchor_joints + cfg.anchor_betas * anchor_betas)
    )
    if cfg.video_kp2d_weight > 0:  # METHOD.md 5: 2D keypoints on the video frames, from a detector
        det_2BJ2, det_vis_2BJ = stand_in_detections(
            torch.cat([pairs["joints2d1"], pairs["joints2d2"]]), torch.cat([pairs["joints2d_vis1"], pairs["joints2d_vis2"]]),
            noise_px=cfg.video_kp2d_noise_px, dropout=cfg.video_kp2d_dropout, crop_size=crop_size)
        pred_norm_2BJ2 = weak_perspective_to_normalised(pred.body.joints_BJ3, pred.params.cam_B3)
        video_kp2d = keypoint_2d_loss(pred_norm_2BJ2, det_2BJ2, det_vis_2BJ)
        total = total + cfg.video_kp2d_weight * video_kp2d
        logs["video_kp2d"] = float(video_kp2d.detach())
    if cfg.texture_weight > 0:
        colours1_BV3 = sample_vertex_colors(pairs["image1"], pix1_BV3[..., :2])
        colours2_BV3 = sample_vertex_colors(pairs["image2"], pix2_BV3[..., :2])
        texture = texture_consistency_loss(colours1_BV3, colours2_BV3, vis_BV).mean()
        total = total + cfg.texture_weight * texture
        logs["texture"] = float(texture.detach())
    logs.update(
        {
            "loss": float(total.detach()),
            "sup": float(sup.detach()),
            "flow": float(flow.loss.detach()),
            "flow_pairs_kept": float(flow.kept_B.float().mean()),
            "visible_vertices": float(vis_BV.float().sum(dim=1).mean()),
            "anchor_joints": float(anchor_joints.detach()),
            "anchor_betas": float(anchor_betas.detach()),
            "anchor_scale": anchor_scale,
        }
    )
    return total, logs


def stand_in_detections(joints2d_BJ2: Tensor, visible_BJ: Tensor, *, noise_px: float, dropout: float,
                        crop_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A 2D keypoint detector's output simulated from labels: Gaussian noise and dropped joints.

    Args:
        joints2d_BJ2: (B, J, 2) true joints, normalised crop coordinates [-1, 1].
        visible_BJ: (B, J) 1 where the joint is visible (a detector only reports those).
        noise_px: std of the noise in crop pixels (S = ``crop_size``); normalised units are 2 / S per pixel.
        dropout: probability that a visible joint is not detected.

    Returns:
        (B, J, 2) detections, normalised crop coordinates; (B, J) float confidence, 0 or 1.
    """
    noise_BJ2 = torch.randn(joints2d_BJ2.shape, generator=generator, dtype=joints2d_BJ2.dtype).to(joints2d_BJ2.device)
    kept_BJ = torch.rand(visible_BJ.shape, generator=generator).to(visible_BJ.device) >= dropout
    return joints2d_BJ2 + noise_BJ2 * (2.0 * noise_px / crop_size), visible_BJ.float() * kept_BJ.float()


def _sample_mask(mask_BHW: Tensor, verts_pix_BV3: Tensor) -> Tensor:
    """Nearest-pixel lookup of a boolean mask at vertex positions; False outside the image."""
    height, width = mask_BHW.shape[1:]
    col_BV = verts_pix_BV3[..., 0].floor().long()
    row_BV = verts_pix_BV3[..., 1].floor().long()
    inside_BV = (col_BV >= 0) & (col_BV < width) & (row_BV >= 0) & (row_BV < height)
    index_BV = (row_BV.clamp(0, height - 1) * width + col_BV.clamp(0, width - 1)).detach()
    return inside_BV & mask_BHW.reshape(mask_BHW.shape[0], -1).gather(1, index_BV)

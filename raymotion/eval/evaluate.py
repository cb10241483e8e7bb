"""Run a regressor over a labelled split and score it. No training code.

Legend: N frames, E = 14 evaluation joints, V vertices, J = 24 SMPL joints, B batch, P packed parameters.
Single-frame regressors are run frame by frame; a FiLM regressor (model.film, METHOD.md 5) sequentially
over each clip, each frame conditioned on its own previous predictions (``predict_in_context``).
Predictions and ground truth are compared in the camera's orientation, each aligned at its own pelvis
(the mid-point of the hips of the 14 evaluation joints), in millimetres.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from raymotion.body.body_model import BodyModel
from raymotion.body.joints import EVAL_HIP_PAIR
from raymotion.eval.metrics import accel_error_mm, clustered_mean_se, mpjpe_mm, pa_mpjpe_mm, pve_mm
from raymotion.eval.protocols import (PROTOCOL_LABELS, PROTOCOLS, VIBE_CHUNK_FRAMES, accel_over_chunks,
                                      scored_rows)
from raymotion.geometry import axis_angle_to_rotmat, rot6d_to_rotmat
from raymotion.models.regressor import MeanParams, RegressorOutput, push_context, start_context

METRIC_KEYS = ("pa_mpjpe_mm", "mpjpe_mm", "pve_mm", "accel_error_mm")
"""The headline metrics, in the order tables show them (the one list: reports, sweeps, the CLI)."""
METRIC_LABELS = {"pa_mpjpe_mm": "PA-MPJPE (mm)", "mpjpe_mm": "MPJPE (mm)", "pve_mm": "PVE (mm)",
                 "accel_error_mm": "Accel. error (mm/frame^2)"}
"""Each headline metric as a table row names it."""
SCORE_KEYS = ("mpjpe_mm", "mpjpe_mm_se", "pa_mpjpe_mm", "pa_mpjpe_mm_se", "pve_mm", "pve_mm_se", "accel_error_mm",
              "accel_error_mm_se", "pred_motion_mm", "true_motion_mm", "num_frames")
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


def context_chains(clip_index_N: np.ndarray, frame_N: np.ndarray, *, gap: int) -> list[list[int]]:
    """The rows of a split grouped into the sequences a FiLM regressor reads, each in frame order.

    A chain is one clip's frames with the same frame index modulo ``gap``, so consecutive entries are
    ``gap`` frames apart, the spacing of the refinement's windows (``train.video_gap``); with gap 1 a chain
    is a whole clip. Chains are ordered by (clip, frame of their first row).

    Args:
        clip_index_N, frame_N: (N,) each row's clip (manifest row) and frame index.
        gap: frames between a frame and its previous one in context.

    Returns:
        Lists of row indices into the N rows; together they hold every row once.
    """
    if gap < 1:
        raise ValueError(f"gap={gap} must be >= 1 frame (train.video_gap)")
    chains: dict[tuple[int, int], list[int]] = defaultdict(list)
    for n in sorted(range(len(frame_N)), key=lambda n: (int(clip_index_N[n]), int(frame_N[n]))):
        chains[(int(clip_index_N[n]), int(frame_N[n]) % gap)].append(n)
    return sorted(chains.values(), key=lambda rows: (int(clip_index_N[rows[0]]), int(frame_N[rows[0]])))


def predict_in_context(model: nn.Module, frames, *, batch_size: int, gap: int,
                       device: torch.device) -> Iterator[tuple[dict, RegressorOutput]]:
    """A FiLM regressor's predictions over a split, each frame in the context of its own previous ones.

    Every chain (``context_chains``: one clip's frames ``gap`` apart) is read in frame order, each frame
    conditioned on the model's detached predictions of the 2 frames before it in the chain. The start rule
    (``start_context``): the history before a chain's first frame is that frame's context-free prediction,
    twice, so frame 0 gets [c0, c0], frame 1 [c0, y0], frame n >= 2 [y(n - 2), y(n - 1)] (c: context-free,
    y: FiLM predictions, in units of ``gap``). The refinement step reads its 3-frame windows by the same
    rule (``train.step.video_params``). Chains advance together: step k predicts the k-th frame of every
    chain that has one, in batches of at most ``batch_size``.

    Args:
        frames: a LabelledFrames split (items with ``image``; ``clip_and_frame()``).
        device: where the model is.

    Yields:
        (collated items, their predictions), batch by batch.
    """
    chains = context_chains(*frames.clip_and_frame(), gap=gap)
    history: list[Tensor | None] = [None] * len(chains)  # (2, P) per chain: the context of its next frame
    for k in range(max(len(chain) for chain in chains)):
        live = [c for c, chain in enumerate(chains) if len(chain) > k]
        for start in range(0, len(live), batch_size):
            part = live[start:start + batch_size]
            batch = default_collate([frames[chains[c][k]] for c in part])
            images_B3HW = batch["image"].to(device)
            context_B2P = start_context(model, images_B3HW) if k == 0 else torch.stack([history[c] for c in part])
            params = model(images_B3HW, context_B2P)
            for c, context_2P in zip(part, push_context(context_B2P, params)):
                history[c] = context_2P
            yield batch, params


def _single_frame_batches(model: nn.Module, frames, *, batch_size: int,
                          device: torch.device) -> Iterator[tuple[dict, RegressorOutput]]:
    for start in range(0, len(frames), batch_size):
        batch = default_collate([frames[i] for i in range(start, min(start + batch_size, len(frames)))])
        yield batch, model(batch["image"].to(device))


@torch.no_grad()
def predict_and_truth(model: nn.Module, body_model: BodyModel, frames, *, batch_size: int = 64,
                      context_gap: int = 1) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """One pass over ``frames`` (a LabelledFrames dataset; each item is read once).

    A regressor with FiLM (``model.film``) is run sequentially over each clip (``predict_in_context``, its
    context ``context_gap`` frames apart: the refinement's ``train.video_gap``); any other model frame by
    frame, in dataset order.

    Returns:
        pred: ``eval_joints_NE3`` and ``verts_NV3`` of the model's bodies;
        truth: ``eval_joints_NE3`` (labels, camera frame), ``verts_NV3`` (the labelled body posed at the origin
            in the camera's orientation), ``verts_pelvis_N3`` (that body's pelvis, for aligning the vertices) and
            ``body_eval_joints_NE3`` (that body's evaluation joints: the 'neutral' ground truth of eval.protocol);
        clip_index_N, frame_N: which clip and frame each row is.
    """
    model.eval()
    pred: dict[str, list[Tensor]] = defaultdict(list)
    truth: dict[str, list[Tensor]] = defaultdict(list)
    clip_index, frame = [], []
    device = next(model.parameters(), torch.empty(0)).device
    if getattr(model, "film", None) is not None:
        batches = predict_in_context(model, frames, batch_size=batch_size, gap=context_gap, device=device)
    else:
        batches = _single_frame_batches(model, frames, batch_size=batch_size, device=device)
    for batch, params in batches:
        out = body_model(rotmats_BJ33=params.rotmats_BJ33.float(), betas_BK=params.betas_BK.float())
        pred["eval_joints_NE3"].append(out.eval_joints_B143.cpu())
        pred["verts_NV3"].append(out.verts_BV3.cpu())
        gt = body_model(rotmats_BJ33=axis_angle_to_rotmat(batch["pose_cam"].to(device)), betas_BK=batch["betas"].to(device))
        truth["eval_joints_NE3"].append(batch["eval_joints3d"])
        truth["verts_NV3"].append(gt.verts_BV3.cpu())
        truth["verts_pelvis_N3"].append(_pelvis(gt.eval_joints_B143).cpu())  # the posed body sits at the origin
        truth["body_eval_joints_NE3"].append(gt.eval_joints_B143.cpu())  # 'neutral' ground truth (eval.protocol)
        clip_index.append(np.asarray(batch["clip_index"]))
        frame.append(np.asarray(batch["frame"]))
    return (
        {k: torch.cat(v) for k, v in pred.items()},
        {k: torch.cat(v) for k, v in truth.items()},
        np.concatenate(clip_index),
        np.concatenate(frame),
    )


def check_finite(pred: dict[str, Tensor], truth: dict[str, Tensor], clip_index_N: np.ndarray,
                 frame_N: np.ndarray) -> None:
    """Raise a ValueError when a prediction or ground-truth array is NaN/inf for some frame (named by clip index
    and frame): a metric is never silently NaN. Labels and body models are checked when loaded, so this
    names a model whose outputs are not finite."""
    for side, arrays in (("the model's prediction", pred), ("the ground truth", truth)):
        for name, values in arrays.items():
            bad_N = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
            if bad_N.any():
                n = int(bad_N.nonzero()[0])
                raise ValueError(f"{side} ({name}) is not finite for {int(bad_N.sum())} of {len(values)} frames "
                                 f"(first: clip {int(clip_index_N[n])} of the manifest, frame {int(frame_N[n])}); "
                                 "the metrics would be NaN")


def frame_errors(pred: dict[str, Tensor], truth: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per-frame errors (N,) in mm: ``mpjpe_mm``, ``pa_mpjpe_mm`` and ``pve_mm`` (METHOD.md 6)."""
    pj, tj = pred["eval_joints_NE3"], truth["eval_joints_NE3"]
    return {
        "mpjpe_mm": mpjpe_mm(pj, tj),
        "pa_mpjpe_mm": pa_mpjpe_mm(pj, tj),
        "pve_mm": pve_mm(pred["verts_NV3"], truth["verts_NV3"], _pelvis(pj), truth["verts_pelvis_N3"]),
    }


def score(pred: dict[str, Tensor], truth: dict[str, Tensor], clip_index_N: np.ndarray, frame_N: np.ndarray) -> dict[str, float]:
    """METHOD.md 6 metrics, plus frame-to-frame joint motion of the prediction and of the truth (mm).

    Each per-frame metric ``m`` comes with ``m_se``, the standard error of its mean with the clips as the
    independent units (``clustered_mean_se``): frames of one clip are not independent draws. Non-finite
    predictions or labels raise (``check_finite``)."""
    check_finite(pred, truth, clip_index_N, frame_N)
    pj, tj = pred["eval_joints_NE3"], truth["eval_joints_NE3"]
    metrics: dict[str, float] = {}
    cluster_N = torch.as_tensor(clip_index_N)
    for name, errors_N in frame_errors(pred, truth).items():  # mean, and its standard error over clips
        metrics[name], metrics[f"{name}_se"] = clustered_mean_se(errors_N, cluster_N)
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
    metrics["accel_error_mm_se"] = float(np.std(accels, ddof=1) / np.sqrt(len(accels))) if len(accels) > 1 else float("nan")
    metrics["pred_motion_mm"] = float(np.mean(pred_motion)) if pred_motion else float("nan")
    metrics["true_motion_mm"] = float(np.mean(true_motion)) if true_motion else float("nan")
    metrics["num_frames"] = float(len(clip_index_N))
    return metrics


def score_protocol(pred: dict[str, Tensor], truth: dict[str, Tensor], clip_index_N: np.ndarray, frame_N: np.ndarray,
                   labels: dict[str, np.ndarray], *, protocol: str) -> dict[str, float]:
    """``score``'s keys under an evaluation protocol (``raymotion.eval.protocols``): only the frames it scores,
    against the ground truth it names; a metric the protocol does not report (spin: PVE, acceleration) is NaN.

    Args:
        labels: the protocol's label columns (``protocols.PROTOCOL_LABELS``) of each row, (N, ...).
        protocol: a key of ``protocols.PROTOCOLS`` ('synthetic' is ``score`` itself).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"eval.protocol={protocol!r} is not a protocol; choose one of {', '.join(PROTOCOLS)}")
    spec = PROTOCOLS[protocol]
    if spec.name == "synthetic":
        return score(pred, truth, clip_index_N, frame_N)
    rows, chunks = scored_rows(spec, labels, clip_index_N, frame_N)
    if len(rows) == 0:
        chunked = f", in whole {VIBE_CHUNK_FRAMES}-frame chunks of a clip" if spec.frames == "keypoints" else ""
        raise ValueError(f"eval.protocol={protocol}: none of the {len(clip_index_N)} frames passes its frame rule "
                         f"({spec.frames}{chunked}); check the split's labels (campose_valid, joints2d_conf) and clip "
                         f"lengths, or choose another protocol ({', '.join(PROTOCOLS)})")
    if spec.ground_truth == "neutral":
        truth = {**truth, "eval_joints_NE3": truth["body_eval_joints_NE3"]}
    elif not np.asarray(labels["has_joints3d"])[rows].all():
        raise ValueError(f"eval.protocol={protocol} scores against the labels' 3D joints, but "
                         f"{int((~np.asarray(labels['has_joints3d'], bool)[rows]).sum())} of its frames have none "
                         "(has_joints3d false: e.g. SPIN's 3dpw_test.npz holds SMPL but no joints); import 3DPW from its "
                         "sequence files (raymotion import 3dpw), or use eval.protocol=vibe (ground truth from the "
                         "label pose and shape)")
    index = torch.as_tensor(rows)
    metrics = score({k: v[index] for k, v in pred.items()}, {k: v[index] for k, v in truth.items()},
                    clip_index_N[rows], frame_N[rows])
    if not spec.pve:
        metrics["pve_mm"] = metrics["pve_mm_se"] = float("nan")
    if not spec.accel:
        metrics["accel_error_mm"] = metrics["accel_error_mm_se"] = float("nan")
    elif chunks:
        metrics["accel_error_mm"] = accel_over_chunks(pred["eval_joints_NE3"], truth["eval_joints_NE3"], chunks,
                                                      clip_index_N)
        metrics["accel_error_mm_se"] = float("nan")
    return metrics


def labels_in_order(frames, clip_index_N: np.ndarray, frame_N: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Label columns of ``frames`` (a LabelledFrames split) for rows given by (clip index, frame), in that order."""
    row_of = {key: i for i, key in enumerate(zip(*(a.tolist() for a in frames.clip_and_frame())))}
    index = np.array([row_of[(int(c), int(f))] for c, f in zip(clip_index_N, frame_N)], dtype=np.int64)
    return {name: values[index] for name, values in frames.frame_labels(names).items()}


def evaluate(model: nn.Module, body_model: BodyModel, frames, *, context_gap: int = 1,
             protocol: str = "synthetic") -> dict[str, float]:
    """Score ``model`` on a LabelledFrames split (val or test) under ``protocol`` (``eval.protocol``;
    ``score_protocol``); ``context_gap``: see ``predict_and_truth``."""
    result = predict_and_truth(model, body_model, frames, context_gap=context_gap)
    if protocol == "synthetic":
        return score(*result)
    return score_protocol(*result, labels_in_order(frames, result[2], result[3], PROTOCOL_LABELS), protocol=protocol)


def _in_frame_order(pred: dict[str, Tensor], truth: dict[str, Tensor], clip_index_N: np.ndarray,
                    frame_N: np.ndarray) -> tuple[dict, dict, np.ndarray]:
    """Rows sorted by (clip, frame): single-frame and FiLM models visit a split in different orders."""
    order_N = torch.as_tensor(np.lexsort((frame_N, clip_index_N)))
    return ({k: v[order_N] for k, v in pred.items()}, {k: v[order_N] for k, v in truth.items()},
            clip_index_N[order_N.numpy()])


def paired_change(model_a: nn.Module, model_b: nn.Module, body_model: BodyModel, frames, *,
                  context_gap_a: int = 1, context_gap_b: int = 1) -> dict[str, float]:
    """The change from ``model_a`` to ``model_b`` on the same frames: for each per-frame metric ``m``
    (``frame_errors``), ``m`` = mean over frames of (b's error - a's error), negative where b is better, and
    ``m_se``, its paired standard error over clips (``clustered_mean_se`` of the per-frame differences). The
    pairing removes what the two models share (which frames are hard), so their gap is resolved far more
    finely than either mean. ``context_gap_a/b``: see ``predict_and_truth`` (FiLM models)."""
    first = predict_and_truth(model_a, body_model, frames, context_gap=context_gap_a)
    second = predict_and_truth(model_b, body_model, frames, context_gap=context_gap_b)
    check_finite(*first)
    check_finite(*second)
    pred_a, truth, clip_index_N = _in_frame_order(*first)
    pred_b, _, _ = _in_frame_order(*second)
    errors_a, errors_b = frame_errors(pred_a, truth), frame_errors(pred_b, truth)
    cluster_N = torch.as_tensor(clip_index_N)
    change: dict[str, float] = {}
    for name in errors_a:
        change[name], change[f"{name}_se"] = clustered_mean_se(errors_b[name] - errors_a[name], cluster_N)
    return change

"""Does the flow loss carry signal? Evaluate it at the ground-truth meshes and at alternatives.

Legend: B pairs, V vertices, J = 24 joints, S crop size.
For labelled video pairs (synthetic data), the loss is computed for:
- ``truth``: the true meshes of frames t and t+1, projected with the true camera into each frame's crop;
- ``static``: frame t's mesh for both frames (what a network that ignores motion predicts);
- ``jitter``: the true poses with independent noise in each frame (a jittery network);
- ``offset``: the true poses with the same error in both frames (a consistently wrong network).
The loss is useful only when ``truth`` scores clearly below ``static`` (FACTS.md's gate: on >= 48 pairs,
mean truth/static <= 0.3, median <= 0.1, truth below static in >= 90 % of pairs).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import default_collate

from raymotion.body.body_model import BodyModel, load_body_model
from raymotion.config import Config, LossConfig
from raymotion.data.video_pairs import VideoPairs
from raymotion.geometry import axis_angle_to_rotmat, image_to_crop, perspective_project
from raymotion.losses.consistency import flow_loss_at

GATE_MEAN, GATE_MEDIAN, GATE_WIN_RATE, GATE_MIN_PAIRS = 0.3, 0.1, 0.9, 48
JITTER_STD_RAD = 0.05  # ~3 deg per axis-angle component, independently per frame
OFFSET_STD_RAD = 0.15  # ~9 deg, the same error in both frames
PAPER_LOSS = {"visibility_mode": "zbuffer", "normaliser_floor_px": 0.0}
"""The paper's exact form of the flow loss (z-buffer visibility, no normaliser floor), the gate's reference."""


def loss_variants(loss: LossConfig) -> dict[str, dict[str, object]]:
    """The gate's loss variants as ``flow_loss_at`` options: 'paper' (``PAPER_LOSS``) and 'config', the loss
    that training runs (``loss.flow_visibility``, ``loss.flow_normaliser_floor_px``; with the defaults the
    measured improvements of FACTS.md). Both reject pairs at ``loss.flow_max_224``."""
    return {
        "paper": {**PAPER_LOSS, "max_flow_224": loss.flow_max_224},
        "config": {"visibility_mode": loss.flow_visibility, "normaliser_floor_px": loss.flow_normaliser_floor_px,
                   "max_flow_224": loss.flow_max_224},
    }


def crop_vertices(
    body_model: BodyModel,
    *,
    pose_B243: Tensor,
    betas_BK: Tensor,
    transl_cam_B3: Tensor,
    intrinsics_B4: Tensor,
    crop_B3: Tensor,
    crop_size: int,
) -> Tensor:
    """True vertices in crop pixels with camera depth: (B, V, 3) = (x, y, z metres).

    ``pose_B243`` is the camera-frame pose (labels ``pose_cam``), ``transl_cam_B3`` the labels'
    translation, ``intrinsics_B4`` (fx, fy, cx, cy) and ``crop_B3`` (centre x, centre y, side) in image
    pixels.
    """
    out = body_model(rotmats_BJ33=axis_angle_to_rotmat(pose_B243), betas_BK=betas_BK)
    image_BV2 = perspective_project(
        out.verts_BV3, focal_length=intrinsics_B4[:, :2], principal_point=intrinsics_B4[:, 2:], transl_B3=transl_cam_B3
    )
    crop_BV2 = image_to_crop(image_BV2, box_center_B2=crop_B3[:, :2], box_size_B=crop_B3[:, 2], crop_size=crop_size)
    depth_BV1 = out.verts_BV3[..., 2:] + transl_cam_B3[:, None, 2:]
    return torch.cat([crop_BV2, depth_BV1], dim=-1)


@dataclass(frozen=True, slots=True)
class GateRow:
    """One (flow source, loss variant) line of the gate table."""

    flow: str
    variant: str
    pairs: int
    truth_over_static_mean: float
    truth_over_static_median: float
    truth_beats_static: float
    jitter_over_truth_mean: float
    offset_over_truth_mean: float
    passes: bool


def _per_pair(out) -> np.ndarray:
    """Per-pair loss over both directions; NaN for pairs the loss did not keep."""
    values = ((out.per_pair_fwd_B + out.per_pair_bwd_B) / 2).detach().numpy()
    return np.where(out.kept_B.numpy(), values, np.nan)


@torch.no_grad()
def gate_table(body_model: BodyModel, pairs_by_flow: dict[str, object], *, loss: LossConfig, batch_size: int = 16,
               seed: int = 0) -> list[GateRow]:
    """The gate for each flow source (a VideoPairs dataset built with_labels=True) and loss variant
    (``loss_variants(loss)``)."""
    variants = loss_variants(loss)
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for flow_name, pairs in pairs_by_flow.items():
        losses: dict[tuple[str, str], list[np.ndarray]] = {}
        for start in range(0, len(pairs), batch_size):
            batch = default_collate([pairs[i] for i in range(start, min(start + batch_size, len(pairs)))])
            crop_size = batch["image1"].shape[-1]
            meshes = _candidate_meshes(body_model, batch, crop_size=crop_size, generator=generator)
            for variant, options in variants.items():
                for candidate, (pix1, pix2) in meshes.items():
                    out = flow_loss_at(pix1, pix2, body_model.faces_F3, batch["flow_fwd"], batch["flow_bwd"],
                                       crop_size=crop_size, perspective=True, **options)
                    losses.setdefault((variant, candidate), []).append(_per_pair(out))
        for variant in variants:
            truth, static, jitter, offset = (np.concatenate(losses[(variant, c)]) for c in ("truth", "static", "jitter", "offset"))
            valid = np.isfinite(truth) & np.isfinite(static)
            ratio = truth[valid] / np.maximum(static[valid], 1e-12)
            mean_ratio = float(truth[valid].mean() / max(static[valid].mean(), 1e-12))
            median_ratio = float(np.median(ratio))
            win = float((truth[valid] < static[valid]).mean())
            rows.append(
                GateRow(
                    flow=flow_name,
                    variant=variant,
                    pairs=int(valid.sum()),
                    truth_over_static_mean=mean_ratio,
                    truth_over_static_median=median_ratio,
                    truth_beats_static=win,
                    jitter_over_truth_mean=float(np.nanmean(jitter) / max(truth[valid].mean(), 1e-12)),
                    offset_over_truth_mean=float(np.nanmean(offset) / max(truth[valid].mean(), 1e-12)),
                    passes=valid.sum() >= GATE_MIN_PAIRS and mean_ratio <= GATE_MEAN and median_ratio <= GATE_MEDIAN
                    and win >= GATE_WIN_RATE,
                )
            )
    return rows


def _candidate_meshes(body_model: BodyModel, batch: dict[str, Tensor], *, crop_size: int,
                      generator: torch.Generator) -> dict[str, tuple[Tensor, Tensor]]:
    def project(pose: Tensor, frame: str) -> Tensor:
        return crop_vertices(
            body_model,
            pose_B243=pose,
            betas_BK=batch[f"betas{frame}"],
            transl_cam_B3=batch[f"transl_cam{frame}"],
            intrinsics_B4=batch[f"intrinsics{frame}"],
            crop_B3=batch[f"crop{frame}"],
            crop_size=crop_size,
        )

    pose1, pose2 = batch["pose_cam1"], batch["pose_cam2"]
    truth1, truth2 = project(pose1, "1"), project(pose2, "2")
    noise1 = JITTER_STD_RAD * torch.randn(pose1.shape, generator=generator)
    noise2 = JITTER_STD_RAD * torch.randn(pose2.shape, generator=generator)
    offset = OFFSET_STD_RAD * torch.randn(pose1.shape, generator=generator)
    offset[:, 0] = 0.0  # keep the global orientation: an offset there only turns the whole body
    return {
        "truth": (truth1, truth2),
        "static": (truth1, truth1),
        "jitter": (project(pose1 + noise1, "1"), project(pose2 + noise2, "2")),
        "offset": (project(pose1 + offset, "1"), project(pose2 + offset, "2")),
    }


def format_gate(rows: list[GateRow]) -> str:
    lines = [
        "flow loss at the true meshes vs alternatives (lower truth/static is better; gate: mean <= 0.3, "
        "median <= 0.1, wins >= 90 %, >= 48 pairs)",
        f"{'flow':<14}{'variant':<10}{'pairs':>6}{'mean t/s':>10}{'median t/s':>12}{'wins':>7}"
        f"{'jitter/t':>10}{'offset/t':>10}{'gate':>6}",
    ]
    for r in rows:
        lines.append(
            f"{r.flow:<14}{r.variant:<10}{r.pairs:>6}{r.truth_over_static_mean:>10.3f}"
            f"{r.truth_over_static_median:>12.3f}{r.truth_beats_static:>7.0%}{r.jitter_over_truth_mean:>10.1f}"
            f"{r.offset_over_truth_mean:>10.1f}{'pass' if r.passes else 'FAIL':>6}"
        )
    return "\n".join(lines)


def gate_rows_as_dicts(rows: list[GateRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def run_flow_gate(cfg: Config, *, max_clips: int) -> str:
    """``raymotion diagnose-flow``: the gate on the first ``max_clips`` clips of the video split (reads their
    labels) for the renderer's exact flow and ``flow.estimator``, with the loss variants of ``cfg.loss``;
    the table is also written to <data.root>/flow_gate_<crop>px.json."""
    body = load_body_model(cfg.body)
    common = dict(split="video", crop_size=cfg.data.crop_size, bbox_scale=cfg.data.bbox_scale,
                  max_clips=max_clips, with_labels=True, bad_input=cfg.data.bad_input, decoder=cfg.data.decoder)
    pairs = {
        "ground_truth": VideoPairs(cfg.data.root, flow="ground_truth", **common),
        cfg.flow.estimator: VideoPairs(cfg.data.root, flow=cfg.flow.estimator, flow_config=cfg.flow, **common),
    }
    rows = gate_table(body, pairs, loss=cfg.loss, seed=cfg.run.seed)
    out = Path(cfg.data.root) / f"flow_gate_{cfg.data.crop_size}px.json"
    out.write_text(json.dumps(gate_rows_as_dicts(rows), indent=2))
    return format_gate(rows) + f"\n(written to {out})"

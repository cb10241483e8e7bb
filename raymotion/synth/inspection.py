"""Looking at the benchmark: a contact sheet (`raymotion synth --preview`) and the flow report
(`raymotion synth --report`).

Legend: T frames, H, W image size, J = 24 SMPL joints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from raymotion.body.joints import NUM_SMPL_JOINTS, SMPL_PARENTS
from raymotion.config import Config
from raymotion.data.decode import read_video_pyav
from raymotion.flow.estimator import make_flow_estimator
from raymotion.data.manifest import read_manifest
from raymotion.synth.scene import SPLITS

PREVIEW_SCALE = 2
INTERIOR_MARGIN_PX = 2  # contact-sheet frames are drawn at twice the video size so the skeleton is legible


def _draw_labels(frame_HW3: np.ndarray, row: dict, *, scale: int) -> np.ndarray:
    image = cv2.resize(frame_HW3, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    joints_J2 = np.asarray(row["joints2d"], dtype=np.float64).reshape(NUM_SMPL_JOINTS, 2) * scale
    visible_J = np.asarray(row["joints2d_visible"], dtype=bool)
    for child, parent in enumerate(SMPL_PARENTS):
        if parent >= 0:
            a, b = joints_J2[parent], joints_J2[child]
            cv2.line(image, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (255, 255, 255), 1, cv2.LINE_AA)
    for joint, (x, y) in enumerate(joints_J2):
        colour = (0, 255, 0) if visible_J[joint] else (255, 0, 0)
        cv2.circle(image, (int(x), int(y)), 2, colour, -1, cv2.LINE_AA)
    x0, y0, x1, y1 = (np.asarray(row["box_xyxy"]) * scale).astype(int)
    cv2.rectangle(image, (x0, y0), (x1, y1), (255, 255, 0), 1)
    return image


def contact_sheet(cfg: Config, *, clips_per_split: int = 3, frames_per_clip: int = 4) -> Path:
    """Frames of a few clips per split with the ground-truth skeleton (green visible, red occluded) and
    box (yellow). Written to ``<out_dir>/preview.png``."""
    data_dir = Path(cfg.synth.out_dir)
    manifest = read_manifest(data_dir).to_pylist()
    rows = []
    for split in SPLITS:
        for clip in [m for m in manifest if m["split"] == split][:clips_per_split]:
            frames_THW3 = read_video_pyav(data_dir / clip["path"])
            labels = pq.read_table(data_dir / clip["labels_path"]).to_pylist()
            picks = np.linspace(0, len(labels) - 1, frames_per_clip).round().astype(int)
            tiles = [_draw_labels(frames_THW3[t], labels[t], scale=PREVIEW_SCALE) for t in picks]
            strip = np.concatenate(tiles, axis=1)
            cv2.putText(strip, f"{clip['clip_id']} {clip['motion']}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (255, 255, 255), 1, cv2.LINE_AA)
            rows.append(strip)
    if not rows:
        raise ValueError(f"{data_dir / 'manifest.parquet'} lists no clips to preview")
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    out = data_dir / "preview.png"
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out


@dataclass(frozen=True, slots=True)
class FlowReport:
    """Body motion and flow-estimator error of one split, in pixels at the model's crop size."""

    split: str
    pairs: int
    motion_px: float
    """Mean ground-truth flow magnitude on the body."""
    epe_px: float
    """Mean end-point error of the estimator on the body."""
    relative_epe: float
    """epe_px / motion_px over all body pixels of the split."""
    median_pair_relative_epe: float
    """Median over pairs of the per-pair relative error (robust to near-static pairs)."""
    interior_relative_epe: float
    """relative_epe on the body's interior: body pixels at least INTERIOR_MARGIN_PX from its outline,
    where the flow loss's eroded visibility keeps vertices (edges mix body and background motion)."""


def flow_report(cfg: Config, *, max_clips_per_split: int = 16) -> list[FlowReport]:
    """Score ``cfg.flow.estimator`` against the renderer's exact flow on decoded frames, per split.

    Pixels are rescaled to the crop the model sees: a square of ``data.bbox_scale`` x the box's longer side
    resized to ``data.crop_size``. Written to ``<out_dir>/flow_report.json`` too.
    """
    data_dir = Path(cfg.synth.out_dir)
    manifest = read_manifest(data_dir).to_pylist()
    estimator = make_flow_estimator(cfg.flow)
    reports = []
    for split in SPLITS:
        clips = [m for m in manifest if m["split"] == split and m["flow_path"]][:max_clips_per_split]
        if not clips:
            continue
        motion_sum = error_sum = interior_motion_sum = interior_error_sum = 0.0
        pair_ratios = []
        pairs = 0
        for clip in clips:
            frames_THW3 = read_video_pyav(data_dir / clip["path"])
            with np.load(data_dir / clip["flow_path"]) as flows:
                truth_THW2 = flows["forward"].astype(np.float32)
            boxes_T4 = np.stack(pq.read_table(data_dir / clip["labels_path"], columns=["box_xyxy"])["box_xyxy"].to_numpy(zero_copy_only=False))
            for t in range(truth_THW2.shape[0]):
                body_HW = np.isfinite(truth_THW2[t, ..., 0])
                if not body_HW.any():
                    continue
                box = boxes_T4[t]
                to_crop = cfg.data.crop_size / (cfg.data.bbox_scale * max(box[2] - box[0], box[3] - box[1]))
                estimate_HW2 = estimator(frames_THW3[t], frames_THW3[t + 1])
                truth_N2 = truth_THW2[t][body_HW] * to_crop
                error_N = np.linalg.norm(estimate_HW2[body_HW] * to_crop - truth_N2, axis=1)
                motion_N = np.linalg.norm(truth_N2, axis=1)
                kernel = np.ones((2 * INTERIOR_MARGIN_PX + 1,) * 2, np.uint8)
                interior_N = cv2.erode(body_HW.astype(np.uint8), kernel, borderValue=0)[body_HW].astype(bool)
                if interior_N.any():
                    interior_motion_sum += motion_N[interior_N].mean()
                    interior_error_sum += error_N[interior_N].mean()
                motion_sum += motion_N.sum() / motion_N.size
                error_sum += error_N.sum() / error_N.size
                pair_ratios.append(error_N.mean() / max(motion_N.mean(), 1e-6))
                pairs += 1
        reports.append(
            FlowReport(
                split=split,
                pairs=pairs,
                motion_px=float(motion_sum / pairs),
                epe_px=float(error_sum / pairs),
                relative_epe=float(error_sum / motion_sum),
                median_pair_relative_epe=float(np.median(pair_ratios)),
                interior_relative_epe=float(interior_error_sum / max(interior_motion_sum, 1e-9)),
            )
        )
    (data_dir / "flow_report.json").write_text(json.dumps([asdict(r) for r in reports], indent=2))
    return reports


def format_flow_report(reports: list[FlowReport], *, estimator: str, crop_size: int) -> str:
    lines = [
        f"flow estimator '{estimator}' vs the renderer's exact flow, on the body, px at a {crop_size} px crop",
        f"{'split':<10}{'pairs':>7}{'motion px':>11}{'EPE px':>9}{'EPE/motion':>12}{'median/pair':>13}"
        f"{'interior':>10}",
    ]
    for r in reports:
        lines.append(
            f"{r.split:<10}{r.pairs:>7}{r.motion_px:>11.3f}{r.epe_px:>9.3f}{r.relative_epe:>12.3f}"
            f"{r.median_pair_relative_epe:>13.3f}{r.interior_relative_epe:>10.3f}"
        )
    return "\n".join(lines)

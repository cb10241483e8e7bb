"""Evaluation protocols (``eval.protocol``): which frames are scored, against which ground truth, and how.

3DPW numbers in the literature depend on the protocol (/work/shared/FORMATS.md; SPIN evaluated with VIBE's code
gives 60.1 PA-MPJPE against 59.2 in its paper, VIBE#135), so every result records the one it used
(``Protocol.record``).

| protocol | frames | ground-truth joints | PVE | acceleration |
|---|---|---|---|---|
| synthetic | every frame | the labels' (eval_joints3d_cam) | vs the labelled body | per clip, mean over clips |
| spin | campose_valid | the labels' (gendered, as the 3DPW importer writes them) | - | - |
| vibe | > 6 of the 12 limb keypoints with confidence > 0.3; whole non-overlapping 16-frame chunks of them | the label pose and shape on the neutral body | vs the neutral body | over each clip's chunked frames, mean over all triples |

Every protocol aligns prediction and ground truth at their mid-hips (the 14 evaluation joints' hips: SPIN's
``H36M_TO_J14`` hips for joints; the same for the mesh), in millimetres; acceleration is mm/frame^2. SPIN's own
eval.py roots MPJPE at the H36M regressor's pelvis (joint 0), which the 14 evaluation joints do not carry: the
'spin' protocol here keeps SPIN's frames and ground truth and the mid-hip root (MMHuman3D's choice), and says so
in its record. VIBE's evaluator computes the acceleration over all chunks concatenated, so it also counts the two
triples that straddle each pair of clips; here they are left out.

Legend: N frames, E = 14 evaluation joints, J = 24 SMPL joints. Pure functions apart from ``score_protocol``'s
use of ``evaluate.score``; no training code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from raymotion.body.joints import COCO18_BODY_JOINTS, COCO18_JOINT_NAMES, SMPL_JOINT
from raymotion.eval.metrics import accel_error_mm, pelvis_from_hips

VIBE_KEYPOINT_THRESHOLD = 0.3
"""A limb keypoint counts as detected above this confidence (VIBE/TCMR's 3DPW frame filter)."""
VIBE_MIN_KEYPOINTS = 6
"""A frame is scored when more than this many of the 12 limb keypoints are detected."""
VIBE_CHUNK_FRAMES = 16
"""VIBE/TCMR score non-overlapping chunks of this many (valid) frames; the remainder of a clip is left out."""
VIBE_LIMB_JOINTS: tuple[int, ...] = tuple(SMPL_JOINT[COCO18_JOINT_NAMES[i]] for i in COCO18_BODY_JOINTS)
"""The 12 limb keypoints of COCO-18 as SMPL joint indices (the 3DPW importer maps poses2d onto SMPL joints)."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """One evaluation protocol: what ``score_protocol`` does, and what a result records."""

    name: str
    frames: str
    """'all', 'campose_valid' or 'keypoints' (VIBE's detected-limb rule, then whole 16-frame chunks)."""
    ground_truth: str
    """'labels' (eval_joints3d_cam as stored) or 'neutral' (the label pose and shape on the configured body)."""
    pve: bool
    accel: bool
    root: str = "mid-hips (the 14 evaluation joints' hips)"
    accel_units: str = "mm/frame^2"

    def record(self) -> dict[str, object]:
        """What a result stores about how it was computed."""
        return asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    "synthetic": Protocol(name="synthetic", frames="all", ground_truth="labels", pve=True, accel=True),
    "spin": Protocol(name="spin", frames="campose_valid", ground_truth="labels", pve=False, accel=False),
    "vibe": Protocol(name="vibe", frames="keypoints", ground_truth="neutral", pve=True, accel=True),
}
"""``eval.protocol`` -> its definition (module doc)."""

PROTOCOL_LABELS = ("campose_valid", "joints2d_conf", "joints2d_visible", "has_joints3d")
"""The label columns ``frame_mask`` reads (``LabelledFrames.frame_labels``)."""


def keypoints_valid(conf_NJ: np.ndarray) -> np.ndarray:
    """(N,) VIBE/TCMR's frame filter: more than 6 of the 12 limb keypoints with confidence > 0.3.

    Args:
        conf_NJ: (N, 24) 2D keypoint confidence per SMPL joint (labels' joints2d_conf).
    """
    detected_N = (conf_NJ[:, list(VIBE_LIMB_JOINTS)] > VIBE_KEYPOINT_THRESHOLD).sum(axis=1)
    return detected_N > VIBE_MIN_KEYPOINTS


def chunk_rows(clip_index_N: np.ndarray, frame_N: np.ndarray, keep_N: np.ndarray, *,
               chunk: int = VIBE_CHUNK_FRAMES) -> list[np.ndarray]:
    """Non-overlapping chunks of ``chunk`` kept rows per clip, in frame order; a clip's remainder is left out.

    Returns:
        Row index arrays (each of length ``chunk``), ordered by (clip, first frame).
    """
    chunks = []
    for clip in np.unique(clip_index_N):
        rows = np.flatnonzero((clip_index_N == clip) & keep_N)
        rows = rows[np.argsort(frame_N[rows], kind="stable")]
        chunks += [rows[start:start + chunk] for start in range(0, len(rows) - chunk + 1, chunk)]
    return chunks


def frame_mask(protocol: Protocol, labels: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) bool: the frames ``protocol`` scores, before chunking (``labels``: ``PROTOCOL_LABELS``, (N, ...))."""
    num = len(labels["campose_valid"])
    if protocol.frames == "all":
        return np.ones(num, dtype=bool)
    if protocol.frames == "campose_valid":
        return np.asarray(labels["campose_valid"], dtype=bool)
    return keypoints_valid(np.where(labels["joints2d_visible"], labels["joints2d_conf"], 0.0))


def accel_over_chunks(pred_NE3: Tensor, true_NE3: Tensor, chunks: list[np.ndarray],
                      clip_index_N: np.ndarray) -> float:
    """Acceleration error (mm/frame^2) over each clip's chunked rows joined in order, mean over every triple;
    each skeleton centred at its mid-hips first. NaN with no clip of 3 or more chunked rows."""
    by_clip: dict[int, list[np.ndarray]] = {}
    for rows in chunks:
        by_clip.setdefault(int(clip_index_N[rows[0]]), []).append(rows)
    errors = []
    for parts in by_clip.values():
        rows = np.concatenate(parts)
        if len(rows) < 3:
            continue
        p = pred_NE3[rows] - pelvis_from_hips(pred_NE3[rows])[:, None]
        t = true_NE3[rows] - pelvis_from_hips(true_NE3[rows])[:, None]
        errors.append(torch.as_tensor(accel_error_mm(p, t)).reshape(-1))
    return float(torch.cat(errors).mean()) if errors else float("nan")


def scored_rows(protocol: Protocol, labels: dict[str, np.ndarray], clip_index_N: np.ndarray,
                frame_N: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The rows ``protocol`` scores (sorted) and, for chunked protocols, its chunks (else [])."""
    keep_N = frame_mask(protocol, labels)
    if protocol.frames != "keypoints":
        return np.flatnonzero(keep_N), []
    chunks = chunk_rows(clip_index_N, frame_N, keep_N)
    rows = np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.int64)
    return rows, chunks

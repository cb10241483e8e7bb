"""The one writer every importer uses: clip folders (a frame list and labels.parquet) and manifest.parquet.

A dataset's frames stay where they are: each clip gets ``<split>/<clip_id>/frames.txt``, one absolute image path
per line in frame order (an image-sequence clip, docs/data_format.md; relative to the data folder for images
inside it, such as the frames ``boxes`` decodes from a video), unless the import copies them
(``copy_frames``: then into ``<split>/<clip_id>/frames/`` and listed relative to the data folder). Each clip
folder appears atomically (written in a hidden sibling, then renamed); the manifest is written last, through a
temporary file, so a crash leaves either the previous manifest or the new one. No Ray, no torch.

Legend: T = frames of one clip, J = joints; trailing digits are literal sizes.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from collections.abc import Callable

from tqdm import tqdm

from raymotion.body.joints import NUM_EVAL_JOINTS, NUM_SMPL_JOINTS
from raymotion.data.manifest import MANIFEST, MANIFEST_SCHEMA, read_manifest
from raymotion.importers.common import box_outside, clip_size, image_size
from raymotion.synth.writer import ClipDir, atomic_write_table, write_table

FRAME_LIST = "frames.txt"
"""Name of a clip's frame list (one image path per line, frame order)."""
NUM_BETAS = 10

# Every label column of a labelled clip (docs/data_format.md) and its per-frame size; importers give what
# their dataset has and ``complete_labels`` writes zeros for the rest, with the partial-label flags saying so.
LABEL_SIZES: dict[str, int] = {
    "pose": NUM_SMPL_JOINTS * 3, "pose_cam": NUM_SMPL_JOINTS * 3, "transl_cam": 3, "betas": NUM_BETAS,
    "intrinsics": 4, "cam_rotation": 9, "cam_translation": 3, "box_xyxy": 4, "joints2d": NUM_SMPL_JOINTS * 2,
    "joints2d_visible": NUM_SMPL_JOINTS, "joints2d_conf": NUM_SMPL_JOINTS, "joints3d_cam": NUM_SMPL_JOINTS * 3,
    "joints3d_conf": NUM_SMPL_JOINTS, "eval_joints2d": NUM_EVAL_JOINTS * 2, "eval_joints3d_cam": NUM_EVAL_JOINTS * 3,
}


@dataclass
class ImportSummary:
    """What an import kept and what it dropped, and why (``raymotion import`` prints ``format()``)."""

    source: str
    out_dir: Path
    clips: int = 0
    frames: int = 0
    dropped: Counter = field(default_factory=Counter)
    """reason -> count (frames, or clips where the reason says so)."""
    examples: dict[str, str] = field(default_factory=dict)
    """reason -> the first dropped item's description (file, frame), to find it."""
    notes: list[str] = field(default_factory=list)
    """How labels were derived, where the user should know (e.g. which body model posed the ground truth)."""

    def drop(self, reason: str, *, count: int = 1, example: str = "") -> None:
        """Count ``count`` items left out for ``reason``; ``example`` names the first."""
        self.dropped[reason] += count
        self.examples.setdefault(reason, example)

    def format(self) -> str:
        lines = [f"imported {self.source} -> {self.out_dir}: kept {self.clips} clip(s), {self.frames} frame(s)"]
        for reason, count in sorted(self.dropped.items()):
            example = f" (first: {self.examples[reason]})" if self.examples.get(reason) else ""
            lines.append(f"  dropped {count}: {reason}{example}")
        if not self.dropped:
            lines.append("  dropped nothing")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def complete_labels(labels: dict[str, np.ndarray], *, clip_id: str) -> dict[str, np.ndarray]:
    """A labelled clip's full label table from the columns a dataset has: (T, ...) arrays keyed by column.

    Columns of ``LABEL_SIZES`` that are absent are written as zeros (finite placeholders), and the partial-label
    flags say what is real unless the importer gave them: ``has_smpl`` False without ``pose_cam``,
    ``has_joints3d`` False without ``joints3d_cam``, ``joints2d_visible`` False without ``joints2d``.
    ``box_xyxy`` is required (every clip is cropped by it).
    """
    if "box_xyxy" not in labels:
        raise ValueError(f"clip {clip_id}: the importer gave no box_xyxy (every clip needs its person boxes)")
    num_frames = len(labels["box_xyxy"])
    out: dict[str, np.ndarray] = {"clip_id": np.array([clip_id] * num_frames), "frame": np.arange(num_frames, dtype=np.int32)}
    for name, size in LABEL_SIZES.items():
        if name in labels:
            values = np.asarray(labels[name]).reshape(num_frames, size)
        elif name == "joints2d_visible":
            values = np.zeros((num_frames, size), dtype=bool)
        elif name == "joints2d_conf":
            values = out["joints2d_visible"].astype(np.float32)
        elif name == "joints3d_conf":
            values = np.full((num_frames, size), 1.0 if "joints3d_cam" in labels else 0.0, np.float32)
        else:
            values = np.zeros((num_frames, size), dtype=np.float32)
        out[name] = values.astype(bool) if name == "joints2d_visible" else values.astype(np.float32)
    out["has_smpl"] = np.asarray(labels.get("has_smpl", np.full(num_frames, "pose_cam" in labels)), dtype=bool)
    out["has_joints3d"] = np.asarray(labels.get("has_joints3d", np.full(num_frames, "joints3d_cam" in labels)),
                                     dtype=bool)
    out["campose_valid"] = np.asarray(labels.get("campose_valid", np.ones(num_frames, bool)), dtype=bool)
    out["gender"] = np.asarray(labels.get("gender", np.full(num_frames, "neutral")), dtype=object).astype(str)
    unknown = sorted(set(labels) - set(out))
    if unknown:
        raise ValueError(f"clip {clip_id}: label column(s) {', '.join(unknown)} are not in docs/data_format.md")
    return out


class ContractWriter:
    """Writes imported clips into ``out_dir`` in raymotion's layout (docs/data_format.md)."""

    def __init__(self, out_dir: str | Path, *, copy_frames: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.copy_frames = copy_frames
        self.rows: list[dict[str, object]] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Imports add up: several datasets (or splits) go into one folder; a clip imported again is replaced.
        self.previous = read_manifest(self.out_dir).to_pylist() if (self.out_dir / MANIFEST).is_file() else []

    def add_clip(self, *, clip_id: str, split: str, images: list[Path], labels: dict[str, np.ndarray] | None,
                 fps: float, width: int, height: int, subject: int = 0, motion: str = "") -> None:
        """One clip: its images (frame order) and labels (one row per image; None for an unlabelled clip, which
        still gets its ``box_xyxy`` through ``labels`` where boxes are known: pass {'box_xyxy': ...}).

        ``width``/``height``: the frame size, or 0 where the images differ in size. Labels with only
        ``box_xyxy`` (the ``video`` split) are written as just clip_id, frame, box_xyxy.
        """
        if any(r["clip_id"] == clip_id for r in self.rows):
            raise ValueError(f"clip id {clip_id!r} is imported twice; clip ids must be unique")
        clip_dir = f"{split}/{clip_id}"
        shutil.rmtree(self.out_dir / split / clip_id, ignore_errors=True)  # an earlier import of this clip
        with ClipDir(self.out_dir / split / clip_id) as tmp:
            if self.copy_frames:
                (tmp / "frames").mkdir()
                listed = []
                for t, image in enumerate(images):
                    name = f"{t:06d}{image.suffix.lower()}"
                    shutil.copy2(image, tmp / "frames" / name)
                    listed.append(f"{clip_dir}/frames/{name}")
            else:
                listed = [self._listed(image) for image in images]
            (tmp / FRAME_LIST).write_text("".join(f"{line}\n" for line in listed))
            labels_path = ""
            if labels is not None:
                if set(labels) == {"box_xyxy"}:
                    boxes_T4 = np.asarray(labels["box_xyxy"], dtype=np.float32)
                    table = {"clip_id": np.array([clip_id] * len(boxes_T4)),
                             "frame": np.arange(len(boxes_T4), dtype=np.int32), "box_xyxy": boxes_T4}
                else:
                    table = complete_labels(labels, clip_id=clip_id)
                if len(table["frame"]) != len(images):
                    raise ValueError(f"clip {clip_id}: {len(table['frame'])} label rows for {len(images)} images")
                write_table(tmp / "labels.parquet", table)
                labels_path = f"{clip_dir}/labels.parquet"
        self.rows.append({"clip_id": clip_id, "path": f"{clip_dir}/{FRAME_LIST}", "labels_path": labels_path,
                          "flow_path": "", "frames": len(images), "fps": float(fps), "width": int(width),
                          "height": int(height), "subject": int(subject), "motion": motion, "split": split})

    def _listed(self, image: Path) -> str:
        """How a frame list names an image: relative to the data folder when inside it (frames an import
        decoded there), else absolute (a dataset's frames, left where they are)."""
        image = Path(image).resolve()
        root = self.out_dir.resolve()
        return str(image.relative_to(root)) if image.is_relative_to(root) else str(image)

    def finish(self) -> Path:
        """Write manifest.parquet atomically: the clips of earlier imports into this folder that were not
        imported again, then the clips added, in order. Returns its path."""
        if not self.rows:
            raise ValueError(f"nothing was imported into {self.out_dir}: every clip was dropped (see the summary)")
        path = self.out_dir / MANIFEST
        added = {row["clip_id"] for row in self.rows}
        rows = [row for row in self.previous if row["clip_id"] not in added] + self.rows
        atomic_write_table(path, pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA))
        return path


def import_image_set(*, source: Path, images: list[Path], boxes_N4: np.ndarray,
                     labels_of: Callable[[np.ndarray], dict[str, np.ndarray]], out_dir: str | Path, split: str,
                     clip_frames: int, copy_frames: bool, progress: bool) -> ImportSummary:
    """Import a set of unrelated labelled images (spin-npz, humandata): each image checked (readable; its box
    inside it: else left out and counted), the kept ones grouped in file order into clips of ``clip_frames``
    (``<source stem>_<k>``; manifest width/height 0 where their sizes differ), labelled by
    ``labels_of(rows)`` (the file's row indices of a clip's images)."""
    if clip_frames < 1:
        raise ValueError(f"importer.clip_frames={clip_frames} must be >= 1 (images per imported clip)")
    summary = ImportSummary(source=str(source), out_dir=Path(out_dir))
    writer = ContractWriter(out_dir, copy_frames=copy_frames)
    kept: list[tuple[int, tuple[int, int]]] = []
    for n in tqdm(range(len(images)), desc=f"import {source.name}", unit="image", disable=not progress):
        size = image_size(images[n])
        if size is None:
            summary.drop("image missing or unreadable", example=f"{images[n]} (row {n})")
        elif box_outside(boxes_N4[n], width=size[0], height=size[1]):
            summary.drop("box empty or outside its image",
                         example=f"{images[n]} (row {n}, box {np.round(boxes_N4[n], 1).tolist()})")
        else:
            kept.append((n, size))
    for k, start in enumerate(range(0, len(kept), clip_frames)):
        chunk = kept[start:start + clip_frames]
        rows = np.array([n for n, _ in chunk])
        width, height = clip_size([size for _, size in chunk])
        writer.add_clip(clip_id=f"{source.stem}_{k:05d}", split=split, images=[images[n] for n in rows.tolist()],
                        labels=labels_of(rows), fps=0.0, width=width, height=height, motion=source.stem)
        summary.clips += 1
        summary.frames += len(chunk)
    writer.finish()
    return summary

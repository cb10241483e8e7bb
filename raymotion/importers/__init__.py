"""Importers: the field's datasets and a user's own videos -> raymotion's data format (docs/data_format.md).

One module per format, one shared writer (``writer.ContractWriter``: clip folders with a frame list and
labels.parquet, then manifest.parquet, atomically). Formats and their details: docs/importing.md and
/work/shared/FORMATS.md. ``run_import`` is what ``raymotion import FORMAT SRC --out DIR`` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from raymotion.config import BodyConfig, ImportConfig

if TYPE_CHECKING:  # the CLI imports this package for IMPORT_FORMATS: the writer (pyarrow) loads when used
    from raymotion.importers.writer import ImportSummary

IMPORT_FORMATS = ("spin-npz", "3dpw", "humandata", "boxes")
"""The FORMAT argument of ``raymotion import``."""


def run_import(fmt: str, source: str | Path, *, out_dir: str | Path, cfg: ImportConfig, body_cfg: BodyConfig | None = None,
               images: str | Path | None = None,
               boxes: str | Path | None = None, split: str | None = None, copy_frames: bool = False,
               progress: bool = True) -> ImportSummary:
    """Import ``source`` in format ``fmt`` into ``out_dir`` (adding to what earlier imports wrote there).

    ``body_cfg``: the body model labels are derived with (3dpw: transl_cam, boxes, evaluation joints; default
    ``BodyConfig()``). ``images``: the image root (spin-npz, humandata; default: the file's folder). ``boxes``: the boxes file (boxes).
    ``split``: the split the clips go to (spin-npz, humandata: default 'labelled'; 3dpw: default from the
    sequence file's folder, train -> labelled, validation -> val, test -> test; boxes: always 'video').
    """
    source = Path(source)
    if fmt == "boxes":
        from raymotion.importers.boxes import import_boxes

        if boxes is None:
            raise ValueError("raymotion import boxes needs --boxes FILE (.csv, .json, or a PHALP / VIBE tracker pickle)")
        if split not in (None, "video"):
            raise ValueError(f"--split {split}: boxes imports unlabelled clips, which go to the 'video' split")
        return import_boxes(source, boxes, out_dir=out_dir, min_track_frames=cfg.min_track_frames, fps=cfg.fps,
                            copy_frames=copy_frames, progress=progress)
    if boxes is not None:
        raise ValueError(f"--boxes is for the boxes format only, not {fmt}")
    image_root = Path(images) if images is not None else source.parent
    if fmt == "spin-npz":
        from raymotion.importers.spin_npz import import_spin_npz

        return import_spin_npz(source, image_root=image_root, out_dir=out_dir, split=split or "labelled",
                               scale_factor=cfg.spin_scale_factor, clip_frames=cfg.clip_frames,
                               copy_frames=copy_frames, progress=progress)
    if fmt == "3dpw":
        from raymotion.importers.pw3d import import_3dpw

        return import_3dpw(source, out_dir=out_dir, body_cfg=body_cfg or BodyConfig(), split=split,
                           copy_frames=copy_frames, progress=progress)
    if fmt == "humandata":
        from raymotion.importers.humandata import import_humandata

        return import_humandata(source, image_root=image_root, out_dir=out_dir, split=split or "labelled",
                                clip_frames=cfg.clip_frames, copy_frames=copy_frames, progress=progress)
    raise ValueError(f"unknown import format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")

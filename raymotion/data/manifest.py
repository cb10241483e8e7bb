"""A benchmark folder's manifest (``read_manifest``, docs/data_format.md) and its rows -> windows of consecutive
frames for the frame-pair pipeline. Pure Python and pyarrow; no torch, no Ray, no DALI (pipeline actors
import this, and their start-up time is part of every run).

A window is a run of consecutive frames of one clip that a pipeline decodes in one go (decoding in order
is 2-5x faster than seeking per pair, FACTS.md). Consecutive windows overlap by ``gap`` frames, so that
every pair (t, t + gap) of a clip lies in exactly one window: the pairs of a window are those whose first
frame t is in its first ``num_frames - gap`` frames.

Cost: a clip of F frames is cut into about (F - gap) / (window - gap) windows, so about
gap / (window - gap) extra frames are decoded per frame, plus, when a window starts between keyframes,
the frames from the keyframe before it (the decoder counts those; choose a window that covers the
keyframe interval, or the whole clip for short clips).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raymotion.config import BadInput, ConfigError
from raymotion.data.boxes import natural_key

logger = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema([("clip_id", pa.string()), ("path", pa.string()), ("labels_path", pa.string()),
                             ("flow_path", pa.string()), ("frames", pa.int64()), ("fps", pa.float64()),
                             ("width", pa.int64()), ("height", pa.int64()), ("subject", pa.int64()),
                             ("motion", pa.string()), ("split", pa.string())])
"""The columns of manifest.parquet and their types (docs/data_format.md)."""
MANIFEST_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
"""The columns of manifest.parquet, in order."""
UNRENDERED = "unrendered.txt"
"""In a synthetic benchmark rendered only for the clips one run reads (``synth.generate``'s ``only``): the ids of
the planned clips not rendered yet, one per line; absent when every clip is there. The manifest lists them all."""
BAD_INPUT_POLICIES: tuple[str, ...] = typing.get_args(BadInput)
"""What readers do with bad input (``data.bad_input``): 'fail' raises naming it, 'skip' leaves it out and counts it."""


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Frame files of an image-sequence clip (a folder's other files are ignored; case-insensitive)."""
FRAME_LIST_SUFFIX = ".txt"
"""A clip ``path`` ending in this is a frame list: one image path per line (docs/data_format.md)."""


def clip_frame_paths(data_dir: str | Path, row: Mapping) -> list[Path] | None:
    """The frame files of an image-sequence clip, in frame order, or None for a video clip.

    A manifest row's ``path`` (relative to ``data_dir``, or absolute) names a video file, a folder of frames
    (its ``IMAGE_SUFFIXES`` files in natural order of their names: ``img_2.png`` before ``img_10.png``), or a
    ``.txt`` frame list (one image path per line, relative to ``data_dir`` or absolute; blank lines ignored).
    Lists nothing but the folder or the list file: a missing or corrupt frame is the decoder's to name.

    Args:
        row: a manifest row, or any mapping with its ``clip_id``, ``path`` and ``frames``.

    Raises:
        FileNotFoundError: the frame list does not exist.
        ValueError: the clip holds another number of frames than its row's ``frames``, naming both.
    """
    data_dir = Path(data_dir)
    path = data_dir / row["path"]  # an absolute row path replaces data_dir
    if path.suffix.lower() == FRAME_LIST_SUFFIX:
        if not path.is_file():
            raise FileNotFoundError(f"frame list of clip {row['clip_id']} not found: {path}")
        paths = [data_dir / line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif path.is_dir():
        paths = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))
    else:
        return None
    if len(paths) != int(row["frames"]):
        raise ValueError(f"clip {row['clip_id']}: {path} {'lists' if path.is_file() else 'holds'} {len(paths)} frames "
                         f"({', '.join(IMAGE_SUFFIXES)}) but its manifest row says {row['frames']}; fix the row's frames "
                         "or the clip's files")
    return paths


def clip_exists(data_dir: str | Path, row: Mapping) -> bool:
    """Whether a clip's video, frame folder or frame list is on disk (its frames are not checked)."""
    path = Path(data_dir) / row["path"]
    return path.is_file() or path.is_dir()


def check_bad_input(bad_input: str) -> None:
    """Raise naming ``data.bad_input`` unless ``bad_input`` is one of ``BAD_INPUT_POLICIES``."""
    if bad_input not in BAD_INPUT_POLICIES:
        raise ValueError(f"bad_input={bad_input!r}; choose one of: {', '.join(BAD_INPUT_POLICIES)} (the key data.bad_input)")


def read_columns(path: Path, columns: Sequence[str] | None, *, what: str) -> pa.Table:
    """The named columns of a Parquet file (None: every column of ``what``'s contract is required and all are
    read). A missing column is listed by name with the file, instead of pyarrow's schema dump."""
    wanted = MANIFEST_COLUMNS if columns is None else columns
    names = pq.read_schema(path).names
    missing = [name for name in wanted if name not in names]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} ({what}, docs/data_format.md); it "
                         f"has: {', '.join(names)}")
    return pq.read_table(path, columns=None if columns is None else list(columns))


def read_manifest(data_dir: str | Path) -> pa.Table:
    """The manifest of a benchmark folder, with a clear error when it is missing or lacks a column."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: generate the data with `raymotion synth --set synth.out_dir={data_dir}`")
    return read_columns(path, None, what="every manifest column is required")


def check_frame_size(row: Mapping, *, height: int, width: int, path: Path) -> None:
    """Raise unless a decoded frame of a clip (``path``: the video, or the frame's image file) has the manifest
    row's ``width`` x ``height`` (boxes are checked against that size, so a wrong one would crop silently outside
    the picture). A row with width = height = 0 says the size varies from frame to frame (image sequences):
    nothing to check, every frame is used at its own size."""
    if int(row["width"]) == int(row["height"]) == 0:
        return
    if (height, width) != (int(row["height"]), int(row["width"])):
        raise ValueError(f"clip {row['clip_id']}: the manifest says width={row['width']}, height={row['height']}, "
                         f"but {path} decodes to {width}x{height} frames; fix the clip's manifest row")


def check_clip_lengths(manifest_rows: Sequence[Mapping], *, split: str, gap: int, bad_input: str,
                       frames_per_item: int = 2) -> list[str]:
    """Clips of ``split`` too short for one item, a pair (t, t + gap) (``train.video_gap``) or with
    ``frames_per_item=3`` a window (t - gap, t, t + gap) (model.film): 'fail' raises a ConfigError naming the
    key, the value and the clip with its frame count; 'skip' returns one message per such clip
    (``pair_windows`` gives it no window, ``VideoPairs`` no item; log them with ``warn_skipped``)."""
    span = (frames_per_item - 1) * gap
    item = "a pair (t, t + gap)" if frames_per_item == 2 else "a 3-frame window (t - gap, t, t + gap; model.film)"
    short = [row for row in manifest_rows if row["split"] == split and int(row["frames"]) <= span]
    if short and bad_input == "fail":
        clips = ", ".join(f"{row['clip_id']} ({row['frames']} frames)" for row in short[:5])
        raise ConfigError("train.video_gap", gap, f"{item} needs a clip longer than {span} frames, and "
                          f"clip(s) {clips}{' ...' if len(short) > 5 else ''} of split {split!r} are not; lower it, "
                          "or set data.bad_input=skip to leave such clips out (counted)")
    return [f"skipped clip {row['clip_id']} of split {split!r}: {row['frames']} frames hold no item at "
            f"train.video_gap={gap}" for row in short]


def warn_skipped(skipped: Sequence[str], *, what: str) -> None:
    """One warning for the bad input a reader left out (data.bad_input=skip): how many, and the first messages."""
    if skipped:
        shown = "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        logger.warning("left out %d %s as bad input (data.bad_input=skip): %s", len(skipped), what, shown)


FRAMES_PER_ITEM = (2, 3)
"""Frames per video item: 2, a pair (t, t + gap); 3, a window (t - gap, t, t + gap) of the temporal-context
variant (model.film), whose last two frames are its pair (the one the flow is between)."""


def frames_per_item_for(film: bool) -> int:
    """Frames per video item of a refinement: 3-frame windows for the temporal-context variant (model.film),
    else pairs."""
    return 3 if film else 2


def check_frames_per_item(frames_per_item: int) -> None:
    if frames_per_item not in FRAMES_PER_ITEM:
        raise ValueError(f"frames_per_item={frames_per_item} is not supported; choose one of: "
                         f"{', '.join(map(str, FRAMES_PER_ITEM))} (2: pairs; 3: windows for model.film=true)")


def pair_windows(manifest_rows: Sequence[dict], *, split: str, gap: int, window: int,
                 frames_per_item: int = 2) -> list[dict]:
    """Cut every clip of a split into windows of consecutive frames, one row per window.

    Args:
        manifest_rows: the rows of manifest.parquet in file order (``read_manifest(d).to_pylist()``);
            a row's position is its ``clip_index``.
        split: the split to use ('video' for refinement).
        gap: frames between the two frames of a pair (>= 1).
        window: frames per window (> the span of an item, (frames_per_item - 1) * gap).
        frames_per_item: 2 for pairs, 3 for 3-frame windows (``FRAMES_PER_ITEM``). Consecutive windows
            overlap by an item's span, so every item lies in exactly one window.

    Returns:
        One dict per window: clip_id, path, labels_path (as in the manifest), first_frame, num_frames,
        clip_index, clip_frames (the clip's frame count), width, height. Clips with no item
        (frames <= span) give no window.
    """
    if gap < 1:
        raise ValueError(f"gap={gap} must be >= 1 frame")
    check_frames_per_item(frames_per_item)
    span = (frames_per_item - 1) * gap  # frames from an item's first frame to its last
    if window <= span:
        what = f"gap={gap}" if frames_per_item == 2 else f"2 * gap={span}"
        raise ValueError(f"window={window} must be > {what} (a window must hold at least one item)")
    splits = sorted({row["split"] for row in manifest_rows})
    if split not in splits:
        raise ValueError(f"split={split!r} is not in the manifest; choose one of: {', '.join(splits)}")
    windows = []
    for clip_index, row in enumerate(manifest_rows):
        if row["split"] != split:
            continue
        frames = int(row["frames"])
        first = 0
        while first + span < frames:
            windows.append({
                "clip_id": row["clip_id"], "path": row["path"], "labels_path": row["labels_path"],
                "first_frame": first, "num_frames": min(window, frames - first), "clip_index": clip_index,
                "clip_frames": frames, "width": int(row["width"]), "height": int(row["height"]),
            })
            first += window - span
    return windows


def window_pairs(window_row: dict, *, gap: int, frames_per_item: int = 2) -> list[int]:
    """The first frames t of the pairs (t, t + gap) of the items that belong to a window (clip frame indices;
    for 3-frame items the pair is the item's last two frames, so t - gap is in the window too)."""
    first = window_row["first_frame"]
    return list(range(first + (frames_per_item - 2) * gap, first + window_row["num_frames"] - gap))

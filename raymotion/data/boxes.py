"""Person boxes and tracks from the files people already have: plain CSV or JSON, and tracker pickles.

One reader per format, one result type (``TrackBoxes``: a row per (frame, track)), so that ``raymotion
predict`` and a future ``raymotion import boxes`` read boxes the same way. No Ray, no torch.

Legend: N rows (one person box in one frame), trailing digits are literal sizes (``box_xyxy_N4``).
Boxes are (x0, y0, x1, y1) in image pixels, with the origin at the top-left CORNER of the top-left pixel
(docs/data_format.md); frames are 0-based indices into the video or the sorted image list.

Formats (``read_boxes`` picks one by the file's suffix):
- ``.csv``: a header naming the columns ``frame,track,x0,y0,x1,y1`` and optionally ``score``, then one line
  per box. Other columns are refused by name (a typo would otherwise be dropped silently).
- ``.json``: a list of objects ``{"frame": 0, "track": 1, "box_xyxy": [x0, y0, x1, y1], "score": 0.9}``
  (``score`` optional).
- ``.pkl`` / ``.pickle`` / ``.joblib``: a tracker's output, as joblib or pickle writes it (compressed or not):
  - PHALP / 4D-Humans ``track.py`` results, keyed by frame name: per frame ``time`` (the frame index),
    ``tid`` (track ids), ``bbox`` ([x0, y0, w, h] each), ``tracked_time`` (0 where the person was detected in
    this frame; rows with > 0 are the tracker's extrapolations and are left out, as PHALP's renderer does)
    and ``conf`` (scores) where present;
  - PHALP's custom-box input, ``{frame name: {"gt_bbox": (M, 4) xyxy, "extra_data": {"gt_track_id": ...}}}``:
    frames in the natural order of their names;
  - VIBE ``vibe_output.pkl``, keyed by track id: ``bboxes`` ((T, 4) centre x, centre y, w, h) and
    ``frame_ids`` ((T,)).
  Pickles are read with a restricted unpickler that accepts numpy arrays and plain containers only and
  refuses anything else by name before it runs.
"""

from __future__ import annotations

import csv
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raymotion.body.body_model import NUMPY_PICKLE_GLOBALS
from raymotion.data.crops import empty_boxes

CSV_COLUMNS = ("frame", "track", "x0", "y0", "x1", "y1")
"""Required CSV columns, in any order; ``score`` may follow."""
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
BOX_SUFFIXES = (".csv", ".json", *PICKLE_SUFFIXES)
"""File suffixes ``read_boxes`` reads."""


@dataclass(frozen=True, slots=True)
class TrackBoxes:
    """Person boxes of one video or image sequence, one row per (frame, track), sorted by (frame, track).

    frame_N: (N,) int64 frame index (0-based). track_N: (N,) int64 track id. box_xyxy_N4: (N, 4) float64,
    image pixels. score_N: (N,) float64 detector confidence, 1.0 where the file has none. source: the file.
    """

    frame_N: np.ndarray
    track_N: np.ndarray
    box_xyxy_N4: np.ndarray
    score_N: np.ndarray
    source: str

    def __post_init__(self) -> None:
        order_N = np.lexsort((self.track_N, self.frame_N))
        for name in ("frame_N", "track_N", "box_xyxy_N4", "score_N"):
            object.__setattr__(self, name, np.asarray(getattr(self, name))[order_N])
        keys_N2 = np.stack([self.frame_N, self.track_N], axis=1)
        if len(keys_N2) > 1:
            same_N = (keys_N2[1:] == keys_N2[:-1]).all(axis=1)
            if same_N.any():
                n = int(np.flatnonzero(same_N)[0])
                raise ValueError(f"{self.source}: frame {int(self.frame_N[n])} has track {int(self.track_N[n])} "
                                 "twice; each (frame, track) may have one box")
        bad_N = empty_boxes(self.box_xyxy_N4)  # the frame size is not known here: box_problems checks it later
        if bad_N.any():
            n = int(np.flatnonzero(bad_N)[0])
            raise ValueError(f"{self.source}: the box of frame {int(self.frame_N[n])}, track {int(self.track_N[n])} "
                             f"is {self.box_xyxy_N4[n].tolist()}: not finite or empty (x0 < x1 and y0 < y1 are "
                             "needed, image pixels); fix or drop that row")
        if (self.frame_N < 0).any():
            raise ValueError(f"{self.source}: frame {int(self.frame_N.min())} is negative; frames count from 0")

    def __len__(self) -> int:
        return len(self.frame_N)

    def in_frame(self, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(track_M, box_xyxy_M4, score_M) of the boxes in one frame (M may be 0)."""
        lo, hi = np.searchsorted(self.frame_N, [frame, frame + 1])
        return self.track_N[lo:hi], self.box_xyxy_N4[lo:hi], self.score_N[lo:hi]


def from_rows(rows: list[tuple[int, int, tuple[float, float, float, float], float]], *, source: str) -> TrackBoxes:
    """A ``TrackBoxes`` from (frame, track, (x0, y0, x1, y1), score) tuples."""
    if not rows:
        return TrackBoxes(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), source)
    frame, track, box, score = zip(*rows)
    return TrackBoxes(np.asarray(frame, np.int64), np.asarray(track, np.int64),
                      np.asarray(box, np.float64).reshape(-1, 4), np.asarray(score, np.float64), source)


def read_boxes(path: str | Path) -> TrackBoxes:
    """Read a boxes file in any of the module docstring's formats, chosen by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_boxes_csv(path)
    if suffix == ".json":
        return read_boxes_json(path)
    if suffix in PICKLE_SUFFIXES:
        return read_tracker_pickle(path)
    raise ValueError(f"boxes file {path} ends in {path.suffix!r}; give one of {', '.join(BOX_SUFFIXES)} "
                     "(formats: raymotion/data/boxes.py)")


def _number(text: str, *, where: str, column: str, kind: type) -> Any:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {column}={text!r} is not a number") from None
    if kind is int:
        if not value.is_integer():
            raise ValueError(f"{where}: {column}={text!r} must be a whole number")
        return int(value)
    return value


def read_boxes_csv(path: Path) -> TrackBoxes:
    """``frame,track,x0,y0,x1,y1[,score]`` with a header line (module docstring)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS if c not in header]
        unknown = [c for c in header if c not in (*CSV_COLUMNS, "score")]
        if missing or unknown:
            raise ValueError(f"{path}: the header must name the columns {','.join(CSV_COLUMNS)}[,score]; "
                             f"missing {missing or 'none'}, unknown {unknown or 'none'} (header: {header})")
        rows = []
        for line, raw in enumerate(reader, start=2):
            record = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{path} line {line}"
            rows.append((_number(record["frame"], where=where, column="frame", kind=int),
                         _number(record["track"], where=where, column="track", kind=int),
                         tuple(_number(record[c], where=where, column=c, kind=float) for c in ("x0", "y0", "x1", "y1")),
                         _number(record["score"], where=where, column="score", kind=float)
                         if record.get("score") else 1.0))
    return from_rows(rows, source=str(path))


def read_boxes_json(path: Path) -> TrackBoxes:
    """A list of ``{"frame", "track", "box_xyxy", ["score"]}`` objects (module docstring)."""
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} must hold a list of boxes like {{\"frame\": 0, \"track\": 1, \"box_xyxy\": "
                         f"[x0, y0, x1, y1], \"score\": 0.9}}, got a {type(records).__name__}")
    rows = []
    for i, record in enumerate(records):
        where = f"{path} box {i}"
        if not isinstance(record, dict) or not {"frame", "track", "box_xyxy"} <= set(record):
            raise ValueError(f"{where}: expected an object with frame, track, box_xyxy (and optionally score), "
                             f"got {record!r}"[:300])
        unknown = set(record) - {"frame", "track", "box_xyxy", "score"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: frame, track, box_xyxy, score")
        box = record["box_xyxy"]
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"{where}: box_xyxy must be [x0, y0, x1, y1], got {box!r}")
        rows.append((_number(str(record["frame"]), where=where, column="frame", kind=int),
                     _number(str(record["track"]), where=where, column="track", kind=int),
                     tuple(_number(str(v), where=where, column="box_xyxy", kind=float) for v in box),
                     _number(str(record.get("score", 1.0)), where=where, column="score", kind=float)))
    return from_rows(rows, source=str(path))


# ---- tracker pickles ---------------------------------------------------------------------------------

# Plain containers a tracker's results are made of (besides NUMPY_PICKLE_GLOBALS' numpy arrays).
_CONTAINER_GLOBALS = {("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "list"),
                      ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "int"), ("builtins", "float"),
                      ("builtins", "complex"), ("joblib.numpy_pickle", "NumpyArrayWrapper")}


def _restricted_unpickler(handle: Any, *, path: Path, encoding: str = "ASCII") -> Any:
    """joblib's unpickler (it reads the arrays joblib.dump writes beside the pickle stream, and plain pickles)
    with ``find_class`` limited to numpy arrays and plain containers. ``encoding``: of Python 2 str objects
    ('latin1' reads Python 2 pickles holding numpy arrays, e.g. 3DPW's sequence files)."""
    from joblib.numpy_pickle import NumpyUnpickler

    class TrackerUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in NUMPY_PICKLE_GLOBALS or (module, name) in _CONTAINER_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(
                f"{path} asks to load {module}.{name}, which is neither a numpy array nor a plain container; it "
                "was refused and nothing from the file ran")

    unpickler = TrackerUnpickler(str(path), handle, ensure_native_byte_order=True)
    unpickler.encoding = encoding  # pickle._Unpickler reads it at load time; joblib's __init__ does not take it
    return unpickler


def unpickle_restricted(handle: Any, *, path: Path, encoding: str = "ASCII") -> Any:
    """The object of one pickle stream read from ``handle`` (an open binary file) through the restricted unpickler
    (numpy arrays and plain containers only; ``path`` names the file in errors). For pickles inside other files,
    e.g. the object arrays of an npz (``raymotion.importers.humandata``)."""
    try:
        return _restricted_unpickler(handle, path=path, encoding=encoding).load()
    except pickle.UnpicklingError as err:
        if str(err).startswith(str(path)):  # a refused global: the message names it
            raise ValueError(str(err)) from None
        raise ValueError(f"{path} holds an unreadable pickle ({err})") from None


def load_tracker_pickle(path: Path, *, encoding: str = "ASCII") -> Any:
    """The object a joblib- or pickle-written file holds, through the restricted unpickler (compressed
    joblib files are decompressed first, as ``joblib.load`` does). Also reads dataset pickles of numpy arrays and
    plain containers (``raymotion.importers.pw3d``: 3DPW, with ``encoding='latin1'``)."""
    from joblib.numpy_pickle import _validate_fileobject_and_memmap

    try:
        with path.open("rb") as raw, _validate_fileobject_and_memmap(raw, str(path), None) as (handle, _):
            if isinstance(handle, str):  # joblib < 0.10's layout: arrays in companion files
                raise ValueError(f"{path} was written by joblib < 0.10; load it there and save it again")
            return unpickle_restricted(handle, path=path, encoding=encoding)
    except (EOFError, UnicodeDecodeError, ValueError, TypeError, AttributeError, OSError) as err:
        if isinstance(err, ValueError) and str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path} is not a readable tracker pickle ({type(err).__name__}: {err})") from None


def natural_key(name: Any) -> list:
    """Sort key that orders ``img_2`` before ``img_10`` (frame names, image files)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name))]


def read_tracker_pickle(path: Path) -> TrackBoxes:
    """Boxes from a PHALP/4D-Humans or VIBE results pickle, or PHALP's custom-box input (module docstring)."""
    try:
        results = load_tracker_pickle(path)
    except ValueError as err:
        if "was refused" not in str(err):
            raise
        raise ValueError(f"{err}. Export the boxes as CSV (frame,track,x0,y0,x1,y1[,score]) from a trusted copy "
                         "instead") from None
    if not isinstance(results, Mapping) or not results:
        raise ValueError(f"{path} holds {type(results).__name__}, not a tracker's results (a dict keyed by frame "
                         "name or track id)")
    first = next(iter(results.values()))
    if not isinstance(first, Mapping):
        raise ValueError(f"{path}: its entries are {type(first).__name__}, expected dicts (PHALP: per frame; "
                         "VIBE: per track)")
    if {"tid", "bbox"} <= set(first):
        return _phalp_results(results, path=path)
    if "gt_bbox" in first:
        return _phalp_custom_boxes(results, path=path)
    if {"bboxes", "frame_ids"} <= set(first):
        return _vibe_results(results, path=path)
    raise ValueError(f"{path} is not a tracker output raymotion reads: its entries have keys {sorted(first)[:12]}; "
                     "expected PHALP's (tid, bbox), PHALP's custom boxes (gt_bbox) or VIBE's (bboxes, frame_ids)")


def _xywh_to_xyxy(box_M4: np.ndarray) -> np.ndarray:
    return np.concatenate([box_M4[:, :2], box_M4[:, :2] + box_M4[:, 2:]], axis=1)


def _phalp_results(results: Mapping, *, path: Path) -> TrackBoxes:
    rows = []
    for order, name in enumerate(sorted(results, key=natural_key)):
        entry = results[name]
        frame = int(entry["time"]) if "time" in entry else order
        boxes = np.asarray(entry["bbox"], np.float64).reshape(-1, 4)
        tids = list(entry["tid"])
        tracked = list(entry.get("tracked_time", [0] * len(tids)))
        scores = list(entry.get("conf", [1.0] * len(tids)))
        if not len(tids) == len(boxes) == len(tracked):
            raise ValueError(f"{path} frame {name!r}: {len(tids)} tids but {len(boxes)} bboxes")
        rows += [(frame, int(t), tuple(_xywh_to_xyxy(b[None])[0]), float(np.asarray(s).reshape(-1)[0]))
                 for t, b, dt, s in zip(tids, boxes, tracked, scores) if int(dt) == 0]
    return from_rows(rows, source=str(path))


def _phalp_custom_boxes(results: Mapping, *, path: Path) -> TrackBoxes:
    rows = []
    for frame, name in enumerate(sorted(results, key=natural_key)):
        entry = results[name]
        boxes = np.asarray(entry["gt_bbox"], np.float64).reshape(-1, 4)
        tids = entry.get("extra_data", {}).get("gt_track_id", list(range(len(boxes))))
        if len(tids) != len(boxes):
            raise ValueError(f"{path} frame {name!r}: {len(boxes)} gt_bbox rows but {len(tids)} gt_track_id")
        rows += [(frame, int(t), tuple(b), 1.0) for t, b in zip(tids, boxes)]
    return from_rows(rows, source=str(path))


def _vibe_results(results: Mapping, *, path: Path) -> TrackBoxes:
    rows = []
    for track, entry in results.items():
        centre_box_T4 = np.asarray(entry["bboxes"], np.float64).reshape(-1, 4)
        frames_T = np.asarray(entry["frame_ids"]).reshape(-1)
        if len(frames_T) != len(centre_box_T4):
            raise ValueError(f"{path} track {track!r}: {len(centre_box_T4)} bboxes but {len(frames_T)} frame_ids")
        half_T2 = centre_box_T4[:, 2:] / 2.0
        xyxy_T4 = np.concatenate([centre_box_T4[:, :2] - half_T2, centre_box_T4[:, :2] + half_T2], axis=1)
        rows += [(int(f), int(track), tuple(b), 1.0) for f, b in zip(frames_T, xyxy_T4)]
    return from_rows(rows, source=str(path))

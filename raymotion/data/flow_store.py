"""Frame pairs with optical flow, computed once by the Ray Data pipeline and stored as Parquet for reuse.

Streaming (``pipeline.build_pair_dataset``) decodes, crops and estimates flow again in every run and in
every sweep trial; flow dominates that work. A *pair store* keeps the pipeline's rows on disk instead:

    precompute_pairs(spec) -> PairStore(folder, rows, seconds, reused)   # computes only when missing
    precompute_for_config(cfg) -> PairStore                               # the spec of a refinement config
    read_pairs(folder) -> ray.data.Dataset                                # the rows build_pair_dataset gives

A store is a folder ``<out_dir>/<flow>_<S>px_gap<g>_<clips>_<hash>/`` (``out_dir`` defaults to
``<data_root>/pairs``; ``data.pair_store`` may be a local or NFS folder or an object store such as
``s3://bucket/prefix``, through ``raymotion.storage``) named by everything that defines its rows (``PairSpec``:
the benchmark's clips, split, crop side, box scale, gap, estimator name, decoder, clip count, frames per
item; a store of 3-frame windows is named ``..._gap<g>_3frames_...``). Only estimators
without settings fit that key ('dis', 'farneback': all the pipeline's ``FlowStage`` builds today)::

    <store>/attempt-<host>-<pid>-<uuid8>/*.parquet   # one write's files (Dataset.write_parquet)
    <store>/_DONE.json                                # format, key, rows, files, seconds, pipeline counts

Publication works the same on every backend (object stores cannot rename a folder): each write puts its
Parquet files in its own attempt folder, checks their row count, and then writes ``_DONE.json`` LAST and
atomically (``StoragePath.write_text``); it lists the files of that attempt (paths relative to the store).
A store is finished exactly when ``_DONE.json`` exists, and ``read_pairs`` reads exactly the files it lists,
never a listing of the folder. So:

  * an interrupted write leaves an attempt folder and no ``_DONE.json``: it is never read, and the next call
    computes the store again in a new attempt folder. Attempt folders it finds are reported with a warning
    and left in place: nothing tells an attempt of a killed process from one still running elsewhere
    (a concurrent sweep trial, another node), so only a person deletes them.
  * two writers racing each write a complete attempt; a writer that finds ``_DONE.json`` already there when
    it is about to publish deletes its own attempt and reuses the published store; when both publish, the
    last ``_DONE.json`` wins. Files named by a published ``_DONE.json`` are never deleted, so a reader that
    read either list sees a complete, consistent store.

Stores of the earlier layout (Parquet files beside ``_DONE.json``, published by renaming a temporary folder)
read unchanged: their ``_DONE.json`` lists files relative to the store as well.

Rows on disk are the pipeline's with the flows stored as float16 (half the bytes; rounding error at most
0.004 px below 16 px of motion, 0.008 px below 32 px); ``read_pairs`` casts them back to float32, so its
rows have the keys, dtypes and shapes of ``build_pair_dataset``'s (module doc of raymotion/data/pipeline.py):
image1, image2 (S, S, 3) uint8; flow_fwd, flow_bwd (2, S, S) float32; crop1, crop2 (3,) float32; clip_index,
t int64; a store of 3-frame windows (``PairSpec.frames_per_item=3``, model.film) also image0 and crop0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
import ray

from raymotion.config import FlowConfig
from raymotion.data.manifest import frames_per_item_for
from raymotion.data.decode import AUTO_DECODER
from raymotion.data.manifest import clip_frame_paths
from raymotion.data.pipeline import PipelineReport, build_pair_dataset, select_windows
from raymotion.storage import StoragePath

if TYPE_CHECKING:
    from raymotion.config import Config

STORE_FORMAT = 1
"""Bump when the meaning of stored rows or of ``_DONE.json`` changes: older stores then fail with a clear
error. Where the files sit is not part of it: ``_DONE.json`` names them (module doc)."""
DONE_FILE = "_DONE.json"
"""Written last: a store is finished exactly when it exists (module doc)."""
ATTEMPT_PREFIX = "attempt-"
"""Each write's Parquet files go to ``<store>/attempt-<host>-<pid>-<uuid8>/``."""
DEFAULT_STORE_DIR = "pairs"
"""Stores go to <data_root>/pairs unless ``out_dir`` (``data.pair_store``) says otherwise."""
TARGET_FILE_BYTES = 64 << 20
"""About this many bytes of rows per Parquet file: a few files per store, enough for parallel reads."""
STORED_COLUMNS = ("image1", "image2", "crop1", "crop2", "clip_index", "t", "flow_fwd", "flow_bwd")
WINDOW_COLUMNS = ("image0", "crop0")
"""Stored besides ``STORED_COLUMNS`` by a store of 3-frame windows (``PairSpec.frames_per_item=3``)."""
FLOW_COLUMNS = ("flow_fwd", "flow_bwd")


@dataclass(frozen=True, kw_only=True, slots=True)
class PairSpec:
    """What defines the rows of a store: two specs that are equal give the same rows.

    ``data_root`` is a benchmark folder (docs/data_format.md); the store's key also covers the manifest
    rows and the size and modification time of every clip, frame and label file it reads, so a regenerated
    benchmark gets a new store. The decoder is part of the key because PyAV and DALI convert colours
    differently (tests/test_pipeline.py); 'auto' picks per clip as ``pipeline.DecodeCropStage`` does.
    The config's settings (crop, gap, flow) have no default here: ``from_config`` or the caller gives them.
    """

    data_root: str
    split: str = "video"
    crop_size: int
    bbox_scale: float
    gap: int
    flow: str
    flow_config: FlowConfig  # RAFT's weights, ... (in the key)
    max_clips: int | None = None
    decoder: str = AUTO_DECODER
    frames_per_item: int = 2  # 3: windows of the temporal-context variant (pipeline module doc)

    @classmethod
    def from_config(cls, cfg: Config) -> PairSpec:
        """The refinement pairs of a config, as ``launch.video_datasets`` streams them."""
        return cls(data_root=str(Path(cfg.data.root).resolve()), split="video", crop_size=cfg.data.crop_size,
                   bbox_scale=cfg.data.bbox_scale, gap=cfg.train.video_gap, flow=cfg.flow.estimator,
                   flow_config=cfg.flow, max_clips=cfg.train.video_clips or None, decoder=cfg.data.decoder,
                   frames_per_item=frames_per_item_for(cfg.model.film))


@dataclass(frozen=True, kw_only=True, slots=True)
class PairStore:
    """A finished store: its folder (local, NFS or object store), row count, the seconds its computation took,
    and whether this call found it already written (``reused``) rather than computing it."""

    folder: StoragePath
    rows: int
    seconds: float
    reused: bool


def store_key(spec: PairSpec) -> dict[str, Any]:
    """The JSON-able key a store is named by (and that its _DONE.json records)."""
    root = Path(spec.data_root).resolve()
    # The windows only list the clips that hold an item: the shortest valid window does.
    windows = select_windows(root, split=spec.split, gap=spec.gap, window=(spec.frames_per_item - 1) * spec.gap + 1,
                             max_clips=spec.max_clips, frames_per_item=spec.frames_per_item)
    digest = hashlib.sha1()
    seen: set[int] = set()
    for w in windows:
        if w["clip_index"] in seen:
            continue
        seen.add(w["clip_index"])
        stats = [(name, os.stat(root / w[name])) for name in ("path", "labels_path") if w[name]]
        # An image sequence: every frame file too (a folder's own stat misses a frame rewritten in place).
        frames = clip_frame_paths(root, {"clip_id": w["clip_id"], "path": w["path"], "frames": w["clip_frames"]}) or []
        stats += [(f"frame{t}", os.stat(path)) for t, path in enumerate(frames)]
        digest.update(json.dumps({**w, **{f"{n}_stat": [s.st_size, s.st_mtime_ns] for n, s in stats}},
                                 sort_keys=True, default=str).encode())
    spec_key = dataclasses.asdict(spec)
    if spec.frames_per_item == 2:  # keys (hence folders) of pair stores stay those written before windows existed
        del spec_key["frames_per_item"]
    span = (spec.frames_per_item - 1) * spec.gap
    return {"format": STORE_FORMAT, **spec_key, "data_root": str(root),
            "clips": len(seen), "pairs": sum(int(w["num_frames"]) - span for w in windows),
            "benchmark": digest.hexdigest()[:16]}


def store_folder(spec: PairSpec, out_dir: str | os.PathLike[str] | StoragePath | None = None) -> StoragePath:
    """Where the store of ``spec`` lives (it need not exist): ``<out_dir>/<flow>_<S>px_gap<g>_<clips>_<hash>``.
    It is finished when ``store_folder(...) / DONE_FILE`` exists."""
    return _folder(spec, store_key(spec), out_dir)


def _folder(spec: PairSpec, key: dict[str, Any], out_dir: str | os.PathLike[str] | StoragePath | None) -> StoragePath:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    clips = "all" if spec.max_clips is None else f"{spec.max_clips}clips"
    parent = StoragePath(out_dir or Path(spec.data_root) / DEFAULT_STORE_DIR)
    frames = "" if spec.frames_per_item == 2 else f"_{spec.frames_per_item}frames"
    return parent / f"{spec.flow}_{spec.crop_size}px_gap{spec.gap}{frames}_{clips}_{digest}"


def precompute_pairs(spec: PairSpec, *, out_dir: str | os.PathLike[str] | StoragePath | None = None,
                     window: int, flow_concurrency: int = 1, decode_concurrency: int = 1,
                     decode_gpus: float = 0.0, flow_gpus: float = 0.0) -> PairStore:
    """The store of ``spec``: read back when it is finished, otherwise computed with the Ray Data pipeline
    into a new attempt folder and published by writing ``_DONE.json`` last (module doc). Ray must be
    initialised.

    Args:
        spec: what the rows are (``PairSpec``).
        out_dir: the folder that holds stores: a local or NFS path or an object-store URI (``s3://bucket/p``;
            None: ``<data_root>/pairs``). On a multi-node cluster it must be storage every node reads.
        window, flow_concurrency, decode_concurrency: how the pipeline runs (``build_pair_dataset``; window:
            ``data.decode_window``); they
            do not change the rows, so they are not part of the store's name.
        decode_gpus, flow_gpus: GPU share per decode / flow actor (``build_pair_dataset``; 0 = CPU). Not in
            the name either; with decoder 'auto' a GPU share means NVDEC, whose colours differ slightly from
            the CPU decoders' (``_DONE.json`` records the backends used).

    Raises:
        ValueError: the store has a ``_DONE.json`` but is broken (``check_store``; the message names it), or
            the pipeline wrote a different number of pairs than the clips hold.
    """
    key = store_key(spec)
    folder = _folder(spec, key, out_dir)
    if (folder / DONE_FILE).is_file():
        return _reused(folder)
    leftovers = [p for p in folder.iterdir() if p.name.startswith(ATTEMPT_PREFIX)]
    if leftovers:
        warnings.warn(f"ignoring {len(leftovers)} unfinished write(s) of this pair store (interrupted, or in progress "
                      f"in another process): {', '.join(map(str, leftovers))}; delete them when no precompute-flow "
                      "is running", stacklevel=2)
    attempt = folder / f"{ATTEMPT_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    report = PipelineReport()
    start = time.perf_counter()
    try:
        dataset = build_pair_dataset(
            spec.data_root, split=spec.split, crop_size=spec.crop_size, bbox_scale=spec.bbox_scale, gap=spec.gap,
            window=window, flow=spec.flow, flow_config=spec.flow_config, decoder=spec.decoder,
            decode_concurrency=decode_concurrency, flow_concurrency=flow_concurrency, decode_gpus=decode_gpus,
            flow_gpus=flow_gpus, max_clips=spec.max_clips, frames_per_item=spec.frames_per_item, report=report)
        # uint8 crops (one per frame of an item), two float16 flows
        row_bytes = spec.frames_per_item * 3 * spec.crop_size**2 + 2 * 2 * 2 * spec.crop_size**2
        dataset.map_batches(_to_stored, batch_format="numpy").write_parquet(
            attempt.path, filesystem=attempt.filesystem, min_rows_per_file=max(1, TARGET_FILE_BYTES // row_bytes))
        seconds = time.perf_counter() - start
        files = [f"{attempt.name}/{p.name}" for p in attempt.iterdir() if p.name.endswith(".parquet")]
        rows = 0
        for name in files:
            with _parquet_file(folder / name) as parquet:
                rows += parquet.metadata.num_rows
        if rows != key["pairs"]:
            raise ValueError(f"the pipeline wrote {rows} pairs to {attempt} but the {key['clips']} clips hold "
                             f"{key['pairs']}; nothing was stored")
        summary = report.summary()
        done = {"format": STORE_FORMAT, "rows": rows, "files": files, "seconds": round(seconds, 3),
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "key": key,
                "pipeline": {"window": window, "flow_concurrency": flow_concurrency,
                             **{k: summary[k] for k in ("decoded_frames", "used_frames", "decode_crop_s",
                                                        "flow_s", "backends")}}}
        published = _publish(folder, done)
    except BaseException:
        _discard(attempt)
        raise
    if not published:  # another process (a concurrent sweep trial) published the same store first
        _discard(attempt)
        return _reused(folder)
    return PairStore(folder=folder, rows=rows, seconds=seconds, reused=False)


def precompute_for_config(cfg: Config) -> PairStore:
    """The store of a config's refinement pairs (``data.video_source=precomputed``), computed when
    missing: ``PairSpec.from_config`` in ``data.pair_store`` with the pipeline's actors and GPU shares
    from ``data.flow_actors``, ``scaling.decode_actors``, ``scaling.flow_gpus``, ``scaling.decode_gpus``, windows
    of ``data.decode_window`` frames."""
    s = cfg.scaling
    return precompute_pairs(PairSpec.from_config(cfg), out_dir=cfg.data.pair_store or None,
                            window=cfg.data.decode_window, flow_concurrency=cfg.data.flow_actors,
                            decode_concurrency=s.decode_actors, decode_gpus=s.decode_gpus, flow_gpus=s.flow_gpus)


def _publish(folder: StoragePath, done: dict[str, Any]) -> bool:
    """Write ``_DONE.json`` (atomically; from then on the store is finished); False, writing nothing, when
    another writer published the store meanwhile. The check and the write are not one step: when two
    writers both publish, the last ``_DONE.json`` wins, and both name complete files (module doc)."""
    marker = folder / DONE_FILE
    if marker.is_file():
        return False
    marker.write_text(json.dumps(done, indent=2))
    return True


def _discard(attempt: StoragePath) -> None:
    """Delete this call's own unpublished attempt folder, best effort: a failure here must not hide the error
    being raised or fail a run whose store another writer published; what stays is never read (module doc)."""
    with contextlib.suppress(OSError):
        attempt.delete_dir()


def _reused(folder: StoragePath) -> PairStore:
    done = check_store(folder)
    return PairStore(folder=folder, rows=done["rows"], seconds=done["seconds"], reused=True)


def _parquet_file(path: StoragePath) -> pq.ParquetFile:
    """The Parquet file at ``path`` opened for its metadata (use as a context manager: it closes the file)."""
    return pq.ParquetFile(path.path, filesystem=path.filesystem)


def read_pairs(folder: str | os.PathLike[str] | StoragePath) -> ray.data.Dataset:
    """The rows of a finished store (local path or object-store URI) as a lazy Ray Data dataset, with
    build_pair_dataset's keys and dtypes (flows cast back to float32). Reads exactly the files its
    ``_DONE.json`` lists, after checking them (``check_store``: files, row counts, columns).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` is not a finished store of this format; the message names it.
    """
    folder = StoragePath(folder)
    done = check_store(folder)
    # partitioning=None: the listed files are the dataset; no columns from key=value folders on the way there.
    dataset = ray.data.read_parquet([(folder / name).path for name in done["files"]], filesystem=folder.filesystem,
                                    partitioning=None)
    return dataset.map_batches(_from_stored, batch_format="numpy")


def _to_stored(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**batch, **{name: batch[name].astype(np.float16) for name in FLOW_COLUMNS}}


def _from_stored(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**batch, **{name: batch[name].astype(np.float32) for name in FLOW_COLUMNS}}


def check_store(folder: str | os.PathLike[str] | StoragePath) -> dict[str, Any]:
    """_DONE.json of a finished store (rows, files, seconds, written_at, key, pipeline counts), after checking
    that the files it lists exist and hold its rows and columns. Errors as ``read_pairs``'s."""
    folder = StoragePath(folder)
    marker = folder / DONE_FILE
    if not marker.is_file():
        if not folder.is_dir():
            raise FileNotFoundError(f"pair store {folder} does not exist; write it with `raymotion precompute-flow` "
                                    "(or data.video_source=precomputed, which computes it when missing)")
        raise ValueError(f"{folder} is not a finished pair store: it has no {DONE_FILE} (a write that was "
                         "interrupted or is still running, or not a pair store); `raymotion precompute-flow` "
                         "computes the store of a config again")
    fix = f"delete {folder} and run `raymotion precompute-flow` again"
    try:
        done = json.loads(marker.read_text())
        rows, store_format = int(done["rows"]), done["format"]
        paths = [folder / name for name in done["files"]]  # refuses '..' and absolute names
        float(done["seconds"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{marker} is unreadable ({err!r}); {fix}") from err
    if store_format != STORE_FORMAT:
        raise ValueError(f"{folder} is a pair store of format {store_format!r}, this raymotion reads format "
                         f"{STORE_FORMAT}; {fix}")
    expected = set(STORED_COLUMNS) | (set(WINDOW_COLUMNS) if done["key"].get("frames_per_item", 2) == 3 else set())
    found = 0
    for name, path in zip(done["files"], paths, strict=True):
        try:
            with _parquet_file(path) as parquet:
                columns, num_rows = set(parquet.schema_arrow.names), parquet.metadata.num_rows
        except (OSError, ValueError) as err:  # missing, or not Parquet (ArrowInvalid)
            raise ValueError(f"pair store {folder}: {name} is missing or unreadable ({err}); {fix}") from err
        if columns != expected:
            raise ValueError(f"pair store {folder}: {name} has columns {sorted(columns)}, expected "
                             f"{sorted(expected)}; {fix}")
        found += num_rows
    if found != rows or not paths:
        raise ValueError(f"pair store {folder}: its files hold {found} rows, {DONE_FILE} says {rows}; {fix}")
    return done

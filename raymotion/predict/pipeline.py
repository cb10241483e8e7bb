"""Batch inference over many videos on Ray Data (jobs/predict.py): the same ``predict_to_folder`` as
``raymotion predict``, one video at a time in each of ``predict.actors`` actors.

    videos (from_items: input, boxes, name, clip) -> map_batches(PredictStage: model held per actor) -> one summary row each

Each actor builds the checkpoint's model once, then decodes, crops, predicts and writes one video at a time
(streaming its frames: memory per actor is a batch of crops and one video's parameters, whatever the number or
length of the videos). Every video gets its own output folder ``<out>/<name>/``; ``summary.json`` is written
there last, so a rerun skips the videos that finished (``todo``) and redoes one that was cut off.

Which videos: a folder (every video file in it; a boxes file beside a video with the same stem, e.g.
``walk.mp4`` + ``walk.csv``, gives its boxes, else the whole frame), a raymotion ``manifest.parquet`` (every clip,
a video or an image-sequence clip, boxes from its labels; ``split`` picks one split), or a CSV manifest with the columns ``video`` and optionally
``boxes`` (paths relative to the manifest).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from raymotion.config import Config, apply_overrides, to_dict
from raymotion.data.boxes import BOX_SUFFIXES, natural_key
from raymotion.errors import USER_ERRORS
from raymotion.predict.run import SUMMARY, Predictor, predict_config, predict_to_folder
from raymotion.predict.sources import VIDEO_SUFFIXES, InputSource, open_clip


def list_videos(source: str | Path, *, split: str = "") -> list[dict[str, str]]:
    """The videos to predict: rows ``{"input", "boxes" ('' = none), "name", "clip"}`` (module docstring); a
    manifest's rows have ``input`` the manifest and ``clip`` the clip id (a video or an image-sequence clip),
    the others ``clip`` ''."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"videos not found: {source}; give a folder of videos, a manifest.parquet or a CSV "
                                "with a 'video' column")
    if source.is_dir():
        videos = sorted((p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES),
                        key=lambda p: natural_key(p.name))
        items = []
        for video in videos:
            beside = [video.with_suffix(s) for s in BOX_SUFFIXES if video.with_suffix(s).is_file()]
            items.append({"input": str(video), "boxes": str(beside[0]) if beside else "", "name": video.stem,
                          "clip": ""})
        if not items:
            raise ValueError(f"folder {source} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    elif source.suffix == ".parquet":
        from raymotion.data.manifest import UNRENDERED, clip_exists, read_manifest

        rows = [row for row in read_manifest(source.parent).to_pylist() if not split or row["split"] == split]
        if not rows:
            raise ValueError(f"{source} lists no clips{f' in split {split!r}' if split else ''}")
        missing = [row["path"] for row in rows if not clip_exists(source.parent, row)]
        if missing:  # e.g. labelled clips a synthetic benchmark rendered for one run's fraction lacks
            hint = (f" ({source.parent / UNRENDERED} lists the clips not rendered yet)"
                    if (source.parent / UNRENDERED).is_file() else "")
            raise FileNotFoundError(f"{len(missing)} of the {len(rows)} clips {source} lists have no video or frames "
                                    f"(first: {source.parent / missing[0]}){hint}; render them, or choose a split "
                                    "that has them (--split)")
        items = [{"input": str(source), "boxes": "", "name": row["clip_id"], "clip": row["clip_id"]} for row in rows]
    elif source.suffix == ".csv":
        with source.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if "video" not in (reader.fieldnames or []):
                raise ValueError(f"{source} must have a 'video' column (and optionally 'boxes'); it has {reader.fieldnames}")
            items = [{"input": str(source.parent / row["video"]),
                      "boxes": str(source.parent / row["boxes"]) if row.get("boxes") else "",
                      "name": Path(row["video"]).stem, "clip": ""} for row in reader]
    else:
        raise ValueError(f"{source} is neither a folder of videos, a manifest.parquet nor a .csv manifest")
    names = [item["name"] for item in items]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{source}: several videos would write the same output folder {twice[:3]}; give them "
                         "distinct names (file stems or clip ids)")
    return items


def manifest_clips(manifest: str | Path) -> dict[str, dict]:
    """A ``manifest.parquet``'s rows by clip id."""
    from raymotion.data.manifest import read_manifest

    return {row["clip_id"]: row for row in read_manifest(Path(manifest).parent).to_pylist()}


def open_manifest_clip(manifest: str | Path, clip_id: str, *, clips: dict[str, dict] | None = None) -> InputSource:
    """The clip ``clip_id`` of a ``manifest.parquet`` (``sources.open_clip``); ``clips``: its rows
    (``manifest_clips``), where the caller holds them already."""
    clips = manifest_clips(manifest) if clips is None else clips
    if clip_id not in clips:
        raise ValueError(f"{manifest} lists no clip {clip_id!r}")
    return open_clip(Path(manifest).parent, clips[clip_id])


def todo(items: list[dict[str, str]], out_dir: str | Path) -> tuple[list[dict[str, str]], list[str]]:
    """(the items still to do, the names of those already finished: their folder holds summary.json)."""
    out_dir = Path(out_dir)
    done = [item["name"] for item in items if (out_dir / item["name"] / SUMMARY).is_file()]
    return [item for item in items if item["name"] not in done], done


class PredictStage:
    """``map_batches`` stage: the checkpoint's model, built once per actor; each row one video, predicted and
    written to ``<out_dir>/<name>/``. Under data.bad_input=skip a video that fails with a user error (corrupt,
    bad boxes) is reported in its row instead of ending the job."""

    def __init__(self, *, checkpoint: str, config: dict[str, Any], out_dir: str) -> None:
        import torch

        cfg = Config.from_dict(config)
        if cfg.predict.actor_gpus == 0 and cfg.run.device == "auto":
            # Ray leaves CUDA_VISIBLE_DEVICES alone for an actor that reserved no GPU: run.device=auto would take a
            # GPU it never asked for (and that a training worker may hold).
            cfg = apply_overrides(cfg, {"run.device": "cpu"})
        torch.set_num_threads(cfg.predict.actor_threads)
        _, state = predict_config(checkpoint)  # the model's weights; its config came resolved from the driver
        self.predictor = Predictor(cfg, state, checkpoint=checkpoint)
        self.out_dir = Path(out_dir)
        self.manifests: dict[str, dict[str, dict]] = {}
        """Each manifest's rows by clip id, read once per actor (not once per clip)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {"name": [], "frames": [], "people": [], "seconds": [], "error": []}
        for i in range(len(batch["name"])):
            start = time.perf_counter()
            name = str(batch["name"][i])
            frames = people = 0
            error = ""
            try:
                source = str(batch["input"][i])
                if batch["clip"][i]:  # a manifest's clip: its video or frame files, its labels' boxes
                    if source not in self.manifests:
                        self.manifests[source] = manifest_clips(source)
                    source = open_manifest_clip(source, str(batch["clip"][i]), clips=self.manifests[source])
                summary = predict_to_folder(self.predictor, source, self.out_dir / name,
                                            boxes_path=str(batch["boxes"][i]) or None, progress=False)
                frames, people = summary.frames, summary.people
            except USER_ERRORS as err:
                if self.predictor.cfg.data.bad_input == "fail":
                    raise
                error = f"{batch['input'][i]}: {err}"
            rows["name"].append(name)
            rows["frames"].append(frames)
            rows["people"].append(people)
            rows["seconds"].append(time.perf_counter() - start)
            rows["error"].append(error)
        return {key: np.asarray(values) for key, values in rows.items()}


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What one jobs/predict.py run did."""

    videos: int
    skipped_finished: list[str]
    failed: list[str]
    frames: int
    people: int
    seconds: float
    """Wall seconds of the Ray Data run, the actors' start-up included."""
    busy_s: float = 0.0
    """Seconds the actors spent on videos, summed over actors (without their start-up)."""

    def format(self, out_dir: str | Path) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else float("nan")
        lines = [f"predicted {self.videos} videos into {out_dir}: {self.frames} frames, {self.people} people, "
                 f"{self.seconds:.1f} s ({rate:.1f} frames/s end to end)"]
        if self.skipped_finished:
            lines.append(f"  skipped {len(self.skipped_finished)} finished videos (their summary.json exists): "
                         + ", ".join(self.skipped_finished[:5]) + (" ..." if len(self.skipped_finished) > 5 else ""))
        lines += [f"  failed (data.bad_input=skip): {message}" for message in self.failed]
        return "\n".join(lines)


def predict_videos(cfg: Config, *, checkpoint: str, videos: list[dict[str, str]], out_dir: str | Path) -> BatchSummary:
    """Predict every video of ``videos`` (``list_videos``) not yet finished in ``out_dir``, on Ray Data with
    ``predict.actors`` actors (Ray must be initialised). ``cfg`` is the resolved predict config
    (``run.predict_config``)."""
    out_dir = Path(out_dir).resolve()
    remaining, finished = todo(videos, out_dir)
    start = time.perf_counter()
    if not remaining:
        return BatchSummary(0, finished, [], 0, 0, 0.0)
    dataset = ray.data.from_items(remaining, override_num_blocks=len(remaining))
    results = dataset.map_batches(
        PredictStage, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(cfg.predict.actors, len(remaining))),
        num_cpus=1, num_gpus=cfg.predict.actor_gpus or None,
        fn_constructor_kwargs={"checkpoint": str(Path(checkpoint).resolve()), "config": to_dict(cfg),
                               "out_dir": str(out_dir)})
    rows = list(results.iter_rows())
    failed = [str(row["error"]) for row in rows if row["error"]]
    return BatchSummary(len(rows) - len(failed), finished, failed, int(sum(row["frames"] for row in rows)),
                        int(sum(row["people"] for row in rows)), time.perf_counter() - start,
                        float(sum(row["seconds"] for row in rows)))

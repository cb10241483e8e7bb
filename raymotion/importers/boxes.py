"""A user's own video (or folder of frames) plus per-frame person boxes -> unlabelled clips, one per track.

The boxes come from any file ``raymotion.data.boxes.read_boxes`` reads (CSV/JSON frame,track,x0,y0,x1,y1[,score],
a 4D-Humans/PHALP tracker pickle, VIBE's output; pickles through its restricted unpickler). Each track becomes
one clip of the ``video`` split per gap-free run of frames (a track the tracker lost for a while gives several
runs); a run shorter than ``importer.min_track_frames`` is dropped and counted, and so is a box that lies outside
its image (its frame ends the run). A folder's frames stay where they are (listed by path); a video's frames are
decoded once into ``<out>/frames/<video name>/`` as PNG (the clip contract lists images, so that a track can
start anywhere in the video).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from raymotion.data.boxes import read_boxes
from raymotion.importers.common import box_outside, clip_size, image_size
from raymotion.importers.writer import ContractWriter, ImportSummary
from raymotion.predict.sources import open_input

VIDEO_SPLIT = "video"


def _decode_video(source, folder: Path, *, progress: bool) -> list[Path]:
    """Every frame of a video source as PNG in ``folder`` (frame_000000.png, ...), decoded once; reused when
    the folder already holds them all."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    bar = tqdm(total=source.num_frames, desc=f"decode {source.path.name}", unit="frame", disable=not progress)
    for frame in source.frames(bad_input="fail", skipped=[]):
        path = folder / f"frame_{frame.index:06d}.png"
        if not path.is_file():
            tmp = folder / f".{path.name}.tmp.png"
            cv2.imwrite(str(tmp), cv2.cvtColor(frame.image_HW3, cv2.COLOR_RGB2BGR))
            tmp.replace(path)
        paths.append(path)
        bar.update()
    bar.close()
    return paths


def track_runs(frames_T: np.ndarray, good_T: np.ndarray) -> list[np.ndarray]:
    """Index arrays into one track's rows (sorted by frame) of its gap-free runs of good rows: a run ends at a
    missing frame or a bad row (which belongs to no run)."""
    runs: list[list[int]] = []
    previous = None
    for i, (frame, good) in enumerate(zip(frames_T.tolist(), good_T.tolist())):
        if good and previous is not None and frame == previous + 1 and runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        elif good:
            runs.append([i])
        previous = frame
    return [np.asarray(run) for run in runs]


def import_boxes(source: str | Path, boxes_path: str | Path, *, out_dir: str | Path, min_track_frames: int = 25,
                 fps: float = 30.0, copy_frames: bool = False, progress: bool = True) -> ImportSummary:
    """Import a video or frame folder with its boxes file (module doc) into ``out_dir``'s ``video`` split.

    ``fps``: the frame rate of a folder of frames (a video's own is used). Returns what was kept and dropped.
    """
    out_dir = Path(out_dir)
    if min_track_frames < 2:
        raise ValueError(f"importer.min_track_frames={min_track_frames} must be >= 2 (a clip needs a frame pair)")
    src = open_input(source)
    if src.kind not in ("video", "images"):
        raise ValueError(f"{source} is a {src.kind}; give a video file or a folder of frames (one person box file "
                         "per video)")
    boxes = read_boxes(boxes_path)
    summary = ImportSummary(source=f"{source} + {boxes_path}", out_dir=out_dir)
    stem = Path(source).stem if src.kind == "video" else Path(source).name
    if src.kind == "video":
        images = _decode_video(src, out_dir / "frames" / stem, progress=progress)
        fps = src.fps
    else:
        images = list(src.image_paths)
    sizes = [image_size(images[0])] * len(images) if src.kind == "video" else [image_size(p) for p in images]
    missing = [str(images[t]) for t, size in enumerate(sizes) if size is None]
    if missing:
        raise ValueError(f"{len(missing)} frame(s) of {source} are not readable images (first: {missing[0]}); "
                         "replace or remove them (frames are matched to boxes by their sorted position)")
    writer = ContractWriter(out_dir, copy_frames=copy_frames)
    beyond = boxes.frame_N >= len(images)
    if beyond.any():
        summary.drop("box for a frame the source does not have", count=int(beyond.sum()),
                     example=f"{boxes_path} frame {int(boxes.frame_N[beyond][0])} of {len(images)}")
    for track in tqdm(np.unique(boxes.track_N[~beyond]).tolist(), desc="import tracks", disable=not progress):
        rows_T = np.flatnonzero((boxes.track_N == track) & ~beyond)
        frames_T = boxes.frame_N[rows_T]
        boxes_T4 = boxes.box_xyxy_N4[rows_T]
        good_T = np.array([not box_outside(box, width=sizes[f][0], height=sizes[f][1])
                           for f, box in zip(frames_T.tolist(), boxes_T4)], dtype=bool)
        if (~good_T).any():
            summary.drop("box outside its image", count=int((~good_T).sum()),
                         example=f"{boxes_path} frame {int(frames_T[~good_T][0])}, track {track}")
        for run in track_runs(frames_T, good_T):
            first, count = int(frames_T[run[0]]), len(run)
            if count < min_track_frames:
                summary.drop(f"track run shorter than importer.min_track_frames={min_track_frames} (frames)",
                             count=count, example=f"track {track} from frame {first} ({count} frames)")
                continue
            width, height = clip_size([sizes[f] for f in frames_T[run].tolist()])
            writer.add_clip(clip_id=f"{stem}_track{track}_{first:06d}", split=VIDEO_SPLIT,
                            images=[images[f] for f in frames_T[run].tolist()], labels={"box_xyxy": boxes_T4[run]},
                            fps=fps, width=width, height=height, motion=stem)
            summary.clips += 1
            summary.frames += count
    writer.finish()
    return summary

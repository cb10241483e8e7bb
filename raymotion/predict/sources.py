"""What ``raymotion predict`` reads: one image, a folder of images, a video file, or an imported clip.

Frames are streamed one at a time (a long video is never held in memory). Frame indices count from 0: the
decode order of a video, the natural order of the file names in a folder (``img_2.png`` before
``img_10.png``), so that a boxes file's ``frame`` column addresses them. Images are (H, W, 3) uint8 RGB.

An imported clip is a clip folder of raymotion's data format (docs/data_format.md): ``video.webm`` or
``video.mp4`` beside ``labels.parquet``; its ``box_xyxy`` column gives the boxes (track 0) unless a boxes
file is given. ``open_clip`` opens any clip of a manifest by its row: a video, or an image-sequence clip (a
folder or ``.txt`` list of frames, wherever they lie), with its labels' boxes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raymotion.data.boxes import TrackBoxes, natural_key
from raymotion.data.decode import read_image_opencv
from raymotion.data.manifest import clip_frame_paths

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
CLIP_LABELS = "labels.parquet"


@dataclass(frozen=True, slots=True)
class Frame:
    """One input frame: its index, its name (the image's file name, or ``frame_<index>`` of a video), pixels."""

    index: int
    name: str
    image_HW3: np.ndarray


@dataclass(slots=True)
class InputSource:
    """An input to predict on; ``frames()`` streams it."""

    path: Path
    kind: str
    """'image', 'images', 'video', 'clip' (a manifest clip's video) or 'clip_images' (its frame files)."""
    image_paths: list[Path] = field(default_factory=list)
    video_path: Path | None = None
    fps: float = 30.0
    num_frames: int | None = None
    """Frames the input holds, where known without decoding (a video's container may not say)."""
    label_boxes: TrackBoxes | None = None
    """An imported clip's boxes (``box_xyxy`` of its labels, track 0)."""
    frame_names: list[str] = field(default_factory=list)
    """Frame names where file names may repeat (a clip's frame list across folders): ``frame_<index>``."""

    @property
    def is_video(self) -> bool:
        return self.kind in ("video", "clip")

    def frames(self, *, bad_input: str, skipped: list[str]) -> Iterator[Frame]:
        """Every frame, in order. ``bad_input`` (``data.bad_input``): 'fail' raises naming an unreadable image
        or the frame after which a video stops decoding; 'skip' leaves out unreadable images and ends a video at
        its last decodable frame, appending one message each to ``skipped``."""
        if self.is_video:
            assert self.video_path is not None
            yield from _video_frames(self.video_path, bad_input=bad_input, skipped=skipped, expected=self.num_frames)
            return
        for index, path in enumerate(self.image_paths):
            image = read_image(path, bad_input=bad_input, skipped=skipped)
            if image is not None:
                yield Frame(index, self.frame_names[index] if self.frame_names else path.name, image)


def read_image(path: Path, *, bad_input: str, skipped: list[str]) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB, or None (counted in ``skipped``) for an unreadable file under bad_input='skip'."""
    image = read_image_opencv(path)
    if isinstance(image, str):
        message = f"{path} is not a readable image ({image})"
        if bad_input == "fail":
            raise ValueError(f"{message}; remove or replace it, or set data.bad_input=skip to leave it out (counted)")
        skipped.append(f"skipped {message}")
        return None
    return image


def _video_frames(path: Path, *, bad_input: str, skipped: list[str], expected: int | None) -> Iterator[Frame]:
    """A video's frames; ``expected``: the frame count its container declares, where it does (FFmpeg ends a
    truncated file early without an error: fewer frames than declared is reported like a decoding error)."""
    import av

    index = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield Frame(index, f"frame_{index:06d}", frame.to_ndarray(format="rgb24"))
                index += 1
    except (av.error.FFmpegError, IndexError) as err:
        message = f"video {path} stops decoding after {index} frames ({err}): the file is corrupt or truncated"
        if bad_input == "fail":
            raise ValueError(f"{message}; repair it, or set data.bad_input=skip to keep the frames before it") from err
        skipped.append(f"skipped the rest of {message}")
    if expected is not None and 0 < index < expected:
        message = f"video {path} ends after {index} of the {expected} frames its container declares: it is truncated"
        if bad_input == "fail":
            raise ValueError(f"{message}; repair it, or set data.bad_input=skip to keep the frames it has")
        skipped.append(f"skipped the missing frames of {message}")
    if index == 0:
        raise ValueError(f"video {path} holds no decodable frames; the file is corrupt, truncated or not a video")


def _video_info(path: Path) -> tuple[float, int | None]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 30.0)
            return rate, (int(stream.frames) or None)
    except (av.error.FFmpegError, IndexError) as err:
        raise ValueError(f"cannot open video {path}: {err}; the file is corrupt or not a video") from err


def _clip_boxes(labels: Path) -> TrackBoxes:
    import pyarrow.parquet as pq

    from raymotion.data.boxes import from_rows

    table = pq.read_table(labels, columns=["frame", "box_xyxy"])
    frames = table.column("frame").to_numpy()
    boxes = table.column("box_xyxy").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
    return from_rows([(int(f), 0, tuple(b), 1.0) for f, b in zip(frames, boxes)], source=str(labels))


def open_clip(data_dir: str | Path, row: Mapping) -> InputSource:
    """The clip of a manifest row (docs/data_format.md): its video or its frame files in frame order, with the
    boxes of its labels (``labels_path``; none for a clip without labels)."""
    data_dir = Path(data_dir)
    labels = data_dir / row["labels_path"] if row.get("labels_path") else None
    label_boxes = _clip_boxes(labels) if labels is not None and labels.is_file() else None
    frame_paths = clip_frame_paths(data_dir, row)
    if frame_paths is None:
        video = data_dir / row["path"]
        fps, frames = _video_info(video)
        return InputSource(video, "clip", video_path=video, fps=fps, num_frames=frames or int(row["frames"]),
                           label_boxes=label_boxes)
    return InputSource(data_dir / row["path"], "clip_images", image_paths=frame_paths, fps=float(row["fps"]),
                       num_frames=len(frame_paths), label_boxes=label_boxes,
                       frame_names=[f"frame_{index:06d}" for index in range(len(frame_paths))])


def open_input(path: str | Path) -> InputSource:
    """Classify ``path`` (an image, a folder of images, a video, a clip folder) without decoding it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}; give an image, a folder of images, a video or a clip folder")
    suffix = path.suffix.lower()
    if path.is_file() and suffix in IMAGE_SUFFIXES:
        return InputSource(path, "image", image_paths=[path], num_frames=1)
    if path.is_file() and suffix in VIDEO_SUFFIXES:
        fps, frames = _video_info(path)
        return InputSource(path, "video", video_path=path, fps=fps, num_frames=frames)
    if path.is_file():
        raise ValueError(f"input {path} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video "
                         f"({', '.join(VIDEO_SUFFIXES)})")
    videos = sorted(p for p in path.glob("video.*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if (path / CLIP_LABELS).is_file() and videos:
        fps, frames = _video_info(videos[0])
        label_boxes = _clip_boxes(path / CLIP_LABELS)  # one row per frame (docs/data_format.md)
        return InputSource(path, "clip", video_path=videos[0], fps=fps, num_frames=frames or len(label_boxes),
                           label_boxes=label_boxes)
    images = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: natural_key(p.name))
    if not images:
        raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}) and is not a clip folder "
                         f"(video.* beside {CLIP_LABELS})")
    return InputSource(path, "images", image_paths=images, num_frames=len(images))

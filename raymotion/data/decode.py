"""Decoding clips: videos (whole, or windows of frames) with PyAV or DALI, and image sequences (JPEG/PNG
files, docs/data_format.md) with OpenCV or DALI's image decoder (``raymotion.dali``, the one module that
imports ``nvidia.dali``; imported lazily there, so this module imports without DALI).

The decoder is a setting (``data.decoder``, ``DECODERS``); ``backend_for`` turns it into the backend that
decodes one clip, named as the pipelines report it (``VIDEO_BACKENDS``, ``IMAGE_BACKENDS``).
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from raymotion.config import Decoder
from raymotion.dali import decode_image_files, decode_video_file


def read_video_pyav(path: str | Path) -> np.ndarray:
    """Decode every frame of a video with PyAV (any codec FFmpeg knows), in order.

    Returns:
        (T, H, W, 3) uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a decodable video (corrupt or truncated); the message names it.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, ValueError) as err:
        raise ValueError(f"cannot decode video {path}: {err}; the file is corrupt or truncated, regenerate it") from err
    if not frames:
        raise ValueError(f"video {path} holds no decodable frames; the file is corrupt or truncated, regenerate it")
    return np.stack(frames)


def read_video_dali_cpu(path: str | Path) -> np.ndarray:
    """Decode every frame of a VP8/VP9/MJPEG video with DALI's CPU decoder (no GPU needed).

    Returns:
        (T, H, W, 3) uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: DALI cannot decode it (corrupt, truncated, or a codec its CPU decoder lacks, such as
            H.264: use ``read_video_pyav`` for those); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    return decode_video_file(path, device="cpu", what=f"video {path} (corrupt, truncated or not VP8/VP9/MJPEG)")


def read_video_dali_mixed(path: str | Path) -> np.ndarray:
    """Decode every frame of a video with NVDEC (DALI 'mixed', CUDA device 0): (T, H, W, 3) uint8 RGB.

    Raises as ``read_video_dali_cpu`` (the codecs: ``NVDEC_CODECS``; no GPU: DALI's reason).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    return decode_video_file(path, device="mixed", what=f"video {path} (corrupt, truncated, or NVDEC lacks its codec)")


def read_video(path: str | Path, *, expected_frames: int, backend: str = "pyav") -> np.ndarray:
    """Decode a clip and check it holds the frames its manifest row promises.

    Raises:
        ValueError: the video is corrupt, or truncated (fewer frames than ``expected_frames``); the
            message names the file and both counts.
    """
    readers = {"pyav": read_video_pyav, "dali_cpu": read_video_dali_cpu, "dali_mixed": read_video_dali_mixed}
    if backend not in readers:
        raise ValueError(f"unknown decoder backend {backend!r}; choose one of: {', '.join(readers)}")
    frames_THW3 = readers[backend](path)
    if frames_THW3.shape[0] != expected_frames:
        raise ValueError(
            f"video {path} decodes to {frames_THW3.shape[0]} frames but its manifest row says {expected_frames}: "
            "the file is truncated or does not belong to this manifest; regenerate it"
        )
    return frames_THW3


# ---- windows of consecutive frames (the Ray Data pipeline decodes these) -------------------------

DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")
"""Codecs DALI's CPU video decoder reads (FACTS.md: H.264, HEVC and AV1 fail on the CPU variant)."""
NVDEC_CODECS = ("h264", "hevc", "vp8", "vp9", "mjpeg", "av1")
"""Codecs DALI's 'mixed' (NVDEC) decoder reads; AV1 needs a GPU generation that has it (not A100/H100)."""
VIDEO_BACKENDS = ("pyav", "dali_cpu", "dali_mixed")
"""Backends of ``read_video_window``."""
IMAGE_BACKENDS = ("opencv", "dali_cpu_images", "dali_mixed_images")
"""Backends of ``read_image_window``: OpenCV, DALI's CPU image decoder, nvJPEG (DALI 'mixed', needs CUDA)."""
AUTO_DECODER = "auto"
DECODERS: tuple[str, ...] = typing.get_args(Decoder)
"""``data.decoder``'s choices: 'auto' (``backend_for``); 'cpu' = PyAV for videos, OpenCV for images;
'dali_cpu' = DALI's CPU decoders (videos: VP8/VP9/MJPEG only); 'dali_mixed' = NVDEC / nvJPEG on a GPU."""


def video_codec(path: str | Path) -> str:
    """FFmpeg's name of the first video stream's codec (e.g. 'vp9', 'h264'), read without decoding.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the container cannot be opened (corrupt); the message names the file.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].codec_context.name
    except (av.error.FFmpegError, IndexError) as err:
        raise ValueError(f"cannot open video {path}: {err}; the file is corrupt, regenerate it") from err


def choose_decoder(codec: str, *, cuda_available: bool) -> str:
    """The decoder backend for a codec: DALI 'mixed' (NVDEC) on a GPU, DALI CPU for VP8/VP9/MJPEG,
    PyAV for everything else."""
    if cuda_available and codec in NVDEC_CODECS:
        return "dali_mixed"
    if codec in DALI_CPU_CODECS:
        return "dali_cpu"
    return "pyav"


def backend_for(decoder: str, *, images: bool, codec: str | None, cuda_available: bool) -> str:
    """The backend that decodes one clip under ``data.decoder=decoder`` (one of ``DECODERS``).

    'auto': videos by codec (``choose_decoder``); images with nvJPEG when CUDA is available, else DALI's CPU
    image decoder. The others name the decoder family, and the clip's kind picks the backend ('cpu': PyAV
    for videos, OpenCV for images). ``codec`` is read only for videos under 'auto' (None otherwise).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r} (data.decoder); choose one of: {', '.join(DECODERS)}")
    if decoder == AUTO_DECODER:
        if images:
            return "dali_mixed_images" if cuda_available else "dali_cpu_images"
        assert codec is not None, "auto needs the video's codec"
        return choose_decoder(codec, cuda_available=cuda_available)
    if decoder == "cpu":
        return "opencv" if images else "pyav"
    return f"{decoder}_images" if images else decoder


def _keyframe_at_or_before(path: Path, frame: int) -> int:
    """Index of the last keyframe at or before ``frame`` (demuxes packets only: no decoding)."""
    import av

    keyframe = 0
    with av.open(str(path)) as container:
        for index, packet in enumerate(p for p in container.demux(video=0) if p.size):
            if index > frame:
                break
            if packet.is_keyframe:
                keyframe = index
    return keyframe


def _read_window_pyav(path: Path, first_frame: int, num_frames: int) -> tuple[np.ndarray, int]:
    import av

    frames, decoded = [], 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate)
            start = stream.start_time or 0
            if first_frame > 0:
                # Seeks to the keyframe at or before the target; the frames in between are decoded and
                # dropped (and counted: that is the cost of starting a window mid-clip).
                container.seek(start + int(first_frame / rate / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                decoded += 1
                index = round(float((frame.pts - start) * stream.time_base) * rate)
                if index >= first_frame:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if index >= first_frame + num_frames - 1:
                    break
    except (av.error.FFmpegError, IndexError, ValueError) as err:
        raise ValueError(f"cannot decode video {path}: {err}; the file is corrupt or truncated, regenerate it") from err
    empty = np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return (np.stack(frames) if frames else empty), decoded


def _read_window_dali(path: Path, first_frame: int, num_frames: int, device: str) -> tuple[np.ndarray, int]:
    # pad_mode='none': a window past the end of the video is an error, never zero frames.
    frames_THW3 = decode_video_file(
        path,
        device=device,
        what=f"frames {first_frame}..{first_frame + num_frames - 1} of video {path} "
        "(corrupt, truncated, or a codec this backend lacks)",
        start_frame=first_frame,
        end_frame=first_frame + num_frames,
        pad_mode="none",
    )
    # DALI starts decoding at the keyframe before first_frame; count those frames too.
    decoded = first_frame - _keyframe_at_or_before(path, first_frame) + num_frames if first_frame else num_frames
    return frames_THW3, decoded


def read_video_window(path: str | Path, *, first_frame: int, num_frames: int, backend: str) -> tuple[np.ndarray, int]:
    """Decode frames [first_frame, first_frame + num_frames) of a video, in order.

    Args:
        backend: 'pyav' (any codec), 'dali_cpu' (VP8/VP9/MJPEG) or 'dali_mixed' (NVDEC, needs CUDA).

    Returns:
        frames_THW3: (T, H, W, 3) uint8 RGB; T < num_frames when the video ends early (PyAV; the caller
            decides whether that is an error). DALI raises instead.
        decoded: frames actually decoded, counting those between the preceding keyframe and first_frame.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the video cannot be decoded (corrupt, truncated for DALI); the message names the file.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"unknown video decoder backend {backend!r}; choose one of: {', '.join(VIDEO_BACKENDS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if backend == "pyav":
        return _read_window_pyav(path, first_frame, num_frames)
    return _read_window_dali(path, first_frame, num_frames, "cpu" if backend == "dali_cpu" else "mixed")


# ---- image sequences (a folder or list of JPEG/PNG frames, manifest.clip_frame_paths) --------------


def read_image_opencv(path: Path) -> np.ndarray | str:
    """(H, W, 3) uint8 RGB (EXIF orientation applied), or why OpenCV cannot decode the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return "corrupt, truncated or not an image"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image_window(paths: Sequence[Path], *, first_frame: int, num_frames: int, backend: str,
                      bad_input: str) -> tuple[list[np.ndarray | None], int, dict[int, str]]:
    """Decode frames [first_frame, first_frame + num_frames) of an image-sequence clip: only those files are read.

    Args:
        paths: every frame file of the clip, in frame order (``manifest.clip_frame_paths``).
        backend: one of ``IMAGE_BACKENDS``.
        bad_input: 'fail' raises for the first missing or undecodable frame; 'skip' returns None for it and
            one message in ``bad`` (``data.bad_input``).

    Returns:
        frames: num_frames entries, (H, W, 3) uint8 RGB each (sizes may differ between frames), or None for a
            frame left out under 'skip'.
        decoded: frames decoded (the good ones).
        bad: {clip frame index: message naming the file} of the frames left out.

    Raises:
        FileNotFoundError: a frame file is missing ('fail'), naming it and its frame index.
        ValueError: a frame file cannot be decoded ('fail': corrupt, truncated, not an image), naming it; or the
            window runs past the clip's last frame.
    """
    if backend not in IMAGE_BACKENDS:
        raise ValueError(f"unknown image decoder backend {backend!r}; choose one of: {', '.join(IMAGE_BACKENDS)}")
    if first_frame < 0 or first_frame + num_frames > len(paths):
        raise ValueError(f"frames {first_frame}..{first_frame + num_frames - 1} asked of an image sequence of "
                         f"{len(paths)} frames ({paths[0].parent if paths else 'no files'})")
    window = list(paths[first_frame:first_frame + num_frames])
    results: list[np.ndarray | str] = ["the file does not exist"] * len(window)
    present = [i for i, path in enumerate(window) if path.is_file()]
    if backend == "opencv":
        for i in present:
            results[i] = read_image_opencv(window[i])
    else:
        device = "cpu" if backend == "dali_cpu_images" else "mixed"
        decoded_files = decode_image_files([np.fromfile(window[i], dtype=np.uint8) for i in present], device=device)
        for i, result in zip(present, decoded_files):
            results[i] = result
    frames: list[np.ndarray | None] = []
    bad: dict[int, str] = {}
    for i, result in enumerate(results):
        if isinstance(result, np.ndarray):
            frames.append(result)
            continue
        t = first_frame + i
        missing = not window[i].is_file()
        problem = f"frame {t} ({window[i]}) {'is missing' if missing else f'cannot be decoded ({backend}: {result})'}"
        if bad_input == "fail":
            error = FileNotFoundError if missing else ValueError
            raise error(f"{problem}; {'restore' if missing else 'replace'} the file, or set data.bad_input=skip to "
                        "leave such frames out (counted)")
        frames.append(None)
        bad[t] = f"skipped {problem}"
    return frames, len(frames) - len(bad), bad

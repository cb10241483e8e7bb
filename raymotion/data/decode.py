"""Video decoding. The only module in raymotion that imports ``nvidia.dali``.

DALI is imported lazily so that the rest of raymotion imports on machines without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class DaliStatus:
    """What DALI can do on this machine."""

    version: str | None
    """DALI's version, or None when it does not import."""
    cpu_decoding: bool
    """DALI's CPU video decoder is usable (VP8, VP9 and MJPEG only)."""
    gpu_decoding: bool
    """NVDEC decoding (DALI 'mixed' device) is usable: needs a CUDA GPU."""
    detail: str
    """Why something is unavailable, or empty."""


def dali_status(*, cuda_available: bool) -> DaliStatus:
    """Probe DALI without building a pipeline (building one needs a video)."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
    except ImportError as err:
        return DaliStatus(None, False, False, f"nvidia.dali does not import ({err}); pip install nvidia-dali-cuda130")
    has_cpu_decoder = hasattr(fn, "experimental") and hasattr(fn.experimental, "decoders")
    detail = "" if cuda_available else "no CUDA device: GPU decoding (NVDEC) unavailable, the CPU decoder reads VP8/VP9/MJPEG"
    return DaliStatus(dali.__version__, has_cpu_decoder, cuda_available and has_cpu_decoder, detail)


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
    from nvidia.dali import fn, pipeline_def, types

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    encoded = np.fromfile(path, dtype=np.uint8)

    # device_id=None: a CPU-only pipeline (DALI otherwise asks for a GPU).
    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def decode_pipeline():  # type: ignore[no-untyped-def]
        data = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        return fn.decoders.video(data, device="cpu")

    pipe = decode_pipeline()
    try:
        pipe.build()
        pipe.feed_input("encoded", [encoded])
        (frames,) = pipe.run()
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise ValueError(f"DALI cannot decode video {path} (corrupt, truncated or not VP8/VP9/MJPEG): {detail}") from err
    return np.array(frames[0])


def read_video(path: str | Path, *, expected_frames: int, backend: str = "pyav") -> np.ndarray:
    """Decode a clip and check it holds the frames its manifest row promises.

    Raises:
        ValueError: the video is corrupt, or truncated (fewer frames than ``expected_frames``); the
            message names the file and both counts.
    """
    readers = {"pyav": read_video_pyav, "dali_cpu": read_video_dali_cpu}
    if backend not in readers:
        raise ValueError(f"unknown decoder backend {backend!r}; choose one of: {', '.join(readers)}")
    frames_THW3 = readers[backend](path)
    if frames_THW3.shape[0] != expected_frames:
        raise ValueError(
            f"video {path} decodes to {frames_THW3.shape[0]} frames but its manifest row says {expected_frames}: "
            "the file is truncated or does not belong to this manifest; regenerate it"
        )
    return frames_THW3

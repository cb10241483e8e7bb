"""Video decoding. The only module in raymotion that imports ``nvidia.dali``, so DALI's hardware optical
flow (``dali_optical_flow``, flow.estimator='dali_of') lives here too.

DALI is imported lazily so that the rest of raymotion imports on machines without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    return _run_dali_decoder(path, device="cpu", what=f"video {path} (corrupt, truncated or not VP8/VP9/MJPEG)")


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


# ---- windows of consecutive frames (the Ray Data pipeline decodes these) -------------------------

DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")
"""Codecs DALI's CPU video decoder reads (FACTS.md: H.264, HEVC and AV1 fail on the CPU variant)."""
NVDEC_CODECS = ("h264", "hevc", "vp8", "vp9", "mjpeg", "av1")
"""Codecs DALI's 'mixed' (NVDEC) decoder reads; AV1 needs a GPU generation that has it (not A100/H100)."""
DECODER_BACKENDS = ("pyav", "dali_cpu", "dali_mixed")
"""Backends of ``read_video_window``."""


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
    frames_THW3 = _run_dali_decoder(
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


def _run_dali_decoder(path: Path, *, device: str, what: str, **window: object) -> np.ndarray:
    """Decode one encoded file with ``fn.decoders.video`` on ``device`` ('cpu' or 'mixed').

    ``window`` passes start_frame/end_frame/pad_mode through; without it every frame is decoded.
    Raises ValueError naming ``what`` when DALI cannot decode it.
    """
    from nvidia.dali import fn, pipeline_def, types

    encoded = np.fromfile(path, dtype=np.uint8)

    # device_id=None: a CPU-only pipeline (DALI otherwise asks for a GPU).
    @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "mixed" else None)
    def decode_pipeline():  # type: ignore[no-untyped-def]
        data = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        return fn.decoders.video(data, device=device, **window)

    pipe = decode_pipeline()
    try:
        pipe.build()
        pipe.feed_input("encoded", [encoded])
        (frames,) = pipe.run()
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:400]
        raise ValueError(f"DALI cannot decode {what}: {detail}") from err
    if device == "mixed":
        frames = frames.as_cpu()
    return np.array(frames[0])


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
    if backend not in DECODER_BACKENDS:
        raise ValueError(f"unknown decoder backend {backend!r}; choose one of: {', '.join(DECODER_BACKENDS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if backend == "pyav":
        return _read_window_pyav(path, first_frame, num_frames)
    return _read_window_dali(path, first_frame, num_frames, "cpu" if backend == "dali_cpu" else "mixed")


# ---- the GPU's optical-flow engine (flow.estimator='dali_of') ---------------------------------------------

def dali_optical_flow(
    *, device_id: int, grid: int, preset: float, max_batch_size: int
) -> Callable[[np.ndarray, np.ndarray], list[np.ndarray]]:
    """A function computing forward optical flow of frame pairs on the NVIDIA optical-flow engine
    (DALI ``fn.optical_flow``, GPU only: Turing and newer, not TU117; needs the driver's
    libnvidia-opticalflow.so). The DALI pipeline is built on its first call and reused.

    The returned function maps (N, H, W, 3) uint8 RGB ``frames0``, ``frames1`` to N arrays of shape
    (ceil(H / grid), ceil(W / grid), 2) float32: one (dx, dy) per grid x grid block of frame 0, in pixels
    of the full-resolution frame (DALI's docs: vectors are relative to the input resolution; divide by
    ``grid`` only to get them in output-grid units). Upsample with
    ``raymotion.flow.estimator.upsample_grid_flow``.

    Direction: the engine reports, for each block of its *input* frame, where it is in its *reference* frame
    (input + flow = reference; Vulkan's VK_NV_optical_flow spec states this for the same hardware), and for a
    sequence DALI takes frame i - 1 as reference and frame i as input. So each pair is fed as the sequence
    (frame1, frame0): the input is frame0, the reference frame1, and the output is frame0 -> frame1 on
    frame0's grid, the convention of every other estimator.

    Args:
        device_id: CUDA device. grid: output_grid (4 everywhere; 1 and 2 on Ampere and newer).
        preset: 0.0 (slowest, best) to 1.0 (fastest). max_batch_size: pairs per pipeline run (more are split).

    Raises (from the returned function):
        ValueError: DALI cannot run the optical flow (no CUDA device, no optical-flow engine, frame size
            outside the engine's limits); the message carries DALI's reason.
    """
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=max_batch_size, num_threads=1, device_id=device_id, prefetch_queue_depth=1)
    def flow_pipeline():  # type: ignore[no-untyped-def]
        sequences = fn.external_source(name="sequences", layout="FHWC", dtype=types.UINT8, ndim=4)
        return fn.optical_flow(sequences.gpu(), output_grid=grid, preset=preset, image_type=types.RGB)

    pipes = []  # built lazily, once

    def run(frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> list[np.ndarray]:
        if frames0_NHW3.dtype != np.uint8 or frames0_NHW3.ndim != 4 or frames0_NHW3.shape[3] != 3 \
                or frames1_NHW3.shape != frames0_NHW3.shape or frames1_NHW3.dtype != np.uint8:
            raise ValueError(f"expected two (N, H, W, 3) uint8 RGB batches of one shape, got {frames0_NHW3.dtype} "
                             f"{frames0_NHW3.shape} and {frames1_NHW3.dtype} {frames1_NHW3.shape}")
        sequences = [np.ascontiguousarray(np.stack([f1, f0])) for f0, f1 in zip(frames0_NHW3, frames1_NHW3)]
        flows: list[np.ndarray] = []
        try:
            if not pipes:
                pipes.append(flow_pipeline())
                pipes[0].build()
            for start in range(0, len(sequences), max_batch_size):
                (out,) = pipes[0].run(sequences=sequences[start:start + max_batch_size])
                out = out.as_cpu()
                flows += [np.array(out[i])[0] for i in range(len(out))]  # (1, h, w, 2): one pair per sequence
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:400]
            raise ValueError(
                f"DALI's optical flow failed on CUDA device {device_id}: {detail}. It needs an NVIDIA GPU with an "
                "optical-flow engine (Turing or newer, not TU117) and its driver library libnvidia-opticalflow.so; "
                "elsewhere choose another flow.estimator, e.g. 'dis' (CPU) or 'raft_small' (with flow.raft_weights)"
            ) from err
        return flows

    return run

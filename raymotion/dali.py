"""NVIDIA DALI: the one module in raymotion that imports ``nvidia.dali``.

DALI does two jobs here for two packages: decoding videos and image files (``decode_video_file``,
``decode_image_files``, used by ``raymotion.data.decode``) and the GPU's hardware optical flow (``dali_optical_flow``, used by
``raymotion.flow.estimator`` for flow.estimator='dali_of'). It sits below both, so ``data`` and ``flow``
never import each other for it. DALI's video API is moving (``fn.experimental.decoders.video`` vs
``fn.plugin.video.decoder``), another reason to keep it to one file.

DALI is imported inside the functions, so that the rest of raymotion imports on machines without it.
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


# ---- video decoding ---------------------------------------------------------------------------

def decode_video_file(path: Path, *, device: str, what: str, **window: object) -> np.ndarray:
    """Decode one encoded file with DALI's ``fn.decoders.video`` on ``device`` ('cpu' or 'mixed'):
    (T, H, W, 3) uint8 RGB.

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


IMAGE_BATCH = 32
"""Most images one run of an image-decoding pipeline decodes (more are split into runs)."""
_image_pipelines: dict[str, object] = {}
"""Image-decoding pipelines by device, built on first use and reused: building one costs 15-80 ms, decoding
a 64 px PNG well under 1 ms. Per process (each Ray actor builds its own; DALI's pipelines are never pickled)."""


def _image_pipeline(device: str):  # type: ignore[no-untyped-def]
    from nvidia.dali import fn, pipeline_def, types

    if device not in _image_pipelines:
        # prefetch_queue_depth=1: one batch in flight, fed right before each run (runs of any size up to
        # IMAGE_BATCH). device_id=None: a CPU-only pipeline (DALI otherwise asks for a GPU).
        @pipeline_def(batch_size=IMAGE_BATCH, num_threads=1, device_id=0 if device == "mixed" else None,
                      prefetch_queue_depth=1)
        def decode_pipeline():  # type: ignore[no-untyped-def]
            data = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            return fn.decoders.image(data, device=device, output_type=types.RGB)

        pipe = decode_pipeline()
        pipe.build()
        _image_pipelines[device] = pipe
    return _image_pipelines[device]


def _run_image_pipeline(device: str, encoded: list[np.ndarray]) -> list[np.ndarray]:
    pipe = _image_pipeline(device)
    pipe.feed_input("encoded", encoded)
    (images,) = pipe.run()
    if device == "mixed":
        images = images.as_cpu()
    return [np.array(images[i]) for i in range(len(encoded))]


def decode_image_files(encoded: list[np.ndarray], *, device: str) -> list[np.ndarray | str]:
    """Decode encoded JPEG/PNG files (each a 1-D uint8 array of the file's bytes) with DALI's
    ``fn.decoders.image`` on ``device``: 'cpu' (DALI's CPU decoders) or 'mixed' (nvJPEG on CUDA device 0,
    the one Ray gave the actor).

    Returns:
        One entry per file, in order: (H, W, 3) uint8 RGB (EXIF orientation applied), or DALI's reason why
        it cannot decode that file (corrupt, truncated, not an image). A batch with a bad file is decoded
        again file by file to tell which one it is; the pipeline stays usable.

    Raises:
        ValueError: the pipeline cannot be built on ``device`` (e.g. 'mixed' without a CUDA GPU).
    """
    try:
        _image_pipeline(device)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"DALI cannot build its image decoder on device {device!r}: {detail}; 'mixed' (nvJPEG, "
                         "data.decoder=dali_mixed) needs a CUDA GPU: elsewhere use data.decoder=dali_cpu or cpu") from err
    out: list[np.ndarray | str] = []
    for start in range(0, len(encoded), IMAGE_BATCH):
        chunk = encoded[start:start + IMAGE_BATCH]
        if all(data.size for data in chunk):
            try:
                out += _run_image_pipeline(device, chunk)
                continue
            except RuntimeError:
                pass
        for data in chunk:
            if data.size == 0:
                out.append("the file is empty")
                continue
            try:
                out += _run_image_pipeline(device, [data])
            except RuntimeError as err:
                out.append(" ".join(str(err).split())[:300])
    return out


# ---- the GPU's optical-flow engine (flow.estimator='dali_of') ---------------------------------------

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

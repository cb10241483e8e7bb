"""Optical flow between two RGB frames: a frozen estimator behind one small interface.

Legend: N = frame pairs, H, W = image height and width, h, w = the coarse grid of a block-wise flow.
Flow is (H, W, 2) float32 in pixels: (dx, dy) such that the content at pixel (x, y) of the first frame is at
(x + dx, y + dy) in the second.

Flow sources (``flow.estimator``, built by ``make_flow_estimator(cfg.flow)``):
- 'dis': OpenCV's dense inverse search, tuned (CPU default). FACTS.md measured on rendered bodies that
  DIS's presets fail on this data, and that DIS tuned as below (MEDIUM preset, finest scale 0, 4 px patches,
  stride 1) and Farneback with (0.5, 4, 9, 5, 5, 1.1) track the body to ~0.1 px.
- 'farneback': OpenCV's Farneback, parameters as above (CPU).
- 'raft_small', 'raft_large': torchvision's RAFT (``raymotion.flow.raft``) with the state dict in
  ``flow.raft_weights`` (never downloaded, never random), ``flow.raft_iters`` refinement iterations, on
  ``flow.device``. GPU or CPU.
- 'dali_of': the NVIDIA optical-flow engine (Turing and newer) through DALI's ``fn.optical_flow``
  (``raymotion.dali.dali_optical_flow``): one vector per 4x4 block, upsampled here to every pixel.
  Needs a CUDA GPU with that engine; anywhere else it raises an error naming the alternatives.
- The renderer's exact flow is not an estimator: ``raymotion.data.video_pairs.VideoPairs(flow='ground_truth')``
  reads it from the benchmark's flow.npz (synthetic data only).

Every estimator has ``name`` (its registry key), ``tag`` (name plus every setting that changes its output,
for cache file names), ``__call__`` for one pair and ``batch`` for N pairs ((N, H, W, 3) uint8 RGB each ->
(N, H, W, 2) float32); RAFT and DALI run a batch in one pass on the GPU.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from raymotion.config import ConfigError, FlowConfig


class FlowEstimator(Protocol):
    """(first RGB frame, second RGB frame) -> forward flow."""

    name: str
    tag: str

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray: ...

    def batch(self, frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> np.ndarray: ...


def _gray(frame_HW3: np.ndarray) -> np.ndarray:
    if frame_HW3.dtype != np.uint8 or frame_HW3.ndim != 3 or frame_HW3.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame_HW3.dtype} {frame_HW3.shape}")
    return cv2.cvtColor(frame_HW3, cv2.COLOR_RGB2GRAY)


def _pairwise(estimator: FlowEstimator, frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> np.ndarray:
    """``batch`` of the CPU estimators: one pair at a time."""
    if frames0_NHW3.shape != frames1_NHW3.shape or frames0_NHW3.ndim != 4:
        raise ValueError(f"expected two (N, H, W, 3) frame batches of one shape, got {frames0_NHW3.shape} "
                         f"and {frames1_NHW3.shape}")
    num_pairs, height, width = frames0_NHW3.shape[:3]
    if num_pairs == 0:
        return np.zeros((0, height, width, 2), np.float32)
    return np.stack([estimator(a, b) for a, b in zip(frames0_NHW3, frames1_NHW3)])


class DISFlow:
    """OpenCV's dense inverse search, tuned for fine body texture (FACTS.md: ~0.13 px on ~0.9 px motion)."""

    name = "dis"
    tag = "dis"

    def __init__(self, *, finest_scale: int = 0, patch_size: int = 4, patch_stride: int = 1) -> None:
        self._dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._dis.setFinestScale(finest_scale)
        self._dis.setPatchSize(patch_size)
        self._dis.setPatchStride(patch_stride)

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray:
        return self._dis.calc(_gray(frame0_HW3), _gray(frame1_HW3), None).astype(np.float32)

    def batch(self, frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> np.ndarray:
        return _pairwise(self, frames0_NHW3, frames1_NHW3)


class FarnebackFlow:
    """OpenCV's Farneback polynomial-expansion flow with the parameters FACTS.md found to work."""

    name = "farneback"
    tag = "farneback"

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray:
        flow = cv2.calcOpticalFlowFarneback(_gray(frame0_HW3), _gray(frame1_HW3), None, 0.5, 4, 9, 5, 5, 1.1, 0)
        return flow.astype(np.float32)

    def batch(self, frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> np.ndarray:
        return _pairwise(self, frames0_NHW3, frames1_NHW3)


# ---- DALI's hardware optical flow --------------------------------------------------------------------

DALI_OF_GRID = 4
"""DALI's ``fn.optical_flow`` output_grid: one vector per 4x4 block (the only grid Turing supports)."""
DALI_OF_PRESET = 0.0
"""DALI's ``fn.optical_flow`` preset: 0.0 = slowest, best quality (1.0 fastest)."""
DALI_OF_MAX_BATCH = 32
"""Pairs per DALI pipeline run; larger batches are split."""

_CPU_ALTERNATIVES = "'dis' or 'farneback' (CPU), or 'raft_small'/'raft_large' (GPU or CPU, with flow.raft_weights)"


def upsample_grid_flow(flow_hw2: np.ndarray, *, grid: int, height: int, width: int) -> np.ndarray:
    """Block-wise flow -> per-pixel flow by bilinear interpolation between block centres.

    Args:
        flow_hw2: (h, w, 2) float, one (dx, dy) per ``grid`` x ``grid`` block, with h = ceil(height / grid)
            and w = ceil(width / grid) (the last row/column of blocks may hang over the image edge). The
            vectors are in pixels of the full-resolution image (DALI's ``fn.optical_flow`` convention), so
            they are NOT rescaled: only their positions are.
        height, width: H, W of the full-resolution image.

    Returns:
        (H, W, 2) float32. Pixel x (centre x + 0.5) reads the grid at u = (x + 0.5) / grid - 0.5 (block j's
        centre is at pixel coordinate grid * j + grid / 2), clamped to [0, w - 1]: as cv2.resize
        INTER_LINEAR / grid_sample(align_corners=False) with edge clamping, then cropped to H x W.
    """
    if flow_hw2.ndim != 3 or flow_hw2.shape[2] != 2:
        raise ValueError(f"expected an (h, w, 2) block flow, got shape {flow_hw2.shape}")
    h, w = flow_hw2.shape[:2]
    if (h, w) != (math.ceil(height / grid), math.ceil(width / grid)):
        raise ValueError(f"a {grid}x{grid}-block flow of a {height}x{width} image has shape "
                         f"({math.ceil(height / grid)}, {math.ceil(width / grid)}, 2), got {flow_hw2.shape}")

    def taps(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u = np.clip((np.arange(size) + 0.5) / grid - 0.5, 0.0, cells - 1)
        lo = np.floor(u).astype(np.int64)
        hi = np.minimum(lo + 1, cells - 1)
        return lo, hi, (u - lo)[:, None]

    y0, y1, wy = taps(height, h)
    x0, x1, wx = taps(width, w)
    flow = flow_hw2.astype(np.float64)
    rows = flow[y0] * (1.0 - wy)[:, :, None] + flow[y1] * wy[:, :, None]  # (H, w, 2)
    flow_HW2 = rows[:, x0] * (1.0 - wx)[None] + rows[:, x1] * wx[None]
    return flow_HW2.astype(np.float32)


class DaliOpticalFlow:
    """The GPU's optical-flow engine through DALI; every pixel gets its 4x4 block's flow, interpolated."""

    name = "dali_of"
    tag = f"dali_of-p{DALI_OF_PRESET:g}"

    def __init__(self, cfg: FlowConfig) -> None:
        import torch

        from raymotion.dali import dali_optical_flow, dali_status

        if cfg.device == "cpu":
            raise ConfigError("flow.device", cfg.device, "flow.estimator=dali_of runs on the GPU's optical-flow "
                              "engine only: set flow.device=auto or cuda, or choose a CPU estimator: "
                              f"{_CPU_ALTERNATIVES}")
        cuda = torch.cuda.is_available()
        status = dali_status(cuda_available=cuda)
        if status.version is None:
            raise ConfigError("flow.estimator", self.name, f"DALI is not usable here: {status.detail}; or choose "
                              f"another estimator: {_CPU_ALTERNATIVES}")
        if not cuda:
            raise ConfigError("flow.estimator", self.name, "DALI's optical flow needs an NVIDIA GPU with an optical-"
                              "flow engine (Turing or newer) and this machine has no CUDA device; choose "
                              f"{_CPU_ALTERNATIVES}")
        self._flow = dali_optical_flow(device_id=torch.cuda.current_device(), grid=DALI_OF_GRID,
                                       preset=DALI_OF_PRESET, max_batch_size=DALI_OF_MAX_BATCH)

    def batch(self, frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> np.ndarray:
        if frames0_NHW3.shape != frames1_NHW3.shape or frames0_NHW3.ndim != 4:
            raise ValueError(f"expected two (N, H, W, 3) frame batches of one shape, got {frames0_NHW3.shape} "
                             f"and {frames1_NHW3.shape}")
        num_pairs, height, width = frames0_NHW3.shape[:3]
        flows = [upsample_grid_flow(grid_hw2, grid=DALI_OF_GRID, height=height, width=width)
                 for grid_hw2 in self._flow(frames0_NHW3, frames1_NHW3)]
        return np.stack(flows) if flows else np.zeros((0, height, width, 2), np.float32)

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray:
        return self.batch(frame0_HW3[None], frame1_HW3[None])[0]


# ---- RAFT ----------------------------------------------------------------------------------------------

def _raft(variant: str) -> Callable[[FlowConfig], FlowEstimator]:
    def build(cfg: FlowConfig) -> FlowEstimator:
        import torch

        from raymotion.flow.raft import RAFTFlow, load_raft

        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("flow.device", cfg.device, "this machine has no CUDA device; use auto or cpu")
        device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
        model = load_raft(variant, cfg.raft_weights)
        tag = f"{variant}-it{cfg.raft_iters}-{Path(cfg.raft_weights).stem}"
        return RAFTFlow(model, name=variant, num_iters=cfg.raft_iters, device=device, tag=tag)

    return build


FLOW_ESTIMATORS: dict[str, Callable[[FlowConfig], FlowEstimator]] = {
    "dis": lambda cfg: DISFlow(),
    "farneback": lambda cfg: FarnebackFlow(),
    "raft_small": _raft("raft_small"),
    "raft_large": _raft("raft_large"),
    "dali_of": DaliOpticalFlow,
}
"""flow.estimator name -> builder taking the flow config (the settings of those that have any)."""


def make_flow_estimator(cfg: FlowConfig) -> FlowEstimator:
    """Build the estimator ``cfg.estimator`` with its settings (RAFT: ``raft_weights``, ``raft_iters``,
    ``device``; DALI: ``device``). The name was checked by ``FlowConfig`` (its choices are this registry's
    keys), so every caller passes the whole section and RAFT's weights reach each of them."""
    return FLOW_ESTIMATORS[cfg.estimator](cfg)

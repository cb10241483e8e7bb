"""Optical flow between two RGB frames: a frozen estimator behind one small interface.

Legend: H, W image height and width. Flow is (H, W, 2) float32 in pixels: (dx, dy) such that the content
at pixel (x, y) of the first frame is at (x + dx, y + dy) in the second.

Classical estimators for the CPU (FACTS.md measured them on rendered bodies): OpenCV's DIS presets fail on
this data; DIS tuned as below (MEDIUM preset, finest scale 0, 4 px patches, stride 1) and Farneback with
(0.5, 4, 9, 5, 5, 1.1) track the body to ~0.1 px.
"""

from __future__ import annotations

from typing import Callable, Protocol

import cv2
import numpy as np


class FlowEstimator(Protocol):
    """(first RGB frame, second RGB frame) -> forward flow."""

    name: str

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray: ...


def _gray(frame_HW3: np.ndarray) -> np.ndarray:
    if frame_HW3.dtype != np.uint8 or frame_HW3.ndim != 3 or frame_HW3.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame_HW3.dtype} {frame_HW3.shape}")
    return cv2.cvtColor(frame_HW3, cv2.COLOR_RGB2GRAY)


class DISFlow:
    """OpenCV's dense inverse search, tuned for fine body texture (FACTS.md: ~0.13 px on ~0.9 px motion)."""

    name = "dis"

    def __init__(self, *, finest_scale: int = 0, patch_size: int = 4, patch_stride: int = 1) -> None:
        self._dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._dis.setFinestScale(finest_scale)
        self._dis.setPatchSize(patch_size)
        self._dis.setPatchStride(patch_stride)

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray:
        return self._dis.calc(_gray(frame0_HW3), _gray(frame1_HW3), None).astype(np.float32)


class FarnebackFlow:
    """OpenCV's Farneback polynomial-expansion flow with the parameters FACTS.md found to work."""

    name = "farneback"

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray:
        flow = cv2.calcOpticalFlowFarneback(_gray(frame0_HW3), _gray(frame1_HW3), None, 0.5, 4, 9, 5, 5, 1.1, 0)
        return flow.astype(np.float32)


FLOW_ESTIMATORS: dict[str, Callable[[], FlowEstimator]] = {"dis": DISFlow, "farneback": FarnebackFlow}


def make_flow_estimator(name: str) -> FlowEstimator:
    """Build an estimator by name; an unknown name lists the valid ones."""
    if name not in FLOW_ESTIMATORS:
        raise ValueError(f"unknown flow estimator {name!r}; choose one of: {', '.join(FLOW_ESTIMATORS)}")
    return FLOW_ESTIMATORS[name]()

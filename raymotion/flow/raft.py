"""torchvision's RAFT as a frozen flow estimator, with weights from a file the user gives.

Legend: N = frame pairs, H, W = image height and width, Hp, Wp = padded height and width. Flow is in
pixels, (dx, dy): the content at pixel (x, y) of the first frame is at (x + dx, y + dy) in the second
(torchvision's RAFT uses the same convention).

RAFT's encoders downsample by 8 and its correlation pyramid halves that num_levels - 1 more times, so
torchvision needs H and W divisible by 8 and at least 8 * 2 * 2 ** (num_levels - 1) = 128 px (its
``CorrBlock.build_pyramid`` check). ``pad_for_raft`` pads the frames by edge replication, centred as the
original RAFT's InputPadder does, and ``crop_flow`` cuts the flow back to the frames' own pixels; padding
shifts no pixel's flow, it only moves where the frame sits inside the padded canvas.

Nothing is downloaded: a missing, absent or mismatched weights file raises an error naming
``flow.raft_weights`` and saying where torchvision's files come from. There is no silent fallback to
random weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights, raft_large, raft_small

from raymotion.config import ConfigError

RAFT_STRIDE = 8
"""RAFT's feature and context encoders downsample by 8: H and W must be multiples of it."""

RAFT_VARIANTS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "raft_large": (raft_large, Raft_Large_Weights.DEFAULT.url),
    "raft_small": (raft_small, Raft_Small_Weights.DEFAULT.url),
}
"""flow.estimator name -> (torchvision builder, URL of torchvision's pretrained state dict)."""

WEIGHTS_KEY = "flow.raft_weights"


def _how_to_get(variant: str) -> str:
    url = RAFT_VARIANTS[variant][1]
    enum = "Raft_Large_Weights" if variant == "raft_large" else "Raft_Small_Weights"
    return (f"download torchvision's {variant} state dict on a machine with internet ({url}, i.e. "
            f"torchvision.models.optical_flow.{enum}.DEFAULT.url) and copy it to this machine")


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """'' when ``state`` fits ``model`` exactly (keys and shapes), else the first differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{len(items)} {what} (first: {items[:3]})"
             for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", resized)) if items]
    return "; ".join(parts)


def load_raft(variant: str, weights_path: str) -> nn.Module:
    """Build torchvision's ``variant`` ('raft_small' or 'raft_large') with the state dict at ``weights_path``.

    Returns the model in eval mode, on the CPU, with gradients off.

    Raises:
        ValueError (ConfigError): no path given; the file is not a torch state dict; it does not fit the
            variant (names the first missing/unexpected/resized keys, and the other variant when it fits that).
        FileNotFoundError: the path does not exist.
        All name ``flow.raft_weights``, the path and how to get torchvision's file.
    """
    if variant not in RAFT_VARIANTS:
        raise ValueError(f"unknown RAFT variant {variant!r}; choose one of: {', '.join(RAFT_VARIANTS)}")
    if not weights_path:
        raise ConfigError(WEIGHTS_KEY, weights_path, f"flow.estimator={variant} needs a weights file and "
                          f"raymotion never downloads or uses random weights; {_how_to_get(variant)}")
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_KEY}={weights_path!r}: no such file ({path.resolve()}); "
                                f"{_how_to_get(variant)}, then --set {WEIGHTS_KEY}=/path/to/that/file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ConfigError(WEIGHTS_KEY, weights_path, f"cannot be read as a torch state dict ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:200]}); {_how_to_get(variant)}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(WEIGHTS_KEY, weights_path, f"holds a {type(state).__name__}, not a state dict of "
                          f"tensors; {_how_to_get(variant)}")
    model = RAFT_VARIANTS[variant][0](weights=None)
    problem = _mismatch(model, state)
    if problem:
        others = [v for v in RAFT_VARIANTS if v != variant and not _mismatch(RAFT_VARIANTS[v][0](weights=None), state)]
        hint = (f"it is a {others[0]} state dict: set --set flow.estimator={others[0]}" if others else
                "it must be a torchvision RAFT state dict (the original princeton-vl RAFT checkpoints use other "
                f"key names); {_how_to_get(variant)}")
        raise ConfigError(WEIGHTS_KEY, weights_path, f"does not fit torchvision's {variant}: {problem}; {hint}")
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model


def pad_for_raft(images_N3HW: torch.Tensor, *, min_side: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Replicate-pad images to H, W divisible by ``RAFT_STRIDE`` and at least ``min_side``, centred.

    Args:
        images_N3HW: (N, 3, H, W) images (any value range).
        min_side: smallest padded side RAFT accepts (``raft_min_side``).

    Returns:
        padded_N3HpWp and pads (top, bottom, left, right) in pixels; top = (Hp - H) // 2, bottom the rest.
    """
    height, width = images_N3HW.shape[-2:]
    padded_h = max(math.ceil(height / RAFT_STRIDE) * RAFT_STRIDE, min_side)
    padded_w = max(math.ceil(width / RAFT_STRIDE) * RAFT_STRIDE, min_side)
    top, left = (padded_h - height) // 2, (padded_w - width) // 2
    pads = (top, padded_h - height - top, left, padded_w - width - left)
    if pads == (0, 0, 0, 0):
        return images_N3HW, pads
    return F.pad(images_N3HW, (pads[2], pads[3], pads[0], pads[1]), mode="replicate"), pads


def crop_flow(flow_N2HpWp: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo ``pad_for_raft`` on a flow field: (N, 2, Hp, Wp) -> (N, 2, H, W), values unchanged (pixels)."""
    top, bottom, left, right = pads
    padded_h, padded_w = flow_N2HpWp.shape[-2:]
    return flow_N2HpWp[..., top:padded_h - bottom, left:padded_w - right]


def raft_min_side(model: nn.Module) -> int:
    """Smallest input side torchvision's RAFT accepts: 8 x 2 x 2 ** (num_levels - 1) (128 for 4 levels)."""
    return RAFT_STRIDE * 2 * 2 ** (model.corr_block.num_levels - 1)


def frames_to_raft_input(frames_NHW3: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [-1, 1] on ``device``: torchvision's
    ``Raft_*_Weights.transforms()`` (convert_image_dtype, then normalize with mean = std = 0.5)."""
    if frames_NHW3.dtype != np.uint8 or frames_NHW3.ndim != 4 or frames_NHW3.shape[3] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 RGB frames, got {frames_NHW3.dtype} {frames_NHW3.shape}")
    images_N3HW = torch.from_numpy(np.ascontiguousarray(frames_NHW3)).to(device).permute(0, 3, 1, 2)
    return images_N3HW.float() / 127.5 - 1.0


class RAFTFlow:
    """A frozen RAFT network: (frame0, frame1) uint8 RGB -> forward flow (H, W, 2) float32 pixels.

    ``batch`` runs N pairs in one forward pass on ``device``; ``__call__`` is ``batch`` of one pair.
    """

    def __init__(self, model: nn.Module, *, name: str, num_iters: int, device: torch.device, tag: str) -> None:
        self.name = name
        self.tag = tag
        self.num_iters = num_iters
        self.device = device
        self.model = model.to(device).eval()
        self.min_side = raft_min_side(model)

    def batch(self, frames0_NHW3: np.ndarray, frames1_NHW3: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB pairs -> (N, H, W, 2) float32 forward flow, pixels."""
        if frames0_NHW3.shape != frames1_NHW3.shape:
            raise ValueError(f"frame pairs differ in shape: {frames0_NHW3.shape} vs {frames1_NHW3.shape}")
        with torch.inference_mode():
            image0_N3HpWp, pads = pad_for_raft(frames_to_raft_input(frames0_NHW3, self.device), min_side=self.min_side)
            image1_N3HpWp, _ = pad_for_raft(frames_to_raft_input(frames1_NHW3, self.device), min_side=self.min_side)
            flow_N2HpWp = self.model(image0_N3HpWp, image1_N3HpWp, num_flow_updates=self.num_iters)[-1]
            flow_NHW2 = crop_flow(flow_N2HpWp, pads).permute(0, 2, 3, 1)
            return flow_NHW2.float().cpu().numpy()

    def __call__(self, frame0_HW3: np.ndarray, frame1_HW3: np.ndarray) -> np.ndarray:
        return self.batch(frame0_HW3[None], frame1_HW3[None])[0]

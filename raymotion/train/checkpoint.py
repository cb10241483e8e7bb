"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is one file holding the model and optimiser state dicts, the step, the resolved config as a
plain dict, the mean parameters the model starts from, and torch's RNG state. It is written to a
temporary file in the same folder and renamed over the old one, so a crash never leaves a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, state dicts, builtins only) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``, with a clear error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}; give a pretraining run's checkpoint.pt "
            "(e.g. train.pretrained=runs/<name>/checkpoint.pt)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{path} is not a readable raymotion checkpoint ({err}); rerun the job that writes it") from err
    missing = [key for key in ("model", "step", "config") if key not in state]
    if missing:
        raise ValueError(f"{path} is not a raymotion checkpoint: missing {', '.join(missing)}")
    return state

"""Checkpoints: written atomically to any storage, loaded with ``torch.load(weights_only=True)``.

A checkpoint is one file holding the model and optimiser state dicts, the step, the resolved config as a
plain dict, torch's RNG state and the data position. It is serialised in memory and written in one piece
through ``raymotion.storage`` (a temp file renamed over the old one on local disk and NFS, one PUT on an
object store), so a crash never leaves a torn file, and ``s3://`` run folders work like local ones.

A checkpoint knows what it is: ``checkpoint_config`` gives the config it is used with (evaluate, predict),
its own stored config under the user's ``--config``/``--set``, refusing by name an override of what defines
its weights (``MODEL_KEYS``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from raymotion.config import Config, ConfigError, flatten, load_config, to_dict
from raymotion.storage import StoragePath

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_KEYS = ("model.backbone", "model.iterations", "model.film", "body.model", "body.num_betas", "data.crop_size")
"""Config keys that define what a checkpoint's weights are (the network, its input and its body model)."""


def save_checkpoint(path: str | os.PathLike | StoragePath, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, state dicts, builtins only) to ``path`` (local or a URI) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    StoragePath(path).write_bytes(buffer.getvalue())


def load_checkpoint(path: str | os.PathLike | StoragePath) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``, with a clear error for a missing or broken file."""
    path = StoragePath(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path}; give a pretraining run's checkpoint.pt "
            "(e.g. train.pretrained=runs/<name>/checkpoint.pt)"
        )
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        reason = str(err)
        # torch's message advises retrying with weights_only=False, i.e. running the file's code: keep only
        # what it refused.
        if "WeightsUnpickler error:" in reason:
            reason = reason.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        raise ValueError(f"{path} is not a readable raymotion checkpoint ({reason}); checkpoints are read with "
                         "torch.load(weights_only=True), which accepts tensors and plain values only; rerun the "
                         "job that writes it") from None
    missing = [key for key in ("model", "step", "config") if key not in state]
    if missing:
        raise ValueError(f"{path} is not a raymotion checkpoint: missing {', '.join(missing)}")
    return state


def checkpoint_config(checkpoint: str, *, config_path: str | None = None,
                      overrides: Sequence[str] | Mapping[str, Any] = (),
                      keys: Sequence[str] = MODEL_KEYS) -> tuple[Config, dict[str, Any]]:
    """The config a checkpoint is used with, and its state: the checkpoint's own stored config, then
    ``config_path`` and ``overrides`` (--set items) on top.

    Raises:
        ConfigError: ``config_path`` or an override changes one of ``keys`` (the model would not be the
            checkpoint's); the message names the key, both values and the fix.
    """
    state = load_checkpoint(checkpoint)
    stored = Config.from_dict(state["config"])
    cfg = load_config(config_path, overrides, base=stored)
    ours, theirs = flatten(to_dict(cfg)), flatten(to_dict(stored))
    for key in keys:
        if ours[key] != theirs[key]:
            raise ConfigError(key, ours[key], f"the checkpoint {checkpoint} was trained with {key}={theirs[key]!r} and "
                              "its model is built from the checkpoint's own config; drop this override (or choose a "
                              "checkpoint trained with it)")
    return cfg, state

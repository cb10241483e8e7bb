"""The parts of a training run that the Ray Train loop (train/worker.py) is built from; no Ray here.

Model and optimiser construction, the batch index of a step (a pure function of seed and step, so a
resumed run repeats the uninterrupted run's batches), the labelled datasets (a worker's shard), the run
log, the frozen anchor copy and the final metrics (the update itself: update.py). The step's loss lives in
step.py, the loop in worker.py (the only one: ``raymotion pretrain``/``refine`` run it in Ray Train's
local mode), evaluation in raymotion/eval.
"""

from __future__ import annotations

import copy
import functools
import json
import random
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from raymotion.body.body_model import BodyModel, load_body_model
from raymotion.config import Config, ConfigError, flatten, load_config, to_dict
from raymotion.data.frames import LabelledFrames
from raymotion.eval.evaluate import MeanPoseBaseline, evaluate, paired_change
from raymotion.eval.protocols import PROTOCOLS
from raymotion.models.regressor import MeanParams, build_regressor
from raymotion.storage import StoragePath
from raymotion.train.checkpoint import MODEL_KEYS, checkpoint_config, load_checkpoint

MEAN_PARAMS_ANNY = Path(__file__).resolve().parent.parent / "assets" / "mean_params_anny.npz"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mean_params_for(cfg: Config) -> MeanParams:
    """The regressor's starting point: a named file, the shipped one for the embedded body, or a default
    (with a warning, once per process, for body.model=smpl: nothing is shipped for it)."""
    if cfg.model.mean_params:
        return MeanParams.from_npz(cfg.model.mean_params)
    if cfg.body.model.startswith("anny") and MEAN_PARAMS_ANNY.is_file():
        return MeanParams.from_npz(MEAN_PARAMS_ANNY)
    if cfg.body.model == "smpl":
        _warn_default_mean_params()
    return MeanParams.default()


@functools.cache
def _warn_default_mean_params() -> None:
    warnings.warn("body.model=smpl and model.mean_params is empty: the regressor starts from a default (rest pose, "
                  "zero betas, MeanParams.default), not from the mean of your data. Compute one with `raymotion "
                  "mean-params --out mean_params.npz` and set model.mean_params=mean_params.npz", stacklevel=3)


def build_model(cfg: Config) -> nn.Module:
    return build_regressor(
        backbone=cfg.model.backbone,
        num_betas=cfg.body.num_betas,
        mean_params=mean_params_for(cfg),
        weights_path=cfg.model.weights or None,
        iterations=cfg.model.iterations,
        film=cfg.model.film,
    )


def batch_indices(num_items: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
    """The items of one step's batch: a pure function of (seed, step), so resumed runs repeat them."""
    return np.random.default_rng([seed, step]).integers(num_items, size=batch_size)


def collate(dataset: Any, indices: np.ndarray) -> dict[str, torch.Tensor]:
    return default_collate([dataset[int(i)] for i in indices])


def storage_root(cfg: Config) -> StoragePath:
    """Where runs (and sweeps) live: ``scaling.storage_path``, or ``run.output_dir`` when it is empty (local,
    NFS or a URI). The one rule for it: run folders (``worker.run_directory``), Ray Train's storage
    (``launch.build_trainer``) and sweep folders (``tune.sweep.sweep_folder``) all start here."""
    return StoragePath(cfg.scaling.storage_path or cfg.run.output_dir)


def labelled_frames(cfg: Config, split: str, *, augment: bool = False, fraction: float = 1.0,
                    shard: tuple[int, int] = (0, 1)) -> LabelledFrames:
    """A split's labelled frames for this config; ``shard=(rank, world)``: a worker's share of them."""
    max_clips = cfg.train.max_eval_clips if split in ("val", "test") and cfg.train.max_eval_clips else None
    return LabelledFrames(
        cfg.data.root,
        split=split,
        crop_size=cfg.data.crop_size,
        bbox_scale=cfg.data.bbox_scale,
        fraction=fraction,
        seed=cfg.train.fraction_seed,
        augment=augment,
        max_clips=max_clips,
        shard=shard,
        bad_input=cfg.data.bad_input,
        decoder=cfg.data.decoder,
    )


LOG_NAME = "log.jsonl"


class RunLog:
    """A run's ``log.jsonl`` (one JSON line per logged step) and a short progress line on stdout.

    The file lives in the run folder on any storage (``raymotion.storage``): object stores and NFS have no
    atomic append, so the log keeps its lines and rewrites the whole file atomically at each write. One
    writer per run: rank 0. A resumed run (``start_step`` = its checkpoint's step) keeps the rows up to
    that step and drops the later ones (steps that ran before a failure and run again now), so every step
    is logged once; its ``wall_s`` continues from the last kept row.
    """

    def __init__(self, directory: StoragePath, *, total_steps: int, label: str, start_step: int = 0) -> None:
        self.path = directory / LOG_NAME
        self.total_steps = total_steps
        self.label = label
        self.start_step = start_step  # the step this process started from (a resumed run's checkpoint)
        self.start = time.perf_counter()
        kept = [line for line in (self.path.read_text().splitlines() if self.path.is_file() else [])
                if line.strip() and json.loads(line)["step"] <= start_step]
        self._text = "".join(line + "\n" for line in kept)
        self._wall_offset = json.loads(kept[-1]).get("wall_s", 0.0) if kept else 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since this process started the run (not counting earlier attempts)."""
        return time.perf_counter() - self.start

    def write(self, step: int, logs: dict[str, float]) -> None:
        elapsed = self.elapsed
        self._text += json.dumps({"step": step, **logs, "wall_s": self._wall_offset + elapsed}) + "\n"
        self.path.write_text(self._text)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if not k.startswith("sup/"))
        rate = (step - self.start_step) / elapsed if elapsed > 0 else float("nan")
        print(f"[{self.label}] step {step}/{self.total_steps} ({elapsed:.0f} s, {rate:.2f} steps/s): {shown}",
              flush=True)


def make_optimiser(cfg: Config, model: nn.Module, stage: str) -> torch.optim.Optimizer:
    """Adam at ``train.pretrain_lr`` for stage 'pretrain', ``train.lr`` for 'refine'."""
    lr = cfg.train.pretrain_lr if stage == "pretrain" else cfg.train.lr
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)


def final_metrics(model: nn.Module, body: BodyModel, frames_by_split: dict[str, Any], *,
                  context_gap: int, protocol: str = "synthetic") -> dict[str, float]:
    """``<split>/<metric>`` for each split's frames, plus the test split's as the headline keys (mpjpe_mm,
    pa_mpjpe_mm, pve_mm, accel_error_mm). Test is reported, never selected on. ``context_gap``: a FiLM
    model's context spacing (``train.video_gap``; ``eval.evaluate.predict_and_truth``); ``protocol``:
    ``eval.protocol``."""
    metrics: dict[str, float] = {}
    for split, frames in frames_by_split.items():
        scores = evaluate(model, body, frames, context_gap=context_gap, protocol=protocol)
        metrics.update({f"{split}/{k}": v for k, v in scores.items()})
        if split == "test":
            metrics.update(scores)
    return metrics


FILM_PREFIX = "film."
"""State-dict prefix of the regressor's FiLM module (``Regressor.film``)."""


def load_base_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a refinement's base model (``train.pretrained``'s state dict) into ``model``, strictly.

    One case is let through on purpose: a FiLM regressor (model.film=true) from a base without FiLM weights
    (no ``film.`` key at all: the shipped base models and every pretraining run). The FiLM weights keep
    their initialisation, whose zeroed output layer makes FiLM the identity, so the model starts as exactly
    its base. Any other missing or unexpected key raises, as ``load_state_dict`` does.
    """
    film = {k: v for k, v in model.state_dict().items() if k.startswith(FILM_PREFIX)}
    if film and not any(k.startswith(FILM_PREFIX) for k in state):
        state = {**film, **state}
    model.load_state_dict(state)


def frozen_copy(model: nn.Module) -> nn.Module:
    """The anchor network: a copy of ``model`` in eval mode without gradients."""
    frozen = copy.deepcopy(model).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def check_checkpoint_matches(cfg: Config, state: dict[str, Any], *, path: str, base: bool = False) -> None:
    """Raise a ConfigError naming the first key of ``MODEL_KEYS`` on which a checkpoint's stored config and
    ``cfg`` disagree: such a checkpoint would not load, or would load into another model silently (e.g.
    another body model at evaluation).

    ``base=True`` (a refinement's ``train.pretrained``) allows exactly one mismatch: a checkpoint without
    FiLM (model.film=false) refined with model.film=true; ``load_base_weights`` then adds the FiLM module at
    its identity initialisation. Resumes and evaluations (``base=False``) must match on every key."""
    stored = flatten(to_dict(Config.from_dict(state["config"])))
    wanted = flatten(to_dict(cfg))
    for key in MODEL_KEYS:
        if base and key == "model.film" and wanted[key] and not stored[key]:
            continue
        if stored[key] != wanted[key]:
            raise ConfigError(key, wanted[key], f"the checkpoint {path} has {key}={stored[key]!r}; set "
                              f"{key}={stored[key]} to use it, or choose another checkpoint or run.name")


def load_model_for_eval(cfg: Config, checkpoint: str) -> nn.Module:
    """The model a checkpoint holds, built from ``cfg``; ``checkpoint='mean'`` is the constant mean-pose
    baseline. A checkpoint whose model keys (``MODEL_KEYS``) disagree with ``cfg`` is refused by name."""
    if checkpoint == "mean":
        return MeanPoseBaseline(mean_params_for(cfg))
    state = load_checkpoint(checkpoint)
    check_checkpoint_matches(cfg, state, path=checkpoint)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model


def evaluation_config(checkpoint: str, *, config_path: str | None = None,
                      overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """The config ``raymotion evaluate`` and jobs/evaluate.py score ``checkpoint`` with: the checkpoint's own
    stored config under ``config_path`` and ``overrides`` (``checkpoint.checkpoint_config``: an override of
    one of ``MODEL_KEYS`` is refused by name); for 'mean' (no checkpoint) the defaults under them."""
    if checkpoint == "mean":
        return load_config(config_path, overrides)
    return checkpoint_config(checkpoint, config_path=config_path, overrides=overrides)[0]


def evaluate_checkpoint(cfg: Config, checkpoint: str, *, split: str) -> dict[str, Any]:
    """Metrics of a checkpoint (or 'mean') on a split under ``eval.protocol``, each with its standard error over
    clips, and ``protocol``: how they were computed (``raymotion.eval.protocols.Protocol.record``)."""
    metrics: dict[str, Any] = evaluate(load_model_for_eval(cfg, checkpoint), load_body_model(cfg.body),
                                       labelled_frames(cfg, split), context_gap=cfg.train.video_gap,
                                       protocol=cfg.eval.protocol)
    metrics["protocol"] = {**PROTOCOLS[cfg.eval.protocol].record(), "body": cfg.body.model,
                           "body_gender": cfg.body.gender if cfg.body.model == "smpl" else "neutral", "split": split}
    return metrics


def compare_checkpoints(cfg: Config, checkpoint_a: str, checkpoint_b: str, *, split: str,
                        cfg_b: Config | None = None) -> dict[str, float]:
    """``eval.evaluate.paired_change`` from checkpoint a to b on a split: b's error minus a's per metric
    (negative: b is better), with the paired standard error over clips. ``cfg_b``: b's config where its
    model differs from a's (e.g. a FiLM refinement against a plain control); default ``cfg``."""
    cfg_b = cfg_b or cfg
    return paired_change(load_model_for_eval(cfg, checkpoint_a), load_model_for_eval(cfg_b, checkpoint_b),
                         load_body_model(cfg.body), labelled_frames(cfg, split),
                         context_gap_a=cfg.train.video_gap, context_gap_b=cfg_b.train.video_gap)

"""Single-process loops: pretrain, refine, evaluate. Read top to bottom; the step lives in step.py.

Each run writes ``<run.output_dir>/<run.name>/``: ``config.yaml`` (resolved), ``checkpoint.pt`` (atomic,
every ``train.checkpoint_every`` steps and at the end), ``log.jsonl`` (one line per logged step) and
``metrics.json`` (val and test metrics of the final model). A run whose folder already holds a checkpoint
resumes from it. Batches are a pure function of (seed, step), so a resumed run sees the same batches as
an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from raymotion.body.body_model import BodyModel, load_body_model
from raymotion.config import Config, save_config, to_dict
from raymotion.data.frames import LabelledFrames, VideoPairs
from raymotion.eval.evaluate import MeanPoseBaseline, evaluate
from raymotion.models.regressor import MeanParams, build_regressor, freeze_batchnorm
from raymotion.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from raymotion.train.step import pretrain_loss, refine_loss

MEAN_PARAMS_ANNY = Path(__file__).resolve().parent.parent / "assets" / "mean_params_anny.npz"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_dir(cfg: Config) -> Path:
    return Path(cfg.run.output_dir) / cfg.run.name


def mean_params_for(cfg: Config) -> MeanParams:
    """The regressor's starting point: a named file, the shipped one for the embedded body, or a default."""
    if cfg.model.mean_params:
        return MeanParams.from_npz(cfg.model.mean_params)
    if cfg.body.model.startswith("anny") and MEAN_PARAMS_ANNY.is_file():
        return MeanParams.from_npz(MEAN_PARAMS_ANNY)
    return MeanParams.default()


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


def labelled_frames(cfg: Config, split: str, *, augment: bool = False, fraction: float = 1.0) -> LabelledFrames:
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
    )


class RunLog:
    """Appends one JSON line per logged step and prints a short progress line."""

    def __init__(self, directory: Path, *, total_steps: int, label: str, start_step: int = 0) -> None:
        self.path = directory / "log.jsonl"
        self.total_steps = total_steps
        self.label = label
        self.start_step = start_step  # the step this process started from (a resumed run's checkpoint)
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self, step: int, logs: dict[str, float]) -> None:
        elapsed = self.elapsed
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **logs, "wall_s": elapsed}) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if not k.startswith("sup/"))
        rate = (step - self.start_step) / elapsed if elapsed > 0 else float("nan")
        print(f"[{self.label}] step {step}/{self.total_steps} ({elapsed:.0f} s, {rate:.2f} steps/s): {shown}",
              flush=True)


def _start_run(cfg: Config) -> tuple[Path, dict[str, Any] | None]:
    directory = run_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    save_config(cfg, directory / "config.yaml")
    checkpoint = directory / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint) if checkpoint.is_file() else None
    if state is not None:
        print(f"resuming {directory} from step {state['step']}")
    return directory, state


def make_optimiser(cfg: Config, model: nn.Module, stage: str) -> torch.optim.Optimizer:
    """Adam at ``train.pretrain_lr`` for stage 'pretrain', ``train.lr`` for 'refine'."""
    lr = cfg.train.pretrain_lr if stage == "pretrain" else cfg.train.lr
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.train.weight_decay)


def _save(directory: Path, *, model: nn.Module, optimiser: torch.optim.Optimizer, step: int, cfg: Config, kind: str,
          skipped: int) -> None:
    save_checkpoint(
        directory / CHECKPOINT_NAME,
        {
            "model": model.state_dict(),
            "optimizer": optimiser.state_dict(),
            "step": step,
            "kind": kind,
            "skipped_steps": skipped,
            "config": to_dict(cfg),
            "torch_rng": torch.get_rng_state(),
        },
    )


def _resume(state: dict[str, Any] | None, model: nn.Module, optimiser: torch.optim.Optimizer) -> tuple[int, int]:
    """Restore a checkpoint's model, optimiser and RNG; returns (first step to run, skipped steps so far)."""
    if state is None:
        return 0, 0
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], state["skipped_steps"]


def _after_step(done: int, total: int, *, cfg: Config, log: RunLog, logs: dict[str, float], directory: Path,
                model: nn.Module, optimiser: torch.optim.Optimizer, kind: str, skipped: int) -> None:
    """Log and checkpoint on their intervals and after the last step (``done`` steps are complete)."""
    if done % cfg.train.log_every == 0 or done == total:
        log.write(done, {**logs, "skipped_steps": skipped})
    if done % cfg.train.checkpoint_every == 0 or done == total:
        _save(directory, model=model, optimiser=optimiser, step=done, cfg=cfg, kind=kind, skipped=skipped)


def final_metrics(model: nn.Module, body: BodyModel, frames_by_split: dict[str, Any]) -> dict[str, float]:
    """``<split>/<metric>`` for each split's frames, plus the test split's as the headline keys (mpjpe_mm,
    pa_mpjpe_mm, pve_mm, accel_error_mm). Test is reported, never selected on."""
    metrics: dict[str, float] = {}
    for split, frames in frames_by_split.items():
        scores = evaluate(model, body, frames)
        metrics.update({f"{split}/{k}": v for k, v in scores.items()})
        if split == "test":
            metrics.update(scores)
    return metrics


def _finish(directory: Path, cfg: Config, model: nn.Module, body: BodyModel, *, extra: dict[str, Any]) -> dict[str, Any]:
    """Val and test metrics of the final model into metrics.json."""
    metrics: dict[str, Any] = {**extra, **final_metrics(
        model, body, {split: labelled_frames(cfg, split) for split in ("val", "test")})}
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def frozen_copy(model: nn.Module) -> nn.Module:
    """The anchor network: a copy of ``model`` in eval mode without gradients."""
    frozen = copy.deepcopy(model).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def finite_step(loss: torch.Tensor, model: nn.Module, optimiser: torch.optim.Optimizer) -> bool:
    """Backward and update, unless the loss or a gradient is not finite (then nothing is trained on).

    Under torch.distributed (DDP workers) every rank must take the same decision, or the ranks' weights
    drift apart: each flag is all-reduced (any rank non-finite -> every rank skips).
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()

    def everywhere(ok: bool) -> bool:
        if not distributed:
            return ok
        flag = torch.tensor(float(ok), device=loss.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return flag.item() == 1.0

    optimiser.zero_grad(set_to_none=True)
    if not everywhere(bool(torch.isfinite(loss.detach()))):
        return False
    loss.backward()
    if not everywhere(all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)):
        optimiser.zero_grad(set_to_none=True)
        return False
    optimiser.step()
    return True


def pretrain(cfg: Config) -> dict[str, Any]:
    """Supervised pretraining on ``train.fraction`` of the labelled pool. Returns the final metrics."""
    directory, state = _start_run(cfg)
    seed_everything(cfg.run.seed)
    body = load_body_model(cfg.body)
    train_set = labelled_frames(cfg, "labelled", augment=cfg.train.augment, fraction=cfg.train.fraction)
    model = build_model(cfg)
    optimiser = make_optimiser(cfg, model, "pretrain")
    start, skipped = _resume(state, model, optimiser)
    total = cfg.train.pretrain_steps
    log = RunLog(directory, total_steps=total, label=f"pretrain {cfg.run.name}", start_step=start)
    print(f"pretraining on {len(train_set)} labelled frames ({cfg.train.fraction:.1%} of the pool's clips)")
    model.train()
    for step in range(start, total):
        batch = collate(train_set, batch_indices(len(train_set), cfg.train.batch_size, seed=cfg.run.seed, step=step))
        loss, logs = pretrain_loss(model, body, batch, cfg.loss)
        skipped += not finite_step(loss, model, optimiser)
        _after_step(step + 1, total, cfg=cfg, log=log, logs=logs, directory=directory, model=model,
                    optimiser=optimiser, kind="pretrain", skipped=skipped)
    return _finish(directory, cfg, model, body, extra={"kind": "pretrain", "fraction": cfg.train.fraction,
                                                       "labelled_frames": len(train_set), "skipped_steps": skipped})


def refine(cfg: Config) -> dict[str, Any]:
    """Motion-consistency refinement from ``train.pretrained`` (METHOD.md 3-4). Returns the final metrics."""
    if not cfg.train.pretrained:
        raise ValueError("train.pretrained is empty: set it to a pretraining run's checkpoint "
                         "(e.g. --set train.pretrained=runs/<name>/checkpoint.pt)")
    pretrained = load_checkpoint(cfg.train.pretrained)
    directory, state = _start_run(cfg)
    seed_everything(cfg.run.seed)
    body = load_body_model(cfg.body)
    model = build_model(cfg)
    model.load_state_dict(pretrained["model"])
    frozen = frozen_copy(model)
    if cfg.train.freeze_batchnorm:
        freeze_batchnorm(model)
    optimiser = make_optimiser(cfg, model, "refine")
    start, skipped = _resume(state, model, optimiser)
    labelled = labelled_frames(cfg, "labelled", augment=cfg.train.augment, fraction=cfg.train.fraction)
    pairs = VideoPairs(
        cfg.data.root,
        split="video",
        crop_size=cfg.data.crop_size,
        bbox_scale=cfg.data.bbox_scale,
        flow=cfg.flow.estimator if cfg.train.flow_source == "estimator" else "ground_truth",
        flow_config=cfg.flow,
        gap=cfg.train.video_gap,
        max_clips=cfg.train.video_clips or None,
        with_labels=cfg.loss.video_kp2d_weight > 0,  # the stand-in detector reads the 2D joints only
    )
    total = cfg.train.refine_steps
    log = RunLog(directory, total_steps=total, label=f"refine {cfg.run.name}", start_step=start)
    print(f"refining on {len(pairs)} video pairs with {len(labelled)} labelled frames as anchor")
    model.train()  # BatchNorm stays frozen: freeze_batchnorm's hooks outlive train()
    for step in range(start, total):
        pair_batch = collate(pairs, batch_indices(len(pairs), cfg.train.pair_batch_size, seed=cfg.run.seed, step=step))
        label_batch = collate(labelled, batch_indices(len(labelled), cfg.train.batch_size, seed=cfg.run.seed + 1, step=step))
        loss, logs = refine_loss(model, frozen, body, pair_batch, label_batch, cfg.loss, step=step, total_steps=total)
        skipped += not finite_step(loss, model, optimiser)
        _after_step(step + 1, total, cfg=cfg, log=log, logs=logs, directory=directory, model=model,
                    optimiser=optimiser, kind="refine", skipped=skipped)
    return _finish(directory, cfg, model, body, extra={"kind": "refine", "pretrained": cfg.train.pretrained,
                                                       "video_pairs": len(pairs), "skipped_steps": skipped})


def evaluate_checkpoint(cfg: Config, checkpoint: str, *, split: str) -> dict[str, float]:
    """Metrics of a checkpoint on a split; ``checkpoint='mean'`` scores the constant mean-pose baseline."""
    body = load_body_model(cfg.body)
    if checkpoint == "mean":
        model: nn.Module = MeanPoseBaseline(mean_params_for(cfg))
    else:
        model = build_model(cfg)
        model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return evaluate(model, body, labelled_frames(cfg, split))

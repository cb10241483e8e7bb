"""Ray Train workers: pretraining and refinement as distributed data-parallel loops, written out.

Each Ray Train worker runs ``pretrain_fn_per_worker`` or ``refine_fn_per_worker`` with the config as a
plain dict (``config.to_dict``). The loop is the single-process one (train/loop.py) with three changes:
the model is wrapped for DDP (gloo on CPU, NCCL on GPU; ``ray.train.torch.prepare_model``), each worker
draws its batches from its own shard of the data, and metrics and checkpoints leave the worker only
through ``ray.train.report``. The loss of a step is ``train/step.py``'s, the same function the
single-process loops call.

Data per worker (rank r of R):
- labelled frames (pretraining, and refinement's anchor batch): the worker decodes the labelled fraction
  and samples its step's batch from the items i = r (mod R), a pure function of (seed, step, rank);
- video pairs (refinement): ``scaling.video_source='ray_data'`` reads the worker's split of the Ray Data
  pipeline (``ray.train.get_dataset_shard('video')``, decode + crop + flow, shuffled with a seeded local
  buffer); ``'precomputed'`` reads the same rows from the pair store (``data.flow_store``) the same way;
  ``'local'`` reads the pairs from disk with the flow cache and samples like the labelled frames.
With one worker both sources give the single-process loop's batches exactly ('local') or in a seeded
streaming order ('ray_data').

Checkpoints (every ``train.checkpoint_every`` steps and at the end) hold the model, optimiser, step, RNG
states and the data position. Rank 0 writes ``<storage>/<run.name>/checkpoint.pt`` atomically and reports
the same file as a Ray checkpoint. A worker group restarted by Ray Train (``scaling.max_failures``)
resumes from ``ray.train.get_checkpoint()``; a new job with ``--resume`` resumes from checkpoint.pt.

BatchNorm stays frozen under DDP: ``freeze_batchnorm`` runs before the DDP wrap, its hooks keep every BN
in eval mode, and DDP broadcasts buffers that no longer change. The frozen anchor network is a plain copy
on each worker (no DDP, no gradients).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from torch import Tensor, nn

from raymotion.body.body_model import load_body_model
from raymotion.config import Config, save_config, to_dict
from raymotion.data.crops import IMAGENET_MEAN, IMAGENET_STD
from raymotion.data.frames import VideoPairs
from raymotion.eval.evaluate import evaluate
from raymotion.models.regressor import RegressorOutput, freeze_batchnorm
from raymotion.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from raymotion.train.loop import (RunLog, batch_indices, build_model, collate, final_metrics, finite_step, frozen_copy,
                                  labelled_frames, make_optimiser, seed_everything)
from raymotion.train.report import write_run_report
from raymotion.train.step import pretrain_loss, refine_loss

FAULT_MARKER = ".fault_injected"


def pretrain_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: supervised pretraining on ``train.fraction`` of the labelled pool."""
    cfg = Config.from_dict(config)
    _train(cfg, "pretrain")


def refine_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: flow-consistency refinement of ``train.pretrained`` on unannotated video."""
    cfg = Config.from_dict(config)
    _train(cfg, "refine")


def run_directory(cfg: Config) -> Path:
    """``<storage>/<run.name>``: ``scaling.storage_path`` or ``run.output_dir``, absolute."""
    return Path(cfg.scaling.storage_path or cfg.run.output_dir).resolve() / cfg.run.name


class _Autocast(nn.Module):
    """Runs the wrapped regressor under bf16 autocast and hands float32 outputs to the body model."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, images_B3HW: Tensor) -> RegressorOutput:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.inner(images_B3HW)
        return RegressorOutput(rotmats_BJ33=out.rotmats_BJ33.float(), rot6d_BJ6=out.rot6d_BJ6.float(),
                               betas_BK=out.betas_BK.float(), cam_B3=out.cam_B3.float(),
                               feature_BD=out.feature_BD.float())


def _shard_batch(num_items: int, batch_size: int, *, seed: int, step: int, rank: int, world: int) -> np.ndarray:
    """Indices of this rank's batch: drawn from the items i = rank (mod world), a function of (seed, step)."""
    shard_N = np.arange(rank, num_items, world)
    if len(shard_N) == 0:
        raise ValueError(f"{num_items} items cannot be split over {world} workers: lower scaling.num_workers")
    return shard_N[batch_indices(len(shard_N), batch_size, seed=seed, step=step)]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class _StreamedPairs:
    """This worker's video pairs from the Ray Data shard, as refine_loss batches, epoch after epoch.

    Rows carry uint8 crops (module doc of data/pipeline.py); images are normalised here. ``skip`` batches
    of the first epoch are consumed unseen, so a resumed run continues where its checkpoint stopped.
    """

    def __init__(self, cfg: Config, *, epoch: int, skip: int) -> None:
        self.shard = ray.train.get_dataset_shard("video")
        self.cfg = cfg
        self.epoch = epoch
        self.position = skip  # batches of the current epoch already trained on
        self._batches = self._epoch_batches(skip)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self._scale, self._shift = 1.0 / (255.0 * std), mean / std

    def _epoch_batches(self, skip: int) -> Iterator[dict[str, Tensor]]:
        batches = self.shard.iter_torch_batches(
            batch_size=self.cfg.train.pair_batch_size, drop_last=True,
            local_shuffle_buffer_size=8 * self.cfg.train.pair_batch_size,
            local_shuffle_seed=self.cfg.run.seed * 1000 + self.epoch,
        )
        for n, batch in enumerate(batches):
            if n >= skip:
                yield batch

    def next(self) -> dict[str, Tensor]:
        for _ in range(2):
            batch = next(self._batches, None)
            if batch is not None:
                self.position += 1
                return self._convert(batch)
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(0)
        raise ValueError(f"this worker's share of the video pairs holds fewer than train.pair_batch_size="
                         f"{self.cfg.train.pair_batch_size} pairs: lower it or scaling.num_workers")

    def _convert(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for name in ("image1", "image2"):
            out[name] = batch[name].permute(0, 3, 1, 2).float() * self._scale - self._shift
        out["flow_fwd"], out["flow_bwd"] = batch["flow_fwd"].float(), batch["flow_bwd"].float()
        return out


def _resume_state(cfg: Config, directory: Path) -> dict[str, Any] | None:
    """The state to resume from: Ray's latest checkpoint (worker-group restart), else checkpoint.pt."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_NAME)
    path = directory / CHECKPOINT_NAME
    return load_checkpoint(path) if path.is_file() else None


def _record_worker(directory: Path, *, rank: int, world: int, device: torch.device) -> None:
    """Append where this worker runs to ``workers.jsonl`` (one line per worker start, restarts included)."""
    line = {"rank": rank, "world": world, "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(), "pid": os.getpid(), "device": str(device), "time": time.time()}
    with (directory / "workers.jsonl").open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def _maybe_inject_fault(cfg: Config, directory: Path, *, step: int, rank: int) -> None:
    """Fault injection (``scaling.fail_at_step``): rank 0 kills its own process, once per run folder."""
    if cfg.scaling.fail_at_step and step == cfg.scaling.fail_at_step and rank == 0:
        marker = directory / FAULT_MARKER
        if not marker.exists():
            marker.write_text(f"worker 0 killed itself at step {step} (scaling.fail_at_step)\n")
            print(f"fault injection: killing worker 0 at step {step}", flush=True)
            os._exit(1)


def _train(cfg: Config, stage: str) -> None:
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    device = ray.train.torch.get_device()
    directory = run_directory(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.run.seed)

    body = load_body_model(cfg.body).to(device)
    model = build_model(cfg)
    frozen = None
    before: dict[str, float] = {}
    if stage == "refine":
        pretrained = load_checkpoint(cfg.train.pretrained)
        model.load_state_dict(pretrained["model"])
        frozen = frozen_copy(model).to(device)
        if cfg.train.freeze_batchnorm:
            freeze_batchnorm(model)
    model = model.to(device)
    optimiser = make_optimiser(cfg, model, stage)
    _record_worker(directory, rank=rank, world=world, device=device)
    state = _resume_state(cfg, directory)
    start, skipped, epoch, position = 0, 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, skipped = state["step"], state["skipped_steps"]
        epoch, position = state.get("data_epoch", 0), state.get("data_position", 0)
        if rank == 0:
            print(f"resuming {directory} from step {start}", flush=True)
    bare = model  # the module whose state_dict is saved and evaluated
    ddp = ray.train.torch.prepare_model(model, move_to_device=False)
    use_bf16 = cfg.scaling.mixed_precision == "bf16" or (cfg.scaling.mixed_precision == "auto" and device.type == "cuda")
    trained = _Autocast(ddp, device.type) if use_bf16 else ddp

    labelled = labelled_frames(cfg, "labelled", augment=cfg.train.augment, fraction=cfg.train.fraction)
    pairs: VideoPairs | _StreamedPairs | None = None
    if stage == "refine":
        if cfg.scaling.video_source in ("ray_data", "precomputed"):
            pairs = _StreamedPairs(cfg, epoch=epoch, skip=position)
        else:
            pairs = VideoPairs(cfg.data.root, split="video", crop_size=cfg.data.crop_size, bbox_scale=cfg.data.bbox_scale,
                               flow=cfg.flow.estimator if cfg.train.flow_source == "estimator" else "ground_truth",
                               flow_config=cfg.flow,
                               gap=cfg.train.video_gap, max_clips=cfg.train.video_clips or None,
                               with_labels=cfg.loss.video_kp2d_weight > 0)
    total = cfg.train.pretrain_steps if stage == "pretrain" else cfg.train.refine_steps
    val = labelled_frames(cfg, "val") if rank == 0 else None
    if rank == 0:
        save_config(cfg, directory / "config.yaml")
        if stage == "refine" and frozen is not None:
            before = {f"val/{k}": v for k, v in evaluate(frozen, body, val).items()}
        what = f"{len(labelled)} labelled frames" + (f" and video pairs ({cfg.scaling.video_source})" if pairs else "")
        print(f"[{stage} {cfg.run.name}] {world} worker(s) on {device}, {what}, steps {start}->{total}", flush=True)

    log = RunLog(directory, total_steps=total, label=f"{stage} {cfg.run.name}", start_step=start)
    trained.train()
    logs: dict[str, float] = {}
    # Every report carries the latest val metrics (Tune checks each report for its metric; ASHA reads it);
    # until the first evaluation they are the starting model's.
    last_val: dict[str, float] = dict(before)
    for step in range(start, total):
        _maybe_inject_fault(cfg, directory, step=step, rank=rank)
        label_ix = _shard_batch(len(labelled), cfg.train.batch_size, seed=cfg.run.seed + (stage == "refine"),
                                step=step, rank=rank, world=world)
        label_batch = _to_device(collate(labelled, label_ix), device)
        if stage == "pretrain":
            loss, logs = pretrain_loss(trained, body, label_batch, cfg.loss)
        else:
            if isinstance(pairs, _StreamedPairs):
                pair_batch = pairs.next()
            else:
                pair_ix = _shard_batch(len(pairs), cfg.train.pair_batch_size, seed=cfg.run.seed, step=step,
                                       rank=rank, world=world)
                pair_batch = collate(pairs, pair_ix)
            loss, logs = refine_loss(trained, frozen, body, _to_device(pair_batch, device), label_batch, cfg.loss,
                                     step=step, total_steps=total)
        skipped += not finite_step(loss, ddp, optimiser)
        done = step + 1
        last = done == total
        logs = {**logs, "skipped_steps": float(skipped)}
        if rank == 0 and (done % cfg.train.log_every == 0 or last):
            log.write(done, logs)
        report: dict[str, Any] = {}
        if done % cfg.train.eval_every == 0 or last:
            if rank == 0:
                last_val = {f"val/{k}": v for k, v in evaluate(bare, body, val).items()}
                report.update(last_val)
                bare.train()
                log.write(done, {k: v for k, v in report.items() if k.endswith("_mm")})
        checkpoint_now = done % cfg.train.checkpoint_every == 0 or last
        if report or checkpoint_now:
            report.update({**last_val, "step": done, **logs})
            data_position = (pairs.epoch, pairs.position) if isinstance(pairs, _StreamedPairs) else (0, 0)
            _report(cfg, directory, report, rank=rank, checkpoint=checkpoint_now, state={
                "model": bare.state_dict(), "optimizer": optimiser.state_dict(), "step": done, "kind": stage,
                "skipped_steps": skipped, "config": to_dict(cfg), "torch_rng": torch.get_rng_state(),
                "data_epoch": data_position[0], "data_position": data_position[1]})

    if rank == 0:
        metrics: dict[str, Any] = {"kind": stage, "workers": world, "skipped_steps": skipped,
                                   "train_seconds": log.elapsed}
        test = labelled_frames(cfg, "test")  # decoded once for the model before and after
        if stage == "refine":
            metrics["pretrained"] = cfg.train.pretrained
            metrics.update({f"before/{k}": v for k, v in before.items()})
            metrics.update({f"before/test/{k}": v for k, v in evaluate(frozen, body, test).items()})
        metrics.update(final_metrics(bare, body, {"val": val, "test": test}))
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_run_report(directory, metrics)
        print(f"[{stage} {cfg.run.name}] wrote {directory}/metrics.json and report.md", flush=True)


def _report(cfg: Config, directory: Path, metrics: dict[str, Any], *, rank: int, checkpoint: bool,
            state: dict[str, Any]) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches the checkpoint and writes checkpoint.pt."""
    if not (checkpoint and rank == 0):
        ray.train.report(metrics)
        return
    save_checkpoint(directory / CHECKPOINT_NAME, state)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder) / CHECKPOINT_NAME, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))



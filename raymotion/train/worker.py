"""The training loop: pretraining and refinement as data-parallel Ray Train workers, written out.

This is raymotion's only training loop. Ray Train runs ``pretrain_fn_per_worker`` or
``refine_fn_per_worker`` on every worker with the config as a plain dict (``config.to_dict``);
``raymotion pretrain``/``refine`` run the same function in Ray Train's local mode
(``ScalingConfig(num_workers=0)``: in this process, no cluster), so there is one checkpoint format, one
resume path and one rule for where a run's folder is (``run_directory``). The step's loss is
``train/step.py``'s; the model is wrapped for DDP (gloo on CPU, NCCL on GPU; ``prepare_model``) when
there are several workers; metrics and checkpoints leave the worker through ``ray.train.report``.

Data per worker (rank r of R):
- labelled frames (pretraining, and refinement's anchor batch): the worker decodes and keeps only its
  shard, the frames n = r (mod R) of the labelled fraction (``LabelledFrames(shard=(r, R))``: memory per
  worker falls with R), and draws its step's batch from it as a pure function of (seed, step), so a
  resumed run repeats the uninterrupted one's batches;
- video pairs (refinement): ``data.video_source='ray_data'`` reads the worker's split of the Ray Data
  pipeline (``ray.train.get_dataset_shard('video')``, decode + crop + flow, shuffled with a seeded local
  buffer); ``'precomputed'`` reads the same rows from the pair store (``data.flow_store``) the same way;
  ``'local'`` reads the pairs from disk with the flow cache and samples like the labelled frames. With
  ``model.film`` (the temporal-context variant) every source yields 3-frame windows instead of pairs
  (``frames_per_item=3``), and the refinement starts the FiLM module new on a base without one.

Reports: every rank calls ``ray.train.report`` at the same steps (Train V2's report is a barrier: a rank
that skips one leaves the others waiting until the collective timeout), i.e. at every evaluation step
(``train.eval_every``), every checkpoint step (``train.checkpoint_every``) and the last step. Validation
metrics (``val/...``, rank 0's) are in a report only when they were computed at that step: fresh or
absent, never a stale copy.

Storage: the run folder ``<scaling.storage_path or run.output_dir>/<run.name>`` may be local, NFS or an
object store (``s3://...``); everything is written through ``raymotion.storage`` (whole files, atomic).
Checkpoints (every ``train.checkpoint_every`` steps and at the end) hold the model, optimiser, step, RNG
states and the data position; rank 0 writes ``checkpoint.pt`` and reports the same file as a Ray
checkpoint. A worker group restarted by Ray Train (``scaling.max_failures``) resumes from
``ray.train.get_checkpoint()``; a new job with ``--resume`` resumes from checkpoint.pt. Each worker start
writes its own ``workers/rank<r>-<pid>-<ns>.json`` (no shared file is appended to: NFS and object stores
cannot append atomically).

BatchNorm stays frozen under DDP: ``freeze_batchnorm`` runs before the DDP wrap, its hooks keep every BN
in eval mode, and DDP broadcasts buffers that no longer change. The frozen anchor network is a plain copy
on each worker (no DDP, no gradients).
"""

from __future__ import annotations

import contextlib
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
from torch import Tensor

from raymotion.body.body_model import load_body_model
from raymotion.config import Config, config_yaml, to_dict
from raymotion.data.crops import normalise_batch_images
from raymotion.data.video_pairs import VideoPairs
from raymotion.data.manifest import frames_per_item_for
from raymotion.eval.evaluate import evaluate
from raymotion.models.regressor import freeze_batchnorm
from raymotion.storage import StoragePath
from raymotion.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from raymotion.train.components import (RunLog, batch_indices, build_model, collate, final_metrics, frozen_copy,
                                        labelled_frames, load_base_weights, make_optimiser, seed_everything,
                                        storage_root)
from raymotion.train.report import write_run_report
from raymotion.train.step import pretrain_loss, refine_loss
from raymotion.train.update import Bf16Autocast, finite_step

FAULT_MARKER = ".fault_injected"
WORKERS_DIR = "workers"


def pretrain_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: supervised pretraining on ``train.fraction`` of the labelled pool."""
    cfg = Config.from_dict(config)
    with _torch_threads(cfg.scaling.threads_per_worker):
        _train(cfg, "pretrain")


def refine_fn_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry: flow-consistency refinement of ``train.pretrained`` on unannotated video."""
    cfg = Config.from_dict(config)
    with _torch_threads(cfg.scaling.threads_per_worker):
        _train(cfg, "refine")


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads for the run, restored afterwards: in local mode the loop runs in the
    caller's process (the CLI, a notebook, a test), whose later float results depend on the thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_directory(cfg: Config) -> StoragePath:
    """``<storage_root>/<run.name>``: the run's folder (Ray Train writes its own checkpoints there too)."""
    return storage_root(cfg) / cfg.run.name


def _shard_batch(num_items: int, batch_size: int, *, seed: int, step: int, rank: int, world: int) -> np.ndarray:
    """Indices of this rank's batch: drawn from the items i = rank (mod world), a function of (seed, step)."""
    shard_N = np.arange(rank, num_items, world)
    if len(shard_N) == 0:
        raise ValueError(f"{num_items} items cannot be split over {world} workers: lower scaling.num_workers")
    return shard_N[batch_indices(len(shard_N), batch_size, seed=seed, step=step)]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def pair_rows_to_batch(rows: dict[str, Tensor]) -> dict[str, Tensor]:
    """A batch of the pair pipeline's rows (module doc of data/pipeline.py) -> ``refine_loss``'s pair batch.

    Images arrive as uint8 (B, S, S, 3) and leave ImageNet-normalised (B, 3, S, S) float32; flows as float32.
    Everything stays on the device the rows are on: ``iter_torch_batches`` puts them on the worker's device
    (CUDA on a GPU worker), so nothing here may assume the CPU.
    """
    images = ("image0", "image1", "image2") if "image0" in rows else ("image1", "image2")  # windows: model.film
    return {**{name: normalise_batch_images(rows[name]) for name in images},
            "flow_fwd": rows["flow_fwd"].float(), "flow_bwd": rows["flow_bwd"].float()}


class _StreamedPairs:
    """This worker's video pairs from the Ray Data shard, as refine_loss batches, epoch after epoch.

    ``skip`` batches of the first epoch are consumed unseen, so a resumed run continues where its
    checkpoint stopped.
    """

    def __init__(self, cfg: Config, *, epoch: int, skip: int) -> None:
        self.shard = ray.train.get_dataset_shard("video")
        self.cfg = cfg
        self.epoch = epoch
        self.position = skip  # batches of the current epoch already trained on
        self._batches = self._epoch_batches(skip)

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
                return pair_rows_to_batch(batch)
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._epoch_batches(0)
        raise ValueError(f"this worker's share of the video pairs holds fewer than train.pair_batch_size="
                         f"{self.cfg.train.pair_batch_size} pairs: lower it or scaling.num_workers")


def _resume_state(directory: StoragePath) -> dict[str, Any] | None:
    """The state to resume from: Ray's latest checkpoint (worker-group restart), else checkpoint.pt."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            return load_checkpoint(Path(folder) / CHECKPOINT_NAME)
    path = directory / CHECKPOINT_NAME
    return load_checkpoint(path) if path.is_file() else None


def _record_worker(directory: StoragePath, *, rank: int, world: int, device: torch.device) -> None:
    """Write where this worker runs to its own ``workers/rank<r>-<pid>-<ns>.json`` (one file per start)."""
    line = {"rank": rank, "world": world, "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized()
            else "", "host": socket.gethostname(), "pid": os.getpid(), "device": str(device), "time": time.time()}
    (directory / WORKERS_DIR / f"rank{rank}-{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(line))


def worker_starts(directory: str | os.PathLike | StoragePath) -> list[dict[str, Any]]:
    """Every worker start recorded in a run folder (restarts included), in time order."""
    starts = [json.loads(p.read_text()) for p in (StoragePath(directory) / WORKERS_DIR).iterdir()
              if p.name.endswith(".json")]
    return sorted(starts, key=lambda s: (s["time"], s["rank"]))


def _maybe_inject_fault(cfg: Config, directory: StoragePath, *, step: int, rank: int) -> None:
    """Fault injection (``scaling.fail_at_step``): rank 0 kills its own process, once per run folder."""
    if cfg.scaling.fail_at_step and step == cfg.scaling.fail_at_step and rank == 0:
        marker = directory / FAULT_MARKER
        if not marker.exists():
            marker.write_text(f"worker 0 killed itself at step {step} (scaling.fail_at_step)\n")
            print(f"fault injection: killing worker 0 at step {step}", flush=True)
            os._exit(1)


def report_steps(total: int, *, eval_every: int, checkpoint_every: int) -> tuple[set[int], set[int]]:
    """(steps that evaluate, steps that checkpoint), counted in finished steps 1..total; both hold the last.
    Every rank reports at the union of the two, whichever it is."""
    evals = {s for s in range(1, total + 1) if s % eval_every == 0} | {total}
    checkpoints = {s for s in range(1, total + 1) if s % checkpoint_every == 0} | {total}
    return evals, checkpoints


def _train(cfg: Config, stage: str) -> None:
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    directory = run_directory(cfg)  # created by the first write into it (StoragePath writes make parents)
    seed_everything(cfg.run.seed)

    body = load_body_model(cfg.body).to(device)
    model = build_model(cfg)
    frozen = None
    before: dict[str, float] = {}
    if stage == "refine":
        pretrained = load_checkpoint(cfg.train.pretrained)
        load_base_weights(model, pretrained["model"])  # a FiLM model from a non-FiLM base: FiLM new (identity)
        frozen = frozen_copy(model).to(device)
        if cfg.train.freeze_batchnorm:
            freeze_batchnorm(model)
    model = model.to(device)
    optimiser = make_optimiser(cfg, model, stage)
    state = _resume_state(directory)
    start, skipped, epoch, position = 0, 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start, skipped = state["step"], state["skipped_steps"]
        epoch, position = state.get("data_epoch", 0), state.get("data_position", 0)
        if rank == 0:
            print(f"resuming {directory} from step {start}", flush=True)
    # Only now, with the checkpoint loaded, does this worker write anything into the run folder.
    _record_worker(directory, rank=rank, world=world, device=device)
    bare = model  # the module whose state_dict is saved and evaluated
    ddp = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    use_bf16 = cfg.scaling.mixed_precision == "bf16" or (cfg.scaling.mixed_precision == "auto" and device.type == "cuda")
    trained = Bf16Autocast(ddp, device.type) if use_bf16 else ddp

    labelled = labelled_frames(cfg, "labelled", augment=cfg.train.augment, fraction=cfg.train.fraction,
                               shard=(rank, world))
    pairs: VideoPairs | _StreamedPairs | None = None
    if stage == "refine":
        if cfg.data.video_source in ("ray_data", "precomputed"):
            pairs = _StreamedPairs(cfg, epoch=epoch, skip=position)
        else:
            pairs = VideoPairs(cfg.data.root, split="video", crop_size=cfg.data.crop_size, bbox_scale=cfg.data.bbox_scale,
                               flow=cfg.flow.estimator if cfg.train.flow_source == "estimator" else "ground_truth",
                               flow_config=cfg.flow,
                               gap=cfg.train.video_gap, frames_per_item=frames_per_item_for(cfg.model.film),
                               max_clips=cfg.train.video_clips or None,
                               with_labels=cfg.loss.video_kp2d_weight > 0, bad_input=cfg.data.bad_input,
                               decoder=cfg.data.decoder)
    total = cfg.train.pretrain_steps if stage == "pretrain" else cfg.train.refine_steps
    gap = cfg.train.video_gap  # a FiLM model's context spacing at evaluation, as in its training windows
    val = labelled_frames(cfg, "val") if rank == 0 else None
    if rank == 0:
        (directory / "config.yaml").write_text(config_yaml(cfg))
        if stage == "refine" and frozen is not None:
            before = {f"val/{k}": v
                      for k, v in evaluate(frozen, body, val, context_gap=gap, protocol=cfg.eval.protocol).items()}
        what = (f"{len(labelled)} labelled frames on rank 0" +
                (f" and video pairs ({cfg.data.video_source})" if pairs else ""))
        print(f"[{stage} {cfg.run.name}] {world} worker(s) on {device}, {what}, steps {start}->{total}", flush=True)

    log = RunLog(directory, total_steps=total, label=f"{stage} {cfg.run.name}", start_step=start)
    eval_steps, checkpoint_steps = report_steps(total, eval_every=cfg.train.eval_every,
                                                checkpoint_every=cfg.train.checkpoint_every)
    trained.train()
    for step in range(start, total):
        _maybe_inject_fault(cfg, directory, step=step, rank=rank)
        # This rank's shard holds the frames i = rank (mod world): the same batches as drawing from the
        # whole list with _shard_batch, without holding the other ranks' frames.
        label_ix = batch_indices(len(labelled), cfg.train.batch_size, seed=cfg.run.seed + (stage == "refine"),
                                 step=step)
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
        logs = {**logs, "skipped_steps": float(skipped)}
        if rank == 0 and (done % cfg.train.log_every == 0 or done == total):
            log.write(done, logs)
        if done not in eval_steps and done not in checkpoint_steps:
            continue
        # Every rank gets here at the same steps (report is a barrier); only rank 0 evaluates.
        report: dict[str, Any] = {"step": done, **logs}
        if done in eval_steps and rank == 0:
            fresh = {f"val/{k}": v
                     for k, v in evaluate(bare, body, val, context_gap=gap, protocol=cfg.eval.protocol).items()}
            bare.train()
            log.write(done, {k: v for k, v in fresh.items() if k.endswith("_mm")})
            report.update(fresh)
        state = None
        if done in checkpoint_steps and rank == 0:  # only rank 0 writes checkpoints
            data_position = (pairs.epoch, pairs.position) if isinstance(pairs, _StreamedPairs) else (0, 0)
            state = {"model": bare.state_dict(), "optimizer": optimiser.state_dict(), "step": done, "kind": stage,
                     "skipped_steps": skipped, "config": to_dict(cfg), "torch_rng": torch.get_rng_state(),
                     "data_epoch": data_position[0], "data_position": data_position[1]}
        _report(directory, report, state=state)

    if rank == 0:
        metrics: dict[str, Any] = {"kind": stage, "workers": world, "skipped_steps": skipped,
                                   "train_seconds": log.elapsed}
        test = labelled_frames(cfg, "test")  # decoded once for the model before and after
        # data.bad_input=skip: what rank 0's datasets left out (its labelled shard, in-memory pairs, val, test).
        metrics["bad_input_skipped"] = sum(len(frames.skipped) for frames in (labelled, val, test)) + (
            len(pairs.skipped) if isinstance(pairs, VideoPairs) else 0)
        if stage == "refine":
            metrics["pretrained"] = cfg.train.pretrained
            metrics.update({f"before/{k}": v for k, v in before.items()})
            before_test = evaluate(frozen, body, test, context_gap=gap, protocol=cfg.eval.protocol)
            metrics.update({f"before/test/{k}": v for k, v in before_test.items()})
        metrics.update(final_metrics(bare, body, {"val": val, "test": test}, context_gap=gap,
                                     protocol=cfg.eval.protocol))
        metrics["eval_protocol"] = cfg.eval.protocol
        (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_run_report(directory, metrics)
        print(f"[{stage} {cfg.run.name}] wrote {directory}/metrics.json and report.md", flush=True)


def _report(directory: StoragePath, metrics: dict[str, Any], *, state: dict[str, Any] | None) -> None:
    """``ray.train.report`` (every rank calls it at the same steps); with a ``state`` (rank 0 at a checkpoint
    step) it first writes checkpoint.pt and attaches the same file as a Ray checkpoint."""
    if state is None:
        ray.train.report(metrics)
        return
    save_checkpoint(directory / CHECKPOINT_NAME, state)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder) / CHECKPOINT_NAME, state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

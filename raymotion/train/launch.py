"""Launching Ray Train runs: the TorchTrainer built from the config, and the jobs' one-call entry points.

    run_training(cfg, "refine", resume=False) -> metrics dict   # what jobs/refine.py calls
    build_trainer(cfg, "refine", datasets) -> TorchTrainer        # for callers that drive fit() themselves

Everything that can be checked on the driver is checked before Ray starts a worker: the config (typed,
validated when it is built), the input files, and whether the run folder already holds a checkpoint
(then ``resume=True`` continues it, anything else is refused so that nothing is overwritten).
Paths are made absolute on the driver, because workers may start in another folder (``ray job submit``
unpacks the working directory elsewhere); on a multi-node cluster they must also be on shared storage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from raymotion.config import Config, ConfigError, check_refinement, flatten, to_dict
from raymotion.data.flow_store import precompute_for_config, read_pairs
from raymotion.data.pipeline import build_pair_dataset
from raymotion.data.manifest import MANIFEST, UNRENDERED, check_clip_lengths, frames_per_item_for, read_manifest
from raymotion.storage import StoragePath
from raymotion.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from raymotion.train.components import check_checkpoint_matches, compare_checkpoints, storage_root
from raymotion.train.plan import check_schedulable, run_plan
from raymotion.train.report import before_after_table, control_table
from raymotion.train.worker import pretrain_fn_per_worker, refine_fn_per_worker, run_directory

STAGES = {"pretrain": pretrain_fn_per_worker, "refine": refine_fn_per_worker}
EXTRA_LOCAL_CPUS = 4  # logical CPUs beyond the cores for a local Ray: room for Ray Data's tasks (FACTS.md)


def absolute_paths(cfg: Config) -> Config:
    """The config with its input and output paths made absolute (against the driver's working directory)."""
    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve()) if path and "://" not in path else path

    return dataclasses.replace(
        cfg,
        body=dataclasses.replace(cfg.body, smpl_dir=absolute(cfg.body.smpl_dir)),  # body.h36m_regressor follows it
        data=dataclasses.replace(cfg.data, root=absolute(cfg.data.root)),
        run=dataclasses.replace(cfg.run, output_dir=absolute(cfg.run.output_dir)),
        train=dataclasses.replace(cfg.train, pretrained=absolute(cfg.train.pretrained)),
        model=dataclasses.replace(cfg.model, weights=absolute(cfg.model.weights),
                                  mean_params=absolute(cfg.model.mean_params)),
        scaling=dataclasses.replace(cfg.scaling, storage_path=absolute(cfg.scaling.storage_path)),
    )


def check_inputs(cfg: Config, stage: str, *, resume: bool) -> None:
    """Raise before any worker starts when an input is missing or a finished/started run would be overwritten."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; choose one of: {', '.join(STAGES)}")
    manifest = Path(cfg.data.root) / MANIFEST
    if not manifest.is_file():
        raise ConfigError("data.root", cfg.data.root, f"no {MANIFEST} there; generate the benchmark with "
                          f"`raymotion synth --set synth.out_dir={cfg.data.root}` or point data.root at one")
    if stage == "refine":
        if not cfg.train.pretrained:
            raise ConfigError("train.pretrained", "", "set it to a pretraining run's checkpoint.pt")
    check_config_only(cfg, stage, resume=resume)  # also: train.pretrained names an existing file
    # Checkpoints this run loads must be models of this config (read whole, so here, once per launch: the
    # jobs call check_config_only early too). The run's own when resuming, checked before anything is written.
    existing = run_directory(cfg) / CHECKPOINT_NAME
    if existing.is_file():
        # Loaded here, once: a truncated file would otherwise fail in every worker, scaling.max_failures times.
        try:
            state = load_checkpoint(existing)
        except ValueError as err:
            raise ValueError(f"cannot resume: {err}. Delete {existing} to start the run over, or choose another "
                             "run.name (--set run.name=...)") from None
        check_checkpoint_matches(cfg, state, path=str(existing))
    if stage == "refine":
        check_checkpoint_matches(cfg, load_checkpoint(cfg.train.pretrained), path=cfg.train.pretrained, base=True)
        if cfg.data.bad_input == "fail":  # the clips the refinement reads (VideoPairs, select_windows)
            video = [row for row in read_manifest(cfg.data.root).to_pylist() if row["split"] == "video"]
            check_clip_lengths(video[:cfg.train.video_clips or None], split="video", gap=cfg.train.video_gap,
                               bad_input="fail", frames_per_item=frames_per_item_for(cfg.model.film))


def init_ray(cfg: Config) -> None:
    """Join ``scaling.ray_address`` / $RAY_ADDRESS, or start a local Ray with CPUs to spare for Ray Data."""
    if ray.is_initialized():
        return
    address = cfg.scaling.ray_address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        num_cpus = cfg.scaling.ray_num_cpus or (os.cpu_count() or 1) + EXTRA_LOCAL_CPUS
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def build_trainer(cfg: Config, stage: str, datasets: dict[str, ray.data.Dataset] | None = None,
                  callbacks: list[Any] | None = None, *, local: bool = False) -> TorchTrainer:
    """The TorchTrainer of a run: workers and resources, storage and run name, failure policy, data split.
    ``callbacks`` go to its RunConfig (a Tune trial passes ``TuneReportCallback``). ``local=True``: Ray
    Train's local mode (``num_workers=0``), the same training function in this process, no cluster."""
    scaling = cfg.scaling
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        STAGES[stage],
        train_loop_config=to_dict(cfg),
        scaling_config=ray.train.ScalingConfig(num_workers=0 if local else scaling.num_workers,
                                               use_gpu=scaling.use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=scaling.placement_strategy),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage_root(cfg).uri,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        datasets=datasets or {},
        dataset_config=ray.train.DataConfig(datasets_to_split=list(datasets or {})),
    )


def video_datasets(cfg: Config) -> dict[str, ray.data.Dataset]:
    """The refinement's Ray Data inputs: {'video': frame pairs with flow (3-frame windows with model.film)},
    streamed ('ray_data') or read from the pair store ('precomputed', computed here first when missing), or {}
    for the local source."""
    if cfg.data.video_source == "precomputed":
        store = precompute_for_config(cfg)
        print(f"video pairs: {store.rows} from the pair store {store.folder}"
              + ("" if store.reused else f" (computed now in {store.seconds:.1f} s)"), flush=True)
        return {"video": read_pairs(store.folder)}
    if cfg.data.video_source != "ray_data":
        return {}
    return {"video": build_pair_dataset(
        cfg.data.root, split="video", crop_size=cfg.data.crop_size, bbox_scale=cfg.data.bbox_scale,
        gap=cfg.train.video_gap, window=cfg.data.decode_window, frames_per_item=frames_per_item_for(cfg.model.film),
        flow=cfg.flow.estimator, flow_config=cfg.flow, decoder=cfg.data.decoder, bad_input=cfg.data.bad_input,
        decode_concurrency=cfg.scaling.decode_actors, flow_concurrency=cfg.data.flow_actors,
        decode_gpus=cfg.scaling.decode_gpus, flow_gpus=cfg.scaling.flow_gpus, max_clips=cfg.train.video_clips or None,
    )}


def run_training(cfg: Config, stage: str, *, resume: bool = False, local: bool = False) -> dict[str, Any]:
    """Check, then run ``stage`` ('pretrain' or 'refine') on Ray Train; returns the run's metrics.json.

    ``local=True`` runs the same training function in Ray Train's local mode (this process; what
    ``raymotion pretrain``/``refine`` do): Ray itself starts only when the video pairs come from Ray Data.
    Before anything starts it prints the resource plan (workers, pipeline actors, GPU shares: train/plan.py)
    and waits up to ``scaling.schedule_timeout_s`` for the cluster to place it, failing by name otherwise."""
    cfg = absolute_paths(cfg)
    check_inputs(cfg, stage, resume=resume)
    plan = run_plan(cfg, stage, local=local)  # a bad GPU share fails here, before Ray starts
    print(plan.describe(), flush=True)
    if not local or (stage == "refine" and cfg.data.video_source != "local"):
        init_ray(cfg)
    check_schedulable(plan, timeout_s=cfg.scaling.schedule_timeout_s)
    datasets = video_datasets(cfg) if stage == "refine" else {}
    if local:  # local mode logs every report's whole dict at INFO; the run log already prints progress
        logging.getLogger("ray.train.v2._internal.execution.train_fn_utils").setLevel(logging.WARNING)
    trainer = build_trainer(cfg, stage, datasets, local=local)
    trainer.fit()
    return json.loads((run_directory(cfg) / "metrics.json").read_text())


# ---------------------------------------------------------------------------- the main job, end to end

BASE_MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "base_models"
# Keys a shipped base model must share with the run to stand in for pretraining: the data it was trained
# on (every synth key but where it is written and how), the model, its input and the annotation fraction.
# The held-out splits are drawn after the labelled and video clips (synth.scene.plan_clips), so their sizes never
# change what a base model was trained on.
_SYNTH_KEYS_IGNORED = {"synth.out_dir", "synth.num_workers", "synth.num_heldout_subjects", "synth.val_clips",
                       "synth.test_clips", "synth.eval_frames"}
_BASE_KEYS_PREFIXES = ("synth.", "model.", "body.model", "data.crop_size", "data.bbox_scale", "train.fraction",
                       "train.augment")


# ... and how a base model is pretrained: part of the name of a pretraining run (reused by runs that share it).
_PRETRAIN_RECIPE = ("train.pretrain_lr", "train.pretrain_steps", "train.batch_size", "train.weight_decay")


def _shipped_match_key(key: str) -> bool:
    # model.film is not part of a base model: a FiLM refinement starts from a base without FiLM.
    return (key.startswith(_BASE_KEYS_PREFIXES) and key not in _SYNTH_KEYS_IGNORED
            and key not in ("model.weights", "model.mean_params", "model.film"))


def defines_base_model(key: str) -> bool:
    """Whether the dotted config ``key`` changes which base model a refinement starts from."""
    return _shipped_match_key(key) or key in _PRETRAIN_RECIPE


def _base_keys(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(cfg_dict).items() if _shipped_match_key(k)}


def shipped_base_model(cfg: Config) -> Path | None:
    """A base checkpoint shipped in raymotion/assets/base_models whose recipe matches ``cfg``, if any."""
    wanted = _base_keys(to_dict(cfg))
    for path in sorted(BASE_MODELS_DIR.glob("*.pt")):
        if _base_keys(to_dict(Config.from_dict(load_checkpoint(path)["config"]))) == wanted:
            return path
    return None


def ensure_benchmark(cfg: Config) -> None:
    """Render into ``data.root`` the clips of the synthetic benchmark that this run reads and that are missing
    (``synth.generate.run_clips``: every video, val and test clip, and the labelled clips of ``train.fraction``'s
    subset; the other labelled clips, ~40 % of the default benchmark's rendering, are listed but left for
    ``raymotion synth``). Nothing to do for a folder with a manifest and no ``UNRENDERED`` list: a benchmark
    rendered in full, or a dataset of yours."""
    root = Path(cfg.data.root)
    unrendered_file = root / UNRENDERED
    if (root / MANIFEST).is_file() and not unrendered_file.is_file():
        return
    from raymotion.synth.generate import generate, run_clips
    from raymotion.synth.scene import plan_clips

    synth_cfg = dataclasses.replace(cfg, synth=dataclasses.replace(cfg.synth, out_dir=cfg.data.root))
    wanted = run_clips(plan_clips(synth_cfg.synth), fraction=cfg.train.fraction, fraction_seed=cfg.train.fraction_seed)
    if (root / MANIFEST).is_file() and not wanted & set(unrendered_file.read_text().split()):
        return
    print(f"rendering the clips this run reads into {root} (synth.* keys; `raymotion synth` renders every clip)",
          flush=True)
    generate(synth_cfg, only=wanted)


def ensure_pretrained(cfg: Config, *, resume: bool) -> Config:
    """``cfg`` with ``train.pretrained`` set: as given, a matching shipped base model, or a pretraining run
    ``base-f<fraction>-<hash of the base keys>`` (reused when it already finished)."""
    if cfg.train.pretrained:
        return cfg
    base = shipped_base_model(cfg)
    if base is not None:
        print(f"train.pretrained is empty: using the shipped base model {base.name} (its recipe matches; "
              f"remake it with the command in raymotion/assets/base_models/README.md)", flush=True)
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, pretrained=str(base)))
    # Named by what defines a base model (its data and model, and how it is pretrained), so runs and sweep
    # trials that need the same one share it.
    recipe = {k: v for k, v in flatten(to_dict(cfg)).items() if defines_base_model(k)}
    digest = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:8]
    # Fault injection (scaling.fail_at_step) is meant for the run asked for, not the base model made for it.
    # A base model has no FiLM module (model.film=true refines it with one).
    pre = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=f"base-f{cfg.train.fraction:g}-{digest}"),
                              scaling=dataclasses.replace(cfg.scaling, fail_at_step=0),
                              model=dataclasses.replace(cfg.model, film=False))
    pre = absolute_paths(pre)
    metrics_file = run_directory(pre) / "metrics.json"
    if not metrics_file.is_file():
        print(f"train.pretrained is empty and no shipped base model matches: pretraining {pre.run.name}", flush=True)
        run_training(pre, "pretrain", resume=resume or (run_directory(pre) / CHECKPOINT_NAME).is_file())
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, pretrained=(run_directory(pre) / CHECKPOINT_NAME).uri))


def control_config(cfg: Config) -> Config:
    """The anchors-only control of a refinement: the same config and seed without any video term."""
    loss = dataclasses.replace(cfg.loss, flow_weight=0.0, texture_weight=0.0, video_kp2d_weight=0.0)
    return dataclasses.replace(cfg, loss=loss, run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}-control"))


def _has_video_terms(cfg: Config) -> bool:
    return cfg.loss.flow_weight > 0 or cfg.loss.texture_weight > 0 or cfg.loss.video_kp2d_weight > 0


@ray.remote(num_cpus=0)
def _run_training_task(cfg_dict: dict[str, Any], stage: str, resume: bool) -> dict[str, Any]:
    """``run_training`` in a Ray task (holds no CPU: its TorchTrainer reserves the workers' resources), so
    that one driver runs several trainers at once."""
    return run_training(Config.from_dict(cfg_dict), stage, resume=resume)


def run_side_by_side(cfgs: dict[str, Config], stage: str, *, resume: bool) -> dict[str, dict[str, Any]]:
    """Run several trainings at once (a Ray task each, whose TorchTrainer takes its own workers and pipeline
    actors); returns each one's metrics.json by key. Every run is waited for before the first failure is
    raised, so that one run's error never leaves the other running unseen."""
    init_ray(next(iter(cfgs.values())))
    refs = {key: _run_training_task.remote(to_dict(c), stage, resume) for key, c in cfgs.items()}
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []
    for key, ref in refs.items():
        try:
            results[key] = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the run's own exception, raised below once all ended
            errors.append(error.as_instanceof_cause())
    if errors:
        raise errors[0]
    return results


def refine_job(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """The main job: benchmark if missing -> base model -> distributed refinement, beside its anchors-only
    control when ``train.control_run`` (two runs at once) -> before/after tables and the paired change of the
    refinement over the control on test. Returns the refinement's metrics (with ``control/...`` keys: the
    control's test metrics and ``control/change/<m>``, the paired change and its ``_se``)."""
    cfg = absolute_paths(cfg)
    with_control = cfg.train.control_run and _has_video_terms(cfg)
    check_config_only(cfg, "refine", resume=resume)
    if with_control:
        check_config_only(control_config(cfg), "refine", resume=resume)
    ensure_benchmark(cfg)
    cfg = ensure_pretrained(cfg, resume=resume)
    if not with_control:
        metrics = run_training(cfg, "refine", resume=resume)
        print(f"\nrefinement of {StoragePath(cfg.train.pretrained).name} -> {run_directory(cfg)}\n")
        print(before_after_table(metrics, split="test"))
        return metrics
    control = control_config(cfg)
    both = run_side_by_side({"refined": cfg, "control": control}, "refine", resume=resume)
    metrics, control_metrics = both["refined"], both["control"]
    change = compare_checkpoints(cfg, str(run_directory(control) / CHECKPOINT_NAME),
                                 str(run_directory(cfg) / CHECKPOINT_NAME), split="test")
    metrics = {**metrics, **{f"control/{k}": v for k, v in control_metrics.items() if k.startswith("test/")},
               **{f"control/change/{k}": v for k, v in change.items()}}
    print(f"\nrefinement of {StoragePath(cfg.train.pretrained).name} -> {run_directory(cfg)}"
          f"\nanchors-only control (no video term, same seed) -> {run_directory(control)}\n")
    print(control_table(metrics, flow_weight=cfg.loss.flow_weight, texture_weight=cfg.loss.texture_weight))
    return metrics


def check_config_only(cfg: Config, stage: str, *, resume: bool) -> None:
    """The checks of ``check_inputs`` that hold before the benchmark and base model exist."""
    if stage == "pretrain" and cfg.model.film:
        raise ConfigError("model.film", True, "the temporal-context variant is a refinement variant: pretrain "
                          "with model.film=false, then refine that base model with model.film=true (its FiLM "
                          "module starts as the identity)")
    if stage == "refine":
        check_refinement(cfg)
    existing = run_directory(cfg) / CHECKPOINT_NAME
    if existing.is_file() and not resume:
        raise FileExistsError(f"{existing} exists: pass --resume to continue that run, or choose a new "
                              f"run.name (--set run.name=...) to start another")
    if cfg.train.pretrained and not StoragePath(cfg.train.pretrained).is_file():
        raise ConfigError("train.pretrained", cfg.train.pretrained, "no such file; give a pretraining run's "
                          "checkpoint.pt (jobs/pretrain.py writes <run.output_dir>/<run.name>/checkpoint.pt), or "
                          "leave it empty in jobs/refine.py to use the shipped base model or pretrain one")


def pretrain_job(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """Benchmark if missing -> distributed pretraining on ``train.fraction`` of the labelled pool."""
    cfg = absolute_paths(cfg)
    check_config_only(cfg, "pretrain", resume=resume)
    ensure_benchmark(cfg)
    metrics = run_training(cfg, "pretrain", resume=resume)
    print(before_after_table(metrics, split="test"))
    return metrics

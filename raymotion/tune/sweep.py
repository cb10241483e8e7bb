"""Ray Tune + Optuna sweeps of refinement runs, one Tuner per base model (e.g. per annotation fraction).

    run_sweep(load_sweep("tune_configs/loss_weights.yaml")) -> sweep folder

The grid splits by ``SweepSpec.tuner_points``: grid keys that change the base model
(``launch.defines_base_model``) get a Tuner per combination; the others become ``tune.grid_search`` inside
it (or Tuners of their own when the sweep also searches with Optuna). Per Tuner: the benchmark is rendered
if missing and a base model found (shipped) or pretrained (``launch.ensure_pretrained``); then it samples
the ``search`` space with OptunaSearch (TPE, seeded) behind a concurrency limit, or walks its grid and
``num_samples`` repeats when there is nothing to search, with ASHA on
the validation metric (reported at every ``train.eval_every`` step, ``time_attr='step'``). Each trial is a
Train V2 driver function that builds the TorchTrainer and calls ``fit()`` (a Tuner cannot wrap a
TorchTrainer directly in Train V2; FACTS.md), relaying the workers' reports with ``TuneReportCallback``.
Trial names are ``<point>-<n>`` (n: Tune's trial number, in creation order); an interrupted sweep continues with
``Tuner.restore`` when rerun.

Outputs in the sweep folder ``<scaling.storage_path or run.output_dir>/sweeps/<name>/`` (``sweep_folder``;
local, NFS or ``s3://``, everything read and written through ``raymotion.storage``, so a sweep submitted
with ``ray job submit`` and a shared ``scaling.storage_path`` keeps its results off the head's local disk):
the Tuners' state (``<point>/``), the trials' run folders (``trials/<trial>/``), a copy of the sweep file
(``sweep.yaml``), ``results.csv`` (one row per trial: grid point, sampled
values, last validation metrics, test metrics of finished trials), ``results.md`` (mean and std over
``run.seed`` per grid point, best configuration per point), ``best_<point>.yaml`` and ``curve.png`` (the
metric against ``train.fraction`` for each other grid combination, when the grid has fractions).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import posixpath
import statistics
from collections import defaultdict
from typing import Any

import ray
import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from raymotion.config import Config, apply_overrides, to_dict
from raymotion.data.flow_store import precompute_for_config
from raymotion.eval.evaluate import METRIC_KEYS
from raymotion.storage import StoragePath
from raymotion.train.launch import (absolute_paths, build_trainer, defines_base_model, ensure_benchmark,
                                    ensure_pretrained, init_ray, video_datasets)
from raymotion.train.components import storage_root
from raymotion.tune.search_space import SweepSpec, tune_domains


class FreshMetricReport(TuneReportCallback):
    """Relays to Tune only the worker reports that carry the sweep's metric.

    The workers report at evaluation and at checkpoint steps, on every rank alike (train/worker.py), and
    validation metrics appear only in the reports of the steps that computed them. Tune refuses a result
    without its metric (strict metric checking) and ASHA ranks trials on it, so checkpoint-only reports
    stay with Ray Train (which keeps their checkpoints) and Tune sees fresh metrics only, never stale ones.
    """

    def __init__(self, metric: str) -> None:
        super().__init__()
        self.metric = metric

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if self.metric in metrics[0]:  # rank 0's report, the one Tune is given
            super().after_report(run_context, metrics, checkpoint)


def trial_driver(trial: dict[str, Any]) -> None:
    """One trial: the grid point's config + the sampled values -> a TorchTrainer run reporting to Tune."""
    cfg = apply_overrides(Config.from_dict(trial["base"]), trial.get("params", {}))
    name = ray.tune.get_context().get_trial_name()  # <point>-<trial number>, see trial_name
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name),
                              scaling=dataclasses.replace(cfg.scaling, storage_path=trial["storage"]))
    trainer = build_trainer(cfg, "refine", video_datasets(cfg), callbacks=[FreshMetricReport(trial["metric"])])
    trainer.fit()


def trial_name(point: str, trial: Any) -> str:
    """``<point>-<n>``: n is Tune's trial number (the experiment tag's prefix, counted in creation order;
    Tune's trial ids are random), so reruns and restores give the same names."""
    return f"{point}-{trial.experiment_tag.split('_', 1)[0]}"


def point_name(point: dict[str, Any]) -> str:
    return "_".join(f"{k.split('.')[-1]}{v}" for k, v in point.items()) or "all"


def sweep_folder(cfg: Config, name: str) -> StoragePath:
    """``<scaling.storage_path or run.output_dir>/sweeps/<name>``: beside the runs of ``cfg`` (shared storage
    on a cluster), like ``worker.run_directory``."""
    return storage_root(cfg) / "sweeps" / name


def _tuner(spec: SweepSpec, cfg: Config, point: str, folder: StoragePath, inner_grid: dict[str, list]) -> tune.Tuner:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    settings = spec.tune
    # The driver only waits on its TorchTrainer (a zero request is refused): the workers hold the CPUs.
    trainable = tune.with_resources(trial_driver, {"CPU": 0.1})
    # Tune resolves URIs with pyarrow.fs.FileSystem.from_uri (ray.train._internal.storage.get_fs_and_path),
    # which reads the same AWS_* variables as raymotion.storage: no storage_filesystem is needed.
    path = folder / point
    if tune.Tuner.can_restore(path.uri):
        print(f"restoring the interrupted sweep at {path}", flush=True)
        return tune.Tuner.restore(path.uri, trainable=trainable, resume_errored=True)
    search_alg = None
    if spec.search:
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        search_alg = ConcurrencyLimiter(
            OptunaSearch(metric=settings.metric, mode=settings.mode, sampler=TPESampler(seed=settings.seed)),
            max_concurrent=settings.max_concurrent_trials)
    scheduler = None
    if settings.asha is not None:
        scheduler = ASHAScheduler(time_attr="step", metric=settings.metric, mode=settings.mode,
                                  max_t=settings.asha.get("max_t", cfg.train.refine_steps),
                                  grace_period=settings.asha.get("grace_period", cfg.train.eval_every),
                                  reduction_factor=settings.asha.get("reduction_factor", 2))
    return tune.Tuner(
        trainable,
        param_space={"base": to_dict(cfg), "point": point, "storage": (folder / "trials").uri, "metric": settings.metric,
                     "params": {**tune_domains(spec.search),
                                **{k: tune.grid_search(v) for k, v in inner_grid.items()}}},
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent_trials,
            metric=None if (search_alg or scheduler) else settings.metric,
            mode=None if (search_alg or scheduler) else settings.mode,
            trial_name_creator=lambda t: trial_name(point, t),
            trial_dirname_creator=lambda t: trial_name(point, t)),
        run_config=tune.RunConfig(name=point, storage_path=folder.uri),
    )


def run_sweep(spec: SweepSpec) -> StoragePath:
    """Run every grid point's Tuner; write the result files; returns the sweep folder (``sweep_folder``)."""
    first = absolute_paths(spec.base_config())
    folder = sweep_folder(first, spec.tune.name)
    folder.mkdir()
    (folder / "sweep.yaml").write_text(spec.path.read_text())
    init_ray(first)
    rows: list[dict[str, Any]] = []
    for point, inner_grid in spec.tuner_points(defines_base_model):
        cfg = absolute_paths(spec.base_config(point))
        ensure_benchmark(cfg)
        cfg = ensure_pretrained(cfg, resume=True)
        if cfg.data.video_source == "precomputed":  # once here, not in every concurrent trial
            precompute_for_config(cfg)
        name = point_name(point)
        before = set(live_placement_groups())
        results = _tuner(spec, cfg, name, folder, inner_grid).fit()
        release_leftover_placement_groups(before)
        for result in results:
            trial_cfg = result.config or {}
            params = trial_cfg.get("params", {})
            row: dict[str, Any] = {"point": name, **point, **params}
            row.update({k: v for k, v in (result.metrics or {}).items() if k.startswith("val/") and k.endswith("_mm")})
            row["step"] = (result.metrics or {}).get("step")
            row["trial"] = posixpath.basename(result.path.rstrip("/"))  # a path inside result.filesystem
            metrics_file = folder / "trials" / row["trial"] / "metrics.json"
            if metrics_file.is_file():
                final = json.loads(metrics_file.read_text())
                row.update({f"test/{k}": final[k] for k in METRIC_KEYS})
                row.update({f"before/test/{k}": final.get(f"before/test/{k}") for k in METRIC_KEYS})
            rows.append(row)
    write_results(folder, spec, rows)
    return folder


def live_placement_groups() -> dict[str, Any]:
    """Every placement group not yet removed, cluster-wide: hex id -> its GCS record
    (``gcs_pb2.PlacementGroupTableData``: ``creator_job_id``, ``is_detached``, ``state``, ...).

    Read from the GCS table that ``ray.util.placement_group_table()`` reads, whole: in Ray 2.60 that function
    drops the creator's job and the detached flag (ray/_private/state.py::_gen_placement_group_info), and
    the state API that has them (``ray.util.state.list_placement_groups``) goes through the dashboard, which
    is missing exactly where the workaround below matters. A private Ray API: test_tune.py pins it.
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    removed = gcs_pb2.PlacementGroupTableData.REMOVED
    records = (gcs_pb2.PlacementGroupTableData.FromString(raw)
               for raw in state._connect_and_get_accessor().get_placement_group_table())
    return {record.placement_group_id.hex(): record for record in records if record.state != removed}


def release_leftover_placement_groups(before: set[str]) -> int:
    """Remove the placement groups this driver's job created since ``before`` (ids from
    ``live_placement_groups``) that outlive their finished Tuner; never another job's, never a detached one.

    Why (ray-project/ray#54305, still so in Ray 2.60): a Train V2 run inside a Tune trial makes its worker
    group's placement group from its controller actor, and a non-detached group lives until both its
    creator actor and its creator's job are dead. When a scheduler stops a trial (ASHA: early, and at
    ``max_t``, which every surviving trial reaches), Tune kills the trial actor before the controller's own
    shutdown removes the group; the controller dies with the trial, the job (this driver) lives on, and so
    does the group, holding the workers' CPUs/GPUs that later grid points then wait for forever. (Trials
    that end on their own, without a scheduler, release their groups: measured.) Ray 2.60's detached
    PlacementGroupCleaner (ray/train/v2/_internal/execution/controller/placement_group_cleaner.py) removes it
    once it sees the controller dead, but it asks the state API, i.e. the dashboard: without one
    (``include_dashboard=False``, as ``init_ray`` and the tests start Ray) it never does, and with one it
    does so asynchronously (measured: one of two groups still held right after ``fit()``, gone 10 s later).
    Removing a group that cleaner removed meanwhile is harmless (``remove_placement_group`` is idempotent).

    Scope: only groups whose ``creator_job_id`` is this driver's job (so another job's training on the same
    cluster is never touched), created during the Tuner (not in ``before``) and not detached. The Tuner is
    done when this runs, so nothing of the sweep still needs them. Returns how many were removed.
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    leftover = [pg_id for pg_id, record in live_placement_groups().items()
                if pg_id not in before and record.creator_job_id.hex() == job_id and not record.is_detached]
    for pg_id in leftover:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
    if leftover:
        print(f"released {len(leftover)} placement group(s) left by this sweep's finished trials "
              "(ray-project/ray#54305)", flush=True)
    return len(leftover)


def write_results(folder: StoragePath, spec: SweepSpec, rows: list[dict[str, Any]]) -> None:
    """results.csv, results.md (mean/std over run.seed per grid combination), best_<point>.yaml, curve.png.

    Each file is rendered in memory and written whole (``StoragePath.write_*``: atomic, also on S3)."""
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    (folder / "results.csv").write_text(table.getvalue())
    metric = spec.tune.metric
    sign = 1 if spec.tune.mode == "min" else -1
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    group_keys = [k for k in spec.grid if k != "run.seed"]
    for row in rows:
        groups[tuple(row.get(k) for k in group_keys)].append(row)
    shown = [metric] + [f"test/{m}" for m in METRIC_KEYS]
    lines = [f"# Sweep `{spec.tune.name}`", "", f"From `{spec.path.name}`; metric `{metric}` ({spec.tune.mode}).", "",
             "| " + " | ".join(group_keys or ["point"]) + " | trials | " + " | ".join(shown) + " |",
             "|" + "---|" * (len(group_keys or ["point"]) + 1 + len(shown))]
    for key, members in groups.items():
        cells = []
        for m in shown:
            xs = [r[m] for r in members if isinstance(r.get(m), (int, float)) and math.isfinite(r[m])]
            cells.append(f"{statistics.mean(xs):.1f} +/- {statistics.stdev(xs):.1f}" if len(xs) > 1
                         else (f"{xs[0]:.1f}" if xs else ""))
        lines.append("| " + " | ".join(map(str, key or ("all",))) + f" | {len(members)} | " + " | ".join(cells) + " |")
    lines.append("")
    for point in sorted({r["point"] for r in rows}):
        candidates = [r for r in rows if r["point"] == point and isinstance(r.get(metric), (int, float))]
        if not candidates:
            continue
        best = min(candidates, key=lambda r: sign * r[metric])
        chosen = {k: v for k, v in best.items() if k in spec.search}
        (folder / f"best_{point}.yaml").write_text(yaml.safe_dump({**spec.base, **{k: best[k] for k in spec.grid}, **chosen}))
        lines.append(f"- best at `{point}`: {metric} {best[metric]:.1f} with {chosen or 'the base config'}")
    (folder / "results.md").write_text("\n".join(lines) + "\n")
    if "train.fraction" in spec.grid:
        _plot_curve(folder, spec, groups, group_keys, metric)


def _plot_curve(folder: StoragePath, spec: SweepSpec, groups, group_keys: list[str], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = "test/pa_mpjpe_mm" if any("test/pa_mpjpe_mm" in r for m in groups.values() for r in m) else metric
    fi = group_keys.index("train.fraction")
    lines: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for key, members in groups.items():
        xs = [r[shown] for r in members if isinstance(r.get(shown), (int, float))]
        if xs:
            lines[key[:fi] + key[fi + 1:]].append((100 * key[fi], statistics.mean(xs)))
    fig, ax = plt.subplots(figsize=(6, 4))
    other = [k for k in group_keys if k != "train.fraction"]
    for key, points in lines.items():
        points.sort()
        ax.plot(*zip(*points), marker="o", label=", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(other, key)) or shown)
    ax.set_xscale("log")
    ax.set_xlabel("annotated fraction (%)")
    ax.set_ylabel(f"{shown} (mm)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    (folder / "curve.png").write_bytes(png.getvalue())

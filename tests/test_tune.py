"""Sweep files: every shipped one parses with every key checked; bad ones name the file and key; the smoke
sweep runs (Optuna + ASHA over Train V2 driver functions) and writes its results, to S3 when
scaling.storage_path says so; the leftover-placement-group cleanup touches only the sweep's own groups."""

import csv
import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from raymotion.tune.search_space import load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "tune_configs").glob("*.yaml"))


def _csv_rows(path) -> list[dict[str, str]]:
    """The rows of a results.csv on any storage (a StoragePath)."""
    return list(csv.DictReader(io.StringIO(path.read_text(), newline="")))


def test_the_shipped_sweeps_exist():
    assert {p.stem for p in SWEEPS} >= {"smoke", "loss_weights", "anchoring", "paper_table", "video_amount"}


def test_a_tuner_per_base_model_with_the_rest_of_the_grid_inside_it(tmp_path):
    from raymotion.train.launch import defines_base_model

    path = tmp_path / "grid.yaml"
    path.write_text("grid: {train.fraction: [0.05, 0.1], loss.flow_weight: [0.0, 0.1], run.seed: [0, 1, 2]}\ntune: {}")
    points = load_sweep(path).tuner_points(defines_base_model)
    assert points == [({"train.fraction": 0.05}, {"loss.flow_weight": [0.0, 0.1], "run.seed": [0, 1, 2]}),
                      ({"train.fraction": 0.1}, {"loss.flow_weight": [0.0, 0.1], "run.seed": [0, 1, 2]})]
    # Optuna takes no grid_search: with a search space every grid combination is its own Tuner.
    path.write_text("grid: {train.fraction: [0.05], run.seed: [0, 1]}\nsearch: {train.lr: {loguniform: [1.0e-5, 1.0e-3]}}\n"
                    "tune: {}")
    assert load_sweep(path).tuner_points(defines_base_model) == [({"train.fraction": 0.05, "run.seed": 0}, {}),
                                                                  ({"train.fraction": 0.05, "run.seed": 1}, {})]
    assert [defines_base_model(k) for k in ("train.fraction", "train.pretrain_lr", "synth.seed", "train.lr",
                                            "loss.flow_weight", "synth.out_dir")] == [True, True, True, False, False, False]


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_shipped_sweep_file_loads_and_every_key_is_a_config_key(path):
    spec = load_sweep(path)
    assert spec.grid_points() and spec.tune.metric == "val/pa_mpjpe_mm"


@pytest.mark.parametrize("text,match", [
    ("search: {loss.flow_weigth: {uniform: [0, 1]}}\ntune: {}", r"bad\.yaml: search\.loss\.flow_weigth: unknown config key\. Did you mean 'loss\.flow_weight'\?"),
    ("search: {loss.flow_weight: {gaussian: [0, 1]}}\ntune: {}", r"search\.loss\.flow_weight: expected one of"),
    ("search: {loss.flow_weight: {loguniform: [0, 1]}}\ntune: {}", r"loguniform needs low > 0"),
    ("grid: {train.fraction: [0.1, 2.0]}\ntune: {}",
     r"bad\.yaml: grid\.train\.fraction: train\.fraction=2\.0 is invalid: .*; fix it in the sweep file$"),
    ("search: {train.fraction: {uniform: [0.5, 2.0]}}\ntune: {}",
     r"bad\.yaml: search\.train\.fraction \(a bound or choice\): train\.fraction=2\.0 is invalid: .*sweep file$"),
    ("tune: {metric: val/pa_mpjpe}", r"bad\.yaml: tune\.metric: 'val/pa_mpjpe' is not reported by the runs; they "
     r"report: val/mpjpe_mm, val/mpjpe_mm_se, val/pa_mpjpe_mm, .*Did you mean 'val/pa_mpjpe_mm'\?"),
    ("grid: {loss.flow_weight: [0.1]}\nsearch: {loss.flow_weight: {uniform: [0, 1]}}\ntune: {}",
     r"bad\.yaml: grid and search: loss\.flow_weight in both"),
    ("base: {data.video_source: ray_data}\ngrid: {train.flow_source: [estimator, ground_truth]}\ntune: {}",
     r"bad\.yaml: grid point \{'train\.flow_source': 'ground_truth'\} with search values \(none\): "
     r"data\.video_source='ray_data' is invalid: the Ray Data pipeline estimates flow"),
    ("search: {loss.video_kp2d_weight: {choice: [0.0, 1.0]}}\ntune: {}",
     r"grid point \(none\) with search values \{'loss\.video_kp2d_weight': 1\.0\}: data\.video_source="),
    ("tune: {metrik: x}", r"tune: unknown key\(s\) \['metrik'\]"),
    ("base: {scaling.video_source: local}\ntune: {}",
     r"bad\.yaml: base\.scaling\.video_source: the key is now data\.video_source; write that instead"),
    ("tune: {mode: lowest}", r"bad\.yaml: tune\.mode: expected 'min' or 'max', got 'lowest'"),
    ("sweep: {}", r"unknown section\(s\) \['sweep'\]"),
])
def test_bad_sweep_files_name_the_file_and_the_key(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_sweep(path)
    assert "--set" not in str(info.value)  # a sweep file takes no --set


def test_the_metrics_a_sweep_may_rank_on_are_those_score_returns():
    from raymotion.eval.evaluate import SCORE_KEYS, score
    from raymotion.tune.search_space import REPORTED_METRICS

    pred = {"eval_joints_NE3": torch.zeros(3, 14, 3), "verts_NV3": torch.zeros(3, 5, 3)}
    truth = {**pred, "verts_pelvis_N3": torch.zeros(3, 3)}
    assert tuple(score(pred, truth, np.zeros(3), np.arange(3))) == SCORE_KEYS
    assert REPORTED_METRICS == tuple(f"val/{key}" for key in SCORE_KEYS)


@pytest.mark.render
@pytest.mark.ray
def test_smoke_sweep_runs_two_trials_and_writes_results_to_the_storage_path(tiny_benchmark, tmp_path, s3_server):
    """scaling.storage_path on an object store: the Tuner state, the trials and every result file go there,
    nothing of the sweep to run.output_dir (the head's local disk under `ray job submit`)."""
    ray = pytest.importorskip("ray")
    from raymotion.tune.sweep import run_sweep

    storage = f"{s3_server.bucket_uri}/{uuid.uuid4().hex[:8]}"
    spec = load_sweep(REPO / "tune_configs" / "smoke.yaml")
    spec.base.update({"data.root": str(tiny_benchmark), "run.output_dir": str(tmp_path), "body.model": "anny_lowres",
                      "train.max_eval_clips": 1, "scaling.storage_path": storage})
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)  # after s3_server's env
    try:
        folder = run_sweep(spec)
        free, total = ray.available_resources().get("CPU", 0), ray.cluster_resources().get("CPU", 0)
    finally:
        ray.shutdown()
    assert folder.uri == f"{storage}/sweeps/smoke"
    rows = _csv_rows(folder / "results.csv")
    assert len(rows) == 2 and {r["point"] for r in rows} == {"fraction1.0"}
    assert sorted(r["trial"] for r in rows) == ["fraction1.0-1", "fraction1.0-2"]  # deterministic names
    assert all(float(r["val/pa_mpjpe_mm"]) > 0 for r in rows)
    assert len({r["loss.flow_weight"] for r in rows}) == 2  # Optuna sampled two different weights
    assert all((folder / name).is_file() for name in ("results.md", "best_fraction1.0.yaml", "sweep.yaml"))
    assert (folder / "fraction1.0").is_dir()  # the Tuner's state, for Tuner.restore
    assert [p.name for p in (folder / "trials").iterdir()] == ["fraction1.0-1", "fraction1.0-2"]
    assert not (tmp_path / "sweeps").exists()
    assert free == total  # trials gave their CPUs back


@pytest.mark.render
@pytest.mark.ray
def test_an_interrupted_sweep_is_restored_and_its_trial_resumes(tiny_benchmark, tmp_path):
    """The first run's trial dies at step 3 with no retries left (an interruption); running the same sweep again
    restores the Tuner, and the trial continues from its step-2 checkpoint to the end."""
    ray = pytest.importorskip("ray")
    from raymotion.tune.sweep import run_sweep

    smoke = load_sweep(REPO / "tune_configs" / "smoke.yaml")
    path = tmp_path / "restore.yaml"
    path.write_text(yaml.safe_dump({
        "base": {**smoke.base, "data.root": str(tiny_benchmark), "run.output_dir": str(tmp_path / "runs"),
                 "body.model": "anny_lowres", "train.max_eval_clips": 1, "scaling.fail_at_step": 3,
                 "scaling.max_failures": 0},
        "grid": {"train.fraction": [1.0]},
        "tune": {"name": "restore", "num_samples": 1}}))
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    try:
        folder = run_sweep(load_sweep(path))
        first = _csv_rows(folder / "results.csv")
        folder = run_sweep(load_sweep(path))
        second = _csv_rows(folder / "results.csv")
    finally:
        ray.shutdown()
    assert len(first) == 1 and not first[0].get("test/pa_mpjpe_mm")  # interrupted: no final metrics
    assert len(second) == 1 and second[0]["trial"] == first[0]["trial"] and float(second[0]["test/pa_mpjpe_mm"]) > 0
    trial = folder / "trials" / first[0]["trial"]
    steps = [r["step"] for r in map(json.loads, (trial / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert (trial / ".fault_injected").is_file()
    assert steps == [2, 4]  # step 2 once: the second run continued after step 2's checkpoint, not from scratch


def test_the_sweep_folder_follows_scaling_storage_path(tmp_path):
    from raymotion.config import load_config
    from raymotion.tune.sweep import sweep_folder

    cfg = load_config(overrides={"run.output_dir": str(tmp_path / "runs")})
    assert sweep_folder(cfg, "s").uri == str(tmp_path / "runs" / "sweeps" / "s")
    cfg = load_config(overrides={"run.output_dir": str(tmp_path / "runs"), "scaling.storage_path": "s3://b/shared"})
    assert sweep_folder(cfg, "s").uri == "s3://b/shared/sweeps/s"


def test_sweep_results_are_written_to_an_object_store(s3_server, tmp_path):
    """write_results renders every file in memory and writes it through raymotion.storage (no local path)."""
    from raymotion.storage import StoragePath
    from raymotion.tune.sweep import write_results

    path = tmp_path / "fractions.yaml"
    path.write_text("grid: {train.fraction: [0.05, 0.1], run.seed: [0, 1]}\n"
                    "search: {loss.flow_weight: {uniform: [0, 1]}}\ntune: {name: fractions}")
    spec = load_sweep(path)
    rows = [{"point": f"fraction{f}_seed{s}", "train.fraction": f, "run.seed": s, "loss.flow_weight": 0.1 * (s + 1),
             "val/pa_mpjpe_mm": 100.0 - 100 * f + s, "test/pa_mpjpe_mm": 99.0 - 100 * f + s}
            for f in (0.05, 0.1) for s in (0, 1)]
    prefix = f"sweep-{uuid.uuid4().hex[:8]}"
    folder = StoragePath(f"{s3_server.bucket_uri}/{prefix}")
    write_results(folder, spec, rows)
    keys = set(s3_server.keys(prefix + "/"))
    assert {f"{prefix}/{name}" for name in ("results.csv", "results.md", "curve.png",
                                           "best_fraction0.05_seed0.yaml")} <= keys
    assert [float(r["val/pa_mpjpe_mm"]) for r in _csv_rows(folder / "results.csv")] == [95.0, 96.0, 90.0, 91.0]
    assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0.1 | 2 | 90.5 +/- 0.7 |" in (folder / "results.md").read_text()


# A second driver on the same cluster: another job's placement groups, made while the sweep's Tuner runs.
# It prints their ids and keeps its job alive until its stdin closes.
_OTHER_JOB = """
import sys
import ray
from ray.util.placement_group import placement_group

ray.init(address=sys.argv[1], log_to_driver=False)
groups = [placement_group([{"CPU": 0.25}]), placement_group([{"CPU": 0.25}], lifetime="detached")]
ray.get([g.ready() for g in groups])
print(" ".join(g.id.hex() for g in groups), flush=True)
sys.stdin.read()
"""


@pytest.mark.ray
def test_leftover_placement_groups_of_this_job_are_released_and_no_other(tmp_path):
    """ray-project/ray#54305 as a sweep meets it: a group made by an actor of this job (a Train V2 controller)
    that died during the Tuner stays until the job ends; it is removed. Groups of another job (live or
    detached), this job's detached ones and those from before the Tuner stay."""
    ray = pytest.importorskip("ray")
    from ray.util.placement_group import placement_group, placement_group_table

    from raymotion.tune.sweep import live_placement_groups, release_leftover_placement_groups

    @ray.remote(num_cpus=0)
    class Controller:
        def make_group(self) -> str:
            group = placement_group([{"CPU": 0.25}])
            ray.get(group.ready())
            return group.id.hex()

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    other = None
    try:
        earlier = placement_group([{"CPU": 0.25}])
        ray.get(earlier.ready())
        before = set(live_placement_groups())  # what run_sweep records before a Tuner
        other = subprocess.Popen([sys.executable, "-c", _OTHER_JOB, ray.get_runtime_context().gcs_address],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        other_ids = other.stdout.readline().split()
        assert len(other_ids) == 2, "the second driver did not start"
        controller = Controller.remote()
        leftover = ray.get(controller.make_group.remote())
        ray.kill(controller)  # as Tune kills a stopped trial and, with it, the controller it owns
        mine_detached = placement_group([{"CPU": 0.25}], lifetime="detached")
        ray.get(mine_detached.ready())
        assert live_placement_groups()[leftover].creator_job_id.hex() == ray.get_runtime_context().get_job_id()

        assert release_leftover_placement_groups(before) == 1
        state = {pg_id: info["state"] for pg_id, info in placement_group_table().items()}
        assert state[leftover] == "REMOVED"
        kept = [*other_ids, earlier.id.hex(), mine_detached.id.hex()]
        assert [state[pg_id] for pg_id in kept] == ["CREATED"] * 4
        assert release_leftover_placement_groups(before) == 0
    finally:
        if other is not None:
            other.stdin.close()
            other.wait(timeout=30)
        ray.shutdown()  # a local cluster: its detached groups go with it


def test_only_reports_with_a_fresh_metric_reach_tune():
    """Workers report at checkpoint steps without validation metrics (never a stale copy); Tune refuses a
    result without its metric, so those reports stay with Ray Train."""
    pytest.importorskip("ray")
    from raymotion.tune.sweep import FreshMetricReport

    class Queue:
        def __init__(self):
            self.items = []

        def put(self, item):
            self.items.append(item)

    relay = FreshMetricReport.__new__(FreshMetricReport)  # outside a Tune session: no real queue
    relay.metric, relay._training_actor_item_queue = "val/pa_mpjpe_mm", Queue()
    relay.after_report(None, [{"step": 2, "loss": 1.0}, {"step": 2}], None)  # a checkpoint-only step
    relay.after_report(None, [{"step": 3, "val/pa_mpjpe_mm": 90.0}, {"step": 3}], None)
    assert relay._training_actor_item_queue.items == [{"step": 3, "val/pa_mpjpe_mm": 90.0}]

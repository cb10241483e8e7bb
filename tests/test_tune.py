"""Sweep files: every shipped one parses with every key checked; bad ones name the file and key; the smoke
sweep runs (Optuna + ASHA over Train V2 driver functions) and writes its results."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from raymotion.tune.search_space import load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "tune_configs").glob("*.yaml"))


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
    ("grid: {train.fraction: [0.1, 2.0]}\ntune: {}", r"bad\.yaml: values: train\.fraction=2\.0 is invalid"),
    ("tune: {metrik: x}", r"tune: unknown key\(s\) \['metrik'\]"),
    ("sweep: {}", r"unknown section\(s\) \['sweep'\]"),
])
def test_bad_sweep_files_name_the_file_and_the_key(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_sweep(path)


@pytest.mark.render
@pytest.mark.ray
def test_smoke_sweep_runs_two_trials_and_writes_results(tiny_benchmark, tmp_path):
    ray = pytest.importorskip("ray")
    from raymotion.tune.sweep import run_sweep

    spec = load_sweep(REPO / "tune_configs" / "smoke.yaml")
    spec.base.update({"data.root": str(tiny_benchmark), "run.output_dir": str(tmp_path), "body.model": "anny_lowres",
                      "train.max_eval_clips": 1})
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    try:
        folder = run_sweep(spec)
        free, total = ray.available_resources().get("CPU", 0), ray.cluster_resources().get("CPU", 0)
    finally:
        ray.shutdown()
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert len(rows) == 2 and {r["point"] for r in rows} == {"fraction1.0"}
    assert sorted(r["trial"] for r in rows) == ["fraction1.0-1", "fraction1.0-2"]  # deterministic names
    assert all(float(r["val/pa_mpjpe_mm"]) > 0 for r in rows)
    assert len({r["loss.flow_weight"] for r in rows}) == 2  # Optuna sampled two different weights
    assert (folder / "results.md").is_file() and (folder / "best_fraction1.0.yaml").is_file()
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
        "recipe": str(REPO / "jobs" / "embedded_default.yaml"),
        "base": {**smoke.base, "data.root": str(tiny_benchmark), "run.output_dir": str(tmp_path / "runs"),
                 "body.model": "anny_lowres", "train.max_eval_clips": 1, "scaling.fail_at_step": 3,
                 "scaling.max_failures": 0},
        "grid": {"train.fraction": [1.0]},
        "tune": {"name": "restore", "num_samples": 1}}))
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    try:
        folder = run_sweep(load_sweep(path))
        first = list(csv.DictReader((folder / "results.csv").open()))
        folder = run_sweep(load_sweep(path))
        second = list(csv.DictReader((folder / "results.csv").open()))
    finally:
        ray.shutdown()
    assert len(first) == 1 and not first[0].get("test/pa_mpjpe_mm")  # interrupted: no final metrics
    assert len(second) == 1 and second[0]["trial"] == first[0]["trial"] and float(second[0]["test/pa_mpjpe_mm"]) > 0
    trial = folder / "trials" / first[0]["trial"]
    steps = [r["step"] for r in map(json.loads, (trial / "log.jsonl").open()) if "loss" in r]
    assert (trial / ".fault_injected").is_file()
    assert steps == [2, 4]  # step 2 once: the second run continued after step 2's checkpoint, not from scratch

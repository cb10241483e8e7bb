"""Sweep files: every shipped one parses with every key checked; bad ones name the file and key; the smoke
sweep runs (Optuna + ASHA over Train V2 driver functions) and writes its results."""

import csv
from pathlib import Path

import pytest

from raymotion.tune.search_space import load_sweep

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "tune_configs").glob("*.yaml"))


def test_the_shipped_sweeps_exist():
    assert {p.stem for p in SWEEPS} >= {"smoke", "loss_weights", "anchoring", "paper_table"}


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

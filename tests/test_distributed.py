"""Ray Train refinement: a killed worker is restarted from the last checkpoint, a stopped run resumes with
``--resume``, and both reproduce the local-mode run's loss curve exactly (the same training function in
this process; CPU, one thread, fixed seed). Two workers with evaluation and checkpoint intervals that do
not align finish (every rank reports at the same steps).
Also: a bad config fails before any worker starts, naming the key. (The Ray Data source is exercised by
tests/test_job_submit.py, whose job uses it.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raymotion.config import ConfigError, load_config
from raymotion.train.checkpoint import load_checkpoint

ray = pytest.importorskip("ray")
from raymotion.train import launch  # noqa: E402
from raymotion.train.worker import FAULT_MARKER, worker_starts  # noqa: E402

pytestmark = [pytest.mark.render, pytest.mark.ray]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def train_config(root, runs, name, **overrides):
    return load_config(overrides={
        "body.model": "anny_lowres", "data.root": str(root), "data.crop_size": 64, "run.output_dir": str(runs),
        "run.name": name, "train.fraction": 1.0, "train.batch_size": 4, "train.pair_batch_size": 2,
        "train.log_every": 1, "train.checkpoint_every": 2, "train.eval_every": 100, "train.max_eval_clips": 1,
        **overrides})


@pytest.fixture(scope="module")
def pretrained(tiny_benchmark, tmp_path_factory):
    runs = tmp_path_factory.mktemp("pre")
    launch.run_training(train_config(tiny_benchmark, runs, "pre", **{"train.pretrain_steps": 2}), "pretrain", local=True)
    return runs / "pre" / "checkpoint.pt"


def losses_by_step(directory):
    """step -> loss from log.jsonl; a step logged twice (re-run after a restart) keeps its last value."""
    rows = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, [r["step"] for r in rows if "loss" in r]


def refine_config(root, runs, name, pretrained, **overrides):
    return train_config(root, runs, name, **{"train.refine_steps": 6, "train.pretrained": str(pretrained),
                                             "data.video_source": "local", **overrides})


def test_ray_train_reproduces_the_plain_loop_through_a_killed_worker_and_a_stopped_run(
        ray_local, tiny_benchmark, pretrained, tmp_path):
    # The reference: the same training function in Ray Train's local mode (this process, one worker).
    launch.run_training(refine_config(tiny_benchmark, tmp_path, "plain", pretrained), "refine", local=True)
    reference, _ = losses_by_step(tmp_path / "plain")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]

    # Worker 0 kills its process before step 4 (index 3); Ray Train restarts the group from step 2's checkpoint.
    killed = launch.run_training(refine_config(tiny_benchmark, tmp_path, "killed", pretrained, **{
        "scaling.fail_at_step": 3, "scaling.max_failures": 1}), "refine")
    assert killed["workers"] == 1 and "before/test/pa_mpjpe_mm" in killed
    losses, order = losses_by_step(tmp_path / "killed")
    assert (tmp_path / "killed" / FAULT_MARKER).is_file()
    assert order == [1, 2, 3, 4, 5, 6]  # step 3 ran before the kill and again after the restart: logged once
    walls = [json.loads(line)["wall_s"] for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert walls == sorted(walls)  # wall time continues across the restart
    assert losses == reference
    # BatchNorm stayed frozen under DDP: the running statistics are the pretrained model's.
    before, after = load_checkpoint(pretrained)["model"], load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["model"]
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))  # it did train
    starts = worker_starts(tmp_path / "killed")  # one file per worker start, never a shared append
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]  # a new worker process

    # No restarts allowed: the run fails; a new launch refuses to overwrite it, and with resume=True it
    # continues from step 2's checkpoint.
    stopped = refine_config(tiny_benchmark, tmp_path, "stopped", pretrained, **{
        "scaling.fail_at_step": 3, "scaling.max_failures": 0})
    with pytest.raises(Exception):
        launch.run_training(stopped, "refine")
    with pytest.raises(FileExistsError, match="--resume"):
        launch.run_training(stopped, "refine")
    launch.run_training(stopped, "refine", resume=True)
    resumed, _ = losses_by_step(tmp_path / "stopped")
    assert resumed == reference
    report = (tmp_path / "stopped" / "report.md").read_text()
    assert "| PA-MPJPE (mm) |" in report and (tmp_path / "stopped" / "curves.png").is_file()


def test_bad_config_fails_before_any_worker_starts(tmp_path, monkeypatch):
    run = subprocess.run([sys.executable, str(REPO / "jobs" / "refine.py"), "--set", "scaling.num_workers=-1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert "scaling.num_workers=-1" in run.stderr and "ray" not in run.stdout.lower()
    monkeypatch.setattr(launch, "init_ray", lambda cfg: pytest.fail("Ray started before the config was checked"))
    cfg = train_config(tmp_path, tmp_path, "x", **{"train.pretrained": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match="train.pretrained"):
        launch.refine_job(cfg)
    cfg = train_config(tmp_path, tmp_path, "y", **{"loss.video_kp2d_weight": 0.1})
    with pytest.raises(ConfigError, match="data.video_source='ray_data'.*data.video_source=local"):
        launch.refine_job(cfg)


def test_two_workers_with_eval_and_checkpoint_intervals_that_do_not_align_finish(
        ray_local, tiny_benchmark, pretrained, tmp_path):
    """Before: only rank 0 reported at evaluation steps, so at step 3 it waited in report (a barrier) while
    rank 1 waited in the next all-reduce: a hang until the collective timeout, then again after a restart."""
    sets = {"body.model": "anny_lowres", "data.root": str(tiny_benchmark), "data.crop_size": 64,
            "run.output_dir": str(tmp_path), "run.name": "two", "train.fraction": 1.0, "train.batch_size": 4,
            "train.pair_batch_size": 2, "train.log_every": 1, "train.max_eval_clips": 1,
            "train.pretrained": str(pretrained), "data.video_source": "local", "scaling.num_workers": 2,
            "train.refine_steps": 5, "train.eval_every": 3, "train.checkpoint_every": 2, "scaling.max_failures": 0,
            "train.control_run": False}
    # The job in its own process with a timeout: a regression fails here instead of hanging CI.
    run = subprocess.run([sys.executable, str(REPO / "jobs" / "refine.py")]
                         + [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=420)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["workers"] == 2
    rows = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val/pa_mpjpe_mm" in r] == [3, 5]  # evaluated at 3 and the last step
    assert sorted({r["step"] for r in rows if "loss" in r}) == [1, 2, 3, 4, 5]
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["step"] == 5


def test_reports_are_made_at_the_same_steps_on_every_rank_with_fresh_validation_only():
    from raymotion.train.worker import report_steps

    evals, checkpoints = report_steps(7, eval_every=3, checkpoint_every=2)
    assert evals == {3, 6, 7} and checkpoints == {2, 4, 6, 7}


def test_the_main_job_runs_the_anchors_only_control_beside_the_refinement(
        ray_local, tiny_benchmark, pretrained, tmp_path, capsys):
    cfg = refine_config(tiny_benchmark, tmp_path, "main", pretrained, **{
        "train.refine_steps": 2, "loss.flow_weight": 0.1, "loss.texture_weight": 1.0, "train.max_eval_clips": 2})
    metrics = launch.refine_job(cfg)
    control = json.loads((tmp_path / "main-control" / "metrics.json").read_text())
    stored = load_checkpoint(tmp_path / "main-control" / "checkpoint.pt")["config"]
    assert stored["loss"]["flow_weight"] == 0 and stored["loss"]["texture_weight"] == 0  # no video term
    assert stored["run"]["seed"] == cfg.run.seed and stored["loss"]["anchor_joints"] == cfg.loss.anchor_joints
    assert control["before/test/pa_mpjpe_mm"] == metrics["before/test/pa_mpjpe_mm"]  # one base model
    # The paired change is a mean of per-frame differences: the difference of the two runs' means.
    assert metrics["control/change/pa_mpjpe_mm"] == pytest.approx(
        metrics["test/pa_mpjpe_mm"] - control["test/pa_mpjpe_mm"], abs=1e-6)
    assert metrics["control/change/pa_mpjpe_mm_se"] >= 0
    out = capsys.readouterr().out
    assert "| test metric | base model | anchors-only control | + flow + TexturePose |" in out

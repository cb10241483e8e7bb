"""Ray Train refinement: a killed worker is restarted from the last checkpoint, a stopped run resumes with
``--resume``, and both reproduce the single-process loop's loss curve exactly (CPU, one thread, fixed seed).
Also: a bad config fails before any worker starts, naming the key. (The Ray Data source is exercised by
tests/test_job_submit.py, whose job uses it.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raymotion.config import ConfigError, load_config
from raymotion.train import loop
from raymotion.train.checkpoint import load_checkpoint

ray = pytest.importorskip("ray")
from raymotion.train import launch  # noqa: E402
from raymotion.train.worker import FAULT_MARKER  # noqa: E402

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
    loop.pretrain(train_config(tiny_benchmark, runs, "pre", **{"train.pretrain_steps": 2}))
    return runs / "pre" / "checkpoint.pt"


def losses_by_step(directory):
    """step -> loss from log.jsonl; a step logged twice (re-run after a restart) keeps its last value."""
    rows = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, [r["step"] for r in rows if "loss" in r]


def refine_config(root, runs, name, pretrained, **overrides):
    return train_config(root, runs, name, **{"train.refine_steps": 6, "train.pretrained": str(pretrained),
                                             "scaling.video_source": "local", **overrides})


def test_ray_train_reproduces_the_plain_loop_through_a_killed_worker_and_a_stopped_run(
        ray_local, tiny_benchmark, pretrained, tmp_path):
    # The reference: the single-process loop (same step function, same batches for one worker).
    loop.refine(refine_config(tiny_benchmark, tmp_path, "plain", pretrained))
    reference, _ = losses_by_step(tmp_path / "plain")
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]

    # Worker 0 kills its process before step 4 (index 3); Ray Train restarts the group from step 2's checkpoint.
    killed = launch.run_training(refine_config(tiny_benchmark, tmp_path, "killed", pretrained, **{
        "scaling.fail_at_step": 3, "scaling.max_failures": 1}), "refine")
    assert killed["workers"] == 1 and "before/test/pa_mpjpe_mm" in killed
    losses, order = losses_by_step(tmp_path / "killed")
    assert (tmp_path / "killed" / FAULT_MARKER).is_file()
    assert order == [1, 2, 3, 3, 4, 5, 6]  # step 3 ran before the kill and again after the restart
    assert losses == reference
    # BatchNorm stayed frozen under DDP: the running statistics are the pretrained model's.
    before, after = load_checkpoint(pretrained)["model"], load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["model"]
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))  # it did train
    starts = [json.loads(line) for line in (tmp_path / "killed" / "workers.jsonl").read_text().splitlines()]
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
    run = subprocess.run([sys.executable, str(REPO / "jobs" / "refine.py"), "--set", "scaling.num_workers=0"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 2
    assert "scaling.num_workers=0" in run.stderr and "ray" not in run.stdout.lower()
    monkeypatch.setattr(launch, "init_ray", lambda cfg: pytest.fail("Ray started before the config was checked"))
    cfg = train_config(tmp_path, tmp_path, "x", **{"train.pretrained": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match="train.pretrained"):
        launch.refine_job(cfg)
    cfg = train_config(tmp_path, tmp_path, "y", **{"loss.video_kp2d_weight": 0.1})
    with pytest.raises(ConfigError, match="scaling.video_source='ray_data'.*scaling.video_source=local"):
        launch.refine_job(cfg)

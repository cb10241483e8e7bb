"""`ray job submit --working-dir . -- python jobs/refine.py` against a head node started with `ray start
--head` on loopback (dashboard bound to 127.0.0.1): the job succeeds and its logs show the result table."""

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raymotion.config import load_config
from raymotion.train.launch import run_training

pytest.importorskip("ray.dashboard")
pytestmark = [pytest.mark.render, pytest.mark.ray]
REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node(tmp_path):
    port, dashboard = free_port(), free_port()
    # Token authentication (Ray >= 2.59 turns it on for local clusters): the head and the client share one.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=6",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    "--disable-usage-stats"], check=True, capture_output=True, env=env, timeout=120)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_ray_job_submit_runs_the_refine_job(tiny_benchmark, head_node, tmp_path):
    address, env = head_node
    runs = tmp_path / "runs"
    overrides = {"body.model": "anny_lowres", "data.root": str(tiny_benchmark), "data.crop_size": 64,
                 "run.output_dir": str(runs), "train.fraction": 1.0, "train.batch_size": 4,
                 "train.pair_batch_size": 2, "train.max_eval_clips": 1}
    run_training(load_config(overrides={**overrides, "run.name": "pre", "train.pretrain_steps": 2}), "pretrain",
                 local=True)
    sets = {**overrides, "run.name": "submitted", "train.refine_steps": 2, "train.log_every": 1,
            "train.pretrained": str(runs / "pre" / "checkpoint.pt")}
    command = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               sys.executable, "jobs/refine.py"] + [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "succeeded" in run.stdout
    assert "| PA-MPJPE (mm) |" in run.stdout  # the before/after table, from the job's logs
    assert "video pairs (ray_data)" in run.stdout  # the recipe streams pairs through the Ray Data pipeline
    metrics = json.loads((runs / "submitted" / "metrics.json").read_text())
    assert metrics["kind"] == "refine" and metrics["workers"] == 1
    # Beside it, at once, the anchors-only control (two TorchTrainers, each with its own pipeline actors),
    # and the table of both with the paired change.
    assert json.loads((runs / "submitted-control" / "metrics.json").read_text())["kind"] == "refine"
    assert "anchors-only control" in run.stdout and "change over the control" in run.stdout

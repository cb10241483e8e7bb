"""Runs on cloud storage: an S3-compatible server on 127.0.0.1 (moto, started by the ``s3_server`` fixture)
holds everything a run writes and reads back. Before: ``Path(storage).resolve()`` turned ``s3://bucket/runs``
into a local folder, so config, log, checkpoint.pt, metrics and report landed on rank 0's disk.

The server's variables (AWS_ENDPOINT_URL, ...) are set before this module's Ray starts, so Ray's workers
inherit them and reach the same server, as nodes of a real cluster read their own AWS_* variables."""

import json
import os
import uuid

import pytest

from raymotion.config import load_config
from raymotion.storage import StoragePath

ray = pytest.importorskip("ray")
from raymotion.train import launch  # noqa: E402
from raymotion.train.checkpoint import load_checkpoint  # noqa: E402
from raymotion.train.worker import FAULT_MARKER, worker_starts  # noqa: E402

pytestmark = [pytest.mark.render, pytest.mark.ray]


@pytest.fixture(scope="module")
def ray_on_s3(s3_server):
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    yield s3_server
    ray.shutdown()


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """Run from an empty folder, and check that it is still empty afterwards: nothing lands locally."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert sorted(os.listdir(cwd)) == []


def test_a_run_and_its_resume_after_a_killed_worker_live_on_s3(ray_on_s3, tiny_benchmark, empty_cwd):
    storage = f"{ray_on_s3.bucket_uri}/{uuid.uuid4().hex}"
    common = {"body.model": "anny_lowres", "data.root": str(tiny_benchmark), "data.crop_size": 64,
              "train.fraction": 1.0, "train.batch_size": 4, "train.pair_batch_size": 2, "train.log_every": 1,
              "train.max_eval_clips": 1, "scaling.storage_path": storage, "data.video_source": "local"}
    # A base model pretrained into the bucket (local mode), then refined from there by a Ray Train worker
    # that is killed at step 3 and restarted from the checkpoint Ray Train keeps in the bucket.
    launch.run_training(load_config(overrides={**common, "run.name": "pre", "train.pretrain_steps": 2}),
                        "pretrain", local=True)
    pretrained = f"{storage}/pre/checkpoint.pt"
    assert load_checkpoint(pretrained)["step"] == 2
    cfg = load_config(overrides={**common, "run.name": "ref", "train.pretrained": pretrained,
                                 "train.refine_steps": 5, "train.checkpoint_every": 2, "train.eval_every": 3,
                                 "scaling.fail_at_step": 3, "scaling.max_failures": 1})
    metrics = launch.run_training(cfg, "refine")  # reads metrics.json back from the bucket
    assert metrics["kind"] == "refine" and "before/test/pa_mpjpe_mm" in metrics

    run = StoragePath(storage) / "ref"
    for name in ("config.yaml", "log.jsonl", "checkpoint.pt", "metrics.json", "report.md", "curves.png",
                 FAULT_MARKER):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert len(worker_starts(run)) == 2  # the killed worker and its replacement, one file each
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5]  # step 3 ran before the kill and again after it, logged once
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 5
    # A second launch refuses to overwrite the finished run: the guard looks in the bucket too.
    with pytest.raises(FileExistsError, match="--resume"):
        launch.run_training(cfg, "refine")

"""Pretrain -> refine -> evaluate on the tiny benchmark through the one training loop in Ray Train's local mode
(what `raymotion pretrain`/`refine` run); checkpoints, resume, non-finite steps, the flow gate."""

import json

import pytest
import torch
from conftest import CodePayload

from raymotion.config import LossConfig, load_config
from raymotion.data.video_pairs import VideoPairs
from raymotion.body.body_model import load_body_model
from raymotion.eval.flow_gate import gate_table
from raymotion.train import components, update
from raymotion.train.checkpoint import load_checkpoint
from raymotion.train.launch import run_training

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def tiny_root(tiny_benchmark):
    return tiny_benchmark


def train_config(root, runs, name, **overrides):
    return load_config(overrides={
        "body.model": "anny_lowres", "data.root": str(root), "data.crop_size": 64, "run.output_dir": str(runs),
        "run.name": name, "train.fraction": 1.0, "train.batch_size": 4, "train.pair_batch_size": 2,
        "train.log_every": 1, "train.checkpoint_every": 2, "data.video_source": "local",
        "train.video_gap": 1, **overrides})  # the tiny benchmark's 6-frame clips hold 3-frame windows at gap 1 or 2


def pretrain(cfg, **kwargs):
    return run_training(cfg, "pretrain", local=True, **kwargs)


def refine(cfg, **kwargs):
    return run_training(cfg, "refine", local=True, **kwargs)


def read_log(directory):
    return [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]


def test_pretrain_refine_evaluate_write_runs(tiny_root, tmp_path):
    metrics = pretrain(train_config(tiny_root, tmp_path, "pre", **{"train.pretrain_steps": 3}))
    for key in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "accel_error_mm"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    state = load_checkpoint(tmp_path / "pre" / "checkpoint.pt")  # weights_only=True inside
    assert state["step"] == 3 and state["kind"] == "pretrain"
    refined = refine(train_config(tiny_root, tmp_path, "ref", **{
        "train.refine_steps": 2, "train.pretrained": str(tmp_path / "pre" / "checkpoint.pt"),
        "loss.texture_weight": 0.1, "loss.video_kp2d_weight": 0.1}))
    assert json.loads((tmp_path / "ref" / "metrics.json").read_text())["pa_mpjpe_mm"] == refined["pa_mpjpe_mm"]
    logs = [row for row in read_log(tmp_path / "ref") if "loss" in row]
    assert logs[-1]["step"] == 2 and "flow" in logs[-1] and "texture" in logs[-1] and "video_kp2d" in logs[-1]
    assert (tmp_path / "ref" / "config.yaml").is_file()


def test_resumed_run_reproduces_the_uninterrupted_run(tiny_root, tmp_path):
    pretrain(train_config(tiny_root, tmp_path, "whole", **{"train.pretrain_steps": 4}))
    pretrain(train_config(tiny_root, tmp_path, "split", **{"train.pretrain_steps": 2}))
    with pytest.raises(FileExistsError, match="--resume"):  # nothing is overwritten by accident
        pretrain(train_config(tiny_root, tmp_path, "split", **{"train.pretrain_steps": 4}))
    pretrain(train_config(tiny_root, tmp_path, "split", **{"train.pretrain_steps": 4}), resume=True)  # at 2
    whole, split = read_log(tmp_path / "whole"), read_log(tmp_path / "split")
    assert [r["loss"] for r in whole if "loss" in r] == [r["loss"] for r in split if "loss" in r]
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_pretraining_and_refinement_each_use_their_learning_rate():
    cfg = load_config(overrides={"train.lr": 1e-5, "train.pretrain_lr": 2e-3, "train.weight_decay": 0.01})
    model = torch.nn.Linear(2, 1)
    groups = {stage: components.make_optimiser(cfg, model, stage).param_groups[0] for stage in ("pretrain", "refine")}
    assert (groups["pretrain"]["lr"], groups["refine"]["lr"]) == (2e-3, 1e-5)
    assert groups["pretrain"]["weight_decay"] == groups["refine"]["weight_decay"] == 0.01


def test_non_finite_loss_is_not_trained_on():
    model = torch.nn.Linear(2, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.clone() for p in model.parameters()]
    assert not update.finite_step(model(torch.ones(1, 2)).sum() * float("nan"), model, optimiser)
    for old, new in zip(before, model.parameters()):
        torch.testing.assert_close(old, new)
    assert update.finite_step(model(torch.ones(1, 2)).sum(), model, optimiser)


def test_refine_without_a_checkpoint_names_the_key(tiny_root, tmp_path):
    with pytest.raises(ValueError, match="train.pretrained"):
        refine(train_config(tiny_root, tmp_path, "ref"))
    with pytest.raises(ValueError, match="train.pretrained.*missing.pt"):
        refine(train_config(tiny_root, tmp_path, "ref", **{"train.pretrained": str(tmp_path / "missing.pt")}))


def test_flow_loss_at_the_true_meshes_beats_the_static_prediction(tiny_root):
    """The gate (FACTS.md) on the tiny benchmark with the renderer's exact flow and the improved loss."""
    body = load_body_model(load_config(overrides={"body.model": "anny_lowres"}).body)
    pairs = VideoPairs(tiny_root, split="video", crop_size=96, bbox_scale=1.3, flow="ground_truth", with_labels=True)
    rows = {r.variant: r for r in gate_table(body, {"ground_truth": pairs}, loss=LossConfig())}
    improved = rows["config"]  # the default loss: eroded visibility, normaliser floor 0.25 px
    assert improved.pairs >= 10
    assert improved.truth_over_static_mean < 0.3 and improved.truth_over_static_median < 0.1
    assert improved.truth_beats_static >= 0.9
    assert improved.jitter_over_truth_mean > 10  # jitter is punished


def test_the_cli_runs_the_same_training_function_and_resumes_only_when_asked(tiny_root, tmp_path, capsys):
    from raymotion.cli import main

    sets = ["--set", "body.model=anny_lowres", "--set", f"data.root={tiny_root}", "--set", "data.crop_size=64",
            "--set", f"run.output_dir={tmp_path}", "--set", "run.name=cli", "--set", "train.batch_size=4",
            "--set", "train.pretrain_steps=2", "--set", "train.max_eval_clips=1"]
    assert main(["pretrain", *sets]) == 0
    assert load_checkpoint(tmp_path / "cli" / "checkpoint.pt")["kind"] == "pretrain"  # the worker's format
    assert main(["pretrain", *sets]) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["pretrain", "--resume", *sets, "--set", "train.pretrain_steps=3"]) == 0
    assert load_checkpoint(tmp_path / "cli" / "checkpoint.pt")["step"] == 3


def test_a_checkpoint_that_would_run_code_is_refused_without_advice_to_run_it(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"model": {}, "step": 1, "config": {}, "extra": CodePayload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt is not a readable raymotion checkpoint") as info:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(info.value) and "exec" in str(info.value)
    assert not marker.exists()


def test_a_rerun_with_another_model_is_refused_by_name_and_the_run_keeps_its_record(tiny_root, tmp_path):
    """Before: a resume with another model.backbone wrote config.yaml, then failed to load the checkpoint,
    leaving a folder that described a model it did not hold (issue 18, item 3)."""
    from raymotion.config import ConfigError

    pretrain(train_config(tiny_root, tmp_path, "run", **{"train.pretrain_steps": 2}))
    folder = tmp_path / "run"
    before = {name: (folder / name).read_bytes() for name in ("config.yaml", "checkpoint.pt", "log.jsonl")}
    with pytest.raises(ConfigError, match=r"model.backbone='resnet18'.*has model.backbone='small_cnn'"):
        pretrain(train_config(tiny_root, tmp_path, "run", **{"train.pretrain_steps": 4,
                                                             "model.backbone": "resnet18"}), resume=True)
    assert {name: (folder / name).read_bytes() for name in before} == before
    # The same check at evaluation: an anny_lowres checkpoint scored with another body model.
    with pytest.raises(ConfigError, match=r"body.model='anny'.*has body.model='anny_lowres'"):
        components.evaluate_checkpoint(train_config(tiny_root, tmp_path, "run", **{"body.model": "anny"}),
                                       str(folder / "checkpoint.pt"), split="test")


def test_a_resumed_log_drops_the_steps_after_its_checkpoint_and_continues_the_wall_clock(tmp_path):
    """Before: the steps between the checkpoint and a failure were logged twice and wall_s restarted at 0."""
    from raymotion.storage import StoragePath

    rows = [{"step": s, "loss": float(s), "wall_s": 10.0 * s} for s in (1, 2, 3, 4)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = components.RunLog(StoragePath(tmp_path), total_steps=6, label="t", start_step=2)  # checkpoint at 2
    log.write(3, {"loss": 3.5})
    written = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in written] == [(1, 1.0), (2, 2.0), (3, 3.5)]
    assert 20.0 <= written[-1]["wall_s"] < 30.0


def test_a_film_refinement_of_a_shipped_base_trains_its_film_module_and_starts_as_the_base(tiny_root, tmp_path):
    """model.film=true (METHOD.md 5) from a base without FiLM weights: 3-frame windows, sequential evaluation."""
    from raymotion.train.launch import BASE_MODELS_DIR

    base = str(BASE_MODELS_DIR / "small_cnn64_f10.pt")  # no FiLM weights: the case a FiLM refinement starts from
    overrides = {"train.pretrained": base, "train.max_eval_clips": 1}
    metrics = refine(train_config(tiny_root, tmp_path, "film", **{**overrides, "model.film": True,
                                                                 "train.refine_steps": 2}))
    logs = [row for row in read_log(tmp_path / "film") if "loss" in row]
    assert [row["step"] for row in logs] == [1, 2] and all(0 < row["flow"] < float("inf") for row in logs)
    model = load_checkpoint(tmp_path / "film" / "checkpoint.pt")["model"]
    assert model["film.mlp.2.weight"].abs().sum() > 0  # zero at the start, trained since
    # Before refinement the FiLM model (its FiLM the identity) scores as the base scores single-frame.
    plain = components.evaluate_checkpoint(train_config(tiny_root, tmp_path, "plain", **overrides), base, split="test")
    for key in ("mpjpe_mm", "pa_mpjpe_mm", "accel_error_mm"):
        assert metrics[f"before/test/{key}"] == pytest.approx(plain[key], rel=1e-5)


def test_a_truncated_checkpoint_on_resume_fails_once_on_the_driver_naming_the_file(tiny_root, tmp_path):
    """Before: the workers each failed to load it, scaling.max_failures times (issue 18)."""
    from raymotion.train.checkpoint import save_checkpoint

    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(1000)}, "step": 2, "config": {}})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"cannot resume: {path} is not a readable raymotion checkpoint .*"
                                         rf"Delete {path} to start the run over"):
        pretrain(train_config(tiny_root, tmp_path, "run"), resume=True)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]


def test_a_gap_longer_than_the_video_clips_is_refused_before_anything_is_written(tiny_root, tmp_path):
    from raymotion.config import ConfigError, to_dict
    from raymotion.train.checkpoint import save_checkpoint

    pretrained = tmp_path / "base.pt"
    cfg = train_config(tiny_root, tmp_path / "runs", "gap", **{"train.video_gap": 6,
                                                                "train.pretrained": str(pretrained)})
    save_checkpoint(pretrained, {"model": {}, "step": 0, "config": to_dict(cfg)})  # a base model of this config
    with pytest.raises(ConfigError, match=r"train.video_gap=6 .*video_00000 \(6 frames\)"):
        refine(cfg)
    assert not (tmp_path / "runs").exists()


def test_frames_with_nan_labels_are_left_out_and_counted_in_the_run_record_under_skip(tiny_root, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymotion.data.manifest import read_manifest

    root = shutil.copytree(tiny_root, tmp_path / "data")
    for split in ("labelled", "test"):  # frame 1 of the first clip of each: a NaN joint
        row = next(r for r in read_manifest(root).to_pylist() if r["split"] == split)
        path = root / row["labels_path"]
        table = pq.read_table(path)
        values = table.column("joints3d_cam").to_pylist()
        values[1] = [float("nan")] * 72
        column = pa.array(values, type=table.schema.field("joints3d_cam").type)
        pq.write_table(table.set_column(table.schema.get_field_index("joints3d_cam"), "joints3d_cam", column), path)
    with pytest.raises(ValueError, match=r"labels.parquet frame 1: joints3d_cam is not finite"):
        pretrain(train_config(root, tmp_path / "runs", "fail", **{"train.pretrain_steps": 1}))
    metrics = pretrain(train_config(root, tmp_path / "runs", "skip", **{"train.pretrain_steps": 1,
                                                                         "data.bad_input": "skip"}))
    assert metrics["bad_input_skipped"] == 2 and metrics["mpjpe_mm"] == metrics["mpjpe_mm"]

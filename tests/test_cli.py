import pytest

from raymotion.cli import main
from raymotion.config import BodyConfig
from raymotion.doctor import check_body_models


def test_unknown_key_fails_with_the_valid_keys(capsys):
    assert main(["config", "--set", "body.gendr=male"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'body.gendr'" in err and "gender, h36m_regressor, model, num_betas, smpl_dir" in err


def test_config_prints_the_resolved_value(capsys):
    assert main(["config", "--set", "run.seed=7"]) == 0
    assert "seed: 7" in capsys.readouterr().out


def test_doctor_reports_the_missing_smpl_file_when_smpl_is_configured(tmp_path):
    checks, configured_ok = check_body_models(BodyConfig(model="smpl", smpl_dir=str(tmp_path)))
    assert not configured_ok
    failed = [c for c in checks if not c.ok]
    assert [c.name for c in failed] == ["body 'smpl' neutral"]
    assert str(tmp_path / "SMPL_NEUTRAL.pkl") in failed[0].detail


def test_doctor_exits_nonzero_when_the_configured_body_is_unusable(tmp_path, capsys):
    assert main(["doctor", "--set", "body.model=smpl", "--set", f"body.smpl_dir={tmp_path}"]) == 1
    assert "body.model=smpl) is unusable" in capsys.readouterr().err


@pytest.mark.render
def test_doctor_renders_the_default_body(tmp_path):
    out = tmp_path / "body.png"
    code = main(["doctor", "--render", "--set", "body.model=anny_lowres", "--set", "render.image_size=96",
                 "--set", f"render.output={out}"])
    assert code == 0
    import cv2

    image = cv2.imread(str(out))
    assert image.shape == (96, 3 * 96, 3)
    # The body covers part of each panel: neither all background (white) nor all body.
    body_fraction = (image.min(axis=2) < 250).mean()
    assert 0.05 < body_fraction < 0.6


def test_an_error_after_parsing_is_one_message_and_exit_2_with_the_traceback_only_with_verbose(tmp_path, capsys):
    absent = tmp_path / "absent.pt"
    assert main(["evaluate", "--checkpoint", str(absent)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"raymotion evaluate: checkpoint not found: {absent}")
    assert "Traceback" not in err
    assert main(["evaluate", "--checkpoint", str(absent), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("raymotion evaluate: checkpoint not found")


def test_a_missing_data_root_is_refused_before_anything_is_written(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["pretrain", "--set", f"data.root={tmp_path / 'nowhere'}", "--set", f"run.output_dir={runs}"]) == 2
    assert "data.root=" in capsys.readouterr().err
    assert not runs.exists()


def test_a_cause_inside_rays_wrappers_is_what_is_shown():
    from ray.exceptions import RayTaskError, UserCodeException

    from raymotion.errors import user_error

    cause = ValueError("video /data/video_00001/video.webm ends before frame 3")
    wrapped = RayTaskError("DecodeCropStage.__call__", "Traceback (most recent call last): ...", cause)
    wrapped = wrapped.as_instanceof_cause()
    try:
        raise UserCodeException("UDF failed to process a data block.") from wrapped
    except UserCodeException as err:
        assert user_error(err) is cause
    assert user_error(RuntimeError("a bug")) is None
    assert user_error(RayTaskError("f", "tb", KeyError("a bug")).as_instanceof_cause()) is None
    # As it arrives from a Ray Data actor: the chain only as text, the cause object left behind.
    remote = ("Traceback (most recent call last):\n  File \"decode.py\", line 221, in _run_dali_decoder\n"
              "ValueError: DALI cannot decode frames 0..6 of video /d/video_00001/video.webm\n\n"
              "The above exception was the direct cause of the following exception:\n\n"
              "ray.exceptions.UserCodeException: UDF failed to process a data block.")
    wrapped = RayTaskError("MapWorker.submit", remote, UserCodeException("UDF failed")).as_instanceof_cause()
    assert str(user_error(wrapped)) == "DALI cannot decode frames 0..6 of video /d/video_00001/video.webm"


def test_job_scripts_report_bad_input_as_one_message_and_exit_2(capsys, monkeypatch):
    import argparse
    import sys
    from pathlib import Path

    from raymotion.config import ConfigError

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "jobs"))
    import _args

    monkeypatch.setattr(sys, "argv", ["pretrain.py"])
    args = argparse.Namespace(verbose=False)

    def bad():
        raise ConfigError("train.video_gap", 9, "too long")

    with pytest.raises(SystemExit) as info:
        _args.run(args, bad)
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("pretrain.py: train.video_gap=9 is invalid")
    with pytest.raises(KeyError):  # a bug keeps its traceback
        _args.run(args, lambda: {}["x"])


@pytest.mark.render
def test_evaluate_builds_the_model_from_the_checkpoints_own_config(tiny_benchmark, tmp_path, capsys):
    import json

    from raymotion.train.checkpoint import load_checkpoint, save_checkpoint
    from raymotion.train.launch import BASE_MODELS_DIR

    # A checkpoint whose model keys are not the defaults (the small CNN pools globally: any crop size runs).
    state = load_checkpoint(BASE_MODELS_DIR / "small_cnn64_f05.pt")
    state["config"]["data"]["crop_size"] = 96
    save_checkpoint(tmp_path / "c96.pt", state)
    data = ["--set", f"data.root={tiny_benchmark}", "--set", "train.max_eval_clips=1"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "c96.pt"), *data]) == 0
    assert json.loads(capsys.readouterr().out)["num_frames"] > 0
    # An override of what defines the model is refused by name, not scored or left to fail at load time.
    assert main(["evaluate", "--checkpoint", str(tmp_path / "c96.pt"), *data, "--set", "data.crop_size=64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "data.crop_size=64 is invalid" in err and "was trained with data.crop_size=96" in err

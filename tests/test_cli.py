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

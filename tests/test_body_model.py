import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS
from torch.testing import assert_close

from conftest import CodePayload, random_smpl_arrays
from raymotion.body.body_model import BodyModel, load_body_model
from raymotion.body.joints import EXTRA_JOINT_NAMES, H36M_TO_EVAL14, SMPL_JOINT
from raymotion.config import BodyConfig
from raymotion.geometry import axis_angle_to_rotmat


def identity_rotmats(batch: int) -> torch.Tensor:
    return torch.eye(3).repeat(batch, 24, 1, 1)


def test_two_bone_lbs_matches_hand_computed_vertices(two_bone_arrays):
    body = BodyModel.from_arrays(two_bone_arrays)
    rotmats = identity_rotmats(1)
    rotmats[0, 0] = axis_angle_to_rotmat(torch.tensor([0.0, math.pi / 2, 0.0]))  # root: +90 deg about y
    rotmats[0, SMPL_JOINT["left_hip"]] = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, math.pi / 2]))
    out = body(rotmats_BJ33=rotmats, betas_BK=torch.zeros(1, 10))
    # Left hip turns v2 about (1,0,0) by 90 deg about z: (2,0,0) -> (1,1,0). The root then turns
    # everything about y by 90 deg: (x, y, z) -> (z, y, -x).
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # v0: the root joint
            [0.0, 0.0, -1.0],  # v1: (1,0,0) -> root only
            [0.0, 1.0, -1.0],  # v2: (1,1,0) -> (0,1,-1)
            [0.0, 1.0, 0.0],  # v3: on the rotation axis
            [0.0, 0.5, -1.5],  # v4: 0.5 * (0,0,-2) + 0.5 * (0,1,-1)
        ]
    )
    assert_close(out.verts_BV3[0], expected, atol=1e-6, rtol=0)
    assert_close(out.joints_BJ3[0, SMPL_JOINT["left_hip"]], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6, rtol=0)


def test_beta_moves_only_its_shape_direction(two_bone_arrays):
    body = BodyModel.from_arrays(two_bone_arrays)
    betas = torch.zeros(1, 10)
    betas[0, 0] = 0.5
    out = body(rotmats_BJ33=identity_rotmats(1), betas_BK=betas)
    expected = torch.as_tensor(two_bone_arrays["v_template"]).clone()
    expected[2, 2] += 0.5
    assert_close(out.verts_BV3[0], expected)


def test_translation_moves_vertices_and_joints(two_bone_arrays):
    body = BodyModel.from_arrays(two_bone_arrays)
    transl = torch.tensor([[1.0, 2.0, 3.0]])
    out = body(rotmats_BJ33=identity_rotmats(1), betas_BK=torch.zeros(1, 10), transl_B3=transl)
    assert_close(out.verts_BV3[0], torch.as_tensor(two_bone_arrays["v_template"]) + transl)
    assert_close(out.eval_joints_B143[0, 0], out.verts_BV3[0, H36M_TO_EVAL14[0] % 5])


def test_mesh_without_extra_joint_ids_is_refused(two_bone_arrays):
    arrays = {k: v for k, v in two_bone_arrays.items() if not k.startswith("vertex_ids_")}
    with pytest.raises(ValueError, match=r"has 5 vertices and no 'vertex_ids_<name>' arrays"):
        BodyModel.from_arrays(arrays)


def test_missing_smpl_key_is_named(two_bone_arrays):
    arrays = dict(two_bone_arrays)
    del arrays["weights"]
    with pytest.raises(ValueError, match="missing weights"):
        BodyModel.from_arrays(arrays)


def test_wrong_pose_shape_is_refused(two_bone_arrays):
    body = BodyModel.from_arrays(two_bone_arrays)
    with pytest.raises(ValueError, match=r"rotmats_BJ33 must have shape \(B, 24, 3, 3\)"):
        body(rotmats_BJ33=torch.eye(3).repeat(1, 23, 1, 1), betas_BK=torch.zeros(1, 10))


def write_user_smpl(tmp_path, arrays):
    """Write arrays the way an official SMPL .pkl arrives: latin1-readable pickle, sparse J_regressor."""
    smpl_dir = tmp_path / "body_models" / "smpl"
    smpl_dir.mkdir(parents=True)
    payload = dict(arrays)
    payload["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    payload["bs_type"] = "lrotmin"
    with (smpl_dir / "SMPL_NEUTRAL.pkl").open("wb") as handle:
        pickle.dump(payload, handle, protocol=2)
    return smpl_dir


def test_user_smpl_pkl_with_6890_vertices_loads_and_uses_smplh_extra_ids(tmp_path):
    arrays = random_smpl_arrays(6890, num_betas=300)
    smpl_dir = write_user_smpl(tmp_path, arrays)
    regressor = np.random.default_rng(1).random((17, 6890)).astype(np.float32)
    np.save(tmp_path / "J_regressor_h36m.npy", regressor)
    cfg = BodyConfig(model="smpl", smpl_dir=str(smpl_dir), h36m_regressor=str(tmp_path / "J_regressor_h36m.npy"))
    body = load_body_model(cfg)
    assert body.num_verts == 6890 and body.num_betas == 10
    out = body(rotmats_BJ33=identity_rotmats(2), betas_BK=torch.zeros(2, 10))
    assert out.verts_BV3.shape == (2, 6890, 3)
    assert out.joints_BJ3.shape == (2, 24, 3) and out.extra_joints_BE3.shape == (2, 21, 3)
    v_template = torch.as_tensor(arrays["v_template"], dtype=torch.float32)
    # Zero pose and zero betas give the template (posedirs vanish at the identity pose).
    assert_close(out.verts_BV3[0], v_template)
    ids = [SMPLX_VERTEX_IDS["smplh"][name] for name in EXTRA_JOINT_NAMES]
    assert_close(out.extra_joints_BE3[0], v_template[ids])
    expected_eval = torch.as_tensor(regressor) @ v_template
    assert_close(out.eval_joints_B143[0], expected_eval[list(H36M_TO_EVAL14)], rtol=1e-5, atol=1e-5)


def test_missing_smpl_file_says_where_to_get_it(tmp_path):
    cfg = BodyConfig(model="smpl", smpl_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as info:
        load_body_model(cfg)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "SMPL_NEUTRAL.pkl") in message
    assert "https://smplify.is.tue.mpg.de" in message and "chumpy-fixed" in message and "body.model=anny" in message


def test_missing_h36m_regressor_is_named(tmp_path):
    smpl_dir = write_user_smpl(tmp_path, random_smpl_arrays(6890))
    cfg = BodyConfig(model="smpl", smpl_dir=str(smpl_dir), h36m_regressor=str(tmp_path / "absent.npy"))
    with pytest.raises(FileNotFoundError, match=r"absent\.npy.*J_regressor_h36m\.npy"):
        load_body_model(cfg)


def test_corrupt_smpl_pkl_is_named(tmp_path):
    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    (smpl_dir / "SMPL_MALE.pkl").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(ValueError, match="SMPL_MALE.pkl is not a readable SMPL pickle"):
        load_body_model(BodyConfig(model="smpl", smpl_dir=str(smpl_dir), gender="male"))


def test_npz_smpl_file_loads(tmp_path, two_bone_arrays):
    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    np.savez(smpl_dir / "SMPL_FEMALE.npz", **two_bone_arrays)
    body = load_body_model(BodyConfig(model="smpl", smpl_dir=str(smpl_dir), gender="female"))
    assert body.num_verts == 5


def test_a_pickle_that_would_run_code_is_refused_by_name_and_nothing_runs(tmp_path):
    """Before: read_smpl_file used pickle.load, so the payload ran (issue 18, item 1)."""
    smpl_dir = write_user_smpl(tmp_path, random_smpl_arrays(6890))
    marker = tmp_path / "payload_ran"
    payload = pickle.loads(pickle.dumps(dict(random_smpl_arrays(6890)), protocol=2))
    payload["bs_style"] = CodePayload(marker)
    with (smpl_dir / "SMPL_NEUTRAL.pkl").open("wb") as handle:
        pickle.dump(payload, handle, protocol=2)
    with pytest.raises(ValueError, match=r"SMPL_NEUTRAL.pkl asks to load builtins.exec.*refused"):
        load_body_model(BodyConfig(model="smpl", smpl_dir=str(smpl_dir), h36m_regressor=str(tmp_path / "r.npy")))
    assert not marker.exists()


def test_official_style_pickles_with_chumpy_load_and_convert_once_to_npz(tmp_path):
    chumpy = pytest.importorskip("chumpy")
    from raymotion.body.body_model import read_smpl_file
    from raymotion.cli import main

    arrays = random_smpl_arrays(6890)
    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    payload = {**arrays, "J_regressor": scipy.sparse.csc_matrix(arrays["J_regressor"]),
               "v_template": chumpy.array(arrays["v_template"]), "bs_type": "lrotmin"}
    with (smpl_dir / "SMPL_NEUTRAL.pkl").open("wb") as handle:
        pickle.dump(payload, handle, protocol=2)
    read = read_smpl_file(smpl_dir / "SMPL_NEUTRAL.pkl")
    np.testing.assert_allclose(read["v_template"], arrays["v_template"].astype(np.float32))
    assert main(["smpl-to-npz", str(smpl_dir / "SMPL_NEUTRAL.pkl"), "--out", str(smpl_dir / "SMPL_NEUTRAL.npz")]) == 0
    (smpl_dir / "SMPL_NEUTRAL.pkl").write_bytes(b"\x80\x02broken")  # the .npz is used from now on
    np.save(tmp_path / "r.npy", np.random.default_rng(1).random((17, 6890)).astype(np.float32))
    body = load_body_model(BodyConfig(model="smpl", smpl_dir=str(smpl_dir), h36m_regressor=str(tmp_path / "r.npy")))
    assert body.num_verts == 6890


def test_a_nan_in_the_h36m_regressor_is_refused_by_name_and_the_doctor_calls_the_body_unusable(tmp_path):
    from raymotion.doctor import check_body_models

    smpl_dir = write_user_smpl(tmp_path, random_smpl_arrays(6890))
    regressor = np.random.default_rng(1).random((17, 6890)).astype(np.float32)
    regressor[3, 100] = np.nan
    np.save(tmp_path / "body_models" / "J_regressor_h36m.npy", regressor)
    cfg = BodyConfig(model="smpl", smpl_dir=str(smpl_dir))  # the default regressor path: beside smpl_dir
    with pytest.raises(ValueError, match=r"J_regressor_h36m.npy holds 1 non-finite value\(s\) \(first: nan at "
                                         r"index \[3, 100\]\)"):
        load_body_model(cfg)
    checks, configured_ok = check_body_models(cfg)
    assert not configured_ok
    assert any(not c.ok and "non-finite" in c.detail for c in checks)


def test_a_nan_in_a_body_model_array_is_refused_by_name(two_bone_arrays):
    two_bone_arrays["shapedirs"][2, 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"toy: 'shapedirs' holds 1 non-finite value\(s\) \(first: inf at index "
                                         r"\[2, 1, 0\]\)"):
        BodyModel.from_arrays(two_bone_arrays, source="toy")


def test_a_relative_h36m_regressor_path_is_relative_to_smpl_dir(tmp_path):
    from raymotion.body.body_model import h36m_regressor_path

    assert h36m_regressor_path(BodyConfig(smpl_dir="/data/body_models/smpl")) == \
        Path("/data/body_models/J_regressor_h36m.npy")
    assert h36m_regressor_path(BodyConfig(smpl_dir="/data/smpl", h36m_regressor="h36m.npy")) == Path("/data/smpl/h36m.npy")
    assert h36m_regressor_path(BodyConfig(smpl_dir="/data/smpl", h36m_regressor="/x/r.npy")) == Path("/x/r.npy")

"""raymotion import: synth -> the field's format -> import -> the original labels (tests/import_fixtures.py), and
bad files named or counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch

from import_fixtures import (clip_labels, clips, write_3dpw, write_boxes_csv, write_frames, write_human_data,
                             write_spin_npz)
from raymotion.body.joints import NUM_SMPL_JOINTS, SMPL_FROM_COCO18, SMPL_FROM_SPIN_GT
from raymotion.cli import main
from raymotion.config import BodyConfig, ImportConfig
from raymotion.data.crops import crop_box
from raymotion.data.labels import LABEL_SHAPES, mean_param_targets, read_labels
from raymotion.data.manifest import read_manifest
from raymotion.importers import run_import
from raymotion.importers.boxes import track_runs
from raymotion.importers.common import spin_box_to_xyxy, xyxy_to_spin_box
from raymotion.geometry import axis_angle_to_rotmat

pytestmark = pytest.mark.render  # the fixtures are made from the rendered tiny benchmark

ATOL = 1e-5


def imported(out_dir: Path, split: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The manifest rows of a split and their labels, concatenated (the boxes only for the video split)."""
    rows = [r for r in read_manifest(out_dir).to_pylist() if r["split"] == split]
    columns = ["box_xyxy"] if split == "video" else list(LABEL_SHAPES)
    tables = [read_labels(out_dir, r, columns, bad_input="fail")[0] for r in rows]
    return rows, {name: np.concatenate([t[name] for t in tables]) for name in columns}


def listed_images(out_dir: Path, row: dict) -> list[Path]:
    lines = (out_dir / row["path"]).read_text().splitlines()
    return [Path(line) if Path(line).is_absolute() else out_dir / line for line in lines]


def test_spin_boxes_go_through_center_and_scale_and_back():
    box_N4 = np.array([[10.0, 20.0, 50.0, 100.0], [0.5, 0.5, 1.5, 3.5]])
    center_N2, scale_N = xyxy_to_spin_box(box_N4, scale_factor=1.2)
    # By hand: centre (30, 60) - 0.5 (SPIN's pixel centres at integers); scale 1.2 * 80 / 200.
    np.testing.assert_allclose(center_N2[0], [29.5, 59.5])
    np.testing.assert_allclose(scale_N[0], 0.48)
    square_N4 = spin_box_to_xyxy(center_N2, scale_N, scale_factor=1.2)
    # The square box of the longer side around the same centre: the same crop for any data.bbox_scale.
    np.testing.assert_allclose(square_N4[0], [-10.0, 20.0, 70.0, 100.0])
    for box, square in zip(box_N4, square_N4):
        for a, b in zip(crop_box(box, scale=1.3), crop_box(square, scale=1.3)):
            np.testing.assert_allclose(a, b)


def test_track_runs_split_at_gaps_and_bad_boxes():
    frames = np.array([0, 1, 2, 5, 6, 7, 8])
    good = np.array([True, True, True, True, False, True, True])
    assert [r.tolist() for r in track_runs(frames, good)] == [[0, 1, 2], [3], [5, 6]]


def test_spin_npz_round_trip(tiny_benchmark, tmp_path):
    rows = clips(tiny_benchmark, "labelled")[:3]
    npz, orig = write_spin_npz(tiny_benchmark, rows, tmp_path / "spin")
    out = tmp_path / "data"
    summary = run_import("spin-npz", npz, out_dir=out, cfg=ImportConfig(clip_frames=4), images=tmp_path / "spin",
                         progress=False)
    num = len(orig["box_xyxy"])
    assert (summary.clips, summary.frames, dict(summary.dropped)) == (-(-num // 4), num, {})
    manifest_rows, got = imported(out, "labelled")
    # Images listed in file order, where they are.
    images = [p for row in manifest_rows for p in listed_images(out, row)]
    assert [p.name for p in images] == [f"image_{t:05d}.png" for row in rows for t in range(row["frames"])]
    assert all(p.is_file() for p in images) and manifest_rows[0]["width"] == rows[0]["width"]
    # Boxes: the same crop (centre and longer side).
    for a, b in zip(crop_box(got["box_xyxy"], scale=1.3), crop_box(orig["box_xyxy"], scale=1.3)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    mapped = np.asarray(SMPL_FROM_SPIN_GT) >= 0
    np.testing.assert_allclose(got["joints2d"][:, mapped], orig["joints2d"][:, mapped], atol=1e-4)
    np.testing.assert_array_equal(got["joints2d_visible"][:, mapped], orig["joints2d_visible"][:, mapped])
    assert not got["joints2d_visible"][:, ~mapped].any() and (got["joints2d_conf"][:, ~mapped] == 0).all()
    np.testing.assert_array_equal(got["joints3d_conf"], np.broadcast_to(mapped, (num, NUM_SMPL_JOINTS)))
    np.testing.assert_allclose(got["eval_joints3d_cam"], orig["eval_joints3d_cam"], atol=ATOL)
    np.testing.assert_allclose(got["pose_cam"], orig["pose_cam"], atol=ATOL)
    np.testing.assert_allclose(got["betas"], orig["betas"], atol=ATOL)
    assert got["has_smpl"].all() and got["has_joints3d"].all()
    assert list(got["gender"][:2]) == ["female", "male"]
    # The mean parameters' camera fit weighs only the 2D joints the file has.
    targets = mean_param_targets(out, bbox_scale=1.3)
    assert targets["pose_N243"].shape == (num, 24, 3)
    np.testing.assert_array_equal(targets["joints2d_weight_NJ"].numpy(), got["joints2d_conf"])


def test_spin_npz_bad_files_are_named_or_counted(tiny_benchmark, tmp_path):
    rows = clips(tiny_benchmark, "labelled")[:1]
    root = tmp_path / "spin"
    npz, _ = write_spin_npz(tiny_benchmark, rows, root)
    data = dict(np.load(npz))
    cfg = ImportConfig()
    # A key absent.
    np.savez(root / "no_center.npz", **{k: v for k, v in data.items() if k != "center"})
    with pytest.raises(ValueError, match=r"no_center.npz: key 'center' is missing .*re-create the file"):
        run_import("spin-npz", root / "no_center.npz", out_dir=tmp_path / "a", cfg=cfg, progress=False)
    # A joint array of the wrong shape.
    np.savez(root / "bad_part.npz", **{**data, "part": data["part"][:, :14]})
    with pytest.raises(ValueError, match=r"bad_part.npz: key 'part' has shape \(\d+, 14, 3\), expected \(N, 24, 3\)"):
        run_import("spin-npz", root / "bad_part.npz", out_dir=tmp_path / "a", cfg=cfg, progress=False)
    # A missing frame and a box outside its image: left out and counted.
    scale = data["scale"].copy()
    center = data["center"].copy()
    center[1] = [-500.0, -500.0]
    np.savez(root / "holes.npz", **{**data, "center": center, "scale": scale})
    (root / data["imgname"][0]).unlink()
    summary = run_import("spin-npz", root / "holes.npz", out_dir=tmp_path / "b", cfg=cfg, progress=False)
    assert dict(summary.dropped) == {"image missing or unreadable": 1, "box empty or outside its image": 1}
    assert summary.frames == len(data["imgname"]) - 2
    assert "image_00000.png" in summary.format()


def test_boxes_from_a_video_give_one_clip_per_track_and_drop_short_ones(tiny_benchmark, tmp_path):
    row = clips(tiny_benchmark, "video")[0]
    boxes_T4 = clip_labels(tiny_benchmark, row)["box_xyxy"]
    frames = list(range(row["frames"]))
    outside = np.tile([[500.0, 500.0, 600.0, 600.0]], (1, 1))
    csv = write_boxes_csv(tmp_path / "tracks.csv", {
        1: (frames, boxes_T4),  # the whole clip
        2: ([0, 1], boxes_T4[:2]),  # too short
        3: ([0], outside)})  # outside the image
    out = tmp_path / "data"
    code = main(["import", "boxes", str(tiny_benchmark / row["path"]), "--boxes", str(csv), "--out", str(out),
                 "--no-progress", "--set", f"importer.min_track_frames={row['frames']}"])
    assert code == 0
    manifest_rows, got = imported(out, "video")
    assert [r["clip_id"] for r in manifest_rows] == ["video_track1_000000"]
    assert manifest_rows[0]["frames"] == row["frames"] and manifest_rows[0]["fps"] == pytest.approx(row["fps"])
    np.testing.assert_allclose(got["box_xyxy"], boxes_T4, atol=1e-4)
    # The frames were decoded once into the data folder and listed relative to it.
    lines = (out / manifest_rows[0]["path"]).read_text().splitlines()
    assert lines[0] == "frames/video/frame_000000.png" and len(lines) == row["frames"]


def test_boxes_from_a_frame_folder_list_the_frames_where_they_are(tiny_benchmark, tmp_path, capsys):
    row = clips(tiny_benchmark, "video")[0]
    paths = write_frames(tiny_benchmark, row, tmp_path / "frames", pattern="img_{}.png")  # natural order: img_2 < img_10
    boxes_T4 = clip_labels(tiny_benchmark, row)["box_xyxy"]
    csv = write_boxes_csv(tmp_path / "tracks.csv", {7: (list(range(row["frames"])), boxes_T4)})
    out = tmp_path / "data"
    assert main(["import", "boxes", str(tmp_path / "frames"), "--boxes", str(csv), "--out", str(out),
                 "--no-progress", "--set", "importer.min_track_frames=2"]) == 0
    assert "kept 1 clip(s)" in capsys.readouterr().out
    manifest_rows, _ = imported(out, "video")
    assert listed_images(out, manifest_rows[0]) == [p.resolve() for p in paths]


def _rotmats(pose_N72: np.ndarray) -> np.ndarray:
    return axis_angle_to_rotmat(torch.tensor(pose_N72, dtype=torch.float64).reshape(-1, 24, 3)).numpy()


def test_3dpw_round_trip_one_clip_per_person_in_the_camera_frame(tiny_benchmark, tmp_path):
    people = clips(tiny_benchmark, "test")[:2]
    pkl, originals = write_3dpw(tiny_benchmark, people, tmp_path / "3dpw")
    out = tmp_path / "data"
    summary = run_import("3dpw", tmp_path / "3dpw", out_dir=out, cfg=ImportConfig(),
                         body_cfg=BodyConfig(model="anny_lowres"), progress=False)
    assert (summary.clips, dict(summary.dropped)) == (2, {}) and "body.model=anny_lowres" in summary.format()
    rows = read_manifest(out).to_pylist()
    assert [(r["clip_id"], r["split"], r["fps"]) for r in rows] == [("seq_a_p0", "test", 30.0), ("seq_a_p1", "test", 30.0)]
    assert [p.name for p in listed_images(out, rows[0])] == [f"image_{t:05d}.png" for t in range(rows[0]["frames"])]
    mapped = np.asarray(SMPL_FROM_COCO18) >= 0
    for row, orig in zip(rows, originals):
        got = read_labels(out, row, list(LABEL_SHAPES), bad_input="fail")[0]
        # The root turned into the camera (compared as rotations: axis-angle is not unique).
        np.testing.assert_allclose(_rotmats(got["pose_cam"]), _rotmats(orig["pose_cam"]), atol=1e-5)
        np.testing.assert_allclose(got["joints3d_cam"], orig["joints3d_cam"], atol=ATOL)
        # The pivot correction: the same body model puts the body where the synthetic benchmark did.
        np.testing.assert_allclose(got["transl_cam"], orig["transl_cam"], atol=1e-5)
        np.testing.assert_allclose(got["eval_joints3d_cam"], orig["eval_joints3d_cam"], atol=1e-5)
        np.testing.assert_allclose(got["box_xyxy"], orig["box_xyxy"], atol=1e-3)
        np.testing.assert_allclose(got["intrinsics"], orig["intrinsics"], atol=ATOL)
        np.testing.assert_allclose(got["joints2d"][:, mapped], orig["joints2d"][:, mapped], atol=1e-4)
        np.testing.assert_allclose(got["joints2d_conf"][:, mapped],
                                   np.where(orig["joints2d_visible"][:, mapped], 0.9, 0.1), atol=1e-6)
        assert (got["joints2d_conf"][:, ~mapped] == 0).all()
        np.testing.assert_array_equal(got["campose_valid"], [t != 1 for t in range(row["frames"])])
    assert [read_labels(out, r, ["gender"], bad_input="fail")[0]["gender"][0] for r in rows] == ["female", "male"]


def test_3dpw_bad_files_name_the_file_the_key_and_the_fix(tiny_benchmark, tmp_path):
    import pickle

    people = clips(tiny_benchmark, "test")[:1]
    root = tmp_path / "3dpw"
    pkl, _ = write_3dpw(tiny_benchmark, people, root)
    body = BodyConfig(model="anny_lowres")

    def attempt(data_or_bytes, match: str, error=ValueError) -> None:
        bad = root / "sequenceFiles" / "test" / "seq_a.pkl"
        bad.write_bytes(data_or_bytes if isinstance(data_or_bytes, bytes) else pickle.dumps(data_or_bytes, protocol=2))
        with pytest.raises(error, match=match):
            run_import("3dpw", bad, out_dir=tmp_path / "out", cfg=ImportConfig(), body_cfg=body, progress=False)

    good = pkl.read_bytes()
    data = pickle.loads(good)
    attempt(good[: len(good) // 2], r"seq_a.pkl is not a readable .*re-download the sequence file")
    attempt({k: v for k, v in data.items() if k != "jointPositions"},
            r"seq_a.pkl: key 'jointPositions' is missing .*re-download")
    attempt({**data, "poses": [data["poses"][0][:, :69]]},
            r"seq_a.pkl: key 'poses' of person 0 has shape \(\d+, 69\), expected \(\d+, 72\)")
    pkl.write_bytes(good)
    (root / "imageFiles" / "seq_a" / "image_00002.png").unlink()
    attempt(good, r"image_00002.jpg is missing: .*\(key cam_poses\).*unpack the 3DPW imageFiles zip", FileNotFoundError)


def test_imported_3dpw_labels_drive_the_spin_protocols_frames(tiny_benchmark, tmp_path):
    """campose_valid from the sequence file decides SPIN's frames (the fixture marks frame 1 of each person)."""
    from raymotion.eval.evaluate import score_protocol
    from raymotion.eval.protocols import PROTOCOL_LABELS

    people = clips(tiny_benchmark, "test")[:2]
    write_3dpw(tiny_benchmark, people, tmp_path / "3dpw")
    out = tmp_path / "data"
    run_import("3dpw", tmp_path / "3dpw", out_dir=out, cfg=ImportConfig(), body_cfg=BodyConfig(model="anny_lowres"),
               progress=False)
    rows, got = imported(out, "test")
    clip_N = np.concatenate([np.full(r["frames"], i) for i, r in enumerate(rows)])
    frame_N = np.concatenate([np.arange(r["frames"]) for r in rows])
    joints = torch.as_tensor(got["eval_joints3d_cam"], dtype=torch.float64).reshape(-1, 14, 3)
    verts = torch.zeros(len(joints), 3, 3, dtype=torch.float64)
    truth = {"eval_joints_NE3": joints, "verts_NV3": verts, "verts_pelvis_N3": torch.zeros(len(joints), 3,
             dtype=torch.float64), "body_eval_joints_NE3": joints}
    metrics = score_protocol({"eval_joints_NE3": joints + 0.01, "verts_NV3": verts}, truth, clip_N, frame_N,
                             {name: got[name] for name in PROTOCOL_LABELS}, protocol="spin")
    assert metrics["num_frames"] == len(joints) - 2 and metrics["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)


def test_humandata_round_trip(tiny_benchmark, tmp_path):
    rows = clips(tiny_benchmark, "labelled")[:2]
    npz, orig = write_human_data(tiny_benchmark, rows, tmp_path / "hd")
    out = tmp_path / "data"
    summary = run_import("humandata", npz, out_dir=out, cfg=ImportConfig(), images=tmp_path / "hd", progress=False)
    num = len(orig["box_xyxy"])
    assert (summary.clips, summary.frames, dict(summary.dropped)) == (1, num, {})
    _, got = imported(out, "labelled")
    np.testing.assert_allclose(got["box_xyxy"], orig["box_xyxy"], atol=1e-4)
    np.testing.assert_allclose(got["joints2d"][:, :22], orig["joints2d"][:, :22], atol=1e-4)
    np.testing.assert_array_equal(got["joints2d_visible"][:, :22], orig["joints2d_visible"][:, :22])
    assert not got["joints2d_visible"][:, 22:].any()  # the hands were masked out
    mapped = np.asarray(SMPL_FROM_SPIN_GT) >= 0
    # SPIN's GT joints 0..13 are the evaluation joints (the fixture wrote those there), 14 the pelvis.
    for smpl, gt in enumerate(SMPL_FROM_SPIN_GT):
        expected = orig["eval_joints3d_cam"][:, gt] if 0 <= gt < 14 else orig["joints3d_cam"][:, smpl] * (gt >= 0)
        np.testing.assert_allclose(got["joints3d_cam"][:, smpl], expected, atol=ATOL)
    np.testing.assert_array_equal(got["joints3d_conf"], np.broadcast_to(mapped, (num, NUM_SMPL_JOINTS)))
    np.testing.assert_allclose(got["eval_joints3d_cam"], orig["eval_joints3d_cam"], atol=ATOL)
    for name in ("pose_cam", "betas", "transl_cam"):
        np.testing.assert_allclose(got[name], orig[name], atol=ATOL)
    assert got["has_smpl"].all() and list(got["gender"][:2]) == ["female", "male"]


def test_humandata_bad_files_are_named_and_pickled_code_never_runs(tiny_benchmark, tmp_path):
    from conftest import CodePayload

    rows = clips(tiny_benchmark, "labelled")[:1]
    root = tmp_path / "hd"
    marker = tmp_path / "ran"
    npz, _ = write_human_data(tiny_benchmark, rows, root, file_name="evil.npz",
                              extra={"meta": np.array(CodePayload(marker), dtype=object)})
    with pytest.raises(ValueError, match=r"evil.npz asks to load builtins.exec.*refused"):
        run_import("humandata", npz, out_dir=tmp_path / "out", cfg=ImportConfig(), images=root, progress=False)
    assert not marker.exists()
    npz, _ = write_human_data(tiny_benchmark, rows, root, file_name="no_box.npz", extra={"bbox_xywh": np.zeros((1, 3))})
    with pytest.raises(ValueError, match=r"no_box.npz: key 'bbox_xywh' has shape \(1, 3\), expected \(N, 4\) or \(N, 5\)"):
        run_import("humandata", npz, out_dir=tmp_path / "out", cfg=ImportConfig(), images=root, progress=False)
    npz, _ = write_human_data(tiny_benchmark, rows, root, file_name="coco.npz",
                              extra={"keypoints2d_convention": np.array("coco")})
    with pytest.raises(ValueError, match=r"coco.npz: keypoints2d_convention is 'coco'.*convert_kps"):
        run_import("humandata", npz, out_dir=tmp_path / "out", cfg=ImportConfig(), images=root, progress=False)
    (root / "truncated.npz").write_bytes((root / "coco.npz").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"truncated.npz is not a readable HumanData npz"):
        run_import("humandata", root / "truncated.npz", out_dir=tmp_path / "out", cfg=ImportConfig(), images=root,
                   progress=False)


def test_3dpw_poses_each_persons_ground_truth_with_their_gendered_smpl(tiny_benchmark, tmp_path):
    """With body.model=smpl the evaluation joints come from SMPL_FEMALE / SMPL_MALE (the SPIN protocol's gendered
    ground truth); a gender whose file is missing falls back to body.gender's model, and the summary says so."""
    from conftest import random_smpl_arrays

    from raymotion.body.body_model import BodyModel
    from raymotion.body.joints import EXTRA_JOINT_NAMES, NUM_H36M_JOINTS

    smpl_dir = tmp_path / "smpl"
    smpl_dir.mkdir()
    verts = 60
    for seed, gender in enumerate(("NEUTRAL", "FEMALE")):
        arrays = random_smpl_arrays(verts, seed=seed)
        regressor = np.random.default_rng(seed).random((NUM_H36M_JOINTS, verts))
        arrays["J_regressor_h36m"] = regressor / regressor.sum(axis=1, keepdims=True)
        arrays.update({f"vertex_ids_{name}": np.array(i % verts) for i, name in enumerate(EXTRA_JOINT_NAMES)})
        np.savez(smpl_dir / f"SMPL_{gender}.npz", **arrays)
    people = clips(tiny_benchmark, "test")[:2]
    write_3dpw(tiny_benchmark, people, tmp_path / "3dpw", genders=("f", "m"))
    summary = run_import("3dpw", tmp_path / "3dpw", out_dir=tmp_path / "data", cfg=ImportConfig(),
                         body_cfg=BodyConfig(model="smpl", smpl_dir=str(smpl_dir)), progress=False)
    assert "gendered SMPL ground truth (no male file" in summary.format()
    rows = read_manifest(tmp_path / "data").to_pylist()
    for row, gender in zip(rows, ("FEMALE", "NEUTRAL")):  # person 1 is male: the neutral model stands in
        got = read_labels(tmp_path / "data", row, list(LABEL_SHAPES), bad_input="fail")[0]
        body = BodyModel.from_file(smpl_dir / f"SMPL_{gender}.npz")
        with torch.no_grad():
            posed = body(rotmats_BJ33=torch.tensor(_rotmats(got["pose_cam"]), dtype=torch.float32),
                         betas_BK=torch.tensor(got["betas"]))
        expected = posed.eval_joints_B143.numpy() + got["transl_cam"][:, None]
        np.testing.assert_allclose(got["eval_joints3d_cam"], expected, atol=1e-4)
        # The pivot correction with this body: its pelvis lands on the dataset's pelvis.
        np.testing.assert_allclose(posed.joints_BJ3[:, 0].numpy() + got["transl_cam"], got["joints3d_cam"][:, 0],
                                   atol=1e-4)


@pytest.mark.parametrize("keys, has_smpl, has_joints3d", [
    (("imgname", "center", "scale", "part"), False, False),  # COCO / MPII: 2D keypoints only
    (("imgname", "center", "scale", "part", "S"), False, True),  # Human3.6M: 3D joints without SMPL
    (("imgname", "center", "scale", "pose", "shape", "gender"), True, False),  # 3DPW test: SMPL, no keypoints
])
def test_spin_npz_sets_with_partial_labels_say_what_they_have(tiny_benchmark, tmp_path, keys, has_smpl, has_joints3d):
    rows = clips(tiny_benchmark, "labelled")[:1]
    root = tmp_path / "spin"
    npz, orig = write_spin_npz(tiny_benchmark, rows, root)
    data = dict(np.load(npz))
    np.savez(root / "partial.npz", **{k: data[k] for k in keys})
    run_import("spin-npz", root / "partial.npz", out_dir=tmp_path / "data", cfg=ImportConfig(), images=root,
               progress=False)
    _, got = imported(tmp_path / "data", "labelled")
    assert (got["has_smpl"] == has_smpl).all() and (got["has_joints3d"] == has_joints3d).all()
    assert (got["joints2d_conf"].any(axis=1) == ("part" in keys)).all()
    if not has_smpl:  # finite placeholders where a label is absent: the losses mask them
        assert (got["pose_cam"] == 0).all() and (got["betas"] == 0).all()
    if not has_joints3d:
        assert (got["joints3d_conf"] == 0).all()
    if "gender" not in keys:
        assert set(got["gender"]) == {"neutral"}


def test_copy_puts_the_frames_in_the_data_folder_and_lists_them_relative_to_it(tiny_benchmark, tmp_path):
    rows = clips(tiny_benchmark, "labelled")[:1]
    npz, _ = write_spin_npz(tiny_benchmark, rows, tmp_path / "spin")
    out = tmp_path / "data"
    run_import("spin-npz", npz, out_dir=out, cfg=ImportConfig(), images=tmp_path / "spin", copy_frames=True,
               progress=False)
    row = read_manifest(out).to_pylist()[0]
    lines = (out / row["path"]).read_text().splitlines()
    assert lines == [f"labelled/{row['clip_id']}/frames/{t:06d}.png" for t in range(row["frames"])]
    assert all((out / line).is_file() for line in lines)
    # Imported again: the clip is replaced, not duplicated.
    run_import("spin-npz", npz, out_dir=out, cfg=ImportConfig(), images=tmp_path / "spin", progress=False)
    rows_after = read_manifest(out).to_pylist()
    assert [r["clip_id"] for r in rows_after] == [row["clip_id"]]
    assert Path((out / rows_after[0]["path"]).read_text().splitlines()[0]).is_absolute()

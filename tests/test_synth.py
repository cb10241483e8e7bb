"""The synthetic benchmark: labels agree with pixels, flow with the renderer, seeds with themselves."""

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from raymotion.config import SYNTH_PRESETS, load_config
from raymotion.data.decode import read_video, read_video_dali_cpu, read_video_pyav
from raymotion.flow.estimator import DISFlow
from raymotion.data.manifest import read_manifest
from raymotion.synth.generate import generate
from raymotion.synth.scene import look_at, plan_clips

pytestmark = pytest.mark.render


def tiny_config(out_dir, **overrides):
    return load_config(
        overrides={"body.model": "anny_lowres", "synth.body_model": "anny_lowres", "synth.out_dir": str(out_dir), "synth.num_workers": 1, **overrides},
        preset=SYNTH_PRESETS["tiny"],
    )


@pytest.fixture(scope="module")
def tiny(tiny_benchmark):
    return tiny_config(tiny_benchmark)


def clips(cfg, split=None):
    rows = read_manifest(cfg.synth.out_dir).to_pylist()
    return [r for r in rows if split is None or r["split"] == split]


def labels(cfg, clip):
    return pq.read_table(f"{cfg.synth.out_dir}/{clip['labels_path']}").to_pydict()


def test_look_at_puts_the_target_on_the_optical_axis():
    rotation_33, transl_3 = look_at(np.array([0.0, 1.0, 10.0]), np.array([0.0, 1.0, 0.0]))
    target_cam_3 = rotation_33 @ np.array([0.0, 1.0, 0.0]) + transl_3
    np.testing.assert_allclose(target_cam_3, [0.0, 0.0, 10.0], atol=1e-12)
    # Camera on +z looking at -z with y up: world +x is image right, world +y is image up (-y_cam).
    np.testing.assert_allclose(rotation_33 @ np.array([1.0, 0, 0]), [1.0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_33 @ np.array([0, 1.0, 0]), [0, -1.0, 0], atol=1e-12)


def test_plan_holds_out_subjects_and_covers_every_split(tiny):
    plans = plan_clips(tiny.synth)
    train = {p.subject for p in plans if p.split in ("labelled", "video")}
    heldout = {p.subject for p in plans if p.split in ("val", "test")}
    assert train and heldout and not train & heldout
    assert {p.split for p in plans} == {"labelled", "video", "val", "test"}


def test_manifest_lists_every_clip_with_matching_frame_counts(tiny):
    rows = clips(tiny)
    synth = tiny.synth
    assert len(rows) == synth.labelled_clips + synth.video_clips + synth.val_clips + synth.test_clips
    for row in rows:
        table = labels(tiny, row)
        assert len(table["frame"]) == row["frames"]
        assert len(read_video_pyav(f"{synth.out_dir}/{row['path']}")) == row["frames"]


def test_dali_cpu_decodes_as_many_frames_as_label_rows(tiny):
    row = clips(tiny, "video")[0]
    frames = read_video_dali_cpu(f"{tiny.synth.out_dir}/{row['path']}")
    assert frames.shape == (row["frames"], row["height"], row["width"], 3)


def test_visible_joints_project_inside_the_silhouette(tiny):
    inside = total = 0
    for row in clips(tiny, "video") + clips(tiny, "test"):
        with np.load(f"{tiny.synth.out_dir}/{row['flow_path']}") as flows:
            silhouette_THW = np.isfinite(flows["forward"][..., 0].astype(np.float32))
        table = labels(tiny, row)
        for t in range(silhouette_THW.shape[0]):
            joints_J2 = np.asarray(table["joints2d"][t]).reshape(24, 2)
            visible_J = np.asarray(table["joints2d_visible"][t])
            for x, y in joints_J2[visible_J]:
                total += 1
                inside += silhouette_THW[t, int(y), int(x)]
    assert total > 50
    assert inside / total > 0.95


def test_exact_flow_agrees_with_dis_on_the_body(tiny):
    dis = DISFlow()
    errors = []
    for row in clips(tiny, "video"):
        frames = read_video_pyav(f"{tiny.synth.out_dir}/{row['path']}")
        with np.load(f"{tiny.synth.out_dir}/{row['flow_path']}") as flows:
            truth_THW2 = flows["forward"].astype(np.float32)
        for t in range(truth_THW2.shape[0]):
            body = np.isfinite(truth_THW2[t, ..., 0])
            estimate = dis(frames[t], frames[t + 1])
            errors.append(np.linalg.norm(estimate[body] - truth_THW2[t][body], axis=1).mean())
    assert np.mean(errors) < 1.0


def test_same_seed_gives_identical_frames_and_labels(tiny, tmp_path):
    again = tiny_config(tmp_path)
    # Only the first two clips of each split are compared, to keep the test short.
    from raymotion.synth.generate import ClipRenderer

    renderer = ClipRenderer(again)
    for plan in [p for p in plan_clips(again.synth) if p.split in ("labelled", "video")][:2]:
        renderer.write(plan, tmp_path)
        ours = read_video_pyav(tmp_path / plan.split / plan.clip_id / "video.webm")
        theirs = read_video_pyav(f"{tiny.synth.out_dir}/{plan.split}/{plan.clip_id}/video.webm")
        np.testing.assert_array_equal(ours, theirs)
        a = pq.read_table(tmp_path / plan.split / plan.clip_id / "labels.parquet")
        b = pq.read_table(f"{tiny.synth.out_dir}/{plan.split}/{plan.clip_id}/labels.parquet")
        assert a.equals(b)
    renderer.close()


def test_rerun_skips_finished_clips_and_rewrites_the_manifest(tiny):
    path = f"{tiny.synth.out_dir}/{clips(tiny)[0]['path']}"
    import os

    before = os.stat(path).st_mtime_ns
    generate(tiny, progress=False)
    assert os.stat(path).st_mtime_ns == before


def test_truncated_video_is_reported_by_name(tiny, tmp_path):
    row = clips(tiny, "video")[0]
    data = open(f"{tiny.synth.out_dir}/{row['path']}", "rb").read()
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.webm"):
        read_video(truncated, expected_frames=row["frames"])


def test_corrupt_video_is_reported_by_name(tmp_path):
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"\x1a\x45\xdf\xa3 not a real video" * 20)
    with pytest.raises(ValueError, match="broken.webm"):
        read_video_pyav(broken)
    with pytest.raises(ValueError, match="broken.webm"):
        read_video_dali_cpu(broken)


@pytest.mark.parametrize("heading_deg,view_deg,expected_forward_cam", [
    (0.0, 0.0, (0.0, 0.0, -1.0)),     # camera straight in front: the body faces it (-z in camera frame)
    (90.0, 0.0, (0.0, 0.0, -1.0)),    # turned body, camera follows the heading
    (0.0, 180.0, (0.0, 0.0, 1.0)),    # seen from behind
    (30.0, 90.0, (-1.0, 0.0, 0.0)),   # camera on the body's left (its +x): it faces image left
])
def test_camera_azimuth_is_relative_to_the_body_heading(heading_deg, view_deg, expected_forward_cam):
    from dataclasses import replace
    from raymotion.synth.scene import body_heading, camera_track

    cfg = replace(load_config().synth, elevation_deg=(0.0, 0.0), view_yaw_deg=(view_deg, view_deg))
    yaw = np.radians(heading_deg)
    root_rot_33 = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    assert body_heading(root_rot_33) == pytest.approx(yaw)
    track = camera_track(cfg, np.zeros((2, 3)), np.random.default_rng(0), heading_rad=body_heading(root_rot_33))
    forward_cam_3 = track.rotation_T33[0] @ root_rot_33[:, 2]
    np.testing.assert_allclose(forward_cam_3, expected_forward_cam, atol=1e-9)


def test_hair_covers_the_back_of_the_head_and_leaves_the_face():
    from raymotion.body.joints import SMPL_JOINT
    from raymotion.synth.textures import hair_mask

    # A head of points on a 10 cm sphere (part 'head') plus a point on the chest (another part).
    rng = np.random.default_rng(0)
    dirs_N3 = rng.normal(size=(2000, 3))
    head_N3 = 0.1 * dirs_N3 / np.linalg.norm(dirs_N3, axis=1, keepdims=True) + np.array([0.0, 1.6, 0.0])
    points_V3 = np.vstack([head_N3, [[0.0, 1.2, 0.1]]])
    part_V = np.r_[np.full(2000, SMPL_JOINT["head"]), SMPL_JOINT["spine3"]]
    hair_V = hair_mask(points_V3, part_V)
    rel_N3 = head_N3 - head_N3.mean(axis=0)
    assert hair_V[:2000][rel_N3[:, 2] < 0].all()           # the back half is hair
    assert hair_V[:2000][rel_N3[:, 1] > 0.05].all()        # so is the top
    face_N = (rel_N3[:, 2] > 0.05) & (rel_N3[:, 1] < 0.0)  # the lower front is the face
    assert face_N.any() and not hair_V[:2000][face_N].any()
    assert not hair_V[2000]                                 # other parts are never hair


def test_held_out_split_sizes_leave_the_training_clips_unchanged():
    """launch ignores these keys when it matches a shipped base model: they must not change its training data."""
    from raymotion.train.launch import _SYNTH_KEYS_IGNORED

    base = load_config().synth
    bigger = load_config(overrides={"synth.num_heldout_subjects": 30, "synth.val_clips": 7, "synth.test_clips": 300,
                                    "synth.eval_frames": 5}).synth
    assert {"synth.num_heldout_subjects", "synth.val_clips", "synth.test_clips", "synth.eval_frames"} <= _SYNTH_KEYS_IGNORED
    train = [p for p in plan_clips(base) if p.split in ("labelled", "video")]
    assert train == [p for p in plan_clips(bigger) if p.split in ("labelled", "video")]
    assert [p for p in plan_clips(base) if p.split == "test"] != [p for p in plan_clips(bigger) if p.split == "test"]


def test_a_run_renders_only_the_labelled_clips_of_its_fraction_and_the_rest_on_demand(tiny, tmp_path):
    """ensure_benchmark renders what one run reads (every video/val/test clip, the fraction's labelled clips);
    the manifest still lists every clip, so the fraction's subset is the one a full benchmark gives; a reader
    of a labelled clip that is not rendered names it and the fix; a run at a larger fraction renders the rest."""
    import shutil

    from raymotion.data.frames import LabelledFrames, select_clips
    from raymotion.data.manifest import MANIFEST, UNRENDERED
    from raymotion.train.launch import ensure_benchmark

    root = tmp_path / "bench"
    shutil.copytree(tiny.synth.out_dir, root)
    full_rows = read_manifest(root).to_pylist()
    shutil.rmtree(root / "labelled")
    (root / MANIFEST).unlink()
    cfg = tiny_config(root, **{"data.root": str(root), "train.fraction": 0.5, "train.fraction_seed": 3})
    ensure_benchmark(cfg)

    labelled = [p.clip_id for p in plan_clips(cfg.synth) if p.split == "labelled"]  # 6 clips
    chosen = {labelled[i] for i in select_clips(6, fraction=0.5, seed=3)}
    assert len(chosen) == 3
    assert {d.name for d in (root / "labelled").iterdir() if not d.name.startswith(".")} == chosen
    assert (root / UNRENDERED).read_text().split() == [c for c in labelled if c not in chosen]
    assert read_manifest(root).to_pylist() == full_rows  # every clip listed, as a full render lists it
    frames = LabelledFrames(root, split="labelled", crop_size=32, bbox_scale=1.2, fraction=0.5, seed=3)
    assert sorted(frames.clip_ids) == sorted(chosen)
    with pytest.raises(FileNotFoundError, match=r"3 clip\(s\) of split 'labelled' chosen at train.fraction=1 .*"
                                                r"raymotion synth --set synth.out_dir="):
        LabelledFrames(root, split="labelled", crop_size=32, bbox_scale=1.2, fraction=1.0, seed=3)

    ensure_benchmark(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fraction=1.0)))
    assert not (root / UNRENDERED).exists()
    assert len(LabelledFrames(root, split="labelled", crop_size=32, bbox_scale=1.2).clip_ids) == 6
    again = read_video_pyav(root / full_rows[0]["path"])
    np.testing.assert_array_equal(again, read_video_pyav(f"{tiny.synth.out_dir}/{full_rows[0]['path']}"))

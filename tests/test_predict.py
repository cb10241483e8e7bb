"""`raymotion predict`: the same predictions as `evaluate` on the tiny benchmark's test clips, 2D joints that land on
the person, overlays with every frame, the full-image camera against hand-computed values, smoothing, and the
error cases (no boxes, mixed image sizes, corrupt input, a checkpoint of another model)."""

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raymotion.body.body_model import BodyModel
from raymotion.config import ConfigError, apply_overrides
from raymotion.eval.evaluate import predict_and_truth
from raymotion.geometry import crop_to_image, weak_perspective_project
from raymotion.predict import outputs
from raymotion.predict.run import Predictor, predict_to_folder
from raymotion.train.components import labelled_frames

BASE_MODEL = str(Path(__file__).resolve().parent.parent / "raymotion" / "assets" / "base_models" / "small_cnn64_f05.pt")
"""The shipped base model: small CNN, 64 px crops, the low-resolution embedded body (the tiny benchmark's)."""


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu"])


@pytest.fixture(scope="module")
def test_clips(tiny_benchmark):
    manifest = pq.read_table(tiny_benchmark / "manifest.parquet").to_pylist()
    return [tiny_benchmark / Path(row["path"]).parent for row in manifest if row["split"] == "test"]


@pytest.fixture(scope="module")
def clip_predictions(predictor, test_clips, tmp_path_factory):
    """predict on every test clip folder (boxes from its labels), overlay on."""
    out = tmp_path_factory.mktemp("clip_predictions")
    for clip in test_clips:
        predict_to_folder(predictor, clip, out / clip.name, progress=False)
    return {clip.name: out / clip.name for clip in test_clips}


def load(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "predictions.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def video_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# ---- the same numbers as evaluate -----------------------------------------------------------------


@pytest.mark.render
def test_predict_with_the_label_boxes_gives_what_evaluate_scores(predictor, tiny_benchmark, test_clips, clip_predictions):
    cfg = apply_overrides(predictor.cfg, {"data.root": str(tiny_benchmark)})
    pred, _, clip_index_N, frame_N = predict_and_truth(predictor.model, predictor.body, labelled_frames(cfg, "test"))
    manifest = pq.read_table(tiny_benchmark / "manifest.parquet").column("clip_id").to_pylist()
    ours = []
    for clip_index, frame in zip(clip_index_N.tolist(), frame_N.tolist()):
        arrays = load(clip_predictions[manifest[clip_index]])
        (row,) = np.flatnonzero(arrays["frame"] == frame)
        # evaluate compares root-free bodies: predict's are translated into the full-image camera.
        ours.append(arrays["eval_joints3d_cam"][row] - arrays["transl_cam"][row])
    torch.testing.assert_close(torch.as_tensor(np.stack(ours)), pred["eval_joints_NE3"], atol=1e-5, rtol=0)


@pytest.mark.render
def test_2d_joints_land_on_the_labelled_joints_and_match_the_crop_camera(predictor, test_clips, clip_predictions):
    for clip in test_clips:
        arrays = load(clip_predictions[clip.name])
        labels = pq.read_table(clip / "labels.parquet").to_pydict()
        true_NJ2 = np.asarray(labels["joints2d"], dtype=np.float32).reshape(-1, 24, 2)[arrays["frame"]]
        box_N4 = np.asarray(labels["box_xyxy"])[arrays["frame"]]
        np.testing.assert_allclose(arrays["box_xyxy"], box_N4, rtol=1e-6)
        # The shipped 5 % model is within a tenth of the box height of the truth (its mean 2D error is ~5 %).
        error_N = np.linalg.norm(arrays["joints2d"] - true_NJ2, axis=-1).mean(axis=1)
        assert (error_N < 0.1 * (box_N4[:, 3] - box_N4[:, 1])).all(), error_N
        # The full-image perspective camera reproduces the model's own weak-perspective crop projection.
        body = predictor.body(rotmats_BJ33=torch.as_tensor(arrays["rotmats"]), betas_BK=torch.as_tensor(arrays["betas"]))
        crop_NJ2 = crop_to_image(weak_perspective_project(body.joints_BJ3, torch.as_tensor(arrays["cam_crop"]),
                                                          crop_size=predictor.cfg.data.crop_size),
                                 box_center_B2=torch.as_tensor(arrays["crop_center"]),
                                 box_size_B=torch.as_tensor(arrays["crop_side"]), crop_size=predictor.cfg.data.crop_size)
        np.testing.assert_allclose(arrays["joints2d"], crop_NJ2.detach().numpy(), atol=0.5)


@pytest.mark.render
def test_overlay_video_has_every_input_frame_and_the_mesh_on_the_person(test_clips, clip_predictions):
    for clip in test_clips:
        source, overlay = video_frames(clip / "video.webm"), video_frames(clip_predictions[clip.name] / "overlay.mp4")
        assert len(overlay) == len(source) and overlay[0].shape == source[0].shape
        labels = pq.read_table(clip / "labels.parquet").to_pydict()
        for t, (before, after) in enumerate(zip(source, overlay)):
            # > 100 (of 765): the mesh, not the two codecs' noise on the textured background
            changed_HW = np.abs(after.astype(int) - before.astype(int)).sum(axis=2) > 100
            x0, y0, x1, y1 = np.asarray(labels["box_xyxy"][t]).round().astype(int)
            inside = changed_HW[max(y0, 0):y1, max(x0, 0):x1].sum()
            assert inside > 0.95 * changed_HW.sum() and inside > 0.15 * (x1 - x0) * (y1 - y0)


@pytest.mark.render
def test_predictions_file_documents_its_conventions(clip_predictions):
    arrays = load(next(iter(clip_predictions.values())))
    meta = json.loads(str(arrays["metadata"]))
    assert meta["model"]["model.backbone"] == "small_cnn" and meta["model"]["data.crop_size"] == 64
    assert set(meta["conventions"]) >= {"camera_frame", "pose", "cam_crop", "transl_cam", "joints2d"}
    assert len(meta["joint_names"]) == 24 and len(meta["eval_joint_names"]) == 14
    num_rows = len(arrays["frame"])
    assert arrays["pose"].shape == (num_rows, 72) and arrays["rotmats"].shape == (num_rows, 24, 3, 3)
    assert arrays["joints3d_cam"].shape == (num_rows, 24, 3) and arrays["eval_joints2d"].shape == (num_rows, 14, 2)
    # axis-angle and matrices are the same rotations
    from raymotion.geometry import axis_angle_to_rotmat

    torch.testing.assert_close(axis_angle_to_rotmat(torch.as_tensor(arrays["pose"]).reshape(-1, 24, 3)),
                               torch.as_tensor(arrays["rotmats"]), atol=1e-4, rtol=0)


# ---- the full-image camera, by hand ---------------------------------------------------------------


def test_2d_joints_by_hand(two_bone_arrays):
    """A body in the plane z = 0 (the toy's joints: root at the origin, left hip at (1, 0, 0)), crop camera
    (s, tx, ty) = (0.5, 0.1, -0.2) in a crop of side 80 px around (50, 40) of a 100 x 60 image: the left hip lands
    at normalised (0.6, -0.2), i.e. (50 + 0.6 * 40, 40 - 0.2 * 40) = (74, 32) px, and the root at (54, 32)."""
    body = BodyModel.from_arrays(two_bone_arrays)
    cam_13 = torch.tensor([[0.5, 0.1, -0.2]])
    focal_1 = torch.tensor([500.0])
    image_size_12 = torch.tensor([[100.0, 60.0]])
    transl_13 = outputs.full_image_translation(cam_13, crop_center_N2=torch.tensor([[50.0, 40.0]]),
                                               crop_side_N=torch.tensor([80.0]), image_size_N2=image_size_12,
                                               focal_length_N=focal_1)
    # t_z = 2 f / (b s) = 2 * 500 / (80 * 0.5) = 25 m
    torch.testing.assert_close(transl_13[0, 2], torch.tensor(25.0))
    posed = outputs.posed_in_camera(body, rotmats_NJ33=torch.eye(3).expand(1, 24, 3, 3), betas_NK=torch.zeros(1, 10),
                                    transl_N3=transl_13, image_size_N2=image_size_12, focal_length_N=focal_1,
                                    with_verts=True)
    torch.testing.assert_close(posed["joints2d"][0, :2], torch.tensor([[54.0, 32.0], [74.0, 32.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(posed["verts_cam"][0, 1], torch.tensor([1.0, 0.0, 0.0]) + transl_13[0])


def test_default_focal_length_is_spins_5000_at_224_scaled_to_the_longer_side():
    assert outputs.default_focal_length(224, 100) == pytest.approx(5000.0)
    assert outputs.default_focal_length(300, 448) == pytest.approx(10000.0)


# ---- smoothing ------------------------------------------------------------------------------------


def test_gaussian_smoothing_keeps_constants_and_ramps_and_damps_jitter():
    ramp_T1 = np.arange(12.0)[:, None]
    np.testing.assert_allclose(outputs.gaussian_smooth_rows(np.full((7, 2), 3.0), sigma=2.0), 3.0)
    # in the interior (3 sigma from both ends) a symmetric kernel keeps a ramp
    np.testing.assert_allclose(outputs.gaussian_smooth_rows(ramp_T1, sigma=1.0)[3:9], ramp_T1[3:9])
    jitter_T1 = np.array([[1.0], [-1.0]] * 10)
    assert np.abs(outputs.gaussian_smooth_rows(jitter_T1, sigma=2.0)[6:-6]).max() < 1e-3  # +-1 -> ~0 inside


def test_smoothing_never_bridges_a_gap_and_keeps_rotations():
    frame_N = np.array([0, 1, 2, 5, 6, 0, 1])
    track_N = np.array([1, 1, 1, 1, 1, 2, 2])
    assert [s.tolist() for s in outputs.track_segments(frame_N, track_N)] == [[0, 1, 2], [3, 4], [5, 6]]
    angle_N = torch.tensor([0.0, 0.2, 0.0, 1.0, 1.0, 0.0, 0.0])
    rotmats_NJ33 = torch.eye(3).repeat(7, 24, 1, 1)
    rotmats_NJ33[:, 0, 0, 0] = rotmats_NJ33[:, 0, 1, 1] = torch.cos(angle_N)
    rotmats_NJ33[:, 0, 0, 1], rotmats_NJ33[:, 0, 1, 0] = -torch.sin(angle_N), torch.sin(angle_N)
    transl_N3 = torch.stack([torch.tensor([0.0, 0, 10]), torch.tensor([0.0, 0, 10]), torch.tensor([0.0, 0, 10]),
                             torch.tensor([5.0, 0, 10]), torch.tensor([5.0, 0, 10]), torch.zeros(3), torch.zeros(3)])
    rotmats, betas, transl = outputs.smooth_tracks(frame_N, track_N, rotmats_NJ33=rotmats_NJ33,
                                                   betas_NK=torch.zeros(7, 10), transl_N3=transl_N3, sigma=1.0)
    torch.testing.assert_close(transl, transl_N3)  # constant within each run; the jump at the gap stays
    eye = torch.eye(3).expand(7, 24, 3, 3)
    torch.testing.assert_close(rotmats.transpose(-1, -2) @ rotmats, eye, atol=1e-5, rtol=0)
    assert 0.0 < torch.atan2(rotmats[1, 0, 1, 0], rotmats[1, 0, 0, 0]) < 0.2  # the spike is damped
    torch.testing.assert_close(rotmats[3:5], rotmats_NJ33[3:5])


# ---- inputs, boxes and error cases ----------------------------------------------------------------


@pytest.mark.render
def test_a_video_without_boxes_is_predicted_on_the_whole_frame(predictor, test_clips, tmp_path):
    video = test_clips[0] / "video.webm"
    summary = predict_to_folder(predictor, video, tmp_path, progress=False)
    arrays = load(tmp_path)
    num_frames = len(video_frames(video))
    assert summary.kind == "video" and summary.boxes_source == "whole frame"
    assert arrays["frame"].tolist() == list(range(num_frames)) and set(arrays["track"].tolist()) == {0}
    height, width = video_frames(video)[0].shape[:2]
    np.testing.assert_array_equal(arrays["box_xyxy"], [[0, 0, width, height]] * num_frames)
    np.testing.assert_array_equal(arrays["crop_side"], max(width, height))
    assert len(video_frames(tmp_path / "overlay.mp4")) == num_frames


def frames_of(clip: Path) -> list[np.ndarray]:
    return video_frames(clip / "video.webm")


@pytest.mark.render
def test_image_folder_of_mixed_sizes_with_a_boxes_file_and_two_people(predictor, test_clips, tmp_path):
    """Two images of different sizes; image 1 holds the person twice, 192 px apart on a black canvas (so that both
    crops see the same pixels: black beyond the frame, as a crop past the image edge does), as two tracks."""
    frame = frames_of(test_clips[0])[0]
    labels = pq.read_table(test_clips[0] / "labels.parquet").to_pydict()
    x0, y0, x1, y1 = labels["box_xyxy"][0]
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "img_2.png"), cv2.cvtColor(frame[:80], cv2.COLOR_RGB2BGR))  # 96 x 80
    canvas = np.zeros((96, 5 * 96, 3), np.uint8)
    canvas[:, 96:192] = canvas[:, 288:384] = frame
    cv2.imwrite(str(folder / "img_10.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"frame,track,x0,y0,x1,y1\n1,4,{x0 + 96},{y0},{x1 + 96},{y1}\n1,7,{x0 + 288},{y0},{x1 + 288},{y1}\n")
    summary = predict_to_folder(predictor, folder, tmp_path / "out", boxes_path=boxes, progress=False)
    arrays = load(tmp_path / "out")
    assert summary.frames == 2 and summary.frames_with_people == 1  # img_2 is frame 0 (natural order): no box
    assert arrays["image"].tolist() == ["img_10.png", "img_10.png"] and arrays["track"].tolist() == [4, 7]
    assert arrays["image_size"].tolist() == [[480, 96], [480, 96]]
    # the same person 192 px to the right: the same body, 192 px further right in 2D (up to the perspective of
    # seeing it from another angle: below half a pixel here)
    np.testing.assert_allclose(arrays["eval_joints3d_cam"][0] - arrays["transl_cam"][0],
                               arrays["eval_joints3d_cam"][1] - arrays["transl_cam"][1], atol=1e-4)  # float32 at ~250 m
    np.testing.assert_allclose(arrays["joints2d"][1] - arrays["joints2d"][0], np.broadcast_to([192.0, 0.0], (24, 2)),
                               atol=0.5)
    assert cv2.imread(str(tmp_path / "out" / "overlay" / "img_2.png")).shape == (80, 96, 3)
    assert cv2.imread(str(tmp_path / "out" / "overlay" / "img_10.png")).shape == (96, 480, 3)


def test_a_corrupt_image_fails_by_name_or_is_skipped_and_counted(test_clips, tmp_path):
    predictor = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false"])
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(frames_of(test_clips[0])[0], cv2.COLOR_RGB2BGR))
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match=f"{folder / 'b.png'} is not a readable image.*data.bad_input=skip"):
        predict_to_folder(predictor, folder, tmp_path / "out", progress=False)
    skipping = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false",
                                                                "data.bad_input=skip"])
    summary = predict_to_folder(skipping, folder, tmp_path / "out", progress=False)
    assert summary.frames == 1 and len(summary.skipped) == 1 and "b.png" in summary.skipped[0]
    assert load(tmp_path / "out")["image"].tolist() == ["a.png"]
    assert "1 unreadable inputs" in summary.format()


def test_a_truncated_video_fails_naming_it(test_clips, tmp_path):
    predictor = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false"])
    video = tmp_path / "cut.webm"
    video.write_bytes((test_clips[0] / "video.webm").read_bytes()[:300])
    with pytest.raises(ValueError, match=f"{video}"):
        predict_to_folder(predictor, video, tmp_path / "out", progress=False)


def test_a_clip_whose_video_ends_early_fails_by_name_or_keeps_its_frames_under_skip(test_clips, tmp_path):
    """FFmpeg ends a truncated WebM early without an error; the clip's labels say how many frames it has."""
    clip = tmp_path / "clip"
    shutil.copytree(test_clips[0], clip)
    whole = (clip / "video.webm").read_bytes()
    (clip / "video.webm").write_bytes(whole[:int(0.8 * len(whole))])
    decoded = len(video_frames(clip / "video.webm"))
    expected = len(pq.read_table(clip / "labels.parquet"))
    assert 0 < decoded < expected
    strict = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false"])
    with pytest.raises(ValueError, match=f"video {clip / 'video.webm'} ends after {decoded} of the {expected} frames"):
        predict_to_folder(strict, clip, tmp_path / "out", progress=False)
    skipping = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false",
                                                                "data.bad_input=skip"])
    summary = predict_to_folder(skipping, clip, tmp_path / "out", progress=False)
    assert summary.frames == summary.people == decoded and len(summary.skipped) == 1
    assert summary.boxes_past_the_end == expected - decoded


def test_boxes_below_the_score_or_outside_the_frame_are_counted_not_silent(test_clips, tmp_path):
    predictor = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false",
                                                                 "predict.min_score=0.5", "data.bad_input=skip"])
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("frame,track,x0,y0,x1,y1,score\n0,0,10,10,50,80,0.9\n1,0,10,10,50,80,0.2\n"
                     "2,0,500,500,600,600,0.9\n99,0,10,10,50,80,0.9\n")
    summary = predict_to_folder(predictor, test_clips[0] / "video.webm", tmp_path / "out", boxes_path=boxes,
                                progress=False)
    assert (summary.people, summary.boxes_below_min_score, len(summary.boxes_bad), summary.boxes_past_the_end) == (1, 1, 1, 1)
    assert "frame 2, track 0" in summary.boxes_bad[0]
    strict = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false"])
    with pytest.raises(ValueError, match="frame 2, track 0: box_xyxy .* outside the 96x96 frame"):
        predict_to_folder(strict, test_clips[0] / "video.webm", tmp_path / "out2", boxes_path=boxes, progress=False)


def test_an_override_of_the_checkpoints_model_is_refused_by_name(capsys, tmp_path):
    with pytest.raises(ConfigError, match=r"model.backbone='resnet18' is invalid: the checkpoint .* was trained with "
                                          r"model.backbone='small_cnn'"):
        Predictor.from_checkpoint(BASE_MODEL, overrides=["model.backbone=resnet18"])
    from raymotion.cli import main

    assert main(["predict", "--checkpoint", BASE_MODEL, str(tmp_path), "--out", str(tmp_path / "o"),
                 "--set", "data.crop_size=224"]) == 2
    assert "data.crop_size=224 is invalid: the checkpoint" in capsys.readouterr().err


def test_smoothing_an_image_folder_is_refused_by_name(test_clips, tmp_path):
    predictor = Predictor.from_checkpoint(BASE_MODEL, overrides=["run.device=cpu", "predict.smoothing=gaussian"])
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), frames_of(test_clips[0])[0])
    with pytest.raises(ConfigError, match="predict.smoothing='gaussian' is invalid: .* is not a video"):
        predict_to_folder(predictor, image, tmp_path / "out", progress=False)


@pytest.mark.render
def test_cli_predict_with_smoothing_side_view_vertices_and_obj(test_clips, tmp_path, capsys):
    from raymotion.cli import main

    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", BASE_MODEL, str(test_clips[0]), "--out", str(out), "--smooth", "gaussian",
                 "--side-view", "--vertices", "--obj", "--no-progress", "--set", "run.device=cpu"]) == 0
    printed = capsys.readouterr().out
    assert "4 frames, 4 people in 4 frames, 1 tracks" in printed and "smoothing: gaussian" in printed
    arrays = load(out)
    num_rows, num_verts = arrays["verts_cam"].shape[:2]
    assert arrays["faces"].max() == num_verts - 1
    assert sorted(p.name for p in (out / "obj").iterdir()) == [f"frame_{f:06d}_track_0.obj" for f in range(num_rows)]
    assert len((out / "obj" / "frame_000000_track_0.obj").read_text().splitlines()) == num_verts + len(arrays["faces"])
    overlay = video_frames(out / "overlay.mp4")
    assert len(overlay) == num_rows and overlay[0].shape[1] == 2 * frames_of(test_clips[0])[0].shape[1]
    assert json.loads((out / "summary.json").read_text())["people"] == num_rows


# ---- jobs/predict.py: many videos on Ray Data -----------------------------------------------------


@pytest.mark.ray
def test_batch_job_with_two_actors_writes_what_predict_writes_and_skips_finished_videos(
        ray_local, tiny_benchmark, test_clips, tmp_path):
    from raymotion.predict.pipeline import list_videos, predict_videos
    from raymotion.predict.run import predict_config

    overrides = ["run.device=cpu", "predict.overlay=false", "predict.actors=2"]
    folder = tmp_path / "videos"  # three videos; one with a boxes file beside it, two on the whole frame
    folder.mkdir()
    clips = [*test_clips, *sorted((tiny_benchmark / "val").iterdir())[:1]]
    for i, clip in enumerate(clips):
        (folder / f"v{i}.webm").write_bytes((clip / "video.webm").read_bytes())
    labels = pq.read_table(clips[0] / "labels.parquet").to_pydict()
    (folder / "v0.csv").write_text("frame,track,x0,y0,x1,y1\n" + "".join(
        f"{f},3,{x0},{y0},{x1},{y1}\n" for f, (x0, y0, x1, y1) in zip(labels["frame"], labels["box_xyxy"])))
    videos = list_videos(folder)
    assert [(v["name"], Path(v["boxes"]).name if v["boxes"] else "") for v in videos] == [("v0", "v0.csv"), ("v1", ""),
                                                                                         ("v2", "")]
    cfg, _ = predict_config(BASE_MODEL, overrides=overrides)
    summary = predict_videos(cfg, checkpoint=BASE_MODEL, videos=videos, out_dir=tmp_path / "batch")
    assert summary.videos == 3 and summary.frames == sum(len(frames_of(c)) for c in clips)

    single = Predictor.from_checkpoint(BASE_MODEL, overrides=overrides)
    for video in videos:
        predict_to_folder(single, video["input"], tmp_path / "single" / video["name"], boxes_path=video["boxes"] or None,
                          progress=False)
        batch, alone = load(tmp_path / "batch" / video["name"]), load(tmp_path / "single" / video["name"])
        assert batch.keys() == alone.keys()
        for key in batch:
            if key != "metadata":
                np.testing.assert_array_equal(batch[key], alone[key], err_msg=f"{video['name']}: {key}")
    assert load(tmp_path / "batch" / "v0")["track"].tolist() == [3] * len(labels["frame"])

    # A rerun does only what is not finished: v1's folder lost its summary.json (as if cut off); a corrupt v3 was
    # added, which data.bad_input=skip reports while the others go on.
    (tmp_path / "batch" / "v1" / "summary.json").unlink()
    (folder / "v3.webm").write_bytes(b"not a video")
    before = (tmp_path / "batch" / "v0" / "predictions.npz").stat().st_mtime_ns
    cfg, _ = predict_config(BASE_MODEL, overrides=[*overrides, "data.bad_input=skip"])
    again = predict_videos(cfg, checkpoint=BASE_MODEL, videos=list_videos(folder), out_dir=tmp_path / "batch")
    assert again.videos == 1 and again.skipped_finished == ["v0", "v2"]
    assert len(again.failed) == 1 and str(folder / "v3.webm") in again.failed[0]
    assert (tmp_path / "batch" / "v0" / "predictions.npz").stat().st_mtime_ns == before
    assert (tmp_path / "batch" / "v1" / "summary.json").is_file() and not (tmp_path / "batch" / "v3" / "summary.json").exists()


def test_video_lists_from_a_manifest_and_a_csv(tiny_benchmark, tmp_path):
    from raymotion.predict.pipeline import list_videos

    test = list_videos(tiny_benchmark / "manifest.parquet", split="test")
    assert [v["name"] for v in test] == ["test_00000", "test_00001"]
    assert Path(test[0]["input"]) == tiny_benchmark / "manifest.parquet" and test[0]["clip"] == "test_00000"
    partial = tmp_path / "partial"
    shutil.copytree(tiny_benchmark, partial, ignore=shutil.ignore_patterns("*.npz"))
    (partial / "test" / "test_00001" / "video.webm").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 clips .* have no video or frames \(first: .*test_00001/video.webm\)"):
        list_videos(partial / "manifest.parquet", split="test")
    (tmp_path / "list.csv").write_text("video,boxes\na/walk.mp4,a/walk.csv\nb/walk.mp4,\n")
    with pytest.raises(ValueError, match=r"several videos would write the same output folder \['walk'\]"):
        list_videos(tmp_path / "list.csv")


def test_an_image_sequence_clip_of_a_manifest_predicts_what_its_video_does(tiny_benchmark, clip_predictions, tmp_path):
    """The tiny benchmark's test clips as lossless PNG frame lists (test_image_sequences.png_benchmark): listed
    from the manifest and opened by row, they give the video clip's arrays, frame for frame."""
    from test_image_sequences import png_benchmark

    from raymotion.config import to_dict
    from raymotion.predict.pipeline import PredictStage, list_videos, open_manifest_clip
    from raymotion.predict.run import predict_config

    root = png_benchmark(tiny_benchmark, tmp_path / "png")
    items = list_videos(root / "manifest.parquet", split="test")
    assert [(item["name"], item["clip"]) for item in items] == [("test_00000", "test_00000"), ("test_00001", "test_00001")]
    source = open_manifest_clip(items[0]["input"], items[0]["clip"])
    assert source.kind == "clip_images" and source.image_paths[0].suffix == ".png"
    assert source.label_boxes is not None and source.label_boxes.source.endswith("labels.parquet")
    cfg, _ = predict_config(BASE_MODEL, overrides=["run.device=cpu", "predict.overlay=false"])
    threads = torch.get_num_threads()  # the stage sets its actor's thread count: keep this process's
    try:
        stage = PredictStage(checkpoint=BASE_MODEL, config=to_dict(cfg), out_dir=str(tmp_path / "out"))  # jobs/predict.py's
        row = stage({key: np.asarray([value]) for key, value in items[0].items()})
    finally:
        torch.set_num_threads(threads)
    assert row["error"].tolist() == [""] and row["frames"].tolist() == [len(source.image_paths)]
    got, want = load(tmp_path / "out" / "test_00000"), load(clip_predictions["test_00000"])
    for key in ("frame", "track", "pose", "betas", "box_xyxy", "joints2d"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
    with pytest.raises(ValueError, match="lists no clip 'nope'"):
        open_manifest_clip(root / "manifest.parquet", "nope")


def test_a_checkpoint_of_another_backbone_builds_its_own_model_and_mismatched_weights_are_refused(test_clips, tmp_path):
    from raymotion.models.regressor import MeanParams, build_regressor
    from raymotion.train.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(BASE_MODEL)
    config = {**state["config"], "model": {**state["config"]["model"], "backbone": "resnet18"}}
    resnet = build_regressor(backbone="resnet18", mean_params=MeanParams.default())
    save_checkpoint(tmp_path / "resnet18.pt", {"model": resnet.state_dict(), "step": 0, "config": config})
    predictor = Predictor.from_checkpoint(str(tmp_path / "resnet18.pt"), overrides=["predict.overlay=false"])
    assert type(predictor.model.backbone).__name__ == "ResNet"  # no --set model.backbone needed: the file says it
    summary = predict_to_folder(predictor, test_clips[0], tmp_path / "out", progress=False)
    assert summary.people == len(frames_of(test_clips[0]))
    save_checkpoint(tmp_path / "mixed.pt", {"model": resnet.state_dict(), "step": 0, "config": state["config"]})
    with pytest.raises(ValueError, match=r"mixed.pt's weights do not fit the model its own config describes "
                                         r"\(model.backbone=small_cnn"):
        Predictor.from_checkpoint(str(tmp_path / "mixed.pt"))
    film = {**state["config"], "model": {**state["config"]["model"], "film": True}}
    save_checkpoint(tmp_path / "film.pt", {"model": state["model"], "step": 0, "config": film})
    with pytest.raises(ConfigError, match="model.film=True is invalid: the checkpoint .*film.pt is a FiLM model"):
        Predictor.from_checkpoint(str(tmp_path / "film.pt"))


@pytest.mark.ray
def test_the_job_script_predicts_a_manifest_split_and_says_what_it_skipped(ray_local, tiny_benchmark, tmp_path,
                                                                           monkeypatch, capsys):
    import runpy
    import sys

    argv = ["predict.py", str(tiny_benchmark / "manifest.parquet"), "--split", "test", "--checkpoint", BASE_MODEL,
            "--out", str(tmp_path), "--set", "predict.overlay=false", "--set", "predict.actors=1"]
    monkeypatch.setattr(sys, "argv", argv)
    script = str(Path(__file__).resolve().parent.parent / "jobs" / "predict.py")
    runpy.run_path(script, run_name="__main__")
    assert "predicted 2 videos" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_00000", "test_00001"]
    runpy.run_path(script, run_name="__main__")
    assert "skipped 2 finished videos (their summary.json exists): test_00000, test_00001" in capsys.readouterr().out

"""Hostile input (issue 18, docs/bad_input.md): each bad file is refused by name, or skipped and counted
under data.bad_input=skip; nothing is silently wrong."""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raymotion.config import ConfigError
from raymotion.data.frames import LabelledFrames
from raymotion.data.video_pairs import VideoPairs
from raymotion.data.manifest import MANIFEST, check_clip_lengths, read_manifest
from raymotion.eval.evaluate import score

CROP_SIZE = 32
BBOX_SCALE = 1.3


@pytest.fixture
def data_dir(tiny_benchmark, tmp_path):
    """A copy of the tiny benchmark to damage (labelled clips: 3 frames; video clips: 6 frames; 96 x 96)."""
    return shutil.copytree(tiny_benchmark, tmp_path / "data")


def first_row(data_dir, split):
    return next(row for row in read_manifest(data_dir).to_pylist() if row["split"] == split)


def set_label(data_dir, row, column, frame, value):
    """Overwrite one frame's value of a label column in the clip's labels.parquet."""
    path = data_dir / row["labels_path"]
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[frame] = value
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, column, pa.array(values, type=table.schema.field(column).type)), path)
    return path


def rewrite_manifest(data_dir, change):
    """Apply ``change(rows)`` to the manifest rows and write them back."""
    rows = read_manifest(data_dir).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), data_dir / MANIFEST)


def labelled(data_dir, **kwargs):
    return LabelledFrames(data_dir, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, **kwargs)


# ---- 1. NaN / inf labels ---------------------------------------------------------------------------------


def test_a_nan_label_fails_naming_file_frame_and_column(data_dir):
    row = first_row(data_dir, "labelled")
    joints = [[0.0, 0.0, 3.0]] * 14
    joints[5] = [float("nan"), 0.0, 3.0]
    path = set_label(data_dir, row, "eval_joints3d_cam", 2, [v for joint in joints for v in joint])
    with pytest.raises(ValueError, match=rf"{path} frame 2: eval_joints3d_cam is not finite \(nan at value 15\)"):
        labelled(data_dir)


def test_a_nan_label_is_skipped_and_counted_under_skip(data_dir):
    row = first_row(data_dir, "labelled")
    total = len(labelled(data_dir))
    set_label(data_dir, row, "betas", 1, [float("inf")] * 10)
    frames = labelled(data_dir, bad_input="skip")
    assert len(frames) == total - 1
    assert len(frames.skipped) == 1 and "frame 1: betas is not finite" in frames.skipped[0]
    kept = {(int(frames._clip_index_N[i]), int(frames._frame_N[i])) for i in range(len(frames))}
    first = read_manifest(data_dir).to_pylist().index(row)
    assert (first, 1) not in kept and (first, 0) in kept and (first, 2) in kept


def test_a_nan_box_drops_the_pairs_of_its_frame_only(data_dir):
    row = first_row(data_dir, "video")
    set_label(data_dir, row, "box_xyxy", 2, [float("nan")] * 4)
    with pytest.raises(ValueError, match=r"frame 2: box_xyxy \[nan, nan, nan, nan\] is empty, not finite"):
        VideoPairs(data_dir, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="farneback", max_clips=1)
    pairs = VideoPairs(data_dir, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="farneback", max_clips=1,
                       bad_input="skip")
    # 6 frames, gap 1: pairs t = 0..4; frame 2 bad -> (1, 2) and (2, 3) dropped.
    assert pairs._t_P.tolist() == [0, 3, 4]
    assert len(pairs.skipped) == 1


def test_metrics_are_never_silently_nan():
    pred = {"eval_joints_NE3": torch.zeros(2, 14, 3), "verts_NV3": torch.zeros(2, 5, 3)}
    truth = {"eval_joints_NE3": torch.zeros(2, 14, 3), "verts_NV3": torch.zeros(2, 5, 3),
             "verts_pelvis_N3": torch.zeros(2, 3)}
    pred["verts_NV3"][1, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"prediction \(verts_NV3\) is not finite for 1 of 2 frames \(first: clip 7"
                                         r" of the manifest, frame 4\)"):
        score(pred, truth, np.array([7, 7]), np.array([3, 4]))


# ---- 2. missing columns ------------------------------------------------------------------------------------


def test_a_manifest_without_a_column_lists_it_with_the_file(tmp_path):
    pq.write_table(pa.table({"clip_id": ["a"], "path": ["a/video.webm"], "split": ["video"]}), tmp_path / MANIFEST)
    with pytest.raises(ValueError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert str(tmp_path / MANIFEST) in message
    assert "lacks the column(s) labels_path, flow_path, frames, fps, width, height, subject, motion" in message


def test_labels_without_a_column_list_it_with_the_file(data_dir):
    row = first_row(data_dir, "labelled")
    path = data_dir / row["labels_path"]
    pq.write_table(pq.read_table(path).drop_columns(["pose_cam", "betas"]), path)
    with pytest.raises(ValueError, match=rf"{path} lacks the column\(s\) pose_cam, betas \(label columns read here"):
        labelled(data_dir)


# ---- 3. frame size -----------------------------------------------------------------------------------------


def test_a_manifest_size_larger_than_the_frames_is_refused_naming_clip_and_sizes(data_dir):
    row = first_row(data_dir, "labelled")

    def widen(rows):
        rows[rows.index(row)]["width"] = 200

    rewrite_manifest(data_dir, widen)
    with pytest.raises(ValueError, match=rf"clip {row['clip_id']}: the manifest says width=200, height=96, but "
                                         r".*video.webm decodes to 96x96 frames"):
        labelled(data_dir)


# ---- 4. a gap longer than a clip ---------------------------------------------------------------------------


def test_a_gap_longer_than_a_clip_names_the_key_value_and_clip():
    rows = [{"clip_id": "a", "split": "video", "frames": 8}, {"clip_id": "b", "split": "video", "frames": 4},
            {"clip_id": "c", "split": "labelled", "frames": 3}]
    with pytest.raises(ConfigError, match=r"train.video_gap=4 is invalid: .*clip\(s\) b \(4 frames\) of split 'video'"):
        check_clip_lengths(rows, split="video", gap=4, bad_input="fail")
    assert check_clip_lengths(rows, split="video", gap=3, bad_input="fail") == []
    assert len(check_clip_lengths(rows, split="video", gap=4, bad_input="skip")) == 1


def test_video_pairs_with_a_gap_of_the_clip_length_name_the_key(tiny_benchmark):
    with pytest.raises(ConfigError, match=r"train.video_gap=6 .*video_00000 \(6 frames\)"):
        VideoPairs(tiny_benchmark, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="farneback", gap=6)


def test_mean_params_of_a_split_with_a_nan_pose_name_the_file(data_dir):
    from raymotion.data.labels import mean_param_targets

    row = first_row(data_dir, "labelled")
    path = set_label(data_dir, row, "pose_cam", 0, [float("nan")] * 72)
    with pytest.raises(ValueError, match=rf"{path} frame 0: pose_cam is not finite"):
        mean_param_targets(data_dir, bbox_scale=BBOX_SCALE)

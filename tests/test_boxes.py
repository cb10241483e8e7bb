"""Boxes files: CSV, JSON and tracker pickles (PHALP, VIBE) read into one TrackBoxes; bad files refused by name."""

import json
import pickle

import joblib
import numpy as np
import pytest

from raymotion.data.boxes import read_boxes
from tests.conftest import CodePayload


def test_csv_rows_sorted_by_frame_and_track_with_default_score(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("frame,track,x0,y0,x1,y1\n1,7,10,20,30,60\n0,2,1.5,2,3,4\n1,3,0,0,5,5\n")
    boxes = read_boxes(path)
    assert boxes.frame_N.tolist() == [0, 1, 1] and boxes.track_N.tolist() == [2, 3, 7]
    np.testing.assert_array_equal(boxes.box_xyxy_N4[0], [1.5, 2, 3, 4])
    assert boxes.score_N.tolist() == [1.0, 1.0, 1.0]
    tracks, box, score = boxes.in_frame(1)
    assert tracks.tolist() == [3, 7] and box[1].tolist() == [10, 20, 30, 60]
    assert len(boxes.in_frame(5)[0]) == 0


def test_csv_with_scores_and_columns_in_another_order(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("track,frame,x0,y0,x1,y1,score\n4,2,0,0,10,10,0.25\n")
    boxes = read_boxes(path)
    assert (boxes.frame_N.tolist(), boxes.track_N.tolist(), boxes.score_N.tolist()) == ([2], [4], [0.25])


@pytest.mark.parametrize("text,message", [
    ("frame,track,x0,y0,x1\n0,0,1,2,3\n", "missing ['y1']"),
    ("frame,track,x0,y0,x1,y1,scor\n0,0,1,2,3,4,1\n", "unknown ['scor']"),
    ("frame,track,x0,y0,x1,y1\n0,0,1,2,3,4\n0,0,1,2,x,4\n", "line 3: x1='x' is not a number"),
    ("frame,track,x0,y0,x1,y1\n0.5,0,1,2,3,4\n", "line 2: frame='0.5' must be a whole number"),
    ("frame,track,x0,y0,x1,y1\n3,1,5,2,3,4\n", "frame 3, track 1 is [5.0, 2.0, 3.0, 4.0]: not finite or empty"),
    ("frame,track,x0,y0,x1,y1\n3,1,1,2,3,4\n3,1,1,2,3,5\n", "frame 3 has track 1 twice"),
])
def test_bad_csv_is_refused_naming_file_line_and_value(tmp_path, text, message):
    path = tmp_path / "boxes.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)) as info:
        read_boxes(path)
    assert message in str(info.value)


def test_json_list_of_boxes(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps([{"frame": 3, "track": 0, "box_xyxy": [1, 2, 3, 4], "score": 0.5},
                                {"frame": 1, "track": 9, "box_xyxy": [0, 0, 8, 9]}]))
    boxes = read_boxes(path)
    assert boxes.frame_N.tolist() == [1, 3] and boxes.score_N.tolist() == [1.0, 0.5]
    path.write_text(json.dumps([{"frame": 0, "track": 0, "bbox": [1, 2, 3, 4]}]))
    with pytest.raises(ValueError, match="box 0: expected an object with frame, track, box_xyxy"):
        read_boxes(path)


def phalp_results():
    """PHALP's track.py results layout: per frame name, bbox [x0, y0, w, h]; tracked_time > 0 = extrapolated."""
    return {
        "out/img_10.jpg": {"time": 1, "tid": [5, 6], "bbox": [np.array([10., 20., 30., 40.]), np.array([0., 0., 5., 5.])],
                           "tracked_time": [0, 2], "conf": [0.9, 0.8], "smpl": [{"betas": np.zeros(10)}] * 2},
        "out/img_9.jpg": {"time": 0, "tid": [5], "bbox": [np.array([11., 21., 30., 40.])], "tracked_time": [0],
                          "conf": [0.7], "smpl": [{"betas": np.zeros(10)}]},
    }


@pytest.mark.parametrize("compress", [0, 3])
def test_phalp_results_written_by_joblib(tmp_path, compress):
    path = tmp_path / "demo_video.pkl"
    joblib.dump(phalp_results(), path, compress=compress)  # PHALP writes with compress=3
    boxes = read_boxes(path)
    assert boxes.frame_N.tolist() == [0, 1] and boxes.track_N.tolist() == [5, 5]  # the extrapolated row is left out
    np.testing.assert_allclose(boxes.box_xyxy_N4, [[11, 21, 41, 61], [10, 20, 40, 60]])
    np.testing.assert_allclose(boxes.score_N, [0.7, 0.9])


def test_phalp_custom_boxes_in_natural_frame_order(tmp_path):
    path = tmp_path / "custom.pkl"
    entries = {"f10.jpg": {"gt_bbox": np.array([[1., 2., 3., 4.]]), "extra_data": {"gt_class": [0], "gt_track_id": [3]}},
               "f9.jpg": {"gt_bbox": np.array([[5., 6., 7., 8.], [0., 0., 1., 1.]]),
                          "extra_data": {"gt_class": [0, 0], "gt_track_id": [3, 4]}}}
    path.write_bytes(pickle.dumps(entries))
    boxes = read_boxes(path)
    assert boxes.frame_N.tolist() == [0, 0, 1] and boxes.track_N.tolist() == [3, 4, 3]
    np.testing.assert_allclose(boxes.box_xyxy_N4[2], [1, 2, 3, 4])


def test_vibe_output_centre_boxes(tmp_path):
    path = tmp_path / "vibe_output.pkl"
    joblib.dump({1: {"bboxes": np.array([[50., 60., 20., 20.], [52., 60., 20., 20.]]), "frame_ids": np.array([4, 5]),
                     "pose": np.zeros((2, 72))}}, path)
    boxes = read_boxes(path)
    assert boxes.frame_N.tolist() == [4, 5] and boxes.track_N.tolist() == [1, 1]
    np.testing.assert_allclose(boxes.box_xyxy_N4, [[40, 50, 60, 70], [42, 50, 62, 70]])


def test_a_pickle_that_carries_code_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "boxes.pkl"
    path.write_bytes(pickle.dumps({"f0": {"tid": [0], "bbox": [CodePayload(marker)]}}))
    with pytest.raises(ValueError, match="asks to load builtins.exec"):
        read_boxes(path)
    assert not marker.exists()


def test_unknown_suffix_and_layout_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"ends in '.txt'; give one of .csv, .json"):
        (tmp_path / "b.txt").write_text("x")
        read_boxes(tmp_path / "b.txt")
    (tmp_path / "b.pkl").write_bytes(pickle.dumps({"a": {"pose": 1}}))
    with pytest.raises(ValueError, match="expected PHALP's"):
        read_boxes(tmp_path / "b.pkl")
    with pytest.raises(FileNotFoundError, match="boxes file not found"):
        read_boxes(tmp_path / "none.csv")

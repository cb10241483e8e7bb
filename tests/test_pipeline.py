"""The Ray Data frame-pair pipeline: windows, decoders, pairs against VideoPairs, bad input.

The fixture writes its own small benchmark folder (VP9 WebM clips of a smooth moving texture, boxes,
manifest; docs/data_format.md) in well under a second, so no renderer is needed.
"""

import shutil

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymotion.data.crops import IMAGENET_MEAN, IMAGENET_STD
from raymotion.data.decode import read_video_dali_cpu, read_video_pyav, read_video_window
from raymotion.data.manifest import pair_windows, window_pairs

SIZE = 64
CLIP_FRAMES = (10, 7, 12)


def write_clip(path, num_frames, seed):
    """A VP9 clip of a blurred-noise texture (like the benchmark's bodies) that drifts 1 px per frame."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (SIZE + 40, SIZE + 40, 3), dtype=np.uint8), (0, 0), 1.5)
    path.parent.mkdir(parents=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=30)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for t in range(num_frames):
            frame = np.ascontiguousarray(texture[t: t + SIZE, 2 * t: 2 * t + SIZE])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_dataset(root):
    rows = []
    for i, frames in enumerate(CLIP_FRAMES):
        clip_id = f"video_{i:05d}"
        write_clip(root / "video" / clip_id / "video.webm", frames, seed=i)
        t = np.arange(frames, dtype=np.float32)
        boxes = np.stack([12 + t, 10 + 0.5 * t, 40 + t, 50 + 0.5 * t], axis=1)
        pq.write_table(pa.table({"clip_id": [clip_id] * frames, "frame": np.arange(frames),
                                 "box_xyxy": pa.FixedSizeListArray.from_arrays(boxes.ravel(), 4)}),
                       root / "video" / clip_id / "labels.parquet")
        rows.append({"clip_id": clip_id, "path": f"video/{clip_id}/video.webm",
                     "labels_path": f"video/{clip_id}/labels.parquet", "flow_path": "", "frames": frames,
                     "fps": 30.0, "width": SIZE, "height": SIZE, "subject": i, "motion": "drift", "split": "video"})
    pq.write_table(pa.Table.from_pylist(rows), root / "manifest.parquet")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("pairs"))


# ---- windows (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize("gap,window", [(1, 4), (2, 5), (1, 16), (3, 4)])
def test_windows_hold_every_pair_exactly_once(gap, window):
    rows = [{"clip_id": f"c{i}", "path": "", "labels_path": "", "frames": f, "width": 8, "height": 8, "split": "video"}
            for i, f in enumerate((1, 2, 5, 13, 32))] + [{"clip_id": "l", "path": "", "labels_path": "", "frames": 9,
                                                          "width": 8, "height": 8, "split": "labelled"}]
    windows = pair_windows(rows, split="video", gap=gap, window=window)
    pairs = [(w["clip_index"], t) for w in windows for t in window_pairs(w, gap=gap)]
    expected = [(i, t) for i, row in enumerate(rows[:5]) for t in range(row["frames"] - gap)]
    assert sorted(pairs) == expected  # complete, and no pair twice
    for w in windows:
        assert w["first_frame"] + w["num_frames"] <= w["clip_frames"] and w["num_frames"] <= window
    decoded = sum(w["num_frames"] for w in windows)
    used = sum(row["frames"] for row in rows[:5] if row["frames"] > gap)
    # Each window after a clip's first re-decodes gap frames: at most gap / (window - gap) extra per frame.
    assert decoded / used <= 1 + gap / (window - gap)


def test_gpu_shares_are_refused_where_the_stage_cannot_use_them_or_needs_one():
    """The pipeline takes its GPU shares as given (scaling.decode_gpus / scaling.flow_gpus), never from a
    cluster snapshot; what it refuses, by argument, is listed by stage_gpu_problems (also used by the plan)."""
    from raymotion.data.pipeline import stage_gpu_problems

    cases = [  # decoder, decode_gpus, flow, flow.device, flow_gpus -> the arguments at fault
        ("auto", 0.0, "dis", "auto", 0.0, []), ("auto", 0.25, "raft_small", "auto", 0.5, []),
        ("dali_mixed", 1.0, "dali_of", "auto", 2.0, []), ("auto", 0.0, "raft_large", "auto", 0.0, []),
        ("auto", 0.0, None, "auto", 0.0, []),
        ("dali_mixed", 0.0, "dis", "auto", 0.0, ["decode_gpus"]), ("cpu", 0.5, "dis", "auto", 0.0, ["decode_gpus"]),
        ("auto", 1.5, "dis", "auto", 0.0, ["decode_gpus"]), ("auto", 0.0, "dali_of", "auto", 0.0, ["flow_gpus"]),
        ("auto", 0.0, "dali_of", "cpu", 0.0, ["flow_gpus"]), ("auto", 0.0, "raft_small", "cuda", 0.0, ["flow_gpus"]),
        ("auto", 0.0, "dis", "auto", 1.0, ["flow_gpus"]), ("auto", 0.0, "raft_small", "cpu", 0.5, ["flow_gpus"]),
        ("auto", 0.0, None, "auto", 0.5, ["flow_gpus"]),
    ]
    for decoder, decode_gpus, flow, device, flow_gpus, expected in cases:
        problems = stage_gpu_problems(decoder=decoder, decode_gpus=decode_gpus, flow=flow, flow_device=device,
                                      flow_gpus=flow_gpus)
        assert [name for name, _, _ in problems] == expected, (decoder, decode_gpus, flow, device, flow_gpus, problems)


def test_windows_reject_bad_arguments():
    rows = [{"clip_id": "c", "path": "", "labels_path": "", "frames": 5, "width": 8, "height": 8, "split": "video"}]
    with pytest.raises(ValueError, match="window=2 must be > gap=2"):
        pair_windows(rows, split="video", gap=2, window=2)
    with pytest.raises(ValueError, match="choose one of: video"):
        pair_windows(rows, split="test", gap=1, window=4)


# ---- decoders (no Ray) ------------------------------------------------------------------------


def test_dali_cpu_decodes_vp9_like_pyav(dataset):
    """Same frames up to colour conversion. Measured on these clips: luma (OpenCV gray) differs by at most
    ~5 levels (mean ~1.3: a small range/matrix offset); RGB by mean ~3-7 levels because the two upsample
    the 4:2:0 chroma differently (on the 224 px benchmark: gray max 7, mean 1.3; RGB mean 6.5)."""
    for clip in ("video_00000", "video_00002"):
        path = dataset / "video" / clip / "video.webm"
        pyav_THW3, dali_THW3 = read_video_pyav(path), read_video_dali_cpu(path)
        assert pyav_THW3.shape == dali_THW3.shape
        gray = [np.abs(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(int) - cv2.cvtColor(b, cv2.COLOR_RGB2GRAY))
                for a, b in zip(pyav_THW3, dali_THW3)]
        assert max(g.max() for g in gray) <= 8
        assert np.mean(gray) <= 2.0
        assert np.abs(pyav_THW3.astype(int) - dali_THW3).mean() <= 8.0


@pytest.mark.parametrize("backend", ["pyav", "dali_cpu"])
def test_window_decoding_matches_whole_clip_decoding(dataset, backend):
    path = dataset / "video" / "video_00002" / "video.webm"
    whole = read_video_pyav(path) if backend == "pyav" else read_video_dali_cpu(path)
    frames, decoded = read_video_window(path, first_frame=5, num_frames=4, backend=backend)
    np.testing.assert_array_equal(frames, whole[5:9])
    assert decoded == 9  # one keyframe (frame 0): frames 0..4 are decoded to reach frame 5


# ---- the Ray pipeline -------------------------------------------------------------------------


def collect(ds):
    rows = ds.take_all()
    return {(int(r["clip_index"]), int(r["t"])): r for r in rows}


@pytest.mark.ray
@pytest.mark.parametrize("fuse", [True, False], ids=["decode+flow in one stage", "decode and flow stages"])
@pytest.mark.parametrize("frames_per_item", [2, 3], ids=["pairs", "3-frame windows"])
def test_pipeline_pairs_are_complete_and_match_video_pairs(dataset, ray_local, tmp_path, fuse, frames_per_item):
    """Pairs (t, t + gap), or model.film's windows (t - gap, t, t + gap) with the last pair's flow."""
    from raymotion.data.video_pairs import VideoPairs
    from raymotion.data.pipeline import PipelineReport, build_pair_dataset

    root = shutil.copytree(dataset, tmp_path / "copy")  # VideoPairs caches flow beside the clips
    reference = VideoPairs(root, crop_size=32, bbox_scale=1.3, flow="dis", gap=2, frames_per_item=frames_per_item)
    report = PipelineReport()
    ds = build_pair_dataset(root, crop_size=32, bbox_scale=1.3, gap=2, window=5, frames_per_item=frames_per_item,
                            decoder="cpu", fuse=fuse, report=report)
    pairs = collect(ds)
    assert len(pairs) == len(reference) == sum(f - 2 * (frames_per_item - 1) for f in CLIP_FRAMES)
    mean = np.asarray(IMAGENET_MEAN)[:, None, None]
    std = np.asarray(IMAGENET_STD)[:, None, None]
    frames = ("0", "1", "2")[3 - frames_per_item:]
    for i in range(len(reference)):
        item = reference[i]
        row = pairs[(item["clip_index"], item["t"])]
        for frame in frames:
            expected = (item[f"image{frame}"].numpy() * std + mean) * 255.0
            np.testing.assert_allclose(row[f"image{frame}"].transpose(2, 0, 1), expected, atol=1e-3)
            np.testing.assert_allclose(row[f"crop{frame}"], item[f"crop{frame}"].numpy(), rtol=1e-6)
        for key in ("flow_fwd", "flow_bwd"):  # VideoPairs stores flow as float16
            np.testing.assert_allclose(row[key], item[key].numpy(), atol=2e-2, rtol=1e-3)
    summary = report.summary()
    assert summary["pairs"] == len(pairs) and summary["skipped"] == []
    assert summary["decoded_frames"] > summary["used_frames"]  # windows of 5 start mid-clip (one keyframe)


@pytest.mark.ray
def test_pipeline_auto_decoder_uses_dali_for_vp9(dataset, ray_local):
    from raymotion.data.pipeline import PipelineReport, build_pair_dataset

    report = PipelineReport()
    pairs = collect(build_pair_dataset(dataset, crop_size=32, bbox_scale=1.3, window=16, flow=None, report=report))
    assert len(pairs) == sum(f - 1 for f in CLIP_FRAMES)
    summary = report.summary()
    assert summary["backends"] == {"dali_cpu": len(CLIP_FRAMES)}
    assert summary["decoded_frames"] == summary["used_frames"] == sum(CLIP_FRAMES)  # one window per clip
    # train.video_clips: the first N clips only, as VideoPairs(max_clips=N)
    first_two = collect(build_pair_dataset(dataset, crop_size=32, bbox_scale=1.3, window=16, flow=None, max_clips=2))
    assert sorted(first_two) == sorted(k for k in pairs if k[0] in sorted({c for c, _ in pairs})[:2])
    assert len(first_two) == sum(f - 1 for f in CLIP_FRAMES[:2])


@pytest.mark.ray
def test_truncated_video_fails_by_name_or_is_skipped_and_counted(dataset, ray_local, tmp_path):
    from raymotion.data.pipeline import PipelineReport, build_pair_dataset

    root = shutil.copytree(dataset, tmp_path / "copy")
    video = root / "video" / "video_00001" / "video.webm"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    kwargs = {"crop_size": 32, "bbox_scale": 1.3, "window": 16, "flow": None, "decoder": "cpu"}
    with pytest.raises(Exception, match="video_00001/video.webm"):
        build_pair_dataset(root, bad_input="fail", **kwargs).take_all()
    report = PipelineReport()
    pairs = collect(build_pair_dataset(root, bad_input="skip", report=report, **kwargs))
    assert {clip for clip, _ in pairs} == {0, 2}
    assert len(pairs) == (CLIP_FRAMES[0] - 1) + (CLIP_FRAMES[2] - 1)
    skipped = report.summary()["skipped"]
    assert len(skipped) == 1 and "video_00001" in skipped[0]


@pytest.mark.ray
def test_precompute_flow_on_a_bad_video_prints_the_cause_last(dataset, ray_local, tmp_path, capsys):
    """Before: the cause sat 10 lines above Ray's "UDF failed" ending, and the command exited 1 (issue 18)."""
    from raymotion.cli import main

    root = shutil.copytree(dataset, tmp_path / "copy")
    video = root / "video" / "video_00001" / "video.webm"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    assert main(["precompute-flow", "--set", f"data.root={root}", "--set", "data.crop_size=32",
                 "--set", "flow.estimator=farneback"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("raymotion precompute-flow: ") and "video_00001/video.webm" in last


@pytest.mark.ray
def test_box_outside_the_frame_fails_naming_file_and_frame(dataset, ray_local, tmp_path):
    from raymotion.data.pipeline import build_pair_dataset

    root = shutil.copytree(dataset, tmp_path / "copy")
    labels = root / "video" / "video_00000" / "labels.parquet"
    table = pq.read_table(labels).to_pydict()
    table["box_xyxy"][3] = [SIZE + 5.0, 0.0, SIZE + 20.0, 10.0]
    pq.write_table(pa.table({"clip_id": table["clip_id"], "frame": table["frame"],
                             "box_xyxy": pa.array(table["box_xyxy"], pa.list_(pa.float32(), 4))}), labels)
    with pytest.raises(Exception, match="video_00000/labels.parquet frame 3"):
        build_pair_dataset(root, crop_size=32, bbox_scale=1.3, window=16, flow=None, decoder="cpu").take_all()

"""Image-sequence clips (docs/data_format.md): a folder or a .txt list of JPEG/PNG frames.

The readers must see the same frames whether a clip is a video or its frames as lossless PNGs: the tiny
benchmark's videos are decoded with PyAV, written as PNGs, and every reader's rows are compared exactly with the
video's. Also: windows read only their own files, frames of mixed sizes are cropped at their own size, and a
missing or corrupt frame follows ``data.bad_input`` with the file named.
"""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymotion.config import ConfigError, check_values
from raymotion.data.decode import backend_for, read_image_window, read_video_pyav
from raymotion.data.frames import LabelledFrames
from raymotion.data.manifest import MANIFEST, clip_frame_paths, read_manifest
from raymotion.data.video_pairs import VideoPairs

CROP_SIZE = 32
BBOX_SCALE = 1.3


def write_png(path: Path, image_HW3: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image_HW3[..., ::-1]))


def images(num: int, *, height: int = 12, width: int = 20, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height + t, width + 2 * t, 3), dtype=np.uint8) for t in range(num)]


def png_benchmark(source: Path, out: Path, *, pad: dict[str, int] | None = None) -> Path:
    """A copy of a benchmark whose clips are the PNG frames of its videos (decoded with PyAV; the videos are
    removed): 'video' clips as folders, 'labelled' clips as .txt lists relative to the data folder, the others
    as .txt lists of absolute paths. ``pad`` {clip_id: pixels}: that clip's frame t gets t * pixels of black on
    the right and bottom (sizes differ per frame; the manifest says 0 x 0)."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("*.webm", "*.mp4", "flow_*.npz"))
    rows = read_manifest(source).to_pylist()
    for row in rows:
        frames_THW3 = read_video_pyav(source / row["path"])
        folder = Path(row["split"]) / row["clip_id"] / "frames"
        step = (pad or {}).get(row["clip_id"], 0)
        names = []
        for t, frame_HW3 in enumerate(frames_THW3):
            padded = np.pad(frame_HW3, ((0, t * step), (0, t * step), (0, 0)))
            write_png(out / folder / f"img_{t}.png", padded)
            names.append(folder / f"img_{t}.png")
        if step:
            row["width"] = row["height"] = 0
        if row["split"] == "video":
            row["path"] = str(folder)
        else:
            listed = names if row["split"] == "labelled" else [out / name for name in names]
            row["path"] = str(Path(row["split"]) / row["clip_id"] / "frames.txt")
            (out / row["path"]).write_text("".join(f"{name}\n" for name in listed))
    pq.write_table(pa.Table.from_pylist(rows), out / MANIFEST)
    return out


# ---- the data layer (no Ray, no renderer) ------------------------------------------------------


def test_clip_frame_paths_of_a_folder_a_list_and_a_video(tmp_path):
    folder = tmp_path / "clip"
    for name in ("img_10.png", "img_2.PNG", "img_1.jpg", "notes.txt", "img_3.jpeg"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(b"")
    row = {"clip_id": "c", "path": "clip", "frames": 4}
    assert [p.name for p in clip_frame_paths(tmp_path, row)] == ["img_1.jpg", "img_2.PNG", "img_3.jpeg", "img_10.png"]
    (tmp_path / "list.txt").write_text(f"clip/img_10.png\n\n{tmp_path / 'clip' / 'img_1.jpg'}\n")
    listed = clip_frame_paths(tmp_path, {"clip_id": "c", "path": "list.txt", "frames": 2})
    assert listed == [tmp_path / "clip" / "img_10.png", tmp_path / "clip" / "img_1.jpg"]
    absolute = {"clip_id": "c", "path": str(tmp_path / "list.txt"), "frames": 2}  # an absolute row path
    assert clip_frame_paths("/nonexistent", absolute) == [Path("/nonexistent/clip/img_10.png"), tmp_path / "clip" / "img_1.jpg"]
    assert clip_frame_paths(tmp_path, {"clip_id": "c", "path": "video.webm", "frames": 4}) is None
    with pytest.raises(ValueError, match=r"clip c: .*clip holds 4 frames .* manifest row says 5"):
        clip_frame_paths(tmp_path, {**row, "frames": 5})
    with pytest.raises(FileNotFoundError, match="frame list of clip c not found: .*missing.txt"):
        clip_frame_paths(tmp_path, {"clip_id": "c", "path": "missing.txt", "frames": 1})


def test_backend_for_each_decoder_and_clip_kind():
    cases = {  # (decoder, images, codec, cuda) -> backend
        ("auto", True, None, False): "dali_cpu_images", ("auto", True, None, True): "dali_mixed_images",
        ("auto", False, "vp9", False): "dali_cpu", ("auto", False, "h264", False): "pyav",
        ("auto", False, "h264", True): "dali_mixed", ("cpu", True, None, True): "opencv",
        ("cpu", False, None, True): "pyav", ("dali_cpu", True, None, False): "dali_cpu_images",
        ("dali_mixed", False, None, False): "dali_mixed",
    }
    for (decoder, is_images, codec, cuda), expected in cases.items():
        assert backend_for(decoder, images=is_images, codec=codec, cuda_available=cuda) == expected
    with pytest.raises(ValueError, match=r"decoder='nvjpeg' \(data.decoder\); choose one of: auto, cpu, dali_cpu, dali_mixed"):
        backend_for("nvjpeg", images=True, codec=None, cuda_available=False)
    with pytest.raises(ConfigError, match="data.decoder"):
        check_values({"data.decoder": "pyav"})
    # The resource plan checks data.decoder against the decode actors' GPU share, before anything starts.
    from raymotion.config import load_config
    from raymotion.train.plan import pipeline_groups

    with pytest.raises(ConfigError, match="scaling.decode_gpus=0.0 .*decoder='dali_mixed'"):
        pipeline_groups(load_config(overrides={"data.decoder": "dali_mixed"}))
    groups = pipeline_groups(load_config(overrides={"data.decoder": "dali_mixed", "scaling.decode_gpus": 0.25}))
    assert groups[0].gpus == 0.25


@pytest.mark.parametrize("backend", ["opencv", "dali_cpu_images"])
def test_a_window_reads_only_its_files_at_their_own_sizes(tmp_path, backend):
    frames = images(6)
    paths = [tmp_path / f"f{t}.png" for t in range(6)]
    for path, frame in zip(paths, frames):
        write_png(path, frame)
    paths[0].write_bytes(b"not a png")  # outside the window: never read
    paths[5].unlink()
    window, decoded, bad = read_image_window(paths, first_frame=2, num_frames=3, backend=backend, bad_input="fail")
    assert decoded == 3 and bad == {}
    for got, expected in zip(window, frames[2:5]):
        np.testing.assert_array_equal(got, expected)  # PNG is lossless; sizes differ per frame
    with pytest.raises(ValueError, match=r"frames 4\.\.6 asked of an image sequence of 6 frames"):
        read_image_window(paths, first_frame=4, num_frames=3, backend=backend, bad_input="fail")


@pytest.mark.parametrize("backend", ["opencv", "dali_cpu_images"])
def test_a_missing_or_corrupt_frame_fails_by_name_or_is_skipped_and_counted(tmp_path, backend):
    paths = [tmp_path / f"f{t}.png" for t in range(5)]
    for path, frame in zip(paths, images(5)):
        write_png(path, frame)
    paths[1].write_bytes(paths[1].read_bytes()[:60])  # truncated
    paths[3].unlink()
    with pytest.raises(ValueError, match=rf"frame 1 \({paths[1]}\) cannot be decoded .*data.bad_input=skip"):
        read_image_window(paths, first_frame=0, num_frames=3, backend=backend, bad_input="fail")
    with pytest.raises(FileNotFoundError, match=rf"frame 3 \({paths[3]}\) is missing; restore the file"):
        read_image_window(paths, first_frame=2, num_frames=3, backend=backend, bad_input="fail")
    frames, decoded, bad = read_image_window(paths, first_frame=0, num_frames=5, backend=backend, bad_input="skip")
    assert decoded == 3 and [f is None for f in frames] == [False, True, False, True, False]
    assert sorted(bad) == [1, 3] and str(paths[1]) in bad[1] and str(paths[3]) in bad[3]
    assert bad[1].startswith("skipped frame 1")


# ---- every reader sees the video's frames (the tiny benchmark as PNG clips) --------------------


@pytest.fixture(scope="module")
def png_root(tiny_benchmark, tmp_path_factory):
    return png_benchmark(tiny_benchmark, tmp_path_factory.mktemp("png") / "data")


@pytest.fixture(scope="module")
def mixed_root(tiny_benchmark, tmp_path_factory):
    """PNG clips whose frames each have their own size: every clip padded, 7 px more per frame."""
    rows = read_manifest(tiny_benchmark).to_pylist()
    return png_benchmark(tiny_benchmark, tmp_path_factory.mktemp("mixed") / "data",
                         pad={row["clip_id"]: 7 for row in rows})


@pytest.mark.render
def test_in_memory_datasets_read_png_clips_exactly_as_their_videos(tiny_benchmark, png_root, mixed_root):
    kwargs = {"split": "labelled", "crop_size": CROP_SIZE, "bbox_scale": BBOX_SCALE}
    video = LabelledFrames(tiny_benchmark, decoder="cpu", **kwargs)
    for root, decoder in ((png_root, "cpu"), (png_root, "dali_cpu"), (mixed_root, "auto")):
        frames = LabelledFrames(root, decoder=decoder, **kwargs)
        np.testing.assert_array_equal(frames._crops_NHW3, video._crops_NHW3)  # black padding crops as black border
        assert all(np.array_equal(frames._labels[k], video._labels[k]) for k in video._labels)
    pair_kwargs = {"crop_size": CROP_SIZE, "bbox_scale": BBOX_SCALE, "flow": "farneback", "max_clips": 2}
    video_pairs = VideoPairs(tiny_benchmark, **pair_kwargs)
    for root in (png_root, mixed_root):
        pairs = VideoPairs(root, decoder="dali_cpu", **pair_kwargs)
        np.testing.assert_array_equal(pairs._crops_NHW3, video_pairs._crops_NHW3)
        np.testing.assert_array_equal(pairs._flow_fwd_PSS2, video_pairs._flow_fwd_PSS2)
        row = next(r for r in read_manifest(root).to_pylist() if r["split"] == "video")
        # The flow cache of an image clip lives in <data>/<split>/<clip_id>/, never beside its frames.
        assert list((root / row["split"] / row["clip_id"]).glob("flow_farneback_*.npz"))


@pytest.mark.render
def test_a_bad_frame_of_an_image_clip_is_named_or_left_out_of_in_memory_datasets(png_root, tmp_path):
    root = shutil.copytree(png_root, tmp_path / "copy")
    row = next(r for r in read_manifest(root).to_pylist() if r["split"] == "labelled")
    paths = clip_frame_paths(root, row)
    paths[1].write_bytes(b"\x89PNG garbage")
    kwargs = {"split": "labelled", "crop_size": CROP_SIZE, "bbox_scale": BBOX_SCALE}
    with pytest.raises(ValueError, match=rf"frame 1 \({paths[1]}\) cannot be decoded"):
        LabelledFrames(root, **kwargs)
    whole = LabelledFrames(png_root, **kwargs)
    frames = LabelledFrames(root, bad_input="skip", **kwargs)
    assert len(frames) == len(whole) - 1
    assert len(frames.skipped) == 1 and str(paths[1]) in frames.skipped[0]
    # Video pairs: the two pairs that use a bad frame are left out, the others kept.
    row = next(r for r in read_manifest(root).to_pylist() if r["split"] == "video")
    paths = clip_frame_paths(root, row)
    paths[2].write_bytes(b"")
    pair_kwargs = {"crop_size": CROP_SIZE, "bbox_scale": BBOX_SCALE, "flow": "farneback", "max_clips": 1}
    with pytest.raises(ValueError, match=rf"frame 2 \({paths[2]}\) cannot be decoded"):
        VideoPairs(root, decoder="dali_cpu", **pair_kwargs)
    pairs = VideoPairs(root, bad_input="skip", decoder="dali_cpu", **pair_kwargs)
    assert sorted(int(pairs[i]["t"]) for i in range(len(pairs))) == [0, 3, 4]  # 6 frames: pairs 1-2, 2-3 gone
    assert len(pairs.skipped) == 1 and str(paths[2]) in pairs.skipped[0]


# ---- the Ray Data pipelines ---------------------------------------------------------------------


def pair_rows(root, report=None, **kwargs):
    from raymotion.data.pipeline import build_pair_dataset

    rows = build_pair_dataset(root, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, window=4, flow=None, report=report,
                              **kwargs).take_all()
    return {(int(r["clip_index"]), int(r["t"])): r for r in rows}


def labelled_rows(root, **kwargs):
    from raymotion.data.labelled_pipeline import build_labelled_dataset

    rows = build_labelled_dataset(root, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, fraction=1.0, fraction_seed=0,
                                  augment=False, seed=0, **kwargs).take_all()
    return {(int(r["clip_index"]), int(r["frame"])): r for r in rows}


def assert_same_rows(rows, expected):
    assert sorted(rows) == sorted(expected)
    for key, row in expected.items():
        for name, value in row.items():
            np.testing.assert_array_equal(rows[key][name], value, err_msg=f"{key} {name}")


@pytest.mark.ray
@pytest.mark.render
def test_pipelines_give_png_clips_the_rows_of_their_videos(tiny_benchmark, png_root, mixed_root, ray_local):
    from raymotion.data.pipeline import PipelineReport

    video = pair_rows(tiny_benchmark, decoder="cpu")
    for root, decoder, backend in ((png_root, "cpu", "opencv"), (png_root, "auto", "dali_cpu_images"),
                                   (mixed_root, "dali_cpu", "dali_cpu_images")):
        report = PipelineReport()
        assert_same_rows(pair_rows(root, decoder=decoder, report=report), video)
        summary = report.summary()
        assert list(summary["backends"]) == [backend]
        # Windows of 4 overlap by the gap: images re-read only those, no keyframe run-up as a video's windows.
        assert summary["decoded_frames"] == summary["used_frames"]
    labelled = labelled_rows(tiny_benchmark, decoder="cpu")
    assert_same_rows(labelled_rows(png_root, decoder="auto"), labelled)
    assert_same_rows(labelled_rows(mixed_root, decoder="cpu"), labelled)


@pytest.mark.ray
@pytest.mark.render
def test_a_bad_frame_fails_the_pipeline_by_name_or_drops_its_window(png_root, ray_local, tmp_path):
    from raymotion.data.pipeline import PipelineReport

    root = shutil.copytree(png_root, tmp_path / "copy")
    index, row = next((i, r) for i, r in enumerate(read_manifest(root).to_pylist()) if r["split"] == "video")
    corrupt = clip_frame_paths(root, row)[5]
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(Exception, match=rf"frame 5 \({corrupt}\) cannot be decoded"):
        pair_rows(root, decoder="auto")
    report = PipelineReport()
    rows = pair_rows(root, decoder="cpu", bad_input="skip", report=report)
    skipped = report.summary()["skipped"]
    # Windows of 4 with gap 1: frames 0-3, 3-5 of a 6-frame clip; frame 5 is in the second only.
    assert len(skipped) == 1 and str(corrupt) in skipped[0] and "frames 3..5 of clip " + row["clip_id"] in skipped[0]
    assert sorted(t for (c, t) in rows if c == index) == [0, 1, 2]
    # The labelled pipeline leaves out the frame only.
    index, row = next((i, r) for i, r in enumerate(read_manifest(root).to_pylist()) if r["split"] == "labelled")
    bad = clip_frame_paths(root, row)[1]
    bad.write_bytes(bad.read_bytes()[:40])
    whole = labelled_rows(png_root, decoder="cpu")
    report = PipelineReport()
    rows = labelled_rows(root, decoder="auto", bad_input="skip", report=report)
    assert sorted(rows) == sorted(key for key in whole if key != (index, 1))
    skipped = report.summary()["skipped"]
    assert len(skipped) == 1 and str(bad) in skipped[0]


@pytest.mark.render
def test_a_frame_of_another_size_than_the_manifest_names_its_file(png_root, tmp_path):
    root = shutil.copytree(png_root, tmp_path / "copy")
    rows = read_manifest(root).to_pylist()
    row = next(r for r in rows if r["split"] == "labelled")
    frame = clip_frame_paths(root, row)[2]
    image = cv2.imread(str(frame))
    cv2.imwrite(str(frame), np.pad(image, ((0, 4), (0, 0), (0, 0))))
    with pytest.raises(ValueError, match=rf"clip {row['clip_id']}: the manifest says width=96, height=96, but "
                                         rf"{frame} decodes to 96x100 frames"):
        LabelledFrames(root, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE)


@pytest.mark.render
def test_a_pair_store_key_changes_when_a_frame_file_is_rewritten(png_root, tmp_path):
    import os

    from raymotion.config import FlowConfig
    from raymotion.data.flow_store import PairSpec, store_key

    root = shutil.copytree(png_root, tmp_path / "copy")
    spec = PairSpec(data_root=str(root), crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, gap=1, flow="dis",
                    flow_config=FlowConfig())
    before = store_key(spec)["benchmark"]
    row = next(r for r in read_manifest(root).to_pylist() if r["split"] == "video")
    frame = clip_frame_paths(root, row)[3]
    stat = frame.stat()
    frame.write_bytes(frame.read_bytes())  # the same size; only the modification time tells
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert store_key(spec)["benchmark"] != before


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_nvjpeg_decodes_frames_as_the_cpu_decoders(tmp_path):
    frames = images(4, height=40, width=48)
    pngs = [tmp_path / f"f{t}.png" for t in range(4)]
    jpegs = [tmp_path / f"f{t}.jpg" for t in range(4)]
    for png, jpeg, frame in zip(pngs, jpegs, frames):
        write_png(png, frame)
        cv2.imwrite(str(jpeg), np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded, _, _ = read_image_window(pngs, first_frame=0, num_frames=4, backend="dali_mixed_images", bad_input="fail")
    for got, expected in zip(decoded, frames):
        np.testing.assert_array_equal(got, expected)  # lossless
    gpu, _, _ = read_image_window(jpegs, first_frame=0, num_frames=4, backend="dali_mixed_images", bad_input="fail")
    cpu, _, _ = read_image_window(jpegs, first_frame=0, num_frames=4, backend="opencv", bad_input="fail")
    for got, expected in zip(gpu, cpu):  # JPEG decoders may round the inverse DCT and upsampling differently
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected).mean() < 2.0


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error without CUDA")
def test_nvjpeg_without_a_gpu_is_refused_naming_the_alternatives(tmp_path):
    path = tmp_path / "f.png"
    write_png(path, images(1)[0])
    with pytest.raises(ValueError, match="image decoder on device 'mixed'.*data.decoder=dali_cpu or cpu"):
        read_image_window([path], first_frame=0, num_frames=1, backend="dali_mixed_images", bad_input="skip")

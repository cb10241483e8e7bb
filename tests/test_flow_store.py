"""The pair store: precomputed rows equal streamed ones, reuse, interrupted writes, bad folders, a store on
S3; the CLI.

Uses the small VP9 benchmark of tests/test_pipeline.py (3 clips of 10, 7 and 12 frames, 64 px) and a local
Ray with 4 logical CPUs (a decode actor and a flow actor leave room for Ray Data's tasks). The S3 test
server (moto, ``s3_server``) starts before that Ray, so Ray's workers inherit its AWS_* variables and
reach it, as the nodes of a cluster read their own.
"""

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from raymotion.config import ConfigError, FlowConfig, load_config
from test_pipeline import CLIP_FRAMES, write_dataset

pytestmark = pytest.mark.usefixtures("s3_server")  # before ray_local starts Ray (module doc)

STORE_ARGS = {"crop_size": 32, "bbox_scale": 1.3, "gap": 1, "flow": "dis", "flow_config": FlowConfig()}
ALL_PAIRS = sum(f - 1 for f in CLIP_FRAMES)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("store_data"))


@pytest.fixture(scope="module")
def store(root, ray_local):
    from raymotion.data.flow_store import PairSpec, precompute_pairs

    return precompute_pairs(PairSpec(data_root=str(root), **STORE_ARGS), window=16)


def by_pair(dataset):
    return {(int(r["clip_index"]), int(r["t"])): r for r in dataset.take_all()}


def files_under(folder):
    """{relative path: (size, mtime_ns)} of every file under a local folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in Path(folder).rglob("*") if p.is_file()}


def a_part_file(store):
    """One Parquet file of a finished local store (all ALL_PAIRS rows at this size)."""
    return next(Path(store.folder.uri).glob("attempt-*/*.parquet"))


def batch_types(dataset):
    batch = next(iter(dataset.iter_batches(batch_size=4, batch_format="numpy")))
    return {name: (values.dtype, values.shape[1:]) for name, values in batch.items()}


@pytest.mark.ray
def test_precomputed_rows_equal_streamed_rows(root, store):
    from raymotion.data.flow_store import read_pairs
    from raymotion.data.pipeline import build_pair_dataset
    from raymotion.storage import StoragePath

    assert not store.reused and store.rows == ALL_PAIRS
    assert store.folder.parent == StoragePath(root / "pairs") and store.folder.name.startswith("dis_32px_gap1_all_")
    streamed = build_pair_dataset(root, window=16, **STORE_ARGS)
    stored = read_pairs(store.folder)
    assert batch_types(stored) == batch_types(streamed)  # what the training consumer receives
    expected, got = by_pair(streamed), by_pair(stored)
    assert sorted(got) == sorted(expected) and len(got) == ALL_PAIRS
    for pair, row in got.items():
        for key in ("image1", "image2", "crop1", "crop2"):
            np.testing.assert_array_equal(row[key], expected[pair][key])
        for key in ("flow_fwd", "flow_bwd"):  # stored as float16: exactly the streamed flow, rounded
            assert row[key].dtype == np.float32
            np.testing.assert_array_equal(row[key], expected[pair][key].astype(np.float16).astype(np.float32))
    done = json.loads((store.folder / "_DONE.json").read_text())
    assert done["rows"] == ALL_PAIRS and done["key"]["crop_size"] == 32 and done["key"]["max_clips"] is None
    assert done["pipeline"]["used_frames"] == sum(CLIP_FRAMES)
    # the layout: one attempt folder holding exactly the files _DONE.json lists, and _DONE.json
    (attempt,) = {name.split("/")[0] for name in done["files"]}
    assert re.fullmatch(r"attempt-.+-\d+-[0-9a-f]{8}", attempt)
    assert sorted(files_under(store.folder.uri)) == sorted(["_DONE.json", *done["files"]])


@pytest.mark.ray
def test_a_second_call_and_a_run_with_the_same_config_reuse_the_store(root, store):
    from raymotion.data.flow_store import PairSpec, precompute_for_config, precompute_pairs
    from raymotion.train.launch import video_datasets

    files = files_under(store.folder.uri)  # with their sizes and modification times
    # window and actors change how it is computed, not what: the same store
    again = precompute_pairs(PairSpec(data_root=str(root), **STORE_ARGS), window=64, flow_concurrency=2)
    assert again.reused and again.folder == store.folder and again.rows == store.rows
    cfg = load_config(overrides={"data.root": str(root), "data.crop_size": 32, "train.video_gap": 1,
                                 "data.video_source": "precomputed"})
    assert precompute_for_config(cfg).folder == store.folder
    assert video_datasets(cfg)["video"].count() == ALL_PAIRS
    assert files_under(store.folder.uri) == files
    # what defines the rows changes the store
    other = PairSpec(data_root=str(root), **{**STORE_ARGS, "gap": 2})
    from raymotion.data.flow_store import store_folder

    assert store_folder(other) != store.folder and store_folder(other).name.startswith("dis_32px_gap2_all_")


@pytest.mark.ray
def test_an_interrupted_write_is_never_read_and_is_recomputed(root, store, tmp_path, monkeypatch):
    from raymotion.data import flow_store
    from raymotion.data.flow_store import PairSpec, check_store, precompute_pairs, read_pairs, store_folder

    spec = PairSpec(data_root=str(root), max_clips=1, **STORE_ARGS)
    out = tmp_path / "stores"
    folder = store_folder(spec, out)
    assert folder.name.startswith("dis_32px_gap1_1clips_")

    def crash(*args):
        raise KeyboardInterrupt  # interrupted just before _DONE.json is written

    monkeypatch.setattr(flow_store, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        precompute_pairs(spec, out_dir=out, window=16)
    monkeypatch.undo()
    assert files_under(out) == {}  # its attempt folder was removed, nothing was published

    # A hard kill leaves the attempt folder: Parquet files, no _DONE.json.
    leftover = Path(folder.uri) / "attempt-host-1-deadbeef"
    leftover.mkdir(parents=True)
    shutil.copy(a_part_file(store), leftover)
    with pytest.raises(ValueError, match=re.escape(folder.uri) + ".*no _DONE.json"):
        read_pairs(folder)
    with pytest.warns(UserWarning, match="unfinished write.*" + re.escape(str(leftover))):
        result = precompute_pairs(spec, out_dir=out, window=16)
    assert not result.reused and result.folder == folder and result.rows == CLIP_FRAMES[0] - 1
    files = check_store(folder)["files"]
    assert files and not any(name.startswith(leftover.name + "/") for name in files)
    assert read_pairs(folder).count() == CLIP_FRAMES[0] - 1  # the leftover's ALL_PAIRS rows are not read
    assert leftover.is_dir()  # not ours to delete: another process may be writing it


@pytest.mark.ray
def test_a_bad_store_folder_fails_naming_it(root, store, tmp_path):
    from raymotion.data.flow_store import PairSpec, precompute_pairs, read_pairs, store_folder

    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        read_pairs(tmp_path / "nowhere")

    def broken(name, damage):
        folder = shutil.copytree(store.folder, tmp_path / name)
        damage(folder)
        return folder

    def lose_a_file(folder):
        next(folder.glob("attempt-*/*.parquet")).unlink()

    cases = {
        "no_done": (lambda f: (f / "_DONE.json").unlink(), "no _DONE.json"),
        "lost_file": (lose_a_file, "missing or unreadable"),
        "garbled": (lambda f: (f / "_DONE.json").write_text("{"), "unreadable"),
        "miscounted": (lambda f: (f / "_DONE.json").write_text(json.dumps(
            {**json.loads((f / "_DONE.json").read_text()), "rows": 3})), f"hold {ALL_PAIRS} rows, _DONE.json says 3"),
        "escaping": (lambda f: (f / "_DONE.json").write_text(json.dumps(
            {**json.loads((f / "_DONE.json").read_text()), "files": ["../no_done/_DONE.json"]})), "unreadable"),
    }
    for name, (damage, why) in cases.items():
        folder = broken(name, damage)
        with pytest.raises(ValueError, match=re.escape(str(folder)) + ".*" + re.escape(why)):
            read_pairs(folder)
    # a published store that lost a file is named, not silently recomputed over
    out = tmp_path / "out"
    spec = PairSpec(data_root=str(root), **STORE_ARGS)
    target = Path(shutil.copytree(store.folder, store_folder(spec, out)))
    lose_a_file(target)
    with pytest.raises(ValueError, match=re.escape(str(target)) + ".*missing or unreadable"):
        precompute_pairs(spec, out_dir=out, window=16)


@pytest.mark.ray
def test_a_store_on_s3_is_written_only_there_reused_and_reads_the_local_stores_rows(root, store, s3_server,
                                                                                      tmp_path, monkeypatch):
    from raymotion.data.flow_store import PairSpec, precompute_pairs, read_pairs, store_folder

    monkeypatch.chdir(tmp_path)  # an empty working directory: nothing may land there either
    prefix = f"stores-{uuid.uuid4().hex[:8]}"
    out = f"{s3_server.bucket_uri}/{prefix}"
    spec = PairSpec(data_root=str(root), max_clips=1, **STORE_ARGS)
    folder = store_folder(spec, out)
    assert not folder.is_local and folder.uri.startswith(f"{out}/dis_32px_gap1_1clips_")
    # an interrupted write in the bucket (Parquet files, no _DONE.json) is reported, never read
    leftover = folder / "attempt-host-1-deadbeef"
    (leftover / "part.parquet").write_bytes(a_part_file(store).read_bytes())
    local = files_under(root)

    with pytest.warns(UserWarning, match="unfinished write.*" + re.escape(leftover.uri)):
        written = precompute_pairs(spec, out_dir=out, window=16)
    assert not written.reused and written.folder == folder and written.rows == CLIP_FRAMES[0] - 1
    done = json.loads((folder / "_DONE.json").read_text())
    store_prefix = folder.uri.removeprefix(f"{s3_server.bucket_uri}/")
    keys = s3_server.keys(f"{prefix}/")
    assert f"{store_prefix}/_DONE.json" in keys and all(f"{store_prefix}/{name}" in keys for name in done["files"])
    assert not any(name.startswith(leftover.name + "/") for name in done["files"])
    assert files_under(root) == local and os.listdir(tmp_path) == []  # nothing written locally

    again = precompute_pairs(spec, out_dir=out, window=64)
    assert again.reused and again.folder == folder and again.rows == written.rows
    assert s3_server.keys(f"{prefix}/") == keys
    # the first clip's rows, as in the local store of all clips (same pipeline, same float16 rounding)
    got = by_pair(read_pairs(folder.uri))
    expected = {pair: row for pair, row in by_pair(read_pairs(store.folder)).items() if pair[0] == 0}
    assert sorted(got) == sorted(expected) and len(got) == CLIP_FRAMES[0] - 1
    for pair, row in got.items():
        for key in row:
            np.testing.assert_array_equal(row[key], expected[pair][key])
            assert np.asarray(row[key]).dtype == np.asarray(expected[pair][key]).dtype


@pytest.mark.ray
def test_a_store_of_3_frame_windows_holds_the_streamed_windows_and_pair_stores_keep_their_key(root, store):
    from raymotion.data.flow_store import PairSpec, precompute_pairs, read_pairs
    from raymotion.data.pipeline import build_pair_dataset

    assert "frames_per_item" not in json.loads((store.folder / "_DONE.json").read_text())["key"]  # as before windows
    windows = precompute_pairs(PairSpec(data_root=str(root), frames_per_item=3, **STORE_ARGS), window=16)
    assert windows.folder.name.startswith("dis_32px_gap1_3frames_all_") and windows.rows == sum(f - 2 for f in CLIP_FRAMES)
    expected = by_pair(build_pair_dataset(root, window=16, frames_per_item=3, **STORE_ARGS))
    got = by_pair(read_pairs(windows.folder))
    assert sorted(got) == sorted(expected)
    for pair, row in got.items():
        for key in ("image0", "image1", "image2", "crop0", "crop1", "crop2"):
            np.testing.assert_array_equal(row[key], expected[pair][key])
        np.testing.assert_array_equal(row["flow_fwd"], expected[pair]["flow_fwd"].astype(np.float16).astype(np.float32))
    film = load_config(overrides={"data.root": str(root), "model.film": True})
    assert PairSpec.from_config(film).frames_per_item == 3


def test_precomputed_source_has_the_ray_data_sources_limits(tmp_path):
    from raymotion.train.launch import check_config_only

    cfg = load_config(overrides={"data.video_source": "precomputed", "train.flow_source": "ground_truth",
                                 "run.output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="data.video_source='precomputed'.*data.video_source=local"):
        check_config_only(cfg, "refine", resume=False)
    with pytest.raises(ConfigError, match="expected one of: ray_data, precomputed, local"):
        load_config(overrides={"data.video_source": "parquet"})


def bench_data():
    """benchmarks/bench_data.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    import sys

    if "bench_data" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data.py"
        spec = importlib.util.spec_from_file_location("bench_data", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_data"] = module  # before running it: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["bench_data"]


@pytest.mark.ray
def test_precompute_flow_command_and_the_data_benchmark(root, store, capsys):
    from raymotion.cli import main

    data = ["--set", f"data.root={root}", "--set", "train.video_gap=1"]  # STORE_ARGS' gap
    assert main(["precompute-flow", "--set", "data.crop_size=32", *data]) == 0
    out = capsys.readouterr().out
    assert str(store.folder) in out and f"{ALL_PAIRS} pairs" in out and "reused" in out
    bench = ["--max-clips", "2", "--set", "data.crop_size=32", "--set", "data.decode_window=16",
             "--set", "data.flow_actors=1", *data]
    pairs = CLIP_FRAMES[0] - 1 + CLIP_FRAMES[1] - 1
    main = bench_data().main
    assert main(bench) == 0
    out = capsys.readouterr().out
    assert f"2 clips, {pairs} pairs" in out and "ratio pipeline / plain" in out and "start-up" in out
    assert "decoded frames per used frame: 1.000" in out  # one window per clip
    assert main([*bench, "--source", "precomputed"]) == 0
    out = capsys.readouterr().out
    assert f"{pairs} pairs" in out and "pair store" in out and "computed in this run" in out


def test_bench_break_even_is_where_the_end_to_end_ratio_reaches_the_target():
    from raymotion.config import Config

    module = bench_data()
    TARGET_RATIO, BenchResult, BenchSettings = module.TARGET_RATIO, module.BenchResult, module.BenchSettings
    settings = BenchSettings(cfg=Config(), max_clips=None, decoder="auto", source="streamed", plain_threads=0,
                             batch_size=64)
    # plain 10 pairs/s; pipeline 10 s of start-up, then 20 pairs/s: 800 pairs take 80 s plain, 10 + 40 s piped
    result = BenchResult(settings=settings, clips=1, pairs=800, plain_s=80.0, plain_cv2_threads=2,
                         ray_start_s=1.0, pipeline_s=50.0, first_batch_s=10.0, first_batch_pairs=0,
                         decoded_frames=33, used_frames=30, stage_s={}, backends={}, skipped=0)
    assert TARGET_RATIO == 1.6
    assert result.steady_rate == pytest.approx(20.0) and result.ratio == pytest.approx(1.6)
    assert result.break_even_pairs == pytest.approx(800.0)
    assert result.decoded_per_used == pytest.approx(1.1)

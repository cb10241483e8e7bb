"""The pair store: precomputed rows equal streamed ones, reuse, interrupted writes, bad folders; the CLI.

Uses the small VP9 benchmark of tests/test_pipeline.py (3 clips of 10, 7 and 12 frames, 64 px) and a local
Ray with 4 logical CPUs (a decode actor and a flow actor leave room for Ray Data's tasks).
"""

import json
import re
import shutil

import numpy as np
import pytest

from raymotion.config import ConfigError, load_config
from test_pipeline import CLIP_FRAMES, write_dataset

STORE_ARGS = {"crop_size": 32, "bbox_scale": 1.3, "gap": 1}
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


def batch_types(dataset):
    batch = next(iter(dataset.iter_batches(batch_size=4, batch_format="numpy")))
    return {name: (values.dtype, values.shape[1:]) for name, values in batch.items()}


@pytest.mark.ray
def test_precomputed_rows_equal_streamed_rows(root, store):
    from raymotion.data.flow_store import read_pairs
    from raymotion.data.pipeline import build_pair_dataset

    assert not store.reused and store.rows == ALL_PAIRS
    assert store.folder.parent == root / "pairs" and store.folder.name.startswith("dis_32px_gap1_all_")
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


@pytest.mark.ray
def test_a_second_call_and_a_run_with_the_same_config_reuse_the_store(root, store):
    from raymotion.data.flow_store import PairSpec, precompute_for_config, precompute_pairs
    from raymotion.train.launch import video_datasets

    files = sorted(store.folder.iterdir())
    mtimes = [p.stat().st_mtime_ns for p in files]
    # window and actors change how it is computed, not what: the same store
    again = precompute_pairs(PairSpec(data_root=str(root), **STORE_ARGS), window=64, flow_concurrency=2)
    assert again.reused and again.folder == store.folder and again.rows == store.rows
    cfg = load_config(overrides={"data.root": str(root), "data.crop_size": 32,
                                 "scaling.video_source": "precomputed"})
    assert precompute_for_config(cfg).folder == store.folder
    assert video_datasets(cfg)["video"].count() == ALL_PAIRS
    assert sorted(store.folder.iterdir()) == files and [p.stat().st_mtime_ns for p in files] == mtimes
    # what defines the rows changes the store
    other = PairSpec(data_root=str(root), **{**STORE_ARGS, "gap": 2})
    from raymotion.data.flow_store import store_folder

    assert store_folder(other) != store.folder and store_folder(other).name.startswith("dis_32px_gap2_all_")


@pytest.mark.ray
def test_an_interrupted_write_is_never_read_and_is_recomputed(root, ray_local, tmp_path, monkeypatch, store):
    from raymotion.data import flow_store
    from raymotion.data.flow_store import PairSpec, precompute_pairs, read_pairs, store_folder

    spec = PairSpec(data_root=str(root), max_clips=1, **STORE_ARGS)
    out = tmp_path / "stores"
    folder = store_folder(spec, out)
    assert folder.name.startswith("dis_32px_gap1_1clips_")

    def crash(tmp, final):
        raise KeyboardInterrupt  # interrupted just before the rename

    monkeypatch.setattr(flow_store, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        precompute_pairs(spec, out_dir=out, window=16)
    monkeypatch.undo()
    assert list(out.iterdir()) == []  # the temporary folder was removed, nothing was published

    # A hard kill leaves the temporary folder: parts, no _DONE.json.
    leftover = out / f".tmp-{folder.name}-host-1-deadbeef"
    leftover.mkdir()
    shutil.copy(next(store.folder.glob("*.parquet")), leftover)
    with pytest.raises(ValueError, match=re.escape(str(leftover)) + ".*no _DONE.json"):
        read_pairs(leftover)
    with pytest.warns(UserWarning, match="unfinished write"):
        result = precompute_pairs(spec, out_dir=out, window=16)
    assert not result.reused and result.folder == folder and result.rows == CLIP_FRAMES[0] - 1
    assert read_pairs(folder).count() == CLIP_FRAMES[0] - 1
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

    cases = {
        "no_done": (lambda f: (f / "_DONE.json").unlink(), "no _DONE.json"),
        "lost_file": (lambda f: next(f.glob("*.parquet")).unlink(), "missing or unreadable"),
        "garbled": (lambda f: (f / "_DONE.json").write_text("{"), "unreadable"),
        "miscounted": (lambda f: (f / "_DONE.json").write_text(json.dumps(
            {**json.loads((f / "_DONE.json").read_text()), "rows": 3})), f"hold {ALL_PAIRS} rows, _DONE.json says 3"),
    }
    for name, (damage, why) in cases.items():
        folder = broken(name, damage)
        with pytest.raises(ValueError, match=re.escape(str(folder)) + ".*" + re.escape(why)):
            read_pairs(folder)
    # a store folder that exists but is unfinished is named, not silently recomputed over
    out = tmp_path / "out"
    spec = PairSpec(data_root=str(root), **STORE_ARGS)
    target = shutil.copytree(store.folder, store_folder(spec, out))
    (target / "_DONE.json").unlink()
    with pytest.raises(ValueError, match=re.escape(str(target))):
        precompute_pairs(spec, out_dir=out)


def test_precomputed_source_has_the_ray_data_sources_limits(tmp_path):
    from raymotion.train.launch import check_config_only

    cfg = load_config(overrides={"scaling.video_source": "precomputed", "train.flow_source": "ground_truth",
                                 "run.output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="scaling.video_source='precomputed'.*scaling.video_source=local"):
        check_config_only(cfg, "refine", resume=False)
    with pytest.raises(ConfigError, match="expected one of: ray_data, precomputed, local"):
        load_config(overrides={"scaling.video_source": "parquet"})


@pytest.mark.ray
def test_precompute_flow_and_bench_data_commands(root, store, capsys):
    from raymotion.cli import main

    data = ["--set", f"data.root={root}"]
    assert main(["precompute-flow", "--set", "data.crop_size=32", *data]) == 0
    out = capsys.readouterr().out
    assert str(store.folder) in out and f"{ALL_PAIRS} pairs" in out and "reused" in out
    bench = ["bench-data", "--max-clips", "2", "--crop-size", "32", "--window", "16", "--flow-actors", "1", *data]
    pairs = CLIP_FRAMES[0] - 1 + CLIP_FRAMES[1] - 1
    assert main(bench) == 0
    out = capsys.readouterr().out
    assert f"2 clips, {pairs} pairs" in out and "ratio pipeline / plain" in out and "start-up" in out
    assert "decoded frames per used frame: 1.000" in out  # one window per clip
    assert main([*bench, "--source", "precomputed"]) == 0
    out = capsys.readouterr().out
    assert f"{pairs} pairs" in out and "pair store" in out and "computed in this run" in out


def test_bench_break_even_is_where_the_end_to_end_ratio_reaches_the_target():
    from raymotion.data.bench import TARGET_RATIO, BenchResult, BenchSettings

    # plain 10 pairs/s; pipeline 10 s of start-up, then 20 pairs/s: 800 pairs take 80 s plain, 10 + 40 s piped
    result = BenchResult(settings=BenchSettings(data_root="x"), clips=1, pairs=800, plain_s=80.0, plain_cv2_threads=2,
                         ray_start_s=1.0, pipeline_s=50.0, first_batch_s=10.0, first_batch_pairs=0,
                         decoded_frames=33, used_frames=30, stage_s={}, backends={}, skipped=0)
    assert TARGET_RATIO == 1.6
    assert result.steady_rate == pytest.approx(20.0) and result.ratio == pytest.approx(1.6)
    assert result.break_even_pairs == pytest.approx(800.0)
    assert result.decoded_per_used == pytest.approx(1.1)

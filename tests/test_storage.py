"""raymotion.storage on a local folder and on an S3 endpoint (the moto server from conftest.s3_server)."""

from __future__ import annotations

import os
import pickle
import re
import uuid
from pathlib import Path

import pytest

from raymotion import storage
from raymotion.storage import StoragePath, join


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> StoragePath:
    """An empty folder: ``tmp_path``, or a fresh prefix in the test bucket (the bucket lives all session)."""
    if request.param == "local":
        return StoragePath(tmp_path / "root")
    server = request.getfixturevalue("s3_server")
    return StoragePath(f"{server.bucket_uri}/{request.node.name}-{uuid.uuid4().hex[:8]}")


def listing(root: StoragePath, request) -> list[str]:
    """Every file and folder under ``root`` relative to it, as the backend itself stores them."""
    if root.is_local:
        return sorted(str(p.relative_to(root.uri)) for p in Path(root.uri).rglob("*"))
    prefix = root.uri.split("/", 3)[3] + "/"
    return [key[len(prefix):] for key in request.getfixturevalue("s3_server").keys(prefix)]


def test_bytes_and_text_round_trip(root):
    (root / "a.bin").write_bytes(b"\x00\x01\xffraymotion")
    (root / "t.txt").write_text("caf\u00e9\n")
    assert (root / "a.bin").read_bytes() == b"\x00\x01\xffraymotion"
    assert (root / "t.txt").read_text() == "caf\u00e9\n"
    assert (root / "t.txt").read_bytes() == b"caf\xc3\xa9\n"  # UTF-8 on disk


def test_write_creates_parents_and_leaves_only_the_file(root, request):
    (root / "deep/er/x.json").write_text("{}")
    assert (root / "deep/er/x.json").read_text() == "{}"
    # No temp file beside it; on S3 also no folder marker objects (parents are implicit in the key).
    expected = ["deep", "deep/er", "deep/er/x.json"] if root.is_local else ["deep/er/x.json"]
    assert listing(root, request) == expected


def test_overwrite_replaces_the_whole_content(root):
    target = root / "f.txt"
    target.write_text("a long first version")
    target.write_text("v2")
    assert target.read_text() == "v2"


def test_failed_local_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = StoragePath(tmp_path / "f.txt")
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        target.write_text("new")
    assert os.listdir(tmp_path) == ["f.txt"]
    assert target.read_text() == "old"


def test_local_write_gets_umask_permissions(tmp_path):
    target = StoragePath(tmp_path / "f.txt")
    target.write_bytes(b"x", fsync=True)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # not tempfile's 0o600


def test_exists_is_file_is_dir(root):
    (root / "d/f.txt").write_text("x")
    assert [(root / "d/f.txt").exists(), (root / "d/f.txt").is_file(), (root / "d/f.txt").is_dir()] == [True, True, False]
    assert [(root / "d").exists(), (root / "d").is_file(), (root / "d").is_dir()] == [True, False, True]
    assert [(root / "nope").exists(), (root / "nope").is_file(), (root / "nope").is_dir()] == [False, False, False]


def test_mkdir_makes_an_existing_folder_and_is_idempotent(root):
    (root / "a/b").mkdir()
    (root / "a/b").mkdir()
    assert (root / "a/b").is_dir()
    assert (root / "a/b").iterdir() == []


def test_iterdir_lists_direct_children_sorted(root):
    for name in ("x.txt", "b.txt", "sub/y.txt"):
        (root / name).write_text(name)
    children = root.iterdir()
    assert [c.name for c in children] == ["b.txt", "sub", "x.txt"]
    assert children[1] == root / "sub"
    assert (root / "missing").iterdir() == []


def test_delete_and_delete_dir(root):
    (root / "f.txt").write_text("x")
    (root / "d/e/g.txt").write_text("y")
    (root / "f.txt").delete()
    assert not (root / "f.txt").exists()
    (root / "f.txt").delete()  # missing: fine
    (root / "d").delete_dir()
    assert not (root / "d").exists()
    assert not (root / "d/e/g.txt").exists()
    (root / "d").delete_dir()  # missing: fine


def test_missing_file_error_names_the_uri(root):
    missing = root / "missing.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(missing.uri)):
        missing.read_bytes()
    with pytest.raises(FileNotFoundError, match=re.escape(missing.uri)):
        missing.download_to(Path("/nonexistent-raymotion-target"))


def test_pickles_by_uri_and_still_reads(root):
    (root / "f.txt").write_text("hello")
    path = root / "f.txt"
    assert path.filesystem is not None  # resolved (and cached) before pickling
    data = pickle.dumps(path)
    assert b"pyarrow" not in data  # no filesystem object travels, only the uri
    copy = pickle.loads(data)
    assert copy.uri == path.uri and copy == path and hash(copy) == hash(path)
    assert copy.read_text() == "hello"


def test_copy_from_local_and_download_to_round_trip(root, tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub/b.txt").write_text("b")
    (root / "copy").copy_from_local(source)
    assert (root / "copy/sub/b.txt").read_text() == "b"
    (root / "copy").download_to(tmp_path / "back")
    assert sorted(str(p.relative_to(tmp_path / "back")) for p in (tmp_path / "back").rglob("*")) == [
        "a.txt", "sub", "sub/b.txt"]
    assert (tmp_path / "back/a.txt").read_text() == "a"


def test_copies_create_the_target_folder_and_copy_single_files(root, tmp_path):
    # A flat folder (no sub-folder) is the case where pyarrow's copy_files alone fails on a local target.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.txt").write_text("a")
    (root / "new/flat").copy_from_local(flat)
    assert (root / "new/flat/a.txt").read_text() == "a"
    (root / "new/flat").download_to(tmp_path / "d1/flat")
    assert os.listdir(tmp_path / "d1/flat") == ["a.txt"]
    (root / "one.txt").copy_from_local(flat / "a.txt")
    assert (root / "one.txt").read_text() == "a"
    (root / "one.txt").download_to(tmp_path / "d2/one.txt")
    assert (tmp_path / "d2/one.txt").read_text() == "a"
    with pytest.raises(FileNotFoundError, match="no local file or folder"):
        (root / "x").copy_from_local(tmp_path / "missing")


def test_s3_use_writes_nothing_to_the_working_directory(s3_server, tmp_path, monkeypatch):
    cwd, local = tmp_path / "cwd", tmp_path / "local"
    cwd.mkdir()
    local.mkdir()
    (local / "x.txt").write_text("x")
    monkeypatch.chdir(cwd)
    root = StoragePath(f"{s3_server.bucket_uri}/cwd-{uuid.uuid4().hex[:8]}")
    (root / "f.txt").write_text("1")
    (root / "f.txt").read_text()
    (root / "d").mkdir()
    root.iterdir()
    (root / "up").copy_from_local(local)
    (root / "up").download_to(tmp_path / "down")
    (root / "f.txt").delete()
    root.delete_dir()
    assert os.listdir(cwd) == []


def test_s3_objects_land_in_the_bucket_at_aws_endpoint_url(s3_server):
    # Only the environment (set by the fixture) tells pyarrow where the server is.
    prefix = f"landing-{uuid.uuid4().hex[:8]}"
    (StoragePath(s3_server.bucket_uri) / prefix / "run/log.jsonl").write_text("{}\n")
    assert s3_server.keys(prefix) == [f"{prefix}/run/log.jsonl"]
    assert StoragePath(f"{s3_server.bucket_uri}/{prefix}/run/log.jsonl").path == f"raymotion-test/{prefix}/run/log.jsonl"


def test_missing_bucket_error_names_uri_and_what_to_check(s3_server):
    path = StoragePath("s3://no-such-bucket-raymotion/x.txt")
    with pytest.raises(OSError, match=r"s3://no-such-bucket-raymotion/x\.txt.*AWS_ENDPOINT_URL"):
        path.write_text("x")


def test_uri_normalisation_and_naming():
    path = StoragePath("s3://bucket/runs/r1/")
    assert path.uri == str(path) == "s3://bucket/runs/r1"
    assert repr(path) == "StoragePath('s3://bucket/runs/r1')"
    assert not path.is_local
    assert (path / "ckpt/checkpoint.pt").uri == "s3://bucket/runs/r1/ckpt/checkpoint.pt"
    assert path.name == "r1"
    assert path.parent == StoragePath("s3://bucket/runs")
    assert StoragePath("s3://bucket").parent == StoragePath("s3://bucket")
    assert StoragePath("s3://bucket").name == "bucket"
    assert join("s3://bucket/runs", "r1", "log.jsonl") == "s3://bucket/runs/r1/log.jsonl"
    assert StoragePath(path) == path
    assert StoragePath("file:///tmp/x").uri == "/tmp/x"


@pytest.mark.parametrize("part", ["", "/abs", "../up", "a/../b", "a//b", "./a"])
def test_join_refuses_parts_that_are_not_plain_relative_paths(part):
    with pytest.raises(ValueError, match="relative path"):
        StoragePath("s3://bucket/runs") / part


def test_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert StoragePath("runs/r1").uri == str(tmp_path.resolve() / "runs/r1")
    assert StoragePath(Path("runs")).is_local
    monkeypatch.setenv("HOME", str(tmp_path))
    assert StoragePath("~/x").uri == str(tmp_path.resolve() / "x")
    assert join("runs", "r1") == str(tmp_path.resolve() / "runs/r1")
    local = StoragePath(tmp_path / "f.txt")
    assert local.name == "f.txt" and local.parent == StoragePath(tmp_path)
    assert local.path == local.uri


def test_fspath_is_local_only(tmp_path):
    local = StoragePath(tmp_path / "f.txt")
    local.write_text("x")
    assert os.fspath(local) == str(tmp_path.resolve() / "f.txt")
    assert open(local).read() == "x"
    with pytest.raises(TypeError, match=re.escape("s3://bucket/k")):
        os.fspath(StoragePath("s3://bucket/k"))


def test_bad_uris_say_what_to_write():
    with pytest.raises(ValueError, match=r"nosuchscheme://x/y.*s3://bucket/prefix"):
        StoragePath("nosuchscheme://x/y").filesystem
    with pytest.raises(ValueError, match="query options"):
        StoragePath("s3://bucket/p?region=eu-west-1")
    with pytest.raises(ValueError, match="collapsed by pathlib"):
        StoragePath(Path("s3://bucket/key"))  # Path leaves "s3:/bucket/key"
    with pytest.raises(ValueError, match="no scheme or no bucket"):
        StoragePath("s3://")


def test_filesystem_is_cached_per_bucket_and_endpoint(s3_server):
    a = StoragePath(f"{s3_server.bucket_uri}/a").filesystem
    assert StoragePath(f"{s3_server.bucket_uri}/b/c").filesystem is a
    assert len([k for k in storage._FILESYSTEMS if k[0] == s3_server.bucket_uri]) == 1

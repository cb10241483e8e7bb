"""Shared fixtures: SMPL-layout arrays built in memory (tests never need licensed files)."""

from __future__ import annotations

import numpy as np
import pytest

from raymotion.config import SYNTH_PRESETS, load_config

from raymotion.body.joints import EXTRA_JOINT_NAMES, NUM_H36M_JOINTS, NUM_SMPL_JOINTS, SMPL_PARENTS

ROOT_PARENT = 4294967295  # how SMPL files store the root's parent (uint32 -1)


def kintree_table() -> np.ndarray:
    """(2, 24): parents (root = 2**32 - 1) over joint ids, as in SMPL files."""
    parents = np.array([ROOT_PARENT if p < 0 else p for p in SMPL_PARENTS], dtype=np.int64)
    return np.stack([parents, np.arange(NUM_SMPL_JOINTS)])


def random_smpl_arrays(num_verts: int, *, num_betas: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in the SMPL file layout, shaped like a real model with ``num_verts`` vertices."""
    rng = np.random.default_rng(seed)
    weights = rng.random((num_verts, NUM_SMPL_JOINTS))
    regressor = rng.random((NUM_SMPL_JOINTS, num_verts))
    return {
        "v_template": rng.normal(size=(num_verts, 3)) * 0.3,
        "shapedirs": rng.normal(size=(num_verts, 3, num_betas)) * 0.01,
        "posedirs": rng.normal(size=(num_verts, 3, 207)) * 0.001,
        "J_regressor": regressor / regressor.sum(axis=1, keepdims=True),
        "weights": weights / weights.sum(axis=1, keepdims=True),
        "kintree_table": kintree_table(),
        "f": rng.integers(0, num_verts, size=(2 * num_verts, 3)).astype(np.uint32),
    }


class CodePayload:
    """What a hostile pickle can carry: a ``__reduce__`` that writes ``marker`` when plainly unpickled."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def one_hot_rows(vertex_ids: list[int], num_verts: int) -> np.ndarray:
    rows = np.zeros((len(vertex_ids), num_verts), dtype=np.float32)
    rows[np.arange(len(vertex_ids)), vertex_ids] = 1.0
    return rows


@pytest.fixture
def two_bone_arrays() -> dict[str, np.ndarray]:
    """A 5-vertex toy in the SMPL layout with two bones that matter: root (0) and left hip (1).

    v0 (0,0,0) root joint; v1 (1,0,0) left-hip joint; v2 (2,0,0) skinned to the left hip only;
    v3 (0,1,0) skinned to the root; v4 (2,0,0) skinned half root, half left hip. Every other joint sits
    at v0. Beta 0 moves v2 by +1 in z.
    """
    num_verts = 5
    v_template = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [2, 0, 0]], dtype=np.float32)
    joint_vertex = [0] * NUM_SMPL_JOINTS
    joint_vertex[1] = 1
    weights = np.zeros((num_verts, NUM_SMPL_JOINTS), dtype=np.float32)
    weights[[0, 1, 3], 0] = 1.0
    weights[2, 1] = 1.0
    weights[4, [0, 1]] = 0.5
    shapedirs = np.zeros((num_verts, 3, 10), dtype=np.float32)
    shapedirs[2, 2, 0] = 1.0
    arrays = {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((num_verts, 3, 207), dtype=np.float32),
        "J_regressor": one_hot_rows(joint_vertex, num_verts),
        "weights": weights,
        "kintree_table": kintree_table(),
        "f": np.array([[0, 1, 3], [1, 2, 3]], dtype=np.int64),
        "J_regressor_h36m": one_hot_rows([i % num_verts for i in range(NUM_H36M_JOINTS)], num_verts),
    }
    arrays.update({f"vertex_ids_{name}": np.array(i % num_verts) for i, name in enumerate(EXTRA_JOINT_NAMES)})
    return arrays


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """The 'tiny' synthetic benchmark with the low-resolution body, rendered once per test session.

    Tests only read it (or copy it before changing it); estimator flow caches may appear beside clips.
    """
    from raymotion.synth.generate import generate

    out_dir = tmp_path_factory.mktemp("tiny_benchmark")
    cfg = load_config(
        overrides={"body.model": "anny_lowres", "synth.body_model": "anny_lowres", "synth.out_dir": str(out_dir), "synth.num_workers": 1},
        preset=SYNTH_PRESETS["tiny"],
    )
    generate(cfg, progress=False)
    return out_dir


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray for one test module. address='local': never attach to another Ray instance on this
    machine. 4 logical CPUs on 2 cores leave room for Ray Data's tasks beside the stage actors (FACTS.md:
    actors taking every CPU hang a pipeline)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# The S3 endpoint tests talk to: a moto server in this process, reached over TCP like a real store.
S3_TEST_BUCKET = "raymotion-test"
# Removed from os.environ while the S3 test server runs: where a developer has them set they would win
# over (AWS_ENDPOINT_URL_S3) or mix with (AWS_PROFILE, AWS_SESSION_TOKEN) the test endpoint and credentials.
S3_TEST_ENV_REMOVED = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN")


class S3TestServer:
    """What ``s3_server`` returns: the endpoint, the test bucket, and a way to see what landed in it."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.bucket_uri = f"s3://{bucket}"

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (no leading ``/``; ``"run1/"``), sorted; folder markers end in ``/``.

        Note that pyarrow writes ``prefix/`` marker objects for ``mkdir`` and after deleting the last file
        of a folder, so assert on the keys you expect, not on the full listing, where that matters.
        """
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)


@pytest.fixture(scope="session")
def s3_server():
    """An S3 endpoint (moto's ThreadedMotoServer on 127.0.0.1, a free port) holding the bucket
    ``raymotion-test``, for the whole test session. Returns an ``S3TestServer`` (``.endpoint``,
    ``.bucket_uri`` = ``"s3://raymotion-test"``, ``.keys(prefix)``).

    It sets os.environ for the session (restored at teardown): AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (``testing``), AWS_DEFAULT_REGION and AWS_REGION (us-east-1),
    AWS_EC2_METADATA_DISABLED; it removes AWS_ENDPOINT_URL_S3, AWS_PROFILE and AWS_SESSION_TOKEN.

    Ray: worker processes inherit the environment of the ``ray.init`` that starts them, so these
    variables must be set BEFORE ray.init for workers to reach this server. pytest sets up
    session-scoped fixtures before module-scoped ones, so a test requesting both ``s3_server`` and
    ``ray_local`` is fine; but in a module where Ray may start before the first S3 test, add
    ``pytestmark = pytest.mark.usefixtures("s3_server")`` at the top of the module. Keys written by one
    test stay for the session: give each test its own prefix (e.g. from ``uuid4``).
    """
    import logging
    import os

    server_module = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
    boto3 = pytest.importorskip("boto3")

    werkzeug_log = logging.getLogger("werkzeug")
    log_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    previous = {name: os.environ.get(name) for name in (*env, *S3_TEST_ENV_REMOVED)}
    os.environ.update(env)
    for name in S3_TEST_ENV_REMOVED:
        os.environ.pop(name, None)
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=S3_TEST_BUCKET)
        yield S3TestServer(endpoint, S3_TEST_BUCKET)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
        werkzeug_log.setLevel(log_level)

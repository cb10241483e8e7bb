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

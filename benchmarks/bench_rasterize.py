"""Ratio benchmark: raymotion's torch rasteriser vs pyrender (OSMesa) on one body-sized mesh, CPU.

Run: python benchmarks/bench_rasterize.py [--batch 8] [--sizes 128 256] [--repeats 5] [--threads N]

The mesh is the baked default body (raymotion/assets/anny_smpl.npz, template pose) when present;
otherwise a body-sized stand-in with the same vertex and face counts: a UV sphere (13,690 vertices,
27,376 faces) stretched into a 0.5 x 1.7 x 0.3 m ellipsoid. Camera as in FACTS.md's probes: 6 m away,
focal 2.66 x image size, so 1.7 m spans ~75 % of the image height. Times are per image, medians over
repeats, after one warm-up; the two renderers alternate within each repeat, so that load from other
processes on a shared machine hits both alike (the load average is printed). On a loaded machine torch's
intra-op threads can slow it several-fold: compare with --threads 1. pyrender draws colour + depth (flat,
unlit) for one mesh per call, which includes building its scene, as raymotion.synth.render.MeshRenderer
does for every frame.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
import trimesh

from raymotion.geometry import rasterize
from raymotion.synth.render import Intrinsics, MeshRenderer
from timing import alternating_medians

BODY_ASSET = Path(__file__).resolve().parents[1] / "raymotion" / "assets" / "anny_smpl.npz"
CAMERA_DISTANCE_M = 6.0
FOCAL_PER_IMAGE_SIZE = 2.66  # 340 px at 128 px, FACTS.md


def benchmark_mesh() -> tuple[np.ndarray, np.ndarray, str]:
    """(V, 3) vertices in the OpenCV camera frame, metres; (F, 3) faces; a description."""
    if BODY_ASSET.exists():
        with np.load(BODY_ASSET) as data:
            verts_V3, faces_F3 = data["v_template"].astype(np.float64), data["f"].astype(np.int64)
        verts_V3 = verts_V3 * np.array([1.0, -1.0, -1.0])  # SMPL's y up, z towards the viewer -> OpenCV
        name = f"{BODY_ASSET.name} template"
    else:
        sphere = trimesh.creation.uv_sphere(count=(59, 117))
        verts_V3 = np.asarray(sphere.vertices) * np.array([0.25, 0.85, 0.15])
        faces_F3 = np.asarray(sphere.faces, dtype=np.int64)
        name = "UV-sphere ellipsoid stand-in"
    verts_V3 = verts_V3 - verts_V3.mean(0) + np.array([0.0, 0.0, CAMERA_DISTANCE_M])
    return verts_V3, faces_F3, f"{name}, {len(verts_V3)} vertices, {len(faces_F3)} faces"


def render_batch(
    renderer: MeshRenderer, verts_BV3: np.ndarray, faces_F3: np.ndarray, intrinsics: Intrinsics
) -> None:
    for verts_V3 in verts_BV3:
        renderer.render(verts_V3, faces_F3, intrinsics=intrinsics, lit=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    verts_V3, faces_F3, description = benchmark_mesh()
    print(f"mesh: {description}; batch {args.batch}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':>5} {'torch ms/img':>13} {'pyrender ms/img':>16} {'torch/pyrender':>15} {'covered px':>11}")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        focal = FOCAL_PER_IMAGE_SIZE * size
        intrinsics = Intrinsics(fx=focal, fy=focal, cx=size / 2, cy=size / 2, width=size, height=size)
        # A small random shift per batch element, so that the images differ.
        shifts_B13 = rng.normal(scale=0.05, size=(args.batch, 1, 3))
        verts_cam_BV3 = torch.tensor(verts_V3[None] + shifts_B13, dtype=torch.float32)
        verts_pix_BV3 = torch.cat(
            [focal * verts_cam_BV3[..., :2] / verts_cam_BV3[..., 2:] + size / 2, verts_cam_BV3[..., 2:]], -1
        )
        faces_t = torch.from_numpy(faces_F3)
        raster = rasterize(verts_pix_BV3, faces_t, height=size, width=size)
        verts_np_BV3 = verts_cam_BV3.double().numpy()
        with MeshRenderer(width=size, height=size) as renderer:
            seconds = alternating_medians(
                {
                    "torch": partial(rasterize, verts_pix_BV3, faces_t, height=size, width=size),
                    "pyrender": partial(render_batch, renderer, verts_np_BV3, faces_F3, intrinsics),
                },
                args.repeats,
            )
        ours_s, theirs_s = seconds["torch"], seconds["pyrender"]
        ours_ms, theirs_ms = 1e3 * ours_s / args.batch, 1e3 * theirs_s / args.batch
        covered = int(raster.covered_BHW[0].sum())
        print(f"{size:>5} {ours_ms:>13.1f} {theirs_ms:>16.1f} {ours_ms / theirs_ms:>15.2f} {covered:>11}")


if __name__ == "__main__":
    main()

"""Tests for raymotion.geometry.rasterize against hand-computed values and pyrender."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from raymotion.geometry import (
    eroded_vertex_visibility,
    rasterize,
    surface_flow,
    surface_flow_affine,
    vertex_visibility,
)

# The package re-exports the function `rasterize`, which shadows the submodule as an attribute.
rasterize_module = importlib.import_module("raymotion.geometry.rasterize")

# One triangle in pixels: right angle at (1, 1), legs of 4 px. Pixel centres (i + 0.5, j + 0.5) lie
# inside iff i >= 1, j >= 1 and i + j <= 5 (i + j = 5 puts the centre on the hypotenuse).
TRIANGLE_PIX_V3 = [[1.0, 1.0, 2.0], [5.0, 1.0, 4.0], [1.0, 5.0, 4.0]]
TRIANGLE_COVER_HW = [
    [0, 0, 0, 0, 0, 0],
    [0, 1, 1, 1, 1, 0],
    [0, 1, 1, 1, 0, 0],
    [0, 1, 1, 0, 0, 0],
    [0, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
]


def project(verts_cam_BV3: torch.Tensor, *, f: float, c: float) -> torch.Tensor:
    """Pinhole projection to (u, v, z): pixels and metres."""
    uv_BV2 = f * verts_cam_BV3[..., :2] / verts_cam_BV3[..., 2:] + c
    return torch.cat([uv_BV2, verts_cam_BV3[..., 2:]], dim=-1)


def grid_mesh(x0: float, x1: float, y0: float, y1: float, z: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fronto-parallel (n x n)-vertex plane at depth z, metres: verts (V, 3) float64, faces (F, 3)."""
    xs, ys = torch.linspace(x0, x1, n, dtype=torch.float64), torch.linspace(y0, y1, n, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    verts_V3 = torch.stack([gx, gy, torch.full_like(gx, z)], dim=-1).reshape(-1, 3)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces_F3 = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return verts_V3, faces_F3


def cube_mesh(size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """An axis-aligned cube centred at the origin, side `size` metres: verts (8, 3) float64, faces (12, 3)."""
    import trimesh

    box = trimesh.creation.box(extents=[size] * 3)
    return torch.tensor(box.vertices, dtype=torch.float64), torch.tensor(box.faces, dtype=torch.int64)


def icosphere(subdivisions: int, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(sphere.vertices, dtype=torch.float64), torch.tensor(sphere.faces, dtype=torch.int64)


def rotation_xy(angle_x: float, angle_y: float) -> torch.Tensor:
    cx, sx, cy, sy = np.cos(angle_x), np.sin(angle_x), np.cos(angle_y), np.sin(angle_y)
    rot_x = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    rot_y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    return rot_y @ rot_x


def check_single_triangle(device: str) -> None:
    verts_BV3 = torch.tensor([TRIANGLE_PIX_V3], device=device)
    faces_F3 = torch.tensor([[0, 1, 2]], device=device)
    raster = rasterize(verts_BV3, faces_F3, height=6, width=6)
    expected_ids = torch.tensor(TRIANGLE_COVER_HW, device=device) - 1
    assert torch.equal(raster.face_id_BHW[0], expected_ids)
    assert torch.isinf(raster.depth_BHW[0][expected_ids < 0]).all()
    # Pixel (row 1, col 2), centre (2.5, 1.5): screen weights l = (0.5, 0.375, 0.125); perspective
    # w ~ l / z = (0.25, 0.09375, 0.03125) -> (2/3, 1/4, 1/12), depth = 1 / 0.375.
    assert_close(raster.bary_BHW3[0, 1, 2], torch.tensor([2 / 3, 1 / 4, 1 / 12], device=device))
    assert_close(raster.depth_BHW[0, 1, 2], torch.tensor(8 / 3, device=device))
    affine = rasterize(verts_BV3, faces_F3, height=6, width=6, perspective=False)
    assert torch.equal(affine.face_id_BHW, raster.face_id_BHW)
    assert_close(affine.bary_BHW3[0, 1, 2], torch.tensor([0.5, 0.375, 0.125], device=device))
    assert_close(affine.depth_BHW[0, 1, 2], torch.tensor(0.5 * 2 + 0.375 * 4 + 0.125 * 4, device=device))


def test_single_triangle_covers_hand_listed_pixels_with_exact_weights_and_depth():
    check_single_triangle("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_single_triangle_on_cuda():
    check_single_triangle("cuda")


def test_reversed_winding_and_batch_give_the_same_raster():
    verts_BV3 = torch.tensor([TRIANGLE_PIX_V3, [[v[0] + 1, v[1], v[2]] for v in TRIANGLE_PIX_V3]])
    raster = rasterize(verts_BV3, torch.tensor([[0, 1, 2]]), height=6, width=7)
    flipped = rasterize(verts_BV3, torch.tensor([[0, 2, 1]]), height=6, width=7)
    assert torch.equal(raster.face_id_BHW, flipped.face_id_BHW)
    assert_close(raster.bary_BHW3[..., [0, 2, 1]], flipped.bary_BHW3)
    single = rasterize(verts_BV3[1:], torch.tensor([[0, 1, 2]]), height=6, width=7)
    assert torch.equal(raster.face_id_BHW[1:], single.face_id_BHW)
    assert torch.equal(raster.face_id_BHW[1, :, 1:], raster.face_id_BHW[0, :, :-1])  # shifted by 1 px


def test_square_split_along_pixel_centres_has_no_cracks():
    # The diagonal (0,0)-(4,4) passes exactly through the centres (k + 0.5, k + 0.5).
    verts_BV3 = torch.tensor([[[0.0, 0.0, 1.0], [4.0, 0.0, 1.0], [4.0, 4.0, 1.0], [0.0, 4.0, 1.0]]])
    for faces in ([[0, 1, 2], [0, 2, 3]], [[2, 1, 0], [3, 2, 0]]):
        raster = rasterize(verts_BV3, torch.tensor(faces), height=4, width=4)
        assert raster.covered_BHW.all()
        # Centres above the diagonal (y < x) belong to face 0; on it, the z tie goes to face 0.
        rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
        assert torch.equal(raster.face_id_BHW[0], (rows > cols).long())


def test_nearer_triangle_wins_where_two_overlap():
    far = [[0.0, 0.0, 5.0], [8.0, 0.0, 5.0], [0.0, 8.0, 5.0]]
    near = [[2.0, 2.0, 2.0], [6.0, 2.0, 2.0], [2.0, 6.0, 2.0]]
    for order in ([0, 1], [1, 0]):
        verts_BV3 = torch.tensor([far + near]) if order == [0, 1] else torch.tensor([near + far])
        faces_F3 = torch.tensor([[0, 1, 2], [3, 4, 5]])
        raster = rasterize(verts_BV3, faces_F3, height=8, width=8)
        near_id, far_id = (1, 0) if order == [0, 1] else (0, 1)
        ids = raster.face_id_BHW[0]
        # Pixel centres (i + 0.5, j + 0.5): near covers i, j >= 2, i + j <= 7; far covers i + j <= 7.
        rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        in_near = (rows >= 2) & (cols >= 2) & (rows + cols <= 7)
        in_far = rows + cols <= 7
        assert (ids[in_near] == near_id).all()
        assert (ids[in_far & ~in_near] == far_id).all()
        assert (ids[~in_far] == -1).all()
        assert_close(raster.depth_BHW[0][in_near], torch.full((int(in_near.sum()),), 2.0))
        assert_close(raster.depth_BHW[0][in_far & ~in_near], torch.full((int((in_far & ~in_near).sum()),), 5.0))


def test_perspective_weights_match_the_ray_plane_intersection_on_a_slanted_triangle():
    f, c = 60.0, 16.0
    tri_V3 = torch.tensor([[-0.8, -0.6, 1.5], [0.9, -0.5, 4.0], [0.0, 0.9, 2.5]], dtype=torch.float64)
    faces_F3 = torch.tensor([[0, 1, 2]])
    verts_pix_BV3 = project(tri_V3[None], f=f, c=c)
    raster = rasterize(verts_pix_BV3, faces_F3, height=32, width=32)
    affine = rasterize(verts_pix_BV3, faces_F3, height=32, width=32, perspective=False)
    rows, cols = raster.covered_BHW[0].nonzero(as_tuple=True)
    assert rows.numel() > 50
    # Ray through each centre: d = ((u - c) / f, (v - c) / f, 1); plane n . X = n . X0.
    ray_P3 = torch.stack([(cols + 0.5 - c) / f, (rows + 0.5 - c) / f, torch.ones_like(rows, dtype=torch.float64)], -1)
    normal_3 = torch.linalg.cross(tri_V3[1] - tri_V3[0], tri_V3[2] - tri_V3[0])
    point_P3 = ray_P3 * ((normal_3 @ tri_V3[0]) / (ray_P3 @ normal_3))[:, None]
    # 3D barycentrics: solve point = sum_i w_i X_i with sum w = 1 (least squares on the 4x3 system).
    system_43 = torch.cat([tri_V3.T, torch.ones(1, 3, dtype=torch.float64)])
    rhs_4P = torch.cat([point_P3.T, torch.ones(1, rows.numel(), dtype=torch.float64)])
    expected_P3 = torch.linalg.lstsq(system_43, rhs_4P).solution.T
    assert_close(raster.bary_BHW3[0, rows, cols], expected_P3)
    assert_close(raster.depth_BHW[0, rows, cols], point_P3[:, 2])
    assert (affine.bary_BHW3[0, rows, cols] - expected_P3).abs().max() > 0.05


def test_bary_and_depth_carry_gradients_to_the_vertices():
    verts_BV3 = torch.tensor([[[1.1, 0.9, 2.0], [5.2, 1.3, 3.0], [0.8, 5.1, 4.0]]], dtype=torch.float64)
    faces_F3 = torch.tensor([[0, 1, 2]])

    def bary_and_depth(verts: torch.Tensor) -> torch.Tensor:
        raster = rasterize(verts, faces_F3, height=6, width=6)
        return torch.cat([raster.bary_BHW3[raster.covered_BHW].flatten(), raster.depth_BHW[raster.covered_BHW]])

    assert torch.autograd.gradcheck(bary_and_depth, (verts_BV3.requires_grad_(),))


def test_small_chunks_give_the_same_raster(monkeypatch):
    verts_V3, faces_F3 = icosphere(2, 1.0)
    verts_pix_BV3 = project((verts_V3 + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64))[None], f=40.0, c=24.0)
    reference = rasterize(verts_pix_BV3, faces_F3, height=48, width=48)
    monkeypatch.setattr(rasterize_module, "_MAX_CANDIDATES_PER_CHUNK", 200)
    chunked = rasterize(verts_pix_BV3, faces_F3, height=48, width=48)
    assert torch.equal(reference.face_id_BHW, chunked.face_id_BHW)


def test_faces_behind_the_camera_or_degenerate_are_ignored():
    verts_BV3 = torch.tensor([[[1.0, 1.0, -1.0], [5.0, 1.0, 2.0], [1.0, 5.0, 2.0], [3.0, 3.0, 2.0]]])
    faces_F3 = torch.tensor([[0, 1, 2], [1, 3, 2]])  # face 1 is a line (3 is the midpoint of 1-2)
    raster = rasterize(verts_BV3, faces_F3, height=6, width=6)
    assert not raster.covered_BHW.any()


def test_sphere_front_vertices_are_visible_and_back_ones_are_not():
    verts_V3, faces_F3 = icosphere(3, 1.0)
    centre_3 = torch.tensor([0.2, -0.1, 5.0], dtype=torch.float64)
    verts_pix_BV3 = project((verts_V3 + centre_3)[None], f=150.0, c=48.0)
    raster = rasterize(verts_pix_BV3, faces_F3, height=96, width=96)
    vis_BV = vertex_visibility(raster, faces_F3, verts_V3.shape[0])
    # Seen from the camera, the sphere's visible cap is where the unit normal n satisfies
    # n . (centre - X) ... i.e. (X - centre) . X < 0; for |c| = 5 that is roughly z_rel < -0.2.
    facing_V = ((verts_V3) * (verts_V3 + centre_3)).sum(-1) / (verts_V3 + centre_3).norm(dim=-1)
    assert vis_BV[0, facing_V < -0.1].all()
    assert not vis_BV[0, facing_V > 0.1].any()
    assert vis_BV[0, verts_V3[:, 2].argmin()] and not vis_BV[0, verts_V3[:, 2].argmax()]

    eroded_BV = eroded_vertex_visibility(verts_pix_BV3, raster)
    assert not (eroded_BV & ~vis_BV).any()
    assert eroded_BV[0, verts_V3[:, 2].argmin()]
    # Vertices within 1.5 px of the silhouette (3x3 neighbourhood leaves the sphere) are dropped.
    radius_pix_V = (verts_pix_BV3[0, :, :2] - project(centre_3[None, None], f=150.0, c=48.0)[0, 0, :2]).norm(dim=-1)
    silhouette_radius = radius_pix_V[vis_BV[0]].max()
    assert not eroded_BV[0, radius_pix_V > silhouette_radius - 1.0].any()


def test_eroded_visibility_drops_occluded_and_depth_jump_vertices():
    # A far plane (z = 3) half hidden by a near plane (z = 2) that ends at x = 0.
    f, c, size = 40.0, 32.0, 64
    far_V3, far_F3 = grid_mesh(-1.2, 1.2, -1.2, 1.2, 3.0, 25)
    near_V3, near_F3 = grid_mesh(-1.0, 0.0, -1.0, 1.0, 2.0, 11)
    verts_V3 = torch.cat([far_V3, near_V3])
    faces_F3 = torch.cat([far_F3, near_F3 + far_V3.shape[0]])
    verts_pix_BV3 = project(verts_V3[None], f=f, c=c)
    raster = rasterize(verts_pix_BV3, faces_F3, height=size, width=size)
    kept_V = eroded_vertex_visibility(verts_pix_BV3, raster)[0]
    far_x_V, far_y_V = far_V3[:, 0], far_V3[:, 1]
    inner_far_V = far_y_V.abs() < 1.0  # away from the far plane's own top/bottom border
    # Far plane: hidden behind the near plane (x < -0.1 projects inside it) -> dropped by depth;
    # just right of the near plane's edge (within 1.5 px, 0.11 m at z = 3) -> depth jump; beyond -> kept.
    assert not kept_V[: far_V3.shape[0]][far_x_V < -0.1].any()
    assert not kept_V[: far_V3.shape[0]][(far_x_V >= 0.0) & (far_x_V < 0.1)].any()
    assert kept_V[: far_V3.shape[0]][inner_far_V & (far_x_V > 0.3) & (far_x_V < 1.0)].all()
    # Near plane: its vertices at x = 0 sit on the depth jump; interior ones are kept.
    near_x_V, near_y_V = near_V3[:, 0], near_V3[:, 1]
    kept_near_V = kept_V[far_V3.shape[0] :]
    assert not kept_near_V[near_x_V > -0.05].any()
    assert kept_near_V[(near_x_V < -0.2) & (near_x_V > -0.8) & (near_y_V.abs() < 0.8)].all()


def test_surface_flow_of_translated_plane_is_f_dx_over_z_and_zero_when_static():
    f, c, size, z, dx = 100.0, 32.0, 64, 4.0, 0.1
    verts_V3, faces_F3 = grid_mesh(-1.0, 1.0, -0.8, 0.8, z, 9)
    verts_BV3 = verts_V3[None]
    raster = rasterize(project(verts_BV3, f=f, c=c), faces_F3, height=size, width=size)
    flow_BHW2, valid_BHW = surface_flow(raster, faces_F3, verts_BV3 + torch.tensor([dx, 0.0, 0.0]), fx=f, fy=f, cx=c, cy=c)
    assert torch.equal(valid_BHW, raster.covered_BHW) and valid_BHW.sum() > 1000
    assert_close(flow_BHW2[valid_BHW], torch.tensor([f * dx / z, 0.0], dtype=torch.float64).expand(int(valid_BHW.sum()), 2))
    assert (flow_BHW2[~valid_BHW] == 0).all()
    static_BHW2, _ = surface_flow(raster, faces_F3, verts_BV3, fx=f, fy=f, cx=c, cy=c)
    assert_close(static_BHW2, torch.zeros_like(static_BHW2))


def test_surface_flow_of_moving_rotated_cube_matches_the_analytic_flow():
    # Per pixel with surface depth Z and centre p: x-translation gives f dx / Z; z-translation gives
    # (p - c) (Z / (Z + dz) - 1). Two cameras in one batch (focal lengths as (B,) tensors).
    cube_V3, faces_F3 = cube_mesh(1.0)
    verts_V3 = cube_V3 @ rotation_xy(0.5, 0.7).T + torch.tensor([0.1, 0.0, 4.0], dtype=torch.float64)
    verts_BV3 = verts_V3.expand(2, -1, -1)
    focal_B = torch.tensor([60.0, 90.0], dtype=torch.float64)
    c, size = 32.0, 64
    uv_BV2 = focal_B[:, None, None] * verts_BV3[..., :2] / verts_BV3[..., 2:] + c
    raster = rasterize(torch.cat([uv_BV2, verts_BV3[..., 2:]], -1), faces_F3, height=size, width=size)
    covered_BHW = raster.covered_BHW
    depth_P = raster.depth_BHW[covered_BHW]
    focal_P = focal_B[:, None, None].expand(2, size, size)[covered_BHW]
    kwargs = dict(fx=focal_B, fy=focal_B, cx=c, cy=c)

    flow_x_BHW2, _ = surface_flow(raster, faces_F3, verts_BV3 + torch.tensor([0.05, 0.0, 0.0]), **kwargs)
    assert_close(flow_x_BHW2[covered_BHW][:, 0], focal_P * 0.05 / depth_P)
    assert_close(flow_x_BHW2[covered_BHW][:, 1], torch.zeros_like(depth_P))

    dz = 0.3
    flow_z_BHW2, _ = surface_flow(raster, faces_F3, verts_BV3 + torch.tensor([0.0, 0.0, dz]), **kwargs)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre_P2 = torch.stack([cols, rows], -1).expand(2, size, size, 2)[covered_BHW].double() + 0.5
    assert_close(flow_z_BHW2[covered_BHW], (centre_P2 - c) * (depth_P / (depth_P + dz) - 1)[:, None])


def test_affine_surface_flow_of_a_pixel_translation_is_constant():
    verts_V3, faces_F3 = grid_mesh(4.0, 28.0, 6.0, 26.0, 1.0, 5)
    raster = rasterize(verts_V3[None], faces_F3, height=32, width=32, perspective=False)
    shift_2 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    flow_BHW2, valid_BHW = surface_flow_affine(raster, faces_F3, verts_V3[None, :, :2] + shift_2)
    assert_close(flow_BHW2[valid_BHW], shift_2.expand(int(valid_BHW.sum()), 2))


@pytest.mark.render
def test_depth_matches_pyrender_on_a_sphere():
    from raymotion.synth.render import Intrinsics, MeshRenderer

    size, f = 128, 150.0
    verts_V3, faces_F3 = icosphere(3, 0.5)
    verts_V3 = verts_V3 + torch.tensor([0.1, -0.05, 2.0], dtype=torch.float64)
    intrinsics = Intrinsics(fx=f, fy=f, cx=size / 2, cy=size / 2, width=size, height=size)
    with MeshRenderer(width=size, height=size) as renderer:
        _, depth_gl_HW = renderer.render(verts_V3.numpy(), faces_F3.numpy(), intrinsics=intrinsics, lit=False)
    raster = rasterize(project(verts_V3[None], f=f, c=size / 2), faces_F3, height=size, width=size)
    ours_HW = raster.covered_BHW[0].numpy()
    theirs_HW = depth_gl_HW > 0
    iou = (ours_HW & theirs_HW).sum() / (ours_HW | theirs_HW).sum()
    both_HW = ours_HW & theirs_HW
    dz = np.abs(raster.depth_BHW[0].numpy()[both_HW] - depth_gl_HW[both_HW])
    assert iou >= 0.99, iou
    assert np.median(dz) < 1e-3, np.median(dz)

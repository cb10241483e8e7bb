"""Tests for raymotion.losses.mesh_flow and raymotion.losses.consistency (METHOD.md section 3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from raymotion.losses.consistency import (
    flow_consistency_loss,
    flow_loss_at,
    flow_visibility,
    sample_flow,
)
from raymotion.losses.mesh_flow import mesh_flow

DTYPE = torch.float64
MAX_FLOW_224 = 50.0  # METHOD.md section 3 step 6 (the default of loss.flow_max_224)
PAPER = dict(max_flow_224=MAX_FLOW_224, normaliser_floor_px=0.0)  # the paper's form of the loss


def constant_flow(d_B2: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2, size, size) flow field equal to d_B2[b] everywhere, pixels."""
    return d_B2[:, :, None, None].expand(-1, -1, size, size).clone()


def smooth_flow(num_batch: int, size: int, *, phase: float = 0.0) -> torch.Tensor:
    """(B, 2, size, size) a smooth non-constant flow field (values at pixel centres), pixels."""
    centres = torch.arange(size, dtype=DTYPE) + 0.5
    y_HW, x_HW = torch.meshgrid(centres, centres, indexing="ij")
    fields = []
    for b in range(num_batch):
        dx = 2.0 * torch.sin(x_HW / 3.0 + phase + b) + 0.5 * torch.cos(y_HW / 2.0) + 1.0
        dy = 1.5 * torch.cos(x_HW / 4.0 - b) - torch.sin(y_HW / 5.0 + phase) + 0.5
        fields.append(torch.stack([dx, dy]))
    return torch.stack(fields)


def sphere_verts_pix(*, radius_m: float = 0.5, px_per_m: float = 100.0, centre_px: float = 64.0):
    """Icosphere at the camera-frame origin, orthographically projected: (1, V, 3) (x px, y px, z m)
    with z centred at 0 (negative = near side, as a body-model z would be), and faces (F, 3)."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius_m)
    verts_V3 = torch.tensor(sphere.vertices, dtype=DTYPE)
    faces_F3 = torch.tensor(sphere.faces, dtype=torch.int64)
    pix_V2 = verts_V3[:, :2] * px_per_m + centre_px
    return torch.cat([pix_V2, verts_V3[:, 2:]], dim=-1)[None], faces_F3, verts_V3


def translated_pair(num_batch: int = 2, num_verts: int = 6, *, seed: int = 0):
    """Random frame-1 positions in a 32 px crop, frame 2 = frame 1 + a per-pair constant d_B2."""
    gen = torch.Generator().manual_seed(seed)
    p1_BV2 = 8.0 + 16.0 * torch.rand(num_batch, num_verts, 2, generator=gen, dtype=DTYPE)
    d_B2 = torch.tensor([[3.0, 4.0], [-1.0, 2.0], [0.5, -2.5]], dtype=DTYPE)[:num_batch]
    return p1_BV2, p1_BV2 + d_B2[:, None, :], d_B2


# --- mesh_flow and sample_flow ---------------------------------------------------------------------


def test_mesh_flow_is_p2_minus_p1_and_zero_for_static_body():
    p1_BV2 = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    p2_BV2 = torch.tensor([[[1.5, 1.0], [3.0, 9.0]]])
    assert_close(mesh_flow(p1_BV2, p2_BV2), torch.tensor([[[0.5, -1.0], [0.0, 4.0]]]))
    assert_close(mesh_flow(p1_BV2, p1_BV2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="share a"):
        mesh_flow(p1_BV2, p2_BV2[:, :1])


def test_sample_flow_is_exact_on_a_linear_field_with_gradients_to_positions():
    # Flow linear in the pixel-centre coordinates: bilinear interpolation reproduces it exactly
    # between the outermost centres, and d flow / d position is the field's slope.
    size = 10
    centres = torch.arange(size, dtype=DTYPE) + 0.5
    y_HW, x_HW = torch.meshgrid(centres, centres, indexing="ij")
    flow_12HW = torch.stack([2.0 * x_HW + 1.0, -y_HW + 3.0 + 0.5 * x_HW])[None]
    # Away from the outermost centres (0.5 and 9.5), where border padding clamps the position.
    pos_1V2 = torch.tensor([[[0.7, 0.6], [3.2, 7.9], [9.3, 4.25], [6.0, 6.0]]], dtype=DTYPE, requires_grad=True)
    sampled_1V2 = sample_flow(flow_12HW, pos_1V2)
    x, y = pos_1V2[..., 0].detach(), pos_1V2[..., 1].detach()
    assert_close(sampled_1V2, torch.stack([2.0 * x + 1.0, -y + 3.0 + 0.5 * x], dim=-1))
    (grad_x,) = torch.autograd.grad(sampled_1V2[..., 0].sum(), pos_1V2)
    assert_close(grad_x, torch.tensor([[[2.0, 0.0]] * 4], dtype=DTYPE))


def test_sample_flow_uses_border_padding_outside_the_pixel_centres():
    flow_12HW = torch.arange(2 * 3 * 4, dtype=DTYPE).view(1, 2, 3, 4)
    # (0.1, 0.1) lies in the corner's outer half pixel; (-5, 1.5) and (4, 2.9) are outside / at the edge.
    pos_1V2 = torch.tensor([[[0.1, 0.1], [-5.0, 1.5], [4.0, 2.9]]], dtype=DTYPE)
    expected_1V2 = torch.tensor([[[0.0, 12.0], [4.0, 16.0], [11.0, 23.0]]], dtype=DTYPE)
    assert_close(sample_flow(flow_12HW, pos_1V2), expected_1V2)


# --- the loss on hand-computed cases ---------------------------------------------------------------


@pytest.mark.parametrize("normalise", [True, False])
def test_loss_is_zero_when_optical_flow_equals_mesh_flow(normalise):
    p1_BV2, p2_BV2, d_B2 = translated_pair(3)
    out = flow_consistency_loss(
        p1_BV2, p2_BV2, constant_flow(d_B2, 32), constant_flow(-d_B2, 32),
        torch.ones(3, 6, dtype=torch.bool), crop_size=32, normalise=normalise, **PAPER
    )
    assert out.kept_B.all()
    assert_close(out.loss, torch.tensor(0.0, dtype=DTYPE))
    assert_close(out.per_pair_fwd_B, torch.zeros(3, dtype=DTYPE))
    assert_close(out.per_pair_bwd_B, torch.zeros(3, dtype=DTYPE))


def test_loss_grows_with_a_known_flow_offset_before_and_after_normalisation():
    p1_BV2, p2_BV2, d_B2 = translated_pair(2)
    off_fwd_B2 = torch.tensor([[1.0, 2.0], [0.5, 0.0]], dtype=DTYPE)
    off_bwd_B2 = torch.tensor([[0.0, -3.0], [1.0, 1.0]], dtype=DTYPE)
    flow_fwd = constant_flow(d_B2 + off_fwd_B2, 32)
    flow_bwd = constant_flow(-d_B2 + off_bwd_B2, 32)
    vis_BV = torch.ones(2, 6, dtype=torch.bool)
    vis_BV[0, :3] = False  # the mask must not change a uniform error
    kwargs = dict(crop_size=32, max_flow_224=1e3)  # 50 px at 224 would reject 7.2 px at 32

    raw = flow_consistency_loss(p1_BV2, p2_BV2, flow_fwd, flow_bwd, vis_BV, normalise=False,
                                **kwargs, normaliser_floor_px=0.0)
    e_fwd_B = (off_fwd_B2**2).sum(-1)  # a^2 + b^2
    e_bwd_B = (off_bwd_B2**2).sum(-1)
    assert_close(raw.per_pair_fwd_B, e_fwd_B)
    assert_close(raw.per_pair_bwd_B, e_bwd_B)
    assert_close(raw.loss, (e_fwd_B.mean() + e_bwd_B.mean()) / 2)

    norm = flow_consistency_loss(p1_BV2, p2_BV2, flow_fwd, flow_bwd, vis_BV, **kwargs, normaliser_floor_px=0.0)
    mean_fwd_B = (d_B2 + off_fwd_B2).norm(dim=-1)  # |f| is the same at every vertex
    mean_bwd_B = (-d_B2 + off_bwd_B2).norm(dim=-1)
    assert_close(norm.mean_flow_fwd_B, mean_fwd_B)
    assert_close(norm.per_pair_fwd_B, e_fwd_B / mean_fwd_B**2)
    assert_close(norm.per_pair_bwd_B, e_bwd_B / mean_bwd_B**2)
    assert_close(norm.per_pair_fwd_B[0], torch.tensor(5.0 / 52.0, dtype=DTYPE))  # |(4, 6)|^2 = 52

    floored = flow_consistency_loss(
        p1_BV2, p2_BV2, flow_fwd, flow_bwd, vis_BV, normaliser_floor_px=0.25, **kwargs
    )
    assert_close(floored.per_pair_fwd_B, e_fwd_B / (mean_fwd_B + 0.25) ** 2)


def test_normalisation_makes_the_loss_invariant_to_the_flow_scale():
    gen = torch.Generator().manual_seed(1)
    p1_BV2 = 20.0 + 24.0 * torch.rand(2, 20, 2, generator=gen, dtype=DTYPE)
    d_BV2 = 4.0 * torch.rand(2, 20, 2, generator=gen, dtype=DTYPE) - 2.0
    flow_fwd = smooth_flow(2, 64)
    c_B2 = torch.tensor([[1.0, -1.5], [-0.7, 0.3]], dtype=DTYPE)  # constant: p2 moves with k
    vis_BV = torch.ones(2, 20, dtype=torch.bool)

    def loss(k: float, normalise: bool) -> torch.Tensor:
        return flow_consistency_loss(
            p1_BV2, p1_BV2 + k * d_BV2, k * flow_fwd, constant_flow(k * c_B2, 64), vis_BV,
            crop_size=64, normalise=normalise, max_flow_224=1e3, normaliser_floor_px=0.0
        ).loss

    k = 3.0
    assert loss(1.0, True) > 0
    assert_close(loss(k, True), loss(1.0, True))
    assert_close(loss(k, False), k**2 * loss(1.0, False))


# --- rejection and degenerate cases ----------------------------------------------------------------


def test_rejection_drops_exactly_the_pairs_at_or_above_the_crop_scaled_threshold():
    # Vertices on pixel centres whose grid coordinates are exact binary fractions, so a constant
    # field is sampled exactly and |f| = 25.0 hits the 112 px threshold (50 * 112 / 224) exactly.
    p1_1V2 = torch.tensor([[[10.5, 24.5], [52.5, 80.5], [80.5, 10.5]]], dtype=DTYPE)
    mag_B = torch.tensor([10.0, 24.9, 25.0, 40.0], dtype=DTYPE)
    d_B2 = torch.stack([mag_B, torch.zeros_like(mag_B)], dim=-1)
    off_B2 = torch.tensor([[0.0, 1.0], [0.0, 0.1], [0.0, 0.0], [0.0, 3.0]], dtype=DTYPE)
    p1_BV2 = p1_1V2.expand(4, -1, -1)
    p2_BV2 = p1_BV2 - d_B2[:, None, :]  # frame-2 positions do not matter for a constant bwd field
    vis_BV = torch.ones(4, 3, dtype=torch.bool)

    def run(size: int):
        return flow_consistency_loss(
            p1_BV2, p2_BV2, constant_flow(d_B2 + off_B2, size), constant_flow(torch.zeros_like(d_B2), size),
            vis_BV, crop_size=size, normalise=False, **PAPER
        )

    out_112 = run(112)
    assert out_112.reject_threshold_px == 25.0
    assert out_112.max_flow_B[2].item() == 25.0
    assert out_112.kept_B.tolist() == [True, True, False, False]
    # Mesh flow is -d, optical flow d + off: e_fwd = |2 d + off|^2 on kept pairs, 0 elsewhere;
    # backward: mesh flow +d, optical flow 0: e_bwd = |d|^2.
    e_fwd_B = (2 * d_B2 + off_B2).square().sum(-1)
    e_bwd_B = d_B2.square().sum(-1)
    kept = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=DTYPE)
    assert_close(out_112.per_pair_fwd_B, e_fwd_B * kept)
    assert_close(out_112.loss, ((e_fwd_B[:2].sum() + e_bwd_B[:2].sum()) / 2) / 2)

    out_224 = run(224)
    assert out_224.reject_threshold_px == 50.0
    assert out_224.kept_B.all()


def test_rejection_uses_both_directions_and_visible_vertices_only():
    p1_BV2 = torch.tensor([[[10.0, 30.0], [80.0, 30.0], [90.0, 60.0]]] * 3, dtype=DTYPE)
    # Left half of the crop: 100 px of flow; right half: 1 px.
    left_W = (torch.arange(112) < 56).to(DTYPE)
    field_2W = torch.stack([1.0 + 99.0 * left_W, torch.zeros(112, dtype=DTYPE)])
    flow_fwd = field_2W[None, :, None, :].expand(3, -1, 112, -1).clone()
    flow_bwd = constant_flow(torch.tensor([[-1.0, 0.0], [-1.0, 0.0], [-30.0, 0.0]], dtype=DTYPE), 112)
    vis_BV = torch.tensor([[True, True, True], [False, True, True], [False, True, True]])
    out = flow_consistency_loss(p1_BV2, p1_BV2, flow_fwd, flow_bwd, vis_BV, crop_size=112, **PAPER)
    # Pair 0 sees the 100 px flow; pair 1 hides it; pair 2 has a 30 px backward flow.
    assert out.kept_B.tolist() == [False, True, False]
    assert_close(out.max_flow_B, torch.tensor([100.0, 1.0, 30.0], dtype=DTYPE))


@pytest.mark.parametrize("case", ["no_visible_vertex", "all_rejected", "zero_flow_no_floor"])
def test_loss_is_zero_without_nan_when_no_pair_is_kept(case):
    p1_BV2, p2_BV2, d_B2 = translated_pair(2)
    p1_BV2.requires_grad_(True)
    vis_BV = torch.ones(2, 6, dtype=torch.bool)
    flow_fwd, flow_bwd = constant_flow(d_B2, 32), constant_flow(-d_B2, 32)
    if case == "no_visible_vertex":
        vis_BV[:] = False
    elif case == "all_rejected":
        flow_fwd = flow_fwd * 100.0
    else:
        flow_fwd, flow_bwd = torch.zeros_like(flow_fwd), torch.zeros_like(flow_bwd)
    out = flow_consistency_loss(p1_BV2, p2_BV2, flow_fwd, flow_bwd, vis_BV, crop_size=32, **PAPER)
    assert not out.kept_B.any()
    assert out.loss.item() == 0.0
    (grad,) = torch.autograd.grad(out.loss, p1_BV2)
    assert torch.isfinite(grad).all() and (grad == 0).all()
    for field in (out.per_pair_fwd_B, out.per_pair_bwd_B, out.mean_flow_fwd_B, out.max_flow_B):
        assert torch.isfinite(field).all()


def test_floor_keeps_a_zero_flow_pair_with_a_finite_loss():
    p1_BV2, p2_BV2, d_B2 = translated_pair(1)
    zeros = torch.zeros(1, 2, 32, 32, dtype=DTYPE)
    out = flow_consistency_loss(
        p1_BV2, p2_BV2, zeros, zeros, torch.ones(1, 6, dtype=torch.bool), crop_size=32,
        normaliser_floor_px=0.25, max_flow_224=MAX_FLOW_224
    )
    assert out.kept_B.all()
    assert_close(out.loss, d_B2.square().sum() / 0.25**2)


# --- gradients ---------------------------------------------------------------------------------------


def gradcheck_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    p1_BV2 = 3.0 + 9.0 * torch.rand(2, 5, 2, generator=gen, dtype=DTYPE)
    p2_BV2 = p1_BV2 + 3.0 * torch.rand(2, 5, 2, generator=gen, dtype=DTYPE) - 1.5
    # Bilinear sampling has kinks on pixel-centre lines (x = i + 0.5): stay away from them.
    for p_BV2 in (p1_BV2, p2_BV2):
        assert ((p_BV2 - 0.5).frac().abs() - 0.0).abs().min() > 1e-3
        assert ((p_BV2 - 0.5).frac().abs() - 1.0).abs().min() > 1e-3
    vis_BV = torch.ones(2, 5, dtype=torch.bool)
    vis_BV[1, 0] = False
    return p1_BV2.requires_grad_(True), p2_BV2.requires_grad_(True), vis_BV


def test_gradcheck_unnormalised_loss_through_mesh_flow_and_sampling():
    p1_BV2, p2_BV2, vis_BV = gradcheck_inputs()
    flow_fwd, flow_bwd = smooth_flow(2, 16), smooth_flow(2, 16, phase=1.3)

    def loss(p1, p2):
        return flow_consistency_loss(p1, p2, flow_fwd, flow_bwd, vis_BV, crop_size=16, normalise=False, **PAPER).loss

    assert torch.autograd.gradcheck(loss, (p1_BV2, p2_BV2))


def test_gradcheck_normalised_loss_with_constant_flow_fields():
    # The normaliser is detached, so a finite difference agrees with autograd only where it does not
    # move: constant fields (the sampling gradient is covered by the unnormalised check above).
    p1_BV2, p2_BV2, vis_BV = gradcheck_inputs(seed=1)
    flow_fwd = constant_flow(torch.tensor([[1.0, 2.0], [-0.5, 0.7]], dtype=DTYPE), 16)
    flow_bwd = constant_flow(torch.tensor([[0.3, -1.0], [2.0, 0.1]], dtype=DTYPE), 16)

    def loss(p1, p2):
        return flow_consistency_loss(
            p1, p2, flow_fwd, flow_bwd, vis_BV, crop_size=16, normaliser_floor_px=0.25, max_flow_224=MAX_FLOW_224
        ).loss

    assert torch.autograd.gradcheck(loss, (p1_BV2, p2_BV2))


def test_normalised_gradient_is_the_raw_gradient_over_the_detached_normaliser():
    p1_BV2, p2_BV2, vis_BV = gradcheck_inputs(seed=2)
    flow_fwd, flow_bwd = smooth_flow(2, 16), smooth_flow(2, 16, phase=0.4)
    kwargs = dict(crop_size=16, max_flow_224=MAX_FLOW_224)
    raw = flow_consistency_loss(p1_BV2, p2_BV2, flow_fwd, flow_bwd, vis_BV, normalise=False,
                                **kwargs, normaliser_floor_px=0.0)
    norm = flow_consistency_loss(p1_BV2, p2_BV2, flow_fwd, flow_bwd, vis_BV, **kwargs, normaliser_floor_px=0.0)
    grads_raw = torch.autograd.grad(raw.per_pair_fwd_B.sum(), (p1_BV2, p2_BV2))
    # Weight each pair by its normaliser so that the per-pair scaling is tested, not just a constant.
    grads_norm = torch.autograd.grad((norm.per_pair_fwd_B * norm.mean_flow_fwd_B**2).sum(), (p1_BV2, p2_BV2))
    for g_raw, g_norm in zip(grads_raw, grads_norm, strict=True):
        assert g_raw.abs().max() > 0
        assert_close(g_norm, g_raw)


# --- visibility ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zbuffer", "eroded"])
def test_visibility_on_a_sphere_keeps_the_near_side_and_drops_the_far_side(mode):
    verts1_1V3, faces_F3, verts_V3 = sphere_verts_pix()
    verts2_1V3 = verts1_1V3 + torch.tensor([3.0, 2.0, 0.0], dtype=DTYPE)
    vis_1V = flow_visibility(verts1_1V3, verts2_1V3, faces_F3, height=128, width=128, mode=mode)
    z_V = verts_V3[:, 2]
    near_V, far_V = z_V < -0.3, z_V > 0.05  # camera frame: z forward, the near side has z < 0
    assert near_V.sum() > 50 and far_V.sum() > 50
    assert vis_1V[0, near_V].all()
    assert not vis_1V[0, far_V].any()


def test_eroded_visibility_keeps_fewer_vertices_at_the_silhouette_than_the_zbuffer():
    verts_1V3, faces_F3, verts_V3 = sphere_verts_pix()
    kwargs = dict(height=128, width=128)
    zbuffer_1V = flow_visibility(verts_1V3, verts_1V3, faces_F3, mode="zbuffer", **kwargs)
    eroded_1V = flow_visibility(verts_1V3, verts_1V3, faces_F3, mode="eroded", **kwargs)
    rim_V = verts_V3[:, 2].abs() < 0.1  # within 10 cm of the silhouette's depth
    assert eroded_1V[0, rim_V].sum() < zbuffer_1V[0, rim_V].sum()
    assert not (eroded_1V & ~zbuffer_1V).any()  # on this mesh the eroded mask is a subset


@pytest.mark.parametrize("mode", ["zbuffer", "eroded"])
def test_visibility_is_the_and_of_both_frames(mode):
    verts1_1V3, faces_F3, _ = sphere_verts_pix()
    # Frame 2: the sphere turned by 90 degrees about the vertical axis (x, z) -> (z, -x), in place.
    x_px, z_m = (verts1_1V3[..., 0] - 64.0) / 100.0, verts1_1V3[..., 2]
    verts2_1V3 = torch.stack([z_m * 100.0 + 64.0, verts1_1V3[..., 1], -x_px], dim=-1)
    kwargs = dict(height=128, width=128, mode=mode)
    both_1V = flow_visibility(verts1_1V3, verts2_1V3, faces_F3, **kwargs)
    only1_1V = flow_visibility(verts1_1V3, verts1_1V3, faces_F3, **kwargs)
    only2_1V = flow_visibility(verts2_1V3, verts2_1V3, faces_F3, **kwargs)
    assert_close(both_1V, only1_1V & only2_1V)
    assert 0 < both_1V.sum() < only1_1V.sum()


@pytest.mark.parametrize("mode", ["zbuffer", "eroded"])
def test_flow_loss_at_is_zero_for_a_translated_sphere_with_its_exact_flow(mode):
    verts1_1V3, faces_F3, _ = sphere_verts_pix()
    d_12 = torch.tensor([[2.0, -1.5]], dtype=DTYPE)
    verts2_1V3 = verts1_1V3 + torch.cat([d_12, torch.zeros(1, 1, dtype=DTYPE)], dim=-1)
    out = flow_loss_at(
        verts1_1V3, verts2_1V3, faces_F3, constant_flow(d_12, 128), constant_flow(-d_12, 128),
        crop_size=128, visibility_mode=mode, **PAPER
    )
    assert out.kept_B.all() and out.num_visible_B.item() > 100
    assert_close(out.loss, torch.tensor(0.0, dtype=DTYPE))
    off = flow_loss_at(
        verts1_1V3, verts2_1V3, faces_F3, constant_flow(d_12 + 1.0, 128), constant_flow(-d_12, 128),
        crop_size=128, visibility_mode=mode, normalise=False, **PAPER
    )
    assert_close(off.per_pair_fwd_B, torch.tensor([2.0], dtype=DTYPE))


# --- argument checks -----------------------------------------------------------------------------------


def test_bad_arguments_raise_value_errors():
    p1_BV2, p2_BV2, d_B2 = translated_pair(1)
    flow = constant_flow(d_B2, 32)
    vis_BV = torch.ones(1, 6, dtype=torch.bool)
    with pytest.raises(ValueError, match="crop_size x crop_size"):
        flow_consistency_loss(p1_BV2, p2_BV2, flow, flow, vis_BV, crop_size=64, **PAPER)
    with pytest.raises(ValueError, match="bool"):
        flow_consistency_loss(p1_BV2, p2_BV2, flow, flow, vis_BV.double(), crop_size=32, **PAPER)
    with pytest.raises(ValueError, match="normaliser_floor_px"):
        flow_consistency_loss(p1_BV2, p2_BV2, flow, flow, vis_BV, crop_size=32, normaliser_floor_px=-1.0,
                              max_flow_224=MAX_FLOW_224)
    with pytest.warns(UserWarning, match="ignored"):
        flow_consistency_loss(
            p1_BV2, p2_BV2, flow, flow, vis_BV, crop_size=32, normalise=False, normaliser_floor_px=0.25,
            max_flow_224=MAX_FLOW_224
        )
    verts_1V3, faces_F3, _ = sphere_verts_pix()
    with pytest.raises(ValueError, match="zbuffer"):
        flow_visibility(verts_1V3, verts_1V3, faces_F3, height=128, width=128, mode="raycast")
    assert math.isfinite(
        flow_consistency_loss(p1_BV2, p2_BV2, flow, flow, vis_BV, crop_size=32, **PAPER).loss.item()
    )

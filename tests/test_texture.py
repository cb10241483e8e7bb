import pytest
import torch
from torch.testing import assert_close

from raymotion.losses.texture import (
    batch_texture_consistency_loss,
    sample_vertex_colors,
    texture_consistency_loss,
)


def _image(seed: int, *, height: int = 6, width: int = 8) -> torch.Tensor:
    return torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _interior_verts(seed: int) -> torch.Tensor:
    """(2, 5, 2) float64 pixel positions at least one pixel inside a 8 x 6 image."""
    gen = torch.Generator().manual_seed(seed)
    unit = torch.rand(2, 5, 2, generator=gen, dtype=torch.float64)
    return 1.0 + unit * torch.tensor([6.0, 4.0], dtype=torch.float64)


def test_sampling_at_a_pixel_centre_returns_that_pixel():
    image = _image(0)
    rows, cols = torch.tensor([0, 5, 2]), torch.tensor([7, 0, 3])
    verts = torch.stack((cols + 0.5, rows + 0.5), dim=-1).to(torch.float64).expand(2, 3, 2)
    expected = image[:, :, rows, cols].transpose(1, 2)
    assert_close(sample_vertex_colors(image, verts), expected)


def test_sampling_between_two_pixel_centres_averages_them():
    image = _image(1)
    # x = 2.0 lies half-way between the centres of columns 1 and 2; y = 3.5 is row 3's centre.
    verts = torch.tensor([[[2.0, 3.5]]], dtype=torch.float64).expand(2, 1, 2)
    expected = ((image[:, :, 3, 1] + image[:, :, 3, 2]) / 2)[:, None]
    assert_close(sample_vertex_colors(image, verts), expected)


def test_identical_images_and_static_vertices_give_zero():
    image, verts = _image(2), _interior_verts(3)
    colors = sample_vertex_colors(image, verts)
    vis = torch.ones(2, 5, dtype=torch.bool)
    loss = texture_consistency_loss(colors, sample_vertex_colors(image.clone(), verts), vis)
    assert_close(loss, torch.zeros(2, dtype=torch.float64))


def test_known_colour_offset_gives_its_squared_norm():
    image1, verts = _image(4), _interior_verts(5)
    offset = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    image2 = image1 + offset[:, None, None]
    vis = torch.tensor([[True, False, True, True, False], [False] * 5])
    colors1, colors2 = sample_vertex_colors(image1, verts), sample_vertex_colors(image2, verts)
    loss = texture_consistency_loss(colors1, colors2, vis)
    # 0.01 + 0.04 + 0.0025 on every visible vertex; the second pair has none visible.
    assert_close(loss, torch.tensor([0.0525, 0.0], dtype=torch.float64))


def test_batch_reductions_by_hand():
    colors1 = torch.zeros(2, 3, 3)
    colors2 = torch.zeros(2, 3, 3)
    colors2[0, :, 0] = 1.0  # pair 0: error 1 on each vertex
    colors2[1, :, 0] = 2.0  # pair 1: error 4 on each vertex
    vis = torch.tensor([[True, True, True], [True, False, False]])
    # pooled: (3 * 1 + 1 * 4) / 4 vertices; pair mean: (1 + 4) / 2
    assert_close(batch_texture_consistency_loss(colors1, colors2, vis), torch.tensor(7.0 / 4.0))
    pair_mean = batch_texture_consistency_loss(colors1, colors2, vis, reduction="pair_mean")
    assert_close(pair_mean, torch.tensor(2.5))
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert_close(batch_texture_consistency_loss(colors1, colors2, none), torch.tensor(0.0))
    with pytest.raises(ValueError, match="pair_mean"):
        batch_texture_consistency_loss(colors1, colors2, vis, reduction="sum")


def test_gradients_flow_to_vertex_positions_by_hand():
    # A ramp image I[i, j] = j: inside the image the sampled value is x - 0.5 and d value / dx = 1.
    ramp = torch.arange(8, dtype=torch.float64).expand(1, 3, 6, 8).clone()
    verts = torch.tensor([[[3.2, 2.5]]], dtype=torch.float64, requires_grad=True)
    colors1 = sample_vertex_colors(ramp, verts)
    assert_close(colors1, torch.full((1, 1, 3), 2.7, dtype=torch.float64))
    colors2 = torch.full((1, 1, 3), 2.0, dtype=torch.float64)
    texture_consistency_loss(colors1, colors2, torch.ones(1, 1, dtype=torch.bool)).sum().backward()
    # loss = 3 (x - 0.5 - 2)^2, d loss / dx = 6 * 0.7; y lies on a row centre where the ramp is flat.
    assert_close(verts.grad, torch.tensor([[[4.2, 0.0]]], dtype=torch.float64))

"""TexturePose consistency: a body point must have the same colour in both frames of a pair.

Pavlakos et al., "TexturePose", ICCV 2019; the paper uses it as a baseline and in combination
with the flow loss (METHOD.md section 5). As in the paper's code (AndreiDavydov/videoHMR_SSL
src/procedures/procedures/finetune_seqlen2_texturepose.py), each frame's image is sampled
bilinearly at that frame's projected vertices and the squared L2 colour difference is averaged
over vertices visible in both frames. Visibility comes from the caller (z-buffer of the
predicted mesh, `raymotion.geometry.rasterize`).

Tensor naming legend (shape suffixes):
    B = batch of frame pairs, V = mesh vertices, H, W = image height and width;
    trailing digits are literal sizes (`image_B3HW` is (B, 3, H, W), `verts_pix_BV2` is (B, V, 2)).

Pixels: origin at the top-left corner of the top-left pixel, pixel (i, j) centred at
(j + 0.5, i + 0.5) as (x, y); x is the column, y the row (same convention as
`raymotion.geometry.camera`).
"""

import torch
import torch.nn.functional as F

TEXTURE_REDUCTIONS: tuple[str, ...] = ("pooled", "pair_mean")


def sample_vertex_colors(image_B3HW: torch.Tensor, verts_pix_BV2: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample an image at projected vertex positions (differentiable in both).

    Pixel position p maps to grid_sample's normalised coordinate 2 p / size - 1 with
    align_corners=False, so a vertex at a pixel centre returns that pixel's value exactly.
    Samples outside the image blend with zeros (padding_mode="zeros"); such vertices should be
    masked out by visibility.

    Args:
        image_B3HW: (B, 3, H, W) image (any channel count works), float, e.g. RGB in [0, 1].
        verts_pix_BV2: (B, V, 2) projected vertices (x, y), pixels of this image, pixel-edge
            convention (see the module docstring).

    Returns:
        colors_BV3: (B, V, 3) sampled colours, same units as the image.
    """
    height, width = image_B3HW.shape[-2:]
    size_2 = torch.tensor((width, height), dtype=verts_pix_BV2.dtype, device=verts_pix_BV2.device)
    grid_B1V2 = (2.0 * verts_pix_BV2 / size_2 - 1.0)[:, None]
    # padding_mode="zeros" as the paper's code (grid_sample's default).
    sampled_B31V = F.grid_sample(
        image_B3HW, grid_B1V2, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return sampled_B31V[:, :, 0].transpose(1, 2)


def _visible_squared_error(
    colors1_BV3: torch.Tensor, colors2_BV3: torch.Tensor, vis_BV: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair: (sum over visible vertices of ||c1 - c2||^2, number of visible vertices), both (B,)."""
    vis_BV = vis_BV.to(colors1_BV3.dtype)
    squared_BV = ((colors1_BV3 - colors2_BV3) ** 2).sum(dim=-1)
    return (vis_BV * squared_BV).sum(dim=-1), vis_BV.sum(dim=-1)


def texture_consistency_loss(
    colors1_BV3: torch.Tensor, colors2_BV3: torch.Tensor, vis_BV: torch.Tensor
) -> torch.Tensor:
    """Per-pair TexturePose error: mean over jointly visible vertices of ||c1(v) - c2(v)||^2.

    Args:
        colors1_BV3: (B, V, 3) vertex colours sampled from frame 1 at its projected vertices.
        colors2_BV3: (B, V, 3) vertex colours sampled from frame 2 at its projected vertices.
        vis_BV: (B, V) bool or 0/1, True where the vertex is visible in frame 1 AND frame 2.

    Returns:
        (B,) squared L2 colour difference (summed over channels) averaged over the pair's
            visible vertices, image units squared; 0 for a pair with no visible vertex.
    """
    squared_sum_B, num_visible_B = _visible_squared_error(colors1_BV3, colors2_BV3, vis_BV)
    return squared_sum_B / num_visible_B.clamp_min(1.0)


def batch_texture_consistency_loss(
    colors1_BV3: torch.Tensor,
    colors2_BV3: torch.Tensor,
    vis_BV: torch.Tensor,
    *,
    reduction: str = "pooled",
) -> torch.Tensor:
    """TexturePose loss of a batch of pairs.

    Reductions (`TEXTURE_REDUCTIONS`):
        "pooled": sum over all pairs' visible vertices / their total count, the paper's code;
            pairs showing more visible vertices weigh more.
        "pair_mean": mean over pairs of `texture_consistency_loss`; every pair weighs alike
            (pairs with no visible vertex count as 0), like the flow loss (METHOD.md 3.7).
    Both give 0 when no vertex is visible anywhere.

    Args:
        colors1_BV3: (B, V, 3) vertex colours sampled from frame 1 at its projected vertices.
        colors2_BV3: (B, V, 3) vertex colours sampled from frame 2 at its projected vertices.
        vis_BV: (B, V) bool or 0/1, True where the vertex is visible in both frames.
        reduction: one of `TEXTURE_REDUCTIONS`.

    Returns:
        () loss, image units squared.
    """
    if reduction not in TEXTURE_REDUCTIONS:
        raise ValueError(f"texture reduction {reduction!r} is not one of {list(TEXTURE_REDUCTIONS)}")
    if reduction == "pair_mean":
        return texture_consistency_loss(colors1_BV3, colors2_BV3, vis_BV).mean()
    squared_sum_B, num_visible_B = _visible_squared_error(colors1_BV3, colors2_BV3, vis_BV)
    return squared_sum_B.sum() / num_visible_B.sum().clamp_min(1.0)

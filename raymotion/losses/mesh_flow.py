"""Mesh ("body") flow: the image-plane displacement of projected vertices between two frames.

METHOD.md section 3 step 2: F_B(1->2)(v) = p2(v) - p1(v) and F_B(2->1) = -F_B(1->2), for every vertex.

Tensor naming legend (shape suffixes):
    B = batch of frame pairs, V = mesh vertices; trailing digits are literal sizes.

Frames and units: crop pixels, x right (column), y down (row), origin at the top-left corner of the
top-left pixel (pixel centres at i + 0.5), as in raymotion/geometry/camera.py. Each frame of a pair
is cut with its own box; both projections must be in the crop coordinates that the optical flow
between the two crops uses.
"""

from __future__ import annotations

import torch


def mesh_flow(verts_pix1_BV2: torch.Tensor, verts_pix2_BV2: torch.Tensor) -> torch.Tensor:
    """Displacement of each projected vertex from frame 1 to frame 2.

    Differentiable with respect to both inputs (the refined network predicts both frames).

    Args:
        verts_pix1_BV2: (B, V, 2) projected vertices of frame 1, crop pixels (x, y).
        verts_pix2_BV2: (B, V, 2) the same vertices projected in frame 2, crop pixels (x, y).

    Returns:
        flow_BV2: (B, V, 2) p2 - p1, pixels (dx, dy). Swap the arguments for the 2 -> 1 flow.
    """
    if verts_pix1_BV2.shape != verts_pix2_BV2.shape or verts_pix1_BV2.shape[-1:] != (2,):
        raise ValueError(
            "verts_pix1_BV2 and verts_pix2_BV2 must share a (B, V, 2) shape, got "
            f"{tuple(verts_pix1_BV2.shape)} and {tuple(verts_pix2_BV2.shape)}"
        )
    return verts_pix2_BV2 - verts_pix1_BV2

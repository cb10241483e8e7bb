"""Optical-flow consistency loss: the mesh flow of the predicted bodies must match the image's flow.

METHOD.md section 3 (steps 2, 4, 5, 6, 7), the paper's exact form by default, plus the options that
FACTS.md ("What made the loss carry signal") measured: an eroded visibility mask and a floor in the
per-pair normaliser.

Tensor naming legend (shape suffixes):
    B = batch of frame pairs, V = mesh vertices, F = faces, H, W = optical-flow field height and width
    (the crop, H = W = crop_size), T = 2 B (frame 1 of every pair, then frame 2); trailing digits are
    literal sizes (`flow_B2HW`, `vis_BV`).

Frames and units:
    Crop pixels: x right (column), y down (row), origin at the top-left corner of the top-left pixel,
        pixel (row j, column i) holds the value at its centre (i + 0.5, j + 0.5): the convention of
        grid_sample(align_corners=False) and of raymotion/geometry/camera.py.
    Optical flow `flow_B2HW`: channel 0 = dx, channel 1 = dy, pixels, such that the content at pixel
        (x, y) of the first image is at (x + dx, y + dy) in the second (raymotion/flow/estimator.py
        returns (H, W, 2); callers permute it to (2, H, W)).
    Depth (visibility only): camera z, metres, OpenCV camera frame (z forward, larger = farther).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raymotion.geometry.rasterize import eroded_vertex_visibility, rasterize, vertex_visibility
from raymotion.losses.mesh_flow import mesh_flow

# METHOD.md section 3 step 6: pairs whose largest visible flow reaches a limit at a 224 px crop are
# dropped (occlusions, shot cuts); the limit (loss.flow_max_224: 50 px) scales with the crop size.
REFERENCE_CROP_SIZE = 224

VISIBILITY_MODES = ("zbuffer", "eroded")

# Affine (weak-perspective) rasterisation needs z > 0; any monotone depth orders the surfaces, so the
# z of each mesh is shifted to start at this many metres (a shift keeps metres for the eroded mask).
_AFFINE_MIN_DEPTH = 1.0


@dataclass(frozen=True, slots=True)
class FlowLossOutput:
    """What `flow_consistency_loss` computed.

    Attributes:
        loss: () scalar, (L_fwd + L_bwd) / 2; 0 (with a zero gradient) when no pair is kept.
        per_pair_fwd_B: (B,) e of each pair for the 1 -> 2 direction (normalised if normalise=True),
            pixels^2 unnormalised, dimensionless normalised; 0 for pairs that were not kept.
            Carries gradients.
        per_pair_bwd_B: (B,) the same for the 2 -> 1 direction.
        kept_B: (B,) bool, pairs that entered the loss: at least one visible vertex, largest visible
            flow (both directions) below `reject_threshold_px`, and a positive normaliser.
        num_visible_B: (B,) int64, vertices with m(v) = 1.
        mean_flow_fwd_B: (B,) mean over visible vertices of |f_fwd|, pixels, detached; 0 if none.
        mean_flow_bwd_B: (B,) the same for f_bwd.
        max_flow_B: (B,) largest visible |f| over both directions, pixels, detached; 0 if none.
        raw_fwd_B: (B,) unnormalised e (mean squared end-point error over visible vertices), pixels^2,
            detached, for every pair (kept or not); 0 if no visible vertex.
        raw_bwd_B: (B,) the same for the 2 -> 1 direction.
        reject_threshold_px: max_flow_224 * crop_size / 224, pixels.
    """

    loss: torch.Tensor
    per_pair_fwd_B: torch.Tensor
    per_pair_bwd_B: torch.Tensor
    kept_B: torch.Tensor
    num_visible_B: torch.Tensor
    mean_flow_fwd_B: torch.Tensor
    mean_flow_bwd_B: torch.Tensor
    max_flow_B: torch.Tensor
    raw_fwd_B: torch.Tensor
    raw_bwd_B: torch.Tensor
    reject_threshold_px: float


def sample_flow(flow_B2HW: torch.Tensor, verts_pix_BV2: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of an optical-flow field at projected vertex positions (METHOD.md step 4).

    grid_sample(align_corners=False) matches the pixel convention (pixel i's value sits at i + 0.5).
    Gradients flow to the positions as well as to the field: the paper's code does not detach p, so
    the loss also moves vertices along the flow field's spatial gradient.

    Padding: 'border'. Between the outermost pixel centres and the crop edge (the last half pixel),
    and outside the crop, the nearest edge value is used. The paper's code used grid_sample's
    default 'zeros', which blends the flow toward 0 in that last half pixel and returns 0 beyond it:
    a spurious error for any vertex the mask keeps there (the 'zbuffer' mask keeps a vertex whose
    face wins a pixel even if the vertex itself lies outside the crop). The eroded mask never keeps
    such vertices, so the choice matters only for the z-buffer mask.

    Args:
        flow_B2HW: (B, 2, H, W) optical flow, pixels, channels (dx, dy).
        verts_pix_BV2: (B, V, 2) positions, crop pixels (x, y), pixel-corner origin; same dtype as
            flow_B2HW.

    Returns:
        flow_BV2: (B, V, 2) sampled flow, pixels (dx, dy).
    """
    if flow_B2HW.ndim != 4 or flow_B2HW.shape[1] != 2:
        raise ValueError(f"flow_B2HW must have shape (B, 2, H, W), got {tuple(flow_B2HW.shape)}")
    num_batch = flow_B2HW.shape[0]
    if verts_pix_BV2.ndim != 3 or verts_pix_BV2.shape[-1] != 2 or verts_pix_BV2.shape[0] != num_batch:
        raise ValueError(
            f"verts_pix_BV2 must have shape (B, V, 2) with B = {num_batch} (the flow's batch), "
            f"got {tuple(verts_pix_BV2.shape)}"
        )
    height, width = flow_B2HW.shape[-2:]
    # Pixel-corner coordinates [0, W] map to grid_sample's [-1, 1] with align_corners=False.
    size_2 = verts_pix_BV2.new_tensor([width, height])
    grid_BV12 = (2.0 * verts_pix_BV2 / size_2 - 1.0)[:, :, None, :]
    sampled_B2V1 = F.grid_sample(
        flow_B2HW, grid_BV12, mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled_B2V1[..., 0].permute(0, 2, 1)


def flow_visibility(
    verts_pix1_BV3: torch.Tensor,
    verts_pix2_BV3: torch.Tensor,
    faces_F3: torch.Tensor,
    *,
    height: int,
    width: int,
    mode: str,
    perspective: bool = False,
) -> torch.Tensor:
    """m(v): the vertex is visible in frame 1 AND in frame 2, from the predicted meshes only.

    Computed without gradients (the mask is a constant of the loss). Modes:
      - 'zbuffer' (METHOD.md step 5, the paper): a vertex is visible if a face that holds it wins at
        least one pixel of the z-buffer (`vertex_visibility`). Keeps vertices at silhouette edges,
        where bilinear sampling mixes body and background flow.
      - 'eroded' (FACTS.md): the vertex is on the visible surface at its pixel and its 3x3 pixel
        neighbourhood lies inside the silhouette with a depth span below 10 cm
        (`eroded_vertex_visibility` with its defaults). Measured to make the loss carry signal.

    What to pass as z: camera-frame depth in metres (OpenCV frame, z forward, larger = farther),
    i.e. the z of the same vertices whose x, y were projected. For a weak-perspective prediction
    (perspective=False) pass the body-model vertex z in the camera-frame orientation that the
    projection used (e.g. SPIN's frame after its 180-degree flip); it may be negative (the body is
    centred near 0): each mesh's z is shifted to start at 1 m before rasterising, which keeps the
    ordering and the metre units that the eroded mask's thresholds assume. For a pinhole projection
    (perspective=True) pass the true camera z (> 0), unshifted.

    Args:
        verts_pix1_BV3: (B, V, 3) frame 1: [..., :2] crop pixels (x, y), [..., 2] depth, metres.
        verts_pix2_BV3: (B, V, 3) frame 2, same layout.
        faces_F3: (F, 3) integer vertex indices.
        height: H, crop height, pixels.
        width: W, crop width, pixels.
        mode: 'zbuffer' or 'eroded'.
        perspective: True if x, y come from a pinhole projection of z (perspective-correct
            rasterisation); False for weak perspective / orthographic.

    Returns:
        vis_BV: (B, V) bool.
    """
    if mode not in VISIBILITY_MODES:
        raise ValueError(f"mode must be one of {VISIBILITY_MODES}, got {mode!r}")
    if verts_pix1_BV3.shape != verts_pix2_BV3.shape or verts_pix1_BV3.shape[-1:] != (3,):
        raise ValueError(
            "verts_pix1_BV3 and verts_pix2_BV3 must share a (B, V, 3) shape, got "
            f"{tuple(verts_pix1_BV3.shape)} and {tuple(verts_pix2_BV3.shape)}"
        )
    num_batch, num_verts = verts_pix1_BV3.shape[:2]
    with torch.no_grad():
        # Both frames in one rasteriser call: its per-call bucketing overhead is paid once.
        verts_pix_TV3 = torch.cat([verts_pix1_BV3, verts_pix2_BV3]).detach()
        if not perspective:
            z_TV1 = verts_pix_TV3[..., 2:]
            z_TV1 = z_TV1 - z_TV1.amin(dim=1, keepdim=True) + _AFFINE_MIN_DEPTH
            verts_pix_TV3 = torch.cat([verts_pix_TV3[..., :2], z_TV1], dim=-1)
        raster = rasterize(verts_pix_TV3, faces_F3, height=height, width=width, perspective=perspective)
        if mode == "zbuffer":
            vis_TV = vertex_visibility(raster, faces_F3, num_verts)
        else:
            vis_TV = eroded_vertex_visibility(verts_pix_TV3, raster)
        vis_BV = vis_TV[:num_batch] & vis_TV[num_batch:]
    return vis_BV


def _direction_terms(
    body_flow_BV2: torch.Tensor, optical_flow_BV2: torch.Tensor, vis_BV: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw e, mean visible |f| detached, max visible |f| detached), each (B,); 0 without visible v."""
    count_B = vis_BV.sum(dim=1).clamp_min(1).to(body_flow_BV2.dtype)
    sq_err_BV = torch.where(vis_BV, (body_flow_BV2 - optical_flow_BV2).square().sum(dim=-1), 0.0)
    raw_B = sq_err_BV.sum(dim=1) / count_B
    norm_BV = torch.where(vis_BV, optical_flow_BV2.detach().norm(dim=-1), 0.0)
    return raw_B, norm_BV.sum(dim=1) / count_B, norm_BV.amax(dim=1)


def flow_consistency_loss(
    verts_pix1_BV2: torch.Tensor,
    verts_pix2_BV2: torch.Tensor,
    flow_fwd_B2HW: torch.Tensor,
    flow_bwd_B2HW: torch.Tensor,
    vis_BV: torch.Tensor,
    *,
    crop_size: int,
    max_flow_224: float,
    normaliser_floor_px: float,
    normalise: bool = True,
) -> FlowLossOutput:
    """L_flow of METHOD.md section 3, steps 2, 4, 6, 7 (squared L2, no robust norm).

    Per pair and direction (forward: F_B = p2 - p1, f = flow_fwd sampled at p1; backward:
    F_B = p1 - p2, f = flow_bwd sampled at p2):
        e = sum_v m(v) |F_B(v) - f(v)|^2 / sum_v m(v)                       [pixels^2]
        e <- e / (mean_{v: m(v)} |f(v)| + normaliser_floor_px)^2  if normalise (normaliser detached)
    A pair is dropped (both directions) if it has no visible vertex, if its largest visible |f| in
    either direction is >= max_flow_224 * crop_size / 224 px, or if its normaliser is 0 (all visible
    flow exactly 0 with no floor: the paper's form is undefined there). L_dir = mean of e over kept
    pairs (0 if none); loss = (L_fwd + L_bwd) / 2. Gradients reach both vertex sets through the mesh
    flow and through the sampling positions (p is not detached, as in the paper's code).

    normaliser_floor_px = 0 is the paper's exact form. FACTS.md measured that near-static pairs
    (estimator flow near 0) then dominate (one pair scored 173 vs 4 for a static prediction) and
    that a floor of 0.25 px fixes most of it.

    Args:
        verts_pix1_BV2: (B, V, 2) frame 1 projected vertices, crop pixels (x, y).
        verts_pix2_BV2: (B, V, 2) frame 2 projected vertices, crop pixels (x, y), each frame in its
            own crop: the crops the flows were computed between.
        flow_fwd_B2HW: (B, 2, S, S) optical flow crop 1 -> crop 2, pixels (dx, dy).
        flow_bwd_B2HW: (B, 2, S, S) optical flow crop 2 -> crop 1, pixels (dx, dy).
        vis_BV: (B, V) bool, m(v), e.g. from `flow_visibility`.
        crop_size: S, crop side, pixels; the flow fields must be S x S (the vertex pixels and the
            flow share one pixel grid).
        max_flow_224: rejection threshold at a 224 px crop, pixels; scaled by crop_size / 224
            (``loss.flow_max_224``; METHOD.md: 50).
        normaliser_floor_px: floor added to the mean visible |f| before squaring, pixels, >= 0
            (``loss.flow_normaliser_floor_px``; 0 = the paper's form).
        normalise: divide each pair's error by its squared (floored) mean visible flow.

    Returns:
        FlowLossOutput (loss and per-pair diagnostics).
    """
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    if max_flow_224 <= 0:
        raise ValueError(f"max_flow_224 must be positive, got {max_flow_224}")
    if normaliser_floor_px < 0:
        raise ValueError(f"normaliser_floor_px must be >= 0, got {normaliser_floor_px}")
    if normaliser_floor_px > 0 and not normalise:
        warnings.warn(
            f"normaliser_floor_px={normaliser_floor_px} is ignored because normalise=False", stacklevel=2
        )
    for name, flow_B2HW in (("flow_fwd_B2HW", flow_fwd_B2HW), ("flow_bwd_B2HW", flow_bwd_B2HW)):
        if flow_B2HW.shape[-2:] != (crop_size, crop_size):
            raise ValueError(
                f"{name} must be crop_size x crop_size = {crop_size} x {crop_size} px, got "
                f"{tuple(flow_B2HW.shape[-2:])}"
            )
    if vis_BV.shape != verts_pix1_BV2.shape[:2] or vis_BV.dtype != torch.bool:
        raise ValueError(
            f"vis_BV must be a bool tensor of shape {tuple(verts_pix1_BV2.shape[:2])}, got "
            f"{vis_BV.dtype} {tuple(vis_BV.shape)}"
        )

    body_fwd_BV2 = mesh_flow(verts_pix1_BV2, verts_pix2_BV2)
    optical_fwd_BV2 = sample_flow(flow_fwd_B2HW, verts_pix1_BV2)
    optical_bwd_BV2 = sample_flow(flow_bwd_B2HW, verts_pix2_BV2)
    raw_fwd_B, mean_fwd_B, max_fwd_B = _direction_terms(body_fwd_BV2, optical_fwd_BV2, vis_BV)
    raw_bwd_B, mean_bwd_B, max_bwd_B = _direction_terms(-body_fwd_BV2, optical_bwd_BV2, vis_BV)

    reject_threshold_px = max_flow_224 * crop_size / REFERENCE_CROP_SIZE
    max_flow_B = torch.maximum(max_fwd_B, max_bwd_B)
    kept_B = (vis_BV.sum(dim=1) > 0) & (max_flow_B < reject_threshold_px)
    if normalise:
        norm_fwd_B = (mean_fwd_B + normaliser_floor_px).square()
        norm_bwd_B = (mean_bwd_B + normaliser_floor_px).square()
        kept_B &= (norm_fwd_B > 0) & (norm_bwd_B > 0)
    else:
        norm_fwd_B = norm_bwd_B = torch.ones_like(raw_fwd_B)
    # Safe denominators for dropped pairs: where() would pass 0 * inf = NaN gradients through 1 / 0.
    per_pair_fwd_B = torch.where(kept_B, raw_fwd_B / torch.where(kept_B, norm_fwd_B, 1.0), 0.0)
    per_pair_bwd_B = torch.where(kept_B, raw_bwd_B / torch.where(kept_B, norm_bwd_B, 1.0), 0.0)
    num_kept = kept_B.sum().clamp_min(1)
    loss = (per_pair_fwd_B.sum() / num_kept + per_pair_bwd_B.sum() / num_kept) / 2.0
    return FlowLossOutput(
        loss=loss,
        per_pair_fwd_B=per_pair_fwd_B,
        per_pair_bwd_B=per_pair_bwd_B,
        kept_B=kept_B,
        num_visible_B=vis_BV.sum(dim=1),
        mean_flow_fwd_B=mean_fwd_B,
        mean_flow_bwd_B=mean_bwd_B,
        max_flow_B=max_flow_B,
        raw_fwd_B=raw_fwd_B.detach(),
        raw_bwd_B=raw_bwd_B.detach(),
        reject_threshold_px=reject_threshold_px,
    )


def flow_loss_at(
    verts_pix1_BV3: torch.Tensor,
    verts_pix2_BV3: torch.Tensor,
    faces_F3: torch.Tensor,
    flow_fwd_B2HW: torch.Tensor,
    flow_bwd_B2HW: torch.Tensor,
    *,
    crop_size: int,
    visibility_mode: str,
    perspective: bool = False,
    max_flow_224: float,
    normaliser_floor_px: float,
    normalise: bool = True,
) -> FlowLossOutput:
    """`flow_visibility` then `flow_consistency_loss`, for vertices given with their depth.

    Args:
        verts_pix1_BV3, verts_pix2_BV3: (B, V, 3) per frame: crop pixels (x, y) and depth z, metres
            (see `flow_visibility` for what z to pass).
        faces_F3: (F, 3) integer vertex indices.
        flow_fwd_B2HW, flow_bwd_B2HW: (B, 2, S, S) optical flow 1 -> 2 and 2 -> 1, pixels.
        crop_size: S, pixels.
        visibility_mode: 'zbuffer' (paper) or 'eroded' (FACTS.md).
        perspective, max_flow_224, normaliser_floor_px, normalise: as in `flow_visibility` and
            `flow_consistency_loss`.

    Returns:
        FlowLossOutput.
    """
    vis_BV = flow_visibility(
        verts_pix1_BV3, verts_pix2_BV3, faces_F3,
        height=crop_size, width=crop_size, mode=visibility_mode, perspective=perspective,
    )
    return flow_consistency_loss(
        verts_pix1_BV3[..., :2], verts_pix2_BV3[..., :2], flow_fwd_B2HW, flow_bwd_B2HW, vis_BV,
        crop_size=crop_size, max_flow_224=max_flow_224,
        normaliser_floor_px=normaliser_floor_px, normalise=normalise,
    )

"""A batched z-buffer rasteriser in pure torch, vertex visibility, and exact surface optical flow.

Device-agnostic (CPU and CUDA), no Python loop over faces or pixels: faces are bucketed by the size
of their pixel bounding box (rounded up to powers of two, separately in x and y), and every face of a
bucket tests a fixed window of candidate pixel centres with edge functions, in bounded chunks; one
integer scatter-min per chunk resolves the z-buffer. The Python loop runs over buckets and chunks
only (about 10 for a body mesh), after a single host sync. Memory: O(B F) for the per-face setup plus
a fixed bound per chunk. Not differentiable in the face ids; see `rasterize` for the weights.

Tensor naming legend (shape suffixes):
    B = batch of meshes, V = mesh vertices, F = faces, H, W = image height and width,
    N = candidate faces, X, Y = window width and height, P = pixels of the flattened batch,
    Q = covered pixels; trailing digits are literal sizes.

Frames and units (as in raymotion/geometry/camera.py):
    Pixels: x right (column), y down (row), origin at the top-left corner of the top-left pixel, so
        pixel (row j, column i) is sampled at its centre (i + 0.5, j + 0.5); the convention of
        grid_sample(align_corners=False).
    Camera frame: OpenCV, x right, y down, z forward, metres. Depth is camera z (not ray length).

Rules (what "the pixel belongs to a face" means here):
    - A face covers a pixel if the pixel centre lies inside it or on its boundary. Each edge function
      is evaluated with the edge's endpoints in a canonical order (lower vertex id first), so two
      faces that share an edge compute exactly opposite values there: a centre on a shared edge is
      kept by both (the z-buffer then picks one) and never falls into a crack.
    - Both windings count (no back-face culling); the nearest surface (smallest z) wins, ties go
      to the smallest face id.
    - Faces with a vertex at z <= 0 (behind the camera) or non-finite, and faces of zero screen
      area, are ignored. There is no near-plane clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Candidate pixel tests per chunk (faces x window pixels). Each candidate holds about 64 bytes of
# temporaries (int64 pixel index and key, float depth terms, masks), so this bounds the peak extra
# memory near 64 MB whatever the mesh, batch and image size.
_MAX_CANDIDATES_PER_CHUNK = 1 << 20

# z-buffer key: float32 bits of the (positive) depth in the high 32 bits, face id in the low 32.
# Positive IEEE-754 floats order like their bit patterns, so one integer `amin` picks the nearest
# face and, among equal float32 depths, the smallest face id.
_NO_FACE_KEY = torch.iinfo(torch.int64).max
_FACE_ID_MASK = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Raster:
    """What `rasterize` saw at each pixel centre.

    Attributes:
        face_id_BHW: (B, H, W) int64, index into faces_F3 of the winning face; -1 where no face.
        bary_BHW3: (B, H, W, 3), weights of the winning face's three vertices (in faces_F3 order) at
            the pixel centre; perspective-correct (3D barycentrics of the surface point) when
            rasterised with perspective=True, screen-space otherwise; 0 where no face. Same dtype
            as the vertices.
        depth_BHW: (B, H, W), camera z of the surface at the pixel centre, metres (the units of the
            input z); +inf where no face.
    """

    face_id_BHW: torch.Tensor
    bary_BHW3: torch.Tensor
    depth_BHW: torch.Tensor

    @property
    def covered_BHW(self) -> torch.Tensor:
        """(B, H, W) bool, True where a face won the pixel."""
        return self.face_id_BHW >= 0


def _canonical_edges(faces_F3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For edge i of each face (opposite vertex i, from corner i+1 to corner i+2, mod 3): its endpoint
    corners (0..2) with the lower vertex id first, and +1 if that kept the order, -1 if it swapped it.

    Returns:
        first_F3, second_F3: (F, 3) int64 corner indices; flip_F3: (F, 3) float32, +-1.
    """
    nxt_F3 = torch.tensor([1, 2, 0], device=faces_F3.device).expand_as(faces_F3)
    prv_F3 = torch.tensor([2, 0, 1], device=faces_F3.device).expand_as(faces_F3)
    keep_F3 = faces_F3.gather(1, nxt_F3) < faces_F3.gather(1, prv_F3)
    first_F3 = torch.where(keep_F3, nxt_F3, prv_F3)
    second_F3 = torch.where(keep_F3, prv_F3, nxt_F3)
    flip_F3 = torch.where(keep_F3, 1.0, -1.0)
    return first_F3, second_F3, flip_F3


def _edge_functions(
    x_N3: torch.Tensor,
    y_N3: torch.Tensor,
    first_N3: torch.Tensor,
    second_N3: torch.Tensor,
    flip_N3: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-face edge-function coefficients, oriented so that the inside is where all three are >= 0.

    Edge i is evaluated as g_i(p) = s_i * (d_x * (p_y - a_y) - d_y * (p_x - a_x)) with a its endpoint
    of lower vertex id and d = other endpoint - a (see `_canonical_edges`), so two faces that share an
    edge compute the same number there up to sign; s_i = +-1 makes g_i(vertex i) = |2 * area|. Then
    g_i(p) / sum_j g_j(p) is the screen-space barycentric weight of vertex i.

    Args:
        x_N3, y_N3: (N, 3) screen positions of the faces' corners, pixels.
        first_N3, second_N3, flip_N3: (N, 3) the faces' rows of `_canonical_edges`.

    Returns:
        a_x, a_y, d_x, d_y: each (N, 3), with the sign s_i already folded into d.
    """
    area2_N = (x_N3[:, 1] - x_N3[:, 0]) * (y_N3[:, 2] - y_N3[:, 0]) - (y_N3[:, 1] - y_N3[:, 0]) * (
        x_N3[:, 2] - x_N3[:, 0]
    )
    sign_N3 = flip_N3.to(x_N3.dtype) * torch.sign(area2_N)[:, None]  # multiplying by +-1 is exact
    a_x_N3, a_y_N3 = x_N3.gather(1, first_N3), y_N3.gather(1, first_N3)
    d_x_N3 = (x_N3.gather(1, second_N3) - a_x_N3) * sign_N3
    d_y_N3 = (y_N3.gather(1, second_N3) - a_y_N3) * sign_N3
    return a_x_N3, a_y_N3, d_x_N3, d_y_N3


def _ceil_log2(n: torch.Tensor) -> torch.Tensor:
    """Smallest k >= 0 with 2**k >= n, for integer n >= 1: the bit length of n - 1 (frexp is exact)."""
    return torch.frexp((n - 1).to(torch.float64)).exponent.long()


def _zbuffer_keys(
    verts_pix_BV3: torch.Tensor, faces_F3: torch.Tensor, *, height: int, width: int, perspective: bool
) -> torch.Tensor:
    """(B * H * W,) int64 z-buffer keys (depth bits << 32 | face id); _NO_FACE_KEY where empty."""
    device = verts_pix_BV3.device
    num_batch = verts_pix_BV3.shape[0]
    num_pixels = num_batch * height * width
    assert faces_F3.shape[0] < 2**31  # face ids must fit the key's low 32 bits
    # Planar (B, F, 3) corner coordinates: contiguous, so the per-face reductions below are cheap.
    x_BF3, y_BF3, z_BF3 = (verts_pix_BV3[..., k][:, faces_F3] for k in range(3))
    area2_BF = (x_BF3[..., 1] - x_BF3[..., 0]) * (y_BF3[..., 2] - y_BF3[..., 0]) - (
        y_BF3[..., 1] - y_BF3[..., 0]
    ) * (x_BF3[..., 2] - x_BF3[..., 0])
    # Pixel centres i + 0.5 inside [min, max]: i from ceil(min - 0.5) to floor(max - 0.5), clipped
    # to the image. Clamp in float before the integer cast so that far-off vertices cannot overflow.
    lo_BF2 = torch.stack([torch.ceil(x_BF3.amin(-1) - 0.5).clamp(0, width),
                          torch.ceil(y_BF3.amin(-1) - 0.5).clamp(0, height)], -1).long()
    hi_BF2 = torch.stack([torch.floor(x_BF3.amax(-1) - 0.5).clamp(-1, width - 1),
                          torch.floor(y_BF3.amax(-1) - 0.5).clamp(-1, height - 1)], -1).long()
    count_BF2 = hi_BF2 - lo_BF2 + 1
    # isfinite(area) catches inf and NaN in x, y (their products give inf or NaN).
    valid_BF = (
        ((z_BF3 > 0) & torch.isfinite(z_BF3)).all(-1)
        & (area2_BF != 0)
        & torch.isfinite(area2_BF)
        & (count_BF2 > 0).all(-1)
    )

    # One extra slot at the end collects the window pixels that fail the test (no branching).
    keys_P = torch.full((num_pixels + 1,), _NO_FACE_KEY, dtype=torch.int64, device=device)
    flat_N = valid_BF.view(-1).nonzero().squeeze(1)
    log_N2 = _ceil_log2(count_BF2.view(-1, 2)[flat_N])
    bucket_N, order_N = torch.sort(log_N2[:, 0] * 32 + log_N2[:, 1])  # 32 > log2 of any image side
    flat_N = flat_N[order_N]
    batch_idx_N, face_idx_N = flat_N // faces_F3.shape[0], flat_N % faces_F3.shape[0]
    count_N2, lo_N2 = count_BF2.view(-1, 2)[flat_N], lo_BF2.view(-1, 2)[flat_N]
    z_N3 = z_BF3.view(-1, 3)[flat_N]
    first_F3, second_F3, flip_F3 = _canonical_edges(faces_F3)
    edges_N3 = _edge_functions(
        x_BF3.view(-1, 3)[flat_N], y_BF3.view(-1, 3)[flat_N],
        first_F3[face_idx_N], second_F3[face_idx_N], flip_F3[face_idx_N],
    )
    # Perspective: 1/z is affine in screen space, 1/z(p) = sum_i l_i / z_i. Affine: z(p) = sum_i l_i z_i.
    depth_weight_N3 = 1.0 / z_N3 if perspective else z_N3
    first_pixel_N = (batch_idx_N * height + lo_N2[:, 1]) * width + lo_N2[:, 0]
    buckets, counts = torch.unique_consecutive(bucket_N, return_counts=True)  # the one host sync

    start = 0
    for bucket, count in zip(buckets.tolist(), counts.tolist(), strict=True):
        win_x, win_y = 2 ** (bucket // 32), 2 ** (bucket % 32)
        chunk = max(1, _MAX_CANDIDATES_PER_CHUNK // (win_x * win_y))
        for begin in range(start, start + count, chunk):
            sl = slice(begin, min(begin + chunk, start + count))
            _rasterize_chunk(
                keys_P,
                tuple(e[sl] for e in edges_N3),
                depth_weight_N3[sl],
                face_idx_N[sl],
                first_pixel_N[sl],
                lo_N2[sl],
                count_N2[sl],
                win_x=win_x,
                win_y=win_y,
                width=width,
                perspective=perspective,
            )
        start += count
    return keys_P[:num_pixels]


def _rasterize_chunk(
    keys_P: torch.Tensor,
    edges_N3: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    depth_weight_N3: torch.Tensor,
    face_idx_N: torch.Tensor,
    first_pixel_N: torch.Tensor,
    lo_N2: torch.Tensor,
    count_N2: torch.Tensor,
    *,
    win_x: int,
    win_y: int,
    width: int,
    perspective: bool,
) -> None:
    """Test a win_y x win_x window of pixel centres per face and scatter-min their keys into keys_P."""
    a_x_N3, a_y_N3, d_x_N3, d_y_N3 = edges_N3
    device, dtype = a_x_N3.device, a_x_N3.dtype
    off_x_X = torch.arange(win_x, device=device)
    off_y_Y = torch.arange(win_y, device=device)
    centre_x_NX = (lo_N2[:, :1] + off_x_X).to(dtype) + 0.5
    centre_y_NY = (lo_N2[:, 1:] + off_y_Y).to(dtype) + 0.5
    # g_i = d_x (p_y - a_y) - d_y (p_x - a_x) is separable: a row term minus a column term. So are
    # sum_i g_i and sum_i g_i / z_i (or g_i z_i), which give the depth without per-vertex gathers.
    row_N3Y = d_x_N3[..., None] * (centre_y_NY[:, None, :] - a_y_N3[..., None])
    col_N3X = d_y_N3[..., None] * (centre_x_NX[:, None, :] - a_x_N3[..., None])
    row_sum_NY = row_N3Y[:, 0] + row_N3Y[:, 1] + row_N3Y[:, 2]
    col_sum_NX = col_N3X[:, 0] + col_N3X[:, 1] + col_N3X[:, 2]
    row_w_N3Y = row_N3Y * depth_weight_N3[..., None]
    col_w_N3X = col_N3X * depth_weight_N3[..., None]
    row_w_NY = row_w_N3Y[:, 0] + row_w_N3Y[:, 1] + row_w_N3Y[:, 2]
    col_w_NX = col_w_N3X[:, 0] + col_w_N3X[:, 1] + col_w_N3X[:, 2]
    # row >= col is exactly g_i >= 0 (IEEE a - b >= 0 iff a >= b), so the shared-edge guarantee holds.
    inside_NYX = (
        (row_N3Y[:, 0, :, None] >= col_N3X[:, 0, None, :])
        & (row_N3Y[:, 1, :, None] >= col_N3X[:, 1, None, :])
        & (row_N3Y[:, 2, :, None] >= col_N3X[:, 2, None, :])
        & (off_y_Y < count_N2[:, 1:])[:, :, None]  # window pixels beyond the face's clipped box
        & (off_x_X < count_N2[:, :1])[:, None, :]
    )
    sum_g_NYX = row_sum_NY[:, :, None] - col_sum_NX[:, None, :]
    weighted_NYX = row_w_NY[:, :, None] - col_w_NX[:, None, :]
    depth_NYX = sum_g_NYX / weighted_NYX if perspective else weighted_NYX / sum_g_NYX
    # sum_g > 0 drops the all-zero g of degenerate faces; depth > 0 keeps the key's sign bit clear.
    inside_NYX &= (sum_g_NYX > 0) & (depth_NYX > 0)
    pixel_NYX = first_pixel_N[:, None, None] + off_y_Y[:, None] * width + off_x_X
    pixel_NYX = torch.where(inside_NYX, pixel_NYX, keys_P.shape[0] - 1)
    depth_bits_NYX = depth_NYX.float().view(torch.int32).long()
    key_NYX = (depth_bits_NYX << 32) | face_idx_N[:, None, None]
    keys_P.scatter_reduce_(0, pixel_NYX.flatten(), key_NYX.flatten(), reduce="amin", include_self=True)


def rasterize(
    verts_pix_BV3: torch.Tensor,
    faces_F3: torch.Tensor,
    *,
    height: int,
    width: int,
    perspective: bool = True,
) -> Raster:
    """Z-buffer rasterisation of a batch of meshes that share one face list.

    Args:
        verts_pix_BV3: (B, V, 3); [..., :2] projected vertex positions, pixels (x right, y down,
            pixel-corner origin); [..., 2] camera depth z, metres, > 0 in front of the camera. For
            orthographic / weak-perspective images pass any z that orders the surfaces (shifted to
            be > 0) with perspective=False.
        faces_F3: (F, 3) integer vertex indices.
        height: H, image height, pixels.
        width: W, image width, pixels.
        perspective: True for pinhole images: depth and barycentrics are perspective-correct
            (w_i = (l_i / z_i) / sum_j (l_j / z_j) from the screen-space weights l). False for
            affine projections: w_i = l_i and depth = sum_i l_i z_i.

    Returns:
        Raster with face ids, barycentric weights and depth at every pixel centre. The search is
        done without gradients; `bary_BHW3` and `depth_BHW` are then recomputed from the vertices
        for the winning faces, so they carry gradients to verts_pix_BV3 (face ids held fixed).
    """
    if verts_pix_BV3.ndim != 3 or verts_pix_BV3.shape[-1] != 3:
        raise ValueError(f"verts_pix_BV3 must have shape (B, V, 3), got {tuple(verts_pix_BV3.shape)}")
    if faces_F3.ndim != 2 or faces_F3.shape[-1] != 3 or faces_F3.is_floating_point():
        raise ValueError(f"faces_F3 must be an integer tensor of shape (F, 3), got {faces_F3.dtype} "
                         f"{tuple(faces_F3.shape)}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got height={height}, width={width}")
    num_batch = verts_pix_BV3.shape[0]
    faces_F3 = faces_F3.to(device=verts_pix_BV3.device, dtype=torch.int64)
    with torch.no_grad():
        keys_P = _zbuffer_keys(
            verts_pix_BV3.detach(), faces_F3, height=height, width=width, perspective=perspective
        )
    covered_P = keys_P != _NO_FACE_KEY
    face_id_P = torch.where(covered_P, keys_P & _FACE_ID_MASK, -1)

    # Recompute the winner's weights at full input precision (the keys hold float32 depths only).
    pixel_Q = covered_P.nonzero().squeeze(1)
    face_Q = face_id_P[pixel_Q]
    batch_Q = pixel_Q // (height * width)
    row_Q = (pixel_Q // width) % height
    col_Q = pixel_Q % width
    vert_ids_Q3 = faces_F3[face_Q]
    x_Q3, y_Q3, z_Q3 = (verts_pix_BV3[..., k][batch_Q[:, None], vert_ids_Q3] for k in range(3))
    first_F3, second_F3, flip_F3 = _canonical_edges(faces_F3)
    a_x_Q3, a_y_Q3, d_x_Q3, d_y_Q3 = _edge_functions(
        x_Q3, y_Q3, first_F3[face_Q], second_F3[face_Q], flip_F3[face_Q]
    )
    centre_x_Q1 = col_Q[:, None].to(x_Q3.dtype) + 0.5
    centre_y_Q1 = row_Q[:, None].to(y_Q3.dtype) + 0.5
    g_Q3 = d_x_Q3 * (centre_y_Q1 - a_y_Q3) - d_y_Q3 * (centre_x_Q1 - a_x_Q3)
    screen_Q3 = g_Q3 / g_Q3.sum(-1, keepdim=True)
    if perspective:
        inv_z_Q3 = screen_Q3 / z_Q3
        inv_depth_Q1 = inv_z_Q3.sum(-1, keepdim=True)
        bary_Q3 = inv_z_Q3 / inv_depth_Q1
        depth_Q = 1.0 / inv_depth_Q1[:, 0]
    else:
        bary_Q3 = screen_Q3
        depth_Q = (screen_Q3 * z_Q3).sum(-1)

    bary_P3 = verts_pix_BV3.new_zeros(covered_P.shape[0], 3).index_put((pixel_Q,), bary_Q3)
    depth_P = verts_pix_BV3.new_full(covered_P.shape, torch.inf).index_put((pixel_Q,), depth_Q)
    return Raster(
        face_id_BHW=face_id_P.view(num_batch, height, width),
        bary_BHW3=bary_P3.view(num_batch, height, width, 3),
        depth_BHW=depth_P.view(num_batch, height, width),
    )


def vertex_visibility(raster: Raster, faces_F3: torch.Tensor, num_verts: int) -> torch.Tensor:
    """METHOD.md section 3 step 5: a vertex is visible if a face that holds it wins at least one pixel.

    At low resolution this misses many visible vertices: a face smaller than a pixel that covers no
    pixel centre wins nothing, so its vertices count only if a neighbouring face wins. On a 13.7k-vertex
    body-sized mesh at 128 px, `eroded_vertex_visibility` (a depth test) keeps more vertices than this.

    Args:
        raster: the mesh's `rasterize` output, (B, H, W) per field.
        faces_F3: (F, 3) the face list that was rasterised.
        num_verts: V, number of mesh vertices.

    Returns:
        vis_BV: (B, V) bool.
    """
    num_batch = raster.face_id_BHW.shape[0]
    faces_F3 = faces_F3.to(device=raster.face_id_BHW.device, dtype=torch.int64)
    batch_P, _, _ = raster.covered_BHW.nonzero(as_tuple=True)
    face_P = raster.face_id_BHW[raster.covered_BHW]
    vis_flat = torch.zeros(num_batch * num_verts, dtype=torch.bool, device=faces_F3.device)
    vis_flat[(batch_P[:, None] * num_verts + faces_F3[face_P]).flatten()] = True
    return vis_flat.view(num_batch, num_verts)


def eroded_vertex_visibility(
    verts_pix_BV3: torch.Tensor,
    raster: Raster,
    *,
    radius_px: int = 1,
    max_depth_jump: float = 0.10,
    depth_tolerance: float = 0.03,
) -> torch.Tensor:
    """Visible vertices away from silhouette edges and depth jumps (FACTS.md, "What made the loss carry
    signal": this mask took the loss at the true meshes from a plain z-buffer's level to 0.00-0.01).

    A vertex is kept if all of:
      (a) its pixel (the one containing its projection, floor(x), floor(y)) is in the image and
          |z_v - depth(pixel)| < depth_tolerance: it is the visible surface there;
      (b) every pixel of the (2 r + 1)^2 neighbourhood of that pixel is in the image and covered;
      (c) the depths of that neighbourhood span less than max_depth_jump.
    Approximation: the raster depth is taken at the pixel centre, up to 0.71 px from the vertex, so
    on a surface that is slanted by s metres per pixel the test sees up to 0.71 s of extra difference;
    the default 3 cm admits slants up to about 4 cm per pixel (grazing surfaces), and those sit near a
    silhouette, where (b) and (c) drop them anyway. The 3 cm must stay below the gap between a
    surface and what it hides (the two sides of a limb, an arm in front of the torso: 5-30 cm).

    Args:
        verts_pix_BV3: (B, V, 3) the vertices that were rasterised: pixels (x, y), camera z metres.
        raster: `rasterize(verts_pix_BV3, ...)`, (B, H, W) per field.
        radius_px: r, neighbourhood radius, pixels (1 gives the 3x3 neighbourhood of FACTS.md).
        max_depth_jump: depth span in the neighbourhood, metres, at or above which the vertex is
            dropped.
        depth_tolerance: (a)'s tolerance, metres.

    Returns:
        vis_BV: (B, V) bool.
    """
    if radius_px < 0:
        raise ValueError(f"radius_px must be >= 0, got {radius_px}")
    depth_BHW = raster.depth_BHW
    num_batch, height, width = depth_BHW.shape
    # Pad with +inf (outside the image counts as outside the silhouette); background is already +inf,
    # so any such pixel makes max - min = inf (or NaN if all are) and fails the test.
    size = 2 * radius_px + 1
    padded_B1HW = F.pad(depth_BHW[:, None], (radius_px,) * 4, value=torch.inf)
    max_BHW = F.max_pool2d(padded_B1HW, size, stride=1)[:, 0]
    min_BHW = -F.max_pool2d(-padded_B1HW, size, stride=1)[:, 0]
    interior_BHW = (max_BHW - min_BHW) < max_depth_jump

    col_BV = torch.floor(verts_pix_BV3[..., 0])
    row_BV = torch.floor(verts_pix_BV3[..., 1])
    z_BV = verts_pix_BV3[..., 2]
    in_image_BV = (col_BV >= 0) & (col_BV < width) & (row_BV >= 0) & (row_BV < height) & (z_BV > 0)
    pixel_BV = torch.where(in_image_BV, row_BV * width + col_BV, 0).long()  # 0: any valid index
    depth_at_BV = depth_BHW.view(num_batch, -1).gather(1, pixel_BV)
    interior_at_BV = interior_BHW.view(num_batch, -1).gather(1, pixel_BV)
    on_surface_BV = (z_BV - depth_at_BV).abs() < depth_tolerance
    return in_image_BV & on_surface_BV & interior_at_BV


def _per_batch(value: float | torch.Tensor, like_BP: torch.Tensor) -> float | torch.Tensor:
    """A float, or a (B,) tensor reshaped to (B, 1) to broadcast over flattened pixels."""
    return value.to(like_BP).view(-1, 1) if isinstance(value, torch.Tensor) else value


def surface_flow(
    raster: Raster,
    faces_F3: torch.Tensor,
    verts_cam_next_BV3: torch.Tensor,
    *,
    fx: float | torch.Tensor,
    fy: float | torch.Tensor,
    cx: float | torch.Tensor,
    cy: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact forward optical flow of the mesh surface, frame t -> t+1, for a pinhole camera.

    Each covered pixel sees the surface point with 3D barycentric weights w (from frame t's raster,
    which must be rasterised with perspective=True); at t+1 that point is X' = sum_i w_i X_i(t+1),
    projected to (fx X'/Z' + cx, fy Y'/Z' + cy); the flow is that minus the pixel centre (i + 0.5,
    j + 0.5). Differentiable with respect to verts_cam_next_BV3.

    Args:
        raster: frame t's `rasterize(..., perspective=True)` output, (B, H, W) per field.
        faces_F3: (F, 3) the face list that was rasterised.
        verts_cam_next_BV3: (B, V, 3) frame t+1 vertices, metres, OpenCV camera frame.
        fx, fy: focal lengths, pixels; floats or (B,) tensors.
        cx, cy: principal point, pixels (pixel-corner origin); floats or (B,) tensors.

    Returns:
        flow_BHW2: (B, H, W, 2) float, pixels, (dx, dy); 0 where not valid.
        valid_BHW: (B, H, W) bool, covered pixels whose point stays in front of the camera (Z' > 0).
    """
    point_BHW3 = _interpolate_at_pixels(raster, faces_F3, verts_cam_next_BV3)
    num_batch = point_BHW3.shape[0]
    point_BP3 = point_BHW3.view(num_batch, -1, 3)
    z_BP = point_BP3[..., 2]
    valid_BP = raster.covered_BHW.view(num_batch, -1) & (z_BP > 0)
    safe_z_BP = torch.where(valid_BP, z_BP, torch.ones_like(z_BP))
    u_BP = _per_batch(fx, z_BP) * point_BP3[..., 0] / safe_z_BP + _per_batch(cx, z_BP)
    v_BP = _per_batch(fy, z_BP) * point_BP3[..., 1] / safe_z_BP + _per_batch(cy, z_BP)
    target_BHW2 = torch.stack([u_BP, v_BP], dim=-1).view(*raster.face_id_BHW.shape, 2)
    return _flow_from_targets(target_BHW2, valid_BP.view_as(raster.face_id_BHW))


def surface_flow_affine(
    raster: Raster, faces_F3: torch.Tensor, verts_pix_next_BV2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact surface flow for an affine camera (orthographic / weak perspective), frame t -> t+1.

    An affine projection maps a barycentric combination of 3D points to the same combination of
    their projections, so the flow is sum_i w_i p_i(t+1) - pixel centre with frame t's screen-space
    weights (rasterise frame t with perspective=False).

    Args:
        raster: frame t's `rasterize(..., perspective=False)` output, (B, H, W) per field.
        faces_F3: (F, 3) the face list that was rasterised.
        verts_pix_next_BV2: (B, V, 2) frame t+1 projected vertices, pixels (pixel-corner origin).

    Returns:
        flow_BHW2: (B, H, W, 2), pixels; 0 where not covered. valid_BHW: (B, H, W) bool, covered.
    """
    target_BHW2 = _interpolate_at_pixels(raster, faces_F3, verts_pix_next_BV2)
    return _flow_from_targets(target_BHW2, raster.covered_BHW)


def _interpolate_at_pixels(raster: Raster, faces_F3: torch.Tensor, values_BVC: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C): sum_i w_i values[face vertex i] at covered pixels, 0 elsewhere."""
    num_batch, height, width = raster.face_id_BHW.shape
    faces_F3 = faces_F3.to(device=values_BVC.device, dtype=torch.int64)
    covered_BHW = raster.covered_BHW
    batch_P, _, _ = covered_BHW.nonzero(as_tuple=True)
    vert_ids_P3 = faces_F3[raster.face_id_BHW[covered_BHW]]
    values_P3C = values_BVC[batch_P[:, None], vert_ids_P3]
    bary_P3 = raster.bary_BHW3[covered_BHW].to(values_BVC.dtype)
    interp_PC = (bary_P3[..., None] * values_P3C).sum(1)
    out_BHWC = values_BVC.new_zeros(num_batch, height, width, values_BVC.shape[-1])
    return out_BHWC.index_put((covered_BHW,), interp_PC)


def _flow_from_targets(
    target_BHW2: torch.Tensor, valid_BHW: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(flow, valid): target position minus pixel centre where valid, 0 elsewhere."""
    _, height, width, _ = target_BHW2.shape
    device, dtype = target_BHW2.device, target_BHW2.dtype
    centre_y_H, centre_x_W = (torch.arange(n, device=device, dtype=dtype) + 0.5 for n in (height, width))
    centre_HW2 = torch.stack(torch.meshgrid(centre_x_W, centre_y_H, indexing="xy"), dim=-1)
    flow_BHW2 = torch.where(valid_BHW[..., None], target_BHW2 - centre_HW2, torch.zeros_like(target_BHW2))
    return flow_BHW2, valid_BHW

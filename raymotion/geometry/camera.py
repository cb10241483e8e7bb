"""Camera models: weak-perspective crop camera, full perspective, and crop <-> image coordinates.

Pure, batched torch functions. Leading batch dimensions (`...`) may be any shape, as long as
all arguments of one call share them.

Tensor naming legend (shape suffixes):
    B = batch (any number of leading dims, written `...` in docstrings)
    N = points, J = joints, V = mesh vertices
    trailing digits are literal sizes (`points_BN3` is (..., N, 3), `cam_B3` is (..., 3)).

Frames and units:
    Camera frame: x right, y down, z forward (OpenCV; SPIN's frame after its 180-degree flip of
        SMPL about x). Points in metres.
    Pixels: origin at the top-left corner of the top-left pixel, so pixel (i, j) has its centre
        at (i + 0.5, j + 0.5); the same convention as grid_sample(align_corners=False). x is the
        column, y the row.
    Crop: a square crop of `crop_size` px. Normalised crop coordinates lie in [-1, 1], -1 at the
        left/top edge and +1 at the right/bottom edge: pixel = (normalised + 1) / 2 * crop_size.

Weak-perspective camera `cam_B3 = (s, tx, ty)` (METHOD.md section 1, and the paper's code,
videoHMR_SSL src/functional/hmr.py): normalised = s * X_xy + (tx, ty), i.e. scale, then shift.
SPIN, HMR2 and CLIFF read their (s, tx', ty') as s * (X_xy + t'), i.e. shift, then scale; their
translation formulas therefore have t' where the ones below have t / s. To use such a camera
here, convert with t = s * t'.
"""

import torch

# SPIN's camera convention (Kolotouros et al. 2019, github.com/nkolot/SPIN constants.py
# FOCAL_LENGTH = 5000., IMG_RES = 224): a perspective camera with f = 5000 px on a 224 px crop.
# The long focal length makes it nearly a weak-perspective camera.
SPIN_FOCAL_LENGTH = 5000.0
SPIN_CROP_SIZE = 224

# Added to the weak-perspective scale term before dividing by it, as SPIN does (+1e-9), so that
# s = 0 gives a very distant camera instead of inf.
_SCALE_EPS = 1e-9


def weak_perspective_to_normalised(points_BN3: torch.Tensor, cam_B3: torch.Tensor) -> torch.Tensor:
    """Weak-perspective projection into normalised crop coordinates: s * X_xy + (tx, ty).

    Args:
        points_BN3: (..., N, 3) points, metres, camera frame (z is ignored).
        cam_B3: (..., 3) weak-perspective camera (s, tx, ty); s in normalised units per metre,
            (tx, ty) in normalised crop units.

    Returns:
        (..., N, 2) normalised crop coordinates, [-1, 1] inside the crop.
    """
    scale_B11 = cam_B3[..., None, 0:1]
    shift_B12 = cam_B3[..., None, 1:3]
    return scale_B11 * points_BN3[..., :2] + shift_B12


def weak_perspective_project(
    points_BN3: torch.Tensor, cam_B3: torch.Tensor, *, crop_size: int
) -> torch.Tensor:
    """Weak-perspective projection into crop pixels: ((s * X_xy + (tx, ty)) + 1) / 2 * S.

    Args:
        points_BN3: (..., N, 3) points, metres, camera frame (z is ignored).
        cam_B3: (..., 3) weak-perspective camera (s, tx, ty), see `weak_perspective_to_normalised`.
        crop_size: S, side of the square crop, pixels.

    Returns:
        (..., N, 2) crop pixel coordinates (x, y), pixel-edge convention, [0, S] inside the crop.
    """
    return (weak_perspective_to_normalised(points_BN3, cam_B3) + 1.0) / 2.0 * crop_size


def _per_point(value: float | torch.Tensor) -> float | torch.Tensor:
    """Insert the N axis into a per-batch (..., 1) or (..., 2) tensor; leave floats alone."""
    return value.unsqueeze(-2) if isinstance(value, torch.Tensor) else value


def perspective_project(
    points_BN3: torch.Tensor,
    *,
    focal_length: float | torch.Tensor,
    principal_point: float | torch.Tensor,
    transl_B3: torch.Tensor,
    rotmat_B33: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pinhole projection: X_cam = R X + t, then pixel = f * X_cam_xy / X_cam_z + c.

    Args:
        points_BN3: (..., N, 3) points, metres, body/world frame (camera frame if R is None).
        focal_length: f, pixels; a float, or a tensor (..., 1) or (..., 2) = (fx, fy).
        principal_point: c, pixels (pixel-edge convention); a float, or a tensor (..., 2) or (..., 1).
        transl_B3: (..., 3) translation t, metres, camera frame.
        rotmat_B33: (..., 3, 3) rotation R from the points' frame to the camera frame; None for
            identity.

    Returns:
        (..., N, 2) pixel coordinates (x, y). Points must have X_cam_z > 0; no clamping is done.
    """
    if rotmat_B33 is not None:
        points_BN3 = points_BN3 @ rotmat_B33.transpose(-1, -2)
    points_cam_BN3 = points_BN3 + transl_B3[..., None, :]
    xy_over_z_BN2 = points_cam_BN3[..., :2] / points_cam_BN3[..., 2:3]
    return _per_point(focal_length) * xy_over_z_BN2 + _per_point(principal_point)


def weak_cam_to_translation(
    cam_B3: torch.Tensor, *, focal_length: float, crop_size: int
) -> torch.Tensor:
    """Camera translation whose perspective view of the crop matches the weak-perspective camera.

    t = (tx / s, ty / s, 2 f / (S s)): perspective projection of X + t with focal f and principal
    point (S/2, S/2) equals `weak_perspective_project(X, cam)` exactly for points with z = 0 and
    up to f * |X_xy + t_xy| * |z| / t_z^2 pixels otherwise (SPIN's approximation; about 0.3 px
    for a 1.8 m body filling a 224 px crop at f = 5000). SPIN's own formula is (tx, ty, 2f/(S s))
    because its weak camera shifts before scaling; see the module docstring.

    Args:
        cam_B3: (..., 3) weak-perspective camera (s, tx, ty), normalised crop units; s > 0.
        focal_length: f, pixels, of the perspective crop camera (SPIN_FOCAL_LENGTH at
            SPIN_CROP_SIZE).
        crop_size: S, side of the square crop, pixels.

    Returns:
        transl_B3: (..., 3) translation, metres, camera frame (x right, y down, z forward).
    """
    scale_B1 = cam_B3[..., 0:1]
    denom_B1 = crop_size * scale_B1 + _SCALE_EPS
    # crop_size / denom is 1 / s up to the eps guard.
    transl_xy_B2 = cam_B3[..., 1:3] * crop_size / denom_B1
    transl_z_B1 = 2.0 * focal_length / denom_B1
    return torch.cat((transl_xy_B2, transl_z_B1), dim=-1)


def translation_to_weak_cam(
    transl_B3: torch.Tensor, *, focal_length: float, crop_size: int
) -> torch.Tensor:
    """Exact inverse of `weak_cam_to_translation`.

    Args:
        transl_B3: (..., 3) translation, metres, camera frame; t_z > 0.
        focal_length: f, pixels, of the perspective crop camera.
        crop_size: S, side of the square crop, pixels.

    Returns:
        cam_B3: (..., 3) weak-perspective camera (s, tx, ty), normalised crop units.
    """
    denom_B1 = 2.0 * focal_length / transl_B3[..., 2:3]
    scale_B1 = (denom_B1 - _SCALE_EPS) / crop_size
    shift_B2 = transl_B3[..., :2] * denom_B1 / crop_size
    return torch.cat((scale_B1, shift_B2), dim=-1)


def crop_to_image(
    points_crop_BN2: torch.Tensor,
    *,
    box_center_B2: torch.Tensor,
    box_size_B: torch.Tensor,
    crop_size: int,
) -> torch.Tensor:
    """Map crop pixels to full-image pixels.

    The crop is the square box of side box_size centred at box_center, resampled to
    crop_size x crop_size; crop edge 0 maps to box_center - box_size / 2 and edge crop_size to
    box_center + box_size / 2 (both in the pixel-edge convention).

    Args:
        points_crop_BN2: (..., N, 2) crop pixel coordinates (x, y).
        box_center_B2: (..., 2) box centre (x, y), full-image pixels.
        box_size_B: (...) box side, full-image pixels.
        crop_size: side of the crop, crop pixels.

    Returns:
        (..., N, 2) full-image pixel coordinates (x, y).
    """
    box_size_B11 = box_size_B[..., None, None]
    corner_B12 = box_center_B2[..., None, :] - box_size_B11 / 2.0
    return corner_B12 + points_crop_BN2 * (box_size_B11 / crop_size)


def image_to_crop(
    points_image_BN2: torch.Tensor,
    *,
    box_center_B2: torch.Tensor,
    box_size_B: torch.Tensor,
    crop_size: int,
) -> torch.Tensor:
    """Map full-image pixels to crop pixels; the inverse of `crop_to_image`.

    Args:
        points_image_BN2: (..., N, 2) full-image pixel coordinates (x, y).
        box_center_B2: (..., 2) box centre (x, y), full-image pixels.
        box_size_B: (...) box side, full-image pixels.
        crop_size: side of the crop, crop pixels.

    Returns:
        (..., N, 2) crop pixel coordinates (x, y); [0, crop_size] inside the box.
    """
    box_size_B11 = box_size_B[..., None, None]
    corner_B12 = box_center_B2[..., None, :] - box_size_B11 / 2.0
    return (points_image_BN2 - corner_B12) * (crop_size / box_size_B11)


def crop_cam_to_full_image_translation(
    cam_B3: torch.Tensor,
    *,
    box_center_B2: torch.Tensor,
    box_size_B: torch.Tensor,
    image_size_B2: torch.Tensor,
    focal_length: float | torch.Tensor,
) -> torch.Tensor:
    """Translation for the full-image camera that sees the body where the crop camera put it.

    The CLIFF/PARE "full-image camera" (Li et al., CLIFF, ECCV 2022, cam_crop2full), written for
    this module's scale-then-shift weak camera. With b = box_size, (cx, cy) = box_center,
    (w, h) = image_size:
        t_z = 2 f / (b s)
        t_x = (b tx + 2 (cx - w/2)) / (b s) = tx / s + 2 (cx - w/2) / (b s)
        t_y = (b ty + 2 (cy - h/2)) / (b s)
    Perspective projection of X + t with focal f and principal point (w/2, h/2) then equals
    crop_to_image(weak_perspective_project(X, cam)) exactly for z = 0, and approximately (error
    ~ f |X_xy + t_xy| |z| / t_z^2 px) for distant bodies.

    Args:
        cam_B3: (..., 3) weak-perspective crop camera (s, tx, ty), normalised crop units; s > 0.
        box_center_B2: (..., 2) crop box centre (x, y), full-image pixels.
        box_size_B: (...) crop box side, full-image pixels.
        image_size_B2: (..., 2) full image (width, height), pixels.
        focal_length: f of the full-image camera, pixels; a float or a tensor (...).

    Returns:
        transl_B3: (..., 3) translation, metres, full-image camera frame (x right, y down,
            z forward).
    """
    box_size_B1 = box_size_B[..., None]
    denom_B1 = box_size_B1 * cam_B3[..., 0:1] + _SCALE_EPS
    offset_B2 = 2.0 * (box_center_B2 - image_size_B2 / 2.0)
    transl_xy_B2 = (box_size_B1 * cam_B3[..., 1:3] + offset_B2) / denom_B1
    focal_B1 = focal_length[..., None] if isinstance(focal_length, torch.Tensor) else focal_length
    transl_z_B1 = 2.0 * focal_B1 / denom_B1
    return torch.cat((transl_xy_B2, transl_z_B1), dim=-1)

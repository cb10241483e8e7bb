"""Rotation representations: 6D (Zhou et al. 2019), axis-angle and 3x3 rotation matrices.

Pure, batched torch functions. Every function accepts arbitrary leading batch dimensions (`...`).

Tensor naming legend (shape suffixes):
    B = batch (any number of leading dims, written `...` in docstrings)
    N = points, J = joints, V = mesh vertices
    trailing digits are literal sizes (`rotmat_B33` is (..., 3, 3), `rot6d_B6` is (..., 6)).

Conventions: rotation matrices act on column vectors (x' = R x). Axis-angle vectors are
axis * angle with the angle in radians; rotations follow the right-hand rule.
"""

import torch
import torch.nn.functional as F

# Norms below this are clamped when normalising the 6D columns, so a degenerate prediction
# (a zero column) gives a finite matrix and finite gradients instead of NaN.
_ROT6D_NORM_EPS = 1e-8

# Below this squared angle (angle < 0.05 rad) the Rodrigues coefficients sin(t)/t and
# (1 - cos t)/t^2 use their Taylor series. Autograd through the closed forms loses accuracy as
# t -> 0 (d/dt sin(t)/t = cos(t)/t - sin(t)/t^2 cancels catastrophically) and divides by zero
# at t = 0. With terms up to t^6 the truncation error is below t^8/9! ~ 1e-16 at the threshold,
# i.e. exact in float64.
_RODRIGUES_TAYLOR_MAX_ANGLE_SQ = 0.05**2

# Below this squared sin(half angle) the axis-angle extraction uses the Taylor series of
# angle / sin(angle / 2); the truncation error at the threshold is ~ 5/112 * 1e-18.
_QUAT_TAYLOR_MAX_SIN_HALF_SQ = 1e-6


def rot6d_to_rotmat(rot6d_B6: torch.Tensor) -> torch.Tensor:
    """Map the continuous 6D rotation representation to rotation matrices by Gram-Schmidt.

    Zhou et al., "On the Continuity of Rotation Representations in Neural Networks", CVPR 2019,
    in the SPIN/HMR/EFT layout: the 6 numbers reshape row-major to (3, 2); its two columns
    a1, a2 are orthonormalised to b1, b2, and b3 = b1 x b2. (4D-Humans/HMR2 instead reads them
    as a (2, 3) array of rows; an adapter for those weights must permute before calling this.)

    Args:
        rot6d_B6: (..., 6), unitless, any real values; a1 and a2 must not be parallel.

    Returns:
        rotmat_B33: (..., 3, 3) rotation matrices with columns (b1, b2, b3), det +1.
    """
    rot6d_B32 = rot6d_B6.reshape(*rot6d_B6.shape[:-1], 3, 2)
    a1_B3 = rot6d_B32[..., 0]
    a2_B3 = rot6d_B32[..., 1]
    b1_B3 = F.normalize(a1_B3, dim=-1, eps=_ROT6D_NORM_EPS)
    b2_B3 = F.normalize(
        a2_B3 - (b1_B3 * a2_B3).sum(dim=-1, keepdim=True) * b1_B3, dim=-1, eps=_ROT6D_NORM_EPS
    )
    b3_B3 = torch.linalg.cross(b1_B3, b2_B3, dim=-1)
    return torch.stack((b1_B3, b2_B3, b3_B3), dim=-1)


def rotmat_to_rot6d(rotmat_B33: torch.Tensor) -> torch.Tensor:
    """Take the first two columns of rotation matrices, in the layout `rot6d_to_rotmat` reads.

    Exact inverse of `rot6d_to_rotmat` on rotation matrices:
    rot6d_to_rotmat(rotmat_to_rot6d(R)) == R.

    Args:
        rotmat_B33: (..., 3, 3) rotation matrices.

    Returns:
        rot6d_B6: (..., 6), the (3, 2) array [R[:, 0], R[:, 1]] flattened row-major.
    """
    return rotmat_B33[..., :, :2].reshape(*rotmat_B33.shape[:-2], 6)


def _skew(vec_B3: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix K with K @ u == vec x u."""
    x, y, z = vec_B3.unbind(dim=-1)
    zero = torch.zeros_like(x)
    return torch.stack(
        (
            torch.stack((zero, -z, y), dim=-1),
            torch.stack((z, zero, -x), dim=-1),
            torch.stack((-y, x, zero), dim=-1),
        ),
        dim=-2,
    )


def axis_angle_to_rotmat(axis_angle_B3: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: R = I + sin(t)/t K + (1 - cos t)/t^2 K^2, K = skew(axis_angle).

    Exact for all angles, with finite gradients at zero angle (Taylor series near zero).

    Args:
        axis_angle_B3: (..., 3) axis * angle, radians, any angle.

    Returns:
        rotmat_B33: (..., 3, 3) rotation matrices.
    """
    angle_sq_B11 = (axis_angle_B3**2).sum(dim=-1)[..., None, None]
    is_small_B11 = angle_sq_B11 < _RODRIGUES_TAYLOR_MAX_ANGLE_SQ
    # The closed-form branch must never see 0 even where it is not selected: torch.where
    # propagates NaN gradients from the unselected branch.
    safe_angle_sq_B11 = torch.where(is_small_B11, torch.ones_like(angle_sq_B11), angle_sq_B11)
    safe_angle_B11 = torch.sqrt(safe_angle_sq_B11)

    t2 = angle_sq_B11
    sin_over_angle_B11 = torch.where(
        is_small_B11,
        1.0 - t2 / 6.0 + t2**2 / 120.0 - t2**3 / 5040.0,
        torch.sin(safe_angle_B11) / safe_angle_B11,
    )
    # 2 sin^2(t/2) instead of 1 - cos t avoids cancellation for moderate angles.
    one_minus_cos_over_angle_sq_B11 = torch.where(
        is_small_B11,
        0.5 - t2 / 24.0 + t2**2 / 720.0 - t2**3 / 40320.0,
        2.0 * torch.sin(0.5 * safe_angle_B11) ** 2 / safe_angle_sq_B11,
    )

    skew_B33 = _skew(axis_angle_B3)
    eye_33 = torch.eye(3, dtype=axis_angle_B3.dtype, device=axis_angle_B3.device)
    return (
        eye_33
        + sin_over_angle_B11 * skew_B33
        + one_minus_cos_over_angle_sq_B11 * (skew_B33 @ skew_B33)
    )


def _sqrt_positive(x: torch.Tensor) -> torch.Tensor:
    """sqrt(max(x, 0)) with a zero (not NaN) gradient where x <= 0."""
    is_positive = x > 0
    return torch.where(is_positive, torch.sqrt(torch.where(is_positive, x, torch.ones_like(x))), 0.0)


def _rotmat_to_quaternion(rotmat_B33: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Shepperd's branch selection: compute the quaternion from each of the four ways of dividing
    by one component and keep the one whose divisor is largest (>= 1/2), which is accurate for
    every rotation, including angles near 0 and near pi. Same scheme as pytorch3d's
    matrix_to_quaternion.
    """
    m = rotmat_B33
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]

    # 2 |q_i| for i in (w, x, y, z).
    two_abs_q_B4 = _sqrt_positive(
        torch.stack(
            (
                1.0 + m00 + m11 + m22,
                1.0 + m00 - m11 - m22,
                1.0 - m00 + m11 - m22,
                1.0 - m00 - m11 + m22,
            ),
            dim=-1,
        )
    )
    # Row i holds 4 q_i * (w, x, y, z); dividing by 2 * (2 |q_i|) gives sign(q_i) * q.
    four_qi_q_B44 = torch.stack(
        (
            torch.stack((two_abs_q_B4[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, two_abs_q_B4[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, two_abs_q_B4[..., 2] ** 2, m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, two_abs_q_B4[..., 3] ** 2), dim=-1),
        ),
        dim=-2,
    )
    # The clamp only protects the rows that are not selected (the selected divisor is >= 1).
    candidates_B44 = four_qi_q_B44 / (2.0 * two_abs_q_B4[..., None].clamp_min(0.1))
    best_B = two_abs_q_B4.argmax(dim=-1)
    index_B14 = best_B[..., None, None].expand(*best_B.shape, 1, 4)
    quat_B4 = candidates_B44.gather(-2, index_B14).squeeze(-2)
    return torch.where(quat_B4[..., :1] < 0, -quat_B4, quat_B4)


def rotmat_to_axis_angle(rotmat_B33: torch.Tensor) -> torch.Tensor:
    """Convert rotation matrices to axis-angle vectors with angle in [0, pi].

    Goes through the unit quaternion (w >= 0), so it is accurate near 0 and near pi. At exactly
    pi both axis and -axis describe the rotation; either may be returned.

    Args:
        rotmat_B33: (..., 3, 3) rotation matrices (orthonormal, det +1).

    Returns:
        axis_angle_B3: (..., 3) axis * angle, radians, norm in [0, pi].
    """
    quat_B4 = _rotmat_to_quaternion(rotmat_B33)
    w_B1 = quat_B4[..., :1]
    xyz_B3 = quat_B4[..., 1:]
    sin_half_sq_B1 = (xyz_B3**2).sum(dim=-1, keepdim=True)
    is_small_B1 = sin_half_sq_B1 < _QUAT_TAYLOR_MAX_SIN_HALF_SQ
    safe_sin_half_B1 = torch.sqrt(
        torch.where(is_small_B1, torch.ones_like(sin_half_sq_B1), sin_half_sq_B1)
    )
    # angle = 2 atan2(sin_half, w) lies in [0, pi] because w >= 0.
    angle_B1 = 2.0 * torch.atan2(safe_sin_half_B1, w_B1)
    s2 = sin_half_sq_B1
    # Near zero, angle / sin_half = 2 asin(s) / s = 2 (1 + s^2/6 + 3 s^4/40 + ...).
    angle_over_sin_half_B1 = torch.where(
        is_small_B1,
        2.0 * (1.0 + s2 / 6.0 + 3.0 * s2**2 / 40.0),
        angle_B1 / safe_sin_half_B1,
    )
    return xyz_B3 * angle_over_sin_half_B1

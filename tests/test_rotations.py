import math

import pytest
import torch
from torch.testing import assert_close

from raymotion.geometry import (
    axis_angle_to_rotmat,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
)

HALF_PI = math.pi / 2


def _random_axis_angle(num: int, *, angle_min: float, angle_max: float, seed: int) -> torch.Tensor:
    """(num, 3) float64 axis-angle vectors with random unit axes and angles in [min, max]."""
    gen = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(num, 3, generator=gen, dtype=torch.float64), dim=-1)
    angle = angle_min + (angle_max - angle_min) * torch.rand(num, 1, generator=gen, dtype=torch.float64)
    return axis * angle


def _skew(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        (torch.stack((o, -z, y), -1), torch.stack((z, o, -x), -1), torch.stack((-y, x, o), -1)), -2
    )


# ---- axis_angle_to_rotmat -------------------------------------------------------------------


def test_axis_angle_zero_gives_identity():
    rotmat = axis_angle_to_rotmat(torch.zeros(2, 3))
    assert_close(rotmat, torch.eye(3).expand(2, 3, 3))


@pytest.mark.parametrize(
    ("axis_angle", "expected"),
    [
        # 90 deg about x: y -> z, z -> -y (columns are the images of x, y, z).
        ((HALF_PI, 0.0, 0.0), [[1, 0, 0], [0, 0, -1], [0, 1, 0]]),
        # 90 deg about y: z -> x, x -> -z.
        ((0.0, HALF_PI, 0.0), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]),
        # 90 deg about z: x -> y, y -> -x.
        ((0.0, 0.0, HALF_PI), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]),
    ],
    ids=["about_x", "about_y", "about_z"],
)
def test_axis_angle_90deg_matches_hand_matrix(axis_angle, expected):
    rotmat = axis_angle_to_rotmat(torch.tensor(axis_angle))
    assert_close(rotmat, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=0)


def test_axis_angle_90deg_about_z_maps_x_to_y():
    rotmat = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, HALF_PI]))
    assert_close(rotmat @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_axis_angle_to_rotmat_matches_matrix_exponential_across_small_angle_threshold():
    # exp(skew(w)) is the rotation by w; angles straddle the Taylor/closed-form switch (0.05 rad).
    angles = torch.tensor([0.0, 1e-8, 1e-4, 0.0499, 0.05, 0.0501, 0.5, 2.0, 3.1, math.pi], dtype=torch.float64)
    axis = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64), dim=0)
    axis_angle = angles[:, None] * axis
    assert_close(axis_angle_to_rotmat(axis_angle), torch.linalg.matrix_exp(_skew(axis_angle)), atol=1e-15, rtol=0)


def test_axis_angle_to_rotmat_gradients_pass_gradcheck_at_and_near_zero_angle():
    for axis_angle in (
        torch.zeros(1, 3, dtype=torch.float64),
        torch.tensor([[1e-3, -2e-3, 5e-4]], dtype=torch.float64),
        torch.tensor([[0.3, -0.2, 0.9]], dtype=torch.float64),
    ):
        assert torch.autograd.gradcheck(axis_angle_to_rotmat, (axis_angle.requires_grad_(),))


def test_axis_angle_to_rotmat_gradient_at_zero_is_the_skew_generator():
    # dR/dw at w = 0 is skew(e_i) for component i; in float32 too.
    axis_angle = torch.zeros(3, requires_grad=True)
    jac_33_3 = torch.autograd.functional.jacobian(axis_angle_to_rotmat, axis_angle)
    assert torch.isfinite(jac_33_3).all()
    assert_close(jac_33_3.permute(2, 0, 1), _skew(torch.eye(3)))


def test_axis_angle_to_rotmat_keeps_arbitrary_leading_dims():
    assert axis_angle_to_rotmat(torch.zeros(2, 4, 5, 3)).shape == (2, 4, 5, 3, 3)


# ---- rotmat_to_axis_angle -------------------------------------------------------------------


def test_rotmat_to_axis_angle_of_identity_is_zero():
    assert_close(rotmat_to_axis_angle(torch.eye(3)), torch.zeros(3))


def test_rotmat_to_axis_angle_of_90deg_about_z_by_hand():
    rotmat = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert_close(rotmat_to_axis_angle(rotmat), torch.tensor([0.0, 0.0, HALF_PI]))


@pytest.mark.parametrize(
    ("angle_min", "angle_max"),
    [(0.0, 1e-6), (1e-6, 0.05), (0.05, math.pi - 0.05), (math.pi - 1e-3, math.pi - 1e-7)],
    ids=["tiny", "small", "generic", "near_pi"],
)
def test_axis_angle_round_trips_through_rotmat(angle_min, angle_max):
    axis_angle = _random_axis_angle(64, angle_min=angle_min, angle_max=angle_max, seed=0)
    recovered = rotmat_to_axis_angle(axis_angle_to_rotmat(axis_angle))
    assert_close(recovered, axis_angle, atol=1e-8, rtol=0)


def test_axis_angle_round_trip_in_float32():
    axis_angle = _random_axis_angle(256, angle_min=0.0, angle_max=math.pi - 1e-2, seed=1).float()
    recovered = rotmat_to_axis_angle(axis_angle_to_rotmat(axis_angle))
    assert_close(recovered, axis_angle, atol=1e-4, rtol=0)


def test_rotmat_to_axis_angle_at_exactly_pi_gives_angle_pi_and_the_same_rotation():
    rotmat = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # 180 deg about x
    axis_angle = rotmat_to_axis_angle(rotmat)
    assert_close(axis_angle.abs(), torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64))
    assert_close(axis_angle_to_rotmat(axis_angle), rotmat)


def test_rotmat_to_axis_angle_returns_angle_in_zero_to_pi():
    # A 270 deg turn about +z is the 90 deg turn about -z.
    rotmat = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, 1.5 * math.pi], dtype=torch.float64))
    assert_close(rotmat_to_axis_angle(rotmat), torch.tensor([0.0, 0.0, -HALF_PI], dtype=torch.float64))


def test_rotmat_to_axis_angle_gradients_pass_gradcheck_at_zero_angle():
    def round_trip(axis_angle: torch.Tensor) -> torch.Tensor:
        return rotmat_to_axis_angle(axis_angle_to_rotmat(axis_angle))

    for axis_angle in (torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[0.4, -1.0, 2.0]], dtype=torch.float64)):
        assert torch.autograd.gradcheck(round_trip, (axis_angle.requires_grad_(),))


# ---- 6D -------------------------------------------------------------------------------------


def test_rot6d_of_identity_columns_gives_identity():
    # (3, 2) row-major [[1, 0], [0, 1], [0, 0]]: a1 = x, a2 = y.
    assert_close(rot6d_to_rotmat(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])), torch.eye(3))


def test_rot6d_gram_schmidt_by_hand():
    # a1 = (0, 3, 0) -> b1 = y; a2 = (1, 5, -2) minus its y part -> b2 = (1, 0, -2)/sqrt(5);
    # b3 = b1 x b2 = (-2, 0, -1)/sqrt(5).
    a1, a2 = (0.0, 3.0, 0.0), (1.0, 5.0, -2.0)
    rot6d = torch.tensor([a1[0], a2[0], a1[1], a2[1], a1[2], a2[2]], dtype=torch.float64)
    r5 = 1 / math.sqrt(5)
    expected = torch.tensor(
        [[0.0, r5, -2 * r5], [1.0, 0.0, 0.0], [0.0, -2 * r5, -r5]], dtype=torch.float64
    )
    assert_close(rot6d_to_rotmat(rot6d), expected)


def test_rotmat_round_trips_through_rot6d():
    rotmat = axis_angle_to_rotmat(_random_axis_angle(128, angle_min=0.0, angle_max=math.pi, seed=2))
    assert_close(rot6d_to_rotmat(rotmat_to_rot6d(rotmat)), rotmat)


def test_random_rot6d_gives_orthonormal_matrices_with_det_one():
    rot6d = torch.randn(4, 32, 6, generator=torch.Generator().manual_seed(3))
    rotmat = rot6d_to_rotmat(rot6d)
    assert rotmat.shape == (4, 32, 3, 3)
    assert_close(rotmat.transpose(-1, -2) @ rotmat, torch.eye(3).expand(4, 32, 3, 3), atol=1e-5, rtol=0)
    assert_close(torch.linalg.det(rotmat), torch.ones(4, 32), atol=1e-5, rtol=0)


def test_rot6d_to_rotmat_is_finite_for_a_zero_input():
    rot6d = torch.zeros(1, 6, requires_grad=True)
    rotmat = rot6d_to_rotmat(rot6d)
    rotmat.sum().backward()
    assert torch.isfinite(rotmat).all() and torch.isfinite(rot6d.grad).all()

import math

import torch
from torch.testing import assert_close

from raymotion.geometry import (
    SPIN_CROP_SIZE,
    SPIN_FOCAL_LENGTH,
    axis_angle_to_rotmat,
    crop_cam_to_full_image_translation,
    crop_to_image,
    image_to_crop,
    perspective_project,
    translation_to_weak_cam,
    weak_cam_to_translation,
    weak_perspective_project,
    weak_perspective_to_normalised,
)


def _body_box_points(*, depth: float, seed: int = 0) -> torch.Tensor:
    """(1, 264, 3) float64 points of a 1.8 m x 0.6 m x depth box centred at the origin, metres:
    its 8 corners plus 256 random interior points (a stand-in for a human body)."""
    half_extent_3 = torch.tensor([0.3, 0.9, depth / 2], dtype=torch.float64)
    corners_83 = torch.tensor(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(seed)
    interior_N3 = 2 * torch.rand(256, 3, generator=gen, dtype=torch.float64) - 1
    return (torch.cat((corners_83, interior_N3)) * half_extent_3)[None]


# A body filling about 80 % of the crop height (1.8 m * 0.9 = 1.62 of the [-1, 1] range).
_CAM_13 = torch.tensor([[0.9, 0.05, -0.1]], dtype=torch.float64)


# ---- weak perspective -----------------------------------------------------------------------


def test_weak_perspective_to_normalised_scales_then_shifts_by_hand():
    points = torch.tensor([[[1.0, 2.0, 3.0], [-2.0, 0.0, 7.0]]])
    cam = torch.tensor([[0.5, 0.1, -0.2]])
    expected = torch.tensor([[[0.6, 0.8], [-0.9, -0.2]]])  # 0.5 * X_xy + (0.1, -0.2)
    assert_close(weak_perspective_to_normalised(points, cam), expected)


def test_weak_perspective_project_by_hand():
    points = torch.tensor([[[1.0, 2.0, 3.0]]])
    cam = torch.tensor([[0.5, 0.1, -0.2]])
    # ((0.6, 0.8) + 1) / 2 * 224
    assert_close(weak_perspective_project(points, cam, crop_size=224), torch.tensor([[[179.2, 201.6]]]))


def test_weak_perspective_project_maps_normalised_edges_to_pixel_edges():
    points = torch.tensor([[[-1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])
    cam = torch.tensor([[1.0, 0.0, 0.0]])
    expected = torch.tensor([[[0.0, 0.0], [112.0, 112.0], [224.0, 224.0]]])
    assert_close(weak_perspective_project(points, cam, crop_size=224), expected)


def test_weak_perspective_project_keeps_arbitrary_leading_dims():
    pixels = weak_perspective_project(torch.zeros(2, 3, 5, 3), torch.ones(2, 3, 3), crop_size=224)
    assert pixels.shape == (2, 3, 5, 2)


# ---- perspective ----------------------------------------------------------------------------


def test_perspective_project_by_hand():
    points = torch.tensor([[[1.0, -0.5, 0.0], [0.0, 0.0, 10.0]]])
    pixels = perspective_project(
        points,
        focal_length=1000.0,
        principal_point=torch.tensor([[320.0, 240.0]]),
        transl_B3=torch.tensor([[0.0, 0.0, 10.0]]),
    )
    # (1000 * 1 / 10 + 320, 1000 * -0.5 / 10 + 240); the second point is on the optical axis.
    assert_close(pixels, torch.tensor([[[420.0, 190.0], [320.0, 240.0]]]))


def test_perspective_project_rotates_before_translating():
    # 90 deg about z maps x to y: (1, 0, 0) -> (0, 1, 0) -> + t = (0, 1, 10).
    rotmat = axis_angle_to_rotmat(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    pixels = perspective_project(
        torch.tensor([[[1.0, 0.0, 0.0]]]),
        focal_length=1000.0,
        principal_point=torch.tensor([[320.0, 240.0]]),
        transl_B3=torch.tensor([[0.0, 0.0, 10.0]]),
        rotmat_B33=rotmat,
    )
    assert_close(pixels, torch.tensor([[[320.0, 340.0]]]))


def test_perspective_project_uses_per_axis_focal_lengths():
    pixels = perspective_project(
        torch.tensor([[[1.0, 1.0, 0.0]]]),
        focal_length=torch.tensor([[1000.0, 500.0]]),
        principal_point=0.0,
        transl_B3=torch.tensor([[0.0, 0.0, 10.0]]),
    )
    assert_close(pixels, torch.tensor([[[100.0, 50.0]]]))


# ---- weak camera <-> translation ------------------------------------------------------------


def test_weak_cam_to_translation_by_hand():
    cam = torch.tensor([[0.5, 0.1, -0.2]], dtype=torch.float64)
    transl = weak_cam_to_translation(cam, focal_length=5000.0, crop_size=224)
    # (tx / s, ty / s, 2 f / (S s)) = (0.2, -0.4, 10000 / 112)
    assert_close(transl, torch.tensor([[0.2, -0.4, 10000.0 / 112.0]], dtype=torch.float64))


def test_weak_cam_round_trips_through_translation():
    gen = torch.Generator().manual_seed(0)
    cam = torch.rand(16, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.5, 2.0, 2.0]) + torch.tensor(
        [0.1, -1.0, -1.0]
    )
    transl = weak_cam_to_translation(cam, focal_length=SPIN_FOCAL_LENGTH, crop_size=SPIN_CROP_SIZE)
    recovered = translation_to_weak_cam(transl, focal_length=SPIN_FOCAL_LENGTH, crop_size=SPIN_CROP_SIZE)
    assert_close(recovered, cam)


def _crop_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    transl = weak_cam_to_translation(cam, focal_length=SPIN_FOCAL_LENGTH, crop_size=SPIN_CROP_SIZE)
    return perspective_project(
        points, focal_length=SPIN_FOCAL_LENGTH, principal_point=SPIN_CROP_SIZE / 2, transl_B3=transl
    )


def test_perspective_with_weak_cam_translation_equals_weak_projection_for_a_flat_body():
    points = _body_box_points(depth=0.0)
    weak = weak_perspective_project(points, _CAM_13, crop_size=SPIN_CROP_SIZE)
    assert_close(_crop_perspective(points, _CAM_13), weak)


def test_perspective_with_weak_cam_translation_is_within_half_a_pixel_for_a_body():
    # SPIN's approximation: f = 5000 px at 224 px puts the body ~50 m away.
    points = _body_box_points(depth=0.3)
    weak = weak_perspective_project(points, _CAM_13, crop_size=SPIN_CROP_SIZE)
    max_error_px = (_crop_perspective(points, _CAM_13) - weak).norm(dim=-1).max()
    assert 0.0 < max_error_px < 0.5


# ---- crop <-> image -------------------------------------------------------------------------


def test_crop_to_image_by_hand():
    # Box of side 200 centred at (100, 50), into a 224 crop: crop edge 0 -> 100 - 100, 50 - 100.
    crop_points = torch.tensor([[[0.0, 0.0], [112.0, 112.0], [224.0, 224.0], [56.0, 0.0]]])
    image_points = crop_to_image(
        crop_points, box_center_B2=torch.tensor([[100.0, 50.0]]), box_size_B=torch.tensor([200.0]), crop_size=224
    )
    expected = torch.tensor([[[0.0, -50.0], [100.0, 50.0], [200.0, 150.0], [50.0, -50.0]]])
    assert_close(image_points, expected)


def test_image_to_crop_inverts_crop_to_image():
    gen = torch.Generator().manual_seed(0)
    image_points = torch.rand(3, 10, 2, generator=gen, dtype=torch.float64) * 640
    box = dict(
        box_center_B2=torch.tensor([[100.0, 50.0], [320.0, 240.0], [0.0, 700.0]], dtype=torch.float64),
        box_size_B=torch.tensor([200.0, 57.5, 1000.0], dtype=torch.float64),
        crop_size=224,
    )
    assert_close(crop_to_image(image_to_crop(image_points, **box), **box), image_points)


# ---- full-image camera ----------------------------------------------------------------------


def test_crop_cam_to_full_image_translation_by_hand():
    transl = crop_cam_to_full_image_translation(
        torch.tensor([[0.5, 0.1, -0.2]], dtype=torch.float64),
        box_center_B2=torch.tensor([[420.0, 200.0]], dtype=torch.float64),
        box_size_B=torch.tensor([200.0], dtype=torch.float64),
        image_size_B2=torch.tensor([[640.0, 480.0]], dtype=torch.float64),
        focal_length=1000.0,
    )
    # b s = 100: t_z = 2000 / 100; t_x = (0.1 * 200 + 2 * 100) / 100; t_y = (-0.2 * 200 - 2 * 40) / 100.
    assert_close(transl, torch.tensor([[2.2, -1.2, 20.0]], dtype=torch.float64))


def test_full_image_translation_reduces_to_crop_translation_when_the_box_is_the_whole_image():
    cam = torch.tensor([[0.7, 0.3, -0.1], [1.2, -0.4, 0.2]], dtype=torch.float64)
    full = crop_cam_to_full_image_translation(
        cam,
        box_center_B2=torch.full((2, 2), SPIN_CROP_SIZE / 2, dtype=torch.float64),
        box_size_B=torch.full((2,), float(SPIN_CROP_SIZE), dtype=torch.float64),
        image_size_B2=torch.full((2, 2), float(SPIN_CROP_SIZE), dtype=torch.float64),
        focal_length=torch.full((2,), SPIN_FOCAL_LENGTH, dtype=torch.float64),
    )
    crop = weak_cam_to_translation(cam, focal_length=SPIN_FOCAL_LENGTH, crop_size=SPIN_CROP_SIZE)
    assert_close(full, crop)


def _full_image_vs_crop(points: torch.Tensor, *, focal_length: float) -> torch.Tensor:
    """Pixel distances between full-image perspective and crop_to_image(weak projection)."""
    box = dict(
        box_center_B2=torch.tensor([[400.0, 260.0]], dtype=torch.float64),
        box_size_B=torch.tensor([200.0], dtype=torch.float64),
    )
    image_size = torch.tensor([[640.0, 480.0]], dtype=torch.float64)
    transl = crop_cam_to_full_image_translation(_CAM_13, **box, image_size_B2=image_size, focal_length=focal_length)
    full = perspective_project(points, focal_length=focal_length, principal_point=image_size / 2, transl_B3=transl)
    weak = weak_perspective_project(points, _CAM_13, crop_size=SPIN_CROP_SIZE)
    via_crop = crop_to_image(weak, **box, crop_size=SPIN_CROP_SIZE)
    return (full - via_crop).norm(dim=-1)


def test_full_image_perspective_equals_crop_weak_projection_for_a_flat_body():
    error_px = _full_image_vs_crop(_body_box_points(depth=0.0), focal_length=1000.0)
    assert_close(error_px, torch.zeros_like(error_px), atol=1e-9, rtol=0)


def test_full_image_perspective_matches_crop_weak_projection_to_sub_pixel_for_a_distant_body():
    # f = 5000 px with a 200 px box puts the body ~55 m away.
    error_px = _full_image_vs_crop(_body_box_points(depth=0.3), focal_length=5000.0)
    assert 0.0 < error_px.max() < 0.5

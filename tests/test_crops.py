"""Crops: the affine map, the pixels and the labels agree; crop-level flow is exact for affine crops."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.testing import assert_close

from raymotion.data.crops import (
    COLOUR_GAIN_RANGE,
    ROTATION_MAX_DEG,
    SCALE_JITTER,
    box_problems,
    crop_box,
    crop_flow,
    crop_image,
    empty_boxes,
    sample_augmentation,
)
from raymotion.geometry.crop_maps import crop_matrix, from_normalised, invert_affine, to_normalised, transform_points
from raymotion.geometry import image_to_crop
from raymotion.data.manifest import read_manifest

# ---- boxes and affine maps ------------------------------------------------------------------


def test_crop_box_centres_the_box_and_scales_its_long_side():
    center_N2, side_N = crop_box(np.array([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 50.0, 10.0]]), scale=1.5)
    np.testing.assert_allclose(center_N2, [[20.0, 40.0], [25.0, 5.0]])
    np.testing.assert_allclose(side_N, [60.0, 75.0])


def test_empty_boxes_and_box_problems_by_hand():
    box_N4 = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 5.0, 10.0], [0.0, np.nan, 1.0, 1.0], [200.0, 0.0, 210.0, 5.0]])
    np.testing.assert_array_equal(empty_boxes(box_N4), [False, True, True, False])
    # The frame size adds the box wholly outside it (x0 >= width 100).
    assert sorted(box_problems(box_N4, width=100, height=100)) == [1, 2, 3]


def test_crop_matrix_without_rotation_or_flip_is_geometry_image_to_crop():
    points_N2 = np.random.default_rng(0).uniform(-20, 250, size=(50, 2))
    center_2, side, size = np.array([101.3, 87.9]), 143.7, 128
    ours_N2 = transform_points(points_N2, crop_matrix(center_2, side, size))
    theirs_N2 = image_to_crop(
        torch.as_tensor(points_N2), box_center_B2=torch.as_tensor(center_2), box_size_B=torch.tensor(side, dtype=torch.float64), crop_size=size
    )
    assert_close(torch.as_tensor(ours_N2), theirs_N2)


def test_crop_corners_map_to_crop_corners_and_flip_mirrors_about_the_centre_line():
    matrix_23 = crop_matrix((50.0, 40.0), 20.0, 10)
    np.testing.assert_allclose(transform_points(np.array([[40.0, 30.0], [60.0, 50.0]]), matrix_23), [[0, 0], [10, 10]])
    points_N2 = np.random.default_rng(1).uniform(0, 100, size=(20, 2))
    plain_N2 = transform_points(points_N2, crop_matrix((50.0, 40.0), 20.0, 10, 17.0))
    flipped_N2 = transform_points(points_N2, crop_matrix((50.0, 40.0), 20.0, 10, 17.0, True))
    np.testing.assert_allclose(flipped_N2, np.stack([10 - plain_N2[:, 0], plain_N2[:, 1]], axis=1), atol=1e-12)
    np.testing.assert_allclose(transform_points(transform_points(points_N2, matrix_23), invert_affine(matrix_23)),
                               points_N2, atol=1e-12)


def test_positive_rotation_turns_the_x_axis_towards_the_y_axis():
    matrix_23 = crop_matrix((0.0, 0.0), 2.0, 2, rotation_deg=90.0)
    # Image point one unit right of the centre lands one unit below the crop centre (1, 1).
    np.testing.assert_allclose(transform_points(np.array([[1.0, 0.0]]), matrix_23), [[1.0, 2.0]], atol=1e-12)


def test_normalised_coordinates_are_minus_one_and_one_at_the_crop_edges():
    np.testing.assert_allclose(to_normalised(np.array([0.0, 64.0, 128.0]), size=128), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(from_normalised(to_normalised(np.array([3.7, 99.1]), size=128), size=128), [3.7, 99.1])


@pytest.mark.parametrize(("rotation_deg", "flip"), [(0.0, False), (0.0, True), (23.0, False), (-30.0, True)])
def test_crop_image_samples_the_image_where_the_matrix_says(rotation_deg, flip):
    # A linear ramp is reproduced exactly by bilinear interpolation, so each crop pixel must hold the
    # ramp at the image point its centre maps to: this pins the half-pixel convention, the rotation
    # sign and the flip of the pixels to those of transform_points.
    height, width = 120, 160
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    image_HW3 = np.stack([xs, ys, 0.5 * xs - 0.25 * ys + 40.0], axis=-1).astype(np.float32)
    center_2, side, size = np.array([83.2, 61.7]), 57.3, 40
    crop_SS3 = crop_image(image_HW3, center_2=center_2, side=side, size=size, rotation_deg=rotation_deg, flip=flip)
    centres = np.arange(size) + 0.5
    grid_SS2 = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1)
    image_SS2 = transform_points(grid_SS2, invert_affine(crop_matrix(center_2, side, size, rotation_deg, flip)))
    expected_SS3 = np.stack([image_SS2[..., 0], image_SS2[..., 1],
                             0.5 * image_SS2[..., 0] - 0.25 * image_SS2[..., 1] + 40.0], axis=-1)
    # OpenCV quantises sampling positions to 1/32 px: up to 1/64 px of error per axis.
    np.testing.assert_allclose(crop_SS3, expected_SS3, atol=0.03)


def test_crop_image_fills_outside_the_image_with_zero():
    image_HW3 = np.full((20, 20, 3), 200, dtype=np.uint8)
    crop_SS3 = crop_image(image_HW3, center_2=(0.0, 10.0), side=20.0, size=20)
    assert (crop_SS3[:, :9] == 0).all() and (crop_SS3[:, 11:] == 200).all()


# ---- flow --------------------------------------------------------------------------------------


def test_crop_flow_of_a_constant_flow_between_two_boxes_by_hand():
    flow_HW2 = np.broadcast_to(np.array([3.0, -2.0], dtype=np.float32), (100, 100, 2))
    # Crop 1: centre (40, 50), side 20 -> 10 px (k1 = 0.5); crop 2: centre (45, 48), side 40 (k2 = 0.25).
    crop_SS2 = crop_flow(flow_HW2, center1_2=(40.0, 50.0), side1=20.0, center2_2=(45.0, 48.0), side2=40.0, size=10)
    # Crop-1 pixel (0, 0), centre (0.5, 0.5): image (31, 41) -> moved to (34, 39) -> crop 2
    # ((34 - 45) / 4 + 5, (39 - 48) / 4 + 5) = (2.25, 2.75): displacement (1.75, 2.25).
    np.testing.assert_allclose(crop_SS2[0, 0], [1.75, 2.25], atol=1e-5)
    # Crop-1 pixel (x=9, y=0), centre (9.5, 0.5): image (49, 41) -> (52, 39) -> (6.75, 2.75): (-2.75, 2.25).
    np.testing.assert_allclose(crop_SS2[0, 9], [-2.75, 2.25], atol=1e-5)
    # Everywhere: d(q) = (k2 / k1 - 1) q + const, i.e. -q / 2 + const.
    centres = np.arange(10) + 0.5
    expected_x = -0.5 * centres + (1.75 + 0.25)
    np.testing.assert_allclose(crop_SS2[..., 0], np.broadcast_to(expected_x, (10, 10)), atol=1e-5)


def test_crop_flow_of_an_aligned_unit_scale_crop_is_the_image_flow():
    flow_HW2 = np.random.default_rng(2).normal(size=(64, 80, 2)).astype(np.float32)
    crop_SS2 = crop_flow(flow_HW2, center1_2=(30.0, 40.0), side1=16.0, center2_2=(30.0, 40.0), side2=16.0, size=16)
    np.testing.assert_allclose(crop_SS2, flow_HW2[32:48, 22:38], atol=1e-5)


def test_crop_flow_is_nan_off_the_body_and_outside_the_image():
    flow_HW2 = np.ones((100, 100, 2), dtype=np.float32)
    flow_HW2[:, :50] = np.nan
    crop_SS2 = crop_flow(flow_HW2, center1_2=(50.0, 50.0), side1=20.0, center2_2=(50.0, 50.0), side2=20.0, size=20)
    assert np.isnan(crop_SS2[:, :10]).all() and np.isfinite(crop_SS2[:, 10:]).all()
    # Half-pixel offset: each crop pixel straddles two image columns. The one straddling the body
    # edge equally is kept, with the body's value only (NaN never mixes in).
    crop_SS2 = crop_flow(flow_HW2, center1_2=(50.5, 50.0), side1=20.0, center2_2=(50.5, 50.0), side2=20.0, size=20)
    assert np.isnan(crop_SS2[:, :9]).all() and np.isfinite(crop_SS2[:, 9:]).all()
    np.testing.assert_allclose(crop_SS2[:, 9:], 1.0, atol=1e-6)
    flow_HW2[:] = 1.0
    crop_SS2 = crop_flow(flow_HW2, center1_2=(5.0, 50.0), side1=20.0, center2_2=(5.0, 50.0), side2=20.0, size=20)
    assert np.isnan(crop_SS2[:, :5]).all() and np.isfinite(crop_SS2[:, 5:]).all()


# ---- augmentation of labels -------------------------------------------------------------------


def test_sampled_augmentations_stay_in_their_documented_ranges():
    generator = torch.Generator().manual_seed(0)
    draws = [sample_augmentation(generator) for _ in range(2000)]
    scales = np.array([d.scale for d in draws])
    rotations = np.array([d.rotation_deg for d in draws])
    gains = np.array([d.gain_3 for d in draws])
    assert scales.min() >= 1 - SCALE_JITTER and scales.max() <= 1 + SCALE_JITTER
    assert np.abs(rotations).max() <= ROTATION_MAX_DEG
    assert 0.55 < np.mean(rotations != 0) < 0.65
    assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
    assert gains.min() >= COLOUR_GAIN_RANGE[0] and gains.max() <= COLOUR_GAIN_RANGE[1]


# ---- against the rendered benchmark ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_benchmark):
    return tiny_benchmark


@pytest.mark.render
@pytest.mark.parametrize(("rotation_deg", "flip"), [(0.0, False), (20.0, True)])
def test_visible_joints_land_on_the_body_silhouette_in_the_crop(tiny, rotation_deg, flip):
    # The body's silhouette is where the exact flow is finite; crop it like the frame and check the
    # visible joints, mapped by the same crop matrix, fall on it.
    inside = total = 0
    size = 64
    for row in read_manifest(tiny).to_pylist():
        if row["split"] != "video":
            continue
        labels = pq.read_table(tiny / row["labels_path"]).to_pydict()
        with np.load(tiny / row["flow_path"]) as flows:
            silhouette_THW = np.isfinite(flows["forward"][..., 0].astype(np.float32)).astype(np.float32)
        for t in range(len(silhouette_THW)):
            center_2, side = crop_box(np.array(labels["box_xyxy"][t]), scale=1.3)
            mask_SS = crop_image(silhouette_THW[t], center_2=center_2, side=side, size=size,
                                 rotation_deg=rotation_deg, flip=flip)
            joints_J2 = transform_points(np.array(labels["joints2d"][t]).reshape(24, 2),
                                         crop_matrix(center_2, side, size, rotation_deg, flip))
            for x, y in joints_J2[np.array(labels["joints2d_visible"][t])]:
                total += 1
                inside += mask_SS[int(y), int(x)] > 0.5
    assert total > 50
    assert inside / total > 0.95


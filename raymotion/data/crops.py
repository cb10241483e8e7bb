"""Square person crops (their affine maps: ``raymotion.geometry.crop_maps``), crop-level optical flow, the
ImageNet normalisation, and the augmentation draw.

The 3D side of an augmentation (rotating and mirroring poses and camera-frame joints) is pose geometry:
``raymotion.geometry.pose3d``.

Pure numpy/torch (and OpenCV for the one warp); no Ray, no DALI. The single-process datasets
(``raymotion.data.frames``, ``raymotion.data.video_pairs``) and the Ray Data pipelines use the same functions.

Tensor naming legend (shape suffixes):
    N = points or boxes, J = joints, H, W = image height and width, S = crop side (pixels);
    trailing digits are literal sizes (``box_xyxy_N4`` is (N, 4), ``matrix_23`` is (2, 3)).

Coordinates: pixel-corner convention, the crop's affine map and its rotation sign are
``raymotion.geometry.crop_maps`` (its module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from raymotion.geometry.crop_maps import crop_matrix, invert_affine, transform_points


# ImageNet statistics of torchvision's and timm's pretrained backbones (RGB, on [0, 1] pixel values): the
# one definition. The regressor (raymotion.models) expects its input normalised with them and never
# normalises itself, so they live with the normalisation here (`data` never imports `models`).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Augmentation ranges: SPIN's (Kolotouros et al. 2019, github.com/nkolot/SPIN, config.py and
# datasets/base_dataset.py::augm_params: scale_factor 0.25, rot_factor 30 with probability 0.6,
# flip probability 0.5, noise_factor 0.4), except that the rotation is drawn uniformly in
# [-30, 30] deg rather than from SPIN's clipped Gaussian (std 30, clipped at +/-60).
SCALE_JITTER = 0.25
"""The crop side is multiplied by a factor drawn uniformly in [1 - 0.25, 1 + 0.25]."""
ROTATION_MAX_DEG = 30.0
"""Rotation drawn uniformly in [-30, 30] degrees ..."""
ROTATION_PROB = 0.6
"""... with this probability (else 0)."""
FLIP_PROB = 0.5
"""Probability of a horizontal flip."""
COLOUR_GAIN_RANGE = (0.6, 1.4)
"""Per-channel multiplicative gain on RGB, drawn uniformly; the result is clipped to [0, 255]."""


# ---- boxes and affine maps ------------------------------------------------------------------


def crop_box(box_xyxy_N4: np.ndarray, *, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The square crop around person boxes: centred on the box, side = scale * max(w, h).

    Args:
        box_xyxy_N4: (..., 4) boxes (x0, y0, x1, y1), image pixels.
        scale: margin factor (1.3 in the paper's pipeline, docs/data_format.md's tight boxes).

    Returns:
        center_N2: (..., 2) crop centre (x, y), image pixels, float64.
        side_N: (...) crop side, image pixels, float64.
    """
    box = np.asarray(box_xyxy_N4, dtype=np.float64)
    center_N2 = (box[..., :2] + box[..., 2:]) / 2.0
    side_N = scale * np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])
    return center_N2, side_N


def empty_boxes(box_N4: np.ndarray) -> np.ndarray:
    """(N,) bool: the boxes that are not finite or empty (x0 < x1 and y0 < y1 fail), whatever the frame size.

    Args:
        box_N4: (N, 4) boxes (x0, y0, x1, y1), image pixels.
    """
    return ~np.isfinite(box_N4).all(axis=1) | (box_N4[:, 2] <= box_N4[:, 0]) | (box_N4[:, 3] <= box_N4[:, 1])


def box_problems(box_T4: np.ndarray, *, width: float | np.ndarray, height: float | np.ndarray) -> dict[int, str]:
    """Frame -> what is wrong with its box: empty, not finite (``empty_boxes``) or wholly outside the
    ``width`` x ``height`` frame (nothing to crop). Frames with a good box are absent; the dict is in frame order.

    Args:
        box_T4: (T, 4) boxes (x0, y0, x1, y1), image pixels, one per frame.
        width, height: the frame size, pixels: one for every frame, or (T,) each frame's own (image sequences
            of mixed sizes; inf: no bound).
    """
    width_T, height_T = np.broadcast_to(width, len(box_T4)), np.broadcast_to(height, len(box_T4))
    bad_T = empty_boxes(box_T4)
    bad_T |= (box_T4[:, 2] <= 0) | (box_T4[:, 3] <= 0) | (box_T4[:, 0] >= width_T) | (box_T4[:, 1] >= height_T)
    return {t: f"box_xyxy {box_T4[t].tolist()} is empty, not finite or outside the {width_T[t]:g}x{height_T[t]:g} frame"
            for t in np.flatnonzero(bad_T).tolist()}


# ---- images and flow --------------------------------------------------------------------------


def crop_image(
    image_HW3: np.ndarray,
    *,
    center_2: np.ndarray | tuple[float, float],
    side: float,
    size: int,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """Cut a crop out of an image with one bilinear ``cv2.warpAffine``.

    Pixels outside the image are 0 (black), as in SPIN's crop: reflecting the border would paint
    mirrored body parts that no label describes. Downscaling is bilinear (no prefilter), so crops
    much smaller than their box alias; at the usual ~1-2x reduction this is negligible. OpenCV
    quantises sampling positions to 1/32 px (INTER_TAB_SIZE), i.e. up to 1/64 px of error per axis.

    Args:
        image_HW3: (H, W, C) or (H, W) image, uint8 or float32 (dtype is kept).
        center_2, side, size, rotation_deg, flip: the crop, see ``crop_matrix``.

    Returns:
        (S, S, C) or (S, S) crop. Crop pixel (i, j) holds the image sampled at
        ``transform_points([(i + 0.5, j + 0.5)], invert_affine(crop_matrix(...)))``.
    """
    matrix_23 = crop_matrix(center_2, side, size, rotation_deg, flip)
    # OpenCV places pixel centres at integer coordinates; ours are at i + 0.5. In OpenCV's
    # coordinates q = p - 0.5 the map is q_crop = L q_image + (t + L (0.5, 0.5) - 0.5).
    cv_matrix_23 = matrix_23.copy()
    cv_matrix_23[:, 2] += matrix_23[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return cv2.warpAffine(
        image_HW3, cv_matrix_23, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def sample_bilinear(image_HWC: np.ndarray, points_N2: np.ndarray) -> np.ndarray:
    """Bilinear samples of an image with NaN holes, at pixel-corner coordinates.

    NaN marks pixels without a value (off the body, for flow). A sample averages its finite
    neighbours with renormalised bilinear weights, and is NaN where those weights sum to less than
    1/2: the valid region is the bilinearly resampled mask thresholded at 1/2 (neither eroded nor
    dilated), and no value mixes with a NaN. Points outside the image [0, W] x [0, H] are NaN; within
    the outer half pixel the edge pixels are repeated.

    Args:
        image_HWC: (H, W, C) float image, NaN where undefined.
        points_N2: (..., 2) sample points (x, y), pixels, pixel-corner convention.

    Returns:
        (..., C) float64 samples.
    """
    height, width = image_HWC.shape[:2]
    x = points_N2[..., 0] - 0.5
    y = points_N2[..., 1] - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    wx = x - x0
    wy = y - y0
    x0i = np.clip(x0, 0, width - 1).astype(np.int64)
    x1i = np.clip(x0 + 1, 0, width - 1).astype(np.int64)
    y0i = np.clip(y0, 0, height - 1).astype(np.int64)
    y1i = np.clip(y0 + 1, 0, height - 1).astype(np.int64)
    finite_HW = np.isfinite(image_HWC).all(axis=-1)
    image_HWC = np.where(finite_HW[..., None], image_HWC, 0.0)
    total = np.zeros(points_N2.shape[:-1] + image_HWC.shape[2:])
    weight_sum = np.zeros(points_N2.shape[:-1])
    for yi, xi, weight in ((y0i, x0i, (1 - wx) * (1 - wy)), (y0i, x1i, wx * (1 - wy)),
                           (y1i, x0i, (1 - wx) * wy), (y1i, x1i, wx * wy)):
        weight = weight * finite_HW[yi, xi]
        total += image_HWC[yi, xi] * weight[..., None]
        weight_sum += weight
    outside = (points_N2[..., 0] < 0) | (points_N2[..., 0] > width) | (points_N2[..., 1] < 0) | (points_N2[..., 1] > height)
    invalid = outside | (weight_sum < 0.5)
    samples = total / np.where(invalid, 1.0, weight_sum)[..., None]
    samples[invalid] = np.nan
    return samples


def crop_flow(
    flow_HW2: np.ndarray,
    *,
    center1_2: np.ndarray | tuple[float, float],
    side1: float,
    center2_2: np.ndarray | tuple[float, float],
    side2: float,
    size: int,
) -> np.ndarray:
    """Image-space flow from frame 1 to frame 2 -> flow between crop 1 and crop 2, on crop 1's grid.

    For the centre q of each crop-1 pixel: x = A1^-1 q (image point), f(x) sampled bilinearly, and
    the crop-level flow is A2(x + f(x)) - q. This is exact for the affine crops given the sampled
    image flow (no rotation or flip: the crops of frame pairs are plain box crops).

    Args:
        flow_HW2: (H, W, 2) flow (dx, dy) from frame 1 to frame 2, image pixels; NaN off the body.
        center1_2, side1: crop of frame 1 (image pixels), see ``crop_matrix``.
        center2_2, side2: crop of frame 2 (image pixels).
        size: S, crop side, crop pixels (both crops).

    Returns:
        (S, S, 2) float32 flow (dx, dy), crop pixels: the content at crop-1 pixel (x, y) is at
        (x + dx, y + dy) in crop 2. NaN where the image flow is NaN (see ``sample_bilinear``) or the
        crop pixel lies outside the image; ``np.isfinite(flow[..., 0])`` is the validity mask.
    """
    crop1_to_image_23 = invert_affine(crop_matrix(center1_2, side1, size))
    image_to_crop2_23 = crop_matrix(center2_2, side2, size)
    centres_1d = np.arange(size, dtype=np.float64) + 0.5
    grid_SS2 = np.stack(np.meshgrid(centres_1d, centres_1d, indexing="xy"), axis=-1)
    image_SS2 = transform_points(grid_SS2, crop1_to_image_23)
    flow_SS2 = sample_bilinear(np.asarray(flow_HW2, dtype=np.float32), image_SS2)
    return (transform_points(image_SS2 + flow_SS2, image_to_crop2_23) - grid_SS2).astype(np.float32)


def normalise_image(crop_HW3: np.ndarray, *, gain_3: np.ndarray | None = None) -> torch.Tensor:
    """uint8 RGB crop -> (3, S, S) float32 ImageNet-normalised tensor, with an optional colour gain.

    Args:
        crop_HW3: (S, S, 3) uint8 RGB.
        gain_3: (3,) per-channel gain applied to the pixel values before normalising (clipped to
            [0, 255] like SPIN's colour noise); None for no gain.
    """
    image_HW3 = crop_HW3.astype(np.float32)
    if gain_3 is not None:
        image_HW3 = np.clip(image_HW3 * np.asarray(gain_3, dtype=np.float32), 0.0, 255.0)
    return normalise_batch_images(torch.from_numpy(image_HW3)[None])[0].contiguous()


def normalise_batch_images(images_BSS3: torch.Tensor) -> torch.Tensor:
    """A batch of uint8 RGB crops -> (B, 3, S, S) float32 ImageNet-normalised, on the input's device.

    The training side of the Ray Data rows (uint8 moves 4x fewer bytes). Ray's ``iter_torch_batches``
    delivers batches on the worker's device (CUDA on GPU workers), so the constants are built on that
    device here, never cached on the CPU.

    Args:
        images_BSS3: (B, S, S, 3) uint8 (or float 0..255) RGB, any device.
    """
    mean_13 = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=images_BSS3.device).view(1, 3, 1, 1)
    std_13 = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=images_BSS3.device).view(1, 3, 1, 1)
    return (images_BSS3.permute(0, 3, 1, 2).float() / 255.0 - mean_13) / std_13


# ---- augmentation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Augmentation:
    """One draw of the crop augmentation; the identity by default."""

    scale: float = 1.0
    """Factor on the crop side (1 + U(-SCALE_JITTER, SCALE_JITTER) when drawn)."""
    rotation_deg: float = 0.0
    """Rotation of the crop, degrees (sign: see the module docstring)."""
    flip: bool = False
    """Horizontal flip (image mirrored, left and right joints swapped)."""
    gain_3: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Per-channel RGB gain."""


def sample_augmentation(generator: torch.Generator | None = None) -> Augmentation:
    """Draw an augmentation with the ranges above, from torch's RNG.

    torch's RNG (not numpy's) because a DataLoader seeds it differently in every worker process.
    """
    u_6 = torch.rand(6, generator=generator, dtype=torch.float64).tolist()
    rotate = u_6[1] < ROTATION_PROB
    low, high = COLOUR_GAIN_RANGE
    return Augmentation(
        scale=1.0 + SCALE_JITTER * (2.0 * u_6[0] - 1.0),
        rotation_deg=ROTATION_MAX_DEG * (2.0 * u_6[2] - 1.0) if rotate else 0.0,
        flip=u_6[3] < FLIP_PROB,
        gain_3=tuple(low + (high - low) * g for g in torch.rand(3, generator=generator, dtype=torch.float64).tolist()),
    )

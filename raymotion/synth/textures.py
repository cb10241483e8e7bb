"""Procedural appearance: per-subject body textures fixed to the skin, and noise backgrounds.

Legend: V vertices, P body parts (24 SMPL joints' skinning regions), H, W image size, K sinusoids.
Optical flow needs texture: FACTS.md measured DIS's error on the body halving with a high-contrast
texture. Both textures here are sums of random sinusoids ("random Fourier features"): band-limited, so
they have no detail finer than a chosen wavelength and anti-alias cleanly when supersampled, and they are
exact functions of position, so the body texture moves with the skin (it is evaluated on the rest-pose
template and carried by the vertices).
"""

from __future__ import annotations

import numpy as np

from raymotion.body.joints import SMPL_JOINT

# Clothing-like regions: which skinning parts each garment covers (the rest is skin).
_SHIRT_PARTS = ("spine1", "spine2", "spine3", "left_collar", "right_collar", "left_shoulder", "right_shoulder")
_SLEEVE_PARTS = ("left_elbow", "right_elbow")
_TROUSER_PARTS = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee")
_SHOE_PARTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")
# Wavelengths of the body texture in pixels of the output video: finer than ~3 px aliases (and averages
# away in the supersampled render), much coarser leaves flat patches that optical flow cannot track.
BODY_WAVELENGTHS_PX = (2.5, 12.0)
# Wavelengths of the background texture in pixels of the output video.
BACKGROUND_WAVELENGTHS_PX = (3.0, 40.0)


def band_limited_noise(points_NC: np.ndarray, rng: np.random.Generator, *, wavelengths: tuple[float, float], num_waves: int = 48) -> np.ndarray:
    """A smooth random field at ``points_NC`` (C = 2 or 3 coordinates), roughly N(0, 1).

    Sum of ``num_waves`` sinusoids with random directions, log-uniform wavelengths in ``wavelengths``
    (same units as the points) and random phases.

    Returns:
        (N,) float64.
    """
    dim = points_NC.shape[1]
    directions_KC = rng.normal(size=(num_waves, dim))
    directions_KC /= np.linalg.norm(directions_KC, axis=1, keepdims=True)
    lo, hi = np.log(wavelengths[0]), np.log(wavelengths[1])
    wavelengths_K = np.exp(rng.uniform(lo, hi, size=num_waves))
    phases_K = rng.uniform(0, 2 * np.pi, size=num_waves)
    arg_NK = points_NC @ (directions_KC * (2 * np.pi / wavelengths_K)[:, None]).T + phases_K
    return np.sin(arg_NK).sum(axis=1) * np.sqrt(2.0 / num_waves)


def _random_colour(rng: np.random.Generator, *, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """An RGB colour in [0, 1] from a random hue and the given saturation/value ranges."""
    hue = rng.uniform(0, 1)
    sat = rng.uniform(*saturation)
    val = rng.uniform(*value)
    k_3 = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return val - val * sat * np.clip(np.minimum(k_3, 4.0 - k_3), 0.0, 1.0)


def hair_mask(template_V3: np.ndarray, part_V: np.ndarray) -> np.ndarray:
    """(V,) bool: the head's back, top and sides, leaving the face (front, below the hairline) as skin.

    The face is the one cue in a single frame of a textured body that tells its front from its back, and
    with it left from right; real images have it too. Rest pose: y up, the body faces +z.
    """
    head_V = part_V == SMPL_JOINT["head"]
    if not head_V.any():
        return head_V
    head_N3 = template_V3[head_V]
    centre_3 = head_N3.mean(axis=0)
    height = head_N3[:, 1].max() - head_N3[:, 1].min()
    depth = head_N3[:, 2].max() - head_N3[:, 2].min()
    rel_N3 = head_N3 - centre_3
    face_N = (rel_N3[:, 2] > 0.1 * depth) & (rel_N3[:, 1] < 0.2 * height)
    mask_V = head_V.copy()
    mask_V[head_V] = ~face_N
    return mask_V


def body_vertex_colors(
    template_V3: np.ndarray,
    part_V: np.ndarray,
    rng: np.random.Generator,
    *,
    metres_per_px: float,
    contrast: float = 0.8,
) -> np.ndarray:
    """A subject's texture: skin, hair (see ``hair_mask``) and garment colours by body part, modulated by
    high-contrast band-limited noise.

    Args:
        template_V3: (V, 3) rest-pose vertices of the subject, metres (the texture follows the skin).
        part_V: (V,) index of the SMPL joint that dominates each vertex's skinning weights.
        rng: the subject's generator (the texture is a pure function of it).
        metres_per_px: size of an output-video pixel on the body, so that the texture's wavelengths
            (BODY_WAVELENGTHS_PX) suit the image it is rendered into.
        contrast: in [0, 1]; the noise scales each colour by 1 +/- contrast.

    Returns:
        (V, 3) float32 colours in [0, 1].
    """
    skin = _random_colour(rng, saturation=(0.25, 0.55), value=(0.35, 0.95))
    garments = {
        "shirt": _random_colour(rng, saturation=(0.2, 1.0), value=(0.3, 1.0)),
        "trousers": _random_colour(rng, saturation=(0.1, 0.9), value=(0.2, 0.9)),
        "shoes": _random_colour(rng, saturation=(0.0, 0.6), value=(0.1, 0.7)),
    }
    hair = _random_colour(rng, saturation=(0.2, 0.7), value=(0.05, 0.45))
    long_sleeves = rng.uniform() < 0.5
    colours_V3 = np.broadcast_to(skin, template_V3.shape).copy()
    colours_V3[hair_mask(template_V3, part_V)] = hair
    regions = {
        "shirt": _SHIRT_PARTS + (_SLEEVE_PARTS if long_sleeves else ()),
        "trousers": _TROUSER_PARTS,
        "shoes": _SHOE_PARTS,
    }
    for garment, parts in regions.items():
        mask_V = np.isin(part_V, [SMPL_JOINT[p] for p in parts])
        colours_V3[mask_V] = garments[garment]
    # Luminance noise (what optical flow tracks) plus weaker per-channel noise for colour variety.
    wavelengths_m = (BODY_WAVELENGTHS_PX[0] * metres_per_px, BODY_WAVELENGTHS_PX[1] * metres_per_px)
    luminance_V = band_limited_noise(template_V3, rng, wavelengths=wavelengths_m)
    chroma_V3 = np.stack([band_limited_noise(template_V3, rng, wavelengths=wavelengths_m) for _ in range(3)], axis=1)
    gain_V3 = 1.0 + contrast * np.tanh(luminance_V)[:, None] + 0.15 * np.tanh(chroma_V3)
    # Lift dark garments so the noise stays visible on them.
    colours_V3 = 0.15 + 0.85 * colours_V3
    return np.clip(colours_V3 * gain_V3 * 0.75, 0.0, 1.0).astype(np.float32)


def band_limited_image(height: int, width: int, rng: np.random.Generator, *, wavelengths_px: tuple[float, float]) -> np.ndarray:
    """White noise band-pass filtered in the Fourier domain to wavelengths in ``wavelengths_px``.

    The image counterpart of ``band_limited_noise`` (an FFT costs milliseconds where a sum of sinusoids
    over every pixel costs a second). Periodic at the borders.

    Returns:
        (H, W) float64 with zero mean and unit standard deviation.
    """
    noise_HW = rng.normal(size=(height, width))
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(freq_y, freq_x)
    band = (radius >= 1.0 / wavelengths_px[1]) & (radius <= 1.0 / wavelengths_px[0])
    image_HW = np.fft.irfft2(np.fft.rfft2(noise_HW) * band, s=(height, width))
    return (image_HW - image_HW.mean()) / (image_HW.std() + 1e-12)


def background_image(height: int, width: int, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
    """A textured background: two random colours mixed by multi-octave band-limited noise.

    Args:
        scale: pixels of this image per pixel of the output video (the supersampling factor), so the
            texture's wavelengths stay fixed in output pixels.

    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    lo, hi = BACKGROUND_WAVELENGTHS_PX
    mix_HW = 0.5 + 0.5 * np.tanh(band_limited_image(height, width, rng, wavelengths_px=(lo * scale * 2, hi * scale)))
    detail_HW = np.tanh(band_limited_image(height, width, rng, wavelengths_px=(lo * scale, lo * scale * 3)))
    colour_a = _random_colour(rng, saturation=(0.0, 0.8), value=(0.2, 1.0))
    colour_b = _random_colour(rng, saturation=(0.0, 0.8), value=(0.2, 1.0))
    image_HW3 = colour_a * mix_HW[..., None] + colour_b * (1.0 - mix_HW[..., None])
    image_HW3 *= 1.0 + 0.3 * detail_HW[..., None]
    return np.clip(image_HW3, 0.0, 1.0).astype(np.float32)

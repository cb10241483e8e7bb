"""Pure, batched geometry: rotation representations and camera models (depends only on torch)."""

from raymotion.geometry.camera import (
    SPIN_CROP_SIZE,
    SPIN_FOCAL_LENGTH,
    crop_cam_to_full_image_translation,
    crop_to_image,
    image_to_crop,
    perspective_project,
    translation_to_weak_cam,
    weak_cam_to_translation,
    weak_perspective_project,
    weak_perspective_to_normalised,
)
from raymotion.geometry.rasterize import (
    Raster,
    eroded_vertex_visibility,
    rasterize,
    surface_flow,
    surface_flow_affine,
    vertex_visibility,
)
from raymotion.geometry.rotations import (
    axis_angle_to_rotmat,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
)

__all__ = [
    "Raster",
    "SPIN_CROP_SIZE",
    "SPIN_FOCAL_LENGTH",
    "axis_angle_to_rotmat",
    "crop_cam_to_full_image_translation",
    "crop_to_image",
    "eroded_vertex_visibility",
    "image_to_crop",
    "perspective_project",
    "rasterize",
    "rot6d_to_rotmat",
    "rotmat_to_axis_angle",
    "rotmat_to_rot6d",
    "surface_flow",
    "surface_flow_affine",
    "translation_to_weak_cam",
    "vertex_visibility",
    "weak_cam_to_translation",
    "weak_perspective_project",
    "weak_perspective_to_normalised",
]

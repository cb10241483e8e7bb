"""Rasterise meshes with pyrender: OSMesa on the CPU, EGL where a GPU is present.

Legend: V vertices, F faces, H, W image height and width.
Camera convention (OpenCV): x right, y down, z forward, pixels with the origin at the top-left corner of
the top-left pixel. Vertices are given in this camera frame, in metres; intrinsics in pixels.
pyrender uses the OpenGL frame (y up, looking down -z), so vertices are flipped into it and the camera
sits at the origin: u = fx * X / Z + cx, v = fy * Y / Z + cy in both conventions.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# PyOpenGL picks its platform at import time; pyrender must therefore be imported after this line.
if "PYOPENGL_PLATFORM" not in os.environ:
    os.environ["PYOPENGL_PLATFORM"] = "egl" if Path("/dev/nvidia0").exists() else "osmesa"

# Triton (imported by torchvision's and timm's model code) and Mesa's llvmpipe both load LLVM: importing
# triton after an OSMesa context exists crashes the process (segfault), importing it first does not.
with contextlib.suppress(ImportError):
    import triton  # noqa: E402, F401

import pyrender  # noqa: E402
import trimesh  # noqa: E402

# OpenCV camera frame -> OpenGL camera frame.
_CV_TO_GL_33 = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """Pinhole intrinsics in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


class MeshRenderer:
    """An offscreen renderer for one image size; reuse it across frames (creating a context is slow)."""

    def __init__(self, *, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._renderer = pyrender.OffscreenRenderer(viewport_width=width, viewport_height=height)

    def render(
        self,
        verts_V3: np.ndarray,
        faces_F3: np.ndarray,
        *,
        intrinsics: Intrinsics,
        vertex_colors_V3: np.ndarray | None = None,
        background_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0),
        lit: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render one mesh.

        Args:
            verts_V3: (V, 3) vertices in the OpenCV camera frame, metres (z > 0 in front of the camera).
            faces_F3: (F, 3) vertex indices.
            intrinsics: pinhole camera; its width/height must match the renderer's.
            vertex_colors_V3: (V, 3) colours in [0, 1]; None gives a uniform skin tone.
            background_rgb: background colour in [0, 1].
            lit: smooth-shaded with lights (True) or flat vertex colours with no lighting (False; the
                FLAT shader is linear in the colours, so they can carry data).

        Returns:
            rgb_HW3 uint8 and depth_HW float32 (metres along z, 0 where no surface).
        """
        if (intrinsics.width, intrinsics.height) != (self.width, self.height):
            raise ValueError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height} but this renderer draws "
                f"{self.width}x{self.height}"
            )
        if vertex_colors_V3 is None:
            vertex_colors_V3 = np.broadcast_to(np.array([0.80, 0.62, 0.52]), verts_V3.shape)
        verts_gl_V3 = np.asarray(verts_V3, dtype=np.float32) @ _CV_TO_GL_33.T.astype(np.float32)
        colours_V4 = np.concatenate(
            [np.asarray(vertex_colors_V3, dtype=np.float32), np.ones((len(verts_gl_V3), 1), np.float32)], axis=1
        )
        if lit:
            normals_V3 = trimesh.Trimesh(vertices=verts_gl_V3, faces=faces_F3, process=False).vertex_normals
            primitive = pyrender.Primitive(
                positions=verts_gl_V3, normals=normals_V3, indices=faces_F3, color_0=colours_V4, mode=4
            )
        else:
            # Unlit: no normals needed (building a trimesh per frame would cost more than the render).
            primitive = pyrender.Primitive(positions=verts_gl_V3, indices=faces_F3, color_0=colours_V4, mode=4)
        # No material: a MetallicRoughnessMaterial with integer colour factors renders vertex colours
        # black (see FACTS.md); pyrender's default material shows vertex colours. mode 4 = GL_TRIANGLES.
        scene = pyrender.Scene(bg_color=[*background_rgb, 1.0], ambient_light=[0.35, 0.35, 0.35])
        scene.add(pyrender.Mesh([primitive]))
        camera = pyrender.IntrinsicsCamera(
            fx=intrinsics.fx, fy=intrinsics.fy, cx=intrinsics.cx, cy=intrinsics.cy, znear=0.05, zfar=1000.0
        )
        scene.add(camera, pose=np.eye(4))
        if lit:
            key = np.eye(4)
            key[:3, :3] = trimesh.transformations.euler_matrix(-0.6, 0.5, 0.0)[:3, :3]
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=3.0), pose=key)
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=1.2), pose=np.eye(4))
        flags = pyrender.RenderFlags.NONE if lit else pyrender.RenderFlags.FLAT
        rgb_HW3, depth_HW = self._renderer.render(scene, flags=flags)
        return np.ascontiguousarray(rgb_HW3), np.asarray(depth_HW, dtype=np.float32)

    def close(self) -> None:
        self._renderer.delete()

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

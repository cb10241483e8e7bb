"""Meshes drawn over the frames, headless (pyrender through raymotion.synth.render: OSMesa on CPUs, EGL where a
GPU is present), and the MP4 writer for videos.

Legend: M people in a frame, V vertices, F faces, H, W image height and width. Vertices are in the full-image
camera frame (OpenCV, metres: ``predict.outputs``), drawn by the same pinhole camera the 2D joints use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Colours of tracks (RGB in [0, 1]), cycled by track id: distinguishable on video and for colour-blind viewers
# (Okabe-Ito).
TRACK_COLOURS = ((0.90, 0.62, 0.00), (0.34, 0.71, 0.91), (0.00, 0.62, 0.45), (0.94, 0.89, 0.26),
                 (0.00, 0.45, 0.70), (0.84, 0.37, 0.00), (0.80, 0.47, 0.65))
MESH_OPACITY = 0.8
"""How much of a pixel the mesh covers in the overlay (the rest is the frame)."""
SIDE_VIEW_DEG = 90.0
"""The side view turns the frame's meshes by this much about the camera's vertical axis, around their centre."""


def _rotation_about_y(degrees: float) -> np.ndarray:
    theta = np.radians(degrees)
    return np.array([[np.cos(theta), 0.0, np.sin(theta)], [0.0, 1.0, 0.0], [-np.sin(theta), 0.0, np.cos(theta)]])


class OverlayRenderer:
    """Draws the people of a frame over it (and, with ``side_view``, beside it). One offscreen context, rebuilt
    when the image size changes (folders of images of mixed sizes)."""

    def __init__(self, faces_F3: np.ndarray, *, side_view: bool) -> None:
        self.faces_F3 = np.asarray(faces_F3, dtype=np.int64)
        self.side_view = side_view
        self._renderer = None

    def _render(self, verts_MV3: np.ndarray, tracks_M: np.ndarray, *, focal_length: float, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
        from raymotion.synth.render import Intrinsics, MeshRenderer

        if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
            self.close()
            self._renderer = MeshRenderer(width=width, height=height)
        num_verts = verts_MV3.shape[1]
        faces = np.concatenate([self.faces_F3 + m * num_verts for m in range(len(verts_MV3))])
        colours = np.repeat(np.array([TRACK_COLOURS[int(t) % len(TRACK_COLOURS)] for t in tracks_M]), num_verts, axis=0)
        intrinsics = Intrinsics(fx=focal_length, fy=focal_length, cx=width / 2.0, cy=height / 2.0, width=width,
                                height=height)
        return self._renderer.render(verts_MV3.reshape(-1, 3), faces, intrinsics=intrinsics, vertex_colors_V3=colours)

    def draw(self, image_HW3: np.ndarray, verts_MV3: np.ndarray, tracks_M: np.ndarray, *,
             focal_length: float) -> np.ndarray:
        """The frame with its M meshes over it, (H, W, 3) uint8 RGB; (H, 2W, 3) with the side view on the right
        (white where no mesh). A frame without people comes back unchanged (and a white side panel)."""
        height, width = image_HW3.shape[:2]
        out = image_HW3.copy()
        side = np.full_like(image_HW3, 255)
        if len(verts_MV3):
            rgb_HW3, depth_HW = self._render(verts_MV3, tracks_M, focal_length=focal_length, width=width, height=height)
            mask_HW1 = (depth_HW > 0)[..., None]
            blend_HW3 = MESH_OPACITY * rgb_HW3.astype(np.float32) + (1.0 - MESH_OPACITY) * image_HW3.astype(np.float32)
            out = np.where(mask_HW1, blend_HW3, image_HW3.astype(np.float32)).round().astype(np.uint8)
            if self.side_view:
                centre_3 = verts_MV3.reshape(-1, 3).mean(axis=0)
                turned_MV3 = (verts_MV3 - centre_3) @ _rotation_about_y(SIDE_VIEW_DEG).T + centre_3
                side, _ = self._render(turned_MV3, tracks_M, focal_length=focal_length, width=width, height=height)
        return np.concatenate([out, side], axis=1) if self.side_view else out

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class VideoWriter:
    """H.264 MP4 (yuv420p, so odd widths and heights are padded by one black pixel), frame by frame."""

    def __init__(self, path: Path, *, fps: float) -> None:
        import av

        self.path = path
        self.fps = fps
        self._container = av.open(str(path), "w")
        self._stream = None
        self.frames = 0

    def write(self, image_HW3: np.ndarray) -> None:
        import av

        height, width = image_HW3.shape[:2]
        if self._stream is None:
            from fractions import Fraction

            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = width + width % 2, height + height % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "20"}
        padded = np.zeros((self._stream.height, self._stream.width, 3), np.uint8)
        padded[:height, :width] = image_HW3
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

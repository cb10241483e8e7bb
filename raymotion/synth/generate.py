"""`raymotion synth`: render the benchmark's clips (in parallel processes) and write the manifest.

Legend: T frames, V vertices, F faces, J = 24 SMPL joints, E = 14 evaluation joints, K betas,
S image size, s supersampling factor.

Per clip: the subject's body (betas, texture fixed to the skin) performs a procedural motion in front of
a panning camera and a textured background. Frames are rendered with pyrender at S*s px (flat vertex
colours: no shading, so brightness constancy holds and the texture moves exactly with the surface),
composited over the background and averaged down to S px. Ground-truth flow comes from the torch
rasteriser at S px: each body pixel's surface point (face id + perspective-correct barycentrics) is
reprojected with the other frame's vertices.
"""

from __future__ import annotations

import dataclasses

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

from raymotion.body.body_model import load_body_model
from raymotion.body.joints import NUM_SMPL_JOINTS, SMPL_PARENTS
from raymotion.config import Config
from raymotion.data.frames import select_clips
from raymotion.data.manifest import MANIFEST, UNRENDERED
from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle
from raymotion.geometry.rasterize import Raster, rasterize, surface_flow
from raymotion.synth.motions import motion_clip, sample_motion_params
from raymotion.synth.scene import (
    NOMINAL_BODY_HEIGHT_M,
    CameraTrack,
    ClipPlan,
    body_heading,
    camera_track,
    plan_clips,
    subject_betas,
    subject_rng,
)
from raymotion.synth.textures import background_image, body_vertex_colors
from raymotion.synth.writer import (VIDEO_SUFFIX, ClipDir, atomic_write_table, atomic_write_text, write_table,
                                    write_video)



@dataclass(frozen=True, slots=True)
class RenderedClip:
    """A clip's pixels and labels before writing."""

    frames_THW3: np.ndarray
    labels: dict[str, np.ndarray]
    flow_fwd_THW2: np.ndarray | None
    flow_bwd_THW2: np.ndarray | None


class ClipRenderer:
    """Holds what every clip needs (body model, offscreen context); build one per process."""

    def __init__(self, cfg: Config) -> None:
        from raymotion.synth.render import MeshRenderer

        self.cfg = cfg
        self.synth = cfg.synth
        self.body = load_body_model(dataclasses.replace(cfg.body, model=cfg.synth.body_model))
        self.faces_F3 = self.body.faces_F3
        # Each vertex's dominant skinning part, for garment regions of the texture.
        self.part_V = self.body.layer.lbs_weights.argmax(dim=1).numpy()
        # A joint is visible when the surface seen at its pixel belongs to the joint's own skinning part,
        # its parent's or a child's (its own flesh); any other part in front of it occludes it.
        self.face_part_F = torch.as_tensor(self.part_V)[self.faces_F3[:, 0]]
        near_JJ = torch.eye(NUM_SMPL_JOINTS, dtype=torch.bool)
        for child, parent in enumerate(SMPL_PARENTS):
            if parent >= 0:
                near_JJ[child, parent] = near_JJ[parent, child] = True
        self.own_parts_JJ = near_JJ
        size = self.synth.image_size * self.synth.supersample
        self.renderer = MeshRenderer(width=size, height=size)
        self._textures: dict[int, np.ndarray] = {}  # subjects recur across clips: texture each once

    def _texture(self, subject: int, betas_K: np.ndarray) -> np.ndarray:
        if subject not in self._textures:
            self._textures[subject] = self._make_texture(subject, betas_K)
        return self._textures[subject]

    def _make_texture(self, subject: int, betas_K: np.ndarray) -> np.ndarray:
        rest = self.body(
            rotmats_BJ33=torch.eye(3).expand(1, NUM_SMPL_JOINTS, 3, 3),
            betas_BK=torch.as_tensor(betas_K)[None],
        )
        rng = subject_rng(subject, seed=self.synth.seed)
        metres_per_px = NOMINAL_BODY_HEIGHT_M / (self.synth.body_fill * self.synth.image_size)
        return body_vertex_colors(
            rest.verts_BV3[0].numpy(),
            self.part_V,
            rng,
            metres_per_px=metres_per_px,
            contrast=self.synth.texture_contrast,
        )

    def render(self, plan: ClipPlan) -> RenderedClip:
        synth = self.synth
        rng = np.random.default_rng(plan.seed)
        params = sample_motion_params(plan.motion, rng)
        total = (plan.num_frames - 1) * plan.frame_stride + 1
        motion = motion_clip(plan.motion, params, num_frames=total, fps=synth.fps)
        pose_T243 = motion.pose_T243[:: plan.frame_stride].astype(np.float32)
        root_T3 = motion.root_transl_T3[:: plan.frame_stride].astype(np.float64)
        num_frames = pose_T243.shape[0]
        betas_K = subject_betas(plan.subject, seed=synth.seed, num_betas=self.body.num_betas)
        heading = body_heading(axis_angle_to_rotmat(torch.as_tensor(pose_T243[0, 0])).numpy().astype(np.float64))
        camera = camera_track(synth, root_T3, rng, heading_rad=heading)

        with torch.no_grad():
            out = self.body(
                rotmats_BJ33=axis_angle_to_rotmat(torch.as_tensor(pose_T243)),
                betas_BK=torch.as_tensor(betas_K).expand(num_frames, -1),
                transl_B3=torch.as_tensor(root_T3, dtype=torch.float32),
            )
        rot_T33 = torch.as_tensor(camera.rotation_T33, dtype=torch.float32)
        tr_T3 = torch.as_tensor(camera.transl_T3, dtype=torch.float32)

        def to_cam(points_TN3: torch.Tensor) -> torch.Tensor:
            return torch.einsum("tij,tnj->tni", rot_T33, points_TN3) + tr_T3[:, None]

        verts_cam_TV3 = to_cam(out.verts_BV3)
        joints_cam_TJ3 = to_cam(out.joints_BJ3)
        eval_cam_TE3 = to_cam(out.eval_joints_B143)
        focal, centre = camera.focal_px, camera.principal_px

        def project(points_TN3: torch.Tensor) -> torch.Tensor:
            return focal * points_TN3[..., :2] / points_TN3[..., 2:3] + centre

        verts_pix_TV3 = torch.cat([project(verts_cam_TV3), verts_cam_TV3[..., 2:3]], dim=-1)
        raster = rasterize(verts_pix_TV3, self.faces_F3, height=synth.image_size, width=synth.image_size)

        frames_THW3 = self._render_frames(verts_cam_TV3.numpy(), camera, plan, betas_K)
        labels = self._labels(
            plan, pose_T243, betas_K, camera, joints_cam_TJ3, eval_cam_TE3, verts_pix_TV3, raster.face_id_BHW, project
        )
        flow_fwd = flow_bwd = None
        if _has_flow(plan, synth):
            kwargs = dict(fx=focal, fy=focal, cx=centre, cy=centre)
            first = Raster(raster.face_id_BHW[:-1], raster.bary_BHW3[:-1], raster.depth_BHW[:-1])
            second = Raster(raster.face_id_BHW[1:], raster.bary_BHW3[1:], raster.depth_BHW[1:])
            fwd, fwd_valid = surface_flow(first, self.faces_F3, verts_cam_TV3[1:], **kwargs)
            bwd, bwd_valid = surface_flow(second, self.faces_F3, verts_cam_TV3[:-1], **kwargs)
            flow_fwd = torch.where(fwd_valid[..., None], fwd, torch.nan).numpy().astype(np.float16)
            flow_bwd = torch.where(bwd_valid[..., None], bwd, torch.nan).numpy().astype(np.float16)
        return RenderedClip(frames_THW3, labels, flow_fwd, flow_bwd)

    def _render_frames(self, verts_cam_TV3: np.ndarray, camera: CameraTrack, plan: ClipPlan, betas_K: np.ndarray) -> np.ndarray:
        """(T, S, S, 3) uint8 frames: the textured body over the panning background, supersampled."""
        from raymotion.synth.render import Intrinsics

        synth = self.synth
        scale = synth.supersample
        size = synth.image_size
        big = size * scale
        colours_V3 = self._texture(plan.subject, betas_K)
        # One background per clip, large enough for its pan; each frame is a sub-pixel shifted window.
        shift_T2 = camera.background_shift_T2 * scale
        margin = int(np.ceil(np.abs(shift_T2).max())) + 2
        rng = np.random.default_rng([plan.seed, 7])
        background = background_image(big + 2 * margin, big + 2 * margin, rng, scale=scale)
        intrinsics = Intrinsics(
            fx=camera.focal_px * scale, fy=camera.focal_px * scale, cx=big / 2, cy=big / 2, width=big, height=big
        )
        faces_F3 = self.faces_F3.numpy()
        frames = []
        for t, verts_V3 in enumerate(verts_cam_TV3):
            rgb_HW3, depth_HW = self.renderer.render(
                verts_V3, faces_F3, intrinsics=intrinsics, vertex_colors_V3=colours_V3, lit=False
            )
            warp = np.float32([[1, 0, shift_T2[t, 0] - margin], [0, 1, shift_T2[t, 1] - margin]])
            bg_HW3 = cv2.warpAffine(background, warp, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            mask_HW1 = (depth_HW > 0)[..., None]
            composite = np.where(mask_HW1, rgb_HW3.astype(np.float32) / 255.0, bg_HW3)
            small = cv2.resize(composite, (size, size), interpolation=cv2.INTER_AREA) if scale > 1 else composite
            frames.append(np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return np.stack(frames)

    def _labels(self, plan, pose_T243, betas_K, camera, joints_cam_TJ3, eval_cam_TE3, verts_pix_TV3, face_id_THW, project):
        num_frames = pose_T243.shape[0]
        size = self.synth.image_size
        # The pose in the camera frame: the root orientation composed with the camera rotation. The
        # translation that places that posed body in the camera frame is the exact per-frame offset.
        rot_T33 = torch.as_tensor(camera.rotation_T33, dtype=torch.float32)
        rotmats_TJ33 = axis_angle_to_rotmat(torch.as_tensor(pose_T243))
        rotmats_TJ33[:, 0] = rot_T33 @ rotmats_TJ33[:, 0]
        with torch.no_grad():
            canonical = self.body(rotmats_BJ33=rotmats_TJ33, betas_BK=torch.as_tensor(betas_K).expand(num_frames, -1))
        transl_cam_T3 = (joints_cam_TJ3[:, 0] - canonical.joints_BJ3[:, 0]).numpy()
        joints2d_TJ2 = project(joints_cam_TJ3)
        eval2d_TE2 = project(eval_cam_TE3)
        pix_TJ = joints2d_TJ2.floor().long()
        inside_TJ = ((pix_TJ >= 0) & (pix_TJ < size)).all(dim=-1)
        xs, ys = pix_TJ[..., 0].clamp(0, size - 1), pix_TJ[..., 1].clamp(0, size - 1)
        face_TJ = face_id_THW[torch.arange(num_frames)[:, None], ys, xs]
        part_TJ = self.face_part_F[face_TJ.clamp(min=0)]
        own_TJ = self.own_parts_JJ[torch.arange(NUM_SMPL_JOINTS), part_TJ]
        # No surface at the pixel (a joint between the fingers, say) also counts as visible.
        visible_TJ = inside_TJ & ((face_TJ < 0) | own_TJ)
        lo_T2 = verts_pix_TV3[..., :2].amin(dim=1)
        hi_T2 = verts_pix_TV3[..., :2].amax(dim=1)
        return {
            "clip_id": np.array([plan.clip_id] * num_frames),
            "frame": np.arange(num_frames, dtype=np.int32),
            "pose": pose_T243.reshape(num_frames, -1),
            "pose_cam": rotmat_to_axis_angle(rotmats_TJ33).numpy().reshape(num_frames, -1),
            "transl_cam": transl_cam_T3,
            "betas": np.broadcast_to(betas_K, (num_frames, betas_K.shape[0])),
            "intrinsics": np.broadcast_to(
                np.array([camera.focal_px, camera.focal_px, camera.principal_px, camera.principal_px]), (num_frames, 4)
            ),
            "cam_rotation": camera.rotation_T33.reshape(num_frames, 9),
            "cam_translation": camera.transl_T3,
            "box_xyxy": torch.cat([lo_T2, hi_T2], dim=-1).numpy(),
            "joints2d": joints2d_TJ2.numpy().reshape(num_frames, -1),
            "joints2d_visible": visible_TJ.numpy(),
            "joints3d_cam": joints_cam_TJ3.numpy().reshape(num_frames, -1),
            "eval_joints2d": eval2d_TE2.numpy().reshape(num_frames, -1),
            "eval_joints3d_cam": eval_cam_TE3.numpy().reshape(num_frames, -1),
        }

    def write(self, plan: ClipPlan, out_dir: Path) -> dict[str, object]:
        """Render ``plan`` and write its folder atomically; returns its manifest row."""
        clip = self.render(plan)
        video_name = "video" + VIDEO_SUFFIX[self.synth.codec]
        with ClipDir(out_dir / plan.split / plan.clip_id) as tmp:
            write_video(tmp / video_name, clip.frames_THW3, fps=self.synth.fps // plan.frame_stride or 1,
                        codec=self.synth.codec, crf=self.synth.crf)
            write_table(tmp / "labels.parquet", clip.labels)
            if clip.flow_fwd_THW2 is not None:
                np.savez_compressed(tmp / "flow.npz", forward=clip.flow_fwd_THW2, backward=clip.flow_bwd_THW2)
        return manifest_row(plan, self.synth, video_name, has_flow=clip.flow_fwd_THW2 is not None)

    def close(self) -> None:
        self.renderer.close()


def _has_flow(plan: ClipPlan, synth) -> bool:
    """Whether a clip stores the renderer's ground-truth flow: video, val and test clips, with synth.save_flow."""
    return synth.save_flow and plan.split != "labelled"


def manifest_row(plan: ClipPlan, synth, video_name: str, *, has_flow: bool) -> dict[str, object]:
    clip_dir = f"{plan.split}/{plan.clip_id}"
    return {
        "clip_id": plan.clip_id,
        "path": f"{clip_dir}/{video_name}",
        "labels_path": f"{clip_dir}/labels.parquet",
        "flow_path": f"{clip_dir}/flow.npz" if has_flow else "",
        "frames": plan.num_frames,
        "fps": synth.fps / plan.frame_stride,
        "width": synth.image_size,
        "height": synth.image_size,
        "subject": plan.subject,
        "motion": plan.motion,
        "split": plan.split,
    }


_WORKER: ClipRenderer | None = None


def _init_worker(cfg_dict: dict) -> None:
    global _WORKER
    # One thread per worker process (torch and Mesa's llvmpipe rasteriser): the processes are the
    # parallelism, and oversubscribed cores run slower than one thread each.
    os.environ.setdefault("LP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    _WORKER = ClipRenderer(Config.from_dict(cfg_dict))


def _render_in_worker(plan: ClipPlan, out_dir: str) -> dict[str, object]:
    assert _WORKER is not None
    return _WORKER.write(plan, Path(out_dir))


def run_clips(plans: list[ClipPlan], *, fraction: float, fraction_seed: int) -> set[str]:
    """The ids of the clips a run at annotation fraction ``fraction`` reads: every video, val and test clip, and
    the labelled clips of its subset (``frames.select_clips`` over the labelled split in plan order, which is
    the manifest's order; ``train.fraction``, ``train.fraction_seed``)."""
    labelled = [p.clip_id for p in plans if p.split == "labelled"]
    chosen = select_clips(len(labelled), fraction=fraction, seed=fraction_seed) if labelled else []
    return {p.clip_id for p in plans if p.split != "labelled"} | {labelled[int(i)] for i in chosen}


def generate(cfg: Config, *, progress: bool = True, only: set[str] | None = None) -> Path:
    """Render every missing clip of ``cfg.synth`` (with ``only``: the missing ones among those ids, e.g.
    ``run_clips``) and (re)write the manifest. Returns its path.

    Clips already on disk are skipped (a rerun resumes); each clip folder appears atomically. The manifest
    always lists every planned clip; the ids of those not on disk are written to ``UNRENDERED`` (removed once
    all are there), and the readers of the labelled split refuse a chosen clip that is not rendered.
    """
    from tqdm import tqdm

    from raymotion.config import to_dict

    synth = cfg.synth
    out_dir = Path(synth.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_clips(synth)
    video_name = "video" + VIDEO_SUFFIX[synth.codec]
    on_disk = {p.clip_id for p in plans if (out_dir / p.split / p.clip_id / video_name).is_file()}
    todo = [p for p in plans if p.clip_id not in on_disk and (only is None or p.clip_id in only)]
    rows: dict[str, dict[str, object]] = {}  # the rendered clips' manifest rows
    for plan in plans:
        if plan.clip_id in on_disk:
            flow_file = out_dir / plan.split / plan.clip_id / "flow.npz"
            rows[plan.clip_id] = manifest_row(plan, synth, video_name, has_flow=flow_file.is_file())
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"synth {out_dir}", unit="clip", disable=not progress)
    if todo and (synth.num_workers == 1 or len(todo) == 1):
        renderer = ClipRenderer(cfg)
        for plan in todo:
            rows[plan.clip_id] = renderer.write(plan, out_dir)
            bar.update()
        renderer.close()
    elif todo:
        ctx = torch.multiprocessing.get_context("spawn")  # never fork a process holding a GL context
        with ProcessPoolExecutor(synth.num_workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(to_dict(cfg),)) as pool:
            futures = [pool.submit(_render_in_worker, plan, str(out_dir)) for plan in todo]
            for future in as_completed(futures):
                row = future.result()
                rows[str(row["clip_id"])] = row
                bar.update()
    bar.close()
    unrendered = [p.clip_id for p in plans if p.clip_id not in rows]
    for plan in plans:  # planned, not rendered: listed (the fraction subsets stay the same), named in UNRENDERED
        rows.setdefault(plan.clip_id, manifest_row(plan, synth, video_name, has_flow=_has_flow(plan, synth)))
    table = pa.Table.from_pylist([rows[p.clip_id] for p in plans])
    if unrendered:
        atomic_write_text(out_dir / UNRENDERED, "".join(f"{clip_id}\n" for clip_id in unrendered))
    else:
        (out_dir / UNRENDERED).unlink(missing_ok=True)
    atomic_write_table(out_dir / MANIFEST, table)
    elapsed = time.perf_counter() - start
    if todo and progress:
        frames = sum(p.num_frames for p in todo)
        print(f"rendered {len(todo)} clips, {frames} frames in {elapsed:.1f} s ({frames / elapsed:.1f} frames/s)")
    if unrendered and progress:
        print(f"{len(unrendered)} planned clips not rendered (listed in {out_dir / UNRENDERED}): `raymotion synth "
              f"--set synth.out_dir={out_dir}` renders them")
    return out_dir / MANIFEST

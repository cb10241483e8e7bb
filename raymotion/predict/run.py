"""``raymotion predict``: a checkpoint run on an image, a folder of images, a video or an imported clip.

Two passes over the input, so that memory stays bounded by a batch of crops and the exported parameters can be
smoothed before anything is drawn: (1) stream the frames, crop every person box (or the whole frame), run the
model in batches and keep only its parameters; then smooth (optional), pose the bodies in the full-image camera
and write predictions.npz (and .obj files); (2) stream the frames again and draw the meshes over them
(overlay.mp4 or overlay/<image>.png). ``summary.json`` is written last: its presence marks a finished output
folder (jobs/predict.py skips those on a rerun).

The model is built from the checkpoint's own config (backbone, body model, crop size, box margin); a
``--config``/``--set`` value that disagrees with it on one of those keys is refused by name.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raymotion.body.body_model import BodyModel, load_body_model
from raymotion.config import Config, ConfigError, flatten, to_dict
from raymotion.data.boxes import TrackBoxes, read_boxes
from raymotion.data.crops import box_problems, crop_box, crop_image, normalise_image
from raymotion.data.manifest import warn_skipped
from raymotion.geometry import rotmat_to_axis_angle
from raymotion.models.regressor import MeanParams, build_regressor
from raymotion.predict import outputs
from raymotion.predict.sources import InputSource, open_input
from raymotion.train.checkpoint import MODEL_KEYS, checkpoint_config

CHECKPOINT_KEYS = (*MODEL_KEYS, "data.bbox_scale")
"""Keys predict takes from the checkpoint: the network, its input (crop size and box margin) and its body model."""
PREDICTIONS = "predictions.npz"
SUMMARY = "summary.json"
WHOLE_FRAME_TRACK = 0
"""Track id of the whole-frame 'box' used when there are no boxes."""


def predict_config(checkpoint: str, *, config_path: str | None = None,
                   overrides: Sequence[str] | dict[str, Any] = ()) -> tuple[Config, dict[str, Any]]:
    """The config predict runs with: the checkpoint's own, then ``config_path`` and ``overrides`` (--set items)
    (``train.checkpoint.checkpoint_config``).

    Raises:
        ConfigError: an override changes one of ``CHECKPOINT_KEYS`` (the model would not be the checkpoint's),
            or the checkpoint is a FiLM model; the message names the key, both values and the fix.
    """
    cfg, state = checkpoint_config(checkpoint, config_path=config_path, overrides=overrides, keys=CHECKPOINT_KEYS)
    if cfg.model.film:
        raise ConfigError("model.film", True, f"the checkpoint {checkpoint} is a FiLM model, which needs each "
                          "track's previous predictions as context; predict runs single-frame models only "
                          "(evaluate FiLM models with `raymotion evaluate`)")
    return cfg, state


def _device(cfg: Config) -> torch.device:
    if cfg.run.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.run.device)


class Predictor:
    """A checkpoint's regressor and body model, ready for crops (built once: jobs/predict.py's actors hold one)."""

    def __init__(self, cfg: Config, state: dict[str, Any], *, checkpoint: str) -> None:
        self.cfg = cfg
        self.checkpoint = checkpoint
        self.device = _device(cfg)
        # The start point and every backbone weight are in the state dict: no mean-parameter or weights file is read.
        self.model = build_regressor(backbone=cfg.model.backbone, num_betas=cfg.body.num_betas,
                                     mean_params=MeanParams.default(num_betas=cfg.body.num_betas),
                                     iterations=cfg.model.iterations, film=False)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:  # weights of another network than the stored config describes
            detail = " ".join(str(err).split())[:300]
            raise ValueError(f"the checkpoint {checkpoint}'s weights do not fit the model its own config describes "
                             f"(model.backbone={cfg.model.backbone}, body.num_betas={cfg.body.num_betas}, "
                             f"model.iterations={cfg.model.iterations}): {detail}; the file is not a raymotion run's "
                             "checkpoint, or was edited") from None
        self.model.to(self.device).eval()
        self.body: BodyModel = load_body_model(cfg.body)

    @classmethod
    def from_checkpoint(cls, checkpoint: str, *, config_path: str | None = None,
                        overrides: Sequence[str] | dict[str, Any] = ()) -> Predictor:
        cfg, state = predict_config(checkpoint, config_path=config_path, overrides=overrides)
        return cls(cfg, state, checkpoint=checkpoint)

    @torch.no_grad()
    def regress(self, crops_BSS3: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Model parameters for uint8 RGB crops: rotmats (B, 24, 3, 3), betas (B, K), cam (B, 3), on the CPU."""
        images_B3SS = torch.stack([normalise_image(crop) for crop in crops_BSS3]).to(self.device)
        params = self.model(images_B3SS)
        return {"rotmats": params.rotmats_BJ33.float().cpu(), "betas": params.betas_BK.float().cpu(),
                "cam": params.cam_B3.float().cpu()}


@dataclass(slots=True)
class PredictSummary:
    """What one predict run read, left out and wrote (printed, and saved as summary.json)."""

    input: str
    kind: str
    frames: int = 0
    frames_with_people: int = 0
    people: int = 0
    tracks: int = 0
    boxes_source: str = "whole frame"
    boxes_below_min_score: int = 0
    boxes_bad: list[str] = field(default_factory=list)
    boxes_past_the_end: int = 0
    skipped: list[str] = field(default_factory=list)
    smoothing: str = "none"
    predict_s: float = 0.0
    overlay_s: float = 0.0
    outputs: list[str] = field(default_factory=list)

    def format(self) -> str:
        rate = self.frames / self.predict_s if self.predict_s > 0 else float("nan")
        lines = [f"{self.input} ({self.kind}): {self.frames} frames, {self.people} people in {self.frames_with_people} "
                 f"frames, {self.tracks} tracks; boxes: {self.boxes_source}",
                 f"  model: {self.predict_s:.1f} s ({rate:.1f} frames/s)"
                 + (f", overlay: {self.overlay_s:.1f} s" if self.overlay_s else "")
                 + (f", smoothing: {self.smoothing}" if self.smoothing != "none" else "")]
        left_out = [f"{self.boxes_below_min_score} boxes below predict.min_score"] if self.boxes_below_min_score else []
        left_out += [f"{len(self.boxes_bad)} bad boxes (first: {self.boxes_bad[0]})"] if self.boxes_bad else []
        left_out += ([f"{self.boxes_past_the_end} boxes of frames the input does not have"]
                     if self.boxes_past_the_end else [])
        left_out += [f"{len(self.skipped)} unreadable inputs (first: {self.skipped[0]})"] if self.skipped else []
        if left_out:
            lines.append("  left out: " + "; ".join(left_out))
        lines += [f"  wrote {path}" for path in self.outputs]
        return "\n".join(lines)


def _crop_for(box_4: np.ndarray | None, *, width: int, height: int, bbox_scale: float) -> tuple[np.ndarray, float]:
    """(centre (2,), side) of the square crop: around a box as in training (``crops.crop_box``), or the whole
    frame (centred, side = the longer image side) when there is no box."""
    if box_4 is None:
        return np.array([width / 2.0, height / 2.0]), float(max(width, height))
    center_2, side = crop_box(box_4, scale=bbox_scale)
    return center_2, float(side)


def _frame_boxes(boxes: TrackBoxes | None, frame: int, *, width: int, height: int, cfg: Config,
                 summary: PredictSummary) -> list[tuple[int, np.ndarray | None, float]]:
    """(track, box or None for the whole frame, score) of the people to predict in one frame."""
    if boxes is None:
        return [(WHOLE_FRAME_TRACK, None, 1.0)]
    people = []
    tracks_M, box_M4, score_M = boxes.in_frame(frame)
    problems = box_problems(box_M4, width=width, height=height)
    for m, (track, box_4, score) in enumerate(zip(tracks_M, box_M4, score_M)):
        if score < cfg.predict.min_score:
            summary.boxes_below_min_score += 1
        elif m in problems:
            problem = f"{boxes.source} frame {frame}, track {int(track)}: {problems[m]}"
            if cfg.data.bad_input == "fail":
                raise ValueError(f"{problem}; fix the boxes file, or set data.bad_input=skip to leave such boxes "
                                 "out (counted)")
            summary.boxes_bad.append(problem)
        else:
            people.append((int(track), box_4, float(score)))
    return people


def _regress_input(predictor: Predictor, source: InputSource, boxes: TrackBoxes | None, *, summary: PredictSummary,
                   progress: bool) -> dict[str, np.ndarray]:
    """Pass 1: every person crop through the model, in batches. Returns per-row arrays (model parameters and
    where each crop came from)."""
    from tqdm import tqdm

    cfg = predictor.cfg
    rows: dict[str, list] = defaultdict(list)
    params: dict[str, list[torch.Tensor]] = defaultdict(list)
    crops: list[np.ndarray] = []

    def flush() -> None:
        if crops:
            for name, value in predictor.regress(crops).items():
                params[name].append(value)
            crops.clear()

    bar = tqdm(total=source.num_frames, desc=f"predict {source.path.name}", unit="frame", disable=not progress)
    last_frame = -1
    for frame in source.frames(bad_input=cfg.data.bad_input, skipped=summary.skipped):
        height, width = frame.image_HW3.shape[:2]
        people = _frame_boxes(boxes, frame.index, width=width, height=height, cfg=cfg, summary=summary)
        for track, box_4, score in people:
            center_2, side = _crop_for(box_4, width=width, height=height, bbox_scale=cfg.data.bbox_scale)
            crops.append(crop_image(frame.image_HW3, center_2=center_2, side=side, size=cfg.data.crop_size))
            rows["frame"].append(frame.index)
            rows["track"].append(track)
            rows["image"].append(frame.name)
            rows["image_size"].append((width, height))
            rows["box_xyxy"].append(box_4 if box_4 is not None else np.array([0.0, 0.0, width, height]))
            rows["box_score"].append(score)
            rows["crop_center"].append(center_2)
            rows["crop_side"].append(side)
            if len(crops) >= cfg.predict.batch_size:
                flush()
        summary.frames += 1
        summary.frames_with_people += bool(people)
        last_frame = frame.index
        bar.update(1)
    flush()
    bar.close()
    if boxes is not None:
        summary.boxes_past_the_end = int((boxes.frame_N > last_frame).sum())
    if not rows:
        return {}
    arrays = {name: np.asarray(values) for name, values in rows.items()}
    arrays.update({name: torch.cat(values).numpy() for name, values in params.items()})
    return arrays


def _export(predictor: Predictor, rows: dict[str, np.ndarray], *, smooth: bool) -> dict[str, np.ndarray]:
    """Full-image camera, optional smoothing, and the posed bodies: the arrays of predictions.npz."""
    cfg = predictor.cfg
    image_size_N2 = torch.as_tensor(rows["image_size"], dtype=torch.float32)
    focal_N = torch.as_tensor([cfg.predict.focal_length or outputs.default_focal_length(w, h)
                               for w, h in rows["image_size"].tolist()], dtype=torch.float32)
    rotmats_NJ33, betas_NK, cam_N3 = (torch.as_tensor(rows[k]) for k in ("rotmats", "betas", "cam"))
    transl_N3 = outputs.full_image_translation(
        cam_N3, crop_center_N2=torch.as_tensor(rows["crop_center"], dtype=torch.float32),
        crop_side_N=torch.as_tensor(rows["crop_side"], dtype=torch.float32), image_size_N2=image_size_N2,
        focal_length_N=focal_N)
    if smooth:
        rotmats_NJ33, betas_NK, transl_N3 = outputs.smooth_tracks(
            rows["frame"], rows["track"], rotmats_NJ33=rotmats_NJ33, betas_NK=betas_NK, transl_N3=transl_N3,
            sigma=cfg.predict.smoothing_sigma)
    posed: dict[str, list[torch.Tensor]] = defaultdict(list)
    step = cfg.predict.batch_size
    with torch.no_grad():
        for start in range(0, len(focal_N), step):
            part = slice(start, start + step)
            for name, value in outputs.posed_in_camera(
                    predictor.body, rotmats_NJ33=rotmats_NJ33[part], betas_NK=betas_NK[part], transl_N3=transl_N3[part],
                    image_size_N2=image_size_N2[part], focal_length_N=focal_N[part],
                    with_verts=cfg.predict.save_vertices).items():
                posed[name].append(value)
    num_rows = len(focal_N)
    arrays = {
        "frame": rows["frame"].astype(np.int64), "track": rows["track"].astype(np.int64), "image": rows["image"],
        "image_size": rows["image_size"].astype(np.int64), "box_xyxy": rows["box_xyxy"].astype(np.float32),
        "box_score": rows["box_score"].astype(np.float32), "crop_center": rows["crop_center"].astype(np.float32),
        "crop_side": rows["crop_side"].astype(np.float32),
        "pose": rotmat_to_axis_angle(rotmats_NJ33).reshape(num_rows, -1).numpy(),
        "rotmats": rotmats_NJ33.numpy(), "betas": betas_NK.numpy(), "cam_crop": cam_N3.numpy(),
        "focal_length": focal_N.numpy(), "transl_cam": transl_N3.numpy(),
    }
    arrays.update({name: torch.cat(values).numpy() for name, values in posed.items()})
    if cfg.predict.save_vertices:
        arrays["faces"] = predictor.body.faces_F3.numpy()
    return {name: value.astype(np.float32) if value.dtype == np.float64 else value for name, value in arrays.items()}


def _empty_arrays(num_betas: int) -> dict[str, np.ndarray]:
    """predictions.npz's arrays with no rows (an input where nobody was to be predicted)."""
    shapes = {"frame": (0,), "track": (0,), "image_size": (0, 2), "box_xyxy": (0, 4), "box_score": (0,),
              "crop_center": (0, 2), "crop_side": (0,), "pose": (0, 72), "rotmats": (0, 24, 3, 3),
              "betas": (0, num_betas), "cam_crop": (0, 3), "focal_length": (0,), "transl_cam": (0, 3),
              "joints3d_cam": (0, 24, 3), "eval_joints3d_cam": (0, 14, 3), "joints2d": (0, 24, 2),
              "eval_joints2d": (0, 14, 2)}
    arrays = {name: np.zeros(shape, np.int64 if name in ("frame", "track", "image_size") else np.float32)
              for name, shape in shapes.items()}
    arrays["image"] = np.zeros(0, dtype="<U1")
    return arrays


def _write_obj_files(out_dir: Path, arrays: dict[str, np.ndarray], predictor: Predictor) -> Path:
    folder = out_dir / "obj"
    folder.mkdir(parents=True, exist_ok=True)
    faces_F3 = predictor.body.faces_F3.numpy()
    with torch.no_grad():
        for n in range(len(arrays["frame"])):
            verts_V3 = _verts_of(predictor, arrays, np.array([n]))[0]
            outputs.write_obj(folder / f"frame_{arrays['frame'][n]:06d}_track_{arrays['track'][n]}.obj", verts_V3, faces_F3)
    return folder


def _verts_of(predictor: Predictor, arrays: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(M, V, 3) camera-frame vertices of some rows of predictions.npz."""
    if "verts_cam" in arrays:
        return arrays["verts_cam"][rows]
    out = predictor.body(rotmats_BJ33=torch.as_tensor(arrays["rotmats"][rows]),
                         betas_BK=torch.as_tensor(arrays["betas"][rows]))
    return (out.verts_BV3 + torch.as_tensor(arrays["transl_cam"][rows])[:, None]).numpy()


def _draw_overlay(predictor: Predictor, source: InputSource, arrays: dict[str, np.ndarray], out_dir: Path, *,
                  progress: bool) -> Path:
    """Pass 2: the meshes over every frame (frames without people unchanged), as overlay.mp4 or PNGs."""
    import cv2
    from tqdm import tqdm

    from raymotion.predict.overlay import OverlayRenderer, VideoWriter

    cfg = predictor.cfg
    rows_of: dict[int, list[int]] = defaultdict(list)
    for n, frame in enumerate(arrays["frame"].tolist()):
        rows_of[frame].append(n)
    renderer = OverlayRenderer(predictor.body.faces_F3.numpy(), side_view=cfg.predict.side_view)
    target = out_dir / "overlay.mp4" if source.is_video else out_dir / "overlay"
    writer = VideoWriter(target, fps=source.fps) if source.is_video else None
    if writer is None:
        target.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=source.num_frames, desc=f"overlay {source.path.name}", unit="frame", disable=not progress)
    try:
        with torch.no_grad():
            for frame in source.frames(bad_input=cfg.data.bad_input, skipped=[]):
                rows = np.asarray(rows_of.get(frame.index, []), dtype=np.int64)
                height, width = frame.image_HW3.shape[:2]
                focal = cfg.predict.focal_length or outputs.default_focal_length(width, height)
                verts_MV3 = _verts_of(predictor, arrays, rows) if len(rows) else np.zeros((0, 0, 3))
                picture = renderer.draw(frame.image_HW3, verts_MV3, arrays["track"][rows], focal_length=focal)
                if writer is not None:
                    writer.write(picture)
                else:
                    path = target / f"{Path(frame.name).stem}.png"
                    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
                        raise OSError(f"could not write {path}; check that --out is a writable folder")
                bar.update(1)
    finally:
        bar.close()
        renderer.close()
        if writer is not None:
            writer.close()
    return target


def predict_to_folder(predictor: Predictor, input_path: str | Path | InputSource, out_dir: str | Path, *,
                      boxes_path: str | Path | None = None, progress: bool = True) -> PredictSummary:
    """Run ``predictor`` on one input and write ``out_dir``: predictions.npz, the overlay (predict.overlay),
    obj/ (predict.save_obj), and summary.json last. Boxes: ``boxes_path`` (``raymotion.data.boxes``), else an
    imported clip's labels, else the whole frame. ``input_path``: a path (``sources.open_input``) or an opened
    source (``sources.open_clip``: a manifest's clip)."""
    cfg = predictor.cfg
    out_dir = Path(out_dir)
    source = input_path if isinstance(input_path, InputSource) else open_input(input_path)
    boxes = read_boxes(boxes_path) if boxes_path else source.label_boxes
    summary = PredictSummary(input=str(source.path), kind=source.kind,
                             boxes_source=boxes.source if boxes is not None else "whole frame")
    smooth = cfg.predict.smoothing != "none"
    if smooth and not source.is_video:
        raise ConfigError("predict.smoothing", cfg.predict.smoothing, f"{source.path} is not a video: smoothing "
                          "runs over each track's consecutive video frames; set predict.smoothing=none")
    summary.smoothing = f"{cfg.predict.smoothing} (sigma {cfg.predict.smoothing_sigma} frames)" if smooth else "none"
    start = time.perf_counter()
    rows = _regress_input(predictor, source, boxes, summary=summary, progress=progress)
    warn_skipped(summary.skipped + summary.boxes_bad, what=f"inputs of {source.path}")
    arrays = _export(predictor, rows, smooth=smooth) if rows else _empty_arrays(cfg.body.num_betas)
    summary.predict_s = time.perf_counter() - start
    summary.people = len(arrays["frame"])
    summary.tracks = len(np.unique(arrays["track"]))
    meta = outputs.metadata(
        checkpoint=str(predictor.checkpoint), input=str(source.path), kind=source.kind, boxes=summary.boxes_source,
        model={key: flatten(to_dict(cfg))[key] for key in CHECKPOINT_KEYS},
        focal_length_rule=(f"{cfg.predict.focal_length} px" if cfg.predict.focal_length else
                           f"{outputs.SPIN_FOCAL_LENGTH} px at {outputs.SPIN_CROP_SIZE} px scaled to the longer image side"),
        smoothing=summary.smoothing, fps=source.fps if source.is_video else None)
    outputs.write_predictions(out_dir / PREDICTIONS, arrays, meta)
    summary.outputs.append(str(out_dir / PREDICTIONS))
    if cfg.predict.save_obj and summary.people:
        summary.outputs.append(str(_write_obj_files(out_dir, arrays, predictor)))
    if cfg.predict.overlay:
        start = time.perf_counter()
        summary.outputs.append(str(_draw_overlay(predictor, source, arrays, out_dir, progress=progress)))
        summary.overlay_s = time.perf_counter() - start
    (out_dir / SUMMARY).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary

"""3DPW sequence files (von Marcard et al. 2018; /work/shared/FORMATS.md) -> raymotion clips, one per person track.

Read per sequence (``sequenceFiles/<split>/<seq>.pkl``, a Python 2 pickle: loaded with latin1 through the
restricted unpickler of ``raymotion.data.boxes``, numpy arrays and plain containers only): cam_poses (T, 4, 4)
world-to-camera, cam_intrinsics (3, 3); per person: poses (T, 72), betas (10,), jointPositions (T, 72: the 24
SMPL joints of the person's own gendered model, world frame), poses2d (T, 3, 18: OpenPose COCO-18 detections),
campose_valid (T,), genders. Images: ``imageFiles/<seq>/image_%05d.jpg`` (or .png).

What each label becomes (docs/data_format.md), with R, t the frame's camera rotation and translation:
- pose_cam: the root turned into the camera, Rodrigues(R . R_root); the body pose is unchanged; pose = poses.
- joints3d_cam = R . jointPositions + t (the dataset's gendered joints, exact).
- transl_cam: the pivot correction. Turning the root by R turns the body about its pelvis (the root joint), not
  about the world origin, so transl_cam = pelvis_cam - J0, with pelvis_cam = joints3d_cam[pelvis] and J0 the
  pelvis of ``body(pose_cam, betas)`` (the rest pelvis of the body model used, for these betas): then
  ``body(pose_cam, betas) + transl_cam`` has its pelvis where the person's is (WHAM's trans_cam, with the root
  joint as the pivot).
- eval_joints3d_cam: the 14 evaluation joints of the person's gendered body (``body.smpl_dir``'s SMPL_MALE/FEMALE
  with body.model=smpl; otherwise, and where a gendered file is missing, the configured body: the summary
  says which) posed with pose_cam + transl_cam; eval_joints2d their projection.
- box_xyxy: the tight box of the projected mesh of that body; intrinsics (fx, fy, cx + 0.5, cy + 0.5): 3DPW's
  pixel centres are at integers, raymotion's at i + 0.5.
- joints2d / joints2d_conf / joints2d_visible: poses2d onto the SMPL joints by name (``SMPL_FROM_COCO18``), + 0.5
  px, the detector's confidence (visible where > 0); the VIBE protocol's keypoint validity is computed from it.
- campose_valid, gender (m -> male, f -> female), has_smpl and has_joints3d True.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from raymotion.body.body_model import BodyModel, load_body_model, smpl_file_path
from raymotion.body.joints import COCO18_JOINT_NAMES, NUM_SMPL_JOINTS, SMPL_FROM_COCO18, SMPL_JOINT
from raymotion.config import BodyConfig
from raymotion.data.boxes import load_tracker_pickle
from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle
from raymotion.importers.common import PIXEL_CENTRE_SHIFT, clip_size, image_size, map_joints, require
from raymotion.importers.writer import ContractWriter, ImportSummary

SPLIT_OF_FOLDER = {"train": "labelled", "validation": "val", "test": "test"}
"""3DPW's sequenceFiles/<folder> -> raymotion split."""
GENDERS = {"m": "male", "f": "female"}
FPS = 30.0
"""3DPW's poses are aligned to the 30 Hz images."""
FIX = "re-download the sequence file (the 3DPW zip's sequenceFiles/), or remove it from the import"
IMAGE_SUFFIXES = (".jpg", ".png")


def sequence_files(source: Path) -> list[Path]:
    """The sequence pickles under ``source``: the 3DPW root (every sequenceFiles/<split>/), one split folder,
    or one .pkl."""
    if source.is_file():
        return [source]
    if (source / "sequenceFiles").is_dir():
        source = source / "sequenceFiles"
    files = sorted(source.glob("*.pkl")) + sorted(source.glob("*/*.pkl"))
    if not files:
        raise FileNotFoundError(f"no 3DPW sequence files (*.pkl) under {source}; give the 3DPW root (holding "
                                "sequenceFiles/ and imageFiles/), a sequenceFiles/<split> folder or one .pkl")
    return files


def dataset_root(pkl: Path) -> Path:
    """The folder holding sequenceFiles/ and imageFiles/ for a sequence file (sequenceFiles/<split>/<seq>.pkl)."""
    return pkl.parent.parent.parent


def read_sequence(pkl: Path) -> dict:
    """A sequence file, checked: the keys used, their shapes, one entry per person in each per-person list."""
    try:
        data = load_tracker_pickle(pkl, encoding="latin1")
    except ValueError as err:  # truncated, not a pickle, or asking for code: the reader's message, and the fix
        raise ValueError(f"{err}; {FIX}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{pkl} holds {type(data).__name__}, not a 3DPW sequence (a dict); {FIX}")
    cam_poses = require(data, "cam_poses", path=pkl, shape=(None, 4, 4), fix=FIX)
    require(data, "cam_intrinsics", path=pkl, shape=(3, 3), fix=FIX)
    num_frames = len(cam_poses)
    people = len(require(data, "poses", path=pkl, fix=FIX))
    per_person = {"poses": (num_frames, NUM_SMPL_JOINTS * 3), "jointPositions": (num_frames, NUM_SMPL_JOINTS * 3),
                  "poses2d": (num_frames, 3, len(COCO18_JOINT_NAMES)), "campose_valid": (num_frames,),
                  "betas": (None,)}
    for key, shape in per_person.items():
        values = require(data, key, path=pkl, fix=FIX) if key in ("betas",) else data.get(key)
        if values is None:
            raise ValueError(f"{pkl}: key {key!r} is missing (it has {', '.join(sorted(data))}); {FIX}")
        if len(values) != people:
            raise ValueError(f"{pkl}: key {key!r} has {len(values)} entries for {people} people; {FIX}")
        for person, array in enumerate(values):
            array = np.asarray(array)
            if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
                expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
                raise ValueError(f"{pkl}: key {key!r} of person {person} has shape {array.shape}, expected "
                                 f"{expected} ({num_frames} frames); {FIX}")
    genders = data.get("genders", ["n"] * people)
    if len(genders) != people or any(g not in GENDERS for g in genders):
        raise ValueError(f"{pkl}: key 'genders' is {genders!r}; expected 'm' or 'f' for each of {people} people; {FIX}")
    return data


def bodies_by_gender(body_cfg: BodyConfig) -> tuple[dict[str, BodyModel], str]:
    """The body to pose each gender's ground truth with, and a note on what was used: SMPL_MALE/FEMALE from
    ``body.smpl_dir`` with body.model=smpl (the neutral model where one is missing), else the configured body."""
    configured = load_body_model(body_cfg)
    if body_cfg.model != "smpl":
        return {"male": configured, "female": configured}, (
            f"eval_joints3d_cam, box_xyxy and transl_cam come from body.model={body_cfg.model} for every gender "
            "(gendered SMPL needs body.model=smpl and SMPL_MALE/FEMALE in body.smpl_dir)")
    bodies, missing = {}, []
    for gender in ("male", "female"):
        try:
            smpl_file_path(body_cfg.smpl_dir, gender)
        except FileNotFoundError:
            bodies[gender] = configured
            missing.append(gender)
            continue
        bodies[gender] = load_body_model(_with_gender(body_cfg, gender))
    note = "gendered SMPL ground truth" + (f" (no {' or '.join(missing)} file in {body_cfg.smpl_dir}: the "
                                           f"{body_cfg.gender} model stands in)" if missing else "")
    return bodies, note


def _with_gender(body_cfg: BodyConfig, gender: str) -> BodyConfig:
    return BodyConfig(model=body_cfg.model, smpl_dir=body_cfg.smpl_dir, gender=gender,
                      h36m_regressor=body_cfg.h36m_regressor, num_betas=body_cfg.num_betas)


def person_labels(data: dict, person: int, body: BodyModel) -> dict[str, np.ndarray]:
    """The label columns (module doc) of one person of a sequence, every frame."""
    cam_T44 = np.asarray(data["cam_poses"], dtype=np.float64)
    rot_T33, trans_T3 = cam_T44[:, :3, :3], cam_T44[:, :3, 3]
    num_frames = len(cam_T44)
    pose_T243 = np.asarray(data["poses"][person], dtype=np.float64).reshape(num_frames, NUM_SMPL_JOINTS, 3)
    rotmats_TJ33 = axis_angle_to_rotmat(torch.as_tensor(pose_T243))
    rotmats_TJ33[:, 0] = torch.as_tensor(rot_T33) @ rotmats_TJ33[:, 0]
    betas_K = np.asarray(data["betas"][person], dtype=np.float64)[:body.num_betas]
    joints_world_TJ3 = np.asarray(data["jointPositions"][person], dtype=np.float64).reshape(num_frames, -1, 3)
    joints_cam_TJ3 = np.einsum("tij,tnj->tni", rot_T33, joints_world_TJ3) + trans_T3[:, None]
    with torch.no_grad():
        posed = body(rotmats_BJ33=rotmats_TJ33.float(),
                     betas_BK=torch.as_tensor(betas_K, dtype=torch.float32).expand(num_frames, -1))
    pelvis = SMPL_JOINT["pelvis"]
    transl_cam_T3 = joints_cam_TJ3[:, pelvis] - posed.joints_BJ3[:, pelvis].double().numpy()
    fx, fy = data["cam_intrinsics"][0][0], data["cam_intrinsics"][1][1]
    cx, cy = data["cam_intrinsics"][0][2] + PIXEL_CENTRE_SHIFT, data["cam_intrinsics"][1][2] + PIXEL_CENTRE_SHIFT

    def project(points_TN3: np.ndarray) -> np.ndarray:
        return np.stack([fx * points_TN3[..., 0] / points_TN3[..., 2] + cx,
                         fy * points_TN3[..., 1] / points_TN3[..., 2] + cy], axis=-1)

    verts_pix_TV2 = project(posed.verts_BV3.double().numpy() + transl_cam_T3[:, None])
    eval_cam_TE3 = posed.eval_joints_B143.double().numpy() + transl_cam_T3[:, None]
    detections_TS3 = np.asarray(data["poses2d"][person], dtype=np.float64).transpose(0, 2, 1)
    mapped_TJ3, _ = map_joints(detections_TS3, SMPL_FROM_COCO18)
    return {
        "pose": pose_T243.reshape(num_frames, -1),
        "pose_cam": rotmat_to_axis_angle(rotmats_TJ33).numpy().reshape(num_frames, -1),
        "transl_cam": transl_cam_T3,
        "betas": np.broadcast_to(betas_K, (num_frames, len(betas_K))),
        "intrinsics": np.broadcast_to([fx, fy, cx, cy], (num_frames, 4)),
        "cam_rotation": rot_T33.reshape(num_frames, 9),
        "cam_translation": trans_T3,
        "box_xyxy": np.concatenate([verts_pix_TV2.min(axis=1), verts_pix_TV2.max(axis=1)], axis=1),
        "joints2d": mapped_TJ3[..., :2] + PIXEL_CENTRE_SHIFT,
        "joints2d_visible": mapped_TJ3[..., 2] > 0,
        "joints2d_conf": mapped_TJ3[..., 2],
        "joints3d_cam": joints_cam_TJ3,
        "eval_joints2d": project(eval_cam_TE3),
        "eval_joints3d_cam": eval_cam_TE3,
        "campose_valid": np.asarray(data["campose_valid"][person]) > 0,
        "gender": np.full(num_frames, GENDERS[data["genders"][person]]),
        "has_smpl": np.ones(num_frames, bool),
        "has_joints3d": np.ones(num_frames, bool),
    }


def sequence_images(root: Path, sequence: str, num_frames: int, *, pkl: Path) -> list[Path]:
    """The images of a sequence, in frame order; a missing one raises naming it (a clip's frames must all be
    there: the labels are per frame)."""
    images = []
    for t in range(num_frames):
        candidates = [root / "imageFiles" / sequence / f"image_{t:05d}{suffix}" for suffix in IMAGE_SUFFIXES]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{candidates[0]} is missing: {pkl} has {num_frames} frames (key cam_poses), "
                                    f"so imageFiles/{sequence}/ needs image_00000 to image_{num_frames - 1:05d}; "
                                    "unpack the 3DPW imageFiles zip into the dataset root")
        images.append(found)
    return images


def import_3dpw(source: str | Path, *, out_dir: str | Path, body_cfg: BodyConfig, split: str | None = None,
                copy_frames: bool = False, progress: bool = True) -> ImportSummary:
    """Import 3DPW sequences (module doc) into ``out_dir``: one clip per person, ``<seq>_p<person>``.

    ``split``: the raymotion split; None takes it from each file's folder (train -> labelled, validation -> val,
    test -> test). ``body_cfg``: the body model the derived labels are computed with (``bodies_by_gender``).
    """
    source = Path(source)
    files = sequence_files(source)
    summary = ImportSummary(source=str(source), out_dir=Path(out_dir))
    bodies, note = bodies_by_gender(body_cfg)
    summary.notes.append(note)
    writer = ContractWriter(out_dir, copy_frames=copy_frames)
    for pkl in tqdm(files, desc="import 3DPW", unit="sequence", disable=not progress):
        clip_split = split or SPLIT_OF_FOLDER.get(pkl.parent.name)
        if clip_split is None:
            raise ValueError(f"{pkl} is not in sequenceFiles/train, validation or test; give --split")
        data = read_sequence(pkl)
        sequence = str(data.get("sequence", pkl.stem))
        num_frames = len(data["cam_poses"])
        images = sequence_images(dataset_root(pkl), sequence, num_frames, pkl=pkl)
        sizes = [image_size(image) for image in (images[0], images[-1])]
        if None in sizes:
            bad = images[0] if sizes[0] is None else images[-1]
            raise ValueError(f"{bad} is not a readable image (corrupt or truncated); unpack the 3DPW imageFiles zip "
                             "again")
        width, height = clip_size(sizes)
        for person in range(len(data["poses"])):
            labels = person_labels(data, person, bodies[GENDERS[data["genders"][person]]])
            writer.add_clip(clip_id=f"{sequence}_p{person}", split=clip_split, images=images, labels=labels,
                            fps=FPS, width=width, height=height, subject=0, motion=sequence)
            summary.clips += 1
            summary.frames += num_frames
    writer.finish()
    return summary

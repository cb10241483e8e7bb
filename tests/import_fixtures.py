"""Test helpers: the tiny synthetic benchmark written in the field's formats (/work/shared/FORMATS.md), so that
every label an importer reads back is known. Frames are written as PNG files."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from raymotion.body.joints import (COCO18_JOINT_NAMES, EVAL_FROM_SPIN_GT, SMPL_FROM_COCO18, SMPL_FROM_SPIN_GT,
                                   SPIN_GT_JOINT_NAMES)
from raymotion.data.decode import read_video
from raymotion.data.labels import LABEL_SHAPES, read_labels
from raymotion.data.manifest import read_manifest
from raymotion.importers.common import PIXEL_CENTRE_SHIFT, xyxy_to_spin_box

LABELS = [name for name in LABEL_SHAPES if name != "gender"]


def clips(data_dir: Path, split: str) -> list[dict]:
    return [row for row in read_manifest(data_dir).to_pylist() if row["split"] == split]


def clip_labels(data_dir: Path, row: dict) -> dict[str, np.ndarray]:
    return read_labels(data_dir, row, list(LABEL_SHAPES), bad_input="fail")[0]


def write_frames(data_dir: Path, row: dict, folder: Path, *, pattern: str = "image_{:05d}.png",
                 start: int = 0) -> list[Path]:
    """A clip's frames as PNG files in ``folder`` (3DPW's naming by default), numbered from ``start``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, frame_HW3 in enumerate(read_video(data_dir / row["path"], expected_frames=row["frames"]), start=start):
        path = folder / pattern.format(t)
        cv2.imwrite(str(path), cv2.cvtColor(frame_HW3, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def image_set(data_dir: Path, rows: list[dict], root: Path, *, folder: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """``rows``' frames as PNG under ``root/<folder>/<clip>/`` and their labels: (image paths relative to
    ``root``, the labels concatenated in row order)."""
    originals: dict[str, list[np.ndarray]] = {name: [] for name in LABELS}
    images = []
    for row in rows:
        paths = write_frames(data_dir, row, root / folder / row["clip_id"])
        images += [str(p.relative_to(root)) for p in paths]
        labels = clip_labels(data_dir, row)
        for name in LABELS:
            originals[name].append(labels[name])
    return images, {name: np.concatenate(values) for name, values in originals.items()}


def write_spin_npz(data_dir: Path, rows: list[dict], root: Path, *, scale_factor: float = 1.2,
                   file_name: str = "synth_train.npz") -> tuple[Path, dict[str, np.ndarray]]:
    """``rows``' frames as a SPIN npz (imgname, center, scale, part, S, pose, shape, has_smpl, gender) over PNG
    images under ``root/imageFiles/<clip>/``, built from the labels as SPIN's preprocessing would:
    center/scale from the box (pixel centres at integers), part/S on SPIN's 24 GT joints (the SMPL joints with a
    namesake; the first 14 = the evaluation joints; the rest confidence 0). Returns the file and the original
    labels, concatenated in row order."""
    imgname, orig = image_set(data_dir, rows, root, folder="imageFiles")
    num = len(imgname)
    center_N2, scale_N = xyxy_to_spin_box(orig["box_xyxy"], scale_factor=scale_factor)
    part_NS3 = np.zeros((num, len(SPIN_GT_JOINT_NAMES), 3))
    s_NS4 = np.zeros((num, len(SPIN_GT_JOINT_NAMES), 4))
    for smpl, gt in enumerate(SMPL_FROM_SPIN_GT):
        if gt >= 0:
            part_NS3[:, gt, :2] = orig["joints2d"][:, smpl] - PIXEL_CENTRE_SHIFT
            part_NS3[:, gt, 2] = orig["joints2d_visible"][:, smpl]
            s_NS4[:, gt, :3] = orig["joints3d_cam"][:, smpl]
            s_NS4[:, gt, 3] = 1.0
    for e, gt in enumerate(EVAL_FROM_SPIN_GT):  # the 14 LSP joints are the evaluation joints (SPIN's J24_TO_J14)
        s_NS4[:, gt, :3] = orig["eval_joints3d_cam"][:, e]
        s_NS4[:, gt, 3] = 1.0
    gender = np.array(["m" if n % 2 else "f" for n in range(num)])
    path = root / file_name
    np.savez(path, imgname=np.array(imgname), center=center_N2, scale=scale_N, part=part_NS3, S=s_NS4,
             pose=orig["pose_cam"].reshape(num, 72), shape=orig["betas"], has_smpl=np.ones(num), gender=gender)
    return path, orig


def write_boxes_csv(path: Path, tracks: dict[int, tuple[list[int], np.ndarray]]) -> Path:
    """A CSV boxes file (frame,track,x0,y0,x1,y1,score) from {track: (frames, (T, 4) boxes)}."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "track", "x0", "y0", "x1", "y1", "score"])
        for track, (frames, boxes_T4) in tracks.items():
            for frame, box in zip(frames, boxes_T4):
                writer.writerow([frame, track, *[repr(float(v)) for v in box], 0.9])
    return path


def write_3dpw(data_dir: Path, people: list[dict | list[dict]], root: Path, *, folder: str = "test",
               sequence: str = "seq_a", genders: tuple[str, ...] = ("f", "m"),
               hidden_confidence: float = 0.1) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """One 3DPW sequence file (``root/sequenceFiles/<folder>/<sequence>.pkl``, protocol 2 as Python 2 wrote it)
    whose people are the clips ``people`` (a list of clips: played one after the other; of equal length; the
    camera and images are the first person's), from
    their labels as 3DPW stores them: world pose, world SMPL joints (jointPositions), camera extrinsics, K with
    pixel centres at integers, COCO-18 detections (T, 3, 18; confidence 0.9 where visible, ``hidden_confidence``
    where not),
    campose_valid (frame 1 invalid). Returns the file and each person's original labels."""
    import pickle

    import pyarrow.parquet as pq
    import torch

    from raymotion.geometry import axis_angle_to_rotmat, rotmat_to_axis_angle

    groups = [person if isinstance(person, list) else [person] for person in people]
    originals = [{name: np.concatenate([clip_labels(data_dir, row)[name] for row in group]) for name in LABELS}
                 for group in groups]
    first = originals[0]
    num = len(first["box_xyxy"])
    start = 0
    for row in groups[0]:
        start += len(write_frames(data_dir, row, root / "imageFiles" / sequence, start=start))
    cameras = [pq.read_table(data_dir / row["labels_path"], columns=["cam_rotation", "cam_translation"])
               for row in groups[0]]
    rot_T33 = np.concatenate([np.stack(c.column("cam_rotation").to_numpy(zero_copy_only=False)) for c in cameras])
    rot_T33 = rot_T33.reshape(num, 3, 3).astype(np.float64)
    trans_T3 = np.concatenate([np.stack(c.column("cam_translation").to_numpy(zero_copy_only=False))
                               for c in cameras]).astype(np.float64)
    fx, fy, cx, cy = first["intrinsics"][0]
    cam_T44 = np.tile(np.eye(4), (num, 1, 1))
    cam_T44[:, :3, :3], cam_T44[:, :3, 3] = rot_T33, trans_T3
    coco_from_smpl = {coco: smpl for smpl, coco in enumerate(SMPL_FROM_COCO18) if coco >= 0}
    sequence_data: dict = {"sequence": sequence, "img_frame_ids": np.arange(num), "cam_poses": cam_T44,
                           "cam_intrinsics": np.array([[fx, 0, cx - PIXEL_CENTRE_SHIFT], [0, fy, cy - PIXEL_CENTRE_SHIFT],
                                                       [0, 0, 1]]),
                           "poses": [], "betas": [], "trans": [], "jointPositions": [], "poses2d": [],
                           "campose_valid": [], "genders": list(genders[:len(groups)])}
    for labels in originals:
        joints_world_TJ3 = np.einsum("tji,tnj->tni", rot_T33, labels["joints3d_cam"] - trans_T3[:, None])
        poses2d_T318 = np.zeros((num, 3, len(COCO18_JOINT_NAMES)))
        for coco, smpl in coco_from_smpl.items():
            poses2d_T318[:, :2, coco] = labels["joints2d"][:, smpl] - PIXEL_CENTRE_SHIFT
            poses2d_T318[:, 2, coco] = np.where(labels["joints2d_visible"][:, smpl], 0.9, hidden_confidence)
        # The world pose: the camera-frame root turned back by the first clip's camera (every person of a
        # sequence is seen by one camera).
        rotmats_TJ33 = axis_angle_to_rotmat(torch.tensor(labels["pose_cam"], dtype=torch.float64))
        rotmats_TJ33[:, 0] = torch.as_tensor(rot_T33).transpose(1, 2) @ rotmats_TJ33[:, 0]
        sequence_data["poses"].append(rotmat_to_axis_angle(rotmats_TJ33).numpy().reshape(num, 72))
        sequence_data["betas"].append(labels["betas"][0])
        sequence_data["trans"].append(joints_world_TJ3[:, 0])
        sequence_data["jointPositions"].append(joints_world_TJ3.reshape(num, 72))
        sequence_data["poses2d"].append(poses2d_T318)
        sequence_data["campose_valid"].append(np.array([1.0 if t != 1 else 0.0 for t in range(num)]))
    path = root / "sequenceFiles" / folder / f"{sequence}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(sequence_data, handle, protocol=2)
    return path, originals


def write_human_data(data_dir: Path, rows: list[dict], root: Path, *, file_name: str = "synth_humandata.npz",
                     extra: dict | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    """``rows``' frames as an MMHuman3D HumanData npz (np.savez_compressed; smpl and meta as 0-d object arrays)
    over PNG images under ``root/images/<clip>/``: bbox_xywh (N, 5) and keypoints2d in the 'human_data' convention
    (190; SMPL's first 22 joints first, its hands last, masked out), keypoints3d in 'smpl_49' (SPIN's GT joints at
    25..48), smpl {global_orient, body_pose, betas, transl}, meta {gender}. Pixel centres at integers.
    ``extra``: entries to add or replace (bad-file tests)."""
    from raymotion.importers.humandata import SMPL_FROM_CONVENTION

    image_path, orig = image_set(data_dir, rows, root, folder="images")
    num = len(image_path)
    box = orig["box_xyxy"] - PIXEL_CENTRE_SHIFT
    bbox_xywh = np.concatenate([box[:, :2], box[:, 2:] - box[:, :2], np.ones((num, 1))], axis=1)
    kp2d = np.zeros((num, 190, 3))
    for smpl, k in enumerate(SMPL_FROM_CONVENTION["human_data"]):
        kp2d[:, k, :2] = orig["joints2d"][:, smpl] - PIXEL_CENTRE_SHIFT
        kp2d[:, k, 2] = orig["joints2d_visible"][:, smpl]
    mask2d = np.ones(190)
    mask2d[-2:] = 0.0  # the hands are not annotated
    kp3d = np.zeros((num, 49, 4))
    for smpl, gt in enumerate(SMPL_FROM_SPIN_GT):
        if gt >= 0:
            kp3d[:, 25 + gt] = np.concatenate([orig["joints3d_cam"][:, smpl], np.ones((num, 1))], axis=1)
    for e, gt in enumerate(EVAL_FROM_SPIN_GT):
        kp3d[:, 25 + gt] = np.concatenate([orig["eval_joints3d_cam"][:, e], np.ones((num, 1))], axis=1)
    pose = orig["pose_cam"].reshape(num, 24, 3)
    smpl_dict = {"global_orient": pose[:, 0], "body_pose": pose[:, 1:], "betas": orig["betas"],
                 "transl": orig["transl_cam"]}
    entries = {"image_path": np.array(image_path), "bbox_xywh": bbox_xywh, "keypoints2d": kp2d,
               "keypoints2d_mask": mask2d, "keypoints2d_convention": np.array("human_data"),
               "keypoints3d": kp3d, "keypoints3d_mask": np.ones(49), "keypoints3d_convention": np.array("smpl_49"),
               "smpl": np.array(smpl_dict, dtype=object),
               "meta": np.array({"gender": ["male" if n % 2 else "female" for n in range(num)]}, dtype=object),
               "__key_strict__": np.array(True), "__data_len__": np.array(num),
               "__keypoints_compressed__": np.array(False)}
    entries.update(extra or {})
    path = root / file_name
    np.savez_compressed(path, **entries)
    return path, orig

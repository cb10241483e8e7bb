"""In-memory datasets: annotation fractions, augmentation that keeps labels on their pixels, complete
frame pairs, and crop-level flow that moves crop 1 onto crop 2."""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from raymotion.body.body_model import BodyModel, embedded_body_path
from raymotion.body.joints import SMPL_FLIP_PERM, SMPL_JOINT
from raymotion.data.crops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augmentation,
    crop_box,
)
from raymotion.geometry.crop_maps import from_normalised
from raymotion.data.decode import read_video_pyav
from raymotion.data.frames import LabelledFrames, select_clips
from raymotion.data.video_pairs import VideoPairs
from raymotion.geometry import axis_angle_to_rotmat
from raymotion.data.manifest import read_manifest
from raymotion.synth.writer import write_video

CROP_SIZE = 64
BBOX_SCALE = 1.3
AUGMENTATIONS = [
    Augmentation(),
    Augmentation(scale=1.2, rotation_deg=25.0),
    Augmentation(scale=0.8, rotation_deg=-20.0, flip=True),
    Augmentation(scale=1.0, flip=True),
]


@pytest.fixture(scope="module")
def tiny(tiny_benchmark):
    return tiny_benchmark


def rows(data_dir, split):
    return [row for row in read_manifest(data_dir).to_pylist() if row["split"] == split]


def labels(data_dir, row):
    return pq.read_table(data_dir / row["labels_path"]).to_pydict()


def pixels(image_3SS: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: (S, S, 3) float, 0-255."""
    mean_3, std_3 = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return ((image_3SS.permute(1, 2, 0) * std_3 + mean_3) * 255.0).numpy()


# ---- annotation fractions --------------------------------------------------------------------


def test_clip_fractions_are_seeded_nested_prefixes():
    subsets = [set(select_clips(1200, fraction=f, seed=3)) for f in (0.01, 0.05, 0.2, 1.0)]
    assert [len(s) for s in subsets] == [12, 60, 240, 1200]
    assert all(small <= large for small, large in zip(subsets, subsets[1:]))
    np.testing.assert_array_equal(select_clips(1200, fraction=0.05, seed=3), select_clips(1200, fraction=0.05, seed=3))
    assert set(select_clips(1200, fraction=0.05, seed=4)) != subsets[1]
    assert len(select_clips(10, fraction=0.001, seed=0)) == 1
    assert len(select_clips(1200, fraction=0.5, seed=0, max_clips=7)) == 7
    with pytest.raises(ValueError, match="fraction"):
        select_clips(10, fraction=0.0, seed=0)


@pytest.mark.render
def test_labelled_frames_take_nested_seeded_clip_subsets(tiny):
    def clip_ids(fraction, seed=0):
        return LabelledFrames(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE,
                              fraction=fraction, seed=seed).clip_ids

    third, two_thirds, everything = clip_ids(0.34), clip_ids(0.67), clip_ids(1.0)
    assert len(third) == 2 and len(two_thirds) == 4 and len(everything) == 6
    assert set(third) <= set(two_thirds) <= set(everything)
    assert clip_ids(0.34) == third


@pytest.mark.render
def test_labelled_frames_cover_every_frame_with_documented_shapes(tiny):
    dataset = LabelledFrames(tiny, split="val", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE)
    assert len(dataset) == sum(row["frames"] for row in rows(tiny, "val"))
    item = dataset[0]
    shapes = {key: tuple(value.shape) for key, value in item.items() if isinstance(value, torch.Tensor)}
    assert shapes == {
        "image": (3, CROP_SIZE, CROP_SIZE), "joints2d": (24, 2), "joints2d_vis": (24,), "joints3d": (24, 3),
        "eval_joints3d": (14, 3), "pose_cam": (24, 3), "betas": (10,), "has_smpl": (),
        "has_joints3d": (), "joints3d_conf": (24,),
    }
    assert item["image"].dtype == torch.float32 and item["has_smpl"] == 1.0
    assert rows(tiny, "val")[0]["clip_id"] == read_manifest(tiny).to_pylist()[item["clip_index"]]["clip_id"]
    # Without augmentation the joints sit inside the crop (the box is the tight body box + 30 %).
    assert (item["joints2d"].abs() < 1.0).all()
    with pytest.raises(ValueError, match="augment=True"):
        dataset.get(0, augmentation=Augmentation(flip=True))
    with pytest.raises(ValueError, match="choose one of"):
        LabelledFrames(tiny, split="video", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE)


# ---- augmentation keeps labels on their pixels --------------------------------------------------

LEFT_JOINTS = [SMPL_JOINT[name] for name in ("left_wrist", "left_elbow", "left_knee", "left_ankle", "left_shoulder")]


@pytest.fixture(scope="module")
def dotted(tiny, tmp_path_factory):
    """A copy of the benchmark whose labelled videos carry a small blob at one visible left joint per
    frame; returns (folder, {(clip_id, frame): joint index})."""
    out_dir = tmp_path_factory.mktemp("dotted") / "data"
    shutil.copytree(tiny, out_dir)
    marked = {}
    for row in rows(out_dir, "labelled"):
        frames_THW3 = read_video_pyav(out_dir / row["path"]).astype(np.float32)
        table = labels(out_dir, row)
        ys, xs = np.mgrid[0 : row["height"], 0 : row["width"]] + 0.5
        for t, frame_HW3 in enumerate(frames_THW3):
            joints_J2 = np.array(table["joints2d"][t]).reshape(24, 2)
            visible_J = np.array(table["joints2d_visible"][t])
            joint = next(j for j in [*LEFT_JOINTS, *range(24)] if visible_J[j])
            x, y = joints_J2[joint]
            blob_HW = 90.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2))
            # Darken bright pixels and brighten dark ones, so that nothing clips and biases the centre.
            frame_HW3 += np.where(frame_HW3 > 127, -1.0, 1.0) * blob_HW[..., None]
            marked[(row["clip_id"], t)] = joint
        write_video(out_dir / row["path"], np.clip(frames_THW3 + 0.5, 0, 255).astype(np.uint8),
                    fps=4, codec="vp9", crf=4)
    return out_dir, marked


def blob_centre(difference_HW: np.ndarray) -> np.ndarray:
    """Weighted centre (x, y), crop pixels, of the strongest blob in a difference image."""
    peak_y, peak_x = np.unravel_index(np.argmax(difference_HW), difference_HW.shape)
    ys, xs = np.mgrid[0 : difference_HW.shape[0], 0 : difference_HW.shape[1]] + 0.5
    near_HW = (xs - peak_x - 0.5) ** 2 + (ys - peak_y - 0.5) ** 2 <= 4.0**2
    weight_HW = np.where(near_HW, np.clip(difference_HW - 0.2 * difference_HW.max(), 0, None), 0.0)
    return np.array([(xs * weight_HW).sum(), (ys * weight_HW).sum()]) / weight_HW.sum()


@pytest.mark.parametrize("world", [2, 3])
def test_a_workers_shard_holds_exactly_its_frames_and_its_share_of_the_memory(tiny, world):
    """Item i of shard r is frame r + i * world of the whole fraction; the shards partition it, and each
    holds about 1/world of the crops (before: every worker decoded and held the whole fraction)."""
    whole = LabelledFrames(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE)
    shards = [LabelledFrames(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, shard=(r, world))
              for r in range(world)]
    assert sum(len(s) for s in shards) == len(whole)
    for r, shard in enumerate(shards):
        assert len(shard) == len(range(r, len(whole), world))
        for i in (0, len(shard) - 1):
            a, b = shard[i], whole[r + i * world]
            assert (a["clip_index"], a["frame"]) == (b["clip_index"], b["frame"])
            torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
            torch.testing.assert_close(a["joints3d"], b["joints3d"], rtol=0, atol=0)
        assert shard.nbytes <= whole.nbytes / world + whole.nbytes / len(whole)  # its share, to one frame
    with pytest.raises(ValueError, match="rank"):
        LabelledFrames(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, shard=(world, world))


@pytest.mark.render
def test_augmented_2d_joints_land_on_a_blob_drawn_at_the_joint(tiny, dotted):
    dotted_dir, marked = dotted
    kwargs = {"split": "labelled", "crop_size": CROP_SIZE, "bbox_scale": BBOX_SCALE, "augment": True}
    plain, blobbed = LabelledFrames(tiny, **kwargs), LabelledFrames(dotted_dir, **kwargs)
    manifest = read_manifest(tiny).to_pylist()
    errors = []
    for index in range(len(plain)):
        for aug in AUGMENTATIONS:
            item = blobbed.get(index, augmentation=aug)
            difference_HW = np.abs(pixels(item["image"]) - pixels(plain.get(index, augmentation=aug)["image"])).sum(-1)
            joint = marked[(manifest[item["clip_index"]]["clip_id"], item["frame"])]
            # After a flip the left joint's pixel carries the right joint's label.
            label = SMPL_FLIP_PERM[joint] if aug.flip else joint
            expected_2 = from_normalised(item["joints2d"][label].numpy(), size=CROP_SIZE)
            if (expected_2 < 3).any() or (expected_2 > CROP_SIZE - 3).any():
                continue  # the blob is cut by the crop edge
            errors.append(np.linalg.norm(blob_centre(difference_HW) - expected_2))
    assert len(errors) > 50
    assert np.median(errors) < 0.5 and np.max(errors) < 1.5


@pytest.mark.render
def test_augmented_3d_labels_project_like_the_2d_labels_and_match_the_pose(tiny):
    dataset = LabelledFrames(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, augment=True)
    manifest = read_manifest(tiny).to_pylist()
    body = BodyModel.from_file(embedded_body_path("anny_lowres"))
    pelvis = SMPL_JOINT["pelvis"]
    for index in (0, 4, 8):
        row = manifest[dataset[index]["clip_index"]]
        table = labels(tiny, row)
        for aug in AUGMENTATIONS:
            item = dataset.get(index, augmentation=aug)
            frame = item["frame"]
            focal = table["intrinsics"][frame][0]
            _, side = crop_box(np.array(table["box_xyxy"][frame]), scale=BBOX_SCALE)
            # 2D joints relative to the pelvis, back in image pixels, against the perspective
            # projection of the augmented 3D joints (rotation about z and the x mirror keep depth).
            joints2d_J2 = from_normalised(item["joints2d"].double().numpy(), size=CROP_SIZE) * aug.scale * side / CROP_SIZE
            joints3d_J3 = item["joints3d"].double().numpy()
            projected_J2 = focal * joints3d_J3[:, :2] / joints3d_J3[:, 2:]
            np.testing.assert_allclose(joints2d_J2 - joints2d_J2[pelvis], projected_J2 - projected_J2[pelvis], atol=2e-3)
            with torch.no_grad():
                posed = body(rotmats_BJ33=axis_angle_to_rotmat(item["pose_cam"])[None], betas_BK=item["betas"][None])
            joints_J3 = posed.joints_BJ3[0]
            torch.testing.assert_close(joints_J3 - joints_J3[pelvis], item["joints3d"] - item["joints3d"][pelvis],
                                       atol=5e-4, rtol=0)
            eval_E3 = posed.eval_joints_B143[0]
            torch.testing.assert_close(eval_E3 - joints_J3[pelvis], item["eval_joints3d"] - item["joints3d"][pelvis],
                                       atol=5e-4, rtol=0)


@pytest.mark.render
def test_colour_gain_scales_each_channel_and_keeps_the_labels(tiny):
    dataset = LabelledFrames(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, augment=True,
                             max_clips=1)
    plain = dataset.get(0, augmentation=Augmentation())
    tinted = dataset.get(0, augmentation=Augmentation(gain_3=(0.6, 1.0, 1.4)))
    before, after = pixels(plain["image"]), pixels(tinted["image"])
    unclipped = before[..., 2] * 1.4 < 254
    np.testing.assert_allclose(after[..., 0], 0.6 * before[..., 0], atol=1e-3)
    np.testing.assert_allclose(after[..., 1], before[..., 1], atol=1e-3)
    np.testing.assert_allclose(after[..., 2][unclipped], 1.4 * before[..., 2][unclipped], atol=1e-3)
    torch.testing.assert_close(tinted["joints2d"], plain["joints2d"])


# ---- video pairs -------------------------------------------------------------------------------


@pytest.mark.render
@pytest.mark.parametrize("gap", [1, 2])
def test_video_pairs_are_every_t_and_t_plus_gap_with_their_own_boxes(tiny, gap):
    pairs = VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="dis", gap=gap)
    clips = rows(tiny, "video")
    assert len(pairs) == sum(row["frames"] - gap for row in clips)
    manifest = read_manifest(tiny).to_pylist()
    seen = set()
    for index in range(len(pairs)):
        item = pairs[index]
        row = manifest[item["clip_index"]]
        assert row["split"] == "video"
        seen.add((row["clip_id"], item["t"]))
        box_T4 = np.array(labels(tiny, row)["box_xyxy"])
        for key, frame in (("crop1", item["t"]), ("crop2", item["t"] + gap)):
            center_2, side = crop_box(box_T4[frame], scale=BBOX_SCALE)
            np.testing.assert_allclose(item[key].numpy(), [*center_2, side], rtol=1e-6)
        assert item["flow_valid_fwd"].all() and "pose_cam1" not in item
    assert seen == {(row["clip_id"], t) for row in clips for t in range(row["frames"] - gap)}


@pytest.mark.render
def test_ground_truth_flow_needs_gap_one_and_flow_files(tiny):
    with pytest.raises(ValueError, match="gap=1"):
        VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="ground_truth", gap=2)
    with pytest.raises(ValueError, match="no flow_path"):
        VideoPairs(tiny, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="ground_truth")
    with pytest.raises(ValueError, match="flow.estimator='raft' is invalid: expected one of: dis, farneback"):
        VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="raft")


@pytest.fixture(scope="module")
def truth_pairs(tiny):
    return VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="ground_truth", with_labels=True)


def warp(image_HW3: np.ndarray, flow_2SS: torch.Tensor) -> np.ndarray:
    """Sample an (S, S, 3) image at x + flow (crop pixels), bilinearly."""
    size = image_HW3.shape[0]
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    grid_SS2 = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1) + flow_2SS.permute(1, 2, 0)
    # grid_sample(align_corners=False) has -1 and +1 at the outer pixel edges: n = 2 p / S - 1.
    grid_1SS2 = (2.0 * grid_SS2 / size - 1.0)[None]
    image_13SS = torch.as_tensor(image_HW3).permute(2, 0, 1)[None]
    return F.grid_sample(image_13SS, grid_1SS2, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


@pytest.mark.render
def test_ground_truth_crop_flow_warps_crop2_onto_crop1(truth_pairs):
    # Sampling crop 2 at x + flow_fwd(x) must reproduce crop 1 on the body (and crop 1 at
    # x + flow_bwd, crop 2). The floor is set by VP9 and by resampling sub-pixel texture: on the
    # tiny preset the exact IMAGE flow leaves 0.72x the zero-flow error (measured); the crops 0.6x.
    warped, zero, reversed_ = [], [], []
    for index in range(len(truth_pairs)):
        item = truth_pairs[index]
        image1, image2 = pixels(item["image1"]), pixels(item["image2"])
        for flow, valid, source, target in (("flow_fwd", "flow_valid_fwd", image2, image1),
                                            ("flow_bwd", "flow_valid_bwd", image1, image2)):
            body_SS = item[valid].numpy()
            assert body_SS.mean() > 0.05
            warped.append(np.abs(warp(source, item[flow]) - target)[body_SS].mean())
            zero.append(np.abs(source - target)[body_SS].mean())
            reversed_.append(np.abs(warp(source, -item[flow]) - target)[body_SS].mean())
    warped, zero, reversed_ = map(np.array, (warped, zero, reversed_))
    assert (warped < zero).all()
    assert warped.mean() < 0.7 * zero.mean()
    # A sign or direction mix-up would make things worse than no flow at all.
    assert (reversed_ > zero).all()


@pytest.mark.render
def test_visible_joints_land_in_the_crop_body_mask(truth_pairs):
    inside = total = 0
    for index in range(len(truth_pairs)):
        item = truth_pairs[index]
        joints_J2 = from_normalised(item["joints2d1"].numpy(), size=CROP_SIZE)
        for x, y in joints_J2[item["joints2d_vis1"].numpy() > 0]:
            total += 1
            inside += bool(item["flow_valid_fwd"][int(y), int(x)])
    assert total > 50
    assert inside / total > 0.9


@pytest.mark.render
def test_dis_crop_flow_agrees_with_ground_truth_on_the_body(tiny, truth_pairs):
    dis_pairs = VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="dis")
    errors = []
    for index in range(len(dis_pairs)):
        estimate, truth = dis_pairs[index], truth_pairs[index]
        assert (estimate["clip_index"], estimate["t"]) == (truth["clip_index"], truth["t"])
        for flow, valid in (("flow_fwd", "flow_valid_fwd"), ("flow_bwd", "flow_valid_bwd")):
            body_SS = truth[valid]
            errors.append((estimate[flow] - truth[flow]).norm(dim=0)[body_SS].mean().item())
    assert np.mean(errors) < 1.0


@pytest.mark.render
def test_truncated_video_is_reported_by_name(tiny, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny, data_dir)
    for split in ("video", "labelled"):
        path = data_dir / rows(data_dir, split)[0]["path"]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="video.webm"):
        VideoPairs(data_dir, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="dis")
    with pytest.raises(ValueError, match="video.webm"):
        LabelledFrames(data_dir, split="labelled", crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE)


def test_estimated_flow_is_cached_beside_the_clip_and_reused(tiny):
    first = VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="dis", max_clips=1)
    row = rows(tiny, "video")[0]
    cache = (tiny / row["path"]).with_name(f"flow_dis_{CROP_SIZE}px_x{BBOX_SCALE:g}_gap1.npz")
    assert cache.is_file()
    with np.load(cache) as data:
        poisoned = {"forward": data["forward"] + np.float16(1.0), "backward": data["backward"]}
    np.savez(cache, **poisoned)  # a reused cache shows the poison; a recomputed one would not
    second = VideoPairs(tiny, crop_size=CROP_SIZE, bbox_scale=BBOX_SCALE, flow="dis", max_clips=1)
    torch.testing.assert_close(second[0]["flow_fwd"], first[0]["flow_fwd"] + 1.0, atol=1e-2, rtol=0)
    cache.unlink()

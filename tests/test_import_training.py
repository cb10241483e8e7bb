"""The imported fixtures (tests/import_fixtures.py) train a few pretrain and refine steps and evaluate under both
3DPW protocols: spin-npz -> labelled, boxes -> video, 3dpw -> val and test (issue 15)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from import_fixtures import clip_labels, clips, write_3dpw, write_boxes_csv, write_frames, write_spin_npz
from raymotion.config import BodyConfig, ImportConfig, load_config
from raymotion.data.manifest import read_manifest
from raymotion.importers import run_import
from raymotion.train.components import evaluate_checkpoint
from raymotion.train.launch import run_training

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def field_data(tiny_benchmark, tmp_path_factory):
    """A data folder imported from the field's formats, made from the tiny benchmark."""
    root = tmp_path_factory.mktemp("field")
    out = root / "data"
    body = BodyConfig(model="anny_lowres")
    npz, _ = write_spin_npz(tiny_benchmark, clips(tiny_benchmark, "labelled"), root / "spin")
    run_import("spin-npz", npz, out_dir=out, cfg=ImportConfig(clip_frames=9), images=root / "spin", progress=False)
    for row in clips(tiny_benchmark, "video"):
        folder = write_frames(tiny_benchmark, row, root / "videos" / row["clip_id"], pattern="{:04d}.png")[0].parent
        boxes_T4 = clip_labels(tiny_benchmark, row)["box_xyxy"]
        csv = write_boxes_csv(root / f"{row['clip_id']}.csv", {1: (list(range(row["frames"])), boxes_T4)})
        run_import("boxes", folder, out_dir=out, cfg=ImportConfig(min_track_frames=2), boxes=csv, progress=False)
    held_out = clips(tiny_benchmark, "test") + clips(tiny_benchmark, "val")  # 4 clips of 4 frames: one 16-frame track
    write_3dpw(tiny_benchmark, [held_out], root / "3dpw", folder="test", sequence="seq_test", hidden_confidence=0.9)
    write_3dpw(tiny_benchmark, [held_out[:2]], root / "3dpw", folder="validation", sequence="seq_val")
    run_import("3dpw", root / "3dpw", out_dir=out, cfg=ImportConfig(), body_cfg=body, progress=False)
    return out


def test_the_imported_splits(field_data):
    rows = read_manifest(field_data).to_pylist()
    counts = {split: sum(r["frames"] for r in rows if r["split"] == split) for split in ("labelled", "video", "val", "test")}
    assert counts["test"] == 16 and counts["val"] == 8 and counts["labelled"] > 0 and counts["video"] > 0
    assert all(r["path"].endswith("frames.txt") for r in rows)


def test_imported_data_pretrains_refines_and_evaluates_under_both_protocols(field_data, tmp_path):
    def config(name: str, **overrides):
        return load_config(overrides={
            "body.model": "anny_lowres", "data.root": str(field_data), "data.crop_size": 64,
            "run.output_dir": str(tmp_path), "run.name": name, "train.fraction": 1.0, "train.batch_size": 4,
            "train.pair_batch_size": 2, "train.log_every": 1, "train.checkpoint_every": 2,
            "data.video_source": "local", **overrides})

    run_training(config("pre", **{"train.pretrain_steps": 2}), "pretrain", local=True)
    checkpoint = str(tmp_path / "pre" / "checkpoint.pt")
    run_training(config("ref", **{"train.refine_steps": 2, "train.pretrained": checkpoint}), "refine", local=True)
    refined = str(tmp_path / "ref" / "checkpoint.pt")
    spin = evaluate_checkpoint(config("ref", **{"eval.protocol": "spin"}), refined, split="test")
    vibe = evaluate_checkpoint(config("ref", **{"eval.protocol": "vibe"}), refined, split="test")
    assert spin["protocol"]["name"] == "spin" and vibe["protocol"]["name"] == "vibe"
    assert spin["num_frames"] == 15  # campose_valid is 0 at frame 1
    assert vibe["num_frames"] == 16  # every frame's limbs detected: one whole chunk
    assert math.isfinite(spin["pa_mpjpe_mm"]) and math.isnan(spin["pve_mm"])
    assert all(math.isfinite(vibe[k]) for k in ("pa_mpjpe_mm", "mpjpe_mm", "pve_mm", "accel_error_mm"))
    assert np.isfinite(spin["mpjpe_mm"])


def test_a_spin_set_of_mixed_image_sizes_is_one_clip_of_varying_size(tiny_benchmark, tmp_path):
    """SPIN's npz sets group unrelated images: a clip of frames of different sizes (manifest width/height 0)."""
    import cv2

    from raymotion.data.frames import LabelledFrames

    root = tmp_path / "spin"
    npz, _ = write_spin_npz(tiny_benchmark, clips(tiny_benchmark, "labelled")[:2], root)
    first = root / str(np.load(npz)["imgname"][0])
    image = cv2.imread(str(first))
    cv2.imwrite(str(first), cv2.resize(image, (image.shape[1] + 32, image.shape[0] + 16)))  # larger: the box fits
    out = tmp_path / "data"
    run_import("spin-npz", npz, out_dir=out, cfg=ImportConfig(), images=root, progress=False)
    row = read_manifest(out).to_pylist()[0]
    assert (row["width"], row["height"]) == (0, 0)
    frames = LabelledFrames(out, split="labelled", crop_size=32, bbox_scale=1.3)
    assert len(frames) == row["frames"] and frames[0]["image"].shape == (3, 32, 32)

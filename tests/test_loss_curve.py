"""Refactors must not change the numbers (STYLE.md rule 13): short loss curves on the tiny benchmark under a
fixed seed, compared with values recorded before the consolidation of issue 17 (written at commit 0aef1c7,
before any of its moves). A change meant to leave computation alone must pass this unchanged; a change
meant to alter it updates the values here and says so in its commit.

The curves cover the whole local path: decode (PyAV), person crops, augmentation (scale, rotation, flip,
colour gain: pretraining), DIS flow on the crops, the flow-consistency and anchor losses (refinement),
the optimiser. The tolerance is float32 round-off (rtol 1e-5), not a loose match: on one machine the values
repeat to the last bit; another CPU's BLAS kernels may sum in another order.
"""

import json

import pytest
import torch

from raymotion.config import load_config
from raymotion.train.launch import BASE_MODELS_DIR, run_training

pytestmark = pytest.mark.render

# Logged keys compared at every step.
KEYS = ("loss", "sup", "flow", "anchor_joints")

# Pretraining logs only "loss" (no flow, no anchor): one value per step, steps 1-4.
PRETRAIN_CURVE = [[19.174877166748047], [20.985193252563477], [18.228914260864258], [13.798912048339844]]
# Refinement: KEYS per step, steps 1-4.
REFINE_CURVE = [
    [8.364575386047363, 8.050522804260254, 3.1294565200805664, 0.001089880708605051],
    [7.077288627624512, 6.068556308746338, 10.077850341796875, 0.0009340294054709375],
    [9.273357391357422, 7.761409759521484, 15.108758926391602, 0.0010583102703094482],
    [14.788671493530273, 14.254768371582031, 5.3279032707214355, 0.0010805425699800253],
]


def curve_config(root, runs, name, **overrides):
    return load_config(overrides={
        "body.model": "anny_lowres", "data.root": str(root), "data.crop_size": 64, "run.output_dir": str(runs),
        "run.name": name, "run.seed": 0, "train.fraction": 1.0, "train.batch_size": 4, "train.pair_batch_size": 2,
        "train.log_every": 1, "train.max_eval_clips": 1, "data.video_source": "local",
        # The values the curves were recorded with (defaults until the defaults became the main job's recipe).
        "train.video_gap": 1, "loss.flow_weight": 0.1, **overrides})


def logged(folder, keys):
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [[row[k] for k in keys if k in row] for row in rows if "loss" in row]


def test_a_pretraining_curve_with_augmentation_is_reproduced(tiny_benchmark, tmp_path):
    run_training(curve_config(tiny_benchmark, tmp_path, "pre", **{"train.pretrain_steps": 4, "train.augment": True}),
                 "pretrain", local=True)
    torch.testing.assert_close(logged(tmp_path / "pre", KEYS), PRETRAIN_CURVE, rtol=1e-5, atol=0)


def test_a_refinement_curve_from_the_shipped_base_is_reproduced(tiny_benchmark, tmp_path):
    run_training(curve_config(tiny_benchmark, tmp_path, "ref", **{
        "train.refine_steps": 4, "train.pretrained": str(BASE_MODELS_DIR / "small_cnn64_f10.pt")}),
        "refine", local=True)
    torch.testing.assert_close(logged(tmp_path / "ref", KEYS), REFINE_CURVE, rtol=1e-5, atol=0)

"""``raymotion diagnose-flow``: the flow-loss gate on a dataset's video split (reads its labels)."""

from __future__ import annotations

import json
from pathlib import Path

from raymotion.body.body_model import load_body_model
from raymotion.config import Config
from raymotion.data.frames import VideoPairs
from raymotion.eval.flow_gate import format_gate, gate_rows_as_dicts, gate_table


def run_flow_gate(cfg: Config, *, max_clips: int) -> str:
    """Gate table for the renderer's exact flow and ``flow.estimator``; also written to the data folder."""
    body = load_body_model(cfg.body)
    common = dict(split="video", crop_size=cfg.data.crop_size, bbox_scale=cfg.data.bbox_scale,
                  max_clips=max_clips, with_labels=True, bad_input=cfg.data.bad_input)
    pairs = {
        "ground_truth": VideoPairs(cfg.data.root, flow="ground_truth", **common),
        cfg.flow.estimator: VideoPairs(cfg.data.root, flow=cfg.flow.estimator, flow_config=cfg.flow, **common),
    }
    rows = gate_table(body, pairs, seed=cfg.run.seed)
    out = Path(cfg.data.root) / f"flow_gate_{cfg.data.crop_size}px.json"
    out.write_text(json.dumps(gate_rows_as_dicts(rows), indent=2))
    return format_gate(rows) + f"\n(written to {out})"

"""The method's before/after experiment (issue: anchors only vs anchors + flow, TexturePose, both; seeds).

    python tools/method_experiment.py --pretrained raymotion/assets/base_models/small_cnn64_f10.pt \\
        --seeds 0 1 2 --steps 200 --out docs/results/method

Single-process refinement runs (the Ray Train loop in local mode, ``launch.run_training(local=True)``, with
the video pairs read in-process: ``data.video_source=local``) of one base model on the default benchmark, with the main
job's recipe (the defaults of raymotion/config.py)
and these variants, each with every seed (``run.seed``: batch order and augmentation; the annotated
fraction stays the base model's, ``train.fraction_seed``):

    anchors        W_flow = 0: the labelled batch, frozen BatchNorm and the anchors to the frozen network
    flow           + the flow-consistency loss on DIS flow (the method)
    flow_oracle    + the flow-consistency loss on the renderer's exact flow (upper bound)
    texture        + TexturePose instead of flow
    flow_texture   + both

Writes ``<out>/runs/<variant>_s<seed>.json`` (each run's metrics.json), ``<out>/results.csv`` (one row per
run) and ``<out>/results.md`` (mean and std over seeds, with the base model's numbers and the command).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raymotion.config import load_config
from raymotion.eval.evaluate import METRIC_KEYS
from raymotion.train.launch import run_training
from raymotion.train.checkpoint import load_checkpoint

METRICS = (*METRIC_KEYS, "pred_motion_mm")


def variants(flow_weight: float, texture_weight: float) -> dict[str, dict[str, object]]:
    return {
        "anchors": {"loss.flow_weight": 0.0},
        "flow": {"loss.flow_weight": flow_weight},
        "flow_oracle": {"loss.flow_weight": flow_weight, "train.flow_source": "ground_truth"},
        "texture": {"loss.flow_weight": 0.0, "loss.texture_weight": texture_weight},
        "flow_texture": {"loss.flow_weight": flow_weight, "loss.texture_weight": texture_weight},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--flow-weight", type=float, default=0.1)
    parser.add_argument("--texture-weight", type=float, default=1.0)
    parser.add_argument("--variants", nargs="+", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("docs/results/method"))
    args = parser.parse_args()
    chosen = variants(args.flow_weight, args.texture_weight)
    if args.variants:
        chosen = {k: chosen[k] for k in args.variants}
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="method_"))
    rows = []
    tic = time.perf_counter()
    try:
        for name, extra in chosen.items():
            for seed in args.seeds:
                cfg = load_config(overrides=[*args.overrides, *(f"{k}={v}" for k, v in {
                    "run.output_dir": str(runs), "run.name": f"{name}_s{seed}", "run.seed": seed,
                    "train.pretrained": args.pretrained, "train.refine_steps": args.steps,
                    "data.video_source": "local", **extra}.items())])
                start = time.perf_counter()
                metrics = run_training(cfg, "refine", local=True)
                metrics["wall_s"] = time.perf_counter() - start
                (args.out / "runs" / f"{name}_s{seed}.json").write_text(json.dumps(metrics, indent=2))
                rows.append({"variant": name, "seed": seed, **{m: metrics[m] for m in METRICS},
                             "true_motion_mm": metrics["true_motion_mm"], "wall_s": metrics["wall_s"]})
                print(f"{name} seed {seed}: PA-MPJPE {metrics['pa_mpjpe_mm']:.1f} mm "
                      f"({metrics['wall_s']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    with (args.out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = load_checkpoint(args.pretrained).get("metrics", {})
    lines = [
        "# The method on the default synthetic benchmark: before/after refinement", "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Machine: {platform.processor() or platform.machine()}, CPU only; total wall time "
        f"{(time.perf_counter() - tic) / 60:.0f} min; {args.steps} refinement steps per run, seeds "
        f"{' '.join(map(str, args.seeds))}; W_flow = {args.flow_weight:g}, W_texture = {args.texture_weight:g}.", "",
        "Test split (768 frames of held-out subjects), mean +/- std over seeds, mm:", "",
        "| model | PA-MPJPE | MPJPE | PVE | accel. error | predicted motion |", "|---|---|---|---|---|---|",
    ]
    if base:
        lines.append("| before (base model) | " + " | ".join(f"{base.get(m, float('nan')):.1f}" for m in METRICS) + " |")
    for name in chosen:
        vals = [r for r in rows if r["variant"] == name]
        cells = []
        for m in METRICS:
            xs = [r[m] for r in vals]
            cells.append(f"{statistics.mean(xs):.1f} +/- {statistics.stdev(xs) if len(xs) > 1 else 0.0:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"True frame-to-frame joint motion on test: {rows[0]['true_motion_mm']:.1f} mm "
              "(a model whose predicted motion is far above it jitters).", ""]
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

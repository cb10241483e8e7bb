"""A run's human-readable outputs: ``report.md`` (the before/after table) and ``curves.png`` (losses and
validation metrics against steps, from ``log.jsonl``). Pure file writing through ``raymotion.storage`` (a
run folder may be local, NFS or s3://); no Ray, no training."""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any

from raymotion.eval.evaluate import METRIC_KEYS, METRIC_LABELS
from raymotion.storage import StoragePath



def before_after_table(metrics: dict[str, Any], *, split: str = "test") -> str:
    """Markdown table of ``before/<split>/<m>`` against ``<split>/<m>`` (after), with the change."""
    lines = [f"| {split} metric | before | after | change |", "|---|---|---|---|"]
    for name in METRIC_KEYS:
        after = metrics.get(f"{split}/{name}")
        before = metrics.get(f"before/{split}/{name}")
        if after is None:
            continue
        after_text = with_se(after, metrics.get(f"{split}/{name}_se"))
        if before is None:
            lines.append(f"| {METRIC_LABELS[name]} | | {after_text} | |")
        else:
            lines.append(f"| {METRIC_LABELS[name]} | {with_se(before, metrics.get(f'before/{split}/{name}_se'))} | "
                         f"{after_text} | {after - before:+.1f} |")
    if any(f"{split}/{name}_se" in metrics for name in METRIC_KEYS):
        lines.append(f"\n± = standard error of the mean over the {split} split's clips (frames of a clip are "
                     "not independent).")
    return "\n".join(lines)


def with_se(value: float, se: float | None) -> str:
    """``97.4 ± 1.2`` (one decimal), or the value alone when there is no standard error."""
    return f"{value:.1f}" if se is None or math.isnan(se) else f"{value:.1f} ± {se:.1f}"


def control_table(metrics: dict[str, Any], *, flow_weight: float, texture_weight: float) -> str:
    """Markdown table of the main job's test metrics: the base model, the anchors-only control, the refinement
    (``test/<m>``, ``control/test/<m>``, ``before/test/<m>``) and the refinement's change over the control,
    paired by frame (``control/change/<m>`` and its ``_se``; negative = the video terms help)."""
    terms = " + ".join(t for t, w in (("flow", flow_weight), ("TexturePose", texture_weight)) if w > 0) or "video"
    lines = [f"| test metric | base model | anchors-only control | + {terms} | change over the control |",
             "|---|---|---|---|---|"]
    for name in METRIC_KEYS:
        if f"test/{name}" not in metrics:
            continue
        cells = [with_se(metrics[k], metrics.get(f"{k}_se")) if k in metrics else ""
                 for k in (f"before/test/{name}", f"control/test/{name}", f"test/{name}")]
        change = metrics.get(f"control/change/{name}")
        change_text = "" if change is None else f"{change:+.1f} ± {metrics[f'control/change/{name}_se']:.1f}"
        lines.append(f"| {METRIC_LABELS[name]} | " + " | ".join(cells) + f" | {change_text} |")
    lines.append("\n± = standard error over the test clips; the change is paired by frame (the same frames; both runs "
                 "have the same seed), negative = better with the video terms. Accel. error has no per-frame "
                 "pairing here. The spread over seeds of this recipe is in docs/results/effect/.")
    return "\n".join(lines)


def read_log(directory: str | os.PathLike | StoragePath) -> list[dict[str, float]]:
    """The rows of a run's ``log.jsonl`` ([] when there is none)."""
    path = StoragePath(directory) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_run_report(directory: str | os.PathLike | StoragePath, metrics: dict[str, Any]) -> StoragePath:
    """Write ``report.md`` and ``curves.png`` into ``directory``; returns the report's path."""
    directory = StoragePath(directory)
    kind = metrics.get("kind", "run")
    parts = [f"# {kind} run `{directory.name}`", ""]
    if kind == "refine":
        parts += [f"Refined from `{metrics.get('pretrained', '?')}`. Before = the pretrained model, after = "
                  "the refined one, on the same frames.", "", before_after_table(metrics, split="test"), "",
                  before_after_table(metrics, split="val"), ""]
    else:
        parts += [before_after_table(metrics, split="test"), ""]
    extra = {k: v for k, v in metrics.items() if k in ("workers", "skipped_steps", "train_seconds", "fraction")}
    parts += [f"- {k}: {v:.1f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in extra.items()]
    parts += ["", "![curves](curves.png)", ""]
    path = directory / "report.md"
    path.write_text("\n".join(parts))
    plot_curves(directory)
    return path


def plot_curves(directory: StoragePath) -> StoragePath | None:
    """``curves.png``: the logged losses (log scale) and the validation metrics against steps."""
    rows = read_log(directory)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss_keys = [k for k in ("loss", "sup", "flow", "texture", "anchor_joints") if any(k in r for r in rows)]
    val_keys = [f"val/{m}" for m in METRIC_KEYS[:3] if any(f"val/{m}" in r for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in loss_keys:
        points = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key]) and r[key] > 0]
        if points:
            axes[0].plot(*zip(*points), label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("losses")
    axes[0].legend(fontsize=8)
    for key in val_keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            axes[1].plot(*zip(*points), marker="o", label=key)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation (mm)")
    if val_keys:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    path = directory / "curves.png"
    path.write_bytes(png.getvalue())
    return path

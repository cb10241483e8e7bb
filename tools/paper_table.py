"""The paper's table and the gain-against-video curve, from two finished sweeps' results.csv.

    python jobs/sweep.py --config tune_configs/paper_table.yaml     # fractions x {baseline, +tex, +flow, +both} x seeds
    python jobs/sweep.py --config tune_configs/video_amount.yaml    # +flow on fewer video clips, lowest fraction
    python tools/paper_table.py --out docs/results/paper_table

Reads ``runs/sweeps/paper_table/results.csv`` (and ``runs/sweeps/video_amount/results.csv`` if present) and
writes into ``--out``: ``table.md`` (per fraction and variant: test PA-MPJPE, MPJPE, PVE and acceleration
error, mean +/- std over seeds, and the change against the baseline paired by seed), ``results.csv`` (the
sweep's rows), ``pa_mpjpe_vs_fraction.png`` and, with the video sweep, ``gain_vs_video.png``.

Variants: baseline = anchors only (loss.flow_weight 0, loss.texture_weight 0), +TexturePose, +flow, +both.
The video curve's 0-clip point is the baseline (no video term) and its all-clips point is the table's +flow.

Division with ``tools/effect_study.py``: this tool only reads what a Tune sweep (jobs/sweep.py) already ran and
pairs variants by seed, from each trial's reported metrics; ``effect_study.py`` runs its own recipe/control pairs
and pairs them by frame (``components.compare_checkpoints``: a standard error over clips, and G). Both take the
metrics and their names from ``raymotion.eval.evaluate`` (``METRIC_KEYS``, ``METRIC_LABELS``).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from raymotion.eval.evaluate import METRIC_KEYS, METRIC_LABELS
VARIANTS = {(False, False): "baseline (anchors)", (False, True): "+TexturePose", (True, False): "+flow",
            (True, True): "+flow +TexturePose"}


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the sweep first (python jobs/sweep.py --config "
                                f"tune_configs/{path.parent.name}.yaml)")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    missing = [r["trial"] for r in rows if not r.get("test/pa_mpjpe_mm")]
    if missing:
        raise ValueError(f"{path}: trial(s) {', '.join(missing)} have no test metrics (not finished); rerun the "
                         "sweep to resume them")
    return rows


def variant(row: dict) -> str:
    return VARIANTS[(float(row.get("loss.flow_weight") or 0) > 0, float(row.get("loss.texture_weight") or 0) > 0)]


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def paired_change(rows: list[dict], base: list[dict], metric: str) -> list[float]:
    """variant - baseline, per run.seed present in both."""
    by_seed = {r["run.seed"]: float(r[f"test/{metric}"]) for r in base}
    return [float(r[f"test/{metric}"]) - by_seed[r["run.seed"]] for r in rows if r["run.seed"] in by_seed]


def paper_table(rows: list[dict]) -> tuple[str, dict]:
    """The markdown table, and {(fraction, variant): [PA-MPJPE per seed]} for the plot."""
    groups: dict[tuple[float, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(float(row["train.fraction"]), variant(row))].append(row)
    lines = ["| annotated | model | seeds | " + " | ".join(METRIC_LABELS[m] for m in METRIC_KEYS)
             + " | Δ PA-MPJPE vs baseline |",
             "|---|---|---|" + "---|" * len(METRIC_KEYS) + "---|"]
    series: dict[tuple[float, str], list[float]] = {}
    for fraction in sorted({f for f, _ in groups}):
        members = [r for (f, _), rs in groups.items() if f == fraction for r in rs]
        before = [float(r[f"before/test/{m}"]) for r in members[:1] for m in METRIC_KEYS]
        lines.append(f"| {100 * fraction:g} % | before refinement (base) | – | " + " | ".join(f"{x:.1f}" for x in before)
                     + " | |")
        base = groups.get((fraction, VARIANTS[(False, False)]), [])
        for name in VARIANTS.values():
            rs = groups.get((fraction, name))
            if not rs:
                continue
            cells = [mean_std([float(r[f"test/{m}"]) for r in rs]) for m in METRIC_KEYS]
            change = paired_change(rs, base, "pa_mpjpe_mm") if name != VARIANTS[(False, False)] else []
            lines.append(f"| {100 * fraction:g} % | {name} | {len(rs)} | " + " | ".join(cells) + " | "
                         + (mean_std(change) if change else "") + " |")
            series[(fraction, name)] = [float(r["test/pa_mpjpe_mm"]) for r in rs]
    return "\n".join(lines), series


def video_curve(table_rows: list[dict], video_rows: list[dict], clip_frames: list[int]) -> tuple[str, list]:
    """Gain (baseline - +flow, PA-MPJPE and accel. error, paired by seed) against the video clips used.

    ``clip_frames``: frames of each clip of the video split, in manifest order (train.video_clips = N uses
    the first N; 0 = all)."""
    fraction = float(video_rows[0]["train.fraction"]) if "train.fraction" in video_rows[0] else None
    fractions = {float(r["train.fraction"]) for r in table_rows}
    if fraction is None:
        fraction = min(fractions)
    at = [r for r in table_rows if float(r["train.fraction"]) == fraction]
    base = [r for r in at if variant(r) == VARIANTS[(False, False)]]
    full = [r for r in at if variant(r) == VARIANTS[(True, False)]]
    points: dict[int, list[dict]] = defaultdict(list)
    for row in video_rows:
        points[int(float(row["train.video_clips"]))].append(row)
    points[len(clip_frames)] = full  # the table's +flow used every clip (train.video_clips = 0)
    lines = [f"Annotated fraction {100 * fraction:g} %, +flow against the baseline (anchors only), paired by seed; "
             "positive = refinement with flow is better.", "",
             "| video clips | video pairs | seeds | PA-MPJPE gain | accel. error gain |", "|---|---|---|---|---|"]
    curve = [(0, [0.0] * len(base))]
    for clips in sorted(points):
        rs = points[clips]
        pa = [-x for x in paired_change(rs, base, "pa_mpjpe_mm")]
        acc = [-x for x in paired_change(rs, base, "accel_error_mm")]
        pairs = sum(f - 1 for f in clip_frames[:clips])
        lines.append(f"| {clips} | {pairs} | {len(rs)} | {mean_std(pa)} | {mean_std(acc)} |")
        curve.append((clips, pa))
    return "\n".join(lines), curve


def plot(series: dict, curve: list | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in VARIANTS.values():
        pts = sorted((100 * f, statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                     for (f, n), v in series.items() if n == name)
        if pts:
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ticks = sorted({100 * f for f, _ in series})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("annotated fraction of the labelled pool (%)")
    ax.set_ylabel("test PA-MPJPE (mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pa_mpjpe_vs_fraction.png", dpi=100)
    plt.close(fig)
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [c for c, _ in curve]
        ys = [statistics.mean(v) if v else 0.0 for _, v in curve]
        es = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in curve]
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("unannotated video clips used")
        ax.set_ylabel("PA-MPJPE gain over the baseline (mm)")
        fig.tight_layout()
        fig.savefig(out / "gain_vs_video.png", dpi=100)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=Path, default=Path("runs/sweeps"), help="folder holding the sweeps")
    parser.add_argument("--out", type=Path, default=Path("docs/results/paper_table"))
    parser.add_argument("--data-root", type=Path, default=Path("data/synth/default"),
                        help="the benchmark the sweeps ran on (for the video split's clip lengths)")
    args = parser.parse_args()
    rows = read_rows(args.sweeps / "paper_table" / "results.csv")
    table, series = paper_table(rows)
    text = ["# The paper's table on the synthetic benchmark", "", "Test split, mm, mean ± std over seeds.", "", table]
    curve = None
    video_csv = args.sweeps / "video_amount" / "results.csv"
    if video_csv.is_file():
        from raymotion.data.manifest import read_manifest

        frames = [int(r["frames"]) for r in read_manifest(args.data_root).to_pylist() if r["split"] == "video"]
        curve_text, curve = video_curve(rows, read_rows(video_csv), frames)
        text += ["", "## Gain against the amount of unannotated video", "", curve_text]
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.sweeps / "paper_table" / "results.csv", args.out / "results.csv")
    if video_csv.is_file():
        shutil.copy(video_csv, args.out / "video_amount.csv")
    (args.out / "table.md").write_text("\n".join(text) + "\n")
    plot(series, curve, args.out)
    print("\n".join(text))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()

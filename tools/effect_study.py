"""Is the flow's gain real? A refinement recipe against its anchors-only control, seed by seed, paired by frame.

    # run the recipe and its control for 3 seeds (2 runs at a time, each in its own process), then summarise
    python tools/effect_study.py run --name r600 --seeds 0 1 2 \
        --set train.refine_steps=600 --set train.video_gap=3 --set loss.flow_weight=0.3 \
        --full-base runs/base-f1/checkpoint.pt --out docs/results/effect/r600
    # summarise runs made otherwise ({seed} is replaced by each seed)
    python tools/effect_study.py summarise --recipe 'runs/r600-s{seed}' --control 'runs/r600-control-s{seed}' \
        --seeds 0 1 2 --full-base runs/base-f1/checkpoint.pt --out docs/results/effect/r600

    # the paper's table: fractions x variants x seeds, each variant against the fraction's anchors-only runs
    python tools/effect_study.py table --fractions 0.05 0.1 --variants anchors tex flow both film --seeds 0 1 2 \
        --set train.refine_steps=600 --set train.video_gap=3 --set loss.flow_weight=0.3 \
        --base 0.05=runs/base-f05/checkpoint.pt --full-base runs/base-f1/checkpoint.pt --out docs/results/effect

The control of a recipe is ``launch.control_config``: the same config and seed without any video term. For each
seed the two final models are compared on the same val and test frames (``components.compare_checkpoints``:
the paired change and its standard error over clips); over seeds the table gives the mean change, its spread
(std) and its standard error (std / sqrt(seeds)). With ``--full-base`` (a base model pretrained on 100 % of
the labels with the same recipe) it also gives G, the share of the gap to full supervision that refinement
closes: G = (PA_base - PA_refined) / (PA_base - PA_full), for the recipe and for the control.
Writes ``summary.json`` and ``summary.md`` to ``--out``. Runs that finished (metrics.json) are not rerun.

Division with ``tools/paper_table.py``: that one only tabulates a finished Tune sweep's results.csv (variants
paired by seed, and the gain-against-video curve); this one runs each recipe beside its own control and pairs
them by frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from raymotion.config import Config, apply_overrides, flatten, load_config, to_dict
from raymotion.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from raymotion.train.components import compare_checkpoints, evaluate_checkpoint
from raymotion.train.launch import absolute_paths, control_config, ensure_pretrained

SPLITS = ("val", "test")


def _cli_sets(cfg: Config, base: Config) -> list[str]:
    """The --set items that turn ``base`` into ``cfg``."""
    wanted, default = flatten(to_dict(cfg)), flatten(to_dict(base))
    return [f"{k}={_yaml(v)}" for k, v in wanted.items() if v != default.get(k)]


def _yaml(value) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, (list, tuple)) else str(value)


def run_arms(args: argparse.Namespace) -> tuple[str, str]:
    """Run the recipe and its control for every seed, ``--parallel`` processes at a time; returns the run-folder
    patterns of the two arms."""
    base = load_config(args.config)
    recipe = load_config(args.config, args.set)
    output = Path(recipe.run.output_dir)
    jobs = []
    for seed in args.seeds:
        for arm, cfg in (("recipe", recipe), ("control", control_config(recipe))):
            name = f"{args.name}-s{seed}" if arm == "recipe" else f"{args.name}-control-s{seed}"
            sets = _cli_sets(cfg, base) + [f"run.seed={seed}", f"run.name={name}", "train.control_run=false"]
            jobs.append((name, _refine_command(args.config, sets)))
    _run_all(jobs, output, args.parallel)
    return str(output / f"{args.name}-s{{seed}}"), str(output / f"{args.name}-control-s{{seed}}")


VARIANTS = {  # the paper's rows: the video terms of each (flow at the recipe's loss.flow_weight)
    "anchors": {"flow": False, "texture": False, "film": False},
    "tex": {"flow": False, "texture": True, "film": False},
    "flow": {"flow": True, "texture": False, "film": False},
    "both": {"flow": True, "texture": True, "film": False},
    "film": {"flow": True, "texture": False, "film": True},
}


def _claim(output: Path, name: str) -> bool:
    """Claim a run for this process (``<name>.claim``, created exclusively): several processes (lanes) given the
    same jobs share them instead of running one twice. A lane that was killed leaves its claims: delete them."""
    try:
        os.close(os.open(output / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _run_all(jobs: list[tuple[str, list[str]]], output: Path, parallel: int) -> None:
    """Run (name, command) jobs ``parallel`` at a time, skipping names whose run folder has metrics.json and those
    another process claimed (then waiting for them to finish)."""
    done = lambda name: (output / name / "metrics.json").is_file()  # noqa: E731
    todo = [(name, command) for name, command in jobs if not done(name)]
    running: list[tuple[str, subprocess.Popen, float]] = []
    others: list[str] = []
    failed = []
    output.mkdir(parents=True, exist_ok=True)
    while todo or running:
        while todo and len(running) < parallel:
            name, command = todo.pop(0)
            if done(name):
                continue
            if not _claim(output, name):
                others.append(name)
                continue
            log = open(output / f"{name}.log", "w")
            print(f"start {name}", flush=True)
            running.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(2)
        for item in list(running):
            name, process, start = item
            if process.poll() is not None:
                running.remove(item)
                (output / f"{name}.claim").unlink(missing_ok=True)
                print(f"end {name}: exit {process.returncode} after {time.time() - start:.0f} s", flush=True)
                if process.returncode:
                    failed.append(name)
    while [name for name in others if not done(name) and (output / f"{name}.claim").is_file()]:
        time.sleep(10)  # runs another process is making
    failed += [name for name in others if not done(name)]
    if failed:
        raise SystemExit(f"runs failed: {', '.join(failed)} (their logs: {output}/<name>.log)")


def _refine_command(config: str, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "raymotion.cli", "refine", "--config", config,
            *[item for s in sets for item in ("--set", s)]]


def run_table(args: argparse.Namespace) -> dict:
    """Every (fraction, variant, seed) run, then each variant's summary against the fraction's anchors runs."""
    recipe = load_config(args.config, args.set)
    output = Path(recipe.run.output_dir)
    bases = dict(item.split("=", 1) for item in args.base)
    jobs, names = [], {}
    for fraction in args.fractions:
        base = bases.get(f"{fraction:g}")
        if base is None:  # the shipped base model of this recipe and fraction, or one pretrained once
            fraction_cfg = apply_overrides(recipe, {"train.fraction": fraction})
            base = ensure_pretrained(absolute_paths(fraction_cfg), resume=False).train.pretrained
        for variant in args.variants:
            terms = VARIANTS[variant]
            sets = [*args.set, f"train.fraction={fraction}", f"train.pretrained={base}", "train.control_run=false",
                    f"loss.flow_weight={recipe.loss.flow_weight if terms['flow'] else 0}",
                    f"loss.texture_weight={args.texture_weight if terms['texture'] else 0}",
                    f"model.film={str(terms['film']).lower()}"]
            names[(fraction, variant)] = f"{args.prefix}t{fraction:g}-{variant}-s{{seed}}"
            for seed in args.seeds:
                name = names[(fraction, variant)].format(seed=seed)
                jobs.append((name, _refine_command(args.config, [*sets, f"run.seed={seed}", f"run.name={name}"])))
    _run_all(jobs, output, args.parallel)
    table = {}
    for fraction in args.fractions:
        control = str(output / names[(fraction, "anchors")])
        for variant in args.variants:
            if variant != "anchors":
                table[f"{fraction:g}/{variant}"] = summarise(str(output / names[(fraction, variant)]), control,
                                                             args.seeds, args.full_base)
    return table


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    if any(math.isnan(v) for v in values):  # G at 100 % of the labels: undefined
        return {"mean": float("nan"), "std": float("nan"), "se": float("nan"), "n": n}
    std = statistics.stdev(values) if n > 1 else float("nan")
    return {"mean": statistics.fmean(values), "std": std, "se": std / n ** 0.5, "n": n}


def summarise(recipe_pattern: str, control_pattern: str, seeds: list[int], full_base: str | None) -> dict:
    per_seed = []
    full: dict[str, float] = {}
    for seed in seeds:
        recipe_dir, control_dir = Path(recipe_pattern.format(seed=seed)), Path(control_pattern.format(seed=seed))
        recipe_metrics = json.loads((recipe_dir / "metrics.json").read_text())
        control_metrics = json.loads((control_dir / "metrics.json").read_text())
        cfg = Config.from_dict(load_checkpoint(recipe_dir / CHECKPOINT_NAME)["config"])
        control_cfg = Config.from_dict(load_checkpoint(control_dir / CHECKPOINT_NAME)["config"])
        row = {"seed": seed, "recipe": str(recipe_dir), "control": str(control_dir)}
        for split in SPLITS:
            change = compare_checkpoints(control_cfg, str(control_dir / CHECKPOINT_NAME),
                                         str(recipe_dir / CHECKPOINT_NAME), split=split, cfg_b=cfg)
            row[split] = {
                "base": recipe_metrics[f"before/{split}/pa_mpjpe_mm"],
                "control": control_metrics[f"{split}/pa_mpjpe_mm"],
                "recipe": recipe_metrics[f"{split}/pa_mpjpe_mm"],
                "change": change["pa_mpjpe_mm"], "change_se": change["pa_mpjpe_mm_se"],
                "control_accel": control_metrics[f"{split}/accel_error_mm"],
                "recipe_accel": recipe_metrics[f"{split}/accel_error_mm"],
            }
            if full_base:
                if split not in full:
                    plain = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, film=False))  # bases: no FiLM
                    full[split] = evaluate_checkpoint(plain, full_base, split=split)["pa_mpjpe_mm"]
                gap = row[split]["base"] - full[split]
                # No gap at 100 % of the labels (the base is the fully supervised model): G is undefined there.
                no_gap = abs(gap) < 1e-6
                row[split]["G_recipe"] = float("nan") if no_gap else (row[split]["base"] - row[split]["recipe"]) / gap
                row[split]["G_control"] = float("nan") if no_gap else (row[split]["base"] - row[split]["control"]) / gap
        per_seed.append(row)
    summary = {"seeds": seeds, "per_seed": per_seed, "full_base": full_base, "full_pa_mpjpe_mm": full}
    for split in SPLITS:
        keys = ["base", "control", "recipe", "change", "control_accel", "recipe_accel"]
        keys += ["G_recipe", "G_control"] if full_base else []
        summary[split] = {k: _stats([row[split][k] for row in per_seed]) for k in keys}
    return summary


def markdown(summary: dict, title: str) -> str:
    def cell(stats: dict, percent: bool = False) -> str:
        scale = 100.0 if percent else 1.0
        unit = " %" if percent else ""
        return (f"{stats['mean'] * scale:.1f}{unit} ± {stats['std'] * scale:.1f} (se {stats['se'] * scale:.1f})"
                if stats["n"] > 1 else f"{stats['mean'] * scale:.1f}{unit}")

    lines = [f"# {title}", "", f"Seeds {summary['seeds']}: mean ± std over seeds (se = std / sqrt(seeds)). "
             "Change = recipe − control, paired by frame (negative: the video terms help).", ""]
    head = "| split | base | control | recipe | change | accel. control → recipe |"
    if summary["full_base"]:
        head += " G recipe | G control | PA full labels |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for split in SPLITS:
        s = summary[split]
        line = (f"| {split} | {cell(s['base'])} | {cell(s['control'])} | {cell(s['recipe'])} | "
                f"**{cell(s['change'])}** | {s['control_accel']['mean']:.1f} → {s['recipe_accel']['mean']:.1f} |")
        if summary["full_base"]:
            line += (f" {cell(s['G_recipe'], True)} | {cell(s['G_control'], True)} | "
                     f"{summary['full_pa_mpjpe_mm'][split]:.1f} |")
        lines.append(line)
    lines += ["", "Per seed (PA-MPJPE, mm; change ± its paired standard error over the split's clips):", "",
              "| seed | split | base | control | recipe | change |", "|---|---|---|---|---|---|"]
    for row in summary["per_seed"]:
        for split in SPLITS:
            r = row[split]
            lines.append(f"| {row['seed']} | {split} | {r['base']:.1f} | {r['control']:.1f} | {r['recipe']:.1f} | "
                         f"{r['change']:+.2f} ± {r['change_se']:.2f} |")
    return "\n".join(lines) + "\n"


def table_markdown(table: dict, seeds: list[int]) -> str:
    """One row per fraction and variant on test (the val change beside it): PA-MPJPE, change over the
    anchors-only runs (mean ± std over seeds, se), G of the variant and of the anchors runs."""
    lines = [f"Test PA-MPJPE (mm), mean ± std over seeds {seeds}; change = variant − anchors only, paired by frame "
             "and seed (negative: better), ± std over seeds (se = std / sqrt(seeds)); G = share of the gap to the "
             "fully supervised base that refinement closes.", "",
             "| annotated | variant | base | anchors only | variant | change (test) | change (val) | G variant | "
             "G anchors | accel. anchors → variant |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, summary in table.items():
        fraction, variant = key.split("/")
        t, v = summary["test"], summary["val"]
        g = (f"{t['G_recipe']['mean'] * 100:.0f} ± {t['G_recipe']['std'] * 100:.0f} % | "
             f"{t['G_control']['mean'] * 100:.0f} ± {t['G_control']['std'] * 100:.0f} %") if "G_recipe" in t else " | "
        if "G_recipe" in t and math.isnan(t["G_recipe"]["mean"]):
            g = "— (no gap) | —"
        lines.append(f"| {float(fraction) * 100:g} % | {variant} | {t['base']['mean']:.1f} | "
                     f"{t['control']['mean']:.1f} ± {t['control']['std']:.1f} | {t['recipe']['mean']:.1f} ± "
                     f"{t['recipe']['std']:.1f} | **{t['change']['mean']:+.1f} ± {t['change']['std']:.1f}** "
                     f"(se {t['change']['se']:.1f}) | {v['change']['mean']:+.1f} ± {v['change']['std']:.1f} | {g} | "
                     f"{t['control_accel']['mean']:.0f} → {t['recipe_accel']['mean']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_table(table: dict, path: Path) -> None:
    """G on test against the annotated fraction, one line per variant (and the anchors-only runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_variant: dict[str, list[tuple[float, float, float]]] = {}
    anchors: dict[float, tuple[float, float]] = {}
    for key, summary in table.items():
        fraction, variant = key.split("/")
        g = summary["test"].get("G_recipe")
        if g is None:
            return
        if math.isnan(g["mean"]):  # 100 % of the labels: no gap to close
            continue
        by_variant.setdefault(variant, []).append((float(fraction) * 100, g["mean"] * 100, g["std"] * 100))
        gc = summary["test"]["G_control"]
        anchors[float(fraction) * 100] = (gc["mean"] * 100, gc["std"] * 100)
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for variant, points in sorted(by_variant.items()):
        x, y, e = zip(*sorted(points))
        axis.errorbar(x, y, yerr=e, marker="o", capsize=3, label=f"+{variant}")
    x = sorted(anchors)
    axis.errorbar(x, [anchors[f][0] for f in x], yerr=[anchors[f][1] for f in x], marker="s", capsize=3,
                  color="grey", linestyle="--", label="anchors only")
    axis.set_xscale("log")
    axis.set_xticks(x, [f"{f:g}" for f in x])
    axis.minorticks_off()
    axis.set_xlabel("annotated fraction (%)")
    axis.set_ylabel("G: share of the label gap closed (%)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the recipe and its control for every seed, then summarise")
    run.add_argument("--name", required=True, help="run names: <name>-s<seed>, <name>-control-s<seed>")
    grid = sub.add_parser("table", help="fractions x variants x seeds against each fraction's anchors-only runs")
    grid.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1])
    grid.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    grid.add_argument("--texture-weight", type=float, default=1.0, help="loss.texture_weight of tex and both")
    grid.add_argument("--base", action="append", default=[], metavar="FRACTION=CHECKPOINT",
                      help="the base model of a fraction (default: shipped, or pretrained once)")
    grid.add_argument("--prefix", default="", help="prefix of the run names t<fraction>-<variant>-s<seed>")
    grid.add_argument("--keep", type=Path, default=None, metavar="TABLE_JSON",
                      help="a table.json whose rows this run does not remake are kept in the output (same seeds)")
    for p in (run, grid):
        p.add_argument("--config", default=None, help="YAML overrides of the defaults (the embedded recipe)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    merge = sub.add_parser("merge", help="join table.json files (later files win) into one table, its markdown and plot")
    merge.add_argument("--tables", type=Path, nargs="+", required=True)
    merge.add_argument("--out", type=Path, required=True)
    merge.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    show = sub.add_parser("summarise", help="summarise finished runs")
    show.add_argument("--recipe", required=True, help="run folder pattern with {seed}")
    show.add_argument("--control", required=True, help="run folder pattern with {seed}")
    for p in (run, grid, show):
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--full-base", default=None, help="base model pretrained on 100 %% of the labels (for G)")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--title", default="Flow refinement against its anchors-only control")
    args = parser.parse_args()
    if args.command in ("table", "merge"):
        if args.command == "table":
            table, sources = run_table(args), [args.keep] if args.keep else []
        else:
            table, sources = {}, list(reversed(args.tables))  # later files win
        for path in sources:  # rows measured before, or by another lane of runs: kept unless made now
            kept = json.loads(path.read_text())
            table = {**{k: v for k, v in kept.items() if k not in table}, **table}
        table = dict(sorted(table.items(), key=lambda item: (float(item[0].split("/")[0]),
                                                             list(VARIANTS).index(item[0].split("/")[1]))))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.json").write_text(json.dumps(table, indent=2))
        text = table_markdown(table, args.seeds)
        (args.out / "table.md").write_text(text)
        plot_table(table, args.out / "g_vs_fraction.png")
        print(text)
        return
    patterns = run_arms(args) if args.command == "run" else (args.recipe, args.control)
    summary = summarise(*patterns, args.seeds, args.full_base)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    text = markdown(summary, args.title)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

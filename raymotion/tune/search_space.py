"""Sweep files (``tune_configs/*.yaml``): parse, check every key against the config tree, build Tune domains.

A sweep file has five parts, all optional but ``tune``:

    recipe: my_base.yaml                    # config file the sweep starts from (relative to the repo root;
                                            # default: none, the defaults of raymotion/config.py)
    base: {train.refine_steps: 200}         # dotted overrides for every trial
    grid:                                   # dimensions crossed exhaustively (e.g. the annotation fraction)
      train.fraction: [0.05, 0.1, 0.25]
    search:                                 # dimensions Optuna samples (TPE, seeded), one spec per key
      loss.flow_weight: {loguniform: [1.0e-3, 1.0]}
      loss.anchor_schedule: {choice: [constant, linear, cosine, step]}
    tune: {metric: val/pa_mpjpe_mm, mode: min, num_samples: 8, max_concurrent_trials: 1, seed: 0,
           asha: {grace_period: 100, reduction_factor: 2}}

Specs: ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (hi exclusive),
``{choice: [a, b, ...]}``. Keys use the config's dotted names, so ``raymotion config --describe`` lists
what can be swept; a key is in ``grid`` or in ``search``, not both. ``tune.metric`` is one of
``REPORTED_METRICS``. Every configuration the sweep can make (each grid point with every corner of the search
space) is validated against the config, including the refinement's cross-key checks, before Ray starts.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raymotion.config import (MOVED_KEYS, Config, ConfigError, apply_overrides, check_refinement, config_keys,
                              load_config)
from raymotion.eval.evaluate import SCORE_KEYS

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SPEC_KINDS = ("uniform", "loguniform", "randint", "choice")
TUNE_KEYS = {"metric", "mode", "num_samples", "max_concurrent_trials", "seed", "asha", "name"}
ASHA_KEYS = {"grace_period", "reduction_factor", "max_t"}
TOP_KEYS = {"recipe", "base", "grid", "search", "tune"}
REPORTED_METRICS = tuple(f"val/{key}" for key in SCORE_KEYS)
"""The metrics a run reports to Tune (train/worker.py, at every train.eval_every step): ``tune.metric`` is one."""


@dataclass(kw_only=True, slots=True)
class TuneSettings:
    """How a sweep searches: the metric and its direction, samples per grid point, concurrency, ASHA."""

    name: str
    metric: str = "val/pa_mpjpe_mm"
    mode: str = "min"
    num_samples: int = 1
    max_concurrent_trials: int = 1
    seed: int = 0
    asha: dict[str, int] | None = None


@dataclass(kw_only=True, slots=True)
class SweepSpec:
    """A parsed, checked sweep file."""

    path: Path
    recipe: Path | None
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    search: dict[str, dict[str, list[Any]]]
    tune: TuneSettings
    extra: dict[str, Any] = field(default_factory=dict)

    def base_config(self, overrides: dict[str, Any] | None = None) -> Config:
        """The recipe, then ``base``, then ``overrides`` (e.g. a grid point)."""
        return load_config(self.recipe, {**self.base, **(overrides or {})})

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values ([{}] without a grid)."""
        return _product(self.grid, list(self.grid))

    def tuner_points(self, is_outer: Callable[[str], bool]) -> list[tuple[dict[str, Any], dict[str, list]]]:
        """How the grid splits into Tuners: (one Tuner's fixed values, the grid it walks itself).

        Keys for which ``is_outer`` holds (those that change the base model, e.g. train.fraction) get a Tuner per
        combination. The others are walked inside the Tuner as ``tune.grid_search`` (its trials then run
        side by side up to ``max_concurrent_trials``), unless the sweep also has a ``search`` space: Optuna
        does not take grid_search, so then every grid combination gets its own Tuner.
        """
        outer = [k for k in self.grid if is_outer(k) or self.search]
        inner = {k: v for k, v in self.grid.items() if k not in outer}
        return [(point, inner) for point in _product(self.grid, outer)]


def _product(grid: dict[str, list], keys: list[str]) -> list[dict[str, Any]]:
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _fail(path: Path, where: str, problem: str) -> ValueError:
    return ValueError(f"{path}: {where}: {problem}")


def _check_key(path: Path, section: str, key: str) -> None:
    if key in MOVED_KEYS:
        raise _fail(path, f"{section}.{key}", f"the key is now {MOVED_KEYS[key]}; write that instead")
    valid = config_keys(Config)
    if key not in valid:
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else " `raymotion config --describe` lists every key."
        raise _fail(path, f"{section}.{key}", f"unknown config key.{hint}")


def _spec_values(path: Path, key: str, spec: Any) -> list[Any]:
    """The values to validate a spec with (its bounds or choices)."""
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SPEC_KINDS:
        raise _fail(path, f"search.{key}", f"expected one of {{{', '.join(k + ': [...]' for k in SPEC_KINDS)}}}, "
                                            f"got {spec!r}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise _fail(path, f"search.{key}.{kind}", f"expected a list, got {args!r}")
    if kind == "choice":
        return args
    if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args) or not args[0] < args[1]:
        raise _fail(path, f"search.{key}.{kind}", f"expected [low, high] numbers with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise _fail(path, f"search.{key}.{kind}", f"loguniform needs low > 0, got {args[0]!r}")
    return [args[0], args[1] - 1 if kind == "randint" else args[1]]


def load_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; errors name the file, the key and what to write instead."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path} (see tune_configs/ for examples)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise _fail(path, "top level", f"expected a mapping with keys {sorted(TOP_KEYS)}")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise _fail(path, "top level", f"unknown section(s) {sorted(unknown)}; valid: {sorted(TOP_KEYS)}")
    recipe = data.get("recipe")
    recipe_path = (REPO_ROOT / recipe) if recipe else None
    if recipe_path is not None and not recipe_path.is_file():
        raise _fail(path, "recipe", f"{recipe_path} does not exist")
    base = data.get("base") or {}
    grid = data.get("grid") or {}
    search = data.get("search") or {}
    tune = data.get("tune") or {}
    for section, mapping in (("base", base), ("grid", grid), ("search", search), ("tune", tune)):
        if not isinstance(mapping, dict):
            raise _fail(path, section, f"expected a mapping, got {type(mapping).__name__}")
    for key in base:
        _check_key(path, "base", key)
    for key, values in grid.items():
        _check_key(path, "grid", key)
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{key}", f"expected a non-empty list of values, got {values!r}")
    spec_values = {}
    for key, spec in search.items():
        _check_key(path, "search", key)
        spec_values[key] = _spec_values(path, key, spec)
    bad = set(tune) - TUNE_KEYS
    if bad:
        raise _fail(path, "tune", f"unknown key(s) {sorted(bad)}; valid: {sorted(TUNE_KEYS)}")
    asha = tune.get("asha")
    if asha is not None and (not isinstance(asha, dict) or set(asha) - ASHA_KEYS):
        raise _fail(path, "tune.asha", f"expected a mapping with keys from {sorted(ASHA_KEYS)}, got {asha!r}")
    settings = TuneSettings(name=str(tune.get("name", path.stem)),
                            **{k: v for k, v in tune.items() if k != "name"})
    if settings.mode not in ("min", "max"):  # TuneSettings holds the default: checked after it is applied
        raise _fail(path, "tune.mode", f"expected 'min' or 'max', got {settings.mode!r}")
    both = sorted(set(grid) & set(search))
    if both:
        raise _fail(path, "grid and search", f"{', '.join(both)} in both: a key is either walked (grid) or "
                                               "sampled (search); keep it in one")
    if settings.metric not in REPORTED_METRICS:
        close = difflib.get_close_matches(settings.metric, REPORTED_METRICS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise _fail(path, "tune.metric", f"{settings.metric!r} is not reported by the runs; they report: "
                                         f"{', '.join(REPORTED_METRICS)}.{hint}")
    spec = SweepSpec(path=path, recipe=recipe_path, base=base, grid=grid, search=search, tune=settings)
    _check_values(spec, spec_values)
    return spec


def _check_values(spec: SweepSpec, spec_values: dict[str, list[Any]]) -> None:
    """Every configuration the sweep can make must pass the config's validation and the refinement's cross-key
    checks (``config.check_refinement``): each grid point with every corner of the search space (the bounds
    of each range and every choice), before Ray starts. Errors say which section produced the value."""
    path = spec.path
    try:
        cfg = spec.base_config()  # its cross-key checks come with each grid point below
    except ValueError as err:
        raise _fail(path, "recipe and base", _value_problem(err)) from None
    corners = _product(spec_values, list(spec_values))
    for point in spec.grid_points():
        for corner in corners:
            try:
                check_refinement(apply_overrides(cfg, {**point, **corner}))
            except ValueError as err:
                key = getattr(err, "key", None)
                if key in point:
                    where = f"grid.{key}"
                elif key in corner:
                    where = f"search.{key} (a bound or choice)"
                else:  # a cross-key check: the combination is at fault
                    where = f"grid point {point or '(none)'} with search values {corner or '(none)'}"
                raise _fail(path, where, _value_problem(err)) from None


def _value_problem(err: ValueError) -> str:
    """An error's text without ConfigError's advice to use --set, which a sweep file does not take."""
    if isinstance(err, ConfigError):
        return f"{err.key}={err.value!r} is invalid: {err.expected}; fix it in the sweep file"
    return str(err)


def tune_domains(search: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """The ``search`` section as Ray Tune domains (flat dotted keys)."""
    from ray import tune

    make = {"uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(*a), "choice": lambda a: tune.choice(a)}
    return {key: make[kind](args) for key, spec in search.items() for kind, args in spec.items()}

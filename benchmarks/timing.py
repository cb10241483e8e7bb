"""Timing shared by the side-by-side benchmarks (imported by the scripts beside it: run them as
``python benchmarks/<name>.py``, which puts this folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def alternating_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall-clock seconds per call of each function, calling them in turn in each repeat, after one
    warm-up call each: load from other processes on a shared machine then hits every function alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}

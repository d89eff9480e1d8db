"""Timing helper shared by the benchmarks: best-of-N wall time after a warm-up call."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def report(name: str, ours: float, anchor: float, anchor_name: str, target: str) -> None:
    """Print one benchmark line: both times and the speed-up ratio against the anchor."""
    print(
        f"{name}: ours {ours * 1e3:.1f} ms, {anchor_name} {anchor * 1e3:.1f} ms, "
        f"speed-up {anchor / ours:.1f}x (target {target})"
    )

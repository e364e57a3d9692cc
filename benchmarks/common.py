"""Timing helpers shared by the benchmark modules."""

from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int = 3, sync: Callable[[], None] | None = None) -> float:
    """Best wall time (s) of ``repeat`` calls after one warm-up call; ``sync`` waits for a GPU."""
    fn()
    if sync:
        sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def cupy_or_none():
    """The cupy module when a GPU is usable, else None (cupy rows are then skipped)."""
    from sashelpers.core.backend import cupy_usable

    if not cupy_usable():
        return None
    import cupy

    return cupy

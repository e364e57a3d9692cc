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


def module_at_commit(commit: str, path: str, name: str):
    """The module ``path`` (e.g. sashelpers/physics/gisaxs.py) as it was at git ``commit``, imported
    under ``name`` inside its package (relative imports resolve against today's package), or None
    when git or the commit is unavailable (e.g. a shallow clone)."""
    import subprocess
    import sys
    import types
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        src = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True, text=True,
                             check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    package = ".".join(Path(path).with_suffix("").parts[:-1])
    mod = types.ModuleType(f"{package}.{name}")
    mod.__package__ = package
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{path}@{commit[:8]}", "exec"), mod.__dict__)
    return mod

"""Argument checks shared by every layer: each returns the cleaned value or raises ``ValueError``
with a message that names the argument, the value it got and what is allowed.
"""

from __future__ import annotations

import math

import numpy as np


def _unit(unit: str) -> str:
    return f" {unit}" if unit else ""


def integer(name: str, value, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    """An integer in [lo, hi] (bools and non-integral floats refused)."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and lo <= int(value) <= hi
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{name}={value!r} must be an integer in [{lo}, {hi}]")
    return int(value)


def number(name: str, value, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
           hi_open: bool = False, unit: str = "") -> float:
    """A finite real number in the interval from lo to hi (each end closed unless ``*_open``)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    try:
        ok = not isinstance(value, (bool, str)) and math.isfinite(float(value))
        v = float(value) if ok else math.nan
    except (TypeError, ValueError):
        ok, v = False, math.nan
    if ok:
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ValueError(f"{name}={value!r} must be a finite number in {interval}{_unit(unit)}")
    return v


def positive(name: str, value, upper: float = math.inf, *, unit: str = "") -> float:
    """A finite number in (0, upper]."""
    return number(name, value, 0.0, upper, lo_open=True, unit=unit)


def pair(name: str, value, lo: float = -math.inf, hi: float = math.inf, *, unit: str = "") -> tuple[float, float]:
    """A (low, high) pair of finite numbers with lo <= low < high <= hi."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a (low, high) pair of numbers{_unit(unit)}") from None
    if not (math.isfinite(a) and math.isfinite(b) and lo <= a < b <= hi):
        raise ValueError(f"{name}={value!r} must satisfy {lo:g} <= low < high <= {hi:g}{_unit(unit)}")
    return a, b


def one_of(name: str, value, allowed) -> object:
    """``value`` if it is one of ``allowed``."""
    if value not in tuple(allowed):
        raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return value


def array(name: str, value, *, ndim: int | None = None, dtype=np.float64, finite: bool = True,
          min_size: int = 1) -> np.ndarray:
    """``value`` as a numpy array of ``dtype``, with ``ndim`` dimensions (any if None), at least
    ``min_size`` elements, and (with ``finite``) no NaN or inf."""
    a = np.asarray(value, dtype=dtype)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} has shape {a.shape}; expected a {ndim}D array")
    if a.size < min_size:
        raise ValueError(f"{name} has {a.size} values; expected at least {min_size}")
    if finite and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return a


def generator(rng, name: str = "rng") -> np.random.Generator:
    """A numpy Generator: ``rng`` itself, or one seeded by a non-negative integer ``rng``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ValueError(f"{name}={rng!r} must be a numpy Generator or a non-negative integer seed")

"""Measured 1D curves: loading through sasdata's readers, strict validation, units in nm^-1.

sasdata reads ASCII columns, Anton Paar PDH, canSAS XML and NXcanSAS HDF5. Its readers are
forgiving: a row with NaN is dropped, non-monotonic q is sorted, a one-column file yields zero
intensities. Here a file is either read whole and valid or rejected with a ValueError that
says what is wrong, so a half-read curve can never reach an analysis.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

# q unit spellings -> factor to nm^-1
_Q_UNITS = {
    "1/a": 10.0, "a^{-1}": 10.0, "a^-1": 10.0, "1/angstrom": 10.0, "angstrom^-1": 10.0, "å^-1": 10.0,
    "1/nm": 1.0, "nm^{-1}": 1.0, "nm^-1": 1.0, "1/nanometer": 1.0,
}
_TEXT_SUFFIXES = {".txt", ".dat", ".csv", ".abs", ".asc"}
_NUMERIC = re.compile(r"[\s,;]+")


@dataclass
class Curve:
    """A 1D scattering curve with q in nm^-1."""

    q_nm: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray | None = None
    dq_nm: np.ndarray | None = None
    intensity_unit: str = "a.u."
    title: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        validate_curve(self.q_nm, self.intensity, self.sigma, name=self.source or "curve")

    def __len__(self) -> int:
        return len(self.q_nm)


def q_unit_factor(unit: str) -> float:
    """Factor that converts q in ``unit`` to nm^-1."""
    key = unit.strip().lower().replace(" ", "")
    if key not in _Q_UNITS:
        raise ValueError(f"q unit {unit!r} is not understood; known: {', '.join(sorted(_Q_UNITS))}")
    return _Q_UNITS[key]


def validate_curve(q, intensity, sigma=None, *, name: str = "curve", positive_intensity: bool = False) -> None:
    """Raise ValueError unless q is finite, positive and strictly increasing and I (and sigma)
    are finite arrays of the same length (I > 0 too when positive_intensity)."""
    q = np.asarray(q)
    intensity = np.asarray(intensity)
    if q.ndim != 1 or intensity.ndim != 1:
        raise ValueError(f"{name}: q and I must be 1D, got shapes {q.shape} and {intensity.shape}")
    if q.size == 0:
        raise ValueError(f"{name}: no data points")
    if q.size != intensity.size:
        raise ValueError(f"{name}: q has {q.size} points but I has {intensity.size}")
    for label, arr in (("q", q), ("I", intensity)) + ((("sigma", np.asarray(sigma)),) if sigma is not None else ()):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name}: {label} has {bad.size} non-finite value(s) (NaN/inf), first at point {bad[0]}")
    if sigma is not None and np.asarray(sigma).shape != q.shape:
        raise ValueError(f"{name}: sigma has shape {np.asarray(sigma).shape}, q has {q.shape}")
    if np.any(q <= 0):
        i = int(np.flatnonzero(q <= 0)[0])
        raise ValueError(f"{name}: q must be positive, got q={q[i]:g} at point {i}")
    steps = np.diff(q)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0])
        raise ValueError(f"{name}: q must increase strictly, but q[{i + 1}]={q[i + 1]:g} <= q[{i}]={q[i]:g}")
    if positive_intensity and np.any(intensity <= 0):
        i = int(np.flatnonzero(intensity <= 0)[0])
        raise ValueError(f"{name}: I must be positive, got I={intensity[i]:g} at point {i}")


def scan_text_table(path: Path) -> np.ndarray:
    """Parse the numeric block of a column text file strictly (header lines may precede it).

    Returns the table (rows x columns). Raises ValueError for an empty file, a ragged table,
    fewer than 2 or more than 4 columns (q, I, dI, dq), or values that are not finite.
    """
    rows: list[list[float]] = []
    ncol = None
    for lineno, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        tokens = [t for t in _NUMERIC.split(line.strip()) if t]
        if not tokens:
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            if rows:  # text after the data block ends it (footers) — but only if data came first
                break
            continue
        if ncol is None:
            ncol = len(values)
        elif len(values) != ncol:
            raise ValueError(f"{path}: line {lineno} has {len(values)} columns, earlier lines have {ncol}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no numeric data found (empty file?)")
    if not 2 <= ncol <= 4:
        raise ValueError(f"{path}: {ncol} column(s); expected 2 to 4 (q, I, [dI, [dq]])")
    table = np.array(rows)
    bad = np.argwhere(~np.isfinite(table))
    if bad.size:
        raise ValueError(f"{path}: non-finite value (NaN/inf) in data row {bad[0][0] + 1}, column {bad[0][1] + 1}")
    validate_curve(table[:, 0], table[:, 1], name=str(path))
    return table


def _sasdata_load(path: Path):
    from sasdata.dataloader.loader import Loader

    sink = _io.StringIO()
    logging.getLogger("sasdata").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sink):
        try:
            return Loader().load(str(path))
        except Exception as exc:  # sasdata raises a zoo of types; report one
            raise ValueError(f"{path}: sasdata could not read the file: {exc}") from exc


def load_curve(path, *, q_unit: str | None = None, index: int = 0) -> Curve:
    """Load one 1D curve from a file that sasdata can read; q is returned in nm^-1.

    q_unit overrides the unit the file declares. Anton Paar ``.pdh`` files store q in nm^-1,
    although sasdata labels them A^-1, so nm^-1 is the default for that suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    if path.suffix.lower() in _TEXT_SUFFIXES:
        scan_text_table(path)
    datasets = [d for d in _sasdata_load(path) if getattr(d, "x", None) is not None and np.ndim(d.x) == 1]
    if not datasets:
        raise ValueError(f"{path}: holds no 1D curve")
    if not 0 <= index < len(datasets):
        raise ValueError(f"index={index} is out of range: {path} holds {len(datasets)} curve(s)")
    d = datasets[index]
    unit = q_unit or ("1/nm" if path.suffix.lower() == ".pdh" else getattr(d, "x_unit", None) or "1/A")
    factor = q_unit_factor(unit)
    x, y = np.asarray(d.x, float), np.asarray(d.y, float)
    dy = np.asarray(d.dy, float) if getattr(d, "dy", None) is not None and np.size(d.dy) == x.size else None
    dx = np.asarray(d.dx, float) if getattr(d, "dx", None) is not None and np.size(d.dx) == x.size else None
    if dy is not None and not np.any(dy):
        dy = None
    if dx is not None and not np.any(dx):
        dx = None
    meta = {"q_unit_in_file": unit, "n_curves_in_file": len(datasets)}
    intensity_unit = getattr(d, "y_unit", None) or "a.u."
    if path.suffix.lower() == ".pdh":
        intensity_unit = "a.u."  # PDH declares no intensity unit; sasdata's label is a default
    src = getattr(d, "source", None)
    if src is not None and getattr(src, "radiation", None):
        meta["radiation"] = src.radiation
    return Curve(
        q_nm=x * factor,
        intensity=y,
        sigma=dy,
        dq_nm=None if dx is None else dx * factor,
        intensity_unit=intensity_unit,
        title=getattr(d, "title", "") or path.stem,
        source=str(path),
        meta=meta,
    )


def example_path(name: str) -> Path:
    """Path of a measured example file shipped with sasdata (``sasdata/example_data/1d_data``)."""
    folder = resources.files("sasdata") / "example_data" / "1d_data"
    path = Path(str(folder / name))
    if not path.is_file():
        known = sorted(p.name for p in Path(str(folder)).iterdir() if p.is_file())
        raise ValueError(f"name={name!r} is not a sasdata example file; known: {', '.join(known)}")
    return path

"""Measured 1D curves: loading through sasdata's readers, strict validation, q in nm^-1.

sasdata reads column text (ASCII, CSV, NIST/IGOR ``.ABS``), Anton Paar PDH, canSAS XML and
NXcanSAS HDF5. Its readers are forgiving: a row with NaN or with q = 0 is dropped, non-monotonic q
is sorted, a numeric header line can be taken for data, and a text file's intensity is labelled
cm^-1 whatever it holds. Here a file is either read whole and valid or rejected with a ValueError
that names the file and the cause, so a half-read curve can never reach an analysis.

Column text files (``.txt .dat .csv .abs .asc .pdh``) are also scanned here, independently of
sasdata (:func:`find_data_block`): the scan finds the data block, rejects bad rows naming their
line, and sasdata's result must then agree with it row for row.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

# q unit spellings -> factor to nm^-1
_Q_UNITS = {
    "1/a": 10.0, "a^{-1}": 10.0, "a^-1": 10.0, "1/angstrom": 10.0, "angstrom^-1": 10.0, "å^-1": 10.0,
    "1/nm": 1.0, "nm^{-1}": 1.0, "nm^-1": 1.0, "1/nanometer": 1.0,
}
_TEXT_SUFFIXES = {".txt", ".dat", ".csv", ".abs", ".asc", ".pdh"}
# NIST/IGOR .ABS files have 6 columns: q, I, dI, sigma_q, mean_q, shadow factor
_MAX_COLUMNS = {".abs": 6}
_COLUMN_NAMES = {4: "q, I, [dI, [dq]]", 6: "q, I, [dI, [sigma_q, mean_q, shadow factor]]"}
_SEPARATORS = re.compile(r"[\s,;]+")
# a token that was meant as a number or marks a missing one (Fortran 1.0D-3, 1.2.3, n/a, --, ***)
_BAD_NUMBER = re.compile(r"(?i)^(?:n/?a|null|none|-+|\?+|\*+|[-+]?[\d.]+(?:[ed][-+]?[\d.]*)?)$")
# a q unit named in a text header: "q (1/nm)", "nm^-1", "Q (1/A)", "q (Angstrom^-1)", "Å^-1"
# (not "1/A^2", an SLD)
_NM_IN_HEADER = re.compile(r"(?i)1\s*/\s*nm\b(?!\s*\^)|\bnm\s*\^?\s*\{?\s*-\s*1\b|1\s*/\s*nanomet")
_A_IN_HEADER = re.compile(
    r"(?i)1\s*/\s*(?:a|å|ang|angstr[oö]m)\b(?!\s*\^)|(?:\b[aå]|\bang|\bangstr[oö]m)\s*\^\s*\{?\s*-\s*1\b"
    r"|\bå\s*-\s*1\b|\bangstr[oö]m\s*-\s*1\b")

MIN_BLOCK_ROWS = 5
"""A run of this many numeric rows counts as a data block (sasdata's ASCII reader uses 5 too)."""

Q_RANGE_NM = (1e-5, 100.0)
"""Plausible q of small-angle scattering, (lowest, highest) in nm^-1. USANS reaches ~3e-4 nm^-1;
no X-ray q exceeds 4π/λ, 81 nm^-1 for Cu K-alpha, and SAXS/SANS ends far below (WAXS with Cu or
Mo sources up to ~100 nm^-1 = 10 Å^-1). A curve outside is not q in the unit assumed, or not a
scattering curve at all (a DLS correlation function against delay time)."""


@dataclass
class Curve:
    """A 1D scattering curve.

    Attributes
    ----------
    q_nm : ndarray, shape (n,)
        Scattering vector magnitude in nm^-1, finite, positive, strictly increasing.
    intensity : ndarray, shape (n,)
        I(q) in ``intensity_unit``.
    sigma : ndarray or None
        Standard uncertainty of I, same unit, >= 0; None when the file has none.
    dq_nm : ndarray or None
        q resolution (pinhole, as the file states it) in nm^-1; None when the file has none.
        Slit-smeared data carry the slit length in ``meta["slit_length_nm"]`` instead.
    intensity_unit : str
        As declared by the file; ``"a.u."`` when the file declares none.
    title, source : str
        The file's title (or its stem) and path.
    meta : dict
        How the curve was read: ``q_unit_in_file``, ``q_unit_source``, ``n_curves_in_file``,
        ``index``, ``reader`` and, where they apply, ``data_lines``, ``radiation``,
        ``slit_length_nm``, ``slit_width_nm``, ``ignored``.
    """

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
    """Factor that converts q in ``unit`` to nm^-1.

    Parameters
    ----------
    unit : str
        A spelling of Å^-1 or nm^-1 (``"1/A"``, ``"A^{-1}"``, ``"1/nm"``, ...; case and spaces
        ignored).

    Returns
    -------
    float
        10.0 for Å^-1, 1.0 for nm^-1.

    Raises
    ------
    ValueError
        If the unit is not one of the known spellings.
    """
    key = unit.strip().lower().replace(" ", "")
    if key not in _Q_UNITS:
        raise ValueError(f"q unit {unit!r} is not understood; known: {', '.join(sorted(_Q_UNITS))}")
    return _Q_UNITS[key]


def _q_problem(q: np.ndarray, where) -> tuple[int, str] | None:
    """The first point where q (1D, finite) is not positive or does not increase strictly, as
    (index, message), with ``where(i)`` naming a point in the message; None when q is fine."""
    if np.any(q <= 0):
        i = int(np.flatnonzero(q <= 0)[0])
        return i, f"q must be positive, got q={q[i]:g} at {where(i)}"
    steps = np.diff(q)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0]) + 1
        what = "repeats" if steps[i - 1] == 0 else "is below"
        return i, f"q must increase strictly, but q={q[i]:g} at {where(i)} {what} q={q[i - 1]:g} at {where(i - 1)}"
    return None


def validate_curve(q, intensity, sigma=None, *, name: str = "curve", positive_intensity: bool = False) -> None:
    """Check a curve's arrays; raise ValueError naming ``name`` and the first problem.

    Parameters
    ----------
    q : array_like, shape (n,)
        Scattering vector (any one unit); must be finite, positive and strictly increasing.
    intensity : array_like, shape (n,)
        I(q); must be finite (and > 0 when ``positive_intensity``).
    sigma : array_like or None
        Uncertainty of I; when given, finite, >= 0 and of the same shape as q.
    name : str
        Prefix of the error messages (a file name).
    positive_intensity : bool
        Also require I > 0 (for log-intensity models).

    Raises
    ------
    ValueError
        On the first violated condition, with the index of the offending point.
    """
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
    if sigma is not None:
        sigma = np.asarray(sigma)
        if sigma.shape != q.shape:
            raise ValueError(f"{name}: sigma has shape {sigma.shape}, q has {q.shape}")
        if np.any(sigma < 0):
            i = int(np.flatnonzero(sigma < 0)[0])
            raise ValueError(f"{name}: sigma must not be negative, got sigma={sigma[i]:g} at point {i}")
    problem = _q_problem(q, lambda i: f"q[{i}]")
    if problem:
        raise ValueError(f"{name}: {problem[1]}")
    if positive_intensity and np.any(intensity <= 0):
        i = int(np.flatnonzero(intensity <= 0)[0])
        raise ValueError(f"{name}: I must be positive, got I={intensity[i]:g} at point {i}")


@dataclass(frozen=True)
class TextBlock:
    """The data block of a column text file, as found by :func:`find_data_block`.

    Attributes
    ----------
    table : ndarray, shape (n_rows, n_columns)
        The numbers of the block, in the file's units (column 1 is q, column 2 is I).
    line_numbers : ndarray of int, shape (n_rows,)
        The 1-based line number of each row.
    header : list of str
        The non-blank lines before the block (the preamble), stripped.
    """

    table: np.ndarray
    line_numbers: np.ndarray
    header: list

    @property
    def lines(self) -> str:
        """The block's line range, ``"lines a-b"``."""
        return f"lines {self.line_numbers[0]}-{self.line_numbers[-1]}"


@dataclass(frozen=True)
class _Row:
    lineno: int
    text: str
    tokens: list
    values: list | None  # None: not all tokens are numbers


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def find_data_block(text: str, *, name: str = "text", max_columns: int = 4) -> TextBlock:
    """Find and check the data block of a column text file.

    The data block is the longest run of consecutive numeric rows with one column count (blank
    lines do not break a run; ties go to the first run). What precedes it is a preamble: text,
    and numeric lines whose column count differs from the block's (a line with the number of
    points, instrument settings). Text after the block ends it (a footer).

    Parameters
    ----------
    text : str
        The file's contents. Values may be separated by spaces, tabs, commas or semicolons.
    name : str
        Prefix of the error messages (the file name).
    max_columns : int
        Most columns a data row may have (4: q, I, dI, dq; 6 for NIST ``.ABS`` files).

    Returns
    -------
    TextBlock
        The block's numbers (rows x columns), line numbers and preamble.

    Raises
    ------
    ValueError
        Naming ``name`` and the line(s) concerned, when: there is no numeric row; the block has
        fewer than 2 or more than ``max_columns`` columns; a row inside the block has another
        column count (ragged table) or a value that is not a number; another block of at least
        :data:`MIN_BLOCK_ROWS` rows exists; a value is NaN or inf; q is not positive or not
        strictly increasing; an uncertainty (column 3) is negative.
    """
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = [t for t in _SEPARATORS.split(line.strip()) if t]
        if tokens:
            values = [_number(t) for t in tokens]
            rows.append(_Row(lineno, line.strip(), tokens, None if None in values else values))

    runs = []  # (start, stop) into rows: maximal runs of numeric rows with one column count
    i = 0
    while i < len(rows):
        if rows[i].values is None:
            i += 1
            continue
        j = i + 1
        while j < len(rows) and rows[j].values is not None and len(rows[j].values) == len(rows[i].values):
            j += 1
        runs.append((i, j))
        i = j
    if not runs:
        raise ValueError(f"{name}: no numeric data found (empty file?)")
    start, stop = max(runs, key=lambda r: r[1] - r[0])
    ncol = len(rows[start].values)
    span = f"lines {rows[start].lineno}-{rows[stop - 1].lineno}"
    if not 2 <= ncol <= max_columns:
        hint = {1: "; q and I in separate files? combine them first"}.get(ncol, "; 2D data or another kind of table?")
        raise ValueError(f"{name}: the data block ({span}, {stop - start} rows) has {ncol} column(s); "
                         f"expected 2 to {max_columns} ({_COLUMN_NAMES.get(max_columns, 'q, I, ...')}){hint}")

    # the block must not continue with a row of another width (ragged table) ...
    if stop < len(rows) and rows[stop].values is not None:
        row = rows[stop]
        raise ValueError(f"{name}: line {row.lineno} has {len(row.values)} columns, but the data block "
                         f"starting at line {rows[start].lineno} has {ncol} (ragged table)")
    first = start  # first numeric row of the stretch that holds the block
    while first > 0 and rows[first - 1].values is not None:
        first -= 1
    if any(len(rows[k].values) == ncol for k in range(first, start)):
        row = rows[start - 1]
        raise ValueError(f"{name}: line {row.lineno} has {len(row.values)} columns inside the data block "
                         f"(the rows around it, lines {rows[first].lineno}-{rows[stop - 1].lineno}, have {ncol}) "
                         "(ragged table)")
    # ... nor be broken by a row that is data with a bad value
    for k in (start - 1, stop):
        if 0 <= k < len(rows) and rows[k].values is None and len(rows[k].tokens) == ncol \
                and _number(rows[k].tokens[0]) is not None:
            bad = [t for t in rows[k].tokens if _number(t) is None]
            if all(_BAD_NUMBER.match(t) for t in bad):
                raise ValueError(f"{name}: line {rows[k].lineno}: {bad[0]!r} is not a number "
                                 f"(a row of the data block, {span})")
    others = [(a, b) for a, b in runs if (a, b) != (start, stop) and b - a >= MIN_BLOCK_ROWS
              and 2 <= len(rows[a].values) <= max_columns]
    if others:
        listed = ", ".join(f"lines {rows[a].lineno}-{rows[b - 1].lineno} ({b - a} rows x {len(rows[a].values)})"
                           for a, b in others[:3])
        raise ValueError(f"{name}: holds more than one block of numeric rows ({span}, {stop - start} rows x "
                         f"{ncol}; and {listed}); cannot tell which is the curve")

    block = rows[start:stop]
    table = np.array([r.values for r in block], dtype=float)
    line_numbers = np.array([r.lineno for r in block])
    bad = np.argwhere(~np.isfinite(table))
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"{name}: line {line_numbers[r]}, column {c + 1}: non-finite value "
                         f"{block[r].tokens[c]!r} (NaN/inf)")
    problem = _q_problem(table[:, 0], lambda r: f"line {line_numbers[r]}")
    if problem:
        raise ValueError(f"{name}: line {line_numbers[problem[0]]}: {problem[1]}")
    if ncol >= 3 and np.any(table[:, 2] < 0):
        r = int(np.flatnonzero(table[:, 2] < 0)[0])
        raise ValueError(f"{name}: line {line_numbers[r]}: the uncertainty dI (column 3) is negative, "
                         f"{table[r, 2]:g}")
    return TextBlock(table, line_numbers, [r.text for r in rows[:start]])


def scan_text_table(path, *, max_columns: int = 4) -> np.ndarray:
    """Parse the data block of a column text file strictly (see :func:`find_data_block`).

    Parameters
    ----------
    path : str or Path
        The file.
    max_columns : int
        Most columns a data row may have.

    Returns
    -------
    ndarray, shape (n_rows, n_columns)
        The block's numbers in the file's units.

    Raises
    ------
    ValueError
        As :func:`find_data_block`, with the path as the message prefix.
    """
    path = Path(path)
    return find_data_block(path.read_text(errors="replace"), name=str(path), max_columns=max_columns).table


def _header_q_unit(header: list) -> tuple[str, int] | None:
    """The q unit a text preamble names, ``(unit, line index)``; None when it names none.

    Raises ValueError when it names both nm^-1 and Å^-1.
    """
    nm = [k for k, line in enumerate(header) if _NM_IN_HEADER.search(line)]
    angstrom = [k for k, line in enumerate(header) if _A_IN_HEADER.search(line)]
    if nm and angstrom:
        raise ValueError(f"the header names q in nm^-1 ({header[nm[0]]!r}) and in Å^-1 "
                         f"({header[angstrom[0]]!r}); pass q_unit")
    found = nm or angstrom
    if not found:
        return None
    about_q = [k for k in found if re.search(r"(?i)\bq\b", header[k])]  # prefer "Q (1/A)" to prose
    return ("1/nm" if nm else "1/A"), (about_q or found)[0]


def _sasdata_read(path: Path) -> tuple[list, list]:
    """sasdata's data sets for ``path`` that hold data, and the error messages of its readers."""
    from sasdata.dataloader.loader import Loader

    logger = logging.getLogger("sasdata")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its readers log every failed attempt, with the file's bytes
    try:
        with contextlib.redirect_stdout(_io.StringIO()):
            loaded = Loader().load(str(path))
    except Exception as exc:  # noqa: BLE001 - sasdata raises a zoo of types; the caller reports it
        return [], [f"{type(exc).__name__}: {exc}"]
    finally:
        logger.setLevel(level)
    usable = [d for d in loaded if _is_curve(d) or _is_image(d)]
    errors = [str(e) for d in loaded if not (_is_curve(d) or _is_image(d)) for e in (getattr(d, "errors", None) or [])]
    return usable, errors


def _is_curve(d) -> bool:
    x = getattr(d, "x", None)
    return x is not None and not hasattr(d, "qx_data") and np.ndim(x) == 1 and np.size(x) > 0


def _is_image(d) -> bool:
    return hasattr(d, "qx_data") and np.size(getattr(d, "data", None)) > 1


def _summary(errors: list, limit: int = 3) -> str:
    unique = list(dict.fromkeys(" ".join(e.split()) for e in errors if e))
    text = "; ".join(e if len(e) < 200 else e[:197] + "..." for e in unique[:limit])
    return text or "no reader recognised the format"


def _cansas_problem(path: Path) -> str | None:
    """The first schema violation of a canSAS XML file (sasdata refuses invalid files), or None."""
    from lxml import etree
    from sasdata.dataloader import readers

    try:
        doc = etree.parse(str(path))
        version = doc.getroot().get("version", "1.1").replace(".", "_")
        xsd = Path(readers.__file__).parent / "schema" / f"cansas1d_v{version}.xsd"
        schema = etree.XMLSchema(etree.parse(str(xsd)))
        if schema.validate(doc):
            return None
    except (OSError, etree.LxmlError):  # not XML, or no schema for its version: sasdata's errors say more
        return None
    errors = list(schema.error_log)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"not valid canSAS XML: line {errors[0].line}: {errors[0].message}{more}"


def _rows_agree(label: str, block: TextBlock, x: np.ndarray, y: np.ndarray) -> float:
    """Check that sasdata read the rows of ``block``; return the ratio of its q to the file's."""
    table = block.table
    if x.size != table.shape[0]:
        raise ValueError(f"{label}: sasdata read {x.size} points but the data block ({block.lines}) holds "
                         f"{table.shape[0]}; the file's layout is ambiguous")
    if not np.allclose(y, table[:, 1], rtol=1e-9, atol=0):
        i = int(np.flatnonzero(~np.isclose(y, table[:, 1], rtol=1e-9, atol=0))[0])
        raise ValueError(f"{label}: sasdata's I differs from column 2 of line {block.line_numbers[i]} "
                         f"({y[i]:g} vs {table[i, 1]:g}); the file's layout is ambiguous")
    for column in (0, 4) if table.shape[1] == 6 else (0,):  # .ABS: sasdata may take q from mean_q
        ratio = x / table[:, column]
        if np.allclose(ratio, ratio[0], rtol=1e-9, atol=0):
            return float(ratio[0])
    raise ValueError(f"{label}: sasdata's q is not column 1 of the data block ({block.lines})")


def load_curve(path, *, q_unit: str | None = None, index: int = 0) -> Curve:
    """Load one 1D curve from a file that sasdata can read; q is returned in nm^-1.

    Parameters
    ----------
    path : str or Path
        A column text file (``.txt .dat .csv .abs .asc``), Anton Paar ``.pdh``, canSAS XML or
        NXcanSAS HDF5 (``.h5 .hdf .nxs``).
    q_unit : str, optional
        Unit of the q values as sasdata returns them (for column text: the numbers in the
        file), e.g. ``"1/nm"``; overrides the unit the file declares. Without it the unit is:
        the one the file declares (canSAS XML, NXcanSAS); for column text, a q unit named in the
        header (``q (1/nm)``, ``Q (1/A)``, ``Angstrom^-1`` ...) or else Å^-1, sasdata's default;
        for Anton Paar ``.pdh``, nm^-1: the SAXSess software writes q in nm^-1 (the file's
        metadata says ``n_m^-1``), although sasdata's fallback reader labels it Å^-1.
    index : int
        Which curve of a file that holds several (NXcanSAS entries, canSAS SASentry/SASdata);
        0 is the first.

    Returns
    -------
    Curve
        q in nm^-1, I in the file's intensity unit (``"a.u."`` when the file declares none: a
        column text or PDH file's cm^-1 label is sasdata's default, not the file's), sigma, and
        the pinhole resolution dq in nm^-1 where the file has them. ``meta`` records the unit
        read, the reader, the data lines of a text file, a slit length (``slit_length_nm``,
        slit-smeared USANS) and columns that were ignored.

    Raises
    ------
    ValueError
        Naming the file and the cause: not a file, empty; 2D data (I(qx, qy)), SESANS data, or
        no 1D curve that a sasdata reader can read (with the readers' errors, or the first
        schema violation of a canSAS XML file); ``index`` out of range (with the number of
        curves); a text file whose data block is bad (see :func:`find_data_block`, with the
        line) or that sasdata reads differently; NaN/inf, q not positive or not strictly
        increasing, a negative uncertainty; an unknown q unit; q outside :data:`Q_RANGE_NM`
        (wrong unit, or not a scattering curve).

    Warns
    -----
    UserWarning
        When the 4th column of a text file (or a file's dq) is no q resolution (negative or
        above 2 q): dq is dropped, and for text also dI, whose column then follows no known
        convention either; ``meta["ignored"]`` says so.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    loaded, errors = _sasdata_read(path)
    curves = [d for d in loaded if _is_curve(d)]
    if not curves and any(_is_image(d) for d in loaded):
        n_pixels = max(np.size(d.data) for d in loaded if _is_image(d))
        raise ValueError(f"{path}: holds 2D data (I(qx, qy), {n_pixels} pixels), not a 1D curve; "
                         "reduce it to I(q) first")
    block = None
    if suffix in _TEXT_SUFFIXES:
        block = find_data_block(path.read_text(errors="replace"), name=str(path),
                                max_columns=_MAX_COLUMNS.get(suffix, 4))
    if not curves:
        problem = _cansas_problem(path) if suffix == ".xml" else None
        head = path.read_bytes()[:4096]
        if problem is None and sum(b < 32 and b not in b"\t\n\r\f\v" for b in head) > 0.05 * len(head):
            problem = f"a binary file that none of sasdata's readers recognises ({_summary(errors)})"
        raise ValueError(f"{path}: no 1D curve that sasdata can read: {problem or _summary(errors)}")
    n = len(curves)
    if not 0 <= index < n:
        raise ValueError(f"{path}: index={index} is out of range: the file holds {n} 1D curve(s) "
                         f"(index 0 to {n - 1})")
    d = curves[index]
    label = str(path) if n == 1 else f"{path} [curve index {index} of {n}]"
    if getattr(d, "isSesans", False):
        raise ValueError(f"{label}: holds SESANS data (polarisation against spin-echo length in "
                         f"{getattr(d, 'x_unit', '?')}), not an I(q) curve")

    x, y = np.asarray(d.x, float), np.asarray(d.y, float)

    def column(name):
        arr = getattr(d, name, None)
        if arr is None or np.size(arr) != x.size or not np.any(arr):
            return None
        return np.asarray(arr, float)

    dy, dx, dxl, dxw = column("dy"), column("dx"), column("dxl"), column("dxw")
    reader = (getattr(d, "meta_data", None) or {}).get("loader")
    meta = {"n_curves_in_file": n, "index": index, "reader": reader}

    unit, source = getattr(d, "x_unit", None) or "1/A", "file"
    if block is not None:
        meta["data_lines"] = (int(block.line_numbers[0]), int(block.line_numbers[-1]))
        ratio = _rows_agree(label, block, x, y)
        if np.isclose(ratio, 1.0, rtol=1e-9):  # sasdata's numbers are the file's: its label is a default
            if suffix == ".pdh":
                unit, source = "1/nm", "PDH convention"
            else:
                try:
                    declared = _header_q_unit(block.header)
                except ValueError as exc:
                    if q_unit is None:
                        raise ValueError(f"{label}: {exc}") from None
                    declared = None
                if declared:
                    unit, source = declared[0], f"header: {block.header[declared[1]]!r}"
                else:
                    unit, source = "1/A", "default (none declared)"
    if q_unit is not None:
        unit, source = q_unit, "argument"
    try:
        factor = q_unit_factor(unit)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    meta.update(q_unit_in_file=unit, q_unit_source=source)

    q_nm = x * factor
    validate_curve(q_nm, y, name=label)
    lo, hi = Q_RANGE_NM
    if q_nm[0] < lo or q_nm[-1] > hi:
        raise ValueError(f"{label}: q spans {q_nm[0]:.3g} to {q_nm[-1]:.3g} nm^-1 (read as {unit}, "
                         f"{source}), outside the {lo:g} to {hi:g} nm^-1 of small-angle scattering: "
                         "the first column is not q in that unit, or the file holds no scattering curve")
    if dx is not None and (np.any(dx < 0) or np.any(dx > 2 * x)):
        worst = float(np.max(np.abs(dx) / x))
        if block is not None:
            meta["ignored"] = (f"columns 3-4 (read as dI, dq): column 4 reaches {worst:.3g} q, which is no "
                               "q resolution, so the columns follow no known convention")
            dy = None
        else:
            meta["ignored"] = f"dq: it reaches {worst:.3g} q, which is no q resolution"
        dx = None
    if dy is not None:
        validate_curve(q_nm, y, dy, name=label)
    if dxl is not None:
        meta["slit_length_nm"] = dxl * factor
    if dxw is not None:
        meta["slit_width_nm"] = dxw * factor

    intensity_unit = getattr(d, "y_unit", None) or "a.u."
    if block is not None and reader != "IGOR 1D":  # the NIST .ABS format defines I in 1/cm
        intensity_unit = "a.u."  # sasdata's ASCII reader labels every text file cm^-1
    src = getattr(d, "source", None)
    if src is not None and getattr(src, "radiation", None):
        meta["radiation"] = src.radiation
    if "ignored" in meta:
        warnings.warn(f"{label}: ignored {meta['ignored']}", UserWarning, stacklevel=2)
    return Curve(
        q_nm=q_nm,
        intensity=y,
        sigma=dy,
        dq_nm=None if dx is None else dx * factor,
        intensity_unit=intensity_unit,
        title=getattr(d, "title", "") or path.stem,
        source=str(path),
        meta=meta,
    )


def _example_root() -> Path:
    return Path(str(resources.files("sasdata") / "example_data"))


def example_path(name: str) -> Path:
    """Path of an example file shipped with sasdata.

    Parameters
    ----------
    name : str
        A file name in ``sasdata/example_data/1d_data`` (``"Anton-Paar.pdh"``), or a path
        relative to ``sasdata/example_data`` (``"sesans_data/sphere_isis.ses"``).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If there is no such file (listing the names in ``1d_data``).
    """
    root = _example_root()
    path = root / name if "/" in name else root / "1d_data" / name
    if not path.is_file():
        known = sorted(p.name for p in (root / "1d_data").iterdir() if p.is_file())
        raise ValueError(f"name={name!r} is not a sasdata example file; known: {', '.join(known)}")
    return path


def example_files() -> list[Path]:
    """Every data file shipped in ``sasdata/example_data`` (all folders), sorted.

    Returns
    -------
    list of Path
        Without the folder's README, Python files and documentation pages.
    """
    return sorted(p for p in _example_root().rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".py", ".pyc", ".rst"}
                  and not p.name.lower().startswith("readme"))

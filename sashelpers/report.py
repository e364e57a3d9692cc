"""Results records and the scorecard.

Every notebook ends with ``record(study, metrics, paper=...)``, which writes
``_build/results/<study>.json`` (or under ``SASHELPERS_RESULTS``): the profile, the metrics,
the paper's values, timings, hardware, package versions and the date. ``make book`` renders
the scorecard page from these files, so every number on it comes from a run.

Runs at a profile that neither CI nor a laptop repeats (``paper``) are archived in git under
``book/records/<study>@<profile>.json`` with ``python -m sashelpers.report archive <study>``, so
a notebook run at ``standard`` can show them next to its own numbers (``archived``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from . import backend, profiles
from .datasets import repo_root

SCORECARD_MARKER = "<!-- SCORECARD -->"
_PACKAGES = ("sashelpers", "numpy", "scipy", "torch", "sasmodels", "sasdata", "FrEIA", "xgboost",
             "scikit-learn", "cupy-cuda12x")


def results_dir() -> Path:
    """``SASHELPERS_RESULTS`` or ``_build/results`` in the book's root."""
    return Path(os.environ.get("SASHELPERS_RESULTS", repo_root() / "_build" / "results"))


def versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    """Machine, CPU count and compute devices."""
    info = {"machine": platform.machine(), "system": platform.system(), "node_cpus": os.cpu_count()}
    try:
        info.update(backend.describe())
    except Exception as exc:  # a broken optional backend must not lose a result
        info["backend_error"] = str(exc)
    return info


@contextlib.contextmanager
def timer(timings: dict, key: str):
    """Add the wall time (s) of the with-block to ``timings[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def record(study: str, metrics: dict, *, paper: dict | None = None, timings: dict | None = None,
           profile: str | None = None, notes: str = "") -> Path:
    """Write the results record of ``study`` and return its path."""
    if not study or "/" in study:
        raise ValueError(f"study={study!r} must be a notebook stem such as '00_scattering_primer'")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError("metrics must be a non-empty dict of measured values")
    rec = {
        "study": study,
        "profile": profiles.current_profile(profile),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": _jsonable(metrics),
        "paper": _jsonable(paper or {}),
        "timings_s": _jsonable(timings or {}),
        "hardware": hardware(),
        "versions": versions(),
        "command": " ".join(sys.argv[:1]),
        "notes": notes,
    }
    out = results_dir() / f"{study}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=False))
    os.replace(tmp, out)
    return out


def archive_dir() -> Path:
    """``book/records``: records of runs at profiles CI does not repeat, kept in git."""
    return repo_root() / "book" / "records"


def archive(study: str, results: Path | None = None, dest: Path | None = None) -> Path:
    """Copy the current record of ``study`` to ``<dest or archive_dir()>/<study>@<profile>.json``."""
    src = (Path(results) if results is not None else results_dir()) / f"{study}.json"
    if not src.exists():
        raise FileNotFoundError(f"no record {src}: run the notebook first")
    rec = json.loads(src.read_text())
    out = Path(dest or archive_dir()) / f"{study}@{rec['profile']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    return out


def archived(study: str, profile: str, folder: Path | None = None) -> dict | None:
    """The archived record of ``study`` at ``profile``, or None if there is none."""
    path = Path(folder or archive_dir()) / f"{study}@{profiles.current_profile(profile)}.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_records(folder: Path | None = None) -> list[dict]:
    """All results records in ``folder`` (default: results_dir()), sorted by study."""
    folder = Path(folder) if folder is not None else results_dir()
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def scorecard_table(records: list[dict]) -> str:
    """Markdown: per study, a line saying how it ran and a table of every recorded number, the
    paper's value next to this run's."""
    if not records:
        return "_No results recorded yet: run `make book` to execute the notebooks._\n"
    out = []
    for rec in records:
        metrics, paper = flatten(rec["metrics"]), flatten(rec.get("paper", {}))
        hw = rec.get("hardware", {})
        device = hw.get("gpu") or f"{hw.get('node_cpus', '?')} CPU cores"
        title = f"{rec['study']} (archived `{rec['profile']}` run)" if rec.get("archived") else rec["study"]
        out += [f"## {title}", "",
                f"Profile `{rec['profile']}`, {device}, {rec['date'][:10]}.", "",
                "| quantity | paper (or known answer) | this run |", "| --- | --- | --- |"]
        for key in list(metrics) + [k for k in paper if k not in metrics]:
            out.append(f"| `{key}` | {_fmt(paper.get(key))} | {_fmt(metrics.get(key))} |")
        out.append("")
    return "\n".join(out)


def render_scorecard(page: Path, out: Path, results: Path | None = None, archive: Path | None = None) -> Path:
    """Copy the scorecard page template to ``out`` with its marker replaced by the table: the
    records in ``results``, then the archived ones (``archive_dir()``) of other profiles."""
    text = Path(page).read_text()
    if SCORECARD_MARKER not in text:
        raise ValueError(f"{page} has no {SCORECARD_MARKER} line to replace")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = load_records(results)
    current = {(r["study"], r["profile"]) for r in records}
    folder = Path(archive) if archive is not None else archive_dir()
    for rec in load_records(folder) if folder.exists() else []:
        if (rec["study"], rec["profile"]) not in current:
            records.append({**rec, "archived": True})
    records.sort(key=lambda r: (r["study"], bool(r.get("archived"))))
    out.write_text(text.replace(SCORECARD_MARKER, scorecard_table(records)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sashelpers.report", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scorecard", help="render the scorecard page from results records")
    sc.add_argument("--page", type=Path, required=True, help="template page holding the marker")
    sc.add_argument("--out", type=Path, required=True, help="rendered page to write")
    sc.add_argument("--results", type=Path, default=None, help="folder of results records")
    ar = sub.add_parser("archive", help="copy a study's current record to book/records/<study>@<profile>.json")
    ar.add_argument("study", help="notebook stem, e.g. 01_inn_analytic_scatterers")
    ar.add_argument("--results", type=Path, default=None, help="folder of results records")
    args = parser.parse_args(argv)
    if args.cmd == "archive":
        print(f"archived -> {archive(args.study, args.results)}")
        return 0
    out = render_scorecard(args.page, args.out, args.results)
    print(f"scorecard: {len(load_records(args.results))} record(s) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

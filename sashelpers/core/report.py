"""Results records, the "paper vs this run" table and the scorecard.

Each study module declares its ``HEADLINES``: a tuple of ``Headline`` (metric key, label, unit,
goal, the paper's value and where in the paper it comes from). Every notebook ends with
``record(study, metrics, headlines=...)``, which writes ``_build/results/<study>.json`` (or under
``SASHELPERS_RESULTS``): the profile, the metrics, the headlines, timings, hardware, package
versions, the git commit, a command that repeats the run, and the date. ``paper_vs_run(record)``
renders the notebook's table from a record, and ``make book`` renders the scorecard page from
the same records with the same function, so every number on it comes from a run.

Runs at a profile that neither CI nor a laptop repeats (``paper``) are archived in git under
``book/records/<study>@<profile>.json`` with ``python -m sashelpers.core.report archive <study>``, so
a notebook run at ``standard`` can show them next to its own numbers (``archived``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
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


@dataclasses.dataclass(frozen=True)
class Headline:
    """One headline number of a study: how to find it in the metrics and what to hold it against.

    Parameters
    ----------
    key : str
        Path of the value in the metrics dict, nested keys joined by dots
        (``"mae.sphere.radius_nm"``).
    label : str
        What a reader sees, e.g. "sphere radius MAE, test set".
    unit : str
        Unit of the shown value ("%", "nm", "" for a plain number).
    scale : float
        Shown value = metric value * scale (100 for a fraction shown in %).
    goal : tuple, optional
        (">=", x), ("<=", x) or ("in", lo, hi), in the metric's own units (before ``scale``).
    paper : float or (float, float), optional
        The paper's value, in the metric's own units (a pair is a mean and a standard
        deviation); None where the paper gives none.
    source : str
        Where the paper's value comes from (table or figure), or why there is none.
    """

    key: str
    label: str
    unit: str = ""
    scale: float = 1.0
    goal: tuple | None = None
    paper: float | tuple | None = None
    source: str = ""

    def __post_init__(self):
        if not self.key or not self.label:
            raise ValueError(f"a Headline needs a key and a label; got key={self.key!r}, label={self.label!r}")
        g = self.goal
        ok = g is None or (isinstance(g, (tuple, list)) and (
            (len(g) == 2 and g[0] in (">=", "<=")) or (len(g) == 3 and g[0] == "in" and g[1] <= g[2])))
        if not ok:
            raise ValueError(f"goal={g!r} must be ('>=', x), ('<=', x) or ('in', lo, hi)")

    def shown(self, value) -> str:
        """``value`` (metric units) as shown: scaled, 4 significant digits, with the unit."""
        if value is None:
            return "—"
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)):  # (mean, sd)
            return " ± ".join(self.shown(v) for v in value)
        v = float(value) * self.scale
        if not math.isfinite(v):
            return str(v)
        unit = "" if not self.unit else (self.unit if self.unit == "%" else " " + self.unit)
        return f"{v:.4g}{unit}"

    def goal_text(self) -> str:
        if self.goal is None:
            return "—"
        if self.goal[0] == "in":
            return f"{self.shown(self.goal[1])} – {self.shown(self.goal[2])}"
        return f"{'≥' if self.goal[0] == '>=' else '≤'} {self.shown(self.goal[1])}"

    def met(self, value) -> bool | None:
        """Whether ``value`` meets the goal (None: no goal or no value)."""
        if isinstance(value, (list, tuple)):  # (mean, sd): the mean is held against the goal
            value = value[0] if value else None
        if self.goal is None or value is None or isinstance(value, str):
            return None
        v = float(value)
        if self.goal[0] == ">=":
            return v >= self.goal[1]
        if self.goal[0] == "<=":
            return v <= self.goal[1]
        return self.goal[1] <= v <= self.goal[2]


def _check_headlines(headlines) -> list[Headline]:
    out = []
    for h in headlines or ():
        out.append(h if isinstance(h, Headline) else Headline(**h))
    keys = [h.key for h in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"headline keys must be unique; got {keys}")
    return out


def git_commit() -> str | None:
    """The repository's commit (with ``-dirty`` when the tree has changes), or None outside git."""
    try:
        root = repo_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def repeat_command(study: str, profile: str) -> str:
    """The command that repeats a notebook's run at ``profile`` from the repository root."""
    return (f"SASHELPERS_PROFILE={profile} .venv/bin/papermill notebooks/{study}.ipynb "
            f"_build/{study}.{profile}.ipynb -p PROFILE {profile} --cwd notebooks")


def record(study: str, metrics: dict, *, headlines=(), paper: dict | None = None, timings: dict | None = None,
           profile: str | None = None, notes: str = "") -> Path:
    """Write the results record of ``study`` and return its path.

    Parameters
    ----------
    study : str
        The notebook's stem, e.g. ``"01_inn_analytic_scatterers"``.
    metrics : dict
        The measured values (nested dicts allowed); ``headlines`` point into it.
    headlines : sequence of Headline
        The study's headline numbers (``sashelpers.studies.<study>.HEADLINES``); every key must
        be found in ``metrics``.
    paper : dict, optional
        Further reference values (known answers) beyond the headlines, keyed like ``metrics``.
    timings : dict, optional
        Wall times in seconds.
    profile : str, optional
        Default: the current profile.
    notes : str
        Anything a reader of the record needs to know about the run.
    """
    if not study or "/" in study:
        raise ValueError(f"study={study!r} must be a notebook stem such as '00_scattering_primer'")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError("metrics must be a non-empty dict of measured values")
    heads = _check_headlines(headlines)
    flat = flatten(_jsonable(metrics))
    missing = [h.key for h in heads if h.key not in flat]
    if missing:
        raise ValueError(f"headline key(s) {missing} not found in the metrics; metrics have {sorted(flat)}")
    profile = profiles.current_profile(profile)
    rec = {
        "study": study,
        "profile": profile,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": _jsonable(metrics),
        "headlines": [_jsonable(dataclasses.asdict(h)) for h in heads],
        "paper": _jsonable(paper or {}),
        "timings_s": _jsonable(timings or {}),
        "hardware": hardware(),
        "versions": versions(),
        "git_commit": git_commit(),
        "command": repeat_command(study, profile),
        "notes": notes,
    }
    out = results_dir() / f"{study}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=False))
    os.replace(tmp, out)
    return out


def _load(rec) -> dict:
    return json.loads(Path(rec).read_text()) if isinstance(rec, (str, Path)) else rec


def _device(rec: dict) -> str:
    hw = rec.get("hardware", {})
    return hw.get("gpu") or f"{hw.get('node_cpus', '?')} CPU cores"


_MARK = {True: " ✓", False: " ✗", None: ""}  # goal met, missed, no goal or no value


def paper_vs_run(rec, archived_run=None) -> str:
    """Markdown: the "paper vs this run" table of a results record (a path or the loaded dict).

    ``archived_run``: the record whose values fill the last column; default (None) the archived
    ``paper``-profile record of the study, if any; ``{}`` for none.

    One row per headline: label, unit, goal, the paper's value and source, this run's value and
    whether it meets the goal, and, when the record's profile is not ``paper`` and an archived
    ``paper``-profile record of the study exists (``archived``), that run's value. Records
    without headlines (older ones) get a plain table of every metric.
    """
    rec = _load(rec)
    if archived_run is None and rec.get("profile") != "paper" and not rec.get("archived"):
        archived_run = archived(rec["study"], "paper")
    archived_run = archived_run or None
    heads = _check_headlines(rec.get("headlines"))
    metrics = flatten(rec["metrics"])
    if not heads:
        paper = flatten(rec.get("paper", {}))
        rows = ["| quantity | paper (or known answer) | this run |", "| --- | --- | --- |"]
        rows += [f"| `{k}` | {_fmt(paper.get(k))} | {_fmt(metrics.get(k))} |"
                 for k in list(metrics) + [k for k in paper if k not in metrics]]
        return "\n".join(rows) + "\n"
    arch = flatten(archived_run["metrics"]) if archived_run else None
    head = "| quantity | goal | paper | this run |" + (" archived `paper` run |" if arch is not None else "")
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for h in heads:
        value = metrics.get(h.key)
        paper = h.shown(h.paper) + (f" ({h.source})" if h.source else "")
        row = f"| {h.label} | {h.goal_text()} | {paper} | {h.shown(value)}{_MARK[h.met(value)]} |"
        if arch is not None:
            a = arch.get(h.key)
            row += f" {h.shown(a)}{_MARK[h.met(a)]} |"
        rows.append(row)
    lines = ["\n".join(rows), "",
             f"This run: profile `{rec['profile']}`, {_device(rec)}, {rec['date'][:10]}"
             + (f", commit `{rec['git_commit'][:12]}`" if rec.get("git_commit") else "") + "."]
    if archived_run:
        lines.append(f"Archived `paper` run: {archived_run['date'][:10]}, {_device(archived_run)} "
                     f"(`book/records/{rec['study']}@paper.json`).")
    missed = [h.label for h in heads if h.met(metrics.get(h.key)) is False]
    lines.append(f"Goals missed in this run: {'; '.join(missed) if missed else 'none'}.")
    return "\n".join(lines) + "\n"


def experiment_path(study: str, name: str, profile: str) -> Path:
    """Where a study's archived experiment ``name`` at ``profile`` is kept (in git):
    book/records/experiments/<NN>_<name>@<profile>.json, NN the study's number."""
    return repo_root() / "book" / "records" / "experiments" / f"{study[:2]}_{name}@{profile}.json"


def load_experiment(study: str, name: str, profile: str) -> dict | None:
    """The archived result of a study's experiment at ``profile`` (see ``experiment_path``), or None."""
    path = experiment_path(study, name, profile)
    return json.loads(path.read_text()) if path.exists() else None


def experiment_results(study: str, names, profile: str) -> dict:
    """{name: the archived experiment's "results", or None when it was not run} for ``names`` of
    ``study`` at ``profile`` (``load_experiment``)."""
    out = {}
    for name in names:
        rec = load_experiment(study, name, profile)
        out[name] = None if rec is None else rec["results"]
    return out


def write_experiment(study: str, name: str, profile: str, record: dict, out: Path | None = None) -> Path:
    """Write an experiment's record (with hardware and git commit added) as JSON; return the path."""
    record = {"experiment": f"{study[:2]} {name}", "profile": profile, "hardware": hardware(),
              "git_commit": git_commit(), **record}
    path = Path(out) if out else experiment_path(study, name, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(record), indent=1) + "\n")
    return path


def experiment_cli(study: str, module: str, names, run, argv=None, *, doc: str = "", options=()) -> int:
    """The command line of a study's archived experiments, ``python -m <module> NAME [--profile P]
    [options]``: ``run(name, profile, **options)``, then its record written with
    ``write_experiment`` (the command and the results); prints the record's path.

    Parameters
    ----------
    study : str
        The study's notebook stem (``STUDY``).
    module : str
        The module run with ``python -m`` (for the record's command line).
    names : sequence of str
        The experiments ``run`` knows.
    run : callable
        ``run(name, profile, **options) -> dict`` of results.
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).
    doc : str
        The command's description.
    options : sequence of (flag, dict)
        Extra ``argparse`` options, passed to ``run`` by their destination names.

    Returns
    -------
    int
        0, the exit status.
    """
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("what", choices=tuple(names))
    ap.add_argument("--profile", default="standard")
    for flag, kwargs in options:
        ap.add_argument(flag, **kwargs)
    args = vars(ap.parse_args(argv))
    what, profile = args.pop("what"), args.pop("profile")
    command = f"python -m {module} " + " ".join(argv if argv is not None else [])
    path = write_experiment(study, what, profile, {"command": command.strip(), "results": run(what, profile, **args)})
    print(path)
    return 0


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


def scorecard_table(records: list[dict], archived_runs: dict | None = None) -> str:
    """Markdown: per study, a line saying how it ran and its ``paper_vs_run`` table;
    ``archived_runs`` maps a study to its archived ``paper``-profile record (an extra column)."""
    if not records:
        return "_No results recorded yet: run `make book` to execute the notebooks._\n"
    archived_runs = archived_runs or {}
    out = []
    for rec in records:
        title = f"{rec['study']} (archived `{rec['profile']}` run)" if rec.get("archived") else rec["study"]
        arch = archived_runs.get(rec["study"]) if rec["profile"] != "paper" and not rec.get("archived") else None
        out += [f"## {title}", "", f"Profile `{rec['profile']}`, {_device(rec)}, {rec['date'][:10]}.", "",
                paper_vs_run(rec, arch or {}), ""]
    return "\n".join(out)


def render_scorecard(page: Path, out: Path, results: Path | None = None, archive: Path | None = None) -> Path:
    """Copy the scorecard page template to ``out`` with its marker replaced by the table: the
    records in ``results``, each with the archived ``paper`` run of its study beside it
    (``archive``, default ``archive_dir()``), and archived runs of studies with no current record."""
    text = Path(page).read_text()
    if SCORECARD_MARKER not in text:
        raise ValueError(f"{page} has no {SCORECARD_MARKER} line to replace")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = load_records(results)
    current = {r["study"] for r in records}
    folder = Path(archive) if archive is not None else archive_dir()
    saved = load_records(folder) if folder.exists() else []
    paper_runs = {r["study"]: r for r in saved if r["profile"] == "paper"}
    records += [{**r, "archived": True} for r in saved if r["study"] not in current]
    records.sort(key=lambda r: (r["study"], r["profile"]))
    out.write_text(text.replace(SCORECARD_MARKER, scorecard_table(records, paper_runs)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sashelpers.core.report", description=__doc__)
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

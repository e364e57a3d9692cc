"""`make bench`: one table of kernel throughput, numpy vs cupy (when a GPU is usable) vs a peer.

Each benchmarks/bench_*.py module exposes rows() -> list of dicts with keys kernel, size,
numpy_s, cupy_s (None without a GPU), peer, peer_s (None where no peer runs). The speed-up
columns are ratios measured in this run: peer time / our time.

    python benchmarks/run.py [--only saxs,grf] [--out results.md]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _fmt_s(x):
    return "—" if x is None else (f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s")


def _ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.1f}×"


def _dev(x):
    return "—" if x is None else f"{x:.1e}"


def table(rows: list[dict]) -> str:
    lines = ["| kernel | size | numpy | cupy | peer | peer time | peer / numpy | numpy / cupy | max rel. dev. vs peer |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['size']} | {_fmt_s(r['numpy_s'])} | {_fmt_s(r.get('cupy_s'))} "
                     f"| {r.get('peer') or '—'} | {_fmt_s(r.get('peer_s'))} "
                     f"| {_ratio(r.get('peer_s'), r['numpy_s'])} | {_ratio(r['numpy_s'], r.get('cupy_s'))} "
                     f"| {_dev(r.get('max_rel_dev_vs_peer'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated module names without bench_ (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    names.sort(key=lambda s: s != "bench_saxs")  # the FFT SAXS kernel is the first row
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only.split(",")]
    rows = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.extend(importlib.import_module(name).rows())
    from sashelpers.core.backend import describe

    header = (f"Measured {datetime.date.today()} on {platform.machine()}, {describe().get('cpu_count')} CPU cores"
              f"{', GPU ' + describe()['gpu'] if 'gpu' in describe() else ', no GPU'}.\n\n")
    text = header + table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

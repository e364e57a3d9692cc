"""Study-2 dataset generation: chunks per second on a 2-worker Dask LocalCluster vs the local pool.

ours : core.datasets.generate(executor="dask") on a LocalCluster of 2 processes x 1 thread, once
       started by the call itself (what SASHELPERS_EXECUTOR=dask does on a laptop) and once on a
       cluster that is already running (client=; what a notebook or a real cluster gives)
peer : core.datasets.generate(executor="local", workers=2), the spawned process pool

Every run generates the same fresh dataset (grf_porous.generate_chunk, the "three-phase high"
config of the profile with that grid: 64^3 is quick's, 128^3 standard's) into a temporary
cache; times are whole ``generate`` calls, start-up of the pool or cluster included, best of
``repeats``, interleaved so that all see the same machine load. Rows report seconds per chunk,
so peer_s / numpy_s > 1 means Dask is faster; the deviation column compares the arrays of the
two executors (they must be equal). The array backend is whatever the generators pick
(numpy here; cupy on a GPU machine). ``main`` also runs one curve in a fresh Dask worker and
reports that worker's peak memory (resource.getrusage, and tracemalloc for the arrays).

    python benchmarks/bench_datasets.py                       # 64^3, 128^3, 256^3, ~4 min; 512^3 memory probe
    python benchmarks/bench_datasets.py --quick               # smoke run, ~30 s
    python benchmarks/bench_datasets.py --memory-size 256     # a smaller probe
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sashelpers.core import backend, datasets  # noqa: E402
from sashelpers.physics import saxs  # noqa: E402
from sashelpers.studies import grf_porous  # noqa: E402

DATASET = "three-phase high"
WORKERS = 2
#: grid -> (chunks, curves per chunk)
WORK = {64: (16, 8), 128: (16, 4), 256: (4, 2)}
QUICK_WORK = {64: (4, 2)}


def dataset_config(n: int) -> dict:
    """The study's config for ``DATASET`` on an n^3 grid: a profile's where one has that grid,
    else the paper's q range starting where the grid resolves it."""
    for sizes in grf_porous.SIZES.values():
        if sizes["n"] == n:
            return grf_porous.study_config(sizes, DATASET)
    paper = grf_porous.SIZES["paper"]
    q_min = max(paper["q_min_nm"], math.ceil(saxs.q_window(n, paper["voxel_nm"])[0] * 1e4) / 1e4)
    return grf_porous.study_config({**paper, "n": n, "q_min_nm": q_min}, DATASET)


def _generate(tag: str, config: dict, chunks: int, chunk_size: int, **kwargs) -> tuple[float, dict]:
    """Wall time of one fresh ``generate`` call (a new name: nothing is cached) and its arrays."""
    t0 = time.perf_counter()
    out = datasets.generate(f"bench-{tag}", grf_porous.generate_chunk, config, chunks * chunk_size, seed=0,
                            chunk_size=chunk_size, workers=WORKERS, progress=False, **kwargs)
    return time.perf_counter() - t0, out


def _max_rel_dev(a: dict, b: dict) -> float:
    return max(float(np.nanmax(np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-30))) for k in b)


def rows(sizes=(64, 128), repeats: int = 2, work: dict | None = None) -> list[dict]:
    """Two rows per grid (Dask started per call, Dask already running), seconds per chunk,
    each against the local pool of the same run."""
    import distributed

    work = WORK if work is None else work
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as cache, \
            distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                     dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        old = {k: os.environ.get(k) for k in ("SASHELPERS_CACHE", datasets.EXECUTOR_ENV, datasets.SCHEDULER_ENV)}
        os.environ["SASHELPERS_CACHE"] = cache
        for k in (datasets.EXECUTOR_ENV, datasets.SCHEDULER_ENV):
            os.environ.pop(k, None)
        try:
            for n in sizes:
                chunks, chunk_size = work[n]
                config = dataset_config(n)
                _generate(f"warm{n}", config, 2, 1, client=client)  # the running cluster imports the study
                best = {"local": math.inf, "dask": math.inf, "dask_running": math.inf}
                arrays = {}
                for rep in range(repeats):
                    for kind, kwargs in (("local", {"executor": "local"}), ("dask", {"executor": "dask"}),
                                         ("dask_running", {"client": client})):
                        t, arrays[kind] = _generate(f"{kind}{n}-{rep}", config, chunks, chunk_size, **kwargs)
                        best[kind] = min(best[kind], t)
                dev = max(_max_rel_dev(arrays[k], arrays["local"]) for k in ("dask", "dask_running"))
                for kind, label in (("dask", "started by the call"), ("dask_running", "already running")):
                    out.append({
                        "kernel": f"study-2 dataset generation, Dask LocalCluster {WORKERS}x1 ({label})",
                        "size": f"{n}^3, {chunks} chunks x {chunk_size} curves",
                        "numpy_s": best[kind] / chunks,
                        "cupy_s": None,
                        "peer": f"local spawn process pool, {WORKERS} workers (started by the call)",
                        "peer_s": best["local"] / chunks,
                        "max_rel_dev_vs_peer": dev,
                        "chunks_per_s": chunks / best[kind],
                        "peer_chunks_per_s": chunks / best["local"],
                        "curves_per_s": chunks * chunk_size / best[kind],
                        "peer_curves_per_s": chunks * chunk_size / best["local"],
                    })
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return out


def _memory_probe(config: dict) -> dict:
    """Runs in a Dask worker: one curve of ``config``; the worker's peak RSS before and after
    (GiB) and the peak of the memory traced by tracemalloc (numpy's arrays) during the curve."""
    import tracemalloc

    from sashelpers.studies import grf_porous as study

    def rss_gib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    before = rss_gib()
    tracemalloc.start()
    t0 = time.perf_counter()
    study.generate_chunk(config, 0, 0, 1)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**30
    tracemalloc.stop()
    return {"rss_before_gib": before, "rss_peak_gib": rss_gib(), "traced_peak_gib": traced,
            "seconds": seconds, "pid": os.getpid()}


def memory_per_worker(n: int) -> dict:
    """Peak memory of a fresh single-worker LocalCluster's worker computing one n^3 curve."""
    import distributed

    config = dataset_config(n)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        return {"n": n, **client.submit(_memory_probe, config, pure=False).result()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="*", default=None, help=f"grids among {sorted(WORK)}")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--memory-size", type=int, default=None, help="grid of the memory probe (0: skip)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 64^3, 4 chunks x 2 curves, 64^3 probe")
    args = ap.parse_args(argv)
    work = QUICK_WORK if args.quick else WORK
    sizes = tuple(args.size or work)
    unknown = [n for n in sizes if n not in work]
    if unknown:
        ap.error(f"--size {unknown}: allowed {sorted(work)}")
    repeats = args.repeats or (1 if args.quick else 2)
    memory_size = args.memory_size if args.memory_size is not None else (64 if args.quick else 512)
    t0 = time.perf_counter()
    table = rows(sizes, repeats, work)
    print(f"{'executor':44s} {'size':>28s} {'chunks/s':>9s} {'curves/s':>9s} {'pool ch/s':>9s} "
          f"{'dask/pool':>9s} {'max dev':>8s}")
    for r in table:
        print(f"{r['kernel'].split(', ', 1)[1]:44s} {r['size']:>28s} {r['chunks_per_s']:9.2f} "
              f"{r['curves_per_s']:9.1f} {r['peer_chunks_per_s']:9.2f} {r['peer_s'] / r['numpy_s']:8.2f}x "
              f"{r['max_rel_dev_vs_peer']:8.1e}")
    if table:
        print(f"peer: {table[0]['peer']}; times are whole generate() calls, best of {repeats}")
    if memory_size:
        m = memory_per_worker(memory_size)
        print(f"one {m['n']}^3 curve in a fresh Dask worker: peak RSS {m['rss_peak_gib']:.2f} GiB "
              f"(worker before the curve {m['rss_before_gib']:.2f} GiB), numpy arrays traced "
              f"{m['traced_peak_gib']:.2f} GiB, {m['seconds']:.2f} s with tracemalloc on")
    print(f"backend: {backend.describe()}; {time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()

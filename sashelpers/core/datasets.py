"""Cached, chunked, seeded dataset generation, on local processes or on Dask.

A dataset is a pure function of (generator, config, seed): ``generate`` splits the index range
[0, n) into chunks, calls ``generator(config, seed, start, stop)`` for each chunk that is not
cached yet, and stores each chunk as its own ``.npz`` file, written to a temporary name and
renamed into place. An interrupted run therefore leaves only whole chunks behind, and the next
call resumes where it stopped. The cache key is a hash of everything the data depends on (not of
where or how the chunks were computed: every executor reads and writes the same cache).

Because each chunk is a function of (config, seed, start, stop) alone, the chunks are mapped
onto an executor without changing the result:

``executor="local"`` (the default)
    ``workers`` spawned processes on this machine (``concurrent.futures``), or this process
    when ``workers=1``.
``executor="dask"``
    tasks on a ``dask.distributed`` cluster: the ``client=`` given, else the scheduler at
    ``SASHELPERS_DASK_SCHEDULER``, else the default client of this process
    (``distributed.default_client()``, e.g. a ``Client`` made in a notebook), else a
    ``LocalCluster`` of ``workers`` processes with one thread each, started for this call and
    closed after it.

Environment variables (read at each call, so that every study switches without code changes):

``SASHELPERS_EXECUTOR``
    ``local`` or ``dask``: the executor when ``generate`` is called with ``executor=None``.
``SASHELPERS_DASK_SCHEDULER``
    a scheduler address (``tcp://host:8786``) for ``executor="dask"`` without ``client=``.
``SASHELPERS_CACHE``
    the cache folder (default ``data/cache`` in the book's root).

On a real cluster, put ``SASHELPERS_CACHE`` on a filesystem that the workers share with the
client (NFS, Lustre, ...) and install ``sashelpers`` on the workers (they import the generator
by its module name). A worker then writes each chunk file itself, as the local processes do.
A worker that does not see the dataset's folder (it looks for a token file that the client
puts there for the run) sends the chunk's arrays back instead and the client writes the file:
correct everywhere, but the data then travel through the client, which is fine for curves
and heavier for images.

Why one ``.npz`` file per chunk rather than a zarr store: a chunk here is one unit of work
and one file, renamed into place, so "done" means "the file exists" for all of the chunk's
arrays at once, on any filesystem and from any worker, with no lock and no shared metadata
to update; resuming skips existing files; loading concatenates them in order. A zarr array
would hold each array of the chunk in its own object, so a crash between two of them leaves a
half-written chunk that needs its own completion markers, it needs the arrays' shapes and dtypes
before the first chunk exists, and it would invalidate every existing cache. Its advantage,
lazy reads of slices, buys nothing while the consumers load whole datasets into memory.

GPU workers need nothing from this module, which only moves the host (numpy) arrays that a
generator returns: each generator picks its own array backend (study 2's GRF curves take
``core.backend``'s default, cupy where a CUDA device is usable or as ``SASHELPERS_BACKEND``
says). Passing the client of a cluster with GPU workers (e.g. ``dask_cuda.LocalCUDACluster``,
one worker per GPU) as ``client=`` runs the same chunk functions there.

Like the local pool, a ``LocalCluster`` spawns processes: a script that calls ``generate``
needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

FORMAT_VERSION = 1
Generator = Callable[[dict, int, int, int], dict]

#: The executors ``generate`` accepts.
EXECUTORS = ("local", "dask")
EXECUTOR_ENV = "SASHELPERS_EXECUTOR"
SCHEDULER_ENV = "SASHELPERS_DASK_SCHEDULER"


def repo_root() -> Path:
    """The book's root (the folder holding _config.yml next to the package), else the cwd."""
    here = Path(__file__).resolve().parents[2]  # sashelpers/core/datasets.py -> the root
    return here if (here / "_config.yml").exists() else Path.cwd()


def cache_dir() -> Path:
    """Where datasets are cached: ``SASHELPERS_CACHE`` or ``data/cache`` in the book's root."""
    return Path(os.environ.get("SASHELPERS_CACHE", repo_root() / "data" / "cache"))


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of a dataset with ``seed``: independent of chunking."""
    return np.random.default_rng([int(seed), int(index)])


def _generator_id(generator: Generator) -> str:
    module = generator.__module__
    if module == "__main__":  # run as ``python -m package.module``: the same id as when imported
        import sys

        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}.{generator.__qualname__}"


def cache_key(generator: Generator, config: dict, seed: int, n: int, chunk_size: int) -> str:
    """A content hash of everything the cached data depends on."""
    payload = json.dumps(
        {
            "generator": _generator_id(generator),
            "config": config,
            "seed": int(seed),
            "n": int(n),
            "chunk_size": int(chunk_size),
            "format": FORMAT_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_npz_atomic(path: Path, arrays: dict) -> None:
    """Write arrays to ``path`` so that ``path`` either holds all of them or does not exist."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resolve_executor(executor: str | None = None, client=None, *, default: str | None = None) -> str:
    """The executor to use: ``executor``, else "dask" when a ``client`` is given, else
    ``default`` when given (e.g. a profile's choice), else ``SASHELPERS_EXECUTOR``, else "local".

    Raises
    ------
    ValueError
        For a name not in ``EXECUTORS``, or a ``client`` with ``executor="local"``.
    """
    source = "executor"
    if executor is None:
        if client is not None:
            return "dask"
        if default is not None:
            executor = default
        else:
            executor, source = os.environ.get(EXECUTOR_ENV) or "local", EXECUTOR_ENV
    name = str(executor).strip().lower()
    if name not in EXECUTORS:
        raise ValueError(f"{source}={executor!r}; allowed: {', '.join(EXECUTORS)}")
    if name == "local" and client is not None:
        raise ValueError("client= is a dask.distributed client: it needs executor='dask' (or None)")
    return name


def _compute_chunk(generator: Generator, config: dict, seed: int, start: int, stop: int) -> dict:
    """The generator's arrays for [start, stop), checked: a non-empty dict, stop - start rows each."""
    arrays = generator(config, seed, start, stop)
    if not isinstance(arrays, dict) or not arrays:
        raise TypeError(f"{_generator_id(generator)} must return a non-empty dict of arrays")
    for name, a in arrays.items():
        if len(a) != stop - start:
            raise ValueError(
                f"{_generator_id(generator)} returned {len(a)} rows of {name!r} for indices "
                f"[{start}, {stop}); expected {stop - start}"
            )
    return {k: np.asarray(v) for k, v in arrays.items()}


def _run_chunk(generator: Generator, config: dict, seed: int, start: int, stop: int, path: Path) -> str:
    save_npz_atomic(path, _compute_chunk(generator, config, seed, start, stop))
    return str(path)


def _dask_chunk(generator: Generator, config: dict, seed: int, start: int, stop: int,
                path: str, token: str) -> dict | None:
    """A Dask task: write the chunk file where the worker sees ``token``, a file that the client
    made in the dataset's folder for this run (so the folder is shared; returns None), else
    return the arrays for the client to write."""
    if Path(token).exists():
        _run_chunk(generator, config, seed, start, stop, Path(path))
        return None
    return _compute_chunk(generator, config, seed, start, stop)


def _visible(path: Path, timeout_s: float = 60.0) -> bool:
    """Whether ``path`` exists here, waiting up to ``timeout_s`` for a file that another machine
    wrote (an NFS client can cache "no such file" for a while; listing the folder revalidates)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if path.name in os.listdir(path.parent):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _dask_client(stack: contextlib.ExitStack, client, workers: int):
    """The client to submit to (see the module docstring for the order); whatever is started
    here is closed by ``stack``."""
    import distributed

    if client is not None:
        return client
    address = os.environ.get(SCHEDULER_ENV)
    if address:
        return stack.enter_context(distributed.Client(address, set_as_default=False))
    try:
        return distributed.default_client()
    except ValueError:  # no client in this process
        pass
    # dashboard (and the scheduler's HTTP server) on any free port: no clash with other clusters
    cluster = stack.enter_context(distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"))
    return stack.enter_context(distributed.Client(cluster, set_as_default=False))


def _run_dask(name: str, generator: Generator, config: dict, seed: int, ranges: list, paths: list,
              todo: list, bar, workers: int, client) -> None:
    import distributed

    folder = paths[0].parent
    with contextlib.ExitStack() as stack:
        client = _dask_client(stack, client, workers)
        token = folder / f".dask-run-{uuid.uuid4().hex}"  # workers that see it write the chunks
        token.touch()
        stack.callback(token.unlink, missing_ok=True)
        # a fresh key per submission: a key derived from the chunk path would hand a rerun the
        # previous run's failed future for as long as anything (a traceback) still refers to it
        pending = {client.submit(_dask_chunk, generator, config, seed, *ranges[i], str(paths[i]), str(token),
                                 key=f"{name}-chunk_{i:06d}-{uuid.uuid4().hex}", pure=False): i
                   for i in todo}
        errors = []
        try:
            for future in distributed.as_completed(list(pending), loop=client.loop):
                i = pending.pop(future)
                try:
                    arrays = future.result()
                except Exception as exc:  # keep the other chunks running: they are saved
                    errors.append((i, exc))
                    continue
                finally:
                    future.release()
                if arrays is not None:
                    save_npz_atomic(paths[i], arrays)
                elif not _visible(paths[i]):
                    raise RuntimeError(f"a Dask worker wrote {paths[i]}, which this process does not see")
                bar.update()
        finally:
            if pending:  # interrupted: stop what has not run yet (finished chunks are saved)
                with contextlib.suppress(Exception):
                    client.cancel(list(pending))
    if errors:
        i, exc = min(errors, key=lambda e: e[0])
        exc.add_note(f"datasets.generate({name!r}): {len(errors)} of {len(todo)} chunks failed "
                     f"(first: chunk {i}, indices {ranges[i]}); the others are saved, a rerun resumes")
        raise exc


def generate(
    name: str,
    generator: Generator,
    config: dict,
    n: int,
    seed: int = 0,
    *,
    chunk_size: int = 256,
    workers: int = 1,
    progress: bool = True,
    cache: bool = True,
    executor: str | None = None,
    client=None,
) -> dict[str, np.ndarray]:
    """Generate (or load from cache) ``n`` samples and return them as a dict of arrays.

    Parameters
    ----------
    name : str
        The dataset's name: the cache folder is ``<cache_dir()>/<name>-<cache key>``.
    generator : callable
        ``generator(config, seed, start, stop) -> dict`` of arrays with ``stop - start`` rows;
        a module-level function (worker processes import it by name) and deterministic.
    config : dict
        JSON-serialisable settings passed to ``generator``; part of the cache key.
    n : int
        Number of samples.
    seed : int
        Passed to ``generator``; part of the cache key.
    chunk_size : int
        Samples per chunk (one task, one file); part of the cache key.
    workers : int
        Local processes (``executor="local"``), or the workers of the ``LocalCluster`` that
        ``executor="dask"`` starts when it has no cluster to use; ignored otherwise.
    progress : bool
        Show a progress bar, advanced per finished chunk.
    cache : bool
        Keep the chunks in the cache folder; False writes them to a new temporary folder.
    executor : {None, "local", "dask"}
        Where the chunks are computed (see the module docstring); None reads
        ``SASHELPERS_EXECUTOR`` ("dask" when ``client`` is given). The data and the cache are
        the same for every executor.
    client : distributed.Client, optional
        The Dask client to submit to (implies ``executor="dask"``).

    Returns
    -------
    dict of numpy.ndarray
        The generator's arrays for samples [0, n), chunks concatenated in order.

    Raises
    ------
    ValueError
        For a bad argument, an unknown executor, or a chunk with the wrong number of rows.

    Notes
    -----
    Every finished chunk is saved at once, and the next call computes only the missing ones.
    With worker processes (``workers > 1``) or Dask, a chunk that fails does not stop the
    others: they are computed and saved, then the first failure is raised; computed in this
    process (``executor="local"``, ``workers=1``), the first failure stops the run.
    """
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name={name!r} must be a non-empty word without slashes or spaces")
    if int(n) != n or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of samples")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    executor = resolve_executor(executor, client)
    n, chunk_size, workers = int(n), int(chunk_size), int(workers)
    key = cache_key(generator, config, seed, n, chunk_size)
    folder = cache_dir() / f"{name}-{key}" if cache else Path(tempfile.mkdtemp(prefix=name))
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "generator": _generator_id(generator), "config": config, "seed": seed,
            "n": n, "chunk_size": chunk_size, "format": FORMAT_VERSION}
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        os.replace(tmp, meta_path)

    ranges = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    paths = [folder / f"chunk_{i:06d}.npz" for i in range(len(ranges))]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    bar = tqdm(total=len(ranges), initial=len(ranges) - len(todo), desc=name, unit="chunk",
               disable=not progress or not todo)
    try:
        if not todo:
            pass
        elif executor == "dask":
            _run_dask(name, generator, config, seed, ranges, paths, todo, bar, workers, client)
        elif workers == 1 or len(todo) <= 1:
            for i in todo:
                _run_chunk(generator, config, seed, *ranges[i], paths[i])
                bar.update()
        else:
            # spawn, not fork: a forked child of a process that has used torch (or CUDA) can hang
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_run_chunk, generator, config, seed, *ranges[i], paths[i]) for i in todo]
                for f in futures:
                    f.result()
                    bar.update()
    finally:
        bar.close()
    return load_chunks(paths)


def load_chunks(paths: list[Path]) -> dict[str, np.ndarray]:
    """Concatenate chunk files (in order) into one dict of arrays."""
    parts: dict[str, list] = {}
    for p in paths:
        with np.load(p) as z:
            for k in z.files:
                parts.setdefault(k, []).append(z[k])
    return {k: np.concatenate(v) for k, v in parts.items()}

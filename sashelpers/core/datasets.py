"""Cached, chunked, seeded dataset generation.

A dataset is a pure function of (generator, config, seed): ``generate`` splits the index range
[0, n) into chunks, calls ``generator(config, seed, start, stop)`` for each chunk that is not
cached yet, and stores each chunk as its own ``.npz`` file, written to a temporary name and
renamed into place. An interrupted run therefore leaves only whole chunks behind, and the next
call resumes where it stopped. The cache key is a hash of everything the data depends on.

Because each chunk is a function of (config, seed, start, stop) alone, chunks can be mapped
onto worker processes here, or onto a cluster later, without changing the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

FORMAT_VERSION = 1
Generator = Callable[[dict, int, int, int], dict]


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


def _run_chunk(generator: Generator, config: dict, seed: int, start: int, stop: int, path: Path) -> str:
    arrays = generator(config, seed, start, stop)
    if not isinstance(arrays, dict) or not arrays:
        raise TypeError(f"{_generator_id(generator)} must return a non-empty dict of arrays")
    for name, a in arrays.items():
        if len(a) != stop - start:
            raise ValueError(
                f"{_generator_id(generator)} returned {len(a)} rows of {name!r} for indices "
                f"[{start}, {stop}); expected {stop - start}"
            )
    save_npz_atomic(path, {k: np.asarray(v) for k, v in arrays.items()})
    return str(path)


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
) -> dict[str, np.ndarray]:
    """Generate (or load from cache) ``n`` samples and return them as a dict of arrays.

    generator(config, seed, start, stop) -> dict of arrays with stop - start rows; it must be
    a module-level function (so that worker processes can import it) and deterministic.
    """
    if not name or any(c in name for c in "/\\ "):
        raise ValueError(f"name={name!r} must be a non-empty word without slashes or spaces")
    if int(n) != n or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of samples")
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    n, chunk_size = int(n), int(chunk_size)
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
        if workers == 1 or len(todo) <= 1:
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

import multiprocessing
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from sashelpers.core import datasets


def toy_generator(config, seed, start, stop):
    rows = [datasets.sample_rng(seed, i).normal(config["mu"], 1.0, size=config["width"]) for i in range(start, stop)]
    return {"x": np.array(rows, dtype=np.float32), "index": np.arange(start, stop)}


class Interrupt(Exception):
    pass


FAIL_FROM = {"index": None}  # outside the config, so the cache key does not change between runs
CALLS: list[int] = []


def flaky_generator(config, seed, start, stop):
    CALLS.append(start)
    if FAIL_FROM["index"] is not None and start >= FAIL_FROM["index"]:
        raise Interrupt(f"simulated interruption at index {start}")
    return toy_generator(config, seed, start, stop)


def logged_generator(config, seed, start, stop):
    """toy_generator that leaves a file in config["log"] per call and fails for the chunk at
    config["fail_start"] while the file config["fail_flag"] exists (Dask workers are other
    processes: the switch and the record are files). Rows carry the computing process's pid."""
    Path(config["log"], f"{start}-{uuid.uuid4().hex}").touch()
    if start == config.get("fail_start") and Path(config["fail_flag"]).exists():
        raise Interrupt(f"simulated failure at index {start}")
    return toy_generator(config, seed, start, stop) | {"pid": np.full(stop - start, os.getpid())}


def logged_starts(config) -> list[int]:
    return sorted(int(p.name.split("-")[0]) for p in Path(config["log"]).iterdir())


@pytest.fixture(autouse=True)
def cache_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(datasets.SCHEDULER_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def dask_client():
    """A real two-process LocalCluster (spawned workers import this module for its generators)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_same_seed_same_data_and_chunking_does_not_matter():
    cfg = {"mu": 1.0, "width": 4}
    a = datasets.generate("toy", toy_generator, cfg, n=10, seed=3, chunk_size=3, progress=False)
    b = datasets.generate("toy", toy_generator, cfg, n=10, seed=3, chunk_size=4, progress=False)
    c = datasets.generate("toy", toy_generator, cfg, n=10, seed=4, chunk_size=3, progress=False)
    assert a["x"].shape == (10, 4)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], c["x"])
    np.testing.assert_array_equal(a["index"], np.arange(10))


def test_cache_key_changes_with_config_and_is_reused(cache_tmp):
    cfg = {"mu": 0.0, "width": 2}
    datasets.generate("toy", toy_generator, cfg, n=5, seed=0, chunk_size=2, progress=False)
    datasets.generate("toy", toy_generator, cfg, n=5, seed=0, chunk_size=2, progress=False)
    datasets.generate("toy", toy_generator, {"mu": 0.5, "width": 2}, n=5, seed=0, chunk_size=2, progress=False)
    folders = sorted(p.name for p in cache_tmp.iterdir())
    assert len(folders) == 2 and all(f.startswith("toy-") for f in folders)


def test_interrupted_generation_leaves_only_whole_chunks_and_resumes(cache_tmp):
    cfg = {"mu": 2.0, "width": 3}
    CALLS.clear()
    FAIL_FROM["index"] = 6
    try:
        with pytest.raises(Interrupt):
            datasets.generate("flaky", flaky_generator, cfg, n=10, seed=1, chunk_size=3, progress=False)
    finally:
        FAIL_FROM["index"] = None
    folder = next(cache_tmp.iterdir())
    assert sorted(p.name for p in folder.glob("chunk_*")) == ["chunk_000000.npz", "chunk_000001.npz"]
    assert not list(folder.glob("*.tmp"))
    CALLS.clear()
    full = datasets.generate("flaky", flaky_generator, cfg, n=10, seed=1, chunk_size=3, progress=False)
    assert CALLS == [6, 9]  # only the missing chunks were computed
    np.testing.assert_array_equal(full["x"], toy_generator(cfg, 1, 0, 10)["x"])


def test_a_crash_while_writing_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "chunk.npz"

    def exploding_savez(fh, **arrays):
        fh.write(b"partial bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(OSError, match="disk full"):
        datasets.save_npz_atomic(target, {"a": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_parallel_workers_give_the_same_data():
    cfg = {"mu": -1.0, "width": 2}
    serial = datasets.generate("par", toy_generator, cfg, n=8, seed=9, chunk_size=2, progress=False, cache=False)
    parallel = datasets.generate("par", toy_generator, cfg, n=8, seed=9, chunk_size=2, workers=2,
                                 progress=False)
    np.testing.assert_array_equal(serial["x"], parallel["x"])


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "n="), ({"chunk_size": 0}, "chunk_size="),
                                           ({"workers": 0}, "workers="), ({"name": "a/b"}, "name=")])
def test_bad_arguments(kwargs, match):
    args = {"name": "toy", "n": 4, "chunk_size": 2, "workers": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        datasets.generate(args.pop("name"), toy_generator, {"mu": 0, "width": 1}, progress=False, **args)


def test_generator_returning_wrong_row_count_is_caught():
    def bad(config, seed, start, stop):
        return {"x": np.zeros(1)}

    with pytest.raises(ValueError, match="rows"):
        datasets.generate("bad", bad, {}, n=4, chunk_size=2, progress=False)


def test_repo_root_is_the_book_root():
    root = datasets.repo_root()
    assert (root / "_config.yml").exists() and (root / "sashelpers").is_dir()
    assert datasets.cache_dir().parent.parent == root or "SASHELPERS_CACHE" in __import__("os").environ


# --- executors --------------------------------------------------------------------------------


def test_dask_gives_the_same_arrays_and_fills_the_same_cache(dask_client, cache_tmp):
    cfg = {"mu": 0.5, "width": 3}
    local = datasets.generate("dsk", toy_generator, cfg, n=10, seed=2, chunk_size=3, progress=False)
    folder = next(cache_tmp.iterdir())
    (folder / "chunk_000002.npz").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("chunk_*")}
    via_dask = datasets.generate("dsk", toy_generator, cfg, n=10, seed=2, chunk_size=3, progress=False,
                                 executor="dask", client=dask_client)
    assert [p.name for p in cache_tmp.iterdir()] == [folder.name]  # the same cache key
    assert sorted(p.name for p in folder.glob("chunk_*")) == [f"chunk_{i:06d}.npz" for i in range(4)]
    assert {n: (folder / n).stat().st_mtime_ns for n in kept} == kept  # only the missing one written
    for k in local:
        np.testing.assert_array_equal(via_dask[k], local[k])
    fresh = datasets.generate("dsk", toy_generator, cfg, n=10, seed=2, chunk_size=4, progress=False,
                              cache=False, client=dask_client)  # client= alone selects Dask
    np.testing.assert_array_equal(fresh["x"], local["x"])


def test_interrupted_dask_run_loses_nothing_and_resumes(dask_client, tmp_path, cache_tmp):
    (tmp_path / "log").mkdir()
    flag = tmp_path / "fail"
    flag.touch()
    cfg = {"mu": 2.0, "width": 3, "log": str(tmp_path / "log"), "fail_start": 6, "fail_flag": str(flag)}
    with pytest.raises(Interrupt, match="index 6") as info:
        datasets.generate("flakyd", logged_generator, cfg, n=12, seed=1, chunk_size=3, progress=False,
                          executor="dask", client=dask_client)
    assert any("1 of 4 chunks failed" in note for note in info.value.__notes__)
    folder = next(cache_tmp.iterdir())
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["chunk_000000.npz", "chunk_000001.npz", "chunk_000003.npz", "meta.json"]  # no .tmp
    assert logged_starts(cfg) == [0, 3, 6, 9]
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("chunk_*")}
    flag.unlink()
    full = datasets.generate("flakyd", logged_generator, cfg, n=12, seed=1, chunk_size=3, progress=False,
                             executor="dask", client=dask_client)
    assert logged_starts(cfg) == [0, 3, 6, 6, 9]  # only the failed chunk ran again
    assert {n: (folder / n).stat().st_mtime_ns for n in kept} == kept
    np.testing.assert_array_equal(full["x"], toy_generator(cfg, 1, 0, 12)["x"])
    assert set(full["pid"]) <= worker_pids(dask_client)


def test_environment_selects_dask_and_its_scheduler(dask_client, tmp_path, monkeypatch):
    (tmp_path / "log").mkdir()
    cfg = {"mu": 0.0, "width": 2, "log": str(tmp_path / "log")}
    monkeypatch.setenv(datasets.EXECUTOR_ENV, "dask")
    monkeypatch.setenv(datasets.SCHEDULER_ENV, dask_client.scheduler.address)
    out = datasets.generate("envd", logged_generator, cfg, n=6, seed=0, chunk_size=2, progress=False,
                            cache=False)
    assert set(out["pid"]) <= worker_pids(dask_client)
    monkeypatch.setenv(datasets.EXECUTOR_ENV, "local")
    out = datasets.generate("envl", logged_generator, cfg, n=6, seed=0, chunk_size=2, progress=False,
                            cache=False)
    assert set(out["pid"]) == {os.getpid()}


def test_dask_uses_the_default_client(dask_client, tmp_path):
    import distributed

    (tmp_path / "log").mkdir()
    cfg = {"mu": 0.0, "width": 2, "log": str(tmp_path / "log")}
    with distributed.Client(dask_client.scheduler.address):  # the default client while open
        out = datasets.generate("defd", logged_generator, cfg, n=4, seed=0, chunk_size=2, progress=False,
                                cache=False, executor="dask")
    assert set(out["pid"]) <= worker_pids(dask_client)


def test_dask_without_a_cluster_starts_one_and_closes_it(tmp_path):
    distributed = pytest.importorskip("distributed")
    (tmp_path / "log").mkdir()
    cfg = {"mu": 1.0, "width": 2, "log": str(tmp_path / "log")}
    before = set(multiprocessing.active_children())
    out = datasets.generate("lcd", logged_generator, cfg, n=6, seed=5, chunk_size=2, workers=2,
                            progress=False, cache=False, executor="dask")
    np.testing.assert_array_equal(out["x"], toy_generator(cfg, 5, 0, 6)["x"])
    assert os.getpid() not in set(out["pid"])
    assert set(multiprocessing.active_children()) <= before  # its worker processes are gone
    with pytest.raises(ValueError):
        distributed.default_client()


def test_a_worker_that_cannot_see_the_folder_returns_the_arrays(tmp_path):
    path = tmp_path / "not-shared" / "chunk_000000.npz"
    arrays = datasets._dask_chunk(toy_generator, {"mu": 0, "width": 2}, 0, 0, 3, str(path),
                                  str(path.parent / ".dask-run-token"))
    assert arrays["x"].shape == (3, 2) and not path.parent.exists()


_DASK_CHUNK = datasets._dask_chunk


def unshared_dask_chunk(generator, config, seed, start, stop, path, token):
    """_dask_chunk as run by a worker that does not see the client's folder."""
    arrays = _DASK_CHUNK(generator, config, seed, start, stop, path, token + ".elsewhere")
    assert arrays is not None and not Path(path).exists()  # nothing written by the worker
    UNSHARED_CALLS.append(start)
    return arrays


UNSHARED_CALLS: list[int] = []  # the in-process worker appends here


def test_without_a_shared_folder_the_client_writes_the_chunks(monkeypatch, cache_tmp):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(datasets, "_dask_chunk", unshared_dask_chunk)
    UNSHARED_CALLS.clear()
    cfg = {"mu": 3.0, "width": 2}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        out = datasets.generate("unshared", toy_generator, cfg, n=5, seed=4, chunk_size=2, progress=False,
                                client=client)
    assert sorted(UNSHARED_CALLS) == [0, 2, 4]
    np.testing.assert_array_equal(out["x"], toy_generator(cfg, 4, 0, 5)["x"])
    folder = next(cache_tmp.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [f"chunk_{i:06d}.npz" for i in range(3)] + ["meta.json"]


@pytest.mark.parametrize("executor", ["spark", "", "threads"])
def test_bad_executor_names_the_allowed_ones(executor):
    with pytest.raises(ValueError, match="allowed: local, dask"):
        datasets.generate("toy", toy_generator, {"mu": 0, "width": 1}, n=2, progress=False, executor=executor)


def test_bad_executor_from_the_environment(monkeypatch, cache_tmp):
    monkeypatch.setenv(datasets.EXECUTOR_ENV, "ray")
    with pytest.raises(ValueError, match="SASHELPERS_EXECUTOR='ray'; allowed: local, dask"):
        datasets.generate("toy", toy_generator, {"mu": 0, "width": 1}, n=2, progress=False)
    assert not cache_tmp.exists()  # checked before anything is written
    with pytest.raises(ValueError, match="executor='dask'"):
        datasets.resolve_executor("local", client=object())

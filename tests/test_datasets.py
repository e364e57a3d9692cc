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


@pytest.fixture(autouse=True)
def cache_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


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

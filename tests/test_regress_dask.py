"""BoostedRegressor trained with xgboost.dask on a real 2-worker LocalCluster, and study 2's wiring.

The cluster is real (a scheduler and two worker processes, one thread each), as CI runs it; the
data are tiny, so most of the time goes into the workers' first import of xgboost.
"""

from __future__ import annotations

import json
import sys

import distributed
import numpy as np
import pytest

from sashelpers.learn import regress
from sashelpers.studies import grf_porous

FAST = {"learning_rate": 0.2, "max_depth": 4, "subsample": 0.8, "colsample_bytree": 1.0, "max_bin": 64,
        "n_estimators": 200, "early_stopping_rounds": 20}
OUTPUTS = ["smooth", "noisy"]


def _data(n, rng):
    X = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    y1 = 2 + np.sin(2 * X[:, 0]) + X[:, 1] ** 2  # sd ~0.75
    y2 = 3 + X[:, 2] + 0.5 * rng.standard_normal(n)  # noise sd 0.5: intervals have something to cover
    return X, np.column_stack([y1, y2])


def _r2(y, p):
    return 1 - np.mean((p - y) ** 2) / np.var(y)


@pytest.fixture(scope="module")
def client():
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=":0") as cluster,
          distributed.Client(cluster, set_as_default=False) as c):
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def trained(client):
    rng = np.random.default_rng(0)
    train, val, test = _data(600, rng), _data(150, rng), _data(400, rng)
    local = regress.BoostedRegressor(OUTPUTS, FAST, device="cpu").fit(*train, *val)
    with distributed.get_task_stream(client=client) as stream:
        on_dask = regress.BoostedRegressor(OUTPUTS, FAST, device="cpu").fit(*train, *val, client=client)
    return local, on_dask, test, stream.data


def test_dask_model_is_as_accurate_as_the_local_one(trained):
    local, on_dask, (Xt, Yt), _ = trained
    p_loc, p_dask = local.predict(Xt), on_dask.predict(Xt)
    # smooth output: both near-perfect, and the two models agree to a small fraction of its sd
    assert _r2(Yt[:, 0], p_loc["smooth"]) > 0.9
    assert _r2(Yt[:, 0], p_dask["smooth"]) > 0.9
    assert np.sqrt(np.mean((p_dask["smooth"] - p_loc["smooth"]) ** 2)) < 0.15 * np.std(Yt[:, 0])
    # noisy output: R^2 is capped near 0.57 by the noise; both get most of it
    assert _r2(Yt[:, 1], p_dask["noisy"]) > 0.35
    assert abs(_r2(Yt[:, 1], p_dask["noisy"]) - _r2(Yt[:, 1], p_loc["noisy"])) < 0.1
    for o in OUTPUTS:  # early stopping on the validation set worked on the cluster too
        best = on_dask.history[o]["best_iteration"]
        assert on_dask.boosters[o].num_boosted_rounds() == best + 1 + FAST["early_stopping_rounds"]
        assert on_dask.history[o]["quantile_best_iteration"] < FAST["n_estimators"]


def test_dask_quantile_intervals_are_calibrated(trained):
    _, on_dask, (Xt, Yt), _ = trained
    lo, hi = on_dask.predict_interval(Xt)["noisy"]
    assert 0.8 <= regress.coverage(Yt[:, 1], lo, hi) <= 0.97  # nominal 0.90
    assert 0.5 < np.mean(hi - lo) / (2 * 1.645 * 0.5) < 1.6  # a 90 % band of noise sd 0.5: ~1.6
    assert on_dask.interval_offset.keys() == set(OUTPUTS)


def test_training_ran_on_both_workers(trained, client):
    local, on_dask, _, tasks = trained
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    assert on_dask.history["engine"] == "dask" and local.history["engine"] == "local"
    assert on_dask.history["dask"]["workers"] == workers  # every worker held training rows
    assert on_dask.history["dask"]["scheduler"] == client.scheduler.address
    assert on_dask.history["dask"]["device"] == "cpu"
    assert {t["worker"] for t in tasks} == set(workers)  # the task stream saw both of them work
    assert all(client.run(lambda: "xgboost.dask" in sys.modules).values())  # and run XGBoost


def test_dask_model_saves_and_loads_like_a_local_one(trained, tmp_path):
    _, on_dask, (Xt, _), _ = trained
    folder = on_dask.save(tmp_path / "m", data="synthetic")
    card = json.loads((folder / "card.json").read_text())
    assert card["history"]["engine"] == "dask" and card["data"] == "synthetic"
    loaded = regress.BoostedRegressor.load(folder, device="cpu")
    for o in OUTPUTS:
        assert loaded.boosters[o].best_iteration == on_dask.boosters[o].best_iteration
        np.testing.assert_allclose(loaded.predict(Xt)[o], on_dask.predict(Xt)[o], rtol=1e-6)
        np.testing.assert_allclose(loaded.predict_interval(Xt)[o], on_dask.predict_interval(Xt)[o], rtol=1e-6)


def test_bad_clients_raise(client):
    X, Y = _data(40, np.random.default_rng(1))
    model = regress.BoostedRegressor(["a"], FAST, device="cpu", quantiles=None)
    with pytest.raises(ValueError, match="distributed.Client"):
        model.fit(X, Y[:, 0], X, Y[:, 0], client=client.scheduler.address)  # an address is not a client
    closed = distributed.Client(client.scheduler.address, set_as_default=False)
    closed.close()
    with pytest.raises(ValueError, match="not running"):
        model.fit(X, Y[:, 0], X, Y[:, 0], client=closed)
    assert not model.boosters  # nothing half-trained was kept


def test_workers_use_the_gpu_only_when_asked():
    assert regress.BoostedRegressor(["a"], device="cpu").worker_device == "cpu"
    assert regress.BoostedRegressor(["a"], device="cuda").worker_device == "cuda"
    asked = regress.BoostedRegressor(["a"], {"device": "cuda"})
    assert asked.device == "cuda" and asked.worker_device == "cuda" and "device" not in asked.params
    assert regress.BoostedRegressor(["a"]).worker_device == "cpu"  # this machine's GPU is not theirs
    with pytest.raises(ValueError, match="device"):
        regress.BoostedRegressor(["a"], {"device": "tpu"})


# --- study 2: the paper profile trains on Dask ---------------------------------------------------

def _fake_study_data(n, seed=0):
    """A stand-in for one of study 2's datasets ("two-phase low"): curves that depend smoothly on
    the two labels, with a little noise."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(*grf_porous.A_RANGE_NM, n)
    eps = rng.uniform(*grf_porous.POROSITY_RANGES["low"], n)
    k = np.arange(12)
    features = (np.log10(a)[:, None] * np.cos(k / 4) + 3 * eps[:, None] * np.sin(k / 3)
                + 0.01 * rng.standard_normal((n, k.size)))
    return {"features": features.astype(np.float32), "a_nm": a.astype(np.float32),
            "porosity": eps.astype(np.float32)}


def test_profiles_choose_where_boosters_train():
    assert grf_porous.profile_sizes("paper")["xgb_executor"] == "dask"
    assert grf_porous.profile_sizes("quick")["xgb_executor"] == "local"
    assert grf_porous.profile_sizes("standard")["xgb_executor"] == "local"
    paper = grf_porous.profile_sizes("paper")
    assert grf_porous.train_executor(paper) == "dask"
    assert grf_porous.train_executor(paper, "local") == "local"
    assert grf_porous.train_executor(grf_porous.profile_sizes("quick"), client=object()) == "dask"
    with pytest.raises(ValueError, match="allowed"):
        grf_porous.train_executor(paper, "spark")
    with pytest.raises(ValueError, match="executor='dask'"):
        grf_porous.train_executor(paper, "local", client=object())
    with pytest.raises(ValueError, match="workers"), grf_porous.training_client(paper, workers=0):
        pass


def test_a_dask_profile_trains_on_the_scheduler_named_in_the_environment(client, monkeypatch, tmp_path):
    monkeypatch.setenv("SASHELPERS_DASK_SCHEDULER", client.scheduler.address)
    sizes = {"split": [0.7, 0.15, 0.15], "xgb": FAST, "xgb_executor": "dask"}
    data = {"two-phase low": _fake_study_data(500)}
    models, evals = grf_porous.train_all(data, sizes, device="cpu", save_to=tmp_path)
    m, ev = models["two-phase low"], evals["two-phase low"]
    assert m.history["engine"] == "dask" and m.history["dask"]["scheduler"] == client.scheduler.address
    for o in m.outputs:
        assert ev["mape"]["test"][o] < 0.5 * ev["mean_mape"][o]
    assert (tmp_path / "two-phase_low" / "card.json").exists()
    # the same sizes, forced local: no cluster involved
    models, _ = grf_porous.train_all(data, sizes, device="cpu", executor="local")
    assert models["two-phase low"].history["engine"] == "local"

"""sashelpers.regress: XGBoost regression with early stopping, quantile intervals, JSON save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sashelpers.learn import regress

FAST = {"learning_rate": 0.2, "max_depth": 4, "subsample": 0.8, "colsample_bytree": 1.0, "max_bin": 64,
        "n_estimators": 200, "early_stopping_rounds": 20}


def _data(n, rng, noise=0.05):
    X = rng.uniform(-1, 1, (n, 5)).astype(np.float32)
    y1 = 2 + np.sin(2 * X[:, 0]) + X[:, 1] ** 2  # in (0.6, 4): positive for MAPE
    y2 = 3 + X[:, 2] + noise * rng.standard_normal(n) * 10  # noisy: intervals have something to cover
    return X, np.column_stack([y1, y2])


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X, Y = _data(1500, rng)
    Xv, Yv = _data(300, rng)
    Xt, Yt = _data(600, rng)
    model = regress.BoostedRegressor(["smooth", "noisy"], FAST, device="cpu").fit(X, Y, Xv, Yv)
    return model, (X, Y), (Xt, Yt)


def test_mape_and_mse_by_hand():
    assert regress.mape([1, 2, 4], [1.1, 1.8, 4]) == pytest.approx(100 * (0.1 + 0.1 + 0) / 3)
    assert regress.mse([1, 2], [2, 4]) == pytest.approx(2.5)
    assert regress.coverage([1, 2, 3, 4], [0, 0, 0, 5], [1.5, 3, 2, 6]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="zeros"):
        regress.mape([0, 1], [1, 1])
    with pytest.raises(ValueError, match="equal length"):
        regress.mape([1, 2], [1])


def test_learns_a_smooth_function(fitted):
    model, (X, Y), (Xt, Yt) = fitted
    ev = model.evaluate({"train": (X, Y), "test": (Xt, Yt)})
    base = regress.mean_baseline_mape(Y[:, 0], Yt[:, 0])
    assert ev["mape"]["test"]["smooth"] < 0.25 * base
    assert ev["mape"]["test"]["smooth"] < 5.0
    assert 0 < model.history["smooth"]["best_iteration"] < FAST["n_estimators"]


def test_quantile_interval_coverage(fitted):
    model, _, (Xt, Yt) = fitted
    iv = model.predict_interval(Xt)
    cov = regress.coverage(Yt[:, 1], *iv["noisy"])
    assert 0.8 <= cov <= 0.97, cov  # nominal 0.90
    width = np.mean(iv["noisy"][1] - iv["noisy"][0])
    assert 0.5 < width / (2 * 1.645 * 0.5) < 1.6  # the noise sd is 0.5: a 90 % band of ~1.6


def test_conformal_offset_restores_coverage_of_an_overconfident_interval():
    rng = np.random.default_rng(3)
    X, Y = _data(400, rng)
    model = regress.BoostedRegressor(["smooth", "noisy"], FAST, device="cpu", conformal=False)
    model.fit(X, Y, *_data(200, rng))
    model.quantile_boosters["noisy"] = model.boosters["noisy"]  # a zero-width "interval"
    Xc, Yc = _data(500, rng)
    off = model.calibrate_intervals(Xc, Yc)["noisy"]
    assert off > 0.3  # widened by about 1.645 noise sd (0.5)
    Xt, Yt = _data(1000, rng)
    assert 0.85 <= regress.coverage(Yt[:, 1], *model.predict_interval(Xt)["noisy"]) <= 0.95


def test_save_load_round_trip(fitted, tmp_path):
    model, _, (Xt, _) = fitted
    folder = model.save(tmp_path / "m", data="synthetic")
    card = json.loads((folder / "card.json").read_text())
    assert card["outputs"] == ["smooth", "noisy"] and card["data"] == "synthetic"
    assert json.loads((folder / "smooth.json").read_text())  # XGBoost's JSON format
    loaded = regress.BoostedRegressor.load(folder, device="cpu")
    for o in model.outputs:
        np.testing.assert_allclose(loaded.predict(Xt)[o], model.predict(Xt)[o], rtol=1e-6)
        np.testing.assert_allclose(loaded.predict_interval(Xt)[o], model.predict_interval(Xt)[o], rtol=1e-6)


def test_bad_input(fitted):
    model, _, _ = fitted
    with pytest.raises(ValueError, match="features"):
        model.predict(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        model.predict(np.full((2, 5), np.nan))
    with pytest.raises(ValueError, match="2D"):
        model.predict(np.zeros(5))
    with pytest.raises(ValueError, match="distinct"):
        regress.BoostedRegressor(["a", "a"], device="cpu")
    with pytest.raises(ValueError, match="learning_rate"):
        regress.BoostedRegressor(["a"], {"learning_rate": 0}, device="cpu")
    with pytest.raises(ValueError, match="device"):
        regress.BoostedRegressor(["a"], device="tpu")
    with pytest.raises(ValueError, match="shape"):
        regress.BoostedRegressor(["a"], FAST, device="cpu").fit(np.zeros((4, 2)), np.zeros((3, 1)), np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(RuntimeError, match="not trained"):
        regress.BoostedRegressor(["a"], device="cpu").predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="card.json"):
        regress.BoostedRegressor.load("/nonexistent-folder")


def test_splits_and_power_law():
    s = regress.split_indices(100, (0.8, 0.1, 0.1))
    assert (s["train"].stop, s["val"].stop, s["test"].stop) == (80, 90, 100)
    with pytest.raises(ValueError):
        regress.split_indices(100, (0.5, 0.5, 0.5))
    c, b = regress.power_law([100, 400, 1600], [10, 5, 2.5])
    assert b == pytest.approx(-0.5) and c == pytest.approx(100)


def test_device_is_explicit(monkeypatch):
    monkeypatch.setenv("SASHELPERS_BACKEND", "numpy")
    assert regress.BoostedRegressor(["a"]).device == "cpu"


def test_cramer_rao_matches_the_linear_gaussian_answer():
    # x = theta_1 a_1 + theta_2 a_2 + e, e ~ N(0, Sigma): the bound is (A Sigma^-1 A^T)^-1 exactly
    rng = np.random.default_rng(0)
    d, R = 6, 400
    A = rng.normal(size=(2, d))
    L = rng.normal(size=(d, d)) * 0.3 + np.eye(d)
    sigma = L @ L.T
    truth = np.linalg.inv(A @ np.linalg.inv(sigma) @ A.T)
    samples = rng.multivariate_normal(np.zeros(d), sigma, size=R)
    exact_derivs = np.repeat(A[:, None, :], R, axis=1)
    bound = regress.cramer_rao(exact_derivs, samples)
    np.testing.assert_allclose(np.sqrt(np.diag(bound)), np.sqrt(np.diag(truth)), rtol=0.1)
    # noisy derivative samples inflate the Fisher information J^T P J; the correction removes it
    # (on average over trials)
    fisher, raw = [], []
    for t in range(40):
        r = np.random.default_rng(100 + t)
        X = r.multivariate_normal(np.zeros(d), sigma, size=R)
        D = A[:, None, :] + 2.0 * r.normal(size=(2, R, d))
        fisher.append(np.linalg.inv(regress.cramer_rao(D, X)))
        J = D.mean(1)
        raw.append(J @ np.linalg.inv(np.cov(X, rowvar=False)) @ J.T)
    true_fisher = np.linalg.inv(truth)
    np.testing.assert_allclose(np.mean(fisher, 0), true_fisher, rtol=0.05, atol=0.05 * np.abs(true_fisher).max())
    # uncorrected, the first parameter's information comes out ~12 % too high here
    assert np.mean(raw, 0)[0, 0] > 1.08 * true_fisher[0, 0]
    # known extra noise on the diagonal adds to the covariance
    wider = regress.cramer_rao(exact_derivs, samples, extra_var=np.full(d, 4.0))
    assert np.all(np.diag(wider) > np.diag(bound))
    with pytest.raises(ValueError, match="replicates"):
        regress.cramer_rao(exact_derivs[:, :5], samples[:5])
    with pytest.raises(ValueError, match="extra_var"):
        regress.cramer_rao(exact_derivs, samples, extra_var=-np.ones(d))


def test_power_law_fit_weights_and_uncertainty():
    n = np.array([100, 200, 400, 800, 1600])
    exact = 30 * n**-0.3
    f = regress.power_law_fit(n, exact)
    assert f["b"] == pytest.approx(-0.3) and f["c"] == pytest.approx(30)
    assert f["at"](3200)[0] == pytest.approx(30 * 3200**-0.3) and f["b_se"] < 1e-9
    # an outlier with a large standard error barely moves a weighted fit
    noisy = exact.copy()
    noisy[-1] *= 2
    se = np.full(n.size, 0.01) * noisy
    se[-1] = 10 * noisy[-1]
    assert abs(regress.power_law_fit(n, noisy, se)["b"] + 0.3) < 0.01
    assert abs(regress.power_law_fit(n, noisy)["b"] + 0.3) > 0.1
    assert regress.power_law_fit(n, noisy)["b_se"] > 0

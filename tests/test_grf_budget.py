"""Study 2's error budget (grf_porous): the shared q lattice, cropping, the oracle, the experiments."""

from __future__ import annotations

import numpy as np
import pytest

from sashelpers.physics import grf, saxs
from sashelpers.studies import grf_porous


def test_budget_grids_share_one_q_lattice():
    q = {n: grf_porous.q_grid(grf_porous.budget_config(n)) for n in (32, 64, 128)}
    for n, qn in q.items():
        lo, hi = saxs.q_window(n, 0.5)
        assert qn[0] >= lo and qn[-1] == pytest.approx(3.0) and qn[0] - lo < grf_porous.BUDGET_Q_STEP
        np.testing.assert_allclose(np.diff(qn), grf_porous.BUDGET_Q_STEP, atol=1e-9)
    # every coarser grid's points are points of the finer grids
    assert np.allclose(q[128][-len(q[64]):], q[64]) and np.allclose(q[64][-len(q[32]):], q[32])


def test_crop_features_is_the_features_of_the_window():
    q = np.linspace(0.3, 3.0, 91)
    rng = np.random.default_rng(0)
    intensity = np.exp(-rng.uniform(0.5, 2, (4, 1)) * q) * rng.uniform(1, 9, (4, 1))
    full = grf.features(q, intensity)
    qc, fc = grf_porous.crop_features(q, full, 0.6, 2.0)
    keep = (q >= 0.6 - 1e-9) & (q <= 2.0 + 1e-9)
    assert np.array_equal(qc, q[keep])
    np.testing.assert_allclose(fc, grf.features(q[keep], intensity[:, keep]), atol=1e-12)
    # any constant in log I drops out, so raw log10 I crops to the same features
    np.testing.assert_allclose(grf_porous.crop_features(q, np.log10(intensity) + 3.0, 0.6, 2.0)[1], fc, atol=1e-12)
    with pytest.raises(ValueError, match="keeps 0"):
        grf_porous.crop_features(q, full, 3.5)


def _toy_reps(n_rep=200, sigma=0.05, seed=0):
    """Curves I = exp(-(a q)^2 / 3) (1 + porosity q) with independent lognormal scatter per point."""
    rng = np.random.default_rng(seed)
    q = np.linspace(0.3, 3.0, 40)
    z = rng.standard_normal((n_rep, q.size))

    def curves(p):
        return np.exp(-(p["a_nm"] * q) ** 2 / 3 * 0.1) * (1 + p["porosity"] * q) * np.exp(sigma * z)
    params = {"a_nm": 4.0, "porosity": 0.7}
    steps = {"a_nm": 0.05, "porosity": 0.01}
    reps = {"q_nm": q, "centre": curves(params)}
    for p in params:
        for s in (1, -1):
            reps[(p, s)] = curves({**params, p: params[p] + s * steps[p]})
    return reps, params, steps


def test_fisher_oracle_scales_with_the_scatter_and_the_noise():
    reps, params, steps = _toy_reps(sigma=0.05)
    base = grf_porous.fisher_oracle(reps, params, steps=steps, n_bins=10)
    twice = grf_porous.fisher_oracle(_toy_reps(sigma=0.10)[0], params, steps=steps, n_bins=10)
    for p in params:  # the bound is linear in the scatter's standard deviation
        assert twice["sd"][p] / base["sd"][p] == pytest.approx(2.0, rel=0.15)
        assert base["mape"][p] == pytest.approx(100 * np.sqrt(2 / np.pi) * base["sd"][p] / params[p])
    noisy = grf_porous.fisher_oracle(reps, params, steps=steps, n_bins=10, alpha=1.0)
    quieter = grf_porous.fisher_oracle(reps, params, steps=steps, n_bins=10, alpha=100.0)
    assert all(noisy["sd"][p] > quieter["sd"][p] > base["sd"][p] for p in params)
    narrow = grf_porous.fisher_oracle(reps, params, steps=steps, n_bins=10, q_min=1.5)
    assert all(narrow["sd"][p] > base["sd"][p] for p in params)  # less of the curve, less information


def test_budget_experiments_run_at_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path))
    sizes = grf_porous.profile_sizes("quick")
    sizes["budget"] = {**sizes["budget"], "grids": [32], "split": [60, 20, 30], "n_rep": 20, "n_bins": 4,
                       "learning_sizes": [30, 60]}
    sizes["xgb"] = {**sizes["xgb"], "n_estimators": 20}
    box = grf_porous.budget_box(sizes, progress=False)
    row = box["grids"][0]
    assert row["n"] == 32 and row["box_nm"] == 16.0
    assert set(row["fits"]) >= {"common window, noisy", "widest window, noise off"}
    for fit in row["fits"].values():
        assert all(fit[p][0] > 0 and fit[p][1] >= 0 for p in grf_porous.OUTPUTS[grf_porous.CASE_DATASET])
        assert set(fit["case"]) == {"a_nm", "porosity", "nu"}
    learning = grf_porous.budget_learning(sizes, progress=False)
    assert [r["n_train"] for r in learning["rows"]] == [30, 60]
    with pytest.raises(ValueError, match="allowed"):
        grf_porous.budget_experiment("nonsense", "quick")

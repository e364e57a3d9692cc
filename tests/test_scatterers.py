"""Known-answer tests for sashelpers.physics.scatterers and study 1 (sashelpers.studies.inn_scatterers): sasmodels wrapper, priors, curves,
and the batched torch path against sasmodels."""

import numpy as np
import pytest
import torch

from sashelpers.physics import scatterers as sc
from sashelpers.studies import inn_scatterers as s1

Q = s1.default_q_nm()


# --- sasmodels' own reference values (book chapter "Physics and conventions"), through the nm wrapper ----------

SPHERE_REF = dict(q_a=[0.01, 0.1, 0.2], i=[1.34836265e4, 6.20114062, 0.104733914],
                  pars=dict(radius_nm=12.0, sld=6.0, sld_solvent=1.0, scale=1.0, background=0.0))
CYL_REF = dict(q_a=[0.01, 0.05, 0.2], i=[301.823887, 53.6661653, 0.0417613868],
               pars=dict(radius_nm=2.0, length_nm=40.0, sld=4.0, sld_solvent=1.0, scale=1.0,
                         background=0.0))
HS_REF = dict(q_a=[0.001, 0.1], s=[0.209128, 0.930587])


def nm(q_a):
    return np.asarray(q_a) * 10.0


def test_sasmodels_sphere_reference():
    got = sc.sasmodels_intensity("sphere", nm(SPHERE_REF["q_a"]), **SPHERE_REF["pars"])
    np.testing.assert_allclose(got, SPHERE_REF["i"], rtol=1e-8)


def test_sasmodels_cylinder_reference():
    got = sc.sasmodels_intensity("cylinder", nm(CYL_REF["q_a"]), **CYL_REF["pars"])
    np.testing.assert_allclose(got, CYL_REF["i"], rtol=1e-8)


def test_sasmodels_hardsphere_reference():
    got = sc.sasmodels_intensity("hardsphere", nm(HS_REF["q_a"]), radius_effective_nm=5.0,
                                 volfraction=0.2, scale=1.0, background=0.0)
    np.testing.assert_allclose(got, HS_REF["s"], rtol=3e-6)  # references given to 6 digits
    phi = 0.2  # S(0) = (1 - phi)^4 / (1 + 2 phi)^2
    s0 = sc.sasmodels_intensity("hardsphere", [1e-6], radius_effective_nm=5.0, volfraction=phi,
                                scale=1.0, background=0.0)
    np.testing.assert_allclose(s0, (1 - phi) ** 4 / (1 + 2 * phi) ** 2, rtol=1e-9)


def test_unit_conversion_nm_vs_angstrom():
    from sasmodels.direct_model import call_kernel

    q_nm = np.array([0.05, 0.3, 1.7])
    got = sc.sasmodels_intensity("sphere", q_nm, radius_nm=5.0, sld=1, sld_solvent=0, background=0)
    kernel = sc._model("sphere").make_kernel([q_nm / 10.0])
    ref = call_kernel(kernel, dict(radius=50.0, sld=1, sld_solvent=0, background=0))
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    # the first zero of a monodisperse sphere sits at qR = 4.4934 with q in nm^-1, R in nm
    r = 4.0
    q0 = 4.493409457909064 / r
    near = sc.torch_intensity("sphere", [q0 * 0.999, q0, q0 * 1.001],
                              {"radius_nm": r, "radius_pd": 0.0}, device="cpu").numpy()[0]
    assert near[1] < 1e-9 * sc.torch_intensity("sphere", [1e-4], {"radius_nm": r, "radius_pd": 0.0},
                                               device="cpu").item()
    assert near[1] < near[0] and near[1] < near[2]


# --- polydispersity normalisation: I(0) = drho^2 <V^2>/<V> 1e-4 -------------------------------

def _gauss_mesh(center, pd, n=35, nsigma=3.0):
    x = center + np.linspace(-nsigma, nsigma, n) * pd * center
    w = np.exp(-0.5 * np.linspace(-nsigma, nsigma, n) ** 2) * (x >= 0)
    return x, w / w.sum()


@pytest.mark.parametrize("engine", ["sasmodels", "torch"])
def test_polydisperse_forward_intensity(engine):
    r_nm, pd, drho = 5.0, 0.2, 3.0
    x, w = _gauss_mesh(r_nm * 10.0, pd)
    v = 4.0 / 3.0 * np.pi * x ** 3
    expect = drho ** 2 * (w @ v ** 2) / (w @ v) * 1e-4
    q = [1e-5]
    if engine == "sasmodels":
        got = sc.sasmodels_intensity("sphere", q, radius_nm=r_nm, radius_pd=pd, radius_pd_n=35,
                                     radius_pd_nsigma=3, sld=drho, sld_solvent=0, background=0)[0]
    else:
        got = sc.torch_intensity("sphere", q, {"radius_nm": r_nm, "radius_pd": pd}, sld=drho,
                                 device="cpu").item()
    np.testing.assert_allclose(got, expect, rtol=1e-7)
    # and the 35-point mesh is close to the continuous Gaussian moments <R^6>/<R^3>
    s = pd * r_nm * 10
    m3 = (r_nm * 10) ** 3 + 3 * (r_nm * 10) * s ** 2
    m6 = sum(c * (r_nm * 10) ** (6 - 2 * k) * s ** (2 * k) for k, c in enumerate([1, 15, 45, 15]))
    continuous = drho ** 2 * (4 / 3 * np.pi) * m6 / m3 * 1e-4
    np.testing.assert_allclose(got, continuous, rtol=2e-2)


def test_pd_mesh_drops_negative_points_like_sasmodels():
    # pd = 0.5: mean - 3 sigma < 0, so sasmodels truncates the mesh at 0 and renormalises
    r_nm, pd = 2.0, 0.5
    ref = sc.sasmodels_intensity("sphere", Q[::32], radius_nm=r_nm, radius_pd=pd, radius_pd_n=35,
                                 radius_pd_nsigma=3, sld=1, sld_solvent=0, background=0)
    got = sc.torch_intensity("sphere", Q[::32], {"radius_nm": r_nm, "radius_pd": pd},
                             device="cpu").numpy()[0]
    np.testing.assert_allclose(got, ref, rtol=1e-12)


# --- priors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", sc.SHAPES)
def test_priors_bounds_and_reproducibility(shape):
    a = s1.sample_parameters(shape, np.random.default_rng(3), 4000)
    b = s1.sample_parameters(shape, np.random.default_rng(3), 4000)
    c = s1.sample_parameters(shape, np.random.default_rng(4), 4000)
    assert set(a) == set(sc.SHAPE_PARAMS[shape])
    for name, prior in s1.PRIORS[shape].items():
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
        v = a[name]
        assert v.shape == (4000,) and np.all(np.isfinite(v))
        if prior["distribution"] == "uniform discrete":
            assert set(np.unique(v)) == set(prior["values"])
        else:
            assert v.min() >= prior["lower"]
            if prior["upper"] is not None:
                assert v.max() <= prior["upper"]
            # truncated normal mean (scipy) within 4 standard errors
            from scipy.stats import truncnorm

            lo = (prior["lower"] - prior["mean"]) / prior["sd"]
            hi = np.inf if prior["upper"] is None else (prior["upper"] - prior["mean"]) / prior["sd"]
            dist = truncnorm(lo, hi, loc=prior["mean"], scale=prior["sd"])
            assert abs(v.mean() - dist.mean()) < 4 * dist.std() / np.sqrt(v.size)
    assert a["radius_nm"].min() >= 0.2


def test_priors_table_rows():
    rows = s1.priors_table()
    assert {(r["shape"], r["parameter"]) for r in rows} == {
        (s, p) for s in sc.SHAPES for p in sc.SHAPE_PARAMS[s]}
    for r in rows:
        assert "unit" in r and "distribution" in r
    assert 0.0 not in s1.VOLFRACTIONS and max(s1.VOLFRACTIONS) == 0.30


# --- torch batched path vs sasmodels ---------------------------------------------------------

@pytest.mark.parametrize("shape", sc.SHAPES)
def test_torch_matches_sasmodels_on_prior_draws(shape):
    p = s1.sample_parameters(shape, np.random.default_rng(2024), 20)
    ref = sc.sasmodels_curves(shape, Q, p)
    got = sc.torch_intensity(shape, Q, p, device="cpu").numpy()
    assert got.shape == (20, Q.size)
    rel = np.abs(got / ref - 1)
    assert rel.max() <= 1e-5, rel.max()
    got32 = sc.torch_intensity(shape, Q, p, device="cpu", dtype=torch.float32)
    assert got32.dtype == torch.float32
    assert np.abs(got32.double().numpy() / ref - 1).max() <= 1e-4  # typically 2e-6, up to 1.2e-5


def test_torch_reference_values():
    sph = sc.torch_intensity("sphere", nm(SPHERE_REF["q_a"]), {"radius_nm": 12.0, "radius_pd": 0.0},
                             sld=6.0, sld_solvent=1.0, device="cpu").numpy()[0]
    np.testing.assert_allclose(sph, SPHERE_REF["i"], rtol=1e-8)
    cyl = sc.torch_intensity("cylinder", nm(CYL_REF["q_a"]),
                             {"radius_nm": 2.0, "radius_pd": 0.0, "length_nm": 40.0, "length_pd": 0.0},
                             sld=4.0, sld_solvent=1.0, device="cpu").numpy()[0]
    np.testing.assert_allclose(cyl, CYL_REF["i"], rtol=1e-8)
    s = sc.hardsphere_sq(nm(HS_REF["q_a"]), 5.0, 0.2, device="cpu").numpy()
    np.testing.assert_allclose(s, HS_REF["s"], rtol=3e-6)


def test_torch_hardsphere_series_and_closed_form_agree():
    # across the switch between the small-x series and the closed form, and against sasmodels
    q = np.geomspace(1e-4, 20, 400)
    for phi in (0.05, 0.3):
        s = sc.hardsphere_sq(q, 1.0, phi, device="cpu").numpy()
        ref = sc.sasmodels_intensity("hardsphere", q, radius_effective_nm=1.0, volfraction=phi,
                                     scale=1.0, background=0.0)
        np.testing.assert_allclose(s, ref, rtol=1e-6)
        x = torch.tensor(sc._HS_CUT * np.array([1 - 1e-12, 1 + 1e-12]), dtype=torch.float64)
        below, above = sc._hardsphere_sq(x, torch.tensor(phi, dtype=torch.float64)).tolist()
        assert abs(below / above - 1) < 1e-12  # series and closed form meet at the switch


def test_torch_cylinder_with_product_hardsphere_matches_sasmodels_scale():
    # P@S: I = scale * volfraction * P * S (scale=1 as in the study)
    p = {"radius_nm": 3.0, "radius_pd": 0.1, "volfraction": 0.25}
    ref = sc.sasmodels_curves("sphere@hardsphere", Q, p)[0]
    sph = sc.sasmodels_curves("sphere", Q, {"radius_nm": 3.0, "radius_pd": 0.1})[0]
    s = sc.hardsphere_sq(Q, 3.0, 0.25, device="cpu").numpy()  # R_eff = mean radius of the mesh
    np.testing.assert_allclose(ref, 0.25 * sph * s, rtol=1e-6)


def test_two_j1_over_x_accuracy():
    from scipy.special import j1

    x = np.concatenate([np.geomspace(1e-8, 1, 200), np.linspace(1, 80, 20000)])
    got = sc._two_j1_over_x(torch.tensor(x)).numpy()
    assert np.abs(got - 2 * j1(x) / x).max() < 1e-12


# --- noisy curves and datasets -----------------------------------------------------------------

def test_make_dataset_cached_and_chunk_independent(tmp_path, monkeypatch):
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path))
    q = s1.default_q_nm(64)
    d1 = s1.make_dataset(sc.SHAPES, 3, seed=7, q_nm=q, workers=1, chunk_size=2, progress=False)
    assert d1["log_i"].shape == (9, 64) and d1["log_i"].dtype == np.float32
    assert d1["params"].shape == (9, len(sc.PARAM_NAMES))
    np.testing.assert_array_equal(d1["shape"], np.repeat([0, 1, 2], 3))
    assert np.all(np.isfinite(d1["log_i"]))
    # NaN exactly where a shape has no such parameter
    for k, shape in enumerate(sc.SHAPES):
        rows = d1["params"][d1["shape"] == k]
        for j, name in enumerate(sc.PARAM_NAMES):
            assert np.all(np.isfinite(rows[:, j])) == (name in sc.SHAPE_PARAMS[shape])
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 6
    d2 = s1.make_dataset(sc.SHAPES, 3, seed=7, q_nm=q, workers=1, chunk_size=2, progress=False)
    np.testing.assert_array_equal(d1["log_i"], d2["log_i"])
    assert sorted(tmp_path.rglob("*.npz")) == files  # loaded, not regenerated
    d3 = s1.make_dataset(sc.SHAPES, 3, seed=7, q_nm=q, workers=1, chunk_size=3, progress=False,
                         cache=False)
    np.testing.assert_array_equal(d1["log_i"], d3["log_i"])
    # torch engine: same parameters and noise, same curves to float32 precision
    d4 = s1.make_dataset(sc.SHAPES, 3, seed=7, q_nm=q, workers=1, chunk_size=3, progress=False,
                         cache=False, engine="torch")
    np.testing.assert_array_equal(d1["params"], d4["params"])
    np.testing.assert_allclose(d1["log_i"], d4["log_i"], atol=1e-5)
    # different shapes draw different radii from the same seed
    assert len(set(d1["params"][:, 0].tolist())) == 9


def test_noise_is_multiplicative_ten_percent():
    cfg = {"shape": "sphere", "q_nm": list(s1.default_q_nm(256)), "engine": "torch"}
    noisy = s1.curves_chunk(cfg, 1, 0, 40)
    clean = s1.curves_chunk(dict(cfg, noise=0.0), 1, 0, 40)
    np.testing.assert_array_equal(noisy["params"], clean["params"])
    ratio = np.exp(noisy["log_i"].astype(np.float64) - clean["log_i"])
    assert abs(ratio.mean() - 1) < 0.005 and abs(ratio.std() - 0.1) < 0.005


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: s1.sample_parameters("cube", np.random.default_rng(0), 3),
    lambda: s1.sample_parameters("sphere", 0, 3),
    lambda: s1.sample_parameters("sphere", np.random.default_rng(0), 0),
    lambda: sc.torch_intensity("cube", Q, {"radius_nm": 1.0, "radius_pd": 0.1}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": -1.0, "radius_pd": 0.1}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": 0.0, "radius_pd": 0.1}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": 1.0, "radius_pd": -0.1}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": 1.0}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": 1.0, "radius_pd": 0.1, "length_nm": 3}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": [1.0, np.nan], "radius_pd": 0.1}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": [1.0, 2.0], "radius_pd": [0.1] * 3}),
    lambda: sc.torch_intensity("sphere@hardsphere", Q,
                               {"radius_nm": 1.0, "radius_pd": 0.1, "volfraction": 0.8}),
    lambda: sc.torch_intensity("sphere", [0.0, 1.0], {"radius_nm": 1.0, "radius_pd": 0.1}),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": 1.0, "radius_pd": 0.1}, pd_n=0),
    lambda: sc.torch_intensity("sphere", Q, {"radius_nm": 1.0, "radius_pd": 0.1}, dtype=torch.int64),
    lambda: sc.sasmodels_curves("cylinder", Q, {"radius_nm": 1.0, "radius_pd": 0.1}),
    lambda: sc.sasmodels_intensity("sphere", [-1.0], radius_nm=1.0),
    lambda: sc.sasmodels_intensity("sphere", [1.0], radius_nm=1.0, lenght_nm=3.0),
    lambda: s1.default_q_nm(256, 3.0, 0.03),
    lambda: s1.make_dataset(["sphere", "cube"], 2, progress=False),
    lambda: s1.make_dataset("sphere", 2, noise_level=0.2, progress=False),
    lambda: s1.add_noise([1.0], np.random.default_rng(0), rel=-0.1),
    lambda: sc.hardsphere_sq([1.0], 1.0, 0.9),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()

"""Known-answer tests for sashelpers.studies.bayes_shapes: the likelihood, the fits, the table, bad input."""

import numpy as np
import pytest
from scipy.stats import norm

from sashelpers.studies import bayes_shapes as am
from sashelpers.physics import scatterers as sc
from sashelpers.studies import inn_scatterers as s1

Q = s1.default_q_nm()
SMALL = {"library_size": 200}          # small libraries keep these tests fast
pytestmark = pytest.mark.usefixtures("one_thread")  # small batches: more threads only wait

TRUTH = {
    "sphere": {"radius_nm": 3.0, "radius_pd": 0.1},
    "sphere@hardsphere": {"radius_nm": 2.5, "radius_pd": 0.08, "volfraction": 0.2},
    "cylinder": {"radius_nm": 1.5, "radius_pd": 0.1, "length_nm": 12.0, "length_pd": 0.12},
}


def clean(shape, **pars):
    p = dict(TRUTH[shape], **pars)
    return np.log(sc.torch_intensity(shape, Q, {k: np.array([v]) for k, v in p.items()}, device="cpu").numpy()[0])


def test_deviance_is_the_gaussian_in_i_likelihood():
    rng = np.random.default_rng(0)
    model = np.log(rng.uniform(0.01, 100.0, 50))
    i_true = np.exp(model)
    i_obs = i_true * rng.normal(1.0, 0.1, 50)
    # -2 log p(log I_obs) = -2 [log N(I_obs; I_true, 0.1 I_true) + log I_obs]
    ref = -2.0 * np.sum(norm.logpdf(i_obs, i_true, 0.1 * i_true) + np.log(i_obs))
    const = 50 * np.log(2 * np.pi * 0.1 ** 2)
    assert am.deviance(np.log(i_obs), model) == pytest.approx(ref - const, rel=1e-10)
    assert am.deviance(model, model) == 0.0


@pytest.mark.parametrize("shape", sc.SHAPES)
def test_best_fit_recovers_noise_free_parameters(shape):
    fit = am.best_fit(shape, Q, clean(shape), **SMALL)
    got, want = fit["params"], TRUTH[shape]
    assert set(got) == set(want)
    # a noise-free curve's ML point is not exactly the truth: the likelihood of I * N(1, 0.1)
    # peaks where the model lies ~sigma^2 = 1 % below the data, and the length / length width
    # of a 12 nm cylinder trade off weakly (q_min L / 2 = 0.18): tolerances of that size
    tol = {"radius_nm": 0.01, "length_nm": 0.03}
    for name, value in want.items():
        if name in tol:
            assert got[name] == pytest.approx(value, rel=tol[name]), (name, got)
        elif name == "volfraction":
            assert got[name] == pytest.approx(value), got
        else:
            assert got[name] == pytest.approx(value, abs=0.05), (name, got)
    # the noise-free curve itself has deviance 0; the best fit at most ~n_q * sigma^2 below
    assert -0.015 * Q.size <= fit["deviance"] <= 1e-6


def test_a_different_shape_fits_badly():
    sphere = clean("sphere", radius_nm=4.0)
    rod = clean("cylinder", radius_nm=1.0, length_nm=30.0)
    as_cylinder = am.best_fit("cylinder", Q, sphere, **SMALL)
    as_sphere = am.best_fit("sphere", Q, rod, **SMALL)["deviance"]
    as_hard_spheres = am.best_fit("sphere@hardsphere", Q, rod, **SMALL)["deviance"]
    assert as_sphere > 1e4 and as_hard_spheres > 1e4, (as_sphere, as_hard_spheres)
    # a squat polydisperse cylinder (L ~ 1.6 R) mimics the R = 4 nm sphere far better, but the
    # sphere still wins by > 100 (noise-free: 136; a likelihood ratio of e^-68)
    assert as_cylinder["deviance"] > 100, as_cylinder
    assert as_cylinder["params"]["length_nm"] < 3 * as_cylinder["params"]["radius_nm"]


@pytest.fixture(scope="module")
def clear_cases():
    """A sphere of R = 4 nm and a 30 nm rod, noise-free, with the table of their fits."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    y = np.stack([clean("sphere", radius_nm=4.0), clean("cylinder", radius_nm=1.0, length_nm=30.0)])
    tab = am.ambiguity_table(Q, y, np.array([0, 1]), shapes=("sphere", "cylinder"), fit_kwargs=SMALL,
                             keep_fits=True)
    torch.set_num_threads(n)
    return y, tab


def test_ambiguity_table_and_summary_on_clear_cases(clear_cases):
    _, tab = clear_cases
    assert tab["deviance"].shape == (2, 2)
    assert list(tab["ml_shape"]) == [0, 1] and np.all(tab["margin"] > 100)
    s = am.summarize(tab)
    assert s["ml_error"]["k"] == 0 and s["ml_error"]["n"] == 2
    assert s["ml_confusion"].tolist() == [[1, 0], [0, 1]]


def test_binomial_interval_known_values():
    lo, hi = am.binomial_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1, rel=1e-9)
    lo, hi = am.binomial_interval(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)


def test_shape_posteriors_normalise():
    p = am.shape_posteriors(np.array([[0.0, np.log(3.0), -np.inf]]))
    np.testing.assert_allclose(p, [[0.25, 0.75, 0.0]])


@pytest.mark.parametrize("bad, match", [
    (lambda y: y[:-1], "length mismatch"),
    (lambda y: np.where(np.arange(y.size) == 7, np.nan, y), "non-finite"),
    (lambda y: np.where(np.arange(y.size) == 7, np.inf, y), "non-finite"),
    (lambda y: np.empty((0, y.size)), "no curves"),
])
def test_bad_curves_raise(bad, match):
    y = clean("sphere")
    with pytest.raises(ValueError, match=match):
        am.best_fit("sphere", Q, bad(y))


def test_bad_arguments_raise():
    y = clean("sphere")
    with pytest.raises(ValueError, match="not a known shape"):
        am.best_fit("ellipsoid", Q, y)
    with pytest.raises(ValueError, match="q_nm"):
        am.best_fit("sphere", -Q, y)
    with pytest.raises(ValueError, match="noise"):
        am.best_fit("sphere", Q, y, noise=0.0)
    with pytest.raises(ValueError, match="labels"):
        am.ambiguity_table(Q, y[None], np.array([3]))
    with pytest.raises(ValueError, match="n_random"):
        am.check_subset(Q, y[None], np.array([0]), n_random=5)
    with pytest.raises(ValueError, match="effort"):
        am.check_subset(Q, y[None], np.array([0]), n_random=1, effort="slow")
    with pytest.raises(ValueError, match="effort"):
        am.classify(Q, y, effort="slow")
    with pytest.raises(ValueError, match="not a known shape"):
        am.classify(Q, y, shapes=("sphere", "ellipsoid"))


def test_evidence_of_a_well_determined_sphere_matches_laplace():
    # R = 3 nm: a sharp, near-Gaussian posterior, where Laplace's approximation is accurate
    rng = np.random.default_rng(1)
    y = clean("sphere") + np.log(rng.normal(1.0, 0.1, Q.size))
    fit = am.best_fit("sphere", Q, y[None], return_all=True, **SMALL)
    ev = am.log_evidence("sphere", Q, y[None], fit, n_samples=300, n_rounds=3)
    names = am.fit_names("sphere")
    u = fit["all_u"][0, np.argmin(fit["all_deviance"][0])]
    cov = am._fisher_cov("sphere", Q, names, u, {}, am.NOISE, None, "cpu")
    laplace = (-0.5 * fit["deviance"][0] + am.log_prior("sphere", am.to_params(names, u)) + u[0]
               + np.log(2 * np.pi) + 0.5 * np.log(np.linalg.det(cov)))
    assert ev["log_z"][0] == pytest.approx(laplace, abs=0.3)
    assert ev["log_occam"][0] < 0 and ev["ess"][0] > 100


def test_posteriors_of_clear_cases(clear_cases):
    y, tab = clear_cases
    post = am.posteriors(Q, y, tab, evidence_kwargs={"n_samples": 100, "n_rounds": 2})
    np.testing.assert_allclose(post["posterior"], [[1, 0], [0, 1]], atol=1e-12)
    assert np.isnan(post["log_z"]).all()          # one shape within the window: nothing to sample
    with pytest.raises(ValueError, match="keep_fits"):
        am.posteriors(Q, y, {k: v for k, v in tab.items() if k != "fits"})


def test_table_without_labels_has_no_margins(clear_cases):
    y, tab = clear_cases
    bare = am.ambiguity_table(Q, y, shapes=("sphere", "cylinder"), fit_kwargs=SMALL)
    assert "margin" not in bare and "labels" not in bare
    np.testing.assert_allclose(bare["deviance"], tab["deviance"], rtol=1e-6, atol=1e-6)


def test_classify_without_labels():
    # a noisy sphere of R = 3 nm and a noisy 30 nm rod: unambiguous, the Bayes classifier is sure
    rng = np.random.default_rng(2)
    y = np.stack([clean("sphere"), clean("cylinder", radius_nm=1.0, length_nm=30.0)])
    y = y + np.log(rng.normal(1.0, 0.1, y.shape))
    out = am.classify(Q, y)
    assert out["posterior"].shape == (2, 3) and list(out["bayes_shape"]) == [0, 2]
    np.testing.assert_allclose(out["posterior"].sum(axis=1), 1.0)
    assert out["posterior"].max(axis=1).min() > 0.99
    assert out["params"]["sphere"]["radius_nm"][0] == pytest.approx(3.0, rel=0.05)


def test_free_scale_is_profiled_in_closed_form():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(3)
    model = np.log(rng.uniform(0.01, 100.0, 60))
    obs = model + np.log(rng.normal(1.0, 0.1, 60)) + np.log(250.0)
    a = am.profile_offset(obs, model)
    best = minimize_scalar(lambda t: am.deviance(obs, model + t), bounds=(0.0, 12.0), method="bounded",
                           options={"xatol": 1e-10})
    assert a == pytest.approx(best.x, abs=1e-6) and np.exp(a) == pytest.approx(250.0, rel=0.05)
    profiled = am.deviance(obs, model, free_scale=True)
    assert profiled == pytest.approx(best.fun, rel=1e-9)
    for c in (-700.0, -7.0, 7.0, 700.0):          # any factor, without overflow
        assert am.deviance(obs + c, model, free_scale=True) == pytest.approx(profiled, rel=1e-9)
        assert am.profile_offset(obs + c, model) == pytest.approx(a + c, abs=1e-9)


def test_best_fit_with_a_free_scale_does_not_depend_on_it():
    y = clean("sphere")
    fits = {c: am.best_fit("sphere", Q, y + np.log(c), free_scale=True, **SMALL) for c in (1e-3, 1.0, 1e3)}
    for c, fit in fits.items():
        for name, value in TRUTH["sphere"].items():
            assert fit["params"][name] == pytest.approx(fits[1.0]["params"][name], rel=1e-6)
            assert fit["params"][name] == pytest.approx(value, rel=0.01)
        assert fit["deviance"] == pytest.approx(fits[1.0]["deviance"], abs=1e-6)
        # the ML scale of a noise-free curve lies ~sigma^2 = 1 % below the factor (see above)
        assert fit["scale"] == pytest.approx(c, rel=0.02)
    assert "scale" not in am.best_fit("sphere", Q, y, **SMALL)


def test_scale_and_background_are_the_maximum_likelihood():
    import torch
    from scipy.optimize import minimize

    rng = np.random.default_rng(8)
    model = clean("sphere")
    obs = np.log(30.0 * np.exp(model) * rng.normal(1.0, 0.1, Q.size) + 0.2 * 30.0 * np.exp(model[-8:]).mean())
    fit = am.background_fit(obs, model)

    def dev(p):
        r = obs - np.log(np.exp(p[0]) * np.exp(model) + max(p[1], 0.0))
        return np.sum(np.expm1(r) ** 2 / 0.1 ** 2 - 2.0 * r)

    best = minimize(dev, [np.log(fit["scale"]) + 0.05, 0.9 * fit["background"]], method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000})
    assert fit["scale"] == pytest.approx(np.exp(best.x[0]), rel=1e-5)
    assert fit["background"] == pytest.approx(best.x[1], rel=1e-4)
    assert dev_of(obs, fit["log_i"]) == pytest.approx(best.fun, abs=1e-6)
    # the least-squares values alone are measurably off the maximum
    ls = am._scale_background_t(torch.as_tensor(obs)[None], torch.as_tensor(model)[None], 0.1, n_iter=0)[0]
    assert dev_of(obs, ls[0].numpy()) > best.fun + 0.1


@pytest.mark.parametrize("b_rel", [0.0, 0.05, 0.5, 300.0])   # 300: far beyond the prior (b <= 3)
def test_background_integrated_over_its_prior_matches_brute_force(b_rel):
    """The Laplace-and-quadrature marginal over the background against a 2-D grid integral of the
    exact likelihood over (log S, B) under the training prior (absent 25 %, B = b T, b log-uniform)."""
    import torch
    from scipy.special import logsumexp

    rng = np.random.default_rng(11)
    model = clean("sphere")
    P = s1.BACKGROUND
    tail = 30.0 * np.exp(model[-P["n_tail"]:].mean())
    obs = np.log(30.0 * np.exp(model) * rng.normal(1.0, 0.1, Q.size) + b_rel * tail)
    got = float(am._background_deviance_t(torch.as_tensor(obs)[None], torch.as_tensor(model)[None], 0.1)[0])
    d0_fit = float(am._deviance_t(torch.as_tensor(obs)[None], torch.as_tensor(model)[None], 0.1, True)[0])
    # never worse than the background-free explanation alone, however far the data are from the prior
    assert np.isfinite(got) and got <= d0_fit - 2.0 * np.log(P["absent"]) + 1e-6
    if b_rel > s1.BACKGROUND["high"]:
        return

    fit = am.background_fit(obs, model)
    log_s = np.log(fit["scale"]) + np.linspace(-0.4, 0.4, 241)
    dls = log_s[1] - log_s[0]

    def dev(ls, B):                   # (n_s,), (n_b,) -> (n_s, n_b)
        r = obs - np.log(np.exp(ls)[:, None, None] * np.exp(model) + B[None, :, None])
        return np.sum(np.expm1(r) ** 2 / 0.1 ** 2 - 2.0 * r, axis=-1)

    d0 = dev(log_s, np.zeros(1))[:, 0]
    log_z0 = logsumexp(-0.5 * d0) + np.log(dls)
    # B on a log grid over the prior's range for each S (T moves with S), density 1 / (B log(high/low))
    t = np.linspace(np.log(P["low"]), np.log(P["high"]), 4001)
    dt = t[1] - t[0]
    log_zb = logsumexp([logsumexp(-0.5 * dev(np.array([ls]), np.exp(ls + model[-P["n_tail"]:].mean() + t))[0])
                        for ls in log_s]) + np.log(dls * dt / np.log(P["high"] / P["low"]))
    # Laplace in log S normalised by the background-free fit's: D = D_0 - 2 log(Z / Z_0)
    want = d0_fit - 2.0 * (np.logaddexp(np.log(P["absent"]) + log_z0, np.log1p(-P["absent"]) + log_zb) - log_z0)
    assert got == pytest.approx(want, abs=0.3)


def dev_of(obs, log_model):
    r = obs - log_model
    return np.sum(np.expm1(r) ** 2 / 0.1 ** 2 - 2.0 * r)


def test_background_start_score_finds_scale_and_background():
    rng = np.random.default_rng(5)
    lib = np.log(rng.uniform(0.01, 100.0, (40, 50)))
    s_true, b_true = 3e4, 7.0                  # any scale (no overflow), a background
    y = np.stack([np.log(s_true * np.exp(lib[7]) + b_true), np.log(s_true * np.exp(lib[11]))])
    score = am._background_scores(lib, y)
    assert score.shape == (2, 40)
    assert score[0, 7] == pytest.approx(0.0, abs=1e-9) and score[1, 11] == pytest.approx(0.0, abs=1e-9)
    assert np.argmin(score[0]) == 7 and np.argmin(score[1]) == 11
    assert np.all(np.delete(score[0], 7) > 1e-3)
    # a curve that only a negative background could fit is scored with B = 0: relative residuals
    down = np.log(np.exp(lib[3]) - 0.5 * np.exp(lib[3]).min())
    a = np.exp(lib[3] - down)
    s = np.sum(a) / np.sum(a ** 2)                  # the best S of sum (S a - 1)^2
    assert am._background_scores(lib[3:4], down[None])[0, 0] == pytest.approx(np.sum((s * a - 1) ** 2), rel=1e-6)


def test_best_fit_with_a_background_finds_the_hard_sphere_mode():
    # a test curve of notebook 01 whose best fit, with starts picked on the low-q part only, sat at
    # the wrong volume fraction 1000 deviance units above the truth
    truth = {"radius_nm": 2.071, "radius_pd": 0.075, "volfraction": 0.05}
    y = np.log(np.exp(clean("sphere@hardsphere", **truth)) * 40.0 + 0.3)
    y_clean = clean("sphere@hardsphere", **truth)
    for curve in (y, y_clean):
        fit = am.best_fit("sphere@hardsphere", Q, curve, free_scale=True, free_background=True)
        assert fit["params"]["volfraction"] == pytest.approx(0.05)
        assert fit["params"]["radius_nm"] == pytest.approx(2.071, rel=0.01)
        assert fit["deviance"] <= 0.5      # the noise-free truth's is ~0


def test_likelihood_posterior_of_a_sphere_matches_laplace():
    # R = 3 nm, 10 % noise: a sharp, near-Gaussian posterior centred near the truth, whose width
    # Laplace's approximation (the inverse Fisher matrix at the best fit) gives
    rng = np.random.default_rng(4)
    y = clean("sphere") + np.log(rng.normal(1.0, 0.1, Q.size))
    post = am.likelihood_posterior("sphere", Q, y, n_draws=400, seed=1)
    s = post["samples"]
    assert s.shape == (1, 400, 2) and post["ess"][0] > 100
    lo, hi = am._bounds(am.fit_names("sphere"))
    assert np.all(np.log(s[0, :, 0]) >= lo[0]) and np.all((s[0, :, 1] >= 0) & (s[0, :, 1] <= 0.3))
    assert np.median(s[0, :, 0]) == pytest.approx(3.0, rel=0.01)
    q05, q95 = np.quantile(s[0, :, 0], [0.05, 0.95])
    assert q05 < 3.0 < q95
    names = am.fit_names("sphere")
    u = np.log(post["best"]["radius_nm"][0]), post["best"]["radius_pd"][0]
    cov = am._fisher_cov("sphere", Q, names, np.array(u), {}, am.NOISE, None, "cpu")
    assert np.std(np.log(s[0, :, 0])) == pytest.approx(np.sqrt(cov[0, 0]), rel=0.3)


def test_likelihood_posterior_with_a_free_scale_background_and_a_partial_curve():
    rng = np.random.default_rng(5)
    y = clean("sphere@hardsphere") + np.log(rng.normal(1.0, 0.1, Q.size))
    base = am.likelihood_posterior("sphere@hardsphere", Q, y, n_draws=200, free_scale=True)
    scaled = am.likelihood_posterior("sphere@hardsphere", Q, y + np.log(1e3), n_draws=200, free_scale=True)
    np.testing.assert_allclose(scaled["samples"], base["samples"], rtol=1e-6)
    s = base["samples"][0]
    assert np.isin(s[:, 2], s1.VOLFRACTIONS).all()                        # volume fractions on their grid
    assert np.median(s[:, 0]) == pytest.approx(2.5, rel=0.02)
    part = np.where(Q < 2.0, y, np.nan)                                  # the top of q not measured
    cut = am.likelihood_posterior("sphere@hardsphere", Q, part, n_draws=200, free_scale=True, free_background=True)
    assert np.isfinite(cut["samples"]).all() and np.median(cut["samples"][0, :, 0]) == pytest.approx(2.5, rel=0.05)
    with pytest.raises(ValueError, match="n_draws"):
        am.likelihood_posterior("sphere", Q, y, n_draws=0)

"""Study 1 on real measurements: the wide priors (sampling, supports, the likelihood under them,
the model names), and the flat background as a nuisance (training curves with one, the
likelihood's scale + background fit, the inverter asking its second opinion to fit it)."""

import numpy as np
import pytest

from test_inverter import NAMES, Q, SHAPE_PARAMS, SHAPES, make  # the same two-shape problem

from sashelpers.learn import inn, training
from sashelpers.physics import scatterers as sc
from sashelpers.studies import bayes_shapes as am
from sashelpers.studies import inn_scatterers as s1

pytestmark = pytest.mark.usefixtures("one_thread")
QS = s1.default_q_nm()


# --- wide priors ---------------------------------------------------------------------------------

def test_wide_priors_are_log_uniform_within_their_bounds():
    rng = np.random.default_rng(0)
    draw = s1.sample_parameters("cylinder", rng, 4000, "wide")
    r, length = draw["radius_nm"], draw["length_nm"]
    assert 0.5 <= r.min() and r.max() <= 50.0 and 2.0 <= length.min() and length.max() <= 200.0
    # log-uniform: the median is the geometric mean of the bounds, each decade holds half the draws
    assert np.median(r) == pytest.approx(5.0, rel=0.1) and np.median(length) == pytest.approx(20.0, rel=0.1)
    assert np.mean(r < 5.0) == pytest.approx(0.5, abs=0.03)
    assert 0.0 <= draw["radius_pd"].min() and draw["radius_pd"].max() <= 0.3
    paper = s1.sample_parameters("sphere", np.random.default_rng(0), 4000)
    assert np.quantile(paper["radius_nm"], 0.999) < 6.0          # the paper's stay as they were
    with pytest.raises(ValueError, match="priors="):
        s1.sample_parameters("sphere", rng, 3, "huge")
    with pytest.raises(ValueError, match="priors="):
        s1.make_dataset(n_per_shape=2, priors="huge", cache=False)


def test_wide_dataset_chunk_uses_the_wide_priors_and_the_float32_kernel():
    config = {"shape": "cylinder", "q_nm": list(QS[::16]), "engine": "torch", "priors": "wide",
              "kernel_dtype": "float32", **s1.CURVE_SETTINGS}
    out = s1.curves_chunk(config, 0, 0, 12)
    assert np.isfinite(out["log_i"]).all()
    r = out["params"][:, sc.PARAM_NAMES.index("radius_nm")]
    assert r.max() > 6.0            # a paper prior draw above 6 nm has probability ~1e-5 per curve
    ref = s1.curves_chunk(dict(config, kernel_dtype="float64"), 0, 0, 12)
    np.testing.assert_allclose(out["log_i"], ref["log_i"], atol=1e-3)   # same draws, float32 kernel


def test_log_uniform_prior_quantile_and_limits():
    pr = s1.PRIORS_WIDE["sphere"]["radius_nm"]
    assert inn.prior_quantile(pr, 0.5) == pytest.approx(5.0)
    assert inn.prior_quantile(pr, 0.999) == pytest.approx(50.0 * 100 ** -0.001)
    assert inn.prior_support("radius_nm", pr) == (0.5, 50.0)


def test_model_names_and_paths():
    assert s1.default_model_path("quick").name == "study1_quick_scalefree.pt"
    assert s1.default_model_path("quick", "wide").name == "study1_quick_wide.pt"
    assert s1.default_model_path("quick", "paper").name == "study1_quick.pt"
    with pytest.raises(ValueError, match="notebook 01 saves"):
        s1.default_model_path("quick", "huge")
    if not s1.default_model_path("paper", "wide").exists():    # a paper-profile model is not in git
        with pytest.raises(ValueError, match="study1_paper_wide.pt"):
            s1.load_inverter("wide", profile="paper")


def test_likelihood_supports_and_prior_of_the_wide_set():
    assert am.support("paper") == am.SUPPORT
    wide = am.support("wide")
    assert wide["radius_nm"] == (0.5, 50.0) and wide["length_nm"] == (2.0, 200.0)
    # the log-uniform density integrates to one over its support (times the width's density at 0.1)
    from scipy.stats import truncnorm

    r = np.geomspace(0.5, 50.0, 20001)
    dens = np.exp(am.log_prior("sphere", {"radius_nm": r, "radius_pd": np.full_like(r, 0.1)}, "wide"))
    p_pd = truncnorm.pdf(0.1, -0.1 / 0.03, 0.2 / 0.03, loc=0.1, scale=0.03)
    assert np.trapezoid(dens, r) == pytest.approx(p_pd, rel=1e-3)
    assert np.isneginf(am.log_prior("sphere", {"radius_nm": np.array([60.0]), "radius_pd": np.array([0.1])},
                                    "wide")).all()


def test_best_fit_under_the_wide_priors_sizes_a_large_sphere():
    y = np.log(sc.torch_intensity("sphere", QS, {"radius_nm": np.array([20.0]), "radius_pd": np.array([0.1])},
                                  device="cpu").numpy()[0])
    fit = am.best_fit("sphere", QS, y + np.log(30.0), free_scale=True, priors="wide", library_size=300)
    assert fit["params"]["radius_nm"] == pytest.approx(20.0, rel=0.01)
    paper = am.best_fit("sphere", QS, y + np.log(30.0), free_scale=True, library_size=300)
    assert paper["params"]["radius_nm"] <= 10.0 + 1e-9            # the paper's support ends at 10 nm


def test_inverter_hands_its_priors_and_background_to_the_second_opinion():
    log_i, labels, params = make(60, 0)
    calls = []

    def recorder(q, y, shapes, effort, free_scale=False, priors=None, free_background=False):
        calls.append((free_scale, priors, free_background))
        return np.tile([0.0, 1.0], (len(y), 1))

    priors = {"sphere": {"radius_nm": {"distribution": "log-uniform", "lower": 1.0, "upper": 4.0, "unit": "nm"}}}
    for background in (False, True):
        model = inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES,
                                                     hidden=8, n_blocks=1, scale_free=True, priors=priors,
                                                     background=background, second_opinion=recorder)
        model.classify(log_i[:2], refine_below=1.5)
        assert calls[-1] == (True, model.priors, background)
        assert model.priors["sphere"]["radius_nm"]["distribution"] == "log-uniform"
        assert model.card()["arch"].get("background", False) is background


# --- the flat background as a nuisance -------------------------------------------------------------

def test_add_background_is_relative_to_the_curve_and_scales_with_it():
    rng = np.random.default_rng(0)
    y = np.log(sc.torch_intensity("sphere", QS, {"radius_nm": np.full(400, 3.0), "radius_pd": np.full(400, 0.1)},
                                  device="cpu").numpy())
    out, b = s1.add_background(y, np.random.default_rng(1), noise=0.0)
    assert np.mean(b == 0) == pytest.approx(s1.BACKGROUND["absent"], abs=0.06)
    on = b > 0
    assert b[on].min() >= s1.BACKGROUND["low"] and b[on].max() <= s1.BACKGROUND["high"]
    tail = np.exp(y[:, -8:].mean(axis=1))
    np.testing.assert_allclose(np.exp(out[:, -1]) - np.exp(y[:, -1]), b * tail, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(out[~on], y[~on], rtol=1e-6)
    # the same draws on the curve times 1e3: the same curve with background, times 1e3
    scaled, b2 = s1.add_background(y + np.log(1e3), np.random.default_rng(1), noise=0.0)
    np.testing.assert_allclose(b2, b)
    np.testing.assert_allclose(scaled - np.log(1e3), out, atol=1e-4)
    with pytest.raises(ValueError, match="absent"):
        s1.add_background(y, rng, absent=1.5)
    assert rng is not None


def test_background_fit_recovers_scale_and_background():
    i_model = np.exp(am.library("sphere", QS, 20, priors="paper")["log_i"][0, 3].astype(np.float64))
    rng = np.random.default_rng(2)
    for scale, rel_b in ((1e-3, 0.5), (1.0, 2.0), (1e3, 0.0)):
        b = rel_b * scale * i_model[-8:].mean()
        obs = np.log(scale * i_model * rng.normal(1, 0.02, QS.size) + b)
        fit = am.background_fit(obs, np.log(i_model))
        assert fit["scale"] == pytest.approx(scale, rel=0.03)
        assert fit["background"] == pytest.approx(b, rel=0.05, abs=1e-3 * scale * i_model[-1])
        # the profiled deviance with a free background is the same at any factor
        d = [float(am._deviance_t(*(__import__("torch").as_tensor(v) for v in (obs + np.log(c), np.log(i_model))),
                                  0.1, True, True)) for c in (1e-3, 1e3)]
        assert d[0] == pytest.approx(d[1], rel=1e-6)


def test_best_fit_with_a_free_background_sees_through_it():
    truth = {"radius_nm": 3.0, "radius_pd": 0.1}
    i_true = sc.torch_intensity("sphere", QS, {k: np.array([v]) for k, v in truth.items()}, device="cpu").numpy()[0]
    obs = np.log(50.0 * i_true + 50.0 * i_true[-8:].mean())          # B equal to the high-q signal
    fit = am.best_fit("sphere", QS, obs, free_background=True, library_size=300)
    assert fit["params"]["radius_nm"] == pytest.approx(3.0, rel=0.01)
    assert fit["scale"] == pytest.approx(50.0, rel=0.05)
    assert fit["background"] == pytest.approx(50.0 * i_true[-8:].mean(), rel=0.1)
    plain = am.best_fit("sphere", QS, obs, free_scale=True, library_size=300)
    assert plain["deviance"] > fit["deviance"] + 100          # without it the fit is poor


def test_a_model_trained_with_backgrounds_reads_through_them():
    """Tiny scale-free inverters trained with and without backgrounds, on test curves with a strong
    one (b in [1, 3]) at 1e-3 to 1e3: the one trained with backgrounds keeps its accuracy, calls
    them in domain and reads the sphere radius better than the one trained without."""
    log_i, labels, params = make(400, 0)
    idx = np.random.default_rng(1).permutation(len(labels))
    cfg = training.TrainConfig(epochs=15, batch_size=64, lr=3e-3, patience=5, progress=False)
    t_log, t_lab, t_par = make(60, 5)
    t_bg = s1.add_background(t_log, np.random.default_rng(6), n_tail=4, noise=0.05, absent=0.0, low=1.0, high=3.0)[0]
    sph = t_lab == 0
    out = {}
    for background in (False, True):
        train = s1.add_background(log_i, np.random.default_rng(4), n_tail=4, noise=0.05)[0] if background else log_i
        model = inn.ShapeInverter.from_training_data(Q, train, labels, params, SHAPES, SHAPE_PARAMS, NAMES, hidden=32,
                                                     n_blocks=2, scale_free=True, background=background)
        model.fit(train, labels, params, NAMES, idx[:340], idx[340:], cfg, device="cpu")
        radius = np.median(model.posterior_samples(t_bg[sph], "sphere", 100), axis=1)[:, 0]
        out[background] = {"mae": np.abs(radius - t_par[sph, 0]).mean(), "in_domain": model.in_domain(t_bg).mean(),
                           "model": model}
    assert out[True]["mae"] < 0.8 * out[False]["mae"], out
    assert out[True]["in_domain"] >= 0.95 and out[True]["in_domain"] > out[False]["in_domain"], out
    model = out[True]["model"]
    clean = (model.shape_probabilities(t_log).argmax(1) == t_lab).mean()
    for c in (1e-3, 1.0, 1e3):
        acc = (model.shape_probabilities(t_bg + np.log(c)).argmax(1) == t_lab).mean()
        assert acc >= clean - 0.05 and acc >= 0.85, (c, acc, clean)


# --- partial q ranges ------------------------------------------------------------------------------

def test_random_crops_cut_contiguous_windows_that_hold_the_core():
    y = np.zeros((500, 40), np.float32)
    out, core = inn.random_crops(y, np.random.default_rng(0), fraction=0.5, max_cut_low=0.3, max_cut_high=0.2)
    assert core == (12, 40 - 1 - 8)
    cut = ~np.isfinite(out)
    assert np.mean(cut.any(axis=1)) == pytest.approx(0.5, abs=0.08)
    assert not cut[:, core[0]:core[1] + 1].any()                # every window holds the core
    for row in cut:                                             # one window: NaN only at the ends
        inside = np.flatnonzero(~row)
        assert inside[-1] - inside[0] + 1 == inside.size
    with pytest.raises(ValueError, match="fraction"):
        inn.random_crops(y, np.random.default_rng(0), fraction=2.0)


@pytest.fixture(scope="module")
def masked_model(tmp_path_factory):
    """A tiny scale-free masked inverter trained on cropped curves; (model, core q range, saved path)."""
    log_i, labels, params = make(400, 0)
    cropped, core = inn.random_crops(log_i, np.random.default_rng(2), fraction=0.6, max_cut_low=0.3, max_cut_high=0.3)
    q_req = (Q[core[0]], Q[core[1]])
    model = inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES, hidden=32,
                                                 n_blocks=2, scale_free=True, masked=True, q_required_nm=q_req)
    idx = np.random.default_rng(1).permutation(len(labels))
    cfg = training.TrainConfig(epochs=15, batch_size=64, lr=3e-3, patience=5, progress=False)
    model.fit(cropped, labels, params, NAMES, idx[:340], idx[340:], cfg, device="cpu")
    return model, q_req, model.save(tmp_path_factory.mktemp("masked") / "m")


def test_a_masked_model_reads_partial_curves_and_refuses_too_short_ones(masked_model):
    model, q_req, _ = masked_model
    log_i, labels, _ = make(40, 5)
    keep = (Q >= q_req[0] * 0.999) & (Q <= Q[-8])                # cut at both ends, the core kept
    right = []
    for row in range(12):
        v = model.predict(Q[keep], 1e3 * np.exp(log_i[row][keep].astype(np.float64)), n_samples=50,
                          refine_below=None)
        assert v.diagnostics["measured_fraction"] == pytest.approx(keep.mean(), abs=0.03)
        right.append(v.in_domain and v.shape == SHAPES[labels[row]])
    assert np.mean(right) >= 0.8
    with pytest.raises(ValueError, match=r"covers at least \["):
        model.predict(Q[Q > 1.0], np.exp(log_i[0][Q > 1.0].astype(np.float64)))
    # the features carry the mask; a complete curve reads as before
    assert model.features(log_i[:1]).shape == (1, 2 * len(Q))


def test_partial_curves_far_from_the_training_curves_are_out_of_domain(masked_model):
    model, q_req, _ = masked_model
    keep = Q >= q_req[0] * 0.999
    big = np.exp(np.log(sc.sasmodels_intensity("sphere", Q, radius_nm=15.0, radius_pd=0.1, radius_pd_n=15, sld=1,
                                               sld_solvent=0, background=0)))
    with pytest.warns(UserWarning, match="outside the training domain"):
        v = model.predict(Q[keep], big[keep])
    assert not v.in_domain and v.parameters is None
    log_i, _, _ = make(20, 7)
    part = np.where(keep, log_i, np.nan)
    score, threshold = model.features.domain_check(part)
    assert (score <= threshold).mean() >= 0.9 and np.all(threshold != model.features.threshold)


def test_masked_model_survives_save_and_load(masked_model):
    model, q_req, path = masked_model
    back = inn.ShapeInverter.load(path)
    assert back.masked and back.q_required_nm == pytest.approx(list(q_req))
    log_i, _, _ = make(6, 9)
    part = np.where(Q >= q_req[0], log_i, np.nan)
    np.testing.assert_allclose(back.shape_probabilities(part), model.shape_probabilities(part), rtol=1e-5)
    np.testing.assert_allclose(back.features.domain_check(part), model.features.domain_check(part), rtol=1e-6)


def test_a_complete_curve_model_refuses_a_partial_curve_naming_the_range():
    log_i, labels, params = make(60, 0)
    model = inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES,
                                                 hidden=8, n_blocks=1, scale_free=True)
    with pytest.raises(ValueError, match="complete curves only"):
        model.predict(Q[5:], np.exp(log_i[0][5:].astype(np.float64)))


def test_the_likelihood_fits_a_partial_curve_on_its_measured_points():
    truth = {"radius_nm": 3.0, "radius_pd": 0.1}
    y = np.log(sc.torch_intensity("sphere", QS, {k: np.array([v]) for k, v in truth.items()}, device="cpu").numpy())
    part = np.where(QS >= 0.15, y, np.nan)
    out = am.classify(QS, part + np.log(7.0), shapes=("sphere", "cylinder"), free_scale=True)
    assert out["bayes_shape"].tolist() == [0]
    assert out["params"]["sphere"]["radius_nm"][0] == pytest.approx(3.0, rel=0.01)
    with pytest.raises(ValueError, match="same q points"):
        am.classify(QS, np.stack([part[0], y[0]]), free_scale=True)


# --- one's own file, and every sasdata example through the same path ---------------------------------

def test_predict_file_drops_a_few_points_at_or_below_zero_and_refuses_many(masked_model, tmp_path):
    model, _, _ = masked_model
    log_i, _, _ = make(3, 11)
    intensity = np.exp(log_i[0].astype(np.float64))
    few = intensity.copy()
    few[-3:] = [-1e-3, 0.0, -2e-3]                         # noise around zero at high q
    path = tmp_path / "few.dat"
    np.savetxt(path, np.c_[Q, few], header="q (1/nm)  I (1/cm)")
    verdict, curve = s1.predict_file(path, model, n_samples=20, refine_below=None)
    assert len(curve) == len(Q) - 3 and np.all(curve.intensity > 0)
    assert any("3 point(s) with I <= 0" in n for n in verdict.notes)
    many = intensity.copy()
    many[-10:] = -1e-3
    np.savetxt(path, np.c_[Q, many], header="q (1/nm)  I (1/cm)")
    with pytest.raises(ValueError, match=r"10 of the 48 points .* have I <= 0"):
        s1.predict_file(path, model)


def test_every_sasdata_example_curve_goes_through_the_command_path(masked_model):
    from sashelpers.measured import io

    files = s1.example_curves()
    names = {p.name for p in files}
    assert {"Ludox_silica.xml", "apoferritin.txt", "sphere_60_q0_2.txt"} <= names
    assert "PolySpheres.txt" not in names and all(p.parent.name == "1d_data" for p in files)
    model, _, _ = masked_model
    pick = [io.example_path(n) for n in ("sphere_60_q0_2.txt", "1umSlitSmearSphere.ABS")]
    rows = s1.read_examples({"tiny": model}, pick, n_samples=20, refine_below=None)
    assert [r["file"] for r in rows] == ["sphere_60_q0_2.txt", "1umSlitSmearSphere.ABS"]
    refused = rows[1]
    assert refused["verdict"] is None and "covers q in" in refused["error"] and refused["reading"].startswith("refused")
    read = rows[0]
    assert read["verdict"] is not None and read["reading"]
    table = s1.examples_table(rows)
    assert table.count("\n") == 3 and "| tiny |" in table
    fig = s1.examples_figure(rows, "tiny", {"tiny": model}, ncols=2)
    assert "refused" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="no rows for model"):
        s1.examples_figure(rows, "other", {"tiny": model})


# --- the archived likelihood experiment's helpers -------------------------------------------------

def test_subset_of_an_evaluation_keeps_each_shapes_medians_in_step():
    lab = np.array([0, 2, 1, 0, 2, 1])
    ev = {"predicted": np.array([0, 2, 0, 0, 1, 1]), "predicted_network": np.array([0, 2, 0, 0, 1, 0]),
          "median": {"sphere": np.array([[1.0, 0.1], [2.0, 0.1]]),
                     "sphere@hardsphere": np.array([[3.0, 0.1, 0.1], [4.0, 0.1, 0.2]]),
                     "cylinder": np.array([[5.0, 0.1, 9.0, 0.1], [6.0, 0.1, 9.0, 0.1]])}}
    sub = am._subset_ev(ev, lab, np.array([1, 3, 5]))
    assert sub["predicted"].tolist() == [2, 0, 1] and sub["predicted_network"].tolist() == [2, 0, 0]
    assert sub["median"]["sphere"][:, 0].tolist() == [2.0]
    assert sub["median"]["sphere@hardsphere"][:, 0].tolist() == [4.0]
    assert sub["median"]["cylinder"][:, 0].tolist() == [5.0]


def test_likelihood_tables_render_the_record():
    shapes = sc.SHAPES

    def table(rel):
        out = {s: {"n": 10, "accuracy": 0.99, "accuracy_network": 0.95, "radius_nm_mae_nm": 0.1, "radius_nm_rel_mae": rel}
               for s in shapes}
        out["cylinder"]["length_nm_rel_mae"] = 2 * rel
        out["all"] = {"n": 30, "accuracy": 0.986, "accuracy_network": 0.967}
        return out

    bins = [{"lo_nm": 0.5, "hi_nm": 1.0, "n": 3, "accuracy": 1.0, "rel_mae": 0.25},
            {"lo_nm": 1.0, "hi_nm": 2.0, "n": 0, "accuracy": float("nan"), "rel_mae": float("nan")}]
    rec = {"network_all": table(0.1), "network": table(0.1), "likelihood": table(0.0123), "n_posterior": 30, "n_test": 1500,
           "coverage90": {"network": {s: {"radius_nm": 0.8} for s in shapes},
                          "likelihood": {f"{s}.radius_nm": 0.9 for s in shapes}},
           "by_size": {"network": {s: bins for s in shapes}, "likelihood": {s: bins for s in shapes}}}
    text = s1.likelihood_table(rec)
    assert "| cylinder | 95.0% / 99.0% | 10 of 10 | 10.00% / 1.23% | 20.0% / 2.5% | 0.80 / 0.90 |" in text
    assert "| all | 96.7% / 98.6% | 30 of 1500 |" in text
    by = s1.likelihood_by_size_table(rec)
    assert "| 0.5–1 | 25.0% → 25.0% (n=3)" in by and "| 1–2 | – | – | – |" in by

"""ShapeInverter on a small two-shape problem: classification, posterior, bad input, save/load."""

import warnings

import numpy as np
import pytest

from sashelpers.learn import inn, training
from sashelpers.physics.scatterers import sasmodels_intensity
from sashelpers.studies import bayes_shapes

Q = np.geomspace(0.1, 3.0, 48)
NAMES = ("radius_nm", "radius_pd", "length_nm")


def make(n, seed):
    rng = np.random.default_rng(seed)
    log_i, labels, params = [], [], []
    for i in range(n):
        shape = i % 2
        r = rng.uniform(1.0, 4.0)
        if shape == 0:
            pd = rng.uniform(0.02, 0.2)
            curve = sasmodels_intensity("sphere", Q, radius_nm=r, radius_pd=pd, radius_pd_n=15, sld=1,
                                        sld_solvent=0, background=0)
            params.append((r, pd, np.nan))
        else:
            length = rng.uniform(8, 20)
            curve = sasmodels_intensity("cylinder", Q, radius_nm=r, length_nm=length, sld=1, sld_solvent=0,
                                        background=0)
            params.append((r, np.nan, length))
        log_i.append(np.log(curve * rng.normal(1, 0.05, len(Q)).clip(0.5)))
        labels.append(shape)
    return np.array(log_i, np.float32), np.array(labels), np.array(params)


SHAPES = ("sphere", "cylinder")
SHAPE_PARAMS = {"sphere": ("radius_nm", "radius_pd"), "cylinder": ("radius_nm", "length_nm")}


def untrained(log_i, labels, params, **arch):
    return inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES, **arch)


@pytest.fixture(scope="module")
def fitted():
    log_i, labels, params = make(600, 0)
    model = untrained(log_i, labels, params, hidden=48, n_blocks=3, second_opinion=bayes_shapes.second_opinion)
    idx = np.random.default_rng(1).permutation(len(labels))
    cfg = training.TrainConfig(epochs=25, batch_size=64, lr=2e-3, patience=6, progress=False)
    model.fit(log_i, labels, params, NAMES, idx[:500], idx[500:], cfg, device="cpu")
    return model


def test_classifies_and_recovers_radius(fitted):
    log_i, labels, params = make(100, 5)
    probs = fitted.shape_probabilities(log_i)
    assert (probs.argmax(axis=1) == labels).mean() > 0.9
    spheres = labels == 0
    samples = fitted.posterior_samples(log_i[spheres], "sphere", 200)
    mae = np.abs(np.median(samples[:, :, 0], axis=1) - params[spheres, 0]).mean()
    assert mae < 0.3  # radii span 1-4 nm: a mean guess would miss by 0.75 nm


def test_predict_interpolates_and_rejects_bad_curves(fitted):
    q_fine = np.geomspace(0.05, 4.0, 200)
    curve = sasmodels_intensity("sphere", q_fine, radius_nm=2.5, radius_pd=0.1, radius_pd_n=15, sld=1,
                                sld_solvent=0, background=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fitted.predict(q_fine, curve, n_samples=100)
    lo, hi = np.quantile(out["samples"]["radius_nm"], [0.025, 0.975])
    assert out["shape"] == "sphere" and lo < 2.5 < hi and hi - lo < 2.0  # prior width is 3 nm
    with pytest.raises(ValueError, match="q has 200 points but I has 199"):
        fitted.predict(q_fine, curve[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        fitted.predict(q_fine, np.where(q_fine > 1, np.nan, curve))
    with pytest.raises(ValueError, match="positive"):
        fitted.predict(q_fine, -curve)
    with pytest.raises(ValueError, match="model needs"):
        fitted.predict(q_fine[q_fine < 2], curve[q_fine < 2])


def test_far_outside_the_prior_is_flagged(fitted):
    big = sasmodels_intensity("sphere", Q, radius_nm=15.0, sld=1, sld_solvent=0, background=0)
    with pytest.warns(UserWarning, match="outside the training domain"):
        out = fitted.predict(Q, big, n_samples=50)
    assert not out["in_domain"]


def test_save_and_load_give_the_same_predictions(fitted, tmp_path):
    fitted.save(tmp_path / "inv")
    again = inn.ShapeInverter.load(tmp_path / "inv")
    log_i, _, _ = make(10, 9)
    np.testing.assert_allclose(again.shape_probabilities(log_i), fitted.shape_probabilities(log_i), rtol=1e-5)
    np.testing.assert_allclose(again.posterior_samples(log_i, "cylinder", 20, seed=3),
                               fitted.posterior_samples(log_i, "cylinder", 20, seed=3), rtol=1e-4)


def test_unsure_curves_are_decided_by_the_likelihood(fitted):
    log_i, labels, _ = make(6, 11)
    net_only = fitted.classify(log_i, refine_below=None)
    assert not net_only["refined"].any()
    np.testing.assert_allclose(net_only["probabilities"], fitted.shape_probabilities(log_i))
    everything = fitted.classify(log_i, refine_below=1.5)    # > 1: every curve goes to the fits
    assert everything["refined"].all()
    np.testing.assert_allclose(everything["network"], net_only["probabilities"])
    assert (everything["probabilities"].argmax(axis=1) == labels).all()  # sphere vs long rod: clear
    np.testing.assert_allclose(everything["probabilities"].sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="refine_below"):
        fitted.classify(log_i, refine_below=0.0)
    out = fitted.predict(Q, np.exp(log_i[0]), n_samples=20, refine_below=1.5)
    assert out["shape_source"] == "second opinion" and set(out["network_probabilities"]) == {"sphere", "cylinder"}
    assert fitted.predict(Q, np.exp(log_i[0]), n_samples=20, refine_below=None)["shape_source"] == "network"


def test_without_a_second_opinion_the_network_decides(fitted, tmp_path):
    log_i, _, _ = make(4, 12)
    fitted.save(tmp_path / "inv")
    plain = inn.ShapeInverter.load(tmp_path / "inv")          # no second opinion attached
    out = plain.classify(log_i, refine_below=1.5)
    assert not out["refined"].any()
    np.testing.assert_allclose(out["probabilities"], fitted.shape_probabilities(log_i), rtol=1e-5)
    calls = []
    plain.second_opinion = lambda q, y, shapes, effort: calls.append(len(y)) or np.tile([0.25, 0.75], (len(y), 1))
    out = plain.classify(log_i, refine_below=1.5)
    assert calls == [4] and out["refined"].all() and (out["probabilities"].argmax(1) == 1).all()


def test_extra_classifier_curves_are_checked_and_used():
    log_i, labels, params = make(80, 3)
    model = untrained(log_i, labels, params, hidden=16, n_blocks=2)
    cfg = training.TrainConfig(epochs=1, batch_size=64, progress=False)
    idx = np.arange(80)
    with pytest.raises(ValueError, match="classifier_extra"):
        model.fit(log_i, labels, params, NAMES, idx[:60], idx[60:], cfg, device="cpu",
                  classifier_extra=(log_i[:, :-1], labels))
    with pytest.raises(ValueError, match="classifier_extra labels"):
        model.fit(log_i, labels, params, NAMES, idx[:60], idx[60:], cfg, device="cpu",
                  classifier_extra=(log_i, labels + 2))
    seen = []
    model.net["classifier"].register_forward_hook(lambda m, inp, out: seen.append(len(inp[0])) if m.training else None)
    model.fit(log_i, labels, params, NAMES, idx[:60], idx[60:], cfg, device="cpu", classifier_extra=(log_i, labels))
    assert sum(seen) == 60 + 80     # one epoch over the training curves and the extra ones


def test_evaluate_reports_the_network_and_the_final_verdict(fitted):
    log_i, labels, params = make(8, 13)
    ev = inn.evaluate(fitted, log_i, labels, params, NAMES, n_samples=20, refine_below=None)
    assert ev["shape_accuracy"] == ev["shape_accuracy_network"] and not ev["refined"].any()
    assert ev["confusion"] == ev["confusion_network"] and np.sum(ev["confusion"]) == 8
    ev2 = inn.evaluate(fitted, log_i, labels, params, NAMES, n_samples=20, refine_below=1.5)
    assert ev2["refined"].all() and ev2["shape_accuracy"] == 1.0
    assert ev2["confusion_network"] == ev["confusion"]
    assert set(ev2["mae"]) == {"sphere", "cylinder"}

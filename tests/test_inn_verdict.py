"""ShapeInverter.predict's Verdict: out of domain means no shape and no parameters, and the
second opinion never runs there; samples stay inside each parameter's support; one refine_below
default; a clear error for a missing model; the predict command on a curve file."""

import inspect
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from test_inverter import NAMES, Q, SHAPE_PARAMS, SHAPES, make  # the same two-shape problem

from sashelpers.learn import inn, training
from sashelpers.physics.scatterers import sasmodels_intensity
from sashelpers.studies import bayes_shapes
from sashelpers.studies import inn_scatterers as s1

ROOT = Path(__file__).resolve().parent.parent
#: the priors the curves of ``make`` are drawn from
PRIORS = {"sphere": {"radius_nm": {"distribution": "uniform", "lower": 1.0, "upper": 4.0, "unit": "nm"},
                     "radius_pd": {"distribution": "uniform", "lower": 0.02, "upper": 0.2, "unit": ""}},
          "cylinder": {"radius_nm": {"distribution": "uniform", "lower": 1.0, "upper": 4.0, "unit": "nm"},
                       "length_nm": {"distribution": "uniform", "lower": 8.0, "upper": 20.0, "unit": "nm"}}}


def sphere(q, radius_nm, pd=0.1):
    return sasmodels_intensity("sphere", q, radius_nm=radius_nm, radius_pd=pd, radius_pd_n=15, sld=1,
                               sld_solvent=0, background=0)


class Spy:
    """A second opinion that records its calls and is sure of the cylinder."""

    def __init__(self):
        self.calls = []

    def __call__(self, q, log_i, shapes, effort):
        self.calls.append(len(log_i))
        return np.tile([0.0, 1.0], (len(log_i), 1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny trained inverter (no priors attached), saved; (model, path)."""
    log_i, labels, params = make(400, 0)
    model = inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES,
                                                 hidden=32, n_blocks=2)
    idx = np.random.default_rng(1).permutation(len(labels))
    cfg = training.TrainConfig(epochs=20, batch_size=64, lr=3e-3, patience=6, progress=False)
    model.fit(log_i, labels, params, NAMES, idx[:340], idx[340:], cfg, device="cpu")
    path = model.save(tmp_path_factory.mktemp("model") / "tiny")
    return model, path


def load(path, **kwargs):
    return inn.ShapeInverter.load(path, **kwargs)


def out_of_domain_curves():
    rng = np.random.default_rng(3)
    return {"sphere of 15 nm": sphere(Q, 15.0), "pure noise": np.exp(rng.normal(0.0, 1.0, len(Q)))}


# --- out of domain -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sphere of 15 nm", "pure noise"])
def test_out_of_domain_gives_no_answer_and_never_asks_the_second_opinion(saved, name):
    spy = Spy()
    model = load(saved[1], second_opinion=spy)
    curve = out_of_domain_curves()[name]
    with pytest.warns(UserWarning, match="outside the training domain"):
        v = model.predict(Q, curve, n_samples=50, refine_below=1.5)   # > 1: would refine every curve
    assert not v.in_domain and spy.calls == []
    assert v.reasons and "domain score" in v.reasons[0] and v.domain_score > v.domain_threshold
    for attr in ("shape", "shape_probabilities", "shape_source", "network_probabilities", "parameters", "samples"):
        assert getattr(v, attr) is None, attr
    assert v["samples"] is None and v["in_domain"] is False          # the old dict keys still read
    d = v.to_dict()
    json.dumps(d)
    assert d["parameters"] is None and d["shape_probabilities"] is None
    text = v.table()
    assert "OUT OF DOMAIN" in text and "p =" not in text and "radius_nm" not in text


def test_no_confident_probability_on_a_flagged_curve(saved):
    """Whatever the network would say (here p >= 0.99 for one shape), a flagged curve carries no probability."""
    model = load(saved[1], second_opinion=Spy())
    for curve in out_of_domain_curves().values():
        log_i = model.prepare_curve(Q, curve)
        assert not model.in_domain(log_i)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = model.predict(Q, curve, n_samples=20)
        d = v.to_dict()
        assert [k for k in d if "probabilit" in k] == ["shape_probabilities", "network_probabilities"]
        assert d["shape_probabilities"] is None and d["network_probabilities"] is None


def test_a_size_beyond_the_prior_is_out_of_domain_before_the_second_opinion(saved):
    spy = Spy()
    narrow = {"sphere": {"radius_nm": {"distribution": "uniform", "lower": 1.0, "upper": 2.0, "unit": "nm"}}}
    model = load(saved[1], second_opinion=spy, priors=narrow)
    assert model.size_limits("sphere") == {"radius_nm": 2.0}
    curve = sphere(Q, 3.0)
    assert model.in_domain(model.prepare_curve(Q, curve))[0]          # the domain score lets it pass
    with pytest.warns(UserWarning, match="outside the training domain"):
        v = model.predict(Q, curve, n_samples=200, refine_below=1.5)
    assert not v.in_domain and v.parameters is None and spy.calls == []
    assert any("radius_nm reads back as" in r and "beyond 2 nm" in r for r in v.reasons), v.reasons


def test_without_priors_sizes_are_limited_by_the_training_range(saved):
    model, path = saved
    _, _, params = make(400, 0)
    limits = load(path).size_limits("cylinder")
    assert limits["radius_nm"] == pytest.approx(np.nanmax(params[1::2, 0]), rel=1e-6)
    assert limits["length_nm"] == pytest.approx(np.nanmax(params[1::2, 2]), rel=1e-6)


def test_classify_refines_only_curves_in_domain(saved):
    spy = Spy()
    model = load(saved[1], second_opinion=spy)
    good = np.log(sphere(Q, 2.5))
    bad = np.log(out_of_domain_curves()["pure noise"])
    out = model.classify(np.stack([good, bad]), refine_below=1.5)
    assert out["in_domain"].tolist() == [True, False] and out["refined"].tolist() == [True, False]
    assert spy.calls == [1]


# --- in domain ---------------------------------------------------------------------------------

def test_in_domain_verdict_has_intervals_inside_the_support(saved):
    model = load(saved[1], priors=PRIORS)
    v = model.predict(Q, sphere(Q, 2.5), n_samples=300, refine_below=None)
    assert v.in_domain and v.reasons == [] and v.shape == "sphere" and v.shape_source == "network"
    assert set(v.parameters) == {"radius_nm", "radius_pd"} and v.parameters["radius_nm"]["unit"] == "nm"
    support = model.support("sphere")
    for name, d in v.parameters.items():
        lo, hi = support[name]
        assert lo <= d["lo"] <= d["median"] <= d["hi"] <= hi
        assert np.all((v.samples[name] >= lo) & (v.samples[name] <= hi))
    assert v.parameters["radius_nm"]["lo"] < 2.5 < v.parameters["radius_nm"]["hi"]
    assert 0 < v.diagnostics["support_fraction"] <= 1
    text = str(v)
    assert "IN DOMAIN: sphere" in text and "90% interval" in text and " nm" in text
    json.dumps(v.to_dict(samples=True))
    with pytest.raises(KeyError):
        v["no such key"]


def test_samples_are_kept_inside_the_support(saved):
    """An untrained flow leaks well outside the priors; the samples are redrawn inside them."""
    log_i, labels, params = make(60, 5)
    raw = inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES,
                                               hidden=16, n_blocks=2)
    free = raw.posterior_samples(log_i[:2], "sphere", 2000, in_support=False)
    assert (free[..., 1] < 0).any()                                   # negative polydispersities
    kept = raw.posterior_samples(log_i[:2], "sphere", 2000)
    assert np.all(kept[..., 0] > 0) and np.all(kept[..., 1] >= 0)     # physical support by name
    raw.priors = {"sphere": {"radius_pd": {"lower": 0.1, "upper": 0.3}}}
    kept = raw.posterior_samples(log_i[:2], "sphere", 2000)
    assert np.all((kept[..., 1] >= 0.1) & (kept[..., 1] <= 0.3))
    raw.priors = {"sphere": {"radius_pd": {"lower": 5.0, "upper": 6.0}}}     # (almost) nothing inside
    kept = raw.posterior_samples(log_i[:1], "sphere", 200)
    assert np.all((kept[..., 1] >= 5.0) & (kept[..., 1] <= 6.0))
    study = inn.ShapeInverter.from_training_data(Q, log_i, labels, params, SHAPES, SHAPE_PARAMS, NAMES,
                                                 hidden=16, n_blocks=2, **s1.model_info())
    assert study.support("sphere") == {"radius_nm": (0.2, np.inf), "radius_pd": (0.0, 0.3)}
    kept = study.posterior_samples(log_i[:2], "sphere", 2000)
    assert np.all(kept[..., 0] >= 0.2) and np.all((kept[..., 1] >= 0) & (kept[..., 1] <= 0.3))


def test_supports_follow_the_priors():
    assert inn.physical_support("radius_nm") == (0.0, np.inf)
    assert inn.physical_support("length_pd") == (0.0, np.inf)
    assert inn.physical_support("volfraction") == (0.0, 1.0)
    pr = s1.PRIORS["sphere@hardsphere"]
    assert inn.prior_support("radius_nm", pr["radius_nm"]) == (0.2, np.inf)
    assert inn.prior_support("radius_pd", pr["radius_pd"]) == (0.0, 0.3)
    assert inn.prior_support("volfraction", pr["volfraction"], 0.05) == pytest.approx((0.025, 0.325))
    # 99.9 % of the study-1 radius prior lies below ~5.1 nm (notebook 01: "below 5 nm")
    assert 5.0 < inn.prior_quantile(pr["radius_nm"], inn.PRIOR_QUANTILE) < 5.2


# --- the likelihood's posterior for the parameters ------------------------------------------------

class Refiner:
    """A posterior refiner that records its calls and puts every draw at ``value`` (radius 2.75 nm)."""

    def __init__(self, ess=500.0, value=2.75):
        self.calls, self.ess, self.value = [], ess, value

    def __call__(self, shape, q, log_i, *, n_draws, seed):
        self.calls.append((shape, len(log_i)))
        d = len(SHAPE_PARAMS[shape])
        return {"samples": np.full((len(log_i), n_draws, d), self.value), "ess": np.full(len(log_i), self.ess)}


def test_predict_reports_the_likelihood_posterior_where_there_is_one(saved):
    ref = Refiner()
    model = load(saved[1], priors=PRIORS, posterior_refiner=ref)
    v = model.predict(Q, sphere(Q, 2.5), n_samples=50, refine_below=None)            # posterior="auto"
    assert v.in_domain and v.posterior_source == "likelihood" and ref.calls == [(v.shape, 1)]
    assert all(d["median"] == 2.75 for d in v.parameters.values()) and v.diagnostics["likelihood_ess"] == 500
    assert "the likelihood's posterior" in v.table()
    net = model.predict(Q, sphere(Q, 2.5), n_samples=50, refine_below=None, posterior="network")
    assert net.posterior_source == "network" and len(ref.calls) == 1
    assert net.parameters["radius_nm"]["median"] != 2.75
    # too few effective draws: the network's posterior, with a note
    thin = load(saved[1], priors=PRIORS, posterior_refiner=Refiner(ess=3.0))
    v = thin.predict(Q, sphere(Q, 2.5), n_samples=50, refine_below=None)
    assert v.posterior_source == "network" and any("3 effective draws" in n for n in v.notes)
    assert v.parameters["radius_nm"]["median"] == pytest.approx(net.parameters["radius_nm"]["median"])


def test_the_likelihood_posterior_never_runs_out_of_domain(saved):
    ref = Refiner()
    model = load(saved[1], posterior_refiner=ref)
    with pytest.warns(UserWarning, match="outside the training domain"):
        v = model.predict(Q, out_of_domain_curves()["pure noise"], n_samples=20)
    assert not v.in_domain and v.posterior_source is None and ref.calls == []
    with pytest.raises(ValueError, match="posterior_refiner"):
        load(saved[1]).predict(Q, sphere(Q, 2.5), posterior="likelihood")
    with pytest.raises(ValueError, match="allowed network, likelihood"):
        model.predict(Q, sphere(Q, 2.5), posterior="exact")


def test_evaluate_and_samples_with_the_likelihood_posterior(saved):
    log_i, labels, params = make(20, 9)
    model = load(saved[1], posterior_refiner=Refiner())
    ev = inn.evaluate(model, log_i, labels, params, NAMES, n_samples=30, refine_below=None, posterior="likelihood")
    assert ev["posterior"] == "likelihood"
    assert all(np.all(m == 2.75) for m in ev["median"].values())
    assert sorted(c[0] for c in model.posterior_refiner.calls) == sorted(SHAPES)
    # curves whose likelihood posterior is too thin keep the network's draws
    thin = load(saved[1], posterior_refiner=Refiner(ess=1.0))
    got = thin.posterior_samples(log_i[:3], "sphere", 40, posterior="likelihood")
    np.testing.assert_array_equal(got, thin.posterior_samples(log_i[:3], "sphere", 40))


def test_size_readback_puts_the_network_beside_the_likelihood(saved):
    log_i, labels, params = make(20, 11)

    class Truth(Refiner):      # a refiner that knows the answer: every draw at the true parameters
        def __call__(self, shape, q, y, *, n_draws, seed):
            rows = [int(np.flatnonzero((log_i == r).all(axis=1))[0]) for r in y]
            cols = [NAMES.index(p) for p in SHAPE_PARAMS[shape]]
            return {"samples": np.repeat(params[rows][:, None, cols], n_draws, axis=1), "ess": np.full(len(y), 99.0)}

    model = load(saved[1], posterior_refiner=Truth())
    rows = s1.size_readback(model, log_i, labels, params, {"sphere": 5, "cylinder": 3}, n_samples=50, param_names=NAMES)
    assert [(r["shape"], r["n"]) for r in rows] == [("sphere", 5), ("cylinder", 3)]
    assert all(r["likelihood_rel_mae"] == 0.0 and r["network_rel_mae"] > 0.0 and r["ess_min"] == 99.0 for r in rows)
    sel = np.flatnonzero(labels == 0)[:5]
    net = np.median(model.posterior_samples(log_i[sel], "sphere", 50)[..., 0], axis=1)
    assert rows[0]["network_rel_mae"] == pytest.approx(np.mean(np.abs(net - params[sel, 0]) / params[sel, 0]))


# --- one refine_below default ------------------------------------------------------------------

def test_refine_below_has_one_default_everywhere(saved):
    default = inn.REFINE_BELOW
    assert default == 0.9
    for fn in (inn.ShapeInverter.classify, inn.ShapeInverter.predict, inn.evaluate):
        assert inspect.signature(fn).parameters["refine_below"].default == default, fn.__name__
    for profile in ("quick", "standard", "paper"):
        assert s1.profile_sizes(profile)["refine_below"] == default
    assert load(saved[1]).predict(Q, sphere(Q, 2.5), n_samples=20).refine_below == default


# --- model card and loading --------------------------------------------------------------------

def test_the_card_records_priors_conventions_and_supports(saved, tmp_path):
    info = s1.model_info()
    assert info["conventions"]["noise"]["sigma"] == 0.1 and info["conventions"]["contrast"]["delta_rho"] == 1.0
    model = load(saved[1], **info)
    model.save(tmp_path / "with_card")
    card = json.loads((tmp_path / "with_card.json").read_text())
    assert card["priors"]["sphere"]["radius_nm"]["lower"] == 0.2
    assert "length_pd" not in card["priors"]["cylinder"]            # not a parameter of this model
    assert card["conventions"]["noise"]["model"].startswith("multiplicative")
    assert card["support"]["sphere"]["radius_pd"] == [0.0, 0.3] and card["support"]["sphere"]["radius_nm"] == [0.2, None]
    assert card["refine_below_default"] == inn.REFINE_BELOW
    again = load(tmp_path / "with_card", priors=PRIORS)            # the card's priors win
    assert again.support("sphere")["radius_nm"] == (0.2, np.inf)


def test_a_missing_model_is_a_value_error_naming_the_path(saved, tmp_path):
    with pytest.raises(ValueError, match=r"no saved ShapeInverter at .*nothing\.pt.*notebook 01"):
        inn.ShapeInverter.load(tmp_path / "nothing")
    (tmp_path / "half.pt").write_bytes(Path(saved[1]).read_bytes())
    with pytest.raises(ValueError, match=r"model card .*half\.json is missing"):
        inn.ShapeInverter.load(tmp_path / "half.pt")
    with pytest.raises(ValueError, match=r"no trained study-1 model at .*nothing\.pt(.|\n)*papermill"):
        s1.load_inverter(tmp_path / "nothing.pt")
    assert s1.default_model_path("quick").name == "study1_quick_scalefree.pt"


# --- the predict command -----------------------------------------------------------------------

def write_curve(path, intensity, q):
    np.savetxt(path, np.c_[q, intensity], header="q (1/nm)  I (1/cm)")
    return path


def test_predict_command_prints_the_verdict_and_saves_the_figure(saved, tmp_path, capsys):
    q = np.geomspace(0.08, 3.2, 150)
    rng = np.random.default_rng(4)
    curve = write_curve(tmp_path / "my_spheres.dat", sphere(q, 2.5) * rng.normal(1, 0.05, q.size), q)
    fig, js = tmp_path / "fig.png", tmp_path / "verdict.json"
    spy = Spy()
    rc = s1.predict_main([str(curve), "--model", str(saved[1]), "--figure", str(fig), "--json", str(js),
                          "--n-samples", "200"], second_opinion=spy)
    out = capsys.readouterr().out
    assert rc == 0 and "IN DOMAIN: sphere" in out and "radius_nm" in out and " nm" in out
    assert "only q in [0.1, 3] nm^-1" in out and "'a.u.'" in out                    # the notes
    assert fig.stat().st_size > 10_000
    record = json.loads(js.read_text())
    assert record["in_domain"] and record["refine_below"] == inn.REFINE_BELOW and "samples" not in record


def test_predict_command_out_of_domain_and_without_a_model(saved, tmp_path, capsys):
    q = np.geomspace(0.08, 3.2, 150)
    noise = write_curve(tmp_path / "noise.dat", np.exp(np.random.default_rng(5).normal(0, 1, q.size)), q)
    rc = bayes_shapes.main(["predict", str(noise), "--model", str(saved[1]),
                            "--figure", str(tmp_path / "noise.png")])
    out = capsys.readouterr().out
    assert rc == 0 and "OUT OF DOMAIN" in out and "domain score" in out and "radius_nm" not in out
    assert (tmp_path / "noise.png").stat().st_size > 10_000
    rc = s1.predict_main([str(noise), "--model", str(tmp_path / "absent.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "absent.pt" in err and "papermill" in err and "notebooks/01_inn_analytic_scatterers" in err


def test_predict_command_runs_as_a_module(saved, tmp_path):
    q = np.geomspace(0.08, 3.2, 150)
    curve = write_curve(tmp_path / "big.dat", sphere(q, 15.0), q)
    res = subprocess.run([sys.executable, "-m", "sashelpers.studies.bayes_shapes", "predict", str(curve),
                          "--model", str(saved[1]), "--network-only"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "OUT OF DOMAIN" in res.stdout and (tmp_path / "big_verdict.png").is_file()

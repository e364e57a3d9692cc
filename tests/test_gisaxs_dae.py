"""Study 4 (denoising autoencoder for GISAXS): input checks, the noise catalogue on the linear
intensity, classical denoisers tuned on validation data only, metrics, the measurement series
(seeded, exact labels, contiguous segments) and binning by clustering. About 10 s."""

import inspect
import io
import math
import time

import numpy as np
import pytest
import torch

from sashelpers.learn import nets
from sashelpers.physics import gisaxs, noise
from sashelpers.studies import gisaxs_cnn
from sashelpers.studies import gisaxs_dae as dae

CFG32 = gisaxs_cnn.dataset_config(image_size=32, n_orient=4)


@pytest.fixture(scope="module")
def images():
    """28 clean rendered images, 32 px, 4 per class."""
    return gisaxs_cnn.dataset_chunk(CFG32, 11, 0, 28)["images"]


@pytest.fixture(scope="module")
def series():
    return dae.measurement_series(60, 3, CFG32, n_segments=3)


def _delta(size=32):
    """A log-normalised image with one bright pixel (linear intensity: 1 there, 0 elsewhere)."""
    x = np.zeros((size, size), dtype=np.float32)
    x[size // 2, size // 2] = 1.0
    return x


# --- input checks --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (np.zeros(32), "expected one image (H, W) or a batch (n, H, W)"),
    (np.zeros((2, 2, 32, 32)), "expected one image (H, W) or a batch (n, H, W)"),
    (np.zeros((32, 16)), "must be square"),
    (np.zeros((4, 4)), "at least 8 px"),
    (np.zeros((0, 16, 16)), "empty"),
    (np.full((16, 16), np.nan), "non-finite"),
    (np.full((16, 16), np.inf), "non-finite"),
    (-np.ones((16, 16)), "negative"),
    (np.full((16, 16), 2.0), "above 1"),
    ("not an image", "numeric array"),
])
def test_check_images_refuses_bad_input(bad, message):
    with pytest.raises(ValueError, match="images") as err:
        dae.check_images(bad)
    assert message in str(err.value)


def test_check_images_accepts_and_knows_linear_intensities():
    x = dae.check_images(np.full((2, 16, 16), 0.5, dtype=np.float64))
    assert x.dtype == np.float32 and x.shape == (2, 16, 16)
    assert dae.check_images(np.full((16, 16), 1e6), linear=True).max() == 1e6
    with pytest.raises(ValueError, match="negative intensities"):
        dae.check_images(-np.ones((16, 16)), linear=True)


def test_public_entry_points_check_their_images(images):
    bad = images[:2].copy()
    bad[0, 3, 3] = np.nan
    rng = np.random.default_rng(0)
    for call in (lambda: dae.apply_noise(bad, "smear", 1.0, rng), lambda: dae.random_noise(bad, rng),
                 lambda: dae.denoise_classical(bad, "tv", {"weight": 0.1}), lambda: dae.psnr(images[:2], bad),
                 lambda: dae.ssim(bad, images[:2]), lambda: dae.binning_scores(bad, [0, 1]),
                 lambda: dae.tune_classical(bad, images[:2])):
        with pytest.raises(ValueError, match="non-finite"):
            call()
    with pytest.raises(ValueError, match="differ in shape"):
        dae.psnr(images[:2], images[:3])


# --- noise ------------------------------------------------------------------------------------------

def test_none_returns_the_input_unchanged(images):
    out = dae.apply_noise(images, "none", 0.0)
    np.testing.assert_array_equal(out, images)
    assert out is not images and out.dtype == np.float32
    with pytest.raises(ValueError, match="level 0"):
        dae.apply_noise(images, "none", 0.5)


def test_smear_acts_on_the_linear_intensity():
    x = _delta()
    out = dae.apply_noise(x, "smear", 1.0)
    c = 16
    # linear: the neighbour gets exp(-1/2) of the peak, so log-normalised 1 + log10(exp(-1/2)) / 6
    assert out[c, c] == pytest.approx(1.0)
    assert out[c, c + 1] == pytest.approx(1 - 0.5 / math.log(10) / 6, abs=1e-5)
    # the blur reaches as far as its kernel (4 sigma), where the linear Gaussian is exp(-8) of the
    # peak: 3.5 of the 6 decades, not the faint tail a blur of the log image would leave
    assert out[c, c + 4] == pytest.approx(1 - 8 / math.log(10) / 6, abs=1e-5) and out[c, c + 5] == 0
    # a blur of the log-normalised image itself would give a much fainter neighbour
    assert noise.smear(x, 1.0)[c, c + 1] < 0.2


def test_poisson_more_photons_is_closer_to_clean(images):
    hi = dae.apply_noise(images, "poisson", 1e5, np.random.default_rng(1))
    lo = dae.apply_noise(images, "poisson", 1e2, np.random.default_rng(1))
    assert dae.psnr(images, hi).mean() > dae.psnr(images, lo).mean() + 5


@pytest.mark.parametrize("kind", [k for k in dae.NOISE_TYPES if k != "none"])
def test_every_level_stays_in_range_and_is_seeded(images, kind):
    for level in dae.NOISE_LEVELS[kind]:
        a = dae.apply_noise(images[:4], kind, level, np.random.default_rng(5))
        b = dae.apply_noise(images[:4], kind, level, np.random.default_rng(5))
        assert a.dtype == np.float32 and a.shape == (4, 32, 32)
        assert a.min() >= 0 and a.max() <= 1
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - images[:4]).mean() > 1e-3, (kind, level)
    single = dae.apply_noise(images[0], kind, dae.NOISE_LEVELS[kind][0], np.random.default_rng(5))
    assert single.shape == (32, 32)


@pytest.mark.parametrize("condition", gisaxs_cnn.CONDITIONS)
def test_noise_of_condition_reproduces_study_3(images, condition):
    kind, level = dae.noise_of_condition(condition)
    ours = dae.apply_noise(images[:5], kind, level, np.random.default_rng(9))
    theirs = gisaxs_cnn.apply_condition(images[:5], condition, np.random.default_rng(9))
    np.testing.assert_array_equal(ours, theirs)


def test_severity_ranks_the_catalogue():
    assert dae.severity("none", 0.0) == 0.0
    for kind in dae.NOISE_TYPES[1:]:
        values = [dae.severity(kind, v) for v in dae.NOISE_LEVELS[kind]]
        n = len(values)
        assert values == pytest.approx([(k + 1) / n for k in range(n)]), kind
    assert dae.severity("gaussian", 0.3) == pytest.approx(0.5 + 0.25 * math.log(1.5) / math.log(2.5))
    assert dae.severity("poisson", 1e7) == 0.25 and dae.severity("poisson", 10) == 1.0


def test_random_noise_draws_from_the_catalogue(images):
    x = np.repeat(images[:4], 10, axis=0)
    noisy, kind, level = dae.random_noise(x, 3)
    assert noisy.shape == x.shape and noisy.dtype == np.float32 and kind.dtype == np.int64
    assert set(kind) == set(range(len(dae.NOISE_TYPES)))
    for k, v in zip(kind, level):
        assert v in dae.NOISE_LEVELS[dae.NOISE_TYPES[k]]
    none = kind == 0
    np.testing.assert_array_equal(noisy[none], x[none])
    assert (np.abs(noisy[~none] - x[~none]).mean(axis=(1, 2)) > 0).all()
    again = dae.random_noise(x, 3)
    np.testing.assert_array_equal(again[0], noisy)
    np.testing.assert_array_equal(again[1], kind)
    _, kind_c, level_c = dae.random_noise(x, 4, kinds=("gaussian",), continuous=True)
    assert (kind_c == 1).all() and (level_c >= 0.1).all() and (level_c <= 1.0).all()
    assert len(np.unique(level_c)) == len(x)


# --- classical denoisers --------------------------------------------------------------------------

@pytest.mark.parametrize("method", dae.METHODS)
def test_each_classical_method_keeps_shape_and_range(images, method):
    noisy = dae.apply_noise(images[:3], "gaussian", 0.5, np.random.default_rng(0))
    params = dae.CLASSICAL_GRID[method][-1]
    out = dae.denoise_classical(noisy, method, params)
    assert out.shape == noisy.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    one = dae.denoise_classical(noisy[1], method, params)
    np.testing.assert_allclose(one, out[1], atol=1e-6)  # each image on its own
    if method == "identity":
        np.testing.assert_array_equal(out, noisy)
    else:
        assert np.abs(out - noisy).mean() > 1e-3
    with pytest.raises(ValueError, match="unknown parameters"):
        dae.denoise_classical(noisy, method, {"bogus": 1})


def test_tuning_takes_only_validation_data():
    assert list(inspect.signature(dae.tune_classical).parameters) == ["noisy_val", "clean_val", "methods", "grid"]


@pytest.fixture(scope="module")
def split(images):
    rng = np.random.default_rng(2)
    val, test = images[:14], images[14:]
    conditions = ("gauss_0.5", "smear_1.0")
    validation = {c: (dae.apply_noise(val, *dae.noise_of_condition(c), rng), val) for c in conditions}
    test_noisy = {c: dae.apply_noise(test, *dae.noise_of_condition(c), rng) for c in conditions}
    return validation, test, test_noisy


def test_tuned_parameters_do_not_depend_on_the_test_set(split):
    validation, test, test_noisy = split
    a = dae.classical_baseline(validation, test_noisy)
    other = {c: dae.apply_noise(test[::-1], "poisson", 1e2, np.random.default_rng(7)) for c in test_noisy}
    b = dae.classical_baseline(validation, other)
    for c in validation:
        assert (a["tuned"][c]["method"], a["tuned"][c]["params"], a["tuned"][c]["psnr"]) == \
               (b["tuned"][c]["method"], b["tuned"][c]["params"], b["tuned"][c]["psnr"])
    direct = dae.tune_classical(validation)
    assert {c: (r["method"], r["params"]) for c, r in direct.items()} == \
           {c: (r["method"], r["params"]) for c, r in a["tuned"].items()}
    with pytest.raises(ValueError, match="no validation data"):
        dae.classical_baseline(validation, {"poisson": test_noisy["gauss_0.5"]})


def test_tuned_denoiser_beats_the_noisy_input_on_held_out_images(split):
    validation, test, test_noisy = split
    base = dae.classical_baseline(validation, test_noisy)
    tuned = base["tuned"]["gauss_0.5"]
    assert tuned["method"] != "identity" and tuned["psnr"] > tuned["noisy_psnr"]
    n_tried = sum(len(g) for g in dae.CLASSICAL_GRID.values())
    assert len(tuned["scores"]) == n_tried and tuned["psnr"] == max(s[2] for s in tuned["scores"])
    gain = dae.psnr(test, base["denoised"]["gauss_0.5"]).mean() - dae.psnr(test, test_noisy["gauss_0.5"]).mean()
    assert gain > 1.0  # dB on the test images the tuning never saw
    table = dae.metric_table(test, test_noisy, base["denoised"])
    assert set(table) == set(test_noisy) and set(table["gauss_0.5"]) == {"noisy", "best_classical"}
    row = table["gauss_0.5"]
    assert row["best_classical"]["psnr"] - row["noisy"]["psnr"] == pytest.approx(gain)
    assert row["best_classical"]["ssim"] > row["noisy"]["ssim"]


def test_tuning_one_array_group_and_identity_on_clean(images):
    res = dae.tune_classical(images[:6], images[:6], methods=("identity", "gaussian"))
    assert list(res) == ["all"] and res["all"]["method"] == "identity" and res["all"]["psnr"] == math.inf
    with pytest.raises(ValueError, match="clean_val is missing"):
        dae.tune_classical(images[:6])


# --- metrics ---------------------------------------------------------------------------------------

def test_psnr_and_ssim_known_values(images):
    x = images[:3] * 0.9
    assert dae.psnr(x, x).tolist() == [math.inf] * 3
    np.testing.assert_allclose(dae.psnr(x, x + 0.1), 20.0, atol=1e-4)  # MSE 0.01, data range 1
    np.testing.assert_allclose(dae.ssim(x, x), 1.0)
    assert (dae.ssim(x, np.clip(x + np.random.default_rng(0).normal(0, 0.2, x.shape), 0, 1)) < 0.9).all()
    assert dae.psnr(x[0], x[0] + 0.1).shape == (1,)


def test_metric_table_rows(images):
    clean = images[:4]
    noisy = {"a": dae.apply_noise(clean, "gaussian", 0.5, np.random.default_rng(0))}
    table = dae.metric_table(clean, noisy, {"a": clean}, dae={"a": noisy["a"]})
    assert table["a"]["best_classical"]["psnr"] == math.inf
    assert table["a"]["dae"] == table["a"]["noisy"]
    assert table["a"]["noisy"]["psnr"] == pytest.approx(dae.psnr(clean, noisy["a"]).mean())
    with pytest.raises(ValueError, match="conditions"):
        dae.metric_table(clean, noisy, {"b": clean})


def test_dae_outputs_shapes(images, one_thread):
    torch.manual_seed(0)
    model = nets.DenoisingAutoencoder(32, width=2, latent=5)
    out, codes = dae.dae_outputs(model, images[:7], batch_size=3)
    assert out.shape == (7, 32, 32) and codes.shape == (7, 5) and out.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(codes, model.encode(torch.from_numpy(images[:7])).numpy(), atol=1e-5)


# --- the measurement series -----------------------------------------------------------------------

def test_series_is_seeded(series):
    again = dae.measurement_series(60, 3, CFG32, n_segments=3)
    for key in ("images", "clean", "class_index", "segment", "noise_kind", "noise_level", "lattice_nm"):
        np.testing.assert_array_equal(again[key], series[key])
    assert series["class_index"][-1] != dae.DISORDERED
    np.testing.assert_array_equal(again["params"][-1]["angles_deg"], series["params"][-1]["angles_deg"])
    assert again["params"][0] == series["params"][0]
    other = dae.measurement_series(60, 4, CFG32, n_segments=3)
    assert not np.array_equal(other["images"], series["images"])
    assert not np.array_equal(other["segment"], series["segment"])


def test_series_shapes_and_segments(series):
    n = 60
    assert series["images"].shape == (n, 32, 32) and series["images"].dtype == np.float32
    assert len(series["params"]) == n and series["clean"].min() >= 0 and series["images"].max() <= 1
    seg, cls = series["segment"], series["class_index"]
    assert seg[0] == 0 and (np.diff(seg) >= 0).all() and set(seg) == {0, 1, 2}
    assert np.bincount(seg).min() >= n // 6
    for s in range(3):
        assert len(set(cls[seg == s])) == 1  # one structure per segment
    starts = np.flatnonzero(np.diff(seg)) + 1
    assert (cls[starts] != cls[starts - 1]).all()
    assert cls[0] == dae.DISORDERED and dae.SERIES_CLASSES[cls[0]] == "disordered"
    assert np.isnan(series["lattice_nm"][cls == dae.DISORDERED]).all()
    none = series["noise_kind"] == 0
    assert none.any() and (~none).any()
    np.testing.assert_array_equal(series["images"][none], series["clean"][none])
    for k, v, sev in zip(series["noise_kind"], series["noise_level"], series["severity"]):
        assert v in dae.NOISE_LEVELS[dae.NOISE_TYPES[k]] and sev == dae.severity(dae.NOISE_TYPES[k], v)


def test_series_labels_are_exact(series):
    """Re-render images of every segment from their recorded class and parameters."""
    seg = series["segment"]
    for s in range(3):
        for i in np.flatnonzero(seg == s)[[0, -1]]:
            c = int(series["class_index"][i])
            again = dae.render_series_image(c, series["params"][i], series["config"])
            np.testing.assert_array_equal(again, series["clean"][i])
            if c != dae.DISORDERED:
                direct = gisaxs_cnn.render(gisaxs.CLASS_NAMES[c], series["params"][i], CFG32)
                np.testing.assert_array_equal(direct, series["clean"][i])


def test_lattice_constant_drifts_slowly(series):
    seg, lat = series["segment"], series["lattice_nm"]
    for s in range(1, 3):
        a = lat[seg == s]
        steps = np.diff(a)
        assert (steps >= -1e-9).all() or (steps <= 1e-9).all()  # monotone drift
        np.testing.assert_allclose(steps, steps[0], atol=1e-9)  # linear in time
        assert abs(a[-1] / a[0] - 1) <= 0.1 + 1e-12
        assert CFG32["lattice_nm"][0] <= a.min() and a.max() <= CFG32["lattice_nm"][1]


def test_series_options_and_refusals():
    s = dae.measurement_series(12, 0, CFG32, n_segments=2, lattice_classes=("FCC[111]", "HCP[0001]"),
                               start_disordered=False, noise_kinds=("gaussian",))
    assert set(s["class_index"]) == {gisaxs.CLASS_NAMES.index("FCC[111]"), gisaxs.CLASS_NAMES.index("HCP[0001]")}
    assert (s["noise_kind"] == 1).all()
    with pytest.raises(ValueError, match="n_images"):
        dae.measurement_series(5, 0, CFG32, n_segments=3)
    with pytest.raises(ValueError, match="lattice class"):
        dae.measurement_series(12, 0, CFG32, lattice_classes=("XYZ",))


def test_a_500_image_series_is_quick():
    t0 = time.perf_counter()
    s = dae.measurement_series(500, 1, CFG32, n_segments=5)
    assert time.perf_counter() - t0 < 60
    assert len(s["images"]) == 500 and len(set(s["class_index"])) == 5


# --- binning ---------------------------------------------------------------------------------------

def _toy_clusters(n_per=30, k=3, seed=0):
    """k well-separated image patterns with a little noise, their labels, and good latent codes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    patterns = [np.exp(-((yy - 4 - 4 * j) ** 2 + (xx - 12 + 4 * j) ** 2) / 4.0) for j in range(k)]
    labels = np.repeat(np.arange(k), n_per)
    imgs = np.clip(np.stack([patterns[j] for j in labels]) + rng.normal(0, 0.02, (k * n_per, 16, 16)), 0, 1)
    centres = rng.normal(0, 5, (k, 8))
    codes = centres[labels] + rng.normal(0, 0.3, (k * n_per, 8))
    return imgs.astype(np.float32), labels, codes


def test_binning_scores_good_and_random_codes():
    imgs, labels, codes = _toy_clusters()
    good = dae.binning_scores(imgs, labels, codes, seed=0)
    assert set(good) == {"pixels", "pca", "dae"}
    assert good["dae"] > 0.95 and good["pixels"] > 0.95 and good["pca"] > 0.95
    rand = dae.binning_scores(imgs, labels, np.random.default_rng(1).normal(size=codes.shape))
    assert abs(rand["dae"]) < 0.1
    assert "dae" not in dae.binning_scores(imgs, labels)
    with pytest.raises(ValueError, match="labels"):
        dae.binning_scores(imgs, labels[:-1])


def test_cluster_codes_standardises():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    codes = np.column_stack([1000 * rng.normal(size=100), labels + 0.05 * rng.normal(size=100)])
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels, dae.cluster_codes(codes, 2, seed=0)) > 0.95
    assert adjusted_rand_score(labels, dae.cluster_codes(codes, 2, seed=0, standardise=False)) < 0.2
    np.testing.assert_array_equal(dae.cluster_codes(codes, 2, seed=3), dae.cluster_codes(codes, 2, seed=3))


def test_outlier_score_and_false_alarm_rate():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(4, 4))
    train, val, new = (rng.normal(size=(n, 4)) @ mix for n in (2000, 2000, 20000))
    out = (rng.normal(size=(200, 4)) + 4.0) @ mix
    assert dae.outlier_score(train, out).mean() > 3 * dae.outlier_score(train, new).mean()
    # chi distribution with 4 degrees of freedom: mean square 4
    assert (dae.outlier_score(train, new) ** 2).mean() == pytest.approx(4.0, rel=0.05)
    scaled = np.array([1.0, 1000.0, 1.0, 0.001])  # rescaling a latent dimension changes nothing
    np.testing.assert_allclose(dae.outlier_score(train * scaled, new * scaled), dae.outlier_score(train, new),
                               rtol=1e-6)
    thr = dae.false_alarm_threshold(train, val, rate=0.05)
    assert 0.035 < (dae.outlier_score(train, new) > thr).mean() < 0.065
    assert dae.false_alarm_threshold(train, val, rate=0.01) > thr
    with pytest.raises(ValueError, match="rate"):
        dae.false_alarm_threshold(train, val, rate=0.0)
    with pytest.raises(ValueError, match="dimensions"):
        dae.outlier_score(train, new[:, :3])


# --- documentation ----------------------------------------------------------------------------------

def test_docstrings_are_restructuredtext():
    docutils_core = pytest.importorskip("docutils.core")
    napoleon = pytest.importorskip("sphinx.ext.napoleon")
    config = napoleon.Config(napoleon_google_docstring=False, napoleon_numpy_docstring=True)
    docs = [("module", inspect.getdoc(dae))] + [
        (name, inspect.getdoc(obj)) for name, obj in vars(dae).items()
        if inspect.isfunction(obj) and obj.__module__ == dae.__name__ and not name.startswith("_")]
    problems = []
    for name, doc in docs:
        assert doc, f"{name} has no docstring"
        stream = io.StringIO()
        docutils_core.publish_doctree(str(napoleon.NumpyDocstring(doc, config, what="function")),
                                      settings_overrides={"report_level": 2, "halt_level": 5,
                                                          "warning_stream": stream})
        problems += [f"{name}: {line}" for line in stream.getvalue().splitlines() if line.startswith("<string>:")]
    assert not problems, "\n".join(problems)
    assert dae.STUDY == "04_gisaxs_denoising_autoencoder"


# --- the pipeline: sizes, training, noise head, scores, headlines ------------------------------------

TINY = {"width": 4, "latent": 8, "skips": False, "epochs": 3, "batch_size": 32, "lr": 1e-2, "seed": 0,
        "threads": 1}


def _blobs(n, seed=0, size=16):
    """n log-normalised images (6 decades) of one to three Gaussian spots on a faint background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lin = np.full((n, size, size), 1e-4)
    for k in range(n):
        for _ in range(rng.integers(1, 4)):
            (y0, x0), w = rng.uniform(3, size - 3, 2), rng.uniform(1.0, 2.5)
            lin[k] += rng.uniform(0.3, 1.0) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * w * w))
    return gisaxs.log_normalise(lin, 6.0)


def _tiny_dae(size=16, seed=0):
    return dae.build_dae(size, {**TINY, "seed": seed}).eval()


def test_profile_sizes_match_study_3():
    for profile in ("quick", "standard", "paper"):
        s = dae.profile_sizes(profile)
        assert s["image_size"] == gisaxs_cnn.profile_sizes(profile)["image_size"]
        assert set(dae.DAE_KEYS) <= set(s) and s["n_tune"] <= s["n_val"]
        assert s["series_length"] >= (200 if profile == "quick" else 500)
        n_train = gisaxs_cnn.profile_sizes(profile)["n_train"]
        assert s["n_val"] + (s["n_train"] or 0) <= n_train and s["n_head"] <= n_train - s["n_val"]
    assert dae.profile_sizes("quick") is not dae.SIZES["quick"]


def test_build_dae_is_seeded_and_pads_odd_sizes(one_thread):
    state = torch.random.get_rng_state()
    a, b = _tiny_dae(), _tiny_dae()
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(next(a.parameters()), next(_tiny_dae(seed=1).parameters()))
    odd = dae.build_dae(20, TINY).eval()  # as study 3's 125 px at the paper profile
    assert isinstance(odd, dae.PaddedAutoencoder) and odd.image_size == 20 and odd.inner.image_size == 24
    out, codes = dae.dae_outputs(odd, _blobs(3, size=20))
    assert out.shape == (3, 20, 20) and codes.shape == (3, 8)
    with pytest.raises(ValueError, match="expected"):
        odd(torch.zeros(2, 24, 24))


def test_train_dae_beats_the_noisy_input_with_fresh_noise(one_thread, monkeypatch):
    clean_tr, clean_va, clean_te = _blobs(400, 1), _blobs(40, 2), _blobs(40, 3)
    draws = []
    real = dae.random_noise

    def recording(images, rng, **kw):
        out = real(images, rng, **kw)
        draws.append(out[0])
        return out

    monkeypatch.setattr(dae, "random_noise", recording)
    model, history = dae.train_dae(clean_tr, clean_va, TINY, progress=False)
    assert len(history.train_loss) == TINY["epochs"] and not model.training
    # one fixed validation draw, then one fresh draw per epoch (epoch 0 drawn once, not twice)
    assert [len(d) for d in draws] == [40] + [400] * TINY["epochs"]
    assert all(not np.array_equal(draws[i], draws[i + 1]) for i in range(1, len(draws) - 1))
    noisy = dae.apply_noise(clean_te, "gaussian", 0.5, np.random.default_rng(4))
    out, _ = dae.dae_outputs(model, noisy)
    assert dae.psnr(clean_te, out).mean() > dae.psnr(clean_te, noisy).mean() + 3.0  # 8-9 dB over seeds 0-2
    with pytest.raises(ValueError, match="image size"):
        dae.train_dae(clean_tr, _blobs(4, size=24), TINY, progress=False)
    with pytest.raises(ValueError, match="sizes lacks"):
        dae.train_dae(clean_tr, clean_va, {"width": 4}, progress=False)


def test_noise_aware_dae_names_the_noise_in_its_noise_part(one_thread):
    clean_tr, clean_va, clean_te = _blobs(400, 1), _blobs(40, 2), _blobs(120, 3)
    sizes = {**TINY, "noise_code": 4, "noise_weight": 0.05, "epochs": 6}
    model, _ = dae.train_dae(clean_tr, clean_va, sizes, progress=False)
    assert model.aux_latent == 4 and model.aux_outputs == len(dae.NOISE_TYPES) + 1
    noisy, kind, level = dae.random_noise(clean_te, 5, kinds=("none", "gaussian", "smear"))
    out, z = model.decode_with_code(torch.as_tensor(noisy))
    assert torch.allclose(out, model(torch.as_tensor(noisy)))
    named = model.read_out(z)[:, :len(dae.NOISE_TYPES)].argmax(1).numpy()
    untrained = dae.build_dae(16, sizes).eval()
    guessed = untrained.read_out(untrained.encode(torch.as_tensor(noisy)))[:, :len(dae.NOISE_TYPES)].argmax(1)
    # 3 kinds drawn: chance 1/3; the trained read-out 0.77 here (seed 0), the untrained one at chance
    assert (named == kind).mean() > 0.65 and (guessed.numpy() == kind).mean() < 0.5
    plain = dae.train_dae(clean_tr, clean_va, {**TINY, "epochs": 6}, progress=False)[0]
    noise, structure = dae.split_code(model, z.detach().numpy())
    assert noise.shape == (120, 4) and structure.shape == (120, TINY["latent"] - 4)
    both = dae.split_code(plain, dae.dae_outputs(plain, noisy)[1])  # a plain DAE has no split
    assert both[0] is both[1] or np.array_equal(both[0], both[1])
    g = kind == 1  # the read-out does not stop it denoising
    assert dae.psnr(clean_te[g], dae.dae_outputs(model, noisy[g])[0]).mean() > dae.psnr(clean_te[g], noisy[g]).mean()
    with pytest.raises(ValueError, match="noise_weight"):
        dae.train_dae(clean_tr, clean_va, {**TINY, "noise_code": 4}, progress=False)
    with pytest.raises(ValueError, match="numbers"):
        dae.split_code(model, z.detach().numpy()[:, :3])
    with pytest.raises(ValueError, match="read-out"):
        plain.read_out(z)


def _separable_codes(n, seed, informative=True):
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(dae.NOISE_TYPES), n)
    sev = np.where(kind == 0, 0.0, rng.uniform(0.1, 1.0, n))
    if not informative:
        return rng.normal(size=(n, 6)), kind, sev
    centres = np.random.default_rng(99).normal(0, 4, (len(dae.NOISE_TYPES), 5))
    codes = np.column_stack([centres[kind] + rng.normal(0, 0.3, (n, 5)), 3 * sev + rng.normal(0, 0.05, n)])
    return codes, kind, sev


def test_noise_head_on_separable_and_on_random_codes():
    head = dae.noise_head(*_separable_codes(500, 0))
    good = dae.noise_id_scores(head, *_separable_codes(500, 1))
    assert good["accuracy"] > 0.98 and good["severity_r2"] > 0.95
    assert good["confusion"].shape == (5, 5) and good["confusion"].sum() == 500
    assert np.trace(good["confusion"]) == round(good["accuracy"] * 500)
    rand = dae.noise_id_scores(dae.noise_head(*_separable_codes(500, 2, False)), *_separable_codes(500, 3, False))
    assert 0.1 < rand["accuracy"] < 0.32 and rand["severity_r2"] < 0.1
    codes, kind, sev = _separable_codes(300, 4)
    seen = kind != 2  # a head that never saw poisson gives it probability 0
    k, probs, s = dae.identify_noise(dae.noise_head(codes[seen], kind[seen], sev[seen]), codes[:10])
    assert probs.shape == (10, 5) and (probs[:, 2] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert k.dtype == np.int64 and (k != 2).all() and ((s >= 0) & (s <= 1)).all()
    with pytest.raises(ValueError, match="single noise kind"):
        dae.noise_head(codes[:5], np.zeros(5, dtype=np.int64), sev[:5])
    with pytest.raises(ValueError, match="severity"):
        dae.noise_head(codes, kind, sev + 2)
    with pytest.raises(ValueError, match="dimensions"):
        dae.identify_noise(head, codes[:, :3])


def test_denoising_scores_tune_on_validation_images_only(one_thread, monkeypatch):
    clean_test, clean_val = _blobs(6, 5), _blobs(5, 6)
    seen = []
    real = dae.tune_classical

    def recording(noisy_val, clean_val=None, **kw):
        seen.append(noisy_val)
        return real(noisy_val, clean_val, **kw)

    monkeypatch.setattr(dae, "tune_classical", recording)
    res = dae.denoising_scores(_tiny_dae(), clean_test, clean_val, seed=3, methods=("identity", "gaussian", "tv"),
                               n_examples=2)
    assert sorted(c for d in seen for c in d) == sorted(gisaxs_cnn.CONDITIONS)
    test_rows = {im.tobytes() for im in clean_test}
    test_rows |= {im.tobytes() for c in gisaxs_cnn.CONDITIONS
                  for im in gisaxs_cnn.apply_condition(clean_test, c, gisaxs_cnn.condition_rng(3, c))}
    for noisy, clean in (pair for d in seen for pair in d.values()):
        np.testing.assert_array_equal(clean, clean_val)
        assert len(noisy) == len(clean_val)
        assert not test_rows & {im.tobytes() for im in np.concatenate([noisy, clean])}
    table = res["table"]
    assert set(table) == set(gisaxs_cnn.CONDITIONS) and set(table["clean"]) == {"noisy", "best_classical", "dae"}
    assert table["clean"]["noisy"]["psnr"] == math.inf
    noisy_mean = np.mean([table[c]["noisy"]["psnr"] for c in gisaxs_cnn.CONDITIONS[1:]])
    assert res["psnr_db"]["noisy"] == pytest.approx(noisy_mean) and math.isfinite(res["psnr_db"]["noisy"])
    assert set(res["ssim"]) == {"noisy", "best_classical", "dae"}
    assert res["psnr_gain_db"] == pytest.approx(res["psnr_db"]["dae"] - res["psnr_db"]["best_classical"])
    assert res["examples"]["gauss_0.5"]["dae"].shape == (2, 16, 16)
    with pytest.raises(ValueError, match="model takes"):
        dae.denoising_scores(_tiny_dae(), _blobs(2, size=24), clean_val, seed=3)


def test_rescue_scores_cover_every_condition(one_thread):
    torch.manual_seed(0)
    classifier = nets.SmallCNN(16, 7, width=2, hidden=8).eval()
    images, labels = _blobs(14, 7), np.arange(14) % 7
    res = dae.rescue_scores(classifier, _tiny_dae(), images, labels, seed=1, augmented=classifier)
    assert set(res) == {"noisy", "denoised", "augmented"}
    assert res["augmented"] == res["noisy"]  # the same network on the same noisy images
    for part in res.values():
        assert tuple(part) == gisaxs_cnn.CONDITIONS
        assert all(0.0 <= v <= 1.0 for v in part.values())
    direct = (nets.predict(classifier, images).numpy().argmax(1) == labels).mean()
    assert res["noisy"]["clean"] == pytest.approx(direct)
    with pytest.raises(ValueError, match="test_labels"):
        dae.rescue_scores(classifier, _tiny_dae(), images, labels[:3], seed=1)


def test_estimate_noise_names_one_image_and_refuses_bad_ones(one_thread):
    model = _tiny_dae()
    noisy, kind, level = dae.random_noise(_blobs(60, 8), 0)
    codes = dae.dae_outputs(model, noisy)[1]
    head = dae.noise_head(codes, kind, [dae.severity(dae.NOISE_TYPES[k], v) for k, v in zip(kind, level)])
    name, sev, probs = dae.estimate_noise(model, head, noisy[0])
    assert name in dae.NOISE_TYPES and 0.0 <= sev <= 1.0
    assert tuple(probs) == dae.NOISE_TYPES and sum(probs.values()) == pytest.approx(1.0)
    assert name == max(probs, key=probs.get)
    bad = noisy[0].copy()
    bad[2, 3] = np.nan
    for image, message in ((bad, "non-finite"), (_blobs(1, size=32)[0], "model's size"),
                           (noisy[:2], "one image"), (noisy[0] + 1.5, "above 1"), (np.zeros(16), "expected")):
        with pytest.raises(ValueError, match=message):
            dae.estimate_noise(model, head, image)


def test_class_probe_reads_a_class_the_code_holds(one_thread):
    model = _tiny_dae()
    labels = np.arange(120) % 2
    images = _blobs(120, 11)  # class 1: spots; class 0: a faint uniform glow
    images[labels == 0] = np.random.default_rng(12).uniform(0.05, 0.15, (60, 1, 1))
    acc = dae.class_probe(model, images[:80], labels[:80], {"clean": images[80:], "flat": np.zeros((40, 16, 16))},
                          labels[80:])
    assert acc["clean"] > 0.9 and acc["flat"] == pytest.approx(0.5)  # one code for every flat image: one class
    with pytest.raises(ValueError, match="train_labels"):
        dae.class_probe(model, images[:80], labels[:3], {"clean": images[80:]}, labels[80:])


def test_experiment_names_are_checked():
    with pytest.raises(ValueError, match="plain"):
        dae.experiment("skips", "quick")
    with pytest.raises(SystemExit):
        dae.main(["skips"])


def test_noise_to_apply_picks_the_nearest_catalogue_level():
    probs = {"none": 0.5, "gaussian": 0.1, "poisson": 0.05, "smear": 0.3, "resolution": 0.05}
    assert dae.noise_to_apply("gaussian", 0.5, probs) == ("gaussian", 0.2)  # severities .25 .5 .75 1
    assert dae.noise_to_apply("poisson", 1.0, probs) == ("poisson", 100.0)
    assert dae.noise_to_apply("none", 0.9, probs) == ("smear", 2.0)  # none: the likeliest kind with noise
    with pytest.raises(ValueError, match="one number per kind"):
        dae.noise_to_apply("smear", 0.5, {"smear": 1.0})
    with pytest.raises(ValueError, match="severity"):
        dae.noise_to_apply("smear", 1.5, probs)


def test_fine_tune_on_noise_leaves_the_original_alone(one_thread):
    torch.manual_seed(0)
    classifier = nets.SmallCNN(16, 7, width=2, hidden=8).eval()
    before = [t.clone() for t in classifier.state_dict().values()]
    images, labels = _blobs(56, 10), np.arange(56) % 7
    sizes3 = {"lr": 1e-2, "batch_size": 16, "patience": 2, "seed": 0, "epochs": 5, "threads": 1}
    tuned, history = dae.fine_tune_on_noise(classifier, (images[:42], labels[:42]), (images[42:], labels[42:]),
                                            "smear", 1.0, sizes3, seed=3, epochs=2)
    assert len(history.train_loss) == 2 and not tuned.training and tuned is not classifier
    assert all(torch.equal(a, b) for a, b in zip(before, classifier.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.state_dict().values()))
    with pytest.raises(ValueError, match="level"):
        dae.fine_tune_on_noise(classifier, (images, labels), (images, labels), "smear", -1.0, sizes3, seed=3)


def test_series_scores_shapes(one_thread):
    cfg = gisaxs_cnn.dataset_config(image_size=16, n_orient=4)
    model = _tiny_dae()
    noisy, kind, level = dae.random_noise(_blobs(40, 9), 1)
    head = dae.noise_head(dae.dae_outputs(model, noisy)[1], kind,
                          [dae.severity(dae.NOISE_TYPES[k], v) for k, v in zip(kind, level)])
    res = dae.series_scores(model, {"series_length": 24, "n_segments": 2, "seed": 0}, cfg, head=head)
    assert set(res["ari"]) == {"dae", "pixels", "pca"} and all(-1 <= v <= 1 for v in res["ari"].values())
    assert res["codes"].shape == (24, 8) and res["clusters"].shape == (24,) and len(res["class_index"]) == 24
    assert len(set(res["clusters"])) == len(set(res["class_index"])) == 2
    assert set(res["noise_id"]) == {"accuracy", "confusion", "severity_r2"}


def test_headlines_resolve_in_the_record(results_tmp):
    from sashelpers.core import report

    conds = gisaxs_cnn.CONDITIONS
    trio = {"noisy": 14.0, "best_classical": 16.0, "dae": 20.0}
    denoising = {"psnr_db": trio, "ssim": {k: v / 40 for k, v in trio.items()}, "psnr_gain_db": 4.0}
    noise_id = {"accuracy": 0.9, "confusion": np.eye(5, dtype=np.int64), "severity_r2": 0.7}
    series = {"ari": {"dae": 0.9, "pixels": 0.2, "pca": 0.3}, "codes": np.zeros((3, 2))}
    rescue = {"noisy": dict.fromkeys(conds, 0.5), "denoised": dict.fromkeys(conds, 0.6)}
    metrics = dae.record_metrics(denoising, noise_id, series, rescue)
    assert {"psnr_db", "ssim", "noise_id_accuracy", "binning_ari", "rescue_accuracy"} <= set(metrics)
    flat = report.flatten(metrics)
    for h in dae.HEADLINES:
        assert h.key in flat, h.key
        assert isinstance(flat[h.key], float) and h.source
    heads = {h.key: h for h in dae.HEADLINES}
    assert heads["psnr_gain_db"].goal == (">=", 3.0) and heads["psnr_gain_db"].met(flat["psnr_gain_db"])
    assert heads["noise_id_accuracy"].goal == (">=", 0.95) and heads["binning_ari.dae"].goal == (">=", 0.8)
    assert all(heads[f"{m}.{w}"].goal is None for m in ("psnr_db", "ssim") for w in trio)
    assert all(h.paper is None for h in dae.HEADLINES)
    path = report.record(dae.STUDY, metrics, headlines=dae.HEADLINES, profile="quick")
    assert "Goals missed in this run: noise kind named" in report.paper_vs_run(path, archived_run={})

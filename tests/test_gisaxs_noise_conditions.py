"""Study 3 noise conditions: shapes, determinism, every condition acts, clean is the identity."""

import numpy as np
import pytest

from sashelpers.physics import gisaxs
from sashelpers.studies import gisaxs_cnn as study


def _images(n=3, size=32, seed=0):
    """Log-normalised images with a few Gaussian spots on a weak background, zero below a 'horizon'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lin = np.full((n, size, size), 1e-4)
    for i in range(n):
        for _ in range(5):
            cy, cx = rng.uniform(4, size - 4, 2)
            lin[i] += rng.uniform(0.1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
    lin[:, :3] = 0.0
    return gisaxs.log_normalise(lin)


def test_conditions_are_the_issue_list():
    assert study.CONDITIONS == ("clean", "smear_0.5", "smear_1.0", "gauss_0.1", "gauss_0.2", "gauss_0.5",
                                "gauss_1.0", "poisson", "res_100", "res_75", "res_50", "res_25")


def test_res_pixels_keeps_the_papers_fraction():
    assert [study.res_pixels(f"res_{n}", 125) for n in (100, 75, 50, 25)] == [100, 75, 50, 25]
    assert [study.res_pixels(f"res_{n}", 32) for n in (100, 75, 50, 25)] == [26, 19, 13, 6]
    assert [study.res_pixels(f"res_{n}", 64) for n in (100, 75, 50, 25)] == [51, 38, 26, 13]
    with pytest.raises(ValueError):
        study.res_pixels("smear_1.0", 32)


def test_to_linear_inverts_log_normalise():
    x = _images()
    np.testing.assert_allclose(gisaxs.log_normalise(study.to_linear(x)), x, atol=1e-5)


@pytest.mark.parametrize("condition", study.CONDITIONS)
def test_shape_range_determinism(condition):
    x = _images()
    a = study.apply_condition(x, condition, study.condition_rng(1, condition))
    b = study.apply_condition(x, condition, study.condition_rng(1, condition))
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    single = study.apply_condition(x[0], condition, study.condition_rng(1, condition))
    assert single.shape == x[0].shape
    if condition == "clean":
        np.testing.assert_array_equal(a, x)
        assert a is not x
    else:
        assert np.abs(a - x).mean() > 1e-3, condition


@pytest.mark.parametrize("condition", ["gauss_0.1", "gauss_1.0", "poisson"])
def test_random_conditions_differ_between_seeds(condition):
    x = _images()
    a = study.apply_condition(x, condition, study.condition_rng(1, condition))
    b = study.apply_condition(x, condition, study.condition_rng(2, condition))
    assert not np.array_equal(a, b)


def test_stronger_noise_moves_the_image_more():
    x = _images()
    d = [np.abs(study.apply_condition(x, c, study.condition_rng(0, c)) - x).mean()
         for c in ("gauss_0.1", "gauss_0.2", "gauss_0.5", "gauss_1.0")]
    assert d == sorted(d)
    d = [np.abs(study.apply_condition(x, c, None) - x).mean() for c in ("res_100", "res_75", "res_50", "res_25")]
    assert d == sorted(d)


def test_noisy_sets_and_random_conditions():
    x = _images(n=24)
    sets = study.noisy_sets(x, seed=3)
    assert list(sets) == list(study.CONDITIONS)
    xa, which = study.random_conditions(x, seed=3)
    xb, which_b = study.random_conditions(x, seed=3)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(which, which_b)
    assert xa.shape == x.shape and which.shape == (24,) and which.max() < len(study.CONDITIONS)
    clean = which == 0
    np.testing.assert_array_equal(xa[clean], x[clean])


def test_unknown_condition():
    with pytest.raises(ValueError, match="condition=.*not allowed"):
        study.apply_condition(_images(), "gauss_2.0", np.random.default_rng(0))

"""Study 5's glue: data, the Fourier read-back, detector effects, decoding, bad input."""

import numpy as np
import pytest

from sashelpers.physics import diffuse
from sashelpers.studies import diffuse_cnn as S

CONFIG = {"span": 3, "size": 16, "n_sweeps": 10, "beta_max": 1.0}


def test_dataset_chunk_is_seeded_and_its_labels_are_the_lattices_own():
    a = S.dataset_chunk(CONFIG, 4, 0, 6)
    b = S.dataset_chunk(CONFIG, 4, 0, 6)
    c = S.dataset_chunk(CONFIG, 5, 0, 6)
    assert a["images"].shape == (6, 16, 16) and a["labels"].shape == (6, 8)
    np.testing.assert_array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], c["images"])
    # the couplings of sample i depend on (seed, i) only, not on the chunk
    np.testing.assert_array_equal(S.dataset_chunk(CONFIG, 4, 2, 4)["couplings"], a["couplings"][2:4])
    # labels are exact: the image's inverse FFT gives them back (Wiener-Khinchin)
    np.testing.assert_allclose(S.fourier_readback(a["images"], 3), a["labels"], atol=1e-5)
    assert np.abs(np.abs(a["couplings"]).sum(1)).max() <= 1.0 + 1e-12


def test_couplings_and_their_strength():
    k = S.sample_couplings(4, 2000, np.random.default_rng(0), beta_max=0.8)
    strength = np.abs(k).sum(1)
    assert k.shape == (2000, 15) and strength.max() <= 0.8 and strength.min() >= 0
    assert abs(strength.mean() - 0.4) < 0.02  # U(0, beta_max)
    near, far = np.abs(k[:, 0]).mean(), np.abs(k[:, -1]).mean()  # (0, 1) vs (3, 3)
    assert near > 2.5 * far


def test_fourier_readback_on_a_known_lattice():
    """A checkerboard: c(1,0) = c(0,1) = -1, c(1,1) = 1."""
    s = np.where((np.arange(8)[:, None] + np.arange(8)[None, :]) % 2 == 0, 1, -1).astype(np.int8)
    image = np.fft.fftshift(diffuse.diffuse_intensity(s), axes=(-2, -1))
    np.testing.assert_allclose(S.fourier_readback(image, 2)[0], [-1.0, -1.0, 1.0], atol=1e-12)


def test_bad_images_raise():
    good = np.ones((2, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        S.check_images(np.ones((16, 12)))
    with pytest.raises(ValueError, match="NaN"):
        S.check_images(np.where(np.eye(16) > 0, np.nan, 1.0))
    with pytest.raises(ValueError, match="negative"):
        S.check_images(-good)
    with pytest.raises(ValueError, match="32 x 32"):
        S.check_images(good, size=32)
    with pytest.raises(ValueError, match="multiple of"):
        diffuse.sweep(diffuse.random_spins(1, 9, np.random.default_rng(0)), np.zeros(15), 0.0,
                      np.random.default_rng(0))


def test_measured_like_and_the_correction_pipeline():
    d = S.dataset_chunk({**CONFIG, "size": 32}, 0, 0, 8)
    rng = np.random.default_rng(1)
    noisy, mask = S.measured_like(d["images"], rng, counts=30.0, beam_stop_px=3.0)
    assert mask.sum() == 29 and np.all(noisy[:, mask] == 0)  # a disc of radius 3 px: 29 pixels
    fixed = S.correct(noisy, mask)
    assert fixed.shape == (8, 32, 32) and fixed.dtype == np.float32
    np.testing.assert_allclose(fixed.mean(axis=(1, 2)), 1.0, rtol=1e-5)
    assert np.all(fixed[:, mask] > 0)  # the beam stop is filled from its rings
    # more photons -> closer to the same image recorded without photon noise
    ideal = S.correct(*S.measured_like(d["images"], np.random.default_rng(2), counts=1e9))
    r2 = [S.image_r2(ideal, S.correct(*S.measured_like(d["images"], np.random.default_rng(2), counts=c))).mean()
          for c in (3.0, 300.0)]
    assert r2[0] < 0.9 < r2[1]


def test_image_r2():
    rng = np.random.default_rng(0)
    a = rng.exponential(size=(3, 16, 16))
    np.testing.assert_allclose(S.image_r2(a, 7.0 * a), 1.0)  # the scale does not matter
    assert np.all(S.image_r2(a, np.full_like(a, 2.0)) < 0.01)
    with pytest.raises(ValueError, match="same shape"):
        S.image_r2(a, a[:, :8, :8])


def test_r2_score():
    t = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    assert S.r2_score(t, t) == 1.0
    assert S.r2_score(t, np.broadcast_to(t.mean(0), t.shape)) == pytest.approx(0.0)


def test_decode_reaches_the_coefficients_of_an_image():
    rng = np.random.default_rng(3)
    sim = S.simulate(np.array([[0.25, 0.25, -0.1], [-0.2, 0.1, 0.05]]), 48, 60, rng)
    out = S.decode(sim["labels"], 48, rng, n_feedback=150, n_equilibrate=30)
    np.testing.assert_allclose(out["achieved"], sim["labels"], atol=3 / 48)
    assert out["images"].shape == sim["images"].shape


def test_convergence_and_label_routes_run_and_measure():
    rng = np.random.default_rng(8)
    conv = S.convergence(2, 16, 6, [0, 2, 5], rng)
    assert conv["labels"].shape == (3, 6, 3) and conv["sweeps"] == [0, 2, 5]
    assert np.abs(conv["labels"][0]).max() < 0.6  # random start: no order yet
    with pytest.raises(ValueError, match="increase"):
        S.convergence(2, 16, 2, [5, 2], rng)
    routes = S.label_routes(2, 16, 8, rng, n_sweeps=10, n_feedback=20, n_equilibrate=5)
    assert routes["feedback_rms_error"] > 0 and routes["feedback_s_per_lattice"] > 0
    assert routes["feedback_r2_ceiling"] <= 1.0

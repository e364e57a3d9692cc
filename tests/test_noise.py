"""Statistics and shapes of the noise models."""

import numpy as np
import pytest

from sashelpers.physics import noise


def test_gaussian_noise_statistics():
    rng = np.random.default_rng(0)
    img = rng.uniform(1, 3, size=(4, 128, 128)).astype(np.float32)
    for alpha in (0.1, 0.5, 1.0):
        out = noise.gaussian_noise(img, alpha, np.random.default_rng(1))
        diff = out - img
        want = alpha * img.mean(axis=(-2, -1))
        assert out.dtype == np.float32 and out.shape == img.shape
        assert np.allclose(diff.std(axis=(-2, -1)), want, rtol=0.03)
        assert np.all(np.abs(diff.mean(axis=(-2, -1))) < 4 * want / 128)


def test_poisson_noise_statistics():
    rng = np.random.default_rng(0)
    img = np.full((200, 200), 2.0)
    out = noise.poisson_noise(img, 50.0, rng, reference="max")  # 50 counts per pixel
    counts = out * 25.0
    assert np.allclose(counts, np.round(counts))
    assert counts.mean() == pytest.approx(50, rel=0.01)
    assert counts.var() == pytest.approx(50, rel=0.05)
    # mean reference, batch: per-image scaling
    batch = np.stack([img, 3 * img])
    out = noise.poisson_noise(batch, 10.0, np.random.default_rng(2), reference="mean")
    assert out.shape == batch.shape
    assert np.allclose(out.mean(axis=(-2, -1)), [2.0, 6.0], rtol=0.02)
    assert np.all(noise.poisson_noise(np.zeros((5, 5)), 10.0, rng) == 0)
    with pytest.raises(ValueError, match="non-negative"):
        noise.poisson_noise(-img, 10.0, rng)


def test_same_seed_same_noise():
    img = np.ones((16, 16))
    a = noise.gaussian_noise(img, 0.2, np.random.default_rng(5))
    b = noise.gaussian_noise(img, 0.2, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_smear_preserves_sum_and_blurs():
    img = np.zeros((3, 41, 41), dtype=np.float32)
    img[:, 20, 20] = 1.0
    for sigma in (0.5, 1.0, 2.0):
        out = noise.smear(img, sigma)
        assert out.shape == img.shape and out.dtype == np.float32
        assert np.allclose(out.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
        # second moment of the blurred spot ~ sigma^2 (exact for the sampled Gaussian when sigma >= 1)
        y = np.arange(41) - 20
        var = (out[0].sum(axis=1) * y**2).sum()
        if sigma >= 1:
            assert var == pytest.approx(sigma**2, rel=0.02)
    assert np.array_equal(noise.smear(img, 0), img)


def test_reduce_resolution_round_trip():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(2, 125, 125)).astype(np.float32)
    for m in (100, 75, 50, 25):
        out = noise.reduce_resolution(img, m)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert out.mean() == pytest.approx(img.mean(), rel=0.01)
        assert out.std() < img.std()  # detail is lost
    smooth = np.outer(np.sin(np.linspace(0, 3, 125)), np.cos(np.linspace(0, 2, 125)))
    back = noise.reduce_resolution(smooth, 50)
    assert np.abs(back - smooth)[5:-5, 5:-5].max() < 0.01  # a smooth image survives the round trip
    assert noise.reduce_resolution(img[0], 25).shape == (125, 125)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: noise.smear(np.ones((4, 4)), -1), "sigma_px"),
        (lambda: noise.gaussian_noise(np.ones((4, 4)), -0.1, np.random.default_rng()), "alpha"),
        (lambda: noise.gaussian_noise(np.ones((4, 4)), 0.1, None), "rng"),
        (lambda: noise.poisson_noise(np.ones((4, 4)), 0, np.random.default_rng()), "counts"),
        (lambda: noise.reduce_resolution(np.ones((8, 8)), 9), "m="),
        (lambda: noise.smear(np.ones(4), 1), "image"),
    ],
)
def test_validation(call, word):
    with pytest.raises(ValueError, match=word):
        call()

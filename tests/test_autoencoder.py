"""The denoising autoencoder (sashelpers.learn.nets.DenoisingAutoencoder) on a tiny synthetic
problem: Gaussian spots on a dark background, white noise of sigma 0.1; after a short training
the denoised held-out images must be >= 3 dB closer to the clean ones than the noisy input."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from sashelpers.learn import nets
from sashelpers.learn.training import TrainConfig, fit

SIZE = 16


def spots(n: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = np.zeros((n, SIZE, SIZE))
    for k in range(n):
        for _ in range(rng.integers(1, 4)):
            y0, x0, w, a = rng.uniform(2, SIZE - 2), rng.uniform(2, SIZE - 2), rng.uniform(1.0, 2.5), rng.uniform(0.4, 1)
            out[k] += a * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * w * w))
    return np.clip(out, 0, 1).astype(np.float32)


def noisy(clean, rng, sigma=0.1):
    return np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 1).astype(np.float32)


def test_dae_gains_psnr_on_a_tiny_problem(one_thread):
    """(Over seeds 0-3 this setting gained 3.6-7.1 dB; seed 0 is fixed here.)"""
    rng = np.random.default_rng(0)
    clean_tr, clean_va, clean_te = spots(2000, rng), spots(100, rng), spots(100, rng)
    torch.manual_seed(0)
    model = nets.DenoisingAutoencoder(SIZE, width=8, latent=32)

    def epoch_data(epoch):  # fresh noise every epoch
        return noisy(clean_tr, np.random.default_rng(1000 + epoch)), clean_tr

    fit(model, nets.denoising_loss, epoch_data(0), (noisy(clean_va, rng), clean_va),
        TrainConfig(epochs=30, batch_size=64, lr=1e-2, schedule="onecycle", patience=30, progress=False),
        device="cpu", epoch_data=epoch_data)
    x_te = noisy(clean_te, np.random.default_rng(7))
    with torch.no_grad():
        den = model.eval()(torch.from_numpy(x_te)).numpy()
    gain = (peak_signal_noise_ratio(clean_te, den, data_range=1.0)
            - peak_signal_noise_ratio(clean_te, x_te, data_range=1.0))
    assert gain >= 3.0, gain
    assert model.encode(torch.from_numpy(x_te[:5])).shape == (5, 32)


def test_dae_shapes_with_and_without_skips():
    for skips in (False, True):
        m = nets.DenoisingAutoencoder(32, width=4, latent=8, skips=skips).eval()
        x = torch.rand(3, 32, 32)
        with torch.no_grad():
            out = m(x)
        assert out.shape == (3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1
        assert m.encode(x).shape == (3, 8) and m.config["skips"] is skips


def test_dae_bad_input():
    with pytest.raises(ValueError, match="multiple of 8"):
        nets.DenoisingAutoencoder(20)
    m = nets.DenoisingAutoencoder(16, width=4, latent=8)
    with pytest.raises(ValueError, match="shape"):
        m(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="floating"):
        m(np.zeros((2, 16, 16)))

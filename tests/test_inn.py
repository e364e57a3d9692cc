"""The conditional INN learns a known Gaussian posterior and its intervals are calibrated."""

import numpy as np
import pytest
import torch

from sashelpers.learn import inn
from sashelpers.learn import training


def toy(n, rng):
    # x ~ N(0, I_2); y = A x + noise (8 "curve" values) -> the posterior p(x|y) is Gaussian
    a = np.linspace(-1, 1, 16).reshape(8, 2)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x @ a.T + 0.3 * rng.normal(size=(n, 8))).astype(np.float32)
    return x, y, a


def exact_posterior(y, a, noise=0.3):
    prec = np.eye(2) + a.T @ a / noise**2
    cov = np.linalg.inv(prec)
    mean = y @ a @ cov.T / noise**2
    return mean, cov


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    x, y, a = toy(3000, rng)
    model = inn.ConditionalINN(2, 8, n_blocks=4, hidden=64, cond_features=16)
    cfg = training.TrainConfig(epochs=40, batch_size=128, lr=2e-3, patience=8, progress=False)
    training.fit(model, inn.nll_loss, (x[:2500], y[:2500]), (x[2500:], y[2500:]), cfg, device="cpu")
    return model, a


def test_posterior_mean_and_spread_match_the_exact_gaussian(trained):
    model, a = trained
    rng = np.random.default_rng(1)
    x, y, _ = toy(200, rng)
    samples = model.sample(torch.from_numpy(y), 400, torch.Generator().manual_seed(0)).numpy()
    mean, cov = exact_posterior(y, a)
    err = np.abs(samples.mean(axis=1) - mean).mean(axis=0)
    assert np.all(err < 0.25 * np.sqrt(np.diag(cov)) + 0.05)
    np.testing.assert_allclose(samples.std(axis=1).mean(axis=0), np.sqrt(np.diag(cov)), rtol=0.25)
    cover = inn.interval_coverage(samples, x, 0.9)
    assert np.all((cover > 0.8) & (cover < 0.97)), cover


def test_forward_and_reverse_are_inverse(trained):
    model, _ = trained
    x = torch.randn(5, 2)
    y = torch.randn(5, 8)
    z, _ = model(x, y)
    back, _ = model.flow(z, c=[model.cond_net(y)], rev=True)
    torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-4)


def test_same_seed_same_network():
    a, b = inn.ConditionalINN(3, 5, seed=3), inn.ConditionalINN(3, 5, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        if "perm" in ka:
            torch.testing.assert_close(va, vb)


def test_bad_sizes():
    with pytest.raises(ValueError, match="n_params"):
        inn.ConditionalINN(1, 8)
    with pytest.raises(ValueError, match="level"):
        inn.interval_coverage(np.zeros((2, 3, 1)), np.zeros((2, 1)), 1.5)

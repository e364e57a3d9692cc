"""Known-answer tests of sashelpers.ood (scores: higher = more out of distribution)."""

import math

import numpy as np
import pytest
import torch

from sashelpers.learn import ood


def test_uniform_logits():
    z = np.zeros((3, 7))
    np.testing.assert_allclose(ood.entropy_score(z), math.log(7))
    np.testing.assert_allclose(ood.msp_score(z), 1 - 1 / 7)
    np.testing.assert_allclose(ood.energy_score(z), -math.log(7))


def test_one_hot_logits_and_stability():
    z = np.full((2, 7), 0.0)
    z[:, 3] = [50.0, 1000.0]  # the second would overflow a naive exp
    assert np.all(ood.entropy_score(z) < 1e-12) and np.all(ood.entropy_score(z) >= 0)
    assert np.all(ood.msp_score(z) < 1e-12)
    np.testing.assert_allclose(ood.energy_score(z), [-50.0, -1000.0], rtol=1e-12)
    np.testing.assert_allclose(ood.softmax(z).sum(1), 1.0)


def test_energy_known_values():
    z = np.log([[1.0, 2.0, 3.0]])
    assert ood.energy_score(z)[0] == pytest.approx(-math.log(6))
    # T = 2: -2 ln(1 + sqrt 2 + sqrt 3)
    assert ood.energy_score(z, temperature=2.0)[0] == pytest.approx(-2 * math.log(1 + math.sqrt(2) + math.sqrt(3)))
    s = ood.scores(torch.tensor(z))  # tensors are accepted
    assert set(s) == set(ood.SCORES) and s["energy"][0] == pytest.approx(-math.log(6))


def test_scores_order_a_confident_and_an_unsure_sample():
    z = np.array([[8.0, 0, 0, 0], [1.0, 0.9, 0.8, 0.7]])
    for name, v in ood.scores(z).items():
        assert v[1] > v[0], name  # the unsure sample scores higher everywhere


def test_threshold_and_flagged_fraction():
    s = np.arange(100.0)
    thr = ood.fit_threshold(s, 0.95)
    assert thr == pytest.approx(94.05)
    assert ood.flagged_fraction(s, thr) == pytest.approx(0.05)
    assert ood.flagged([90.0, 99.0], thr).tolist() == [False, True]


def test_auroc_known_values():
    assert ood.auroc([0, 1, 2], [3, 4]) == 1.0
    assert ood.auroc([3, 4], [0, 1, 2]) == 0.0
    x = np.random.default_rng(0).normal(size=50)
    assert ood.auroc(x, x) == 0.5
    assert ood.auroc([0, 1], [1, 2]) == pytest.approx(3.5 / 4)  # one tie counts 1/2


def test_auroc_matches_the_pairwise_definition():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 40).astype(float), rng.integers(1, 7, 30).astype(float)  # many ties
    pairs = (b[:, None] > a[None, :]).mean() + 0.5 * (b[:, None] == a[None, :]).mean()
    assert ood.auroc(a, b) == pytest.approx(pairs)


@pytest.mark.parametrize("call, match", [
    (lambda: ood.entropy_score([[0.0, np.nan]]), "finite"),
    (lambda: ood.entropy_score(np.zeros((3, 1))), "n_classes"),
    (lambda: ood.energy_score(np.zeros((1, 3)), temperature=0), "temperature"),
    (lambda: ood.fit_threshold([1.0, 2.0], quantile=1.0), "quantile"),
    (lambda: ood.fit_threshold([], 0.9), "at least 1"),
    (lambda: ood.auroc([1.0], [np.inf]), "finite"),
    (lambda: ood.fit_pca(np.zeros((5, 4, 4)), n_components=0), "n_components"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pca_reconstruction_score():
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(2, 16))
    train = (rng.normal(size=(50, 2)) @ basis + 1.0).reshape(50, 4, 4)  # a 2D affine subspace
    pca = ood.fit_pca(train, n_components=2)
    assert np.all(pca.score(train) < 1e-10)
    outside = rng.normal(size=(4, 4))
    assert pca.score(outside)[0] > 0.1  # one (S, S) image
    with pytest.raises(ValueError, match="pixels"):
        pca.score(np.zeros((1, 5, 5)))


def test_report_with_a_tiny_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    rng = np.random.default_rng(3)
    in_images = rng.uniform(0, 0.1, (40, 4, 4)).astype(np.float32)
    judged = rng.uniform(0, 1, (5, 4, 4)).astype(np.float32)
    rep = ood.report(model, in_images, judged, reconstruction=ood.fit_pca(in_images, 3))
    assert rep.names == ("msp", "entropy", "energy", "recon") and rep.n_calibration == 20
    assert rep.probs.shape == (5, 3)
    np.testing.assert_allclose(rep.probs.sum(1), 1.0, rtol=1e-6)
    for k in rep.names:
        assert rep.in_scores[k].shape == (20,) and rep.scores[k].shape == (5,)
        assert 0 <= rep.in_flagged_fraction[k] <= 1
    assert rep.flagged_fraction["recon"] == 1.0 and rep.auroc()["recon"] == 1.0  # far off the training images
    assert "recon" in rep.table() and "OOD" in rep.table(index=0)
    with pytest.raises(ValueError, match="too few"):
        ood.report(model, in_images[:3], judged)

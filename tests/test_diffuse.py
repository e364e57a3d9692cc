"""Known answers for the diffuse-scattering kernels (sashelpers.physics.diffuse): Wiener-Khinchin,
the sum rule, uncorrelated lattices, Onsager's nearest-neighbour correlation of the 2D Ising model,
and detailed balance of the sublattice Metropolis update by exact enumeration."""

import itertools

import numpy as np
import pytest

from sashelpers.physics import diffuse as d


def test_span_vectors():
    assert d.span_vectors(2) == [(0, 1), (1, 0), (1, 1)]
    assert [len(d.span_vectors(s)) for s in d.SPANS] == [3, 8, 15]
    with pytest.raises(ValueError, match="span"):
        d.span_vectors(1)


def test_wiener_khinchin_and_sum_rule():
    rng = np.random.default_rng(0)
    s = d.random_spins(3, 16, rng, concentration=0.3)
    d.sweep(s, [0.3, -0.2, 0.1], 0.1, rng, 5)
    intensity = d.diffuse_intensity(s)
    x = (1 + s.astype(float)) / 2
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    m = d.concentration_of(s)
    for b in range(3):
        # inverse FFT of I is the circular autocovariance <x_r x_{r+v}> - xbar^2 for every v
        acov = np.fft.ifft2(intensity[b]).real
        direct = np.array([[np.mean(x[b] * np.roll(np.roll(x[b], -i, 0), -j, 1)) for j in range(16)]
                           for i in range(16)])
        np.testing.assert_allclose(acov, direct, atol=1e-14)
        # sum rule: the mean over h is the variance m (1 - m) of a binary lattice
        assert intensity[b].mean() == pytest.approx(m[b] * (1 - m[b]), rel=1e-12)
        # and I is m (1 - m) times the Fourier series of the Warren-Cowley coefficients of all vectors
        assert direct[0, 1] / direct[0, 0] == pytest.approx(d.correlations(s[b], 2)[0, 0], rel=1e-9)
    assert np.all(intensity >= 0) and intensity[:, 0, 0] == pytest.approx(0, abs=1e-20)


def test_uncorrelated_lattice_has_no_order():
    rng = np.random.default_rng(1)
    size = 63  # a multiple of the span 3
    s = d.random_spins(4, size, rng)
    d.sweep(s, np.zeros(8), 0.0, rng, 20)  # K = 0, H = 0: every flip accepted, stays random
    c = d.correlations(s, 3)  # (4 lattices, 8 vectors); each estimate has a spread of 1/L
    assert np.abs(c.mean(axis=0)).max() < 3 / size
    assert 0.6 / size < np.sqrt(np.mean(c**2)) < 1.4 / size
    assert np.abs(d.concentration_of(s) - 0.5).max() < 3 / size


@pytest.mark.parametrize("beta_j, onsager", [(0.2, 0.2141), (0.3, 0.3522)])
def test_onsager_nearest_neighbour_correlation(beta_j, onsager):
    assert d.onsager_nn_correlation(beta_j) == pytest.approx(onsager, abs=1e-4)
    rng = np.random.default_rng(2)
    s = d.random_spins(4, 48, rng)
    k = [-beta_j, -beta_j, 0.0]  # E = -J sum over nearest-neighbour bonds, once each
    d.sweep(s, k, 0.0, rng, 150)
    cs = []
    for _ in range(10):
        d.sweep(s, k, 0.0, rng, 5)
        cs.append(d.correlations(s, 2)[:, :2].mean())
    assert np.mean(cs) == pytest.approx(onsager, abs=0.01)


def _all_states(size: int) -> np.ndarray:
    bits = np.array(list(itertools.product([1, -1], repeat=size * size)), dtype=np.int8)
    return bits.reshape(-1, size, size)


@pytest.mark.parametrize("wrong_sign", [False, True])
def test_sublattice_update_keeps_the_boltzmann_distribution(wrong_sign):
    """Exact enumeration of a 4 x 4 lattice (span 2, 65536 states): one update of a sublattice
    (its 4 sites flipped together, each with its Metropolis probability) maps the Boltzmann
    distribution exp(-E) onto itself. The same check fails for exp(+E): it can fail."""
    size, k, field = 4, np.array([0.35, -0.25, 0.15]), 0.2
    states = _all_states(size)
    energy = d.energy(states, k, field)
    pi = np.exp(energy if wrong_sign else -energy)
    pi /= pi.sum()
    index = (((1 - states.reshape(len(states), -1)) // 2) * (1 << np.arange(size * size)[::-1])).sum(1)
    assert np.array_equal(index, np.arange(len(states)))  # state i is the binary number i
    worst = 0.0
    for a, b in itertools.product(range(2), range(2)):
        p = d.flip_probabilities(states, k, field, (a, b)).reshape(len(states), -1)  # (n, 4)
        sites = [r * size + c for r in range(a, size, 2) for c in range(b, size, 2)]
        masks = [1 << (size * size - 1 - t) for t in sites]
        new = np.zeros(len(states))
        for flips in itertools.product([0, 1], repeat=len(sites)):
            prob = np.prod([p[:, n] if f else 1 - p[:, n] for n, f in enumerate(flips)], axis=0)
            target = index ^ sum(m for m, f in zip(masks, flips) if f)
            np.add.at(new, target, pi * prob)
        worst = max(worst, float(np.abs(new - pi).max() / pi.max()))
    assert (worst > 1e-3) if wrong_sign else (worst < 1e-12)


def test_sweep_matches_flip_probabilities():
    """The sweep flips each site with the probability flip_probabilities gives (many lattices)."""
    rng = np.random.default_rng(3)
    k, field = np.array([0.4, -0.3, 0.2]), -0.1
    base = d.random_spins(1, 8, rng)
    s = np.repeat(base, 4000, axis=0)
    p = d.flip_probabilities(base, k, field, (0, 0))[0]
    # one sweep starts with sublattice (0, 0): its flip frequency is p
    out = s.copy()
    d.sweep(out, k, field, rng, 1)
    flipped = (out[:, 0::2, 0::2] != s[:, 0::2, 0::2]).mean(axis=0)
    assert np.abs(flipped - p).max() < 4 * np.sqrt(0.25 / 4000)


@pytest.mark.parametrize("size, span, period", [(8, 3, 4), (12, 3, 3), (64, 3, 4), (10, 2, 2), (6, 4, 6)])
def test_colours_do_not_interact(size, span, period):
    """Flipping every site of one colour changes the energy by the sum of the single-site
    changes -2 s_r h_r, i.e. no two sites of a colour interact, for the colour period chosen.
    With a period smaller than the span (p = span - 1) the same identity fails: it can fail."""
    assert d.colour_period(size, span) == period
    rng = np.random.default_rng(size + span)
    k = rng.normal(0.0, 0.3, span * span - 1)
    s = d.random_spins(3, size, rng)
    e0, h = d.energy(s, k, 0.1), d.local_field(s, k, 0.1)

    def mismatch(p):
        worst = 0.0
        for a in range(p):
            for b in range(p):
                t = s.copy()
                t[:, a::p, b::p] *= -1
                single = (-2.0 * s * h)[:, a::p, b::p].sum(axis=(1, 2))
                worst = max(worst, float(np.abs(d.energy(t, k, 0.1) - e0 - single).max()))
        return worst

    assert mismatch(period) < 1e-9
    bad = span - 1 if size % (span - 1) == 0 else None
    if bad:
        assert mismatch(bad) > 1e-3


def test_bad_input():
    rng = np.random.default_rng(0)
    s = d.random_spins(2, 6, rng)
    with pytest.raises(ValueError, match="multiple of the span"):
        d.sweep(d.random_spins(1, 7, rng), np.zeros(3), 0.0, rng)  # L = 7 has no divisor in [2, 4]
    with pytest.raises(ValueError, match="multiple of the span"):
        d.sweep(d.random_spins(1, 9, rng), np.zeros(15), 0.0, rng)  # span 4: 9 has none in [4, 8]
    with pytest.raises(ValueError, match="couplings"):
        d.sweep(s, np.zeros(5), 0.0, rng)
    with pytest.raises(ValueError, match="finite"):
        d.sweep(s, [np.nan, 0, 0], 0.0, rng)
    with pytest.raises(ValueError, match="spins"):
        d.correlations(np.ones((4, 5)), 2)
    with pytest.raises(ValueError, match="concentration"):
        d.random_spins(1, 8, rng, concentration=1.5)


def test_feedback_reaches_realisable_targets():
    rng = np.random.default_rng(6)
    targets = np.array([[-0.20, 0.10, 0.05], [0.15, 0.15, 0.05]])  # span 2, at m = 0.5
    out = d.fit_couplings(targets, 2, 96, rng, n_feedback=300, n_equilibrate=60)
    assert out["spins"].shape == (2, 96, 96) and out["couplings"].shape == (2, 3)
    np.testing.assert_allclose(out["achieved"], targets, atol=3 / 96)  # one lattice: spread ~ 1/L
    np.testing.assert_allclose(out["concentration"], 0.5, atol=0.03)
    with pytest.raises(ValueError, match="targets"):
        d.fit_couplings(np.zeros(4), 2, 8, rng)


def test_unrealisable_targets_name_the_bound():
    with pytest.raises(ValueError, match="pair bound"):
        d.check_realisable([-0.5, 0.0, 0.0], 2, 0.2)  # at m = 0.2, c >= -0.25
    d.check_realisable([-0.2, 0.0, 0.0], 2, 0.2)
    with pytest.raises(ValueError, match="triangle bound"):
        d.check_realisable([-0.6, -0.6, -0.6], 2)  # c10 + c01 + c11 = -1.8 < -1
    with pytest.raises(ValueError, match="triangle bound"):
        d.check_realisable([0.9, 0.9, -0.9], 2)  # -c01 - c10 + c11 = -2.7 < -1
    d.check_realisable([-0.4, -0.4, 0.3], 2)  # antiferro-like: fine
    with pytest.raises(ValueError, match="spectrum bound"):
        d.check_realisable([0.45, 0.45, 0.0], 2, spectrum=True)  # 1 + 2(0.45 cos + 0.45 cos) < 0 at h = (1/2, 1/2)
    with pytest.raises(ValueError, match="triangle bound"):
        d.fit_couplings([-0.6, -0.6, -0.6], 2, 8, np.random.default_rng(0))


def test_every_simulated_lattice_passes_the_necessary_bounds():
    """Lattices from Monte Carlo (ordering and clustering couplings) never break the pair or
    triangle bounds: the checks cannot refuse a real lattice."""
    rng = np.random.default_rng(11)
    k = rng.uniform(-0.6, 0.6, (64, 3))
    s = d.random_spins(64, 16, rng)
    d.sweep(s, k, 0.0, rng, 30)
    c = d.correlations(s, 2)
    m = d.concentration_of(s)
    assert np.any(m == 0.5) and np.any(c.min(axis=1) < -0.2) and np.any(c.max(axis=1) > 0.2)
    for ci, mi in zip(c, m):
        d.check_realisable(ci, 2, mi)

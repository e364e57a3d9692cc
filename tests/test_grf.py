"""Known-answer tests for sashelpers.physics.grf (book chapter "Physics and conventions", porous media)."""

from __future__ import annotations

import numpy as np
import pytest

from sashelpers.core import datasets
from sashelpers.physics import grf
from sashelpers.physics import saxs
from sashelpers.studies import grf_porous

H = 0.5  # voxel, nm


def _q(n, q_max=3.0, m=200):
    return np.linspace(saxs.q_window(n, H)[0], q_max, m)


def _face_contacts(a, b):
    """Number of (voxel in a, face neighbour in b) pairs on the periodic grid."""
    return sum(np.count_nonzero(a & np.roll(b, s, axis=ax)) for ax in range(3) for s in (1, -1))


def _touches(mask):
    out = np.zeros_like(mask)
    for ax in range(3):
        for s in (1, -1):
            out |= np.roll(mask, s, axis=ax)
    return out


@pytest.fixture(scope="module")
def field64():
    return grf.gaussian_field(64, H, 3.0, np.random.default_rng(5))


# --- the field ----------------------------------------------------------------------------------

def test_fourier_white_noise_is_white():
    """irfftn of the drawn half spectrum is unit-variance white noise, kz = 0 plane included."""
    import scipy.fft

    n = 64
    w = scipy.fft.irfftn(grf.white_noise_half_spectrum(n, np.random.default_rng(1)), s=(n,) * 3)
    assert abs(w.var() - 1) < 0.01
    assert abs(w.mean()) < 0.01
    lag1 = np.mean(w * np.roll(w, 1, axis=2)) / w.var()
    assert abs(lag1) < 0.01
    p = np.abs(scipy.fft.rfftn(w)) ** 2 / n**3  # periodogram, mean 1 everywhere for white noise
    assert abs(p[:, :, 0].mean() - 1) < 0.05  # the plane irfftn symmetrises
    assert abs(p[:, :, n // 2].mean() - 1) < 0.05  # Nyquist plane
    assert abs(p[:, :, 1:-1].mean() - 1) < 0.01


def test_field_spectrum_follows_S_and_both_noise_domains_agree():
    n, a = 64, 2.0
    shells = np.arange(0.2, 2.4, 0.2)
    qmag = np.sqrt(grf._q2_half(n, H, "numpy"))
    power = {}
    for dom in grf.NOISE_DOMAINS:
        acc = np.zeros(shells.size - 1)
        for seed in range(4):
            g = grf.gaussian_field(n, H, a, np.random.default_rng(seed), noise_domain=dom)
            assert g.dtype == np.float32 and g.shape == (n,) * 3
            p = np.abs(np.fft.rfftn(g)) ** 2
            acc += [p[(qmag >= lo) & (qmag < hi)].mean() for lo, hi in zip(shells[:-1], shells[1:])]
        power[dom] = acc
    s_k = grf.spectral_density(qmag, a)  # S on the grid's own |q|, averaged like the power
    expected = np.array([s_k[(qmag >= lo) & (qmag < hi)].mean() for lo, hi in zip(shells[:-1], shells[1:])])
    ok = expected > 1e-4 * expected[0]  # shells where S stands above float32 round-off
    for dom, pw in power.items():
        # unit-variance white noise times sqrt(S): E|g_k|^2 = N^3 S(q_k) in both noise domains
        ratio = pw / 4 / (n**3 * expected)
        assert np.all(np.abs(ratio[ok] - 1) < 0.25), (dom, ratio)


def test_same_seed_same_data_different_seed_different_data():
    q = _q(32)
    p = {"a_nm": 2.0, "porosity": 0.4, "nu": 0.2}
    a = grf.saxs_sample(p, 32, H, q, np.random.default_rng(11))
    b = grf.saxs_sample(p, 32, H, q, np.random.default_rng(11))
    c = grf.saxs_sample(p, 32, H, q, np.random.default_rng(12))
    assert np.array_equal(a["features"], b["features"]) and a["alpha"] == b["alpha"]
    assert not np.allclose(a["intensity"], c["intensity"])


# --- microstructures ----------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.1, 0.3, 0.5, 0.77, 0.9])
def test_two_phase_porosity_is_exact(field64, eps):
    before = grf._KTH_FALLBACKS[0]
    rho = grf.two_phase(field64, eps)
    assert grf._KTH_FALLBACKS[0] == before  # the fast sampled-bracket selection was used
    assert rho.dtype == np.float32
    assert set(np.unique(rho)) == {0.0, 1.0}
    assert np.count_nonzero(rho == 0) == round(eps * 64**3)


def test_exact_counts_with_ties():
    """A field with massive ties still gives the exact count (ties broken in memory order)."""
    g = np.zeros((32, 32, 32), np.float32)
    g[:16] = 1.0  # half the voxels tie at 0, half at 1
    mask = grf._rank_mask(g, 20000, np)
    assert np.count_nonzero(mask) == 20000
    assert grf._kth_smallest(np.random.default_rng(0).permutation(10**6).astype(np.float32), 123456, np) == 123456


@pytest.mark.parametrize("eps,nu", [(0.3, 0.2), (0.7, 0.05), (0.85, 0.5)])
def test_three_phase_volume_fractions(field64, eps, nu):
    rho = grf.three_phase(field64, eps, nu)
    n3 = 64**3
    counts = [np.count_nonzero(rho == np.float32(v)) for v in grf.DENSITIES]
    assert sum(counts) == n3
    assert counts[0] == round(eps * (1 - nu) * n3)
    assert counts[0] + counts[1] == round(eps * n3)
    assert abs(counts[1] / n3 - eps * nu) < 1e-5


@pytest.mark.parametrize("eps,nu", [(0.3, None), (0.6, 0.25)])
def test_microstructure_matches_plain_reference(field64, eps, nu):
    """Same field through np.quantile + ndimage.gaussian_filter(mode='wrap'): same voxels."""
    from scipy.ndimage import gaussian_filter

    ours = grf.microstructure(field64, eps, nu)
    s = gaussian_filter((field64 > np.quantile(field64, eps)).astype(float), 2.0, mode="wrap")
    if nu is None:
        ref = (s > np.quantile(s, eps)).astype(float)
    else:
        t1, t2 = np.quantile(s, [eps * (1 - nu), eps])
        ref = np.where(s > t2, 1.0, np.where(s > t1, 0.65, 0.0))
    assert np.mean(np.abs(ours - ref) > 1e-6) < 1e-4  # measured 0 mismatching voxels


def test_layer_sits_between_pore_and_solid(field64):
    """The layer separates pore from solid: no pore-solid faces, most layer voxels touch both;
    a random arrangement with the same fractions fails both checks."""
    rho = grf.three_phase(field64, 0.5, 0.1)
    pore, layer, solid = rho == 0, rho == np.float32(0.65), rho == 1
    ps = _face_contacts(pore, solid) / _face_contacts(pore, ~pore)
    both = np.count_nonzero(layer & _touches(pore) & _touches(solid)) / np.count_nonzero(layer)
    assert ps < 0.02  # measured 0.0
    assert both > 0.5  # measured 0.63
    shuffled = np.random.default_rng(0).permutation(rho.ravel()).reshape(rho.shape)
    pore_r, solid_r = shuffled == 0, shuffled == 1
    assert _face_contacts(pore_r, solid_r) / _face_contacts(pore_r, ~pore_r) > 0.5


def test_babinet_complementary_porosity(field64):
    """eps on g and 1 - eps on -g give complementary structures and the same curve."""
    q = _q(64)
    r1 = grf.two_phase(field64, 0.3)
    r2 = grf.two_phase(-field64, 0.7)
    assert np.count_nonzero(r1 != 1 - r2) <= 64  # exact complement up to float ties
    i1, i2 = saxs.saxs_curve(r1, H, q), saxs.saxs_curve(r2, H, q)
    assert np.max(np.abs(i1 / i2 - 1)) < 1e-3


# --- SAXS known answers -------------------------------------------------------------------------

def test_parseval(field64):
    rho = grf.three_phase(field64, 0.6, 0.3)
    inten = saxs.intensity_3d(rho, H)
    mult = saxs.half_spectrum_multiplicity(64)
    total = np.sum(inten.astype(np.float64) * mult) / H**3  # = sum |rho_k|^2 / N^3
    direct = np.sum((rho.astype(np.float64) - rho.mean(dtype=np.float64)) ** 2)
    assert abs(total / direct - 1) < 1e-5


@pytest.fixture(scope="module")
def sample128():
    n, a, eps = 128, 2.0, 0.3
    rho = grf.structure({"a_nm": a, "porosity": eps}, n, H, np.random.default_rng(0))
    return n, rho


def test_invariant_fraction_in_window(sample128):
    """4 pi sum I q^2 dq over [q_lo, 3] nm^-1 vs 2 pi^2 var(rho) = 2 pi^2 eps (1 - eps)."""
    n, rho = sample128
    q = _q(n, m=300)
    curve = saxs.saxs_curve(rho, H, q)
    var = 0.3 * 0.7
    assert abs(rho.var(dtype=np.float64) / var - 1) < 1e-5
    frac = grf.windowed_invariant(q, curve) / (8 * np.pi**3 * var)
    assert 0.85 < frac < 0.95  # measured 0.90 (a = 2 nm, N = 128, [0.147, 3] nm^-1)
    # the same fraction straight from the 3D spectrum: the radial average and quadrature agree
    inten = saxs.intensity_3d(rho, H).astype(np.float64) * saxs.half_spectrum_multiplicity(n)
    qmag = np.sqrt(grf._q2_half(n, H, "numpy"))
    inside = (qmag >= q[0]) & (qmag <= q[-1])
    frac_3d = inten[inside].sum() / (n * H) ** 3 / var
    assert abs(frac / frac_3d - 1) < 0.03


def test_porod_slope(sample128):
    n, _ = sample128
    q = np.linspace(1.0, 2.5, 60)
    rho = grf.structure({"a_nm": 4.0, "porosity": 0.3}, n, H, np.random.default_rng(2))
    slope = np.polyfit(np.log(q), np.log(saxs.saxs_curve(rho, H, q)), 1)[0]
    assert abs(slope + 4) < 0.15  # measured -3.995


# --- noise, normalisation, features -------------------------------------------------------------

def test_lognormal_noise_mean_and_relative_variance():
    inten = np.array([1e-3, 1e-1, 10.0])
    alpha = 1e3
    draws = grf.lognormal_noise(np.broadcast_to(inten, (200000, 3)), alpha, np.random.default_rng(0))
    ratio = draws / inten
    assert np.allclose(ratio.mean(axis=0), 1, atol=0.02)
    assert np.allclose(ratio.var(axis=0) * alpha * inten, 1, rtol=0.05)


def test_features_are_invariant_normalised_logs():
    q = _q(32)
    out = grf.saxs_sample({"a_nm": 1.5, "porosity": 0.6}, 32, H, q, np.random.default_rng(3), noise=False)
    assert np.isnan(out["alpha"])
    assert np.allclose(grf.windowed_invariant(q, 10 ** out["features"]), 1)
    # scale-free: a curve times 7 has the same features
    assert np.allclose(grf.features(q, 7 * out["intensity"]), out["features"])


# --- datasets -----------------------------------------------------------------------------------

def test_chunks_do_not_change_the_data(tmp_path, monkeypatch):
    cfg = grf_porous.make_config(n=32, q_min_nm=0.6, n_q=50, phases=3, porosity="high")
    whole = grf_porous.generate_chunk(cfg, 7, 0, 3)
    parts = [grf_porous.generate_chunk(cfg, 7, 0, 1), grf_porous.generate_chunk(cfg, 7, 1, 3)]
    for k, v in whole.items():
        assert v.shape[0] == 3 and v.dtype == np.float32
        assert np.array_equal(v, np.concatenate([p[k] for p in parts]))
    assert np.all((whole["porosity"] >= 0.5) & (whole["porosity"] <= 0.9))
    assert np.all((whole["nu"] >= 0.05) & (whole["nu"] <= 0.5))
    assert np.all((whole["a_nm"] >= 0.8) & (whole["a_nm"] <= 8))
    assert np.all((whole["alpha"] >= 1e2) & (whole["alpha"] <= 10**5.5))
    monkeypatch.setenv("SASHELPERS_CACHE", str(tmp_path))
    data = datasets.generate("grf_test", grf_porous.generate_chunk, cfg, 3, seed=7, chunk_size=2, progress=False)
    assert np.array_equal(data["features"], whole["features"])
    two = grf_porous.generate_chunk(grf_porous.make_config(n=32, q_min_nm=0.6, n_q=50), 7, 0, 2)
    assert "nu" not in two and np.all(two["porosity"] <= 0.5)


# --- input validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "params,match",
    [
        ({"a_nm": 2.0, "porosity": 0.0}, "porosity"),
        ({"a_nm": 2.0, "porosity": 1.0}, "porosity"),
        ({"a_nm": 2.0, "porosity": -0.2}, "porosity"),
        ({"a_nm": 2.0, "porosity": 0.5, "nu": 1.0}, "nu"),
        ({"a_nm": 2.0, "porosity": 0.5, "nu": -0.1}, "nu"),
        ({"a_nm": 0.0, "porosity": 0.5}, "a_nm"),
        ({"a_nm": -1.0, "porosity": 0.5}, "a_nm"),
        ({"porosity": 0.5}, "a_nm"),
        ({"a_nm": 2.0, "porosity": 0.5, "sigma": 1}, "unknown"),
    ],
)
def test_bad_parameters_raise(params, match):
    with pytest.raises(ValueError, match=match):
        grf.saxs_sample(params, 32, H, _q(32), np.random.default_rng(0))


def test_grid_too_small_for_q_window_raises():
    with pytest.raises(ValueError, match=r"n=32.*resolves"):
        grf.saxs_sample({"a_nm": 2.0, "porosity": 0.5}, 32, H, np.linspace(0.1, 3, 50), 0)
    with pytest.raises(ValueError, match="voxel_nm"):
        grf.gaussian_field(32, 0.0, 2.0, 0)
    with pytest.raises(ValueError, match="rng"):
        grf.gaussian_field(32, H, 2.0, "seed")
    with pytest.raises(ValueError, match="phases"):
        grf_porous.make_config(phases=4)
    with pytest.raises(ValueError, match="n=32"):
        grf_porous.make_config(n=32)  # default q_min 0.15 needs n >= 128 at h = 0.5 nm

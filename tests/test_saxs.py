"""Known answers for the FFT SAXS kernel (book chapter "Physics and conventions") and a cross-check with sasmodels."""

import math

import numpy as np
import pytest

from sashelpers.physics import saxs
from sashelpers.physics.scatterers import sasmodels_intensity


def test_sphere_amplitude_zeros_and_small_q():
    r = 5.0
    for qr in saxs.SPHERE_MINIMA_QR:
        assert abs(saxs.sphere_amplitude(np.array([qr / r]), r)[0]) < 1e-12
    q = np.array([1e-6, 1e-4, 1e-3, 3e-3])
    np.testing.assert_allclose(saxs.sphere_amplitude(q, r), 1 - (q * r) ** 2 / 10 + (q * r) ** 4 / 280, rtol=1e-9)


def test_analytic_sphere_matches_sasmodels_in_absolute_units():
    q = np.geomspace(0.05, 3.0, 60)
    radius, contrast = 6.0, 3.0  # nm, 1e-6 A^-2
    ours = saxs.sphere_intensity(q, radius, contrast * saxs.SLD_TO_NM2) * saxs.PER_NM_TO_PER_CM
    volume = 4 / 3 * math.pi * radius**3
    # sasmodels: scale = volume fraction; one sphere per unit volume of 1 nm^3 -> scale = V
    ref = sasmodels_intensity("sphere", q, radius_nm=radius, sld=contrast, sld_solvent=0.0, scale=1.0,
                              background=0.0) * volume
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_parseval():
    rng = np.random.default_rng(0)
    n, h = 32, 0.7
    rho = rng.normal(size=(n, n, n)).astype(np.float32)
    half = saxs.intensity_3d(rho, h)
    mult = saxs.half_spectrum_multiplicity(n)
    total = float((half * mult).sum()) * n**3 / h**3  # back to sum |rho_hat|^2
    expected = n**3 * float(((rho - rho.mean()) ** 2).sum())
    assert total / expected == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("n, h, bar", [(64, 0.8, 0.01), (96, 0.5, 0.004)])
def test_fft_of_voxel_sphere_matches_grid_averaged_analytic(n, h, bar):
    radius = 0.3 * n * h / 2 * 1.5
    rho = saxs.voxel_sphere(n, h, radius)
    q = np.geomspace(saxs.q_window(n, h)[0], saxs.SPHERE_MINIMA_QR[2] / radius, 80)
    fft = saxs.saxs_curve(rho, h, q, deconvolve_voxel=True)
    ref = saxs.analytic_on_grid(n, h, q, radius)
    assert np.abs(fft / ref - 1).max() < bar
    # without the voxel deconvolution the high-q loss is visible: the test can fail
    raw = saxs.saxs_curve(rho, h, q)
    assert np.abs(raw / ref - 1).max() > 2 * np.abs(fft / ref - 1).max()


def test_voxel_sphere_volume_and_forward_scattering():
    n, h, radius = 64, 0.5, 6.0
    rho = saxs.voxel_sphere(n, h, radius)
    volume = 4 / 3 * math.pi * radius**3
    assert rho.sum() * h**3 == pytest.approx(volume, rel=2e-3)
    assert rho.min() >= 0 and rho.max() <= 1


def test_radial_average_of_a_constant_is_that_constant():
    n, h = 32, 1.0
    const = np.full((n, n, n // 2 + 1), 2.5, dtype=np.float32)
    q = np.linspace(0.4, 1.5, 10)
    np.testing.assert_allclose(saxs.radial_average(const, h, q), 2.5, rtol=1e-6)


def test_minima_and_slope_readers():
    q = np.geomspace(0.05, 5, 3000)
    i = saxs.sphere_intensity(q, 8.0)
    np.testing.assert_allclose(saxs.local_minima(q, i)[:3] * 8.0, saxs.SPHERE_MINIMA_QR, atol=2e-3)
    assert saxs.power_law_slope(q, 3 * q**-4.0, (1, 4)) == pytest.approx(-4.0)


@pytest.mark.parametrize("call, match", [
    (lambda: saxs.check_q_window(64, 0.5, np.array([0.05, 1.0])), "larger n"),
    (lambda: saxs.check_q_window(64, 0.5, np.array([0.5, 5.0])), "smaller voxel"),
    (lambda: saxs.voxel_sphere(32, 0.5, 9.0), "radius_nm"),
    (lambda: saxs.q_spacing(4, 0.5), "n="),
    (lambda: saxs.q_spacing(64, -1.0), "voxel_nm"),
    (lambda: saxs.intensity_3d(np.zeros((8, 8, 4)), 1.0), "cubic"),
    (lambda: saxs.sphere_intensity(np.array([0.1]), 0.0), "radius_nm"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shell_binned_average_equals_the_exact_weighted_sum():
    """The bincount shortcut vs the definition, w evaluated at every grid point's own |q|."""
    n, h = 32, 0.5
    rho = (np.random.default_rng(1).random((n, n, n)) > 0.5).astype(np.float32)
    q = np.geomspace(*saxs.q_window(n, h), 40)
    full = np.abs(np.fft.fftn(rho - rho.mean())) ** 2 * h**3 / n**3
    k = 2 * np.pi * np.fft.fftfreq(n, d=h)
    qmag = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    w = np.exp(-2 * ((qmag[None] - q[:, None, None, None]) / saxs.q_spacing(n, h)) ** 2)
    w[:, 0, 0, 0] = 0
    exact = (w * full).sum(axis=(1, 2, 3)) / w.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(saxs.saxs_curve(rho, h, q), exact, rtol=1e-3)

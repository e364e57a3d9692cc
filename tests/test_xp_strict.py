"""GPU code paths without a GPU: every xp-generic kernel runs under ``array_api_strict``.

cupy is not installed on most machines, so the kernels' cupy path (``xp`` not numpy) is exercised
here with ``array_api_strict``: a namespace with only the array API standard (no ndarray methods,
no numpy scalars, no ``out=``), whose arrays are made to refuse implicit conversion to numpy
(``np.asarray``, numpy ufuncs), as cupy's device arrays do. A hidden ``np.`` call on xp data, a
numpy-only method or a numpy dtype on the xp path fails here, on the CPU, before it fails on a GPU.
Each kernel's result must stay in the namespace and match the numpy result.

Operations outside the standard (bincount, partition, sinc, ``out=``, writing ``.real``, random
numbers, ndimage) go through ``sashelpers.core.backend`` helpers: numpy/cupy use their native
call, other namespaces a standard-only fallback or a clear NotImplementedError (ndimage).

The ``gpu``-marked tests at the end compare numpy with cupy wherever cupy has a device.
"""

from __future__ import annotations

import numpy as np
import pytest

from sashelpers.core import backend
from sashelpers.physics import gisaxs, grf, noise, saxs

try:
    import array_api_strict as xps
except ImportError:  # the dev extra installs it; the gpu tests below do not need it
    xps = None

_STRICT_ARRAY = None if xps is None else type(xps.asarray(0.0))


@pytest.fixture(autouse=True)
def strict_arrays_refuse_host_conversion(request, monkeypatch):
    """array_api_strict arrays behave like cupy's: implicit conversion to numpy raises."""
    if request.node.get_closest_marker("gpu"):
        return
    if xps is None:
        pytest.skip("needs array-api-strict (pip install -e .[dev])")

    def refuse(self, *args, **kwargs):
        raise TypeError("implicit conversion of an xp array to numpy (fails on cupy): "
                        "use backend.to_numpy, or keep the work in xp")

    monkeypatch.setattr(_STRICT_ARRAY, "__array__", refuse)
    if hasattr(_STRICT_ARRAY, "__buffer__"):  # numpy reads it on Python >= 3.12
        monkeypatch.setattr(_STRICT_ARRAY, "__buffer__", refuse)


def dev(a, dtype=None):
    """A numpy array as an array_api_strict array (the 'device' copy)."""
    return xps.asarray(np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype))


def host(a):
    """An xp result on the host, asserting it stayed in array_api_strict."""
    assert isinstance(a, _STRICT_ARRAY), f"expected an array_api_strict array, got {type(a).__name__}"
    return np.from_dlpack(a)


def close(got, want, rtol=1e-5, atol_rel=1e-6):
    """got (strict) ~ want (numpy), atol relative to the largest |want|."""
    want = np.asarray(want)
    g = host(got)
    assert g.shape == want.shape
    assert g.dtype == want.dtype, (g.dtype, want.dtype)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(g, want, rtol=rtol, atol=atol_rel * scale)


# --- backend ------------------------------------------------------------------------------------

def test_backend_dispatch_for_other_namespaces():
    a = dev(np.arange(4.0))
    assert backend.get_array_module(a) is xps
    assert backend.get_array_module(np.ones(2), a) is xps
    assert backend.get_array_module(np.ones(2), 3.0) is np
    assert backend.fft_module(xps) is xps.fft
    assert backend.namespace("array_api_strict") is xps
    assert backend.namespace("numpy") is np
    assert not backend.is_ndarray_module(xps) and backend.is_ndarray_module(np)
    np.testing.assert_array_equal(backend.to_numpy(a), np.arange(4.0))
    with pytest.raises(NotImplementedError, match="ndimage"):
        backend.ndimage_module(xps)


@pytest.mark.parametrize("weights", [False, True])
def test_backend_bincount_fallback(weights):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, 50)
    w = rng.uniform(0, 2, 50) if weights else None
    want = np.bincount(idx, weights=w, minlength=10)
    got = backend.bincount(dev(idx), weights=None if w is None else dev(w), minlength=10)
    assert host(got).dtype == want.dtype
    np.testing.assert_allclose(host(got), want, rtol=1e-12)


def test_backend_other_fallbacks():
    x = np.array([0.0, 0.25, -1.5, 3.0, 1e-3], dtype=np.float32)
    close(backend.sinc(dev(x)), np.sinc(x))
    close(backend.astype(dev(x), xps.float64), x.astype(np.float64))
    close(backend.mean(dev(x), dtype=xps.float64), x.mean(dtype=np.float64))
    part = backend.partition(dev(x), [1, 3])
    assert host(part)[1] == np.partition(x, [1, 3])[1] and host(part)[3] == np.partition(x, [1, 3])[3]
    assert backend.is_floating(dev(x)) and not backend.is_floating(dev(np.arange(3)))
    z = xps.zeros(5, dtype=xps.complex64)
    z = backend.set_real(z, dev(x))
    z = backend.set_imag(z, dev(2 * x))
    close(z, (x + 2j * x).astype(np.complex64))
    y = xps.zeros(5, dtype=xps.float32)
    backend.assign(y, dev(x > 0.1))
    close(y, (x > 0.1).astype(np.float32))
    t = dev(x)
    out = xps.negative(t, **backend.out_kw(t))
    close(out, -x)


# --- saxs ---------------------------------------------------------------------------------------

N, H, R = 10, 0.5, 1.6  # a 10^3 grid of 0.5 nm voxels, a sphere of radius 1.6 nm


def _q():
    lo, hi = saxs.q_window(N, H)
    return np.linspace(lo, hi, 7)


def test_saxs_grids():
    close(saxs.q_magnitude_half(N, H, xp=xps), saxs.q_magnitude_half(N, H))
    close(saxs.half_spectrum_multiplicity(N, xp=xps), saxs.half_spectrum_multiplicity(N))
    close(saxs.voxel_sphere(N, H, R, supersample=2, xp=xps), saxs.voxel_sphere(N, H, R, supersample=2))


@pytest.mark.parametrize("deconvolve", [False, True])
def test_saxs_intensity_and_curve(deconvolve):
    rho = saxs.voxel_sphere(N, H, R, supersample=2)
    rho += np.random.default_rng(0).uniform(0, 0.1, rho.shape).astype(np.float32)
    want = saxs.intensity_3d(rho, H, deconvolve_voxel=deconvolve)
    got = saxs.intensity_3d(dev(rho), H, deconvolve_voxel=deconvolve)
    close(got, want)
    q = _q()
    close(saxs.radial_average(got, H, q), saxs.radial_average(want, H, q))
    close(saxs.saxs_curve(dev(rho), H, q, deconvolve_voxel=deconvolve),
          saxs.saxs_curve(rho, H, q, deconvolve_voxel=deconvolve))
    # q on the device as well (a host-only np.asarray(q) would fail on cupy)
    close(saxs.radial_average(got, H, dev(q)), saxs.radial_average(want, H, q))


def test_saxs_analytic_sphere():
    q = np.geomspace(1e-4, 5.0, 9)
    close(saxs.sphere_amplitude(dev(q), R), saxs.sphere_amplitude(q, R), rtol=1e-12)
    close(saxs.sphere_intensity(dev(q), R, 2.0, 100.0), saxs.sphere_intensity(q, R, 2.0, 100.0), rtol=1e-12)
    close(saxs.analytic_on_grid(N, H, _q(), R, xp=xps), saxs.analytic_on_grid(N, H, _q(), R))


# --- grf ----------------------------------------------------------------------------------------

GN, GH, GA = 12, 0.5, 1.0


def test_grf_white_noise_same_draws():
    amp = np.random.default_rng(9).uniform(0.5, 1, (GN, GN, GN // 2 + 1)).astype(np.float32)
    for a_np, a_x in ((None, None), (amp, dev(amp))):
        close(grf.white_noise_half_spectrum(GN, 4, xp=xps, amplitude=a_x),
              grf.white_noise_half_spectrum(GN, 4, xp=np, amplitude=a_np))


@pytest.mark.parametrize("domain", grf.NOISE_DOMAINS)
def test_grf_gaussian_field(domain):
    close(grf.gaussian_field(GN, GH, GA, 3, xp=xps, noise_domain=domain),
          grf.gaussian_field(GN, GH, GA, 3, xp=np, noise_domain=domain), atol_rel=1e-5)


def test_grf_smoothing_and_quantiles():
    field = grf.gaussian_field(GN, GH, GA, 5, xp=np)
    close(grf.smooth_periodic(dev(field)), grf.smooth_periodic(field))
    flat = field.reshape(-1)
    ks = [0, 17, flat.size // 2, flat.size - 1]
    got = grf._kth_smallest(dev(flat), ks, xps)
    assert [float(v) for v in got] == [float(v) for v in grf._kth_smallest(flat, ks, np)]
    # the sampled-bracket path (size > 2^16)
    big = np.random.default_rng(1).permutation(48**3).astype(np.float32)
    assert float(grf._kth_smallest(dev(big), 54321, xps)) == 54321.0
    # ties at the threshold are broken in memory order, exactly as on numpy
    ties = np.repeat(np.arange(8, dtype=np.float32), 216).reshape(12, 12, 12)
    for got_mask, want_mask in zip(grf._rank_masks(dev(ties), [0, 100, 1000, ties.size], xps),
                                   grf._rank_masks(ties, [0, 100, 1000, ties.size], np)):
        np.testing.assert_array_equal(host(got_mask), want_mask)


@pytest.mark.parametrize("nu", [None, 0.3])
def test_grf_microstructure(nu):
    field = grf.gaussian_field(GN, GH, GA, 6, xp=np)
    want = grf.microstructure(field, 0.35, nu)
    got = host(grf.microstructure(dev(field), 0.35, nu))
    for d in grf.DENSITIES:  # exact phase counts
        assert np.count_nonzero(got == np.float32(d)) == np.count_nonzero(want == np.float32(d))
    assert np.mean(got != want) < 0.01  # FFT round-off may move a voxel at a threshold


def test_grf_structure_and_sample():
    params = {"a_nm": GA, "porosity": 0.4, "nu": 0.25}
    got = host(grf.structure(params, GN, GH, 7, xp=xps))
    want = grf.structure(params, GN, GH, 7, xp=np)
    assert np.mean(got != want) < 0.01
    lo, hi = saxs.q_window(16, GH)
    q = np.geomspace(lo, hi, 10)
    a = grf.saxs_sample(params, 16, GH, q, 8, xp=xps)
    b = grf.saxs_sample(params, 16, GH, q, 8, xp=np)
    assert isinstance(a["intensity"], np.ndarray)
    np.testing.assert_allclose(a["intensity"], b["intensity"], rtol=0.05)
    assert a["alpha"] == b["alpha"]


# --- gisaxs -------------------------------------------------------------------------------------

def test_gisaxs_1d_kernels():
    x = np.concatenate([np.linspace(-20, 20, 41), 2 * np.pi * np.arange(-3, 4), [1e-5, -1e-6]])
    for n in (1, 4, 7):
        close(gisaxs.dirichlet(dev(x), n), gisaxs.dirichlet(x, n), rtol=1e-12)
        close(gisaxs.geometric_sum(dev(x), n), gisaxs.geometric_sum(x, n), rtol=1e-12)
    q = np.geomspace(1e-3, 5.0, 11)
    close(gisaxs.sphere_form_factor(dev(q), 3.0), gisaxs.sphere_form_factor(q, 3.0), rtol=1e-12)
    a = np.radians(np.linspace(0.0, 1.0, 9))
    close(gisaxs.reflection_coefficient(dev(a)), gisaxs.reflection_coefficient(a), rtol=1e-12)
    close(gisaxs.reflection_coefficient(dev(a), 0.0, 0.0), gisaxs.reflection_coefficient(a, 0.0, 0.0))
    close(gisaxs.reflection_coefficient(dev(a), 1e-5, 0.0), gisaxs.reflection_coefficient(a, 1e-5, 0.0))


def _grids():
    return [gisaxs.q_grid(6, 5, (-1.0, 1.0), (0.0, 1.5)),
            gisaxs.detector_grid(5, 6, 0.2, 1000.0, -2.0, 2.5),
            gisaxs.angle_grid(np.linspace(-1, 1, 6), np.linspace(-0.1, 0.5, 5))]


def test_gisaxs_geometry():
    for grid in _grids():
        g_x = gisaxs.scattering_geometry(grid, 0.2, xp=xps)
        g_n = gisaxs.scattering_geometry(grid, 0.2, xp=np)
        for f in ("alpha_f_rad", "two_theta_f_rad", "qx_nm", "qy_nm", "qz_nm", "valid"):
            np.testing.assert_array_equal(host(getattr(g_x, f)), getattr(g_n, f))


def test_gisaxs_structure_factor():
    q = np.random.default_rng(0).uniform(-1, 1, (4, 5, 3))
    for cls in ("SC[100]", "FCC[111]", "HCP[0001]"):
        close(gisaxs.structure_factor(dev(q), cls, 8.0, (2, 3, 1)),
              gisaxs.structure_factor(q, cls, 8.0, (2, 3, 1)), rtol=1e-9)
        close(gisaxs.structure_factor(dev(q), cls, 8.0, 2, phi_deg=[0.0, 17.0]),
              gisaxs.structure_factor(q, cls, 8.0, 2, phi_deg=[0.0, 17.0]), rtol=1e-9)


@pytest.mark.parametrize("class_name", gisaxs.CLASS_NAMES)
def test_gisaxs_simulate(class_name):
    grid = _grids()[0]
    kw = {"class_name": class_name, "lattice_nm": 10.0, "radius_nm": 3.0, "reps": (3, 2, 2), "alpha_i_deg": 0.2,
          "grid": grid, "angles_deg": [0.0, 11.0, 40.0]}
    close(gisaxs.simulate(**kw, xp=xps, chunk_elements=200), gisaxs.simulate(**kw, xp=np), rtol=2e-4,
          atol_rel=1e-5)
    kw.update(dwba=False, precision="double")
    close(gisaxs.simulate(**kw, xp=xps), gisaxs.simulate(**kw, xp=np), rtol=1e-6)


def test_gisaxs_simulate_single_sphere():
    # SC with one cell: the lattice sum is the constant 1 (a numpy scalar there broke cupy.broadcast_to)
    kw = {"class_name": "SC[100]", "lattice_nm": 10.0, "radius_nm": 3.0, "reps": 1, "alpha_i_deg": 0.2,
          "grid": _grids()[1], "n_orient": 2}
    close(gisaxs.simulate(**kw, xp=xps), gisaxs.simulate(**kw, xp=np), rtol=1e-5)


# --- noise --------------------------------------------------------------------------------------

def _image():
    return np.random.default_rng(0).uniform(1, 3, (2, 9, 8)).astype(np.float32)


def test_noise_random_models_same_draws():
    img = _image()
    close(noise.gaussian_noise(dev(img), 0.1, np.random.default_rng(1)),
          noise.gaussian_noise(img, 0.1, np.random.default_rng(1)))
    for ref in ("max", "mean"):
        close(noise.poisson_noise(dev(img), 50.0, np.random.default_rng(2), reference=ref),
              noise.poisson_noise(img, 50.0, np.random.default_rng(2), reference=ref))
    close(noise.poisson_noise(dev(np.zeros((4, 4))), 10.0, np.random.default_rng(2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        noise.poisson_noise(dev(-img), 10.0, np.random.default_rng(2))
    # integer images become float32 on the xp path too
    close(noise.gaussian_noise(dev(np.full((3, 3), 2)), 0.0, np.random.default_rng(1)),
          np.full((3, 3), 2, dtype=np.float32))


def test_noise_ndimage_models_need_numpy_or_cupy():
    img = _image()
    close(noise.smear(dev(img), 0.0), img)
    with pytest.raises(NotImplementedError, match="ndimage"):
        noise.smear(dev(img), 1.0)
    with pytest.raises(NotImplementedError, match="ndimage"):
        noise.reduce_resolution(dev(img), 4)
    # the standard-only part of reduce_resolution
    for axis in (1, 2):
        close(noise._area_resize(dev(img), 3, axis, xps), noise._area_resize(img, 3, axis, np))


def test_noise_accepts_a_generator_without_normal():
    """cupy.random.Generator has standard_normal and poisson but no normal (the module promises it works)."""

    class StandardOnly:
        def __init__(self, seed):
            self._rng = np.random.default_rng(seed)

        def standard_normal(self, size=None):
            return self._rng.standard_normal(size=size)

        def poisson(self, lam):
            return self._rng.poisson(lam)

    img = _image()
    np.testing.assert_array_equal(noise.gaussian_noise(img, 0.1, StandardOnly(1)),
                                  noise.gaussian_noise(img, 0.1, np.random.default_rng(1)))
    np.testing.assert_array_equal(noise.poisson_noise(img, 50.0, StandardOnly(2)),
                                  noise.poisson_noise(img, 50.0, np.random.default_rng(2)))


# --- numpy vs cupy on a GPU -----------------------------------------------------------------------

def _cupy_or_none():
    try:
        import cupy

        return cupy if cupy.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - any failure (no cupy, no driver) means: no GPU here
        return None


cp = _cupy_or_none()
gpu = pytest.mark.gpu
needs_cupy = pytest.mark.skipif(cp is None, reason="needs cupy with a CUDA device")


def _cp_close(got, want, rtol=1e-5, atol_rel=1e-6):
    assert type(got).__module__.split(".")[0] == "cupy", type(got)
    g, w = backend.to_numpy(got), np.asarray(want)
    assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
    np.testing.assert_allclose(g, w, rtol=rtol, atol=atol_rel * float(np.max(np.abs(w))))


@gpu
@needs_cupy
def test_gpu_saxs_parity():
    n, h, r = 32, 0.5, 5.0
    rho = saxs.voxel_sphere(n, h, r)
    q = np.geomspace(saxs.q_window(n, h)[0], saxs.q_window(n, h)[1], 30)
    for deconvolve in (False, True):
        want = saxs.intensity_3d(rho, h, deconvolve_voxel=deconvolve)
        got = saxs.intensity_3d(cp.asarray(rho), h, deconvolve_voxel=deconvolve)
        _cp_close(got, want)
        _cp_close(saxs.radial_average(got, h, q), saxs.radial_average(want, h, q))
        _cp_close(saxs.saxs_curve(cp.asarray(rho), h, q, deconvolve_voxel=deconvolve),
                  saxs.saxs_curve(rho, h, q, deconvolve_voxel=deconvolve))
    _cp_close(saxs.analytic_on_grid(n, h, q, r, xp=cp), saxs.analytic_on_grid(n, h, q, r), rtol=1e-4)
    _cp_close(saxs.sphere_amplitude(cp.asarray(q), r), saxs.sphere_amplitude(q, r), rtol=1e-12)
    _cp_close(saxs.q_magnitude_half(n, h, xp=cp), saxs.q_magnitude_half(n, h))
    _cp_close(saxs.voxel_sphere(n, h, r, xp=cp), rho)


@gpu
@needs_cupy
def test_gpu_grf_parity():
    n, h, a = 48, 0.5, 1.5
    field = grf.gaussian_field(n, h, a, 1, xp=np)
    _cp_close(grf.smooth_periodic(cp.asarray(field)), grf.smooth_periodic(field), atol_rel=1e-5)
    flat = field.reshape(-1)  # 48^3 > 2^16: the sampled-bracket path
    ks = [10, flat.size // 3, flat.size - 5]
    assert [float(v) for v in grf._kth_smallest(cp.asarray(flat), ks, cp)] == \
           [float(v) for v in grf._kth_smallest(flat, ks, np)]
    for nu in (None, 0.3):
        want = grf.microstructure(field, 0.3, nu)
        got = backend.to_numpy(grf.microstructure(cp.asarray(field), 0.3, nu))
        for d in grf.DENSITIES:
            assert np.count_nonzero(got == np.float32(d)) == np.count_nonzero(want == np.float32(d))
        assert np.mean(got != want) < 0.01
    # device random numbers: another realisation, the same statistics
    for domain in grf.NOISE_DOMAINS:
        g = grf.gaussian_field(n, h, a, 2, xp=cp, noise_domain=domain)
        assert type(g).__module__.startswith("cupy") and g.dtype == np.float32 and g.shape == (n, n, n)
        ref = grf.gaussian_field(n, h, a, 2, xp=np, noise_domain=domain)
        assert float(g.std()) == pytest.approx(float(ref.std()), rel=0.2)
    spec = grf.white_noise_half_spectrum(n, 3, xp=cp)
    planes = n // 2 + 1  # E|z|^2 = N^3, twice that on the k_z = 0 and Nyquist planes
    assert float((abs(spec) ** 2).mean()) == pytest.approx(n**3 * (planes + 2) / planes, rel=0.03)
    lo, hi = saxs.q_window(n, h)
    s = grf.saxs_sample({"a_nm": a, "porosity": 0.3}, n, h, np.geomspace(lo, hi, 20), 4, xp=cp)
    assert np.all(np.isfinite(s["features"])) and np.all(s["intensity"] > 0)


@gpu
@needs_cupy
@pytest.mark.parametrize("class_name", gisaxs.CLASS_NAMES)
def test_gpu_gisaxs_parity(class_name):
    grid = gisaxs.q_grid(48, 40, (-1.5, 1.5), (0.0, 2.0))
    kw = {"class_name": class_name, "lattice_nm": 10.0, "radius_nm": 3.0, "reps": (4, 4, 3), "alpha_i_deg": 0.2,
          "grid": grid, "angles_deg": np.linspace(0, 30, 7)}
    _cp_close(gisaxs.simulate(**kw, xp=cp, chunk_elements=50_000), gisaxs.simulate(**kw, xp=np), rtol=1e-3,
              atol_rel=1e-4)  # float32 lattice sums: sin/cos differ by ulps between CPU and GPU
    kw.update(dwba=False, precision="double", reps=1)
    _cp_close(gisaxs.simulate(**kw, xp=cp), gisaxs.simulate(**kw, xp=np), rtol=1e-8)
    q = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    _cp_close(gisaxs.structure_factor(cp.asarray(q), class_name, 8.0, 3, phi_deg=[0.0, 9.0]),
              gisaxs.structure_factor(q, class_name, 8.0, 3, phi_deg=[0.0, 9.0]), rtol=1e-9, atol_rel=1e-12)
    x = np.linspace(-30, 30, 101)
    _cp_close(gisaxs.dirichlet(cp.asarray(x), 6), gisaxs.dirichlet(x, 6), rtol=1e-12, atol_rel=1e-12)
    a = np.radians(np.linspace(0, 1, 11))
    _cp_close(gisaxs.reflection_coefficient(cp.asarray(a)), gisaxs.reflection_coefficient(a), rtol=1e-12)


@gpu
@needs_cupy
def test_gpu_noise_parity():
    img = np.random.default_rng(0).uniform(1, 3, (3, 40, 36)).astype(np.float32)
    d = cp.asarray(img)
    _cp_close(noise.smear(d, 1.5), noise.smear(img, 1.5))
    for order in (0, 1, 3):
        _cp_close(noise.reduce_resolution(d, 9, order=order), noise.reduce_resolution(img, 9, order=order),
                  rtol=1e-4, atol_rel=1e-5)
    for rng in (np.random.default_rng(1), cp.random.default_rng(1)):
        g = noise.gaussian_noise(d, 0.1, rng)
        assert type(g).__module__.startswith("cupy") and g.dtype == np.float32
        assert float(((g - d) / d.mean(axis=(-2, -1), keepdims=True)).std()) == pytest.approx(0.1, rel=0.1)
        p = noise.poisson_noise(d, 1e4, rng)
        assert type(p).__module__.startswith("cupy") and p.dtype == np.float32
        assert float(abs(p - d).max()) < 0.1 * float(d.max())


def test_diffuse_kernels_under_the_strict_namespace():
    from sashelpers.physics import diffuse

    rng = np.random.default_rng(4)
    s_np = diffuse.random_spins(2, 8, rng)
    s_dev = dev(s_np.copy())
    k, field = [0.3, -0.2, 0.1], 0.05
    close(diffuse.local_field(s_dev, k, field), diffuse.local_field(s_np, k, field), rtol=1e-12)
    close(diffuse.diffuse_intensity(s_dev), diffuse.diffuse_intensity(s_np), rtol=1e-12)
    np.testing.assert_allclose(diffuse.correlations(s_dev, 2), diffuse.correlations(s_np, 2), rtol=1e-12)
    np.testing.assert_allclose(diffuse.energy(s_dev, k, field), diffuse.energy(s_np, k, field), rtol=1e-12)
    a = diffuse.sweep(s_dev, k, field, np.random.default_rng(5), 2)  # host draws for this namespace
    b = diffuse.sweep(s_np.copy(), k, field, np.random.default_rng(5), 2)
    close(a, b, rtol=0)

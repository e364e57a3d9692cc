"""Gaussian-random-field (GRF) porous media and their FFT SAXS curves (the kernels of study 2).

Lengths in nm, q in nm^-1. The book's chapter "Physics and conventions" (section *Porous media
from Gaussian random fields*) states the formulas; the study's priors and datasets are in
``sashelpers.studies.grf_porous``.

Field. White noise w on an N^3 periodic grid of voxel h, filtered in Fourier space,

    ``g = irfftn( rfftn(w) * sqrt(S(|q|)) ),   S(q) = (1 + |a q|^8)^-2,   q = 2 pi fftfreq(N, h)``.

The amplitude of g is irrelevant: every later step thresholds at quantiles.
By default (``noise_domain="fourier"``) the half spectrum rfftn(w) is drawn directly: its
interior k_z planes are independent complex Gaussians and ``irfftn`` keeps only the Hermitian
part of the k_z = 0 and Nyquist planes, so drawing them as independent complex Gaussians scaled
by sqrt(2) gives exactly the distribution of the half spectrum of real white noise. This saves
one forward FFT and the real-space normals (Box-Muller on float32 uniforms is ~3x faster than
numpy's normal sampler). ``noise_domain="real"`` follows the recipe literally (normals in real
space, then rfftn); both give the same field statistics, not the same realisation.

Microstructure. Two-phase: psi' = 1[g > quantile(g, eps)]; periodic Gaussian smoothing
(sigma = 2 voxels, a multiplication by exp(-sigma^2 w^2 / 2) in Fourier space, w = q h);
re-threshold the smoothed field s at quantile eps -> densities 0 (pore, fraction eps) and
1 (solid). Three-phase: thresholds of s at quantiles eps(1 - nu) and eps -> 0 (pore),
0.65 (layer, at the pore-solid interface), 1 (solid); volume fractions eps(1-nu), eps nu, 1-eps.
Quantile thresholds are exact *counts*: the pore phase is exactly round(eps N^3) voxels (ties,
if any, are broken in memory order), found by exact selection, not by a histogram.

SAXS. ``saxs.saxs_curve`` of the density (contrast 1 between pore and solid), units nm^3
(intensity per unit sample volume with densities in units of the solid's). Noise, read as
photon counting: counts = alpha I, relative variance 1/(alpha I); the observed curve is
lognormal with mean I, I_obs = I exp(s z - s^2/2), s^2 = ln(1 + 1/(alpha I)), alpha
log-uniform in [1e2, 10^5.5] per curve. Each curve is normalised by its windowed invariant
Q = 4 pi sum_i I(q_i) q_i^2 dq_i, and the features are log10(I_obs / Q_obs).

Everything runs on numpy (scipy.fft) or cupy, chosen by ``xp`` (default: the active backend).
Random numbers come from an explicit numpy Generator; on cupy the device generator is seeded
from it, so a seed gives reproducible data on each backend (not identical across backends).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import saxs
from ..core import checks
from ..core import backend as _backend
from ..core.backend import array_module, fft_module, get_array_module, to_numpy

DENSITIES = (0.0, 0.65, 1.0)  # pore, layer, solid
SMOOTH_SIGMA_VOXELS = 2.0
ALPHA_LOG10_RANGE = (2.0, 5.5)
NOISE_DOMAINS = ("fourier", "real")


# --- validation ---------------------------------------------------------------------------------

def _xp(xp):
    return array_module() if xp is None else xp


def _fft_kwargs(xp) -> dict:
    return {"workers": -1} if xp is np else {}


# --- cached grids -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _q2_half(n: int, voxel_nm: float, backend: str):
    """``|q|^2`` (nm^-2, float32) on the rfftn half spectrum, shape (n, n, n//2+1)."""
    xp = _backend.namespace(backend)
    qf, qh = saxs._axis_q(n, voxel_nm, xp)
    q2 = qf[:, None, None] ** 2 + qf[None, :, None] ** 2
    return q2 + qh[None, None, :] ** 2


@functools.lru_cache(maxsize=4)
def _smoothing_half(n: int, sigma_voxels: float, backend: str):
    """Fourier multiplier of a periodic Gaussian of sigma voxels on the half spectrum (float32)."""
    xp = _backend.namespace(backend)
    wf = (2 * np.pi * np.fft.fftfreq(n)).astype(np.float64)  # rad per voxel
    wh = (2 * np.pi * np.fft.rfftfreq(n)).astype(np.float64)
    gf = np.exp(-0.5 * sigma_voxels**2 * wf**2).astype(np.float32)
    gh = np.exp(-0.5 * sigma_voxels**2 * wh**2).astype(np.float32)
    gf, gh = xp.asarray(gf), xp.asarray(gh)
    return (gf[:, None, None] * gf[None, :, None]) * gh[None, None, :]


def _backend_name(xp) -> str:
    return xp.__name__  # 'numpy', 'cupy' (or another array-API namespace): a cache key


# --- random numbers -----------------------------------------------------------------------------

def _device_rng(rng: np.random.Generator, xp):
    """A cupy Generator seeded from the host generator (one draw per call)."""
    return xp.random.default_rng(int(rng.integers(2**63)))


def _uniform(rng, shape, xp):
    if xp is np:
        return rng.random(shape, dtype=np.float32)
    if not _backend.is_ndarray_module(xp):  # the array API has no random numbers: draw on the host
        return xp.asarray(rng.random(shape, dtype=np.float32))
    return _device_rng(rng, xp).random(shape, dtype=xp.float32)


def _normal(rng, shape, xp):
    if xp is np:
        return rng.standard_normal(shape, dtype=np.float32)
    if not _backend.is_ndarray_module(xp):
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))
    return _device_rng(rng, xp).standard_normal(shape, dtype=xp.float32)


def white_noise_half_spectrum(n: int, rng, *, xp=None, amplitude=None):
    """A draw of rfftn(w) for real white noise w of unit variance, complex64.

    Box-Muller in polar form: modulus sqrt(-N^3 ln(1-u1)) and phase 2 pi u2 give a complex
    Gaussian with independent N(0, N^3/2) parts; the k_z = 0 and Nyquist planes are scaled by
    sqrt(2) because ``irfftn`` keeps only their Hermitian part (see the module docstring).
    ``amplitude`` (a real half-spectrum array, e.g. sqrt(S)) multiplies the modulus before the
    complex array is formed, which saves a pass over the complex spectrum.
    """
    xp = _xp(xp)
    rng = checks.generator(rng)
    shape = (n, n, n // 2 + 1)
    modulus = _uniform(rng, shape, xp)
    modulus = xp.negative(modulus, **_backend.out_kw(modulus))  # in place on numpy/cupy
    modulus = xp.log1p(modulus, **_backend.out_kw(modulus))
    modulus *= -float(n) ** 3  # |z|^2 = -N^3 ln(1-u): E|z|^2 = N^3, as for rfftn(w)
    modulus = xp.sqrt(modulus, **_backend.out_kw(modulus))
    modulus[:, :, 0] *= math.sqrt(2.0)  # a Python float multiplies as float32
    if n % 2 == 0:
        modulus[:, :, -1] *= math.sqrt(2.0)
    if amplitude is not None:
        modulus *= amplitude
    phase = _uniform(rng, shape, xp)
    phase *= 2 * math.pi
    spec = xp.zeros(shape, dtype=xp.complex64)
    part = xp.cos(phase)  # contiguous work, then one strided copy: faster than strided ufunc output
    part *= modulus
    spec = _backend.set_real(spec, part)
    part = xp.sin(phase, **_backend.out_kw(part))
    part *= modulus
    spec = _backend.set_imag(spec, part)
    return spec


def _sqrt_spectral_density_half(n: int, voxel_nm: float, a_nm: float, xp):
    """``sqrt(S(|q|)) = 1 / (1 + (a^2 q^2)^4)`` on the half spectrum, float32.

    (Applied as a real factor: a complex64 /= float32 promotes to a complex division, ~5x
    slower than one reciprocal of the real factor and a multiplication.)
    """
    t = _q2_half(n, float(voxel_nm), _backend_name(xp)) * (a_nm * a_nm)  # float32
    t *= t
    t *= t
    t += 1.0
    t = xp.divide(1.0, t, **_backend.out_kw(t))  # = reciprocal, in place on numpy/cupy
    return t


def _apply_sqrt_spectral_density(spec, n: int, voxel_nm: float, a_nm: float, xp):
    """``spec *= sqrt(S(|q|))``, in place."""
    spec *= _sqrt_spectral_density_half(n, voxel_nm, a_nm, xp)
    return spec


def spectral_density(q_nm, a_nm: float):
    """``S(q) = (1 + |a q|^8)^-2`` (dimensionless, S(0) = 1)."""
    a_nm = checks.positive("a_nm", a_nm, unit="nm")
    q = np.asarray(q_nm, dtype=float)
    return 1.0 / (1.0 + (a_nm * q) ** 8) ** 2


def gaussian_field(n: int, voxel_nm: float, a_nm: float, rng, *, xp=None, noise_domain: str = "fourier"):
    """A GRF g with spectral density ``S(q) = (1 + |a q|^8)^-2`` on an n^3 periodic grid (float32).

    The amplitude is arbitrary (only quantiles of g are used).
    """
    saxs._check_grid(n, voxel_nm)
    a_nm = checks.positive("a_nm", a_nm, unit="nm")
    rng = checks.generator(rng)
    if noise_domain not in NOISE_DOMAINS:
        raise ValueError(f"noise_domain={noise_domain!r}; allowed: {', '.join(NOISE_DOMAINS)}")
    xp = _xp(xp)
    n = int(n)
    fft = fft_module(xp)
    kw = _fft_kwargs(xp)
    if noise_domain == "fourier":
        amp = _sqrt_spectral_density_half(n, voxel_nm, a_nm, xp)
        spec = white_noise_half_spectrum(n, rng, xp=xp, amplitude=amp)
        del amp
    else:
        w = _normal(rng, (n, n, n), xp)
        spec = fft.rfftn(w, **kw)
        del w
        _apply_sqrt_spectral_density(spec, n, voxel_nm, a_nm, xp)
    return fft.irfftn(spec, s=(n, n, n), axes=(0, 1, 2), **kw)  # (overwrite_x=True measured slower for c2r)


# --- exact quantile thresholds ------------------------------------------------------------------

_KTH_FALLBACKS = [0]  # how often the sampled bracket missed (diagnostics; tests read it)


def _kth_smallest(flat, ks, xp):
    """The k-th smallest values (0-based ranks ``ks``, an int or a sequence) of a 1D array, exactly.

    A sample of 2^15 values brackets each answer; one pass counts the values below the bracket, a
    second extracts the few inside it, and a partition of those gives the exact order
    statistic. Falls back to a full partition when a bracket misses (never wrong, only slower).
    The sorted sample is shared between ranks. Cost at 128^3: ~3 ms vs ~17 ms for np.partition.
    """
    single = np.ndim(ks) == 0
    ks = [int(k) for k in np.atleast_1d(ks)]
    size = flat.size
    if size <= 1 << 16:
        part = _backend.partition(flat, ks)
        out = [part[k] for k in ks]
        return out[0] if single else out
    # a multiplicative-hash sample spreads over the whole grid (a plain stride would sample
    # neighbouring, strongly correlated voxels of the smooth field and widen the bracket)
    m = 1 << 15
    pick = (xp.arange(m, dtype=xp.int64) * 2654435761) % size
    sample = xp.sort(flat[pick])
    out = []
    for k in ks:
        j = k / size * m
        d = 6.0 * math.sqrt(max(j * (1 - j / m), 1.0)) + 32
        lo = sample[max(int(j - d), 0)]
        hi = sample[min(int(j + d), m - 1)]
        keep = flat >= lo
        below = size - int(xp.count_nonzero(keep))
        keep &= flat <= hi
        inside = flat[keep]
        del keep
        r = k - below
        if 0 <= r < inside.size:
            out.append(_backend.partition(inside, r)[r])
        else:  # the bracket missed (heavy ties or a pathological field): exact, slower
            _KTH_FALLBACKS[0] += 1
            out.append(_backend.partition(flat, k)[k])
    return out[0] if single else out


def _rank_masks(field, counts, xp):
    """Boolean masks, one per entry of ``counts``, True on exactly ``count`` voxels: all but the
    ``size - count`` smallest values. Ties at a threshold are resolved in memory order.
    """
    flat = xp.reshape(field, (-1,))
    size = flat.size
    inner = [c for c in counts if 0 < c < size]
    thresholds = dict(zip(inner, _kth_smallest(flat, [size - c - 1 for c in inner], xp))) if inner else {}
    masks = []
    for count in counts:
        if count not in thresholds:
            mask = xp.full(field.shape, count >= size)
        else:
            t = thresholds[count]
            mask = xp.greater(field, t)
            n_high = int(xp.count_nonzero(mask))
            if n_high != count:  # ties at t: promote the first (count - n_high) of them to "high"
                eq = flat == t
                if _backend.is_ndarray_module(xp):
                    mask.reshape(-1)[xp.flatnonzero(eq)[: count - n_high]] = True
                else:  # the array API has no fancy-index assignment: the first ties by a running count
                    first = eq & (xp.cumulative_sum(_backend.astype(eq, xp.int64)) <= count - n_high)
                    mask = mask | xp.reshape(first, field.shape)
        masks.append(mask)
    return masks


def _rank_mask(field, count: int, xp):
    """The single-mask form of ``_rank_masks``."""
    return _rank_masks(field, [count], xp)[0]


def _phase_counts(n_vox: int, porosity: float, nu: float | None):
    n_pore_total = int(round(porosity * n_vox))
    if nu is None:
        return n_pore_total, n_pore_total
    return int(round(porosity * (1 - nu) * n_vox)), n_pore_total


def smooth_periodic(field, sigma_voxels: float = SMOOTH_SIGMA_VOXELS, *, overwrite: bool = False):
    """Periodic Gaussian smoothing (sigma in voxels) by a multiplication in Fourier space (float32)."""
    xp = get_array_module(field)
    n = field.shape[0]
    fft = fft_module(xp)
    kw = _fft_kwargs(xp)
    if xp is np:
        kw["overwrite_x"] = overwrite
    spec = fft.rfftn(_backend.astype(field, xp.float32, copy=False), **kw)
    spec *= _smoothing_half(n, float(sigma_voxels), _backend_name(xp))
    kw.pop("overwrite_x", None)
    return fft.irfftn(spec, s=field.shape, axes=(0, 1, 2), **kw)


def _threshold_smooth(field, porosity: float, xp):
    """psi' = 1[g > quantile(g, eps)] (exact count), as float32, then smoothed. Consumes field."""
    n_vox = field.size
    n_pore = int(round(porosity * n_vox))
    mask = _rank_mask(field, n_vox - n_pore, xp)
    psi = field  # reuse the field's memory for the binary structure
    _backend.assign(psi, mask)
    del mask
    return smooth_periodic(psi, overwrite=True)


def microstructure(field, porosity: float, nu: float | None = None, *, overwrite: bool = False):
    """Density (float32) of the two-phase (nu None) or three-phase medium built from a field g.

    Densities: pore 0, layer 0.65, solid 1; pore fraction round(eps(1-nu) N^3)/N^3, layer
    round(eps N^3)/N^3 minus that, solid the rest (exact counts). ``overwrite`` lets the
    function reuse the field's memory.
    """
    porosity = checks.number("porosity", porosity, 0.0, 1.0, lo_open=True, hi_open=True)
    if nu is not None:
        nu = checks.number("nu", nu, 0.0, 1.0, hi_open=True)
    xp = get_array_module(field)
    if field.ndim != 3 or len(set(field.shape)) != 1:
        raise ValueError(f"field must be a cubic 3D array, got shape {field.shape}")
    g = _backend.astype(field, xp.float32, copy=not overwrite)
    s = _threshold_smooth(g, porosity, xp)
    del g
    n_vox = s.size
    n_pore, n_pore_total = _phase_counts(n_vox, porosity, nu)
    if nu is None:
        _backend.assign(s, _rank_mask(s, n_vox - n_pore_total, xp))
        return s
    solid, not_pore = _rank_masks(s, [n_vox - n_pore_total, n_vox - n_pore], xp)
    s[...] = 0.0
    s[not_pore] = DENSITIES[1]  # stored as float32
    s[solid] = DENSITIES[2]
    return s


def two_phase(field, porosity: float, **kw):
    """Two-phase density 0 (pore, fraction eps) / 1 (solid) from a field g."""
    return microstructure(field, porosity, None, **kw)


def three_phase(field, porosity: float, nu: float, **kw):
    """Three-phase density 0 / 0.65 / 1 with fractions eps(1-nu), eps nu, 1-eps from a field g."""
    return microstructure(field, porosity, checks.number("nu", nu, 0.0, 1.0, hi_open=True), **kw)


def structure(params: dict, n: int, voxel_nm: float, rng, *, xp=None, noise_domain: str = "fourier"):
    """The density of one medium: params = {'a_nm', 'porosity'[, 'nu']} (nu absent/None: two-phase)."""
    a_nm, porosity, nu = _check_params(params)
    g = gaussian_field(n, voxel_nm, a_nm, rng, xp=xp, noise_domain=noise_domain)
    return microstructure(g, porosity, nu, overwrite=True)


def _check_params(params) -> tuple[float, float, float | None]:
    if not isinstance(params, dict):
        raise ValueError(f"params={params!r} must be a dict with keys 'a_nm', 'porosity' and optionally 'nu'")
    unknown = set(params) - {"a_nm", "porosity", "nu"}
    if unknown:
        raise ValueError(f"params has unknown keys {sorted(unknown)}; allowed: 'a_nm', 'porosity', 'nu'")
    for key in ("a_nm", "porosity"):
        if key not in params:
            raise ValueError(f"params is missing {key!r}")
    nu = params.get("nu")
    return checks.positive("a_nm", params["a_nm"], unit="nm"), checks.number("porosity", params["porosity"], 0.0, 1.0, lo_open=True, hi_open=True), None if nu is None else checks.number("nu", nu, 0.0, 1.0, hi_open=True)


# --- curves: invariant, noise, features ---------------------------------------------------------

def q_weights(q_nm) -> np.ndarray:
    """Integration widths dq_i of a q grid (half the distance between neighbours; ends half-cells)."""
    q = np.asarray(q_nm, dtype=float)
    return np.gradient(q) if q.size > 1 else np.ones_like(q)


def windowed_invariant(q_nm, intensity):
    """Q = 4 pi sum_i I(q_i) q_i^2 dq_i over the given q window (last axis of intensity)."""
    q = np.asarray(q_nm, dtype=float)
    return 4 * np.pi * np.sum(np.asarray(intensity, dtype=float) * q**2 * q_weights(q), axis=-1)


def lognormal_noise(intensity, alpha, rng):
    """I_obs = I exp(s z - s^2/2), s^2 = ln(1 + 1/(alpha I)): mean I, relative variance 1/(alpha I).

    alpha is the number of counts per unit intensity (photon-counting reading of the paper's
    "variance alpha I"); larger alpha means less noise.
    """
    rng = checks.generator(rng)
    intensity = np.asarray(intensity, dtype=float)
    alpha = np.asarray(alpha, dtype=float)
    if np.any(~np.isfinite(alpha)) or np.any(alpha <= 0):
        raise ValueError(f"alpha={alpha!r} must be positive and finite (counts per unit intensity)")
    if np.any(~np.isfinite(intensity)) or np.any(intensity <= 0):
        raise ValueError("intensity must be positive and finite for lognormal noise")
    s2 = np.log1p(1.0 / (alpha * intensity))
    z = rng.standard_normal(intensity.shape)
    return intensity * np.exp(np.sqrt(s2) * z - 0.5 * s2)


def features(q_nm, intensity):
    """log10 of the invariant-normalised curve(s): log10(I / Q), Q = windowed_invariant."""
    inv = windowed_invariant(q_nm, intensity)
    return np.log10(np.asarray(intensity, dtype=float) / np.asarray(inv)[..., None])


def sample_alpha(rng, log10_range=ALPHA_LOG10_RANGE) -> float:
    """alpha log-uniform in [10^lo, 10^hi] (default [1e2, 10^5.5])."""
    lo, hi = log10_range
    return float(10 ** rng.uniform(lo, hi))


def saxs_sample(params: dict, n: int, voxel_nm: float, q_nm, rng, *, noise: bool = True,
                alpha: float | None = None, xp=None, noise_domain: str = "fourier",
                return_structure: bool = False) -> dict:
    """One medium and its SAXS curve.

    Returns a dict: 'intensity' (clean I(q), nm^3, float64 host array), 'intensity_obs'
    (lognormal noise with mean I when ``noise``, else the clean curve), 'alpha' (drawn
    log-uniformly when None and noise is on; NaN without noise), 'invariant' (windowed, of the
    observed curve) and 'features' (log10(I_obs / Q_obs)); 'rho' too with ``return_structure``.
    """
    rng = checks.generator(rng)
    _check_params(params)
    saxs._check_grid(n, voxel_nm)
    q = np.asarray(q_nm, dtype=float)
    saxs.check_q_window(int(n), float(voxel_nm), q)
    rho = structure(params, int(n), float(voxel_nm), rng, xp=xp, noise_domain=noise_domain)
    intensity = np.asarray(to_numpy(saxs.saxs_curve(rho, float(voxel_nm), q)), dtype=float)
    out = {"intensity": intensity}
    if return_structure:
        out["rho"] = rho
    else:
        del rho
    if noise:
        alpha = sample_alpha(rng) if alpha is None else float(alpha)
        obs = lognormal_noise(intensity, alpha, rng)
    else:
        alpha, obs = float("nan"), intensity
    out["alpha"] = alpha
    out["intensity_obs"] = obs
    out["invariant"] = float(windowed_invariant(q, obs))
    out["features"] = np.log10(obs / out["invariant"])
    return out

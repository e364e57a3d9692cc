"""FFT small-angle scattering of a density on a periodic voxel grid.

Lengths in nm, q in nm^-1. For a density rho (any contrast unit, e.g. SLD in nm^-2) on an
N^3 periodic grid of voxel h the scattered intensity per unit volume is

    ``I(q_k) = h^3 |DFT(rho - mean rho)|^2 / N^3``          (units: rho^2 * nm^3)

on the reciprocal lattice q_k = 2*pi*k/(N h). The isotropic curve is a Gaussian-weighted
radial average onto any q grid,

    ``I(q_j) = sum_k w_jk I_k / sum_k w_jk,   w_jk = exp(-2 ((|q_k| - q_j)/dq)^2),  dq = 2*pi/(N h)``,

done as a bincount over fine ``|q|`` shells followed by a small (n_q x n_shells) weight matrix.
Only the rfftn half spectrum is formed; interior k_z planes are counted twice.

All kernels run on numpy (scipy.fft, multi-threaded) or cupy, chosen by the input array.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..core import backend as _backend
from ..core.backend import fft_module, get_array_module, to_numpy

SHELLS_PER_DQ = 32  # fine shells per reciprocal-lattice spacing: 8 gives 0.3 % error, 32 gives < 1e-4
SLD_TO_NM2 = 1e-4  # a scattering length density of 1e-6 A^-2 is 1e-4 nm^-2
PER_NM_TO_PER_CM = 1e7  # I in nm^-1 (rho in nm^-2) -> cm^-1, the unit of sasmodels


def _check_grid(n: int, voxel_nm: float) -> None:
    if int(n) != n or n < 8:
        raise ValueError(f"n={n!r} must be an integer >= 8 voxels")
    if not (voxel_nm > 0 and math.isfinite(voxel_nm)):
        raise ValueError(f"voxel_nm={voxel_nm!r} must be a positive, finite length in nm")


def q_spacing(n: int, voxel_nm: float) -> float:
    """Reciprocal-lattice spacing dq = 2 pi / (N h) in nm^-1."""
    _check_grid(n, voxel_nm)
    return 2 * math.pi / (n * voxel_nm)


def q_window(n: int, voxel_nm: float) -> tuple[float, float]:
    """The q range (nm^-1) a grid resolves: [1.5 dq, pi/(2h)] (see the physics chapter, section *FFT SAXS*)."""
    return 1.5 * q_spacing(n, voxel_nm), math.pi / (2 * voxel_nm)


def check_q_window(n: int, voxel_nm: float, q_nm) -> None:
    """Raise ValueError when the q grid is not resolved by an n^3 grid of voxel_nm."""
    q = np.asarray(to_numpy(q_nm), dtype=float)
    if q.ndim != 1 or q.size < 2:
        raise ValueError(f"q_nm must be a 1D array of at least 2 values, got shape {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ValueError("q_nm must be finite and positive (nm^-1)")
    lo, hi = q_window(n, voxel_nm)
    if q.min() < lo * (1 - 1e-9) or q.max() > hi * (1 + 1e-9):
        raise ValueError(
            f"q_nm spans [{q.min():.4g}, {q.max():.4g}] nm^-1 but an n={n} grid of "
            f"voxel_nm={voxel_nm:g} resolves [{lo:.4g}, {hi:.4g}] nm^-1: "
            "use a larger n (lower q_min) or a smaller voxel (higher q_max)"
        )


def _xp_name(xp) -> str:
    return xp.__name__  # 'numpy', 'cupy' (or another array-API namespace): a cache key


def _axis_q(n: int, voxel_nm: float, xp, dtype=None):
    """q components along the full axes (fftfreq) and the half axis (rfftfreq), nm^-1 (float32)."""
    fft = fft_module(xp)
    dtype = xp.float32 if dtype is None else dtype
    qf = _backend.astype(2 * math.pi * fft.fftfreq(n, d=voxel_nm), dtype)
    qh = _backend.astype(2 * math.pi * fft.rfftfreq(n, d=voxel_nm), dtype)
    return xp.asarray(qf), xp.asarray(qh)


def q_magnitude_half(n: int, voxel_nm: float, xp=np):
    """``|q|`` (nm^-1, float32) on the rfftn half spectrum, shape (n, n, n//2 + 1)."""
    qf, qh = _axis_q(n, voxel_nm, xp)
    return xp.sqrt(qf[:, None, None] ** 2 + qf[None, :, None] ** 2 + qh[None, None, :] ** 2)


def half_spectrum_multiplicity(n: int, xp=np):
    """How often each k_z plane of the half spectrum occurs in the full one (1 or 2)."""
    m = np.full(n // 2 + 1, 2.0, dtype=np.float32)
    m[0] = 1.0
    if n % 2 == 0:
        m[-1] = 1.0  # the Nyquist plane is its own mirror
    return xp.asarray(m)


@functools.lru_cache(maxsize=4)
def _shells(n: int, voxel_nm: float, backend: str):
    """Fine ``|q|`` shell index per half-spectrum point, and each shell's weighted count and mean ``|q|``."""
    xp = _backend.namespace(backend)
    dq = q_spacing(n, voxel_nm)
    width = dq / SHELLS_PER_DQ
    qmag = q_magnitude_half(n, voxel_nm, xp)
    idx = xp.reshape(_backend.astype(qmag / width, xp.intp if xp is np else xp.int32), (-1,))
    n_shells = int(xp.max(idx)) + 1
    mult = xp.reshape(xp.broadcast_to(half_spectrum_multiplicity(n, xp), qmag.shape), (-1,))
    count = _backend.bincount(idx, weights=mult, minlength=n_shells)
    qsum = _backend.bincount(idx, weights=mult * xp.reshape(qmag, (-1,)), minlength=n_shells)
    # shell 0 holds q = 0 (the mean, removed by contrast subtraction): give it no weight
    count[0] = 0
    q_shell = qsum / xp.maximum(count, 1e-30)
    return idx, count, q_shell


def intensity_3d(rho, voxel_nm: float, *, deconvolve_voxel: bool = False):
    """``I(q_k) = h^3 |rfftn(rho - mean)|^2 / N^3`` on the half spectrum (float32, units rho^2 nm^3).

    deconvolve_voxel divides by the cube's form factor prod_i sinc^2(q_i h / 2). That is exact
    when voxel values are cell averages of the density (partial-volume voxelisation, as in
    ``voxel_sphere``), and removes most of the high-q loss of a voxelised object.
    """
    xp = get_array_module(rho)
    if rho.ndim != 3 or len(set(rho.shape)) != 1:
        raise ValueError(f"rho must be a cubic 3D array, got shape {rho.shape}")
    n = rho.shape[0]
    _check_grid(n, voxel_nm)
    fft = fft_module(xp)
    rho = _backend.astype(rho, xp.float32, copy=False)
    kwargs = {"workers": -1} if xp is np else {}
    f = fft.rfftn(rho - _backend.astype(_backend.mean(rho, dtype=xp.float64), xp.float32), **kwargs)
    intensity = xp.real(f) ** 2 + xp.imag(f) ** 2
    del f
    intensity *= voxel_nm**3 / n**3  # a Python float multiplies as float32
    if deconvolve_voxel:
        qf, qh = _axis_q(n, voxel_nm, xp)
        s_f = _backend.sinc(qf * voxel_nm / (2 * math.pi)) ** 2  # numpy sinc(x) = sin(pi x)/(pi x)
        s_h = _backend.sinc(qh * voxel_nm / (2 * math.pi)) ** 2
        intensity /= s_f[:, None, None]
        intensity /= s_f[None, :, None]
        intensity /= s_h[None, None, :]
    return intensity


@functools.lru_cache(maxsize=16)
def _radial_weights(n: int, voxel_nm: float, backend: str, q_bytes: bytes):
    """Gaussian shell weights for the q grid, each row divided by its weighted voxel count.

    Cached per (grid, q grid): building the (n_q x n_shells) exponentials is ~half the cost of
    a radial average at 128^3 when done per call.
    """
    xp = _backend.namespace(backend)
    _, count, q_shell = _shells(n, voxel_nm, backend)
    q = xp.asarray(np.frombuffer(q_bytes, dtype=np.float64))
    dq = q_spacing(n, voxel_nm)
    w = xp.exp(-2.0 * ((q_shell[None, :] - q[:, None]) / dq) ** 2)
    w[:, 0] = 0.0
    w /= (w @ count)[:, None]
    return w


def radial_average(intensity_half, voxel_nm: float, q_nm, *, check: bool = True):
    """Gaussian-weighted isotropic average of a half-spectrum intensity onto q_nm (nm^-1)."""
    xp = get_array_module(intensity_half)
    n = intensity_half.shape[0]
    if intensity_half.shape != (n, n, n // 2 + 1):
        raise ValueError(f"intensity_half must have shape (n, n, n//2+1), got {intensity_half.shape}")
    if check:
        check_q_window(n, voxel_nm, q_nm)
    idx, count, _ = _shells(n, float(voxel_nm), _xp_name(xp))
    # one float64 copy (bincount would make it anyway) with the multiplicity applied in place
    weighted = _backend.astype(intensity_half, xp.float64)
    weighted[:, :, 1 : (n + 1) // 2] *= 2.0  # interior k_z planes occur twice in the full spectrum
    shell_sum = _backend.bincount(idx, weights=xp.reshape(weighted, (-1,)), minlength=count.size)
    del weighted
    q = np.ascontiguousarray(np.asarray(to_numpy(q_nm), dtype=np.float64).ravel())
    w = _radial_weights(n, float(voxel_nm), _xp_name(xp), q.tobytes())
    return w @ shell_sum


def saxs_curve(rho, voxel_nm: float, q_nm, *, deconvolve_voxel: bool = False):
    """Isotropic SAXS curve I(q) (rho^2 nm^3 per nm^3 of sample) of a periodic density."""
    n = rho.shape[0]
    check_q_window(n, voxel_nm, q_nm)
    return radial_average(intensity_3d(rho, voxel_nm, deconvolve_voxel=deconvolve_voxel), voxel_nm, q_nm)


# --- the analytic sphere, and a voxelised one --------------------------------------------------

SPHERE_MINIMA_QR = (4.493409457909064, 7.725251836937707, 10.904121659428899)


def sphere_amplitude(q_nm, radius_nm):
    """Normalised sphere amplitude 3 (sin x - x cos x)/x^3 with x = qR (1 at q = 0)."""
    xp = get_array_module(q_nm)
    x = xp.asarray(q_nm, dtype=xp.float64) * radius_nm
    small = x < 1e-2
    xs = xp.where(small, 1.0, x)
    exact = 3.0 * (xp.sin(xs) - xs * xp.cos(xs)) / xs**3
    series = 1.0 - x**2 / 10.0 + x**4 / 280.0
    return xp.where(small, series, exact)


def sphere_intensity(q_nm, radius_nm: float, contrast: float = 1.0, box_volume_nm3: float | None = None):
    """``|F(q)|^2`` of a homogeneous sphere, divided by box_volume_nm3 when given (I per unit volume).

    F(q) = contrast * V * sphere_amplitude(q, R) with V = 4/3 pi R^3.
    """
    if not radius_nm > 0:
        raise ValueError(f"radius_nm={radius_nm!r} must be > 0 nm")
    volume = 4.0 / 3.0 * math.pi * radius_nm**3
    f2 = (contrast * volume * sphere_amplitude(q_nm, radius_nm)) ** 2
    return f2 / box_volume_nm3 if box_volume_nm3 else f2


def voxel_sphere(n: int, voxel_nm: float, radius_nm: float, *, supersample: int = 8, xp=np):
    """Partial-volume voxelisation of a sphere centred in an n^3 box: each voxel holds the
    fraction of its cube inside the sphere (estimated on supersample^3 points for boundary voxels).
    """
    _check_grid(n, voxel_nm)
    if not 0 < radius_nm < n * voxel_nm / 2:
        raise ValueError(f"radius_nm={radius_nm!r} must lie in (0, {n * voxel_nm / 2:g}) for this box")
    if int(supersample) != supersample or supersample < 1:
        raise ValueError(f"supersample={supersample!r} must be a positive integer")
    c = (np.arange(n) - n / 2 + 0.5) * voxel_nm  # voxel centres, sphere at the box centre
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    half_diag = math.sqrt(3) / 2 * voxel_nm
    occ = (r <= radius_nm - half_diag).astype(np.float32)
    edge = np.nonzero(np.abs(r - radius_nm) < half_diag)
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5  # sub-voxel offsets in voxel units
    ox, oy, oz = np.meshgrid(sub, sub, sub, indexing="ij")
    for chunk in np.array_split(np.arange(edge[0].size), max(1, edge[0].size // 4096)):
        px = c[edge[0][chunk], None] + ox.ravel()[None, :] * voxel_nm
        py = c[edge[1][chunk], None] + oy.ravel()[None, :] * voxel_nm
        pz = c[edge[2][chunk], None] + oz.ravel()[None, :] * voxel_nm
        inside = (px**2 + py**2 + pz**2 <= radius_nm**2).mean(axis=1)
        occ[edge[0][chunk], edge[1][chunk], edge[2][chunk]] = inside
    return xp.asarray(occ)


def analytic_on_grid(n: int, voxel_nm: float, q_nm, radius_nm: float, contrast: float = 1.0, xp=np):
    """The analytic sphere evaluated on the grid's own q_k and radially averaged with the same
    weights as an FFT curve: the fair reference for ``saxs_curve`` of ``voxel_sphere``."""
    box = (n * voxel_nm) ** 3
    ana = _backend.astype(sphere_intensity(q_magnitude_half(n, voxel_nm, xp), radius_nm, contrast, box), xp.float32)
    return radial_average(ana, voxel_nm, q_nm)


# --- reading a curve ---------------------------------------------------------------------------

def power_law_slope(q_nm, intensity, q_range_nm: tuple[float, float]) -> float:
    """Least-squares slope of log I vs log q over q_range_nm (e.g. -4 for a Porod tail)."""
    q, i = np.asarray(q_nm, float), np.asarray(intensity, float)
    sel = (q >= q_range_nm[0]) & (q <= q_range_nm[1]) & (i > 0)
    if sel.sum() < 3:
        raise ValueError(f"q_range_nm={q_range_nm} holds fewer than 3 points with I > 0")
    return float(np.polyfit(np.log(q[sel]), np.log(i[sel]), 1)[0])


def local_minima(q_nm, intensity) -> np.ndarray:
    """q (nm^-1) of the local minima of a curve, refined by a parabola through the three points
    around each (exact for a true zero, where I ~ (q - q0)^2)."""
    q, i = np.asarray(q_nm, float), np.asarray(intensity, float)
    k = np.flatnonzero((i[1:-1] < i[:-2]) & (i[1:-1] < i[2:])) + 1
    out = []
    for j in k:
        x, y = q[j - 1:j + 2], i[j - 1:j + 2]
        a, b, _ = np.polyfit(x, y, 2)
        out.append(-b / (2 * a) if a > 0 else q[j])
    return np.array(out)

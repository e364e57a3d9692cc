"""Correlated 2D binary lattices and their diffuse scattering (the kernels of study 5).

A periodic L x L lattice of spins s = +-1 (occupancy x = (1 + s)/2, concentration m = <x>)
carries short-range order described by Warren-Cowley coefficients over an s x s *span* of
neighbour vectors v = (i, j), 0 <= i, j < span, v != (0, 0) (span 2, 3, 4: 3, 8, 15 numbers):

    c_v = (<s_r s_{r+v}> - <s>^2) / (1 - <s>^2).

Lattices with chosen correlations come from Metropolis Monte Carlo at T = 1 with the energy

    E = sum_r sum_v K_v s_r s_{r+v} + H sum_r s_r,

(K_v > 0 favours unlike neighbours along v, K_v < 0 like ones; H > 0 lowers the concentration).
Flipping s_r changes the energy by dE = -2 s_r h_r with the local field
h_r = sum_v K_v (s_{r+v} + s_{r-v}) + H, accepted with probability min(1, e^{-dE}). Sites with the
same (row mod span, column mod span) never interact (every v has a component in 1..span-1), so a
whole sublattice is updated at once; an array axis holds a batch of independent lattices.

The diffuse intensity of the occupancies is ``I(h) = |FFT(x - xbar)|^2 / N = m(1 - m) sum_v c_v
e^{2 pi i h.v}`` over *all* vectors v (the Wiener-Khinchin theorem): its inverse FFT is the
circular autocovariance of x, and its mean over h is the variance m(1 - m).

Kernels are written once for numpy and cupy (``xp``); random numbers come from an explicit numpy
Generator (for cupy, the device generator is seeded from it). The formulas are in the book's
chapter "Physics and conventions" (section *Diffuse scattering of short-range order*).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import backend as _backend
from ..core import checks
from ..core.backend import array_module, get_array_module, to_numpy

SPANS = (2, 3, 4)


def span_vectors(span: int) -> list[tuple[int, int]]:
    """The neighbour vectors (i, j), 0 <= i, j < span, (0, 0) left out, in row-major order."""
    span = checks.integer("span", span, 2, 16)
    return [(i, j) for i in range(span) for j in range(span) if (i, j) != (0, 0)]


def _check_spins(spins, xp):
    if spins.ndim not in (2, 3) or spins.shape[-1] != spins.shape[-2] or spins.shape[-1] < 2:
        raise ValueError(f"spins must be (L, L) or (batch, L, L) with L >= 2; got shape {tuple(spins.shape)}")
    return spins if spins.ndim == 3 else spins[None, ...]


def _roll2(a, i: int, j: int, xp):
    """a shifted so that out[..., r, c] = a[..., r + i, c + j] (periodic)."""
    return xp.roll(xp.roll(a, -i, axis=-2), -j, axis=-1)


def correlations(spins, span: int) -> np.ndarray:
    """Warren-Cowley coefficients (batch, n_v) of the span's vectors (``span_vectors``) for
    spins (L, L) or (batch, L, L) of +-1, each lattice with its own <s>; float64 on the host.
    A lattice with <s> = +-1 (all one kind) has no defined coefficients: NaN."""
    xp = get_array_module(spins)
    s = _backend.astype(_check_spins(xp.asarray(spins), xp), xp.float64)
    mean = xp.mean(s, axis=(-2, -1))
    var = 1.0 - mean * mean
    out = []
    for i, j in span_vectors(span):
        prod = xp.mean(s * _roll2(s, i, j, xp), axis=(-2, -1))
        out.append((prod - mean * mean) / xp.where(var > 0, var, xp.nan))
    return np.asarray(to_numpy(xp.stack(out, axis=-1)), dtype=np.float64)


def concentration_of(spins) -> np.ndarray:
    """m = <(1 + s)/2> per lattice, (batch,), float64 on the host."""
    xp = get_array_module(spins)
    s = _check_spins(xp.asarray(spins), xp)
    return np.asarray(to_numpy(xp.mean((1.0 + _backend.astype(s, xp.float64)) / 2.0, axis=(-2, -1))),
                      dtype=np.float64)


def local_field(spins, couplings, field: float):
    """h_r = sum_v K_v (s_{r+v} + s_{r-v}) + H for every site, (batch, L, L) float64."""
    xp = get_array_module(spins)
    s = _backend.astype(_check_spins(xp.asarray(spins), xp), xp.float64)
    k = np.asarray(couplings, dtype=np.float64)
    span = span_of(k)
    h = xp.zeros(s.shape, dtype=xp.float64) + float(field)
    for kv, (i, j) in zip(k, span_vectors(span)):
        if kv:
            h = h + float(kv) * (_roll2(s, i, j, xp) + _roll2(s, -i, -j, xp))
    return h


def span_of(couplings) -> int:
    """The span s of a coupling (or coefficient) vector from its length s^2 - 1."""
    n = int(np.asarray(couplings).shape[-1])
    for span in range(2, 17):
        if span * span - 1 == n:
            return span
    raise ValueError(f"couplings has {n} values; a span s needs s^2 - 1 (3, 8, 15, ...)")


def flip_probabilities(spins, couplings, field: float, sublattice: tuple[int, int]):
    """Metropolis acceptance min(1, exp(2 s_r h_r)) of flipping each site of one colour of
    ``sweep`` (rows = a mod p, columns = b mod p, p = ``colour_period``),
    (batch, L/p, L/p) float64."""
    xp = get_array_module(spins)
    s = _check_spins(xp.asarray(spins), xp)
    p = colour_period(s.shape[-1], span_of(couplings))
    a, b = sublattice
    h = local_field(s, couplings, field)[..., a::p, b::p]
    ds = s[..., a::p, b::p]
    d_energy = -2.0 * ds * h
    return xp.minimum(1.0, xp.exp(-xp.minimum(d_energy, 50.0)))


def _uniform(rng: np.random.Generator, shape, xp):
    """Uniform draws of ``shape`` in xp: from rng on numpy, from a device generator seeded by it on
    cupy, from rng on the host for namespaces without a random module."""
    if xp is np:
        return rng.random(shape)
    if hasattr(xp, "random"):
        return xp.random.default_rng(int(rng.integers(2**63 - 1))).random(shape)
    return xp.asarray(rng.random(shape))


def random_spins(batch: int, size: int, rng, *, concentration: float = 0.5, xp=None):
    """Independent spins: +1 with probability ``concentration`` (int8, (batch, L, L))."""
    xp = array_module() if xp is None else xp
    rng = checks.generator(rng)
    m = checks.number("concentration", concentration, 0.0, 1.0)
    size = checks.integer("size", size, 2, 1 << 14)
    u = rng.random((checks.integer("batch", batch, 1), size, size))
    return xp.asarray(np.where(u < m, 1, -1).astype(np.int8))


def colour_period(size: int, span: int) -> int:
    """The period p of the sublattice colouring used by ``sweep`` on an L x L lattice.

    Sites r, r' with r = r' (mod p) in both coordinates never interact when p >= span (every
    neighbour vector has components of size below ``span``) and L is a multiple of p (so the
    colouring survives the periodic wrap). p is the smallest divisor of L in [span, 2 span]:
    on L = 64, p = 2, 4, 4 for spans 2, 3, 4, so span 3 needs no lattice that is a multiple of 3.
    A lattice with no such divisor is refused, since its updates would no longer be vectorised."""
    size = checks.integer("size", size, 2, 1 << 14)
    span = checks.integer("span", span, 2, 16)
    for p in range(span, 2 * span + 1):
        if size % p == 0:
            return p
    raise ValueError(f"the lattice size L = {size} must be a multiple of the span {span} "
                     f"(or of another number up to {2 * span}), so that its sublattices do not interact")


def sweep(spins, couplings, field, rng, n_sweeps: int = 1):
    """``n_sweeps`` Metropolis sweeps in place of spins (batch, L, L); couplings (n_v,) or
    (batch, n_v), field a number or (batch,). Returns the spins (int8).

    The lattice is coloured by (row mod p, column mod p), p = ``colour_period(L, span)``; each
    sweep updates every colour once, in row-major order, all its sites at once. The neighbours
    of one colour are themselves single colours, shifted by at most one period, so an update
    reads 2 n_v arrays of N / p^2 sites (not the whole lattice)."""
    xp = get_array_module(spins)
    s = _check_spins(spins, xp)
    k = np.asarray(couplings, dtype=np.float64)
    span = span_of(k)
    size = s.shape[-1]
    p = colour_period(size, span)
    batch = s.shape[0]
    k = np.broadcast_to(k, (batch, k.shape[-1]))
    hf = np.broadcast_to(np.asarray(field, dtype=np.float64), (batch,))
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(hf))):
        raise ValueError("couplings and field must be finite")
    kx = xp.asarray(k)[:, :, None, None]
    hx = xp.asarray(hf)[:, None, None]
    rng = checks.generator(rng)
    vecs = span_vectors(span)
    n = size // p
    grid = xp.reshape(s, (batch, n, p, n, p))  # a view: grid[:, R, a, C, b] = s[:, R p + a, C p + b]

    def colour(a: int, b: int):
        """The sites at (R p + a, C p + b) for any integers a, b, as (batch, n, n) (periodic)."""
        block = grid[:, :, a % p, :, b % p]
        dr, dc = a // p, b // p
        return block if dr == 0 and dc == 0 else xp.roll(xp.roll(block, -dr, axis=1), -dc, axis=2)

    for _ in range(checks.integer("n_sweeps", n_sweeps, 0)):
        for a in range(p):
            for b in range(p):
                h = hx + 0.0
                for m, (i, j) in enumerate(vecs):
                    pair = _backend.astype(colour(a + i, b + j), xp.float64) + _backend.astype(colour(a - i, b - j), xp.float64)
                    h = h + kx[:, m, ...] * pair
                sub = grid[:, :, a, :, b]
                accept = _uniform(rng, tuple(sub.shape), xp) < xp.exp(xp.minimum(2.0 * _backend.astype(sub, xp.float64) * h, 0.0))
                grid[:, :, a, :, b] = xp.where(accept, -sub, sub)
    return s


def energy(spins, couplings, field: float) -> np.ndarray:
    """E = sum_r sum_v K_v s_r s_{r+v} + H sum_r s_r per lattice, (batch,) float64 on the host."""
    xp = get_array_module(spins)
    s = _backend.astype(_check_spins(xp.asarray(spins), xp), xp.float64)
    k = np.asarray(couplings, dtype=np.float64)
    e = float(field) * xp.sum(s, axis=(-2, -1))
    for kv, (i, j) in zip(k, span_vectors(span_of(k))):
        e = e + float(kv) * xp.sum(s * _roll2(s, i, j, xp), axis=(-2, -1))
    return np.asarray(to_numpy(e), dtype=np.float64)


def diffuse_intensity(spins):
    """``I(h) = |FFT(x - xbar)|^2 / N`` of the occupancies x = (1 + s)/2, per lattice
    (batch, L, L) float64, h = 0 at index (0, 0) (``numpy.fft.fftshift`` to centre it)."""
    xp = get_array_module(spins)
    s = _check_spins(xp.asarray(spins), xp)
    x = (1.0 + _backend.astype(s, xp.float64)) / 2.0
    x = x - xp.mean(x, axis=(-2, -1), keepdims=True)
    if not _backend.is_ndarray_module(xp):  # the standard's fftn takes complex input only
        x = _backend.astype(x, xp.complex128)
    amp = xp.fft.fftn(x, axes=(-2, -1))
    return (xp.real(amp) ** 2 + xp.imag(amp) ** 2) / (s.shape[-1] * s.shape[-2])


def onsager_nn_correlation(beta_j: float) -> float:
    """<s_r s_{r+e}> of nearest neighbours in the infinite 2D Ising model at coupling beta J
    (Onsager): u/J = -coth(2K) [1 + (2/pi)(2 tanh^2(2K) - 1) K1(k)], k = 2 sinh(2K)/cosh^2(2K),
    K = beta J, K1 the complete elliptic integral of the first kind. With two bonds per spin,
    <s s> = -u / (2 J) = coth(2K) [1 + (2/pi)(2 tanh^2(2K) - 1) K1(k)] / 2."""
    from scipy.special import ellipk

    k_c = checks.positive("beta_j", beta_j, 10.0)
    kappa = 2.0 * math.sinh(2 * k_c) / math.cosh(2 * k_c) ** 2
    k1 = float(ellipk(kappa * kappa))  # scipy's ellipk takes the parameter m = k^2
    return 0.5 / math.tanh(2 * k_c) * (1.0 + (2.0 / math.pi) * (2.0 * math.tanh(2 * k_c) ** 2 - 1.0) * k1)


def truncated_spectrum_min(coefficients, span: int, n_h: int = 64) -> np.ndarray:
    """min over h of 1 + 2 sum_v c_v cos(2 pi h.v) (the intensity / (m(1-m)) of a lattice whose
    correlations vanish beyond the span) on an n_h x n_h grid, per row of (batch, n_v)."""
    c = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    v = np.asarray(span_vectors(span), dtype=np.float64)
    h = np.arange(checks.integer("n_h", n_h, 2, 1024)) / n_h
    phase = 2 * np.pi * (h[:, None, None] * v[None, None, :, 0] + h[None, :, None] * v[None, None, :, 1])
    spec = 1.0 + 2.0 * np.einsum("bv,xyv->bxy", c, np.cos(phase))
    return spec.reshape(len(c), -1).min(axis=1)


def check_realisable(coefficients, span: int, concentration: float = 0.5, *, spectrum: bool = False,
                     tol: float = 1e-9) -> np.ndarray:
    """Raise ValueError, naming the bound, when Warren-Cowley coefficients (n_v,) or (batch, n_v)
    cannot belong to any lattice of concentration m; return them as float64 (batch, n_v).

    Bounds checked (each necessary, none sufficient):

    * pairs: -min(m/(1-m), (1-m)/m) <= c_v <= 1 (a pair probability P(x_0 = a, x_v = b) >= 0);
    * triangles, at m = 1/2 only: for vectors u, w and u + w all in the span (up to sign),
      e_1 c_u + e_2 c_w + e_3 c_(u+w) >= -1 for signs with e_1 e_2 e_3 = 1 (three spins cannot
      all be pairwise unlike: s_a s_b + s_b s_c + s_a s_c >= -1 for every configuration);
    * spectrum (``spectrum=True``): 1 + 2 sum_v c_v cos(2 pi h.v) >= 0 on a 64 x 64 grid of h.
      This is the non-negative intensity of a lattice whose correlations vanish *beyond* the
      span, a stronger assumption than the others: a real lattice has correlations beyond the
      span, and the truncated spectrum of a realisable lattice can be negative (study 5 counts
      how often), so this check is off by default.
    """
    vecs = span_vectors(span)
    c = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
    if c.ndim != 2 or c.shape[-1] != len(vecs) or not np.all(np.isfinite(c)):
        raise ValueError(f"coefficients must be finite with {len(vecs)} values per lattice for span {span}; "
                         f"got shape {np.shape(coefficients)}")
    m = checks.number("concentration", concentration, 0.0, 1.0, lo_open=True, hi_open=True)
    low = -min(m / (1 - m), (1 - m) / m)
    bad = np.argwhere((c < low - tol) | (c > 1 + tol))
    if len(bad):
        b, v = bad[0]
        raise ValueError(f"pair bound: c{vecs[v]} = {c[b, v]:.4f} (lattice {b}) must lie in [{low:.4f}, 1] "
                         f"at concentration {m:g}")
    if abs(m - 0.5) < 1e-12:
        index = {v: n for n, v in enumerate(vecs)} | {(-i, -j): n for n, (i, j) in enumerate(vecs)}
        for u in index:
            for w in index:
                t = (u[0] + w[0], u[1] + w[1])
                if t not in index or u >= w:
                    continue
                cu, cw, ct = c[:, index[u]], c[:, index[w]], c[:, index[t]]
                for e1, e2 in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    worst = e1 * cu + e2 * cw + e1 * e2 * ct
                    if np.any(worst < -1 - tol):
                        b = int(np.argmin(worst))
                        raise ValueError(f"triangle bound: {e1:+d} c{u} {e2:+d} c{w} {e1 * e2:+d} c{t} = "
                                         f"{worst[b]:.4f} (lattice {b}) must be >= -1 at concentration 1/2")
    if spectrum:
        low_spec = truncated_spectrum_min(c, span)
        if np.any(low_spec < -tol):
            b = int(np.argmin(low_spec))
            raise ValueError(f"spectrum bound: 1 + 2 sum_v c_v cos(2 pi h.v) reaches {low_spec[b]:.4f} < 0 "
                             f"(lattice {b}): no lattice with these coefficients and none beyond the span")
    return c


def fit_couplings(targets, span: int, size: int, rng, *, concentration: float = 0.5, n_feedback: int = 300,
                  rate: float = 0.5, n_equilibrate: int = 100, xp=None, check: bool = True,
                  fit_field: bool = True) -> dict:
    """Lattices whose Warren-Cowley coefficients approach ``targets`` by feedback on the couplings.

    targets: (n_v,) or (batch, n_v) for the span's vectors (``span_vectors``). During
    ``n_feedback`` sweeps the couplings follow K_v += r_t (c_v - c_v*) and the field
    H += r_t (m - m*) after sweep t, with r_t = rate / (1 + t/100) (c measured on the lattice
    itself, whose own fluctuations the decaying step averages out); then they are frozen
    and the lattice equilibrates for ``n_equilibrate`` sweeps. Not every set of coefficients is
    realisable (e.g. c_v >= -min(m/(1-m), (1-m)/m), and the implied I(h) must be >= 0): compare
    the ``achieved`` coefficients with the targets (NaN where a lattice ended as one kind only;
    during feedback such a lattice restarts from random spins). ``fit_field=False`` keeps H = 0
    (the concentration then fluctuates about 1/2; with strong clustering couplings the field
    feedback can tip a whole lattice into one kind). ``check`` refuses targets that break a bound
    of ``check_realisable`` (off: feedback goes as far as it can, e.g. to decode a prediction).

    Returns {"spins": (batch, L, L) int8, "couplings": (batch, n_v), "field": (batch,),
    "achieved": (batch, n_v), "concentration": (batch,)}.
    """
    vecs = span_vectors(span)
    target = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    if target.shape[-1] != len(vecs) or not np.all(np.isfinite(target)) or np.any(np.abs(target) > 1):
        raise ValueError(f"targets must be finite, in [-1, 1], with {len(vecs)} values per lattice for span {span}; "
                         f"got shape {target.shape}")
    m_target = checks.number("concentration", concentration, 0.0, 1.0, lo_open=True, hi_open=True)
    if check:
        check_realisable(target, span, m_target)
    rate = checks.positive("rate", rate, 10.0)
    rng = checks.generator(rng)
    batch = target.shape[0]
    spins = random_spins(batch, size, rng, concentration=m_target, xp=xp)
    k = np.zeros_like(target)
    h = np.zeros(batch)
    for t in range(checks.integer("n_feedback", n_feedback, 0)):
        sweep(spins, k, h, rng, 1)
        c = correlations(spins, span)
        single = np.flatnonzero(~np.all(np.isfinite(c), axis=1))
        if len(single):  # ordered into one kind only (strong clustering): restart it, keep its couplings
            spins[single] = random_spins(len(single), size, rng, concentration=m_target, xp=get_array_module(spins))
            h[single] = 0.0
            c[single] = target[single]
        step = rate / (1.0 + t / 100.0)
        k += step * (c - target)
        if fit_field:
            h += step * (concentration_of(spins) - m_target)
    sweep(spins, k, h, rng, checks.integer("n_equilibrate", n_equilibrate, 0))
    return {"spins": spins, "couplings": k, "field": h, "achieved": correlations(spins, span),
            "concentration": concentration_of(spins)}


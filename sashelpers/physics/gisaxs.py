"""GISAXS of finite nanoparticle superlattices (mesocrystals) on a substrate.

Lengths in nm, wavevectors in nm^-1, angles in degrees at the interface (``alpha_i_deg``) and
radians inside. The formulas and conventions (the book's chapter "Physics and conventions",
section *GISAXS of nanoparticle superlattices*):

* Geometry. The film normal is z, the beam runs along +x and hits the surface at alpha_i:
  k_i = k (cos a_i, 0, -sin a_i), k_f = k (cos a_f cos 2t_f, cos a_f sin 2t_f, sin a_f).
  The detector q is q = k_f - k_i (q_z = k (sin a_f + sin a_i)); the DWBA is written with
  Q = k_i - k_f. Pixels with a_f <= 0 (below the horizon) are zero.
* Born:  ``I = |F_sphere(|q|)|^2 |S(q)|^2``.
* Finite lattice of N1 x N2 x N3 conventional cells a_j with basis {r_b} (fractions f_b):
  S(Q) = sum_b sum_n exp(i Q.(n.a + r_b)) = prod_j G_Nj(x_j) * sum_b exp(i f_b.x),  x_j = Q.a_j,
  G_N(x) = sum_{n<N} e^{inx} = e^{i(N-1)x/2} D_N(x),  D_N(x) = sin(Nx/2)/sin(x/2).
  G_N is 2 pi periodic, so x_j is reduced to [-pi, pi] before use (stable, limit N at x = 2 pi m).
* DWBA (particles on a substrate, sphere centres at z = R + lattice height)::

    A = F(Q_par, -k(s_i+s_f)) + r_i F(Q_par, k(s_i-s_f)) + r_f F(Q_par, k(s_f-s_i))
        + r_i r_f F(Q_par, k(s_i+s_f)),   I = <|A|^2> over azimuthal orientations,

  with ``F(Q) = F_sphere(|Q|) exp(i Q_z R) S(Q)`` and r(a) the Fresnel coefficient of the substrate.

Orientations are averaged incoherently (grains): the lattice is rotated about z; only S depends on
the rotation, the sphere form factor depends on ``|Q|`` alone and is computed once per image.
All kernels run on numpy or cupy (one code path, ``xp``); images are float32 (n_z, n_y) with
q_z increasing along axis 0 (show with ``origin="lower"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core import backend as _backend
from ..core.backend import array_module, get_array_module

# --- constants ----------------------------------------------------------------------------------

HC_KEV_NM = 1.23984198  # h c in keV nm
ENERGY_10KEV = 10.0
WAVELENGTH_10KEV_NM = HC_KEV_NM / ENERGY_10KEV  # 0.123984 nm
K_10KEV_NM = 2 * math.pi / WAVELENGTH_10KEV_NM  # 50.677 nm^-1

SI_DELTA_10KEV = 4.889e-6
SI_BETA_10KEV = 7.35e-8
AU_DELTA_10KEV = 2.991e-5
AU_BETA_10KEV = 2.21e-6
SUBSTRATES_10KEV = {"Si": (SI_DELTA_10KEV, SI_BETA_10KEV), "Au": (AU_DELTA_10KEV, AU_BETA_10KEV)}

SPHERE_FIRST_ZERO_QR = 4.493409457909064

# --- lattices -----------------------------------------------------------------------------------

_S2, _S3, _S6 = math.sqrt(2), math.sqrt(3), math.sqrt(6)
_ORIENT = {
    "100": np.eye(3),
    "110": np.array([[0, 0, 1], [1 / _S2, -1 / _S2, 0], [1 / _S2, 1 / _S2, 0]]),
    "111": np.array([[1 / _S2, -1 / _S2, 0], [1 / _S6, 1 / _S6, -2 / _S6], [1 / _S3, 1 / _S3, 1 / _S3]]),
}
_BASIS = {
    "SC": np.zeros((1, 3)),
    "BCC": np.array([[0, 0, 0], [0.5, 0.5, 0.5]]),
    "FCC": np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]),
    "HCP": np.array([[0, 0, 0], [2 / 3, 1 / 3, 0.5]]),
}
# the 7 classes: (basis, orientation, azimuthal symmetry range in degrees)
CLASSES = {
    "SC[100]": ("SC", "100", 90.0),
    "SC[110]": ("SC", "110", 180.0),
    "BCC[100]": ("BCC", "100", 90.0),
    "BCC[110]": ("BCC", "110", 180.0),
    "FCC[100]": ("FCC", "100", 90.0),
    "FCC[111]": ("FCC", "111", 120.0),
    "HCP[0001]": ("HCP", "0001", 60.0),
}
CLASS_NAMES = tuple(CLASSES)
HCP_C_OVER_A = math.sqrt(8.0 / 3.0)


def _check_class(class_name: str) -> None:
    if class_name not in CLASSES:
        raise ValueError(f"class_name={class_name!r} is not a lattice class; allowed: {', '.join(CLASSES)}")


def _check_positive(name: str, value, upper: float = math.inf) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number in (0, {upper:g}]") from None
    if not (v > 0 and math.isfinite(v) and v <= upper):
        raise ValueError(f"{name}={value!r} must be a finite number in (0, {upper:g}]")
    return v


def _check_reps(reps) -> tuple[int, int, int]:
    msg = f"reps={reps!r} must be an integer or 3 integers in [1, 100000] (cells per lattice vector)"
    try:
        r = (reps,) * 3 if np.ndim(reps) == 0 else tuple(reps)
        ok = len(r) == 3 and all(int(n) == n and 1 <= n <= 100_000 for n in r)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(msg)
    return tuple(int(n) for n in r)


def symmetry_range_deg(class_name: str) -> float:
    """Azimuthal symmetry range of a class (90 cubic [100], 180 [110], 120 FCC[111], 60 HCP)."""
    _check_class(class_name)
    return CLASSES[class_name][2]


def nearest_neighbour_nm(class_name: str, lattice_nm: float) -> float:
    """Nearest-neighbour distance: a (SC), a sqrt3/2 (BCC), a/sqrt2 (FCC), d (HCP)."""
    _check_class(class_name)
    kind = CLASSES[class_name][0]
    return lattice_nm * {"SC": 1.0, "BCC": _S3 / 2, "FCC": 1 / _S2, "HCP": 1.0}[kind]


def cell_vectors_nm(class_name: str, lattice_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Conventional cell vectors (rows a_1, a_2, a_3, lab frame, nm) and basis fractions (n_b, 3).

    Cubic classes: lattice_nm is the cube edge a, the cell is rotated so that the rows x, y, z of
    the orientation matrix (the physics chapter's table of classes) become the lab axes. HCP[0001]: lattice_nm is the in-plane
    nearest-neighbour distance d, a_1 = (d, 0, 0), a_2 = (-d/2, d sqrt3/2, 0), a_3 = (0, 0, c),
    c = sqrt(8/3) d, basis {0, (2/3, 1/3, 1/2)} (true ABAB stacking). Positions are n.a + f_b.a.
    """
    _check_class(class_name)
    lattice_nm = _check_positive("lattice_nm", lattice_nm)
    kind, orient, _ = CLASSES[class_name]
    if kind == "HCP":
        d = lattice_nm
        cell = np.array([[d, 0.0, 0.0], [-d / 2, d * _S3 / 2, 0.0], [0.0, 0.0, HCP_C_OVER_A * d]])
    else:
        # lab components of the crystal axis e_j are O @ e_j, i.e. the columns of O
        cell = lattice_nm * _ORIENT[orient].T.copy()
    return cell, _BASIS[kind].copy()


def lattice_points_nm(class_name: str, lattice_nm: float, reps, phi_deg: float = 0.0) -> np.ndarray:
    """Explicit sphere-centre lattice positions (n, 3) in nm, rotated by phi_deg about z.

    For tests and peers only (small N): the kernels never sum points one by one.
    """
    n1, n2, n3 = _check_reps(reps)
    cell, basis = cell_vectors_nm(class_name, lattice_nm)
    n = np.stack(np.meshgrid(np.arange(n1), np.arange(n2), np.arange(n3), indexing="ij"), -1).reshape(-1, 3)
    frac = (n[:, None, :] + basis[None, :, :]).reshape(-1, 3)
    pts = frac @ cell
    c, s = math.cos(math.radians(phi_deg)), math.sin(math.radians(phi_deg))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return pts @ rot.T


def n_spheres(class_name: str, reps) -> int:
    n1, n2, n3 = _check_reps(reps)
    _check_class(class_name)
    return n1 * n2 * n3 * len(_BASIS[CLASSES[class_name][0]])


# --- 1D kernels ---------------------------------------------------------------------------------


def _reduce_2pi(x, xp):
    return x - (2 * math.pi) * xp.round(x * (1 / (2 * math.pi)))  # round half to even, as rint


def dirichlet(x, n: int):
    """D_N(x) = sin(N x/2) / sin(x/2), stable at x = 2 pi m where it equals (-1)^(m(N-1)) N."""
    xp = get_array_module(x)
    x = xp.asarray(x)
    m = xp.round(x / (2 * math.pi))
    y = x - 2 * math.pi * m
    d = _dirichlet_reduced(y, n, xp)
    if n % 2 == 0:
        d = xp.where(xp.remainder(m, 2) == 0, d, -d)
    return d


def _dirichlet_reduced(y, n: int, xp):
    """D_N(y) for y in [-pi, pi]; a series near y = 0 (no 0/0)."""
    half = 0.5 * y
    s = xp.sin(half)
    small = xp.abs(y) < 1e-3 / max(n, 1)
    safe = xp.where(small, xp.ones_like(s), s)
    series = n * (1 - (n * n - 1) * (y * y) / 24)
    return xp.where(small, series, xp.sin(n * half) / safe)


def geometric_sum(x, n: int):
    """G_N(x) = sum_{m=0}^{N-1} exp(i m x) = exp(i (N-1) x / 2) D_N(x) (complex)."""
    xp = get_array_module(x)
    y = _reduce_2pi(xp.asarray(x), xp)
    return xp.exp(1j * (0.5 * (n - 1)) * y) * _dirichlet_reduced(y, n, xp)


def sphere_form_factor(q_nm, radius_nm: float):
    """F(q) = 4 pi R^3 (sin qR - qR cos qR)/(qR)^3 in nm^3 (= V at q = 0), float64.

    A Taylor series is used for qR < 0.1, where the difference cancels.
    """
    radius_nm = _check_positive("radius_nm", radius_nm)
    xp = get_array_module(q_nm)
    x = xp.abs(xp.asarray(q_nm, dtype=xp.float64)) * radius_nm
    small = x < 0.1
    xs = xp.where(small, 1.0, x)
    exact = (xp.sin(xs) - xs * xp.cos(xs)) / xs**3
    x2 = x * x
    series = 1 / 3 - x2 / 30 + x2 * x2 / 840 - x2 * x2 * x2 / 45360
    return 4 * math.pi * radius_nm**3 * xp.where(small, series, exact)


# --- substrate ----------------------------------------------------------------------------------


def _substrate(substrate):
    if substrate is None:
        return 0.0, 0.0
    if isinstance(substrate, str):
        if substrate not in SUBSTRATES_10KEV:
            raise ValueError(f"substrate={substrate!r} is unknown; allowed: {', '.join(SUBSTRATES_10KEV)} "
                             "or a (delta, beta) pair")
        return SUBSTRATES_10KEV[substrate]
    try:
        delta, beta = (float(v) for v in substrate)
    except (TypeError, ValueError):
        raise ValueError(f"substrate={substrate!r} must be a name or a (delta, beta) pair") from None
    if not (0 <= delta < 1 and 0 <= beta < 1):
        raise ValueError(f"substrate={substrate!r}: delta and beta must lie in [0, 1)")
    return delta, beta


def reflection_coefficient(alpha_rad, delta: float = SI_DELTA_10KEV, beta: float = SI_BETA_10KEV):
    """Fresnel r(a) = (k_z0 - k_z1)/(k_z0 + k_z1), k_z0 = sin a, k_z1 = sqrt(n^2 - cos^2 a),
    n = 1 - delta + i beta (complex128; k cancels). n^2 - cos^2 a is formed as
    sin^2 a - 2 delta + delta^2 - beta^2 + 2 i beta (1 - delta) to avoid cancellation.
    """
    if not (0 <= delta < 1 and 0 <= beta < 1):
        raise ValueError(f"delta={delta!r}, beta={beta!r} must lie in [0, 1)")
    xp = get_array_module(alpha_rad)
    a = xp.asarray(alpha_rad, dtype=xp.float64)
    if delta == 0 and beta == 0:
        return xp.zeros(a.shape, dtype=xp.complex128)  # n = 1: no interface
    s = xp.sin(a)
    kz1 = xp.sqrt(s * s - 2 * delta + delta**2 - beta**2 + 2j * beta * (1 - delta))
    den = s + kz1
    zero = den == 0  # only at a = 0 with beta = 0: total reflection, r = -1
    return xp.where(zero, -1.0 + 0j, (s - kz1) / xp.where(zero, 1.0, den))


def critical_angle_deg(delta: float) -> float:
    """alpha_c = sqrt(2 delta) in degrees (0.1792 deg for Si at 10 keV)."""
    return math.degrees(math.sqrt(2 * delta))


# --- detector and q geometry --------------------------------------------------------------------


def wavenumber_nm(energy_kev: float | None = None, wavelength_nm: float | None = None) -> float:
    """k = 2 pi / lambda in nm^-1, from an energy in keV or a wavelength in nm (default 10 keV)."""
    if energy_kev is not None and wavelength_nm is not None:
        raise ValueError("give energy_kev or wavelength_nm, not both")
    if wavelength_nm is not None:
        return 2 * math.pi / _check_positive("wavelength_nm", wavelength_nm, 100.0)
    energy_kev = ENERGY_10KEV if energy_kev is None else energy_kev
    return 2 * math.pi * _check_positive("energy_kev", energy_kev, 1000.0) / HC_KEV_NM


@dataclass(frozen=True)
class QGrid:
    """A uniform (q_y, q_z) image grid in nm^-1: image[i_z, i_y] at (qy_nm[i_y], qz_nm[i_z])."""

    qy_nm: np.ndarray
    qz_nm: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.qz_nm.size, self.qy_nm.size)


@dataclass(frozen=True)
class DetectorGrid:
    """A flat detector perpendicular to the direct beam at distance_mm.

    Pixel (row i, column j) lies at x = (j - beam_col_px) pixel_mm (horizontal, along q_y) and
    y = (i - beam_row_px) pixel_mm (vertical, upwards), measured from the direct (unreflected)
    beam, which passes at alpha_f = -alpha_i. image[i, j], rows increase upward.
    """

    n_rows: int
    n_cols: int
    pixel_mm: float
    distance_mm: float
    beam_row_px: float
    beam_col_px: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)


@dataclass(frozen=True)
class AngleGrid:
    """Exit angles in degrees (a spherical detector): image[i, j] at alpha_f_deg[i], two_theta_f_deg[j]."""

    two_theta_f_deg: np.ndarray
    alpha_f_deg: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.alpha_f_deg.size, self.two_theta_f_deg.size)


def angle_grid(two_theta_f_deg, alpha_f_deg) -> AngleGrid:
    """A grid of exit angles (degrees, 1D axes), e.g. the bin centres of a spherical detector."""
    tt = np.asarray(two_theta_f_deg, dtype=np.float64)
    af = np.asarray(alpha_f_deg, dtype=np.float64)
    for name, v in (("two_theta_f_deg", tt), ("alpha_f_deg", af)):
        if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)) or np.any(np.abs(v) >= 90):
            raise ValueError(f"{name} must be a 1D array of >= 2 finite angles in (-90, 90) degrees")
    return AngleGrid(tt, af)


def q_grid(n_y: int, n_z: int, qy_range_nm=(-2.0, 2.0), qz_range_nm=(0.0, 2.0)) -> QGrid:
    """Uniform q_y (columns) and q_z (rows) axes, end points included, in nm^-1."""
    for name, n in (("n_y", n_y), ("n_z", n_z)):
        if int(n) != n or not 2 <= n <= 8192:
            raise ValueError(f"{name}={n!r} must be an integer in [2, 8192] pixels")
    (y0, y1), (z0, z1) = qy_range_nm, qz_range_nm
    if not (math.isfinite(y0) and math.isfinite(y1) and y0 < y1 and max(abs(y0), abs(y1)) <= 50):
        raise ValueError(f"qy_range_nm={qy_range_nm!r} must be increasing (lo < hi) within [-50, 50] nm^-1")
    if not (math.isfinite(z0) and math.isfinite(z1) and 0 <= z0 < z1 <= 50):
        raise ValueError(f"qz_range_nm={qz_range_nm!r} must be increasing within [0, 50] nm^-1")
    return QGrid(np.linspace(y0, y1, int(n_y)), np.linspace(z0, z1, int(n_z)))


def detector_grid(n_rows: int, n_cols: int, pixel_mm: float, distance_mm: float,
                  beam_row_px: float, beam_col_px: float) -> DetectorGrid:
    """A flat-detector pixel grid (see DetectorGrid)."""
    for name, n in (("n_rows", n_rows), ("n_cols", n_cols)):
        if int(n) != n or not 2 <= n <= 8192:
            raise ValueError(f"{name}={n!r} must be an integer in [2, 8192] pixels")
    _check_positive("pixel_mm", pixel_mm, 10.0)
    _check_positive("distance_mm", distance_mm, 1e5)
    for name, v in (("beam_row_px", beam_row_px), ("beam_col_px", beam_col_px)):
        if not math.isfinite(v):
            raise ValueError(f"{name}={v!r} must be a finite pixel coordinate")
    return DetectorGrid(int(n_rows), int(n_cols), float(pixel_mm), float(distance_mm),
                        float(beam_row_px), float(beam_col_px))


@dataclass(frozen=True)
class Geometry:
    """Per-pixel angles (rad) and q = k_f - k_i (nm^-1), arrays of shape (n_z, n_y) in xp.

    valid is False below the horizon (alpha_f <= 0) and outside the Ewald sphere.
    """

    k_nm: float
    alpha_i_rad: float
    alpha_f_rad: object
    two_theta_f_rad: object
    qx_nm: object
    qy_nm: object
    qz_nm: object
    valid: object


def _check_alpha_i(alpha_i_deg) -> float:
    try:
        a = float(alpha_i_deg)
    except (TypeError, ValueError):
        raise ValueError(f"alpha_i_deg={alpha_i_deg!r} must be a number in (0, 10] degrees") from None
    if not (0 < a <= 10):
        raise ValueError(f"alpha_i_deg={alpha_i_deg!r} must lie in (0, 10] degrees (grazing incidence)")
    return a


def scattering_geometry(grid, alpha_i_deg: float, energy_kev: float = ENERGY_10KEV, xp=None) -> Geometry:
    """Angles and q for every pixel of a QGrid (uniform q_y, q_z), a DetectorGrid or an AngleGrid.

    For a QGrid the exit angles follow from the q's: sin a_f = q_z/k - sin a_i,
    sin 2t_f = q_y/(k cos a_f), and q_x = k (cos a_f cos 2t_f - cos a_i) (Ewald sphere).
    For a DetectorGrid: 2t_f = atan(x/D), a_f = atan(y / sqrt(D^2 + x^2)) - a_i.
    """
    xp = array_module() if xp is None else xp
    a_i = math.radians(_check_alpha_i(alpha_i_deg))
    k = wavenumber_nm(energy_kev)
    if isinstance(grid, QGrid):
        qy = np.asarray(grid.qy_nm, dtype=np.float64)[None, :]
        qz = np.asarray(grid.qz_nm, dtype=np.float64)[:, None]
        sin_af = qz / k - math.sin(a_i)
        valid = (sin_af > 0) & (sin_af < 1)
        a_f = np.arcsin(np.clip(sin_af, -1, 1))
        sin_tt = qy / (k * np.cos(a_f))
        valid = valid & (np.abs(sin_tt) <= 1)
        tt = np.arcsin(np.clip(sin_tt, -1, 1))
    elif isinstance(grid, DetectorGrid):
        x = (np.arange(grid.n_cols) - grid.beam_col_px)[None, :] * grid.pixel_mm
        y = (np.arange(grid.n_rows) - grid.beam_row_px)[:, None] * grid.pixel_mm
        d = grid.distance_mm
        tt = np.broadcast_to(np.arctan(x / d), (grid.n_rows, grid.n_cols))
        a_f = np.arctan(y / np.sqrt(d * d + x * x)) - a_i
        valid = a_f > 0
    elif isinstance(grid, AngleGrid):
        tt = np.radians(grid.two_theta_f_deg)[None, :]
        a_f = np.radians(grid.alpha_f_deg)[:, None]
        valid = a_f > 0
    else:
        raise ValueError(f"grid={type(grid).__name__} must be a QGrid (q_grid), DetectorGrid (detector_grid) "
                         "or AngleGrid (angle_grid)")
    a_f, tt = np.broadcast_arrays(a_f, tt)
    valid = np.broadcast_to(valid, a_f.shape)
    qx = k * (np.cos(a_f) * np.cos(tt) - math.cos(a_i))
    qyv = k * np.cos(a_f) * np.sin(tt)
    qzv = k * (np.sin(a_f) + math.sin(a_i))
    put = lambda v: xp.asarray(np.ascontiguousarray(v))  # noqa: E731
    return Geometry(k, a_i, put(a_f), put(tt), put(qx), put(qyv), put(qzv), put(valid))


# --- the lattice sum, batched over orientations ----------------------------------------------------


def structure_factor(q_nm, class_name: str, lattice_nm: float, reps, phi_deg=0.0):
    """S(q) = sum over the finite lattice of exp(i q.r) by the Laue product (complex).

    q_nm: array (..., 3) in the lab frame (any xp). phi_deg: scalar or 1D array of azimuthal
    rotations of the lattice about z (adds a leading axis when an array). complex128.
    """
    xp = get_array_module(q_nm)
    q = xp.asarray(q_nm, dtype=xp.float64)
    cell, basis = cell_vectors_nm(class_name, lattice_nm)
    reps = _check_reps(reps)
    phis = np.atleast_1d(np.asarray(phi_deg, dtype=np.float64))
    out = []
    for phi in phis:
        c, s = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
        a = xp.asarray(cell @ rot.T)  # rows: rotated a_j
        x = q @ a.T  # (..., 3): x_j = q.a_j
        sval = geometric_sum(x[..., 0], reps[0]) * geometric_sum(x[..., 1], reps[1]) * geometric_sum(x[..., 2], reps[2])
        bsum = xp.sum(xp.exp(1j * (x @ xp.asarray(basis.T))), axis=-1)
        out.append(sval * bsum)
    return out[0] if np.ndim(phi_deg) == 0 else xp.stack(out)


def _orientation_chunk(qpar, qz_terms, pref_re, pref_im, cell, basis_frac, reps, phis_rad, xp, rdtype):
    """sum_phi |sum_t pref_t S(Q_par, Qz_t; phi)|^2 for a chunk of orientations.

    qpar (2, P), qz_terms (T, P), pref_re/pref_im (T, P) real arrays in xp; phis_rad (M,) on the host.
    All arithmetic is real (cos/sin instead of complex exp): several times faster on CPUs.
    """
    m = phis_rad.size
    c, s = np.cos(phis_rad), np.sin(phis_rad)
    # rotated in-plane cell components, (M*3, 2): a_par(phi) = Rz(phi) a_par
    ax, ay = cell[:, 0], cell[:, 1]
    rx = c[:, None] * ax[None, :] - s[:, None] * ay[None, :]
    ry = s[:, None] * ax[None, :] + c[:, None] * ay[None, :]
    rot = xp.asarray(np.stack([rx, ry], axis=-1).reshape(m * 3, 2), dtype=rdtype)
    p = xp.reshape(rot @ qpar, (m, 3, 1, -1))  # (M, 3, 1, P): Q_par . a_j(phi)
    x = [p[:, j, ...] + float(cell[j, 2]) * qz_terms[None, ...] if cell[j, 2] != 0 else p[:, j, ...]
         for j in range(3)]
    amp = None
    phase = None
    for j in range(3):
        n = reps[j]
        if n == 1:
            continue
        y = _reduce_2pi(x[j], xp)
        d = _dirichlet_reduced(y, n, xp)
        y *= 0.5 * (n - 1)  # a Python float multiplies in rdtype
        amp = d if amp is None else amp * d
        phase = y if phase is None else phase + y
    # basis: sum_b exp(i (phase + f_b . x)); f_b . x uses the unreduced x (f_b fractional)
    b_re = b_im = None
    for f in basis_frac:
        arg = phase
        for j in range(3):
            if f[j] != 0:
                term = float(f[j]) * x[j]
                arg = term if arg is None else arg + term
        if arg is None:  # the origin of a one-cell lattice (arrays: cupy cannot broadcast a numpy scalar)
            cr, ci = xp.ones((), dtype=rdtype), xp.zeros((), dtype=rdtype)
        else:
            arg = xp.broadcast_to(arg, (m,) + qz_terms.shape)
            cr, ci = xp.cos(arg), xp.sin(arg)
        b_re = cr if b_re is None else b_re + cr
        b_im = ci if b_im is None else b_im + ci
    if amp is not None:
        b_re = b_re * amp
        b_im = b_im * amp
    b_re = xp.broadcast_to(b_re, (m,) + qz_terms.shape)
    b_im = xp.broadcast_to(b_im, (m,) + qz_terms.shape)
    # A = sum_t pref_t S_t (complex product written out), then |A|^2 summed over orientations
    a_re = xp.sum(b_re * pref_re - b_im * pref_im, axis=1)
    a_im = xp.sum(b_re * pref_im + b_im * pref_re, axis=1)
    return xp.sum(a_re * a_re + a_im * a_im, axis=0, dtype=xp.float64)


def _angles_deg(class_name, n_orient, rng, angles_deg):
    if angles_deg is not None:
        a = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
        if a.ndim != 1 or a.size < 1 or not np.all(np.isfinite(a)):
            raise ValueError(f"angles_deg must be a 1D array of finite angles in degrees, got {angles_deg!r}")
        return a
    if int(n_orient) != n_orient or not 1 <= n_orient <= 100_000:
        raise ValueError(f"n_orient={n_orient!r} must be an integer in [1, 100000]")
    width = symmetry_range_deg(class_name)
    if rng is None:
        return width * np.arange(int(n_orient)) / n_orient
    return rng.uniform(0.0, width, int(n_orient))


def simulate(class_name: str, lattice_nm: float, radius_nm: float, reps, alpha_i_deg: float, grid,
             n_orient: int = 60, *, rng=None, angles_deg=None, dwba: bool = True, substrate="Si",
             energy_kev: float = ENERGY_10KEV, xp=None, chunk_elements: int = 2_000_000,
             precision: str = "single"):
    """GISAXS image (float32, shape grid.shape, intensity in nm^6) of one finite mesocrystal.

    class_name: one of CLASS_NAMES. lattice_nm: cube edge a (cubic) or in-plane nearest-neighbour
    distance d (HCP). radius_nm: sphere radius (spheres may not overlap). reps: cells per lattice
    vector, an int or (N1, N2, N3). alpha_i_deg: incidence angle. grid: QGrid or DetectorGrid.
    Orientations: angles_deg if given, else n_orient angles drawn uniformly in the class's
    symmetry range from rng (a numpy Generator), else n_orient evenly spaced ones.
    dwba=False gives the Born image ``|F|^2 |S|^2`` (no substrate); dwba=True the four-term DWBA with
    the substrate (a name in SUBSTRATES_10KEV or a (delta, beta) pair at energy_kev).
    precision="single" (float32/complex64 lattice sums) or "double".
    """
    _check_class(class_name)
    lattice_nm = _check_positive("lattice_nm", lattice_nm, 1e5)
    radius_nm = _check_positive("radius_nm", radius_nm, 1e4)
    reps = _check_reps(reps)
    nn = nearest_neighbour_nm(class_name, lattice_nm)
    if radius_nm > nn / 2 * (1 + 1e-9):
        raise ValueError(f"radius_nm={radius_nm!r} must lie in (0, {nn / 2:g}] for {class_name} with "
                         f"lattice_nm={lattice_nm:g} (touching spheres at nearest-neighbour distance {nn:g} nm)")
    if precision not in ("single", "double"):
        raise ValueError(f"precision={precision!r} must be 'single' or 'double'")
    if int(chunk_elements) != chunk_elements or chunk_elements < 1:
        raise ValueError(f"chunk_elements={chunk_elements!r} must be a positive integer")
    delta, beta = _substrate(substrate)
    phis = np.radians(_angles_deg(class_name, n_orient, rng, angles_deg))
    xp = array_module() if xp is None else xp
    geo = scattering_geometry(grid, alpha_i_deg, energy_kev, xp)
    rdtype = xp.float32 if precision == "single" else xp.float64

    valid = xp.reshape(geo.valid, (-1,))
    k = geo.k_nm
    # Q = k_i - k_f = -q; zero the invalid pixels so that nothing there is NaN
    qx = xp.where(valid, -xp.reshape(geo.qx_nm, (-1,)), 0.0)
    qy = xp.where(valid, -xp.reshape(geo.qy_nm, (-1,)), 0.0)
    s_i = math.sin(geo.alpha_i_rad)
    alpha_f = xp.reshape(geo.alpha_f_rad, (-1,))
    s_f = xp.where(valid, xp.sin(alpha_f), 0.0)
    if dwba:
        qz_terms = xp.stack([-k * (s_i + s_f), k * (s_i - s_f), k * (s_f - s_i), k * (s_i + s_f)])
        r_i = complex(reflection_coefficient(np.float64(geo.alpha_i_rad), delta, beta))
        r_f = xp.where(valid, reflection_coefficient(alpha_f, delta, beta), 0.0)
        coef = xp.stack([xp.ones_like(r_f), r_i * xp.ones_like(r_f), r_f, r_i * r_f])
    else:
        qz_terms = (-k * (s_i + s_f))[None, :]
        coef = xp.ones((1, qx.size), dtype=xp.complex128)
    qmag = xp.sqrt(qx[None, :] ** 2 + qy[None, :] ** 2 + qz_terms**2)
    # orientation-independent part: coefficient, sphere form factor and the centre height z = R
    pref = coef * sphere_form_factor(qmag, radius_nm) * xp.exp(1j * qz_terms * radius_nm)
    pref_re, pref_im = _backend.astype(xp.real(pref), rdtype), _backend.astype(xp.imag(pref), rdtype)
    qpar = _backend.astype(xp.stack([qx, qy]), rdtype)
    qz_terms = _backend.astype(qz_terms, rdtype)
    cell, basis = cell_vectors_nm(class_name, lattice_nm)

    n_terms, n_pix = qz_terms.shape
    per_orient = 3 * n_terms * n_pix
    step = max(1, int(chunk_elements) // per_orient)
    total = xp.zeros(n_pix, dtype=xp.float64)
    for start in range(0, phis.size, step):
        total += _orientation_chunk(qpar, qz_terms, pref_re, pref_im, cell, basis, reps,
                                    phis[start:start + step], xp, rdtype)
    image = xp.where(valid, total / phis.size, 0.0)
    return _backend.astype(xp.reshape(image, grid.shape), xp.float32)


# --- pixel grids and image scaling ---------------------------------------------------------------

def pixel_grid(image_size: int, qy_range_nm=(0.0, 2.0), qz_range_nm=(0.0, 2.0), supersample: int = 1) -> QGrid:
    """A QGrid at the pixel centres of an image_size^2 image whose pixel edges span the ranges,
    with supersample^2 points per pixel (centres of the sub-pixels), for ``area_average``."""
    n = int(image_size) * int(supersample)
    axes = []
    for lo, hi in (qy_range_nm, qz_range_nm):
        step = (hi - lo) / n
        axes.append(lo + (np.arange(n) + 0.5) * step)
    return QGrid(axes[0], axes[1])


def area_average(image, supersample: int):
    """Mean over supersample x supersample blocks of the last two axes."""
    s = int(supersample)
    if s == 1:
        return image
    h, w = image.shape[-2:]
    if h % s or w % s:
        raise ValueError(f"image shape {image.shape} is not a multiple of supersample={s}")
    return image.reshape(image.shape[:-2] + (h // s, s, w // s, s)).mean(axis=(-3, -1))


def log_normalise(image, decades: float = 6.0):
    """Per-image log scaling to [0, 1]: 1 + log10(I / max I) / decades, clipped below at 0.

    Pixels below the horizon (I = 0) and everything more than ``decades`` below the maximum map to
    0; an all-zero image stays 0. Works on (H, W) or (..., H, W); float32.
    """
    a = np.asarray(image, dtype=np.float64)
    peak = a.max(axis=(-2, -1), keepdims=True)
    safe = np.where(peak > 0, peak, 1.0)
    rel = np.clip(a / safe, 10.0 ** (-decades), None)
    out = np.clip(1 + np.log10(rel) / decades, 0, 1)
    return np.where(peak > 0, out, 0).astype(np.float32)


def reps_cap(class_name: str, lattice_nm: float, dq_nm: float, min_peak_px: float = 2.0) -> tuple[int, int, int]:
    """The largest N_j per lattice vector whose Laue peak FWHM (``~0.886 * 2 pi / (N |a_j|)`` in q)
    spans at least ``min_peak_px`` pixels of size dq_nm; at least 1."""
    cell, _ = cell_vectors_nm(class_name, lattice_nm)
    _check_positive("dq_nm", dq_nm)
    _check_positive("min_peak_px", min_peak_px)
    lengths = np.linalg.norm(cell, axis=1)
    return tuple(max(1, int(0.886 * 2 * math.pi / (min_peak_px * dq_nm * a))) for a in lengths)

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
from ..core import checks
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
    checks.one_of("class_name", class_name, CLASSES)


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


# crystal components of the surface cell of the tilted classes (rows a_1, a_2 in the surface, a_3
# along its normal), in units of the cube edge: [110] -> a[001], a[1-10], a[110];
# FCC[111] -> the hexagonal setting a/2 [1-10], a/2 [01-1], a [111] (3 close-packed layers)
_SURFACE_CELL = {
    "110": np.array([[0.0, 0.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]),
    "111": np.array([[0.5, -0.5, 0.0], [0.0, 0.5, -0.5], [1.0, 1.0, 1.0]]),
}


def _surface_basis(kind: str, orient: str) -> np.ndarray:
    """Fractions (n_b, 3) of the lattice points in the surface cell of (kind, orient)."""
    conv = _BASIS[kind]
    if kind == "HCP" or orient == "100":
        return conv.copy()
    cell = _SURFACE_CELL[orient]
    n = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    frac = ((n[:, None, :] + conv[None]).reshape(-1, 3) @ np.linalg.inv(cell))
    frac = np.round(np.round(frac, 9) % 1.0, 9) % 1.0
    basis = np.unique(frac, axis=0)
    assert len(basis) == round(abs(np.linalg.det(cell)) * len(conv)), (kind, orient)
    return basis


def cell_vectors_nm(class_name: str, lattice_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """The surface cell of a class: rows a_1, a_2 in the film plane and a_3 along the film normal
    z (lab frame, nm), and the basis fractions (n_b, 3); positions are (n + f_b) . a.

    lattice_nm is the cube edge a (cubic classes) or the in-plane nearest-neighbour distance d
    (HCP). [100]: the conventional cube. [110]: a_1 = a[001], a_2 = a[1-10], a_3 = a[110]
    (SC: 2, BCC: 4 points per cell). FCC[111]: the hexagonal setting a_1 = (d, 0, 0),
    a_2 = (-d/2, d sqrt3/2, 0), a_3 = (0, 0, 3h), d = a/sqrt2, h = a/sqrt3, three close-packed
    layers ABC. HCP[0001]: the same a_1, a_2 with a_3 = (0, 0, c), c = sqrt(8/3) d, basis
    {0, (2/3, 1/3, 1/2)} (true ABAB stacking). So every crystallite is a stack of layers parallel
    to the substrate, and FCC[111] and HCP share their in-plane lattice and outline.
    """
    _check_class(class_name)
    lattice_nm = checks.positive("lattice_nm", lattice_nm)
    kind, orient, _ = CLASSES[class_name]
    if kind == "HCP":
        d = lattice_nm
        cell = np.array([[d, 0.0, 0.0], [-d / 2, d * _S3 / 2, 0.0], [0.0, 0.0, HCP_C_OVER_A * d]])
    elif orient == "100":
        cell = lattice_nm * np.eye(3)
    else:
        # lab components of a crystal vector v are O @ v: the rows of (cell_crystal @ O^T)
        cell = lattice_nm * _SURFACE_CELL[orient] @ _ORIENT[orient].T
        cell[np.abs(cell) < 1e-12 * lattice_nm] = 0.0
    return cell, _surface_basis(kind, orient)


#: Outer shapes of a crystallite (all prisms standing on the substrate, N3 cells high):
#: "box" -- N1 x N2 cells along a_1, a_2; ("hexagon", R_nm) -- the cells whose origin lies in a
#: regular hexagon of circumradius R_nm (a corner along a_1) centred on the crystallite.
OUTLINES = ("box", "hexagon")


def _check_outline(outline):
    if isinstance(outline, str) and outline == "box":
        return "box", None
    try:
        kind, radius = outline
        ok = kind == "hexagon"
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"outline={outline!r} must be 'box' or ('hexagon', circumradius_nm)")
    return "hexagon", checks.positive("outline circumradius_nm", radius, 1e5)


def outline_rows(cell, reps, outline="box") -> list[tuple[int, int, int]]:
    """The in-plane cells of a crystallite as rows along a_1: (k, lo, hi) for the cells
    n_1 a_1 + k a_2 with lo <= n_1 <= hi. cell: rows a_1, a_2 (in-plane) of a surface cell."""
    kind, radius = _check_outline(outline)
    n1, n2, _ = _check_reps(reps)
    if kind == "box":
        return [(k, 0, n1 - 1) for k in range(n2)]
    a1, a2 = np.asarray(cell, dtype=np.float64)[0, :2], np.asarray(cell, dtype=np.float64)[1, :2]
    # rotate so that a_1 lies along x: the hexagon has corners at +-R along a_1
    ang = math.atan2(a1[1], a1[0])
    rot = np.array([[math.cos(ang), math.sin(ang)], [-math.sin(ang), math.cos(ang)]])
    a1, a2 = rot @ a1, rot @ a2
    k_max = int(math.ceil(radius / abs(a2[1]))) + 1
    n_max = int(math.ceil((radius + k_max * abs(a2[0])) / abs(a1[0]))) + 1
    n = np.arange(-n_max, n_max + 1)
    tol = 1e-9 * radius
    rows = []
    for k in range(-k_max, k_max + 1):
        x, y = n * a1[0] + k * a2[0], n * a1[1] + k * a2[1]
        inside = (np.abs(y) <= radius * _S3 / 2 + tol) & (_S3 * np.abs(x) + np.abs(y) <= _S3 * radius + tol)
        if inside.any():
            idx = n[inside]
            rows.append((k, int(idx.min()), int(idx.max())))
    return rows  # never empty: the centre cell lies inside any hexagon


def lattice_points_nm(class_name: str, lattice_nm: float, reps, phi_deg: float = 0.0, *,
                      outline="box") -> np.ndarray:
    """Explicit sphere-centre positions (n, 3) in nm of a crystallite, rotated by phi_deg about z.

    For tests, peers and ``simulate_positions`` (small N): ``simulate`` never sums points one by one.
    """
    cell, basis = cell_vectors_nm(class_name, lattice_nm)
    n3 = _check_reps(reps)[2]
    ij = np.array([(i, k) for k, lo, hi in outline_rows(cell, reps, outline) for i in range(lo, hi + 1)])
    n = np.concatenate([np.column_stack([ij, np.full(len(ij), l)]) for l in range(n3)])
    pts = ((n[:, None, :] + basis[None, :, :]).reshape(-1, 3)) @ cell
    c, s = math.cos(math.radians(phi_deg)), math.sin(math.radians(phi_deg))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return pts @ rot.T


def n_spheres(class_name: str, reps, outline="box", lattice_nm: float = 1.0) -> int:
    """The number of spheres in a crystallite (lattice_nm matters for a hexagon outline only)."""
    cell, basis = cell_vectors_nm(class_name, lattice_nm)
    n3 = _check_reps(reps)[2]
    return sum(hi - lo + 1 for _, lo, hi in outline_rows(cell, reps, outline)) * n3 * len(basis)


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


def dirichlet_squared(x, n: int):
    """D_N(x)^2 = sin^2(N x/2) / sin^2(x/2) (2 pi periodic, no reduction needed), N^2 at x = 2 pi m.

    The lattice factor of a box outline: fewer passes over the data than ``dirichlet``, since the
    sign does not matter. Near x = 2 pi m it uses N^2 (1 - (N^2 - 1) s^2 / 3), s = sin(x/2).
    """
    xp = get_array_module(x)
    s = xp.sin(0.5 * x)
    t = xp.sin((0.5 * n) * x)
    small = xp.abs(s) < 1e-3 / max(n, 1)
    ratio = t / (s + _backend.astype(small, s.dtype))  # +1 where s is tiny: never 0/0
    d2 = ratio * ratio
    if _backend.is_ndarray_module(xp):  # numpy/cupy: patch the few pixels on a lattice plane
        s_small = s[small]
        d2[small] = (n * n) * (1 - ((n * n - 1) / 3) * (s_small * s_small))
        return d2
    return xp.where(small, (n * n) * (1 - ((n * n - 1) / 3) * (s * s)), d2)


def geometric_sum(x, n: int):
    """G_N(x) = sum_{m=0}^{N-1} exp(i m x) = exp(i (N-1) x / 2) D_N(x) (complex)."""
    xp = get_array_module(x)
    y = _reduce_2pi(xp.asarray(x), xp)
    return xp.exp(1j * (0.5 * (n - 1)) * y) * _dirichlet_reduced(y, n, xp)


def sphere_form_factor(q_nm, radius_nm: float):
    """F(q) = 4 pi R^3 (sin qR - qR cos qR)/(qR)^3 in nm^3 (= V at q = 0), float64.

    A Taylor series is used for qR < 0.1, where the difference cancels.
    """
    radius_nm = checks.positive("radius_nm", radius_nm)
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
        return 2 * math.pi / checks.positive("wavelength_nm", wavelength_nm, 100.0)
    energy_kev = ENERGY_10KEV if energy_kev is None else energy_kev
    return 2 * math.pi * checks.positive("energy_kev", energy_kev, 1000.0) / HC_KEV_NM


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
    checks.positive("pixel_mm", pixel_mm, 10.0)
    checks.positive("distance_mm", distance_mm, 1e5)
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


def _inplane_chunk(qpar, w_re, w_im, cell, groups, rows, phis_rad, xp, rdtype):
    """sum over a chunk of orientations of |S_par|^2 |sum_g B_g W_g|^2 (see ``simulate``).

    qpar (2, P) and w_re/w_im (G, P) real arrays in xp; groups: per layer height, the in-plane
    basis fractions (n, 2); rows: the outline as (k, lo, hi) rows along a_1, or None for a box
    (then the tuple (N1, N2)). phis_rad (M,) on the host. All arithmetic is real.
    """
    m = phis_rad.size
    c, s = np.cos(phis_rad), np.sin(phis_rad)
    ax, ay = cell[:2, 0], cell[:2, 1]
    rx = c[:, None] * ax[None, :] - s[:, None] * ay[None, :]
    ry = s[:, None] * ax[None, :] + c[:, None] * ay[None, :]
    rot = xp.asarray(np.stack([rx, ry], axis=-1).reshape(m * 2, 2), dtype=rdtype)
    x = xp.reshape(rot @ qpar, (m, 2, -1))  # Q_par . a_j(phi)
    x1, x2 = x[:, 0, :], x[:, 1, :]
    # |S_par|^2 of the outline: the same for every layer and basis point
    if isinstance(rows, tuple):
        ps = None
        for xj, nj in ((x1, rows[0]), (x2, rows[1])):
            if nj > 1:
                d2 = dirichlet_squared(xj, nj)
                ps = d2 if ps is None else ps * d2
    else:
        s_re = s_im = None
        for k, lo, hi in rows:  # a row: exp(i (k x2 + (lo+hi)/2 x1)) D_L(x1), L = hi - lo + 1
            d = dirichlet(x1, hi - lo + 1) if hi > lo else None
            arg = float(k) * x2 + (0.5 * (lo + hi)) * x1
            cr, ci = xp.cos(arg), xp.sin(arg)
            if d is not None:
                cr, ci = cr * d, ci * d
            s_re = cr if s_re is None else s_re + cr
            s_im = ci if s_im is None else s_im + ci
        ps = s_re * s_re + s_im * s_im
    # A' = sum_g W_g sum_{b in g} exp(i f_b . x)
    a_re = a_im = None
    for g, fracs in enumerate(groups):
        b_re = b_im = None
        for f1, f2 in fracs:
            if f1 == 0 and f2 == 0:
                cr, ci = xp.ones((), dtype=rdtype), xp.zeros((), dtype=rdtype)
            else:
                arg = float(f1) * x1 + float(f2) * x2
                cr, ci = xp.cos(arg), xp.sin(arg)
            b_re = cr if b_re is None else b_re + cr
            b_im = ci if b_im is None else b_im + ci
        t_re = b_re * w_re[g, ...] - b_im * w_im[g, ...]
        t_im = b_re * w_im[g, ...] + b_im * w_re[g, ...]
        a_re = t_re if a_re is None else a_re + t_re
        a_im = t_im if a_im is None else a_im + t_im
    v = xp.broadcast_to(a_re * a_re + a_im * a_im, x1.shape)
    return xp.sum(v if ps is None else ps * v, axis=0, dtype=xp.float64)


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


def _pixel_terms(grid, alpha_i_deg, energy_kev, dwba, delta, beta, xp):
    """Per pixel: the validity mask, Q_par = (Q_x, Q_y) of Q = k_i - k_f, and the DWBA terms'
    vertical components Qz_t (T, P) and coefficients (1, r_i, r_f, r_i r_f) (T, P)."""
    geo = scattering_geometry(grid, alpha_i_deg, energy_kev, xp)
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
    return valid, qx, qy, qz_terms, coef


def _check_sim_args(precision, chunk_elements):
    if precision not in ("single", "double"):
        raise ValueError(f"precision={precision!r} must be 'single' or 'double'")
    if int(chunk_elements) != chunk_elements or chunk_elements < 1:
        raise ValueError(f"chunk_elements={chunk_elements!r} must be a positive integer")


def simulate(class_name: str, lattice_nm: float, radius_nm: float, reps, alpha_i_deg: float, grid,
             n_orient: int = 60, *, rng=None, angles_deg=None, dwba: bool = True, substrate="Si",
             energy_kev: float = ENERGY_10KEV, xp=None, chunk_elements: int = 32_768,
             precision: str = "single", outline="box"):
    """GISAXS image (float32, shape grid.shape, intensity in nm^6) of one finite mesocrystal.

    class_name: one of CLASS_NAMES. lattice_nm: cube edge a (cubic) or in-plane nearest-neighbour
    distance d (HCP). radius_nm: sphere radius (spheres may not overlap). reps: cells per surface
    cell vector (``cell_vectors_nm``), an int or (N1, N2, N3); N3 counts cells along the normal.
    outline: "box" (N1 x N2 cells in the plane) or ("hexagon", R_nm) (a hexagonal prism; N1, N2
    unused). alpha_i_deg: incidence angle. grid: QGrid, DetectorGrid or AngleGrid.
    Orientations: angles_deg if given, else n_orient angles drawn uniformly in the class's
    symmetry range from rng (a numpy Generator), else n_orient evenly spaced ones.
    dwba=False gives the Born image ``|F|^2 |S|^2`` (no substrate); dwba=True the four-term DWBA with
    the substrate (a name in SUBSTRATES_10KEV or a (delta, beta) pair at energy_kev).
    precision="single" (float32 sums over orientations) or "double". chunk_elements: orientations
    are processed a few at a time, chunk_elements // n_pixels per pass; small chunks keep the
    working arrays in the CPU cache (``make bench`` measures the effect).

    The surface cell has a_3 along z, so the crystallite is a stack of identical in-plane
    outlines and the amplitude factorises (``Q_par`` rotates with the grain, ``Q_z`` does not)::

        A = S_par(Q_par) * sum_g B_g(Q_par) W_g,   W_g = sum_t c_t F_t e^{i Qz_t (R + z_g)} G_N3(Qz_t a_3)

    with S_par the sum over the outline's cells, B_g the in-plane phases of the basis points at
    height z_g, and c_t F_t the DWBA coefficient and sphere form factor of term t. W_g is computed
    once per image; per orientation only the in-plane sums remain.
    """
    _check_class(class_name)
    lattice_nm = checks.positive("lattice_nm", lattice_nm, 1e5)
    radius_nm = checks.positive("radius_nm", radius_nm, 1e4)
    reps = _check_reps(reps)
    nn = nearest_neighbour_nm(class_name, lattice_nm)
    if radius_nm > nn / 2 * (1 + 1e-9):
        raise ValueError(f"radius_nm={radius_nm!r} must lie in (0, {nn / 2:g}] for {class_name} with "
                         f"lattice_nm={lattice_nm:g} (touching spheres at nearest-neighbour distance {nn:g} nm)")
    _check_sim_args(precision, chunk_elements)
    delta, beta = _substrate(substrate)
    phis = np.radians(_angles_deg(class_name, n_orient, rng, angles_deg))
    cell, basis = cell_vectors_nm(class_name, lattice_nm)
    kind, _ = _check_outline(outline)
    rows = (reps[0], reps[1]) if kind == "box" else outline_rows(cell, reps, outline)
    xp = array_module() if xp is None else xp
    rdtype = xp.float32 if precision == "single" else xp.float64
    valid, qx, qy, qz_terms, coef = _pixel_terms(grid, alpha_i_deg, energy_kev, dwba, delta, beta, xp)
    # orientation-independent part: sphere form factor, centre height z = R and the vertical
    # lattice sum, h_t = F(|Q_t|) e^{i Qz_t R} G_N3(Qz_t a_3), for each basis height z_g times
    # e^{i Qz_t z_g}; with the DWBA, terms 3 and 2 have the Qz of terms 0 and 1 negated, so their
    # h is the complex conjugate (F depends on |Q| only) and only two terms are computed
    uniq = qz_terms[:2, ...] if dwba else qz_terms
    qmag = xp.sqrt(qx[None, :] ** 2 + qy[None, :] ** 2 + uniq**2)
    x3 = uniq * float(cell[2, 2])
    y3 = _reduce_2pi(x3, xp)
    base = (sphere_form_factor(qmag, radius_nm) * _dirichlet_reduced(y3, reps[2], xp)
            * xp.exp(1j * (uniq * radius_nm + (0.5 * (reps[2] - 1)) * y3)))
    heights = np.unique(np.round(basis[:, 2], 9))
    groups = [basis[np.abs(basis[:, 2] - z) < 1e-9][:, :2] for z in heights]
    w = []
    for z in heights:
        h = base * xp.exp(1j * float(z) * x3) if z else base
        if dwba:
            w.append(coef[0, ...] * h[0, ...] + coef[1, ...] * h[1, ...]
                     + coef[2, ...] * xp.conj(h[1, ...]) + coef[3, ...] * xp.conj(h[0, ...]))
        else:
            w.append(coef[0, ...] * h[0, ...])
    w = xp.stack(w)
    w_re, w_im = _backend.astype(xp.real(w), rdtype), _backend.astype(xp.imag(w), rdtype)
    qpar = _backend.astype(xp.stack([qx, qy]), rdtype)

    n_pix = qx.size
    step = max(1, int(chunk_elements) // n_pix)
    total = xp.zeros(n_pix, dtype=xp.float64)
    for start in range(0, phis.size, step):
        total += _inplane_chunk(qpar, w_re, w_im, cell, groups, rows, phis[start:start + step], xp, rdtype)
    image = xp.where(valid, total / phis.size, 0.0)
    return _backend.astype(xp.reshape(image, grid.shape), xp.float32)


def simulate_positions(positions_nm, radius_nm: float, alpha_i_deg: float, grid, angles_deg, *,
                       dwba: bool = True, substrate="Si", energy_kev: float = ENERGY_10KEV, xp=None):
    """GISAXS image (float32, nm^6) of spheres at explicit positions (n, 3) in nm (centre heights
    above the sphere's own radius: z = 0 is a sphere resting on the substrate), averaged over the
    azimuthal rotations angles_deg (degrees) about z. Any arrangement (a crystallite of any shape,
    a cluster, a defect); the cost grows with the number of spheres, so keep it to a few thousand.
    """
    pts = np.asarray(positions_nm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 1 or not np.all(np.isfinite(pts)):
        raise ValueError(f"positions_nm must be a finite (n, 3) array in nm; got shape {pts.shape}")
    radius_nm = checks.positive("radius_nm", radius_nm, 1e4)
    angles = _angles_deg("SC[100]", 1, None, angles_deg)
    delta, beta = _substrate(substrate)
    xp = array_module() if xp is None else xp
    valid, qx, qy, qz_terms, coef = _pixel_terms(grid, alpha_i_deg, energy_kev, dwba, delta, beta, xp)
    qmag = xp.sqrt(qx[None, :] ** 2 + qy[None, :] ** 2 + qz_terms**2)
    pref = coef * sphere_form_factor(qmag, radius_nm) * xp.exp(1j * qz_terms * radius_nm)
    total = xp.zeros(qx.size, dtype=xp.float64)
    for phi in np.radians(angles):
        c, s = math.cos(phi), math.sin(phi)
        px = xp.asarray(c * pts[:, 0] - s * pts[:, 1])
        py = xp.asarray(s * pts[:, 0] + c * pts[:, 1])
        pz = xp.asarray(pts[:, 2])
        inplane = xp.exp(1j * (qx[:, None] * px[None, :] + qy[:, None] * py[None, :]))  # (P, n)
        amp = 0
        for t in range(qz_terms.shape[0]):
            amp = amp + pref[t] * xp.sum(inplane * xp.exp(1j * qz_terms[t][:, None] * pz[None, :]), axis=1)
        total += xp.real(amp * xp.conj(amp))
    image = xp.where(valid, total / angles.size, 0.0)
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
    checks.positive("dq_nm", dq_nm)
    checks.positive("min_peak_px", min_peak_px)
    lengths = np.linalg.norm(cell, axis=1)
    return tuple(max(1, int(0.886 * 2 * math.pi / (min_peak_px * dq_nm * a))) for a in lengths)

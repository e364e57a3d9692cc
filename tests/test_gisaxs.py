"""Known-answer tests of the GISAXS kernel (book chapter "Physics and conventions", GISAXS section)."""

import math

import numpy as np
import pytest

from sashelpers.physics import gisaxs as g

K = g.K_10KEV_NM


def explicit_dwba(points_nm, radius_nm, geo, substrate):
    """Reference DWBA by an explicit sum over sphere centres (r_j + R z), one orientation."""
    delta, beta = substrate
    valid = geo.valid.ravel()
    qx, qy = -geo.qx_nm.ravel()[valid], -geo.qy_nm.ravel()[valid]
    s_i, s_f = math.sin(geo.alpha_i_rad), np.sin(geo.alpha_f_rad.ravel()[valid])
    r_i = g.reflection_coefficient(geo.alpha_i_rad, delta, beta)
    r_f = g.reflection_coefficient(geo.alpha_f_rad.ravel()[valid], delta, beta)
    terms = [(1.0, -K * (s_i + s_f)), (r_i, K * (s_i - s_f)), (r_f, K * (s_f - s_i)), (r_i * r_f, K * (s_i + s_f))]
    pos = points_nm + np.array([0, 0, radius_nm])
    amp = 0
    for c, qz in terms:
        q = np.stack([qx, qy, qz], -1)
        s = np.exp(1j * q @ pos.T).sum(-1)
        amp = amp + c * g.sphere_form_factor(np.linalg.norm(q, axis=-1), radius_nm) * s
    out = np.zeros(valid.size)
    out[valid] = np.abs(amp) ** 2
    return out.reshape(geo.valid.shape)


def test_constants():
    assert K == pytest.approx(50.677, abs=1e-3)
    assert g.WAVELENGTH_10KEV_NM == pytest.approx(0.123984, abs=1e-6)
    assert g.critical_angle_deg(g.SI_DELTA_10KEV) == pytest.approx(0.1792, abs=1e-4)
    assert g.wavenumber_nm(wavelength_nm=0.1) == pytest.approx(2 * math.pi / 0.1)


def test_fresnel_si_known_value():
    r = g.reflection_coefficient(math.radians(0.15))
    assert r.real == pytest.approx(0.3924, abs=1e-3)
    assert r.imag == pytest.approx(-0.8950, abs=1e-3)


def test_yoneda_peak():
    a = np.linspace(0.1, 0.3, 20001)
    t = np.abs(1 + g.reflection_coefficient(np.radians(a))) ** 2
    assert a[t.argmax()] == pytest.approx(0.176, abs=0.002)
    assert t.max() == pytest.approx(3.57, abs=0.01)
    assert g.reflection_coefficient(0.0, 0.0, 0.0) == 0  # n = 1: no reflection


def test_sphere_form_factor():
    R = 3.0
    assert g.sphere_form_factor(np.array([0.0]), R)[0] == pytest.approx(4 / 3 * math.pi * R**3)
    q = np.array([g.SPHERE_FIRST_ZERO_QR / R])
    assert abs(g.sphere_form_factor(q, R)[0]) < 1e-12 * R**3
    # the series and the closed form agree where they meet
    x = np.array([0.0999999, 0.1000001]) / R
    f = g.sphere_form_factor(x, R)
    assert f[0] == pytest.approx(f[1], rel=1e-6)


def test_dirichlet_squared():
    x = np.concatenate([np.linspace(-40, 40, 2001), 2 * np.pi * np.arange(-5, 6) + 1e-7, [0.0]])
    for n in (1, 2, 5, 12):
        assert np.allclose(g.dirichlet_squared(x, n), g.dirichlet(x, n) ** 2, rtol=1e-9, atol=1e-9 * n * n)
    x32 = np.linspace(-60, 60, 100_001).astype(np.float32)
    assert g.dirichlet_squared(x32, 9).dtype == np.float32
    assert np.allclose(g.dirichlet_squared(x32, 9), g.dirichlet(x32.astype(float), 9) ** 2, rtol=2e-3, atol=2e-3 * 81)


def test_dirichlet_limits_and_stability():
    for n in (1, 2, 5, 6):
        for m in (-2, -1, 0, 1, 3):
            x = 2 * math.pi * m
            want = (-1) ** (m * (n - 1)) * n
            assert g.dirichlet(np.array([x]), n)[0] == pytest.approx(want)
            assert g.dirichlet(np.array([x + 1e-9]), n)[0] == pytest.approx(want, rel=1e-6)
    x = np.linspace(-20, 20, 1001)
    ref = np.array([sum(np.exp(1j * k * xx) for k in range(7)) for xx in x])
    assert np.allclose(g.geometric_sum(x, 7), ref, atol=1e-9)


@pytest.mark.parametrize("cls", g.CLASS_NAMES)
def test_laue_product_equals_point_sum(cls):
    rng = np.random.default_rng(1)
    q = rng.normal(scale=0.4, size=(200, 3))
    a = 14.0 if cls.startswith("HCP") else 20.0
    reps = (2, 3, 2)
    pts = g.lattice_points_nm(cls, a, reps, phi_deg=17.0)
    assert len(pts) == g.n_spheres(cls, reps)
    ref = np.exp(1j * q @ pts.T).sum(-1)
    got = g.structure_factor(q, cls, a, reps, phi_deg=17.0)
    assert np.allclose(got, ref, atol=1e-9 * len(pts))


def test_nearest_neighbours():
    for cls in g.CLASS_NAMES:
        pts = g.lattice_points_nm(cls, 10.0, 3)
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
        d[d == 0] = np.inf
        assert d.min() == pytest.approx(g.nearest_neighbour_nm(cls, 10.0))


def test_single_sphere_born_is_form_factor():
    grid = g.q_grid(40, 30, (-2, 2), (0, 3))
    R = 2.5
    img = g.simulate("SC[100]", 10.0, R, 1, 0.2, grid, angles_deg=[0.0], dwba=False, xp=np)
    geo = g.scattering_geometry(grid, 0.2, xp=np)
    q = np.sqrt(geo.qx_nm**2 + geo.qy_nm**2 + geo.qz_nm**2)
    want = np.where(geo.valid, g.sphere_form_factor(q, R) ** 2, 0)
    assert np.allclose(img, want, rtol=1e-5, atol=1e-6 * want.max())
    assert img.dtype == np.float32 and img.shape == (30, 40)


def test_dwba_without_reflection_is_born():
    grid = g.q_grid(32, 32, (-1, 1), (0, 1.5))
    kw = dict(class_name="FCC[111]", lattice_nm=20.0, radius_nm=4.0, reps=(3, 3, 2), alpha_i_deg=0.2,
              grid=grid, angles_deg=[0.0, 31.0], xp=np)
    born = g.simulate(**kw, dwba=False)
    dwba0 = g.simulate(**kw, dwba=True, substrate=(0.0, 0.0))
    assert np.allclose(dwba0, born, rtol=1e-4, atol=1e-6 * born.max())
    dwba = g.simulate(**kw, dwba=True, substrate="Si")
    assert not np.allclose(dwba, born, rtol=0.05)


@pytest.mark.parametrize("cls", g.CLASS_NAMES)
def test_fast_dwba_equals_explicit_sum(cls):
    a = 14.0 if cls.startswith("HCP") else 20.0
    reps, R, phi = (2, 3, 2), 3.0, 23.0
    grid = g.q_grid(24, 20, (-1.5, 1.5), (0, 1.5))
    geo = g.scattering_geometry(grid, 0.15, xp=np)
    pts = g.lattice_points_nm(cls, a, reps, phi_deg=phi)
    ref = explicit_dwba(pts, R, geo, (g.SI_DELTA_10KEV, g.SI_BETA_10KEV))
    for precision, tol in (("double", 1e-6), ("single", 2e-4)):  # float32 output
        img = g.simulate(cls, a, R, reps, 0.15, grid, angles_deg=[phi], precision=precision, xp=np)
        assert np.allclose(img, ref, rtol=tol, atol=tol * ref.max()), precision


@pytest.mark.parametrize("cls", g.CLASS_NAMES)
@pytest.mark.parametrize("outline", ["box", ("hexagon", 41.0)])
def test_layered_kernel_equals_the_sum_over_positions(cls, outline):
    """The factorised kernel (in-plane outline x basis phases x vertical sums) against the plain
    sum over every sphere (``simulate_positions``), several orientations, both outlines."""
    a = 14.0 if cls.startswith("HCP") else 20.0
    grid = g.q_grid(20, 18, (-1.5, 1.5), (0, 1.5))
    angles = [0.0, 13.0, 47.0]
    pts = g.lattice_points_nm(cls, a, (3, 2, 2), outline=outline)
    assert len(pts) == g.n_spheres(cls, (3, 2, 2), outline, a)
    ref = g.simulate_positions(pts, 2.5, 0.15, grid, angles)
    got = g.simulate(cls, a, 2.5, (3, 2, 2), 0.15, grid, angles_deg=angles, precision="double", outline=outline)
    assert np.allclose(got, ref, rtol=1e-6, atol=1e-7 * ref.max())
    assert g.simulate_positions(pts[:-1], 2.5, 0.15, grid, angles).max() != pytest.approx(ref.max(), rel=1e-6)


def test_surface_cells_stack_layers_on_the_substrate():
    for cls in g.CLASS_NAMES:
        cell, basis = g.cell_vectors_nm(cls, 20.0)
        assert cell[0, 2] == cell[1, 2] == 0 and cell[2, 0] == cell[2, 1] == 0 and cell[2, 2] > 0
        per_volume = len(basis) / abs(np.linalg.det(cell))
        kind = g.CLASSES[cls][0]
        if kind != "HCP":
            assert per_volume * 20.0**3 == pytest.approx({"SC": 1, "BCC": 2, "FCC": 4}[kind])
    # FCC[111] and HCP at the same nearest-neighbour distance: the same in-plane lattice, so the
    # same outline (box or hexagon) and the same bottom layer; they differ in the stacking only
    d = 12.0
    for outline in ("box", ("hexagon", 30.0)):
        fcc = g.lattice_points_nm("FCC[111]", d * math.sqrt(2), (3, 3, 1), outline=outline)
        hcp = g.lattice_points_nm("HCP[0001]", d, (3, 3, 1), outline=outline)
        bottom = lambda p: {tuple(np.round(r[:2], 6)) for r in p if abs(r[2]) < 1e-9}  # noqa: E731
        assert bottom(fcc) == bottom(hcp)
        heights = lambda p: sorted({round(float(z), 6) for z in p[:, 2]})  # noqa: E731
        assert heights(fcc) == pytest.approx([0, d * math.sqrt(2 / 3), 2 * d * math.sqrt(2 / 3)])
        assert heights(hcp) == pytest.approx([0, d * math.sqrt(2 / 3)])


def test_outline_rows():
    cell, _ = g.cell_vectors_nm("HCP[0001]", 10.0)
    assert g.outline_rows(cell, (3, 2, 1)) == [(0, 0, 2), (1, 0, 2)]
    rows = g.outline_rows(cell, 1, ("hexagon", 20.0))  # a hexagon of 2 shells: 1 + 6 + 12 cells
    assert sum(hi - lo + 1 for _, lo, hi in rows) == 19
    pts = g.lattice_points_nm("HCP[0001]", 10.0, 1, outline=("hexagon", 20.0))[::2]
    assert np.allclose(pts.mean(axis=0), 0) and np.linalg.norm(pts, axis=1).max() == pytest.approx(20.0)
    for bad in (("hexagon", -1.0), "sphere", ("circle", 3.0)):
        with pytest.raises(ValueError, match="outline"):
            g.outline_rows(cell, 1, bad)
    assert g.outline_rows(cell, 1, ("hexagon", 1e-3)) == [(0, 0, 0)]  # the centre cell only


def test_orientation_average_and_chunking():
    grid = g.q_grid(20, 20, (-1, 1), (0, 1))
    kw = dict(class_name="BCC[110]", lattice_nm=20.0, radius_nm=4.0, reps=4, alpha_i_deg=0.2, grid=grid, xp=np)
    angles = [0.0, 40.0, 100.0]
    one = [g.simulate(**kw, angles_deg=[a]) for a in angles]
    avg = g.simulate(**kw, angles_deg=angles, chunk_elements=1)
    assert np.allclose(avg, np.mean(one, axis=0), rtol=1e-4, atol=1e-6 * avg.max())
    a = g.simulate(**kw, n_orient=5, rng=np.random.default_rng(3))
    b = g.simulate(**kw, n_orient=5, rng=np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_hcp_and_fcc111_differ_along_qz():
    """Same layers and layer spacing; ABAB vs ABC stacking. The (11) rod (2h+k = 0 mod 3)
    is identical, but the (10) rod differs, also at q_z = 0: HCP has its (10.0) peak there
    (|S|^2/N^2 = 1/4), FCC[111] none; FCC peaks at q_z = 2 pi/(3 h), HCP at 2 pi/(2 h).
    So the two are NOT identical in the q_z = 0 plane; they differ in which q_z the peaks sit."""
    d = 10.0
    h = math.sqrt(2 / 3) * d  # layer spacing, both lattices
    b1 = 4 * math.pi / (math.sqrt(3) * d)  # |(10)| of the hexagonal layer
    n = 6

    def norm_s2(cls, q):
        a = d * math.sqrt(2) if cls == "FCC[111]" else d
        s = g.structure_factor(np.asarray(q, dtype=float), cls, a, n)
        return np.abs(s) ** 2 / g.n_spheres(cls, n) ** 2

    # in-plane directions of the (10) and (11) rods: FCC[111] lab x is along [1-10] (a NN bond);
    # HCP a_1 is along x. The (10) reciprocal vectors are perpendicular to a bond.
    q10 = np.array([0.0, b1, 0.0])
    q11 = np.array([math.sqrt(3) * b1, 0.0, 0.0])
    # (11) rod at q_z = 0: every sphere in phase in both
    assert norm_s2("HCP[0001]", q11) == pytest.approx(1.0, rel=1e-6)
    assert norm_s2("FCC[111]", q11) == pytest.approx(1.0, rel=1e-6)
    # (10) rod: HCP peaks at q_z = 0 (1/4) and q_z = pi/h (3/4); FCC at q_z = +-2 pi/(3h) only
    hcp0, fcc0 = norm_s2("HCP[0001]", q10), norm_s2("FCC[111]", q10)
    assert hcp0 == pytest.approx(0.25, rel=1e-6) and fcc0 < 0.01
    qz_f = 2 * math.pi / (3 * h)
    fcc_peak = max(norm_s2("FCC[111]", q10 + [0, 0, s * qz_f]) for s in (1, -1))
    assert fcc_peak == pytest.approx(1.0, rel=1e-6)
    assert norm_s2("HCP[0001]", q10 + [0, 0, qz_f]) < 0.05
    assert norm_s2("HCP[0001]", q10 + [0, 0, math.pi / h]) == pytest.approx(0.75, rel=1e-6)


def test_q_grid_geometry_round_trip():
    grid = g.q_grid(50, 40, (-2, 2), (0, 2))
    geo = g.scattering_geometry(grid, 0.2, xp=np)
    v = geo.valid
    qy = np.broadcast_to(grid.qy_nm[None, :], v.shape)
    qz = np.broadcast_to(grid.qz_nm[:, None], v.shape)
    assert np.allclose(geo.qy_nm[v], qy[v]) and np.allclose(geo.qz_nm[v], qz[v])
    assert np.all(geo.alpha_f_rad[v] > 0) and not v[0].any()  # q_z = 0 is below the horizon
    # |k_f| = k: q + k_i has length k
    kf = np.stack([geo.qx_nm + K * math.cos(geo.alpha_i_rad), geo.qy_nm, geo.qz_nm - K * math.sin(geo.alpha_i_rad)])
    assert np.allclose(np.linalg.norm(kf, axis=0)[v], K)


def test_detector_geometry():
    alpha_i = 0.2
    D, px = 3000.0, 0.172
    row_spec = D * math.tan(math.radians(2 * alpha_i)) / px  # specular spot above the direct beam
    det = g.detector_grid(200, 101, px, D, beam_row_px=10.0, beam_col_px=50.0)
    geo = g.scattering_geometry(det, alpha_i, xp=np)
    row = geo.alpha_f_rad[:, 50]
    horizon = 10 + D * math.tan(math.radians(alpha_i)) / px  # alpha_f = 0 row
    rows = np.arange(200)
    assert np.array_equal(geo.valid[:, 50], rows > horizon)
    i = int(round(10 + row_spec))
    assert math.degrees(row[i]) == pytest.approx(alpha_i, abs=0.01)
    assert geo.qy_nm[i, 50] == 0 and abs(geo.qx_nm[i, 50]) < 1e-4  # ~0 near the specular spot
    assert geo.qz_nm[i, 50] == pytest.approx(2 * K * math.sin(math.radians(alpha_i)), rel=0.01)
    assert np.all(np.diff(geo.qy_nm[i]) > 0)
    img = g.simulate("SC[100]", 20.0, 3.0, 2, alpha_i, det, n_orient=2, xp=np)
    assert img.shape == (200, 101) and np.all(img[rows <= horizon] == 0)
    assert np.all(img[rows > horizon + 1] > 0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(class_name="HEX"), "class_name"),
        (dict(lattice_nm=-1.0), "lattice_nm"),
        (dict(radius_nm=0.0), "radius_nm"),
        (dict(radius_nm=8.0), "radius_nm"),  # overlapping spheres: FCC a=20 has NN 14.1 nm
        (dict(reps=0), "reps"),
        (dict(reps=(2, 2)), "reps"),
        (dict(reps="a"), "reps"),
        (dict(alpha_i_deg=-0.1), "alpha_i_deg"),
        (dict(n_orient=0), "n_orient"),
        (dict(substrate="Cu"), "substrate"),
        (dict(precision="half"), "precision"),
    ],
)
def test_validation(kwargs, word):
    args = dict(class_name="FCC[100]", lattice_nm=20.0, radius_nm=5.0, reps=2, alpha_i_deg=0.2,
                grid=g.q_grid(8, 8), n_orient=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        g.simulate(**args)


def test_grid_validation():
    with pytest.raises(ValueError, match="n_y"):
        g.q_grid(1, 10)
    with pytest.raises(ValueError, match="qz_range_nm"):
        g.q_grid(10, 10, qz_range_nm=(1, 0))
    with pytest.raises(ValueError, match="pixel_mm"):
        g.detector_grid(10, 10, 0.0, 1000, 0, 0)
    with pytest.raises(ValueError, match="grid"):
        g.scattering_geometry("not a grid", 0.2)

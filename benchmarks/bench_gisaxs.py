"""GISAXS kernel throughput: sashelpers.physics.gisaxs.simulate (numpy, cupy) vs BornAgain 25.

Run:  python benchmarks/bench_gisaxs.py
Times are seconds per image (best of a few repeats, after one warm-up); images/s is printed too.
BornAgain (optional: pip install --no-deps bornagain==25.0.0) simulates one orientation per
run; an orientation-averaged image costs n_orient runs, which is how its time is counted.
Where a BornAgain run would take minutes, it is timed for fewer orientations and scaled
(marked "scaled" in the peer column).
"""

from __future__ import annotations

import math
import time

import numpy as np

from common import best_of, module_at_commit
from sashelpers.core import backend
from sashelpers.physics import gisaxs as g

ALPHA_I_DEG = 0.2


def _ours(case, xp):
    return lambda: g.simulate(case["class_name"], case["lattice_nm"], case["radius_nm"], case["reps"],
                              ALPHA_I_DEG, case["grid"], angles_deg=case["angles"], xp=xp)


def _bornagain_fcc100(case, angles):
    """BornAgain time for the FCC[100] box mesocrystal of ``case`` over the given orientations."""
    import bornagain as ba

    a, R, (n1, n2, n3) = case["lattice_nm"], case["radius_nm"], case["reps"]
    if n1 % 2 == 0 or n2 % 2 == 0:
        raise ValueError(f"reps={case['reps']!r}: the BornAgain box needs odd in-plane cell counts")
    au = ba.RefractiveMaterial("Au", (1.0, 0.84, 0.0), g.AU_DELTA_10KEV, g.AU_BETA_10KEV)
    si = ba.RefractiveMaterial("Si", (0.5, 0.5, 0.5), g.SI_DELTA_10KEV, g.SI_BETA_10KEV)
    grid = case["grid"]

    def one(phi_deg):
        comp = ba.Compound()
        for b in ((0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)):
            p = ba.Particle(au, ba.Sphere(R))
            p.translate(ba.R3(b[0] * a, b[1] * a, b[2] * a))
            comp.addComponent(p)
        lat = ba.Lattice3D(ba.R3(a, 0, 0), ba.R3(0, a, 0), ba.R3(0, 0, a))
        # sites are symmetric about the box centre: odd n1, n2 put the box edges half a cell from any site
        meso = ba.Mesocrystal(ba.Crystal(comp, lat), ba.Box(n1 * a, n2 * a, (n3 - 0.5) * a))
        meso.rotate(ba.RotationZ(math.radians(phi_deg)))
        top = ba.Layer(ba.Vacuum())
        top.deposit2D(ba.Dilute2D(1e-4, meso))
        sample = ba.Sample()
        sample.addLayer(top)
        sample.addLayer(ba.Layer(si))
        tt, af = np.radians(grid.two_theta_f_deg), np.radians(grid.alpha_f_deg)
        half_t, half_a = (tt[1] - tt[0]) / 2, (af[1] - af[0]) / 2
        det = ba.SphericalDetector(tt.size, tt[0] - half_t, tt[-1] + half_t, af.size, af[0] - half_a, af[-1] + half_a)
        sim = ba.ScatteringSimulation(ba.Beam(1.0, g.WAVELENGTH_10KEV_NM, math.radians(ALPHA_I_DEG)), sample, det)
        sim.options().setUseAvgMaterials(False)
        sim.options().setMesoReciprocalSum(False, 1.0)
        sim.simulate()

    one(angles[0])  # warm-up
    t = time.perf_counter()
    for phi in angles:
        one(phi)
    return time.perf_counter() - t


def cases():
    """Benchmark cases: spherical-detector grids so that BornAgain sees the same pixels."""
    small = g.angle_grid(np.linspace(-1.5, 1.5, 41)[:-1] + 0.0375, np.linspace(0, 2, 41)[:-1] + 0.025)
    big = g.angle_grid(np.linspace(-2.26, 2.26, 125), np.linspace(0.01, 2.26, 125))  # q_y, q_z ~ [-2, 2], [0, 2] nm^-1
    return [
        dict(name="DWBA FCC[100] 7x7x1 (196 spheres), 1 orientation", size="40x40", grid=small,
             class_name="FCC[100]", lattice_nm=10.0, radius_nm=2.0, reps=(7, 7, 1), angles=[17.0],
             peer_angles=[17.0]),
        dict(name="DWBA FCC[100] 7x7x1 (196 spheres), 60 orientations", size="40x40", grid=small,
             class_name="FCC[100]", lattice_nm=10.0, radius_nm=2.0, reps=(7, 7, 1),
             angles=list(np.arange(60) * 1.5), peer_angles=list(np.arange(60) * 1.5)),
        dict(name="DWBA FCC[100] 11x11x10 (4840 spheres), 60 orientations", size="125x125", grid=big,
             class_name="FCC[100]", lattice_nm=20.0, radius_nm=5.0, reps=(11, 11, 10),
             angles=list(np.arange(60) * 1.5), peer_angles=[0.0, 45.0]),
        dict(name="DWBA FCC[111] 10x10x10, 60 orientations", size="125x125",
             grid=g.q_grid(125, 125, (-2, 2), (0, 2)), class_name="FCC[111]", lattice_nm=20.0, radius_nm=5.0,
             reps=(10, 10, 10), angles=list(np.arange(60) * 2.0), peer_angles=None),
        dict(name="DWBA HCP[0001] 10x10x10, 60 orientations", size="256x256",
             grid=g.q_grid(256, 256, (-2, 2), (0, 2)), class_name="HCP[0001]", lattice_nm=14.0, radius_nm=5.0,
             reps=(10, 10, 10), angles=list(np.arange(60) * 1.0), peer_angles=None),
    ]


#: The kernel before the surface cells and the factorised vertical sums (the Laue product over
#: conventional cells, summed term by term per orientation), kept in git history as the reference.
REFERENCE_COMMIT = "ca02cd72896df14fc7e34af03c8165bd266382de"


def dataset_rows(n_per_class: int = 2, seed: int = 0) -> list[dict]:
    """Seconds per image of study 3's training images (the ``standard`` profile's 64 px,
    supersample 2, 30 orientations; parameters drawn as the dataset draws them), this kernel with
    its defaults against the reference kernel with its defaults, on the same draws. The deviation
    column is over the classes whose crystal is the same in both (SC/BCC/FCC[100], HCP), in double
    precision; the [110] and [111] classes are now built from surface cells (other crystallites)."""
    from sashelpers.studies import gisaxs_cnn

    ref = module_at_commit(REFERENCE_COMMIT, "sashelpers/physics/gisaxs.py", "_gisaxs_reference")
    if ref is None:
        return []
    sizes = gisaxs_cnn.profile_sizes("standard")
    cfg = gisaxs_cnn.data_config(sizes)
    grid = g.pixel_grid(cfg["image_size"], cfg["qy_range_nm"], cfg["qz_range_nm"], cfg["supersample"])
    grid_ref = ref.pixel_grid(cfg["image_size"], cfg["qy_range_nm"], cfg["qz_range_nm"], cfg["supersample"])
    rng = np.random.default_rng(seed)
    draws = [(c, gisaxs_cnn.sample_parameters(c, {**cfg, "hexagon_fraction": 0.0}, rng))
             for c in g.CLASS_NAMES for _ in range(n_per_class)]

    def args(c, p):
        return (c, p["lattice_nm"], p["radius_nm"], p["reps"], p["alpha_i_deg"])

    new_s = best_of(lambda: [g.simulate(*args(c, p), grid, angles_deg=p["angles_deg"]) for c, p in draws]) / len(draws)
    old_s = best_of(lambda: [ref.simulate(*args(c, p), grid_ref, angles_deg=p["angles_deg"]) for c, p in draws]) / len(draws)
    dev = 0.0
    for c, p in draws:
        if c.endswith("[110]") or c.endswith("[111]"):
            continue
        a = g.simulate(*args(c, p), grid, angles_deg=p["angles_deg"], precision="double")
        b = ref.simulate(*args(c, p), grid_ref, angles_deg=p["angles_deg"], precision="double")
        bright = b > 1e-6 * b.max()
        dev = max(dev, float(np.max(np.abs(a[bright] / b[bright] - 1))))
    return [{"kernel": f"study-3 training image, 7 classes ({len(draws)} draws), box crystallites",
             "size": f"{cfg['image_size']}x{cfg['image_size']}, x{cfg['supersample']} supersampled, "
                     f"{cfg['n_orient']} orientations",
             "numpy_s": new_s, "cupy_s": None, "peer": f"this kernel at {REFERENCE_COMMIT[:7]} (Laue product per term)",
             "peer_s": old_s, "max_rel_dev_vs_peer": dev}]


def rows():
    """One dict per case: kernel, size, numpy_s, cupy_s (None without a GPU), peer, peer_s."""
    out = dataset_rows()
    have_cupy = backend.cupy_usable()
    try:
        import bornagain

        ba_version = getattr(bornagain, "version_str", lambda: "?")
        ba_version = ba_version() if callable(ba_version) else str(ba_version)
    except ImportError:
        bornagain = None
    for case in cases():
        row = {"kernel": case["name"], "size": case["size"]}
        row["numpy_s"] = best_of(_ours(case, np))
        row["cupy_s"] = None
        if have_cupy:
            import cupy

            row["cupy_s"] = best_of(_ours(case, cupy), repeat=5, sync=cupy.cuda.Device().synchronize)
        row["peer"], row["peer_s"] = None, None
        if bornagain is not None and case["peer_angles"]:
            t = _bornagain_fcc100(case, case["peer_angles"])
            n = len(case["angles"])
            scaled = len(case["peer_angles"]) != n
            row["peer"] = f"BornAgain {ba_version}" + (f" (scaled from {len(case['peer_angles'])} orientations)" if scaled else "")
            row["peer_s"] = t * n / len(case["peer_angles"])
        out.append(row)
    return out


if __name__ == "__main__":
    import os

    print(f"# GISAXS benchmark ({os.cpu_count()} CPU cores, backend {backend.backend_name()})")
    print(f"{'kernel':58s} {'size':8s} {'numpy s':>9s} {'img/s':>8s} {'cupy s':>9s} {'peer s':>10s}  peer")
    for r in rows():
        cu = f"{r['cupy_s']:9.4f}" if r["cupy_s"] is not None else f"{'-':>9s}"
        pe = f"{r['peer_s']:10.3f}" if r["peer_s"] is not None else f"{'-':>10s}"
        print(f"{r['kernel']:58s} {r['size']:8s} {r['numpy_s']:9.4f} {1 / r['numpy_s']:8.2f} {cu} {pe}  {r['peer'] or '-'}")

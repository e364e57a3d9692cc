"""Seconds per GRF sample (structure + FFT SAXS curve) for sashelpers.physics.grf vs a plain reference.

The peer is a straightforward, unoptimised implementation of the same pipeline written here:
real-space float64 white noise, numpy.fft complex128 full-spectrum FFTs, a full-grid spectral
filter, np.quantile thresholds, scipy.ndimage.gaussian_filter(mode='wrap') for the smoothing,
and the same bincount-over-shells radial average on the full spectrum. Both are timed in the
same run, interleaved, best of ``repeats`` (the machine may be shared: minima are the fair
number), so the ratio peer_s / numpy_s is meaningful.

    python benchmarks/bench_grf.py                 # 128^3 and 256^3, table to stdout
    python benchmarks/bench_grf.py --size 512 --no-peer --repeats 1   # one 512^3 sample + peak RSS
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sashelpers.core import backend  # noqa: E402
from sashelpers.physics import grf, saxs  # noqa: E402

VOXEL_NM = 0.5
N_Q = 500
PARAMS = {
    "2phase": {"a_nm": 4.0, "porosity": 0.3},
    "3phase": {"a_nm": 4.0, "porosity": 0.7, "nu": 0.2},
}


def q_grid(n: int) -> np.ndarray:
    return np.linspace(saxs.q_window(n, VOXEL_NM)[0], 3.0, N_Q)


# --- the peer: a plain reference implementation of the same pipeline --------------------------

def peer_sample(params: dict, n: int, voxel_nm: float, q_nm, rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    a, eps, nu = params["a_nm"], params["porosity"], params.get("nu")
    w = rng.standard_normal((n, n, n))
    q1 = 2 * np.pi * np.fft.fftfreq(n, d=voxel_nm)
    qx, qy, qz = np.meshgrid(q1, q1, q1, indexing="ij")
    qmag = np.sqrt(qx**2 + qy**2 + qz**2)
    del qx, qy, qz
    spec = np.fft.fftn(w) * np.sqrt((1 + (a * qmag) ** 8) ** -2.0)
    g = np.fft.ifftn(spec).real
    psi = (g > np.quantile(g, eps)).astype(float)
    s = gaussian_filter(psi, 2.0, mode="wrap")
    if nu is None:
        rho = (s > np.quantile(s, eps)).astype(float)
    else:
        t1, t2 = np.quantile(s, [eps * (1 - nu), eps])
        rho = np.where(s > t2, 1.0, np.where(s > t1, 0.65, 0.0))
    f = np.fft.fftn(rho - rho.mean())
    inten = np.abs(f) ** 2 * voxel_nm**3 / n**3
    dq = 2 * np.pi / (n * voxel_nm)
    idx = (qmag / (dq / 8)).astype(int).ravel()
    count = np.bincount(idx).astype(float)
    shell_sum = np.bincount(idx, weights=inten.ravel())
    q_shell = np.bincount(idx, weights=qmag.ravel()) / np.maximum(count, 1)
    count[0] = 0
    wgt = np.exp(-2 * ((q_shell[None, :] - np.asarray(q_nm)[:, None]) / dq) ** 2)
    wgt[:, 0] = 0
    return (wgt @ shell_sum) / (wgt @ count)


# --- timing -------------------------------------------------------------------------------------

def _ours(params, n, q, rng, xp):
    rho = grf.structure(params, n, VOXEL_NM, rng, xp=xp)
    curve = saxs.saxs_curve(rho, VOXEL_NM, q)  # q stays a host array; the curve is on xp
    if xp is not np:
        xp.cuda.Stream.null.synchronize()
    return curve


def _time(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rows(sizes=(128, 256), repeats: int = 5, peer: bool = True, kinds=("2phase", "3phase")) -> list[dict]:
    """One row per (kernel, size): best-of-``repeats`` seconds per sample, ours and the peer."""
    out = []
    cupy = backend.array_module("cupy") if backend.cupy_usable() else None
    for n in sizes:
        q = q_grid(n)
        reps = max(1, repeats if n <= 128 else repeats // 2 if n <= 256 else 1)
        for kind in kinds:
            p = PARAMS[kind]
            rng = np.random.default_rng(0)
            _ours(p, n, q, rng, np)  # warm caches and FFT plans
            t_np, t_peer = math.inf, None
            for _ in range(reps):  # interleave so that both see the same machine load
                t_np = min(t_np, _time(lambda: _ours(p, n, q, rng, np), 1))
                if peer:
                    t = _time(lambda: peer_sample(p, n, VOXEL_NM, q, rng), 1)
                    t_peer = t if t_peer is None else min(t_peer, t)
            t_cp = None
            if cupy is not None:
                _ours(p, n, q, rng, cupy)
                t_cp = _time(lambda: _ours(p, n, q, rng, cupy), reps)
            out.append({
                "kernel": f"grf_saxs_sample_{kind}",
                "size": n,
                "numpy_s": t_np,
                "cupy_s": t_cp,
                "peer": "numpy.fft c128 + ndimage.gaussian_filter(wrap) + np.quantile" if peer else None,
                "peer_s": t_peer,
            })
    return out


def _fmt(x):
    return "-" if x is None else f"{x:.3f}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs="*", default=[128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args(argv)
    table = rows(tuple(args.size), args.repeats, peer=not args.no_peer)
    print(f"{'kernel':28s} {'N':>5s} {'numpy_s':>8s} {'cupy_s':>8s} {'peer_s':>8s} {'peer/ours':>9s}")
    for r in table:
        ratio = "-" if r["peer_s"] is None else f"{r['peer_s'] / r['numpy_s']:.1f}x"
        print(f"{r['kernel']:28s} {r['size']:5d} {_fmt(r['numpy_s']):>8s} {_fmt(r['cupy_s']):>8s} "
              f"{_fmt(r['peer_s']):>8s} {ratio:>9s}")
    if table:
        print(f"peer: {table[0]['peer']}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {rss:.2f} GiB; backend: {backend.describe()}")


if __name__ == "__main__":
    main()

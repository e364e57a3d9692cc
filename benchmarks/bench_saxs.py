"""FFT SAXS kernel: density on an N^3 grid -> isotropic I(q) on 100 q values.

ours  : sashelpers.saxs.saxs_curve (float32 rfftn, bincount over shells + small weight matrix)
peer  : the straightforward version written from the same formulas (numpy.fft.fftn complex128
        over the full spectrum, then one Gaussian-weight pass over all N^3 points per q value)
"""

from __future__ import annotations

import numpy as np

from common import best_of, cupy_or_none
from sashelpers.physics import saxs

N_Q = 100
PEER_MAX_N = 128  # the peer's cost grows as N^3 * n_q: beyond this it takes minutes


def naive_saxs(rho: np.ndarray, voxel_nm: float, q_nm: np.ndarray) -> np.ndarray:
    n = rho.shape[0]
    f = np.fft.fftn(rho.astype(np.float64) - rho.mean())
    intensity = np.abs(f) ** 2 * voxel_nm**3 / n**3
    k = 2 * np.pi * np.fft.fftfreq(n, d=voxel_nm)
    qmag = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    dq = 2 * np.pi / (n * voxel_nm)
    out = np.empty(len(q_nm))
    for j, qj in enumerate(q_nm):
        w = np.exp(-2 * ((qmag - qj) / dq) ** 2)
        w.flat[0] = 0.0
        out[j] = (w * intensity).sum() / w.sum()
    return out


def rows(sizes=(64, 128, 256)) -> list[dict]:
    out = []
    cp = cupy_or_none()
    for n in sizes:
        h = 0.5
        rng = np.random.default_rng(0)
        rho = (rng.random((n, n, n)) > 0.5).astype(np.float32)
        q = np.geomspace(*saxs.q_window(n, h), N_Q)
        ours = saxs.saxs_curve(rho, h, q)
        row = {"kernel": "FFT SAXS (density -> I(q), 100 q)", "size": f"{n}^3",
               "numpy_s": best_of(lambda: saxs.saxs_curve(rho, h, q)), "cupy_s": None,
               "peer": "naive numpy (fftn c128 + per-q weights)", "peer_s": None}
        if cp is not None:
            rho_d = cp.asarray(rho)
            row["cupy_s"] = best_of(lambda: saxs.saxs_curve(rho_d, h, q),
                                    sync=cp.cuda.Device().synchronize)
        if n <= PEER_MAX_N:
            ref = naive_saxs(rho, h, q)
            row["max_rel_dev_vs_peer"] = float(np.max(np.abs(ours / ref - 1)))
            row["peer_s"] = best_of(lambda: naive_saxs(rho, h, q), repeat=1)
        out.append(row)
    return out


if __name__ == "__main__":
    for r in rows():
        print(r)

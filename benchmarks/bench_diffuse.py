"""Metropolis site updates per second for sashelpers.physics.diffuse.sweep vs a plain per-site loop.

The peer is the textbook algorithm written here in plain Python: visit every site in turn,
sum K_v (s_{r+v} + s_{r-v}) over the span's vectors with periodic indices, accept a flip with
probability min(1, exp(2 s_r h_r)). It runs on one lattice of the same size and couplings in the
same run; ours runs a batch of lattices (the way the study generates data). Rows report seconds
per sweep of one lattice, so peer_s / numpy_s is the speed-up per site update.

    python benchmarks/bench_diffuse.py
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import best_of, cupy_or_none  # noqa: E402

from sashelpers.physics import diffuse  # noqa: E402


def peer_sweep(spins: list, couplings, field: float, rng) -> None:
    """One sequential Metropolis sweep of a single lattice (a list of L lists of +-1), site by
    site, in place (plain Python lists: faster per element than numpy scalars)."""
    size = len(spins)
    vecs = diffuse.span_vectors(diffuse.span_of(couplings))
    for r in range(size):
        for c in range(size):
            h = field
            for k, (i, j) in zip(couplings, vecs):
                h += k * (spins[(r + i) % size][(c + j) % size] + spins[(r - i) % size][(c - j) % size])
            if rng.random() < math.exp(min(2.0 * spins[r][c] * h, 0.0)):
                spins[r][c] = -spins[r][c]


def rows(size: int = 64, batch: int = 256, spans=(2, 4), peer: bool = True) -> list[dict]:
    out = []
    cupy = cupy_or_none()
    for span in spans:
        rng = np.random.default_rng(span)
        k = rng.normal(0.0, 0.1, span * span - 1)
        s = diffuse.random_spins(batch, size, rng)
        t_np = best_of(lambda s=s, k=k, rng=rng: diffuse.sweep(s, k, 0.0, rng, 1), 3) / batch
        t_cp = None
        if cupy is not None:
            sc = diffuse.random_spins(batch * 16, size, rng, xp=cupy)
            t_cp = best_of(lambda sc=sc, k=k, rng=rng: diffuse.sweep(sc, k, 0.0, rng, 1), 3,
                           sync=cupy.cuda.Device().synchronize) / (batch * 16)
        t_peer = None
        if peer:
            one = diffuse.random_spins(1, size, rng)[0].astype(int).tolist()
            rng_py = random.Random(span)
            t0 = time.perf_counter()
            peer_sweep(one, k.tolist(), 0.0, rng_py)
            t_peer = time.perf_counter() - t0
        out.append({"kernel": f"metropolis_sweep_span{span} (per lattice; {batch} in a batch)", "size": size,
                    "numpy_s": t_np, "cupy_s": t_cp, "peer": "per-site Python loop" if peer else None,
                    "peer_s": t_peer, "site_updates_per_s": size * size / t_np})
    return out


def main() -> None:
    for r in rows():
        print(f"{r['kernel']:55s} L={r['size']}  numpy {r['numpy_s'] * 1e3:.3f} ms  "
              f"peer {r['peer_s'] * 1e3 if r['peer_s'] else float('nan'):.1f} ms  "
              f"-> {r['site_updates_per_s'] / 1e6:.1f} M site updates/s")


if __name__ == "__main__":
    main()

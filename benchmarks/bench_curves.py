"""Study-1 curves: polydisperse I(q) of sphere, sphere@hardsphere and cylinder on 256 q values.

ours : sashelpers.physics.scatterers.torch_intensity, one batched torch call for a batch of parameter sets
       drawn from the study-1 priors (CPU float64 = the checked path; float32 as a second row;
       CUDA in cupy_s when torch sees a GPU)
peer : sasmodels 1.1.0 compiled C kernel (double), built once, called once per curve in a loop
       (sasmodels has no batch API)

Times are seconds per curve (batch time / batch size), best of 3 after a warm-up, all measured
in the same run. ``python benchmarks/bench_curves.py`` prints the rows.
"""

from __future__ import annotations


import numpy as np
import torch

from common import best_of
from sashelpers.physics import scatterers as sc
from sashelpers.studies import inn_scatterers as s1

BATCH = 256                      # curves per torch call
PEER_N = {"sphere": 64, "sphere@hardsphere": 64, "cylinder": 8}  # curves per sasmodels loop


def rows(shapes=sc.SHAPES, batch: int = BATCH, threads: int | None = None) -> list[dict]:
    """One row per shape and torch dtype; ``threads`` sets torch's CPU threads for the run."""
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _rows(shapes, batch)
    finally:
        torch.set_num_threads(old_threads)


def _rows(shapes, batch: int) -> list[dict]:
    q = s1.default_q_nm()
    out = []
    cuda = torch.cuda.is_available()
    for shape in shapes:
        p = s1.sample_parameters(shape, np.random.default_rng(0), batch)
        n_peer = PEER_N.get(shape, 8)
        p_peer = {k: v[:n_peer] for k, v in p.items()}
        ref = sc.sasmodels_curves(shape, q, p_peer)
        peer_s = best_of(lambda: sc.sasmodels_curves(shape, q, p_peer), repeat=2) / n_peer
        for dtype in (torch.float64, torch.float32):
            name = "f64" if dtype == torch.float64 else "f32"
            ours = sc.torch_intensity(shape, q, p_peer, dtype=dtype, device="cpu").double().numpy()
            cpu_s = best_of(lambda: sc.torch_intensity(shape, q, p, dtype=dtype, device="cpu")) / batch
            cuda_s = None
            if cuda:
                cuda_s = best_of(lambda: sc.torch_intensity(shape, q, p, dtype=dtype, device="cuda"),
                                  sync=torch.cuda.synchronize) / batch
            out.append({
                "kernel": f"study-1 I(q) {shape} (torch {name}, pd 35)",
                "size": f"256 q, per curve (batch {batch}, {torch.get_num_threads()} threads)",
                "numpy_s": cpu_s,
                "cupy_s": cuda_s,
                "peer": f"sasmodels 1.1.0 C kernel, loop of {n_peer}",
                "peer_s": peer_s,
                "max_rel_dev_vs_peer": float(np.max(np.abs(ours / ref - 1))),
                "curves_per_s": 1.0 / cpu_s,
                "peer_curves_per_s": 1.0 / peer_s,
            })
    return out


if __name__ == "__main__":
    import sys

    threads = int(sys.argv[1]) if len(sys.argv) > 1 else None
    print(f"torch {torch.__version__}, {threads or torch.get_num_threads()} threads, "
          f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA'}")
    for r in rows(threads=threads):
        cuda = "" if r["cupy_s"] is None else f", CUDA {1 / r['cupy_s']:.0f} curves/s"
        print(f"{r['kernel']}: torch CPU {r['curves_per_s']:.1f} curves/s{cuda}; sasmodels "
              f"{r['peer_curves_per_s']:.1f} curves/s; speed-up {r['peer_s'] / r['numpy_s']:.1f}x; "
              f"max rel. dev. {r['max_rel_dev_vs_peer']:.1e}")

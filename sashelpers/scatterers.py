"""Analytic scatterers through sasmodels, with the book's units at the boundary.

The book works in nm and nm^-1; sasmodels in A and A^-1 (SLD in 1e-6 A^-2, I in cm^-1).
``sasmodels_intensity`` converts once: q_nm -> A^-1, and every parameter given with an ``_nm``
suffix (``radius_nm=8``) -> the sasmodels parameter in A (``radius=80``).
"""

from __future__ import annotations

import functools
import os

import numpy as np

os.environ.setdefault("SAS_OPENCL", "none")  # compiled C kernels; no OpenCL probing

NM_TO_A = 10.0


@functools.lru_cache(maxsize=16)
def _model(name: str):
    from sasmodels.core import load_model

    return load_model(name, dtype="double")


@functools.lru_cache(maxsize=64)
def _kernel(name: str, q_bytes: bytes):
    q_a = np.frombuffer(q_bytes, dtype=np.float64)
    return _model(name).make_kernel([q_a])


def to_sasmodels_pars(pars: dict) -> dict:
    """{'radius_nm': 8, 'sld': 2} -> {'radius': 80.0, 'sld': 2}."""
    out = {}
    for key, value in pars.items():
        if key.endswith("_nm"):
            out[key[:-3]] = float(value) * NM_TO_A
        else:
            out[key] = value
    return out


def sasmodels_intensity(model: str, q_nm, **pars) -> np.ndarray:
    """I(q) in cm^-1 of a sasmodels model on q_nm (nm^-1); lengths as ``<name>_nm`` in nm.

    Unspecified parameters keep sasmodels' defaults (note: background defaults to 0.001 cm^-1).
    """
    from sasmodels.direct_model import call_kernel

    q = np.ascontiguousarray(np.asarray(q_nm, dtype=np.float64) / NM_TO_A)
    if q.ndim != 1 or q.size == 0 or not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ValueError("q_nm must be a non-empty 1D array of finite, positive values (nm^-1)")
    sm_pars = to_sasmodels_pars(pars)
    known = set(_model(model).info.parameters.defaults)
    unknown = [k for k in sm_pars if k not in known and not k.endswith(("_pd", "_pd_n", "_pd_nsigma", "_pd_type"))]
    if unknown:
        raise ValueError(f"model {model!r} has no parameter(s) {unknown}; known: {', '.join(sorted(known))}")
    return np.asarray(call_kernel(_kernel(model, q.tobytes()), sm_pars), dtype=np.float64)

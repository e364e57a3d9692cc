"""Array-module and device choice.

numpy is the default everywhere. cupy is used when it imports *and* a CUDA device answers;
``SASHELPERS_BACKEND=numpy`` or ``=cupy`` forces the choice (forcing cupy without a usable
device is an error, not a silent fallback). Torch and XGBoost devices follow the same rule.
"""

from __future__ import annotations

import functools
import os
import types

import numpy as np

BACKENDS = ("numpy", "cupy")
_ENV = "SASHELPERS_BACKEND"


@functools.lru_cache(maxsize=1)
def cupy_usable() -> bool:
    """True when cupy imports and a CUDA device can run an array operation."""
    try:
        import cupy

        if not cupy.cuda.is_available():
            return False
        cupy.zeros(1).sum().item()  # the first real op is where a missing driver shows up
        return True
    except Exception:
        return False


def requested_backend() -> str | None:
    """The backend forced by ``SASHELPERS_BACKEND``, or None when unset."""
    value = os.environ.get(_ENV, "").strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(f"{_ENV}={value!r} is not a backend; allowed: {', '.join(BACKENDS)}")
    return value


def backend_name() -> str:
    """'numpy' or 'cupy': the array module kernels use for new arrays."""
    forced = requested_backend()
    if forced == "cupy" and not cupy_usable():
        raise RuntimeError(
            f"{_ENV}=cupy was requested but cupy cannot use a CUDA device here; "
            "unset it or install cupy-cuda12x on a machine with an NVIDIA GPU"
        )
    if forced is not None:
        return forced
    return "cupy" if cupy_usable() else "numpy"


def array_module(name: str | None = None) -> types.ModuleType:
    """The array module (numpy or cupy) by name, or the active one when name is None."""
    name = backend_name() if name is None else name
    if name not in BACKENDS:
        raise ValueError(f"name={name!r} is not a backend; allowed: {', '.join(BACKENDS)}")
    if name == "cupy":
        import cupy

        return cupy
    return np


def get_array_module(*arrays) -> types.ModuleType:
    """numpy or cupy, whichever owns the arrays (numpy for plain Python objects)."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy

            return cupy
    return np


def to_numpy(x) -> np.ndarray:
    """A host numpy copy/view of a numpy, cupy or torch array."""
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    if type(x).__module__.split(".")[0] == "torch":
        return x.detach().cpu().numpy()
    return np.asarray(x)


def fft_module(xp: types.ModuleType):
    """The FFT namespace matching xp: scipy.fft (multi-threaded) for numpy, cupy.fft for cupy."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def torch_device(prefer: str | None = None):
    """torch.device('cuda') when CUDA is usable and not forced off, else cpu.

    ``SASHELPERS_BACKEND=numpy`` keeps torch on the CPU too, so one variable gives a CPU-only run.
    """
    import torch

    if prefer is not None:
        return torch.device(prefer)
    if requested_backend() == "numpy":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def xgboost_device() -> str:
    """'cuda' or 'cpu' for XGBoost, chosen explicitly (XGBoost's own fallback is silent)."""
    return "cuda" if torch_device().type == "cuda" else "cpu"


def describe() -> dict:
    """A short description of the compute backends, for results records."""
    import platform

    info = {
        "array_backend": backend_name(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_device"] = str(torch_device())
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info

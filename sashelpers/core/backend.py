"""Array-module and device choice.

numpy is the default everywhere. cupy is used when it imports *and* a CUDA device answers;
``SASHELPERS_BACKEND=numpy`` or ``=cupy`` forces the choice (forcing cupy without a usable
device is an error, not a silent fallback). Torch and XGBoost devices follow the same rule.
"""

from __future__ import annotations

import functools
import math
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
    """numpy or cupy, whichever owns the arrays (numpy for plain Python objects).

    Arrays of another array-API namespace (e.g. ``array_api_strict`` in the tests) give that
    namespace, so the kernels' non-numpy path can run without a GPU.
    """
    for a in arrays:
        root = type(a).__module__.split(".")[0]
        if root == "cupy":
            import cupy

            return cupy
        if root != "numpy" and hasattr(a, "__array_namespace__"):
            return a.__array_namespace__()
    return np


def namespace(name: str) -> types.ModuleType:
    """The array namespace called name (``xp.__name__``): numpy, cupy or another array-API module."""
    if name in BACKENDS:
        return array_module(name)
    import importlib

    return importlib.import_module(name)


def is_ndarray_module(xp) -> bool:
    """True for numpy and cupy: the namespaces with the full ndarray API (methods, ``out=``,
    bincount, ndimage, random). Others get the array API standard only."""
    return xp is np or getattr(xp, "__name__", "") == "cupy"


def to_numpy(x) -> np.ndarray:
    """A host numpy copy/view of a numpy, cupy, torch or other array-API (DLPack) array."""
    root = type(x).__module__.split(".")[0]
    if root == "cupy":
        return x.get()
    if root == "torch":
        return x.detach().cpu().numpy()
    if root != "numpy" and hasattr(x, "__array_namespace__") and hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


def fft_module(xp: types.ModuleType):
    """The FFT namespace matching xp: scipy.fft (multi-threaded) for numpy, xp.fft otherwise
    (cupy.fft, or the array API fft extension)."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def ndimage_module(xp: types.ModuleType):
    """scipy.ndimage for numpy, cupyx.scipy.ndimage for cupy (filters and interpolation are not
    in the array API standard: other namespaces raise NotImplementedError)."""
    if xp is np:
        import scipy.ndimage

        return scipy.ndimage
    if is_ndarray_module(xp):
        import cupyx.scipy.ndimage

        return cupyx.scipy.ndimage
    raise NotImplementedError(f"ndimage (filters, interpolation) needs numpy or cupy arrays, not {xp.__name__}")


# --- the few operations outside the array API standard ------------------------------------------
# numpy and cupy use their native call (numerics unchanged); other namespaces a standard-only
# equivalent. Kernels written with these and the standard run on numpy, cupy and array_api_strict.

def astype(x, dtype, *, copy: bool = True):
    """x.astype(dtype, copy=copy) (``xp.astype`` for namespaces without the method)."""
    if is_ndarray_module(get_array_module(x)):
        return x.astype(dtype, copy=copy)
    return get_array_module(x).astype(x, dtype, copy=copy)


def mean(x, axis=None, *, dtype=None, keepdims: bool = False):
    """x.mean(axis, dtype=dtype): the accumulator dtype is not a standard argument (cast first)."""
    xp = get_array_module(x)
    if is_ndarray_module(xp):
        return x.mean(axis=axis, dtype=dtype, keepdims=keepdims)
    return xp.mean(x if dtype is None else xp.astype(x, dtype), axis=axis, keepdims=keepdims)


def out_kw(x) -> dict:
    """{'out': x} for numpy/cupy (a ufunc writes into x, no temporary), {} elsewhere: use as
    ``x = xp.sqrt(x, **out_kw(x))``."""
    return {"out": x} if is_ndarray_module(get_array_module(x)) else {}


def assign(dst, src) -> None:
    """dst[...] = src, casting src to dst's dtype (the standard casts only Python scalars)."""
    xp = get_array_module(dst)
    dst[...] = src if is_ndarray_module(xp) else xp.astype(src, dst.dtype)


def set_real(z, x):
    """The complex array z with its real part set to x: in place for numpy/cupy (a view);
    a new array elsewhere (z must then be initialised, e.g. by zeros). Use as z = set_real(z, x)."""
    xp = get_array_module(z)
    if is_ndarray_module(xp):
        z.real[...] = x
        return z
    return xp.astype(x, z.dtype) + 1j * xp.imag(z)


def set_imag(z, x):
    """The complex array z with its imaginary part set to x (see set_real)."""
    xp = get_array_module(z)
    if is_ndarray_module(xp):
        z.imag[...] = x
        return z
    return xp.real(z) + 1j * xp.astype(x, xp.real(z).dtype)


def sinc(x):
    """sin(pi x)/(pi x), 1 at x = 0 (numpy's formula where the namespace has no sinc)."""
    xp = get_array_module(x)
    if is_ndarray_module(xp):
        return xp.sinc(x)
    y = math.pi * xp.where(x == 0, 1.0e-20, x)
    return xp.sin(y) / y


def partition(x, kth):
    """A copy of the 1D array x with the kth elements in sorted position (a full sort where the
    namespace has no partition)."""
    xp = get_array_module(x)
    return xp.partition(x, kth) if is_ndarray_module(xp) else xp.sort(x)


def bincount(x, weights=None, minlength: int = 0):
    """np.bincount for non-negative integer x; a sort-based scatter-add where the namespace has none
    (argsort, cumulative_sum, searchsorted)."""
    xp = get_array_module(x)
    if is_ndarray_module(xp):
        return xp.bincount(x, weights=weights, minlength=minlength)
    n = max(int(xp.max(x)) + 1 if x.shape[0] else 0, minlength)
    order = xp.argsort(x)
    edges = xp.searchsorted(xp.take(x, order), xp.arange(n + 1, dtype=x.dtype))
    if weights is None:
        return xp.astype(edges[1:] - edges[:-1], xp.int64)
    csum = xp.cumulative_sum(xp.astype(xp.take(weights, order), xp.float64), include_initial=True)
    return xp.take(csum, edges[1:]) - xp.take(csum, edges[:-1])


def is_floating(x) -> bool:
    """Whether x has a real floating dtype."""
    xp = get_array_module(x)
    if is_ndarray_module(xp):
        return bool(np.issubdtype(x.dtype, np.floating))
    return bool(xp.isdtype(x.dtype, "real floating"))


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

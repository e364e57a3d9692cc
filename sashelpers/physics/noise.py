"""Measurement models for scattering images (studies 3 and 4).

Every function works on a single image (H, W) or a batch (..., H, W): the image is always the
last two axes, and per-image statistics (mean, max) are taken over those axes only. Random
models take an explicit ``rng`` (a numpy Generator; for cupy arrays a cupy Generator from
``cupy.random.default_rng`` works too). Outputs keep the input's floating dtype.

* ``smear``: Gaussian blur with sigma in pixels (mirror edges; the sum is preserved in the
  interior and, for 'reflect' edges, over the whole image).
* ``gaussian_noise``: I + N(0, sigma^2) with sigma = alpha * mean(I) per image.
* ``poisson_noise``: scale each image so that its max (or mean) is ``counts``, draw Poisson
  counts, scale back.
* ``reduce_resolution``: area-average down to m x m pixels (anti-aliased), then interpolate back
  to the original size (the seed's 125 -> 100/75/50/25 -> 125 experiment).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import backend as _backend
from ..core.backend import get_array_module, to_numpy


def _as_image(image, name="image"):
    xp = get_array_module(image)
    a = xp.asarray(image)
    if a.ndim < 2 or a.shape[-1] < 2 or a.shape[-2] < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., H, W) with H, W >= 2, got shape {a.shape}")
    if not _backend.is_floating(a):
        a = _backend.astype(a, xp.float32)
    return xp, a


def _ndimage(xp):
    return _backend.ndimage_module(xp)  # scipy.ndimage or cupyx.scipy.ndimage; NotImplementedError otherwise


class _HostDraws:
    """A numpy generator for a namespace without random numbers of its own (the array API has
    none): draws are made on the host and moved to xp."""

    def __init__(self, rng, xp):
        self._rng, self._xp = rng, xp

    def standard_normal(self, size=None):
        return self._xp.asarray(self._rng.standard_normal(size=size))

    def poisson(self, lam):
        return self._xp.asarray(self._rng.poisson(to_numpy(lam)))


def _check_rng(rng, xp=np):
    """The generator to draw with: rng itself, or for cupy arrays and a numpy rng a cupy
    RandomState seeded from rng (draws stay on the device; same seed, same noise); for other
    array-API namespaces (no random numbers) rng drawing on the host."""
    if rng is None or not hasattr(rng, "standard_normal") or not hasattr(rng, "poisson"):
        raise ValueError(f"rng={rng!r} must be a random Generator (e.g. numpy.random.default_rng(seed))")
    if xp is np or type(rng).__module__.split(".")[0] == "cupy":
        return rng
    if not _backend.is_ndarray_module(xp):
        return _HostDraws(rng, xp)
    return xp.random.RandomState(int(rng.integers(2**63 - 1)))


def smear(image, sigma_px: float):
    """Gaussian blur of the last two axes, sigma_px in pixels (0 returns a copy)."""
    xp, a = _as_image(image)
    if not (math.isfinite(sigma_px) and 0 <= sigma_px <= 100):
        raise ValueError(f"sigma_px={sigma_px!r} must lie in [0, 100] pixels")
    if sigma_px == 0:
        return _backend.astype(a, a.dtype)  # a copy
    sigma = (0,) * (a.ndim - 2) + (sigma_px, sigma_px)
    return _ndimage(xp).gaussian_filter(a, sigma=sigma, mode="reflect", truncate=4.0)


def gaussian_noise(image, alpha: float, rng):
    """I + alpha * mean(I) * N(0, 1), the mean taken per image (last two axes)."""
    xp, a = _as_image(image)
    if not (math.isfinite(alpha) and 0 <= alpha <= 100):
        raise ValueError(f"alpha={alpha!r} must lie in [0, 100] (noise sigma / mean intensity)")
    rng = _check_rng(rng, xp)
    sigma = alpha * xp.mean(a, axis=(-2, -1), keepdims=True)
    # standard_normal, not normal: cupy's Generator has no normal (same draws as normal() on numpy)
    z = _backend.astype(xp.asarray(rng.standard_normal(size=a.shape)), a.dtype, copy=False)
    return a + sigma * z


def poisson_noise(image, counts: float, rng, *, reference: str = "max"):
    """Shot noise: scale so the image's max (or mean) equals counts, draw Poisson, scale back.

    Negative intensities are an error (Poisson needs rates >= 0). An all-zero image stays zero.
    """
    xp, a = _as_image(image)
    if not (math.isfinite(counts) and 0 < counts <= 1e12):
        raise ValueError(f"counts={counts!r} must lie in (0, 1e12] photons")
    if reference not in ("max", "mean"):
        raise ValueError(f"reference={reference!r} must be 'max' or 'mean'")
    rng = _check_rng(rng, xp)
    if bool(xp.any(a < 0)):
        raise ValueError("image must be non-negative for Poisson noise (got negative intensities)")
    ref = xp.max(a, axis=(-2, -1), keepdims=True) if reference == "max" else xp.mean(a, axis=(-2, -1), keepdims=True)
    scale = _backend.astype(xp.where(ref > 0, counts / xp.where(ref > 0, ref, 1), 0), xp.float64)
    lam = _backend.astype(a, xp.float64) * scale
    drawn = _backend.astype(xp.asarray(rng.poisson(lam)), xp.float64)
    return _backend.astype(xp.where(scale > 0, drawn / xp.where(scale > 0, scale, 1), 0), a.dtype)


def reduce_resolution(image, m: int, *, order: int = 1):
    """Down to m x m pixels by area averaging (anti-aliased), back to (H, W) by spline
    interpolation of the given order (1 = bilinear). Returns the input's shape and dtype."""
    xp, a = _as_image(image)
    h, w = a.shape[-2:]
    if int(m) != m or not 2 <= m <= min(h, w):
        raise ValueError(f"m={m!r} must be an integer in [2, {min(h, w)}] pixels (at most the image size)")
    if order not in (0, 1, 3):
        raise ValueError(f"order={order!r} must be 0, 1 or 3")
    m = int(m)
    lead = a.shape[:-2]
    flat = xp.reshape(a, (-1, h, w))
    small = _area_resize(_area_resize(flat, m, axis=1, xp=xp), m, axis=2, xp=xp)
    ndi = _ndimage(xp)
    # back: align pixel centres (the same field of view), edge pixels held at the border
    zy, zx = h / m, w / m
    yy = (xp.arange(h) + 0.5) / zy - 0.5
    xx = (xp.arange(w) + 0.5) / zx - 0.5
    cy, cx = xp.meshgrid(yy, xx, indexing="ij")
    out = xp.stack([ndi.map_coordinates(s, xp.stack([cy, cx]), order=order, mode="nearest") for s in small])
    return out.reshape(lead + (h, w)).astype(a.dtype)


def _area_resize(a, m: int, axis: int, xp):
    """Resample one axis to m cells by exact overlap-area averaging (a linear map, n -> m)."""
    n = a.shape[axis]
    edges_in = np.arange(n + 1) / n
    edges_out = np.arange(m + 1) / m
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    weights = np.clip(hi - lo, 0, None) * m  # (m, n), rows sum to 1
    wmat = xp.asarray(weights.astype(np.float64))
    moved = xp.moveaxis(a, axis, -1)
    out = (_backend.astype(moved, xp.float64) @ wmat.T)
    return _backend.astype(xp.moveaxis(out, -1, axis), a.dtype)

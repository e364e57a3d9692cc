"""Study 4 (Schaefer & Skwarek, MLC 2024 poster): a denoising autoencoder (DAE) for GISAXS images.

The DAE (``learn.nets.DenoisingAutoencoder``, trained on (noisy, clean) pairs) does three jobs
on study 3's simulated images: it **denoises** them, its latent code tells **which kind of
noise** an image carries (a small classifier/regressor on the code), and clustering the codes of
a long measurement series **bins** its images by structure. A plain DAE learns to drop the noise
from its code (the clean target does not depend on it), so the first ``noise_code`` numbers of
the code are set aside for the noise: a linear read-out of them is trained with the DAE
(``noise_aware_loss``), and ``split_code`` separates that noise part from the structure part
that the binning reads. The network and its training loop live in ``learn``; this module holds
the study's data, baselines and pipeline.

Images are study 3's: log-normalised GISAXS images ``x = 1 + log10(I / I_max) / decades``
clipped to [0, 1] (``gisaxs.log_normalise``), square, q_z increasing along axis 0.
``check_images`` guards every public entry point.

* **Noise** (``NOISE_TYPES``, ``NOISE_LEVELS``, ``apply_noise``, ``random_noise``): one of five
  kinds, each at a few levels, applied to the *linear* intensity (where a detector adds it) and
  re-log-normalised, exactly as study 3's ``gisaxs_cnn.apply_condition``;
  ``noise_of_condition`` maps study 3's ``CONDITIONS`` onto this catalogue so that results can be
  reported per study-3 condition. ``severity`` is a number in [0, 1] per (kind, level), the
  regression target for "how strong is the noise".
* **Classical baselines** (``CLASSICAL_GRID``, ``denoise_classical``, ``tune_classical``,
  ``classical_baseline``): Gaussian filter, non-local means, wavelet shrinkage and total
  variation from scikit-image, applied to the log-normalised image (what the DAE sees), their
  parameters chosen per noise condition on a **validation** set by mean PSNR. The test set is
  never seen by the tuning: ``classical_baseline`` takes only the noisy test images.
* **Metrics** (``psnr``, ``ssim``, ``metric_table``): per image, with ``data_range = 1`` (the
  log-normalised scale), and per-condition means for the noisy input, the best classical
  denoiser and the DAE.
* **Measurement series** (``measurement_series``): a simulated annealing/deposition run of
  hundreds of images: the structure changes in contiguous segments (dilute disordered spheres,
  then superlattices of ``gisaxs.CLASSES``), the lattice constant drifts slowly within a
  segment, and every image has its own noise draw. Labels are exact: ``render_series_image``
  re-renders any image from its recorded parameters.
* **Binning** (``cluster_codes``, ``binning_scores``, ``outlier_score``,
  ``false_alarm_threshold``): k-means on pixels, on their principal components and on latent
  codes, scored by the adjusted Rand index against the true structure; a Mahalanobis distance
  in latent space flags images unlike the training set, at a threshold set for a chosen false
  alarm rate on held-out in-distribution codes.
* **The pipeline** (``SIZES``/``profile_sizes``, ``build_dae``, ``train_dae``, ``noise_head``,
  ``identify_noise``, ``noise_id_scores``, ``estimate_noise``, ``denoising_scores``,
  ``rescue_scores``, ``series_scores``, ``record_metrics``, ``HEADLINES``, ``run_study``): the
  DAE trained with fresh catalogue noise every epoch on study 3's training images; a linear
  head on its latent code that names the noise kind and regresses its severity; PSNR/SSIM
  against the tuned classical denoisers under each of study 3's conditions; study 3's clean
  classifier on noisy vs denoised test images; ARI of binning a measurement series.
* **A measurement's noise on simulations** (``noise_to_apply``, ``fine_tune_on_noise``): the
  noise the code names for a measured image, applied to study 3's training images to fine-tune
  its classifier (the poster's last step).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from ..core import checks, profiles, report
from ..core.report import Headline
from ..learn import nets, training
from ..learn.training import TrainConfig, fit
from ..physics import gisaxs
from ..physics import noise as noise_models
from . import gisaxs_cnn

STUDY = "04_gisaxs_denoising_autoencoder"

MIN_IMAGE_PX = 8  # smallest side accepted (the DAE's limit; SSIM needs 7 px)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def check_images(images, *, linear: bool = False, name: str = "images") -> np.ndarray:
    """``images`` as a float32 array (H, W) or (n, H, W) of square images, or a ValueError.

    Parameters
    ----------
    images : array_like
        One image (H, W) or a batch (n, H, W), n >= 1, H = W >= 8 px.
    linear : bool
        False (default): log-normalised images, every value in [0, 1]. True: linear intensities
        (any unit, e.g. nm^6 or counts), every value >= 0.
    name : str
        The argument's name in error messages.

    Returns
    -------
    numpy.ndarray
        The images as float32 (a view of the input where it already is float32).

    Raises
    ------
    ValueError
        Wrong number of dimensions, non-square or smaller than 8 px, an empty batch, NaN or inf,
        negative values, or (log-normalised) values above 1.
    """
    try:
        a = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of images (H, W) or (n, H, W)") from None
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {a.shape}; expected one image (H, W) or a batch (n, H, W)")
    h, w = a.shape[-2:]
    if h != w:
        raise ValueError(f"{name} has shape {a.shape}; the images must be square (H = W)")
    if h < MIN_IMAGE_PX:
        raise ValueError(f"{name} has shape {a.shape}; the images must be at least {MIN_IMAGE_PX} px per side")
    if a.size == 0:
        raise ValueError(f"{name} has shape {a.shape}; the batch is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        what = "intensities" if linear else "values (log-normalised images lie in [0, 1])"
        raise ValueError(f"{name} contains negative {what}: min = {lo:g}")
    if not linear and hi > 1.0 + 1e-6:
        raise ValueError(f"{name} has values above 1 (max = {hi:g}): log-normalised images lie in [0, 1]; "
                         "pass linear intensities through gisaxs.log_normalise first")
    return a


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} differ in shape: {a.shape} and {b.shape}")


def _batch(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a


# --------------------------------------------------------------------------------------------
# The noise catalogue
# --------------------------------------------------------------------------------------------

NOISE_TYPES = ("none", "gaussian", "poisson", "smear", "resolution")

#: Levels of each kind, weakest first. gaussian: noise sigma as a fraction of the image's mean
#: linear intensity; poisson: photons in the brightest pixel; smear: Gaussian blur sigma in
#: pixels; resolution: the fraction of the pixels kept along each side (down to
#: round(fraction * size) px by area averaging, then back by bilinear interpolation).
NOISE_LEVELS = {
    "none": (0.0,),
    "gaussian": (0.1, 0.2, 0.5, 1.0),
    "poisson": (1e5, 1e4, 1e3, 1e2),
    "smear": (0.5, 1.0, 2.0),
    "resolution": (0.8, 0.6, 0.4, 0.2),
}

#: Allowed level range per kind (the catalogue is a sample of it).
_LEVEL_RANGE = {"gaussian": (0.0, 100.0), "poisson": (1e-3, 1e12), "smear": (0.0, 100.0), "resolution": (0.0, 1.0)}


def _check_noise(kind: str, level) -> float:
    checks.one_of("kind", kind, NOISE_TYPES)
    if kind == "none":
        if level != 0:
            raise ValueError(f"level={level!r}: the 'none' noise kind takes level 0")
        return 0.0
    lo, hi = _LEVEL_RANGE[kind]
    unit = {"gaussian": "(sigma / mean intensity)", "poisson": "photons in the brightest pixel",
            "smear": "px", "resolution": "(fraction of pixels kept per side)"}[kind]
    return checks.number("level", level, lo, hi, lo_open=kind in ("poisson", "resolution"), unit=unit)


def apply_noise(images, kind: str, level: float, rng=None, decades: float = 6.0) -> np.ndarray:
    """One kind of noise at one level, applied to the linear intensity of log-normalised images.

    As ``gisaxs_cnn.apply_condition``: the images are turned back into linear intensity
    (``gisaxs_cnn.to_linear``: ``I / I_max = 10^(decades (x - 1))``, 0 where x = 0), the noise
    model of ``physics.noise`` acts there, and the result is log-normalised again with the same
    ``decades`` (negative intensities from Gaussian noise clip to 0; the image is renormalised
    to its new maximum).

    Parameters
    ----------
    images : array_like
        Log-normalised images (H, W) or (n, H, W) in [0, 1].
    kind : str
        One of ``NOISE_TYPES``.
    level : float
        The kind's level (``NOISE_LEVELS`` lists the catalogue): gaussian sigma / mean
        intensity per image, in [0, 100]; poisson photons in the brightest pixel, in
        (0, 1e12]; smear sigma in px, in [0, 100]; resolution the fraction of pixels kept
        per side, in (0, 1]; none: 0.
    rng : numpy.random.Generator or int, optional
        The random generator (or a seed); needed by gaussian and poisson only.
    decades : float
        Dynamic range of the log normalisation (study 3 uses 6).

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], the input's shape; for ``none`` an unchanged copy.
    """
    x = check_images(images)
    level = _check_noise(kind, level)
    decades = checks.positive("decades", decades, 30.0)
    if kind == "none":
        return x.copy()
    lin = gisaxs_cnn.to_linear(x, decades)
    if kind == "gaussian":
        out = noise_models.gaussian_noise(lin, level, checks.generator(rng))
    elif kind == "poisson":
        out = noise_models.poisson_noise(lin, level, checks.generator(rng))
    elif kind == "smear":
        out = noise_models.smear(lin, level)
    else:
        size = x.shape[-1]
        out = noise_models.reduce_resolution(lin, min(size, max(2, round(size * level))))
    return gisaxs.log_normalise(out, decades)


def severity(kind: str, level: float) -> float:
    """How strong the noise is, in [0, 1]: a regression target comparable across kinds.

    0 for ``none``. For the other kinds, the k-th of the n catalogue levels (weakest first,
    ``NOISE_LEVELS``) has severity (k + 1) / n, so the weakest level of every kind is 1/n and
    the strongest 1; levels between catalogue levels are interpolated linearly in ``log(level)``,
    levels outside the catalogue's range get the nearest end (1/n or 1).
    """
    level = _check_noise(kind, level)
    if kind == "none":
        return 0.0
    levels = np.log(np.asarray(NOISE_LEVELS[kind], dtype=np.float64))
    x = math.log(level) if level > 0 else -math.inf
    ranks = np.arange(1, len(levels) + 1) / len(levels)
    if levels[-1] < levels[0]:  # poisson, resolution: a smaller level is stronger noise
        levels, x = -levels, -x
    return float(np.interp(x, levels, ranks))


def random_noise(images, rng, *, kinds=NOISE_TYPES, continuous: bool = False, decades: float = 6.0):
    """Each image gets one (kind, level), drawn independently: kind uniform over ``kinds``,
    level uniform over the kind's catalogue levels (``continuous=True``: log-uniform between the
    catalogue's extremes).

    Parameters
    ----------
    images : array_like
        Log-normalised images (n, H, W) (or one image (H, W), treated as n = 1).
    rng : numpy.random.Generator or int
        Generator or seed for the draws and the noise itself.
    kinds : sequence of str
        The kinds to draw from (default all of ``NOISE_TYPES``, ``none`` included).
    continuous : bool
        Draw levels continuously (for a severity regression) instead of from the catalogue.
    decades : float
        As in ``apply_noise``.

    Returns
    -------
    noisy : numpy.ndarray
        float32 (n, H, W) in [0, 1].
    kind_index : numpy.ndarray
        int64 (n,), index into ``NOISE_TYPES`` (not into ``kinds``).
    level : numpy.ndarray
        float64 (n,), the level used; ``severity(NOISE_TYPES[k], level)`` is its severity.
    """
    x = _batch(check_images(images))
    rng = checks.generator(rng)
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("kinds must name at least one noise kind")
    for k in kinds:
        checks.one_of("kind", k, NOISE_TYPES)
    which = rng.integers(0, len(kinds), len(x))
    kind_index = np.array([NOISE_TYPES.index(kinds[w]) for w in which], dtype=np.int64)
    level = np.empty(len(x), dtype=np.float64)
    out = np.empty_like(x)
    for i, k in enumerate(kind_index):
        kind = NOISE_TYPES[k]
        level[i] = _draw_level(kind, rng, continuous)
        out[i] = apply_noise(x[i], kind, level[i], rng, decades)
    return out, kind_index, level


def _draw_level(kind: str, rng, continuous: bool) -> float:
    levels = NOISE_LEVELS[kind]
    if kind == "none":
        return 0.0
    if continuous:
        lo, hi = math.log(min(levels)), math.log(max(levels))
        return float(math.exp(rng.uniform(lo, hi)))
    return float(levels[int(rng.integers(0, len(levels)))])


def noise_of_condition(condition: str) -> tuple[str, float]:
    """Study 3's condition (``gisaxs_cnn.CONDITIONS``) as (kind, level) of this catalogue.

    clean -> (none, 0); smear_s -> (smear, s); gauss_a -> (gaussian, a); poisson ->
    (poisson, ``gisaxs_cnn.POISSON_COUNTS``); res_N -> (resolution, N / 125): the paper reduced
    125 px images to N px, and ``gisaxs_cnn.res_pixels`` keeps that fraction at any size, so
    ``apply_noise`` with this pair reproduces ``gisaxs_cnn.apply_condition`` exactly (same
    generator state, same noise).
    """
    checks.one_of("condition", condition, gisaxs_cnn.CONDITIONS)
    if condition == "clean":
        return "none", 0.0
    if condition == "poisson":
        return "poisson", float(gisaxs_cnn.POISSON_COUNTS)
    kind, _, value = condition.partition("_")
    if kind == "res":
        return "resolution", float(value) / gisaxs_cnn.PAPER_SIZE
    return {"smear": "smear", "gauss": "gaussian"}[kind], float(value)


# --------------------------------------------------------------------------------------------
# Classical denoisers (scikit-image), tuned on validation data
# --------------------------------------------------------------------------------------------

def _grid(**axes) -> tuple[dict, ...]:
    keys = list(axes)
    combos = [()]
    for k in keys:
        combos = [c + (v,) for c in combos for v in axes[k]]
    return tuple(dict(zip(keys, c)) for c in combos)


#: The parameter grid of each classical denoiser (22 settings). identity: no denoising, so that
#: the tuned baseline is never worse than the noisy input on the validation set. gaussian:
#: ``skimage.filters.gaussian``, sigma in px. nl_means: ``skimage.restoration.denoise_nl_means``
#: (fast mode; patch_size and patch_distance in px, h the patch-distance cut-off in
#: log-normalised units). wavelet: ``denoise_wavelet`` (soft thresholds, the noise sigma
#: estimated per image). tv: ``denoise_tv_chambolle``, weight in log-normalised units.
CLASSICAL_GRID = {
    "identity": ({},),
    "gaussian": _grid(sigma=(0.5, 1.0, 2.0, 3.0)),
    "nl_means": _grid(patch_size=(3, 5), patch_distance=(4,), h=(0.05, 0.1, 0.2, 0.4)),
    "wavelet": _grid(wavelet=("db1", "db2"), method=("BayesShrink", "VisuShrink")),
    "tv": _grid(weight=(0.05, 0.1, 0.2, 0.4, 0.8)),
}
METHODS = tuple(CLASSICAL_GRID)
_PARAMS = {"identity": set(), "gaussian": {"sigma"}, "nl_means": {"patch_size", "patch_distance", "h"},
           "wavelet": {"wavelet", "method"}, "tv": {"weight"}}


def denoise_classical(images, method: str, params: dict | None = None) -> np.ndarray:
    """One classical denoiser applied to each log-normalised image separately.

    Parameters
    ----------
    images : array_like
        Log-normalised images (H, W) or (n, H, W) in [0, 1].
    method : str
        One of ``METHODS`` (see ``CLASSICAL_GRID``).
    params : dict, optional
        The method's parameters (keys as in ``CLASSICAL_GRID``; missing keys take
        scikit-image's defaults).

    Returns
    -------
    numpy.ndarray
        float32, the input's shape, clipped to [0, 1].
    """
    from skimage import filters, restoration

    x = check_images(images)
    checks.one_of("method", method, METHODS)
    params = dict(params or {})
    unknown = set(params) - _PARAMS[method]
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)} for method {method!r}; "
                         f"allowed: {', '.join(sorted(_PARAMS[method])) or 'none'}")
    b = _batch(x)
    if method == "identity":
        out = b.copy()
    elif method == "gaussian":
        s = checks.number("sigma", params.get("sigma", 1.0), 0.0, 100.0, unit="px")
        out = filters.gaussian(b, sigma=(0.0, s, s), mode="nearest", preserve_range=True)
    elif method == "nl_means":
        kw = {"patch_size": checks.integer("patch_size", params.get("patch_size", 3), 1, 64),
              "patch_distance": checks.integer("patch_distance", params.get("patch_distance", 4), 1, 64),
              "h": checks.positive("h", params.get("h", 0.1))}
        out = np.stack([restoration.denoise_nl_means(im, fast_mode=True, **kw) for im in b])
    elif method == "wavelet":
        out = restoration.denoise_wavelet(b, wavelet=params.get("wavelet", "db1"), mode="soft",
                                          method=params.get("method", "BayesShrink"), rescale_sigma=True,
                                          channel_axis=0)
    else:
        weight = checks.positive("weight", params.get("weight", 0.1))
        out = restoration.denoise_tv_chambolle(b, weight=weight, channel_axis=0)
    out = np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
    return out[0] if x.ndim == 2 else out


def _groups(noisy_val, clean_val) -> dict:
    if isinstance(noisy_val, dict):
        if clean_val is not None:
            raise ValueError("pass either a dict {condition: (noisy, clean)} or the arrays noisy_val, clean_val")
        groups = noisy_val
    else:
        if clean_val is None:
            raise ValueError("clean_val is missing: the clean validation images the noisy ones came from")
        groups = {"all": (noisy_val, clean_val)}
    if not groups:
        raise ValueError("no validation data: the dict of conditions is empty")
    out = {}
    for cond, pair in groups.items():
        try:
            noisy, clean = pair
        except (TypeError, ValueError):
            raise ValueError(f"validation[{cond!r}] must be a pair (noisy, clean) of image arrays") from None
        noisy, clean = check_images(noisy, name=f"noisy[{cond!r}]"), check_images(clean, name=f"clean[{cond!r}]")
        _same_shape(noisy, clean, f"noisy and clean validation images of {cond!r}")
        out[cond] = (noisy, clean)
    return out


def tune_classical(noisy_val, clean_val=None, *, methods=METHODS, grid: dict | None = None) -> dict:
    """The best classical denoiser and its parameters per noise condition, by mean PSNR on the
    **validation** images (the only data this function takes).

    Parameters
    ----------
    noisy_val : dict or array_like
        ``{condition: (noisy, clean)}`` of validation image arrays (n, H, W), one entry per
        noise condition, each tuned on its own; or the noisy validation images of a single
        group (then ``clean_val`` holds their clean versions, and the group is ``"all"``).
    clean_val : array_like, optional
        The clean validation images when ``noisy_val`` is an array.
    methods : sequence of str
        The methods to try (default all of ``METHODS``; keep ``identity`` to never do worse
        than the noisy input).
    grid : dict, optional
        ``{method: sequence of parameter dicts}`` replacing ``CLASSICAL_GRID`` for those methods.

    Returns
    -------
    dict
        ``{condition: {"method", "params", "psnr", "noisy_psnr", "scores"}}``: the winner, its
        mean validation PSNR in dB, that of the noisy input, and every (method, params, mean
        PSNR) tried. Ties go to the first tried (identity first). A condition with identical
        noisy and clean images has infinite PSNR.
    """
    groups = _groups(noisy_val, clean_val)
    methods = tuple(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    for m in methods:
        checks.one_of("method", m, METHODS)
    grid = {**CLASSICAL_GRID, **(grid or {})}
    for m in grid:
        checks.one_of("grid method", m, METHODS)
    result = {}
    for cond, (noisy, clean) in groups.items():
        scores = []
        for m in methods:
            for params in grid[m]:
                scores.append((m, dict(params), float(np.mean(psnr(clean, denoise_classical(noisy, m, params))))))
        best = max(range(len(scores)), key=lambda i: (scores[i][2], -i))
        result[cond] = {"method": scores[best][0], "params": scores[best][1], "psnr": scores[best][2],
                        "noisy_psnr": float(np.mean(psnr(clean, noisy))), "scores": scores}
    return result


def classical_baseline(validation: dict, test_noisy: dict, **tune_kwargs) -> dict:
    """Tune on the validation set, then denoise the test set with each condition's winner.

    Parameters
    ----------
    validation : dict
        ``{condition: (noisy, clean)}`` validation images, as for ``tune_classical``.
    test_noisy : dict
        ``{condition: noisy test images}``: the noisy images only, so the clean test images
        cannot leak into the choice. Every condition must be in ``validation``.
    **tune_kwargs
        ``methods`` and ``grid`` for ``tune_classical``.

    Returns
    -------
    dict
        ``{"tuned": tune_classical's result, "denoised": {condition: float32 images}}``.
    """
    if not isinstance(test_noisy, dict):
        raise ValueError("test_noisy must be a dict {condition: noisy test images}")  # noqa: TRY004
    missing = set(test_noisy) - set(validation)
    if missing:
        raise ValueError(f"test conditions {sorted(map(str, missing))} have no validation data to tune on")
    tuned = tune_classical(validation, **tune_kwargs)
    denoised = {c: denoise_classical(x, tuned[c]["method"], tuned[c]["params"]) for c, x in test_noisy.items()}
    return {"tuned": tuned, "denoised": denoised}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def _pairs(clean, other):
    c, o = check_images(clean, name="clean"), check_images(other, name="other")
    _same_shape(c, o, "clean and other")
    return _batch(c).astype(np.float64), _batch(o).astype(np.float64)


def psnr(clean, other) -> np.ndarray:
    """Peak signal-to-noise ratio per image in dB, ``10 log10(1 / MSE)`` (data range 1, the
    log-normalised scale; ``skimage.metrics.peak_signal_noise_ratio``). Images (H, W) or
    (n, H, W); returns float64 (n,) (n = 1 for one image); identical images give inf."""
    from skimage.metrics import peak_signal_noise_ratio

    c, o = _pairs(clean, other)
    with np.errstate(divide="ignore"):
        return np.array([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(c, o)])


def ssim(clean, other) -> np.ndarray:
    """Structural similarity per image (``skimage.metrics.structural_similarity``, 7 x 7
    windows, data range 1). Images (H, W) or (n, H, W); returns float64 (n,), 1 = identical."""
    from skimage.metrics import structural_similarity

    c, o = _pairs(clean, other)
    return np.array([structural_similarity(a, b, data_range=1.0) for a, b in zip(c, o)])


def metric_table(clean, noisy: dict, best_classical: dict, dae: dict | None = None) -> dict:
    """Mean PSNR (dB) and SSIM per condition of the noisy input, the best classical denoiser and
    the DAE, all against the same clean images.

    Parameters
    ----------
    clean : array_like or dict
        The clean test images (n, H, W), shared by every condition, or ``{condition: images}``.
    noisy, best_classical : dict
        ``{condition: images}`` of the same shape as the clean ones.
    dae : dict, optional
        ``{condition: DAE output}``; the "dae" rows are left out when None.

    Returns
    -------
    dict
        ``{condition: {"noisy" | "best_classical" | "dae": {"psnr": mean, "ssim": mean}}}``.
    """
    outputs = {"noisy": noisy, "best_classical": best_classical}
    if dae is not None:
        outputs["dae"] = dae
    for key, d in outputs.items():
        if not isinstance(d, dict):
            raise ValueError(f"{key} must be a dict {{condition: images}}")  # noqa: TRY004 (as checks)
        if set(d) != set(noisy):
            raise ValueError(f"{key} has conditions {sorted(d)}; noisy has {sorted(noisy)}")
    table = {}
    for cond in noisy:
        ref = clean[cond] if isinstance(clean, dict) else clean
        table[cond] = {key: {"psnr": float(np.mean(psnr(ref, d[cond]))), "ssim": float(np.mean(ssim(ref, d[cond])))}
                       for key, d in outputs.items()}
    return table


@torch.no_grad()
def dae_outputs(model: torch.nn.Module, images, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A trained ``nets.DenoisingAutoencoder`` on log-normalised images (n, H, W), in eval mode
    on the model's device: (denoised images float32 (n, H, W), latent codes float32 (n, latent))."""
    x = _batch(check_images(images))
    batch_size = checks.integer("batch_size", batch_size, 1, 1 << 20)
    model.eval()
    device = next(model.parameters()).device
    out, codes = [], []
    for s in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size])).to(device)
        out.append(model(xb).cpu().numpy())
        codes.append(model.encode(xb).cpu().numpy())
    return np.concatenate(out).astype(np.float32), np.concatenate(codes).astype(np.float32)


# --------------------------------------------------------------------------------------------
# A simulated measurement series
# --------------------------------------------------------------------------------------------

#: Structures of a series: study 3's seven superlattice classes (same indices as
#: ``gisaxs.CLASS_NAMES``) and, last, dilute polydisperse spheres without a lattice.
SERIES_CLASSES = (*gisaxs.CLASS_NAMES, "disordered")
DISORDERED = len(gisaxs.CLASS_NAMES)
DISORDERED_RADIUS_NM = (3.0, 12.0)  # median sphere radius of a disordered segment, nm
DISORDERED_SIGMA_MAX = 0.3  # largest log-normal width of the radii
_N_RADII = 5  # radii (quantiles of the log-normal) averaged in a disordered image


def render_series_image(class_index: int, params: dict, config: dict) -> np.ndarray:
    """The clean log-normalised image (float32 (S, S)) of one series image from its class index
    (into ``SERIES_CLASSES``) and its recorded parameters, with the series' dataset config.

    Lattice classes: ``gisaxs_cnn.render``. Disordered: the mean linear intensity of one sphere
    (``render`` of a single cell) at ``n_radii`` radii, the quantiles of a log-normal of median
    ``radius_nm`` and width ``sigma_log``, then log-normalised (as
    ``gisaxs_cnn.isolated_sphere_images``).
    """
    c = checks.integer("class_index", class_index, 0, len(SERIES_CLASSES) - 1)
    if c != DISORDERED:
        return gisaxs_cnn.render(SERIES_CLASSES[c], params, config)
    n = checks.integer("n_radii", params["n_radii"], 1, 100)
    z = [NormalDist().inv_cdf((k + 0.5) / n) for k in range(n)]
    total = 0.0
    for r in float(params["radius_nm"]) * np.exp(float(params["sigma_log"]) * np.asarray(z)):
        one = {"lattice_nm": 4.0 * r, "radius_nm": float(r), "reps": (1, 1, 1),
               "alpha_i_deg": params["alpha_i_deg"], "angles_deg": [0.0]}
        total = total + gisaxs_cnn.render("SC[100]", one, config, normalise=False).astype(np.float64)
    return gisaxs.log_normalise(total / n, config["decades"])


def _segment_lengths(n: int, n_segments: int, rng) -> np.ndarray:
    """n split into n_segments contiguous parts, each at least n // (2 n_segments) long."""
    base = n // (2 * n_segments)
    extra = rng.multinomial(n - base * n_segments, rng.dirichlet(np.ones(n_segments)))
    return base + extra


def _segment_plan(cls: int, config: dict, drift: float, rng) -> dict:
    """What stays fixed in one segment, and where its drifting size starts and ends."""
    if cls == DISORDERED:
        lo, hi = DISORDERED_RADIUS_NM
        start = float(rng.uniform(lo, hi))
        return {"start": start, "end": float(np.clip(start * (1 + rng.uniform(-drift, drift)), lo, hi)),
                "sigma_log": float(rng.uniform(0.0, DISORDERED_SIGMA_MAX))}
    lo, hi = config["lattice_nm"]
    start = float(rng.uniform(lo, hi))
    return {"start": start, "end": float(np.clip(start * (1 + rng.uniform(-drift, drift)), lo, hi)),
            "radius_fraction": float(rng.uniform(*config["radius_fraction"])),
            "reps": int(rng.integers(config["reps"][0], config["reps"][1] + 1)),
            "reps_z": int(rng.integers(config["reps_z"][0], config["reps_z"][1] + 1)),
            "hexagon": bool(rng.uniform() < config["hexagon_fraction"])}


def _image_params(cls: int, plan: dict, t: float, alpha: float, config: dict, rng) -> dict:
    """One image's parameters at fraction t in [0, 1] of its segment (grain orientations drawn
    afresh from rng: every exposure sees other grains)."""
    size = plan["start"] + (plan["end"] - plan["start"]) * t
    if cls == DISORDERED:
        return {"radius_nm": size, "sigma_log": plan["sigma_log"], "alpha_i_deg": alpha, "n_radii": _N_RADII}
    fixed = gisaxs_cnn.dataset_config(**{
        **config, "lattice_nm": [size, size], "radius_fraction": [plan["radius_fraction"]] * 2,
        "reps": [plan["reps"]] * 2, "reps_z": [plan["reps_z"]] * 2, "alpha_i_deg": [alpha, alpha],
        "hexagon_fraction": 1.0 if plan["hexagon"] else 0.0})
    return gisaxs_cnn.sample_parameters(SERIES_CLASSES[cls], fixed, rng)


def measurement_series(n_images: int, seed: int, config: dict, *, n_segments: int = 4, lattice_classes=None,
                       start_disordered: bool = True, drift: float = 0.1, noise_kinds=NOISE_TYPES) -> dict:
    """A simulated annealing/deposition run: ``n_images`` GISAXS images in time order whose
    structure changes in ``n_segments`` contiguous segments.

    The plan (from ``seed``): segment lengths (each at least ``n_images // (2 n_segments)``);
    the structure of each segment, by default dilute disordered spheres first, then
    superlattice classes in a random order without repeating a class in consecutive segments;
    one incidence angle for the whole run; per lattice segment one radius fraction, cell
    counts and outline, and a lattice constant that drifts linearly from its start to its end
    value (a relative change of at most ``drift``, within the config's range; for the
    disordered segment the median radius drifts the same way, a slow ripening). Image ``i``
    draws its grain orientations and its noise (kind uniform over ``noise_kinds``, level from
    ``NOISE_LEVELS``) from its own generator ``default_rng([seed, 4004, i])``.

    Parameters
    ----------
    n_images : int
        Images in the series, at least 2 ``n_segments``.
    seed : int
        Everything is a function of (seed, arguments): the same seed gives identical arrays.
    config : dict
        A study-3 dataset config (``gisaxs_cnn.dataset_config`` keys: image size, supersample,
        n_orient, q window, parameter ranges, decades, substrate).
    n_segments : int
        Number of segments (structures) along the series.
    lattice_classes : sequence of str, optional
        The superlattice classes to use (default all of ``gisaxs.CLASS_NAMES``).
    start_disordered : bool
        Begin with a disordered segment (else every segment is a lattice).
    drift : float
        Largest relative change of the lattice constant (or radius) over a segment, in [0, 1).
    noise_kinds : sequence of str
        Noise kinds drawn per image (``NOISE_TYPES`` by default, ``none`` included).

    Returns
    -------
    dict
        images: float32 (n, S, S) noisy, log-normalised; clean: float32 (n, S, S) before noise;
        class_index: int64 (n,) into ``SERIES_CLASSES`` (the class actually rendered);
        segment: int64 (n,) 0, 1, ...; noise_kind: int64 (n,) into ``NOISE_TYPES``;
        noise_level: float64 (n,); severity: float64 (n,); lattice_nm: float64 (n,) (NaN for
        disordered images); params: list of n parameter dicts (``render_series_image`` takes
        them); classes: ``SERIES_CLASSES``; config: the validated config.
    """
    config = gisaxs_cnn.dataset_config(**config)
    n_segments = checks.integer("n_segments", n_segments, 1, 1000)
    n = checks.integer("n_images", n_images, 2 * n_segments, 10_000_000)
    seed = checks.integer("seed", seed, 0)
    drift = checks.number("drift", drift, 0.0, 1.0, hi_open=True)
    names = gisaxs.CLASS_NAMES if lattice_classes is None else tuple(lattice_classes)
    if not names:
        raise ValueError("lattice_classes must name at least one class")
    for name in names:
        checks.one_of("lattice class", name, gisaxs.CLASS_NAMES)
    kinds = tuple(noise_kinds)
    if not kinds:
        raise ValueError("noise_kinds must name at least one noise kind")
    for k in kinds:
        checks.one_of("noise kind", k, NOISE_TYPES)

    plan_rng = np.random.default_rng([seed, 4004])
    lengths = _segment_lengths(n, n_segments, plan_rng)
    order = [gisaxs.CLASS_NAMES.index(c) for c in plan_rng.permutation(np.array(names))]
    seg_class = [DISORDERED] if start_disordered else []
    while len(seg_class) < n_segments:
        seg_class.append(order[(len(seg_class) - bool(start_disordered)) % len(order)])
    alpha = float(plan_rng.uniform(*config["alpha_i_deg"]))
    plans = [_segment_plan(c, config, drift, plan_rng) for c in seg_class]

    segment = np.repeat(np.arange(n_segments), lengths).astype(np.int64)
    class_index = np.asarray(seg_class, dtype=np.int64)[segment]
    size = config["image_size"]
    clean = np.empty((n, size, size), dtype=np.float32)
    images = np.empty_like(clean)
    noise_kind = np.empty(n, dtype=np.int64)
    noise_level = np.empty(n, dtype=np.float64)
    lattice = np.full(n, np.nan)
    params = []
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(n):
        s = segment[i]
        t = (i - starts[s]) / max(lengths[s] - 1, 1)
        rng = np.random.default_rng([seed, 4004, i])
        p = _image_params(int(class_index[i]), plans[s], t, alpha, config, rng)
        params.append(p)
        if class_index[i] != DISORDERED:
            lattice[i] = p["lattice_nm"]
        clean[i] = render_series_image(int(class_index[i]), p, config)
        kind = kinds[int(rng.integers(0, len(kinds)))]
        noise_kind[i], noise_level[i] = NOISE_TYPES.index(kind), _draw_level(kind, rng, False)
        images[i] = apply_noise(clean[i], kind, noise_level[i], rng, config["decades"])
    sev = np.array([severity(NOISE_TYPES[k], v) for k, v in zip(noise_kind, noise_level)])
    return {"images": images, "clean": clean, "class_index": class_index, "segment": segment,
            "noise_kind": noise_kind, "noise_level": noise_level, "severity": sev, "lattice_nm": lattice,
            "params": params, "classes": SERIES_CLASSES, "config": config}


# --------------------------------------------------------------------------------------------
# Binning by clustering, and outliers in latent space
# --------------------------------------------------------------------------------------------

def _codes(codes, name: str = "codes", min_rows: int = 2) -> np.ndarray:
    c = checks.array(name, codes, ndim=2)
    if len(c) < min_rows:
        raise ValueError(f"{name} has {len(c)} rows; expected at least {min_rows}")
    return c


def cluster_codes(codes, n_clusters: int, seed: int = 0, *, standardise: bool = True) -> np.ndarray:
    """k-means cluster labels (int64 (n,)) of feature vectors ``codes`` (n, d).

    Each feature is standardised to zero mean and unit variance first (latent dimensions have
    no common unit); ``standardise=False`` keeps the features' own scale (pixels, which share
    one). ``sklearn.cluster.KMeans`` with 10 initialisations, seeded.
    """
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    c = _codes(codes)
    k = checks.integer("n_clusters", n_clusters, 1, len(c))
    if standardise:
        c = StandardScaler().fit_transform(c)
    km = KMeans(n_clusters=k, n_init=10, random_state=checks.integer("seed", seed, 0, 2**32 - 1))
    return km.fit_predict(c).astype(np.int64)


def binning_scores(images, labels, codes=None, n_clusters: int | None = None, seed: int = 0, *,
                   n_components: int = 20) -> dict:
    """How well k-means bins images by their true labels, from three representations.

    Parameters
    ----------
    images : array_like
        Log-normalised images (n, H, W).
    labels : array_like
        The true bin of each image (n,), e.g. a series' ``class_index`` or ``segment``.
    codes : array_like, optional
        Latent codes (n, d) of the same images (e.g. from ``dae_outputs``).
    n_clusters : int, optional
        k of k-means (default: the number of distinct labels).
    seed : int
        Seed of k-means and of the PCA.
    n_components : int
        Principal components kept for "pca" (at most n - 1 and the pixel count).

    Returns
    -------
    dict
        Adjusted Rand index (1 = the true binning, about 0 = chance) for "pixels" (k-means on
        the raw log-normalised pixels), "pca" (on the leading principal components of the
        pixels) and "dae" (on the standardised codes; only when codes is given).
    """
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    x = _batch(check_images(images))
    y = np.asarray(labels)
    if y.shape != (len(x),):
        raise ValueError(f"labels have shape {y.shape}; expected ({len(x)},), one per image")
    k = len(np.unique(y)) if n_clusters is None else checks.integer("n_clusters", n_clusters, 1, len(x))
    flat = x.reshape(len(x), -1).astype(np.float64)
    n_comp = checks.integer("n_components", n_components, 1, 100_000)
    n_comp = min(n_comp, len(x) - 1, flat.shape[1])
    if n_comp < 1:
        raise ValueError("binning needs at least 2 images")
    out = {"pixels": adjusted_rand_score(y, cluster_codes(flat, k, seed, standardise=False))}
    pcs = PCA(n_components=n_comp, random_state=seed).fit_transform(flat)
    out["pca"] = adjusted_rand_score(y, cluster_codes(pcs, k, seed, standardise=False))
    if codes is not None:
        c = _codes(codes)
        if len(c) != len(x):
            raise ValueError(f"codes have {len(c)} rows for {len(x)} images")
        out["dae"] = adjusted_rand_score(y, cluster_codes(c, k, seed))
    return {key: float(v) for key, v in out.items()}


def outlier_score(train_codes, codes, *, ridge: float = 1e-6) -> np.ndarray:
    """Mahalanobis distance of each code from the training codes' distribution: higher = less
    like the training data.

    Each latent dimension is centred and scaled by its training standard deviation (a constant
    dimension by 1), the correlation matrix of the training codes is diagonalised (a PCA
    whitening), and ``ridge`` is added to its eigenvalues so that directions the training codes
    do not vary in stay finite. The score is the length of the whitened code: unchanged when a
    latent dimension is rescaled. Returns float64 (m,) for codes (m, d).
    """
    t = _codes(train_codes, "train_codes")
    c = checks.array("codes", codes, ndim=2)
    if c.shape[1] != t.shape[1]:
        raise ValueError(f"codes have {c.shape[1]} dimensions; the training codes have {t.shape[1]}")
    ridge = checks.number("ridge", ridge, 0.0, 1.0, lo_open=True)
    mean, std = t.mean(axis=0), t.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    zt, zc = (t - mean) / std, (c - mean) / std
    var, vecs = np.linalg.eigh(np.atleast_2d(np.cov(zt, rowvar=False)))
    w = (zc @ vecs) / np.sqrt(np.maximum(var, 0.0) + ridge)
    return np.sqrt((w * w).sum(axis=1))


def false_alarm_threshold(train_codes, val_codes, rate: float = 0.01) -> float:
    """The ``outlier_score`` above which only a fraction ``rate`` of in-distribution images
    fall: the (1 - rate) quantile of the scores of held-out in-distribution codes
    ``val_codes`` against ``train_codes``.

    Held-out codes, not the training codes themselves: the training codes shaped the mean and
    covariance, so their own scores are biased low and a threshold set on them would flag more
    than ``rate`` of new in-distribution images.
    """
    rate = checks.number("rate", rate, 0.0, 0.5, lo_open=True)
    scores = outlier_score(train_codes, _codes(val_codes, "val_codes", 1))
    return float(np.quantile(scores, 1.0 - rate))


# --------------------------------------------------------------------------------------------
# The study's pipeline: sizes, the network, its training, and the four scores
# --------------------------------------------------------------------------------------------

#: Profile sizes. The images are study 3's data set of the same profile
#: (``gisaxs_cnn.load_data(profile)``: 32, 64, 125 px); the last ``n_val`` images of its
#: training set are the DAE's validation images (noisy once, fixed), the first ``n_tune`` of
#: them the validation images on which the classical denoisers are tuned per condition, and the
#: DAE trains on the first ``n_train`` of the others (None: all), with fresh noise every epoch.
#: Network: ``nets.DenoisingAutoencoder`` with ``width``, ``latent`` and ``skips``, trained for
#: ``epochs`` with Adam at batch size ``batch_size`` and a one-cycle learning rate peaking at
#: ``lr``; the first ``noise_code`` numbers of the code feed a read-out of the noise, weighted
#: ``noise_weight`` in the loss (``noise_aware_loss``). At standard, against a plain DAE trained
#: the same way (``experiment("plain")``): the noise kind of 97.6 % of held-out images named
#: instead of 65 %, for 0.9 dB of PSNR and 0.08 of binning ARI (8 epochs with a weight of
#: 0.001, 0.002 or 0.01 named no more, denoised and binned worse). Noise head: fitted on the
#: noise parts of the codes of
#: ``n_head`` noisy training images. Scores: the
#: first ``n_test`` images of study 3's test set (None: all), under every study-3 condition;
#: a measurement series of ``series_length`` images in ``n_segments`` segments. ``threads``:
#: torch CPU threads (None: torch's default). ``seed``: the DAE's weights, its noise draws, the
#: series and the test noise.
SIZES = {
    "quick": {"image_size": 32, "width": 8, "latent": 32, "noise_code": 8, "noise_weight": 0.002, "skips": False,
              "epochs": 15, "batch_size": 64,
              "lr": 3e-3, "threads": 2, "n_train": None, "n_val": 200, "n_tune": 30, "n_head": 1000,
              "n_test": 350, "series_length": 200, "n_segments": 4, "seed": 4},
    "standard": {"image_size": 64, "width": 12, "latent": 64, "noise_code": 16, "noise_weight": 0.002, "skips": False,
                 "epochs": 12, "batch_size": 64,
                 "lr": 3e-3, "threads": 2, "n_train": 6000, "n_val": 500, "n_tune": 50, "n_head": 3000,
                 "n_test": 500, "series_length": 500, "n_segments": 5, "seed": 4},
    "paper": {"image_size": 125, "width": 32, "latent": 128, "noise_code": 32, "noise_weight": 0.002, "skips": False,
              "epochs": 30, "batch_size": 128,
              "lr": 2e-3, "threads": None, "n_train": None, "n_val": 2000, "n_tune": 100, "n_head": 20000,
              "n_test": None, "series_length": 1000, "n_segments": 6, "seed": 4},
}

#: The keys ``train_dae`` needs from a size table (the others are ``run_study``'s).
DAE_KEYS = ("width", "latent", "skips", "epochs", "batch_size", "lr", "seed")


def profile_sizes(profile: str | None = None) -> dict:
    """This study's sizes at ``profile`` (default: the current one), a copy of ``SIZES[profile]``."""
    return profiles.pick(SIZES, profile)


def _seed(sizes: dict) -> int:
    return checks.integer("seed", sizes["seed"], 0, 2**32 - 1)


class PaddedAutoencoder(torch.nn.Module):
    """A ``nets.DenoisingAutoencoder`` for images whose side is not a multiple of 8 (study 3's
    125 px at the paper profile): the input is padded at its high-q_z and high-q_y edges (the end
    of each axis) by repeating the last row/column up to the inner network's size, and the output
    is cropped back. ``image_size`` is the outer size, ``encode`` the inner network's code."""

    def __init__(self, inner: torch.nn.Module, image_size: int):
        super().__init__()
        self.inner = inner
        self.image_size = checks.integer("image_size", image_size, MIN_IMAGE_PX, inner.image_size)
        self.latent = inner.latent
        self.config = {**inner.config, "image_size": self.image_size, "inner_size": inner.image_size}

    def _pad(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError("x must be a floating torch.Tensor of images (batch, H, W)")
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.image_size, self.image_size):
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (batch, {self.image_size}, {self.image_size})")
        p = self.inner.image_size - self.image_size
        return torch.nn.functional.pad(x[:, None], (0, p, 0, p), mode="replicate")[:, 0]

    def encode(self, x) -> torch.Tensor:
        """The latent code (batch, latent) of images (batch, S, S)."""
        return self.inner.encode(self._pad(x))

    def forward(self, x) -> torch.Tensor:
        """The denoised images (batch, S, S)."""
        return self.inner(self._pad(x))[:, :self.image_size, :self.image_size]

    def decode_with_code(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoised images (batch, S, S) and their codes, in one pass."""
        out, z = self.inner.decode_with_code(self._pad(x))
        return out[:, :self.image_size, :self.image_size], z

    def read_out(self, z) -> torch.Tensor:
        """The inner network's auxiliary outputs of codes z."""
        return self.inner.read_out(z)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_dae(image_size: int, sizes: dict, *, skips: bool | None = None) -> torch.nn.Module:
    """The study's denoising autoencoder for square images of ``image_size`` px.

    Parameters
    ----------
    image_size : int
        Side of the images in px (at least 8). A side that is not a multiple of 8 gets a
        ``PaddedAutoencoder`` around a network of the next multiple of 8.
    sizes : dict
        A size table with ``width`` (channels of the first stage), ``latent`` (length of the
        code), ``skips`` and ``seed``.
    skips : bool, optional
        U-Net skip connections (default: ``sizes["skips"]``).

    Returns
    -------
    torch.nn.Module
        The network on the CPU, its initial weights drawn from ``sizes["seed"]`` without
        touching torch's global generator.
    """
    size = checks.integer("image_size", image_size, MIN_IMAGE_PX, 1024)
    inner = -(-size // 8) * 8
    skips = bool(sizes["skips"] if skips is None else skips)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(sizes))
        code = noise_code_length(sizes)
        net = nets.DenoisingAutoencoder(inner, width=sizes["width"], latent=sizes["latent"], skips=skips,
                                        aux_outputs=len(NOISE_TYPES) + 1 if code else 0, aux_latent=code)
    return net if inner == size else PaddedAutoencoder(net, size)


def noise_code_length(sizes: dict) -> int:
    """How many numbers at the start of the code are trained to carry the noise (``noise_code``;
    0: a plain DAE)."""
    return checks.integer("noise_code", sizes.get("noise_code", 0), 0, sizes["latent"])


def split_code(model: torch.nn.Module, codes) -> tuple[np.ndarray, np.ndarray]:
    """The noise part and the structure part of codes (n, latent) of a DAE from ``build_dae``.

    The first ``noise_code`` numbers are the noise part (trained to name the noise,
    ``noise_aware_loss``), the rest the structure part. A plain DAE (``noise_code`` 0) has no
    split: both parts are the whole code.
    """
    c = _codes(codes, min_rows=1)
    n = int(getattr(model, "inner", model).aux_latent)
    if c.shape[1] != model.latent:
        raise ValueError(f"codes have {c.shape[1]} numbers; the model's code has {model.latent}")
    return (c[:, :n], c[:, n:]) if n else (c, c)


def noise_aware_loss(weight: float):
    """The training loss of a DAE with a noise read-out, for ``training.fit``.

    On a batch (noisy, clean, kind_index, severity): the mean squared error of the denoised
    images (``nets.denoising_loss``) plus ``weight`` times the read-out's cross-entropy for the
    noise kind (its first ``len(NOISE_TYPES)`` outputs) and its squared error for the severity
    (the last output). The read-out is linear in the noise part of the code, so that part has
    to hold the noise's kind and strength in a form a linear head can read.
    """
    weight = checks.number("noise_weight", weight, 0.0, 1e6)
    n_kinds = len(NOISE_TYPES)

    def loss(model, batch):
        noisy, clean, kind, sev = batch
        out, z = model.decode_with_code(noisy)
        aux = model.read_out(z)
        named = torch.nn.functional.cross_entropy(aux[:, :n_kinds], kind)
        strength = torch.nn.functional.mse_loss(aux[:, n_kinds], sev.to(aux.dtype))
        return torch.nn.functional.mse_loss(out, clean) + weight * (named + strength)

    return loss


def train_dae(clean_train, clean_val, sizes: dict, *, skips: bool | None = None, progress: bool = True,
              threads: int | None = None, device=None):
    """Train the study's DAE on (noisy, clean) pairs of log-normalised images.

    Every epoch draws **fresh noise** on every clean training image: one (kind, level) per image
    from the whole catalogue (``random_noise`` over all ``NOISE_TYPES``, ``none`` included, so
    a fifth of the inputs are clean and the network learns to leave them alone), seeded by
    (seed, epoch), so a resumed or repeated run sees the same draws. The validation pairs are
    drawn once and stay fixed; the weights of the epoch with the lowest validation loss are
    kept. Adam with a one-cycle learning rate.

    The loss is the mean squared error against the clean image (``nets.denoising_loss``). With
    ``noise_code`` > 0, the first ``noise_code`` numbers of the code also feed a linear
    read-out of the noise's kind and severity, trained with ``noise_aware_loss(noise_weight)``:
    a plain DAE is rewarded for discarding the noise from its code, and this keeps it in a part
    of the code set aside for it (``split_code``).

    Parameters
    ----------
    clean_train, clean_val : array_like
        Clean log-normalised images (n, S, S) in [0, 1], S >= 8 (the same S for both).
    sizes : dict
        ``width``, ``latent``, ``skips``, ``epochs``, ``batch_size``, ``lr`` (peak learning
        rate), ``seed``; optionally ``threads``, and ``noise_code`` with ``noise_weight``.
    skips : bool, optional
        Override ``sizes["skips"]``.
    progress : bool
        Show a progress bar.
    threads : int, optional
        torch CPU threads during training (default ``sizes.get("threads")``; None leaves
        torch's setting).
    device : str or torch.device, optional
        Default: CUDA when available (``backend.torch_device``).

    Returns
    -------
    model : torch.nn.Module
        The trained network in eval mode (``build_dae``).
    history : training.History
        Training and validation loss per epoch.
    """
    xt = _batch(check_images(clean_train, name="clean_train"))
    xv = _batch(check_images(clean_val, name="clean_val"))
    if xt.shape[1:] != xv.shape[1:]:
        raise ValueError(f"clean_train and clean_val differ in image size: {xt.shape[1:]} and {xv.shape[1:]}")
    missing = [k for k in DAE_KEYS if k not in sizes]
    if missing:
        raise ValueError(f"sizes lacks {missing}; train_dae needs {', '.join(DAE_KEYS)}")
    seed = _seed(sizes)
    aware = noise_code_length(sizes) > 0
    if aware and "noise_weight" not in sizes:
        raise ValueError(f"sizes has noise_code={sizes['noise_code']} but no noise_weight (the read-out loss's weight)")
    model = build_dae(xt.shape[-1], sizes, skips=skips)
    val = random_noise(xv, np.random.default_rng([seed, 4099]))
    last: dict = {}

    def pairs(noisy, clean, kind, level):
        if not aware:
            return noisy, clean
        return noisy, clean, kind, _severities(kind, level).astype(np.float32)

    def epoch_data(epoch: int):
        if epoch not in last:  # fit asks for epoch 0 twice; keep only the latest draw
            last.clear()
            noisy, kind, level = random_noise(xt, np.random.default_rng([seed, 4100, int(epoch)]))
            last[epoch] = pairs(noisy, xt, kind, level)
        return last[epoch]

    epochs = checks.integer("epochs", sizes["epochs"], 1, 100_000)
    config = TrainConfig(epochs=epochs, batch_size=checks.integer("batch_size", sizes["batch_size"], 1),
                         lr=checks.positive("lr", sizes["lr"], 1.0), schedule="onecycle", patience=epochs,
                         seed=seed, progress=progress)
    threads = sizes.get("threads") if threads is None else threads
    with training.torch_threads(threads):
        loss = noise_aware_loss(sizes["noise_weight"]) if aware else nets.denoising_loss
        history = fit(model, loss, epoch_data(0), pairs(val[0], xv, val[1], val[2]), config, device=device,
                      epoch_data=epoch_data)
    return model.eval(), history


# --- naming the noise from the latent code ----------------------------------------------------

@dataclass
class NoiseHead:
    """The fitted noise head of ``noise_head``: ``kind`` classifies the noise kind (indices into
    ``NOISE_TYPES``), ``severity`` regresses the severity; both are scikit-learn pipelines on
    standardised codes of ``n_features`` dimensions."""

    kind: object
    severity: object
    n_features: int


def _labels(kind_index, severity_, n: int):
    k = np.asarray(kind_index)
    s = np.asarray(severity_, dtype=np.float64)
    if k.shape != (n,) or s.shape != (n,):
        raise ValueError(f"kind_index {k.shape} and severity {s.shape} must both have shape ({n},), one per code")
    if not np.issubdtype(k.dtype, np.integer) or k.min() < 0 or k.max() >= len(NOISE_TYPES):
        raise ValueError(f"kind_index must hold integers in [0, {len(NOISE_TYPES) - 1}] (indices into NOISE_TYPES)")
    if not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError("severity must hold finite numbers in [0, 1] (see severity())")
    return k.astype(np.int64), s


def noise_head(codes, kind_index, severity, *, C: float = 1.0, alpha: float = 1.0) -> NoiseHead:
    """Fit the noise head on latent codes: which kind of noise an image carries, and how strong.

    Parameters
    ----------
    codes : array_like
        Latent codes (n, d) of noisy images (``dae_outputs``).
    kind_index : array_like
        The true kind of each image (n,), an index into ``NOISE_TYPES``; at least two kinds.
    severity : array_like
        The true severity of each image (n,) in [0, 1] (``severity`` of its kind and level).
    C : float
        Inverse L2 regularisation strength of the logistic regression.
    alpha : float
        L2 penalty of the ridge regression.

    Returns
    -------
    NoiseHead
        kind: ``StandardScaler`` + multinomial ``LogisticRegression``; severity:
        ``StandardScaler`` + ``Ridge``.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    c = _codes(codes)
    k, s = _labels(kind_index, severity, len(c))
    if len(np.unique(k)) < 2:
        raise ValueError("kind_index holds a single noise kind; the head needs at least two to tell apart")
    kind = make_pipeline(StandardScaler(), LogisticRegression(C=checks.positive("C", C), max_iter=2000))
    reg = make_pipeline(StandardScaler(), Ridge(alpha=checks.positive("alpha", alpha)))
    return NoiseHead(kind.fit(c, k), reg.fit(c, s), c.shape[1])


def identify_noise(head: NoiseHead, codes):
    """The noise head's answer for latent codes (n, d).

    Returns
    -------
    kind_index : numpy.ndarray
        int64 (n,), the most probable kind, an index into ``NOISE_TYPES``.
    probabilities : numpy.ndarray
        float64 (n, 5), the probability of each kind in ``NOISE_TYPES`` order (0 for kinds the
        head never saw).
    severity : numpy.ndarray
        float64 (n,), the regressed severity clipped to [0, 1].
    """
    c = _codes(codes, min_rows=1)
    if c.shape[1] != head.n_features:
        raise ValueError(f"codes have {c.shape[1]} dimensions; the head was fitted on {head.n_features}")
    probs = np.zeros((len(c), len(NOISE_TYPES)))
    probs[:, head.kind.classes_] = head.kind.predict_proba(c)
    sev = np.clip(head.severity.predict(c), 0.0, 1.0)
    return probs.argmax(axis=1).astype(np.int64), probs, sev


def noise_id_scores(head: NoiseHead, codes, kind_index, severity) -> dict:
    """How well the noise head names the noise of held-out images.

    Returns
    -------
    dict
        accuracy: fraction of images whose kind is right (chance 1/5 for the uniform draw of
        ``random_noise``); confusion: int64 (5, 5), counts[i, j] of true kind i named j
        (``NOISE_TYPES`` order); severity_r2: coefficient of determination of the regressed
        severity (1 = exact, 0 = no better than the mean).
    """
    from sklearn.metrics import r2_score

    c = _codes(codes, min_rows=1)
    k, s = _labels(kind_index, severity, len(c))
    pred, _, sev = identify_noise(head, c)
    return {"accuracy": float((pred == k).mean()),
            "confusion": gisaxs_cnn.confusion_matrix(k, pred, len(NOISE_TYPES)),
            "severity_r2": float(r2_score(s, sev)) if len(s) > 1 else math.nan}


def estimate_noise(model: torch.nn.Module, head: NoiseHead, image):
    """What the latent code says about the noise of one measured image.

    Parameters
    ----------
    model : torch.nn.Module
        The trained DAE (``train_dae``).
    head : NoiseHead
        Its noise head (``noise_head``).
    image : array_like
        One log-normalised image (S, S) in [0, 1], already resampled to the model's size
        ``model.image_size`` and preprocessed as study 3's images (``gisaxs.log_normalise``).

    Returns
    -------
    kind : str
        The most probable noise kind, one of ``NOISE_TYPES``.
    severity : float
        Its strength in [0, 1] (``severity``).
    probabilities : dict
        ``{kind: probability}`` over ``NOISE_TYPES``.

    Raises
    ------
    ValueError
        Not one finite square image in [0, 1] of the model's size.
    """
    x = check_images(image, name="image")
    if x.ndim != 2:
        raise ValueError(f"image has shape {x.shape}; expected one image ({model.image_size}, {model.image_size})")
    if x.shape != (model.image_size, model.image_size):
        raise ValueError(f"image has shape {x.shape}; the model takes ({model.image_size}, {model.image_size}): "
                         "resample the image to the model's size first")
    _, codes = dae_outputs(model, x)
    k, probs, sev = identify_noise(head, split_code(model, codes)[0])
    return NOISE_TYPES[int(k[0])], float(sev[0]), {n: float(p) for n, p in zip(NOISE_TYPES, probs[0])}


# --- denoising against the classical baselines, and the classifier's rescue -------------------

def _size_matches(model, x: np.ndarray, name: str) -> None:
    if x.shape[-1] != model.image_size:
        raise ValueError(f"{name} are {x.shape[-1]} px; the model takes {model.image_size} px")


def denoising_scores(model: torch.nn.Module, clean_test, validation_clean, seed: int, *,
                     conditions=gisaxs_cnn.CONDITIONS, methods=METHODS, n_examples: int = 4) -> dict:
    """PSNR and SSIM of the noisy input, the best classical denoiser and the DAE under each of
    study 3's noise conditions.

    The noisy test images are ``gisaxs_cnn.apply_condition`` with
    ``gisaxs_cnn.condition_rng(seed, condition)`` (so with study 3's seed they are study 3's
    noisy test sets); the classical denoisers are tuned per condition on noisy versions of the
    **validation** images only (their own generator), then applied to the noisy test images
    (``classical_baseline``).

    Parameters
    ----------
    model : torch.nn.Module
        The trained DAE.
    clean_test : array_like
        Clean log-normalised test images (n, S, S), S = ``model.image_size``.
    validation_clean : array_like
        Clean validation images (m, S, S), disjoint from the test images.
    seed : int
        Seed of the test noise; the validation noise uses (seed, 4200, condition index).
    conditions : sequence of str
        Study 3's conditions to score (default all of ``gisaxs_cnn.CONDITIONS``).
    methods : sequence of str
        Classical methods tried (default all of ``METHODS``).
    n_examples : int
        Images per condition kept for figures.

    Returns
    -------
    dict
        table: ``metric_table`` per condition; psnr_db, ssim: ``{"noisy", "best_classical",
        "dae"}`` means over the conditions except ``clean`` (where the noisy input's PSNR is
        infinite); psnr_gain_db: mean DAE PSNR minus mean best-classical PSNR, dB; tuned:
        ``{condition: {"method", "params", "psnr"}}`` (validation PSNR, dB); examples:
        ``{condition: {"clean", "noisy", "best_classical", "dae"}}`` of the first
        ``n_examples`` test images.
    """
    x = _batch(check_images(clean_test, name="clean_test"))
    v = _batch(check_images(validation_clean, name="validation_clean"))
    _size_matches(model, x, "clean_test")
    _size_matches(model, v, "validation_clean")
    seed = checks.integer("seed", seed, 0)
    conditions = tuple(conditions)
    for c in conditions:
        checks.one_of("condition", c, gisaxs_cnn.CONDITIONS)
    n_ex = checks.integer("n_examples", n_examples, 0, len(x))
    table, tuned, examples = {}, {}, {}
    for c in conditions:  # one condition at a time: only its images are held in memory
        noisy = gisaxs_cnn.apply_condition(x, c, gisaxs_cnn.condition_rng(seed, c))
        val_rng = np.random.default_rng([seed, 4200, gisaxs_cnn.CONDITIONS.index(c)])
        base = classical_baseline({c: (gisaxs_cnn.apply_condition(v, c, val_rng), v)}, {c: noisy}, methods=methods)
        den = dae_outputs(model, noisy)[0]
        table.update(metric_table(x, {c: noisy}, base["denoised"], dae={c: den}))
        tuned[c] = {k: base["tuned"][c][k] for k in ("method", "params", "psnr")}
        examples[c] = {"clean": x[:n_ex], "noisy": noisy[:n_ex], "best_classical": base["denoised"][c][:n_ex],
                       "dae": den[:n_ex]}
    scored = [c for c in conditions if c != "clean"] or list(conditions)
    means = {m: {key: float(np.mean([table[c][key][m] for c in scored])) for key in ("noisy", "best_classical", "dae")}
             for m in ("psnr", "ssim")}
    return {"table": table, "psnr_db": means["psnr"], "ssim": means["ssim"],
            "psnr_gain_db": means["psnr"]["dae"] - means["psnr"]["best_classical"], "tuned": tuned,
            "examples": examples}


def rescue_scores(classifier: torch.nn.Module, model: torch.nn.Module, test_images, test_labels, seed: int,
                  conditions=gisaxs_cnn.CONDITIONS, *, augmented: torch.nn.Module | None = None) -> dict:
    """Does denoising rescue study 3's classifier? Its accuracy on noisy test images and on the
    same images after the DAE.

    Parameters
    ----------
    classifier : torch.nn.Module
        Study 3's classifier (e.g. ``gisaxs_cnn.run_clean(...).model``), trained on clean images.
    model : torch.nn.Module
        The trained DAE, for the same image size.
    test_images : array_like
        Clean log-normalised test images (n, S, S).
    test_labels : array_like
        Their class indices (n,) into ``gisaxs.CLASS_NAMES``.
    seed : int
        Seed of the noise: ``gisaxs_cnn.condition_rng(seed, condition)``, as ``denoising_scores``.
    conditions : sequence of str
        Study 3's conditions (default all).
    augmented : torch.nn.Module, optional
        Study 3's noise-augmented classifier (``gisaxs_cnn.train_augmented``), scored on the same
        noisy images for comparison.

    Returns
    -------
    dict
        ``{"noisy": {condition: accuracy}, "denoised": {condition: accuracy}}`` (and
        ``"augmented"`` with ``augmented``), fractions in [0, 1].
    """
    x = _batch(check_images(test_images, name="test_images"))
    _size_matches(model, x, "test_images")
    y = np.asarray(test_labels)
    if y.shape != (len(x),):
        raise ValueError(f"test_labels have shape {y.shape}; expected ({len(x)},), one per image")
    seed = checks.integer("seed", seed, 0)
    out = {"noisy": {}, "denoised": {}, **({"augmented": {}} if augmented is not None else {})}
    for c in conditions:
        noisy = gisaxs_cnn.apply_condition(x, c, gisaxs_cnn.condition_rng(seed, c))
        den = dae_outputs(model, noisy)[0]
        acc = gisaxs_cnn.accuracy_on(classifier, {"noisy": noisy, "denoised": den}, y, threads=None)
        out["noisy"][c], out["denoised"][c] = acc["noisy"], acc["denoised"]
        if augmented is not None:
            out["augmented"][c] = gisaxs_cnn.accuracy_on(augmented, {c: noisy}, y, threads=None)[c]
    return out


def class_probe(model: torch.nn.Module, train_images, train_labels, test_sets: dict, test_labels, *,
                C: float = 1.0) -> dict:
    """How much of the structure class the structure part of the code holds: a linear probe
    (standardised codes, multinomial logistic regression) fitted on the codes of clean training
    images and scored on the codes of each test set.

    Set beside ``rescue_scores``, it tells where a lost class goes: if the probe reads the class
    from the code but study 3's classifier cannot read it from the decoded image, the decoder
    drops it; if the probe fails too, the code never held it.

    Parameters
    ----------
    model : torch.nn.Module
        The trained DAE.
    train_images, train_labels : array_like
        Clean images (n, S, S) and their class indices (n,) to fit the probe on.
    test_sets : dict
        ``{name: images (m, S, S)}``, e.g. the test images under each condition.
    test_labels : array_like
        Class indices (m,) of the test images (the same for every set).
    C : float
        Inverse L2 regularisation strength.

    Returns
    -------
    dict
        ``{name: accuracy}``, fractions in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _batch(check_images(train_images, name="train_images"))
    y, yt = np.asarray(train_labels), np.asarray(test_labels)
    if y.shape != (len(x),):
        raise ValueError(f"train_labels have shape {y.shape}; expected ({len(x)},), one per image")
    structure = split_code(model, dae_outputs(model, x)[1])[1]
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=checks.positive("C", C), max_iter=2000))
    probe.fit(structure, y)
    out = {}
    for name, images in test_sets.items():
        xs = _batch(check_images(images, name=f"test_sets[{name!r}]"))
        if yt.shape != (len(xs),):
            raise ValueError(f"test_labels have shape {yt.shape}; test_sets[{name!r}] holds {len(xs)} images")
        out[name] = float((probe.predict(split_code(model, dae_outputs(model, xs)[1])[1]) == yt).mean())
    return out


# --- binning a measurement series -------------------------------------------------------------

def series_scores(model: torch.nn.Module, sizes: dict, config: dict, *, head: NoiseHead | None = None) -> dict:
    """Bin a simulated measurement series by k-means on the structure part of the DAE's latent
    codes (``split_code``), on the pixels and on their principal components, and score each
    binning against the true structure.

    Parameters
    ----------
    model : torch.nn.Module
        The trained DAE, for ``config["image_size"]`` px.
    sizes : dict
        ``series_length`` (images), ``n_segments`` and ``seed`` (``measurement_series``).
    config : dict
        Study 3's dataset config (``gisaxs_cnn.load_data(profile)["config"]``).
    head : NoiseHead, optional
        With a noise head, the noise of every series image is also named (``noise_id``).

    Returns
    -------
    dict
        ari: adjusted Rand index ``{"dae", "pixels", "pca"}`` against ``class_index`` with k =
        the number of distinct structures in the series (``binning_scores``); codes: float32
        (n, d), the structure parts of the codes; clusters: int64 (n,), their k-means bins;
        class_index, segment, noise_kind, severity: the series' labels; images: the noisy
        series (n, S, S); noise_id: ``noise_id_scores`` of the noise parts (with ``head``,
        fitted on noise parts, only).
    """
    seed = _seed(sizes)
    series = measurement_series(sizes["series_length"], seed, config, n_segments=sizes["n_segments"])
    _size_matches(model, series["images"], "series images")
    _, codes = dae_outputs(model, series["images"])
    noise, structure = split_code(model, codes)
    labels = series["class_index"]
    k = len(np.unique(labels))
    out = {"ari": binning_scores(series["images"], labels, structure, n_clusters=k, seed=seed), "codes": structure,
           "clusters": cluster_codes(structure, k, seed)}
    out.update({key: series[key] for key in ("class_index", "segment", "noise_kind", "severity", "images")})
    if head is not None:
        out["noise_id"] = noise_id_scores(head, noise, series["noise_kind"], series["severity"])
    return out


# --- the poster's last step: a measurement's noise applied to simulations ----------------------

def noise_to_apply(kind: str, severity_: float, probabilities: dict) -> tuple[str, float]:
    """The catalogue noise to put on simulations for a measurement whose code says (kind,
    severity, probabilities) (``estimate_noise``): that kind at the catalogue level whose severity
    is nearest; if the kind is ``none``, the most probable kind that has noise (``none`` leaves
    nothing to apply).

    Returns
    -------
    kind : str
        A kind of ``NOISE_TYPES`` other than ``none``.
    level : float
        One of ``NOISE_LEVELS[kind]``.
    """
    checks.one_of("kind", kind, NOISE_TYPES)
    sev = checks.number("severity", severity_, 0.0, 1.0)
    if set(probabilities) != set(NOISE_TYPES):
        raise ValueError(f"probabilities must give one number per kind of {NOISE_TYPES}")
    if kind == "none":
        kind = max((k for k in NOISE_TYPES if k != "none"), key=probabilities.get)
    level = min(NOISE_LEVELS[kind], key=lambda v: abs(severity(kind, v) - sev))
    return kind, float(level)


def fine_tune_on_noise(classifier: torch.nn.Module, train, val, kind: str, level: float, sizes3: dict, seed: int, *,
                       epochs: int = 2, fraction: float = 0.5, progress: bool = False):
    """A copy of study 3's classifier fine-tuned on simulations that carry one (kind, level) of
    noise: every epoch a random ``fraction`` of the training images, drawn afresh, gets that noise
    (``apply_noise``) and the rest stay clean, at a tenth of study 3's learning rate.

    Fine-tuning on noisy images alone made the network forget the clean ones in our ``quick``
    runs (clean accuracy 95 % -> 25 % after two epochs with a 2 px blur), hence the clean half.

    Parameters
    ----------
    classifier : torch.nn.Module
        Study 3's classifier (left unchanged).
    train, val : tuple of array_like
        (images, labels) to fine-tune on and to pick the best epoch with (the validation images
        get the noise once, on the same ``fraction``).
    kind, level : str, float
        The noise (e.g. ``noise_to_apply``).
    sizes3 : dict
        Study 3's size table (``gisaxs_cnn.profile_sizes``): learning rate, batch size, threads.
    seed : int
        Seed of the noise draws.
    epochs : int
        Epochs of fine-tuning.
    fraction : float
        Share of the images that carry the noise, in (0, 1].
    progress : bool
        Progress bar.

    Returns
    -------
    model : torch.nn.Module
        The fine-tuned copy, in eval mode.
    history : training.History
    """
    import copy

    level = _check_noise(kind, level)
    fraction = checks.number("fraction", fraction, 0.0, 1.0, lo_open=True)
    seed = checks.integer("seed", seed, 0)
    (x, y), (xv, yv) = [(_batch(check_images(a, name=n)), np.asarray(b)) for (a, b), n in ((train, "train"), (val, "val"))]

    def part_noisy(images, rng):
        out, sel = images.copy(), rng.random(len(images)) < fraction
        if sel.any():
            out[sel] = apply_noise(images[sel], kind, level, rng)
        return out

    model = copy.deepcopy(classifier)
    config = gisaxs_cnn.train_config(sizes3, epochs=checks.integer("epochs", epochs, 1, 1000), lr=sizes3["lr"] / 10,
                                     progress=progress)
    with training.torch_threads(sizes3.get("threads")):
        history = fit(model, nets.classification_loss, (part_noisy(x, np.random.default_rng([seed, 90, 0])), y),
                      (part_noisy(xv, np.random.default_rng([seed, 91])), yv), config,
                      epoch_data=lambda e: (part_noisy(x, np.random.default_rng([seed, 90, e])), y))
    return model.eval(), history


# --- headlines and the whole run ----------------------------------------------------------------

_NO_PAPER = "poster gives no numbers"

HEADLINES = (
    Headline("psnr_gain_db", "PSNR gain of the DAE over the best tuned classical denoiser (mean over study 3's "
             "noisy conditions)", "dB", 1, (">=", 3.0), None, _NO_PAPER),
    Headline("noise_id_accuracy", "noise kind named from the latent code, held-out images (5 kinds)", "%", 100,
             (">=", 0.95), None, _NO_PAPER),
    Headline("binning_ari.dae", "binning of a measurement series by k-means on latent codes (ARI)", "", 1,
             (">=", 0.8), None, _NO_PAPER),
    Headline("binning_ari.pixels", "binning by k-means on pixels (ARI)", "", 1, None, None, _NO_PAPER),
    Headline("binning_ari.pca", "binning by k-means on principal components (ARI)", "", 1, None, None, _NO_PAPER),
    Headline("noise_severity_r2", "noise severity regressed from the latent code (R2)", "", 1, None, None, _NO_PAPER),
) + tuple(
    Headline(f"{metric}.{who}", f"{name}, {label} (mean over noisy conditions)", unit, 1, None, None, _NO_PAPER)
    for metric, name, unit in (("psnr_db", "PSNR", "dB"), ("ssim", "SSIM", ""))
    for who, label in (("noisy", "noisy input"), ("best_classical", "best classical denoiser"), ("dae", "DAE"))
)


def record_metrics(denoising: dict, noise_id: dict, series: dict, rescue: dict) -> dict:
    """The study's metrics in the shape of its results record (``report.record``; ``HEADLINES``
    point into it).

    Parameters
    ----------
    denoising : dict
        ``denoising_scores``' result.
    noise_id : dict
        ``noise_id_scores``' result on held-out images.
    series : dict
        ``series_scores``' result.
    rescue : dict
        ``rescue_scores``' result.

    Returns
    -------
    dict
        psnr_db, ssim: ``{"noisy", "best_classical", "dae"}``; psnr_gain_db (dB);
        noise_id_accuracy; noise_severity_r2; binning_ari: ``{"dae", "pixels", "pca"}``;
        rescue_accuracy: ``{"noisy": {condition: accuracy}, "denoised": {...}}``.
    """
    return {"psnr_db": dict(denoising["psnr_db"]), "ssim": dict(denoising["ssim"]),
            "psnr_gain_db": float(denoising["psnr_gain_db"]),
            "noise_id_accuracy": float(noise_id["accuracy"]), "noise_severity_r2": float(noise_id["severity_r2"]),
            "binning_ari": dict(series["ari"]),
            "rescue_accuracy": {k: dict(v) for k, v in rescue.items()}}


def run_study(profile: str | None = None, *, clean_run=None, progress: bool = True, reuse: bool = True) -> dict:
    """Study 4 on study 3's data at ``profile``: train the DAE, then score denoising, naming the
    noise, rescuing study 3's classifier, and binning a measurement series.

    Steps: study 3's data (``gisaxs_cnn.load_data``) and its clean and noise-augmented
    classifiers (``gisaxs_cnn.run_clean``, ``gisaxs_cnn.train_augmented``: loaded when study
    3's notebook has kept them, trained otherwise); ``train_dae`` on the first ``n_train``
    training images that are not among the last ``n_val`` (the DAE's validation images); the
    noise head fitted on the noise parts of the codes (``split_code``) of ``n_head`` training
    images under ``random_noise`` and scored on the first ``n_test`` test images under another
    draw; ``denoising_scores`` and ``rescue_scores`` on those test images (classical tuning on
    the first ``n_tune`` validation images); ``series_scores`` with the noise head.

    Parameters
    ----------
    profile : str, optional
        'quick', 'standard' or 'paper' (default: the current profile).
    clean_run : gisaxs_cnn.CleanRun, optional
        Study 3's clean classifier (default: ``gisaxs_cnn.run_clean``).
    progress : bool
        Progress bars.
    reuse : bool
        Load study 3's classifiers where study 3 kept them (``gisaxs_cnn.model_path``) instead
        of training them again.

    Returns
    -------
    dict
        profile, sizes; model (the DAE) and history; head (``NoiseHead``); classifier and
        augmented (study 3's models); metrics (``record_metrics``); denoising, noise_id, rescue,
        series (the full results); timings: seconds per step (load_s, clean_s, augmented_s,
        train_s, head_s, denoising_s, rescue_s, series_s, total_s), epochs, and where study 3's
        models were loaded from (clean_loaded_from, augmented_loaded_from; absent if trained).
    """
    profile = profiles.current_profile(profile)
    sizes = profile_sizes(profile)
    seed = _seed(sizes)
    timings: dict = {}
    t_all = time.perf_counter()
    with report.timer(timings, "load_s"):
        data = gisaxs_cnn.load_data(profile, progress=progress)
    if clean_run is None:
        with report.timer(timings, "clean_s"):
            clean_run = gisaxs_cnn.run_clean(profile, data=data, progress=progress, reuse=reuse)
    with report.timer(timings, "augmented_s"):
        augmented, _, _, aug_timings = gisaxs_cnn.train_augmented(clean_run, data, progress=progress, reuse=reuse)
    timings.update({k: v for k, v in {**clean_run.timings, **aug_timings}.items() if k.endswith("_loaded_from")})
    x = data["train"]["images"]
    n_val = checks.integer("n_val", sizes["n_val"], 1, len(x) - 1)
    train, val = x[:-n_val][:sizes["n_train"]], x[-n_val:]
    n_test = sizes["n_test"]
    xt, yt = data["test"]["images"][:n_test], data["test"]["labels"][:n_test]
    with training.torch_threads(sizes["threads"]):
        with report.timer(timings, "train_s"):
            model, history = train_dae(train, val, sizes, progress=progress)
        timings["epochs"] = len(history.train_loss)
        with report.timer(timings, "head_s"):
            xh, kh, lh = random_noise(train[:sizes["n_head"]], np.random.default_rng([seed, 4300]))
            head = noise_head(split_code(model, dae_outputs(model, xh)[1])[0], kh, _severities(kh, lh))
            xq, kq, lq = random_noise(xt, np.random.default_rng([seed, 4301]))
            noise_id = noise_id_scores(head, split_code(model, dae_outputs(model, xq)[1])[0], kq, _severities(kq, lq))
        with report.timer(timings, "denoising_s"):
            denoising = denoising_scores(model, xt, val[:sizes["n_tune"]], seed + 100)
        with report.timer(timings, "rescue_s"):
            rescue = rescue_scores(clean_run.model, model, xt, yt, seed + 100, augmented=augmented)
        with report.timer(timings, "series_s"):
            series = series_scores(model, sizes, data["config"], head=head)
    timings["total_s"] = time.perf_counter() - t_all
    return {"profile": profile, "sizes": sizes, "model": model, "history": history, "head": head,
            "classifier": clean_run.model, "augmented": augmented, "metrics": record_metrics(denoising, noise_id, series, rescue),
            "denoising": denoising, "noise_id": noise_id, "rescue": rescue, "series": series, "timings": timings}


def _severities(kind_index, level) -> np.ndarray:
    return np.array([severity(NOISE_TYPES[k], v) for k, v in zip(kind_index, level)])


# --------------------------------------------------------------------------------------------
# Figures for the notebook
# --------------------------------------------------------------------------------------------

def draw_architecture(ax, sizes: dict, image_size: int) -> None:
    """A block diagram of the study's DAE (``build_dae``) on a matplotlib axes.

    One box per feature map, its height proportional to the map's side, its width growing with
    the number of channels, and its shape (channels x side x side) written below it: the
    encoder's three stride-2 convolutions, the latent vector (``sizes["latent"]`` numbers, what
    the noise head and the clustering read), the decoder's transposed convolutions back to the
    image. With ``sizes["noise_code"]`` > 0 the latent bar is split: its noise part (red) feeds
    the linear read-out of the noise kind and severity (``noise_aware_loss``), the rest is the
    structure part. Skip connections are drawn dashed from each encoder stage to the decoder
    stage of the same size, and marked "off" when ``sizes["skips"]`` is false. A side that is not a multiple
    of 8 is drawn at the padded size the network works on (``PaddedAutoencoder``).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes to draw on (its axis is switched off).
    sizes : dict
        ``width``, ``latent``, ``skips`` and optionally ``noise_code``, e.g.
        ``profile_sizes(profile)``.
    image_size : int
        Side of the images in px.
    """
    from matplotlib.patches import FancyArrowPatch, Rectangle

    size = checks.integer("image_size", image_size, MIN_IMAGE_PX, 1024)
    s = -(-size // 8) * 8
    w = checks.integer("width", sizes["width"], 1, 512)
    latent = checks.integer("latent", sizes["latent"], 1, 65_536)
    skips = bool(sizes["skips"])
    n_noise = checks.integer("noise_code", sizes.get("noise_code", 0), 0, latent)
    colours = {"image": "0.6", "enc": "#4c72b0", "latent": "#55a868", "dec": "#dd8452", "noise": "#c44e52"}
    pad = f"\n({size} px, padded)" if s != size else ""
    crop = f"\n(cropped to {size} px)" if s != size else ""
    blocks = [("image", 1, s, "noisy\nimage" + pad), ("enc", w, s // 2, ""), ("enc", 2 * w, s // 4, ""),
              ("enc", 4 * w, s // 8, ""), ("latent", latent, None, ""), ("dec", 4 * w, s // 8, ""),
              ("dec", 2 * w, s // 4, ""), ("dec", w, s // 2, ""), ("dec", w, s, ""),
              ("image", 1, s, "denoised\nimage" + crop)]
    tops, right = [], 0.0
    for i, (kind, ch, side, label) in enumerate(blocks):
        if side is None:  # the latent vector: a thin bar
            bw, bh, shape = 0.12, 1.6, f"latent code:\n{ch} numbers"
            if n_noise:
                shape = f"code: {ch - n_noise} structure\n+ {n_noise} noise numbers"
                nh = bh * n_noise / ch
                ax.add_patch(Rectangle((i - bw / 2, -bh / 2), bw, nh, facecolor=colours["noise"], edgecolor="k",
                                       lw=0.8, zorder=3))
                ax.annotate("read-out: noise kind\nand severity", xy=(i + bw / 2, -bh / 2 + nh / 2),
                            xytext=(i + 0.62, -0.98), fontsize=7, ha="left", va="center", color=colours["noise"],
                            arrowprops={"arrowstyle": "->", "lw": 0.8, "color": colours["noise"]})
        else:
            bw, bh, shape = 0.14 + 0.07 * math.log2(ch + 1), 0.3 + 2.0 * side / s, f"{ch}×{side}×{side}"
        ax.add_patch(Rectangle((i - bw / 2, -bh / 2), bw, bh, facecolor=colours[kind], edgecolor="k", lw=0.8,
                               alpha=0.85))
        ax.text(i, -bh / 2 - 0.12, shape, ha="center", va="top", fontsize=7)
        if label:
            ax.text(i, bh / 2 + 0.1, label, ha="center", va="bottom", fontsize=8)
        tops.append(bh / 2)
        if i:
            ax.annotate("", xy=(i - bw / 2 - 0.02, 0), xytext=(right + 0.02, 0),
                        arrowprops={"arrowstyle": "->", "lw": 0.8})
        right = i + bw / 2
    style = {"ls": "--", "lw": 1.0, "color": "k" if skips else "0.6"}
    for k, (a, b) in enumerate(((3, 5), (2, 6), (1, 7))):  # encoder stage -> decoder stage of the same side
        y = max(tops[a:b + 1]) + 0.25 + 0.22 * k
        ax.plot([a, a, b], [tops[a], y, y], **style)
        ax.add_patch(FancyArrowPatch((b, y), (b, tops[b]), arrowstyle="->", mutation_scale=8, **style))
    ax.text(4, max(tops) + 0.95, "skip connections" + ("" if skips else " (off in this profile)"), ha="center",
            fontsize=8, color=style["color"])
    ax.text(4.5, -2.05, "encoder: conv 3×3, stride 2, batch norm, ReLU  ·  latent: linear maps  ·  "
            "decoder: transposed conv 4×4, stride 2, batch norm, ReLU  ·  output: conv 3×3, sigmoid",
            ha="center", va="top", fontsize=7)
    ax.set(xlim=(-0.7, len(blocks) - 0.3), ylim=(-2.5, max(tops) + 1.3))
    ax.axis("off")


# --- archived experiments -----------------------------------------------------------------------

#: ``experiment`` names: "plain", the DAE without a noise part (``noise_code`` 0), scored as
#: ``run_study`` scores the study's DAE; "noise_cnn", a small CNN trained for nothing but the noise
#: kind on the same images, the reference for how well any code can name the noise.
EXPERIMENTS = ("plain", "noise_cnn")


def experiment(name: str, profile: str = "standard", *, progress: bool = False) -> dict:
    """Run one of ``EXPERIMENTS`` at ``profile`` on the images, noise draws and held-out images of
    ``run_study`` (study 3's classifiers are not needed).

    Returns
    -------
    dict
        plain: noise_id_accuracy, noise_severity_r2 (head on the whole code), psnr_db {noisy,
        dae} (mean over the held-out images with noise), binning_ari, train_s. noise_cnn:
        accuracy, confusion, accuracy_per_level {"kind@level": accuracy}, epochs, train_s.
    """
    checks.one_of("name", name, EXPERIMENTS)
    sizes = profile_sizes(profile)
    seed = _seed(sizes)
    data = gisaxs_cnn.load_data(profile, progress=progress)
    x = data["train"]["images"]
    train, val = x[:-sizes["n_val"]][:sizes["n_train"]], x[-sizes["n_val"]:]
    xt = data["test"]["images"][:sizes["n_test"]]
    xq, kq, lq = random_noise(xt, np.random.default_rng([seed, 4301]))
    t0 = time.perf_counter()
    with training.torch_threads(sizes["threads"]):
        if name == "plain":
            model, _ = train_dae(train, val, {**sizes, "noise_code": 0}, progress=progress)
            train_s = time.perf_counter() - t0
            xh, kh, lh = random_noise(train[:sizes["n_head"]], np.random.default_rng([seed, 4300]))
            head = noise_head(dae_outputs(model, xh)[1], kh, _severities(kh, lh))
            denoised, codes = dae_outputs(model, xq)
            scores = noise_id_scores(head, codes, kq, _severities(kq, lq))
            noisy = kq > 0
            return {"noise_id_accuracy": scores["accuracy"], "noise_severity_r2": scores["severity_r2"],
                    "psnr_db": {"noisy": float(psnr(xt[noisy], xq[noisy]).mean()),
                                "dae": float(psnr(xt[noisy], denoised[noisy]).mean())},
                    "binning_ari": series_scores(model, sizes, data["config"])["ari"], "train_s": train_s}
        vn, vk, _ = random_noise(val, np.random.default_rng([seed, 4099]))
        last: dict = {}

        def epoch_data(epoch: int):
            if epoch not in last:
                last.clear()
                last[epoch] = random_noise(train, np.random.default_rng([seed, 4100, int(epoch)]))[:2]
            return last[epoch]

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = nets.SmallCNN(train.shape[-1], len(NOISE_TYPES), width=16, hidden=64, input_transform="log")
        epochs = int(sizes["epochs"])
        config = TrainConfig(epochs=epochs, batch_size=sizes["batch_size"], lr=sizes["lr"], schedule="onecycle",
                             patience=epochs, seed=seed, progress=progress)
        fit(net, nets.classification_loss, epoch_data(0), (vn, vk), config, epoch_data=epoch_data)
        train_s = time.perf_counter() - t0
        pred = nets.predict(net, xq).numpy().argmax(1)
    per_level = {f"{NOISE_TYPES[k]}@{v:g}": float((pred[(kq == k) & (lq == v)] == k).mean())
                 for k in range(len(NOISE_TYPES)) for v in NOISE_LEVELS[NOISE_TYPES[k]] if ((kq == k) & (lq == v)).any()}
    return {"accuracy": float((pred == kq).mean()), "confusion": gisaxs_cnn.confusion_matrix(kq, pred, len(NOISE_TYPES)),
            "accuracy_per_level": per_level, "epochs": epochs, "train_s": train_s}


def main(argv=None) -> int:
    """``python -m sashelpers.studies.gisaxs_dae plain|noise_cnn [--profile P]``: run an archived
    experiment and write it to book/records/experiments/04_<name>@<profile>.json."""
    return report.experiment_cli(STUDY, "sashelpers.studies.gisaxs_dae", EXPERIMENTS, experiment, argv,
                                 doc=main.__doc__.splitlines()[0])


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))

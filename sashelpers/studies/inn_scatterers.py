"""Study 1 (Laskina, Pauw, Benner): shape and size of analytic scatterers from 1D SAXS curves.

This module holds everything specific to the study:

* ``PRIORS`` / ``priors_table``, ``sample_parameters``: the paper's Table 1 priors;
* ``CURVE_SETTINGS``, ``add_noise``, ``curves_chunk``, ``make_dataset``: noisy log I(q)
  training sets, cached and chunked through ``core.datasets.generate``;
* ``SIZES``: the profile table (quick / standard / paper);
* ``PAPER`` and ``HEADLINES``: the paper's numbers with their source, and the metrics the
  notebook reports against them;
* the study's evaluation helpers (``evaluate``, ``calibration_curves``, ``baseline_xgboost``).

The kernels (sasmodels in nm, the batched torch curves) are in ``sashelpers.physics.scatterers``;
the generic classifier + conditional-INN model is ``sashelpers.learn.inn.ShapeInverter``.
"""

from __future__ import annotations

import numpy as np

from ..core import datasets, profiles
from ..core.report import Headline
from ..physics.scatterers import (DEFAULT_SETTINGS, PARAM_NAMES, SHAPE_PARAMS, SHAPES,
                                  _check_q, _check_shape, sasmodels_curves, torch_intensity)

STUDY = "01_inn_analytic_scatterers"

#: Profile sizes: curves per shape, network size, training length; bars for shape accuracy (the
#: final verdict, network + second opinion where unsure), sphere radius MAE (nm) and the range every
#: parameter's 90 % interval coverage must fall in. classifier_extra_per_shape: further curves
#: (another seed) for the shape classifier only; the INNs train on n_per_shape. refine_below:
#: curves whose top network probability is lower are decided by the likelihood
#: (``bayes_shapes.second_opinion``, about a second per curve on one core).
SIZES = {
    "quick": {"n_per_shape": 600, "seed": 0, "hidden": 64, "n_blocks": 4, "epochs": 15, "lr": 3e-3, "patience": 5,
              "classifier_extra_per_shape": 2400, "refine_below": 0.9,
              "n_samples": 100, "baseline_trees": 100,
              "bar_accuracy": 0.9, "bar_sphere_radius_mae_nm": 0.6, "bar_coverage": (0.5, 1.0)},
    "standard": {"n_per_shape": 5000, "seed": 0, "hidden": 128, "n_blocks": 6, "epochs": 60, "lr": 1e-3, "patience": 10,
                 "classifier_extra_per_shape": 20000, "refine_below": 0.9,
                 "n_samples": 300, "baseline_trees": 200,
                 "bar_accuracy": 0.99, "bar_sphere_radius_mae_nm": 0.05, "bar_coverage": (0.8, 0.97)},
    "paper": {"n_per_shape": 5000, "seed": 0, "hidden": 256, "n_blocks": 8, "epochs": 200, "lr": 1e-3, "patience": 20,
              "classifier_extra_per_shape": 20000, "refine_below": 0.9,
              "n_samples": 1000, "baseline_trees": 1000,
              "bar_accuracy": 0.99, "bar_sphere_radius_mae_nm": 0.05, "bar_coverage": (0.85, 0.95)},
}


def profile_sizes(profile: str | None = None) -> dict:
    """This study's sizes at ``profile`` (default: the current one), a copy of ``SIZES[profile]``."""
    return profiles.pick(SIZES, profile)


#: The paper's numbers and the notebook's headline metrics (keys into its results record).
#: Paper: S. Laskina, B. R. Pauw, P. Benner (BAM); the 97 % accuracy comes from the authors' thesis
#: code (200 samples including training data), the radius MAE from the paper's Fig. 3.
HEADLINES = (
    Headline("shape_accuracy", "shape accuracy, network + likelihood where unsure", "%", 100, (">=", 0.99),
             None, "the paper has no second opinion"),
    Headline("shape_accuracy_network", "shape accuracy, network alone", "%", 100, (">=", 0.99),
             0.97, "authors' thesis code"),
    Headline("mae.sphere.radius_nm", "sphere radius MAE, test set", "nm", 1.0, ("<=", 0.2), 0.395, "Fig. 3"),
) + tuple(
    Headline(f"coverage90.{p}", f"90 % interval coverage, {p}", "%", 100, ("in", 0.85, 0.95), None, "not shown")
    for p in PARAM_NAMES)

#: would be a plain sphere with a different label.
VOLFRACTIONS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30)

_RADIUS = {"distribution": "truncated normal", "mean": 2.0, "sd": 1.0, "lower": 0.2,
           "upper": None, "unit": "nm",
           "note": "lower cut 0.2 nm: below it qR < 0.6 on the whole grid (a flat Guinier "
                   "plateau) and the particle is smaller than an atom pair"}
_PD = {"distribution": "truncated normal", "mean": 0.1, "sd": 0.03, "lower": 0.0,
       "upper": 0.3, "unit": "",
       "note": "relative Gaussian width sigma/mean; upper cut 0.3 (< 1/3) keeps mean - 3 sigma > 0"}
_LENGTH = {"distribution": "truncated normal", "mean": 10.0, "sd": 5.0, "lower": 1.0,
           "upper": None, "unit": "nm",
           "note": "lower cut 1 nm: thinner 'cylinders' are platelets a few atoms thick"}
_VOLFRACTION = {"distribution": "uniform discrete", "values": VOLFRACTIONS, "unit": "",
                "note": "hard-sphere volume fraction; 0 excluded (zero intensity in P@S)"}

#: Priors per shape and parameter (paper Table 1); a notebook prints them with ``priors_table``.
PRIORS = {
    "sphere": {"radius_nm": _RADIUS, "radius_pd": _PD},
    "sphere@hardsphere": {"radius_nm": _RADIUS, "radius_pd": _PD, "volfraction": _VOLFRACTION},
    "cylinder": {"radius_nm": _RADIUS, "radius_pd": _PD, "length_nm": _LENGTH, "length_pd": _PD},
}

#: Settings shared by every study-1 curve (sasmodels units: SLD in 1e-6 A^-2, I in cm^-1).
#: background = 0: the curves encode shape and size only; a flat 0.001 cm^-1 (sasmodels'
#: default) would hide the high-q minima of small particles and is not part of the noise model.
CURVE_SETTINGS = {**DEFAULT_SETTINGS, "noise": 0.1}


def priors_table(shapes=SHAPES) -> list[dict]:
    """The priors as rows {shape, parameter, distribution, mean, sd, lower, upper, values, unit, note}."""
    rows = []
    for shape in shapes:
        for par, prior in PRIORS[_check_shape(shape)].items():
            row = {"shape": shape, "parameter": par, "mean": None, "sd": None, "lower": None,
                   "upper": None, "values": None}
            row.update(prior)
            rows.append(row)
    return rows


def _truncated_normal(rng: np.random.Generator, mean, sd, lower, upper, n: int) -> np.ndarray:
    """n draws of N(mean, sd) restricted to [lower, upper] by rejection (order-stable)."""
    lo = -np.inf if lower is None else lower
    hi = np.inf if upper is None else upper
    out = rng.normal(mean, sd, n)
    bad = (out < lo) | (out > hi)
    while bad.any():
        out[bad] = rng.normal(mean, sd, int(bad.sum()))
        bad = (out < lo) | (out > hi)
    return out


def sample_parameters(shape: str, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n parameter sets of ``shape`` drawn from ``PRIORS``: {name: array (n,)} (nm for lengths)."""
    _check_shape(shape)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng={rng!r} must be a numpy Generator (np.random.default_rng(seed))")
    if int(n) != n or n < 1:
        raise ValueError(f"n={n!r} must be a positive integer number of parameter sets")
    out = {}
    for par, prior in PRIORS[shape].items():
        if prior["distribution"] == "uniform discrete":
            out[par] = rng.choice(np.asarray(prior["values"], dtype=np.float64), size=int(n))
        else:
            out[par] = _truncated_normal(rng, prior["mean"], prior["sd"], prior["lower"],
                                         prior["upper"], int(n))
    return out


def default_q_nm(n: int = 256, q_min: float = 0.03, q_max: float = 3.0) -> np.ndarray:
    """The study-1 q grid: n log-spaced points in [q_min, q_max] nm^-1."""
    if int(n) != n or n < 2:
        raise ValueError(f"n={n!r} must be an integer >= 2")
    if not (0 < q_min < q_max) or not np.isfinite(q_max):
        raise ValueError(f"need 0 < q_min < q_max; got q_min={q_min!r}, q_max={q_max!r} (nm^-1)")
    return np.geomspace(q_min, q_max, int(n))


def add_noise(intensity, rng: np.random.Generator, rel: float = 0.1) -> np.ndarray:
    """Multiplicative Gaussian noise per point: I * N(1, rel), the factor kept > 0."""
    if not (0 <= rel < 1):
        raise ValueError(f"rel={rel!r} must be in [0, 1)")
    intensity = np.asarray(intensity, dtype=np.float64)
    factor = rng.normal(1.0, rel, intensity.shape)
    return intensity * np.maximum(factor, 1e-6)  # a factor <= 0 is a > 10-sigma event at rel=0.1


def _shape_rng(seed: int, shape: str, index: int) -> np.random.Generator:
    """Per-sample generator, distinct per shape, independent of chunking."""
    return np.random.default_rng([int(seed), SHAPES.index(shape), int(index)])


def curves_chunk(config: dict, seed: int, start: int, stop: int) -> dict:
    """datasets.generate chunk: noisy curves of ``config['shape']`` for samples [start, stop).

    Sample i draws its parameters and then its noise from one generator seeded by
    (seed, shape, i). Returns log_i (float32, natural log of I in cm^-1), params (float32,
    columns PARAM_NAMES, NaN where the shape has no such parameter), shape (int label).
    """
    shape = _check_shape(config["shape"])
    q = _check_q(config["q_nm"])
    settings = {k: config[k] for k in CURVE_SETTINGS if k in config}
    noise = float(settings.get("noise", CURVE_SETTINGS["noise"]))
    engine = config.get("engine", "sasmodels")
    n = stop - start
    params = np.full((n, len(PARAM_NAMES)), np.nan)
    rngs = [_shape_rng(seed, shape, i) for i in range(start, stop)]
    for row, rng in enumerate(rngs):
        draw = sample_parameters(shape, rng, 1)
        for name, value in draw.items():
            params[row, PARAM_NAMES.index(name)] = value[0]
    cols = {name: params[:, PARAM_NAMES.index(name)] for name in SHAPE_PARAMS[shape]}
    if engine == "sasmodels":
        clean = sasmodels_curves(shape, q, cols, settings)
    elif engine == "torch":
        import multiprocessing

        import torch

        device = None
        if multiprocessing.parent_process() is not None:
            # a worker forked from a process that already ran torch ops hangs in the OpenMP pool;
            # one intra-op thread per worker avoids that and the oversubscription of cores.
            # CUDA cannot be used in a forked child: workers compute on the CPU.
            torch.set_num_threads(1)
            device = "cpu"
        s = dict(CURVE_SETTINGS, **settings)
        if s["pd_type"] != "gaussian":
            raise ValueError(f"pd_type={s['pd_type']!r}: engine='torch' supports 'gaussian' only")
        clean = torch_intensity(shape, q, cols, dtype=torch.float64, device=device,
                                pd_n=int(s["pd_n"]),
                                nsigma=float(s["pd_nsigma"]), sld=s["sld"],
                                sld_solvent=s["sld_solvent"], scale=s["scale"],
                                background=s["background"]).cpu().numpy()
    else:
        raise ValueError(f"engine={engine!r} must be 'sasmodels' or 'torch'")
    noisy = np.stack([add_noise(clean[row], rng, noise) for row, rng in enumerate(rngs)])
    return {"log_i": np.log(noisy).astype(np.float32), "params": params.astype(np.float32),
            "shape": np.full(n, SHAPES.index(shape), dtype=np.int64)}


def make_dataset(shapes=SHAPES, n_per_shape: int = 5000, seed: int = 0, q_nm=None, *,
                 workers: int = 2, chunk_size: int = 250, engine: str = "sasmodels",
                 progress: bool = True, cache: bool = True, **settings) -> dict[str, np.ndarray]:
    """Noisy study-1 curves for each shape, cached through ``datasets.generate``.

    Returns {"log_i": (N, n_q) float32, "params": (N, len(PARAM_NAMES)) float32,
    "shape": (N,) int labels into SHAPES, "q_nm": (n_q,)}, shapes concatenated in the order given.
    ``settings`` override CURVE_SETTINGS (e.g. noise=0.05, background=0.001).
    engine="sasmodels" (default) loops sasmodels' C kernel, one curve at a time. engine="torch" computes the same
    clean curves with ``torch_intensity`` (float64, within 1e-9 of sasmodels, same parameters and
    noise draws) in batches, much faster for cylinders (``make bench`` measures both).
    """

    if isinstance(shapes, str):
        shapes = (shapes,)
    for shape in shapes:
        _check_shape(shape)
    unknown = [k for k in settings if k not in CURVE_SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; allowed: {', '.join(CURVE_SETTINGS)}")
    q = default_q_nm() if q_nm is None else _check_q(q_nm)
    parts = []
    for shape in shapes:
        config = {"shape": shape, "q_nm": [float(v) for v in q], "engine": engine,
                  **dict(CURVE_SETTINGS, **settings)}
        name = "study1_" + shape.replace("@", "_")
        parts.append(datasets.generate(name, curves_chunk, config, n_per_shape, seed,
                                       chunk_size=chunk_size, workers=workers,
                                       progress=progress, cache=cache))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["q_nm"] = q
    return out


"""Study 1 (Laskina, Pauw, Benner): shape and size of analytic scatterers from 1D SAXS curves.

This module holds everything specific to the study:

* ``PRIORS`` / ``priors_table``, ``sample_parameters``: the paper's Table 1 priors;
* ``CURVE_SETTINGS``, ``add_noise``, ``curves_chunk``, ``make_dataset``: noisy log I(q)
  training sets, cached and chunked through ``core.datasets.generate``;
* ``SIZES``: the profile table (quick / standard / paper);
* ``PAPER`` and ``HEADLINES``: the paper's numbers with their source, and the metrics the
  notebook reports against them;
* the study's evaluation helpers (``evaluate``, ``calibration_curves``, ``baseline_xgboost``);
* ``CONVENTIONS`` and ``model_info``: what a trained model's card records about its curves
  (priors, noise model, intensity scale, contrast); ``default_model_path`` and
  ``load_inverter``: notebook 01's saved model, with a clear error when there is none;
* ``predict_file``, ``verdict_figure`` (with ``posterior_curves`` and, for a scale-free model,
  ``scale_at_median``) and ``predict_main``: the verdict on one's own curve file,
  the path of ``python -m sashelpers.studies.bayes_shapes predict FILE`` (the command lives in
  ``bayes_shapes``, the study-1 module that may import both this one and the likelihood second
  opinion).

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
#: (another seed) for the shape classifier only; the INNs train on n_per_shape. ``profile_sizes``
#: adds refine_below, the same at every profile and everywhere else: ``learn.inn.REFINE_BELOW``
#: (curves whose top network probability is lower are decided by the likelihood,
#: ``bayes_shapes.second_opinion``, about a second per curve on one core).
SIZES = {
    "quick": {"n_per_shape": 600, "seed": 0, "hidden": 64, "n_blocks": 4, "epochs": 15, "lr": 3e-3, "patience": 5,
              "classifier_extra_per_shape": 2400,
              "n_samples": 100, "baseline_trees": 100,
              "bar_accuracy": 0.9, "bar_sphere_radius_mae_nm": 0.6, "bar_coverage": (0.5, 1.0)},
    "standard": {"n_per_shape": 5000, "seed": 0, "hidden": 128, "n_blocks": 6, "epochs": 60, "lr": 1e-3, "patience": 10,
                 "classifier_extra_per_shape": 20000,
                 "n_samples": 300, "baseline_trees": 200,
                 "bar_accuracy": 0.99, "bar_sphere_radius_mae_nm": 0.05, "bar_coverage": (0.8, 0.97)},
    "paper": {"n_per_shape": 5000, "seed": 0, "hidden": 256, "n_blocks": 8, "epochs": 200, "lr": 1e-3, "patience": 20,
              "classifier_extra_per_shape": 20000,
              "n_samples": 1000, "baseline_trees": 1000,
              "bar_accuracy": 0.99, "bar_sphere_radius_mae_nm": 0.05, "bar_coverage": (0.85, 0.95)},
}


def profile_sizes(profile: str | None = None) -> dict:
    """This study's sizes at ``profile`` (default: the current one): a copy of ``SIZES[profile]``
    with ``refine_below`` = ``learn.inn.REFINE_BELOW``, the one default of every entry point."""
    from ..learn.inn import REFINE_BELOW

    return {**profiles.pick(SIZES, profile), "refine_below": REFINE_BELOW}


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

#: What every study-1 training curve assumes, and so what a measured curve must match before a
#: model trained on them can read it; written into the model card (``model_info``).
CONVENTIONS = {
    "q": "nm^-1; the card's q_nm grid (256 log-spaced points in [0.03, 3] nm^-1 by default); a curve "
         "is interpolated onto it in log-log and must cover it",
    "intensity": "absolute, cm^-1, as sasmodels computes it with scale = "
                 f"{CURVE_SETTINGS['scale']:g} (sasmodels' scale: the particles' volume fraction; for "
                 "sphere@hardsphere the structure factor's volfraction is a separate parameter); "
                 "the network reads the natural log of I, standardised per q point",
    "contrast": {"sld": CURVE_SETTINGS["sld"], "sld_solvent": CURVE_SETTINGS["sld_solvent"],
                 "unit": "1e-6 Angstrom^-2", "delta_rho": CURVE_SETTINGS["sld"] - CURVE_SETTINGS["sld_solvent"]},
    "background_cm^-1": CURVE_SETTINGS["background"],
    "noise": {"model": "multiplicative, I_obs = I * N(1, sigma), independent per q point",
              "sigma": CURVE_SETTINGS["noise"]},
    "polydispersity": {"type": CURVE_SETTINGS["pd_type"], "points": CURVE_SETTINGS["pd_n"],
                       "nsigma": CURVE_SETTINGS["pd_nsigma"], "widths": "relative (sigma / mean)"},
    "resolution": "none (no instrumental smearing)",
}


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



# ---------------------------------------------------------------------------------------------
# a trained model on one's own curve: the verdict, its table and its figure
# ---------------------------------------------------------------------------------------------

#: notebook 01 trains the model and saves it as data/models/study1_<profile>.pt (+ .json card)
NOTEBOOK = "notebooks/01_inn_analytic_scatterers.ipynb"


def model_info() -> dict:
    """The study-1 facts a ``ShapeInverter`` carries in its model card: ``{"priors": PRIORS,
    "conventions": CONVENTIONS}`` (copies), as keyword arguments of
    ``ShapeInverter.from_training_data`` / ``ShapeInverter`` / ``ShapeInverter.load``. The priors
    also set where posterior samples are kept (``ShapeInverter.support``) and the largest sizes
    the model answers for (``ShapeInverter.size_limits``)."""
    import copy

    return {"priors": copy.deepcopy(PRIORS), "conventions": copy.deepcopy(CONVENTIONS)}


def default_model_path(profile: str | None = None):
    """Where notebook 01 saves its scale-free model, the one for measured curves of unknown
    absolute scale: ``<repo>/data/models/study1_<profile>_scalefree.pt`` (profile: the argument,
    else ``SASHELPERS_PROFILE``, else 'standard'). The paper's reproduction, which reads the
    absolute scale, is ``study1_<profile>.pt`` next to it."""
    return datasets.repo_root() / "data" / "models" / f"study1_{profiles.current_profile(profile)}_scalefree.pt"


def how_to_train(profile: str | None = None) -> str:
    """The command that trains and saves the study-1 model of ``profile`` (notebook 01)."""
    name = profiles.current_profile(profile)
    return (f"SASHELPERS_PROFILE={name} .venv/bin/papermill {NOTEBOOK} /tmp/01_{name}.ipynb -p PROFILE {name} "
            f"--cwd notebooks   (run in the repository root; the notebook saves data/models/study1_{name}_scalefree.pt; "
            "quick: about a minute on 2 CPU cores, standard: a few minutes once the curves are cached)")


def load_inverter(path=None, *, second_opinion=None, profile: str | None = None):
    """The saved study-1 ``ShapeInverter`` at ``path`` (default ``default_model_path(profile)``).

    ``model_info()`` fills in the priors and conventions of a card saved without them.
    second_opinion: e.g. ``bayes_shapes.second_opinion`` (this module cannot import it).

    Raises
    ------
    ValueError
        When no model is saved there, naming the path, the models that do exist, and the command
        that trains one (``how_to_train``).
    """
    from pathlib import Path

    from ..learn.inn import ShapeInverter, model_files_missing

    base = (default_model_path(profile) if path is None else Path(path)).with_suffix("")
    missing = model_files_missing(base)
    if missing:
        found = sorted(str(f) for f in (datasets.repo_root() / "data" / "models").glob("study1_*.pt"))
        raise ValueError(f"no trained study-1 model at {base.with_suffix('.pt')} ({missing}). Train one with "
                         f"notebook 01:\n  {how_to_train(profile)}"
                         + (f"\nSaved study-1 models: {', '.join(found)} (pass one as the model path, --model on the command line)" if found else ""))
    return ShapeInverter.load(base, second_opinion=second_opinion, **model_info())


def posterior_curves(verdict, q_nm, n_draws: int = 40, seed: int = 0, scale: float = 1.0) -> dict:
    """Model curves (cm^-1) of an in-domain verdict, on q_nm (nm^-1): {"median": I at the
    posterior medians (sasmodels), "lo", "hi": the pointwise 5 and 95 % of I over ``n_draws``
    posterior draws (the batched torch kernel)}. The settings are ``CURVE_SETTINGS`` without the
    noise, as the training curves were made, and every curve is multiplied by ``scale``
    (dimensionless; e.g. ``scale_at_median`` for a scale-free model's verdict)."""
    import torch

    if not verdict.in_domain:
        raise ValueError("an out-of-domain verdict has no parameters to draw curves from")
    settings = {k: v for k, v in CURVE_SETTINGS.items() if k != "noise"}
    median = {p: np.array([d["median"]]) for p, d in verdict.parameters.items()}
    out = {"median": scale * sasmodels_curves(verdict.shape, q_nm, median, settings)[0]}
    rng = np.random.default_rng(seed)
    n = len(next(iter(verdict.samples.values())))
    idx = rng.choice(n, size=min(int(n_draws), n), replace=False)
    draws = {p: np.asarray(v)[idx] for p, v in verdict.samples.items()}
    curves = torch_intensity(verdict.shape, q_nm, draws, dtype=torch.float64, device="cpu",
                             pd_n=int(settings["pd_n"]), nsigma=float(settings["pd_nsigma"]),
                             sld=settings["sld"], sld_solvent=settings["sld_solvent"],
                             scale=settings["scale"], background=settings["background"]).numpy()
    out["lo"], out["hi"] = scale * np.percentile(curves, [5, 95], axis=0)
    return out


def scale_at_median(verdict, model, q_nm, intensity) -> float:
    """The factor between a measured curve and the model curve at the verdict's posterior
    medians, as the ratio of their geometric means over the model's q grid: exp(mean over the
    grid of log I_curve - log I_model). Dimensionless: 1 for a curve on study 1's scale (cm^-1,
    sasmodels scale 1, contrast 1e-6 A^-2). Needs an in-domain verdict; ``Verdict.scale`` of a
    scale-free model is the network side's cheaper estimate (nearest training curves)."""
    log_i = model.prepare_curve(q_nm, intensity)
    median = posterior_curves(verdict, model.q_nm, n_draws=1)["median"]
    return float(np.exp(np.mean(log_i - np.log(median))))


def verdict_figure(verdict, q_nm, intensity, model, *, title: str = "", path=None):
    """The data against what the model says: the measured points, the training curves' band
    (exp of the mean +- 2 sd of log I per q) and, in domain, the posterior-median model curve
    with the 5-95 % band of posterior draws; out of domain, the reasons instead.

    Parameters
    ----------
    verdict : learn.inn.Verdict
    q_nm, intensity : array_like
        The curve as measured (nm^-1, cm^-1).
    model : learn.inn.ShapeInverter
        For its q grid and training statistics.
    title : str
        First line of the title (e.g. the file name).
    path : str or Path, optional
        Save the figure there (PNG, 150 dpi).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import textwrap

    import matplotlib.pyplot as plt

    from ..core import plotting

    fig, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    plotting.curve_axes(ax)
    q_m = model.q_nm
    scale_free = getattr(model, "scale_free", False)
    # a scale-free model's training statistics are of log I minus its mean over q: shown at the curve's level
    level = float(np.mean(model.prepare_curve(q_nm, intensity))) if scale_free else 0.0
    band = np.exp(level + model.features.mean[None, :] + np.array([[-2.0], [2.0]]) * model.features.std[None, :])
    ax.fill_between(q_m, band[0], band[1], color="0.85", label="training curves (mean ± 2 sd of log I)"
                    + (", at the curve's geometric mean" if scale_free else ""))
    ax.plot(q_nm, intensity, ".", ms=3, color="k", label="data")
    if verdict.in_domain:
        scale = scale_at_median(verdict, model, q_nm, intensity) if scale_free else 1.0
        curves = posterior_curves(verdict, q_m, scale=scale)
        ax.fill_between(q_m, curves["lo"], curves["hi"], color="C1", alpha=0.3, label="posterior draws, 5–95 %")
        ax.plot(q_m, curves["median"], color="C1", lw=1.5, label=f"{verdict.shape}, posterior medians"
                + (f" × {scale:.3g}" if scale_free else ""))
        text = "\n".join(f"{p} = {d['median']:.3g} [{d['lo']:.3g}, {d['hi']:.3g}] {d['unit']}".rstrip()
                         for p, d in verdict.parameters.items())
        head = (f"in domain: {verdict.shape}, p = {verdict.shape_probabilities[verdict.shape]:.2f} "
                f"({verdict.shape_source})")
    else:
        text = "\n".join(textwrap.fill("• " + r, 70) for r in verdict.reasons)
        head = "OUT OF DOMAIN: no shape or parameters"
    ax.text(0.02, 0.02, text, transform=ax.transAxes, fontsize=7, va="bottom", ha="left",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"})
    ax.set_title((title + "\n" if title else "") + head, fontsize=9,
                 color="k" if verdict.in_domain else "C3")
    ax.legend(fontsize=7, loc="upper right")
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


def predict_file(path, model, *, q_unit: str | None = None, **predict_kwargs):
    """The verdict on the curve in a file: ``measured.io.load_curve`` then ``model.predict`` (the
    notebook's path). Returns (verdict, curve).

    Parameters
    ----------
    path : str or Path
        A curve file ``load_curve`` reads; q is converted to nm^-1.
    model : learn.inn.ShapeInverter
    q_unit : str, optional
        The file's q unit where it does not declare one (``load_curve``).
    **predict_kwargs
        Passed to ``model.predict`` (n_samples, seed, refine_below, level, effort), whose
        defaults apply otherwise (refine_below: ``learn.inn.REFINE_BELOW``).

    Notes are added to the verdict when the file declares no absolute intensity unit and the model
    is not scale-free (it reads I as cm^-1 on study 1's scale) or when the curve reaches beyond
    the model's q range (the rest is not used).
    """
    from ..measured.io import load_curve

    curve = load_curve(path, q_unit=q_unit)
    verdict = model.predict(curve.q_nm, curve.intensity, **predict_kwargs)
    unit = str(curve.intensity_unit).replace(" ", "").lower()
    if unit not in ("cm^-1", "1/cm", "cm^{-1}", "cm-1") and not getattr(model, "scale_free", False):
        verdict.notes.append(f"the file declares I in {curve.intensity_unit!r}, not cm^-1: the model read it as "
                             "absolute intensity on study 1's scale (contrast 1e-6 A^-2, scale 1)")
    lo, hi = model.q_nm[0], model.q_nm[-1]
    if curve.q_nm[0] < lo * (1 - 1e-9) or curve.q_nm[-1] > hi * (1 + 1e-9):
        verdict.notes.append(f"only q in [{lo:.4g}, {hi:.4g}] nm^-1 of the file's [{curve.q_nm[0]:.4g}, "
                             f"{curve.q_nm[-1]:.4g}] nm^-1 was used")
    return verdict, curve


def predict_main(argv=None, *, second_opinion=None, prog: str | None = None) -> int:
    """``predict FILE``: print the verdict of the study-1 model on a curve file and save a figure.

    The command is ``python -m sashelpers.studies.bayes_shapes predict FILE [--model PATH]
    [--figure OUT.png]``; ``bayes_shapes`` passes its likelihood as ``second_opinion``. Returns
    the exit status: 0 when a verdict was printed (in or out of domain), 2 when the file cannot
    be read or no model is found (the message says why and how to train one).
    """
    import argparse
    import json
    import sys
    import warnings
    from pathlib import Path

    from ..learn.inn import REFINE_BELOW

    ap = argparse.ArgumentParser(prog=prog, description="Shape and size of particles from a 1D SAXS curve "
                                 "(study 1's network), or why it cannot answer (out of domain).")
    ap.add_argument("file", help="curve file that sashelpers.measured.io.load_curve reads (q, I [, dI])")
    ap.add_argument("--model", default=None, help="saved model (.pt); default: data/models/study1_<profile>.pt "
                    "(profile: SASHELPERS_PROFILE, else standard)")
    ap.add_argument("--profile", default=None, help="quick | standard | paper: which default model")
    ap.add_argument("--figure", default=None, help="where to save the figure (default: <file stem>_verdict.png "
                    "in the current folder)")
    ap.add_argument("--q-unit", default=None, help="unit of q in the file if it does not say (e.g. 1/nm, 1/A)")
    ap.add_argument("--n-samples", type=int, default=1000, help="posterior draws (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine-below", type=float, default=REFINE_BELOW,
                    help=f"network probability below which the likelihood decides the shape (default {REFINE_BELOW})")
    ap.add_argument("--network-only", action="store_true", help="never ask the likelihood second opinion")
    ap.add_argument("--json", default=None, help="also write the verdict (without samples) to this JSON file")
    args = ap.parse_args(argv)

    if "matplotlib.pyplot" not in sys.modules:   # a command: no display needed
        import matplotlib

        matplotlib.use("Agg")
    try:
        model = load_inverter(args.model, second_opinion=None if args.network_only else second_opinion,
                              profile=args.profile)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="this curve lies outside the training domain")
            verdict, curve = predict_file(args.file, model, q_unit=args.q_unit, n_samples=args.n_samples,
                                          seed=args.seed,
                                          refine_below=None if args.network_only else args.refine_below)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if (verdict.in_domain and second_opinion is None and not args.network_only
            and max(verdict.network_probabilities.values()) < args.refine_below):
        verdict.notes.append("the network is unsure but no likelihood second opinion is attached: "
                             "the network decided the shape")
    print(f"file: {args.file}\n")
    print(verdict.table())
    figure = Path(args.figure) if args.figure else Path(f"{Path(args.file).stem}_verdict.png")
    fig = verdict_figure(verdict, curve.q_nm, curve.intensity, model, title=Path(args.file).name, path=figure)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"\nfigure: {figure}")
    if args.json:
        Path(args.json).write_text(json.dumps(verdict.to_dict(), indent=1, default=str))
        print(f"verdict: {args.json}")
    return 0

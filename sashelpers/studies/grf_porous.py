"""Study 2 (Röding et al. 2022): porous media from Gaussian random fields, FFT SAXS, XGBoost.

``physics.grf`` makes structures and curves, ``learn.regress`` fits models; this module holds
what is specific to the study: its priors and the four datasets (cached, chunked through
``core.datasets.generate``), which parameters each dataset predicts, the profile sizes, the
paper's numbers with their source, the train/val/test split, the Table-2-shaped table and the
study's figures, so that the notebook's cells stay short.

At the ``paper`` profile the boosters train on a Dask cluster with ``xgboost.dask``
(``training_client``: the client passed, else the scheduler at ``SASHELPERS_DASK_SCHEDULER``,
else the process's default client, else a ``LocalCluster``); ``quick`` and ``standard`` train in
this process unless a client is passed. The models are the same ``BoostedRegressor`` either way.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from ..core import backend, datasets, profiles
from ..core.report import Headline
from ..learn import regress
from ..physics import grf, saxs

STUDY = "02_grf_porous_xgboost"

#: Profile sizes. Four datasets (two/three-phase x low/high porosity) of n_samples each, split
#: train/val/test by index; "xgb" holds the XGBoost hyperparameters (the paper's at paper scale,
#: scaled down for a laptop: larger learning rate, fewer trees, larger row/column subsamples).
#: Bars: quick -- every test MAPE below bar_mape_vs_mean x the MAPE of predicting the training
#: mean; learning_sizes: the learning curve's smaller training sets (the full one is added);
#: standard -- test MAPE per parameter below bar_mape (%), case-study means within bar_case_bias
#: of the truth, 5-95 % interval coverage within bar_coverage. "xgb_executor": where the boosters
#: train, "local" (this process) or "dask" (``xgboost.dask`` on a cluster, see ``training_client``).
#: "budget": the error budget's sizes (``budget_experiment``; the same at standard and paper, since
#: it runs on a laptop): the grids N of 0.5 nm voxels, the split of each grid's curves, the
#: oracle's replicates and q bins, the window all grids share, the learning curve's grid and sizes,
#: and the XGBoost variants tried (changes to the profile's settings).
#: The error budget's sizes at standard and paper (it runs on a laptop either way).
_LAPTOP_BUDGET = {
    "grids": [64, 96, 128, 192, 256], "split": [1000, 200, 300], "n_rep": 150, "n_bins": 24,
    "common_q_min": 0.3, "learning_grid": 64, "learning_sizes": [500, 1000, 2000, 4000, 8000, 16000],
    "xgb_variants": {"depth 3": {"max_depth": 3}, "depth 10": {"max_depth": 10},
                     "lr 0.02, 4000 trees": {"learning_rate": 0.02, "n_estimators": 4000},
                     "all columns": {"colsample_bytree": 1.0, "subsample": 0.8},
                     "paper's sampling": {"subsample": 0.15, "colsample_bytree": 0.15}},
}

SIZES = {
    "quick": {
        "n": 64, "voxel_nm": 0.5, "q_min_nm": 0.3, "q_max_nm": 3.0, "n_q": 100,
        "n_samples": 800, "split": [0.7, 0.15, 0.15], "n_replicates": 100,
        "learning_sizes": [70, 140, 280],
        "xgb": {"learning_rate": 0.1, "max_depth": 6, "min_child_weight": 3, "subsample": 0.8,
                "colsample_bytree": 0.5, "reg_lambda": 0.2, "max_bin": 128,
                "n_estimators": 300, "early_stopping_rounds": 30},
        "xgb_executor": "local",
        "bar_mape_vs_mean": 0.85, "bar_coverage": [0.6, 1.0],
        "budget": {"grids": [32, 48], "split": [120, 40, 60], "n_rep": 40, "n_bins": 8,
                   "common_q_min": 0.6, "learning_grid": 32, "learning_sizes": [60, 120],
                   "xgb_variants": {"depth 3": {"max_depth": 3}}},
    },
    "standard": {
        "n": 256, "voxel_nm": 0.5, "q_min_nm": 0.075, "q_max_nm": 3.0, "n_q": 196,
        "n_samples": 960, "split": [0.75, 0.1, 0.15], "n_replicates": 200,
        "learning_sizes": [90, 180, 360],
        "xgb": {"learning_rate": 0.05, "max_depth": 6, "min_child_weight": 3, "subsample": 0.6,
                "colsample_bytree": 0.3, "reg_lambda": 0.2, "max_bin": 256,
                "n_estimators": 1500, "early_stopping_rounds": 50},
        "xgb_executor": "local",
        "bar_mape": {"a_nm": 4.5, "porosity": 25.0, "nu": 30.0}, "bar_case_bias": 0.15,
        "bar_coverage": [0.8, 0.97],
        "budget": _LAPTOP_BUDGET,
    },
    "paper": {
        "n": 512, "voxel_nm": 0.5, "q_min_nm": 0.04, "q_max_nm": 3.0, "n_q": 500,
        "n_samples": 2**19 * 10 // 8, "split": [0.8, 0.1, 0.1], "n_replicates": 500,
        "learning_sizes": [2**13, 2**15, 2**17],
        "xgb": {"learning_rate": 0.005, "max_depth": 15, "min_child_weight": 3, "subsample": 0.15,
                "colsample_bytree": 0.15, "reg_lambda": 0.2, "max_bin": 1024,
                "n_estimators": 50000, "early_stopping_rounds": 1000},
        "xgb_executor": "dask",
        "bar_mape": {"a_nm": 1.5, "porosity": 6.0, "nu": 4.0}, "bar_case_bias": 0.02,
        "bar_coverage": [0.85, 0.95],
        "budget": _LAPTOP_BUDGET,
    },
}


def profile_sizes(profile: str | None = None) -> dict:
    """This study's sizes at ``profile`` (default: the current one), a copy of ``SIZES[profile]``."""
    return profiles.pick(SIZES, profile)


#: The study's priors (Röding et al. 2022): correlation length a, porosity eps (two ranges,
#: since eps and 1 - eps give the same two-phase curve) and the layer fraction nu.
A_RANGE_NM = (0.8, 8.0)
POROSITY_RANGES = {"low": (0.1, 0.5), "high": (0.5, 0.9)}
NU_RANGE = (0.05, 0.5)


# --- the study's priors and datasets -----------------------------------------------------------------------------------

DEFAULT_CONFIG = {
    "n": 128,
    "voxel_nm": 0.5,
    "q_min_nm": 0.15,
    "q_max_nm": 3.0,
    "n_q": 200,
    "q_spacing": "linear",
    "phases": 2,
    "porosity": "low",
    "a_range_nm": list(A_RANGE_NM),
    "nu_range": list(NU_RANGE),
    "alpha_log10_range": list(grf.ALPHA_LOG10_RANGE),
    "noise": True,
}


def make_config(**overrides) -> dict:
    """DEFAULT_CONFIG with overrides, validated (unknown keys and bad ranges raise ValueError)."""
    unknown = set(overrides) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; allowed: {sorted(DEFAULT_CONFIG)}")
    config = {**DEFAULT_CONFIG, **overrides}
    _check_config(config)
    return config


def _check_config(config: dict) -> None:
    if config["phases"] not in (2, 3):
        raise ValueError(f"phases={config['phases']!r} must be 2 or 3")
    if config["porosity"] not in POROSITY_RANGES:
        raise ValueError(f"porosity={config['porosity']!r}; allowed: {', '.join(POROSITY_RANGES)}")
    if config["q_spacing"] not in ("linear", "log"):
        raise ValueError(f"q_spacing={config['q_spacing']!r}; allowed: linear, log")
    lo, hi = config["a_range_nm"]
    if not 0 < lo <= hi:
        raise ValueError(f"a_range_nm={config['a_range_nm']!r} must satisfy 0 < lo <= hi (nm)")
    lo, hi = config["nu_range"]
    if not 0 <= lo <= hi < 1:
        raise ValueError(f"nu_range={config['nu_range']!r} must satisfy 0 <= lo <= hi < 1")
    saxs.check_q_window(int(config["n"]), float(config["voxel_nm"]), q_grid(config))


def q_grid(config: dict) -> np.ndarray:
    """The output q grid (nm^-1) of a dataset config."""
    lo, hi, m = float(config["q_min_nm"]), float(config["q_max_nm"]), int(config["n_q"])
    if not 0 < lo < hi or m < 2:
        raise ValueError(f"q range [{lo}, {hi}] nm^-1 with n_q={m} must satisfy 0 < q_min < q_max, n_q >= 2")
    return np.geomspace(lo, hi, m) if config.get("q_spacing") == "log" else np.linspace(lo, hi, m)


def sample_params(rng, config: dict) -> dict:
    """Draw a ~ U[a_range], eps ~ U[porosity range], nu ~ U[nu_range] (three-phase only)."""
    a = float(rng.uniform(*config["a_range_nm"]))
    eps = float(rng.uniform(*POROSITY_RANGES[config["porosity"]]))
    params = {"a_nm": a, "porosity": eps}
    if config["phases"] == 3:
        params["nu"] = float(rng.uniform(*config["nu_range"]))
    return params


def generate_chunk(config: dict, seed: int, start: int, stop: int) -> dict:
    """Samples [start, stop) of a GRF SAXS dataset (for ``datasets.generate``).

    Sample i uses ``datasets.sample_rng(seed, i)``: parameters first, then the structure,
    then the noise, so the result does not depend on chunking. Returns float32 arrays
    'features' (log10 normalised noisy curve), 'intensity' (clean curve, nm^3), and the labels
    'a_nm', 'porosity', 'nu' (three-phase only), plus 'alpha' (NaN without noise).
    """
    config = {**DEFAULT_CONFIG, **config}
    _check_config(config)
    q = q_grid(config)
    n, h = int(config["n"]), float(config["voxel_nm"])
    rows: dict[str, list] = {k: [] for k in ("features", "intensity", "a_nm", "porosity", "alpha")}
    if config["phases"] == 3:
        rows["nu"] = []
    for i in range(start, stop):
        rng = datasets.sample_rng(seed, i)
        params = sample_params(rng, config)
        alpha = grf.sample_alpha(rng, config["alpha_log10_range"]) if config["noise"] else None
        out = grf.saxs_sample(params, n, h, q, rng, noise=bool(config["noise"]), alpha=alpha)
        rows["features"].append(out["features"])
        rows["intensity"].append(out["intensity"])
        rows["alpha"].append(out["alpha"])
        for k, v in params.items():
            rows[k].append(v)
    return {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}


# --- the study's four datasets and replicate curves ---------------------------------------------

STUDY_DATASETS = {  # name -> (phases, porosity range), as in the paper's Table 2
    "two-phase low": (2, "low"),
    "two-phase high": (2, "high"),
    "three-phase low": (3, "low"),
    "three-phase high": (3, "high"),
}


def study_config(sizes: dict, name: str) -> dict:
    """The dataset config of one of ``STUDY_DATASETS`` on the grid and q window of ``sizes``
    (a profile entry with keys n, voxel_nm, q_min_nm, q_max_nm, n_q)."""
    if name not in STUDY_DATASETS:
        raise ValueError(f"name={name!r}; allowed: {', '.join(STUDY_DATASETS)}")
    phases, porosity = STUDY_DATASETS[name]
    return make_config(n=int(sizes["n"]), voxel_nm=float(sizes["voxel_nm"]), q_min_nm=float(sizes["q_min_nm"]),
                       q_max_nm=float(sizes["q_max_nm"]), n_q=int(sizes["n_q"]), phases=phases,
                       porosity=porosity)


def _slug(name: str) -> str:
    return "grf-" + name.replace(" ", "_")


def study_datasets(sizes: dict, *, names=None, seed: int = 0, workers: int = 2, progress: bool = True) -> dict:
    """The study's datasets (cached; see ``datasets.generate``): name -> dict of arrays."""
    names = list(STUDY_DATASETS) if names is None else list(names)
    return {name: datasets.generate(_slug(name), generate_chunk, study_config(sizes, name),
                                    int(sizes["n_samples"]), seed, chunk_size=64, workers=workers,
                                    progress=progress)
            for name in names}


def replicate_chunk(config: dict, seed: int, start: int, stop: int) -> dict:
    """Replicates [start, stop) of one parameter set ``config['params']``: a new structure and
    new noise (alpha drawn as in training) per replicate; same arrays as ``generate_chunk``."""
    config = dict(config)
    params = config.pop("params")
    grf._check_params(params)
    config = {**DEFAULT_CONFIG, **config}
    _check_config(config)
    q = q_grid(config)
    rows: dict[str, list] = {k: [] for k in ("features", "intensity", "alpha")}
    for i in range(start, stop):
        rng = datasets.sample_rng(seed, i)
        alpha = grf.sample_alpha(rng, config["alpha_log10_range"]) if config["noise"] else None
        out = grf.saxs_sample(params, int(config["n"]), float(config["voxel_nm"]), q, rng,
                          noise=bool(config["noise"]), alpha=alpha)
        for k in rows:
            rows[k].append(out[k])
    return {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}


def replicates(sizes: dict, name: str, params: dict, n: int, *, seed: int = 1, workers: int = 2,
               progress: bool = True) -> dict:
    """``n`` replicate curves (cached) of one parameter set on the grid of dataset ``name``."""
    grf._check_params(params)
    config = {**study_config(sizes, name), "params": dict(params)}
    return datasets.generate(_slug(name) + "-replicates", replicate_chunk, config, int(n), seed,
                             chunk_size=32, workers=workers, progress=progress)


# --- models, tables and figures ------------------------------------------------------------------

OUTPUTS = {name: (["a_nm", "porosity", "nu"] if phases == 3 else ["a_nm", "porosity"])
           for name, (phases, _) in STUDY_DATASETS.items()}
LABELS = {"a_nm": "a (nm)", "porosity": "ε", "nu": "ν"}
# Röding et al. 2022, Table 2 (test-set MAPE, %), and the case study (Fig. 6, 500 replicates)
PAPER_MAPE = {
    "two-phase low": {"a_nm": 0.707, "porosity": 4.190},
    "two-phase high": {"a_nm": 0.702, "porosity": 2.026},
    "three-phase low": {"a_nm": 0.727, "porosity": 2.793, "nu": 1.280},
    "three-phase high": {"a_nm": 0.617, "porosity": 1.583, "nu": 2.879},
}
CASE_DATASET = "three-phase high"
CASE_PARAMS = {"a_nm": 4.0, "porosity": 0.70, "nu": 0.20}
PAPER_CASE = {"a_nm": [4.004, 0.025], "porosity": [0.701, 0.009], "nu": [0.201, 0.005]}
PAPER_SECONDS_PER_SAMPLE = {"512": 1.0}  # structure + SAXS on an NVIDIA A40
PAPER_TRAIN_SIZE = 2**19

#: XGBoost settings of the paper (Röding et al. 2022, Methods).
PAPER_XGB = {
    "learning_rate": 0.005, "max_depth": 15, "min_child_weight": 3, "subsample": 0.15,
    "colsample_bytree": 0.15, "reg_lambda": 0.2, "max_bin": 1024,
    "n_estimators": 50000, "early_stopping_rounds": 1000,
}

#: Goals at ``standard`` on 2 CPU cores (test-set MAPE, %), per parameter.
GOAL_MAPE = {"a_nm": 2.5, "porosity": 10.0, "nu": 8.0}

#: The notebook's headline metrics: test MAPE per dataset and parameter against Table 2, and the
#: case study's means against Fig. 6.
HEADLINES = tuple(
    Headline(f"mape.{name}.{o}", f"MAPE {LABELS[o]}, {name}", "%", 1.0, ("<=", GOAL_MAPE[o]),
             PAPER_MAPE[name][o], "Table 2")
    for name in PAPER_MAPE for o in PAPER_MAPE[name]
) + tuple(
    Headline(f"case_study.{o}", f"case study: {LABELS[o]} mean ± sd (true {CASE_PARAMS[o]})",
             "", 1.0, ("in", 0.98 * CASE_PARAMS[o], 1.02 * CASE_PARAMS[o]),
             PAPER_CASE[o], "Fig. 6, 500 replicates")
    for o in CASE_PARAMS)


def xy(data: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (log10 normalised curves) and the label matrix (columns OUTPUTS[name])."""
    if name not in OUTPUTS:
        raise ValueError(f"name={name!r}; allowed: {', '.join(OUTPUTS)}")
    return data["features"], np.column_stack([data[o] for o in OUTPUTS[name]]).astype(float)


def splits(data: dict, name: str, fractions) -> dict:
    """{'train'|'val'|'test': (X, Y)} split by index (samples are iid)."""
    X, Y = xy(data, name)
    return {k: (X[s], Y[s]) for k, s in regress.split_indices(len(X), fractions).items()}


def train_executor(sizes: dict, executor: str | None = None, client=None) -> str:
    """Where the boosters train: ``executor`` if given, else "dask" when a ``client`` is given,
    else the profile's ``sizes["xgb_executor"]`` (default "local"); checked as
    ``datasets.resolve_executor`` checks the executor of dataset generation."""
    return datasets.resolve_executor(executor, client, default=sizes.get("xgb_executor", "local"))


@contextlib.contextmanager
def training_client(sizes: dict, client=None, *, executor: str | None = None, device: str | None = None,
                    workers: int = 1):
    """The Dask client and device to train with at this profile, as a context manager.

    Yields ``(client, device)``: ``(None, device)`` when the boosters train in this process
    (``train_executor`` says "local"), else a client, in this order: the ``client`` given; a
    client of the scheduler at ``SASHELPERS_DASK_SCHEDULER``; the default client of this process
    (``distributed.default_client()``); else a ``LocalCluster`` on this machine, started here.
    Whatever is started here is closed on exit.

    The device is ``device`` as given, except on a ``LocalCluster`` started here: its workers
    share this machine, so ``device=None`` becomes this machine's (``backend.xgboost_device()``),
    and on a GPU the cluster has one worker (two workers may not share a GPU; for several GPUs
    start a ``dask_cuda.LocalCUDACluster`` and pass its client). On a CPU it has ``workers``
    processes splitting the cores (one worker with every core is fastest on one machine: its
    threads share one histogram instead of summing histograms over processes). On any other
    cluster ``device=None`` means the workers' CPUs, unless the profile's XGBoost settings
    name a device.
    """
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers={workers!r} must be a positive integer")
    if train_executor(sizes, executor, client) == "local":
        yield None, device
        return
    if client is not None:
        yield client, device
        return
    import distributed

    with contextlib.ExitStack() as stack:
        address = os.environ.get(datasets.SCHEDULER_ENV)
        if address:
            yield stack.enter_context(distributed.Client(address, set_as_default=False)), device
            return
        try:
            default = distributed.default_client()
        except ValueError:  # no client in this process
            default = None
        if default is not None:  # yielded outside the try: an error in the caller's block propagates
            yield default, device
            return
        device = device or sizes.get("xgb", {}).get("device") or backend.xgboost_device()
        n = 1 if device == "cuda" else int(workers)
        cluster = stack.enter_context(distributed.LocalCluster(
            n_workers=n, threads_per_worker=max(1, (os.cpu_count() or 1) // n), processes=True,
            dashboard_address=":0"))
        yield stack.enter_context(distributed.Client(cluster, set_as_default=False)), device


def train_all(data_by_name: dict, sizes: dict, *, device=None, save_to=None, seed: int = 0, client=None,
              executor: str | None = None, workers: int = 1) -> tuple[dict, dict]:
    """One BoostedRegressor per dataset (one booster per parameter).

    Parameters
    ----------
    data_by_name : dict
        Dataset name -> arrays (``study_datasets``).
    sizes : dict
        The profile's sizes (``profile_sizes``): split, XGBoost settings, ``xgb_executor``.
    device : {None, "cpu", "cuda"}
        The XGBoost device (see ``training_client`` for its meaning on a cluster).
    save_to : str or Path, optional
        Save each model to ``<save_to>/<dataset_name>``.
    seed : int
        XGBoost's seed.
    client : distributed.Client, optional
        Train on this Dask cluster (implies ``executor="dask"``).
    executor : {None, "local", "dask"}
        Overrides the profile's ``xgb_executor`` ("dask" at ``paper``, "local" otherwise).
    workers : int
        Workers of the ``LocalCluster`` started when "dask" finds no cluster (CPU only).

    Returns
    -------
    (models, evaluations)
        Dicts by dataset name; each evaluation also holds 'fit_seconds' and the mean-predictor
        MAPE of the test set ('mean_mape'); each model's ``history["engine"]`` says where it ran.
    """
    models, evals = {}, {}
    with training_client(sizes, client, executor=executor, device=device, workers=workers) as (cl, dev):
        for name, data in data_by_name.items():
            sp = splits(data, name, sizes["split"])
            m = regress.BoostedRegressor(OUTPUTS[name], sizes["xgb"], device=dev, seed=seed)
            m.fit(*sp["train"], *sp["val"], client=cl)
            ev = m.evaluate(sp)
            ev["fit_seconds"] = m.history["fit_seconds"]
            ev["mean_mape"] = {o: regress.mean_baseline_mape(sp["train"][1][:, j], sp["test"][1][:, j])
                               for j, o in enumerate(m.outputs)}
            models[name], evals[name] = m, ev
            if save_to is not None:
                m.save(f"{save_to}/{name.replace(' ', '_')}", dataset=name, sizes=sizes)
    return models, evals


def markdown_table(header, rows) -> str:
    """A markdown table from a header list and row lists (floats with 3 decimals)."""
    def fmt(v):
        if isinstance(v, (list, tuple)):
            return ", ".join(fmt(x) for x in v)
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
        return "—" if v is None else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def table2(evals: dict, metric: str = "mape") -> str:
    """Table 2 of the paper, this run's train/val/test errors; for MAPE the paper's test value too."""
    params = ["a_nm", "porosity", "nu"]
    header = ["dataset", "split"] + [f"{metric.upper()} {LABELS[p]}" for p in params]
    rows = []
    for name, ev in evals.items():
        for split in ("train", "val", "test"):
            rows.append([name, split] + [ev[metric][split].get(p) for p in params])
        if metric == "mape":
            rows.append([name, "**paper, test**"] + [PAPER_MAPE[name].get(p) for p in params])
    return markdown_table(header, rows)


def test_mape(evals: dict) -> dict:
    """{dataset: {parameter: test MAPE (%)}} for the results record."""
    return {name: dict(ev["mape"]["test"]) for name, ev in evals.items()}


def case_summary(pred: dict) -> dict:
    """{parameter: [mean, sd]} of the case-study predictions."""
    return {k: [float(np.mean(v)), float(np.std(v, ddof=1))] for k, v in pred.items()}


def seconds_per_sample(sizes: dict, n_samples: int = 3, seed: int = 0) -> float:
    """Best-of-n wall time (s) of one three-phase sample (structure + SAXS curve) on this grid."""
    q = q_grid(study_config(sizes, CASE_DATASET))
    rng = np.random.default_rng(seed)
    best = float("inf")
    for _ in range(n_samples + 1):  # the first call warms the cached grids
        t0 = time.perf_counter()
        grf.saxs_sample(CASE_PARAMS, int(sizes["n"]), float(sizes["voxel_nm"]), q, rng)
        best = min(best, time.perf_counter() - t0)
    return best


def error_by_noise(model, X, Y, alpha, bins=4) -> dict:
    """Test MAPE per output in bins of log10(alpha) (counts per unit intensity)."""
    edges = np.linspace(*grf.ALPHA_LOG10_RANGE, bins + 1)
    pred = model.predict(X)
    return {"edges": edges, "mape": {o: _mape_by(np.log10(alpha), edges, Y[:, j], pred[o])
                                     for j, o in enumerate(model.outputs)}}


# --- figures ------------------------------------------------------------------------------------

def phase_cmap():
    """Pore white, layer orange, solid dark grey; with a norm for the densities 0 / 0.65 / 1."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    return ListedColormap(["white", "tab:orange", "0.25"]), BoundaryNorm([-0.1, 0.3, 0.8, 1.1], 3)


def show_slices(rho, voxel_nm: float, axes, title: str = ""):
    """Orthogonal central slices (xy, xz, yz) of a density on three axes."""
    rho = np.asarray(rho)
    n = rho.shape[0]
    cmap, norm = phase_cmap()
    ext = [0, n * voxel_nm, 0, n * voxel_nm]
    for ax, sl, lab in zip(axes, (rho[:, :, n // 2], rho[:, n // 2, :], rho[n // 2]), ("xy", "xz", "yz")):
        ax.imshow(sl.T, origin="lower", extent=ext, cmap=cmap, norm=norm, interpolation="nearest")
        ax.set(title=f"{title} {lab}".strip(), xlabel="nm", ylabel="nm")
        ax.grid(False)


def plot_pred_vs_true(models: dict, data_by_name: dict, sizes: dict, max_points: int = 2000):
    """Predicted vs true on the test sets: one row per dataset, one column per parameter."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 3, figsize=(10, 2.8 * len(models)), squeeze=False)
    for row, (name, m) in zip(axes, models.items()):
        X, Y = splits(data_by_name[name], name, sizes["split"])["test"]
        X, Y = X[:max_points], Y[:max_points]
        pred = m.predict(X)
        for j, ax in enumerate(row):
            if j >= len(m.outputs):
                ax.axis("off")
                continue
            o = m.outputs[j]
            ax.plot(Y[:, j], pred[o], ".", ms=2, alpha=0.5)
            lim = [Y[:, j].min(), Y[:, j].max()]
            ax.plot(lim, lim, "k-", lw=0.8)
            ax.set(xlabel=f"true {LABELS[o]}", ylabel=f"predicted {LABELS[o]}",
                   title=f"{name}: MAPE {regress.mape(Y[:, j], pred[o]):.2f} %")
    fig.tight_layout()
    return fig


def plot_case_hist(pred: dict, truth: dict = CASE_PARAMS, paper: dict = PAPER_CASE):
    """Histograms of the case-study predictions with the truth and the paper's mean ± sd."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pred), figsize=(3.4 * len(pred), 3))
    for ax, (k, v) in zip(np.atleast_1d(axes), pred.items()):
        ax.hist(v, bins=25, color="C0", alpha=0.7, label="this run")
        ax.axvline(truth[k], color="k", lw=1.5, label="true")
        mu, sd = paper[k]
        ax.axvspan(mu - sd, mu + sd, color="C3", alpha=0.25, label="paper mean ± sd")
        ax.set(xlabel=LABELS[k], title=f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_learning_curve(lc: dict, target: int = PAPER_TRAIN_SIZE, paper: dict | None = None):
    """Test MAPE vs training-set size (log-log) with power-law fits extrapolated to ``target``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    n = np.asarray(lc["sizes"], dtype=float)
    grid = np.geomspace(n.min(), target, 50)
    fits = {}
    for i, (o, e) in enumerate(lc["mape"].items()):
        c, b = regress.power_law(n, e)
        fits[o] = (c, b, c * target**b)
        ax.plot(n, e, "o", color=f"C{i}", label=f"{LABELS[o]}: ∝ n^{b:.2f}")
        ax.plot(grid, c * grid**b, "--", color=f"C{i}", lw=1)
        if paper and o in paper:
            ax.plot([target], [paper[o]], "*", color=f"C{i}", ms=12)
    ax.set(xscale="log", yscale="log", xlabel="training curves", ylabel="test MAPE (%)",
           title="Learning curve (stars: paper at 2¹⁹, 512³ grid)")
    ax.legend(fontsize=8)
    return fig, fits


def babinet_curves(sizes: dict, a_nm: float = 3.0, porosity: float = 0.3, seed: int = 0) -> dict:
    """Babinet's principle on one field g: the two-phase curves of (g, eps) and (-g, 1 - eps)
    (exact complements: identical curves) and of an independent field at 1 - eps (same statistics)."""
    n, h = int(sizes["n"]), float(sizes["voxel_nm"])
    q = q_grid(study_config(sizes, "two-phase low"))
    g = grf.gaussian_field(n, h, a_nm, np.random.default_rng(seed))
    curve = lambda rho: np.asarray(saxs.saxs_curve(rho, h, q), dtype=float)  # noqa: E731
    rho = grf.two_phase(g, porosity)
    rho_c = grf.two_phase(-g, 1 - porosity)
    other = grf.two_phase(grf.gaussian_field(n, h, a_nm, np.random.default_rng(seed + 1)), 1 - porosity)
    return {"q": q, "rho": rho, "rho_complement": rho_c, "I": curve(rho), "I_complement": curve(rho_c),
            "I_other_field": curve(other)}


def replicate_structure(sizes: dict, index: int, seed: int = 1) -> dict:
    """Replicate ``index`` of the case study rebuilt from its seed (as ``grf.replicate_chunk``
    draws it), with its structure: the 'true' medium behind one replicate curve."""
    from ..core.datasets import sample_rng

    config = study_config(sizes, CASE_DATASET)
    rng = sample_rng(seed, index)
    alpha = grf.sample_alpha(rng, config["alpha_log10_range"])
    return grf.saxs_sample(CASE_PARAMS, int(sizes["n"]), float(sizes["voxel_nm"]), q_grid(config), rng,
                           alpha=alpha, return_structure=True)


def tidy_q_axis(ax, ticks=(0.05, 0.1, 0.2, 0.5, 1, 2, 3)):
    """Plain-number major ticks on a log q axis and no minor labels (they collide on short ranges)."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    return ax


def curve_axes(ax=None, intensity_label: str = r"$I(q)$ (nm$^3$)"):
    """``plotting.curve_axes`` with intensity in nm^3 and a tidy q axis."""
    from ..core import plotting

    return tidy_q_axis(plotting.curve_axes(ax, intensity_label=intensity_label))


def learning_curve(data: dict, name: str, sizes: dict, evals: dict, *, device=None, client=None,
                   executor: str | None = None, workers: int = 1) -> dict:
    """Test MAPE vs training-set size for dataset ``name``: point models retrained on the first
    ``sizes['learning_sizes']`` curves, plus the full training set's result from ``evals``
    (already trained, so not repeated). ``device``, ``client``, ``executor`` and ``workers`` as
    in ``train_all``: at ``paper`` the models train on Dask."""
    sp = splits(data, name, sizes["split"])
    n_full = len(sp["train"][0])
    small = [s for s in sizes["learning_sizes"] if s < n_full]
    with training_client(sizes, client, executor=executor, device=device, workers=workers) as (cl, dev):
        lc = regress.learning_curve(*sp["train"], *sp["val"], *sp["test"], small, OUTPUTS[name], sizes["xgb"],
                                    device=dev, client=cl)
    lc["sizes"].append(n_full)
    for o in OUTPUTS[name]:
        lc["mape"][o].append(evals[name]["mape"]["test"][o])
    return lc


# --- the error budget: what limits the test error at a given grid -----------------------------

#: Budget datasets share one q lattice, q_k = 3 - BUDGET_Q_STEP k (nm^-1), so a curve of any grid
#: can be cropped to the window of any coarser one and the points coincide.
BUDGET_Q_STEP = 0.015
BUDGET_Q_MAX = 3.0


def budget_config(n: int, voxel_nm: float = 0.5, name: str = CASE_DATASET) -> dict:
    """Dataset ``name`` on an n^3 grid with the widest q window that grid resolves, on the shared
    budget q lattice (linear, step ``BUDGET_Q_STEP``, up to ``BUDGET_Q_MAX``)."""
    lo, _ = saxs.q_window(int(n), float(voxel_nm))
    k = int(np.floor((BUDGET_Q_MAX - lo) / BUDGET_Q_STEP + 1e-9))
    phases, porosity = STUDY_DATASETS[name]
    return make_config(n=int(n), voxel_nm=float(voxel_nm), q_min_nm=round(BUDGET_Q_MAX - BUDGET_Q_STEP * k, 6),
                       q_max_nm=BUDGET_Q_MAX, n_q=k + 1, phases=phases, porosity=porosity)


def budget_dataset(n: int, n_samples: int, *, voxel_nm: float = 0.5, name: str = CASE_DATASET, seed: int = 0,
                   workers: int = 2, progress: bool = True) -> dict:
    """``n_samples`` curves of dataset ``name`` on an n^3 grid (``budget_config``; cached), with
    their q grid under 'q_nm'."""
    config = budget_config(n, voxel_nm, name)
    data = datasets.generate(_slug(name) + "-budget", generate_chunk, config, int(n_samples), seed,
                             chunk_size=32, workers=workers, progress=progress)
    return {**data, "q_nm": q_grid(config)}


def crop_features(q_nm, features, q_min: float, q_max: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Features (log10 I / Q) cropped to [q_min, q_max] and normalised again by the windowed
    invariant of the cropped window, as if measured there; returns (q, features)."""
    q = np.asarray(q_nm, dtype=float)
    keep = (q >= q_min - 1e-9) & (q <= q_max + 1e-9)
    if keep.sum() < 2:
        raise ValueError(f"[{q_min}, {q_max}] nm^-1 keeps {keep.sum()} of the q points in [{q.min():.3g}, {q.max():.3g}]")
    f = np.asarray(features, dtype=float)[..., keep]
    inv = grf.windowed_invariant(q[keep], 10.0 ** f)
    return q[keep], f - np.log10(np.asarray(inv))[..., None]


#: Finite-difference steps of the oracle (``fisher_oracle``), per parameter.
ORACLE_STEPS = {"a_nm": 0.2, "porosity": 0.02, "nu": 0.02}


def oracle_replicates(n: int, params: dict = CASE_PARAMS, n_rep: int = 150, *, voxel_nm: float = 0.5,
                      name: str = CASE_DATASET, steps: dict | None = None, seed: int = 11, workers: int = 2,
                      progress: bool = True) -> dict:
    """Noise-free replicate curves for ``fisher_oracle`` on an n^3 grid (``budget_config``; cached).

    Returns {"q_nm": q, "centre": (n_rep, n_q) clean intensities at ``params``, and for each
    parameter p and sign s in (+1, -1), (p, s): the same replicates (same seeds, so the same white
    noise) at params[p] + s * steps[p]}.
    """
    steps = dict(ORACLE_STEPS if steps is None else steps)
    config = {**budget_config(n, voxel_nm, name), "noise": False}
    out = {"q_nm": q_grid(config)}
    points = [("centre", dict(params))] + [((p, s), {**params, p: params[p] + s * steps[p]})
                                           for p in params for s in (1, -1)]
    for key, pr in points:
        grf._check_params(pr)
        data = datasets.generate(_slug(name) + "-oracle", replicate_chunk, {**config, "params": pr}, int(n_rep), seed,
                                 chunk_size=16, workers=workers, progress=progress)
        out[key] = data["intensity"].astype(float)
    return out


def log_bins(q_nm, n_bins: int) -> list[np.ndarray]:
    """Indices of the q points in ``n_bins`` log-spaced bins spanning the grid (empty bins dropped)."""
    q = np.asarray(q_nm, dtype=float)
    edges = np.geomspace(q.min(), q.max() * (1 + 1e-9), n_bins + 1)
    idx = [np.flatnonzero((q >= lo) & (q < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    return [i for i in idx if i.size]


def _binned_features(q, intensity, bins) -> np.ndarray:
    f = grf.features(q, intensity)
    return np.stack([f[..., i].mean(axis=-1) for i in bins], axis=-1)


def fisher_oracle(reps: dict, params: dict = CASE_PARAMS, *, steps: dict | None = None, q_min: float = 0.0,
                  q_max: float = np.inf, n_bins: int = 24, alpha=None) -> dict:
    """How well can *any* unbiased regressor read ``params`` from one curve: the Cramér-Rao bound.

    The observation is the curve's features (log10 I / Q on the window [q_min, q_max], as the
    regressors see them) averaged in ``n_bins`` log-spaced q bins. Its covariance across
    structures is measured from the replicates (``oracle_replicates``); the derivatives of its
    mean by central differences with the same structures on both sides. With ``alpha`` (counts
    per unit intensity, scalar) the photon noise of ``grf.lognormal_noise`` is added in closed
    form: variance ln(1 + 1/(alpha I)) / ln(10)^2 per q point, averaged over each bin's points.

    Returns {"sd": {p: bound on the standard deviation (parameter units)}, "mape": {p: the MAPE
    (%) of an unbiased Gaussian estimator at that bound, 100 sqrt(2/pi) sd / value}, "n_bins": the
    bins used, "n_rep": replicates}; NaN where too few replicates left the estimated information
    without a positive inverse.
    """
    steps = dict(ORACLE_STEPS if steps is None else steps)
    q = np.asarray(reps["q_nm"], dtype=float)
    keep = (q >= q_min - 1e-9) & (q <= q_max + 1e-9)
    qk = q[keep]
    bins = log_bins(qk, n_bins)
    centre = reps["centre"][:, keep]
    names = list(params)
    D = np.stack([(_binned_features(qk, reps[(p, 1)][:, keep], bins)
                   - _binned_features(qk, reps[(p, -1)][:, keep], bins)) / (2 * steps[p]) for p in names])
    extra = None
    if alpha is not None:
        var = np.log1p(1.0 / (float(alpha) * centre.mean(axis=0))) / np.log(10) ** 2
        extra = np.array([var[i].sum() / i.size**2 for i in bins])
    cov = regress.cramer_rao(D, _binned_features(qk, centre, bins), extra)
    # a non-positive diagonal means the replicates were too few to estimate the information: NaN
    sd = {p: float(np.sqrt(cov[j, j])) if cov[j, j] > 0 else float("nan") for j, p in enumerate(names)}
    return {"sd": sd, "mape": {p: 100 * np.sqrt(2 / np.pi) * sd[p] / params[p] for p in names},
            "n_bins": len(bins), "n_rep": int(len(centre))}


#: The error budget's XGBoost settings and split: the ``standard`` profile's settings, 1000 / 200 /
#: 300 curves of each budget dataset for train / validation / test.
BUDGET_SPLIT = (1000, 200, 300)


def _budget_splits(X, Y, split=BUDGET_SPLIT) -> dict:
    a, b, c = split
    if len(X) < a + b + c:
        raise ValueError(f"{len(X)} curves; the split {split} needs {a + b + c}")
    return {"train": (X[:a], Y[:a]), "val": (X[a:a + b], Y[a:a + b]), "test": (X[a + b:a + b + c], Y[a + b:a + b + c])}


def mape_with_error(y_true, y_pred, n_boot: int = 400, seed: int = 0) -> tuple[float, float]:
    """MAPE (%) and its bootstrap standard error over the test curves."""
    ape = 100 * np.abs(np.asarray(y_pred, float) - np.asarray(y_true, float)) / np.abs(np.asarray(y_true, float))
    rng = np.random.default_rng(seed)
    boots = ape[rng.integers(0, ape.size, (n_boot, ape.size))].mean(axis=1)
    return float(ape.mean()), float(boots.std(ddof=1))


def budget_fit(X, Y, outputs, xgb: dict, *, split=BUDGET_SPLIT, seed: int = 0, case=None,
               test_predictions: bool = False) -> dict:
    """Train point boosters (no quantile models) on the first split[0] rows, stop early on the next
    split[1], and report test MAPE with bootstrap errors: {p: [mape, se]} and 'fit_seconds'. With
    ``case`` (features of replicate curves at ``CASE_PARAMS``) also 'case': {p: {"mape", "sd",
    "bias"}} of the predictions of those replicates, comparable with ``fisher_oracle``; with
    ``test_predictions`` also 'test_predictions': {p: array} (not JSON: pop it before archiving)."""
    sp = _budget_splits(X, Y, split)
    m = regress.BoostedRegressor(outputs, xgb, quantiles=None, device="cpu", seed=seed)
    m.fit(*sp["train"], *sp["val"])
    pred = m.predict(sp["test"][0])
    out = {p: list(mape_with_error(sp["test"][1][:, j], pred[p])) for j, p in enumerate(outputs)}
    out["fit_seconds"] = float(m.history["fit_seconds"])
    if case is not None:
        pc = m.predict(case)
        out["case"] = {p: {"mape": regress.mape(np.full(len(case), CASE_PARAMS[p]), pc[p]),
                           "sd": float(np.std(pc[p], ddof=1)), "bias": float(np.mean(pc[p]) - CASE_PARAMS[p])}
                       for p in outputs}
    if test_predictions:
        out["test_predictions"] = pred
    return out


def case_features(reps: dict, *, q_min: float, q_max: float = np.inf, noise: bool = True, seed: int = 0) -> np.ndarray:
    """Features of the oracle's replicate curves at ``CASE_PARAMS`` (``oracle_replicates``) on
    [q_min, q_max]: with photon noise at alpha drawn from the prior as in training, or clean."""
    intensity = reps["centre"]
    if noise:
        rng = np.random.default_rng(seed)
        alpha = 10.0 ** rng.uniform(*grf.ALPHA_LOG10_RANGE, size=(len(intensity), 1))
        intensity = grf.lognormal_noise(intensity, alpha, rng)
    return crop_features(reps["q_nm"], np.log10(intensity), q_min, q_max)[1]


def budget_features(data: dict, *, q_min: float, q_max: float = np.inf, noise: bool = True) -> np.ndarray:
    """A budget dataset's features on [q_min, q_max]: the noisy curves as generated, or (noise=False)
    the clean curves, each normalised by its windowed invariant on that window."""
    if noise:
        return crop_features(data["q_nm"], data["features"], q_min, q_max)[1]
    return crop_features(data["q_nm"], np.log10(data["intensity"].astype(float)), q_min, q_max)[1]


#: The error budget's experiments (``python -m sashelpers.studies.grf_porous NAME``), archived
#: under book/records/experiments and plotted by notebook 02.
BUDGET_EXPERIMENTS = ("budget_box", "budget_oracle", "budget_learning", "budget_learning_large", "budget_xgb")
#: Noise levels (log10 alpha) of the oracle: the prior's range in steps of half a decade.
ORACLE_ALPHA_LOG10 = tuple(np.arange(grf.ALPHA_LOG10_RANGE[0], grf.ALPHA_LOG10_RANGE[1] + 1e-9, 0.5).round(2))


def _budget_data(n: int, count: int, progress: bool) -> tuple[dict, np.ndarray]:
    d = budget_dataset(n, count, progress=progress)
    return d, xy(d, CASE_DATASET)[1]


def _mape_by(values, edges, y_true, y_pred) -> list:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (values >= lo) & (values <= hi)
        out.append(regress.mape(y_true[sel], y_pred[sel]) if sel.any() else float("nan"))
    return out


def budget_box(sizes: dict, progress: bool = True) -> dict:
    """XGBoost's test MAPE per grid N (box edge L = 0.5 N nm) on the window all grids share and on
    each grid's widest window, with and without photon noise, and without q > 1.5 nm^-1 (what a
    voxel of 1 nm would lose); on the widest noisy window also per third of log10 alpha and of a.
    Each fit also predicts the oracle's replicates at ``CASE_PARAMS`` ('case', see ``budget_fit``)."""
    b = sizes["budget"]
    outputs = OUTPUTS[CASE_DATASET]
    rows = []
    for n in b["grids"]:
        d, Y = _budget_data(n, sum(b["split"]), progress)
        reps = oracle_replicates(n, n_rep=b["n_rep"], progress=progress)
        q0 = float(d["q_nm"][0])
        row = {"n": int(n), "box_nm": 0.5 * n, "q_min_nm": q0, "fits": {}}
        for label, kw in (("common window, noisy", {"q_min": b["common_q_min"]}),
                          ("common window, noise off", {"q_min": b["common_q_min"], "noise": False}),
                          ("widest window, noisy", {"q_min": q0}),
                          ("widest window, noise off", {"q_min": q0, "noise": False}),
                          ("widest window to 1.5 nm^-1, noisy", {"q_min": q0, "q_max": 1.5})):
            X = budget_features(d, **kw)
            row["fits"][label] = budget_fit(X, Y, outputs, sizes["xgb"], split=b["split"], case=case_features(reps, **kw),
                                            test_predictions=True)
        # errors per noise level and per a, of the widest noisy window's model
        pred = row["fits"]["widest window, noisy"]["test_predictions"]
        for fit in row["fits"].values():
            fit.pop("test_predictions")
        test = slice(sum(b["split"][:2]), sum(b["split"]))
        y_test = Y[test]
        la = np.log10(d["alpha"][test].astype(float))
        la_edges = np.linspace(*grf.ALPHA_LOG10_RANGE, 4)
        a_edges = np.linspace(*A_RANGE_NM, 4)
        row["by_alpha"] = {"edges_log10": la_edges.tolist(),
                           "mape": {p: _mape_by(la, la_edges, y_test[:, j], pred[p]) for j, p in enumerate(outputs)}}
        row["by_a"] = {"edges_nm": a_edges.tolist(),
                       "mape": {p: _mape_by(y_test[:, 0], a_edges, y_test[:, j], pred[p]) for j, p in enumerate(outputs)}}
        rows.append(row)
    return {"dataset": CASE_DATASET, "split": b["split"], "xgb": sizes["xgb"], "grids": rows}


def budget_oracle(sizes: dict, progress: bool = True) -> dict:
    """The Cramér-Rao bound (``fisher_oracle``) at the case-study parameters per grid, on the common
    and the widest window, noise off and at each of ``ORACLE_ALPHA_LOG10`` (and averaged over the
    log-uniform alpha prior), with the replicate scatter of the binned features per q bin."""
    b = sizes["budget"]
    rows = []
    for n in b["grids"]:
        reps = oracle_replicates(n, n_rep=b["n_rep"], progress=progress)
        q0 = float(reps["q_nm"][0])
        row = {"n": int(n), "box_nm": 0.5 * n, "q_min_nm": q0, "windows": {}}
        for label, q_min in (("common window", b["common_q_min"]), ("widest window", q0)):
            w = {"noise off": fisher_oracle(reps, q_min=q_min, n_bins=b["n_bins"])["mape"]}
            per_alpha = [fisher_oracle(reps, q_min=q_min, n_bins=b["n_bins"], alpha=10.0**la)["mape"]
                         for la in ORACLE_ALPHA_LOG10]
            w["by_log10_alpha"] = {"log10_alpha": list(ORACLE_ALPHA_LOG10),
                                   "mape": {p: [r[p] for r in per_alpha] for p in CASE_PARAMS}}
            w["alpha prior mean"] = {p: float(np.mean([r[p] for r in per_alpha])) for p in CASE_PARAMS}
            row["windows"][label] = w
        bins = log_bins(reps["q_nm"], b["n_bins"])
        f = _binned_features(reps["q_nm"], reps["centre"], bins)
        row["scatter"] = {"q_nm": [float(np.exp(np.log(reps["q_nm"][i]).mean())) for i in bins],
                          "sd_log10": f.std(axis=0, ddof=1).tolist()}
        rows.append(row)
    return {"params": CASE_PARAMS, "steps": ORACLE_STEPS, "n_rep": b["n_rep"], "grids": rows}


def budget_learning(sizes: dict, progress: bool = True) -> dict:
    """Test MAPE against the number of training curves on the ``learning_grid`` (common window,
    noisy), with the validation and test sets of ``split`` after the largest training set."""
    b = sizes["budget"]
    n_val, n_test = b["split"][1:]
    sizes_n = [int(s) for s in b["learning_sizes"]]
    d, Y = _budget_data(b["learning_grid"], max(sizes_n) + n_val + n_test, progress)
    X = budget_features(d, q_min=b["common_q_min"])
    top = max(sizes_n)
    val, test = slice(top, top + n_val), slice(top + n_val, top + n_val + n_test)
    rows = []
    for s in sizes_n:
        idx = np.r_[0:s, val, test]
        rows.append({"n_train": s, **budget_fit(X[idx], Y[idx], OUTPUTS[CASE_DATASET], sizes["xgb"],
                                                split=(s, n_val, n_test))})
    return {"grid": int(b["learning_grid"]), "q_min_nm": b["common_q_min"], "rows": rows}


def budget_learning_large(sizes: dict, progress: bool = True) -> dict:
    """Test MAPE against the number of training curves on the largest budget grid (widest window,
    noisy): training sets of 1/4, 1/2 and all of ``split[0]``, the same validation and test sets."""
    b = sizes["budget"]
    n = b["grids"][-1]
    d, Y = _budget_data(n, sum(b["split"]), progress)
    X = budget_features(d, q_min=float(d["q_nm"][0]))
    n_train, n_val, n_test = b["split"]
    rows = []
    for s in (n_train // 4, n_train // 2, n_train):
        idx = np.r_[0:s, n_train:n_train + n_val + n_test]
        rows.append({"n_train": int(s), **budget_fit(X[idx], Y[idx], OUTPUTS[CASE_DATASET], sizes["xgb"],
                                                     split=(s, n_val, n_test))})
    return {"grid": int(n), "q_min_nm": float(d["q_nm"][0]), "rows": rows}


def budget_xgb(sizes: dict, progress: bool = True) -> dict:
    """Test MAPE of XGBoost variants (changes to the profile's settings) on the third grid of the
    budget (128^3 at standard), widest window, noisy."""
    b = sizes["budget"]
    n = b["grids"][min(2, len(b["grids"]) - 1)]
    d, Y = _budget_data(n, sum(b["split"]), progress)
    X = budget_features(d, q_min=float(d["q_nm"][0]))
    rows = {"profile's settings": budget_fit(X, Y, OUTPUTS[CASE_DATASET], sizes["xgb"], split=b["split"])}
    for label, change in b["xgb_variants"].items():
        rows[label] = {"change": change, **budget_fit(X, Y, OUTPUTS[CASE_DATASET], {**sizes["xgb"], **change},
                                                      split=b["split"])}
    return {"grid": int(n), "variants": rows}


def budget_experiment(name: str, profile: str = "standard") -> dict:
    """Run one of ``BUDGET_EXPERIMENTS`` at ``profile``'s budget sizes; returns its results."""
    runs = {"budget_box": budget_box, "budget_oracle": budget_oracle, "budget_learning": budget_learning,
            "budget_learning_large": budget_learning_large, "budget_xgb": budget_xgb}
    if name not in runs:
        raise ValueError(f"experiment {name!r}; allowed: {', '.join(runs)}")
    return runs[name](profile_sizes(profile))


def main(argv=None) -> int:
    """``python -m sashelpers.studies.grf_porous NAME [--profile P]``: run and archive an error-budget experiment."""
    from ..core import report

    return report.experiment_cli(STUDY, "sashelpers.studies.grf_porous", BUDGET_EXPERIMENTS, budget_experiment, argv,
                                 doc="Study 2's error budget: what limits the test error at a given grid.")


if __name__ == "__main__":
    raise SystemExit(main())


# --- the error budget's figures and extrapolation -------------------------------------------------

_BUDGET_LINES = (  # (fit label, colour, style) of the box figure
    ("common window, noisy", "C0", "-"),
    ("common window, noise off", "C0", "--"),
    ("widest window, noisy", "C3", "-"),
    ("widest window, noise off", "C3", "--"),
)


def budget_extrapolation(box: dict, learning: dict, oracle: dict | None = None, learning_large: dict | None = None,
                         *, n_target: int = 512, train_target: int = PAPER_TRAIN_SIZE) -> dict:
    """Scaling laws of the budget, extrapolated to the paper's grid and training set.

    Fits MAPE = c N^b_N over the grids (widest window, noisy, ``split[0]`` training curves; weighted
    by the bootstrap errors) and MAPE = c' n^b_n over a learning curve, assumes the two factors
    multiply, and predicts MAPE(n_target, train_target) = MAPE(n_target, split[0]) x
    (train_target / split[0])^b_n, with a one-sigma range from both fits' covariances (fit
    statistics only: it does not cover a wrong model). b_n comes from ``learning_large`` (the largest
    grid) when given, else from ``learning``; both exponents are reported. With the oracle, also its
    widest-window bound at the case point (alpha prior mean) extrapolated in N alone.
    Returns {parameter: {...}}.
    """
    n_budget = int(box["split"][0])
    grids = [r["n"] for r in box["grids"]]

    def n_fit(lc, p):
        rows = lc["rows"]
        return regress.power_law_fit([r["n_train"] for r in rows], [r[p][0] for r in rows], [r[p][1] for r in rows])
    out = {}
    for p in OUTPUTS[CASE_DATASET]:
        fits = [r["fits"]["widest window, noisy"][p] for r in box["grids"]]
        f_box = regress.power_law_fit(grids, [m for m, _ in fits], [s for _, s in fits])
        f_small = n_fit(learning, p)
        f_n = n_fit(learning_large, p) if learning_large is not None else f_small
        at_box, sd_box = f_box["at"](n_target)
        sd_log = np.hypot(sd_box, np.log(train_target / n_budget) * f_n["b_se"])
        value = at_box * (train_target / n_budget) ** f_n["b"]
        entry = {"b_box": f_box["b"], "b_box_se": f_box["b_se"],
                 "b_n_small": f_small["b"], "b_n_small_se": f_small["b_se"], "small_grid": learning["grid"],
                 "b_n": f_n["b"], "b_n_se": f_n["b_se"],
                 "b_n_grid": (learning_large or learning)["grid"],
                 "mape_at_target_budget_n": at_box, "mape_paper_scale": value,
                 "mape_paper_scale_1sigma": [value * np.exp(-sd_log), value * np.exp(sd_log)],
                 "paper": PAPER_MAPE[CASE_DATASET][p]}
        if oracle is not None:
            ys = np.array([r["windows"]["widest window"]["alpha prior mean"][p] for r in oracle["grids"]], dtype=float)
            ok = np.isfinite(ys)
            if ok.sum() >= 2:
                f_o = regress.power_law_fit(np.asarray([r["n"] for r in oracle["grids"]])[ok], ys[ok])
                entry.update(oracle_b_box=f_o["b"], oracle_case_mape_at_target=f_o["at"](n_target)[0])
        out[p] = entry
    return out


def extrapolation_table(extra: dict, n_target: int = 512) -> str:
    """The extrapolation as a markdown table beside the paper's Table 2 (three-phase high)."""
    rows = []
    for p, e in extra.items():
        lo, hi = e["mape_paper_scale_1sigma"]
        rows.append([LABELS[p], f"{e['b_box']:.2f} ± {e['b_box_se']:.2f}",
                     f"{e['b_n_small']:.2f} ± {e['b_n_small_se']:.2f}", f"{e['b_n']:.2f} ± {e['b_n_se']:.2f}",
                     e["mape_at_target_budget_n"], f"{e['mape_paper_scale']:.2f} ({lo:.2f}–{hi:.2f})",
                     e.get("oracle_case_mape_at_target"), e["paper"]])
    e0 = next(iter(extra.values()))
    return markdown_table(["parameter", "exponent in N", f"exponent in n, {e0['small_grid']}³",
                           f"exponent in n, {e0['b_n_grid']}³ (used)", f"MAPE at {n_target}³, budget n (%)",
                           "MAPE at paper scale, 1σ (%)", f"oracle at {n_target}³, case point (%)",
                           "paper, Table 2 (%)"], rows)


def _plain_log_y(ax):
    """Plain numbers (2, 5, 10, 20) on a log y axis instead of powers of ten."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_budget_box(box: dict, oracle: dict):
    """Test MAPE against the box edge: XGBoost over the prior (common and widest windows, noise on
    and off), XGBoost and the oracle at the case-study point, and the paper's value."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    outputs = OUTPUTS[CASE_DATASET]
    fig, axes = plt.subplots(1, len(outputs), figsize=(4.2 * len(outputs), 3.6), sharex=True)
    L = np.array([r["box_nm"] for r in box["grids"]])
    Lo = np.array([r["box_nm"] for r in oracle["grids"]])
    for ax, p in zip(axes, outputs):
        for label, colour, style in _BUDGET_LINES:
            m = np.array([r["fits"][label][p] for r in box["grids"]])
            ax.errorbar(L, m[:, 0], m[:, 1], color=colour, ls=style, marker="o", ms=3, capsize=2,
                        label=f"XGBoost, {label}")
        case = [r["fits"]["widest window, noisy"]["case"][p]["mape"] for r in box["grids"]]
        ax.plot(L, case, "x", color="C3", ms=7, label="XGBoost at the case point (widest, noisy)")
        for key, style, lab in (("alpha prior mean", ":", "oracle at the case point, noisy"),
                                ("noise off", "-.", "oracle at the case point, noise off")):
            ax.plot(Lo, [r["windows"]["widest window"][key][p] for r in oracle["grids"]], style, color="k", label=lab)
        ax.plot([256], [PAPER_MAPE[CASE_DATASET][p]], "*", color="C2", ms=12, label="paper (512³, 2¹⁹ curves)")
        ax.set(xscale="log", yscale="log", xlabel="box edge L = N h (nm)", title=f"MAPE {LABELS[p]} (%)")
        ax.set_xticks([16, 32, 64, 128, 256], ["16", "32", "64", "128", "256"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        _plain_log_y(ax)
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def plot_budget_scatter(oracle: dict):
    """Replicate scatter of the features (sd of log10 I/Q in each q bin, noise off) per grid."""
    import matplotlib.pyplot as plt

    ax = plt.figure(figsize=(6, 3.6)).gca()
    for i, r in enumerate(oracle["grids"]):
        s = r["scatter"]
        ax.plot(s["q_nm"], s["sd_log10"], "o-", ms=3, color=plt.cm.viridis(i / max(1, len(oracle["grids"]) - 1)),
                label=f"{r['n']}³ (L = {r['box_nm']:g} nm)")
    ax.set(xscale="log", yscale="log", xlabel=r"$q$ (nm$^{-1}$)", ylabel="sd of log10(I/Q) across structures")
    tidy_q_axis(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax.figure


def plot_budget_noise(box: dict, oracle: dict):
    """The oracle's bound against the noise level (widest window) per grid, with XGBoost's test
    MAPE per third of log10 alpha on the largest grid."""
    import matplotlib.pyplot as plt

    outputs = OUTPUTS[CASE_DATASET]
    fig, axes = plt.subplots(1, len(outputs), figsize=(4.2 * len(outputs), 3.4))
    n_grids = len(oracle["grids"])
    for ax, p in zip(axes, outputs):
        for i, r in enumerate(oracle["grids"]):
            w = r["windows"]["widest window"]
            ax.plot(w["by_log10_alpha"]["log10_alpha"], w["by_log10_alpha"]["mape"][p], "-",
                    color=plt.cm.viridis(i / max(1, n_grids - 1)), label=f"oracle, {r['n']}³")
            ax.axhline(w["noise off"][p], color=plt.cm.viridis(i / max(1, n_grids - 1)), ls=":", lw=0.8)
        last = box["grids"][-1]
        e = np.asarray(last["by_alpha"]["edges_log10"])
        ax.plot(0.5 * (e[1:] + e[:-1]), last["by_alpha"]["mape"][p], "s", color="C3",
                label=f"XGBoost over the prior, {last['n']}³")
        ax.set(yscale="log", xlabel=r"$\log_{10}\alpha$ (counts per unit intensity)", title=f"MAPE {LABELS[p]} (%)")
        _plain_log_y(ax)
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def plot_budget_learning(learning: dict, learning_large: dict | None = None):
    """Test MAPE against the number of training curves, with power laws: on the small learning
    grid (filled) and, if given, on the largest grid (open markers, widest window)."""
    import matplotlib.pyplot as plt

    ax = plt.figure(figsize=(6.4, 3.8)).gca()
    for lc, face, style in ((learning, None, "-"), (learning_large, "none", "--")):
        if lc is None:
            continue
        n = np.array([r["n_train"] for r in lc["rows"]])
        for j, p in enumerate(OUTPUTS[CASE_DATASET]):
            m = np.array([r[p] for r in lc["rows"]])
            f = regress.power_law_fit(n, m[:, 0], m[:, 1])
            ax.errorbar(n, m[:, 0], m[:, 1], fmt="o", mfc=face, color=f"C{j}", capsize=2,
                        label=f"{LABELS[p]}, {lc['grid']}³, q ≥ {lc['q_min_nm']:.3g} nm⁻¹: ∝ n^{f['b']:.2f}")
            grid = np.geomspace(n.min(), n.max(), 20)
            ax.plot(grid, [f["at"](g)[0] for g in grid], style, color=f"C{j}", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="training curves", ylabel="test MAPE (%)")
    _plain_log_y(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.figure.tight_layout()
    return ax.figure


def xgb_variants_table(xgb: dict) -> str:
    """The XGBoost variants' test MAPE (± bootstrap error) as a markdown table."""
    rows = []
    for label, r in xgb["variants"].items():
        rows.append([label] + [f"{r[p][0]:.2f} ± {r[p][1]:.2f}" for p in OUTPUTS[CASE_DATASET]]
                    + [round(r["fit_seconds"], 1)])
    return markdown_table(["settings"] + [f"MAPE {LABELS[p]} (%)" for p in OUTPUTS[CASE_DATASET]] + ["fit (s)"], rows)


def load_budget(profile: str = "standard") -> dict:
    """The archived error-budget experiments at ``profile``: {name: results, or None when not run
    (``python -m sashelpers.studies.grf_porous NAME`` runs and archives one)}."""
    from ..core import report

    return report.experiment_results(STUDY, BUDGET_EXPERIMENTS, profile)

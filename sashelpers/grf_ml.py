"""Study 2 glue: the GRF datasets -> XGBoost models -> Table 2, case study and figures.

``grf`` makes structures and curves, ``regress`` fits models; this module holds what is specific
to Röding et al. (2022): which parameters each dataset predicts, the paper's numbers, the
train/val/test split, the Table-2-shaped table and the study's figures, so that the notebook's
cells stay short.
"""

from __future__ import annotations

import time

import numpy as np

from . import grf, regress, saxs

OUTPUTS = {name: (["a_nm", "porosity", "nu"] if phases == 3 else ["a_nm", "porosity"])
           for name, (phases, _) in grf.STUDY_DATASETS.items()}
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


def paper_record() -> dict:
    """The paper's values in the shape of this study's results record."""
    return {"mape": PAPER_MAPE, "case_study": PAPER_CASE, "seconds_per_sample": PAPER_SECONDS_PER_SAMPLE}


def xy(data: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (log10 normalised curves) and the label matrix (columns OUTPUTS[name])."""
    if name not in OUTPUTS:
        raise ValueError(f"name={name!r}; allowed: {', '.join(OUTPUTS)}")
    return data["features"], np.column_stack([data[o] for o in OUTPUTS[name]]).astype(float)


def splits(data: dict, name: str, fractions) -> dict:
    """{'train'|'val'|'test': (X, Y)} split by index (samples are iid)."""
    X, Y = xy(data, name)
    return {k: (X[s], Y[s]) for k, s in regress.split_indices(len(X), fractions).items()}


def train_all(datasets: dict, sizes: dict, *, device=None, save_to=None, seed: int = 0) -> tuple[dict, dict]:
    """One BoostedRegressor per dataset (one booster per parameter). Returns (models, evaluations);
    each evaluation also holds 'fit_seconds' and the mean-predictor MAPE of the test set."""
    models, evals = {}, {}
    for name, data in datasets.items():
        sp = splits(data, name, sizes["split"])
        m = regress.BoostedRegressor(OUTPUTS[name], sizes["xgb"], device=device, seed=seed)
        m.fit(*sp["train"], *sp["val"])
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


def paper_vs_run(rec: dict) -> str:
    """The 'paper vs this run' markdown table of a results record: Table 2 MAPEs, the case study
    (mean ± sd) and seconds per sample (each at its own grid size)."""
    from .report import flatten

    flat_m, flat_p = flatten(rec["metrics"]), flatten(rec["paper"])
    keys = [k for k in flat_p if not k.startswith("seconds")]
    keys += [k for k in dict.fromkeys([*flat_p, *flat_m]) if k.startswith("seconds_per_sample")]
    pm = lambda v: None if v is None else (f"{v[0]:.3f} ± {v[1]:.3f}" if isinstance(v, list) else v)  # noqa: E731
    rows = [[k.replace("seconds_per_sample.", "seconds per sample, grid "), pm(flat_p.get(k)), pm(flat_m.get(k))]
            for k in keys]
    return markdown_table(["quantity", "paper", f"this run ({rec['profile']})"], rows)


def case_summary(pred: dict) -> dict:
    """{parameter: [mean, sd]} of the case-study predictions."""
    return {k: [float(np.mean(v)), float(np.std(v, ddof=1))] for k, v in pred.items()}


def seconds_per_sample(sizes: dict, n_samples: int = 3, seed: int = 0) -> float:
    """Best-of-n wall time (s) of one three-phase sample (structure + SAXS curve) on this grid."""
    q = grf.q_grid(grf.study_config(sizes, CASE_DATASET))
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
    la = np.log10(alpha)
    pred = model.predict(X)
    out = {"edges": edges, "mape": {o: [] for o in model.outputs}}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (la >= lo) & (la <= hi)
        for j, o in enumerate(model.outputs):
            out["mape"][o].append(regress.mape(Y[sel, j], pred[o][sel]) if sel.any() else float("nan"))
    return out


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


def plot_pred_vs_true(models: dict, datasets: dict, sizes: dict, max_points: int = 2000):
    """Predicted vs true on the test sets: one row per dataset, one column per parameter."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(models), 3, figsize=(10, 2.8 * len(models)), squeeze=False)
    for row, (name, m) in zip(axes, models.items()):
        X, Y = splits(datasets[name], name, sizes["split"])["test"]
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
    q = grf.q_grid(grf.study_config(sizes, "two-phase low"))
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
    from .datasets import sample_rng

    config = grf.study_config(sizes, CASE_DATASET)
    rng = sample_rng(seed, index)
    alpha = grf.sample_alpha(rng, config["alpha_log10_range"])
    return grf.saxs_sample(CASE_PARAMS, int(sizes["n"]), float(sizes["voxel_nm"]), grf.q_grid(config), rng,
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
    from . import plotting

    return tidy_q_axis(plotting.curve_axes(ax, intensity_label=intensity_label))


def learning_curve(data: dict, name: str, sizes: dict, evals: dict) -> dict:
    """Test MAPE vs training-set size for dataset ``name``: point models retrained on the first
    ``sizes['learning_sizes']`` curves, plus the full training set's result from ``evals``
    (already trained, so not repeated)."""
    sp = splits(data, name, sizes["split"])
    n_full = len(sp["train"][0])
    small = [s for s in sizes["learning_sizes"] if s < n_full]
    lc = regress.learning_curve(*sp["train"], *sp["val"], *sp["test"], small, OUTPUTS[name], sizes["xgb"])
    lc["sizes"].append(n_full)
    for o in OUTPUTS[name]:
        lc["mape"][o].append(evals[name]["mape"]["test"][o])
    return lc

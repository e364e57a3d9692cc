"""Shared figure style and the widget-or-static-figure explorer."""

from __future__ import annotations

import os
from typing import Callable

import matplotlib.pyplot as plt

Q_LABEL = r"$q$ (nm$^{-1}$)"
STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "font.size": 10,
}


def use_style() -> None:
    """Apply the book's matplotlib style (no downloaded fonts: matplotlib's default DejaVu)."""
    plt.rcParams.update(STYLE)


def curve_axes(ax=None, *, intensity_label: str = r"$I(q)$ (cm$^{-1}$)", log: bool = True):
    """Axes labelled for a SAXS curve (log-log by default)."""
    if ax is None:
        _, ax = plt.subplots()
    ax.set_xlabel(Q_LABEL)
    ax.set_ylabel(intensity_label)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    return ax


def interactive_session() -> bool:
    """False when a notebook is executed headless for the book or tests (``SASHELPERS_STATIC=1``)."""
    return os.environ.get("SASHELPERS_STATIC", "0") != "1"


def explorer(draw: Callable[..., None], **controls):
    """Sliders for ``draw(**values)`` in JupyterLab; a static figure at the initial values when the
    notebook is executed headless (the book and the tests), where widgets cannot respond.

    controls: name -> ipywidgets widget (its ``value`` is the initial value).
    """
    if not interactive_session():
        draw(**{name: w.value for name, w in controls.items()})
        plt.show()
        return None
    import ipywidgets

    return ipywidgets.interact(draw, **controls)


def unit_tex(unit: str) -> str:
    """'cm^{-1}' or 'cm^-1' -> matplotlib mathtext 'cm$^{-1}$'."""
    import re

    return re.sub(r"\^\{?(-?\d+)\}?", r"$^{\1}$", unit)


def confusion_plot(confusion, labels, ax=None, title: str = "confusion matrix"):
    """Row-normalised confusion matrix (rows: true class) with counts written in the cells."""
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.grid(False)
    return ax


def pred_vs_true(ax, truth, pred, *, label: str, unit: str = "", err=None):
    """Scatter of predicted vs true values with the identity line and the MAE in the title."""
    import numpy as np

    truth, pred = np.asarray(truth), np.asarray(pred)
    if err is not None:
        ax.errorbar(truth, pred, yerr=err, fmt="none", ecolor="0.75", elinewidth=0.5, zorder=1)
    ax.plot(truth, pred, ".", ms=2.5, alpha=0.6, zorder=2)
    lo, hi = np.nanmin([truth.min(), pred.min()]), np.nanmax([truth.max(), pred.max()])
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    u = f" ({unit})" if unit else ""
    ax.set(xlabel=f"true {label}{u}", ylabel=f"predicted {label}{u}",
           title=f"{label}: MAE {np.abs(pred - truth).mean():.3g}{' ' + unit if unit else ''}")
    return ax

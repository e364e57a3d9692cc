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

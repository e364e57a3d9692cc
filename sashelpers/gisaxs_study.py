"""Study 3 (Liu et al.): classify 7 superlattice classes from GISAXS images with a CNN.

``run_clean(profile)`` is the whole clean pipeline the notebook calls: generate (or load from
the cache) the training and test sets of ``gisaxs.dataset_chunk`` at the profile's size, train
the profile's network with ``training.fit``, and evaluate it on the held-out test set.
Sizes come from ``profiles.SIZES["03_gisaxs_cnn_noise"]``.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from . import datasets, gisaxs, nets, profiles
from .training import History, TrainConfig, fit

STUDY = "03_gisaxs_cnn_noise"
DATA_KEYS = ("image_size", "supersample", "n_orient")


def data_config(sizes: dict) -> dict:
    """The dataset config (``gisaxs.dataset_config``) of a profile's size table."""
    return gisaxs.dataset_config(**{k: sizes[k] for k in DATA_KEYS})


def _cached(name: str, config: dict, n: int, seed: int, chunk_size: int) -> bool:
    key = datasets.cache_key(gisaxs.dataset_chunk, config, seed, n, chunk_size)
    folder = datasets.cache_dir() / f"{name}-{key}"
    return len(list(folder.glob("chunk_*.npz"))) == -(-n // chunk_size)


def load_data(profile: str | None = None, *, workers: int | None = None, progress: bool = True) -> dict:
    """Training and test sets of the profile (cached under data/cache), with timings.

    Returns {"train": dict, "test": dict, "config": dataset config, "timings": {...}} where the
    timings hold generate_s and, when anything was generated, the number of new images.
    """
    sizes = profiles.get(STUDY, profile)
    cfg = data_config(sizes)
    workers = workers or min(2, os.cpu_count() or 1)
    chunk = int(sizes["chunk_size"])
    out, timings = {"config": cfg}, {"generate_s": 0.0, "generated_images": 0}
    for part, n, seed in (("train", sizes["n_train"], sizes["seed"]), ("test", sizes["n_test"], sizes["seed"] + 1)):
        name = f"gisaxs7-{part}"
        fresh = not _cached(name, cfg, n, seed, chunk)
        t0 = time.perf_counter()
        out[part] = datasets.generate(name, gisaxs.dataset_chunk, cfg, n, seed, chunk_size=chunk,
                                      workers=workers, progress=progress)
        dt = time.perf_counter() - t0
        timings["generate_s"] += dt
        if fresh:
            timings["generated_images"] += n
    if timings["generated_images"]:
        timings["generate_per_image_s"] = timings["generate_s"] / timings["generated_images"]
    out["timings"] = timings
    return out


def build_model(sizes: dict) -> torch.nn.Module:
    """The profile's network (``nets.build``)."""
    return nets.build(sizes["net"], image_size=sizes["image_size"], n_classes=len(gisaxs.CLASS_NAMES),
                      width=sizes["width"], hidden=sizes["hidden"], dropout=sizes["dropout"])


def confusion_matrix(labels, predicted, n_classes: int = 7) -> np.ndarray:
    """counts[i, j] = number of samples of true class i predicted as j."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels {labels.shape} and predicted {predicted.shape} must have the same shape")
    return np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)


@dataclass
class CleanRun:
    """The result of ``run_clean``."""

    profile: str
    sizes: dict
    model: torch.nn.Module
    history: History
    accuracy: float
    confusion: np.ndarray
    recall: dict
    test_images: np.ndarray
    test_labels: np.ndarray
    test_probs: np.ndarray
    timings: dict = field(default_factory=dict)

    @property
    def hcp_recall(self) -> float:
        return self.recall["HCP[0001]"]


@contextmanager
def torch_threads(n: int | None):
    """Run the with-block with ``torch.set_num_threads(n)`` (None: leave torch's setting)."""
    old = torch.get_num_threads()
    if n is not None:
        if int(n) != n or n < 1:
            raise ValueError(f"threads={n!r} must be a positive integer or None")
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_clean(profile: str | None = None, *, workers: int | None = None, progress: bool = True,
              device=None, data: dict | None = None, threads: int | None = 1) -> CleanRun:
    """Generate/load the data, train on clean images, evaluate on the clean test set.

    The last 10 % of the training set is the validation set (labels cycle through the classes,
    so it stays balanced). ``data`` may be a ``load_data`` result to skip loading.
    threads: torch CPU threads while training (default 1: these small nets gain little from a
    second thread, and on a shared 2-core machine two threads were up to 5x slower here).
    """
    profile = profiles.current_profile(profile)
    sizes = profiles.get(STUDY, profile)
    data = data or load_data(profile, workers=workers, progress=progress)
    timings = dict(data["timings"])
    x, y = data["train"]["images"], data["train"]["labels"]
    n_val = max(len(gisaxs.CLASS_NAMES), len(x) // 10)
    train, val = (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])
    model = build_model(sizes)
    config = TrainConfig(epochs=sizes["epochs"], batch_size=sizes["batch_size"], lr=sizes["lr"],
                         patience=sizes["patience"], seed=sizes["seed"], progress=progress)
    t0 = time.perf_counter()
    with torch_threads(threads):
        history = fit(model, nets.classification_loss, train, val, config, device=device)
    timings["train_s"] = time.perf_counter() - t0
    timings["epochs"] = len(history.train_loss)
    xt, yt = data["test"]["images"], data["test"]["labels"]
    with torch_threads(threads):
        probs = nets.predict(model, xt).numpy()
    pred = probs.argmax(1)
    cm = confusion_matrix(yt, pred, len(gisaxs.CLASS_NAMES))
    recall = {name: float(cm[i, i] / max(cm[i].sum(), 1)) for i, name in enumerate(gisaxs.CLASS_NAMES)}
    return CleanRun(profile, sizes, model, history, float((pred == yt).mean()), cm, recall, xt, yt, probs, timings)

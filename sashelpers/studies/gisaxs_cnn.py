"""Study 3 (Liu et al.): classify 7 superlattice classes from GISAXS images with a CNN.

``run_clean(profile)`` is the whole clean pipeline the notebook calls: generate (or load from
the cache) the training and test sets of ``dataset_chunk`` at the profile's size, train
the profile's network with ``training.fit``, and evaluate it on the held-out test set.
Sizes come from ``SIZES`` (``profile_sizes(profile)``); the paper's numbers and the notebook's
headline metrics are ``PAPER_TRAINED_ON``, ``PAPER_CLEAN_ON`` and ``HEADLINES``.

The noise study: ``CONDITIONS`` (the paper's 12), ``apply_condition`` (noise on the linear
intensity, re-log-normalised), ``noisy_sets`` / ``random_conditions`` (seeded), and
``run_noise(clean_run, data)``: the clean model on every noisy test set and one model trained with
randomised noise on every condition.

Trained models are kept: ``run_clean`` and ``train_augmented`` save their network under the
cache folder (``model_path``, keyed by the profile's sizes), and with ``reuse=True`` load it
instead of training again (study 4 reuses study 3's classifiers this way).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import torch

from ..core import checks, datasets, profiles
from ..core.report import Headline
from ..learn import nets, training
from ..learn.training import History, TrainConfig, fit
from ..physics import gisaxs

STUDY = "03_gisaxs_cnn_noise"

# --- the data set: 7-class training images ----------------------------------------------------

DATASET_DEFAULTS = {
    "image_size": 64,  # output pixels per side (square image)
    "supersample": 2,  # simulate supersample x supersample points per output pixel, then area-average
    "n_orient": 60,  # random grain orientations per image (uniform in the class's symmetry range)
    "qy_range_nm": (0.0, 2.0),  # pixel edges of the window, nm^-1 (orientation averages are ~symmetric in q_y)
    "qz_range_nm": (0.0, 2.0),
    "lattice_nm": (10.0, 30.0),  # cube edge a (cubic) or in-plane nearest-neighbour distance d (HCP)
    "radius_fraction": (0.25, 0.45),  # sphere radius / nearest-neighbour distance (< 0.5: no overlap)
    "reps": (2, 20),  # cells along each in-plane lattice vector, drawn uniformly, then capped
    "hexagon_fraction": 0.5,  # share of crystallites cut as hexagonal prisms (the rest: boxes), every class
    "reps_z": (2, 10),  # cells along the third lattice vector, drawn uniformly, then capped
    "alpha_i_deg": (0.1, 0.3),  # incidence angle, around alpha_c(Si) = 0.179 deg
    "min_peak_px": 2.0,  # cap N so that a Laue peak's FWHM spans >= this many simulated pixels
    "decades": 6.0,  # dynamic range kept by the log normalisation
    "substrate": "Si",
}


def dataset_config(**overrides) -> dict:
    """A validated dataset config: DATASET_DEFAULTS updated with ``overrides`` (JSON-able, hashable).

    The returned dict is what ``dataset_chunk`` takes and what the dataset cache key is built from.
    """
    unknown = set(overrides) - set(DATASET_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown dataset config keys {sorted(unknown)}; allowed: {', '.join(DATASET_DEFAULTS)}")
    cfg = {**DATASET_DEFAULTS, **overrides}
    for key in ("image_size", "supersample", "n_orient"):
        v = cfg[key]
        hi = {"image_size": 1024, "supersample": 8, "n_orient": 10_000}[key]
        lo = 8 if key == "image_size" else 1
        if isinstance(v, bool) or int(v) != v or not lo <= v <= hi:
            raise ValueError(f"{key}={v!r} must be an integer in [{lo}, {hi}]")
        cfg[key] = int(v)

    def pair(key, lo, hi, integer=False):
        v = cfg[key]
        try:
            a, b = (float(x) for x in v)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={v!r} must be a (low, high) pair within [{lo}, {hi}]") from None
        if not (lo <= a <= b <= hi) or (integer and (a != int(a) or b != int(b))):
            kind = "integers" if integer else "numbers"
            raise ValueError(f"{key}={v!r} must be {kind} low <= high within [{lo}, {hi}]")
        cfg[key] = [int(a), int(b)] if integer else [a, b]

    pair("lattice_nm", 1e-3, 1e4)
    pair("radius_fraction", 1e-3, 0.5)
    pair("reps", 1, 100_000, integer=True)
    pair("reps_z", 1, 100_000, integer=True)
    pair("alpha_i_deg", 1e-3, 10)
    pair("qy_range_nm", -50, 50)
    pair("qz_range_nm", 0, 50)
    for key in ("qy_range_nm", "qz_range_nm"):
        if cfg[key][0] == cfg[key][1]:
            raise ValueError(f"{key}={cfg[key]!r} must have low < high")
    cfg["hexagon_fraction"] = checks.number("hexagon_fraction", cfg["hexagon_fraction"], 0.0, 1.0)
    if not (0 < float(cfg["min_peak_px"]) <= 100):
        raise ValueError(f"min_peak_px={cfg['min_peak_px']!r} must lie in (0, 100] pixels")
    if not (0 < float(cfg["decades"]) <= 30):
        raise ValueError(f"decades={cfg['decades']!r} must lie in (0, 30]")
    cfg["min_peak_px"], cfg["decades"] = float(cfg["min_peak_px"]), float(cfg["decades"])
    gisaxs._substrate(cfg["substrate"])
    return cfg


def sample_parameters(class_name: str, config: dict, rng) -> dict:
    """Draw one image's physical parameters for ``class_name`` from the config's ranges.

    Returns lattice_nm, radius_nm, reps (N1, N2, N3, capped by ``reps_cap`` on the simulated grid),
    alpha_i_deg, the orientation angles (degrees) and the outline: with probability
    ``hexagon_fraction`` a hexagonal prism of circumradius N1 |a_1| / 2 (as wide, corner to corner,
    as the box of N1 cells it replaces), else the box. Every class draws from the same family.
    """
    gisaxs._check_class(class_name)
    a = float(rng.uniform(*config["lattice_nm"]))
    nn = gisaxs.nearest_neighbour_nm(class_name, a)
    radius = float(rng.uniform(*config["radius_fraction"])) * nn
    n_par = int(rng.integers(config["reps"][0], config["reps"][1] + 1))
    n_z = int(rng.integers(config["reps_z"][0], config["reps_z"][1] + 1))
    alpha = float(rng.uniform(*config["alpha_i_deg"]))
    angles = rng.uniform(0.0, gisaxs.symmetry_range_deg(class_name), config["n_orient"])
    n_sim = config["image_size"] * config["supersample"]
    dq = min((config["qy_range_nm"][1] - config["qy_range_nm"][0]) / n_sim,
             (config["qz_range_nm"][1] - config["qz_range_nm"][0]) / n_sim)
    cap = gisaxs.reps_cap(class_name, a, dq, config["min_peak_px"])
    reps = tuple(min(n, c) for n, c in zip((n_par, n_par, n_z), cap))
    outline = "box"
    if float(config.get("hexagon_fraction", 0.0)) > 0 and rng.uniform() < config["hexagon_fraction"]:
        cell, _ = gisaxs.cell_vectors_nm(class_name, a)
        outline = ("hexagon", 0.5 * min(reps[0], reps[1]) * float(np.linalg.norm(cell[0])))
    return {"lattice_nm": a, "radius_nm": radius, "reps": reps, "alpha_i_deg": alpha, "angles_deg": angles,
            "outline": outline}


def render(class_name: str, params: dict, config: dict, *, normalise: bool = True):
    """The image of one sample: simulate on the supersampled grid, area-average to image_size^2,
    and (by default) log-normalise. float32 (image_size, image_size), q_z increasing along axis 0."""
    grid = gisaxs.pixel_grid(config["image_size"], config["qy_range_nm"], config["qz_range_nm"], config["supersample"])
    img = gisaxs.simulate(class_name, params["lattice_nm"], params["radius_nm"], params["reps"], params["alpha_i_deg"],
                          grid, angles_deg=params["angles_deg"], substrate=config["substrate"], xp=np,
                          outline=params.get("outline", "box"))
    img = gisaxs.area_average(np.asarray(img, dtype=np.float64), config["supersample"])
    return gisaxs.log_normalise(img, config["decades"]) if normalise else img.astype(np.float32)


def dataset_chunk(config: dict, seed: int, start: int, stop: int) -> dict:
    """Samples [start, stop) of the 7-class dataset (a ``datasets.generate`` generator).

    Sample i has label i % 7 (so every class is equally represented) and draws its parameters
    from ``datasets.datasets.sample_rng(seed, i)``: the data do not depend on the chunking.
    Returns images (n, S, S) float32 in [0, 1] (``log_normalise``), labels (n,) int64, and the
    parameters lattice_nm, radius_nm, reps (n, 3), alpha_i_deg.
    """
    config = dataset_config(**config)
    if not (0 <= start < stop):
        raise ValueError(f"start={start!r}, stop={stop!r} must satisfy 0 <= start < stop")
    out = {"images": [], "labels": [], "lattice_nm": [], "radius_nm": [], "reps": [], "alpha_i_deg": [],
           "hexagon_radius_nm": []}
    for i in range(int(start), int(stop)):
        label = i % len(gisaxs.CLASS_NAMES)
        name = gisaxs.CLASS_NAMES[label]
        params = sample_parameters(name, config, datasets.sample_rng(seed, i))
        out["images"].append(render(name, params, config))
        out["labels"].append(label)
        for key in ("lattice_nm", "radius_nm", "reps", "alpha_i_deg"):
            out[key].append(params[key])
        out["hexagon_radius_nm"].append(0.0 if params["outline"] == "box" else params["outline"][1])
    return {
        "images": np.stack(out["images"]).astype(np.float32),
        "labels": np.asarray(out["labels"], dtype=np.int64),
        "lattice_nm": np.asarray(out["lattice_nm"], dtype=np.float32),
        "radius_nm": np.asarray(out["radius_nm"], dtype=np.float32),
        "reps": np.asarray(out["reps"], dtype=np.int32),
        "alpha_i_deg": np.asarray(out["alpha_i_deg"], dtype=np.float32),
        "hexagon_radius_nm": np.asarray(out["hexagon_radius_nm"], dtype=np.float32),  # 0: a box
    }

DATA_KEYS = ("image_size", "supersample", "n_orient")


def data_config(sizes: dict) -> dict:
    """The dataset config (``gisaxs.dataset_config``) of a profile's size table."""
    return dataset_config(**{k: sizes[k] for k in DATA_KEYS})


def _cached(name: str, config: dict, n: int, seed: int, chunk_size: int) -> bool:
    key = datasets.cache_key(dataset_chunk, config, seed, n, chunk_size)
    folder = datasets.cache_dir() / f"{name}-{key}"
    return len(list(folder.glob("chunk_*.npz"))) == -(-n // chunk_size)


def load_data(profile: str | None = None, *, workers: int | None = None, progress: bool = True) -> dict:
    """Training and test sets of the profile (cached under data/cache), with timings.

    Returns {"train": dict, "test": dict, "config": dataset config, "timings": {...}} where the
    timings hold generate_s and, when anything was generated, the number of new images.
    """
    sizes = profile_sizes(profile)
    cfg = data_config(sizes)
    workers = workers or min(2, os.cpu_count() or 1)
    chunk = int(sizes["chunk_size"])
    out, timings = {"config": cfg}, {"generate_s": 0.0, "generated_images": 0}
    for part, n, seed in (("train", sizes["n_train"], sizes["seed"]), ("test", sizes["n_test"], sizes["seed"] + 1)):
        name = f"gisaxs7-{part}"
        fresh = not _cached(name, cfg, n, seed, chunk)
        t0 = time.perf_counter()
        out[part] = datasets.generate(name, dataset_chunk, cfg, n, seed, chunk_size=chunk,
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
    """The profile's network (``nets.build``), its initial weights drawn from the profile's seed
    (not from torch's global generator, whose state depends on what ran before)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(sizes["seed"]))
        return nets.build(sizes["net"], image_size=sizes["image_size"], n_classes=len(gisaxs.CLASS_NAMES),
                          width=sizes["width"], hidden=sizes["hidden"], dropout=sizes["dropout"],
                          input_transform=sizes.get("input_transform", "log"))


def train_config(sizes: dict, *, epochs: int | None = None, progress: bool = True,
                 lr: float | None = None) -> TrainConfig:
    """The profile's TrainConfig (epochs, batch size, learning rate and schedule, patience, seed)."""
    epochs = int(epochs or sizes["epochs"])
    return TrainConfig(epochs=epochs, batch_size=sizes["batch_size"], lr=lr or sizes["lr"],
                       patience=max(int(sizes["patience"]), 1), seed=sizes["seed"], progress=progress,
                       schedule=sizes.get("schedule", "plateau"))


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


def _weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_path(kind: str, sizes: dict, start: torch.nn.Module | None = None) -> Path:
    """Where a trained model of this study is kept (without suffix; ``training.save_model``
    adds .pt and .json): ``<cache>/models/gisaxs_<kind>-<key>``, the key a hash of ``kind``,
    the size table (which fixes the data, the network and its training), torch's version and,
    for a model fine-tuned from another (``start``), that model's weights."""
    checks.one_of("kind", kind, ("clean", "augmented"))
    blob = json.dumps({"kind": kind, "sizes": sizes, "torch": torch.__version__.split("+")[0],
                       "start": None if start is None else _weights_digest(start)}, sort_keys=True, default=str)
    return datasets.cache_dir() / "models" / f"gisaxs_{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _load_kept(kind: str, sizes: dict, timings: dict, start=None) -> torch.nn.Module | None:
    """The kept model of ``kind`` (``model_path``), or None when there is none."""
    path = model_path(kind, sizes, start)
    if not path.with_suffix(".pt").exists():
        return None
    model = build_model(sizes)
    card = training.load_model(path, model)
    timings.update({f"{kind}_loaded_from": str(path.with_suffix(".pt")),
                    f"{kind}_train_s_when_trained": card.get("train_s")})
    return model


def run_clean(profile: str | None = None, *, workers: int | None = None, progress: bool = True,
              device=None, data: dict | None = None, threads: int | None = None, reuse: bool = False) -> CleanRun:
    """Generate/load the data, train on clean images, evaluate on the clean test set.

    The last 10 % of the training set is the validation set (labels cycle through the classes,
    so it stays balanced). ``data`` may be a ``load_data`` result to skip loading.
    threads: torch CPU threads (default: the profile's ``threads``; 2 on a free 2-core laptop, but
    on a machine busy with other work one thread can be several times faster than two).
    The trained network is saved at ``model_path("clean", sizes)``; with ``reuse=True`` a network
    saved there is loaded instead of training one (the history is then empty and
    ``timings["clean_loaded_from"]`` says where it came from).
    """
    profile = profiles.current_profile(profile)
    sizes = profile_sizes(profile)
    threads = threads or sizes.get("threads", 1)
    data = data or load_data(profile, workers=workers, progress=progress)
    timings = dict(data["timings"])
    model = _load_kept("clean", sizes, timings) if reuse else None
    if model is not None:
        history = History()
        timings.update(train_s=0.0, epochs=0)
    else:
        x, y = data["train"]["images"], data["train"]["labels"]
        n_val = max(len(gisaxs.CLASS_NAMES), len(x) // 10)
        train, val = (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])
        model = build_model(sizes)
        config = train_config(sizes, progress=progress)
        t0 = time.perf_counter()
        with training.torch_threads(threads):
            history = fit(model, nets.classification_loss, train, val, config, device=device)
        timings["train_s"] = time.perf_counter() - t0
        timings["epochs"] = len(history.train_loss)
        training.save_model(model_path("clean", sizes), model, {"kind": "clean", "profile": profile,
                                                                "train_s": timings["train_s"]})
    xt, yt = data["test"]["images"], data["test"]["labels"]
    with training.torch_threads(threads):
        probs = nets.predict(model, xt).numpy()
    pred = probs.argmax(1)
    cm = confusion_matrix(yt, pred, len(gisaxs.CLASS_NAMES))
    recall = {name: float(cm[i, i] / max(cm[i].sum(), 1)) for i, name in enumerate(gisaxs.CLASS_NAMES)}
    return CleanRun(profile, sizes, model, history, float((pred == yt).mean()), cm, recall, xt, yt, probs, timings)


# --------------------------------------------------------------------------------------------
# Noise conditions (the paper's Tables II and III, Fig. 4)
# --------------------------------------------------------------------------------------------

CONDITIONS = ("clean", "smear_0.5", "smear_1.0", "gauss_0.1", "gauss_0.2", "gauss_0.5", "gauss_1.0",
              "poisson", "res_100", "res_75", "res_50", "res_25")
PAPER_SIZE = 125  # the paper's image size: res_N means 125 -> N -> 125 px there
POISSON_COUNTS = 1e4  # photons in the brightest pixel of a "poisson" image

#: Profile sizes. image_size^2 images simulated on a supersample^2 finer grid with n_orient
#: grains; n_train (last 10 % validation) and n_test images, balanced over the classes; the bar is
#: on the clean test accuracy (chance is 1/7). Noise study: the noise-augmented model is fine-tuned
#: from the clean one for aug_epochs, every epoch on fresh noise (one random condition per image);
#: per_condition lists the conditions that get a model of their own (the paper's Tables II/III),
#: the augmented model fine-tuned on that condition for per_condition_epochs (None: trained from
#: scratch, as the paper) on the first per_condition_n_train training images (None: all), at a
#: tenth of the learning rate; the network (net, input_transform, schedule) is the recipe that won
#: ``compare_recipes`` (notebook 03 shows the comparison); n_reps1_per_class: images per class of the single-cell (N = 1) set of
#: the crystal-size figure; bar_augmented_worst / _mean are on the augmented model's worst
#: condition / mean over conditions (None: no bar; at quick, res_25 leaves 6 px).
SIZES = {
    "quick": {"image_size": 32, "supersample": 2, "n_orient": 30, "n_train": 2800, "n_test": 700,
              "chunk_size": 100, "seed": 3, "threads": 2, "net": "resnet", "input_transform": "log_floor", "width": 8,
              "hidden": 64, "dropout": 0.2, "epochs": 10, "batch_size": 64, "lr": 3e-3, "schedule": "onecycle",
              "patience": 10, "bar_accuracy": 0.7, "aug_epochs": 6, "per_condition": ["gauss_1.0", "res_50"],
              "per_condition_epochs": 1, "per_condition_n_train": 1400,
              "n_reps1_per_class": 5, "bar_augmented_worst": None, "bar_augmented_mean": 0.6},
    "standard": {"image_size": 64, "supersample": 2, "n_orient": 30, "n_train": 21000, "n_test": 3500,
                 "chunk_size": 350, "seed": 3, "threads": 2, "net": "resnet", "input_transform": "log_floor", "width": 16,
                 "hidden": 128, "dropout": 0.2, "epochs": 6, "batch_size": 128, "lr": 3e-3, "schedule": "onecycle",
                 "patience": 6, "bar_accuracy": 0.97, "aug_epochs": 5, "per_condition": list(CONDITIONS[1:]),
                 "per_condition_epochs": 1, "per_condition_n_train": 3500,
                 "n_reps1_per_class": 20, "bar_augmented_worst": 0.8, "bar_augmented_mean": 0.92},
    "paper": {"image_size": 125, "supersample": 1, "n_orient": 60, "n_train": 210000, "n_test": 3500,
              "chunk_size": 1000, "seed": 3, "threads": None, "net": "resnet", "input_transform": "log_floor", "width": 32,
              "hidden": 256, "dropout": 0.2, "epochs": 20, "batch_size": 256, "lr": 3e-3, "schedule": "onecycle",
              "patience": 20, "bar_accuracy": 0.98, "aug_epochs": 20, "per_condition": list(CONDITIONS[1:]),
              "per_condition_epochs": None, "per_condition_n_train": None, "n_reps1_per_class": 100,
              "bar_augmented_worst": 0.9, "bar_augmented_mean": 0.97},
}


def profile_sizes(profile: str | None = None) -> dict:
    """This study's sizes at ``profile`` (default: the current one), a copy of ``SIZES[profile]``."""
    return profiles.pick(SIZES, profile)


#: Liu et al.: accuracy of a model trained and tested on each condition (Tables II and III) and
#: of the clean-trained model tested noisy (Table II/III text: strongest smear, Gaussian noise,
#: 100 and 50 px).
PAPER_TRAINED_ON = {"clean": 0.9812, "smear_0.5": 0.9812, "smear_1.0": 0.9748, "gauss_0.1": 0.9809,
                    "gauss_0.2": 0.9730, "gauss_0.5": 0.9420, "gauss_1.0": 0.8827, "poisson": 0.9801,
                    "res_100": 0.9808, "res_75": 0.9808, "res_50": 0.9795, "res_25": 0.9771}
PAPER_CLEAN_ON = {"smear_1.0": 0.8453, "gauss_1.0": 0.6237, "res_100": 0.9737, "res_50": 0.9463}
#: Our goals: the clean model >= 97 %; one noise-augmented model >= 92 % on every condition
#: except the two hardest (>= 80 % there); HCP recall >= 95 %.
_HARDEST = ("gauss_1.0", "res_25")

HEADLINES = (
    Headline("clean_accuracy", "clean model, clean test images", "%", 100, (">=", 0.97),
             PAPER_TRAINED_ON["clean"], "Table II"),
    Headline("hcp_recall", "HCP recall, clean model", "%", 100, (">=", 0.95), None, "not given"),
) + tuple(
    Headline(f"augmented_model_on.{c}", f"noise-augmented model on {c}", "%", 100,
             (">=", 0.80 if c in _HARDEST else 0.92), PAPER_TRAINED_ON[c],
             "Tables II/III, one model per condition")
    for c in CONDITIONS[1:]
) + tuple(
    Headline(f"clean_model_on.{c}", f"clean model on {c}", "%", 100, None, PAPER_CLEAN_ON[c], "Tables II/III text")
    for c in PAPER_CLEAN_ON)


def res_pixels(condition: str, image_size: int) -> int:
    """The intermediate size m of ``res_N`` for an image of ``image_size`` px.

    The paper reduced its 125 px images to N px and back. For other image sizes we keep the
    same *fraction*: m = round(image_size * N / 125) (at least 2), e.g. at 32 px res_100/75/50/25
    -> 26/19/13/6 px, at 64 px -> 51/38/26/13 px. So res_N always removes the same share of the
    detector's sampling as in the paper, whatever our image size.
    """
    if not condition.startswith("res_"):
        raise ValueError(f"{condition!r} is not a res_N condition")
    n = int(condition[4:])
    return max(2, int(round(image_size * n / PAPER_SIZE)))


def to_linear(images, decades: float = 6.0) -> np.ndarray:
    """Invert ``gisaxs.log_normalise``: I / I_max = 10^(decades (x - 1)), 0 where x = 0
    (below the horizon or more than ``decades`` below the peak). float64."""
    x = np.asarray(images, dtype=np.float64)
    return np.where(x > 0, 10.0 ** (decades * (x - 1.0)), 0.0)


def apply_condition(images, condition: str, rng, *, decades: float = 6.0,
                    counts: float = POISSON_COUNTS) -> np.ndarray:
    """One noise condition applied to log-normalised images (H, W) or (n, H, W); float32 in [0, 1].

    Where the noise acts: on the **linear intensity**, because that is where a detector adds it
    (blur of the beam/pixel response, read-out noise, photon counting, coarse pixels). The cached
    images are ``gisaxs.log_normalise``d (per image ``1 + log10(I / I_max) / decades`` clipped to
    [0, 1]); we invert that (``to_linear``; pixels at 0 become I = 0), apply the model, and
    log-normalise again with the same ``decades`` -- the network always sees what it would see
    from a measured image run through the same preprocessing. Consequences: negative intensities
    from Gaussian noise clip to 0 after the log, and the image is renormalised to its new maximum.

    Conditions (``CONDITIONS``):

    * ``clean``: the input unchanged (a float32 copy).
    * ``smear_s``: ``noise.smear`` with sigma = s px of *our* image.
    * ``gauss_a``: ``noise.gaussian_noise``, sigma = a * mean(I) per image.
    * ``poisson``: ``noise.poisson_noise`` with ``counts`` photons (default 1e4) in the brightest
      pixel of each image, i.e. 4 of the 6 decades are above one photon.
    * ``res_N``: ``noise.reduce_resolution`` to ``res_pixels(condition, size)`` px and back by
      bilinear interpolation (the paper's 125 -> N -> 125 as the same fraction of our size).

    rng: a numpy Generator (used by gauss_* and poisson only; the others are deterministic).
    """
    from ..physics import noise

    checks.one_of("condition", condition, CONDITIONS)
    x = np.asarray(images, dtype=np.float32)
    if condition == "clean":
        return x.copy()
    lin = to_linear(x, decades)
    kind, _, value = condition.partition("_")
    if kind == "smear":
        out = noise.smear(lin, float(value))
    elif kind == "gauss":
        out = noise.gaussian_noise(lin, float(value), rng)
    elif kind == "poisson":
        out = noise.poisson_noise(lin, counts, rng)
    else:
        out = noise.reduce_resolution(lin, res_pixels(condition, x.shape[-1]))
    return gisaxs.log_normalise(out, decades)


def condition_rng(seed: int, condition: str) -> np.random.Generator:
    """The generator for one condition's noise on one data set: independent across conditions."""
    checks.one_of("condition", condition, CONDITIONS)
    return np.random.default_rng([int(seed), CONDITIONS.index(condition)])


def noisy_sets(images, conditions=CONDITIONS, seed: int = 0, **kwargs) -> dict:
    """{condition: apply_condition(images, condition, condition_rng(seed, condition))}."""
    return {c: apply_condition(images, c, condition_rng(seed, c), **kwargs) for c in conditions}


def random_conditions(images, conditions=CONDITIONS, seed: int = 0, **kwargs):
    """Each image gets one condition drawn uniformly from ``conditions`` (a fixed random draw).

    Returns (noisy images, condition index into ``conditions`` per image)."""
    rng = np.random.default_rng([int(seed), 999])
    x = np.asarray(images, dtype=np.float32)
    which = rng.integers(0, len(conditions), len(x))
    out = np.empty_like(x)
    for k, c in enumerate(conditions):
        sel = np.flatnonzero(which == k)
        if len(sel):
            out[sel] = apply_condition(x[sel], c, rng, **kwargs)
    return out, which


def accuracy_on(model: torch.nn.Module, sets: dict, labels, *, threads: int | None = 1) -> dict:
    """{condition: accuracy of ``model`` on sets[condition]} (sets from ``noisy_sets``)."""
    labels = np.asarray(labels)
    out = {}
    with training.torch_threads(threads):
        for c, x in sets.items():
            out[c] = float((nets.predict(model, x).numpy().argmax(1) == labels).mean())
    return out


@dataclass
class NoiseRun:
    """The result of ``run_noise``: the clean model and the noise-augmented one on every condition."""

    profile: str
    conditions: tuple
    clean_model_on: dict
    augmented_model_on: dict
    augmented_model: torch.nn.Module
    augmented_history: History
    train_conditions: np.ndarray  # condition index per training image in the augmented model's first epoch
    per_condition: dict = field(default_factory=dict)  # {condition: accuracy} of per-condition models
    timings: dict = field(default_factory=dict)

    @property
    def augmented_worst(self) -> tuple[str, float]:
        c = min(self.augmented_model_on, key=self.augmented_model_on.get)
        return c, self.augmented_model_on[c]


def _split(x, y):
    """(train, val): the last 10 % (at least one per class) is the validation set, as in run_clean."""
    n_val = max(len(gisaxs.CLASS_NAMES), len(x) // 10)
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def _train(sizes: dict, train, val, *, threads, device, progress, epochs: int | None = None, init=None,
           epoch_data=None, lr: float | None = None):
    model = build_model(sizes)
    if init is not None:
        model.load_state_dict(init.state_dict())
    config = train_config(sizes, epochs=epochs, progress=progress, lr=lr)
    with training.torch_threads(threads):
        history = fit(model, nets.classification_loss, train, val, config, device=device, epoch_data=epoch_data)
    return model, history


def fresh_noise(images, labels, conditions=CONDITIONS, seed: int = 0):
    """An ``epoch_data`` hook for ``training.fit``: epoch e gets every image under one condition
    drawn afresh (``random_conditions`` seeded by (seed, e)), so the network never sees the same
    noise twice and a resumed run sees the same draws. ``epoch_data.conditions(e)`` is the
    condition index of every image in epoch e."""
    images, labels = np.asarray(images, dtype=np.float32), np.asarray(labels)
    last: dict = {}

    def draw(epoch: int):
        if epoch not in last:  # keep the latest epoch's draw: fit may ask for it twice
            last.clear()
            last[epoch] = random_conditions(images, conditions, seed=int(seed) * 100_003 + int(epoch))
        return last[epoch]

    def epoch_data(epoch: int):
        return draw(epoch)[0], labels

    epoch_data.conditions = lambda epoch: draw(epoch)[1]
    return epoch_data


def train_augmented(clean: CleanRun, data: dict, *, conditions=CONDITIONS, progress: bool = True, device=None,
                    threads: int | None = None, reuse: bool = False):
    """The noise-augmented model of ``run_noise`` (its step 3): the clean model fine-tuned for
    ``aug_epochs`` on training images under a condition drawn afresh per image and epoch.

    Saved at ``model_path("augmented", sizes, clean.model)`` (default conditions only); with
    ``reuse=True`` a model saved there is loaded instead (empty history).

    Returns
    -------
    model, history, train_conditions, timings
        ``train_conditions``: the condition index of every training image in the first epoch;
        timings: noise_s, train_augmented_s, epochs_augmented (and augmented_loaded_from).
    """
    sizes = clean.sizes
    seed = int(sizes["seed"])
    threads = threads or sizes.get("threads", 1)
    keep = tuple(conditions) == CONDITIONS
    timings = {}
    t0 = time.perf_counter()
    (xt_, yt_), (xv, yv) = _split(data["train"]["images"], data["train"]["labels"])
    epoch_data = fresh_noise(xt_, yt_, conditions, seed=seed + 200)
    which = epoch_data.conditions(0)
    model = _load_kept("augmented", sizes, timings, clean.model) if reuse and keep else None
    if model is not None:
        timings.update(noise_s=time.perf_counter() - t0, train_augmented_s=0.0, epochs_augmented=0)
        return model, History(), which, timings
    xva, _ = random_conditions(xv, conditions, seed=seed + 199)
    timings["noise_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, history = _train(sizes, epoch_data(0), (xva, yv), threads=threads, device=device, progress=progress,
                            epochs=sizes.get("aug_epochs"), init=clean.model, epoch_data=epoch_data)
    timings["train_augmented_s"] = time.perf_counter() - t0
    timings["epochs_augmented"] = len(history.train_loss)
    if keep:
        training.save_model(model_path("augmented", sizes, clean.model), model,
                            {"kind": "augmented", "profile": clean.profile, "train_s": timings["train_augmented_s"]})
    return model, history, which, timings


def run_noise(clean: CleanRun, data: dict, *, conditions=CONDITIONS, per_condition=None, progress: bool = True,
              device=None, threads: int | None = None) -> NoiseRun:
    """The noise study on top of ``run_clean``'s result.

    1. The test set under every condition (``noisy_sets``, seed = profile seed + 100).
    2. ``clean_model_on``: the clean-trained model on each noisy test set.
    3. One model trained with noise augmentation: every epoch, each of the clean model's
       training images under one condition drawn uniformly from ``conditions`` (clean included),
       drawn afresh every epoch (``fresh_noise``); the validation images once, each under one
       random condition. Same network, started from the clean model's weights and trained for the
       profile's ``aug_epochs`` (fine-tuning: cheaper than training from scratch, and it keeps what
       the clean model learned). ``augmented_model_on``: it on each noisy test set.
    4. per_condition: conditions (default: the profile's ``per_condition`` list) for which a
       separate model is trained on the training set under that condition and tested on it (the
       paper's Tables II/III); clean is always there, from ``clean``. With the profile's
       ``per_condition_epochs`` set, each such model is the noise-augmented model of step 3
       fine-tuned on that condition alone for that many epochs (cheap: a specialist that starts
       from a generalist); with None it is trained from scratch for ``epochs`` (as the paper).
    """
    sizes = clean.sizes
    seed = int(sizes["seed"])
    threads = threads or sizes.get("threads", 1)
    timings = {}
    t0 = time.perf_counter()
    sets = noisy_sets(data["test"]["images"], conditions, seed=seed + 100)
    timings["noise_s"] = time.perf_counter() - t0
    yt = data["test"]["labels"]
    t0 = time.perf_counter()
    clean_on = accuracy_on(clean.model, sets, yt, threads=threads)
    timings["evaluate_s"] = time.perf_counter() - t0
    x, y = data["train"]["images"], data["train"]["labels"]
    model, history, which, aug_timings = train_augmented(clean, data, conditions=conditions, progress=progress,
                                                         device=device, threads=threads)
    timings["noise_s"] += aug_timings.pop("noise_s")
    timings.update(aug_timings)
    aug_on = accuracy_on(model, sets, yt, threads=threads)
    per = {"clean": clean.accuracy}
    todo = sizes.get("per_condition", []) if per_condition is None else per_condition
    t0 = time.perf_counter()
    n_pc = sizes.get("per_condition_n_train") or len(x)
    for c in todo:
        if c == "clean":
            continue
        xc = apply_condition(x[:n_pc], c, condition_rng(seed + 300, c))
        ft = sizes.get("per_condition_epochs")
        m, _ = _train(sizes, *_split(xc, y[:n_pc]), threads=threads, device=device, progress=progress,
                      epochs=ft, init=model if ft else None, lr=sizes["lr"] / 10 if ft else None)
        per[c] = accuracy_on(m, {c: sets[c]}, yt, threads=threads)[c]
    timings["train_per_condition_s"] = time.perf_counter() - t0
    return NoiseRun(clean.profile, tuple(conditions), clean_on, aug_on, model, history, which, per, timings)


# --------------------------------------------------------------------------------------------
# Accuracy vs crystal size (the paper's Fig. 6)
# --------------------------------------------------------------------------------------------

REPS_BINS = ((1, 1), (2, 3), (4, 5), (6, 7), (8, 11), (12, 20))


def fixed_reps_set(sizes: dict, reps: int, n_per_class: int, seed: int) -> dict:
    """A balanced test set whose crystals all have ``reps`` cells along each lattice vector
    (before the peak-width cap of ``gisaxs.reps_cap``), other parameters drawn as in training.
    Not cached: meant for a few hundred images."""
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps={reps!r} must be a positive integer (cells per lattice vector)")
    if int(n_per_class) != n_per_class or n_per_class < 1:
        raise ValueError(f"n_per_class={n_per_class!r} must be a positive integer")
    cfg = dataset_config(**{**data_config(sizes), "reps": [int(reps)] * 2, "reps_z": [int(reps)] * 2})
    return dataset_chunk(cfg, int(seed), 0, int(n_per_class) * len(gisaxs.CLASS_NAMES))


def accuracy_by_reps(model: torch.nn.Module, images, labels, reps, bins=REPS_BINS, *,
                     threads: int | None = 1) -> list[dict]:
    """Accuracy of ``model`` per bin of the in-plane cell count N1 (reps[:, 0], after the cap).

    Returns one dict per non-empty bin: lo, hi, n (images), accuracy, and the binomial standard
    error sqrt(p (1 - p) / n)."""
    labels, n1 = np.asarray(labels), np.asarray(reps)[:, 0]
    if len(n1) != len(labels) or len(images) != len(labels):
        raise ValueError(f"images, labels and reps differ in length: {len(images)}, {len(labels)}, {len(n1)}")
    with training.torch_threads(threads):
        pred = nets.predict(model, images).numpy().argmax(1)
    rows = []
    for lo, hi in bins:
        sel = (n1 >= lo) & (n1 <= hi)
        if sel.any():
            p = float((pred[sel] == labels[sel]).mean())
            rows.append({"lo": lo, "hi": hi, "n": int(sel.sum()), "accuracy": p,
                         "stderr": float(np.sqrt(p * (1 - p) / sel.sum()))})
    return rows


def example_image(sizes: dict, class_name: str, lattice_nm: float, condition: str = "clean", seed: int = 0):
    """One log-normalised image of ``class_name`` with lattice constant ``lattice_nm`` (cube edge,
    or HCP's in-plane spacing), the other parameters drawn as in training from ``seed``, under
    ``condition``. Returns (image, params)."""
    checks.one_of("condition", condition, CONDITIONS)
    cfg = {**data_config(sizes), "lattice_nm": [float(lattice_nm)] * 2}
    params = sample_parameters(class_name, dataset_config(**cfg), np.random.default_rng(seed))
    image = render(class_name, params, cfg)
    return apply_condition(image, condition, condition_rng(seed, condition)), params


# --- a synthetic OOD set ----------------------------------------------------------------------------


def isolated_sphere_images(config: dict, n: int, seed: int = 0, radius_nm=(2.0, 15.0),
                           sigma_max: float = 0.3, n_radii: int = 5) -> np.ndarray:
    """n log-normalised GISAXS images of dilute, polydisperse spheres on the substrate: no
    lattice, hence no superlattice class (a physical OOD set for study 3).

    Each image: a median radius uniform in radius_nm (nm), a log-normal width uniform in
    [0, sigma_max], alpha_i uniform in the config's range; the intensity is the mean of the
    DWBA images (``render``, one sphere: reps (1, 1, 1)) of n_radii radii at the
    quantiles of that log-normal. config: a ``dataset_config`` (image size, q window,
    substrate). float32 (n, S, S).
    """
    config = dataset_config(**config)
    rng = np.random.default_rng([int(seed), 7007])
    z = np.array([NormalDist().inv_cdf((i + 0.5) / int(n_radii)) for i in range(int(n_radii))])
    out = []
    for _ in range(int(n)):
        r0 = rng.uniform(*radius_nm)
        sigma = rng.uniform(0.0, sigma_max)
        alpha = float(rng.uniform(*config["alpha_i_deg"]))
        total = 0.0
        for r in r0 * np.exp(sigma * z):
            params = {"lattice_nm": 4.0 * r, "radius_nm": float(r), "reps": (1, 1, 1), "alpha_i_deg": alpha,
                      "angles_deg": [0.0]}
            total = total + render("SC[100]", params, config, normalise=False).astype(np.float64)
        out.append(gisaxs.log_normalise(total / len(z), config["decades"]))
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Which network and input transform? Measured at equal CPU time (``python -m ... recipes``)
# --------------------------------------------------------------------------------------------

#: The recipes compared: (net, input transform, schedule, learning rate).
RECIPES = {
    "alexnet / log / plateau": ("alexnet", "log", "plateau", 1e-3),
    "resnet / log / onecycle": ("resnet", "log", "onecycle", 3e-3),
    "resnet / asinh / onecycle": ("resnet", "asinh", "onecycle", 3e-3),
    "resnet / sqrt / onecycle": ("resnet", "sqrt", "onecycle", 3e-3),
    "resnet / log_floor / onecycle": ("resnet", "log_floor", "onecycle", 3e-3),
}


def compare_recipes(data: dict, sizes: dict, *, seconds: float, recipes=None, n_train: int | None = None,
                    threads: int | None = 1, progress: bool = False) -> dict:
    """Train each recipe from scratch with fresh noise every epoch (one random condition per
    image, ``fresh_noise``) for about ``seconds`` of CPU time (the epoch count is set from a
    timed first epoch), then measure its accuracy on the clean and every noisy test set.

    Returns {recipe: {"epochs", "seconds", "n_parameters", "accuracy": {condition: value},
    "mean", "worst"}}. ``n_train`` uses the first n_train training images (all by default).
    """
    recipes = {k: RECIPES[k] for k in (recipes or RECIPES)}
    x, y = data["train"]["images"], data["train"]["labels"]
    if n_train:
        x, y = x[:int(n_train)], y[:int(n_train)]
    (xt_, yt_), (xv, yv) = _split(x, y)
    seed = int(sizes["seed"])
    xva, _ = random_conditions(xv, CONDITIONS, seed=seed + 199)
    sets = noisy_sets(data["test"]["images"], CONDITIONS, seed=seed + 100)
    epoch_data = fresh_noise(xt_, yt_, CONDITIONS, seed=seed + 200)
    out = {}
    for name, (net, transform, schedule, lr) in recipes.items():
        s = {**sizes, "net": net, "input_transform": transform, "schedule": schedule, "lr": lr}
        t0 = time.process_time()
        _train(s, epoch_data(0), (xva, yv), threads=threads, device="cpu", progress=progress, epochs=1,
               epoch_data=epoch_data)
        per_epoch = time.process_time() - t0
        epochs = max(1, int(round(seconds / per_epoch)))
        t0 = time.process_time()
        s["patience"] = epochs  # a fixed budget: no early stop
        model, hist = _train(s, epoch_data(0), (xva, yv), threads=threads, device="cpu", progress=progress,
                             epochs=epochs, epoch_data=epoch_data)
        acc = accuracy_on(model, sets, data["test"]["labels"], threads=threads)
        out[name] = {"epochs": epochs, "seconds": time.process_time() - t0, "n_parameters": model.n_parameters(),
                     "accuracy": acc, "mean": float(np.mean(list(acc.values()))), "worst": min(acc.values())}
    return out


def learning_curve(data: dict, sizes: dict, n_train=(2625, 5250, 10500, 21000), *, threads: int | None = 2,
                   progress: bool = False) -> dict:
    """The profile's clean recipe trained on the first n images of the training set for each n
    (same epochs, same validation rule), tested on the whole clean test set.

    Returns {"n_train": [...], "accuracy": [...], "hcp_recall": [...], "seconds": [...],
    "error_power_law": (c, slope) of error = c n^slope fitted to the points}."""
    x, y = data["train"]["images"], data["train"]["labels"]
    xt, yt = data["test"]["images"], data["test"]["labels"]
    out = {"n_train": [], "accuracy": [], "hcp_recall": [], "seconds": []}
    for n in n_train:
        n = min(int(n), len(x))
        t0 = time.perf_counter()
        model, _ = _train(sizes, *_split(x[:n], y[:n]), threads=threads, device="cpu", progress=progress)
        with training.torch_threads(threads):
            pred = nets.predict(model, xt).numpy().argmax(1)
        hcp = gisaxs.CLASS_NAMES.index("HCP[0001]")
        out["n_train"].append(n)
        out["accuracy"].append(float((pred == yt).mean()))
        out["hcp_recall"].append(float((pred[yt == hcp] == hcp).mean()))
        out["seconds"].append(time.perf_counter() - t0)
    err = np.maximum(1 - np.asarray(out["accuracy"]), 1e-6)
    slope, log_c = np.polyfit(np.log(out["n_train"]), np.log(err), 1)
    out["error_power_law"] = (float(np.exp(log_c)), float(slope))
    return out


def load_experiment(name: str, profile: str) -> dict | None:
    """The recorded result of an experiment ("recipes", "learning_curve") at ``profile``, or None."""
    from ..core import report

    return report.load_experiment(STUDY, name, profiles.current_profile(profile))


def recipes_table(rec: dict) -> str:
    """Markdown: the recipe comparison, one row per recipe, accuracy in % per condition."""
    res = rec["results"]
    conds = list(next(iter(res.values()))["accuracy"])
    head = "| recipe | epochs | CPU s | parameters | " + " | ".join(conds) + " | mean | worst |"
    rows = [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, r in res.items():
        rows.append(f"| {name} | {r['epochs']} | {r['seconds']:.0f} | {r['n_parameters']:,} | "
                    + " | ".join(f"{100 * r['accuracy'][c]:.1f}" for c in conds)
                    + f" | {100 * r['mean']:.1f} | {100 * r['worst']:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    """``python -m sashelpers.studies.gisaxs_cnn recipes``: the recipe comparison at a profile's data,
    written as JSON (default ``book/records/experiments/03_recipes@<profile>.json``)."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("what", choices=["recipes", "learning_curve"])
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--seconds", type=float, default=300.0, help="CPU seconds of training per recipe")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--recipes", default="", help="comma-separated recipe names (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = profile_sizes(args.profile)
    data = load_data(args.profile)
    from ..core import report

    rec = {"threads": args.threads, "command": "python -m sashelpers.studies.gisaxs_cnn " + " ".join(argv or [])}
    if args.what == "recipes":
        names = [r.strip() for r in args.recipes.split(",") if r.strip()] or None
        res = compare_recipes(data, sizes, seconds=args.seconds, recipes=names, n_train=args.n_train,
                              threads=args.threads)
        rec.update({"seconds_per_recipe": args.seconds, "n_train": args.n_train or len(data["train"]["labels"]),
                    "results": res})
        print(recipes_table(rec))
    else:
        rec["results"] = learning_curve(data, sizes, threads=args.threads)
        print(rec["results"])
    report.write_experiment(STUDY, args.what, args.profile, rec, args.out)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))

"""Out-of-distribution (OOD) scores for a classifier (from its logits and from a reconstruction of
its input), thresholds on held-out data, and AUROC.

A classifier (e.g. study 3's, trained on 7 superlattice classes) always answers with one of them; these scores
say when an input is unlike its training data, so that the answer should not be trusted.

Sign convention, the same for every score: **higher score = more out of distribution**.

* ``msp``: 1 - max softmax probability (Hendrycks & Gimpel 2017), in [0, 1 - 1/K].
* ``entropy``: predictive entropy -sum p ln p in nats, in [0, ln K] (ln 7 = 1.946).
* ``energy``: E = -T logsumexp(logits / T) (Liu et al. 2020); in-distribution inputs get large
  logits, hence low (negative) energy.
* ``recon``: not from the logits but from the input: the RMS residual of the image after
  projection on the leading principal components of the training images (``fit_pca``), in
  log-normalised intensity units. It sees inputs that the classifier maps confidently onto a
  class although they look nothing like the training images -- but "unlike the clean
  simulations" is all it says: a faint flat background added to in-distribution images is
  enough to get most of them flagged.

A threshold is the ``quantile`` (default 0.95) of the scores of held-out in-distribution
images: by construction about 5 % of in-distribution images are flagged (score > threshold).
``report`` sets the thresholds on one half of the held-out images and measures that rate on
the other half. Pure numpy / torch on the CPU (the model's device is used for the forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import nets
from ..core import checks

SCORES = ("msp", "entropy", "energy")  # the scores computed from the logits


def _check_logits(logits) -> np.ndarray:
    z = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[None, :]
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits have shape {z.shape}; expected (n, n_classes) with n_classes >= 2")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    return z


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def softmax(logits) -> np.ndarray:
    """Class probabilities (n, K), float64."""
    z = _check_logits(logits)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def msp_score(logits) -> np.ndarray:
    """1 - max softmax probability per sample (higher = more OOD)."""
    return 1.0 - softmax(logits).max(axis=1)


def entropy_score(logits) -> np.ndarray:
    """Predictive entropy -sum_c p_c ln p_c per sample, in nats (higher = more OOD)."""
    z = _check_logits(logits)
    logp = z - _logsumexp(z)[:, None]
    return -(np.exp(logp) * logp).sum(axis=1)


def energy_score(logits, temperature: float = 1.0) -> np.ndarray:
    """Energy E = -T logsumexp(logits / T) per sample (higher = more OOD)."""
    t = float(temperature)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature={temperature!r} must be a positive number")
    return -t * _logsumexp(_check_logits(logits) / t)


def scores(logits, temperature: float = 1.0) -> dict:
    """{"msp", "entropy", "energy"}: the three scores per sample (each higher = more OOD)."""
    return {"msp": msp_score(logits), "entropy": entropy_score(logits),
            "energy": energy_score(logits, temperature)}


def fit_threshold(scores_in_distribution, quantile: float = 0.95) -> float:
    """The score below which ``quantile`` of the held-out in-distribution scores fall (the
    empirical quantile, linear interpolation); inputs scoring above it are flagged as OOD."""
    if not (isinstance(quantile, (int, float)) and 0 < quantile < 1):
        raise ValueError(f"quantile={quantile!r} must lie in (0, 1)")
    return float(np.quantile(checks.array("scores_in_distribution", scores_in_distribution).ravel(), quantile))


def flagged(scores, threshold: float) -> np.ndarray:
    """Boolean per sample: score > threshold (flagged as out of distribution)."""
    return checks.array("scores", scores).ravel() > float(threshold)


def flagged_fraction(scores, threshold: float) -> float:
    """Fraction of samples with score > threshold."""
    return float(flagged(scores, threshold).mean())


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve for telling out_scores (positives) from in_scores by a threshold
    on the score: P(out > in) + P(out = in) / 2 (Mann-Whitney U with mid-ranks for ties).
    1 = perfectly separated with OOD scoring higher, 0.5 = indistinguishable."""
    a, b = checks.array("in_scores", in_scores).ravel(), checks.array("out_scores", out_scores).ravel()
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    midrank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mid-rank of each distinct value
    ranks = midrank[inverse]
    u = ranks[a.size:].sum() - b.size * (b.size + 1) / 2
    return float(u / (a.size * b.size))


@dataclass(frozen=True)
class PCAReconstruction:
    """A linear reconstruction model of images: their mean and leading principal components."""

    mean: np.ndarray  # (D,) with D = S * S
    components: np.ndarray  # (n_components, D), orthonormal rows

    def score(self, images) -> np.ndarray:
        """RMS residual per image (n, S, S) or (S, S) after projection on the components (higher =
        more OOD), in the images' units (log-normalised intensity, 0-1)."""
        x = np.asarray(images, dtype=np.float64)
        if x.ndim == 2:  # one (S, S) image
            x = x[None]
        if x.ndim < 3 or x[0].size != self.mean.size:
            raise ValueError(f"images have shape {x.shape}; the PCA was fitted on images of {self.mean.size} pixels")
        x = x.reshape(len(x), -1)
        r = x - self.mean
        r = r - (r @ self.components.T) @ self.components
        return np.sqrt((r * r).mean(axis=1))


def _one_blas_thread():
    """A context limiting BLAS to one thread (threadpoolctl, a scikit-learn dependency): on a
    shared 2-core machine multi-threaded BLAS was 30x slower here. A no-op without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def fit_pca(images, n_components: int = 20, seed: int = 0) -> PCAReconstruction:
    """The leading principal components of in-distribution (training) images (n, S, S).

    A randomized SVD (Halko, Martinsson & Tropp 2011: a Gaussian sketch of n_components + 10
    columns, two power iterations, seeded): exact for data of rank <= n_components + 10 and
    much cheaper than a full SVD for S = 64 (4096 pixels).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2 or len(x) < 2:
        raise ValueError(f"images have shape {x.shape}; expected (n, S, S) with n >= 2")
    x = x.reshape(len(x), -1)
    if not np.all(np.isfinite(x)):
        raise ValueError("images must be finite")
    if int(n_components) != n_components or not 1 <= n_components <= min(x.shape):
        raise ValueError(f"n_components={n_components!r} must be an integer in [1, {min(x.shape)}]")
    k = int(n_components)
    mean = x.mean(axis=0)
    c = x - mean
    with _one_blas_thread():
        sketch = c @ np.random.default_rng(seed).standard_normal((c.shape[1], min(k + 10, min(c.shape))))
        for _ in range(2):
            sketch = c @ (c.T @ np.linalg.qr(sketch)[0])
        q = np.linalg.qr(sketch)[0]
        _, _, vt = np.linalg.svd(q.T @ c, full_matrices=False)
    return PCAReconstruction(mean, vt[:k])


@dataclass
class OODReport:
    """The result of ``report``: thresholds from held-out in-distribution images and the
    scores of the judged images. The score dicts share their keys (``names``)."""

    quantile: float
    thresholds: dict  # score -> threshold (from the calibration part)
    in_scores: dict  # score -> scores of the evaluation part of the in-distribution images
    scores: dict  # score -> scores of the judged images
    probs: np.ndarray  # (n, K) class probabilities of the judged images
    n_calibration: int

    @property
    def names(self) -> tuple:
        return tuple(self.thresholds)

    @property
    def flagged(self) -> dict:
        """score -> boolean per judged image (score > threshold)."""
        return {k: flagged(self.scores[k], self.thresholds[k]) for k in self.names}

    @property
    def in_flagged_fraction(self) -> dict:
        """score -> fraction of the held-out in-distribution images flagged (false alarms, ~1 - quantile)."""
        return {k: flagged_fraction(self.in_scores[k], self.thresholds[k]) for k in self.names}

    @property
    def flagged_fraction(self) -> dict:
        """score -> fraction of the judged images flagged."""
        return {k: flagged_fraction(self.scores[k], self.thresholds[k]) for k in self.names}

    def auroc(self) -> dict:
        """score -> AUROC of the judged images (as OOD) against the held-out in-distribution images."""
        return {k: auroc(self.in_scores[k], self.scores[k]) for k in self.names}

    def table(self, index: int | None = None) -> str:
        """Text table per score: threshold, fraction of in-distribution images flagged, and either
        the fraction of judged images flagged or (index given) that image's score and verdict."""
        last = "flagged" if index is None else f"image {index}"
        lines = [f"{'score':8s} {'threshold':>10s} {'ID flagged':>10s} {last:>18s}"]
        for k in self.names:
            if index is None:
                tail = f"{self.flagged_fraction[k]:18.3f}"
            else:
                tail = f"{self.scores[k][index]:9.4g} {'OOD' if self.flagged[k][index] else 'in':>8s}"
            lines.append(f"{k:8s} {self.thresholds[k]:10.4g} {self.in_flagged_fraction[k]:10.3f} {tail}")
        return "\n".join(lines)


def _logits(model: torch.nn.Module, images) -> np.ndarray:
    """``nets.logits`` as float64 numpy; one (S, S) image is taken as a batch of one."""
    x = np.asarray(images, dtype=np.float32)
    return nets.logits(model, x[None] if x.ndim == 2 else x).double().numpy()


def report(model: torch.nn.Module, in_images, images, *, quantile: float = 0.95, temperature: float = 1.0,
           calibration_fraction: float = 0.5, reconstruction: PCAReconstruction | None = None) -> OODReport:
    """Score ``images`` for being out of distribution, with thresholds from ``in_images``.

    in_images: held-out in-distribution images (e.g. the run's test set; not the training set).
    The first ``calibration_fraction`` of them set each score's threshold (``fit_threshold`` at
    ``quantile``); the rest measure how many in-distribution images are flagged (an honest
    false-alarm rate, not 1 - quantile by construction). images: the images to judge, same size.
    Scores: msp, entropy, energy (at ``temperature``) and, if a ``fit_pca`` result is given,
    recon.
    """
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction={calibration_fraction!r} must lie in (0, 1)")
    in_images = np.asarray(in_images, dtype=np.float32)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 2:
        images = images[None]
    n_cal = int(round(len(in_images) * calibration_fraction))
    if n_cal < 2 or len(in_images) - n_cal < 2:
        raise ValueError(f"{len(in_images)} in-distribution images are too few to split "
                         f"{calibration_fraction} for calibration (need >= 2 in each part)")
    in_s = scores(_logits(model, in_images), temperature)
    z = _logits(model, images)
    out_s = scores(z, temperature)
    if reconstruction is not None:
        in_s["recon"], out_s["recon"] = reconstruction.score(in_images), reconstruction.score(images)
    thresholds = {k: fit_threshold(v[:n_cal], quantile) for k, v in in_s.items()}
    return OODReport(float(quantile), thresholds, {k: v[n_cal:] for k, v in in_s.items()}, out_s, softmax(z), n_cal)

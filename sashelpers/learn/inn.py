"""Conditional invertible networks (FrEIA) for posterior sampling of scatterer parameters.

Design: a conditional INN maps standardised parameters x to a latent z of the same size,
conditioned on features h(y) of the measured curve y (standardised log I) computed by a small
conditioning network trained jointly. Training maximises the likelihood,

    ``loss = E[ ||z||^2 / 2 - log |det dz/dx| ] / d``,

so that z ~ N(0, I) for true (x, y) pairs. At prediction time, drawing z ~ N(0, I) and
running the INN backwards gives samples from the posterior p(x | y). Unlike the padded
x <-> [y, z] design of the original INN paper, nothing has to be balanced between a
supervised y-loss and a latent MMD loss, and the posterior is calibrated by construction when
the model fits.

Discrete shape is handled outside the INN: one conditional INN per shape behind a classifier.
Where the classifier is unsure (top probability below ``refine_below``), the shape can be
decided instead by a *second opinion*: any callable ``(q_nm, log_i, shapes, effort) ->
posterior (n, n_shapes)`` handed to the model, e.g. study 1's likelihood classifier
``sashelpers.studies.bayes_shapes.second_opinion``.

``ShapeInverter.predict`` answers one measured curve with a ``Verdict``: the domain check comes
first, and a curve outside the training domain (or whose size reads back beyond the prior) gets
the reasons and *no* shape or parameters; only a curve inside it is classified (with the second
opinion where the network is unsure) and gets posterior intervals, drawn within each parameter's
support (``ShapeInverter.support``).

The absolute intensity scale is either an input (default: the model reads log I on the training
curves' scale) or a nuisance parameter (``ShapeInverter.from_training_data(..., scale_free=True)``:
every curve is read with the mean of its log I over the q grid removed, so any positive factor
gives the same verdict; ``Verdict.scale`` reports the factor and the second opinion is asked to fit
it, ``free_scale=True``). A flat background is a nuisance the network learns to read through when
it is trained on curves with random backgrounds (``ShapeInverter(background=True)``; study 1's
``inn_scatterers.add_background``); its second opinion then fits one (``free_background=True``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

#: The one default of ``refine_below`` (``ShapeInverter.classify``, ``predict``, ``evaluate``; study
#: 1's profiles use it too): curves whose top network probability is below it are decided by the
#: second opinion. 0.9 is the threshold notebook 01 evaluates and records at every profile (the
#: accuracy "network + likelihood where unsure" is measured with it); the former defaults (0.99 in
#: ``classify``/``predict``, none in ``evaluate``) were never evaluated, and 0.99 sends more curves
#: to a likelihood that costs about a second each.
REFINE_BELOW = 0.9

#: A size (a parameter named ``*_nm``) whose posterior median lies above this quantile of its prior
#: is read back "beyond the prior": the network saw hardly any training curve there (the domain
#: score's threshold is the same 0.999 quantile of the training curves' own scores).
PRIOR_QUANTILE = 0.999

#: Rounds of redrawing for posterior samples that fall outside the support (``posterior_samples``).
SUPPORT_ROUNDS = 20

#: The posteriors ``posterior_samples``, ``predict`` and ``evaluate`` can give: the flow's
#: ("network") or the likelihood's (``ShapeInverter``'s ``posterior_refiner``, "likelihood").
POSTERIORS = ("network", "likelihood")

#: A likelihood posterior whose importance weights hold fewer effective draws than this is not
#: trusted: ``predict`` then reports the network's posterior and says so in a note.
MIN_ESS = 20.0


def mlp(n_in: int, n_out: int, hidden: int = 128, depth: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """A plain MLP: depth hidden layers of width hidden with ReLU (and optional dropout)."""
    layers, n = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(n, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        n = hidden
    layers.append(nn.Linear(n, n_out))
    return nn.Sequential(*layers)


class ConditionalINN(nn.Module):
    """x (n, d) <-> z (n, d) given a curve y (n, n_y). d >= 2."""

    def __init__(self, n_params: int, n_curve: int, *, n_blocks: int = 6, hidden: int = 128,
                 cond_features: int = 64, clamp: float = 2.0, seed: int = 0):
        super().__init__()
        import FrEIA.framework as ff
        import FrEIA.modules as fm

        if int(n_params) != n_params or n_params < 2:
            raise ValueError(f"n_params={n_params!r} must be an integer >= 2 (the coupling blocks split x in two)")
        if int(n_curve) != n_curve or n_curve < 2:
            raise ValueError(f"n_curve={n_curve!r} must be an integer >= 2")
        self.n_params, self.n_curve = int(n_params), int(n_curve)
        self.cond_net = mlp(n_curve, cond_features, hidden=2 * hidden, depth=2)

        def subnet(c_in, c_out):
            net = mlp(c_in, c_out, hidden=hidden, depth=2)
            nn.init.zeros_(net[-1].weight)  # start close to the identity map
            nn.init.zeros_(net[-1].bias)
            return net

        state = np.random.get_state()  # FrEIA draws its fixed permutations from numpy's global RNG
        np.random.seed(seed)
        try:
            self.flow = ff.SequenceINN(self.n_params)
            for _ in range(n_blocks):
                self.flow.append(fm.AllInOneBlock, cond=0, cond_shape=(cond_features,),
                                 subnet_constructor=subnet, affine_clamping=clamp, permute_soft=False)
        finally:
            np.random.set_state(state)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        """z and log|det dz/dx| for parameters x given curves y."""
        z, log_jac = self.flow(x, c=[self.cond_net(y)])
        return z, log_jac

    def nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per parameter dimension (up to a constant)."""
        z, log_jac = self(x, y)
        return (0.5 * (z**2).sum(dim=1) - log_jac).mean() / self.n_params

    @torch.no_grad()
    def sample(self, y: torch.Tensor, n_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Posterior samples x ~ p(x | y): shape (n_curves, n_samples, d)."""
        if n_samples < 1:
            raise ValueError(f"n_samples={n_samples!r} must be >= 1")
        self.eval()
        n = y.shape[0]
        h = self.cond_net(y).repeat_interleave(n_samples, dim=0)
        z = torch.randn(n * n_samples, self.n_params, generator=generator, device=y.device)
        x, _ = self.flow(z, c=[h], rev=True)
        return x.reshape(n, n_samples, self.n_params)


def nll_loss(model: ConditionalINN, batch) -> torch.Tensor:
    """Loss for sashelpers.training.fit with batches (x, y)."""
    x, y = batch
    return model.nll(x, y)


def interval_coverage(samples: np.ndarray, truth: np.ndarray, level: float = 0.9) -> np.ndarray:
    """Fraction of true values inside the central ``level`` interval of the samples, per parameter.

    samples: (n_curves, n_samples, d); truth: (n_curves, d).
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    lo = np.quantile(samples, (1 - level) / 2, axis=1)
    hi = np.quantile(samples, (1 + level) / 2, axis=1)
    return ((truth >= lo) & (truth <= hi)).mean(axis=0)


# --- a shape classifier + one conditional INN per shape -------------------------------------------

def _log_scaled(name: str) -> bool:
    """Lengths (names ending in ``_nm``) are positive and broad: they are learned in log space."""
    return name.endswith("_nm")


def physical_support(name: str) -> tuple[float, float]:
    """The values a parameter can take at all, from its name's convention.

    Parameters
    ----------
    name : str
        Lengths end in ``_nm`` (nm, > 0), relative Gaussian widths in ``_pd`` (>= 0), a volume
        fraction is ``volfraction`` ([0, 1)).

    Returns
    -------
    (lo, hi) : tuple of float
        The closed bounds used to keep posterior samples (``inf`` where open-ended; the
        exclusive ends, length 0 and volume fraction 1, have zero probability in a flow). Any
        other name is unbounded.
    """
    if _log_scaled(name) or name.endswith("_pd"):
        return 0.0, math.inf
    if name.endswith("volfraction"):
        return 0.0, 1.0
    return -math.inf, math.inf


def prior_support(name: str, prior: dict | None = None, step: float = 0.0) -> tuple[float, float]:
    """The support of a parameter's prior, within its ``physical_support``.

    Parameters
    ----------
    name : str
        Parameter name (see ``physical_support``).
    prior : dict, optional
        A prior as study modules write them (e.g. ``studies.inn_scatterers.PRIORS[shape][name]``):
        ``lower``/``upper`` bounds (None: open) of a continuous distribution, or the ``values`` of a
        discrete one. None: the physical support alone.
    step : float
        Width of the uniform jitter the flow was trained with on a discrete parameter
        (``ParamTransform.dequantize``): the support of the jittered variable reaches half a step
        beyond the extreme values.

    Returns
    -------
    (lo, hi) : tuple of float
        Closed bounds in the parameter's unit.
    """
    lo, hi = physical_support(name)
    if prior:
        if prior.get("values") is not None:
            values = np.asarray(prior["values"], dtype=np.float64)
            p_lo, p_hi = float(values.min()) - step / 2, float(values.max()) + step / 2
        else:
            p_lo = -math.inf if prior.get("lower") is None else float(prior["lower"])
            p_hi = math.inf if prior.get("upper") is None else float(prior["upper"])
        lo, hi = max(lo, p_lo), min(hi, p_hi)
    return lo, hi


def prior_quantile(prior: dict | None, level: float) -> float | None:
    """The ``level`` quantile of a prior (``prior_support``'s format), or None where unknown.

    Truncated normals (``distribution`` containing "normal", with ``mean`` and ``sd``) and
    log-uniform priors (``distribution`` "log-uniform" between ``lower`` and ``upper`` > 0) give
    the exact quantile; discrete priors their largest value; other priors their upper bound, if any.
    """
    if not prior:
        return None
    if prior.get("values") is not None:
        return float(np.max(prior["values"]))
    upper = prior.get("upper")
    if prior.get("distribution") == "log-uniform" and prior.get("lower") and upper:
        lo, hi = math.log(float(prior["lower"])), math.log(float(upper))
        return float(math.exp(lo + level * (hi - lo)))
    if "normal" in str(prior.get("distribution", "")) and prior.get("sd"):
        from scipy.stats import truncnorm

        mean, sd = float(prior["mean"]), float(prior["sd"])
        lo = -math.inf if prior.get("lower") is None else float(prior["lower"])
        hi = math.inf if upper is None else float(upper)
        return float(truncnorm.ppf(level, (lo - mean) / sd, (hi - mean) / sd, loc=mean, scale=sd))
    return None if upper is None else float(upper)


def random_crops(log_i, rng: np.random.Generator, *, fraction: float = 0.5, max_cut_low: float = 0.35,
                 max_cut_high: float = 0.25):
    """Curves cut to random q windows, as a partial measurement: NaN outside the window.

    Parameters
    ----------
    log_i : array_like, shape (n, n_q)
        Complete curves (log I on a q grid, increasing q).
    rng : numpy Generator
    fraction : float
        Fraction of the curves that are cut, in [0, 1]; the others stay complete.
    max_cut_low, max_cut_high : float
        At most these fractions of the grid's points are cut at the low-q and at the high-q end
        (each cut uniform in [0, max] points, independently).

    Returns
    -------
    (log_i, core) : float32 array (n, n_q), (int, int)
        The curves with NaN where cut, and the indices [first, last] of the grid points that
        every window holds: a model trained on these curves needs a curve that covers them
        (``ShapeInverter(q_required_nm=...)``).
    """
    y = np.array(np.atleast_2d(log_i), dtype=np.float32)
    n, n_q = y.shape
    if not 0 <= fraction <= 1 or not 0 <= max_cut_low < 1 or not 0 <= max_cut_high < 1 \
            or max_cut_low + max_cut_high >= 0.9:
        raise ValueError(f"need fraction in [0, 1], cuts in [0, 1) adding up to < 0.9; got fraction={fraction!r}, "
                         f"max_cut_low={max_cut_low!r}, max_cut_high={max_cut_high!r}")
    lo_max, hi_max = int(max_cut_low * n_q), int(max_cut_high * n_q)
    cut = rng.uniform(size=n) < fraction
    lo = np.where(cut, rng.integers(0, lo_max + 1, n), 0)
    hi = np.where(cut, rng.integers(0, hi_max + 1, n), 0)
    idx = np.arange(n_q)[None, :]
    y[(idx < lo[:, None]) | (idx >= n_q - hi[:, None])] = np.nan
    return y, (lo_max, n_q - 1 - hi_max)


def _unit(name: str, prior: dict | None = None) -> str:
    if prior and "unit" in prior:
        return str(prior["unit"])
    return "nm" if _log_scaled(name) else ""


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@dataclass
class Verdict:
    """What ``ShapeInverter.predict`` says about one curve.

    Out of domain, the verdict holds the reasons and no shape, probabilities, parameters or
    samples: a curve unlike the training curves gets no numbers that could be read as an answer.

    Attributes
    ----------
    in_domain : bool
        True when the curve passed every check and the model answers it.
    reasons : list of str
        Why the curve is out of domain; empty when in domain. Today: the domain score above its
        threshold, or a size read back beyond the prior; later checks (e.g. how much of the
        model's q range a partial curve covers) append theirs.
    domain_score, domain_threshold : float
        The curve's distance to its k-th nearest training curve in standardised log I
        (dimensionless), and the same score's 0.999 quantile over training curves
        (``CurveFeatures``): above it, the curve is out of domain.
    shape : str or None
        The most probable shape; None out of domain.
    shape_probabilities : dict or None
        {shape: probability}: the network's, or the second opinion's where the network's top
        probability was below ``refine_below``; None out of domain.
    shape_source : str or None
        "network" or "second opinion"; None out of domain.
    posterior_source : str or None
        Where ``parameters`` and ``samples`` come from: "network" (the shape's conditional INN) or
        "likelihood" (the model's ``posterior_refiner``: the exact likelihood, sampled around its
        best fits); None out of domain.
    network_probabilities : dict or None
        The network's own {shape: probability}; None out of domain.
    parameters : dict or None
        {name: {"median", "lo", "hi", "unit"}}: posterior median and central ``level`` interval of
        each parameter of ``shape`` ("nm" for lengths, "" for relative widths and volume
        fractions), from samples kept inside each parameter's support
        (``ShapeInverter.support``); None out of domain.
    samples : dict or None
        {name: (n_samples,) array} of the posterior draws behind ``parameters``; None out of domain.
    level : float
        Probability of the central interval [lo, hi].
    refine_below : float or None
        The threshold the second opinion was asked under (None: network only).
    scale : float or None
        For a scale-free model (``ShapeInverter.scale_free``) in domain: the curve's intensity
        scale relative to the training curves, dimensionless (``CurveFeatures.scale``: the ratio
        of the curve's geometric mean over the model's q grid to that of its k nearest training
        curves; 1 on the training scale, e.g. study 1's cm^-1 at sasmodels scale 1 and contrast
        1e-6 A^-2, and 100 for the same curve times 100). An estimate to the accuracy of nearest
        neighbours, not a fit at the posterior median; the shape and parameters do not depend on
        it. None: the model is not scale-free and read the curve as given, in its absolute
        units, or the curve is out of domain.
    notes : list of str
        Caveats that do not make the curve out of domain (e.g. a file without an intensity unit).
    diagnostics : dict
        Further numbers: the model's q range (nm^-1), whether the model is "scale_free", the
        fraction of posterior draws that fell inside the support, the size limits of the shape
        read back.
    """

    in_domain: bool
    reasons: list = field(default_factory=list)
    domain_score: float = math.nan
    domain_threshold: float = math.nan
    shape: str | None = None
    shape_probabilities: dict | None = None
    shape_source: str | None = None
    posterior_source: str | None = None
    network_probabilities: dict | None = None
    parameters: dict | None = None
    samples: dict | None = None
    level: float = 0.9
    refine_below: float | None = REFINE_BELOW
    scale: float | None = None
    notes: list = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)

    #: the keys of the dict ``predict`` returned before it returned a Verdict
    _KEYS = ("shape", "shape_probabilities", "shape_source", "network_probabilities", "samples",
             "domain_score", "in_domain")

    def __getitem__(self, key: str):
        """``verdict["shape"]`` etc., as the dict ``predict`` used to return (read only)."""
        if key not in self._KEYS and key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self, samples: bool = False) -> dict:
        """The verdict as plain JSON-able values (the samples as lists only with ``samples``)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "samples"}
        out["reasons"], out["notes"] = list(self.reasons), list(self.notes)
        out["diagnostics"] = _jsonable(self.diagnostics)
        if samples:
            out["samples"] = None if self.samples is None else {k: np.asarray(v).tolist()
                                                                for k, v in self.samples.items()}
        return out

    def table(self) -> str:
        """A plain-text table: the verdict, the domain score, and either the reasons or the shape
        probabilities and each parameter's median and interval with its unit."""
        rows = []
        if self.in_domain:
            p = self.shape_probabilities[self.shape]
            rows.append(("verdict", f"IN DOMAIN: {self.shape} (p = {p:.3f}, {self.shape_source})"))
        else:
            rows.append(("verdict", "OUT OF DOMAIN: no shape or parameters are given"))
        rows.append(("domain score", f"{self.domain_score:.3g} (out of domain above {self.domain_threshold:.3g})"))
        if self.scale is not None:
            rows.append(("intensity scale", (f"{self.scale:.3g} x the training curves' (geometric mean over q, "
                                             "nearest training curves; the answer does not depend on it)")))
        rows += [("reason", r) for r in self.reasons]
        if self.in_domain:
            rows.append(("shapes", " | ".join(f"{s} {v:.3f}" for s, v in self.shape_probabilities.items())))
            if self.shape_source == "second opinion":
                rows.append(("network said", " | ".join(f"{s} {v:.3f}" for s, v in
                                                        self.network_probabilities.items())))
            if self.posterior_source is not None:
                rows.append(("parameters from", {"network": "the network's posterior (conditional INN)",
                                                 "likelihood": "the likelihood's posterior (exact noise model, "
                                                               "sampled around its best fits)"}[self.posterior_source]))
        rows += [("note", n) for n in self.notes]
        width = max(len(r[0]) for r in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        if self.in_domain and self.parameters:
            head = ("parameter", "median", f"{self.level:.0%} interval", "unit")
            body = [(n, f"{d['median']:.4g}", f"{d['lo']:.4g} to {d['hi']:.4g}", d["unit"] or "-")
                    for n, d in self.parameters.items()]
            w = [max(len(r[i]) for r in [head] + body) for i in range(4)]
            lines.append("")
            lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in [head] + body]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value



class CurveFeatures:
    """Standardised log-intensity features with training-set statistics, and a domain check.

    The domain score of a curve is the distance (in standardised features) to its k-th nearest
    neighbour among ``n_reference`` training curves. Its threshold is the ``quantile`` of the
    same score for other training curves, so a curve scoring above it is further from the
    training set than all but a fraction 1 - quantile of the training curves themselves. (A
    Mahalanobis distance in principal components failed here: the training curves are far
    from Gaussian, and a sphere of 8 nm scored inside it.)

    Parameters
    ----------
    log_i : array_like, shape (n, n_q)
        Natural log of the training curves' intensities on the model's q grid.
    n_reference, k, quantile, seed : int, int, float, int
        Reference curves kept for the domain score, the neighbour it is measured to, the
        quantile of training scores that sets the threshold, and the seed that picks them.
    scale_free : bool
        False (default): the features are log I as given, so the absolute scale of I is part of
        what the network reads. True: each curve's mean of log I over the q grid (the log of its
        geometric mean) is removed first (``centre``), so I and c * I give identical features
        for any c > 0, and so identical network outputs and domain scores. The removed means of
        the reference curves are kept (``reference_offset``) to estimate a curve's scale
        (``scale``).
    masked : bool
        True: curves may be measured on part of the q grid only, NaN where not measured (a partial
        q range). The features are then the standardised log I with 0 where not measured,
        followed by the mask (1 measured, 0 not): twice ``n_q`` numbers; a scale-free curve is
        centred on its measured points. The domain score of a partial curve is measured on its
        measured points only, against the reference curves on the same points (each re-centred
        there when scale-free), times sqrt(n_q / n_measured); its threshold is the same quantile
        of the scores of ``n_held_out`` held-out training curves cut to the same points
        (``threshold_for``). The training curves given here must be complete.
    n_held_out : int
        Held-out training curves kept for the thresholds of partial curves (``masked`` only).
    """

    def __init__(self, log_i: np.ndarray, *, n_reference: int = 4000, k: int = 5, quantile: float = 0.999,
                 seed: int = 0, scale_free: bool = False, masked: bool = False, n_held_out: int = 1000):
        log_i = np.asarray(log_i, dtype=np.float64)
        if not np.isfinite(log_i).all():
            raise ValueError("the training curves of CurveFeatures must be complete (finite log I everywhere); "
                             "partial curves are for training the networks (ShapeInverter.fit)")
        self.scale_free = bool(scale_free)
        self.masked = bool(masked)
        self.held_out = None
        self._thresholds = {}
        centred = self.centre(log_i)
        self.mean = centred.mean(axis=0)
        self.std = centred.std(axis=0) + 1e-6
        self.k, self.quantile = int(k), float(quantile)
        order = np.random.default_rng(seed).permutation(len(log_i))
        n_ref = min(n_reference, len(log_i) // 2)
        self.reference = self._standard(log_i[order[:n_ref]])
        self.reference_offset = self.offset(log_i[order[:n_ref]]) if self.scale_free else None
        held_out = order[n_ref:n_ref + 2000]
        self.threshold = float(np.quantile(self.domain_score(log_i[held_out]), quantile))
        if self.masked:
            self.held_out = self._standard(log_i[held_out[:int(n_held_out)]])

    @property
    def n_features(self) -> int:
        """Numbers per curve the networks read: n_q, or 2 n_q when ``masked`` (values and mask)."""
        return len(self.mean) * (2 if self.masked else 1)

    @staticmethod
    def offset(log_i) -> np.ndarray:
        """(n,) mean of log I over the measured q points of each curve (all of them for a complete
        curve; NaN marks a point not measured): the log of its geometric mean there."""
        return np.nanmean(np.atleast_2d(np.asarray(log_i, dtype=np.float64)), axis=-1)

    def centre(self, log_i) -> np.ndarray:
        """log I with each curve's ``offset`` removed when ``scale_free``, else as given (float64;
        NaN stays NaN)."""
        log_i = np.asarray(log_i, dtype=np.float64)
        if not self.scale_free:
            return log_i
        return log_i - np.nanmean(log_i, axis=-1, keepdims=True)

    def _standard(self, log_i) -> np.ndarray:
        """(centred) log I standardised per q point, float32, NaN where not measured."""
        return ((self.centre(log_i) - self.mean) / self.std).astype(np.float32)

    def __call__(self, log_i) -> np.ndarray:
        z = self._standard(log_i)
        if not self.masked:
            if not np.isfinite(z).all():
                raise ValueError("this model reads complete curves only (no NaN, no partial q range); "
                                 "a model built with masked=True reads partial ones")
            return z
        mask = np.isfinite(z)
        return np.concatenate([np.where(mask, z, 0.0), mask], axis=-1).astype(np.float32)

    def _neighbour_d2(self, log_i) -> np.ndarray:
        z = self._standard(np.atleast_2d(log_i)).astype(np.float64)
        ref = self.reference_values().astype(np.float64)
        return (z**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * z @ ref.T

    def reference_values(self) -> np.ndarray:
        """The reference curves' standardised values (n_reference, n_q)."""
        return self.reference

    def _window_d2(self, z_curves: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Squared distances (n, n_reference) of standardised curves to the reference curves over the
        q points ``mask`` only, each side re-centred there when scale-free, times n_q / n_measured."""
        n_q = len(self.mean)
        sd = self.std[mask]
        raw = z_curves[:, mask].astype(np.float64) * sd
        ref = self.reference_values()[:, mask].astype(np.float64) * sd
        if self.scale_free:
            raw = raw - raw.mean(axis=1, keepdims=True)
            ref = ref - ref.mean(axis=1, keepdims=True)
        raw, ref = raw / sd, ref / sd
        d2 = (raw ** 2).sum(1)[:, None] + (ref ** 2).sum(1)[None, :] - 2 * raw @ ref.T
        return np.maximum(d2, 0) * n_q / mask.sum()

    def threshold_for(self, mask) -> float:
        """The domain threshold of curves measured on the q points ``mask`` (bool (n_q,)): the
        ``quantile`` of the held-out training curves' scores on the same points; ``threshold``
        for a complete curve."""
        mask = np.asarray(mask, dtype=bool)
        if mask.all():
            return self.threshold
        if self.held_out is None:
            raise ValueError("this model reads complete curves only (built without masked=True)")
        key = mask.tobytes()
        if key not in self._thresholds:
            d2 = self._window_d2(self.held_out, mask)
            scores = np.sqrt(np.partition(d2, self.k - 1, axis=1)[:, self.k - 1])
            self._thresholds[key] = float(np.quantile(scores, self.quantile))
        return self._thresholds[key]

    def domain_score(self, log_i) -> np.ndarray:
        log_i = np.atleast_2d(np.asarray(log_i, dtype=np.float64))
        full = np.isfinite(log_i).all(axis=1)
        out = np.empty(len(log_i))
        if full.any():
            d2 = self._neighbour_d2(log_i[full])
            out[full] = np.sqrt(np.maximum(np.partition(d2, self.k - 1, axis=1)[:, self.k - 1], 0))
        if not full.all():
            if not self.masked:
                raise ValueError("this model reads complete curves only (no NaN, no partial q range)")
            z = self._standard(log_i[~full])
            rows = np.flatnonzero(~full)
            for j, i in enumerate(rows):
                d2 = self._window_d2(z[j:j + 1], np.isfinite(z[j]))
                out[i] = np.sqrt(np.partition(d2, self.k - 1, axis=1)[0, self.k - 1])
        return out

    def domain_check(self, log_i) -> tuple[np.ndarray, np.ndarray]:
        """(scores, thresholds), each (n,): the domain score of every curve and the threshold it is
        compared with (``threshold_for`` its measured points)."""
        log_i = np.atleast_2d(np.asarray(log_i, dtype=np.float64))
        thresholds = np.array([self.threshold_for(np.isfinite(row)) for row in log_i])
        return self.domain_score(log_i), thresholds

    def scale(self, log_i) -> np.ndarray | None:
        """(n,) estimated intensity scale of each curve relative to the training curves, or None
        when the features are not ``scale_free``.

        The ratio of the curve's geometric mean over the q grid to the geometric mean (over the
        same grid, and then over the k curves) of its k nearest reference curves in the
        scale-free features: exp(offset(curve) - mean of their offsets). Dimensionless: 1 for a
        curve on the training curves' absolute scale (for study 1: cm^-1 at sasmodels scale 1
        and contrast 1e-6 A^-2), 100 for the same curve times 100. Its accuracy is that of
        nearest neighbours (the neighbours' sizes differ a little from the curve's); the ratio
        between two curves that differ only by a factor is that factor to rounding error.
        """
        if not self.scale_free:
            return None
        log_i = np.atleast_2d(np.asarray(log_i, dtype=np.float64))
        ref_off = np.asarray(self.reference_offset, dtype=np.float64)
        out = np.empty(len(log_i))
        for i, row in enumerate(log_i):
            mask = np.isfinite(row)
            if mask.all():
                d2 = self._neighbour_d2(row[None])
                near = np.argpartition(d2, self.k - 1, axis=1)[0, :self.k]
                out[i] = np.exp(row.mean() - ref_off[near].mean())
                continue
            # partial: the reference curves' mean log I over the same points, from their centred values
            d2 = self._window_d2(self._standard(row[None]), mask)
            near = np.argpartition(d2, self.k - 1, axis=1)[0, :self.k]
            ref_log = (self.reference_values()[near].astype(np.float64) * self.std + self.mean)[:, mask]
            out[i] = np.exp(row[mask].mean() - (ref_log.mean(axis=1) + ref_off[near]).mean())
        return out

    def state(self) -> dict:
        out = {"mean": self.mean.tolist(), "std": self.std.tolist(), "k": self.k, "threshold": self.threshold,
               "quantile": self.quantile, "n_reference": len(self.reference), "scale_free": self.scale_free}
        if self.masked:   # only then: cards of complete-curve models stay as they were
            out.update(masked=True, n_held_out=len(self.held_out))
        return out

    @classmethod
    def from_state(cls, state: dict, reference: np.ndarray) -> "CurveFeatures":
        """The features ``state()`` describes, with ``reference`` as the reference curves (the
        loader replaces it, and ``reference_offset`` of a scale-free model, from the weights)."""
        obj = cls.__new__(cls)
        obj.mean, obj.std = np.asarray(state["mean"]), np.asarray(state["std"])
        obj.k, obj.threshold, obj.reference = int(state["k"]), float(state["threshold"]), np.asarray(reference)
        obj.quantile = float(state.get("quantile", 0.999))  # cards before it was recorded: the default
        obj.scale_free = bool(state.get("scale_free", False))   # cards before scale-free models: not
        obj.reference_offset = np.zeros(len(obj.reference)) if obj.scale_free else None
        obj.masked = bool(state.get("masked", False))
        obj.held_out = np.zeros((int(state.get("n_held_out", 0)), len(obj.mean)), np.float32) if obj.masked else None
        obj._thresholds = {}
        return obj


class _Buffer(nn.Module):
    """Holds an array in a state_dict (saved with weights_only=True, no pickle)."""

    def __init__(self, array: np.ndarray):
        super().__init__()
        self.register_buffer("value", torch.as_tensor(np.asarray(array, dtype=np.float32)))


class ParamTransform:
    """Physical parameters <-> standardised network coordinates (log for radii and lengths).

    Discrete parameters (``dequantize``: name -> spacing) get uniform jitter of one spacing
    during training so that the flow models a density rather than spikes. ``range`` keeps the
    smallest and largest training value of each parameter ((d, 2), physical units), the limit a
    size is checked against when no prior is known.
    """

    def __init__(self, names, values: np.ndarray, dequantize: dict | None = None):
        self.names = tuple(names)
        self.dequantize = dict(dequantize or {})
        values = np.asarray(values, dtype=np.float64)
        u = self._forward_raw(values)
        self.mean, self.std = u.mean(axis=0), u.std(axis=0) + 1e-9
        self.range = np.stack([values.min(axis=0), values.max(axis=0)], axis=1)

    def _forward_raw(self, v):
        v = v.copy()
        for j, name in enumerate(self.names):
            if _log_scaled(name):
                if np.any(v[:, j] <= 0):
                    raise ValueError(f"{name} must be > 0 for the log transform")
                v[:, j] = np.log(v[:, j])
        return v

    def forward(self, values, rng: np.random.Generator | None = None) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).copy()
        if rng is not None:
            for j, name in enumerate(self.names):
                if name in self.dequantize:
                    v[:, j] += rng.uniform(-0.5, 0.5, len(v)) * self.dequantize[name]
        return ((self._forward_raw(v) - self.mean) / self.std).astype(np.float32)

    def inverse(self, u) -> np.ndarray:
        v = np.asarray(u, dtype=np.float64) * self.std + self.mean
        for j, name in enumerate(self.names):
            if _log_scaled(name):
                v[..., j] = np.exp(v[..., j])
        return v

    def state(self) -> dict:
        out = {"names": list(self.names), "dequantize": self.dequantize,
               "mean": self.mean.tolist(), "std": self.std.tolist()}
        if getattr(self, "range", None) is not None:
            out["range"] = np.asarray(self.range).tolist()
        return out

    @classmethod
    def from_state(cls, state: dict) -> "ParamTransform":
        """The transform ``state()`` describes (``range`` is None for cards saved without it)."""
        t = cls.__new__(cls)
        t.names, t.dequantize = tuple(state["names"]), dict(state["dequantize"])
        t.mean, t.std = np.asarray(state["mean"]), np.asarray(state["std"])
        t.range = None if state.get("range") is None else np.asarray(state["range"], dtype=np.float64)
        return t


class ShapeInverter:
    """Shape classifier + one conditional INN per shape, on standardised log I over a fixed q grid.

    ``predict(q_nm, intensity)`` returns a ``Verdict``: out of domain (the domain score flags a
    curve unlike the training set, or a size reads back beyond the prior) it holds the reasons
    only; in domain, the shape probabilities and every parameter's posterior median and interval.

    Parameters
    ----------
    q_nm : array_like, shape (n_q,)
        The q grid (nm^-1) of the training curves.
    shapes, shape_params : sequence of str, dict
        The shapes and {shape: parameter names} (lengths ``*_nm`` in nm).
    features : CurveFeatures
    transforms : dict
        {shape: ParamTransform}.
    hidden, n_blocks, seed : int
        Network width, coupling blocks per INN, initialisation seed.
    second_opinion : callable, optional
        ``(q_nm, log_i, shapes, effort) -> (n, n_shapes) posterior``, asked where the network is
        unsure (``classify``) and only for curves in domain.
    posterior_refiner : callable, optional
        ``(shape, q_nm, log_i, *, n_draws, seed) -> {"samples": (n, n_draws, d), "ess": (n,)}``:
        the parameters' posterior under the exact likelihood (for study 1
        ``studies.bayes_shapes.likelihood_posterior``), asked like the second opinion (with the
        model's priors, ``free_scale``, ``free_background``) by ``posterior_samples(...,
        posterior="likelihood")``, ``predict`` and ``evaluate``, and only for curves in domain.
    priors : dict, optional
        {shape: {parameter: prior}} as the study defines them (for study 1
        ``studies.inn_scatterers.PRIORS``): bounds or ``values``, ``distribution``, ``mean``,
        ``sd``, ``unit``. They give each parameter's support (``support``) and the size limits of
        the domain check (``size_limits``), and are written into the model card; entries for
        shapes or parameters the model does not have are left out. Without them,
        the supports follow the names (``physical_support``) and the size limits are the
        training ranges.
    conventions : dict, optional
        What the training curves assume and a measured curve must match (noise model,
        intensity unit and scale, contrast, background ...), written into the model card.
    background : bool
        True for a model trained on curves with a random flat background (a nuisance it reads
        through): its second opinion is then asked to fit one too (``free_background=True``,
        where the callable takes it). Recorded in the card's ``arch``.
    q_required_nm : (float, float), optional
        For a ``masked`` model (partial q ranges): the q range (nm^-1) every curve must cover, the
        part of the grid that all training windows held (``random_crops``); default the whole grid.

    Notes
    -----
    A model built with ``from_training_data(..., scale_free=True)`` (``scale_free``) reads every
    curve with the mean of its log I over the q grid removed (``CurveFeatures``): the absolute
    scale of I (volume fraction, contrast, unit, calibration) is a nuisance parameter it never
    sees, so a curve and the same curve times any positive factor get the same shape
    probabilities, posterior and domain score, and ``predict`` reports the factor as
    ``Verdict.scale``. Its second opinion is asked to fit a free scale too (it is called with
    ``free_scale=True``). A flat background is read through only by a model trained on curves
    with random backgrounds (``background=True``), whose second opinion then fits one too; other
    models need it subtracted first.
    """

    def __init__(self, q_nm, shapes, shape_params: dict, features: CurveFeatures,
                 transforms: dict, *, hidden: int = 128, n_blocks: int = 6, seed: int = 0,
                 second_opinion=None, priors: dict | None = None, conventions: dict | None = None,
                 background: bool = False, q_required_nm=None, posterior_refiner=None):
        self.second_opinion = second_opinion
        self.posterior_refiner = posterior_refiner
        self.background = bool(background)
        self.q_required_nm = None if q_required_nm is None else [float(v) for v in q_required_nm]
        self.q_nm = np.asarray(q_nm, dtype=np.float64)
        self.shapes = tuple(shapes)
        self.shape_params = {s: tuple(shape_params[s]) for s in self.shapes}
        self.features, self.transforms = features, transforms
        self.priors = self._check_priors(priors)
        self.conventions = None if conventions is None else dict(conventions)
        self.arch = {"hidden": hidden, "n_blocks": n_blocks, "seed": seed}
        if self.background:   # only then: cards of models without it stay as they were
            self.arch["background"] = True
        if self.q_required_nm is not None:
            self.arch["q_required_nm"] = self.q_required_nm
        torch.manual_seed(seed)
        n_in = int(getattr(features, "n_features", len(self.q_nm)))     # 2 n_q for a masked model
        self.net = nn.ModuleDict({"classifier": mlp(n_in, len(self.shapes), hidden=2 * hidden, depth=2, dropout=0.1),
                                  "domain_reference": _Buffer(features.reference)})
        if self.scale_free:   # only then: the weights of models without it load as before
            self.net["domain_reference_offset"] = _Buffer(features.reference_offset)
        if self.masked:
            self.net["domain_held_out"] = _Buffer(features.held_out)
        for k, s in enumerate(self.shapes):
            self.net[f"inn{k}"] = ConditionalINN(len(self.shape_params[s]), n_in, n_blocks=n_blocks,
                                                 hidden=hidden, seed=seed + k)

    @property
    def scale_free(self) -> bool:
        """True when the model reads curves without their absolute scale (``CurveFeatures``)."""
        return bool(getattr(self.features, "scale_free", False))

    @property
    def masked(self) -> bool:
        """True when the model reads curves measured on part of its q grid (``CurveFeatures``
        ``masked``; NaN in log I where not measured)."""
        return bool(getattr(self.features, "masked", False))

    def _check_priors(self, priors) -> dict | None:
        if priors is None:
            return None
        if not isinstance(priors, dict):
            raise ValueError(f"priors must be a dict {{shape: {{parameter: prior}}}}; got {type(priors).__name__}")
        out = {}
        for s in self.shapes:   # priors of other shapes or parameters are not this model's: left out
            given = priors.get(s) or {}
            out[s] = {p: dict(given[p]) for p in self.shape_params[s] if p in given}
        return out

    # -- supports and limits ---------------------------------------------------------------------
    def _prior(self, shape: str, name: str) -> dict | None:
        return (self.priors or {}).get(shape, {}).get(name)

    def support(self, shape: str) -> dict:
        """{parameter: (lo, hi)}: where ``shape``'s posterior samples are kept (physical units).

        The prior's support where the model has priors (``prior_support``: e.g. radius >= 0.2
        nm, widths in [0, 0.3], the volume fraction within half a jitter step of its values),
        else the physical support by name (``physical_support``: lengths > 0, widths >= 0, volume
        fraction in [0, 1)). Outside its prior's support the posterior is zero, so samples there
        are the flow's leakage, not information.
        """
        t = self.transforms[shape]
        return {p: prior_support(p, self._prior(shape, p), float(t.dequantize.get(p, 0.0)))
                for p in self.shape_params[shape]}

    def size_limits(self, shape: str) -> dict:
        """{size parameter (``*_nm``): largest value the model answers for, in nm, or None}.

        The prior's ``PRIOR_QUANTILE`` (0.999) quantile where the model has priors, else the
        largest training value (``ParamTransform.range``), else None (no limit).
        """
        t = self.transforms[shape]
        out = {}
        for j, p in enumerate(self.shape_params[shape]):
            if not _log_scaled(p):
                continue
            limit = prior_quantile(self._prior(shape, p), PRIOR_QUANTILE)
            if limit is None and getattr(t, "range", None) is not None:
                limit = float(t.range[j][1])
            out[p] = limit
        return out

    # -- construction and training -------------------------------------------------------------
    @classmethod
    def from_training_data(cls, q_nm, log_i, shape_labels, params, shapes, shape_params: dict,
                           param_names, dequantize: dict | None = None, *, scale_free: bool = False,
                           masked: bool = False, **kwargs) -> "ShapeInverter":
        """Fit the feature and parameter standardisation on training data and build the networks.

        Parameters
        ----------
        q_nm : array_like, shape (n_q,)
            The q grid of the curves (nm^-1).
        log_i : array_like, shape (n, n_q)
            Natural log of the training intensities on that grid.
        shape_labels, params : array_like, shapes (n,) and (n, len(param_names))
            Index into ``shapes`` and the parameters (NaN where a shape has none; lengths in nm).
        shapes, shape_params, param_names
            See the class.
        dequantize : dict, optional
            {parameter: spacing} of discrete parameters (``ParamTransform``).
        scale_free : bool
            True: the networks and the domain check read log I minus its mean over the q grid,
            so the answer does not depend on the curve's absolute scale (see the class Notes).
            The training curves can then be on any one scale; nothing is randomised. False
            (default): log I as given, on the training curves' absolute scale.
        masked : bool
            True: the networks read curves measured on part of the grid (NaN elsewhere) with a
            mask (``CurveFeatures``); train them on such curves (``random_crops``) and pass
            ``q_required_nm``. ``log_i`` here must be the complete curves.
        **kwargs
            Passed to the class (hidden, n_blocks, seed, second_opinion, priors, conventions).
        """
        features = CurveFeatures(log_i, scale_free=scale_free, masked=masked)
        transforms = {}
        for k, s in enumerate(shapes):
            cols = [list(param_names).index(p) for p in shape_params[s]]
            transforms[s] = ParamTransform(shape_params[s], params[shape_labels == k][:, cols],
                                           {p: d for p, d in (dequantize or {}).items() if p in shape_params[s]})
        return cls(q_nm, shapes, shape_params, features, transforms, **kwargs)

    def fit(self, log_i, shape_labels, params, param_names, train_idx, val_idx, config, *,
            device=None, seed: int = 0, classifier_extra: tuple | None = None) -> dict:
        """Train the classifier and each shape's INN with sashelpers.training.fit; return histories.

        classifier_extra: optional (log_i, shape_labels) of further training curves for the
        classifier only (simulated independently of the test curves); the INNs and the
        standardisation use the training curves alone.
        """
        from . import training

        x = self.features(log_i)
        labels = np.asarray(shape_labels, dtype=np.int64)
        x_cls, y_cls = x[train_idx], labels[train_idx]
        if classifier_extra is not None:
            extra_x, extra_y = np.asarray(classifier_extra[0]), np.asarray(classifier_extra[1], dtype=np.int64)
            n_q = np.shape(log_i)[1]
            if extra_x.ndim != 2 or extra_x.shape[1] != n_q or extra_y.shape != (len(extra_x),):
                raise ValueError(f"classifier_extra must be (log_i (m, {n_q}), labels (m,)); got "
                                 f"{extra_x.shape} and {extra_y.shape}")
            if extra_y.min() < 0 or extra_y.max() >= len(self.shapes):
                raise ValueError(f"classifier_extra labels must lie in [0, {len(self.shapes)})")
            extra_x = self.features(extra_x)
            x_cls, y_cls = np.concatenate([x_cls, extra_x]), np.concatenate([y_cls, extra_y])
        hist = {"classifier": training.fit(
            self.net["classifier"], _cross_entropy, (x_cls, y_cls),
            (x[val_idx], labels[val_idx]), config, device=device)}
        rng = np.random.default_rng(seed)
        for k, s in enumerate(self.shapes):
            cols = [list(param_names).index(p) for p in self.shape_params[s]]
            tr, va = train_idx[labels[train_idx] == k], val_idx[labels[val_idx] == k]
            t = self.transforms[s]
            hist[s] = training.fit(self.net[f"inn{k}"], nll_loss,
                                   (t.forward(params[tr][:, cols], rng), x[tr]),
                                   (t.forward(params[va][:, cols], rng), x[va]), config, device=device)
        self.net.to("cpu")
        return hist

    # -- prediction ------------------------------------------------------------------------------
    @torch.no_grad()
    def shape_probabilities(self, log_i) -> np.ndarray:
        self.net.eval()
        logits = self.net["classifier"](torch.from_numpy(self.features(np.atleast_2d(log_i))))
        return torch.softmax(logits, dim=1).numpy()

    def in_domain(self, log_i) -> np.ndarray:
        """(n,) bool: curves whose domain score is at most the threshold (``CurveFeatures``; for a
        partial curve the threshold of its measured points, ``CurveFeatures.threshold_for``)."""
        score, threshold = self.features.domain_check(log_i)
        return score <= threshold

    def classify(self, log_i, *, refine_below: float | None = REFINE_BELOW, effort: str = "fast") -> dict:
        """Shape probabilities from the network; where its top probability is below
        ``refine_below`` and the curve is in domain, replaced by the posterior of the model's
        ``second_opinion`` (for study 1, the likelihood classifier
        ``studies.bayes_shapes.second_opinion``). Without a second opinion the network decides
        every curve.

        Parameters
        ----------
        log_i : array_like, shape (n_q,) or (n, n_q)
            Natural log of I on the model's q grid.
        refine_below : float or None
            Default ``REFINE_BELOW`` (0.9). None: network only; a value above 1 refines every
            curve in domain.
        effort : str
            Passed to the second opinion.

        Returns
        -------
        dict
            {"probabilities": (n, n_shapes), "network": (n, n_shapes) the network's own,
            "refined": (n,) bool, the curves decided by the second opinion, "in_domain": (n,)
            bool}. Curves out of domain are never refined: study 1's likelihood assumes its noise
            model (I * N(1, 0.1) per point, no background) and priors, which such curves break;
            for in-domain curves that do not follow them either, pass None. A scale-free model
            asks its second opinion with ``free_scale=True``.
        """
        probs = self.shape_probabilities(log_i)
        refine_below = _check_refine_below(refine_below)
        ok = self.in_domain(log_i)
        refined = np.zeros(len(probs), dtype=bool)
        if refine_below is not None and self.second_opinion is not None:
            refined = (probs.max(axis=1) < refine_below) & ok
        out = probs.copy()
        if refined.any():
            out[refined] = self._ask_second_opinion(np.atleast_2d(log_i)[refined], effort)
        return {"probabilities": out, "network": probs, "refined": refined, "in_domain": ok}

    def _ask_second_opinion(self, log_i: np.ndarray, effort: str) -> np.ndarray:
        """The second opinion's posterior (n, n_shapes) for curves log_i (n, n_q) on the model's
        grid; for a scale-free model it is asked with ``free_scale=True`` (it must fit the scale),
        and with ``priors=`` the model's priors where it takes them (so that a model trained on
        other priors than the second opinion's default is judged under its own). Partial curves
        (NaN where not measured) are passed in groups measured on the same points."""
        kwargs = self._likelihood_kwargs(self.second_opinion, "second opinion")
        return self._per_mask(log_i, lambda y: (np.asarray(self.second_opinion(self.q_nm, y, self.shapes, effort,
                                                                               **kwargs), dtype=np.float64),))[0]

    def _likelihood_kwargs(self, fn, what: str) -> dict:
        """How to ask a likelihood callable (second opinion, posterior refiner) about this model's
        curves: with ``priors=`` the model's priors where it takes them (so that a model trained on
        other priors than its default is judged under its own), ``free_background=True`` for a
        model trained with backgrounds, and ``free_scale=True`` (required) for a scale-free model."""
        import inspect

        kwargs = {}
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):     # no signature to read: just ask
            params = []
        if self.priors and any(p.name == "priors" for p in params):
            kwargs["priors"] = self.priors
        if self.background and any(p.name == "free_background" or p.kind is p.VAR_KEYWORD for p in params):
            kwargs["free_background"] = True
        if self.scale_free:
            if params and not any(p.name == "free_scale" or p.kind is p.VAR_KEYWORD for p in params):
                raise ValueError(f"this model is scale-free, so its {what} must fit a free intensity "
                                 "scale and accept free_scale=True (studies.bayes_shapes' functions do); "
                                 f"{getattr(fn, '__name__', fn)!r} does not")
            kwargs["free_scale"] = True
        return kwargs

    @staticmethod
    def _per_mask(log_i, ask) -> tuple:
        """``ask(y)`` (a tuple of arrays, one row per curve) for the curves log_i (n, n_q), rows in
        their order; partial curves (NaN where not measured) are asked in groups measured on the same
        points."""
        log_i = np.atleast_2d(np.asarray(log_i, dtype=np.float64))
        masks = np.isfinite(log_i)
        if masks.all():
            return ask(log_i)
        keys = [m.tobytes() for m in masks]
        out = None
        for key in dict.fromkeys(keys):
            rows = np.array([i for i, k in enumerate(keys) if k == key])
            parts = ask(log_i[rows])
            if out is None:
                out = tuple(np.empty((len(log_i),) + np.shape(a)[1:], dtype=np.asarray(a).dtype) for a in parts)
            for o, a in zip(out, parts):
                o[rows] = a
        return out

    def likelihood_samples(self, log_i, shape: str, n_samples: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Posterior samples (n, n_samples, d) of ``shape``'s parameters under the exact likelihood
        (the ``posterior_refiner``, asked with ``_likelihood_kwargs``) and the effective number of
        draws behind each curve's samples (n,). ValueError without a refiner."""
        if self.posterior_refiner is None:
            raise ValueError("this model has no posterior_refiner (for study 1: load it with "
                             "posterior_refiner=studies.bayes_shapes.likelihood_posterior)")
        kwargs = self._likelihood_kwargs(self.posterior_refiner, "posterior refiner")

        def ask(y):
            res = self.posterior_refiner(shape, self.q_nm, y, n_draws=int(n_samples), seed=seed, **kwargs)
            return np.asarray(res["samples"], dtype=np.float64), np.asarray(res["ess"], dtype=np.float64)

        return self._per_mask(log_i, ask)

    def fitted_scale(self, log_i) -> np.ndarray | None:
        """(n,) estimated intensity scale of curves log_i (n, n_q) relative to the training curves
        (``CurveFeatures.scale``: the geometric-mean ratio to their nearest training curves,
        dimensionless), or None for a model that is not ``scale_free``."""
        return self.features.scale(np.atleast_2d(log_i))

    @torch.no_grad()
    def _draw(self, log_i, shape: str, n_samples: int, seed: int, in_support: bool):
        """Posterior samples (n, n_samples, d) kept in the support, the fraction of draws inside
        it (n,), and the first draws as the flow gave them (n, n_samples, d)."""
        k = self.shapes.index(shape)
        y = torch.from_numpy(self.features(np.atleast_2d(log_i)))
        gen = torch.Generator().manual_seed(seed)
        net, t = self.net[f"inn{k}"], self.transforms[shape]

        def draw(rows):
            return t.inverse(net.sample(y[rows], n_samples, gen).numpy())

        first = draw(np.arange(len(y)))
        if not in_support:
            return first, np.ones(len(y)), first
        bounds = np.array(list(self.support(shape).values()), dtype=np.float64)   # (d, 2)

        def inside(x):
            return np.all((x >= bounds[:, 0]) & (x <= bounds[:, 1]), axis=-1) & np.all(np.isfinite(x), axis=-1)

        out = np.empty_like(first)
        filled, accepted, drawn = np.zeros(len(y), dtype=int), np.zeros(len(y)), np.zeros(len(y))
        pending, batch = np.arange(len(y)), first
        for round_ in range(SUPPORT_ROUNDS + 1):
            if round_:
                batch = draw(pending)
            drawn[pending] += n_samples
            for j, i in enumerate(pending):
                good = batch[j][inside(batch[j])]
                accepted[i] += len(good)
                take = min(len(good), n_samples - filled[i])
                out[i, filled[i]:filled[i] + take] = good[:take]
                filled[i] += take
            short = filled[pending] < n_samples
            if not short.any():
                break
            pending, batch = pending[short], batch[short]
        else:  # almost nothing inside: fill up with draws clipped onto the support
            for j, i in enumerate(pending):
                out[i, filled[i]:] = np.clip(batch[j][:n_samples - filled[i]], bounds[:, 0], bounds[:, 1])
        return out, accepted / drawn, first

    def posterior_samples(self, log_i, shape: str, n_samples: int = 500, seed: int = 0, *,
                          in_support: bool = True, posterior: str = "network") -> np.ndarray:
        """Samples (n_curves, n_samples, n_params) of ``shape``'s parameters in physical units.

        ``posterior="network"`` (default): the flow's draws. With ``in_support`` (default), draws
        outside a parameter's ``support`` (e.g. a negative polydispersity) are replaced by further
        draws, i.e. the samples are the flow's posterior restricted to the support; after
        ``SUPPORT_ROUNDS`` rounds any still missing are draws clipped onto it.
        ``posterior="likelihood"``: the ``posterior_refiner``'s draws (``likelihood_samples``),
        except for curves where they hold fewer than ``MIN_ESS`` effective draws, which keep the
        network's.
        """
        _check_posterior(posterior)
        net = self._draw(log_i, shape, n_samples, seed, in_support)[0]
        if posterior == "network":
            return net
        lik, ess = self.likelihood_samples(log_i, shape, n_samples, seed)
        trusted = (ess >= MIN_ESS) & np.all(np.isfinite(lik), axis=(1, 2))
        return np.where(trusted[:, None, None], lik, net)

    def prepare_curve(self, q_nm, intensity) -> np.ndarray:
        """Validate a measured curve and return log I on the model's q grid (interpolated in log-log).

        A curve that does not cover the grid is a ValueError naming the range needed, except for a
        ``masked`` model when it covers ``q_required_nm``: log I is then NaN on the grid points
        outside the curve's q range (not measured)."""
        from ..measured.io import validate_curve

        q, i = np.asarray(q_nm, dtype=np.float64), np.asarray(intensity, dtype=np.float64)
        validate_curve(q, i, name="curve", positive_intensity=True)
        lo, hi = self.q_nm[0], self.q_nm[-1]
        if q[0] > lo * (1 + 1e-9) or q[-1] < hi * (1 - 1e-9):
            need = self.q_required_nm if self.masked and self.q_required_nm else [lo, hi]
            if q[0] > need[0] * (1 + 1e-9) or q[-1] < need[1] * (1 - 1e-9):
                partial = (f"; it reads a partial curve that covers at least [{need[0]:.4g}, {need[1]:.4g}] nm^-1 "
                           f"(within its grid [{lo:.4g}, {hi:.4g}] nm^-1; the rest of the grid is masked)"
                           if self.masked else " (this model reads complete curves only)")
                raise ValueError(f"the curve covers q in [{q[0]:.4g}, {q[-1]:.4g}] nm^-1 but the model needs "
                                 f"[{need[0]:.4g}, {need[1]:.4g}] nm^-1{partial}")
            inside = (self.q_nm >= q[0] * (1 - 1e-9)) & (self.q_nm <= q[-1] * (1 + 1e-9))
            out = np.full(len(self.q_nm), np.nan)
            out[inside] = np.interp(np.log(self.q_nm[inside]), np.log(q), np.log(i))
            return out
        if len(q) == len(self.q_nm) and np.allclose(q, self.q_nm, rtol=1e-9):
            return np.log(i)
        return np.interp(np.log(self.q_nm), np.log(q), np.log(i))

    def _beyond_prior(self, shape: str, raw: np.ndarray) -> list[str]:
        """Reasons, one per size of ``shape`` whose median read-back lies above its ``size_limits``
        or below its support. ``raw``: (n_samples, d) draws as the flow gave them (kept samples
        could not leave a bounded support, however far the network's reading lies outside it)."""
        reasons = []
        support = self.support(shape)
        for p, limit in self.size_limits(shape).items():
            median = float(np.median(raw[:, self.shape_params[shape].index(p)]))
            unit = _unit(p, self._prior(shape, p))
            if limit is not None and not median <= limit:
                source = (f"the {PRIOR_QUANTILE:.1%} quantile of its prior" if self._prior(shape, p)
                          else "the largest training value")
                reasons.append(f"{shape} {p} reads back as {median:.4g} {unit}, beyond {limit:.4g} {unit} "
                               f"({source}): the network was not trained on such sizes")
            elif not median >= support[p][0]:
                reasons.append(f"{shape} {p} reads back as {median:.4g} {unit}, below the prior's smallest "
                               f"{support[p][0]:.4g} {unit}: the network was not trained on such sizes")
        return reasons

    def _summary(self, shape: str, samples: np.ndarray, level: float) -> dict:
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        out = {}
        for j, p in enumerate(self.shape_params[shape]):
            col = samples[:, j]
            out[p] = {"median": float(np.median(col)), "lo": float(np.quantile(col, lo_q)),
                      "hi": float(np.quantile(col, hi_q)), "unit": _unit(p, self._prior(shape, p))}
        return out

    def predict(self, q_nm, intensity, n_samples: int = 500, seed: int = 0, *,
                refine_below: float | None = REFINE_BELOW, level: float = 0.9,
                effort: str = "fast", posterior: str = "auto") -> Verdict:
        """The verdict on one measured curve (q in nm^-1; I in the model's absolute unit, e.g. cm^-1,
        or on any scale for a ``scale_free`` model).

        In this order: (1) the curve is validated and put on the model's q grid
        (``prepare_curve``, ValueError if malformed or if it does not cover the grid); (2) the
        domain score: above its threshold, the verdict is out of domain and nothing else runs;
        (3) the network's top shape and its posterior: a size whose median (over the flow's
        draws, before they are kept in the support) lies above ``size_limits`` or below the
        support makes the verdict out of domain; (4) only then, where the network's top
        probability is below ``refine_below``, the second opinion decides the shape (and the size
        check is repeated if it picks another one); (5) posterior samples kept inside
        ``support`` give each parameter's median and central ``level`` interval: the network's,
        or with ``posterior`` "likelihood" the ``posterior_refiner``'s (where it holds at least
        ``MIN_ESS`` effective draws; else the network's, with a note). A scale-free
        model reads the curve without its absolute scale (the class Notes) and reports the scale
        as ``Verdict.scale``.

        Parameters
        ----------
        q_nm, intensity : array_like, shape (n,)
            The curve: q in nm^-1 (strictly increasing, covering the model's grid, or for a
            ``masked`` model at least ``q_required_nm``: the rest of the grid is masked), I > 0 (in the
            model's absolute unit; any positive multiple of it for a scale-free model).
        n_samples : int
            Posterior draws.
        seed : int
            Seed of the latent draws.
        refine_below : float or None
            Default ``REFINE_BELOW``; None: the network alone decides the shape.
        level : float
            Probability of the central interval, in (0, 1).
        effort : str
            Passed to the second opinion.
        posterior : str
            "network", "likelihood" (needs a ``posterior_refiner``; about a second per curve, a
            few for cylinders) or "auto" (default): the likelihood's where the model has a
            refiner, else the network's.

        Returns
        -------
        Verdict
            Out of domain: ``in_domain`` False, the ``reasons``, and no shape, probabilities,
            parameters or samples. In domain: shape, probabilities, ``parameters`` {name:
            {median, lo, hi, unit}} and ``samples``. ``verdict["samples"]`` etc. read like the
            dict this method returned before.

        Warns
        -----
        UserWarning
            When the curve is out of domain ("outside the training domain"), with the reasons.
        """
        if not 0 < level < 1:
            raise ValueError(f"level={level!r} must lie in (0, 1)")
        if posterior == "auto":
            posterior = "network" if self.posterior_refiner is None else "likelihood"
        _check_posterior(posterior)
        if posterior == "likelihood" and self.posterior_refiner is None:
            raise ValueError("posterior='likelihood' needs a posterior_refiner (for study 1: "
                             "studies.bayes_shapes.likelihood_posterior); this model has none")
        if int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples={n_samples!r} must be a positive integer")
        refine_below = _check_refine_below(refine_below)
        log_i = self.prepare_curve(q_nm, intensity)
        scores, thresholds = self.features.domain_check(log_i)
        score, threshold = float(scores[0]), float(thresholds[0])
        measured = np.isfinite(log_i)
        diagnostics = {"model_q_range_nm": [float(self.q_nm[0]), float(self.q_nm[-1])], "scale_free": self.scale_free,
                       "measured_fraction": float(measured.mean()),
                       "measured_q_range_nm": [float(self.q_nm[measured][0]), float(self.q_nm[measured][-1])]}
        common = {"domain_score": score, "domain_threshold": threshold, "level": level,
                  "refine_below": refine_below, "diagnostics": diagnostics}

        def out_of_domain(reasons):
            warnings.warn("this curve lies outside the training domain (" + "; ".join(reasons)
                          + "): no shape or parameters are returned", stacklevel=3)
            return Verdict(in_domain=False, reasons=reasons, **common)

        if not score <= threshold:
            return out_of_domain([f"domain score {score:.3g} above the threshold {threshold:.3g}: the curve is "
                                  f"further from the training curves than {self.features.quantile:.1%} of "
                                  "training curves are"])
        network = self.shape_probabilities(log_i)[0]
        shape = self.shapes[int(np.argmax(network))]
        samples, frac, raw = self._draw(log_i, shape, n_samples, seed, True)
        beyond = self._beyond_prior(shape, raw[0])
        if beyond:
            return out_of_domain(beyond)
        probs, source = network, "network"
        if refine_below is not None and self.second_opinion is not None and network.max() < refine_below:
            probs = self._ask_second_opinion(np.atleast_2d(log_i), effort)[0]
            source = "second opinion"
            final = self.shapes[int(np.argmax(probs))]
            if final != shape:
                shape = final
                samples, frac, raw = self._draw(log_i, shape, n_samples, seed, True)
                beyond = self._beyond_prior(shape, raw[0])
                if beyond:
                    return out_of_domain(beyond)
        diagnostics.update(support_fraction=float(frac[0]), size_limits_nm=self.size_limits(shape),
                           support={p: list(b) for p, b in self.support(shape).items()})
        samples, notes, posterior_source = samples[0], [], "network"
        if posterior == "likelihood":
            lik, ess = self.likelihood_samples(log_i, shape, n_samples, seed)
            diagnostics["likelihood_ess"] = float(ess[0])
            if ess[0] >= MIN_ESS and np.all(np.isfinite(lik)):
                samples, posterior_source = lik[0], "likelihood"
            else:
                notes.append(f"the likelihood's posterior holds only {ess[0]:.0f} effective draws (fewer than "
                             f"{MIN_ESS:g}): the parameters are the network's")
        scale = self.fitted_scale(log_i)
        return Verdict(in_domain=True, shape=shape, scale=None if scale is None else float(scale[0]), shape_probabilities=dict(zip(self.shapes, probs.tolist())),
                       shape_source=source, posterior_source=posterior_source, notes=notes,
                       network_probabilities=dict(zip(self.shapes, network.tolist())),
                       parameters=self._summary(shape, samples, level),
                       samples={p: samples[:, j] for j, p in enumerate(self.shape_params[shape])}, **common)

    # -- persistence -----------------------------------------------------------------------------
    def card(self) -> dict:
        """The model card: grid, shapes, architecture, standardisation, and what a curve must
        match: ``priors``, ``conventions`` (noise model, intensity scale, contrast ...), and the
        derived ``support`` and ``size_limits_nm`` of each shape (None: unbounded).

        ``scale_free`` (also in ``features``, where ``load`` reads it) says whether the model
        reads curves without their absolute scale; for such a model the conventions get an
        "intensity_scale" entry saying that any scale is read (the training curves' own scale
        stays in "intensity")."""
        conventions = self.conventions
        if self.scale_free and conventions is not None:
            conventions = {**conventions, "intensity_scale": (
                "any: the model reads log I minus its mean over the q grid, so a curve times any positive "
                "factor gives the same verdict; Verdict.scale estimates the factor relative to the training curves")}
        return {"kind": "ShapeInverter", "q_nm": self.q_nm.tolist(), "shapes": list(self.shapes),
                "shape_params": {s: list(p) for s, p in self.shape_params.items()}, "arch": self.arch,
                "features": self.features.state(), "transforms": {s: t.state() for s, t in self.transforms.items()},
                "priors": _jsonable(self.priors), "conventions": _jsonable(conventions),
                "support": {s: {p: [_finite_or_none(b) for b in bounds] for p, bounds in self.support(s).items()}
                            for s in self.shapes},
                "size_limits_nm": {s: self.size_limits(s) for s in self.shapes},
                "refine_below_default": REFINE_BELOW, "scale_free": self.scale_free}

    def save(self, path, extra: dict | None = None):
        from .training import save_model

        return save_model(path, self.net, {**self.card(), **(extra or {})})

    @classmethod
    def load(cls, path, *, second_opinion=None, priors: dict | None = None,
             conventions: dict | None = None, posterior_refiner=None) -> "ShapeInverter":
        """A model written by ``save``: ``<path>.pt`` (weights) and ``<path>.json`` (card).

        Parameters
        ----------
        path : str or Path
            With or without the ``.pt`` suffix.
        second_opinion, posterior_refiner : callable, optional
            See the class.
        priors, conventions : dict, optional
            Used where the card has none (cards written before they were recorded); the card's
            own take precedence.

        Raises
        ------
        ValueError
            Naming the missing file(s) when no model was saved at ``path``, or when the card is
            not a ShapeInverter's.
        """
        import json
        from pathlib import Path

        from .training import load_model

        base = Path(path).with_suffix("")
        missing = model_files_missing(base)
        if missing:
            raise ValueError(f"no saved ShapeInverter at {base.with_suffix('.pt')} ({missing}). A ShapeInverter is "
                             "written by ShapeInverter.save; study 1's is trained and saved by notebook 01 "
                             "(notebooks/01_inn_analytic_scatterers.ipynb) as data/models/study1_<profile>.pt")
        card = json.loads(base.with_suffix(".json").read_text())
        if card.get("kind") != "ShapeInverter":
            raise ValueError(f"{base.with_suffix('.json')} is the card of a {card.get('kind')!r}, not a ShapeInverter")
        shape = (card["features"]["n_reference"], len(card["q_nm"]))
        features = CurveFeatures.from_state(card["features"], np.zeros(shape, np.float32))
        transforms = {s: ParamTransform.from_state(st) for s, st in card["transforms"].items()}
        obj = cls(card["q_nm"], card["shapes"], card["shape_params"], features, transforms, **card["arch"],
                  second_opinion=second_opinion, posterior_refiner=posterior_refiner,
                  priors=card.get("priors") if card.get("priors") is not None else priors,
                  conventions=card.get("conventions") if card.get("conventions") is not None else conventions)
        load_model(base, obj.net)
        obj.features.reference = obj.net["domain_reference"].value.numpy()
        if obj.scale_free:
            obj.features.reference_offset = obj.net["domain_reference_offset"].value.numpy().astype(np.float64)
        if obj.masked:
            obj.features.held_out = obj.net["domain_held_out"].value.numpy()
        return obj


def model_files_missing(base) -> str:
    """'' when ``base``.pt and ``base``.json both exist, else which of them is missing."""
    pt, card = base.with_suffix(".pt"), base.with_suffix(".json")
    if pt.is_file() and card.is_file():
        return ""
    if pt.is_file():
        return f"its model card {card} is missing"
    return "no such file" + ("" if card.is_file() else f", nor its model card {card.name}")


def _check_posterior(posterior: str) -> str:
    if posterior not in POSTERIORS:
        raise ValueError(f"posterior={posterior!r}: allowed {', '.join(POSTERIORS)}")
    return posterior


def _check_refine_below(refine_below):
    if refine_below is not None and not refine_below > 0:
        raise ValueError(f"refine_below={refine_below!r} must be > 0 (or None)")
    return None if refine_below is None else float(refine_below)


def _cross_entropy(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


# --- evaluation ------------------------------------------------------------------------------------

def _samples_per_shape(model: ShapeInverter, log_i, labels, params, param_names, n_samples: int, seed: int,
                       posterior: str = "network"):
    """For each shape present in ``labels``: (shape, posterior samples of its curves, their true parameters)."""
    for k, s in enumerate(model.shapes):
        sel = labels == k
        if sel.any():
            cols = [list(param_names).index(p) for p in model.shape_params[s]]
            yield s, model.posterior_samples(log_i[sel], s, n_samples, seed, posterior=posterior), params[sel][:, cols]


def evaluate(model: ShapeInverter, log_i, shape_labels, params, param_names, *, n_samples: int = 300,
             level: float = 0.9, seed: int = 0, refine_below: float | None = REFINE_BELOW,
             posterior: str = "network", classified: dict | None = None, effort: str = "fast") -> dict:
    """Shape accuracy and confusion matrix; per shape and parameter the MAE of the posterior
    median and the coverage of the central ``level`` interval (posterior of the TRUE shape, so
    that regression quality is measured separately from classification; samples kept inside
    each parameter's support, ``ShapeInverter.posterior_samples``).

    The shapes come from ``ShapeInverter.classify`` with ``refine_below`` (default
    ``REFINE_BELOW``, as in ``predict``; None: the network alone): the second opinion decides
    where the network is unsure and the curve is in domain. "shape_accuracy_network" and
    "predicted_network" keep the network's own verdicts (and "confusion_network" its confusion
    matrix), "refined" marks the curves the second opinion decided and "in_domain" those that
    pass the domain check. ``posterior`` ("network" or "likelihood", ``posterior_samples``)
    picks the posterior the parameters are read from. ``classified``: ``model.classify``'s result
    for these curves when it was computed already (e.g. in parallel chunks); ``refine_below`` is
    then not used. ``effort`` is passed to the second opinion."""
    labels = np.asarray(shape_labels)
    cls = model.classify(log_i, refine_below=refine_below, effort=effort) if classified is None else classified
    if len(cls["probabilities"]) != len(labels):
        raise ValueError(f"classified holds {len(cls['probabilities'])} curves but shape_labels {len(labels)}")
    pred, pred_net = cls["probabilities"].argmax(axis=1), cls["network"].argmax(axis=1)
    k = len(model.shapes)
    confusion, confusion_net = np.zeros((k, k), dtype=int), np.zeros((k, k), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    np.add.at(confusion_net, (labels, pred_net), 1)
    out = {"shape_accuracy": float((pred == labels).mean()), "confusion": confusion.tolist(), "predicted": pred,
           "shape_accuracy_network": float((pred_net == labels).mean()), "predicted_network": pred_net,
           "confusion_network": confusion_net.tolist(),
           "refined": cls["refined"], "in_domain": cls["in_domain"], "posterior": posterior, "mae": {}, "coverage": {}, "median": {}, "samples_sd": {}}
    for s, samples, truth in _samples_per_shape(model, log_i, labels, params, param_names, n_samples, seed, posterior):
        med = np.median(samples, axis=1)
        cover = interval_coverage(samples, dequantized_truth(model.transforms[s], truth, seed), level)
        out["median"][s] = med
        out["samples_sd"][s] = samples.std(axis=1)
        out["mae"][s] = {p: float(np.abs(med[:, i] - truth[:, i]).mean()) for i, p in enumerate(model.shape_params[s])}
        out["coverage"][s] = {p: float(cover[i]) for i, p in enumerate(model.shape_params[s])}
    return out


def dequantized_truth(transform: ParamTransform, truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Truth with the training jitter added to discrete parameters.

    A flow trained on dequantized values models the jittered variable, so its intervals are
    calibrated for truth + U(-step/2, step/2); testing them against the bare grid values
    (the bin centres) would overstate the coverage.
    """
    truth = np.array(truth, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for j, name in enumerate(transform.names):
        if name in transform.dequantize:
            truth[:, j] += rng.uniform(-0.5, 0.5, len(truth)) * transform.dequantize[name]
    return truth


def baseline_xgboost(features_train, params_train, features_test, *, n_estimators: int = 400, seed: int = 0,
                     device: str | None = None) -> np.ndarray:
    """A plain point regressor for comparison: one XGBoost model per parameter column."""
    import xgboost as xgb

    from ..core.backend import xgboost_device

    preds = []
    for j in range(params_train.shape[1]):
        reg = xgb.XGBRegressor(n_estimators=n_estimators, learning_rate=0.1, max_depth=5, subsample=0.8,
                               colsample_bytree=0.5, tree_method="hist", max_bin=64, random_state=seed,
                               device=device or xgboost_device(), n_jobs=-1)
        reg.fit(features_train, params_train[:, j])
        preds.append(reg.predict(features_test))
    return np.stack(preds, axis=1)


def calibration_curves(model: ShapeInverter, log_i, shape_labels, params, param_names, levels, *,
                       n_samples: int = 300, seed: int = 0) -> dict:
    """{shape: {parameter: observed coverage at each nominal level}} on a labelled test set."""
    out = {}
    for s, samples, truth in _samples_per_shape(model, log_i, np.asarray(shape_labels), params, param_names,
                                                n_samples, seed):
        truth = dequantized_truth(model.transforms[s], truth, seed)
        cov = np.array([interval_coverage(samples, truth, lv) for lv in levels])
        out[s] = {p: cov[:, j] for j, p in enumerate(model.shape_params[s])}
    return out

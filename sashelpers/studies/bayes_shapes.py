"""How good can any classifier be on study 1? Likelihood fits of every shape to every curve.

Study 1's curves carry multiplicative noise, I_obs = I_true * eps with eps ~ N(1, sigma),
sigma = 0.1, independent per q point. In the network's input y = log I_obs, the residual
r = y - log I_true has the exact density p(r) = N(e^r; 1, sigma) e^r, so

    -2 log L = sum_q [ (e^r - 1)^2 / sigma^2 - 2 r ] + n_q log(2 pi sigma^2).

``deviance`` returns the sum without the constant (0 for a perfect fit of a noise-free curve;
about n_q + 1 for a noisy curve at its true parameters). It is the Gaussian-in-I likelihood,
written in log I; no log-normal approximation is made.

*Free scale* (``free_scale=True`` throughout, e.g. ``classify(..., free_scale=True)``): the model
curve is multiplied by an unknown intensity scale s (volume fraction, contrast, calibration),
i.e. log I_model + a with a = log s, and a is *profiled*: ``profile_offset`` gives the
maximum-likelihood a in closed form for any residual, and ``deviance(..., free_scale=True)`` is
the deviance there. The answer then does not depend on the curve's absolute scale: c * I gives
the same fits, deviances and shape posteriors for any c > 0 (the starts are searched on curves
with their mean log I removed). The marginal likelihoods integrate the profiled likelihood over
the shape parameters (the scale is maximised, not integrated): the expected information on a is
n_q (1 / sigma^2 + 2) whatever the shape and its parameters, so integrating a as well, under a
log-uniform scale prior, would multiply every shape's evidence by the same factor (in Laplace's
approximation), which cancels in p(shape | curve).

*Free background* (``free_background=True``): the model is S I_model(q) + B with a flat B >= 0 as
well as the scale S; both are fitted for every shape-parameter value (``background_fit``: least
squares on the relative residual, then Newton steps to the maximum likelihood; B = 0 with the
exact scale where that fits better). The fits maximise over B; the marginal likelihoods (and so
the shape posteriors and the parameters' posteriors) integrate it over the prior the scale-free
models are trained with (``_background_deviance_t``: absent for a quarter of the curves, else
log-uniform relative to the curve's high-q intensity), since a maximised background lets every
shape buy a better fit the prior makes unlikely. The answer is again the same for c * I as for I.
The start search then picks half its starts by the misfit of each library curve at its own best
scale and background (``_background_scores``, in closed form), the other half as without a
background.
A model trained with backgrounds (``learn.inn.ShapeInverter(background=True)``) asks for it.

* ``best_fit(shape, q, log_i)``: the maximum-likelihood parameters of one shape within its
  prior support (``SUPPORT``; the hard-sphere volume fraction runs over its six prior values),
  for one curve or a batch. ``scatterers.torch_intensity`` gives no gradients, so the fit is a
  search over a library of curves drawn over the support, followed by batched Levenberg-Marquardt
  from several distinct starts (Fisher scoring, finite-difference Jacobian, bounds by freezing
  the coordinates that push outwards).
* ``ambiguity_table(q, log_i, labels)``: the best deviance of each shape for each curve; a curve
  is *ambiguous* when a wrong shape fits at least as well as the true one, i.e. a
  maximum-likelihood classifier would pick the wrong shape. ``summarize`` turns it into error
  fractions with exact binomial intervals.
* ``shape_posteriors``: p(shape | curve) with the prior weighted in, by importance sampling of
  each shape's marginal likelihood around its fits; the Bayes-optimal accuracy is the mean of
  max_s p(s | curve) over curves drawn from the prior.

What this gives on study 1's test set is shown in notebook 01, section "How good can any
classifier be?".

* ``classify(q, log_i)``: the same Bayes classifier for curves without labels;
  ``second_opinion`` is its form for ``learn.inn.ShapeInverter`` (which asks it where the
  network is unsure, and only for curves inside the training domain).
* ``likelihood_posterior(shape, q, log_i)``: the parameters' posterior for a known shape, the
  importance draws of the marginal likelihood resampled to equal weights; a ``ShapeInverter``
  given it as ``posterior_refiner`` reports it instead of the network's for curves in domain.
* ``experiment(NAME)`` (``EXPERIMENTS``): the likelihood on notebook 01's whole test sets,
  archived for the notebook (``load_experiments``).

Commands: ``python -m sashelpers.studies.bayes_shapes predict FILE [--model PATH] [--figure
OUT.png]`` prints study 1's verdict on one's own curve file (network, domain check, and this
likelihood where the network is unsure: notebook 01's path, ``inn_scatterers.predict_main``);
without ``predict``, the check on study 1's test set (``main``). The predict command lives here
because this is the study-1 module allowed to import both the network side
(``inn_scatterers``) and the likelihood.
"""

from __future__ import annotations

import numpy as np

from ..physics import scatterers as sc
from . import inn_scatterers as s1
from ..core import checks

#: Relative noise of study 1's curves (``inn_scatterers.CURVE_SETTINGS['noise']``).
NOISE = s1.CURVE_SETTINGS["noise"]

#: Where the fits search: the prior's support (radius >= 0.2 nm, length >= 1 nm, widths in
#: [0, 0.3]) with the open upper ends cut at the prior mean + 8 sd (prior mass beyond < 1e-15).
SUPPORT = {"radius_nm": (0.2, 10.0), "radius_pd": (0.0, 0.3),
           "length_nm": (1.0, 50.0), "length_pd": (0.0, 0.3)}
_LOG_COORD = ("radius_nm", "length_nm")   # fitted in log; the widths linearly


def _priors(priors):
    """The prior set {shape: {parameter: prior}}: a name of ``inn_scatterers.PRIOR_SETS`` ("paper",
    "wide") or such a dict (e.g. a model card's ``priors``)."""
    return s1.prior_set(priors)


def _prior_key(priors) -> str:
    import json

    return priors if isinstance(priors, str) else json.dumps(priors, sort_keys=True, default=str)


def support(priors="paper") -> dict:
    """{parameter: (lo, hi)} where the fits of a prior set search (``SUPPORT`` for the paper's):
    each continuous parameter's prior bounds, an open upper end cut at the prior mean + 8 sd (prior
    mass beyond < 1e-15); the same over shapes (study 1's shapes share their size priors)."""
    out = {}
    for shape_priors in _priors(priors).values():
        for name, pr in shape_priors.items():
            if pr.get("values") is not None or name in out:
                continue
            lo = pr.get("lower")
            hi = pr.get("upper") if pr.get("upper") is not None else pr["mean"] + 8.0 * pr["sd"]
            out[name] = (float(lo), float(hi))
    return out

#: Library sizes (curves drawn over the support) for the start search, per shape and fixed value.
LIBRARY_SIZE = {"sphere": 3000, "sphere@hardsphere": 1500, "cylinder": 6000}

_LIBRARIES: dict = {}


# ---------------------------------------------------------------------------------------------
# input checks, coordinates, likelihood
# ---------------------------------------------------------------------------------------------

def _check_curves(q_nm, log_i, missing: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
    q = np.asarray(q_nm, dtype=np.float64)
    if q.ndim != 1 or q.size < 2 or not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ValueError("q_nm must be a 1D array of at least 2 finite, positive values (nm^-1)")
    y = np.asarray(log_i, dtype=np.float64)
    single = y.ndim == 1
    y = np.atleast_2d(y)
    if y.ndim != 2 or y.shape[1] != q.size:
        raise ValueError(f"log_i has shape {np.shape(log_i)}; its last axis must match q's "
                         f"{q.size} points (length mismatch)")
    if y.shape[0] == 0:
        raise ValueError("log_i holds no curves")
    bad = ~np.isfinite(y)
    if missing:              # NaN marks a point not measured (a partial curve); inf is still an error
        bad = np.isinf(y)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(f"log_i has {int(bad.sum())} non-finite values (NaN or inf) in "
                         f"{rows.size} curve(s), first at row {rows[0]}: pass log I of positive I")
    return q, y, single


def fit_names(shape: str) -> tuple[str, ...]:
    """The continuous parameters a fit of ``shape`` adjusts (the volume fraction is enumerated)."""
    return tuple(p for p in sc.SHAPE_PARAMS[sc._check_shape(shape)] if p != "volfraction")


def _fixed_options(shape: str) -> list[dict]:
    if shape == "sphere@hardsphere":
        return [{"volfraction": float(v)} for v in s1.VOLFRACTIONS]
    return [{}]


def _bounds(names, priors="paper") -> tuple[np.ndarray, np.ndarray]:
    sup = SUPPORT if priors == "paper" else support(priors)
    lo = np.array([np.log(sup[n][0]) if n in _LOG_COORD else sup[n][0] for n in names])
    hi = np.array([np.log(sup[n][1]) if n in _LOG_COORD else sup[n][1] for n in names])
    return lo, hi


def to_params(names, u) -> dict:
    """Fit coordinates (log for radius and length) -> {name: physical values}."""
    u = np.asarray(u, dtype=np.float64)
    return {n: (np.exp(u[..., j]) if n in _LOG_COORD else u[..., j]) for j, n in enumerate(names)}


def profile_offset(log_i_obs, log_i_model, noise: float = NOISE) -> np.ndarray:
    """The maximum-likelihood log scale a = log s of the model for observed log I (last axis: q).

    For I_obs = s I_model * N(1, noise), with residuals r = log I_obs - log I_model, the
    deviance sum_q [(e^(r - a) - 1)^2 / noise^2 - 2 (r - a)] is smallest where t = e^-a solves
    t^2 sum e^2r - t sum e^r - n_q noise^2 = 0; its positive root is unique, so

        a = -log[(B + sqrt(B^2 + 4 A n_q noise^2)) / (2 A)],   A = sum e^2r, B = sum e^r,

    computed with r shifted by its maximum (no overflow). Returns a (dimensionless, natural
    log; the scale is e^a), NaN where a residual is not finite. Adding c to log I_obs adds c to a.
    """
    r = np.asarray(log_i_obs, dtype=np.float64) - np.asarray(log_i_model, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        top = r.max(axis=-1, keepdims=True)
        e = np.exp(r - top)
        a_sum, b_sum = (e * e).sum(-1), e.sum(-1)
        t = (b_sum + np.sqrt(b_sum ** 2 + 4.0 * a_sum * r.shape[-1] * noise ** 2)) / (2.0 * a_sum)
        out = top[..., 0] - np.log(t)
    return np.where(np.isfinite(r).all(axis=-1), out, np.nan)


def _profile_offset_t(r, noise):
    import torch

    top = r.amax(-1, keepdim=True)
    e = torch.exp(r - top)
    a_sum, b_sum = (e * e).sum(-1), e.sum(-1)
    t = (b_sum + torch.sqrt(b_sum ** 2 + 4.0 * a_sum * r.shape[-1] * noise ** 2)) / (2.0 * a_sum)
    return top[..., 0] - torch.log(t)


def _residual_deviance_t(r, noise):
    """The deviance sum_q [(e^r - 1)^2 / noise^2 - 2 r] of residuals r = log I_obs - log I_model
    (last axis: q; module docstring), for torch tensors."""
    import torch

    return (torch.expm1(r) ** 2 / noise ** 2 - 2.0 * r).sum(-1)


def _newton_scale_background(a, c, s, b, ok, noise, n_iter: int):
    """``n_iter`` Newton steps on the deviance in (S', B') of the model ratio rho = S' a + B' c
    (``_scale_background_t``'s shifted units), from the least-squares start, for the rows ``ok``;
    B' stays >= 0 and a step is taken only where it lowers the deviance."""
    import torch

    def dev(s_, b_):
        rho = (s_[..., None] * a + b_[..., None] * c).clamp_min(1e-300)
        return ((1.0 / rho - 1.0) ** 2 / noise ** 2 + 2.0 * torch.log(rho)).sum(-1), rho

    D, rho = dev(s, b)
    for _ in range(int(n_iter)):
        inv = 1.0 / rho
        g1 = -2.0 * (inv - 1.0) * inv * inv / noise ** 2 + 2.0 * inv                 # dD / d rho per point
        h = (2.0 * inv ** 4 + 4.0 * (inv - 1.0) * inv ** 3) / noise ** 2 - 2.0 * inv * inv
        h = torch.maximum(h, inv ** 4 / noise ** 2)                                     # kept positive
        gs, gb = (g1 * a).sum(-1), (g1 * c).sum(-1)
        hss, hsb, hbb = (h * a * a).sum(-1), (h * a * c).sum(-1), (h * c * c).sum(-1)
        det = hss * hbb - hsb * hsb
        ds = -(hbb * gs - hsb * gb) / det
        db = -(hss * gb - hsb * gs) / det
        s_new = torch.where(ok & torch.isfinite(ds), s + ds, s).clamp_min(1e-300)
        b_new = torch.where(ok & torch.isfinite(db), b + db, b).clamp_min(0.0)
        D_new, rho_new = dev(s_new, b_new)
        better = ok & (D_new < D)
        s, b = torch.where(better, s_new, s), torch.where(better, b_new, b)
        D, rho = torch.where(better, D_new, D), torch.where(better[..., None], rho_new, rho)
    return s, b


def _scale_background_t(y, m, noise, n_iter: int = 3):
    """The intensity scale S and flat background B >= 0 of the model I_obs ~ S exp(m) + B (last
    axis: q) at the maximum likelihood for I_obs = I * N(1, noise): least squares on the relative
    residual, sum_q (1 - (S e^m + B) / I_obs)^2, then ``n_iter`` Newton steps on the deviance
    (the least-squares answer alone is off by a few deviance units, more for some shapes than
    others); where the best B would be negative, or where B = 0 with the exact maximum-likelihood
    scale (``profile_offset``) fits better, that. Returns (log of the model with its nuisances,
    log I_obs-shaped; log S; B in I_obs's unit), computed in shifted units so that nothing
    overflows."""
    import torch

    d = m - y
    top = d.amax(-1, keepdim=True)
    a = torch.exp(d - top)                            # (S e^m) / I_obs = S' a
    y_min = y.amin(-1, keepdim=True)
    c = torch.exp(y_min - y)                          # B / I_obs = B' c
    saa, scc, sac = (a * a).sum(-1), (c * c).sum(-1), (a * c).sum(-1)
    sa, sc_ = a.sum(-1), c.sum(-1)
    det = saa * scc - sac * sac
    s_w = (sa * scc - sc_ * sac) / det
    b_w = (saa * sc_ - sac * sa) / det
    ok = torch.isfinite(s_w) & torch.isfinite(b_w) & (b_w > 0) & (s_w > 0) & (det > 1e-12 * saa * scc)
    a0 = _profile_offset_t(-d, noise)                 # log S of the background-free fit
    s_w = torch.where(ok, s_w, torch.zeros_like(s_w))
    b_w = torch.where(ok, b_w, torch.zeros_like(b_w))
    s_w, b_w = _newton_scale_background(a, c, s_w, b_w, ok, noise, n_iter)
    mm_w = y + torch.log((s_w[..., None] * a + b_w[..., None] * c).clamp_min(1e-300))
    mm_0 = m + a0[..., None]
    # the fit with a background where it beats the background-free one
    ok = ok & (_residual_deviance_t(y - mm_w, noise) < _residual_deviance_t(y - mm_0, noise))
    log_s = torch.where(ok, torch.log(s_w.clamp_min(1e-300)) - top[..., 0], a0)
    mm = torch.where(ok[..., None], mm_w, mm_0)
    return mm, log_s, torch.where(ok, b_w * torch.exp(y_min[..., 0]), torch.zeros_like(b_w))


def background_fit(log_i_obs, log_i_model, noise: float = NOISE) -> dict:
    """The intensity scale and flat background of a model curve fitted to an observed one
    (``_scale_background_t``): {"scale": S (dimensionless), "background": B (the unit of I_obs),
    "log_i": log(S I_model + B)}, for I_obs ~ S I_model + B; B = 0 where a positive one does not help."""
    import torch

    y = torch.as_tensor(np.asarray(log_i_obs, dtype=np.float64))
    m = torch.as_tensor(np.asarray(log_i_model, dtype=np.float64))
    mm, log_s, b = _scale_background_t(y, m.expand_as(y), noise)
    return {"scale": np.exp(log_s.numpy()), "background": b.numpy(), "log_i": mm.numpy()}


def deviance(log_i_obs, log_i_model, noise: float = NOISE, free_scale: bool = False) -> np.ndarray:
    """-2 log L of observed log I given model log I (last axis: q), without the constant
    n_q log(2 pi noise^2); exact for I_obs = I_model * N(1, noise). With ``free_scale`` the model
    is first multiplied by its maximum-likelihood scale (``profile_offset``): the profiled
    deviance, the same for log I_obs + c for any c. inf where not finite."""
    r = np.asarray(log_i_obs, dtype=np.float64) - np.asarray(log_i_model, dtype=np.float64)
    if free_scale:
        with np.errstate(invalid="ignore"):
            r = r - profile_offset(log_i_obs, log_i_model, noise)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        out = (np.expm1(r) ** 2 / noise ** 2 - 2.0 * r).sum(axis=-1)
    return np.where(np.isfinite(out), out, np.inf)


def _deviance_t(y, m, noise, free_scale: bool = False, free_background: bool = False):
    import torch

    if free_background:
        r = y - _scale_background_t(y, m, noise)[0]
    else:
        r = y - m
    if free_scale and not free_background:
        r = r - _profile_offset_t(r, noise)[..., None]
    out = _residual_deviance_t(r, noise)
    return torch.where(torch.isfinite(out), out, torch.full_like(out, float("inf")))


def _background_deviance_t(y, m, noise, n_nodes: int = 48):
    """-2 log of the likelihood with the scale maximised and the flat background *integrated* over
    its prior (the one the scale-free models are trained with, ``inn_scatterers.BACKGROUND``: absent
    with probability p_a, else B = b T with b log-uniform in [low, high] and T the model's
    high-q intensity, the geometric mean of S I_model over the last n_tail points), on the
    scale of ``_deviance_t`` (last axis: q):

        D = D_fit - 2 log[ p_a exp(-(D_0 - D_fit) / 2)
                           + (1 - p_a) (sd_S|B / sd_S,0) int p(B) exp(-(B - B_fit)^2 / (2 var_B)) dB ]

    D_fit is the deviance at the fitted S and B (``_scale_background_t``), D_0 at B = 0 (scale
    fitted), var_B and sd_S|B from the expected information on (log S, B) at the fit (Laplace's
    approximation; per point (1 / noise^2 + 2) (d log mu)^2, mu = S I_model + B), sd_S,0 the
    scale's sd without a background, and the integral by Gauss-Legendre quadrature in log B over
    the prior's range within 8 sd of B_fit. Maximising B instead (``_deviance_t``) lets any shape
    buy a better fit with a background that the prior makes unlikely: tiny spheres came out as
    larger ones on a background, and clean curves lost the shape the background-free fit favoured.
    """
    import torch

    p = s1.BACKGROUND
    y, m = torch.broadcast_tensors(y, m)
    mm, log_s, B = _scale_background_t(y, m, noise)
    D_fit = _residual_deviance_t(y - mm, noise)
    r0 = y - m
    D_0 = _residual_deviance_t(r0 - _profile_offset_t(r0, noise)[..., None], noise)
    g_s = torch.exp(m + log_s[..., None] - mm)         # d log mu / d log S
    g_b = torch.exp(-mm)                               # d log mu / d B
    w = 1.0 / noise ** 2 + 2.0
    f_ss, f_sb, f_bb = w * (g_s * g_s).sum(-1), w * (g_s * g_b).sum(-1), w * (g_b * g_b).sum(-1)
    var_b = f_ss / (f_ss * f_bb - f_sb * f_sb)
    sd_b = torch.sqrt(var_b.clamp_min(0.0))
    log_ratio = 0.5 * torch.log(y.shape[-1] * w / f_ss)
    n_tail = min(int(p["n_tail"]), y.shape[-1])
    log_t = log_s + m[..., -n_tail:].mean(-1)
    lo = torch.maximum(log_t + np.log(p["low"]), torch.log((B - 8.0 * sd_b).clamp_min(1e-300)))
    hi = torch.minimum(log_t + np.log(p["high"]), torch.log(B + 8.0 * sd_b))
    x, wt = (torch.as_tensor(v, dtype=y.dtype, device=y.device) for v in np.polynomial.legendre.leggauss(int(n_nodes)))
    half = ((hi - lo) / 2.0).clamp_min(0.0)
    t = (lo + hi)[..., None] / 2.0 + half[..., None] * x
    log_gauss = -((torch.exp(t) - B[..., None]) ** 2) / (2.0 * var_b[..., None]) + torch.log(wt)
    log_int = torch.log(half) + torch.logsumexp(log_gauss, -1) - np.log(np.log(p["high"] / p["low"]))
    log_int = torch.nan_to_num(log_int, nan=-float("inf"))    # a degenerate information matrix: no mass
    with np.errstate(divide="ignore"):      # in logs: a fit far from B = 0 must not underflow to D = inf
        log_pa, log_pb = np.log(p["absent"]), np.log1p(-p["absent"])
    log_z = torch.logaddexp(log_pa - 0.5 * (D_0 - D_fit), log_pb + log_ratio + log_int)
    out = D_fit - 2.0 * log_z
    return torch.where(torch.isfinite(out), out, torch.full_like(out, float("inf")))


def log_prior(shape: str, params: dict, priors="paper") -> np.ndarray:
    """log prior density of ``shape``'s continuous parameters (volume fraction excluded: it is
    summed over), in physical units, including the truncation normalisations; -inf outside.
    ``priors``: the prior set (``inn_scatterers.PRIOR_SETS`` name or dict); truncated normal and
    log-uniform priors."""
    from scipy.stats import truncnorm

    out = 0.0
    for name in fit_names(shape):
        pr = _priors(priors)[shape][name]
        if pr["distribution"] == "log-uniform":
            v = np.asarray(params[name], dtype=np.float64)
            inside = (v >= pr["lower"]) & (v <= pr["upper"])
            with np.errstate(divide="ignore", invalid="ignore"):
                lp = -np.log(v) - np.log(np.log(pr["upper"] / pr["lower"]))
            out = out + np.where(inside, lp, -np.inf)
            continue
        lo = -np.inf if pr["lower"] is None else pr["lower"]
        hi = np.inf if pr["upper"] is None else pr["upper"]
        a, b = (lo - pr["mean"]) / pr["sd"], (hi - pr["mean"]) / pr["sd"]
        v = np.asarray(params[name], dtype=np.float64)
        out = out + truncnorm.logpdf(v, a, b, loc=pr["mean"], scale=pr["sd"])
    return np.asarray(out)


def _log_jacobian(names, u) -> np.ndarray:
    """log |d physical / d fit coordinates| (radius and length are fitted in log)."""
    u = np.asarray(u, dtype=np.float64)
    return sum((u[..., j] for j, n in enumerate(names) if n in _LOG_COORD), np.zeros(u.shape[:-1]))


# ---------------------------------------------------------------------------------------------
# forward model in fit coordinates
# ---------------------------------------------------------------------------------------------

def _log_intensity(shape, q, names, u, fixed, dtype, device, chunk: int = 512, pd_n: int = 35):
    """log I (float64 tensor, (B, n_q)) for fit coordinates u ((B, k) tensor) and fixed values
    ({name: (B,) tensor}). Cylinders are evaluated in chunks sorted by length, because the
    angular quadrature order follows the longest cylinder of a call."""
    import torch

    B = u.shape[0]
    out = torch.empty(B, len(q), dtype=torch.float64, device=u.device)
    if B == 0:
        return out
    order = torch.arange(B, device=u.device)
    if shape == "cylinder":
        order = torch.argsort(u[:, names.index("length_nm")] + 0.5 * u[:, names.index("radius_nm")])
    for s0 in range(0, B, chunk):
        idx = order[s0:s0 + chunk]
        pars = {n: (torch.exp(u[idx, j]) if n in _LOG_COORD else u[idx, j]) for j, n in enumerate(names)}
        pars.update({k: v[idx] for k, v in fixed.items()})
        i_q = sc.torch_intensity(shape, q, pars, dtype=dtype, device=device, pd_n=pd_n)
        out[idx] = torch.log(i_q.to(torch.float64)).to(out.device)
    return torch.nan_to_num(out, nan=-np.inf)


# ---------------------------------------------------------------------------------------------
# start search: a library of curves over the support
# ---------------------------------------------------------------------------------------------

def _draw_support(shape, names, rng, n, priors="paper"):
    """Half from the prior, half spread over the whole support (log-uniform radius and length,
    uniform widths), in fit coordinates, shape (n, k)."""
    n_prior = n // 2
    prior = s1.sample_parameters(shape, rng, max(n_prior, 1), _priors(priors))
    lo, hi = _bounds(names, priors)
    u = np.empty((n, len(names)))
    for j, name in enumerate(names):
        wide = rng.uniform(lo[j], hi[j], n - n_prior)
        p = prior[name][:n_prior]
        p = np.log(p) if name in _LOG_COORD else p
        u[:, j] = np.clip(np.concatenate([p, wide]), lo[j], hi[j])
    return u


def library(shape: str, q_nm, n: int | None = None, *, seed: int = 0, dtype=None, device="cpu",
            pd_n: int = 15, priors="paper") -> dict:
    """Curves of ``shape`` over its support (of the prior set ``priors``) for the start search
    (cached per arguments; only starting points, so the dispersity mesh is coarser than the data's
    35 points by default): {"names", "u": (n, k) fit coordinates, "fixed": list of {name: value},
    "log_i": (n_fixed, n, n_q), "priors"}."""
    import torch

    q = sc._check_q(q_nm)
    n = LIBRARY_SIZE[sc._check_shape(shape)] if n is None else int(n)
    if n < 1:
        raise ValueError(f"n={n!r} must be a positive library size")
    dtype = torch.float32 if dtype is None else dtype
    key = (shape, q.tobytes(), n, int(seed), str(dtype), str(device), int(pd_n), _prior_key(priors))
    if key in _LIBRARIES:
        return _LIBRARIES[key]
    names = fit_names(shape)
    rng = np.random.default_rng([int(seed), sc.SHAPES.index(shape), 7])
    u = _draw_support(shape, names, rng, n, priors)
    ut = torch.as_tensor(u, dtype=torch.float64, device=device)
    fixed = _fixed_options(shape)
    curves = []
    for fx in fixed:
        fxt = {k: torch.full((n,), v, dtype=torch.float64, device=device) for k, v in fx.items()}
        curves.append(_log_intensity(shape, q, names, ut, fxt, dtype, device, pd_n=pd_n)
                      .cpu().numpy().astype(np.float32))
    lib = {"names": names, "u": u, "fixed": fixed, "log_i": np.stack(curves), "priors": priors}
    _LIBRARIES[key] = lib
    return lib


def _background_scores(c, y) -> np.ndarray:
    """Squared relative residuals sum_q ((S e^c + B) / e^y - 1)^2 of every library curve c (m, n_q)
    against every curve y (n, n_q), both natural log I, at the scale S > 0 and flat background B >= 0
    that minimise them (linear least squares, solved in closed form for all pairs at once).
    Relative residuals, as the noise is relative. Returns (n, m); inf where no S > 0 fits."""
    c = np.asarray(c, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    c = c - c.max(axis=1, keepdims=True)       # a common factor per curve is absorbed by S and B
    y = y - y.max(axis=1, keepdims=True)
    ec, e2c, ey = np.exp(c), np.exp(2.0 * c), np.exp(-y)
    e2y = ey * ey
    saa, sab, sa = e2y @ e2c.T, e2y @ ec.T, ey @ ec.T          # (n, m): sums of a^2, a b, a
    sbb, sb = e2y.sum(axis=1)[:, None], ey.sum(axis=1)[:, None]  # (n, 1), with a = e^(c-y), b = e^-y
    det = saa * sbb - sab * sab
    with np.errstate(divide="ignore", invalid="ignore"):
        S = (sa * sbb - sab * sb) / det
        B = (saa * sb - sab * sa) / det
        no_bg = ~(B >= 0) | ~(det > 0)                          # background at its bound: S alone
        S = np.where(no_bg, sa / saa, S)
        B = np.where(no_bg, 0.0, B)
        score = y.shape[1] - 2.0 * (S * sa + B * sb) + S * S * saa + 2.0 * S * B * sab + B * B * sbb
    return np.where((S > 0) & np.isfinite(score), score, np.inf)


def _starts(lib, y, n_starts: int, min_sep: float = 0.08, n_cand: int = 64, free_scale: bool = False,
            background: bool = False, cols=None):
    """Per curve and fixed option, up to n_starts library points with the smallest misfit that are
    at least min_sep apart (in coordinates scaled by the support width). The misfit is the squared
    log-residual; with ``free_scale``, of the curves with their mean log I over q removed; with
    ``background``, the squared relative residual at the best scale and flat background
    (``_background_scores``) for half the starts (the first ones) and the scale-free log-residual for
    the rest, which finds the curves without a background more reliably. ``cols``: the library's q points the curves were measured on (all by
    default). Returns an int array (n_curves, n_fixed, n_starts) of library indices."""
    if background and n_starts > 1:     # half by each misfit: a background may be there or not
        half = (n_starts + 1) // 2
        return np.concatenate([_starts(lib, y, half, min_sep, n_cand, free_scale, True, cols),
                               _starts(lib, y, n_starts - half, min_sep, n_cand, True, False, cols)], axis=2)
    names = lib["names"]
    lo, hi = _bounds(names, lib.get("priors", "paper"))
    us = (lib["u"] - lo) / (hi - lo)
    if free_scale and not background:
        y = y - y.mean(axis=1, keepdims=True)
    y32 = y.astype(np.float32)
    n_cand = min(n_cand, lib["u"].shape[0])
    out = np.empty((y.shape[0], len(lib["fixed"]), n_starts), dtype=np.int64)
    for f, curves in enumerate(lib["log_i"]):
        if cols is not None:
            curves = curves[:, cols]
        finite = np.isfinite(curves).all(axis=1)
        c = np.where(finite[:, None], curves, 0.0).astype(np.float32)
        if background:
            score = _background_scores(c, y)
        else:
            if free_scale:
                c = c - c.mean(axis=1, keepdims=True)
            score = (c * c).sum(1)[None, :] - 2.0 * (y32 @ c.T)
        score[:, ~finite] = np.inf
        cand = np.argpartition(score, n_cand - 1, axis=1)[:, :n_cand]
        cand = np.take_along_axis(cand, np.argsort(np.take_along_axis(score, cand, 1), 1), 1)
        for i in range(y.shape[0]):
            chosen = [cand[i, 0]]
            for j in cand[i, 1:]:
                if len(chosen) == n_starts:
                    break
                if np.min(np.abs(us[chosen] - us[j]).max(axis=1)) >= min_sep:
                    chosen.append(j)
            while len(chosen) < n_starts:     # too few distinct candidates: repeat the best
                chosen.append(chosen[0])
            out[i, f] = chosen
    return out


# ---------------------------------------------------------------------------------------------
# batched Levenberg-Marquardt (Fisher scoring) within bounds
# ---------------------------------------------------------------------------------------------

def _lm(shape, q, names, y, u0, fixed, noise, dtype, device, max_iter: int, tol: float,
        group=None, prune_after: int | None = None, free_scale: bool = False, priors="paper",
        free_background: bool = False):
    """Minimise the deviance for each row of u0 against its curve y (both (B, .) tensors).

    Rows that share a ``group`` (the same curve) compete: after ``prune_after`` iterations, a row
    whose deviance is above 2 x (its group's best) + 100 is stopped, as it cannot become the best.
    With ``free_scale`` the profiled deviance is minimised: its gradient is the plain one at the
    best scale (the scale's own derivative vanishes there), its Gauss-Newton matrix that of the
    Jacobian with its mean over q removed (a shift of log I is absorbed by the scale).
    """
    import torch

    lo, hi = (torch.as_tensor(b, dtype=torch.float64, device=device) for b in _bounds(names, priors))
    B, k = u0.shape
    h = torch.full((k,), 1e-3 if dtype == torch.float64 else 3e-3, dtype=torch.float64, device=device)
    u = u0.clone()
    m = _log_intensity(shape, q, names, u, fixed, dtype, device)
    D = _deviance_t(y, m, noise, free_scale, free_background)
    lam = torch.full((B,), 1e-2, dtype=torch.float64, device=device)
    J = torch.zeros(B, q.size, k, dtype=torch.float64, device=device)
    stale = torch.ones(B, dtype=torch.bool, device=device)
    active = torch.isfinite(D)
    w = 2.0 / noise ** 2 + 4.0          # expected d^2 deviance / d (log I)^2 per point
    n_eval = B
    for it in range(max_iter):
        if prune_after is not None and group is not None and it >= prune_after:
            best = torch.full((int(group.max()) + 1,), float("inf"), dtype=torch.float64, device=device)
            best = best.scatter_reduce(0, group, D, reduce="amin")
            active &= ~(D > 2.0 * best[group] + 100.0)
        if not bool(active.any()):
            break
        idx = torch.nonzero(active & stale).flatten()
        if idx.numel():
            uu = u[idx]
            sign = torch.where(uu + h > hi, -1.0, 1.0)
            step = sign * h                                   # (n, k)
            U = uu[None, :, :] + torch.diag_embed(step).permute(1, 0, 2)   # (k, n, k)
            fx = {kk: v[idx].repeat(k) for kk, v in fixed.items()}
            M = _log_intensity(shape, q, names, U.reshape(-1, k), fx, dtype, device).view(k, idx.numel(), -1)
            J[idx] = ((M - m[idx][None]) / step.T[:, :, None]).permute(1, 2, 0)
            J[idx] = torch.nan_to_num(J[idx], nan=0.0, posinf=0.0, neginf=0.0)
            stale[idx] = False
            n_eval += idx.numel() * k
        rows = torch.nonzero(active).flatten()
        Jr, ur = J[rows], u[rows]
        if free_background:
            # the model with its nuisances, log(S e^m + B): d/dm = S e^m / (S e^m + B) per point
            mm, log_s, _ = _scale_background_t(y[rows], m[rows], noise)
            r = y[rows] - mm
            Jr = Jr * torch.exp(m[rows] + log_s[:, None] - mm)[..., None]
        else:
            r = y[rows] - m[rows]
            if free_scale:
                r = r - _profile_offset_t(r, noise)[:, None]
        e = torch.exp(r)
        dD_dm = -(2.0 * (e - 1.0) * e / noise ** 2 - 2.0)
        g = torch.einsum("bqk,bq->bk", Jr, dD_dm)
        Jh = Jr - Jr.mean(dim=1, keepdim=True) if (free_scale or free_background) else Jr
        H = w * torch.einsum("bqk,bql->bkl", Jh, Jh)
        frozen = ((ur <= lo + 1e-12) & (g > 0)) | ((ur >= hi - 1e-12) & (g < 0))
        keep = (~frozen).to(torch.float64)
        Hd = torch.diagonal(H, dim1=1, dim2=2)
        A = H + lam[rows][:, None, None] * torch.diag_embed(Hd + 1e-6)
        A = A * keep[:, :, None] * keep[:, None, :] + torch.diag_embed(1.0 - keep)
        delta = torch.linalg.solve(A, (-g * keep)[..., None])[..., 0]
        u_new = torch.clamp(ur + delta, lo, hi)
        m_new = _log_intensity(shape, q, names, u_new, {kk: v[rows] for kk, v in fixed.items()}, dtype, device)
        n_eval += rows.numel()
        D_new = _deviance_t(y[rows], m_new, noise, free_scale, free_background)
        acc = D_new < D[rows]
        gain = D[rows] - torch.where(acc, D_new, D[rows])
        ra = rows[acc]
        u[ra], m[ra], D[ra] = u_new[acc], m_new[acc], D_new[acc]
        stale[ra] = True
        lam[rows] = torch.where(acc, torch.clamp(lam[rows] * 0.3, min=1e-7), lam[rows] * 10.0)
        moved = (torch.abs(u_new - ur) * keep).amax(1)
        done = (acc & (gain < tol) & (lam[rows] < 1.0)) | (lam[rows] > 1e7) | (moved < 1e-9)
        active[rows[done]] = False
    return u, D, J, n_eval


def best_fit(shape: str, q_nm, log_i, *, noise: float = NOISE, n_starts: int | None = None,
             library_size: int | None = None, max_iter: int = 40, prune_after: int | None = 6, seed: int = 0,
             dtype=None, device="cpu", return_all: bool = False, free_scale: bool = False,
             priors="paper", free_background: bool = False, library_q=None) -> dict:
    """Maximum-likelihood parameters of ``shape`` for one curve (log_i (n_q,)) or a batch (n, n_q),
    within the support of the prior set ``priors`` (``support``; "paper" or "wide" or a dict).

    Searches ``library(shape, q, library_size)`` for ``n_starts`` distinct starts per curve (and
    per volume fraction for hard spheres), refines each by Levenberg-Marquardt on ``deviance``
    (forward model in ``dtype``, float32 by default) and re-evaluates the best in float64.
    Returns {"params": {name: values}, "deviance": values} (scalars for one curve), where
    deviance is -2 log L without its constant (see the module docstring); with return_all=True
    also "all_u", "all_deviance" ((n, n_fixed * n_starts[, k])), "fixed" and "n_eval".
    With ``free_scale`` the model's intensity scale is fitted too (profiled, see the module
    docstring) and "scale" holds it at the best fit: I_obs / I_model, dimensionless (1 on study
    1's scale: cm^-1 at sasmodels scale 1, contrast 1e-6 A^-2), also with return_all=True.
    """
    import torch

    shape = sc._check_shape(shape)
    q, y, single = _check_curves(q_nm, log_i)
    noise = checks.number("noise", noise, 0.0, 1.0, lo_open=True, hi_open=True)
    dtype = torch.float32 if dtype is None else dtype
    if n_starts is None:
        n_starts = 2 if shape == "cylinder" else 3
    if int(n_starts) != n_starts or n_starts < 1:
        raise ValueError(f"n_starts={n_starts!r} must be a positive integer")
    names = fit_names(shape)
    cols = None
    if library_q is not None:        # a partial curve: the library on the whole grid, its measured columns
        library_q = sc._check_q(library_q)
        cols = np.searchsorted(library_q, q)
        if np.any(cols >= library_q.size) or not np.allclose(library_q[np.minimum(cols, library_q.size - 1)], q,
                                                             rtol=1e-12):
            raise ValueError("q_nm must be a subset of library_q (the measured points of its grid)")
    lib = library(shape, q if library_q is None else library_q, library_size, seed=seed, dtype=dtype, device=device,
                  priors=priors)
    n, n_fix, k = y.shape[0], len(lib["fixed"]), len(names)
    idx = _starts(lib, y, int(n_starts), free_scale=free_scale or free_background,
                  background=free_background, cols=cols)  # (n, n_fix, n_starts)
    u0 = lib["u"][idx].reshape(-1, k)
    curve_of = np.repeat(np.arange(n), n_fix * n_starts)
    fix_of = np.tile(np.repeat(np.arange(n_fix), n_starts), n)
    fixed = {name: torch.as_tensor([lib["fixed"][f][name] for f in fix_of], dtype=torch.float64, device=device)
             for name in lib["fixed"][0]}
    yt = torch.as_tensor(y[curve_of], dtype=torch.float64, device=device)
    u, D, _, n_eval = _lm(shape, q, names, yt, torch.as_tensor(u0, dtype=torch.float64, device=device),
                          fixed, noise, dtype, device, max_iter, 1e-2,
                          group=torch.as_tensor(curve_of, device=device), prune_after=prune_after,
                          free_scale=free_scale, priors=priors, free_background=free_background)
    u_all = u.cpu().numpy().reshape(n, n_fix * n_starts, k)
    D_all = D.cpu().numpy().reshape(n, n_fix * n_starts)
    best = np.argmin(np.where(np.isfinite(D_all), D_all, np.inf), axis=1)
    rows = np.arange(n) * n_fix * n_starts + best
    ub = torch.as_tensor(u_all[np.arange(n), best], dtype=torch.float64, device=device)
    fx_best = {kk: v[torch.as_tensor(rows, device=device)] for kk, v in fixed.items()}
    m64 = _log_intensity(shape, q, names, ub, fx_best, torch.float64, device)
    y64 = torch.as_tensor(y, dtype=torch.float64, device=device)
    D64 = _deviance_t(y64, m64, noise, free_scale, free_background).cpu().numpy()
    params = to_params(names, u_all[np.arange(n), best])
    for kk, v in fx_best.items():
        params[kk] = v.cpu().numpy()
    out = {"params": params, "deviance": D64}
    if free_background:
        _, log_s, bg = _scale_background_t(y64, m64, noise)
        out["scale"], out["background"] = np.exp(log_s.cpu().numpy()), bg.cpu().numpy()
    elif free_scale:
        out["scale"] = np.exp(_profile_offset_t(y64 - m64, noise).cpu().numpy())
    if single:
        out = {"params": {kk: float(v[0]) for kk, v in params.items()}, "deviance": float(D64[0]),
               **{kk: float(out[kk][0]) for kk in ("scale", "background") if kk in out}}
    if return_all:
        out.update(all_u=u_all, all_deviance=D_all, fixed=[lib["fixed"][f] for f in range(n_fix)],
                   n_starts=int(n_starts), n_eval=int(n_eval))
    return out


# ---------------------------------------------------------------------------------------------
# the table: every shape's best fit for every curve
# ---------------------------------------------------------------------------------------------

def _merge_fits(old: dict, new: dict, rows: np.ndarray) -> dict:
    """Fits of ``rows`` redone (``new``) merged into ``old``: the better best fit per curve, and
    all converged starts of both (for ``log_evidence``'s modes)."""
    out = dict(old)
    better = new["deviance"] < old["deviance"][rows]
    out["deviance"] = old["deviance"].copy()
    out["deviance"][rows[better]] = new["deviance"][better]
    out["params"] = {k: v.copy() for k, v in old["params"].items()}
    for k, v in new["params"].items():
        out["params"][k][rows[better]] = v[better]
    for key in ("scale", "background"):
        if key in old:
            out[key] = old[key].copy()
            out[key][rows[better]] = new[key][better]
    n_fix = len(old["fixed"])
    k = old["all_u"].shape[-1]
    s_old, s_new = old["n_starts"], new["n_starts"]
    u = np.full((old["all_u"].shape[0], n_fix, s_old + s_new, k), np.nan)
    dv = np.full((old["all_u"].shape[0], n_fix, s_old + s_new), np.inf)
    u[:, :, :s_old] = old["all_u"].reshape(-1, n_fix, s_old, k)
    dv[:, :, :s_old] = old["all_deviance"].reshape(-1, n_fix, s_old)
    u[:, :, s_old:] = np.repeat(u[:, :, :1], s_new, axis=2)       # curves not redone: copies
    dv[:, :, s_old:] = np.repeat(dv[:, :, :1], s_new, axis=2)
    u[rows, :, s_old:] = new["all_u"].reshape(-1, n_fix, s_new, k)
    dv[rows, :, s_old:] = new["all_deviance"].reshape(-1, n_fix, s_new)
    out.update(all_u=u.reshape(u.shape[0], -1, k), all_deviance=dv.reshape(dv.shape[0], -1),
               n_starts=s_old + s_new, n_eval=old["n_eval"] + new["n_eval"])
    return out


def ambiguity_table(q_nm, log_i, labels=None, *, shapes=sc.SHAPES, noise: float = NOISE,
                    fit_kwargs: dict | None = None, keep_fits: bool = False,
                    refine_window: float = 30.0, refine_starts: int = 8, free_scale: bool = False,
                    priors="paper", free_background: bool = False) -> dict:
    """Best-fit deviance of each shape for each curve, and the maximum-likelihood verdict.

    Every shape is fitted to every curve (``best_fit``); then, where two or more shapes come
    within ``refine_window`` of the curve's best, those shapes are fitted again from
    ``refine_starts`` starts (a cylinder that mimics a sphere has separate optima, with the
    dispersity in the radius or in the length, which two starts can miss). The labels (true
    shapes, optional) are used only for the margins.

    Returns {"deviance": (n, n_shapes), "params": {shape: {name: (n,)}}, "ml_shape": (n,) index
    of the best-fitting shape, "margin": (n,) best wrong-shape deviance minus the true shape's
    (<= 0: ambiguous, the ML classifier errs), "rival": (n,) index of the best wrong shape,
    "labels", "shapes", "noise", "free_scale"} (no margin, rival or labels without labels); with
    ``free_scale`` every fit has a free intensity scale (``best_fit``) and "scale" ({shape: (n,)})
    holds it; with keep_fits=True also "fits" ({shape: best_fit(..., return_all=True)}).
    """
    q, y, _ = _check_curves(q_nm, log_i)
    shapes = tuple(sc._check_shape(s) for s in shapes)
    labels = None if labels is None else np.asarray(labels)
    if labels is not None and (labels.shape != (y.shape[0],) or not np.issubdtype(labels.dtype, np.integer)
                               or labels.min() < 0 or labels.max() >= len(shapes)):
        raise ValueError(f"labels must be {y.shape[0]} integers in [0, {len(shapes)}) (indices into "
                         f"shapes); got shape {labels.shape}, dtype {labels.dtype}")
    fits = {s: best_fit(s, q, y, noise=noise, return_all=True, free_scale=free_scale, priors=priors,
                        free_background=free_background, **(fit_kwargs or {}))
            for s in shapes}
    D = np.stack([fits[s]["deviance"] for s in shapes], axis=1)
    if refine_window and refine_window > 0 and len(shapes) > 1:
        near = D <= D.min(axis=1, keepdims=True) + refine_window
        near &= near.sum(axis=1, keepdims=True) > 1
        for k, s in enumerate(shapes):
            rows = np.flatnonzero(near[:, k])
            if rows.size and refine_starts > fits[s]["n_starts"]:
                kw = dict(fit_kwargs or {}, n_starts=int(refine_starts))
                again = best_fit(s, q, y[rows], noise=noise, return_all=True, free_scale=free_scale,
                                 priors=priors, free_background=free_background, **kw)
                fits[s] = _merge_fits(fits[s], again, rows)
        D = np.stack([fits[s]["deviance"] for s in shapes], axis=1)
    out = {"deviance": D, "params": {s: fits[s]["params"] for s in shapes}, "ml_shape": np.argmin(D, 1), "noise": noise,
           "shapes": shapes, "free_scale": bool(free_scale), "priors": priors,
           "free_background": bool(free_background)}
    if free_scale or free_background:
        out["scale"] = {s: fits[s]["scale"] for s in shapes}
    if free_background:
        out["background"] = {s: fits[s]["background"] for s in shapes}
    if labels is not None:
        n = y.shape[0]
        wrong = D.copy()
        wrong[np.arange(n), labels] = np.inf
        out.update(margin=wrong.min(1) - D[np.arange(n), labels], rival=np.argmin(wrong, 1), labels=labels)
    if keep_fits:
        out["fits"] = fits
    return out


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial fraction k / n."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _frac(mask) -> dict:
    mask = np.asarray(mask, dtype=bool)
    k, n = int(mask.sum()), int(mask.size)
    lo, hi = binomial_interval(k, n) if n else (np.nan, np.nan)
    return {"k": k, "n": n, "fraction": k / n if n else np.nan, "ci95": (lo, hi)}


def summarize(table: dict, thresholds=(2.0, 6.0)) -> dict:
    """Fractions (with 95 % Clopper-Pearson intervals) of curves where the ML classifier errs
    (margin <= 0), overall and per true shape; errors per wrong shape; and the fractions with
    only weak evidence for the true shape (margin < each threshold)."""
    margin, labels, shapes = table["margin"], table["labels"], table["shapes"]
    err = margin <= 0
    out = {"ml_error": _frac(err),
           "ml_error_by_true_shape": {s: _frac(err[labels == k]) for k, s in enumerate(shapes)},
           "ml_errors_by_picked_shape": {s: int(np.sum(err & (table["rival"] == k))) for k, s in enumerate(shapes)},
           "ml_confusion": np.array([[int(np.sum((labels == a) & (table["ml_shape"] == b)))
                                      for b in range(len(shapes))] for a in range(len(shapes))])}
    for t in thresholds:
        out[f"margin_below_{t:g}"] = _frac(margin < t)
    return out


# ---------------------------------------------------------------------------------------------
# shape posteriors: marginal likelihoods by importance sampling around the fits
# ---------------------------------------------------------------------------------------------

def log_evidence(shape: str, q_nm, log_i, fit: dict, *, noise: float = NOISE, n_samples: int = 400,
                 n_rounds: int = 3, seed: int = 0, dtype=None, device="cpu", window: float = 30.0,
                 df: float = 4.0, inflate: float = 1.5, defensive: float = 0.1, free_scale: bool = False,
                 priors="paper", free_background: bool = False, return_draws: bool = False) -> dict:
    """log p(curve | shape): the likelihood integrated over the prior, per curve.

    ``fit`` is ``best_fit(shape, q, log_i, return_all=True)``. Adaptive importance sampling
    (population Monte Carlo): the proposal is a mixture of multivariate t's (``df``), one per
    distinct converged fit within ``window`` deviance units of the best (first round: the inverse
    Fisher matrix plus the prior's precision, scaled by ``inflate``^2; later rounds: the weighted
    moments of the previous round's samples), with weight ``defensive`` on the prior itself,
    which bounds the weights. Each round draws ``n_samples``; the estimate is the last round's.
    The hard-sphere volume fraction is summed over its values (uniform prior).
    Returns {"log_z": (n,), "ess": (n,) effective sample size of the last round (smallest over
    the volume fractions that matter), "log_occam": log_z + best deviance / 2 (<= 0 up to
    sampling error; with a free background, up to the background's own small factor,
    ``_background_deviance_t``)}; with ``return_draws``, also "draws": per curve, the last round's
    draws as (params (m, len(SHAPE_PARAMS[shape])) in physical units, normalised importance weights (m,)),
    i.e. the posterior of the parameters under the exact likelihood and the prior
    (``likelihood_posterior`` resamples them). The likelihood is evaluated in ``dtype`` (float32 by default). With
    ``free_scale`` (``fit`` made with it too) the profiled likelihood of a free intensity scale is
    integrated; with ``free_background``, the likelihood with the background integrated over its
    prior (``_background_deviance_t``; module docstring).
    """
    import torch
    from scipy.special import logsumexp

    shape = sc._check_shape(shape)
    q, y, _ = _check_curves(q_nm, log_i)
    noise = checks.number("noise", noise, 0.0, 1.0, lo_open=True, hi_open=True)
    if int(n_rounds) != n_rounds or n_rounds < 1 or int(n_samples) != n_samples or n_samples < 10:
        raise ValueError(f"need n_rounds >= 1 and n_samples >= 10; got {n_rounds!r}, {n_samples!r}")
    dtype = torch.float32 if dtype is None else dtype
    names = fit_names(shape)
    k = len(names)
    lo, hi = _bounds(names, priors)
    n, n_fix, n_st = y.shape[0], len(fit["fixed"]), fit["n_starts"]
    if fit["all_u"].shape[0] != n:
        raise ValueError(f"fit holds {fit['all_u'].shape[0]} curves but log_i {n}")
    rng = np.random.default_rng([int(seed), sc.SHAPES.index(shape), 11])
    D_all = fit["all_deviance"].reshape(n, n_fix, n_st)
    u_all = fit["all_u"].reshape(n, n_fix, n_st, k)
    D_best = np.min(np.where(np.isfinite(D_all), D_all, np.inf).reshape(n, -1), axis=1)
    table = _priors(priors)[shape]
    # prior sd per coordinate: a log-uniform prior's in its (log) fit coordinate, marked by a negative sign
    sd_prior = np.array([-np.log(table[nm]["upper"] / table[nm]["lower"]) / np.sqrt(12.0)
                         if table[nm]["distribution"] == "log-uniform" else table[nm]["sd"] for nm in names])
    scale_t = (df - 2.0) / df                     # t shape matrix from a covariance
    log_z, ess = np.full(n, -np.inf), np.full(n, np.nan)

    def log_like(i, f, U):
        Ut = torch.as_tensor(U, dtype=torch.float64, device=device)
        fx = {kk: torch.full((U.shape[0],), v, dtype=torch.float64, device=device)
              for kk, v in fit["fixed"][f].items()}
        m = _log_intensity(shape, q, names, Ut, fx, dtype, device)
        yt = torch.as_tensor(y[i], dtype=torch.float64, device=device)[None]
        D = _background_deviance_t(yt, m, noise) if free_background else _deviance_t(yt, m, noise, free_scale)
        return -0.5 * (D.cpu().numpy() - D_best[i])

    all_names = sc.SHAPE_PARAMS[shape]
    draws = []
    for i in range(n):
        per_fix, ess_i, kept = [], [], []
        for f in range(n_fix):
            keep = np.flatnonzero(D_all[i, f] <= D_best[i] + window)
            if keep.size == 0:
                continue
            comps = []                                 # (mean, covariance) per distinct mode
            for j in keep[np.argsort(D_all[i, f, keep])]:
                c = u_all[i, f, j]
                if any(np.abs(c - m0).max() <= 1e-3 for m0, _ in comps):
                    continue
                cov = _fisher_cov(shape, q, names, c, fit["fixed"][f], noise, dtype, device, free_scale, priors)
                phys = to_params(names, c)
                sd_u = np.array([-sd_prior[t] if sd_prior[t] < 0 else sd_prior[t] / phys[nm] if nm in _LOG_COORD
                                 else sd_prior[t] for t, nm in enumerate(names)])
                cov = np.linalg.inv(np.linalg.inv(cov) + np.diag(1.0 / sd_u ** 2)) * inflate ** 2
                comps.append((c, 0.5 * (cov + cov.T)))
            mix = np.full(len(comps), 1.0 / len(comps))
            for rnd in range(int(n_rounds)):
                U, lq, lprior = _draw_mixture(shape, names, comps, mix, defensive, df, scale_t, n_samples, rng,
                                              priors)
                inside = np.all((U >= lo) & (U <= hi), axis=1)
                lw = np.full(U.shape[0], -np.inf)
                if inside.any():
                    lw[inside] = log_like(i, f, U[inside]) + lprior[inside] - lq[inside]
                lw = np.where(np.isfinite(lw), lw, -np.inf)
                if rnd < n_rounds - 1 and np.isfinite(lw).any():
                    comps, mix = _refit_mixture(comps, mix, U, lw, df, scale_t, inflate)
            lz = logsumexp(lw) - np.log(U.shape[0])
            per_fix.append(lz - np.log(n_fix))        # uniform prior over the volume fractions
            wn = np.exp(lw - logsumexp(lw)) if np.isfinite(lz) else np.zeros(1)
            ess_i.append((lz, 1.0 / max(np.sum(wn ** 2), 1e-300)))
            if return_draws and np.isfinite(lz):
                phys = {**to_params(names, U), **{kk: np.full(len(U), v) for kk, v in fit["fixed"][f].items()}}
                kept.append((lz, np.stack([phys[nm] for nm in all_names], axis=1), wn))
        if return_draws:
            if kept:   # the volume fractions weighted by their marginal likelihoods
                lzs = np.array([k[0] for k in kept])
                mass = np.exp(lzs - logsumexp(lzs))
                draws.append((np.concatenate([k[1] for k in kept]),
                              np.concatenate([m * k[2] for m, k in zip(mass, kept)])))
            else:
                draws.append((np.empty((0, len(all_names))), np.empty(0)))
        if per_fix:
            log_z[i] = logsumexp(per_fix) - 0.5 * D_best[i]
            top = max(ess_i)[0]
            ess[i] = min((e for lz, e in ess_i if lz > top - 5.0), default=0.0)
    out = {"log_z": log_z, "ess": ess, "log_occam": log_z + 0.5 * D_best}
    if return_draws:
        out["draws"] = draws
    return out


def _t_logpdf(U, mean, cov, df, scale_t):
    from scipy.stats import multivariate_t

    return np.atleast_1d(multivariate_t(loc=mean, shape=cov * scale_t, df=df, allow_singular=True).logpdf(U))


def _draw_mixture(shape, names, comps, mix, defensive, df, scale_t, n, rng, priors="paper"):
    """n draws from sum_c (1 - defensive) mix_c t_c + defensive prior, in fit coordinates, with
    the log proposal density and the log prior density (fit coordinates) of each draw."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_t

    k = len(names)
    n_def = max(1, int(round(defensive * n)))
    counts = rng.multinomial(n - n_def, mix)
    parts = [multivariate_t(loc=m, shape=c * scale_t, df=df, allow_singular=True, seed=rng)
             .rvs(size=int(nc)).reshape(int(nc), k) for (m, c), nc in zip(comps, counts) if nc > 0]
    draw = s1.sample_parameters(shape, rng, n_def, _priors(priors))
    parts.append(np.stack([np.log(draw[nm]) if nm in _LOG_COORD else draw[nm] for nm in names], axis=1))
    U = np.concatenate(parts)
    lprior = log_prior(shape, to_params(names, U), priors) + _log_jacobian(names, U)
    terms = [np.log((1.0 - defensive) * w) + _t_logpdf(U, m, c, df, scale_t)
             for (m, c), w in zip(comps, mix) if w > 0]
    lq = logsumexp(np.stack(terms + [np.log(defensive) + lprior]), axis=0)
    return U, lq, lprior


def _refit_mixture(comps, mix, U, lw, df, scale_t, inflate):
    """One weighted EM step: each component takes the weighted moments of the draws it is
    responsible for (kept as it was where it holds too little weight)."""
    from scipy.special import logsumexp

    k = U.shape[1]
    # temper the weights (w^beta) so that the refit sees at least n / 10 effective draws
    finite = np.isfinite(lw)
    beta = 1.0
    for beta in (1.0, 0.5, 0.25, 0.12, 0.06, 0.03, 0.015):
        lt = np.where(finite, beta * lw, -np.inf)
        w = np.exp(lt - logsumexp(lt))
        if 1.0 / np.sum(w ** 2) >= 0.1 * U.shape[0]:
            break
    lr = np.stack([np.log(max(p, 1e-12)) + _t_logpdf(U, m, c, df, scale_t) for (m, c), p in zip(comps, mix)])
    resp = np.exp(lr - logsumexp(lr, axis=0, keepdims=True))
    new, mass = [], []
    for c_i, (m0, c0) in enumerate(comps):
        a = w * resp[c_i]
        tot = a.sum()
        ess_c = tot ** 2 / max(np.sum(a ** 2), 1e-300)
        if tot < 1e-3 or ess_c < k + 2:
            new.append((m0, c0))
        else:
            mean = a @ U / tot
            d = U - mean
            cov = (a[:, None] * d).T @ d / tot * inflate ** 2
            blend = min(1.0, ess_c / (10.0 * k))      # few effective draws: lean on the old one
            cov = blend * cov + (1.0 - blend) * c0 + 1e-10 * np.eye(k)
            new.append((blend * mean + (1.0 - blend) * m0, 0.5 * (cov + cov.T)))
        mass.append(tot)
    mass = np.maximum(np.asarray(mass), 0.05 * max(sum(mass), 1e-12))
    return new, mass / mass.sum()


def _fisher_cov(shape, q, names, u, fixed, noise, dtype, device, free_scale: bool = False, priors="paper"):
    """Inverse Fisher matrix of the log-likelihood at u (fit coordinates), by central
    differences (one-sided at a bound of the support); with ``free_scale``, of the profiled one
    (the Jacobian's mean over q removed)."""
    import torch

    k = len(names)
    h = 1e-3 if dtype == torch.float64 else 3e-3
    lo, hi = _bounds(names, priors)
    U = np.repeat(u[None], 2 * k, axis=0)
    for j in range(k):
        U[2 * j, j] = min(u[j] + h, hi[j])
        U[2 * j + 1, j] = max(u[j] - h, lo[j])
    Ut = torch.as_tensor(U, dtype=torch.float64, device=device)
    fx = {kk: torch.full((2 * k,), v, dtype=torch.float64, device=device) for kk, v in fixed.items()}
    m = _log_intensity(shape, q, names, Ut, fx, dtype, device).cpu().numpy()
    j = np.arange(k)
    du = U[2 * j, j] - U[2 * j + 1, j]
    J = np.nan_to_num((m[0::2] - m[1::2]).T / du)            # (n_q, k)
    if free_scale:
        J = J - J.mean(axis=0, keepdims=True)
    fisher = (1.0 / noise ** 2 + 2.0) * J.T @ J              # per point: 1/sigma^2 + 2 in log I
    return np.linalg.inv(fisher + 1e-9 * np.eye(k))


def shape_posteriors(log_z: np.ndarray, log_prior_shape=None) -> np.ndarray:
    """p(shape | curve) from log evidences (n, n_shapes); equal shape priors by default."""
    from scipy.special import logsumexp

    lz = np.asarray(log_z, dtype=np.float64)
    if log_prior_shape is not None:
        lz = lz + np.asarray(log_prior_shape)
    return np.exp(lz - logsumexp(lz, axis=1, keepdims=True))


def posteriors(q_nm, log_i, table: dict, *, window: float = 60.0, evidence_kwargs: dict | None = None) -> dict:
    """p(shape | curve) for the curves of ``ambiguity_table(..., keep_fits=True)``.

    Where two or more shapes have a best deviance within ``window`` of the curve's best, each of
    them gets a marginal likelihood from ``log_evidence``; the others get their upper bound
    -deviance/2 (the Occam factor is <= 1), which can only overstate their posterior. Where only
    one shape is within ``window``, it gets posterior 1 without sampling (a likelihood ratio of
    e^-30 or less, which Occam factors of e^-10 to e^-30 do not overturn in practice).
    Equal shape priors (study 1 is balanced).
    Returns {"log_z": (n, n_shapes) (NaN where bounded), "posterior": (n, n_shapes),
    "bayes_shape": (n,), "ess": (n, n_shapes)}.
    """
    _, y, _ = _check_curves(q_nm, log_i)
    if "fits" not in table:
        raise ValueError("table has no fits: call ambiguity_table(..., keep_fits=True)")
    D = table["deviance"]
    if D.shape[0] != y.shape[0]:
        raise ValueError(f"table holds {D.shape[0]} curves but log_i {y.shape[0]}")
    near = D <= D.min(axis=1, keepdims=True) + window
    near &= near.sum(axis=1, keepdims=True) > 1
    log_z = np.full(D.shape, np.nan)
    ess = np.full(D.shape, np.nan)
    for k, shape in enumerate(table["shapes"]):
        rows = np.flatnonzero(near[:, k])
        if rows.size == 0:
            continue
        fit = dict(table["fits"][shape])
        fit["all_u"], fit["all_deviance"] = fit["all_u"][rows], fit["all_deviance"][rows]
        ev = log_evidence(shape, q_nm, y[rows], fit, noise=table.get("noise", NOISE),
                          free_scale=table.get("free_scale", False), priors=table.get("priors", "paper"),
                          free_background=table.get("free_background", False),
                          **(evidence_kwargs or {}))
        log_z[rows, k], ess[rows, k] = ev["log_z"], ev["ess"]
    post = shape_posteriors(np.where(np.isnan(log_z), -0.5 * D, log_z))
    alone = ~near.any(axis=1)
    post[alone] = np.eye(D.shape[1])[np.argmin(D[alone], axis=1)]
    return {"log_z": log_z, "posterior": post, "bayes_shape": np.argmax(post, axis=1), "ess": ess}


# ---------------------------------------------------------------------------------------------
# notebook glue: a random subset of the test set plus the curves a model got wrong
# ---------------------------------------------------------------------------------------------

#: Settings of ``check_subset``: "full" as in the recorded run on the whole test set; "fast" for
#: a notebook cell (smaller libraries, fewer restarts and draws: ~2x faster, same verdicts on the
#: standard model's errors).
EFFORT = {
    "full": {"fit_kwargs": {}, "refine_starts": 8, "evidence_kwargs": {"n_samples": 400, "n_rounds": 4}},
    "fast": {"fit_kwargs": {"library_size": 1500}, "refine_starts": 6,
             "evidence_kwargs": {"n_samples": 150, "n_rounds": 2}},
}


def classify(q_nm, log_i, *, shapes=sc.SHAPES, effort: str = "fast", noise: float = NOISE,
             free_scale: bool = False, priors="paper", free_background: bool = False) -> dict:
    """The Bayes classifier for curves of unknown shape: p(shape | curve) under study 1's priors
    (``priors``: "paper", "wide" or a dict, ``inn_scatterers.prior_set``) and noise model, from
    best fits and (where shapes compete) marginal likelihoods.

    q_nm (n_q,) in nm^-1 and log_i (n_q,) or (n, n_q) natural-log intensities in cm^-1 (NaN
    where a point was not measured, at the same q in every curve: a partial curve is fitted on its
    measured points, with the start library of the whole grid), noise
    the relative per-point noise, shapes the candidates (study-1 shapes, equal prior odds).
    Costs about a second per curve on one CPU core at effort "fast".
    Returns {"posterior": (n, n_shapes), "bayes_shape": (n,), "deviance": (n, n_shapes),
    "params": {shape: {name: (n,)}} (best fits), "shapes"}; a single curve gives n = 1.
    The answer is only as good as the model: it assumes the noise is I * N(1, noise) and the
    curve is one of the three shapes with no background, on study 1's absolute scale (cm^-1,
    sasmodels scale 1, contrast 1e-6 A^-2), or, with ``free_scale``, on any scale: the scale is
    then fitted with the shape parameters (module docstring), the answer is the same for c * I
    as for I, and "scale" ({shape: (n,)}, I_obs / I_model at each shape's best fit,
    dimensionless) is returned too.
    """
    _, y, _ = _check_curves(q_nm, log_i, missing=True)
    library_q, q_nm, y = _measured_columns(q_nm, y)   # a partial curve: fitted on its measured points
    res = _assess(q_nm, y, None, effort, shapes=shapes, free_scale=bool(free_scale), priors=priors,
                  library_q=library_q,
                  free_background=bool(free_background),
                  noise=checks.number("noise", noise, 0.0, 1.0, lo_open=True, hi_open=True))
    keys = (("posterior", "bayes_shape", "deviance", "params", "shapes")
            + (("scale",) if free_scale or free_background else ()) + (("background",) if free_background else ()))
    return {k: res[k] for k in keys}


def second_opinion(q_nm, log_i, shapes=sc.SHAPES, effort: str = "fast", free_scale: bool = False,
                   priors="paper", free_background: bool = False) -> np.ndarray:
    """``classify``'s posterior (n, n_shapes) in the form ``learn.inn.ShapeInverter`` takes as its
    ``second_opinion``: ``ShapeInverter(..., second_opinion=bayes_shapes.second_opinion)``. A
    scale-free inverter asks it with ``free_scale=True``: the intensity scale is fitted too."""
    return classify(q_nm, log_i, shapes=shapes, effort=effort, free_scale=free_scale, priors=priors,
                    free_background=free_background)["posterior"]


#: Settings of ``likelihood_posterior``: draws and rounds of the adaptive importance sampling, and
#: those of its second try for curves whose weights hold fewer than ``retry_below`` effective draws
#: (small particles, whose posteriors are long curved ridges that the first proposal misses).
POSTERIOR_EFFORT = {"fit_kwargs": {}, "evidence_kwargs": {"n_samples": 400, "n_rounds": 3},
                    "retry_below": 20.0, "retry_kwargs": {"n_samples": 800, "n_rounds": 5}}


def _measured_columns(q_nm, y):
    """A partial curve batch (NaN where not measured, the same q in every row) -> (library_q or
    None, q of the measured points, y on them)."""
    q = sc._check_q(q_nm)
    measured = np.isfinite(y)
    if measured.all():
        return None, q, y
    if not (measured == measured[0]).all():
        raise ValueError("log_i has NaN (points not measured) at different q in different curves: "
                         "pass curves measured on the same q points together")
    if measured[0].sum() < 8:
        raise ValueError(f"only {int(measured[0].sum())} measured points (finite log I): need at least 8")
    return q, q[measured[0]], y[:, measured[0]]


def _ess(w) -> float:
    """Effective number of draws of importance weights w (0 when there are none)."""
    w = np.asarray(w, dtype=np.float64)
    return float(w.sum() ** 2 / np.sum(w ** 2)) if w.size and w.sum() > 0 else 0.0


def likelihood_posterior(shape: str, q_nm, log_i, *, n_draws: int = 300, seed: int = 0, noise: float = NOISE,
                         free_scale: bool = False, priors="paper", free_background: bool = False) -> dict:
    """Posterior samples of ``shape``'s parameters under the exact likelihood (module docstring)
    and the prior set ``priors``, for one curve or a batch: the best fits (``best_fit``), then
    adaptive importance sampling around them (``log_evidence``, ``POSTERIOR_EFFORT``; a second,
    longer try where the first holds few effective draws), resampled to ``n_draws`` equally
    weighted draws per curve.

    This is the reference posterior a network's can be held against, and the likelihood's answer
    for the parameters of an in-domain curve (``learn.inn.ShapeInverter``'s ``posterior_refiner``).
    It assumes the curve is ``shape`` with study 1's noise model; about 0.5 s per sphere curve
    and a few seconds per cylinder on one core.

    Parameters
    ----------
    shape : str
    q_nm : array_like (n_q,)
        nm^-1.
    log_i : array_like (n_q,) or (n, n_q)
        Natural log of I (NaN where not measured, at the same q in every curve).
    n_draws : int
        Draws per curve.
    free_scale, free_background : bool
        Fit an unknown intensity scale (and a flat background) with the parameters.

    Returns
    -------
    dict
        {"samples": (n, n_draws, len(SHAPE_PARAMS[shape])) in physical units (nm for sizes),
        "ess": (n,) effective sample size of the importance weights (small: the sampler found
        little of the posterior; few hundred: reliable), "best": the best fit's {name: (n,)}}.
    """
    shape = sc._check_shape(shape)
    if int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws={n_draws!r} must be a positive integer")
    _, y, _ = _check_curves(q_nm, log_i, missing=True)
    library_q, q, y = _measured_columns(q_nm, y)
    fit = best_fit(shape, q, y, return_all=True, free_scale=free_scale, free_background=free_background,
                   priors=priors, library_q=library_q, noise=noise, **POSTERIOR_EFFORT["fit_kwargs"])
    common = {"noise": noise, "free_scale": free_scale, "free_background": free_background, "priors": priors,
              "seed": seed, "return_draws": True}
    ev = log_evidence(shape, q, y, fit, **common, **POSTERIOR_EFFORT["evidence_kwargs"])
    draws = list(ev["draws"])
    ess_first = np.array([_ess(w) for _, w in draws])
    redo = np.flatnonzero(ess_first < POSTERIOR_EFFORT["retry_below"])
    if redo.size:        # the second try, kept where it holds more effective draws
        sub = {**fit, "all_u": fit["all_u"][redo], "all_deviance": fit["all_deviance"][redo]}
        again = log_evidence(shape, q, y[redo], sub, **common, **POSTERIOR_EFFORT["retry_kwargs"])
        for i, d in zip(redo, again["draws"]):
            if _ess(d[1]) > ess_first[i]:
                draws[i] = d
    rng = np.random.default_rng([int(seed), sc.SHAPES.index(shape), 13])
    d = len(sc.SHAPE_PARAMS[shape])
    samples = np.full((len(y), int(n_draws), d), np.nan)
    ess = np.zeros(len(y))
    for i, (points, w) in enumerate(draws):
        if w.size == 0 or not w.sum() > 0:
            continue
        ess[i] = _ess(w)
        w = w / w.sum()
        # systematic resampling: each draw kept about n_draws * w times
        pos = (rng.random() + np.arange(n_draws)) / n_draws
        samples[i] = points[np.minimum(np.searchsorted(np.cumsum(w), pos), len(w) - 1)]
    return {"samples": samples, "ess": ess, "best": fit["params"]}


def _assess(q_nm, y, labels, effort: str, *, evidence: bool = True, library_q=None, **table_kwargs) -> dict:
    """``ambiguity_table`` at the ``EFFORT`` settings and, with ``evidence``, the shape posteriors
    merged into it (the fits dropped)."""
    if effort not in EFFORT:
        raise ValueError(f"effort={effort!r}; allowed: {', '.join(EFFORT)}")
    settings = EFFORT[effort]
    fit_kwargs = dict(settings["fit_kwargs"], **({} if library_q is None else {"library_q": library_q}))
    table = ambiguity_table(q_nm, y, labels, fit_kwargs=fit_kwargs, keep_fits=evidence,
                            refine_starts=settings["refine_starts"], **table_kwargs)
    if evidence:
        table.update(posteriors(q_nm, y, table, evidence_kwargs=settings["evidence_kwargs"]))
        del table["fits"]
    return table


def check_subset(q_nm, log_i, labels, *, n_random: int, include=None, max_include: int | None = None,
                 seed: int = 0, effort: str = "full", evidence: bool = True) -> dict:
    """``ambiguity_table`` on ``n_random`` curves drawn at random from (log_i, labels) plus the
    curves ``include`` (e.g. a classifier's errors; at most ``max_include`` of them, drawn at
    random), and with ``evidence`` the shape posteriors (``posteriors``); ``effort`` picks the
    settings (``EFFORT``). Returns the table with "index" (rows of log_i), "random" and
    "included" masks, and "posterior", "bayes_shape"."""
    if effort not in EFFORT:
        raise ValueError(f"effort={effort!r}; allowed: {', '.join(EFFORT)}")
    _, y, _ = _check_curves(q_nm, log_i)
    n = y.shape[0]
    if int(n_random) != n_random or not 0 <= n_random <= n:
        raise ValueError(f"n_random={n_random!r} must be an integer in [0, {n}]")
    rng = np.random.default_rng(seed)
    rand = rng.permutation(n)[: int(n_random)]
    inc = np.unique(np.asarray([] if include is None else include, dtype=np.int64))
    if inc.size and (inc.min() < 0 or inc.max() >= n):
        raise ValueError(f"include holds indices outside [0, {n})")
    if max_include is not None and inc.size > max_include:
        inc = np.sort(rng.choice(inc, int(max_include), replace=False))
    index = np.union1d(rand, inc)
    if index.size == 0:
        raise ValueError("nothing to check: n_random = 0 and include is empty")
    table = _assess(q_nm, y[index], np.asarray(labels)[index], effort, evidence=evidence)
    table.update(index=index, random=np.isin(index, rand), included=np.isin(index, inc))
    return table


def markdown_report(result: dict) -> str:
    """A short markdown summary of ``check_subset``: how often the maximum-likelihood and (with
    posteriors) the Bayes classifier err on the random curves, with 95 % intervals, and what
    they say about the included curves (e.g. a network's errors)."""
    lab = result["labels"]
    has_post = "posterior" in result
    lines = []

    def frac(mask):
        k, n = int(np.sum(mask)), int(np.size(mask))
        lo, hi = binomial_interval(k, n)
        return f"{k}/{n} ({k / n:.1%}; 95 % interval {lo:.1%}–{hi:.1%})"

    r = result["random"]
    if r.any():
        ml_err = result["margin"][r] <= 0
        lines.append(f"- **{int(r.sum())} random test curves.** Maximum likelihood (best fit of each shape) "
                     f"picks a wrong shape for {frac(ml_err)}; a wrong shape comes within 6 deviance units "
                     f"for {int(np.sum(result['margin'][r] < 6))}.")
        if has_post:
            p = result["posterior"][r]
            b_err = result["bayes_shape"][r] != lab[r]
            lines.append(f"- Bayes classifier (prior-weighted marginal likelihoods): wrong for {frac(b_err)}; "
                         f"expected error rate, mean of 1 − max p(shape | curve): {np.mean(1 - p.max(1)):.2%}.")
    inc = result["included"]
    if inc.any():
        m = result["margin"][inc]
        line = (f"- **{int(inc.sum())} included curves** (the network's errors): a wrong shape fits at least as "
                f"well for {int(np.sum(m <= 0))}, within 6 units for {int(np.sum(m < 6))}; the true shape fits "
                f"better by >= 20 for {int(np.sum(m >= 20))}.")
        if has_post:
            pt = result["posterior"][inc, lab[inc]]
            line += (f" The Bayes classifier gets {int(np.sum(result['bayes_shape'][inc] == lab[inc]))} of them "
                     f"right; p(true shape | curve) > 0.9 for {int(np.sum(pt > 0.9))}.")
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# archived experiments (notebook 01 reads their records): the likelihood on the whole test sets
# ---------------------------------------------------------------------------------------------

#: ``python -m sashelpers.studies.bayes_shapes experiment NAME [--profile P]``: "wide_likelihood"
#: (the wide-prior model's test set: shapes with the likelihood where the network is unsure, and
#: every curve's parameters from the likelihood's posterior, against the network's) and
#: "background_likelihood" (the scale-free model's final shape accuracy on the test curves with a
#: background, times 1e-3 and 1e3, against the same curves without) and "background_ceiling" (the
#: curves whose network verdict the background changes, and the Bayes classifier on them with and
#: without it: is the information gone, or does the network miss it?). Records:
#: ``book/records/experiments/01_<name>@<profile>.json``.
EXPERIMENTS = ("wide_likelihood", "background_likelihood", "background_ceiling")

#: The version of the fits, part of the experiments' cache keys and records. With a background:
#: 1 picked the starts on the low-q part of the curve (and missed the best mode of about 1 hard
#: sphere in 5) and took the least-squares scale and background; 2 picks half the starts by the
#: misfit at the best scale and background (``_starts``); 3 also refines the scale and background
#: to the maximum likelihood (``_newton_scale_background``: the least-squares values cost up to
#: ~10 deviance units, more for some shapes than others, so a cylinder with a background came to
#: fit sphere curves better than spheres did); 4 integrates the background over its prior in the
#: marginal likelihoods instead of maximising it (``_background_deviance_t``: maximised, it moved
#: spheres below 1 nm to larger radii on a background and undid the second opinion on clean curves).
FITS_VERSION = 4

#: The relative-error bins (true radius, nm) of the wide-prior experiment.
RADIUS_EDGES_NM = (0.5, 1, 2, 5, 10, 20, 30, 40, 50)

#: Test curves per shape whose likelihood posterior the wide-prior experiment computes (None: all):
#: a cylinder's costs ~20 s on one core (the orientation average of rods up to 200 nm long at every
#: importance draw), a sphere's ~0.3 s, a hard sphere's ~0.6 s.
POSTERIOR_SUBSET = {"sphere": None, "sphere@hardsphere": None, "cylinder": 100}


def _test_curves(profile: str, priors: str) -> dict:
    """Notebook 01's test curves at ``profile`` drawn from ``priors``: {"q_nm", "log_i", "shape",
    "params"} (the dataset as the notebook makes it, split by ``inn_scatterers.split_indices``)."""
    P = s1.profile_sizes(profile)
    data = s1.make_dataset(n_per_shape=P["n_per_shape"], seed=P["seed"], workers=1, engine="torch",
                           priors=priors, progress=False)
    test = s1.split_indices(len(data["shape"]), P["seed"])[2]
    return {"q_nm": data["q_nm"], "log_i": data["log_i"][test], "shape": data["shape"][test],
            "params": data["params"][test]}


def posterior_chunk(config: dict, seed: int, start: int, stop: int) -> dict:
    """``core.datasets.generate`` generator: the likelihood's posterior (``likelihood_posterior``
    for the true shape, with a free scale and background as the scale-free models ask it) of test
    curves ``config["rows"][start:stop]`` of notebook 01's test set (``config``: profile, priors,
    n_draws, rows: indices into the test set). Per curve:
    "median", "lo", "hi" (5 and 95 % quantiles), columns ``PARAM_NAMES`` (NaN where the shape has no
    such parameter), and "ess" (``likelihood_posterior``). One torch thread per worker."""
    import torch

    torch.set_num_threads(1)
    t = _test_curves(config["profile"], config["priors"])
    rows = np.asarray(config["rows"][start:stop], dtype=np.int64)
    y, lab = t["log_i"][rows], t["shape"][rows]
    n, m = stop - start, len(sc.PARAM_NAMES)
    out = {k: np.full((n, m), np.nan) for k in ("median", "lo", "hi")}
    out["ess"] = np.zeros(n)
    for k, shape in enumerate(sc.SHAPES):
        rows = np.flatnonzero(lab == k)
        if rows.size == 0:
            continue
        post = likelihood_posterior(shape, t["q_nm"], y[rows], n_draws=config["n_draws"], seed=seed,
                                    free_scale=True, free_background=True, priors=config["priors"])
        cols = [sc.PARAM_NAMES.index(p) for p in sc.SHAPE_PARAMS[shape]]
        for key, fn in (("median", np.median), ("lo", lambda a, axis: np.quantile(a, 0.05, axis=axis)),
                        ("hi", lambda a, axis: np.quantile(a, 0.95, axis=axis))):
            out[key][np.ix_(rows, cols)] = fn(post["samples"], axis=1)
        out["ess"][rows] = post["ess"]
    return out


def classify_chunk(config: dict, seed: int, start: int, stop: int) -> dict:
    """``core.datasets.generate`` generator: the saved model ``config["model"]`` of ``config["profile"]``
    (with ``second_opinion``) classifies test curves ``start:stop`` of notebook 01's test set drawn
    from ``config["priors"]`` with ``refine_below`` = ``config["refine_below"]``: ``ShapeInverter.
    classify``'s "probabilities", "network", "refined", "in_domain". One torch thread per worker."""
    import torch

    torch.set_num_threads(1)
    t = _test_curves(config["profile"], config["priors"])
    model = s1.load_inverter(config["model"], profile=config["profile"], second_opinion=second_opinion)
    return model.classify(t["log_i"][start:stop], refine_below=config["refine_below"])


def _coverage(lo, hi, truth) -> float:
    ok = np.isfinite(truth)
    return float(np.mean((lo[ok] <= truth[ok]) & (truth[ok] <= hi[ok])))


def _model_file_id(path) -> str:
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(path).with_suffix(".pt").read_bytes()).hexdigest()[:12]


def _subset_ev(ev: dict, lab, rows) -> dict:
    """``learn.inn.evaluate``'s medians and verdicts restricted to the test curves ``rows``."""
    out = {**ev, "predicted": ev["predicted"][rows], "predicted_network": ev["predicted_network"][rows], "median": {}}
    for k, shape in enumerate(sc.SHAPES):
        if shape in ev["median"]:
            out["median"][shape] = ev["median"][shape][np.isin(np.flatnonzero(lab == k), rows)]
    return out


def experiment(name: str, profile: str = "standard", *, workers: int = 2) -> dict:
    """Run one of ``EXPERIMENTS`` at ``profile`` with notebook 01's saved models and test curves;
    returns its results (``main``'s ``experiment`` command archives them). The likelihood's
    posteriors (of the test curves ``POSTERIOR_SUBSET`` picks, at random) are computed in chunks
    through ``core.datasets.generate`` (``workers`` processes, a progress bar, cached: an
    interrupted run resumes); the network's read-back is given on the same curves beside them."""
    import time

    import torch

    from ..core import datasets
    from ..learn import inn

    checks.one_of("name", name, EXPERIMENTS)
    torch.set_num_threads(1)
    P = s1.profile_sizes(profile)
    if name == "background_ceiling":
        return _background_ceiling(profile)
    if name == "background_likelihood":
        effort, factors = "fast", (1e-3, 1e3)
        t = _test_curves(profile, "paper")
        model = s1.load_inverter("scalefree", profile=profile, second_opinion=second_opinion)
        t0 = time.perf_counter()
        check = s1.invariance_check(model, t["log_i"], t["shape"], t["params"], factors=factors,
                                    seed=P["seed"], refine_below=P["refine_below"], effort=effort)
        return {"model": s1.default_model_path(profile, "scalefree").name,
                "model_sha256": _model_file_id(s1.default_model_path(profile, "scalefree")),
                "n_test": int(len(t["shape"])), "refine_below": P["refine_below"], "effort": effort,
                "fits_version": FITS_VERSION, "check": check,
                "seconds": time.perf_counter() - t0}
    t = _test_curves(profile, "wide")
    y, lab, par = t["log_i"], t["shape"], t["params"]
    path = s1.default_model_path(profile, "wide")
    model = s1.load_inverter("wide", profile=profile, second_opinion=second_opinion)
    t0 = time.perf_counter()
    cls = datasets.generate("study1wide_classify", classify_chunk,
                            {"profile": profile, "priors": "wide", "model": "wide", "refine_below": P["refine_below"],
                             "model_sha256": _model_file_id(path), "fits": FITS_VERSION}, len(lab), P["seed"], chunk_size=50, workers=workers)
    ev = inn.evaluate(model, y, lab, par, sc.PARAM_NAMES, n_samples=P["n_samples"], seed=P["seed"], classified=cls)
    t_classify = time.perf_counter() - t0
    rng = np.random.default_rng([int(P["seed"]), 17])
    rows = []
    for k, shape in enumerate(sc.SHAPES):
        idx, cap = np.flatnonzero(lab == k), POSTERIOR_SUBSET.get(shape)
        rows.append(idx if cap is None or cap >= idx.size else np.sort(rng.choice(idx, int(cap), replace=False)))
    rows = np.sort(np.concatenate(rows))
    t0 = time.perf_counter()
    post = datasets.generate("study1wide_posterior", posterior_chunk,
                             {"profile": profile, "priors": "wide", "n_draws": int(P["n_samples"]),
                              "rows": rows.tolist(), "effort": POSTERIOR_EFFORT, "fits": FITS_VERSION}, len(rows), P["seed"],
                             chunk_size=20, workers=workers)
    t_posterior = time.perf_counter() - t0
    lab_s, par_s = lab[rows], par[rows]
    ev_net = _subset_ev(ev, lab, rows)
    trusted = post["ess"] >= inn.MIN_ESS
    ev_lik = {**ev_net, "median": {}}
    coverage = {"network": {}, "likelihood": {}}
    for k, shape in enumerate(sc.SHAPES):
        sel = lab_s == k
        cols = [sc.PARAM_NAMES.index(p) for p in sc.SHAPE_PARAMS[shape]]
        # as ShapeInverter.posterior_samples(..., posterior="likelihood"): the network's where too thin
        ev_lik["median"][shape] = np.where(trusted[sel][:, None], post["median"][sel][:, cols],
                                           ev_net["median"][shape])
        for p in sc.SHAPE_PARAMS[shape]:
            if p.endswith("_nm"):
                j = sc.PARAM_NAMES.index(p)
                coverage["likelihood"][f"{shape}.{p}"] = _coverage(post["lo"][sel, j], post["hi"][sel, j],
                                                                   par_s[sel, j].astype(np.float64))
        coverage["network"][shape] = ev["coverage"][shape]
    by_size = {src: {shape: s1.error_by_size(e, par_s, lab_s, RADIUS_EDGES_NM, shape=shape) for shape in sc.SHAPES}
               for src, e in (("network", ev_net), ("likelihood", ev_lik))}
    # how wide the likelihood's posterior itself is: its sd / R from the 90 % interval (Gaussian reading),
    # per radius bin; a median at the posterior's centre is off by about 0.8 sd on average
    j = sc.PARAM_NAMES.index("radius_nm")
    truth = par_s[:, j].astype(np.float64)
    rel_sd = (post["hi"][:, j] - post["lo"][:, j]) / (2 * 1.6449) / truth
    spread = {shape: [{"lo_nm": float(lo), "hi_nm": float(hi),
                       "rel_sd": float(np.mean(rel_sd[b])) if (b := (lab_s == k) & (truth >= lo) & (truth < hi)).any()
                       else float("nan")}
                      for lo, hi in zip(RADIUS_EDGES_NM[:-1], RADIUS_EDGES_NM[1:])] for k, shape in enumerate(sc.SHAPES)}
    return {"model": path.name, "model_sha256": _model_file_id(path), "fits_version": FITS_VERSION, "n_test": int(len(lab)),
            "refine_below": P["refine_below"], "n_refined": int(ev["refined"].sum()),
            "posterior_subset": POSTERIOR_SUBSET, "n_posterior": int(len(rows)),
            "network_all": s1.accuracy_table(ev, par, lab),
            "network": s1.accuracy_table(ev_net, par_s, lab_s), "likelihood": s1.accuracy_table(ev_lik, par_s, lab_s),
            "coverage90": coverage, "by_size": by_size, "posterior_sd_by_size": spread,
            "ess": {"median": float(np.median(post["ess"])), "min": float(post["ess"].min()),
                    "below_min": int((~trusted).sum()), "min_ess": inn.MIN_ESS},
            "seconds": {"classify": t_classify, "posterior": t_posterior, "workers": workers}}


def _background_ceiling(profile: str) -> dict:
    """The scale-free model's test curves whose network verdict a background changes (right
    without it and wrong with it, or the other way round; the background as in
    ``inn_scatterers.invariance_check``), and the Bayes classifier (``classify``, effort "full",
    free scale and background) on each of them with and without the background."""
    import time

    t = _test_curves(profile, "paper")
    P = s1.profile_sizes(profile)
    model = s1.load_inverter("scalefree", profile=profile)
    y, lab = t["log_i"], t["shape"]
    y_bg = s1.add_background(y, np.random.default_rng([int(P["seed"]), 79]), absent=0.0)[0]
    right = model.shape_probabilities(y).argmax(1) == lab
    right_bg = model.shape_probabilities(y_bg).argmax(1) == lab
    lost, gained = np.flatnonzero(right & ~right_bg), np.flatnonzero(~right & right_bg)
    rows = np.concatenate([lost, gained])
    t0 = time.perf_counter()
    kw = {"effort": "full", "free_scale": True, "free_background": True, "priors": "paper"}
    post = classify(t["q_nm"], y[rows], **kw)["posterior"]
    post_bg = classify(t["q_nm"], y_bg[rows], **kw)["posterior"]
    p_true, p_true_bg = post[np.arange(len(rows)), lab[rows]], post_bg[np.arange(len(rows)), lab[rows]]
    bayes, bayes_bg = post.argmax(1) == lab[rows], post_bg.argmax(1) == lab[rows]
    n_lost = len(lost)
    return {"model": s1.default_model_path(profile, "scalefree").name, "n_test": int(len(lab)),
            "network_right": int(right.sum()), "network_right_background": int(right_bg.sum()),
            "lost": n_lost, "gained": int(len(gained)),
            "bayes_on_lost": {"right_clean": int(bayes[:n_lost].sum()), "right_background": int(bayes_bg[:n_lost].sum()),
                              "p_true_clean": p_true[:n_lost].tolist(), "p_true_background": p_true_bg[:n_lost].tolist()},
            "bayes_on_gained": {"right_clean": int(bayes[n_lost:].sum()), "right_background": int(bayes_bg[n_lost:].sum())},
            "shapes_lost": [sc.SHAPES[k] for k in lab[lost]], "seconds": time.perf_counter() - t0}


def load_experiments(profile: str = "standard") -> dict:
    """The archived ``EXPERIMENTS`` at ``profile``: {name: results, or None when not run}."""
    from ..core import report

    return report.experiment_results(s1.STUDY, EXPERIMENTS, profile)


def main(argv=None):
    """``python -m sashelpers.studies.bayes_shapes``: the check on study 1's test set (the notebook's split).

    Needs the cached study-1 dataset (SASHELPERS_CACHE) and, for --model, a saved ShapeInverter.
    The whole test set (--n-random 1500, effort "full") takes of the order of an hour of one CPU
    core: run it in chunks.

    ``python -m sashelpers.studies.bayes_shapes predict FILE [--model PATH] [--figure OUT.png]``
    instead prints the verdict on one curve file (``inn_scatterers.predict_main`` with this
    module's ``second_opinion``) and returns its exit status.

    ``python -m sashelpers.studies.bayes_shapes experiment NAME [--profile P] [--workers N]`` runs
    and archives one of ``EXPERIMENTS`` (``experiment``).
    """
    import argparse
    import sys
    import time

    import torch

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["experiment"]:
        from ..core import report

        return report.experiment_cli(s1.STUDY, "sashelpers.studies.bayes_shapes experiment", EXPERIMENTS, experiment,
                                     argv[1:], doc="Study 1's archived likelihood experiments (EXPERIMENTS)",
                                     options=(("--workers", {"type": int, "default": 2}),))
    if argv[:1] == ["predict"]:
        return s1.predict_main(argv[1:], second_opinion=second_opinion, posterior_refiner=likelihood_posterior,
                               prog="python -m sashelpers.studies.bayes_shapes predict")
    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0],
                                 epilog="python -m sashelpers.studies.bayes_shapes predict FILE: study 1's verdict "
                                        "on one curve file instead (predict --help)")
    ap.add_argument("--n-random", type=int, default=200, help="random test curves to check")
    ap.add_argument("--model", default=None, help="saved ShapeInverter (.pt): its errors are checked too")
    ap.add_argument("--n-per-shape", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--effort", default="full", choices=sorted(EFFORT))
    ap.add_argument("--out", default=None, help="save the result arrays to this .npz")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = s1.make_dataset(n_per_shape=args.n_per_shape, seed=args.seed, workers=1, engine="torch", progress=False)
    q, log_i, labels = data["q_nm"], data["log_i"], data["shape"]
    order = np.random.default_rng(args.seed).permutation(len(labels))
    test = order[: len(order) // 10]
    include = None
    if args.model:
        from ..learn.inn import ShapeInverter

        predicted = ShapeInverter.load(args.model).shape_probabilities(log_i[test]).argmax(1)
        include = np.flatnonzero(predicted != labels[test])
    t0, c0 = time.perf_counter(), time.process_time()
    res = check_subset(q, log_i[test], labels[test], n_random=min(args.n_random, len(test)), include=include,
                       seed=args.seed, effort=args.effort)
    print(markdown_report(res))
    print(f"{len(res['index'])} curves in {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU")
    if args.out:
        np.savez(args.out, **{k: v for k, v in res.items() if isinstance(v, np.ndarray)})
    return res


if __name__ == "__main__":
    _result = main()
    if isinstance(_result, int):
        raise SystemExit(_result)

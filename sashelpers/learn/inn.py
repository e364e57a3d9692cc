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
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


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



class CurveFeatures:
    """Standardised log-intensity features with training-set statistics, and a domain check.

    The domain score of a curve is the distance (in standardised features) to its k-th nearest
    neighbour among ``n_reference`` training curves. Its threshold is the ``quantile`` of the
    same score for other training curves, so a curve scoring above it is further from the
    training set than all but a fraction 1 - quantile of the training curves themselves. (A
    Mahalanobis distance in principal components failed here: the training curves are far
    from Gaussian, and a sphere of 8 nm scored inside it.)
    """

    def __init__(self, log_i: np.ndarray, *, n_reference: int = 4000, k: int = 5, quantile: float = 0.999,
                 seed: int = 0):
        log_i = np.asarray(log_i, dtype=np.float64)
        self.mean = log_i.mean(axis=0)
        self.std = log_i.std(axis=0) + 1e-6
        self.k = int(k)
        order = np.random.default_rng(seed).permutation(len(log_i))
        n_ref = min(n_reference, len(log_i) // 2)
        self.reference = self(log_i[order[:n_ref]])
        held_out = order[n_ref:n_ref + 2000]
        self.threshold = float(np.quantile(self.domain_score(log_i[held_out]), quantile))

    def __call__(self, log_i) -> np.ndarray:
        return ((np.asarray(log_i, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def domain_score(self, log_i) -> np.ndarray:
        z = self(np.atleast_2d(log_i)).astype(np.float64)
        ref = self.reference.astype(np.float64)
        d2 = (z**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * z @ ref.T
        return np.sqrt(np.maximum(np.partition(d2, self.k - 1, axis=1)[:, self.k - 1], 0))

    def state(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "k": self.k, "threshold": self.threshold,
                "n_reference": len(self.reference)}

    @classmethod
    def from_state(cls, state: dict, reference: np.ndarray) -> "CurveFeatures":
        obj = cls.__new__(cls)
        obj.mean, obj.std = np.asarray(state["mean"]), np.asarray(state["std"])
        obj.k, obj.threshold, obj.reference = int(state["k"]), float(state["threshold"]), np.asarray(reference)
        return obj


class _Buffer(nn.Module):
    """Holds an array in a state_dict (saved with weights_only=True, no pickle)."""

    def __init__(self, array: np.ndarray):
        super().__init__()
        self.register_buffer("value", torch.as_tensor(np.asarray(array, dtype=np.float32)))


class ParamTransform:
    """Physical parameters <-> standardised network coordinates (log for radii and lengths).

    Discrete parameters (``dequantize``: name -> spacing) get uniform jitter of one spacing
    during training so that the flow models a density rather than spikes.
    """

    def __init__(self, names, values: np.ndarray, dequantize: dict | None = None):
        self.names = tuple(names)
        self.dequantize = dict(dequantize or {})
        u = self._forward_raw(np.asarray(values, dtype=np.float64))
        self.mean, self.std = u.mean(axis=0), u.std(axis=0) + 1e-9

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
        return {"names": list(self.names), "dequantize": self.dequantize,
                "mean": self.mean.tolist(), "std": self.std.tolist()}


class ShapeInverter:
    """Shape classifier + one conditional INN per shape, on standardised log I over a fixed q grid.

    ``predict(q_nm, intensity)`` returns shape probabilities and posterior samples of every
    parameter of the most likely shape, with a domain score that flags curves unlike the
    training set.
    """

    def __init__(self, q_nm, shapes, shape_params: dict, features: CurveFeatures,
                 transforms: dict, *, hidden: int = 128, n_blocks: int = 6, seed: int = 0,
                 second_opinion=None):
        self.second_opinion = second_opinion
        self.q_nm = np.asarray(q_nm, dtype=np.float64)
        self.shapes = tuple(shapes)
        self.shape_params = {s: tuple(shape_params[s]) for s in self.shapes}
        self.features, self.transforms = features, transforms
        self.arch = {"hidden": hidden, "n_blocks": n_blocks, "seed": seed}
        torch.manual_seed(seed)
        n_q = len(self.q_nm)
        self.net = nn.ModuleDict({"classifier": mlp(n_q, len(self.shapes), hidden=2 * hidden, depth=2, dropout=0.1),
                                  "domain_reference": _Buffer(features.reference)})
        for k, s in enumerate(self.shapes):
            self.net[f"inn{k}"] = ConditionalINN(len(self.shape_params[s]), n_q, n_blocks=n_blocks,
                                                 hidden=hidden, seed=seed + k)

    # -- construction and training -------------------------------------------------------------
    @classmethod
    def from_training_data(cls, q_nm, log_i, shape_labels, params, shapes, shape_params: dict,
                           param_names, dequantize: dict | None = None, **kwargs) -> "ShapeInverter":
        """Fit the feature and parameter standardisation on training data and build the networks."""
        features = CurveFeatures(log_i)
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
            if extra_x.ndim != 2 or extra_x.shape[1:] != x.shape[1:] or extra_y.shape != (len(extra_x),):
                raise ValueError(f"classifier_extra must be (log_i (m, {x.shape[1]}), labels (m,)); got "
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

    def classify(self, log_i, *, refine_below: float | None = 0.99, effort: str = "fast") -> dict:
        """Shape probabilities from the network; where its top probability is below
        ``refine_below``, replaced by the posterior of the model's ``second_opinion`` (for study
        1, the likelihood classifier ``studies.bayes_shapes.second_opinion``). Without a second
        opinion the network decides every curve.

        Returns {"probabilities": (n, n_shapes), "network": (n, n_shapes) the network's own,
        "refined": (n,) bool, the curves decided by the second opinion}. refine_below=None: network
        only; a value above 1 refines every curve. Study 1's likelihood assumes its noise model
        (I * N(1, 0.1) per point, no background) and priors: for curves that do not follow them,
        pass None.
        """
        probs = self.shape_probabilities(log_i)
        refined = np.zeros(len(probs), dtype=bool)
        if refine_below is not None:
            if not refine_below > 0:
                raise ValueError(f"refine_below={refine_below!r} must be > 0 (or None)")
            if self.second_opinion is not None:
                refined = probs.max(axis=1) < refine_below
        out = probs.copy()
        if refined.any():
            out[refined] = self.second_opinion(self.q_nm, np.atleast_2d(log_i)[refined], self.shapes, effort)
        return {"probabilities": out, "network": probs, "refined": refined}

    @torch.no_grad()
    def posterior_samples(self, log_i, shape: str, n_samples: int = 500, seed: int = 0) -> np.ndarray:
        """Samples (n_curves, n_samples, n_params) of ``shape``'s parameters in physical units."""
        k = self.shapes.index(shape)
        y = torch.from_numpy(self.features(np.atleast_2d(log_i)))
        u = self.net[f"inn{k}"].sample(y, n_samples, torch.Generator().manual_seed(seed)).numpy()
        return self.transforms[shape].inverse(u)

    def prepare_curve(self, q_nm, intensity) -> np.ndarray:
        """Validate a measured curve and return log I on the model's q grid (interpolated in log-log)."""
        from ..measured.io import validate_curve

        q, i = np.asarray(q_nm, dtype=np.float64), np.asarray(intensity, dtype=np.float64)
        validate_curve(q, i, name="curve", positive_intensity=True)
        lo, hi = self.q_nm[0], self.q_nm[-1]
        if q[0] > lo * (1 + 1e-9) or q[-1] < hi * (1 - 1e-9):
            raise ValueError(f"the curve covers q in [{q[0]:.4g}, {q[-1]:.4g}] nm^-1 but the model needs "
                             f"[{lo:.4g}, {hi:.4g}] nm^-1")
        if len(q) == len(self.q_nm) and np.allclose(q, self.q_nm, rtol=1e-9):
            return np.log(i)
        return np.interp(np.log(self.q_nm), np.log(q), np.log(i))

    def predict(self, q_nm, intensity, n_samples: int = 500, seed: int = 0, *,
                refine_below: float | None = 0.99) -> dict:
        """Shape probabilities and posterior samples for one measured curve (I in cm^-1).

        If the network's top shape probability is below ``refine_below``, the shape is decided
        by the model's second opinion (``classify``); "shape_source" says which.
        """
        import warnings

        log_i = self.prepare_curve(q_nm, intensity)
        cls = self.classify(log_i, refine_below=refine_below)
        probs = cls["probabilities"][0]
        shape = self.shapes[int(np.argmax(probs))]
        samples = self.posterior_samples(log_i, shape, n_samples, seed)[0]
        score = float(self.features.domain_score(log_i)[0])
        in_domain = score <= self.features.threshold
        if not in_domain:
            warnings.warn(f"this curve lies outside the training domain (score {score:.1f} > "
                          f"{self.features.threshold:.1f}): the prediction is an extrapolation", stacklevel=2)
        return {"shape": shape, "shape_probabilities": dict(zip(self.shapes, probs.tolist())),
                "shape_source": "second opinion" if cls["refined"][0] else "network",
                "network_probabilities": dict(zip(self.shapes, cls["network"][0].tolist())),
                "samples": {p: samples[:, j] for j, p in enumerate(self.shape_params[shape])},
                "domain_score": score, "in_domain": in_domain}

    # -- persistence -----------------------------------------------------------------------------
    def card(self) -> dict:
        return {"kind": "ShapeInverter", "q_nm": self.q_nm.tolist(), "shapes": list(self.shapes),
                "shape_params": {s: list(p) for s, p in self.shape_params.items()}, "arch": self.arch,
                "features": self.features.state(), "transforms": {s: t.state() for s, t in self.transforms.items()}}

    def save(self, path, extra: dict | None = None):
        from .training import save_model

        return save_model(path, self.net, {**self.card(), **(extra or {})})

    @classmethod
    def load(cls, path, *, second_opinion=None) -> "ShapeInverter":
        import json
        from pathlib import Path

        from .training import load_model

        card = json.loads(Path(path).with_suffix(".json").read_text())
        shape = (card["features"]["n_reference"], len(card["q_nm"]))
        features = CurveFeatures.from_state(card["features"], np.zeros(shape, np.float32))
        transforms = {}
        for s, st in card["transforms"].items():
            t = ParamTransform.__new__(ParamTransform)
            t.names, t.dequantize = tuple(st["names"]), st["dequantize"]
            t.mean, t.std = np.asarray(st["mean"]), np.asarray(st["std"])
            transforms[s] = t
        obj = cls(card["q_nm"], card["shapes"], card["shape_params"], features, transforms, **card["arch"],
                  second_opinion=second_opinion)
        load_model(path, obj.net)
        obj.features.reference = obj.net["domain_reference"].value.numpy()
        return obj


def _cross_entropy(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


# --- evaluation ------------------------------------------------------------------------------------

def _samples_per_shape(model: ShapeInverter, log_i, labels, params, param_names, n_samples: int, seed: int):
    """For each shape present in ``labels``: (shape, posterior samples of its curves, their true parameters)."""
    for k, s in enumerate(model.shapes):
        sel = labels == k
        if sel.any():
            cols = [list(param_names).index(p) for p in model.shape_params[s]]
            yield s, model.posterior_samples(log_i[sel], s, n_samples, seed), params[sel][:, cols]


def evaluate(model: ShapeInverter, log_i, shape_labels, params, param_names, *, n_samples: int = 300,
             level: float = 0.9, seed: int = 0, refine_below: float | None = None) -> dict:
    """Shape accuracy and confusion matrix; per shape and parameter the MAE of the posterior
    median and the coverage of the central ``level`` interval (posterior of the TRUE shape, so
    that regression quality is measured separately from classification).

    With ``refine_below`` the shapes come from ``ShapeInverter.classify`` (the second opinion decides
    where the network is unsure); "shape_accuracy_network" and "predicted_network" keep the
    network's own verdicts (and "confusion_network" its confusion matrix), and "refined" marks
    the curves the second opinion decided."""
    labels = np.asarray(shape_labels)
    cls = model.classify(log_i, refine_below=refine_below)
    pred, pred_net = cls["probabilities"].argmax(axis=1), cls["network"].argmax(axis=1)
    k = len(model.shapes)
    confusion, confusion_net = np.zeros((k, k), dtype=int), np.zeros((k, k), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    np.add.at(confusion_net, (labels, pred_net), 1)
    out = {"shape_accuracy": float((pred == labels).mean()), "confusion": confusion.tolist(), "predicted": pred,
           "shape_accuracy_network": float((pred_net == labels).mean()), "predicted_network": pred_net,
           "confusion_network": confusion_net.tolist(),
           "refined": cls["refined"], "mae": {}, "coverage": {}, "median": {}, "samples_sd": {}}
    for s, samples, truth in _samples_per_shape(model, log_i, labels, params, param_names, n_samples, seed):
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

"""Gradient-boosted regression of parameters from curves (XGBoost), one model per output.

As in study 2 (Röding et al. 2022): one XGBoost regressor per output parameter, trained with
squared error and early stopping on a validation set. Inputs are feature vectors (for SAXS:
log10 of the normalised curve), standardised per feature with the *training* set's mean and
standard deviation; the statistics travel with the model.

Per-prediction uncertainty (beyond the paper): a second booster per output trained with
XGBoost's quantile loss (``reg:quantileerror``) for the 5 % and 95 % quantiles at once. We use
quantile regression rather than a bootstrap ensemble because here the spread of the answer comes
mostly from the data itself (photon noise and the randomness of one finite structure), which
quantiles estimate directly and which an ensemble of point models does not see (an ensemble
measures disagreement between models, i.e. lack of training data); it also costs one extra model
per output instead of K. The check is empirical coverage on the test set: the fraction of true
values inside [q05, q95] should be near 0.90. Quantile boosters fitted to a few thousand curves
are over-confident (they fit the training curves too well), so by default the intervals are then
*conformalised* on the validation set (conformalised quantile regression, Romano, Patterson &
Candès 2019): each interval is widened (or narrowed) by the finite-sample quantile of the
validation scores max(lo - y, y - hi). The validation set also served for early stopping, so
the guarantee is approximate; the test-set coverage is the honest check.

The device is chosen explicitly (``backend.xgboost_device()``), because XGBoost silently falls
back to the CPU. Models are saved in XGBoost's JSON format next to a JSON model card; no pickles.

Training on a Dask cluster (``fit(..., client=...)``): the standardised training and validation
rows are split into one contiguous block per worker, scattered to the workers (the data go
from this process to the workers once, not through the scheduler's task graph) and wrapped as
row-chunked dask arrays; each booster is then trained by ``xgboost.dask.train`` on
``DaskQuantileDMatrix`` objects of them, with the same parameters, number of rounds and early
stopping on the validation set as the local path. Every worker builds histograms of its own rows and
XGBoost's collective (allreduce) sums them, so all workers grow the same trees; the result is a
plain ``xgboost.Booster``, stored like a local one, so prediction, ``save`` and ``load`` do not
change. What differs from the local path, and why:

- The boosters of the outputs are trained one after another, each on all workers:
  ``xgboost.dask`` holds a lock on the workers for the duration of a training, so trainings
  on the same workers cannot overlap (the local path trains up to ``n_jobs`` at once).
- Threads: each worker uses its own thread count (``nthread`` is not forced to 1 as it is
  locally; size the workers with ``dask worker --nthreads``).
- Device: the workers train on the GPU only when the caller asks for it (``device="cuda"``,
  or ``"device": "cuda"`` in ``params``); otherwise on their CPUs, whatever this process has,
  since this machine's GPU says nothing about theirs. The returned boosters predict here on
  ``self.device``. One GPU per worker (``dask_cuda``): two workers may not share a GPU.
- The models are equivalent, not identical, to local ones: the histogram bins come from a
  merged sketch of the workers' rows and ``subsample`` draws rows per worker.
- The quantile boosters (``reg:quantileerror`` with two levels at once) and early stopping are
  supported by ``xgboost.dask`` and used as they are; ``evals_result`` is not (the evaluation
  history comes back with the booster instead), and ``xgboost.dask`` needs ``pandas`` and
  ``pyarrow`` (it imports ``dask.dataframe``), imported only on this path.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..core import backend
from ..core import checks

QUANTILES = (0.05, 0.95)
_BOOST_KEYS = {"n_estimators", "early_stopping_rounds"}
DEFAULT_PARAMS = {  # laptop-scale settings; study 2 sets its own per profile
    "learning_rate": 0.05, "max_depth": 8, "min_child_weight": 3, "subsample": 0.6,
    "colsample_bytree": 0.3, "reg_lambda": 0.2, "max_bin": 256,
    "n_estimators": 2000, "early_stopping_rounds": 100,
}


# --- metrics ------------------------------------------------------------------------------------

def _pair(y_true, y_pred):
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and of equal length, got {t.size} and {p.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
        raise ValueError("y_true and y_pred must be finite")
    return t, p


def mape(y_true, y_pred) -> float:
    """Mean absolute percentage error, ``100 mean(|pred - true| / |true|)`` (%)."""
    t, p = _pair(y_true, y_pred)
    if np.any(t == 0):
        raise ValueError("y_true contains zeros: MAPE is undefined")
    return float(100 * np.mean(np.abs(p - t) / np.abs(t)))


def mse(y_true, y_pred) -> float:
    """Mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean((p - t) ** 2))


def coverage(y_true, lower, upper) -> float:
    """Fraction of true values inside [lower, upper]."""
    t, lo = _pair(y_true, lower)
    _, hi = _pair(y_true, upper)
    return float(np.mean((t >= lo) & (t <= hi)))


def split_indices(n: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, slice]:
    """Contiguous train/val/test slices of n iid samples (sizes floor(f n); test takes the rest)."""
    if int(n) != n or n < 3:
        raise ValueError(f"n={n!r} must be an integer >= 3")
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f <= 0) or abs(f.sum() - 1) > 1e-9:
        raise ValueError(f"fractions={fractions!r} must be three positive numbers summing to 1")
    n_tr, n_va = int(f[0] * n), int(f[1] * n)
    if min(n_tr, n_va, n - n_tr - n_va) < 1:
        raise ValueError(f"n={n} is too small for fractions={fractions!r}")
    return {"train": slice(0, n_tr), "val": slice(n_tr, n_tr + n_va), "test": slice(n_tr + n_va, n)}


# --- the regressor ------------------------------------------------------------------------------

def _check_X(X, n_features=None, name="X") -> np.ndarray:
    X = checks.array(f"{name} (samples x features)", X, ndim=2, dtype=np.float32)
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features; the model was trained on {n_features}")
    return X


def _check_Y(Y, outputs, n_rows, name="Y") -> np.ndarray:
    if isinstance(Y, dict):
        missing = [o for o in outputs if o not in Y]
        if missing:
            raise ValueError(f"{name} lacks outputs {missing}")
        Y = np.column_stack([np.asarray(Y[o], dtype=float) for o in outputs])
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape != (n_rows, len(outputs)):
        raise ValueError(f"{name} must have shape ({n_rows}, {len(outputs)}), got {Y.shape}")
    return checks.array(name, Y)


def _check_client(client) -> list[str]:
    """The addresses of ``client``'s workers (sorted); ValueError unless it is a synchronous
    ``distributed.Client`` connected to a scheduler with at least one worker."""
    import distributed

    if not isinstance(client, distributed.Client):
        raise ValueError(f"client={client!r} must be a distributed.Client (or None to train here)")
    if client.asynchronous:
        raise ValueError("client is asynchronous; fit() needs a synchronous distributed.Client")
    if client.status != "running":
        raise ValueError(f"client is {client.status!r}, not running")
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise ValueError(f"the scheduler at {client.scheduler.address} has no workers")
    return workers


def _import_xgboost_dask():
    try:
        import xgboost.dask as xgb_dask
    except ImportError as exc:  # it imports dask.dataframe: pandas and pyarrow
        raise ImportError(f"training on Dask needs xgboost.dask, which failed to import ({exc}); "
                          "install dask[dataframe] (pandas and pyarrow)") from exc
    return xgb_dask


def _scatter_rows(client, workers: list[str], arrays: list, held: list) -> list:
    """Row-chunked dask arrays of ``arrays`` (same number of rows): one contiguous block
    of rows per worker (fewer blocks when there are fewer rows than workers), the blocks of all
    arrays for the same rows sent to the same worker. The futures are appended to ``held``."""
    import dask.array as da

    n = len(arrays[0])
    bounds = np.linspace(0, n, min(len(workers), n) + 1).astype(int)
    parts: list[list] = [[] for _ in arrays]
    for w, a, b in zip(workers, bounds[:-1], bounds[1:]):
        for part, arr in zip(parts, arrays):
            block = np.ascontiguousarray(arr[a:b])
            future = client.scatter(block, workers=[w], hash=False)
            held.append(future)
            part.append(da.from_delayed(future, shape=block.shape, dtype=block.dtype))
    return [da.concatenate(part, axis=0) for part in parts]


class BoostedRegressor:
    """One XGBoost model per output (squared error), plus optional 5/95 % quantile models.

    params: XGBoost hyperparameters (sklearn-style names) plus ``n_estimators`` (most trees)
    and ``early_stopping_rounds``. ``device`` defaults to ``params["device"]`` if present, else
    ``backend.xgboost_device()``; on a Dask cluster (``fit(..., client=...)``) the workers use
    the GPU only when ``device`` or ``params`` ask for it (see the module docstring).
    """

    def __init__(self, outputs, params: dict | None = None, *, quantiles=QUANTILES, device: str | None = None,
                 seed: int = 0, n_jobs: int | None = None, conformal: bool = True):
        outputs = [str(o) for o in outputs]
        if not outputs or len(set(outputs)) != len(outputs):
            raise ValueError(f"outputs={outputs!r} must be a non-empty list of distinct names")
        params = {**DEFAULT_PARAMS, **(params or {})}
        if device is None:  # a device in params counts as asked for; it is kept as self.device
            device = params.pop("device", None)
        else:
            params.pop("device", None)
        self.device_requested = device is not None
        for k in ("learning_rate", "subsample", "colsample_bytree"):
            if not 0 < float(params[k]) <= 1:
                raise ValueError(f"params[{k!r}]={params[k]!r} must lie in (0, 1]")
        for k in ("n_estimators", "early_stopping_rounds", "max_depth", "max_bin"):
            if int(params[k]) != params[k] or params[k] < 1:
                raise ValueError(f"params[{k!r}]={params[k]!r} must be a positive integer")
        if quantiles is not None:
            quantiles = tuple(float(q) for q in quantiles)
            if len(quantiles) != 2 or not 0 < quantiles[0] < quantiles[1] < 1:
                raise ValueError(f"quantiles={quantiles!r} must be two levels 0 < lo < hi < 1")
        device = backend.xgboost_device() if device is None else device
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device={device!r}; allowed: cpu, cuda")
        if n_jobs is not None and (int(n_jobs) != n_jobs or n_jobs < 1):
            raise ValueError(f"n_jobs={n_jobs!r} must be a positive integer (boosters trained at once)")
        self.outputs, self.params, self.quantiles = outputs, params, quantiles
        self.n_jobs = int(n_jobs) if n_jobs is not None else max(1, os.cpu_count() or 1)
        self.device, self.seed = device, int(seed)
        self.conformal = bool(conformal)
        self.boosters: dict = {}
        self.quantile_boosters: dict = {}
        self.interval_offset: dict = {}
        self.x_mean = self.x_std = None
        self.history: dict = {}

    # -- training --
    def _xgb_params(self, objective: str, device: str | None = None, **extra) -> dict:
        """XGBoost's parameters for one booster. ``device=None``: this process's device with one
        thread per booster on the CPU; a device given (the Dask path): no thread count, so that
        each Dask worker uses its own."""
        p = {k: v for k, v in self.params.items() if k not in _BOOST_KEYS}
        p["eta"] = p.pop("learning_rate")
        p["lambda"] = p.pop("reg_lambda")
        p.update(objective=objective, tree_method="hist", device=device or self.device, seed=self.seed,
                 verbosity=0, **extra)
        if device is None and self.device == "cpu":
            p["nthread"] = 1
        return p

    @property
    def worker_device(self) -> str:
        """The device the Dask workers train on: ``self.device`` when the caller asked for one
        (the ``device`` argument or ``params["device"]``), else "cpu"."""
        return self.device if self.device_requested else "cpu"

    def _standardise(self, X):
        return (X - self.x_mean) / self.x_std

    def _dmatrix(self, X, y=None, ref=None):
        import xgboost as xgb

        return xgb.QuantileDMatrix(X, label=y, max_bin=int(self.params["max_bin"]), ref=ref, nthread=1)

    def _train(self, params, dtrain, dval, metric: str):
        import xgboost as xgb

        evals_result: dict = {}
        booster = xgb.train({**params, "eval_metric": metric}, dtrain,
                            num_boost_round=int(self.params["n_estimators"]),
                            evals=[(dval, "val")], evals_result=evals_result,
                            early_stopping_rounds=int(self.params["early_stopping_rounds"]),
                            verbose_eval=False)
        return booster, evals_result["val"][metric]

    def _run_jobs(self, jobs):
        """Train boosters. On the CPU, one thread per booster and up to ``n_jobs`` boosters at once
        (xgb.train releases the GIL): on a small, shared machine OpenMP's multi-threaded tree
        building collapses under oversubscription (measured 50x slower with 2 threads on 2 busy
        cores), while one thread per model stays fast and still uses every core."""
        run = lambda job: self._train(job[2], job[3], job[4], job[5])  # noqa: E731
        if self.device != "cpu" or self.n_jobs == 1 or len(jobs) == 1:
            return [run(j) for j in jobs]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
            return list(pool.map(run, jobs))

    def fit(self, X, Y, X_val, Y_val, *, client=None) -> "BoostedRegressor":
        """Train on (X, Y), early-stopping on (X_val, Y_val).

        Parameters
        ----------
        X, X_val : array (samples, features)
            Training and validation features.
        Y, Y_val : array (samples, outputs) or dict
            Labels, columns in the order of ``outputs`` (or a dict output name -> array).
        client : distributed.Client, optional
            Train each booster with ``xgboost.dask.train`` on this client's workers (see the
            module docstring); None (the default) trains in this process.

        Returns
        -------
        BoostedRegressor
            self, with ``boosters`` (and ``quantile_boosters``) filled and, with quantiles and
            ``conformal``, the intervals calibrated on the validation set. ``history["engine"]``
            is "local" or "dask" (then ``history["dask"]`` says where it ran).

        Raises
        ------
        ValueError
            For inputs of the wrong shape or non-finite values, fewer than 2 training samples,
            or a ``client`` that is not a synchronous ``distributed.Client`` with workers.
        """
        X = _check_X(X)
        X_val = _check_X(X_val, X.shape[1], "X_val")
        Y = _check_Y(Y, self.outputs, len(X))
        Y_val = _check_Y(Y_val, self.outputs, len(X_val), "Y_val")
        if len(X) < 2:
            raise ValueError("X needs at least 2 training samples")
        workers = _check_client(client) if client is not None else None
        self.x_mean = X.mean(axis=0)
        self.x_std = X.std(axis=0) + np.float32(1e-6)
        Xs, Xvs = self._standardise(X), self._standardise(X_val)
        t0 = time.perf_counter()
        if client is not None:
            self._fit_dask(client, workers, Xs, Y, Xvs, Y_val)
        else:
            self._fit_local(Xs, Y, Xvs, Y_val)
        if self.quantile_boosters and self.conformal:
            self.calibrate_intervals(X_val, Y_val)
        self.history["fit_seconds"] = time.perf_counter() - t0
        self.history["n_train"], self.history["n_val"] = len(X), len(X_val)
        return self

    def _store(self, out: str, kind: str, booster, curve) -> None:
        h = self.history.setdefault(out, {})
        if kind == "point":
            self.boosters[out] = booster
            h.update(best_iteration=int(booster.best_iteration), val_rmse=float(min(curve)))
        else:
            self.quantile_boosters[out] = booster
            h["quantile_best_iteration"] = int(booster.best_iteration)

    def _fit_local(self, Xs, Y, Xvs, Y_val) -> None:
        jobs = []
        for j, out in enumerate(self.outputs):
            dtr = self._dmatrix(Xs, Y[:, j])
            dva = self._dmatrix(Xvs, Y_val[:, j], ref=dtr)
            jobs.append((out, "point", self._xgb_params("reg:squarederror"), dtr, dva, "rmse"))
            if self.quantiles is not None:  # own matrices: boosters may train concurrently
                qp = self._xgb_params("reg:quantileerror", quantile_alpha=np.array(self.quantiles))
                dtr_q = self._dmatrix(Xs, Y[:, j])
                jobs.append((out, "quantile", qp, dtr_q, self._dmatrix(Xvs, Y_val[:, j], ref=dtr_q), "quantile"))
        results = self._run_jobs(jobs)
        for (out, kind, *_), (booster, curve) in zip(jobs, results):
            self._store(out, kind, booster, curve)
        self.history["engine"] = "local"
        self.history.pop("dask", None)

    def _fit_dask(self, client, workers: list[str], Xs, Y, Xvs, Y_val) -> None:
        """The boosters trained with ``xgboost.dask.train``, one after another, on row blocks of
        the data scattered over ``workers``."""
        xgb_dask = _import_xgboost_dask()
        held = []  # the scattered blocks' futures: kept alive until every booster is trained
        dX, dY = _scatter_rows(client, workers, [Xs, Y.astype(np.float32)], held)
        dXv, dYv = _scatter_rows(client, workers, [Xvs, Y_val.astype(np.float32)], held)
        device = self.worker_device
        max_bin = int(self.params["max_bin"])
        kinds = [("point", self._xgb_params("reg:squarederror", device), "rmse")]
        if self.quantiles is not None:
            kinds.append(("quantile", self._xgb_params("reg:quantileerror", device,
                                                       quantile_alpha=np.array(self.quantiles)), "quantile"))
        # xgboost.dask looks up "the" client even when given one (distributed.get_client()): make
        # this one current for the duration, so a client that is not the default one works too
        with client.as_current():
            for j, out in enumerate(self.outputs):
                # one pair of matrices per output serves both boosters: xgboost.dask trains one at
                # a time on the same workers, and each training builds its worker-side matrices anew
                dtr = xgb_dask.DaskQuantileDMatrix(client, dX, dY[:, j], max_bin=max_bin)
                dva = xgb_dask.DaskQuantileDMatrix(client, dXv, dYv[:, j], max_bin=max_bin, ref=dtr)
                for kind, params, metric in kinds:
                    res = xgb_dask.train(client, {**params, "eval_metric": metric}, dtr,
                                         num_boost_round=int(self.params["n_estimators"]),
                                         evals=[(dva, "val")],
                                         early_stopping_rounds=int(self.params["early_stopping_rounds"]),
                                         verbose_eval=False)
                    booster = res["booster"]
                    # predict here as a local booster does (this process's device, one thread)
                    booster.set_param({"device": self.device, "nthread": 1})
                    self._store(out, kind, booster, res["history"]["val"][metric])
        del held
        self.history["engine"] = "dask"
        self.history["dask"] = {"scheduler": str(client.scheduler.address), "device": device,
                                "workers": workers[:min(len(workers), len(Xs))]}

    # -- prediction --
    def _check_fitted(self):
        if not self.boosters:
            raise RuntimeError("the model is not trained: call fit() or load() first")

    def _predict_booster(self, booster, X):
        rng = (0, booster.best_iteration + 1) if hasattr(booster, "best_iteration") else (0, 0)
        return booster.inplace_predict(X, iteration_range=rng)

    def predict(self, X) -> dict[str, np.ndarray]:
        """Point predictions: output name -> array."""
        self._check_fitted()
        Xs = self._standardise(_check_X(X, len(self.x_mean)))
        return {o: self._predict_booster(self.boosters[o], Xs).astype(float) for o in self.outputs}

    def _raw_interval(self, X) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self._check_fitted()
        if not self.quantile_boosters:
            raise RuntimeError("this model was trained without quantiles (quantiles=None)")
        Xs = self._standardise(_check_X(X, len(self.x_mean)))
        out = {}
        for o in self.outputs:
            q = np.sort(self._predict_booster(self.quantile_boosters[o], Xs).reshape(len(Xs), -1), axis=1)
            out[o] = (q[:, 0].astype(float), q[:, -1].astype(float))
        return out

    def calibrate_intervals(self, X_cal, Y_cal) -> dict:
        """Conformalise the quantile intervals on a calibration set (CQR): offset per output =
        the ceil((n+1)(1-a))/n quantile of max(lo - y, y - hi), a = 1 - (q_hi - q_lo)."""
        Y_cal = _check_Y(Y_cal, self.outputs, len(X_cal), "Y_cal")
        raw = self._raw_interval(X_cal)
        n = len(Y_cal)
        level = min(1.0, math.ceil((n + 1) * (self.quantiles[1] - self.quantiles[0])) / n)
        for j, o in enumerate(self.outputs):
            lo, hi = raw[o]
            scores = np.maximum(lo - Y_cal[:, j], Y_cal[:, j] - hi)
            self.interval_offset[o] = float(np.quantile(scores, level, method="higher"))
        return dict(self.interval_offset)

    def predict_interval(self, X) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(lower, upper) per output: the quantile models' interval, conformalised when calibrated."""
        raw = self._raw_interval(X)
        out = {}
        for o, (lo, hi) in raw.items():
            d = self.interval_offset.get(o, 0.0)
            lo, hi = lo - d, hi + d
            out[o] = (np.minimum(lo, hi), np.maximum(lo, hi))
        return out

    def evaluate(self, splits: dict) -> dict:
        """splits: name -> (X, Y). Returns {'mape': {split: {out: %}}, 'mse': ..., 'coverage': ...}."""
        res: dict = {"mape": {}, "mse": {}}
        if self.quantile_boosters:
            res["coverage"] = {}
        for split, (X, Y) in splits.items():
            Y = _check_Y(Y, self.outputs, len(X))
            pred = self.predict(X)
            res["mape"][split] = {o: mape(Y[:, j], pred[o]) for j, o in enumerate(self.outputs)}
            res["mse"][split] = {o: mse(Y[:, j], pred[o]) for j, o in enumerate(self.outputs)}
            if self.quantile_boosters:
                iv = self.predict_interval(X)
                res["coverage"][split] = {o: coverage(Y[:, j], *iv[o]) for j, o in enumerate(self.outputs)}
        return res

    # -- persistence --
    def card(self, **extra) -> dict:
        """The JSON model card: outputs, hyperparameters, device, standardisation, history, versions."""
        from ..core import report

        return {"kind": "sashelpers.regress.BoostedRegressor", "outputs": self.outputs, "params": self.params,
                "quantiles": self.quantiles, "device": self.device, "seed": self.seed,
                "conformal": self.conformal, "interval_offset": self.interval_offset,
                "x_mean": None if self.x_mean is None else self.x_mean.tolist(),
                "x_std": None if self.x_std is None else self.x_std.tolist(),
                "history": self.history, "versions": report.versions(), **extra}

    def save(self, folder, **card_extra) -> Path:
        """Write ``<output>.json`` (and ``<output>.quantiles.json``) boosters and ``card.json``."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for o in self.outputs:
            self.boosters[o].save_model(folder / f"{o}.json")
            if o in self.quantile_boosters:
                self.quantile_boosters[o].save_model(folder / f"{o}.quantiles.json")
        (folder / "card.json").write_text(json.dumps(_plain(self.card(**card_extra)), indent=1))
        return folder

    @classmethod
    def load(cls, folder, device: str | None = None) -> "BoostedRegressor":
        import xgboost as xgb

        folder = Path(folder)
        card_path = folder / "card.json"
        if not card_path.exists():
            raise ValueError(f"{folder} holds no card.json: not a saved BoostedRegressor")
        card = json.loads(card_path.read_text())
        q = card.get("quantiles")
        model = cls(card["outputs"], card["params"], quantiles=q, device=device, seed=card["seed"])
        model.x_mean = np.asarray(card["x_mean"], dtype=np.float32)
        model.x_std = np.asarray(card["x_std"], dtype=np.float32)
        model.history = card.get("history", {})
        model.conformal = bool(card.get("conformal", False))
        model.interval_offset = {k: float(v) for k, v in card.get("interval_offset", {}).items()}
        for o in model.outputs:
            b = xgb.Booster(model_file=str(folder / f"{o}.json"))
            b.set_param({"device": model.device, "nthread": 1})
            model.boosters[o] = b
            if q is not None:
                bq = xgb.Booster(model_file=str(folder / f"{o}.quantiles.json"))
                bq.set_param({"device": model.device, "nthread": 1})
                model.quantile_boosters[o] = bq
        return model


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def mean_baseline_mape(Y_train, Y_test) -> float:
    """MAPE (%) of always predicting the training mean: the 'chance' level a model must beat."""
    t = np.asarray(Y_test, dtype=float)
    return mape(t, np.full_like(t, float(np.mean(Y_train))))


# --- learning curve -----------------------------------------------------------------------------

def learning_curve(X, Y, X_val, Y_val, X_test, Y_test, sizes, outputs, params=None, *, device=None,
                   seed: int = 0, client=None) -> dict:
    """Test MAPE per output for models trained on the first ``size`` training samples.

    Returns {'sizes': [...], 'mape': {output: [...]}, 'seconds': [...]} (point models only).
    With a Dask ``client``, every model is trained there (``BoostedRegressor.fit``).
    """
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 2 or max(sizes) > len(X):
        raise ValueError(f"sizes={sizes!r} must lie in [2, {len(X)}] (the training set size)")
    res = {"sizes": sizes, "mape": {o: [] for o in outputs}, "seconds": []}
    for s in sizes:
        m = BoostedRegressor(outputs, params, quantiles=None, device=device, seed=seed)
        m.fit(X[:s], _check_Y(Y, outputs, len(X))[:s], X_val, Y_val, client=client)
        ev = m.evaluate({"test": (X_test, Y_test)})["mape"]["test"]
        for o in outputs:
            res["mape"][o].append(ev[o])
        res["seconds"].append(m.history["fit_seconds"])
    return res


def power_law_fit(sizes, errors, se=None) -> dict:
    """Fit error = c n^b by (weighted) least squares in log-log space.

    ``se``: standard errors of the errors (the weight of a point is then y / se, the inverse
    standard error of log y). Returns {"c", "b", "b_se", "cov" (of (b, log c)), "at"}, where
    ``at(n)`` gives (c n^b, standard deviation of its log from the fit's covariance; with three
    points or fewer the covariance is not scaled by the residuals, which would need more points).
    """
    n = np.asarray(sizes, dtype=float)
    e = np.asarray(errors, dtype=float)
    if n.size < 2 or n.shape != e.shape or np.any(n <= 0) or np.any(e <= 0):
        raise ValueError("sizes and errors must be positive arrays of equal length >= 2")
    w = None if se is None else 1 / np.maximum(np.asarray(se, dtype=float) / e, 1e-3)
    if n.size == 2:
        (b, logc), cov = np.polyfit(np.log(n), np.log(e), 1, w=w), np.zeros((2, 2))
    else:
        (b, logc), cov = np.polyfit(np.log(n), np.log(e), 1, w=w, cov="unscaled" if n.size < 4 else True)

    def at(x):
        v = np.array([math.log(x), 1.0])
        return float(math.exp(logc + b * v[0])), float(np.sqrt(max(v @ cov @ v, 0.0)))
    return {"c": float(math.exp(logc)), "b": float(b), "b_se": float(np.sqrt(max(cov[0, 0], 0.0))), "cov": cov, "at": at}


def power_law(sizes, errors) -> tuple[float, float]:
    """Least-squares fit of error = c n^b in log-log space; returns (c, b) (see ``power_law_fit``)."""
    f = power_law_fit(sizes, errors)
    return f["c"], f["b"]


def cramer_rao(derivative_samples, samples, extra_var=None) -> np.ndarray:
    """The Cramér-Rao bound: the smallest covariance any unbiased estimator of p parameters can
    reach from one observation, estimated from simulations.

    Parameters
    ----------
    derivative_samples : array_like, shape (p, R, d)
        Per replicate, the finite-difference derivative of the d observed numbers with respect
        to each parameter (e.g. (f(theta + delta) - f(theta - delta)) / (2 delta) with the same
        random numbers on both sides); their mean over R estimates the Jacobian J (p, d).
    samples : array_like, shape (R, d)
        Replicate observations at theta; their covariance S estimates the observation's.
    extra_var : array_like, shape (d,), optional
        Independent variance added to the diagonal of S (e.g. measurement noise known in closed form).

    Returns
    -------
    ndarray, shape (p, p)
        F^-1 with F = J^T Sigma^-1 J, Sigma = S + diag(extra_var), in the parameters' units squared.
        Two finite-sample biases are removed: Sigma^-1 is scaled by (R - d - 2) / (R - 1) (the
        unbiased precision estimate for Gaussian samples, exact without ``extra_var``), and the
        noise of the estimated J (which inflates F) is subtracted, tr(Sigma^-1 C_jk) / R with C_jk
        the covariance of the derivative samples. The bound assumes a Gaussian observation.
    """
    D = np.asarray(derivative_samples, dtype=float)
    X = np.asarray(samples, dtype=float)
    if D.ndim != 3 or X.ndim != 2 or D.shape[2] != X.shape[1]:
        raise ValueError(f"derivative_samples {D.shape} must be (p, R, d) and samples {X.shape} (R, d) with the same d")
    R, d = X.shape
    if R < d + 4 or D.shape[1] < 2:
        raise ValueError(f"{R} replicates for {d} observed numbers: need at least d + 4 (bin the observation)")
    if not (np.all(np.isfinite(D)) and np.all(np.isfinite(X))):
        raise ValueError("derivative_samples and samples must be finite")
    cov = np.cov(X, rowvar=False)
    if extra_var is not None:
        extra = np.asarray(extra_var, dtype=float)
        if extra.shape != (d,) or np.any(extra < 0):
            raise ValueError(f"extra_var must be (d,) = ({d},) and non-negative")
        cov = cov + np.diag(extra)
    prec = np.linalg.inv(cov) * (R - d - 2) / (R - 1)
    J = D.mean(axis=1)
    dev = D - J[:, None, :]
    Rd = D.shape[1]
    fisher = J @ prec @ J.T
    for j in range(len(D)):
        for k in range(len(D)):
            c_jk = dev[j].T @ dev[k] / (Rd - 1)
            fisher[j, k] -= np.trace(prec @ c_jk) / Rd
    return np.linalg.inv(fisher)

"""One torch training loop for every network in the book.

Adam, a reduce-on-plateau learning-rate schedule, early stopping on the validation loss (the
best weights are restored at the end), a progress bar, seeds, and a checkpoint after every
epoch written atomically, so an interrupted run resumes where it stopped. Models are saved as
a ``state_dict`` plus a JSON model card, never as a pickle.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.backend import torch_device


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 12  # epochs without validation improvement before stopping
    scheduler_patience: int = 4
    scheduler_factor: float = 0.5
    min_lr: float = 1e-6
    grad_clip: float | None = None
    schedule: str = "plateau"  # "plateau": lr * factor when validation stalls; "onecycle": warm-up, cosine decay
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "patience", "scheduler_patience"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be > 0")
        if not 0 < self.scheduler_factor < 1:
            raise ValueError(f"scheduler_factor={self.scheduler_factor!r} must lie in (0, 1)")
        if self.schedule not in ("plateau", "onecycle"):
            raise ValueError(f"schedule={self.schedule!r} must be 'plateau' or 'onecycle'")


@dataclass
class History:
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = float("inf")
    seconds: float = 0.0
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def as_tensors(data, device=None) -> tuple[torch.Tensor, ...]:
    """A tuple of arrays/tensors -> a tuple of float32 (or integer) tensors with equal length."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        data = (data,)
    out = []
    for a in data:
        t = torch.as_tensor(a)
        if t.is_floating_point():
            t = t.float()
        out.append(t.to(device) if device is not None else t)
    if len({len(t) for t in out}) != 1:
        raise ValueError(f"all arrays must have the same length, got {[len(t) for t in out]}")
    return tuple(out)


def _batches(tensors, batch_size: int, generator: torch.Generator | None):
    n = len(tensors[0])
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        yield tuple(t[idx.to(t.device)] for t in tensors)


def evaluate(model: torch.nn.Module, loss_fn: Callable, data, batch_size: int = 512) -> float:
    """Mean loss over a dataset (no gradients), weighted by batch size."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in _batches(data, batch_size, None):
            total += float(loss_fn(model, batch)) * len(batch[0])
            count += len(batch[0])
    return total / max(count, 1)


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def fit(model: torch.nn.Module, loss_fn: Callable, train, val, config: TrainConfig | None = None, *,
        device=None, checkpoint: str | Path | None = None, epoch_data: Callable | None = None) -> History:
    """Train ``model`` in place; return the history. The best-validation weights are restored.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        loss_fn(model, batch) -> scalar tensor, batch being a tuple of tensors on the device.
    train, val : tuple of arrays or tensors
        Equally long arrays (e.g. (x, y)); ``val`` stays fixed.
    config : TrainConfig, optional
        Epochs, batch size, learning rate and its schedule, early stopping, seed.
    checkpoint : path, optional
        File for a per-epoch checkpoint; if it exists, training resumes from it.
    epoch_data : callable, optional
        epoch_data(epoch) -> the training tuple for that epoch (same lengths and dtypes as
        ``train``), e.g. fresh noise drawn on the clean images every epoch. Make it a function
        of the epoch number (seeded by it), so that a resumed run sees the same data.

    Returns
    -------
    History
        Losses and learning rate per epoch, the best epoch, seconds, whether it stopped early.
    """
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else torch_device()
    seed_everything(config.seed)
    model.to(device)
    train_t, val_t = as_tensors(train, device), as_tensors(val, device)
    if len(train_t[0]) == 0 or len(val_t[0]) == 0:
        raise ValueError("train and val must both hold at least one sample")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "onecycle":
        steps = -(-len(train_t[0]) // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps)
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=config.scheduler_factor,
                                                           patience=config.scheduler_patience, min_lr=config.min_lr)
    gen = torch.Generator().manual_seed(config.seed)
    hist, best_state, start = History(), copy.deepcopy(model.state_dict()), 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("config") != asdict(config):
            raise ValueError(f"checkpoint {ckpt} was written with another TrainConfig; delete it to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"].cpu())
        hist = History(**state["history"])
        best_state, start = state["best_model"], state["epoch"] + 1
    t0 = time.perf_counter() - hist.seconds
    bar = tqdm(range(start, config.epochs), desc="training", unit="epoch", disable=not config.progress,
               initial=start, total=config.epochs)
    for epoch in bar:
        if epoch_data is not None:
            train_t = as_tensors(epoch_data(epoch), device)
        model.train()
        total, count = 0.0, 0
        for batch in _batches(train_t, config.batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}; lower lr={config.lr}")
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            if config.schedule == "onecycle":
                sched.step()
            total += float(loss.detach()) * len(batch[0])
            count += len(batch[0])
        val_loss = evaluate(model, loss_fn, val_t)
        if config.schedule == "plateau":
            sched.step(val_loss)
        hist.train_loss.append(total / count)
        hist.val_loss.append(val_loss)
        hist.lr.append(opt.param_groups[0]["lr"])
        if val_loss < hist.best_val_loss:
            hist.best_val_loss, hist.best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(train=f"{hist.train_loss[-1]:.4g}", val=f"{val_loss:.4g}", lr=f"{hist.lr[-1]:.1e}")
        hist.seconds = time.perf_counter() - t0
        if epoch - hist.best_epoch >= config.patience:
            hist.stopped_early = True
        if ckpt is not None:
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          "generator": gen.get_state(), "history": asdict(hist), "best_model": best_state,
                          "epoch": epoch, "config": asdict(config)}, ckpt)
        if hist.stopped_early:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return hist


def save_model(path: str | Path, model: torch.nn.Module, card: dict) -> Path:
    """Write ``<path>.pt`` (state_dict) and ``<path>.json`` (the model card); return the .pt path."""
    path = Path(path).with_suffix("")
    _save_atomic(model.state_dict(), path.with_suffix(".pt"))
    from ..core.report import versions

    card = {**card, "versions": versions(), "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1, default=str))
    os.replace(tmp, path.with_suffix(".json"))
    return path.with_suffix(".pt")


def load_model(path: str | Path, model: torch.nn.Module, device=None) -> dict:
    """Load weights saved by ``save_model`` into ``model`` (weights_only); return the model card."""
    path = Path(path).with_suffix("")
    if not path.with_suffix(".pt").exists():
        raise ValueError(f"no saved model at {path.with_suffix('.pt')}")
    state = torch.load(path.with_suffix(".pt"), map_location=device or "cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return json.loads(path.with_suffix(".json").read_text())


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

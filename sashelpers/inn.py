"""Conditional invertible networks (FrEIA) for posterior sampling of scatterer parameters.

Design: a conditional INN maps standardised parameters x to a latent z of the same size,
conditioned on features h(y) of the measured curve y (standardised log I) computed by a small
conditioning network trained jointly. Training maximises the likelihood,

    loss = E[ ||z||^2 / 2 - log |det dz/dx| ] / d,

so that z ~ N(0, I) for true (x, y) pairs. At prediction time, drawing z ~ N(0, I) and
running the INN backwards gives samples from the posterior p(x | y). Unlike the padded
x <-> [y, z] design of the original INN paper, nothing has to be balanced between a
supervised y-loss and a latent MMD loss, and the posterior is calibrated by construction when
the model fits.

Discrete shape is handled outside the INN: one conditional INN per shape behind a classifier.
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

"""The original code's two sampling bugs, reproduced on purpose, to show what they did to the figures.

The papers' public code (SPEC §10) estimated Δ_k and drew the integrand with two mistakes:

1. **Only the first direction.** Its subspace sampler zipped a flat list of coefficient ×
   direction pieces against the model's parameters, so only the pieces of the *first* of the d
   directions were ever added: every "dim = d" curve was the d = 1 curve of the first direction.
2. **A reshuffled data order per draw.** Its data loaders reshuffled on every pass, so each
   Monte Carlo draw and each grid point saw its own order of the samples, hence its own prefixes
   D_k: Δ_k became an average over random orders, and neighbouring grid points of the integrand
   added different samples at the same k (spiky surfaces).

``monte_carlo`` and ``scan`` compute Δ_k and the landscape grid that way, each bug switchable,
so a notebook can draw the correct figure and the original code's side by side. They draw the
perturbations exactly as ``delta.monte_carlo`` does (one ``randn(d)`` per draw from ``seed``):
with both bugs off, ``monte_carlo`` gives ``delta.monte_carlo``'s numbers. Use ``delta`` and
``surface`` for measurements; this module exists to show a mistake, not to make one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import prefix, surface
from .checks import check_flag, check_int, check_positive, check_seed
from .delta import Curve
from .directions import Subspace, check_subspace
from .problem import Problem, check_problem, spans
from .progress import bar
from .seeding import generator
from .surface import Surface

__all__ = ["monte_carlo", "reshuffled_orders", "scan"]


def reshuffled_orders(num_samples: int, count: int, seed: int = 0) -> Tensor:
    """``count`` independent random orders of range(K): what a reshuffling loader gives per pass.

    Row i is the order the i-th draw (or grid point) saw; none is the Problem's own order.

    Example:
        >>> reshuffled_orders(4, 2, seed=0).shape
        torch.Size([2, 4])
    """
    num_samples = check_int("num_samples", num_samples, low=1)
    count = check_int("count", count, low=1)
    shuffle = generator(check_seed("seed", seed))
    return torch.stack([torch.randperm(num_samples, generator=shuffle) for _ in range(count)])


def monte_carlo(
    prob: Problem,
    sigma: float,
    draws: int,
    subspace: Subspace | None = None,
    seed: int = 0,
    *,
    first_direction_only: bool = True,
    reshuffle: bool = True,
    order_seed: int = 0,
    progress: bool = False,
    draws_per_call: int = 256,
) -> Curve:
    """Δ_k for k = 2..K as the original code estimated it (see the module docstring).

    Each draw takes z ~ N(0, σ² I_d) exactly as ``delta.monte_carlo`` does (same seed, same z).
    With ``first_direction_only`` the parameters move by z_1 · p_1 only — the first column of
    the subspace basis — instead of P z; with ``reshuffle`` the draw's per-sample losses are put
    in an order of its own (``reshuffled_orders(K, draws, order_seed)``, row i for draw i) before
    the prefix means are taken. Every per-draw curve d_k² is kept (``samples``, draws × (K−1)),
    so memory grows with draws · K; this reproduces figures, it is not built for scale.

    Args:
        prob: the problem (network, ordered samples, centre).
        sigma: standard deviation of the perturbation, > 0.
        draws: parameter vectors evaluated, ≥ 2.
        subspace: the d directions (needed for ``first_direction_only``); None: the full space.
        seed: seed of the perturbations (as in ``delta.monte_carlo``).
        first_direction_only: apply only the first direction (bug 1).
        reshuffle: give every draw its own data order (bug 2).
        order_seed: seed of the reshuffled orders.
        progress: show a progress bar over chunks of draws.
        draws_per_call: parameter vectors per call of ``Problem.per_sample_losses``.

    Returns:
        A ``delta.Curve``; its ``dim`` is the number of directions that actually moved (1 with
        ``first_direction_only``), its ``samples`` the per-draw d_k² and its ``nonfinite`` the
        draws left out per k because a loss was not finite.
    """
    check_problem(prob)
    sigma = check_positive("sigma", sigma)
    draws = check_int("draws", draws, low=2)
    seed = check_seed("seed", seed)
    first_direction_only = check_flag("first_direction_only", first_direction_only)
    reshuffle = check_flag("reshuffle", reshuffle)
    order_seed = check_seed("order_seed", order_seed)
    draws_per_call = check_int("draws_per_call", draws_per_call, low=1)
    if prob.num_samples < 2:
        raise ValueError("the problem needs at least K=2 samples to compare L_k with L_{k-1}.")
    subspace = check_subspace(prob, subspace)
    if subspace is None and first_direction_only:
        raise ValueError(
            "first_direction_only=True reproduces a bug of the subspace sampler: pass a subspace "
            "(its first column is the one direction applied), or first_direction_only=False."
        )
    dim = prob.num_params if subspace is None else subspace.dim
    orders = (
        reshuffled_orders(prob.num_samples, draws, order_seed).to(prob.device)
        if reshuffle
        else None
    )

    draw = generator(seed)
    squares = []
    progress_bar = bar(
        total=draws, desc="Monte Carlo draws (original code)", unit="draw", enabled=progress
    )
    for chunk in spans(draws, draws_per_call):
        z = torch.stack(
            [
                torch.randn(dim, generator=draw, dtype=prob.dtype)
                for _ in range(chunk.stop - chunk.start)
            ]
        )  # one randn(d) per draw, as delta.monte_carlo draws them
        z = (sigma * z).to(device=prob.device)
        if subspace is None:
            step = z
        elif first_direction_only:
            step = (
                z[:, :1] @ subspace.basis[:, :1].T
            )  # the coefficients of directions 2..d are lost
        else:
            step = z @ subspace.basis.T
        losses = prob.per_sample_losses(prob.center + step).to(torch.float64)
        if orders is not None:
            losses = losses.gather(1, orders[chunk])
        squares.append(prefix.differences(losses).square().cpu())
        progress_bar.update(chunk.stop - chunk.start)
    progress_bar.close()

    sq = torch.cat(squares).numpy()
    finite = np.isfinite(sq)
    count = finite.sum(0)
    values = np.where(finite, sq, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(0) / count
        var = (np.where(finite, sq - mean, 0.0) ** 2).sum(0) / (count - 1)
        stderr = np.where(count > 1, np.sqrt(var / count), np.nan)
    return Curve(
        k=np.arange(2, prob.num_samples + 1),
        value=np.where(count > 0, mean, np.nan),
        stderr=stderr,
        sigma=sigma,
        draws=draws,
        dim=1 if first_direction_only else dim,
        nonfinite=(~finite).sum(0),
        samples=sq,
    )


def scan(
    prob: Problem,
    subspace: Subspace,
    span: float | tuple[float, float] = 1.0,
    points: int = 41,
    ks: Sequence[int] = (),
    seed: int = 0,
    progress: bool = False,
) -> Surface:
    """``surface.scan`` as the original code computed it: every grid point in its own data order.

    The losses at each grid point are those of ``surface.scan`` (same grid, same directions);
    the prefixes D_k at grid point i are the first k samples of ``reshuffled_orders(K,
    points^d, seed)[i]`` rather than of the Problem's one order, so neighbouring points add
    different samples at the same k. ``loss`` (L_K, the mean over all K samples) is the same as
    ``surface.scan``'s; ``prefix_loss`` and ``difference`` are not.
    """
    subspace = check_subspace(prob, subspace)
    points = check_int("points", points, low=2, high=501)
    count = points ** (1 if subspace is None else subspace.dim)
    orders = reshuffled_orders(prob.num_samples, count, check_seed("seed", seed))
    return surface.scan(prob, subspace, span, points, ks, progress=progress, orders=orders)

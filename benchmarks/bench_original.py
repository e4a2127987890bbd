"""2. ``delta.monte_carlo`` against the original code's approach, reproduced faithfully.

The papers' code, per draw: ``copy.deepcopy`` the model, add the perturbation to its parameters
in place (in a subspace: Σ_j z_j · direction_j, parameter by parameter — with the bug that applied
only the first direction fixed, so that the numbers can agree), loop a ``DataLoader`` over the
samples in batches of 64 (``shuffle=False``: the original reshuffled, which is a bug of its own),
collect the per-sample losses, and turn them into prefix means by a cumulative sum. It draws the
same z as ``monte_carlo`` (same seed, same order).

First both are run in float64 and must give the same Δ_k to 1e-5 relative at every k; then both are
timed in float32 (the notebooks' precision). Target: ours ≥ 5× faster.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from landscape import delta, directions
from landscape.directions import Subspace
from landscape.problem import Problem

from ._common import sizes, trained
from ._timing import Row, interleaved

SIGMA = 0.05
D = 8


def original_delta(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    draws: int,
    subspace: Subspace | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Δ_k for k = 2..K the papers' way (see the module docstring); ``model`` is left unchanged."""
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)
    dtype = next(model.parameters()).dtype
    numels = [p.numel() for p in model.parameters()]
    dim = sum(numels) if subspace is None else subspace.dim
    directions_ = [] if subspace is None else [torch.split(c, numels) for c in subspace.basis.T]
    generator = torch.Generator().manual_seed(seed)
    k = torch.arange(1, len(X) + 1, dtype=torch.float64)
    total = torch.zeros(len(X) - 1, dtype=torch.float64)
    for _ in range(draws):
        z = (sigma * torch.randn(dim, generator=generator, dtype=torch.float64)).to(dtype)
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            if subspace is None:
                for p, piece in zip(perturbed.parameters(), torch.split(z, numels)):
                    p.add_(piece.view_as(p))
            else:
                for coefficient, direction in zip(z, directions_):  # every direction, not the first
                    for p, piece in zip(perturbed.parameters(), direction):
                        p.add_(coefficient * piece.view_as(p))
            losses = torch.cat(
                [F.cross_entropy(perturbed(xb), yb, reduction="none") for xb, yb in loader]
            )
        prefix_means = losses.to(torch.float64).cumsum(0) / k
        total += (prefix_means[1:] - prefix_means[:-1]) ** 2
    return (total / draws).numpy()


def _agreement(draws: int) -> tuple[float, str]:
    """Largest relative difference over k and spaces between ours and the original, in float64."""
    setup = trained(dtype="float64")
    prob = setup.problem
    model = prob.model  # the Problem's float64 eval-mode copy; original_delta deep-copies it
    worst = 0.0
    for subspace in (None, directions.random(prob, D, seed=0)):
        ours = delta.monte_carlo(prob, SIGMA, draws, subspace=subspace, progress=False).value
        theirs = original_delta(model, prob.X, prob.y, SIGMA, draws, subspace)
        worst = max(worst, float(np.max(np.abs(ours - theirs) / np.abs(theirs))))
    return worst, f"float64, {draws} draws, full space and d={D}"


def run(quick: bool) -> list[Row]:
    worst, how = _agreement(8 if quick else 32)
    agree = worst <= 1e-5
    setup = trained()
    prob: Problem = setup.problem
    model = copy.deepcopy(prob.model)
    sub = directions.random(prob, D, seed=0)
    draws, repeats = (32, 2) if quick else (128, 3)
    rows = []
    for label, subspace in (("full", None), (f"d={D}", sub)):
        t = interleaved(
            {
                "ours": lambda s=subspace: delta.monte_carlo(
                    prob, SIGMA, draws, subspace=s, progress=False
                ),
                "original": lambda s=subspace: original_delta(
                    model, prob.X, prob.y, SIGMA, draws, s
                ),
            },
            repeats,
        )
        speedup = t["original"].median / t["ours"].median
        rows.append(
            Row(
                f"2 Δ_k vs original {label}",
                "deepcopy+add_+DataLoader(64)+cumsum",
                t["original"].median,
                f"monte_carlo ({draws} draws, {prob.strategy})",
                t["ours"].median,
                "A/B ≥ 5",
                speedup >= 5 and agree,
                note=(
                    f"{sizes(prob)}, σ={SIGMA}, float32, medians of {repeats}; same Δ_k: max "
                    f"relative difference {worst:.1e} ({how}){'' if agree else ' — DISAGREE'}"
                ),
            )
        )
    return rows

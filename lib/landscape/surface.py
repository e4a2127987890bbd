"""Landscape grids: L_K, L_k, d_k = L_k − L_{k−1} and the integrand d_k² · p(w) on 1-D/2-D slices.

A slice is w = w* + Σ_j t_j p_j over a grid of coordinates t in the span of one or two directions
(a ``Subspace`` with d = 1 or 2: filter-normalised random directions, Hessian eigenvectors...).
One evaluation of the per-sample losses per grid point gives every prefix loss through a
cumulative sum, with the samples in the Problem's one fixed order (the papers' spiky integrand
surfaces came from loaders that reshuffled per grid point). Plotting lives in ``plots``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from . import prefix
from .checks import check_int, check_positive, check_sequence
from .directions import Subspace, check_subspace
from .problem import Problem


@dataclass(frozen=True, eq=False)
class Surface:
    """Losses on a grid of coordinates around w*.

    Attributes:
        coords: one (points,) coordinate array per direction (1 or 2 of them).
        k: the prefix sizes whose losses were kept.
        loss: L_K on the grid, shape (points,) or (points, points) (index [i, j] ↔ coords[0][i],
            coords[1][j]).
        prefix_loss: L_k on the grid for each k, shape (len(k), *grid).
        difference: d_k = L_k − L_{k−1} on the grid for each k, shape (len(k), *grid).
        kind: the kind of the directions ("filter", "hessian"...).
    """

    coords: tuple[np.ndarray, ...]
    k: np.ndarray
    loss: np.ndarray
    prefix_loss: np.ndarray
    difference: np.ndarray
    kind: str

    def density(self, sigma: float) -> np.ndarray:
        """p on the grid: the N(0, σ² I_d) density of the coordinates t."""
        sigma = check_positive("sigma", sigma)
        grids = np.meshgrid(*self.coords, indexing="ij")
        r2 = sum(g**2 for g in grids)
        d = len(self.coords)
        return np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2) ** (d / 2)

    def integrand(self, sigma: float) -> np.ndarray:
        """d_k(w)² · p(w) on the grid for every kept k: what Δ_k integrates (main paper Fig. 6)."""
        return self.difference**2 * self.density(sigma)[None]

    def basin_width(self, rise: float) -> BasinWidth:
        """How wide the basin of L_K around w* is on this slice, at a loss rise of ``rise``.

        The region is the connected set of grid points around the point nearest w* where
        L_K ≤ L_K(w*) + rise (4-neighbour connectivity, so a separate low basin further out does
        not count). Its size is reported as a length in the slice's coordinates: the radius of
        the disc of the same area, √(area/π), in 2-D; half its length in 1-D. For a quadratic
        bowl ½ tᵀAt on a 2-D slice this is (2·rise)^½ / (λ₁λ₂)^¼ — wider means flatter.

        Args:
            rise: the loss increase (nats) that delimits the basin, > 0.

        Returns:
            ``BasinWidth(radius, truncated)``; ``truncated`` when the region reaches the grid's
            edge (the radius is then a lower bound: scan a larger span).
        """
        from scipy import ndimage

        rise = check_positive("rise", rise)
        if any(not (c.min() <= 0 <= c.max()) for c in self.coords):
            raise ValueError("the grid does not contain w* (coordinate 0); scan a span around 0.")
        center = tuple(int(np.abs(c).argmin()) for c in self.coords)
        inside = self.loss <= self.loss[center] + rise
        labels, _ = ndimage.label(inside)
        region = labels == labels[center]
        cell = np.prod([np.ptp(c) / (len(c) - 1) for c in self.coords])
        size = region.sum() * cell
        radius = size / 2 if len(self.coords) == 1 else np.sqrt(size / np.pi)
        edges = np.zeros_like(region)
        for axis in range(region.ndim):
            index = [slice(None)] * region.ndim
            for end in (0, -1):
                index[axis] = end
                edges[tuple(index)] = True
        return BasinWidth(float(radius), bool((region & edges).any()))


class BasinWidth(NamedTuple):
    """Size of the basin of L_K around w* on a slice (see ``Surface.basin_width``).

    Attributes:
        radius: √(area/π) of the connected region where L_K ≤ L_K(w*) + rise (2-D), or half its
            length (1-D), in the slice's coordinates.
        truncated: the region reaches the grid's edge, so ``radius`` is only a lower bound.
    """

    radius: float
    truncated: bool


def scan(
    prob: Problem,
    subspace: Subspace,
    span: float | tuple[float, float] = 1.0,
    points: int = 41,
    ks: Sequence[int] = (),
    progress: bool = True,
    orders: torch.Tensor | None = None,
) -> Surface:
    """Evaluate the landscape on a grid in a 1-D or 2-D subspace.

    Args:
        prob: the problem.
        subspace: one or two directions (d = 1 or 2).
        span: coordinates run over [−span, span] (or the given (low, high)) in each direction.
        points: grid points per direction.
        ks: prefix sizes (2 ≤ k ≤ K, one or a sequence) for which L_k and d_k are kept; L_K is
            always kept.
        orders: None (every grid point uses the Problem's one data order, as it must), or
            (points^d, K) permutations, one per grid point — how the papers' original code
            computed it by accident (``original.scan``); L_K does not depend on them.
    """
    subspace = check_subspace(prob, subspace)
    if subspace is None or subspace.dim not in (1, 2):
        got = "None (the full space)" if subspace is None else f"d={subspace.dim}"
        raise ValueError(
            f"subspace must have d=1 or d=2 directions for a landscape slice; got {got}."
        )
    points = check_int("points", points, low=2, high=501)
    low, high = _check_span(span)
    ks = _check_ks(ks, prob.num_samples)
    axis = np.linspace(low, high, points)
    grids = np.meshgrid(*([axis] * subspace.dim), indexing="ij")
    T = torch.as_tensor(np.stack([g.ravel() for g in grids], axis=1), dtype=prob.dtype)
    W = prob.center + T.to(prob.device) @ subspace.basis.T
    losses = prob.per_sample_losses(W, progress=progress).to(torch.float64)
    if orders is not None:
        if tuple(orders.shape) != tuple(losses.shape):
            raise ValueError(
                f"orders has shape {tuple(orders.shape)}; expected one permutation of the "
                f"{prob.num_samples} samples per grid point, {tuple(losses.shape)}."
            )
        losses = losses.gather(1, orders.to(losses.device))
    means = prefix.means(losses)  # (points^d, K): L_k at every grid point
    shape = (points,) * subspace.dim
    prefix_k = means[:, ks - 1].T.reshape(len(ks), *shape)
    previous = means[:, ks - 2].T.reshape(len(ks), *shape)
    return Surface(
        coords=tuple(axis.copy() for _ in range(subspace.dim)),
        k=ks,
        loss=means[:, -1].reshape(shape).cpu().numpy(),
        prefix_loss=prefix_k.cpu().numpy(),
        difference=(prefix_k - previous).cpu().numpy(),
        kind=subspace.kind,
    )


def _check_span(span) -> tuple[float, float]:
    """(low, high) from a half-width ``span`` > 0 or a pair low < high of finite numbers."""
    if isinstance(span, int | float | np.number) and not isinstance(span, bool):
        half = check_positive("span", span)
        return -half, half
    try:
        low, high = (float(v) for v in span)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(
            f"span={span!r} must be a positive number (the grid runs over [-span, span]) or a "
            "(low, high) pair of finite numbers with low < high."
        )
    return low, high


def _check_ks(ks, num_samples: int) -> np.ndarray:
    """Prefix sizes to keep: none (an empty sequence), one k, or several, each in 2..K."""
    if not isinstance(ks, str) and hasattr(ks, "__len__") and len(ks) == 0:
        return np.zeros(0, dtype=int)
    return np.array(check_sequence("ks", ks, check_int, low=2, high=num_samples), dtype=int)

"""Monte Carlo Δ_k for every k at once, and the pointwise curve |L_k(w*) − L_{k−1}(w*)|.

Δ_k = E_{w~p} (L_k(w) − L_{k−1}(w))², p = N(w*, σ² P Pᵀ). One vector of per-sample losses at a
parameter draw gives d_k(w) = L_k(w) − L_{k−1}(w) = (l_k(w) − L_{k−1}(w)) / k for *every*
k = 2..K through one cumulative sum; nothing is recomputed per k. Each result carries a standard
error per k, the count of draws whose losses were not finite, and (optionally) the spread over
several data orders. Prefix means and differences are ``prefix``'s; closed forms live in
``curvature``, rate fits in ``theory``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from . import theory
from .checks import check_flag, check_fraction, check_int, check_positive, check_seed
from .curvature import per_sample_gradients
from .directions import Subspace, check_subspace
from .directions import random as random_directions
from .prefix import differences as prefix_differences
from .problem import Problem, check_problem, spans
from .progress import bar
from .seeding import generator


@dataclass(frozen=True, eq=False)
class Curve:
    """Δ_k estimated by Monte Carlo, for k = 2..K.

    Attributes:
        k: sample counts 2..K.
        value: the estimate of Δ_k (mean of d_k² over draws, and over orders when there are several).
        stderr: its standard error over draws (over antithetic pairs when ``antithetic``).
        sigma: the standard deviation of the perturbation.
        draws: parameter vectors evaluated.
        dim: d, the number of directions perturbed (N in the full space).
        nonfinite: per k, the number of draws left out because a loss was not finite.
        orders: the number of data orders averaged (the first is the Problem's own order).
        per_order: (orders, K−1) estimates for each order, or None for a single order.
        samples: (units, K−1) per-draw (per-pair) values of d_k² for bootstraps, or None when too
            large to keep.
        antithetic: whether draws came in pairs ±z.
        groups: for a curve pooled over training seeds (``sufficiency.pool``), the seed (0, 1, …)
            of each row of ``samples``; bootstraps then resample seeds, then orders within each.
            None for one network.
    """

    k: np.ndarray
    value: np.ndarray
    stderr: np.ndarray
    sigma: float
    draws: int
    dim: int
    nonfinite: np.ndarray
    orders: int = 1
    per_order: np.ndarray | None = None
    samples: np.ndarray | None = None
    antithetic: bool = False
    groups: np.ndarray | None = None

    @property
    def seeds(self) -> int:
        """The number of training seeds the curve pools (1 unless ``groups`` says otherwise)."""
        return 1 if self.groups is None else len(np.unique(self.groups))

    def __repr__(self) -> str:
        if not len(self.k):
            return f"Curve(empty, σ = {self.sigma:g})"
        first, last = int(self.k[0]), int(self.k[-1])
        orders = f" × {self.orders} orders" if self.orders > 1 else ""
        if self.seeds > 1:
            orders += f" of {self.seeds} seeds"
        return (
            f"Curve(Δ_k for k = {first}..{last}: σ = {self.sigma:g}, d = {self.dim}, "
            f"{self.draws} draws{orders}; Δ_{first} = {self.value[0]:.3g}, "
            f"Δ_{last} = {self.value[-1]:.3g})"
        )

    def check_finite(self) -> None:
        """Raise a ValueError when no k has a finite estimate (every draw's loss was non-finite)."""
        if np.isfinite(self.value).any():
            return
        counted = np.asarray(self.nonfinite)
        if counted.size and (counted >= self.draws).all():
            why = (
                f"every one of the {self.draws} draws at sigma={self.sigma:g} gave a non-finite "
                "loss (NaN or inf)"
            )
        else:
            why = "every value of the curve is non-finite (NaN or inf)"
        raise ValueError(
            f"the curve has no finite value of Δ_k for any k: {why}. Lower sigma (or look at "
            "the network: a loss that overflows at this σ), then measure again."
        )

    @property
    def relative_stderr(self) -> np.ndarray:
        """stderr / value per k (inf where the value is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.value > 0, self.stderr / self.value, np.inf)

    def fit_rate(self, k_min: int = 10, k_max: int | None = None, **kwargs):
        """Fit Δ_k ≈ C k^(−α) on ``k_min ≤ k ≤ k_max``; see ``theory.fit_rate``.

        A curve on which every draw gave a non-finite loss has nothing to fit: that is said
        (with σ and the count of draws), rather than asking for another window of k. A curve
        pooled over training seeds (``groups``) is bootstrapped over seeds, then orders within
        each.
        """
        self.check_finite()
        return theory.fit_rate(
            self.k,
            self.value,
            k_min=k_min,
            k_max=k_max,
            samples=self.samples,
            stderr=self.stderr,
            **{
                "units": "orders" if self.samples is self.per_order else "draws",
                "groups": None if self.samples is None else self.groups,
                **kwargs,
            },
        )


@dataclass(frozen=True, eq=False)
class PointwiseCurve:
    """|L_k(w*) − L_{k−1}(w*)| for k = 2..K over several random data orders (paper 002).

    Attributes:
        k: sample counts 2..K.
        value: mean over orders.
        stderr: standard error of that mean over orders.
        lower, upper: the central ``level`` band of the orders (empirical quantiles).
        level: the band's coverage.
        orders: number of orders (the first is the Problem's own order).
        samples: (orders, K−1) the curve of each order.
    """

    k: np.ndarray
    value: np.ndarray
    stderr: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    orders: int
    samples: np.ndarray

    def fit_rate(self, k_min: int = 10, k_max: int | None = None, **kwargs):
        """Fit the mean curve ≈ C k^(−α); theory for the pointwise metric predicts α = 1."""
        return theory.fit_rate(
            self.k,
            self.value,
            k_min=k_min,
            k_max=k_max,
            samples=self.samples,
            **{"units": "orders", **kwargs},
        )


def order_permutations(num_samples: int, orders: int, seed: int) -> Tensor:
    """``orders`` permutations of range(K): the identity first, then seeded random ones."""
    shuffle = generator(seed)
    perms = [torch.arange(num_samples)]
    perms += [torch.randperm(num_samples, generator=shuffle) for _ in range(orders - 1)]
    return torch.stack(perms)


def monte_carlo(
    prob: Problem,
    sigma: float,
    draws: int,
    subspace: Subspace | None = None,
    seed: int = 0,
    *,
    antithetic: bool = False,
    orders: int = 1,
    order_seed: int = 0,
    progress: bool = True,
    draws_per_call: int = 256,
    max_kept: int = 20_000_000,
) -> Curve:
    """Monte Carlo estimate of Δ_k = E (L_k(w) − L_{k−1}(w))² for every k = 2..K.

    Draws w = w* + P z, z ~ N(0, σ² I_d), with P the subspace basis (the identity in the full
    space), so every one of the d directions moves. Each draw costs one evaluation of the K
    per-sample losses; all Δ_k follow from cumulative sums. Draws whose losses are not finite
    (possible at large σ) are left out of the k they affect and counted in ``nonfinite``.

    Args:
        prob: the problem (network, ordered samples, centre).
        sigma: standard deviation of the Gaussian perturbation, > 0.
        draws: number of parameter vectors to evaluate (even when ``antithetic``).
        subspace: perturb only inside this subspace; None for the full space.
        seed: seed of the perturbations; the same seed (and dtype) gives the same curve, whatever
            the memory budget and chunking.
        antithetic: draw pairs (z, −z) and average each pair before taking the mean. Under the
            quadratic model this cancels the odd term cᵀz·(a + ½zᵀMz) of d_k², which dominates
            the variance when the gradient difference is large; benchmarks/ measures the gain.
        orders: average over this many data orders (the Problem's order first, then random ones
            drawn with ``order_seed``); the per-order curves are kept in ``per_order``.
        progress: show a progress bar over chunks of draws.
        draws_per_call: parameter vectors handed to ``Problem.per_sample_losses`` per call, at most
            (fewer calls cost less bookkeeping; the Problem splits them further into its own
            fastest chunks). Fewer if the per-draw arrays would not fit in ``prob.max_memory``.
        max_kept: per-draw values of d_k² are kept in ``samples`` (for bootstrap intervals) while
            they take at most this many floats.

    Returns:
        A ``Curve`` with value and standard error for every k.
    """
    check_problem(prob)
    sigma = check_positive("sigma", sigma)
    draws = check_int("draws", draws, low=2)
    seed = check_seed("seed", seed)
    antithetic = check_flag("antithetic", antithetic)
    orders = check_int("orders", orders, low=1)
    order_seed = check_seed("order_seed", order_seed)
    draws_per_call = check_int("draws_per_call", draws_per_call, low=1)
    max_kept = check_int("max_kept", max_kept, low=0)
    if antithetic and draws % 2:
        raise ValueError(f"draws={draws} must be even when antithetic=True (pairs ±z).")
    if prob.num_samples < 2:
        raise ValueError("the problem needs at least K=2 samples to compare L_k with L_{k-1}.")
    subspace = check_subspace(prob, subspace)
    dim = prob.num_params if subspace is None else subspace.dim

    perms = order_permutations(prob.num_samples, orders, order_seed).to(prob.device)
    draw = generator(seed)
    pair = 2 if antithetic else 1
    units = draws // pair
    keep = units * (prob.num_samples - 1) <= max_kept
    # draws per call of per_sample_losses (which chunks further for its own memory): as many as
    # keep our per-draw arrays (the step, losses and squared differences over every order) within
    # the memory budget, at most draws_per_call so the progress bar moves
    per_draw = 8 * (prob.num_params + 3 * orders * prob.num_samples)
    chunk_units = max(1, min(draws_per_call, prob.max_memory // per_draw) // pair)

    stats = _RunningMoments(prob.num_samples - 1, orders)
    kept = []
    progress_bar = bar(total=units, desc="Monte Carlo draws", unit="draw", enabled=progress)
    for chunk in spans(units, chunk_units):
        n = chunk.stop - chunk.start
        z = torch.empty(n, dim, dtype=prob.dtype)
        for row in z:  # one randn(d) per draw, so the draws do not depend on the chunk sizes
            torch.randn(dim, generator=draw, dtype=prob.dtype, out=row)
        z = z.mul_(sigma).to(device=prob.device)
        if antithetic:
            z = torch.cat([z, -z])
        step = z if subspace is None else z @ subspace.basis.T
        losses = prob.per_sample_losses(prob.center + step).to(torch.float64)
        ordered = losses[:, None] if orders == 1 else losses[:, perms]  # (n·pair, orders, K)
        sq = prefix_differences(ordered).square()
        if antithetic:
            sq = 0.5 * (sq[:n] + sq[n:])
        stats.update(sq)
        if keep:
            kept.append(_compact((sq[:, 0] if orders == 1 else sq.mean(1)).cpu()))
        progress_bar.update(n)
    progress_bar.close()

    per_order = stats.per_order_mean()
    empty = int((stats.count == 0).sum())
    if empty:
        warnings.warn(
            f"at sigma={sigma:g} every one of the {draws} draws gave a non-finite loss for "
            f"{empty} of the {len(stats.count)} values of k: Δ_k is NaN there (see "
            "curve.nonfinite); lower sigma.",
            RuntimeWarning,
            stacklevel=2,
        )
    return Curve(
        k=np.arange(2, prob.num_samples + 1),
        value=stats.mean(),
        stderr=stats.stderr(),
        sigma=sigma,
        draws=draws,
        dim=dim,
        nonfinite=stats.nonfinite * pair,
        orders=orders,
        per_order=per_order if orders > 1 else None,
        samples=torch.cat(kept).numpy() if keep else None,
        antithetic=antithetic,
    )


def across_orders(curve: Curve) -> Curve:
    """The same estimate, with its uncertainty taken over data orders instead of draws.

    With ``orders=P > 1`` the value averages P data orders, but ``stderr`` and ``samples`` describe
    only the spread over parameter draws for those P fixed orders. Which sample comes k-th moves
    d_k far more than the draws do, so an interval meant for the network or the data set (not for
    these P orders) must resample orders. The returned curve has the same ``value``, ``stderr`` =
    std over orders / √P of the per-order estimates, and ``samples`` = those estimates
    (P × (K−1)), so ``fit_rate`` and ``sufficiency.k_star`` bootstrap over orders.

    Example:
        >>> curve = monte_carlo(prob, 0.1, 200, orders=30)   # doctest: +SKIP
        >>> across_orders(curve).fit_rate(k_min=20).alpha_ci
    """
    if curve.per_order is None or curve.orders < 2:
        raise ValueError(
            f"the curve averages {curve.orders} data order(s); run monte_carlo(..., orders=P) "
            "with P >= 2 to take intervals over orders."
        )
    per_order = curve.per_order
    with np.errstate(invalid="ignore"):
        stderr = np.nanstd(per_order, axis=0, ddof=1) / np.sqrt(curve.orders)
    return replace(curve, stderr=stderr, samples=per_order)


def pointwise(
    prob: Problem, orders: int = 100, seed: int = 0, level: float = 0.9
) -> PointwiseCurve:
    """|L_k(w*) − L_{k−1}(w*)| for k = 2..K over ``orders`` data orders (paper 002's metric).

    One evaluation of the per-sample losses at w*; each order is a permutation of them followed by
    a cumulative sum. The first order is the Problem's own. Nothing is smoothed: the band is the
    empirical central ``level`` quantile range of the orders.
    """
    check_problem(prob)
    orders = check_int("orders", orders, low=1)
    seed = check_seed("seed", seed)
    level = check_fraction("level", level)
    if prob.num_samples < 2:
        raise ValueError("the problem needs at least K=2 samples to compare L_k with L_{k-1}.")
    losses = prob.per_sample_losses(prob.center).to(torch.float64)
    perms = order_permutations(prob.num_samples, orders, seed).to(prob.device)
    curves = prefix_differences(losses[perms]).abs().cpu().numpy()
    tail = (1 - level) / 2
    return PointwiseCurve(
        k=np.arange(2, prob.num_samples + 1),
        value=curves.mean(0),
        stderr=curves.std(0, ddof=1) / np.sqrt(orders) if orders > 1 else np.zeros(curves.shape[1]),
        lower=np.quantile(curves, tail, axis=0),
        upper=np.quantile(curves, 1 - tail, axis=0),
        level=level,
        orders=orders,
        samples=curves,
    )


def ball_ratios(
    prob: Problem,
    max_loss: float,
    max_hessian_norm: float,
    radii: Sequence[float],
    *,
    points: int = 64,
    gradients: int = 16,
    seed: int = 0,
) -> dict[float, np.ndarray]:
    """Paper 002's pointwise bound tested beyond w*: worst ratios on spheres around the centre.

    Paper 002 bounds |L_k(w) − L_{k−1}(w)| ≤ 2(M_ℓ + M_H R²)/k for every w with ‖w − w*‖ ≤ R. For
    each radius R·‖w*‖ (``radii`` are fractions of ‖w*‖) the per-sample losses are evaluated at
    w* + R‖w*‖u for ``points`` random orthonormal directions u and for the unit loss gradients of
    the ``gradients`` worst-fitted samples (where their losses rise fastest, so where the bound is
    most at risk); each point's worst ratio over every data order and k is
    :func:`landscape.theory.pointwise_bound_ratio` (above 1: the bound fails there).

    Returns:
        ``{0.0: ratios at w*, R: ratios on that sphere}``, each a ``(points + gradients,)`` array
        (at R = 0 all points are w*).
    """
    check_problem(prob)
    radii = [check_positive("radii", R) for R in radii]
    points = check_int("points", points, low=1, high=prob.num_params)
    gradients = check_int("gradients", gradients, low=0, high=prob.num_samples)
    seed = check_seed("seed", seed)
    losses = prob.per_sample_losses(prob.center).to(torch.float64)
    worst = torch.argsort(losses)[len(losses) - gradients :].to(prob.X.device)
    units = [random_directions(prob, points, kind="gaussian", seed=seed).basis.T]
    if gradients:
        g = per_sample_gradients(prob.subset(worst))[0]
        units.append(g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny))
    U = torch.cat(units)
    scale = float(prob.center.norm())
    return {
        R: theory.pointwise_bound_ratio(
            prob.per_sample_losses(prob.center + R * scale * U).double().cpu().numpy(),
            max_loss,
            max_hessian_norm,
            R * scale,
        )
        for R in [0.0, *radii]
    }


def _compact(values: Tensor) -> Tensor:
    """Per-draw values in float32 to halve their memory, unless float32 would change them:
    any finite non-zero value beyond float32's range (above ~3.4e38, which would become inf and
    turn the bootstrap interval into NaN, or below ~1.2e-38) keeps the chunk in float64."""
    single = values.float()
    low, high = torch.aminmax(single)
    if low >= torch.finfo(torch.float32).tiny and high < torch.inf:
        return single  # every value a positive normal float32 (the usual d_k²): one pass
    magnitude = single.abs()
    # overflow: a finite value became inf; underflow: a non-zero value became 0 or subnormal
    overflow = (magnitude == torch.inf) & torch.isfinite(values)
    underflow = (magnitude < torch.finfo(torch.float32).tiny) & (values != 0)
    return values.to(torch.float64) if bool((overflow | underflow).any()) else single


class _RunningMoments:
    """Mean and variance over draws per k, merged chunk by chunk (Chan et al.), skipping non-finite.

    A unit's value at k is the mean over orders of d_k²; the unit is left out at k when any
    order's value there is not finite.
    """

    def __init__(self, length: int, orders: int) -> None:
        self.count = np.zeros(length)
        self._mean = np.zeros(length)
        self.m2 = np.zeros(length)
        self.order_sum = np.zeros((orders, length))
        self.nonfinite = np.zeros(length, dtype=np.int64)

    def update(self, sq: Tensor) -> None:
        """Merge a chunk of values ``sq`` (n, orders, K−1), on any device."""
        orders = sq.shape[1]
        unit = sq.mean(1) if orders > 1 else sq[:, 0]
        mean = unit.mean(0)
        m2 = (unit - mean).square_().sum(0)
        if bool(torch.isfinite(m2).all()):  # then every value was finite: the usual case
            self.order_sum += (sq.sum(0) if orders > 1 else len(sq) * mean[None]).cpu().numpy()
            self._merge(len(sq), mean.cpu().numpy(), m2.cpu().numpy())
            return
        sq = sq.cpu().numpy()
        finite = np.isfinite(sq).all(1)  # (n, K−1)
        unit = np.where(finite, sq.mean(1), 0.0)
        self.order_sum += np.where(finite[:, None, :], sq, 0.0).sum(0)
        self.nonfinite += (~finite).sum(0)
        n = finite.sum(0).astype(float)
        safe_n = np.maximum(n, 1)
        mean = unit.sum(0) / safe_n
        m2 = (np.where(finite, unit - mean, 0.0) ** 2).sum(0)
        self._merge(n, mean, m2)

    def _merge(self, n: np.ndarray | int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Merge a chunk's count(s), mean and sum of squared deviations (Chan et al.)."""
        total = self.count + n
        safe_total = np.maximum(total, 1)
        delta = mean - self._mean
        self._mean = self._mean + delta * n / safe_total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / safe_total
        self.count = total

    def mean(self) -> np.ndarray:
        return np.where(self.count > 0, self._mean, np.nan)

    def stderr(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            var = self.m2 / (self.count - 1)
            return np.where(self.count > 1, np.sqrt(var / self.count), np.nan)

    def per_order_mean(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.count > 0, self.order_sum / self.count, np.nan)

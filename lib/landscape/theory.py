"""Closed forms, bounds and rate fits: the mathematics the measured curves are checked against.

Each function evaluates one formula, stated in its docstring, on numbers the estimators produced
(``relu_mlp_norms`` reads the norms that paper 002's bound needs off a Problem). Conventions follow SPEC §1: d_k = L_k − L_{k−1} for k ≥ 2,
M_k = Pᵀ(H_k − H̄_{k−1})P / k, perturbation z ~ N(0, σ² I_d).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .checks import (
    check_choice,
    check_fraction,
    check_int,
    check_nonnegative,
    check_numbers,
    check_positive,
    check_seed,
)

# -- closed forms ---------------------------------------------------------------------------------


def complete_form(gap, grad_sq, trace, trace_sq, sigma: float) -> np.ndarray:
    """E d_k² under the quadratic model d ≈ a + cᵀz + ½ zᵀMz, z ~ N(0, σ²I):

        (a_k + σ²/2 · Tr M_k)² + σ² ‖c_k‖² + σ⁴/2 · Tr M_k².

    Exact for a quadratic loss; the odd moments of z vanish and E(zᵀMz)² = σ⁴(Tr²M + 2 Tr M²).
    """
    s2 = check_positive("sigma", sigma) ** 2
    gap, grad_sq, trace, trace_sq = _aligned(
        gap=gap, grad_sq=grad_sq, trace=trace, trace_sq=trace_sq
    )
    return (gap + s2 / 2 * trace) ** 2 + s2 * grad_sq + s2**2 / 2 * trace_sq


def paper_form(trace, trace_sq, sigma: float) -> np.ndarray:
    """The main paper's §4.2 form σ⁴/4 · (Tr²M_k + 2 Tr M_k²).

    It assumes a_k = 0 and c_k = 0; at a fixed w* neither holds, and at small σ the a_k² term
    of ``complete_form`` dominates, so this form underestimates Δ_k by orders of magnitude.
    """
    s2 = check_positive("sigma", sigma) ** 2
    trace, trace_sq = _aligned(trace=trace, trace_sq=trace_sq)
    return s2**2 / 4 * (trace**2 + 2 * trace_sq)


# -- bounds ---------------------------------------------------------------------------------------


def lemma1_bound(spectral_norm, dim: int) -> np.ndarray:
    """Lemma 1 of the main paper: Tr²A + 2 Tr A² ≤ N(N+2) ‖A‖₂² for symmetric A (N = dim).

    From Tr A ≤ N‖A‖₂ and Tr A² = ‖A‖_F² ≤ N‖A‖₂².
    """
    dim = check_int("dim", dim, low=1)
    return dim * (dim + 2) * check_numbers("spectral_norm", spectral_norm, ndim=None) ** 2


def hessian_difference_bound(max_hessian_norm: float, k, constant: str = "corrected") -> np.ndarray:
    """Bound on ‖M_k‖₂² for M_k = (H_k − H̄_{k−1})/k with every ‖H_i‖₂ ≤ M_H.

    ``"corrected"``: the triangle inequality gives ‖H_k − H̄_{k−1}‖₂ ≤ 2M_H, so
    ‖M_k‖₂² ≤ 4M_H²/k². ``"paper"``: the main paper's §4.4 writes 2M_H²/k² (its (k+1) is our k),
    a factor 2 too small.
    """
    check_choice("constant", constant, ("corrected", "paper"))
    factor = 4.0 if constant == "corrected" else 2.0
    norm = check_nonnegative("max_hessian_norm", max_hessian_norm)
    return factor * norm**2 / _sample_counts(k) ** 2


def theorem1_bound(sigma: float, dim: int, max_hessian_norm: float, k, constant: str = "corrected"):
    """Theorem 1 of the main paper: the paper form is at most σ⁴/4 · d(d+2) ‖M_k‖₂², hence

        Δ_k ≤ σ⁴ d(d+2) M_H² / k²     (corrected constant; the paper's text has half of it).

    It bounds only the c = a = 0 part, so it cannot hold as σ → 0 while a_k ≠ 0: the measured
    Δ_k tends to a_k², the bound to 0.
    """
    s = check_positive("sigma", sigma)
    dim = check_int("dim", dim, low=1)
    return (
        s**4 / 4 * lemma1_bound(1.0, dim) * hessian_difference_bound(max_hessian_norm, k, constant)
    )


def complete_bound(
    sigma: float, dim: int, max_loss: float, max_grad_norm: float, max_hessian_norm: float, k
) -> np.ndarray:
    """A bound on the complete quadratic model that holds for every σ:

        Δ_k ≤ (2 M_ℓ² + 4 σ² M_g² + 2 σ⁴ d(d+1) M_H²) / k²,

    from (x+y)² ≤ 2x² + 2y², |a_k| ≤ M_ℓ/k (losses in [0, M_ℓ]), ‖c_k‖ ≤ 2M_g/k,
    Tr²M ≤ d²‖M‖₂², Tr M² ≤ d‖M‖₂² and ‖M_k‖₂ ≤ 2M_H/k, with M_ℓ = max l_i(w*),
    M_g = max ‖Pᵀg_i‖, M_H = max ‖PᵀH_iP‖₂.
    """
    s2 = check_positive("sigma", sigma) ** 2
    dim = check_int("dim", dim, low=1)
    max_loss = check_nonnegative("max_loss", max_loss)
    max_grad_norm = check_nonnegative("max_grad_norm", max_grad_norm)
    max_hessian_norm = check_nonnegative("max_hessian_norm", max_hessian_norm)
    k = _sample_counts(k)
    numerator = (
        2 * max_loss**2
        + 4 * s2 * max_grad_norm**2
        + 2 * s2**2 * dim * (dim + 1) * max_hessian_norm**2
    )
    return numerator / k**2


def relu_mlp_hessian_bound(depth: int, max_input_norm: float, max_weight_norm: float) -> float:
    """Paper 002's bound on a per-sample Hessian of a bias-free ReLU MLP with L hidden layers:

        ‖H_i‖₂ ≤ L√2 · M_x² · M_W^{2L} + √2 · M_W² (M_W^{2L} − 1)/(M_W² − 1),

    M_x = max ‖x_i‖, M_W = max over layers of the weight spectral norm (the geometric sum is L at
    M_W = 1). Evaluate the norms with ``relu_mlp_norms``.
    """
    L = check_int("depth", depth, low=1)
    mx = check_nonnegative("max_input_norm", max_input_norm)
    mw = check_nonnegative("max_weight_norm", max_weight_norm)
    first = L * np.sqrt(2) * mx**2 * mw ** (2 * L)
    if np.isclose(mw, 1.0):
        geometric = L
    else:
        geometric = (mw ** (2 * L) - 1) / (mw**2 - 1)
    return float(first + np.sqrt(2) * mw**2 * geometric)


def relu_mlp_norms(prob) -> tuple[int, float, float]:
    """(L, M_x, M_W) of a bias-free ReLU MLP for ``relu_mlp_hessian_bound``.

    L is the number of hidden layers (linear layers − 1), M_x = max_i ‖x_i‖ over the Problem's
    samples, M_W = max over linear layers of the spectral norm of the weight at w*. Any other
    network is refused: paper 002's bound is derived for this family only.
    """
    from torch import nn

    allowed = (nn.Sequential, nn.Linear, nn.ReLU, nn.Flatten)
    modules = list(prob.model.modules())
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    if any(not isinstance(m, allowed) for m in modules) or any(m.bias is not None for m in linears):
        raise ValueError(
            "paper 002's Hessian bound holds for bias-free ReLU MLPs (Linear(bias=False), ReLU); "
            "build one with models.build('mlp', ..., bias=False)."
        )
    weights = prob.unflatten(prob.center)
    names = [n for n in prob.names if n.endswith("weight")]
    norms = [float(np.linalg.norm(weights[n].detach().cpu().double().numpy(), 2)) for n in names]
    max_input = float(prob.X.flatten(1).norm(dim=1).max())
    return len(linears) - 1, max_input, max(norms)


def pointwise_bound(max_loss: float, max_hessian_norm: float, radius: float, k) -> np.ndarray:
    """Paper 002: |L_{k+1}(w) − L_k(w)| ≤ 2(M_ℓ + M_H R²)/(k+1) within radius R of w*.

    In our indexing (d_k = L_k − L_{k−1}) the denominator is k.
    """
    max_loss = check_nonnegative("max_loss", max_loss)
    max_hessian_norm = check_nonnegative("max_hessian_norm", max_hessian_norm)
    radius = check_nonnegative("radius", radius)
    return 2 * (max_loss + max_hessian_norm * radius**2) / _sample_counts(k)


def pointwise_bound_ratio(losses, max_loss: float, max_hessian_norm: float, radius: float):
    """Worst case, over every data order and every k, of |d_k(w)| against ``pointwise_bound``.

    For per-sample losses l_1..l_K at a point w and any order, k·|d_k(w)| = |l_k − L_{k−1}(w)|,
    and L_{k−1} is a mean of the other losses, so it is at most max_i l_i − min_i l_i, with
    equality at k = 2 for the order that puts the smallest and the largest loss first. The largest
    ratio of |d_k(w)| to paper 002's 2(M_ℓ + M_H R²)/k over all orders and k = 2..K is therefore

        (max_i l_i(w) − min_i l_i(w)) / (2(M_ℓ + M_H R²)),

    one number per row of ``losses`` (one row per point w; a 1-D array is one point). Above 1
    the bound fails at that point for some order; no order needs to be drawn to know it.

    Example:
        >>> pointwise_bound_ratio([0.1, 2.0, 0.5], max_loss=2.0, max_hessian_norm=1.0, radius=0.0)
        array(0.475)
    """
    losses = check_numbers("losses", losses, ndim=None)
    if losses.ndim == 0 or losses.shape[-1] < 2:
        raise ValueError(
            f"losses has shape {losses.shape}; expected K >= 2 per-sample losses per point "
            "(the last axis), so that d_k = L_k - L_(k-1) exists."
        )
    if not np.isfinite(losses).all():
        raise ValueError("losses holds non-finite values; the worst case over orders is undefined.")
    bound = pointwise_bound(max_loss, max_hessian_norm, radius, 1.0) / 2
    if not bound > 0:
        raise ValueError(
            f"the bound 2(M_l + M_H R^2) is {2 * bound:g}; it must be positive to compare with."
        )
    return np.asarray((losses.max(-1) - losses.min(-1)) / (2 * bound))


# -- rates ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RateFit:
    """log value = intercept + slope · log k, fitted on k_min ≤ k ≤ k_max.

    Unpacks as ``slope, intercept, ci = fit``. ``alpha = −slope`` is the decay rate (Theorem 1
    predicts 2 for Δ_k, paper 002 predicts 1 for the pointwise metric); ``constant = e^intercept``
    is C in value ≈ C k^(−α). Intervals are bias-corrected bootstrap percentiles at ``level``
    (``bootstrap_interval``); ``bootstrap`` holds the (slope, intercept) pairs they come from (for
    intervals of derived numbers).
    """

    slope: float
    intercept: float
    ci: tuple[float, float]
    intercept_ci: tuple[float, float]
    k_min: int
    k_max: int
    points: int
    level: float
    method: str
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)

    def __repr__(self) -> str:
        low, high = self.alpha_ci
        return (
            f"RateFit(α = {self.alpha:.3g} [{low:.3g}, {high:.3g}] at {self.level:.0%}, "
            f"C = {self.constant:.3g}, k = {self.k_min}..{self.k_max} ({self.points} points), "
            f"{self.method})"
        )

    def __iter__(self):
        return iter((self.slope, self.intercept, self.ci))

    @property
    def alpha(self) -> float:
        return -self.slope

    @property
    def alpha_ci(self) -> tuple[float, float]:
        return (-self.ci[1], -self.ci[0])

    @property
    def constant(self) -> float:
        return float(np.exp(self.intercept))

    def predict(self, k) -> np.ndarray:
        """C k^(−α) at ``k`` (an extrapolation outside [k_min, k_max])."""
        return np.exp(self.intercept + self.slope * np.log(np.asarray(k, dtype=float)))


def fit_rate(
    k,
    values,
    k_min: int = 10,
    k_max: int | None = None,
    *,
    samples=None,
    stderr=None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    units: str = "draws",
    groups=None,
    group_units: str = "seeds",
) -> RateFit:
    """Least-squares fit of log values = log C − α log k on k_min ≤ k ≤ k_max, with a bootstrap.

    The interval resamples what the estimate is an average of: the rows of ``samples`` (units ×
    len(k), whose column means are ``values``; ``units`` names them — "draws", "orders" — in
    ``method``) when given; otherwise a parametric bootstrap from
    ``stderr``; otherwise the (k, value) pairs. Points with non-positive or non-finite values are
    left out of the fit (their count is ``len(range) − points``). Never smooth before fitting.

    ``groups`` labels the rows of ``samples`` by what they share (the training seed whose network
    several data orders were measured on; ``group_units`` names it). Rows of one group are not
    independent, so with two or more groups the bootstrap is two-level (a cluster bootstrap,
    Davison & Hinkley 1997 §3.8): draw the groups with replacement, then rows within each drawn
    group with replacement. With one group, or none, it is the plain bootstrap over rows.
    """
    k, values = check_numbers("k", k), check_numbers("values", values)
    if k.shape != values.shape:
        raise ValueError(
            f"k and values must be 1-D of equal length; got {k.shape}, {values.shape}."
        )
    _check_sample_counts(k)
    k_min = check_int("k_min", k_min, low=1)
    k_max = int(k.max()) if k_max is None else check_int("k_max", k_max, low=k_min)
    n_boot = check_int("n_boot", n_boot, low=0)
    level = check_fraction("level", level)
    seed = check_seed("seed", seed)
    if stderr is not None:
        stderr = check_numbers("stderr", stderr)
        if stderr.shape != k.shape:
            raise ValueError(
                f"stderr has shape {stderr.shape}; expected one standard error per k, {k.shape}."
            )
    if samples is not None:
        samples = check_numbers("samples", samples, ndim=2)
        if samples.shape[1] != len(k) or not len(samples):
            raise ValueError(
                f"samples has shape {samples.shape}; expected (units, {len(k)}): one row per "
                "draw (or order), one column per k."
            )
        clusters = _clusters(groups, len(samples))
    window = (k >= k_min) & (k <= k_max)
    usable = window & np.isfinite(values) & (values > 0)
    _check_enough_points(k, values, window, usable, k_min, k_max)
    logk = np.log(k[usable])
    slope, intercept = _ols(logk, np.log(values[usable]))

    rng = np.random.default_rng(seed)
    boots = []
    if samples is not None and n_boot:
        samples = samples[:, usable]
        method = (
            f"bootstrap over {units}"
            if clusters is None
            else f"bootstrap over {group_units}, then {units} within each"
        )
        for _ in range(n_boot):
            rows = (
                rng.integers(0, len(samples), len(samples))
                if clusters is None
                else _two_level(rng, clusters)
            )
            boot = samples[rows].mean(0)
            ok = np.isfinite(boot) & (boot > 0)
            if ok.sum() >= 3:
                boots.append(_ols(logk[ok], np.log(boot[ok])))
    elif stderr is not None and n_boot:
        stderr = stderr[usable]
        method = "parametric bootstrap from standard errors"
        for _ in range(n_boot):
            boot = values[usable] + np.nan_to_num(stderr) * rng.standard_normal(usable.sum())
            ok = boot > 0
            if ok.sum() >= 3:
                boots.append(_ols(logk[ok], np.log(boot[ok])))
    elif n_boot:
        method = "bootstrap over (k, value) pairs"
        logv = np.log(values[usable])
        for _ in range(n_boot):
            rows = rng.integers(0, len(logk), len(logk))
            if np.ptp(logk[rows]) > 0:
                boots.append(_ols(logk[rows], logv[rows]))
    else:
        method = "no interval (n_boot=0)"
    if n_boot and len(boots) < 0.9 * n_boot:
        # replicates were lost (fewer than 3 usable points): what is left is a biased sample of
        # the bootstrap distribution, and its percentiles can even exclude the estimate
        warnings.warn(
            f"only {len(boots)} of {n_boot} bootstrap replicates ({method}) had 3 or more positive "
            f"finite points with {k_min} <= k <= {k_max}; the interval is left NaN.",
            RuntimeWarning,
            stacklevel=2,
        )
        boots = []
    if boots:
        boots = np.array(boots)
        ci = bootstrap_interval(boots[:, 0], slope, level)
        intercept_ci = bootstrap_interval(boots[:, 1], intercept, level)
    else:
        ci = intercept_ci = (np.nan, np.nan)
    return RateFit(
        slope=float(slope),
        intercept=float(intercept),
        ci=(float(ci[0]), float(ci[1])),
        intercept_ci=(float(intercept_ci[0]), float(intercept_ci[1])),
        k_min=k_min,
        k_max=k_max,
        points=int(usable.sum()),
        level=level,
        method=method,
        bootstrap=np.asarray(boots, dtype=float).reshape(-1, 2),
    )


def _clusters(groups, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The rows sorted by group of ``groups`` (one label per row), where each group starts among
    them and its size; None for a single group (or none), whose bootstrap is the plain one."""
    if groups is None:
        return None
    labels = np.asarray(groups)
    if labels.shape != (rows,):
        raise ValueError(
            f"groups has shape {labels.shape}; expected one label per row of samples, ({rows},)."
        )
    _, which, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    if len(sizes) < 2:
        return None
    return np.argsort(which, kind="stable"), np.cumsum(sizes) - sizes, sizes


def _two_level(rng: np.random.Generator, clusters: tuple[np.ndarray, ...]) -> np.ndarray:
    """Rows of one two-level bootstrap replicate: as many groups as there are, drawn with
    replacement, then as many rows as each drawn group has, drawn with replacement within it."""
    order, starts, sizes = clusters
    picked = rng.integers(0, len(sizes), len(sizes))
    start, size = np.repeat(starts[picked], sizes[picked]), np.repeat(sizes[picked], sizes[picked])
    return order[start + rng.integers(0, size)]


def _aligned(**arrays) -> list[np.ndarray]:
    """The named arrays as float arrays that broadcast together (one value per k), or an error."""
    values = [check_numbers(name, a, ndim=None) for name, a in arrays.items()]
    try:
        np.broadcast_shapes(*(v.shape for v in values))
    except ValueError:
        shapes = ", ".join(f"{n} {v.shape}" for n, v in zip(arrays, values))
        raise ValueError(
            f"the terms must be aligned with k (equal shapes); got {shapes}."
        ) from None
    return values


def _sample_counts(k) -> np.ndarray:
    """``k`` as a float array of finite sample counts > 0 (bounds divide by k)."""
    k = check_numbers("k", k, ndim=None)
    _check_sample_counts(k.reshape(-1), why="the bound divides by k")
    return k


def _check_sample_counts(k: np.ndarray, why: str = "the fit is in log k") -> None:
    """k must be finite and positive (a fit is linear in log k; a bound divides by k)."""
    bad = ~np.isfinite(k) | ~(k > 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"k must hold finite sample counts > 0 ({why}); got k[{i}]={k[i]:g} "
            f"({int(bad.sum())} such value(s))."
        )


def _check_enough_points(k, values, window, usable, k_min: int, k_max: int) -> None:
    """At least 3 usable points at 2 or more distinct k, with a message saying what is missing."""
    if not window.any():
        raise ValueError(
            f"no k lies in k_min={k_min} <= k <= k_max={k_max}; the curve runs over "
            f"{k.min():g} <= k <= {k.max():g}."
        )
    finite = window & np.isfinite(values)
    if not finite.any():
        raise ValueError(
            f"every value with {k_min} <= k <= {k_max} is non-finite (NaN or inf): there is "
            "nothing to fit. For a Monte Carlo curve this means every draw's loss was non-finite "
            "(see curve.nonfinite): lower sigma."
        )
    if usable.sum() < 3:
        raise ValueError(
            f"only {int(usable.sum())} positive finite values with {k_min} <= k <= {k_max} "
            f"({int(window.sum() - finite.sum())} non-finite, "
            f"{int((finite & ~(values > 0)).sum())} <= 0); need at least 3 to fit a rate "
            "(widen the range of k or use more samples)."
        )
    distinct = np.unique(k[usable])
    if len(distinct) < 2:
        raise ValueError(
            f"every usable point has the same k={distinct[0]:g}; a rate needs values at two or "
            "more distinct k."
        )


def bootstrap_interval(boots, estimate: float, level: float = 0.95) -> tuple[float, float]:
    """Bias-corrected percentile interval (Efron 1981) of ``estimate`` from its bootstrap replicates.

    With p₀ the fraction of replicates below the estimate and z₀ = Φ⁻¹(p₀), the interval is the
    Φ(2z₀ ∓ z_{(1+level)/2}) percentiles of the replicates; for z₀ = 0 these are the plain
    percentiles. The correction matters for log-means of heavy-tailed units (per-order or per-draw
    d_k²): their replicates fall mostly below the estimate, and plain percentiles can then exclude
    the estimate itself. Where (nearly) all replicates lie on one side the correction collapses the
    interval onto the extreme replicate; the plain percentiles are used then. The interval always
    contains the estimate (it is widened to reach it). NaN replicates are ignored; none left gives
    (NaN, NaN).

    Example:
        >>> bootstrap_interval(np.arange(1000.0), 499.5, 0.9)  # doctest: +ELLIPSIS
        (49.9..., 949.0...)
    """
    from scipy.stats import norm

    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    if not boots.size:
        return (float("nan"), float("nan"))
    n = boots.size
    below = (np.sum(boots < estimate) + 0.5 * np.sum(boots == estimate)) / n
    z0 = norm.ppf(np.clip(below, 1 / (n + 1), n / (n + 1)))
    z = norm.ppf(0.5 + level / 2)
    low, high = norm.cdf(2 * z0 - z), norm.cdf(2 * z0 + z)
    if high - low < level / 2:
        # (nearly) every replicate falls on one side: the corrected percentiles collapse onto the
        # extreme replicate (a zero-width interval that may exclude the estimate). The bootstrap
        # is biased there, not the estimate certain: use the plain percentiles instead.
        low, high = 0.5 - level / 2, 0.5 + level / 2
    lo, hi = (float(x) for x in np.percentile(boots, [100 * low, 100 * high]))
    # never report an interval without its own estimate
    return (min(lo, float(estimate)), max(hi, float(estimate)))


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)

"""How much data is enough: k*(ε), power-law extrapolation, and learning curves.

k*(ε) is the smallest k after which the upper confidence bound of Δ_k stays below ε. Where the
measured curve never settles below ε before the data run out, k* is extrapolated from the fitted
power law Δ_k ≈ C k^(−α) and flagged as an extrapolation, with an interval from the fit's
bootstrap. A relative criterion divides Δ_k by L_k(w*)². ``pool`` joins the curves of independent
training seeds into one over seeds × orders whose uncertainty is taken over seeds (standard errors
over the seeds, bootstraps over seeds and then orders within each). The learning curve (test accuracy of
networks trained on the first k samples), the performance-based answer to set beside it, lives
in ``experiment`` (it trains networks; nothing here does).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import stats

from .checks import check_choice, check_fraction, check_int, check_positive
from .delta import Curve
from .prefix import means
from .problem import Problem, check_problem
from .theory import RateFit, bootstrap_interval

#: What ``k_star`` thresholds: Δ_k itself, or Δ_k / L_k(w*)² (see ``relative``).
CRITERIA = ("absolute", "relative")


#: What a k*(ε) is: seen in the data, extrapolated by the power law, or neither (SPEC §11).
KINDS = ("measured", "extrapolated", "censored")

#: A crossing counts as measured only inside this share of the measured k: "stays below ε from
#: k on" says little when only a few k after it were seen.
MEASURED_SHARE = 0.9

#: How far above the fitted power law the measured bound may sit at the end of the measured share
#: before an extrapolation is refused (the bound carries z standard errors the mean does not).
FIT_TOLERANCE = 2.0


@dataclass(frozen=True, eq=False)
class Sufficiency:
    """The answer to "how many samples until Δ_k stays below ε?", with what kind of answer it is.

    Attributes:
        epsilon: the threshold.
        k_star: the conservative answer: the k from which the upper confidence bound of Δ_k stays
            below ε when ``"measured"``; the upper end of the bootstrap interval of the power law's
            crossing when ``"extrapolated"``; NaN when ``"censored"``.
        estimate: the same from the point estimate (the curve itself, or the fitted power law);
            NaN when censored.
        interval: (from the lower confidence bound, from the upper) when measured; bootstrap
            percentiles of the crossing when extrapolated; (NaN, NaN) when censored.
        kind: ``"measured"`` — the upper bound settles below ε within the first
            ``MEASURED_SHARE`` of the measured k; ``"extrapolated"`` — it does not, and the power
            law fitted on the data (its slope's interval wholly negative, the measured bound
            following it at the end of the measured share) crosses ε beyond the data; ``"censored"`` — neither: k* lies beyond ``at_least`` and the data cannot say
            where (``reason`` says why).
        level: confidence level of the bounds.
        at_least: for a censored answer, the k beyond which k* must lie (the end of the measured
            share); NaN otherwise.
        reason: why the answer is censored ("" otherwise).
        fit: the power-law fit (None when measured).
        criterion: "absolute" (Δ_k) or "relative" (Δ_k / L_k(w*)²).
    """

    epsilon: float
    k_star: float
    estimate: float
    interval: tuple[float, float]
    kind: str
    level: float
    at_least: float = float("nan")
    reason: str = ""
    fit: RateFit | None = None
    criterion: str = "absolute"

    @property
    def extrapolated(self) -> bool:
        """Whether k* comes from the fitted power law beyond the data."""
        return self.kind == "extrapolated"

    def record(self) -> dict[str, object]:
        """The ``{epsilon, k, interval, kind}`` row of results.json's ``"k_star"`` (SPEC §11)."""
        row = {
            "epsilon": self.epsilon,
            "k": self.k_star,
            "interval": list(self.interval),
            "kind": self.kind,
            "estimate": self.estimate,
            "criterion": self.criterion,
        }
        return {**row, "at_least": self.at_least, "reason": self.reason} if self.reason else row

    def __repr__(self) -> str:
        low, high = self.interval
        if self.kind == "censored":
            return (
                f"Sufficiency({self.criterion}, ε = {self.epsilon:.3g}: censored, k* > "
                f"{self.at_least:,.0f})"
            )
        return (
            f"Sufficiency({self.criterion}, ε = {self.epsilon:.3g}: k* = {self.k_star:,.0f} "
            f"[{low:,.0f}, {high:,.0f}] at {self.level:.0%}, {self.kind})"
        )

    def describe(self) -> str:
        """One sentence a report can print."""
        what = "Δ_k" if self.criterion == "absolute" else "Δ_k / L_k(w*)²"
        if self.kind == "censored":
            return (
                f"The data do not say when {what} stays below ε = {self.epsilon:.3g}: not before "
                f"k = {self.at_least:,.0f}, and {self.reason}."
            )
        low, high = self.interval
        how = (
            "extrapolated from the fitted power law beyond the measured k"
            if self.extrapolated
            else f"measured; {self.level:.0%} upper confidence bound"
        )
        return (
            f"{what} stays below ε = {self.epsilon:.3g} from k* = {self.k_star:,.0f} "
            f"(estimate {self.estimate:,.0f}, interval {low:,.0f}–{high:,.0f}; {how})."
        )


def pool(curves: Sequence[Curve]) -> Curve:
    """Δ_k of independent replicates (training seeds) pooled into one curve over their data orders.

    Each curve comes from its own trained network (and directions) and averages several data
    orders (``monte_carlo(..., orders=P)``, P ≥ 2). The pooled value is the mean over every
    (replicate, order) unit, and ``samples`` and ``per_order`` hold those units, with ``groups``
    the replicate of each. Units of one replicate share its network, so they are not independent:
    with S ≥ 2 replicates, ``stderr`` is the cluster-robust standard error of the mean over the
    replicates (Liang & Zeger 1986, with the small-sample factor S/(S−1)),

        se_k = √(S/(S−1) · Σ_s (Σ_{i∈s} (x_ik − x̄_k))²) / n_k,

    which is std(replicate means)/√S when every replicate has the same number of finite units;
    ``k_star``'s bound takes it with Student's t on S − 1 degrees of freedom, and ``fit_rate``
    (hence an extrapolated k*) bootstraps over replicates, then orders within each. With one
    replicate, ``stderr`` is over its orders (as ``across_orders`` takes it) and the bound normal.

    Example:
        >>> pooled = pool([across_orders(monte_carlo(prob_s, 0.1, 100, orders=5)) for prob_s in probs])  # doctest: +SKIP
    """
    curves = list(curves)
    for i, c in enumerate(curves):
        _check_curve(c)
        if c.per_order is None or c.orders < 2:
            raise ValueError(
                f"curves[{i}] averages {c.orders} data order(s); pool needs each replicate's "
                "per-order estimates (monte_carlo(..., orders=P) with P >= 2)."
            )
        if c.seeds > 1:
            raise ValueError(
                f"curves[{i}] is already pooled over {c.seeds} seeds; pool the per-seed curves."
            )
    if not curves:
        raise ValueError("curves is empty; pass one curve per replicate.")
    first = curves[0]
    for i, c in enumerate(curves[1:], 1):
        if not np.array_equal(c.k, first.k) or c.sigma != first.sigma or c.dim != first.dim:
            raise ValueError(
                f"curves[{i}] (k = {c.k[0]}..{c.k[-1]}, σ = {c.sigma:g}, d = {c.dim}) does not match "
                f"curves[0] (k = {first.k[0]}..{first.k[-1]}, σ = {first.sigma:g}, d = {first.dim})."
            )
    units = np.concatenate([c.per_order for c in curves])
    groups = np.repeat(np.arange(len(curves)), [len(c.per_order) for c in curves])
    with np.errstate(invalid="ignore"):
        value = np.nanmean(units, axis=0)
        stderr = (
            _clustered_stderr(units, groups, value)
            if len(curves) > 1
            else np.nanstd(units, axis=0, ddof=1) / np.sqrt(np.isfinite(units).sum(0))
        )
    return replace(
        first,
        value=value,
        stderr=stderr,
        draws=sum(c.draws for c in curves),
        nonfinite=np.sum([c.nonfinite for c in curves], axis=0),
        orders=len(units),
        per_order=units,
        samples=units,
        groups=groups,
    )


def _clustered_stderr(units: np.ndarray, groups: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Cluster-robust standard error of the column means of ``units`` (rows clustered by
    ``groups``), leaving out non-finite entries; NaN where fewer than two groups are finite."""
    finite = np.isfinite(units)
    residual = np.where(finite, units - mean, 0.0)
    labels = np.unique(groups)
    sums = np.stack([residual[groups == g].sum(0) for g in labels])
    present = np.stack([finite[groups == g].any(0) for g in labels]).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = present / (present - 1) * (sums**2).sum(0) / finite.sum(0) ** 2
    return np.where(present > 1, np.sqrt(var), np.nan)


def relative(curve: Curve, prob: Problem) -> Curve:
    """The curve divided by L_k(w*)², a scale-free version of Δ_k.

    ``curve`` must come from ``prob`` (one value per k = 2..K). Where a prefix loss L_k(w*) is 0
    (a network that fits its first samples exactly, in the Problem's precision) the ratio is
    undefined: it is NaN there, with a warning, and counts as not settled in ``k_star``.
    """
    _check_curve(curve)
    check_problem(prob)
    if len(curve.k) != prob.num_samples - 1 or curve.k[0] != 2:
        raise ValueError(
            f"curve has {len(curve.k)} values for k = {curve.k[0]}..{curve.k[-1]}, but prob has "
            f"K={prob.num_samples} samples (k = 2..{prob.num_samples}); pass the Problem the "
            "curve was measured on."
        )
    losses = prob.per_sample_losses(prob.center).to(torch.float64)
    prefix = means(losses).cpu().numpy()
    scale = prefix[1:] ** 2
    undefined = ~(np.isfinite(scale) & (scale > 0))
    if undefined.any():
        first = int(np.flatnonzero(undefined)[0])
        warnings.warn(
            f"L_k(w*) is {prefix[first + 1]:g} at k={first + 2} ({int(undefined.sum())} such k): "
            "Δ_k / L_k(w*)² is undefined there and set to NaN (it counts as not settled); "
            "dtype='float64' helps where float32 rounded the losses to 0.",
            RuntimeWarning,
            stacklevel=2,
        )
        scale = np.where(undefined, np.nan, scale)
    per_order = None if curve.per_order is None else curve.per_order / scale
    if curve.samples is curve.per_order:  # still the per-order estimates (fit_rate names them so)
        samples = per_order
    else:
        samples = None if curve.samples is None else curve.samples / scale
    return replace(
        curve,
        value=curve.value / scale,
        stderr=curve.stderr / scale,
        per_order=per_order,
        samples=samples,
    )


def k_star(
    curve: Curve,
    epsilon: float,
    *,
    level: float = 0.95,
    fit_k_min: int | None = None,
    criterion: str = "absolute",
) -> Sufficiency:
    """k*(ε): the smallest k after which the upper confidence bound of Δ_k stays below ε.

    One definition inside and beyond the data (SPEC §11). The bound is value + z·stderr with z the
    two-sided normal quantile at ``level`` — for a curve pooled over S ≥ 2 training seeds (whose
    ``stderr`` is over the seeds, see ``pool``), the Student t quantile on S − 1 degrees of
    freedom. If it settles below ε within the first
    ``MEASURED_SHARE`` of the measured k, k* is **measured**. Otherwise the power law
    Δ_k ≈ C k^(−α) fitted on k ≥ ``fit_k_min`` (default: the geometric middle of the measured k)
    decides: k* is **extrapolated** where the fit decreases (its slope's bootstrap interval
    wholly below 0), crosses ε beyond the data, and the measured bound follows it at the end of the
    measured share (it has settled below FIT_TOLERANCE × the fit's level there); anything else — a
    fit that may not decrease, a crossing inside the data where the bound did not settle, late
    spikes the mean decay ignores — is **censored**: k* lies beyond the measured share, and the data cannot say where.
    """
    _check_curve(curve)
    epsilon = check_positive("epsilon", epsilon)
    level = check_fraction("level", level)
    criterion = check_choice("criterion", criterion, CRITERIA)
    if fit_k_min is not None:
        fit_k_min = check_int("fit_k_min", fit_k_min, low=1, high=int(curve.k[-1]))
    curve.check_finite()
    z = _quantile(curve, level)
    k = curve.k
    cut = float(k[0] + MEASURED_SHARE * (k[-1] - k[0]))
    stderr = np.nan_to_num(curve.stderr, nan=np.inf)
    upper = _settles(k, curve.value + z * stderr, epsilon)
    if upper <= cut:
        return Sufficiency(
            epsilon=epsilon,
            k_star=upper,
            estimate=_settles(k, curve.value, epsilon),
            interval=(_settles(k, curve.value - z * stderr, epsilon), upper),
            kind="measured",
            level=level,
            criterion=criterion,
        )
    k_min = fit_k_min or int(round(math.sqrt(k[0] * k[-1])))
    fit = curve.fit_rate(k_min=k_min, level=level)
    censored = dict(
        epsilon=epsilon,
        k_star=float("nan"),
        estimate=float("nan"),
        interval=(float("nan"), float("nan")),
        kind="censored",
        level=level,
        at_least=cut,
        fit=fit,
        criterion=criterion,
    )
    slope_hi = fit.ci[1]
    if not (math.isfinite(slope_hi) and slope_hi < 0):
        return Sufficiency(
            **censored,
            reason=(
                f"the power law fitted on k ≥ {fit.k_min} may not decrease (α = {fit.alpha:.2f}, "
                f"interval {fit.alpha_ci[0]:.2f} to {fit.alpha_ci[1]:.2f})"
            ),
        )
    estimate = _solve(fit.slope, fit.intercept, epsilon)
    boots = np.array([_solve(s, c, epsilon) for s, c in fit.bootstrap])
    boots = boots[np.isfinite(boots)]
    interval = bootstrap_interval(boots, estimate, level) if len(boots) else (estimate, estimate)
    conservative = max(interval[1], estimate)
    if not conservative > k[-1]:
        return Sufficiency(
            **censored,
            reason=(
                f"the power law fitted on k ≥ {fit.k_min} crosses ε at k ≈ {conservative:,.0f}, inside "
                "the data, where the measured bound has not settled"
            ),
        )
    # The fit describes the mean decay; k* asks when the bound *stays* below. Trust the
    # extrapolation only where the data already behave so at the end of the measured share: the
    # bound must have settled by `cut` below the level the fit puts there (ε·(k*/cut)^α, within
    # FIT_TOLERANCE). Late spikes (hard samples arriving) that the mean decay ignores censor it.
    level_at_cut = FIT_TOLERANCE * epsilon * (estimate / cut) ** fit.alpha
    if not _settles(k, curve.value + z * stderr, level_at_cut) <= cut:
        return Sufficiency(
            **censored,
            reason=(
                f"the measured bound does not follow the power law fitted on k ≥ {fit.k_min}: it has "
                f"not settled below {level_at_cut:.2g} by k = {cut:,.0f}, where the fit (crossing ε at "
                f"k ≈ {estimate:,.0f}) says it should have"
            ),
        )
    return Sufficiency(
        epsilon=epsilon,
        k_star=conservative,
        estimate=estimate,
        interval=interval,
        kind="extrapolated",
        level=level,
        fit=fit,
        criterion=criterion,
    )


def _check_curve(curve: object) -> None:
    if not isinstance(curve, Curve):
        raise ValueError(
            f"curve must be a landscape.delta.Curve (from delta.monte_carlo); got "
            f"{type(curve).__name__}."
        )


def _quantile(curve: Curve, level: float) -> float:
    """The two-sided ``level`` quantile of the bound: Student t on S − 1 degrees of freedom for a
    curve pooled over S ≥ 2 seeds (its standard error rests on S independent units), else normal."""
    if curve.seeds > 1:
        return float(stats.t.ppf(0.5 + level / 2, curve.seeds - 1))
    return float(stats.norm.ppf(0.5 + level / 2))


def _settles(k: np.ndarray, values: np.ndarray, epsilon: float) -> float:
    """The first k after which every value is below ε (NaN when the last one is not)."""
    above = ~(values < epsilon)  # non-finite counts as above
    if above[-1]:
        return float("nan")
    last = np.flatnonzero(above)
    return float(k[last[-1] + 1] if len(last) else k[0])


def _solve(slope: float, intercept: float, epsilon: float) -> float:
    """k with exp(intercept) k^slope = ε; NaN when the fit does not decrease."""
    if slope >= 0:
        return float("nan")
    return float(np.exp((math.log(epsilon) - intercept) / slope))

"""How much data is enough: k*(ε), power-law extrapolation, and learning curves.

k*(ε) is the smallest k after which the upper confidence bound of Δ_k stays below ε. Where the
measured curve never settles below ε before the data run out, k* is extrapolated from the fitted
power law Δ_k ≈ C k^(−α) and flagged as an extrapolation, with an interval from the fit's
bootstrap. A relative criterion divides Δ_k by L_k(w*)². The learning curve (test accuracy of
networks trained on the first k samples) is the performance-based answer to set beside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import stats

from . import models, train
from .checks import (
    check_choice,
    check_folder,
    check_fraction,
    check_int,
    check_positive,
    check_seed,
    check_sequence,
)
from .delta import Curve
from .experiment import Setup
from .problem import Problem, check_problem
from .theory import RateFit, bootstrap_interval

#: What ``k_star`` thresholds: Δ_k itself, or Δ_k / L_k(w*)² (see ``relative``).
CRITERIA = ("absolute", "relative")


@dataclass(frozen=True, eq=False)
class Sufficiency:
    """The answer to "how many samples until Δ_k stays below ε?".

    Attributes:
        epsilon: the threshold.
        k_star: the conservative answer: from the upper confidence bound of Δ_k when measured,
            the upper end of the bootstrap interval when extrapolated. NaN when even the
            extrapolation cannot reach ε (a non-decreasing fit).
        estimate: the same from the point estimate (the curve itself, or the fitted power law).
        interval: (from the lower confidence bound, from the upper) when measured; bootstrap
            percentiles of the extrapolated k when extrapolated.
        extrapolated: whether the data ran out before Δ_k settled below ε.
        level: confidence level of the bounds.
        fit: the power-law fit used to extrapolate (None when measured).
        criterion: "absolute" (Δ_k) or "relative" (Δ_k / L_k(w*)²).
    """

    epsilon: float
    k_star: float
    estimate: float
    interval: tuple[float, float]
    extrapolated: bool
    level: float
    fit: RateFit | None = None
    criterion: str = "absolute"

    def describe(self) -> str:
        """One sentence a report can print."""
        what = "Δ_k" if self.criterion == "absolute" else "Δ_k / L_k(w*)²"
        if math.isnan(self.k_star):
            return f"{what} is not predicted to fall below ε = {self.epsilon:.3g}."
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
    losses = prob.per_sample_losses(prob.center).to(torch.float64).cpu().numpy()
    prefix = np.cumsum(losses) / np.arange(1, len(losses) + 1)
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
    return replace(
        curve,
        value=curve.value / scale,
        stderr=curve.stderr / scale,
        per_order=None if curve.per_order is None else curve.per_order / scale,
        samples=None if curve.samples is None else curve.samples / scale,
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

    The bound is value + z·stderr with z the two-sided normal quantile at ``level``. When the bound
    is still above ε at the last measured k, the answer is extrapolated from the power law fitted
    on k ≥ ``fit_k_min`` (default: the upper half of the measured k on a log scale).
    """
    _check_curve(curve)
    epsilon = check_positive("epsilon", epsilon)
    level = check_fraction("level", level)
    criterion = check_choice("criterion", criterion, CRITERIA)
    if fit_k_min is not None:
        fit_k_min = check_int("fit_k_min", fit_k_min, low=1, high=int(curve.k[-1]))
    curve.check_finite()
    z = stats.norm.ppf(0.5 + level / 2)
    k = curve.k
    stderr = np.nan_to_num(curve.stderr, nan=np.inf)
    upper = _settles(k, curve.value + z * stderr, epsilon)
    if not math.isnan(upper):
        return Sufficiency(
            epsilon=epsilon,
            k_star=upper,
            estimate=_settles(k, curve.value, epsilon),
            interval=(_settles(k, curve.value - z * stderr, epsilon), upper),
            extrapolated=False,
            level=level,
            criterion=criterion,
        )
    k_min = fit_k_min or int(round(math.sqrt(k[0] * k[-1])))
    fit = curve.fit_rate(k_min=k_min, level=level)
    estimate = _solve(fit.slope, fit.intercept, epsilon)
    boots = np.array([_solve(s, c, epsilon) for s, c in fit.bootstrap])
    boots = boots[np.isfinite(boots)]
    if len(boots) and math.isfinite(estimate):
        interval = bootstrap_interval(boots, estimate, level)
    else:
        interval = (estimate, estimate)
    return Sufficiency(
        epsilon=epsilon,
        k_star=max(interval[1], estimate),
        estimate=estimate,
        interval=interval,
        extrapolated=True,
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


@dataclass(frozen=True, eq=False)
class LearningCurve:
    """Test accuracy and loss of networks trained on the first k samples, over seeds."""

    k: np.ndarray
    accuracy: np.ndarray
    accuracy_stderr: np.ndarray
    loss: np.ndarray
    loss_stderr: np.ndarray
    per_seed_accuracy: np.ndarray


def learning_curve(
    setup: Setup,
    ks: Sequence[int],
    *,
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    min_steps: int = 200,
    cache_dir="default",
    progress: bool = False,
) -> LearningCurve:
    """Train the setup's architecture on the first k samples of its order, for each k and seed.

    Each network trains for ``epochs`` (default: the setup's) but at least ``min_steps`` optimiser
    steps, so small prefixes are not judged on a handful of updates.
    """
    from .experiment import default_cache_dir

    if not isinstance(setup, Setup):
        raise ValueError(
            f"setup must be an experiment.Setup (from experiment.prepare); got "
            f"{type(setup).__name__}."
        )
    cfg = setup.config
    available = len(setup.dataset.train[0])
    ks = check_sequence("ks", ks, check_int, low=2, high=available)
    seeds = check_sequence("seeds", seeds, check_seed)
    epochs = cfg["epochs"] if epochs is None else check_int("epochs", epochs, low=1)
    min_steps = check_int("min_steps", min_steps, low=0)
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    elif cache_dir is not None:
        cache_dir = check_folder("cache_dir", cache_dir)
    accuracy = np.zeros((len(seeds), len(ks)))
    loss = np.zeros_like(accuracy)
    from tqdm.auto import tqdm

    jobs = [(i, j, k, s) for j, k in enumerate(ks) for i, s in enumerate(seeds)]
    for i, j, k, seed in tqdm(jobs, desc="learning curve", leave=False):
        steps_per_epoch = math.ceil(k / cfg["batch_size"])
        k_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
        ds = setup.dataset
        net = models.build(
            cfg["model"], ds.input_shape, ds.num_classes, seed=seed, **cfg["model_cfg"]
        )
        net = train.fit(
            net,
            ds,
            k_epochs,
            lr=cfg["lr"],
            batch_size=cfg["batch_size"],
            seed=seed,
            n_train=k,
            cache_dir=cache_dir,
            device=cfg["device"],
            progress=progress,
        )
        loss[i, j] = net.history.test_loss[-1]
        accuracy[i, j] = net.history.test_accuracy[-1]
    n = len(seeds)
    sem = (lambda a: a.std(0, ddof=1) / math.sqrt(n)) if n > 1 else (lambda a: np.zeros(a.shape[1]))
    return LearningCurve(
        k=np.array(ks),
        accuracy=accuracy.mean(0),
        accuracy_stderr=sem(accuracy),
        loss=loss.mean(0),
        loss_stderr=sem(loss),
        per_seed_accuracy=accuracy,
    )

"""What 05_pointwise concludes: the rate of |L_k(w*) − L_{k−1}(w*)| and paper 002's two bounds.

The notebook trains each bias-free ReLU MLP of its width and depth sweeps for several training
seeds (``replication.replicate``) and measures on each network the pointwise curve over many data
orders, its fitted rate α, its level (k·|d_k| averaged over the fit window: C with α fixed at 1),
the per-sample Hessian norms against paper 002's bound, and, on the reference network, the
pointwise bound's worst case on spheres of radius R around w*. ``pointwise`` turns those records
into the ledger (intervals over training seeds), the headline and the reading; ``MEASURES`` names
the numbers each record must hold. Measuring is not here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import claims
from ..replication import Replicates, Variant
from . import Reading

__all__ = ["MEASURES", "read", "sphere_table"]

#: The numbers ``pointwise`` reads from each (network, seed) record of ``Replicates``.
MEASURES = ("alpha", "level", "M_l", "M_H", "M_H bound", "looseness", "converged", "N", "accuracy")

_SAID = {"holds": "holds", "fails": "FAILS", "inconclusive": "is inconclusive"}


def read(
    reps: Replicates,
    reference: Variant,
    spheres: Mapping[int, Mapping[float, np.ndarray]],
    *,
    radius_points: int,
    norm_samples: int,
    fit_k_min: int,
    level: float = 0.95,
) -> Reading:
    """The ledger, headline and reading of 05.

    Args:
        reps: one record per (network, training seed) with ``MEASURES`` (``looseness`` = bound /
            M_H, ``converged`` whether every per-sample Lanczos met its tolerance) and
            ``"curve"``, the ``delta.PointwiseCurve`` over data orders.
        reference: the reference network (a member of ``reps.variants``).
        spheres: per training seed of the reference network, ``{R: ratios}``: for each radius R
            (0 included, in units of ‖w*‖) the worst-case ratio of k·|d_k(w)| over every order to
            paper 002's bound 2(M_ℓ + M_H R²), one per tested point — the first ``radius_points``
            along random directions, the rest along loss gradients.
        norm_samples: how many samples the per-sample Hessian norms were measured on; the
            reference network's records also hold ``"norms"``, those norms (seed 0 is described).
        fit_k_min: the smallest k of the fits (the window where the bound is set against the curve).

    Claims: α ∈ [0.9, 1.1] per network (mean over seeds, Student-t interval over seeds); the
    pointwise bound at w* and beyond (the largest ratio over seeds and points: exact worst cases,
    a zero-width interval); the Hessian-norm bound (the largest measured M_H / bound over every
    network and seed).
    """
    labels = [v.label for v in reps.variants]
    if reference.label not in labels:
        raise ValueError(f"reference={reference.label!r} is not one of the variants {labels}.")
    seeds = list(reps.seeds)
    if sorted(spheres) != sorted(seeds):
        raise ValueError(
            f"spheres must hold one entry per training seed {seeds}; got {sorted(spheres)}."
        )
    for name in MEASURES:  # a record without one of them is named here, not deep in a sentence
        reps.values(name)
    n, i_ref = len(seeds), labels.index(reference.label)
    radii = sorted(R for R in spheres[seeds[0]] if R > 0)
    used = reps.values("M_H") / reps.values("M_H bound")  # (networks, seeds)
    at_w_star = max(spheres[s][0.0].max() for s in seeds)
    beyond = max((spheres[s][R].max() for s in seeds for R in radii), default=float("nan"))
    alpha = reps.summary("alpha", level=level)
    ledger = [
        *reps.claims_per_variant(
            "alpha",
            "rate_one",
            "The pointwise metric of {variant} falls like 1/k: α lies in [0.9, 1.1].",
            {"between": [0.9, 1.1]},
            source="paper 002 (losses-difference figures)",
            level=level,
            note="α fitted per seed on the mean over orders; t interval over seeds",
        ),
        claims.claim(
            "pointwise_bound_at_w_star",
            "Paper 002's bound 2M_ℓ/k on the size of L_k(w*) − L_{k−1}(w*) holds "
            "for every data order and every k: the worst-case ratio to it is below 1.",
            at_w_star,
            [at_w_star] * 2,
            {"below": 1.0},
            source="paper 002 (pointwise bound, R = 0)",
            replicates=n,
            note=f"exact worst case over all orders, largest over {n} training seed(s) of {reference.label}",
        ),
        claims.claim(
            "pointwise_bound_beyond_w_star",
            "Paper 002's bound 2(M_ℓ + M_H R²)/k on the size of "
            f"L_k(w) − L_{{k−1}}(w) holds at distance R = {', '.join(f'{R:g}' for R in radii)}·‖w*‖ from w* for "
            "every order and k: the worst-case ratio to it is below 1.",
            beyond,
            [beyond] * 2,
            {"below": 1.0},
            source="paper 002 (pointwise bound within radius R)",
            replicates=n,
            note=f"largest over {radius_points} random and "
            f"{len(spheres[seeds[0]][0.0]) - radius_points} loss-gradient directions per radius and "
            f"{n} seed(s); the whole ball can only do worse",
        ),
        claims.claim(
            "hessian_bound_every_network",
            "Paper 002's bound on per-sample Hessian norms holds for every "
            "network of the sweep: the measured max‖H_i‖₂ over the bound is below 1.",
            used.max(),
            [used.max()] * 2,
            {"below": 1.0},
            source="paper 002 (Hessian-norm bound)",
            replicates=n,
            note=f"largest over {len(labels)} networks × {n} seed(s); M_H by Lanczos over the first "
            f"{norm_samples} samples, a lower estimate of the max over all K",
        ),
    ]
    rates, (a_ref, a_ci) = ledger[: len(labels)], alpha[i_ref]
    inside = sum(c.verdict == "holds" for c in rates)
    headline = (
        f"Over {n} training seeds the pointwise metric of the {reference.label} falls like k^(−α) with "
        f"α = {a_ref:.3f} [{a_ci[0]:.3f}, {a_ci[1]:.3f}] ({inside} of {len(rates)} networks inside paper 002's "
        f"1/k band α ∈ [0.9, 1.1]); its Hessian-norm bound {_SAID[ledger[-1].verdict]} (measured M_H at most "
        f"{used.max():.0%} of it) and its pointwise bound {_SAID[ledger[-2].verdict]} out to "
        f"R = {max(radii, default=0):g}‖w*‖ (at most {beyond:.0%} of it used)."
    )
    text = "\n\n".join(
        [
            _rates(reps, reference, rates, alpha, level),
            _pointwise_bound(reps, reference, spheres, radii, radius_points, fit_k_min),
            _hessian_bound(reps, reference, used, norm_samples, level),
        ]
    )
    table = reps.frame(
        ["N", "accuracy", "alpha", "level", "M_l", "M_H", "M_H bound", "looseness"],
        intervals=["alpha", "level"],
        level=level,
    )
    ref_records = [reps.records[reference.label][s] for s in seeds]
    curve, rec = ref_records[0]["curve"], ref_records[0]
    window = curve.k >= fit_k_min
    # the R = 0 bound 2M_ℓ/k over the mean curve, on the fit window
    over_mean = 2 * rec["M_l"] / curve.k[window] / curve.value[window]
    numbers = dict(
        alpha=a_ref,
        alpha_ci=a_ci,
        alpha_per_seed=reps.values("alpha"),
        seeds=seeds,
        pointwise_bound_holds=all(
            bool(np.all(r["curve"].samples <= 2 * r["M_l"] / r["curve"].k)) for r in ref_records
        ),
        pointwise_bound_ratio_median=float(np.median(over_mean)),
        pointwise_bound_ratio_min=over_mean.min(),
        norms_converged=bool(reps.values("converged").all()),
        max_loss=rec["M_l"],
        max_hessian_norm=rec["M_H"],
        hessian_bound=rec["M_H bound"],
        hessian_bound_ratio=rec["looseness"],
        num_params=int(rec["N"]),
        num_samples=int(curve.k[-1]),
        test_accuracy=rec["accuracy"],
        max_hessian_norm_over_bound=used.max(),
        pointwise_bound_worst_ratio={
            f"{R:g}": max(float(spheres[s][R].max()) for s in seeds) for R in [0.0, *radii]
        },
        sweep=table.reset_index().to_dict(orient="records"),
    )
    return Reading(ledger, headline, text, numbers)


def _rates(
    reps: Replicates, reference: Variant, rates: Sequence[claims.Claim], alpha, level: float
) -> str:
    n, (a, (lo, hi)) = (
        len(reps.seeds),
        alpha[[v.label for v in reps.variants].index(reference.label)],
    )
    curve = reps.records[reference.label][reps.seeds[0]]["curve"]
    means = [m for m, _ in alpha]
    off = [v.label for v, c in zip(reps.variants, rates) if c.verdict == "fails"]
    levels = reps.values("level").mean(1)
    changes = reps.comparisons("level", log=True, level=level)
    moved = [c for c in changes if not c.tie]
    return (
        f"**Rate.** Over {curve.orders} data orders of K = {int(curve.k[-1]):,} samples and {n} training seeds, the "
        f"pointwise metric of the {reference.label} falls as $k^{{-\\alpha}}$ with α = {a:.3f} (95 % interval "
        f"{lo:.3f}–{hi:.3f} over seeds), "
        + (
            "an interval that contains paper 002's 1/k"
            if lo <= 1 <= hi
            else f"an interval that {'excludes' if np.isfinite(lo) else 'cannot test'} paper 002's exact 1/k"
        )
        + f". Across the sweep the mean α runs over {min(means):.3f}–{max(means):.3f}: "
        f"{sum(c.verdict == 'holds' for c in rates)} of {len(rates)} networks have their interval inside [0.9, 1.1]"
        + (
            f", and {', '.join(off)} lie{'s' if len(off) == 1 else ''} wholly outside it"
            if off
            else ""
        )
        + ". A 1/k rate is built into the metric, since $k\\,d_k = l_k - L_{k-1}$ tends to a sample's deviation from "
        f"the mean loss. What the network can change is the level k·|d_k| over the fit window, "
        f"{levels.min():.3g}–{levels.max():.3g} here (means over seeds): "
        + (
            f"{len(moved)} of {len(changes)} one-setting changes move it by more than the seeds vary"
            if moved
            else f"none of the {len(changes)} one-setting changes moves it by more than the seeds vary"
        )
        + ".\n\n"
        f"Each change of one setting, the level paired over seeds (ratio after / before, {level:.0%} interval):\n"
        + reps.describe_changes("level", log=True, larger="higher level", smaller="lower level")
    )


def _pointwise_bound(
    reps: Replicates, reference: Variant, spheres, radii, radius_points: int, fit_k_min: int
) -> str:
    seed0 = reps.seeds[0]
    rec, curve = reps.records[reference.label][seed0], reps.records[reference.label][seed0]["curve"]
    bound = 2 * rec["M_l"] / curve.k
    window = curve.k >= fit_k_min
    ratio = bound[window] / curve.value[window]
    every = bool(np.all(curve.samples <= bound))
    worst = max(spheres[s][0.0].max() for s in reps.seeds)
    beyond = [max(spheres[s][R].max() for s in reps.seeds) for R in radii]
    along_random = [max(spheres[s][R][:radius_points].max() for s in reps.seeds) for R in radii]
    along_grad = [
        max(spheres[s][R][radius_points:].max(initial=0.0) for s in reps.seeds) for R in radii
    ]
    text = (
        f"**Pointwise bound.** At R = 0 the bound 2M_ℓ/k (M_ℓ = {rec['M_l']:.3g}, training seed {seed0}) "
        + (
            f"holds for every one of the {curve.orders} orders at every k"
            if every
            else "is VIOLATED by some order at some k"
        )
        + f", and lies a median {np.median(ratio):.0f}× above the mean curve (at least {ratio.min():.0f}×). "
        f"Over every possible order and every seed the worst case uses {worst:.0%} of it"
        + (
            " — at most half, as it must be: losses are ≥ 0, so |l_k − L_{k−1}| ≤ M_ℓ, and the bound charges 2M_ℓ."
            if worst <= 0.5 + 1e-9
            else "."
        )
    )
    if not radii:
        return text
    return text + (
        f" On spheres of radius R = {', '.join(f'{R:g}' for R in radii)}·‖w*‖ the worst case over {len(reps.seeds)} "
        f"seed(s) uses at most {', '.join(f'{x:.2g}' for x in along_random)} of 2(M_ℓ + M_H R²)/k along random "
        f"directions and {', '.join(f'{x:.2g}' for x in along_grad)} along the loss gradients of the worst-fitted samples"
        + (
            ", so it holds at every tested point."
            if max(beyond) < 1
            else "; where a ratio exceeds 1 the bound FAILS."
        )
    )


def _hessian_bound(
    reps: Replicates, reference: Variant, used: np.ndarray, norm_samples: int, level: float
) -> str:
    labels = [v.label for v in reps.variants]
    loose = reps.values("looseness")  # bound / M_H
    mean_loose = loose.mean(1)
    loosest = labels[int(np.argmax(mean_loose))]
    depth = [
        c
        for c in reps.comparisons("looseness", log=True, level=level)
        if c.change.setting == "depth"
    ]
    if not depth:
        trend = "the sweep has no change of depth alone"
    elif all(not c.tie and c.estimate > 0 for c in depth):
        trend = "it grows with every increase of depth (paired over seeds, intervals excluding no change)"
    elif all(not c.tie and c.estimate < 0 for c in depth):
        trend = "it shrinks with every increase of depth (paired over seeds)"
    else:
        trend = "it does not grow with depth in a way the seeds can tell apart: " + "; ".join(
            f"{c.change.a} → {c.change.b} ×{np.exp(c.estimate):.2f} "
            f"[{np.exp(c.interval[0]):.2f}, {np.exp(c.interval[1]):.2f}]"
            for c in depth
        )
    converged = bool(reps.values("converged").all())
    norms = np.asarray(reps.records[reference.label][reps.seeds[0]]["norms"], dtype=float)
    q10, median, q90 = np.quantile(norms, [0.1, 0.5, 0.9])
    return (
        f"**Hessian bound.** Measured over the first {norm_samples} samples of each network, M_H = max‖H_i‖₂ is at most "
        f"{used.max():.0%} of paper 002's bound"
        + (
            " for every network and seed, so the bound holds"
            if used.max() <= 1
            else "; the bound is VIOLATED for some network"
        )
        + f". The bound is {mean_loose.min():.1f}× to {mean_loose.max():.1f}× the measured M_H (means over seeds; "
        f"loosest: {loosest}); {trend}. Per-sample Lanczos "
        + ("met" if converged else "did NOT meet")
        + " its relative residual tolerance for every sample. "
        f"The {reference.label}'s per-sample norms (training seed {reps.seeds[0]}, {len(norms)} samples) have median "
        f"{median:.3g}, central 80 % {q10:.3g}–{q90:.3g} and range {norms.min():.3g}–{norms.max():.3g}: the largest is "
        f"{norms.max() / median:.0f}× the median."
    )


def sphere_table(
    spheres: Mapping[int, Mapping[float, np.ndarray]], radius_points: int
) -> pd.DataFrame:
    """Per radius R (in ‖w*‖): the worst ratio to paper 002's bound over the seeds, along random and gradient directions."""
    seeds = list(spheres)
    radii = sorted(spheres[seeds[0]])
    return pd.DataFrame(
        {
            "R / ‖w*‖": radii,
            "worst ratio, random directions": [
                max(spheres[s][R][:radius_points].max() for s in seeds) for R in radii
            ],
            "worst ratio, gradient directions": [
                max(spheres[s][R][radius_points:].max(initial=0.0) for s in seeds) for R in radii
            ],
        }
    )

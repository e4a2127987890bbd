"""What 04_hessian_subspace concludes: eigen vs random subspaces vs the full space.

The notebook measures, on each of R replicates (training seed, data order, random subspace, trace
probes and Monte Carlo draws all drawn anew), the top-d eigenpairs of ∇²L_K(w*), Hutchinson's
probes vᵀHv, the curvature of the random directions, Monte Carlo Δ_k per (σ, space) and the exact
projected terms per subspace; ``SubspaceReplicate`` holds them. ``subspace`` turns them into the
claims ledger (intervals over the replicates), the headline and the reading. Measuring is not here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import claims, theory
from ..checks import check_fraction, check_int
from ..curvature import DifferenceTerms
from ..delta import Curve
from . import RATE_TWO, Reading

__all__ = ["SPACES", "SubspaceReplicate", "loss_rise", "rate_table", "read", "term_table"]

#: The three spaces compared, in the order the notebook draws them.
SPACES = ("eigen", "random", "full")


@dataclass(frozen=True, eq=False)
class SubspaceReplicate:
    """What 04 measures on one replicate.

    Attributes:
        eigenvalues: (d,) the top-d eigenvalues λ_j of ∇²L_K(w*), largest first.
        relative_residuals: (d,) their measured ‖Hv − λv‖ / |λ|.
        hutchinson: (probes,) vᵀHv for Rademacher probes v (their mean estimates Tr H).
        random_curvature: (d,) vᵀHv along the d directions of the random subspace.
        curves: Monte Carlo Δ_k per ``(σ, space)``, space in ``SPACES``.
        terms: the exact projected terms per subspace (``"eigen"``, ``"random"``).
    """

    eigenvalues: np.ndarray
    relative_residuals: np.ndarray
    hutchinson: np.ndarray
    random_curvature: np.ndarray
    curves: Mapping[tuple[float, str], Curve]
    terms: Mapping[str, DifferenceTerms]


def read(
    replicates: Sequence[SubspaceReplicate],
    sigmas: Sequence[float],
    *,
    fit_k_min: int,
    large_k_fraction: float = 0.75,
    kinks: Sequence[str] = (),
    level: float = 0.95,
) -> Reading:
    """The ledger, headline and reading of 04 from its replicates.

    Every claim's interval is a Student-t interval over the replicates (``claims.replicate_interval``)
    of one number per replicate: Σλ_j / Tr H (Tr H by Hutchinson), the eigen subspace's share of
    what the perturbation adds above a_k² at large k, the smallest eigen/random ratio over σ, α
    averaged over σ per space, and the complete form over Monte Carlo in the eigen subspace per σ.
    The sentences of the reading describe replicate 0 where they say so. ``kinks``: the
    network's piecewise-linear layers (``models.kinks``), which bias the complete form.
    """
    reps = list(replicates)
    if not reps or not all(isinstance(r, SubspaceReplicate) for r in reps):
        raise ValueError("replicates must be a non-empty list of SubspaceReplicate.")
    sigmas = [float(s) for s in sigmas]
    fit_k_min = check_int("fit_k_min", fit_k_min, low=2)
    large_k_fraction = check_fraction("large_k_fraction", large_k_fraction)
    n, d = len(reps), len(reps[0].eigenvalues)
    k = reps[0].curves[sigmas[0], "eigen"].k
    large = k >= large_k_fraction * k[-1]

    def interval(values):
        return claims.replicate_interval(values, level=level)

    # per replicate (rows) and σ (columns), means over large k; a_k² is the same in every space
    at_large = {
        s_: np.array([[r.curves[s, s_].value[large].mean() for s in sigmas] for r in reps])
        for s_ in SPACES
    }
    gap_sq = np.array([[(r.terms["eigen"].gap[large] ** 2).mean()] for r in reps])
    closed = np.array([[r.terms["eigen"].predict(s)[large].mean() for s in sigmas] for r in reps])
    alphas = {
        s_: np.array(
            [[r.curves[s, s_].fit_rate(fit_k_min, n_boot=0).alpha for s in sigmas] for r in reps]
        )
        for s_ in SPACES
    }
    # the eigen subspace's share of what the perturbation adds above a_k²
    share = (at_large["eigen"] - gap_sq) / (at_large["full"] - gap_sq)
    traces = np.array([r.hutchinson.mean() for r in reps])
    top_share = np.array([r.eigenvalues.sum() for r in reps]) / traces
    # Tr H of replicate 0 with its interval over the probes; across replicates, over replicates
    trace0, trace0_ci = claims.replicate_interval(reps[0].hutchinson, level=level)
    trace, trace_ci = interval(traces) if n > 1 else (trace0, trace0_ci)

    tags = [f"{s:g}".replace(".", "p").replace("-", "m") for s in sigmas]
    listed = ", ".join(f"{s:g}" for s in sigmas)
    compare = dict(replicates=n, min_replicates=claims.MIN_COMPARISON_REPLICATES, level=level)
    shares = [
        claims.claim(
            f"eigen_carries_change_{t}",
            f"At σ = {s:g} the top-{d} eigen subspace carries most of the change of the "
            "landscape: at large k, Δ_k − a_k² in it is over half of its full-space value.",
            *interval(share[:, j]),
            {"above": 0.5},
            source="low-dim paper (003) abstract; slides (004)",
            **compare,
        )
        for j, (s, t) in enumerate(zip(sigmas, tags))
    ]
    labels = {
        "eigen": f"top-{d} eigen subspace",
        "random": f"random {d}-dim subspace",
        "full": "full space",
    }
    ledger = [
        claims.claim(
            "top_d_hold_trace",
            f"The top {d} Hessian eigenvalues hold most of the curvature: Σλ_j is over "
            "half of Tr H.",
            *interval(top_share),
            {"above": 0.5},
            replicates=n,
            level=level,
            source="low-dim paper (003): top eigenvectors are the primary curvature directions",
            note="Tr H by Hutchinson per replicate; t interval over replicates",
        ),
        *shares,
        claims.claim(
            "eigen_above_random",
            f"Δ_k at large k is larger in the top-{d} eigen subspace than in a random "
            f"{d}-dimensional one at every σ: the smallest ratio over σ is above 1.",
            *interval((at_large["eigen"] / at_large["random"]).min(1)),
            {"above": 1.0},
            source="slides (004): directions of the largest eigenvalues carry the key curvature",
            **compare,
        ),
        *[
            claims.claim(
                f"rate_two_{s_}",
                f"In the {labels[s_]}, Δ_k decays like k⁻²: α, averaged over σ = {listed}, "
                "lies in [1.8, 2.2].",
                *interval(alphas[s_].mean(1)),
                RATE_TWO,
                source="main paper Theorem 1; low-dim paper (003)",
                replicates=n,
                level=level,
            )
            for s_ in SPACES
        ],
        *[
            claims.claim(
                f"closed_form_eigen_{t}",
                f"At σ = {s:g} the complete closed form with the exact projected "
                "terms predicts the Monte Carlo Δ_k of the eigen subspace at large k within 10 %.",
                *interval(closed[:, j] / at_large["eigen"][:, j]),
                {"between": [0.9, 1.1]},
                source="ours (PᵀA_kP exactly; the low-dim code matched eigenvalues by index)",
                replicates=n,
                level=level,
            )
            for j, (s, t) in enumerate(zip(sigmas, tags))
        ],
    ]
    verdicts = "; ".join(
        f"{v} at σ = {', '.join(f'{s:g}' for s, c in zip(sigmas, shares) if c.verdict == v)}"
        for v in claims.VERDICTS
        if any(c.verdict == v for c in shares)
    )
    headline = (
        f"The top-{d} Hessian eigen subspace carries {_join(share.mean(0), '.0%')} of the change the "
        f"perturbation adds to the full-space Δ_k at σ = {listed} ({n} replicates), against "
        f"{top_share.mean():.0%} of Tr H in its eigenvalues: the claim that it carries most of it {verdicts}."
    )

    r0 = reps[0]
    lam, curv = r0.eigenvalues, r0.random_curvature
    ratio_random, ratio_full = (
        at_large["eigen"][0] / at_large["random"][0],
        at_large["eigen"][0] / at_large["full"][0],
    )
    closed_vs_mc = closed[0] / at_large["eigen"][0]
    gap_part = {s_: 100 * gap_sq[0, 0] / at_large[s_][0] for s_ in ("eigen", "random")}
    eigen_terms, random_terms = r0.terms["eigen"], r0.terms["random"]
    paper_part = [
        eigen_terms.predict(s, "paper")[large].mean() / eigen_terms.predict(s)[large].mean()
        for s in sigmas
    ]
    paper_random = max(random_terms.predict(s, "paper")[large].mean() for s in sigmas)
    stiffer = lam.mean() / curv.mean()
    stiff = (
        f"so the eigen directions are {stiffer:.0f}× stiffer, and the same σ raises the loss that much more in the "
        "eigen subspace than in a random one"
        if stiffer > 1
        else f"so the eigen directions are NOT stiffer than random ones ({stiffer:.2f}×)"
    )
    held = (
        f"the top {d} eigenvalues, Σλ_j = {lam.sum():.3g}, hold {lam.sum() / trace0:.0%} of it"
        + (
            f" ({lam.sum() / trace0_ci[1]:.0%}–{lam.sum() / trace0_ci[0]:.0%} over the trace's interval)"
            if trace0_ci[0] > 0
            else " (the trace's interval reaches 0, so the share has no upper end)"
        )
    )
    last = share[:, -1].mean()
    why = (
        f"At σ = {sigmas[-1]:g} that share, {last:.0%}, is far below the {top_share.mean():.0%} of Tr H the top {d} "
        "eigenvalues hold (means over the replicates), so the share of curvature does not set the share of Δ_k: "
        "Δ_k is made of the differences c_k and M_k between one sample and the mean of the others, not of H, and at "
        f"this σ the expected loss rise ½σ²Tr H in the full space is {0.5 * sigmas[-1] ** 2 * trace:.2g} nats, where "
        "the quadratic model that links Δ_k to curvature "
        + (
            f"fails even in the eigen subspace (complete form {closed_vs_mc[-1]:.2f}× Monte Carlo)."
            if abs(closed_vs_mc[-1] - 1) > 0.1
            else "holds in the eigen subspace and is untested in the full space."
        )
        if last < top_share.mean() - 0.1
        else f"That is {'in line with' if last <= top_share.mean() + 0.1 else 'above'} the {top_share.mean():.0%} of Tr H "
        f"the top {d} eigenvalues hold (means over the replicates)."
    )
    trace_over = (
        f"over {n} replicates"
        if n > 1
        else f"over the {len(r0.hutchinson)} probes of one replicate"
    )
    text = f"""The top {d} eigenvalues of ∇²L_K(w*) run from {lam[0]:.3g} down to {lam[-1]:.3g} (largest relative
residual {r0.relative_residuals.max():.1e}; replicate 0); a random direction has curvature vᵀHv ≈ {curv.mean():.3g} on
average, {stiff}. Hutchinson's estimate gives Tr H ≈ {trace0:.3g}
(95 % Student-t interval {trace0_ci[0]:.3g}–{trace0_ci[1]:.3g} over its {len(r0.hutchinson)} probes;
{trace:.3g}, interval {trace_ci[0]:.3g}–{trace_ci[1]:.3g} {trace_over}): {held}.

At large k (k ≥ {int(math.ceil(large_k_fraction * k[-1]))}) and σ = {listed}, Δ_k in the eigen subspace is
{_join(ratio_full, ".2f")}× the full space's and {_join(ratio_random, ".2f")}× the random subspace's (replicate 0). Part
of every Δ_k is the value gap a_k² (mean {gap_sq[0, 0]:.3g}), which no perturbation changes: it is
{_join(gap_part["random"], ".0f")} % of Δ_k in the random subspace and {_join(gap_part["eigen"], ".0f")} % in the eigen
subspace, where the paper's two trace terms make up {_join([100 * x for x in paper_part], ".0f")} % of the complete form.
Of what the perturbation adds above a_k², the eigen subspace carries {_join([100 * x for x in share.mean(0)], ".0f")} %
of the full space's (mean over {n} replicates; the ledger gives intervals). {why}

The paper's form σ⁴/4·(Tr²M_k + 2 Tr M_k²) in the random subspace is at most {paper_random:.1e} at large k, against a
Monte Carlo Δ_k of at least {at_large["random"][0].min():.1e} there (the figure leaves it out).
The complete closed form in the eigen subspace is {_join(closed_vs_mc, ".2f")}× the Monte Carlo value at large k while
the expected loss rise in that subspace is {_join([0.5 * s**2 * lam.sum() for s in sigmas], ".3g")} nats."""
    if kinks:
        text += (
            f" This network is piecewise linear ({', '.join(kinks)}): its kinks near w* bias the complete form by "
            'an amount that does not shrink with σ (README, "Piecewise-linear networks").'
        )
    numbers = dict(
        trace_hessian_estimate=trace0,
        trace_hessian_ci=trace0_ci,
        trace_hessian_mean=trace,
        trace_hessian_replicate_ci=trace_ci,
        top_share_of_trace=top_share.mean(),
        eigen_share_of_change=share.mean(0),
        stiffness_ratio=stiffer,
        gap_squared_large_k=gap_sq[0, 0],
        ratio_eigen_random_large_k=ratio_random,
        ratio_eigen_full_large_k=ratio_full,
        closed_form_over_mc_eigen_large_k=closed_vs_mc,
        paper_form_random_max=paper_random,
        **{f"alpha_{s_}_per_replicate": alphas[s_] for s_ in SPACES},
    )
    return Reading(ledger, headline, text, numbers)


def _join(values, spec: str) -> str:
    return ", ".join(f"{v:{spec}}" for v in np.atleast_1d(values))


def rate_table(
    rep: SubspaceReplicate,
    sigmas: Sequence[float],
    *,
    fit_k_min: int,
    n_boot: int = 500,
    large_k_fraction: float = 0.75,
) -> pd.DataFrame:
    """α, C and the mean Δ_k at large k per (σ, space) for one replicate: Monte Carlo and closed form.

    The Monte Carlo rows carry the fit's bootstrap interval (over the draws of this replicate: the
    data order's own randomness is not in it); the closed-form rows come from exact terms and have
    none.
    """
    k = rep.curves[sigmas[0], "eigen"].k
    large = k >= check_fraction("large_k_fraction", large_k_fraction) * k[-1]
    rows = []
    for s in sigmas:
        for name in SPACES:
            fit = rep.curves[s, name].fit_rate(fit_k_min, n_boot=n_boot)
            rows.append(
                {
                    "σ": s,
                    "space": name,
                    "estimate": "Monte Carlo",
                    "α": fit.alpha,
                    "α lo": fit.alpha_ci[0],
                    "α hi": fit.alpha_ci[1],
                    "interval": fit.method,
                    "C": fit.constant,
                    "mean Δ_k, large k": rep.curves[s, name].value[large].mean(),
                }
            )
        for name, t in rep.terms.items():
            fit = theory.fit_rate(t.k, t.predict(s), k_min=fit_k_min, n_boot=0)
            rows.append(
                {
                    "σ": s,
                    "space": name,
                    "estimate": "complete form",
                    "α": fit.alpha,
                    "α lo": math.nan,
                    "α hi": math.nan,
                    "interval": "none (exact terms)",
                    "C": fit.constant,
                    "mean Δ_k, large k": t.predict(s)[large].mean(),
                }
            )
    return pd.DataFrame(rows)


def term_table(
    rep: SubspaceReplicate, sigmas: Sequence[float], *, large_k_fraction: float = 0.75
) -> pd.DataFrame:
    """Per subspace and σ: the five terms of the complete form and Monte Carlo Δ_k, means over large k."""
    k = rep.curves[sigmas[0], "eigen"].k
    large = k >= check_fraction("large_k_fraction", large_k_fraction) * k[-1]
    return pd.DataFrame(
        [
            {
                "space": name,
                "σ": s,
                **{term: v[large].mean() for term, v in t.components(s).items()},
                "Monte Carlo Δ_k": rep.curves[s, name].value[large].mean(),
            }
            for name, t in rep.terms.items()
            for s in sigmas
        ]
    )


def loss_rise(rep: SubspaceReplicate, sigmas: Sequence[float]) -> pd.DataFrame:
    """The expected loss rise ½σ²Tr(PᵀHP) of each perturbation (nats): rows spaces, columns σ."""
    total = {
        "eigen": rep.eigenvalues.sum(),
        "random": rep.random_curvature.sum(),
        "full": rep.hutchinson.mean(),
    }
    rise = pd.DataFrame(
        {f"σ = {s:g}": {n: 0.5 * s**2 * c for n, c in total.items()} for s in sigmas}
    )
    rise.index.name = "expected loss rise ½σ²Tr(PᵀHP) (nats)"
    return rise

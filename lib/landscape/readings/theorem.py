"""What 01_theorem concludes: Theorem 1, Lemma 1, the closed forms, the bounds and the rate α.

``read`` takes what the notebook measured — the exact terms a_k, ‖c_k‖², Tr M_k, Tr M_k² at w*
(``curvature.DifferenceTerms``), Monte Carlo Δ_k per σ in the Problem's one data order
(``delta.Curve``), the same averaged over several data orders with its spread over orders
(``delta.across_orders``) and the value gaps |a_k| over many orders (``delta.PointwiseCurve``) —
and returns the ledger, headline and reading (``Reading``): each bound tested by its largest ratio
measured / bound over k, each closed form by its median ratio to Monte Carlo, each rate claim by α
of the curve averaged over data orders with a bootstrap over orders. ``rate_table`` gives the
fitted rates the notebook tabulates, ``TERMS`` the labels of the complete form's five terms. Measuring is not here (``curvature``, ``delta``), nor drawing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import claims, theory
from ..curvature.results import DifferenceTerms
from ..delta import Curve, PointwiseCurve
from . import RATE_TWO, Reading, listed

__all__ = ["TERMS", "rate_table", "read"]

#: The five terms of the complete form (``DifferenceTerms.components``), as figures label them; the
#: cross term a_k σ² Tr M_k can be negative and is drawn by its absolute value.
TERMS = {
    "gap": r"$a_k^2$",
    "gap_x_trace": r"$|a_k\,\sigma^2\,\mathrm{Tr}M_k|$",
    "grad": r"$\sigma^2\|c_k\|^2$",
    "trace_squared": r"$\sigma^4/4\cdot\mathrm{Tr}^2M_k$",
    "trace_of_square": r"$\sigma^4/2\cdot\mathrm{Tr}M_k^2$",
}

#: Where α lies if Δ_k decays like k⁻² (fixed before any number was seen).
#: Monte Carlo / complete form for "matches" and Monte Carlo / paper form for "approximates".
MATCHES, APPROXIMATES = {"between": [0.8, 1.25]}, {"between": [0.5, 2.0]}
#: The σ grid on which the reading looks for where the paper's terms take over.
SIGMA_GRID = np.geomspace(1e-4, 1e4, 161)


def rate_table(
    terms: DifferenceTerms,
    curves: Mapping[float, Curve],
    averaged: Mapping[float, Curve],
    *,
    fit_k_min: int,
    n_boot: int,
) -> list[dict[str, Any]]:
    """Fitted α and C of Δ_k ≈ C k^(−α) on k ≥ ``fit_k_min``, one row per σ and estimate.

    Estimates: Monte Carlo in the one data order (interval over draws), Monte Carlo averaged over
    data orders (interval over orders), the complete and the paper closed form of the one order
    (interval over (k, value) pairs). ``read`` puts the same rows under ``numbers["rates"]``.
    """
    return _rows(_fits(terms, curves, averaged, fit_k_min, n_boot))


def _fits(terms, curves, averaged, fit_k_min, n_boot) -> dict[float, dict[str, theory.RateFit]]:
    return {
        s: {
            "Monte Carlo, one order": curves[s].fit_rate(fit_k_min, n_boot=n_boot),
            f"Monte Carlo, {averaged[s].orders} orders": averaged[s].fit_rate(fit_k_min, n_boot=n_boot),
            "complete form": theory.fit_rate(terms.k, terms.predict(s), fit_k_min, n_boot=n_boot),
            "paper form": theory.fit_rate(terms.k, terms.predict(s, "paper"), fit_k_min, n_boot=n_boot),
        }
        for s in sorted(curves)
    }


def _rows(fits: Mapping[float, Mapping[str, theory.RateFit]]) -> list[dict[str, Any]]:
    return [
        {"σ": s, "estimate": name, "α": f.alpha, "α low": f.alpha_ci[0], "α high": f.alpha_ci[1],
         "C": f.constant, "interval from": f.method}
        for s, by_name in fits.items() for name, f in by_name.items()
    ]


def read(
    terms: DifferenceTerms,
    curves: Mapping[float, Curve],
    averaged: Mapping[float, Curve],
    gap: PointwiseCurve,
    *,
    max_hessian_norm: float,
    fit_k_min: int,
    n_boot: int = 300,
    num_params: int,
    network: str = "",
    kinks: Sequence[str] = (),
) -> Reading:
    """The ledger, headline and reading of 01_theorem.

    Args:
        terms: a_k, ‖c_k‖², Tr M_k, Tr M_k² at w* in the Problem's order, with M_ℓ and M_g.
        curves: σ → Monte Carlo Δ_k in that one order (``delta.monte_carlo``, per-draw samples).
        averaged: σ → Monte Carlo Δ_k averaged over several data orders, its samples the
            per-order curves (``delta.across_orders``), for the rate claims.
        gap: |a_k| over many data orders (``delta.pointwise``), the σ → 0 limit of Δ_k.
        max_hessian_norm: M_H = max ‖PᵀH_iP‖₂ (``terms.max_hessian_norm`` where computed).
        fit_k_min, n_boot: the window and bootstrap of the rate fits.
        num_params: N (the full space when ``terms.dim`` equals it).
        network: one line describing the network, for the reading.
        kinks: the piecewise-linear layers of the network (``models.kinks``).
    """
    sigmas = sorted(curves)
    if not sigmas or sorted(averaged) != sigmas:
        raise ValueError(
            f"curves and averaged must hold the same σ values; got {sorted(curves)} and {sorted(averaged)}."
        )
    k, dim, M_H = terms.k, terms.dim, float(max_hessian_norm)
    M_loss, M_grad = terms.max_loss, terms.max_grad_norm
    if M_loss is None or M_grad is None:
        raise ValueError("terms must carry max_loss and max_grad_norm (curvature.difference_terms).")
    tag = {s: f"{s:g}".replace(".", "p").replace("-", "m") for s in sigmas}
    draws, orders = curves[sigmas[0]].draws, averaged[sigmas[0]].orders
    boot, se = f"bootstrap over {draws} draws, one data order", "±1.96 s.e. over draws, one data order"
    paper_1 = terms.predict(1.0, "paper")  # σ⁴ cancels between the paper form and Theorem 1's bound
    ledger = [
        claims.claim("lemma1", "Lemma 1: Tr²M_k + 2 Tr M_k² ≤ d(d+2)‖M_k‖₂² at every k.",
                     *claims.bound_ratio(terms.trace**2 + 2 * terms.trace_sq, (dim + 2) * terms.trace_sq),
                     {"below": 1}, source="main paper Lemma 1 (§4.3)", note="with ‖M_k‖₂² ≥ Tr M_k²/d"),
        claims.claim("hessian_difference_corrected", "With ‖M_k‖₂² ≤ 4M_H²/k² (triangle inequality), Lemma 1 "
                     "bounds the paper form by σ⁴d(d+2)M_H²/k² at every k.",
                     *claims.bound_ratio(paper_1, theory.theorem1_bound(1.0, dim, M_H, k)), {"below": 1}),
        claims.claim("hessian_difference_paper", "With the paper's ‖A_k‖₂² ≤ 2M_H²/k², Lemma 1 bounds the paper "
                     "form by σ⁴d(d+2)M_H²/(2k²) at every k.",
                     *claims.bound_ratio(paper_1, theory.theorem1_bound(1.0, dim, M_H, k, constant="paper")),
                     {"below": 1}, source="main paper §4.4"),
    ]
    fits = _fits(terms, curves, averaged, fit_k_min, n_boot)
    single = {s: fits[s]["Monte Carlo, one order"] for s in sigmas}
    rates = {s: fits[s][f"Monte Carlo, {orders} orders"] for s in sigmas}
    for s in sigmas:
        mc = curves[s]
        ledger += [
            claims.claim(f"theorem1_sigma_{tag[s]}", f"Theorem 1 bounds Δ_k at σ = {s:g}: Δ_k ≤ σ⁴d(d+2)M_H²/k² at "
                         "every k (corrected constant; the paper's is half).",
                         *claims.bound_ratio(mc.value, theory.theorem1_bound(s, dim, M_H, k), mc.stderr),
                         {"below": 1}, source="main paper Theorem 1 (§4.5)", note=se),
            claims.claim(f"paper_form_sigma_{tag[s]}", f"The paper's closed form σ⁴/4·(Tr²M_k + 2 Tr M_k²) "
                         f"approximates Δ_k at σ = {s:g}: Monte Carlo / paper form in [0.5, 2].",
                         *_median_ratio(mc, terms.predict(s, "paper"), n_boot), APPROXIMATES,
                         source="main paper §4.2", note=boot),
            claims.claim(f"complete_form_sigma_{tag[s]}", f"The complete form matches Δ_k at σ = {s:g}: Monte Carlo "
                         "/ complete form in [0.8, 1.25].", *_median_ratio(mc, terms.predict(s), n_boot),
                         MATCHES, note=boot),
            claims.claim(f"rate_sigma_{tag[s]}", f"Δ_k, averaged over {orders} data orders, decays like k⁻² at "
                         f"σ = {s:g}: α in [1.8, 2.2] (k ≥ {fit_k_min}).", rates[s].alpha, rates[s].alpha_ci,
                         RATE_TWO, source="main paper Theorem 1 (§4.5)",
                         note=f"{rates[s].method}, {orders} orders sharing {draws} draws; one training seed"),
        ]
    bounds = {s: claims.bound_ratio(curves[s].value, theory.complete_bound(s, dim, M_loss, M_grad, M_H, k),
                                    curves[s].stderr) for s in sigmas}
    gap_sq = gap.samples**2  # a_k² per order
    gap_fit = theory.fit_rate(gap.k, gap_sq.mean(0), fit_k_min, samples=gap_sq, n_boot=n_boot, units="orders")
    per_order = np.array([theory.fit_rate(gap.k, row, fit_k_min, n_boot=0).alpha for row in gap_sq])
    ledger += [
        claims.claim("complete_bound", "The complete bound (2M_ℓ² + 4σ²M_g² + 2σ⁴d(d+1)M_H²)/k² holds for Δ_k at "
                     "every k and every σ.", *max(bounds.values(), key=lambda b: b[1][1]), {"below": 1},
                     note=f"{se}; the worst σ"),
        claims.claim("gap_rate_over_orders", "The value gap a_k², which Δ_k tends to as σ → 0, decays like k⁻² on "
                     f"average over data orders: α in [1.8, 2.2] (k ≥ {fit_k_min}).", gap_fit.alpha,
                     gap_fit.alpha_ci, RATE_TWO, source="main paper Theorem 1 (§4.5)",
                     note=f"{gap_fit.method}, {gap.orders} orders"),
    ]
    c = {x.id: x for x in ledger}
    # where, if anywhere, the two terms the paper keeps are the larger half of the complete form
    share = [float(np.median(terms.predict(s, "paper") / terms.predict(s))) for s in SIGMA_GRID]
    sigma_paper = next((float(s) for s, x in zip(SIGMA_GRID, share) if x >= 0.5), None)
    numbers = dict(
        dim=dim, full_space=dim == num_params, M_loss=M_loss, M_grad=M_grad, M_H=M_H, sigmas=sigmas,
        orders=orders,
        alpha_mc=[single[s].alpha for s in sigmas], alpha_mc_ci=[single[s].alpha_ci for s in sigmas],
        alpha_orders=[rates[s].alpha for s in sigmas], alpha_orders_ci=[rates[s].alpha_ci for s in sigmas],
        alpha_complete=[fits[s]["complete form"].alpha for s in sigmas],
        alpha_paper=[fits[s]["paper form"].alpha for s in sigmas],
        ratio_mc_complete=[c[f"complete_form_sigma_{tag[s]}"].estimate for s in sigmas],
        ratio_mc_paper=[c[f"paper_form_sigma_{tag[s]}"].estimate for s in sigmas],
        theorem1_max_ratio=[c[f"theorem1_sigma_{tag[s]}"].estimate for s in sigmas],
        complete_bound_max_ratio=[bounds[s][0] for s in sigmas],
        gap_share=[float(np.median(terms.components(s)["gap"] / terms.predict(s))) for s in sigmas],
        sigma_paper_terms_dominate=sigma_paper, rates=_rows(fits),
        alpha_gap_orders=gap_fit.alpha, alpha_gap_orders_ci=gap_fit.alpha_ci,
        alpha_gap_per_order=per_order.tolist(), gap_fit_at_first_k=float(gap_fit.predict(gap.k[:1])[0]),
        alpha_single_order_range=(float(np.percentile(per_order, 2.5)), float(np.percentile(per_order, 97.5))),
    )
    space = (f"in the full space, d = N = {dim:,}" if dim == num_params else
             f"in a random subspace of d = {dim} of the N = {num_params:,} directions")
    headline, text = _prose(c, sigmas, tag, numbers, space, network, list(kinks), gap.orders)
    return Reading(ledger=tuple(ledger), headline=headline, text=text, numbers=numbers)


def _median_ratio(mc: Curve, form: np.ndarray, n_boot: int) -> tuple[float, tuple[float, float]]:
    """Median over k of Monte Carlo / form, with a bootstrap over draws (or the exact ratio)."""
    if mc.samples is None or len(mc.samples) < 2 or not n_boot:
        value = float(np.median(mc.value / form))
        return value, (value, value)
    return claims.bootstrap_statistic(lambda m: np.median(m / form), mc.samples, n_boot=n_boot)


def below(lo: float, hi: float) -> str:
    """Where a form lies given the range [lo, hi] of Monte Carlo / form: below, above or around."""
    if lo > 1:
        return f"{lo:.3g}–{hi:.3g}× below Monte Carlo"
    if hi < 1:
        return f"{1 / hi:.3g}–{1 / lo:.3g}× above Monte Carlo"
    return f"between {1 / lo:.3g}× above and {hi:.3g}× below Monte Carlo"


def _prose(c, sigmas, tag, r, space, network, kinked, gap_orders) -> tuple[str, str]:
    t1, cf, pf, rt = ({s: c[f"{name}_sigma_{tag[s]}"] for s in sigmas}
                      for name in ("theorem1", "complete_form", "paper_form", "rate"))
    by = {name: {v: [s for s in sigmas if d[s].verdict == v] for v in claims.VERDICTS}
          for name, d in (("t1", t1), ("cf", cf), ("rate", rt))}
    failed, held, open_ = by["t1"]["fails"], by["t1"]["holds"], by["t1"]["inconclusive"]
    paper_range = below(min(r["ratio_mc_paper"]), max(r["ratio_mc_paper"]))
    headline = (
        f"Theorem 1's bound on Δ_k ({space}) " + (f"fails at {listed(failed)}" if failed else "fails at no σ measured")
        + (f" and holds at {listed(held)}" if held else "")
        + (f" (undecided at {listed(open_)})" if open_ else "")
        + f"; the paper's closed form lies {paper_range}, while the complete form matches it within 20 % at "
        f"{listed(by['cf']['holds'])} (medians over k)."
    )
    smallest, top = int(np.argmin(sigmas)), int(np.argmax(sigmas))
    lemma, corrected, paper_c = c["lemma1"], c["hessian_difference_corrected"], c["hessian_difference_paper"]
    sp = r["sigma_paper_terms_dominate"]
    text = (
        (f"Network: {network}; {space}.\n\n" if network else f"Measured {space}.\n\n")
        + "**Theorem 1** bounds only the paper's terms, which scale like σ⁴, while Δ_k tends to a_k² as σ → 0 (a_k² "
        f"is {r['gap_share'][smallest]:.0%} of the complete form at σ = {sigmas[smallest]:g}, median over k). "
        + (f"It fails at {listed(failed)}, by up to {max(t1[s].estimate for s in failed):.3g}× (largest ratio "
           "measured / bound)" if failed else "It fails at no σ measured")
        + (f"; it holds at {listed(held)}" if held else "")
        + (f"; at {listed(open_)} the interval of the ratio straddles 1" if open_ else "")
        + (": no σ measured is small enough for a_k² to exceed it. " if not failed else ". ")
        + f"**Lemma 1** {lemma.verdict} (largest ratio {lemma.estimate:.2g}), and with the corrected constant 4 it "
        f"bounds the paper form by Theorem 1's bound: {corrected.verdict} (largest ratio {corrected.estimate:.2g}). "
        "The paper's constant 2 is too small in general (H_k = M_H uuᵀ after H_i = −M_H uuᵀ gives ‖A_k‖₂ = 2M_H/k); "
        + (f"on this network the paper form stays below even that bound (largest ratio {paper_c.estimate:.2g}): the "
           "data leave enough slack to hide the error. " if paper_c.verdict == "holds" else
           f"on this network it is {'broken' if paper_c.verdict == 'fails' else 'reached'} (largest ratio "
           f"{paper_c.estimate:.2g}). ")
        + f"\n\n**The paper's form** lies {paper_range} (median over k; by σ: "
        + ", ".join(f"{x:.3g}×" for x in r["ratio_mc_paper"]) + "): it drops a_k and c_k, which are not zero at one "
        "fixed w*. Its two terms are the larger half of the complete form (median over k) "
        + ("at no σ from 1e-4 to 1e4. " if sp is None else
           f"only from σ ≈ {sp:.2g} on (perturbation norm σ√d ≈ {sp * r['dim'] ** 0.5:.2g})"
           + (f", beyond the largest σ measured, {sigmas[top]:g}, where Monte Carlo is "
              f"{r['ratio_mc_paper'][top]:.3g}× the paper form. " if sp > sigmas[top] else
              f"; at {listed([s for s in sigmas if s >= sp])} Monte Carlo is "
              + ", ".join(f"{pf[s].estimate:.3g}× the paper form and {cf[s].estimate:.2f}× the complete form"
                          for s in sigmas if s >= sp) + ". "))
        + f"**The complete form** matches Monte Carlo within 20 % (median over k) at {listed(by['cf']['holds'])}"
        + (f"; not at {listed(by['cf']['fails'])} (median ratio " + ", ".join(f"{cf[s].estimate:.2f}" for s in
           by["cf"]["fails"]) + "): the quadratic model does not describe Δ_k that far from w*"
           if by["cf"]["fails"] else "")
        + (f"; at {listed(by['cf']['inconclusive'])} the ratio's interval ("
           + ", ".join("{:.2f}–{:.2f}".format(*cf[s].interval) for s in by["cf"]["inconclusive"])
           + ") straddles the 20 % limit" if by["cf"]["inconclusive"] else "") + ". "
        + (f"This network is piecewise linear ({', '.join(kinked)}): its per-sample Hessians do not see the kinks, "
           "some of which lie close to w*, so part of any disagreement does not shrink with σ (README, "
           "\"Piecewise-linear networks\"). " if kinked else "")
        + f"**The complete bound** {c['complete_bound'].verdict} (largest ratio {c['complete_bound'].estimate:.2g} "
        "at the worst σ)."
        + _rate_prose(c, sigmas, rt, by["rate"], r, gap_orders)
    )
    return headline, text


def _rate_prose(c, sigmas, rt, by, r, gap_orders) -> str:
    gap_c, (lo, hi) = c["gap_rate_over_orders"], r["alpha_single_order_range"]
    draw_width = max(b - a for a, b in r["alpha_mc_ci"])
    return (
        f"\n\n**Rate.** Averaged over {r['orders']} data orders, Δ_k decays with α = "
        + ", ".join(f"{rt[s].estimate:.2f} [{rt[s].interval[0]:.2f}, {rt[s].interval[1]:.2f}] (σ = {s:g})"
                    for s in sigmas)
        + " (bootstrap over orders): k⁻² "
        + "; ".join(f"{v} at {listed(by[v])}" for v in claims.VERDICTS if by[v])
        + f". In the σ → 0 limit, a_k² averaged over {gap_orders} orders decays with α = {gap_c.estimate:.2f} "
        f"[{gap_c.interval[0]:.2f}, {gap_c.interval[1]:.2f}]: k⁻² {gap_c.verdict}. A single order's α scatters "
        f"over [{lo:.2f}, {hi:.2f}] (95 % of {gap_orders} orders), "
        + ("wider than the intervals over draws of the one order in the figures (α = "
           + ", ".join(f"{a:.2f}" for a in r["alpha_mc"]) + " by σ, widest interval "
           f"{draw_width:.2f}): an interval over draws says how well one order's curve is known, not what rate "
           "the data set has." if hi - lo > draw_width else
           f"no wider than the intervals over draws of the one order in the figures (widest {draw_width:.2f}).")
        + " All of it rests on one trained network (one training seed)."
    )

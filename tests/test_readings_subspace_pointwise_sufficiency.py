"""Readings of 04, 05 and 07 on synthetic results: verdicts and sentences follow the numbers.

Each reading is built twice from inputs that differ in one respect (a share, a rate, a bound, a
gain), and the test checks that the verdict and the sentence about it both turn round.
"""

import math

import numpy as np
import pytest

from landscape import replication, sufficiency
from landscape.curvature import DifferenceTerms
from landscape.delta import Curve, PointwiseCurve
from landscape.experiment import LearningCurve
from landscape.readings import Reading
from landscape.readings import pointwise as pointwise_reading
from landscape.readings import subspace as subspace_reading
from landscape.readings import sufficiency as sufficiency_reading
from landscape.readings.subspace import SubspaceReplicate, loss_rise, rate_table, term_table

K = 200
k = np.arange(2, K + 1)
SIGMAS = [0.1, 0.3]


def _curve(value, sigma=0.1, per_order=None):
    value = np.asarray(value, dtype=float)
    return Curve(
        k=k,
        value=value,
        stderr=0.01 * value,
        sigma=sigma,
        draws=100,
        dim=4,
        nonfinite=np.zeros(len(k)),
        orders=1 if per_order is None else len(per_order),
        per_order=per_order,
        samples=per_order,
    )


# ------------------------------------------------------------------------------------------- 04


def _terms(gap, grad_sq):
    zeros = np.zeros(len(k))
    return DifferenceTerms(
        k=k,
        gap=gap,
        grad_sq=grad_sq,
        trace=zeros,
        trace_sq=zeros,
        method="subspace",
        dim=4,
        trace_stderr=zeros,
        trace_sq_stderr=zeros,
    )


def _subspace_replicate(r, *, eigen_share, alpha=2.0, closed_factor=1.0, top=10.0, trace=12.0):
    """Δ_k = a_k² + σ²·e/k^α: the eigen subspace adds ``eigen_share`` of what the full space adds."""
    noise = 1 + 0.02 * r
    gap = 0.01 / k ** (alpha / 2)
    full, random = 1.0 * noise, 0.01 * noise
    eigen = eigen_share * full
    curves = {}
    for s in SIGMAS:
        for name, e in [("eigen", eigen), ("random", random), ("full", full)]:
            curves[s, name] = _curve(gap**2 + s**2 * e / k**alpha, sigma=s)
    # the complete form with no trace terms: a_k² + σ²‖c_k‖², exact when ‖c_k‖² = e/k^α
    terms = {
        "eigen": _terms(gap, closed_factor * eigen / k**alpha),
        "random": _terms(gap, random / k**alpha),
    }
    rng = np.random.default_rng(r)
    return SubspaceReplicate(
        eigenvalues=np.linspace(4, 1, 4) / 10 * top * noise,  # Σλ = top
        relative_residuals=np.full(4, 1e-6),
        hutchinson=trace * noise + rng.normal(0, 0.3, 200),
        random_curvature=np.full(4, 0.05),
        curves=curves,
        terms=terms,
    )


def _read_subspace(**kw):
    return subspace_reading.read([_subspace_replicate(r, **kw) for r in range(3)], SIGMAS, fit_k_min=10)


def test_subspace_share_of_change_flips_the_claim_and_the_sentence():
    carries, misses = _read_subspace(eigen_share=0.9), _read_subspace(eigen_share=0.1)
    assert isinstance(carries, Reading)
    for s in ("0p1", "0p3"):
        assert carries[f"eigen_carries_change_{s}"].verdict == "holds"
        assert misses[f"eigen_carries_change_{s}"].verdict == "fails"
    np.testing.assert_allclose(carries.numbers["eigen_share_of_change"], 0.9, rtol=1e-6)
    assert "it holds at σ = 0.1, 0.3." in carries.headline and "90%, 90%" in carries.headline
    assert "it fails at σ = 0.1, 0.3." in misses.headline
    # the eigenvalues hold Σλ/TrH of the trace; a share of Δ_k far below it is explained, one near it is not
    assert carries.numbers["top_share_of_trace"] == pytest.approx(10 / 12, rel=0.05)  # Σλ / Tr H
    assert "far below the 83% of Tr H" in misses.text and "far below" not in carries.text
    assert "That is in line with the 83% of Tr H" in carries.text


def test_subspace_eigen_above_random_turns_with_the_ratio():
    above, below = _read_subspace(eigen_share=0.9), _read_subspace(eigen_share=0.001)
    assert (
        above["eigen_above_random"].verdict == "holds" and above["eigen_above_random"].estimate > 1
    )
    assert (
        below["eigen_above_random"].verdict == "fails" and below["eigen_above_random"].estimate < 1
    )


def test_subspace_rate_and_closed_form_claims_follow_the_curves():
    quadratic, linear = _read_subspace(eigen_share=0.5), _read_subspace(eigen_share=0.5, alpha=1.0)
    for space in ("eigen", "random", "full"):
        assert quadratic[f"rate_two_{space}"].verdict == "holds"
        assert linear[f"rate_two_{space}"].verdict == "fails"
        assert linear[f"rate_two_{space}"].estimate == pytest.approx(1.0, abs=1e-6)
    exact, off = quadratic, _read_subspace(eigen_share=0.5, closed_factor=1.6)
    assert (
        exact["closed_form_eigen_0p3"].verdict == "holds"
        and off["closed_form_eigen_0p3"].verdict == "fails"
    )
    assert (
        "holds in the eigen subspace and is untested in the full space" in exact.text
        and "fails even" not in exact.text
    )
    ratio = off.numbers["closed_form_over_mc_eigen_large_k"][-1]
    assert (
        ratio == pytest.approx(1.6, rel=0.02)
        and f"fails even in the eigen subspace (complete form {ratio:.2f}×" in off.text
    )


def test_subspace_top_eigenvalues_share_of_the_trace_and_its_interval():
    most, little = (
        _read_subspace(eigen_share=0.5, top=10.0, trace=12.0),
        _read_subspace(eigen_share=0.5, top=1.0, trace=12.0),
    )
    assert (
        most["top_d_hold_trace"].verdict == "holds"
        and little["top_d_hold_trace"].verdict == "fails"
    )
    lo, hi = most.numbers["trace_hessian_ci"]
    assert lo < most.numbers["trace_hessian_estimate"] < hi  # Tr H carries its error bar
    assert f"{lo:.3g}–{hi:.3g}" in most.text


def test_subspace_tables_hold_one_row_per_sigma_and_space():
    rep = _subspace_replicate(0, eigen_share=0.5)
    rates = rate_table(rep, SIGMAS, fit_k_min=10, n_boot=20)
    assert len(rates) == len(SIGMAS) * (3 + 2)
    mc = rates[rates.estimate == "Monte Carlo"]
    assert (mc["α lo"] <= mc["α"]).all() and (mc["α"] <= mc["α hi"]).all()
    np.testing.assert_allclose(mc["α"], 2.0, atol=1e-6)
    split = term_table(rep, SIGMAS)
    # no trace terms: a_k² + σ²‖c_k‖² is the Monte Carlo value exactly in these inputs
    np.testing.assert_allclose(split[["gap", "grad"]].sum(1), split["Monte Carlo Δ_k"], rtol=1e-9)
    rise = loss_rise(rep, SIGMAS)
    assert rise.loc["full", "σ = 0.3"] == pytest.approx(0.5 * 0.09 * rep.hutchinson.mean())


# ------------------------------------------------------------------------------------------- 05


def _pointwise_reps(
    *, alpha=1.0, used=0.2, looseness_by_depth=(5.0, 20.0), levels=(0.1, 0.1), seeds=(0, 1, 2)
):
    found = replication.variants(
        [
            {"model": "mlp", "depth": 1, "width": 8, "bias": False},
            {"model": "mlp", "depth": 2, "width": 8, "bias": False},
        ]
    )
    records = {}
    for v, loose, level in zip(found, looseness_by_depth, levels):
        records[v.label] = {}
        for s in seeds:
            rng = np.random.default_rng(s)
            samples = 0.1 / k**alpha * (1 + 0.2 * rng.random((20, len(k))))
            curve = PointwiseCurve(
                k=k,
                value=samples.mean(0),
                stderr=samples.std(0) / math.sqrt(20),
                lower=samples.min(0),
                upper=samples.max(0),
                level=0.9,
                orders=20,
                samples=samples,
            )
            bound = 10.0 * (1 + 0.01 * s)
            records[v.label][s] = {
                "curve": curve,
                "alpha": alpha + 0.003 * s,
                "level": level * (1 + 0.01 * s + 0.02 * (s == 1) * (level > 0.15)),
                "M_l": 2.0,
                "M_H": used * bound,
                "M_H bound": bound,
                "looseness": loose * (1 + 0.01 * s) if used < 1 else 1 / used,
                "converged": True,
                "N": 100,
                "accuracy": 0.9,
                "norms": np.linspace(0.1, used * bound, 30),
            }
    return replication.Replicates(found, tuple(seeds), records, setups={}), found[0]


def _spheres(seeds=(0, 1, 2), worst=0.4):
    return {
        s: {
            0.0: np.array([0.3, 0.45]),
            0.01: np.array([0.2, worst, 0.1]),
            0.1: np.array([0.05, 0.1, worst / 2]),
        }
        for s in seeds
    }


def test_pointwise_rate_claims_and_sentences_follow_alpha():
    reps, ref = _pointwise_reps(alpha=1.0)
    one = pointwise_reading.read(reps, ref, _spheres(), radius_points=2, norm_samples=30, fit_k_min=10)
    reps, ref = _pointwise_reps(alpha=1.5)
    faster = pointwise_reading.read(reps, ref, _spheres(), radius_points=2, norm_samples=30, fit_k_min=10)
    assert all(c.verdict == "holds" for c in one.ledger if c.id.startswith("rate_one"))
    assert all(c.verdict == "fails" for c in faster.ledger if c.id.startswith("rate_one"))
    assert (
        "(2 of 2 networks inside" in one.headline and "(0 of 2 networks inside" in faster.headline
    )
    assert (
        "contains paper 002's 1/k" in one.text and "excludes paper 002's exact 1/k" in faster.text
    )
    assert all(c.replicates == 3 for c in one.ledger)


def test_pointwise_bounds_hold_or_fail_as_the_ratios_say():
    reps, ref = _pointwise_reps(used=0.2)
    kept = pointwise_reading.read(reps, ref, _spheres(worst=0.4), radius_points=2, norm_samples=30, fit_k_min=10)
    assert kept["hessian_bound_every_network"].verdict == "holds"
    assert kept["pointwise_bound_beyond_w_star"].verdict == "holds"
    assert kept["pointwise_bound_at_w_star"].estimate == pytest.approx(0.45)
    assert "so the bound holds" in kept.text and "holds at every tested point" in kept.text
    assert "Hessian-norm bound holds" in kept.headline and "pointwise bound holds" in kept.headline
    assert (
        kept.numbers["pointwise_bound_holds"] is True
        and kept.numbers["pointwise_bound_ratio_min"] > 1
    )

    reps, ref = _pointwise_reps(used=1.5)
    broken = pointwise_reading.read(
        reps, ref, _spheres(worst=1.3), radius_points=2, norm_samples=30, fit_k_min=10
    )
    assert broken["hessian_bound_every_network"].verdict == "fails"
    assert broken["pointwise_bound_beyond_w_star"].verdict == "fails"
    assert "VIOLATED" in broken.text and "the bound FAILS" in broken.text
    assert (
        "Hessian-norm bound FAILS" in broken.headline and "pointwise bound FAILS" in broken.headline
    )


def test_pointwise_depth_trend_of_the_looseness_is_read_from_paired_seeds():
    reps, ref = _pointwise_reps(looseness_by_depth=(5.0, 20.0))
    grows = pointwise_reading.read(reps, ref, _spheres(), radius_points=2, norm_samples=30, fit_k_min=10)
    reps, ref = _pointwise_reps(looseness_by_depth=(20.0, 5.0))
    shrinks = pointwise_reading.read(reps, ref, _spheres(), radius_points=2, norm_samples=30, fit_k_min=10)
    assert "grows with every increase of depth" in grows.text
    assert "shrinks with every increase of depth" in shrinks.text


def test_pointwise_level_sentence_says_whether_a_change_moves_it():
    reps, ref = _pointwise_reps(levels=(0.1, 0.1))
    same = pointwise_reading.read(reps, ref, _spheres(), radius_points=2, norm_samples=30, fit_k_min=10)
    reps, ref = _pointwise_reps(levels=(0.1, 0.3))
    moved = pointwise_reading.read(reps, ref, _spheres(), radius_points=2, norm_samples=30, fit_k_min=10)
    assert "none of the 1 one-setting changes moves it by more than the seeds vary" in same.text
    assert "1 of 1 one-setting changes move it by more than the seeds vary" in moved.text
    assert "(higher level" in moved.text


def test_pointwise_one_seed_cannot_decide_a_rate():
    reps, ref = _pointwise_reps(seeds=(0,))
    single = pointwise_reading.read(
        reps, ref, _spheres(seeds=(0,)), radius_points=2, norm_samples=30, fit_k_min=10
    )
    assert all(c.verdict == "inconclusive" for c in single.ledger if c.id.startswith("rate_one"))
    assert "cannot test paper 002's exact 1/k" in single.text
    with pytest.raises(ValueError, match="one entry per training seed"):
        pointwise_reading.read(reps, ref, _spheres(seeds=(0, 1)), radius_points=2, norm_samples=30, fit_k_min=10)


# ------------------------------------------------------------------------------------------- 07


def _per_seed(alpha, seeds=3, orders=5):
    out = []
    for s in range(seeds):
        rng = np.random.default_rng(s)
        per_order = 1e-3 * (1 + 0.05 * s) / k**alpha * np.exp(rng.normal(0, 0.1, (orders, len(k))))
        out.append(_curve(per_order.mean(0), per_order=per_order))
    return out


def _learning(gain):
    acc = np.array([[0.80, 0.90, 0.90 + gain + d] for d in (-0.002, 0.0, 0.002)])
    return LearningCurve(
        k=np.array([50, 100, 199]),
        accuracy=acc.mean(0),
        accuracy_stderr=acc.std(0) / math.sqrt(3),
        loss=np.ones(3),
        loss_stderr=np.zeros(3),
        per_seed_accuracy=acc,
    )


def _read_sufficiency(alpha=2.0, gain=0.001):
    curves = _per_seed(alpha)
    pooled = sufficiency.pool(curves)
    table = [sufficiency.k_star(pooled, e) for e in (1e-5, 1e-6, 1e-7)]
    losses = np.linspace(0.01, 1.0, K)
    return sufficiency_reading.read(
        pooled, curves, table[0], table[0], table, _learning(gain), losses
    ), table


def test_sufficiency_rate_claim_and_sentence_follow_the_seeds():
    quadratic, _ = _read_sufficiency(alpha=2.0)
    linear, _ = _read_sufficiency(alpha=1.0)
    assert (
        quadratic["delta_rate_two"].verdict == "holds"
        and linear["delta_rate_two"].verdict == "fails"
    )
    assert quadratic["delta_rate_two"].replicates == 3
    assert (
        "inside Theorem 1's band" in quadratic.text
        and "wholly outside Theorem 1's band" in linear.text
    )
    for reading, per_decade in [(quadratic, 10**0.5), (linear, 10.0)]:  # along the fitted power law
        step = 10 ** (1 / reading.numbers["alpha_pooled"])
        assert (
            step == pytest.approx(per_decade, rel=0.03)
            and f"10^(1/α) ≈ {step:.1f}× more samples" in reading.text
        )
    assert (
        "as the power law says (within a factor 1.5)" in quadratic.text
    )  # three measured k*: the data test it
    assert "fewer than two k* of the table are measured" in linear.text  # extrapolated ones cannot


def test_sufficiency_saturation_claim_turns_with_the_last_gain():
    flat, _ = _read_sufficiency(gain=0.001)
    rising, _ = _read_sufficiency(gain=0.05)
    assert (
        flat["accuracy_saturates"].verdict == "holds"
        and rising["accuracy_saturates"].verdict == "fails"
    )
    assert "gaining 0.001" in flat.text and "gaining 0.050" in rising.text
    falling, _ = _read_sufficiency(gain=-0.2)
    assert "does not rise" in falling.text and "losing 0.200" in falling.text


@pytest.mark.parametrize("alpha", [2.0, 1.0])  # all measured; measured and extrapolated
def test_sufficiency_headline_and_rows_are_the_k_star_answers(alpha):
    reading, table = _read_sufficiency(alpha=alpha)
    assert (
        f"is {table[0].kind}" in reading.headline
        and "3 training seeds × 5 data orders" in reading.headline
    )
    assert [row["kind"] for row in reading.numbers["k_star"]] == [a.kind for a in table]
    sentence = reading.text.split("Measured inside the data: ")[1].split(". ")[0]
    listed = dict(zip(sufficiency.KINDS, (part.split("ε = ")[1] for part in sentence.split("; "))))
    for a in table:  # each ε is listed under the kind its row has, and under no other
        assert [kind for kind, eps in listed.items() if f"{a.epsilon:.0e}" in eps] == [a.kind]


@pytest.mark.parametrize(
    ("seeds", "alpha", "method", "clause"),
    [
        (3, 2.0, "seeds, then orders within each", "resampling only 3 seeds, this interval is"),
        (3, 1.0, "seeds, then orders within each", "this interval (like those of the extrapolated k*)"),
        (sufficiency_reading.FEW_SEEDS, 2.0, "seeds, then orders within each", None),
        (1, 2.0, "orders", None),
    ],
)
def test_sufficiency_says_what_the_pooled_interval_resampled(seeds, alpha, method, clause):
    curves = _per_seed(alpha, seeds=seeds)
    pooled = sufficiency.pool(curves)
    table = [sufficiency.k_star(pooled, e) for e in (1e-5, 1e-6, 1e-7)]
    reading = sufficiency_reading.read(
        pooled, curves, table[0], table[0], table, _learning(0.001), np.linspace(0.01, 1.0, K)
    )
    fit = table[0].fit or pooled.fit_rate(k_min=20)  # as read takes it
    low, high = fit.alpha_ci
    assert f"({low:.2f}–{high:.2f}, bootstrap over {method}" in reading.text
    assert "seeds × orders" not in reading.text.split("of the pooled curve")[1]
    if clause is None:
        assert "resampling only" not in reading.text
    else:
        assert clause in reading.text and "t interval over the per-seed fits" in reading.text


def test_pool_averages_units_and_takes_errors_over_them():
    curves = _per_seed(2.0, seeds=2, orders=4)
    pooled = sufficiency.pool(curves)
    units = np.concatenate([c.per_order for c in curves])
    np.testing.assert_allclose(pooled.value, units.mean(0))
    # orders of one seed share its network: the standard error is over the 2 seeds' means
    seed_means = np.stack([c.per_order.mean(0) for c in curves])
    np.testing.assert_allclose(pooled.stderr, seed_means.std(0, ddof=1) / math.sqrt(2))
    np.testing.assert_array_equal(pooled.groups, [0, 0, 0, 0, 1, 1, 1, 1])
    assert pooled.orders == 8 and pooled.draws == 200
    with pytest.raises(ValueError, match="per-order estimates"):
        sufficiency.pool([_curve(np.ones(len(k)))])
    with pytest.raises(ValueError, match="does not match"):
        sufficiency.pool(
            [curves[0], _curve(curves[1].value, sigma=0.5, per_order=curves[1].per_order)]
        )


def test_sufficiency_names_a_measured_k_star_right_after_the_worst_sample():
    curves = _per_seed(2.0)
    pooled = sufficiency.pool(curves)
    table = [sufficiency.k_star(pooled, e) for e in (1e-5, 1e-6)]
    k_star = int(table[0].k_star)
    at, elsewhere = np.full(K, 0.1), np.full(K, 0.1)
    at[k_star - 2] = 3.0  # the worst-fitted sample arrives at k = k* − 1
    elsewhere[K - 1] = 3.0
    hit = sufficiency_reading.read(pooled, curves, table[0], table[0], table, _learning(0.0), at)
    miss = sufficiency_reading.read(pooled, curves, table[0], table[0], table, _learning(0.0), elsewhere)
    assert f"arrives at k = {k_star - 1:,} of the first order" in hit.text
    assert f"Here the measured k* for ε = 1e-05 is k = {k_star:,}, the step right after" in hit.text
    assert "the step right after" not in miss.text and f"arrives at k = {K:,}" in miss.text

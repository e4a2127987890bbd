"""Curves pooled over training seeds: errors and bootstraps over seeds, then orders within each.

The data orders of one seed share its network, so they are not independent units. ``pool``
records which seed each unit comes from; the pooled standard error is over the seeds, ``k_star``
bounds it with Student's t on S − 1 degrees of freedom, and ``fit_rate`` (hence an extrapolated
k*) resamples seeds, then orders within each. Checked against enumeration and against coverage
of a known population, beside the bootstrap that treats every unit as independent.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from landscape import delta, sufficiency, theory
from landscape.delta import Curve

K = 60
k = np.arange(2, K + 1)


def _seed_curve(per_order: np.ndarray) -> Curve:
    """One seed's curve over its orders, as ``across_orders`` leaves it."""
    return Curve(
        k=k,
        value=per_order.mean(0),
        stderr=per_order.std(0, ddof=1) / math.sqrt(len(per_order)),
        sigma=0.1,
        draws=50,
        dim=3,
        nonfinite=np.zeros(len(k), int),
        orders=len(per_order),
        per_order=per_order,
        samples=per_order,
    )


def _naive(pooled: Curve) -> Curve:
    """The pooled curve as it was before seeds were recorded: every unit independent."""
    units = pooled.samples
    stderr = units.std(0, ddof=1) / math.sqrt(len(units))
    return replace(pooled, groups=None, stderr=stderr)


def _population(rng, seeds: int, orders: int, sd_alpha=0.15, sd_level=0.3, sd_order=0.05):
    """Seeds whose rate and level differ (Δ_k = C_s k^(−α_s)) far more than their orders do."""
    alpha = 2.0 + sd_alpha * rng.standard_normal(seeds)
    level = np.exp(sd_level * rng.standard_normal(seeds))
    noise = np.exp(sd_order * rng.standard_normal((seeds, orders, len(k))))
    return sufficiency.pool([_seed_curve(c * k**-a * n) for a, c, n in zip(alpha, level, noise)])


def _population_mean(sd_alpha=0.15, sd_level=0.3, sd_order=0.05) -> np.ndarray:
    """E Δ_k over seeds and orders: E C · E noise · k⁻² · E k^(−(α−2)), α normal."""
    logk = np.log(k)
    return np.exp(0.5 * sd_level**2 + 0.5 * sd_order**2 - 2 * logk + 0.5 * (sd_alpha * logk) ** 2)


# -- what pool records ------------------------------------------------------------------------------


def test_pool_records_the_seed_of_every_unit():
    rng = np.random.default_rng(0)
    curves = [_seed_curve(np.exp(rng.normal(size=(p, len(k))))) for p in (3, 5, 2)]
    pooled = sufficiency.pool(curves)
    np.testing.assert_array_equal(pooled.groups, [0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    for s, c in enumerate(curves):  # the rows of seed s are seed s's per-order estimates
        np.testing.assert_array_equal(pooled.samples[pooled.groups == s], c.per_order)
    assert pooled.seeds == 3 and pooled.orders == 10 and "of 3 seeds" in repr(pooled)
    # the cluster-robust standard error, written out: residuals summed per seed
    units = pooled.samples
    mean = units.mean(0)
    sums = np.stack([(units[pooled.groups == s] - mean).sum(0) for s in range(3)])
    expected = np.sqrt(3 / 2 * (sums**2).sum(0)) / len(units)
    np.testing.assert_allclose(pooled.stderr, expected)
    with pytest.raises(ValueError, match="already pooled over 3 seeds"):
        sufficiency.pool([pooled, curves[0]])


def test_pool_of_measured_curves_and_its_relative_version_keep_the_seeds(tiny_problem):
    curves = [
        delta.across_orders(
            delta.monte_carlo(tiny_problem, 0.1, 8, seed=s, orders=3, order_seed=s, progress=False)
        )
        for s in (0, 1)
    ]
    pooled = sufficiency.pool(curves)
    np.testing.assert_array_equal(pooled.groups, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(pooled.samples[3:], curves[1].per_order)
    rel = sufficiency.relative(pooled, tiny_problem)
    np.testing.assert_array_equal(rel.groups, pooled.groups)
    assert rel.samples is rel.per_order and rel.seeds == 2
    assert (
        rel.fit_rate(k_min=2, n_boot=50).method == "bootstrap over seeds, then orders within each"
    )


def test_pool_error_leaves_out_non_finite_units_and_needs_two_seeds_per_k():
    rng = np.random.default_rng(1)
    a, b = rng.exponential(size=(2, 4, len(k)))
    a[1, 5] = np.nan  # one order of seed 0 at k = 7
    a[:, 9] = np.nan  # seed 0 has nothing at k = 11: one seed left there
    pooled = sufficiency.pool([_seed_curve(a), _seed_curve(b)])
    units = np.concatenate([a, b])
    col = units[:, 5][np.isfinite(units[:, 5])]
    sums = [(a[[0, 2, 3], 5] - col.mean()).sum(), (b[:, 5] - col.mean()).sum()]
    assert pooled.stderr[5] == pytest.approx(math.sqrt(2 * sum(s**2 for s in sums)) / 7)
    assert math.isnan(pooled.stderr[9]) and pooled.value[9] == pytest.approx(b[:, 9].mean())


def test_one_seed_is_its_curve_over_orders():
    rng = np.random.default_rng(2)
    curve = _seed_curve(2 * k**-2.0 * rng.exponential(size=(6, len(k))))
    pooled = sufficiency.pool([curve])
    np.testing.assert_array_equal(pooled.groups, np.zeros(6))
    np.testing.assert_allclose(pooled.stderr, curve.stderr)
    one, alone = pooled.fit_rate(k_min=10), curve.fit_rate(k_min=10)
    np.testing.assert_array_equal(one.bootstrap, alone.bootstrap)
    assert one.method == alone.method == "bootstrap over orders"
    for eps in (1e-3, 1e-5):  # the normal quantile, as before
        assert repr(sufficiency.k_star(pooled, eps)) == repr(sufficiency.k_star(curve, eps))


def test_fit_rate_with_one_group_or_none_is_the_plain_bootstrap():
    rng = np.random.default_rng(3)
    samples = k**-2.0 * rng.exponential(size=(8, len(k)))
    plain = theory.fit_rate(k, samples.mean(0), samples=samples, units="orders", n_boot=200)
    grouped = theory.fit_rate(
        k, samples.mean(0), samples=samples, units="orders", n_boot=200, groups=np.full(8, 7)
    )
    np.testing.assert_array_equal(plain.bootstrap, grouped.bootstrap)
    assert grouped.method == "bootstrap over orders"
    # the plain bootstrap, written out: rows drawn with replacement from one generator
    draw = np.random.default_rng(0)
    logk = np.log(k[k >= 10])
    first = samples[draw.integers(0, 8, 8)][:, k >= 10].mean(0)
    np.testing.assert_allclose(plain.bootstrap[0], np.polyfit(logk, np.log(first), 1))
    with pytest.raises(ValueError, match="one label per row"):
        theory.fit_rate(k, samples.mean(0), samples=samples, groups=np.zeros(5))


# -- the two-level bootstrap ------------------------------------------------------------------------


def test_two_level_bootstrap_draws_whole_seeds_then_orders_within_them():
    # every order of a seed is the same curve: a replicate can only be seed 0 alone, seed 1 alone,
    # or both with their own weights (2 rows and 5 rows), the three fits enumerated here
    rows = np.concatenate([np.tile(3 * k**-1.5, (2, 1)), np.tile(k**-2.5, (5, 1))])
    groups = np.array([0, 0, 1, 1, 1, 1, 1])
    fit = theory.fit_rate(
        k, rows.mean(0), samples=rows, groups=groups, units="orders", n_boot=400, k_min=2
    )
    logk = np.log(k)
    possible = [np.polyfit(logk, np.log(m), 1)[0] for m in (rows[0], rows[2], rows.mean(0))]
    slopes = fit.bootstrap[:, 0]
    which = np.argmin(np.abs(slopes[:, None] - np.array(possible)), axis=1)
    np.testing.assert_allclose(slopes, np.array(possible)[which], atol=1e-9)
    share = np.bincount(which, minlength=3) / len(slopes)  # 1/4, 1/4, 1/2
    np.testing.assert_allclose(share, [0.25, 0.25, 0.5], atol=0.07)
    assert fit.method == "bootstrap over seeds, then orders within each"
    # treated as 7 independent units, most replicates mix the two curves in other proportions
    naive = theory.fit_rate(k, rows.mean(0), samples=rows, n_boot=400, k_min=2)
    off = np.min(np.abs(naive.bootstrap[:, :1] - np.array(possible)), axis=1) > 1e-6
    assert off.mean() > 0.5


def test_two_level_bootstrap_resamples_orders_within_each_seed():
    # seeds alike, orders within them different: the spread comes from the orders alone, and a
    # resample of whole seeds (without the inner draw) would have none
    rng = np.random.default_rng(4)
    one = k**-2.0 * np.exp(0.3 * rng.standard_normal((4, len(k))))
    rows = np.concatenate([one, one])
    fit = theory.fit_rate(
        k, rows.mean(0), samples=rows, groups=np.repeat([0, 1], 4), n_boot=300, k_min=2
    )
    assert np.ptp(fit.bootstrap[:, 0]) > 0.01


def test_wide_seed_effects_widen_the_interval_to_the_spread_of_the_seeds():
    pooled = _population(np.random.default_rng(5), seeds=6, orders=16)
    fit, naive = pooled.fit_rate(k_min=10, level=0.9), _naive(pooled).fit_rate(k_min=10, level=0.9)
    width, naive_width = np.ptp(fit.alpha_ci), np.ptp(naive.alpha_ci)
    assert fit.alpha == naive.alpha and width > 3 * naive_width
    # the seeds' own rates: the t interval of their mean is about as wide as the bootstrap's
    alphas = [
        _seed_curve(pooled.samples[pooled.groups == s]).fit_rate(10, n_boot=0).alpha
        for s in range(6)
    ]
    t_width = 2 * stats.t.ppf(0.95, 5) * np.std(alphas, ddof=1) / math.sqrt(6)
    assert 0.5 * t_width < width < 2 * t_width and naive_width < 0.3 * t_width
    # an extrapolated k* from the same fit widens with it
    eps = 0.3 * pooled.value[-1] * (K / 200) ** 2  # crosses near k = 200, beyond K = 60
    answer, before = sufficiency.k_star(pooled, eps), sufficiency.k_star(_naive(pooled), eps)
    assert answer.kind == before.kind == "extrapolated"
    assert np.ptp(answer.interval) > 2 * np.ptp(before.interval)


def test_the_rate_interval_over_seeds_has_its_coverage():
    # 60 seeds whose rates and levels differ far more than their 6 orders do (5 % noise): the
    # pooled curve's α estimates the slope of the population's mean curve, known in closed form.
    # A percentile bootstrap over G seeds covers about P(|t_{G−1}| < z·√((G−1)/G)) ≈ 0.89 here.
    shape = dict(sd_alpha=0.05, sd_level=0.2)
    logk = np.log(k[k >= 10])
    truth = -np.polyfit(logk, np.log(_population_mean(**shape)[k >= 10]), 1)[0]
    rng = np.random.default_rng(7)
    covered, naive_covered, runs = 0, 0, 250
    for _ in range(runs):
        pooled = _population(rng, seeds=60, orders=6, **shape)
        low, high = pooled.fit_rate(k_min=10, level=0.9, n_boot=200).alpha_ci
        covered += low <= truth <= high
        low, high = _naive(pooled).fit_rate(k_min=10, level=0.9, n_boot=200).alpha_ci
        naive_covered += low <= truth <= high
    assert covered / runs >= 0.85 and naive_covered / runs < 0.65


def test_a_measured_k_star_over_three_seeds_has_its_coverage():
    # the bound over 3 seeds takes their standard error with t on 2 degrees of freedom; the
    # interval (from the lower bound, from the upper) must hold the k* of the population's mean
    # curve (k* = 33 for ε = 1e-3), where the bound over 15 "independent" units misses it
    eps, shape = 1e-3, dict(sd_alpha=0.05, sd_level=0.2)
    truth = k[np.flatnonzero(~(_population_mean(**shape) < eps))[-1] + 1]
    rng = np.random.default_rng(7)
    covered, naive_covered, runs = 0, 0, 300
    for _ in range(runs):
        pooled = _population(rng, seeds=3, orders=5, **shape)
        for answer, count in [
            (sufficiency.k_star(pooled, eps, level=0.9), "seeds"),
            (sufficiency.k_star(_naive(pooled), eps, level=0.9), "units"),
        ]:
            hit = answer.kind == "measured" and answer.interval[0] <= truth <= answer.interval[1]
            covered += hit and count == "seeds"
            naive_covered += hit and count == "units"
    assert covered / runs >= 0.85 and naive_covered / runs < 0.65

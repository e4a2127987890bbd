"""The claims ledger: verdicts from synthetic intervals, intervals over replicates, the record."""

import json
import math

import numpy as np
import pytest

from landscape import claims


@pytest.mark.parametrize(
    ("interval", "region", "expected"),
    [
        ([0.6, 0.9], {"above": 0.5}, "holds"),
        ([0.1, 0.4], {"above": 0.5}, "fails"),
        ([0.4, 0.6], {"above": 0.5}, "inconclusive"),
        ([0.5, 0.6], {"above": 0.5}, "inconclusive"),  # touching the boundary decides nothing
        ([0.1, 0.4], {"below": 0.5}, "holds"),
        ([0.6, 0.7], {"below": 0.5}, "fails"),
        ([1.9, 2.1], {"between": [1.8, 2.2]}, "holds"),
        ([1.8, 2.2], {"between": [1.8, 2.2]}, "holds"),  # closed region
        ([2.3, 2.6], {"between": [1.8, 2.2]}, "fails"),
        ([1.0, 1.5], {"between": [1.8, 2.2]}, "fails"),
        ([1.5, 2.0], {"between": [1.8, 2.2]}, "inconclusive"),
        ([1.0, 3.0], {"between": [1.8, 2.2]}, "inconclusive"),  # wider than the region
        ([math.nan, 2.0], {"between": [1.8, 2.2]}, "inconclusive"),
        ([math.nan, math.nan], {"above": 0.0}, "inconclusive"),
    ],
)
def test_verdict_follows_from_interval_and_region(interval, region, expected):
    assert claims.verdict(interval, region) == expected


@pytest.mark.parametrize(
    ("interval", "region", "message"),
    [
        ([2.0, 1.0], {"above": 0}, "lo > hi"),
        ([1.0], {"above": 0}, "two numbers"),
        ([1.0, 2.0], {"over": 0}, "'above', 'below' or 'between'"),
        ([1.0, 2.0], {"above": 0, "below": 3}, "must be one of"),
        ([1.0, 2.0], {"between": [3, 1]}, "a <= b"),
    ],
)
def test_bad_intervals_and_regions_are_refused(interval, region, message):
    with pytest.raises(ValueError, match=message):
        claims.verdict(interval, region)


def test_a_comparison_on_too_few_seeds_is_inconclusive_whatever_its_interval():
    c = claims.claim(
        "bn_widens", "Batch-norm widens the basin.", 0.035, [0.004, 0.066], {"above": 0},
        replicates=1, min_replicates=claims.MIN_COMPARISON_REPLICATES,
    )
    assert c.verdict == "inconclusive" and "needs 3 independent training seeds" in c.note
    enough = claims.claim(
        "bn_widens", "Batch-norm widens the basin.", 0.035, [0.004, 0.066], {"above": 0},
        replicates=3, min_replicates=3,
    )
    assert enough.verdict == "holds" and enough.note == ""


def test_the_record_has_the_schema_of_the_spec_and_is_json():
    c = claims.claim("rate", "Δ_k decays like k⁻².", 2.1, [1.9, math.nan], {"between": [1.8, 2.2]},
                     source="main paper Theorem 1", replicates=4)
    record = json.loads(json.dumps(c.to_json()))
    assert set(record) == {"id", "source", "statement", "estimate", "interval", "level", "region",
                           "verdict", "replicates"}
    assert record["interval"] == [1.9, "nan"] and record["verdict"] == "inconclusive"
    assert record["region"] == {"between": [1.8, 2.2]} and record["replicates"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "has space"}, "identifier"),
        ({"statement": " "}, "sentence"),
        ({"level": 1.5}, "level"),
        ({"replicates": 0}, "replicates"),
    ],
)
def test_bad_claims_are_refused(kwargs, message):
    args = dict(id="ok", statement="A claim.", estimate=1.0, interval=[0.5, 1.5], region={"above": 0})
    with pytest.raises(ValueError, match=message):
        claims.claim(**{**args, **kwargs})


def test_replicate_interval_covers_the_true_mean_at_about_its_level():
    rng = np.random.default_rng(0)
    covered = 0
    trials = 300
    for t in range(trials):
        values = rng.normal(2.0, 0.3, size=20)
        _, (lo, hi) = claims.replicate_interval(values, n_boot=500, seed=t)
        covered += lo <= 2.0 <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_one_replicate_has_no_interval_and_failed_replicates_are_refused():
    mean, interval = claims.replicate_interval([2.0])
    assert mean == 2.0 and all(math.isnan(x) for x in interval)
    with pytest.raises(ValueError, match="replicate"):
        claims.replicate_interval([1.0, math.nan, 2.0])


def test_pairing_removes_the_variation_two_conditions_share():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 1.0, size=12)          # large, shared by both conditions
    a = seed_effect + rng.normal(0, 0.05, size=12)
    b = seed_effect + 0.2 + rng.normal(0, 0.05, size=12)
    diff, (lo, hi) = claims.paired_difference(a, b)
    assert 0 < lo < diff < hi and abs(diff - 0.2) < 0.1
    _, (ua, ub) = claims.replicate_interval(b)
    _, (va, vb) = claims.replicate_interval(a)
    assert hi - lo < 0.2 * min(ub - ua, vb - va)      # unpaired intervals would overlap
    with pytest.raises(ValueError, match="shared replicate"):
        claims.paired_difference([1, 2, 3], [1, 2])


def test_ledger_puts_failures_first_and_counts_every_verdict():
    ledger = [
        claims.claim("a", "Holds.", 1.0, [0.5, 1.5], {"above": 0}),
        claims.claim("b", "Fails.", -1.0, [-1.5, -0.5], {"above": 0}),
        claims.claim("c", "Unclear.", 0.0, [-1.0, 1.0], {"above": 0}),
    ]
    table = claims.ledger_table(ledger)
    assert table.index("Fails.") < table.index("Unclear.") < table.index("Holds.")
    assert "| **fails** | Fails. | -1 [-1.5, -0.5] | 1 | ours |" in table
    assert claims.verdict_counts(ledger) == {"holds": 1, "fails": 1, "inconclusive": 1}
    assert claims.verdict_counts([]) == {"holds": 0, "fails": 0, "inconclusive": 0}


def test_a_one_sided_bootstrap_neither_collapses_nor_excludes_its_estimate():
    # every replicate below the estimate (a log-mean of heavy-tailed units): the bias-corrected
    # percentiles alone would collapse onto the largest replicate, a zero-width interval
    from landscape.theory import bootstrap_interval

    boots = np.linspace(1.0, 2.0, 1000)
    lo, hi = bootstrap_interval(boots, 2.5, 0.95)
    assert lo == pytest.approx(np.percentile(boots, 2.5)) and hi == 2.5
    lo, hi = bootstrap_interval(np.linspace(1.0, 3.0, 1001), 2.0, 0.95)  # centred: plain percentiles
    assert lo == pytest.approx(1.05) and hi == pytest.approx(2.95)


def test_bound_ratio_is_the_largest_ratio_with_limits_from_the_standard_errors():
    ratio, (lo, hi) = claims.bound_ratio([1.0, 4.0, 1.0], [2.0, 5.0, 10.0], [0.1, 0.5, 0.0])
    z = 1.959963984540054
    assert ratio == pytest.approx(0.8)
    assert lo == pytest.approx((4 - z * 0.5) / 5) and hi == pytest.approx((4 + z * 0.5) / 5)
    exact = claims.bound_ratio([1.0, 3.0], [2.0, 2.0])  # exact numbers: a zero-width interval
    assert exact == (1.5, (1.5, 1.5)) and claims.verdict(exact[1], {"below": 1}) == "fails"
    # points without a usable bound are left out; none usable gives NaN
    assert claims.bound_ratio([1.0, 9.0], [2.0, 0.0])[0] == pytest.approx(0.5)
    assert math.isnan(claims.bound_ratio([1.0], [math.nan])[0])
    with pytest.raises(ValueError, match="one number per k"):
        claims.bound_ratio([1.0, 2.0], [1.0])


def test_bootstrap_statistic_covers_a_known_ratio_at_about_its_level():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        a = rng.exponential(2.0, (60, 4))  # column means estimate 2, and 1 for b
        b = rng.exponential(1.0, (80, 4))
        ratio, (lo, hi) = claims.bootstrap_statistic(
            lambda x, y: x.mean() / y.mean(), a, b, n_boot=300, seed=trial
        )
        assert lo <= ratio <= hi
        covered += lo <= 2.0 <= hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_statistic_leaves_non_finite_units_out_and_refuses_bad_samples():
    a = np.array([[1.0, 2.0], [3.0, np.inf], [5.0, 4.0]])
    mean, _ = claims.bootstrap_statistic(lambda m: m[1], a, n_boot=10)
    assert mean == pytest.approx(3.0)  # the inf draw is left out at that k, as monte_carlo does
    with pytest.raises(ValueError, match="expected \\(units, n\\)"):
        claims.bootstrap_statistic(np.mean, np.ones(5))
    with pytest.raises(ValueError, match="at least one"):
        claims.bootstrap_statistic(np.mean)


def test_three_seed_intervals_keep_their_coverage():
    # with 3 replicates a bootstrap over replicates is far too narrow; the t interval is not
    rng = np.random.default_rng(2)
    hits = {"t": 0, "bootstrap": 0}
    trials = 400
    for t in range(trials):
        values = rng.normal(0.0, 1.0, size=3)
        for method in hits:
            _, (lo, hi) = claims.replicate_interval(values, method=method, n_boot=300, seed=t)
            hits[method] += lo <= 0.0 <= hi
    assert 0.92 <= hits["t"] / trials <= 0.98
    assert hits["bootstrap"] / trials < 0.85

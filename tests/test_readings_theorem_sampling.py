"""The readings of 01_theorem and 03_sampling on synthetic measurements whose verdicts flip.

Each test builds two sets of inputs that differ in one respect (a bound that holds or fails, a
closed form that matches Monte Carlo or not, a rate of k⁻² or k⁻¹...) and checks that the claim's
verdict *and* the generated sentence say the opposite when the numbers do, and that the numbers
quoted are those of the inputs.
"""

import math

import numpy as np
import pytest

from landscape import claims, replication
from landscape.curvature.results import DifferenceTerms
from landscape.delta import Curve, PointwiseCurve
from landscape.readings import Reading, sampling, theorem

K = 300
k = np.arange(2, K + 1)


def _terms(gap=0.3, grad=0.5, trace=2.0, dim=4, seed=0, M_H=None):
    """Terms of the right orders in k: a_k ~ 1/k, ‖c_k‖² ~ 1/k², Tr M_k ~ 1/k, Tr M_k² ≥ Tr²M_k/d."""
    rng = np.random.default_rng(seed)
    n = len(k)
    tr = trace * (1 + 0.5 * rng.random(n)) / k
    tr_sq = tr**2 / dim * (1 + rng.random(n)) + 1e-30
    return DifferenceTerms(
        k=k, gap=gap * rng.choice([-1.0, 1.0], n) * (1 + 0.5 * rng.random(n)) / k,
        grad_sq=grad * (1 + rng.random(n)) / k**2, trace=tr, trace_sq=tr_sq, method="exact", dim=dim,
        trace_stderr=np.zeros(n), trace_sq_stderr=np.zeros(n), max_loss=3 * max(gap, 1e-9),
        max_grad_norm=2 * math.sqrt(grad), max_hessian_norm=M_H if M_H is not None else 2 * trace,
    )


def _curve(value, sigma, *, draws=64, noise=0.05, seed=0, dim=4):
    """Monte Carlo in one order: per-draw samples scattered around ``value``."""
    rng = np.random.default_rng(seed)
    samples = value[None] * np.abs(1 + noise * rng.standard_normal((draws, len(value))))
    return Curve(k=k, value=samples.mean(0), stderr=samples.std(0, ddof=1) / math.sqrt(draws), sigma=sigma,
                 draws=draws, dim=dim, nonfinite=np.zeros(len(k), int), samples=samples)


def _over_orders(value, sigma, *, orders=10, noise=0.3, seed=1, dim=4, draws=64, first=None):
    """Δ_k averaged over orders: one curve per order (the first one ``first`` when given)."""
    rng = np.random.default_rng(seed)
    rows = value[None] * np.abs(1 + noise * rng.standard_normal((orders, len(value))))
    if first is not None:
        rows[0] = first
    return Curve(k=k, value=rows.mean(0), stderr=rows.std(0, ddof=1) / math.sqrt(orders), sigma=sigma,
                 draws=draws, dim=dim, nonfinite=np.zeros(len(k), int), orders=orders, per_order=rows,
                 samples=rows)


def _gap(alpha=2.0, orders=40, seed=2):
    rng = np.random.default_rng(seed)
    rows = np.abs(rng.standard_normal((orders, len(k)))) * 0.5 / k ** (alpha / 2)
    return PointwiseCurve(k=k, value=rows.mean(0), stderr=rows.std(0, ddof=1) / math.sqrt(orders),
                          lower=rows.min(0), upper=rows.max(0), level=0.9, orders=orders, samples=rows)


def _read(terms, sigmas, *, factor=1.0, rate=2.0, gap_alpha=2.0):
    curves = {s: _curve(factor * terms.predict(s), s, dim=terms.dim) for s in sigmas}
    averaged = {s: _over_orders(terms.predict(s).mean() * 4 * k ** -rate, s) for s in sigmas}
    return theorem.read(terms, curves, averaged, _gap(gap_alpha), max_hessian_norm=terms.max_hessian_norm,
                        fit_k_min=10, n_boot=100, num_params=1000, network="synthetic")


# ----------------------------------------------------------------------------------- 01_theorem


def test_theorem1_fails_where_the_gap_dominates_and_holds_where_it_vanishes():
    with_gap = _read(_terms(gap=0.3), [0.01])
    no_gap = _read(_terms(gap=1e-9, grad=1e-12, M_H=100.0), [1.0])
    assert with_gap["theorem1_sigma_0p01"].verdict == "fails"
    assert no_gap["theorem1_sigma_1"].verdict == "holds"
    assert "fails at σ = 0.01" in with_gap.headline and "holds at" not in with_gap.headline
    assert "fails at no σ measured and holds at σ = 1" in no_gap.headline
    assert "no σ measured is small enough for a_k² to exceed it" in no_gap.text
    assert "no σ measured is small enough" not in with_gap.text
    # the ratio quoted is the measured one: Δ_k ≈ a_k² ≫ σ⁴ d(d+2) M_H²/k² at σ = 0.01
    ratio = with_gap.numbers["theorem1_max_ratio"][0]
    assert ratio > 1e3 and f"by up to {ratio:.3g}×" in with_gap.text


@pytest.mark.parametrize(("factor", "verdict", "where"), [(1.0, "holds", "below"), (3.0, "fails", "below"),
                                                           (0.3, "fails", "above")])
def test_complete_form_matches_or_not_and_the_paper_form_lies_above_or_below(factor, verdict, where):
    reading = _read(_terms(gap=1e-9, grad=1e-12), [1.0], factor=factor)
    c = reading["complete_form_sigma_1"]
    assert c.verdict == verdict and c.estimate == pytest.approx(factor, rel=0.05)
    assert reading.numbers["ratio_mc_complete"] == [c.estimate]
    if verdict == "holds":
        assert "matches it within 20 % at σ = 1" in reading.headline
        assert "the quadratic model does not describe" not in reading.text
    else:
        assert "matches it within 20 % at no σ measured" in reading.headline
        assert f"not at σ = 1 (median ratio {c.estimate:.2f})" in reading.text
    assert f"× {where} Monte Carlo" in reading.headline


def test_where_the_paper_terms_take_over_inside_or_beyond_the_measured_range():
    terms = _terms(gap=0.05, grad=1e-6, trace=1.0)
    beyond, inside = _read(terms, [0.01, 0.1]), _read(terms, [0.01, 0.1, 100.0])
    crossing = beyond.numbers["sigma_paper_terms_dominate"]
    assert crossing == inside.numbers["sigma_paper_terms_dominate"] and 0.1 < crossing < 100
    assert f"only from σ ≈ {crossing:.2g} on" in beyond.text
    assert "beyond the largest σ measured, 0.1" in beyond.text
    assert "beyond the largest σ measured" not in inside.text and "at σ = 100 Monte Carlo is" in inside.text
    never = _read(_terms(gap=1e3, grad=1e3, trace=1e-12), [0.01])  # the paper's terms never weigh
    assert never.numbers["sigma_paper_terms_dominate"] is None and "at no σ from 1e-4 to 1e4" in never.text


def test_the_rate_claim_rests_on_orders_and_flips_with_the_rate():
    k2, k1 = _read(_terms(), [0.1], rate=2.0), _read(_terms(), [0.1], rate=1.0)
    assert k2["rate_sigma_0p1"].verdict == "holds" and k1["rate_sigma_0p1"].verdict == "fails"
    assert "bootstrap over orders" in k2["rate_sigma_0p1"].note
    assert k2["rate_sigma_0p1"].estimate == pytest.approx(2.0, abs=0.1)
    assert k1["rate_sigma_0p1"].estimate == pytest.approx(1.0, abs=0.1)
    assert "k⁻² holds at σ = 0.1" in k2.text and "k⁻² fails at σ = 0.1" in k1.text
    slow_gap = _read(_terms(), [0.1], gap_alpha=1.0)
    assert slow_gap["gap_rate_over_orders"].verdict == "fails" and "k⁻² fails. A single order" in slow_gap.text


def test_theorem_reading_records_what_the_notebook_tabulates():
    reading = _read(_terms(), [0.01, 1.0])
    rows = reading.numbers["rates"]
    assert {row["estimate"] for row in rows} == {"Monte Carlo, one order", "Monte Carlo, 10 orders",
                                                 "complete form", "paper form"}
    assert len(rows) == 8 and all(row["α low"] <= row["α"] <= row["α high"] for row in rows)
    assert all(c.verdict == claims.verdict(c.interval, c.region) for c in reading.ledger)


# ---------------------------------------------------------------------------------- 03_sampling


def _sweep(seed, *, sigma_levels, dim_levels, original_levels, alpha=2.0, sigmas=(0.01, 1.0), dims=(1, 4)):
    """A seed's sweeps whose curves have the given levels of k²Δ_k (times a little seed noise)."""
    rng = np.random.default_rng(seed)
    jitter = lambda: 1 + 0.02 * rng.standard_normal()  # noqa: E731
    terms = {d: _terms(dim=d, seed=seed) for d in sorted({*dims, 8})}
    shape = k ** (2.0 - alpha) / np.mean((k ** (2.0 - alpha))[k >= K // 2])  # level 1 at k ≥ K/2
    mc = lambda level, s, d: _over_orders(level * jitter() * shape / k**2, s, noise=0.05, seed=seed, dim=d,  # noqa: E731
                                          orders=4)
    return replication.Sweep(
        seed=seed, sigma_dim=8, dim_sigma=1.0, orders=4, terms=terms,
        by_sigma={s: mc(lv, s, 8) for s, lv in zip(sigmas, sigma_levels)},
        by_dim={d: mc(lv, 1.0, d) for d, lv in zip(dims, dim_levels)},
        original={d: _curve(lv * jitter() * shape / k**2, 1.0, noise=1.0, seed=seed) for d, lv in
                  zip(dims, original_levels)},
        gap=_gap(orders=4, seed=seed), accuracy=0.9,
    )


def _sampling(n_seeds=3, grid=None, **levels):
    defaults = dict(sigma_levels=(1.0, 50.0), dim_levels=(1.0, 2.0), original_levels=(1.0, 1.0))
    sweeps = [_sweep(s, **{**defaults, **levels}) for s in range(n_seeds)]
    return sampling.read(sweeps, grid, fit_k_min=10, level_k_min=K // 2, grid_sigma=0.2 if grid else None)


def test_d_changes_delta_and_the_original_code_hides_it():
    growing, flat = _sampling(dim_levels=(1.0, 2.0)), _sampling(dim_levels=(1.0, 1.02))
    assert growing["dim_no_effect"].verdict == "fails" and flat["dim_no_effect"].verdict == "holds"
    assert growing["dim_no_effect"].estimate == pytest.approx(2.0, rel=0.05)
    assert growing["dim_no_effect_original_code"].verdict == "holds"
    assert "'d does not change Δ_k' fails here and holds with the code's bugs: the paper's finding" in growing.headline
    assert "'d does not change Δ_k' holds here" in flat.headline and "what those bugs produce" not in flat.headline
    assert "Together they turn a growth with d" in growing.text
    assert "Here the two computations do not differ in that way" in flat.text
    assert f"{growing['dim_no_effect'].estimate:.2f}× with every direction perturbed" in growing.headline


def test_sigma_matters_strongly_or_not():
    strong, weak = _sampling(sigma_levels=(1.0, 50.0)), _sampling(sigma_levels=(1.0, 2.0))
    assert strong["sigma_matters"].verdict == "holds" and weak["sigma_matters"].verdict == "fails"
    assert "(\"strongly\": holds)" in strong.text and "(\"strongly\": fails)" in weak.text
    assert strong.numbers["sigma_level_mc"][1] == pytest.approx(50.0, rel=0.05)
    assert f"changes {strong['sigma_matters'].estimate:.3g}× from σ = 0.01 to 1" in strong.headline


def test_rate_claims_over_seeds_hold_fail_or_stay_open():
    def with_alpha(alphas):
        sweeps = [_sweep(s, sigma_levels=(1.0, 50.0), dim_levels=(1.0, 2.0), original_levels=(1.0, 1.0),
                         alpha=a) for s, a in enumerate(alphas)]
        return sampling.read(sweeps, fit_k_min=10, level_k_min=K // 2)

    two, one, spread = with_alpha([2.0, 2.0, 2.0]), with_alpha([1.0, 1.0, 1.0]), with_alpha([1.4, 2.0, 2.6])
    assert two["alpha_dim_4"].verdict == "holds" and one["alpha_dim_4"].verdict == "fails"
    assert spread["alpha_dim_4"].verdict == "inconclusive"
    assert spread["alpha_dim_4"].estimate == pytest.approx(2.0, abs=0.1) and spread["alpha_dim_4"].replicates == 3
    assert "neither confirm nor rule out k⁻²" in spread.text and "neither confirm" not in two.text
    assert "Of the 4 rate claims (α in [1.8, 2.2]), 4 hold." in two.text
    assert "Of the 4 rate claims (α in [1.8, 2.2]), 4 fail." in one.text


def test_two_seeds_cannot_decide_a_comparison():
    reading = _sampling(n_seeds=2)
    assert all(c.verdict == "inconclusive" and c.replicates == 2 for c in reading.ledger)
    assert "Over 2 training seeds" in reading.headline


def test_the_integrand_sentence_follows_the_grid_numbers():
    base = dict(k=[2, 50, 100], delta=[1e-2, 1.2e-4, 1e-6], peak=[1, 1, 1], gap_at_centre=[0, 0, 0],
                delta_original=[1e-1, 1e-4, 4e-5])
    spiky = _sampling(grid={**base, "step": [0.2, 0.2, 0.2], "step_original": [1.7, 1.7, 1.7]})
    smooth = _sampling(grid={**base, "step": [0.2, 0.2, 0.2], "step_original": [0.25, 0.25, 0.25]})
    assert "come from the reshuffling" in spiky.text and "come from the reshuffling" not in smooth.text
    assert "by 1.70 of its mean against 0.20 with one order" in spiky.text
    falls = np.diff(np.log(base["delta"])) / np.diff(np.log(base["k"]))
    assert f"k^{falls[0]:.2f} from k = 2 to 50" in spiky.text
    assert "not k⁻² from one k to another" in spiky.text and "close to k⁻² at each step" not in spiky.text
    steady = _sampling(grid={**base, "delta": [1e-2, 1e-2 * 25.0**-2, 1e-2 * 50.0**-2], "step": [0.2] * 3,
                             "step_original": [1.7] * 3})
    assert "close to k⁻² at each step" in steady.text and "k^-2.00 from k = 50 to 100" in steady.text
    assert sampling.table(spiky, "grid").shape == (3, 6) and sampling.table(spiky, "sigma").shape[0] == 2


def test_level_is_the_mean_of_k_squared_values_at_large_k():
    assert replication.level(k, 5.0 / k**2, 100) == pytest.approx(5.0)
    assert replication.level(k, np.where(k >= 100, 1.0 / k**2, 1e9), 100) == pytest.approx(1.0)


def test_a_reading_refuses_repeated_ids_and_an_empty_headline():
    c = claims.claim("x", "A claim.", 1.0, [0.5, 1.5], {"below": 2})
    with pytest.raises(ValueError, match="unique"):
        Reading(ledger=[c, c], headline="h", text="")
    with pytest.raises(ValueError, match="headline"):
        Reading(ledger=[c], headline=" ", text="")
    assert Reading(ledger=[c], headline="h", text="t")["x"] is c

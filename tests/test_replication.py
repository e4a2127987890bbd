"""Replicated comparisons: variants validated and paired, paired differences, ties, measures in the data."""

import math

import numpy as np
import pytest
import torch

from landscape import claims, experiment, replication, surface, theory
from landscape.problem import Problem
from landscape.replication import compare

from conftest import tiny_data, tiny_net

CNN = {"model": "cnn", "depth": 2, "channels": 16}
MLP = {"model": "mlp", "depth": 2, "width": 32}


# ------------------------------------------------------------------------------------- variants


def test_variants_fill_defaults_and_label_uniquely():
    vs = replication.variants(
        [
            CNN,
            {**CNN, "batch_norm": True},
            {**CNN, "batch_norm": True, "dropout": 0.2},
            {**MLP, "activation": "tanh", "bias": False},
            {**CNN, "kernel_size": 5},
        ]
    )
    assert [v.label for v in vs] == [
        "CNN 2×16",
        "CNN 2×16 +BN",
        "CNN 2×16 +BN +dropout 0.2",
        "MLP 2×32 tanh no bias",
        "CNN 2×16 kernel 5",
    ]
    assert vs[0].settings == {
        "model": "cnn",
        "depth": 2,
        "channels": 16,
        "kernel_size": 3,
        "batch_norm": False,
        "dropout": 0.0,
        "bias": True,
        "activation": "relu",
    }
    assert vs[1].options == {"depth": 2, "channels": 16, "batch_norm": True}  # as given
    assert vs[2].slug == "cnn_2x16_bn_dropout_0_2" and vs[2].slug.isidentifier()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "non-empty list"),
        ({"model": "cnn"}, "non-empty list"),
        ([CNN, {"depth": 2}], r"variants\[1\]=.* must be a dict with a 'model' key"),
        ([{"model": "rnn"}], r"variants\[0\]\['model'\]='rnn'"),
        ([{**CNN, "widht": 3}], r"variants\[0\]: unknown cnn configuration key\(s\) widht"),
        ([{**CNN, "dropout": 1.5}], r"variants\[0\]: dropout=1.5"),
        ([{**CNN, "seed": 3}], "training seeds are the replicates"),
        (
            [{"model": "cnn"}, {"model": "cnn", "depth": 4}],
            r"variants\[1\] and variants\[0\] are the same network",
        ),
    ],
)
def test_variants_refuse_bad_lists_naming_the_entry(specs, message):
    with pytest.raises(ValueError, match=message):
        replication.variants(specs)


def test_one_setting_changes_run_from_the_smaller_value_and_wider_changes_say_what_differs():
    vs = replication.variants([{**CNN, "batch_norm": True}, CNN, {**CNN, "depth": 4}, MLP])
    found = replication.changes(vs)
    assert len(found) == 6
    single = replication.changes(vs, single=True)
    assert [(c.a.label, c.b.label, c.setting) for c in single] == [
        ("CNN 2×16", "CNN 2×16 +BN", "batch_norm"),  # given BN first: still written as adding BN
        ("CNN 2×16", "CNN 4×16", "depth"),
    ]
    assert (
        single[0].i == 1 and single[0].j == 0 and single[0].describe() == "batch_norm False → True"
    )
    to_mlp = next(c for c in found if c.b.model == "mlp" and c.a.label == "CNN 2×16")
    assert not to_mlp.single and set(to_mlp.differs) == {
        "model",
        "channels",
        "kernel_size",
        "width",
    }
    assert "model cnn → mlp" in to_mlp.describe() and "width – → 32" in to_mlp.describe()
    with pytest.raises(ValueError, match="not one setting"):
        _ = to_mlp.setting


# ----------------------------------------------------------------------- comparisons and ranks


def _replicates(values: dict[str, list[float]], specs=None) -> replication.Replicates:
    """Replicates with given measures (no training): values[label-order] per seed."""
    specs = specs or [CNN, {**CNN, "batch_norm": True}, {**CNN, "depth": 4}][: len(values)]
    vs = replication.variants(specs)
    seeds = tuple(range(len(next(iter(values.values())))))
    records = {v.label: {s: {"m": row[s]} for s in seeds} for v, row in zip(vs, values.values())}
    return replication.Replicates(vs, seeds, records, setups={})


def test_paired_difference_uses_shared_seeds_and_reports_ties():
    reps = _replicates({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.5, 2.4, 3.6, 4.5]})
    comp = reps.compare("m", replication.changes(reps.variants)[0])
    assert comp.estimate == pytest.approx(0.5) and comp.interval[0] > 0 and not comp.tie
    assert comp.replicates == 4 and "b larger" in comp.describe()
    # unpaired, the seeds' spread (1..4) would swamp the 0.5; paired it does not
    noisy = _replicates({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.6, 1.9, 3.7, 3.9]})
    comp = noisy.compare("m", replication.changes(noisy.variants)[0])
    assert comp.tie and "a tie" in comp.describe()
    logged = reps.compare("m", replication.changes(reps.variants)[0], log=True)
    assert logged.ratio == pytest.approx(math.exp(np.mean(np.log([1.5, 1.2, 1.2, 1.125]))))


def test_ranking_gives_tied_variants_the_same_rank():
    # A and B cannot be told apart; C is smaller than both on every seed
    reps = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.1, 1.9, 3.05], "C": [0.5, 1.4, 2.5]})
    ranks = reps.ranking("m")  # largest first
    assert [(e.label, e.rank) for e in ranks] == [
        ("CNN 2×16 +BN", 1),
        ("CNN 2×16", 1),
        ("CNN 4×16", 3),
    ]
    assert ranks[0].tied_with == ("CNN 2×16",)
    assert replication.describe_ranking(ranks, ".2f") == (
        "1. CNN 2×16 +BN (2.02) = CNN 2×16 (2.00); 3. CNN 4×16 (1.47)"
    )
    smallest = reps.ranking("m", largest_first=False)
    assert smallest[0].label == "CNN 4×16" and smallest[0].rank == 1 and smallest[1].rank == 2


def test_one_seed_ranks_nothing():
    reps = _replicates({"A": [1.0], "B": [5.0]})
    assert [e.rank for e in reps.ranking("m")] == [1, 1]
    comp = reps.compare("m", replication.changes(reps.variants)[0])
    assert comp.tie and "no interval from 1 seed(s): undecided" in comp.describe()


def test_claims_follow_the_paired_difference_and_need_three_seeds():
    narrows = replication.Expectation(
        "bn_narrows",
        "paper Fig. 2",
        "Batch-norm narrows: r of {b} is below that of {a}.",
        "batch_norm",
        {"below": 0},
        model="cnn",
    )
    deeper = replication.Expectation(
        "depth_matters",
        "paper §6",
        "Depth matters: {a} vs {b}.",
        "depth",
        {"above": 0.1},
        absolute=True,
    )
    mlp_only = replication.Expectation("mlp", "x", "s", "batch_norm", {"below": 0}, model="mlp")
    reps = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.5, 2.4, 3.6], "C": [0.5, 1.5, 2.4]})
    ledger = reps.claims("m", [narrows, deeper, mlp_only])
    assert [c.id for c in ledger] == ["bn_narrows", "depth_matters"]  # no MLP pair: no entry
    bn, depth = ledger
    assert (
        bn.verdict == "fails"
        and bn.statement == "Batch-norm narrows: r of CNN 2×16 +BN is below that of CNN 2×16."
    )
    assert bn.replicates == 3 and bn.estimate == pytest.approx(0.5)
    assert depth.estimate > 0 and depth.interval[0] > 0.1 and depth.verdict == "holds"  # |−0.53|
    two = _replicates({"A": [1.0, 2.0], "B": [1.5, 2.4]})
    assert two.claims("m", [narrows])[0].verdict == "inconclusive"  # 2 seeds < 3


def test_abs_interval_is_the_image_of_the_interval():
    assert compare._abs_interval((-0.3, 0.1)) == (0.0, 0.3)
    assert compare._abs_interval((-0.5, -0.2)) == (0.2, 0.5)
    assert compare._abs_interval((0.2, 0.4)) == (0.2, 0.4)
    assert all(math.isnan(x) for x in compare._abs_interval((math.nan, math.nan)))


def test_values_name_a_missing_or_non_numeric_measure():
    reps = _replicates({"A": [1.0, 2.0], "B": [1.5, 2.4]})
    with pytest.raises(ValueError, match="returned no 'width'"):
        reps.values("width")
    reps.records["CNN 2×16"][0] = {"m": "wide"}
    with pytest.raises(ValueError, match="is 'wide', not a number"):
        reps.values("m")


# ------------------------------------------------------------------- measures inside the data


def test_level_at_is_the_fitted_value_inside_the_window():
    k = np.arange(2, 401)
    values = 3.0 * k**-2.0 * (1 + 0.01 * np.sin(k))
    fit = theory.fit_rate(k, values, k_min=20, n_boot=0)
    assert replication.level_at(fit, 200) == pytest.approx(3.0 * 200**-2.0, rel=0.02)
    with pytest.raises(ValueError, match="outside the fit window 20..400"):
        replication.level_at(fit, 1)  # the intercept C is the value at k = 1: not in the data


def test_profile_width_interpolates_below_the_grid_step():
    rise, t = 0.5, np.linspace(-1, 1, 9)  # step 0.25
    lams = np.linspace(2.0, 4.0, 9)
    exact = np.sqrt(2 * rise / lams)  # ½ λ t² = rise
    found = [replication.profile_width(t, 0.5 * lam * t**2, rise) for lam in lams]
    assert np.abs([w.radius for w in found] - exact).max() < 0.02 and not any(
        w.truncated for w in found
    )
    # counting grid points rounds to half-steps: nine different curvatures, two distinct widths (ties)
    counted = {
        surface.Surface(
            (t,), np.zeros(0), 0.5 * lam * t**2, np.zeros((0, 9)), np.zeros((0, 9)), "x"
        )
        .basin_width(rise)
        .radius
        for lam in lams
    }
    assert len(counted) <= 2
    # asymmetric: crossings on each side separately
    f = np.where(t > 0, 2.0 * t**2, 0.5 * t**2)
    w = replication.profile_width(t, f, 0.5)
    assert w.radius == pytest.approx((0.5 + 1.0) / 2, abs=0.03)


def test_profile_width_flags_a_basin_wider_than_the_scan():
    t = np.linspace(-1, 1, 11)
    w = replication.profile_width(t, 0.1 * t**2, 0.5)
    assert w.truncated and w.radius == pytest.approx(1.0)
    with pytest.raises(ValueError, match="contain 0"):
        replication.profile_width(np.linspace(1, 2, 5), np.zeros(5), 0.5)


def test_basin_widths_measure_each_scanned_profile():
    X, y = tiny_data(K=12)
    prob = Problem(tiny_net(), X, y, dtype=torch.float64, device="cpu")
    w = replication.basin_widths(prob, 3, rise=0.05, span=2.0, points=11, seed=4)
    assert w.radius.shape == (3,) and (w.radius > 0).all() and len(w.profiles) == 3
    for r, p in zip(w.radius, w.profiles):
        assert r == replication.profile_width(p.coords[0], p.loss, 0.05).radius
    assert w.mean == pytest.approx(w.radius.mean())
    with pytest.raises(ValueError, match="odd"):
        replication.basin_widths(prob, 2, rise=0.1, points=10)


def test_replicate_trains_each_variant_per_seed(tmp_path):
    vs = replication.variants(
        [
            {"model": "mlp", "depth": 1, "width": 8},
            {"model": "mlp", "depth": 1, "width": 8, "batch_norm": True},
        ]
    )

    def measure(setup, variant, seed):
        return {"N": setup.problem.num_params, "seed": setup.config["seed"], "label": variant.label}

    reps = replication.replicate(
        vs,
        [0, 1],
        measure,
        dataset="digits",
        epochs=1,
        k_max=20,
        cache_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    assert reps.values("seed").tolist() == [[0, 1], [0, 1]]
    assert reps.values("N")[1, 0] > reps.values("N")[0, 0]  # batch-norm adds parameters
    assert isinstance(reps.setups["MLP 1×8 +BN"][1], experiment.Setup)
    with pytest.raises(ValueError, match="repeats a seed"):
        replication.replicate(vs, [0, 0], measure)
    with pytest.raises(ValueError, match="must return a mapping"):
        replication.replicate(
            vs[:1],
            [0],
            lambda *_: 1.0,
            epochs=1,
            k_max=20,
            cache_dir=tmp_path,
            device="cpu",
            progress=False,
        )
    assert claims.MIN_COMPARISON_REPLICATES == 3


# ------------------------------------------------------------- summaries, the paper's claims, figures


def test_frame_results_and_describe_changes_report_every_pair():
    reps = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.5, 2.4, 3.6], "C": [0.5, 1.4, 2.5]})
    table = reps.frame(["m"], intervals=["m"])
    assert list(table.columns) == ["m", "m lo", "m hi"] and table.index.name == "variant"
    assert table.loc["CNN 2×16 +BN", "m"] == pytest.approx(2.5)
    out = reps.results("m")
    assert np.shape(out["m_per_seed"]) == (3, 3) and len(out["m_ci"]) == 3
    assert [d["setting"] for d in out["m_differences"]] == ["batch_norm", "depth"]
    assert out["m_ranking"][0] == dict(variant="CNN 2×16 +BN", rank=1, mean=2.5, tied_with=[])
    text = reps.describe_changes(
        "m",
        larger="wider",
        smaller="narrower",
        context={v.label: f"N = {i}" for i, v in enumerate(reps.variants)},
    )
    assert (
        "- CNN 2×16 → CNN 2×16 +BN: +0.500" in text and "(wider)" in text and "(narrower)" in text
    )
    assert "1 other pair(s) differ in more than one setting" in text
    assert "CNN 2×16 +BN (N = 1) → CNN 4×16 (N = 2): depth 2 → 4, batch_norm True → False" in text


def test_model_changes_are_listed_first_among_wider_changes():
    specs = [MLP, {**MLP, "batch_norm": True, "dropout": 0.2}, CNN]
    reps = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.1, 2.1, 3.1], "C": [2.0, 3.0, 4.0]}, specs)
    text = reps.describe_changes("m", show=1)
    assert "MLP 2×32 → CNN 2×16: model mlp → cnn" in text and "and 2 more" in text


def test_claims_per_variant_and_describe_claims():
    reps = _replicates({"A": [1.95, 2.0, 2.05], "B": [2.5, 2.6, 2.7]})
    ledger = reps.claims_per_variant(
        "m",
        "rate_two",
        "{variant} decays like k⁻².",
        {"between": [1.8, 2.2]},
        source="main paper Theorem 1",
    )
    assert [c.id for c in ledger] == ["rate_two_cnn_2x16", "rate_two_cnn_2x16_bn"]
    assert [c.verdict for c in ledger] == ["holds", "fails"] and ledger[
        0
    ].statement == "CNN 2×16 decays like k⁻²."
    text = replication.describe_claims(ledger, ".2f", symbol="α")
    assert text.startswith(
        "1 holds, 1 fails, 0 inconclusive: CNN 2×16 decays like k⁻². — holds (α = 2.00"
    )
    assert replication.describe_claims([]) == "0 hold, 0 fail, 0 inconclusive"


def test_reshapes_convergence_tests_any_one_setting_change_both_ways():
    exp = replication.reshapes_convergence(500)
    assert "k = 500" in exp.statement and exp.absolute and exp.settings is None
    # C is 3× below A (depth), B 1.1× above A (batch-norm): only the first is "at least twofold"
    reps = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.1, 2.2, 3.3], "C": [0.33, 0.66, 1.0]})
    ledger = reps.claims("m", [exp], log=True)
    assert [c.id for c in ledger] == [
        "setting_reshapes_convergence_cnn_2x16_to_cnn_2x16_bn",
        "setting_reshapes_convergence_cnn_2x16_to_cnn_4x16",
    ]
    bn, depth = ledger
    assert bn.verdict == "fails" and bn.estimate == pytest.approx(math.log(1.1))
    assert depth.verdict == "holds" and depth.estimate == pytest.approx(math.log(3.0), rel=0.01)


def test_basin_claims_match_the_pairs_the_paper_talks_about():
    vs = replication.variants(
        [
            CNN,
            {**CNN, "batch_norm": True},
            {**CNN, "batch_norm": True, "dropout": 0.2},
            {**CNN, "depth": 4},
            MLP,
            {**MLP, "batch_norm": True},
            {**MLP, "batch_norm": True, "dropout": 0.2},
            {**MLP, "dropout": 0.2},
        ]
    )
    single = replication.changes(vs, single=True)
    found = {
        exp.id: [f"{c.a} → {c.b}" for c in single if exp.matches(c)]
        for exp in replication.BASIN_CLAIMS
    }
    assert found == {
        "bn_narrows_basin": ["CNN 2×16 → CNN 2×16 +BN"],
        "dropout_widens_basin": ["CNN 2×16 +BN → CNN 2×16 +BN +dropout 0.2"],
        "depth_widens_basin": ["CNN 2×16 → CNN 4×16"],
        "mlp_bn_dropout_widest": [
            "MLP 2×32 +BN → MLP 2×32 +BN +dropout 0.2",
            "MLP 2×32 +dropout 0.2 → MLP 2×32 +BN +dropout 0.2",
        ],
    }


def test_conflicts_are_pairs_two_rankings_separate_in_opposite_ways():
    fit = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.5, 2.5, 3.5], "C": [1.1, 1.9, 3.05]}).ranking(
        "m"
    )
    same = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.6, 2.6, 3.6], "C": [1.0, 2.0, 3.0]}).ranking(
        "m"
    )
    flipped = _replicates(
        {"A": [1.5, 2.5, 3.5], "B": [1.0, 2.0, 3.0], "C": [1.0, 2.0, 3.0]}
    ).ranking("m")
    assert fit[0].ahead_of == ("CNN 2×16", "CNN 4×16")
    assert replication.conflicts(fit, same) == []
    assert replication.conflicts(fit, flipped) == [("CNN 2×16 +BN", "CNN 2×16")]


def test_basin_record_and_slices_on_a_trained_network(tmp_path):
    setup = experiment.prepare(
        "digits",
        "mlp",
        {"depth": 1, "width": 8},
        epochs=1,
        k_max=30,
        cache_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    record = replication.basin_record(setup, 3, rise=0.2, span=1.0, points=9, seed=1)
    assert set(record) == {"width", "spread", "truncated", "accuracy", "N"} and record["width"] > 0
    slices = replication.basin_slices(
        setup.problem, points=7, filter_span=1.0, eigen_span=1.0, max_rise=0.0
    )
    assert (
        slices["filter"].loss.shape == (7, 7) and slices["eig"].values[0] >= slices["eig"].values[1]
    )
    assert slices["L0_filter"] == pytest.approx(slices["L0_hessian"]) and slices["dip"] <= 0
    assert slices["above"] == 2  # every slice rises above 0 somewhere
    with pytest.raises(ValueError, match="points=8 must be odd"):
        replication.basin_slices(setup.problem, points=8, filter_span=1.0, eigen_span=1.0)


def test_figures_draw_one_row_per_variant_and_per_change():
    import matplotlib

    matplotlib.use("Agg")
    from landscape import plots

    reps = _replicates({"A": [1.0, 2.0, 3.0], "B": [1.5, 2.4, 3.6], "C": [0.5, 1.4, 2.5]})
    fig, (ax1, ax2, ax3) = plots.subplots(1, 3)
    replication.draw_values(ax1, reps, "m", ylabel="m", reference=2.0, reference_label="two")
    assert [t.get_text() for t in ax1.get_xticklabels()] == [
        "CNN 2×16",
        "CNN 2×16\n+BN",
        "CNN 4×16",
    ]
    assert [t.get_text() for t in ax1.get_legend().get_texts()] == [
        "seed 0",
        "seed 1",
        "seed 2",
        "two",
    ]
    replication.draw_differences(ax2, reps.comparisons("m"), xlabel="Δ")
    assert len(ax2.get_yticklabels()) == 2
    replication.draw_differences(ax3, reps.comparisons("m", log=True))
    assert ax3.get_xscale() == "log"

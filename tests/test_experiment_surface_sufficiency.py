"""experiment.prepare, surface grids and k*(ε) against direct computation."""

import math

import numpy as np
import pytest
import torch

from landscape import directions, experiment, models, sufficiency, surface, train
from landscape.delta import Curve

# -- experiment --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return experiment.prepare(
        "digits",
        "mlp",
        {"depth": 1, "width": 8},
        epochs=2,
        k_max=60,
        cache_dir=tmp_path_factory.mktemp("cache"),
        device="cpu",
        dtype="float64",
        progress=False,
    )


def test_prepare_orders_trains_and_wraps(setup):
    X, y = setup.dataset.train
    assert setup.problem.num_samples == 60
    torch.testing.assert_close(setup.problem.X, X[:60].double())
    assert len(setup.order) == 1347 and len(set(setup.order.tolist())) == 1347
    again, order = experiment.ordered(experiment.data.load("digits"), 0)
    assert torch.equal(order, setup.order)
    assert setup.problem.dtype == torch.float64
    assert not setup.net.training and 0 <= setup.test_accuracy <= 1
    assert setup.config["k_max"] == 60 and setup.config["n_train"] == 1347
    assert len(setup.history.train_loss) == 2 and not hasattr(setup.net, "history")
    assert setup.test_accuracy == setup.history.test_accuracy[-1]
    text = repr(setup)
    assert "\n" not in text and len(text) < 160
    assert "digits" in text and "K = 60 of 1,347" in text and f"{setup.test_accuracy:.3f}" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "imagenet"}, "dataset|name"),
        ({"model": "transformer"}, "model='transformer'"),
        ({"k_max": 5000}, "k_max=5000 is larger than the 1347"),
        ({"n_train": 1}, "n_train"),
        ({"dtype": "float16"}, "dtype"),
        ({"model_cfg": {"widht": 3}}, "widht"),
        ({"model_cfg": [1, 2]}, "model_cfg"),
    ],
)
def test_prepare_bad_parameters_name_themselves(kwargs, message, tmp_path):
    args = {"epochs": 0, "cache_dir": None, "device": "cpu", "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        experiment.prepare(**args)


# -- surface -----------------------------------------------------------------------------------------


def test_surface_grid_equals_pointwise_prefix_losses(setup):
    prob = setup.problem
    sub = directions.random(prob, 2, kind="filter", seed=0)
    grid = surface.scan(prob, sub, span=0.5, points=5, ks=[2, 10, 60], progress=False)
    assert grid.loss.shape == (5, 5) and grid.difference.shape == (3, 5, 5)
    a, b = grid.coords[0][1], grid.coords[1][3]
    losses = prob.per_sample_losses(prob.center + a * sub.basis[:, 0] + b * sub.basis[:, 1])
    for index, k in enumerate([2, 10, 60]):
        L_k, L_prev = losses[:k].mean(), losses[: k - 1].mean()
        assert grid.prefix_loss[index, 1, 3] == pytest.approx(float(L_k), rel=1e-10)
        assert grid.difference[index, 1, 3] == pytest.approx(float(L_k - L_prev), rel=1e-8)
    assert grid.loss[1, 3] == pytest.approx(float(losses.mean()), rel=1e-10)
    # the centre of the grid is w*: there the surface is L_K(w*)
    assert grid.coords[0][2] == grid.coords[1][2] == 0
    L_K = float(prob.per_sample_losses(prob.center).mean())
    assert grid.loss[2, 2] == pytest.approx(L_K, rel=1e-12)
    sigma = 0.3
    density = math.exp(-(a**2 + b**2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    assert grid.integrand(sigma)[1, 1, 3] == pytest.approx(
        grid.difference[1, 1, 3] ** 2 * density, rel=1e-12
    )
    # the density integrates to one over a wide enough grid
    wide = surface.scan(prob, sub, span=2.0, points=81, progress=False)
    step = wide.coords[0][1] - wide.coords[0][0]
    assert wide.density(0.3).sum() * step**2 == pytest.approx(1.0, rel=1e-3)


def test_surface_bad_inputs(setup):
    prob = setup.problem
    with pytest.raises(ValueError, match="d=1 or d=2"):
        surface.scan(prob, directions.random(prob, 3), progress=False)
    with pytest.raises(ValueError, match="ks"):
        surface.scan(prob, directions.random(prob, 1), ks=[1], progress=False)
    with pytest.raises(ValueError, match="points"):
        surface.scan(prob, directions.random(prob, 1), points=1, progress=False)


# -- sufficiency -------------------------------------------------------------------------------------


def _curve(k, value, stderr, samples=None):
    return Curve(
        k=k,
        value=value,
        stderr=stderr,
        sigma=0.1,
        draws=100,
        dim=2,
        nonfinite=np.zeros(len(k), int),
        samples=samples,
    )


def test_k_star_measured_uses_the_upper_confidence_bound():
    k = np.arange(2, 1001)
    value = 1.0 / k**2
    curve = _curve(k, value, 0.1 * value)
    result = sufficiency.k_star(curve, 1e-4)
    z = 1.959963984540054
    expected_upper = k[np.flatnonzero(value * (1 + 0.1 * z) >= 1e-4)[-1] + 1]
    assert not result.extrapolated
    assert result.k_star == expected_upper
    assert result.estimate == 101  # 1/k² = 1e-4 at k = 100 is not below ε; from 101 on it is
    assert result.interval[0] <= result.estimate <= result.interval[1] == result.k_star
    assert "measured" in result.describe()


def test_k_star_needs_the_bound_to_stay_below():
    k = np.arange(2, 12)
    value = np.array([5, 1, 0.5, 2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])  # dips then rises again
    result = sufficiency.k_star(_curve(k, value, np.zeros(10)), 1.0)
    assert result.k_star == 6


def test_k_star_extrapolates_and_says_so():
    k = np.arange(2, 501)
    rng = np.random.default_rng(0)
    samples = 2.0 * k**-2.0 * rng.exponential(size=(400, len(k)))
    curve = _curve(k, samples.mean(0), samples.std(0, ddof=1) / 20, samples)
    result = sufficiency.k_star(curve, 2e-8)
    assert result.extrapolated
    assert result.estimate == pytest.approx(1e4, rel=0.1)  # 2 k^-2 = 2e-8 at k = 10^4
    assert result.interval[0] < 1e4 < result.interval[1]
    assert "extrapolated" in result.describe()
    # results print as one-line summaries, not their arrays
    for obj, head in [
        (curve, "Curve(Δ_k for k = 2..500"),
        (result.fit, "RateFit(α = "),
        (result, "Sufficiency(absolute, ε = 2e-08"),
    ]:
        assert repr(obj).startswith(head) and "\n" not in repr(obj) and len(repr(obj)) < 160


def test_relative_criterion_divides_by_the_squared_prefix_loss(setup):
    prob = setup.problem
    k = np.arange(2, prob.num_samples + 1)
    curve = _curve(k, np.ones(len(k)), np.ones(len(k)))
    rel = sufficiency.relative(curve, prob)
    losses = prob.per_sample_losses(prob.center)
    assert rel.value[8] == pytest.approx(1 / float(losses[:10].mean()) ** 2, rel=1e-10)


def test_k_star_bad_inputs():
    curve = _curve(np.arange(2, 5), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="epsilon"):
        sufficiency.k_star(curve, 0)
    with pytest.raises(ValueError, match="level"):
        sufficiency.k_star(curve, 1.0, level=2)


def test_learning_curve_trains_on_prefixes_and_rises_with_k(tmp_path):
    setup = experiment.prepare(
        "digits",
        "mlp",
        {"depth": 1, "width": 16},
        epochs=0,
        lr=1e-2,
        k_max=60,
        cache_dir=None,
        device="cpu",
        progress=False,
    )
    lc = experiment.learning_curve(setup, [10, 400], seeds=(0, 1), min_steps=60, cache_dir=tmp_path)
    accuracy = lc.per_seed_accuracy
    assert accuracy.shape == (2, 2) and np.all((accuracy >= 0) & (accuracy <= 1))
    np.testing.assert_allclose(lc.accuracy, accuracy.mean(0))
    np.testing.assert_allclose(lc.accuracy_stderr, accuracy.std(0, ddof=1) / np.sqrt(2))
    assert np.all(np.isfinite(lc.loss) & (lc.loss > 0))
    # forty times the data: clearly better, beyond the spread over seeds
    assert lc.accuracy[1] - lc.accuracy[0] > 2 * np.hypot(*lc.accuracy_stderr)
    assert lc.loss[1] < lc.loss[0]
    # each point is the setup's architecture trained on the prefix D_k (here k = 10, seed 1:
    # one step per epoch, so 60 epochs for min_steps=60), found again in the cache
    net = models.build("mlp", setup.dataset.input_shape, 10, seed=1, depth=1, width=16)
    again = train.fit_with_history(
        net,
        setup.dataset,
        60,
        lr=1e-2,
        seed=1,
        n_train=10,
        cache_dir=tmp_path,
        device="cpu",
        progress=False,
    )
    assert again.history.from_cache and again.history.test_accuracy[-1] == accuracy[1, 0]
    assert repr(lc).startswith("LearningCurve(test accuracy at k = {10: ") and "\n" not in repr(lc)
    with pytest.raises(ValueError, match="ks"):
        experiment.learning_curve(setup, [5000])


def test_basin_width_of_a_quadratic_bowl():
    axis = np.linspace(-2, 2, 401)
    X, Y = np.meshgrid(axis, axis, indexing="ij")
    a, b, rise = 4.0, 1.0, 0.5
    loss = 0.5 * (a * X**2 + b * Y**2)
    bowl = surface.Surface(
        coords=(axis, axis),
        k=np.array([], dtype=int),
        loss=loss,
        prefix_loss=np.zeros((0, 401, 401)),
        difference=np.zeros((0, 401, 401)),
        kind="custom",
    )
    width = bowl.basin_width(rise)
    assert not width.truncated
    assert width.radius == pytest.approx((2 * rise) ** 0.5 / (a * b) ** 0.25, rel=0.01)
    assert bowl.basin_width(100.0).truncated  # the region reaches the edge of the grid


def _power_curve(k, alpha, seed=0, draws=400, scale=2.0):
    rng = np.random.default_rng(seed)
    samples = scale * k**-alpha * rng.exponential(size=(draws, len(k)))
    return _curve(k, samples.mean(0), samples.std(0, ddof=1) / np.sqrt(draws), samples)


def test_k_star_crossing_in_the_last_tenth_of_the_data_is_not_measured():
    # 2 k^-2 crosses 2e-5 at k = 316: inside the data (K = 330) but past 90 % of it
    k = np.arange(2, 331)
    result = sufficiency.k_star(_power_curve(k, 2.0), 2e-5)
    assert result.kind != "measured"
    if result.kind == "extrapolated":
        assert result.k_star > 0.9 * 330
    else:
        assert np.isnan(result.k_star) and result.at_least == pytest.approx(2 + 0.9 * 328)


def test_k_star_kinds_inside_beyond_and_never():
    k = np.arange(2, 1001)
    inside = sufficiency.k_star(_power_curve(k, 2.0), 1e-4)           # crosses near k = 141
    assert inside.kind == "measured" and 100 < inside.k_star < 300
    assert inside.record()["kind"] == "measured" and inside.record()["k"] == inside.k_star
    beyond = sufficiency.k_star(_power_curve(k, 2.0), 2e-8)           # crosses at k = 10^4
    assert beyond.kind == "extrapolated" and beyond.k_star > 1000
    flat = sufficiency.k_star(_power_curve(k, 0.0, scale=1.0), 1e-3)  # never decreases
    assert flat.kind == "censored" and np.isnan(flat.k_star) and np.isnan(flat.interval).all()
    assert "may not decrease" in flat.reason and "not before k = 900" in flat.describe()
    assert flat.record()["kind"] == "censored" and "censored" in repr(flat)


def test_a_fit_crossing_inside_data_that_never_settled_is_censored():
    # the mean falls like 2 k^-2 and crosses 1e-4 at k = 141, but it is so uncertain (stderr 30x
    # the value) that its upper bound never settles: the data cannot place k*
    k = np.arange(2, 1001)
    value = 2.0 * k**-2.0
    result = sufficiency.k_star(_curve(k, value, 30 * value), 1e-4)
    assert result.kind == "censored", result
    assert "inside the data" in result.reason


def test_late_spikes_that_the_mean_decay_ignores_censor_an_extrapolation():
    # a clean k^-2 decay with hard samples arriving late: spikes 30x above the trend at a few k in
    # the last tenth. The fit of the mean still crosses beyond K, but "stays below" is not in sight.
    k = np.arange(2, 1001)
    value = 2.0 * k**-2.0
    value[[930, 960, 990]] *= 30
    clean = sufficiency.k_star(_curve(k, 2.0 * k**-2.0, 0.01 * 2.0 * k**-2.0), 1.5e-6)
    spiky = sufficiency.k_star(_curve(k, value, 0.01 * value), 1.5e-6)
    assert clean.kind == "extrapolated" and clean.k_star > 1000
    assert spiky.kind == "censored" and "does not follow the power law" in spiky.reason

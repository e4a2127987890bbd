"""The original code's bugs, reproduced: first direction only, a reshuffled order per draw."""

import numpy as np
import pytest
import torch

from landscape import delta, directions, original, prefix, surface
from landscape.directions import Subspace
from landscape.seeding import generator


def _brute_force(prob, steps, orders=None):
    """Mean over draws of d_k² from scratch: each draw's losses (in its order), its prefix means."""
    curves = []
    for i, step in enumerate(steps):
        losses = prob.per_sample_losses(prob.center + step)
        if orders is not None:
            losses = losses[orders[i]]
        means = torch.stack([losses[:k].mean() for k in range(1, len(losses) + 1)])
        curves.append((means[1:] - means[:-1]).square())
    return torch.stack(curves).numpy()


def _coefficients(dim, draws, sigma, seed):
    """The z of each draw, drawn as delta.monte_carlo draws them (one randn(d) per draw)."""
    draw = generator(seed)
    return sigma * torch.stack(
        [torch.randn(dim, generator=draw, dtype=torch.float64) for _ in range(draws)]
    )


def test_with_both_bugs_off_it_is_delta_monte_carlo(tiny_problem):
    sub = directions.random(tiny_problem, 3, seed=1)
    ours = delta.monte_carlo(tiny_problem, 0.3, 12, subspace=sub, seed=5, progress=False)
    theirs = original.monte_carlo(
        tiny_problem, 0.3, 12, sub, seed=5, first_direction_only=False, reshuffle=False
    )
    np.testing.assert_allclose(theirs.value, ours.value, rtol=1e-10)
    np.testing.assert_allclose(theirs.stderr, ours.stderr, rtol=1e-8)
    assert theirs.dim == 3


def test_first_direction_only_is_the_d1_curve_of_the_first_direction(tiny_problem):
    sub = directions.random(tiny_problem, 3, seed=1)
    z = _coefficients(3, 10, 0.4, seed=2)
    curve = original.monte_carlo(tiny_problem, 0.4, 10, sub, seed=2, reshuffle=False)
    first = sub.basis[:, 0]
    # exactly: the first coefficient of each draw times the first direction, nothing else
    brute = _brute_force(tiny_problem, z[:, :1] * first)
    np.testing.assert_allclose(curve.value, brute.mean(0), rtol=1e-10)
    assert curve.dim == 1
    # the other directions do not matter at all: replace them and the curve is the same
    other = directions.random(tiny_problem, 3, seed=9).basis
    swapped = Subspace(torch.stack([first, other[:, 1], other[:, 2]], dim=1))
    same = original.monte_carlo(tiny_problem, 0.4, 10, swapped, seed=2, reshuffle=False)
    np.testing.assert_array_equal(same.value, curve.value)
    # ... whereas perturbing along all three gives another curve
    correct = delta.monte_carlo(tiny_problem, 0.4, 10, subspace=sub, seed=2, progress=False)
    assert np.abs(correct.value - curve.value).max() > 1e-3 * correct.value.max()


def test_first_direction_only_matches_the_d1_curve_in_distribution(tiny_problem):
    sub = directions.random(tiny_problem, 4, seed=3)
    buggy = original.monte_carlo(tiny_problem, 0.5, 4000, sub, seed=0, reshuffle=False)
    d1 = delta.monte_carlo(
        tiny_problem, 0.5, 4000, subspace=Subspace(sub.basis[:, :1]), seed=1, progress=False
    )
    z = (buggy.value - d1.value) / np.hypot(buggy.stderr, d1.stderr)
    assert np.abs(z).max() < 4  # two independent estimates of the same d = 1 curve


def test_reshuffle_gives_every_draw_its_own_prefixes(tiny_problem):
    K = tiny_problem.num_samples
    orders = original.reshuffled_orders(K, 6, seed=4)
    assert all(sorted(row.tolist()) == list(range(K)) for row in orders)  # permutations
    assert len({tuple(row.tolist()) for row in orders}) == 6  # one order per draw, all different
    assert not any(row.equal(torch.arange(K)) for row in orders)
    z = _coefficients(tiny_problem.num_params, 6, 0.2, seed=3)
    curve = original.monte_carlo(
        tiny_problem, 0.2, 6, None, seed=3, first_direction_only=False, order_seed=4
    )
    np.testing.assert_allclose(
        curve.value, _brute_force(tiny_problem, z, orders).mean(0), rtol=1e-10
    )
    np.testing.assert_allclose(curve.samples, _brute_force(tiny_problem, z, orders), rtol=1e-10)
    fixed = delta.monte_carlo(tiny_problem, 0.2, 6, seed=3, progress=False)
    assert np.abs(fixed.value - curve.value).max() > 1e-3 * fixed.value.max()


def test_reshuffled_tiny_sigma_averages_the_squared_gap_over_orders(tiny_problem):
    """As σ → 0 each draw gives a_k² of its own order: the curve is their mean over the orders."""
    orders = original.reshuffled_orders(tiny_problem.num_samples, 50, seed=0)
    losses = tiny_problem.per_sample_losses(tiny_problem.center)
    gaps = prefix.differences(losses[orders]).square().numpy()
    sub = directions.random(tiny_problem, 2, seed=0)
    curve = original.monte_carlo(tiny_problem, 1e-7, 50, sub, seed=0, order_seed=0)
    np.testing.assert_allclose(curve.value, gaps.mean(0), rtol=1e-5)


def test_the_reshuffled_grid_keeps_the_losses_and_changes_the_prefixes(tiny_problem):
    plane = directions.random(tiny_problem, 2, kind="filter", seed=0)
    fixed = surface.scan(tiny_problem, plane, span=0.5, points=5, ks=[2, 6], progress=False)
    shuffled = original.scan(tiny_problem, plane, span=0.5, points=5, ks=[2, 6], seed=1)
    np.testing.assert_allclose(shuffled.loss, fixed.loss, rtol=1e-10)  # L_K: all samples
    assert not np.allclose(shuffled.difference, fixed.difference)
    # point i of the grid: its own order, rows of reshuffled_orders in the grid's ravel order
    orders = original.reshuffled_orders(tiny_problem.num_samples, 25, seed=1)
    t = torch.tensor(fixed.coords[0][1]), torch.tensor(fixed.coords[1][3])
    w = tiny_problem.center + plane.basis @ torch.stack(t)
    means = prefix.means(tiny_problem.per_sample_losses(w)[orders[1 * 5 + 3]])
    np.testing.assert_allclose(
        shuffled.difference[:, 1, 3], (means[[1, 5]] - means[[0, 4]]).numpy(), rtol=1e-8
    )


def test_bad_arguments_are_refused(tiny_problem):
    with pytest.raises(
        ValueError, match="first_direction_only=True reproduces a bug of the subspace"
    ):
        original.monte_carlo(tiny_problem, 0.1, 4)
    with pytest.raises(ValueError, match="reshuffle"):
        original.monte_carlo(tiny_problem, 0.1, 4, first_direction_only=False, reshuffle="yes")
    with pytest.raises(ValueError, match="d=1 or d=2"):
        original.scan(tiny_problem, directions.random(tiny_problem, 3, seed=0))

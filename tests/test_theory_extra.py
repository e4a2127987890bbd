"""Additions to theory: paper 002's pointwise bound beyond w*, its worst case over every order."""

import itertools

import numpy as np
import pytest

from landscape import theory


def _brute_force_ratio(losses, max_loss, max_hessian_norm, radius):
    """max over every order and every k = 2..K of |L_k − L_{k−1}| / pointwise_bound."""
    losses = np.asarray(losses, dtype=float)
    K = len(losses)
    k = np.arange(2, K + 1)
    bound = theory.pointwise_bound(max_loss, max_hessian_norm, radius, k)
    worst = 0.0
    for order in itertools.permutations(range(K)):
        prefix = np.cumsum(losses[list(order)]) / np.arange(1, K + 1)
        worst = max(worst, float((np.abs(np.diff(prefix)) / bound).max()))
    return worst


@pytest.mark.parametrize("seed", range(5))
def test_worst_case_over_orders_matches_every_permutation(seed):
    rng = np.random.default_rng(seed)
    losses = rng.exponential(1.0, size=6)
    max_loss, max_hessian_norm, radius = 3.0, 2.5, 0.4
    expected = _brute_force_ratio(losses, max_loss, max_hessian_norm, radius)
    got = theory.pointwise_bound_ratio(losses, max_loss, max_hessian_norm, radius)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_one_ratio_per_point_and_the_radius_enters_as_M_H_R_squared():
    losses = np.array([[0.0, 1.0, 4.0], [1.0, 1.0, 1.0], [0.5, 3.0, 2.0]])
    got = theory.pointwise_bound_ratio(losses, max_loss=2.0, max_hessian_norm=3.0, radius=0.5)
    np.testing.assert_allclose(got, np.array([4.0, 0.0, 2.5]) / (2 * (2.0 + 3.0 * 0.25)))
    assert got.shape == (3,)


def test_at_w_star_nonnegative_losses_use_at_most_half_of_the_bound():
    # at R = 0 with M_ℓ = max l_i and losses ≥ 0 the range is at most M_ℓ: the bound has slack 2
    losses = np.random.default_rng(0).exponential(size=(4, 50))
    ratio = theory.pointwise_bound_ratio(losses, losses.max(), 7.0, 0.0)
    assert np.all(ratio <= 0.5)


@pytest.mark.parametrize(
    ("losses", "kwargs", "message"),
    [
        ([1.0], {}, "K >= 2"),
        ([1.0, np.nan], {}, "non-finite"),
        ([1.0, 2.0], {"max_loss": 0.0, "max_hessian_norm": 0.0}, "must be positive"),
        ([1.0, 2.0], {"radius": -1.0}, "radius"),
    ],
)
def test_bad_input_is_refused_with_a_message(losses, kwargs, message):
    arguments = {"max_loss": 1.0, "max_hessian_norm": 1.0, "radius": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        theory.pointwise_bound_ratio(losses, **arguments)

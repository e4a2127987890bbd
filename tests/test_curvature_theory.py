"""Difference terms, closed forms and bounds against brute force (float64, tiny networks)."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature, delta, directions, theory
from landscape.directions import Subspace
from landscape.problem import Problem

TERMS = ("gap", "grad_sq", "trace", "trace_sq")


def _brute_force_terms(prob, P):
    """a_k, ‖c_k‖², Tr M_k, Tr M_k² from torch.func.hessian of the prefix losses themselves."""

    def L(w, k):
        return prob.sample_losses(w, prob.X[:k], prob.y[:k]).mean()

    out = {name: [] for name in TERMS}
    out["M"] = []
    w = prob.center
    for k in range(2, prob.num_samples + 1):

        def d(u, k=k):
            return L(u, k) - L(u, k - 1)

        c = P.T @ torch.func.grad(d)(w)
        M = P.T @ torch.func.hessian(d)(w) @ P
        out["gap"].append(float(d(w)))
        out["grad_sq"].append(float(c @ c))
        out["trace"].append(float(torch.trace(M)))
        out["trace_sq"].append(float(torch.trace(M @ M)))
        out["M"].append(M)
    return {name: np.array(v) if name != "M" else v for name, v in out.items()}


def _basis(prob, kind):
    if kind == "full":
        return None, torch.eye(prob.num_params, dtype=torch.float64)
    sub = directions.random(prob, 3, kind=kind, seed=1)
    return sub, sub.basis


@pytest.mark.parametrize("kind", ["full", "gaussian", "filter"])
@pytest.mark.parametrize("fixture", ["tiny_problem", "bn_problem"])
@pytest.mark.parametrize("forward_max_dim", [16, 0], ids=["forward-mode", "per-sample-hvps"])
def test_terms_equal_the_definition(kind, fixture, forward_max_dim, request, monkeypatch):
    monkeypatch.setattr(curvature, "FORWARD_MAX_DIM", forward_max_dim)
    prob = request.getfixturevalue(fixture)
    sub, P = _basis(prob, kind)
    terms = curvature.difference_terms(prob, sub, progress=False)
    assert terms.method == ("exact" if sub is None else "subspace")
    brute = _brute_force_terms(prob, P)
    for name in TERMS:
        np.testing.assert_allclose(
            getattr(terms, name), brute[name], rtol=1e-8, atol=1e-14, err_msg=name
        )


def test_terms_are_the_same_in_small_chunks(tiny_problem):
    X, y = tiny_problem.X, tiny_problem.y
    small = Problem(tiny_problem.model, X, y, dtype=torch.float64, device="cpu", max_memory=1500)
    assert curvature._hvp_chunks(small, small.num_params)[0] < small.num_samples
    a = curvature.difference_terms(tiny_problem, progress=False)
    b = curvature.difference_terms(small, progress=False)
    for name in TERMS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10)


def test_non_orthonormal_subspace_with_a_zero_column(tiny_problem):
    v = directions.random(tiny_problem, 2, kind="filter", seed=3).basis
    basis = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
    terms = curvature.difference_terms(tiny_problem, Subspace(basis), progress=False)
    brute = _brute_force_terms(tiny_problem, basis)
    for name in TERMS:
        np.testing.assert_allclose(getattr(terms, name), brute[name], rtol=1e-8, atol=1e-14)


def test_hutchinson_is_unbiased_within_its_standard_error(tiny_problem):
    exact = curvature.difference_terms(tiny_problem, method="exact", progress=False)
    z_scores = []
    for seed in range(4):
        est = curvature.difference_terms(
            tiny_problem, method="hutchinson", probes=200, seed=seed, progress=False
        )
        np.testing.assert_allclose(est.trace, exact.trace, rtol=1e-10)  # exact from BackPACK
        np.testing.assert_allclose(est.gap, exact.gap, rtol=1e-10)
        np.testing.assert_allclose(est.grad_sq, exact.grad_sq, rtol=1e-10)
        z_scores.append((est.trace_sq - exact.trace_sq) / est.trace_sq_stderr)
    z = np.array(z_scores)
    assert np.abs(z).max() < 4.5
    # the mean of 4 independent seeds' z-scores has standard deviation 1/2 at each k
    assert np.abs(z.mean(0)).max() < 2.25
    assert np.all(est.trace_sq_stderr > 0)


def test_backpack_per_sample_quantities_equal_torch_func(tiny_problem):
    grads, backend = curvature.per_sample_gradients(tiny_problem)
    assert backend == "backpack"
    reference, _ = curvature.per_sample_gradients(tiny_problem, backend="torch.func")
    torch.testing.assert_close(grads, reference)
    traces, backend = curvature.per_sample_hessian_traces(tiny_problem)
    assert backend == "backpack"
    reference, _ = curvature.per_sample_hessian_traces(tiny_problem, backend="torch.func")
    torch.testing.assert_close(traces, reference)
    hessians = [_per_sample_hessian(tiny_problem, i) for i in range(tiny_problem.num_samples)]
    torch.testing.assert_close(traces, torch.stack([torch.trace(H) for H in hessians]))


def test_backpack_falls_back_and_says_so_for_batch_norm(bn_problem):
    with pytest.warns(UserWarning, match="torch.func"):
        traces, backend = curvature.per_sample_hessian_traces(bn_problem)
    assert backend == "torch.func"
    with pytest.raises(ValueError, match="BackPACK"):
        curvature.per_sample_hessian_traces(bn_problem, backend="backpack")
    est = curvature.difference_terms(bn_problem, method="hutchinson", probes=8, progress=False)
    assert any("estimated from the probes" in note for note in est.notes)
    assert np.all(est.trace_stderr > 0)


def test_complete_form_matches_monte_carlo_at_small_sigma(tiny_problem):
    terms = curvature.difference_terms(tiny_problem, progress=False)
    sigma = 0.02
    curve = delta.monte_carlo(tiny_problem, sigma, 4000, seed=0, progress=False)
    predicted = terms.predict(sigma)
    z = (curve.value - predicted) / curve.stderr
    assert np.abs(z).max() < 4.5, z
    paper = terms.predict(sigma, form="paper")
    assert np.median(predicted / paper) > 100  # the dropped a_k² term dominates at small σ


@pytest.mark.parametrize("sigma", [0.3, 3.0])
def test_complete_form_is_exact_for_a_quadratic_loss(linear_regression, sigma):
    terms = curvature.difference_terms(linear_regression, progress=False)
    curve = delta.monte_carlo(linear_regression, sigma, 20000, seed=1, progress=False)
    z = (curve.value - terms.predict(sigma)) / curve.stderr
    assert np.abs(z).max() < 4.5, z
    # and the Monte Carlo integrand is exactly the quadratic model
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        zvec = sigma * torch.randn(linear_regression.num_params, generator=rng, dtype=torch.float64)
        d = delta.prefix_differences(
            linear_regression.per_sample_losses(linear_regression.center + zvec)
        )
        brute = _brute_force_terms(
            linear_regression, torch.eye(linear_regression.num_params, dtype=torch.float64)
        )
        grads, _ = curvature.per_sample_gradients(linear_regression, "torch.func")
        k = torch.arange(2, 9, dtype=torch.float64)
        prev = grads.cumsum(0)[:-1] / (k - 1)[:, None]
        c = (grads[1:] - prev) / k[:, None]
        model = (
            torch.as_tensor(brute["gap"])
            + c @ zvec
            + 0.5 * torch.stack([zvec @ M @ zvec for M in brute["M"]])
        )
        torch.testing.assert_close(d, model)


def test_predict_and_terms_bad_inputs(tiny_problem):
    terms = curvature.difference_terms(tiny_problem, progress=False)
    with pytest.raises(ValueError, match="form"):
        terms.predict(0.1, form="full")
    with pytest.raises(ValueError, match="sigma"):
        terms.predict(-1.0)
    with pytest.raises(ValueError, match="method"):
        curvature.difference_terms(tiny_problem, method="lanczos")
    with pytest.raises(ValueError, match="subspace"):
        curvature.difference_terms(tiny_problem, method="subspace")
    sub = directions.random(tiny_problem, 2)
    with pytest.raises(ValueError, match="hutchinson"):
        curvature.difference_terms(tiny_problem, sub, method="hutchinson")


# -- bounds ----------------------------------------------------------------------------------------


def _per_sample_hessian(prob, i):
    def loss(w):
        return prob.sample_losses(w, prob.X[i : i + 1], prob.y[i : i + 1])[0]

    return torch.func.hessian(loss)(prob.center)


def _per_sample_norms(prob, P):
    return np.array(
        [
            float(torch.linalg.eigvalsh(P.T @ _per_sample_hessian(prob, i) @ P).abs().max())
            for i in range(prob.num_samples)
        ]
    )


@pytest.mark.parametrize("kind", ["full", "filter"])
def test_lemma1_and_hessian_difference_bound_hold(tiny_problem, kind):
    sub, P = _basis(tiny_problem, kind)
    terms = curvature.difference_terms(tiny_problem, sub, progress=False)
    brute = _brute_force_terms(tiny_problem, P)
    spectral = np.array([float(torch.linalg.matrix_norm(M, ord=2)) for M in brute["M"]])
    assert np.all(
        terms.trace**2 + 2 * terms.trace_sq
        <= theory.lemma1_bound(spectral, terms.dim) * (1 + 1e-12)
    )
    M_H = _per_sample_norms(tiny_problem, P).max()
    np.testing.assert_allclose(terms.max_hessian_norm, M_H, rtol=1e-10)
    assert np.all(spectral**2 <= theory.hessian_difference_bound(M_H, terms.k) * (1 + 1e-12))


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0])
def test_complete_bound_holds_and_theorem1_fails_at_small_sigma(tiny_problem, sigma):
    sub, _ = _basis(tiny_problem, "gaussian")
    terms = curvature.difference_terms(tiny_problem, sub, progress=False)
    bound = theory.complete_bound(
        sigma, terms.dim, terms.max_loss, terms.max_grad_norm, terms.max_hessian_norm, terms.k
    )
    assert np.all(terms.predict(sigma) <= bound)
    theorem1 = theory.theorem1_bound(sigma, terms.dim, terms.max_hessian_norm, terms.k)
    assert np.all(terms.predict(sigma, "paper") <= theorem1)  # it does bound the paper form
    if sigma == 1e-3:  # ... but not Δ_k, which tends to a_k² as σ → 0
        curve = delta.monte_carlo(tiny_problem, sigma, 16, subspace=sub, progress=False)
        assert np.all(curve.value > 100 * theorem1)


def test_paper_constant_is_half_the_correct_one():
    k = np.array([2.0, 10.0])
    np.testing.assert_allclose(
        theory.hessian_difference_bound(1.5, k, "paper") * 2,
        theory.hessian_difference_bound(1.5, k),
    )
    np.testing.assert_allclose(theory.theorem1_bound(0.1, 4, 2.0, k), 0.1**4 * 4 * 6 * 4.0 / k**2)


def test_relu_mlp_hessian_bound_holds():
    torch.manual_seed(0)
    net = (
        nn.Sequential(
            nn.Linear(4, 6, bias=False),
            nn.ReLU(),
            nn.Linear(6, 6, bias=False),
            nn.ReLU(),
            nn.Linear(6, 3, bias=False),
        )
        .double()
        .eval()
    )
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=generator)
    prob = Problem(net, X, y, dtype=torch.float64, device="cpu")
    depth, m_x, m_w = theory.relu_mlp_norms(prob)
    assert depth == 2
    assert m_x == pytest.approx(float(X.norm(dim=1).max()))
    measured = _per_sample_norms(prob, torch.eye(prob.num_params, dtype=torch.float64)).max()
    assert measured <= theory.relu_mlp_hessian_bound(depth, m_x, m_w)


def test_relu_mlp_norms_refuse_other_networks(tiny_problem):
    with pytest.raises(ValueError, match="bias-free ReLU"):
        theory.relu_mlp_norms(tiny_problem)


# -- rate fits -------------------------------------------------------------------------------------


def test_fit_rate_recovers_a_power_law_with_an_interval():
    k = np.arange(2, 400)
    rng = np.random.default_rng(0)
    samples = 3.0 * k**-2.0 * rng.exponential(size=(200, len(k)))  # mean 3 k^-2
    fit = theory.fit_rate(k, samples.mean(0), k_min=10, samples=samples)
    slope, intercept, ci = fit
    assert ci[0] < -2.0 < ci[1] and ci[1] - ci[0] < 0.1
    assert fit.alpha == pytest.approx(2.0, abs=0.05)
    assert fit.constant == pytest.approx(3.0, rel=0.15)
    exact = theory.fit_rate(k, 3.0 * k**-2.0, k_min=10, n_boot=0)
    assert exact.slope == pytest.approx(-2.0) and exact.constant == pytest.approx(3.0)
    np.testing.assert_allclose(exact.predict([1000.0]), 3e-6)


def test_fit_rate_bad_inputs():
    k = np.arange(2, 10)
    with pytest.raises(ValueError, match="at least 3"):
        theory.fit_rate(k, np.zeros(8), k_min=2)
    with pytest.raises(ValueError, match="k_min"):
        theory.fit_rate(k, 1.0 / k, k_min=0)
    with pytest.raises(ValueError, match="equal length"):
        theory.fit_rate(k, 1.0 / k[:-1])

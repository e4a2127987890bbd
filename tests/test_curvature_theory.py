"""Difference terms, closed forms and bounds against brute force (float64, tiny networks)."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature, delta, directions, prefix, routes, theory
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
@pytest.mark.parametrize("route", ["chain", "forward", "hvp"])
def test_terms_equal_the_definition(kind, fixture, route, request):
    # each subspace route in turn (the full space always takes per-sample HVPs)
    prob = request.getfixturevalue(fixture)
    sub, P = _basis(prob, kind)
    asked = {} if sub is None else {"route": route}
    terms = curvature.difference_terms(prob, sub, progress=False, **asked)
    assert terms.method == ("exact" if sub is None else "subspace")
    if sub is not None:
        assert any(f"'{route}' route" in note for note in terms.notes), terms.notes
    brute = _brute_force_terms(prob, P)
    for name in TERMS:
        np.testing.assert_allclose(
            getattr(terms, name), brute[name], rtol=1e-8, atol=1e-14, err_msg=name
        )


def test_terms_are_the_same_in_small_chunks(tiny_problem):
    X, y = tiny_problem.X, tiny_problem.y
    small = Problem(tiny_problem.model, X, y, dtype=torch.float64, device="cpu", max_memory=1500)
    per_sample, _ = routes.hvp_bytes(small, small.num_params, block=small.num_params**2)
    assert small.batch_size(per_sample) < small.num_samples
    a = curvature.difference_terms(tiny_problem, progress=False)
    b = curvature.difference_terms(small, progress=False)
    for name in TERMS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10)


def test_non_orthonormal_subspace_with_a_sparse_column(tiny_problem):
    # (a zero column is refused by Subspace now; a column along one parameter only is the
    # nearest thing: most layers see nothing of it)
    v = directions.random(tiny_problem, 2, kind="filter", seed=3).basis
    sparse = torch.zeros_like(v[:, :1])
    sparse[0] = 3.0
    basis = torch.cat([sparse, v + 0.5 * v[:, :1]], dim=1)
    terms = curvature.difference_terms(tiny_problem, Subspace(basis), progress=False)
    brute = _brute_force_terms(tiny_problem, basis)
    for name in TERMS:
        np.testing.assert_allclose(getattr(terms, name), brute[name], rtol=1e-8, atol=1e-14)


def _random_symmetric(n, rank, seed):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, rank, generator=generator, dtype=torch.float64)
    signs = torch.tensor([(-1.0) ** j for j in range(rank)], dtype=torch.float64)
    return (X * signs) @ X.T  # indefinite, rank ``rank``


def _rademacher(n, m, seed):
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randint(0, 2, (n, m), generator=generator, dtype=torch.float64) - 1


@pytest.mark.parametrize("deflated", [0, 3])
def test_probe_pair_frobenius_jackknife_is_leave_one_probe_out(deflated):
    A = _random_symmetric(10, 4, seed=0)
    Q = torch.linalg.qr(_rademacher(10, deflated, seed=5))[0]
    V = _rademacher(10, 7, seed=1)
    Vt = V - Q @ (Q.T @ V)

    def direct(Vt):  # the estimator written out term by term
        m = Vt.shape[1]
        pairs = sum(
            float(Vt[:, p] @ A @ Vt[:, q]) ** 2 for p in range(m) for q in range(m) if p != q
        )
        cross = sum(float((Q.T @ A @ Vt[:, p]).square().sum()) for p in range(m))
        return float((Q.T @ A @ Q).square().sum()) + 2 * cross / m + pairs / (m * (m - 1))

    W = torch.cat([Q, Vt], dim=1)
    est, se = curvature.probe_pair_frobenius(W.T @ A @ W, deflated)
    assert float(est) == pytest.approx(direct(Vt), rel=1e-12)
    left_out = np.array([direct(torch.cat([Vt[:, :p], Vt[:, p + 1 :]], 1)) for p in range(7)])
    jackknife = np.sqrt(6 / 7 * np.sum((left_out - left_out.mean()) ** 2))
    assert float(se) == pytest.approx(jackknife, rel=1e-10)
    with pytest.raises(ValueError, match="3 probes"):
        curvature.probe_pair_frobenius(W[:, : deflated + 2].T @ A @ W[:, : deflated + 2], deflated)


@pytest.mark.parametrize("deflated", [0, 4])
def test_probe_pair_frobenius_is_unbiased_and_its_stderr_covers(deflated):
    """Over 400 independent probe sets: the mean estimate is within 4 standard errors of ‖A‖_F²,
    and ±1.96 reported standard errors cover ‖A‖_F² at close to the nominal 95 % (measured 0.90–0.93
    here: with m = 32 probes and an A of low effective rank the estimates are skewed)."""
    n, m = 30, 32
    A = _random_symmetric(n, 6, seed=2) + 0.3 * _random_symmetric(n, n, seed=3) / n
    truth = float(A.square().sum())
    Q = torch.linalg.qr(A @ _rademacher(n, deflated, seed=4))[0]  # fixed, like a range sketch
    V = torch.stack([_rademacher(n, m, seed) for seed in range(400)])  # 400 probe sets
    W = torch.cat([Q.expand(400, n, deflated), V - Q @ (Q.T @ V)], dim=2)
    estimates, stderrs = curvature.probe_pair_frobenius(W.transpose(1, 2) @ A @ W, deflated)
    estimates, stderrs = estimates.numpy(), stderrs.numpy()
    assert abs(estimates.mean() - truth) < 4 * estimates.std() / 20
    coverage = np.mean(np.abs(estimates - truth) <= 1.96 * stderrs)
    assert 0.87 <= coverage <= 0.99, coverage
    # the jackknife tracks the real spread (not the far smaller Σ-over-pairs naive one)
    assert 0.85 < np.sqrt(np.mean(stderrs**2)) / estimates.std() < 1.2


@pytest.mark.parametrize("deflate", [0, 4])
@pytest.mark.parametrize("fixture", ["tiny_problem", "bn_problem"])
def test_hutchinson_is_unbiased_within_its_standard_error(fixture, deflate, request):
    prob = request.getfixturevalue(fixture)
    brute = _brute_force_terms(prob, torch.eye(prob.num_params, dtype=torch.float64))
    sigmas = (0.1, 1.0)
    exact = {s: theory.complete_form(*(brute[name] for name in TERMS), s) for s in sigmas}
    z_sq, z_trace, z_predict = [], [], []
    for seed in range(24):
        est = curvature.difference_terms(
            prob, method="hutchinson", probes=32, deflate=deflate, seed=seed, progress=False
        )
        assert est.method == "hutchinson" and est.probes == 32
        np.testing.assert_allclose(est.gap, brute["gap"], rtol=1e-10)
        np.testing.assert_allclose(est.grad_sq, brute["grad_sq"], rtol=1e-10)
        assert any("gradients as factors" in note for note in est.notes)  # never formed
        assert np.all(est.trace_sq_stderr > 0)
        z_sq.append((est.trace_sq - brute["trace_sq"]) / est.trace_sq_stderr)
        # the closed form predicted from stochastic terms carries their error (first order)
        z_predict += [(est.predict(s) - exact[s]) / est.predict_stderr(s) for s in sigmas]
        if fixture == "tiny_problem":  # exact from BackPACK
            np.testing.assert_allclose(est.trace, brute["trace"], rtol=1e-10)
            assert np.all(est.trace_stderr == 0)
        else:  # batch-norm: BackPACK cannot, the probes estimate it
            assert any("estimated from the probes" in note for note in est.notes)
            z_trace.append((est.trace - brute["trace"]) / est.trace_stderr)
    for z in (np.array(z_sq), np.array(z_trace), np.array(z_predict)):
        if z.size:
            # 24 independent seeds: the mean z-score has standard deviation ≈ 1/√24 at each k
            assert np.abs(z.mean(0)).max() < 4 / 24**0.5, z.mean(0)
            coverage = np.mean(np.abs(z) <= 1.96)
            assert 0.88 <= coverage <= 0.995, coverage


def test_hutchinson_shares_its_probes_across_k_and_chunks(tiny_problem):
    """Probes are drawn once for every k: a shorter prefix and smaller chunks give the same numbers
    (without deflation, whose sketch depends on L_K)."""
    X, y = tiny_problem.X, tiny_problem.y
    shorter = Problem(tiny_problem.model, X[:7], y[:7], dtype=torch.float64, device="cpu")
    chunked = Problem(tiny_problem.model, X, y, dtype=torch.float64, device="cpu", max_memory=2000)
    assert chunked.batch_size(routes.hvp_bytes(chunked, 1, block=8**2)[0]) < chunked.num_samples

    def run(prob, deflate=0):
        return curvature.difference_terms(
            prob, method="hutchinson", probes=8, deflate=deflate, seed=3, progress=False
        )

    full = run(tiny_problem)
    np.testing.assert_allclose(run(shorter).trace_sq, full.trace_sq[:6], rtol=1e-10)
    np.testing.assert_allclose(run(chunked).trace_sq, full.trace_sq, rtol=1e-10)
    np.testing.assert_allclose(run(chunked, 4).trace_sq, run(tiny_problem, 4).trace_sq, rtol=1e-10)


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
    assert np.all(est.trace_stderr > 0) and np.all(est.trace_sq_stderr > 0)


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
        d = prefix.differences(linear_regression.per_sample_losses(linear_regression.center + zvec))
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
    assert np.all(terms.predict_stderr(0.1) == 0)  # exact terms: no error to propagate
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


def test_hessian_difference_bound_holds_and_the_papers_constant_does_not():
    """‖M_k‖₂² ≤ 4M_H²/k² for any per-sample Hessians with ‖H_i‖₂ ≤ M_H; the paper's 2M_H²/k²
    fails for H_1 = −M_H·I, H_2 = +M_H·I, where M_2 = (H_2 − H_1)/2 = M_H·I."""
    M_H, K = 1.5, 40
    H = np.random.default_rng(0).normal(size=(K, 5, 5))
    H = H + H.transpose(0, 2, 1)
    H *= M_H / np.linalg.norm(H, ord=2, axis=(1, 2))[:, None, None]  # every ‖H_i‖₂ = M_H
    H[0], H[1] = -M_H * np.eye(5), M_H * np.eye(5)
    k = np.arange(2, K + 1)
    previous_mean = np.cumsum(H, 0)[:-1] / (k - 1)[:, None, None]  # H̄_{k−1}
    norm_sq = np.linalg.norm((H[1:] - previous_mean) / k[:, None, None], ord=2, axis=(1, 2)) ** 2
    corrected = theory.hessian_difference_bound(M_H, k)
    assert np.all(norm_sq <= corrected * (1 + 1e-12))
    assert norm_sq[0] == pytest.approx(corrected[0])  # attained at k = 2
    assert norm_sq[0] > theory.hessian_difference_bound(M_H, k, "paper")[0]
    # Theorem 1 inherits the constant: σ⁴ d(d+2) M_H² / k²
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

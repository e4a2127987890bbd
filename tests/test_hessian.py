"""hessian: exact HVPs, top eigenpairs, spectral density and per-sample norms against brute force.

Every check runs on tiny float64 networks whose Hessians are materialised with
``torch.autograd.functional.hessian`` and diagonalised with ``torch.linalg.eigh``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import hessian
from landscape.hessian import eigen
from landscape.hessian.operator import FORWARD_COLUMNS
from landscape.problem import Problem

# -- tiny problems --------------------------------------------------------------------------------


def _net(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 6)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(6))
    layers += [nn.Tanh(), nn.Linear(6, 3)]
    net = nn.Sequential(*layers).double()
    if batch_norm:  # non-trivial running statistics and affine parameters
        with torch.no_grad():
            net.train()
            net(3 * torch.randn(64, 4, dtype=torch.float64) + 1)
            net[1].weight.uniform_(0.5, 1.5)
            net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def _problem(batch_norm: bool = False, K: int = 40) -> Problem:
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(K, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (K,), generator=generator)
    return Problem(_net(batch_norm), X, y, dtype=torch.float64, device="cpu")


def _full_loss(prob: Problem):
    return lambda w: prob.sample_losses(w, prob.X, prob.y).mean()


def _per_sample_brute_force(prob: Problem) -> torch.Tensor:
    return torch.stack(
        [
            torch.autograd.functional.hessian(
                lambda w, i=i: prob.sample_losses(w, prob.X[i : i + 1], prob.y[i : i + 1])[0],
                prob.center,
            )
            for i in range(prob.num_samples)
        ]
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny float64 problems are fastest on one thread (and immune to oversubscribed cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=[False, True], ids=["tanh", "batchnorm"])
def case(request):
    """A problem, its brute-force H, H's eigendecomposition (descending) and every H_i."""
    prob = _problem(batch_norm=request.param)
    H = torch.autograd.functional.hessian(_full_loss(prob), prob.center)
    values, vectors = torch.linalg.eigh(H)
    return prob, H, values.flip(0), vectors.flip(1), _per_sample_brute_force(prob)


@pytest.fixture(scope="module")
def tiny():
    prob = _problem()
    H = torch.autograd.functional.hessian(_full_loss(prob), prob.center)
    values, vectors = torch.linalg.eigh(H)
    return prob, H, values.flip(0), vectors.flip(1)


def _overlaps(U: torch.Tensor, V: torch.Tensor) -> np.ndarray:
    """|⟨u_j, v_j⟩| column by column (eigenvectors are defined up to sign)."""
    return (U * V).sum(0).abs().numpy()


# -- exact products -------------------------------------------------------------------------------


def test_dense_hessian_and_hvps_equal_autograd(case):
    prob, H, _, _, _ = case
    assert torch.allclose(hessian.dense_hessian(prob), H, rtol=0, atol=1e-12)
    generator = torch.Generator().manual_seed(2)
    v = torch.randn(prob.num_params, generator=generator, dtype=torch.float64)
    V = torch.randn(prob.num_params, 3, generator=generator, dtype=torch.float64)
    assert torch.allclose(hessian.hvp(prob, v), H @ v, rtol=0, atol=1e-10)
    assert torch.allclose(hessian.hvp(prob, V), H @ V, rtol=0, atol=1e-10)

    op = hessian.hessian_operator(prob)
    assert op.shape == (prob.num_params, prob.num_params) and op.adjoint() is op
    assert torch.allclose(op @ v, H @ v, rtol=0, atol=1e-10)
    assert torch.allclose(op @ V, H @ V, rtol=0, atol=1e-10)
    scipy_op = op.to_scipy()
    assert scipy_op.shape == op.shape and scipy_op.dtype == np.float64
    assert np.allclose(scipy_op @ v.numpy(), (H @ v).numpy(), rtol=0, atol=1e-10)
    assert np.allclose(scipy_op.matmat(V.numpy()), (H @ V).numpy(), rtol=0, atol=1e-10)
    assert np.allclose(scipy_op.rmatvec(v.numpy()), (H @ v).numpy(), rtol=0, atol=1e-10)
    assert op.hvps == 1 + 3 + 1 + 3 + 1


def test_hvp_chunks_sum_to_the_mean_over_all_samples(tiny):
    """A memory budget that forces one sample per chunk gives the same H v."""
    prob, H, _, _ = tiny
    small = Problem(_net(False), prob.X, prob.y, dtype=torch.float64, device="cpu", max_memory=1)
    assert small.batch_size(small.activation_bytes) == 1
    v = torch.linspace(-1, 1, prob.num_params, dtype=torch.float64)
    assert torch.allclose(hessian.hvp(small, v), H @ v, rtol=0, atol=1e-12)
    assert torch.allclose(hessian.dense_hessian(small), H, rtol=0, atol=1e-12)


def test_both_hvp_routes_equal_autograd_in_batches_and_auto_keeps_one(case):
    """Double backward and forward over reverse (vmapped over 16 columns, then a remainder of 5)
    give H V in batches of a few samples; "auto" times both on its first block of ≥ 32 columns,
    keeps the faster for the Problem, and its mixed first block is H V as well."""
    prob, H, _, _, _ = case
    V = torch.randn(prob.num_params, 37, generator=torch.Generator().manual_seed(3), dtype=H.dtype)

    def fresh() -> Problem:
        small = Problem(prob.model, prob.X, prob.y, dtype=torch.float64, device="cpu")
        # 5 samples per forward-route batch (activations and FORWARD_COLUMNS tangents each)
        small.max_memory = 5 * (1 + FORWARD_COLUMNS) * small.activation_bytes
        return small

    for route in ("reverse", "forward"):
        small = fresh()
        small.hvp_route = route
        assert torch.allclose(hessian.hvp(small, V), H @ V, rtol=0, atol=1e-10)
        assert small.hvp_route == route and small.hvp_timings == {}
    auto = fresh()
    assert torch.allclose(hessian.hvp(auto, V[:, :31]), H @ V[:, :31], rtol=0, atol=1e-10)
    assert auto.hvp_route == "auto"  # too few columns to time both
    assert torch.allclose(hessian.hvp(auto, V), H @ V, rtol=0, atol=1e-10)
    assert auto.hvp_route in ("reverse", "forward")
    assert set(auto.hvp_timings) == {"reverse", "forward"}
    assert all(seconds > 0 for seconds in auto.hvp_timings.values())
    auto.hvp_route = "sideways"
    with pytest.raises(ValueError, match="prob.hvp_route='sideways' must be one of auto"):
        hessian.hvp(auto, V)


def test_squared_error_hessian_has_its_closed_form():
    """Linear model, l_i = ‖W x_i + b − y_i‖²: H = I_2 ⊗ (2/K) Σ z_i z_iᵀ with z = (x, 1)."""
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(4)
    X = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    prob = Problem(nn.Linear(3, 2).double(), X, y, loss="mse", dtype=torch.float64, device="cpu")
    Z = torch.cat([X, torch.ones(8, 1, dtype=torch.float64)], dim=1)
    block = torch.kron(torch.eye(2, dtype=torch.float64), 2 * Z.T @ Z / 8)
    order = [0, 1, 2, 4, 5, 6, 3, 7]  # (W[0], b[0], W[1], b[1]) -> (W[0], W[1], b[0], b[1])
    exact = block[order][:, order]
    assert torch.allclose(hessian.dense_hessian(prob), exact, rtol=0, atol=1e-12)
    values = torch.linalg.eigvalsh(exact).flip(0)[:3].numpy()
    np.testing.assert_allclose(
        hessian.top_eigenpairs(prob, 3, tol=1e-12).values, values, rtol=1e-10
    )


# -- top eigenpairs -------------------------------------------------------------------------------


def test_lanczos_equals_eigh(case):
    prob, _, values, vectors, _ = case
    d = 5
    result = hessian.top_eigenpairs(prob, d, method="lanczos", tol=1e-10)
    exact = values[:d].numpy()
    assert result.method == "lanczos" and result.converged
    assert np.all(np.diff(result.values) <= 0)
    np.testing.assert_allclose(result.values, exact, rtol=1e-8)
    assert np.all(_overlaps(result.vectors, vectors[:, :d]) > 1 - 1e-8)
    assert np.all(result.relative_residuals < 1e-8)
    np.testing.assert_allclose(result.relative_residuals, result.residuals / np.abs(exact))
    sub = result.subspace
    assert sub.kind == "hessian" and sub.basis.shape == (prob.num_params, d)
    assert sub.basis.dtype == prob.dtype and sub.basis.device == prob.device
    assert sub.is_orthonormal(1e-10)
    assert result.hvps > 0


def test_eigenpairs_unpack_and_are_reproducible(tiny):
    prob, _, values, _ = tiny
    vals, sub = hessian.top_eigenpairs(prob, 3)
    np.testing.assert_allclose(vals, values[:3].numpy(), rtol=1e-6)
    assert sub.dim == 3
    again = hessian.top_eigenpairs(prob, 3)
    np.testing.assert_array_equal(again.values, vals)
    assert torch.equal(again.vectors, sub.basis)


def test_which_lm_and_dense(tiny):
    prob, _, values, vectors = tiny
    by_magnitude = values[values.abs().argsort(descending=True)][:4].numpy()
    lm = hessian.top_eigenpairs(prob, 4, which="LM", tol=1e-10)
    np.testing.assert_allclose(lm.values, by_magnitude, rtol=1e-8)

    full = hessian.top_eigenpairs(prob, prob.num_params, method="dense")
    np.testing.assert_allclose(full.values, values.numpy(), rtol=1e-10, atol=1e-12)
    assert full.subspace.is_orthonormal(1e-10) and np.all(full.residuals < 1e-12)
    assert full.hvps == prob.num_params


def _model_state(model: nn.Module):
    return (
        [p.detach().clone() for p in model.parameters()],
        [p.requires_grad for p in model.parameters()],
        [m.training for m in model.modules()],
        [p.grad for p in model.parameters()],
    )


def test_pyhessian_agrees_and_leaves_everything_alone(case):
    prob, _, values, vectors, _ = case
    before = _model_state(prob.model)
    rng_before = torch.get_rng_state()
    dtype_before = torch.get_default_dtype()

    result = hessian.top_eigenpairs(prob, 3, method="pyhessian", tol=1e-5)

    assert result.method == "pyhessian" and result.converged
    np.testing.assert_allclose(result.values, values[:3].numpy(), rtol=1e-3)
    assert np.all(_overlaps(result.vectors, vectors[:, :3]) > 0.99)
    assert np.all(result.relative_residuals < 3e-2)
    assert np.allclose(result.vectors.norm(dim=0).numpy(), 1.0)
    # the Problem's model, the caller's random stream and the default dtype are untouched
    after = _model_state(prob.model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert before[1:] == after[1:]
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_default_dtype() == dtype_before
    # seeded: the same call gives the same numbers
    again = hessian.top_eigenpairs(prob, 3, method="pyhessian", tol=1e-5)
    np.testing.assert_array_equal(again.values, result.values)
    assert again.hvps == result.hvps


def test_pyhessian_leaves_the_callers_network_alone():
    net = _net(batch_norm=True)
    before = _model_state(net)
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=generator)
    prob = Problem(net, X, y, dtype=torch.float64, device="cpu")
    hessian.top_eigenpairs(prob, 2, method="pyhessian", tol=1e-3)
    after = _model_state(net)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert before[1:] == after[1:]


def test_pyhessian_reports_when_max_iter_stops_it(tiny):
    prob, _, _, _ = tiny
    result = hessian.top_eigenpairs(prob, 2, method="pyhessian", tol=1e-12, max_iter=5)
    assert not result.converged and result.hvps == 10


def test_lanczos_needs_fewer_hvps_than_pyhessian(tiny):
    """SPEC §7: at equal (here: better) accuracy, Lanczos uses far fewer HVPs."""
    prob, _, _, _ = tiny
    lanczos = hessian.top_eigenpairs(prob, 5, method="lanczos", tol=1e-6)
    power = hessian.top_eigenpairs(prob, 5, method="pyhessian", tol=1e-5)
    assert lanczos.relative_residuals.max() <= power.relative_residuals.max()
    assert lanczos.hvps < power.hvps


def test_operator_keeps_one_batch_graph_and_matches_hvp(tiny):
    """The operator's kept gradient graph (one batch) and the per-call route (several batches)
    give the same products, and keep giving them after many calls."""
    prob, H, _, _ = tiny
    small = Problem(_net(False), prob.X, prob.y, dtype=torch.float64, device="cpu", max_memory=1)
    V = torch.randn(prob.num_params, 3, generator=torch.Generator().manual_seed(5), dtype=H.dtype)
    for p in (prob, small):
        op = hessian.hessian_operator(p)
        for _ in range(3):
            assert torch.allclose(op.products(V), H @ V, rtol=0, atol=1e-10)
            assert torch.allclose(op.products(V[:, 0]), H @ V[:, 0], rtol=0, atol=1e-10)
        assert op.hvps == 3 * 4
    assert hessian.hessian_operator(prob).keep
    assert not hessian.hessian_operator(small).keep
    two = Problem(
        _net(False),
        prob.X,
        prob.y,
        dtype=torch.float64,
        device="cpu",
        max_memory=prob.activation_bytes * 30,
    )  # 40 samples in two batches, both kept
    op = hessian.HessianOperator(two)
    assert len(op.batches) == 2 and op.keep
    for _ in range(2):
        assert torch.allclose(op.products(V), H @ V, rtol=0, atol=1e-10)


def _symmetric(values: np.ndarray, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    n = len(values)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (Q * torch.as_tensor(values)) @ Q.T


def test_thick_restart_lanczos_on_a_near_degenerate_spectrum():
    """Restarts, a cluster split by 1e-6 relative, and a ±λ pair: values, the cluster's subspace,
    single vectors up to sign, and recurrence residuals equal to the exact ones."""
    rng = np.random.default_rng(0)
    top = np.array([5.0, 3.0, 3.0 * (1 + 1e-6), 3.0 * (1 - 1e-6), -4.9, 2.0])
    values = np.concatenate([top, rng.uniform(-1.5, 1.5, 294)])
    A = _symmetric(values)
    exact_values, exact_vectors = torch.linalg.eigh(A)
    products = []

    def matmul(v):
        products.append(1)
        return A @ v

    d = 5
    for which in ("LA", "LM"):
        ritz = eigen.thick_restart_lanczos(
            matmul, torch.ones(300, dtype=A.dtype), d, which, 1e-10, 200
        )
        order = np.argsort(eigen.ORDER[which](exact_values.numpy()), kind="stable")[:d]
        assert ritz.converged and ritz.done == d
        np.testing.assert_allclose(ritz.values, exact_values.numpy()[order], rtol=1e-9)
        V, W = ritz.vectors, exact_vectors[:, order]
        assert torch.allclose(V.T @ V, torch.eye(d, dtype=A.dtype), atol=1e-12)
        exact_residuals = (A @ V - V * torch.as_tensor(ritz.values)).norm(dim=0).numpy()
        np.testing.assert_allclose(ritz.residuals, exact_residuals, rtol=0, atol=1e-12)
        assert np.all(ritz.residuals <= 1e-10 * np.abs(ritz.values))
        # the near-degenerate cluster {3(1 − 1e-6), 3, 3(1 + 1e-6)}: its projector, not its vectors
        cluster = np.abs(np.abs(ritz.values) - 3) < 1e-3
        Pc = V[:, cluster] @ V[:, cluster].T
        Pe = W[:, cluster] @ W[:, cluster].T
        assert torch.linalg.matrix_norm(Pc - Pe, ord=2) < 1e-4
        # the isolated eigenvalues: vectors up to sign
        assert np.all(_overlaps(V[:, ~cluster], W[:, ~cluster]) > 1 - 1e-10)
    assert len(products) > 2 * 20  # m = 20 basis vectors: it had to restart


def test_lanczos_residuals_come_from_the_recurrence_and_are_exact(case):
    """At a loose tolerance the reported residuals are the recurrence's, equal to ‖Hv − λv‖
    computed with the brute-force Hessian."""
    prob, H, _, _, _ = case
    result = hessian.top_eigenpairs(prob, 4, tol=1e-3)
    assert result.residuals_from.startswith("Lanczos recurrence")
    V, lam = result.vectors, torch.as_tensor(result.values)
    exact = (H @ V - V * lam).norm(dim=0).numpy()
    np.testing.assert_allclose(result.residuals, exact, rtol=1e-6, atol=1e-13)
    assert np.all(result.relative_residuals <= 1e-3)


def test_a_wrong_recurrence_estimate_is_replaced_by_exact_residuals():
    A = _symmetric(np.linspace(-1.0, 2.0, 30), seed=1)
    ritz = eigen.thick_restart_lanczos(
        lambda v: A @ v, torch.ones(30, dtype=A.dtype), 2, "LA", 1e-8, 50
    )
    wrong = ritz._replace(residuals=np.zeros(2), vectors=ritz.vectors + 1e-3)
    residuals, how = eigen.checked_residuals(lambda v: A @ v, wrong, torch.float64)
    V, lam = wrong.vectors, torch.as_tensor(wrong.values)
    np.testing.assert_allclose(residuals, (A @ V - V * lam).norm(dim=0).numpy(), rtol=1e-12)
    assert how.startswith("one exact product per pair")


# -- spectral density -----------------------------------------------------------------------------


def test_spectral_density_integrates_to_one_with_the_right_mean(tiny):
    prob, H, values, _ = tiny
    probes, steps = 8, 30
    rng_before = torch.get_rng_state()
    density = hessian.spectral_density(prob, num_probes=probes, num_steps=steps, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)

    grid, rho = density.grid, density.density
    assert grid.shape == rho.shape == density.stderr.shape
    assert np.all(rho >= 0) and np.all(density.stderr >= 0)
    assert abs(np.trapezoid(rho, grid) - 1) < 1e-3
    assert density.boundaries[0] <= values[-1].item() + 1e-2 * abs(values[-1].item())
    assert density.boundaries[1] >= values[0].item() * (1 - 1e-2)
    # ∫ λ ρ(λ) dλ is the mean of vᵀHv over unit probes: unbiased for Tr H / N, with
    # Var(vᵀHv) = 2/(N+2) · (mean λ² − mean(λ)²) for v uniform on the sphere.
    lam = values.numpy()
    n = prob.num_params
    stderr = np.sqrt(2 / (n + 2) * ((lam**2).mean() - lam.mean() ** 2) / probes)
    mean = np.trapezoid(grid * rho, grid)
    assert abs(mean - torch.trace(H).item() / n) < 4 * stderr
    # each probe costs num_steps HVPs; the boundary estimate the rest
    assert density.hvps > probes * steps
    again = hessian.spectral_density(prob, num_probes=probes, num_steps=steps, seed=0)
    np.testing.assert_array_equal(again.density, rho)


# -- per-sample spectral norms --------------------------------------------------------------------


def test_per_sample_hessians_equal_autograd(case):
    prob, _, _, _, brute = case
    assert torch.allclose(hessian.per_sample_hessians(prob), brute, rtol=0, atol=1e-12)
    picked = hessian.per_sample_hessians(prob, [3, 0])
    assert torch.allclose(picked, brute[[3, 0]], rtol=0, atol=1e-12)


def test_per_sample_spectral_norms_equal_brute_force(case):
    prob, _, _, _, brute = case
    eigenvalues = torch.linalg.eigvalsh(brute)
    top = eigenvalues.abs().argmax(1)
    signed = eigenvalues[torch.arange(len(eigenvalues)), top].numpy()
    exact = np.abs(signed)

    norms = hessian.per_sample_spectral_norms(prob, tol=1e-8)
    assert norms.method == "lanczos" and norms.converged
    np.testing.assert_allclose(norms.values, exact, rtol=1e-6)
    np.testing.assert_array_equal(np.sign(norms.signed), np.sign(signed))
    assert norms.max == pytest.approx(exact.max(), rel=1e-6)
    assert norms.argmax == int(exact.argmax())
    assert np.all(norms.residuals <= 1e-8 * norms.values)
    assert norms.iterations.shape == (prob.num_samples,)
    # per-sample Hessians have low rank: Lanczos stops after at most rank + 1 steps
    assert norms.iterations.max() < prob.num_params


def test_power_iteration_is_honest_about_convergence():
    """Power iteration agrees where it converged and says where it did not; Lanczos is cheaper."""
    prob = _problem(K=6)
    exact = torch.linalg.eigvalsh(_per_sample_brute_force(prob)).abs().amax(1).numpy()
    tol = 1e-4
    power = hessian.per_sample_spectral_norms(prob, method="power", tol=tol, iters=300)
    lanczos = hessian.per_sample_spectral_norms(prob, method="lanczos", tol=tol)
    met = power.residuals <= tol * power.values
    assert power.converged == bool(met.all())
    assert met.sum() >= 3
    np.testing.assert_allclose(power.values[met], exact[met], rtol=tol)
    assert np.all(power.iterations[~met] == 300)
    assert lanczos.converged and lanczos.hvps < power.hvps
    np.testing.assert_allclose(lanczos.values, exact, rtol=tol)


def test_restarted_lanczos_norms_equal_brute_force(case):
    """Cycles of 4 steps (restarts from the best Ritz vector) still reach the exact norms."""
    prob, _, _, _, brute = case
    exact = torch.linalg.eigvalsh(brute[:8]).abs().amax(1).numpy()
    small = Problem(prob.model, prob.X[:8], prob.y[:8], dtype=torch.float64, device="cpu")
    norms = hessian.per_sample_spectral_norms(small, tol=1e-8, lanczos_basis=4)
    assert norms.converged and norms.iterations.max() > 4
    np.testing.assert_allclose(norms.values, exact, rtol=1e-6)


def test_per_sample_norms_with_one_sample_per_chunk(tiny):
    prob, _, _, _ = tiny
    small = Problem(
        _net(False), prob.X[:5], prob.y[:5], dtype=torch.float64, device="cpu", max_memory=1
    )
    exact = torch.linalg.eigvalsh(_per_sample_brute_force(small)).abs().amax(1).numpy()
    np.testing.assert_allclose(hessian.per_sample_spectral_norms(small).values, exact, rtol=1e-6)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"d": 0}, "d="),
        ({"d": 1000}, "d="),
        ({"d": 2.5}, "d="),
        ({"d": 2, "method": "arnoldi"}, "method="),
        ({"d": 2, "tol": 0}, "tol="),
        ({"d": 2, "tol": -1e-3}, "tol="),
        ({"d": 2, "which": "SA"}, "which="),
        ({"d": 2, "max_iter": 0}, "max_iter="),
        ({"d": 2, "seed": -1}, "seed="),
    ],
)
def test_top_eigenpairs_rejects_bad_input(tiny, kwargs, name):
    prob = tiny[0]
    with pytest.raises(ValueError, match=name):
        hessian.top_eigenpairs(prob, **kwargs)


def test_lanczos_needs_d_below_n(tiny):
    prob = tiny[0]
    with pytest.raises(ValueError, match=f"d={prob.num_params}"):
        hessian.top_eigenpairs(prob, prob.num_params, method="lanczos")


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda p: hessian.hvp(p, torch.zeros(3)), "v must"),
        (lambda p: hessian.per_sample_spectral_norms(p, method="qr"), "method="),
        (lambda p: hessian.per_sample_spectral_norms(p, iters=0), "iters="),
        (lambda p: hessian.per_sample_spectral_norms(p, tol=0), "tol="),
        (lambda p: hessian.spectral_density(p, num_probes=0), "num_probes="),
        (lambda p: hessian.spectral_density(p, num_steps=p.num_params), "num_steps="),
        (lambda p: hessian.spectral_density(p, kappa=1.0), "kappa="),
        (lambda p: hessian.spectral_density(p, boundaries=(1.0, 0.0)), "boundaries="),
        (lambda p: hessian.per_sample_hessians(p, [p.num_samples]), "indices"),
    ],
)
def test_other_functions_reject_bad_input(tiny, call, name):
    with pytest.raises(ValueError, match=name):
        call(tiny[0])

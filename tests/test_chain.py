"""The chain route of projected derivatives against brute force (float64, tiny networks)."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from landscape import chain, curvature, directions, models, routes
from landscape.directions import Subspace
from landscape.problem import Problem


def _brute_force(prob, P):
    """Value, gradient and Hessian of φ_i(z) = l_i(w* + Pz) at 0, one sample at a time.

    ``torch.autograd.functional`` (reverse over reverse, no vmap): torch.func's hessian,
    jacrev(jacrev) and jacfwd(jacfwd) of φ_i give wrong numbers for nn.LayerNorm with a learned
    affine (seen with torch 2.14; its vmap rules), while this agrees with finite differences.
    """
    zero = torch.zeros(P.shape[1], dtype=P.dtype)
    rows = []
    for i in range(prob.num_samples):
        X, y = prob.X[i : i + 1], prob.y[i : i + 1]

        def phi(z, X=X, y=y):
            return prob.sample_losses(prob.center + P @ z, X, y)[0]

        rows.append(
            (
                phi(zero),
                torch.autograd.functional.jacobian(phi, zero),
                torch.autograd.functional.hessian(phi, zero),
            )
        )
    return [torch.stack(column) for column in zip(*rows)]


def _with_running_stats(net, shape):
    """Give every batch-norm layer non-trivial running statistics, then eval mode."""
    net = net.double().train()
    with torch.no_grad():
        net(3 * torch.randn(32, *shape, dtype=torch.float64) + 1)
    return net.eval()


def _mlp(activation, bias=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(4, 5, bias=bias), activation, nn.Linear(5, 3, bias=bias)
    )


def _nested():
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(5, 5), nn.Sequential(nn.Tanh(), nn.Linear(5, 4)))
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), inner, nn.Linear(4, 3))


def _smooth_norms():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), nn.GELU(), nn.LayerNorm(6), nn.Unflatten(1, (2, 3)),
        nn.GroupNorm(1, 2), nn.SiLU(), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip


def _tied():
    torch.manual_seed(0)
    shared = nn.Linear(5, 5)
    return nn.Sequential(nn.Linear(4, 5), shared, nn.Tanh(), shared, nn.Linear(5, 3))


def _cnn2d():
    net = models.build("cnn", (2, 6, 6), 3, depth=2, channels=3, batch_norm=True, seed=0)
    return _with_running_stats(net, (2, 6, 6))


def _cnn1d():  # the mnist1d CNN's layers: Conv1d, BatchNorm1d, ReLU, MaxPool1d, global pooling
    net = models.build("cnn", (1, 12), 3, depth=2, channels=3, batch_norm=True, seed=0)
    return _with_running_stats(net, (1, 12))


def _cnn1d_tanh():
    return models.build("cnn", (1, 12), 3, depth=2, channels=2, activation="tanh", seed=1)


def _convolutions():  # fast (strided, dilated) and generic (groups, circular, 'same') paths
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, dilation=2, padding=1), nn.MaxPool2d(2, stride=1),
        nn.Flatten(2), nn.Conv1d(4, 4, 3, padding="same", padding_mode="circular"),
        nn.Conv1d(4, 4, 3, groups=2), nn.MaxPool1d(2, stride=1, padding=1), nn.Tanh(),
        nn.AvgPool1d(2), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip


def _mlp_batch_norm():
    net = models.build("mlp", (4,), 3, depth=2, width=5, batch_norm=True, seed=0)
    return _with_running_stats(net, (4,))


def _mlp_dropout():  # the paper MLP's layers: dropout (identity in eval mode) and an Identity
    net = models.build("mlp", (4,), 3, depth=2, width=5, batch_norm=True, dropout=0.5, seed=0)
    return nn.Sequential(_with_running_stats(net, (4,)), nn.Identity())


CASES = {
    "mlp-relu": (lambda: _mlp(nn.ReLU()), (4,), "cross_entropy"),
    "mlp-tanh": (lambda: _mlp(nn.Tanh()), (4,), "cross_entropy"),
    "mlp-no-bias": (lambda: _mlp(nn.ReLU(), bias=False), (4,), "cross_entropy"),
    "mlp-batch-norm": (_mlp_batch_norm, (4,), "cross_entropy"),
    "mlp-dropout": (_mlp_dropout, (4,), "cross_entropy"),
    "mlp-mse": (lambda: _mlp(nn.Tanh()), (4,), "mse"),
    "nested": (_nested, (4,), "cross_entropy"),
    "layer-group-norm": (_smooth_norms, (4,), "cross_entropy"),
    "tied-weights": (_tied, (4,), "cross_entropy"),
    "cnn2d-batch-norm": (_cnn2d, (2, 6, 6), "cross_entropy"),
    "cnn1d-batch-norm": (_cnn1d, (1, 12), "cross_entropy"),
    "cnn1d-tanh": (_cnn1d_tanh, (1, 12), "mse"),
    "convolutions": (_convolutions, (2, 8, 8), "cross_entropy"),
    "bare-linear": (lambda: nn.Linear(4, 3), (4,), "mse"),
}


def _problem(case, K=5):
    build, shape, loss = CASES[case]
    net = build().double().eval()
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(K, *shape, generator=generator, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(K, 3, generator=generator, dtype=torch.float64)
    else:
        y = torch.randint(0, 3, (K,), generator=generator)
    return Problem(net, X, y, loss=loss, dtype=torch.float64, device="cpu")


def _close(actual, expected, rtol=1e-10):
    scale = expected.abs().max().clamp_min(1e-300)
    assert float((actual - expected).abs().max() / scale) <= rtol


@pytest.mark.parametrize("case", list(CASES))
def test_chain_equals_brute_force(case):
    prob = _problem(case)
    supported, why = chain.support(prob)
    assert supported, why
    P = directions.random(prob, 3, kind="gaussian", seed=2).basis
    raw = chain.chain_derivatives(prob, prob.X, prob.y, P, symmetrise=False)
    losses, G, B = chain.chain_derivatives(prob, prob.X, prob.y, P)
    reference = _brute_force(prob, P)
    for actual, expected in zip((losses, G, B), reference):
        _close(actual, expected)
    _close(raw[2], raw[2].transpose(1, 2), rtol=1e-13)  # symmetric before symmetrising
    assert torch.equal(B, B.transpose(1, 2))


#: The cases whose per-sample gradients factor (Linear on flat inputs, BatchNorm); the others have
#: convolutions, LayerNorm/GroupNorm, a Linear on a 3-D input or a layer applied twice.
FACTORED = {"mlp-relu", "mlp-tanh", "mlp-no-bias", "mlp-batch-norm", "mlp-dropout", "mlp-mse",
            "nested", "bare-linear"}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_gradient_factors_equal_per_sample_gradients(case):
    """The factored per-sample gradients equal plain backward one sample at a time, and so do
    their Gram matrix, their products with a vector and their sum; None where they do not factor
    (never a wrong number)."""
    prob = _problem(case)
    P = directions.random(prob, 3, kind="gaussian", seed=2).basis
    *_, rows = chain.chain_derivatives(prob, prob.X, prob.y, P, gradients=True)
    assert (rows is not None) == (case in FACTORED)
    if rows is None:
        return
    brute = []
    for i in range(prob.num_samples):
        w = prob.center.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(
            prob.sample_losses(w, prob.X[i : i + 1], prob.y[i : i + 1])[0], w
        )
        brute.append(g)
    brute = torch.stack(brute)
    v = torch.randn(
        prob.num_params, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    _close(rows.dense(), brute)
    _close(rows.gram(), brute @ brute.T)
    _close(rows.dot(v), brute @ v)
    _close(rows.total(), brute.sum(0))


def test_directions_prepared_once_follow_the_basis():
    """The layers' direction pieces are made once per basis and shared by later calls: a basis
    changed in place, or a new one, is seen; one in column-major order gives the same numbers."""
    prob = _problem("mlp-relu")
    P = directions.random(prob, 4, kind="gaussian", seed=2).basis
    losses, G, B = chain.chain_derivatives(prob, prob.X, prob.y, P)
    P.mul_(2.0)
    for P2 in (P, P.T.contiguous().T, P.clone()):
        _, G2, B2 = chain.chain_derivatives(prob, prob.X, prob.y, P2)
        _close(G2, 2 * G, rtol=1e-13)
        _close(B2, 4 * B, rtol=1e-13)


def test_non_orthonormal_basis_with_a_zero_column():
    prob = _problem("cnn2d-batch-norm")
    v = directions.random(prob, 2, kind="filter", seed=3).basis
    P = torch.cat([v[:, :1], torch.zeros_like(v[:, :1]), v[:, :1] + 0.5 * v[:, 1:]], dim=1)
    result = chain.chain_derivatives(prob, prob.X, prob.y, P)
    for actual, expected in zip(result, _brute_force(prob, P)):
        _close(actual, expected)
    assert torch.all(result[1][:, 1] == 0) and torch.all(result[2][:, 1] == 0)


def test_the_network_and_its_parameters_are_untouched():
    prob = _problem("nested")  # holds ReLU(inplace=True)
    before = [p.clone() for p in prob.model.parameters()]
    P = directions.random(prob, 2, seed=0).basis
    chain.chain_derivatives(prob, prob.X, prob.y, P)
    assert all(torch.equal(a, b) for a, b in zip(before, prob.model.parameters()))
    assert prob.model[1].inplace


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(5, 5)

    def forward(self, x):
        return x + torch.tanh(self.inner(x))


class _Scale(nn.Module):
    def forward(self, x):
        return 2 * x


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: nn.Sequential(nn.Linear(4, 5), _Residual(), nn.Linear(5, 3)), "'1' (_Residual)"),
        (lambda: nn.Sequential(nn.Linear(4, 5), _Scale(), nn.Linear(5, 3)), "'1' (_Scale)"),
        (lambda: nn.Sequential(nn.Linear(4, 3), nn.PReLU()), "not known to be linear"),
        (
            lambda: nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, track_running_stats=False)),
            "batch statistics",
        ),
    ],
)
def test_what_is_not_a_chain_is_refused_with_the_reason(make, reason):
    torch.manual_seed(0)
    X, y = torch.randn(6, 4, dtype=torch.float64), torch.arange(6) % 3
    try:
        prob = Problem(make().double().eval(), X, y, dtype=torch.float64, device="cpu")
    except ValueError:  # a Problem may refuse it first (batch statistics are not per sample)
        return
    supported, why = chain.support(prob)
    assert not supported and reason in why
    P = directions.random(prob, 2, seed=0).basis
    with pytest.raises(ValueError, match="chain route"):
        chain.chain_derivatives(prob, X, y, P)


@pytest.mark.parametrize("forward_max_dim", [16, 0], ids=["forward", "hvp"])
def test_a_network_that_is_not_a_chain_falls_back_and_says_so(forward_max_dim):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), _Residual(), nn.Linear(5, 3)).double().eval()
    generator = torch.Generator().manual_seed(1)
    X = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    prob = Problem(net, X, torch.arange(6) % 3, dtype=torch.float64, device="cpu")
    sub = directions.random(prob, 3, seed=1)
    route = "forward" if forward_max_dim else "hvp"
    assert curvature.projected_route(prob, 3, forward_max_dim=forward_max_dim)[0] == route
    terms = curvature.difference_terms(prob, sub, progress=False, forward_max_dim=forward_max_dim)
    assert any(f"'{route}' route" in note and "not a chain" in note for note in terms.notes)
    result = curvature.projected_derivatives(prob, prob.X, prob.y, sub.basis, route=route)
    for actual, expected in zip(result, _brute_force(prob, sub.basis)):
        _close(actual, expected)


@pytest.mark.parametrize(
    ("case", "grads_by", "traces_by"),
    [
        ("mlp-tanh", "backpack", "backpack"),
        ("tied-weights", "torch.func", "torch.func"),  # AttributeError in BackPACK's hooks
        ("nested", "torch.func", "torch.func"),  # RuntimeError: in-place ReLU under its hooks
        ("layer-group-norm", "torch.func", "torch.func"),  # no grad_batch; NotImplementedError
        ("residual", "backpack", "torch.func"),  # AssertionError in second-order extensions
        ("cnn1d-tanh", "backpack", "torch.func"),  # RuntimeError: float32 buffers in float64
    ],
)
def test_backpack_falls_back_where_it_cannot_and_says_so(case, grads_by, traces_by):
    """Every way BackPACK says "not this network" ends in the torch.func route with a warning (or
    in BackpackUnsupported when BackPACK was asked for), with the same numbers."""
    if case == "residual":
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 5), _Residual(), nn.Linear(5, 3)).double().eval()
        X = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        prob = Problem(net, X, torch.arange(5) % 3, dtype=torch.float64, device="cpu")
    else:
        prob = _problem(case)
    computes = (curvature.per_sample_gradients, curvature.per_sample_hessian_traces)
    for compute, expected in zip(computes, (grads_by, traces_by)):
        reference, _ = compute(prob, backend="torch.func")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values, backend = compute(prob)
        assert backend == expected
        said = [str(w.message) for w in caught if "BackPACK" in str(w.message)]
        assert bool(said) == (expected == "torch.func"), said
        _close(values, reference)
        if expected == "torch.func":
            with pytest.raises(curvature.BackpackUnsupported, match="BackPACK cannot"):
                compute(prob, backend="backpack")


def test_every_route_gives_the_same_numbers(tiny_problem):
    P = directions.random(tiny_problem, 4, kind="filter", seed=5).basis
    X, y = tiny_problem.X, tiny_problem.y
    results = {
        route: curvature.projected_derivatives(tiny_problem, X, y, P, route=route)
        for route in ("chain", "forward", "hvp")
    }
    for route in ("forward", "hvp"):
        for actual, expected in zip(results[route], results["chain"]):
            _close(actual, expected)
    with pytest.raises(ValueError, match="route"):
        curvature.projected_derivatives(tiny_problem, X, y, P, route="nope")


def test_chunks_over_samples_give_the_same_numbers(tiny_problem):
    small = Problem(
        tiny_problem.model, tiny_problem.X, tiny_problem.y, dtype=torch.float64, device="cpu",
        max_memory=30_000,
    )  # fmt: skip
    P = directions.random(tiny_problem, 8, seed=0).basis
    for route in ("chain", "hvp"):
        assert small.batch_size(routes.route_bytes(small, route, 8)[0]) < small.num_samples
        a = curvature.projected_derivatives(tiny_problem, small.X, small.y, P, route=route)
        b = curvature.projected_derivatives(small, small.X, small.y, P, route=route)
        for actual, expected in zip(b, a):
            _close(actual, expected, rtol=1e-14)


def test_dispatch_rule(tiny_problem):
    assert curvature.projected_route(tiny_problem, 200)[0] == "chain"
    assert curvature.projected_route(tiny_problem, 4, chain_max_dim=4)[0] == "chain"
    assert curvature.projected_route(tiny_problem, 5, chain_max_dim=4)[0] == "forward"
    route, why = curvature.projected_route(tiny_problem, 17, chain_max_dim=4)
    assert route == "hvp" and "chain_max_dim=4" in why
    assert (
        curvature.projected_route(tiny_problem, 5, chain_max_dim=4, forward_max_dim=4)[0] == "hvp"
    )


def test_difference_terms_name_the_chain_route(bn_problem):
    v = directions.random(bn_problem, 2, seed=3).basis
    sparse = torch.zeros_like(v[:, :1])
    sparse[-1] = 1.0  # a direction along one parameter of the last layer only
    sub = Subspace(torch.cat([sparse, v], dim=1))
    terms = curvature.difference_terms(bn_problem, sub, progress=False)
    assert any("'chain' route" in note for note in terms.notes)
    _, G, B = _brute_force(bn_problem, sub.basis)
    k = np.arange(2, bn_problem.num_samples + 1)
    counts = torch.arange(1, bn_problem.num_samples + 1, dtype=torch.float64)
    prefix_B = B.cumsum(0) / counts[:, None, None]
    M = (B[1:] - prefix_B[:-1]) / torch.as_tensor(k, dtype=torch.float64)[:, None, None]
    np.testing.assert_allclose(terms.trace, M.diagonal(dim1=1, dim2=2).sum(1), rtol=1e-10)
    np.testing.assert_allclose(terms.trace_sq, M.square().sum((1, 2)), rtol=1e-10)


class _NormedResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(5)

    def forward(self, x):
        return x + self.norm(x)


def test_layer_norm_outside_a_chain_avoids_nested_forward_mode():
    """torch.func's jacfwd(jacfwd) is wrong through LayerNorm (pytorch/pytorch#196700): on a
    non-chain network holding one, forward mode is the candidate for small d, fails its proof
    against double backward, and per-sample HVPs are used instead, and are right."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), _NormedResidual(), nn.Linear(5, 3)).double().eval()
    with torch.no_grad():
        net[1].norm.weight.normal_()
        net[1].norm.bias.normal_()
    X = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prob = Problem(net, X, torch.arange(6) % 3, dtype=torch.float64, device="cpu")
    sub = directions.random(prob, 3, seed=1)
    assert curvature.projected_route(prob, 3)[0] == "forward"
    route, why = curvature.proven_route(prob, 3)
    assert route == "hvp" and "'forward' route" in why and "disagreed" in why
    result = curvature.projected_derivatives(prob, prob.X, prob.y, sub.basis)
    for actual, expected in zip(result, _brute_force(prob, sub.basis)):
        _close(actual, expected)
    forward = curvature.projected_derivatives(prob, prob.X, prob.y, sub.basis, route="forward")
    # the bug itself (drop this line once torch fixes it)
    assert not torch.allclose(forward[2], result[2])

"""Curvature through normalisation layers, against plain double backward (float64, tiny networks).

torch.func's nested derivatives (``jacfwd(jacfwd)``, ``torch.func.hessian``) are wrong in torch
2.14 through InstanceNorm, ``F.layer_norm`` in a custom forward and ``nn.LayerNorm`` (by 1e-2 to
1e1), so the reference here is ``torch.autograd.functional.hessian`` (reverse over reverse, no
torch.func), and every route the library can choose must agree with it — or be refused by its
proof and replaced, saying so in ``.notes``.
"""

import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape import chain, curvature, directions, hessian, routes
from landscape.directions import Subspace
from landscape.problem import Problem

TERMS = ("gap", "grad_sq", "trace", "trace_sq")
WIDTH = 6


class _Residual(nn.Module):
    """Linear → h + norm(h) → tanh → Linear: a module's own forward, so not a chain."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(6, WIDTH), norm, nn.Linear(WIDTH, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.out(torch.tanh(h + self.norm(h)))


class _Functional(nn.Module):
    """Linear → F.layer_norm / F.group_norm / F.batch_norm (eval, running statistics) → tanh →
    Linear, with the normalisation's affine parameters on the module itself."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.inp, self.out = nn.Linear(6, WIDTH), nn.Linear(WIDTH, 3)
        self.weight = nn.Parameter(torch.ones(WIDTH))
        self.bias = nn.Parameter(torch.zeros(WIDTH))
        self.register_buffer("running_mean", torch.linspace(-0.5, 0.5, WIDTH))
        self.register_buffer("running_var", torch.linspace(0.5, 2.0, WIDTH))

    def forward(self, x):
        h = self.inp(x)
        if self.kind == "layer_norm":
            h = F.layer_norm(h, (WIDTH,), self.weight, self.bias)
        elif self.kind == "group_norm":
            h = F.group_norm(h, 2, self.weight, self.bias)
        else:
            h = F.batch_norm(
                h, self.running_mean, self.running_var, self.weight, self.bias, training=False
            )
        return self.out(torch.tanh(h))


NETS = {
    "instance-norm": lambda: nn.Sequential(
        nn.Linear(6, WIDTH),
        nn.Unflatten(1, (2, WIDTH // 2)),
        nn.InstanceNorm1d(2, affine=True),
        nn.Flatten(),
        nn.Tanh(),
        nn.Linear(WIDTH, 3),
    ),  # fmt: skip
    "group-norm": lambda: _Residual(nn.GroupNorm(2, WIDTH)),
    "layer-norm": lambda: _Residual(nn.LayerNorm(WIDTH)),
    "functional-layer-norm": lambda: _Functional("layer_norm"),
    "functional-group-norm": lambda: _Functional("group_norm"),
    "functional-batch-norm": lambda: _Functional("batch_norm"),
    "chain-layer-group-norm": lambda: nn.Sequential(
        nn.Linear(6, WIDTH),
        nn.LayerNorm(WIDTH),
        nn.Tanh(),
        nn.Unflatten(1, (2, WIDTH // 2)),
        nn.GroupNorm(1, 2),
        nn.Flatten(),
        nn.Linear(WIDTH, 3),
    ),  # fmt: skip
}
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, _Functional)
#: Where torch 2.14's nested forward mode is wrong (the others guard against false alarms).
BROKEN = ("instance-norm", "layer-norm", "functional-layer-norm")


def _problem(name: str, dtype=torch.float64) -> Problem:
    torch.manual_seed(0)
    net = NETS[name]().to(dtype)
    with torch.no_grad():  # non-trivial affine parts of the normalisations
        for module in net.modules():
            if isinstance(module, NORMS):
                module.weight.normal_()
                module.bias.normal_()
    generator = torch.Generator().manual_seed(1)
    X = 2 * torch.randn(6, 6, generator=generator, dtype=dtype)
    return Problem(net.eval(), X, torch.arange(6) % 3, dtype=dtype, device="cpu")


@functools.cache
def _shared(name: str) -> Problem:
    """One Problem per network for the read-only tests (route proofs are kept per Problem)."""
    return _problem(name)


@functools.cache
def _reference(name: str):
    return _double_backward(_shared(name))


def _double_backward(prob: Problem):
    """Per-sample losses, gradients and Hessians by plain double backward (torch.autograd only).

    Each sample gets its own copy W_i of the parameters, so the gradient of Σ_i l_i(W_i) with
    respect to W (K, N) holds every per-sample gradient, and one more reverse pass per coordinate
    j gives row j of every per-sample Hessian at once (N passes, not K·N).
    """
    W = prob.center.repeat(prob.num_samples, 1).requires_grad_(True)
    losses = torch.stack([prob.sample_loss(w, x, t) for w, x, t in zip(W, prob.X, prob.y)])
    (G,) = torch.autograd.grad(losses.sum(), W, create_graph=True)
    rows = [
        torch.autograd.grad(G[:, j].sum(), W, retain_graph=True)[0] for j in range(prob.num_params)
    ]
    return losses.detach(), G.detach(), torch.stack(rows, dim=1)


def _prefix_differences(x: torch.Tensor) -> torch.Tensor:
    """(x_k − mean_{i<k} x_i) / k for k = 2..K (k counts from 1)."""
    K = len(x)
    k = torch.arange(1, K + 1, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
    before = (x.cumsum(0) - x)[1:] / (k[1:] - 1)
    return (x[1:] - before) / k[1:]


def _brute_force_terms(name: str | Problem, P: torch.Tensor) -> dict[str, np.ndarray]:
    reference = _double_backward(name) if isinstance(name, Problem) else _reference(name)
    losses, grads, hessians = reference
    a = _prefix_differences(losses)
    c = _prefix_differences(grads @ P)
    M = _prefix_differences(P.T @ hessians @ P)
    return {
        "gap": a.numpy(),
        "grad_sq": c.square().sum(1).numpy(),
        "trace": M.diagonal(dim1=1, dim2=2).sum(1).numpy(),
        "trace_sq": M.square().sum((1, 2)).numpy(),
        "M": M,
    }


def _assert_terms(terms, expected, rtol=1e-9):
    for key in TERMS:
        scale = np.abs(expected[key]).max()
        np.testing.assert_allclose(
            getattr(terms, key), expected[key], rtol=rtol, atol=rtol * scale, err_msg=key
        )


def _basis(prob: Problem, d: int) -> Subspace:
    return directions.random(prob, d, seed=2)


# -- per-sample Hessians --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NETS)
def test_per_sample_hessians_equal_double_backward(name):
    prob = _shared(name)
    expected = _reference(name)[2]
    actual = hessian.per_sample_hessians(prob)
    assert (actual - expected).abs().max() <= 1e-10 * expected.abs().max()
    picked = hessian.per_sample_hessians(prob, [4, 1])
    assert (picked - expected[[4, 1]]).abs().max() <= 1e-10 * expected.abs().max()


# -- the difference terms in a subspace, by every route -------------------------------------------


@pytest.mark.parametrize(
    ("route", "dim"),
    [("auto", 4), ("auto", 20), ("forward", 4), ("hvp", 4), ("backward", 4), ("chain", 4)],
)
@pytest.mark.parametrize("name", NETS)
def test_subspace_terms_equal_double_backward(name, route, dim):
    prob = _shared(name)
    sub = _basis(prob, dim)
    if route == "chain" and not chain.support(prob)[0]:
        with pytest.raises(ValueError, match="chain route"):
            curvature.difference_terms(prob, sub, route=route, progress=False)
        return
    extra = {} if route == "auto" else {"route": route}
    terms = curvature.difference_terms(prob, sub, progress=False, **extra)
    assert terms.method == "subspace"
    _assert_terms(terms, _brute_force_terms(name, sub.basis))
    losses, G, B = curvature.projected_derivatives(prob, prob.X, prob.y, sub.basis)
    expected = sub.basis.T @ _reference(name)[2] @ sub.basis
    assert (B - expected).abs().max() <= 1e-10 * expected.abs().max()


# -- the full space: exact and stochastic ---------------------------------------------------------


@pytest.mark.parametrize("name", NETS)
def test_full_space_exact_terms_equal_double_backward(name):
    prob = _shared(name)
    terms = curvature.difference_terms(prob, method="exact", progress=False)
    eye = torch.eye(prob.num_params, dtype=torch.float64)
    _assert_terms(terms, _brute_force_terms(name, eye))
    assert any(
        "'hvp' route" in note and "agreeing with double backward" in note for note in terms.notes
    )


def test_full_space_exact_terms_by_double_backward_alone():
    prob = _shared("functional-group-norm")
    terms = curvature.difference_terms(prob, method="exact", route="backward", progress=False)
    eye = torch.eye(prob.num_params, dtype=torch.float64)
    _assert_terms(terms, _brute_force_terms("functional-group-norm", eye))
    assert any("'backward' route" in note for note in terms.notes)
    with pytest.raises(ValueError, match="route"):
        curvature.difference_terms(prob, method="exact", route="forward", progress=False)


@pytest.mark.parametrize("name", NETS)
def test_stochastic_full_space_terms_are_the_estimator_of_the_true_hessians(name):
    """With s + m = 12 ≤ 16 columns a network that is not a chain gets forward mode as its
    candidate. The estimate must be exactly the probe-pair estimator applied to the true WᵀM_kW
    (same Q and probes), and within a few standard errors of the exact Tr M_k²."""
    prob = _shared(name)
    probes, deflate, seed = 8, 4, 3
    terms = curvature.difference_terms(
        prob, method="hutchinson", probes=probes, deflate=deflate, seed=seed, progress=False
    )
    V = curvature.rademacher(prob, probes, seed)
    Q = curvature.deflation_basis(prob, deflate, seed)
    W = torch.cat([Q, V - Q @ (Q.T @ V)], dim=1)
    expected = _brute_force_terms(name, W)
    estimate, stderr = curvature.probe_pair_frobenius(expected["M"], deflate)
    exact = _brute_force_terms(name, torch.eye(prob.num_params, dtype=torch.float64))
    np.testing.assert_allclose(terms.gap, exact["gap"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(terms.grad_sq, exact["grad_sq"], rtol=1e-9, atol=1e-12)
    scale = np.abs(estimate.numpy()).max()
    np.testing.assert_allclose(terms.trace_sq, estimate.numpy(), rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(terms.trace_sq_stderr, stderr.numpy(), rtol=1e-7, atol=1e-9 * scale)
    if any("exact from BackPACK" in note for note in terms.notes):
        np.testing.assert_allclose(terms.trace, exact["trace"], rtol=1e-9)
    else:  # Tr QᵀM_kQ + Hutchinson on the deflated probes
        M = expected["M"]
        trace = M[:, :deflate, :deflate].diagonal(dim1=1, dim2=2).sum(1)
        trace = trace + M[:, deflate:, deflate:].diagonal(dim1=1, dim2=2).mean(1)
        np.testing.assert_allclose(terms.trace, trace.numpy(), rtol=1e-9, atol=1e-9 * scale)
    z = np.abs(terms.trace_sq - exact["trace_sq"]) / np.maximum(terms.trace_sq_stderr, 1e-300)
    assert np.median(z) < 3, z


# -- notes, fallbacks, proofs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NETS)
def test_notes_say_which_route_ran_and_record_a_fallback(name):
    prob = _problem(name)
    terms = curvature.difference_terms(prob, _basis(prob, 4), progress=False)
    (note,) = [note for note in terms.notes if note.startswith("per-sample PᵀH_iP")]
    if chain.support(prob)[0]:
        assert "'chain' route" in note and "agreeing with double backward" in note
    elif name in BROKEN:
        assert note.startswith("per-sample PᵀH_iP by the 'hvp' route")
        assert "the 'forward' route" in note and "disagreed with double backward" in note
        assert "used d per-sample HVPs" in note
    else:
        assert "'forward' route" in note and "agreeing with double backward" in note
        assert "disagreed" not in note


def test_proofs_hold_in_float32_without_false_alarms():
    for name in NETS:
        prob = _problem(name, torch.float32)
        route, why = curvature.proven_route(prob, 4)
        expected = curvature.projected_route(prob, 4)[0]
        assert route == ("hvp" if name in BROKEN else expected), (name, why)
        proof = curvature.prove_route(prob, route)
        assert proof.holds and proof.error < 1e-5, proof


def test_a_wrong_hvp_route_falls_back_to_double_backward(monkeypatch):
    """Where even the per-sample HVPs disagree with double backward (made wrong here), double
    backward computes everything — difference terms, per-sample Hessians, spectral norms — and
    the notes (or a warning) say so."""
    hvp_route = routes.PROJECTED["hvp"]

    def wrong(*args):
        losses, G, B = hvp_route(*args)
        return losses, G, B * 1.001

    monkeypatch.setitem(routes.PROJECTED, "hvp", wrong)
    name = "functional-layer-norm"
    prob = _problem(name)
    sub = _basis(prob, 20)
    terms = curvature.difference_terms(prob, sub, progress=False)
    _assert_terms(terms, _brute_force_terms(name, sub.basis))
    (note,) = [note for note in terms.notes if note.startswith("per-sample PᵀH_iP")]
    assert note.startswith("per-sample PᵀH_iP by the 'backward' route")
    assert "the 'hvp' route" in note and "disagreed" in note and "plain double backward" in note
    small = _basis(prob, 4)  # forward mode (wrong here) → HVPs (made wrong) → double backward
    terms = curvature.difference_terms(prob, small, progress=False)
    _assert_terms(terms, _brute_force_terms(name, small.basis))
    assert any("'forward' route" in n and "'hvp' route" in n for n in terms.notes)
    with pytest.warns(UserWarning, match="double backward"):
        hessians = hessian.per_sample_hessians(prob, [0, 3])
    expected = _reference(name)[2]
    assert (hessians - expected[[0, 3]]).abs().max() <= 1e-10 * expected.abs().max()
    with pytest.warns(UserWarning, match="double backward"):
        norms = hessian.per_sample_spectral_norms(prob, tol=1e-10)
    exact = torch.linalg.eigvalsh(expected).abs().amax(1).numpy()
    np.testing.assert_allclose(norms.values, exact, rtol=1e-8)


class _Cube(torch.autograd.Function):
    """x³/3 with a plain backward (no ``setup_context``, no jvp rule): torch.func cannot
    transform it, torch.autograd can (twice: its backward is made of differentiable ops)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3 / 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x * x


class _WithCube(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(6, WIDTH), nn.Linear(WIDTH, 3)

    def forward(self, x):
        return self.out(_Cube.apply(self.inp(x)))


def test_a_network_no_torch_func_route_can_run_is_computed_by_double_backward():
    torch.manual_seed(0)
    X = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    prob = Problem(_WithCube().double().eval(), X, torch.arange(5) % 3, device="cpu")
    sub = _basis(prob, 3)
    for subspace, P in ((sub, sub.basis), (None, torch.eye(prob.num_params, dtype=torch.float64))):
        terms = curvature.difference_terms(prob, subspace, progress=False)
        _assert_terms(terms, _brute_force_terms(prob, P))
        note = next(n for n in terms.notes if "route" in n)
        assert "'backward' route" in note and "fails on this network" in note

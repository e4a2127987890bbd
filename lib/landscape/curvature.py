"""Exact curvature at w*: the difference terms a_k, ‖c_k‖², Tr M_k, Tr M_k² for every k at once.

With per-sample loss l_i, gradient g_i and Hessian H_i at w*, and a basis P (N, d) (P = I in the
full space),

    a_k = (l_k − L_{k−1}) / k,   c_k = Pᵀ(g_k − ḡ_{k−1}) / k,   M_k = Pᵀ(H_k − H̄_{k−1})P / k,

where ḡ_{k−1}, H̄_{k−1} are prefix means. Every term for every k follows from per-sample quantities
streamed in chunks with running sums (never a K×K Gram matrix, never all K Hessians in memory).
Routes:

* ``"subspace"`` — exact for any N: the projected derivatives Pᵀg_i and PᵀH_iP (d×d) of every
  sample from ``projected_derivatives``, which picks the fastest route the network allows (forward
  over reverse along a chain of layers, ``chain``; else forward mode or d per-sample HVPs).
* ``"exact"`` — the full space with P = I: per-sample Hessians H_i from per-sample HVPs, chunked;
  fine up to N of a few thousand.
* ``"hutchinson"`` — the full space for large N: projected per-sample Hessians on s top Hessian
  directions (a range sketch) and m Rademacher probes shared across all k give Tr M_k² = ‖M_k‖_F²,
  exactly on the directions and by probe pairs on the rest (``probe_pair_frobenius``), with a
  standard error;
  Tr M_k is exact from BackPACK's per-sample Hessian diagonal where BackPACK supports the network,
  else estimated from the same probes.

Per-sample gradients and Hessian traces are also available on their own (BackPACK ``BatchGrad`` /
``BatchDiagHessian``, with torch.func fallbacks that say they were used). Closed forms of Δ_k from
these terms are ``DifferenceTerms.predict``; bounds and rate fits live in ``theory``.

No route is trusted blindly: nested torch.func differentiation (``jacfwd(jacfwd)``,
``torch.func.hessian``) is wrong through some normalisation layers in torch 2.14 (InstanceNorm,
``F.layer_norm`` in a custom forward, ``nn.LayerNorm`` outside a chain), and which networks are
affected cannot be read off their modules. So a route is used on a network only once it has been
proven there (``proven_route``): two samples' losses, projected gradients and projected Hessians in
random directions from the route against plain double backward (``hessian.per_sample_hvps_backward``,
torch.autograd only), once per Problem and route. Where they disagree it falls back — chain or
forward mode → per-sample HVPs → double backward — and ``.notes`` says which route ran, on what
evidence, and any fallback.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import grad, jacfwd, vmap

from . import chain, theory
from .checks import check_choice, check_int, check_positive
from .directions import Subspace, check_subspace
from .problem import Problem

_METHODS = ("auto", "exact", "hutchinson", "subspace")
_FORMS = ("complete", "paper")
_BACKENDS = ("auto", "backpack", "torch.func")

#: ``method="auto"`` materialises per-sample Hessians in the full space up to this many parameters.
EXACT_MAX_PARAMS = 5_000

#: ``projected_derivatives`` on a network that is not a chain of known layers (``chain.support``):
#: up to this dimension in forward mode (``jacfwd(jacfwd)``), above it from d per-sample HVPs.
FORWARD_MAX_DIM = 16

#: ``projected_derivatives`` takes the chain route (``chain.chain_derivatives``) up to this
#: dimension where the network allows it: no limit, since it beat per-sample HVPs at every d
#: measured (one CPU thread, all samples): digits MLP 2×32 by 32×, 42×, 20×, 9× at d = 8, 32, 128,
#: 512; mnist1d MLP 2×32 by 23×, 21×, 10× and mnist1d CNN 2×16 by 1.8×, 1.8×, 1.5× at d = 8, 32, 128
#: (and jacfwd(jacfwd) by 5–8× at d = 8). Memory is bounded by chunking samples.
CHAIN_MAX_DIM: int | float = float("inf")

_ROUTES = ("auto", "chain", "forward", "hvp", "backward")


@dataclass(frozen=True, eq=False)
class DifferenceTerms:
    """The second-order terms of d_k = L_k − L_{k−1} at w*, for k = 2..K.

    Attributes:
        k: sample counts 2..K.
        gap: a_k = L_k(w*) − L_{k−1}(w*).
        grad_sq: ‖c_k‖², the squared norm of the projected gradient difference.
        trace: Tr M_k, the trace of the projected Hessian difference.
        trace_sq: Tr M_k² = ‖M_k‖_F².
        method: the route that computed them ("exact", "subspace", "hutchinson").
        dim: d, the dimension of the space (N in the full space).
        trace_stderr, trace_sq_stderr: standard errors of stochastic terms (zeros when exact).
        probes: Hutchinson probes used (0 for exact routes).
        max_loss, max_grad_norm, max_hessian_norm: M_ℓ = max l_i, M_g = max ‖Pᵀg_i‖ and
            M_H = max ‖PᵀH_iP‖₂ over the samples (None where not computed: M_H in large full
            spaces — use ``hessian.per_sample_spectral_norms``).
        notes: what was chosen and why (auto choices, fallbacks).
    """

    k: np.ndarray
    gap: np.ndarray
    grad_sq: np.ndarray
    trace: np.ndarray
    trace_sq: np.ndarray
    method: str
    dim: int
    trace_stderr: np.ndarray
    trace_sq_stderr: np.ndarray
    probes: int = 0
    max_loss: float | None = None
    max_grad_norm: float | None = None
    max_hessian_norm: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def components(self, sigma: float) -> dict[str, np.ndarray]:
        """The five terms whose sum is the complete closed form at ``sigma``.

        (a + σ²/2·Tr M)² + σ²‖c‖² + σ⁴/2·Tr M² expands into a², a·σ²·Tr M (the only term that can
        be negative), σ²‖c‖², σ⁴/4·Tr²M and σ⁴/2·Tr M²; the paper keeps only the last two.
        """
        s2 = check_positive("sigma", sigma) ** 2
        return {
            "gap": self.gap**2,
            "gap_x_trace": self.gap * s2 * self.trace,
            "grad": s2 * self.grad_sq,
            "trace_squared": s2**2 / 4 * self.trace**2,
            "trace_of_square": s2**2 / 2 * self.trace_sq,
        }

    def predict(self, sigma: float, form: str = "complete") -> np.ndarray:
        """Δ_k from the quadratic model d ≈ a + cᵀz + ½zᵀMz, z ~ N(0, σ²I_d).

        ``"complete"``: E d² = (a_k + σ²/2·Tr M_k)² + σ²‖c_k‖² + σ⁴/2·Tr M_k², exact for a
        quadratic loss. ``"paper"``: σ⁴/4·(Tr²M_k + 2 Tr M_k²), the main paper's §4.2 form, which
        drops a_k and c_k (they are not zero at a fixed w*).
        """
        check_choice("form", form, _FORMS)
        if form == "paper":
            return theory.paper_form(self.trace, self.trace_sq, sigma)
        return theory.complete_form(self.gap, self.grad_sq, self.trace, self.trace_sq, sigma)

    def predict_stderr(self, sigma: float, form: str = "complete") -> np.ndarray:
        """Standard error of ``predict`` from the stochastic terms (zero for exact routes).

        First-order propagation: ∂/∂Tr M = σ²(a + σ²/2 Tr M) (complete) or σ⁴/2 Tr M (paper),
        ∂/∂Tr M² = σ⁴/2; the two estimates are treated as independent.
        """
        check_choice("form", form, _FORMS)
        s2 = check_positive("sigma", sigma) ** 2
        if form == "complete":
            d_trace = s2 * (self.gap + s2 / 2 * self.trace)
        else:
            d_trace = s2**2 / 2 * self.trace
        d_trace_sq = s2**2 / 2
        return np.sqrt(
            (d_trace * self.trace_stderr) ** 2 + (d_trace_sq * self.trace_sq_stderr) ** 2
        )


# -- per-sample first and second derivatives -----------------------------------------------------


def per_sample_grads_and_hvps(
    prob: Problem, X: Tensor, y: Tensor, V: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Losses (n,), gradients (n, N) and Hessian-vector products (n, m, N) for samples (X, y).

    ``V`` (N, m) holds the m vectors; None skips the HVPs. Each HVP is forward-over-reverse
    (``jvp`` of ``grad``) on one sample's loss, vectorised over samples and vectors with vmap.
    """
    loss = prob.sample_loss
    gradient = grad(loss)
    w = prob.center
    losses = vmap(loss, in_dims=(None, 0, 0))(w, X, y)
    grads = vmap(gradient, in_dims=(None, 0, 0))(w, X, y)
    if V is None:
        return losses, grads, None
    hvps = vmap(vmap(prob.sample_hvp, in_dims=(None, None, 1)), in_dims=(0, 0, None))(X, y, V)
    return losses, grads, hvps


def projected_route(prob: Problem, dim: int) -> tuple[str, str]:
    """The route ``projected_derivatives`` tries first for a d-dimensional basis, and a line saying
    why: ``"chain"`` where the network is a chain of known layers (``chain.support``) and
    d ≤ CHAIN_MAX_DIM; otherwise ``"forward"`` for d ≤ FORWARD_MAX_DIM and ``"hvp"`` above.

    Only a candidate: ``proven_route`` checks it on the network before anything uses it.
    """
    supported, why = chain.support(prob)
    if supported and dim <= CHAIN_MAX_DIM:
        return "chain", f"forward over reverse along the chain ({why})"
    because = f"d={dim} > CHAIN_MAX_DIM" if supported else f"not a chain: {why}"
    if dim <= FORWARD_MAX_DIM:
        return "forward", f"jacfwd(jacfwd) of l_i(w* + Pz) ({because}; d ≤ {FORWARD_MAX_DIM})"
    return "hvp", f"d per-sample HVPs ({because}; d > {FORWARD_MAX_DIM})"


#: Where a route falls back when it disagrees with plain double backward on a network.
_FALLBACK = {"chain": "hvp", "forward": "hvp", "hvp": "backward"}
_FALLBACK_WHY = {
    "hvp": "d per-sample HVPs (jvp of grad)",
    "backward": "plain double backward, one sample at a time (torch.autograd only; slow)",
}


def proof_tolerance(dtype: torch.dtype) -> float:
    """The relative difference up to which a route counts as agreeing with double backward: √eps
    of the dtype (1.5e-8 in float64, 3.5e-4 in float32).

    Correct routes differ from double backward by rounding: at most 2e-15 in float64 on the
    networks of tests/test_nested_ad.py, and 1e-6 in float32 on the largest-loss samples of
    digits MLPs trained to 99.5 % accuracy (up to 1.4e-3 on pairs of confidently classified
    samples, whose Hessians are mostly rounding — hence ``_proof_samples``). torch 2.14's
    nested-derivative errors are 1e-2 to 1e1.
    """
    return float(torch.finfo(dtype).eps) ** 0.5


class RouteProof(NamedTuple):
    """A route checked against plain double backward on a network (``prove_route``).

    Attributes:
        route: the route checked.
        error: the largest relative difference of losses, gradients and projected Hessians.
        sample: the sample (an index into the Problem) where it occurred.
        samples: the samples checked.
        tolerance: ``proof_tolerance`` of the Problem's dtype.
        failure: the error the route raised on this network ("" if it ran; ``error`` is then inf),
            e.g. an operation without a forward-mode or vmap rule.
    """

    route: str
    error: float
    sample: int
    samples: tuple[int, ...]
    tolerance: float
    failure: str = ""

    @property
    def holds(self) -> bool:
        return self.error <= self.tolerance


#: Proofs already made, per Problem (its network, samples and centre are fixed) and route.
_PROOFS: weakref.WeakKeyDictionary[Problem, dict[str, RouteProof]] = weakref.WeakKeyDictionary()


def prove_route(prob: Problem, route: str, *, samples: int = 2, probes: int = 4) -> RouteProof:
    """Check a route of ``projected_derivatives`` on this network against plain double backward.

    On the ``samples`` samples of largest loss at w* (``_proof_samples``) and ``probes`` Gaussian
    directions V (N, probes) over all parameters, the route's l_i, Vᵀg_i and VᵀH_iV are compared
    with those of ``hessian.per_sample_hvps_backward`` (``route_disagreement``). Every route is
    bilinear in the directions — it computes PᵀH̃_iP for some H̃_i that does not depend on P — and
    VᵀΔV ≠ 0 almost surely for a random V whenever the symmetric Δ = H̃_i − H_i is not zero, so
    agreement here proves the route for every basis P on this network (up to the sampled
    samples). The result is kept per Problem and route: the check costs two samples' route and
    2·(1 + probes) reverse passes, once.
    """
    check_choice("route", route, _ROUTES)
    key = f"{route}/{samples}/{probes}"
    proofs = _PROOFS.setdefault(prob, {})
    if key not in proofs:
        index = _proof_samples(prob, check_int("samples", samples, low=1))
        generator = torch.Generator().manual_seed(prob.num_params)
        V = torch.randn(prob.num_params, probes, generator=generator, dtype=torch.float64)
        V = V.to(device=prob.device, dtype=prob.dtype)
        failure = ""
        try:
            error, sample = route_disagreement(prob, route, V, index)
        except (RuntimeError, NotImplementedError) as exc:  # not a ValueError: a user's mistake
            error, sample = float("inf"), int(index[0])
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        shown = tuple(int(i) for i in index)
        proofs[key] = RouteProof(route, error, sample, shown, proof_tolerance(prob.dtype), failure)
    return proofs[key]


def proven_route(prob: Problem, dim: int, route: str = "auto") -> tuple[str, str]:
    """The route that computes projected derivatives in dimension d on this network, and a line
    saying which, why, and on what evidence.

    The candidate (``projected_route`` for ``"auto"``, else ``route``) is checked against plain
    double backward (``prove_route``). If it agrees within ``proof_tolerance`` it is taken;
    otherwise (or where it cannot run on the network at all) the next route is tried — chain or forward mode → per-sample HVPs → double
    backward (the reference itself) — and the line says which route disagreed, on which sample
    and by how much. Nested torch.func differentiation is wrong through some layers in torch 2.14
    (InstanceNorm, ``F.layer_norm`` in a custom forward, ``nn.LayerNorm``), and no list of layer
    types can say in advance which networks are affected.

    Example:
        >>> proven_route(prob, 4)                                     # doctest: +SKIP
        ('hvp', "the 'forward' route (...) disagreed with double backward on sample 3 by 1.8e-01
        (relative; tolerance 1e-08); used d per-sample HVPs (jvp of grad), agreeing with double
        backward on samples 3, 0 (relative difference 4.1e-16)")
    """
    check_choice("route", route, _ROUTES)
    if route == "auto":
        candidate, why = projected_route(prob, dim)
    else:
        candidate, why = route, _FALLBACK_WHY.get(route, "as asked")
    failures = []
    while candidate != "backward":
        proof = prove_route(prob, candidate)
        if proof.holds:
            shown = ", ".join(str(i) for i in proof.samples)
            why = (
                f"{why}, agreeing with double backward on samples {shown} "
                f"(relative difference {proof.error:.1e})"
            )
            break
        if proof.failure:
            failures.append(
                f"the '{candidate}' route ({why}) fails on this network ({proof.failure})"
            )
        else:
            failures.append(
                f"the '{candidate}' route ({why}) disagreed with double backward on sample "
                f"{proof.sample} by {proof.error:.1e} (relative; tolerance {proof.tolerance:.0e})"
            )
        candidate = _FALLBACK[candidate]
        why = _FALLBACK_WHY[candidate]
    return candidate, "; ".join([*failures, f"used {why}" if failures else why])


def route_disagreement(prob: Problem, route: str, P: Tensor, index: Tensor) -> tuple[float, int]:
    """The largest relative difference between a route's projected derivatives and plain double
    backward on the samples ``index``, and the sample (an index into the Problem) where it occurs.

    Compares the losses l_i, Pᵀg_i and PᵀH_iP from ``projected_derivatives(..., route=route)`` with
    those of ``hessian.per_sample_hvps_backward`` (torch.autograd only; d reverse passes per
    sample, so keep d small). Each difference is relative to the largest reference value of its
    kind over the samples.
    """
    from .hessian import per_sample_hvps_backward

    index = torch.as_tensor(index).reshape(-1)
    X, y = prob.X[index], prob.y[index]
    losses, G, B = projected_derivatives(prob, X, y, P, route=route)
    ref_losses, ref_grads, HV = per_sample_hvps_backward(prob, X, y, P)
    pairs = [(losses, ref_losses), (G, ref_grads @ P), (B, _symmetric(HV @ P))]
    error = torch.zeros(len(index), dtype=torch.float64, device=P.device)
    for value, reference in pairs:
        value = value.double().reshape(len(index), -1)
        reference = reference.double().reshape(len(index), -1)
        scale = reference.norm(dim=1).max().clamp_min(torch.finfo(prob.dtype).tiny)
        error = torch.maximum(error, (value - reference).norm(dim=1) / scale)
    error = error.nan_to_num(float("inf"))
    worst = int(error.argmax())
    return float(error[worst]), int(index[worst])


def proven_hvps(prob: Problem, route: str = "auto"):
    """The per-sample HVP primitive for this network and a line saying which and why.

    ``per_sample_grads_and_hvps`` (``Problem.sample_hvp``, jvp of grad, vmapped) where it agrees
    with plain double backward (``prove_route`` of the ``"hvp"`` route), else
    ``hessian.per_sample_hvps_backward``. Both map (prob, X, y, V) to (losses (n,), gradients
    (n, N), H_i V (n, m, N)). ``route``: ``"auto"`` or ``"hvp"`` (proven), ``"backward"``.
    """
    check_choice("route", route, ("auto", "hvp", "backward"))
    chosen, why = proven_route(prob, prob.num_params, "hvp" if route == "auto" else route)
    if chosen == "hvp":
        return per_sample_grads_and_hvps, why
    from .hessian import per_sample_hvps_backward

    return per_sample_hvps_backward, why


def _proof_samples(prob: Problem, count: int) -> Tensor:
    """The ``count`` samples of largest loss at w*, largest first: their curvature is the largest,
    so a wrong route shows there far above rounding (a confidently classified sample's Hessian is
    mostly rounding in float32)."""
    losses = prob.per_sample_losses(prob.center).nan_to_num(float("inf"))
    return losses.topk(min(count, prob.num_samples)).indices


def projected_derivatives(
    prob: Problem, X: Tensor, y: Tensor, P: Tensor, *, route: str = "auto"
) -> tuple[Tensor, Tensor, Tensor]:
    """Losses (n,), projected gradients Pᵀg_i (n, d) and Hessians PᵀH_iP (n, d, d) of samples.

    The derivatives of φ_i(z) = l_i(w* + Pz) at z = 0 for any basis P (N, d), orthonormal or
    not; the Hessians are exactly symmetric. Routes:

    * ``"chain"`` — forward over reverse along a chain of layers (``chain.chain_derivatives``):
      about 4d layer products and d² feature dot products per sample; no per-sample N-vector.
    * ``"forward"`` — ``jacfwd(jacfwd)`` of φ_i, batched over the samples: about d(d+1) forward
      passes, for any network (small d only).
    * ``"hvp"`` — d per-sample HVPs (``per_sample_grads_and_hvps``), then ``hvps @ P``; for any
      network and any d.
    * ``"backward"`` — d per-sample HVPs by plain double backward, one sample at a time
      (``hessian.per_sample_hvps_backward``): the reference, slow.
    * ``"auto"`` — the route ``proven_route`` proves for this network (the first three can be
      wrong through some layers in torch 2.14; an explicit route is run unchecked).

    Samples are processed in chunks that keep each route's working memory within
    ``prob.max_memory``; the outputs (n·d² numbers) are the caller's.
    """
    check_choice("route", route, _ROUTES)
    dim = P.shape[1]
    if route == "auto":
        route = proven_route(prob, dim)[0]
    samples, columns = _projected_chunks(prob, route, dim)
    parts = [
        _PROJECTED[route](prob, X[i : i + samples], y[i : i + samples], P, columns)
        for i in range(0, len(X), samples)
    ]
    return tuple(torch.cat(t) for t in zip(*parts)) if len(parts) > 1 else parts[0]


def _projected_chunks(prob: Problem, route: str, dim: int, block: int = 0) -> tuple[int, int]:
    """(samples, HVP columns) per chunk of ``projected_derivatives``'s route within max_memory.

    Per sample, the chain route keeps about 3d + 3 activations (values, tangents, direction
    outputs, adjoints and their tangents), forward mode about 3d(d+1); both keep the d×d block
    (four copies). ``block`` is what the caller keeps per sample besides, in floats.
    """
    if route in ("hvp", "backward"):
        return _hvp_chunks(prob, dim, block=dim * dim + block)
    copies = 3 * dim + 3 if route == "chain" else 3 * dim * (dim + 1)
    per_sample = copies * prob._bytes_per_sample + 4 * (dim * dim + block) * 8
    return max(1, min(prob.num_samples, prob.max_memory // per_sample)), dim


def _forward_route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, _columns: int):
    zero = torch.zeros(P.shape[1], dtype=P.dtype, device=P.device)

    def phi(z: Tensor) -> Tensor:
        return prob.sample_losses(prob.center + P @ z, X, y)

    return phi(zero), jacfwd(phi)(zero), _symmetric(jacfwd(jacfwd(phi))(zero))


def _hvp_route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, columns: int):
    blocks = []
    for j in range(0, P.shape[1], columns):
        losses, grads, hvps = per_sample_grads_and_hvps(prob, X, y, P[:, j : j + columns])
        blocks.append(hvps @ P)  # rows p_jᵀ H_i P
    return losses, grads @ P, _symmetric(torch.cat(blocks, dim=1))


def _backward_route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, columns: int):
    from .hessian import per_sample_hvps_backward

    blocks = []
    for j in range(0, P.shape[1], columns):
        losses, grads, hvps = per_sample_hvps_backward(prob, X, y, P[:, j : j + columns])
        blocks.append(hvps @ P)
    return losses, grads @ P, _symmetric(torch.cat(blocks, dim=1))


def _chain_route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, _columns: int):
    return chain.chain_derivatives(prob, X, y, P)


#: (B + Bᵀ)/2 for a batch of square matrices (two products give PᵀH_iP only to rounding).
_symmetric = chain._symmetric


_PROJECTED = {
    "chain": _chain_route,
    "forward": _forward_route,
    "hvp": _hvp_route,
    "backward": _backward_route,
}


def per_sample_gradients(prob: Problem, backend: str = "auto") -> tuple[Tensor, str]:
    """Per-sample gradients g_i = ∇l_i(w*) as a (K, N) tensor, and the backend that made them.

    ``"backpack"``: BackPACK's ``BatchGrad`` on an extended copy of the network (a summed loss, so
    each row is one sample's own gradient). ``"torch.func"``: ``vmap(grad)``. ``"auto"`` tries
    BackPACK and falls back to torch.func with a warning where BackPACK lacks a layer.
    """
    check_choice("backend", backend, _BACKENDS)
    return _with_fallback(prob, backend, "BatchGrad", _torch_func_gradients)


def per_sample_hessian_traces(prob: Problem, backend: str = "auto") -> tuple[Tensor, str]:
    """Exact per-sample Hessian traces Tr H_i(w*) as a (K,) tensor, and the backend used.

    ``"backpack"``: the exact per-sample Hessian diagonal from ``BatchDiagHessian``, summed.
    ``"torch.func"``: Σ_j e_jᵀ H_i e_j from N per-sample HVPs per sample (exact, costly for large N).
    ``"auto"`` tries BackPACK first and warns when it falls back.
    """
    check_choice("backend", backend, _BACKENDS)
    return _with_fallback(prob, backend, "BatchDiagHessian", _torch_func_traces)


def _with_fallback(prob: Problem, backend: str, extension: str, fallback) -> tuple[Tensor, str]:
    if backend in ("auto", "backpack"):
        try:
            return _backpack_per_sample(prob, extension), "backpack"
        except _BACKPACK_ERRORS as error:
            if backend == "backpack":
                raise ValueError(f"BackPACK cannot compute {extension} here: {error}") from error
            warnings.warn(
                f"BackPACK {extension} does not support this network ({error}); "
                "used the torch.func route instead.",
                stacklevel=3,
            )
    return fallback(prob), "torch.func"


#: What BackPACK raises for a network it cannot handle (AssertionError: a layer it knows fed by one
#: it does not, e.g. a residual block's own forward, for second-order extensions).
_BACKPACK_ERRORS = (
    NotImplementedError,
    RuntimeError,
    ValueError,
    AttributeError,
    KeyError,
    AssertionError,
)
_BACKPACK_LOSSES = {"cross_entropy": nn.CrossEntropyLoss, "mse": nn.MSELoss}
_BACKPACK_FIELDS = {"BatchGrad": "grad_batch", "BatchDiagHessian": "diag_h_batch"}


def _backpack_per_sample(prob: Problem, extension: str) -> Tensor:
    """Run a BackPACK per-sample extension on an extended *copy* of the network, in chunks.

    BackPACK's hooks break torch.func transforms, so the Problem's own model is never extended.
    """
    import backpack
    from backpack import extend
    from backpack.extensions import BatchDiagHessian, BatchGrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BackPACK's use of torch.jit.script is deprecated
        model = extend(copy.deepcopy(prob.model))
    for p in model.parameters():
        p.requires_grad_(True)
    lossfunc = extend(_BACKPACK_LOSSES[prob.loss_name](reduction="sum"))
    ext = {"BatchGrad": BatchGrad, "BatchDiagHessian": BatchDiagHessian}[extension]()
    attr = _BACKPACK_FIELDS[extension]
    _, chunk = prob.chunk_sizes(1)
    rows = []
    for k0 in range(0, prob.num_samples, chunk):
        X, y = prob.X[k0 : k0 + chunk], prob.y[k0 : k0 + chunk]
        model.zero_grad()
        output = model(X)
        target = y.reshape(output.shape) if prob.loss_name == "mse" else y
        with backpack.backpack(ext), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BackPACK's full-backward-hook notice
            lossfunc(output, target).backward()
        pieces = [getattr(p, attr).reshape(len(X), -1) for p in model.parameters()]
        rows.append(torch.cat(pieces, dim=1).detach())
    values = torch.cat(rows)
    if extension == "BatchDiagHessian":
        return values.sum(1)
    return values


def _torch_func_gradients(prob: Problem) -> Tensor:
    _, chunk = prob.chunk_sizes(1)
    return torch.cat(
        [
            per_sample_grads_and_hvps(prob, prob.X[i : i + chunk], prob.y[i : i + chunk], None)[1]
            for i in range(0, prob.num_samples, chunk)
        ]
    )


def _torch_func_traces(prob: Problem) -> Tensor:
    products, why = proven_hvps(prob)
    if products is not per_sample_grads_and_hvps:
        warnings.warn(f"per-sample Hessian traces by {why}.", stacklevel=4)
    traces = torch.zeros(prob.num_samples, dtype=prob.dtype, device=prob.device)
    eye = torch.eye(prob.num_params, dtype=prob.dtype, device=prob.device)
    samples, columns = _hvp_chunks(prob, prob.num_params)
    for i in range(0, prob.num_samples, samples):
        X, y = prob.X[i : i + samples], prob.y[i : i + samples]
        for j in range(0, prob.num_params, columns):
            E = eye[:, j : j + columns]
            hvps = products(prob, X, y, E)[2]
            traces[i : i + len(X)] += torch.einsum("smn,nm->s", hvps, E)
    return traces


def _hvp_chunks(prob: Problem, vectors: int, block: int = 0) -> tuple[int, int]:
    """(samples, vectors) per chunk of per-sample HVPs within the Problem's memory budget.

    One sample × vector unit holds a forward-over-reverse pass (activations and an N-vector);
    ``block`` is the number of floats a sample keeps besides (its d×d projected Hessian, four
    copies while the running differences are formed).
    """
    itemsize = prob.dtype.itemsize
    per_unit = 4 * prob._bytes_per_sample + 4 * prob.num_params * itemsize
    units = max(1, prob.max_memory // per_unit)
    columns = min(vectors, units)
    per_sample = columns * per_unit + 4 * block * 8
    return max(1, min(prob.num_samples, prob.max_memory // per_sample)), columns


# -- the difference terms for every k ------------------------------------------------------------


class _PrefixTerms:
    """Running sums over samples that give a_k, ‖c_k‖², Tr M_k and Tr M_k² for every k.

    For a chunk of samples j with per-sample value l_j, projected gradient G_j and a matrix-like
    block B_j (PᵀH_jP, or H_j V for probes), the prefix sums *before* j are the running total plus
    an exclusive cumulative sum inside the chunk, so each difference is formed directly
    (no cancellation from expanding squares).
    """

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, Tensor] = {}
        self.out: dict[str, list[Tensor]] = {}

    def differences(self, **values: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """(x_k − mean_{i<k} x_i) / k for each named per-sample value, and the k of each row."""
        n = len(next(iter(values.values())))
        k = torch.arange(self.count + 1, self.count + n + 1, dtype=torch.float64)
        diffs = {}
        for name, x in values.items():
            # chunk arithmetic in the problem's dtype, running totals in float64. In place on
            # our own temporaries (never on x): with full-space Hessian blocks (N×N per sample)
            # every fresh temporary costs more than its arithmetic (benchmarks/bench_exact_full)
            before = x.cumsum(0).sub_(x)
            total = x.sum(0, dtype=torch.float64)
            if name in self.sums:
                before.add_(self.sums[name].to(x.dtype))
                self.sums[name].add_(total)
            else:
                self.sums[name] = total
            shape = (n,) + (1,) * (x.ndim - 1)
            previous = (k - 1).clamp_min(1).to(x.device, x.dtype).reshape(shape)
            # (x − before / previous) / k, element for element the same numbers
            before.div_(previous).neg_().add_(x).div_(k.to(x.device, x.dtype).reshape(shape))
            diffs[name] = before
        self.count += n
        return diffs, k

    def keep(self, k: Tensor, **terms: Tensor) -> None:
        mask = k >= 2
        for name, value in terms.items():
            self.out.setdefault(name, []).append(value[mask.to(value.device)].detach().cpu())

    def result(self, name: str) -> np.ndarray:
        return torch.cat(self.out[name]).to(torch.float64).numpy()


def difference_terms(
    prob: Problem,
    subspace: Subspace | None = None,
    method: str = "auto",
    *,
    probes: int = 64,
    deflate: int | None = None,
    seed: int = 0,
    route: str = "auto",
    progress: bool = True,
) -> DifferenceTerms:
    """a_k, ‖c_k‖², Tr M_k and Tr M_k² for every k = 2..K, exactly or with Hutchinson probes.

    Args:
        prob: the problem (network, ordered samples, centre w*).
        subspace: a basis P (any, orthonormal or not); None for the full space.
        method: ``"auto"`` picks ``"subspace"`` when a subspace is given, else ``"exact"`` for
            N ≤ EXACT_MAX_PARAMS and ``"hutchinson"`` above; the choice is in ``.notes``.
            ``"exact"`` with a subspace means the exact subspace route.
        probes: m, the Rademacher probes of ``"hutchinson"`` (shared across every k; at least 3).
        deflate: s, the directions that ``"hutchinson"`` deflates exactly: an orthonormal Q
            spanning about the top-s eigenspace of the Hessian of L_K (a randomized range sketch,
            2s full-data HVPs); None: min(probes, N // 4); 0: none (plain probe pairs).
        seed: seed of the probes.
        route: how per-sample second derivatives are computed (``projected_derivatives``):
            ``"auto"`` (the fastest route the network allows), ``"chain"``, ``"forward"``,
            ``"hvp"`` or ``"backward"``; the full-space exact route takes only ``"auto"``,
            ``"hvp"`` or ``"backward"``. Whatever is asked, the route is first proven on two
            samples against plain double backward and falls back where it disagrees
            (``proven_route``); ``.notes`` says which route ran and any fallback.

    ``"hutchinson"`` estimates Tr M_k² for every k from the projected per-sample Hessians WᵀH_iW,
    W = [Q, (I − QQᵀ)V] (s + m columns, ``projected_derivatives``): running sums give WᵀM_kW, and
    ``probe_pair_frobenius`` turns it into ‖QᵀM_kQ‖_F² (exact) + 2‖QᵀM_k(I − QQᵀ)‖_F² (mean over
    probes) + ‖(I − QQᵀ)M_k(I − QQᵀ)‖_F² (U-statistic over probe pairs), with a jackknife
    standard error. Per-sample Hessian differences of a trained classifier carry most of their
    mass in the top Hessian eigenspace, so deflating it cuts the standard error 3–9× at equal
    probes; against per-sample-HVP Hutchinson (mean ‖M_k v‖²) at m = 64 it is 3.7–19× faster
    with a 1.4–4.8× smaller error (digits and mnist1d MLPs, benchmarks/bench_hutchinson.py).
    Tr M_k is exact from BackPACK's per-sample Hessian diagonal where BackPACK supports the
    network, else Tr QᵀM_kQ plus Hutchinson on the deflated probes, with its standard error;
    ``.notes`` says which.
        progress: show a progress bar over chunks of samples.

    Cost: "subspace" K samples' projected derivatives (``projected_route``: about 4d layer
    products each on a chain of layers, else d(d+1) forward passes or d per-sample HVPs);
    "exact" K·N per-sample HVPs and one N×N running sum; "hutchinson" K samples' projected
    derivatives in s + m directions (as "subspace" with d = s + m) and (s+m)² running sums, one
    BackPACK pass for traces, and 2s full-data HVPs for Q.
    """
    check_choice("method", method, _METHODS)
    check_choice("route", route, _ROUTES)
    probes = check_int("probes", probes, low=3)
    if deflate is None:
        deflate = min(probes, prob.num_params // 4)
    deflate = check_int("deflate", deflate, low=0, high=prob.num_params - 1)
    subspace = check_subspace(prob, subspace)
    notes: list[str] = []
    if subspace is not None:
        if method == "hutchinson":
            raise ValueError(
                "method='hutchinson' is for the full space; in a subspace the exact route costs only "
                "d per-sample HVPs per sample. Use method='auto' or 'subspace'."
            )
        method = "subspace"
    elif method == "subspace":
        raise ValueError("method='subspace' needs a subspace; pass subspace=... or use 'auto'.")
    elif method == "auto":
        method = "exact" if prob.num_params <= EXACT_MAX_PARAMS else "hutchinson"
        notes.append(
            f"method='auto' chose '{method}' (N={prob.num_params}, exact up to {EXACT_MAX_PARAMS})."
        )
    if method == "hutchinson":
        return _probe_pair_terms(prob, probes, seed, deflate, route, progress, notes)
    if subspace is None and route not in ("auto", "hvp", "backward"):
        raise ValueError(
            f"route={route!r} is for subspaces and method='hutchinson'; the full-space exact "
            "route takes per-sample HVPs: use route='auto', 'hvp' or 'backward'."
        )
    return _exact_terms(prob, subspace, method, route, progress, notes)


def _exact_terms(
    prob: Problem,
    subspace: Subspace | None,
    method: str,
    route: str,
    progress: bool,
    notes: list[str],
) -> DifferenceTerms:
    P = (
        torch.eye(prob.num_params, dtype=prob.dtype, device=prob.device)
        if subspace is None
        else subspace.basis
    )
    dim = P.shape[1]
    if subspace is not None:
        projected, why = proven_route(prob, dim, route)
        notes.append(f"per-sample PᵀH_iP by the '{projected}' route: {why}.")
        samples, _ = _projected_chunks(prob, projected, dim)
    else:
        products, why = proven_hvps(prob, route)
        name = "hvp" if products is per_sample_grads_and_hvps else "backward"
        notes.append(f"per-sample Hessians H_i by the '{name}' route: {why}.")
        samples, columns = _hvp_chunks(prob, dim, block=dim * dim)
    prefix = _PrefixTerms()
    max_loss, max_grad, max_hess = -np.inf, 0.0, 0.0
    want_norms = dim <= 512
    bar = _bar(progress, prob.num_samples, f"per-sample curvature ({method}, d={dim})")
    for i in range(0, prob.num_samples, samples):
        X, y = prob.X[i : i + samples], prob.y[i : i + samples]
        if subspace is not None:  # exactly symmetric PᵀH_iP
            losses, G, B = projected_derivatives(prob, X, y, P, route=projected)
        else:
            blocks = []
            for j in range(0, dim, columns):
                losses, G, hvps = products(prob, X, y, P[:, j : j + columns])
                blocks.append(hvps)
            B = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        diffs, k = prefix.differences(loss=losses, grad=G, hess=B)
        M = diffs["hess"]
        trace = M.diagonal(dim1=1, dim2=2).sum(1)
        prefix.keep(
            k,
            gap=diffs["loss"],
            grad_sq=diffs["grad"].square().sum(1),
            trace=trace,
            trace_sq=M.square_().sum((1, 2)),  # M is our own temporary, not needed after
        )
        max_loss = max(max_loss, float(losses.max()))
        max_grad = max(max_grad, float(G.norm(dim=1).max()))
        if want_norms:
            max_hess = max(max_hess, float(torch.linalg.eigvalsh(B).abs().max()))
        bar.update(len(X))
    bar.close()
    if not want_norms:
        notes.append("M_H not computed for d > 512; use hessian.per_sample_spectral_norms.")
    zeros = np.zeros(prob.num_samples - 1)
    return DifferenceTerms(
        k=np.arange(2, prob.num_samples + 1),
        gap=prefix.result("gap"),
        grad_sq=prefix.result("grad_sq"),
        trace=prefix.result("trace"),
        trace_sq=prefix.result("trace_sq"),
        method=method,
        dim=dim,
        trace_stderr=zeros,
        trace_sq_stderr=zeros,
        max_loss=max_loss,
        max_grad_norm=max_grad,
        max_hessian_norm=max_hess if want_norms else None,
        notes=tuple(notes),
    )


def probe_pair_frobenius(M: Tensor, deflated: int = 0) -> tuple[Tensor, Tensor]:
    """An unbiased estimate of ‖A‖_F² = Tr A² from one projection WᵀAW, and its standard error.

    ``M`` (..., s+m, s+m) holds WᵀAW for a symmetric A and W = [Q, Ṽ]: Q (N, s), s = ``deflated``,
    orthonormal and fixed (independent of the probes), and Ṽ = (I − QQᵀ)V for m independent probes
    v_p with E v vᵀ = I (Rademacher or Gaussian). Since E (v_pᵀ B v_q)² = E v_qᵀB²v_q = Tr B² for
    p ≠ q and any symmetric B, with R = I − QQᵀ

        ‖A‖_F² = ‖QᵀAQ‖_F² + 2‖QᵀAR‖_F² + ‖RAR‖_F²
               ≈ ‖QᵀAQ‖_F² + 2/m Σ_p ‖QᵀAṽ_p‖² + 1/(m(m−1)) Σ_{p≠q} (ṽ_pᵀAṽ_q)²,

    exact in the first term and unbiased in the others (the last is a U-statistic over the probe
    pairs). With s = 0 it is the plain probe-pair estimator; s > 0 deflates as Hutch++ does (Meyer,
    Musco, Musco & Woodruff 2021), here with Q chosen in advance. For Gaussian probes and s = 0,
    Var = (8(m−2)/(m(m−1))) Tr A⁴ + (2/(m(m−1)))(2(Tr A²)² + 6 Tr A⁴): about 4× the variance of
    Hutchinson's ‖Av‖² at equal m, plus a floor of relative variance 4/m² whatever the rank.

    The standard error is the jackknife over probes: leaving probe p out gives the estimate
    θ₋ₚ (the pair term becomes (T − 2R_p)/((m−1)(m−2)) with T = Σ_{p≠q} and R_p = Σ_{q≠p}), and
    SE² = (m−1)/m Σ_p (θ₋ₚ − θ̄)². The pairs are dependent, so the usual Σ/#pairs variance would
    be far too small; the jackknife is conservative for U-statistics (Efron & Stein 1981) and
    covers at about the nominal rate from m ≈ 32 (tests/test_curvature_theory.py).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> A = torch.diag(torch.arange(1.0, 6.0))  # ‖A‖_F² = 55
        >>> V = 2.0 * torch.randint(0, 2, (5, 200), generator=g) - 1
        >>> est, se = probe_pair_frobenius(V.T @ A @ V)
        >>> round(float(est), 1), round(float(se), 1)
        (55.0, 0.8)
    """
    m = M.shape[-1] - deflated
    if m < 3:
        raise ValueError(f"probe_pair_frobenius needs at least 3 probes, got {m}.")
    pairs = M[..., deflated:, deflated:].square()
    pairs.diagonal(dim1=-2, dim2=-1).zero_()
    row = pairs.sum(-1)  # R_p
    total = row.sum(-1, keepdim=True)  # T
    estimate = total / (m * (m - 1))
    left_out = (total - 2 * row) / ((m - 1) * (m - 2))
    if deflated:
        exact = M[..., :deflated, :deflated].square().sum((-2, -1))[..., None]
        cross = M[..., :deflated, deflated:].square().sum(-2)  # ‖QᵀAṽ_p‖²
        cross_sum = cross.sum(-1, keepdim=True)
        estimate = estimate + exact + 2 * cross_sum / m
        left_out = left_out + exact + 2 * (cross_sum - cross) / (m - 1)
    spread = (left_out - left_out.mean(-1, keepdim=True)).square().sum(-1)
    return estimate[..., 0], ((m - 1) / m * spread).sqrt()


def _rademacher(prob: Problem, probes: int, seed: int) -> Tensor:
    """(N, probes) Rademacher probes from a CPU generator: the same numbers on every device."""
    generator = torch.Generator().manual_seed(int(seed))
    V = torch.randint(0, 2, (prob.num_params, probes), generator=generator, dtype=torch.float64)
    return (2 * V - 1).to(device=prob.device, dtype=prob.dtype)


def _exact_traces(prob: Problem, notes: list[str]) -> Tensor | None:
    """Per-sample Tr H_i from BackPACK where it supports the network (None otherwise, noted)."""
    try:
        traces, _ = per_sample_hessian_traces(prob, backend="backpack")
    except ValueError as error:
        notes.append(f"Tr M_k estimated from the probes: {error}")
        return None
    notes.append("Tr M_k exact from BackPACK BatchDiagHessian.")
    return traces


def _deflation_basis(prob: Problem, deflate: int, seed: int, notes: list[str]) -> Tensor:
    """Q (N, s) orthonormal spanning about the top-s eigenspace of H = ∇²L_K(w*): a randomized
    range sketch with two power steps, Q = orth(H orth(H Ω)) for Gaussian Ω (2s full-data HVPs;
    Halko, Martinsson & Tropp 2011). Ω comes from its own generator, so Q is independent of the
    probes. On the digits MLP it deflates almost as well as exact top eigenvectors (median
    relative SE 0.020 against 0.017 with s = m = 64) at a fifth of the cost and cannot fail to
    converge."""
    from .hessian import hvp

    generator = torch.Generator().manual_seed(int(seed) + 1_000_003)
    Q = torch.randn(prob.num_params, deflate, generator=generator, dtype=torch.float64)
    Q = Q.to(device=prob.device, dtype=prob.dtype)
    for _ in range(2):
        Q = torch.linalg.qr(hvp(prob, Q))[0]
    notes.append(
        f"deflated by a {deflate}-column range sketch of the Hessian ({2 * deflate} HVPs)."
    )
    return Q


def _projected_chunk(prob: Problem, dim: int) -> int:
    """Samples per chunk of ``_probe_pair_terms``: a per-sample gradient (its pass and N floats)
    and the d×d blocks (four copies while differences form); ``projected_derivatives`` chunks
    its own working memory within the chunk."""
    per_sample = (
        4 * prob._bytes_per_sample + 4 * prob.num_params * prob.dtype.itemsize + 4 * dim * dim * 8
    )
    return max(1, min(prob.num_samples, prob.max_memory // per_sample))


def _probe_pair_terms(
    prob: Problem,
    probes: int,
    seed: int,
    deflate: int,
    route: str,
    progress: bool,
    notes: list[str],
) -> DifferenceTerms:
    """Tr M_k² from projected per-sample Hessians WᵀH_iW, W = [Q, (I − QQᵀ)V]: the running sums
    give WᵀM_kW for every k and ``probe_pair_frobenius`` estimates ‖M_k‖_F² from it."""
    V = _rademacher(prob, probes, seed)
    traces = _exact_traces(prob, notes)
    if deflate:
        Q = _deflation_basis(prob, deflate, seed, notes)
        W = torch.cat([Q, V - Q @ (Q.T @ V)], dim=1)
    else:
        W = V
    route, why = proven_route(prob, W.shape[1], route)
    notes.append(f"projected per-sample Hessians WᵀH_iW by the '{route}' route: {why}.")
    gradients = proven_hvps(prob, "backward" if route == "backward" else "auto")[0]
    samples = _projected_chunk(prob, W.shape[1])
    prefix = _PrefixTerms()
    max_loss, max_grad = -np.inf, 0.0
    notes.append(f"Tr M_k² from {probes} probes, deflated by {deflate} directions.")
    bar = _bar(progress, prob.num_samples, f"projected Hessians ({deflate} + {probes} probes)")
    for i in range(0, prob.num_samples, samples):
        X, y = prob.X[i : i + samples], prob.y[i : i + samples]
        losses, grads, _ = gradients(prob, X, y, None)
        B = projected_derivatives(prob, X, y, W, route=route)[2]  # exactly symmetric
        values = {"loss": losses, "grad": grads, "hess": B}
        if traces is not None:
            values["trace"] = traces[i : i + len(X)]
        diffs, k = prefix.differences(**values)
        M = diffs["hess"]  # (n, s+m, s+m): WᵀM_kW
        trace_sq, trace_sq_stderr = probe_pair_frobenius(M, deflate)
        if traces is not None:
            trace, trace_stderr = diffs["trace"], torch.zeros_like(trace_sq)
        else:  # Tr QᵀM_kQ exactly plus Hutchinson on the deflated probes
            quad = M[:, deflate:, deflate:].diagonal(dim1=1, dim2=2)
            trace = M[:, :deflate, :deflate].diagonal(dim1=1, dim2=2).sum(1) + quad.mean(1)
            trace_stderr = _sem(quad)
        prefix.keep(
            k,
            gap=diffs["loss"],
            grad_sq=diffs["grad"].square().sum(1),
            trace=trace,
            trace_stderr=trace_stderr,
            trace_sq=trace_sq,
            trace_sq_stderr=trace_sq_stderr,
        )
        max_loss = max(max_loss, float(losses.max()))
        max_grad = max(max_grad, float(grads.norm(dim=1).max()))
        bar.update(len(X))
    bar.close()
    return DifferenceTerms(
        k=np.arange(2, prob.num_samples + 1),
        gap=prefix.result("gap"),
        grad_sq=prefix.result("grad_sq"),
        trace=prefix.result("trace"),
        trace_sq=prefix.result("trace_sq"),
        method="hutchinson",
        dim=prob.num_params,
        trace_stderr=prefix.result("trace_stderr"),
        trace_sq_stderr=prefix.result("trace_sq_stderr"),
        probes=probes,
        max_loss=max_loss,
        max_grad_norm=max_grad,
        notes=tuple(notes),
    )


def _sem(x: Tensor) -> Tensor:
    return x.std(1, unbiased=True) / x.shape[1] ** 0.5


def _bar(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, leave=False)

"""Per-sample derivatives at w*, the routes that compute them, and the proof each route must pass.

Every curvature quantity of the library is built from per-sample losses l_i, gradients g_i and
second derivatives of the samples at w*: per-sample HVPs H_i V, or projected Hessians PᵀH_iP (the
derivatives of φ_i(z) = l_i(w* + Pz) at z = 0). Routes that compute them:

* ``"chain"`` — forward over reverse along a chain of layers (``chain.chain_derivatives``);
* ``"forward"`` — ``jacfwd(jacfwd)`` of φ_i, batched over samples (small d);
* ``"hvp"`` — d per-sample HVPs (``per_sample_grads_and_hvps``: ``jvp`` of ``grad``, vmapped);
* ``"backward"`` — plain double backward, one sample at a time (``per_sample_hvps_backward``,
  torch.autograd only): the reference, and the last resort.

No route is trusted blindly: nested torch.func differentiation is wrong through some normalisation
layers in torch 2.14 (InstanceNorm, ``F.layer_norm`` in a custom forward, ``nn.LayerNorm`` outside
a chain), and which networks are affected cannot be read off their modules. So a route is used on a
network only once it has been proven there (``proven_route``): two samples' losses, projected
gradients and projected Hessians in random directions against plain double backward, once per
Problem and route; where they disagree it falls back — chain or forward mode → per-sample HVPs →
double backward — and says so. Also here: what one sample costs each route in memory
(``route_bytes``), which ``Problem.batches`` turns into chunks. What is done with the derivatives is
``curvature``'s (difference terms) and ``hessian``'s (per-sample Hessians and norms).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor
from torch.func import grad_and_value, jacfwd, vmap

from . import chain
from .chain import symmetric
from .checks import check_choice, check_int
from .problem import Problem, spans
from .seeding import generator

Route = Literal["auto", "chain", "forward", "hvp", "backward"]

#: The routes ``projected_derivatives`` accepts ("auto": the one ``proven_route`` proves).
ROUTES: tuple[str, ...] = ("auto", "chain", "forward", "hvp", "backward")

#: Maps (prob, X, y, V (N, m) or None) to losses (n,), gradients (n, N) and H_i V (n, m, N) or None.
PerSampleHVPs = Callable[
    [Problem, Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor, Tensor | None]
]


# -- per-sample HVPs ---------------------------------------------------------------------------------


def per_sample_grads_and_hvps(
    prob: Problem, X: Tensor, y: Tensor, V: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Losses (n,), gradients (n, N) and Hessian-vector products (n, m, N) for samples (X, y).

    ``V`` (N, m) holds the m vectors; None skips the HVPs. Each HVP is forward-over-reverse
    (``Problem.sample_hvp``: ``jvp`` of ``grad``) on one sample's loss, vectorised over samples and
    vectors with vmap. Nested torch.func differentiation: use it where ``proven_hvps`` says so.
    """
    loss = prob.sample_loss
    w = prob.center
    grads, losses = vmap(grad_and_value(loss), in_dims=(None, 0, 0))(w, X, y)  # one pass
    if V is None:
        return losses, grads, None
    hvps = vmap(vmap(prob.sample_hvp, in_dims=(None, None, 1)), in_dims=(0, 0, None))(X, y, V)
    return losses, grads, hvps


def per_sample_hvps_backward(
    prob: Problem, X: Tensor, y: Tensor, V: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Losses (n,), gradients (n, N) and products H_i V (n, m, N) of samples (X, y) by plain
    double backward; ``V`` (N, m) holds the vectors (None skips the products).

    One sample at a time: ∇l_i(w*) by reverse mode with ``create_graph``, then one reverse pass
    through it per vector (reverse over reverse, ``torch.autograd`` only: no torch.func transform,
    no vmap). This is the reference the faster routes are proven against before they are used, and
    their last resort. Slow: a Python loop over samples and vectors.

    Example:
        >>> losses, grads, HV = per_sample_hvps_backward(prob, prob.X[:2], prob.y[:2], V)  # doctest: +SKIP
    """
    columns = None if V is None else V.reshape(prob.num_params, -1)
    w = prob.center.detach().requires_grad_(True)  # a fresh leaf; prob.center is untouched
    losses, grads, products = [], [], []
    with torch.enable_grad():
        for x, t in zip(X, y):
            loss = prob.sample_loss(w, x, t)
            (gradient,) = torch.autograd.grad(loss, w, create_graph=columns is not None)
            losses.append(loss.detach())
            grads.append(gradient.detach())
            if columns is None:
                continue
            rows = torch.zeros_like(columns.T)
            if gradient.requires_grad:  # else the loss is linear in w: H_i = 0
                for j in range(columns.shape[1]):
                    (product,) = torch.autograd.grad(
                        gradient,
                        w,
                        columns[:, j],
                        retain_graph=j < columns.shape[1] - 1,
                        allow_unused=True,
                    )
                    if product is not None:
                        rows[j] = product
            products.append(rows)
    return (
        torch.stack(losses),
        torch.stack(grads),
        None if columns is None else torch.stack(products),
    )


# -- memory per sample -----------------------------------------------------------------------------


def hvp_bytes(prob: Problem, vectors: int, block: int = 0) -> tuple[int, int]:
    """(bytes per sample, vectors per call) of per-sample HVPs with ``vectors`` vectors.

    One sample × vector holds a forward-over-reverse pass (four copies of the activations) and an
    N-vector; the vectors per call are as many as fit in ``max_memory`` for one sample. ``block``
    is the number of floats a sample keeps besides (its d×d projected Hessian: four float64 copies
    while the running differences form). Hand the bytes to ``Problem.batches``.
    """
    per_unit = 4 * prob.activation_bytes + 4 * prob.num_params * prob.dtype.itemsize
    columns = min(vectors, max(1, prob.max_memory // per_unit))
    return columns * per_unit + 4 * block * 8, columns


def route_bytes(prob: Problem, route: str, dim: int, block: int = 0) -> tuple[int, int]:
    """(bytes per sample, HVP columns per call) of ``projected_derivatives`` by ``route`` in
    dimension d, and ``block`` floats per sample that the caller keeps besides.

    Per sample, the chain route keeps about 3d + 3 copies of its layers' outputs (values, tangents,
    direction outputs, adjoints and their tangents: ``chain.sample_bytes``), forward mode about
    3d(d + 1) activations, the HVP routes ``hvp_bytes``; all keep the d×d block (four copies).
    """
    if route in ("hvp", "backward"):
        return hvp_bytes(prob, dim, block=dim * dim + block)
    if route == "chain" and chain.support(prob)[0]:
        working = chain.sample_bytes(prob, dim)
    else:
        working = (3 * dim + 3 if route == "chain" else 3 * dim * (dim + 1)) * prob.activation_bytes
    return working + 4 * (dim * dim + block) * 8, dim


# -- projected derivatives by route ----------------------------------------------------------------


def _forward_route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, _columns: int):
    zero = torch.zeros(P.shape[1], dtype=P.dtype, device=P.device)

    def phi(z: Tensor) -> Tensor:
        return prob.sample_losses(prob.center + P @ z, X, y)

    return phi(zero), jacfwd(phi)(zero), symmetric(jacfwd(jacfwd(phi))(zero))


def _products_route(products: PerSampleHVPs):
    """A route from per-sample HVPs: rows p_jᵀH_iP from d products, ``columns`` at a time."""

    def route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, columns: int):
        blocks = []
        for cols in spans(P.shape[1], columns):
            losses, grads, hvps = products(prob, X, y, P[:, cols])
            blocks.append(hvps @ P)  # rows p_jᵀ H_i P
        return losses, grads @ P, symmetric(torch.cat(blocks, dim=1))

    return route


def _chain_route(prob: Problem, X: Tensor, y: Tensor, P: Tensor, _columns: int):
    return chain.chain_derivatives(prob, X, y, P)


#: How each route computes (losses, Pᵀg_i, PᵀH_iP) of a chunk of samples: (prob, X, y, P, HVP
#: columns per call) -> (n,), (n, d), (n, d, d).
PROJECTED: dict[str, Callable[..., tuple[Tensor, Tensor, Tensor]]] = {
    "chain": _chain_route,
    "forward": _forward_route,
    "hvp": _products_route(per_sample_grads_and_hvps),
    "backward": _products_route(per_sample_hvps_backward),
}


def projected_derivatives(
    prob: Problem, X: Tensor, y: Tensor, P: Tensor, *, route: Route = "auto"
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
      (``per_sample_hvps_backward``): the reference, slow.
    * ``"auto"`` — the route ``proven_route`` proves for this network (the first three can be
      wrong through some layers in torch 2.14; an explicit route is run unchecked).

    Samples are processed in chunks that keep each route's working memory within
    ``prob.max_memory`` (``route_bytes``); the outputs (n·d² numbers) are the caller's.
    """
    check_choice("route", route, ROUTES)
    dim = P.shape[1]
    if route == "auto":
        route = proven_route(prob, dim)[0]
    per_sample, columns = route_bytes(prob, route, dim)
    size = prob.batch_size(per_sample)
    parts = [PROJECTED[route](prob, X[rows], y[rows], P, columns) for rows in spans(len(X), size)]
    return tuple(torch.cat(t) for t in zip(*parts)) if len(parts) > 1 else parts[0]


def projected_route(
    prob: Problem, dim: int, *, chain_max_dim: float = math.inf, forward_max_dim: int = 16
) -> tuple[str, str]:
    """The route ``projected_derivatives`` tries first for a d-dimensional basis, and a line saying
    why: ``"chain"`` where the network is a chain of known layers (``chain.support``) and
    d ≤ ``chain_max_dim``; otherwise ``"forward"`` for d ≤ ``forward_max_dim`` and ``"hvp"`` above.

    The defaults are measured: the chain route beat per-sample HVPs at every d tried (one CPU
    thread, all samples: digits MLP 2×32 by 32×, 42×, 20×, 9× at d = 8, 32, 128, 512; mnist1d MLP
    2×32 by 23×, 21×, 10× and mnist1d CNN 2×16 by 1.8×, 1.8×, 1.5× at d = 8, 32, 128; and
    jacfwd(jacfwd) by 5–8× at d = 8), so it has no limit; forward mode beats per-sample HVPs up to
    about d = 16. Only a candidate: ``proven_route`` checks it on the network before anything uses
    it.
    """
    supported, why = chain.support(prob)
    if supported and dim <= chain_max_dim:
        return "chain", f"forward over reverse along the chain ({why})"
    because = f"d={dim} > chain_max_dim={chain_max_dim}" if supported else f"not a chain: {why}"
    if dim <= forward_max_dim:
        return "forward", f"jacfwd(jacfwd) of l_i(w* + Pz) ({because}; d ≤ {forward_max_dim})"
    return "hvp", f"d per-sample HVPs ({because}; d > {forward_max_dim})"


# -- proofs against double backward ----------------------------------------------------------------

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
    samples, whose Hessians are mostly rounding — hence the largest-loss samples). torch 2.14's
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

    On the ``samples`` samples of largest loss at w* (their curvature is the largest, so a wrong
    route shows there far above rounding) and ``probes`` Gaussian directions V (N, probes) over all
    parameters, the route's l_i, Vᵀg_i and VᵀH_iV are compared with those of
    ``per_sample_hvps_backward`` (``route_disagreement``). Every route is bilinear in the
    directions — it computes PᵀH̃_iP for some H̃_i that does not depend on P — and VᵀΔV ≠ 0 almost
    surely for a random V whenever the symmetric Δ = H̃_i − H_i is not zero, so agreement here
    proves the route for every basis P on this network (up to the sampled samples). The result is
    kept per Problem and route: the check costs two samples' route and 2·(1 + probes) reverse
    passes, once.
    """
    check_choice("route", route, ROUTES)
    key = f"{route}/{samples}/{probes}"
    proofs = _PROOFS.setdefault(prob, {})
    if key not in proofs:
        index = _largest_losses(prob, check_int("samples", samples, low=1))
        V = torch.randn(
            prob.num_params, probes, generator=generator(prob.num_params), dtype=torch.float64
        )
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


def proven_route(
    prob: Problem,
    dim: int,
    route: Route = "auto",
    *,
    chain_max_dim: float = math.inf,
    forward_max_dim: int = 16,
) -> tuple[str, str]:
    """The route that computes projected derivatives in dimension d on this network, and a line
    saying which, why, and on what evidence.

    The candidate (``projected_route`` with ``chain_max_dim`` and ``forward_max_dim`` for
    ``"auto"``, else ``route``) is checked against plain double backward (``prove_route``). If it
    agrees within ``proof_tolerance`` it is taken; otherwise (or where it cannot run on the network
    at all) the next route is tried — chain or forward mode → per-sample HVPs → double backward
    (the reference itself) — and the line says which route disagreed, on which sample and by how
    much. Nested torch.func differentiation is wrong through some layers in torch 2.14
    (InstanceNorm, ``F.layer_norm`` in a custom forward, ``nn.LayerNorm``), and no list of layer
    types can say in advance which networks are affected.

    Example:
        >>> proven_route(prob, 4)                                     # doctest: +SKIP
        ('hvp', "the 'forward' route (...) disagreed with double backward on sample 3 by 1.8e-01
        (relative; tolerance 1e-08); used d per-sample HVPs (jvp of grad), agreeing with double
        backward on samples 3, 0 (relative difference 4.1e-16)")
    """
    check_choice("route", route, ROUTES)
    if route == "auto":
        candidate, why = projected_route(
            prob, dim, chain_max_dim=chain_max_dim, forward_max_dim=forward_max_dim
        )
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
    those of ``per_sample_hvps_backward`` (d reverse passes per sample, so keep d small). Each
    difference is relative to the largest reference value of its kind over the samples.
    """
    index = torch.as_tensor(index).reshape(-1)
    X, y = prob.X[index], prob.y[index]
    losses, G, B = projected_derivatives(prob, X, y, P, route=route)
    ref_losses, ref_grads, HV = per_sample_hvps_backward(prob, X, y, P)
    pairs = [(losses, ref_losses), (G, ref_grads @ P), (B, symmetric(HV @ P))]
    error = torch.zeros(len(index), dtype=torch.float64, device=P.device)
    for value, reference in pairs:
        value = value.double().reshape(len(index), -1)
        reference = reference.double().reshape(len(index), -1)
        scale = reference.norm(dim=1).max().clamp_min(torch.finfo(prob.dtype).tiny)
        error = torch.maximum(error, (value - reference).norm(dim=1) / scale)
    error = error.nan_to_num(float("inf"))
    worst = int(error.argmax())
    return float(error[worst]), int(index[worst])


def proven_hvps(
    prob: Problem, route: Literal["auto", "hvp", "backward"] = "auto"
) -> tuple[PerSampleHVPs, str]:
    """The per-sample HVP primitive for this network and a line saying which and why.

    ``per_sample_grads_and_hvps`` (``Problem.sample_hvp``, jvp of grad, vmapped) where it agrees
    with plain double backward (``prove_route`` of the ``"hvp"`` route), else
    ``per_sample_hvps_backward``. Both map (prob, X, y, V) to (losses (n,), gradients (n, N),
    H_i V (n, m, N)). ``route``: ``"auto"`` or ``"hvp"`` (proven), ``"backward"``.
    """
    check_choice("route", route, ("auto", "hvp", "backward"))
    chosen, why = proven_route(prob, prob.num_params, "hvp" if route == "auto" else route)
    if chosen == "hvp":
        return per_sample_grads_and_hvps, why
    return per_sample_hvps_backward, why


def _largest_losses(prob: Problem, count: int) -> Tensor:
    """The ``count`` samples of largest loss at w*, largest first."""
    losses = prob.per_sample_losses(prob.center).nan_to_num(float("inf"))
    return losses.topk(min(count, prob.num_samples)).indices

"""``difference_terms``: a_k, ‖c_k‖², Tr M_k, Tr M_k² for every k, exactly or with probe pairs.

With per-sample loss l_i, gradient g_i and Hessian H_i at w*, and a basis P (N, d) (P = I in the
full space), a_k = (l_k − L_{k−1}) / k, c_k = Pᵀ(g_k − ḡ_{k−1}) / k and
M_k = Pᵀ(H_k − H̄_{k−1})P / k, with ḡ_{k−1}, H̄_{k−1} prefix means. Every route streams per-sample
derivatives through one loop (``_stream``): a batch of samples at a time (``Problem.batches``),
their running prefix differences (``prefix.RunningDifferences``), the per-k terms of the route,
then one result (``_result``). The routes differ only in which per-sample derivatives they stream
— projected PᵀH_iP (``"subspace"``), full H_i (``"exact"``), or projections on probes
(``"hutchinson"``, estimated by ``probes.probe_pair_frobenius``) — and how they are computed is
``routes``' (each proven on the network first).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .. import chain
from ..checks import check_choice, check_int
from ..directions import Subspace, check_subspace
from ..prefix import RunningDifferences
from ..problem import Problem, spans
from ..progress import bar
from ..routes import (
    ROUTES,
    Route,
    hvp_bytes,
    per_sample_grads_and_hvps,
    projected_derivatives,
    proven_hvps,
    proven_route,
    route_bytes,
)
from ..rows import FactoredRows
from ..rows import rows as rows_of
from .per_sample import BackpackUnsupported, per_sample_hessian_traces
from .probes import deflation_basis, probe_pair_frobenius, rademacher
from .results import DifferenceTerms

Method = Literal["auto", "exact", "hutchinson", "subspace"]
METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson", "subspace")

#: Per-sample values of a batch of samples: (rows, X, y) -> {"loss", "grad", "hess"[, "trace"]};
#: "grad" is an (n, N) tensor or the chain's ``FactoredRows`` (never formed).
Derivatives = Callable[[slice, Tensor, Tensor], dict[str, "Tensor | FactoredRows"]]
#: The route's per-k terms from the prefix differences of those values (besides gap and grad_sq).
Terms = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def difference_terms(
    prob: Problem,
    subspace: Subspace | None = None,
    method: Method = "auto",
    *,
    probes: int = 64,
    deflate: int | None = None,
    seed: int = 0,
    route: Route = "auto",
    progress: bool = True,
    exact_max_params: int = 5_000,
    chain_max_dim: float = math.inf,
    forward_max_dim: int = 16,
) -> DifferenceTerms:
    """a_k, ‖c_k‖², Tr M_k and Tr M_k² for every k = 2..K, exactly or with Hutchinson probes.

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

    Args:
        prob: the problem (network, ordered samples, centre w*).
        subspace: a basis P (any, orthonormal or not); None for the full space.
        method: ``"auto"`` picks ``"subspace"`` when a subspace is given, else ``"exact"`` for
            N ≤ ``exact_max_params`` and ``"hutchinson"`` above; the choice is in ``.notes``.
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
        progress: show a progress bar over batches of samples.
        exact_max_params: the largest N for which ``method="auto"`` materialises per-sample
            Hessians in the full space (``"exact"``); above it, ``"hutchinson"``.
        chain_max_dim, forward_max_dim: the dimensions up to which ``route="auto"`` tries the
            chain route and forward mode first (``routes.projected_route``, which gives the
            measurements behind the defaults).

    Returns:
        ``DifferenceTerms`` aligned with k = 2..K.

    Cost: "subspace" K samples' projected derivatives (``projected_route``: about 4d layer
    products each on a chain of layers, else d(d+1) forward passes or d per-sample HVPs);
    "exact" K·N per-sample HVPs and one N×N running sum; "hutchinson" K samples' projected
    derivatives in s + m directions (as "subspace" with d = s + m) and (s+m)² running sums, one
    BackPACK pass for traces, and 2s full-data HVPs for Q; the per-sample gradients come as
    factors from the chain route's own backward pass where the layers allow (Linear, BatchNorm:
    ``chain_derivatives(gradients=True)``), else from one vmapped pass, and ‖c_k‖² from the
    chunks' Gram matrices (``RunningDifferences.differences(norms=...)``).
    """
    check_choice("method", method, METHODS)
    check_choice("route", route, ROUTES)
    probes = check_int("probes", probes, low=3)
    if deflate is None:
        deflate = min(probes, prob.num_params // 4)
    deflate = check_int("deflate", deflate, low=0, high=prob.num_params - 1)
    exact_max_params = check_int("exact_max_params", exact_max_params, low=0)
    subspace = check_subspace(prob, subspace)
    limits = {"chain_max_dim": chain_max_dim, "forward_max_dim": forward_max_dim}
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
        method = "exact" if prob.num_params <= exact_max_params else "hutchinson"
        notes.append(
            f"method='auto' chose '{method}' (N={prob.num_params}, exact up to {exact_max_params})."
        )
    if method == "hutchinson":
        return _probe_pair_terms(prob, probes, seed, deflate, route, limits, progress, notes)
    if subspace is None and route not in ("auto", "hvp", "backward"):
        raise ValueError(
            f"route={route!r} is for subspaces and method='hutchinson'; the full-space exact "
            "route takes per-sample HVPs: use route='auto', 'hvp' or 'backward'."
        )
    return _exact_terms(prob, subspace, method, route, limits, progress, notes)


def _exact_terms(
    prob: Problem,
    subspace: Subspace | None,
    method: str,
    route: str,
    limits: dict[str, float],
    progress: bool,
    notes: list[str],
) -> DifferenceTerms:
    """Exact terms: PᵀH_iP by the proven projected route in a subspace, or full H_i from
    per-sample HVPs (P = I) in the full space; M_k itself from the running sums."""
    if subspace is None:
        P = torch.eye(prob.num_params, dtype=prob.dtype, device=prob.device)
        products, why = proven_hvps(prob, route)
        name = "hvp" if products is per_sample_grads_and_hvps else "backward"
        notes.append(f"per-sample Hessians H_i by the '{name}' route: {why}.")
        sample_bytes, columns = hvp_bytes(prob, P.shape[1], block=P.shape[1] ** 2)

        def derivatives(rows: slice, X: Tensor, y: Tensor) -> dict[str, Tensor]:
            blocks = []
            for cols in spans(P.shape[1], columns):
                losses, G, hvps = products(prob, X, y, P[:, cols])  # hvps: rows H_i e_j
                blocks.append(hvps)
            B = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
            return {"loss": losses, "grad": G, "hess": B}

    else:
        P = subspace.basis
        projected, why = proven_route(prob, P.shape[1], route, **limits)
        notes.append(f"per-sample PᵀH_iP by the '{projected}' route: {why}.")
        sample_bytes, _ = route_bytes(prob, projected, P.shape[1])

        def derivatives(rows: slice, X: Tensor, y: Tensor) -> dict[str, Tensor]:
            losses, G, B = projected_derivatives(prob, X, y, P, route=projected)  # B symmetric
            return {"loss": losses, "grad": G, "hess": B}

    def terms(diffs: dict[str, Tensor]) -> dict[str, Tensor]:
        M = diffs["hess"]
        trace = M.diagonal(dim1=1, dim2=2).sum(1)
        return {"trace": trace, "trace_sq": M.square_().sum((1, 2))}  # M: ours, not needed after

    dim = P.shape[1]
    norms = dim <= 512
    desc = f"per-sample curvature ({method}, d={dim})"
    streamed = _stream(prob, sample_bytes, derivatives, terms, desc, progress, norms)
    if not norms:
        notes.append("M_H not computed for d > 512; use hessian.per_sample_spectral_norms.")
    return _result(
        streamed, method, dim, notes, max_hessian_norm=streamed.max_hess if norms else None
    )


def _probe_pair_terms(
    prob: Problem,
    probes: int,
    seed: int,
    deflate: int,
    route: str,
    limits: dict[str, float],
    progress: bool,
    notes: list[str],
) -> DifferenceTerms:
    """Tr M_k² from projected per-sample Hessians WᵀH_iW, W = [Q, (I − QQᵀ)V]: the running sums
    give WᵀM_kW for every k and ``probe_pair_frobenius`` estimates ‖M_k‖_F² from it."""
    V = rademacher(prob, probes, seed)
    traces = _exact_traces(prob, notes)
    if deflate:
        Q = deflation_basis(prob, deflate, seed)
        notes.append(
            f"deflated by a {deflate}-column range sketch of the Hessian ({2 * deflate} HVPs)."
        )
        W = torch.cat([Q, V - Q @ (Q.T @ V)], dim=1)
    else:
        W = V
    W = W.T.contiguous().T  # column-major: the chain route slices each direction without a copy
    route, why = proven_route(prob, W.shape[1], route, **limits)
    notes.append(f"projected per-sample Hessians WᵀH_iW by the '{route}' route: {why}.")
    gradients = proven_hvps(prob, "backward" if route == "backward" else "auto")[0]
    notes.append(f"Tr M_k² from {probes} probes, deflated by {deflate} directions.")
    # a per-sample gradient (its pass and N floats) and the (s+m)² blocks (four copies while the
    # differences form), or the projections' working memory if larger: then projected_derivatives
    # takes the whole batch in one chunk
    sample_bytes = max(
        hvp_bytes(prob, 1, block=W.shape[1] ** 2)[0], route_bytes(prob, route, W.shape[1])[0]
    )

    grads_by: set[str] = set()

    def derivatives(rows: slice, X: Tensor, y: Tensor) -> dict[str, Tensor]:
        grads = None
        if route == "chain":  # the gradients as factors from the same pass, where they factor
            losses, _, B, grads = chain.chain_derivatives(prob, X, y, W, gradients=True)
        else:
            B = projected_derivatives(prob, X, y, W, route=route)[2]  # exactly symmetric
        if grads is None:
            losses, grads, _ = gradients(prob, X, y, None)
        grads_by.add("factored" if isinstance(grads, FactoredRows) else "vmap")
        values = {"loss": losses, "grad": grads, "hess": B}
        if traces is not None:
            values["trace"] = traces[rows]
        return values

    def terms(diffs: dict[str, Tensor]) -> dict[str, Tensor]:
        M = diffs["hess"]  # (n, s+m, s+m): WᵀM_kW
        trace_sq, trace_sq_stderr = probe_pair_frobenius(M, deflate)
        if traces is not None:
            trace, trace_stderr = diffs["trace"], torch.zeros_like(trace_sq)
        else:  # Tr QᵀM_kQ exactly plus Hutchinson on the deflated probes
            quad = M[:, deflate:, deflate:].diagonal(dim1=1, dim2=2)
            trace = M[:, :deflate, :deflate].diagonal(dim1=1, dim2=2).sum(1) + quad.mean(1)
            trace_stderr = quad.std(1, unbiased=True) / quad.shape[1] ** 0.5
        return {
            "trace": trace,
            "trace_stderr": trace_stderr,
            "trace_sq": trace_sq,
            "trace_sq_stderr": trace_sq_stderr,
        }

    desc = f"projected Hessians ({deflate} + {probes} probes)"
    streamed = _stream(prob, sample_bytes, derivatives, terms, desc, progress)
    notes.append(
        "per-sample gradients as factors from the chain's backward pass (Linear, BatchNorm)."
        if grads_by == {"factored"}
        else "per-sample gradients by one vmapped backward pass per chunk."
    )
    return _result(streamed, "hutchinson", prob.num_params, notes, probes=probes)


def _exact_traces(prob: Problem, notes: list[str]) -> Tensor | None:
    """Per-sample Tr H_i from BackPACK where it supports the network (None otherwise, noted)."""
    try:
        traces, _ = per_sample_hessian_traces(prob, backend="backpack")
    except BackpackUnsupported as error:
        notes.append(f"Tr M_k estimated from the probes: {error}")
        return None
    notes.append("Tr M_k exact from BackPACK BatchDiagHessian.")
    return traces


class _Streamed(NamedTuple):
    running: RunningDifferences
    max_loss: float
    max_grad: float
    max_hess: float


def _stream(
    prob: Problem,
    sample_bytes: int,
    derivatives: Derivatives,
    terms: Terms,
    desc: str,
    progress: bool,
    hessian_norms: bool = False,
) -> _Streamed:
    """The one loop of every route: per batch of samples (``sample_bytes`` each), the route's
    per-sample ``derivatives``, their running prefix differences, and the per-k terms — a_k and
    ‖c_k‖² here, the rest from the route's ``terms`` — kept for k ≥ 2; with the maxima over samples
    of l_i, ‖Pᵀg_i‖ and (``hessian_norms``) ‖PᵀH_iP‖₂ that the bounds need."""
    running = RunningDifferences()
    max_loss, max_grad, max_hess = -np.inf, 0.0, 0.0
    progress_bar = bar(total=prob.num_samples, desc=desc, unit="sample", enabled=progress)
    for rows, X, y in prob.batches(sample_bytes):
        values = derivatives(rows, X, y)
        values["grad"] = rows_of(values["grad"])  # a Gram matrix, if formed, serves both uses
        diffs, k = running.differences(norms=("grad",), **values)
        gap, grad_sq = diffs["loss"], diffs["grad"]
        running.keep(k, gap=gap, grad_sq=grad_sq, **terms(diffs))
        max_loss = max(max_loss, float(values["loss"].max()))
        max_grad = max(max_grad, float(values["grad"].squared_norms().max().sqrt()))
        if hessian_norms:
            max_hess = max(max_hess, float(torch.linalg.eigvalsh(values["hess"]).abs().max()))
        progress_bar.update(len(X))
    progress_bar.close()
    return _Streamed(running, max_loss, max_grad, max_hess)


def _result(
    streamed: _Streamed,
    method: str,
    dim: int,
    notes: list[str],
    *,
    probes: int = 0,
    max_hessian_norm: float | None = None,
) -> DifferenceTerms:
    """The terms kept by ``_stream`` as ``DifferenceTerms`` (standard errors zero where exact)."""
    result, kept = streamed.running.result, streamed.running.out
    zeros = np.zeros(streamed.running.count - 1)
    return DifferenceTerms(
        k=np.arange(2, streamed.running.count + 1),
        gap=result("gap"),
        grad_sq=result("grad_sq"),
        trace=result("trace"),
        trace_sq=result("trace_sq"),
        method=method,
        dim=dim,
        trace_stderr=result("trace_stderr") if "trace_stderr" in kept else zeros,
        trace_sq_stderr=result("trace_sq_stderr") if "trace_sq_stderr" in kept else zeros,
        probes=probes,
        max_loss=streamed.max_loss,
        max_grad_norm=streamed.max_grad,
        max_hessian_norm=max_hessian_norm,
        notes=tuple(notes),
    )

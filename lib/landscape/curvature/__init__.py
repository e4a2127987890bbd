"""Curvature at w*: the difference terms a_k, ‖c_k‖², Tr M_k, Tr M_k² for every k at once.

With per-sample loss l_i, gradient g_i and Hessian H_i at w*, and a basis P (N, d) (P = I in the
full space),

    a_k = (l_k − L_{k−1}) / k,   c_k = Pᵀ(g_k − ḡ_{k−1}) / k,   M_k = Pᵀ(H_k − H̄_{k−1})P / k,

where ḡ_{k−1}, H̄_{k−1} are prefix means. Every term for every k follows from per-sample quantities
streamed in batches with running sums (never a K×K Gram matrix, never all K Hessians in memory).
By concept:

* ``estimators`` — ``difference_terms``: ``"subspace"`` (exact for any N, projected PᵀH_iP),
  ``"exact"`` (the full space, per-sample H_i; N up to a few thousand) and ``"hutchinson"`` (the
  full space for large N, probe pairs with a standard error), one chunk loop for all three;
* ``probes`` — ``probe_pair_frobenius``, the Rademacher probes and the deflation basis;
* ``per_sample`` — per-sample gradients and exact Hessian traces (BackPACK ``BatchGrad`` /
  ``BatchDiagHessian``, with torch.func fallbacks that say they were used);
* ``results`` — ``DifferenceTerms`` and the closed forms of Δ_k it predicts.

How per-sample derivatives are computed — chain, forward mode, per-sample HVPs or double backward —
is ``routes``' (re-exported here): no route is trusted blindly, each is proven on the network
against plain double backward before it is used (``proven_route``), and ``.notes`` says which route
ran, on what evidence, and any fallback. Bounds and rate fits live in ``theory``.
"""

from ..routes import (
    ROUTES,
    Route,
    RouteProof,
    per_sample_grads_and_hvps,
    projected_derivatives,
    projected_route,
    proof_tolerance,
    prove_route,
    proven_hvps,
    proven_route,
    route_disagreement,
)
from .estimators import METHODS, Method, difference_terms
from .per_sample import (
    BACKENDS,
    Backend,
    BackpackUnsupported,
    per_sample_gradients,
    per_sample_hessian_traces,
)
from .probes import deflation_basis, probe_pair_frobenius, rademacher
from .results import FORMS, DifferenceTerms, Form

__all__ = [
    "BACKENDS",
    "FORMS",
    "METHODS",
    "ROUTES",
    "Backend",
    "BackpackUnsupported",
    "DifferenceTerms",
    "Form",
    "Method",
    "Route",
    "RouteProof",
    "deflation_basis",
    "difference_terms",
    "per_sample_gradients",
    "per_sample_grads_and_hvps",
    "per_sample_hessian_traces",
    "probe_pair_frobenius",
    "projected_derivatives",
    "projected_route",
    "proof_tolerance",
    "prove_route",
    "proven_hvps",
    "proven_route",
    "rademacher",
    "route_disagreement",
]

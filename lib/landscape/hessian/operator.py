"""The Hessian H = ∇²L_K(w*) of the mean loss over all K samples, as exact products and an operator.

``hvp`` computes H v by double backward through the flat parameter vector, one batch of samples at
a time (``Problem.batches``), so memory stays bounded whatever K is; ``HessianOperator`` wraps it as
a curvlinops ``PyTorchLinearOperator`` that counts its products and keeps the batches' gradient
graphs between them when there are few — the one operator the eigen solvers (``op.products``;
SciPy through ``.to_scipy()``) and the spectral density (curvlinops' Lanczos) multiply with; ``dense_hessian`` materialises H for small N. Per-sample Hessians H_i are in
``hessian.per_sample``; eigenpairs and densities in ``hessian.eigen`` and ``hessian.density``.
"""

from __future__ import annotations

import time

import torch

# curvlinops documents PyTorchLinearOperator as the interface of all its operators (its own
# operators and examples subclass it), but 3.0 exports it from no module other than _torch_base.
from curvlinops._torch_base import PyTorchLinearOperator
from torch import Tensor
from torch.func import grad, jvp, vmap

from ..problem import Problem

#: HVP routes of ``hvp`` for blocks of columns (``Problem.hvp_route``).
HVP_ROUTES = ("auto", "reverse", "forward")
#: Columns per vmapped forward-over-reverse pass; "auto" decides on a block of at least twice this.
FORWARD_COLUMNS = 16


def check_vectors(prob: Problem, V: Tensor) -> Tensor:
    """``V`` (N,) or (N, m) on the Problem's device and dtype, or a ValueError naming ``v``."""
    V = torch.as_tensor(V)
    if V.ndim not in (1, 2) or V.shape[0] != prob.num_params:
        raise ValueError(
            f"v must have shape (N,) or (N, m) with N={prob.num_params}; got {tuple(V.shape)}."
        )
    return V.to(device=prob.device, dtype=prob.dtype)


def hvp(prob: Problem, v: Tensor) -> Tensor:
    """Exact Hessian-vector products H v with H = ∇²L_K(w*), L_K = (1/K) Σ_{i≤K} l_i.

    H v = Σ_batches ∇_w ⟨∇_w (1/K) Σ_{i∈batch} l_i(w), v⟩ at w = w*: reverse-over-reverse
    (double backward) on the flat parameter vector, one batch of samples at a time, so memory
    stays bounded whatever K is. The Problem's model is called functionally and never modified.
    A block of at least 2·``FORWARD_COLUMNS`` columns may instead go forward over reverse,
    vmapped over ``FORWARD_COLUMNS`` columns per pass (``forward_products``), where the Problem
    measured that faster (``Problem.hvp_route``; see ``_timed_routes``).

    Why not curvlinops' ``HessianLinearOperator``: it gives the same numbers (forward-over-reverse
    through torch.func; relative difference 1e-16 in float64, 8e-8 in float32) but needs the
    module's own trainable parameters and vmaps over all columns at once, and each product was
    slower: on the digits MLP 2×32 (N = 3,466, K = 1,347, one CPU thread) one H v took 3.4 ms here
    against 9.0 ms (float32; 4.9 against 9.4 ms in float64), and 8 columns 14 against 19 ms
    (float32; 32 against 60 ms in float64).

    Args:
        prob: the Problem.
        v: (N,) vector or (N, m) matrix of m vectors.

    Returns:
        H v with the shape of ``v``, on the Problem's device and dtype.

    Example:
        >>> hvp(prob, torch.zeros(prob.num_params)).abs().max()   # doctest: +SKIP
        tensor(0.)
    """
    V = check_vectors(prob, v)
    columns = V.reshape(prob.num_params, -1)
    route = prob.hvp_route
    if route not in HVP_ROUTES:
        raise ValueError(f"prob.hvp_route={route!r} must be one of {', '.join(HVP_ROUTES)}.")
    if route == "forward" and columns.shape[1] > 1:
        return forward_products(prob, columns).reshape(V.shape)
    if route == "auto" and columns.shape[1] >= 2 * FORWARD_COLUMNS:
        return _timed_routes(prob, columns).reshape(V.shape)
    return reverse_products(prob, columns).reshape(V.shape)


def reverse_products(prob: Problem, columns: Tensor) -> Tensor:
    """H C for the (N, m) ``columns`` by double backward: per batch of samples one forward and
    backward pass with its graph kept, then one backward through it per column."""
    out = torch.zeros_like(columns)
    w = prob.center.detach().requires_grad_(True)  # a fresh leaf; prob.center is untouched
    for _, X, y in prob.batches(prob.activation_bytes):
        gradient = batch_gradient(prob, w, X, y)
        if gradient is not None:
            out += gradient_products(gradient, w, columns, keep_graph=False)
    return out


def forward_products(prob: Problem, columns: Tensor, width: int = FORWARD_COLUMNS) -> Tensor:
    """H C for the (N, m) ``columns`` by forward over reverse (``jvp`` of ``grad``), vmapped over
    ``width`` columns at a time: each pass carries that many tangents through one forward and
    backward, so its matrix products are ``width`` times wider. Batches of samples hold the
    activations with their ``width`` tangents within ``max_memory``."""
    out = torch.zeros_like(columns)
    for _, X, y in prob.batches(prob.activation_bytes * (1 + width)):
        product = _batch_products(prob, X, y)
        for j in range(0, columns.shape[1], width):
            out[:, j : j + width] += product(columns[:, j : j + width].T).T
    return out


def _batch_products(prob: Problem, X: Tensor, y: Tensor):
    """The function (m, N) rows t_j -> (m, N) rows ∇_w ⟨∇_w (1/K) Σ_{i∈batch} l_i, t_j⟩ at w*:
    ``jvp`` of ``grad`` over the samples (X, y), vmapped over the rows."""
    w = prob.center.detach()

    def loss(u: Tensor) -> Tensor:
        return prob.sample_losses(u, X, y).sum() / prob.num_samples

    return vmap(lambda t: jvp(grad(loss), (w,), (t,))[1])


def _timed_routes(prob: Problem, columns: Tensor) -> Tensor:
    """H C with ``prob.hvp_route`` "auto": the first ``FORWARD_COLUMNS`` columns by double backward,
    the next as many by forward over reverse, each timed; the faster route takes the rest and
    every later block of this Problem (``prob.hvp_route``, ``prob.hvp_timings``).

    Which is faster depends on the network, K and the device: on this project's 2-core CPU
    (float32, 2026-12-03; time per column in blocks of 64) forward over reverse took 1.4 against
    3.4 ms on digits, 11 against 13 ms on the mnist1d MLP 2×128, 27 against 33 ms on the MNIST MLP
    4×128 at K = 2,000 in one measurement but within ±10 % of it in interleaved repeats, and
    298 against 274 ms on the CIFAR CNN 4×64 at K = 128. The two agree to rounding (2.5e-7
    relative in float32), so the columns of this first block differ from what either route alone
    gives by that much at most. Before timing, forward over reverse runs once on one sample: the
    first ``torch.func.grad`` of a process costs about 1.6 s of set-up (measured on that MLP),
    which any later ``torch.func`` call of the process would pay and which is not a cost of this
    route.
    """
    width = FORWARD_COLUMNS
    _batch_products(prob, prob.X[:1], prob.y[:1])(columns[:, :2].T)  # the set-up: see above
    out = torch.empty_like(columns)
    seconds = {}
    for route, cols, products in (
        ("reverse", slice(0, width), reverse_products),
        ("forward", slice(width, 2 * width), forward_products),
    ):
        start = time.perf_counter()
        out[:, cols] = products(prob, columns[:, cols])
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        seconds[route] = (time.perf_counter() - start) / width
    prob.hvp_timings = seconds
    prob.hvp_route = min(seconds, key=seconds.get)
    rest = slice(2 * width, None)
    products = forward_products if prob.hvp_route == "forward" else reverse_products
    if columns.shape[1] > 2 * width:
        out[:, rest] = products(prob, columns[:, rest])
    return out


def batch_gradient(prob: Problem, w: Tensor, X: Tensor, y: Tensor) -> Tensor | None:
    """∇_w (1/K) Σ_{i∈batch} l_i(w) with its graph kept (``create_graph``), or None when the
    batch's loss is linear in w (its Hessian is 0). ``w`` is a leaf that requires grad."""
    with torch.enable_grad():
        loss = prob.sample_losses(w, X, y).sum() / prob.num_samples
        (gradient,) = torch.autograd.grad(loss, w, create_graph=True)
    return gradient if gradient.requires_grad else None


def gradient_products(gradient: Tensor, w: Tensor, columns: Tensor, keep_graph: bool) -> Tensor:
    """(N, m) products ∇_w ⟨gradient, c⟩ for the columns c of ``columns``: one double backward
    per column through the same graph (kept after the last one when ``keep_graph``).

    A loop rather than one vmapped pass (``is_grads_batched``): on the mnist1d MLP 2×144
    (N = 28,234, K = 4,000, one CPU thread) 4 columns took 0.078 s looped against 0.13 s vmapped,
    16 columns 0.27 s against 0.71 s.
    """
    out = torch.zeros_like(columns)
    with torch.enable_grad():
        for j in range(columns.shape[1]):
            keep = keep_graph or j < columns.shape[1] - 1
            (product,) = torch.autograd.grad(
                gradient, w, columns[:, j], retain_graph=keep, allow_unused=True
            )
            if product is not None:
                out[:, j] = product
    return out


class HessianOperator(PyTorchLinearOperator):
    """H = ∇²L_K(w*) as a curvlinops ``PyTorchLinearOperator`` that counts its products.

    ``op @ V`` multiplies torch tensors (N,) or (N, m) on the Problem's device, each column one
    exact ``hvp``; ``op.to_scipy()`` is the SciPy ``LinearOperator`` (float64 NumPy in and out)
    that ``eigsh`` takes. H is symmetric, so the operator is its own adjoint.

    When the K samples fit in at most ``kept_batches`` batches (``Problem.batches``; default 2),
    the operator builds each batch's gradient graph once, on its first product, and keeps them
    for the next ones: every later H v is one double backward per batch, without the forward and
    first backward pass that ``hvp`` repeats (0.024 s against 0.051 s per product on the mnist1d
    MLP 2×144, N = 28,234, K = 4,000, one batch). Each graph is what one ``hvp`` call holds for
    its batch (forward activations within ``max_memory`` by the batch rule), so the operator
    holds at most ``kept_batches`` times that, as long as it lives. With more batches each
    product is ``hvp``.

    Args:
        prob: the Problem.
        kept_batches: keep the gradient graphs when there are at most this many batches.

    Attributes:
        prob: the Problem.
        hvps: Hessian-vector products carried out so far (a product with m columns counts m).
        keep: whether the batches' gradient graphs are kept between products.

    Example:
        >>> op = HessianOperator(prob)                             # doctest: +SKIP
        >>> y = op.to_scipy() @ np.ones(prob.num_params); op.hvps
        1
    """

    SELF_ADJOINT = True

    def __init__(self, prob: Problem, kept_batches: int = 2) -> None:
        super().__init__([(prob.num_params,)], [(prob.num_params,)])
        self.prob = prob
        self.hvps = 0
        self.batches = [(X, y) for _, X, y in prob.batches(prob.activation_bytes)]
        self.keep = len(self.batches) <= kept_batches
        self.graphs: tuple[Tensor, list[Tensor]] | None = None  # (w, kept batch gradients)

    def _matmat(self, X: list[Tensor]) -> list[Tensor]:
        (V,) = X  # (N, m)
        self.hvps += V.shape[1]
        if not self.keep:
            return [hvp(self.prob, V)]
        if self.graphs is None:
            w = self.prob.center.detach().requires_grad_(True)
            gradients = [batch_gradient(self.prob, w, X, y) for X, y in self.batches]
            self.graphs = (w, [g for g in gradients if g is not None])
        w, gradients = self.graphs
        out = torch.zeros_like(V)
        for gradient in gradients:
            out += gradient_products(gradient, w, V, keep_graph=True)
        return [out]

    def products(self, V: Tensor) -> Tensor:
        """H V for a tensor (N,) or (N, m) on the Problem's device and dtype, counted."""
        columns = V.reshape(self.prob.num_params, -1)
        return self._matmat([columns])[0].reshape(V.shape)

    @property
    def device(self) -> torch.device:
        return self.prob.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prob.dtype


def hessian_operator(prob: Problem) -> HessianOperator:
    """The Hessian of L_K at w* as a counting operator; see ``HessianOperator``."""
    return HessianOperator(prob)


def dense_hessian(prob: Problem) -> Tensor:
    """The (N, N) Hessian of L_K at w*, materialised (for small N and tests).

    Column j is the exact product H e_j from ``hvp``: N double-backward passes through each
    batch's gradient graph (measured 7–9× faster than vectorised ``torch.func.hessian`` for
    N = 51 and N = 940 on a CPU, and with the memory of one batch's graph plus N² entries).
    Returned in the Problem's dtype, on its device; symmetric up to rounding.
    """
    eye = torch.eye(prob.num_params, device=prob.device, dtype=prob.dtype)
    return hvp(prob, eye)

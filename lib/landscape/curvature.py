"""Exact curvature at w*: the difference terms a_k, ‖c_k‖², Tr M_k, Tr M_k² for every k at once.

With per-sample loss l_i, gradient g_i and Hessian H_i at w*, and a basis P (N, d) (P = I in the
full space),

    a_k = (l_k − L_{k−1}) / k,   c_k = Pᵀ(g_k − ḡ_{k−1}) / k,   M_k = Pᵀ(H_k − H̄_{k−1})P / k,

where ḡ_{k−1}, H̄_{k−1} are prefix means. Every term for every k follows from per-sample quantities
streamed in chunks with running sums (never a K×K Gram matrix, never all K Hessians in memory).
Routes:

* ``"subspace"`` — exact for any N: d per-sample Hessian-vector products give PᵀH_iP (d×d).
* ``"exact"`` — the full space with P = I: per-sample Hessians H_i from torch.func, chunked;
  fine up to N of a few thousand.
* ``"hutchinson"`` — the full space for large N: per-sample HVPs on m probes shared across all k
  give Tr M_k² = E_v ‖M_k v‖² with a standard error; Tr M_k is exact from BackPACK's per-sample
  Hessian diagonal where BackPACK supports the network, else estimated from the same probes.

Per-sample gradients and Hessian traces are also available on their own (BackPACK ``BatchGrad`` /
``BatchDiagHessian``, with torch.func fallbacks that say they were used). Closed forms of Δ_k from
these terms are ``DifferenceTerms.predict``; bounds and rate fits live in ``theory``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import grad, jacfwd, jvp, vmap

from . import theory
from .checks import check_choice, check_int, check_positive
from .directions import Subspace, check_subspace
from .problem import Problem

_METHODS = ("auto", "exact", "hutchinson", "subspace")
_FORMS = ("complete", "paper")
_BACKENDS = ("auto", "backpack", "torch.func")

#: ``method="auto"`` materialises per-sample Hessians in the full space up to this many parameters.
EXACT_MAX_PARAMS = 5_000

#: Subspaces up to this dimension get their projected derivatives in forward mode
#: (``projected_derivatives``); larger ones from d per-sample HVPs.
FORWARD_MAX_DIM = 16


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

    def hvp(x: Tensor, t: Tensor, v: Tensor) -> Tensor:
        return jvp(lambda u: gradient(u, x, t), (w,), (v,))[1]

    hvps = vmap(vmap(hvp, in_dims=(None, None, 1)), in_dims=(0, 0, None))(X, y, V)
    return losses, grads, hvps


def projected_derivatives(
    prob: Problem, X: Tensor, y: Tensor, P: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Losses (n,), projected gradients Pᵀg_i (n, d) and Hessians PᵀH_iP (n, d, d) of samples.

    Differentiates φ_i(z) = l_i(w* + Pz) at z = 0 twice in forward mode (``jacfwd(jacfwd)``):
    every tangent P e_j is shared by all samples, so the passes are batched matrix products and
    no per-sample N-vector is ever formed. Costs about d(d+1) forward passes over the chunk, so
    it beats per-sample HVPs (``per_sample_grads_and_hvps``) for small d only.
    """
    zero = torch.zeros(P.shape[1], dtype=P.dtype, device=P.device)

    def phi(z: Tensor) -> Tensor:
        return prob.sample_losses(prob.center + P @ z, X, y)

    return phi(zero), jacfwd(phi)(zero), jacfwd(jacfwd(phi))(zero)


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


_BACKPACK_ERRORS = (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError)
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
    traces = torch.zeros(prob.num_samples, dtype=prob.dtype, device=prob.device)
    eye = torch.eye(prob.num_params, dtype=prob.dtype, device=prob.device)
    samples, columns = _hvp_chunks(prob, prob.num_params)
    for i in range(0, prob.num_samples, samples):
        X, y = prob.X[i : i + samples], prob.y[i : i + samples]
        for j in range(0, prob.num_params, columns):
            E = eye[:, j : j + columns]
            hvps = per_sample_grads_and_hvps(prob, X, y, E)[2]
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
    seed: int = 0,
    progress: bool = True,
) -> DifferenceTerms:
    """a_k, ‖c_k‖², Tr M_k and Tr M_k² for every k = 2..K, exactly or with Hutchinson probes.

    Args:
        prob: the problem (network, ordered samples, centre w*).
        subspace: a basis P (any, orthonormal or not); None for the full space.
        method: ``"auto"`` picks ``"subspace"`` when a subspace is given, else ``"exact"`` for
            N ≤ EXACT_MAX_PARAMS and ``"hutchinson"`` above; the choice is in ``.notes``.
            ``"exact"`` with a subspace means the exact subspace route.
        probes: Rademacher probes for ``"hutchinson"`` (shared across every k).
        seed: seed of the probes.
        progress: show a progress bar over chunks of samples.

    Cost: "subspace" K·d per-sample HVPs; "exact" K·N per-sample HVPs and one N×N running sum;
    "hutchinson" K·m per-sample HVPs and one N×m running sum, plus one BackPACK pass for traces.
    """
    check_choice("method", method, _METHODS)
    probes = check_int("probes", probes, low=2)
    subspace = check_subspace(prob, subspace)
    notes: list[str] = []
    if subspace is not None:
        if method == "hutchinson":
            raise ValueError(
                "method='hutchinson' is for the full space; in a subspace the exact route costs only "
                "d per-sample HVPs per sample. Use method='auto' or 'subspace'."
            )
        route = "subspace"
    elif method == "subspace":
        raise ValueError("method='subspace' needs a subspace; pass subspace=... or use 'auto'.")
    elif method == "auto":
        route = "exact" if prob.num_params <= EXACT_MAX_PARAMS else "hutchinson"
        notes.append(
            f"method='auto' chose '{route}' (N={prob.num_params}, exact up to {EXACT_MAX_PARAMS})."
        )
    else:
        route = method
    if route == "hutchinson":
        return _hutchinson_terms(prob, probes, seed, progress, notes)
    return _exact_terms(prob, subspace, route, progress, notes)


def _exact_terms(
    prob: Problem, subspace: Subspace | None, route: str, progress: bool, notes: list[str]
) -> DifferenceTerms:
    P = (
        torch.eye(prob.num_params, dtype=prob.dtype, device=prob.device)
        if subspace is None
        else subspace.basis
    )
    dim = P.shape[1]
    forward = subspace is not None and dim <= FORWARD_MAX_DIM
    if forward:
        per_sample = 3 * dim * (dim + 1) * prob._bytes_per_sample + 4 * dim * dim * 8
        samples = max(1, min(prob.num_samples, prob.max_memory // per_sample))
    else:
        samples, columns = _hvp_chunks(prob, dim, block=dim * dim)
    prefix = _PrefixTerms()
    max_loss, max_grad, max_hess = -np.inf, 0.0, 0.0
    want_norms = dim <= 512
    bar = _bar(progress, prob.num_samples, f"per-sample curvature ({route}, d={dim})")
    for i in range(0, prob.num_samples, samples):
        X, y = prob.X[i : i + samples], prob.y[i : i + samples]
        if forward:
            losses, G, B = projected_derivatives(prob, X, y, P)
        else:
            blocks = []
            for j in range(0, dim, columns):
                losses, grads, hvps = per_sample_grads_and_hvps(prob, X, y, P[:, j : j + columns])
                blocks.append(hvps if subspace is None else hvps @ P)  # rows p_jᵀ H_i P
            B = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
            G = grads if subspace is None else grads @ P
        if subspace is not None:  # PᵀH_iP from two products: make it exactly symmetric
            B = 0.5 * (B + B.transpose(1, 2))
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
        method=route,
        dim=dim,
        trace_stderr=zeros,
        trace_sq_stderr=zeros,
        max_loss=max_loss,
        max_grad_norm=max_grad,
        max_hessian_norm=max_hess if want_norms else None,
        notes=tuple(notes),
    )


def _hutchinson_terms(
    prob: Problem, probes: int, seed: int, progress: bool, notes: list[str]
) -> DifferenceTerms:
    """Tr M_k² = E‖M_k v‖² over Rademacher v shared by every k; Tr M_k exact from BackPACK."""
    generator = torch.Generator().manual_seed(int(seed))
    V = torch.randint(0, 2, (prob.num_params, probes), generator=generator, dtype=torch.float64)
    V = (2 * V - 1).to(device=prob.device, dtype=prob.dtype)
    try:
        traces, _ = per_sample_hessian_traces(prob, backend="backpack")
        notes.append("Tr M_k exact from BackPACK BatchDiagHessian.")
    except ValueError as error:
        traces = None
        notes.append(f"Tr M_k estimated from the probes: {error}")
    samples, columns = _hvp_chunks(prob, probes)
    prefix = _PrefixTerms()
    max_loss, max_grad = -np.inf, 0.0
    bar = _bar(progress, prob.num_samples, f"per-sample HVPs (hutchinson, {probes} probes)")
    for i in range(0, prob.num_samples, samples):
        X, y = prob.X[i : i + samples], prob.y[i : i + samples]
        parts = []
        for j in range(0, probes, columns):
            losses, grads, hvps = per_sample_grads_and_hvps(prob, X, y, V[:, j : j + columns])
            parts.append(hvps)
        U = torch.cat(parts, dim=1)  # (n, probes, N): H_i v
        values = {"loss": losses, "grad": grads, "hv": U}
        if traces is not None:
            values["trace"] = traces[i : i + len(X)]
        diffs, k = prefix.differences(**values)
        Mv = diffs["hv"]  # (n, probes, N): M_k v
        quad = torch.einsum("spn,np->sp", Mv, V.to(Mv.dtype))  # vᵀ M_k v
        sq = Mv.square().sum(2)  # ‖M_k v‖²
        prefix.keep(
            k,
            gap=diffs["loss"],
            grad_sq=diffs["grad"].square().sum(1),
            trace=diffs["trace"] if traces is not None else quad.mean(1),
            trace_stderr=torch.zeros_like(quad[:, 0]) if traces is not None else _sem(quad),
            trace_sq=sq.mean(1),
            trace_sq_stderr=_sem(sq),
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

"""The Hessian of L_K at w*: exact products, top eigenpairs, spectral density, per-sample norms.

Everything here concerns H = ∇²L_K(w*), the Hessian of the mean loss over all K samples of a
``Problem`` at its centre, and the per-sample Hessians H_i = ∇²l_i(w*):

* ``hvp`` and ``hessian_operator`` — exact Hessian-vector products, summed over sample chunks so
  memory stays bounded; the operator is a SciPy ``LinearOperator`` that counts its products.
* ``top_eigenpairs`` — the top-d eigenpairs by implicitly restarted Lanczos (SciPy ``eigsh``), by
  PyHessian's power iteration (the reference backend users know, run on a copy of the network),
  or densely for small N; each pair comes with an exactly measured residual ‖Hv − λv‖.
* ``spectral_density`` — the eigenvalue density of H by stochastic Lanczos quadrature
  (curvlinops' implementation of Papyan 2020), with a pointwise standard error over probes.
* ``per_sample_spectral_norms`` — ‖H_i‖₂ for every sample (M_H = max_i ‖H_i‖₂ of the bounds),
  by Lanczos or power iteration on per-sample HVPs vectorised over samples with vmap.
* ``dense_hessian`` and ``per_sample_hessians`` — materialised matrices for small N and tests.
* ``per_sample_hvps_backward`` — per-sample HVPs by plain double backward (torch.autograd only):
  the slow reference that every faster per-sample route is proven against before it is used
  (``curvature.proven_route``; nested torch.func derivatives are wrong through some normalisation
  layers in torch 2.14).

Nothing here touches the difference terms a_k, c_k, M_k (``curvature``) or Monte Carlo (``delta``).
The caller's network is never modified: products are functional in the flat parameter vector, and
PyHessian, which needs a module with trainable parameters, gets a private deep copy.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from curvlinops._torch_base import PyTorchLinearOperator
from curvlinops.papyan2020traces.spectrum import (
    fast_lanczos,
    lanczos_approximate_spectrum_from_iter,
)
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn
from torch.func import vmap

from .checks import check_choice, check_int, check_positive
from .directions import Subspace
from .problem import Problem

EigenMethod = Literal["lanczos", "pyhessian", "dense"]
Which = Literal["LA", "LM"]
NormMethod = Literal["lanczos", "power"]

#: Sort keys for ``which``: "LA" largest algebraic first, "LM" largest magnitude first.
_ORDER: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "LA": lambda values: -values,
    "LM": lambda values: -np.abs(values),
}


# -- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Eigenpairs:
    """Top-d eigenpairs of the Hessian of L_K at w*, with their measured accuracy.

    Unpacks as ``values, subspace = top_eigenpairs(prob, d)``.

    Attributes:
        values: (d,) eigenvalue estimates, largest first (by value for ``which="LA"``, by magnitude
            for ``which="LM"``).
        subspace: ``Subspace`` of kind "hessian" whose (N, d) basis holds the unit eigenvectors
            as columns, on the Problem's device and dtype (orthonormal to working precision for
            Lanczos and dense; to within the power iteration's accuracy for PyHessian).
        residuals: (d,) ‖Hv − λv‖ for each pair, from one exact HVP per pair after the solve.
        relative_residuals: (d,) ‖Hv − λv‖ / |λ| (inf where λ = 0).
        hvps: Hessian-vector products the method used (the residual check not counted).
        method: the method that produced them ("lanczos", "pyhessian", "dense").
        converged: whether the method's own stopping rule was met for every pair (see
            ``top_eigenpairs``). For PyHessian that rule is a small change of λ between
            iterations, which does not imply a small residual: read ``relative_residuals``.
        tol: the tolerance that was asked for.
    """

    values: np.ndarray
    subspace: Subspace
    residuals: np.ndarray
    relative_residuals: np.ndarray
    hvps: int
    method: str
    converged: bool
    tol: float

    def __iter__(self) -> Iterator[np.ndarray | Subspace]:
        yield self.values
        yield self.subspace

    @property
    def vectors(self) -> Tensor:
        """The (N, d) eigenvectors (the subspace's basis)."""
        return self.subspace.basis


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """Hessian eigenvalue density ρ(λ) ≈ (1/N) Σ_j δ(λ − λ_j), smoothed, on a grid.

    Attributes:
        grid: (points,) eigenvalues λ at which the density is given.
        density: (points,) the density averaged over probes; it integrates to ≈ 1 over ``grid``.
        stderr: (points,) its standard error over probes (zeros for a single probe).
        num_probes: random probe vectors averaged.
        num_steps: Lanczos steps per probe (the quadrature's nodes).
        hvps: Hessian-vector products used, including the boundary estimate.
        boundaries: (λ_min, λ_max) estimates that set the grid (before the margin).
    """

    grid: np.ndarray
    density: np.ndarray
    stderr: np.ndarray
    num_probes: int
    num_steps: int
    hvps: int
    boundaries: tuple[float, float]


@dataclass(frozen=True, eq=False)
class SpectralNorms:
    """Per-sample Hessian spectral norms ‖H_i(w*)‖₂ for i = 1..K.

    Attributes:
        values: (K,) ‖H_i‖₂ = max_j |λ_j(H_i)|.
        signed: (K,) the eigenvalue of largest magnitude with its sign.
        residuals: (K,) ‖H_i u − λ u‖ for the returned eigenvector u, from one exact HVP.
        iterations: (K,) steps each sample took until its stopping rule was met (``iters`` if
            never).
        hvps: per-sample HVPs used in total (the residual check not counted).
        max: M_H = max_i ‖H_i‖₂.
        argmax: the (0-based) sample index attaining M_H.
        method: "lanczos" or "power".
        converged: whether every sample's exact relative residual is at most ``tol``.
        tol: the requested relative residual ‖H_i u − λ u‖ / |λ|.
    """

    values: np.ndarray
    signed: np.ndarray
    residuals: np.ndarray
    iterations: np.ndarray
    hvps: int
    max: float
    argmax: int
    method: str
    converged: bool
    tol: float


# -- exact Hessian-vector products ------------------------------------------------------------------


def _hvp_chunk(prob: Problem) -> int:
    """Samples per chunk of an HVP: the Problem's forward chunk (its estimate has a 2× margin)."""
    return prob.chunk_sizes(1)[1]


def _check_vectors(prob: Problem, V: Tensor) -> Tensor:
    V = torch.as_tensor(V)
    if V.ndim not in (1, 2) or V.shape[0] != prob.num_params:
        raise ValueError(
            f"v must have shape (N,) or (N, m) with N={prob.num_params}; got {tuple(V.shape)}."
        )
    return V.to(device=prob.device, dtype=prob.dtype)


def hvp(prob: Problem, v: Tensor) -> Tensor:
    """Exact Hessian-vector products H v with H = ∇²L_K(w*), L_K = (1/K) Σ_{i≤K} l_i.

    H v = Σ_chunks ∇_w ⟨∇_w (1/K) Σ_{i∈chunk} l_i(w), v⟩ at w = w*: reverse-over-reverse
    (double backward) on the flat parameter vector, one chunk of samples at a time, so memory
    stays bounded whatever K is. The Problem's model is called functionally and never modified.

    Why not curvlinops' ``HessianLinearOperator``: it gives the same numbers (forward-over-reverse
    through torch.func; measured agreement 1e-16 in float64) but it needs the module's own
    trainable parameters and vmaps over columns, which made each product 1.3–2× slower on a
    26k-parameter MLP and about 5× slower on a 51-parameter one, on a CPU.

    Args:
        prob: the Problem.
        v: (N,) vector or (N, m) matrix of m vectors.

    Returns:
        H v with the shape of ``v``, on the Problem's device and dtype.

    Example:
        >>> hvp(prob, torch.zeros(prob.num_params)).abs().max()   # doctest: +SKIP
        tensor(0.)
    """
    V = _check_vectors(prob, v)
    columns = V.reshape(prob.num_params, -1)
    out = torch.zeros_like(columns)
    w = prob.center.detach().requires_grad_(True)  # a fresh leaf; prob.center is untouched
    chunk = _hvp_chunk(prob)
    with torch.enable_grad():
        for k0 in range(0, prob.num_samples, chunk):
            X, y = prob.X[k0 : k0 + chunk], prob.y[k0 : k0 + chunk]
            loss = prob.sample_losses(w, X, y).sum() / prob.num_samples
            (gradient,) = torch.autograd.grad(loss, w, create_graph=True)
            if not gradient.requires_grad:  # a loss linear in w: this chunk's Hessian is 0
                continue
            for j in range(columns.shape[1]):
                last = j == columns.shape[1] - 1
                (product,) = torch.autograd.grad(
                    gradient, w, columns[:, j], retain_graph=not last, allow_unused=True
                )
                if product is not None:
                    out[:, j] += product
    return out.reshape(V.shape)


class HessianOperator(LinearOperator):
    """H = ∇²L_K(w*) as a SciPy ``LinearOperator`` (float64 NumPy in and out) that counts products.

    Each column multiplied is one exact ``hvp``; ``hvps`` counts them (a matmat with m columns
    counts m). ``matmat_torch`` multiplies torch tensors on the Problem's device without the NumPy
    round trip. H is symmetric, so the adjoint is the operator itself.

    Attributes:
        prob: the Problem.
        hvps: Hessian-vector products carried out so far.
    """

    def __init__(self, prob: Problem) -> None:
        super().__init__(dtype=np.dtype(np.float64), shape=(prob.num_params, prob.num_params))
        self.prob = prob
        self.hvps = 0

    def matmat_torch(self, V: Tensor) -> Tensor:
        """H V for a torch (N,) or (N, m) tensor, counted."""
        V = _check_vectors(self.prob, V)
        self.hvps += 1 if V.ndim == 1 else V.shape[1]
        return hvp(self.prob, V)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        V = torch.as_tensor(np.asarray(X, dtype=np.float64))
        return self.matmat_torch(V).detach().to("cpu", torch.float64).numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(x).reshape(-1, 1)).reshape(-1)

    _rmatvec = _matvec
    _rmatmat = _matmat

    def _adjoint(self) -> HessianOperator:
        return self


def hessian_operator(prob: Problem) -> HessianOperator:
    """The Hessian of L_K at w* as a counting SciPy ``LinearOperator``; see ``HessianOperator``.

    Example:
        >>> op = hessian_operator(prob)                       # doctest: +SKIP
        >>> y = op @ np.ones(prob.num_params); op.hvps
        1
    """
    return HessianOperator(prob)


class _TorchView(PyTorchLinearOperator):
    """A ``HessianOperator`` seen as a curvlinops ``PyTorchLinearOperator`` (for its SLQ code)."""

    SELF_ADJOINT = True

    def __init__(self, op: HessianOperator) -> None:
        n = op.shape[0]
        super().__init__([(n,)], [(n,)])
        self._op = op

    def _matmat(self, X: list[Tensor]) -> list[Tensor]:
        return [self._op.matmat_torch(X[0])]

    @property
    def device(self) -> torch.device:
        return self._op.prob.device

    @property
    def dtype(self) -> torch.dtype:
        return self._op.prob.dtype


# -- materialised Hessians (small N) ------------------------------------------------------------------


def dense_hessian(prob: Problem) -> Tensor:
    """The (N, N) Hessian of L_K at w*, materialised (for small N and tests).

    Column j is the exact product H e_j from ``hvp``: N double-backward passes through each
    chunk's gradient graph (measured 7–9× faster than vectorised ``torch.func.hessian`` for
    N = 51 and N = 940 on a CPU, and with the memory of one chunk's graph plus N² entries).
    Returned in the Problem's dtype, on its device; symmetric up to rounding.
    """
    eye = torch.eye(prob.num_params, device=prob.device, dtype=prob.dtype)
    return hvp(prob, eye)


def per_sample_hessians(prob: Problem, indices: Sequence[int] | Tensor | None = None) -> Tensor:
    """Dense per-sample Hessians H_i = ∇²l_i(w*), shape (len(indices), N, N) (for small N).

    Column j of H_i is the per-sample HVP H_i e_j (``Problem.sample_hvp``, jvp of grad), vmapped
    over samples and identity columns in chunks within ``max_memory`` — not
    ``torch.func.hessian``, whose nested derivatives are wrong through LayerNorm and InstanceNorm
    in torch 2.14. The HVPs are first proven on the network against plain double backward
    (``curvature.proven_hvps``); where they disagree, double backward computes every column (slow)
    and a warning says so. ``indices`` are 0-based sample positions (all K by default).
    """
    from .curvature import _hvp_chunks, per_sample_grads_and_hvps, proven_hvps

    if indices is None:
        index = torch.arange(prob.num_samples, device=prob.device)
    else:
        index = torch.as_tensor(indices, device=prob.device).reshape(-1)
        if index.is_floating_point() or (
            index.numel() and (index.min() < 0 or index.max() >= prob.num_samples)
        ):
            raise ValueError(
                f"indices must be integers in [0, {prob.num_samples - 1}]; got {indices!r}."
            )
    n = prob.num_params
    out = torch.zeros(index.numel(), n, n, device=prob.device, dtype=prob.dtype)
    if not index.numel():
        return out
    products, why = proven_hvps(prob)
    if products is not per_sample_grads_and_hvps:
        warnings.warn(f"per-sample Hessians by {why}.", stacklevel=2)
    eye = torch.eye(n, device=prob.device, dtype=prob.dtype)
    samples, columns = _hvp_chunks(prob, n)
    for i in range(0, index.numel(), samples):
        rows = index[i : i + samples]
        X, y = prob.X[rows], prob.y[rows]
        for j in range(0, n, columns):
            hvps = products(prob, X, y, eye[:, j : j + columns])[2]  # (n, m, N): H_i e_j
            out[i : i + len(rows), :, j : j + columns] = hvps.transpose(1, 2)
    return out


def per_sample_hvps_backward(
    prob: Problem, X: Tensor, y: Tensor, V: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Losses (n,), gradients (n, N) and products H_i V (n, m, N) of samples (X, y) by plain
    double backward; ``V`` (N, m) holds the vectors (None skips the products).

    One sample at a time: ∇l_i(w*) by reverse mode with ``create_graph``, then one reverse pass
    through it per vector (reverse over reverse, ``torch.autograd`` only: no torch.func transform,
    no vmap). This is the reference the faster per-sample routes are proven against before they
    are used, and their last resort: nested torch.func differentiation (``jacfwd(jacfwd)``,
    ``torch.func.hessian``) is wrong through some normalisation layers in torch 2.14, plain double
    backward is not. Slow: a Python loop over samples and vectors.

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


# -- top eigenpairs --------------------------------------------------------------------------------


class _Solution(NamedTuple):
    values: np.ndarray | None  # (m,) eigenvalues, or None: Rayleigh quotients of the vectors
    vectors: Tensor  # (N, m), unit columns, m ≥ d
    hvps: int
    converged: bool  # the method's own stopping rule was met for every pair


class _Solver(NamedTuple):
    solve: Callable[..., _Solution]
    max_d: Callable[[int], int]  # N -> the largest d the method accepts


def _lanczos_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> _Solution:
    """Top-d eigenpairs by implicitly restarted Lanczos: SciPy ``eigsh`` (ARPACK) on the operator.

    Krylov subspace K_m(H, v0) = span{v0, Hv0, …, H^{m−1}v0}, Ritz pairs from the Lanczos
    tridiagonal matrix, implicit restarts keeping the wanted part (Lehoucq & Sorensen 1996).
    ARPACK accepts a Ritz pair when its residual estimate ‖r‖ ≤ tol·|θ|; v0 is uniform on
    [−1, 1]^N from ``numpy.random.RandomState(seed)``.
    """
    op = hessian_operator(prob)
    v0 = np.random.RandomState(seed).uniform(-1.0, 1.0, prob.num_params)
    try:
        values, vectors = eigsh(op, k=d, which=which, tol=tol, v0=v0, maxiter=max_iter)
    except ArpackNoConvergence as error:
        raise RuntimeError(
            f"Lanczos (eigsh) did not converge for d={d} pairs within max_iter={max_iter} "
            f"restarts at tol={tol} ({len(error.eigenvalues)} converged); raise max_iter or tol."
        ) from None
    V = torch.as_tensor(vectors).to(device=prob.device, dtype=prob.dtype)
    V = V / V.norm(dim=0, keepdim=True)
    return _Solution(values, V, op.hvps, True)


def _pyhessian_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> _Solution:
    """Top-d eigenpairs by PyHessian's power iteration with deflation (Yao et al. 2020).

    For each j ≤ d: v ← random, then repeat v ← orth(v, v_1..v_{j−1}), λ ← vᵀHv,
    v ← Hv / ‖Hv‖ until |λ_t − λ_{t−1}| / (|λ_{t−1}| + 1e-6) < tol or ``max_iter`` (per pair)
    iterations. This converges to the eigenvalues of *largest magnitude*, so ``which="LA"``
    and ``"LM"`` only differ in how the results are sorted.

    PyHessian runs unchanged on a deep copy of the network with trainable parameters, through
    its data-loader path with the Problem's sample chunks: it weights each chunk's mean-loss HVP
    by the chunk's size and divides by K, which is exactly H of L_K. Its random start vectors come
    from the global generator, so it runs inside ``fork_rng`` with the CPU generator seeded by
    ``seed`` (the caller's random stream is left as it was), and with the default dtype set to the
    Problem's so that those vectors are in its precision.
    """
    from pyhessian import hessian as pyhessian_engine

    if prob.device.type not in ("cpu", "cuda"):
        raise ValueError(f"method='pyhessian' runs on 'cpu' or 'cuda', not on {prob.device}.")
    model = copy.deepcopy(prob.model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    chunk = _hvp_chunk(prob)
    batches = [
        (prob.X[k0 : k0 + chunk], prob.y[k0 : k0 + chunk])
        for k0 in range(0, prob.num_samples, chunk)
    ]
    rayleigh: list[float] = []  # the value PyHessian computes with each of its HVPs, in order
    with (
        _seeded(seed, prob.device),
        _default_dtype(prob.dtype),
        _cuda_device(prob.device),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*create_graph=True.*")
        engine = pyhessian_engine(
            model, _MeanLoss(prob.loss_fn), dataloader=batches, cuda=prob.device.type == "cuda"
        )
        product = engine.dataloader_hv_product

        def counted(v: list[Tensor]) -> tuple[float, list[Tensor]]:
            value, Hv = product(v)
            rayleigh.append(value)
            return value, Hv

        engine.dataloader_hv_product = counted  # on this instance only
        iterations = 1000 if max_iter is None else max_iter
        _, raw_vectors = engine.eigenvalues(maxIter=iterations, tol=tol, top_n=d)
    model.zero_grad(set_to_none=True)
    V = torch.stack([prob.flatten([t.detach() for t in vec]) for vec in raw_vectors], dim=1)
    V = (V / V.norm(dim=0)).to(device=prob.device, dtype=prob.dtype)
    converged = _replay_power_iteration(rayleigh, d, iterations, tol)
    return _Solution(None, V, len(rayleigh), converged)


def _replay_power_iteration(values: list[float], pairs: int, max_iter: int, tol: float) -> bool:
    """Whether PyHessian 0.1's loop stopped on its tolerance (not on max_iter) for every pair.

    Replays its control flow on the sequence of its Rayleigh quotients: a pair ends at the first
    iteration whose value changed by less than tol·(|previous| + 1e-6), or after max_iter.
    """
    position = 0
    for _ in range(pairs):
        run = values[position : position + max_iter]
        changes = [
            abs(before - after) / (abs(before) + 1e-6) for before, after in zip(run, run[1:])
        ]
        stop = next((i for i, change in enumerate(changes) if change < tol), None)
        if stop is None:
            return False
        position += stop + 2  # the pair used the values up to and including run[stop + 1]
    return True


def _dense_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> _Solution:
    """All eigenpairs of the materialised Hessian (``dense_hessian``) by ``torch.linalg.eigh``.

    Exact to working precision; costs N HVPs (counted in ``hvps``) and N² memory. Accepts d = N.
    """
    H = dense_hessian(prob)
    values, vectors = torch.linalg.eigh((H + H.T) / 2)
    return _Solution(values.cpu().double().numpy(), vectors, prob.num_params, True)


_EIGEN_METHODS: dict[str, _Solver] = {
    "lanczos": _Solver(_lanczos_eigenpairs, lambda n: n - 1),  # ARPACK needs d < N
    "pyhessian": _Solver(_pyhessian_eigenpairs, lambda n: n),
    "dense": _Solver(_dense_eigenpairs, lambda n: n),
}


def top_eigenpairs(
    prob: Problem,
    d: int,
    method: EigenMethod = "lanczos",
    tol: float = 1e-4,
    which: Which = "LA",
    seed: int = 0,
    max_iter: int | None = None,
) -> Eigenpairs:
    """The top-d eigenpairs (λ_j, v_j) of H = ∇²L_K(w*), the Hessian of the mean loss over all K.

    Methods:

    * ``"lanczos"`` (default): implicitly restarted Lanczos, SciPy ``eigsh`` on
      ``hessian_operator``; ``tol`` is ARPACK's relative residual tolerance ‖r‖ ≤ tol·|λ|;
      ``max_iter`` its number of restarts (None: SciPy's 10·N). Needs d ≤ N − 1 (an ARPACK
      limit; use ``"dense"`` for d = N). Failure to converge raises ``RuntimeError``.
    * ``"pyhessian"``: PyHessian's power iteration with deflation, on a copy of the network;
      ``tol`` is its relative change of λ between iterations, ``max_iter`` its iterations per
      pair (None: 1000). It finds the largest-*magnitude* eigenvalues; with ``which="LA"`` a
      warning says so when one of them is negative.
    * ``"dense"``: ``torch.linalg.eigh`` of ``dense_hessian`` — exact, for small N.

    After the solve, one exact HVP per pair measures ``residuals`` ‖Hv − λv‖ (not counted in
    ``hvps``). For PyHessian the reported λ is the Rayleigh quotient vᵀHv of the returned unit
    vector v, from that same product: PyHessian's own number belongs to its previous iterate and
    carries the bias of its ``‖·‖ + 1e-6`` normalisation. ``converged`` says whether the method's
    own stopping rule was met for every pair: for Lanczos, ARPACK's (it raises otherwise); for
    PyHessian, whether its loop stopped on ``tol`` rather than on ``max_iter`` for every pair
    (replayed from the values it computed). PyHessian's rule can be met by a vector that is no
    eigenvector: on an untrained 3,466-parameter MLP whose spectrum has close ±λ pairs, tol=1e-4
    ended with a pair of relative residual 1.3 — the residuals are the measure of accuracy.

    Args:
        prob: the Problem.
        d: the number of eigenpairs, 1 ≤ d ≤ N − 1 (≤ N for "pyhessian" and "dense").
        method: "lanczos", "pyhessian" or "dense".
        tol: the method's convergence tolerance (> 0).
        which: "LA" (largest algebraic, the default) or "LM" (largest magnitude).
        seed: seeds the start vector(s).
        max_iter: the method's iteration limit (see above).

    Returns:
        ``Eigenpairs``; ``vals, sub = top_eigenpairs(prob, d)`` unpacks values and subspace.

    Example:
        >>> vals, sub = top_eigenpairs(prob, 2)              # doctest: +SKIP
        >>> sub.basis.shape
        torch.Size([N, 2])
    """
    solver = _EIGEN_METHODS[check_choice("method", method, _EIGEN_METHODS)]
    check_choice("which", which, _ORDER)
    d = check_int("d", d, low=1, high=solver.max_d(prob.num_params))
    tol = check_positive("tol", tol)
    seed = check_int("seed", seed, low=0)
    if max_iter is not None:
        max_iter = check_int("max_iter", max_iter, low=1)

    solution = solver.solve(prob, d, which, tol, seed, max_iter)
    V, HV, values = solution.vectors, None, solution.values
    if values is None:  # Rayleigh quotients vᵀHv from the residual check's products
        HV = hvp(prob, V)
        values = (V * HV).sum(0).detach().cpu().double().numpy()
    order = np.argsort(_ORDER[which](np.asarray(values)), kind="stable")[:d]
    index = torch.as_tensor(order.copy(), device=V.device)
    values = np.asarray(values, dtype=np.float64)[order]
    V = V[:, index]
    HV = hvp(prob, V) if HV is None else HV[:, index]
    lam = torch.as_tensor(values, device=V.device, dtype=V.dtype)
    residuals = (HV - V * lam).norm(dim=0).detach().cpu().double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(values != 0, residuals / np.abs(values), np.inf)
    if method == "pyhessian" and which == "LA" and np.any(values < 0):
        warnings.warn(
            "PyHessian's power iteration finds the largest-magnitude eigenvalues; a negative one "
            f"({values.min():.4g}) is among them, so these are not the {d} largest algebraic "
            "eigenvalues. Use method='lanczos' for which='LA'.",
            stacklevel=2,
        )
    return Eigenpairs(
        values=values,
        subspace=Subspace(V.detach(), "hessian"),
        residuals=residuals,
        relative_residuals=relative,
        hvps=int(solution.hvps),
        method=method,
        converged=bool(solution.converged),
        tol=tol,
    )


class _MeanLoss(nn.Module):
    """The Problem's per-sample loss averaged over a batch, as a module (``reduction="mean"``)."""

    reduction = "mean"

    def __init__(self, per_sample: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.per_sample = per_sample

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.per_sample(output, target).mean()


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the CPU generator (and ``device``'s, if CUDA) inside ``fork_rng``; restore on exit."""
    cuda = device.type == "cuda"
    index = (
        (device.index if device.index is not None else torch.cuda.current_device()) if cuda else 0
    )
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _cuda_device(device: torch.device) -> contextlib.AbstractContextManager:
    """PyHessian moves tensors to 'cuda', i.e. the current CUDA device: make it the Problem's."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# -- spectral density --------------------------------------------------------------------------------


def spectral_density(
    prob: Problem,
    num_probes: int = 8,
    num_steps: int | None = None,
    grid: int = 512,
    kappa: float = 3.0,
    margin: float = 0.05,
    boundaries: tuple[float, float] | None = None,
    seed: int = 0,
) -> SpectralDensity:
    """The eigenvalue density of H = ∇²L_K(w*) by stochastic Lanczos quadrature (SLQ).

    For a unit probe v uniform on the sphere, m Lanczos steps give a tridiagonal T_m with
    eigenpairs (θ_j, s_j); vᵀ f(H) v ≈ Σ_j s_{1j}² f(θ_j) (Gauss quadrature), and
    E_v vᵀ f(H) v = (1/N) Tr f(H). Taking f as a Gaussian bump gives the smoothed density
    ρ(λ) ≈ E_v Σ_j s_{1j}² 𝒩(λ; θ_j, s²), averaged over ``num_probes`` probes (Lin, Saad & Yang
    2016; Papyan 2020, Algorithm 2 — curvlinops' ``fast_lanczos`` and
    ``lanczos_approximate_spectrum_from_iter``). The spectrum is mapped to [−1, 1] using
    ``boundaries`` (from ``eigsh`` with a seeded start, tol 1e-2, when not given), padded by
    ``margin``; the bump width there is 2 / ((m − 1) √(8 ln κ)). Its first moment is exact per
    probe: ∫ λ ρ_v(λ) dλ = vᵀHv, so the mean of the density estimates Tr H / N.

    Args:
        prob: the Problem.
        num_probes: probes averaged (≥ 1); ``stderr`` is the pointwise standard error over them.
        num_steps: Lanczos steps per probe, 2 ≤ m ≤ N − 1 (None: min(64, N − 1)). The
            Lanczos recursion is not reorthogonalised, as in Papyan 2020.
        grid: number of grid points (≥ 2).
        kappa: bump-width parameter (> 1).
        margin: relative padding of the spectral interval (≥ 0).
        boundaries: (λ_min, λ_max) if known; otherwise estimated.
        seed: seeds the probes (and the boundary estimate's start vector).

    Returns:
        ``SpectralDensity``.
    """
    n = prob.num_params
    num_probes = check_int("num_probes", num_probes, low=1)
    num_steps = check_int(
        "num_steps", min(64, n - 1) if num_steps is None else num_steps, low=2, high=n - 1
    )
    grid = check_int("grid", grid, low=2)
    kappa = check_positive("kappa", kappa)
    if kappa <= 1:
        raise ValueError(f"kappa={kappa} must be > 1.")
    if not isinstance(margin, int | float) or not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin={margin!r} must be a finite number >= 0.")
    seed = check_int("seed", seed, low=0)

    op = hessian_operator(prob)
    if boundaries is None:
        if n < 3:
            raise ValueError(f"boundaries must be given when N={n} < 3.")
        v0 = np.random.RandomState(seed).uniform(-1.0, 1.0, n)
        low, high = eigsh(op, k=2, which="BE", tol=1e-2, v0=v0, return_eigenvectors=False)
        boundaries = (float(min(low, high)), float(max(low, high)))
    else:
        boundaries = (float(boundaries[0]), float(boundaries[1]))
        if not boundaries[0] < boundaries[1]:
            raise ValueError(f"boundaries={boundaries} must be (λ_min, λ_max) with λ_min < λ_max.")

    view = _TorchView(op)
    densities = []
    with _seeded(seed, prob.device):
        for _ in range(num_probes):
            nodes = fast_lanczos(view, num_steps)
            points, density = lanczos_approximate_spectrum_from_iter(
                nodes, boundaries, grid, kappa, margin
            )
            densities.append(density)
    stacked = torch.stack(densities).detach().cpu().double().numpy()
    if not np.isfinite(stacked).all():
        raise RuntimeError(
            f"the Lanczos recursion broke down (num_steps={num_steps} reached an invariant "
            "subspace); use fewer num_steps."
        )
    stderr = stacked.std(0, ddof=1) / np.sqrt(num_probes) if num_probes > 1 else np.zeros(grid)
    return SpectralDensity(
        grid=points.detach().cpu().double().numpy(),
        density=stacked.mean(0),
        stderr=stderr,
        num_probes=num_probes,
        num_steps=num_steps,
        hvps=op.hvps,
        boundaries=boundaries,
    )


# -- per-sample spectral norms -----------------------------------------------------------------------


def _per_sample_hvps(prob: Problem, X: Tensor, y: Tensor, V: Tensor) -> Tensor:
    """H_i v_i for each sample i of (X, y) and its own vector v_i: (m, N) -> (m, N).

    ``Problem.sample_hvp`` (forward over reverse on one sample's loss), vmapped over samples.
    """
    return vmap(prob.sample_hvp)(X, y, V)


def _per_sample_hvps_backward(prob: Problem, X: Tensor, y: Tensor, V: Tensor) -> Tensor:
    """``_per_sample_hvps`` by plain double backward (``per_sample_hvps_backward``), for networks
    on which the vmapped HVPs disagree with it."""
    return torch.stack(
        [
            per_sample_hvps_backward(prob, X[i : i + 1], y[i : i + 1], V[i])[2][0, 0]
            for i in range(len(X))
        ]
    )


PerSampleHVPs = Callable[[Problem, Tensor, Tensor, Tensor], Tensor]


def _start_vectors(prob: Problem, count: int, generator: torch.Generator) -> Tensor:
    V = torch.randn(count, prob.num_params, generator=generator, dtype=torch.float64)
    V = V.to(device=prob.device, dtype=prob.dtype)
    return V / V.norm(dim=1, keepdim=True)


#: Lanczos vectors kept per sample: a cycle that has not converged after this many steps restarts
#: from its two extreme Ritz vectors, so memory per sample stays bounded whatever ``iters``.
LANCZOS_BASIS = 32


def _lanczos_norms(
    prob: Problem,
    X: Tensor,
    y: Tensor,
    V0: Tensor,
    steps: int,
    tol: float,
    product: PerSampleHVPs = _per_sample_hvps,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Largest-|λ| Ritz pairs of m per-sample Hessians by explicitly restarted Lanczos.

    Cycles of at most ``LANCZOS_BASIS`` steps (``_lanczos_cycle``); after each, the samples that
    have not converged restart from the normalised sum of their two extreme Ritz vectors (so
    neither end of the spectrum is lost), and only they go on, until ``steps`` steps in all.

    Returns:
        (θ (m,), unit Ritz vectors (m, N), steps used per sample (m,), HVPs used).
    """
    theta = torch.zeros(len(V0), device=V0.device, dtype=V0.dtype)
    U = V0.clone()
    start = V0.clone()
    used = torch.zeros(len(V0), dtype=torch.long, device=V0.device)
    active = torch.arange(len(V0), device=V0.device)
    hvps, remaining = 0, steps
    while active.numel() and remaining > 0:
        length = min(LANCZOS_BASIS, remaining)
        cycle = _lanczos_cycle(prob, X[active], y[active], start[active], length, tol, product)
        theta[active], U[active], start[active] = cycle.theta, cycle.vector, cycle.restart
        used[active] += cycle.taken
        hvps += active.numel() * cycle.ran
        remaining -= length
        active = active[~cycle.done]
    return theta, U, used, hvps


class _Cycle(NamedTuple):
    theta: Tensor  # (m,) Ritz value of largest magnitude
    vector: Tensor  # (m, N) its unit Ritz vector
    restart: Tensor  # (m, N) unit start vector for a next cycle: both extreme Ritz vectors
    taken: Tensor  # (m,) steps each sample took
    done: Tensor  # (m,) bool
    ran: int  # steps run


def _lanczos_cycle(
    prob: Problem,
    X: Tensor,
    y: Tensor,
    V0: Tensor,
    steps: int,
    tol: float,
    product: PerSampleHVPs = _per_sample_hvps,
) -> _Cycle:
    """One Lanczos cycle per sample, m of them side by side, from start vectors V0 (m, N).

    Lanczos with full reorthogonalisation: q_{j+1} β_j = H_i q_j − α_j q_j − β_{j−1} q_{j−1},
    orthogonalised again against all q's; the Ritz pairs (θ, u = Q s) of the tridiagonal T_j
    approximate the extreme eigenpairs, with ‖H_i u − θ u‖ = β_j |s_j|. A sample is done once
    the Ritz pairs at *both* ends (smallest and largest θ) have residuals ≤ tol · max |θ| —
    the largest |λ| is then the larger of the two; stopping on the largest-|θ| pair alone could
    certify, say, λ = +2.30 while −2.32 has not yet surfaced — or once the Krylov space is
    exhausted (β_j ≈ 0, the Ritz values are then exact; per-sample Hessians have low rank r, so
    this happens after at most r + 1 steps).
    """
    m, n = V0.shape
    Q = torch.zeros(m, steps + 1, n, device=V0.device, dtype=V0.dtype)
    Q[:, 0] = V0
    alpha = torch.zeros(m, steps, device=V0.device, dtype=V0.dtype)
    beta = torch.zeros(m, steps, device=V0.device, dtype=V0.dtype)
    taken = torch.full((m,), steps, dtype=torch.long, device=V0.device)
    done = torch.zeros(m, dtype=torch.bool, device=V0.device)
    eps = torch.finfo(V0.dtype).eps
    scale = torch.full((m,), torch.finfo(V0.dtype).tiny, device=V0.device, dtype=V0.dtype)
    j = 0
    for j in range(steps):
        W = product(prob, X, y, Q[:, j])
        alpha[:, j] = (Q[:, j] * W).sum(1)
        W = W - alpha[:, j, None] * Q[:, j]
        if j > 0:
            W = W - beta[:, j - 1, None] * Q[:, j - 1]
        basis = Q[:, : j + 1]
        for _ in range(2):  # full reorthogonalisation; twice is enough
            W = W - torch.einsum("mk,mkn->mn", torch.einsum("mkn,mn->mk", basis, W), basis)
        b = W.norm(dim=1)
        scale = torch.maximum(scale, alpha[:, j].abs() + b)
        exhausted = b <= 100 * eps * scale
        beta[:, j] = torch.where(exhausted, torch.zeros_like(b), b)
        Q[:, j + 1] = torch.where(
            exhausted[:, None], torch.zeros_like(W), W / b.clamp_min(eps)[:, None]
        )
        values, S = _ritz(alpha[:, : j + 1], beta[:, :j])
        ends = beta[:, j, None] * S[:, -1, [0, -1]].abs()  # residuals at both ends
        size = values[:, [0, -1]].abs().amax(1)
        newly = ~done & (exhausted | (ends.amax(1) <= tol * size))
        taken[newly] = j + 1
        done |= newly
        if bool(done.all()):
            break
    values, S = _ritz(alpha[:, : j + 1], beta[:, :j])
    ends = torch.einsum("mkr,mkn->mrn", S[:, :, [0, -1]], Q[:, : j + 1])  # (m, 2, N)
    pick = values[:, [0, -1]].abs().argmax(1)  # 0: the smallest θ, 1: the largest
    rows = torch.arange(m, device=V0.device)
    vector, restart = ends[rows, pick], ends.sum(1)
    return _Cycle(
        theta=values[:, [0, -1]][rows, pick],
        vector=vector / vector.norm(dim=1, keepdim=True),
        restart=restart / restart.norm(dim=1, keepdim=True).clamp_min(eps),
        taken=taken.masked_fill(~done, j + 1),
        done=done,
        ran=j + 1,
    )


def _ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs (θ ascending (m, j), s (m, j, j)) of each tridiagonal T = tridiag(β, α, β)."""
    T = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return torch.linalg.eigh(T)


def _power_norms(
    prob: Problem,
    X: Tensor,
    y: Tensor,
    V0: Tensor,
    steps: int,
    tol: float,
    product: PerSampleHVPs = _per_sample_hvps,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Largest-|λ| eigenpairs of m per-sample Hessians by power iteration run side by side.

    v ← H_i v / ‖H_i v‖; θ = vᵀH_i v (the Rayleigh quotient keeps the sign); a sample stops once
    ‖H_i v − θ v‖ ≤ tol·|θ|. Converges like (|λ₂|/|λ₁|)^t, slowly when |λ₂| ≈ |λ₁| — including
    a pair λ₂ ≈ −λ₁, where v keeps mixing the two and the residual stays large.

    Returns:
        (θ (m,), unit vectors (m, N), steps used per sample (m,), HVPs used).
    """
    V = V0.clone()
    m = len(V)
    theta = torch.zeros(m, device=V.device, dtype=V.dtype)
    used = torch.full((m,), steps, device=V.device)
    done = torch.zeros(m, dtype=torch.bool, device=V.device)
    t = 0
    for t in range(steps):
        W = product(prob, X, y, V)
        theta = torch.where(done, theta, (V * W).sum(1))
        residual = (W - theta[:, None] * V).norm(dim=1)
        newly = ~done & (residual <= tol * theta.abs())
        used[newly] = t + 1
        done |= newly
        if bool(done.all()):
            break
        norm = W.norm(dim=1, keepdim=True)
        V = torch.where(
            done[:, None] | (norm == 0), V, W / norm.clamp_min(torch.finfo(V.dtype).tiny)
        )
    return theta, V, used, m * (t + 1)


_NORM_METHODS: dict[str, Callable[..., tuple[Tensor, Tensor, Tensor, int]]] = {
    "lanczos": _lanczos_norms,
    "power": _power_norms,
}

#: Default limits on the steps per sample, per method.
_NORM_ITERS = {"lanczos": 200, "power": 2000}


def per_sample_spectral_norms(
    prob: Problem,
    method: NormMethod = "lanczos",
    iters: int | None = None,
    tol: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
) -> SpectralNorms:
    """Spectral norms ‖H_i(w*)‖₂ = max_j |λ_j(H_i)| of every per-sample Hessian, and M_H = max_i.

    Each H_i is only touched through per-sample HVPs H_i v (``jvp`` of ``grad``), vectorised over
    a chunk of samples with ``vmap``, each sample with its own vector — after they are proven on
    the network against plain double backward (``curvature.proven_hvps``); where they disagree,
    double backward takes over (slow) and a warning says so. Methods:

    * ``"lanczos"`` (default): one Lanczos process per sample with full reorthogonalisation,
      restarted from its best Ritz vector every ``LANCZOS_BASIS`` steps; the Ritz value of
      largest magnitude. Per-sample Hessians have low rank r, so it stops after at most r + 1
      steps and usually far sooner. Memory: ``LANCZOS_BASIS`` + 1 N-vectors per sample in the
      chunk.
    * ``"power"``: power iteration v ← H_i v / ‖H_i v‖ with the Rayleigh quotient; converges
      like (|λ₂|/|λ₁|)^t, which is slow when the top two magnitudes are close (a sign-flipped
      pair ±λ is common in the indefinite per-sample Hessian).

    A sample stops when its residual ‖H_i u − θ u‖ ≤ tol·|θ|; ``residuals`` are then measured
    exactly with one more per-sample HVP, and ``converged`` says whether every one meets
    ``tol``. A residual ε bounds the error of |θ| as an eigenvalue by ε (and by ε²/gap for
    Lanczos); ‖H_i‖₂ is the largest magnitude, which both methods find from a random start.

    Args:
        prob: the Problem.
        method: "lanczos" or "power".
        iters: the largest number of steps per sample (None: 200 for Lanczos, 2000 for power).
        tol: relative residual at which a sample stops (> 0).
        seed: seeds the random start vectors (one per sample, from one CPU generator).
        progress: show a progress bar over sample chunks.

    Returns:
        ``SpectralNorms`` with values aligned with the Problem's sample order.

    Example:
        >>> norms = per_sample_spectral_norms(prob)           # doctest: +SKIP
        >>> norms.max, norms.argmax
    """
    run = _NORM_METHODS[check_choice("method", method, _NORM_METHODS)]
    iters = check_int("iters", _NORM_ITERS[method] if iters is None else iters, low=1)
    tol = check_positive("tol", tol)
    seed = check_int("seed", seed, low=0)

    from .curvature import per_sample_grads_and_hvps, proven_hvps

    products, why = proven_hvps(prob)  # vmapped HVPs only where double backward confirms them
    product = _per_sample_hvps
    if products is not per_sample_grads_and_hvps:
        warnings.warn(f"per-sample spectral norms by {why}.", stacklevel=2)
        product = _per_sample_hvps_backward
    n, K = prob.num_params, prob.num_samples
    vectors_per_sample = (min(iters, LANCZOS_BASIS) + 8) if method == "lanczos" else 8
    by_memory = prob.max_memory // (vectors_per_sample * n * prob.dtype.itemsize)
    chunk = max(1, min(_hvp_chunk(prob), by_memory))
    generator = torch.Generator().manual_seed(seed)
    theta = torch.zeros(K, dtype=prob.dtype, device=prob.device)
    residuals = torch.zeros(K, dtype=prob.dtype, device=prob.device)
    used = torch.zeros(K, dtype=torch.long, device=prob.device)
    hvps = 0
    starts = range(0, K, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="per-sample ‖H_i‖", unit="chunk", leave=False)
    with torch.no_grad():
        for k0 in starts:
            X, y = prob.X[k0 : k0 + chunk], prob.y[k0 : k0 + chunk]
            V0 = _start_vectors(prob, len(X), generator)
            values, U, steps_used, count = run(prob, X, y, V0, iters, tol, product)
            HU = product(prob, X, y, U)
            theta[k0 : k0 + len(X)] = values
            residuals[k0 : k0 + len(X)] = (HU - values[:, None] * U).norm(dim=1)
            used[k0 : k0 + len(X)] = steps_used
            hvps += count
    signed = theta.cpu().double().numpy()
    norms = np.abs(signed)
    res = residuals.cpu().double().numpy()
    argmax = int(np.argmax(norms))
    return SpectralNorms(
        values=norms,
        signed=signed,
        residuals=res,
        iterations=used.cpu().numpy(),
        hvps=hvps,
        max=float(norms[argmax]),
        argmax=argmax,
        method=method,
        converged=bool(np.all(res <= tol * norms)),
        tol=tol,
    )

"""Top eigenpairs of H = ∇²L_K(w*): Lanczos (SciPy ``eigsh``), PyHessian's power iteration, dense.

``top_eigenpairs`` finds the top-d eigenpairs (λ_j, v_j) of the Hessian of the mean loss over all K
samples at the centre, by one of three solvers in the ``SOLVERS`` table — implicitly restarted
Lanczos on ``HessianOperator.to_scipy()`` (the default), PyHessian's power iteration on a copy of
the network (``hessian.pyhessian_adapter``), or ``torch.linalg.eigh`` of the materialised Hessian
for small N — and measures each pair's residual ‖Hv − λv‖ exactly afterwards. The result is a
frozen ``Eigenpairs`` whose ``subspace`` is a ``directions.Subspace`` of kind "hessian". Spectral
densities are ``hessian.density``'s, per-sample Hessians ``hessian.per_sample``'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor

from ..checks import check_choice, check_int, check_positive
from ..directions import Subspace
from ..problem import Problem
from .operator import HessianOperator, dense_hessian, hvp
from .pyhessian_adapter import pyhessian_vectors

EigenMethod = Literal["lanczos", "pyhessian", "dense"]
Which = Literal["LA", "LM"]

#: Sort keys for ``which``: "LA" largest algebraic first, "LM" largest magnitude first.
ORDER: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "LA": lambda values: -values,
    "LM": lambda values: -np.abs(values),
}


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


class Solution(NamedTuple):
    """What a solver returns: unit vectors, their eigenvalues if it has them, and its cost."""

    values: np.ndarray | None  # (m,) eigenvalues, or None: Rayleigh quotients of the vectors
    vectors: Tensor  # (N, m), unit columns, m ≥ d
    hvps: int
    converged: bool  # the method's own stopping rule was met for every pair


class Solver(NamedTuple):
    solve: Callable[..., Solution]
    max_d: Callable[[int], int]  # N -> the largest d the method accepts


def lanczos_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> Solution:
    """Top-d eigenpairs by implicitly restarted Lanczos: SciPy ``eigsh`` (ARPACK) on the operator.

    Krylov subspace K_m(H, v0) = span{v0, Hv0, …, H^{m−1}v0}, Ritz pairs from the Lanczos
    tridiagonal matrix, implicit restarts keeping the wanted part (Lehoucq & Sorensen 1996).
    ARPACK accepts a Ritz pair when its residual estimate ‖r‖ ≤ tol·|θ|; v0 is uniform on
    [−1, 1]^N from ``numpy.random.RandomState(seed)``.
    """
    op = HessianOperator(prob)
    v0 = np.random.RandomState(seed).uniform(-1.0, 1.0, prob.num_params)
    try:
        values, vectors = eigsh(op.to_scipy(), k=d, which=which, tol=tol, v0=v0, maxiter=max_iter)
    except ArpackNoConvergence as error:
        raise RuntimeError(
            f"Lanczos (eigsh) did not converge for d={d} pairs within max_iter={max_iter} "
            f"restarts at tol={tol} ({len(error.eigenvalues)} converged); raise max_iter or tol."
        ) from None
    V = torch.as_tensor(vectors).to(device=prob.device, dtype=prob.dtype)
    V = V / V.norm(dim=0, keepdim=True)
    return Solution(values, V, op.hvps, True)


def pyhessian_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> Solution:
    """Top-d eigenvectors by PyHessian's power iteration (``pyhessian_adapter``); it finds the
    eigenvalues of largest magnitude, so ``which`` only decides how they are sorted."""
    V, hvps, converged = pyhessian_vectors(prob, d, tol, seed, max_iter)
    return Solution(None, V, hvps, converged)


def dense_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> Solution:
    """All eigenpairs of the materialised Hessian (``dense_hessian``) by ``torch.linalg.eigh``.

    Exact to working precision; costs N HVPs (counted in ``hvps``) and N² memory. Accepts d = N.
    """
    H = dense_hessian(prob)
    values, vectors = torch.linalg.eigh((H + H.T) / 2)
    return Solution(values.cpu().double().numpy(), vectors, prob.num_params, True)


#: The eigen solvers by method, with the largest d each accepts.
SOLVERS: dict[str, Solver] = {
    "lanczos": Solver(lanczos_eigenpairs, lambda n: n - 1),  # ARPACK needs d < N
    "pyhessian": Solver(pyhessian_eigenpairs, lambda n: n),
    "dense": Solver(dense_eigenpairs, lambda n: n),
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
      ``HessianOperator(prob).to_scipy()``; ``tol`` is ARPACK's relative residual tolerance
      ‖r‖ ≤ tol·|λ|; ``max_iter`` its number of restarts (None: SciPy's 10·N). Needs d ≤ N − 1
      (an ARPACK limit; use ``"dense"`` for d = N). Failure to converge raises ``RuntimeError``.
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
    solver = SOLVERS[check_choice("method", method, SOLVERS)]
    check_choice("which", which, ORDER)
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
    order = np.argsort(ORDER[which](np.asarray(values)), kind="stable")[:d]
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

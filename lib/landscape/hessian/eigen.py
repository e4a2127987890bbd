"""Top eigenpairs of H = ∇²L_K(w*): thick-restart Lanczos, PyHessian's power iteration, dense.

``top_eigenpairs`` finds the top-d eigenpairs (λ_j, v_j) of the Hessian of the mean loss over all K
samples at the centre, by one of three solvers in the ``SOLVERS`` table — thick-restart Lanczos in
torch on ``HessianOperator`` (the default; residuals from its recurrence, checked by one exact
product), PyHessian's power iteration on a copy of the network (``hessian.pyhessian_adapter``), or
``torch.linalg.eigh`` of the materialised Hessian for small N (these two measure each pair's
residual ‖Hv − λv‖ exactly afterwards). The result is a
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
        residuals: (d,) ‖Hv − λv‖ for each pair. Lanczos: from its recurrence, |β_m·y_{m,j}|,
            equal to the residual up to rounding (full reorthogonalisation), the worst pair
            checked by one exact product (``residuals_from`` says what the check found); the
            other methods: one exact product per pair after the solve.
        relative_residuals: (d,) ‖Hv − λv‖ / |λ| (inf where λ = 0).
        hvps: Hessian-vector products the method used (the residual check not counted).
        method: the method that produced them ("lanczos", "pyhessian", "dense").
        converged: whether the method's own stopping rule was met for every pair (see
            ``top_eigenpairs``). For PyHessian that rule is a small change of λ between
            iterations, which does not imply a small residual: read ``relative_residuals``.
        tol: the tolerance that was asked for.
        residuals_from: how ``residuals`` were obtained, in words: from the Lanczos recurrence
            (checked by one exact product), or one exact product per pair.
    """

    values: np.ndarray
    subspace: Subspace
    residuals: np.ndarray
    relative_residuals: np.ndarray
    hvps: int
    method: str
    converged: bool
    tol: float
    residuals_from: str = "one exact product per pair"

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
    residuals: np.ndarray | None = None  # (m,) ‖Hv − λv‖ from the method, or None: measure them
    residuals_from: str = "one exact product per pair"


class Solver(NamedTuple):
    solve: Callable[..., Solution]
    max_d: Callable[[int], int]  # N -> the largest d the method accepts


def lanczos_eigenpairs(
    prob: Problem, d: int, which: str, tol: float, seed: int, max_iter: int | None
) -> Solution:
    """Top-d eigenpairs by thick-restart Lanczos in torch (``thick_restart_lanczos``) on the
    counting ``HessianOperator``; v0 is uniform on [−1, 1]^N from
    ``numpy.random.RandomState(seed)``, as it was for SciPy's ``eigsh``.

    Why not SciPy's ``eigsh`` (ARPACK), used before: it gives no access to its residual estimates,
    so each pair cost one more product to check, and every product crossed between NumPy float64
    and torch; here the vectors stay torch tensors and the residuals come from the recurrence.
    """
    op = HessianOperator(prob)
    v0 = np.random.RandomState(seed).uniform(-1.0, 1.0, prob.num_params)
    start = torch.as_tensor(v0).to(device=prob.device, dtype=prob.dtype)
    restarts = 10 * prob.num_params if max_iter is None else max_iter
    ritz = thick_restart_lanczos(op.products, start, d, which, tol, restarts)
    if not ritz.converged:
        raise RuntimeError(
            f"Lanczos did not converge for d={d} pairs within max_iter={max_iter} restarts at "
            f"tol={tol} ({ritz.done} converged); raise max_iter or tol."
        )
    hvps = op.hvps
    residuals, how = checked_residuals(op.products, ritz, prob.dtype)
    return Solution(ritz.values, ritz.vectors, hvps, True, residuals, how)


def checked_residuals(
    matmul: Callable[[Tensor], Tensor], ritz: Ritz, dtype: torch.dtype
) -> tuple[np.ndarray, str]:
    """The residuals ‖Hv_j − θ_j v_j‖ of Ritz pairs: the recurrence's, checked by one exact product.

    The pair with the largest estimated relative residual is multiplied once: when its exact
    residual is at most twice the estimate plus the rounding floor 100·ε·max|θ| (ε of ``dtype``),
    the recurrence is trusted (that pair's exact value is reported); otherwise every pair is
    measured exactly (one product each). Returns the residuals and how they were obtained.
    """
    values, V, estimates = ritz.values, ritz.vectors, ritz.residuals
    lam = torch.as_tensor(values, device=V.device, dtype=V.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = int(np.argmax(np.where(values != 0, estimates / np.abs(values), np.inf)))
    exact = float((matmul(V[:, j]) - lam[j] * V[:, j]).norm())
    floor = 100 * torch.finfo(dtype).eps * float(np.abs(values).max())
    if exact <= 2 * estimates[j] + floor:
        residuals = estimates.copy()
        residuals[j] = exact
        return residuals, (
            f"Lanczos recurrence |β_m·y_m,j| (pair {j}, the worst estimate, checked by one exact "
            f"product: {exact:.3g} against {estimates[j]:.3g})"
        )
    measured = (matmul(V) - V * lam).norm(dim=0).detach().cpu().double().numpy()
    return measured, (
        f"one exact product per pair (the recurrence's estimate of pair {j}, "
        f"{estimates[j]:.3g}, missed its exact residual {exact:.3g})"
    )


class Ritz(NamedTuple):
    """Ritz pairs of ``thick_restart_lanczos`` with their residual norms from the recurrence."""

    values: np.ndarray  # (d,) in the order of ``which``
    vectors: Tensor  # (N, d), orthonormal to working precision
    residuals: np.ndarray  # (d,) |β_m · y_{m,j}| = ‖H v_j − θ_j v_j‖ up to rounding
    converged: bool
    done: int  # pairs that met the tolerance


def thick_restart_lanczos(
    matmul: Callable[[Tensor], Tensor],
    start: Tensor,
    d: int,
    which: str,
    tol: float,
    max_restarts: int,
) -> Ritz:
    """Top-d eigenpairs of a symmetric operator by thick-restart Lanczos (Wu & Simon 2000).

    Builds an orthonormal basis Q_m of the Krylov space with full reorthogonalisation (classical
    Gram–Schmidt, repeated once when the first pass cancels more than 1 − 1/√2 of the norm: the
    DGKS test, as in ARPACK), so that H Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ holds to rounding with
    T_m = Q_mᵀ H Q_m. For a Ritz pair (θ_j, v_j = Q_m y_j) of T_m the residual is then
    H v_j − θ_j v_j = β_m y_{m,j} q_{m+1}: its norm |β_m y_{m,j}| comes from the recurrence with
    no extra product. Pair j is accepted when |β_m y_{m,j}| ≤ tol·|θ_j| (ARPACK's rule). A
    restart keeps the d + (m − d)/2 best Ritz vectors and q_{m+1}; T becomes diag(θ) bordered
    by the couplings β_m y_{m,j} ("thick restart"), and the recursion goes on from q_{m+1}.
    m = max(2d + 1, 20) basis vectors (ARPACK's default ncv), at most the dimension.
    Small matrices are float64 NumPy; vectors stay torch tensors on their device and dtype.

    Args:
        matmul: V (N,) -> H V, exact products.
        start: (N,) start vector (normalised here).
        d: pairs wanted (< N).
        which: "LA" or "LM", the order of ``ORDER``.
        tol: relative residual tolerance.
        max_restarts: restarts before giving up (``converged`` False).

    Example:
        >>> H = torch.diag(torch.arange(1.0, 41.0, dtype=torch.float64))
        >>> ritz = thick_restart_lanczos(lambda v: H @ v, torch.ones(40, dtype=H.dtype),
        ...                              3, "LA", 1e-10, 50)
        >>> ritz.values.round(6).tolist()
        [40.0, 39.0, 38.0]
    """
    n = start.numel()
    m = min(max(2 * d + 1, 20), n)
    keep = min(d + (m - d) // 2, m - 1)
    Q = torch.zeros(m + 1, n, dtype=start.dtype, device=start.device)  # rows: contiguous vectors
    T = np.zeros((m, m))
    Q[0] = start / start.norm()
    first, beta, generator = 0, 0.0, torch.Generator().manual_seed(0)
    for restart in range(max_restarts + 1):
        for j in range(first, m):
            w = matmul(Q[j])
            before = float(w.norm())
            for _ in range(2):  # twice is enough (Giraud et al. 2005); once when little cancels
                h = Q[: j + 1] @ w
                w = w - h @ Q[: j + 1]
                T[: j + 1, j] += h.double().cpu().numpy()
                beta = float(w.norm())
                if beta > 0.7071 * before:  # the DGKS test: no second pass needed
                    break
                before = beta
            if j + 1 < m:
                T[j + 1, j] = beta
            if beta <= 1e3 * np.finfo(np.float64).eps * max(1.0, np.abs(T).max()) and j + 1 < m:
                # invariant subspace: continue from a random vector orthogonal to Q
                w = torch.randn(n, generator=generator, dtype=torch.float64).to(Q)
                for _ in range(2):
                    w = w - (Q[: j + 1] @ w) @ Q[: j + 1]
                T[j + 1, j] = beta = 0.0
                Q[j + 1] = w / w.norm()
                continue
            Q[j + 1] = w / beta if beta > 0 else w
        S = np.triu(T) + np.triu(T, 1).T  # T = QᵀHQ is symmetric; use the computed upper half
        theta, Y = np.linalg.eigh(S)
        order = np.argsort(ORDER[which](theta), kind="stable")
        theta, Y = theta[order], Y[:, order]
        residuals = np.abs(beta * Y[-1, :])
        met = residuals[:d] <= tol * np.abs(theta[:d])
        if met.all() or restart == max_restarts or m == n:
            Yd = torch.as_tensor(Y[:, :d], device=Q.device, dtype=Q.dtype)
            vectors = Q[:m].T @ Yd
            return Ritz(
                theta[:d], vectors, residuals[:d], bool(met.all() or m == n), int(met.sum())
            )
        Yk = torch.as_tensor(Y[:, :keep], device=Q.device, dtype=Q.dtype)
        Q[:keep] = Yk.T @ Q[:m]
        Q[keep] = Q[m]
        T = np.zeros((m, m))
        T[:keep, :keep] = np.diag(theta[:keep])
        T[keep, :keep] = beta * Y[-1, :keep]
        first = keep
    raise AssertionError("unreachable")


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
    "lanczos": Solver(lanczos_eigenpairs, lambda n: n - 1),  # a restart needs d < N
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

    * ``"lanczos"`` (default): thick-restart Lanczos with full reorthogonalisation
      (``thick_restart_lanczos``) on ``HessianOperator(prob)``; ``tol`` is the relative residual
      tolerance ‖r‖ ≤ tol·|λ| (ARPACK's rule); ``max_iter`` its number of restarts (None: 10·N).
      Needs d ≤ N − 1 (use ``"dense"`` for d = N). Failure to converge raises ``RuntimeError``.
    * ``"pyhessian"``: PyHessian's power iteration with deflation, on a copy of the network;
      ``tol`` is its relative change of λ between iterations, ``max_iter`` its iterations per
      pair (None: 1000). It finds the largest-*magnitude* eigenvalues; with ``which="LA"`` a
      warning says so when one of them is negative.
    * ``"dense"``: ``torch.linalg.eigh`` of ``dense_hessian`` — exact, for small N.

    Residuals ‖Hv − λv‖: Lanczos reads them from its recurrence and checks the worst pair with
    one exact HVP (every pair is measured when that check fails; ``residuals_from`` says which);
    the other methods measure them with one exact HVP per pair after the solve (not counted in
    ``hvps``). For PyHessian the reported λ is the Rayleigh quotient vᵀHv of the returned unit
    vector v, from that same product: PyHessian's own number belongs to its previous iterate and
    carries the bias of its ``‖·‖ + 1e-6`` normalisation. ``converged`` says whether the method's
    own stopping rule was met for every pair: for Lanczos, every pair's residual ≤ tol·|λ| (it raises otherwise); for
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
    if solution.residuals is not None:
        residuals = np.asarray(solution.residuals, dtype=np.float64)[order]
    else:
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
        residuals_from=solution.residuals_from,
    )

"""Per-sample Hessians H_i = ∇²l_i(w*): materialised for small N, and their spectral norms.

``per_sample_hessians`` stacks dense H_i (for small N and tests); ``per_sample_spectral_norms``
finds ‖H_i‖₂ for every sample — M_H = max_i ‖H_i‖₂ of the bounds in ``theory`` — by Lanczos or
power iteration on per-sample HVPs, each sample with its own Krylov process, vectorised over a
batch of samples with vmap. Both touch H_i only through per-sample HVPs, and only after they are
proven on the network against plain double backward (``routes.proven_hvps``); where they disagree,
double backward takes over and a warning says so. The Hessian of L_K itself is
``hessian.operator``'s; the difference terms of ``curvature`` use the same per-sample routes.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.func import vmap

from ..checks import check_choice, check_int, check_positive
from ..problem import Problem, spans
from ..progress import bar
from ..routes import hvp_bytes, per_sample_grads_and_hvps, per_sample_hvps_backward, proven_hvps
from ..seeding import generator

NormMethod = Literal["lanczos", "power"]


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


# -- dense per-sample Hessians ---------------------------------------------------------------------


def per_sample_hessians(prob: Problem, indices: Sequence[int] | Tensor | None = None) -> Tensor:
    """Dense per-sample Hessians H_i = ∇²l_i(w*), shape (len(indices), N, N) (for small N).

    Column j of H_i is the per-sample HVP H_i e_j (``Problem.sample_hvp``, jvp of grad), vmapped
    over samples and identity columns in batches within ``max_memory`` — not
    ``torch.func.hessian``, whose nested derivatives are wrong through LayerNorm and InstanceNorm
    in torch 2.14. The HVPs are first proven on the network against plain double backward
    (``routes.proven_hvps``); where they disagree, double backward computes every column (slow)
    and a warning says so. ``indices`` are 0-based sample positions (all K by default).
    """
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
    per_sample, columns = hvp_bytes(prob, n)
    for rows, X, y in prob.batches(per_sample, index):
        for cols in spans(n, columns):
            hvps = products(prob, X, y, eye[:, cols])[2]  # (n, m, N): H_i e_j
            out[rows, :, cols] = hvps.transpose(1, 2)
    return out


# -- per-sample spectral norms ---------------------------------------------------------------------


def _per_sample_hvps(prob: Problem, X: Tensor, y: Tensor, V: Tensor) -> Tensor:
    """H_i v_i for each sample i of (X, y) and its own vector v_i: (m, N) -> (m, N).

    ``Problem.sample_hvp`` (forward over reverse on one sample's loss), vmapped over samples.
    """
    return vmap(prob.sample_hvp)(X, y, V)


def _per_sample_hvps_backward(prob: Problem, X: Tensor, y: Tensor, V: Tensor) -> Tensor:
    """``_per_sample_hvps`` by plain double backward (``routes.per_sample_hvps_backward``), for
    networks on which the vmapped HVPs disagree with it."""
    return torch.stack(
        [
            per_sample_hvps_backward(prob, X[i : i + 1], y[i : i + 1], V[i])[2][0, 0]
            for i in range(len(X))
        ]
    )


PerSampleHVPs = Callable[[Problem, Tensor, Tensor, Tensor], Tensor]


class _Batch(NamedTuple):
    """A batch of samples (X, y) whose Hessians are touched only through ``batch(V)``: H_i v_i
    for each sample i and its own vector v_i, (m, N) -> (m, N), by ``product``."""

    prob: Problem
    X: Tensor
    y: Tensor
    product: PerSampleHVPs

    def __call__(self, V: Tensor) -> Tensor:
        return self.product(self.prob, self.X, self.y, V)

    def subset(self, index: Tensor) -> _Batch:
        return _Batch(self.prob, self.X[index], self.y[index], self.product)


def _start_vectors(prob: Problem, count: int, draw: torch.Generator) -> Tensor:
    V = torch.randn(count, prob.num_params, generator=draw, dtype=torch.float64)
    V = V.to(device=prob.device, dtype=prob.dtype)
    return V / V.norm(dim=1, keepdim=True)


def _lanczos_norms(
    batch: _Batch, V0: Tensor, steps: int, tol: float, basis: int = 32
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Largest-|λ| Ritz pairs of m per-sample Hessians by explicitly restarted Lanczos.

    Cycles of at most ``basis`` steps (``_lanczos_cycle``); after each, the samples that
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
        length = min(basis, remaining)
        cycle = _lanczos_cycle(batch.subset(active), start[active], length, tol)
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


def _lanczos_cycle(batch: _Batch, V0: Tensor, steps: int, tol: float) -> _Cycle:
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
        W = batch(Q[:, j])
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
    batch: _Batch, V0: Tensor, steps: int, tol: float
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
        W = batch(V)
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


#: Per-sample norm methods: (batch, V0, iters, tol) -> (θ, U, steps per sample, HVPs).
NORM_METHODS: dict[str, Callable[..., tuple[Tensor, Tensor, Tensor, int]]] = {
    "lanczos": _lanczos_norms,
    "power": _power_norms,
}

#: Default limits on the steps per sample, per method.
NORM_ITERS = {"lanczos": 200, "power": 2000}


def per_sample_spectral_norms(
    prob: Problem,
    method: NormMethod = "lanczos",
    iters: int | None = None,
    tol: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
    lanczos_basis: int = 32,
) -> SpectralNorms:
    """Spectral norms ‖H_i(w*)‖₂ = max_j |λ_j(H_i)| of every per-sample Hessian, and M_H = max_i.

    Each H_i is only touched through per-sample HVPs H_i v (``jvp`` of ``grad``), vectorised over
    a chunk of samples with ``vmap``, each sample with its own vector — after they are proven on
    the network against plain double backward (``routes.proven_hvps``); where they disagree,
    double backward takes over (slow) and a warning says so. Methods:

    * ``"lanczos"`` (default): one Lanczos process per sample with full reorthogonalisation,
      restarted from its two extreme Ritz vectors every ``lanczos_basis`` steps; the Ritz value
      of largest magnitude. Per-sample Hessians have low rank r, so it stops after at most r + 1
      steps and usually far sooner. Memory: ``lanczos_basis`` + 1 N-vectors per sample in the
      batch.
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
        progress: show a progress bar over batches of samples.
        lanczos_basis: Lanczos vectors kept per sample (≥ 2): a cycle that has not converged
            after this many steps restarts from its two extreme Ritz vectors, so memory per
            sample stays bounded whatever ``iters``.

    Returns:
        ``SpectralNorms`` with values aligned with the Problem's sample order.

    Example:
        >>> norms = per_sample_spectral_norms(prob)           # doctest: +SKIP
        >>> norms.max, norms.argmax
    """
    run = NORM_METHODS[check_choice("method", method, NORM_METHODS)]
    iters = check_int("iters", NORM_ITERS[method] if iters is None else iters, low=1)
    tol = check_positive("tol", tol)
    seed = check_int("seed", seed, low=0)
    lanczos_basis = check_int("lanczos_basis", lanczos_basis, low=2)
    if method == "lanczos":
        run = functools.partial(run, basis=lanczos_basis)

    products, why = proven_hvps(prob)  # vmapped HVPs only where double backward confirms them
    product = _per_sample_hvps
    if products is not per_sample_grads_and_hvps:
        warnings.warn(f"per-sample spectral norms by {why}.", stacklevel=2)
        product = _per_sample_hvps_backward
    n, K = prob.num_params, prob.num_samples
    vectors_per_sample = (min(iters, lanczos_basis) + 8) if method == "lanczos" else 8
    per_sample = max(prob.activation_bytes, vectors_per_sample * n * prob.dtype.itemsize)
    draw = generator(seed)
    theta = torch.zeros(K, dtype=prob.dtype, device=prob.device)
    residuals = torch.zeros(K, dtype=prob.dtype, device=prob.device)
    used = torch.zeros(K, dtype=torch.long, device=prob.device)
    hvps = 0
    batches = prob.batches(per_sample)
    with torch.no_grad():
        for rows, X, y in bar(batches, desc="per-sample ‖H_i‖", unit="batch", enabled=progress):
            V0 = _start_vectors(prob, len(X), draw)
            batch = _Batch(prob, X, y, product)
            values, U, steps_used, count = run(batch, V0, iters, tol)
            HU = batch(U)
            theta[rows] = values
            residuals[rows] = (HU - values[:, None] * U).norm(dim=1)
            used[rows] = steps_used
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

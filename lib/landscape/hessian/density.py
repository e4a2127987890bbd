"""The eigenvalue density of H = ∇²L_K(w*) by stochastic Lanczos quadrature, with its error.

``spectral_density`` runs curvlinops' implementation of Papyan 2020 (``fast_lanczos`` and
``lanczos_approximate_spectrum_from_iter``) on ``HessianOperator``, one probe at a time, so that
the density comes with a pointwise standard error over probes (curvlinops' own
``lanczos_approximate_spectrum`` returns only the mean). The result is a frozen
``SpectralDensity``. Top eigenpairs are ``hessian.eigen``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from curvlinops.papyan2020traces.spectrum import (
    fast_lanczos,
    lanczos_approximate_spectrum_from_iter,
)
from scipy.sparse.linalg import eigsh

from ..checks import check_int, check_positive
from ..problem import Problem
from ..seeding import seeded
from .operator import HessianOperator


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

    op = HessianOperator(prob)
    if boundaries is None:
        if n < 3:
            raise ValueError(f"boundaries must be given when N={n} < 3.")
        v0 = np.random.RandomState(seed).uniform(-1.0, 1.0, n)
        low, high = eigsh(
            op.to_scipy(), k=2, which="BE", tol=1e-2, v0=v0, return_eigenvectors=False
        )
        boundaries = (float(min(low, high)), float(max(low, high)))
    else:
        boundaries = (float(boundaries[0]), float(boundaries[1]))
        if not boundaries[0] < boundaries[1]:
            raise ValueError(f"boundaries={boundaries} must be (λ_min, λ_max) with λ_min < λ_max.")

    densities = []
    with seeded(seed, prob.device):  # fast_lanczos draws its probe from the global generator
        for _ in range(num_probes):
            nodes = fast_lanczos(op, num_steps)
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

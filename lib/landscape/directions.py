"""Subspaces of parameter space and the random directions that span them.

A ``Subspace`` is an (N, d) basis P; a perturbation is w = w* + P z with z ~ N(0, σ² I_d), which
moves the parameters along *every* one of the d columns (the papers' code only ever applied the
first). The basis may be any matrix of full column rank: nothing here assumes orthonormal
columns, but a zero, non-finite or linearly dependent column is refused (it would silently
perturb fewer than d directions). Builders: ``random`` (Gaussian, orthonormalised; or
filter-normalised as in Li et al. 2018). Hessian eigen-directions come from
``hessian.top_eigenpairs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_choice, check_int, check_seed
from .problem import Problem, check_problem
from .seeding import generator

_KINDS = ("gaussian", "filter")


@dataclass(frozen=True, eq=False)
class Subspace:
    """A d-dimensional subspace of parameter space given by a basis P of shape (N, d).

    Attributes:
        basis: the (N, d) basis; its columns need not be orthonormal, but they must be finite
            and linearly independent (full column rank); a basis that is not is refused,
            naming the first offending column.
        kind: where the basis came from ("custom", "gaussian", "filter", "hessian").
    """

    basis: Tensor
    kind: str = "custom"

    def __post_init__(self) -> None:
        basis = torch.as_tensor(self.basis)
        if basis.ndim != 2 or basis.shape[1] < 1:
            raise ValueError(f"basis must have shape (N, d) with d >= 1; got {tuple(basis.shape)}.")
        if basis.shape[1] > basis.shape[0]:
            raise ValueError(f"basis has d={basis.shape[1]} columns, more than N={basis.shape[0]}.")
        if not basis.is_floating_point():
            raise ValueError(f"basis must be a floating-point tensor; got dtype {basis.dtype}.")
        _check_full_rank(basis)
        object.__setattr__(self, "basis", basis)

    @property
    def dim(self) -> int:
        """d, the number of directions."""
        return self.basis.shape[1]

    @property
    def num_params(self) -> int:
        """N, the dimension of the parameter space."""
        return self.basis.shape[0]

    def gram(self) -> Tensor:
        """PᵀP, the (d, d) Gram matrix of the basis."""
        return self.basis.T @ self.basis

    def is_orthonormal(self, tol: float = 1e-6) -> bool:
        """Whether PᵀP = I within ``tol``."""
        eye = torch.eye(self.dim, dtype=self.basis.dtype, device=self.basis.device)
        return bool((self.gram() - eye).abs().max() <= tol)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Subspace:
        """The same subspace with its basis on ``device`` in ``dtype``."""
        if self.basis.device == torch.device(device) and self.basis.dtype == dtype:
            return self
        return Subspace(self.basis.to(device=device, dtype=dtype), self.kind)


def _check_full_rank(basis: Tensor) -> None:
    """Refuse a basis with a non-finite or zero column, or a column in the span of earlier ones.

    Column j counts as dependent when the part of it orthogonal to columns 0..j−1 (|R_jj| of a
    QR decomposition in float64) is below √ε of its own norm, ε the basis dtype's precision.
    """
    finite = torch.isfinite(basis).all(0)
    if not finite.all():
        j = int((~finite).nonzero()[0, 0])
        raise ValueError(
            f"basis column {j} holds non-finite values (NaN or inf); every column of the (N, d) "
            "basis must be a finite direction."
        )
    columns = basis.detach().to(torch.float64)
    norms = torch.linalg.vector_norm(columns, dim=0)
    if (norms == 0).any():
        j = int((norms == 0).nonzero()[0, 0])
        raise ValueError(
            f"basis column {j} is zero; every column of the (N, d) basis must be a non-zero "
            "direction (a zero column perturbs nothing and hides behind a zero standard error)."
        )
    if basis.shape[1] == 1:
        return
    r = torch.linalg.qr(columns / norms, mode="r").R.diagonal().abs()
    tol = torch.finfo(basis.dtype).eps ** 0.5
    if (r < tol).any():
        j = int((r < tol).nonzero()[0, 0])
        earlier = "column 0" if j == 1 else f"columns 0..{j - 1}"
        raise ValueError(
            f"basis column {j} is (numerically) a linear combination of {earlier}: the "
            f"basis has rank < d={basis.shape[1]}; give linearly independent columns (e.g. "
            "orthonormalise them with torch.linalg.qr)."
        )


def check_subspace(prob: Problem, subspace: Subspace | None) -> Subspace | None:
    """Validate that ``subspace`` lives in ``prob``'s parameter space; move it to its device."""
    check_problem(prob)
    if subspace is None:
        return None
    if not isinstance(subspace, Subspace):
        raise ValueError(f"subspace must be a directions.Subspace or None, got {type(subspace)}.")
    if subspace.num_params != prob.num_params:
        raise ValueError(
            f"subspace has N={subspace.num_params} rows but the problem has N={prob.num_params} "
            "parameters."
        )
    return subspace.to(prob.device, prob.dtype)


def random(prob: Problem, d: int, kind: str = "gaussian", seed: int = 0) -> Subspace:
    """d random directions in ``prob``'s parameter space.

    ``"gaussian"``: a uniformly random d-dimensional subspace, returned with an orthonormal basis
    (QR of an N×d standard Gaussian matrix), so that P z with z ~ N(0, σ²I_d) is the projection of
    the full-space perturbation N(0, σ²I_N).

    ``"filter"``: filter-normalised directions (Li et al. 2018, "Visualizing the loss landscape of
    neural nets"): each column starts Gaussian; for every weight tensor with at least two
    dimensions, each filter (slice along the first dimension: a neuron's incoming weights or a
    convolution's output channel) is rescaled to the Frobenius norm of the matching filter of w*;
    one-dimensional parameters (biases, batch-norm scales and shifts) are set to zero. The columns
    are not orthonormal.

    Example:
        >>> sub = random(prob, 2, kind="filter", seed=0)   # doctest: +SKIP
        >>> sub.basis.shape
        torch.Size([N, 2])
    """
    check_problem(prob)
    check_choice("kind", kind, _KINDS)
    d = check_int("d", d, low=1, high=prob.num_params)
    draw = generator(check_seed("seed", seed))
    gaussian = torch.randn(prob.num_params, d, generator=draw, dtype=torch.float64)
    if kind == "gaussian":
        basis, _ = torch.linalg.qr(gaussian)
    else:
        basis = _filter_normalise(prob, gaussian)
    return Subspace(basis.to(device=prob.device, dtype=prob.dtype), kind)


def _filter_normalise(prob: Problem, directions: Tensor) -> Tensor:
    """Rescale each filter of each column of ``directions`` (N, d) to the norm of w*'s filter."""
    center = prob.unflatten(prob.center.detach().to("cpu", torch.float64))
    columns = []
    for column in directions.T:
        pieces = prob.unflatten(column)
        scaled = []
        for name, piece in pieces.items():
            weight = center[name]
            if piece.ndim <= 1:
                scaled.append(torch.zeros_like(piece))
                continue
            axes = tuple(range(1, piece.ndim))
            # vector_norm: Tensor.norm with a 3-tuple of dims (conv weights) raises
            weight_norm = torch.linalg.vector_norm(weight, dim=axes, keepdim=True)
            piece_norm = torch.linalg.vector_norm(piece, dim=axes, keepdim=True).clamp_min(1e-30)
            scaled.append(piece * weight_norm / piece_norm)
        columns.append(prob.flatten(scaled))
    return torch.stack(columns, dim=1)

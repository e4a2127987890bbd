"""Per-sample rows x_i (n, L) — per-sample gradients — seen only through what prefix norms need.

``RunningDifferences`` turns a chunk of per-sample gradients into ‖c_k‖² for every k from three
things: the chunk's Gram matrix xxᵀ (n, n), the products x_i·v with one flat vector (the sum of
all earlier rows) and the chunk's own sum. ``DenseRows`` gives them for a materialised (n, L)
tensor; ``FactoredRows`` for gradients kept as the factors a chain of layers produces, without
ever forming the (n, N) rows: a Linear layer's per-sample weight gradient is the outer product
δ_i h_iᵀ of its output adjoint and its input, so its part of the Gram matrix is
(ΔΔᵀ) ⊙ (HHᵀ) — n²(in + out) work instead of n²·in·out — and its product with a flat vector
S is δ_iᵀ S h_i ("ghost norms", Goodfellow 2015; Li et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


class DenseRows:
    """Rows held as one (n, L) tensor (``x`` of any shape (n, ...), flattened per row)."""

    def __init__(self, x: Tensor) -> None:
        self.x = x.reshape(len(x), -1)
        self._gram: Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def gram(self) -> Tensor:
        """xxᵀ (n, n) in float64 (the product in the rows' dtype), computed once."""
        if self._gram is None:
            self._gram = (self.x @ self.x.T).to(torch.float64)
        return self._gram

    def squared_norms(self) -> Tensor:
        """‖x_i‖² (n,) in float64 (from the Gram matrix if it was computed)."""
        if self._gram is not None:
            return self._gram.diagonal()
        return self.x.square().sum(1).to(torch.float64)

    def dot(self, v: Tensor) -> Tensor:
        """x_i·v (n,) in float64 for a flat vector v (L,)."""
        return (self.x @ v.to(self.x.dtype)).to(torch.float64)

    def total(self) -> Tensor:
        """Σ_i x_i (L,) in float64 (summed in the rows' dtype: a float64 sum strides, 20× slower)."""
        return self.x.sum(0).to(torch.float64)


@dataclass
class FactoredRows:
    """Per-sample gradients of named parameters kept as factors, laid out as ``Problem`` flattens
    them (``names``, ``shapes``; a parameter without a factor has a zero gradient).

    ``outer(name, delta, h)``: the gradient of parameter ``name`` (out, in) is δ_i h_iᵀ with
    δ (n, out), h (n, in); ``plain(name, g)``: it is g_i (n, *shape). Each parameter gets at most
    one factor (a layer applied twice would need cross terms: the caller falls back instead).
    """

    names: list[str]
    shapes: list[torch.Size]
    factors: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    _gram: Tensor | None = field(default=None, init=False, repr=False)

    def outer(self, name: str, delta: Tensor, h: Tensor) -> None:
        self._add(name, (delta, h))

    def plain(self, name: str, g: Tensor) -> None:
        self._add(name, (g.reshape(len(g), -1),))

    def _add(self, name: str, factor: tuple[Tensor, ...]) -> None:
        if name in self.factors:
            raise ValueError(f"parameter '{name}' already has a gradient factor")
        self.factors[name] = factor
        self._gram = None

    def __len__(self) -> int:
        return len(next(iter(self.factors.values()))[0])

    def gram(self) -> Tensor:
        """Σ_parameters of the per-parameter Gram matrices (n, n), float64, computed once."""
        if self._gram is None:
            gram = None
            for factor in self.factors.values():
                part = factor[0] @ factor[0].T
                if len(factor) == 2:
                    part = part.mul_(factor[1] @ factor[1].T)
                gram = part.to(torch.float64) if gram is None else gram.add_(part)
            self._gram = gram
        return self._gram

    def squared_norms(self) -> Tensor:
        """‖g_i‖² (n,) in float64: the Gram matrix's diagonal."""
        return self.gram().diagonal()

    def dot(self, v: Tensor) -> Tensor:
        """g_i·v (n,) in float64 for a flat vector v (N,) in the Problem's layout."""
        out = None
        for name, piece in self._pieces(v):
            factor = self.factors[name]
            piece = piece.to(factor[0].dtype)
            if len(factor) == 2:  # δ_iᵀ S h_i
                part = ((factor[1] @ piece.T) * factor[0]).sum(1)
            else:
                part = factor[0] @ piece.reshape(-1)
            out = part.to(torch.float64) if out is None else out.add_(part)
        return out

    def total(self) -> Tensor:
        """Σ_i g_i (N,) in float64, in the Problem's layout (zeros where no factor)."""
        parts, like = [], next(iter(self.factors.values()))[0]
        for name, shape in zip(self.names, self.shapes):
            factor = self.factors.get(name)
            if factor is None:
                parts.append(like.new_zeros(shape.numel(), dtype=torch.float64))
            elif len(factor) == 2:
                parts.append((factor[0].T @ factor[1]).reshape(-1).to(torch.float64))
            else:
                parts.append(factor[0].sum(0).to(torch.float64))
        return torch.cat(parts)

    def dense(self) -> Tensor:
        """The rows themselves (n, N): for tests and small problems only."""
        n, like = len(self), next(iter(self.factors.values()))[0]
        parts = []
        for name, shape in zip(self.names, self.shapes):
            factor = self.factors.get(name)
            if factor is None:
                parts.append(like.new_zeros(n, shape.numel()))
            elif len(factor) == 2:
                parts.append((factor[0][:, :, None] * factor[1][:, None, :]).reshape(n, -1))
            else:
                parts.append(factor[0])
        return torch.cat(parts, dim=1)

    def _pieces(self, v: Tensor):
        """(name, v's piece shaped as the parameter) for the parameters with a factor."""
        for piece, name, shape in zip(
            torch.split(v, [s.numel() for s in self.shapes]), self.names, self.shapes
        ):
            if name in self.factors:
                yield name, piece.view(shape) if len(shape) else piece


def rows(x: Tensor | DenseRows | FactoredRows) -> DenseRows | FactoredRows:
    """``x`` as rows: a tensor becomes ``DenseRows``; rows pass unchanged."""
    return DenseRows(x) if isinstance(x, Tensor) else x

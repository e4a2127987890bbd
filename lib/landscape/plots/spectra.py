"""Hessian spectra: eigenvalues against their rank, and spectral densities.

Both accept torch tensors as well as arrays (converted here without importing torch). The
eigenvalues and densities come from ``hessian``; nothing here computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes

from landscape.checks import check_choice
from landscape.plots.theme import resolve_color, styled

__all__ = ["density", "spectrum"]


@styled
def spectrum(
    ax: Axes,
    eigenvalues: Sequence[float] | np.ndarray,
    label: str | None = None,
    scale: Literal["auto", "linear", "log", "symlog"] = "auto",
    ylabel: str = r"eigenvalue $\lambda_i$",
    **kw: Any,
) -> Axes:
    """Eigenvalues sorted from largest to smallest against their rank.

    ``scale="auto"`` picks "symlog" when signs mix, "log" when all are positive and span more than
    two decades, else "linear".

    Args:
        ax: the axes.
        eigenvalues: any order; torch tensors and arrays are accepted.
        label: legend label.
        scale: y scale.
        ylabel: y axis label.
        **kw: passed to ``ax.plot``.

    Returns:
        ``ax``.
    """
    check_choice("scale", scale, ("auto", "linear", "log", "symlog"))
    values = np.sort(np.asarray(_numpy(eigenvalues), dtype=float).ravel())[::-1]
    finite = values[np.isfinite(values)]
    if scale == "auto":
        if finite.size and finite.min() < 0 < finite.max():
            scale = "symlog"
        elif finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
            scale = "log"
        else:
            scale = "linear"
    kw.setdefault("marker", "o")
    kw.setdefault("ms", 3.5)
    ax.plot(np.arange(1, values.size + 1), values, label=label, **resolve_color(kw))
    if scale == "symlog":
        nonzero = np.abs(finite[finite != 0])
        top = float(nonzero.max()) if nonzero.size else 1.0
        small = float(nonzero.min()) if nonzero.size else 1.0
        ax.set_yscale("symlog", linthresh=max(small, 1e-3 * top))
    elif scale == "log":
        ax.set_yscale("log", nonpositive="mask")
    ax.axhline(0.0, color="0.5", lw=0.8, zorder=0)
    ax.set_xlabel("rank i (largest first)")
    ax.set_ylabel(ylabel)
    if label is not None:
        ax.legend()
    return ax


@styled
def density(
    ax: Axes,
    grid: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    label: str | None = None,
    log: bool = True,
    xlabel: str = "eigenvalue λ",
    ylabel: str = "spectral density",
    **kw: Any,
) -> Axes:
    """A spectral density on a grid of eigenvalues (e.g. from stochastic Lanczos quadrature).

    Args:
        ax: the axes.
        grid: eigenvalue grid.
        values: density at the grid points.
        label: legend label.
        log: log y axis (densities span many decades); non-positive values leave gaps.
        xlabel: x axis label.
        ylabel: y axis label.
        **kw: passed to ``ax.plot``.

    Returns:
        ``ax``.
    """
    x = np.asarray(_numpy(grid), dtype=float)
    y = np.asarray(_numpy(values), dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"grid and values must be 1-D of the same length; got {x.shape} and {y.shape}."
        )
    if log:
        ax.set_yscale("log", nonpositive="mask")
        y = np.where(y > 0, y, np.nan)
    (line,) = ax.plot(x, y, label=label, **resolve_color(kw))
    base = np.nanmin(y) if log and np.isfinite(y).any() else 0.0
    ax.fill_between(
        x, base, y, where=np.isfinite(y), color=line.get_color(), alpha=0.15, linewidth=0
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if label is not None:
        ax.legend()
    return ax


def _numpy(values: Any) -> Any:
    """Torch tensors to numpy (without importing torch here); anything else unchanged."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        return values.detach().cpu().numpy()
    return values

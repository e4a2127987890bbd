"""Landscape surfaces: a 2-D grid of values as contours, a heatmap or a 3-D surface.

``Z[i, j]`` is the value at ``(x[j], y[i])`` (``numpy.meshgrid``'s "xy"), checked on entry; a
log colour scale leaves non-positive values blank. Pair a 3-D surface with :func:`surface_2d`
(3-D hides detail). The grids themselves come from ``surface``; nothing here computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from landscape.checks import check_choice
from landscape.plots.theme import styled

__all__ = ["surface_2d", "surface_3d"]


def _grid(x: Any, y: Any, Z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, zs = (np.asarray(a, dtype=float) for a in (x, y, Z))
    if xs.ndim != 1 or ys.ndim != 1:
        raise ValueError(f"x and y must be 1-D grids; got shapes {xs.shape} and {ys.shape}.")
    if zs.shape != (ys.size, xs.size):
        raise ValueError(
            f"Z must have shape (len(y), len(x)) = {(ys.size, xs.size)} (Z[i, j] at x[j], y[i]); "
            f"got {zs.shape}. Pass Z.T if it is indexed [x, y]."
        )
    return xs, ys, zs


def _log_norm(zs: np.ndarray, name: str = "Z") -> LogNorm:
    positive = zs[np.isfinite(zs) & (zs > 0)]
    if positive.size == 0:
        raise ValueError(f"log=True needs some positive values in {name}; it has none.")
    return LogNorm(vmin=float(positive.min()), vmax=float(positive.max()))


@styled
def surface_2d(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    Z: Any,
    kind: Literal["contour", "heatmap"] = "contour",
    log: bool = False,
    cbar_label: str = "loss (nats)",
    xlabel: str = "α (direction 1)",
    ylabel: str = "β (direction 2)",
    levels: int | Sequence[float] = 20,
    mark_center: bool = True,
) -> Axes:
    """A landscape grid as filled contours or a heatmap, with a colour bar.

    Args:
        ax: the axes.
        x: coordinates along the first direction (length n).
        y: coordinates along the second direction (length m).
        Z: values with ``Z[i, j]`` at ``(x[j], y[i])``, shape (m, n) (``numpy.meshgrid``'s "xy").
        kind: "contour" (filled contours with thin lines) or "heatmap".
        log: logarithmic colour scale (non-positive values are left blank).
        cbar_label: the colour bar's label, with units.
        xlabel: x axis label.
        ylabel: y axis label.
        levels: number of contour levels, or the levels themselves (values beyond them are
            drawn in the end colours, the colour bar marked with arrows).
        mark_center: mark (0, 0), the centre w*, when it lies in the grid.

    Returns:
        ``ax``.
    """
    check_choice("kind", kind, ("contour", "heatmap"))
    xs, ys, zs = _grid(x, y, Z)
    norm = _log_norm(zs) if log else None
    shown = np.ma.masked_where(~np.isfinite(zs) | ((zs <= 0) if log else False), zs)
    if kind == "heatmap":
        mappable = ax.pcolormesh(xs, ys, shown, shading="nearest", norm=norm)
    else:
        if log:
            lo, hi = np.log10(norm.vmin), np.log10(norm.vmax)
            lv = np.logspace(lo, hi if hi > lo else lo + 1, levels)
        else:
            lv = levels
        # values beyond explicit levels take the end colours instead of leaving holes in the plot
        extend = "neither"
        if np.ndim(lv) == 1 and shown.count():
            below, above = shown.min() < np.min(lv), shown.max() > np.max(lv)
            extend = {(1, 1): "both", (1, 0): "min", (0, 1): "max"}.get((below, above), "neither")
        mappable = ax.contourf(xs, ys, shown, levels=lv, norm=norm, extend=extend)
        ax.contour(xs, ys, shown, levels=mappable.levels, colors="k", linewidths=0.3, alpha=0.5)
    cbar = ax.figure.colorbar(mappable, ax=ax, label=cbar_label)
    if log:  # ticks at powers of ten (a contour colour bar otherwise labels odd level edges)
        cbar.ax.yaxis.set_major_locator(mpl.ticker.LogLocator())
        cbar.ax.yaxis.set_major_formatter(mpl.ticker.LogFormatterSciNotation())
        cbar.ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())
    if mark_center and xs.min() <= 0 <= xs.max() and ys.min() <= 0 <= ys.max():
        ax.plot(
            [0], [0], marker="*", ms=10, color="white", mec="black", mew=0.6, ls="none", label="w*"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    return ax


@styled
def surface_3d(
    fig: Figure,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    Z: Any,
    log: bool = False,
    zlabel: str = "loss (nats)",
    xlabel: str = "α (direction 1)",
    ylabel: str = "β (direction 2)",
    position: int | tuple[int, int, int] = 111,
    elev: float = 30.0,
    azim: float = -60.0,
) -> Axes:
    """A landscape grid as a 3-D surface (pair it with :func:`surface_2d`; 3-D hides detail).

    Args:
        fig: the figure to add the 3-D axes to.
        x: coordinates along the first direction (length n).
        y: coordinates along the second direction (length m).
        Z: values, shape (m, n), ``Z[i, j]`` at ``(x[j], y[i])``.
        log: plot log₁₀ Z (matplotlib's 3-D axes have no log scale); non-positive values are blank.
        zlabel: the quantity's label (log₁₀ is prefixed when ``log``).
        xlabel: x axis label.
        ylabel: y axis label.
        position: subplot position, e.g. 121.
        elev: elevation of the view, degrees.
        azim: azimuth of the view, degrees.

    Returns:
        The 3-D axes.
    """
    xs, ys, zs = _grid(x, y, Z)
    if log:
        _log_norm(zs)  # raises when nothing is positive
        with np.errstate(divide="ignore", invalid="ignore"):
            zs = np.where(zs > 0, np.log10(np.where(zs > 0, zs, 1.0)), np.nan)
        zlabel = f"log₁₀ {zlabel}"
    args = position if isinstance(position, tuple) else (position,)
    ax = fig.add_subplot(*args, projection="3d")
    gx, gy = np.meshgrid(xs, ys)
    ax.plot_surface(
        gx,
        gy,
        np.ma.masked_invalid(zs),
        cmap=mpl.rcParams["image.cmap"],
        linewidth=0,
        antialiased=True,
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel(zlabel)
    ax.view_init(elev=elev, azim=azim)
    return ax

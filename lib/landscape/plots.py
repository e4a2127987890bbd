"""One figure style for every notebook: rates on log-log axes, error bands, landscape surfaces.

Each function draws one kind of figure element on an Axes (or Figure) it is given and returns it, so
notebooks compose figures in a few lines. Bands are value ± ``band`` · stderr, exactly as measured:
nothing is smoothed. On a log axis a band's lower edge is clipped at a small positive floor (the
quantity is positive; the clipped edge means "down to zero"), and non-positive values are left out
of the line rather than drawn at a fake tiny value. Nothing here computes the quantities plotted;
:func:`savefig` writes PNGs atomically next to a run's results.

The style is applied where figures are made, not at import: every function here draws inside
:func:`style` (a context that restores the caller's rcParams), so importing this module changes
no global setting. A notebook that also draws with matplotlib directly calls :func:`use_style`
once, which makes the style matplotlib's global default.

Example:
    >>> import numpy as np
    >>> from landscape import plots
    >>> fig, ax = plots.subplots()
    >>> k = np.arange(2, 200)
    >>> plots.rate_axes(ax)  # doctest: +ELLIPSIS
    <Axes: ...>
    >>> plots.curve(ax, k, 3.0 / k**2, stderr=0.3 / k**2, label="Monte Carlo")  # doctest: +ELLIPSIS
    <Axes: ...>
    >>> plots.reference_slope(ax, k, anchor_value=3.0 / 4)  # doctest: +ELLIPSIS
    <Axes: ...>
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from landscape.checks import check_choice, check_positive
from landscape.files import write_atomic

#: Where the sample count is on the x axis.
K_LABEL = "k (number of samples)"

_RC = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "figure.figsize": (5.2, 3.6),
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.85,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
    "axes.formatter.use_mathtext": True,
}
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


@functools.cache
def _style_rc() -> dict[str, Any]:
    """The style's rcParams: seaborn's "notebook" context, "whitegrid" style and "colorblind"
    palette (what ``sns.set_theme`` would set, without remapping the "b", "g"... colour codes),
    then :data:`_RC`."""
    return {
        **sns.plotting_context("notebook"),
        **sns.axes_style("whitegrid", rc={"font.family": "sans-serif"}),
        "axes.prop_cycle": cycler(color=sns.color_palette("colorblind")),
        **_RC,
    }


def style() -> Any:
    """A context in which matplotlib draws in the project's style; rcParams are restored on exit.

    Example:
        >>> with style():
        ...     fig, ax = subplots()
    """
    return mpl.rc_context(_style_rc())


def use_style() -> None:
    """Make the project's style matplotlib's global default, for figures drawn without this module.

    It changes the global rcParams, so a library never calls it; a notebook may, once, after its
    imports. Calling it again changes nothing more.
    """
    mpl.rcParams.update(_style_rc())


def _styled(draw: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``draw`` inside :func:`style`."""

    @functools.wraps(draw)
    def styled(*args: Any, **kwargs: Any) -> Any:
        with style():
            return draw(*args, **kwargs)

    return styled


def _resolve_color(kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with a "C0"-style colour resolved now, in the style's palette (matplotlib would
    otherwise resolve it when the figure is drawn, outside :func:`style`)."""
    if "color" in kw:
        kw["color"] = mpl.colors.to_rgba(kw["color"])
    return kw


@_styled
def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` with panels of the style's size and a constrained layout.

    Args:
        nrows: rows of panels.
        ncols: columns of panels.
        **kwargs: passed to ``plt.subplots`` (``figsize`` overrides the default size).
    """
    width, height = mpl.rcParams["figure.figsize"]
    kwargs.setdefault("figsize", (width * ncols, height * nrows))
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, **kwargs)


def _is_log(ax: Axes, axis: Literal["x", "y"] = "y") -> bool:
    return (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"


def _floor(values: np.ndarray) -> float:
    """A tenth of the smallest positive finite value (1e-300 if there is none)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.min()) / 10 if positive.size else 1e-300


@_styled
def curve(
    ax: Axes,
    k: Sequence[float] | np.ndarray,
    value: Sequence[float] | np.ndarray,
    stderr: Sequence[float] | np.ndarray | None = None,
    label: str | None = None,
    band: float = 2.0,
    **kw: Any,
) -> Axes:
    """A measured curve with a shaded band of ``value ± band · stderr``.

    Call :func:`rate_axes` first when the axes are log-log: then non-positive values are left out
    of the line (gaps, not fake values) and the band's lower edge is clipped at a tenth of the
    smallest positive value. The curve is drawn as measured, never smoothed.

    Args:
        ax: the axes.
        k: x values (usually the sample counts).
        value: y values aligned with ``k``.
        stderr: standard errors aligned with ``k``; None draws no band.
        label: legend label.
        band: half-width of the band in standard errors (2 ≈ 95 %).
        **kw: passed to ``ax.plot`` (``color``, ``ls``, …).

    Returns:
        ``ax``.
    """
    x = np.asarray(k, dtype=float)
    y = np.asarray(value, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"k and value must be 1-D of the same length; got {x.shape} and {y.shape}."
        )
    log_y = _is_log(ax)
    shown = np.where(y > 0, y, np.nan) if log_y else y
    (line,) = ax.plot(x, shown, label=label, **_resolve_color(kw))
    if stderr is not None:
        se = np.asarray(stderr, dtype=float)
        if se.shape != y.shape:
            raise ValueError(f"stderr must be aligned with value; got {se.shape} and {y.shape}.")
        band = check_positive("band", band)
        low, high = y - band * se, y + band * se
        if log_y:
            floor = _floor(y)
            low, high = np.maximum(low, floor), np.maximum(high, floor)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if label is not None:
        ax.legend()
    return ax


@_styled
def rate_axes(ax: Axes, ylabel: str = r"$\Delta_k$", xlabel: str = K_LABEL) -> Axes:
    """Log-log axes for a rate in k, labelled.

    Args:
        ax: the axes.
        ylabel: the quantity on the y axis (with units where it has them).
        xlabel: the x axis label.

    Returns:
        ``ax``.
    """
    ax.set_xscale("log")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


def _slope_label(slope: float) -> str:
    if float(slope).is_integer():
        return "∝ k" + str(int(slope)).translate(_SUPERSCRIPT)
    return rf"$\propto k^{{{slope:g}}}$"


@_styled
def reference_slope(
    ax: Axes,
    k: Sequence[float] | np.ndarray,
    anchor_value: float,
    slope: float = -2.0,
    label: str | None = None,
    anchor_k: float | None = None,
) -> Axes:
    """A dashed guide line ``anchor_value · (k / anchor_k)^slope`` (a power law through one point).

    Args:
        ax: the axes.
        k: where to draw it.
        anchor_value: the line's value at ``anchor_k``.
        slope: the exponent (−2 for Theorem 1's rate).
        label: legend label; default "∝ k⁻²" for slope −2.
        anchor_k: the anchor's k (default: the first k).

    Returns:
        ``ax``.
    """
    x = np.asarray(k, dtype=float)
    x0 = float(x[0]) if anchor_k is None else float(anchor_k)
    check_positive("anchor_k", x0)
    y = float(anchor_value) * (x / x0) ** float(slope)
    ax.plot(x, y, ls="--", color="0.35", lw=1.1, label=label or _slope_label(slope))
    ax.legend()
    return ax


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


@_styled
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


@_styled
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


@_styled
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
    ax.plot(np.arange(1, values.size + 1), values, label=label, **_resolve_color(kw))
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


@_styled
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
    (line,) = ax.plot(x, y, label=label, **_resolve_color(kw))
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


@_styled
def savefig(fig: Figure, output_dir: str | os.PathLike[str] | None, name: str) -> Path | None:
    """Save ``fig`` as ``<output_dir>/<name>.png`` atomically, beside the run's results.json.

    Args:
        fig: the figure.
        output_dir: the run folder (the notebook's ``output_dir`` parameter); None saves nothing.
        name: file name, with or without ".png" (letters, digits, '_', '-', '.').

    Returns:
        The path written, or None when ``output_dir`` is None.
    """
    if output_dir is None:
        return None
    stem = name[:-4] if name.endswith(".png") else name
    if not stem or Path(stem).name != stem:
        raise ValueError(f"name={name!r} must be a plain file name (no folders).")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_atomic(Path(output_dir) / f"{stem}.png", buffer.getvalue())


@_styled
def band(
    ax: Axes,
    k: Sequence[float] | np.ndarray,
    lower: Sequence[float] | np.ndarray,
    upper: Sequence[float] | np.ndarray,
    label: str | None = None,
    color: str = "C0",
    alpha: float = 0.12,
) -> Axes:
    """A shaded range between two measured curves (e.g. quantiles over data orders), unsmoothed.

    On a log y axis the lower edge is clipped at a tenth of the smallest positive value of either
    edge (the clipped edge means "down to zero"), as in :func:`curve`.

    Args:
        ax: the axes.
        k: x values.
        lower: the band's lower edge, aligned with ``k``.
        upper: the band's upper edge, aligned with ``k``.
        label: legend label.
        color: fill colour.
        alpha: fill opacity.

    Returns:
        ``ax``.
    """
    x, low, high = (np.asarray(a, dtype=float) for a in (k, lower, upper))
    if not x.shape == low.shape == high.shape or x.ndim != 1:
        raise ValueError(
            f"k, lower and upper must be 1-D of the same length; got {x.shape}, {low.shape}, "
            f"{high.shape}."
        )
    if _is_log(ax):
        floor = _floor(np.concatenate([low, high]))
        low, high = np.maximum(low, floor), np.maximum(high, floor)
    ax.fill_between(x, low, high, color=color, alpha=alpha, linewidth=0, label=label)
    if label is not None:
        ax.legend()
    return ax


@_styled
def sufficiency(
    ax: Axes,
    result: Any,
    k_last: float,
    color: str = "C3",
    extend: float = 1.3,
) -> Axes:
    """Mark k*(ε) of a ``sufficiency.Sufficiency`` on rate axes drawn with :func:`rate_axes`.

    Draws the threshold ε (dotted), k* as a vertical line with its interval shaded and, when k* is
    extrapolated, the fitted power law: thin over its fit window ("power-law fit") and dashed,
    labelled "extrapolation", from the last measured k to beyond the interval's upper end.

    Args:
        ax: the axes holding the measured curve.
        result: the ``Sufficiency`` (its ``epsilon``, ``k_star``, ``interval``, ``extrapolated``,
            ``fit``).
        k_last: the last measured k (where the extrapolation starts).
        color: colour of the markings.
        extend: draw the extrapolation up to ``extend`` × the largest k it must reach.

    Returns:
        ``ax``.
    """
    color = mpl.colors.to_rgba(color)
    eps = float(result.epsilon)
    ax.axhline(eps, color=color, ls=":", lw=1.2, label=f"ε = {eps:.3g}")
    k_star = float(result.k_star)
    fit = result.fit
    if result.extrapolated and fit is not None:
        reach = np.nanmax([k_star, *result.interval, k_last])
        inside = np.geomspace(fit.k_min, k_last, 50)
        ax.plot(inside, fit.predict(inside), color=color, lw=0.9, alpha=0.8, label="power-law fit")
        beyond = np.geomspace(k_last, extend * reach, 50)
        ax.plot(beyond, fit.predict(beyond), color=color, ls="--", lw=1.4, label="extrapolation")
    if np.isfinite(k_star):
        how = "extrapolated" if result.extrapolated else "measured"
        ax.axvline(k_star, color=color, lw=1.2, label=f"k* = {k_star:,.0f} ({how})")
        low, high = result.interval
        if np.isfinite(low) and np.isfinite(high) and high > low:
            ax.axvspan(low, high, color=color, alpha=0.1, linewidth=0)
    elif getattr(result, "kind", "") == "censored":
        # the data only say k* lies beyond this point: shade from there to the end
        ax.axvspan(result.at_least, k_last, color=color, alpha=0.08, linewidth=0,
                   label=f"k* > {result.at_least:,.0f} (censored)")
    ax.legend()
    return ax

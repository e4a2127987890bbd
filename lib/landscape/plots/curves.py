"""Curves over k: measured curves with error bands on log-log rate axes, guides and k*(ε).

Bands are value ± ``band`` · stderr, exactly as measured: nothing is smoothed. On a log axis a
band's lower edge is clipped at a small positive floor (the quantity is positive; the clipped edge
means "down to zero"), and non-positive values are left out of the line rather than drawn at a
fake tiny value. :func:`rate_axes` makes the axes, :func:`curve` and :func:`band` draw what was
measured, :func:`reference_slope` a power-law guide and :func:`sufficiency` the k*(ε) of
``sufficiency``. Nothing here computes the quantities plotted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes

from landscape.checks import check_positive
from landscape.plots.theme import resolve_color, styled

__all__ = ["K_LABEL", "band", "curve", "rate_axes", "reference_slope", "sufficiency"]

#: Where the sample count is on the x axis.
K_LABEL = "k (number of samples)"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _is_log(ax: Axes, axis: Literal["x", "y"] = "y") -> bool:
    return (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"


def _floor(values: np.ndarray) -> float:
    """A tenth of the smallest positive finite value (1e-300 if there is none)."""
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.min()) / 10 if positive.size else 1e-300


@styled
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
    (line,) = ax.plot(x, shown, label=label, **resolve_color(kw))
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


@styled
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


@styled
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


@styled
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


@styled
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
        ax.axvspan(
            result.at_least,
            k_last,
            color=color,
            alpha=0.08,
            linewidth=0,
            label=f"k* > {result.at_least:,.0f} (censored)",
        )
    ax.legend()
    return ax

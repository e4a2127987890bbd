"""The figure style, and making and saving figures in it.

The style is seaborn's "notebook" context, "whitegrid" style and "colorblind" palette with the
project's sizes (``_RC``). It is applied where figures are made, not at import: every drawing
function of ``plots`` runs inside :func:`style` (a context that restores the caller's rcParams;
``styled`` wraps a function in it), so importing the package changes no global setting. A
notebook that also draws with matplotlib directly calls :func:`use_style` once, which makes the
style matplotlib's global default. :func:`subplots` makes figures of the style's size;
:func:`savefig` writes them as PNGs, atomically, next to a run's results. What is drawn lives in
the other modules of ``plots``.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import seaborn as sns
from cycler import cycler
from matplotlib.figure import Figure

from landscape.files import write_atomic

__all__ = ["resolve_color", "savefig", "style", "styled", "subplots", "use_style"]

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


def styled(draw: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``draw`` inside :func:`style` (every drawing function of ``plots`` is wrapped so)."""

    @functools.wraps(draw)
    def styled(*args: Any, **kwargs: Any) -> Any:
        with style():
            return draw(*args, **kwargs)

    return styled


def resolve_color(kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with a "C0"-style colour resolved now, in the style's palette (matplotlib would
    otherwise resolve it when the figure is drawn, outside :func:`style`)."""
    if "color" in kw:
        kw["color"] = mpl.colors.to_rgba(kw["color"])
    return kw


@styled
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


@styled
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

"""Figures of replicated comparisons, drawn on axes a notebook provides.

``draw_values`` draws a measure per variant for every training seed with the mean and its interval
over seeds; ``draw_differences`` draws paired differences (``Comparison``) with their intervals,
as factors on a log axis for comparisons of logarithms. They only draw: nothing here computes,
trains or compares (``replication.compare``), and the figure style is ``plots``'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .compare import Comparison, Replicates

__all__ = [
    "draw_differences",
    "draw_values",
]

# ------------------------------------------------------------------------------------ figures


def draw_values(
    ax: Any,
    reps: Replicates,
    name: str,
    *,
    log: bool = False,
    ylabel: str = "",
    reference: float | None = None,
    reference_label: str | None = None,
    level: float = 0.95,
) -> Any:
    """Per variant: ``name`` for each seed (dots, one colour per seed, so pairs can be followed
    across variants) and the mean with its interval over seeds (black squares)."""
    values = reps.values(name)
    positions = np.arange(len(reps.variants))
    for j, seed in enumerate(reps.seeds):
        ax.plot(
            positions + 0.06 * (j - (len(reps.seeds) - 1) / 2),
            values[:, j],
            "o",
            alpha=0.6,
            color=f"C{j % 10}",
            label=f"seed {seed}",
        )
    for i, (mean, (lo, hi)) in enumerate(reps.summary(name, level=level)):
        err = [[mean - lo], [hi - mean]] if math.isfinite(lo) else None
        ax.errorbar(i, mean, err, fmt="s", color="k", capsize=4, ms=5)
    if reference is not None:
        ax.axhline(reference, color="0.35", ls="--", lw=1.1, label=reference_label)
    ax.legend(fontsize=7, ncol=min(4, len(reps.seeds) + 1))
    ax.set_xticks(
        range(len(reps.variants)), [v.label.replace(" +", "\n+") for v in reps.variants], fontsize=8
    )
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(
        f"per training seed (dots); mean and {level:.0%} interval over {len(reps.seeds)} seeds",
        fontsize=9,
    )
    return ax


def draw_differences(
    ax: Any,
    comparisons: Sequence[Comparison],
    *,
    xlabel: str = "",
    colors: tuple[str, str] = ("tab:green", "tab:red"),
) -> Any:
    """Each paired difference with its interval, one row per comparison.

    Coloured ``colors[0]`` when the interval lies above 0 (b larger), ``colors[1]`` below, grey
    for a tie. Comparisons of logarithms are drawn as factors b / a on a log axis.
    """
    log = any(c.log for c in comparisons)
    for y, c in enumerate(comparisons):
        x, lo, hi = (c.estimate, *c.interval)
        if c.log:
            x, lo, hi = math.exp(x), math.exp(lo), math.exp(hi)
        err = [[x - lo], [hi - x]] if math.isfinite(lo) else None
        ax.errorbar(
            x,
            y,
            xerr=err,
            fmt="o",
            capsize=4,
            color="0.45" if c.tie else colors[0] if c.estimate > 0 else colors[1],
        )
    ax.axvline(1.0 if log else 0.0, color="0.3", lw=1, ls="--")
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"×{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(
        range(len(comparisons)), [f"{c.change.a} →\n{c.change.b}" for c in comparisons], fontsize=8
    )
    ax.set_ylim(len(comparisons) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    level = comparisons[0].level if comparisons else 0.95
    ax.set_title(
        f"changing one setting: paired difference, {level:.0%} interval over seeds", fontsize=9
    )
    return ax

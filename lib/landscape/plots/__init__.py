"""One figure style for every notebook: rates on log-log axes, error bands, landscape surfaces.

Each function draws one kind of figure element on an Axes (or Figure) it is given and returns it, so
notebooks compose figures in a few lines, always in the one style. Nothing here computes the
quantities plotted. This package only re-exports; each family of figures lives in one module:

* ``theme`` — the style (``style``, ``use_style``), ``subplots`` of the style's size, and
  ``savefig``, which writes PNGs atomically next to a run's results. Importing the package
  changes no global setting: every function draws inside ``style``.
* ``curves`` — curves over k, drawn as measured (never smoothed): ``rate_axes``, ``curve`` and
  ``band`` with their error bands, ``reference_slope``, the k*(ε) marks of ``sufficiency``, and
  ``K_LABEL``.
* ``surfaces`` — 2-D landscape grids: ``surface_2d`` (contours, heatmap) and ``surface_3d``.
* ``spectra`` — Hessian eigenvalues (``spectrum``) and spectral densities (``density``).

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

from landscape.plots.curves import K_LABEL, band, curve, rate_axes, reference_slope, sufficiency
from landscape.plots.spectra import density, spectrum
from landscape.plots.surfaces import surface_2d, surface_3d
from landscape.plots.theme import savefig, style, subplots, use_style

__all__ = [
    "K_LABEL",
    "band",
    "curve",
    "density",
    "rate_axes",
    "reference_slope",
    "savefig",
    "spectrum",
    "style",
    "subplots",
    "sufficiency",
    "surface_2d",
    "surface_3d",
    "use_style",
]

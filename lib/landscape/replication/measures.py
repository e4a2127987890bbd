"""Measures defined inside the data, and the main paper's claims about them.

The fitted level of Δ_k at a reference k inside the fit window (``level_at``), never the intercept
at k = 1; basin widths on 1-D profiles with the crossings interpolated between grid points
(``profile_width``, ``basin_widths``, ``basin_record``) and the two 2-D slices of the papers'
landscape figures (``basin_slices``). ``BASIN_CLAIMS`` holds the main paper's claims about the
basin width (Figs 2–4) and ``reshapes_convergence`` its §6 claim about Δ_k, as ``Expectation``s
to test with ``Replicates.claims``. Training and comparing variants is not here
(``replication.compare``), nor is drawing (``replication.figures``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import directions, experiment, hessian, surface
from ..checks import check_int, check_positive
from ..problem import Problem
from ..theory import RateFit
from .compare import Expectation

__all__ = [
    "BASIN_CLAIMS",
    "Widths",
    "basin_record",
    "basin_slices",
    "basin_widths",
    "level_at",
    "profile_width",
    "reshapes_convergence",
]

# ------------------------------------------------------------------- measures inside the data


def level_at(fit: RateFit, k_ref: int) -> float:
    """The fitted C k_ref^(−α) at a reference ``k_ref`` inside the fit window.

    The intercept C alone is the fit's value at k = 1, usually far outside the window it was
    fitted on; two architectures with slightly different α can swap order between k = 1 and
    the data. The fitted value at a k inside the window compares what was measured.
    """
    k_ref = check_int("k_ref", k_ref, low=1)
    if not fit.k_min <= k_ref <= fit.k_max:
        raise ValueError(
            f"k_ref={k_ref} lies outside the fit window {fit.k_min}..{fit.k_max}; choose a "
            "reference k inside the data the rate was fitted on."
        )
    return float(fit.predict(k_ref))


def profile_width(coords: Any, loss: Any, rise: float) -> surface.BasinWidth:
    """Half-width of the basin on a 1-D profile, the crossings interpolated between grid points.

    Walking out from the grid point nearest 0, the basin ends on each side where the loss first
    exceeds loss(0) + ``rise``; the crossing is placed by linear interpolation between the last
    point inside and the first outside, so the width resolves below the grid step (counting grid
    points would round it to whole steps, and two networks can then tie exactly). Where the loss
    never exceeds the level, the edge of the grid is used and ``truncated`` is set (a lower bound).

    Example:
        >>> t = np.linspace(-1, 1, 11)
        >>> round(profile_width(t, 2 * t**2, 0.5).radius, 3)  # exact √(0.5/2) = 0.5; step 0.2
        0.49
    """
    t, f = np.asarray(coords, dtype=float), np.asarray(loss, dtype=float)
    if t.ndim != 1 or t.shape != f.shape or len(t) < 3:
        raise ValueError(
            f"coords and loss must be 1-D of equal length ≥ 3; got {t.shape}, {f.shape}."
        )
    if not np.all(np.diff(t) > 0) or not t[0] <= 0 <= t[-1]:
        raise ValueError("coords must increase and contain 0 (w*).")
    rise = check_positive("rise", rise)
    c = int(np.abs(t).argmin())
    level = f[c] + rise
    ends, truncated = [], False
    for step in (1, -1):
        j = c + step
        while 0 <= j < len(t) and f[j] <= level:
            j += step
        if not 0 <= j < len(t):
            ends.append(t[j - step])
            truncated = True
            continue
        inner = j - step
        frac = (level - f[inner]) / (f[j] - f[inner])
        ends.append(t[inner] + frac * (t[j] - t[inner]))
    return surface.BasinWidth(float((ends[0] - ends[1]) / 2), truncated)


@dataclass(frozen=True, eq=False)
class Widths:
    """Basin half-widths along several random 1-D directions (see ``basin_widths``).

    Attributes:
        radius: one interpolated half-width per direction.
        truncated: per direction, whether the basin reached the edge of the scan (a lower bound).
        profiles: the scanned 1-D surfaces (``surface.Surface``), one per direction.
    """

    radius: np.ndarray
    truncated: np.ndarray
    profiles: list[surface.Surface] = field(repr=False)

    @property
    def mean(self) -> float:
        """The mean half-width over the directions."""
        return float(self.radius.mean())


def basin_widths(
    prob: Problem,
    count: int,
    *,
    rise: float,
    span: float = 1.0,
    points: int = 15,
    kind: str = "filter",
    seed: int = 0,
) -> Widths:
    """Interpolated basin half-widths of L_K along ``count`` random directions through w*.

    Draws ``count`` directions (``directions.random``, filter-normalised by default: each
    filter as long as w*'s), scans L_K on ``points`` coordinates in [−span, span] along each
    (``surface.scan``) and measures each profile with ``profile_width``.
    """
    count = check_int("count", count, low=1)
    points = check_int("points", points, low=3)
    if points % 2 == 0:
        raise ValueError(f"points={points} must be odd so that w* is a grid point.")
    sub = directions.random(prob, count, kind=kind, seed=seed)
    profiles = [
        surface.scan(
            prob,
            directions.Subspace(sub.basis[:, j : j + 1], sub.kind),
            span=span,
            points=points,
            progress=False,
        )
        for j in range(count)
    ]
    found = [profile_width(p.coords[0], p.loss, rise) for p in profiles]
    return Widths(
        radius=np.array([w.radius for w in found]),
        truncated=np.array([w.truncated for w in found]),
        profiles=profiles,
    )


# --------------------------------------------------------------------------- the paper's claims

#: The main paper's claims about the basin width r (§5.2–5.3, Figs 2–4; §6 "Impact of
#: architectural choices"), as it states them, each tested on every one-setting change it is
#: about: r paired over training seeds (``Replicates.claims("width", BASIN_CLAIMS)``).
BASIN_CLAIMS: tuple[Expectation, ...] = (
    Expectation(
        "bn_narrows_basin",
        "main paper §5.2, Fig. 2",
        "Adding batch-norm narrows a CNN's basin: r is smaller for {b} than for {a}.",
        "batch_norm",
        {"below": 0.0},
        model="cnn",
    ),
    Expectation(
        "dropout_widens_basin",
        "main paper §5.2, Fig. 2",
        "Adding dropout widens a CNN's basin (again): r is larger for {b} than for {a}.",
        "dropout",
        {"above": 0.0},
        model="cnn",
    ),
    Expectation(
        "depth_widens_basin",
        "main paper §5.3, Fig. 4",
        "A deeper CNN has a wider basin: r is larger for {b} than for {a}.",
        "depth",
        {"above": 0.0},
        model="cnn",
    ),
    Expectation(
        "mlp_bn_dropout_widest",
        "main paper §5.2, Fig. 3",
        "An MLP with batch-norm and dropout has a wider basin than with only one of them: r is "
        "larger for {b} than for {a}.",
        ("batch_norm", "dropout"),
        {"above": 0.0},
        model="mlp",
        when=lambda s: bool(s["batch_norm"]) and s["dropout"] > 0,
    ),
)


def reshapes_convergence(k_ref: int) -> Expectation:
    """The main paper's §6 claim that architecture "reshapes convergence", tested per one-setting
    change on the level of Δ_k at ``k_ref`` (compare with ``log=True``): the paired |ln ratio|
    exceeds ln 2, i.e. the change moves Δ_k at least twofold, whichever way."""
    return Expectation(
        "setting_reshapes_convergence",
        "main paper §6, 'Impact of architectural choices'",
        f"Changing one setting reshapes convergence: Δ_k at k = {check_int('k_ref', k_ref, low=1)} "
        "differs at least twofold between {a} and {b} (|ln ratio| > ln 2 = 0.69).",
        None,
        {"above": math.log(2.0)},
        absolute=True,
    )


def basin_record(
    setup: experiment.Setup,
    count: int,
    *,
    rise: float,
    span: float = 1.0,
    points: int = 15,
    seed: int = 0,
) -> dict[str, Any]:
    """What a basin comparison keeps of one trained network (a ``replicate`` measure's numbers).

    ``width``: r, the mean interpolated half-width along ``count`` filter-normalised directions
    (``basin_widths``); ``spread``: their standard deviation over r; ``truncated``: whether any
    scan ended inside the basin (r is then a lower bound); ``accuracy``: test accuracy; ``N``.
    """
    w = basin_widths(setup.problem, count, rise=rise, span=span, points=points, seed=seed)
    spread = float(w.radius.std(ddof=1) / w.mean) if count > 1 else 0.0
    return dict(
        width=w.mean,
        spread=spread,
        truncated=bool(w.truncated.any()),
        accuracy=setup.test_accuracy,
        N=setup.problem.num_params,
    )


def basin_slices(
    prob: Problem,
    *,
    points: int,
    filter_span: float,
    eigen_span: float,
    seed: int = 0,
    max_rise: float = math.inf,
) -> dict[str, Any]:
    """The two 2-D slices of the papers' landscape figures, with what their captions need.

    ``filter``: L_K on a ``points``² grid over [−filter_span, filter_span]² along two
    filter-normalised random directions (seeded by ``seed``); ``hessian``: the same along the top-2
    Hessian eigenvectors (``eig``, from ``hessian.top_eigenpairs``) over ±``eigen_span``;
    ``L0_filter``, ``L0_hessian``: L_K at the centre; ``dip``: the lowest L_K − L_K(w*) on either
    slice (< 0 where the slice goes below w*); ``above``: how many of the two slices rise beyond
    ``max_rise`` somewhere.
    """
    points = check_int("points", points, low=3)
    if points % 2 == 0:
        raise ValueError(f"points={points} must be odd so that w* is a grid point.")
    eig = hessian.top_eigenpairs(prob, 2)
    filt = directions.random(prob, 2, kind="filter", seed=seed)
    out: dict[str, Any] = dict(eig=eig, dip=0.0, above=0)
    for kind, sub, span in [("filter", filt, filter_span), ("hessian", eig.subspace, eigen_span)]:
        out[kind] = s = surface.scan(prob, sub, span=span, points=points, progress=False)
        out[f"L0_{kind}"] = centre = float(s.loss[points // 2, points // 2])
        out["dip"] = min(out["dip"], float(s.loss.min() - centre))
        out["above"] += int((s.loss - centre > max_rise).any())
    return out

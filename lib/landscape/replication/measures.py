"""Measures of one trained network, defined inside the data, and the main paper's claims about them.

The fitted level of Δ_k at a reference k inside the fit window (``level_at``), never the intercept
at k = 1, and the measured level of k²Δ_k at large k (``level``); basin widths on 1-D profiles with
the crossings interpolated between grid points (``profile_width``, ``basin_widths``,
``basin_record``) and the two 2-D slices of the papers' landscape figures (``basin_slices``); the
σ and d sweeps of Δ_k of 03_sampling (``Sweep``, ``sweep``, its options ``sweep_options`` and its
``replicate`` measure ``sweep_measure``) and the numbers of its integrand grid (``grid_summary``).
``BASIN_CLAIMS`` holds the main paper's claims about the basin width (Figs 2–4) and
``reshapes_convergence`` its §6 claim about Δ_k, as ``Expectation``s to test with
``Replicates.claims``. Training and comparing variants is not here (``replication.compare``), nor
is drawing (``replication.figures``), nor what the sweeps conclude (``readings.sampling``), nor the
estimators (``curvature``, ``delta``, ``original``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import curvature, delta, directions, experiment, hessian, original, surface
from ..checks import check_int, check_positive, check_seed, check_sequence
from ..curvature.results import DifferenceTerms
from ..delta import Curve, PointwiseCurve
from ..problem import Problem
from ..theory import RateFit
from .compare import Expectation

__all__ = [
    "BASIN_CLAIMS",
    "Sweep",
    "Widths",
    "basin_record",
    "basin_slices",
    "basin_widths",
    "grid_summary",
    "level",
    "level_at",
    "profile_width",
    "reshapes_convergence",
    "sweep",
    "sweep_measure",
    "sweep_options",
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


def level(k: np.ndarray, values: np.ndarray, k_min: int) -> float:
    """The level of k²·values at large k: |mean| over k ≥ ``k_min`` (additive over the terms).

    Example:
        >>> k = np.arange(2, 101)
        >>> level(k, 3.0 / k**2, 50)
        3.0
    """
    return float(abs(np.mean((k**2 * values)[k >= k_min])))


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
    edge = f[c] + rise
    ends, truncated = [], False
    for step in (1, -1):
        j = c + step
        while 0 <= j < len(t) and f[j] <= edge:
            j += step
        if not 0 <= j < len(t):
            ends.append(t[j - step])
            truncated = True
            continue
        inner = j - step
        frac = (edge - f[inner]) / (f[j] - f[inner])
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


# ------------------------------------------------------------- Δ_k against σ and d (03_sampling)


@dataclass(frozen=True, eq=False)
class Sweep:
    """One trained network's σ and d sweeps (what ``sweep`` returns).

    Attributes:
        seed: the training seed (it also drew the directions, the draws and the extra orders).
        terms: d → the exact terms in the first d directions, in the Problem's order.
        by_sigma: σ → Monte Carlo Δ_k at d = ``sigma_dim``, averaged over ``orders`` data orders
            (``per_order[0]`` is the Problem's own order, the one of ``terms``).
        by_dim: d → the same at σ = ``dim_sigma``.
        original: d → Δ_k at σ = ``dim_sigma`` as the original code computed it.
        gap: |a_k| over the same data orders (``delta.pointwise``).
        accuracy: the network's test accuracy.
    """

    seed: int
    sigma_dim: int
    dim_sigma: float
    orders: int
    terms: dict[int, DifferenceTerms] = field(repr=False)
    by_sigma: dict[float, Curve] = field(repr=False)
    by_dim: dict[int, Curve] = field(repr=False)
    original: dict[int, Curve] = field(repr=False)
    gap: PointwiseCurve = field(repr=False)
    accuracy: float = math.nan

    @property
    def k(self) -> np.ndarray:
        return self.terms[self.sigma_dim].k


def sweep(
    prob: Problem,
    *,
    seed: int,
    sigmas: Sequence[float],
    sigma_dim: int,
    dims: Sequence[int],
    dim_sigma: float,
    draws: int,
    orders: int,
    direction_seed: int = 0,
    accuracy: float = math.nan,
) -> Sweep:
    """Measure the σ sweep (d = ``sigma_dim``) and the d sweep (σ = ``dim_sigma``) of one network.

    The directions are ``directions.random(..., seed=direction_seed + seed)``; the subspace of
    dimension d is spanned by their first d columns, so the d sweep changes d and nothing else.
    Monte Carlo uses ``draws`` draws (seeded by ``seed``) and ``orders`` data orders (the
    Problem's first, the others seeded by ``seed``); a curve needed by both sweeps is measured once.
    """
    widest = directions.random(
        prob, max(*dims, sigma_dim), kind="gaussian", seed=direction_seed + seed
    )
    spaces = {
        d: directions.Subspace(widest.basis[:, :d], kind="gaussian")
        for d in sorted({*dims, sigma_dim})
    }
    terms = {d: curvature.difference_terms(prob, spaces[d], progress=False) for d in spaces}
    cache: dict[tuple[float, int], Curve] = {}

    def mc(sigma: float, d: int) -> Curve:
        if (sigma, d) not in cache:
            cache[sigma, d] = delta.monte_carlo(
                prob,
                sigma,
                draws,
                subspace=spaces[d],
                seed=seed,
                orders=orders,
                order_seed=seed,
                progress=False,
            )
        return cache[sigma, d]

    return Sweep(
        seed=seed,
        sigma_dim=sigma_dim,
        dim_sigma=dim_sigma,
        orders=orders,
        terms=terms,
        by_sigma={s: mc(s, sigma_dim) for s in sigmas},
        by_dim={d: mc(dim_sigma, d) for d in dims},
        original={
            d: original.monte_carlo(prob, dim_sigma, draws, spaces[d], seed=seed, order_seed=seed)
            for d in dims
        },
        gap=delta.pointwise(prob, orders=orders, seed=seed),
        accuracy=accuracy,
    )


def sweep_options(
    *,
    sigmas: Any,
    sigma_dim: Any,
    dims: Any,
    dim_sigma: Any,
    draws: Any,
    orders: Any,
    direction_seed: Any = 0,
) -> dict[str, Any]:
    """``sweep``'s options, checked before any training (ValueError naming the parameter).

    σ and d come back sorted and without repeats; each sweep needs two or more values, ``draws``
    and ``orders`` two or more (an interval over orders needs two).

    Example:
        >>> found = sweep_options(sigmas=[1.0, 0.1], sigma_dim=8, dims=[4, 1], dim_sigma=1.0,
        ...                       draws=16, orders=4)
        >>> found["sigmas"]
        [0.1, 1.0]
    """
    out = dict(
        sigmas=sorted(set(check_sequence("sigmas", sigmas, check_positive))),
        sigma_dim=check_int("sigma_dim", sigma_dim, low=1),
        dims=sorted(set(check_sequence("dims", dims, check_int, low=1))),
        dim_sigma=check_positive("dim_sigma", dim_sigma),
        draws=check_int("draws", draws, low=2),
        orders=check_int("orders", orders, low=2),
        direction_seed=check_seed("direction_seed", direction_seed),
    )
    if len(out["sigmas"]) < 2 or len(out["dims"]) < 2:
        raise ValueError(
            f"sigmas={out['sigmas']} and dims={out['dims']} must each hold two or more values: "
            "the sweeps compare them."
        )
    return out


def sweep_measure(**options: Any) -> Callable[[Any, Any, int], dict[str, Any]]:
    """``sweep`` as a ``replicate`` measure: ``{"sweep": Sweep, "accuracy": …}`` per seed.

    ``options`` are ``sweep``'s keyword arguments other than ``seed`` and ``accuracy`` (as
    ``sweep_options`` returns them).
    """

    def run(setup, variant, seed: int) -> dict[str, Any]:
        found = sweep(setup.problem, seed=seed, accuracy=setup.test_accuracy, **options)
        return {"sweep": found, "accuracy": setup.test_accuracy}

    return run


def grid_summary(
    grid: surface.Surface, shuffled: surface.Surface, sigma: float
) -> dict[str, list[float]]:
    """What the reading quotes of the integrand d_k²·p on a 2-D grid, per kept k.

    ``delta``: its grid quadrature Σ d_k² p ΔA (≈ Δ_k restricted to the plane); ``peak``: its
    maximum; ``gap_at_centre``: d_k(w*)²; ``step``: the mean absolute change between neighbouring
    grid points relative to its mean (small for a smooth surface, large for a spiky one); the
    ``_original`` keys: the same for ``shuffled`` (``original.scan``: an order per grid point).
    """
    area = float(np.prod([np.diff(c)[0] for c in grid.coords]))
    centre = tuple(len(c) // 2 for c in grid.coords)
    out: dict[str, list[float]] = {"k": [int(x) for x in grid.k]}
    for suffix, surf in (("", grid), ("_original", shuffled)):
        z = surf.integrand(sigma)
        axes = tuple(range(1, z.ndim))
        change = sum(np.abs(np.diff(z, axis=a)).mean(axes) for a in axes)
        steps = change / (len(axes) * z.mean(axes))
        out[f"delta{suffix}"] = (z.sum(axes) * area).tolist()
        out[f"step{suffix}"] = steps.tolist()
        if not suffix:
            out["peak"] = z.max(axes).tolist()
            out["gap_at_centre"] = [float(d[centre] ** 2) for d in surf.difference]
    return out

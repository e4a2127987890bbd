"""9. The papers' scale, each stage timed against its floor, with peak memory and growth in K.

Networks of the papers' shapes on random tensors of the real input shapes (cost does not depend on
pixel values): the MNIST-shaped MLP 4×128 with batch-norm and dropout (N = 152,330) at K = 10,000,
and the CIFAR-shaped CNN 4×64 with batch-norm (N ≈ 112k) at K = 2,000; float32, batch-norm with
non-trivial running statistics, eval mode.

Stages and their floors (measured in the same process, interleaved with the stage):

* Monte Carlo, 64 full-space draws: the bare batched forward over the same 64 × K losses.
* closed form in d = 16 (``difference_terms(prob, subspace)``): 4d bare forwards over K (the
  chain route costs about 4d layer products per sample).
* top-16 eigenpairs (which="LM", tol 1e-4), ours and PyHessian's: each one's HVP count × one HVP.
* stochastic full-space terms (``method="hutchinson"``, defaults s = m = 64): a 128-HVP sketch
  plus 4·128 forwards (the layer products for d = 128); also printed as a multiple of 64 MC draws.
* SLQ density (defaults: 8 probes × 64 steps): its HVP count × one HVP.
* a 41×41 surface (``surface.scan``): 1,681 bare forwards over K.

Stages too slow for this CPU are measured at 1–3 smaller sizes (K, or grid points for the
surface) and extrapolated to the target as fixed cost + linear work: every stage's work is linear
in K (in points² for the surface) for a given number of passes, so the time is continued from the
largest measured size with the slope of a least-squares line through the measured times, at most
the slope through the origin (a fixed cost is not negative), and linearly from one size. The
contender and its floor are extrapolated alike, and A/B as measured side by side at the largest
size is printed too. The exponent of K between the measured sizes (log-log) is printed as how the
cost grows there; it is not used to extrapolate: at these small sizes fixed costs and timing
noise moved it from 0.47 to 1.39 in one run (2026-12-03), and continuing each time along its own
power law put the CNN's 41×41 surface at 910 s against a floor of 24,000 s. ``--paper-full``
measures every stage at its full size.

Two more measurements on the MLP: SPEC §7's row "stochastic full-space terms ≤ 20× 64 Monte Carlo
draws" at K = 2,000, the two interleaved on one Problem (medians of 5: the 64 draws take about
0.5 s, and single rounds of either varied by 30 % on the shared host of 2026-12-03); and how the
cheap stages grow with N, at widths 48, 128, 256 (N ≈ 45k, 152k, 400k) and K = 1,000 (the
exponent of N fitted on a log-log scale; printed, no target). One round per size (two for the
cheap stages), the contender and its floor interleaved. Peak memory is the stage's own (peak RSS
above its start, at the largest size measured); target ≤ 4 GB.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from landscape import curvature, delta, directions, hessian, models, surface
from landscape.hessian import hvp
from landscape.problem import Problem

from ._common import bare_loop, parameter_draws
from ._timing import Row, interleaved, peak_memory, timed

SIGMA = 0.01


@dataclass(frozen=True)
class Network:
    kind: str
    input_shape: tuple[int, ...]
    cfg: dict
    samples: int  # the target K
    sizes: dict  # stage -> sizes measured (K, or grid points for "surface"), None: the target only


NETWORKS = {
    "MLP 4×128 bn+dropout (MNIST)": Network(
        "mlp",
        (1, 28, 28),
        dict(depth=4, width=128, batch_norm=True, dropout=0.2),
        10_000,
        {
            "mc": (2_500, 5_000, 10_000),
            "closed": (2_500, 5_000, 10_000),
            "eigen": (2_500, 5_000, 10_000),
            "pyhessian": (2_500,),
            "hutchinson": (500, 1_000, 2_000),
            "slq": (1_250, 2_500),
            "surface": (6, 11),
        },
    ),
    "CNN 4×64 bn (CIFAR)": Network(
        "cnn",
        (3, 32, 32),
        dict(depth=4, channels=64, batch_norm=True),
        2_000,
        {
            "mc": (125, 250),
            "closed": (125, 250),
            "eigen": (125, 250),
            "pyhessian": (),  # about 10 minutes at K = 125 on this CPU: --paper-full runs it
            "hutchinson": (64, 128),
            "slq": (32, 64),
            "surface": (3, 5),
        },
    ),
}


def _problem(net: Network, k: int) -> Problem:
    model = models.build(net.kind, net.input_shape, 10, seed=0, **net.cfg)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial running statistics, then eval mode
        model.train()
        model(torch.randn(256, *net.input_shape, generator=generator) * 1.5 + 0.2)
    model.eval()
    X = torch.randn(k, *net.input_shape, generator=generator)
    y = torch.randint(0, 10, (k,), generator=generator)
    return Problem(model, X, y, dtype=torch.float32, device="auto")


def _median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    return statistics.median(timed(fn)[1] for _ in range(repeats))


class Unit:
    """One HVP and one bare forward over the Problem's K samples, timed when asked: right after
    the stage they are the floor of (a warm-up call, then the median of 3), so that both see the
    same load on a shared machine."""

    def __init__(self, prob: Problem) -> None:
        self.v = torch.randn(prob.num_params, generator=torch.Generator().manual_seed(1))
        self.v = self.v.to(prob.center)
        self.prob = prob
        self.bare = bare_loop(prob, prob.center[None])

    def hvp(self) -> float:
        hvp(self.prob, self.v)
        return _median_time(lambda: hvp(self.prob, self.v))

    def forward(self) -> float:
        self.bare()
        return _median_time(self.bare)


def _mc(prob, unit):
    W = parameter_draws(prob, SIGMA, 64)
    floor = bare_loop(prob, W)
    return (
        lambda: delta.monte_carlo(prob, SIGMA, 64, progress=False),
        lambda _: _median_time(floor, 1),
        "64 bare forwards",
    )


def _closed(prob, unit):
    sub = directions.random(prob, 16, seed=0)
    return (
        lambda: curvature.difference_terms(prob, sub, progress=False),
        lambda _: 64 * unit.forward(),
        "4d = 64 forwards",
    )


def _eigen(method):
    # PyHessian's own default of 100 iterations per pair (``converged`` says whether it stopped
    # on tol): with the adapter's 1,000, near-degenerate pairs at small K ran for an hour.
    max_iter = 100 if method == "pyhessian" else None

    def stage(prob, unit):
        return (
            lambda: hessian.top_eigenpairs(
                prob, 16, method=method, tol=1e-4, which="LM", max_iter=max_iter
            ),
            lambda result: result.hvps * unit.hvp(),
            "HVPs × one HVP",
        )

    return stage


def _hutchinson(prob, unit):
    return (
        lambda: curvature.difference_terms(prob, method="hutchinson", progress=False),
        lambda _: 128 * unit.hvp() + 512 * unit.forward(),
        "128 HVPs + 512 forwards",
    )


def _slq(prob, unit):
    return (
        lambda: hessian.spectral_density(prob),
        lambda result: result.hvps * unit.hvp(),
        "HVPs × one HVP",
    )


def _surface(points):
    def stage(prob, unit):
        sub = directions.random(prob, 2, seed=1)
        return (
            lambda: surface.scan(prob, sub, span=0.5, points=points, progress=False),
            lambda _: points**2 * unit.forward(),
            "points² forwards",
        )

    return stage


STAGES = {  # name -> (label, stage builder given the size, repeats)
    "mc": ("Monte Carlo, 64 draws", lambda size: _mc, 2),
    "closed": ("closed form d = 16", lambda size: _closed, 2),
    "eigen": ("top-16 eigen, ours", lambda size: _eigen("lanczos"), 1),
    "pyhessian": ("top-16 eigen, PyHessian", lambda size: _eigen("pyhessian"), 1),
    "hutchinson": ("stochastic full-space", lambda size: _hutchinson, 1),
    "slq": ("SLQ density", lambda size: _slq, 1),
    "surface": ("41×41 surface", _surface, 1),
}


def _fit(sizes: list[int], times: list[float], target: int) -> tuple[float, float]:
    """(time at ``target``, exponent between the measured sizes): the last measured time continued
    with the slope of the least-squares line through (size, time), capped at the slope through the
    origin (time / size: no negative fixed cost); linear from a single size or a slope ≤ 0."""
    last, through_origin = times[-1], times[-1] / sizes[-1]
    if len(sizes) < 2:
        return last * target / sizes[-1], math.nan
    exponent = float(np.polyfit(np.log(sizes), np.log(times), 1)[0])
    slope = float(np.polyfit(sizes, times, 1)[0])
    if not 0 < slope <= through_origin:
        slope = through_origin
    return last + slope * (target - sizes[-1]), exponent


def _measure(net: Network, stage: str, problems: dict, full: bool) -> dict | None:
    label, builder, repeats = STAGES[stage]
    sizes = list(net.sizes[stage])
    by_points = stage == "surface"
    target = 41 if by_points else net.samples
    if full:
        sizes = [target]
    if not sizes:
        return None
    times, floors, extra = [], [], ""
    eigen_runs: dict[int, tuple[float, int, str]] = {}  # K -> (seconds, HVPs, note)
    peak = 0
    for size in sizes:
        k = net.samples if by_points else size
        prob, unit = problems.setdefault(k, None) or (None, None)
        if prob is None:
            prob = _problem(net, k)
            unit = Unit(prob)
            problems[k] = (prob, unit)
        run, floor_of, floor_text = builder(size)(prob, unit)
        start = time.perf_counter()
        result, peak, _ = peak_memory(run, prob.device)  # the warm-up, or the one round
        spent, floor = [time.perf_counter() - start], [floor_of(result)]
        if repeats > 1:  # leave the warm-up out
            spent, floor = [], []
            for _ in range(repeats):
                spent.append(timed(run)[1])
                floor.append(floor_of(result))
        times.append(statistics.median(spent))
        floors.append(statistics.median(floor))
        if stage in ("eigen", "pyhessian"):
            extra = (
                f"{result.hvps} HVPs, max rel. residual {result.relative_residuals.max():.1e}, "
                f"{'converged' if result.converged else 'stopped by max_iter'} (at K = {size:,})"
            )
            eigen_runs[size] = (times[-1], result.hvps, extra)
    work = [x**2 for x in sizes] if by_points else sizes  # what the time is linear in
    value, slope = _fit(work, times, target**2 if by_points else target)
    floor_value, _ = _fit(work, floors, target**2 if by_points else target)
    measured = sizes[-1] == target
    unit_name = "points per side" if by_points else "K"
    if len(sizes) == 1:
        how = (
            "measured"
            if measured
            else (
                f"measured at {unit_name} = {sizes[0]:,}, scaled linearly (assumed) to {target:,}"
            )
        )
    else:
        how = (
            f"measured at {unit_name} = {', '.join(map(str, sizes))}; time ∝ "
            f"{'points²' if by_points else 'K'}^{slope:.2f} there"
            + ("" if measured else f", extrapolated as fixed cost + linear to {target:,}")
        )
    if not measured:
        how += f"; A/B measured at {unit_name} = {sizes[-1]:,}: {times[-1] / floors[-1]:.2f}"
    return dict(
        label=label,
        value=value,
        floor=floor_value,
        floor_text=floor_text,
        how=how,
        peak=peak,
        extra=extra,
        eigen_runs=eigen_runs,
        problem=problems[net.samples if by_points else sizes[-1]][0],
    )


def _stochastic_vs_monte_carlo(quick: bool) -> Row:
    """SPEC §7's row: the stochastic full-space terms (defaults) against 64 Monte Carlo draws on the
    same Problem (the MLP at K = 2,000; 500 with ``quick``), interleaved, medians of 5."""
    net = next(iter(NETWORKS.values()))
    prob = _problem(net, 500 if quick else 2_000)
    t = interleaved(
        {
            "stochastic": lambda: curvature.difference_terms(
                prob, method="hutchinson", progress=False
            ),
            "mc": lambda: delta.monte_carlo(prob, SIGMA, 64, progress=False),
        },
        1 if quick else 5,
    )
    ratio = t["stochastic"].median / t["mc"].median
    notes = curvature.difference_terms(prob, method="hutchinson", progress=False).notes
    return Row(
        "9 MLP stochastic vs MC",
        "stochastic full-space terms (s = m = 64)",
        t["stochastic"].median,
        "64 Monte Carlo draws, same Problem",
        t["mc"].median,
        "A/B ≤ 20",
        ratio <= 20,
        note=f"N = {prob.num_params:,}, K = {prob.num_samples:,}, medians of "
        f"{len(t['mc'].times)} interleaved (stochastic {t['stochastic'].spread()}, Monte Carlo "
        f"{t['mc'].spread()}); " + " ".join(n for n in notes if "gradients" in n),
    )


#: MLP widths for the growth in N (at K = ``N_GROWTH_K``): N ≈ 40k, 152k, 400k with 4 layers.
N_GROWTH_WIDTHS = (48, 128, 256)
N_GROWTH_K = 1_000


def _growth_in_n(quick: bool) -> list[Row]:
    """How each cheap stage's time grows with N: the paper MLP at three widths, same K."""
    widths = N_GROWTH_WIDTHS[:2] if quick else N_GROWTH_WIDTHS
    base = next(iter(NETWORKS.values()))
    sizes, times = [], {"mc": [], "closed": [], "hutchinson": []}
    for width in widths:
        net = Network(base.kind, base.input_shape, {**base.cfg, "width": width}, N_GROWTH_K, {})
        prob = _problem(net, 300 if quick else N_GROWTH_K)
        unit = Unit(prob)
        sizes.append(prob.num_params)
        for stage in times:
            run = {"mc": _mc, "closed": _closed, "hutchinson": _hutchinson}[stage](prob, unit)[0]
            run()  # warm-up
            times[stage].append(_median_time(run, 1 if quick else 2))
    rows = []
    for stage, values in times.items():
        slope = float(np.polyfit(np.log(sizes), np.log(values), 1)[0])
        rows.append(
            Row(
                "9 MLP growth in N",
                f"{STAGES[stage][0]}: exponent of N",
                slope,
                "linear",
                1.0,
                "-",
                None,
                unit="",
                note=f"K = {N_GROWTH_K if not quick else 300:,}; N = "
                + ", ".join(f"{n:,}" for n in sizes)
                + ": "
                + ", ".join(f"{v:.2f} s" for v in values),
            )
        )
    return rows


def run(
    quick: bool,
    full: bool = False,
    stages: list[str] | None = None,
    networks: list[str] | None = None,
) -> list[Row]:
    """Every stage on each paper-shaped network; ``full`` (``--paper-full``) measures each at its
    full size instead of scaling from smaller ones; ``stages`` and ``networks`` (``--paper-stages``,
    ``--paper-networks``: "mlp", "cnn") pick parts (None: all)."""
    rows: list[Row] = []
    for name, net in NETWORKS.items():
        if networks and net.kind not in networks:
            continue
        if quick:  # the smallest size of each stage only, nothing scaled beyond a fit of one point
            net = Network(
                net.kind,
                net.input_shape,
                net.cfg,
                net.samples,
                {s: v[:1] for s, v in net.sizes.items()},
            )
        problems: dict = {}
        found = {}
        for stage in stages or STAGES:
            result = _measure(net, stage, problems, full)
            if result is None:
                continue
            found[stage] = result
            prob = result["problem"]
            print(
                f"  [{name}] {result['label']}: {result['value']:.2f} s vs floor "
                f"{result['floor']:.2f} s ({result['how']}); peak "
                f"{result['peak'] / 2**20:,.0f} MiB",
                flush=True,
            )
        n = prob.num_params
        for stage, r in found.items():
            note = f"{r['how']}; peak {r['peak'] / 2**20:,.0f} MiB"
            if r["extra"]:
                note += f"; {r['extra']}"
            if stage == "hutchinson" and "mc" in found:
                note += f"; {r['value'] / found['mc']['value']:.1f}× 64 Monte Carlo draws"
            rows.append(
                Row(
                    f"9 {name.split(' (')[0]}",
                    r["label"],
                    r["value"],
                    f"floor: {r['floor_text']}",
                    r["floor"],
                    "peak ≤ 4 GB",
                    r["peak"] <= 4 * 2**30,
                    note=note,
                )
            )
        if "eigen" in found and "pyhessian" in found:  # side by side at the same K
            ours, theirs = found["eigen"]["eigen_runs"], found["pyhessian"]["eigen_runs"]
            common = sorted(set(ours) & set(theirs))
            if common:
                k = common[-1]
                rows.append(
                    Row(
                        f"9 {name.split(' (')[0]}",
                        f"top-16 eigen, ours (K = {k:,})",
                        ours[k][0],
                        "PyHessian, same K",
                        theirs[k][0],
                        "A/B ≤ 1/4",
                        ours[k][0] <= theirs[k][0] / 4,
                        note=f"N = {n:,}; ours {ours[k][2]}; PyHessian {theirs[k][2]}",
                    )
                )
    if not networks or "mlp" in networks:
        if not stages or "hutchinson" in stages:
            rows.append(_stochastic_vs_monte_carlo(quick))
        if not stages:
            rows += _growth_in_n(quick)
    return rows

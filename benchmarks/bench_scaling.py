"""6. Scaling in K: Monte Carlo and the subspace closed form must cost time linear in K.

Both estimators produce every k = 2..K from one pass over the K samples (cumulative sums, never a
K×K matrix), so time ∝ K. Measured on mnist1d, MLP 2×128 (N = 23,050) trained on the 4,000
training samples, with the Problem's samples the training split followed by the 1,000 test samples
(the order of the prefixes does not matter for timing), K = 500 → 5,000 log-spaced. ``--quick``
uses an MLP 2×64 (N = 7,434) trained for 3 epochs, K = 500 → 4,000. Monte Carlo: 64 draws in
the full space with the strategy "auto" picks at the largest K, kept for every K; closed form:
``difference_terms`` in a d = 8 subspace + ``predict``. The exponent is the slope of log time
against log K (least squares); fixed per-draw costs (drawing z, the bookkeeping) and matrix
products that run faster per sample on larger batches pull it below 1 at small K, and the fixed
cost of a call is measured at K = 2.

Targets. Nothing may grow faster than linearly: the raw exponent is at most 1.2 for both.
Monte Carlo must moreover grow as its floor does, the bare forward loop over the same draws timed
alongside: its exponent within ±0.2 of the floor's. How far below 1 the floor's exponent lies
depends on the CPU's caches and the batch sizes where its matrix products reach full speed (in
a full run on 2026-12-03: 0.48 raw and 0.65 above its fixed cost, ours 0.45 and 0.65), which a
fixed "1 ± 0.2" would test instead of our code. The closed form has no such floor: its exponent
above the fixed cost must lie within 1 ± 0.2.
"""

from __future__ import annotations

import numpy as np
import torch

from landscape import curvature, delta, directions
from landscape.problem import Problem

from ._common import bare_loop, parameter_draws, trained
from ._timing import Row, interleaved

SIGMA = 0.05
DRAWS = 64


def run(quick: bool) -> list[Row]:
    if quick:  # a smaller network, trained briefly: only its cost matters here
        setup, ks, repeats = trained("mnist1d", 2, 64, epochs=3), [500, 1000, 2000, 4000], 3
    else:
        setup, ks, repeats = trained("mnist1d", 2, 128), [500, 900, 1600, 2800, 5000], 3
    ds = setup.dataset
    X = torch.cat([ds.train[0], ds.test[0]])
    y = torch.cat([ds.train[1], ds.test[1]])
    base = setup.problem

    def problem(K: int, strategy: str) -> Problem:
        return Problem(
            setup.net, X[:K], y[:K], dtype=base.dtype, device=base.device, strategy=strategy
        )

    largest = problem(ks[-1], "auto")
    delta.monte_carlo(largest, SIGMA, 8, progress=False)  # lets "auto" choose at the largest K
    strategy = largest.strategy
    sub = directions.random(largest, 8, seed=0)
    W = parameter_draws(largest, SIGMA, DRAWS)
    times: dict[str, list[float]] = {"monte_carlo": [], "closed form": [], "bare": []}
    for i, K in enumerate([2, *ks]):  # K = 2 measures the fixed cost of a call
        prob = problem(K, strategy)
        t = interleaved(
            {
                "monte_carlo": lambda p=prob: delta.monte_carlo(p, SIGMA, DRAWS, progress=False),
                "bare": bare_loop(prob, W),
                "closed form": lambda p=prob: curvature.difference_terms(
                    p, sub, progress=False
                ).predict(SIGMA),
            },
            repeats,
            warmup=i == 0,
        )
        for name in times:
            times[name].append(t[name].median)
    fixed = {name: values.pop(0) for name, values in times.items()}
    rows = []
    what = {
        "monte_carlo": f"monte_carlo ({DRAWS} draws, {strategy})",
        "closed form": "difference_terms(d=8).predict",
    }

    def slope(values: list[float]) -> float:
        return float(np.polyfit(np.log(ks), np.log(values), 1)[0])

    def linear_slope(name: str) -> float:
        above = [v - fixed[name] for v in times[name]]
        return slope(above) if min(above) > 0 else float("nan")

    floor = slope(times["bare"])
    for name in what:
        values = times[name]
        raw, linear = slope(values), linear_slope(name)
        if name == "monte_carlo":  # grows as the bare forward over the same draws does
            target, met = "floor's ± 0.2", raw <= 1.2 and abs(raw - floor) <= 0.2
        else:
            target, met = "exp 1 ± 0.2", raw <= 1.2 and abs(linear - 1) <= 0.2
        rows.append(
            Row(
                f"6 scaling in K: {name}",
                f"{what[name]} K={ks[-1]:,}",
                values[-1],
                f"same at K={ks[0]:,}",
                values[0],
                target,
                met,
                note=(
                    f"{ds.name}, N={base.num_params:,}; exponent {raw:.2f}, and {linear:.2f} for "
                    f"the time above the fixed cost of a call ({fixed[name]:.3f}s at K=2); times "
                    + ", ".join(f"K={k}: {v:.2f}s" for k, v in zip(ks, values))
                    + (
                        f"\nthe bare forward loop over the same draws (bench_floor's floor): "
                        f"exponent {floor:.2f}, {linear_slope('bare'):.2f} above "
                        f"its {fixed['bare']:.3f}s at K=2; times "
                        + ", ".join(f"{v:.2f}s" for v in times["bare"])
                        if name == "monte_carlo"
                        else ""
                    )
                ),
            )
        )
    return rows

"""Loop or vmap: how a Problem evaluates per-sample losses at many parameter vectors at once.

Two strategies give the same numbers at different speeds: ``"loop"`` loads each vector into the
Problem's private copy of the network and runs one plain batched forward per vector; ``"vmap"``
vectorises ``functional_call`` over the vectors. Which is faster depends on the network's size and
the device, so ``"auto"`` times both on the first batch of draws (``fastest``) and keeps the faster,
with the vmap chunk that ran fastest. This module holds that autotuner and the rule for how many
draws go into one chunk (``draws_per_chunk``); the Problem itself only calls them. Memory per chunk
of samples is ``Problem.batches``' business, not this module's.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only: problem imports this module
    from .problem import Problem

Strategy = Literal["auto", "loop", "vmap"]

#: The strategies a Problem accepts.
STRATEGIES: tuple[str, ...] = ("auto", "loop", "vmap")

#: Parameter vectors per chunk of the loop strategy (one forward each; the chunk only sets how
#: often a progress bar moves).
LOOP_DRAWS = 64


class Choice(NamedTuple):
    """What ``fastest`` measured and chose.

    Attributes:
        strategy: "loop" or "vmap", the faster per draw.
        vmap_draws: the vmap chunk (draws per call) that ran fastest, or None for the loop.
        timings: seconds per draw of each candidate, e.g. ``{"vmap (8 draws)": 1.2e-3}``.
    """

    strategy: str
    vmap_draws: int | None
    timings: dict[str, float]


def draws_per_chunk(prob: Problem, draws: int, strategy: str, vmap_draws: int | None = None) -> int:
    """Parameter vectors per chunk of ``Problem.per_sample_losses`` under ``strategy``.

    The loop takes ``LOOP_DRAWS`` at a time. vmap holds every vector's activations for one batch of
    samples at once, so its chunk is what fits in ``max_memory`` beside that batch, capped by the
    fastest chunk ``fastest`` measured (``vmap_draws``: small chunks whose activations stay in
    cache can be several times faster per draw than the largest that fits).
    """
    if strategy != "vmap":
        return min(draws, LOOP_DRAWS)
    samples = prob.batch_size(prob.activation_bytes)
    per_draw = prob.activation_bytes * samples + prob.num_params * prob.dtype.itemsize
    fit = max(1, prob.max_memory // per_draw)
    return max(1, min(draws, fit, vmap_draws or fit))


def fastest(prob: Problem, W: Tensor, rounds: int = 2) -> Choice:
    """Time the loop and the vmap strategy per draw on rows of ``W`` (B, N) and return the faster.

    Both run on 8 draws, interleaved, best of ``rounds`` after a warm-up. Where vmap wins and more
    draws fit in memory, vmap chunks of 16, 32, ... draws up to the largest that fits are timed
    too (at most twice the draws of timing the largest alone) and the fastest vmap chunk is kept:
    on a CPU a middle chunk can beat both ends (digits MLP 2×32, K = 1,347: 64 draws 0.19 ms per
    draw, 8 draws 0.28 ms, the largest, 89, 0.21 ms; Monte Carlo with 256 draws 0.059 s at 64
    against 0.088 s at 89); on a GPU the largest usually wins. Timing only 8 and the largest
    missed the middle.
    """
    largest = draws_per_chunk(prob, len(W), "vmap")
    small = min(8, largest)
    times = time_per_draw(prob, [("loop", 8), ("vmap", small)], W, rounds)
    if times["vmap", small] < times["loop", 8]:
        ladder = [small * 2**i for i in range(1, 30) if small * 2**i < largest] + [largest]
        times |= time_per_draw(prob, [("vmap", c) for c in ladder if c > small], W, rounds)
    strategy, chunk = min(times, key=times.get)
    timings = {f"{s} ({c} draws)": t for (s, c), t in times.items()}
    return Choice(strategy, chunk if strategy == "vmap" else None, timings)


def time_per_draw(
    prob: Problem, candidates: list[tuple[str, int]], W: Tensor, rounds: int
) -> dict[tuple[str, int], float]:
    """Seconds per draw of each (strategy, draws per call) on the Problem's first batch of samples
    (best of ``rounds`` after one warm-up round; rows of ``W`` are repeated where it is short)."""
    best = dict.fromkeys(candidates, math.inf)
    n = prob.batch_size(prob.activation_bytes)
    X, y = prob.X[:n], prob.y[:n]
    for round_ in range(rounds + 1):  # round 0 warms up
        for strategy, chunk in candidates:
            block = W[:chunk] if len(W) >= chunk else W[:1].expand(chunk, -1)
            with torch.no_grad():
                start = time.perf_counter()
                prob.losses_block(block, X, y, strategy)
                if prob.device.type == "cuda":
                    torch.cuda.synchronize(prob.device)
            seconds = (time.perf_counter() - start) / chunk
            if round_:
                best[strategy, chunk] = min(best[strategy, chunk], seconds)
    return best

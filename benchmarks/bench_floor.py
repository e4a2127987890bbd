"""1. ``delta.monte_carlo`` (Δ_k for every k) against the bare forward pass over the same draws.

The floor is the cost of the B·K per-sample losses and nothing else: for the same B parameter
vectors w* + σz (precomputed, so drawing z is not part of it), the faster of

* "bare loop": one plain module (a private copy) whose parameters are re-pointed at each draw
  (``vector_to_parameters``, no copy), then ``net(X)`` and per-sample losses into a (B, K)
  result;
* "bare vmap": ``vmap`` over chunks of draws of ``functional_call`` + per-sample losses,
  with the fastest chunk of 4, 16, 32 or 64 draws (timed once beforehand).

Both compute the losses with the Problem's own arithmetic (``prob.loss_fn``: for cross-entropy the
written-out log-softmax, 3–5× faster than ``F.cross_entropy`` on a CPU; the note gives the bare vmap
floor with torch's loss too). Both run under ``torch.no_grad``, over all K samples at once, with
none of our bookkeeping (drawing z, chunking, the cumulative sums, the running moments, the
standard errors). ``monte_carlo`` runs on Problems with the strategy "auto" (what users get: the
Problem times the loop and vmap chunks of 8, 16, 32, ... draws on its first batch and keeps the
fastest), "loop" and "vmap" (chunks from the memory budget); the table reports what "auto" settled
on in 8 fresh Problems and what drawing z alone costs. Target (SPEC §7): ours (auto) ≤ 1.2× the floor.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch.func import functional_call, vmap
from torch.nn import functional as F

from landscape import delta
from landscape.problem import Problem

from ._common import bare_loop, normal_draws, parameter_draws, sizes, trained
from ._timing import Row, interleaved

SIGMA = 0.05
#: Draws per vmap call tried for the bare vmap floor (on a CPU, small chunks that keep the
#: activations in cache can be twice as fast as large ones).
VMAP_CHUNKS = (4, 16, 32, 64)
#: The bare vmap floor with torch's F.cross_entropy, for the note.
TORCHS = "bare vmap, torch's loss"


def _torchs_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target, reduction="none")


def _bare_vmap(prob: Problem, W: torch.Tensor, chunk: int = 64, loss_fn=None):
    net = copy.deepcopy(prob.model)
    X, y = prob.X, prob.y
    loss_fn = loss_fn or prob.loss_fn

    def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(functional_call(net, params, (X,)), y)

    batched = vmap(loss)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [batched(prob.unflatten(W[i : i + chunk])) for i in range(0, len(W), chunk)]
            )

    return run


def _auto_choice(setup, draws: int) -> str:
    """The strategy "auto" settles on in a fresh Problem (it times both in its first call)."""
    prob = setup.problem
    fresh = Problem(setup.net, prob.X, prob.y, device=prob.device, dtype=prob.dtype)
    delta.monte_carlo(fresh, SIGMA, draws, progress=False)
    return fresh.strategy + (f" of {fresh.vmap_draws}" if fresh.strategy == "vmap" else "")


def _case(label: str, setup, draws: int, repeats: int) -> Row:
    prob = setup.problem
    X, y = prob.X, prob.y
    problems = {
        strategy: Problem(setup.net, X, y, device=prob.device, dtype=prob.dtype, strategy=strategy)
        for strategy in ("auto", "loop", "vmap")
    }
    W = parameter_draws(prob, SIGMA, draws)
    trial = interleaved({c: _bare_vmap(prob, W, c) for c in VMAP_CHUNKS}, 1)
    chunk = min(trial, key=lambda c: trial[c].median)
    bare = {"bare loop": bare_loop(prob, W), "bare vmap": _bare_vmap(prob, W, chunk)}
    torch.testing.assert_close(bare["bare loop"](), bare["bare vmap"](), rtol=1e-4, atol=1e-5)

    def ours(strategy: str):
        return lambda: delta.monte_carlo(problems[strategy], SIGMA, draws, progress=False)

    contenders = {f"ours {s}": ours(s) for s in problems} | bare
    contenders[TORCHS] = _bare_vmap(prob, W, chunk, _torchs_cross_entropy)
    contenders["drawing z"] = lambda: normal_draws(prob.num_params, draws, dtype=prob.dtype)
    t = interleaved(contenders, repeats)
    chosen = problems["auto"].strategy  # decided on the warm-up call, kept since
    best = min(("loop", "vmap"), key=lambda s: t[f"ours {s}"].median)
    fresh = [_auto_choice(setup, draws) for _ in range(8)]
    floor_name = min(bare, key=lambda name: t[name].median)
    floor = t[floor_name].median
    ratio = t["ours auto"].median / floor
    return Row(
        f"1 Δ_k vs bare fwd {label}",
        f"monte_carlo auto→{chosen} ({draws} draws)",
        t["ours auto"].median,
        f"{floor_name} (same draws × samples)",
        floor,
        "A/B ≤ 1.2",
        ratio <= 1.2,
        note=(
            f"{sizes(prob)}, σ={SIGMA}, medians of {repeats}. ours: loop "
            f"{t['ours loop'].median:.3f}s, vmap {t['ours vmap'].median:.3f}s (faster: {best}, "
            f"{t[f'ours {best}'].median / floor:.2f}× the floor); bare: loop "
            f"{t['bare loop'].median:.3f}s, vmap {t['bare vmap'].median:.3f}s (chunks of {chunk} "
            f"draws, the fastest of {', '.join(map(str, VMAP_CHUNKS))}); bare vmap with torch's "
            f"F.cross_entropy instead of the written-out loss {t[TORCHS].median:.3f}s; ours auto "
            f"{t['ours auto'].spread()}. Drawing the {draws} z alone (randn in the Problem's dtype): "
            f"{t['drawing z'].median:.3f}s. In {len(fresh)} fresh Problems 'auto' settled on "
            + ", ".join(f"{name} ×{n}" for name, n in Counter(fresh).most_common())
            + " (vmap of c: chunks of c draws, timed against the loop on 8 draws)"
        ),
    )


def run(quick: bool) -> list[Row]:
    rows = [_case("digits", trained(), 64 if quick else 256, 3 if quick else 5)]
    if not quick:
        rows.append(_case("mnist1d", trained("mnist1d", 2, 128), 64, 5))
    return rows

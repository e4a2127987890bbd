"""Trained networks and parameter draws shared by the benchmarks.

Networks are trained on the embedded data sets through ``experiment.prepare`` (cached on disk), so
the numbers are those of realistic trained networks, not of random initialisations.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from landscape import experiment
from landscape.problem import Problem

#: The default network of the notebooks: digits, MLP 2×32 (N = 3,466, K = 1,347), 20 epochs.
DIGITS = dict(dataset="digits", depth=2, width=32)


def trained(
    dataset: str = "digits",
    depth: int = 2,
    width: int = 32,
    *,
    epochs: int = 20,
    k_max: int | None = None,
    dtype: str = "float32",
) -> experiment.Setup:
    """An MLP trained (or loaded from the cache) on ``dataset``, wrapped in a Problem."""
    return experiment.prepare(
        dataset,
        "mlp",
        {"depth": depth, "width": width},
        epochs=epochs,
        k_max=k_max,
        dtype=dtype,
        device="auto",
        progress=False,
    )


def normal_draws(
    dim: int, count: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The (count, dim) standard normal z that ``delta.monte_carlo(..., seed=seed)`` draws, in order
    (one ``randn(dim)`` per draw from a CPU generator seeded with ``seed``, in the Problem's dtype)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(dim, generator=generator, dtype=dtype) for _ in range(count)])


def parameter_draws(prob: Problem, sigma: float, count: int, seed: int = 0) -> torch.Tensor:
    """The (count, N) full-space parameter vectors w* + σz that ``delta.monte_carlo`` evaluates."""
    z = (sigma * normal_draws(prob.num_params, count, seed, prob.dtype)).to(prob.device)
    return prob.center + z


def sizes(prob: Problem) -> str:
    return f"N={prob.num_params:,}, K={prob.num_samples:,}"


def bare_loop(prob: Problem, W: torch.Tensor, loss_fn=None) -> Callable[[], torch.Tensor]:
    """The floor of bench_floor: a function computing the (len(W), K) per-sample losses by pointing
    a plain copy of the network's parameters at each row of W in turn.

    The losses use the Problem's own arithmetic (``prob.loss_fn``; for cross-entropy the written-out
    log-softmax, 3–5× faster than ``F.cross_entropy`` on a CPU for 10 classes), so the floor is the
    fastest way we know to the same numbers; ``loss_fn`` replaces it (e.g. by torch's).
    """
    net = copy.deepcopy(prob.model)
    params = list(net.parameters())
    X, y = prob.X, prob.y
    loss_fn = loss_fn or prob.loss_fn

    def run() -> torch.Tensor:
        out = torch.empty(len(W), len(X), dtype=prob.dtype, device=prob.device)
        with torch.no_grad():
            for i, w in enumerate(W):
                torch.nn.utils.vector_to_parameters(w, params)
                out[i] = loss_fn(net(X), y)
        return out

    return run

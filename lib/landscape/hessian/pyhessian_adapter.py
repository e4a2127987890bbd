"""PyHessian, quarantined: its power iteration as a reference eigen backend, on a private copy.

PyHessian (Yao et al. 2020) is the eigen backend users of this field know, so ``top_eigenpairs``
offers it as ``method="pyhessian"`` to cross-check Lanczos. It needs a module with trainable
parameters, draws its start vectors from torch's global generator, moves tensors to "cuda" and
computes in the default dtype; everything that accommodates this lives here — a deep copy of the
network, ``seeding.seeded``, the default dtype and CUDA device set for the call — so that nothing
else in the library touches PyHessian. Its PyPI 0.1 ``density()`` calls the removed ``torch.eig``
and is not used (``hessian.density`` has stochastic Lanczos quadrature instead).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..problem import Problem
from ..seeding import seeded


def pyhessian_vectors(
    prob: Problem, d: int, tol: float, seed: int, max_iter: int | None
) -> tuple[Tensor, int, bool]:
    """Top-d eigenvectors by PyHessian's power iteration with deflation, as (N, d) unit columns,
    with the HVPs it used and whether its stopping rule was met for every pair.

    For each j ≤ d: v ← random, then repeat v ← orth(v, v_1..v_{j−1}), λ ← vᵀHv,
    v ← Hv / ‖Hv‖ until |λ_t − λ_{t−1}| / (|λ_{t−1}| + 1e-6) < tol or ``max_iter`` (per pair;
    None: 1000) iterations. This converges to the eigenvalues of *largest magnitude*.

    PyHessian runs unchanged on a deep copy of the network with trainable parameters, through its
    data-loader path with the Problem's batches: it weights each batch's mean-loss HVP by the
    batch's size and divides by K, which is exactly H of L_K. Its random start vectors come from
    the global generator, seeded by ``seed`` inside ``seeding.seeded`` (the caller's random stream
    is left as it was), with the default dtype set to the Problem's so that those vectors are in
    its precision.
    """
    from pyhessian import hessian as pyhessian_engine

    if prob.device.type not in ("cpu", "cuda"):
        raise ValueError(f"method='pyhessian' runs on 'cpu' or 'cuda', not on {prob.device}.")
    model = copy.deepcopy(prob.model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    batches = [(X, y) for _, X, y in prob.batches(prob.activation_bytes)]
    rayleigh: list[float] = []  # the value PyHessian computes with each of its HVPs, in order
    with (
        seeded(seed, prob.device),
        _default_dtype(prob.dtype),
        _cuda_device(prob.device),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*create_graph=True.*")
        engine = pyhessian_engine(
            model, _MeanLoss(prob.loss_fn), dataloader=batches, cuda=prob.device.type == "cuda"
        )
        product = engine.dataloader_hv_product

        def counted(v: list[Tensor]) -> tuple[float, list[Tensor]]:
            value, Hv = product(v)
            rayleigh.append(value)
            return value, Hv

        engine.dataloader_hv_product = counted  # on this instance only
        iterations = 1000 if max_iter is None else max_iter
        _, raw_vectors = engine.eigenvalues(maxIter=iterations, tol=tol, top_n=d)
    model.zero_grad(set_to_none=True)
    V = torch.stack([prob.flatten([t.detach() for t in vec]) for vec in raw_vectors], dim=1)
    V = (V / V.norm(dim=0)).to(device=prob.device, dtype=prob.dtype)
    converged = replay_power_iteration(rayleigh, d, iterations, tol)
    return V, len(rayleigh), converged


def replay_power_iteration(values: list[float], pairs: int, max_iter: int, tol: float) -> bool:
    """Whether PyHessian 0.1's loop stopped on its tolerance (not on max_iter) for every pair.

    Replays its control flow on the sequence of its Rayleigh quotients: a pair ends at the first
    iteration whose value changed by less than tol·(|previous| + 1e-6), or after max_iter.
    """
    position = 0
    for _ in range(pairs):
        run = values[position : position + max_iter]
        changes = [
            abs(before - after) / (abs(before) + 1e-6) for before, after in zip(run, run[1:])
        ]
        stop = next((i for i, change in enumerate(changes) if change < tol), None)
        if stop is None:
            return False
        position += stop + 2  # the pair used the values up to and including run[stop + 1]
    return True


class _MeanLoss(nn.Module):
    """The Problem's per-sample loss averaged over a batch, as a module (``reduction="mean"``)."""

    reduction = "mean"

    def __init__(self, per_sample: Callable[[Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.per_sample = per_sample

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.per_sample(output, target).mean()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _cuda_device(device: torch.device) -> contextlib.AbstractContextManager:
    """PyHessian moves tensors to 'cuda', i.e. the current CUDA device: make it the Problem's."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()

"""Per-sample gradients g_i and Hessian traces Tr H_i at w*: BackPACK, or torch.func where it cannot.

BackPACK's ``BatchGrad`` and ``BatchDiagHessian`` run on an extended *copy* of the network (its
hooks break torch.func transforms, so the Problem's own model is never extended), one batch of
samples at a time. BackPACK does not support every layer — batch-norm and the normalisation layers
for second-order quantities, modules with their own forward, weights used twice — and says so in
different ways (below); ``backend="auto"`` then falls back to the torch.func route and warns, never
returning a silent wrong number. The difference terms use the exact traces where BackPACK gives
them (``curvature.estimators``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from ..checks import check_choice
from ..problem import Problem, spans
from ..routes import hvp_bytes, per_sample_grads_and_hvps, proven_hvps

Backend = Literal["auto", "backpack", "torch.func"]
BACKENDS: tuple[str, ...] = ("auto", "backpack", "torch.func")


class BackpackUnsupported(ValueError):
    """BackPACK cannot compute a per-sample quantity for this network (the reason is the message)."""


#: What BackPACK raises, from inside its own forward and backward hooks, for a network it cannot
#: handle (each seen on the networks of tests/test_chain.py and tests/test_nested_ad.py):
#: NotImplementedError — a layer without the extension (BatchNorm, LayerNorm, GroupNorm,
#: InstanceNorm, a module with its own forward, for BatchDiagHessian); AssertionError — a layer it
#: knows fed by one it does not (a residual block's own forward), for second-order extensions;
#: AttributeError — a module called twice (tied weights: its hook finds no saved output);
#: RuntimeError — an in-place activation under its backward hooks, and its float32 buffers in
#: float64 convolutions. They are caught only around BackPACK's own calls, so the same errors from
#: our code are not taken for an unsupported layer; KeyError and ValueError are not caught at all.
_BACKPACK_FAILURES = (NotImplementedError, AssertionError, AttributeError, RuntimeError)
_BACKPACK_LOSSES = {"cross_entropy": nn.CrossEntropyLoss, "mse": nn.MSELoss}
_BACKPACK_FIELDS = {"BatchGrad": "grad_batch", "BatchDiagHessian": "diag_h_batch"}
#: Layers an extension is known not to have (its NotImplementedError, seen on the networks above):
#: checked on the module types before BackPACK is imported or a copy extended (about 2 s saved).
_BACKPACK_LACKS: dict[str, tuple[type[nn.Module], ...]] = {
    "BatchGrad": (),
    "BatchDiagHessian": (
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.LayerNorm,
        nn.GroupNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
    ),
}


def per_sample_gradients(prob: Problem, backend: Backend = "auto") -> tuple[Tensor, str]:
    """Per-sample gradients g_i = ∇l_i(w*) as a (K, N) tensor, and the backend that made them.

    ``"backpack"``: BackPACK's ``BatchGrad`` on an extended copy of the network (a summed loss, so
    each row is one sample's own gradient). ``"torch.func"``: ``vmap(grad)``. ``"auto"`` tries
    BackPACK and falls back to torch.func with a warning where BackPACK lacks a layer.
    """
    check_choice("backend", backend, BACKENDS)
    return _with_fallback(prob, backend, "BatchGrad", _torch_func_gradients)


def per_sample_hessian_traces(prob: Problem, backend: Backend = "auto") -> tuple[Tensor, str]:
    """Exact per-sample Hessian traces Tr H_i(w*) as a (K,) tensor, and the backend used.

    ``"backpack"``: the exact per-sample Hessian diagonal from ``BatchDiagHessian``, summed.
    ``"torch.func"``: Σ_j e_jᵀ H_i e_j from N per-sample HVPs per sample (exact, costly for large
    N), proven on the network first (``routes.proven_hvps``). ``"auto"`` tries BackPACK first and
    warns when it falls back.
    """
    check_choice("backend", backend, BACKENDS)
    return _with_fallback(prob, backend, "BatchDiagHessian", _torch_func_traces)


def _with_fallback(
    prob: Problem, backend: str, extension: str, fallback: Callable[[Problem], Tensor]
) -> tuple[Tensor, str]:
    if backend in ("auto", "backpack"):
        try:
            return _backpack_per_sample(prob, extension), "backpack"
        except BackpackUnsupported as error:
            if backend == "backpack":
                raise BackpackUnsupported(
                    f"BackPACK cannot compute {extension} here: {error}"
                ) from error
            warnings.warn(
                f"BackPACK {extension} does not support this network ({error}); "
                "used the torch.func route instead.",
                stacklevel=3,
            )
    return fallback(prob), "torch.func"


def _backpack_per_sample(prob: Problem, extension: str) -> Tensor:
    """Run a BackPACK per-sample extension on an extended *copy* of the network, in batches;
    ``BackpackUnsupported`` where BackPACK cannot (at once, without importing it, for a layer
    ``_BACKPACK_LACKS`` lists)."""
    lacking = _BACKPACK_LACKS[extension]
    for name, module in prob.model.named_modules():
        if isinstance(module, lacking):
            raise BackpackUnsupported(
                f"NotImplementedError: no {extension} for '{name}' ({type(module).__name__})"
            )
    import backpack
    from backpack import extend
    from backpack.extensions import BatchDiagHessian, BatchGrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BackPACK's use of torch.jit.script is deprecated
        model = extend(copy.deepcopy(prob.model))
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    lossfunc = extend(_BACKPACK_LOSSES[prob.loss_name](reduction="sum"))
    ext = {"BatchGrad": BatchGrad, "BatchDiagHessian": BatchDiagHessian}[extension]()
    attr = _BACKPACK_FIELDS[extension]
    rows = []
    for _, X, y in prob.batches(prob.activation_bytes):
        model.zero_grad()
        try:
            output = model(X)
            target = y.reshape(output.shape) if prob.loss_name == "mse" else y
            with backpack.backpack(ext), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # BackPACK's full-backward-hook notice
                lossfunc(output, target).backward()
        except _BACKPACK_FAILURES as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise BackpackUnsupported(f"{type(error).__name__}: {reason}") from error
        missing = [name for name, p in params.items() if not hasattr(p, attr)]
        if missing:  # BatchGrad skips the parameters of layers it does not know, silently
            raise BackpackUnsupported(
                f"it computed no {attr} for {', '.join(missing[:4])}"
                f"{'…' if len(missing) > 4 else ''} (layers it does not know)"
            )
        pieces = [getattr(p, attr).reshape(len(X), -1) for p in params.values()]
        rows.append(torch.cat(pieces, dim=1).detach())
    values = torch.cat(rows)
    return values.sum(1) if extension == "BatchDiagHessian" else values


def _torch_func_gradients(prob: Problem) -> Tensor:
    batches = prob.batches(prob.activation_bytes)
    return torch.cat([per_sample_grads_and_hvps(prob, X, y, None)[1] for _, X, y in batches])


def _torch_func_traces(prob: Problem) -> Tensor:
    products, why = proven_hvps(prob)
    if products is not per_sample_grads_and_hvps:
        warnings.warn(f"per-sample Hessian traces by {why}.", stacklevel=4)
    traces = torch.zeros(prob.num_samples, dtype=prob.dtype, device=prob.device)
    eye = torch.eye(prob.num_params, dtype=prob.dtype, device=prob.device)
    per_sample, columns = hvp_bytes(prob, prob.num_params)
    for rows, X, y in prob.batches(per_sample):
        for cols in spans(prob.num_params, columns):
            E = eye[:, cols]
            hvps = products(prob, X, y, E)[2]
            traces[rows] += torch.einsum("smn,nm->s", hvps, E)
    return traces

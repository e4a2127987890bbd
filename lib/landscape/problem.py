"""The Problem: a network, its samples in prefix order, and the centre w*.

``Problem`` owns everything the estimators need and nothing they compute: a private copy of the
network (the caller's model is never touched), the samples in the fixed order that defines the
prefixes D_k, the flat parameter vector w* at which everything is expanded, and a functional
per-sample loss l_i(w) that evaluates one or a batch of flat parameter vectors, chunked so memory
stays bounded. Monte Carlo lives in ``delta``, curvature in ``curvature`` and ``hessian``.
"""

from __future__ import annotations

import copy
import ctypes
import math
import os
import platform
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from .checks import (
    check_choice,
    check_dtype,
    check_finite,
    check_int,
    check_network_input,
    resolve_device,
)
from .progress import bar
from .strategy import STRATEGIES, Strategy, draws_per_chunk, fastest

LossFn = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """F.cross_entropy(output, target, reduction="none"), classes along dim 1, written out.

    The same arithmetic as torch's log-softmax (logits shifted by their maximum, so the true
    class's shifted logit is exact and a small loss keeps its relative precision), in plain
    tensor ops: on a CPU, vmapped over draws of 10-class outputs, it runs 3–5× faster than
    ``F.cross_entropy`` (0.65 against 2.1 ms for 16 draws × 1,347 samples), which made the loss
    a third of a Monte Carlo draw's forward on digits. The shift is detached: the loss does not
    depend on it, so every derivative is that of the loss itself (softmax − one-hot, ...).
    """
    shifted = output - output.amax(1, keepdim=True).detach()
    chosen = shifted.gather(1, target.unsqueeze(1)).squeeze(1)
    return shifted.exp().sum(1).log() - chosen


def _squared_error(output: Tensor, target: Tensor) -> Tensor:
    target = target.reshape(output.shape).to(output.dtype)
    return (output - target).pow(2).flatten(1).sum(1)


#: Per-sample losses by name: each maps (outputs (n, ...), targets (n, ...)) to losses (n,).
LOSSES: dict[str, LossFn] = {"cross_entropy": _cross_entropy, "mse": _squared_error}

#: Layers whose training mode makes the loss random or batch-dependent.
_STOCHASTIC_IN_TRAINING = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


#: The chunk budget on a CPU: on this project's 2-core CPU, chunks that stay near the caches ran
#: as fast per sample as larger ones, and the budget bounds the memory of every stage.
CPU_MAX_MEMORY = 256 * 2**20


def default_max_memory(device: torch.device) -> int:
    """Bytes one chunk may use by default: ``CPU_MAX_MEMORY`` on a CPU; on a CUDA device an eighth
    of its free memory when the Problem is made, between 256 MiB and 16 GiB. On a GPU each call
    costs a fixed launch overhead, so 256 MiB chunks (90–170 CIFAR samples of a CNN 4×64) leave
    it mostly idle (benchmarks/bench_paper_plan.py); an eighth leaves room for the stage's own
    arrays and for other processes."""
    if device.type != "cuda":
        return CPU_MAX_MEMORY
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(16 * 2**30, max(CPU_MAX_MEMORY, free // 8)))


#: glibc's malloc thresholds a CPU Problem sets (bytes): the largest values glibc's own dynamic
#: thresholds grow to on 64-bit Linux (mmap at 32 MiB, trim at twice that), set at once.
MALLOC_MMAP_THRESHOLD = 32 * 2**20
MALLOC_TRIM_THRESHOLD = 2 * MALLOC_MMAP_THRESHOLD
#: What ``keep_freed_memory`` did in this process: None until it is first called.
_malloc_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc keep up to 64 MiB of freed heap for reuse instead of handing it back at once.

    An estimator allocates and frees arrays of a few MiB per chunk. glibc's malloc serves them
    from fresh pages (``mmap``, or heap it has just trimmed back to the kernel), so every chunk
    pays a page fault per 4 KiB it touches: about 1 µs each on this project's virtual machine,
    29,000–39,000 faults and 30–40 ms per call of 256 Monte Carlo draws on digits (a 60 ms bare
    forward; minor faults counted with getrusage around the call, 2026-12-02), none once freed
    memory is kept. glibc raises its
    thresholds itself only after freeing a block that large, so a process reaches these values
    late or never. This sets them once per process (``mallopt``; the first CPU ``Problem`` calls
    it) and leaves malloc alone where glibc is not the allocator in use, and where the user has
    chosen thresholds (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
    ``MALLOC_TOP_PAD_`` in the environment, which glibc read at start-up).

    Returns:
        True when the thresholds were set (now or by an earlier call).
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        chosen = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            if not any(name in os.environ for name in chosen):
                try:
                    libc = ctypes.CDLL("libc.so.6")
                except OSError:
                    return False
                m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
                _malloc_tuned = bool(
                    libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
                    and libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)
                )
    return _malloc_tuned


class Problem:
    """A network with its samples in prefix order, expanded around the centre w*.

    The loss on the first k samples is L_k(w) = (1/k) Σ_{i≤k} l_i(w); ``per_sample_losses``
    returns every l_i(w) at once, so all prefixes follow from one cumulative sum.

    Args:
        net: the trained network. It is copied; the copy is moved to ``device`` and ``dtype``.
            It must be deterministic: dropout and batch-norm layers in training mode are refused
            (call ``net.eval()`` first). Its parameters must be finite.
        X: inputs, already in prefix order, shape (K, *input_shape); finite, and of a shape the
            network takes (one sample is passed through it at construction to check).
        y: targets in the same order: class indices 0..C−1 of shape (K,) for the network's C
            outputs (integers, or floats holding whole numbers), or, for ``loss="mse"``, targets
            shaped like the outputs (K, ...).
        loss: ``"cross_entropy"`` (mean cross-entropy, the papers' loss) or ``"mse"``
            (per-sample squared error summed over outputs).
        dtype: floating dtype of the computation (``torch.float64``, or the strings
            ``"float32"``/``"float64"``); ``None`` keeps the network's.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        max_memory: bytes one chunk of activations may use; chunk sizes over draws and samples
            follow from it. None: ``default_max_memory(device)`` — 256 MiB on a CPU, an eighth of
            the free memory on a GPU.
        strategy: ``"loop"`` (one batched forward per parameter vector), ``"vmap"`` (vectorised
            over parameter vectors), or ``"auto"``: the first batch of several vectors times both
            on a few draws and keeps the faster (both give the same numbers; which wins depends
            on the network's size and the device — benchmarks/ measures it). What "auto" measured,
            in seconds per draw, is kept in ``.timings``.

    The first Problem on a CPU lets glibc's malloc keep up to 64 MiB of freed memory for reuse
    (``keep_freed_memory``; set ``MALLOC_TRIM_THRESHOLD_`` in the environment to choose otherwise):
    the chunks' arrays would otherwise cost a page fault per 4 KiB each time.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
        >>> prob = Problem(net, torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]))
        >>> prob.per_sample_losses(prob.center).shape
        torch.Size([5])

    Raises:
        ValueError: naming ``X``, ``y``, ``dtype``, ``loss`` or ``net`` when the data cannot be
            what the network is evaluated on: non-finite inputs, inputs the network cannot take,
            labels outside 0..C−1 or not whole numbers, targets not shaped like the outputs
            (``"mse"``), non-finite parameters.
    """

    def __init__(
        self,
        net: nn.Module,
        X: Tensor,
        y: Tensor,
        *,
        loss: str = "cross_entropy",
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = "auto",
        max_memory: int | None = None,
        strategy: Strategy = "auto",
    ) -> None:
        if not isinstance(net, nn.Module):
            raise ValueError(f"net must be a torch.nn.Module, got {type(net).__name__}.")
        _refuse_stochastic(net)
        X, y = _as_tensor("X", X), _as_tensor("y", y)
        if X.ndim < 1 or y.ndim < 1 or len(X) != len(y):
            raise ValueError(
                f"X and y must hold the same number of samples; got X {tuple(X.shape)}, "
                f"y {tuple(y.shape)}."
            )
        check_int("number of samples (len(X))", len(X), low=1)
        self.loss_name = check_choice("loss", loss, LOSSES)
        self.strategy = check_choice("strategy", strategy, STRATEGIES)
        self.device = resolve_device(device)
        if max_memory is None:
            max_memory = default_max_memory(self.device)
        self.max_memory = check_int("max_memory", max_memory, low=1)
        if self.device.type == "cpu":
            keep_freed_memory()
        params = list(net.parameters())
        if not params:
            raise ValueError("net has no parameters.")
        self.dtype = params[0].dtype if dtype is None else check_dtype("dtype", dtype)
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype={self.dtype} must be a floating dtype.")
        if X.is_floating_point():
            check_finite("X", X)

        model = copy.deepcopy(net).to(device=self.device, dtype=self.dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        _check_parameters(model)
        self.model = model
        self.loss_fn = LOSSES[loss]
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.numels = [p.numel() for _, p in model.named_parameters()]
        self.buffers = {name: b for name, b in model.named_buffers()}
        #: modules registered under more than one name (a layer applied twice: tied weights)
        self.repeated = _repeated_modules(model)
        self.center = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()

        self.X = X.to(device=self.device, dtype=self.dtype if X.is_floating_point() else X.dtype)
        output = _probe(model, self.X)
        self.y = _check_targets(y, output, loss).to(device=self.device)
        if loss == "mse":
            self.y = self.y.to(self.dtype)
        #: bytes of one sample's forward activations (an upper estimate with a 2× margin)
        self.activation_bytes = _activation_bytes(model, self.X[:1])
        self.vmap_draws: int | None = None  # fastest vmap chunk, measured by strategy="auto"
        self.timings: dict[str, float] = {}  # seconds per draw measured by strategy="auto"
        #: how ``hessian.hvp`` multiplies blocks of many vectors: "reverse" (double backward),
        #: "forward" (forward over reverse, vmapped over columns) or "auto" (the first block
        #: large enough times both on its own columns and sets this to the faster)
        self.hvp_route = "auto"
        self.hvp_timings: dict[str, float] = {}  # seconds per column measured by "auto"
        self._check_deterministic()

    # -- sizes -------------------------------------------------------------------------------

    @property
    def num_params(self) -> int:
        """N, the number of parameters."""
        return self.center.numel()

    @property
    def num_samples(self) -> int:
        """K, the number of samples (the largest prefix)."""
        return len(self.X)

    def __repr__(self) -> str:
        return (
            f"Problem(N={self.num_params}, K={self.num_samples}, loss={self.loss_name!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def subset(self, index: slice | Sequence[int] | Tensor) -> Problem:
        """The same network and centre on the samples ``index`` (a slice, indices or a mask).

        Example: ``prob.subset(slice(0, 150))`` is the first 150 samples of the order.
        """
        if isinstance(index, Tensor):
            index = index.to(self.X.device)
        return Problem(
            self.model,
            self.X[index],
            self.y[index],
            loss=self.loss_name,
            dtype=self.dtype,
            device=self.device,
            max_memory=self.max_memory,
            strategy=self.strategy,
        )

    # -- parameters ----------------------------------------------------------------------------

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        """Split a flat vector (N,) or a batch (B, N) into named parameter tensors."""
        lead = w.shape[:-1]
        pieces = torch.split(w, self.numels, dim=-1)
        return {
            name: piece.reshape(*lead, *shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes)
        }

    def flatten(self, tensors: dict[str, Tensor] | list[Tensor]) -> Tensor:
        """Concatenate per-parameter tensors (in the model's order) into one flat vector."""
        values = tensors.values() if isinstance(tensors, dict) else tensors
        return torch.cat([t.reshape(-1) for t in values])

    def as_vector(self, w: Tensor) -> Tensor:
        """Validate a flat parameter vector or batch and put it on the Problem's device/dtype."""
        w = torch.as_tensor(w)
        if w.ndim not in (1, 2) or w.shape[-1] != self.num_params:
            raise ValueError(
                f"W must have shape (N,) or (B, N) with N={self.num_params}; got {tuple(w.shape)}."
            )
        return w.to(device=self.device, dtype=self.dtype)

    # -- losses --------------------------------------------------------------------------------

    def output(self, w: Tensor, X: Tensor) -> Tensor:
        """Network outputs at the flat parameter vector ``w`` (N,) for inputs ``X``."""
        if not self.repeated:
            return functional_call(self.model, (self.unflatten(w), self.buffers), (X,))
        # torch 2.14's functional_call swaps the tensors of a module registered under two names
        # twice and restores them once, leaving it holding views of ``w`` (the loop strategy would
        # then write draws into w*): put its own parameters and buffers back.
        kept = [
            (m, [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)])
            for m in self.repeated
        ]
        try:
            return functional_call(self.model, (self.unflatten(w), self.buffers), (X,))
        finally:
            for module, tensors in kept:
                for name, tensor in tensors:
                    setattr(module, name, tensor)

    def sample_losses(self, w: Tensor, X: Tensor, y: Tensor) -> Tensor:
        """Per-sample losses at one flat vector ``w`` (N,) for given samples; differentiable."""
        return self.loss_fn(self.output(w, X), y)

    def sample_loss(self, w: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The loss l(w) of one sample (x, t) as a scalar: the function torch.func transforms
        (grad, jvp, hessian) differentiate, vmapped over samples."""
        return self.sample_losses(w, x[None], t[None])[0]

    def sample_hvp(self, x: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """H v for the Hessian H of one sample's loss at w* and a vector ``v`` (N,).

        Forward over reverse (``jvp`` of ``grad``), the per-sample HVP every route builds on:
        vmap it over samples, vectors, or both. It is nested torch.func differentiation too, which
        torch 2.14 gets wrong through some layers: the curvature routes prove it against plain
        double backward on each network before they use it (``routes.proven_route``).
        """
        gradient = grad(self.sample_loss)
        return jvp(lambda u: gradient(u, x, t), (self.center,), (v,))[1]

    def per_sample_losses(self, W: Tensor, *, progress: bool = False) -> Tensor:
        """Per-sample losses l_i(w) for i = 1..K at one vector (N,) -> (K,) or a batch (B, N) -> (B, K).

        Functional (the model is never modified), without autograd, chunked over parameter vectors
        (``strategy.draws_per_chunk``) and samples (``batches``) so that no chunk's activations
        exceed ``max_memory`` bytes.
        """
        W = self.as_vector(W)
        single = W.ndim == 1
        W = W.reshape(-1, self.num_params)
        if self.strategy == "auto" and len(W) >= 4:
            self.strategy, self.vmap_draws, self.timings = fastest(self, W)
        out = torch.empty(len(W), self.num_samples, device=self.device, dtype=self.dtype)
        draws = draws_per_chunk(self, len(W), self.strategy, self.vmap_draws)
        with torch.no_grad():
            for block in bar(spans(len(W), draws), desc="draws", unit="chunk", enabled=progress):
                for rows, X, y in self.batches(self.activation_bytes):
                    out[block, rows] = self.losses_block(W[block], X, y)
        return out[0] if single else out

    def losses_block(self, W: Tensor, X: Tensor, y: Tensor, strategy: str | None = None) -> Tensor:
        """Per-sample losses (len(W), len(X)) of the samples (X, y) at the vectors W (B, N), by
        ``strategy`` ("loop" or "vmap"; None: the Problem's own). Call it without autograd."""
        if (strategy or self.strategy) == "vmap":
            return vmap(self.sample_losses, in_dims=(0, None, None))(W, X, y)
        # "loop": load each vector into the private copy's parameters and call it plainly (no
        # per-call reparametrisation), then put w* back so every other use sees the centre.
        params = list(self.model.parameters())
        try:
            rows = []
            for w in W:
                for p, piece in zip(params, torch.split(w, self.numels)):
                    p.copy_(piece.view_as(p))
                rows.append(self.loss_fn(self.model(X), y))
            return torch.stack(rows)
        finally:
            for p, piece in zip(params, torch.split(self.center, self.numels)):
                p.copy_(piece.view_as(p))

    # -- chunks within the memory budget -----------------------------------------------------------

    def batch_size(self, bytes_per_sample: int) -> int:
        """Samples per batch when each takes ``bytes_per_sample`` bytes: as many as fit in
        ``max_memory`` (at least 1, at most K)."""
        return max(1, min(self.num_samples, self.max_memory // max(int(bytes_per_sample), 1)))

    def batches(
        self, bytes_per_sample: int, index: Tensor | None = None
    ) -> Iterator[tuple[slice, Tensor, Tensor]]:
        """The samples in order, in batches that keep ``bytes_per_sample`` per sample within
        ``max_memory``: ``(rows, X, y)`` with ``rows`` the batch's slice of the samples (or of
        ``index``, 0-based sample positions to take instead of all K).

        The one chunking primitive of the library: every estimator states what one sample costs
        it (``activation_bytes`` per forward pass, plus its own per-sample arrays) and loops here.

        Example:
            >>> [rows for rows, X, y in prob.batches(prob.max_memory // 2)]   # doctest: +SKIP
            [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
        """
        total = self.num_samples if index is None else len(index)
        for rows in spans(total, self.batch_size(bytes_per_sample)):
            picked = rows if index is None else index[rows]
            yield rows, self.X[picked], self.y[picked]

    # -- safety ----------------------------------------------------------------------------------

    def _check_deterministic(self) -> None:
        """Two evaluations at w* must agree (catches randomness a layer scan cannot see)."""
        first = self.per_sample_losses(self.center)[:8]
        again = self.per_sample_losses(self.center)[:8]
        if not torch.equal(first.nan_to_num(), again.nan_to_num()):
            raise ValueError(
                "net is not deterministic: two evaluations at the same parameters gave different "
                "losses. Put every random layer in eval mode (net.eval()) before building a Problem."
            )


def _as_tensor(name: str, values) -> Tensor:
    """``values`` as a tensor, or a ValueError naming ``name`` (strings, ragged lists...)."""
    try:
        return torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be a tensor or an array of numbers; got {type(values).__name__}."
        ) from None


def _check_parameters(model: nn.Module) -> None:
    """Refuse non-finite parameters: the centre w* must be a point of parameter space."""
    for name, p in model.named_parameters():
        bad = ~torch.isfinite(p)
        if bad.any():
            raise ValueError(
                f"net has {int(bad.sum())} non-finite parameter value(s) (NaN or inf), the first "
                f"in {name!r}; it cannot be the centre w* (did its training diverge?)."
            )


def _probe(model: nn.Module, X: Tensor) -> Tensor:
    """The network's output on the first sample, with an error naming X when it cannot take it."""
    if X.is_floating_point():
        return check_network_input(model, X, "X")
    try:
        return check_network_input(model, X, "X")
    except ValueError:
        raise ValueError(
            f"X has dtype {X.dtype}, which the network cannot take; expected floating inputs "
            "(convert with X.float() and normalise them like the training data)."
        ) from None


def _check_targets(y: Tensor, output: Tensor, loss: str) -> Tensor:
    """Targets checked against the network's output on one sample (``output``, shape (1, ...)).

    Cross-entropy: class indices of shape (K, *output.shape[2:]) in 0..C−1 with C = output.shape[1],
    integers or floats holding whole numbers (returned as int64). Squared error: finite numbers
    with as many values per sample as the output has.
    """
    K = len(y)
    if loss == "mse":
        if y[0].numel() != output[0].numel():
            raise ValueError(
                f"y of shape {tuple(y.shape)} does not match the network's outputs for "
                f"loss='mse': expected {(K, *output.shape[1:])} (one target per output). "
                "Class indices need loss='cross_entropy'."
            )
        if y.is_floating_point():
            check_finite("y", y)
        return y
    if output.ndim < 2:
        raise ValueError(
            f"loss='cross_entropy' needs outputs of shape (n, C); the network gives "
            f"{tuple(output.shape)} for one sample. Use loss='mse' for other outputs."
        )
    classes = output.shape[1]
    expected = (K, *output.shape[2:])
    if tuple(y.shape) != expected:
        raise ValueError(
            f"y of shape {tuple(y.shape)} is not a vector of class indices: loss='cross_entropy' "
            f"expects shape {expected} for the network's {classes} outputs (use loss='mse' for "
            "targets shaped like the outputs)."
        )
    if y.is_complex() or not (y.is_floating_point() or y.dtype in _INTEGER_DTYPES):
        raise ValueError(f"y has dtype {y.dtype}; expected integer class indices 0..{classes - 1}.")
    if y.is_floating_point():
        check_finite("y", y)
        fractional = (y != y.round()).flatten()
        if fractional.any():
            i = int(fractional.nonzero()[0, 0])
            raise ValueError(
                f"y holds labels that are not whole numbers (e.g. {y.flatten()[i].item():g} at "
                f"sample {i}); loss='cross_entropy' takes integer class indices 0..{classes - 1}."
            )
    labels = y.to(torch.long)
    outside = ((labels < 0) | (labels >= classes)).reshape(K, -1).any(1)
    if outside.any():
        i = int(outside.nonzero()[0, 0])
        raise ValueError(
            f"y holds {int(outside.sum())} label(s) outside 0..{classes - 1}, the classes of the "
            f"network's {classes} outputs (e.g. {labels[i].tolist()} at sample {i})."
        )
    return labels


_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _refuse_stochastic(net: nn.Module) -> None:
    offenders = [
        f"{name or type(m).__name__} ({type(m).__name__})"
        for name, m in net.named_modules()
        if isinstance(m, _STOCHASTIC_IN_TRAINING) and m.training
    ]
    if offenders:
        raise ValueError(
            "net is in training mode with layers that make the loss random or batch-dependent: "
            f"{', '.join(offenders[:4])}{'…' if len(offenders) > 4 else ''}. Call net.eval() "
            "first (dropout off, batch-norm on running statistics); the Problem works on its own "
            "copy and never changes your model."
        )


def _repeated_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that occur under more than one name in ``model`` (the same layer applied twice)."""
    seen: set[int] = set()
    repeated: list[nn.Module] = []
    for _, module in model.named_modules(remove_duplicate=False):
        if id(module) in seen and all(module is not r for r in repeated):
            repeated.append(module)
        seen.add(id(module))
    return repeated


def _activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of all module outputs for one sample (an upper estimate of activation memory)."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return int(math.ceil(total + x.numel() * x.element_size())) * 2


def spans(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(total)`` of length ``size`` (the last may be shorter): how
    every chunked loop walks its samples, draws or vectors.

    Example:
        >>> list(spans(5, 2))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    return (slice(start, min(start + size, total)) for start in range(0, total, size))


def check_problem(prob: object, name: str = "prob") -> Problem:
    """Return ``prob`` if it is a ``Problem``; otherwise a ValueError naming the parameter."""
    if not isinstance(prob, Problem):
        raise ValueError(
            f"{name} must be a landscape.problem.Problem (build one with Problem(net, X, y) or "
            f"experiment.prepare); got {type(prob).__name__}."
        )
    return prob

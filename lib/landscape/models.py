"""Network builders: multilayer perceptrons and small CNNs as plain ``nn.Sequential`` stacks.

``build(kind, input_shape, num_classes, **cfg)`` is the one entry point. Every network is a flat
``nn.Sequential`` of standard ``torch.nn`` layers, so BackPACK's ``extend`` and ``torch.func``
both work on it unchanged. The CNN picks ``Conv1d``/``Conv2d`` (and the matching batch-norm and
pooling) from the rank of ``input_shape``: ``(C, L)`` or ``(C, H, W)``. Training lives in
``train``, data in ``data``; nothing here touches data or optimisers.

Configurations of the papers, for reference::

    build("mlp", shape, 10, depth=4, width=128)                     # MLP 4x128
    build("mlp", shape, 10, depth=4, width=128, batch_norm=True, dropout=0.2)
    build("cnn", shape, 10, depth=4, channels=64, kernel_size=3)    # CNN 4x64 (depth 2/4/6)
    build("mlp", shape, 10, depth=L, width=h, bias=False)           # bias-free ReLU MLP (paper 002)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import nn

from landscape.checks import check_choice, check_int
from landscape.seeding import seeded

__all__ = ["ACTIVATIONS", "CNN_DEFAULTS", "KINDS", "MLP_DEFAULTS", "PIECEWISE_LINEAR", "build", "kinks"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
"""Activation names accepted by ``activation=`` and the module each one builds."""

MLP_DEFAULTS: dict[str, Any] = {
    "depth": 4,
    "width": 128,
    "batch_norm": False,
    "dropout": 0.0,
    "bias": True,
    "activation": "relu",
    "seed": None,
}
"""Configuration keys of ``build("mlp", ...)`` and their defaults."""

CNN_DEFAULTS: dict[str, Any] = {
    "depth": 4,
    "channels": 64,
    "kernel_size": 3,
    "batch_norm": False,
    "dropout": 0.0,
    "bias": True,
    "activation": "relu",
    "seed": None,
}
"""Configuration keys of ``build("cnn", ...)`` and their defaults."""

# Layer classes of the CNN by number of spatial dimensions (len(input_shape) - 1).
_CONV_LAYERS: dict[int, dict[str, type[nn.Module]]] = {
    1: {
        "conv": nn.Conv1d,
        "norm": nn.BatchNorm1d,
        "pool": nn.MaxPool1d,
        "global_pool": nn.AdaptiveAvgPool1d,
    },
    2: {
        "conv": nn.Conv2d,
        "norm": nn.BatchNorm2d,
        "pool": nn.MaxPool2d,
        "global_pool": nn.AdaptiveAvgPool2d,
    },
}


def build(
    kind: Literal["mlp", "cnn"],
    input_shape: Sequence[int],
    num_classes: int,
    **cfg: Any,
) -> nn.Sequential:
    """Build a classifier network.

    **mlp** — ``Flatten`` then ``depth`` hidden blocks ``Linear(width) → [BatchNorm1d] →
    activation → [Dropout]`` and a ``Linear`` head (``depth=0`` is multinomial logistic
    regression). ``bias=False`` removes the bias of every ``Linear``, head included.

    **cnn** — ``depth`` blocks ``Conv(channels, kernel_size, padding=kernel_size // 2) →
    [BatchNorm] → activation → [Dropout]``; after a block, a ``MaxPool(2)`` halves the spatial
    size whenever its smallest side is still >= 2 (so an 8x8 input pools after blocks 1-3 only,
    and any depth works for any input size); then global average pooling, ``Flatten`` and a
    ``Linear`` head. ``Conv1d`` for ``(C, L)`` inputs, ``Conv2d`` for ``(C, H, W)``.

    Args:
        kind: ``"mlp"`` or ``"cnn"``.
        input_shape: Shape of one input without the batch axis, e.g. ``(1, 8, 8)`` or ``(1, 40)``.
        num_classes: Number of output logits (>= 2).
        **cfg: Keys of :data:`MLP_DEFAULTS` or :data:`CNN_DEFAULTS`: ``depth``, ``width`` (mlp) or
            ``channels``/``kernel_size`` (cnn, kernel size odd), ``batch_norm`` (bool),
            ``dropout`` (probability in [0, 1)), ``bias`` (bool), ``activation`` (a key of
            :data:`ACTIVATIONS`) and ``seed``: None draws the initial weights from torch's
            global RNG (seed it with ``torch.manual_seed`` first); an integer draws them from a
            private, seeded RNG and leaves the global one untouched.

    Returns:
        The network as an ``nn.Sequential`` in train mode, on the CPU, in float32.

    Raises:
        ValueError: Unknown ``kind``, unknown configuration key, or an invalid value, naming the
            parameter and what is allowed.

    Example:
        >>> net = build("mlp", (1, 8, 8), 10, depth=2, width=16)
        >>> net(torch.zeros(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """
    check_choice("kind", kind, KINDS)
    defaults, builder = KINDS[kind]
    config = _resolve_config(kind, defaults, cfg)
    shape = _check_shape(kind, input_shape)
    num_classes = check_int("num_classes", num_classes, low=2)
    with seeded(config.pop("seed")):
        return builder(shape, num_classes, **config)


def _resolve_config(kind: str, defaults: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``cfg``, each value validated; unknown keys are an error."""
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults)
        raise ValueError(
            f"unknown {kind} configuration key(s) {', '.join(unknown)}; allowed keys: {allowed}."
        )
    config = {**defaults, **cfg}
    for key, value in config.items():
        config[key] = _VALIDATORS[key](key, value, kind)
    return config


def _check_shape(kind: str, input_shape: Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints; ``(C, L)`` or ``(C, H, W)`` for the CNN."""
    try:
        shape = tuple(check_int("input_shape", s, low=1) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_shape={input_shape!r} must be a sequence of positive integers."
        ) from None
    ranks = (2, 3) if kind == "cnn" else (1, 2, 3, 4)
    if len(shape) not in ranks:
        raise ValueError(
            f"input_shape={input_shape!r} has {len(shape)} entries; a {kind} takes "
            f"{' or '.join(map(str, ranks))} (e.g. (C, L) or (C, H, W))."
        )
    return shape


# ------------------------------------------------------------------------------- validation


def _depth(key: str, value: Any, kind: str) -> int:
    return check_int(key, value, low=0 if kind == "mlp" else 1)


def _positive_int(key: str, value: Any, kind: str) -> int:
    return check_int(key, value, low=1)


def _odd_int(key: str, value: Any, kind: str) -> int:
    value = check_int(key, value, low=1)
    if value % 2 == 0:
        raise ValueError(f"{key}={value} must be odd (padding={key}//2 keeps the size).")
    return value


def _flag(key: str, value: Any, kind: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be True or False.")
    return value


def _probability(key: str, value: Any, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"{key}={value!r} must be a number in [0, 1).")
    return float(value)


def _activation(key: str, value: Any, kind: str) -> str:
    return check_choice(key, value, ACTIVATIONS)


def _seed(key: str, value: Any, kind: str) -> int | None:
    return None if value is None else check_int(key, value, low=0)


_VALIDATORS: dict[str, Callable[[str, Any, str], Any]] = {
    "depth": _depth,
    "width": _positive_int,
    "channels": _positive_int,
    "kernel_size": _odd_int,
    "batch_norm": _flag,
    "dropout": _probability,
    "bias": _flag,
    "activation": _activation,
    "seed": _seed,
}


# --------------------------------------------------------------------------------- builders


def _block(
    layer: nn.Module,
    norm: nn.Module | None,
    activation: str,
    dropout: float,
) -> list[nn.Module]:
    """``layer → [norm] → activation → [dropout]`` as a list of modules."""
    modules = [layer]
    if norm is not None:
        modules.append(norm)
    modules.append(ACTIVATIONS[activation]())
    if dropout > 0:
        modules.append(nn.Dropout(dropout))
    return modules


def _mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    depth: int,
    width: int,
    batch_norm: bool,
    dropout: float,
    bias: bool,
    activation: str,
) -> nn.Sequential:
    """A flattening MLP with ``depth`` hidden layers of ``width`` units (see :func:`build`)."""
    modules: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        norm = nn.BatchNorm1d(width) if batch_norm else None
        modules += _block(nn.Linear(fan_in, width, bias=bias), norm, activation, dropout)
        fan_in = width
    modules.append(nn.Linear(fan_in, num_classes, bias=bias))
    return nn.Sequential(*modules)


def _cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    depth: int,
    channels: int,
    kernel_size: int,
    batch_norm: bool,
    dropout: float,
    bias: bool,
    activation: str,
) -> nn.Sequential:
    """A CNN of ``depth`` conv blocks with max-pooling while possible (see :func:`build`)."""
    layers = _CONV_LAYERS[len(input_shape) - 1]
    in_channels, size = input_shape[0], min(input_shape[1:])
    modules: list[nn.Module] = []
    for _ in range(depth):
        conv = layers["conv"](
            in_channels, channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        norm = layers["norm"](channels) if batch_norm else None
        modules += _block(conv, norm, activation, dropout)
        if size >= 2:
            modules.append(layers["pool"](2))
            size //= 2
        in_channels = channels
    modules += [layers["global_pool"](1), nn.Flatten(), nn.Linear(channels, num_classes, bias=bias)]
    return nn.Sequential(*modules)


KINDS: dict[str, tuple[dict[str, Any], Callable[..., nn.Sequential]]] = {
    "mlp": (MLP_DEFAULTS, _mlp),
    "cnn": (CNN_DEFAULTS, _cnn),
}
"""Network kinds: each maps to its configuration defaults and its builder."""


#: Layers whose output is piecewise linear in their input: not twice differentiable at their kinks.
PIECEWISE_LINEAR: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Hardtanh, nn.Hardshrink,
    nn.Softshrink, nn.Threshold, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)


def kinks(net: nn.Module) -> list[str]:
    """The kinds of piecewise-linear layers in ``net`` (ReLU, max-pool...), each named once.

    A network holding any of them is not twice differentiable at its kinks, and some of those lie
    close to a trained w*: the per-sample Hessians there do not see them, so the quadratic model
    (and the complete closed form) is biased by an amount that does not shrink with σ. An empty
    list means no known kink (functional calls such as ``F.relu`` in a custom ``forward`` are
    not seen).

    Example:
        >>> kinks(build("mlp", (1, 8, 8), 10, depth=1, width=4))
        ['ReLU']
        >>> kinks(build("mlp", (1, 8, 8), 10, depth=1, width=4, activation="tanh"))
        []
    """
    return list(dict.fromkeys(type(m).__name__ for m in net.modules() if isinstance(m, PIECEWISE_LINEAR)))

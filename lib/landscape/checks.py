"""Validation of user input and device selection, shared by every module.

Each check raises ``ValueError`` naming the parameter, the value it got and what is allowed, so
that a typo in a notebook's parameters cell ends in one readable line instead of a traceback from
deep inside torch. Nothing here computes anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise ``ValueError``."""
    allowed = tuple(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not supported; choose one of {listed}.")
    return value


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a positive number.") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0.")
    return number


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[low, high]`` (either end may be open)."""
    if isinstance(value, bool) or not isinstance(value, int | torch.SymInt):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            raise ValueError(f"{name}={value!r} must be an integer.") from None
    if low is not None and value < low:
        raise ValueError(f"{name}={value} must be >= {low}.")
    if high is not None and value > high:
        raise ValueError(f"{name}={value} must be <= {high}.")
    return int(value)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) gives CUDA when it is present, else the CPU; anything else is parsed."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a device; use 'auto', 'cpu' or 'cuda'."
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here.")
    return resolved


def check_sequence(name: str, values: Any, check: Any, **kwargs: Any) -> list[Any]:
    """A non-empty list of values, each passed through ``check(f"{name}[i]", value, **kwargs)``.

    A single value (a number or a string) is accepted as a list of one, so a notebook parameter
    ``sigmas = 0.1`` works like ``sigmas = [0.1]``.

    Example:
        >>> check_sequence("sigmas", [0.1, 1], check_positive)
        [0.1, 1.0]
    """
    if isinstance(values, str | int | float) or not isinstance(values, Iterable):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(f"{name}=[] must hold at least one value.")
    return [check(f"{name}[{i}]", value, **kwargs) for i, value in enumerate(values)]

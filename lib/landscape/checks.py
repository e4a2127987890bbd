"""Validation of user input and device selection, shared by every module.

Each check raises ``ValueError`` naming the parameter, the value it got and what is allowed, so
that a typo in a notebook's parameters cell ends in one readable line instead of a traceback from
deep inside torch. Nothing here computes a result: the one check that runs anything,
``check_network_input``, passes a single sample through a network to see that it fits.
"""

from __future__ import annotations

import math
import os
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


def check_nonnegative(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number >= 0 (a norm, a maximum loss)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool | str) or not math.isfinite(number) or number < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0.")
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


def check_seed(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer seed >= 0 (a float, a string or None is refused).

    Example:
        >>> check_seed("seed", 3)
        3
    """
    if isinstance(value, bool) or not _is_integer(value):
        raise ValueError(f"{name}={value!r} must be an integer seed >= 0 (e.g. {name}=0).")
    return check_int(name, int(value), low=0)


def check_fraction(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a number strictly between 0 and 1 (a level, a share)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool | str) or not 0 < number < 1:
        raise ValueError(f"{name}={value!r} must be a number in (0, 1), e.g. 0.95.")
    return number


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is True or False (a string such as "no" is refused, not read as True)."""
    if not isinstance(value, bool):
        try:
            import numpy as np

            if isinstance(value, np.bool_):
                return bool(value)
        except ImportError:  # pragma: no cover
            pass
        raise ValueError(f"{name}={value!r} must be True or False.")
    return value


#: Names accepted for floating dtypes, besides torch dtypes themselves.
DTYPE_NAMES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def check_dtype(name: str, value: Any) -> torch.dtype:
    """A floating torch dtype from a ``torch.dtype`` or one of the names in ``DTYPE_NAMES``.

    Example:
        >>> check_dtype("dtype", "float64")
        torch.float64
    """
    dtype = DTYPE_NAMES.get(value) if isinstance(value, str) else value
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        names = ", ".join(repr(n) for n in DTYPE_NAMES)
        raise ValueError(
            f"{name}={value!r} is not a floating dtype; use torch.float32 or torch.float64 "
            f"(or the strings {names})."
        )
    return dtype


def check_finite(name: str, values: torch.Tensor, what: str = "sample") -> torch.Tensor:
    """Return ``values`` if every entry is finite; otherwise name how many are not and where.

    The first axis indexes ``what`` (samples, draws...): the message gives the first one hit.
    """
    bad = ~torch.isfinite(values)
    if bad.any():
        first = int(bad.reshape(len(values), -1).any(1).nonzero()[0, 0]) if values.ndim else 0
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf), the first in "
            f"{what} {first}; expected finite numbers (drop or repair those {what}s first)."
        )
    return values


def check_numbers(name: str, values: Any, ndim: int | None = 1) -> Any:
    """``values`` as a float64 numpy array; refuses non-numeric entries and the wrong rank.

    NaN and inf are let through (callers decide what they mean).
    """
    import numpy as np

    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        example = np.asarray(values, dtype=object).ravel()[:3].tolist()
        raise ValueError(f"{name} must hold numbers; got {example!r}...") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got an array of shape {array.shape}.")
    return array


def check_folder(name: str, path: Any) -> Any:
    """``path`` as a ``Path`` if it is a folder or can be created as one.

    Refuses a path that is an existing file, or lies under one (mkdir would fail there with an
    OSError that does not name the parameter).
    """
    from pathlib import Path

    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"{name}={path!r} must be a path to a folder (a str or a Path).")
    folder = Path(path).expanduser()
    for existing in (folder, *folder.parents):
        if existing.exists():
            break
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under {str(existing)!r}, a file"
        raise ValueError(
            f"{name}={str(path)!r} {where}; expected a folder (or one that can be created)."
        )
    return folder


def check_network_input(net: torch.nn.Module, X: torch.Tensor, name: str = "X") -> torch.Tensor:
    """One forward pass of ``net`` on the first sample of ``X``; its output, or a ValueError.

    Turns the error torch raises deep inside a layer (``mat1 and mat2 shapes cannot be
    multiplied``...) into one naming ``X``, its shape and, where the first layer tells, the shape
    expected. The sample is moved to the device (and floating dtype) of the network's parameters;
    the caller puts ``net`` in eval mode (this runs under ``no_grad``).
    """
    sample = X[:1]
    for param in net.parameters():  # onto the network's device (and dtype, for float inputs)
        dtype = param.dtype if sample.is_floating_point() else sample.dtype
        sample = sample.to(device=param.device, dtype=dtype)
        break
    try:
        with torch.no_grad():
            return net(sample)
    except (RuntimeError, ValueError, IndexError, TypeError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise ValueError(
            f"{name} of shape {tuple(X.shape)} (samples first) does not fit the network"
            f"{_expected_input(net)}; torch said: {first_line}"
        ) from None


def _expected_input(net: torch.nn.Module) -> str:
    """What the network's first layer with a fixed input size takes, for error messages."""
    from torch import nn

    for module in net.modules():
        if isinstance(module, nn.Linear):
            return f", whose first layer Linear takes {module.in_features} features per sample"
        if isinstance(module, nn.modules.conv._ConvNd):
            dims = len(module.kernel_size)
            shape = ("C", "L") if dims == 1 else ("C", "H", "W")[: dims + 1]
            return (
                f", whose first layer {type(module).__name__} takes samples of shape "
                f"({', '.join(shape)}) with C={module.in_channels}"
            )
    return ""


def _is_integer(value: Any) -> bool:
    if isinstance(value, int | torch.SymInt):
        return True
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, np.integer)


def check_notebook_parameters() -> None:
    """Refuse parameters injected by papermill that the notebook's parameters cell does not declare.

    papermill only *warns* about a name its target notebook does not declare, and the notebook then
    runs with the default it meant to override (``sigmaa=1.0`` leaves ``sigmas`` as it was). Called
    from a notebook's validation cell, this reads the kernel's input history: papermill's injected
    cell starts with ``# Parameters`` and runs right after the cell tagged ``parameters``; every name
    it assigns must be assigned there too. Outside papermill (Jupyter, nbval) there is no injected
    cell and nothing to check.

    Raises:
        ValueError: naming each unknown parameter, the closest declared name and the declared ones.
    """
    import difflib

    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the notebooks always run under IPython
        return
    shell = get_ipython()
    history = list(shell.user_ns.get("In", [])) if shell is not None else []
    for position, source in enumerate(history[1:], start=1):
        if source.lstrip().startswith("# Parameters"):
            declared, given = _assigned_names(history[position - 1]), _assigned_names(source)
            unknown = [name for name in given if name not in declared]
            if unknown:
                hints = [
                    f"{name!r}"
                    + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(name, declared, 1))
                    for name in unknown
                ]
                raise ValueError(
                    f"unknown parameter(s) {', '.join(hints)} given to this notebook; "
                    f"its parameters are {', '.join(sorted(declared))}."
                )


def _assigned_names(source: str) -> list[str]:
    """The names assigned at the top level of a cell's source, in order (none if it does not parse)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and target.id not in names:
                names.append(target.id)
    return names

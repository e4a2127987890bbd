"""The results API notebooks call: where a notebook writes, and its headline numbers in results.json.

Here live :func:`record` (a notebook's last step), :func:`read_results`, the JSON conversion of
numpy/torch values (:func:`to_python`, :func:`to_json`, :func:`from_json`) and the notebook's output
folder (:func:`resolve_output_dir`, :func:`output_path`). It imports neither torch nor the runner,
so that a notebook's ``record`` stays cheap. Plans, execution and HTML live in the sibling modules;
the atomic write itself is :func:`landscape.files.write_atomic`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from landscape.files import write_atomic
from landscape.reports.plans import NAME_PATTERN

__all__ = [
    "NON_FINITE",
    "OUTPUT_DIR_ENV",
    "READING_OUTPUT",
    "from_json",
    "output_path",
    "read_json",
    "read_results",
    "record",
    "resolve_output_dir",
    "to_json",
    "to_python",
]

#: Environment variable that :func:`record` and :func:`resolve_output_dir` read when no folder is given.
OUTPUT_DIR_ENV = "LANDSCAPE_OUTPUT_DIR"
#: Metadata key of the notebook output that shows the ledger and the reading
#: (:func:`landscape.claims.conclude`); a report leaves it out, since its first screen shows both.
READING_OUTPUT = "landscape_reading"
#: How results.json spells the floats JSON has no number for (``float()`` reads them back).
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def resolve_output_dir(output_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder a notebook writes its results and figures to.

    In order: ``output_dir`` if given (the runner injects the run folder); else the environment
    variable ``LANDSCAPE_OUTPUT_DIR``; else ``<project>/reports/interactive/<notebook>/``, where
    ``<project>`` is the nearest folder at or above the current directory that holds
    ``reports/plans`` or ``lib/landscape`` (so a notebook opened in ``notebooks/`` writes to
    ``../reports/interactive/``), or the current directory if there is none, and ``<notebook>`` is
    the notebook's file name without extension when Jupyter or VS Code tell it (``JPY_SESSION_NAME``
    or ``__vsc_ipynb_file__``), else ``default``.
    """
    if output_dir is not None:
        return Path(output_dir).expanduser().absolute()
    from_env = os.environ.get(OUTPUT_DIR_ENV)
    if from_env:
        return Path(from_env).expanduser().absolute()
    here = Path.cwd()
    root = next(
        (
            p
            for p in (here, *here.parents)
            if (p / "reports" / "plans").is_dir() or (p / "lib" / "landscape").is_dir()
        ),
        here,
    )
    return root / "reports" / "interactive" / _session_name()


def _session_name() -> str:
    """The interactive notebook's file stem, when the front end tells it; else "default"."""
    name = os.environ.get("JPY_SESSION_NAME", "")
    if not name:
        try:
            from IPython import get_ipython

            shell = get_ipython()
            name = str(shell.user_ns.get("__vsc_ipynb_file__", "")) if shell is not None else ""
        except ImportError:
            name = ""
    stem = Path(name).stem if name else ""
    return stem if stem and NAME_PATTERN.match(stem) else "default"


def output_path(output_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """Path of a file ``name`` in the (resolved, created) output folder; see :func:`resolve_output_dir`."""
    directory = resolve_output_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def to_python(value: Any, name: str = "value") -> Any:
    """Convert a value to plain Python: float, int, bool, str, None, and (nested) lists and dicts.

    numpy scalars and arrays and torch tensors become floats, ints, bools and (nested) lists;
    tuples become lists; dataclasses become dicts of their fields; paths become strings.
    Non-finite floats stay floats (see :func:`to_json` for their form in a file).

    Raises:
        ValueError: naming ``name`` for a value that has no JSON form.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, np.ndarray | np.generic):
        return to_python(value.tolist(), name)
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return to_python(value.detach().cpu().tolist(), name)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): to_python(item, f"{name}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(item, f"{name}[{i}]") for i, item in enumerate(value)]
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_python(getattr(value, f.name), f"{name}.{f.name}") for f in fields(value)
        }
    raise ValueError(f"{name} of type {type(value).__name__} cannot be written to results.json.")


def to_json(value: Any, name: str = "value") -> Any:
    """:func:`to_python`, then non-finite floats as the *strings* ``"nan"``, ``"inf"``, ``"-inf"``.

    JSON has no such numbers; the strings keep the file valid JSON, tell NaN apart from a missing
    value (``null``), and read back with ``float()`` or :func:`from_json`.

    Raises:
        ValueError: naming ``name`` for a value that has no JSON form.
    """
    return _map_floats(to_python(value, name), _non_finite_as_string)


def from_json(value: Any) -> Any:
    """Undo :func:`to_json`'s spelling: the strings "nan", "inf", "-inf" become floats again.

    (So a *text* "nan" recorded by a notebook reads back as a float too.)
    """
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        return {key: from_json(item) for key, item in value.items()}
    return value


def _map_floats(value: Any, convert: Callable[[float], Any]) -> Any:
    if isinstance(value, float):
        return convert(value)
    if isinstance(value, list):
        return [_map_floats(item, convert) for item in value]
    if isinstance(value, dict):
        return {key: _map_floats(item, convert) for key, item in value.items()}
    return value


def _non_finite_as_string(number: float) -> float | str:
    if math.isfinite(number):
        return number
    return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in a file, or None if it is missing, unreadable or not a JSON object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``results.json`` of a run folder as numbers (see :func:`from_json`); {} if none.

    Raises:
        ValueError: naming the file if it exists but is not a JSON object.
    """
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return {}
    content = read_json(path)
    if content is None:
        raise ValueError(f"{path}: not a JSON object; expected what reports.record writes.")
    return from_json(content)


def record(output_dir: str | os.PathLike[str] | None = None, **numbers: Any) -> dict[str, Any]:
    """Merge headline numbers into ``<output_dir>/results.json`` (the last step of a notebook).

    Values are converted by :func:`to_python` and written by :func:`to_json` (NaN and ±inf are
    stored as the strings "nan", "inf", "-inf"). Keys already in the file and not given here are
    kept. The file is written atomically.

    Args:
        output_dir: the run folder the runner injected; None uses :func:`resolve_output_dir`.
        **numbers: the numbers to record, e.g. ``alpha=1.98, alpha_ci=(1.9, 2.05)``.

    Returns:
        The whole content of results.json after the merge, as numbers: NaN and ±inf are floats
        (so a notebook can format what it recorded), not the strings of the file.

    Example:
        >>> import tempfile
        >>> record(tempfile.mkdtemp(), alpha=np.float64(2.0), delta=np.array([1.0, np.inf]))
        {'alpha': 2.0, 'delta': [1.0, inf]}
    """
    directory = resolve_output_dir(output_dir)
    path = directory / "results.json"
    given = {key: to_python(value, key) for key, value in numbers.items()}
    existing = read_json(path)
    if existing is None and path.exists():
        warnings.warn(f"{path} is not a JSON object; starting it afresh.", stacklevel=2)
    stored = {**(existing or {}), **to_json(given)}
    write_atomic(path, json.dumps(stored, indent=2, allow_nan=False) + "\n")
    return {**from_json(existing or {}), **given}

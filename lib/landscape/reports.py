"""Plans, runs and reports: execute notebooks with papermill, render them, and summarise a plan.

A *plan* is a YAML file naming notebooks to run and the parameters to give them (§5 of the design).
:func:`run_plan` executes each run into ``<output_root>/<plan>/<run>/notebook.ipynb``, renders
``report.html`` beside it, keeps the notebook's ``results.json`` and a ``run.json`` describing the
run, skips runs whose notebook, parameters and library code are unchanged, and writes
``<output_root>/<plan>/index.html``. Notebooks call :func:`record` as their last step to store their
headline numbers. Every report file is written atomically (temporary file, then ``os.replace``).
Nothing here computes mathematics; figures live in :mod:`landscape.plots`.

A finished report is never lost. A plan folder looks like this::

    index.html
    .lock, .lock.pid        # held while `landscape run` runs the plan; the holder's pid
    .staging/<run>+<pid>/   # a run executing; renamed to <run>/ only once it has finished
    <run>/                  # the last good report: notebook.ipynb, report.html, results.json,
                            # figures, and run.json recording each file's size and SHA-256
    <run>/failed/           # the latest attempt, when it failed or was interrupted (Ctrl-C)

A run is up to date only when its folder holds exactly the recorded files, unchanged and parsable.
A run folder holding files the runner did not write is never replaced: that run fails.

Plan format::

    name: quick                 # folder name of the plan's reports
    defaults:                   # given to every run whose notebook declares the parameter
      device: cpu
    runs:
      - name: theorem           # folder name of the run (letters, digits, '_', '-', '.')
        notebook: notebooks/01_theorem.ipynb
        parameters: {sigma: [0.01, 0.1]}   # override the defaults; must be declared by the notebook

A notebook path is looked up relative to the current directory, then relative to the repository
root (the plan file's ``../..``, as for ``reports/plans/quick.yaml``), then relative to the plan
file's own folder. ``output_dir`` is reserved: the runner injects the absolute run folder.
"""

from __future__ import annotations

import ast
import base64
import concurrent.futures
import contextlib
import datetime as _dt
import hashlib
import html
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

import landscape

Status = Literal["succeeded", "failed", "skipped", "interrupted"]

#: Environment variable that :func:`record` and :func:`resolve_output_dir` read when no folder is given.
OUTPUT_DIR_ENV = "LANDSCAPE_OUTPUT_DIR"
#: Kernel every notebook runs on (installed by ``make install``).
KERNEL_NAME = "python3"
#: Parameter the runner injects (the run folder); plans may not set it.
RESERVED_PARAMETER = "output_dir"
#: A run folder's record: status, fingerprint, and every file of the report with size and SHA-256.
RUN_RECORD = "run.json"
#: Sub-folder of a run folder holding its latest failed or interrupted attempt.
FAILED_DIR = "failed"
#: Folder inside a plan folder where runs execute before they replace their report.
STAGING_DIR = ".staging"
#: The plan folder's lock file; the holder's pid is written beside it (``.lock.pid``).
LOCK_FILE = ".lock"

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLAN_KEYS = frozenset({"name", "description", "defaults", "runs"})
_RUN_KEYS = frozenset({"name", "description", "notebook", "parameters"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRACEBACK_LINES = 20
_UNFINISHED = ("failed", "interrupted")
_INDEX_NUMBERS = 8


# ----------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class Run:
    """One run of a plan.

    Attributes:
        name: folder name of the run inside the plan's report folder.
        notebook: absolute path of the notebook to execute.
        parameters: what papermill injects (the plan's defaults that the notebook declares, then
            the run's own parameters), without ``output_dir``.
        description: free text from the plan, or "".
    """

    name: str
    notebook: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Plan:
    """A validated plan file (see the module docstring for the format).

    Attributes:
        name: the plan's name; its reports go to ``<output_root>/<name>/``.
        path: absolute path of the YAML file.
        defaults: parameters given to every run whose notebook declares them.
        runs: the runs, in file order.
        description: free text from the plan, or "".
    """

    name: str
    path: Path
    defaults: dict[str, Any]
    runs: tuple[Run, ...]
    description: str = ""

    def run(self, name: str) -> Run:
        """Return the run called ``name`` (``ValueError`` listing the runs if there is none)."""
        for run in self.runs:
            if run.name == name:
                return run
        listed = ", ".join(r.name for r in self.runs)
        raise ValueError(f"plan {self.path}: no run named {name!r}; the runs are {listed}.")


@dataclass(frozen=True)
class RunResult:
    """What happened to one run in one call of :func:`run_plan`.

    Attributes:
        name: the run's name.
        status: "succeeded", "failed", or "skipped" (up to date, not executed).
        duration: seconds spent executing and rendering in this call (0.0 when skipped).
        output_dir: the run's folder (notebook.ipynb, report.html, results.json, run.json).
        error: for a failed run, the exception and the tail of the failing cell's traceback.
    """

    name: str
    status: Status
    duration: float
    output_dir: Path
    error: str | None = None


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file.

    Args:
        path: the YAML file.

    Returns:
        The plan, with absolute notebook paths and each run's merged parameters.

    Raises:
        ValueError: naming the plan file, the run and the key, for a missing or unreadable file,
            a missing or unknown key, a bad name, a duplicate run name, a notebook that cannot be
            found, or a run parameter that the notebook's ``parameters`` cell does not declare.

    Example:
        >>> plan = load_plan("reports/plans/quick.yaml")  # doctest: +SKIP
        >>> [run.name for run in plan.runs]  # doctest: +SKIP
        ['theorem', 'landscapes', ...]
    """
    plan_path = Path(path).expanduser().resolve()
    where = f"plan {plan_path}"
    if not plan_path.is_file():
        raise ValueError(f"{where}: file not found.")
    try:
        content = yaml.safe_load(plan_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason}); expected a YAML file "
            "saved as UTF-8."
        ) from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror or exc}).") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{where}: expected a mapping with keys 'name', 'defaults', 'runs'.")
    _check_keys(where, content, required={"name", "runs"}, allowed=_PLAN_KEYS)
    name = _check_name(where, "name", content["name"])
    defaults = _check_parameters(where, "defaults", content.get("defaults"))
    raw_runs = content["runs"]
    if not isinstance(raw_runs, list) or not raw_runs:
        raise ValueError(f"{where}: 'runs' must be a non-empty list of runs.")

    runs: list[Run] = []
    declared_anywhere: set[str] = set()
    for index, raw in enumerate(raw_runs):
        run, declared = _load_run(plan_path, index, raw, defaults)
        if any(r.name == run.name for r in runs):
            raise ValueError(f"{where}: run name {run.name!r} is used twice (key 'name').")
        runs.append(run)
        declared_anywhere |= declared
    unused = sorted(set(defaults) - declared_anywhere)
    if unused:
        raise ValueError(
            f"{where}: 'defaults' key(s) {', '.join(map(repr, unused))} are not a parameter of "
            "any notebook in the plan (check the spelling)."
        )
    return Plan(
        name=name,
        path=plan_path,
        defaults=defaults,
        runs=tuple(runs),
        description=str(content.get("description") or ""),
    )


def _load_run(
    plan_path: Path, index: int, raw: Any, defaults: dict[str, Any]
) -> tuple[Run, frozenset[str]]:
    """Validate one entry of ``runs`` and merge its parameters with the defaults."""
    where = f"plan {plan_path}, run #{index + 1}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with keys 'name', 'notebook', 'parameters'.")
    if "name" in raw:
        where = f"plan {plan_path}, run {raw['name']!r}"
    _check_keys(where, raw, required={"name", "notebook"}, allowed=_RUN_KEYS)
    name = _check_name(where, "name", raw["name"])
    notebook = _find_notebook(plan_path, where, raw["notebook"])
    own = _check_parameters(where, "parameters", raw.get("parameters"))
    try:
        declared = notebook_parameters(notebook)
    except ValueError as exc:
        raise ValueError(f"{where}: key 'notebook': {exc}") from None
    undeclared = sorted(set(own) - declared)
    if undeclared:
        known = ", ".join(sorted(declared)) or "none (no cell tagged 'parameters')"
        raise ValueError(
            f"{where}: key 'parameters': {', '.join(map(repr, undeclared))} not declared in the "
            f"parameters cell of {notebook.name}; it declares {known}."
        )
    merged = {key: value for key, value in defaults.items() if key in declared}
    merged.update(own)
    run = Run(name, notebook, merged, str(raw.get("description") or ""))
    return run, declared


def _check_keys(
    where: str, mapping: dict[Any, Any], required: set[str], allowed: Iterable[str]
) -> None:
    """Raise ``ValueError`` for a missing required key or a key that is not allowed."""
    allowed = frozenset(allowed)
    for key in sorted(required):
        if key not in mapping:
            raise ValueError(f"{where}: missing key {key!r}.")
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}."
        )


def _check_name(where: str, key: str, value: Any) -> str:
    """A plan or run name becomes a folder name: letters, digits, '_', '-', '.'."""
    if not isinstance(value, str) or not _NAME_PATTERN.match(value):
        raise ValueError(
            f"{where}: key {key!r}={value!r} must be a folder name "
            "(letters, digits, '_', '-', '.'; starting with a letter or digit)."
        )
    return value


def _check_parameters(where: str, key: str, value: Any) -> dict[str, Any]:
    """Parameters are a mapping from identifier to YAML value; ``output_dir`` is reserved."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: key {key!r} must be a mapping of parameter names to values.")
    for name in value:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}: key {key!r}: {name!r} is not a valid parameter name.")
        if name == RESERVED_PARAMETER:
            raise ValueError(
                f"{where}: key {key!r}: {RESERVED_PARAMETER!r} is set by the runner (the run folder)."
            )
    return dict(value)


def _find_notebook(plan_path: Path, where: str, value: Any) -> Path:
    """Resolve a notebook path: as given (cwd), then the repository root, then the plan's folder."""
    if not isinstance(value, str) or not value.endswith(".ipynb"):
        raise ValueError(f"{where}: key 'notebook'={value!r} must be a path to an .ipynb file.")
    given = Path(value).expanduser()
    candidates = (
        [given]
        if given.is_absolute()
        else [
            Path.cwd() / given,
            plan_path.parent.parent.parent / given,
            plan_path.parent / given,
        ]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ValueError(f"{where}: key 'notebook': {value!r} not found (looked at {tried}).")


def notebook_parameters(notebook: str | os.PathLike[str]) -> frozenset[str]:
    """Names assigned in a notebook's cell tagged ``parameters`` (empty if it has none).

    Args:
        notebook: path of an ``.ipynb`` file.

    Raises:
        ValueError: if the file is not a notebook (see :func:`read_notebook`) or its parameters
            cell is not valid Python.
    """
    path = Path(notebook)
    names: set[str] = set()
    for cell in read_notebook(path)["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or "parameters" not in tags:
            continue
        source = cell["source"]
        source = "".join(source) if isinstance(source, list) else source
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise ValueError(
                f"notebook {path}: parameters cell is not valid Python ({exc})."
            ) from None
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            else:
                continue
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return frozenset(names)


def read_notebook(notebook: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ``.ipynb`` file and check that it is a Jupyter notebook (nbformat 4 schema).

    Returns:
        The notebook's JSON content.

    Raises:
        ValueError: naming the file, what is wrong and what is expected, for a file that cannot be
            read, is not UTF-8 JSON, or does not follow the notebook schema.
    """
    import nbformat

    path = Path(notebook)
    expected = "expected a Jupyter notebook (JSON with 'cells', 'metadata' and 'nbformat': 4)"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"notebook {path}: cannot be read ({exc.strerror or exc}).") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError
        raise ValueError(f"notebook {path}: not a notebook ({exc}); {expected}.") from None
    if not isinstance(content, dict) or content.get("nbformat") != 4:
        if not isinstance(content, dict):
            given = f"a JSON {type(content).__name__}"
        elif "nbformat" in content:
            given = f"'nbformat': {content['nbformat']!r}"
        else:
            given = "no 'nbformat' key"
        raise ValueError(f"notebook {path}: not a notebook (found {given}); {expected}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cells without ids (papermill adds them)
            nbformat.validate(content, version=4)
    except nbformat.ValidationError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ValueError(f"notebook {path}: not a valid notebook ({reason}); {expected}.") from None
    return content


# ----------------------------------------------------------------------------------------------
# Where reports go, fingerprints, run status on disk


def plan_output_dir(plan: Plan, output_root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding a plan's run folders and ``index.html``.

    With ``output_root=None``: a plan stored as ``<root>/reports/plans/<file>.yaml`` reports to
    ``<root>/reports/<plan name>/``; any other plan to ``./reports/<plan name>/``.

    Raises:
        ValueError: if ``output_root``, one of its parents or the plan folder is a file.
    """
    if output_root is None:
        plans_dir = plan.path.parent
        if plans_dir.name == "plans" and plans_dir.parent.name == "reports":
            output_root = plans_dir.parent
        else:
            output_root = Path.cwd() / "reports"
    root = Path(output_root).expanduser().resolve()
    for folder in (root / plan.name, root, *root.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise ValueError(
                    f"output root {root}: {folder} is a file; expected a folder to hold the plan "
                    f"folder {plan.name}/ (choose another --output-root)."
                )
            break
    return root / plan.name


def library_fingerprint() -> str:
    """sha256 over the names and contents of the library's source files (``lib/landscape/*.py``)."""
    digest = hashlib.sha256()
    package = Path(landscape.__file__).resolve().parent
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(b"\0")
        digest.update(source.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def fingerprint(run: Run, library: str | None = None) -> str:
    """sha256 of what determines a run's outputs.

    The notebook's bytes, the JSON of its merged parameters (sorted keys), ``landscape.__version__``
    and :func:`library_fingerprint` (pass ``library`` to reuse one computed already).
    """
    digest = hashlib.sha256()
    digest.update(b"notebook\0" + run.notebook.read_bytes())
    params = json.dumps(run.parameters, sort_keys=True, default=str)
    digest.update(b"\0parameters\0" + params.encode())
    digest.update(b"\0version\0" + landscape.__version__.encode())
    digest.update(b"\0library\0" + (library or library_fingerprint()).encode())
    return digest.hexdigest()


def read_run_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``run.json`` of a run folder, or None if it is missing or unreadable."""
    return _read_json(Path(run_dir) / "run.json")


def run_state(run: Run, run_dir: Path, current: str) -> str:
    """Where a run stands on disk.

    One of "up to date" (its report is complete: :func:`incomplete_reason` finds nothing, and its
    fingerprint is ``current``), "out of date" (another fingerprint), "incomplete" (a file of the
    report is missing, changed, unexpected or unparsable), "failed" or "interrupted" (the latest
    attempt, kept in ``<run>/failed/``), or "missing" (never run).
    """
    attempt = read_run_record(run_dir / FAILED_DIR)
    if attempt is not None and attempt.get("status") in _UNFINISHED:
        return str(attempt["status"])
    stored = read_run_record(run_dir)
    if stored is None:
        return "missing"
    if stored.get("status") in _UNFINISHED:  # the layout before failed/ existed
        return str(stored["status"])
    if incomplete_reason(run_dir, stored) is not None:
        return "incomplete"
    return "up to date" if stored.get("fingerprint") == current else "out of date"


def incomplete_reason(run_dir: Path, stored: Mapping[str, Any] | None = None) -> str | None:
    """Why a succeeded run's folder is not its complete report, or None when it is.

    The folder must hold exactly the files recorded in its run.json (each with its size and
    SHA-256; the ``failed/`` sub-folder aside), notebook.ipynb and report.html among them, and
    notebook.ipynb and results.json must parse.
    """
    stored = read_run_record(run_dir) if stored is None else stored
    if stored is None:
        return "run.json is missing or unreadable"
    if stored.get("status") != "succeeded":
        return f"run.json says {stored.get('status')!r}, not 'succeeded'"
    recorded = stored.get("files")
    if not isinstance(recorded, dict):
        return "run.json holds no record of the report's files (written by an older landscape)"
    for required in ("notebook.ipynb", "report.html"):
        if required not in recorded:
            return f"{required} is not part of the report"
    present = set(report_files(run_dir))
    for name, entry in sorted(recorded.items()):
        if name not in present:
            return f"{name} is missing"
        try:
            changed = not isinstance(entry, dict) or file_entry(run_dir / name) != entry
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if changed:
            return f"{name} has changed since the run (size or SHA-256)"
    extra = sorted(present - set(recorded))
    if extra:
        return f"{extra[0]} was not written by the run"
    return _unparsable(run_dir)


def report_files(folder: Path) -> list[str]:
    """Relative paths (with "/") of the files in a run folder, but run.json and ``failed/``."""
    found = []
    for parent, dirs, files in os.walk(folder):
        here = Path(parent).relative_to(folder)
        if here == Path("."):
            dirs[:] = [d for d in dirs if d != FAILED_DIR]
        found += [(here / name).as_posix() for name in files]
        found += [(here / d).as_posix() for d in dirs if (Path(parent) / d).is_symlink()]
    return sorted(name for name in found if name != RUN_RECORD)


def file_entry(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex digest}`` of a file, as run.json records it."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _unparsable(folder: Path) -> str | None:
    """The first of notebook.ipynb and results.json in ``folder`` that is not a JSON object."""
    for name in ("notebook.ipynb", "results.json"):
        path = folder / name
        if path.exists() and _read_json(path) is None:
            return f"{name} is not valid JSON (truncated or damaged)"
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see the old file or the new one, never half of one. Parent folders are created.

    Returns:
        The path written.

    Raises:
        OSError: (full disk, read-only folder...) naming ``path``, not the temporary file.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


# ----------------------------------------------------------------------------------------------
# Recording results from a notebook


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
    return stem if stem and _NAME_PATTERN.match(stem) else "default"


def output_path(output_dir: str | os.PathLike[str] | None, name: str) -> Path:
    """Path of a file ``name`` in the (resolved, created) output folder; see :func:`resolve_output_dir`."""
    directory = resolve_output_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


#: How results.json spells the floats JSON has no number for (``float()`` reads them back).
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


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


def read_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``results.json`` of a run folder as numbers (see :func:`from_json`); {} if none.

    Raises:
        ValueError: naming the file if it exists but is not a JSON object.
    """
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return {}
    content = _read_json(path)
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
    existing = _read_json(path)
    if existing is None and path.exists():
        warnings.warn(f"{path} is not a JSON object; starting it afresh.", stacklevel=2)
    stored = {**(existing or {}), **to_json(given)}
    write_atomic(path, json.dumps(stored, indent=2, allow_nan=False) + "\n")
    return {**from_json(existing or {}), **given}


# ----------------------------------------------------------------------------------------------
# Running a plan


def run_plan(
    plan_path: str | os.PathLike[str],
    only: Sequence[str] | None = None,
    force: bool = False,
    jobs: int = 1,
    output_root: str | os.PathLike[str] | None = None,
) -> list[RunResult]:
    """Execute a plan's runs with papermill, render their reports, and write the plan's index.

    Each run executes (see :func:`execute_run`) into a staging folder and, once finished, replaces
    ``<plan folder>/<run>/`` (see :func:`plan_output_dir`): notebook.ipynb, report.html, thumb.png
    (the first figure), the notebook's results.json and figures, and run.json. A run that fails is
    kept in ``<run>/failed/`` beside the last good report, and the others go on. The plan folder is
    locked while the plan runs (``.lock``; the holder's pid in ``.lock.pid``).

    Args:
        plan_path: the plan's YAML file.
        only: names of the runs to consider (default: all).
        force: execute even the runs that are up to date.
        jobs: how many runs execute at the same time.
        output_root: folder holding the plan folders (default: see :func:`plan_output_dir`).

    Returns:
        One :class:`RunResult` per considered run, in plan order.

    Raises:
        ValueError: for an invalid plan, an unknown name in ``only``, ``jobs`` < 1, or an output
            root that is a file.
        PlanLockedError: when another process is running the same plan folder.
        PlanInterrupted: on Ctrl-C, after the running runs were stopped and marked "interrupted"
            and the index was written (runs not started are left as they were).
    """
    from landscape.checks import check_int  # imports torch: kept out of notebooks' `record`

    plan = load_plan(plan_path)
    jobs = check_int("jobs", jobs, low=1)
    selected = _select(plan, only)
    plan_dir = plan_output_dir(plan, output_root)
    library = library_fingerprint()
    prints = threading.Lock()

    def say(message: str) -> None:
        with prints:
            print(message, flush=True)

    with _PlanLock(plan_dir) as lock:
        index = _Index(plan, plan_dir, library, [run.name for run in selected], say)
        stop = threading.Event()

        def one(position: int, run: Run) -> RunResult | None:
            if stop.is_set():
                return None  # Ctrl-C came before this run started
            tag = f"[{position}/{len(selected)}] {run.name}"
            run_dir = plan_dir / run.name
            try:
                current = fingerprint(run, library)
                if not force and run_state(run, run_dir, current) == "up to date":
                    say(f"{tag}: skipped (up to date)")
                    result = RunResult(run.name, "skipped", 0.0, run_dir)
                elif lock.problem:
                    result = RunResult(run.name, "failed", 0.0, run_dir, lock.problem)
                else:
                    say(f"{tag}: running {run.notebook.name} -> {run_dir}")
                    result = execute_run(plan, run, run_dir, current, stop=stop)
            except Exception as exc:  # one run's trouble never stops the plan
                result = RunResult(run.name, "failed", 0.0, run_dir, describe_error(exc))
            if result.status != "skipped":
                say(
                    f"{tag}: {result.status} in {result.duration:.1f} s" + _first_line(result.error)
                )
            index.update(result)
            return result

        say(f"Plan {plan.name}: {len(selected)} run(s), {jobs} at a time, reports in {plan_dir}")
        if lock.problem:
            say(f"warning: {lock.problem}; runs that need executing will fail.")
        else:
            _recover_staging(plan_dir)
        problem = kernel_problem()
        if problem:
            say(f"warning: {problem}")
        try:
            index.write()
            results, interrupted = _run_all(selected, one, jobs, stop)
        except KeyboardInterrupt:  # before any run started
            results, interrupted = [], True
        index.settle()
        index.write()
        say(summary_table(plan, results))
    if interrupted:
        raise PlanInterrupted(results, plan_dir / "index.html")
    return results


class PlanLockedError(RuntimeError):
    """Another process holds the plan folder's lock (it is running the same plan)."""


class PlanInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`run_plan`; the running runs were marked "interrupted".

    Attributes:
        results: the results of the runs that finished or were interrupted, in plan order.
        index: the plan's index.html (written after the interruption).
    """

    def __init__(self, results: Sequence[RunResult], index: Path) -> None:
        self.results = list(results)
        self.index = index
        stopped = [r.name for r in self.results if r.status == "interrupted"]
        what = (
            f"run(s) {', '.join(stopped)} marked interrupted (earlier reports kept)"
            if stopped
            else "no run was executing"
        )
        super().__init__(f"{what}; index {index}")


def _run_all(
    selected: Sequence[Run],
    one: Callable[[int, Run], RunResult | None],
    jobs: int,
    stop: threading.Event,
) -> tuple[list[RunResult], bool]:
    """Call ``one(position, run)`` for each run on ``jobs`` threads; on Ctrl-C set ``stop``.

    The main thread only waits, so Ctrl-C reaches it: runs not started are cancelled, running ones
    stop their notebooks (see :func:`execute_run`) and are waited for (a few seconds at most).

    Returns:
        The results of the runs that ran, in plan order, and whether Ctrl-C came.
    """
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(one, i, run) for i, run in enumerate(selected, 1)]
    interrupted = False
    try:
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        running = [f for f in futures if not f.cancelled()]  # cancelled ones never "finish"
        with _sigint_ignored():  # the running notebooks are being stopped; wait for them
            concurrent.futures.wait(running)
    pool.shutdown()
    done = [f.result() for f in futures if not f.cancelled()]
    return [result for result in done if result is not None], interrupted


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore Ctrl-C in the block (only where signals can be set: the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _PlanLock:
    """The plan folder's lock, held (non-blocking, ``filelock``) while a plan runs.

    ``problem`` is set instead, and nothing is locked, when the folder cannot be written (a read-only
    folder or disk): then nothing can be executed there, and up-to-date runs are still reported.
    """

    def __init__(self, plan_dir: Path) -> None:
        self.plan_dir = plan_dir
        self.path = plan_dir / LOCK_FILE
        self.pid_path = plan_dir / f"{LOCK_FILE}.pid"
        self.problem: str | None = None
        self._lock: Any = None

    def __enter__(self) -> _PlanLock:
        from filelock import FileLock, Timeout

        try:
            self.plan_dir.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as exc:
            self.problem = _os_error_line(exc, self.plan_dir)
            return self
        lock = FileLock(self.path, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise PlanLockedError(
                f"plan folder {self.plan_dir} is in use by another `landscape run` "
                f"({_lock_holder(self.pid_path)}); wait for it to finish or stop it."
            ) from None
        self._lock = lock
        with contextlib.suppress(OSError):
            write_atomic(self.pid_path, f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.pid_path.unlink(missing_ok=True)
            self._lock.release()


def _lock_holder(pid_path: Path) -> str:
    try:
        return f"pid {int(pid_path.read_text(encoding='utf-8').strip())}"
    except (OSError, ValueError):
        return "pid unknown"


def _select(plan: Plan, only: Sequence[str] | None) -> list[Run]:
    if only is None:
        return list(plan.runs)
    if isinstance(only, str):
        only = [only]
    wanted = set(only)
    for name in wanted:
        plan.run(name)  # raises ValueError naming the runs
    return [run for run in plan.runs if run.name in wanted]


def _first_line(error: str | None) -> str:
    return f": {error.splitlines()[0]}" if error else ""


def _os_error_line(exc: OSError, folder: Path) -> str:
    """One line naming what could not be written and why, e.g. for a full disk."""
    where = exc.filename or folder
    return f"cannot write {where}: {exc.strerror or exc}"


class _Refused(Exception):
    """A run folder the runner must not replace (it holds files the runner did not write)."""


def execute_run(
    plan: Plan,
    run: Run,
    run_dir: Path,
    current: str,
    *,
    stop: threading.Event | None = None,
    grace: float = 10.0,
) -> RunResult:
    """Execute one run now (no up-to-date check) and store its report files.

    The notebook executes with papermill in a separate process, into the staging folder
    ``<plan folder>/.staging/<run>+<pid>/``. A run that succeeded replaces ``run_dir`` (the old
    folder is renamed aside, the new one renamed in, the old one deleted); a failed or
    interrupted run goes to ``run_dir/failed/`` and the last good report stays. A ``run_dir``
    holding files the runner did not write is never touched: the run fails at once.

    Args:
        plan: the plan the run belongs to (for the report header).
        run: the run.
        run_dir: its folder.
        current: the run's :func:`fingerprint`, stored in run.json.
        stop: when set (Ctrl-C), the notebook is stopped and the run is "interrupted".
        grace: seconds a stopped notebook gets to shut its kernel down before it is killed.

    Returns:
        The run's result, whose ``output_dir`` is where its files are; failures (a failing cell,
        a full disk, a refused folder) are described, never raised.
    """
    start = time.perf_counter()
    started = _now()
    staging = run_dir.parent / STAGING_DIR / f"{run.name}+{os.getpid()}"
    try:
        _refuse_foreign(run_dir)
        _fresh_dir(staging)
        status, error = _execute_notebook(run, staging, stop, grace)
        info = _finish_run(plan, run, staging, run_dir, status, error, current, started, start)
        where = _store(staging, run_dir, info["status"])
    except (OSError, _Refused) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        error = _os_error_line(exc, staging) if isinstance(exc, OSError) else str(exc)
        return RunResult(run.name, "failed", round(time.perf_counter() - start, 3), run_dir, error)
    return RunResult(run.name, info["status"], info["duration"], where, info["error"])


def _finish_run(
    plan: Plan,
    run: Run,
    staging: Path,
    run_dir: Path,
    status: Status,
    error: str | None,
    current: str,
    started: str,
    start: float,
) -> dict[str, Any]:
    """Render report.html and thumb.png in ``staging`` and write its run.json; return run.json."""
    notebook = staging / "notebook.ipynb"
    if status == "succeeded":
        error = "papermill wrote no notebook" if not notebook.is_file() else _unparsable(staging)
        status = "failed" if error else status
    final = run_dir if status == "succeeded" else run_dir / FAILED_DIR
    info: dict[str, Any] = {
        "name": run.name,
        "plan": plan.name,
        "notebook": str(run.notebook),
        "parameters": to_json(run.parameters),
        "status": status,
        "duration": round(time.perf_counter() - start, 3),
        "error": error,
        "fingerprint": current,
        "started": started,
        "timestamp": _now(),
        "version": landscape.__version__,
    }
    if notebook.is_file() and status != "interrupted":
        try:
            _retarget_output_dir(notebook, staging, final)
            _write_thumbnail(notebook, staging / "thumb.png")
            index_href = "../index.html" if status == "succeeded" else "../../index.html"
            render_report(notebook, staging / "report.html", info, index_href)
        except OSError:
            raise
        except Exception as exc:
            info["status"] = "failed"
            note = f"Rendering the report failed: {describe_error(exc)}"
            info["error"] = f"{error}\n\n{note}" if error else note
    info["duration"] = round(time.perf_counter() - start, 3)
    info["timestamp"] = _now()
    info["files"] = {name: file_entry(staging / name) for name in report_files(staging)}
    write_atomic(staging / RUN_RECORD, json.dumps(info, indent=2) + "\n")
    return info


def _retarget_output_dir(notebook: Path, staging: Path, final: Path) -> None:
    """Make the injected ``output_dir`` name the folder the run's files end up in, not staging."""
    content = json.loads(notebook.read_text(encoding="utf-8"))
    changed = False
    for cell in content.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"]
            text = "".join(source) if isinstance(source, list) else source
            cell["source"] = text.replace(str(staging), str(final))
            changed = changed or cell["source"] != text
    if changed:
        write_atomic(
            notebook, json.dumps(content, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        )


# ----------------------------------------------------------------------------------------------
# Executing a notebook in its own process (so that Ctrl-C can stop it and its kernel)

_CHILD_COMMAND = (
    "import sys\n"
    "try:\n"
    "    from landscape.reports import _papermill_child\n"
    "except KeyboardInterrupt:\n"
    "    sys.exit(130)\n"
    "_papermill_child()\n"
)


def _execute_notebook(
    run: Run, staging: Path, stop: threading.Event | None, grace: float
) -> tuple[Status, str | None]:
    """Run papermill on ``run`` into ``staging/notebook.ipynb`` in a child process.

    The child gets its own session (a Ctrl-C at the terminal reaches only the runner, which stops
    it); it exits when the runner dies, and its kernel exits with it (ipykernel's parent poller).

    Returns:
        ("succeeded", None), ("failed", description of the error) or ("interrupted", note).
    """
    error_file = staging.with_name(f"{staging.name}.error")
    error_file.unlink(missing_ok=True)
    spec = {
        "input": str(run.notebook),
        "output": str(staging / "notebook.ipynb"),
        "parameters": {**run.parameters, RESERVED_PARAMETER: str(staging)},
        "cwd": str(run.notebook.parent),
        "name": run.name,
        "error_file": str(error_file),
        "parent": os.getpid(),
        "grace": grace,
    }
    package_root = str(Path(landscape.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD_COMMAND],
        stdin=subprocess.PIPE,
        cwd=run.notebook.parent,
        env={**os.environ, "PYTHONPATH": path},
        start_new_session=True,
    )
    try:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(pickle.dumps(spec))  # type: ignore[union-attr]
            process.stdin.close()  # type: ignore[union-attr]
        stopped = _wait_or_stop(process, stop, grace)
    finally:
        if process.poll() is None:  # the runner itself is going down
            _stop_process(process, grace=0.0)
    try:
        if stopped or process.returncode == 130:
            return "interrupted", "interrupted (Ctrl-C) before the notebook finished"
        if process.returncode == 0:
            return "succeeded", None
        described = error_file.read_text(encoding="utf-8") if error_file.is_file() else ""
    finally:
        error_file.unlink(missing_ok=True)
    code = process.returncode
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return "failed", described or f"the process executing the notebook {how}"


def _wait_or_stop(process: subprocess.Popen, stop: threading.Event | None, grace: float) -> bool:
    """Wait for the child; if ``stop`` gets set first, stop it and return True."""
    while True:
        try:
            process.wait(timeout=0.2)
            return False
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                _stop_process(process, grace)
                return True


#: The signal that asks a notebook's process to stop (see :func:`_stop_quietly`).
_STOP_SIGNAL = getattr(signal, "SIGUSR1", signal.SIGINT)


def _stop_process(process: subprocess.Popen, grace: float) -> None:
    """Ask the child to stop (papermill shuts its kernel down), SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, _STOP_SIGNAL)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _papermill_child() -> None:
    """Body of the child process of :func:`_execute_notebook` (the spec arrives pickled on stdin).

    Exits 0 when the notebook ran, 1 after writing the error's description to the spec's
    ``error_file``, 130 on SIGINT (papermill shuts the kernel down and saves the partial notebook).
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(_STOP_SIGNAL, _stop_quietly)
    try:
        spec = pickle.loads(sys.stdin.buffer.read())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    try:
        _exit_with_parent(spec["parent"], spec["grace"])
        import papermill

        papermill.execute_notebook(
            spec["input"],
            spec["output"],
            parameters=spec["parameters"],
            kernel_name=KERNEL_NAME,
            progress_bar={"desc": spec["name"]},
            log_output=False,
            # ipykernel logs a TCP-encryption warning at every start and noise at shutdown.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            resources={"metadata": {"path": spec["cwd"]}},  # the kernel's working directory
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        described = describe_error(exc)
        try:
            Path(spec["error_file"]).write_text(described, encoding="utf-8")
        except OSError as problem:  # a full disk: say it in one line where the user sees it
            print(f"landscape: {described.splitlines()[0]} ({problem})", file=sys.stderr)
        raise SystemExit(1) from None


def _stop_quietly(signum: int, frame: Any) -> None:
    """Stop as on Ctrl-C, without the traceback nbclient and asyncio log for the killed kernel."""
    for name in ("asyncio", "papermill", "nbclient", "traitlets"):
        logging.getLogger(name).disabled = True
    signal.raise_signal(signal.SIGINT)


def _exit_with_parent(parent: int, grace: float) -> None:
    """Interrupt this process when ``parent`` (the runner) dies, and end it ``grace`` s later."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), _STOP_SIGNAL)
        time.sleep(grace)
        os._exit(137)

    threading.Thread(target=watch, name="landscape-parent-watch", daemon=True).start()


# ----------------------------------------------------------------------------------------------
# Storing a run: staging folder, atomic replacement, the failed/ attempt, foreign files


def _fresh_dir(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _store(staging: Path, run_dir: Path, status: str) -> Path:
    """Move a finished staging folder into place; return where the run's files now are."""
    _refuse_foreign(run_dir)  # files may have appeared while the run executed
    if status == "succeeded":
        _replace_dir(staging, run_dir)
        return run_dir
    if _is_report(run_dir):  # keep the last good report; the attempt goes beside it
        _replace_dir(staging, run_dir / FAILED_DIR, aside=_aside(run_dir, "failed"))
    else:
        holder = _aside(run_dir, "new")
        _fresh_dir(holder)
        os.rename(staging, holder / FAILED_DIR)
        _replace_dir(holder, run_dir)
    return run_dir / FAILED_DIR


def _replace_dir(new: Path, target: Path, aside: Path | None = None) -> None:
    """Put folder ``new`` at ``target``: rename the old one aside, rename ``new`` in, delete the old.

    A runner killed between the two renames leaves the old folder aside in ``.staging``; the next
    run of the plan puts it back (:func:`_recover_staging`).
    """
    aside = aside or _aside(target, "previous")
    if aside.exists():
        shutil.rmtree(aside)
    had_old = target.exists()
    if had_old:
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        if had_old:
            os.rename(aside, target)
        raise
    if had_old:
        shutil.rmtree(aside, ignore_errors=True)


def _aside(run_dir: Path, role: str) -> Path:
    """``<plan folder>/.staging/<run>+<role>`` ('+' is never part of a run name)."""
    return run_dir.parent / STAGING_DIR / f"{run_dir.name}+{role}"


def _recover_staging(plan_dir: Path) -> None:
    """Tidy ``.staging`` after a runner that was killed: restore a report left aside, drop the rest."""
    staging = plan_dir / STAGING_DIR
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        name, _, role = entry.name.partition("+")
        with contextlib.suppress(OSError):
            target = plan_dir / name
            if role == "previous" and _NAME_PATTERN.match(name) and not target.exists():
                os.rename(entry, target)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _is_report(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a report of a run that succeeded."""
    stored = read_run_record(run_dir)
    return stored is not None and stored.get("status") == "succeeded"


def _refuse_foreign(run_dir: Path) -> None:
    """Raise :class:`_Refused` if the run folder holds files the runner did not write."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if not run_dir.is_dir() or run_dir.is_symlink():
        raise _Refused(
            f"{run_dir} is not a run folder (a file or link); it was left as it is: remove it "
            "or choose another output root."
        )
    foreign = _foreign_files(run_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise _Refused(
            f"run folder {run_dir} holds files the runner did not write ({shown}); it was left "
            "as it is: move them away and run again."
        )


def _foreign_files(run_dir: Path) -> list[str]:
    """Files in a run folder (and its failed/) that no run.json records as the runner's."""
    found = _unrecorded(run_dir)
    failed = run_dir / FAILED_DIR
    if failed.is_dir() and not failed.is_symlink():
        found += [f"{FAILED_DIR}/{name}" for name in _unrecorded(failed)]
    elif failed.exists() or failed.is_symlink():
        found.append(FAILED_DIR)
    return found


def _unrecorded(folder: Path) -> list[str]:
    present = report_files(folder)
    stored = read_run_record(folder)
    if stored is None:  # a folder left by an older landscape keeps at least its notebook
        return [] if (folder / "notebook.ipynb").is_file() else present
    recorded = stored.get("files")
    if not isinstance(recorded, dict):
        return []  # an older landscape's run folder: all of it is the runner's
    return [name for name in present if name not in recorded]


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _when(stored: Mapping[str, Any]) -> str:
    """run.json's ISO timestamp as "YYYY-MM-DD HH:MM" ("" when there is none)."""
    try:
        return _dt.datetime.fromisoformat(str(stored["timestamp"])).strftime("%Y-%m-%d %H:%M")
    except (KeyError, ValueError):
        return ""


_KERNEL_HINT = f"python -m ipykernel install --sys-prefix --name {KERNEL_NAME}"


def kernel_problem() -> str | None:
    """Why notebooks might not run on this interpreter's kernel, or None when all looks right.

    The ``python3`` kernel must exist and run the interpreter that has ``landscape`` installed (a
    user-level kernel spec takes precedence over the virtual environment's).
    """
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return "jupyter_client is not installed; notebooks cannot be executed."
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return f"no Jupyter kernel named {KERNEL_NAME!r}; install one with `{_KERNEL_HINT}`."
    program = shutil.which(spec.argv[0]) if spec.argv else None
    if program and Path(program).absolute().parent != Path(sys.executable).absolute().parent:
        return (
            f"kernel {KERNEL_NAME!r} ({spec.resource_dir}) runs {program}, not this interpreter "
            f"({sys.executable}); notebooks may not find landscape. Fix: `{_KERNEL_HINT}`."
        )
    return None


def describe_error(exc: BaseException) -> str:
    """Exception name and message, then the traceback's last lines, without ANSI colour codes.

    For papermill's ``PapermillExecutionError`` the traceback is the failing cell's (as the kernel
    printed it) and the cell's execution count is named.
    """
    if hasattr(exc, "ename") and hasattr(exc, "traceback"):
        head = f"{exc.ename}: {exc.evalue}"
        where = f"in cell [{getattr(exc, 'exec_count', '?')}] of the notebook"
        lines = "\n".join(exc.traceback).splitlines()
    else:
        head = f"{type(exc).__name__}: {exc}"
        where = "in the runner"
        lines = "".join(traceback.format_exception(exc)).splitlines()
    tail = [_ANSI.sub("", line).rstrip() for line in lines[-_TRACEBACK_LINES:]]
    return _ANSI.sub("", head) + f"\n\nTraceback ({where}, last lines):\n" + "\n".join(tail)


def summary_table(plan: Plan, results: Sequence[RunResult]) -> str:
    """A plain-text table of a :func:`run_plan` call's results."""
    statuses = ("succeeded", "failed", "skipped", "interrupted")
    counts = {s: sum(r.status == s for r in results) for s in statuses}
    total = sum(r.duration for r in results)
    width = max([len(r.name) for r in results] + [3])
    interrupted = f", {counts['interrupted']} interrupted" if counts["interrupted"] else ""
    lines = [
        f"\nPlan {plan.name}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['skipped']} skipped (up to date){interrupted}; {total:.1f} s",
        f"  {'run':<{width}}  {'status':<22}  {'duration':>9}",
    ]
    for r in results:
        status = "skipped (up to date)" if r.status == "skipped" else r.status
        duration = "-" if r.status == "skipped" else f"{r.duration:.1f} s"
        lines.append(f"  {r.name:<{width}}  {status:<22}  {duration:>9}{_first_line(r.error)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Rendering: report.html, thumb.png, index.html

_REPORT_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{% block extra_css %}
<style>
.lsc-banner { font: 14px/1.5 system-ui, sans-serif; background: #f6f8fa; border-bottom: 1px solid #d0d7de;
  padding: 10px 24px; margin-bottom: 12px; }
.lsc-banner a { color: #0969da; text-decoration: none; }
.lsc-banner code { font-size: 12px; }
.lsc-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; }
.lsc-succeeded { background: #2e7d32; } .lsc-failed { background: #c62828; }
.lsc-error { background: #fff0f0; border: 1px solid #f3b5b5; padding: 8px; white-space: pre-wrap;
  font-size: 12px; max-height: 24em; overflow: auto; }
details.lsc-code > summary { cursor: pointer; color: #57606a; font: 12px monospace; padding: 2px 0 2px 70px; }
details.lsc-code[open] > summary { margin-bottom: 2px; }
</style>
{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
{%- set run = resources.landscape_run -%}
{%- if run -%}
<div class="lsc-banner">
<a href="{{ run.index_href | default('../index.html') }}">&larr; plan {{ run.plan | e }}</a> &middot; run <b>{{ run.name | e }}</b>
&middot; <span class="lsc-badge lsc-{{ run.status }}">{{ run.status }}</span>
&middot; {{ '%.1f' | format(run.duration) }} s &middot; {{ run.timestamp }} &middot; landscape {{ run.version }}
&middot; <a href="notebook.ipynb">notebook.ipynb</a><br>
parameters: <code>{{ run.parameters | tojson | e }}</code>
{%- if run.error %}<pre class="lsc-error">{{ run.error | e }}</pre>{% endif %}
</div>
{%- endif -%}
{%- endblock body_header -%}
{% block input_group -%}
{%- set tags = cell.metadata.get('tags', []) -%}
{%- set failed = cell.outputs | selectattr('output_type', 'equalto', 'error') | list -%}
<details class="lsc-code"{% if failed %} open{% endif %}><summary>
{%- if 'injected-parameters' in tags %}injected parameters{% elif 'parameters' in tags %}parameters{% else %}code{% endif -%}
</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


def render_report(
    notebook: str | os.PathLike[str],
    html_path: str | os.PathLike[str],
    run_record: Mapping[str, Any] | None = None,
    index_href: str = "../index.html",
) -> Path:
    """Render an executed notebook to a self-contained HTML page (figures inline, code folded).

    Code cells are folded into ``<details>`` ("code", "parameters", "injected parameters"), except
    the cell that raised, which is open. With ``run_record`` (the content of run.json) a banner
    names the plan, run, status, duration, parameters and error, with a link to the index
    (``index_href``, relative to the page).

    Returns:
        The path written (atomically).
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    quiet = logging.getLogger("landscape.reports.nbconvert")
    quiet.setLevel(logging.ERROR)  # it warns about every figure without alt text
    exporter = HTMLExporter(
        log=quiet,
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"landscape_report.html.j2": _REPORT_TEMPLATE})],
        template_file="landscape_report.html.j2",
    )
    nb = nbformat.read(str(notebook), as_version=4)
    run = {**run_record, "index_href": index_href} if run_record else None
    resources = {"landscape_run": run}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return write_atomic(html_path, body)


def _write_thumbnail(notebook: Path, thumb: Path, size: tuple[int, int] = (480, 360)) -> bool:
    """Write the first PNG output of a notebook, shrunk to at most ``size``; False if none."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("image/png")
            if data:
                png = base64.b64decode("".join(data) if isinstance(data, list) else data)
                write_atomic(thumb, _shrink_png(png, size))
                return True
    thumb.unlink(missing_ok=True)
    return False


def _shrink_png(png: bytes, size: tuple[int, int]) -> bytes:
    try:
        from PIL import Image
    except ImportError:
        return png
    with Image.open(io.BytesIO(png)) as image:
        image.thumbnail(size)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def format_number(value: Any) -> str:
    """Format a results.json value for the index: 3 significant digits, short lists and strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value if len(value) <= 40 else value[:37] + "…"
    if isinstance(value, list):
        shown = [format_number(v) for v in value[:3]]
        if len(value) > 4:
            return f"[{', '.join(shown)}, …, {format_number(value[-1])}] ({len(value)} values)"
        return f"[{', '.join(format_number(v) for v in value)}]"
    if isinstance(value, dict):
        return "{…}" if value else "{}"
    return str(value)


def flatten_results(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, formatted value)`` pairs; dicts are flattened one level (``outer.inner``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in results.items():
        if isinstance(value, dict) and value:
            pairs.extend((f"{key}.{inner}", format_number(v)) for inner, v in value.items())
        else:
            pairs.append((str(key), format_number(value)))
    return pairs


_BADGES = {
    "succeeded": ("succeeded", "#2e7d32"),
    "cached": ("up to date (earlier run)", "#558b2f"),
    "failed": ("failed", "#c62828"),
    "interrupted": ("interrupted", "#6a1b9a"),
    "out of date": ("out of date", "#ef6c00"),
    "incomplete": ("incomplete", "#ef6c00"),
    "pending": ("pending", "#1565c0"),
    "missing": ("not run", "#757575"),
}

_INDEX_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 22px; margin: 0 0 4px; } .meta { color: #57606a; margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; } th, td { border-bottom: 1px solid #d0d7de;
  padding: 8px 10px; vertical-align: top; text-align: left; } th { background: #f6f8fa; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px;
  white-space: nowrap; }
.num { font: 12px/1.5 ui-monospace, monospace; } .num b { font-weight: 600; }
.thumb img { max-width: 240px; max-height: 180px; border: 1px solid #d0d7de; }
pre.error { background: #fff0f0; border: 1px solid #f3b5b5; padding: 6px; font-size: 12px;
  white-space: pre-wrap; max-width: 60em; max-height: 16em; overflow: auto; margin: 6px 0 0; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.small { color: #57606a; font-size: 12px; }
"""


class _Index:
    """The plan's index.html, rewritten (atomically, under a lock) as runs finish.

    A folder that cannot be written (full disk, read-only) is said once through ``warn``; it fails
    no run.
    """

    def __init__(
        self, plan: Plan, plan_dir: Path, library: str, selected: Iterable[str], warn: Any = print
    ) -> None:
        self.plan = plan
        self.plan_dir = plan_dir
        self.library = library
        self.selected = list(selected)
        self.results: dict[str, RunResult] = {}
        self.lock = threading.Lock()
        self.warn = warn
        self.problem: str | None = None

    def update(self, result: RunResult) -> None:
        with self.lock:
            self.results[result.name] = result
            self._write()

    def write(self) -> Path | None:
        with self.lock:
            return self._write()

    def settle(self) -> None:
        """No run is pending any more (after Ctrl-C, runs not started show their state on disk)."""
        with self.lock:
            self.selected = [name for name in self.selected if name in self.results]

    def _write(self) -> Path | None:
        pending = [name for name in self.selected if name not in self.results]
        try:
            return write_index(self.plan, self.plan_dir, self.results, self.library, pending)
        except OSError as exc:
            problem = _os_error_line(exc, self.plan_dir / "index.html")
            if problem != self.problem:
                self.warn(f"warning: {problem}; the index was not updated.")
            self.problem = problem
            return None


def write_index(
    plan: Plan,
    plan_dir: Path,
    results: Mapping[str, RunResult] | None = None,
    library: str | None = None,
    pending: Iterable[str] = (),
) -> Path:
    """Write ``<plan_dir>/index.html``: one row per run of the plan, from the run folders on disk.

    Args:
        plan: the plan.
        plan_dir: its report folder (see :func:`plan_output_dir`).
        results: this call's results by run name; a run succeeded earlier and not re-executed now
            is shown as "up to date (earlier run)".
        library: :func:`library_fingerprint`, if computed already.
        pending: runs this call will execute but has not finished (shown as "pending").

    Returns:
        The index path.
    """
    results = results or {}
    library = library or library_fingerprint()
    pending = set(pending)
    rows = [
        _index_row(run, plan_dir / run.name, results.get(run.name), library, run.name in pending)
        for run in plan.runs
    ]
    states = [state for state, _ in rows]
    counts = ", ".join(f"{states.count(s)} {_BADGES[s][0]}" for s in _BADGES if states.count(s))
    title = f"landscape · plan {plan.name}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_INDEX_CSS}</style></head>
<body>
<h1>Plan <code>{html.escape(plan.name)}</code></h1>
<div class="meta">{html.escape(plan.description) + "<br>" if plan.description else ""}
{len(plan.runs)} runs: {html.escape(counts)} · written {html.escape(_when({"timestamp": _now()}))} ·
landscape {html.escape(landscape.__version__)} · plan file <code>{html.escape(str(plan.path))}</code></div>
<table>
<thead><tr><th>run</th><th>status</th><th>duration</th><th>results</th><th>figure</th></tr></thead>
<tbody>
{"".join(row for _, row in rows)}
</tbody></table>
</body></html>
"""
    return write_atomic(plan_dir / "index.html", page)


def _index_row(
    run: Run, run_dir: Path, result: RunResult | None, library: str, pending: bool
) -> tuple[str, str]:
    """The state shown for a run and its table row.

    The row shows the last good report (numbers, figure, links); a failed or interrupted latest
    attempt adds its badge, its error and links to ``<run>/failed/``. With no good report, the row
    shows the attempt.
    """
    state = _index_state(run, run_dir, result, library, pending)
    attempt_dir = run_dir / FAILED_DIR
    attempt = read_run_record(attempt_dir)
    has_attempt = attempt is not None and attempt.get("status") in _UNFINISHED
    has_good = _is_report(run_dir)
    shown_dir = attempt_dir if has_attempt and not has_good else run_dir
    shown = read_run_record(shown_dir) or {}
    error = result.error if result is not None and result.status in _UNFINISHED else None
    if state in _UNFINISHED and not error:
        error = (attempt if has_attempt else shown).get("error")

    name = html.escape(run.name)
    href = html.escape(shown_dir.relative_to(run_dir.parent).as_posix())
    link = f'<a href="{href}/report.html">{name}</a>'
    first = f"<b>{link if (shown_dir / 'report.html').is_file() else name}</b>"
    first += f"<div class='small'>{html.escape(run.notebook.name)}</div>"
    used = shown.get("parameters", run.parameters)  # what produced the results shown
    if used:
        first += f"<div class='small'>{html.escape(json.dumps(used, default=str))}</div>"
    if used != to_json(run.parameters):
        now = html.escape(json.dumps(run.parameters, default=str))
        first += f"<div class='small'>plan now: {now}</div>"
    links = _file_links(href, shown_dir, ("notebook.ipynb",))
    if has_attempt and has_good:
        kind = html.escape(str(attempt["status"]))  # type: ignore[index]
        files = _file_links(f"{name}/{FAILED_DIR}", attempt_dir, ("notebook.ipynb", "report.html"))
        links += [f"{kind} attempt: {' · '.join(files)}"] if files else []
    first += f"<div class='small'>{' · '.join(links)}</div>" if links else ""

    label, colour = _BADGES[state]
    status = f'<span class="badge" style="background:{colour}">{html.escape(label)}</span>'
    if _when(shown):
        status += f"<div class='small'>{_when(shown)}</div>"
    if has_good and state in _UNFINISHED:
        status += "<div class='small'>showing the last good report</div>"
    duration = shown.get("duration")
    duration = f"{duration:.1f} s" if isinstance(duration, int | float) else "–"
    numbers = _numbers_cell(_read_json(shown_dir / "results.json") or {})
    if error:
        numbers += f'<pre class="error">{html.escape(str(error))}</pre>'
    thumb = ""
    if (shown_dir / "thumb.png").is_file():
        image = f'<img src="{href}/thumb.png" alt="first figure of {name}" loading="lazy">'
        thumb = f'<a href="{href}/report.html">{image}</a>'
    row = (
        f"<tr id='{name}'><td>{first}</td><td>{status}</td><td>{duration}</td>"
        f"<td class='num'>{numbers}</td><td class='thumb'>{thumb}</td></tr>\n"
    )
    return state, row


def _index_state(
    run: Run, run_dir: Path, result: RunResult | None, library: str, pending: bool
) -> str:
    """The key of :data:`_BADGES` for a run: this call's outcome, else its state on disk."""
    if pending:
        return "pending"
    if result is not None and result.status in _UNFINISHED:
        return result.status  # what happened now, even where nothing could be written
    if not run.notebook.is_file():
        return "missing"
    state = run_state(run, run_dir, fingerprint(run, library))
    if state == "up to date":
        return "succeeded" if result is not None and result.status == "succeeded" else "cached"
    return state


def _file_links(href: str, folder: Path, files: Iterable[str]) -> list[str]:
    return [f'<a href="{href}/{f}">{f}</a>' for f in files if (folder / f).is_file()]


def _numbers_cell(results: Mapping[str, Any]) -> str:
    pairs = flatten_results(results)
    lines = [f"<b>{html.escape(k)}</b> = {html.escape(v)}" for k, v in pairs]
    shown = "<br>".join(lines[:_INDEX_NUMBERS])
    if len(lines) > _INDEX_NUMBERS:
        rest = "<br>".join(lines[_INDEX_NUMBERS:])
        shown += f"<details><summary>{len(lines) - _INDEX_NUMBERS} more</summary>{rest}</details>"
    return shown


# ----------------------------------------------------------------------------------------------
# Listing


def describe_plan(
    plan_path: str | os.PathLike[str], output_root: str | os.PathLike[str] | None = None
) -> str:
    """Plain text for ``landscape list``: each run's name, notebook, parameters and state."""
    plan = load_plan(plan_path)
    plan_dir = plan_output_dir(plan, output_root)
    library = library_fingerprint()
    lines = [f"Plan {plan.name} ({plan.path}): {len(plan.runs)} run(s), reports in {plan_dir}"]
    width = max(len(run.name) for run in plan.runs)
    for run in plan.runs:
        run_dir = plan_dir / run.name
        state = run_state(run, run_dir, fingerprint(run, library))
        stored = read_run_record(run_dir / FAILED_DIR) if state in _UNFINISHED else None
        stored = stored or read_run_record(run_dir) or {}
        when = f" ({_when(stored)})" if _when(stored) else ""
        params = json.dumps(run.parameters, default=str)
        lines.append(
            f"  {run.name:<{width}}  {state:<11}{when}  {_relative(run.notebook)}  {params}"
        )
        if state in _UNFINISHED and stored.get("error"):
            lines.append(f"  {'':<{width}}  {str(stored['error']).splitlines()[0]}")
        if state == "incomplete":
            lines.append(f"  {'':<{width}}  {incomplete_reason(run_dir)}")
    return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

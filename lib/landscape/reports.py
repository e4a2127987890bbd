"""Plans, runs and reports: execute notebooks with papermill, render them, and summarise a plan.

A *plan* is a YAML file naming notebooks to run and the parameters to give them (§5 of the design).
:func:`run_plan` executes each run into ``<output_root>/<plan>/<run>/notebook.ipynb``, renders
``report.html`` beside it, keeps the notebook's ``results.json`` and a ``run.json`` describing the
run, skips runs whose notebook, parameters and library code are unchanged, and writes
``<output_root>/<plan>/index.html``. Notebooks call :func:`record` as their last step to store their
headline numbers. Every report file is written atomically (temporary file, then ``os.replace``).
Nothing here computes mathematics; figures live in :mod:`landscape.plots`.

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
import datetime as _dt
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

import landscape

Status = Literal["succeeded", "failed", "skipped"]

#: Environment variable that :func:`record` and :func:`resolve_output_dir` read when no folder is given.
OUTPUT_DIR_ENV = "LANDSCAPE_OUTPUT_DIR"
#: Kernel every notebook runs on (installed by ``make install``).
KERNEL_NAME = "python3"
#: Parameter the runner injects (the run folder); plans may not set it.
RESERVED_PARAMETER = "output_dir"

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLAN_KEYS = frozenset({"name", "description", "defaults", "runs"})
_RUN_KEYS = frozenset({"name", "description", "notebook", "parameters"})
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRACEBACK_LINES = 20
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
    declared = notebook_parameters(notebook)
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
        ValueError: if the file is not a notebook or its parameters cell is not valid Python.
    """
    path = Path(notebook)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = nb["cells"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"notebook {path}: cannot be read as a notebook ({exc}).") from None
    names: set[str] = set()
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or "parameters" not in tags:
            continue
        source = cell.get("source", "")
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


# ----------------------------------------------------------------------------------------------
# Where reports go, fingerprints, run status on disk


def plan_output_dir(plan: Plan, output_root: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding a plan's run folders and ``index.html``.

    With ``output_root=None``: a plan stored as ``<root>/reports/plans/<file>.yaml`` reports to
    ``<root>/reports/<plan name>/``; any other plan to ``./reports/<plan name>/``.
    """
    if output_root is None:
        plans_dir = plan.path.parent
        if plans_dir.name == "plans" and plans_dir.parent.name == "reports":
            output_root = plans_dir.parent
        else:
            output_root = Path.cwd() / "reports"
    return Path(output_root).expanduser().resolve() / plan.name


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
    """Where a run stands on disk: "up to date", "out of date", "failed" or "missing"."""
    stored = read_run_record(run_dir)
    if stored is None:
        return "missing"
    if stored.get("status") == "failed":
        return "failed"
    complete = (run_dir / "notebook.ipynb").is_file() and (run_dir / "report.html").is_file()
    if stored.get("status") == "succeeded" and stored.get("fingerprint") == current and complete:
        return "up to date"
    return "out of date"


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
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
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


def to_json(value: Any, name: str = "value") -> Any:
    """Convert a value to plain JSON types.

    numpy scalars and arrays and torch tensors become floats, ints, bools and (nested) lists;
    tuples become lists; dataclasses become dicts of their fields; paths become strings. Non-finite
    floats become the *strings* ``"nan"``, ``"inf"`` and ``"-inf"`` (JSON has no such numbers;
    ``float()`` reads the strings back).

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
        number = float(value)
        if math.isfinite(number):
            return number
        return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
    if isinstance(value, np.ndarray | np.generic):
        return to_json(value.tolist(), name)
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return to_json(value.detach().cpu().tolist(), name)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): to_json(item, f"{name}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item, f"{name}[{i}]") for i, item in enumerate(value)]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), f"{name}.{f.name}") for f in fields(value)}
    raise ValueError(f"{name} of type {type(value).__name__} cannot be written to results.json.")


def record(output_dir: str | os.PathLike[str] | None = None, **numbers: Any) -> dict[str, Any]:
    """Merge headline numbers into ``<output_dir>/results.json`` (the last step of a notebook).

    Values are converted by :func:`to_json` (NaN and ±inf become the strings "nan", "inf",
    "-inf"). Keys already in the file and not given here are kept. The file is written atomically.

    Args:
        output_dir: the run folder the runner injected; None uses :func:`resolve_output_dir`.
        **numbers: the numbers to record, e.g. ``alpha=1.98, alpha_ci=(1.9, 2.05)``.

    Returns:
        The whole content of results.json after the merge.

    Example:
        >>> import tempfile
        >>> record(tempfile.mkdtemp(), alpha=np.float64(2.0), delta=np.array([1.0, np.inf]))
        {'alpha': 2.0, 'delta': [1.0, 'inf']}
    """
    directory = resolve_output_dir(output_dir)
    path = directory / "results.json"
    converted = {key: to_json(value, key) for key, value in numbers.items()}
    existing = _read_json(path)
    if existing is None and path.exists():
        warnings.warn(f"{path} is not a JSON object; starting it afresh.", stacklevel=2)
    merged = {**(existing or {}), **converted}
    write_atomic(path, json.dumps(merged, indent=2, allow_nan=False) + "\n")
    return merged


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

    Each run executes into ``<plan folder>/<run>/notebook.ipynb`` (see :func:`plan_output_dir`),
    with the kernel started in the notebook's folder and ``output_dir`` set to the run folder; then
    ``report.html`` and ``thumb.png`` (the first figure) are rendered and ``run.json`` is written.
    A run that fails is marked failed and the others go on; its partial notebook is kept.

    Args:
        plan_path: the plan's YAML file.
        only: names of the runs to consider (default: all).
        force: execute even the runs that are up to date.
        jobs: how many runs execute at the same time.
        output_root: folder holding the plan folders (default: see :func:`plan_output_dir`).

    Returns:
        One :class:`RunResult` per considered run, in plan order.

    Raises:
        ValueError: for an invalid plan, an unknown name in ``only`` or ``jobs`` < 1.
    """
    from landscape.checks import check_int  # imports torch: kept out of notebooks' `record`

    plan = load_plan(plan_path)
    jobs = check_int("jobs", jobs, low=1)
    selected = _select(plan, only)
    plan_dir = plan_output_dir(plan, output_root)
    library = library_fingerprint()
    prints = threading.Lock()
    index = _Index(plan, plan_dir, library, [run.name for run in selected])

    def say(message: str) -> None:
        with prints:
            print(message, flush=True)

    def one(position: int, run: Run) -> RunResult:
        tag = f"[{position}/{len(selected)}] {run.name}"
        run_dir = plan_dir / run.name
        current = fingerprint(run, library)
        if not force and run_state(run, run_dir, current) == "up to date":
            say(f"{tag}: skipped (up to date)")
            result = RunResult(run.name, "skipped", 0.0, run_dir)
        else:
            say(f"{tag}: running {run.notebook.name} -> {run_dir}")
            result = execute_run(plan, run, run_dir, current)
            say(f"{tag}: {result.status} in {result.duration:.1f} s" + _first_line(result.error))
        index.update(result)
        return result

    say(f"Plan {plan.name}: {len(selected)} run(s), {jobs} at a time, reports in {plan_dir}")
    problem = kernel_problem()
    if problem:
        say(f"warning: {problem}")
    index.write()
    if jobs == 1 or len(selected) == 1:
        results = [one(i, run) for i, run in enumerate(selected, 1)]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, i, run) for i, run in enumerate(selected, 1)]
            try:
                results = [future.result() for future in futures]
            except BaseException:  # Ctrl-C or a refused folder: start nothing new
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    index.write()
    say(summary_table(plan, results))
    return results


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


def execute_run(plan: Plan, run: Run, run_dir: Path, current: str) -> RunResult:
    """Execute one run now (no up-to-date check) and write its report files.

    Args:
        plan: the plan the run belongs to (for the report header).
        run: the run.
        run_dir: its folder; earlier outputs there are removed first.
        current: the run's :func:`fingerprint`, stored in run.json.

    Returns:
        The run's result; failures are caught and described, never raised.
    """
    import papermill

    _clear_run_dir(run_dir)
    notebook_out = run_dir / "notebook.ipynb"
    started = _now()
    start = time.perf_counter()
    error = None
    try:
        papermill.execute_notebook(
            str(run.notebook),
            str(notebook_out),
            parameters={**run.parameters, RESERVED_PARAMETER: str(run_dir)},
            kernel_name=KERNEL_NAME,
            progress_bar={"desc": run.name},
            log_output=False,
            # ipykernel logs a TCP-encryption warning at every start and noise at shutdown.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            # The kernel's working directory, set without os.chdir (which --jobs threads would share).
            resources={"metadata": {"path": str(run.notebook.parent)}},
        )
    except Exception as exc:  # a failing run must not stop the others
        error = describe_error(exc)
    status: Status = "failed" if error else "succeeded"
    info = {
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
    if notebook_out.is_file():
        try:
            _write_thumbnail(notebook_out, run_dir / "thumb.png")
            render_report(notebook_out, run_dir / "report.html", info)
        except Exception as exc:
            info["status"] = status = "failed"
            note = f"Rendering the report failed: {describe_error(exc)}"
            info["error"] = f"{error}\n\n{note}" if error else note
    info["duration"] = round(time.perf_counter() - start, 3)
    write_atomic(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
    return RunResult(run.name, status, info["duration"], run_dir, info["error"])


def _clear_run_dir(run_dir: Path) -> None:
    """Remove a run folder's earlier outputs; refuse a non-empty folder that is not a run folder."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not (run_dir / "run.json").is_file() and not (run_dir / "notebook.ipynb").is_file():
            raise ValueError(
                f"output folder {run_dir} exists and is not a report folder (no run.json); "
                "choose another output_root or remove it."
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


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
    counts = {s: sum(r.status == s for r in results) for s in ("succeeded", "failed", "skipped")}
    total = sum(r.duration for r in results)
    width = max([len(r.name) for r in results] + [3])
    lines = [
        f"\nPlan {plan.name}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['skipped']} skipped (up to date); {total:.1f} s",
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
<a href="../index.html">&larr; plan {{ run.plan | e }}</a> &middot; run <b>{{ run.name | e }}</b>
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
) -> Path:
    """Render an executed notebook to a self-contained HTML page (figures inline, code folded).

    Code cells are folded into ``<details>`` ("code", "parameters", "injected parameters"), except
    the cell that raised, which is open. With ``run_record`` (the content of run.json) a banner
    names the plan, run, status, duration, parameters and error, with links to the index.

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
    resources = {"landscape_run": dict(run_record) if run_record else None}
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
    "out of date": ("out of date", "#ef6c00"),
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
    """The plan's index.html, rewritten (atomically, under a lock) as runs finish."""

    def __init__(self, plan: Plan, plan_dir: Path, library: str, selected: Iterable[str]) -> None:
        self.plan = plan
        self.plan_dir = plan_dir
        self.library = library
        self.selected = list(selected)
        self.results: dict[str, RunResult] = {}
        self.lock = threading.Lock()

    def update(self, result: RunResult) -> None:
        with self.lock:
            self.results[result.name] = result
            self._write()

    def write(self) -> Path:
        with self.lock:
            return self._write()

    def _write(self) -> Path:
        pending = [name for name in self.selected if name not in self.results]
        return write_index(self.plan, self.plan_dir, self.results, self.library, pending)


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
    """The state shown for a run and its table row."""
    stored = read_run_record(run_dir) or {}
    state = (
        run_state(run, run_dir, fingerprint(run, library)) if run.notebook.is_file() else "missing"
    )
    if state == "up to date":
        state = "succeeded" if result is not None and result.status == "succeeded" else "cached"
    if pending:
        state = "pending"
    label, colour = _BADGES[state]
    name = html.escape(run.name)
    link = (
        f'<a href="{name}/report.html">{name}</a>' if (run_dir / "report.html").is_file() else name
    )
    links = (
        [f'<a href="{name}/notebook.ipynb">notebook.ipynb</a>']
        if (run_dir / "notebook.ipynb").is_file()
        else []
    )
    used = stored.get("parameters", run.parameters)  # what produced the results shown
    first = f"<b>{link}</b><div class='small'>{html.escape(run.notebook.name)}</div>"
    first += (
        f"<div class='small'>{html.escape(json.dumps(used, default=str))}</div>" if used else ""
    )
    if used != to_json(run.parameters):
        now = html.escape(json.dumps(run.parameters, default=str))
        first += f"<div class='small'>plan now: {now}</div>"
    first += f"<div class='small'>{' · '.join(links)}</div>" if links else ""
    status = f'<span class="badge" style="background:{colour}">{html.escape(label)}</span>'
    if _when(stored):
        status += f"<div class='small'>{_when(stored)}</div>"
    duration = (
        f"{stored['duration']:.1f} s" if isinstance(stored.get("duration"), int | float) else "–"
    )
    numbers = _numbers_cell(_read_json(run_dir / "results.json") or {})
    if state == "failed" and stored.get("error"):
        numbers += f'<pre class="error">{html.escape(str(stored["error"]))}</pre>'
    thumb = ""
    if (run_dir / "thumb.png").is_file():
        thumb = f'<a href="{name}/report.html"><img src="{name}/thumb.png" alt="first figure of {name}" loading="lazy"></a>'
    row = (
        f"<tr id='{name}'><td>{first}</td><td>{status}</td><td>{duration}</td>"
        f"<td class='num'>{numbers}</td><td class='thumb'>{thumb}</td></tr>\n"
    )
    return state, row


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
        stored = read_run_record(run_dir) or {}
        when = f" ({_when(stored)})" if _when(stored) else ""
        params = json.dumps(run.parameters, default=str)
        lines.append(
            f"  {run.name:<{width}}  {state:<11}{when}  {_relative(run.notebook)}  {params}"
        )
        if state == "failed" and stored.get("error"):
            lines.append(f"  {'':<{width}}  {stored['error'].splitlines()[0]}")
    return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

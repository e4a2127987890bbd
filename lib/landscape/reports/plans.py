"""Plans: the YAML schema, its validation, and the data types of a plan, its runs and their results.

Here live :class:`Plan`, :class:`Run` and :class:`RunResult`, :func:`load_plan` (which checks
every key and names the file, the run and the key of any mistake), :func:`read_notebook`,
:func:`notebook_parameters` and :func:`notebook_defaults` (what a run may set, and the notebook's
default values), :func:`parse_overrides` and :func:`apply_overrides` (``landscape run --set
KEY=VALUE``), and :func:`plan_output_dir` (where a plan's reports go). Nothing here executes a
notebook, reads a report folder or writes a file: running is :mod:`landscape.reports.runner`, the
state of a run on disk :mod:`landscape.reports.records`.

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

Overrides (``--set epochs=1 --set 'sigmas=[0.1]'``) are parsed as YAML and replace a parameter in
every selected run whose notebook declares it, after the defaults and the run's own parameters;
they are part of each run's parameters, and so of its fingerprint.
"""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "NAME_PATTERN",
    "RESERVED_PARAMETER",
    "Plan",
    "Run",
    "RunResult",
    "Status",
    "apply_overrides",
    "load_plan",
    "notebook_defaults",
    "notebook_parameters",
    "parse_overrides",
    "plan_output_dir",
    "read_notebook",
]

Status = Literal["succeeded", "failed", "skipped", "interrupted"]

#: Parameter the runner injects (the run folder); plans may not set it.
RESERVED_PARAMETER = "output_dir"
#: What a plan or run name may be: it becomes a folder name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, reading ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``; 1.2 does not)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"""
        r"""|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""
    ),
    list("-+0123456789."),
)

_PLAN_KEYS = frozenset({"name", "description", "defaults", "runs"})
_RUN_KEYS = frozenset({"name", "description", "notebook", "parameters"})


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
    """What happened to one run in one call of :func:`~landscape.reports.run_plan`.

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
        content = yaml.load(plan_path.read_text(encoding="utf-8"), Loader=_Loader)
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
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
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
    """Names assigned in a notebook's cells tagged ``parameters`` (empty if it has none).

    The cells are parsed as Python, not matched line by line as ``papermill.inspect_notebook``
    does: papermill skips any line holding a second "=" (``widths = dict(a=1)``, or a comment such
    as ``# k >= 2``), reads only the first tagged cell and accepts a cell that does not parse.
    Their values are :func:`notebook_defaults`.

    Args:
        notebook: path of an ``.ipynb`` file.

    Raises:
        ValueError: if the file is not a notebook (see :func:`read_notebook`) or its parameters
            cell is not valid Python.
    """
    names: set[str] = set()
    for _, tree in _parameter_cells(notebook):
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            else:
                continue
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return frozenset(names)


def notebook_defaults(
    notebook: str | os.PathLike[str], *, non_literal: Literal["raise", "source"] = "raise"
) -> dict[str, Any]:
    """Name → default value of each parameter a notebook declares, in the order of its cells.

    The values are those of the assignments ``name = value`` (also ``a = b = value`` and
    ``name: type = value``) in the notebook's code cells tagged ``parameters``, as
    :func:`notebook_parameters` finds them; each value is evaluated by ``ast.literal_eval``, so a
    value may span several lines but is never executed, and a name assigned twice keeps its last
    value. A notebook without a parameters cell gives ``{}``. The reserved ``output_dir`` is
    included.

    Args:
        notebook: path of an ``.ipynb`` file.
        non_literal: what a value that is not a Python literal (``2 ** 10``, ``range(3)``) or an
            assignment of another form (``a, b = 1, 2``, ``x += 1``) does: ``"raise"`` a
            ``ValueError``; ``"source"``: the value is returned as its source text and the other
            forms are left out (for display, as a run's report does).

    Raises:
        ValueError: if the file is not a notebook (see :func:`read_notebook`), its parameters cell
            is not valid Python, ``non_literal`` is not one of its values, or (``"raise"``) a
            value is not a literal.

    Example:
        >>> defaults = notebook_defaults("notebooks/01_theorem.ipynb")  # from the repository root
        >>> defaults["sigmas"], defaults["model_cfg"], defaults["output_dir"]
        ([0.01, 0.1, 1.0], {'depth': 2, 'width': 32}, None)
    """
    if non_literal not in ("raise", "source"):
        raise ValueError(f"non_literal={non_literal!r}; expected 'raise' or 'source'.")
    values: dict[str, Any] = {}
    for source, tree in _parameter_cells(notebook):
        for node in tree.body:
            if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                names = [t.id for t in node.targets]  # type: ignore[attr-defined]
                value = node.value
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.value is not None
            ):
                names, value = [node.target.id], node.value
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                if non_literal == "raise":
                    raise ValueError(
                        f"notebook {notebook}: parameters cell, line {node.lineno}: "
                        f"{ast.get_source_segment(source, node)!r} is not an assignment "
                        "'name = value'."
                    )
                continue
            else:
                continue
            try:
                evaluated = ast.literal_eval(value)
            except (ValueError, TypeError):  # not a literal; TypeError: {[1]: 2}
                text = ast.get_source_segment(source, value) or "…"
                if non_literal == "raise":
                    raise ValueError(
                        f"notebook {notebook}: parameters cell, line {node.lineno}: the value "
                        f"of {', '.join(names)} ({text!r}) is not a Python literal."
                    ) from None
                evaluated = text
            values.update((name, evaluated) for name in names)
    return values


def _parameter_cells(notebook: str | os.PathLike[str]) -> Iterator[tuple[str, ast.Module]]:
    """The source and syntax tree of each code cell tagged ``parameters``, in order.

    Raises:
        ValueError: if the file is not a notebook (see :func:`read_notebook`) or a parameters
            cell is not valid Python.
    """
    path = Path(notebook)
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
        yield source, tree


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


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings (``landscape run --set``); each VALUE is read as YAML.

    Args:
        items: the strings, in order; a key given twice keeps its last value.

    Returns:
        The overrides by parameter name.

    Raises:
        ValueError: naming the item, for a missing ``=``, a key that is not a Python identifier or
            is ``output_dir``, or a VALUE that is not valid YAML.

    Example:
        >>> parse_overrides(["epochs=2", "lr=3e-4", "sigmas=[0.1, 0.01]", "device=cpu", "tag="])
        {'epochs': 2, 'lr': 0.0003, 'sigmas': [0.1, 0.01], 'device': 'cpu', 'tag': None}
    """
    if isinstance(items, str):
        items = [items]
    overrides: dict[str, Any] = {}
    for item in items:
        key, equals, text = str(item).partition("=")
        key = key.strip()
        if not equals:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE (VALUE is YAML, e.g. epochs=2).")
        if not key.isidentifier():
            raise ValueError(f"--set {item!r}: {key!r} is not a parameter name.")
        if key == RESERVED_PARAMETER:
            raise ValueError(
                f"--set {item!r}: {RESERVED_PARAMETER!r} is set by the runner (the run folder)."
            )
        try:
            overrides[key] = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({reason}).") from None
    return overrides


def apply_overrides(runs: Sequence[Run], overrides: Mapping[str, Any] | None) -> list[Run]:
    """The runs with ``overrides`` replacing the parameters their notebooks declare.

    Args:
        runs: the selected runs.
        overrides: parameter name to value (see :func:`parse_overrides`); None or empty: no change.

    Raises:
        ValueError: for a key that no notebook of ``runs`` declares, naming it and the notebooks,
            or for the reserved ``output_dir``.
    """
    if not overrides:
        return list(runs)
    if RESERVED_PARAMETER in overrides:
        raise ValueError(f"--set: {RESERVED_PARAMETER!r} is set by the runner (the run folder).")
    declared = {run.notebook: notebook_parameters(run.notebook) for run in runs}
    unknown = sorted(key for key in overrides if not any(key in d for d in declared.values()))
    if unknown:
        names = ", ".join(sorted({notebook.name for notebook in declared}))
        raise ValueError(
            f"--set: {', '.join(map(repr, unknown))} is not a parameter of any selected run's "
            f"notebook ({names}); check the spelling, or --only."
        )
    return [
        replace(
            run,
            parameters={
                **run.parameters,
                **{k: v for k, v in overrides.items() if k in declared[run.notebook]},
            },
        )
        for run in runs
    ]


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

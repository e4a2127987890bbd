"""Run folders on disk: fingerprints, run.json records, and whether a report is complete.

Here live :func:`fingerprint` and :func:`library_fingerprint` (what determines a run's outputs),
:func:`run_state` and :func:`incomplete_reason` ("up to date" means the folder holds exactly the
files its run.json records, unchanged and parsable), the helpers that read a run folder, and
:func:`describe_plan` (the text of ``landscape list``). Everything here only reads: executing is
:mod:`landscape.reports.worker`, staging and replacing run folders
:mod:`landscape.reports.storing`, the HTML index :mod:`landscape.reports.render`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import landscape
from landscape.files import file_record
from landscape.reports.plans import Run, apply_overrides, load_plan, plan_output_dir
from landscape.reports.results import read_json

__all__ = [
    "FAILED_DIR",
    "RUN_RECORD",
    "UNFINISHED",
    "describe_plan",
    "fingerprint",
    "format_when",
    "incomplete_reason",
    "is_report",
    "library_fingerprint",
    "now",
    "read_run_record",
    "report_files",
    "run_state",
    "unparsable",
]

#: A run folder's record: status, fingerprint, and every file of the report with size and SHA-256.
RUN_RECORD = "run.json"
#: Sub-folder of a run folder holding its latest failed or interrupted attempt.
FAILED_DIR = "failed"
#: The statuses of an attempt that did not finish: kept in ``<run>/failed/``.
UNFINISHED = ("failed", "interrupted")


def library_fingerprint() -> str:
    """sha256 over the names and contents of the library's source files and report templates."""
    digest = hashlib.sha256()
    package = Path(landscape.__file__).resolve().parent
    sources = [*package.rglob("*.py"), *package.rglob("*.j2")]
    for source in sorted(sources):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(b"\0")
        digest.update(source.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def fingerprint(run: Run, library: str | None = None) -> str:
    """sha256 of what determines a run's outputs.

    The notebook's bytes, the JSON of its merged parameters (sorted keys; ``--set`` overrides
    included), ``landscape.__version__``
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
    return read_json(Path(run_dir) / RUN_RECORD)


def run_state(run: Run, run_dir: Path, current: str) -> str:
    """Where a run stands on disk.

    One of "up to date" (its report is complete: :func:`incomplete_reason` finds nothing, and its
    fingerprint is ``current``), "out of date" (another fingerprint), "incomplete" (a file of the
    report is missing, changed, unexpected or unparsable), "failed" or "interrupted" (the latest
    attempt, kept in ``<run>/failed/``), or "missing" (never run).
    """
    attempt = read_run_record(run_dir / FAILED_DIR)
    if attempt is not None and attempt.get("status") in UNFINISHED:
        return str(attempt["status"])
    stored = read_run_record(run_dir)
    if stored is None:
        return "missing"
    if stored.get("status") in UNFINISHED:  # the layout before failed/ existed
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
            changed = not isinstance(entry, dict) or file_record(run_dir / name) != entry
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if changed:
            return f"{name} has changed since the run (size or SHA-256)"
    extra = sorted(present - set(recorded))
    if extra:
        return f"{extra[0]} was not written by the run"
    return unparsable(run_dir)


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


def unparsable(folder: Path) -> str | None:
    """The first of notebook.ipynb and results.json in ``folder`` that is not a JSON object."""
    for name in ("notebook.ipynb", "results.json"):
        path = folder / name
        if path.exists() and read_json(path) is None:
            return f"{name} is not valid JSON (truncated or damaged)"
    return None


def is_report(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a report of a run that succeeded."""
    stored = read_run_record(run_dir)
    return stored is not None and stored.get("status") == "succeeded"


def now() -> str:
    """The local time as an ISO timestamp with its offset, to the second (as run.json stores it)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def format_when(stored: Mapping[str, Any]) -> str:
    """run.json's ISO timestamp as "YYYY-MM-DD HH:MM" ("" when there is none)."""
    try:
        return _dt.datetime.fromisoformat(str(stored["timestamp"])).strftime("%Y-%m-%d %H:%M")
    except (KeyError, ValueError):
        return ""


def describe_plan(
    plan_path: str | os.PathLike[str],
    output_root: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Plain text for ``landscape list``: each run's name, notebook, parameters and state.

    With ``overrides`` (``--set``), the runs' parameters and states are those that
    ``landscape run`` with the same overrides would see.
    """
    plan = load_plan(plan_path)
    plan_dir = plan_output_dir(plan, output_root)
    library = library_fingerprint()
    runs = apply_overrides(plan.runs, overrides)
    lines = [f"Plan {plan.name} ({plan.path}): {len(runs)} run(s), reports in {plan_dir}"]
    width = max(len(run.name) for run in runs)
    for run in runs:
        run_dir = plan_dir / run.name
        state = run_state(run, run_dir, fingerprint(run, library))
        stored = read_run_record(run_dir / FAILED_DIR) if state in UNFINISHED else None
        stored = stored or read_run_record(run_dir) or {}
        when = f" ({format_when(stored)})" if format_when(stored) else ""
        params = json.dumps(run.parameters, default=str)
        lines.append(
            f"  {run.name:<{width}}  {state:<11}{when}  {_relative(run.notebook)}  {params}"
        )
        if state in UNFINISHED and stored.get("error"):
            lines.append(f"  {'':<{width}}  {str(stored['error']).splitlines()[0]}")
        if state == "incomplete":
            lines.append(f"  {'':<{width}}  {incomplete_reason(run_dir)}")
    return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

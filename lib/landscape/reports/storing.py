"""Storing a run's files in its plan folder: staging, atomic replacement, failed/, foreign files.

Here live :func:`store_outcome` (the files a worker returned are written into
``<plan folder>/.staging/<run>+<pid>/``, recorded in run.json, and the folder is renamed into
place: a succeeded run replaces ``<run>/``, a failed or interrupted one goes to ``<run>/failed/``
beside the last good report), :func:`refuse_foreign` (a run folder holding files the runner did
not write is never touched), :func:`recover_staging` (tidying after a runner that was killed) and
the small folder helpers. Nothing here executes a notebook (:mod:`landscape.reports.worker`) or
decides what to run (:mod:`landscape.reports.runner`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from landscape.files import cannot_write, file_record, write_atomic
from landscape.reports.plans import NAME_PATTERN, RunResult
from landscape.reports.records import (
    FAILED_DIR,
    RUN_RECORD,
    is_report,
    read_run_record,
    report_files,
)
from landscape.reports.render import write_static
from landscape.reports.worker import RunOutcome

__all__ = [
    "STAGING_DIR",
    "RefusedFolder",
    "fresh_dir",
    "recover_staging",
    "refuse_foreign",
    "staging_dir",
    "store_outcome",
]

#: Folder inside a plan folder where runs are put together before they replace their report.
STAGING_DIR = ".staging"


class RefusedFolder(Exception):
    """A run folder the runner must not replace (it holds files the runner did not write)."""


def staging_dir(run_dir: Path) -> Path:
    """``<plan folder>/.staging/<run>+<pid>``: where this process puts a run's files together."""
    return run_dir.parent / STAGING_DIR / f"{run_dir.name}+{os.getpid()}"


def store_outcome(run_dir: Path, outcome: RunOutcome) -> RunResult:
    """Write a worker's files for a run into staging, record them in run.json, move them into place.

    A succeeded run replaces ``run_dir`` (the old folder renamed aside, the new one renamed in, the
    old one deleted); a failed or interrupted one goes to ``run_dir/failed/`` and the last good
    report stays. A full disk, a read-only folder or a folder holding foreign files fail the run
    with one line and leave ``run_dir`` as it was.

    Returns:
        The run's result, whose ``output_dir`` is where its files are now.
    """
    staging = staging_dir(run_dir)
    if outcome.record is None:  # the worker could not even write its own folder
        shutil.rmtree(staging, ignore_errors=True)
        return RunResult(outcome.name, "failed", outcome.duration, run_dir, outcome.error)
    try:
        refuse_foreign(run_dir)
        fresh_dir(staging)
        for name, data in sorted(outcome.files.items()):
            write_atomic(staging / _relative(name), data)
        record = dict(outcome.record)
        record["files"] = {name: file_record(staging / name) for name in report_files(staging)}
        if "report.html" in outcome.files:
            write_static(run_dir.parent)  # the MathJax copy the report loads
        write_atomic(staging / RUN_RECORD, json.dumps(record, indent=2) + "\n")
        where = _store(staging, run_dir, record["status"])
    except (OSError, RefusedFolder) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        error = cannot_write(exc, staging) if isinstance(exc, OSError) else str(exc)
        return RunResult(outcome.name, "failed", outcome.duration, run_dir, error)
    return RunResult(outcome.name, record["status"], outcome.duration, where, record["error"])


def _relative(name: str) -> str:
    """A file name the worker sent, checked to stay inside the run folder."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name == RUN_RECORD:
        raise RefusedFolder(f"the worker returned a file named {name!r}; nothing was stored.")
    return name


def fresh_dir(folder: Path) -> None:
    """Make ``folder`` an empty folder (its parents created)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _store(staging: Path, run_dir: Path, status: str) -> Path:
    """Move a finished staging folder into place; return where the run's files now are."""
    refuse_foreign(run_dir)  # files may have appeared while the run executed
    if status == "succeeded":
        _replace_dir(staging, run_dir)
        return run_dir
    if is_report(run_dir):  # keep the last good report; the attempt goes beside it
        _replace_dir(staging, run_dir / FAILED_DIR, aside=_aside(run_dir, "failed"))
    else:
        holder = _aside(run_dir, "new")
        fresh_dir(holder)
        os.rename(staging, holder / FAILED_DIR)
        _replace_dir(holder, run_dir)
    return run_dir / FAILED_DIR


def _replace_dir(new: Path, target: Path, aside: Path | None = None) -> None:
    """Put folder ``new`` at ``target``: rename the old one aside, rename ``new`` in, delete the old.

    A runner killed between the two renames leaves the old folder aside in ``.staging``; the next
    run of the plan puts it back (:func:`recover_staging`).
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


def recover_staging(plan_dir: Path) -> None:
    """Tidy ``.staging`` after a runner that was killed: restore a report left aside, drop the rest."""
    staging = plan_dir / STAGING_DIR
    if not staging.is_dir():
        return
    for entry in staging.iterdir():
        name, _, role = entry.name.partition("+")
        with contextlib.suppress(OSError):
            target = plan_dir / name
            if role == "previous" and NAME_PATTERN.match(name) and not target.exists():
                os.rename(entry, target)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def refuse_foreign(run_dir: Path) -> None:
    """Raise :class:`RefusedFolder` if the run folder holds files the runner did not write."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if not run_dir.is_dir() or run_dir.is_symlink():
        raise RefusedFolder(
            f"{run_dir} is not a run folder (a file or link); it was left as it is: remove it "
            "or choose another output root."
        )
    foreign = _foreign_files(run_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise RefusedFolder(
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

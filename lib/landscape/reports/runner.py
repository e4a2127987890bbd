"""Running a plan: the lock, the runs on threads, staging, and replacing a report only when complete.

Here live :func:`run_plan` (what ``landscape run`` does), :func:`execute_run` (one run: execute in
a staging folder, render, record its files in run.json, then rename into place), the plan
folder's lock, Ctrl-C handling, the tidying of a killed runner's staging folder and the printed
:func:`summary_table`. The notebook's own process is :mod:`landscape.reports.execute`, the HTML
:mod:`landscape.reports.render`, "up to date" :mod:`landscape.reports.records`. A finished report
is never lost; a plan folder looks like this::

    index.html              # one row per run: status, verdicts, headline, headline figure
    claims.html             # every claim of every run
    _static/mathjax/        # the MathJax copy the reports load (formulas offline)
    .lock, .lock.pid        # held while `landscape run` runs the plan; the holder's pid
    .staging/<run>+<pid>/   # a run executing; renamed to <run>/ only once it has finished
    <run>/                  # the last good report: notebook.ipynb, report.html, results.json,
                            # figures, and run.json recording each file's size and SHA-256
    <run>/failed/           # the latest attempt, when it failed or was interrupted (Ctrl-C)

A run folder holding files the runner did not write is never replaced: that run fails.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

import landscape
from landscape.files import cannot_write, file_record, write_atomic
from landscape.reports import records  # records.library_fingerprint is looked up when called
from landscape.reports.execute import describe_error, execute_notebook, kernel_problem
from landscape.reports.plans import (
    NAME_PATTERN,
    Plan,
    Run,
    RunResult,
    Status,
    load_plan,
    plan_output_dir,
)
from landscape.reports.records import (
    FAILED_DIR,
    RUN_RECORD,
    fingerprint,
    is_report,
    now,
    read_run_record,
    report_files,
    run_state,
    unparsable,
)
from landscape.reports.render import LiveIndex, render_report, write_static, write_thumbnail
from landscape.reports.results import to_json

__all__ = [
    "LOCK_FILE",
    "STAGING_DIR",
    "PlanInterrupted",
    "PlanLockedError",
    "execute_run",
    "run_plan",
    "summary_table",
]

#: Folder inside a plan folder where runs execute before they replace their report.
STAGING_DIR = ".staging"
#: The plan folder's lock file; the holder's pid is written beside it (``.lock.pid``).
LOCK_FILE = ".lock"


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


def run_plan(
    plan_path: str | os.PathLike[str],
    only: Sequence[str] | None = None,
    force: bool = False,
    jobs: int = 1,
    output_root: str | os.PathLike[str] | None = None,
) -> list[RunResult]:
    """Execute a plan's runs with papermill, render their reports, and write the plan's index.

    Each run executes (see :func:`execute_run`) into a staging folder and, once finished, replaces
    ``<plan folder>/<run>/`` (see :func:`~landscape.reports.plan_output_dir`): notebook.ipynb,
    report.html, thumb.png (the headline figure), the notebook's results.json and figures, and
    run.json (whose ``duration`` is the notebook's execution time, as the report and the index
    show it; ``rendering`` the seconds rendering took). A run that fails is kept in ``<run>/failed/`` beside the last good report, and the
    others go on. The plan folder is locked while the plan runs (``.lock``; the holder's pid in
    ``.lock.pid``).

    Args:
        plan_path: the plan's YAML file.
        only: names of the runs to consider (default: all).
        force: execute even the runs that are up to date.
        jobs: how many runs execute at the same time.
        output_root: folder holding the plan folders (default: see ``plan_output_dir``).

    Returns:
        One :class:`~landscape.reports.RunResult` per considered run, in plan order.

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
    library = records.library_fingerprint()
    prints = threading.Lock()

    def say(message: str) -> None:
        with prints:
            print(message, flush=True)

    with _PlanLock(plan_dir) as lock:
        index = LiveIndex(plan, plan_dir, library, [run.name for run in selected], say)
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
        try:
            self.plan_dir.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as exc:
            self.problem = cannot_write(exc, self.plan_dir)
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
        current: the run's :func:`~landscape.reports.fingerprint`, stored in run.json.
        stop: when set (Ctrl-C), the notebook is stopped and the run is "interrupted".
        grace: seconds a stopped notebook gets to shut its kernel down before it is killed.

    Returns:
        The run's result, whose ``output_dir`` is where its files are; failures (a failing cell,
        a full disk, a refused folder) are described, never raised.
    """
    start = time.perf_counter()
    started = now()
    staging = run_dir.parent / STAGING_DIR / f"{run.name}+{os.getpid()}"
    try:
        _refuse_foreign(run_dir)
        _fresh_dir(staging)
        status, error = execute_notebook(run, staging, stop, grace)
        info = _finish_run(plan, run, staging, run_dir, status, error, current, started, start)
        where = _store(staging, run_dir, info["status"])
    except (OSError, _Refused) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        error = cannot_write(exc, staging) if isinstance(exc, OSError) else str(exc)
        return RunResult(run.name, "failed", round(time.perf_counter() - start, 3), run_dir, error)
    duration = round(time.perf_counter() - start, 3)  # executing and rendering
    return RunResult(run.name, info["status"], duration, where, info["error"])


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
        error = "papermill wrote no notebook" if not notebook.is_file() else unparsable(staging)
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
        "timestamp": now(),
        "version": landscape.__version__,
    }
    rendering = time.perf_counter()
    if notebook.is_file() and status != "interrupted":
        try:
            _retarget_output_dir(notebook, staging, final)
            write_thumbnail(notebook, staging / "thumb.png")
            write_static(run_dir.parent)  # the MathJax copy the report loads
            index_href = "../index.html" if status == "succeeded" else "../../index.html"
            render_report(notebook, staging / "report.html", info, index_href)
        except OSError:
            raise
        except Exception as exc:
            info["status"] = "failed"
            note = f"Rendering the report failed: {describe_error(exc)}"
            info["error"] = f"{error}\n\n{note}" if error else note
    # "duration" stays the notebook's execution time, the number the report's banner shows
    info["rendering"] = round(time.perf_counter() - rendering, 3)
    info["timestamp"] = now()
    info["files"] = {name: file_record(staging / name) for name in report_files(staging)}
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
    if is_report(run_dir):  # keep the last good report; the attempt goes beside it
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
            if role == "previous" and NAME_PATTERN.match(name) and not target.exists():
                os.rename(entry, target)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


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

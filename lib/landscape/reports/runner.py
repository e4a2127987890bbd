"""Running a plan: the lock, the runs as Dask tasks, and each report replaced only when complete.

Here live :func:`run_plan` (what ``landscape run`` does: decide which runs are up to date, submit
the others to a Dask cluster — a local one of ``jobs`` processes, or the scheduler at
``scheduler`` — and store each run's files as it finishes, updating the index), :func:`execute_run`
(one run in this process, without Dask), the plan folder's lock, Ctrl-C handling and the printed
:func:`summary_table`. A worker executes a run in its own temporary folder and returns the files
(:mod:`landscape.reports.worker`), Dask carries tasks and files (:mod:`landscape.reports.cluster`),
this process writes them (:mod:`landscape.reports.storing`); "up to date" is
:mod:`landscape.reports.records`, the HTML :mod:`landscape.reports.render`. A finished report is
never lost; a plan folder looks like this::

    index.html              # one row per run: status, verdicts, headline, headline figure
    claims.html             # every claim of every run
    _static/mathjax/        # the MathJax copy the reports load (formulas offline)
    .lock, .lock.pid        # held while `landscape run` runs the plan; the holder's pid
    .staging/<run>+<pid>/   # a run submitted; its files are written here when they come back,
                            # then the folder is renamed to <run>/
    <run>/                  # the last good report: notebook.ipynb, report.html, results.json,
                            # figures, and run.json recording each file's size and SHA-256
    <run>/failed/           # the latest attempt, when it failed or was interrupted (Ctrl-C)

A run folder holding files the runner did not write is never replaced: that run fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tqdm import tqdm

from landscape.files import cannot_write, write_atomic
from landscape.progress import bar
from landscape.reports import records  # records.library_fingerprint is looked up when called
from landscape.reports.execute import StopFlag, describe_error, kernel_problem
from landscape.reports.plans import (
    Plan,
    Run,
    RunResult,
    apply_overrides,
    load_plan,
    plan_output_dir,
)
from landscape.reports.records import fingerprint, run_state
from landscape.reports.render import LiveIndex
from landscape.reports.storing import (
    STAGING_DIR,
    RefusedFolder,
    fresh_dir,
    recover_staging,
    refuse_foreign,
    staging_dir,
    store_outcome,
)
from landscape.reports.worker import RunOutcome, RunTask, execute_task

__all__ = [
    "LOCK_FILE",
    "STAGING_DIR",
    "PlanInterrupted",
    "PlanLockedError",
    "execute_run",
    "run_plan",
    "summary_table",
]

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
    *,
    scheduler: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    grace: float = 10.0,
) -> list[RunResult]:
    """Execute a plan's runs with papermill on Dask workers, render their reports, write the index.

    Runs that are up to date are skipped (no cluster is started when every run is). The others
    are submitted as tasks to a Dask cluster: a ``LocalCluster`` of ``jobs`` worker processes, or
    the cluster whose scheduler is at ``scheduler``. Each executes on a worker in a temporary
    folder (see :func:`~landscape.reports.worker.execute_task`); its files come back and replace
    ``<plan folder>/<run>/`` (see :func:`~landscape.reports.plan_output_dir`): notebook.ipynb,
    report.html, thumb.png (the headline figure), the notebook's results.json and figures, and
    run.json (whose ``duration`` is the notebook's execution time, as the report and the index
    show it; ``rendering`` the seconds rendering took; ``host`` the machine it ran on). A run that
    fails is kept in ``<run>/failed/`` beside the last good report, and the others go on; a run
    whose worker dies is retried once on another. One line is printed per finished run, and a
    bar counts the runs on a terminal. The plan folder is locked while the plan runs (``.lock``;
    the holder's pid in ``.lock.pid``).

    Args:
        plan_path: the plan's YAML file.
        only: names of the runs to consider (default: all).
        force: execute even the runs that are up to date.
        jobs: worker processes of the local cluster (runs executed at the same time).
        output_root: folder holding the plan folders (default: see ``plan_output_dir``).
        scheduler: address of a Dask scheduler (``tcp://host:8786``) to run on instead.
        overrides: parameter values replacing the plan's in every selected run whose notebook
            declares them (``landscape run --set``; see
            :func:`~landscape.reports.plans.parse_overrides`); part of each run's fingerprint.
        grace: seconds a notebook stopped by Ctrl-C gets to shut its kernel down.

    Returns:
        One :class:`~landscape.reports.RunResult` per considered run, in plan order (on Ctrl-C,
        runs that never started are left out).

    Raises:
        ValueError: for an invalid plan, an unknown name in ``only``, an override no selected
            notebook declares, ``jobs`` < 1 (or ``jobs`` with ``scheduler``), or an output root
            that is a file.
        PlanLockedError: when another process is running the same plan folder.
        landscape.reports.cluster.SchedulerUnreachable: (a ``ConnectionError``) when no scheduler
            answers at ``scheduler`` within a few seconds.
        PlanInterrupted: on Ctrl-C, after the running runs were stopped and marked "interrupted"
            and the index was written (runs not started are left as they were).
    """
    from landscape.checks import check_int  # imports torch: kept out of notebooks' `record`

    plan = load_plan(plan_path)
    jobs = check_int("jobs", jobs, low=1)
    if scheduler is not None and jobs != 1:
        raise ValueError(
            f"jobs={jobs} sizes the local cluster; with scheduler={scheduler!r} the cluster's "
            "workers decide how many runs execute at once."
        )
    selected = apply_overrides(_select(plan, only), overrides)
    chosen = {run.name: run for run in selected}
    plan = replace(plan, runs=tuple(chosen.get(run.name, run) for run in plan.runs))
    plan_dir = plan_output_dir(plan, output_root)
    library = records.library_fingerprint()
    with _PlanLock(plan_dir) as lock:
        index = LiveIndex(plan, plan_dir, library, [run.name for run in selected], _say)
        where = f"on the Dask cluster at {scheduler}" if scheduler else f"{jobs} at a time"
        _say(f"Plan {plan.name}: {len(selected)} run(s), {where}, reports in {plan_dir}")
        if lock.problem:
            _say(f"warning: {lock.problem}; runs that need executing will fail.")
        else:
            recover_staging(plan_dir)
        problem = kernel_problem()
        if problem and scheduler is None:
            _say(f"warning: {problem}")
        plan_run = _PlanRun(plan, plan_dir, index, len(selected), grace)
        interrupted = False
        try:
            index.write()
            for position, run in enumerate(selected, 1):
                plan_run.triage(position, run, library, force, lock.problem)
            if plan_run.todo:
                interrupted = plan_run.execute(scheduler, jobs)
        except KeyboardInterrupt:  # before any run was submitted
            interrupted = True
        finally:
            index.settle()
            index.write()
        results = [plan_run.results[r.name] for r in selected if r.name in plan_run.results]
        _say(summary_table(plan, results))
    if interrupted:
        raise PlanInterrupted(results, plan_dir / "index.html")
    return results


_PRINTS = threading.Lock()


def _say(message: str) -> None:
    """Print one line (above the progress bar, if one is shown)."""
    with _PRINTS:
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


class _PlanRun:
    """The runs of one :func:`run_plan` call: which to execute, their results, the index."""

    def __init__(self, plan: Plan, plan_dir: Path, index: LiveIndex, total: int, grace: float):
        self.plan = plan
        self.plan_dir = plan_dir
        self.index = index
        self.total = total
        self.grace = grace
        self.results: dict[str, RunResult] = {}
        self.todo: list[tuple[str, RunTask]] = []
        self.tags: dict[str, str] = {}

    def triage(
        self, position: int, run: Run, library: str, force: bool, problem: str | None
    ) -> None:
        """Skip an up-to-date run, fail one that cannot be stored, or queue it for executing."""
        tag = self.tags[run.name] = f"[{position}/{self.total}] {run.name}"
        run_dir = self.plan_dir / run.name
        try:
            current = fingerprint(run, library)
            if not force and run_state(run, run_dir, current) == "up to date":
                _say(f"{tag}: skipped (up to date)")
                self.finish(RunResult(run.name, "skipped", 0.0, run_dir))
                return
            if problem:
                self.finish(RunResult(run.name, "failed", 0.0, run_dir, problem))
                return
            refuse_foreign(run_dir)  # before any kernel starts
            source = run.notebook.read_bytes()
        except RefusedFolder as exc:
            self.finish(RunResult(run.name, "failed", 0.0, run_dir, str(exc)))
            return
        except Exception as exc:  # one run's trouble never stops the plan
            self.finish(RunResult(run.name, "failed", 0.0, run_dir, describe_error(exc)))
            return
        task = RunTask(self.plan.name, run, source, run_dir, current, self.grace)
        self.todo.append((tag, task))

    def execute(self, scheduler: str | None, jobs: int) -> bool:
        """Submit the queued runs and store them as they finish; True if Ctrl-C came."""
        from landscape.reports import cluster  # imports distributed (a second): only when needed

        workers = min(jobs, len(self.todo))  # no idle processes to start
        with cluster.connect(scheduler, workers, say=_say) as session:
            progress = bar(
                total=len(self.todo),
                desc=f"plan {self.plan.name}",
                unit="run",
                enabled=sys.stderr.isatty(),
            )
            waiting = [t.run.name for _, t in self.todo if session.resources(t)]
            if waiting and not session.gpu_workers:
                _say(
                    f"warning: run(s) {', '.join(waiting)} ask for a GPU and no worker has the "
                    "resource GPU yet: they wait for one (start GPU workers with --resources GPU=1)."
                )
            try:
                for tag, task in self.todo:
                    gpu = " on a GPU worker" if session.resources(task) else ""
                    _say(f"{tag}: submitted {task.run.notebook.name}{gpu} -> {task.run_dir}")
                    self.reserve(task)
                    session.submit(task)
                for outcome in session.outcomes():
                    with _sigint_deferred():
                        self.store(outcome, remote=not session.local)
                        progress.update(1)
            except KeyboardInterrupt:
                with _sigint_ignored():  # the running notebooks are being stopped; wait for them
                    for outcome in session.stop(timeout=self.grace + 30):
                        self.store(outcome, remote=not session.local)
                return True
            finally:
                progress.close()
        return False

    def reserve(self, task: RunTask) -> None:
        """Create the run's staging folder (it shows the run is under way)."""
        with contextlib.suppress(OSError):  # storing will say what cannot be written
            fresh_dir(staging_dir(task.run_dir))

    def store(self, outcome: RunOutcome, remote: bool = False) -> None:
        """Write a finished run's files into place, print its line and update the index."""
        run_dir = self.plan_dir / outcome.name
        if outcome.status is None:  # never started (Ctrl-C): left as it was
            shutil.rmtree(staging_dir(run_dir), ignore_errors=True)
            return
        self.finish(store_outcome(run_dir, outcome), outcome.host if remote else "")

    def finish(self, result: RunResult, host: str = "") -> None:
        """Record a run's result: its line (unless skipped) and the index."""
        if result.status != "skipped":
            on = f" on {host}" if host else ""
            _say(
                f"{self.tags[result.name]}: {result.status} in {result.duration:.1f} s{on}"
                + _first_line(result.error)
            )
        self.results[result.name] = result
        self.index.update(result)


def execute_run(
    plan: Plan,
    run: Run,
    run_dir: Path,
    current: str,
    *,
    stop: StopFlag | None = None,
    grace: float = 10.0,
) -> RunResult:
    """Execute one run now, in this process (no Dask, no up-to-date check), and store its files.

    The same steps as on a worker (:func:`~landscape.reports.worker.execute_task`) and then as
    on the client (:func:`~landscape.reports.storing.store_outcome`): a run that succeeded
    replaces ``run_dir``; a failed or interrupted one goes to ``run_dir/failed/`` and the last
    good report stays. A ``run_dir`` holding files the runner did not write is never touched.

    Args:
        plan: the plan the run belongs to (for the report header).
        run: the run.
        run_dir: its folder.
        current: the run's :func:`~landscape.reports.fingerprint`, stored in run.json.
        stop: when set (Ctrl-C), the notebook is stopped and the run is "interrupted".
        grace: seconds a stopped notebook gets to shut its kernel down before it is killed.

    Returns:
        The run's result; failures (a failing cell, a full disk, a refused folder) are described,
        never raised.
    """
    try:
        refuse_foreign(run_dir)
    except RefusedFolder as exc:
        return RunResult(run.name, "failed", 0.0, run_dir, str(exc))
    task = RunTask(plan.name, run, run.notebook.read_bytes(), run_dir, current, grace)
    outcome = execute_task(task, stop)
    if outcome.status is None:
        return RunResult(run.name, "interrupted", 0.0, run_dir, "interrupted before it started")
    return store_outcome(run_dir, outcome)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back until the block is done (a run's files are being put into place)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


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

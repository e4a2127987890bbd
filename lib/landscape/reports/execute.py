"""Executing one notebook with papermill in its own process, so that Ctrl-C can stop it and its kernel.

Here live :func:`execute_notebook` (the runner's side: start the child, wait, stop it on request),
:func:`child_main` (the child's side: run papermill, describe a failure), :func:`describe_error`
(an exception as the few lines a report shows) and :func:`kernel_problem` (is the ``python3``
kernel this interpreter's?). It runs wherever a run executes (on a Dask worker, see
:mod:`landscape.reports.worker`). Nothing here knows about plans' folders, staging or run.json:
that is :mod:`landscape.reports.runner` and :mod:`landscape.reports.storing`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Protocol

import landscape
from landscape.reports.plans import RESERVED_PARAMETER, Run, Status

__all__ = [
    "KERNEL_NAME",
    "QUIET_KERNEL_ENV",
    "StopFlag",
    "child_main",
    "describe_error",
    "execute_notebook",
    "kernel_problem",
]

#: Kernel every notebook runs on (installed by ``make install``).
KERNEL_NAME = "python3"

#: Environment of the notebook's process (and so its kernel): tqdm bars are never drawn, so the
#: report records none. tqdm reads ``TQDM_<argument>`` as the argument's default; TQDM_DISABLE
#: would not do, since ``landscape.progress.bar`` passes ``disable`` itself, which wins.
QUIET_KERNEL_ENV = {"TQDM_DELAY": "1e9"}


class StopFlag(Protocol):
    """What tells a running notebook to stop: ``threading.Event`` is one."""

    def is_set(self) -> bool: ...


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TRACEBACK_LINES = 20
_KERNEL_HINT = f"python -m ipykernel install --sys-prefix --name {KERNEL_NAME}"
#: The signal that asks a notebook's process to stop (see :func:`_stop_quietly`).
_STOP_SIGNAL = getattr(signal, "SIGUSR1", signal.SIGINT)
_CHILD_COMMAND = (
    "import sys\n"
    "try:\n"
    "    from landscape.reports.execute import child_main\n"
    "except KeyboardInterrupt:\n"
    "    sys.exit(130)\n"
    "child_main()\n"
)


def execute_notebook(
    run: Run,
    staging: Path,
    stop: StopFlag | None,
    grace: float,
    *,
    cwd: Path | None = None,
) -> tuple[Status, str | None]:
    """Run papermill on ``run`` into ``staging/notebook.ipynb`` in a child process.

    The child gets its own session (a Ctrl-C at the terminal reaches only the runner, which stops
    it); it exits when the runner dies, and its kernel exits with it (ipykernel's parent poller).

    Args:
        run: the run; its parameters are injected with ``output_dir=staging``.
        staging: the folder the notebook and its files are written to.
        stop: when set (Ctrl-C), the notebook is stopped (anything with ``is_set()``: a
            ``threading.Event``, or the flag a Dask worker polls).
        grace: seconds a stopped notebook gets to shut its kernel down before it is killed.
        cwd: the kernel's working directory (default: the notebook's folder).

    Returns:
        ("succeeded", None), ("failed", description of the error) or ("interrupted", note).
    """
    error_file = staging.with_name(f"{staging.name}.error")
    error_file.unlink(missing_ok=True)
    cwd = cwd or run.notebook.parent
    spec = {
        "input": str(run.notebook),
        "output": str(staging / "notebook.ipynb"),
        "parameters": {**run.parameters, RESERVED_PARAMETER: str(staging)},
        "cwd": str(cwd),
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
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path, **QUIET_KERNEL_ENV},
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


def _wait_or_stop(process: subprocess.Popen, stop: StopFlag | None, grace: float) -> bool:
    """Wait for the child; if ``stop`` gets set first, stop it and return True."""
    while True:
        try:
            process.wait(timeout=0.2)
            return False
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                _stop_process(process, grace)
                return True


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


def child_main() -> None:
    """Body of the child process of :func:`execute_notebook` (the spec arrives pickled on stdin).

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
            progress_bar={"desc": spec["name"], "delay": 0},  # shown, whatever TQDM_DELAY says
            log_output=False,
            # ipykernel logs a TCP-encryption warning at every start and noise at shutdown.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            resources={"metadata": {"path": spec["cwd"]}},  # the kernel's working directory
        )
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.getppid() != spec["parent"]:  # the runner (or Dask worker) died: nobody to tell
            raise SystemExit(1) from None
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

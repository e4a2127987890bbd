"""One run where it executes: papermill into a private temporary folder, its report, its files returned.

Here live :class:`RunTask` (what the client sends a worker: the notebook's bytes, the run's
parameters, the folder its files will end up in), :class:`RunOutcome` (what comes back: the
status, the fields of run.json, and every file of the report as bytes) and :func:`execute_task`
(execute with papermill in a child process, render report.html and thumb.png, read the files back,
delete the temporary folder). A worker needs no filesystem in common with the client: nothing here
reads or writes the plan folder. Writing the files into place is :mod:`landscape.reports.runner`;
carrying tasks and outcomes between machines is :mod:`landscape.reports.cluster`.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import landscape
from landscape.files import cannot_write, write_atomic
from landscape.reports.execute import StopFlag, describe_error, execute_notebook
from landscape.reports.plans import RESERVED_PARAMETER, Run, Status
from landscape.reports.records import FAILED_DIR, now, report_files, unparsable
from landscape.reports.render import render_report, write_thumbnail
from landscape.reports.results import to_json

__all__ = ["NOTEBOOK", "RunOutcome", "RunTask", "execute_task", "retarget_paths"]

#: The executed notebook's name in a run folder.
NOTEBOOK = "notebook.ipynb"


@dataclass(frozen=True)
class RunTask:
    """One run, as a worker needs it (it pickles small: the notebook travels as bytes).

    Attributes:
        plan: the plan's name (for the report's banner).
        run: the run; ``run.notebook`` is the notebook's path on the client.
        source: the notebook's bytes, as fingerprinted on the client.
        run_dir: the run's folder on the client; the injected ``output_dir`` is made to name it
            (or its ``failed/``) in the stored notebook, wherever the run executed.
        fingerprint: the run's fingerprint, stored in run.json.
        grace: seconds a stopped notebook gets to shut its kernel down before it is killed.
    """

    plan: str
    run: Run
    source: bytes
    run_dir: Path
    fingerprint: str
    grace: float = 10.0


@dataclass(frozen=True)
class RunOutcome:
    """What a worker returns for a :class:`RunTask`.

    Attributes:
        name: the run's name.
        status: "succeeded", "failed" or "interrupted"; None when the run never started (Ctrl-C
            came first).
        error: what went wrong, or None.
        record: the content of run.json but its ``files`` (the client adds them once written);
            None when nothing can be stored (the worker could not write its temporary folder).
        files: every file of the report (relative path with "/", bytes), run.json aside.
        duration: seconds the worker spent executing and rendering.
        host: the name of the machine the run executed on.
    """

    name: str
    status: Status | None
    error: str | None = None
    record: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    duration: float = 0.0
    host: str = ""


def execute_task(
    task: RunTask, stop: StopFlag | None = None, workdir: str | Path | None = None
) -> RunOutcome:
    """Execute one run in a temporary folder and return its report's files.

    The notebook's bytes are written to ``<tmp>/source/``, papermill executes it into
    ``<tmp>/<run>/`` with ``output_dir`` injected as that folder, and report.html and thumb.png are
    rendered there; the kernel works in the notebook's folder on the client when this machine has
    it (an identical checkout), else beside the copy. A failing notebook, a failing render or a
    full disk make a "failed" outcome, never an exception.

    Args:
        task: the run.
        stop: when set (Ctrl-C on the client), the notebook is stopped and the outcome is
            "interrupted"; set before the run starts, nothing executes (status None).
        workdir: where the temporary folder goes (default: the system's temporary folder).
    """
    host = socket.gethostname()
    if stop is not None and stop.is_set():
        return RunOutcome(task.run.name, None, host=host)
    start = time.perf_counter()
    started = now()
    base = Path(tempfile.mkdtemp(prefix=f"landscape-{task.run.name}-", dir=workdir))
    out = base / task.run.name
    try:
        source = base / "source" / task.run.notebook.name
        source.parent.mkdir()
        source.write_bytes(task.source)
        out.mkdir()
        here = task.run.notebook.parent
        status, error = execute_notebook(
            replace(task.run, notebook=source),
            out,
            stop,
            task.grace,
            cwd=here if here.is_dir() else source.parent,
        )
        record = _render(task, out, source, status, error, started, start)
        record["host"] = host
        files = {name: (out / name).read_bytes() for name in report_files(out)}
    except OSError as exc:
        took = round(time.perf_counter() - start, 3)
        problem = cannot_write(exc, out)
        return RunOutcome(task.run.name, "failed", problem, None, {}, took, host)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    took = round(time.perf_counter() - start, 3)
    return RunOutcome(task.run.name, record["status"], record["error"], record, files, took, host)


def _render(
    task: RunTask,
    out: Path,
    source: Path,
    status: Status,
    error: str | None,
    started: str,
    start: float,
) -> dict[str, Any]:
    """Render report.html and thumb.png in ``out``; return run.json's fields but ``files``."""
    run = task.run
    notebook = out / NOTEBOOK
    if status == "succeeded":
        error = "papermill wrote no notebook" if not notebook.is_file() else unparsable(out)
        status = "failed" if error else status
    final = task.run_dir if status == "succeeded" else task.run_dir / FAILED_DIR
    info: dict[str, Any] = {
        "name": run.name,
        "plan": task.plan,
        "notebook": str(run.notebook),
        "parameters": to_json(run.parameters),
        "status": status,
        "duration": round(time.perf_counter() - start, 3),
        "error": error,
        "fingerprint": task.fingerprint,
        "started": started,
        "timestamp": now(),
        "version": landscape.__version__,
    }
    rendering = time.perf_counter()
    if notebook.is_file() and status != "interrupted":
        try:
            retarget_paths(notebook, {str(out): str(final), str(source): str(run.notebook)})
            write_thumbnail(notebook, out / "thumb.png")
            index_href = "../index.html" if status == "succeeded" else "../../index.html"
            render_report(notebook, out / "report.html", info, index_href)
        except OSError:
            raise
        except Exception as exc:
            info["status"] = "failed"
            note = f"Rendering the report failed: {describe_error(exc)}"
            info["error"] = f"{error}\n\n{note}" if error else note
    elif notebook.is_file():
        retarget_paths(notebook, {str(out): str(final), str(source): str(run.notebook)})
    # "duration" stays the notebook's execution time, the number the report's banner shows
    info["rendering"] = round(time.perf_counter() - rendering, 3)
    info["timestamp"] = now()
    return info


def retarget_paths(notebook: Path, moves: dict[str, str]) -> bool:
    """Make an executed notebook name where its files end up, not where it executed.

    In the cell of injected parameters and in papermill's metadata (``input_path``,
    ``output_path``, ``parameters.output_dir``), each key of ``moves`` (a path on the worker) is
    replaced by its value (the path on the client), so that the stored notebook does not depend on
    where it ran. The file is rewritten (atomically) only when something changed.

    Returns:
        Whether the notebook changed.
    """
    content = json.loads(notebook.read_text(encoding="utf-8"))

    def moved(text: str) -> str:
        for old, new in moves.items():
            text = text.replace(old, new)
        return text

    changed = False
    for cell in content.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"]
            text = "".join(source) if isinstance(source, list) else source
            cell["source"] = moved(text)
            changed = changed or cell["source"] != text
    papermill = content.get("metadata", {}).get("papermill", {})
    places = [(papermill, "input_path"), (papermill, "output_path")]
    places.append((papermill.get("parameters") or {}, RESERVED_PARAMETER))
    for holder, key in places:
        if isinstance(holder.get(key), str) and moved(holder[key]) != holder[key]:
            holder[key] = moved(holder[key])
            changed = True
    if changed:
        write_atomic(
            notebook, json.dumps(content, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        )
    return changed

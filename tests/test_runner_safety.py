"""The plan runner never loses a finished report (SPEC §5, "Safety").

A module fixture runs a two-run plan of a notebook that naps for `seconds` once, quickly; later
tests re-run it in a `python -m landscape run` process that they interrupt (SIGINT) or kill
(SIGKILL), or with a full disk or an unwritable index, and check that the last good reports are
intact, the index is consistent and every error is one line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from landscape import reports
from landscape.__main__ import main
from landscape.reports import storing

NAP = (
    "import os, pathlib, time\n"
    "from landscape import reports\n"
    "if marker:\n"
    "    pathlib.Path(marker).mkdir(parents=True, exist_ok=True)\n"
    "    pathlib.Path(marker, 'kernel.pid').write_text(str(os.getpid()))\n"
    "time.sleep(seconds)\n"
    "reports.record(output_dir, seconds=seconds)"
)


def _plan(path: Path, seconds: float, markers: Path | None = None) -> Path:
    runs = "".join(
        f"  - name: {name}\n    notebook: nap.ipynb\n"
        f"    parameters: {{seconds: {seconds}, marker: '{markers / name if markers else ''}'}}\n"
        for name in ("a", "b")
    )
    path.write_text(f"name: sleepy\nruns:\n{runs}", encoding="utf-8")
    return path


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run's report (its failed/ attempt aside), by relative path."""
    return {
        p.relative_to(run_dir).as_posix(): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and reports.FAILED_DIR not in p.relative_to(run_dir).parts
    }


pytestmark = pytest.mark.usefixtures("fixed_library_fingerprint")


@pytest.fixture(scope="module")
def sleepy(tmp_path_factory):
    """Runs a and b, executed once without napping: the good reports later tests must keep."""
    root = tmp_path_factory.mktemp("sleepy")
    cells = [
        new_code_cell(
            "seconds = 0.0\nmarker = ''\noutput_dir = None", metadata={"tags": ["parameters"]}
        ),
        new_code_cell(NAP),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(
        new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), root / "nap.ipynb"
    )
    fast = _plan(root / "fast.yaml", 0)
    out = root / "reports"
    with contextlib.redirect_stdout(io.StringIO()):
        results = reports.run_plan(fast, jobs=2, output_root=out)
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    plan_dir = out / "sleepy"
    return SimpleNamespace(
        root=root,
        fast=fast,
        out=out,
        plan_dir=plan_dir,
        good={name: _snapshot(plan_dir / name) for name in ("a", "b")},
    )


@pytest.fixture
def start(sleepy):
    """Start `python -m landscape run` of the napping plan (out of date: it naps 60 s).

    A runner still going when the test ends (it failed) is killed.
    """
    started: list[subprocess.Popen] = []

    def start(markers: Path, *args: str) -> subprocess.Popen:
        slow = _plan(sleepy.root / "slow.yaml", 60, markers)
        command = [sys.executable, "-m", "landscape", "run", str(slow)]
        command += ["--output-root", str(sleepy.out), *args]
        process = subprocess.Popen(  # its own process group, as a terminal's foreground job
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _kernel_pid(markers: Path, run: str, process: subprocess.Popen, timeout: float = 90) -> int:
    """Wait until run's notebook naps in its kernel; return the kernel's pid."""
    marker = markers / run / "kernel.pid"
    deadline = time.monotonic() + timeout
    while not marker.is_file() or not marker.read_text():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"run {run} did not start"
        time.sleep(0.2)
    return int(marker.read_text())


def _gone(pid: int, timeout: float = 20) -> bool:
    """Whether process pid ends (or is a zombie) within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.2)
    return False


def _landscape_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("landscape:")]


# ----------------------------------------------------------------------------------------------
# Ctrl-C, a second runner, SIGKILL


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_marks_running_runs_interrupted_and_keeps_the_reports(
    sleepy, start, tmp_path, capsys, jobs
):
    markers = tmp_path / "markers"
    process = start(markers, "--jobs", str(jobs))
    running = ["a", "b"][:jobs]
    kernels = {run: _kernel_pid(markers, run, process) for run in running}

    # a second runner of the same plan fails at once, naming the holder
    pid_file = sleepy.plan_dir / ".lock.pid"
    assert pid_file.read_text().strip() == str(process.pid)
    assert main(["run", str(sleepy.fast), "--output-root", str(sleepy.out)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("landscape: error: plan folder") and f"(pid {process.pid})" in line

    if jobs == 2:  # Ctrl-C at a terminal: every process of the group, Dask's workers included
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    [line] = _landscape_lines(stderr)
    assert line.startswith("landscape: interrupted (Ctrl-C): run(s) " + ", ".join(running))
    assert all(_gone(pid) for pid in kernels.values()), "a kernel outlived Ctrl-C"
    assert not pid_file.exists()  # the lock was released

    index = (sleepy.plan_dir / "index.html").read_text()
    assert "pending" not in index
    assert index.count(">interrupted<") == jobs
    assert "showing the last good report" in index
    for run in ("a", "b"):
        assert _snapshot(sleepy.plan_dir / run) == sleepy.good[run]  # the good report is intact
    for run in running:
        attempt = json.loads((sleepy.plan_dir / run / "failed" / "run.json").read_text())
        assert attempt["status"] == "interrupted"
        assert (sleepy.plan_dir / run / "failed" / "notebook.ipynb").is_file()
        assert f'href="{run}/failed/notebook.ipynb"' in index
    listed = reports.describe_plan(sleepy.fast, sleepy.out)
    assert "a  interrupted" in listed
    if jobs == 1:
        assert "b  up to date" in listed  # never started: left as it was


def test_a_killed_rerun_keeps_the_report_and_its_kernel_ends(sleepy, start, tmp_path):
    markers = tmp_path / "markers"
    process = start(markers, "--force")
    kernel = _kernel_pid(markers, "a", process)
    process.kill()
    process.communicate(timeout=30)
    assert _snapshot(sleepy.plan_dir / "a") == sleepy.good["a"]
    assert _gone(kernel), "the kernel of a killed runner kept running"

    assert any((sleepy.plan_dir / ".staging").iterdir())  # the killed run's staging folder

    with contextlib.redirect_stdout(io.StringIO()):  # the next run tidies .staging
        results = reports.run_plan(sleepy.fast, output_root=sleepy.out, only=["b"])
    assert [r.status for r in results] in (["skipped"], ["succeeded"])
    assert not any((sleepy.plan_dir / ".staging").iterdir())
    assert _snapshot(sleepy.plan_dir / "a") == sleepy.good["a"]


def test_a_held_lock_names_its_holder(sleepy, capsys):
    from filelock import FileLock

    with FileLock(sleepy.plan_dir / ".lock", timeout=0):
        (sleepy.plan_dir / ".lock.pid").write_text("4242\n")
        assert main(["run", str(sleepy.fast), "--output-root", str(sleepy.out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another `landscape run` (pid 4242)" in err
    (sleepy.plan_dir / ".lock.pid").unlink()


# ----------------------------------------------------------------------------------------------
# "Up to date" means complete


def test_run_json_records_every_file(sleepy):
    record = json.loads((sleepy.plan_dir / "b" / "run.json").read_text())
    files = record["files"]
    assert {"notebook.ipynb", "report.html", "results.json"} <= set(files)
    assert "run.json" not in files
    for name, entry in files.items():
        assert entry == reports.file_entry(sleepy.plan_dir / "b" / name)
        assert set(entry) == {"size", "sha256"} and len(entry["sha256"]) == 64


def test_a_damaged_report_is_run_again(sleepy):
    run_dir = {name: sleepy.plan_dir / name for name in ("a", "b")}
    with contextlib.redirect_stdout(io.StringIO()):  # a may hold an interrupted attempt
        reports.run_plan(sleepy.fast, output_root=sleepy.out)
    results_json = run_dir["a"] / "results.json"
    results_json.write_text(results_json.read_text()[:5])  # truncated
    notebook = run_dir["b"] / "notebook.ipynb"
    notebook.write_bytes(notebook.read_bytes()[:100])
    listed = reports.describe_plan(sleepy.fast, sleepy.out)
    assert "a  incomplete" in listed and "results.json has changed" in listed
    assert "b  incomplete" in listed and "notebook.ipynb has changed" in listed

    with contextlib.redirect_stdout(io.StringIO()):
        results = reports.run_plan(sleepy.fast, jobs=2, output_root=sleepy.out)
    assert [r.status for r in results] == ["succeeded", "succeeded"]
    assert json.loads(results_json.read_text()) == {"seconds": 0.0}
    listed = reports.describe_plan(sleepy.fast, sleepy.out)
    assert "a  up to date" in listed and "b  up to date" in listed


def test_a_missing_or_unparsable_file_is_incomplete(sleepy, tmp_path):
    copy = tmp_path / "b"
    source = sleepy.plan_dir / "b"
    copy.mkdir()
    for name in reports.report_files(source) + ["run.json"]:
        (copy / name).write_bytes((source / name).read_bytes())
    assert reports.incomplete_reason(copy) is None
    (copy / "report.html").unlink()
    assert reports.incomplete_reason(copy) == "report.html is missing"
    (copy / "report.html").write_bytes((source / "report.html").read_bytes())
    (copy / "extra.png").write_bytes(b"x")
    assert reports.incomplete_reason(copy) == "extra.png was not written by the run"
    (copy / "extra.png").unlink()
    # a file recorded unparsable (hashes match) still does not count as complete
    (copy / "results.json").write_text("{")
    stored = json.loads((copy / "run.json").read_text())
    stored["files"]["results.json"] = reports.file_entry(copy / "results.json")
    assert "results.json is not valid JSON" in reports.incomplete_reason(copy, stored)


def test_an_unexpected_file_in_a_report_fails_that_run_only(sleepy):
    notes = sleepy.plan_dir / "a" / "notes.txt"
    notes.write_text("mine")
    try:
        assert reports.describe_plan(sleepy.fast, sleepy.out).count("incomplete") == 1
        with contextlib.redirect_stdout(io.StringIO()):
            results = reports.run_plan(sleepy.fast, output_root=sleepy.out)
        assert [r.status for r in results] == ["failed", "skipped"]
        assert "holds files the runner did not write (notes.txt)" in results[0].error
        assert notes.read_text() == "mine"
    finally:
        notes.unlink()


# ----------------------------------------------------------------------------------------------
# A full disk, an unwritable folder or index


def test_a_full_disk_fails_that_run_with_one_line(sleepy, monkeypatch):
    before = _snapshot(sleepy.plan_dir / "a")
    real = reports.write_atomic

    def full_disk(path, data):
        if Path(path).name == "report.html" and "/a+" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    # the files a worker returns are written into staging by the runner's process, there
    monkeypatch.setattr(storing, "write_atomic", full_disk)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = reports.run_plan(sleepy.fast, force=True, jobs=2, output_root=sleepy.out)
    a, b = results
    assert (a.status, b.status) == ("failed", "succeeded")  # the others go on
    assert "\n" not in a.error
    assert a.error.startswith(f"cannot write {sleepy.plan_dir / '.staging'}/a+")
    assert a.error.endswith("report.html: No space left on device")
    assert _snapshot(sleepy.plan_dir / "a") == before
    assert not (sleepy.plan_dir / "a" / "failed").exists()
    index = (sleepy.plan_dir / "index.html").read_text()
    assert "No space left on device" in index and "pending" not in index
    assert "a: failed in" in printed.getvalue() and "Traceback" not in printed.getvalue()


def test_nothing_to_do_against_an_unwritable_index_succeeds(sleepy, capsys):
    index = sleepy.plan_dir / "index.html"
    index.unlink()
    index.mkdir()  # os.replace onto it fails, as on a read-only folder
    try:
        assert main(["run", str(sleepy.fast), "--output-root", str(sleepy.out)]) == 0
        printed = capsys.readouterr().out
        assert printed.count(f"warning: cannot write {index}") == 1
        assert "skipped (up to date)" in printed
    finally:
        index.rmdir()


def test_an_unwritable_plan_folder_fails_runs_that_need_executing(sleepy, capsys):
    lock = sleepy.plan_dir / ".lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # the folder cannot take the lock file, as when it is read-only
    try:
        code = main(["run", str(sleepy.fast), "--output-root", str(sleepy.out), "--force"])
        printed = capsys.readouterr()
        assert code == 1 and "Traceback" not in printed.out + printed.err
        assert f"a: failed in 0.0 s: cannot write {lock}" in printed.out
    finally:
        lock.rmdir()

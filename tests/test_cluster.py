"""Plans on Dask distributed (SPEC §5, §12): a cluster given by address, lost workers, `--set`.

One module-scoped `LocalCluster` of two worker processes stands in for a cluster started by hand
(`dask scheduler` + `dask worker`); plans reach it through `scheduler=` as `--scheduler` would. The
notebooks are tiny (a kernel start each), and one of them kills its own worker process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from landscape import reports
from landscape.__main__ import main
from landscape.reports.plans import apply_overrides, parse_overrides

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.usefixtures("fixed_library_fingerprint")

RECORD = "from landscape import reports\nreports.record(output_dir, value=x * 2, third=x / 3)"
#: Kills the Dask worker process executing it (the kernel's grandparent: kernel → papermill's
#: process → worker) the first time, or every time with `always`; never anything but a worker.
KILL_WORKER = (
    "import os, pathlib, signal, time\n"
    "import psutil\n"
    "from landscape import reports\n"
    "worker = psutil.Process(os.getppid()).parent()\n"
    "assert 'multiprocessing' in ' '.join(worker.cmdline()), worker.cmdline()\n"
    "if always or not pathlib.Path(marker).exists():\n"
    "    pathlib.Path(marker).write_text(str(worker.pid))\n"
    "    os.kill(worker.pid, signal.SIGKILL)\n"
    "    time.sleep(60)\n"
    "reports.record(output_dir, survived=True)"
)


def _notebook(path: Path, parameters: str, *sources: str) -> Path:
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(source) for source in sources]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


def _quietly(function, *args, **kwargs):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        return function(*args, **kwargs), printed.getvalue()


@pytest.fixture(scope="module")
def scheduler():
    """The address of a local cluster of two worker processes (a lost task is retried once)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
            silence_logs=logging.CRITICAL,
        )
    with cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    _notebook(root / "calc.ipynb", "x = 1\noutput_dir = None", RECORD)
    _notebook(root / "kill.ipynb", "marker = ''\nalways = False\noutput_dir = None", KILL_WORKER)
    plan = root / "plan.yaml"
    plan.write_text(
        "name: spread\nruns:\n"
        "  - {name: one, notebook: calc.ipynb, parameters: {x: 3}}\n"
        "  - {name: two, notebook: calc.ipynb, parameters: {x: 5}}\n",
        encoding="utf-8",
    )
    return root


def test_a_cluster_given_by_address_gives_the_local_results(project, scheduler, tmp_path):
    local, _ = _quietly(reports.run_plan, project / "plan.yaml", output_root=tmp_path / "local")
    remote, printed = _quietly(
        reports.run_plan,
        project / "plan.yaml",
        output_root=tmp_path / "remote",
        scheduler=scheduler,
    )
    assert [r.status for r in local] == [r.status for r in remote] == ["succeeded"] * 2
    assert f"Connected to the Dask cluster at {scheduler} (2 worker(s) now)" in printed
    for name in ("one", "two"):
        here = tmp_path / "local" / "spread" / name
        there = tmp_path / "remote" / "spread" / name
        assert (here / "results.json").read_bytes() == (there / "results.json").read_bytes()
        notebook = json.loads((there / "notebook.ipynb").read_text())
        injected = [c for c in notebook["cells"] if "injected-parameters" in c["metadata"]["tags"]]
        assert f'output_dir = "{there}"' in "".join(injected[0]["source"])  # not the worker's
        assert notebook["metadata"]["papermill"]["input_path"] == str(project / "calc.ipynb")
        record = json.loads((there / "run.json").read_text())
        assert record["host"] == socket.gethostname() and "results.json" in record["files"]
    assert json.loads((tmp_path / "remote/spread/two/results.json").read_text())["value"] == 10
    assert not any((tmp_path / "remote" / "spread" / ".staging").iterdir())
    listed = reports.describe_plan(project / "plan.yaml", tmp_path / "remote")
    assert listed.count("up to date") == 2


def _kill_plan(project: Path, tmp_path: Path, always: bool) -> Path:
    plan = tmp_path / "kill.yaml"
    plan.write_text(
        "name: fragile\nruns:\n"
        f"  - name: victim\n    notebook: {project / 'kill.ipynb'}\n"
        f"    parameters: {{marker: '{tmp_path / 'killed'}', always: {str(always).lower()}}}\n",
        encoding="utf-8",
    )
    return plan


def test_a_run_whose_worker_dies_is_retried_on_another(project, scheduler, tmp_path):
    plan = _kill_plan(project, tmp_path, always=False)
    [result], printed = _quietly(
        reports.run_plan, plan, output_root=tmp_path / "out", scheduler=scheduler
    )
    assert (tmp_path / "killed").is_file()  # the first attempt killed its worker
    assert result.status == "succeeded", result.error
    assert json.loads((result.output_dir / "results.json").read_text()) == {"survived": True}
    assert "victim: succeeded" in printed


def test_a_run_whose_workers_keep_dying_fails_with_the_reason(project, scheduler, tmp_path):
    plan = _kill_plan(project, tmp_path, always=True)
    [result], printed = _quietly(
        reports.run_plan, plan, output_root=tmp_path / "out", scheduler=scheduler
    )
    assert result.status == "failed"
    assert result.error.startswith("the worker executing the run died (2 times, the retry")
    assert "victim: failed in" in printed and "Traceback" not in printed
    index = (tmp_path / "out" / "fragile" / "index.html").read_text()
    assert "the worker executing the run died" in index and "pending" not in index
    # the cluster is whole again for the tests after this one
    client = distributed.Client(scheduler, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=60)
    finally:
        client.close()


def test_an_unreachable_scheduler_is_one_clear_error(project, tmp_path, capsys):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    plan = str(project / "plan.yaml")
    started = time.perf_counter()
    code = main(["run", plan, "--output-root", str(tmp_path), "--scheduler", address])
    took = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 1 and took < 5, took
    [line] = err.splitlines()
    assert line.startswith(f"landscape: error: no Dask scheduler answers at {address}")
    assert "dask scheduler" in line
    with pytest.raises(ConnectionError, match="no Dask scheduler answers"):
        reports.run_plan(plan, output_root=tmp_path, scheduler=address)
    index = (tmp_path / "spread" / "index.html").read_text()
    assert "pending" not in index
    with pytest.raises(ValueError, match="jobs=2 sizes the local cluster"):
        reports.run_plan(plan, output_root=tmp_path, scheduler=address, jobs=2)


# ----------------------------------------------------------------------------------------------
# --set KEY=VALUE


def test_set_values_are_yaml():
    assert parse_overrides(["x=3", "lr=3e-4", "sigmas=[0.1, 1]", "name=mnist", "flag=true"]) == {
        "x": 3,
        "lr": 3e-4,
        "sigmas": [0.1, 1],
        "name": "mnist",
        "flag": True,
    }
    assert parse_overrides(["model={depth: 2, width: 8}", "x=1", "x=2"]) == {
        "model": {"depth": 2, "width": 8},
        "x": 2,
    }
    assert parse_overrides(["note=a=b", "empty="]) == {"note": "a=b", "empty": None}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("x", "expected KEY=VALUE"),
        ("=3", "'' is not a parameter name"),
        ("two words=1", "'two words' is not a parameter name"),
        ("x=[1, 2", "the value is not valid YAML"),
        ("output_dir=/tmp", "'output_dir' is set by the runner"),
    ],
)
def test_bad_set_items_are_named(item, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_overrides([item])
    assert str(caught.value).startswith(f"--set {item!r}")


def test_set_applies_where_declared_and_names_unknown_keys(project, tmp_path, capsys):
    _notebook(tmp_path / "other.ipynb", "y = 0\noutput_dir = None", "pass")
    plan_file = tmp_path / "mixed.yaml"
    plan_file.write_text(
        f"name: mixed\nruns:\n  - {{name: a, notebook: {project / 'calc.ipynb'}}}\n"
        f"  - {{name: b, notebook: {tmp_path / 'other.ipynb'}, parameters: {{y: 1}}}}\n",
        encoding="utf-8",
    )
    a, b = apply_overrides(reports.load_plan(plan_file).runs, {"x": 7, "y": 2})
    assert a.parameters == {"x": 7} and b.parameters == {"y": 2}
    with pytest.raises(ValueError, match=r"'z' is not a parameter of any selected run's notebook"):
        apply_overrides(reports.load_plan(plan_file).runs, {"x": 7, "z": 1})
    plan = str(plan_file)
    assert main(["run", plan, "--only", "b", "--set", "x=7", "--output-root", str(tmp_path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert (
        line.startswith("landscape: error: --set: 'x' is not a parameter") and "other.ipynb" in line
    )
    assert main(["list", plan, "--set", "x=[1", "--output-root", str(tmp_path)]) == 2
    assert "the value is not valid YAML" in capsys.readouterr().err


def test_set_is_part_of_the_fingerprint(project, scheduler, tmp_path):
    plan, out = project / "plan.yaml", tmp_path / "out"
    two = out / "spread" / "two"
    [result], _ = _quietly(
        reports.run_plan, plan, only=["two"], output_root=out, scheduler=scheduler
    )
    assert result.status == "succeeded"
    assert "two  up to date" in reports.describe_plan(plan, out)
    listed = reports.describe_plan(plan, out, {"x": 4})
    assert "two  out of date" in listed and '{"x": 4}' in listed

    [result], _ = _quietly(
        reports.run_plan, plan, only=["two"], output_root=out, scheduler=scheduler,
        overrides={"x": 4},
    )  # fmt: skip
    assert result.status == "succeeded"  # other values: executed again
    assert json.loads((two / "results.json").read_text())["value"] == 8
    assert json.loads((two / "run.json").read_text())["parameters"] == {"x": 4}
    [result], printed = _quietly(
        reports.run_plan, plan, only=["two"], output_root=out, overrides={"x": 4}
    )
    assert result.status == "skipped"  # the same values: up to date, and no cluster started
    assert "Started a local Dask cluster" not in printed
    assert "two  out of date" in reports.describe_plan(plan, out)  # without them, it is not


def test_gpu_runs_ask_for_a_gpu_worker(scheduler):
    from landscape.reports.cluster import Session
    from landscape.reports.worker import RunTask

    def task(device):
        run = reports.Run("r", Path("n.ipynb"), {"device": device} if device else {})
        return RunTask("p", run, b"", Path("/r"), "f")

    client = distributed.Client(scheduler, set_as_default=False)
    try:
        remote = Session(client, local=False, description="remote")
        local = Session(client, local=True, description="local")
    finally:
        client.close()
    assert remote.gpu_workers == 0
    assert remote.resources(task("cuda")) == {"GPU": 1}
    assert remote.resources(task("cuda:1")) == {"GPU": 1}
    assert remote.resources(task("auto")) is None  # no worker advertises a GPU
    assert remote.resources(task("cpu")) is None and remote.resources(task(None)) is None
    remote.gpu_workers = 1
    assert remote.resources(task("auto")) == {"GPU": 1}
    assert local.resources(task("cuda")) is None  # local processes share this machine's GPUs

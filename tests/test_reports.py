"""The plan runner: papermill execution, skipping, failures, HTML reports, the CLI, and `record`.

Kernel starts cost seconds, so one module fixture executes a two-run plan (one run fails) and the
later tests reuse its folder; the file executes five notebooks in all.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from landscape import __version__, reports
from landscape.__main__ import main
from landscape.reports import records

_REAL_LIBRARY_FINGERPRINT = reports.library_fingerprint


def _png() -> bytes:
    """A 4×4 red PNG, made by hand so the test notebook needs no plotting library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes([220, 30, 30] * 4) for _ in range(4))
    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _write_notebook(path: Path, *sources: str) -> Path:
    cells = [
        new_markdown_cell(f"# {path.stem}"),
        new_code_cell("x = 1\noutput_dir = None", metadata={"tags": ["parameters"]}),
        *(new_code_cell(source) for source in sources),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


GOOD = (
    "import base64\nfrom IPython.display import Image, display\n"
    f"display(Image(data=base64.b64decode({base64.b64encode(_png()).decode()!r})))\n"
    "print('report text: x is', x)",
    "from landscape import reports\n"
    "reports.record(output_dir, value=x * 2, ratio=x / 3, nested={'a': 0.123456})",
)
BAD = ("print('before the failure')", "raise RuntimeError('boom')")


def _plan(path: Path, good_x: int = 3) -> Path:
    path.write_text(
        "name: demo\n"
        "defaults: {x: 5}\n"
        "runs:\n"
        "  - name: good\n"
        "    notebook: good.ipynb\n"
        f"    parameters: {{x: {good_x}}}\n"
        "  - name: bad\n"
        "    notebook: bad.ipynb\n",
        encoding="utf-8",
    )
    return path


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


pytestmark = pytest.mark.usefixtures("fixed_library_fingerprint")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A plan with a good and a failing notebook, executed once with two jobs."""
    root = tmp_path_factory.mktemp("project")
    _write_notebook(root / "good.ipynb", *GOOD)
    _write_notebook(root / "bad.ipynb", *BAD)
    plan = _plan(root / "plan.yaml")
    out = root / "reports"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        results = reports.run_plan(plan, jobs=2, output_root=out)
    runs = out / "demo"
    folders = {"good": runs / "good", "bad": runs / "bad" / "failed"}  # a failed run's attempt
    snapshot = {
        name: {
            file: _text(folder / file)
            for file in ("run.json", "report.html", "results.json")
            if (folder / file).is_file()
        }
        for name, folder in folders.items()
    }
    return SimpleNamespace(
        root=root,
        plan=plan,
        out=out,
        runs=runs,
        results=results,
        stdout=stdout.getvalue(),
        snapshot=snapshot,
        index=_text(runs / "index.html"),
    )


# ----------------------------------------------------------------------------------------------
# One execution of a plan


def test_failing_run_does_not_stop_the_others(project):
    by_name = {r.name: r for r in project.results}
    assert [r.name for r in project.results] == ["good", "bad"]
    assert by_name["good"].status == "succeeded" and by_name["good"].error is None
    assert by_name["bad"].status == "failed"
    assert by_name["bad"].error.startswith("RuntimeError: boom")
    assert "raise RuntimeError('boom')" in by_name["bad"].error  # the failing cell's traceback
    assert "\x1b[" not in by_name["bad"].error
    assert by_name["good"].output_dir == project.runs / "good"
    assert by_name["bad"].output_dir == project.runs / "bad" / "failed"
    assert "1 succeeded, 1 failed" in project.stdout


def test_reports_are_rendered_for_both_runs(project):
    good_html = project.snapshot["good"]["report.html"]
    assert "report text: x is 3" in good_html
    assert "data:image/png;base64," in good_html  # the figure is inline
    assert "<details" in good_html  # code is folded
    bad_html = project.snapshot["bad"]["report.html"]  # the partial notebook, rendered
    assert "before the failure" in bad_html and "boom" in bad_html
    assert (project.runs / "bad" / "failed" / "notebook.ipynb").is_file()
    assert 'href="../../index.html"' in bad_html and 'href="../index.html"' in good_html
    assert (project.runs / "good" / "thumb.png").read_bytes()[:4] == b"\x89PNG"


def test_results_json_holds_the_injected_parameter(project):
    results = json.loads(project.snapshot["good"]["results.json"])
    assert results == {"value": 6, "ratio": 1.0, "nested": {"a": 0.123456}}


def test_run_json_records_status_duration_and_fingerprint(project):
    good = json.loads(project.snapshot["good"]["run.json"])
    bad = json.loads(project.snapshot["bad"]["run.json"])
    assert good["status"] == "succeeded" and good["error"] is None and good["duration"] > 0
    assert good["parameters"] == {"x": 3} and bad["parameters"] == {"x": 5}  # run ⊕ defaults
    assert good["version"] == __version__ and len(good["fingerprint"]) == 64
    assert bad["status"] == "failed" and "RuntimeError: boom" in bad["error"]


def test_index_lists_every_run(project):
    index = project.index
    assert "demo" in index and __version__ in index
    assert 'href="good/report.html"' in index and 'src="good/thumb.png"' in index
    assert "<b>value</b> = 6" in index and "<b>nested.a</b> = 0.123" in index
    assert ">failed<" in index and ">succeeded<" in index
    assert "RuntimeError: boom" in index and 'href="bad/failed/notebook.ipynb"' in index
    assert not list(project.runs.rglob("*.tmp"))  # every file was written atomically


# ----------------------------------------------------------------------------------------------
# Running again: skip, --force, changed parameters; the command line


def test_rerun_skips_forces_and_follows_parameters(project, capsys):
    plan, out = str(project.plan), str(project.out)
    good_run = project.runs / "good" / "run.json"
    before = _text(good_run)

    code = main(["run", plan, "--output-root", out])  # good is up to date, bad fails again
    printed = capsys.readouterr().out
    assert code == 1
    assert "good: skipped (up to date)" in printed and "bad: submitted" in printed
    assert f"Report index: {project.runs / 'index.html'}" in printed
    assert _text(good_run) == before
    assert "up to date (earlier run)" in _text(project.runs / "index.html")

    code = main(["run", plan, "--only", "good", "--force", "--output-root", out])
    printed = capsys.readouterr().out
    assert code == 0 and "good: submitted" in printed
    assert _text(good_run) != before

    _plan(project.plan, good_x=4)  # a changed parameter makes the run out of date
    assert "good  out of date" in reports.describe_plan(plan, out)
    [result] = reports.run_plan(plan, only=["good"], output_root=out)
    assert result.status == "succeeded"
    assert json.loads(_text(project.runs / "good" / "results.json"))["value"] == 8
    assert "good  up to date" in reports.describe_plan(plan, out)


def test_list_command_names_the_runs(project):
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "landscape",
            "list",
            str(project.plan),
            "--output-root",
            str(project.out),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "good" in listed and "good.ipynb" in listed and '{"x": ' in listed
    assert "bad" in listed and "failed" in listed and "RuntimeError: boom" in listed


def test_a_folder_that_is_not_a_report_is_never_removed(project, tmp_path):
    """Foreign files fail their run only (nothing executes there, nothing is deleted)."""
    foreign = tmp_path / "demo" / "good"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("keep me")
    (tmp_path / "demo" / "bad").write_text("a file where a run folder should be")
    results = reports.run_plan(project.plan, output_root=tmp_path)
    assert [r.status for r in results] == ["failed", "failed"]
    assert "holds files the runner did not write (precious.txt)" in results[0].error
    assert "is not a run folder" in results[1].error
    assert results[0].duration < 1  # refused before a kernel started
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "demo" / "bad").read_text() == "a file where a run folder should be"
    index = _text(tmp_path / "demo" / "index.html")
    assert "precious.txt" in index and ">failed<" in index


# ----------------------------------------------------------------------------------------------
# Bad plans (nothing executes)


@pytest.fixture
def notebooks(tmp_path):
    _write_notebook(tmp_path / "good.ipynb")
    return tmp_path


BAD_PLANS = {
    "name: p\n": "missing key 'runs'",
    "- a\n- b\n": "expected a mapping",
    "name: p\nruns: [\n": "not valid YAML",
    "name: p\nruns: []\n": "non-empty list",
    "name: a/b\nruns: [{name: r, notebook: good.ipynb}]\n": "key 'name'='a/b' must be a folder name",
    "name: p\nrun: []\nruns: [{name: r, notebook: good.ipynb}]\n": "unknown key\\(s\\) 'run'",
    "name: p\nruns: [{notebook: good.ipynb}]\n": "run #1: missing key 'name'",
    "name: p\nruns: [{name: r}]\n": "run 'r': missing key 'notebook'",
    "name: p\nruns: [{name: r, notebook: nowhere.ipynb}]\n": "run 'r': key 'notebook': 'nowhere.ipynb' not found",
    "name: p\nruns: [{name: r, notebook: good.txt}]\n": "must be a path to an .ipynb file",
    "name: p\nruns: [{name: r, notebook: good.ipynb}, {name: r, notebook: good.ipynb}]\n": "'r' is used twice",
    "name: p\nruns: [{name: r, notebook: good.ipynb, parameters: {y: 1}}]\n": "'y' not declared .* declares output_dir, x",
    "name: p\nruns: [{name: r, notebook: good.ipynb, parameters: {output_dir: .}}]\n": "set by the runner",
    "name: p\nruns: [{name: r, notebook: good.ipynb, parmeters: {x: 1}}]\n": "run 'r': unknown key\\(s\\) 'parmeters'",
    "name: p\ndefaults: {devce: cpu}\nruns: [{name: r, notebook: good.ipynb}]\n": "'defaults' key\\(s\\) 'devce'",
}


@pytest.mark.parametrize("content,message", list(BAD_PLANS.items()), ids=list(BAD_PLANS.values()))
def test_bad_plans_name_the_problem(notebooks, content, message):
    plan = notebooks / "plan.yaml"
    plan.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        reports.load_plan(plan)
    assert str(plan) in str(info.value)


SHIPPED_PLANS = sorted((Path(__file__).resolve().parents[1] / "reports" / "plans").glob("*.yaml"))


@pytest.mark.parametrize("plan", SHIPPED_PLANS, ids=[p.name for p in SHIPPED_PLANS])
def test_shipped_plans_are_valid(plan):
    content = yaml.safe_load(plan.read_text(encoding="utf-8"))
    root = plan.parents[2]
    missing = sorted(
        {r["notebook"] for r in content["runs"] if not (root / r["notebook"]).is_file()}
    )
    if missing:
        pytest.skip(f"notebooks not written yet: {', '.join(missing)}")
    loaded = reports.load_plan(plan)
    assert loaded.name == plan.stem
    assert reports.plan_output_dir(loaded) == root / "reports" / plan.stem


NOT_NOTEBOOKS = {
    "hello": "not a notebook \\(Expecting value",
    "[]": "not a notebook \\(found a JSON list\\)",
    '{"cells": [1]}': "not a notebook \\(found no 'nbformat' key\\)",
    '{"cells": [], "metadata": {}, "nbformat": 3, "nbformat_minor": 0}': "found 'nbformat': 3",
    '{"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": 5, '
    '"outputs": [], "execution_count": null}], "metadata": {}, "nbformat": 4, '
    '"nbformat_minor": 5}': "not a valid notebook",
}


@pytest.mark.parametrize("content,message", list(NOT_NOTEBOOKS.items()), ids=range(5))
def test_a_file_that_is_not_a_notebook_is_named(notebooks, content, message):
    (notebooks / "fake.ipynb").write_text(content, encoding="utf-8")
    plan = notebooks / "plan.yaml"
    plan.write_text("name: p\nruns: [{name: r, notebook: fake.ipynb}]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        reports.load_plan(plan)
    text = str(info.value)
    assert str(plan) in text and str(notebooks / "fake.ipynb") in text
    assert "expected a Jupyter notebook" in text and "\n" not in text


PARAMETERS_CELL = """# the parameters
dataset = "digits"          # a comment holding a second "=": k >= 2
variants = [                # a value over several lines
    {"model": "mlp", "depth": 2},
    {"model": "cnn", "channels": 16, "batch_norm": True},
]
lr = 3e-4
shift = -1
seed = order_seed = 0
epochs: int = 5
k_max = None
output_dir = None
"""


def _raw_notebook(path: Path, *cells: tuple[str, list[str], str]) -> Path:
    """A notebook written as JSON by hand: cells are (type, tags, source)."""

    def cell(kind: str, tags: list[str], source: str) -> dict:
        extra = {"outputs": [], "execution_count": None} if kind == "code" else {}
        lines = source.splitlines(keepends=True)  # as Jupyter stores a cell: a list of lines
        return {"cell_type": kind, "metadata": {"tags": tags}, "source": lines, **extra}

    content = {"cells": [cell(*c) for c in cells], "metadata": {}, "nbformat": 4}
    path.write_text(json.dumps({**content, "nbformat_minor": 4}), encoding="utf-8")
    return path


def test_notebook_defaults_are_the_values_of_the_parameters_cell(tmp_path):
    path = _raw_notebook(
        tmp_path / "nb.ipynb",
        ("markdown", [], "# Title\nx = 99"),
        ("code", ["parameters"], PARAMETERS_CELL),
        ("code", [], "lr = 1.0\nepochs = 2 * epochs"),  # not the parameters cell
    )
    expected = {
        "dataset": "digits",
        "variants": [
            {"model": "mlp", "depth": 2},
            {"model": "cnn", "channels": 16, "batch_norm": True},
        ],
        "lr": 3e-4,
        "shift": -1,
        "seed": 0,
        "order_seed": 0,
        "epochs": 5,
        "k_max": None,
        "output_dir": None,
    }
    defaults = reports.notebook_defaults(path)
    assert defaults == expected and list(defaults) == list(expected)  # in the cell's order
    executed: dict = {}
    exec(PARAMETERS_CELL, {}, executed)  # what the kernel would hold
    executed.pop("__annotations__")  # of ``epochs: int``
    assert defaults == executed
    assert set(defaults) == reports.notebook_parameters(path)
    assert reports.notebook_defaults(path, non_literal="source") == expected


def test_notebook_defaults_without_a_parameters_cell_are_empty(tmp_path):
    path = _raw_notebook(
        tmp_path / "nb.ipynb",
        ("code", [], "x = 1"),
        ("markdown", ["parameters"], "y = 2"),  # a tagged markdown cell is not papermill's
    )
    assert reports.notebook_defaults(path) == {}
    assert reports.notebook_parameters(path) == frozenset()


def test_notebook_defaults_never_execute_and_name_what_is_not_a_literal(tmp_path):
    source = "width = 2 ** 5\nnames = sorted(['b', 'a'])\ndepth = 3\n"
    path = _raw_notebook(tmp_path / "nb.ipynb", ("code", ["parameters"], source))
    with pytest.raises(ValueError, match=r"line 1: the value of width \('2 \*\* 5'\) is not"):
        reports.notebook_defaults(path)
    shown = reports.notebook_defaults(path, non_literal="source")  # as a report shows them
    assert shown == {"width": "2 ** 5", "names": "sorted(['b', 'a'])", "depth": 3}
    unpacked = _raw_notebook(tmp_path / "unpacked.ipynb", ("code", ["parameters"], "a, b = 1, 2"))
    with pytest.raises(ValueError, match="'a, b = 1, 2' is not an assignment 'name = value'"):
        reports.notebook_defaults(unpacked)
    assert reports.notebook_defaults(unpacked, non_literal="source") == {}
    broken = _raw_notebook(tmp_path / "broken.ipynb", ("code", ["parameters"], "x = ("))
    with pytest.raises(ValueError, match="parameters cell is not valid Python"):
        reports.notebook_defaults(broken)
    with pytest.raises(ValueError, match="non_literal='eval'; expected 'raise' or 'source'"):
        reports.notebook_defaults(path, non_literal="eval")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")),
    ids=lambda p: p.stem,
)
def test_notebook_defaults_of_each_notebook_are_what_its_cell_assigns(path):
    """The shipped notebooks: the literal reading equals executing the cell."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    executed: dict = {}
    exec("".join(cell["source"]), {}, executed)
    assert reports.notebook_defaults(path) == executed


def test_a_plan_that_is_not_utf8_is_named(notebooks, capsys):
    plan = notebooks / "plan.yaml"
    plan.write_bytes(b"\xff\xfename: p\nruns: [{name: r, notebook: good.ipynb}]\n")
    with pytest.raises(ValueError, match="not UTF-8 text .*expected a YAML file saved as UTF-8"):
        reports.load_plan(plan)
    assert main(["list", str(plan)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"landscape: error: plan {plan}: not UTF-8")


def test_an_output_root_that_is_a_file_is_refused(notebooks, capsys):
    plan = notebooks / "plan.yaml"
    plan.write_text("name: p\nruns: [{name: r, notebook: good.ipynb}]\n", encoding="utf-8")
    afile = notebooks / "afile"
    afile.write_text("not a folder")
    for root in (afile, afile / "below"):
        with pytest.raises(ValueError, match=f"{afile} is a file; expected a folder"):
            reports.run_plan(plan, output_root=root)
        for command in ("run", "list"):
            assert main([command, str(plan), "--output-root", str(root)]) == 2
            [line] = capsys.readouterr().err.splitlines()
            assert line.startswith(f"landscape: error: output root {root}: {afile} is a file")
    assert afile.read_text() == "not a folder"


def test_missing_plan_unknown_run_and_bad_jobs(notebooks, capsys):
    with pytest.raises(ValueError, match="file not found"):
        reports.load_plan(notebooks / "absent.yaml")
    plan = notebooks / "plan.yaml"
    plan.write_text("name: p\nruns: [{name: r, notebook: good.ipynb}]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no run named 'nope'; the runs are r"):
        reports.run_plan(plan, only=["nope"], output_root=notebooks)
    with pytest.raises(ValueError, match="jobs"):
        reports.run_plan(plan, jobs=0, output_root=notebooks)
    assert main(["list", str(notebooks / "absent.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_notebook_paths_and_output_root_are_found_from_the_repository(tmp_path, monkeypatch):
    (tmp_path / "reports" / "plans").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    notebook = _write_notebook(tmp_path / "notebooks" / "n.ipynb")
    plan_file = tmp_path / "reports" / "plans" / "quick.yaml"
    plan_file.write_text("name: quick\nruns: [{name: r, notebook: notebooks/n.ipynb}]\n")
    monkeypatch.chdir(tmp_path / "notebooks")  # the repository root is found from the plan
    plan = reports.load_plan(plan_file)
    assert plan.runs[0].notebook == notebook
    assert reports.plan_output_dir(plan) == tmp_path / "reports" / "quick"
    monkeypatch.chdir(tmp_path)
    assert reports.load_plan(Path("reports/plans/quick.yaml")).runs[0].notebook == notebook


def test_fingerprint_follows_notebook_parameters_and_library(notebooks, monkeypatch):
    monkeypatch.setattr(records, "library_fingerprint", _REAL_LIBRARY_FINGERPRINT)
    library = reports.library_fingerprint()
    assert len(library) == 64 and library == reports.library_fingerprint()
    notebook = notebooks / "good.ipynb"
    run = reports.Run("r", notebook, {"x": 1})
    base = reports.fingerprint(run, library)
    assert reports.fingerprint(reports.Run("other", notebook, {"x": 1}), library) == base
    assert reports.fingerprint(reports.Run("r", notebook, {"x": 2}), library) != base
    notebook.write_text(_text(notebook).replace("x = 1", "x = 2"))
    assert reports.fingerprint(run, library) != base
    assert reports.fingerprint(run, "another library") != reports.fingerprint(run, library)


# ----------------------------------------------------------------------------------------------
# record, output folders, formatting


def test_record_converts_and_merges(tmp_path):
    torch = pytest.importorskip("torch")
    first = reports.record(
        tmp_path / "run", alpha=np.float32(1.5), k=np.int64(7), ok=np.bool_(True)
    )
    assert first == {"alpha": 1.5, "k": 7, "ok": True}
    merged = reports.record(
        tmp_path / "run",
        alpha=2.0,
        delta=np.array([1.0, np.nan, np.inf, -np.inf]),
        tensor=torch.tensor([[1.0, 2.0]], dtype=torch.float64),
        scalar=torch.tensor(3),
        ci=(1.9, 2.1),
    )
    stored = json.loads(_text(tmp_path / "run" / "results.json"))
    assert stored["alpha"] == 2.0 and stored["k"] == 7  # merged, newest wins
    assert stored["delta"] == [1.0, "nan", "inf", "-inf"]
    assert math.isinf(float(stored["delta"][2]))  # the strings read back with float()
    assert {k: v for k, v in merged.items() if k != "delta"} == {
        k: v for k, v in stored.items() if k != "delta"
    }
    assert math.isnan(merged["delta"][1]) and merged["delta"][2:] == [math.inf, -math.inf]
    assert stored["tensor"] == [[1.0, 2.0]] and stored["scalar"] == 3 and stored["ci"] == [1.9, 2.1]
    with pytest.raises(ValueError, match="bad of type object"):
        reports.record(tmp_path / "run", bad=object())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["results.json"]


def test_record_returns_numbers_and_writes_valid_json(tmp_path):
    """NaN stays a float for the notebook (it formats it); the file spells it "nan"."""
    got = reports.record(tmp_path, alpha=float("nan"), ci=(np.float32(np.nan), 2.0), k=3)
    assert math.isnan(got["alpha"]) and f"{got['alpha']:.2f} {got['ci'][1]:.1f}" == "nan 2.0"
    assert math.isnan(got["ci"][0]) and got["k"] == 3

    def no_constants(name):
        raise AssertionError(f"results.json holds the non-JSON constant {name}")

    text = (tmp_path / "results.json").read_text()
    stored = json.loads(text, parse_constant=no_constants)
    assert stored == {"alpha": "nan", "ci": ["nan", 2.0], "k": 3}
    again = reports.record(tmp_path, beta=-np.inf)  # earlier keys come back as numbers too
    assert math.isnan(again["alpha"]) and again["beta"] == -math.inf
    read = reports.read_results(tmp_path)
    assert math.isnan(read["alpha"]) and read["beta"] == -math.inf and read["k"] == 3
    assert reports.to_json(float("nan")) == "nan" and reports.from_json("nan") != "nan"


def test_record_without_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(reports.OUTPUT_DIR_ENV, raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    (tmp_path / "reports" / "plans").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # a notebook opened interactively
    reports.record(value=1)
    assert json.loads(_text(tmp_path / "reports" / "interactive" / "default" / "results.json")) == {
        "value": 1
    }
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "notebooks" / "01_theorem.ipynb"))
    assert reports.resolve_output_dir() == tmp_path / "reports" / "interactive" / "01_theorem"
    assert (
        reports.output_path(None, "fig.png")
        == tmp_path / "reports" / "interactive" / "01_theorem" / "fig.png"
    )
    monkeypatch.setenv(reports.OUTPUT_DIR_ENV, str(tmp_path / "elsewhere"))
    reports.record(value=2)
    assert json.loads(_text(tmp_path / "elsewhere" / "results.json")) == {"value": 2}


def test_formatting_for_the_index():
    pairs = dict(
        reports.flatten_results(
            {
                "alpha": 1.98765,
                "n": 12,
                "ci": [1.912345, 2.0],
                "long": list(range(10)),
                "fit": {"C": 0.000123456},
                "s": None,
            }
        )
    )
    assert pairs == {
        "alpha": "1.99",
        "n": "12",
        "ci": "[1.91, 2]",
        "long": "[0, 1, 2, …, 9] (10 values)",
        "fit.C": "0.000123",
        "s": "null",
    }


def test_kernel_problem_names_the_fix(monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    assert reports.kernel_problem() is None  # the kernel these tests execute on is set up

    def missing(self, name):
        raise NoSuchKernel(name)

    monkeypatch.setattr(KernelSpecManager, "get_kernel_spec", missing)
    assert "ipykernel install --sys-prefix --name python3" in reports.kernel_problem()

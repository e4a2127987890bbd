"""The notebooks: stored clean, parameterised, and runnable under papermill with tiny parameters.

Their defaults are executed by nbval (`pytest --nbval-lax notebooks/`, part of `make test`); here
each one runs with parameters small enough for seconds and must record its headline numbers.
"""

import json
from pathlib import Path

import nbformat
import papermill
import pytest

from landscape import reports

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = [
    "01_theorem",
    "02_landscapes",
    "03_sampling",
    "04_hessian_subspace",
    "05_pointwise",
    "06_architectures",
    "07_sufficiency",
]

#: Parameters that make each notebook finish in seconds, and the keys its results.json must hold.
TINY: dict[str, dict] = {}
KEYS: dict[str, list[str]] = {}


def test_every_notebook_of_the_spec_exists():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_clean_with_a_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert nb.cells[0].cell_type == "markdown"
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    assert {"output_dir", "device", "dataset"} <= reports.notebook_parameters(
        NOTEBOOKS / f"{name}.ipynb"
    )


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_with_tiny_parameters_and_records(name, tmp_path):
    output_dir = tmp_path / "out"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(tmp_path / "executed.ipynb"),
        parameters={**TINY.get(name, {}), "output_dir": str(output_dir), "device": "cpu"},
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )
    results = json.loads((output_dir / "results.json").read_text())
    missing = set(KEYS.get(name, [])) - set(results)
    assert not missing, f"{name} did not record {sorted(missing)}"
    assert results


def test_a_bad_parameter_stops_a_notebook_with_a_clear_message(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(NOTEBOOKS / "01_theorem.ipynb"),
            str(tmp_path / "executed.ipynb"),
            parameters={"dataset": "imagenet", "output_dir": str(tmp_path)},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            progress_bar=False,
        )
    assert error.value.ename == "ValueError" and "imagenet" in error.value.evalue

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

#: Parameters that make each notebook finish in seconds. Training settings stay at the defaults
#: where possible, so the networks trained here are the cached ones the nbval runs reuse.
TINY: dict[str, dict] = {
    "01_theorem": {
        "k_max": 150,
        "sigmas": [0.01, 1.0],
        "draws": 16,
        "subspace_dim": 3,
        "gap_orders": 10,
        "n_boot": 50,
        "fit_k_min": 10,
    },
    "02_landscapes": {
        "variants": [
            {"model": "mlp", "depth": 1, "width": 16},
            {"model": "mlp", "depth": 1, "width": 16, "batch_norm": True},
        ],
        "epochs": 3,
        "k_max": 50,
        "points": 9,
        "profile_points": 9,
        "width_directions": 4,
    },
    "03_sampling": {
        "k_max": 150,
        "sigmas": [0.01, 1.0],
        "dims": [1, 2, 3],
        "sigma_dim": 2,
        "draws": 16,
        "grid_points": 9,
        "n_boot": 50,
        "fit_k_min": 10,
    },
    "04_hessian_subspace": {
        "k_max": 100,
        "d": 4,
        "sigmas": [0.1],
        "draws": 50,
        "density_probes": 1,
        "density_steps": 10,
        "n_boot": 50,
        "fit_k_min": 10,
    },
    "05_pointwise": {"k_max": 200, "orders": 20, "widths": [16], "depths": [1], "norm_samples": 20},
    "06_architectures": {
        "variants": [
            {"model": "mlp", "depth": 2, "width": 32},
            {"model": "mlp", "depth": 2, "width": 32, "batch_norm": True},
        ],
        "k_max": 200,
        "k_ref": 100,
        "draws": 32,
        "orders": 2,
        "d": 3,
    },
    "07_sufficiency": {
        "k_max": 300,
        "draws": 32,
        "orders": 4,
        "d": 3,
        "learning_ks": [50, 100],
        "learning_seeds": [0],
        "learning_min_steps": 20,
        "fit_k_min": 20,
    },
}
#: The headline numbers each notebook must record.
KEYS: dict[str, list[str]] = {
    "01_theorem": [
        "alpha_mc",
        "alpha_mc_ci",
        "alpha_complete",
        "alpha_paper",
        "ratio_mc_complete",
        "ratio_mc_paper",
        "theorem1_violated_fraction",
        "complete_bound_violated_fraction",
    ],
    "02_landscapes": ["variants", "top_eigenvalue", "width_mean", "width_stderr", "widest"],
    "03_sampling": [
        "sigma_level_mc",
        "sigma_level_complete",
        "dim_level_mc",
        "dim_alpha_mc",
        "grid_delta",
    ],
    "04_hessian_subspace": [
        "top_eigenvalues",
        "eigen_max_relative_residual",
        "alpha_eigen",
        "alpha_random",
        "alpha_full",
        "ratio_eigen_random_large_k",
    ],
    "05_pointwise": [
        "alpha",
        "alpha_ci",
        "pointwise_bound_holds",
        "max_hessian_norm",
        "hessian_bound",
        "hessian_bound_ratio",
        "sweep",
    ],
    "06_architectures": ["alpha", "alpha_ci", "C", "C_ci", "delta_at_k_ref", "fastest"],
    "07_sufficiency": [
        "sufficiency",
        "sufficiency_relative",
        "table",
        "alpha",
        "alpha_ci",
        "learning_accuracy",
    ],
}


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
    _execute(name, tmp_path, {**TINY.get(name, {}), "output_dir": str(output_dir), "device": "cpu"})
    results = json.loads((output_dir / "results.json").read_text())
    missing = set(KEYS.get(name, [])) - set(results)
    assert not missing, f"{name} did not record {sorted(missing)}"
    assert results


def test_a_bad_parameter_stops_a_notebook_with_a_clear_message(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        _execute("01_theorem", tmp_path, {"dataset": "imagenet", "output_dir": str(tmp_path)})
    assert error.value.ename == "ValueError" and "dataset='imagenet'" in error.value.evalue


def test_a_misspelt_parameter_is_refused_before_any_work(tmp_path):
    # papermill itself only warns and runs the default; the validation cell must refuse the name
    with pytest.raises(papermill.PapermillExecutionError) as error:
        _execute("07_sufficiency", tmp_path, {"sigmaa": 0.2, "output_dir": str(tmp_path)})
    assert error.value.ename == "ValueError"
    assert "'sigmaa' (did you mean 'sigma'?)" in error.value.evalue
    assert error.value.exec_count == 3  # parameters, injected, validation: before any training


@pytest.mark.parametrize(
    ("name", "parameters", "message"),
    [
        ("01_theorem", {"k_max": 50, "fit_k_min": 60}, "fit_k_min=60 leaves fewer than 3 prefixes"),
        ("03_sampling", {"k_max": 50, "grid_ks": [2, 80]}, "grid_ks[1]=80 is larger than K = 50"),
        (
            "04_hessian_subspace",
            {"large_k_fraction": 1.5},
            "large_k_fraction=1.5 must be a number in (0, 1)",
        ),
        ("06_architectures", {"k_max": 100, "k_ref": 150}, "k_ref=150"),
        ("07_sufficiency", {"fit_k_min": 5000}, "fit_k_min=5000 leaves fewer than 3 prefixes"),
    ],
)
def test_prefix_sizes_are_checked_before_training(name, parameters, message, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as error:
        _execute(name, tmp_path, {**parameters, "output_dir": str(tmp_path), "device": "cpu"})
    assert error.value.ename == "ValueError" and message in error.value.evalue
    assert (
        error.value.exec_count <= 4
    )  # validation or set-up cell, whose prepare() checks before training


def _execute(name, tmp_path, parameters):
    """Run one notebook under papermill, from the notebooks folder, into tmp_path."""
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(tmp_path / "executed.ipynb"),
        parameters=parameters,
        cwd=str(NOTEBOOKS),
        kernel_name="python3",
        progress_bar=False,
    )

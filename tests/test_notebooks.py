"""The notebooks: stored clean, parameterised, and runnable under papermill with tiny parameters.

Their defaults are executed by nbval (`pytest --nbval-lax notebooks/`, part of `make test`); here
each one runs with parameters small enough for seconds and must record its headline numbers,
with values that must hold whatever the numbers turn out to be (bounds that are theorems hold,
intervals contain their estimates, fractions are fractions).
"""

import math
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest

from landscape import claims, reports

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
    "01_theorem": {  # the full space (d = N = 610) of the quick plan's theorem_full network
        "k_max": 150,
        "sigmas": [0.001, 0.3],
        "draws": 16,
        "subspace_dim": None,
        "model_cfg": {"depth": 1, "width": 8},
        "epochs": 100,
        "gap_orders": 10,
        "n_boot": 50,
        "fit_k_min": 10,
    },
    "02_landscapes": {
        "variants": [  # batch-norm, and then dropout on top: one of the paper's claims (Fig. 3)
            {"model": "mlp", "depth": 1, "width": 16, "batch_norm": True},
            {"model": "mlp", "depth": 1, "width": 16, "batch_norm": True, "dropout": 0.2},
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
        "orders": 3,
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
        "replicates": 3,
        "trace_probes": 10,
    },
    "05_pointwise": {
        "k_max": 200,
        "orders": 20,
        "widths": [16],
        "depths": [1],
        "norm_samples": 20,
        "radii": [0.03],
        "radius_points": 4,
        "radius_gradients": 2,
    },
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
        "theorem1_max_ratio",
        "complete_bound_max_ratio",
        "claims",
        "headline",
    ],
    "02_landscapes": ["variants", "table", "width_mean", "width_ci", "widest", "claims", "headline"],
    "03_sampling": [
        "sigma_level_mc",
        "sigma_level_complete",
        "dim_level_mc",
        "dim_alpha_mc",
        "dim_level_original_code",
        "grid_delta",
        "claims",
        "headline",
    ],
    "04_hessian_subspace": [
        "top_eigenvalues",
        "eigen_max_relative_residual",
        "alpha_eigen",
        "alpha_random",
        "alpha_full",
        "ratio_eigen_random_large_k",
        "trace_hessian_ci",
        "claims",
        "headline",
    ],
    "05_pointwise": [
        "alpha",
        "alpha_ci",
        "pointwise_bound_holds",
        "max_hessian_norm",
        "hessian_bound",
        "hessian_bound_ratio",
        "sweep",
        "pointwise_bound_worst_ratio",
        "claims",
        "headline",
    ],
    "06_architectures": ["architectures", "table", "alpha_mean", "alpha_ci", "level_mean", "level_ci", "fastest",
                         "claims", "headline"],
    "07_sufficiency": [
        "sufficiency",
        "sufficiency_relative",
        "k_star",
        "alpha",
        "alpha_ci",
        "learning_accuracy",
        "claims",
        "headline",
    ],
}


def _positive_finite(values) -> bool:
    values = np.asarray(values, dtype=float)
    return bool(np.all(np.isfinite(values) & (values > 0)))


def _contains(interval, estimate) -> bool:
    low, high = interval
    return low <= estimate <= high


def _check_theorem(r: dict) -> None:
    _check_replicated_claims(r)
    n, by_id = len(r["sigmas"]), {c["id"]: c for c in r["claims"]}
    assert len(by_id) == len(r["claims"])  # ids are unique
    assert r["full_space"] and r["dim"] == r["num_params"]  # TINY runs the full space
    assert by_id["complete_bound"]["estimate"] < 1  # a bound: never broken, at any σ
    assert by_id["lemma1"]["estimate"] <= 1 + 1e-9  # a theorem, tested conservatively
    assert by_id["hessian_difference_corrected"]["estimate"] <= 1  # Theorem 1 bounds the paper form
    assert sum(i.startswith("theorem1_sigma_") for i in by_id) == n
    smallest = int(np.argmin(r["sigmas"]))  # ... but not Δ_k as σ → 0, where a_k² dominates
    assert r["theorem1_max_ratio"][smallest] > 1
    assert _positive_finite(r["ratio_mc_complete"]) and _positive_finite(r["ratio_mc_paper"])
    assert all(_contains(ci, a) for a, ci in zip(r["alpha_mc"], r["alpha_mc_ci"], strict=True))
    assert _contains(r["alpha_gap_orders_ci"], r["alpha_gap_orders"])
    assert all(_contains(ci, a) for a, ci in zip(r["alpha_orders"], r["alpha_orders_ci"], strict=True))
    rates = [by_id[i] for i in by_id if i.startswith("rate_sigma_")]  # the rate rests on data orders
    assert len(rates) == n and all("bootstrap over orders" in c["note"] for c in rates)
    assert r["M_loss"] > 0 and r["M_grad"] > 0 and r["M_H"] > 0


def _check_replicated_claims(r: dict, count: int | None = None) -> None:
    """Every claim has the schema of SPEC §11 and the verdict its interval and region give."""
    assert isinstance(r["headline"], str) and r["headline"]
    assert count is None or len(r["claims"]) == count
    assert len({c["id"] for c in r["claims"]}) == len(r["claims"])  # ids are unique
    for c in r["claims"]:
        assert set(c) >= {"id", "source", "statement", "estimate", "interval", "level", "region",
                          "verdict", "replicates"}
        expected = claims.verdict(c["interval"], c["region"])
        too_few = c["replicates"] < claims.MIN_COMPARISON_REPLICATES  # a comparison needs more seeds
        assert c["verdict"] == expected or (too_few and c["verdict"] == "inconclusive")


def _check_landscapes(r: dict) -> None:
    rows = r["table"]
    assert [row["variant"] for row in rows] == r["variants"]
    assert all(row["λ1"] >= row["λ2"] and 0 <= row["accuracy"] <= 1 for row in rows)
    assert _positive_finite(r["width_mean"] + [row["L_K(w*)"] for row in rows])
    assert np.shape(r["width_per_seed"]) == (len(r["variants"]), len(r["seeds"]))
    assert all(lo <= hi for lo, hi in r["width_ci"]) and set(r["widest"]) <= set(r["variants"])
    assert r["headline_figure"] == "landscapes_width_differences.png"
    _check_replicated_claims(r, count=1)  # TINY: adding dropout to an MLP with batch-norm (main paper Fig. 3)


def _check_sampling(r: dict) -> None:
    assert _positive_finite(r["sigma_level_mc"] + r["dim_level_mc"] + r["sigma_level_complete"])
    fits = zip(r["dim_alpha_mc"], r["dim_alpha_mc_ci"], strict=True)
    assert all(_contains(ci, a) for a, ci in fits)
    # a_k² involves neither σ nor the directions: its level is the same for every d
    np.testing.assert_allclose(r["dim_term_levels"]["gap"], r["dim_term_levels"]["gap"][0])
    assert all(v >= 0 and math.isfinite(v) for v in r["grid_delta"])
    _check_replicated_claims(r)
    by_id = {c["id"]: c for c in r["claims"]}
    assert len(by_id) == len(r["claims"])  # ids are unique
    ids = {"sigma_matters", "sigma_flat_small", "dim_no_effect", "dim_no_effect_original_code"}
    assert ids <= set(by_id)
    shared = r["dim_sigma"] in r["sigmas"] and r["sigma_dim"] in r["dims"]  # one curve, one claim
    assert sum(i.startswith("alpha_") for i in by_id) == len(r["sigmas"]) + len(r["dims"]) - shared
    assert all(by_id[i]["replicates"] == len(r["seeds"]) >= 3 for i in ids)  # compared over training seeds
    assert _positive_finite(r["dim_level_original_code"])
    assert all(v >= 0 for v in r["grid_step"] + r["grid_step_original_code"])


def _check_architectures(r: dict) -> None:
    names = r["architectures"]
    assert [row["variant"] for row in r["table"]] == names
    for row in r["table"]:  # means over seeds, the level inside the fit window
        assert row["alpha lo"] <= row["alpha hi"] and row["level lo"] <= row["level hi"]
        assert row["level"] > 0 and row["measured"] > 0 and 0 <= row["gap_share"] and 0 <= row["accuracy"] <= 1
    assert np.shape(r["level_per_seed"]) == (len(names), len(r["seeds"]))
    assert set(r["fastest"]) <= set(names) and set(r["slowest"]) <= set(names)
    assert r["headline_figure"] == "architectures_replicated.png"
    _check_replicated_claims(r, count=len(names) + len(r["level_differences"]))  # α per network, each change


def _check_hessian_subspace(r: dict) -> None:
    values = r["top_eigenvalues"]
    assert values == sorted(values, reverse=True) and values[0] > 0
    assert r["eigen_max_relative_residual"] <= 1e-4  # the notebook's eigen_tol
    for space in ("eigen", "random", "full"):
        fits = zip(r[f"alpha_{space}"], r[f"alpha_{space}_ci"], strict=True)
        assert all(_contains(ci, a) for a, ci in fits)
    assert _positive_finite(r["ratio_eigen_random_large_k"] + r["ratio_eigen_full_large_k"])
    assert _contains(r["trace_hessian_ci"], r["trace_hessian_estimate"])
    # top-d share of Tr H, eigen share of the change, eigen vs random, α per space, closed form per σ
    _check_replicated_claims(r, count=2 * len(r["sigmas"]) + 5)
    assert len({c["id"] for c in r["claims"]}) == len(r["claims"])
    assert all(c["replicates"] == r["replicates"] for c in r["claims"])


def _check_pointwise(r: dict) -> None:
    assert r["pointwise_bound_holds"] is True  # |L_k − L_{k−1}| ≤ 2M_ℓ/k: losses lie in [0, M_ℓ]
    assert r["pointwise_bound_ratio_min"] >= 1
    assert _contains(r["alpha_ci"], r["alpha"])
    assert r["norms_converged"] is True
    for net in r["sweep"]:  # paper 002's Hessian bound, for bias-free ReLU MLPs: a theorem
        assert 0 < net["M_H"] <= net["M_H bound"]
        assert _contains([net["alpha lo"], net["alpha hi"]], net["alpha"])
    _check_replicated_claims(r, count=len(r["sweep"]) + 3)  # α per network, the bound at and beyond w*, M_H
    assert len(r["seeds"]) >= 3 and all(c["replicates"] == len(r["seeds"]) for c in r["claims"])  # over seeds
    assert np.shape(r["alpha_per_seed"]) == (len(r["sweep"]), len(r["seeds"]))
    by_id = {c["id"]: c for c in r["claims"]}
    assert by_id["pointwise_bound_at_w_star"]["estimate"] <= 0.5 + 1e-12  # losses ≥ 0 and M_ℓ = max l_i
    assert by_id["hessian_bound_every_network"]["verdict"] == "holds"  # a theorem for these networks
    assert set(r["pointwise_bound_worst_ratio"]) == {"0", *(f"{R:g}" for R in r["radii"])}


def _check_sufficiency(r: dict) -> None:
    K = r["num_samples"]
    answers = [r["sufficiency"], r["sufficiency_relative"], *r["k_star"]]
    for a in answers:
        assert a["kind"] in ("measured", "extrapolated", "censored")
        low, high = a["interval"]
        if a["kind"] == "censored":  # no k*, and a reason why
            assert math.isnan(a["k"]) and a["reason"] and a["at_least"] <= K
        elif a["kind"] == "extrapolated":  # beyond the data; conservative end not below the estimate
            assert a["k"] >= a["estimate"] and a["k"] > 0.9 * K
        else:  # settled inside the first 90 % of the data: every bound below ε from k* on
            assert 2 <= low <= a["estimate"] <= a["k"] == high <= 2 + 0.9 * (K - 2)
    placed = [a["k"] for a in r["k_star"] if a["kind"] != "censored"]  # ε decreasing
    assert placed == sorted(placed)
    assert _contains(r["alpha_ci"], r["alpha"])
    assert all(0 <= a <= 1 for a in r["learning_accuracy"])
    _check_replicated_claims(r)
    assert [c["id"] for c in r["claims"]][0] == "delta_rate_two" and "k*(ε" in r["headline"]
    assert r["claims"][0]["replicates"] == len(r["seeds"]) >= 3  # α over training seeds
    assert len(r["alpha_per_seed"]) == len(r["seeds"]) and _contains(r["alpha_pooled_ci"], r["alpha_pooled"])


#: What each notebook's results must satisfy, whatever the numbers.
CHECKS = {
    "01_theorem": _check_theorem,
    "02_landscapes": _check_landscapes,
    "03_sampling": _check_sampling,
    "04_hessian_subspace": _check_hessian_subspace,
    "05_pointwise": _check_pointwise,
    "06_architectures": _check_architectures,
    "07_sufficiency": _check_sufficiency,
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
    results = reports.read_results(output_dir)  # "nan" strings back to floats
    missing = set(KEYS.get(name, [])) - set(results)
    assert not missing, f"{name} did not record {sorted(missing)}"
    assert results
    CHECKS.get(name, lambda _: None)(results)


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

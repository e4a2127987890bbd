"""The paper plan end to end, on small files in the data sets' own formats (SPEC §5, §6, §12).

``reports/plans/paper.yaml`` needs MNIST, Fashion-MNIST and CIFAR-10, which cannot be downloaded
here. :mod:`formats` writes a few hundred samples of each in torchvision's on-disk formats into a
temporary ``LANDSCAPE_DATA``; the plan file itself is then run through ``run_plan`` with
``overrides`` (what ``landscape run --set KEY=VALUE`` passes) that shrink every run to seconds —
the plan's data sets, architectures, optimiser and sweeps stay as they are. Each run must succeed
and record its claims. A cheaper check builds every network of the plan for its data set's
input shape.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from pathlib import Path

import pytest

from landscape import experiment, models
from landscape.reports import load_plan, run_plan
from landscape.reports.plans import notebook_defaults, notebook_parameters

import formats

PAPER = Path(__file__).resolve().parents[1] / "reports" / "plans" / "paper.yaml"

N_TRAIN, N_TEST = 200, 50
"""Samples per split of each format file: enough for every shrunk prefix and learning curve."""

#: What shrinks the paper plan to seconds: each key goes to every run whose notebook declares it
#: (as ``--set`` does), so every value must be valid for all of them: K = 40 <= N_TRAIN; the fits
#: start at their notebooks' fit_k_min (10 or 20) < k_ref = 30 < K; grid_ks and learning_ks <= K;
#: points odd. Two training seeds instead of three (comparisons of networks are then
#: inconclusive by the ledger's rule, which is not what is tested here). Architectures, data sets,
#: learning rate and batch size stay the paper's.
SHRINK = {
    "epochs": 1,
    "seeds": [0, 1],
    "k_max": 40,
    "draws": 8,
    "orders": 3,
    "gap_orders": 5,
    "n_boot": 50,
    "subspace_dim": 4,
    "dims": [1, 2],
    "d": 4,
    "points": 5,
    "width_directions": 2,
    "profile_points": 5,
    "grid_points": 5,
    "grid_ks": [2, 10, 30],
    "replicates": 2,
    "trace_probes": 10,
    "density_probes": 2,
    "density_steps": 10,
    "widths": [8, 16],
    "depths": [1, 2],
    "norm_samples": 10,
    "radius_points": 4,
    "radius_gradients": 2,
    "k_ref": 30,
    "learning_ks": [20, 40],
    "learning_min_steps": 10,
}

VERDICTS = {"holds", "fails", "inconclusive"}

#: Input shape of each data set of the plan (what ``data.load`` gives for it).
SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory) -> Path:
    return formats.write_paper_data(tmp_path_factory.mktemp("data"), N_TRAIN, N_TEST)


def test_format_files_load_as_the_paper_data_sets(paper_data):
    from landscape import data

    for name, shape in SHAPES.items():
        official = pytest.warns(RuntimeWarning, match="differ from the official CIFAR-10")
        with official if name == "cifar10" else contextlib.nullcontext():
            ds = data.load(name, root=paper_data)
        assert ds.input_shape == shape and ds.num_classes == 10
        assert ds.train[0].shape == (N_TRAIN, *shape) and ds.test[0].shape == (N_TEST, *shape)
        assert set(ds.train[1].tolist()) == set(range(10)) == set(ds.test[1].tolist())


def test_every_network_of_the_plan_builds_for_its_data_set():
    """The architectures at full size (CNN on 1×28×28 and 3×32×32, bias-free MLPs...)."""
    for run in load_plan(PAPER).runs:
        p = {**notebook_defaults(run.notebook), **run.parameters}
        shape = SHAPES[p["dataset"]]
        if "variants" in p:  # 02_landscapes, 06_architectures
            configs = [dict(v) for v in p["variants"]]
        elif "widths" in p:  # 05_pointwise: bias-free ReLU MLPs, the reference and both sweeps
            shapes = [(p["depth"], p["width"])] + [(p["depth"], h) for h in p["widths"]]
            shapes += [(L, p["width"]) for L in p["depths"]]
            configs = [{"model": "mlp", "depth": L, "width": h, "bias": False} for L, h in shapes]
        else:
            configs = [{"model": p["model"], **p["model_cfg"]}]
        for cfg in configs:
            net = models.build(cfg.pop("model"), shape, 10, **cfg)
            assert sum(x.numel() for x in net.parameters()) > 0, (run.name, cfg)


def test_every_run_trains_as_the_papers():
    """Adam 3e-4, batch 64: given to the notebooks that declare them, the library's default else."""
    defaults = inspect.signature(experiment.prepare).parameters
    for run in load_plan(PAPER).runs:
        declared = notebook_parameters(run.notebook)
        for key, value in {"lr": 3e-4, "batch_size": 64}.items():
            used = run.parameters[key] if key in declared else defaults[key].default
            assert used == value, (run.name, key, used)


def test_shrinking_overrides_are_declared_by_the_plan_notebooks():
    declared = set().union(*(notebook_parameters(r.notebook) for r in load_plan(PAPER).runs))
    assert not set(SHRINK) - declared


def test_paper_plan_runs_end_to_end_on_format_files(paper_data, tmp_path, monkeypatch):
    """Every run of paper.yaml, shrunk by SHRINK, succeeds and records its claims."""
    monkeypatch.setenv("LANDSCAPE_DATA", str(paper_data))
    monkeypatch.setenv("LANDSCAPE_CACHE", str(tmp_path / "cache"))  # never the user's cache
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two notebooks at a time on two cores
    plan = load_plan(PAPER)
    results = run_plan(PAPER, output_root=tmp_path / "reports", overrides=SHRINK, jobs=_jobs())
    assert [r.name for r in results] == [run.name for run in plan.runs]
    failed = {r.name: r.error for r in results if r.status != "succeeded"}
    assert not failed, "\n\n".join(f"{name}: {error}" for name, error in failed.items())
    for result in results:
        recorded = json.loads((result.output_dir / "results.json").read_text())
        claims = recorded.get("claims")
        assert claims, f"{result.name}: no claims in results.json"
        for claim in claims:
            assert set(claim) >= {"id", "statement", "estimate", "interval", "verdict"}, claim
            assert claim["verdict"] in VERDICTS, (result.name, claim)
            assert math.isfinite(claim["estimate"]), (result.name, claim)
        assert (result.output_dir / "report.html").is_file()
    index = (tmp_path / "reports" / "paper" / "index.html").read_text()
    assert all(run.name in index for run in plan.runs)


def _jobs() -> int:
    """Notebooks run at a time: two (the kernels' start and import dominate at this scale)."""
    return max(1, min(2, os.cpu_count() or 1))

"""Bad input is refused where it enters, with one line naming the parameter, the value and what is
expected (issue 9, §3): Problem, directions, Monte Carlo, rate fits, k*, surfaces, experiment.prepare,
training (divergence, the model cache) and the data sets. Every network here is tiny."""

from __future__ import annotations

import math
import struct
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from landscape import data, delta, directions, experiment, sufficiency, surface, theory, train
from landscape.delta import Curve
from landscape.directions import Subspace
from landscape.problem import Problem, default_max_memory

from conftest import tiny_data, tiny_net


def _problem(X=None, y=None, **kwargs) -> Problem:
    X0, y0 = tiny_data()
    X = X0 if X is None else X
    y = y0 if y is None else y
    return Problem(tiny_net(), X, y, device="cpu", **kwargs)


# -- Problem -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [3, -1])
def test_problem_refuses_labels_outside_the_networks_classes(label):
    y = tiny_data()[1].clone()
    y[4] = label
    with pytest.raises(
        ValueError, match=rf"y holds 1 label\(s\) outside 0\.\.2,.*{label} at sample 4"
    ):
        _problem(y=y)


def test_problem_refuses_fractional_labels_and_takes_whole_float_ones():
    y = tiny_data()[1].double()
    with pytest.raises(
        ValueError, match=r"y holds labels that are not whole numbers \(e\.g\. 2\.7"
    ):
        _problem(y=torch.full((12,), 2.7, dtype=torch.float64))
    prob = _problem(y=y)  # whole numbers stored as floats are class indices
    assert prob.y.dtype == torch.long and torch.equal(prob.y, tiny_data()[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_problem_refuses_non_finite_inputs(bad):
    X = tiny_data()[0].clone()
    X[7, 2] = bad
    with pytest.raises(ValueError, match=r"X holds 1 non-finite value\(s\).*sample 7"):
        _problem(X=X)


def test_problem_refuses_inputs_the_network_cannot_take():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"X of shape \(12, 7\).*Linear takes 4 features"):
        _problem(X=torch.randn(12, 7, generator=generator, dtype=torch.float64))
    with pytest.raises(ValueError, match="X has dtype torch.int64.*floating"):
        _problem(X=torch.randint(0, 5, (12, 4), generator=generator))


def test_problem_dtype_takes_names_and_refuses_others():
    assert _problem(dtype="float64").dtype == torch.float64
    assert _problem(dtype="float32").dtype == torch.float32
    with pytest.raises(ValueError, match="dtype='float65' is not a floating dtype"):
        _problem(dtype="float65")


def test_problem_mse_needs_targets_shaped_like_the_outputs():
    with pytest.raises(ValueError, match=r"y of shape \(12,\).*loss='mse': expected \(12, 3\)"):
        _problem(loss="mse")
    with pytest.raises(ValueError, match=r"y of shape \(12, 3\).*class indices"):
        _problem(y=torch.zeros(12, 3, dtype=torch.long))


def test_problem_refuses_a_network_with_non_finite_parameters():
    net = tiny_net()
    with torch.no_grad():
        net[0].bias[1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite parameter.*'0\.bias'"):
        Problem(net, *tiny_data(), device="cpu")


# -- seeds, subspaces, Monte Carlo -------------------------------------------------------------------


def test_seeds_must_be_integers(tiny_problem):
    with pytest.raises(ValueError, match="seed='a' must be an integer seed"):
        directions.random(tiny_problem, 2, seed="a")
    with pytest.raises(ValueError, match="seed=1.5 must be an integer seed"):
        directions.random(tiny_problem, 2, seed=1.5)
    with pytest.raises(ValueError, match="seed=None must be an integer seed"):
        delta.monte_carlo(tiny_problem, 0.1, 4, seed=None, progress=False)
    with pytest.raises(ValueError, match="seed=None"):
        delta.pointwise(tiny_problem, 3, seed=None)
    with pytest.raises(ValueError, match="prob must be a landscape.problem.Problem"):
        directions.random(None, 2)


def test_subspace_refuses_zero_non_finite_and_dependent_columns(tiny_problem):
    N = tiny_problem.num_params
    with pytest.raises(ValueError, match="basis column 0 is zero"):
        Subspace(torch.zeros(N, 2, dtype=torch.float64))
    basis = directions.random(tiny_problem, 3, seed=1).basis.clone()
    zero, infinite, dependent = basis.clone(), basis.clone(), basis.clone()
    zero[:, 1] = 0
    infinite[5, 2] = float("inf")
    dependent[:, 2] = 2 * basis[:, 0] - basis[:, 1]
    with pytest.raises(ValueError, match="basis column 1 is zero"):
        Subspace(zero)
    with pytest.raises(ValueError, match="basis column 2 holds non-finite"):
        Subspace(infinite)
    with pytest.raises(ValueError, match=r"basis column 2 is \(numerically\) a linear combination"):
        Subspace(dependent)
    assert Subspace(basis * torch.tensor([1.0, 1e-9, 3.0], dtype=torch.float64)).dim == 3


def test_per_draw_values_beyond_float32_keep_their_precision():
    """d_k² ~ 1e40 used to be kept in float32 as inf, and the bootstrap interval became NaN."""
    net = nn.Linear(4, 3).double().eval()
    with torch.no_grad():
        net.weight.mul_(1e20)
    prob = Problem(net, *tiny_data(), device="cpu")
    curve = delta.monte_carlo(prob, 1e19, 16, progress=False)
    assert curve.samples.max() > np.finfo(np.float32).max
    assert np.isfinite(curve.samples).all()
    fit = curve.fit_rate(k_min=2, n_boot=50)
    assert all(map(math.isfinite, fit.ci))


def _curve(value, stderr=None, draws=8, nonfinite=None) -> Curve:
    k = np.arange(2, len(value) + 2)
    return Curve(
        k=k,
        value=np.asarray(value, dtype=float),
        stderr=np.full(len(k), 1e-3) if stderr is None else stderr,
        sigma=2.0,
        draws=draws,
        dim=3,
        nonfinite=np.zeros(len(k), dtype=int) if nonfinite is None else nonfinite,
    )


def test_a_curve_without_finite_values_says_so():
    curve = _curve(np.full(40, np.nan), np.full(40, np.nan), nonfinite=np.full(40, 8))
    message = r"every one of the 8 draws at sigma=2 gave a non-finite loss"
    with pytest.raises(ValueError, match=message) as error:
        curve.fit_rate(k_min=10)
    assert "k_min" not in str(error.value)
    with pytest.raises(ValueError, match=message):
        sufficiency.k_star(curve, 1e-3)
    k = np.arange(2, 42)
    with pytest.raises(ValueError, match="every value with 10 <= k <= 41 is non-finite"):
        theory.fit_rate(k, np.full(40, np.inf), k_min=10)


# -- rate fits and k* ---------------------------------------------------------------------------------


def test_fit_rate_refuses_what_it_cannot_fit():
    k = np.arange(2, 50)
    v = 1.0 / k**2
    with pytest.raises(ValueError, match="values must hold numbers"):
        theory.fit_rate(k, ["a"] * len(k))
    k_nan = k.astype(float)
    k_nan[3] = np.nan
    with pytest.raises(ValueError, match=r"k must hold finite sample counts > 0.*k\[3\]"):
        theory.fit_rate(k_nan, v)
    with pytest.raises(ValueError, match=r"stderr has shape \(5,\); expected .*\(48,\)"):
        theory.fit_rate(k, v, stderr=np.ones(5))
    with pytest.raises(ValueError, match=r"samples has shape \(4, 5\); expected \(units, 48\)"):
        theory.fit_rate(k, v, samples=np.ones((4, 5)))
    with pytest.raises(ValueError, match="same k=10"):
        theory.fit_rate(np.full(20, 10), np.ones(20), k_min=1)
    with pytest.raises(ValueError, match="k_min=10.7 must be an integer"):
        theory.fit_rate(k, v, k_min=10.7)
    with pytest.raises(ValueError, match="level='a' must be a number in"):
        theory.fit_rate(k, v, level="a")


def test_closed_forms_and_bounds_name_their_arguments():
    with pytest.raises(ValueError, match=r"aligned with k.*gap \(3,\), grad_sq \(4,\)"):
        theory.complete_form(np.ones(3), np.ones(4), 1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="max_input_norm='a' must be a finite number >= 0"):
        theory.relu_mlp_hessian_bound(2, "a", 1.0)
    with pytest.raises(ValueError, match=r"k must hold finite sample counts > 0 \(the bound"):
        theory.hessian_difference_bound(1.0, [0, 1])
    with pytest.raises(ValueError, match="max_loss='a'"):
        theory.complete_bound(0.1, 2, "a", 1.0, 1.0, [2])


def test_k_star_refuses_an_unknown_criterion_and_a_fractional_fit_k_min():
    curve = _curve(1.0 / np.arange(2, 42.0) ** 2)
    with pytest.raises(ValueError, match="criterion='bogus' is not supported"):
        sufficiency.k_star(curve, 1.0, criterion="bogus")
    with pytest.raises(ValueError, match="fit_k_min=5.5 must be an integer"):
        sufficiency.k_star(curve, 1e-9, fit_k_min=5.5)


def test_relative_needs_the_curves_own_problem(tiny_problem):
    with pytest.raises(ValueError, match="curve has 40 values .* K=12 samples"):
        sufficiency.relative(_curve(np.ones(40)), tiny_problem)


# -- surfaces ----------------------------------------------------------------------------------------


def test_surface_grid_arguments(tiny_problem):
    plane = directions.random(tiny_problem, 2, seed=0)
    with pytest.raises(ValueError, match="span='a' must be a positive number"):
        surface.scan(tiny_problem, plane, span="a", points=3, progress=False)
    with pytest.raises(ValueError, match=r"span=\(1, 2, 3\)"):
        surface.scan(tiny_problem, plane, span=(1, 2, 3), points=3, progress=False)
    with pytest.raises(ValueError, match="ks\\[0\\]=5.5 must be an integer"):
        surface.scan(tiny_problem, plane, points=3, ks=[5.5], progress=False)
    with pytest.raises(ValueError, match="got d=3"):
        surface.scan(tiny_problem, directions.random(tiny_problem, 3), points=3, progress=False)
    assert surface.scan(tiny_problem, plane, points=3, ks=5, progress=False).k.tolist() == [5]


# -- experiment.prepare and training -----------------------------------------------------------------

_TINY = dict(n_train=40, k_max=20, device="cpu", progress=False, model_cfg={"depth": 1, "width": 4})


def test_prepare_names_model_and_cache_dir(tmp_path):
    with pytest.raises(ValueError, match="model='resnet' is not supported"):
        experiment.prepare("digits", "resnet", epochs=0, cache_dir=None, **_TINY)
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="cache_dir=.*a_file' is a file; expected a folder"):
        experiment.prepare(epochs=1, cache_dir=a_file, **_TINY)
    with pytest.raises(ValueError, match="cache_dir=.*lies under .*a_file', a file"):
        experiment.prepare(epochs=1, cache_dir=a_file / "models", **_TINY)


def test_prepare_passes_max_memory_and_checks_it_before_training(tmp_path):
    with pytest.raises(ValueError, match="max_memory=0 must be"):
        experiment.prepare(epochs=1, cache_dir=tmp_path, max_memory=0, **_TINY)
    assert not any(tmp_path.iterdir())  # refused before any training was cached
    small = experiment.prepare(epochs=1, cache_dir=None, max_memory=5_000, **_TINY).problem
    default = experiment.prepare(epochs=1, cache_dir=None, **_TINY).problem
    assert small.max_memory == 5_000
    assert default.max_memory == default_max_memory(torch.device("cpu"))
    assert small.batch_size(small.activation_bytes) < default.num_samples  # it does chunk
    # the budget changes the chunking, not the numbers
    W = small.center + 0.1 * torch.randn(3, small.num_params)
    torch.testing.assert_close(small.per_sample_losses(W), default.per_sample_losses(W))


def test_diverged_training_warns_with_the_numbers(tmp_path):
    with pytest.warns(
        train.TrainingDivergedWarning, match=r"training diverged.*against chance 0\.1"
    ):
        experiment.prepare(epochs=1, lr=1e6, cache_dir=tmp_path, **_TINY)
    with pytest.warns(train.TrainingDivergedWarning):  # a cached diverged network warns again
        experiment.prepare(epochs=1, lr=1e6, cache_dir=tmp_path, **_TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.TrainingDivergedWarning)
        experiment.prepare(epochs=1, cache_dir=None, **_TINY)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _mlp(ds, classes=10):
    from landscape import models

    return models.build("mlp", ds.input_shape, classes, depth=1, width=4, seed=0)


def test_non_finite_training_loss_is_an_error(digits):
    with pytest.raises(train.TrainingDivergedError, match=r"loss became nan.*lr=1e\+30"):
        train.fit(_mlp(digits), digits, 2, lr=1e30, n_train=40, device="cpu", progress=False)


def test_training_data_is_checked_against_the_network(digits):
    from dataclasses import replace

    X = digits.train[0].clone()
    X[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ds.train inputs holds 1 non-finite.*sample 3"):
        train.fit(_mlp(digits), replace(digits, train=(X, digits.train[1])), 1, progress=False)
    with pytest.raises(ValueError, match=r"outputs of shape \(3,\).*10 classes"):
        train.fit(_mlp(digits, classes=3), digits, 1, n_train=40, progress=False)


def test_a_directory_in_place_of_a_model_cache_entry_is_named(digits, tmp_path):
    net = _mlp(digits)
    train.fit(net, digits, 1, n_train=40, cache_dir=tmp_path, device="cpu", progress=False)
    (entry,) = tmp_path.glob("*.pt")
    entry.unlink()
    entry.mkdir()
    with pytest.raises(ValueError, match=rf"{entry.name} is a directory"):
        train.fit(net, digits, 1, n_train=40, cache_dir=tmp_path, device="cpu", progress=False)


def test_learning_curve_arguments(tmp_path):
    setup = experiment.prepare(epochs=1, cache_dir=tmp_path, **_TINY)
    with pytest.raises(ValueError, match="ks\\[0\\]=20.5 must be an integer"):
        experiment.learning_curve(setup, [20.5], cache_dir=None)
    with pytest.raises(ValueError, match="seeds\\[0\\]='a'"):
        experiment.learning_curve(setup, [20], seeds=["a"], cache_dir=None)
    with pytest.raises(ValueError, match="min_steps=-1"):
        experiment.learning_curve(setup, [20], min_steps=-1, cache_dir=None)


# -- data sets ----------------------------------------------------------------------------------------


def _write_idx(path, array) -> None:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(raw) -> None:
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", np.zeros((6, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.zeros(6))
    _write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(4))


def test_garbage_mnist_files_are_named_with_the_format_expected(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _fake_mnist(raw)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"garbage" * 20)
    with pytest.raises(data.DatasetFormatError, match=r"t10k-images-idx3-ubyte is not an IDX file"):
        data.load("mnist", root=tmp_path)
    _fake_mnist(tmp_path / "b" / "MNIST" / "raw")
    labels = tmp_path / "b" / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-2])
    with pytest.raises(data.DatasetFormatError, match=r"train-labels-idx1-ubyte holds 12 bytes"):
        data.load("mnist", root=tmp_path / "b")


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DatasetDownloadError) as error:
        data.load("mnist", root=tmp_path, download=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith("Downloading data set 'mnist' failed")
    assert str(tmp_path / "MNIST" / "raw") in message and "offline (test)" in message
    assert isinstance(error.value, data.DatasetNotFoundError)


def test_a_truncated_mnist1d_cache_is_regenerated_with_a_warning(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    fake = {"x": rng.random((10, 40)), "y": np.arange(10), "x_test": rng.random((5, 40))}
    fake["y_test"] = np.arange(5)
    monkeypatch.setattr(data, "_generate_mnist1d", lambda args: fake)
    first = data.load("mnist1d", root=tmp_path)
    (cached,) = tmp_path.glob("mnist1d-*.npz")
    cached.write_bytes(cached.read_bytes()[:300])
    with pytest.warns(RuntimeWarning, match="mnist1d cache .* unreadable .*regenerating"):
        again = data.load("mnist1d", root=tmp_path)
    assert torch.equal(first.train[0], again.train[0])
    assert np.load(cached)["x"].shape == (10, 40)
    cached.unlink()
    cached.mkdir()
    with pytest.raises(ValueError, match="mnist1d cache .* is a directory"):
        data.load("mnist1d", root=tmp_path)


def test_download_must_be_a_flag():
    with pytest.raises(ValueError, match="download='no' must be True or False"):
        data.load("digits", download="no")


def test_fit_rate_with_lost_bootstrap_replicates_gives_no_interval():
    # only draw 0 is positive: replicates that miss it have nothing to fit, and the ones left are a
    # biased sample of the bootstrap distribution (at sigma = 1e8 they once excluded the estimate)
    k = np.arange(2, 12, dtype=float)
    samples = np.zeros((20, len(k)))
    samples[0] = 1.0 / k**2
    with pytest.warns(RuntimeWarning, match="bootstrap replicates"):
        fit = theory.fit_rate(k, samples.mean(0), k_min=2, samples=samples, n_boot=200)
    assert fit.alpha == pytest.approx(2.0)
    assert np.isnan(fit.ci).all()

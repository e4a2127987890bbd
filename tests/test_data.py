"""Tests of landscape.data: embedded data sets, torchvision formats on tiny fakes, errors."""

from __future__ import annotations

import hashlib
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.datasets

from landscape import data

import formats

# ------------------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits")


def test_digits_shapes_and_types(digits):
    x_train, y_train = digits.train
    x_test, y_test = digits.test
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert len(y_train) == 1347 and len(y_test) == 450
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert set(y_train.tolist()) == set(range(10))


def test_digits_split_is_stratified(digits):
    train_counts = torch.bincount(digits.train[1], minlength=10)
    test_counts = torch.bincount(digits.test[1], minlength=10)
    total = train_counts + test_counts
    expected = total.double() * data.DIGITS_TEST_SIZE
    assert torch.all((test_counts - expected).abs() <= 1)


def test_digits_normalised_with_train_statistics(digits):
    x_train = digits.train[0]
    assert abs(x_train.mean().item()) < 1e-5
    assert x_train.std().item() == pytest.approx(1.0, abs=1e-4)
    # the test split uses the train statistics, so it is only approximately standardised
    assert abs(digits.test[0].mean().item()) < 0.1


def test_repr_is_a_one_line_summary_not_the_tensors(digits):
    text = repr(digits)
    assert text == (
        "Dataset('digits': 1,347 train + 450 test samples of shape (1, 8, 8), 10 classes)"
    )
    assert str(digits) == text


def test_digits_is_deterministic(digits):
    again = data.load("digits")
    for a, b in zip((*digits.train, *digits.test), (*again.train, *again.test)):
        assert torch.equal(a, b)


def test_names_are_case_insensitive_with_aliases():
    assert data.load(" DIGITS ").name == "digits"
    assert data._canonical_name("Fashion_MNIST") == "fashion-mnist"


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(ValueError, match="name='imagenet'") as error:
        data.load("imagenet")
    for name in data.NAMES:
        assert repr(name) in str(error.value)


# ----------------------------------------------------------------------------------- mnist1d


@pytest.fixture(scope="module")
def mnist1d_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mnist1d")


@pytest.fixture(scope="module")
def mnist1d(mnist1d_root) -> data.Dataset:
    return data.load("mnist1d", root=mnist1d_root)


def test_mnist1d_shapes(mnist1d):
    assert mnist1d.input_shape == (1, 40)
    assert mnist1d.num_classes == 10
    assert mnist1d.train[0].shape == (4000, 1, 40) and mnist1d.test[0].shape == (1000, 1, 40)
    assert mnist1d.train[1].shape == (4000,) and mnist1d.train[1].dtype == torch.int64
    assert abs(mnist1d.train[0].mean().item()) < 1e-4


def test_mnist1d_is_cached_and_reloads_identically(mnist1d, mnist1d_root):
    files = list(mnist1d_root.glob("mnist1d-*.npz"))
    assert len(files) == 1
    assert not list(mnist1d_root.glob("*.tmp"))  # the atomic write left no temp file
    again = data.load("mnist1d", root=mnist1d_root)
    for a, b in zip((*mnist1d.train, *mnist1d.test), (*again.train, *again.test)):
        assert torch.equal(a, b)


def test_mnist1d_corrupted_cache_is_regenerated_without_touching_global_rngs(mnist1d, mnist1d_root):
    (cached,) = mnist1d_root.glob("mnist1d-*.npz")
    cached.write_bytes(b"not an npz file")
    random.seed(123)
    np.random.seed(123)
    with pytest.warns(RuntimeWarning, match="unreadable .*regenerating"):
        again = data.load("mnist1d", root=mnist1d_root)  # regenerates; make_dataset seeds globals
    assert random.random() == random.Random(123).random()
    assert np.random.rand() == np.random.RandomState(123).rand()
    assert torch.equal(again.train[0], mnist1d.train[0])
    assert np.load(cached)["x"].shape == (4000, 40)


def test_mnist1d_cache_dir_from_environment(monkeypatch, mnist1d_root):
    monkeypatch.setenv("LANDSCAPE_CACHE", str(mnist1d_root))
    assert data._cache_dir(None) == mnist1d_root


# ------------------------------------------------------------------- MNIST-format (torchvision)


def _unnormalise(x_train: torch.Tensor, raw_train: np.ndarray) -> torch.Tensor:
    """Invert the per-channel normalisation using the raw train statistics (channel axis 1)."""
    raw = torch.as_tensor(raw_train, dtype=torch.float32)
    dims = [0, *range(2, raw.ndim)]
    std, mean = torch.std_mean(raw, dim=dims, keepdim=True)
    return x_train * std + mean


@pytest.mark.parametrize(("name", "cls"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_format_files_load_as_torchvision_reads_them(tmp_path, name, cls):
    arrays = formats.write_mnist(tmp_path, name, n_train=60, n_test=20)
    ds = data.load(name, root=tmp_path)
    raw_train = arrays["train-images-idx3-ubyte"][:, None]
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.train[0].shape == (60, 1, 28, 28) and ds.test[0].shape == (20, 1, 28, 28)
    assert ds.train[0].dtype == torch.float32 and ds.train[1].dtype == torch.int64
    assert ds.train[1].tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert set(ds.train[1].tolist()) == set(range(10))
    restored = _unnormalise(ds.train[0], raw_train)
    torch.testing.assert_close(restored, torch.as_tensor(raw_train, dtype=torch.float32))
    # the same files through torchvision's own reader: the format is torchvision's
    for split, (x, y) in (("train", ds.train), ("test", ds.test)):
        theirs = getattr(torchvision.datasets, cls)(str(tmp_path), train=split == "train")
        assert torch.equal(theirs.targets, y)
        raw = theirs.data[:, None].float()
        torch.testing.assert_close(_unnormalise(x, raw_train), raw)


def test_mnist_labels_outside_the_classes_are_a_format_error(tmp_path):
    arrays = formats.write_mnist(tmp_path, n_train=20, n_test=10)
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[3] = 10
    formats.write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(data.DatasetFormatError, match="t10k-labels-idx1-ubyte holds label 10"):
        data.load("mnist", root=tmp_path)


def test_an_incomplete_folder_names_the_missing_file(tmp_path):
    formats.write_mnist(tmp_path, n_train=20, n_test=10)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(data.DatasetNotFoundError, match=r"missing: t10k-images-idx3-ubyte\)"):
        data.load("mnist", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("mnist", "MNIST/raw"),
        ("fashion-mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
    ],
)
def test_missing_files_raise_one_clear_error(tmp_path, name, folder):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load(name, root=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / folder) in message
    assert "download=True" in message
    assert isinstance(error.value, FileNotFoundError)


def test_missing_files_message_uses_environment_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(data.DatasetNotFoundError, match="elsewhere"):
        data.load("mnist")


# ---------------------------------------------------------------------------------- CIFAR-10


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_loads_as_torchvision_reads_it(tmp_path, monkeypatch):
    """Our reader against torchvision's on the same files (its md5 sums pointed at the fakes')."""
    folder = tmp_path / formats.CIFAR_FOLDER
    arrays = formats.write_cifar10(tmp_path, n_train=23, n_test=7)
    with pytest.warns(RuntimeWarning, match="differ from the official CIFAR-10 release"):
        ds = data.load("cifar10", root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.train[0].shape == (23, 3, 32, 32) and ds.test[0].shape == (7, 3, 32, 32)
    assert ds.train[1].tolist() == arrays["y_train"].tolist()
    assert ds.test[1].tolist() == arrays["y_test"].tolist()
    restored = _unnormalise(ds.train[0], arrays["x_train"])
    torch.testing.assert_close(restored, torch.as_tensor(arrays["x_train"], dtype=torch.float32))
    per_channel_mean = ds.train[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(per_channel_mean, torch.zeros(3), atol=1e-5, rtol=0)

    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[n, _md5(folder / n)] for n, _ in cifar.train_list])
    monkeypatch.setattr(cifar, "test_list", [[n, _md5(folder / n)] for n, _ in cifar.test_list])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": _md5(folder / "batches.meta")})
    for split, (x, y) in (("train", ds.train), ("test", ds.test)):
        theirs = cifar(str(tmp_path), train=split == "train")  # (n, H, W, C) numpy, list
        assert theirs.targets == y.tolist()
        raw = torch.from_numpy(theirs.data).permute(0, 3, 1, 2).float()
        torch.testing.assert_close(_unnormalise(x, arrays["x_train"]), raw)


def test_cifar10_unpicklable_or_wrong_batches_are_format_errors(tmp_path):
    folder = tmp_path / formats.CIFAR_FOLDER
    formats.write_cifar10(tmp_path, n_train=10, n_test=5)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(data.DatasetFormatError, match="data_batch_3 is not a pickled CIFAR batch"),
    ):
        data.load("cifar10", root=tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8)}))
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(data.DatasetFormatError, match="data_batch_3 lacks 'labels'"),
    ):
        data.load("cifar10", root=tmp_path)
    batch = {"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(data.DatasetFormatError, match=r"expected uint8 \(n, 3072\)"),
    ):
        data.load("cifar10", root=tmp_path)

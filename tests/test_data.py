"""Tests of landscape.data: embedded data sets, torchvision formats on tiny fakes, errors."""

from __future__ import annotations

import hashlib
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from landscape import data

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


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Uncompressed IDX: magic (0, 0, type 0x08 = uint8, ndim), big-endian sizes, raw bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(raw: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """Write tiny MNIST-layout files into ``raw`` and return the arrays written."""
    rng = np.random.default_rng(0)
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        _write_idx(raw / name, array)
    return arrays


def _unnormalise(x_train: torch.Tensor, raw_train: np.ndarray) -> torch.Tensor:
    """Invert the per-channel normalisation using the raw train statistics (channel axis 1)."""
    raw = torch.as_tensor(raw_train, dtype=torch.float32)
    dims = [0, *range(2, raw.ndim)]
    std, mean = torch.std_mean(raw, dim=dims, keepdim=True)
    return x_train * std + mean


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_format_loads_through_torchvision(tmp_path, name, folder):
    arrays = _fake_mnist(tmp_path / folder / "raw")
    ds = data.load(name, root=tmp_path)
    raw_train = arrays["train-images-idx3-ubyte"][:, None]
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.train[0].shape == (6, 1, 28, 28) and ds.test[0].shape == (4, 1, 28, 28)
    assert ds.train[1].tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.test[1].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    restored = _unnormalise(ds.train[0], raw_train)
    torch.testing.assert_close(restored, torch.as_tensor(raw_train, dtype=torch.float32))


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


def _fake_cifar(folder: Path) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """Write a tiny ``cifar-10-batches-py`` in CIFAR's pickled python format."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    train_images, train_labels = [], []
    for i in range(1, 6):
        images = rng.integers(0, 256, (2, 3 * 32 * 32), dtype=np.uint8)  # rows: R, G, B planes
        labels = rng.integers(0, 10, 2).tolist()
        _pickle(folder / f"data_batch_{i}", {"data": images, "labels": labels})
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, (3, 3 * 32 * 32), dtype=np.uint8)
    test_labels = rng.integers(0, 10, 3).tolist()
    _pickle(folder / "test_batch", {"data": test_images, "labels": test_labels})
    _pickle(folder / "batches.meta", {"label_names": [f"class {i}" for i in range(10)]})
    return np.concatenate(train_images), train_labels, test_images, test_labels


def _pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_loads_through_torchvision(tmp_path, monkeypatch):
    """torchvision checks fixed md5 sums of the real files; point them at the fakes' sums.

    Everything else is torchvision's own path: integrity check, unpickling, the (n, 3, 32, 32)
    reshape and HWC transpose, the metadata file; then our conversion back to (n, C, H, W).
    """
    folder = tmp_path / "cifar-10-batches-py"
    train_images, train_labels, test_images, test_labels = _fake_cifar(folder)
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[n, _md5(folder / n)] for n, _ in cifar.train_list])
    monkeypatch.setattr(cifar, "test_list", [[n, _md5(folder / n)] for n, _ in cifar.test_list])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": _md5(folder / "batches.meta")})

    ds = data.load("cifar10", root=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.train[0].shape == (10, 3, 32, 32) and ds.test[0].shape == (3, 3, 32, 32)
    assert ds.train[1].tolist() == train_labels and ds.test[1].tolist() == test_labels
    raw_train = train_images.reshape(-1, 3, 32, 32)
    restored = _unnormalise(ds.train[0], raw_train)
    torch.testing.assert_close(restored, torch.as_tensor(raw_train, dtype=torch.float32))
    per_channel_mean = ds.train[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(per_channel_mean, torch.zeros(3), atol=1e-5, rtol=0)


def test_cifar10_with_wrong_checksums_is_reported_as_missing(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")  # real md5 sums: the fakes fail them
    with pytest.raises(data.DatasetNotFoundError, match="corrupted"):
        data.load("cifar10", root=tmp_path)

"""Small MNIST, Fashion-MNIST and CIFAR-10 files in torchvision's own on-disk formats, for tests.

``write_mnist`` writes the four uncompressed IDX files into ``<root>/MNIST/raw/`` (or
``FashionMNIST/raw/``), ``write_cifar10`` the pickled python batches into
``<root>/cifar-10-batches-py/`` — the layouts torchvision leaves after ``download=True`` and
``landscape.data.load`` reads. The pixels are deterministic and carry class structure (each class
has its own smooth template, plus noise), so a network trained on them learns something: training
is not degenerate and its loss landscape has a basin. They are not the real data sets.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

__all__ = ["class_images", "write_cifar10", "write_idx", "write_mnist", "write_paper_data"]

MNIST_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
"""Folder under the data root of each MNIST-format data set (torchvision's class names)."""

CIFAR_FOLDER = "cifar-10-batches-py"


def class_images(
    n: int,
    shape: tuple[int, ...],
    seed: int,
    split: int = 0,
    classes: int = 10,
    noise: float = 40.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images of ``shape`` and their labels: a smooth template per class plus noise.

    The templates are low-frequency patterns drawn from ``seed`` alone, so the splits (``split``
    0 for train, 1 for test) share them; labels cycle through the classes in a shuffled order
    (every class appears). Two calls with the same arguments agree.
    """
    coarse = np.random.default_rng(seed).uniform(0, 255, (classes, *shape[:-2], 4, 4))
    rng = np.random.default_rng([seed, split])
    templates = np.kron(coarse, np.ones((shape[-2] // 4 + 1, shape[-1] // 4 + 1)))
    templates = templates[..., : shape[-2], : shape[-1]]
    labels = rng.permutation(np.arange(n) % classes)
    pixels = templates[labels] + rng.normal(0, noise, (n, *shape))
    return np.clip(pixels, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed uint8 IDX file: magic 00 00 08 <ndim>, big-endian sizes, raw bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(
    root: Path, name: str = "mnist", n_train: int = 400, n_test: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``<root>/<MNIST|FashionMNIST>/raw/`` with 28x28 images; return the arrays written."""
    raw = Path(root) / MNIST_FOLDERS[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    x_train, y_train = class_images(n_train, (28, 28), seed, split=0)
    x_test, y_test = class_images(n_test, (28, 28), seed, split=1)
    arrays = {
        "train-images-idx3-ubyte": x_train,
        "train-labels-idx1-ubyte": y_train,
        "t10k-images-idx3-ubyte": x_test,
        "t10k-labels-idx1-ubyte": y_test,
    }
    for filename, array in arrays.items():
        write_idx(raw / filename, array)
    return arrays


def write_cifar10(
    root: Path, n_train: int = 400, n_test: int = 100, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``<root>/cifar-10-batches-py/`` with 3x32x32 images in CIFAR's pickled format.

    The train images are split over ``data_batch_1`` … ``data_batch_5`` (rows of 3,072 bytes: the
    red, green and blue planes), the test images go to ``test_batch``, the class names to
    ``batches.meta``. Returns ``x_train (n, 3, 32, 32)``, ``y_train``, ``x_test``, ``y_test``.
    """
    folder = Path(root) / CIFAR_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = class_images(n_train, (3, 32, 32), seed, split=0)
    x_test, y_test = class_images(n_test, (3, 32, 32), seed, split=1)
    for i, rows in enumerate(np.array_split(np.arange(n_train), 5), 1):
        batch = {
            "batch_label": f"training batch {i} of 5",
            "labels": y_train[rows].tolist(),
            "data": x_train[rows].reshape(len(rows), -1),
            "filenames": [f"synthetic_{j}.png" for j in rows],
        }
        _pickle(folder / f"data_batch_{i}", batch)
    test = {"batch_label": "testing batch 1 of 1", "labels": y_test.tolist()}
    test |= {"data": x_test.reshape(n_test, -1), "filenames": [f"t{j}.png" for j in range(n_test)]}
    _pickle(folder / "test_batch", test)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    _pickle(folder / "batches.meta", {"label_names": [*names, "truck"], "num_vis": 3072})
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def write_paper_data(root: Path, n_train: int = 400, n_test: int = 100) -> Path:
    """Write MNIST, Fashion-MNIST and CIFAR-10 under ``root`` (a ``LANDSCAPE_DATA`` folder)."""
    write_mnist(root, "mnist", n_train, n_test, seed=0)
    write_mnist(root, "fashion-mnist", n_train, n_test, seed=1)
    write_cifar10(root, n_train, n_test, seed=2)
    return Path(root)


def _pickle(path: Path, obj: object) -> None:
    """Pickle ``obj`` as CIFAR's python batches are (protocol 2, readable with latin1)."""
    path.write_bytes(pickle.dumps(obj, protocol=2))

"""Data sets: load one by name as normalised tensors with a fixed train/test split.

``load(name)`` returns a frozen :class:`Dataset`. Two data sets are embedded and need no files:
``digits`` (scikit-learn's bundled 8x8 digits, split here once and for all) and ``mnist1d``
(generated procedurally by the ``mnist1d`` package, never downloaded, cached as an ``.npz``).
Three come from torchvision's on-disk formats: ``mnist``, ``fashion-mnist`` and ``cifar10``; when
their files are missing and ``download=False``, :class:`DatasetNotFoundError` says where they are
expected and how to get them. Inputs are normalised per channel with the train split's mean and
standard deviation, applied to both splits. Ordering samples into prefixes is *not* done here: that
belongs to the caller (``order_seed``), so the splits keep one fixed, documented order.

Where files live (read when ``load`` is called, not at import):

* torchvision data sets: ``root``, else ``$LANDSCAPE_DATA``, else ``~/.cache/landscape/data``;
* the ``mnist1d`` cache: ``root``, else ``$LANDSCAPE_CACHE``, else ``~/.cache/landscape``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landscape.checks import check_choice, check_flag, check_folder
from landscape.files import write_atomic

__all__ = [
    "NAMES",
    "Dataset",
    "DatasetDownloadError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "load",
]

NAMES: tuple[str, ...] = ("digits", "mnist1d", "mnist", "fashion-mnist", "cifar10")
"""The canonical data set names accepted by :func:`load`."""

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
}

DIGITS_TEST_SIZE = 0.25
"""Fraction of the 1,797 digits held out for testing (stratified): 1,347 train + 450 test."""
DIGITS_SPLIT_SEED = 0
"""``random_state`` of the one stratified digits split."""


@dataclass(frozen=True)
class Dataset:
    """A normalised data set with a fixed train/test split.

    Attributes:
        name: Canonical name (one of :data:`NAMES`).
        train: ``(X, y)``: float32 inputs of shape ``(n, *input_shape)`` and int64 labels ``(n,)``.
        test: ``(X, y)`` of the test split, normalised with the *train* statistics.
        input_shape: ``(C, H, W)`` for images or ``(C, L)`` for 1-D signals.
        num_classes: Number of classes; labels lie in ``0 .. num_classes - 1``.
    """

    name: str
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    input_shape: tuple[int, ...]
    num_classes: int

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: {len(self.train[0]):,} train + {len(self.test[0]):,} test "
            f"samples of shape {self.input_shape}, {self.num_classes} classes)"
        )


class DatasetNotFoundError(FileNotFoundError):
    """A torchvision data set's files are not on disk and ``download=False``."""


class DatasetDownloadError(DatasetNotFoundError):
    """``download=True`` could not fetch a torchvision data set (offline, blocked, bad mirror)."""


class DatasetFormatError(ValueError):
    """A data set's file is on disk but is not in the format its reader expects."""


@dataclass(frozen=True)
class _Arrays:
    """Raw arrays of one data set before normalisation: X is ``(n, C, ...)``, y is ``(n,)``."""

    x_train: np.ndarray | Tensor
    y_train: np.ndarray | Tensor
    x_test: np.ndarray | Tensor
    y_test: np.ndarray | Tensor
    num_classes: int


def load(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load a data set by name, normalised per channel with the train split's statistics.

    Args:
        name: One of ``"digits"``, ``"mnist1d"``, ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``
            (case-insensitive; ``"fashion_mnist"`` and ``"cifar-10"`` are accepted aliases).
        root: Folder of the torchvision files, or of the ``mnist1d`` cache; ignored for
            ``digits``. Defaults are described in the module docstring.
        download: Let torchvision download missing files. ``mnist1d`` is always generated
            locally and ``digits`` ships with scikit-learn, so neither ever downloads.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: ``name`` is not a known data set, ``download`` is not a bool, or ``root``
            (where it is used) is a file.
        DatasetNotFoundError: A torchvision data set is missing and ``download=False``.
        DatasetDownloadError: ``download=True`` failed (one line: why, where the files are
            expected, how to get them).
        DatasetFormatError: A file is there but is not in its format (named, with the format
            expected).

    A corrupted ``mnist1d`` cache is regenerated, with a ``RuntimeWarning``.

    Example:
        >>> ds = load("digits")
        >>> ds.train[0].shape, ds.test[0].shape, ds.num_classes
        (torch.Size([1347, 1, 8, 8]), torch.Size([450, 1, 8, 8]), 10)
    """
    canonical = _canonical_name(name)
    download = check_flag("download", download)
    arrays = _SOURCES[canonical](root, download)
    return _to_dataset(canonical, arrays)


def _canonical_name(name: str) -> str:
    """Map a user-given name to its canonical spelling, or raise a ``ValueError`` listing NAMES."""
    key = name.strip().lower() if isinstance(name, str) else name
    return check_choice("name", _ALIASES.get(key, key), NAMES)


def _to_dataset(name: str, arrays: _Arrays) -> Dataset:
    """Convert raw arrays to float32/int64 tensors and normalise them with the train statistics."""
    x_train = torch.as_tensor(arrays.x_train).to(torch.float32).contiguous()
    x_test = torch.as_tensor(arrays.x_test).to(torch.float32).contiguous()
    mean, std = _channel_stats(x_train)
    return Dataset(
        name=name,
        train=((x_train - mean) / std, torch.as_tensor(arrays.y_train).to(torch.int64)),
        test=((x_test - mean) / std, torch.as_tensor(arrays.y_test).to(torch.int64)),
        input_shape=tuple(x_train.shape[1:]),
        num_classes=arrays.num_classes,
    )


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of ``x`` (n, C, ...), shaped to broadcast back.

    A constant channel gets standard deviation 1, so it is centred rather than divided by zero.
    """
    dims = [0, *range(2, x.ndim)]
    std, mean = torch.std_mean(x, dim=dims, keepdim=True)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


# ----------------------------------------------------------------------------------- embedded


def _load_digits(root: str | os.PathLike | None, download: bool) -> _Arrays:
    """scikit-learn's bundled digits with one fixed stratified split (see ``DIGITS_*``)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images[:, None].astype(np.float32)  # (1797, 1, 8, 8), values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        bunch.target,
        test_size=DIGITS_TEST_SIZE,
        stratify=bunch.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    return _Arrays(x_train, y_train, x_test, y_test, num_classes=10)


def _mnist1d_args() -> dict:
    """The ``mnist1d`` package's default generation arguments: 4,000 train + 1,000 test, L = 40."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # never used: we generate, we do not download
    return args


def _load_mnist1d(root: str | os.PathLike | None, download: bool) -> _Arrays:
    """MNIST-1D generated procedurally by ``mnist1d.data.make_dataset``, cached as an ``.npz``.

    The cache file name carries a hash of the generation arguments and the package version, so a
    change in either regenerates. An unreadable cache file (truncated, not an ``.npz``, missing
    arrays) is regenerated and replaced, with a ``RuntimeWarning``.
    """
    args = _mnist1d_args()
    folder = check_folder("root" if root is not None else "$LANDSCAPE_CACHE", _cache_dir(root))
    path = folder / f"mnist1d-{_digest(args, _package_version('mnist1d'))}.npz"
    if path.exists() and not path.is_file():
        raise ValueError(
            f"the mnist1d cache {path} is a directory (or another non-file); remove it so the "
            "data set can be generated and cached there."
        )
    arrays = _read_npz(path)
    if arrays is None:
        arrays = _generate_mnist1d(args)
        write_atomic(path, lambda handle: np.savez(handle, **arrays))
    x_train, y_train = arrays["x"][:, None], arrays["y"]
    x_test, y_test = arrays["x_test"][:, None], arrays["y_test"]
    return _Arrays(x_train, y_train, x_test, y_test, num_classes=10)


def _generate_mnist1d(args: dict) -> dict[str, np.ndarray]:
    """Run ``make_dataset`` without disturbing the caller's global ``random``/``numpy`` RNGs."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(dict(args)))  # seeds the global RNGs with args["seed"]
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    keys = ("x", "y", "x_test", "y_test")
    return {key: np.asarray(data[key]) for key in keys}


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays of a cached ``.npz``, or None when it is missing or unreadable (with a warning)."""
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            return {key: npz[key] for key in ("x", "y", "x_test", "y_test")}
    except Exception as error:  # BadZipFile, EOFError, ValueError, KeyError...: all unreadable
        warnings.warn(
            f"the mnist1d cache {path} is unreadable ({type(error).__name__}: {error}); "
            "regenerating it.",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


def _cache_dir(root: str | os.PathLike | None) -> Path:
    """``root``, else ``$LANDSCAPE_CACHE``, else ``~/.cache/landscape``."""
    default = os.environ.get("LANDSCAPE_CACHE") or Path.home() / ".cache" / "landscape"
    return Path(root if root is not None else default).expanduser()


def _digest(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _package_version(package: str) -> str:
    """Installed version of ``package`` (``"unknown"`` when it has no metadata)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -------------------------------------------------------------------------------- torchvision


@dataclass(frozen=True)
class _TorchvisionSource:
    """How to find and convert one torchvision data set.

    Attributes:
        cls_name: Class name in ``torchvision.datasets``.
        folder: Folder under ``root`` where torchvision looks for the files.
        files: The files torchvision reads there (for the error message).
        to_array: ``(torchvision dataset) -> (X (n, C, ...), y (n,))`` without per-item transforms.
    """

    cls_name: str
    folder: str
    files: tuple[str, ...]
    to_array: Callable[[object], tuple[Tensor, Tensor]]


def _mnist_arrays(dataset: object) -> tuple[Tensor, Tensor]:
    """MNIST-format ``.data`` (n, H, W) uint8 and ``.targets`` → ``(n, 1, H, W)``, ``(n,)``."""
    return dataset.data[:, None], torch.as_tensor(dataset.targets)


def _cifar_arrays(dataset: object) -> tuple[Tensor, Tensor]:
    """CIFAR ``.data`` (n, H, W, C) uint8 numpy and ``.targets`` list → ``(n, C, H, W)``, ``(n,)``."""
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(dataset.targets)


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_TORCHVISION: dict[str, _TorchvisionSource] = {
    "mnist": _TorchvisionSource("MNIST", "MNIST/raw", _MNIST_FILES, _mnist_arrays),
    "fashion-mnist": _TorchvisionSource(
        "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, _mnist_arrays
    ),
    "cifar10": _TorchvisionSource(
        "CIFAR10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        _cifar_arrays,
    ),
}


def _data_root(root: str | os.PathLike | None) -> Path:
    """``root``, else ``$LANDSCAPE_DATA``, else ``~/.cache/landscape/data``."""
    default = os.environ.get("LANDSCAPE_DATA") or Path.home() / ".cache" / "landscape" / "data"
    return Path(root if root is not None else default).expanduser()


def _torchvision_loader(name: str) -> Callable[[str | os.PathLike | None, bool], _Arrays]:
    """A loader for the torchvision data set ``name`` (a key of ``_TORCHVISION``)."""

    def loader(root: str | os.PathLike | None, download: bool) -> _Arrays:
        source = _TORCHVISION[name]
        folder = check_folder("root" if root is not None else "$LANDSCAPE_DATA", _data_root(root))
        if source.files == _MNIST_FILES:
            _check_idx_files(name, folder / source.folder)
        x_train, y_train = source.to_array(_open_torchvision(name, folder, True, download))
        x_test, y_test = source.to_array(_open_torchvision(name, folder, False, download))
        return _Arrays(x_train, y_train, x_test, y_test, num_classes=10)

    return loader


def _open_torchvision(name: str, root: Path, train: bool, download: bool) -> object:
    """Instantiate the torchvision data set, turning "not found" into one clear error."""
    import torchvision.datasets

    source = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, source.cls_name)
    try:
        return cls(str(root), train=train, download=download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, AssertionError...
        if download:
            raise DatasetDownloadError(_download_message(name, root, error)) from error
        if isinstance(error, RuntimeError):
            raise DatasetNotFoundError(_missing_message(name, root)) from error
        raise DatasetFormatError(
            f"Data set {name!r} in {root / source.folder} could not be read "
            f"({type(error).__name__}: {_one_line(error)}); replace its files with the "
            f"originals ({', '.join(source.files)})."
        ) from error


def _one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, shortened to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _download_message(name: str, root: Path, error: BaseException) -> str:
    """One line: the download failed, why, where the files are expected and how to get them."""
    source = _TORCHVISION[name]
    return (
        f"Downloading data set {name!r} failed ({type(error).__name__}: {_one_line(error)}). "
        f"Its files are expected in {root / source.folder}: {', '.join(source.files)}. Copy "
        f"them there from a machine with network access (or retry download=True when online)."
    )


#: IDX header of each MNIST-format file: (type code 0x08 = unsigned byte, number of dimensions).
_IDX_LAYOUT = {
    "train-images-idx3-ubyte": 3,
    "train-labels-idx1-ubyte": 1,
    "t10k-images-idx3-ubyte": 3,
    "t10k-labels-idx1-ubyte": 1,
}


def _check_idx_files(name: str, folder: Path) -> None:
    """Check every MNIST-format file present in ``folder`` before torchvision reads it.

    torchvision answers a file that is not IDX with a bare ``AssertionError`` and a truncated one
    with a reshape error, neither naming the file. Each file must start with the magic bytes
    00 00 08 0D (D = 3 for images, 1 for labels), then D big-endian 32-bit sizes, then exactly
    the product of the sizes in bytes; an image file and its label file must agree on n.
    """
    counts = {}
    for filename, ndim in _IDX_LAYOUT.items():
        path = folder / filename
        if not path.is_file():
            continue  # missing files are torchvision's "not found" (or download) path
        counts[filename] = _idx_count(name, path, ndim)
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if images in counts and labels in counts and counts[images] != counts[labels]:
            raise DatasetFormatError(
                f"Data set {name!r}: {folder / images} holds {counts[images]} images but "
                f"{labels} holds {counts[labels]} labels; replace both with the original files."
            )


def _idx_count(name: str, path: Path, ndim: int) -> int:
    """The number of items of the uint8 IDX file ``path`` with ``ndim`` dimensions, or an error."""
    what = "images (n, rows, cols)" if ndim == 3 else "labels (n,)"
    expected = (
        f"an IDX file of uint8 {what}: magic bytes 00 00 08 {ndim:02x}, then {ndim} big-endian "
        f"32-bit sizes, then their product in bytes"
    )
    hint = "replace it with the original file (or delete it and load with download=True)"
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(4 + 4 * ndim)
    if len(header) < 4 or header[:4] != bytes((0, 0, 8, ndim)):
        raise DatasetFormatError(
            f"Data set {name!r}: {path} is not {expected}; it starts with bytes "
            f"{header[:4].hex(' ') or '(none: the file is empty)'}. {hint.capitalize()}."
        )
    if len(header) < 4 + 4 * ndim:
        raise DatasetFormatError(f"Data set {name!r}: {path} ends inside its header; {hint}.")
    shape = struct.unpack(f">{ndim}I", header[4:])
    need = 4 + 4 * ndim + int(np.prod(shape))
    if size != need:
        raise DatasetFormatError(
            f"Data set {name!r}: {path} holds {size} bytes but its header {shape} calls for "
            f"{need} ({'truncated' if size < need else 'trailing bytes'}); it should be "
            f"{expected}. {hint.capitalize()}."
        )
    return shape[0]


def _missing_message(name: str, root: Path) -> str:
    """Where the files of ``name`` are expected and how to get them there."""
    source = _TORCHVISION[name]
    where = root / source.folder
    return (
        f"Data set {name!r} was not found (or is incomplete/corrupted) in {where}. "
        f"Expected files there: {', '.join(source.files)}. "
        f"Either call data.load({name!r}, root={str(root)!r}, download=True) to download it, "
        f"or copy the files into that folder (or point root=/$LANDSCAPE_DATA at a folder that "
        f"holds {source.folder}/)."
    )


_SOURCES: dict[str, Callable[[str | os.PathLike | None, bool], _Arrays]] = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    **{name: _torchvision_loader(name) for name in _TORCHVISION},
}

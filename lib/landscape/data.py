"""Data sets: load one by name as normalised tensors with a fixed train/test split.

``load(name)`` returns a frozen :class:`Dataset`. Two data sets are embedded and need no files:
``digits`` (scikit-learn's bundled 8x8 digits, split here once and for all) and ``mnist1d``
(generated procedurally by the ``mnist1d`` package, never downloaded, cached as an ``.npz``).
Three come from torchvision's on-disk formats: ``mnist``, ``fashion-mnist`` and ``cifar10``, read
here directly (torchvision only downloads them); when their files are missing and
``download=False``, :class:`DatasetNotFoundError` says where they are expected and how to get them. Inputs are normalised per channel with the train split's mean and
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
import pickle
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
#
# torchvision fetches these data sets (``download=True``), and its on-disk layout is the one
# expected; the files are read here, directly. Going through torchvision's classes would add
# nothing but CIFAR-10's fixed md5 sums, which refuse any file that is not the official release
# (including test files written in the same format); instead, every file is checked for its
# structure (named in a DatasetFormatError), and CIFAR-10 files whose md5 differs from the
# official release are read with a RuntimeWarning saying so.


@dataclass(frozen=True)
class _TorchvisionSource:
    """Where one torchvision data set lives and how to read it.

    Attributes:
        cls_name: Class name in ``torchvision.datasets`` (used only to download).
        folder: Folder under ``root`` where torchvision keeps the files.
        files: The files read there.
        read: ``(name, folder) -> _Arrays``, the reader of those files.
    """

    cls_name: str
    folder: str
    files: tuple[str, ...]
    read: Callable[[str, Path], _Arrays]


#: MNIST-format files (uint8 IDX, uncompressed as torchvision leaves them) and their dimensions.
_IDX_LAYOUT = {
    "train-images-idx3-ubyte": 3,
    "train-labels-idx1-ubyte": 1,
    "t10k-images-idx3-ubyte": 3,
    "t10k-labels-idx1-ubyte": 1,
}
_MNIST_FILES = tuple(_IDX_LAYOUT)

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = (*_CIFAR_TRAIN, "test_batch", "batches.meta")
_CIFAR_SHAPE = (3, 32, 32)

_NUM_CLASSES = 10
"""Classes of each of the three torchvision data sets."""


def _read_mnist(name: str, folder: Path) -> _Arrays:
    """The four IDX files of an MNIST-format data set: images ``(n, 1, 28, 28)``, labels ``(n,)``.

    Each file must start with the magic bytes 00 00 08 0D (D = 3 for images, 1 for labels), then
    D big-endian 32-bit sizes, then exactly the product of the sizes in bytes; an image file and
    its label file must agree on n, and labels lie in 0..9.
    """
    arrays = {
        filename: _read_idx(name, folder / filename, ndim) for filename, ndim in _IDX_LAYOUT.items()
    }
    splits = []
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if len(arrays[images]) != len(arrays[labels]):
            raise DatasetFormatError(
                f"Data set {name!r}: {folder / images} holds {len(arrays[images])} images but "
                f"{labels} holds {len(arrays[labels])} labels; replace both with the original files."
            )
        _check_labels(name, folder / labels, arrays[labels])
        splits += [arrays[images][:, None], arrays[labels]]
    return _Arrays(*splits, num_classes=_NUM_CLASSES)


def _read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of the IDX file ``path`` with ``ndim`` dimensions, or a DatasetFormatError."""
    what = "images (n, rows, cols)" if ndim == 3 else "labels (n,)"
    expected = (
        f"an IDX file of uint8 {what}: magic bytes 00 00 08 {ndim:02x}, then {ndim} big-endian "
        f"32-bit sizes, then their product in bytes"
    )
    hint = "replace it with the original file (or delete it and load with download=True)"
    content = path.read_bytes()
    header = content[: 4 + 4 * ndim]
    if len(header) < 4 or header[:4] != bytes((0, 0, 8, ndim)):
        raise DatasetFormatError(
            f"Data set {name!r}: {path} is not {expected}; it starts with bytes "
            f"{header[:4].hex(' ') or '(none: the file is empty)'}. {hint.capitalize()}."
        )
    if len(header) < 4 + 4 * ndim:
        raise DatasetFormatError(f"Data set {name!r}: {path} ends inside its header; {hint}.")
    shape = struct.unpack(f">{ndim}I", header[4:])
    need = len(header) + int(np.prod(shape))
    if len(content) != need:
        raise DatasetFormatError(
            f"Data set {name!r}: {path} holds {len(content)} bytes but its header {shape} calls "
            f"for {need} ({'truncated' if len(content) < need else 'trailing bytes'}); it should "
            f"be {expected}. {hint.capitalize()}."
        )
    array = np.frombuffer(content, dtype=np.uint8, offset=len(header))
    return array.reshape(shape).copy()  # writable, as torch.as_tensor wants


def _check_labels(name: str, path: Path, labels: np.ndarray) -> None:
    """Raise a DatasetFormatError when a label of ``path`` lies outside 0..9."""
    if len(labels) and int(labels.max()) >= _NUM_CLASSES:
        raise DatasetFormatError(
            f"Data set {name!r}: {path} holds label {int(labels.max())}; labels lie in "
            f"0..{_NUM_CLASSES - 1}. Replace it with the original file."
        )


def _read_cifar(name: str, folder: Path) -> _Arrays:
    """CIFAR-10's pickled python batches: images ``(n, 3, 32, 32)`` uint8, labels ``(n,)``.

    Each batch is a pickled dict with ``"data"``, a uint8 array ``(n, 3072)`` whose rows hold the
    red, green and blue 32x32 planes, and ``"labels"``, n integers in 0..9; ``batches.meta`` holds
    the ``"label_names"``. Files that differ from the official release are read with a warning.
    """
    _warn_unless_official(name, folder)
    _unpickle(name, folder / "batches.meta", ("label_names",))
    train = [_cifar_batch(name, folder / filename) for filename in _CIFAR_TRAIN]
    x_test, y_test = _cifar_batch(name, folder / "test_batch")
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    return _Arrays(x_train, y_train, x_test, y_test, num_classes=_NUM_CLASSES)


def _cifar_batch(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` and labels ``(n,)`` of one CIFAR-10 batch file."""
    entry = _unpickle(name, path, ("data", "labels"))
    images, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    size = int(np.prod(_CIFAR_SHAPE))
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != size:
        raise DatasetFormatError(
            f"Data set {name!r}: {path} holds 'data' of dtype {images.dtype} and shape "
            f"{images.shape}; expected uint8 (n, {size}). Replace it with the original file."
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            f"Data set {name!r}: {path} holds {len(images)} images but 'labels' of shape "
            f"{labels.shape} ({labels.dtype}); expected {len(images)} integers. Replace it with "
            "the original file."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DatasetFormatError(
            f"Data set {name!r}: {path} holds labels outside 0..{_NUM_CLASSES - 1}. Replace it "
            "with the original file."
        )
    return images.reshape(-1, *_CIFAR_SHAPE), labels


def _unpickle(name: str, path: Path, keys: tuple[str, ...]) -> dict:
    """The dict pickled in ``path`` (as CIFAR's python version writes it), holding ``keys``."""
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # UnpicklingError, EOFError, ValueError...: all unreadable
        raise DatasetFormatError(
            f"Data set {name!r}: {path} is not a pickled CIFAR batch ({type(error).__name__}: "
            f"{_one_line(error)}). Replace it with the original file (or delete the folder and "
            "load with download=True)."
        ) from error
    missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
    if missing:
        raise DatasetFormatError(
            f"Data set {name!r}: {path} lacks {', '.join(map(repr, missing))}; expected a "
            f"pickled dict with {', '.join(map(repr, keys))}. Replace it with the original file."
        )
    return entry


def _warn_unless_official(name: str, folder: Path) -> None:
    """Warn when a CIFAR-10 file's md5 differs from the official release's (torchvision's sums)."""
    from torchvision.datasets import CIFAR10

    official = dict(CIFAR10.train_list + CIFAR10.test_list)
    official[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    differ = [
        filename
        for filename, md5 in official.items()
        if hashlib.md5((folder / filename).read_bytes()).hexdigest() != md5
    ]
    if differ:
        warnings.warn(
            f"Data set {name!r}: {', '.join(differ)} in {folder} differ from the official "
            "CIFAR-10 release (md5); they are read as they are, so results are not the paper's.",
            RuntimeWarning,
            stacklevel=5,
        )


_TORCHVISION: dict[str, _TorchvisionSource] = {
    "mnist": _TorchvisionSource("MNIST", "MNIST/raw", _MNIST_FILES, _read_mnist),
    "fashion-mnist": _TorchvisionSource(
        "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, _read_mnist
    ),
    "cifar10": _TorchvisionSource("CIFAR10", "cifar-10-batches-py", _CIFAR_FILES, _read_cifar),
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
        if _missing(name, folder):
            if not download:
                raise DatasetNotFoundError(_missing_message(name, folder))
            _download(name, folder)
        return source.read(name, folder / source.folder)

    return loader


def _missing(name: str, root: Path) -> list[str]:
    """The files of ``name`` that are not (regular files) in their folder under ``root``."""
    source = _TORCHVISION[name]
    return [
        filename for filename in source.files if not (root / source.folder / filename).is_file()
    ]


def _download(name: str, root: Path) -> None:
    """Let torchvision download ``name`` into ``root``, turning any failure into one clear error."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, _TORCHVISION[name].cls_name)
    try:
        cls(str(root), train=True, download=True)  # fetches (and checks) both splits' files
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError...
        raise DatasetDownloadError(_download_message(name, root, error)) from error
    if _missing(name, root):
        error = FileNotFoundError(f"missing after the download: {', '.join(_missing(name, root))}")
        raise DatasetDownloadError(_download_message(name, root, error))


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


def _missing_message(name: str, root: Path) -> str:
    """Where the files of ``name`` are expected, which are missing, and how to get them there."""
    source = _TORCHVISION[name]
    where = root / source.folder
    missing = _missing(name, root)
    which = "" if len(missing) == len(source.files) else f" (missing: {', '.join(missing)})"
    return (
        f"Data set {name!r} was not found (or is incomplete) in {where}{which}. "
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

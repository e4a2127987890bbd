"""Training: Adam on cross-entropy, seeded, with a progress bar and an on-disk checkpoint cache.

``fit`` trains a deep copy of a network (the caller's module is never touched) and returns it in
``eval()`` mode; ``fit_with_history`` does the same and returns a :class:`Trained`, the network
with its per-epoch :class:`History`. ``evaluate`` computes mean cross-entropy and accuracy
without gradients. With ``cache_dir`` set, a trained network goes into the checkpoint cache of
``checkpoints``, keyed by everything that changes the result, the training code included
(``TRAINING_CODE``); a corrupted entry is reported, retrained and replaced — never loaded
half-way. Building networks lives in ``models``, data in ``data``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import checkpoints, seeding
from landscape.checks import (
    check_finite,
    check_folder,
    check_int,
    check_network_input,
    check_positive,
    resolve_device,
)
from landscape.data import Dataset
from landscape.progress import bar
from landscape.seeding import generator, seeded

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "History",
    "Trained",
    "TrainingDivergedError",
    "TrainingDivergedWarning",
    "evaluate",
    "fit",
    "fit_with_history",
]

_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")  # History's lists


def _source_hash(*files: str | os.PathLike[str]) -> str:
    """SHA-256 over the names and contents of ``files``, in order."""
    digest = hashlib.sha256()
    for file in map(Path, files):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


#: SHA-256 of the code that makes a trained network, part of every cache key: this module (the
#: training loop), ``seeding`` (the sample order and dropout's random numbers) and ``checkpoints``
#: (what is stored and restored). A network made by other code is never served from the cache (a
#: manual format bump was forgotten once, and networks cached by earlier code then differed from
#: freshly trained ones).
TRAINING_CODE = _source_hash(__file__, seeding.__file__, checkpoints.__file__)


class TrainingDivergedWarning(RuntimeWarning):
    """Training finished, but the network does far worse than a uniform guess on its own
    training data: usually a learning rate too large. The message gives the numbers."""


class TrainingDivergedError(ValueError):
    """The training loss became NaN or inf, so the weights are no longer numbers."""


#: A final training loss above this multiple of log C (a uniform guess over C classes) counts as
#: diverged: a fresh network starts near log C and training that learns anything goes below it.
DIVERGED_LOSS_FACTOR = 2.0
#: Training samples (the first ones) on which the final network's loss is measured for that check.
DIVERGENCE_CHECK_SAMPLES = 1024


@dataclass(frozen=True)
class History:
    """Per-epoch training record.

    Attributes:
        train_loss: Mean cross-entropy over each epoch's mini-batches, as the optimiser saw them
            (train mode, weights changing during the epoch).
        train_accuracy: Accuracy over the same mini-batches.
        test_loss: Mean cross-entropy on the test split at the end of each epoch (eval mode).
        test_accuracy: Accuracy on the test split at the end of each epoch (eval mode).
        from_cache: True when the network was loaded from the checkpoint cache.
    """

    train_loss: tuple[float, ...] = ()
    train_accuracy: tuple[float, ...] = ()
    test_loss: tuple[float, ...] = ()
    test_accuracy: tuple[float, ...] = ()
    from_cache: bool = False

    def __repr__(self) -> str:
        if not self.train_loss:
            return "History(untrained)"
        cached = ", from the cache" if self.from_cache else ""
        epochs = f"{len(self.train_loss)} epoch{'s' if len(self.train_loss) > 1 else ''}"
        return (
            f"History({epochs}: train loss {self.train_loss[0]:.3g} → "
            f"{self.train_loss[-1]:.3g}, test accuracy {self.test_accuracy[-1]:.3f}{cached})"
        )


@dataclass(frozen=True, eq=False)
class Trained:
    """What :func:`fit_with_history` returns: the trained network and how its training went.

    Attributes:
        net: The trained copy, in ``eval()`` mode, on the training device.
        history: Its per-epoch :class:`History` (empty for ``epochs=0``).
    """

    net: nn.Module
    history: History

    def __repr__(self) -> str:
        size = sum(p.numel() for p in self.net.parameters())
        return f"Trained({type(self.net).__name__} of {size:,} parameters, {self.history!r})"


@dataclass(frozen=True)
class _Settings:
    """The validated arguments of :func:`fit` that change its result."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    device: torch.device


def fit(
    net: nn.Module,
    ds: Dataset,
    epochs: int,
    lr: float = 3e-4,
    batch_size: int = 64,
    seed: int = 0,
    n_train: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> nn.Module:
    """Train a copy of ``net`` with Adam on mean cross-entropy over the first ``n_train`` samples.

    :func:`fit_with_history` trains the same way and also returns the per-epoch record.

    Each epoch visits the samples in a fresh permutation drawn from a private generator seeded
    with ``seed``; dropout draws from torch's RNG seeded with ``seed`` inside a forked RNG state,
    so the caller's global RNG is left as it was and the same arguments give the same weights
    (on CUDA too: cuDNN runs in deterministic mode while training).
    A last mini-batch of a single sample is merged into the one before it (batch-norm cannot
    train on one sample).

    Args:
        net: The network to train; it is deep-copied and never modified.
        ds: The data set; training uses ``ds.train[:n_train]``, ``ds.test`` is evaluated per epoch.
        epochs: Number of passes over the training samples (0 returns the copy untrained).
        lr: Adam learning rate (> 0).
        batch_size: Mini-batch size (>= 1).
        seed: Seed of the sample order and of dropout (>= 0).
        n_train: Train on the first ``n_train`` samples of ``ds.train`` (None: all of them).
        cache_dir: Folder of the checkpoint cache, created when missing (None: no cache).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        progress: Show a progress bar.

    Returns:
        The trained copy, in ``eval()`` mode, on ``device``.

    Raises:
        ValueError: An argument is out of range, or the data cannot train ``net`` (non-finite
            inputs, inputs it cannot take, labels beyond its outputs); the message names it.
        TrainingDivergedError: The loss became NaN or inf during training (a ValueError).

    Warns:
        TrainingDivergedWarning: The trained network's loss on its training samples is more
            than ``DIVERGED_LOSS_FACTOR`` times that of a uniform guess, log C (checked for a
            network loaded from the cache too).

    Example:
        >>> from landscape import data, models
        >>> ds = data.load("digits")
        >>> net = fit(models.build("mlp", ds.input_shape, 10, depth=1, width=16), ds, 1,
        ...           progress=False)
        >>> net.training
        False
    """
    return _fit(net, ds, epochs, lr, batch_size, seed, n_train, cache_dir, device, progress).net


def fit_with_history(net: nn.Module, ds: Dataset, epochs: int, **options: Any) -> Trained:
    """:func:`fit`, returning the trained network together with its per-epoch :class:`History`.

    ``options`` are :func:`fit`'s keyword arguments (``lr``, ``batch_size``, ``seed``,
    ``n_train``, ``cache_dir``, ``device``, ``progress``), with its defaults; the training, the
    cache, the errors and the warnings are those of :func:`fit` (the same arguments give the same
    network). A network loaded from the cache comes with the history recorded when it was
    trained, marked ``from_cache``.

    Example:
        >>> from landscape import data, models
        >>> ds = data.load("digits")
        >>> trained = fit_with_history(models.build("mlp", ds.input_shape, 10, depth=1, width=16),
        ...                            ds, 1, progress=False)
        >>> len(trained.history.test_accuracy), trained.net.training
        (1, False)
    """
    arguments = inspect.signature(fit).bind(net, ds, epochs, **options)
    arguments.apply_defaults()
    return _fit(*arguments.args)


def _fit(
    net: nn.Module,
    ds: Dataset,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    n_train: int | None,
    cache_dir: str | os.PathLike | None,
    device: str | torch.device,
    progress: bool,
) -> Trained:
    """:func:`fit` and :func:`fit_with_history` (one frame deep in both, for the warnings)."""
    _check_module("net", net)
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a landscape.data.Dataset; got {type(ds).__name__}.")
    settings = _Settings(
        epochs=check_int("epochs", epochs, low=0),
        lr=check_positive("lr", lr),
        batch_size=check_int("batch_size", batch_size, low=1),
        seed=check_int("seed", seed, low=0),
        device=resolve_device(device),
    )
    n_train = _check_n_train(n_train, ds)
    if cache_dir is not None:
        cache_dir = check_folder("cache_dir", cache_dir)

    model = copy.deepcopy(net)
    x_train, y_train = ds.train[0][:n_train], ds.train[1][:n_train]
    _check_data(model, ds, x_train, y_train, settings.batch_size)
    if settings.epochs == 0:
        return _finish(model.to(settings.device), History())
    if cache_dir is None:
        trained = _train(model, ds, x_train, y_train, settings, progress)
    else:
        described = {**dataclasses.asdict(settings), "device": settings.device.type}
        key = checkpoints.key(model, ds, x_train, y_train, described, TRAINING_CODE)
        path = checkpoints.path(cache_dir, key)
        cached = checkpoints.load(path, key, model, _METRICS)
        if cached is None:
            trained = _train(model, ds, x_train, y_train, settings, progress)
            history = {name: getattr(trained.history, name) for name in _METRICS}
            checkpoints.save(path, key, trained.net, history)
        else:
            restored, history = cached
            trained = _finish(restored.to(settings.device), History(**history, from_cache=True))
    _warn_if_diverged(trained, x_train, y_train, ds.num_classes, settings)
    return trained


def evaluate(net: nn.Module, X: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on ``(X, y)``, in eval mode, without gradients.

    The network's train/eval flags are restored afterwards; inputs are moved to the device and
    dtype of its parameters batch by batch.

    Args:
        net: The network.
        X: Inputs ``(n, ...)``.
        y: Integer labels ``(n,)``.
        batch_size: Samples per forward pass (>= 1).

    Returns:
        ``(loss, accuracy)`` as Python floats.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> loss, acc = evaluate(net, torch.zeros(6, 4), torch.zeros(6, dtype=torch.long))
        >>> 0.0 <= acc <= 1.0
        True
    """
    _check_module("net", net)
    batch_size = check_int("batch_size", batch_size, low=1)
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(
            f"X and y must hold the same, non-zero number of samples; got {len(X)} and {len(y)}."
        )
    device, dtype = _placement(net)
    total_loss, correct = 0.0, 0
    with _eval_mode(net), torch.no_grad():
        for start in range(0, len(X), batch_size):
            xb = X[start : start + batch_size].to(device=device, dtype=dtype)
            yb = y[start : start + batch_size].to(device)
            logits = net(xb)
            total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(dim=1) == yb).sum().item()
    return total_loss / len(X), correct / len(X)


# ------------------------------------------------------------------------------------ training


def _train(
    model: nn.Module,
    ds: Dataset,
    x_train: Tensor,
    y_train: Tensor,
    settings: _Settings,
    progress: bool,
) -> Trained:
    """The training loop proper; returns ``model`` trained, in eval mode, with its history."""
    epochs, batch_size, device = settings.epochs, settings.batch_size, settings.device
    model.to(device)
    _, dtype = _placement(model)
    x_train, y_train = x_train.to(device=device, dtype=dtype), y_train.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    order_rng = generator(settings.seed)
    batches_per_epoch = len(_batches(torch.arange(len(x_train)), batch_size))
    record: dict[str, list[float]] = {name: [] for name in _METRICS}
    meter = bar(total=epochs * batches_per_epoch, desc="training", unit="batch", enabled=progress)
    with seeded(settings.seed, device), _deterministic_cudnn(), meter:
        for epoch in range(epochs):
            meter.set_description(f"epoch {epoch + 1}/{epochs}")
            model.train()
            order = torch.randperm(len(x_train), generator=order_rng).to(device)
            loss, accuracy = _epoch(model, optimizer, x_train, y_train, order, batch_size, meter)
            test_loss, test_accuracy = evaluate(model, *ds.test)
            _refuse_non_finite(loss, test_loss, epoch, settings)
            for name, value in zip(record, (loss, accuracy, test_loss, test_accuracy)):
                record[name].append(value)
            meter.set_postfix(loss=f"{loss:.4f}", test_acc=f"{test_accuracy:.3f}")
    history = History(**{name: tuple(values) for name, values in record.items()})
    return _finish(model, history)


def _epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_train: Tensor,
    y_train: Tensor,
    order: Tensor,
    batch_size: int,
    meter: tqdm,
) -> tuple[float, float]:
    """One pass over ``order``; returns the epoch's mean mini-batch loss and accuracy."""
    total_loss = torch.zeros((), device=x_train.device)
    correct = torch.zeros((), device=x_train.device, dtype=torch.long)
    for step, idx in enumerate(_batches(order, batch_size)):
        xb, yb = x_train[idx], y_train[idx]
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.detach().argmax(dim=1) == yb).sum()
        meter.update(1)
        if step % 20 == 0:
            meter.set_postfix(loss=f"{loss.item():.4f}")
    return total_loss.item() / len(order), correct.item() / len(order)


def _batches(order: Tensor, batch_size: int) -> tuple[Tensor, ...]:
    """Split ``order`` into mini-batches; a trailing batch of one sample joins the previous one."""
    batches = order.split(batch_size)
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches = (*batches[:-2], torch.cat(batches[-2:]))
    return batches


def _finish(model: nn.Module, history: History) -> Trained:
    """``model`` in eval mode, with ``history``."""
    return Trained(model.eval(), history)


@contextmanager
def _deterministic_cudnn() -> Iterator[None]:
    """cuDNN in deterministic mode inside the block (its own flags restored after).

    cuDNN's fastest convolution algorithms accumulate in a nondeterministic order, so a CNN
    trained twice on a GPU with the same seed would differ in the last bits. Measured on an H100:
    with this switch the networks of ``models`` train bitwise reproducibly. No effect on the CPU.
    """
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


# ------------------------------------------------------------------------------------- helpers


def _check_module(name: str, net: Any) -> None:
    if not isinstance(net, nn.Module):
        raise ValueError(f"{name} must be a torch.nn.Module; got {type(net).__name__}.")


def _check_data(
    model: nn.Module, ds: Dataset, x_train: Tensor, y_train: Tensor, batch_size: int
) -> None:
    """The data can train ``model``: finite inputs it takes, labels among its outputs.

    One sample goes through the network (in eval mode, on a copy's device) so that a network
    built for another data set is named here rather than deep inside the first mini-batch.
    """
    check_finite("ds.train inputs", x_train)
    check_finite("ds.test inputs", ds.test[0])
    with _eval_mode(model):
        output = check_network_input(model, x_train, "ds.train X")
    if output.ndim != 2 or output.shape[1] != ds.num_classes:
        raise ValueError(
            f"net gives outputs of shape {tuple(output.shape[1:])} per sample but ds "
            f"{ds.name!r} has {ds.num_classes} classes; build the network with "
            f"num_classes={ds.num_classes}."
        )
    for split, labels in (("ds.train", y_train), ("ds.test", ds.test[1])):
        outside = (labels < 0) | (labels >= ds.num_classes)
        if outside.any():
            i = int(outside.nonzero()[0, 0])
            raise ValueError(
                f"{split} labels must lie in 0..{ds.num_classes - 1}; got {int(labels[i])} at "
                f"sample {i}."
            )
    has_batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_batch_norm and (len(x_train) < 2 or batch_size < 2):
        name, value = ("n_train", len(x_train)) if len(x_train) < 2 else ("batch_size", batch_size)
        raise ValueError(
            f"{name}={value}: a network with batch-norm cannot train on mini-batches of one "
            f"sample; use {name} >= 2."
        )


def _refuse_non_finite(loss: float, test_loss: float, epoch: int, settings: _Settings) -> None:
    """Stop training when the loss is no longer a number (the weights have diverged)."""
    if math.isfinite(loss) and math.isfinite(test_loss):
        return
    raise TrainingDivergedError(
        f"training diverged: the loss became {loss if not math.isfinite(loss) else test_loss} in "
        f"epoch {epoch + 1} (lr={settings.lr:g}, batch_size={settings.batch_size}); lower lr "
        "(the papers use 3e-4)."
    )


def _warn_if_diverged(
    trained: Trained, x_train: Tensor, y_train: Tensor, num_classes: int, settings: _Settings
) -> None:
    """Warn, with the numbers, when the trained network's loss on (the first
    ``DIVERGENCE_CHECK_SAMPLES`` of) its own training samples is far above a uniform guess's.

    Measured at the final weights in eval mode, so one huge last step counts (the per-epoch
    training loss is averaged over weights that were still changing).
    """
    n = min(len(x_train), DIVERGENCE_CHECK_SAMPLES)
    loss, accuracy = evaluate(trained.net, x_train[:n], y_train[:n])
    uniform = math.log(num_classes)
    if loss <= DIVERGED_LOSS_FACTOR * uniform:
        return
    history = trained.history
    warnings.warn(
        f"training diverged: the final network's loss on its training samples is {loss:.3g}, "
        f"far above the {uniform:.2f} of a uniform guess over {num_classes} classes (training "
        f"accuracy {accuracy:.3f}, test accuracy {history.test_accuracy[-1]:.3f} against chance "
        f"{1 / num_classes:.3f}; lr={settings.lr:g}, {len(history.test_loss)} epoch(s)). "
        "Lower lr: every number measured around this network describes a diverged one.",
        TrainingDivergedWarning,
        stacklevel=4,
    )


def _check_n_train(n_train: int | None, ds: Dataset) -> int:
    """``n_train`` resolved to an int in ``[1, len(ds.train)]`` (None: all training samples)."""
    available = len(ds.train[0])
    if n_train is None:
        return available
    return check_int("n_train", n_train, low=1, high=available)


def _placement(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``net``'s first parameter (CPU/float32 when it has none)."""
    for tensor in net.parameters():
        return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode inside the block; each one's own flag restored after."""
    flags = [(module, module.training) for module in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag

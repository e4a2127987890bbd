"""One call from notebook parameters to a trained network and its Problem.

Every notebook starts the same way: load a data set, put its training split in one seeded order
(the prefixes D_k), build and train a network on the first ``n_train`` samples of that order, and
wrap the first ``k_max`` samples in a ``Problem`` around the trained w*. ``prepare`` does exactly
that and validates every parameter with a message that names it, so a typo in a parameters cell
never ends in a traceback from inside torch. ``learning_curve`` trains the same architecture on
the first k samples of that order, the performance-based answer to "how much data is enough?".
Nothing here computes a landscape quantity.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import data, models, train
from .checks import (
    check_choice,
    check_folder,
    check_int,
    check_seed,
    check_sequence,
    resolve_device,
)
from .problem import Problem
from .progress import bar
from .seeding import generator

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def default_cache_dir() -> Path:
    """Where trained networks are cached: ``$LANDSCAPE_CACHE/models`` or ``~/.cache/landscape/models``."""
    root = os.environ.get("LANDSCAPE_CACHE") or Path.home() / ".cache" / "landscape"
    return Path(root) / "models"


@dataclass(frozen=True, eq=False)
class Setup:
    """A trained network with its ordered data and the Problem built around it.

    Attributes:
        dataset: the data set with its training split in prefix order (``order`` applied), so
            ``train.fit(..., n_train=k)`` trains on exactly D_k.
        net: the trained network (eval mode).
        problem: the Problem on the first ``k_max`` samples of the order, centred at w*.
        order: the permutation of the original training split that defines the prefixes.
        history: how the training of w* went, epoch by epoch.
        config: the parameters that made it, for the record.
    """

    dataset: data.Dataset
    net: nn.Module
    problem: Problem
    order: Tensor
    history: train.History = field(default_factory=train.History)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float:
        """Test accuracy of w* after its last epoch (NaN when it was not trained)."""
        return _last(self.history.test_accuracy)

    @property
    def train_accuracy(self) -> float:
        """Training accuracy of w*'s last epoch (NaN when it was not trained)."""
        return _last(self.history.train_accuracy)

    def __repr__(self) -> str:
        cfg = self.config
        model = f"{cfg.get('model', type(self.net).__name__)} {cfg.get('model_cfg', '')}".strip()
        return (
            f"Setup({self.dataset.name}, {model}: N = {self.problem.num_params:,} parameters, "
            f"K = {self.problem.num_samples:,} of {len(self.order):,} samples, "
            f"test accuracy {self.test_accuracy:.3f})"
        )


def _last(values) -> float:
    return float(values[-1]) if values else float("nan")


def ordered(ds: data.Dataset, order_seed: int | None) -> tuple[data.Dataset, Tensor]:
    """The data set with its training split permuted by a seeded permutation (None: as stored)."""
    X, y = ds.train
    if order_seed is None:
        order = torch.arange(len(X))
    else:
        seed = check_int("order_seed", order_seed, low=0)
        order = torch.randperm(len(X), generator=generator(seed))
    return replace(ds, train=(X[order], y[order])), order


def prepare(
    dataset: str = "digits",
    model: str = "mlp",
    model_cfg: dict[str, Any] | None = None,
    *,
    epochs: int = 30,
    n_train: int | None = None,
    k_max: int | None = None,
    order_seed: int | None = 0,
    seed: int = 0,
    lr: float = 3e-4,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    max_memory: int | None = None,
    cache_dir: str | os.PathLike | None = "default",
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = True,
    fit_k_min: int | None = None,
    ks: Mapping[str, Any] | None = None,
) -> Setup:
    """Load, order, build, train (cached) and wrap in a Problem.

    Args:
        dataset: one of ``data.NAMES``.
        model: ``"mlp"`` or ``"cnn"``; ``model_cfg`` holds its options (see ``models.build``).
        epochs, lr, batch_size, seed: training (Adam) of w*.
        n_train: train w* on the first ``n_train`` samples of the order (None: all of them).
        k_max: the Problem's K, the largest prefix studied (None: ``n_train`` or all samples).
        order_seed: seed of the permutation that defines the prefixes (None keeps the stored order).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        dtype: ``"float32"`` or ``"float64"`` for the Problem's computations.
        max_memory: bytes one chunk of the Problem's activations may use (see ``Problem``);
            None: ``default_max_memory`` (256 MiB on a CPU, an eighth of a GPU's free memory).
            Checked before any training.
        cache_dir: where trained networks are cached (a folder, created when missing);
            ``"default"`` uses ``default_cache_dir()``, None disables the cache.
        root, download: where real data sets live and whether to fetch them (see ``data.load``).
        fit_k_min, ks: prefix sizes the caller will use, checked against K before any training
            (so a notebook stops at once, not after minutes): ``fit_k_min``, the smallest k of a
            rate fit, must leave at least 3 prefixes (≤ K − 2); each value of ``ks`` (a name → an
            int, a list of ints, or None to skip) must lie in 2..K.

    Raises:
        ValueError: a parameter is not allowed; the message names it, the value and what is.

    Warns:
        train.TrainingDivergedWarning: training ended far worse than a uniform guess (e.g. a
            learning rate too large); the message gives the final loss and the accuracy against
            chance.
    """
    check_choice("dtype", dtype, _DTYPES)
    check_choice("model", model, models.KINDS)
    if max_memory is not None:
        max_memory = check_int("max_memory", max_memory, low=1)
    device = resolve_device(device)
    if cache_dir is not None and cache_dir != "default":
        cache_dir = check_folder("cache_dir", cache_dir)
    try:
        ds = data.load(dataset, root=root, download=download)
    except ValueError as error:  # name the notebook's parameter, not data.load's
        raise ValueError(f"dataset={dataset!r}: {error}") from None
    ds, order = ordered(ds, order_seed)
    available = len(ds.train[0])
    if n_train is not None:
        n_train = _check_size("n_train", n_train, available, ds.name)
    K = _check_size(
        "k_max", k_max if k_max is not None else (n_train or available), available, ds.name
    )
    _check_prefixes(K, k_max, fit_k_min, ks or {})
    if not isinstance(model_cfg, dict | type(None)):
        raise ValueError(f"model_cfg={model_cfg!r} must be a dict of model options or None.")
    net = models.build(model, ds.input_shape, ds.num_classes, seed=seed, **(model_cfg or {}))
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    trained = train.fit_with_history(
        net,
        ds,
        epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        n_train=n_train,
        cache_dir=cache_dir,
        device=device,
        progress=progress,
    )
    X, y = ds.train
    problem = Problem(
        trained.net, X[:K], y[:K], dtype=_DTYPES[dtype], device=device, max_memory=max_memory
    )
    config = dict(
        dataset=ds.name,
        model=model,
        model_cfg=dict(model_cfg or {}),
        epochs=epochs,
        n_train=n_train or available,
        k_max=K,
        order_seed=order_seed,
        seed=seed,
        lr=lr,
        batch_size=batch_size,
        device=str(device),
        dtype=dtype,
    )
    return Setup(
        dataset=ds,
        net=trained.net,
        problem=problem,
        order=order,
        history=trained.history,
        config=config,
    )


def _check_size(name: str, value: Any, available: int, dataset: str) -> int:
    value = check_int(name, value, low=2)
    if value > available:
        raise ValueError(
            f"{name}={value} is larger than the {available} training samples of {dataset!r}; "
            f"use at most {available} (or a larger data set)."
        )
    return value


def _check_prefixes(K: int, k_max: Any, fit_k_min: Any, ks: Mapping[str, Any]) -> None:
    """Refuse prefix sizes that do not fit in 2..K, naming the parameter and K's origin."""
    origin = f"K = {K}" + (
        f" (k_max={k_max})" if k_max is not None else " (the whole training split)"
    )
    if fit_k_min is not None:
        fit_k_min = check_int("fit_k_min", fit_k_min, low=1)
        if fit_k_min > K - 2:
            raise ValueError(
                f"fit_k_min={fit_k_min} leaves fewer than 3 prefixes to fit a rate on with {origin}; "
                f"use fit_k_min <= {K - 2} or a larger k_max."
            )
    for name, values in ks.items():
        if values is None:
            continue
        single = not isinstance(values, list | tuple)
        for i, value in enumerate([values] if single else values):
            label = name if single else f"{name}[{i}]"
            value = check_int(label, value, low=2)
            if value > K:
                raise ValueError(f"{label}={value} is larger than {origin}; use at most {K}.")


@dataclass(frozen=True, eq=False)
class LearningCurve:
    """Test accuracy and loss of networks trained on the first k samples, over seeds.

    Attributes:
        k: the prefix sizes trained on.
        accuracy: mean test accuracy over seeds, per k.
        accuracy_stderr: its standard error over seeds (0 for a single seed).
        loss: mean test loss (cross-entropy, nats), per k.
        loss_stderr: its standard error over seeds.
        per_seed_accuracy: (seeds, len(k)) test accuracies.
    """

    k: np.ndarray
    accuracy: np.ndarray
    accuracy_stderr: np.ndarray
    loss: np.ndarray
    loss_stderr: np.ndarray
    per_seed_accuracy: np.ndarray

    def __repr__(self) -> str:
        points = ", ".join(f"{k:,}: {a:.3f}" for k, a in zip(self.k, self.accuracy))
        seeds = len(self.per_seed_accuracy)
        return f"LearningCurve(test accuracy at k = {{{points}}}, {seeds} seed(s))"


def learning_curve(
    setup: Setup,
    ks: Sequence[int],
    *,
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    min_steps: int = 200,
    cache_dir: str | os.PathLike | None = "default",
    progress: bool = False,
) -> LearningCurve:
    """Train the setup's architecture on the first k samples of its order, for each k and seed.

    Each network trains for ``epochs`` (default: the setup's) but at least ``min_steps`` optimiser
    steps, so small prefixes are not judged on a handful of updates. Networks go through the
    checkpoint cache (``cache_dir`` as in :func:`prepare`); ``progress`` shows each training's bar.
    """
    if not isinstance(setup, Setup):
        raise ValueError(
            f"setup must be an experiment.Setup (from experiment.prepare); got "
            f"{type(setup).__name__}."
        )
    cfg = setup.config
    available = len(setup.dataset.train[0])
    ks = check_sequence("ks", ks, check_int, low=2, high=available)
    seeds = check_sequence("seeds", seeds, check_seed)
    epochs = cfg["epochs"] if epochs is None else check_int("epochs", epochs, low=1)
    min_steps = check_int("min_steps", min_steps, low=0)
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    elif cache_dir is not None:
        cache_dir = check_folder("cache_dir", cache_dir)
    accuracy = np.zeros((len(seeds), len(ks)))
    loss = np.zeros_like(accuracy)
    ds = setup.dataset
    jobs = [(i, j, k, s) for j, k in enumerate(ks) for i, s in enumerate(seeds)]
    for i, j, k, seed in bar(jobs, desc="learning curve"):
        steps_per_epoch = math.ceil(k / cfg["batch_size"])
        k_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
        net = models.build(
            cfg["model"], ds.input_shape, ds.num_classes, seed=seed, **cfg["model_cfg"]
        )
        history = train.fit_with_history(
            net,
            ds,
            k_epochs,
            lr=cfg["lr"],
            batch_size=cfg["batch_size"],
            seed=seed,
            n_train=k,
            cache_dir=cache_dir,
            device=cfg["device"],
            progress=progress,
        ).history
        loss[i, j] = history.test_loss[-1]
        accuracy[i, j] = history.test_accuracy[-1]
    n = len(seeds)
    sem = (lambda a: a.std(0, ddof=1) / math.sqrt(n)) if n > 1 else (lambda a: np.zeros(a.shape[1]))
    return LearningCurve(
        k=np.array(ks),
        accuracy=accuracy.mean(0),
        accuracy_stderr=sem(accuracy),
        loss=loss.mean(0),
        loss_stderr=sem(loss),
        per_seed_accuracy=accuracy,
    )

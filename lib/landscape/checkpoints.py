"""The on-disk checkpoint cache of trained networks: keys, entries and their checksums.

A trained network is stored under a key that hashes everything that changes the result: the
training code (``train.TRAINING_CODE``), the architecture, the initial weights, the training and
test tensors, the hyper-parameters, the device type and the torch version (``key``). An entry
holds the weights and the per-epoch history with a checksum over both; it is written atomically
(``save``) and read back only when it is complete and intact (``load``): anything else is
reported, and the caller retrains and replaces it — an entry is never loaded half-way. How a
network is trained, and what its history means, is ``train``'s; nothing here trains.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.data import Dataset
from landscape.files import write_atomic

__all__ = ["FORMAT", "key", "load", "path", "save"]

FORMAT = 1  # bump when the stored layout changes: old entries stop matching
_FIELDS = ("format", "key", "state_dict", "history", "checksum")


def key(
    model: nn.Module,
    ds: Dataset,
    x_train: Tensor,
    y_train: Tensor,
    settings: Mapping[str, Any],
    code: str,
) -> str:
    """sha256 over everything that changes the trained weights or the recorded history.

    Args:
        model: the network before training (its ``repr`` and initial weights are hashed).
        ds: the data set (its name and test tensors).
        x_train: the training inputs actually used.
        y_train: their labels.
        settings: the training's hyper-parameters, JSON-serialisable (the device as its type).
        code: the hash of the code that trains (``train.TRAINING_CODE``).
    """
    digest = hashlib.sha256()
    described = {
        "format": FORMAT,
        "training_code": code,
        "architecture": repr(model),
        "dataset": ds.name,
        "n_train": len(x_train),
        **settings,
        "torch": torch.__version__,
    }
    digest.update(json.dumps(described, sort_keys=True).encode())
    _hash_state(digest, model.state_dict())
    for tensor in (x_train, y_train, *ds.test):
        _hash_tensor(digest, tensor)
    return digest.hexdigest()


def path(cache_dir: Path, key: str) -> Path:
    """Where the entry for ``key`` lives in ``cache_dir`` (ValueError when a non-file is there)."""
    where = cache_dir / f"{key}.pt"
    if where.exists() and not where.is_file():
        raise ValueError(
            f"cache_dir={str(cache_dir)!r}: the model-cache entry {where.name} is a directory "
            "(or another non-file), not a saved network; remove it (it is not ours) and run "
            "again, or pick another cache_dir."
        )
    return where


def save(where: Path, key: str, net: nn.Module, history: Mapping[str, Sequence[float]]) -> None:
    """Store ``net``'s weights and ``history`` under ``where``, atomically (temp file + rename)."""
    state = {name: tensor.detach().cpu() for name, tensor in net.state_dict().items()}
    history = {name: list(values) for name, values in history.items()}
    entry = {
        "format": FORMAT,
        "key": key,
        "state_dict": state,
        "history": history,
        "checksum": _checksum(state, history),
    }
    write_atomic(where, lambda handle: torch.save(entry, handle))


def load(
    where: Path, key: str, model: nn.Module, metrics: Sequence[str]
) -> tuple[nn.Module, dict[str, tuple[float, ...]]] | None:
    """The cached network for ``key`` and its history's ``metrics``, or None when absent or
    corrupted (with a warning).

    The entry is read and verified completely (fields, key match, checksum) and loaded into a
    separate copy of ``model`` with ``strict=True``, on the CPU; any failure discards that copy.
    """
    if not where.exists():
        return None
    try:
        entry = torch.load(where, map_location="cpu", weights_only=True)
        _verify(entry, key)
        restored = copy.deepcopy(model)
        restored.load_state_dict(entry["state_dict"], strict=True)
        history = {name: tuple(entry["history"][name]) for name in metrics}
    except Exception as error:  # any unreadable entry is retrained, whatever the reason
        warnings.warn(
            f"checkpoint cache entry {where} is corrupted ({type(error).__name__}: {error}); "
            "retraining and replacing it.",
            RuntimeWarning,
            stacklevel=4,  # the caller of train.fit (fit → _fit → load)
        )
        return None
    return restored, history


def _verify(entry: Any, key: str) -> None:
    """Raise ``ValueError`` unless ``entry`` is a complete, intact cache entry for ``key``."""
    if not isinstance(entry, dict) or any(name not in entry for name in _FIELDS):
        raise ValueError("missing fields")
    if entry["format"] != FORMAT or entry["key"] != key:
        raise ValueError("entry belongs to another key or format")
    if _checksum(entry["state_dict"], entry["history"]) != entry["checksum"]:
        raise ValueError("checksum mismatch")


def _hash_tensor(digest: Any, tensor: Tensor) -> None:
    """Feed a tensor's dtype, shape and raw bytes into ``digest``."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().data)


def _hash_state(digest: Any, state: dict[str, Tensor]) -> None:
    """Feed every entry of a state dict, in key order, into ``digest``."""
    for name in sorted(state):
        digest.update(name.encode())
        _hash_tensor(digest, state[name])


def _checksum(state: dict[str, Tensor], history: dict[str, Any]) -> str:
    """Checksum of a cache entry's payload: the weights and the history."""
    digest = hashlib.sha256()
    _hash_state(digest, state)
    digest.update(json.dumps(history, sort_keys=True).encode())
    return digest.hexdigest()

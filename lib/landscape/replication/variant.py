"""Network variants and the changes between them: the inputs of a replicated comparison.

A *variant* is one network configuration, ``{"model": "mlp" | "cnn", **options of models.build}``.
``variants`` validates a list of them once (every option checked by the model builder), fills in
the builder's defaults and labels each one ("CNN 2×16 +BN"). ``changes`` pairs them and says what
differs: a pair that differs in exactly one setting (batch-norm, dropout, depth...) is a controlled
comparison; "MLP → CNN" also changes the width and the kernel, and is reported as such. Training,
measuring and comparing the variants is not here (``replication.compare``), nor are the measures
(``replication.measures``) or figures (``replication.figures``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import models
from ..checks import check_choice

__all__ = [
    "Change",
    "Variant",
    "changes",
    "variants",
]

# ------------------------------------------------------------------------------------- variants


@dataclass(frozen=True, eq=False)
class Variant:
    """One network configuration.

    Attributes:
        model: ``"mlp"`` or ``"cnn"``.
        options: the options given (keys of ``models.build``), as the caller wrote them.
        settings: ``model`` and every build setting with the builder's defaults filled in
            (``seed`` excluded: training seeds are replicates, not settings).
        label: a short unique name, e.g. ``"CNN 2×16 +BN +dropout 0.2"``.
    """

    model: str
    options: dict[str, Any]
    settings: dict[str, Any]
    label: str

    @property
    def slug(self) -> str:
        """The label as an identifier (for claim ids): ``"cnn_2x16_bn_dropout_0_2"``."""
        text = self.label.lower().replace("×", "x").replace("+", "")
        return re.sub(r"[^a-z0-9]+", "_", text).strip("_")

    def __str__(self) -> str:
        return self.label


def _label(settings: Mapping[str, Any]) -> str:
    """``"MLP 2×32 +BN +dropout 0.2"``; non-default kernel, activation and bias are appended."""
    s = settings
    size = s["width"] if s["model"] == "mlp" else s["channels"]
    name = f"{s['model'].upper()} {s['depth']}×{size}"
    if s["model"] == "cnn" and s["kernel_size"] != models.CNN_DEFAULTS["kernel_size"]:
        name += f" kernel {s['kernel_size']}"
    name += " +BN" if s["batch_norm"] else ""
    name += f" +dropout {s['dropout']:g}" if s["dropout"] else ""
    name += f" {s['activation']}" if s["activation"] != "relu" else ""
    return name + (" no bias" if not s["bias"] else "")


def variants(specs: Any, name: str = "variants") -> list[Variant]:
    """Validate a list of variant dicts once and label them.

    Each entry is ``{"model": "mlp" | "cnn", **options}`` with options of ``models.build``
    (depth, width or channels, kernel_size, batch_norm, dropout, bias, activation); every value is
    checked by the builder's own validators. ``seed`` is refused (training seeds are the
    replicates), and so is the same network listed twice.

    Raises:
        ValueError: naming ``name[i]`` and what is wrong.

    Example:
        >>> [v.label for v in variants([{"model": "cnn", "depth": 2, "channels": 16},
        ...                             {"model": "cnn", "depth": 2, "channels": 16, "batch_norm": True}])]
        ['CNN 2×16', 'CNN 2×16 +BN']
    """
    if not isinstance(specs, list | tuple) or not specs:
        raise ValueError(
            f"{name}={specs!r} must be a non-empty list of dicts like {{'model': 'cnn', 'depth': 2}}."
        )
    found: list[Variant] = []
    for i, spec in enumerate(specs):
        where = f"{name}[{i}]"
        if not isinstance(spec, Mapping) or "model" not in spec:
            raise ValueError(
                f"{where}={spec!r} must be a dict with a 'model' key ('mlp' or 'cnn')."
            )
        kind = check_choice(f"{where}['model']", spec["model"], models.KINDS)
        options = {key: value for key, value in spec.items() if key != "model"}
        if "seed" in options:
            raise ValueError(
                f"{where} sets 'seed'; training seeds are the replicates (the notebook's `seeds`), "
                "not a setting of the network."
            )
        try:  # the builder's own validators; a tiny input shape keeps it instant
            models.build(kind, (1, 4, 4), 2, **options)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        defaults, _ = models.KINDS[kind]
        settings = {
            "model": kind,
            **{key: options.get(key, value) for key, value in defaults.items() if key != "seed"},
        }
        for earlier in found:
            if earlier.settings == settings:
                j = found.index(earlier)
                raise ValueError(
                    f"{where} and {name}[{j}] are the same network ({earlier.label}); list each once."
                )
        found.append(Variant(kind, options, settings, _label(settings)))
    return found


@dataclass(frozen=True, eq=False)
class Change:
    """Two variants and the settings in which they differ (``a`` → ``b``).

    For a one-setting change, ``a`` has the smaller value (False before True, 0 before 0.2,
    depth 2 before 4), so b − a is the effect of *adding* or *increasing* the setting.

    Attributes:
        a, b: the two variants; ``i``, ``j`` their positions in the list.
        differs: the settings whose values differ ("model" first); a setting one model lacks
            (an MLP's width, a CNN's channels) counts as different.
    """

    a: Variant
    b: Variant
    i: int
    j: int
    differs: tuple[str, ...]

    @property
    def single(self) -> bool:
        """Whether exactly one setting differs: a controlled comparison."""
        return len(self.differs) == 1

    @property
    def setting(self) -> str:
        """The one setting that differs (ValueError when several do)."""
        if not self.single:
            raise ValueError(
                f"{self.a} → {self.b} differs in {', '.join(self.differs)}, not one setting."
            )
        return self.differs[0]

    def describe(self) -> str:
        """What differs: ``"batch_norm False → True"``, or every difference of a wider change."""

        def show(settings, key):
            return (
                "–"
                if key not in settings
                else f"{settings[key]:g}"
                if isinstance(settings[key], float)
                else str(settings[key])
            )

        return ", ".join(
            f"{key} {show(self.a.settings, key)} → {show(self.b.settings, key)}"
            for key in self.differs
        )

    def __str__(self) -> str:
        return f"{self.a} → {self.b} ({self.describe()})"


def changes(found: Sequence[Variant], *, single: bool = False) -> list[Change]:
    """Every pair of variants with what differs between them; ``single``: only one-setting pairs.

    Example:
        >>> vs = variants([{"model": "mlp", "depth": 2, "width": 32},
        ...                {"model": "cnn", "depth": 2, "channels": 16}])
        >>> str(changes(vs)[0])
        'MLP 2×32 → CNN 2×16 (model mlp → cnn, width 32 → –, channels – → 16, kernel_size – → 3)'
    """
    pairs = []
    missing = object()
    for i, a in enumerate(found):
        for j in range(i + 1, len(found)):
            b = found[j]
            keys = dict.fromkeys([*a.settings, *b.settings])
            differs = tuple(
                key for key in keys if a.settings.get(key, missing) != b.settings.get(key, missing)
            )
            if single and len(differs) != 1:
                continue
            swap = len(differs) == 1 and _later(a.settings[differs[0]], b.settings[differs[0]])
            pairs.append(Change(b, a, j, i, differs) if swap else Change(a, b, i, j, differs))
    return pairs


def _later(x: Any, y: Any) -> bool:
    """Whether ``x`` comes after ``y`` (so a change is written from the smaller value)."""
    try:
        return bool(x > y)
    except TypeError:
        return str(x) > str(y)

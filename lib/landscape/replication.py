"""Replicated comparisons of network variants: which settings change a measure, and by how much.

A *variant* is one network configuration, ``{"model": "mlp" | "cnn", **options of models.build}``.
``variants`` validates a list of them once (every option checked by the model builder), fills in
the builder's defaults and labels each one ("CNN 2×16 +BN"). ``changes`` pairs them and says what
differs: a pair that differs in exactly one setting (batch-norm, dropout, depth...) is a controlled
comparison; "MLP → CNN" also changes the width and the kernel, and is reported as such.

``replicate`` trains every variant for R independent training seeds (``experiment.prepare(...,
seed=s)``, networks cached on disk) and records what a caller-supplied ``measure`` computes on each
(variant, seed). ``Replicates`` then gives means with intervals over seeds, paired differences
between variants over their shared seeds (``claims.paired_difference``), rankings in which an
interval of the paired difference that contains 0 is a tie, and ledger entries for the claims a
paper makes about one-setting changes (``Expectation``, ``Replicates.claims``).

Measures defined inside the data live here too: the fitted level of Δ_k at a reference k inside
the fit window (``level_at``), never the intercept at k = 1; basin widths on 1-D profiles with the
crossings interpolated between grid points (``profile_width``, ``basin_widths``, ``basin_record``)
and the two 2-D slices of the papers' landscape figures (``basin_slices``). ``BASIN_CLAIMS`` holds the main paper's claims about the
basin width (Figs 2–4); ``draw_values`` and ``draw_differences`` draw replicates and paired
differences on axes a notebook provides. Verdicts are ``claims``' (``claims.verdict``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from . import claims as _claims
from . import directions, experiment, hessian, models, surface
from .checks import check_choice, check_int, check_positive, check_seed, check_sequence
from .problem import Problem
from .theory import RateFit

__all__ = [
    "Change",
    "Comparison",
    "Expectation",
    "RankEntry",
    "Replicates",
    "Variant",
    "BASIN_CLAIMS",
    "Widths",
    "basin_record",
    "basin_slices",
    "basin_widths",
    "changes",
    "conflicts",
    "describe_claims",
    "describe_ranking",
    "draw_differences",
    "draw_values",
    "level_at",
    "profile_width",
    "replicate",
    "reshapes_convergence",
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


# ----------------------------------------------------------------------------------- replicates


@dataclass(frozen=True, eq=False)
class Comparison:
    """The paired difference b − a of one measure over the seeds two variants share.

    Attributes:
        change: the two variants and what differs.
        measure: the name of the measure; ``log``: the difference is of its natural logarithm
            (``ratio`` = e^estimate is then the factor b / a).
        a_values, b_values: the measure per shared seed.
        estimate: mean of b − a over the seeds; ``interval``: its bootstrap interval at ``level``.
        replicates: the number of shared seeds.
    """

    change: Change
    measure: str
    log: bool
    a_values: np.ndarray
    b_values: np.ndarray
    estimate: float
    interval: tuple[float, float]
    level: float
    replicates: int

    @property
    def tie(self) -> bool:
        """Whether the interval contains 0 (or is undefined: one seed): no difference shown."""
        lo, hi = self.interval
        return not (lo > 0 or hi < 0)

    @property
    def ratio(self) -> float:
        """e^estimate: the geometric-mean factor b / a (only for ``log`` comparisons)."""
        if not self.log:
            raise ValueError(f"{self.measure} was compared on its own scale; ratio needs log=True.")
        return math.exp(self.estimate)

    def describe(
        self, fmt: str = "+.3f", larger: str = "b larger", smaller: str = "b smaller"
    ) -> str:
        """``"CNN 2×16 → CNN 2×16 +BN: +0.035 [−0.010, +0.080] (a tie: …)"``, ×factors for log.

        ``larger``/``smaller`` name the outcome when the interval lies above/below 0.
        """
        lo, hi = self.interval
        show = (lambda x: f"×{math.exp(x):.3g}") if self.log else (lambda x: f"{x:{fmt}}")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            text, verdict = (
                show(self.estimate),
                f"no interval from {self.replicates} seed(s): undecided",
            )
        else:
            text = f"{show(self.estimate)} [{show(lo)}, {show(hi)}]"
            verdict = (
                f"a tie: the interval contains {'×1' if self.log else '0'}"
                if self.tie
                else larger
                if self.estimate > 0
                else smaller
            )
        return f"{self.change.a} → {self.change.b}: {text} ({verdict})"


@dataclass(frozen=True)
class RankEntry:
    """One variant's place in a ranking (see ``Replicates.ranking``).

    Attributes:
        label: the variant; ``mean`` and ``interval``: its measure over seeds.
        rank: 1 + the number of variants shown to come before it; variants whose paired
            difference with it contains 0 are ``tied_with`` it and may share its rank.
        ahead_of: the variants it is shown to come before (their paired interval excludes 0).
    """

    label: str
    mean: float
    interval: tuple[float, float]
    rank: int
    tied_with: tuple[str, ...]
    ahead_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expectation:
    """A claim about the effect of changing one setting, as a paper states it.

    Attributes:
        id: the claim's identifier (suffixed with the pair when several pairs test it).
        source: where it comes from, e.g. ``"main paper §5.2, Fig. 2"``.
        statement: the claim, with ``{a}`` and ``{b}`` for the two variants, e.g. "Adding
            batch-norm narrows a CNN's basin: r is smaller for {b} than for {a}."
        settings: the setting(s) whose one-setting changes test it (None: any one setting).
        region: where the paired difference b − a lies if the claim holds (``claims.verdict``).
        model: only pairs of this model (None: any).
        when: only pairs whose ``b`` settings satisfy it (e.g. batch-norm *and* dropout on).
        absolute: test |b − a| (a claim that the setting matters, whichever way).
    """

    id: str
    source: str
    statement: str
    settings: tuple[str, ...] | str | None
    region: dict[str, Any]
    model: str | None = None
    when: Callable[[Mapping[str, Any]], bool] | None = None
    absolute: bool = False

    def matches(self, change: Change) -> bool:
        """Whether ``change`` is a one-setting change this claim is about."""
        keys = (self.settings,) if isinstance(self.settings, str) else self.settings
        return (
            change.single
            and (keys is None or change.setting in keys)
            and (self.model is None or change.a.model == self.model)
            and (self.when is None or bool(self.when(change.b.settings)))
        )


@dataclass(frozen=True, eq=False)
class Replicates:
    """What ``measure`` returned for every (variant, training seed).

    Attributes:
        variants: the variants, in the caller's order; ``seeds``: the training seeds.
        records: ``records[label][seed]`` is the mapping ``measure`` returned.
        setups: ``setups[label][seed]`` is the ``experiment.Setup`` it measured.
    """

    variants: list[Variant]
    seeds: tuple[int, ...]
    records: dict[str, dict[int, Mapping[str, Any]]]
    setups: dict[str, dict[int, experiment.Setup]] = field(repr=False)

    def values(self, name: str) -> np.ndarray:
        """The measure ``name`` as a (variants, seeds) float array."""
        out = np.empty((len(self.variants), len(self.seeds)))
        for i, v in enumerate(self.variants):
            for j, s in enumerate(self.seeds):
                record = self.records[v.label][s]
                if name not in record:
                    raise ValueError(
                        f"the measure returned no {name!r} for {v.label}, seed {s}; it returned "
                        f"{sorted(record)}."
                    )
                try:
                    out[i, j] = float(record[name])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{name!r} of {v.label}, seed {s} is {record[name]!r}, not a number."
                    ) from None
        return out

    def summary(self, name: str, *, level: float = 0.95) -> list[tuple[float, tuple[float, float]]]:
        """Per variant: the mean of ``name`` over seeds and its bootstrap interval over seeds."""
        return [_claims.replicate_interval(row, level=level) for row in self.values(name)]

    def frame(
        self, names: Sequence[str], *, intervals: Sequence[str] = (), level: float = 0.95
    ) -> Any:
        """A pandas table, one row per variant: the mean over seeds of each of ``names``, and for
        those in ``intervals`` its bootstrap interval over seeds (columns "<name> lo", "<name> hi")."""
        columns: dict[str, Any] = {}
        for name in names:
            summary = self.summary(name, level=level)
            columns[name] = [m for m, _ in summary]
            if name in intervals:
                columns[f"{name} lo"] = [lo for _, (lo, _) in summary]
                columns[f"{name} hi"] = [hi for _, (_, hi) in summary]
        return pd.DataFrame(
            columns, index=pd.Index([v.label for v in self.variants], name="variant")
        )

    def compare(
        self, name: str, change: Change, *, log: bool = False, level: float = 0.95
    ) -> Comparison:
        """The paired difference b − a of ``name`` (or of its log) over the shared seeds."""
        values = self.values(name)
        a, b = values[change.i], values[change.j]
        if log:
            a, b = _log(name, a), _log(name, b)
        estimate, interval = _claims.paired_difference(a, b, level=level)
        return Comparison(change, name, log, a, b, estimate, interval, level, len(self.seeds))

    def comparisons(
        self, name: str, *, log: bool = False, single: bool = True, level: float = 0.95
    ) -> list[Comparison]:
        """``compare`` for every pair of variants (``single``: one-setting pairs only)."""
        return [
            self.compare(name, c, log=log, level=level)
            for c in changes(self.variants, single=single)
        ]

    def ranking(
        self, name: str, *, largest_first: bool = True, log: bool = False, level: float = 0.95
    ) -> list[RankEntry]:
        """Variants ordered by ``name``, ties reported as ties.

        Variant x comes before y when the interval of their paired difference excludes 0 in x's
        favour; x's rank is 1 + the number of variants that come before it, so variants no
        pair can separate share a rank. With one seed there are no intervals and every variant
        ranks first (one network cannot rank architectures). Entries are sorted by rank, then
        by mean.
        """
        values = self.values(name)
        vals = np.array([_log(name, row) for row in values]) if log else values
        n = len(self.variants)
        before = np.zeros((n, n), dtype=bool)  # before[x, y]: x shown to come before y
        tied: list[list[str]] = [[] for _ in range(n)]
        for x in range(n):
            for y in range(x + 1, n):
                _, (lo, hi) = _claims.paired_difference(vals[x], vals[y], level=level)  # y − x
                if lo > 0 or hi < 0:
                    y_larger = lo > 0
                    first, second = (y, x) if y_larger == largest_first else (x, y)
                    before[first, second] = True
                else:
                    tied[x].append(self.variants[y].label)
                    tied[y].append(self.variants[x].label)
        labels = [v.label for v in self.variants]
        entries = [
            RankEntry(
                labels[x],
                mean,
                interval,
                1 + int(before[:, x].sum()),
                tuple(tied[x]),
                tuple(labels[y] for y in np.flatnonzero(before[x])),
            )
            for x, (mean, interval) in enumerate(self.summary(name, level=level))
        ]
        sign = -1 if largest_first else 1
        return sorted(entries, key=lambda e: (e.rank, sign * e.mean))

    def results(
        self, name: str, *, log: bool = False, largest_first: bool = True, level: float = 0.95
    ) -> dict[str, Any]:
        """``name`` for results.json: per seed, mean and interval per variant, ranking, differences.

        Keys: ``{name}_per_seed`` (variants × seeds), ``{name}_mean``, ``{name}_ci``,
        ``{name}_ranking`` (variant, rank, mean, tied_with) and ``{name}_differences`` (every
        one-setting change: change, setting, estimate, interval, tie; of the log with ``log``).
        """
        summary = self.summary(name, level=level)
        ranking = self.ranking(name, largest_first=largest_first, log=log, level=level)
        return {
            f"{name}_per_seed": self.values(name),
            f"{name}_mean": [m for m, _ in summary],
            f"{name}_ci": [ci for _, ci in summary],
            f"{name}_ranking": [
                dict(variant=e.label, rank=e.rank, mean=e.mean, tied_with=list(e.tied_with))
                for e in ranking
            ],
            f"{name}_differences": [
                dict(
                    change=f"{c.change.a} → {c.change.b}",
                    setting=c.change.setting,
                    log=c.log,
                    estimate=c.estimate,
                    interval=c.interval,
                    tie=c.tie,
                )
                for c in self.comparisons(name, log=log, level=level)
            ],
        }

    def describe_changes(
        self,
        name: str,
        *,
        log: bool = False,
        larger: str = "b larger",
        smaller: str = "b smaller",
        fmt: str = "+.3f",
        context: Mapping[str, str] | None = None,
        show: int = 3,
    ) -> str:
        """Markdown: one bullet per one-setting change (``Comparison.describe``), then the pairs
        that differ in more than one setting, with everything that differs.

        Pairs that change the model come first among the latter (an MLP and a CNN also differ in
        width, channels and kernel); ``context`` adds a note per variant (size, accuracy), ``show``
        caps how many are spelled out.
        """
        lines = [f"- {c.describe(fmt, larger, smaller)}" for c in self.comparisons(name, log=log)]
        lines = lines or ["- (no pair of variants differs in exactly one setting)"]
        multi = sorted(
            (c for c in changes(self.variants) if not c.single),
            key=lambda c: ("model" not in c.differs, len(c.differs)),
        )
        if multi:

            def named(v: Variant) -> str:
                return f"{v} ({context[v.label]})" if context else str(v)

            spelled = "; ".join(
                f"{named(c.a)} → {named(c.b)}: {c.describe()}" for c in multi[:show]
            )
            more = f" and {len(multi) - show} more" if len(multi) > show else ""
            lines.append(
                f"\n{len(multi)} other pair(s) differ in more than one setting and are not "
                f"read as the effect of one change: {spelled}{more}."
            )
        return "\n".join(lines)

    def claims(
        self,
        name: str,
        expectations: Sequence[Expectation],
        *,
        log: bool = False,
        level: float = 0.95,
        note: str = "",
    ) -> list[_claims.Claim]:
        """Ledger entries: each expectation tested on every one-setting change it is about.

        An expectation that several pairs test gets one entry per pair, its id suffixed with
        ``_<a>_to_<b>`` (the variants' slugs).

        The estimate is the paired difference b − a of ``name`` (of its log with ``log``; of
        |b − a| with ``Expectation.absolute``, whose interval is the image of the difference's
        interval under |·|) over the shared seeds; comparisons of networks need
        ``claims.MIN_COMPARISON_REPLICATES`` seeds. An expectation that no pair tests gives no
        entry.
        """
        ledger = []
        found = changes(self.variants, single=True)
        for exp in expectations:
            matching = [c for c in found if exp.matches(c)]
            for change in matching:
                comp = self.compare(name, change, log=log, level=level)
                estimate, interval = comp.estimate, comp.interval
                if exp.absolute:
                    estimate, interval = abs(estimate), _abs_interval(interval)
                suffix = f"_{change.a.slug}_to_{change.b.slug}" if len(matching) > 1 else ""
                ledger.append(
                    _claims.claim(
                        exp.id + suffix,
                        exp.statement.format(a=change.a.label, b=change.b.label),
                        estimate,
                        interval,
                        exp.region,
                        source=exp.source,
                        level=level,
                        replicates=comp.replicates,
                        min_replicates=_claims.MIN_COMPARISON_REPLICATES,
                        note=note,
                    )
                )
        return ledger

    def claims_per_variant(
        self,
        name: str,
        id: str,
        statement: str,
        region: Mapping[str, Any],
        *,
        source: str,
        level: float = 0.95,
        note: str = "",
    ) -> list[_claims.Claim]:
        """One ledger entry per variant: the mean of ``name`` over seeds, interval over seeds.

        ``statement`` holds ``{variant}``; ids are ``f"{id}_{variant.slug}"``. With one seed the
        interval is undefined and the verdict inconclusive.
        """
        return [
            _claims.claim(
                f"{id}_{v.slug}",
                statement.format(variant=v.label),
                mean,
                interval,
                region,
                source=source,
                level=level,
                replicates=len(self.seeds),
                note=note,
            )
            for v, (mean, interval) in zip(self.variants, self.summary(name, level=level))
        ]


def conflicts(ranking: Sequence[RankEntry], other: Sequence[RankEntry]) -> list[tuple[str, str]]:
    """Pairs (x, y) that ``ranking`` puts x before y and ``other`` puts y before x.

    A check that a ranking by one measure (a fitted level) agrees with a ranking by another (the
    value measured at the same k): only pairs both rankings separate (paired intervals excluding
    0) can conflict; a tie in either is never a conflict.
    """
    ahead = {e.label: set(e.ahead_of) for e in other}
    return [(x.label, y) for x in ranking for y in x.ahead_of if x.label in ahead.get(y, ())]


def replicate(
    found: Sequence[Variant],
    seeds: Sequence[int],
    measure: Callable[[experiment.Setup, Variant, int], Mapping[str, Any]],
    *,
    dataset: str = "digits",
    **prepare: Any,
) -> Replicates:
    """Train every variant for every training seed and measure each network.

    For each variant and seed s: ``experiment.prepare(dataset, v.model, v.options, seed=s,
    **prepare)`` (trained networks are cached, so a rerun only loads them), then
    ``measure(setup, variant, s)``, which returns a mapping of named results (numbers for
    ``Replicates.values``; anything else, e.g. surfaces to draw, is kept as it is).

    Args:
        found: the variants (from ``variants``).
        seeds: distinct training seeds, the replicates (≥ ``claims.MIN_COMPARISON_REPLICATES``
            for a comparison of networks to hold or fail).
        measure: ``(setup, variant, seed) -> mapping``.
        dataset, **prepare: passed to ``experiment.prepare`` (not ``seed``).
    """
    if not found or not all(isinstance(v, Variant) for v in found):
        raise ValueError("found must be a non-empty list of Variant (from replication.variants).")
    seeds = tuple(check_sequence("seeds", seeds, check_seed))
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"seeds={list(seeds)} repeats a seed; replicates must be independent.")
    if "seed" in prepare:
        raise ValueError("pass training seeds as `seeds`, not `seed`.")
    records: dict[str, dict[int, Mapping[str, Any]]] = {}
    setups: dict[str, dict[int, experiment.Setup]] = {}
    for v in found:
        records[v.label], setups[v.label] = {}, {}
        for s in seeds:
            setup = experiment.prepare(dataset, v.model, dict(v.options), seed=s, **prepare)
            record = measure(setup, v, s)
            if not isinstance(record, Mapping):
                raise ValueError(
                    f"measure must return a mapping of named results; got {type(record).__name__} "
                    f"for {v.label}, seed {s}."
                )
            records[v.label][s], setups[v.label][s] = record, setup
    return Replicates(list(found), seeds, records, setups)


def describe_ranking(entries: Sequence[RankEntry], fmt: str = ".3g") -> str:
    """``"1. A (0.21); 2. B (0.30) = C (0.31)"``: variants sharing a rank joined by "=" (tied)."""
    groups: dict[int, list[RankEntry]] = {}
    for e in entries:
        groups.setdefault(e.rank, []).append(e)
    return "; ".join(
        f"{rank}. " + " = ".join(f"{e.label} ({e.mean:{fmt}})" for e in group)
        for rank, group in groups.items()
    )


def describe_claims(ledger: Sequence[_claims.Claim], fmt: str = "+.3f", symbol: str = "Δ") -> str:
    """``"2 hold, 1 fails, 0 inconclusive: <claim> — holds (Δ = +0.04 [+0.01, +0.07]); …"`` (plain text).

    Each claim is named by its statement up to the first colon.
    """
    counts = _claims.verdict_counts(ledger)
    listed = "; ".join(
        f"{c.statement.split(':')[0]} — {c.verdict} ({symbol} = {c.estimate:{fmt}} "
        f"[{c.interval[0]:{fmt}}, {c.interval[1]:{fmt}}])"
        for c in ledger
    )
    tally = (
        f"{counts['holds']} hold{'s' if counts['holds'] == 1 else ''}, {counts['fails']} "
        f"fail{'s' if counts['fails'] == 1 else ''}, {counts['inconclusive']} inconclusive"
    )
    return f"{tally}: {listed}" if ledger else tally


def _log(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not (values > 0).all():
        raise ValueError(
            f"{name!r} must be positive to compare its logarithm; got {values.tolist()}."
        )
    return np.log(values)


def _abs_interval(interval: tuple[float, float]) -> tuple[float, float]:
    """{|x| : x in [lo, hi]}."""
    lo, hi = interval
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (math.nan, math.nan)
    if lo <= 0 <= hi:
        return (0.0, max(-lo, hi))
    return (min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))


# ------------------------------------------------------------------- measures inside the data


def level_at(fit: RateFit, k_ref: int) -> float:
    """The fitted C k_ref^(−α) at a reference ``k_ref`` inside the fit window.

    The intercept C alone is the fit's value at k = 1, usually far outside the window it was
    fitted on; two architectures with slightly different α can swap order between k = 1 and
    the data. The fitted value at a k inside the window compares what was measured.
    """
    k_ref = check_int("k_ref", k_ref, low=1)
    if not fit.k_min <= k_ref <= fit.k_max:
        raise ValueError(
            f"k_ref={k_ref} lies outside the fit window {fit.k_min}..{fit.k_max}; choose a "
            "reference k inside the data the rate was fitted on."
        )
    return float(fit.predict(k_ref))


def profile_width(coords: Any, loss: Any, rise: float) -> surface.BasinWidth:
    """Half-width of the basin on a 1-D profile, the crossings interpolated between grid points.

    Walking out from the grid point nearest 0, the basin ends on each side where the loss first
    exceeds loss(0) + ``rise``; the crossing is placed by linear interpolation between the last
    point inside and the first outside, so the width resolves below the grid step (counting grid
    points would round it to whole steps, and two networks can then tie exactly). Where the loss
    never exceeds the level, the edge of the grid is used and ``truncated`` is set (a lower bound).

    Example:
        >>> t = np.linspace(-1, 1, 11)
        >>> round(profile_width(t, 2 * t**2, 0.5).radius, 3)  # exact √(0.5/2) = 0.5; step 0.2
        0.49
    """
    t, f = np.asarray(coords, dtype=float), np.asarray(loss, dtype=float)
    if t.ndim != 1 or t.shape != f.shape or len(t) < 3:
        raise ValueError(
            f"coords and loss must be 1-D of equal length ≥ 3; got {t.shape}, {f.shape}."
        )
    if not np.all(np.diff(t) > 0) or not t[0] <= 0 <= t[-1]:
        raise ValueError("coords must increase and contain 0 (w*).")
    rise = check_positive("rise", rise)
    c = int(np.abs(t).argmin())
    level = f[c] + rise
    ends, truncated = [], False
    for step in (1, -1):
        j = c + step
        while 0 <= j < len(t) and f[j] <= level:
            j += step
        if not 0 <= j < len(t):
            ends.append(t[j - step])
            truncated = True
            continue
        inner = j - step
        frac = (level - f[inner]) / (f[j] - f[inner])
        ends.append(t[inner] + frac * (t[j] - t[inner]))
    return surface.BasinWidth(float((ends[0] - ends[1]) / 2), truncated)


@dataclass(frozen=True, eq=False)
class Widths:
    """Basin half-widths along several random 1-D directions (see ``basin_widths``).

    Attributes:
        radius: one interpolated half-width per direction.
        truncated: per direction, whether the basin reached the edge of the scan (a lower bound).
        profiles: the scanned 1-D surfaces (``surface.Surface``), one per direction.
    """

    radius: np.ndarray
    truncated: np.ndarray
    profiles: list[surface.Surface] = field(repr=False)

    @property
    def mean(self) -> float:
        """The mean half-width over the directions."""
        return float(self.radius.mean())


def basin_widths(
    prob: Problem,
    count: int,
    *,
    rise: float,
    span: float = 1.0,
    points: int = 15,
    kind: str = "filter",
    seed: int = 0,
) -> Widths:
    """Interpolated basin half-widths of L_K along ``count`` random directions through w*.

    Draws ``count`` directions (``directions.random``, filter-normalised by default: each
    filter as long as w*'s), scans L_K on ``points`` coordinates in [−span, span] along each
    (``surface.scan``) and measures each profile with ``profile_width``.
    """
    count = check_int("count", count, low=1)
    points = check_int("points", points, low=3)
    if points % 2 == 0:
        raise ValueError(f"points={points} must be odd so that w* is a grid point.")
    sub = directions.random(prob, count, kind=kind, seed=seed)
    profiles = [
        surface.scan(
            prob,
            directions.Subspace(sub.basis[:, j : j + 1], sub.kind),
            span=span,
            points=points,
            progress=False,
        )
        for j in range(count)
    ]
    found = [profile_width(p.coords[0], p.loss, rise) for p in profiles]
    return Widths(
        radius=np.array([w.radius for w in found]),
        truncated=np.array([w.truncated for w in found]),
        profiles=profiles,
    )


# --------------------------------------------------------------------------- the paper's claims

#: The main paper's claims about the basin width r (§5.2–5.3, Figs 2–4; §6 "Impact of
#: architectural choices"), as it states them, each tested on every one-setting change it is
#: about: r paired over training seeds (``Replicates.claims("width", BASIN_CLAIMS)``).
BASIN_CLAIMS: tuple[Expectation, ...] = (
    Expectation(
        "bn_narrows_basin",
        "main paper §5.2, Fig. 2",
        "Adding batch-norm narrows a CNN's basin: r is smaller for {b} than for {a}.",
        "batch_norm",
        {"below": 0.0},
        model="cnn",
    ),
    Expectation(
        "dropout_widens_basin",
        "main paper §5.2, Fig. 2",
        "Adding dropout widens a CNN's basin (again): r is larger for {b} than for {a}.",
        "dropout",
        {"above": 0.0},
        model="cnn",
    ),
    Expectation(
        "depth_widens_basin",
        "main paper §5.3, Fig. 4",
        "A deeper CNN has a wider basin: r is larger for {b} than for {a}.",
        "depth",
        {"above": 0.0},
        model="cnn",
    ),
    Expectation(
        "mlp_bn_dropout_widest",
        "main paper §5.2, Fig. 3",
        "An MLP with batch-norm and dropout has a wider basin than with only one of them: r is "
        "larger for {b} than for {a}.",
        ("batch_norm", "dropout"),
        {"above": 0.0},
        model="mlp",
        when=lambda s: bool(s["batch_norm"]) and s["dropout"] > 0,
    ),
)


def reshapes_convergence(k_ref: int) -> Expectation:
    """The main paper's §6 claim that architecture "reshapes convergence", tested per one-setting
    change on the level of Δ_k at ``k_ref`` (compare with ``log=True``): the paired |ln ratio|
    exceeds ln 2, i.e. the change moves Δ_k at least twofold, whichever way."""
    return Expectation(
        "setting_reshapes_convergence",
        "main paper §6, 'Impact of architectural choices'",
        f"Changing one setting reshapes convergence: Δ_k at k = {check_int('k_ref', k_ref, low=1)} "
        "differs at least twofold between {a} and {b} (|ln ratio| > ln 2 = 0.69).",
        None,
        {"above": math.log(2.0)},
        absolute=True,
    )


# ------------------------------------------------------------------------------------ figures


def draw_values(
    ax: Any,
    reps: Replicates,
    name: str,
    *,
    log: bool = False,
    ylabel: str = "",
    reference: float | None = None,
    reference_label: str | None = None,
    level: float = 0.95,
) -> Any:
    """Per variant: ``name`` for each seed (dots, one colour per seed, so pairs can be followed
    across variants) and the mean with its interval over seeds (black squares)."""
    values = reps.values(name)
    positions = np.arange(len(reps.variants))
    for j, seed in enumerate(reps.seeds):
        ax.plot(
            positions + 0.06 * (j - (len(reps.seeds) - 1) / 2),
            values[:, j],
            "o",
            alpha=0.6,
            color=f"C{j % 10}",
            label=f"seed {seed}",
        )
    for i, (mean, (lo, hi)) in enumerate(reps.summary(name, level=level)):
        err = [[mean - lo], [hi - mean]] if math.isfinite(lo) else None
        ax.errorbar(i, mean, err, fmt="s", color="k", capsize=4, ms=5)
    if reference is not None:
        ax.axhline(reference, color="0.35", ls="--", lw=1.1, label=reference_label)
    ax.legend(fontsize=7, ncol=min(4, len(reps.seeds) + 1))
    ax.set_xticks(
        range(len(reps.variants)), [v.label.replace(" +", "\n+") for v in reps.variants], fontsize=8
    )
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(
        f"per training seed (dots); mean and {level:.0%} interval over {len(reps.seeds)} seeds",
        fontsize=9,
    )
    return ax


def draw_differences(
    ax: Any,
    comparisons: Sequence[Comparison],
    *,
    xlabel: str = "",
    colors: tuple[str, str] = ("tab:green", "tab:red"),
) -> Any:
    """Each paired difference with its interval, one row per comparison.

    Coloured ``colors[0]`` when the interval lies above 0 (b larger), ``colors[1]`` below, grey
    for a tie. Comparisons of logarithms are drawn as factors b / a on a log axis.
    """
    log = any(c.log for c in comparisons)
    for y, c in enumerate(comparisons):
        x, lo, hi = (c.estimate, *c.interval)
        if c.log:
            x, lo, hi = math.exp(x), math.exp(lo), math.exp(hi)
        err = [[x - lo], [hi - x]] if math.isfinite(lo) else None
        ax.errorbar(
            x,
            y,
            xerr=err,
            fmt="o",
            capsize=4,
            color="0.45" if c.tie else colors[0] if c.estimate > 0 else colors[1],
        )
    ax.axvline(1.0 if log else 0.0, color="0.3", lw=1, ls="--")
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"×{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(
        range(len(comparisons)), [f"{c.change.a} →\n{c.change.b}" for c in comparisons], fontsize=8
    )
    ax.set_ylim(len(comparisons) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    level = comparisons[0].level if comparisons else 0.95
    ax.set_title(
        f"changing one setting: paired difference, {level:.0%} interval over seeds", fontsize=9
    )
    return ax


def basin_record(
    setup: experiment.Setup,
    count: int,
    *,
    rise: float,
    span: float = 1.0,
    points: int = 15,
    seed: int = 0,
) -> dict[str, Any]:
    """What a basin comparison keeps of one trained network (a ``replicate`` measure's numbers).

    ``width``: r, the mean interpolated half-width along ``count`` filter-normalised directions
    (``basin_widths``); ``spread``: their standard deviation over r; ``truncated``: whether any
    scan ended inside the basin (r is then a lower bound); ``accuracy``: test accuracy; ``N``.
    """
    w = basin_widths(setup.problem, count, rise=rise, span=span, points=points, seed=seed)
    spread = float(w.radius.std(ddof=1) / w.mean) if count > 1 else 0.0
    return dict(
        width=w.mean,
        spread=spread,
        truncated=bool(w.truncated.any()),
        accuracy=setup.test_accuracy,
        N=setup.problem.num_params,
    )


def basin_slices(
    prob: Problem,
    *,
    points: int,
    filter_span: float,
    eigen_span: float,
    seed: int = 0,
    max_rise: float = math.inf,
) -> dict[str, Any]:
    """The two 2-D slices of the papers' landscape figures, with what their captions need.

    ``filter``: L_K on a ``points``² grid over [−filter_span, filter_span]² along two
    filter-normalised random directions (seeded by ``seed``); ``hessian``: the same along the top-2
    Hessian eigenvectors (``eig``, from ``hessian.top_eigenpairs``) over ±``eigen_span``;
    ``L0_filter``, ``L0_hessian``: L_K at the centre; ``dip``: the lowest L_K − L_K(w*) on either
    slice (< 0 where the slice goes below w*); ``above``: how many of the two slices rise beyond
    ``max_rise`` somewhere.
    """
    points = check_int("points", points, low=3)
    if points % 2 == 0:
        raise ValueError(f"points={points} must be odd so that w* is a grid point.")
    eig = hessian.top_eigenpairs(prob, 2)
    filt = directions.random(prob, 2, kind="filter", seed=seed)
    out: dict[str, Any] = dict(eig=eig, dip=0.0, above=0)
    for kind, sub, span in [("filter", filt, filter_span), ("hessian", eig.subspace, eigen_span)]:
        out[kind] = s = surface.scan(prob, sub, span=span, points=points, progress=False)
        out[f"L0_{kind}"] = centre = float(s.loss[points // 2, points // 2])
        out["dip"] = min(out["dip"], float(s.loss.min() - centre))
        out["above"] += int((s.loss - centre > max_rise).any())
    return out

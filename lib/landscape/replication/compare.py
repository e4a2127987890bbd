"""Replicated comparisons of variants: which settings change a measure, and by how much.

``replicate`` trains every variant for R independent training seeds (``experiment.prepare(...,
seed=s)``, networks cached on disk) and records what a caller-supplied ``measure`` computes on each
(variant, seed). ``Replicates`` then gives means with intervals over seeds, paired differences
between variants over their shared seeds (``claims.paired_difference``; ``Comparison``), rankings
in which an interval of the paired difference that contains 0 is a tie (``RankEntry``,
``conflicts``), ledger entries for the claims a paper makes about one-setting changes
(``Expectation``, ``Replicates.claims``) and plain-text summaries (``describe_ranking``,
``describe_claims``). Verdicts are ``claims``' (``claims.verdict``). Defining the variants is not
here (``replication.variant``), nor are the measures themselves (``replication.measures``) or
figures (``replication.figures``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import claims as _claims
from .. import experiment
from ..checks import check_seed, check_sequence
from .variant import Change, Variant, changes

__all__ = [
    "Comparison",
    "Expectation",
    "RankEntry",
    "Replicates",
    "conflicts",
    "describe_claims",
    "describe_ranking",
    "replicate",
]

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

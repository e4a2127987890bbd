"""The claims ledger: what a report concludes, each conclusion with its interval and a verdict.

A *claim* is a sentence a paper (or we) state about a measurable quantity: "Δ_k decays like k⁻²",
"batch-norm narrows the basin". It is tested by one number (``estimate``) with a confidence
interval over independent replicates (training seeds × data orders × directions) and a *region*
where the claim says the number lies. The verdict follows from the interval and the region alone,
by one rule (``verdict``), so no notebook decides a verdict itself:

* ``"holds"`` — the interval lies inside the region;
* ``"fails"`` — the interval lies wholly outside it;
* ``"inconclusive"`` — it straddles a boundary, is not finite, or rests on fewer replicates than
  the claim needs (comparisons of networks need ``MIN_COMPARISON_REPLICATES`` training seeds).

``Claim.to_json`` gives the record of SPEC §11 that notebooks put under ``"claims"`` in
results.json; ``ledger_table`` renders a list of claims as the markdown table a report opens with.
Intervals over replicates come from ``replicate_interval`` and ``paired_difference`` (bootstrap
over replicates, paired where two conditions share seeds). Nothing here trains or measures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .checks import check_fraction, check_int, check_seed
from .reports.results import READING_OUTPUT, record
from .theory import bootstrap_interval

__all__ = [
    "MIN_COMPARISON_REPLICATES",
    "VERDICTS",
    "Claim",
    "bootstrap_statistic",
    "bound_ratio",
    "claim",
    "conclude",
    "ledger_table",
    "paired_difference",
    "replicate_interval",
    "verdict",
    "verdict_counts",
]

Verdict = Literal["holds", "fails", "inconclusive"]

#: The verdicts, in the order a ledger lists them.
VERDICTS: tuple[Verdict, ...] = ("holds", "fails", "inconclusive")

#: Independent training seeds a comparison of networks needs before it can hold or fail.
MIN_COMPARISON_REPLICATES = 3


def verdict(interval: Sequence[float], region: Mapping[str, Any]) -> Verdict:
    """``"holds"`` if ``interval`` lies inside ``region``, ``"fails"`` if wholly outside it.

    ``region`` is ``{"above": x}`` (the open half-line x < value), ``{"below": x}`` (value < x) or
    ``{"between": [a, b]}`` (a ≤ value ≤ b). An interval touching a boundary, or with a NaN end,
    is ``"inconclusive"``.

    Example:
        >>> verdict([1.7, 2.3], {"between": [1.5, 2.5]}), verdict([0.1, 0.4], {"above": 0.5})
        ('holds', 'fails')
        >>> verdict([-0.1, 0.2], {"above": 0.0})
        'inconclusive'
    """
    lo, hi = _interval(interval)
    kind, bounds = _region(region)
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if kind == "above":
        inside, outside = lo > bounds[0], hi < bounds[0]
    elif kind == "below":
        inside, outside = hi < bounds[0], lo > bounds[0]
    else:
        a, b = bounds
        inside, outside = a <= lo and hi <= b, hi < a or lo > b
    return "holds" if inside else "fails" if outside else "inconclusive"


@dataclass(frozen=True)
class Claim:
    """One entry of the ledger (SPEC §11). Build it with ``claim``, which sets the verdict.

    Attributes:
        id: short stable identifier, e.g. ``"bn_narrows_basin"``.
        source: where the claim comes from (``"main paper Fig. 3"``) or ``"ours"``.
        statement: one sentence a reader understands without the code.
        estimate: the measured number that decides it.
        interval: its confidence interval at ``level``.
        level: the interval's confidence level.
        region: where the claim says ``estimate`` lies (see ``verdict``).
        verdict: ``"holds"``, ``"fails"`` or ``"inconclusive"``.
        replicates: independent training seeds behind the estimate.
        note: what the interval is over, or why the verdict is inconclusive (optional).
    """

    id: str
    source: str
    statement: str
    estimate: float
    interval: tuple[float, float]
    level: float
    region: dict[str, Any]
    verdict: Verdict
    replicates: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record of SPEC §11 (NaN as the string ``"nan"``, as ``reports.record`` writes it)."""
        record = {
            "id": self.id,
            "source": self.source,
            "statement": self.statement,
            "estimate": _number(self.estimate),
            "interval": [_number(x) for x in self.interval],
            "level": self.level,
            "region": self.region,
            "verdict": self.verdict,
            "replicates": self.replicates,
        }
        return {**record, "note": self.note} if self.note else record

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"[{self.verdict}] {self.statement} {_fmt(self.estimate)} [{_fmt(lo)}, {_fmt(hi)}]"


def claim(
    id: str,
    statement: str,
    estimate: float,
    interval: Sequence[float],
    region: Mapping[str, Any],
    *,
    source: str = "ours",
    level: float = 0.95,
    replicates: int = 1,
    min_replicates: int = 1,
    note: str = "",
) -> Claim:
    """A ledger entry whose verdict follows from ``interval`` and ``region`` (``verdict``).

    ``min_replicates``: the independent training seeds the claim needs (a comparison of networks:
    ``MIN_COMPARISON_REPLICATES``); with fewer, the verdict is ``"inconclusive"`` and the note
    says why, whatever the interval.

    Example:
        >>> c = claim("rate_is_two", "Δ_k decays like k⁻² (α in [1.8, 2.2]).", 2.03, [1.9, 2.1],
        ...           {"between": [1.8, 2.2]}, source="main paper Theorem 1")
        >>> c.verdict
        'holds'
    """
    if not isinstance(id, str) or not id.isidentifier():
        raise ValueError(f"id={id!r} must be a short identifier such as 'rate_is_two'.")
    if not isinstance(statement, str) or not statement.strip():
        raise ValueError(f"statement={statement!r} must be a sentence.")
    level = check_fraction("level", level)
    replicates = check_int("replicates", replicates, low=1)
    min_replicates = check_int("min_replicates", min_replicates, low=1)
    lo, hi = _interval(interval)
    kind, bounds = _region(region)
    decided = verdict((lo, hi), region)
    if replicates < min_replicates:
        decided = "inconclusive"
        why = f"{replicates} replicate(s); the claim needs {min_replicates} independent training seeds"
        note = f"{note}; {why}" if note else why
    return Claim(
        id=id,
        source=source,
        statement=statement.strip(),
        estimate=float(estimate),
        interval=(lo, hi),
        level=level,
        region={kind: list(bounds) if kind == "between" else bounds[0]},
        verdict=decided,
        replicates=replicates,
        note=note,
    )


def replicate_interval(
    values: Any, *, level: float = 0.95, method: str = "t", n_boot: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of per-replicate ``values`` and its confidence interval over replicates.

    ``values`` is one number per independent replicate (training seed, or seed × order). NaN
    replicates are refused: a replicate that failed must be reported, not silently dropped.
    With one replicate the interval is (NaN, NaN): one seed cannot say how much seeds vary.

    ``method="t"`` (default): mean ± t_{n−1}·s/√n, the Student interval. Replicates are few
    (3–5 training seeds), and there a bootstrap over replicates is far too narrow — with 3 seeds
    the percentile bootstrap covers the mean about 70 % of the time at a nominal 95 % (a resample
    of 3 values sees at most 3 distinct points); the t interval has its nominal coverage for
    normal replicates and widens as it should when n is small. ``method="bootstrap"``:
    bias-corrected bootstrap percentiles (``theory.bootstrap_interval``), for many replicates of
    skewed quantities.

    Example:
        >>> mean, (lo, hi) = replicate_interval([1.9, 2.0, 2.1, 2.05, 1.95])
        >>> round(mean, 3), round(lo, 3), round(hi, 3)
        (2.0, 1.902, 2.098)
    """
    x = _replicates("values", values)
    level = check_fraction("level", level)
    if method not in ("t", "bootstrap"):
        raise ValueError(f"method={method!r} is not supported; choose one of 't', 'bootstrap'.")
    n_boot = check_int("n_boot", n_boot, low=1)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, (math.nan, math.nan)
    if method == "t":
        from scipy import stats

        half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
        return mean, (mean - half, mean + half)
    rng = np.random.default_rng(check_seed("seed", seed))
    boots = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return mean, bootstrap_interval(boots, mean, level)


def paired_difference(
    a: Any, b: Any, *, level: float = 0.95, method: str = "t", n_boot: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of b − a over paired replicates (the same seed under two conditions), with interval.

    ``a[i]`` and ``b[i]`` must come from the same replicate (training seed, data order,
    directions) under the two conditions; pairing removes the variation the two share. The
    interval is ``replicate_interval`` of the differences (Student t by default).

    Example:
        >>> diff, (lo, hi) = paired_difference([1.0, 2.0, 3.0], [1.5, 2.4, 3.6])
        >>> round(diff, 3), lo > 0
        (0.5, True)
    """
    x, y = _replicates("a", a), _replicates("b", b)
    if x.shape != y.shape:
        raise ValueError(
            f"a and b must hold one value per shared replicate; got {len(x)} and {len(y)}."
        )
    return replicate_interval(y - x, level=level, method=method, n_boot=n_boot, seed=seed)


def bound_ratio(
    values: Any, bound: Any, stderr: Any = None, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """The largest ratio measured / bound over k, with an interval from the measurement's errors.

    A bound holds where this lies below 1 (region ``{"below": 1}``). ``values`` is the measured
    curve (one number per k), ``bound`` the bound at the same k, ``stderr`` the standard error of
    each value (None for exact numbers: a zero-width interval). The interval's ends are the
    largest ratios of the lower and of the upper normal limits ``values ∓ z·stderr`` (z of a
    two-sided ``level``, per k), so it is conservative for a maximum over many k. Points where a
    value or the bound is not finite, or the bound is not positive, are left out.

    Example:
        >>> ratio, (lo, hi) = bound_ratio([1.0, 4.0], [2.0, 5.0], [0.1, 0.5])
        >>> round(ratio, 2), round(lo, 2), round(hi, 2)
        (0.8, 0.6, 1.0)
    """
    from scipy.stats import norm

    level = check_fraction("level", level)
    v = np.asarray(values, dtype=float).reshape(-1)
    b = np.asarray(bound, dtype=float).reshape(-1)
    s = np.zeros_like(v) if stderr is None else np.asarray(stderr, dtype=float).reshape(-1)
    s = np.nan_to_num(s)
    if not (v.shape == b.shape == s.shape):
        raise ValueError(
            f"values, bound and stderr must hold one number per k; got {v.shape}, {b.shape}, "
            f"{s.shape}."
        )
    ok = np.isfinite(v) & np.isfinite(b) & (b > 0)
    if not ok.any():
        return math.nan, (math.nan, math.nan)
    z = norm.ppf(0.5 + level / 2)
    v, b, s = v[ok], b[ok], s[ok]
    return float(np.max(v / b)), (float(np.max((v - z * s) / b)), float(np.max((v + z * s) / b)))


def bootstrap_statistic(
    statistic: Callable[..., float],
    *samples: Any,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """A number computed from one or more averaged curves, with a bootstrap interval over units.

    Each array of ``samples`` is (units, n): one row per independent unit (a Monte Carlo draw, a
    data order) whose column means are a curve over k — ``Curve.samples`` of a Monte Carlo
    estimate, say. ``statistic(*means)`` turns those means into the number a claim is about (the
    median over k of a ratio to a closed form, the ratio of two curves' levels). The estimate is
    the statistic of the means over all rows; the interval resamples the rows of each array
    independently (so the arrays must come from independent units) and is bias-corrected
    (``theory.bootstrap_interval``). Non-finite entries are left out of the column means, as
    ``delta.monte_carlo`` leaves non-finite draws out.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(2.0, 1.0, (400, 3)), rng.normal(1.0, 1.0, (400, 3))
        >>> ratio, (lo, hi) = bootstrap_statistic(lambda x, y: x.mean() / y.mean(), a, b)
        >>> lo < 2.0 < hi
        True
    """
    n_boot = check_int("n_boot", n_boot, low=1)
    level = check_fraction("level", level)
    rng = np.random.default_rng(check_seed("seed", seed))
    arrays = []
    for i, s in enumerate(samples):
        x = np.asarray(s, dtype=float)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(
                f"samples[{i}] has shape {x.shape}; expected (units, n) with 2 or more units "
                "(one row per draw or order)."
            )
        arrays.append(x)
    if not arrays:
        raise ValueError("bootstrap_statistic needs at least one (units, n) array of samples.")

    def means(rows: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for x, r in zip(arrays, rows):
            x = x[r]
            finite = np.isfinite(x)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(finite, x, 0.0).sum(0) / finite.sum(0))
        return out

    estimate = float(statistic(*means([np.arange(len(x)) for x in arrays])))
    boots = [
        float(statistic(*means([rng.integers(0, len(x), len(x)) for x in arrays])))
        for _ in range(n_boot)
    ]
    return estimate, bootstrap_interval(boots, estimate, level)


def verdict_counts(claims: Sequence[Claim]) -> dict[str, int]:
    """How many claims hold, fail and are inconclusive (every verdict present, zeros included)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for c in claims:
        counts[c.verdict] += 1
    return counts


def ledger_table(claims: Sequence[Claim]) -> str:
    """The ledger as a markdown table: verdict, statement, estimate [interval], source, replicates.

    Claims that fail come first, then inconclusive ones, then those that hold: what a reader must
    not miss is on top.
    """
    order = {"fails": 0, "inconclusive": 1, "holds": 2}
    rows = [
        "| verdict | claim | estimate [interval] | replicates | source |",
        "|---|---|---|---|---|",
    ]
    for c in sorted(claims, key=lambda c: order[c.verdict]):
        lo, hi = c.interval
        rows.append(
            f"| **{c.verdict}** | {c.statement}{f' ({c.note})' if c.note else ''} | "
            f"{_fmt(c.estimate)} [{_fmt(lo)}, {_fmt(hi)}] | {c.replicates} | {c.source} |"
        )
    return "\n".join(rows)


def conclude(
    output_dir: str | os.PathLike[str] | None,
    ledger: Sequence[Claim],
    *,
    headline: str,
    reading: str,
) -> None:
    """A notebook's last step: record its answer in results.json and show it below the notebook.

    ``headline`` (one sentence) and ``reading`` (markdown: what the ledger's numbers say, computed
    from them; it need not repeat the headline) go into results.json beside ``"claims"``, where a report's first screen shows them
    above the figures (:func:`landscape.reports.render_report`). In Jupyter the ledger and the
    reading appear as the cell's output; that output is marked (:data:`READING_OUTPUT`) so the
    rendered report, which already opens with both, does not show them twice.
    """
    from IPython.display import Markdown, display

    headline, reading = headline.strip(), reading.strip()
    record(output_dir, headline=headline, reading=reading, claims=list(ledger))
    display(
        Markdown(f"**{headline}**\n\n{ledger_table(ledger)}\n\n{reading}"),
        metadata={READING_OUTPUT: True},
    )


def _interval(interval: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval={interval!r} must be two numbers [lo, hi].") from None
    if lo > hi:
        raise ValueError(f"interval={interval!r} has lo > hi.")
    return lo, hi


def _region(region: Mapping[str, Any]) -> tuple[str, tuple[float, ...]]:
    if not isinstance(region, Mapping) or len(region) != 1:
        raise ValueError(
            f"region={region!r} must be one of {{'above': x}}, {{'below': x}}, {{'between': [a, b]}}."
        )
    (kind, value), = region.items()
    if kind in ("above", "below"):
        return kind, (float(value),)
    if kind == "between":
        a, b = (float(x) for x in value)
        if a > b:
            raise ValueError(f"region={region!r}: 'between' needs a <= b.")
        return kind, (a, b)
    raise ValueError(f"region={region!r}: the key must be 'above', 'below' or 'between'.")


def _replicates(name: str, values: Any) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold one number per replicate; got {values!r}.") from None
    if not len(x):
        raise ValueError(f"{name} is empty; expected one number per replicate.")
    if not np.isfinite(x).all():
        raise ValueError(
            f"{name} holds non-finite values at replicate(s) {np.flatnonzero(~np.isfinite(x)).tolist()}; "
            "a failed replicate must be reported, not averaged in or dropped."
        )
    return x


def _number(x: float) -> float | str:
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a" if math.isnan(x) else str(x)
    return f"{x:.3g}"

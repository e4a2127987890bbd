"""What a notebook concludes: its claims ledger, headline and reading, built from measured results.

A notebook measures (library calls) and draws; what its numbers *say* — the claims of SPEC §11 with
their verdicts, the headline sentence and the reading paragraph — is built here, one module per
notebook topic, each a function from the library's result dataclasses to a ``Reading``, tested on
synthetic inputs whose verdicts and sentences flip (tests/test_readings_*.py). The notebook's last
cell hands the reading to ``claims.conclude``.

Modules:

* ``theorem`` — 01_theorem: Theorem 1, Lemma 1, the closed forms and bounds against Monte Carlo,
  the rate α over data orders.
* ``sampling`` — 03_sampling: the σ and d sweeps over training seeds, the original code's bugs,
  the integrand on a 2-D grid (measured by ``replication.sweep`` and ``replication.grid_summary``).
* ``subspace`` — 04_hessian_subspace: eigen vs random subspaces vs the full space.
* ``pointwise`` — 05_pointwise: |L_k(w*) − L_{k−1}(w*)|, its rate and paper 002's bounds.
* ``sufficiency`` — 07_sufficiency: k*(ε) and the learning curve.

Defined here: ``Reading``, the one result type every module returns, ``RATE_TWO`` and ``listed``. Nothing here measures,
trains or draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..claims import Claim, verdict_counts

__all__ = ["RATE_TWO", "Reading", "listed"]

#: Theorem 1's rate: a claim "Δ_k decays like k⁻²" holds when α's interval lies in this region
#: (fixed before the numbers were seen; every reading tests α = 2 against it).
RATE_TWO = {"between": [1.8, 2.2]}


def listed(xs: Sequence[float], none: str = "no σ measured") -> str:
    """``"σ = 0.01, 0.1"``, or ``none`` for an empty list."""
    return "σ = " + ", ".join(f"{x:g}" for x in xs) if len(xs) else none


@dataclass(frozen=True, eq=False)
class Reading:
    """A notebook's conclusion: the ledger, one headline sentence, the reading and its numbers.

    Attributes:
        ledger: the claims (SPEC §11), each with its verdict (``claims.claim``).
        headline: one plain-text sentence, computed from the numbers (the report's first line).
        text: markdown, the reading of the ledger's numbers; every sentence that states a result
            is chosen by the numbers and can say the opposite.
        numbers: further named numbers the reading rests on, for ``reports.record`` (plain
            floats, lists and dicts).

    Hand it to ``claims.conclude(output_dir, r.ledger, headline=r.headline, reading=r.text)``.
    """

    ledger: tuple[Claim, ...]
    headline: str
    text: str
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ledger = tuple(self.ledger) if isinstance(self.ledger, Sequence) else None
        if ledger is None or not all(isinstance(c, Claim) for c in ledger):
            raise ValueError("ledger must be a sequence of claims.Claim (from claims.claim).")
        ids = [c.id for c in ledger]
        if len(set(ids)) < len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"ledger ids must be unique; repeated: {repeated}.")
        if not isinstance(self.headline, str) or not self.headline.strip():
            raise ValueError("headline must be a non-empty sentence.")
        if not isinstance(self.text, str):
            raise ValueError("text must be a markdown string.")
        object.__setattr__(self, "ledger", ledger)
        object.__setattr__(self, "numbers", dict(self.numbers))

    def __getitem__(self, id: str) -> Claim:
        """The claim with this id (KeyError naming the ids there are)."""
        for c in self.ledger:
            if c.id == id:
                return c
        raise KeyError(f"no claim {id!r} in this reading; it has {[c.id for c in self.ledger]}.")

    def __repr__(self) -> str:
        counts = verdict_counts(self.ledger)
        return f"Reading({len(self.ledger)} claims {counts}: {self.headline[:80]!r})"

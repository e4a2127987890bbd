"""Replicated comparisons of network variants: which settings change a measure, and by how much.

This package only re-exports; each concept lives in one module. ``variant``: the network
configurations (``Variant``, ``variants``) and what differs between pairs of them (``Change``,
``changes``). ``compare``: training every variant over independent seeds (``replicate``), means,
paired differences and rankings over seeds (``Replicates``, ``Comparison``, ``RankEntry``,
``conflicts``), ledger entries for a paper's claims (``Expectation``) and plain-text summaries
(``describe_ranking``, ``describe_claims``). ``measures``: measures of one trained network
defined inside the data (``level_at``, ``level``, ``profile_width``, ``basin_widths``,
``basin_record``, ``basin_slices``), the σ and d sweeps of Δ_k (``Sweep``, ``sweep``,
``sweep_options``, ``sweep_measure``) and the integrand grid's numbers (``grid_summary``), and
the main paper's claims about them (``BASIN_CLAIMS``, ``reshapes_convergence``). ``figures``:
``draw_values`` and ``draw_differences``, which only draw. Nothing is defined here.
"""

from .compare import (
    Comparison,
    Expectation,
    RankEntry,
    Replicates,
    conflicts,
    describe_claims,
    describe_ranking,
    replicate,
)
from .figures import draw_differences, draw_values
from .measures import (
    BASIN_CLAIMS,
    Sweep,
    Widths,
    basin_record,
    basin_slices,
    basin_widths,
    grid_summary,
    level,
    level_at,
    profile_width,
    reshapes_convergence,
    sweep,
    sweep_measure,
    sweep_options,
)
from .variant import Change, Variant, changes, variants

__all__ = [
    "Change",
    "Comparison",
    "Expectation",
    "RankEntry",
    "Replicates",
    "Sweep",
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
    "grid_summary",
    "level",
    "level_at",
    "profile_width",
    "replicate",
    "reshapes_convergence",
    "sweep",
    "sweep_measure",
    "sweep_options",
    "variants",
]

"""7. Do antithetic pairs (z, −z) lower the standard error of Δ_k at equal cost? (issue 2)

At equal numbers of loss evaluations B, ``delta.monte_carlo`` with and without
``antithetic=True``; the measure is the median over k of stderr(antithetic) / stderr(plain),
whose square is the fraction of evaluations antithetic pairs need for the same error. Under the
quadratic model d_k = a + cᵀz + ½zᵀMz, pairing cancels the odd term 2(a + ½zᵀMz)·cᵀz of d_k²,
which dominates the variance at small σ (where Δ_k ≈ a_k²); at large σ the even terms dominate
and the pair's two halves are positively correlated, so pairing can only cost. Full space,
digits MLP 2×32, at a small and a large σ; the regime is shown by the median of Δ_k / a_k².
No target: a measurement.
"""

from __future__ import annotations

import numpy as np
import torch

from landscape import delta, prefix

from ._common import sizes, trained
from ._timing import Row

SIGMAS = (0.001, 0.1)


def run(quick: bool) -> list[Row]:
    prob = trained().problem
    draws = 256 if quick else 1024
    gap_sq = prefix.differences(prob.per_sample_losses(prob.center).to(torch.float64))
    gap_sq = gap_sq.square().cpu().numpy()
    rows = []
    for sigma in SIGMAS:
        plain = delta.monte_carlo(prob, sigma, draws, progress=False)
        pairs = delta.monte_carlo(prob, sigma, draws, antithetic=True, progress=False)
        ratio = float(np.nanmedian(pairs.stderr / plain.stderr))
        verdict = "helps" if ratio < 0.9 else "no real gain" if ratio < 1.1 else "hurts"
        rows.append(
            Row(
                f"7 antithetic σ={sigma:g}",
                "stderr, antithetic pairs",
                float(np.nanmedian(pairs.stderr)),
                "stderr, independent draws",
                float(np.nanmedian(plain.stderr)),
                "measure",
                None,
                unit="",
                ratio_override=ratio,
                note=(
                    f"{sizes(prob)}, {draws} evaluations each; A/B = median over k of the "
                    f"per-k ratio: {verdict} (antithetic needs {ratio**2:.2g}× the evaluations "
                    f"for equal error); median Δ_k/a_k² = "
                    f"{np.nanmedian(plain.value / gap_sq):.3g}; the two means agree within "
                    f"2 stderr at {_agree(plain, pairs):.0%} of k"
                ),
            )
        )
    return rows


def _agree(a, b) -> float:
    both = np.sqrt(a.stderr**2 + b.stderr**2)
    return float(np.mean(np.abs(a.value - b.value) <= 2 * both))

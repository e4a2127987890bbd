"""4. Top-10 Hessian eigenpairs: Lanczos (SciPy ``eigsh``) against PyHessian's power iteration.

On a small trained network (digits, MLP 1×16, N = 1,210, float64) the dense Hessian's
eigendecomposition gives the exact 10 eigenvalues of largest magnitude (both methods are asked for
``which="LM"``: PyHessian's power iteration can find nothing else). A result is accurate when every
pair has relative residual ‖Hv − λv‖/|λ| ≤ 1e-3 *and* its eigenvalue matches the dense one to
1e-3 relative (a small residual alone could belong to a different eigenvalue). Each method's
tolerance is loosened as far as it stays accurate (the sweep goes from loose to tight and keeps
the first accurate one); then both are timed interleaved.
Target: Lanczos uses ≤ 1/3 of PyHessian's Hessian-vector products.

At N ≥ 25,000 (mnist1d, MLP 2×144, N = 28,234, K = 4,000; K = 1,000 with --quick; float32) there
is no dense reference: a Lanczos solve at tol 1e-6 is the reference, and accuracy is judged the
same way at 1e-3. Lanczos runs at tol 1e-4; PyHessian at the loosest of 1e-4, 1e-5, 1e-6 that is
accurate (or at 1e-6, noted, if none is). The two are timed interleaved (median of 3 rounds).
Target (SPEC §7): wall time ≤ 1/4 of PyHessian's.
"""

from __future__ import annotations

import numpy as np
import torch

from landscape import hessian

from ._common import sizes, trained
from ._timing import Row, interleaved

D = 10
ACCURACY = 1e-3
TOLERANCES = {
    "lanczos": (1e-1, 1e-2, 1e-3, 1e-4, 1e-6),
    "pyhessian": (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8),
}


def _loosest_accurate(prob, method: str, exact: np.ndarray, tolerances=None):
    tried = []
    for tol in tolerances or TOLERANCES[method]:
        result = hessian.top_eigenpairs(prob, D, method=method, tol=tol, which="LM")
        found, wanted = np.sort(result.values), np.sort(exact)  # as sets: ±λ ties may swap
        value_error = np.max(np.abs(found - wanted) / np.abs(wanted))
        worst = max(float(result.relative_residuals.max()), float(value_error))
        tried.append(f"{tol:g}→{worst:.0e}")
        if worst <= ACCURACY:
            return tol, result, tried
    return None, None, tried


def _large(quick: bool) -> list[Row]:
    """Wall time at N ≥ 25k, tol 1e-4, equal accuracy: the row SPEC §7 sets the ¼ target on."""
    prob = trained("mnist1d", 2, 144, k_max=1000 if quick else None).problem
    reference = hessian.top_eigenpairs(prob, D, tol=1e-6, which="LM")
    exact = reference.values
    tol_l, lan, sweep_l = _loosest_accurate(prob, "lanczos", exact, (1e-4,))
    tol_p, pyh, sweep_p = _loosest_accurate(prob, "pyhessian", exact, (1e-4, 1e-5, 1e-6))
    if pyh is None:  # none accurate: time the tightest tried, and say so
        tol_p = 1e-6
        pyh = hessian.top_eigenpairs(prob, D, method="pyhessian", tol=tol_p, which="LM")
    if lan is None:
        tol_l, lan = 1e-4, hessian.top_eigenpairs(prob, D, tol=1e-4, which="LM")
    t = interleaved(
        {
            "lanczos": lambda: hessian.top_eigenpairs(prob, D, tol=tol_l, which="LM"),
            "pyhessian": lambda: hessian.top_eigenpairs(
                prob, D, method="pyhessian", tol=tol_p, which="LM"
            ),
        },
        3,
        warmup=False,
    )
    ratio = t["lanczos"].median / t["pyhessian"].median
    note = (
        f"mnist1d MLP 2×144, {sizes(prob)}, float32; HVPs {lan.hvps} vs {pyh.hvps} "
        f"(+1 exact residual check vs +{D} residual HVPs); max rel. residual "
        f"{lan.relative_residuals.max():.1e} vs {pyh.relative_residuals.max():.1e}; "
        f"rounds {t['lanczos'].spread()} vs {t['pyhessian'].spread()}\n"
        f"sweep (tolerance→worst relative error vs Lanczos tol 1e-6): lanczos "
        f"{' '.join(sweep_l)}; pyhessian {' '.join(sweep_p)}"
    )
    return [
        Row(
            "4 top-10 eigen, N ≥ 25k",
            f"lanczos (tol={tol_l:g})",
            t["lanczos"].median,
            f"pyhessian (tol={tol_p:g})",
            t["pyhessian"].median,
            "A/B ≤ 1/4",
            ratio <= 1 / 4,
            note=note,
        )
    ]


def run(quick: bool) -> list[Row]:
    setup = trained(depth=1, width=16, dtype="float64", k_max=600 if quick else None)
    prob = setup.problem
    H = hessian.dense_hessian(prob)
    values = torch.linalg.eigvalsh((H + H.T) / 2).cpu().numpy()
    exact = values[np.argsort(-np.abs(values))][:D]
    found = {method: _loosest_accurate(prob, method, exact) for method in TOLERANCES}
    sweep = "; ".join(f"{m} tol→error {' '.join(found[m][2])}" for m in found)
    missing = [m for m, (tol, _, _) in found.items() if tol is None]
    if missing:
        return [
            Row(
                "4 top-10 eigenpairs",
                "lanczos HVPs",
                np.nan,
                "pyhessian HVPs",
                np.nan,
                "A/B ≤ 1/3",
                False,
                unit="HVPs",
                note=f"accuracy {ACCURACY:g} not reached by {missing}; {sweep}",
            ),
            *_large(quick),
        ]
    (tol_l, lan, _), (tol_p, pyh, _) = found["lanczos"], found["pyhessian"]
    t = interleaved(
        {
            "lanczos": lambda: hessian.top_eigenpairs(
                prob, D, method="lanczos", tol=tol_l, which="LM"
            ),
            "pyhessian": lambda: hessian.top_eigenpairs(
                prob, D, method="pyhessian", tol=tol_p, which="LM"
            ),
        },
        1 if quick else 3,
        warmup=False,
    )
    ratio = lan.hvps / pyh.hvps
    context = (
        f"{sizes(prob)}, float64; |λ| from {abs(exact[-1]):.3g} to {abs(exact[0]):.3g}; "
        f"max rel. residual {lan.relative_residuals.max():.1e} vs "
        f"{pyh.relative_residuals.max():.1e}"
    )
    return [
        Row(
            "4 top-10 eigenpairs",
            f"lanczos HVPs (tol={tol_l:g})",
            lan.hvps,
            f"pyhessian HVPs (tol={tol_p:g})",
            pyh.hvps,
            "A/B ≤ 1/3",
            ratio <= 1 / 3,
            unit="HVPs",
            note=context + f"\nsweep (tolerance→worst relative error): {sweep}",
        ),
        Row(
            "4 top-10 eigenpairs time",
            f"lanczos (tol={tol_l:g})",
            t["lanczos"].median,
            f"pyhessian (tol={tol_p:g})",
            t["pyhessian"].median,
            "—",
            None,
            note=f"wall time at equal accuracy, medians of {len(t['lanczos'].times)}",
        ),
        *_large(quick),
    ]

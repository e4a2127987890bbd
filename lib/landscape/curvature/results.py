"""The difference terms a_k, ‖c_k‖², Tr M_k, Tr M_k² as a frozen result, and Δ_k predicted from them.

``DifferenceTerms`` is what ``difference_terms`` returns: arrays aligned with k = 2..K, the route
that computed them, standard errors of the stochastic terms (zeros where exact), the maxima the
bounds need, and notes saying what was chosen and why. ``predict`` turns them into the closed
forms of Δ_k (``theory.complete_form`` and ``theory.paper_form``), ``predict_stderr`` into the
standard error of that prediction, ``components`` into the five terms of the complete form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .. import theory
from ..checks import check_choice, check_positive

Form = Literal["complete", "paper"]
FORMS: tuple[str, ...] = ("complete", "paper")


@dataclass(frozen=True, eq=False)
class DifferenceTerms:
    """The second-order terms of d_k = L_k − L_{k−1} at w*, for k = 2..K.

    Attributes:
        k: sample counts 2..K.
        gap: a_k = L_k(w*) − L_{k−1}(w*).
        grad_sq: ‖c_k‖², the squared norm of the projected gradient difference.
        trace: Tr M_k, the trace of the projected Hessian difference.
        trace_sq: Tr M_k² = ‖M_k‖_F².
        method: the route that computed them ("exact", "subspace", "hutchinson").
        dim: d, the dimension of the space (N in the full space).
        trace_stderr, trace_sq_stderr: standard errors of stochastic terms (zeros when exact).
        probes: Hutchinson probes used (0 for exact routes).
        max_loss, max_grad_norm, max_hessian_norm: M_ℓ = max l_i, M_g = max ‖Pᵀg_i‖ and
            M_H = max ‖PᵀH_iP‖₂ over the samples (None where not computed: M_H in large full
            spaces — use ``hessian.per_sample_spectral_norms``).
        notes: what was chosen and why (auto choices, fallbacks).
    """

    k: np.ndarray
    gap: np.ndarray
    grad_sq: np.ndarray
    trace: np.ndarray
    trace_sq: np.ndarray
    method: str
    dim: int
    trace_stderr: np.ndarray
    trace_sq_stderr: np.ndarray
    probes: int = 0
    max_loss: float | None = None
    max_grad_norm: float | None = None
    max_hessian_norm: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def components(self, sigma: float) -> dict[str, np.ndarray]:
        """The five terms whose sum is the complete closed form at ``sigma``.

        (a + σ²/2·Tr M)² + σ²‖c‖² + σ⁴/2·Tr M² expands into a², a·σ²·Tr M (the only term that can
        be negative), σ²‖c‖², σ⁴/4·Tr²M and σ⁴/2·Tr M²; the paper keeps only the last two.
        """
        s2 = check_positive("sigma", sigma) ** 2
        return {
            "gap": self.gap**2,
            "gap_x_trace": self.gap * s2 * self.trace,
            "grad": s2 * self.grad_sq,
            "trace_squared": s2**2 / 4 * self.trace**2,
            "trace_of_square": s2**2 / 2 * self.trace_sq,
        }

    def predict(self, sigma: float, form: Form = "complete") -> np.ndarray:
        """Δ_k from the quadratic model d ≈ a + cᵀz + ½zᵀMz, z ~ N(0, σ²I_d).

        ``"complete"``: E d² = (a_k + σ²/2·Tr M_k)² + σ²‖c_k‖² + σ⁴/2·Tr M_k², exact for a
        quadratic loss. ``"paper"``: σ⁴/4·(Tr²M_k + 2 Tr M_k²), the main paper's §4.2 form, which
        drops a_k and c_k (they are not zero at a fixed w*). From the stochastic route
        (``method="hutchinson"``) the prediction is an estimate: its standard error is
        ``predict_stderr(sigma, form)``.
        """
        check_choice("form", form, FORMS)
        if form == "paper":
            return theory.paper_form(self.trace, self.trace_sq, sigma)
        return theory.complete_form(self.gap, self.grad_sq, self.trace, self.trace_sq, sigma)

    def predict_stderr(self, sigma: float, form: Form = "complete") -> np.ndarray:
        """Standard error of ``predict`` from the stochastic terms (zeros for exact routes).

        First-order propagation: ∂/∂Tr M = σ²(a + σ²/2 Tr M) (complete) or σ⁴/2 Tr M (paper),
        ∂/∂Tr M² = σ⁴/2; the two estimates are treated as independent (they are exactly that
        where Tr M_k is exact from BackPACK, its standard error then 0).
        """
        check_choice("form", form, FORMS)
        s2 = check_positive("sigma", sigma) ** 2
        if form == "complete":
            d_trace = s2 * (self.gap + s2 / 2 * self.trace)
        else:
            d_trace = s2**2 / 2 * self.trace
        d_trace_sq = s2**2 / 2
        return np.sqrt(
            (d_trace * self.trace_stderr) ** 2 + (d_trace_sq * self.trace_sq_stderr) ** 2
        )

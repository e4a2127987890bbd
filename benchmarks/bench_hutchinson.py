"""8. Stochastic Tr M_k² for every k: deflated probe pairs against per-sample-HVP Hutchinson.

Contenders (all with Rademacher probes shared by every k, Tr M_k exact from BackPACK in each):

* **HVP Hutchinson** (the library's route before this benchmark, kept here as the baseline):
  m per-sample HVPs U_i = H_i V (n, m, N), running sums, Tr M_k² ≈ mean_p ‖M_k v_p‖².
* **probe pairs**: ``difference_terms(method="hutchinson", deflate=0)`` — projected Hessians VᵀH_iV
  (``projected_derivatives``), U-statistic over probe pairs, jackknife standard error.
* **deflated pairs** (the default): the same with W = [Q, (I − QQᵀ)V], Q the top-s Hessian
  eigenvectors, ‖QᵀM_kQ‖_F² exact (``deflate=s``).

On digits (MLP 2×32, N = 3,466; K = 300, 40 with --quick) the exact terms are the ground truth:
relative error, the median reported relative standard error, and the coverage of the reported
standard error (fraction of k with |estimate − exact| ≤ 1.96·SE; nominal 0.95). On mnist1d (MLP
2×128, N ≈ 23k; K = 1,000, 100 with --quick) there is no ground truth: time, reported standard
error and peak memory. "At equal time" scales a standard error by √(time / time of the baseline),
i.e. compares SE²·time, the work-normalised variance (SE² ∝ 1/m and time ∝ m for both routes).
Targets: the default is faster and has the smaller standard error at equal time (A/B < 1); its
standard error covers at 0.9–0.99 (judged at K = 300 only: with --quick the 39 k are too few).
"""

from __future__ import annotations

import numpy as np
import torch

from landscape import curvature
from landscape.curvature import DifferenceTerms, per_sample_grads_and_hvps
from landscape.prefix import RunningDifferences
from landscape.problem import Problem
from landscape.routes import hvp_bytes

from ._common import sizes, trained
from ._timing import Row, interleaved, peak_memory

M = 64  # probes of the baseline and of the default


def hvp_hutchinson(prob: Problem, probes: int, seed: int = 0) -> DifferenceTerms:
    """The baseline: Tr M_k² = mean_p ‖M_k v_p‖² from per-sample HVPs (n, m, N) in chunks."""
    V = curvature.rademacher(prob, probes, seed)
    traces, _ = curvature.per_sample_hessian_traces(prob, backend="backpack")
    prefix = RunningDifferences()
    for rows, X, y in prob.batches(hvp_bytes(prob, probes)[0]):
        losses, grads, U = per_sample_grads_and_hvps(prob, X, y, V)
        diffs, k = prefix.differences(loss=losses, grad=grads, hv=U, trace=traces[rows])
        sq = diffs["hv"].square().sum(2)  # ‖M_k v_p‖²
        prefix.keep(
            k,
            gap=diffs["loss"],
            grad_sq=diffs["grad"].square().sum(1),
            trace=diffs["trace"],
            trace_sq=sq.mean(1),
            trace_sq_stderr=sq.std(1) / probes**0.5,
        )
    zeros = np.zeros(prob.num_samples - 1)
    return DifferenceTerms(
        k=np.arange(2, prob.num_samples + 1),
        gap=prefix.result("gap"),
        grad_sq=prefix.result("grad_sq"),
        trace=prefix.result("trace"),
        trace_sq=prefix.result("trace_sq"),
        method="hutchinson-hvp",
        dim=prob.num_params,
        trace_stderr=zeros,
        trace_sq_stderr=prefix.result("trace_sq_stderr"),
        probes=probes,
    )


def _contenders(prob: Problem) -> dict:
    def pairs(deflate: int, probes: int):
        return lambda: curvature.difference_terms(
            prob, method="hutchinson", probes=probes, deflate=deflate, progress=False
        )

    return {
        f"HVP Hutchinson m={M}": lambda: hvp_hutchinson(prob, M),
        f"probe pairs m={M}": pairs(0, M),
        f"probe pairs m={4 * M}": pairs(0, 4 * M),
        f"deflated pairs s={M}, m={M}": pairs(M, M),
    }


def _measure(prob: Problem, repeats: int) -> dict[str, dict]:
    contenders = _contenders(prob)
    times = interleaved(contenders, repeats)
    out = {}
    for name, fn in contenders.items():
        terms, peak, how = peak_memory(fn, prob.device)
        out[name] = {"terms": terms, "time": times[name].median, "peak": peak, "how": how}
    return out


def _rel_se(terms: DifferenceTerms) -> float:
    return float(np.median(terms.trace_sq_stderr / terms.trace_sq))


def _rows(label: str, prob: Problem, results: dict, exact: DifferenceTerms | None) -> list[Row]:
    base_name, new_name = f"HVP Hutchinson m={M}", f"deflated pairs s={M}, m={M}"
    base, new = results[base_name], results[new_name]
    lines = []
    for name, r in results.items():
        t = r["terms"]
        line = (
            f"{name}: {r['time']:.2f}s, peak {r['peak'] / 2**20:.0f} MiB, median rel. SE "
            f"{_rel_se(t):.4f}, at the baseline's time "
            f"{_rel_se(t) * (r['time'] / base['time']) ** 0.5:.4f}"
        )
        if exact is not None:
            rel = t.trace_sq / exact.trace_sq - 1
            z = np.abs(t.trace_sq - exact.trace_sq) / t.trace_sq_stderr
            line += f", rms rel. error {np.sqrt(np.mean(rel**2)):.4f}, coverage {np.mean(z <= 1.96):.3f}"
        lines.append(line)
    note = f"{label}: {sizes(prob)}, {new['how']}\n" + "\n".join(lines)
    se_new, se_base = _rel_se(new["terms"]), _rel_se(base["terms"])
    equal_time = se_new * (new["time"] / base["time"]) ** 0.5
    bench = f"8 Tr M_k² ({label})"
    rows = [
        Row(
            bench,
            new_name,
            new["time"],
            base_name,
            base["time"],
            "A/B < 1",
            new["time"] < base["time"],
            note=note,
        ),
        Row(
            bench,
            "deflated: rel. SE at equal time",
            equal_time,
            "HVP Hutchinson: rel. SE",
            se_base,
            "A/B < 1",
            equal_time < se_base,
            unit="",
        ),
        Row(
            bench,
            "deflated: peak memory",
            new["peak"] / 2**20,
            "HVP: peak memory",
            base["peak"] / 2**20,
            "-",
            None,
            unit="MiB",
        ),
    ]
    if exact is not None:
        z = np.abs(new["terms"].trace_sq - exact.trace_sq) / new["terms"].trace_sq_stderr
        cover = float(np.mean(z <= 1.96))
        rows.append(
            Row(
                bench,
                "deflated: coverage of ±1.96 SE",
                cover,
                "nominal",
                0.95,
                "0.9–0.99",
                (0.9 <= cover <= 0.99) if prob.num_samples >= 300 else None,
                unit="",
            )
        )
    return rows


def run(quick: bool) -> list[Row]:
    repeats = 1 if quick else 3
    digits = trained(k_max=40 if quick else 300).problem
    exact = curvature.difference_terms(digits, method="exact", progress=False)
    rows = _rows("digits", digits, _measure(digits, repeats), exact)
    mnist1d = trained("mnist1d", 2, 128, k_max=100 if quick else 1000).problem
    torch.manual_seed(0)
    rows += _rows("mnist1d", mnist1d, _measure(mnist1d, repeats), None)
    return rows

"""The paper-plan estimate counts what the notebooks do (benchmarks/bench_paper_plan.py).

A two-run plan, counted by hand: 02_landscapes trains two networks and scans around them;
07_sufficiency trains four, two of which the first run (or its own stage) already trained with the
same checkpoint key, so they come from the cache. Nothing is timed here.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.bench_paper_plan import count_plan

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _totals(stages) -> dict[tuple[str, str], tuple[float, float]]:
    out: dict[tuple[str, str], tuple[float, float]] = {}
    for s in stages:
        low, high = out.get((s.label, s.unit), (0.0, 0.0))
        out[s.label, s.unit] = (low + s.count[0], high + s.count[1])
    return out


def test_a_tiny_plan_counts_as_by_hand(tmp_path):
    plan = tmp_path / "tiny.yaml"
    plan.write_text(
        f"""name: tiny
defaults: {{lr: 0.0003, seeds: [0, 1]}}
runs:
  - name: landscapes
    notebook: {NOTEBOOKS / "02_landscapes.ipynb"}
    parameters:
      dataset: mnist
      variants: [{{model: mlp, depth: 1, width: 8}}]
      epochs: 2
      k_max: 100
      points: 5
      width_directions: 2
      profile_points: 5
  - name: sufficiency
    notebook: {NOTEBOOKS / "07_sufficiency.ipynb"}
    parameters:
      dataset: mnist
      model_cfg: {{depth: 1, width: 8}}
      epochs: 2
      k_max: 100
      draws: 10
      learning_ks: [100, 60000]
      learning_seeds: [1]
"""
    )
    runs = count_plan(plan)
    per_epoch = math.ceil(60_000 / 64)  # 938 mini-batches of MNIST's training split
    evaluations = 2 * 10_000 + 1_024  # the test split after each of 2 epochs, the divergence check

    assert _totals(runs["landscapes"]) == {
        ("train 2 networks (0 from the cache)", "step"): (2 * 2 * per_epoch,) * 2,
        ("  test split after each epoch", "forward"): (2 * evaluations,) * 2,
        ("basin widths: 2 directions × 5 points × seeds", "forward"): (2 * 2 * 5 * 100,) * 2,
        ("top-2 eigenpairs, first seed (21–63 HVPs assumed)", "hvp"): (21 * 100, 63 * 100),
        ("two 5² slices (first seed)", "forward"): (2 * 25 * 100,) * 2,
    }
    # seeds 0 and 1 on orders 0 and 1: seed 0 on order 0 is the first run's; the learning curve
    # trains seed 1 on order 0 on k = 100 (100 epochs of 2 steps: at least 200 steps) and on all
    # 60,000 samples (the first run's seed 1)
    assert _totals(runs["sufficiency"]) == {
        ("train 4 networks (2 from the cache)", "step"): (2 * per_epoch + 200,) * 2,
        ("  test split after each epoch", "forward"): (evaluations + 100 * 10_000 + 100,) * 2,
        ("Monte Carlo: 10 draws × 5 orders × seeds", "forward"): (2 * 10 * 100,) * 2,
        ("losses at w*", "forward"): (100,) * 2,
    }

"""landscape: how much training data is enough before a network's loss landscape stops changing?

Modules: ``data`` (data sets), ``models`` (MLP/CNN builders), ``train`` (training),
``checkpoints`` (its cache of trained networks), ``experiment`` (notebook set-up, learning
curves), ``problem`` (network + ordered samples + centre), ``strategy`` (loop/vmap autotuning),
``directions`` (subspaces), ``prefix`` (prefix sums over k), ``delta`` (Monte Carlo Δ_k),
``routes`` and ``chain`` (per-sample derivatives, proven per network), ``curvature`` (exact
difference terms), ``hessian`` (eigenpairs, spectra, per-sample Hessians), ``theory`` (closed
forms, bounds, rate fits), ``claims`` (the ledger), ``readings`` (what each notebook concludes),
``replication`` (comparisons over seeds, the measures behind them), ``original`` (the papers'
original bugs, reproduced), ``surface`` (landscape grids), ``sufficiency`` (k*(ε)), ``plots`` and
``reports`` (figures, plans and HTML reports), ``checks``, ``files``, ``seeding``, ``progress``
(shared helpers)."""

import os

__version__ = "0.1.0"

# Ask torch's CPU allocator for 2 MiB pages for tensors of 2 MiB or more (its own documented knob,
# off by default because it rounds such tensors up to whole 2 MiB pages). Torch reads it once, at
# its first CPU allocation, so it is set here, before any of ours; a value already in the
# environment (e.g. THP_MEM_ALLOC_ENABLE=0) is kept. The curvature stages' (s, N) blocks of tens
# of MiB are mapped afresh on each call and faulted in page by page otherwise: 184,000 faults and
# 7 % of the stochastic full-space terms' time at the papers' MLP, K = 2,000 (counted with getrusage,
# 2026-12-02; the time is benchmarks/bench_paper_scale.py's stage).
# Freed memory below 32 MiB is kept for reuse by ``problem.keep_freed_memory``.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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

__version__ = "0.1.0"

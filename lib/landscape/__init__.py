"""landscape: how much training data is enough before a network's loss landscape stops changing?

Modules: ``data`` (data sets), ``models`` (MLP/CNN builders), ``train`` (training with a cache),
``problem`` (network + ordered samples + centre), ``directions`` (subspaces), ``delta`` (Monte Carlo
Δ_k), ``curvature`` (exact difference terms), ``hessian`` (eigenpairs, spectra), ``theory``
(closed forms, bounds, rate fits), ``surface`` (landscape grids), ``sufficiency`` (k*(ε)),
``plots`` and ``reports`` (figures, plans and HTML reports).
"""

__version__ = "0.1.0"

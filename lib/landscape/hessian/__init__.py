"""The Hessian of L_K at w*: exact products, top eigenpairs, spectral density, per-sample norms.

Everything here concerns H = ∇²L_K(w*), the Hessian of the mean loss over all K samples of a
``Problem`` at its centre, and the per-sample Hessians H_i = ∇²l_i(w*), by concept:

* ``operator`` — exact Hessian-vector products ``hvp`` and ``HessianOperator``, the one operator
  (a curvlinops ``PyTorchLinearOperator``; ``.to_scipy()`` for SciPy) that counts its products;
  ``dense_hessian`` for small N.
* ``eigen`` — ``top_eigenpairs`` by thick-restart Lanczos (residuals from its recurrence, checked
  by one exact product), PyHessian, or densely (residuals measured exactly);
  ``pyhessian_adapter`` quarantines PyHessian.
* ``density`` — ``spectral_density`` by stochastic Lanczos quadrature (curvlinops), with a
  pointwise standard error over probes.
* ``per_sample`` — ``per_sample_hessians`` and ``per_sample_spectral_norms`` (M_H = max_i ‖H_i‖₂),
  from per-sample HVPs proven on the network first (``routes``).

Nothing here touches the difference terms a_k, c_k, M_k (``curvature``) or Monte Carlo
(``delta``). The caller's network is never modified: products are functional in the flat parameter
vector, and PyHessian, which needs a module with trainable parameters, gets a private deep copy.
"""

from ..routes import per_sample_hvps_backward
from .density import SpectralDensity, spectral_density
from .eigen import EigenMethod, Eigenpairs, Which, top_eigenpairs
from .operator import HessianOperator, dense_hessian, hessian_operator, hvp
from .per_sample import NormMethod, SpectralNorms, per_sample_hessians, per_sample_spectral_norms

__all__ = [
    "EigenMethod",
    "Eigenpairs",
    "HessianOperator",
    "NormMethod",
    "SpectralDensity",
    "SpectralNorms",
    "Which",
    "dense_hessian",
    "hessian_operator",
    "hvp",
    "per_sample_hessians",
    "per_sample_hvps_backward",
    "per_sample_spectral_norms",
    "spectral_density",
    "top_eigenpairs",
]

"""Laplace-GGN log marginal likelihoods with one prior precision per layer and path (paper 000,
section 4, eq. 9; paper 001, sections 3.2-3.3, eqs. 7 and 15).

===============  ===============================================================================
module           contents
===============  ===============================================================================
``priors``       prior groups per layer and path (:func:`prior_groups`, :data:`ROOT_GROUP`), the
                 relaxed layer of every tagged parameter (:func:`layer_paths`), precision parsing
``base``         :class:`Laplace`: the interface every structure shares and the
                 ``Laplace(model, likelihood, structure, **options)`` factory
``full``         :class:`FullLaplace`: dense GGN, Cholesky log-determinant
``diag``         :class:`DiagLaplace`: the GGN's diagonal
``kron``         :class:`KronLaplace`: KFAC blocks, log-determinant from the factors' eigenvalues
``tuning``       :func:`optimize_prior_precision`: post-hoc prior precisions (Adam or a grid on
                 the marginal likelihood, or a grid on the validation NLL)
``predictive``   the posterior predictive's pieces (probit, Monte-Carlo link) and which weights
                 the posterior covers (:func:`covered_parameters`); the methods
                 ``functional_variance``, ``predictive``, ``sample``, ``state_dict`` and
                 ``load_state_dict`` are on :class:`Laplace`
``calibration``  NLL, expected calibration error, Brier score and reliability bins of predicted
                 probabilities
===============  ===============================================================================
"""

from ella.laplace import base, calibration, diag, full, kron, predictive, priors, tuning
from ella.laplace.base import *  # noqa: F403
from ella.laplace.calibration import *  # noqa: F403
from ella.laplace.diag import *  # noqa: F403
from ella.laplace.full import *  # noqa: F403
from ella.laplace.kron import *  # noqa: F403
from ella.laplace.predictive import *  # noqa: F403
from ella.laplace.priors import *  # noqa: F403
from ella.laplace.tuning import *  # noqa: F403

__all__ = [
    *priors.__all__,
    *base.__all__,
    *full.__all__,
    *diag.__all__,
    *kron.__all__,
    *tuning.__all__,
    *predictive.__all__,
    *calibration.__all__,
]

"""Laplace-GGN log marginal likelihoods with one prior precision per layer and path (paper 000,
section 4, eq. 9; paper 001, sections 3.2-3.3, eqs. 7 and 15).

============  ==================================================================================
module        contents
============  ==================================================================================
``priors``    prior groups per layer and path (:func:`prior_groups`, :data:`ROOT_GROUP`), the
              relaxed layer of every tagged parameter (:func:`layer_paths`), precision parsing
``base``      :class:`Laplace`: the interface every structure shares and the
              ``Laplace(model, likelihood, structure, **options)`` factory
``full``      :class:`FullLaplace`: dense GGN, Cholesky log-determinant
``diag``      :class:`DiagLaplace`: the GGN's diagonal
``kron``      :class:`KronLaplace`: KFAC blocks, log-determinant from the factors' eigenvalues
``tuning``    :func:`optimize_prior_precision`: post-hoc prior precisions (Adam or a grid)
============  ==================================================================================
"""

from ella.laplace.base import Laplace
from ella.laplace.diag import DiagLaplace
from ella.laplace.full import FullLaplace
from ella.laplace.kron import KronLaplace
from ella.laplace.priors import (
    ROOT_GROUP,
    Likelihood,
    PriorPrecision,
    Structure,
    layer_paths,
    precision_vector,
    prior_groups,
)
from ella.laplace.tuning import TunedPrior, TuningMethod, optimize_prior_precision

__all__ = [
    "Likelihood",
    "Structure",
    "PriorPrecision",
    "ROOT_GROUP",
    "prior_groups",
    "layer_paths",
    "precision_vector",
    "Laplace",
    "FullLaplace",
    "DiagLaplace",
    "KronLaplace",
    "TuningMethod",
    "TunedPrior",
    "optimize_prior_precision",
]

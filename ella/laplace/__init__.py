"""Laplace-GGN log marginal likelihoods with one prior precision per layer and path (paper 000,
section 4, eq. 9; paper 001, sections 3.2-3.3, eqs. 7 and 15)."""

from ella.laplace.core import (
    ROOT_GROUP,
    Laplace,
    Likelihood,
    PriorPrecision,
    Structure,
    prior_groups,
)

__all__ = ["Likelihood", "Structure", "PriorPrecision", "ROOT_GROUP", "prior_groups", "Laplace"]

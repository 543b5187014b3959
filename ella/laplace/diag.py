"""The diagonal-GGN Laplace approximation (paper 000, section 4, eq. 9; paper 001, eq. 7).

``log det(H / T + diag(delta)) ~= sum_p log(H_pp / T + delta_p)`` with the exact GGN diagonal,
summed from the squared per-sample GGN rows without forming H.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ella.laplace.ggn import _ExactGGNLaplace
from ella.laplace.priors import PriorPrecision

__all__ = ["DiagLaplace"]


class DiagLaplace(_ExactGGNLaplace):
    """The Laplace approximation with the GGN's diagonal (``Laplace(..., "diag")``).

    Args:
        model, likelihood, sigma, temperature, per_tensor: as for :class:`~ella.laplace.Laplace`.

    Attributes (after :meth:`fit`, besides those of :class:`~ella.laplace.Laplace`):
        curvature: (P,) diagonal of the GGN of the untempered negative log-likelihood.
    """

    structure = "diag"

    def _reduce_rows(self, rows: Tensor) -> Tensor:
        return rows.pow(2).sum(0)

    def _log_det(self, vector: Tensor) -> Tensor:
        return torch.log(self.curvature / self.temperature + vector[self._param_index]).sum()

    def _precision_diagonal(self, vector: Tensor) -> Tensor:
        """(P,) ``H_pp / T + delta_p``."""
        return self.curvature.detach() / self.temperature + vector[self._param_index]

    def _functional_covariance(self, jac: Tensor, vector: Tensor) -> Tensor:
        return (jac / self._precision_diagonal(vector)) @ jac.mT

    def _sample_offsets(self, n: int, vector: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._normal((n, self.n_params), generator) / self._precision_diagonal(vector).sqrt()

    def group_eigenvalues(self) -> dict[str, Tensor]:
        """The GGN's diagonal entries of every group."""
        self._require_fit()
        return {
            g: self.curvature[self._group_index(g)].clamp_min(0) / self.temperature
            for g in self.groups
        }

    def preconditioner(self, prior_precision: PriorPrecision) -> Any:
        """(P,) the diagonal ``1 / (H_pp + T delta_p)`` of ``K^-1 / T``."""
        deltas = self.precisions(prior_precision)
        T = self.temperature
        return 1.0 / (self.curvature.detach() + T * self._per_parameter(deltas).detach())

    def _pair_rows(self, rows: Tensor, weights: Tensor) -> Tensor:
        return (rows.pow(2).sum(0) * weights).sum()

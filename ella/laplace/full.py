"""The full-GGN Laplace approximation (paper 000, section 4, eq. 9; paper 001, eqs. 7 and 17).

``log det(H / T + diag(delta))`` by a Cholesky factorisation of the dense (P, P) GGN plus the
diagonal of precisions; for small models, and as the reference of the other structures.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ella.laplace.ggn import _ExactGGNLaplace
from ella.laplace.priors import PriorPrecision

__all__ = ["FullLaplace"]


class FullLaplace(_ExactGGNLaplace):
    """The Laplace approximation with the dense GGN (``Laplace(..., "full")``).

    Args:
        model, likelihood, sigma, temperature, per_tensor: as for :class:`~ella.laplace.Laplace`.

    Attributes (after :meth:`fit`, besides those of :class:`~ella.laplace.Laplace`):
        curvature: (P, P) GGN of the untempered negative log-likelihood.
    """

    structure = "full"

    def _reduce_rows(self, rows: Tensor) -> Tensor:
        return _gram(rows)

    def _log_det(self, vector: Tensor) -> Tensor:
        """Cholesky of ``H / T + diag(delta)``: ``2 sum log diag(L)``."""
        H = self.curvature / self.temperature + torch.diag(vector[self._param_index])
        chol = _checked_cholesky(H, vector)
        return 2.0 * chol.diagonal().log().sum()

    def _cholesky(self, vector: Tensor) -> Tensor:
        """L (P, P), lower, with ``L L^T = H / T + diag(delta)``; the last one is kept for
        precisions without a graph (a predictive over many test batches factors once)."""
        key = None if vector.requires_grad else tuple(vector.tolist())
        cached = getattr(self, "_cholesky_cache", None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        H = self.curvature.detach() / self.temperature + torch.diag(vector[self._param_index])
        chol = _checked_cholesky(H, vector)
        self._cholesky_cache = (key, chol) if key is not None else None
        return chol

    def _functional_covariance(self, jac: Tensor, vector: Tensor) -> Tensor:
        """``Z^T Z`` per example with ``Z = L^-1 J^T``: ``J (L L^T)^-1 J^T``."""
        n, c, p = jac.shape
        chol = self._cholesky(vector)
        z = torch.linalg.solve_triangular(chol, jac.reshape(n * c, p).T, upper=False)
        z = z.T.reshape(n, c, p)
        return z @ z.mT

    def _sample_offsets(self, n: int, vector: Tensor, generator: torch.Generator | None) -> Tensor:
        """``L^-T eps``: covariance ``L^-T L^-1 = (L L^T)^-1``."""
        chol = self._cholesky(vector)
        eps = self._normal((self.n_params, n), generator)
        return torch.linalg.solve_triangular(chol.mT, eps, upper=True).T

    def group_eigenvalues(self) -> dict[str, Tensor]:
        """Eigenvalues of the (P_g, P_g) sub-block of the GGN on every group's parameters: the
        block-diagonal approximation that ignores the coupling between groups (exact for a
        single group)."""
        self._require_fit()
        out = {}
        for g in self.groups:
            idx = self._group_index(g)
            block = self.curvature[idx][:, idx]
            lam = torch.linalg.eigvalsh(0.5 * (block + block.T))
            out[g] = lam.clamp_min(0) / self.temperature
        return out

    def preconditioner(self, prior_precision: PriorPrecision) -> Any:
        """(P, P) ``K^-1 / T`` with ``K = H / T + diag(delta)``."""
        deltas = self.precisions(prior_precision)
        T = self.temperature
        K = self.curvature.detach() / T + torch.diag(self._per_parameter(deltas).detach())
        return torch.cholesky_inverse(torch.linalg.cholesky(K)) / T

    def _pair_rows(self, rows: Tensor, weights: Tensor) -> Tensor:
        return ((rows @ weights) * rows).sum()


def _gram(rows: Tensor, block: int = 512) -> Tensor:
    """``rows^T rows`` (P, P) for rows (R, P), from its upper block triangle.

    The product is symmetric, so only the blocks ``rows[:, i]^T rows[:, i:]`` of ``block``
    columns are multiplied (about half the flops of one ``rows.T @ rows`` for P >> block) and
    the lower triangle is their transpose. Differentiable; no in-place writes.
    """
    P = rows.shape[1]
    if P <= 2 * block:
        return rows.T @ rows
    starts = list(range(0, P, block))
    uppers = [rows[:, i : i + block].T @ rows[:, i:] for i in starts]  # (b_i, P - i)
    lines = []
    for k, i in enumerate(starts):
        width = uppers[k].shape[0]
        left = [uppers[j][:, i - starts[j] : i - starts[j] + width].T for j in range(k)]
        lines.append(torch.cat([*left, uppers[k]], dim=1))
    return torch.cat(lines, dim=0)


def _checked_cholesky(H: Tensor, vector: Tensor) -> Tensor:
    """The Cholesky factor of the posterior precision ``H`` (P, P) at the per-group prior
    precisions ``vector``.

    Raises:
        ValueError: naming ``prior_precision`` when ``H`` is not numerically positive
            definite (a prior precision too small for a curvature with zero directions, e.g.
            inputs that are all zero, in ``H``'s dtype).
    """
    chol, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError(
            f"the posterior precision H / T + diag(`prior_precision`) ({tuple(H.shape)}, "
            f"{H.dtype}) is not numerically positive definite (leading minor {int(info)}) at "
            f"prior precisions in [{float(vector.min()):.3g}, {float(vector.max()):.3g}]: the "
            f"curvature has (near-)zero directions; use a larger `prior_precision` or float64"
        )
    return chol

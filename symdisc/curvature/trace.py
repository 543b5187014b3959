"""Stochastic trace estimators: Hutchinson and Hutch++.

Shared infrastructure (Hutchinson, 1989; Meyer et al., 2021), not an equation of the papers.

Both take a symmetric operator ``A`` (P, P) with ``A @ V`` for blocks V (P, k), so all probes go
through one block product (vmapped by the curvature operators).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from symdisc.curvature._linop import SymmetricOperator, check_finite_product, check_square
from symdisc.curvature._random import Distribution, SeedLike, as_generator, random_probes
from symdisc.runtime.checks import check_choice, check_int

__all__ = ["TraceEstimate", "hutchinson", "hutchpp"]


@dataclass(frozen=True, repr=False)
class TraceEstimate:
    """A trace estimate with its standard error and cost.

    Attributes:
        value: the estimate of tr(A) (float64 scalar tensor).
        std_error: standard error of the random part (sample standard deviation / sqrt(probes));
            NaN when a single probe leaves no spread to measure.
        n_matvecs: products with A spent.
    """

    value: Tensor
    std_error: Tensor
    n_matvecs: int

    def __repr__(self) -> str:
        return (
            f"TraceEstimate(value={float(self.value):.6g}, std_error={float(self.std_error):.3g}, "
            f"n_matvecs={self.n_matvecs})"
        )


def _check(A: SymmetricOperator, n: int, name: str, distribution: str, minimum: int) -> int:
    dim = check_square(A)
    check_int(n, name, minimum=minimum)
    check_choice(distribution, "distribution", Distribution)
    return dim


def _quadratic_forms(A: SymmetricOperator, V: Tensor) -> Tensor:
    """``v_i^T A v_i`` for the columns of V (P, k), as float64 (k,)."""
    AV = check_finite_product(A @ V.to(A.dtype)).to(torch.float64)
    return (V.to(torch.float64) * AV).sum(0)


def _mean_and_error(samples: Tensor) -> tuple[Tensor, Tensor]:
    n = samples.shape[0]
    err = samples.std() / n**0.5 if n > 1 else torch.tensor(float("nan"), dtype=samples.dtype)
    return samples.mean(), err


def hutchinson(
    A: SymmetricOperator,
    n_probes: int = 100,
    *,
    distribution: Distribution = "rademacher",
    generator: SeedLike = None,
) -> TraceEstimate:
    """Hutchinson's estimator ``tr(A) ~ (1/n) sum_i v_i^T A v_i`` with E[v v^T] = I.

    Unbiased; its variance is ``2 ||A||_F^2 / n`` for Gaussian probes and smaller (the diagonal
    does not contribute) for Rademacher probes.

    Raises:
        TypeError: for an ``A`` that is not a square operator or matrix of a floating dtype
            (cast an integer matrix first), or arguments of the wrong type.
        ValueError: for ``n_probes < 1`` or an unknown distribution.
        NonFiniteCurvatureError: when a product with ``A`` is NaN or infinite.
    """
    dim = _check(A, n_probes, "n_probes", distribution, 1)
    V = random_probes((dim, n_probes), distribution, as_generator(generator), A.dtype, A.device)
    value, err = _mean_and_error(_quadratic_forms(A, V))
    return TraceEstimate(value, err, n_probes)


def hutchpp(
    A: SymmetricOperator,
    n_matvecs: int = 99,
    *,
    distribution: Distribution = "rademacher",
    generator: SeedLike = None,
) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco and Woodruff, 2021): exact trace on a sketched top subspace.

    With m = ``n_matvecs`` split in thirds, ``Q = orth(A S)`` for S (P, m/3); then
    ``tr(A) ~ tr(Q^T A Q) + (3/m) tr(G^T (I - QQ^T) A (I - QQ^T) G)``. For matrices with a decaying
    spectrum (curvature matrices) the error falls as 1/m instead of 1/sqrt(m).

    Raises:
        TypeError: for an ``A`` that is not a square operator or matrix of a floating dtype
            (cast an integer matrix first), or arguments of the wrong type.
        ValueError: for ``n_matvecs < 3`` or an unknown distribution.
        NonFiniteCurvatureError: when a product with ``A`` is NaN or infinite.
    """
    dim = _check(A, n_matvecs, "n_matvecs", distribution, 3)
    third = n_matvecs // 3
    gen = as_generator(generator)
    S = random_probes((dim, third), distribution, gen, A.dtype, A.device)
    G = random_probes((dim, n_matvecs - 2 * third), distribution, gen, torch.float64, A.device)
    Q, _ = torch.linalg.qr(check_finite_product(A @ S).to(torch.float64))
    exact = _quadratic_forms(A, Q).sum()
    G = G - Q @ (Q.T @ G)
    value, err = _mean_and_error(_quadratic_forms(A, G))
    return TraceEstimate(exact + value, err, n_matvecs)

"""Eigenvalues of curvature operators: dense, Lanczos, and stochastic Lanczos quadrature.

The Hessian spectra of paper 003 (top eigenvalues by Lanczos, spectral densities by stochastic
Lanczos quadrature after Ghorbani et al., 2019); shared infrastructure otherwise.

Every routine takes a symmetric operator ``A`` of shape (P, P) with ``A @ v`` (a
:class:`~symdisc.curvature.CurvatureOperator` or a dense tensor). The Lanczos vectors are kept in
float64 with full re-orthogonalisation (two passes of classical Gram-Schmidt), whatever the
operator's dtype, so that the Krylov basis stays orthogonal to rounding and no ghost copies of
converged eigenvalues appear.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from symdisc.curvature._linop import (
    SymmetricOperator,
    check_finite_product,
    check_square,
    short_values,
)
from symdisc.curvature._random import SeedLike, as_generator, random_probes
from symdisc.runtime.checks import check_choice, check_float, check_int

Which = Literal["LA", "SA", "LM"]

__all__ = [
    "Which",
    "eigenvalues",
    "LanczosResult",
    "lanczos",
    "SpectralDensity",
    "slq_density",
]

logger = logging.getLogger(__name__)


def eigenvalues(A: SymmetricOperator, *, block_size: int = 256) -> Tensor:
    """All eigenvalues of A in ascending order, from its dense form (small operators only).

    Raises:
        TypeError: for an ``A`` that is not a square operator or matrix of a floating dtype.
        NonFiniteCurvatureError: for a matrix with NaN or infinite entries.
    """
    check_square(A)
    check_int(block_size, "block_size", minimum=1)
    dense = A if isinstance(A, Tensor) else A.to_dense(block_size=block_size)
    check_finite_product(dense)
    return torch.linalg.eigvalsh((dense + dense.T) / 2)


class _Lanczos:
    """The Lanczos three-term recurrence with full re-orthogonalisation, in float64.

    After m steps, ``V[:m]`` (m, P) is an orthonormal basis of the Krylov space and
    ``T = tridiag(beta[:m-1], alpha[:m], beta[:m-1])`` satisfies ``V A V^T = T``. When the Krylov
    space becomes invariant (beta ~ 0) and ``restart`` is set, the process continues from a fresh
    random vector orthogonal to V, so repeated eigenvalues are found too.
    """

    def __init__(self, A: SymmetricOperator, v0: Tensor, max_steps: int, gen, restart: bool):
        self.A, self.dim = A, v0.shape[0]
        self.gen, self.restart = gen, restart
        self.V = torch.zeros(max_steps + 1, self.dim, dtype=torch.float64, device=v0.device)
        self.V[0] = v0.to(torch.float64) / v0.to(torch.float64).norm()
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.scale = 0.0  # running estimate of ||A|| for the breakdown test
        self.exhausted = False

    @property
    def steps(self) -> int:
        return len(self.alpha)

    def step(self) -> None:
        m = self.steps
        v = self.V[m]
        w = check_finite_product(self.A @ v.to(self.A.dtype)).to(torch.float64)
        alpha = float(v @ w)
        w = w - alpha * v - (self.beta[-1] * self.V[m - 1] if m > 0 else 0.0)
        basis = self.V[: m + 1]
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        beta = float(w.norm())
        self.alpha.append(alpha)
        self.scale = max(self.scale, abs(alpha) + beta)
        if m + 1 >= self.dim:
            self.exhausted = True
            return
        if beta > 1e-10 * max(self.scale, 1e-300):
            self.beta.append(beta)
            self.V[m + 1] = w / beta
            return
        if not self.restart:
            self.exhausted = True
            return
        fresh = random_probes((self.dim,), "gaussian", self.gen, torch.float64, w.device)
        for _ in range(2):
            fresh = fresh - basis.T @ (basis @ fresh)
        self.beta.append(0.0)
        self.V[m + 1] = fresh / fresh.norm()

    def ritz(self) -> tuple[Tensor, Tensor]:
        """Ritz values (m,) and eigenvectors of T (m, m)."""
        m = self.steps
        T = torch.diag(torch.tensor(self.alpha, dtype=torch.float64))  # small: kept on the CPU
        if m > 1:
            off = torch.tensor(self.beta[: m - 1], dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        return torch.linalg.eigh(T)


@dataclass(frozen=True, repr=False)
class LanczosResult:
    """Extreme eigenpairs found by :func:`lanczos`.

    Attributes:
        eigenvalues: (k,) float64, ordered by ``which`` (LA: largest first, SA: smallest first,
            LM: largest magnitude first).
        eigenvectors: (P, k) float64, orthonormal columns.
        residuals: (k,) ``||A y - theta y||`` of each Ritz pair.
        converged: (k,) bool, residual <= ``tol * ||A||`` (estimated by the largest Ritz value).
        n_iter: the number of products with A.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    converged: Tensor
    n_iter: int

    def __repr__(self) -> str:
        return (
            f"LanczosResult(eigenvalues={short_values(self.eigenvalues)}, "
            f"converged={int(self.converged.sum())}/{self.converged.numel()}, "
            f"eigenvectors={tuple(self.eigenvectors.shape)}, n_iter={self.n_iter})"
        )


def _select(theta: Tensor, which: Which, k: int) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)[:k]
    if which == "SA":
        return torch.argsort(theta)[:k]
    return torch.argsort(theta.abs(), descending=True)[:k]


def lanczos(
    A: SymmetricOperator,
    k: int = 1,
    *,
    which: Which = "LA",
    max_iter: int | None = None,
    tol: float | None = None,
    generator: SeedLike = None,
) -> LanczosResult:
    """The k largest (LA), smallest (SA) or largest-magnitude (LM) eigenpairs of a symmetric A.

    Lanczos with full re-orthogonalisation from a random start; after every step past k the
    Ritz pairs of the tridiagonal matrix T_m are checked, and the iteration stops once the k wanted
    ones have residual ``|beta_m s_mi| <= tol * ||A||``. The eigenvalue error of a converged pair is
    at most its residual, and typically residual^2 / gap.

    Args:
        A: symmetric (P, P) operator or matrix.
        k: number of eigenpairs, 1 <= k <= P.
        which: ``"LA"``, ``"SA"`` or ``"LM"``.
        max_iter: most products with A (default ``min(P, max(20 k, 100))``); the memory is
            ``max_iter * P`` float64 numbers for the basis.
        tol: relative residual tolerance (default 1e-10 for float64 operators, 1e-6 otherwise:
            products in lower precision are not more accurate than that).
        generator: seed or ``torch.Generator`` for the start vector.

    Raises:
        TypeError: for an ``A`` that is not a square operator or matrix of a floating dtype
            (an integer matrix must be cast, e.g. ``A.to(torch.float64)``), or arguments of the
            wrong type.
        ValueError: for k out of range, an unknown ``which``, a non-positive ``max_iter`` or a
            ``tol`` that is not a positive finite float.
        NonFiniteCurvatureError: when a product with ``A`` is NaN or infinite.
    """
    dim = check_square(A)
    if check_int(k, "k", minimum=1) > dim:
        raise ValueError(f"`k` must be an int in [1, P={dim}], got {k!r}")
    check_choice(which, "which", Which)
    max_iter = min(dim, max(20 * k, 100)) if max_iter is None else max_iter
    if check_int(max_iter, "max_iter") < k:
        raise ValueError(f"`max_iter` must be an int >= k={k}, got {max_iter!r}")
    max_iter = min(max_iter, dim)
    if tol is None:
        tol = 1e-10 if A.dtype == torch.float64 else 1e-6
    tol = check_float(tol, "tol", positive=True)
    gen = as_generator(generator)
    v0 = random_probes((dim,), "gaussian", gen, torch.float64, A.device)
    process = _Lanczos(A, v0, max_iter, gen, restart=True)
    while True:
        process.step()
        m = process.steps
        if m < k and not process.exhausted:
            continue
        theta, S = process.ritz()
        beta_m = process.beta[m - 1] if len(process.beta) >= m else 0.0
        residuals = (beta_m * S[-1]).abs()
        norm = max(float(theta.abs().max()), 1e-300)
        chosen = _select(theta, which, k)
        converged = residuals[chosen] <= tol * norm
        if bool(converged.all()) or process.exhausted or m >= max_iter:
            break
    if not bool(converged.all()):
        logger.info(
            "lanczos: %d of %d eigenpairs converged in %d steps", int(converged.sum()), k, m
        )
    vectors = process.V[:m].T @ S[:, chosen].to(process.V.device)
    return LanczosResult(theta[chosen], vectors, residuals[chosen], converged, m)


@dataclass(frozen=True, repr=False)
class SpectralDensity:
    """A Gaussian-broadened eigenvalue density from stochastic Lanczos quadrature.

    Attributes:
        grid: (G,) abscissae.
        density: (G,) ``phi(t) = mean_probes sum_i w_i N(t; theta_i, sigma^2)``; integrates to ~1
            when the grid covers the nodes by a few sigma (the default grid does).
        nodes: (n_probes, m) Ritz values per probe (NaN-padded if a probe stopped early).
        weights: (n_probes, m) quadrature weights, squared first components; each row sums to 1.
        sigma: the broadening.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float

    def __repr__(self) -> str:
        nodes = self.nodes[torch.isfinite(self.nodes)]
        span = f"[{float(nodes.min()):.4g}, {float(nodes.max()):.4g}]" if nodes.numel() else "[]"
        return (
            f"SpectralDensity(grid={self.grid.numel()} points, probes={self.nodes.shape[0]}, "
            f"nodes in {span}, sigma={self.sigma:.4g})"
        )

    def moment(self, order: int) -> float:
        """``int t^order phi(t) dt`` of the unbroadened quadrature: an estimate of tr(A^order)/P."""
        nodes = torch.nan_to_num(self.nodes)
        return float((self.weights * nodes**order).sum(1).mean())


def slq_density(
    A: SymmetricOperator,
    *,
    n_steps: int = 100,
    n_probes: int = 1,
    sigma: float | None = None,
    grid: int | Tensor = 1000,
    generator: SeedLike = None,
) -> SpectralDensity:
    """Eigenvalue density of A by stochastic Lanczos quadrature (Ubaru, Chen and Saad, 2017).

    For each Rademacher probe v (normalised), ``n_steps`` Lanczos steps give ``T = Y diag(theta)
    Y^T``; the quadrature ``sum_i (Y_1i)^2 f(theta_i)`` estimates ``v^T f(A) v``, whose mean over
    probes is ``tr f(A) / P``. The nodes are broadened by Gaussians of width ``sigma``.

    Args:
        A: symmetric (P, P) operator or matrix.
        n_steps: Lanczos steps per probe, 1 <= n_steps <= P.
        n_probes: independent probes.
        sigma: broadening (default: the node range divided by ``n_steps``).
        grid: a (G,) tensor of abscissae, or the number of points of a grid that spans the nodes
            padded by 5 sigma on each side.
        generator: seed or ``torch.Generator`` for the probes.

    Raises:
        TypeError: for an ``A`` that is not a square operator or matrix of a floating dtype, or
            arguments of the wrong type.
        ValueError: for n_steps out of range, n_probes < 1, a ``sigma`` that is not a positive
            finite float, or a ``grid`` that is not a positive int or a non-empty finite (G,)
            tensor.
        NonFiniteCurvatureError: when a product with ``A`` is NaN or infinite.
    """
    dim = check_square(A)
    if check_int(n_steps, "n_steps", minimum=1) > dim:
        raise ValueError(f"`n_steps` must be an int in [1, P={dim}], got {n_steps!r}")
    check_int(n_probes, "n_probes", minimum=1)
    if sigma is not None:
        sigma = check_float(sigma, "sigma", positive=True)
    if isinstance(grid, Tensor):
        if grid.ndim != 1 or grid.numel() == 0 or not bool(torch.isfinite(grid).all()):
            raise ValueError(
                f"`grid` must be a non-empty finite (G,) tensor, got shape {tuple(grid.shape)}"
            )
        if not grid.is_floating_point():
            raise TypeError(f"`grid` must be a floating tensor, got {grid.dtype}")
    else:
        check_int(grid, "grid", minimum=1)
    gen = as_generator(generator)
    nodes = torch.full((n_probes, n_steps), float("nan"), dtype=torch.float64)
    weights = torch.zeros(n_probes, n_steps, dtype=torch.float64)
    for i in range(n_probes):
        v0 = random_probes((dim,), "rademacher", gen, torch.float64, A.device)
        process = _Lanczos(A, v0, n_steps, gen, restart=False)
        while process.steps < n_steps and not process.exhausted:
            process.step()
        theta, Y = process.ritz()
        nodes[i, : theta.shape[0]] = theta.cpu()
        weights[i, : theta.shape[0]] = Y[0].cpu() ** 2
    finite = nodes[torch.isfinite(nodes)]
    lo, hi = float(finite.min()), float(finite.max())
    if sigma is None:
        sigma = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0)) / n_steps
    if isinstance(grid, int):
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, grid, dtype=torch.float64)
    grid = grid.to(torch.float64).cpu()
    gauss = torch.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / sigma) ** 2)
    gauss = torch.nan_to_num(gauss) / (sigma * math.sqrt(2 * math.pi))
    density = (gauss * weights[None]).sum(-1).mean(-1)
    return SpectralDensity(grid, density, nodes, weights, float(sigma))

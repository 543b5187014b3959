"""The posterior predictive of a fitted Laplace approximation: the linearised (GLM) predictive,
the network Monte-Carlo predictive, and which weights the posterior covers (Immer et al. 2021,
"Improving predictions of Bayesian neural nets via local linearization"; paper 001, appendix
B.4).

With the posterior ``N(theta*, Sigma)``, ``Sigma = (H / T + diag(delta))^-1`` on the covered
weights (the others stay at their MAP) and the per-sample Jacobians ``J(x)`` (C, P) of the
model's outputs in the covered weights, the linearised model
``f_lin(x; theta) = f(x; theta*) + J(x) (theta - theta*)`` has the Gaussian function-space
posterior

    f_lin(x) ~ N(f(x; theta*), J(x) Sigma J(x)^T)                        (functional variance)

* regression, Gaussian likelihood with noise sigma: ``y ~ N(f(x; theta*), diag(J Sigma J^T) +
  sigma^2)`` (the marginal variances of every output);
* classification, probit approximation (MacKay 1992; laplace-torch's ``link_approx="probit"``):
  ``p(y | x) ~= softmax(f / sqrt(1 + pi/8 diag(J Sigma J^T)))``;
* classification, ``link="mc"``: the mean of ``softmax(f_s)`` over draws
  ``f_s ~ N(f, J Sigma J^T)``.

The network Monte-Carlo predictive (``method="mc"``) draws ``theta_s ~ N(theta*, Sigma)`` and
averages the network itself, ``1/S sum_s softmax(f(x; theta_s))`` (regression: the mean and the
variance over the draws, plus sigma^2).

This module holds the pieces that do not depend on the structure; the methods are on
:class:`~ella.laplace.Laplace`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ella.laplace.priors import posterior_parameters

__all__ = ["PredictiveMethod", "LinkApproximation", "Subset", "covered_parameters"]

PredictiveMethod = Literal["glm", "mc"]
LinkApproximation = Literal["probit", "mc"]
Subset = Literal["all", "last_layer"] | Sequence[str]


def _within(param: str, module: str) -> bool:
    """Whether the parameter ``param`` belongs to the module ``module`` (exact module name, or
    one of its submodules; never a substring of a name)."""
    return module == "" or param.startswith(module + ".")


def covered_parameters(model: nn.Module, subset: Subset) -> tuple[list[str], list[str] | None]:
    """The posterior parameters that a Laplace approximation with ``subset`` covers.

    Args:
        model: the network.
        subset: ``"all"``: every parameter of :func:`~ella.laplace.posterior_parameters`;
            ``"last_layer"``: those of the last module (in ``named_modules`` order) that owns
            one directly; a sequence of module names (exact names of ``model.named_modules()``,
            never substrings): those of these modules and their submodules.

    Returns:
        ``(names, modules)``: the covered parameter names in ``named_parameters`` order, and the
        covered modules (None for ``"all"``).

    Raises:
        TypeError: for a ``subset`` that is neither a str nor a sequence of str.
        ValueError: for another string, an unknown module name (listing the valid ones), or a
            subset that covers no posterior parameter.
    """
    posterior = posterior_parameters(model)
    if isinstance(subset, str):
        if subset == "all":
            return posterior, None
        if subset != "last_layer":
            raise ValueError(
                f"`subset` must be 'all', 'last_layer' or a list of module names, got {subset!r}"
            )
        owners = [
            name
            for name, module in model.named_modules()
            if any(
                (f"{name}.{p}" if name else p) in posterior
                for p, _ in module.named_parameters(recurse=False)
            )
        ]
        if not owners:
            raise ValueError("`model` has no module that owns a posterior parameter")
        modules = [owners[-1]]
    else:
        if not isinstance(subset, Sequence) or not all(isinstance(m, str) for m in subset):
            raise TypeError(
                f"`subset` must be 'all', 'last_layer' or a list of module names (str), got "
                f"{type(subset).__name__}"
            )
        modules = list(dict.fromkeys(subset))
        named = [n for n, _ in model.named_modules()]
        valid = [n for n in named if any(_within(p, n) for p in posterior)]
        unknown = [m for m in modules if m not in named]
        if unknown or not modules:
            raise ValueError(
                f"`subset` must name modules of `model` exactly (no substrings); "
                f"{unknown if modules else 'an empty list'} {'are' if modules else 'is'} not "
                f"among the modules with posterior parameters {valid}"
            )
        empty = [m for m in modules if m not in valid]
        if empty:
            raise ValueError(
                f"`subset` modules {empty} hold no posterior parameter; the modules with "
                f"posterior parameters are {valid}"
            )
    names = [p for p in posterior if any(_within(p, m) for m in modules)]
    return names, modules


def probit(mean: Tensor, variance: Tensor) -> Tensor:
    """(N, C) ``softmax(f / sqrt(1 + pi/8 var))`` from the means f and marginal variances."""
    return torch.softmax(mean / torch.sqrt(1.0 + math.pi / 8.0 * variance), dim=-1)


def sample_softmax(
    mean: Tensor, covariance: Tensor, n_samples: int, generator: torch.Generator | None
) -> Tensor:
    """(N, C) mean of ``softmax(f_s)`` over ``n_samples`` draws ``f_s ~ N(mean, covariance)``.

    The covariance (N, C, C) is factored by its eigendecomposition (eigenvalues clamped at 0):
    ``J Sigma J^T`` is positive semi-definite but may be singular (a softmax network's outputs
    can move together)."""
    values, vectors = torch.linalg.eigh(covariance)
    root = vectors * values.clamp_min(0).sqrt()[..., None, :]  # (N, C, C): root root^T = cov
    eps = standard_normal((n_samples, *mean.shape), mean.dtype, mean.device, generator)
    draws = mean + torch.einsum("ncd,snd->snc", root, eps)
    return torch.softmax(draws, dim=-1).mean(0)


def standard_normal(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """``torch.randn(shape)`` on ``device``, drawn on ``generator``'s device (default: the
    global generator of ``device``) and moved."""
    where = device if generator is None else generator.device
    return torch.randn(shape, dtype=dtype, device=where, generator=generator).to(device)

"""Dense brute-force twins of the curvature routines, which the tests and the benchmarks share.

Infrastructure, no equation of its own: the slow, obviously correct answers that the fast paths
are checked against (the Hessian of :mod:`~symdisc.curvature.hessian`, measured in paper 003's
spectra and sharpness; the GGN ``sum_n J_n^T H_n J_n`` of :mod:`~symdisc.curvature.ggn`, the
curvature of the Laplace marginal likelihoods of paper 000, eq. 9, and paper 001, eq. 7). Each
builds the whole (P, P) matrix by the plainest route (a double-backward loop; full Jacobians), so
it shares no operator, chunking or symmetrisation with the library's own routines. For small
models only: time and memory grow with P^2. Everything works in the dtype of the parameters
(use float64 for tight comparisons).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from symdisc.curvature.derivatives import check_inputs
from symdisc.curvature.functional import ModelFn, Params, check_params, flatten, unflatten

__all__ = ["dense_ggn", "dense_hessian"]


def dense_hessian(loss_fn: Callable[..., Tensor], params: Params, *args: object) -> Tensor:
    """The Hessian (P, P) of ``loss_fn(params, *args)`` by a Python loop of double-backward
    passes (``torch.autograd.grad`` of every entry of the gradient), one row per parameter entry,
    in :func:`~symdisc.curvature.flatten` order.

    Reverse-over-reverse through ``torch.autograd`` and nothing of ``torch.func``: independent of
    both product modes of :class:`~symdisc.curvature.HessianOperator` (a cached ``vjp`` of the
    gradient, and forward-over-reverse ``jvp``) and of ``torch.func.hessian``.

    Args:
        loss_fn: ``loss_fn(params, *args) -> scalar``, pure in ``params``.
        params: ``dict[str, Tensor]``; the Hessian is taken at their (detached) values.
        *args: the remaining arguments of ``loss_fn`` (inputs, targets).

    Returns:
        (P, P), not symmetrised.

    Example:
        >>> p = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
        >>> dense_hessian(lambda p: (p["w"] ** 3).sum(), p)
        tensor([[ 6.,  0.],
                [ 0., 12.]], dtype=torch.float64)
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}")
    params = check_params(params)
    theta = flatten({name: p.detach() for name, p in params.items()}).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(
            loss_fn(unflatten(theta, params), *args), theta, create_graph=True
        )
        rows = [
            torch.autograd.grad(grad[i], theta, retain_graph=True)[0] for i in range(theta.numel())
        ]
    return torch.stack(rows)


def dense_ggn(model_fn: ModelFn, params: Params, inputs: Tensor, output_hessians: Tensor) -> Tensor:
    """The generalised Gauss-Newton matrix ``sum_n J_n^T H_n J_n`` (P, P) from per-sample
    Jacobians.

    ``J_n`` (C, P) is the Jacobian of ``model_fn(params, inputs[n:n+1])[0]`` in the parameters
    (``torch.func.jacrev`` for one sample, ``vmap`` over the samples, flattened in
    :func:`~symdisc.curvature.flatten` order) and ``H_n`` the Hessian of the loss in sample n's
    outputs, which the caller gives (for the summed cross-entropy ``diag(p_n) - p_n p_n^T``).

    Args:
        model_fn: ``f(params, inputs) -> outputs (N, C)`` on a batch.
        params: ``dict[str, Tensor]``; the Jacobians are taken at their (detached) values.
        inputs: (N, ...).
        output_hessians: (N, C, C).

    Returns:
        (P, P).
    """
    if not callable(model_fn):
        raise TypeError(f"`model_fn` must be callable, got {type(model_fn).__name__}")
    params = {name: p.detach() for name, p in check_params(params).items()}
    check_inputs(inputs)
    if not isinstance(output_hessians, Tensor):
        raise TypeError(
            f"`output_hessians` must be a Tensor (N, C, C), got {type(output_hessians).__name__}"
        )
    if output_hessians.ndim != 3 or output_hessians.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"`output_hessians` must have shape ({inputs.shape[0]}, C, C), got "
            f"{tuple(output_hessians.shape)}"
        )

    def sample_outputs(p: Params, x: Tensor) -> Tensor:
        return model_fn(p, x[None])[0]

    jac = torch.func.vmap(torch.func.jacrev(sample_outputs), in_dims=(None, 0))(params, inputs)
    n = inputs.shape[0]
    J = torch.cat([jac[name].reshape(n, -1, p.numel()) for name, p in params.items()], dim=2)
    return torch.einsum("ncp,ncd,ndq->pq", J, output_hessians, J)

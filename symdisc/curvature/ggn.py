"""The generalised Gauss-Newton matrix ``G = sum_n J_n^T H_n J_n`` of a supervised loss.

The curvature of the Laplace-GGN marginal likelihoods (paper 000, section 4, eq. 9; paper 001,
eq. 7 and, with draw-averaged Jacobians, eq. 17).

``J_n`` is the Jacobian of sample n's outputs in the parameters and ``H_n`` the Hessian of the loss
in those outputs (see :mod:`symdisc.curvature.losses` for both losses and reductions). G drops
the second-order term of the network from the Hessian and is positive semi-definite.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.curvature._linop import ChunkSize, ParameterOperator, check_chunk_size
from symdisc.curvature.derivatives import check_callable, check_inputs, per_sample_jacobian
from symdisc.curvature.functional import ModelFn, Params, check_params, num_params
from symdisc.curvature.hessian import check_finite_loss
from symdisc.curvature.losses import (
    Loss,
    Reduction,
    check_loss,
    loss_value,
    output_hessian_product,
    output_hessian_sqrt,
    reduction_scale,
)
from symdisc.runtime.checks import check_optional_int

__all__ = ["GGNOperator", "ggn", "ggn_rows"]


class GGNOperator(ParameterOperator):
    """Matrix-free GGN: ``G v = J^T H (J v)``, J by ``jvp`` and J^T by a cached ``vjp`` closure.

    The forward pass and the reverse closure ``u -> J^T u`` are built once and reused; every
    product then costs one forward-mode pass for ``J v`` and one backward pass.

    Args:
        model_fn: ``f(params, inputs) -> (N, C)``.
        params: ``dict[str, Tensor]``.
        inputs: (N, ...) batch.
        targets: (N, C) for ``"mse"``, (N,) class indices for ``"cross_entropy"``.
        loss: ``"mse"`` or ``"cross_entropy"``.
        reduction: ``"mean"`` or ``"sum"``, as in ``torch.nn.functional``.
        chunk_size: vectors per vmapped chunk of a block product: an int, ``None`` for the
            whole block, or ``"auto"`` (default: chunks of 8, or of 1 for convolutional networks
            on a CPU, where 1 was 2.7x faster per vector than 8 on the ResNet of issue 19; see
            :class:`HessianOperator`).

    Raises:
        ValueError: for an unknown loss or reduction, wrongly shaped targets or outputs, or a
            loss that is not finite (:class:`NonFiniteCurvatureError`).
    """

    def __init__(
        self,
        model_fn: ModelFn,
        params: Params,
        inputs: Tensor,
        targets: Tensor,
        *,
        loss: Loss,
        reduction: Reduction = "mean",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        check_callable(model_fn, "model_fn")
        params = check_params(params)
        check_inputs(inputs)
        check_loss(loss, reduction)
        check_chunk_size(chunk_size)

        def f(p: Params) -> Tensor:
            return model_fn(p, inputs)

        self.outputs, vjp_fn = torch.func.vjp(f, params)
        outputs = self.outputs.detach()
        self.loss = loss_value(outputs, targets, loss, reduction)
        check_finite_loss(self.loss)

        def product(v: Params) -> Params:
            jv = torch.func.jvp(f, (params,), (v,))[1]
            return vjp_fn(output_hessian_product(outputs, jv, loss, reduction))[0]

        super().__init__(params, product, chunk_size)


def ggn_rows(
    model_fn: ModelFn,
    params: Params,
    inputs: Tensor,
    *,
    loss: Loss,
    reduction: Reduction = "mean",
    outputs: Tensor | None = None,
) -> Tensor:
    """Rows M (N C, P) of a factor of the GGN: ``M^T M = sum_n J_n^T H_n J_n``.

    ``M = [S_n^T J_n]_n`` with J_n the per-sample Jacobian and ``H_n = S_n S_n^T``
    (:func:`output_hessian_sqrt`). Nothing is detached: when ``inputs`` (or anything the outputs
    depend on besides ``params``) require a gradient, M and so the GGN are differentiable in them.
    ``outputs`` may pass ``model_fn(params, inputs)`` when the caller has it already. The
    reduction's scale is taken from this batch alone.
    """
    check_callable(model_fn, "model_fn")
    params = check_params(params)
    check_inputs(inputs)
    check_loss(loss, reduction)
    outputs = model_fn(params, inputs) if outputs is None else outputs
    jac = per_sample_jacobian(model_fn, params, inputs)  # (N, C, P)
    if jac.ndim != 3:
        raise ValueError(
            f"model outputs must have shape (N, C), got per-sample outputs of shape "
            f"{tuple(jac.shape[1:-1])}"
        )
    roots = output_hessian_sqrt(outputs, loss, reduction)  # (N, C, C)
    return torch.einsum("nck,ncp->nkp", roots, jac).reshape(-1, jac.shape[-1])


def ggn(
    model_fn: ModelFn,
    params: Params,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss: Loss,
    reduction: Reduction = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """The dense GGN (P, P) from per-sample Jacobians and a square root of the output Hessian.

    ``G = sum_n (S_n^T J_n)^T (S_n^T J_n)`` with ``H_n = S_n S_n^T`` (:func:`ggn_rows`),
    accumulated over chunks of ``chunk_size`` samples (default: all at once) so that at most a
    (chunk, C, P) Jacobian is held. Differentiable in the inputs when they require a gradient.

    Raises:
        TypeError: for a non-callable ``model_fn``, ``params`` that are not a dict of floating
            tensors, non-tensor ``inputs`` or ``targets``, or a ``chunk_size`` that is not an int.
        ValueError: for an empty batch, a ``chunk_size`` below 1, an unknown loss or reduction,
            targets of the wrong shape or out of the class range, or a loss that is not finite
            (:class:`NonFiniteCurvatureError`).
    """
    check_callable(model_fn, "model_fn")
    params = check_params(params)
    check_inputs(inputs)
    check_loss(loss, reduction)
    check_optional_int(chunk_size, "chunk_size", minimum=1)
    outputs = model_fn(params, inputs)
    check_finite_loss(loss_value(outputs.detach(), targets, loss, reduction))
    scale = reduction_scale(tuple(outputs.shape), loss, reduction)
    dim = num_params(params)
    first = next(iter(params.values()))
    G = torch.zeros(dim, dim, dtype=first.dtype, device=first.device)
    step = chunk_size or inputs.shape[0]
    for start in range(0, inputs.shape[0], step):
        chunk = slice(start, start + step)
        M = ggn_rows(
            model_fn, params, inputs[chunk], loss=loss, reduction="sum", outputs=outputs[chunk]
        )
        G = G + scale * (M.T @ M)
    return G

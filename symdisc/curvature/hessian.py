"""The Hessian of a loss in the parameters, as a matrix-free operator and as a dense matrix.

The Hessian whose spectra paper 003 compares between strict and relaxed models ("Training
Dynamics Evaluation"); shared infrastructure otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

from symdisc.curvature._linop import ChunkSize, ParameterOperator, check_chunk_size
from symdisc.curvature.functional import Params, check_params
from symdisc.runtime.checks import check_int

HVPMode = Literal["vjp", "jvp"]
LossFn = Callable[..., Tensor]

__all__ = ["HVPMode", "HessianOperator", "hessian", "NonFiniteCurvatureError", "check_finite_loss"]


class NonFiniteCurvatureError(ValueError):
    """The loss at the point where a curvature was asked for is NaN or infinite, so every
    curvature there would be meaningless (:func:`check_finite_loss`).

    A ``ValueError``, so callers that catch ``ValueError`` still do; a trainer that takes the
    curvature of its own loss can tell it from a wrong argument and stop as for any non-finite
    loss (``ella.laplace`` turns it into ``symdisc.runtime.NonFiniteLossError``).
    """


def check_finite_loss(value: Tensor) -> None:
    """Raise :class:`NonFiniteCurvatureError` when a loss is NaN or infinite."""
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteCurvatureError(
            f"the loss must be finite at the given parameters, got {value.item()}"
        )


class HessianOperator(ParameterOperator):
    """``H = d^2 L(params, *args) / d params^2`` as an operator with ``H @ v`` and ``H @ V``.

    Two ways to form a product, chosen on purpose:

    * ``mode="vjp"`` (default): one forward pass builds ``g(params) = grad L`` and a closure
      ``v -> vjp(g)(v) = H v`` (reverse over reverse) that is kept and reused for every product.
      Each product is then a single backward pass through the retained graph of the gradient,
      measured fastest on CPU when many products share one point (Lanczos, trace estimation).
    * ``mode="jvp"``: ``H v = jvp(grad L)(v)`` (forward over reverse), recomputed per product.
      Nothing is retained between products, so memory stays that of one gradient evaluation.

    Blocks of vectors (``H @ V`` with V of shape (P, k)) are vmapped over the block in chunks of
    ``chunk_size`` vectors. The default ``"auto"`` takes chunks of 8, measured on a 2-core CPU
    for an MLP as fast as a loop and faster than one vmap over a block of 100, which leaves the
    caches, except for convolutional networks (a parameter of more than 2 dimensions) on a
    CPU, where it loops (chunks of 1): vmapping the convolutions' double backward made 100
    products on the ResNet of issue 19 1.65x slower in chunks of 8. On a GPU larger chunks
    (or ``None``, the whole block) pay off.

    Args:
        loss_fn: a pure scalar loss ``L(params, *args)``.
        params: ``dict[str, Tensor]``, the point at which the Hessian is taken.
        *args: the rest of ``loss_fn``'s arguments (inputs, targets), held fixed.
        mode: ``"vjp"`` or ``"jvp"``, see above.
        chunk_size: vectors per vmapped chunk of a block product: an int, ``None`` for the
            whole block, or ``"auto"`` (default; see above).

    Raises:
        ValueError: for an unknown ``mode``, a loss that is not a finite scalar
            (:class:`NonFiniteCurvatureError` if it is not finite), or a vector
            whose shape is not (P,) or (P, k).

    Example:
        >>> f, params = functional(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
        >>> L = supervised_loss(f, "mse")
        >>> H = HessianOperator(L, params, torch.randn(8, 3), torch.randn(8, 2))
        >>> (H @ torch.randn(H.shape[0])).shape
        torch.Size([26])
    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Params,
        *args: object,
        mode: HVPMode = "vjp",
        chunk_size: ChunkSize = "auto",
    ) -> None:
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}")
        params = check_params(params)
        check_chunk_size(chunk_size)
        if mode not in get_args(HVPMode):
            raise ValueError(f"`mode` must be one of {get_args(HVPMode)}, got {mode!r}")
        self.mode = mode

        def checked_loss(p: Params, *rest: object) -> Tensor:
            # checked before torch.func differentiates it, whose own message for a non-scalar
            # output does not name `loss_fn`
            value = loss_fn(p, *rest)
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"`loss_fn` must return a scalar Tensor, got {type(value).__name__}"
                )
            if value.ndim != 0:
                raise ValueError(
                    f"`loss_fn` must return a scalar (0-d) Tensor, got shape "
                    f"{tuple(value.shape)} (reduce it, e.g. with .mean() or .sum())"
                )
            return value

        def grad_and_loss(p: Params) -> tuple[Params, Tensor]:
            return torch.func.grad_and_value(checked_loss)(p, *args)

        if mode == "vjp":
            self.gradient, vjp_fn, self.loss = torch.func.vjp(grad_and_loss, params, has_aux=True)

            def product(v: Params) -> Params:
                return vjp_fn(v)[0]

        else:
            self.gradient, self.loss = grad_and_loss(params)

            def product(v: Params) -> Params:
                return torch.func.jvp(lambda p: grad_and_loss(p)[0], (params,), (v,))[1]

        check_finite_loss(self.loss)
        super().__init__(params, product, chunk_size)


def hessian(loss_fn: LossFn, params: Params, *args: object, block_size: int = 128) -> Tensor:
    """The dense Hessian (P, P), assembled block of columns by block of columns from products.

    Beyond the (P, P) result, memory is that of one product of ``block_size`` columns (vmapped
    in chunks of 8), whereas ``torch.func.hessian`` of a whole model materialises the Jacobian
    of the gradient with all its intermediates at once (8 GB for the MLP of
    ``experiments/bench_curvature.py``). The result is symmetrised, ``(H + H^T) / 2``, to remove
    the rounding asymmetry of the products.
    """
    check_int(block_size, "block_size", minimum=1)
    dense = HessianOperator(loss_fn, params, *args).to_dense(block_size=block_size)
    return (dense + dense.T) / 2

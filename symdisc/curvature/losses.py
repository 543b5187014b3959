"""The two supervised losses of the curvature layer, with their output Hessians.

The likelihoods of the Laplace approximations (paper 000, eq. 9; paper 001, eq. 7: categorical on
softmax for classification, Gaussian for regression) and the mean squared next-frame loss of
paper 003; ``H_n`` below is the ``Lambda`` of paper 001, eq. 17.

Conventions are those of ``torch.nn.functional``:

* ``"mse"``: ``sum_{n,c} (f_nc - y_nc)^2``, divided by ``N * C`` (the number of entries) for
  ``reduction="mean"``; the output Hessian of sample n is ``2 s I`` with s the reduction scale.
* ``"cross_entropy"``: ``sum_n -log softmax(f_n)[y_n]``, divided by N for ``"mean"``; the output
  Hessian is ``s (diag(p_n) - p_n p_n^T)`` with ``p_n = softmax(f_n)``.

Both Hessians are independent of the targets, which is what makes the GGN positive
semi-definite and KFAC's Monte-Carlo variant possible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from symdisc.curvature.functional import ModelFn, Params
from symdisc.runtime.checks import check_int

Loss = Literal["mse", "cross_entropy"]
Reduction = Literal["mean", "sum"]

__all__ = [
    "Loss",
    "Reduction",
    "check_loss",
    "loss_value",
    "supervised_loss",
    "reduction_scale",
    "output_hessian_sqrt",
    "output_hessian_product",
    "softmax_root",
    "sample_output_gradients",
]


def check_loss(loss: object, reduction: object) -> None:
    """Raise a ValueError for an unknown loss or reduction."""
    if loss not in get_args(Loss):
        raise ValueError(f"`loss` must be one of {get_args(Loss)}, got {loss!r}")
    if reduction not in get_args(Reduction):
        raise ValueError(f"`reduction` must be one of {get_args(Reduction)}, got {reduction!r}")


def _check_outputs_targets(outputs: Tensor, targets: Tensor, loss: Loss) -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f"`targets` must be a Tensor, got {type(targets).__name__}")
    if not isinstance(outputs, Tensor):
        raise TypeError(f"model outputs must be a Tensor, got {type(outputs).__name__}")
    if outputs.ndim != 2:
        raise ValueError(f"model outputs must have shape (N, C), got {tuple(outputs.shape)}")
    if loss == "mse" and targets.shape != outputs.shape:
        raise ValueError(
            f"`targets` must have the outputs' shape {tuple(outputs.shape)} for 'mse', "
            f"got {tuple(targets.shape)}"
        )
    if loss == "cross_entropy":
        if targets.shape != outputs.shape[:1] or targets.dtype != torch.long:
            raise ValueError(
                f"`targets` must be class indices of shape ({outputs.shape[0]},) and dtype "
                f"torch.long for 'cross_entropy', got shape {tuple(targets.shape)}, {targets.dtype}"
            )
        plain = _unwrapped(targets)
        if plain.numel():
            low, high = int(plain.min()), int(plain.max())
            classes = outputs.shape[1]
            if low < 0 or high >= classes:
                raise ValueError(
                    f"`targets` must be class indices in [0, {classes - 1}] for the model's "
                    f"{classes} outputs, got values in [{low}, {high}]"
                )
    if loss == "mse" and not targets.is_floating_point():
        raise TypeError(f"`targets` must be floating point for 'mse', got {targets.dtype}")


def loss_value(outputs: Tensor, targets: Tensor, loss: Loss, reduction: Reduction) -> Tensor:
    """The scalar loss of outputs (N, C) against targets ((N, C) for mse, (N,) classes for CE)."""
    check_loss(loss, reduction)
    _check_outputs_targets(outputs, targets, loss)
    if loss == "mse":
        return F.mse_loss(outputs, targets, reduction=reduction)
    return F.cross_entropy(outputs, targets, reduction=reduction)


def supervised_loss(
    model_fn: ModelFn, loss: Loss = "cross_entropy", reduction: Reduction = "mean"
) -> Callable[[Params, Tensor, Tensor], Tensor]:
    """The pure loss ``L(params, inputs, targets) = loss(model_fn(params, inputs), targets)``.

    Example:
        >>> f, params = functional(nn.Linear(3, 4))
        >>> L = supervised_loss(f, "cross_entropy")
        >>> L(params, torch.randn(8, 3), torch.randint(0, 4, (8,))).shape
        torch.Size([])
    """
    check_loss(loss, reduction)
    if not callable(model_fn):
        raise TypeError(f"`model_fn` must be callable, got {type(model_fn).__name__}")

    def loss_fn(params: Params, inputs: Tensor, targets: Tensor) -> Tensor:
        return loss_value(model_fn(params, inputs), targets, loss, reduction)

    return loss_fn


def reduction_scale(outputs_shape: tuple[int, ...], loss: Loss, reduction: Reduction) -> float:
    """The factor s that the reduction puts in front of the summed loss: 1, 1/N or 1/(N C)."""
    check_loss(loss, reduction)
    if not (isinstance(outputs_shape, (tuple, list, torch.Size)) and len(outputs_shape) == 2):
        raise ValueError(f"`outputs_shape` must be (N, C), got {outputs_shape!r}")
    if reduction == "sum":
        return 1.0
    n, c = outputs_shape
    if n * c == 0:
        raise ValueError(f"`outputs_shape` must be non-empty for a mean, got {outputs_shape!r}")
    return 1.0 / (n * c) if loss == "mse" else 1.0 / n


def softmax_root(outputs: Tensor) -> Tensor:
    """``sqrt(softmax(outputs))`` over the last dim as ``exp(log_softmax / 2)``: the same
    values, and a finite derivative where a probability underflows to 0 (``p.sqrt()``'s is
    infinite there, which made derivatives of the curvature in the inputs, such as paper 001's
    eta-gradient, NaN once a network is confident in float32)."""
    return torch.exp(0.5 * torch.log_softmax(outputs, dim=-1))


def output_hessian_sqrt(outputs: Tensor, loss: Loss, reduction: Reduction) -> Tensor:
    """A square root S of the loss's Hessian in the outputs: (N, C, C) with H_n = S_n S_n^T.

    For cross-entropy ``S_n = sqrt(s) (diag(sqrt p_n) - p_n sqrt(p_n)^T)``, which squares to
    ``s (diag(p_n) - p_n p_n^T)`` because ``sum_c p_nc = 1``; for mse ``S_n = sqrt(2 s) I``.
    """
    check_loss(loss, reduction)
    _check_output_batch(outputs)
    n, c = outputs.shape
    scale = reduction_scale((n, c), loss, reduction)
    if loss == "mse":
        eye = torch.eye(c, dtype=outputs.dtype, device=outputs.device)
        return (2.0 * scale) ** 0.5 * eye.expand(n, c, c)
    p = torch.softmax(outputs, dim=-1)
    root = softmax_root(outputs)
    return scale**0.5 * (torch.diag_embed(root) - p[:, :, None] * root[:, None, :])


def output_hessian_product(outputs: Tensor, v: Tensor, loss: Loss, reduction: Reduction) -> Tensor:
    """Per-sample product ``H_n v_n`` of the output Hessian with v (N, C), without forming H."""
    scale = reduction_scale(tuple(outputs.shape), loss, reduction)
    if loss == "mse":
        return (2.0 * scale) * v
    p = torch.softmax(outputs, dim=-1)
    return scale * (p * v - p * (p * v).sum(-1, keepdim=True))


def sample_output_gradients(
    outputs: Tensor,
    loss: Loss,
    reduction: Reduction,
    mc_samples: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Monte-Carlo columns (N, C, mc) whose outer products average to the output Hessian.

    Each column is the gradient of the loss in the outputs at a target drawn from the model's
    own predictive distribution (categorical for cross-entropy, Gaussian with variance 1/2 for
    mse), scaled by ``1/sqrt(mc_samples)``: ``E[sum_m g_m g_m^T] = H_n`` (the Fisher equals the
    GGN for these losses).
    """
    check_loss(loss, reduction)
    _check_output_batch(outputs)
    check_int(mc_samples, "mc_samples", minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}"
        )
    n, c = outputs.shape
    scale = reduction_scale((n, c), loss, reduction) / mc_samples
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if loss == "mse":
        z = torch.randn(
            (n, c, mc_samples), generator=generator, device=gen_device, dtype=outputs.dtype
        )
        return (2.0 * scale) ** 0.5 * z.to(outputs.device)
    p = torch.softmax(outputs.detach(), dim=-1)
    draws = torch.multinomial(p.to(gen_device), mc_samples, replacement=True, generator=generator)
    onehot = F.one_hot(draws.to(outputs.device), c).to(outputs.dtype)  # (N, mc, C)
    return scale**0.5 * (p[:, :, None] - onehot.transpose(1, 2))


def _check_output_batch(outputs: object) -> None:
    if not isinstance(outputs, Tensor):
        raise TypeError(f"`outputs` must be a Tensor (N, C), got {type(outputs).__name__}")
    if outputs.ndim != 2:
        raise ValueError(f"`outputs` must have shape (N, C), got {tuple(outputs.shape)}")


def _unwrapped(x: Tensor) -> Tensor:
    """``x`` outside every ``torch.func`` transform (a vmapped tensor with its batch dimension),
    so that its values can be read for a check."""
    while torch._C._functorch.is_functorch_wrapped_tensor(x):
        x = torch._C._functorch.get_unwrapped(x)
    return x

"""Fixed sets of (theta, X, Y) samples on which symmetries are learned and evaluated.

Paper 002, section 4: the discovery objective (eqs. 2-4) and the scores are expectations over
parameters and data; here they are drawn once, with the loss gradient at each sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from symdisc.losses import ModuleLoss, ParamLoss, TwoLayerLoss
from symdisc.runtime.checks import check_float, check_instance, check_int

__all__ = ["Samples", "sample"]


@dataclass(frozen=True)
class Samples:
    """N samples of parameters and data, with the loss gradient at each (it never changes).

    Attributes:
        theta: (N, P) flat parameters.
        X: (N, *x_shape) data.
        Y: (N, *y_shape) targets.
        grad: (N, P) ``grad_theta L(theta_i, X_i, Y_i)``, computed once with ``vmap(grad)``.
        loss: (N,) the loss values.
    """

    theta: Tensor
    X: Tensor
    Y: Tensor
    grad: Tensor
    loss: Tensor

    def __len__(self) -> int:
        return self.theta.shape[0]

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{name}={tuple(getattr(self, name).shape)}" for name in ("theta", "X", "Y")
        )
        return f"Samples(n={len(self)}, {shapes}, dtype={self.theta.dtype})"

    def batch(self, index: Tensor) -> Samples:
        """The samples at ``index`` (a LongTensor of positions)."""
        check_instance(index, "index", Tensor)
        return Samples(
            self.theta[index], self.X[index], self.Y[index], self.grad[index], self.loss[index]
        )

    def to(self, device: torch.device | str) -> Samples:
        return Samples(*(t.to(device) for t in (self.theta, self.X, self.Y, self.grad, self.loss)))


def sample(
    loss: ParamLoss,
    n: int = 10_000,
    *,
    theta_scale: float = 1.0,
    x_scale: float = 1.0,
    y_scale: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Samples:
    """N Gaussian samples ``theta ~ N(0, theta_scale^2)``, ``X ~ N(0, x_scale^2)``, ``Y ~ ...``.

    A :class:`~symdisc.losses.ModuleLoss` with a ``param_scale`` (the default of
    :func:`~symdisc.losses.module_loss`: the module's own scale per tensor) draws
    ``theta ~ N(0, (theta_scale * param_scale)^2)`` entrywise instead.

    The same seed gives the same samples; use different seeds for the training and the held-out
    sets. For a :class:`~symdisc.losses.TwoLayerLoss` with ``output="cross_entropy"`` the
    columns of Y are softmax distributions of Gaussian logits; a
    :class:`~symdisc.losses.ModuleLoss` draws X and Y from its own data sampler (scaled by
    ``x_scale`` and ``y_scale``). Shapes: theta (n, P), X (n, *x_shape), Y (n, *y_shape).

    Raises:
        TypeError: for a ``loss`` that is not a ParamLoss, a non-int ``n`` or ``seed``, a scale
            that is not a real number or a ``dtype`` that is not a floating torch.dtype.
        ValueError: for ``n < 1``, a negative ``seed``, a scale that is not positive and finite,
            or samples whose loss or gradient is not finite (the scales are too large for the
            dtype).
    """
    check_instance(loss, "loss", ParamLoss)
    check_int(n, "n", minimum=1)
    for name, s in (("theta_scale", theta_scale), ("x_scale", x_scale), ("y_scale", y_scale)):
        check_float(s, name, positive=True)
    check_int(seed, "seed", minimum=0)
    check_instance(dtype, "dtype", torch.dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating torch.dtype, got {dtype}")
    check_instance(device, "device", (str, torch.device))
    g = torch.Generator().manual_seed(seed)
    theta = theta_scale * torch.randn(n, loss.num_params, generator=g, dtype=dtype)
    if isinstance(loss, ModuleLoss) and loss.param_scale is not None:
        theta = theta * loss.param_scale.to(dtype)
    if isinstance(loss, ModuleLoss):  # a module loss brings its own data
        X, Y = loss.data_sampler(n, g)
        X, Y = x_scale * X.to(dtype), y_scale * Y.to(dtype)
    else:
        X = x_scale * torch.randn(n, *loss.x_shape, generator=g, dtype=dtype)
        Y = y_scale * torch.randn(n, *loss.y_shape, generator=g, dtype=dtype)
    if isinstance(loss, TwoLayerLoss) and loss.output == "cross_entropy":
        Y = torch.softmax(Y, dim=1)
    theta, X, Y = theta.to(device), X.to(device), Y.to(device)
    grad, value = torch.vmap(torch.func.grad_and_value(loss.flat))(theta, X, Y)
    bad = ~(torch.isfinite(value) & torch.isfinite(grad).all(dim=1))
    if bool(bad.any()):
        raise ValueError(
            f"`theta_scale`, `x_scale` and `y_scale` ({theta_scale:g}, {x_scale:g}, {y_scale:g}) "
            f"gave {int(bad.sum())} of {n} samples a non-finite loss or gradient in {dtype}; "
            f"use smaller scales or a wider dtype"
        )
    return Samples(theta, X, Y, grad, value)

"""Invariant models (paper 001, eqs. 12 and 16): the network averaged over augmentation draws."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ella.invariance.augmentation import Augmentation
from symdisc.runtime import check_instance, check_int

__all__ = ["DrawAverage", "InvariantModel"]


class DrawAverage(nn.Module):
    """``f_hat`` on given draws (eq. 16): inputs (B, S, *D) -> mean over S of ``net`` (B, C).

    Its parameters are the network's (named ``net.*``); nothing random happens inside, so it is
    a pure function of the parameters and the augmented inputs (``vmap``-able).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"`net` must be an nn.Module, got {type(net).__name__}")
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 3:
            raise ValueError(f"inputs must have shape (B, S, ...), got {tuple(x.shape)}")
        b, s = x.shape[:2]
        return self.net(x.flatten(0, 1)).unflatten(0, (b, s)).mean(1)


class InvariantModel(DrawAverage):
    """The invariant network ``f_hat(x) = 1/S sum_s f(g(x, eps_s; eta))`` (eqs. 12, 16).

    ``forward(x)`` draws ``n_samples`` fresh eps per example (from ``generator`` if given);
    :meth:`averaged` is the same network on draws made beforehand (for the Laplace
    approximation, where likelihood and curvature must see the same draws). The augmentation
    (and its eta) is a plain attribute, not a submodule: eta is not in ``parameters()`` nor in
    ``state_dict()``.
    """

    def __init__(self, net: nn.Module, augmentation: Augmentation, n_samples: int) -> None:
        super().__init__(net)
        self.augmentation = check_instance(augmentation, "augmentation", Augmentation)
        self.n_samples = check_int(n_samples, "n_samples", minimum=1)

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return super().forward(self.augmentation(x, n_samples or self.n_samples, generator))

    def averaged(self) -> DrawAverage:
        """A :class:`DrawAverage` sharing this model's network (same parameter names)."""
        return DrawAverage(self.net)


# --------------------------------------------------------------------------------------------
# augmented KFAC (section 4.2)

"""The scalar layers of Fixup residual networks (Zhang et al., 2019, "Fixup initialization") and
their KFAC rules (paper 001, appendix B.2: the CIFAR-10 ResNets use Fixup instead of BatchNorm).

A Fixup basic block adds one learnable scalar bias before each convolution and each activation
(and after the branch) and multiplies its residual branch by one learnable scalar:

``ScalarBias``   ``y = x + b``, ``b`` of shape (1,), any input shape (B, ...).
``ScalarScale``  ``y = s x``, ``s`` of shape (1,), any input shape (B, ...).

KFAC. Importing this module registers, with :func:`symdisc.curvature.register_kfac_rule`, a rule
for each. A scalar's Kronecker block is 1 x 1 (x) 1 x 1, so it can be, and is, the *exact* GGN
block of the scalar: with the backpropagated output-Hessian columns ``dy_nk`` (shaped like the
layer output) of sample n and column k, the Jacobian-vector row of the scalar is

    bias:  g_nk = sum_p dy_nk(p),          scale:  g_nk = sum_p dy_nk(p) x_n(p)

(p over every channel and position of the sample), and the block is written with ``a = [1]``
per sample (A = 1) and ``g = g_nk`` (G = sum_{n,k} g_nk^2 = sum_n J_n^T Lambda_n J_n): exact for
any number of samples, not only one. The rows are ordered (column, sample), so the augmented
KFAC of paper 001 (eq. 19, :class:`ella.invariance.AugmentedKFAC`, which averages a and sums g
over the draws of each sample) gives ``G = sum_n sum_k (sum_s g_nsk)^2`` with the g of the
draw-averaged network: the exact GGN block of ``f_hat`` (eq. 17) for the scalar as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from symdisc.curvature import KronTerms, register_kfac_rule

__all__ = ["ScalarBias", "ScalarScale"]


class ScalarBias(nn.Module):
    """``y = x + b`` with one learnable scalar ``b`` (1,), initialised to ``init`` (Fixup: 0).

    Input and output: any shape (B, ...).
    """

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


class ScalarScale(nn.Module):
    """``y = s x`` with one learnable scalar ``s`` (1,), initialised to ``init`` (Fixup: 1).

    Input and output: any shape (B, ...).
    """

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _scalar_terms(name: str, x: Tensor, g_rows: list[Tensor]) -> list[KronTerms]:
    """The exact 1 x 1 block of a scalar: ``a = [1]`` per sample, ``g`` (K B, 1) the per-sample
    Jacobian-vector rows in (column, sample) order."""
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    g = torch.cat(g_rows)[:, None]
    return [KronTerms((name,), a=ones, g=g, bias=False)]


@register_kfac_rule(ScalarBias)
def _scalar_bias_rule(module: ScalarBias, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    return _scalar_terms("bias", x, [gr.reshape(gr.shape[0], -1).sum(1) for gr in grads])


@register_kfac_rule(ScalarScale)
def _scalar_scale_rule(module: ScalarScale, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    xf = x.reshape(x.shape[0], -1)
    return _scalar_terms("scale", x, [(gr.reshape(gr.shape[0], -1) * xf).sum(1) for gr in grads])

"""The KFAC rules of ``nn.Linear`` and ``nn.Conv2d`` (paper 000, appendix C; the *expand*
setting of Eschenhagen et al. (2023) for the positions of a convolution).

For ``s = W a + b`` the rule returns the layer inputs with a constant 1 appended when there is a
bias (so the bias is the last column of ``[W | b]``) and the backpropagated output gradients; a
convolution's inputs are its unfolded patches, one row per sample and output position, and its
output gradients one row per sample, position and output-Hessian column. Importing this module
registers both rules (:func:`symdisc.curvature.register_kfac_rule`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symdisc.curvature.kfac.registry import KronTerms, register_kfac_rule

__all__: list[str] = []


def _with_ones(a: Tensor) -> Tensor:
    return torch.cat([a, torch.ones_like(a[:, :1])], dim=1)


@register_kfac_rule(nn.Linear)
def _linear_rule(module: nn.Linear, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a = x.reshape(-1, module.in_features)
    has_bias = module.bias is not None
    g = torch.cat([gr.reshape(-1, module.out_features) for gr in grads])
    names = ("weight", "bias") if has_bias else ("weight",)
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]


@register_kfac_rule(nn.Conv2d)
def _conv2d_rule(module: nn.Conv2d, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    if module.groups != 1:
        raise ValueError(f"KFAC for nn.Conv2d needs groups=1, got groups={module.groups}")
    if isinstance(module.padding, str):
        raise ValueError("KFAC for nn.Conv2d needs numeric padding, got padding='same'/'valid'")
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding: tuple[int, ...] | int = 0
    else:
        padding = module.padding
    patches = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)
    a = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (N * L, C_in * kh * kw)
    has_bias = module.bias is not None
    g = torch.cat([gr.flatten(2).transpose(1, 2).reshape(-1, module.out_channels) for gr in grads])
    names = ("weight", "bias") if has_bias else ("weight",)
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]

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

import torch.nn.functional as F
from torch import Tensor, nn

from symdisc.curvature.kfac.registry import KronTerms, register_kfac_rule

__all__: list[str] = []


def _input_rows(x: Tensor, bias: bool) -> Tensor:
    """The rows (R, d) of ``x`` (..., d), with a constant 1 appended to each for a bias
    (R, d + 1), in at most one copy (for a convolution's transposed patches, the copy that
    makes them rows and the one that appends the 1 would be two of its largest tensor)."""
    if not bias:
        return x.reshape(-1, x.shape[-1])
    out = x.new_empty(*x.shape[:-1], x.shape[-1] + 1)
    out[..., :-1] = x
    out[..., -1] = 1.0
    return out.reshape(-1, out.shape[-1])


def _gradient_rows(views: Sequence[Tensor]) -> Tensor:
    """The rows of the output-gradient views (one (..., d) view per backpropagated column),
    stacked column after column as (R', d): one copy, where reshaping each view and then
    concatenating would copy a convolution's transposed gradients twice."""
    first = views[0]
    out = first.new_empty(len(views), *first.shape)
    for k, view in enumerate(views):
        out[k] = view
    return out.reshape(-1, first.shape[-1])


@register_kfac_rule(nn.Linear)
def _linear_rule(module: nn.Linear, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    has_bias = module.bias is not None
    a = _input_rows(x.reshape(-1, module.in_features), has_bias)
    g = _gradient_rows([gr.reshape(-1, module.out_features) for gr in grads])
    names = ("weight", "bias") if has_bias else ("weight",)
    return [KronTerms(names, a, g, has_bias)]


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
    has_bias = module.bias is not None
    a = _input_rows(patches.transpose(1, 2), has_bias)  # (N * L, C_in * kh * kw [+ 1])
    g = _gradient_rows([gr.flatten(2).transpose(1, 2) for gr in grads])  # (K N L, C_out)
    names = ("weight", "bias") if has_bias else ("weight",)
    return [KronTerms(names, a, g, has_bias)]

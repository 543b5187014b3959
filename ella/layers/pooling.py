"""Polyphase subsampling that keeps strict equivariance to circular translations (paper 000,
App. F.2).

Strided convolutions and max pooling break translation equivariance. Following Chaman and
Dokmanic (2021), a feature map is split into its four polyphase components ``x[:, :, i::2, j::2]``
(i, j in {0, 1}) and the component with the largest l-infinity norm is kept, chosen separately for
every sample. Shifting the input circularly by (dx, dy) permutes the components and shifts each of
them; the norms move with them, so the same underlying component is kept and comes out shifted by
(floor or ceil of) half the shift. With unique maxima this makes a CONV network strictly
equivariant before global pooling and strictly invariant after it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ella.layers._base import check_feature_map

__all__ = ["Subsampling", "polyphase_pool", "subsample", "PolyphasePool"]

#: How a halving CONV/S-CONV layer subsamples its output: ``"polyphase"`` (the component of
#: largest norm per sample, strictly equivariant to every circular shift) or ``"stride"`` (always
#: component (0, 0), as a stride-2 convolution: equivariant to circular shifts by even amounts).
Subsampling = Literal["polyphase", "stride"]


def _check_even(x: Tensor, caller: str, what: str) -> tuple[int, int]:
    """(H, W) of the feature map x (B, C, H, W); ValueError unless both are even."""
    check_feature_map(x, caller)
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"{what} needs even H and W, got H={h}, W={w}: `x` must have an even size")
    return h, w


def polyphase_pool(x: Tensor, *, return_index: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Subsample (B, C, H, W) -> (B, C, H/2, W/2) by keeping the polyphase component of largest
    l-infinity norm, per sample (App. F.2).

    The four components are ordered (0, 0), (0, 1), (1, 0), (1, 1) (row phase, column phase), i.e.
    component ``k`` is ``x[:, :, k // 2 :: 2, k % 2 :: 2]``. The norm of a component is the largest
    absolute entry over (C, H/2, W/2) of that sample; ties go to the first maximal component.

    Args:
        x: feature maps of shape (B, C, H, W) with even H and W.
        return_index: also return the selected component index of every sample, shape (B,).

    Returns:
        The selected components, shape (B, C, H/2, W/2) (and the indices, if asked for).

    Raises:
        TypeError: if ``x`` is not a tensor.
        ValueError: if ``x`` is not 4-D or H or W is odd.
    """
    h, w = _check_even(x, "polyphase_pool", "polyphase pooling")
    comps = torch.stack(
        [x[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)], dim=1
    )  # (B, 4, C, H/2, W/2)
    norms = comps.detach().abs().flatten(2).amax(dim=2)  # (B, 4)
    index = norms.argmax(dim=1)  # first maximum on ties
    b, c, h2, w2 = x.shape[0], x.shape[1], h // 2, w // 2
    out = comps.gather(1, index.view(b, 1, 1, 1, 1).expand(b, 1, c, h2, w2)).squeeze(1)
    return (out, index) if return_index else out


def subsample(
    x: Tensor, mode: Subsampling, *, return_index: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Halve (B, C, H, W) -> (B, C, H/2, W/2) as ``mode`` says (:data:`Subsampling`).

    ``"polyphase"`` is :func:`polyphase_pool`; ``"stride"`` keeps component 0 (``x[:, :, ::2,
    ::2]``) of every sample, and its index is 0 for all. A network of stride layers ending in
    one polyphase layer on a 2 x 2 map is strictly invariant to circular shifts by multiples of
    half the input side: shift by s = 2^(L-1) on side 2^L halves to a shift by 1 on the last
    2 x 2 map, whose polyphase choice is shift invariant.

    Raises:
        ValueError: for an unknown ``mode`` (and as :func:`polyphase_pool` for odd sizes).
    """
    if mode == "polyphase":
        return polyphase_pool(x, return_index=return_index)
    if mode != "stride":
        raise ValueError(f"`mode` must be one of ('polyphase', 'stride'), got {mode!r}")
    _check_even(x, "subsample", "subsampling")
    out = x[:, :, ::2, ::2]
    if return_index:
        return out, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    return out


class PolyphasePool(nn.Module):
    """Module form of :func:`polyphase_pool`: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def forward(self, x: Tensor) -> Tensor:
        return polyphase_pool(x)  # type: ignore[return-value]

"""Group layers shaped like the planar relaxed layers, for networks on p4 feature maps.

Every path here maps group feature maps (B, C, 4, H, W) -> (B, C', 4, H', W') with H' = H or
H / 2 and carries ``in_channels``, ``out_channels``, ``in_size`` and ``out_size``, so that
:class:`GroupPathSum` adds them into the F-FC+CONV+GCONV layer of paper 000, App. B, eq. (11):

* GCONV (:func:`gconv_path`, :func:`pointwise_gconv_path`): the p4 group convolution (or its
  pointwise version, App. F.3), strictly equivariant to translations and quarter turns;
* CONV (:func:`conv_path`): a planar 3 x 3 convolution over the C * 4 channels (rotation index
  folded into channels): translation-equivariant, not rotation-equivariant;
* F-FC and FC on the group (:func:`ffc_path`, :func:`fc_path`, App. A): no constraint.

A halving path subsamples with polyphase pooling over the flattened (C * 4) channels, chosen per
sample, which commutes with translations by even shifts and with quarter turns. The network of
:func:`ella.models.neyshabur` lifts its planar input to the group with :func:`lift`.
"""

from __future__ import annotations

from torch import Tensor, nn

from ella.layers._base import (
    GROUP_ORDER,
    RelaxedLayer,
    check_feature_map,
    check_out_size,
    check_shape,
    circular_conv,
)
from ella.layers.group import GroupConv, GroupFC, GroupFFC, PointwiseGroupConv
from ella.layers.pooling import polyphase_pool

__all__ = [
    "GroupPath",
    "GroupPathSum",
    "lift",
    "Lift",
    "FoldedConv",
    "gconv_path",
    "pointwise_gconv_path",
    "conv_path",
    "ffc_path",
    "fc_path",
]


def lift(x: Tensor) -> Tensor:
    """Planar maps (B, C, H, W) to group maps (B, C, 4, H, W), constant along the rotations.

    A map constant in r transforms under a quarter turn R exactly as the p4 action
    ``out[:, :, r] = R out[:, :, r - 1]`` asks, so every equivariant layer after it is
    equivariant to rotations of the planar input.
    """
    x = check_feature_map(x, "lift")
    return x.unsqueeze(2).expand(-1, -1, GROUP_ORDER, -1, -1)


class Lift(nn.Module):
    """:func:`lift` as a module."""

    def forward(self, x: Tensor) -> Tensor:
        return lift(x)


def _pool_group(x: Tensor) -> Tensor:
    B, C, R, H, W = x.shape
    return polyphase_pool(x.reshape(B, C * R, H, W)).reshape(B, C, R, H // 2, W // 2)


class GroupPath(RelaxedLayer):
    """One path of a group layer with the shape attributes of the relaxed layers.

    Wraps a group module that keeps the resolution (``subsample=True``: followed by polyphase
    pooling to halve it) or maps to the output resolution itself. The wrapped module holds, and
    tags, the parameters.
    """

    def __init__(
        self,
        module: nn.Module,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        *,
        subsample: bool,
    ) -> None:
        super().__init__()
        check_out_size(in_size, out_size)
        self.module = module
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size, self.out_size = in_size, out_size
        self.subsample = subsample and out_size != in_size

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.in_channels, GROUP_ORDER, self.in_size, self.in_size)
        check_shape(x, expected, f"{type(self.module).__name__} path", module=self)
        out = self.module(x)
        return _pool_group(out) if self.subsample else out


class FoldedConv(RelaxedLayer):
    """The CONV path on group maps: a planar circular S x S convolution over the (C * 4) channels
    of a group map, the rotation index folded into the channels, ``(B, C, 4, H, W) ->
    (B, C', 4, H, W)``: translation-equivariant, not rotation-equivariant.

    Parameters: ``weight`` ``(C' * 4, C * 4, S, S)`` and ``bias`` ``(C' * 4,)``, tagged
    ``"conv"``, drawn from ``U(+-1/sqrt(C 4 S S))``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        fan_in = in_channels * GROUP_ORDER * kernel_size**2
        shape = (out_channels * GROUP_ORDER, in_channels * GROUP_ORDER, kernel_size, kernel_size)
        self.init_parameter("weight", shape, fan_in, "conv")
        self.init_parameter("bias", (out_channels * GROUP_ORDER,), fan_in, "conv")
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        B, C, R, H, W = x.shape
        y = circular_conv(x.reshape(B, C * R, H, W), self.weight, self.bias)
        return y.reshape(B, -1, R, H, W)


def gconv_path(c_in: int, c_out: int, n_in: int, n_out: int) -> GroupPath:
    """The GCONV path: a 3 x 3 p4 group convolution (+ polyphase halving)."""
    return GroupPath(GroupConv(c_in, c_out, 3), c_in, c_out, n_in, n_out, subsample=True)


def pointwise_gconv_path(c_in: int, c_out: int, n_in: int, n_out: int) -> GroupPath:
    """The pointwise GCONV path of App. F.3 (+ polyphase halving)."""
    return GroupPath(PointwiseGroupConv(c_in, c_out, 3), c_in, c_out, n_in, n_out, subsample=True)


def conv_path(c_in: int, c_out: int, n_in: int, n_out: int) -> GroupPath:
    """The CONV path on group maps: a planar convolution over the folded channels."""
    return GroupPath(FoldedConv(c_in, c_out), c_in, c_out, n_in, n_out, subsample=True)


def ffc_path(c_in: int, c_out: int, n_in: int, n_out: int) -> GroupPath:
    """The F-FC path on the group (App. A), straight to the output resolution."""
    module = GroupFFC(c_in, c_out, n_in, out_size=n_out, bias=True)
    return GroupPath(module, c_in, c_out, n_in, n_out, subsample=False)


def fc_path(c_in: int, c_out: int, n_in: int, n_out: int) -> GroupPath:
    """The FC path on the group (App. A), straight to the output resolution."""
    module = GroupFC(c_in, c_out, n_in, out_size=n_out, bias=True)
    return GroupPath(module, c_in, c_out, n_in, n_out, subsample=False)


class GroupPathSum(RelaxedLayer):
    """Sum of group paths that subsamples once: the paths that keep the resolution (CONV, GCONV)
    are added at full resolution and polyphase-pooled together, then the paths that map to the
    output resolution themselves (FC, F-FC) are added.

    Pooling each convolution path separately would break equivariance: their polyphase choices
    can differ, so their outputs would shift by different amounts under a translation.
    """

    def __init__(self, *paths: GroupPath) -> None:
        super().__init__()
        if not paths or not all(isinstance(p, GroupPath) for p in paths):
            raise TypeError("`paths` must be one or more GroupPath modules")
        shapes = {(p.in_channels, p.out_channels, p.in_size, p.out_size) for p in paths}
        if len(shapes) != 1:
            raise ValueError(f"`paths` must all map the same shapes, got {sorted(shapes)}")
        self.in_channels, self.out_channels, self.in_size, self.out_size = shapes.pop()
        self.branches = nn.ModuleList(paths)

    def forward(self, x: Tensor) -> Tensor:
        pooled = [p for p in self.branches if p.subsample]
        direct = [p for p in self.branches if not p.subsample]
        out = None
        if pooled:
            out = _pool_group(sum(p.module(x) for p in pooled))
        for p in direct:
            out = p(x) if out is None else out + p(x)
        return out

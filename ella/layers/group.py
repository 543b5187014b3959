"""Layers on the roto-translation group p4 = Z2 ⋊ C4 (paper 000, App. A, eq. 10; App. B, eq. 11;
App. F.3).

Feature maps on the group have shape ``(B, C, 4, H, W)``: batch, channel, rotation ``r`` in
``{0, 1, 2, 3}`` (the rotation by ``r`` quarter turns) and space. Planar feature maps have shape
``(B, C, H, W)``.

Conventions
-----------
* ``R`` is the spatial quarter turn ``torch.rot90(x, 1, dims=(-2, -1))`` (about the centre of the
  grid); ``R^r w`` is a filter rotated by ``r`` quarter turns about its centre pixel (kernel sizes
  are odd so that the centre pixel exists).
* Convolutions are cross-correlations with circular padding, as :func:`torch.nn.functional.conv2d`
  computes them: ``(x ⋆ w)(p) = Σ_d x(p + d) w(d)`` with ``d`` the offset from the filter centre and
  ``p + d`` taken modulo the grid. With circular padding and an odd filter,
  ``(R x) ⋆ w = R (x ⋆ R^{-1} w)`` holds exactly on a periodic grid.
* Rotating the input by a quarter turn rotates every output map spatially **and** shifts the
  rotation axis cyclically by one::

      layer(R x) == R(roll(layer(x), 1, rotation axis))

  i.e. ``out'[:, :, r] = R out[:, :, r - 1]`` (indices modulo 4). :func:`rotate_p4` applies this
  action (to planar maps it is just ``R``), so every layer ``f`` of this module except the
  fully connected ones satisfies ``f(rotate_p4(x)) == rotate_p4(f(x))``; so do their stacks with
  pointwise non-linearities between them.
* Group elements are ``g = (t, r)``; the regular action ``g^{-1} g'`` of App. A becomes, for the
  rotation part, ``r - r' (mod 4)`` and, for the filter, a rotation by ``r'``.

Paths
-----
The (lifting, group, pointwise group) convolutions are the strictly equivariant path GCONV and tag
their parameters ``"gconv"``; :class:`GroupFC` and :class:`GroupFFC` are the unconstrained FC and
factored F-FC paths on the group and tag theirs ``"fc"``. Summing a GCONV layer and a (F-)FC layer
with the same shapes gives the relaxed layer F-FC+GCONV of App. A, Eq. (10) and App. B, Eq. (11).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.layers._base import (
    GROUP_ORDER,
    RelaxedLayer,
    check_feature_map,
    check_kernel_size,
    circular_conv,
)
from symdisc.runtime import check_choice, check_instance, check_int

PoolMode = Literal["max", "mean"]

__all__ = [
    "GROUP_ORDER",
    "PoolMode",
    "rotate_p4",
    "group_pool",
    "GroupPool",
    "LiftingConv",
    "GroupConv",
    "PointwiseGroupConv",
    "GroupFC",
    "GroupFFC",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_size(size: object, name: str) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"`{name}` must be an int or a pair (H, W) of ints, got {size!r}")
    h = check_int(size[0], f"{name}[0]", minimum=1)
    w = check_int(size[1], f"{name}[1]", minimum=1)
    return h, w


def _add_bias(y: Tensor, bias: Tensor | None) -> Tensor:
    """``y`` (B, C', 4, H, W) plus ``bias`` (C',) shared over rotations and positions, if any."""
    return y if bias is None else y + bias.view(1, -1, 1, 1, 1)


def _lifting_conv(x: Tensor, filters: Tensor, bias: Tensor | None) -> Tensor:
    """A lifting convolution as one planar convolution.

    Args:
        x: planar feature maps (B, C, H, W).
        filters: the expanded ``conv2d`` filters (C' * 4, C, k, k) of the layer, row
            ``c' * 4 + r`` for output rotation r.
        bias: (C',), shared over the rotations, or None.

    Returns:
        (B, C', 4, H, W), circular padding.
    """
    y = circular_conv(x, filters)
    y = y.reshape(x.shape[0], filters.shape[0] // GROUP_ORDER, GROUP_ORDER, *y.shape[-2:])
    return _add_bias(y, bias)


def _group_conv(x: Tensor, filters: Tensor, bias: Tensor | None) -> Tensor:
    """A group convolution as one planar convolution over the folded rotation axis.

    Args:
        x: group feature maps (B, C, 4, H, W).
        filters: the expanded ``conv2d`` filters (C' * 4, C * 4, k, k) of the layer.
        bias: (C',), shared over the rotations, or None.

    Returns:
        (B, C', 4, H, W), circular padding.
    """
    b, c, n, h, w = x.shape
    y = circular_conv(x.reshape(b, c * n, h, w), filters)
    y = y.reshape(b, filters.shape[0] // n, n, h, w)
    return _add_bias(y, bias)


def _rotated_stack(w: Tensor, dim: int = 0) -> Tensor:
    """Filters ``(..., k, k)`` rotated by ``r = 0, 1, 2, 3`` quarter turns, stacked at ``dim``."""
    return torch.stack([torch.rot90(w, r, dims=(-2, -1)) for r in range(GROUP_ORDER)], dim=dim)


def _rotated_shifted_stack(w: Tensor, axis: int) -> Tensor:
    """Group filters ``w`` with a relative-rotation axis ``axis`` (size 4), for every output
    rotation r' = 0..3 rolled by r' along ``axis`` (entry r becomes ``w(.., r - r')``) and rotated
    in space by r' quarter turns, stacked at ``axis - 1`` (the r' axis, before the channels)."""
    blocks = [
        torch.rot90(torch.roll(w, r_out, dims=axis), r_out, dims=(-2, -1))
        for r_out in range(GROUP_ORDER)
    ]
    return torch.stack(blocks, dim=axis - 1)


# --------------------------------------------------------------------------------------------
# the group action and pooling
# --------------------------------------------------------------------------------------------


def rotate_p4(x: Tensor, k: int = 1) -> Tensor:
    """Act with ``k`` quarter turns on a planar or group feature map.

    Args:
        x: a planar map ``(..., H, W)`` with ``x.dim() <= 4``, or a group feature map
            ``(B, C, 4, H, W)``.
        k: the number of quarter turns (any int; taken modulo 4).

    Returns:
        For a planar map, ``torch.rot90(x, k, dims=(-2, -1))``. For a group map,
        ``torch.rot90(torch.roll(x, k, dims=2), k, dims=(-2, -1))``: every map rotated in space and
        the rotation axis shifted cyclically by ``k`` (``out[:, :, r] = R^k x[:, :, r - k]``).
        This is the action under which the convolutions of this module are equivariant.

    Raises:
        TypeError: if ``x`` is not a Tensor or ``k`` not an int.
        ValueError: if ``x`` has fewer than 2 dims, or 5 dims without a rotation axis of size 4.
    """
    x = check_instance(x, "x", Tensor)
    k = check_int(k, "k")
    if x.dim() < 2 or x.dim() > 5:
        raise ValueError(
            f"`x` must be a planar map (..., H, W) with at most 4 dims or a group map "
            f"(B, C, {GROUP_ORDER}, H, W), got shape {tuple(x.shape)}"
        )
    if x.dim() == 5:
        check_feature_map(x, "rotate_p4", group=True)
        x = torch.roll(x, k % GROUP_ORDER, dims=2)
    return torch.rot90(x, k % GROUP_ORDER, dims=(-2, -1))


def group_pool(x: Tensor, mode: PoolMode = "max") -> Tensor:
    """Pool a group feature map over its rotation axis: ``(B, C, 4, H, W) -> (B, C, H, W)``.

    ``out(c, p) = max_r x(c, r, p)`` (or the mean over ``r``). Since the action of
    :func:`rotate_p4` only permutes the rotation axis besides rotating space, pooling over that
    axis turns a rotation-equivariant group map into a rotation-equivariant planar map:
    ``group_pool(rotate_p4(x)) == R group_pool(x)`` (invariant in the rotation index). A further
    global spatial pooling makes it invariant. (Coset pooling, Cohen and Welling 2016.)

    Args:
        x: group feature map ``(B, C, 4, H, W)``.
        mode: ``"max"`` (default) or ``"mean"``.

    Raises:
        TypeError: if ``x`` is not a Tensor.
        ValueError: if ``x`` is not of shape ``(B, C, 4, H, W)`` or ``mode`` is unknown.
    """
    x = check_feature_map(x, "group_pool", group=True)
    check_choice(mode, "mode", PoolMode)
    return x.amax(dim=2) if mode == "max" else x.mean(dim=2)


class GroupPool(nn.Module):
    """:func:`group_pool` (max) as a module: ``(B, C, 4, H, W) -> (B, C, H, W)``."""

    def forward(self, x: Tensor) -> Tensor:
        return group_pool(x)


# --------------------------------------------------------------------------------------------
# strictly equivariant path GCONV
# --------------------------------------------------------------------------------------------


class _GroupFilter(RelaxedLayer):
    """Shared by the p4 convolutions: a filter ``weight (C', C, k, k)`` (with
    :attr:`rotation_axis`: ``(C', C, 4, k, k)``) and ``bias (C',)``, both tagged "gconv", drawn
    from ``U(+-1/sqrt(fan_in))`` with the filter's fan-in."""

    rotation_axis = False

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = k = check_kernel_size(kernel_size)
        rotations = (GROUP_ORDER,) if self.rotation_axis else ()
        fan_in = in_channels * math.prod(rotations) * k * k
        shape = (out_channels, in_channels, *rotations, k, k)
        self.init_parameter("weight", shape, fan_in, "gconv")
        self.init_bias(bias, (out_channels,), fan_in, "gconv")

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"bias={self.bias is not None}"
        )


class LiftingConv(_GroupFilter):
    """Lifting convolution, planar map ``(B, C, H, W)`` -> group map ``(B, C', 4, H, W)``.

    ``y(c', r, p) = b(c') + Σ_c Σ_d x(c, p + d) (R^r θ̄)(c', c, d)`` (App. A, the group
    convolution with input on Z2), with circular padding, so that
    ``LiftingConv(R x) == rotate_p4(LiftingConv(x))``.

    Parameters: ``weight`` ``(C', C, k, k)`` and ``bias`` ``(C',)`` (shared over rotations), both
    tagged ``"gconv"``.

    Args:
        in_channels: ``C``.
        out_channels: ``C'``.
        kernel_size: odd filter size ``k``.
        bias: whether to add a learnable bias per output channel.
    """

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filter bank ``(C' * 4, C, k, k)``, row ``c' * 4 + r`` = ``R^r θ̄(c')``."""
        k = self.kernel_size
        w = _rotated_stack(self.weight).transpose(0, 1)  # (C', 4, C, k, k)
        return w.reshape(self.out_channels * GROUP_ORDER, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', 4, H, W)``."""
        x = check_feature_map(x, "LiftingConv", channels=self.in_channels, module=self)
        return _lifting_conv(x, self.expanded_weight(), self.bias)


class GroupConv(_GroupFilter):
    """Full p4 group convolution, ``(B, C, 4, H, W) -> (B, C', 4, H, W)``.

    ``y(c', r', p) = b(c') + Σ_c Σ_r Σ_d x(c, r, p + d) (R^{r'} θ̄)(c', c, r - r' mod 4, d)``,
    the group convolution ``Σ_g x(c, g) θ̄(c', c, g^{-1} g')`` of App. A (Cohen and Welling 2016)
    with a filter over space and rotation, rotated in space and shifted cyclically in rotation for
    each output rotation ``r'``; circular padding. Then
    ``GroupConv(rotate_p4(x)) == rotate_p4(GroupConv(x))``.

    Parameters: ``weight`` ``(C', C, 4, k, k)`` (``θ̄``, its axis 2 the relative rotation
    ``r - r'``) and ``bias`` ``(C',)``, both tagged ``"gconv"``.

    Args: as :class:`LiftingConv`.
    """

    rotation_axis = True

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filter bank ``(C' * 4, C * 4, k, k)``.

        Entry ``[c' * 4 + r', c * 4 + r]`` is ``R^{r'} θ̄(c', c, r - r' mod 4)``.
        """
        k, n = self.kernel_size, GROUP_ORDER
        w = _rotated_shifted_stack(self.weight, axis=2)  # (C', 4 [r'], C, 4 [r], k, k)
        return w.reshape(self.out_channels * n, self.in_channels * n, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, 4, H, W) -> (B, C', 4, H, W)``."""
        x = check_feature_map(x, "GroupConv", group=True, channels=self.in_channels, module=self)
        return _group_conv(x, self.expanded_weight(), self.bias)


class PointwiseGroupConv(_GroupFilter):
    """Group convolution pointwise in the rotation subgroup (App. F.3),
    ``(B, C, 4, H, W) -> (B, C', 4, H, W)``.

    The filter is separable with the indicator ``1_{r = Id}`` on the rotations:
    ``y(c', r, p) = b(c') + Σ_c Σ_d x(c, r, p + d) (R^r θ̄)(c', c, d)``: each rotation channel
    ``r`` is convolved with the spatial filter rotated by ``r``, with no sum over rotations (the
    analogue of a 1x1 convolution for the rotation subgroup); circular padding. Then
    ``PointwiseGroupConv(rotate_p4(x)) == rotate_p4(PointwiseGroupConv(x))``.

    Parameters: ``weight`` ``(C', C, k, k)`` and ``bias`` ``(C',)``, both tagged ``"gconv"``.

    Args: as :class:`LiftingConv`.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, 4, H, W) -> (B, C', 4, H, W)``."""
        x = check_feature_map(
            x, "PointwiseGroupConv", group=True, channels=self.in_channels, module=self
        )
        b, c, n, h, w = x.shape
        k = self.kernel_size
        # rotation-major channels, one convolution group per rotation r with filter R^r θ̄.
        xr = x.transpose(1, 2).reshape(b, n * c, h, w)
        wr = _rotated_stack(self.weight).reshape(n * self.out_channels, c, k, k)
        y = circular_conv(xr, wr, groups=n)
        y = y.reshape(b, n, self.out_channels, h, w).transpose(1, 2)
        return _add_bias(y, self.bias)


# --------------------------------------------------------------------------------------------
# unconstrained paths FC and F-FC on the group
# --------------------------------------------------------------------------------------------


class _GroupDense(RelaxedLayer):
    """Shared by :class:`GroupFC` and :class:`GroupFFC`: the shapes C, C', (H, W), (H', W') and
    the check of the input ``(B, C, 4, H, W)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int | tuple[int, int],
        out_size: int | tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.size = _check_size(size, "size")
        self.out_size = self.size if out_size is None else _check_size(out_size, "out_size")

    def _check_input(self, x: object) -> Tensor:
        name = type(self).__name__
        return check_feature_map(
            x, name, group=True, channels=self.in_channels, size=self.size, module=self
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, size={self.size}, "
            f"out_size={self.out_size}, bias={self.bias is not None}"
        )


class GroupFC(_GroupDense):
    """FC map on group feature maps (App. A), ``(B, C, 4, H, W) -> (B, C', 4, H', W')``.

    ``y(c', g') = Σ_c Σ_g x(c, g) θ(c', c, g', g)`` with ``g = (r, x, y)``: a dense matrix
    ``weight`` of shape ``(C' * 4 * H' * W', C * 4 * H * W)``, its rows and columns the row-major
    flattening of ``(C', 4, H', W')`` and ``(C, 4, H, W)`` (the layout of ``nn.Linear``). Not
    equivariant: this is the FC path of the relaxed layer FC+GCONV (App. A, Eq. (10)).

    Parameters: ``weight`` and, if ``bias``, ``bias`` ``(C' * 4 * H' * W',)``, tagged ``"fc"``.

    Args:
        in_channels: ``C``.
        out_channels: ``C'``.
        size: input spatial size ``(H, W)`` (an int means square).
        out_size: output spatial size ``(H', W')``; default ``size``.
        bias: whether to add a learnable bias per output entry (default ``False``: in a sum of
            paths the GCONV path carries the bias).
    """

    def __init__(
        self, in_channels: int, out_channels: int, size: int | tuple[int, int],
        out_size: int | tuple[int, int] | None = None, bias: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, size, out_size)
        n_in = in_channels * GROUP_ORDER * self.size[0] * self.size[1]
        n_out = out_channels * GROUP_ORDER * self.out_size[0] * self.out_size[1]
        self.init_parameter("weight", (n_out, n_in), n_in, "fc")
        self.init_bias(bias, (n_out,), n_in, "fc")

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, 4, H, W) -> (B, C', 4, H', W')``."""
        x = self._check_input(x)
        y = F.linear(x.reshape(x.shape[0], -1), self.weight, self.bias)
        return y.reshape(x.shape[0], self.out_channels, GROUP_ORDER, *self.out_size)


class GroupFFC(_GroupDense):
    """Factored fully connected map F-FC on group feature maps (App. A, the group form of Eq. (5)),
    ``(B, C, 4, H, W) -> (B, C', 4, H', W')``.

    ``y(c', g') = Σ_c θ1(c', c, g') Σ_g x(c, g) θ2(c', c, g)`` with ``g = (r, x, y)``, i.e. the
    dense FC weight ``θ(c', c, g', g) = θ1(c', c, g') θ2(c', c, g)`` (:meth:`dense_weight`)
    applied in two contractions: first over ``g`` (``z(c', c) = Σ_g x(c, g) θ2(c', c, g)``), then
    expanded over ``g'``, in ``O(B C C' (4HW + 4H'W'))`` instead of ``O(B C C' 16 HW H'W')``.

    Parameters: ``theta1`` ``(C', C, 4, H', W')`` and ``theta2`` ``(C', C, 4, H, W)``, tagged
    ``"fc"``; and, if ``bias``, ``bias`` ``(C', 4, H', W')``, tagged ``"fc"``.

    Args:
        in_channels: ``C``.
        out_channels: ``C'``.
        size: input spatial size ``(H, W)`` (an int means square).
        out_size: output spatial size ``(H', W')``; default ``size``.
        bias: whether to add a learnable bias per output entry (default ``False``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, size: int | tuple[int, int],
        out_size: int | tuple[int, int] | None = None, bias: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, size, out_size)
        n, (h, w) = GROUP_ORDER, self.size
        # Var(θ1 θ2) summed over (c, g) is ~ 1 / fan_in with fan_in = C * 4 * H * W.
        self.init_parameter(
            "theta1", (out_channels, in_channels, n, *self.out_size), in_channels, "fc"
        )
        self.init_parameter("theta2", (out_channels, in_channels, n, h, w), n * h * w, "fc")
        self.init_bias(bias, (out_channels, n, *self.out_size), in_channels * n * h * w, "fc")

    def dense_weight(self) -> Tensor:
        """The equivalent :class:`GroupFC` weight ``(C' * 4 * H' * W', C * 4 * H * W)``.

        ``[(c', g'), (c, g)] = θ1(c', c, g') θ2(c', c, g)``; memory ``O(C C' 16 HW H'W')``, for
        checks and small layers only.
        """
        w = torch.einsum("dcpij,dcrxy->dpijcrxy", self.theta1, self.theta2)
        return w.reshape(self.theta1[:, 0].numel(), self.theta2[0].numel())

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, 4, H, W) -> (B, C', 4, H', W')``."""
        x = self._check_input(x)
        z = torch.einsum("bcrxy,dcrxy->bdc", x, self.theta2)  # Σ_g x(c, g) θ2(c', c, g)
        y = torch.einsum("dcpij,bdc->bdpij", self.theta1, z)  # Σ_c θ1(c', c, g') z(c', c)
        if self.bias is not None:
            y = y + self.bias
        return y

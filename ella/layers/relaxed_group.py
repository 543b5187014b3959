"""Relaxed C4 lifting and group convolutions (paper 003; Wang, Walters and Yu, 2022) and the
networks on density-and-velocity fields built from them.

Feature maps on the group have shape ``(B, C, 4, H, W)`` and transform by
:func:`~ella.layers.group.rotate_p4` (every map rotated in space by ``torch.rot90`` and the
rotation axis shifted cyclically), exactly as the strict layers of :mod:`ella.layers.group`.

Relaxed group convolution
-------------------------
A relaxed layer holds ``L`` filter banks ``psi_l`` and combination weights ``w_l(h)`` per group
element ``h`` (paper 003, "Relaxed G-CNN")::

    [f * Psi](g) = sum_h f(h) sum_l w_l(h) Psi_l(g^-1 h)
                 = sum_l [(w_l f) * Psi_l](g)

a sum of ordinary group convolutions of the input re-weighted per rotation. For the group
convolution (:class:`RelaxedGroupConv`) ``h`` is the input rotation, the variable of integration;
for the lifting convolution (:class:`RelaxedLiftingConv`), whose input has no rotation axis,
``w_l(r)`` weighs the filter rotated by ``r`` of the output (the template-matching picture of
the paper). When ``w_l(h)`` does not depend on ``h`` the layer is the strict group convolution
with filter ``sum_l w_l psi_l``; the weights are initialised equal (all ones), so every relaxed
layer starts exactly equivariant, and stops being so once its weights differ.
``tied=True`` stores one weight per bank, shared by the rotations: the strict G-CNN as the same
layer with the weights tied. Filters are rotated exactly with ``torch.rot90`` and the group axis
shifted with ``torch.roll``; nothing is cached, every forward builds its filters from the
current parameters (a perturbation of any weight changes the output).

Fields
------
A state of the plume task (:mod:`ella.plume`) is ``(B, 3, H, W)``: a density (a scalar field) and
a velocity (a vector field, components along dims -2 and -1). Under a quarter turn the velocity
rotates as ``(u_0, u_1) -> (-u_1, u_0)`` on the rotated grid. :func:`vector_to_regular` writes a
vector field as its components along the four directions ``M^r e_0`` (``e_0 = (1, 0)``), a group
feature map on which the quarter turn acts by :func:`rotate_p4`; :func:`regular_to_vector` maps
back by ``sum_r y_r M^r e_0``. With these, :class:`FieldGCNN` is exactly C4-equivariant on states
when its weights are tied.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ella.layers.group import (
    GROUP_ORDER,
    _check_group_map,
    _check_kernel_size,
    _check_planar_map,
    _check_positive_int,
    _circular_conv,
    _group_conv,
    rotate_p4,
)

Activation = Literal["elu", "relu"]

__all__ = [
    "Activation",
    "RelaxedLiftingConv",
    "RelaxedGroupConv",
    "relaxation_penalty",
    "equivariance_error",
    "layer_equivariance_errors",
    "vector_to_regular",
    "regular_to_vector",
    "FieldGCNN",
    "FieldCNN",
    "cnn_width_for",
]


def _init_banks(weight: Tensor, fan_in: int, banks: int) -> None:
    """``U(+-1/sqrt(fan_in * L))`` per bank, so that the sum of L banks has the usual scale."""
    bound = 1.0 / math.sqrt(fan_in * banks)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class _Relaxed(nn.Module):
    """Shared constructor: filter banks, combination weights (tied or per rotation), bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filter_shape: tuple[int, ...],
        fan_in: int,
        kernel_size: int,
        banks: int,
        tied: bool,
        bias: bool,
    ) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.out_channels = _check_positive_int(out_channels, "out_channels")
        self.kernel_size = _check_kernel_size(kernel_size)
        self.banks = _check_positive_int(banks, "banks")
        if not isinstance(tied, bool):
            raise TypeError(f"`tied` must be a bool, got {type(tied).__name__}")
        self.tied = tied
        self.weight = nn.Parameter(torch.empty(banks, out_channels, in_channels, *filter_shape))
        _init_banks(self.weight, fan_in, banks)
        # equal weights at initialisation: the layer starts exactly equivariant
        self.relaxed_weights = nn.Parameter(torch.ones(banks, 1 if tied else GROUP_ORDER))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
            with torch.no_grad():
                self.bias.uniform_(-1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))
        else:
            self.register_parameter("bias", None)

    def combination_weights(self) -> Tensor:
        """``w_l(r)`` as ``(L, 4)`` (tied weights broadcast over the rotations)."""
        return self.relaxed_weights.expand(self.banks, GROUP_ORDER)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"banks={self.banks}, tied={self.tied}, bias={self.bias is not None}"
        )


class RelaxedLiftingConv(_Relaxed):
    """Relaxed lifting convolution, planar ``(B, C, H, W)`` -> group map ``(B, C', 4, H, W)``.

    ``y(c', r, p) = b(c') + sum_l w_l(r) sum_c sum_d x(c, p + d) (R^r psi_l)(c', c, d)``,
    circular padding. With ``w_l(r) = w_l`` for all r (``tied=True``, or equal relaxed weights)
    ``layer(R x) == rotate_p4(layer(x))`` exactly.

    Parameters: ``weight`` ``(L, C', C, k, k)``, ``relaxed_weights`` ``(L, 4)`` (``(L, 1)`` when
    tied), ``bias`` ``(C',)``.

    Args:
        in_channels, out_channels: ``C``, ``C'``.
        kernel_size: odd ``k``.
        banks: the number of filter banks ``L``.
        tied: share the combination weights over rotations (the strict lifting convolution).
        bias: a learnable bias per output channel (shared over rotations).

    Raises:
        TypeError, ValueError: for non-integer or non-positive sizes, or an even kernel size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        banks: int = 2,
        *,
        tied: bool = False,
        bias: bool = True,
    ) -> None:
        k = _check_kernel_size(kernel_size)
        super().__init__(
            in_channels, out_channels, (k, k), in_channels * k * k, k, banks, tied, bias
        )

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filters ``(C' * 4, C, k, k)``: row ``c' * 4 + r`` is
        ``sum_l w_l(r) R^r psi_l(c')``."""
        w = self.combination_weights()  # (L, 4)
        rotated = torch.stack(
            [torch.rot90(self.weight, r, dims=(-2, -1)) for r in range(GROUP_ORDER)], dim=2
        )  # (L, C', 4, C, k, k)
        filt = (w[:, None, :, None, None, None] * rotated).sum(0)
        k = self.kernel_size
        return filt.reshape(self.out_channels * GROUP_ORDER, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', 4, H, W)``."""
        x = _check_planar_map(x, self.in_channels, "RelaxedLiftingConv")
        y = _circular_conv(x, self.expanded_weight())
        y = y.reshape(x.shape[0], self.out_channels, GROUP_ORDER, *y.shape[-2:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1, 1)
        return y


class RelaxedGroupConv(_Relaxed):
    """Relaxed p4 group convolution, ``(B, C, 4, H, W) -> (B, C', 4, H, W)``.

    ``y(c', r', p) = b(c') + sum_l sum_{c, r, d} w_l(r) x(c, r, p + d)
    (R^{r'} psi_l)(c', c, r - r' mod 4, d)``: the group convolution of
    :class:`~ella.layers.GroupConv` applied to the input re-weighted per input rotation by
    ``w_l(r)``, summed over the banks; circular padding. With ``w_l(r) = w_l``,
    ``layer(rotate_p4(x)) == rotate_p4(layer(x))`` exactly.

    Parameters: ``weight`` ``(L, C', C, 4, k, k)``, ``relaxed_weights`` ``(L, 4)`` (``(L, 1)``
    when tied), ``bias`` ``(C',)``.

    Args: as :class:`RelaxedLiftingConv`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        banks: int = 2,
        *,
        tied: bool = False,
        bias: bool = True,
    ) -> None:
        k = _check_kernel_size(kernel_size)
        super().__init__(
            in_channels,
            out_channels,
            (GROUP_ORDER, k, k),
            in_channels * GROUP_ORDER * k * k,
            k,
            banks,
            tied,
            bias,
        )

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filters ``(C' * 4, C * 4, k, k)``: entry ``[c' * 4 + r', c * 4 + r]``
        is ``sum_l w_l(r) R^{r'} psi_l(c', c, r - r' mod 4)``."""
        n, k = GROUP_ORDER, self.kernel_size
        blocks = [
            torch.rot90(torch.roll(self.weight, r_out, dims=3), r_out, dims=(-2, -1))
            for r_out in range(n)
        ]
        bank = torch.stack(blocks, dim=2)  # (L, C', 4 [r'], C, 4 [r], k, k)
        w = self.combination_weights()  # (L, 4 [r])
        filt = (w[:, None, None, None, :, None, None] * bank).sum(0)
        return filt.reshape(self.out_channels * n, self.in_channels * n, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, 4, H, W) -> (B, C', 4, H, W)``."""
        x = _check_group_map(x, self.in_channels, "RelaxedGroupConv")
        return _group_conv(x, self.expanded_weight(), self.bias)


def relaxation_penalty(model: nn.Module, order: int = 1) -> Tensor:
    """The regulariser on the relaxed weights: ``sum_layers sum_l sum_r |w_l(r+1) - w_l(r)|^p``
    (cyclic in r; Wang et al. 2022 use ``p = 1``). Zero exactly when every relaxed layer is
    strictly equivariant; zero for tied layers and for models without relaxed layers.

    Raises:
        ValueError: if ``order`` is not 1 or 2.
    """
    if order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2, got {order!r}")
    terms = [
        (torch.roll(m.relaxed_weights, -1, dims=1) - m.relaxed_weights).abs().pow(order).sum()
        for m in model.modules()
        if isinstance(m, _Relaxed) and not m.tied
    ]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), dtype=p.dtype if p is not None else torch.float32)
    return torch.stack(terms).sum()


# --------------------------------------------------------------------------------------------
# measured equivariance
# --------------------------------------------------------------------------------------------


def equivariance_error(layer, x: Tensor, transform_in=rotate_p4, transform_out=rotate_p4) -> float:
    """The relative equivariance error ``max_k ||f(g^k x) - g^k f(x)|| / ||f(x)||`` over the
    quarter turns k = 1, 2, 3, with ``g`` acting by ``transform_in`` on inputs and by
    ``transform_out`` on outputs (both :func:`rotate_p4` by default: planar maps are rotated in
    space, group maps also shifted along the rotation axis)."""
    with torch.no_grad():
        y = layer(x)
        norm = y.norm().clamp_min(torch.finfo(y.dtype).tiny)
        errs = [
            float((layer(transform_in(x, k)) - transform_out(y, k)).norm() / norm)
            for k in range(1, GROUP_ORDER)
        ]
    return max(errs)


def layer_equivariance_errors(model: nn.Module, x: Tensor) -> dict[str, float]:
    """The relative equivariance error of every relaxed layer of ``model``, measured on the
    inputs each layer receives when the model is applied to ``x`` (forward hooks)."""
    inputs: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            inputs.setdefault(name, args[0])

        return hook

    hooks = [
        m.register_forward_hook(keep(name))
        for name, m in model.named_modules()
        if isinstance(m, _Relaxed)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    return {name: equivariance_error(modules[name], inp) for name, inp in inputs.items()}


# --------------------------------------------------------------------------------------------
# density-and-velocity fields
# --------------------------------------------------------------------------------------------


def vector_to_regular(u: Tensor) -> Tensor:
    """A vector field ``(B, 2, H, W)`` as a group map ``(B, 1, 4, H, W)`` of its components
    along ``M^r e_0``: ``(u_0, u_1, -u_0, -u_1)``. Rotating the field (grid and components)
    is :func:`rotate_p4` of the result."""
    if u.dim() != 4 or u.shape[1] != 2:
        raise ValueError(f"`u` must have shape (B, 2, H, W), got {tuple(u.shape)}")
    return torch.stack([u[:, 0], u[:, 1], -u[:, 0], -u[:, 1]], dim=1)[:, None]


def regular_to_vector(y: Tensor) -> Tensor:
    """A group map ``(B, 1, 4, H, W)`` to the vector field ``sum_r y_r M^r e_0 = (y_0 - y_2,
    y_1 - y_3)``, ``(B, 2, H, W)``; equivariant from :func:`rotate_p4` to vector rotations."""
    y = _check_group_map(y, 1, "regular_to_vector")[:, 0]
    return torch.stack([y[:, 0] - y[:, 2], y[:, 1] - y[:, 3]], dim=1)


def _activation(name: object) -> nn.Module:
    if name not in get_args(Activation):
        raise ValueError(f"`activation` must be one of {get_args(Activation)}, got {name!r}")
    return nn.ELU() if name == "elu" else nn.ReLU()


class FieldGCNN(nn.Module):
    """A (relaxed) C4 group CNN from states ``(B, 3, H, W)`` to the next state, residually.

    Input: the density through a :class:`RelaxedLiftingConv` plus the velocity, written as a
    group map by :func:`vector_to_regular`, through a :class:`RelaxedGroupConv`; then
    ``depth - 1`` hidden :class:`RelaxedGroupConv` (a pointwise non-linearity after the input
    layer and after each hidden one); an output :class:`RelaxedGroupConv` to 2 channels: the
    mean over rotations of channel 0 is the density increment, channel 1 by
    :func:`regular_to_vector` the velocity increment; ``out = x + increment``. With
    ``tied=True``, ``model(rotate_fields(x)) == rotate_fields(model(x))`` exactly
    (:func:`ella.plume.rotate_fields`).

    Args:
        width: channels ``C`` of the hidden group maps.
        depth: number of group convolutions after the input layer (>= 1).
        banks: filter banks ``L`` of every layer.
        tied: the strict G-CNN (combination weights shared over rotations).
        kernel_size: odd filter size.
        activation: ``"elu"`` (default: smooth, so the Hessian exists everywhere, and no unit
            can die for all inputs, which stalls networks this narrow) or ``"relu"``.
    """

    def __init__(
        self, width: int = 4, depth: int = 2, banks: int = 2, *, tied: bool = False,
        kernel_size: int = 3, activation: Activation = "elu",
    ) -> None:  # fmt: skip
        super().__init__()
        _check_positive_int(depth, "depth")
        self.act = _activation(activation)
        opts = dict(kernel_size=kernel_size, banks=banks, tied=tied)
        self.lift_density = RelaxedLiftingConv(1, width, **opts)
        self.lift_velocity = RelaxedGroupConv(1, width, bias=False, **opts)
        hidden = [RelaxedGroupConv(width, width, **opts) for _ in range(depth - 1)]
        self.hidden = nn.ModuleList(hidden)
        self.out = RelaxedGroupConv(width, 2, **opts)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 3, H, W)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"`x` must be states of shape (B, 3, H, W), got {tuple(x.shape)}")
        h = self.lift_density(x[:, :1]) + self.lift_velocity(vector_to_regular(x[:, 1:]))
        h = self.act(h)
        for layer in self.hidden:
            h = self.act(layer(h))
        y = self.out(h)
        increment = torch.cat([y[:, 0].mean(1, keepdim=True), regular_to_vector(y[:, 1:])], 1)
        return x + increment


class FieldCNN(nn.Module):
    """A plain CNN with the layout of :class:`FieldGCNN`: ``depth + 1`` circular ``3 x 3``
    convolutions ``3 -> C -> ... -> C -> 3`` with the same non-linearity, residual
    (``out = x + increment``)."""

    def __init__(
        self, width: int = 8, depth: int = 2, *, kernel_size: int = 3,
        activation: Activation = "elu",
    ) -> None:  # fmt: skip
        super().__init__()
        _check_positive_int(depth, "depth")
        self.act = _activation(activation)
        k = _check_kernel_size(kernel_size)
        chans = [3] + [width] * depth + [3]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, k, padding=k // 2, padding_mode="circular")
            for a, b in zip(chans[:-1], chans[1:])
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 3, H, W)``."""
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = self.act(h)
        return x + h


def cnn_width_for(n_params: int, depth: int = 2, kernel_size: int = 3) -> int:
    """The width C of :class:`FieldCNN` whose parameter count is closest to ``n_params``."""
    best, best_gap = 1, None
    for c in range(1, 257):
        count = sum(p.numel() for p in FieldCNN(c, depth, kernel_size=kernel_size).parameters())
        gap = abs(count - n_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = c, gap
        if count > n_params:
            break
    return best

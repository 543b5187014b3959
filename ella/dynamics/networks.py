"""Networks on the density-and-velocity fields of the plume task (paper 003, "Smoke Plume": the
relaxed and the strict C4 G-CNN it compares, built from the layers of its "Relaxed G-CNN"
section, which numbers no equations): the relaxed or strict C4 group CNN :class:`FieldGCNN` and
the plain CNN :class:`FieldCNN` of equal size; and the steerable C_N CNN and its relaxed
version (rsteer) of the same experiment, :class:`FieldSteerableCNN` (sections "Steerable
G-CNN" and "Relaxed steerable G-CNN", layers of :mod:`ella.layers.steerable`).

Fields
------
A state of the plume task (:mod:`ella.dynamics.plume`) is ``(B, 3, H, W)``: a density (a
scalar field) and a velocity (a vector field, components along dims -2 and -1). Under a quarter
turn the velocity
rotates as ``(u_0, u_1) -> (-u_1, u_0)`` on the rotated grid. :func:`vector_to_regular` writes a
vector field as its components along the four directions ``M^r e_0`` (``e_0 = (1, 0)``), a group
feature map on which the quarter turn acts by :func:`rotate_p4`; :func:`regular_to_vector` maps
back by ``sum_r y_r M^r e_0``. With these, :class:`FieldGCNN` is exactly C4-equivariant on states
when its weights are tied.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ella.layers import (
    FieldType,
    RelaxedGroupConv,
    RelaxedLiftingConv,
    RelaxedSteerableConv,
    SteerableConv,
    check_feature_map,
    check_input_dtype,
    check_kernel_size,
)
from symdisc.runtime import check_bool, check_choice, check_instance, check_int

Activation = Literal["elu", "relu"]

__all__ = [
    "Activation",
    "vector_to_regular",
    "regular_to_vector",
    "FieldGCNN",
    "FieldCNN",
    "FieldSteerableCNN",
    "cnn_width_for",
]

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
    y = check_feature_map(y, "regular_to_vector", group=True, channels=1)[:, 0]
    return torch.stack([y[:, 0] - y[:, 2], y[:, 1] - y[:, 3]], dim=1)


def _check_states(x: object, module: nn.Module) -> Tensor:
    """``x`` if it is a tensor of states (B, 3, H, W) of ``module``'s floating dtype."""
    x = check_instance(x, "x", Tensor)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"`x` must be states of shape (B, 3, H, W), got {tuple(x.shape)}")
    return check_input_dtype(x, type(module).__name__, module)


def _activation(name: object) -> nn.Module:
    check_choice(name, "activation", Activation)
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
        check_int(depth, "depth", minimum=1)
        self.act = _activation(activation)
        opts = dict(kernel_size=kernel_size, banks=banks, tied=tied)
        self.lift_density = RelaxedLiftingConv(1, width, **opts)
        self.lift_velocity = RelaxedGroupConv(1, width, bias=False, **opts)
        hidden = [RelaxedGroupConv(width, width, **opts) for _ in range(depth - 1)]
        self.hidden = nn.ModuleList(hidden)
        self.out = RelaxedGroupConv(width, 2, **opts)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 3, H, W)``."""
        _check_states(x, self)
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
        check_int(width, "width", minimum=1)
        check_int(depth, "depth", minimum=1)
        self.act = _activation(activation)
        k = check_kernel_size(kernel_size)
        chans = [3] + [width] * depth + [3]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, k, padding=k // 2, padding_mode="circular")
            for a, b in zip(chans[:-1], chans[1:])
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 3, H, W)``."""
        _check_states(x, self)
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = self.act(h)
        return x + h


class FieldSteerableCNN(nn.Module):
    """A (relaxed) steerable C_N CNN from states ``(B, 3, H, W)`` to the next state, residually
    (paper 003, "Steerable G-CNN" = E2CNN and "Relaxed steerable G-CNN" = rsteer, of its smoke
    plume experiment; layers of :mod:`ella.layers.steerable`).

    Field types: the state is a ``"trivial"`` field (density) plus an ``"irrep1"`` field
    (velocity: under the quarter turn ``g = N / 4`` it rotates as ``(u_0, u_1) -> (-u_1, u_0)``,
    the convention of :func:`ella.dynamics.plume.rotate_fields`); hidden maps are ``width``
    ``"regular"`` fields (``width * N`` channels) with a pointwise non-linearity, which commutes
    with the regular representation's permutations. Layout as :class:`FieldGCNN`: an input
    convolution state -> hidden, ``depth - 1`` hidden convolutions, an output convolution
    hidden -> state type; ``out = x + increment``. With ``relaxed=False`` (and with
    ``relaxed=True`` at initialisation) ``model(rotate_fields(x)) == rotate_fields(model(x))``
    exactly.

    Args:
        width: regular fields of every hidden map.
        depth: number of convolutions after the input layer (>= 1).
        order: N, a multiple of 4 (the quarter turns must be in C_N to act on the grid).
        relaxed: use :class:`~ella.layers.RelaxedSteerableConv` (rsteer) instead of
            :class:`~ella.layers.SteerableConv`.
        kernel_size: odd filter size.
        activation: ``"elu"`` (default) or ``"relu"``.

    Raises:
        TypeError, ValueError: for arguments of the wrong type or value (the message names it).
    """

    def __init__(
        self, width: int = 4, depth: int = 2, order: int = 4, *, relaxed: bool = False,
        kernel_size: int = 3, activation: Activation = "elu",
    ) -> None:  # fmt: skip
        super().__init__()
        check_int(width, "width", minimum=1)
        check_int(depth, "depth", minimum=1)
        check_int(order, "order", minimum=4)
        if order % 4:
            raise ValueError(f"`order` must be a multiple of 4 (quarter turns in C_N), got {order}")
        self.relaxed = check_bool(relaxed, "relaxed")
        self.act = _activation(activation)
        conv = RelaxedSteerableConv if relaxed else SteerableConv
        state = FieldType(order, ("trivial", "irrep1"))
        hidden = FieldType(order, ("regular",) * width)
        self.inp = conv(state, hidden, kernel_size)
        self.hidden = nn.ModuleList(conv(hidden, hidden, kernel_size) for _ in range(depth - 1))
        self.out = conv(hidden, state, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, 3, H, W)``."""
        _check_states(x, self)
        h = self.act(self.inp(x))
        for layer in self.hidden:
            h = self.act(layer(h))
        return x + self.out(h)


def cnn_width_for(n_params: int, depth: int = 2, kernel_size: int = 3) -> int:
    """The width C of :class:`FieldCNN` whose parameter count is closest to ``n_params``.

    Raises:
        TypeError, ValueError: for a non-int or non-positive ``n_params``, ``depth`` or
            ``kernel_size`` (an even or non-positive kernel size).
    """
    check_int(n_params, "n_params", minimum=1)
    check_int(depth, "depth", minimum=1)
    check_kernel_size(kernel_size)
    best, best_gap = 1, None
    for c in range(1, 257):
        count = sum(p.numel() for p in FieldCNN(c, depth, kernel_size=kernel_size).parameters())
        gap = abs(count - n_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = c, gap
        if count > n_params:
            break
    return best

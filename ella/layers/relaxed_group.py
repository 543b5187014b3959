"""Relaxed C4 lifting and group convolutions (paper 003, section "Relaxed G-CNN", after Wang,
Walters and Yu, 2022; the paper numbers no equations: both of its formulations are below).

The networks on density-and-velocity fields built from them are in
:mod:`ella.dynamics.networks`.

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
with filter ``sum_l w_l psi_l``.

The combination weights are split into an equivariant part and the departure from it::

    w_l(r) = relaxed_weights[l] + relaxation[l, r]

``relaxed_weights`` ``(L, 1)`` (initialised to ones) and ``relaxation`` ``(L, 4)`` (initialised
to zeros), so every relaxed layer starts exactly equivariant, and its equivariance depends on
``relaxation`` only: the layer is equivariant whenever ``relaxation[l, :]`` is constant over r
(in particular at zero). ``tied=True`` has no ``relaxation`` (the attribute is ``None``): the
strict G-CNN as the same layer with the departure removed.

Prior groups (:func:`ella.laplace.prior_groups`): every relaxed layer tags its parameters
(:func:`prior_paths`): ``weight``, ``relaxed_weights`` and ``bias`` form the group
``"{layer}:gconv"``, ``relaxation`` the group ``"{layer}:relaxation"``, so that a Gaussian prior
``N(0, 1/delta I)`` on ``relaxation`` with its own precision -- a prior on the layer's
departure from equal combination weights -- is learned per layer by the marginal likelihood
(:mod:`ella.marglik`; the KFAC rules are in :mod:`ella.layers.kfac_group_rules`).

Filters are rotated exactly with ``torch.rot90`` and the group axis
shifted with ``torch.roll``; nothing is cached, every forward builds its filters from the
current parameters (a perturbation of any weight changes the output).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ella.layers._base import GROUP_ORDER, check_feature_map, check_kernel_size, uniform_
from ella.layers.group import (
    _group_conv,
    _lifting_conv,
    _rotated_shifted_stack,
    _rotated_stack,
    rotate_p4,
)
from symdisc.runtime import check_bool, check_choice, check_int

__all__ = [
    "RELAXATION_PATH",
    "prior_paths",
    "RelaxedLiftingConv",
    "RelaxedGroupConv",
    "relaxation_penalty",
    "equivariance_error",
    "layer_equivariance_errors",
]


RELAXATION_PATH = "relaxation"
"""The prior path of ``relaxation``: its own prior group ``"{layer}:relaxation"`` per layer."""


def prior_paths(module: nn.Module, path: str = "gconv") -> dict[str, str]:
    """The prior-path tags of a relaxed group layer (read by :func:`ella.layers.parameter_paths`
    and :func:`ella.laplace.prior_groups`): ``relaxation`` -> :data:`RELAXATION_PATH`, every
    other parameter (``weight``, ``relaxed_weights``, ``bias``) -> ``path``."""
    return {
        name: RELAXATION_PATH if name == "relaxation" else path
        for name, _ in module.named_parameters(recurse=False)
    }


def add_combination_weights(module: nn.Module, banks: int, order: int, tied: bool) -> None:
    """Register a relaxed layer's combination weights ``w_l(h) = relaxed_weights[l] +
    relaxation[l, h]``: the equivariant part ``relaxed_weights`` ``(L, 1)`` (ones) and the
    departure from it ``relaxation`` ``(L, |G|)`` (zeros, so the layer starts exactly
    equivariant; None when ``tied``)."""
    module.relaxed_weights = nn.Parameter(torch.ones(banks, 1))
    if tied:
        module.register_parameter("relaxation", None)
    else:
        module.relaxation = nn.Parameter(torch.zeros(banks, order))


def combine(relaxed_weights: Tensor, relaxation: Tensor | None, order: int) -> Tensor:
    """``w_l(h) = relaxed_weights[l] + relaxation[l, h]`` as ``(L, |G|)`` (no relaxation:
    ``relaxed_weights`` broadcast over the group)."""
    w = relaxed_weights.expand(relaxed_weights.shape[0], order)
    return w if relaxation is None else w + relaxation


class _Relaxed(nn.Module):
    """Shared constructor: filter banks ``weight (L, C', C, [4,] k, k)`` (the rotation axis with
    :attr:`group_input`), the equivariant combination weights ``relaxed_weights (L, 1)`` (ones),
    the departure ``relaxation (L, 4)`` (zeros; ``None`` when tied), ``bias (C',)``, and the
    prior-path tags ``paths`` (:func:`prior_paths`).

    The banks are drawn from ``U(+-1/sqrt(fan_in * L))``, so that the sum of L banks has the
    usual scale, and the bias from ``U(+-1/sqrt(fan_in))``, with the fan-in of one filter.
    """

    group_input = False

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, banks: int = 2, *,
        tied: bool = False, bias: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = k = check_kernel_size(kernel_size)
        self.banks = check_int(banks, "banks", minimum=1)
        self.tied = check_bool(tied, "tied")
        rotations = (GROUP_ORDER,) if self.group_input else ()
        fan_in = in_channels * math.prod(rotations) * k * k
        shape = (banks, out_channels, in_channels, *rotations, k, k)
        self.weight = nn.Parameter(uniform_(torch.empty(shape), fan_in * banks))
        add_combination_weights(self, banks, GROUP_ORDER, tied)
        if bias:
            self.bias = nn.Parameter(uniform_(torch.empty(out_channels), fan_in))
        else:
            self.register_parameter("bias", None)
        self.paths = prior_paths(self)

    def combination_weights(self) -> Tensor:
        """``w_l(r) = relaxed_weights[l] + relaxation[l, r]`` as ``(L, 4)`` (tied: the
        ``relaxed_weights`` broadcast over the rotations)."""
        return combine(self.relaxed_weights, self.relaxation, GROUP_ORDER)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"banks={self.banks}, tied={self.tied}, bias={self.bias is not None}, "
            f"relaxation={'none' if self.relaxation is None else tuple(self.relaxation.shape)}"
        )


class RelaxedLiftingConv(_Relaxed):
    """Relaxed lifting convolution, planar ``(B, C, H, W)`` -> group map ``(B, C', 4, H, W)``.

    ``y(c', r, p) = b(c') + sum_l w_l(r) sum_c sum_d x(c, p + d) (R^r psi_l)(c', c, d)``,
    circular padding, ``w_l(r) = relaxed_weights[l] + relaxation[l, r]``. With ``w_l(r) = w_l``
    for all r (``tied=True``, or ``relaxation`` constant over r, as at initialisation)
    ``layer(R x) == rotate_p4(layer(x))`` exactly.

    Parameters: ``weight`` ``(L, C', C, k, k)``, ``relaxed_weights`` ``(L, 1)`` (ones),
    ``relaxation`` ``(L, 4)`` (zeros; ``None`` when tied), ``bias`` ``(C',)``.

    Args:
        in_channels, out_channels: ``C``, ``C'``.
        kernel_size: odd ``k``.
        banks: the number of filter banks ``L``.
        tied: share the combination weights over rotations (the strict lifting convolution).
        bias: a learnable bias per output channel (shared over rotations).

    Raises:
        TypeError, ValueError: for non-integer or non-positive sizes, or an even kernel size.
    """

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filters ``(C' * 4, C, k, k)``: row ``c' * 4 + r`` is
        ``sum_l w_l(r) R^r psi_l(c')``."""
        w = self.combination_weights()  # (L, 4)
        rotated = _rotated_stack(self.weight, dim=2)  # (L, C', 4, C, k, k)
        filt = (w[:, None, :, None, None, None] * rotated).sum(0)
        k = self.kernel_size
        return filt.reshape(self.out_channels * GROUP_ORDER, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C', 4, H, W)``."""
        x = check_feature_map(x, "RelaxedLiftingConv", channels=self.in_channels, module=self)
        return _lifting_conv(x, self.expanded_weight(), self.bias)


class RelaxedGroupConv(_Relaxed):
    """Relaxed p4 group convolution, ``(B, C, 4, H, W) -> (B, C', 4, H, W)``.

    ``y(c', r', p) = b(c') + sum_l sum_{c, r, d} w_l(r) x(c, r, p + d)
    (R^{r'} psi_l)(c', c, r - r' mod 4, d)``: the group convolution of
    :class:`~ella.layers.GroupConv` applied to the input re-weighted per input rotation by
    ``w_l(r) = relaxed_weights[l] + relaxation[l, r]``, summed over the banks; circular
    padding. With ``w_l(r) = w_l``, ``layer(rotate_p4(x)) == rotate_p4(layer(x))`` exactly.

    Parameters: ``weight`` ``(L, C', C, 4, k, k)``, ``relaxed_weights`` ``(L, 1)`` (ones),
    ``relaxation`` ``(L, 4)`` (zeros; ``None`` when tied), ``bias`` ``(C',)``.

    Args: as :class:`RelaxedLiftingConv`.
    """

    group_input = True

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filters ``(C' * 4, C * 4, k, k)``: entry ``[c' * 4 + r', c * 4 + r]``
        is ``sum_l w_l(r) R^{r'} psi_l(c', c, r - r' mod 4)``."""
        n, k = GROUP_ORDER, self.kernel_size
        bank = _rotated_shifted_stack(self.weight, axis=3)  # (L, C', 4 [r'], C, 4 [r], k, k)
        w = self.combination_weights()  # (L, 4 [r])
        filt = (w[:, None, None, None, :, None, None] * bank).sum(0)
        return filt.reshape(self.out_channels * n, self.in_channels * n, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, 4, H, W) -> (B, C', 4, H, W)``."""
        x = check_feature_map(
            x, "RelaxedGroupConv", group=True, channels=self.in_channels, module=self
        )
        return _group_conv(x, self.expanded_weight(), self.bias)


def relaxation_penalty(model: nn.Module, order: int = 1) -> Tensor:
    """The regulariser on the combination weights: ``sum_layers sum_l sum_h |w_l(h+1) -
    w_l(h)|^p`` over the group elements h in index order (cyclic; Wang et al. 2022 use
    ``p = 1``), for the C4 layers of this module and the octahedral layers of
    :mod:`ella.layers.octahedral`. Since ``w_l(h) = relaxed_weights[l] + relaxation[l, h]``
    it is a function of ``relaxation`` alone. Zero exactly when every relaxed layer is strictly
    equivariant; zero for tied layers and for models without relaxed layers.

    Raises:
        ValueError: if ``order`` is not 1 or 2.
    """
    from ella.layers.octahedral import _OctahedralRelaxed  # imports this module

    check_choice(order, "order", (1, 2))
    terms = [
        (torch.roll(m.relaxation, -1, dims=1) - m.relaxation).abs().pow(order).sum()
        for m in model.modules()
        if isinstance(m, (_Relaxed, _OctahedralRelaxed)) and m.relaxation is not None
    ]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), dtype=p.dtype if p is not None else torch.float32)
    return torch.stack(terms).sum()


# --------------------------------------------------------------------------------------------
# measured equivariance
# --------------------------------------------------------------------------------------------


def equivariance_error(
    layer, x: Tensor, transform_in=rotate_p4, transform_out=rotate_p4, elements=None
) -> float:
    """The relative equivariance error ``max_g ||f(g x) - g f(x)|| / ||f(x)||`` over the group
    elements ``elements`` (default: the quarter turns k = 1, 2, 3), with ``g`` acting by
    ``transform_in(x, g)`` on inputs and ``transform_out(y, g)`` on outputs (both
    :func:`rotate_p4` by default: planar maps are rotated in space, group maps also shifted
    along the rotation axis)."""
    with torch.no_grad():
        y = layer(x)
        norm = y.norm().clamp_min(torch.finfo(y.dtype).tiny)
        errs = [
            float((layer(transform_in(x, g)) - transform_out(y, g)).norm() / norm)
            for g in (range(1, GROUP_ORDER) if elements is None else elements)
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

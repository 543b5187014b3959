"""Known continuous symmetries of deep feed-forward nets, layer by layer (paper 002, section 3).

A deep net ``W_L s_{L-1}(... s_1(W_1 x + b_1) ...) + b_L`` has, for every hidden layer l (width
h_l), the symmetries of the two-layer net made of the linear layers l and l + 1 around it
(paper 002, section 3, corollary C.2; section 4.1 and appendix A for the two-layer net):

* "rescaling", where ``s_l`` is positively homogeneous of degree alpha (relu, leaky_relu,
  identity): ``W_l -> diag(c_l) W_l``, ``b_l -> c_l * b_l``, ``W_{l+1} -> W_{l+1}
  diag(c_l)^{-alpha}`` for c_l in (0, inf)^{h_l}; one generator per hidden unit, tangent
  ``(+ row j of W_l and b_l[j], -alpha column j of W_{l+1})``.
* "gl", where ``s_l`` is the identity: ``W_l -> g_l W_l``, ``b_l -> g_l b_l``, ``W_{l+1} ->
  W_{l+1} g_l^{-1}`` for g_l in GL(h_l); tangent ``(A_l W_l, A_l b_l, -W_{l+1} A_l)``.

The layers' groups commute (each touches its own hidden units), so the symmetry of the net is
their product: one algebra element is the concatenation, hidden layer by hidden layer, of the
per-layer elements, c_l (h_l,) for "rescaling" (r = sum_l h_l) and A_l (h_l, h_l) flattened
row-major for "gl" (r = sum_l h_l^2). :class:`DeepNet` reads that structure off an
:class:`~symdisc.losses.MLPLoss` or off a :class:`~symdisc.losses.ModuleLoss` of an
``nn.Sequential`` of ``nn.Linear`` layers with ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Identity`` or
nothing between them; :mod:`symdisc.known.continuous` dispatches to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from symdisc.curvature import Params
from symdisc.losses import HOMOGENEOUS, MLPLoss, ModuleLoss

__all__ = ["DeepNet", "deep_net"]

_Map = Callable[[Params, Tensor, Tensor], Params]

# Modules allowed between (and around) the nn.Linear layers, and whether they are the identity.
_ELEMENTWISE: dict[type, bool] = {nn.ReLU: False, nn.LeakyReLU: False, nn.Identity: True}


@dataclass(frozen=True)
class Linear:
    """One linear layer of a deep net: the names of its weight (out, in) and bias (out,)."""

    weight: str
    bias: str | None


@dataclass(frozen=True)
class DeepNet:
    """The linear layers of a deep net and what lies between them.

    Attributes:
        kind: a description for error messages, e.g. ``"MLPLoss"``.
        layers: the L linear layers in order; weight (h_l, h_{l-1}) as ``W x`` (``nn.Linear``
            and :func:`symdisc.losses.mlp` alike).
        hidden: ``(h_1, ..., h_{L-1})``, the widths of the hidden layers.
        activations: per hidden layer, a name of its activation (e.g. ``"relu"``,
            ``"ReLU+LeakyReLU"``).
        homogeneous: per hidden layer, whether its activation is positively homogeneous of
            degree 1.
        identity: per hidden layer, whether its activation is the identity.
    """

    kind: str
    layers: tuple[Linear, ...]
    hidden: tuple[int, ...]
    activations: tuple[str, ...]
    homogeneous: tuple[bool, ...]
    identity: tuple[bool, ...]

    def rescaling_shape(self) -> tuple[int, ...]:
        """``(sum_l h_l,)``: c_1, ..., c_{L-1} concatenated."""
        return (sum(self.hidden),)

    def gl_shape(self) -> tuple[int, ...]:
        """``(sum_l h_l^2,)``: A_1, ..., A_{L-1}, each flattened row-major, concatenated."""
        return (sum(h * h for h in self.hidden),)

    def _blocks(self, element: Tensor, square: bool) -> list[Tensor]:
        out, start = [], 0
        for h in self.hidden:
            size = h * h if square else h
            block = element[start : start + size]
            out.append(block.reshape(h, h) if square else block)
            start += size
        return out

    def _around(self, element: Tensor, square: bool) -> list[tuple[Linear, Linear, Tensor]]:
        """(layer l, layer l + 1, element block l) for every hidden layer l."""
        blocks = self._blocks(element, square)
        return list(zip(self.layers[:-1], self.layers[1:], blocks, strict=True))

    def rescaling_maps(self, alpha: float) -> tuple[_Map, _Map]:
        """(tangent, action) of "rescaling" on parameter dicts; element c (sum h_l,)."""

        def tangent(p: Params, X: Tensor, c: Tensor) -> Params:
            d = {name: torch.zeros_like(v) for name, v in p.items()}
            for inc, out, cl in self._around(c, False):
                d[inc.weight] = d[inc.weight] + cl[:, None] * p[inc.weight]
                if inc.bias is not None:
                    d[inc.bias] = d[inc.bias] + cl * p[inc.bias]
                d[out.weight] = d[out.weight] - alpha * (p[out.weight] * cl[None, :])
            return d

        def action(p: Params, X: Tensor, c: Tensor) -> Params:
            q = dict(p)
            for inc, out, cl in self._around(c, False):
                q[inc.weight] = cl[:, None] * q[inc.weight]
                if inc.bias is not None:
                    q[inc.bias] = cl * q[inc.bias]
                q[out.weight] = q[out.weight] * torch.pow(cl, -alpha)[None, :]
            return q

        return tangent, action

    def gl_maps(self) -> tuple[_Map, _Map]:
        """(tangent, action) of "gl" on parameter dicts; element (sum h_l^2,), see gl_shape."""

        def tangent(p: Params, X: Tensor, A: Tensor) -> Params:
            d = {name: torch.zeros_like(v) for name, v in p.items()}
            for inc, out, Al in self._around(A, True):
                d[inc.weight] = d[inc.weight] + Al @ p[inc.weight]
                if inc.bias is not None:
                    d[inc.bias] = d[inc.bias] + Al @ p[inc.bias]
                d[out.weight] = d[out.weight] - p[out.weight] @ Al
            return d

        def action(p: Params, X: Tensor, g: Tensor) -> Params:
            q = dict(p)
            for layer, (inc, out, gl) in enumerate(self._around(g, True), 1):
                q[inc.weight] = gl @ q[inc.weight]
                if inc.bias is not None:
                    q[inc.bias] = gl @ q[inc.bias]
                where = f" (block g_{layer} of hidden layer {layer})"
                q[out.weight] = q[out.weight] @ inverse(gl, "g", where)
            return q

        return tangent, action


def inverse(g: Tensor, name: str = "g", where: str = "") -> Tensor:
    """``g^{-1}`` of a group element g (..., h, h), also of one vmapped sample.

    By ``torch.linalg.inv``, not ``solve``: the jvp of ``linalg.solve(left=False)`` gives NaN
    under nested vmap. ``inv`` reads the pivots of its LU factorisation in any case, so a
    singular g is caught here even under :func:`torch.vmap`, where a check on the values
    beforehand (:func:`symdisc.validation.check_invertible`) cannot run.

    Raises:
        ValueError: for a singular g (one element of a batch or of a vmapped batch included),
            naming ``name`` and, with ``where``, the block.
    """
    try:
        return torch.linalg.inv(g)
    except torch.linalg.LinAlgError as err:
        raise ValueError(
            f"`{name}` must be invertible, an element of GL({g.shape[-1]}){where}, got a "
            f"singular matrix ({err})"
        ) from err


def deep_net(loss: MLPLoss | ModuleLoss) -> DeepNet:
    """The :class:`DeepNet` structure of an MLPLoss or of a ModuleLoss of an ``nn.Sequential``.

    MLPLoss: weights ``W1 .. WL``; a parameter ``b{i}``, where the loss has one, is the bias of
    layer i. ModuleLoss: ``loss.model`` must be an ``nn.Sequential`` whose children are
    ``nn.Linear`` (at least two) and, between or around them, ``nn.ReLU``, ``nn.LeakyReLU`` (any
    slope) or ``nn.Identity``; every weight and bias of its linear layers must be among the
    loss's parameters (in any order: the tangents follow ``loss.param_shapes``).

    Raises:
        TypeError: if ``loss.model`` is not an ``nn.Sequential``, or holds another module
            (named with its index and type).
        ValueError: if it has fewer than two ``nn.Linear`` layers, mismatched widths, or a
            linear layer's parameter is not among the loss's parameters.
    """
    if isinstance(loss, MLPLoss):
        return _mlp_net(loss)
    return _sequential_net(loss)


def _mlp_net(loss: MLPLoss) -> DeepNet:
    layers = tuple(
        Linear(f"W{i}", f"b{i}" if f"b{i}" in loss.param_shapes else None)
        for i in range(1, loss.layers + 1)
    )
    hidden = tuple(loss.widths[1:-1])
    n = len(hidden)
    act = loss.activation
    return DeepNet(
        "MLPLoss",
        layers,
        hidden,
        (act,) * n,
        (HOMOGENEOUS.get(act) == 1.0,) * n,
        (act == "identity",) * n,
    )


def _sequential_net(loss: ModuleLoss) -> DeepNet:
    model = loss.model
    supported = "nn.Linear layers with nn.ReLU, nn.LeakyReLU, nn.Identity or nothing between them"
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"`loss.model` must be an nn.Sequential of {supported} for a known symmetry, "
            f"got {type(model).__name__}"
        )
    layers: list[Linear] = []
    widths: list[tuple[int, int]] = []
    between: list[list[str]] = [[]]  # the activation modules after each linear layer
    for index, module in model.named_children():
        if isinstance(module, nn.Linear):
            prefix = f"{index}."
            layers.append(
                Linear(prefix + "weight", prefix + "bias" if module.bias is not None else None)
            )
            widths.append((module.in_features, module.out_features))
            between.append([])
        elif type(module) in _ELEMENTWISE:
            between[-1].append(type(module).__name__)
        else:
            raise TypeError(
                f"`loss.model` must be an nn.Sequential of {supported} for a known symmetry; "
                f"module {index} is a {type(module).__name__}"
            )
    if len(layers) < 2:
        raise ValueError(
            f"`loss.model` must have at least two nn.Linear layers (a hidden layer) for a known "
            f"symmetry, got {len(layers)}"
        )
    for i in range(1, len(widths)):
        if widths[i][0] != widths[i - 1][1]:
            raise ValueError(
                f"`loss.model` linear layers must chain: {layers[i].weight} takes "
                f"{widths[i][0]} features, the layer before gives {widths[i - 1][1]}"
            )
    names = [n for layer in layers for n in (layer.weight, layer.bias) if n is not None]
    missing = [n for n in names if n not in loss.param_shapes]
    if missing:
        raise ValueError(
            f"`loss` must act on every parameter of the linear layers for a known symmetry; "
            f"{missing} are fixed (pass them, or the nn.Linear modules, in `params`)"
        )
    gaps = between[1:-1]  # after linear layers 1 .. L-1: the hidden activations
    identity = tuple(all(_ELEMENTWISE[getattr(nn, a)] for a in gap) for gap in gaps)
    return DeepNet(
        "ModuleLoss",
        tuple(layers),
        tuple(w[1] for w in widths[:-1]),
        tuple("+".join(gap) or "Identity" for gap in gaps),
        (True,) * len(gaps),
        identity,
    )

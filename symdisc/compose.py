"""Symmetries of larger networks from symmetries of their subnetworks (paper 002, section 3).

Proposition 3.1: if ``L(theta, X) = j((theta_1, f(theta_2, h(theta_1, X))), X)``, the loss sees
theta_2 only through the subnetwork f, whose input ``h(theta_1, X)`` does not depend on
theta_2. Any symmetry ``a_S(g, theta_2)`` of f then induces the symmetry

    a'_X(g, (theta_1, theta_2)) = (theta_1, a_{h(theta_1, X)}(g, theta_2))

of L, with the group axioms and loss invariance inherited. An :class:`Embedding` says where f
sits in L (which entries of L's flat theta are theta_2, in f's order, and how f's input is
computed); :class:`InducedAction` is a'. The constructors build embeddings for corollary C.1
(:func:`width_embedding`), corollary C.2 (:func:`depth_embedding`, optionally on a subset of the
units) and proposition C.3 (:func:`batch_embedding`), reading the typed fields of the kinds of loss
(:class:`~symdisc.losses.TwoLayerLoss`, :class:`~symdisc.losses.MLPLoss`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import (
    MLPLoss,
    ParamLoss,
    TanhSkipLoss,
    TwoLayerLoss,
    activation_fn,
    mlp_forward,
)
from symdisc.runtime.checks import check_float, check_instance, check_int
from symdisc.validation import check_tensor

__all__ = [
    "Embedding",
    "InducedAction",
    "width_embedding",
    "depth_embedding",
    "batch_embedding",
]


@dataclass(frozen=True)
class Embedding:
    """Where a subnetwork with loss ``small`` sits inside the loss ``big``.

    Attributes:
        small, big: the subnetwork's loss and the larger loss.
        index: (P_small,) positions in big's flat theta of the subnetwork's parameters, in the
            order of small's flat theta (theta_2 = theta_big[index]).
        context: ``h(theta_big (P,), X_big) -> X_small``, the subnetwork's input for one sample.
            It must not depend on theta_2 (:meth:`check` verifies this).
    """

    small: ParamLoss
    big: ParamLoss
    index: Tensor
    context: Callable[[Tensor, Tensor], Tensor]

    def __post_init__(self) -> None:
        check_instance(self.small, "small", ParamLoss)
        check_instance(self.big, "big", ParamLoss)
        check_instance(self.index, "index", Tensor)
        if not callable(self.context):
            raise TypeError(
                f"`context` must be callable (theta (P,), X) -> X_small, got "
                f"{type(self.context).__name__}"
            )
        n = self.small.num_params
        if self.index.shape != (n,) or self.index.dtype != torch.long:
            raise ValueError(
                f"`index` must be a LongTensor of shape ({n},), got {self.index.dtype} "
                f"{tuple(self.index.shape)}"
            )
        if (
            len(set(self.index.tolist())) != n
            or not 0 <= int(self.index.min()) <= int(self.index.max()) < self.big.num_params
        ):
            raise ValueError(
                f"`index` must hold {n} distinct positions in [0, {self.big.num_params})"
            )

    def check(self, theta: Tensor, X: Tensor, *, atol: float = 1e-10) -> float:
        """Verify Proposition 3.1's premise at samples theta (B, P), X (B, ...).

        Returns the largest ``|d context / d theta_2|``; raises ValueError if it exceeds ``atol``
        (the subnetwork's input would then move with its own parameters) or if the context does
        not have small's data shape.

        Raises:
            TypeError: for ``theta`` or ``X`` that are not floating tensors, or a non-float
                ``atol``.
            ValueError: for ``theta`` not (B, P) of big's P, ``X`` not (B, *big.x_shape) with
                the same B >= 1, a negative ``atol``, or a failed premise (above).
        """
        check_tensor(theta, "theta", ndim=2, floating=True)
        check_tensor(X, "X", floating=True)
        big = self.big
        if theta.shape[1] != big.num_params or theta.shape[0] == 0:
            raise ValueError(
                f"`theta` must be (B, {big.num_params}) parameters of `big`, B >= 1, got "
                f"{tuple(theta.shape)}"
            )
        if tuple(X.shape) != (theta.shape[0], *big.x_shape):
            raise ValueError(
                f"`X` must be (B, *big.x_shape) = {(theta.shape[0], *big.x_shape)}, got "
                f"{tuple(X.shape)}"
            )
        check_float(atol, "atol", nonnegative=True)
        ctx = torch.vmap(self.context)(theta, X)
        if tuple(ctx.shape[1:]) != tuple(self.small.x_shape):
            raise ValueError(
                f"`context` must give the subnetwork's data shape {tuple(self.small.x_shape)}, "
                f"got {tuple(ctx.shape[1:])}"
            )
        jac = torch.vmap(torch.func.jacrev(self.context))(theta, X)  # (B, *x_small, P)
        worst = float(jac[..., self.index].abs().max())
        if worst > atol:
            raise ValueError(
                f"`context` depends on the subnetwork's own parameters (|d/d theta_2| up to "
                f"{worst:.3g}); Proposition 3.1 needs h(theta_1, X)"
            )
        return worst


class InducedAction(Action):
    """The action ``a'`` of Proposition 3.1: ``a`` on theta_2 = theta[index], the rest fixed.

    ``a'_X(g, theta) = theta`` with ``theta[index] <- a_{h(theta, X)}(g, theta[index])``. Its
    infinitesimal action is the subnetwork's, scattered into the positions of theta_2, computed
    through the subnetwork action's own :meth:`~symdisc.actions.Action.tangents`.
    """

    def __init__(self, action: Action, embedding: Embedding) -> None:
        check_instance(action, "action", Action)
        check_instance(embedding, "embedding", Embedding)
        super().__init__()
        self.inner = action
        self.embedding = embedding
        self.d = action.d
        self.data_dependent = True
        self.register_buffer("index", embedding.index.clone(), persistent=False)

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        """``a'_X(g, theta)`` of one sample: theta (P,) and X of the big loss; shape checks
        only (they hold under ``torch.vmap``)."""
        big = self.embedding.big
        for name, value, shape in (("theta", theta, (big.num_params,)), ("X", X, big.x_shape)):
            if not isinstance(value, Tensor) or tuple(value.shape) != tuple(shape):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"`{name}` must be one sample of `big`, shape {tuple(shape)} (lift batches "
                    f"with torch.vmap), got {got}"
                )
        moved = self.inner(g, theta[self.index], self.embedding.context(theta, X))
        return theta.index_copy(0, self.index, moved)

    def tangents(self, h: Tensor, theta: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        ctx = torch.vmap(self.embedding.context)(theta, X)
        primal_sub, v_sub = self.inner.tangents(h, theta[:, self.index], ctx)
        primal = theta.index_copy(1, self.index, primal_sub)
        v = theta.new_zeros(theta.shape[0], h.shape[0], theta.shape[1])
        return primal, v.index_copy(2, self.index, v_sub)


def _flat_positions(loss: ParamLoss) -> dict[str, Tensor]:
    """Flat positions in theta of every entry of every parameter, shaped like the parameter."""
    out, start = {}, 0
    for name, shape in loss.param_shapes.items():
        size = int(torch.Size(shape).numel())
        out[name] = torch.arange(start, start + size).reshape(shape)
        start += size
    return out


def _check_units(units: Sequence[int], width: int, count: int) -> Tensor:
    if isinstance(units, (str, Tensor)) or not isinstance(units, (Sequence, range)):
        raise TypeError(f"`units` must be a list of ints, got {type(units).__name__}")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in units):
        raise TypeError(f"`units` must hold ints (hidden-unit indices), got {list(units)!r}")
    u = torch.as_tensor(list(units), dtype=torch.long)
    if (
        u.numel() != count
        or len(set(u.tolist())) != count
        or bool((u < 0).any() | (u >= width).any())
    ):
        raise ValueError(
            f"`units` must be {count} distinct hidden units in [0, {width}), got {list(units)}"
        )
    return u


def _same(what: str, a: object, b: object) -> None:
    if a != b:
        raise ValueError(
            f"the small and the big network must have the same {what}, got {a} and {b}"
        )


# The kinds of loss whose X (n, k) holds k data points as columns, each seen pointwise.
_COLUMN_LOSSES = (TwoLayerLoss, TanhSkipLoss, MLPLoss)
_BASE_FIELDS = {f.name for f in fields(ParamLoss)}


def _architecture(loss: ParamLoss) -> dict[str, object]:
    """The typed fields of a kind of loss (activation, widths, ...), without name and shapes."""
    return {f.name: getattr(loss, f.name) for f in fields(loss) if f.name not in _BASE_FIELDS}


def width_embedding(small: TwoLayerLoss, big: TwoLayerLoss, units: Sequence[int]) -> Embedding:
    """Corollary C.1: a two-layer net of width h inside one of width h' > h, on ``units``.

    ``L_big = ||W2 s(W1 X) - Y||^2`` splits into the h chosen hidden units and the rest; the
    chosen ones form the small net (W1[units], b1[units], W2[:, units], and b2), whose output
    the rest only adds to. Its input is the data itself.

    Raises:
        TypeError: if ``small`` or ``big`` is not a :class:`~symdisc.losses.TwoLayerLoss`.
        ValueError: if the nets differ in activation, biases, m, n or k, or ``units`` is not h
            distinct hidden units of the big net.
    """
    check_instance(small, "small", TwoLayerLoss)
    check_instance(big, "big", TwoLayerLoss)
    _same("activation", small.activation, big.activation)
    _same("biases", small.bias, big.bias)
    _same("data shapes", (small.x_shape, small.y_shape), (big.x_shape, big.y_shape))
    u = _check_units(units, big.h, small.h)
    pos = _flat_positions(big)
    parts = []
    for name in small.param_shapes:  # the chosen units of each hidden axis, the rest whole
        block = pos[name]
        for axis in big.hidden_axes.get(name, ()):
            block = block.index_select(axis, u)
        parts.append(block.reshape(-1))
    return Embedding(small, big, torch.cat(parts), lambda theta, X: X)


def depth_embedding(
    small: TwoLayerLoss, deep: MLPLoss, layer: int, units: Sequence[int] | None = None
) -> Embedding:
    """Corollary C.2 (with C.1 for ``units``): a two-layer block inside a deep :func:`mlp`.

    The block is layers ``layer`` and ``layer + 1`` (1-based): ``W_{layer+1} s(W_layer phi)``
    with ``phi = s(W_{layer-1} ... s(W_1 X))``, the activations the earlier layers compute from
    theta_1 and X; on ``units`` (default: all) of its hidden layer. The small net is
    ``two_layer(s, m, h, n, k)`` with n, h, m the block's widths.

    Raises:
        TypeError: if ``deep`` is not an :class:`~symdisc.losses.MLPLoss`, ``small`` not a
            :class:`~symdisc.losses.TwoLayerLoss`, or ``layer`` not an int.
        ValueError: if the layer is out of range, ``small`` has biases, or the widths,
            activation or batch size do not match.
    """
    check_instance(deep, "deep", MLPLoss)
    check_instance(small, "small", TwoLayerLoss)
    widths, L = deep.widths, deep.layers
    if not 1 <= check_int(layer, "layer") < L:
        raise ValueError(f"`layer` must be in [1, {L - 1}] for a {L}-layer network, got {layer!r}")
    _same("activation", small.activation, deep.activation)
    if small.bias:
        raise ValueError("`small` must be a two-layer net without biases, got bias=True")
    u = _check_units(range(small.h) if units is None else units, widths[layer], small.h)
    _same(
        "block shape (n, m, k)",
        (small.n, small.m, small.k),
        (widths[layer - 1], widths[layer + 1], deep.x_shape[1]),
    )
    pos = _flat_positions(deep)
    index = torch.cat([pos[f"W{layer}"][u].reshape(-1), pos[f"W{layer + 1}"][:, u].reshape(-1)])
    act = activation_fn(deep.activation)

    def context(theta: Tensor, X: Tensor) -> Tensor:
        if layer == 1:
            return X
        return act(mlp_forward(deep.unflatten(theta), X, act, layer - 1))

    return Embedding(small, deep, index, context)


def batch_embedding(small: ParamLoss, big: ParamLoss, *, seed: int = 0) -> Embedding:
    """Proposition C.3: an action for batches of k data points serves batches of k' < k.

    ``small`` is the net the action was found for (k columns of data), ``big`` the same net on
    k' columns; the context appends k - k' fixed data points (standard Gaussian, seeded) to the
    batch. theta_2 is the whole of theta. Both are the same kind of column-batched loss: a
    :class:`~symdisc.losses.TwoLayerLoss`, :class:`~symdisc.losses.TanhSkipLoss` or
    :class:`~symdisc.losses.MLPLoss`.

    Raises:
        TypeError: if a net is not of those kinds.
        ValueError: if the nets differ in kind or anything but k, or k' >= k.
    """
    check_instance(small, "small", _COLUMN_LOSSES)
    check_instance(big, "big", _COLUMN_LOSSES)
    _same("kind of loss", type(small).__name__, type(big).__name__)
    _same("parameters", small.param_shapes, big.param_shapes)
    _same("architecture", _architecture(small), _architecture(big))
    (n, k), (n_big, k_big) = small.x_shape, big.x_shape
    _same("input width", n, n_big)
    if not k_big < k:
        raise ValueError(f"`big` must have fewer data points than `small` ({k}), got {k_big}")
    check_int(seed, "seed", minimum=0)
    pad = torch.randn(n, k - k_big, generator=torch.Generator().manual_seed(seed))

    def context(theta: Tensor, X: Tensor) -> Tensor:
        return torch.cat([X, pad.to(X)], dim=1)

    return Embedding(small, big, torch.arange(big.num_params), context)

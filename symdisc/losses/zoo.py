"""The small networks of paper 002's experiments, each its own kind of loss.

* :func:`two_layer` -> :class:`TwoLayerLoss`: ``||W2 s(W1 X) - Y||^2`` (section 4.1, Figs. 2
  and 5; section 4.2, Fig. 3; the net of corollary C.1), optionally with biases and a
  cross-entropy output (the softmax logit shift of appendix A).
* :func:`three_layer_tanh_skip` -> :class:`TanhSkipLoss`: the three-layer tanh network with a
  skip connection of section 4.2 (Fig. 4).

X (n, k) holds k data points as columns, Y (m, k) their targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from symdisc.curvature import Params
from symdisc.losses.activations import Activation, activation_fn
from symdisc.losses.base import ParamLoss
from symdisc.runtime.checks import check_bool, check_choice, check_int

__all__ = ["Output", "TanhSkipLoss", "TwoLayerLoss", "three_layer_tanh_skip", "two_layer"]

Output = Literal["mse", "cross_entropy"]


@dataclass(frozen=True)
class TwoLayerLoss(ParamLoss):
    """``L = ||W2 s(W1 X [+ b1]) [+ b2] - Y||^2`` or its softmax cross-entropy (:func:`two_layer`).

    Parameters W1 (h, n), W2 (m, h) and, with ``bias``, b1 (h,), b2 (m,), in this order in theta;
    X (n, k), Y (m, k).

    Attributes:
        activation: s, one of :data:`~symdisc.losses.activations.Activation`.
        bias: whether the layers carry biases b1, b2.
        output: ``"mse"`` (squared error) or ``"cross_entropy"`` (softmax over each column).
        h: the hidden width.
    """

    activation: Activation
    bias: bool
    output: Output
    h: int

    @property
    def hidden_axes(self) -> dict[str, tuple[int, ...]]:
        """The axes of each parameter that index the h hidden units (rows of W1 and b1, columns
        of W2): where a permutation, sign flip or choice of hidden units acts."""
        axes = {"W1": (0,), "W2": (1,)}
        if self.bias:
            axes["b1"] = (0,)
        return axes

    @property
    def n(self) -> int:
        """The input width."""
        return self.x_shape[0]

    @property
    def k(self) -> int:
        """The number of data points per sample."""
        return self.x_shape[1]

    @property
    def m(self) -> int:
        """The output width."""
        return self.y_shape[0]


@dataclass(frozen=True)
class TanhSkipLoss(ParamLoss):
    """``L = ||W3 (tanh(W2 H1) + H1) - Y||^2``, ``H1 = tanh(W1 X)`` (:func:`three_layer_tanh_skip`).

    Parameters W1 (h, n), W2 (h, h), W3 (m, h); X (n, k), Y (m, k).

    Attributes:
        h: the width of both hidden layers (the skip connection ties them).
    """

    activation: ClassVar[Activation] = "tanh"
    h: int

    @property
    def hidden_axes(self) -> dict[str, tuple[int, ...]]:
        """The axes of each parameter that index the h hidden units: rows of W1, rows and
        columns of W2 (the skip connection ties the two hidden layers), columns of W3."""
        return {"W1": (0,), "W2": (0, 1), "W3": (1,)}


def two_layer(
    activation: Activation = "identity",
    m: int = 1,
    h: int = 1,
    n: int = 1,
    k: int = 1,
    *,
    bias: bool = False,
    output: Output = "mse",
) -> TwoLayerLoss:
    """``L(W1, W2, X, Y) = ||W2 s(W1 X) - Y||^2`` (paper 002, section 4.1).

    Shapes: W1 (h, n), W2 (m, h), X (n, k), Y (m, k); with ``bias``, ``s(W1 X + b1)`` and
    ``+ b2`` with b1 (h,), b2 (m,). ``output="cross_entropy"`` replaces the squared error by the
    softmax cross-entropy of the columns of ``W2 s(W1 X) + b2`` against the target distributions
    in the columns of Y (the loss of the softmax logit-shift symmetry).

    Raises:
        TypeError: for a non-int width or a non-bool ``bias``.
        ValueError: for a width below 1, or an unknown ``activation`` or ``output``.
    """
    for name, width in dict(m=m, h=h, n=n, k=k).items():
        check_int(width, name, minimum=1)
    act = activation_fn(activation)
    check_bool(bias, "bias")
    check_choice(output, "output", Output)
    shapes: dict[str, tuple[int, ...]] = {"W1": (h, n), "W2": (m, h)}
    if bias:
        shapes.update(b1=(h,), b2=(m,))

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        pre = p["W1"] @ X + (p["b1"][:, None] if bias else 0.0)
        out = p["W2"] @ act(pre) + (p["b2"][:, None] if bias else 0.0)
        if output == "mse":
            return ((out - Y) ** 2).sum()
        return -(Y * torch.log_softmax(out, dim=0)).sum()

    tag = "b" if bias else ""
    name = f"two_layer_{activation}{tag}_m{m}h{h}n{n}k{k}" + ("_ce" if output != "mse" else "")
    return TwoLayerLoss(name, fn, shapes, (n, k), (m, k), activation, bias, output, h)


def three_layer_tanh_skip(n: int = 2, h: int = 2, m: int = 1, k: int = 1) -> TanhSkipLoss:
    """The three-layer tanh network with a skip connection of paper 002, section 4.2 (Fig. 4).

    ``H1 = tanh(W1 X)``, ``H2 = tanh(W2 H1) + H1`` (the skip around the second layer), and
    ``L = ||W3 H2 - Y||^2``; W1 (h, n), W2 (h, h), W3 (m, h), X (n, k), Y (m, k). The defaults are
    the paper's sizes (W1, W2 in R^{2x2}, W3 in R^{2x1}, a 2-dimensional input, a scalar target).

    Raises:
        TypeError: for a non-int width.
        ValueError: for a width below 1.
    """
    for name, width in dict(m=m, h=h, n=n, k=k).items():
        check_int(width, name, minimum=1)
    shapes = {"W1": (h, n), "W2": (h, h), "W3": (m, h)}

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        h1 = torch.tanh(p["W1"] @ X)
        h2 = torch.tanh(p["W2"] @ h1) + h1
        return ((p["W3"] @ h2 - Y) ** 2).sum()

    return TanhSkipLoss(f"tanh_skip_m{m}h{h}n{n}k{k}", fn, shapes, (n, k), (m, k), h)

"""The loss zoo: pure losses ``L(params, X, Y)`` of one sample, with the shapes they expect.

A :class:`ParamLoss` is the object symmetry discovery works on (paper 002, section 2): a loss of
parameters ``theta`` and one data sample ``(X, Y)``, where X holds k data points as columns. The
discovery code moves parameters as one flat vector theta (P,) per sample; :meth:`ParamLoss.flat`
evaluates the loss on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from symdisc.curvature import Params, flatten, unflatten

Activation = Literal["identity", "relu", "leaky_relu", "sigmoid", "tanh"]
LEAKY_SLOPE = 0.1

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "ParamLoss",
    "two_layer",
    "three_layer_tanh_skip",
    "activation_fn",
]


def _leaky_relu(z: Tensor) -> Tensor:
    return F.leaky_relu(z, LEAKY_SLOPE)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda z: z,
    "relu": torch.relu,
    "leaky_relu": _leaky_relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    """The elementwise activation called ``name`` (one of :data:`Activation`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {get_args(Activation)}, got {name!r}")
    return ACTIVATIONS[name]


@dataclass(frozen=True)
class ParamLoss:
    """A pure loss of parameters and one data sample, with the shapes it expects.

    Attributes:
        name: a short identifier, e.g. ``"two_layer_relu_m1h3n1k1"``.
        fn: ``fn(params, X, Y) -> scalar`` for one sample; ``params`` is ``dict[str, Tensor]``.
        param_shapes: the shape of every parameter, in the order of the flat vector theta.
        x_shape, y_shape: shapes of one sample's X and Y.
        activation: the activation between the layers, where there is one.
        bias: whether the layers carry biases.
    """

    name: str
    fn: Callable[[Params, Tensor, Tensor], Tensor]
    param_shapes: dict[str, tuple[int, ...]]
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    activation: str | None = None
    bias: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        """P, the length of the flat parameter vector."""
        return sum(int(torch.Size(s).numel()) for s in self.param_shapes.values())

    def _like(self, theta: Tensor) -> Params:
        return {k: theta.new_empty(s) for k, s in self.param_shapes.items()}

    def unflatten(self, theta: Tensor) -> Params:
        """The parameter dict of a flat theta (..., P)."""
        return unflatten(theta, self._like(theta))

    def flatten(self, params: Params) -> Tensor:
        """The flat theta (P,) of a parameter dict."""
        return flatten({k: params[k] for k in self.param_shapes})

    def flat(self, theta: Tensor, X: Tensor, Y: Tensor) -> Tensor:
        """The loss of one sample at a flat theta (P,)."""
        return self.fn(self.unflatten(theta), X, Y)

    def __call__(self, params: Params, X: Tensor, Y: Tensor) -> Tensor:
        return self.fn(params, X, Y)


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def two_layer(
    activation: Activation = "identity",
    m: int = 1,
    h: int = 1,
    n: int = 1,
    k: int = 1,
    *,
    bias: bool = False,
    output: Literal["mse", "cross_entropy"] = "mse",
) -> ParamLoss:
    """``L(W1, W2, X, Y) = ||W2 s(W1 X) - Y||^2`` (paper 002, section 4.1).

    Shapes: W1 (h, n), W2 (m, h), X (n, k), Y (m, k); with ``bias``, ``s(W1 X + b1)`` and
    ``+ b2`` with b1 (h,), b2 (m,). ``output="cross_entropy"`` replaces the squared error by the
    softmax cross-entropy of the columns of ``W2 s(W1 X) + b2`` against the target distributions
    in the columns of Y (the loss of the softmax logit-shift symmetry).
    """
    _check_dims(m=m, h=h, n=n, k=k)
    act = activation_fn(activation)
    if output not in ("mse", "cross_entropy"):
        raise ValueError(f"`output` must be 'mse' or 'cross_entropy', got {output!r}")
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
    return ParamLoss(name, fn, shapes, (n, k), (m, k), activation, bias, {"output": output})


def three_layer_tanh_skip(n: int = 2, h: int = 2, m: int = 1, k: int = 1) -> ParamLoss:
    """The three-layer tanh network with a skip connection of paper 002, section 4.2 (Fig. 4).

    ``H1 = tanh(W1 X)``, ``H2 = tanh(W2 H1) + H1`` (the skip around the second layer), and
    ``L = ||W3 H2 - Y||^2``; W1 (h, n), W2 (h, h), W3 (m, h), X (n, k), Y (m, k). The defaults are
    the paper's sizes (W1, W2 in R^{2x2}, W3 in R^{2x1}, a 2-dimensional input, a scalar target).
    """
    _check_dims(m=m, h=h, n=n, k=k)
    shapes = {"W1": (h, n), "W2": (h, h), "W3": (m, h)}

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        h1 = torch.tanh(p["W1"] @ X)
        h2 = torch.tanh(p["W2"] @ h1) + h1
        return ((p["W3"] @ h2 - Y) ** 2).sum()

    return ParamLoss(f"tanh_skip_m{m}h{h}n{n}k{k}", fn, shapes, (n, k), (m, k), "tanh")

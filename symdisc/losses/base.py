"""The loss a symmetry is sought for: a pure ``L(params, X, Y)`` of one sample and its shapes.

Paper 002, section 2: a parameter-space symmetry is a (data-dependent) group action
``a_X(g, theta)`` with ``L(a_X(g, theta), X) = L(theta, X)``. :class:`ParamLoss` is that L, with
the shapes of its parameters and of one data sample; the typed kinds of the loss zoo
(:mod:`symdisc.losses.zoo`, :mod:`symdisc.losses.deep`, :mod:`symdisc.losses.module`) subclass
it with fields that say what network they are, and :mod:`symdisc.known` dispatches on their type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from symdisc.curvature import Params, flatten, unflatten

__all__ = ["ParamLoss"]


@dataclass(frozen=True)
class ParamLoss:
    """A pure loss of parameters and one data sample, with the shapes it expects.

    The discovery code moves parameters as one flat vector theta (P,) per sample;
    :meth:`flat` evaluates the loss on it.

    Attributes:
        name: a short identifier, e.g. ``"two_layer_relu_m1h3n1k1"``.
        fn: ``fn(params, X, Y) -> scalar`` for one sample; ``params`` is ``dict[str, Tensor]``.
        param_shapes: the shape of every parameter, in the order of the flat vector theta.
        x_shape, y_shape: shapes of one sample's X and Y.
    """

    name: str
    fn: Callable[[Params, Tensor, Tensor], Tensor]
    param_shapes: dict[str, tuple[int, ...]]
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

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
        """The loss of one sample at a flat theta (P,), X of ``x_shape`` and Y of ``y_shape``.

        Raises:
            TypeError: for an argument that is not a tensor.
            ValueError: for an argument of another shape (naming it, the shape this loss
                expects and the shape that came; lift batches with ``torch.vmap``).
        """
        for name, value, shape in (
            ("theta", theta, (self.num_params,)),
            ("X", X, tuple(self.x_shape)),
            ("Y", Y, tuple(self.y_shape)),
        ):
            if not isinstance(value, Tensor):
                raise TypeError(f"`{name}` must be a Tensor, got {type(value).__name__}")
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"`{name}` must be one sample of shape {shape} for the loss {self.name!r} "
                    f"(lift batches with torch.vmap), got {tuple(value.shape)}"
                )
        return self.fn(self.unflatten(theta), X, Y)

    def __call__(self, params: Params, X: Tensor, Y: Tensor) -> Tensor:
        return self.fn(params, X, Y)

"""Deep bias-free networks ``||W_L s(... s(W_1 X)) - Y||^2`` (paper 002, section 3).

The larger networks of corollary C.2, into whose blocks :func:`symdisc.compose.depth_embedding`
lifts the symmetries of a two-layer net.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from symdisc.curvature import Params
from symdisc.losses.activations import Activation, activation_fn
from symdisc.losses.base import ParamLoss
from symdisc.runtime.checks import check_int

__all__ = ["MLPLoss", "mlp", "mlp_forward"]


@dataclass(frozen=True)
class MLPLoss(ParamLoss):
    """``L = ||W_L s(W_{L-1} ... s(W_1 X)) - Y||^2`` without biases (:func:`mlp`).

    Parameters W1 .. WL, ``W_i`` of shape (widths[i], widths[i-1]); X (widths[0], k),
    Y (widths[-1], k).

    Attributes:
        activation: s, after every layer but the last.
        widths: ``(n, h_1, ..., h_{L-1}, m)``.
    """

    activation: Activation
    widths: tuple[int, ...]

    @property
    def layers(self) -> int:
        """L, the number of weight matrices."""
        return len(self.widths) - 1


def mlp(activation: Activation, widths: Sequence[int], k: int = 1) -> MLPLoss:
    """A deep network ``||W_L s(W_{L-1} ... s(W_1 X)) - Y||^2`` without biases.

    ``widths = (n, h_1, ..., h_{L-1}, m)``; W_i has shape (widths[i], widths[i-1]), X (n, k),
    Y (m, k). The activation follows every layer but the last. The larger networks of paper 002,
    section 3 (corollary C.2) are of this form.

    Raises:
        TypeError: for a non-int width or k.
        ValueError: for fewer than three widths, a width or k below 1, or an unknown activation.
    """
    widths = list(widths)
    if len(widths) < 3:
        raise ValueError(
            f"`widths` must list at least an input, a hidden and an output width, got {widths}"
        )
    check_int(k, "k", minimum=1)
    for i, w in enumerate(widths):
        check_int(w, f"widths[{i}]", minimum=1)
    act = activation_fn(activation)
    shapes = {f"W{i}": (widths[i], widths[i - 1]) for i in range(1, len(widths))}

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        return ((mlp_forward(p, X, act, len(widths) - 1) - Y) ** 2).sum()

    name = f"mlp_{activation}_{'-'.join(map(str, widths))}_k{k}"
    return MLPLoss(name, fn, shapes, (widths[0], k), (widths[-1], k), activation, tuple(widths))


def mlp_forward(p: Params, X: Tensor, act: Callable[[Tensor], Tensor], layers: int) -> Tensor:
    """``W_layers s(... s(W_1 X))``: the first ``layers`` layers of :func:`mlp`, with the
    activation after every layer but the last one applied.

    Shapes: X (widths[0], k) -> (widths[layers], k).
    """
    out = X
    for i in range(1, layers + 1):
        out = p[f"W{i}"] @ out
        if i < layers:
            out = act(out)
    return out

"""The elementwise activations of the loss zoo and the properties its symmetries rest on.

Paper 002, section 4.1 and appendix A: positive homogeneity ``s(c z) = c^alpha s(z)`` (c > 0)
gives the rescaling symmetry, invertibility the data-dependent GL action of section 4.2, oddness
``s(-z) = -s(z)`` the sign flips. :func:`activation_derivative` and :func:`activation_inverse`
serve the data-dependent action ``s^{-1}(g s(W1 X))``. All functions are elementwise on tensors
of any shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from symdisc.runtime.checks import check_choice

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "HOMOGENEOUS",
    "INVERTIBLE",
    "LEAKY_SLOPE",
    "ODD",
    "activation_derivative",
    "activation_fn",
    "activation_inverse",
]

Activation = Literal["identity", "relu", "leaky_relu", "sigmoid", "tanh"]
LEAKY_SLOPE = 0.1

# Degree alpha of positive homogeneity, s(c z) = c^alpha s(z) for c > 0.
HOMOGENEOUS: dict[str, float] = {"identity": 1.0, "relu": 1.0, "leaky_relu": 1.0}
INVERTIBLE: tuple[str, ...] = ("identity", "leaky_relu", "sigmoid", "tanh")
ODD: tuple[str, ...] = ("identity", "tanh")


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
    """The elementwise activation called ``name`` (one of :data:`Activation`).

    Raises:
        ValueError: for another name.
    """
    return ACTIVATIONS[check_choice(name, "activation", Activation)]


def activation_derivative(name: str, z: Tensor, s: Tensor) -> Tensor:
    """s'(z) of an :data:`INVERTIBLE` activation, given also s = s(z); shape of z."""
    if name == "identity":
        return torch.ones_like(z)
    if name == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))
    if name == "sigmoid":
        return s * (1 - s)
    return 1 - s * s


def activation_inverse(name: str, y: Tensor) -> Tensor:
    """s^{-1}(y) of an :data:`INVERTIBLE` activation, for y in the range of s; shape of y."""
    if name == "identity":
        return y
    if name == "leaky_relu":
        return torch.where(y >= 0, y, y / LEAKY_SLOPE)
    if name == "sigmoid":
        return torch.logit(y)
    return torch.atanh(y)

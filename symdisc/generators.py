"""Learnable Lie algebra elements: k generators of gl(d)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Generators"]


class Generators(nn.Module):
    """k learnable elements ``h_1..h_k`` of gl(d), stored as a (k, d, d) parameter.

    Args:
        k: number of generators.
        d: the algebra is gl(d), the d x d real matrices.
        init_scale: standard deviation of the Gaussian initialisation.
        seed: seed of the initialisation.
    """

    def __init__(self, k: int, d: int, *, init_scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        for name, v in (("k", k), ("d", d)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}")
        g = torch.Generator().manual_seed(seed)
        self.h = nn.Parameter(init_scale * torch.randn(k, d, d, generator=g))

    @property
    def k(self) -> int:
        return self.h.shape[0]

    @property
    def d(self) -> int:
        return self.h.shape[1]

    def forward(self) -> Tensor:
        """The generators, (k, d, d)."""
        return self.h

    def exp(self, t: Tensor) -> Tensor:
        """Group elements ``exp(t_i h_j)``: t (..., k) -> (..., k, d, d)."""
        return torch.linalg.matrix_exp(t[..., None, None] * self.h)

"""Learnable Lie algebra elements: k generators h_1..h_k of gl(d) (paper 002, section 4, eq. 4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from symdisc.runtime.checks import check_float, check_int
from symdisc.validation import check_tensor

__all__ = ["Generators"]


class Generators(nn.Module):
    """k learnable elements ``h_1..h_k`` of gl(d), stored as a (k, d, d) parameter.

    Args:
        k: number of generators.
        d: the algebra is gl(d), the d x d real matrices.
        init_scale: standard deviation of the Gaussian initialisation.
        seed: seed of the initialisation.

    Raises:
        TypeError: for a non-int ``k``, ``d`` or ``seed``, or a non-real ``init_scale``.
        ValueError: for ``k`` or ``d`` below 1, a negative seed or an ``init_scale`` that is
            not positive and finite.
    """

    def __init__(self, k: int, d: int, *, init_scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        check_int(k, "k", minimum=1)
        check_int(d, "d", minimum=1)
        check_float(init_scale, "init_scale", positive=True)
        check_int(seed, "seed", minimum=0)
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
        check_tensor(t, "t", floating=True)
        if t.ndim == 0 or t.shape[-1] != self.k:
            raise ValueError(
                f"`t` must be (..., {self.k}), one per generator, got {tuple(t.shape)}"
            )
        return torch.linalg.matrix_exp(t[..., None, None] * self.h)

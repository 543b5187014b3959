"""Random probes drawn through an explicit generator, reproducibly on CPU and usable on CUDA.

Infrastructure of the shared curvature layer (no equation of the papers).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Distribution = Literal["rademacher", "gaussian"]
SeedLike = torch.Generator | int | None

__all__ = ["Distribution", "SeedLike", "as_generator", "random_probes"]


def as_generator(seed: SeedLike) -> torch.Generator | None:
    """A ``torch.Generator`` from a seed, a generator, or ``None`` (torch's global generator)."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`generator` must be a torch.Generator, an int seed or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def random_probes(
    shape: tuple[int, ...],
    distribution: Distribution,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Probe vectors with E[v v^T] = I: Rademacher (+-1) or standard Gaussian entries.

    Drawn on the generator's device (CPU by default) and moved to ``device``, so one seed gives
    the same probes whether the operator lives on CPU or CUDA.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if distribution == "rademacher":
        draw = torch.randint(0, 2, shape, generator=generator, device=gen_device)
        out = draw.to(dtype) * 2 - 1
    elif distribution == "gaussian":
        out = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    else:
        raise ValueError(f"`distribution` must be 'rademacher' or 'gaussian', got {distribution!r}")
    return out.to(device)

"""The 2-D toy data of paper 001 (section 5.1, appendix B.4): points on arcs made by a soft
rotational invariance about the origin, labelled by radius band and arc."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from symdisc.runtime import check_float, check_instance, check_int

__all__ = ["rotation_toy"]


def rotation_toy(
    n: int,
    seed: int,
    *,
    n_sectors: int = 2,
    n_rings: int = 2,
    n_classes: int = 2,
    max_angle_deg: float = 60.0,
    radius: tuple[float, float] = (0.5, 2.0),
    jitter_deg: float = 2.0,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """2-D points with a soft ``+-max_angle_deg`` rotational invariance about the origin.

    Every point picks a sector s (of ``n_sectors``, base direction ``2 pi s / n_sectors``,
    jittered by N(0, jitter_deg^2)) and a radius r ~ U[radius], and is rotated about the origin
    by U[-max, max] degrees. With the default 2 sectors and 60 degrees the two arcs of 120
    degrees are separated by gaps of 60 degrees; with 3 sectors they would tile the circle, and
    a rotation of a point near an arc's end would carry it into the next arc, whose label
    differs, so the largest label-preserving extent would be smaller than the generating one
    (measured: the full-GGN LILA then learns 37-41 degrees, the KFAC one 60-64). The label
    is ``(ring + s) mod n_classes`` with ``ring`` the index of r among ``n_rings`` equal bands:
    within an arc it depends on the radius only (a rotation-invariant rule that a
    non-invariant network must learn as curved boundaries), and it changes from one arc to the
    next (so that a rotation much beyond the arc's half-width mixes the classes).

    Returns:
        ``(x (n, 2), y (n,))``, x of ``dtype``, y int64; the same seed gives the same points.

    Raises:
        TypeError: for an ``n``, ``seed``, ``n_sectors``, ``n_rings`` or ``n_classes`` that is
            not an int, a ``max_angle_deg`` or ``jitter_deg`` that is not a real number, a
            ``radius`` that is not a tuple or list of real numbers, or a ``dtype`` that is not a
            ``torch.dtype``.
        ValueError: for ``n``, ``n_sectors`` or ``n_rings`` below 1, ``n_classes`` below 2, a
            negative or non-finite angle, a ``radius`` not of two finite numbers with
            ``0 <= min < max``, or a ``dtype`` that is not a floating dtype.
    """
    check_int(n, "n", minimum=1)
    check_int(seed, "seed")
    check_int(n_sectors, "n_sectors", minimum=1)
    check_int(n_rings, "n_rings", minimum=1)
    check_int(n_classes, "n_classes", minimum=2)
    max_angle_deg = check_float(max_angle_deg, "max_angle_deg", nonnegative=True)
    jitter_deg = check_float(jitter_deg, "jitter_deg", nonnegative=True)
    if not isinstance(radius, (tuple, list)):
        raise TypeError(f"`radius` must be a pair (min, max) of floats, got {radius!r}")
    if len(radius) != 2:
        raise ValueError(f"`radius` must be a pair (min, max) of floats, got {radius!r}")
    lo, hi = (check_float(v, f"radius[{i}]") for i, v in enumerate(radius))
    if not 0 <= lo < hi:
        raise ValueError(f"`radius` must be (min, max) with 0 <= min < max, got {radius!r}")
    check_instance(dtype, "dtype", torch.dtype)
    if not dtype.is_floating_point:
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype}")
    g = torch.Generator().manual_seed(seed)
    sector = torch.randint(0, n_sectors, (n,), generator=g)
    r = lo + (hi - lo) * torch.rand(n, generator=g, dtype=dtype)
    ring = ((r - lo) / ((hi - lo) / n_rings)).floor().long().clamp(max=n_rings - 1)
    y = (ring + sector) % n_classes
    base = 2 * math.pi * sector.to(dtype) / n_sectors
    base = base + math.radians(jitter_deg) * torch.randn(n, generator=g, dtype=dtype)
    turn = math.radians(max_angle_deg) * (2 * torch.rand(n, generator=g, dtype=dtype) - 1)
    theta = base + turn
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1), y

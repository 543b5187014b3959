"""Sharpness: the mean change of a loss under random perturbations of the parameters.

The sharpness measure of paper 003 ("Training Dynamics Evaluation": the loss change under
random perturbations of a given relative radius, with sphere or filter-normalised directions of
Li et al., 2018).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from symdisc.curvature._random import SeedLike, as_generator, random_probes
from symdisc.curvature.functional import Params, check_params, flatten, num_params, unflatten
from symdisc.curvature.hessian import check_finite_loss
from symdisc.runtime.checks import check_choice, check_int

DirectionKind = Literal["sphere", "filter"]
RadiusKind = Literal["absolute", "relative"]

__all__ = ["DirectionKind", "RadiusKind", "SharpnessResult", "random_directions", "sharpness"]


def random_directions(
    params: Params, n: int, *, kind: DirectionKind = "sphere", generator: SeedLike = None
) -> Tensor:
    """n random unit directions (n, P) in the whole parameter vector.

    * ``"sphere"``: uniform on the unit sphere (normalised Gaussians).
    * ``"filter"``: filter-normalised (Li et al., 2018): a Gaussian direction whose slice for
      every output unit (row ``W[o]`` of a weight of two or more dimensions) is rescaled to the
      norm of that unit's weights; one-dimensional parameters (biases, norm scales) are not
      perturbed. The result is then normalised to unit length, so radii keep one meaning.

    Raises:
        ValueError: for ``n < 1``, an unknown kind, or filter directions on parameters that are all
            one-dimensional.
    """
    params = check_params(params)
    check_int(n, "n", minimum=1)
    check_choice(kind, "kind", DirectionKind)
    first = next(iter(params.values()))
    d = random_probes(
        (n, num_params(params)), "gaussian", as_generator(generator), first.dtype, first.device
    )
    if kind == "filter":
        parts = unflatten(d, params)
        for name, w in params.items():
            if w.ndim < 2:
                parts[name] = torch.zeros_like(parts[name])
                continue
            unit = parts[name].flatten(2).norm(dim=2)  # (n, out)
            target = w.flatten(1).norm(dim=1)  # (out,)
            factor = target / unit.clamp_min(torch.finfo(w.dtype).tiny)
            parts[name] = parts[name] * factor.reshape(n, -1, *([1] * (w.ndim - 1)))
        d = torch.cat([v.reshape(n, -1) for v in parts.values()], dim=1)
    norms = d.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("`kind='filter'` needs a parameter of two or more dimensions to perturb")
    return d / norms


@dataclass(frozen=True)
class SharpnessResult:
    """Loss changes per radius over the directions.

    Attributes:
        radii: (R,) the radii as given.
        step: (R,) the Euclidean length of each perturbation actually applied.
        loss: the unperturbed loss L(theta).
        delta: (R, n) ``L(theta + step_r d_i) - L(theta)``.
        mean_abs: (R,) mean |dL| over directions; ``mean_abs_se`` its standard error.
        mean_rel: (R,) mean dL / L; ``mean_rel_se`` its standard error.
    """

    radii: Tensor
    step: Tensor
    loss: Tensor
    delta: Tensor
    mean_abs: Tensor
    mean_abs_se: Tensor
    mean_rel: Tensor
    mean_rel_se: Tensor


def sharpness(
    loss_fn: Callable[..., Tensor],
    params: Params,
    *args: object,
    radii: Sequence[float] | Tensor,
    directions: int | Tensor = 32,
    radius: RadiusKind = "absolute",
    generator: SeedLike = None,
    chunk_size: int | None = None,
) -> SharpnessResult:
    """Mean loss change along random directions at several radii (paper 003's sharpness).

    ``dL(r, d) = L(theta + s(r) d) - L(theta)`` for unit directions d, with ``s(r) = r``
    (``radius="absolute"``) or ``s(r) = r ||theta||`` (``"relative"``). All perturbed losses are
    evaluated in one vmapped pass (chunked by ``chunk_size``); ``params`` and any module behind
    ``loss_fn`` are left untouched.

    Args:
        loss_fn: pure scalar loss ``L(params, *args)``.
        params: ``dict[str, Tensor]``.
        *args: the loss's other arguments.
        radii: the radii, non-negative.
        directions: a number of directions uniform on the unit sphere, or a (n, P) tensor of
            directions (e.g. from :func:`random_directions` with ``kind="filter"``); rows are
            normalised.
        radius: ``"absolute"`` or ``"relative"`` to the parameter norm.
        generator: seed or ``torch.Generator`` when ``directions`` is a number.
        chunk_size: perturbed losses per vmapped chunk.

    Raises:
        ValueError: for negative radii, directions of the wrong shape, an unknown radius kind, or
            a non-finite unperturbed loss (:class:`NonFiniteCurvatureError`).
    """
    params = check_params(params)
    if radius not in get_args(RadiusKind):
        raise ValueError(f"`radius` must be one of {get_args(RadiusKind)}, got {radius!r}")
    first = next(iter(params.values()))
    radii_t = torch.as_tensor(radii, dtype=first.dtype, device=first.device).reshape(-1)
    if radii_t.numel() == 0 or bool((radii_t < 0).any()):
        raise ValueError(f"`radii` must be a non-empty list of non-negative numbers, got {radii!r}")
    dim = num_params(params)
    if isinstance(directions, int):
        d = random_directions(params, directions, generator=generator)
    elif isinstance(directions, Tensor) and directions.ndim == 2 and directions.shape[1] == dim:
        d = directions.to(first.dtype) / directions.norm(dim=1, keepdim=True)
    else:
        got = tuple(directions.shape) if isinstance(directions, Tensor) else directions
        raise ValueError(f"`directions` must be a positive int or an (n, {dim}) tensor, got {got}")
    theta = flatten(params)
    step = radii_t * (theta.norm() if radius == "relative" else 1.0)
    base = loss_fn(params, *args).detach()
    check_finite_loss(base)

    def perturbed(delta: Tensor) -> Tensor:
        return loss_fn(unflatten(theta + delta, params), *args)

    deltas = (step[:, None, None] * d[None]).reshape(-1, dim)
    with torch.no_grad():
        losses = torch.vmap(perturbed, chunk_size=chunk_size)(deltas).reshape(len(step), -1)
    change = (losses - base).to(torch.float64)
    rel = change / base.to(torch.float64)
    return SharpnessResult(
        radii=radii_t,
        step=step,
        loss=base,
        delta=change,
        mean_abs=change.abs().mean(1),
        mean_abs_se=_standard_error(change.abs()),
        mean_rel=rel.mean(1),
        mean_rel_se=_standard_error(rel),
    )


def _standard_error(x: Tensor) -> Tensor:
    """Standard error of the mean along the last axis (NaN for a single sample)."""
    n = x.shape[-1]
    if n < 2:
        return torch.full_like(x[..., 0], float("nan"))
    return x.std(dim=-1) / n**0.5

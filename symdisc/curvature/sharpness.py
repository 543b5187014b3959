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

from symdisc.curvature._linop import short_values
from symdisc.curvature._random import SeedLike, as_generator, random_probes
from symdisc.curvature.functional import Params, check_params, flatten, num_params, unflatten
from symdisc.curvature.hessian import NonFiniteCurvatureError, check_finite_loss
from symdisc.runtime.checks import check_choice, check_int, check_optional_int

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


@dataclass(frozen=True, repr=False)
class SharpnessResult:
    """Loss changes per radius over the directions.

    Attributes:
        radii: (R,) the radii as given.
        step: (R,) the Euclidean length of each perturbation actually applied.
        loss: the unperturbed loss L(theta).
        delta: (R, n) ``L(theta + step_r d_i) - L(theta)``.
        mean_abs: (R,) mean |dL| over directions; ``mean_abs_se`` its standard error.
        mean_rel: (R,) mean dL / L; ``mean_rel_se`` its standard error. Infinite or NaN
            when the unperturbed loss is exactly 0 (a perfect fit): use ``mean_abs`` then.
            The standard errors are NaN for a single direction.
    """

    radii: Tensor
    step: Tensor
    loss: Tensor
    delta: Tensor
    mean_abs: Tensor
    mean_abs_se: Tensor
    mean_rel: Tensor
    mean_rel_se: Tensor

    @classmethod
    def of_changes(
        cls, radii: Tensor, step: Tensor, loss: Tensor, delta: Tensor
    ) -> SharpnessResult:
        """The summary of the loss changes ``delta`` (R, n, float64) at ``loss``."""
        rel = delta / loss.to(torch.float64)
        return cls(
            radii=radii,
            step=step,
            loss=loss,
            delta=delta,
            mean_abs=delta.abs().mean(1),
            mean_abs_se=_standard_error(delta.abs()),
            mean_rel=rel.mean(1),
            mean_rel_se=_standard_error(rel),
        )

    def __repr__(self) -> str:
        return (
            f"SharpnessResult(radii={short_values(self.radii)}, directions={self.delta.shape[-1]}, "
            f"loss={float(self.loss):.4g}, mean_abs={short_values(self.mean_abs)}, "
            f"mean_rel={short_values(self.mean_rel)})"
        )


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
        TypeError: for a non-callable ``loss_fn``, radii or directions of the wrong type.
        ValueError: for radii that are negative, NaN or infinite, directions of the wrong shape
            or with NaN or zero rows, an unknown radius kind, or a non-finite unperturbed loss or
            perturbed loss (:class:`NonFiniteCurvatureError`, naming the radii).
    """
    params, radii_t = check_sharpness_arguments(
        loss_fn, params, radii, directions, radius, chunk_size
    )
    first = next(iter(params.values()))
    radii_t = radii_t.to(dtype=first.dtype, device=first.device)
    dim = num_params(params)
    if isinstance(directions, int):
        d = random_directions(params, directions, generator=generator)
    else:
        d = directions.to(first.dtype) / directions.norm(dim=1, keepdim=True).to(first.dtype)
    theta = flatten(params)
    step = radii_t * (theta.norm() if radius == "relative" else 1.0)
    base = loss_fn(params, *args).detach()
    check_finite_loss(base)

    def perturbed(delta: Tensor) -> Tensor:
        return loss_fn(unflatten(theta + delta, params), *args)

    deltas = (step[:, None, None] * d[None]).reshape(-1, dim)
    with torch.no_grad():
        losses = torch.vmap(perturbed, chunk_size=chunk_size)(deltas).reshape(len(step), -1)
    if not bool(torch.isfinite(losses).all()):
        bad = [float(r) for r, row in zip(radii_t, losses) if not bool(torch.isfinite(row).all())]
        raise NonFiniteCurvatureError(
            f"the perturbed loss must be finite, got NaN or infinite values at `radii` {bad}"
        )
    change = (losses - base).to(torch.float64)
    return SharpnessResult.of_changes(radii_t, step, base, change)


def check_sharpness_arguments(
    loss_fn: object,
    params: object,
    radii: object,
    directions: object,
    radius: object,
    chunk_size: object,
) -> tuple[Params, Tensor]:
    """The checks of :func:`sharpness` (and of its data-parallel twin, before any reduction):
    the checked ``params`` and the radii as a float64 vector (R,).

    Raises:
        TypeError, ValueError: as :func:`sharpness`.
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}")
    params = check_params(params)
    if radius not in get_args(RadiusKind):
        raise ValueError(f"`radius` must be one of {get_args(RadiusKind)}, got {radius!r}")
    check_optional_int(chunk_size, "chunk_size", minimum=1)
    radii_t = _check_radii(radii)
    dim = num_params(params)
    if isinstance(directions, bool):
        raise TypeError("`directions` must be a positive int or an (n, P) tensor, got bool")
    # a count is checked where the directions are drawn (random_directions)
    if isinstance(directions, Tensor) and directions.ndim == 2 and directions.shape[1] == dim:
        if directions.shape[0] == 0 or not directions.is_floating_point():
            raise ValueError(
                f"`directions` must be a non-empty floating (n, {dim}) tensor, got shape "
                f"{tuple(directions.shape)} and dtype {directions.dtype}"
            )
        norms = directions.norm(dim=1, keepdim=True)
        if not bool(torch.isfinite(directions).all()) or bool((norms == 0).any()):
            raise ValueError(
                "`directions` must have finite, non-zero rows (each is normalised), got NaN, "
                "infinite or all-zero rows"
            )
    elif isinstance(directions, Tensor):
        raise ValueError(
            f"`directions` must be a positive int or an (n, {dim}) tensor, got shape "
            f"{tuple(directions.shape)}"
        )
    elif not isinstance(directions, int):
        raise TypeError(
            f"`directions` must be a positive int or an (n, {dim}) tensor, got "
            f"{type(directions).__name__}"
        )
    return params, radii_t


def _check_radii(radii: object) -> Tensor:
    """``radii`` as a float64 vector (R,) of finite non-negative numbers, R >= 1."""
    if isinstance(radii, (str, bytes, bool)) or not isinstance(
        radii, (Sequence, Tensor, float, int)
    ):
        raise TypeError(
            f"`radii` must be a sequence or tensor of non-negative numbers, got "
            f"{type(radii).__name__}"
        )
    if isinstance(radii, Tensor):
        values = radii.detach().to("cpu", torch.float64).reshape(-1)
    else:
        items = list(radii) if isinstance(radii, Sequence) else [radii]
        wrong = [r for r in items if isinstance(r, bool) or not isinstance(r, (int, float))]
        if wrong:
            raise TypeError(f"`radii` must hold numbers, got {wrong[:3]!r}")
        values = torch.tensor(items, dtype=torch.float64)
    if values.numel() == 0:
        raise ValueError("`radii` must be a non-empty list of non-negative numbers, got none")
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
        raise ValueError(f"`radii` must be finite and non-negative, got {values.tolist()[:8]}")
    return values


def _standard_error(x: Tensor) -> Tensor:
    """Standard error of the mean along the last axis (NaN for a single sample)."""
    n = x.shape[-1]
    if n < 2:
        return torch.full_like(x[..., 0], float("nan"))
    return x.std(dim=-1) / n**0.5

"""Post-hoc optimisation of the prior precisions of a fitted Laplace approximation (paper 000,
section 4 and paper 001, section 3.3: the precisions maximise ``log p(D | delta)`` of eq. 9 /
eq. 7, refit-free because the curvature does not depend on them).

Two methods:

* ``"adam"``: one precision per prior group, ``steps`` Adam steps (learning rate ``lr``) on
  ``log delta_g`` from ``log delta_g = 0`` minimising ``-log p(D | delta)``;
* ``"grid"``: one precision shared by all groups, the best ``log10 delta`` on a grid from
  ``bounds[0]`` to ``bounds[1]`` in steps of ``step``, then on a finer grid of ``refine_step``
  within one coarse step of the best point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ella.laplace.base import Laplace
from symdisc.runtime import check_choice, check_float, check_instance, check_int

TuningMethod = Literal["adam", "grid"]

__all__ = ["TuningMethod", "TunedPrior", "optimize_prior_precision"]

_OPTIONS = {"adam": ("steps", "lr"), "grid": ("bounds", "step", "refine_step")}


@dataclass(frozen=True)
class TunedPrior:
    """What :func:`optimize_prior_precision` found.

    Attributes:
        prior_precision: ``{group: delta_g}`` (Python floats; for ``"grid"`` the shared value
            for every group), ready for :meth:`Laplace.log_marginal_likelihood`.
        log_marginal_likelihood: ``log p(D | delta)`` at those precisions (the whole data set).
    """

    prior_precision: dict[str, float]
    log_marginal_likelihood: float


def optimize_prior_precision(
    laplace: Laplace,
    method: TuningMethod = "adam",
    *,
    steps: int | None = None,
    lr: float | None = None,
    bounds: tuple[float, float] | None = None,
    step: float | None = None,
    refine_step: float | None = None,
) -> TunedPrior:
    """The prior precisions that maximise the Laplace log marginal likelihood of ``laplace``.

    Args:
        laplace: a fitted :class:`~ella.laplace.Laplace`; not changed.
        method: ``"adam"`` (per group) or ``"grid"`` (shared), see the module docstring.
        steps: ``"adam"``: number of steps (default 100).
        lr: ``"adam"``: learning rate (default 0.1).
        bounds: ``"grid"``: ``(low, high)`` of ``log10 delta`` (default (-4, 4)); the coarse grid
            is ``low + step * i`` for ``i = 0 .. round((high - low) / step)``.
        step: ``"grid"``: the coarse spacing of ``log10 delta`` (default 0.1).
        refine_step: ``"grid"``: the fine spacing (default 0.005); the fine grid is
            ``best - step + refine_step * i`` for ``i = 0 .. round(2 step / refine_step)``.

    Returns:
        :class:`TunedPrior`. Ties on a grid go to the first (smallest) point.

    Raises:
        TypeError: for a ``laplace`` that is not a :class:`~ella.laplace.Laplace` or options of
            the wrong type.
        ValueError: for an unknown ``method``, an option of the other method, or out-of-range
            options; RuntimeError: for an unfitted ``laplace``.
    """
    check_instance(laplace, "laplace", Laplace)
    laplace._require_fit()
    check_choice(method, "method", TuningMethod)
    given = {"steps": steps, "lr": lr, "bounds": bounds, "step": step, "refine_step": refine_step}
    foreign = [k for k, v in given.items() if v is not None and k not in _OPTIONS[method]]
    if foreign:
        raise ValueError(f"{foreign} are options of another method than method={method!r}")
    if method == "adam":
        return _adam(
            laplace,
            check_int(100 if steps is None else steps, "steps", minimum=0),
            check_float(0.1 if lr is None else lr, "lr", positive=True),
        )
    low, high = (-4.0, 4.0) if bounds is None else check_instance(bounds, "bounds", tuple)
    low, high = check_float(low, "bounds[0]"), check_float(high, "bounds[1]")
    if not low < high:
        raise ValueError(f"`bounds` must be (low, high) with low < high, got {bounds}")
    return _grid(
        laplace,
        low,
        high,
        check_float(0.1 if step is None else step, "step", positive=True),
        check_float(0.005 if refine_step is None else refine_step, "refine_step", positive=True),
    )


def _adam(laplace: Laplace, steps: int, lr: float) -> TunedPrior:
    """Adam on ``log delta_g`` from 0, one per group."""
    like = {"dtype": laplace.dtype, "device": laplace.device}
    log_delta = {g: torch.zeros((), requires_grad=True, **like) for g in laplace.groups}
    opt = torch.optim.Adam(list(log_delta.values()), lr=lr)
    for _ in range(steps):
        value = -laplace.log_marginal_likelihood({g: v.exp() for g, v in log_delta.items()})
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        deltas = {g: v.exp() for g, v in log_delta.items()}
        lml = float(laplace.log_marginal_likelihood(deltas))
    return TunedPrior({g: float(d) for g, d in deltas.items()}, lml)


def _grid(laplace: Laplace, low: float, high: float, step: float, refine: float) -> TunedPrior:
    """The best shared ``log10 delta`` on a coarse grid, then on a fine one around it."""
    with torch.no_grad():

        def value(log10_delta: float) -> float:
            d = torch.tensor(10.0**log10_delta, dtype=laplace.dtype, device=laplace.device)
            return -float(laplace.log_marginal_likelihood(d))

        coarse = [low + step * i for i in range(round((high - low) / step) + 1)]
        best = min(coarse, key=value)
        fine = [best - step + refine * i for i in range(round(2 * step / refine) + 1)]
        best = min(fine, key=value)
        lml = -value(best)
    delta = 10.0**best
    return TunedPrior(dict.fromkeys(laplace.groups, delta), lml)

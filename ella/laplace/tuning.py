"""Post-hoc optimisation of the prior precisions of a fitted Laplace approximation (paper 000,
section 4 and paper 001, section 3.3: the precisions maximise ``log p(D | delta)`` of eq. 9 /
eq. 7, refit-free because the curvature does not depend on them).

Three methods:

* ``"adam"``: one precision per prior group, ``steps`` Adam steps (learning rate ``lr``) on
  ``log delta_g`` from ``log delta_g = 0`` minimising ``-log p(D | delta)``;
* ``"grid"``: one precision shared by all groups, the best ``log10 delta`` on a grid from
  ``bounds[0]`` to ``bounds[1]`` in steps of ``step``, then on a finer grid of ``refine_step``
  within one coarse step of the best point;
* ``"val_nll"``: the same grid search (coarser by default: the predictive costs more than the
  marginal likelihood), minimising instead the negative log-likelihood of held-out
  ``val_data`` under the linearised (GLM) predictive, probit for classification and Gaussian
  with variance ``diag(J Sigma J^T) + sigma^2`` for regression (the criterion laplace-torch
  calls ``"gridsearch"``; Immer et al. 2021, section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ella.laplace.base import Laplace
from symdisc.runtime import check_choice, check_float, check_instance, check_int

TuningMethod = Literal["adam", "grid", "val_nll"]

__all__ = ["TuningMethod", "TunedPrior", "optimize_prior_precision"]

_OPTIONS = {
    "adam": ("steps", "lr"),
    "grid": ("bounds", "step", "refine_step"),
    "val_nll": ("bounds", "step", "refine_step", "val_data"),
}


@dataclass(frozen=True)
class TunedPrior:
    """What :func:`optimize_prior_precision` found.

    Attributes:
        prior_precision: ``{group: delta_g}`` (Python floats; for ``"grid"`` the shared value
            for every group), ready for :meth:`Laplace.log_marginal_likelihood`.
        log_marginal_likelihood: ``log p(D | delta)`` at those precisions (the whole data set).
        val_nll: ``"val_nll"``: the mean negative log-likelihood per validation point at those
            precisions; None for the other methods.
    """

    prior_precision: dict[str, float]
    log_marginal_likelihood: float
    val_nll: float | None = None


def optimize_prior_precision(
    laplace: Laplace,
    method: TuningMethod = "adam",
    *,
    steps: int | None = None,
    lr: float | None = None,
    bounds: tuple[float, float] | None = None,
    step: float | None = None,
    refine_step: float | None = None,
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TunedPrior:
    """The prior precisions that maximise the Laplace log marginal likelihood of ``laplace``.

    Args:
        laplace: a fitted :class:`~ella.laplace.Laplace`; not changed.
        method: ``"adam"`` (per group), ``"grid"`` or ``"val_nll"`` (shared), see the module
            docstring.
        steps: ``"adam"``: number of steps (default 100).
        lr: ``"adam"``: learning rate (default 0.1).
        bounds: ``"grid"``: ``(low, high)`` of ``log10 delta`` (default (-4, 4)); the coarse grid
            is ``low + step * i`` for ``i = 0 .. round((high - low) / step)``.
        step: ``"grid"``: the coarse spacing of ``log10 delta`` (default 0.1).
        refine_step: ``"grid"``: the fine spacing (default 0.005); the fine grid is
            ``best - step + refine_step * i`` for ``i = 0 .. round(2 step / refine_step)``.
            ``"val_nll"`` takes ``bounds``, ``step`` and ``refine_step`` too (defaults (-4, 4),
            0.25 and 0.05).
        val_data: ``"val_nll"`` (required): ``(x, y)`` held-out inputs and targets (class
            indices for classification, ``(N, C)`` values for regression).

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
    given["val_data"] = val_data
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
    coarse, fine = (0.1, 0.005) if method == "grid" else (0.25, 0.05)
    step = check_float(coarse if step is None else step, "step", positive=True)
    refine = check_float(fine if refine_step is None else refine_step, "refine_step", positive=True)
    if method == "grid":
        return _grid(laplace, low, high, step, refine)
    if val_data is None:
        raise ValueError("method='val_nll' needs `val_data` = (x, y) held-out data, got None")
    check_instance(val_data, "val_data", tuple)
    if len(val_data) != 2:
        raise ValueError(f"`val_data` must be a pair (x, y), got {len(val_data)} items")
    x, y = (check_instance(t, "val_data", torch.Tensor) for t in val_data)
    if len(x) != len(y):
        raise ValueError(
            f"`val_data` must hold as many targets as inputs, got {len(x)} and {len(y)}"
        )
    return _val_nll_grid(laplace, x, y, low, high, step, refine)


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


def _search(value, low: float, high: float, step: float, refine: float) -> float:
    """The ``log10 delta`` minimising ``value`` on a coarse grid, then on a fine one around it
    (ties to the first, smallest, point)."""
    coarse = [low + step * i for i in range(round((high - low) / step) + 1)]
    best = min(coarse, key=value)
    fine = [best - step + refine * i for i in range(round(2 * step / refine) + 1)]
    return min(fine, key=value)


def _shared(laplace: Laplace, log10_delta: float) -> torch.Tensor:
    return torch.tensor(10.0**log10_delta, dtype=laplace.dtype, device=laplace.device)


def _grid(laplace: Laplace, low: float, high: float, step: float, refine: float) -> TunedPrior:
    """The best shared ``log10 delta`` by the marginal likelihood."""
    with torch.no_grad():

        def value(log10_delta: float) -> float:
            return -float(laplace.log_marginal_likelihood(_shared(laplace, log10_delta)))

        best = _search(value, low, high, step, refine)
        lml = -value(best)
    return TunedPrior(dict.fromkeys(laplace.groups, 10.0**best), lml)


def _val_nll_grid(
    laplace: Laplace, x: torch.Tensor, y: torch.Tensor, low: float, high: float, step: float,
    refine: float,
) -> TunedPrior:  # fmt: skip
    """The best shared ``log10 delta`` by the validation NLL of the GLM predictive."""
    x = x.to(device=laplace.device, dtype=laplace.dtype)
    y = y.to(laplace.device)

    def value(log10_delta: float) -> float:
        with torch.no_grad():
            out = laplace.predictive(x, _shared(laplace, log10_delta))
        if laplace.likelihood == "classification":
            p = out.gather(1, y.long().view(-1, 1)).squeeze(1)
            return -float(p.clamp_min(torch.finfo(p.dtype).tiny).log().mean())
        mean, var = out
        target = y.to(mean.dtype).reshape(mean.shape)
        nll = 0.5 * ((target - mean) ** 2 / var + var.log() + math.log(2 * math.pi))
        return float(nll.sum(1).mean())

    best = _search(value, low, high, step, refine)
    with torch.no_grad():
        lml = float(laplace.log_marginal_likelihood(_shared(laplace, best)))
    return TunedPrior(dict.fromkeys(laplace.groups, 10.0**best), lml, value(best))

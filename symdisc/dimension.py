"""The dimension of a loss's symmetry algebra, and whether learned generators close under the
Lie bracket (paper 002, section 5 names both as future work; issue 13).

:func:`estimate_dimension` learns k = 1, 2, ... fields (:func:`symdisc.discovery.discover`, or any
``fit`` the caller passes) and stops at the first k whose fields are not all invariant or not all
independent: the dimension is the last k that passed. :func:`lie_closure` measures how far the
brackets ``[h_i, h_j]`` of generators lie from their span. The closed-form reference is the
null-space baseline :func:`symdisc.known.null_space` (Theorem B.1, eq. 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from symdisc.losses import ParamLoss
from symdisc.metrics import RANK_RTOL, flow_drift, invariance_errors, singular_values
from symdisc.runtime.checks import check_float, check_instance, check_int
from symdisc.validation import check_algebra, check_fields, check_rows, check_tensor

__all__ = [
    "INVARIANCE_THRESHOLD",
    "DRIFT_THRESHOLD",
    "DimensionStep",
    "DimensionEstimate",
    "Fit",
    "dimension_step",
    "estimate_dimension",
    "learned_fields",
    "LieClosure",
    "lie_closure",
]

INVARIANCE_THRESHOLD = 0.05
"""A field counts as invariant when its median invariance error is at most this: the target of
``invariance_median`` in the experiments (:data:`symdisc.metrics.THRESHOLDS`)."""

DRIFT_THRESHOLD = 0.1
"""... and, where the fit reports it (the default fit does), its flow drift ratio at most this:
the target of ``flow_drift_ratio`` in the experiments. The two together are the verdict's
definition of a symmetry (:attr:`symdisc.metrics.Verdict.symmetry`). Measured on issue 13's
``relu_h3``: the 4th and 5th learned fields had median invariance errors 0.04-0.05 (under the
invariance threshold) but drift ratios 0.2-0.28, while the 3 rescaling fields drift by 0.02."""

Fit = Callable[[int], tuple]
"""``k -> (fields (N, k, P), grad (N, P)[, extra[, drift]])``: k fields at N held-out samples,
the loss gradient there, optionally anything to keep (e.g. the training run) and the k flow drift
ratios of the fields (:func:`symdisc.metrics.flow_drift`, one generator at a time)."""


@dataclass(frozen=True)
class DimensionStep:
    """The evidence at one k.

    Attributes:
        k: the number of fields learned.
        invariance: (k,) median over samples of each field's invariance error.
        invariance_p90: (k,) the 90th percentile over samples of the same.
        flow_drift: (k,) each field's flow drift ratio, or None where the fit gives none.
        singular_values: (k,) median over samples of the singular values of the k fields at a
            sample, divided by the largest there (descending; the first is 1).
        invariant: every field's median invariance error is at most the threshold (and, with a
            drift threshold and drift given, every field's drift ratio at most it).
        independent: the smallest relative singular value is above the rank tolerance.
    """

    k: int
    invariance: list[float]
    invariance_p90: list[float]
    singular_values: list[float]
    flow_drift: list[float] | None
    invariant: bool
    independent: bool

    @property
    def passed(self) -> bool:
        return self.invariant and self.independent

    def as_dict(self) -> dict[str, object]:
        return {
            "k": self.k,
            "invariance": self.invariance,
            "invariance_p90": self.invariance_p90,
            "singular_values": self.singular_values,
            "flow_drift": self.flow_drift,
            "invariant": self.invariant,
            "independent": self.independent,
        }


@dataclass(frozen=True)
class DimensionEstimate:
    """The estimated dimension of the symmetry algebra with its evidence.

    Attributes:
        dimension: the largest k up to which every step passed (0 if k = 1 failed).
        steps: the evidence per k, from 1 up to the first failing k (or ``k_max``).
        saturated: True when every k up to ``k_max`` passed: the dimension is at least k_max.
        extras: what ``fit`` left per k (for the default fit: the DiscoveryRun), by k.
    """

    dimension: int
    steps: list[DimensionStep]
    saturated: bool
    extras: dict[int, object] = field(default_factory=dict, repr=False)


def dimension_step(
    fields: Tensor,
    grad: Tensor,
    *,
    drift: list[float] | None = None,
    invariance_threshold: float = INVARIANCE_THRESHOLD,
    drift_threshold: float | None = DRIFT_THRESHOLD,
    rtol: float = RANK_RTOL,
) -> DimensionStep:
    """Score k fields at N samples as one step of :func:`estimate_dimension`.

    Shapes: fields (N, k, P), grad (N, P); drift: k flow drift ratios or None.

    Raises:
        TypeError, ValueError: for fields or grad of other shapes (or non-finite), ``drift``
            that is not k finite numbers, or thresholds that are not positive and finite.
    """
    check_fields(fields)
    check_tensor(fields, "fields", finite=True)
    check_rows(grad, "grad", fields.shape[0], fields.shape[2])
    check_tensor(grad, "grad", finite=True)
    k = fields.shape[1]
    if drift is not None:
        if isinstance(drift, Tensor):
            drift = drift.tolist()
        check_instance(drift, "drift", (list, tuple))
        if len(drift) != k:
            raise ValueError(f"`drift` must hold k={k} ratios, one per field, got {len(drift)}")
        for i, x in enumerate(drift):
            check_float(x, f"drift[{i}]", nonnegative=True)
    check_float(invariance_threshold, "invariance_threshold", positive=True)
    if drift_threshold is not None:
        check_float(drift_threshold, "drift_threshold", positive=True)
    check_float(rtol, "rtol", positive=True)
    errors = invariance_errors(fields, grad)
    inv = errors.median(dim=0).values  # (k,)
    p90 = torch.quantile(errors.double(), 0.9, dim=0)
    S = singular_values(fields)
    rel = (S / S[:, :1].clamp_min(1e-30)).median(dim=0).values  # (min(k, P),)
    rel = torch.cat([rel, rel.new_zeros(k - rel.shape[0])])  # k > P: the extra are dependent
    drift = None if drift is None else [float(x) for x in drift]
    invariant = bool((inv <= invariance_threshold).all())
    if drift is not None and drift_threshold is not None:
        invariant = invariant and all(x <= drift_threshold for x in drift)
    return DimensionStep(
        k=k,
        invariance=[float(x) for x in inv],
        invariance_p90=[float(x) for x in p90],
        singular_values=[float(x) for x in rel],
        flow_drift=drift,
        invariant=invariant,
        independent=bool(rel[-1] > rtol),
    )


def learned_fields(loss: ParamLoss, *, d: int, drift_samples: int = 500, **discover_kwargs) -> Fit:
    """The default ``fit`` of :func:`estimate_dimension`: learn k fields with
    :func:`symdisc.discovery.discover` (``d`` and ``discover_kwargs`` passed on) and return them
    on the run's held-out samples, with the gradient, the run and the flow drift ratio of each
    field on the first ``drift_samples`` held-out samples (0: no drift):
    ``k -> (fields, grad, run, drift)``.
    """
    from symdisc.discovery import discover  # late: discover pulls in training

    check_int(drift_samples, "drift_samples", minimum=0)

    def fit(k: int) -> tuple[Tensor, Tensor, object, list[float] | None]:
        run = discover(loss, d=d, k=k, **discover_kwargs)
        test = run.test_samples
        h = run.discovery.generators().detach()
        with torch.no_grad():
            fields = run.discovery.fields(test)
        drift = None
        if drift_samples:
            few = test.batch(torch.arange(min(drift_samples, len(test)), device=h.device))
            action = run.discovery.action
            drift = [flow_drift(loss, action, h[j : j + 1], few)["ratio"] for j in range(k)]
        return fields, test.grad, run, drift

    return fit


def estimate_dimension(
    loss: ParamLoss | None = None,
    *,
    d: int | None = None,
    k_max: int = 8,
    fit: Fit | None = None,
    invariance_threshold: float = INVARIANCE_THRESHOLD,
    drift_threshold: float | None = DRIFT_THRESHOLD,
    rtol: float = RANK_RTOL,
    **discover_kwargs,
) -> DimensionEstimate:
    """Estimate the dimension of the symmetry algebra by learning k = 1, 2, ... fields.

    At each k the fields are learned afresh and scored (:func:`dimension_step`): they pass when
    every field is invariant (median invariance error <= ``invariance_threshold``; random
    directions score about ``sqrt(2 / (pi P))``; and a flow drift ratio <= ``drift_threshold``
    where the fit reports one, as the default fit does) and independent (the
    k-th singular value of the fields at a sample, relative to the largest, median over samples,
    above ``rtol``). The first
    k that fails stops the search; the dimension is k - 1. A learner that misses symmetries
    makes this a lower bound; compare it with :func:`symdisc.known.null_space` where an ansatz
    exists.

    Args:
        loss: the loss whose symmetries are sought (for the default ``fit``).
        d: the generators are in gl(d) (for the default ``fit``; at least the dimension sought
            needs d^2 >= k_max).
        k_max: the largest k tried.
        fit: ``k -> (fields (N, k, P), grad (N, P)[, extra[, drift]])`` (:data:`Fit`); default
            :func:`learned_fields` (``loss``, ``d``, ``discover_kwargs``: e.g. ``data_dependent``,
            ``n_train``, ``config``, ``seed``). A third element is kept in ``extras``.
        invariance_threshold: the largest median invariance error of an invariant field.
        drift_threshold: the largest flow drift ratio of an invariant field (see
            :data:`DRIFT_THRESHOLD`); None: the drift is recorded as evidence only.
        rtol: the smallest relative singular value of an independent field.

    Returns:
        a :class:`DimensionEstimate`.

    Raises:
        TypeError: for arguments of the wrong type. ValueError: for k_max < 1, non-positive
            thresholds, or neither ``fit`` nor ``loss`` and ``d``.

    Example:
        >>> est = estimate_dimension(two_layer("relu", 2, 3, 2, 2), d=3, k_max=4,
        ...                          data_dependent=False)
        >>> est.dimension, [s.singular_values for s in est.steps]
    """
    k_max = check_int(k_max, "k_max", minimum=1)
    invariance_threshold = check_float(invariance_threshold, "invariance_threshold", positive=True)
    if drift_threshold is not None:
        drift_threshold = check_float(drift_threshold, "drift_threshold", positive=True)
    rtol = check_float(rtol, "rtol", positive=True)
    if fit is None:
        if loss is None or d is None:
            raise ValueError("`loss` and `d` must be given when `fit` is None")
        check_instance(loss, "loss", ParamLoss)
        fit = learned_fields(loss, d=check_int(d, "d", minimum=1), **discover_kwargs)
    elif not callable(fit):
        raise TypeError(f"`fit` must be callable k -> (fields, grad), got {type(fit).__name__}")
    steps, extras = [], {}
    for k in range(1, k_max + 1):
        out = fit(k)
        fields, grad = out[0], out[1]
        if (
            fields.ndim != 3
            or fields.shape[1] != k
            or grad.shape != (fields.shape[0], fields.shape[2])
        ):
            raise ValueError(
                f"`fit({k})` must return fields (N, {k}, P) and grad (N, P), got "
                f"{tuple(fields.shape)} and {tuple(grad.shape)}"
            )
        if len(out) > 2:
            extras[k] = out[2]
        step = dimension_step(
            fields.detach(),
            grad.detach(),
            drift=out[3] if len(out) > 3 else None,
            invariance_threshold=invariance_threshold,
            drift_threshold=drift_threshold,
            rtol=rtol,
        )
        steps.append(step)
        if not step.passed:
            return DimensionEstimate(k - 1, steps, False, extras)
    return DimensionEstimate(k_max, steps, True, extras)


@dataclass(frozen=True)
class LieClosure:
    """How far the Lie brackets of k generators lie from their span.

    Attributes:
        distance: (k, k) ``||[h_i, h_j] - proj_span(h) [h_i, h_j]||_F / (||h_i||_F ||h_j||_F)``
            (symmetric, zero diagonal; at most 2).
        bracket: (k, k) ``||[h_i, h_j]||_F / (||h_i||_F ||h_j||_F)``: the bracket's own size
            on the same scale (``distance / bracket`` is the fraction of it outside the span).
        max_distance: the largest entry of ``distance``: 0 for a Lie subalgebra.
    """

    distance: Tensor
    bracket: Tensor
    max_distance: float

    def __repr__(self) -> str:
        return f"LieClosure(k={self.distance.shape[0]}, max_distance={self.max_distance:.3g})"

    def closes(self, tol: float = 1e-2) -> bool:
        """Whether every bracket lies within ``tol`` (relative, as ``distance``) of the span."""
        return self.max_distance <= tol


def lie_closure(h: Tensor, *, rtol: float = 1e-6) -> LieClosure:
    """Whether generators h (k, d, d) close under the bracket ``[A, B] = AB - BA``.

    The span of h is taken with an orthonormal basis of the flattened generators (singular
    values above ``rtol`` times the largest); each bracket is projected on it. Distances are
    relative to ``||h_i|| ||h_j||``, so they do not change when a generator is rescaled, and a
    commuting pair scores 0 without dividing by a vanishing bracket.

    Raises:
        TypeError: if h is not a tensor. ValueError: if it is not (k, d, d).
    """
    check_algebra(h, "h")
    rtol = check_float(rtol, "rtol", positive=True)
    h = h.detach()
    k = h.shape[0]
    flat = h.reshape(k, -1)
    U, S, Vh = torch.linalg.svd(flat, full_matrices=False)
    Q = Vh[S > rtol * S[:1].clamp_min(1e-30)]  # (r, d*d) orthonormal rows
    brackets = (h[:, None] @ h[None, :] - h[None, :] @ h[:, None]).reshape(k, k, -1)
    outside = brackets - (brackets @ Q.T) @ Q
    norms = flat.norm(dim=1)
    scale = (norms[:, None] * norms[None, :]).clamp_min(1e-30)
    distance = outside.norm(dim=-1) / scale
    return LieClosure(distance, brackets.norm(dim=-1) / scale, float(distance.max()))

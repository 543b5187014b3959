"""Calibration metrics of a classifier's predictive probabilities (infrastructure of the Laplace
predictive, issue 17; the metrics of laplace-torch's and Immer et al. (2021)'s evaluations).

With predictive probabilities ``p_n`` (N, C) and class-index targets ``y_n`` (N,):

- negative log-likelihood ``NLL = -1/N sum_n log p_n[y_n]`` (nats per example);
- Brier score ``1/N sum_n sum_c (p_nc - 1[y_n = c])^2`` (the squared error to the one-hot
  target, summed over the classes and averaged over the examples; in [0, 2]);
- expected calibration error over ``B`` equal-width confidence bins (Guo et al. 2017): with the
  confidence ``c_n = max_c p_nc``, the prediction ``argmax_c p_nc`` and the bins
  ``I_b = ((b - 1)/B, b/B]`` (b = 1..B, a confidence of exactly 0 in the first),

      ECE = sum_b (|S_b| / N) |acc(S_b) - conf(S_b)|,

  ``S_b`` the examples whose confidence falls in ``I_b``, ``acc`` their share of correct
  predictions and ``conf`` their mean confidence: the gap between accuracy and confidence,
  weighted by the bin's mass (empty bins weigh 0).

:func:`reliability_bins` gives the per-bin ``(confidence, accuracy, count)`` that the ECE sums
and that :func:`ella.plot.reliability_diagram` draws.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.runtime import check_instance, check_int

__all__ = [
    "negative_log_likelihood",
    "expected_calibration_error",
    "brier_score",
    "reliability_bins",
]


def _checked(probs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``probs`` (N, C) floating, rows in [0, 1] summing to 1, and ``targets`` (N,) integer
    class indices in [0, C); both finite, N >= 1 (see the functions' Raises)."""
    check_instance(probs, "probs", Tensor)
    check_instance(targets, "targets", Tensor)
    if not probs.is_floating_point():
        raise TypeError(f"`probs` must be a floating-point tensor, got dtype {probs.dtype}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"`targets` must be an integer tensor of class indices, got {targets.dtype}"
        )
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(
            f"`probs` must be a non-empty (N, C) tensor of probabilities, got shape "
            f"{tuple(probs.shape)}"
        )
    if targets.ndim != 1 or targets.shape[0] != probs.shape[0]:
        raise ValueError(
            f"`targets` must be (N,) = ({probs.shape[0]},) class indices matching `probs` "
            f"{tuple(probs.shape)}, got shape {tuple(targets.shape)}"
        )
    if targets.device != probs.device:
        raise ValueError(
            f"`targets` must be on the device of `probs` ({probs.device}), got {targets.device}"
        )
    n_classes = probs.shape[1]
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"`targets` must be class indices in [0, {n_classes}), got values in [{low}, {high}]"
        )
    detached = probs.detach()
    if not bool(torch.isfinite(detached).all()):
        raise ValueError("`probs` must be finite, got NaN or infinite entries")
    if float(detached.min()) < 0.0 or float(detached.max()) > 1.0:
        raise ValueError(
            f"`probs` must lie in [0, 1], got entries in [{float(detached.min()):.6g}, "
            f"{float(detached.max()):.6g}]"
        )
    tol = max(1e-6, 1e3 * torch.finfo(probs.dtype).eps)
    deviation = float((detached.sum(dim=1) - 1.0).abs().max())
    if deviation > tol:
        raise ValueError(
            f"`probs` rows must sum to 1 (within {tol:.1e} for {probs.dtype}), got a row off by "
            f"{deviation:.3g} (pass probabilities, not logits)"
        )
    return probs, targets


def negative_log_likelihood(probs: Tensor, targets: Tensor) -> Tensor:
    """0-d ``-1/N sum_n log p_n[y_n]``, the mean negative log predictive probability (nats).

    A probability of 0 for the target counts as ``-log(tiny)`` (the dtype's smallest normal
    number, ~708 nats in float64, ~87 in float32) rather than infinity.

    Args:
        probs: (N, C) predictive probabilities, rows summing to 1.
        targets: (N,) integer class indices in [0, C).

    Raises:
        TypeError: for non-tensors, non-floating ``probs`` or non-integer ``targets``.
        ValueError: for shapes other than (N, C) and (N,) with the same N >= 1, targets outside
            [0, C), entries outside [0, 1] or not finite, or rows that do not sum to 1 (within
            ``max(1e-6, 1000 eps)`` of the dtype), each naming the argument.
    """
    probs, targets = _checked(probs, targets)
    picked = probs.gather(1, targets[:, None].long())[:, 0]
    return -picked.clamp_min(torch.finfo(probs.dtype).tiny).log().mean()


def brier_score(probs: Tensor, targets: Tensor) -> Tensor:
    """0-d ``1/N sum_n sum_c (p_nc - 1[y_n = c])^2``, in [0, 2].

    Args and Raises: as :func:`negative_log_likelihood`.
    """
    probs, targets = _checked(probs, targets)
    onehot = torch.nn.functional.one_hot(targets.long(), probs.shape[1]).to(probs.dtype)
    return (probs - onehot).pow(2).sum(dim=1).mean()


def reliability_bins(
    probs: Tensor, targets: Tensor, n_bins: int = 15
) -> tuple[Tensor, Tensor, Tensor]:
    """Per equal-width confidence bin ``I_b = ((b - 1)/B, b/B]``: the mean confidence, the
    accuracy and the number of examples (a confidence of exactly 0 joins the first bin).

    Args:
        probs: (N, C) predictive probabilities, rows summing to 1.
        targets: (N,) integer class indices in [0, C).
        n_bins: B >= 1.

    Returns:
        ``(confidence (B,), accuracy (B,), count (B,))``: confidence and accuracy in the dtype
        of ``probs`` (NaN for an empty bin), count int64; ``count.sum() == N``.

    Raises:
        TypeError, ValueError: as :func:`negative_log_likelihood`; for an ``n_bins`` that is not
            an int (TypeError) or below 1 (ValueError).
    """
    check_int(n_bins, "n_bins", minimum=1)
    probs, targets = _checked(probs, targets)
    confidence, prediction = probs.detach().max(dim=1)
    correct = (prediction == targets).to(probs.dtype)
    index = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins)
    conf_sum = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device)
    conf_sum = conf_sum.index_add(0, index, confidence)
    acc_sum = torch.zeros_like(conf_sum).index_add(0, index, correct)
    filled = count > 0
    denom = count.to(probs.dtype)
    nan = torch.full_like(conf_sum, float("nan"))
    mean_conf = torch.where(filled, conf_sum / denom.clamp_min(1), nan)
    accuracy = torch.where(filled, acc_sum / denom.clamp_min(1), nan)
    return mean_conf, accuracy, count


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int = 15) -> Tensor:
    """0-d ``sum_b (|S_b| / N) |acc(S_b) - conf(S_b)|`` over ``n_bins`` equal-width confidence
    bins (see the module docstring and :func:`reliability_bins`), in [0, 1].

    Args and Raises: as :func:`reliability_bins`.
    """
    confidence, accuracy, count = reliability_bins(probs, targets, n_bins)
    filled = count > 0
    weight = count[filled].to(confidence.dtype) / count.sum()
    return (weight * (accuracy[filled] - confidence[filled]).abs()).sum()

"""Checks of parameter-space symmetries for tests and notebooks (infrastructure: it implements
no equation; it measures the invariance ``L(a_X(g, theta), X, Y) = L(theta, X, Y)`` that paper
002, section 2, asks of a group action).

:func:`assert_loss_invariant` moves every sample's parameters by a finite group element and
measures the largest relative change of the loss, as :func:`ella.testing.assert_equivariant`
measures the largest equivariance violation of a layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import ParamLoss
from symdisc.runtime import check_bool, check_float
from symdisc.sampler import Samples
from symdisc.validation import check_invertible, check_loss, check_samples, check_tensor

__all__ = ["assert_loss_invariant"]


def assert_loss_invariant(
    loss: ParamLoss,
    action: Callable[[Tensor, Tensor, Tensor], Tensor],
    g: Tensor,
    samples: Samples,
    *,
    per_sample: bool = False,
    rtol: float = 1e-6,
) -> float:
    """Measure ``max_n |L(a(g_n, theta_n, X_n)) - L(theta_n)| / max(|L(theta_n)|, 1)`` over the
    samples and fail above ``rtol``.

    Args:
        loss: the loss (evaluated on flat parameters, :meth:`ParamLoss.flat`).
        action: ``action(g, theta, X) -> theta'`` for one sample: an
            :class:`~symdisc.actions.Action` module (``MLPAction``, ``LinearAction``,
            :class:`~symdisc.known.KnownAction`) or any function of that signature; lifted
            over the samples with ``torch.vmap``.
        g: one group element shared by all samples, or with ``per_sample`` one per sample
            (leading dimension N).
        samples: N samples ``(theta (N, P), X, Y)`` with their losses (:func:`symdisc.sample`).
        per_sample: whether ``g`` holds one element per sample.
        rtol: the largest relative loss change that passes.

    Returns:
        The measured largest relative change (a Python float).

    Raises:
        TypeError: for a ``loss`` that is not a ParamLoss, an ``action`` that is not callable,
            a ``samples`` that is not :class:`~symdisc.sampler.Samples` or a ``g`` that is not
            a floating tensor.
        ValueError: for samples of another loss, a ``g`` that is not finite, not (d, d) for an
            Action of GL(d) or singular, a non-finite or negative ``rtol``, a per-sample ``g``
            of the wrong length, or a moved parameter vector that is not finite.
        AssertionError: when the change exceeds ``rtol``, saying at which sample and by how much.

    Example:
        >>> from symdisc import sample, two_layer
        >>> from symdisc.known import KnownAction
        >>> loss = two_layer("identity", h=3)
        >>> s = sample(loss, 8, dtype=torch.float64)
        >>> g = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.3, 1.5]]).double()
        >>> assert_loss_invariant(loss, KnownAction(loss, "gl"), g, s) < 1e-12
        True
    """
    check_loss(loss)
    if not callable(action):
        raise TypeError(
            f"`action` must be callable (g, theta, X) -> theta', got {type(action).__name__}"
        )
    check_samples(samples, loss=loss)
    check_tensor(g, "g", floating=True, finite=True)
    d = getattr(action, "d", None)
    if isinstance(action, Action) and d is not None and tuple(g.shape[-2:]) != (d, d):
        raise ValueError(
            f"`g` must be ({d}, {d}) (or (N, {d}, {d}) per sample), got {tuple(g.shape)}"
        )
    if g.ndim >= 2 and g.shape[-1] == g.shape[-2]:
        check_invertible(g, "g")
    per_sample = check_bool(per_sample, "per_sample")
    rtol = check_float(rtol, "rtol", nonnegative=True)
    if per_sample and (g.ndim == 0 or g.shape[0] != len(samples)):
        raise ValueError(
            f"`g` must have one element per sample (leading dimension {len(samples)}) with "
            f"per_sample=True, got shape {tuple(g.shape)}"
        )
    moved = torch.vmap(action, in_dims=(0 if per_sample else None, 0, 0))(
        g, samples.theta, samples.X
    )
    if not bool(torch.isfinite(moved).all()):
        raise ValueError("the action moved some parameters to non-finite values")
    after = torch.vmap(loss.flat)(moved, samples.X, samples.Y)
    change = (after - samples.loss).abs() / samples.loss.abs().clamp_min(1.0)
    worst = int(change.argmax())
    value = float(change[worst])
    if value > rtol:
        raise AssertionError(
            f"the loss changes by {value:.3g} (relative) at sample {worst} under the action, "
            f"above rtol={rtol:g}: {float(samples.loss[worst]):.6g} -> {float(after[worst]):.6g}"
        )
    return value

"""Known discrete symmetries: permutations and sign flips of hidden units (paper 002, app. A).

A hidden-unit map is a signed permutation of the h hidden units; it acts on every parameter
axis that indexes hidden units (rows of the weights into the hidden layer, columns of the
weights out of it). Which axes those are is a property of the kind of loss, looked up by its
type (:attr:`TwoLayerLoss.hidden_axes <symdisc.losses.TwoLayerLoss.hidden_axes>`,
:attr:`TanhSkipLoss.hidden_axes <symdisc.losses.TanhSkipLoss.hidden_axes>`); other kinds raise a
TypeError naming the kind. Both maps are vmappable in theta (P,).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from symdisc.known._checks import check_theta
from symdisc.losses import ODD, ParamLoss, TanhSkipLoss, TwoLayerLoss
from symdisc.runtime.checks import check_instance

__all__ = ["flip_signs", "permute_hidden"]


def _hidden_axes(loss: object, what: str) -> dict[str, tuple[int, ...]]:
    check_instance(loss, "loss", ParamLoss)
    if not isinstance(loss, (TwoLayerLoss, TanhSkipLoss)):
        raise TypeError(
            f"`loss` must be a TwoLayerLoss or a TanhSkipLoss for {what}: no hidden-unit "
            f"symmetry is known for {type(loss).__name__}"
        )
    return loss.hidden_axes


def _on_hidden_axes(
    loss: ParamLoss,
    axes: dict[str, tuple[int, ...]],
    theta: Tensor,
    along: Callable[[Tensor, int], Tensor],
) -> Tensor:
    """theta (P,) with ``along(parameter, axis)`` applied on every hidden axis in turn."""
    q = loss.unflatten(theta)
    for name, dims in axes.items():
        for axis in dims:
            q[name] = along(q[name], axis)
    return loss.flatten(q)


def _broadcast(values: Tensor, axis: int, ndim: int) -> Tensor:
    """``values`` (h,) shaped to multiply axis ``axis`` of an ``ndim``-dimensional tensor."""
    return values.reshape([-1 if a == axis else 1 for a in range(ndim)])


def permute_hidden(loss: ParamLoss, theta: Tensor, perm: Tensor | Sequence[int]) -> Tensor:
    """Permute the hidden units: theta (P,) -> theta' (P,) with ``L(theta', X) = L(theta, X)``.

    Two-layer net: ``W1 -> P W1``, ``b1 -> P b1``, ``W2 -> W2 P^T`` (rows of W1 and b1 and
    columns of W2 taken in the order ``perm``), for every activation; the three-layer tanh net
    with a skip: ``W1 -> P W1``, ``W2 -> P W2 P^T``, ``W3 -> W3 P^T`` (the skip ties the two
    hidden layers to one permutation). Paper 002, appendix A. Vmappable in theta (not in perm).

    Raises:
        TypeError: if ``loss`` is not a TwoLayerLoss or a TanhSkipLoss, or ``perm`` is not
            integer.
        ValueError: if ``perm`` is not a permutation of ``range(h)``, or theta is not (P,).
    """
    axes = _hidden_axes(loss, "'permute_hidden'")
    theta = check_theta(loss, theta)
    idx = torch.as_tensor(perm)
    if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"`perm` must hold integers, got dtype {idx.dtype}")
    if idx.shape != (loss.h,) or sorted(idx.tolist()) != list(range(loss.h)):
        raise ValueError(
            f"`perm` must be a permutation of range({loss.h}) (the hidden units), "
            f"got {idx.tolist()}"
        )
    idx = idx.to(device=theta.device, dtype=torch.long)
    return _on_hidden_axes(loss, axes, theta, lambda p, axis: p.index_select(axis, idx))


def flip_signs(loss: ParamLoss, theta: Tensor, signs: Tensor | Sequence[float]) -> Tensor:
    """Flip the signs of hidden units: theta (P,) -> theta' (P,), for odd activations.

    With ``S = diag(signs)``, signs in {+1, -1}^h and ``s(-z) = -s(z)``: two-layer net
    ``W1 -> S W1``, ``b1 -> S b1``, ``W2 -> W2 S``; three-layer tanh net with a skip
    ``W1 -> S W1``, ``W2 -> S W2 S``, ``W3 -> W3 S``. ``L(theta', X) = L(theta, X)`` exactly
    (paper 002, appendix A). Vmappable in theta (not in signs).

    Raises:
        TypeError: if ``loss`` is not a TwoLayerLoss or a TanhSkipLoss.
        ValueError: if the activation is not odd (identity, tanh), ``signs`` is not in
            {+1, -1}^h, or theta is not (P,).
    """
    axes = _hidden_axes(loss, "'flip_signs'")
    if loss.activation not in ODD:
        raise ValueError(
            f"`loss` must have an odd activation {ODD} for 'flip_signs', "
            f"got activation {loss.activation!r}"
        )
    theta = check_theta(loss, theta)
    s = torch.as_tensor(signs)
    if s.shape != (loss.h,) or not all(v in (1, -1) for v in s.tolist()):
        raise ValueError(
            f"`signs` must be {loss.h} entries in {{+1, -1}} (one per hidden unit), "
            f"got {s.tolist()}"
        )
    s = s.to(device=theta.device, dtype=theta.dtype)
    return _on_hidden_axes(loss, axes, theta, lambda p, axis: p * _broadcast(s, axis, p.ndim))

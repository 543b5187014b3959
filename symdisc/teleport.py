"""Symmetry teleportation along a (learned) group orbit, then gradient descent.

Paper 002 cites symmetry teleportation (Zhao et al. 2022): a parameter symmetry moves theta along
its orbit, where the loss stays put, to a point whose gradient is steeper, and gradient descent
continues from there. Zhao et al. use known actions; here the action may be the learned
``a_X(g, theta)`` of paper 002 (section 4, eqs. 2-4) with its learned generators h, so the group
element is ``g = exp(sum_i c_i h_i)`` and the coefficients c (k,) are what the ascent moves.

A learned action is only approximately invariant, so every teleport step can be followed by a
projection back onto the level set ``L = L(theta_0)`` (Newton steps along the gradient), and a
step that would change the loss by more than a relative tolerance ends the ascent without being
taken; a teleport that took no step returns theta unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import ParamLoss
from symdisc.runtime.checks import check_bool, check_float, check_instance, check_int
from symdisc.validation import check_tensor

__all__ = ["TeleportResult", "gradient_descent", "teleport"]

_NEWTON_STEPS = 5  # the most Newton steps of one projection onto the level set


@dataclass(frozen=True)
class TeleportResult:
    """Where a teleport went and what it changed.

    Attributes:
        theta: (P,) the parameters after the teleport (theta itself when no step was taken).
        loss_before, loss_after: the loss at the start and at ``theta``.
        loss_change: ``|loss_after - loss_before| / loss_before`` (relative).
        grad_norm_before, grad_norm_after: ``||grad_theta L||`` at the start and at ``theta``.
        grad_norm_gain: ``grad_norm_after / grad_norm_before``.
        steps_taken: ascent steps taken (0: the teleport was rejected, theta is unchanged).
        max_drift: the largest relative loss change of a step before its projection (the
            action's own invariance error along the path; equal to the final change without
            projection).
    """

    theta: Tensor
    loss_before: float
    loss_after: float
    loss_change: float
    grad_norm_before: float
    grad_norm_after: float
    grad_norm_gain: float
    steps_taken: int
    max_drift: float

    def __repr__(self) -> str:
        return (
            f"TeleportResult(theta={tuple(self.theta.shape)}, steps_taken={self.steps_taken}, "
            f"loss {self.loss_before:.4g} -> {self.loss_after:.4g} "
            f"(change {self.loss_change:.2g}), grad_norm_gain={self.grad_norm_gain:.3g}, "
            f"max_drift={self.max_drift:.2g})"
        )

    @property
    def accepted(self) -> bool:
        """Whether the teleport moved theta."""
        return self.steps_taken > 0


def _loss_and_grad(loss: ParamLoss, theta: Tensor, X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    grad, value = torch.func.grad_and_value(loss.flat)(theta, X, Y)
    return value, grad


def _relative(value: Tensor, ref: Tensor) -> float:
    return float((value - ref).abs() / ref.abs().clamp_min(torch.finfo(ref.dtype).tiny))


def _check_sample(loss: ParamLoss, theta: Tensor, X: Tensor, Y: Tensor) -> None:
    """theta (P,), X and Y of the loss's shapes, theta floating and finite."""
    for name, value, shape in (
        ("theta", theta, (loss.num_params,)),
        ("X", X, tuple(loss.x_shape)),
        ("Y", Y, tuple(loss.y_shape)),
    ):
        check_instance(value, name, Tensor)
        if tuple(value.shape) != shape:
            raise ValueError(
                f"`{name}` must be one sample of shape {shape} for the loss {loss.name!r}, "
                f"got {tuple(value.shape)}"
            )
    check_tensor(theta, "theta", floating=True, finite=True)


def teleport(
    loss: ParamLoss,
    action: Action,
    generators: Tensor,
    theta: Tensor,
    X: Tensor,
    Y: Tensor,
    *,
    steps: int = 10,
    step_size: float = 0.1,
    tol: float = 1e-3,
    project: bool = True,
    max_gain: float | None = None,
    lookahead: float | None = None,
    horizon: int = 1,
) -> TeleportResult:
    """Move theta along the orbit of ``action`` to where gradient descent goes faster.

    The objective J(theta) is ``log ||grad_theta L(theta, X, Y)||^2`` (Zhao et al. 2022), or,
    with ``lookahead = lr``, ``-log L`` after ``horizon`` gradient-descent steps of that ``lr``
    from theta (a teleport target that accounts for the sharpness a larger gradient brings:
    with a fixed learning rate the steepest point of an orbit is often one where descent
    diverges). Each of ``steps`` ascent steps takes the gradient u (k,) of
    ``c -> J(a_X(exp(sum_i c_i h_i), theta))`` at c = 0 (through ``torch.linalg.matrix_exp``)
    and moves ``theta <- a_X(exp(step_size * sum_i u_i h_i / ||u||), theta, X)``: a step of
    length ``step_size`` in the algebra coordinates, composed with the current point. With
    ``project`` the moved point is put back on the level set of the starting loss L0 by Newton
    steps ``theta -= (L - L0) grad / ||grad||^2`` (at most 5, until the relative change is below
    ``tol / 100``; a learned action is only approximately invariant). A step whose relative
    loss change ``|L - L0| / L0`` exceeds ``tol``, or that does not increase J, is not taken and
    ends the ascent; so does reaching ``max_gain`` (gradient norm over the starting one). A
    teleport that took no step returns theta unchanged
    (``steps_taken = 0``).

    Args:
        loss: the loss of one sample, ``loss.flat(theta (P,), X, Y) -> scalar``.
        action: ``action(g (d, d), theta (P,), X) -> theta' (P,)``: a learned
            :class:`~symdisc.actions.MLPAction` (cast to theta's dtype), a
            :class:`~symdisc.known.KnownAction`, ...
        generators: (k, d, d) the Lie algebra elements h_i the ascent combines.
        theta: (P,) the parameters; X, Y: one data sample of the loss's shapes.
        steps: the most ascent steps.
        step_size: the length of one step in the algebra coordinates c.
        tol: the largest relative loss change accepted.
        project: whether to project each step back onto the level set of the loss.
        max_gain: stop once the gradient norm is this many times the starting one (None: no cap).
        lookahead: the learning rate of the look-ahead objective (None: the gradient norm).
        horizon: gradient-descent steps of the look-ahead objective.

    Returns:
        A :class:`TeleportResult` with the new theta (P,) and the loss change and gradient-norm
        gain of the teleport.

    Raises:
        TypeError: for a loss that is not a ParamLoss, an action that is not an Action, tensors
            that are not tensors, or settings of the wrong type.
        ValueError: for generators that are not (k, d, d) with the action's d, a theta that is
            not (P,), non-positive ``steps``, ``step_size``, ``tol``, ``lookahead`` or
            ``horizon``, or ``max_gain`` <= 1.
    """
    check_instance(loss, "loss", ParamLoss)
    check_instance(action, "action", Action)
    for name, t in (("generators", generators), ("theta", theta), ("X", X), ("Y", Y)):
        check_instance(t, name, Tensor)
    d = action.d
    if generators.ndim != 3 or generators.shape[1:] != (d, d) or generators.shape[0] < 1:
        raise ValueError(
            f"`generators` must be (k, {d}, {d}) for an action of GL({d}), "
            f"got {tuple(generators.shape)}"
        )
    _check_sample(loss, theta, X, Y)
    check_tensor(generators, "generators", floating=True, finite=True)
    check_int(steps, "steps", minimum=1)
    check_float(step_size, "step_size", positive=True)
    check_float(tol, "tol", positive=True)
    check_bool(project, "project")
    if max_gain is not None and check_float(max_gain, "max_gain", positive=True) <= 1.0:
        raise ValueError(f"`max_gain` must be > 1, got {max_gain!r}")
    if lookahead is not None:
        check_float(lookahead, "lookahead", positive=True)
    check_int(horizon, "horizon", minimum=1)

    h = generators.detach().to(theta.dtype)
    theta = theta.detach()
    X, Y = X.to(theta.dtype), Y.to(theta.dtype)
    grad_fn = torch.func.grad(loss.flat)

    def objective(at: Tensor) -> Tensor:
        if lookahead is None:
            return torch.log(grad_fn(at, X, Y).pow(2).sum())
        for _ in range(horizon):
            at = at - lookahead * grad_fn(at, X, Y)
        return -torch.log(loss.flat(at, X, Y))

    def moved(c: Tensor, at: Tensor) -> Tensor:
        return action(torch.linalg.matrix_exp(torch.einsum("k,kij->ij", c, h)), at, X)

    def along_orbit(c: Tensor, at: Tensor) -> Tensor:
        return objective(moved(c, at))

    with torch.enable_grad():
        l0, g0 = _loss_and_grad(loss, theta, X, Y)
        norm0 = g0.norm()
        current, norm, taken, drift = theta, norm0, 0, 0.0
        best = objective(theta).detach()
        zero = torch.zeros(h.shape[0], dtype=theta.dtype, device=theta.device)
        for _ in range(steps):
            u = torch.func.grad(along_orbit)(zero, current).detach()
            if not bool(torch.isfinite(u).all()) or float(u.norm()) == 0.0:
                break
            candidate = moved(step_size * u / u.norm(), current).detach()
            value, grad = _loss_and_grad(loss, candidate, X, Y)
            step_drift = _relative(value, l0)
            for _ in range(_NEWTON_STEPS if project else 0):
                if _relative(value, l0) <= 0.01 * tol:
                    break
                candidate = candidate - (value - l0) * grad / grad.pow(2).sum()
                value, grad = _loss_and_grad(loss, candidate, X, Y)
            if not bool(torch.isfinite(candidate).all()) or _relative(value, l0) > tol:
                break
            score = objective(candidate).detach()
            if not score > best:
                break
            current, norm, best = candidate, grad.norm().detach(), score
            taken, drift = taken + 1, max(drift, step_drift)
            if max_gain is not None and float(norm / norm0) >= max_gain:
                break
        value = loss.flat(current, X, Y).detach()
    return TeleportResult(
        theta=current,
        loss_before=float(l0),
        loss_after=float(value),
        loss_change=_relative(value, l0),
        grad_norm_before=float(norm0),
        grad_norm_after=float(norm),
        grad_norm_gain=float(norm / norm0),
        steps_taken=taken,
        max_drift=drift,
    )


def gradient_descent(
    loss: ParamLoss, theta: Tensor, X: Tensor, Y: Tensor, *, lr: float, steps: int
) -> Tensor:
    """Plain gradient descent ``theta <- theta - lr grad_theta L`` on one sample.

    Returns the losses (steps + 1,) at every iterate, the starting one first; a loss that turns
    non-finite is carried as inf to the end (the run diverged).

    Raises:
        TypeError, ValueError: for a non-positive ``lr`` or ``steps``.
    """
    check_instance(loss, "loss", ParamLoss)
    check_float(lr, "lr", positive=True)
    check_int(steps, "steps", minimum=1)
    _check_sample(loss, theta, X, Y)
    theta = theta.detach()
    losses = torch.full((steps + 1,), float("inf"), dtype=theta.dtype)
    for t in range(steps + 1):
        value, grad = _loss_and_grad(loss, theta, X, Y)
        if not bool(torch.isfinite(value)):
            break
        losses[t] = value.detach()
        theta = theta - lr * grad
    return losses

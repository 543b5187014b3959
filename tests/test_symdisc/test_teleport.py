"""Symmetry teleportation (symdisc.teleport): the teleport keeps the loss, raises the gradient
norm along a true symmetry, rejects moves that change the loss, and checks its arguments."""

from __future__ import annotations

import pytest
import torch

from symdisc.actions import Action, LinearAction
from symdisc.known import KnownAction
from symdisc.losses import two_layer
from symdisc.teleport import gradient_descent, teleport

F64 = torch.float64


def _setup(seed: int = 0, h: int = 2):
    loss = two_layer("identity", m=2, h=h, n=3, k=2)
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(loss.num_params, generator=g, dtype=F64)
    X = torch.randn(loss.x_shape, generator=g, dtype=F64)
    Y = torch.randn(loss.y_shape, generator=g, dtype=F64)
    basis = torch.eye(h * h, dtype=F64).reshape(h * h, h, h)
    return loss, theta, X, Y, basis


def _grad_norm(loss, theta, X, Y):
    return float(torch.func.grad(loss.flat)(theta, X, Y).norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("project", [True, False])
def test_known_action_keeps_the_loss_and_raises_the_gradient_norm(seed, project):
    loss, theta, X, Y, basis = _setup(seed)
    result = teleport(
        loss, KnownAction(loss, "gl"), basis, theta, X, Y, steps=8, project=project, tol=1e-9
    )
    before, after = float(loss.flat(theta, X, Y)), float(loss.flat(result.theta, X, Y))
    assert result.accepted and result.steps_taken == 8
    assert abs(after - before) <= 1e-10 * before  # a true symmetry: the loss is kept exactly
    assert result.loss_change == pytest.approx(abs(after - before) / before, abs=1e-15)
    assert result.max_drift <= 1e-10  # not the projection: the action itself keeps the loss
    norm0, norm1 = _grad_norm(loss, theta, X, Y), _grad_norm(loss, result.theta, X, Y)
    assert norm1 > 1.2 * norm0
    assert result.grad_norm_gain == pytest.approx(norm1 / norm0, rel=1e-12)
    # the product W2 W1 (what the net computes) is unchanged, the factors are not
    p0, p1 = loss.unflatten(theta), loss.unflatten(result.theta)
    torch.testing.assert_close(p1["W2"] @ p1["W1"], p0["W2"] @ p0["W1"], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(p1["W1"], p0["W1"])


def test_max_gain_stops_the_ascent():
    loss, theta, X, Y, basis = _setup(0)
    action = KnownAction(loss, "gl")
    free = teleport(loss, action, basis, theta, X, Y, steps=30)
    capped = teleport(loss, action, basis, theta, X, Y, steps=30, max_gain=1.3)
    assert free.grad_norm_gain > 1.3
    assert 1.3 <= capped.grad_norm_gain < free.grad_norm_gain
    assert capped.steps_taken < free.steps_taken


def test_lookahead_objective_lowers_the_loss_after_descent():
    loss, theta, X, Y, basis = _setup(1)
    lr = 0.02
    result = teleport(
        loss, KnownAction(loss, "gl"), basis, theta, X, Y, steps=10, lookahead=lr, horizon=3
    )
    assert result.accepted and result.loss_change <= 1e-12
    plain = gradient_descent(loss, theta, X, Y, lr=lr, steps=3)
    moved = gradient_descent(loss, result.theta, X, Y, lr=lr, steps=3)
    assert moved[0] == pytest.approx(float(plain[0]), rel=1e-10)
    assert moved[-1] < plain[-1]


def test_a_move_that_changes_the_loss_is_rejected():
    # g theta on all of theta scales W1 and W2 together: not a symmetry of the loss
    loss, theta, X, Y, basis = _setup(0)
    action = LinearAction(loss, 2)
    result = teleport(loss, action, basis, theta, X, Y, project=False, tol=1e-3)
    assert not result.accepted and result.steps_taken == 0
    assert torch.equal(result.theta, theta)
    assert result.loss_change == 0.0 and result.grad_norm_gain == 1.0


class _Perturbed(Action):
    """The known GL action plus a drift off the level set, linear in g - I: an action that is
    only approximately a symmetry, as a learned one is."""

    data_dependent = False

    def __init__(self, loss, eps: float) -> None:
        super().__init__()
        self.known, self.d = KnownAction(loss, "gl"), loss.h
        self.eps = eps
        self.direction = torch.ones(loss.num_params, dtype=F64) / loss.num_params**0.5

    def forward(self, g, theta, X):
        off = (g - torch.eye(self.d, dtype=g.dtype)).abs().sum()
        return self.known(g, theta, X) + self.eps * off * self.direction


def test_projection_puts_an_approximate_action_back_on_the_level_set():
    loss, theta, X, Y, basis = _setup(0)
    action = _Perturbed(loss, 0.5)
    raw = teleport(loss, action, basis, theta, X, Y, project=False, tol=1e-3)
    fixed = teleport(loss, action, basis, theta, X, Y, project=True, tol=1e-3)
    assert not raw.accepted and torch.equal(raw.theta, theta)
    assert fixed.accepted and fixed.max_drift > 1e-2 and fixed.loss_change <= 1e-3
    assert fixed.grad_norm_gain > 1.0


def test_gradient_descent_matches_a_hand_loop():
    loss, theta, X, Y, _ = _setup(0)
    losses = gradient_descent(loss, theta, X, Y, lr=0.01, steps=5)
    t = theta.clone()
    for i in range(6):
        assert float(losses[i]) == pytest.approx(float(loss.flat(t, X, Y)), rel=1e-12)
        t = t - 0.01 * torch.func.grad(loss.flat)(t, X, Y)
    diverged = gradient_descent(loss, theta, X, Y, lr=50.0, steps=200)
    assert torch.isinf(diverged[-1]) and torch.isfinite(diverged[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"loss": "x"}, TypeError, "loss"),
        ({"action": lambda g, t, x: t}, TypeError, "action"),
        ({"generators": torch.zeros(2, 3, 3, dtype=F64)}, ValueError, "generators"),
        ({"generators": torch.zeros(0, 2, 2, dtype=F64)}, ValueError, "generators"),
        ({"theta": torch.zeros(3, dtype=F64)}, ValueError, "theta"),
        ({"X": [[1.0]]}, TypeError, "X"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 1.5}, TypeError, "steps"),
        ({"step_size": -0.1}, ValueError, "step_size"),
        ({"tol": 0.0}, ValueError, "tol"),
        ({"project": 1}, TypeError, "project"),
        ({"max_gain": 1.0}, ValueError, "max_gain"),
        ({"lookahead": 0.0}, ValueError, "lookahead"),
        ({"horizon": 0}, ValueError, "horizon"),
    ],
)
def test_argument_errors(kwargs, error, match):
    loss, theta, X, Y, basis = _setup(0)
    args = dict(loss=loss, action=KnownAction(loss, "gl"), generators=basis, theta=theta, X=X, Y=Y)
    settings = {k: v for k, v in kwargs.items() if k not in args}
    args |= {k: v for k, v in kwargs.items() if k in args}
    with pytest.raises(error, match=match):
        teleport(**args, **settings)

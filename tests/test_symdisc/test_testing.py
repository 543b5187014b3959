"""symdisc.testing.assert_loss_invariant: passes a known symmetry, catches a broken one."""

import pytest
import torch

from symdisc import sample, two_layer
from symdisc.known import KnownAction
from symdisc.testing import assert_loss_invariant


@pytest.fixture
def loss_and_samples():
    loss = two_layer("identity", h=3)
    return loss, sample(loss, 16, dtype=torch.float64)


def _invertible(n: int, seed: int) -> torch.Tensor:
    g = torch.randn(n, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + 0.3 * g


def test_a_known_symmetry_passes_shared_and_per_sample(loss_and_samples):
    loss, s = loss_and_samples
    action = KnownAction(loss, "gl")
    assert assert_loss_invariant(loss, action, _invertible(1, 0)[0], s) < 1e-12
    assert assert_loss_invariant(loss, action, _invertible(16, 1), s, per_sample=True) < 1e-12


def test_an_action_that_changes_the_loss_fails_with_where_and_how_much(loss_and_samples):
    loss, s = loss_and_samples

    def scale_everything(g, theta, X):
        return 2.0 * theta

    with pytest.raises(AssertionError, match=r"changes by .* at sample \d+"):
        assert_loss_invariant(loss, scale_everything, torch.eye(3, dtype=torch.float64), s)


def test_argument_errors(loss_and_samples):
    loss, s = loss_and_samples
    action = KnownAction(loss, "gl")
    with pytest.raises(ValueError, match="one element per sample"):
        assert_loss_invariant(loss, action, _invertible(3, 0), s, per_sample=True)
    with pytest.raises(TypeError, match="`samples` must be a Samples"):
        assert_loss_invariant(loss, action, _invertible(1, 0)[0], (s.theta, s.X))
    with pytest.raises(ValueError, match="`rtol`"):
        assert_loss_invariant(loss, action, _invertible(1, 0)[0], s, rtol=float("nan"))

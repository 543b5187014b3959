"""The fast path of MLPAction.tangents (a torch.autograd.Function with its backward written out)
against autograd's record of the same pass and the generic vmapped jvp, in float64."""

import pytest
import torch

from symdisc import actions
from symdisc.actions import Action, LinearAction, MLPAction
from symdisc.losses import two_layer
from symdisc.objective import Weights, _weighted, infinitesimal_objective
from symdisc.sampler import sample

F64 = torch.float64


def _case(data_dependent: bool, k: int):
    loss = two_layer("sigmoid", m=2, h=3, n=2, k=1, bias=True)
    torch.manual_seed(0)
    action = MLPAction(loss, 3, (8, 7, 6), data_dependent=data_dependent).double()
    samples = sample(loss, 9, seed=0, dtype=F64)
    h = torch.randn(k, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    return action, samples, h.requires_grad_(True)


def _value_and_grads(action, samples, h, tangents):
    """A scalar that weighs every entry of a_X(I, theta) and of v differently, its gradient in
    every parameter of the action, in h, theta and X."""
    theta = samples.theta.clone().requires_grad_(True)
    X = samples.X.clone().requires_grad_(True)
    moved, v = tangents(action, h, theta, X)
    ramp = torch.linspace(-1, 2, v.numel(), dtype=F64).reshape(v.shape)
    total = (moved.sin() * samples.theta).sum() + (v.cos() * ramp).sum() + v.norm(dim=-1).sum()
    inputs = [*action.parameters(), h, theta] + ([X] if action.data_dependent else [])
    return moved, v, torch.autograd.grad(total, inputs)


def _composed(action, h, theta, X):
    """MLPAction.tangents through its plain tensor operations (the path autograd records)."""
    plain = actions._plain_autograd
    actions._plain_autograd = lambda: False
    try:
        return MLPAction.tangents(action, h, theta, X)
    finally:
        actions._plain_autograd = plain


@pytest.mark.parametrize("data_dependent", [True, False])
@pytest.mark.parametrize("k", [1, 3])
def test_written_out_backward_equals_autograd(data_dependent, k):
    action, samples, h = _case(data_dependent, k)
    fast = _value_and_grads(action, samples, h, MLPAction.tangents)
    slow = _value_and_grads(action, samples, h, _composed)
    generic = Action.tangents(action, h.detach(), samples.theta, samples.X)  # vmapped jvp
    torch.testing.assert_close(fast[0], generic[0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(fast[1], generic[1], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(slow[1], generic[1], rtol=1e-12, atol=1e-13)
    assert len(fast[2]) == len(slow[2])
    for g_fast, g_slow in zip(fast[2], slow[2]):
        assert g_fast.abs().max() > 0  # every gradient is exercised
        torch.testing.assert_close(g_fast, g_slow, rtol=1e-11, atol=1e-12)


def test_fast_path_is_taken_and_functorch_falls_back():
    action, samples, h = _case(True, 2)
    _, v = action.tangents(h, samples.theta, samples.X)
    assert type(v.grad_fn).__name__ == "TransposeBackward0"
    assert "SiLUTangents" in type(v.grad_fn.next_functions[0][0]).__name__
    # under torch.func the plain operations run (vmapped, differentiated by functorch)
    params = {f"action.{n}": p for n, p in action.named_parameters()}

    def field_sum(p):
        return torch.func.functional_call(
            _TangentsOf(action), p, (h.detach(), samples.theta, samples.X)
        ).sum()

    grads = torch.func.grad(field_sum)(params)
    v_sum = action.tangents(h.detach(), samples.theta, samples.X)[1].sum()
    expected = torch.autograd.grad(v_sum, list(params.values()))
    for name, g in zip(params, expected):
        torch.testing.assert_close(grads[name], g, rtol=1e-11, atol=1e-12)


class _TangentsOf(torch.nn.Module):
    """``forward(h, theta, X) -> v`` of an action, so torch.func can swap its parameters."""

    def __init__(self, action: MLPAction) -> None:
        super().__init__()
        self.action = action

    def forward(self, h, theta, X):
        return self.action.tangents(h, theta, X)[1]


def test_objective_gradients_equal_the_generic_path():
    """infinitesimal_objective through the fast path and through the generic vmapped jvp."""
    action, samples, h = _case(True, 2)
    weights = Weights.paper()
    total, _ = infinitesimal_objective(action, h, samples, weights)
    params = [*action.parameters(), h]
    fast = torch.autograd.grad(total, params)

    generic = _Generic(action)
    total_ref, _ = infinitesimal_objective(generic, h, samples, weights)
    slow = torch.autograd.grad(total_ref, params)
    torch.testing.assert_close(total, total_ref, rtol=1e-12, atol=0)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class _Generic(Action):
    """An action's forward with the generic tangents (the vmapped jvp of Action)."""

    def __init__(self, inner: MLPAction) -> None:
        super().__init__()
        self.inner, self.d, self.data_dependent = inner, inner.d, inner.data_dependent

    def forward(self, g, theta, X):
        return self.inner(g, theta, X)


def test_weighted_sum_is_the_sum_of_weighted_terms():
    weights = Weights.paper(orth=0.3)
    terms = {
        name: torch.tensor(float(i + 1), dtype=F64)
        for i, name in enumerate(("invariance", "identity", "reg_id", "orth", "sparse"))
    }
    expected = sum(getattr(weights, name) * float(v) for name, v in terms.items())
    assert float(_weighted(terms, weights)) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("data_dependent", [True, False])
def test_second_derivatives_through_the_fast_path(data_dependent):
    """With create_graph=True the backward is recorded, so gradients of gradients are right."""
    action, samples, h = _case(data_dependent, 2)
    params = [*action.parameters(), h]

    def grad_of_grad_norm(tangents):
        moved, v = tangents(action, h, samples.theta, samples.X)
        grads = torch.autograd.grad(v.square().sum() + moved.sin().sum(), params, create_graph=True)
        return torch.autograd.grad(sum(g.square().sum() for g in grads), params)

    for fast, slow in zip(grad_of_grad_norm(MLPAction.tangents), grad_of_grad_norm(_composed)):
        assert fast.abs().max() > 0
        torch.testing.assert_close(fast, slow, rtol=1e-11, atol=1e-12)


def test_linear_action_rejects_a_singular_g():
    loss = two_layer("identity")
    action = LinearAction(loss, 2)
    theta, X = torch.randn(loss.num_params), torch.zeros(loss.x_shape)
    with pytest.raises(ValueError, match="`g` must be invertible"):
        action(torch.zeros(2, 2), theta, X)
    with pytest.raises(ValueError, match="`g` must be invertible"):  # g unbatched under vmap
        torch.vmap(action, in_dims=(None, 0, None))(torch.ones(2, 2), theta.repeat(3, 1), X)
    g = torch.stack([torch.eye(2), 2 * torch.eye(2)])  # batched by vmap: runs, unchecked
    moved = torch.vmap(action, in_dims=(0, None, None))(g, theta, X)
    torch.testing.assert_close(moved, torch.stack([theta, 2 * theta]))

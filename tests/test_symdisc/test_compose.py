"""Proposition 3.1 and corollaries C.1-C.3: induced actions keep the group axioms and the loss
invariance of the subnetwork's symmetry, infinitesimally and along finite flows (float64)."""

import pytest
import torch

from symdisc.actions import Action
from symdisc.compose import (
    Embedding,
    InducedAction,
    batch_embedding,
    depth_embedding,
    width_embedding,
)
from symdisc.known import KnownAction
from symdisc.losses import mlp, three_layer_tanh_skip, two_layer
from symdisc.sampler import sample

F64 = torch.float64


def gl_generators(h, seed=0):
    return torch.randn(3, h, h, dtype=F64, generator=torch.Generator().manual_seed(seed)) * 0.3


def diagonal_generators(h, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.diag_embed(torch.randn(3, h, dtype=F64, generator=g) * 0.5)


CASES = {
    # GL(2) of a 2-unit linear block (layers 2-3) inside an 8-unit, 4-layer linear network
    "linear_gl_block": dict(
        deep=lambda: mlp("identity", [3, 8, 8, 8, 2], k=2),
        small=lambda: two_layer("identity", m=8, h=2, n=8, k=2),
        layer=2,
        units=[1, 5],
        symmetry="gl",
        generators=gl_generators,
        t=1.0,
    ),
    # positive rescaling of the hidden layer between W2 and W3 of a deep ReLU network
    "relu_rescaling": dict(
        deep=lambda: mlp("relu", [3, 6, 5, 4, 2], k=3),
        small=lambda: two_layer("relu", m=4, h=5, n=6, k=3),
        layer=2,
        units=None,
        symmetry="rescaling",
        generators=diagonal_generators,
        t=1.0,
    ),
    # the data-dependent GL action of a sigmoid layer, fed by the layer before it
    "sigmoid_data_dependent": dict(
        deep=lambda: mlp("sigmoid", [3, 4, 3, 2, 1], k=2),
        small=lambda: two_layer("sigmoid", m=2, h=3, n=4, k=2),
        layer=2,
        units=None,
        symmetry="data_dependent_gl",
        generators=gl_generators,
        t=0.1,
    ),
}


def build(name):
    spec = CASES[name]
    deep, small = spec["deep"](), spec["small"]()
    embedding = depth_embedding(small, deep, spec["layer"], spec["units"])
    action = InducedAction(KnownAction(small, spec["symmetry"]), embedding).double()
    h = spec["generators"](small.h)
    return deep, embedding, action, h, spec["t"]


def loss_values(loss, theta, samples):
    return torch.vmap(loss.flat)(theta, samples.X, samples.Y)


def assert_invariant(loss, moved, samples):
    """The loss is unchanged wherever the action is defined (the data-dependent action needs
    g s(H) inside the range of the sigmoid); it must be defined on most samples."""
    defined = torch.isfinite(moved).all(dim=1)
    assert defined.float().mean() >= 0.75, defined
    torch.testing.assert_close(
        loss_values(loss, moved[defined], samples.batch(defined.nonzero()[:, 0])),
        samples.loss[defined],
        rtol=1e-9,
        atol=1e-10,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_induced_action_is_an_infinitesimal_symmetry(name):
    deep, embedding, action, h, _ = build(name)
    samples = sample(deep, 16, seed=1, dtype=F64)
    embedding.check(samples.theta, samples.X)
    primal, v = action.tangents(h, samples.theta, samples.X)
    torch.testing.assert_close(primal, samples.theta)
    slow = Action.tangents(action, h, samples.theta, samples.X)[1]  # vmapped jvp of a' itself
    torch.testing.assert_close(v, slow, rtol=1e-10, atol=1e-12)
    dot = torch.einsum("np,nkp->nk", samples.grad, v).abs()
    scale = samples.grad.norm(dim=1, keepdim=True) * v.norm(dim=2)
    assert (dot / scale).max() < 1e-10
    outside = ~torch.isin(torch.arange(deep.num_params), embedding.index)
    assert v[:, :, outside].abs().max() == 0  # theta_1 never moves


@pytest.mark.parametrize("name", sorted(CASES))
def test_induced_action_keeps_the_loss_and_the_group_axioms_along_a_finite_flow(name):
    deep, _, action, h, t_max = build(name)
    samples = sample(deep, 16, seed=2, dtype=F64)
    act = torch.vmap(action, in_dims=(None, 0, 0))
    for t in torch.linspace(0, t_max, 5, dtype=F64)[1:]:
        g = torch.linalg.matrix_exp(t * h[0])
        moved = act(g, samples.theta, samples.X)
        assert not torch.allclose(moved, samples.theta)
        assert_invariant(deep, moved, samples)
    eye = torch.eye(h.shape[-1], dtype=F64)
    torch.testing.assert_close(act(eye, samples.theta, samples.X), samples.theta)
    g1 = torch.linalg.matrix_exp(0.5 * t_max * h[1])
    g2 = torch.linalg.matrix_exp(0.5 * t_max * h[2])
    two_steps = act(g2, act(g1, samples.theta, samples.X), samples.X)
    torch.testing.assert_close(
        two_steps, act(g2 @ g1, samples.theta, samples.X), rtol=1e-9, atol=1e-10
    )


def test_a_misplaced_embedding_breaks_the_invariance():
    deep, good, _, h, _ = build("linear_gl_block")
    small = good.small
    wrong = Embedding(small, deep, good.index.roll(3), good.context)  # scrambled theta_2
    action = InducedAction(KnownAction(small, "gl"), wrong).double()
    samples = sample(deep, 16, seed=3, dtype=F64)
    moved = torch.vmap(action, in_dims=(None, 0, 0))(
        torch.linalg.matrix_exp(h[0]), samples.theta, samples.X
    )
    change = (loss_values(deep, moved, samples) - samples.loss).abs() / samples.loss
    assert change.median() > 1e-3


@pytest.mark.parametrize(
    "bias,activation,symmetry",
    [
        (False, "identity", "gl"),
        (True, "relu", "rescaling"),
        (True, "leaky_relu", "rescaling"),
    ],
)
def test_width_embedding_lifts_a_narrow_symmetry(bias, activation, symmetry):
    small = two_layer(activation, m=2, h=2, n=3, k=2, bias=bias)
    big = two_layer(activation, m=2, h=7, n=3, k=2, bias=bias)
    action = InducedAction(
        KnownAction(small, symmetry), width_embedding(small, big, [4, 1])
    ).double()
    samples = sample(big, 16, seed=4, dtype=F64)
    h = (gl_generators if symmetry == "gl" else diagonal_generators)(2)
    moved = torch.vmap(action, in_dims=(None, 0, 0))(
        torch.linalg.matrix_exp(h[0]), samples.theta, samples.X
    )
    torch.testing.assert_close(
        loss_values(big, moved, samples), samples.loss, rtol=1e-9, atol=1e-10
    )
    # units 4 and 1 of W1's rows moved, the others did not
    W1 = big.unflatten(moved)["W1"] - big.unflatten(samples.theta)["W1"]
    assert W1[:, [4, 1]].abs().max() > 1e-3 and W1[:, [0, 2, 3, 5, 6]].abs().max() == 0


def test_batch_embedding_serves_smaller_batches():
    small = two_layer("sigmoid", m=1, h=3, n=3, k=2)
    big = two_layer("sigmoid", m=1, h=3, n=3, k=1)
    embedding = batch_embedding(small, big, seed=0)
    action = InducedAction(KnownAction(small, "data_dependent_gl"), embedding).double()
    samples = sample(big, 16, seed=5, dtype=F64)
    g = torch.linalg.matrix_exp(0.05 * gl_generators(3)[0])
    moved = torch.vmap(action, in_dims=(None, 0, 0))(g, samples.theta, samples.X)
    assert not torch.allclose(moved, samples.theta)
    assert_invariant(big, moved, samples)


def test_embedding_errors():
    deep = mlp("relu", [3, 6, 5, 4, 2], k=3)
    small = two_layer("relu", m=4, h=5, n=6, k=3)
    with pytest.raises(ValueError, match="`layer` must be in \\[1, 3\\]"):
        depth_embedding(small, deep, 4)
    with pytest.raises(ValueError, match="`units` must be 5 distinct"):
        depth_embedding(small, deep, 2, units=[0, 1, 2])
    with pytest.raises(ValueError, match="block shape"):
        depth_embedding(two_layer("relu", m=4, h=5, n=6, k=2), deep, 2)
    with pytest.raises(ValueError, match="activation"):
        depth_embedding(two_layer("tanh", m=4, h=5, n=6, k=3), deep, 2)
    with pytest.raises(ValueError, match="fewer data points"):
        batch_embedding(small, small)
    with pytest.raises(ValueError, match="without biases"):
        depth_embedding(two_layer("relu", m=4, h=5, n=6, k=3, bias=True), deep, 2)
    # the kind of each network is read from its type
    with pytest.raises(TypeError, match="`deep` must be an? MLPLoss, got TwoLayerLoss"):
        depth_embedding(small, two_layer("relu", m=4, h=5, n=6, k=3), 2)
    with pytest.raises(TypeError, match="`small` must be a TwoLayerLoss, got MLPLoss"):
        depth_embedding(mlp("relu", [6, 5, 4], k=3), deep, 2)
    with pytest.raises(TypeError, match="`big` must be a TwoLayerLoss, got MLPLoss"):
        width_embedding(small, deep, [0, 1, 2, 3, 4])
    with pytest.raises(TypeError, match="`layer` must be an int, got float"):
        depth_embedding(small, deep, 2.0)
    with pytest.raises(ValueError, match="same kind of loss"):
        batch_embedding(three_layer_tanh_skip(k=2), two_layer("tanh", m=1, h=2, n=2, k=1))
    with pytest.raises(ValueError, match="same architecture"):
        batch_embedding(small, two_layer("relu", m=4, h=5, n=6, k=2, output="cross_entropy"))
    good = depth_embedding(small, deep, 2)
    leaky = Embedding(
        small, deep, good.index, lambda theta, X: good.context(theta, X) * theta[good.index[0]]
    )
    samples = sample(deep, 4, dtype=F64)
    with pytest.raises(ValueError, match="depends on the subnetwork's own parameters"):
        leaky.check(samples.theta, samples.X)
    with pytest.raises(ValueError, match="`index`"):
        Embedding(small, deep, good.index[:-1], good.context)

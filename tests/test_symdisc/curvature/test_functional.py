import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from symdisc.curvature import flatten, functional, num_params, unflatten


def test_functional_matches_module_and_copies_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    f, params = functional(model)
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(f(params, x), model(x))
    params["0.weight"].add_(1.0)  # in-place edits of the copy must not reach the module
    assert not torch.equal(model[0].weight, params["0.weight"])
    assert not torch.allclose(f(params, x), model(x))


def test_functional_selects_parameters_by_exact_name():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    f, params = functional(model, names=["1.weight"])
    assert list(params) == ["1.weight"]
    x = torch.randn(2, 3)
    torch.testing.assert_close(f(params, x), model(x))
    with pytest.raises(ValueError, match="`names`.*'weight'"):
        functional(model, names=["weight"])
    with pytest.raises(TypeError, match="`module`"):
        functional(lambda x: x)


def test_flatten_unflatten_round_trip_with_batch_dims():
    params = {"a": torch.randn(2, 3), "b": torch.randn(4)}
    theta = flatten(params)
    assert theta.shape == (num_params(params),) == (10,)
    back = unflatten(theta, params)
    assert all(torch.equal(back[k], params[k]) for k in params)
    block = torch.randn(5, 10)
    parts = unflatten(block, params)
    assert parts["a"].shape == (5, 2, 3) and parts["b"].shape == (5, 4)
    torch.testing.assert_close(parts["a"][3].reshape(-1), block[3, :6])
    with pytest.raises(ValueError, match=r"last dimension P=10.*\(9,\)"):
        unflatten(torch.randn(9), params)


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=4),
    batch=st.lists(st.integers(1, 3), max_size=2),
)
def test_unflatten_inverts_flatten_for_any_shapes(shapes, batch):
    params = {f"p{i}": torch.randn(tuple(s)) for i, s in enumerate(shapes)}
    vector = torch.randn((*batch, num_params(params)))
    parts = unflatten(vector, params)
    assert all(parts[k].shape == (*batch, *params[k].shape) for k in params)
    rebuilt = torch.cat([parts[k].reshape((*batch, -1)) for k in params], dim=-1)
    assert torch.equal(rebuilt, vector)
    assert torch.equal(unflatten(flatten(params), params)["p0"], params["p0"])

"""GGN operator and dense GGN against J^T H J built from full autograd Jacobians (float64)."""

import pytest
import torch

from symdisc.curvature import GGNOperator, flatten, ggn, unflatten
from symdisc.curvature.losses import loss_value


def brute_force_ggn(case, reduction):
    """J^T H J with J the full (N*C, P) Jacobian and H the (N*C, N*C) Hessian of the loss."""
    theta = flatten(case.params)
    outputs_of = lambda t: case.model_fn(unflatten(t, case.params), case.inputs).reshape(-1)  # noqa: E731
    J = torch.autograd.functional.jacobian(outputs_of, theta)
    out = outputs_of(theta).detach()
    shape = case.model_fn(case.params, case.inputs).shape
    H = torch.autograd.functional.hessian(
        lambda o: loss_value(o.reshape(shape), case.targets, case.loss, reduction), out
    )
    return J.T @ H @ J


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ggn_matches_brute_force(model_case_builder, loss, reduction):
    case = model_case_builder(loss=loss)
    ref = brute_force_ggn(case, reduction)
    args = (case.model_fn, case.params, case.inputs, case.targets)
    dense = ggn(*args, loss=loss, reduction=reduction, chunk_size=3)
    torch.testing.assert_close(dense, ref, rtol=1e-10, atol=1e-12)
    G = GGNOperator(*args, loss=loss, reduction=reduction)
    V = torch.randn(G.shape[0], 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(G @ V, ref @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(G @ V[:, 0], ref @ V[:, 0], rtol=1e-10, atol=1e-12)
    assert torch.linalg.eigvalsh(dense).min() > -1e-10  # positive semi-definite


def test_ggn_errors(model_case_builder):
    case = model_case_builder(loss="cross_entropy")
    args = (case.model_fn, case.params, case.inputs)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        GGNOperator(*args, case.targets, loss="hinge")
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        ggn(*args, case.targets, loss="mse", reduction="none")
    with pytest.raises(ValueError, match="class indices"):
        GGNOperator(*args, case.targets.double(), loss="cross_entropy")
    with pytest.raises(ValueError, match="`targets` must have the outputs' shape"):
        ggn(*args, case.targets, loss="mse")

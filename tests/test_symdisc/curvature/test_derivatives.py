"""Per-sample Jacobians, JVP and VJP against brute-force autograd loops (float64)."""

import pytest
import torch

from symdisc.curvature import (
    flatten,
    jacobian_vector_product,
    per_sample_jacobian,
    unflatten,
    vector_jacobian_product,
)


def loop_jacobian(case):
    """J[n, c, :] by one backward pass per sample and output."""
    theta = flatten(case.params).clone().requires_grad_(True)
    rows = []
    for n in range(case.inputs.shape[0]):
        out = case.model_fn(unflatten(theta, case.params), case.inputs[n : n + 1])[0]
        rows.append(torch.stack([torch.autograd.grad(o, theta, retain_graph=True)[0] for o in out]))
    return torch.stack(rows)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_per_sample_jacobian_matches_loop(model_case_builder, chunk_size):
    case = model_case_builder()
    J = per_sample_jacobian(case.model_fn, case.params, case.inputs, chunk_size=chunk_size)
    torch.testing.assert_close(J, loop_jacobian(case), rtol=1e-10, atol=1e-12)


def test_jvp_and_vjp_match_the_dense_jacobian(model_case_builder):
    case = model_case_builder()
    J = loop_jacobian(case)  # (N, C, P)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(J.shape[-1], generator=g, dtype=torch.float64)
    out, jv = jacobian_vector_product(
        case.model_fn, case.params, case.inputs, unflatten(v, case.params)
    )
    torch.testing.assert_close(out, case.model_fn(case.params, case.inputs))
    torch.testing.assert_close(jv, J @ v, rtol=1e-10, atol=1e-12)
    u = torch.randn(out.shape, generator=g, dtype=torch.float64)
    jtu = vector_jacobian_product(case.model_fn, case.params, case.inputs, u)
    torch.testing.assert_close(
        flatten(jtu), torch.einsum("ncp,nc->p", J, u), rtol=1e-10, atol=1e-12
    )


def test_jvp_vjp_reject_mismatched_shapes(model_case_builder):
    case = model_case_builder()
    bad = {k: torch.zeros(3) for k in case.params}
    with pytest.raises(ValueError, match="`tangent\\["):
        jacobian_vector_product(case.model_fn, case.params, case.inputs, bad)
    with pytest.raises(ValueError, match="`cotangent` must have the outputs' shape"):
        vector_jacobian_product(case.model_fn, case.params, case.inputs, torch.zeros(1))

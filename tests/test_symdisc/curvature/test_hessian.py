"""Hessian products and dense Hessians against a brute-force double-backward loop (float64)."""

import pytest
import torch

from conftest import brute_force_hessian
from symdisc.curvature import HessianOperator, NonFiniteCurvatureError, hessian


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_hvp_vectors_and_blocks_match_brute_force(case, mode):
    ref = brute_force_hessian(case)
    H = HessianOperator(
        case.loss_fn, case.params, case.inputs, case.targets, mode=mode, chunk_size=3
    )
    g = torch.Generator().manual_seed(0)
    v = torch.randn(H.shape[0], generator=g, dtype=torch.float64)
    V = torch.randn(H.shape[0], 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(H @ v, ref @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H @ V, ref @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H.loss, case.loss_fn(case.params, case.inputs, case.targets))


def test_auto_chunks_loop_over_convolutions_on_a_cpu_and_keep_the_products():
    """``chunk_size="auto"``: chunks of 1 for a network with a convolution kernel on a CPU, 8
    for an MLP; the products are those of an explicit chunking (float64)."""
    from torch import nn

    from symdisc.curvature import GGNOperator, functional, supervised_loss

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
    mlp = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    for model, x, chunk in ((cnn, torch.randn(6, 1, 4, 4), 1), (mlp, torch.randn(6, 4), 8)):
        f, params = functional(model)
        x, y = x.double(), torch.tensor([0, 1, 2, 0, 1, 2])
        L = supervised_loss(f, "cross_entropy")
        H = HessianOperator(L, params, x, y)
        G = GGNOperator(f, params, x, y, loss="cross_entropy")
        assert H.chunk_size == G.chunk_size == chunk
        V = torch.randn(H.shape[0], 5, dtype=torch.float64)
        H3 = HessianOperator(L, params, x, y, chunk_size=3)
        G3 = GGNOperator(f, params, x, y, loss="cross_entropy", chunk_size=3)
        torch.testing.assert_close(H @ V, H3 @ V, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(G @ V, G3 @ V, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("block_size", [1, 5, 128])
def test_dense_hessian_matches_brute_force(case, block_size):
    ref = brute_force_hessian(case)
    dense = hessian(case.loss_fn, case.params, case.inputs, case.targets, block_size=block_size)
    torch.testing.assert_close(dense, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dense, dense.T)


def test_hessian_operator_errors(case):
    H = HessianOperator(case.loss_fn, case.params, case.inputs, case.targets)
    P = H.shape[0]
    with pytest.raises(
        ValueError, match=rf"`v` must have shape \({P},\) or \({P}, k\), got \({P + 1},\)"
    ):
        H @ torch.zeros(P + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="dtype"):
        H @ torch.zeros(P, dtype=torch.float32)
    with pytest.raises(ValueError, match="`mode`"):
        HessianOperator(case.loss_fn, case.params, case.inputs, case.targets, mode="fd")
    nan_params = {k: torch.full_like(v, float("nan")) for k, v in case.params.items()}
    assert issubclass(NonFiniteCurvatureError, ValueError)
    with pytest.raises(NonFiniteCurvatureError, match="loss must be finite"):
        HessianOperator(case.loss_fn, nan_params, case.inputs, case.targets)
    with pytest.raises(TypeError, match="`params`"):
        HessianOperator(case.loss_fn, list(case.params.values()), case.inputs, case.targets)


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
def test_non_scalar_loss_is_named_before_differentiation(mode):
    """A loss_fn returning a vector or a float gets this project's message naming `loss_fn`
    (not torch.func's), from either mode."""
    params = {"w": torch.randn(3, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"`loss_fn` must return a scalar \(0-d\) Tensor.*\(3,\)"):
        HessianOperator(lambda p: p["w"] ** 2, params, mode=mode)
    with pytest.raises(TypeError, match="`loss_fn` must return a scalar Tensor, got float"):
        HessianOperator(lambda p: 1.0, params, mode=mode)
    H = HessianOperator(lambda p: (p["w"] ** 3).sum(), params, mode=mode)
    torch.testing.assert_close(H.to_dense(), torch.diag(6 * params["w"]))

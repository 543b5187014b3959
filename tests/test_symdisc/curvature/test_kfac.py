"""KFAC factors against the exact GGN block (one sample) and an explicit per-sample computation."""

import pytest
import torch
from torch import nn

from conftest import DTYPE, cnn_case, mlp_case
from symdisc.curvature import (
    KronTerms,
    NonFiniteCurvatureError,
    drop_softmax_null,
    functional,
    ggn,
    kfac,
    loss_value,
    output_hessian_sqrt,
    register_kfac_rule,
    row_gram,
)


def ggn_blocks(case, reduction):
    """Diagonal blocks of the dense GGN, keyed by the module names of the layers."""
    G = ggn(
        case.model_fn, case.params, case.inputs, case.targets, loss=case.loss, reduction=reduction
    )
    blocks, start = {}, 0
    names = list(case.params)
    sizes = {n: p.numel() for n, p in case.params.items()}
    for name in dict.fromkeys(n.rsplit(".", 1)[0] for n in names):
        size = sum(sizes[n] for n in names if n.rsplit(".", 1)[0] == name)
        blocks[name] = G[start : start + size, start : start + size]
        start += size
    return blocks


def one_by_one_cnn_case(loss):
    """A CNN whose convolutions have one output position, so KFAC-expand is exact for N = 1."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 4, padding=0), nn.Tanh(), nn.Flatten(), nn.Linear(3, 3)
    ).to(DTYPE)
    f, params = functional(model)
    x = torch.randn(1, 2, 4, 4, dtype=DTYPE)
    y = torch.tensor([1]) if loss == "cross_entropy" else torch.randn(1, 3, dtype=DTYPE)
    from conftest import Case
    from symdisc.curvature import supervised_loss

    return Case("cnn1x1", params, x, y, supervised_loss(f, loss), model, f, loss)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("build", [lambda loss: mlp_case(loss=loss, n=1), one_by_one_cnn_case])
def test_one_sample_kfac_equals_exact_ggn_block(build, loss, reduction):
    case = build(loss)
    factors = kfac(case.model, [(case.inputs, case.targets)], loss=loss, reduction=reduction)
    blocks = ggn_blocks(case, reduction)
    assert set(factors) == set(blocks)
    for name, kf in factors.items():
        torch.testing.assert_close(kf.to_dense(), blocks[name], rtol=1e-10, atol=1e-12)


def _manual_patches(x, conv):
    """(L, C*kh*kw) patches of one image by explicit slicing, circular or zero padding."""
    (ph, pw), (kh, kw), (sh, sw) = conv.padding, conv.kernel_size, conv.stride
    c, h, w = x.shape
    if conv.padding_mode == "circular":
        rows = torch.arange(-ph, h + ph) % h
        cols = torch.arange(-pw, w + pw) % w
        padded = x[:, rows][:, :, cols]
    else:
        padded = torch.zeros(c, h + 2 * ph, w + 2 * pw, dtype=x.dtype)
        padded[:, ph : ph + h, pw : pw + w] = x
    out = []
    for i in range(0, padded.shape[1] - kh + 1, sh):
        for j in range(0, padded.shape[2] - kw + 1, sw):
            out.append(padded[:, i : i + kh, j : j + kw].reshape(-1))
    return torch.stack(out)


def per_sample_reference(case, reduction):
    """A and G of every layer of an nn.Sequential, one sample at a time, from explicit Jacobians.

    G = sum_n sum_t [J_n^T H_n J_n] restricted to position t, with J_n the Jacobian of the outputs
    in the layer's output and H_n the output Hessian of the total loss from autograd: no square
    root and no unfold is shared with the implementation.
    """
    model, x, y = case.model, case.inputs, case.targets
    n_total = x.shape[0]
    out_all = model(x).detach()
    H_all = torch.autograd.functional.hessian(
        lambda o: loss_value(o.reshape(out_all.shape), y, case.loss, reduction), out_all.reshape(-1)
    ).reshape(*out_all.shape, *out_all.shape)
    ref = {}
    for idx, layer in enumerate(model):
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        head, tail = model[:idx], model[idx + 1 :]
        a_rows, G = [], 0
        for n in range(n_total):
            inp = head(x[n : n + 1]).detach()
            if isinstance(layer, nn.Linear):
                a = inp.reshape(1, -1)
            else:
                a = _manual_patches(inp[0], layer)
            a_rows.append(torch.cat([a, torch.ones(a.shape[0], 1, dtype=DTYPE)], 1))
            s = layer(inp).detach()
            J = torch.autograd.functional.jacobian(lambda s_: tail(s_)[0], s)[:, 0]  # (C, *s)
            J = J.reshape(J.shape[0], s.shape[1], -1)  # (C, out_features, positions)
            M = torch.einsum("cot,cd,dpt->otp", J, H_all[n, :, n, :], J)
            G = G + M.sum(1)
        a_all = torch.cat(a_rows)
        ref[str(idx)] = (a_all.T @ a_all / a_all.shape[0], G)
    return ref


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("build", [mlp_case, cnn_case])
def test_factors_equal_per_sample_computation(build, loss, reduction):
    case = build(loss=loss)
    factors = kfac(case.model, [(case.inputs, case.targets)], loss=loss, reduction=reduction)
    ref = per_sample_reference(case, reduction)
    assert set(factors) == set(ref)
    for name, (A, G) in ref.items():
        torch.testing.assert_close(factors[name].A, A, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(factors[name].G, G, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_accumulation_over_batches_equals_one_batch(reduction):
    case = cnn_case(loss="cross_entropy", n=5)
    x, y = case.inputs, case.targets
    whole = kfac(case.model, [(x, y)], loss="cross_entropy", reduction=reduction)
    split = kfac(
        case.model, [(x[:2], y[:2]), (x[2:], y[2:])], loss="cross_entropy", reduction=reduction
    )
    for name in whole:
        torch.testing.assert_close(split[name].A, whole[name].A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(split[name].G, whole[name].G, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_monte_carlo_fisher_converges_to_type2(loss):
    case = mlp_case(loss=loss, n=6)
    data = [(case.inputs, case.targets)]
    exact = kfac(case.model, data, loss=loss)
    errors = []
    for mc in (10, 1000):
        est = kfac(case.model, data, loss=loss, fisher="mc", mc_samples=mc, generator=0)
        errors.append(max(float((est[k].G - exact[k].G).norm() / exact[k].G.norm()) for k in exact))
        for k in exact:  # A does not depend on the sampled targets
            torch.testing.assert_close(est[k].A, exact[k].A)
    assert errors[1] < 0.3 * errors[0], errors  # error ~ 1/sqrt(mc): 10x fewer at 100x samples
    assert errors[1] < 0.1, errors


def test_evaluating_at_other_params_leaves_module_alone():
    case = mlp_case(loss="mse")
    state = {k: v.clone() for k, v in case.model.state_dict().items()}
    shifted = {k: v + 0.1 for k, v in case.params.items()}
    at_shift = kfac(case.model, [(case.inputs, case.targets)], loss="mse", params=shifted)
    case.model.load_state_dict(shifted)
    moved = kfac(case.model, [(case.inputs, case.targets)], loss="mse")
    case.model.load_state_dict(state)
    for k in moved:
        torch.testing.assert_close(at_shift[k].G, moved[k].G)
    assert all(torch.equal(case.model.state_dict()[k], state[k]) for k in state)


class ManualAffine(nn.Module):
    """A layer the library knows nothing about: y = x W^T, written by hand."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in, dtype=DTYPE) / d_in**0.5)

    def forward(self, x):
        return x @ self.weight.T


def test_registered_rule_extends_kfac_to_new_layers():
    @register_kfac_rule(ManualAffine)
    def _rule(module, x, grads):
        return [KronTerms(("weight",), x, torch.cat(grads), bias=False)]

    torch.manual_seed(0)
    model = nn.Sequential(ManualAffine(3, 4), nn.Tanh(), ManualAffine(4, 2))
    f, params = functional(model)
    x = torch.randn(1, 3, dtype=DTYPE)
    y = torch.randn(1, 2, dtype=DTYPE)
    G = ggn(f, params, x, y, loss="mse")
    factors = kfac(model, [(x, y)], loss="mse")
    assert list(factors) == ["0", "2"] and factors["2"].params == ("2.weight",)
    torch.testing.assert_close(factors["0"].to_dense(), G[:12, :12], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(factors["2"].to_dense(), G[12:, 12:], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("build", [mlp_case, cnn_case])
def test_separate_bias_blocks_equal_sub_blocks_of_the_folded_block(build, loss):
    case = build(loss=loss)
    data = [(case.inputs, case.targets)]
    folded = kfac(case.model, data, loss=loss, reduction="sum")
    separate = kfac(case.model, data, loss=loss, reduction="sum", bias="separate")
    expected_keys = [k for name in folded for k in (name, f"{name}.bias")]
    assert list(separate) == expected_keys
    for name, f in folded.items():
        dense = f.to_dense()  # ordered [weight (row-major), bias]
        n_weight = case.params[f.params[0]].numel()
        weight, bias = separate[name], separate[f"{name}.bias"]
        assert weight.params == f.params[:1] and bias.params == f.params[1:]
        assert not weight.bias and not bias.bias
        assert bias.A.shape == (1, 1) and bias.A.item() == 1.0  # the mean of 1 * 1
        torch.testing.assert_close(weight.G, f.G, rtol=0, atol=0)
        torch.testing.assert_close(
            weight.to_dense(), dense[:n_weight, :n_weight], rtol=1e-12, atol=1e-14
        )
        torch.testing.assert_close(
            bias.to_dense(), dense[n_weight:, n_weight:], rtol=1e-12, atol=1e-14
        )


def test_drop_softmax_null_keeps_the_output_hessian():

    logits = torch.randn(7, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    logits[0] = torch.tensor([30.0, 0.0, 0.0, 0.0], dtype=DTYPE)  # nearly one-hot p
    logits[1] = torch.tensor([0.0, 0.0, 0.0, 30.0], dtype=DTYPE)  # p ~ e_C: v = u + e_C stays
    roots = output_hessian_sqrt(logits, "cross_entropy", "sum")  # (N, C, C)
    reduced = drop_softmax_null(roots, logits, dim=2)
    assert reduced.shape == (7, 4, 3)
    torch.testing.assert_close(reduced @ reduced.mT, roots @ roots.mT, rtol=1e-12, atol=1e-14)
    rows = torch.randn(7, 4, 5, dtype=DTYPE)  # rows S_n^T J_n of a GGN factor, C on dim 1
    factor = roots.mT @ rows
    kept = drop_softmax_null(factor, logits, dim=1)
    assert kept.shape == (7, 3, 5)
    torch.testing.assert_close(kept.mT @ kept, factor.mT @ factor, rtol=1e-12, atol=1e-14)


def test_separate_bias_leaves_bias_free_layers_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Tanh(), nn.Linear(4, 2)).to(DTYPE)
    data = [(torch.randn(5, 3, dtype=DTYPE), torch.randint(0, 2, (5,)))]
    folded = kfac(model, data, loss="cross_entropy")
    separate = kfac(model, data, loss="cross_entropy", bias="separate")
    assert list(separate) == ["0", "2", "2.bias"]
    torch.testing.assert_close(separate["0"].A, folded["0"].A, rtol=0, atol=0)
    assert separate["0"].params == ("0.weight",) and separate["2.bias"].params == ("2.bias",)


def test_kfac_errors():
    case = mlp_case()
    data = [(case.inputs, case.targets)]
    with pytest.raises(ValueError, match="`fisher` must be one of"):
        kfac(case.model, data, loss="cross_entropy", fisher="empirical")
    with pytest.raises(ValueError, match="`mc_samples`"):
        kfac(case.model, data, loss="cross_entropy", fisher="mc", mc_samples=0)
    with pytest.raises(ValueError, match=r"\['1'\] have no KFAC rule"):
        kfac(case.model, data, loss="cross_entropy", modules=["1"])
    with pytest.raises(ValueError, match=r"\['5'\] are not among"):
        kfac(case.model, data, loss="cross_entropy", modules=["5"])
    with pytest.raises(ValueError, match="at least one"):
        kfac(case.model, [], loss="cross_entropy")
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten()).to(DTYPE)
    with pytest.raises(ValueError, match="groups=1"):
        kfac(
            grouped,
            [(torch.randn(1, 2, 3, 3, dtype=DTYPE), torch.randn(1, 2, dtype=DTYPE))],
            loss="mse",
        )
    with pytest.raises(ValueError, match="`bias` must be one of"):
        kfac(case.model, data, loss="cross_entropy", bias="split")
    bad = {k: torch.full_like(v, float("inf")) for k, v in case.params.items()}
    with pytest.raises(NonFiniteCurvatureError, match="finite"):
        kfac(case.model, data, loss="cross_entropy", params=bad)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("build", [mlp_case, cnn_case])
def test_create_graph_factors_are_differentiable_in_the_inputs(build, loss):
    case = build(loss=loss, n=3)
    data = [(case.inputs, case.targets)]
    plain = kfac(case.model, data, loss=loss, reduction="sum")
    kept = kfac(case.model, data, loss=loss, reduction="sum", create_graph=True)
    for name in plain:  # same values with and without the graph; the default stays detached
        torch.testing.assert_close(kept[name].A, plain[name].A, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(kept[name].G, plain[name].G, rtol=1e-12, atol=1e-14)
        assert not plain[name].A.requires_grad and not plain[name].G.requires_grad
    first, last = list(plain)[0], list(plain)[-1]

    def summary(x):
        f = kfac(case.model, [(x, case.targets)], loss=loss, reduction="sum", create_graph=True)
        # trace(A) of a hidden layer depends on x; G of the first layer too (and, for
        # cross-entropy, through the output Hessian)
        return f[last].A.trace() + f[first].G.sum() + f[last].G.sum()

    x = case.inputs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(summary, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)
    with pytest.raises(TypeError, match="`create_graph` must be a bool"):
        kfac(case.model, data, loss=loss, create_graph=1)


def test_row_gram_block_rows_equal_expanded_rows():
    """(R, K, d) block rows stand for the R K rows e_k (x) x[r, k]: same outer-product sum and
    count as those rows built explicitly."""
    x = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expanded = torch.einsum("kj,rkd->rkjd", torch.eye(3, dtype=x.dtype), x).reshape(15, 12)
    gram, count = row_gram(x)
    assert count == 15
    assert torch.allclose(gram, expanded.T @ expanded, atol=1e-12)
    plain, n = row_gram(expanded)
    assert n == 15 and torch.equal(plain, expanded.T @ expanded)
    with pytest.raises(ValueError, match=r"\(R, d\) or \(R, K, d\)"):
        row_gram(x[None])


def test_softmax_roots_have_finite_derivatives_where_a_probability_underflows():
    """A float32 softmax probability of exactly 0 made ``p.sqrt()``'s derivative infinite, so
    derivatives of the curvature in the logits (paper 001's eta-gradient) were NaN."""
    from symdisc.curvature.losses import output_hessian_sqrt, softmax_root

    logits = torch.tensor([[0.0, 120.0, -5.0]], requires_grad=True)
    assert float(torch.softmax(logits.detach(), -1)[0, 0]) == 0.0  # underflows in float32
    for value in (
        softmax_root(logits),
        output_hessian_sqrt(logits, "cross_entropy", "sum"),
        drop_softmax_null(output_hessian_sqrt(logits, "cross_entropy", "sum"), logits, dim=2),
    ):
        (grad,) = torch.autograd.grad(value.pow(2).sum(), logits)
        assert torch.isfinite(grad).all()
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(softmax_root(x), torch.softmax(x, -1).sqrt(), rtol=1e-14, atol=0)

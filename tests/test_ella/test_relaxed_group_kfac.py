"""KFAC rules of the relaxed group convolutions (ella.layers.kfac_group_rules; issue 16), in
float64: the rule's rows reproduce the layer's output and its vector-Jacobian products, the
(weight, bias) block equals the exact GGN block of one sample where expand-KFAC is exact, the
combination-weight blocks (relaxed_weights, relaxation) equal it in general, for the C4 and the
octahedral layers; and the kron Laplace covers FieldGCNN and a small octahedral network, with a
log marginal likelihood that is finite and differentiable in every prior precision."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import ella  # noqa: F401  (registers the rules)
from ella.dynamics.networks import FieldGCNN
from ella.laplace import Laplace
from ella.layers import (
    OctahedralGroupConv,
    OctahedralLiftingConv,
    RelaxedGroupConv,
    RelaxedLiftingConv,
)
from ella.layers.kfac_group_rules import combination_gradients, relaxed_group_patches
from symdisc.curvature import functional, ggn, kfac, kfac_rule_for

DTYPE = torch.float64
KINDS = ["c4_lifting", "c4_group", "o_lifting", "o_group"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _layer(kind: str, tied: bool = False, c_in: int = 2, c_out: int = 3, banks: int = 2):
    torch.manual_seed(0)
    if kind.startswith("c4"):
        cls = RelaxedLiftingConv if kind == "c4_lifting" else RelaxedGroupConv
        return cls(c_in, c_out, 3, banks=banks, tied=tied).to(DTYPE)
    cls = OctahedralLiftingConv if kind == "o_lifting" else OctahedralGroupConv
    return cls(c_in, c_out, 3, n_filter_banks=banks, tied=tied).to(DTYPE)


def _order(kind: str) -> int:
    return 4 if kind.startswith("c4") else 24


def _input_shape(kind: str, batch: int, c: int, size: int) -> tuple[int, ...]:
    space = (size,) * (2 if kind.startswith("c4") else 3)
    group = (_order(kind),) if kind.endswith("group") else ()
    return (batch, c, *group, *space)


def _small(kind: str) -> nn.Module:
    """The layer of the GGN comparisons: C = 2 -> C' = 3 (C4), C = 1 -> C' = 2 (octahedral: a
    dense GGN of its 2592 filter entries)."""
    return _layer(kind) if kind.startswith("c4") else _layer(kind, c_in=1, c_out=2)


def _planar_shape(kind: str, batch: int, size: int) -> tuple[int, ...]:
    """The network input: planar (B, C, H, W) or a volume (B, C, D, H, W), C as
    :func:`_small`; the group layers get it lifted (constant over the group) by
    :class:`_Lift`."""
    c = 2 if kind.startswith("c4") else 1
    return (batch, c, *((size,) * (2 if kind.startswith("c4") else 3)))


def _randomise(layer: nn.Module, seed: int, constant_relaxation: bool = False) -> None:
    """Random relaxed_weights and relaxation (constant over the group elements if asked)."""
    with torch.no_grad():
        rw = torch.randn(layer.relaxed_weights.shape, generator=_gen(seed), dtype=DTYPE)
        layer.relaxed_weights.copy_(1 + rw)
        if layer.relaxation is not None:
            shape = (
                (layer.relaxation.shape[0], 1) if constant_relaxation else layer.relaxation.shape
            )
            r = 0.5 * torch.randn(shape, generator=_gen(seed + 1), dtype=DTYPE)
            layer.relaxation.copy_(r.expand_as(layer.relaxation))


def _weight_order(layer: nn.Module) -> Tensor:
    """Positions in the KFAC block order (c', l, d) + bias of the parameter order (l, c', d),
    bias: ``block[perm][:, perm]`` is in the order of ``flatten({weight, bias})``."""
    n_l, c_out = layer.weight.shape[:2]
    d = layer.weight[0, 0].numel()
    grid = torch.arange(c_out * n_l * d).reshape(c_out, n_l, d)
    perm = grid.transpose(0, 1).reshape(-1)
    bias = torch.arange(c_out) + c_out * n_l * d
    return torch.cat([perm, bias])


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_rule_rows_reproduce_output_and_vjp(kind, tied):
    """``out = a [W | b]^T`` (W = weight.transpose(0, 1) flattened), the g-a products are the
    weight/bias VJP, and the combination rows summed over the samples the VJP in
    relaxed_weights and relaxation; tied layers have no relaxation block."""
    layer = _layer(kind, tied)
    _randomise(layer, 1)
    x = torch.randn(*_input_shape(kind, 2, 2, 3), generator=_gen(2), dtype=DTYPE)
    out = layer(x)
    a = relaxed_group_patches(layer, x)
    w = layer.weight.detach().transpose(0, 1).reshape(layer.out_channels, -1)
    rebuilt = torch.einsum("bgpd,od->bogp", a, w) + layer.bias.detach()[None, :, None, None]
    torch.testing.assert_close(rebuilt.reshape(out.shape), out.detach(), rtol=1e-12, atol=1e-12)
    v = torch.randn(out.shape, generator=_gen(3), dtype=DTYPE)
    params = {n: p.detach() for n, p in layer.named_parameters()}
    _, vjp = torch.func.vjp(lambda p: torch.func.functional_call(layer, p, (x,)), params)
    (grads,) = vjp(v)
    terms = kfac_rule_for(layer)(layer, x, [v, 2 * v])
    names = [t.params for t in terms]
    expect = [("weight", "bias"), ("relaxed_weights",)] + ([] if tied else [("relaxation",)])
    assert names == expect
    rows = a.shape[0] * a.shape[1] * a.shape[2]
    first = terms[0]
    assert first.bias and first.a.shape == (rows, w.shape[1] + 1)
    gw = first.g[:rows].T @ first.a
    ref = torch.cat([grads["weight"].transpose(0, 1).reshape(w.shape[0], -1),
                     grads["bias"][:, None]], 1)  # fmt: skip
    torch.testing.assert_close(gw, ref, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(terms[1].g[:2].sum(0), grads["relaxed_weights"].flatten())
    torch.testing.assert_close(terms[1].g[2:], 2 * terms[1].g[:2])  # the second column
    if not tied:
        torch.testing.assert_close(terms[2].g[:2].sum(0), grads["relaxation"].flatten())
        assert terms[2].g.shape == (4, 2 * _order(kind))
    for t in terms[1:]:
        assert t.a.shape == (2, 1) and bool((t.a == 1).all()) and not t.bias


class _Lift(nn.Module):
    """A volume / planar map as a group map constant over the group (``n`` copies)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, None].expand(-1, -1, self.n, *x.shape[2:])


class _Read(nn.Module):
    """(B, C', |G|, *space) -> (B, C' * len(elements)): the elements at position 0 only."""

    def __init__(self, elements=(0,)) -> None:
        super().__init__()
        self.elements = list(elements)

    def forward(self, y: Tensor) -> Tensor:
        return y.flatten(3)[:, :, self.elements, 0].flatten(1)


def _net(kind: str, layer: nn.Module, elements=(0,), read_all: bool = False) -> nn.Sequential:
    first = _Lift(_order(kind)) if kind.endswith("group") else nn.Identity()
    n_out = layer.out_channels * (1 if read_all else len(elements))
    reader = _MeanRead() if read_all else _Read(elements)
    torch.manual_seed(5)
    return nn.Sequential(first, layer, reader, nn.Tanh(), nn.Linear(n_out, 3)).to(DTYPE)


class _MeanRead(nn.Module):
    """(B, C', |G|, *space) -> (B, C'): a weighted sum over every element and position (every
    pair read)."""

    def forward(self, y: Tensor) -> Tensor:
        flat = y.flatten(2)
        weights = torch.linspace(0.5, 1.5, flat.shape[-1], dtype=y.dtype, device=y.device)
        return (flat * weights).mean(-1)


def _exact_block(model: nn.Module, x: Tensor, y: Tensor, loss: str, names: list[str]) -> Tensor:
    f, params = functional(model)
    full = ggn(f, params, x, y, loss=loss, reduction="sum")
    offsets, start = {}, 0
    for n, p in params.items():
        offsets[n] = torch.arange(start, start + p.numel())
        start += p.numel()
    idx = torch.cat([offsets[n] for n in names])
    return full[idx][:, idx]


def _targets(loss: str, n: int) -> Tensor:
    if loss == "mse":
        return torch.randn(n, 3, generator=_gen(7), dtype=DTYPE)
    return torch.randint(0, 3, (n,), generator=_gen(7))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("kind", KINDS)
def test_weight_block_equals_exact_ggn_where_expand_kfac_is_exact(kind, loss):
    """ONE sample on a map of one position, constant over the group, combination weights
    constant over the group (random relaxed_weights, a constant non-zero relaxation) and a loss
    that reads ONE group element: every (element, position) pair has the same row a, only the
    read one has a gradient, so KFAC's (weight, bias) block is exact. Reading two elements
    breaks it (the cross terms of G are missing); so does a relaxation that varies over the
    group (the rows differ)."""
    x = torch.randn(*_planar_shape(kind, 1, 1), generator=_gen(6), dtype=DTYPE)
    y = _targets(loss, 1)
    cases = (((0,), True, True), ((0, 1), True, False), ((0,), False, False))
    for elements, constant, exact in cases:
        layer = _small(kind)
        _randomise(layer, 1, constant_relaxation=constant)
        model = _net(kind, layer, elements)
        factors = kfac(model, [(x, y)], loss=loss, reduction="sum", modules=["1"])
        block = factors["1:0"]
        assert block.params == ("1.weight", "1.bias")
        perm = _weight_order(layer)
        got = block.to_dense()[perm][:, perm]
        ref = _exact_block(model, x, y, loss, ["1.weight", "1.bias"])
        diff = float((got - ref).abs().max())
        assert (diff < 1e-10 * max(1.0, float(ref.abs().max()))) == exact, (
            elements,
            constant,
            diff,
        )


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("kind", KINDS)
def test_combination_blocks_equal_exact_ggn_in_general(kind, loss):
    """relaxed_weights and relaxation: exact GGN blocks for several samples, every element and
    position read, relaxation varying over the group."""
    layer = _small(kind)
    _randomise(layer, 11)
    model = _net(kind, layer, read_all=True)
    size = 3 if kind.startswith("c4") else 2
    x = torch.randn(*_planar_shape(kind, 3, size), generator=_gen(12), dtype=DTYPE)
    y = _targets(loss, 3)
    factors = kfac(model, [(x, y)], loss=loss, reduction="sum", modules=["1"])
    for key in ("relaxed_weights", "relaxation"):
        block = next(f for f in factors.values() if f.params == (f"1.{key}",))
        ref = _exact_block(model, x, y, loss, [f"1.{key}"])
        assert float(ref.abs().max()) > 1e-6
        torch.testing.assert_close(block.to_dense(), ref, rtol=1e-10, atol=1e-12)


def test_combination_gradients_against_autograd_per_sample():
    """(K, B, L, |G|) rows against ``torch.func`` per-sample gradients in the combination
    weights of an octahedral group convolution."""
    layer = _layer("o_group", c_in=1, c_out=2)
    _randomise(layer, 21)
    x = torch.randn(2, 1, 24, 3, 3, 3, generator=_gen(22), dtype=DTYPE)
    v = torch.randn(2, 2, 24, 3, 3, 3, generator=_gen(23), dtype=DTYPE)
    got = combination_gradients(layer, x, [v])[0]  # (B, L, 24)
    params = {n: p.detach() for n, p in layer.named_parameters()}
    for n in range(2):

        def f(rel: Tensor, n: int = n) -> Tensor:
            p = dict(params, relaxation=rel)
            return (torch.func.functional_call(layer, p, (x[n : n + 1],)) * v[n : n + 1]).sum()

        ref = torch.func.grad(f)(params["relaxation"])
        torch.testing.assert_close(got[n], ref, rtol=1e-12, atol=1e-12)


class _OctaNet(nn.Module):
    """A small octahedral network: lifting (3^3), tanh, group conv (1^3), mean over the group
    and space."""

    def __init__(self, tied: bool = False) -> None:
        super().__init__()
        torch.manual_seed(31)
        self.lift = OctahedralLiftingConv(1, 2, 3, n_filter_banks=2, tied=tied)
        # 1 x 1 x 1 filters: A of (2 banks x 2 channels x 24 + 1) rows, a fast eigh
        self.group = OctahedralGroupConv(2, 2, 1, n_filter_banks=2, tied=tied)

    def forward(self, x: Tensor) -> Tensor:
        return self.group(torch.tanh(self.lift(x))).mean(dim=(2, 3, 4, 5))


class _Flat(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).flatten(1)


def _lml_gradients(la: Laplace) -> dict[str, Tensor]:
    deltas = {g: torch.tensor(0.5 + 0.1 * i, dtype=DTYPE, requires_grad=True)
              for i, g in enumerate(la.groups)}  # fmt: skip
    value = la.log_marginal_likelihood(deltas)
    assert torch.isfinite(value)
    grads = torch.autograd.grad(value, list(deltas.values()))
    return {g: gr for g, gr in zip(deltas, grads)}


@pytest.mark.parametrize("tied", [False, True])
def test_kron_laplace_covers_field_gcnn(tied):
    torch.manual_seed(41)
    model = _Flat(FieldGCNN(2, 2, 2, tied=tied)).to(DTYPE)
    x = torch.randn(3, 3, 4, 4, generator=_gen(42), dtype=DTYPE)
    y = torch.randn(3, 3 * 16, generator=_gen(43), dtype=DTYPE)
    la = Laplace(model, "regression", "kron", sigma=0.5).fit([(x, y)])
    covered = sorted(p for f in la.curvature.values() for p in f.params)
    assert covered == sorted(n for n, _ in model.named_parameters())
    grads = _lml_gradients(la)
    assert all(torch.isfinite(g) and g != 0 for g in grads.values())
    relax = [g for g in la.groups if g.endswith(":relaxation")]
    assert len(relax) == (0 if tied else 4)


def test_kron_laplace_covers_a_small_octahedral_network():
    model = _OctaNet().to(DTYPE)
    x = torch.randn(2, 1, 3, 3, 3, generator=_gen(44), dtype=DTYPE)
    y = torch.randint(0, 2, (2,), generator=_gen(45))
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    assert set(la.groups) == {"lift:gconv", "lift:relaxation", "group:gconv", "group:relaxation"}
    assert la.group_sizes["group:relaxation"] == 48
    grads = _lml_gradients(la)
    assert all(torch.isfinite(g) and g != 0 for g in grads.values())

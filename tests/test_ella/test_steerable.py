"""Steerable and relaxed steerable convolutions for C_N (ella.layers.steerable) and the plume
network built from them, in float64: the representations, the kernel basis against the
constraint (continuous, every g of C_N; on the grid, the quarter turns) and against the
dimension theory predicts, exact equivariance of the layers and of FieldSteerableCNN under
quarter turns, the relaxed layer at and after initialisation, the dense Hessian against
``torch.func.hessian``, and the argument checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from ella.dynamics.networks import FieldSteerableCNN
from ella.dynamics.plume import rotate_fields
from ella.layers import (
    FieldType,
    RelaxedSteerableConv,
    SteerableConv,
    basis_dimension,
    equivariance_error,
    field_action,
    rep_matrix,
    rotate_field,
    steerable_basis,
    steerable_kernel,
    steerable_relaxation_penalty,
)
from symdisc.curvature.hessian import hessian

DTYPE = torch.float64
TOL = 1e-12
KINDS = ("trivial", "irrep1", "regular")
ORDERS = (4, 8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quarter_turns(order: int) -> list[int]:
    return [order // 4, order // 2, 3 * order // 4]


def _rotation(theta: float) -> Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]], dtype=DTYPE)


def _perturb(module: nn.Module, seed: int, scale: float = 0.3) -> None:
    gen = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


# ---------------------------------------------------------------------------------------------
# representations and the action on field maps
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_representations_are_orthogonal_homomorphisms(order):
    names = ["trivial", "regular"] + [f"irrep{k}" for k in range(1, order // 2 + 1)]
    for name in names:
        mats = [rep_matrix(name, order, g) for g in range(order)]
        assert torch.equal(mats[0], torch.eye(len(mats[0]), dtype=DTYPE)), name
        for g, h in itertools.product(range(order), repeat=2):
            prod = mats[g] @ mats[h]
            assert torch.allclose(prod, mats[(g + h) % order], atol=TOL, rtol=0), (name, g, h)
        for m in mats:
            assert torch.allclose(m @ m.T, torch.eye(len(m), dtype=DTYPE), atol=TOL, rtol=0)
    assert rep_matrix(f"irrep{order // 2}", order, 1).item() == -1.0  # the sign irrep
    assert torch.equal(
        rep_matrix("irrep1", order, order // 4), torch.tensor([[0.0, -1], [1, 0]]).to(DTYPE)
    )


def test_rotate_field_is_the_plume_convention_and_a_group_action():
    x = torch.randn(2, 3, 6, 6, generator=_gen(0), dtype=DTYPE)
    for order in ORDERS:
        state = FieldType(order, ("trivial", "irrep1"))
        for t in range(4):
            assert torch.equal(rotate_field(x, state, t * order // 4), rotate_fields(x, t))
    ft = FieldType(8, ("regular", "irrep2", "trivial", "irrep4", "irrep1"))
    y = torch.randn(1, ft.size, 5, 5, generator=_gen(1), dtype=DTYPE)
    for g, h in itertools.product((0, 2, 4, 6), repeat=2):
        twice = rotate_field(rotate_field(y, ft, h), ft, g)
        assert torch.allclose(twice, rotate_field(y, ft, g + h), atol=TOL, rtol=0)
    assert torch.equal(rotate_field(y, ft, 0), y)


# ---------------------------------------------------------------------------------------------
# the kernel basis
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kernel_size", (3, 5))
def test_basis_satisfies_the_constraint_at_random_points_for_every_g(order, kernel_size):
    points = 1.5 * torch.randn(40, 2, generator=_gen(2), dtype=DTYPE)
    pairs = list(itertools.product(KINDS, repeat=2)) + [("irrep2", "irrep3")] * (order == 8)
    # one evaluation per pair (one eigen-decomposition): the points and all their rotations
    rotations = [_rotation(2 * math.pi * g / order) for g in range(order)]
    every = torch.cat([points @ r.T for r in rotations])
    for rep_out, rep_in in pairs:
        kappa = steerable_kernel(order, rep_out, rep_in, every, kernel_size).unflatten(
            -1, (order, -1)
        )
        assert kappa.abs().max() > 0.1, (rep_out, rep_in)
        for g in range(order):
            rho_o, rho_i = rep_matrix(rep_out, order, g), rep_matrix(rep_in, order, g)
            expected = torch.einsum("op,npqx,iq->noix", rho_o, kappa[..., 0, :], rho_i)
            err = (kappa[..., g, :] - expected).abs().max()
            assert err < TOL, (rep_out, rep_in, g, float(err))


@pytest.mark.parametrize("order", ORDERS)
def test_sampled_basis_satisfies_the_constraint_for_quarter_turns(order):
    for rep_out, rep_in in itertools.product(KINDS + ("irrep2",), repeat=2):
        basis = steerable_basis(order, rep_out, rep_in, 3)  # (n, d_o, d_i, k, k)
        for g in _quarter_turns(order):
            # kappa(R d) = rho_o kappa(d) rho_i^T  <=>  kappa = rho_o rot90(kappa) rho_i^T
            turned = torch.rot90(basis, 4 * g // order, dims=(-2, -1))
            rho_o, rho_i = rep_matrix(rep_out, order, g), rep_matrix(rep_in, order, g)
            back = torch.einsum("op,npqxy,iq->noixy", rho_o, turned, rho_i)
            assert torch.allclose(back, basis, atol=TOL, rtol=0), (rep_out, rep_in, g)


def test_basis_dimensions_match_theory():
    n_funcs = {3: 6, 5: 15}  # rings 0, 1 (m <= 2), [2 (m <= 4)]: 1 + 5 [+ 9]
    for order, k in itertools.product(ORDERS, (3, 5)):
        # invariant kernels: frequencies m = 0 mod N, i.e. one per ring, plus m = 4 for C4, k = 5
        expected = {(4, 3): 2, (4, 5): 5, (8, 3): 2, (8, 5): 3}[order, k]
        assert len(steerable_basis(order, "trivial", "trivial", k)) == expected
        # Hom(regular, regular) is N-dimensional per function: N * n_funcs
        assert len(steerable_basis(order, "regular", "regular", k)) == order * n_funcs[k]
        assert len(steerable_basis(order, "trivial", "regular", k)) == n_funcs[k]
        for rep_out, rep_in in itertools.product(KINDS, repeat=2):
            basis = steerable_basis(order, rep_out, rep_in, k)
            assert len(basis) == basis_dimension(order, rep_out, rep_in, k)
            # linearly independent as sampled filters, each of unit norm
            assert torch.linalg.matrix_rank(basis.flatten(1)) == len(basis)
            assert torch.allclose(basis.flatten(1).norm(dim=1), torch.ones(len(basis), dtype=DTYPE))
    # vector kernels for 3x3: x_hat f(r) and R x_hat f(r) on ring 1
    assert len(steerable_basis(4, "irrep1", "trivial", 3)) == 2
    # irrep1 -> irrep1: 2 per radial profile (identity, quarter turn), plus m = 2 pairs
    # (4 for C4 where 2 = -2 mod 4, 2 for C8)
    assert len(steerable_basis(4, "irrep1", "irrep1", 3)) == 8
    assert len(steerable_basis(8, "irrep1", "irrep1", 3)) == 6


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------


def _types(order: int) -> tuple[FieldType, FieldType]:
    return (
        FieldType(order, ("trivial", "irrep1", "regular", "trivial")),
        FieldType(order, ("regular", "irrep1", "trivial", "irrep2", "regular")),
    )


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("cls", (SteerableConv, RelaxedSteerableConv))
def test_layers_are_equivariant_under_quarter_turns(order, cls):
    in_type, out_type = _types(order)
    torch.manual_seed(0)
    layer = cls(in_type, out_type, 3).to(DTYPE)
    x = torch.randn(2, in_type.size, 7, 7, generator=_gen(3), dtype=DTYPE)
    y = layer(x)
    assert y.shape == (2, out_type.size, 7, 7) and y.abs().max() > 0.1
    err = equivariance_error(
        layer, x, field_action(in_type), field_action(out_type), _quarter_turns(order)
    )
    assert err < TOL
    # a bias on trivial and regular fields (one value per field), none on irreps
    bias, start = layer.expanded_bias(), 0
    for rep, d in zip(out_type.reps, out_type.dims):
        part = bias[start : start + d]
        start += d
        if rep.startswith("irrep"):
            assert torch.all(part == 0), rep
        else:
            assert torch.all(part == part[0]) and part[0] != 0, rep


@pytest.mark.parametrize("order", ORDERS)
def test_relaxed_layer_starts_strict_and_breaks_equivariance_when_perturbed(order):
    in_type, out_type = _types(order)
    torch.manual_seed(5)
    strict = SteerableConv(in_type, out_type, 3).to(DTYPE)
    torch.manual_seed(5)
    relaxed = RelaxedSteerableConv(in_type, out_type, 3).to(DTYPE)
    x = torch.randn(2, in_type.size, 7, 7, generator=_gen(4), dtype=DTYPE)
    assert torch.equal(relaxed(x), strict(x))
    for key, w in relaxed.weights.items():
        assert w.shape == (*strict.weights[key].shape, 9)
    assert steerable_relaxation_penalty(relaxed) == 0
    assert steerable_relaxation_penalty(strict) == 0
    _perturb(relaxed, 6, scale=0.1)
    err = equivariance_error(
        relaxed, x, field_action(in_type), field_action(out_type), _quarter_turns(order)
    )
    assert err > 1e-2
    assert steerable_relaxation_penalty(relaxed) > 0
    p1 = steerable_relaxation_penalty(relaxed, order=1)
    p2 = steerable_relaxation_penalty(relaxed, order=2)
    manual = sum((w - w.mean(-1, keepdim=True)).pow(2).sum() for w in relaxed.weights.values())
    assert torch.allclose(p2, manual) and p1 > p2  # deviations below 1
    # the penalty's gradient reaches the coefficients (it is a regulariser to train with)
    p1.backward()
    assert all(w.grad is not None and w.grad.abs().max() > 0 for w in relaxed.weights.values())


def test_filters_are_rebuilt_from_the_parameters_every_forward():
    in_type, out_type = _types(4)
    layer = SteerableConv(in_type, out_type, 3).to(DTYPE)
    x = torch.randn(1, in_type.size, 5, 5, generator=_gen(7), dtype=DTYPE)
    before = layer(x)
    with torch.no_grad():
        layer.weights["regular_regular"].add_(0.01)
    assert (layer(x) - before).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------
# the plume network
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
def test_field_steerable_cnn_is_equivariant_on_states(order):
    x = torch.randn(2, 3, 8, 8, generator=_gen(8), dtype=DTYPE)
    for relaxed in (False, True):
        torch.manual_seed(1)
        model = FieldSteerableCNN(2, 2, order, relaxed=relaxed).to(DTYPE)
        assert (model(x) - x).abs().max() > 1e-2  # the increment is not trivially zero
        assert equivariance_error(model, x, rotate_fields, rotate_fields) < TOL
    torch.manual_seed(1)
    strict = FieldSteerableCNN(2, 2, order).to(DTYPE)
    assert torch.equal(strict(x), model(x))  # rsteer starts as the strict model
    _perturb(model, 9, scale=0.1)
    assert equivariance_error(model, x, rotate_fields, rotate_fields) > 1e-3
    assert steerable_relaxation_penalty(model) > 0


# ---------------------------------------------------------------------------------------------
# Hessian through the layers
# ---------------------------------------------------------------------------------------------


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        state = FieldType(4, ("trivial", "irrep1"))
        hidden = FieldType(4, ("regular",))
        self.strict = SteerableConv(state, hidden, 3)
        self.relaxed = RelaxedSteerableConv(hidden, FieldType(4, ("trivial",)), 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.relaxed(torch.tanh(self.strict(x))).mean(dim=(2, 3))


def test_dense_hessian_matches_torch_func_hessian():
    torch.manual_seed(3)
    model = _TinyNet().to(DTYPE)
    _perturb(model.relaxed, 10, scale=0.1)
    names = [k for k, _ in model.named_parameters()]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    x = torch.randn(2, 3, 4, 4, generator=_gen(11), dtype=DTYPE)
    target = torch.randn(2, 1, generator=_gen(12), dtype=DTYPE)

    def loss_fn(p: dict[str, Tensor], inputs: Tensor, y: Tensor) -> Tensor:
        out = torch.func.functional_call(model, p, (inputs,))
        return ((out - y) ** 2).sum()

    dense = hessian(loss_fn, params, x, target)
    sizes = [params[k].numel() for k in names]
    assert dense.shape == (sum(sizes), sum(sizes)) and sum(sizes) > 50

    def flat_loss(v: Tensor) -> Tensor:
        parts = torch.split(v, sizes)
        return loss_fn({k: t.view_as(params[k]) for k, t in zip(names, parts)}, x, target)

    reference = torch.func.hessian(flat_loss)(torch.cat([params[k].flatten() for k in names]))
    assert torch.allclose(dense, reference, atol=1e-10, rtol=0)
    assert dense.abs().max() > 1e-3
    # the strict layer's block is non-zero: second derivatives pass through the basis expansion
    n_strict = sum(params[k].numel() for k in names if k.startswith("strict"))
    assert dense[:n_strict, :n_strict].abs().max() > 1e-4


def test_float32_module_runs_with_float64_parameters():
    # the curvature measures call the (float32) module with float64 parameters
    torch.manual_seed(4)
    model = FieldSteerableCNN(1, 1, relaxed=True)
    params = {k: v.detach().double() for k, v in model.named_parameters()}
    x = torch.randn(1, 3, 6, 6, generator=_gen(13), dtype=DTYPE)
    out = torch.func.functional_call(model, params, (x,))
    assert out.dtype == DTYPE
    assert torch.allclose(out, model.double()(x), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def test_argument_checks():
    state = FieldType(4, ("trivial", "irrep1"))
    with pytest.raises(ValueError, match="rep"):
        FieldType(4, ("irrep3",))
    with pytest.raises(TypeError, match="rep"):
        FieldType(4, (1,))
    with pytest.raises(ValueError, match="reps"):
        FieldType(4, ())
    with pytest.raises(TypeError, match="order"):
        FieldType(4.0, ("trivial",))
    with pytest.raises(ValueError, match="kernel_size"):
        SteerableConv(state, state, 4)
    with pytest.raises(TypeError, match="in_type"):
        SteerableConv(("trivial",), state)
    with pytest.raises(ValueError, match="out_type"):
        SteerableConv(state, FieldType(8, ("trivial",)))
    with pytest.raises(ValueError, match="out_type"):  # no equivariant 1x1 kernel
        RelaxedSteerableConv(FieldType(4, ("irrep1",)), FieldType(4, ("trivial",)), 1)
    with pytest.raises(ValueError, match="x"):
        SteerableConv(state, state)(torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="g"):
        rotate_field(torch.zeros(1, 3, 5, 5), FieldType(8, ("trivial", "irrep1")), 1)
    with pytest.raises(ValueError, match="x"):
        rotate_field(torch.zeros(1, 2, 5, 5), state, 1)
    with pytest.raises(ValueError, match="order"):
        steerable_relaxation_penalty(nn.Linear(1, 1), order=3)
    assert steerable_relaxation_penalty(nn.Linear(1, 1)) == 0
    with pytest.raises(ValueError, match="order"):
        FieldSteerableCNN(2, 2, order=6)
    with pytest.raises(TypeError, match="relaxed"):
        FieldSteerableCNN(2, 2, relaxed="yes")
    with pytest.raises(ValueError, match="width"):
        FieldSteerableCNN(0, 2)
    with pytest.raises(ValueError, match="x"):
        FieldSteerableCNN(1, 1)(torch.zeros(1, 2, 5, 5))

"""The octahedral group O (24 rotations of the cube) and its strict and relaxed lifting and group
convolutions, in float64: the group structure, exact rotations of volumes and group maps,
equivariance under all 24 rotations (strict always, relaxed at initialisation only), the dense
Hessian of a small network against ``torch.func.hessian``, and the argument checks."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

from ella.layers import (
    OCTAHEDRAL_INVERSE,
    OCTAHEDRAL_PRODUCT,
    OCTAHEDRAL_ROTATIONS,
    OctahedralGroupConv,
    OctahedralLiftingConv,
    cnn3d_channels,
    octahedral_equivariance_error,
    rotate_o,
    rotate_volume,
)
from symdisc.curvature.hessian import hessian

DTYPE = torch.float64
TOL = 1e-12
N = 24
ROT = OCTAHEDRAL_ROTATIONS
PROD = OCTAHEDRAL_PRODUCT
INV = OCTAHEDRAL_INVERSE


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _volume(c: int = 2, size: int = 5, seed: int = 0) -> Tensor:
    return torch.randn(1, c, size, size, size, generator=_gen(seed), dtype=DTYPE)


def _group_map(c: int = 2, size: int = 5, seed: int = 1) -> Tensor:
    return torch.randn(1, c, N, size, size, size, generator=_gen(seed), dtype=DTYPE)


def _perturb(layer: nn.Module, seed: int = 5) -> None:
    """Random ``relaxed_weights`` (the equivariant part) and, for a relaxed layer, a random
    ``relaxation`` (the departure from equal combination weights)."""
    with torch.no_grad():
        for w in (layer.relaxed_weights, layer.relaxation):
            if w is not None:
                w.add_(0.5 * torch.randn(w.shape, generator=_gen(seed), dtype=w.dtype))
                seed += 100


# ---------------------------------------------------------------------------------------------
# the group
# ---------------------------------------------------------------------------------------------


def test_rotations_are_24_distinct_signed_permutations_with_det_one():
    assert ROT.shape == (N, 3, 3) and ROT.dtype == torch.int64
    assert torch.equal(ROT[0], torch.eye(3, dtype=torch.int64))
    assert len({tuple(m.flatten().tolist()) for m in ROT}) == N
    assert torch.equal(ROT.abs().sum(1), torch.ones(N, 3, dtype=torch.int64))
    assert torch.equal(ROT.abs().sum(2), torch.ones(N, 3, dtype=torch.int64))
    assert torch.allclose(torch.linalg.det(ROT.double()), torch.ones(N, dtype=DTYPE))


def test_cayley_table_closure_associativity_inverse():
    assert PROD.shape == (N, N) and INV.shape == (N,)
    for i, j in itertools.product(range(N), repeat=2):
        assert torch.equal(ROT[i] @ ROT[j], ROT[PROD[i, j]])
    # every row and column a permutation (Latin square), identity 0
    for row in PROD:
        assert sorted(row.tolist()) == list(range(N))
    for col in PROD.T:
        assert sorted(col.tolist()) == list(range(N))
    assert torch.equal(PROD[0], torch.arange(N)) and torch.equal(PROD[:, 0], torch.arange(N))
    left = PROD[PROD, :]  # left[i, j, k] = (ij)k
    right = PROD[:, PROD]  # right[i, j, k] = i(jk)
    assert torch.equal(left, right)
    assert torch.equal(PROD[torch.arange(N), INV], torch.zeros(N, dtype=torch.int64))
    assert torch.equal(PROD[INV, torch.arange(N)], torch.zeros(N, dtype=torch.int64))
    for g in range(N):
        assert torch.equal(ROT[INV[g]], ROT[g].T)


# ---------------------------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", range(N))
def test_rotate_volume_moves_hot_voxel_to_rotated_position(g):
    size, centre = 7, 3
    p = torch.tensor([3, -1, 2])  # centred, all coordinates distinct in magnitude
    x = torch.zeros(size, size, size, dtype=DTYPE)
    x[tuple((p + centre).tolist())] = 1.0
    y = rotate_volume(x, g)
    q = ROT[g] @ p
    assert y[tuple((q + centre).tolist())] == 1.0 and y.sum() == 1.0


def test_rotate_volume_and_rotate_o_are_actions():
    x, f = _volume(2, 3), _group_map(2, 3)
    for g, h in itertools.product(range(N), repeat=2):
        gh = int(PROD[g, h])
        assert torch.equal(rotate_volume(rotate_volume(x, h), g), rotate_volume(x, gh))
        assert torch.equal(rotate_o(rotate_o(f, h), g), rotate_o(f, gh))
    assert torch.equal(rotate_volume(x, 0), x) and torch.equal(rotate_o(f, 0), f)


def test_rotate_o_is_left_translation():
    f = _group_map(1, 3)
    for g in range(N):
        out = rotate_o(f, g)
        for h in (0, 5, 17):
            src = int(PROD[INV[g], h])
            assert torch.equal(out[:, :, h], rotate_volume(f[:, :, src], g))


# ---------------------------------------------------------------------------------------------
# equivariance
# ---------------------------------------------------------------------------------------------


def _lifting(tied: bool, banks: int = 2, c_in: int = 2, c_out: int = 2) -> OctahedralLiftingConv:
    torch.manual_seed(0)
    return OctahedralLiftingConv(c_in, c_out, 3, n_filter_banks=banks, tied=tied).to(DTYPE)


def _group(tied: bool, banks: int = 2, c_in: int = 2, c_out: int = 1) -> OctahedralGroupConv:
    torch.manual_seed(1)
    return OctahedralGroupConv(c_in, c_out, 3, n_filter_banks=banks, tied=tied).to(DTYPE)


@pytest.mark.parametrize("tied", [True, False])
def test_lifting_equivariant_under_all_24_rotations(tied):
    layer, x = _lifting(tied), _volume()
    y = layer(x)
    assert y.shape == (1, 2, N, 5, 5, 5)
    for g in range(N):
        err = (layer(rotate_volume(x, g)) - rotate_o(y, g)).abs().max()
        assert err < TOL, (g, float(err))


@pytest.mark.parametrize("tied", [True, False])
def test_group_conv_equivariant_under_all_24_rotations(tied):
    layer, f = _group(tied), _group_map()
    y = layer(f)
    assert y.shape == (1, 1, N, 5, 5, 5)
    for g in range(N):
        err = (layer(rotate_o(f, g)) - rotate_o(y, g)).abs().max()
        assert err < TOL, (g, float(err))


def test_relaxed_layers_stop_being_equivariant_after_perturbation():
    lift, group = _lifting(False), _group(False)
    x, f = _volume(), _group_map()
    assert octahedral_equivariance_error(lift, x) < TOL
    assert octahedral_equivariance_error(group, f) < TOL
    _perturb(lift)
    _perturb(group)
    assert octahedral_equivariance_error(lift, x) > 1e-3
    assert octahedral_equivariance_error(group, f) > 1e-3


def test_tied_layers_stay_equivariant_after_perturbation():
    lift, group = _lifting(True), _group(True)
    assert lift.relaxed_weights.shape == (2, 1) and group.relaxed_weights.shape == (2, 1)
    assert lift.relaxation is None and group.relaxation is None
    _perturb(lift)
    _perturb(group)
    assert octahedral_equivariance_error(lift, _volume()) < TOL
    assert octahedral_equivariance_error(group, _group_map()) < TOL


def test_equal_weights_reduce_to_summed_strict_filter():
    """Relaxed group conv with w_l(h) = w_l equals the one-bank strict layer with filter
    sum_l w_l psi_l."""
    relaxed = _group(False, banks=3)
    with torch.no_grad():
        relaxed.relaxed_weights.copy_(torch.tensor([[0.25], [1.75], [-1.25]]))
        relaxed.relaxation.fill_(0.25)  # constant over the group: still equivariant
    strict = OctahedralGroupConv(2, 1, 3, tied=True).to(DTYPE)
    with torch.no_grad():
        strict.weight.copy_((relaxed.combination_weights()[:, 0].view(3, 1, 1, 1, 1, 1, 1)
                             * relaxed.weight).sum(0, keepdim=True))  # fmt: skip
        strict.bias.copy_(relaxed.bias)
    f = _group_map()
    assert torch.allclose(relaxed(f), strict(f), atol=TOL, rtol=0)


def test_group_conv_matches_direct_formula():
    """One output entry against the written-out sum
    ``b + sum_{l,c,r,d} w_l(r) x(c, r, p + d) psi_l(c', c, r'^-1 r, R_{r'}^-1 d)``."""
    layer = _group(False, banks=2, c_in=1, c_out=1)
    _perturb(layer)
    f = _group_map(1, 3)
    y = layer(f)
    w, psi = layer.combination_weights().detach(), layer.weight.detach()
    p = torch.tensor([1, 1, 1])  # centre voxel of a 3^3 volume: no padding involved
    for r_out in (0, 7, 20):
        total = layer.bias.detach()[0].clone()
        for l_, r in itertools.product(range(2), range(N)):
            rot_psi = rotate_volume(psi[l_, 0, 0, int(PROD[INV[r_out], r])], r_out)
            total += w[l_, r] * (f[0, 0, r] * rot_psi).sum()
        assert torch.allclose(y[0, 0, r_out, p[0], p[1], p[2]], total, atol=TOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# curvature
# ---------------------------------------------------------------------------------------------


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.lift = OctahedralLiftingConv(1, 1, 3, n_filter_banks=2)
        self.group = OctahedralGroupConv(1, 1, 3, n_filter_banks=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.group(torch.tanh(self.lift(x))).mean(dim=(2, 3, 4, 5))


def test_dense_hessian_matches_torch_func_hessian():
    model = _TinyNet().to(DTYPE)
    _perturb(model.lift, 7)
    _perturb(model.group, 8)
    names = ["lift.relaxed_weights", "lift.relaxation", "group.relaxation", "group.bias"]
    fixed = dict(model.named_parameters())
    params = {k: fixed[k].detach().clone() for k in names}
    x = torch.randn(2, 1, 3, 3, 3, generator=_gen(9), dtype=DTYPE)
    target = torch.randn(2, 1, generator=_gen(10), dtype=DTYPE)

    def loss_fn(p: dict[str, Tensor], inputs: Tensor, y: Tensor) -> Tensor:
        out = torch.func.functional_call(model, p, (inputs,), strict=False)
        return ((out - y) ** 2).sum()

    dense = hessian(loss_fn, params, x, target)
    flat_sizes = [params[k].numel() for k in names]
    assert dense.shape == (sum(flat_sizes), sum(flat_sizes))

    def flat_loss(v: Tensor) -> Tensor:
        parts = torch.split(v, flat_sizes)
        p = {k: t.view_as(params[k]) for k, t in zip(names, parts)}
        return loss_fn(p, x, target)

    v0 = torch.cat([params[k].flatten() for k in names])
    reference = torch.func.hessian(flat_loss)(v0)
    assert torch.allclose(dense, reference, atol=1e-10, rtol=0)
    assert dense.abs().max() > 1e-3  # not trivially zero


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------


def test_argument_checks():
    with pytest.raises(ValueError, match="kernel_size"):
        OctahedralLiftingConv(1, 1, 4)
    with pytest.raises(ValueError, match="kernel_size"):
        OctahedralGroupConv(1, 1, 2)
    with pytest.raises(TypeError, match="n_filter_banks"):
        OctahedralGroupConv(1, 1, 3, n_filter_banks=1.0)
    with pytest.raises(ValueError, match="n_filter_banks"):
        OctahedralLiftingConv(1, 1, 3, n_filter_banks=0)
    with pytest.raises(TypeError, match="tied"):
        OctahedralLiftingConv(1, 1, 3, tied=1)
    with pytest.raises(ValueError, match="cubic"):
        rotate_volume(torch.zeros(3, 3, 4), 1)
    with pytest.raises(ValueError, match="cubic"):
        rotate_o(torch.zeros(1, 1, N, 3, 4, 3), 1)
    with pytest.raises(ValueError, match="`g`"):
        rotate_volume(torch.zeros(3, 3, 3), 24)
    with pytest.raises(TypeError, match="`g`"):
        rotate_volume(torch.zeros(3, 3, 3), 1.0)
    with pytest.raises(TypeError, match="`x`"):
        rotate_volume([0.0], 1)
    with pytest.raises(ValueError, match="24"):
        rotate_o(torch.zeros(1, 1, 4, 3, 3, 3), 1)
    with pytest.raises(ValueError, match="24"):
        OctahedralGroupConv(1, 1, 3)(torch.zeros(1, 1, 4, 3, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        OctahedralGroupConv(2, 1, 3)(torch.zeros(1, 1, N, 3, 3, 3))
    with pytest.raises(ValueError, match="D, H, W"):
        OctahedralLiftingConv(1, 1, 3)(torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        OctahedralLiftingConv(2, 1, 3)(torch.zeros(1, 1, 3, 3, 3))


def test_no_cache_and_gradients_flow():
    layer = _group(False)
    f = _group_map()
    y0 = layer(f)
    _perturb(layer)
    assert not torch.allclose(layer(f), y0)
    layer(f).sum().backward()
    assert layer.relaxed_weights.grad is not None and layer.weight.grad is not None
    assert layer.relaxation.grad is not None
    assert "n_filter_banks=2" in repr(layer) and "relaxation=(2, 24)" in repr(layer)


def test_reparametrisation_prior_groups_and_penalty():
    """``w_l(h) = relaxed_weights[l] + relaxation[l, h]`` (ones + zeros at initialisation); the
    relaxation has its own prior group; the penalty reads the relaxation only."""
    from ella.laplace import prior_groups
    from ella.layers import relaxation_penalty

    net = _TinyNet().to(DTYPE)
    assert torch.equal(net.group.relaxed_weights, torch.ones(2, 1, dtype=DTYPE))
    assert torch.equal(net.group.relaxation, torch.zeros(2, N, dtype=DTYPE))
    groups = prior_groups(net)
    assert groups["group:relaxation"] == ["group.relaxation"]
    assert groups["lift:gconv"] == ["lift.weight", "lift.relaxed_weights", "lift.bias"]
    assert relaxation_penalty(net).item() == 0.0
    with torch.no_grad():
        net.group.relaxed_weights.mul_(3.0)
    assert relaxation_penalty(net).item() == 0.0
    _perturb(net.group)
    w = net.group.combination_weights().detach()
    torch.testing.assert_close(w, net.group.relaxed_weights + net.group.relaxation)
    pen = relaxation_penalty(net, order=2)
    assert pen.item() == pytest.approx(float((w.roll(-1, 1) - w).pow(2).sum()))


def _cnn3d(width: int, c_in: int, c_out: int, depth: int, k: int) -> nn.Sequential:
    widths = [c_in, *([width] * (depth - 1)), c_out]
    return nn.Sequential(
        *(nn.Conv3d(a, b, k, padding=k // 2) for a, b in zip(widths[:-1], widths[1:]))
    )


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("depth", [2, 3])
def test_cnn3d_channels_matches_parameter_budget(depth):
    gcnn = nn.Sequential(OctahedralLiftingConv(1, 2, 3), OctahedralGroupConv(2, 1, 3))
    budget = _count(gcnn)
    width = cnn3d_channels(budget, 1, 1, depth=depth)
    gaps = {w: abs(_count(_cnn3d(w, 1, 1, depth, 3)) - budget) for w in range(1, width + 3)}
    assert gaps[width] == min(gaps.values())
    x = torch.zeros(1, 1, 5, 5, 5)
    assert _cnn3d(width, 1, 1, depth, 3)(x).shape == x.shape
    assert cnn3d_channels(1, 1, 1) == 1
    with pytest.raises(ValueError, match="depth"):
        cnn3d_channels(100, 1, 1, depth=1)
    with pytest.raises(ValueError, match="kernel_size"):
        cnn3d_channels(100, 1, 1, kernel_size=2)

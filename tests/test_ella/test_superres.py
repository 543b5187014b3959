"""ella.dynamics.superres (paper 003, "Super Resolution"): the octahedral lift of vector fields
and its inverse, equivariant upsampling, exact equivariance of the regular G-CNN under all 24
rotations in float64, the relaxed G-CNN equivariant at initialisation only, matched sizes, the
dense Hessian of every model against torch.func.hessian, and the training loop."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from ella.dynamics.superres import (
    SuperResCNN,
    SuperResGCNN,
    fit_superresolution,
    mae,
    octahedral_to_vector,
    superres_cnn_width,
    upsample,
    vector_to_octahedral,
)
from ella.dynamics.turbulence import rotate_velocity
from ella.layers.octahedral import (
    OCTAHEDRAL_PRODUCT,
    OCTAHEDRAL_ROTATIONS,
    rotate_o,
    rotate_volume,
)
from symdisc.curvature.hessian import hessian

DTYPE = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: a second thread only waits
ELEMENTS = range(24)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rotate_velocity(u: Tensor, g: int) -> Tensor:
    """Reference action on stacked vector fields ``(B, 3F, n, n, n)``:
    ``u'(p) = R_g u(R_g^-1 p)``, from rotate_volume and the matrix (checks the data module's
    rotate_velocity, which the models are tested against)."""
    b, c = u.shape[:2]
    fields = rotate_volume(u, g).reshape(b, c // 3, 3, *u.shape[2:])
    rot = OCTAHEDRAL_ROTATIONS[g].to(u.dtype)
    return torch.einsum("ij,bfj...->bfi...", rot, fields).reshape(u.shape)


def _perturb_relaxation(model: torch.nn.Module, seed: int) -> None:
    """Move every relaxation parameter (whatever the layers call it) off its initial value."""
    gen = _gen(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relax" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@torch.no_grad()
def _max_equivariance_error(model, x: Tensor) -> float:
    y = model(x)
    errs = [
        float((model(rotate_velocity(x, g)) - rotate_velocity(y, g)).abs().max()) for g in ELEMENTS
    ]
    return max(errs) / float(y.abs().max())


def test_reference_rotation_is_an_action_and_matches_data_module():
    u = torch.randn(2, 6, 3, 3, 3, generator=_gen(0), dtype=DTYPE)
    for g in (1, 5, 17):
        for h in (2, 9, 23):
            gh = int(OCTAHEDRAL_PRODUCT[g, h])
            both = _rotate_velocity(_rotate_velocity(u, h), g)
            assert torch.allclose(both, _rotate_velocity(u, gh), atol=1e-14)
        assert torch.allclose(rotate_velocity(u, g), _rotate_velocity(u, g), atol=1e-14)


def test_vector_lift_is_equivariant_and_left_inverted():
    u = torch.randn(2, 6, 3, 3, 3, generator=_gen(1), dtype=DTYPE)
    v = vector_to_octahedral(u)
    assert v.shape == (2, 2, 24, 3, 3, 3)
    # v(f, g, p) = <R_g e_0, u_f(p)>, checked element by element
    g, f, p = 13, 1, (0, 2, 1)
    direction = OCTAHEDRAL_ROTATIONS[g, :, 0].to(DTYPE)
    assert float(v[1, f, g, p[0], p[1], p[2]]) == pytest.approx(
        float(direction @ u[1, 3 * f : 3 * f + 3, p[0], p[1], p[2]]), abs=1e-14
    )
    assert torch.allclose(octahedral_to_vector(v), u, atol=1e-14)
    w = torch.randn(2, 2, 24, 3, 3, 3, generator=_gen(2), dtype=DTYPE)
    for g in ELEMENTS:
        assert torch.allclose(vector_to_octahedral(rotate_velocity(u, g)), rotate_o(v, g))
        assert torch.allclose(
            octahedral_to_vector(rotate_o(w, g)), rotate_velocity(octahedral_to_vector(w), g)
        )


@pytest.mark.parametrize("mode", ["nearest", "trilinear"])
def test_interpolation_commutes_with_rotations(mode):
    x = torch.randn(2, 2, 3, 3, 3, generator=_gen(3), dtype=DTYPE)
    up = torch.nn.functional.interpolate(x, scale_factor=4, mode=mode)
    for g in ELEMENTS:
        rotated = torch.nn.functional.interpolate(rotate_volume(x, g), scale_factor=4, mode=mode)
        assert torch.allclose(rotated, rotate_volume(up, g), atol=1e-14), g
    v = torch.randn(1, 2, 24, 3, 3, 3, generator=_gen(4), dtype=DTYPE)
    for g in ELEMENTS:
        assert torch.allclose(upsample(rotate_o(v, g), 2), rotate_o(upsample(v, 2), g), atol=1e-14)
    if mode == "trilinear":  # what the models use
        assert torch.allclose(upsample(x, 4), up, atol=0)


def test_strict_gcnn_exactly_equivariant_under_all_24_rotations():
    model = SuperResGCNN(2, 2, relaxed=False, factor=2).to(DTYPE)
    _perturb_relaxation(model, 5)  # tied weights: still equivariant
    x = torch.randn(2, 9, 3, 3, 3, generator=_gen(6), dtype=DTYPE)
    assert model(x).shape == (2, 3, 6, 6, 6)
    assert _max_equivariance_error(model, x) < 1e-12


def test_relaxed_gcnn_equivariant_at_init_only():
    model = SuperResGCNN(2, 1, relaxed=True, factor=2).to(DTYPE)
    x = torch.randn(2, 9, 3, 3, 3, generator=_gen(7), dtype=DTYPE)
    assert _max_equivariance_error(model, x) < 1e-12
    _perturb_relaxation(model, 8)
    assert _max_equivariance_error(model, x) > 1e-3


def test_cnn_is_not_equivariant_and_sizes_match():
    cnn = SuperResCNN(3, 1, factor=2).to(DTYPE)
    x = torch.randn(2, 9, 3, 3, 3, generator=_gen(9), dtype=DTYPE)
    assert cnn(x).shape == (2, 3, 6, 6, 6)
    assert _max_equivariance_error(cnn, x) > 1e-3
    for width, depth in ((2, 2), (4, 2), (3, 3)):
        target = sum(p.numel() for p in SuperResGCNN(width, depth).parameters())
        c = SuperResCNN(superres_cnn_width(target, depth), depth)
        assert abs(sum(p.numel() for p in c.parameters()) - target) / target < 0.05
    # the strict model has fewer parameters (one combination weight per bank)
    assert sum(p.numel() for p in SuperResGCNN(2, 2, relaxed=False).parameters()) < target


def test_residual_is_the_upsampled_middle_frame():
    """With the last decoder layer zeroed, the output is the upsampled middle frame."""
    x = torch.randn(1, 9, 2, 2, 2, generator=_gen(10), dtype=DTYPE)
    for model in (SuperResGCNN(1, 1, factor=4), SuperResCNN(2, 1, factor=4)):
        model = model.to(DTYPE)
        with torch.no_grad():
            for p in model.decoder[1].parameters():
                p.zero_()
        expected = torch.nn.functional.interpolate(x[:, 3:6], scale_factor=4, mode="trilinear")
        assert torch.allclose(model(x), expected, atol=1e-14)


@pytest.mark.parametrize("name", ["cnn", "gcnn", "rgcnn"])
def test_dense_hessian_matches_torch_func_hessian(name):
    torch.manual_seed(11)
    if name == "cnn":
        model = SuperResCNN(1, 1, factor=2).to(DTYPE)
    else:
        model = SuperResGCNN(1, 1, n_filter_banks=2, relaxed=name == "rgcnn", factor=2).to(DTYPE)
        _perturb_relaxation(model, 12)
    # every parameter but the large encoder filter bank of the G-CNNs (whose second
    # derivatives run through the same rotated-filter construction as its combination weights)
    names = [k for k, p in model.named_parameters() if p.numel() <= 300]
    assert any("encoder" in k for k in names) and any("decoder" in k for k in names)
    fixed = dict(model.named_parameters())
    params = {k: fixed[k].detach().clone() for k in names}
    x = torch.randn(2, 9, 2, 2, 2, generator=_gen(13), dtype=DTYPE)
    target = torch.randn(2, 3, 4, 4, 4, generator=_gen(14), dtype=DTYPE)

    def loss_fn(p: dict[str, Tensor], inputs: Tensor, y: Tensor) -> Tensor:
        out = torch.func.functional_call(model, p, (inputs,), strict=False)
        return ((out - y) ** 2).mean()

    dense = hessian(loss_fn, params, x, target)
    sizes = [params[k].numel() for k in names]

    def flat_loss(v: Tensor) -> Tensor:
        p = {k: t.view_as(params[k]) for k, t in zip(names, torch.split(v, sizes))}
        return loss_fn(p, x, target)

    reference = torch.func.hessian(flat_loss)(torch.cat([params[k].flatten() for k in names]))
    assert dense.shape == reference.shape == (sum(sizes), sum(sizes))
    assert torch.allclose(dense, reference, atol=1e-10, rtol=0)
    assert dense.abs().max() > 1e-3


def test_fit_records_mae_and_checkpoints():
    gen = _gen(15)

    class Data:
        train = (
            torch.randn(8, 9, 2, 2, 2, generator=gen),
            torch.randn(8, 3, 4, 4, 4, generator=gen),
        )
        val = (torch.randn(4, 9, 2, 2, 2, generator=gen), torch.randn(4, 3, 4, 4, 4, generator=gen))
        test = val

    torch.manual_seed(0)
    model = SuperResGCNN(1, 1, factor=2)
    fit = fit_superresolution(model, Data, epochs=3, lr=1e-2, batch_size=4, early_epoch=2)
    assert set(fit.history) == {"train_mae", "val_mae", "test_mae"}
    assert all(len(v) == 4 for v in fit.history.values())
    assert fit.history["train_mae"][-1] < fit.history["train_mae"][0]
    assert fit.best_epoch == min(range(4), key=fit.history["val_mae"].__getitem__)
    model.load_state_dict(fit.checkpoints["best"])
    assert mae(model, *Data.val) == pytest.approx(fit.history["val_mae"][fit.best_epoch])
    assert set(fit.checkpoints) == {"early", "best"}
    with pytest.raises(ValueError, match="early_epoch"):
        fit_superresolution(model, Data, epochs=2, early_epoch=3)


def test_argument_checks():
    with pytest.raises(ValueError, match="u"):
        vector_to_octahedral(torch.zeros(1, 4, 2, 2, 2))
    with pytest.raises(ValueError, match="v"):
        octahedral_to_vector(torch.zeros(1, 1, 4, 2, 2, 2))
    with pytest.raises(TypeError, match="u"):
        vector_to_octahedral([1.0])
    with pytest.raises(ValueError, match="x"):
        SuperResGCNN(1, 1)(torch.zeros(1, 6, 2, 2, 2))
    with pytest.raises(ValueError, match="width"):
        SuperResGCNN(0, 1)
    with pytest.raises(TypeError, match="relaxed"):
        SuperResGCNN(1, 1, relaxed="yes")
    with pytest.raises(ValueError, match="kernel_size"):
        SuperResCNN(2, 1, kernel_size=2)
    with pytest.raises(ValueError, match="x"):
        upsample(torch.zeros(2, 2, 2), 2)

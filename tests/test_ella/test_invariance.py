"""ella.invariance (paper 001): augmentations, the invariant model, augmented KFAC (eq. 19),
the GGN with averaged Jacobians (eq. 17), the eta-gradient (full batch vs finite differences
vs the section 4.3 estimator) and the invariance training loop. float64 where derivatives are
compared."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import DTYPE
from ella.invariance import (
    AFFINE_NAMES,
    AffineAugmentation,
    InvarianceConfig,
    InvariantModel,
    PointRotation,
    affine_matrices,
    augmented_kfac,
    eta_gradient,
    invariant_laplace,
    train_invariant,
)
from ella.marglik import MarglikConfig, NonFiniteLossError
from symdisc.curvature import functional, kfac, output_hessian_sqrt, per_sample_jacobian

# the training runs here are deliberately tiny (a handful of eta steps)
pytestmark = pytest.mark.filterwarnings("ignore::ella.invariance.FewEtaStepsWarning")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _split(x, eps, y, size):
    return [(x[i : i + size], eps[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def image_model(seed=0, conv=False):
    torch.manual_seed(seed)
    if conv:
        net = nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 36, 3)
        )
    else:
        net = nn.Sequential(nn.Flatten(), nn.Linear(36, 5), nn.Tanh(), nn.Linear(5, 3))
    aug = AffineAugmentation([0.1, -0.2, 0.3, 0.1, 0.05, -0.1], dtype=DTYPE)
    return InvariantModel(net.to(DTYPE), aug, 3)


def image_data(n=6, s=3, seed=1):
    g = _gen(seed)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=DTYPE)
    y = torch.arange(n) % 3
    eps = AffineAugmentation(dtype=DTYPE).sample_eps(n, s, g)
    return x, eps, y


# --------------------------------------------------------------------------------------------
# augmentations
# --------------------------------------------------------------------------------------------


def test_affine_generators_and_group_law():
    eta = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.3, 0.2], dtype=DTYPE)
    e = torch.rand(6, generator=_gen(0), dtype=DTYPE)
    # exp(s X) exp(t X) = exp((s + t) X) along one element of the algebra
    prod = affine_matrices(eta, 0.3 * e) @ affine_matrices(eta, 0.5 * e)
    torch.testing.assert_close(prod, affine_matrices(eta, 0.8 * e), rtol=1e-12, atol=1e-12)
    # the rotation component alone is a rotation by eps * eta_3
    rot = affine_matrices(eta, torch.tensor([0, 0, 1.0, 0, 0, 0], dtype=DTYPE))
    c, s = math.cos(0.5), math.sin(0.5)
    want = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=DTYPE)
    torch.testing.assert_close(rot, want, rtol=1e-12, atol=1e-12)
    # translation moves the last column only
    tr = affine_matrices(eta, torch.tensor([1.0, 1.0, 0, 0, 0, 0], dtype=DTYPE))
    torch.testing.assert_close(tr[:2, 2], eta[:2], rtol=1e-12, atol=1e-12)
    assert AFFINE_NAMES == ("translate_x", "translate_y", "rotate", "scale_x", "scale_y", "shear")


def test_affine_augmentation_shapes_identity_and_rotation():
    g = _gen(2)
    x = torch.rand(4, 2, 8, 8, generator=g, dtype=DTYPE)
    aug = AffineAugmentation(dtype=DTYPE, learnable=False)
    out = aug(x, 5, _gen(3))
    assert out.shape == (4, 5, 2, 8, 8)
    # eta = 0: every draw is the identity
    torch.testing.assert_close(out, x[:, None].expand_as(out), rtol=1e-12, atol=1e-12)
    # a quarter turn of a square image is a permutation of its pixels (rot90)
    aug = AffineAugmentation([0, 0, math.pi / 2, 0, 0, 0], dtype=DTYPE, learnable=False)
    eps = torch.zeros(4, 1, 6, dtype=DTYPE)
    eps[..., 2] = 1.0
    turned = aug.apply(x, eps)[:, 0]
    options = [torch.rot90(x, k, dims=(2, 3)) for k in (1, 3)]
    assert min(float((turned - o).abs().max()) for o in options) < 1e-10
    # same seed, same draws
    torch.testing.assert_close(aug(x, 3, _gen(7)), aug(x, 3, _gen(7)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="eta"):
        AffineAugmentation([0.0, 1.0])
    with pytest.raises(ValueError, match="eps"):
        aug.apply(x, torch.zeros(4, 2, 5, dtype=DTYPE))


def test_point_rotation_rotates_about_the_origin():
    aug = PointRotation([0.7], dtype=DTYPE, learnable=False)
    x = torch.randn(5, 2, generator=_gen(0), dtype=DTYPE)
    eps = aug.sample_eps(5, 4, _gen(1))
    out = aug.apply(x, eps)
    assert out.shape == (5, 4, 2)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1)[:, None].expand(5, 4))
    angle = torch.atan2(out[..., 1], out[..., 0]) - torch.atan2(x[:, 1], x[:, 0])[:, None]
    angle = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
    torch.testing.assert_close(angle, 0.7 * eps[..., 0], rtol=1e-10, atol=1e-10)


def test_eta_is_not_a_model_parameter_and_draws_average_logits():
    model = image_model()
    assert all(p is not model.augmentation.eta for p in model.parameters())
    assert not any("eta" in k for k in model.state_dict())
    x, eps, _ = image_data()
    x_aug = model.augmentation.apply(x, eps)
    want = torch.stack([model.net(x_aug[:, s]) for s in range(3)]).mean(0)
    torch.testing.assert_close(model.averaged()(x_aug), want, rtol=1e-12, atol=1e-12)
    assert model(x, generator=_gen(0)).shape == (6, 3)


# --------------------------------------------------------------------------------------------
# curvature of the invariant model
# --------------------------------------------------------------------------------------------


def _dense_averaged_ggn(avg, x_aug, loss="cross_entropy"):
    """Eq. (17) by a per-sample, per-draw loop: J_hat = mean_s J(x'_s)."""
    fn, params = functional(avg.net)
    out = avg(x_aug)
    roots = output_hessian_sqrt(out, loss, "sum")
    H = 0
    for n in range(x_aug.shape[0]):
        J = per_sample_jacobian(fn, params, x_aug[n]).mean(0)  # (C, P)
        M = roots[n].T @ J
        H = H + M.T @ M
    return H


def test_full_ggn_of_draw_average_is_the_averaged_jacobian_ggn():
    model = image_model()
    x, eps, y = image_data()
    la = invariant_laplace(model, _split(x, eps, y, 4), "classification", "full")
    want = _dense_averaged_ggn(model.averaged(), model.augmentation.apply(x, eps))
    torch.testing.assert_close(la.curvature, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("conv", [False, True])
def test_augmented_kfac_with_one_draw_is_kfac(conv):
    model = image_model(conv=conv)
    x, eps, y = image_data(s=1)
    x_aug = model.augmentation.apply(x, eps).detach()
    ours = augmented_kfac(
        model.averaged(), [(x_aug[:4], y[:4]), (x_aug[4:], y[4:])], loss="cross_entropy"
    )
    ref = kfac(model.net, [(x_aug[:, 0], y)], loss="cross_entropy", reduction="sum")
    assert [k.removeprefix("net.") for k in ours] == list(ref)
    for k, f in ours.items():
        r = ref[k.removeprefix("net.")]
        torch.testing.assert_close(f.A, r.A, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(f.G, r.G, rtol=1e-10, atol=1e-12)


def test_augmented_kfac_is_kronecker_product_of_expectations():
    """Eq. (19) against a per-draw loop, and exactness for one linear layer and one example."""
    model = image_model()
    x, eps, y = image_data(n=4, s=5)
    avg = model.averaged()
    x_aug = model.augmentation.apply(x, eps).detach()
    ours = augmented_kfac(avg, [(x_aug, y)], loss="cross_entropy")
    # reference for the first layer: abar = mean_s [x'_s, 1]; gbar = mean_s J_s^T S
    first = avg.net[1]
    a = torch.cat([x_aug.flatten(2), torch.ones(4, 5, 1, dtype=DTYPE)], 2).mean(1)
    A = a.T @ a / 4
    roots = output_hessian_sqrt(avg(x_aug), "cross_entropy", "sum")
    G = 0
    for n in range(4):
        gs = []
        for s in range(5):
            z = first(x_aug[n, s].flatten()[None]).detach().requires_grad_(True)
            out = avg.net[3](avg.net[2](z))[0]
            jac = torch.stack(
                [torch.autograd.grad(out[c], z, retain_graph=True)[0][0] for c in range(3)]
            )  # (C, 5)
            gs.append(jac.T / 5)
        gbar = sum(gs) @ roots[n]  # (5, K): mean over draws of J^T S
        G = G + gbar @ gbar.T
    torch.testing.assert_close(ours["net.1"].A, A, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours["net.1"].G, G, rtol=1e-10, atol=1e-12)
    # core KFAC of the same module averages outer products instead: a different A
    core = kfac(avg, [(x_aug, y)], loss="cross_entropy", reduction="sum")
    assert float((core["net.1"].A - A).abs().max()) > 1e-3
    # one linear layer, one example: eq. (19) is exact (= eq. 17)
    lin = InvariantModel(
        nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).to(DTYPE), model.augmentation, 5
    )
    one = augmented_kfac(lin.averaged(), [(x_aug[:1], y[:1])], loss="cross_entropy")["net.1"]
    dense = _dense_averaged_ggn(lin.averaged(), x_aug[:1])
    torch.testing.assert_close(one.to_dense(), dense, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# eta-gradients
# --------------------------------------------------------------------------------------------


def _fd(model, data, structure, delta, h=1e-6):
    eta = model.augmentation.eta
    out = torch.zeros_like(eta)
    for i in range(eta.numel()):
        for sign in (1.0, -1.0):
            with torch.no_grad():
                eta[i] += sign * h
            la = invariant_laplace(model, data, "classification", structure)
            out[i] += sign * float(-la.log_marginal_likelihood(delta)) / (2 * h)
            with torch.no_grad():
                eta[i] -= sign * h
    return out


@pytest.mark.parametrize("structure", ["full", "kron"])
def test_eta_gradient_of_full_batch_objective_matches_finite_differences(structure):
    model = image_model(conv=structure == "kron")
    x, eps, y = image_data()
    data = _split(x, eps, y, 4)
    la = invariant_laplace(model, data, "classification", structure, differentiable=True)
    (grad,) = torch.autograd.grad(-la.log_marginal_likelihood(0.7), model.augmentation.eta)
    fd = _fd(model, data, structure, 0.7)
    assert float(grad.abs().max()) > 1e-3
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7)


def test_point_rotation_eta_gradient_matches_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 2)).to(DTYPE)
    model = InvariantModel(net, PointRotation([0.4], dtype=DTYPE), 4)
    g = _gen(3)
    x = torch.randn(8, 2, generator=g, dtype=DTYPE)
    y = (x[:, 0] > 0).long()
    data = _split(x, model.augmentation.sample_eps(8, 4, g), y, 8)
    for structure in ("full", "kron"):
        la = invariant_laplace(model, data, "classification", structure, differentiable=True)
        (grad,) = torch.autograd.grad(-la.log_marginal_likelihood(0.5), model.augmentation.eta)
        torch.testing.assert_close(grad, _fd(model, data, structure, 0.5), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("structure", ["full", "kron", "diag"])
def test_section_4_3_estimator_equals_full_batch_gradient(structure):
    model = image_model(conv=structure == "kron")
    x, eps, y = image_data()
    data = _split(x, eps, y, 4)
    la = invariant_laplace(model, data, "classification", structure, differentiable=True)
    delta = {g: torch.tensor(0.5 + i, dtype=DTYPE) for i, g in enumerate(la.groups)}
    (full,) = torch.autograd.grad(-la.log_marginal_likelihood(delta), model.augmentation.eta)
    fitted = invariant_laplace(model, data, "classification", structure)
    # batches of 2 and of 3: same sum, one graph of a batch at a time
    for size in (2, 3):
        est = eta_gradient(fitted, delta, model, _split(x, eps, y, size), n_total=6)
        torch.testing.assert_close(est, full, rtol=1e-9, atol=1e-11)


def test_section_4_3_estimator_is_unbiased_over_subsets():
    """Averaged over all subsets of M = 2 of the N = 4 examples, the estimate is exact."""
    import itertools

    model = image_model()
    x, eps, y = image_data(n=4)
    fitted = invariant_laplace(model, _split(x, eps, y, 4), "classification", "full")
    full = eta_gradient(fitted, 0.7, model, _split(x, eps, y, 4), n_total=4)
    subsets = [list(s) for s in itertools.combinations(range(4), 2)]
    mean = sum(
        eta_gradient(fitted, 0.7, model, [(x[s], eps[s], y[s])], n_total=4) for s in subsets
    ) / len(subsets)
    torch.testing.assert_close(mean, full, rtol=1e-9, atol=1e-11)
    # a single subset is not exact (the estimate is stochastic)
    one = eta_gradient(fitted, 0.7, model, [(x[:2], eps[:2], y[:2])], n_total=4)
    assert float((one - full).abs().max()) > 1e-6


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _toy(n=40, seed=0):
    g = _gen(seed)
    x = torch.randn(n, 2, generator=g, dtype=DTYPE)
    y = (x.norm(dim=1) > 1.1).long()  # rotation invariant labels
    return x, y


def _point_model(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(DTYPE)
    return InvariantModel(net, PointRotation(dtype=DTYPE), 4)


def _mconfig(**kw):
    base = dict(
        epochs=4, batch_size=20, lr=0.05, lr_hyper=0.1, n_hyper_steps=3, marglik_every=1, burn_in=0
    )
    return MarglikConfig(**(base | kw))


@pytest.mark.parametrize("structure, how", [("full", "full"), ("kron", "stochastic")])
def test_lila_training_moves_eta_and_records_history(structure, how):
    model = _point_model()
    inv = InvarianceConfig(
        method="lila",
        n_samples=4,
        lr_eta=0.1,
        eta_burn_in=1,
        eta_gradient=how,
        eta_batch_size=20,
        n_eta_steps=2,
    )
    res = train_invariant(model, _toy(), _mconfig(structure=structure), inv)
    assert len(res.history) == 4
    assert res.history[0]["eta/rotate"] == 0.0  # burn-in: not yet moved
    assert res.eta[0] != 0.0
    assert res.best_neg_log_marglik is not None and math.isfinite(res.best_neg_log_marglik)
    assert res.best_eta is not None and set(res.best_precisions) == {"net.0", "net.2"}


def test_baseline_keeps_eta_and_augerino_grows_it():
    x, y = _toy()
    model = _point_model()
    res = train_invariant(model, (x, y), _mconfig(), InvarianceConfig(method="none", n_samples=1))
    assert res.eta == [0.0] and res.best_neg_log_marglik is not None
    model = _point_model()
    inv = InvarianceConfig(method="augerino", n_samples=4, lr_eta=0.05, augerino_weight=1.0)
    res = train_invariant(model, (x, y), _mconfig(), inv)
    assert abs(res.eta[0]) > 0.01 and res.best_neg_log_marglik is None


class _Interrupt(Exception):
    pass


class _StopAfterCheckpoint(nn.Module):
    """Wraps a net; raises on the first forward after the checkpoint file appears."""

    def __init__(self, inner, path):
        super().__init__()
        self.inner, self.path = inner, path

    def forward(self, x):
        if self.path is not None and Path(self.path).exists():
            raise _Interrupt
        return self.inner(x)


def test_resume_gives_the_same_result(tmp_path):
    data = _toy()
    inv = InvarianceConfig(
        method="lila", n_samples=3, lr_eta=0.1, eta_burn_in=0, eta_gradient="full", n_eta_steps=1
    )
    ckpt = str(tmp_path / "ckpt.pt")
    cfg = _mconfig(checkpoint_every=2, checkpoint=ckpt)

    def wrapped(seed, path):
        model = _point_model(seed)
        model.net = _StopAfterCheckpoint(model.net, path)
        return model

    full = train_invariant(wrapped(0, None), data, cfg, inv)
    Path(ckpt).unlink()
    with pytest.raises(_Interrupt):
        train_invariant(wrapped(0, ckpt), data, cfg, inv)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    fresh = wrapped(5, None)
    resumed = train_invariant(fresh, data, cfg, inv, resume=ckpt)
    assert resumed.eta == full.eta and resumed.history == full.history
    assert resumed.best_eta == full.best_eta and resumed.precisions == full.precisions


def test_nan_stops_training():
    x, y = _toy()
    x = x.clone()
    x[3, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        train_invariant(_point_model(), (x, y), _mconfig(), InvarianceConfig(n_samples=2))


class _NaNInEval(nn.Module):
    """NaN outputs in ``eval()`` mode only, the mode of the Laplace fit (finite weights)."""

    def forward(self, x):
        return x if self.training else x * math.nan


@pytest.mark.parametrize("structure, how", [("full", "full"), ("kron", "stochastic")])
def test_non_finite_outputs_at_a_laplace_fit_stop_and_restore(tmp_path, structure, how):
    model = _point_model()
    model.net.append(_NaNInEval())
    ckpt = tmp_path / "ckpt.pt"
    cfg = _mconfig(structure=structure, burn_in=2, checkpoint_every=1, checkpoint=str(ckpt))
    inv = InvarianceConfig(n_samples=2, eta_burn_in=0, eta_gradient=how)
    with pytest.raises(NonFiniteLossError, match="epoch 3: the Laplace fit failed: .*finite"):
        train_invariant(model, _toy(), cfg, inv)
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 2
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["model"][name]), name
    assert torch.equal(model.augmentation.eta, state["eta"])


def test_config_checks():
    with pytest.raises(ValueError, match="method"):
        InvarianceConfig(method="bogus")
    with pytest.raises(ValueError, match="n_samples"):
        InvarianceConfig(n_samples=0)
    with pytest.raises(TypeError, match="InvariantModel"):
        train_invariant(nn.Linear(2, 2), _toy(), _mconfig(), InvarianceConfig())
    with pytest.raises(TypeError, match="DrawAverage"):
        augmented_kfac(nn.Linear(2, 2), [], loss="cross_entropy")

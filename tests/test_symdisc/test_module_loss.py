"""Bring your own model: a ParamLoss over chosen parameters of any nn.Module."""

import pytest
import torch
from torch import nn

from symdisc.discovery import discover
from symdisc.losses import ModuleLoss, module_loss
from symdisc.metrics import evaluate
from symdisc.trainer import TrainConfig


def sampler(n, generator):
    """n batches of 4 inputs in R^2 with scalar targets."""
    X = torch.randn(n, 4, 2, generator=generator)
    return X, torch.randn(n, 4, 1, generator=generator)


def squared_error(out, y):
    return ((out - y) ** 2).sum()


def leaky_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(0.1), nn.Linear(3, 1))


def test_module_loss_evaluates_the_module_on_the_chosen_parameters():
    model = leaky_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = module_loss(model, squared_error, sampler, [model[0], "2.weight"])
    assert list(loss.param_shapes) == ["0.weight", "0.bias", "2.weight"]
    assert loss.x_shape == (4, 2) and loss.y_shape == (4, 1)
    assert isinstance(loss, ModuleLoss)
    assert loss.model is model and loss.loss_fn is squared_error and loss.data_sampler is sampler
    X, Y = sampler(1, torch.Generator().manual_seed(1))
    theta = torch.randn(loss.num_params)
    p = loss.unflatten(theta)
    h = torch.nn.functional.leaky_relu(X[0] @ p["0.weight"].T + p["0.bias"], 0.1)
    manual = squared_error(h @ p["2.weight"].T + model[2].bias, Y[0])
    torch.testing.assert_close(loss.flat(theta, X[0], Y[0]), manual)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_module_loss_errors():
    model = leaky_net()
    with pytest.raises(TypeError, match="`model` must be a Module, got function"):
        module_loss(squared_error, squared_error, sampler, ["weight"])
    with pytest.raises(ValueError, match="'weight' is not among"):
        module_loss(model, squared_error, sampler, ["weight"])  # no substring matching
    with pytest.raises(ValueError, match="not a submodule"):
        module_loss(model, squared_error, sampler, [nn.Linear(2, 3)])
    with pytest.raises(ValueError, match="each parameter once"):
        module_loss(model, squared_error, sampler, [model[0], "0.bias"])
    with pytest.raises(ValueError, match="leading dimension n"):
        module_loss(
            model, squared_error, lambda n, g: (torch.randn(4, 2), torch.randn(4, 1)), [model[0]]
        )


def rescaling_basis(loss, theta):
    """Tangents of the positive rescaling of each hidden unit j, built by hand: (N, 3, P)."""
    p = loss.unflatten(theta)  # entries (N, *shape)
    rows = []
    for j in range(3):
        d = {k: torch.zeros_like(v) for k, v in p.items()}
        d["0.weight"][:, j] = p["0.weight"][:, j]
        d["0.bias"][:, j] = p["0.bias"][:, j]
        d["2.weight"][:, :, j] = -p["2.weight"][:, :, j]
        rows.append(torch.cat([v.reshape(theta.shape[0], -1) for v in d.values()], dim=1))
    return torch.stack(rows, dim=1)


def test_discovery_on_a_leaky_relu_sequential_finds_positive_rescaling(one_thread):
    model = leaky_net()
    loss = module_loss(model, squared_error, sampler, [model[0], model[2]], name="leaky_seq")
    # the settings of experiments/rescaling.py's relu_h3 case (5000 steps, 10 000 samples)
    run = discover(
        loss,
        d=3,
        k=1,
        data_dependent=False,
        n_train=10_000,
        n_test=500,
        config=TrainConfig(steps=5000),
    )
    test = run.test_samples
    scores = evaluate(
        loss,
        run.discovery.action,
        run.discovery.generators().detach(),
        test,
        known_basis=rescaling_basis(loss, test.theta),
    )
    assert scores["energy_outside"] <= 0.05, scores
    assert scores["invariance_median"] < 0.05, scores


def test_module_loss_samples_theta_at_the_modules_own_scale():
    from symdisc.sampler import sample

    model = leaky_net()
    with torch.no_grad():
        model[0].bias.zero_()  # an all-zero tensor takes the mean scale of the others
    loss = module_loss(model, squared_error, sampler, [model[0], model[2]])
    rms = {n: float(p.detach().pow(2).mean().sqrt()) for n, p in model.named_parameters()}
    fallback = (rms["0.weight"] + rms["2.weight"] + rms["2.bias"]) / 3
    want = torch.cat(
        [
            torch.full((6,), rms["0.weight"]),
            torch.full((3,), fallback),
            torch.full((3,), rms["2.weight"]),
            torch.full((1,), rms["2.bias"]),
        ]
    )
    want = want / want.pow(2).mean().sqrt()  # relative scales, overall root mean square 1
    torch.testing.assert_close(loss.param_scale, want)
    theta = sample(loss, 20_000, seed=0).theta
    # the sample std converges to the module's scale (relative standard error ~ 1 / sqrt(2 n))
    torch.testing.assert_close(theta.std(dim=0), want, rtol=0.03, atol=0)
    assert theta.mean(dim=0).abs().max() < 0.03
    unit = module_loss(model, squared_error, sampler, [model[0], model[2]], theta_scale="unit")
    assert unit.param_scale is None
    torch.testing.assert_close(
        sample(unit, 20_000, seed=0).theta.std(dim=0), torch.ones(13), rtol=0.03, atol=0
    )
    with pytest.raises(ValueError, match="`theta_scale`"):
        module_loss(model, squared_error, sampler, [model[0]], theta_scale="init")

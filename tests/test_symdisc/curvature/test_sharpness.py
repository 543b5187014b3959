"""Sharpness against a plain loop over the same directions; the module stays untouched."""

import pytest
import torch

from conftest import cnn_case
from symdisc.curvature import flatten, random_directions, sharpness, unflatten


@pytest.mark.parametrize("radius", ["absolute", "relative"])
@pytest.mark.parametrize("kind", ["sphere", "filter"])
def test_sharpness_equals_plain_loop_and_leaves_module_unchanged(kind, radius):
    case = cnn_case(loss="cross_entropy")
    state = {k: v.clone() for k, v in case.model.state_dict().items()}
    params_before = {k: v.clone() for k, v in case.params.items()}
    radii = [1e-3, 1e-2, 1e-1]
    d = random_directions(case.params, 6, kind=kind, generator=0)
    result = sharpness(
        case.loss_fn,
        case.params,
        case.inputs,
        case.targets,
        radii=radii,
        directions=d,
        radius=radius,
        chunk_size=4,
    )
    theta = flatten(case.params)
    base = float(case.loss_fn(case.params, case.inputs, case.targets))
    scale = float(theta.norm()) if radius == "relative" else 1.0
    loop = torch.tensor(
        [
            [
                float(
                    case.loss_fn(
                        unflatten(theta + r * scale * di, case.params), case.inputs, case.targets
                    )
                )
                - base
                for di in d
            ]
            for r in radii
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(result.delta, loop, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(result.mean_abs, loop.abs().mean(1))
    torch.testing.assert_close(result.mean_rel, (loop / base).mean(1))
    torch.testing.assert_close(result.mean_abs_se, loop.abs().std(1) / 6**0.5)
    assert all(torch.equal(case.model.state_dict()[k], state[k]) for k in state)
    assert all(torch.equal(case.params[k], params_before[k]) for k in params_before)


def test_sharpness_with_module_parameters_leaves_module_unchanged():
    case = cnn_case(loss="mse")
    live = dict(case.model.named_parameters())  # the module's own tensors, not copies
    before = {k: v.detach().clone() for k, v in live.items()}
    sharpness(
        case.loss_fn,
        {k: v.detach() for k, v in live.items()},
        case.inputs,
        case.targets,
        radii=[0.5],
        directions=8,
        generator=1,
    )
    assert all(torch.equal(live[k].detach(), before[k]) for k in before)


def test_random_directions_properties():
    case = cnn_case()
    sphere = random_directions(case.params, 2000, generator=0)
    assert torch.allclose(sphere.norm(dim=1), torch.ones(2000, dtype=torch.float64))
    # uniform on the sphere: mean ~ 0 and covariance ~ I / P
    P = sphere.shape[1]
    assert sphere.mean(0).abs().max() < 4 / (2000 * P) ** 0.5
    cov = sphere.T @ sphere / 2000
    assert (cov.diagonal() * P - 1).abs().mean() < 0.1
    filt = random_directions(case.params, 3, kind="filter", generator=0)
    parts = unflatten(filt, case.params)
    w = case.params["0.weight"]
    ratio = parts["0.weight"].flatten(2).norm(dim=2) / w.flatten(1).norm(dim=1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))  # one factor per direction
    assert torch.count_nonzero(parts["0.bias"]) == 0


def test_sharpness_errors():
    case = cnn_case()
    args = (case.loss_fn, case.params, case.inputs, case.targets)
    with pytest.raises(ValueError, match="`radii`"):
        sharpness(*args, radii=[-1.0])
    with pytest.raises(ValueError, match="`radius`"):
        sharpness(*args, radii=[1.0], radius="filter")
    with pytest.raises(ValueError, match="`directions`"):
        sharpness(*args, radii=[1.0], directions=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="`kind`"):
        random_directions(case.params, 2, kind="layer")
    bad = {k: torch.full_like(v, float("nan")) for k, v in case.params.items()}
    with pytest.raises(ValueError, match="finite"):
        sharpness(case.loss_fn, bad, case.inputs, case.targets, radii=[1.0])

"""The same computations on every available device agree with the CPU (CUDA when present)."""

import pytest
import torch

from conftest import mlp_case
from symdisc.curvature import (
    HessianOperator,
    hutchinson,
    kfac,
    lanczos,
    sharpness,
    slq_density,
)

DEVICES = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))
]


@pytest.mark.parametrize("device", DEVICES)
def test_operators_and_estimators_agree_with_cpu(device):
    cpu = mlp_case(loss="cross_entropy", n=16)
    moved = {k: v.to(device) for k, v in cpu.params.items()}
    x, y = cpu.inputs.to(device), cpu.targets.to(device)
    H_cpu = HessianOperator(cpu.loss_fn, cpu.params, cpu.inputs, cpu.targets)
    H_dev = HessianOperator(cpu.loss_fn, moved, x, y)
    v = torch.randn(H_cpu.shape[0], dtype=torch.float64)
    torch.testing.assert_close((H_dev @ v.to(device)).cpu(), H_cpu @ v)
    torch.testing.assert_close(
        lanczos(H_dev, 3, generator=0).eigenvalues.cpu(), lanczos(H_cpu, 3, generator=0).eigenvalues
    )
    torch.testing.assert_close(
        hutchinson(H_dev, 10, generator=0).value.cpu(), hutchinson(H_cpu, 10, generator=0).value
    )
    torch.testing.assert_close(
        slq_density(H_dev, n_steps=10, generator=0).density,
        slq_density(H_cpu, n_steps=10, generator=0).density,
    )
    s_dev = sharpness(cpu.loss_fn, moved, x, y, radii=[0.1], directions=4, generator=0)
    s_cpu = sharpness(
        cpu.loss_fn, cpu.params, cpu.inputs, cpu.targets, radii=[0.1], directions=4, generator=0
    )
    torch.testing.assert_close(s_dev.mean_abs.cpu(), s_cpu.mean_abs)
    model = cpu.model.to(device)
    f_dev = kfac(model, [(x, y)], loss="cross_entropy", fisher="mc", mc_samples=3, generator=0)
    f_cpu = kfac(
        cpu.model.cpu(),
        [(cpu.inputs, cpu.targets)],
        loss="cross_entropy",
        fisher="mc",
        mc_samples=3,
        generator=0,
    )
    for k in f_cpu:
        torch.testing.assert_close(f_dev[k].G.cpu(), f_cpu[k].G)

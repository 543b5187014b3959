"""Tests of the generated isotropic turbulence and its super-resolution data set
(:mod:`ella.dynamics.turbulence`)."""

from __future__ import annotations

import math

import pytest
import torch

from ella.dynamics.turbulence import (
    SuperResolutionData,
    TurbulenceConfig,
    divergence,
    downsample,
    energy_spectrum,
    evolve_turbulence,
    flow_statistics,
    initial_field,
    rotate_velocity,
    simulate_turbulence,
    superresolution_data,
)
from ella.layers.octahedral import (
    OCTAHEDRAL_PRODUCT,
    OCTAHEDRAL_ROTATIONS,
    rotate_volume,
)

F64 = torch.float64
# a cheap flow at 16^3 (after 40 steps: k_max eta about 0.93, Re_lambda about 10, derivative
# skewness about -0.45)
SMALL = TurbulenceConfig(
    size=16,
    viscosity=0.05,
    forcing_power=0.1,
    dt=0.05,
    spinup_steps=40,
    steps_per_frame=2,
    n_frames=3,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = 2 * math.pi * torch.arange(n, dtype=F64) / n
    return torch.meshgrid(x, x, x, indexing="ij")


def abc_flow(n: int, k: int, a: float, b: float, c: float) -> torch.Tensor:
    """The Arnold-Beltrami-Childress flow at wavenumber k: curl u = k u, so u x omega = 0."""
    x, y, z = grid(n)
    return torch.stack(
        [
            a * torch.sin(k * z) + c * torch.cos(k * y),
            b * torch.sin(k * x) + a * torch.cos(k * z),
            c * torch.sin(k * y) + b * torch.cos(k * x),
        ]
    )


def spectral_grad(f: torch.Tensor) -> torch.Tensor:
    """(..., n, n, n) -> (..., 3, n, n, n), a slow reference with full complex FFTs."""
    n = f.shape[-1]
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=F64)
    k[n // 2] = 0
    fh = torch.fft.fftn(f, dim=(-3, -2, -1))
    ks = (k[:, None, None], k[None, :, None], k[None, None, :])
    return torch.stack([torch.fft.ifftn(1j * ki * fh, dim=(-3, -2, -1)).real for ki in ks], -4)


def reference_rhs(u: torch.Tensor, nu: float) -> torch.Tensor:
    """-P T[(u . grad) u] + nu lap u in the convective form (not the rotational one)."""
    n = u.shape[-1]
    grads = spectral_grad(u)  # (3 components i, 3 directions j, n, n, n)
    conv = (u[None, :] * grads).sum(1)  # sum_j u_j d_j u_i
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=F64)
    kk = torch.stack(torch.meshgrid(k, k, k, indexing="ij"))
    keep = (kk.abs() < n / 3).all(0)
    ch = torch.fft.fftn(conv, dim=(-3, -2, -1)) * keep
    k2 = (kk**2).sum(0)
    dot = (kk * ch).sum(0) / torch.where(k2 > 0, k2, torch.ones_like(k2))
    proj = ch - kk * dot
    uh = torch.fft.fftn(u, dim=(-3, -2, -1))
    return torch.fft.ifftn(-proj - nu * k2 * uh, dim=(-3, -2, -1)).real


# ---------------------------------------------------------------------------------------------
# the solver
# ---------------------------------------------------------------------------------------------


def test_generated_fields_are_divergence_free_and_shaped():
    u = simulate_turbulence(SMALL, seed=3)
    assert u.shape == (3, 3, 16, 16, 16) and u.dtype == F64
    scale = (16 / 3) * u.abs().amax()  # |k| |u| bound of the derivative
    assert float(divergence(u).abs().amax() / scale) < 1e-13
    u0 = initial_field(SMALL, seed=3)
    assert float(divergence(u0).abs().amax() / ((16 / 3) * u0.abs().amax())) < 1e-13
    assert float(0.5 * u0.square().sum(0).mean()) == pytest.approx(SMALL.initial_energy, 1e-12)
    # a velocity that is not divergence free: u = (sin x, 0, 0) has div = cos x
    x, _, _ = grid(8)
    v = torch.stack([torch.sin(x), torch.zeros_like(x), torch.zeros_like(x)])
    torch.testing.assert_close(divergence(v), torch.cos(x), atol=1e-13, rtol=0)


def test_float32_follows_float64_and_blow_up_and_courant_are_reported(caplog):
    cfg = TurbulenceConfig(size=16, viscosity=0.05, dt=0.05, spinup_steps=10, n_frames=2)
    u64 = simulate_turbulence(cfg, seed=0)
    u32 = simulate_turbulence(TurbulenceConfig(**{**cfg.__dict__, "dtype": torch.float32}), 0)
    assert u32.dtype == torch.float32
    assert float((u32.double() - u64).abs().amax() / u64.abs().amax()) < 1e-5
    with pytest.raises(RuntimeError, match="dt"):
        simulate_turbulence(
            TurbulenceConfig(size=8, viscosity=1e-4, dt=3.0, spinup_steps=50, n_frames=1), 0
        )
    with caplog.at_level("WARNING", logger="ella.dynamics.turbulence"):
        simulate_turbulence(TurbulenceConfig(size=16, dt=0.5, spinup_steps=0, n_frames=1), 0)
    assert "Courant" in caplog.text


def test_seeded_and_different_seeds_differ():
    a = simulate_turbulence(SMALL, seed=1)
    torch.testing.assert_close(simulate_turbulence(SMALL, seed=1), a, atol=0, rtol=0)
    assert float((simulate_turbulence(SMALL, seed=2) - a).abs().amax()) > 0.1


def test_beltrami_flow_decays_at_the_exact_viscous_rate():
    # u x omega = 0 for a Beltrami flow: without forcing u(t) = u(0) exp(-nu k^2 t) exactly
    nu, k, dt = 0.07, 2, 0.1
    u0 = abc_flow(16, k, 1.0, 0.7, 0.4)
    cfg = TurbulenceConfig(
        size=16, viscosity=nu, forcing_power=0.0, dt=dt, spinup_steps=0, steps_per_frame=5,
        n_frames=3,
    )  # fmt: skip
    frames = evolve_turbulence(u0, cfg)
    for f in range(3):
        expected = u0 * math.exp(-nu * k**2 * dt * 5 * f)
        torch.testing.assert_close(frames[f], expected, atol=1e-13, rtol=0)


def test_time_derivative_matches_the_convective_form():
    # central difference of the integrated flow vs -P[(u.grad)u] + nu lap u computed in the
    # other (convective) form of the nonlinear term, with full complex FFTs
    nu, dt = 0.05, 1e-3
    cfg = TurbulenceConfig(
        size=16, viscosity=nu, forcing_power=0.0, dt=dt, spinup_steps=0, steps_per_frame=1,
        n_frames=3,
    )  # fmt: skip
    u0 = initial_field(SMALL, seed=5)
    frames = evolve_turbulence(u0, cfg)
    numeric = (frames[2] - frames[0]) / (2 * dt)
    exact = reference_rhs(frames[1], nu)
    assert float((numeric - exact).norm() / exact.norm()) < 1e-5


@pytest.mark.parametrize("power", [0.0, 0.3])
def test_energy_budget(power):
    # dE/dt = -2 nu sum_k |k|^2 E_k + P: the nonlinear term conserves energy, the forcing
    # injects exactly P
    nu, dt = 0.05, 2e-3
    cfg = TurbulenceConfig(
        size=16, viscosity=nu, forcing_power=power, dt=dt, spinup_steps=0, steps_per_frame=1,
        n_frames=3,
    )  # fmt: skip
    frames = evolve_turbulence(initial_field(SMALL, seed=7), cfg)
    energy = [flow_statistics(f, nu)["energy"] for f in frames]
    dissipation = flow_statistics(frames[1], nu)["dissipation"]
    rate = (energy[2] - energy[0]) / (2 * dt)
    # central difference: O(dt^2), relative to the two terms (which nearly cancel with forcing)
    assert abs(rate - (power - dissipation)) < 1e-5 * (power + dissipation)
    assert dissipation > 0.05  # the budget is not trivially satisfied


def test_solver_commutes_with_the_octahedral_rotations():
    u0 = initial_field(SMALL, seed=11)
    cfg = TurbulenceConfig(
        size=16, viscosity=0.05, forcing_power=0.1, dt=0.05, spinup_steps=0, steps_per_frame=5,
        n_frames=2,
    )  # fmt: skip
    out = evolve_turbulence(u0, cfg)
    for g in (1, 5, 13, 23):
        rotated = evolve_turbulence(rotate_velocity(u0, g), cfg)
        torch.testing.assert_close(rotated, rotate_velocity(out, g), atol=1e-12, rtol=0)


def test_spectrum_and_statistics_of_a_beltrami_flow():
    a, b, c, k, nu = 1.0, 0.7, 0.4, 3, 0.05
    u = abc_flow(16, k, a, b, c)
    energy = (a**2 + b**2 + c**2) / 2
    wavenumbers, spec = energy_spectrum(u)
    assert torch.equal(wavenumbers, torch.arange(9, dtype=F64))
    expected = torch.zeros(9, dtype=F64)
    expected[k] = energy
    torch.testing.assert_close(spec, expected, atol=1e-13, rtol=0)
    stats = flow_statistics(u, nu)
    assert stats["energy"] == pytest.approx(energy, rel=1e-12)
    assert stats["dissipation"] == pytest.approx(2 * nu * k**2 * energy, rel=1e-12)
    assert stats["integral_scale"] == pytest.approx(math.pi / (2 * k) * 1.5, rel=1e-12)
    # a batch: spectra per field, energy up to the corner modes
    batch = torch.stack([initial_field(SMALL, seed=s) for s in range(2)])
    _, spec = energy_spectrum(batch)
    assert spec.shape == (2, 9)
    torch.testing.assert_close(
        spec.sum(-1), 0.5 * batch.square().sum((1, 2, 3, 4)) / 16**3, rtol=1e-6, atol=0
    )


# ---------------------------------------------------------------------------------------------
# rotations and isotropy
# ---------------------------------------------------------------------------------------------


def test_rotate_velocity_convention():
    # only component 0, varying along dim 0: u'(p) = R u(R^-1 p) has component a (the row of
    # R's column 0) equal to s f(s p_a), s = R[a, 0], p centred
    n = 6
    c = torch.arange(n, dtype=F64) - (n - 1) / 2

    def f(t):
        return t + 0.1 * t**2

    u = torch.zeros(1, 3, n, n, n, dtype=F64)
    u[0, 0] = f(c)[:, None, None]
    for g in range(24):
        r = OCTAHEDRAL_ROTATIONS[g]
        a = int(r[:, 0].abs().argmax())
        s = float(r[a, 0])
        expected = torch.zeros_like(u)
        shape = [1, 1, 1]
        shape[a] = n
        expected[0, a] = s * f(s * c).reshape(shape).expand(n, n, n)
        torch.testing.assert_close(rotate_velocity(u, g), expected, atol=0, rtol=0)


def test_rotate_velocity_group_law_and_divergence():
    u = torch.randn(2, 6, 4, 4, 4, dtype=F64)  # two stacked fields
    for g in range(24):
        for h in range(24):
            torch.testing.assert_close(
                rotate_velocity(rotate_velocity(u, h), g),
                rotate_velocity(u, int(OCTAHEDRAL_PRODUCT[g, h])),
                atol=0,
                rtol=0,
            )
    v = simulate_turbulence(SMALL, seed=0)[-1]
    scale = (16 / 3) * v.abs().amax()
    for g in range(24):
        w = rotate_velocity(v, g)
        assert float(divergence(w).abs().amax() / scale) < 1e-13
        # the divergence is a scalar: it rotates as a volume
        torch.testing.assert_close(
            divergence(w), rotate_volume(divergence(v), g), atol=1e-13, rtol=0
        )


def _axis_statistics(u: torch.Tensor) -> torch.Tensor:
    """(3, n, n, n) -> (3 axes, 4): <u_a^2>, <(d_a u_a)^2>, the skewness of d_a u_a and the
    transverse <(d_{a+1} u_a)^2>."""
    grads = spectral_grad(u)  # [i, j] = d_j u_i
    rows = []
    for a in range(3):
        long = grads[a, a]
        var = long.square().mean()
        rows.append(
            torch.stack(
                [
                    u[a].square().mean(),
                    var,
                    long.pow(3).mean() / var**1.5,
                    grads[a, (a + 1) % 3].square().mean(),
                ]
            )
        )
    return torch.stack(rows)


def _paired_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|mean(a - b)| / standard error, over dim 0 (the samples)."""
    d = a - b
    return d.mean(0).abs() / (d.std(0) / math.sqrt(d.shape[0]))


def test_statistics_are_rotation_invariant_within_sampling_error():
    samples = torch.stack([simulate_turbulence(SMALL, seed=s)[-1] for s in range(12)])
    stats = torch.stack([_axis_statistics(u) for u in samples])  # (12, 3, 4)
    assert float(stats[:, :, 2].mean()) < -0.1  # turbulence: negative derivative skewness
    # the three axes agree within sampling error, statistic by statistic
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert float(_paired_t(stats[:, a], stats[:, b]).max()) < 4.5
    # S(u) and S(rotate(u, g)) have the same distribution (compared through their means)
    for g in (1, 7, 16, 22):
        rotated = torch.stack([_axis_statistics(rotate_velocity(u, g)) for u in samples])
        assert float(_paired_t(rotated.flatten(1), stats.flatten(1)).max()) < 4.5
    # the test has power: stretching component 0 by 25% is detected (12 samples of 16^3 resolve
    # about 20% in amplitude; the large scales, a few modes, fluctuate most)
    stretched = samples.clone()
    stretched[:, 0] *= 1.25
    s2 = torch.stack([_axis_statistics(u) for u in stretched])
    assert float(_paired_t(s2[:, 0], s2[:, 1]).max()) > 4.5


# ---------------------------------------------------------------------------------------------
# coarse-graining and the data set
# ---------------------------------------------------------------------------------------------


def test_downsample_is_a_box_average_and_commutes_with_rotations():
    u = torch.randn(2, 3, 8, 8, 8, dtype=F64)
    d = downsample(u, 4)
    assert d.shape == (2, 3, 2, 2, 2)
    torch.testing.assert_close(d[1, 2, 1, 0, 1], u[1, 2, 4:8, 0:4, 4:8].mean())
    torch.testing.assert_close(d.mean((-3, -2, -1)), u.mean((-3, -2, -1)))
    torch.testing.assert_close(downsample(u, 1), u, atol=0, rtol=0)
    for g in range(24):
        torch.testing.assert_close(
            downsample(rotate_velocity(u, g), 4), rotate_velocity(d, g), atol=1e-15, rtol=0
        )


def test_superresolution_data():
    cfg = TurbulenceConfig(
        size=8, viscosity=0.1, forcing_power=0.1, dt=0.05, spinup_steps=2, steps_per_frame=1,
        n_frames=5,
    )  # fmt: skip
    data = superresolution_data(cfg, n_trajectories=5, factor=4, seed=2)
    assert isinstance(data, SuperResolutionData) and data.factor == 4
    # 5 trajectories -> 3 / 1 / 1, 3 triples each
    for (x, y), count in zip((data.train, data.val, data.test), (9, 3, 3)):
        assert x.shape == (count, 9, 2, 2, 2) and y.shape == (count, 3, 8, 8, 8)
        assert x.dtype == y.dtype == torch.float32
        # the middle coarse frame is the box average of the target
        torch.testing.assert_close(x[:, 3:6], downsample(y, 4), atol=1e-6, rtol=1e-5)
        # frame t + 1 of one triple is frame t of the next (same trajectory)
        torch.testing.assert_close(x[0, 6:9], x[1, 3:6], atol=0, rtol=0)
    assert float(data.train[1].square().mean().sqrt()) == pytest.approx(1.0, rel=1e-5)
    # the sets share no frame (split by trajectory)
    ys = [d[1].flatten(1) for d in (data.train, data.val, data.test)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert float(torch.cdist(ys[i], ys[j]).amin()) > 1e-3
    # the samples are the simulated frames, divided by the scale
    trajectories = [simulate_turbulence(cfg, 2 + j).float() / data.scale for j in range(5)]
    found = sum(
        bool((data.test[1][0] - t[1]).abs().amax() < 1e-6) for t in trajectories
    )  # fmt: skip
    assert found == 1


def test_superresolution_data_fine_size_averages_the_simulation():
    cfg = TurbulenceConfig(
        size=8, viscosity=0.1, dt=0.05, spinup_steps=2, steps_per_frame=1, n_frames=3
    )
    data = superresolution_data(cfg, n_trajectories=3, factor=2, seed=0, fine_size=4)
    assert data.train[0].shape == (1, 9, 2, 2, 2) and data.train[1].shape == (1, 3, 4, 4, 4)
    fine = [downsample(simulate_turbulence(cfg, j), 2).float() / data.scale for j in range(3)]
    # every target is the box average (by config.size / fine_size) of a simulated middle frame
    for _, y in (data.train, data.val, data.test):
        assert any(bool((y[0] - f[1]).abs().amax() < 1e-6) for f in fine)
    with pytest.raises(ValueError, match="fine_size"):
        superresolution_data(cfg, 3, factor=1, fine_size=3)
    with pytest.raises(ValueError, match="factor"):
        superresolution_data(cfg, 3, factor=8, fine_size=4)


# ---------------------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"size": 15}, ValueError, "size"),
        ({"size": 4}, ValueError, "size"),
        ({"size": 16.0}, TypeError, "size"),
        ({"viscosity": 0.0}, ValueError, "viscosity"),
        ({"forcing_power": -1.0}, ValueError, "forcing_power"),
        ({"forcing_wavenumber": 0.5}, ValueError, "forcing_wavenumber"),
        ({"dt": "0.1"}, TypeError, "dt"),
        ({"steps_per_frame": 0}, ValueError, "steps_per_frame"),
        ({"n_frames": 0}, ValueError, "n_frames"),
        ({"dtype": torch.int64}, ValueError, "dtype"),
        ({"dtype": "float64"}, TypeError, "dtype"),
    ],
)
def test_config_errors(kwargs, error, name):
    with pytest.raises(error, match=name):
        TurbulenceConfig(**kwargs)


def test_argument_errors():
    u = torch.zeros(3, 8, 8, 8, dtype=F64)
    with pytest.raises(TypeError, match="config"):
        simulate_turbulence({"size": 8}, 0)
    with pytest.raises(TypeError, match="seed"):
        simulate_turbulence(SMALL, 1.0)
    with pytest.raises(ValueError, match="u"):
        divergence(torch.zeros(2, 8, 8, 8))
    with pytest.raises(ValueError, match="u"):
        energy_spectrum(torch.zeros(3, 8, 8, 4))
    with pytest.raises(TypeError, match="u"):
        divergence(torch.zeros(3, 8, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="factor"):
        downsample(u, 3)
    with pytest.raises(ValueError, match="g"):
        rotate_velocity(u, 24)
    with pytest.raises(TypeError, match="g"):
        rotate_velocity(u, 1.0)
    with pytest.raises(ValueError, match="u"):
        rotate_velocity(torch.zeros(4, 8, 8, 8), 0)
    with pytest.raises(ValueError, match="u0"):
        evolve_turbulence(torch.zeros(3, 7, 7, 7), SMALL)
    with pytest.raises(ValueError, match="viscosity"):
        flow_statistics(u, 0.0)
    cfg = TurbulenceConfig(size=8, spinup_steps=0, steps_per_frame=1, n_frames=3)
    with pytest.raises(ValueError, match="n_trajectories"):
        superresolution_data(cfg, 2)
    with pytest.raises(ValueError, match="factor"):
        superresolution_data(cfg, 3, factor=3)
    with pytest.raises(ValueError, match="split"):
        superresolution_data(cfg, 3, split=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="split"):
        superresolution_data(cfg, 3, split=(0.8, 0.2))
    with pytest.raises(ValueError, match="n_frames"):
        superresolution_data(TurbulenceConfig(size=8, n_frames=2), 3)

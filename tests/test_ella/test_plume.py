"""The smoke-plume simulator of ``ella.plume`` (paper 003's data), in float64: the rotation
conventions, the solver's pieces, its C4 equivariance to solver precision, and the data sets."""

from __future__ import annotations

import pytest
import torch

from ella.dynamics.plume import (
    E_UP,
    PlumeConfig,
    advect,
    divergence,
    next_frame_data,
    plume_dataset,
    project,
    random_plume,
    rotate_direction,
    rotate_fields,
    rotate_scalar,
    rotate_vector,
    simulate,
)

DTYPE = torch.float64
SMALL = PlumeConfig(size=12, n_plumes=2, n_frames=8)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gradient(phi: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient (u_0 along dim -2, u_1 along dim -1), periodic."""
    return torch.stack(
        [
            (phi.roll(-1, -2) - phi.roll(1, -2)) / 2,
            (phi.roll(-1, -1) - phi.roll(1, -1)) / 2,
        ],
        dim=-3,
    )


def test_vector_rotation_matches_rot90():
    """grad(R phi) = R_vec grad(phi): the component convention (u_0, u_1) -> (-u_1, u_0) is the
    one of torch.rot90's direction."""
    phi = torch.randn(2, 9, 9, generator=_gen(0), dtype=DTYPE)
    for k in (1, 2, 3):
        expected = rotate_vector(_gradient(phi), k)
        torch.testing.assert_close(_gradient(rotate_scalar(phi, k)), expected)
    u = torch.randn(2, 9, 9, generator=_gen(1), dtype=DTYPE)
    assert torch.equal(rotate_vector(u, 4), u)
    # a constant field rotates like a constant vector
    b = torch.tensor([0.3, -0.7], dtype=DTYPE)
    const = b[:, None, None].expand(2, 5, 5)
    torch.testing.assert_close(rotate_vector(const, 1)[:, 0, 0], rotate_direction(b, 1))
    torch.testing.assert_close(rotate_direction(torch.tensor(E_UP), 1), torch.tensor([0.0, -1.0]))


def test_projection_is_divergence_free_idempotent_and_kills_gradients():
    u = torch.randn(2, 2, 10, 10, generator=_gen(2), dtype=DTYPE)
    p = project(u)
    assert divergence(p).abs().max() < 1e-13
    torch.testing.assert_close(project(p), p, rtol=0, atol=1e-13)
    grad = _gradient(torch.randn(10, 10, generator=_gen(3), dtype=DTYPE))
    assert project(grad).abs().max() < 1e-13


def test_advection_by_whole_cells_is_a_roll():
    f = torch.randn(1, 2, 8, 8, generator=_gen(4), dtype=DTYPE)
    u = torch.zeros(1, 2, 8, 8, dtype=DTYPE)
    torch.testing.assert_close(advect(f, u, 0.7), f)
    u[:, 0] = 1.0
    u[:, 1] = -2.0
    torch.testing.assert_close(advect(f, u, 1.0), torch.roll(f, (1, -2), dims=(-2, -1)))


def test_simulating_a_rotated_state_is_rotating_the_simulation():
    state, source = random_plume(SMALL, _gen(5))
    b = 0.2 * torch.tensor(E_UP, dtype=DTYPE)
    seq = simulate(state, source, b, 8)
    assert seq.shape == (8, 3, 12, 12)
    assert seq[-1, 1:].abs().max() > 0.1  # the plume moves
    for k in (1, 2, 3):
        rotated = simulate(
            rotate_fields(state, k), rotate_scalar(source, k), rotate_direction(b, k), 8
        )
        err = (rotated - rotate_fields(seq, k)).abs().max().item()
        assert err < 1e-12, (k, err)


def test_datasets_symmetric_and_broken():
    sym = plume_dataset("symmetric", SMALL, seed=0)
    assert sym.shape == (8, 8, 3, 12, 12)
    for i in range(2):
        for k in (1, 2, 3):
            assert torch.equal(sym[4 * i + k], rotate_fields(sym[4 * i], k))
    # equal, to solver precision, to simulating the rotated plume with the rotated buoyancy
    state, source = random_plume(SMALL, _gen(0))
    b = SMALL.strength * torch.tensor(E_UP, dtype=DTYPE)
    direct = simulate(rotate_fields(state, 1), rotate_scalar(source, 1), rotate_direction(b, 1), 8)
    torch.testing.assert_close(direct, sym[1], rtol=0, atol=1e-12)
    broken = plume_dataset("broken", SMALL, seed=0)
    assert torch.equal(broken[0], sym[0])  # factor 1 in direction 0
    for k in (1, 2, 3):
        assert (rotate_fields(broken[k], -k) - broken[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="kind"):
        plume_dataset("other", SMALL, seed=0)


def test_next_frame_data_splits_time_steps():
    seqs = plume_dataset("symmetric", SMALL, seed=0)
    data = next_frame_data(seqs, seed=0)
    n_tr, n_va, n_te = (len(s[0]) for s in (data.train, data.val, data.test))
    assert (n_tr + n_va + n_te) == 8 * 7 and min(n_tr, n_va, n_te) > 0
    assert n_tr % 8 == 0 and n_te % 8 == 0
    s_rho, s_u = data.scale
    scale = torch.tensor([s_rho, s_u, s_u], dtype=DTYPE)[:, None, None]
    frames = (seqs / scale).float()
    # every test pair is (frame t, frame t + 1) of a sequence, at steps no training pair has
    steps = {}
    for name, (x, y) in (("train", data.train), ("test", data.test)):
        found = set()
        for xi, yi in zip(x, y):
            hits = [(s, t) for s in range(8) for t in range(7) if torch.equal(frames[s, t], xi)]
            assert hits and any(torch.equal(frames[s, t + 1], yi) for s, t in hits)
            found |= {t for _, t in hits}
        steps[name] = found
    assert not steps["train"] & steps["test"]
    assert data.train[0][:, 0].pow(2).mean().sqrt() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="sequences"):
        next_frame_data(seqs[:, :2])

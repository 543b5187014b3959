"""A 2-D smoke-plume simulator on a periodic grid, its C4 data sets and the next-frame task
(paper 003, "Smoke Plume"; the paper simulates with PhiFlow and states no equations: the physics
below is ours, with the paper's four buoyancy directions and its symmetric data set).

Fields
------
A state is a tensor of fields ``(..., 3, H, W)``: channel 0 the smoke density ``rho``, channels 1
and 2 the velocity ``u = (u_0, u_1)`` with ``u_0`` along the first spatial axis (rows, dim -2)
and ``u_1`` along the second (columns, dim -1), in cells per unit time.

Rotations
---------
``R`` is the quarter turn of the grid ``torch.rot90(x, 1, dims=(-2, -1))``. It moves the cell
at centred index coordinates ``(a, b)`` to ``(-b, a)``, i.e. it acts on positions by the matrix
``M = [[0, -1], [1, 0]]``. A scalar field rotates as ``rho'(p) = rho(M^-1 p)``, a vector field as
``u'(p) = M u(M^-1 p)``: the grid is rotated and the components map ``(u_0, u_1) -> (-u_1,
u_0)`` (:func:`rotate_vector`, :func:`rotate_fields`). The buoyancy direction, a constant vector,
rotates by ``M`` alone.

Physics
-------
Incompressible Euler with a buoyant, passively advected smoke density and an inflow source
``s(p)``::

    d rho / dt + (u . grad) rho = s                               (transport, inflow)
    d u / dt + (u . grad) u = -grad q + b rho                     (momentum, buoyancy)
    div u = 0                                                     (incompressibility)

with ``b`` the buoyancy vector (strength times direction). One time step of length ``dt`` splits
the operators (:func:`step`): semi-Lagrangian advection of ``rho`` and ``u`` by ``u``
(:func:`advect`: ``f'(p) = f(p - dt u(p))``, bilinear interpolation, periodic), then the inflow
``rho += dt s`` and the buoyancy ``u += dt b rho``, then the pressure projection (:func:`project`)
that removes the gradient part of ``u`` with an FFT Poisson solve, so that the central-difference
divergence of the result vanishes to rounding.

Every operation commutes with the quarter turn of the grid (bilinear interpolation and central
differences are symmetric under the square's rotations), so ``simulate(R state, R source, M b)
== R simulate(state, source, b)`` up to rounding (:mod:`tests.test_plume` checks 1e-12 in
float64).

Data sets (:func:`plume_dataset`)
---------------------------------
Each plume (a random inflow blob and a random smooth divergence-free initial velocity) is
simulated with buoyancy of strength ``b_k`` pointing along ``M^k e_up`` and its sequence is then
rotated by ``R^k``, for k = 0, 1, 2, 3 (``e_up = (-1, 0)``, towards row 0). By the equivariance
above this equals simulating the rotated plume with the rotated buoyancy. ``"symmetric"``: the
same strength in every direction, so the data set is closed under C4 (each plume with its 90,
180 and 270 degree rotations). ``"broken"``: strengths ``strength * factors[k]`` differ by
direction, which no C4-equivariant next-frame map can fit exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ella.summary import summary_repr
from symdisc.runtime import check_choice, check_float, check_instance, check_int

DatasetKind = Literal["symmetric", "broken"]
E_UP = (-1.0, 0.0)

__all__ = [
    "DatasetKind",
    "E_UP",
    "PlumeConfig",
    "rotate_scalar",
    "rotate_vector",
    "rotate_fields",
    "rotate_direction",
    "advect",
    "project",
    "divergence",
    "step",
    "simulate",
    "random_plume",
    "plume_dataset",
    "NextFrameData",
    "next_frame_data",
]


# --------------------------------------------------------------------------------------------
# rotations of fields
# --------------------------------------------------------------------------------------------


def _turns(k: object) -> int:
    """``k`` quarter turns as 0..3."""
    return check_int(k, "k") % 4


def rotate_scalar(x: Tensor, k: int = 1) -> Tensor:
    """Rotate scalar fields ``(..., H, W)`` by ``k`` quarter turns: ``x'(p) = x(M^-k p)``."""
    return torch.rot90(x, _turns(k), dims=(-2, -1))


def rotate_vector(u: Tensor, k: int = 1) -> Tensor:
    """Rotate vector fields ``(..., 2, H, W)`` by ``k`` quarter turns: ``u'(p) = M^k u(M^-k p)``.

    The grid is rotated by ``torch.rot90`` and the components by ``M``: ``(u_0, u_1) ->
    (-u_1, u_0)`` per quarter turn.

    Raises:
        ValueError: if dim -3 is not of size 2.
    """
    if u.dim() < 3 or u.shape[-3] != 2:
        raise ValueError(f"`u` must have shape (..., 2, H, W), got {tuple(u.shape)}")
    k = _turns(k)
    u = torch.rot90(u, k, dims=(-2, -1))
    for _ in range(k):
        u = torch.stack([-u[..., 1, :, :], u[..., 0, :, :]], dim=-3)
    return u


def rotate_direction(b: Sequence[float] | Tensor, k: int = 1) -> Tensor:
    """Rotate a constant vector ``(2,)`` by ``M^k``: ``(b_0, b_1) -> (-b_1, b_0)`` per turn."""
    b = torch.as_tensor(b)
    if b.shape != (2,):
        raise ValueError(f"`b` must have shape (2,), got {tuple(b.shape)}")
    for _ in range(_turns(k)):
        b = torch.stack([-b[1], b[0]])
    return b


def rotate_fields(x: Tensor, k: int = 1) -> Tensor:
    """Rotate states ``(..., 3, H, W)`` (density, u_0, u_1) by ``k`` quarter turns."""
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"`x` must have shape (..., 3, H, W), got {tuple(x.shape)}")
    return torch.cat([rotate_scalar(x[..., :1, :, :], k), rotate_vector(x[..., 1:, :, :], k)], -3)


# --------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------


def _check_floats(values: object, name: str, n: int) -> tuple[float, ...]:
    """``values`` as a tuple of ``n`` finite floats."""
    if not isinstance(values, (tuple, list)):
        raise TypeError(f"`{name}` must be a tuple of {n} floats, got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"`{name}` must be a tuple of {n} floats, got {len(values)}: {values}")
    return tuple(check_float(v, f"{name}[{i}]") for i, v in enumerate(values))


def _broadcasts_into(shape: torch.Size, target: torch.Size) -> bool:
    """Whether ``shape`` broadcasts to ``target`` without changing it."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _check_fields(x: object, channels: int, name: str) -> Tensor:
    x = check_instance(x, name, Tensor)
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(f"`{name}` must have shape (..., {channels}, H, W), got {tuple(x.shape)}")
    return x


def advect(f: Tensor, u: Tensor, dt: float) -> Tensor:
    """Semi-Lagrangian advection on the periodic grid: ``f'(p) = f(p - dt u(p))``.

    Each cell traces back along its velocity and reads ``f`` there by bilinear interpolation,
    positions taken modulo the grid.

    Args:
        f: fields ``(..., C, H, W)``.
        u: velocity ``(..., 2, H, W)`` with the same leading dims, in cells per unit time.
        dt: the time step.
    """
    f = _check_fields(f, f.shape[-3] if f.dim() >= 3 else -1, "f")
    u = _check_fields(u, 2, "u")
    h, w = f.shape[-2:]
    if u.shape[-2:] != (h, w) or u.shape[:-3] != f.shape[:-3]:
        raise ValueError(
            f"`u` must have shape {(*f.shape[:-3], 2, h, w)} to advect `f` of shape "
            f"{tuple(f.shape)}, got {tuple(u.shape)}"
        )
    rows = torch.arange(h, dtype=u.dtype, device=u.device)[:, None]
    cols = torch.arange(w, dtype=u.dtype, device=u.device)[None, :]
    pa = rows - dt * u[..., 0, :, :]  # (..., H, W)
    pb = cols - dt * u[..., 1, :, :]
    a0, b0 = torch.floor(pa), torch.floor(pb)
    fa, fb = (pa - a0)[..., None, :, :], (pb - b0)[..., None, :, :]
    a0, b0 = a0.long() % h, b0.long() % w
    a1, b1 = (a0 + 1) % h, (b0 + 1) % w
    flat = f.flatten(-2)  # (..., C, H*W)

    def at(a: Tensor, b: Tensor) -> Tensor:
        idx = (a * w + b).flatten(-2)[..., None, :].expand(*f.shape[:-2], h * w)
        return flat.gather(-1, idx).reshape(f.shape)

    return (
        (1 - fa) * (1 - fb) * at(a0, b0)
        + (1 - fa) * fb * at(a0, b1)
        + fa * (1 - fb) * at(a1, b0)
        + fa * fb * at(a1, b1)
    )


def _difference_symbols(h: int, w: int, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """Fourier symbols ``sin(2 pi k / n)`` of the central differences (times ``i``)."""
    sa = torch.sin(2 * math.pi * torch.fft.fftfreq(h, dtype=dtype, device=device))[:, None]
    sb = torch.sin(2 * math.pi * torch.fft.fftfreq(w, dtype=dtype, device=device))[None, :]
    return sa.expand(h, w), sb.expand(h, w)


def divergence(u: Tensor) -> Tensor:
    """Central-difference divergence ``(u_0[i+1] - u_0[i-1] + u_1[j+1] - u_1[j-1]) / 2``,
    periodic: ``(..., 2, H, W) -> (..., H, W)``."""
    u = _check_fields(u, 2, "u")
    d0 = (torch.roll(u[..., 0, :, :], -1, -2) - torch.roll(u[..., 0, :, :], 1, -2)) / 2
    d1 = (torch.roll(u[..., 1, :, :], -1, -1) - torch.roll(u[..., 1, :, :], 1, -1)) / 2
    return d0 + d1


def project(u: Tensor) -> Tensor:
    """Pressure projection onto (discretely) divergence-free fields, by FFT.

    With ``D`` the central difference (Fourier symbol ``i s``, ``s_n(k) = sin(2 pi k / n)``), the
    pressure solves ``D . D q = D . u`` and ``u' = u - D q``; per Fourier mode
    ``u'^ = u^ - s (s . u^) / |s|^2`` (modes with ``s = 0`` are left as they are). Then
    ``divergence(u') = 0`` to rounding. The projection commutes with grid rotations.
    """
    u = _check_fields(u, 2, "u")
    h, w = u.shape[-2:]
    sa, sb = _difference_symbols(h, w, u.dtype, u.device)
    norm = sa**2 + sb**2
    inv = torch.where(norm > 1e-12, 1.0 / torch.where(norm > 1e-12, norm, 1.0), 0.0)
    uh = torch.fft.fft2(u)
    dot = (sa * uh[..., 0, :, :] + sb * uh[..., 1, :, :]) * inv
    out = torch.stack([uh[..., 0, :, :] - sa * dot, uh[..., 1, :, :] - sb * dot], dim=-3)
    return torch.fft.ifft2(out).real


def step(state: Tensor, source: Tensor, buoyancy: Tensor, dt: float) -> Tensor:
    """One operator-split time step of the plume equations (see the module docstring).

    ``rho, u <- advect((rho, u), u, dt)``; ``rho <- rho + dt s``; ``u <- u + dt b rho``;
    ``u <- project(u)``.

    Args:
        state: ``(..., 3, H, W)`` density and velocity.
        source: inflow rate ``(..., H, W)`` (broadcast against the state).
        buoyancy: ``(..., 2)`` buoyancy vector b (strength times direction).
        dt: time step.
    """
    state = _check_fields(state, 3, "state")
    moved = advect(state, state[..., 1:, :, :], dt)
    rho = moved[..., 0, :, :] + dt * source
    u = moved[..., 1:, :, :] + dt * buoyancy[..., :, None, None] * rho[..., None, :, :]
    return torch.cat([rho[..., None, :, :], project(u)], dim=-3)


def simulate(
    state: Tensor,
    source: Tensor,
    buoyancy: Sequence[float] | Tensor,
    n_frames: int,
    *,
    dt: float = 0.5,
    substeps: int = 2,
) -> Tensor:
    """Simulate a plume and return its frames.

    Args:
        state: initial ``(..., 3, H, W)``.
        source: inflow ``(..., H, W)``.
        buoyancy: ``(2,)`` or ``(..., 2)`` buoyancy vector.
        n_frames: frames returned, the initial state first.
        dt: solver time step.
        substeps: solver steps between frames.

    Returns:
        ``(..., n_frames, 3, H, W)``.

    Raises:
        TypeError: for a non-int ``n_frames`` or ``substeps``, a non-tensor ``state`` or
            ``source``, or a ``buoyancy`` that is not a sequence or tensor.
        ValueError: for ``n_frames < 1`` or ``substeps < 1``, a non-positive ``dt``, a
            ``source`` off the state's grid, a ``buoyancy`` whose last dimension is not 2 (one
            value per velocity component; a single value is not broadcast), and non-finite
            values.
    """
    state = _check_fields(state, 3, "state")
    if not state.is_floating_point():
        raise TypeError(f"`state` must be a floating tensor, got dtype {state.dtype}")
    source = check_instance(source, "source", Tensor)
    batch, grid = state.shape[:-3], state.shape[-2:]
    if source.dim() < 2 or source.shape[-2:] != grid:
        raise ValueError(
            f"`source` must have shape (..., {grid[0]}, {grid[1]}) like the state's grid, got "
            f"{tuple(source.shape)}"
        )
    check_int(n_frames, "n_frames", minimum=1)
    check_int(substeps, "substeps", minimum=1)
    check_float(dt, "dt", positive=True)
    if not isinstance(buoyancy, (Tensor, tuple, list)):
        raise TypeError(
            f"`buoyancy` must be a (2,) or (..., 2) vector, got {type(buoyancy).__name__}"
        )
    b = torch.as_tensor(buoyancy, dtype=state.dtype, device=state.device)
    if b.dim() == 0 or b.shape[-1] != 2:
        raise ValueError(
            f"`buoyancy` must be a (2,) or (..., 2) vector (one value per velocity component), "
            f"got shape {tuple(b.shape)}"
        )
    for name, shape in (("buoyancy", b.shape[:-1]), ("source", source.shape[:-2])):
        if not _broadcasts_into(shape, batch):
            raise ValueError(
                f"`{name}`'s batch shape {tuple(shape)} must broadcast to the state's batch shape "
                f"{tuple(batch)}"
            )
    if not (torch.isfinite(b).all() and torch.isfinite(state).all()):
        raise ValueError("`state` and `buoyancy` must be finite (no NaN or infinite values)")
    frames = [state]
    for _ in range(n_frames - 1):
        for _ in range(substeps):
            state = step(state, source, b, dt)
        frames.append(state)
    return torch.stack(frames, dim=-4)


# --------------------------------------------------------------------------------------------
# random plumes and data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlumeConfig:
    """The data of the next-frame task.

    Attributes:
        size: grid ``size x size``.
        n_plumes: random plumes; the data set has ``4 * n_plumes`` sequences (the C4 orbit).
        n_frames: frames per sequence.
        strength: buoyancy strength.
        factors: buoyancy strength factor per direction k (``"broken"`` only).
        dt, substeps: solver step and steps per frame.
        source_rate: peak inflow rate of the Gaussian source blob.
        source_radius: (min, max) of the blob's standard deviation, in cells.
        velocity_scale: rms of the random initial velocity.
    """

    size: int = 16
    n_plumes: int = 12
    n_frames: int = 20
    strength: float = 0.2
    factors: tuple[float, float, float, float] = (1.0, 0.5, 1.5, 0.75)
    dt: float = 0.5
    substeps: int = 2
    source_rate: float = 0.5
    source_radius: tuple[float, float] = (1.0, 2.0)
    velocity_scale: float = 0.3
    dtype: torch.dtype = field(default=torch.float64)

    def __post_init__(self) -> None:
        check_int(self.size, "size", minimum=1)
        check_int(self.n_plumes, "n_plumes", minimum=1)
        check_int(self.n_frames, "n_frames", minimum=1)
        check_float(self.strength, "strength")
        _check_floats(self.factors, "factors", 4)
        check_float(self.dt, "dt", positive=True)
        check_int(self.substeps, "substeps", minimum=1)
        check_float(self.source_rate, "source_rate")
        lo, hi = _check_floats(self.source_radius, "source_radius", 2)
        if not 0 < lo <= hi:
            raise ValueError(
                f"`source_radius` must be (min, max) with 0 < min <= max, got {self.source_radius}"
            )
        check_float(self.velocity_scale, "velocity_scale", nonnegative=True)
        check_instance(self.dtype, "dtype", torch.dtype)
        if not self.dtype.is_floating_point:
            raise ValueError(f"`dtype` must be a floating dtype, got {self.dtype}")


def random_plume(config: PlumeConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random initial state ``(3, n, n)`` and inflow ``(n, n)``.

    The inflow is a periodic Gaussian blob ``rate * exp(-|p - c|^2 / (2 r^2))`` at a uniform
    random centre c with radius r uniform in ``source_radius``; the initial density is the blob
    itself; the initial velocity is smooth random noise (Fourier modes with ``|k| <= 2``),
    projected to be divergence-free and scaled to rms ``velocity_scale``.
    """
    n, dt = config.size, config.dtype
    c = torch.rand(2, generator=generator, dtype=dt) * n
    lo, hi = config.source_radius
    r = lo + (hi - lo) * torch.rand((), generator=generator, dtype=dt)
    idx = torch.arange(n, dtype=dt)
    da = torch.remainder(idx[:, None] - c[0] + n / 2, n) - n / 2
    db = torch.remainder(idx[None, :] - c[1] + n / 2, n) - n / 2
    blob = torch.exp(-(da**2 + db**2) / (2 * r**2))
    noise = torch.randn(2, n, n, generator=generator, dtype=dt)
    freq = torch.fft.fftfreq(n, d=1.0 / n, dtype=dt)
    low = ((freq[:, None] ** 2 + freq[None, :] ** 2) <= 4).to(dt)
    u = project(torch.fft.ifft2(torch.fft.fft2(noise) * low).real)
    u = u * config.velocity_scale / u.pow(2).sum(0).mean().sqrt().clamp_min(1e-12)
    state = torch.cat([blob[None], u])
    return state, config.source_rate * blob


def plume_dataset(kind: DatasetKind, config: PlumeConfig, seed: int) -> Tensor:
    """Sequences ``(4 * n_plumes, n_frames, 3, n, n)``: every plume in the four directions.

    Sequence ``4 i + k`` is plume i simulated with buoyancy ``b_k e_up`` and rotated by ``R^k``
    (equal, by equivariance, to simulating ``R^k`` of the plume with buoyancy ``b_k M^k e_up``).
    ``b_k = strength`` for ``"symmetric"``, ``strength * factors[k]`` for ``"broken"``.

    Raises:
        TypeError: for a ``config`` that is not a :class:`PlumeConfig` or a non-int ``seed``.
        ValueError: for an unknown ``kind`` or a negative ``seed``.
    """
    check_choice(kind, "kind", DatasetKind)
    check_instance(config, "config", PlumeConfig)
    check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    plumes = [random_plume(config, gen) for _ in range(config.n_plumes)]
    states = torch.stack([p[0] for p in plumes])
    sources = torch.stack([p[1] for p in plumes])
    e_up = torch.tensor(E_UP, dtype=config.dtype)
    factors = (1.0,) * 4 if kind == "symmetric" else tuple(config.factors)
    out = []
    cache: dict[float, Tensor] = {}
    for k in range(4):
        f = float(factors[k])
        if f not in cache:  # the symmetric set simulates each plume once
            cache[f] = simulate(
                states,
                sources,
                config.strength * f * e_up,
                config.n_frames,
                dt=config.dt,
                substeps=config.substeps,
            )
        out.append(rotate_fields(cache[f], k))
    return torch.stack(out, dim=1).flatten(0, 1)


@dataclass(frozen=True, repr=False)
class NextFrameData:
    """Pairs (frame t, frame t+1), split by time step, normalised.

    ``train``, ``val``, ``test`` are ``(inputs, targets)`` of shape ``(N, 3, n, n)``.
    ``scale`` is ``(density scale, velocity scale)``: the fields were divided by them (one
    number for the density and one for both velocity components, so C4 acts the same way).
    """

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    scale: tuple[float, float]

    def __repr__(self) -> str:
        return summary_repr(self)


def next_frame_data(
    sequences: Tensor,
    fractions: tuple[float, float] = (0.6, 0.2),
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> NextFrameData:
    """The next-frame task on held-out time steps.

    The transitions ``t -> t+1`` (t = 0 .. T-2) are split by time step, the same steps for every
    sequence: a seeded permutation of the steps gives ``fractions[0]`` of them to training,
    ``fractions[1]`` to validation (the best epoch) and the rest to the test set, so that no
    test frame pair is seen in training, in any sequence or rotation. Density and velocity are
    divided by their rms over the training inputs (one scalar each, which commutes with the
    rotations).

    Raises:
        ValueError: if ``sequences`` is not ``(S, T >= 4, 3, H, W)``, or the fractions leave a
            split empty.
    """
    sequences = check_instance(sequences, "sequences", Tensor)
    fractions = _check_floats(fractions, "fractions", 2)
    check_int(seed, "seed", minimum=0)
    if sequences.dim() != 5 or sequences.shape[2] != 3 or sequences.shape[1] < 4:
        raise ValueError(
            f"`sequences` must have shape (S, T >= 4, 3, H, W), got {tuple(sequences.shape)}"
        )
    n_steps = sequences.shape[1] - 1
    t1 = int(round(fractions[0] * n_steps))
    t2 = int(round((fractions[0] + fractions[1]) * n_steps))
    if not 0 < t1 < t2 < n_steps:
        raise ValueError(f"`fractions` {fractions} leave an empty split of {n_steps} steps")
    order = torch.randperm(n_steps, generator=torch.Generator().manual_seed(seed))
    steps = {"train": order[:t1].sort().values, "val": order[t1:t2].sort().values}
    steps["test"] = order[t2:].sort().values
    x_all, y_all = sequences[:, :-1], sequences[:, 1:]
    x_tr = x_all[:, steps["train"]].flatten(0, 1)
    s_rho = float(x_tr[:, 0].pow(2).mean().sqrt())
    s_u = float(x_tr[:, 1:].pow(2).sum(1).mean().sqrt())
    scale = torch.tensor([s_rho, s_u, s_u], dtype=sequences.dtype)[:, None, None]

    def split(name: str) -> tuple[Tensor, Tensor]:
        x = (x_all[:, steps[name]].flatten(0, 1) / scale).to(dtype).contiguous()
        y = (y_all[:, steps[name]].flatten(0, 1) / scale).to(dtype).contiguous()
        return x, y

    return NextFrameData(split("train"), split("val"), split("test"), (s_rho, s_u))

"""Isotropic 3-D turbulence generated here and the super-resolution task built from it (paper 003,
"Super-Resolution": three consecutive coarse frames of isotropic turbulence in, the middle frame
at ``factor`` times the resolution out). The paper takes its flow from the Johns Hopkins
turbulence database (1024^3, downsampled to 64^3 fine and 16^3 coarse); that database cannot be
downloaded here, so the flow is simulated, on a 32^3 fine and 8^3 coarse grid by default (the
CPU budget).

Fields
------
A velocity field is ``(..., 3, n, n, n)`` on the periodic box ``[0, 2 pi)^3`` with grid points
``x_j = 2 pi j / n``; component ``i`` points along spatial dim ``i`` of ``(D, H, W)`` (dims -3,
-2, -1). A stack of ``F`` fields is ``(..., 3F, n, n, n)``, channel ``3f + i``.

Equations and solver (:func:`simulate_turbulence`)
--------------------------------------------------
Incompressible Navier-Stokes with unit density, in rotational form::

    du/dt = u x omega - grad(p + |u|^2 / 2) + nu lap u + f,   div u = 0,   omega = curl u.

Pseudo-spectral (Fourier-Galerkin) discretisation, ``u(x) = sum_k u_k exp(i k.x)`` over the
integer wave vectors: the Lamb vector ``u x omega`` is formed on the grid and transformed back
(``torch.fft.rfftn``, ``norm="forward"``), truncated by the 2/3 rule (every mode with some
``|k_i| >= n/3`` is zeroed, which removes the quadratic aliasing) and projected onto
divergence-free fields, ``P(k) = I - k k^T / |k|^2``, which removes the pressure. Viscosity is
integrated exactly by the integrating factor ``exp(-nu |k|^2 t)``; the rest by the classical
fourth-order Runge-Kutta scheme on the integrating-factor variable (IF-RK4, fixed ``dt`` so that
frames are equally spaced in time; the Courant number ``max(|u_0| + |u_1| + |u_2|) dt / dx`` is
checked at every frame and a warning is logged above 1). Because the truncated Lamb vector is
tested against fields in the same truncated space, the discrete nonlinear term conserves energy
exactly (``sum_x u . (u x omega) = 0`` on the grid, Parseval), so the energy budget is
``dE/dt = -2 nu sum_k |k|^2 E_k + P`` with ``P`` the forcing input (tested).

Forcing (why this one)
----------------------
Band-limited linear forcing at constant power: ``f_k = A(t) u_k`` for ``0 < |k| <= k_f``
(``forcing_wavenumber``, shells 1 and 2 by default), with ``A(t) = P / (2 E_f(t))`` and ``E_f``
the energy in the forced band, so the injection rate ``sum_k Re(f_k . conj(u_k)) = P`` is the
same at every instant. Compared with Lundgren's (2003) linear forcing at all scales, ``f = A u``,
it keeps the energy-containing scales at the box scale instead of about 0.19 of it, which leaves
the few shells of a 32^3 grid to the cascade; compared with stochastic forcing it needs no
random numbers after the initial condition. A constant power fixes the mean dissipation at
``epsilon = P`` in the stationary state, hence the Kolmogorov scale ``eta = (nu^3 / P)^(1/4)``
a priori, so ``nu`` and ``P`` can be chosen for a resolved flow (``k_max eta >= 1``,
``k_max = n / 3``). Both ``f_k`` and ``A`` depend on ``|k|`` and rotation-invariant energies only.

Isotropy (why the statistics are rotation invariant)
----------------------------------------------------
The initial field is Gaussian noise (its law is invariant under every rotation and reflection),
projected onto divergence-free fields and shaped by a spectrum that depends on ``|k|`` only,
``E(k) ~ k^4 exp(-2 (k / k_0)^2)``, then normalised to ``initial_energy``; the forcing depends
on ``|k|`` and on the band energy only; and the Navier-Stokes equations are rotation invariant.
Hence the law of the flow at any time is invariant under every symmetry of the discrete
problem. The cubic periodic box (and its 2/3 truncation) leaves exactly the 48 signed
permutations of the axes, among them the 24 rotations of the octahedral group O that the models
use (:func:`rotate_velocity`); full rotation invariance only holds at scales well below the box.

Data (:func:`superresolution_data`)
-----------------------------------
Independent trajectories (seeds ``seed, seed + 1, ...``), each spun up to a statistically
stationary state and sampled every ``steps_per_frame`` steps; every triple of consecutive frames
``(t - 1, t, t + 1)`` is one sample, the three box-averaged coarse frames in, the fine middle
frame out. The split is by trajectory (never by frame), so no frame of a validation or test
sample is seen in training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ella.layers.octahedral import OCTAHEDRAL_ORDER, OCTAHEDRAL_ROTATIONS, rotate_volume
from ella.summary import summary_repr
from symdisc.runtime import check_float, check_instance, check_int

__all__ = [
    "TurbulenceConfig",
    "simulate_turbulence",
    "initial_field",
    "evolve_turbulence",
    "divergence",
    "energy_spectrum",
    "flow_statistics",
    "downsample",
    "rotate_velocity",
    "SuperResolutionData",
    "superresolution_data",
]

_log = logging.getLogger(__name__)
_DIMS = (-3, -2, -1)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurbulenceConfig:
    """The simulation of one trajectory of forced isotropic turbulence.

    Attributes:
        size: grid points per side ``n`` (even, >= 8); the box is ``[0, 2 pi)^3``.
        viscosity: kinematic viscosity ``nu`` (> 0).
        forcing_power: energy injection rate ``P`` (>= 0; 0 gives decaying turbulence), equal to
            the mean dissipation in the stationary state.
        forcing_wavenumber: modes with ``0 < |k| <= k_f`` are forced (>= 1).
        initial_energy: ``E = <|u|^2> / 2`` of the initial field (> 0).
        peak_wavenumber: ``k_0`` of the initial spectrum ``k^4 exp(-2 (k / k_0)^2)`` (> 0).
        dt: the fixed time step (> 0).
        spinup_steps: steps before the first frame (>= 0).
        steps_per_frame: steps between frames (>= 1).
        n_frames: frames returned (>= 1).
        dtype: ``torch.float64`` (default) or ``torch.float32``.

    The defaults give a resolved flow at 32^3 (``k_max eta`` about 1.0, Taylor Reynolds number
    about 25-30, large-eddy turnover time ``L / u'`` about 3) spun up over 10 time units (about
    3 turnover times), with frames 0.32 time units apart (frame-to-frame correlation about
    0.98); Courant number about 0.7.

    Raises:
        TypeError / ValueError: for a field of the wrong type or out of range (the message names
            the field).
    """

    size: int = 32
    viscosity: float = 0.02
    forcing_power: float = 0.1
    forcing_wavenumber: float = 2.5
    initial_energy: float = 0.5
    peak_wavenumber: float = 2.0
    dt: float = 0.04
    spinup_steps: int = 250
    steps_per_frame: int = 8
    n_frames: int = 16
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        size = check_int(self.size, "size", minimum=8)
        if size % 2:
            raise ValueError(f"`size` must be an even int >= 8, got {size}")
        check_float(self.viscosity, "viscosity", positive=True)
        check_float(self.forcing_power, "forcing_power", nonnegative=True)
        if check_float(self.forcing_wavenumber, "forcing_wavenumber") < 1:
            raise ValueError(f"`forcing_wavenumber` must be >= 1, got {self.forcing_wavenumber}")
        check_float(self.initial_energy, "initial_energy", positive=True)
        check_float(self.peak_wavenumber, "peak_wavenumber", positive=True)
        check_float(self.dt, "dt", positive=True)
        check_int(self.spinup_steps, "spinup_steps", minimum=0)
        check_int(self.steps_per_frame, "steps_per_frame", minimum=1)
        check_int(self.n_frames, "n_frames", minimum=1)
        check_instance(self.dtype, "dtype", torch.dtype)
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"`dtype` must be torch.float32 or torch.float64, got {self.dtype}")


# --------------------------------------------------------------------------------------------
# spectral operators
# --------------------------------------------------------------------------------------------


class _Spectral:
    """Wave vectors and masks of the ``n^3`` grid for ``rfftn`` over the last three dims."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device | str | None) -> None:
        full = torch.fft.fftfreq(n, 1.0 / n, dtype=dtype, device=device)
        half = torch.fft.rfftfreq(n, 1.0 / n, dtype=dtype, device=device)
        self.n = n
        # derivative symbols: the Nyquist wavenumber has no sign, its derivative is set to 0
        nyq = full.abs() == n // 2
        kd = torch.where(nyq, torch.zeros_like(full), full)
        kw = torch.where(half == n // 2, torch.zeros_like(half), half)
        self.k = (kd[:, None, None], kd[None, :, None], kw[None, None, :])
        self.k2 = self.k[0] ** 2 + self.k[1] ** 2 + self.k[2] ** 2  # (n, n, n//2+1)
        self.kmag = torch.sqrt(full[:, None, None] ** 2 + full[None, :, None] ** 2 + half**2)
        cut = n / 3.0
        self.dealias = (
            (full.abs()[:, None, None] < cut) & (full.abs()[None, :, None] < cut) & (half < cut)
        ).to(dtype)
        # rfft half spectrum: the modes 0 < k_w < n/2 stand for themselves and their conjugates
        weight = torch.full((n // 2 + 1,), 2.0, dtype=dtype, device=device)
        weight[0] = 1.0
        weight[-1] = 1.0
        self.weight = weight.expand(n, n, n // 2 + 1)
        self.inv_k2 = torch.where(
            self.k2 > 0, 1.0 / self.k2.clamp_min(1.0), torch.zeros_like(self.k2)
        )

    def forward(self, u: Tensor) -> Tensor:
        return torch.fft.rfftn(u, dim=_DIMS, norm="forward")

    def inverse(self, uh: Tensor) -> Tensor:
        return torch.fft.irfftn(uh, s=(self.n,) * 3, dim=_DIMS, norm="forward")

    def project(self, uh: Tensor) -> Tensor:
        """Leray projection ``(I - k k^T / |k|^2) u_k`` of ``(..., 3, n, n, n//2+1)``."""
        kd, kh, kw = self.k
        dot = (kd * uh[..., 0, :, :, :] + kh * uh[..., 1, :, :, :] + kw * uh[..., 2, :, :, :]) * (
            self.inv_k2
        )
        return torch.stack(
            [
                uh[..., 0, :, :, :] - kd * dot,
                uh[..., 1, :, :, :] - kh * dot,
                uh[..., 2, :, :, :] - kw * dot,
            ],
            dim=-4,
        )

    def curl(self, uh: Tensor) -> Tensor:
        kd, kh, kw = self.k
        u0, u1, u2 = uh[..., 0, :, :, :], uh[..., 1, :, :, :], uh[..., 2, :, :, :]
        return 1j * torch.stack([kh * u2 - kw * u1, kw * u0 - kd * u2, kd * u1 - kh * u0], dim=-4)

    def energy(self, uh: Tensor, mask: Tensor | None = None) -> Tensor:
        """``<|u|^2> / 2`` (restricted to ``mask``): ``(..., 3, n, n, n//2+1) -> (...)``."""
        w = self.weight if mask is None else self.weight * mask
        return 0.5 * (w * (uh.real**2 + uh.imag**2).sum(-4)).sum(_DIMS)


def _check_velocity(u: object, name: str = "u", fields: bool = False) -> Tensor:
    u = check_instance(u, name, Tensor)
    if u.dim() < 4 or (u.shape[-4] % 3 if fields else u.shape[-4] != 3):
        want = "3F" if fields else "3"
        raise ValueError(f"`{name}` must have shape (..., {want}, n, n, n), got {tuple(u.shape)}")
    d, h, w = u.shape[-3:]
    if not d == h == w:
        raise ValueError(f"`{name}` must be a cubic grid (n, n, n), got {(d, h, w)}")
    if not u.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got {u.dtype}")
    return u


def divergence(u: Tensor) -> Tensor:
    """Spectral divergence ``sum_i d u_i / d x_i`` on the periodic box ``[0, 2 pi)^3``.

    Args:
        u: ``(..., 3, n, n, n)``.

    Returns:
        ``(..., n, n, n)`` (the Nyquist wavenumber differentiates to 0).
    """
    u = _check_velocity(u)
    ops = _Spectral(u.shape[-1], u.dtype, u.device)
    uh = ops.forward(u)
    kd, kh, kw = ops.k
    div = 1j * (kd * uh[..., 0, :, :, :] + kh * uh[..., 1, :, :, :] + kw * uh[..., 2, :, :, :])
    return ops.inverse(div)


def energy_spectrum(u: Tensor) -> tuple[Tensor, Tensor]:
    """Shell-summed energy spectrum ``E(k) = sum_{k - 1/2 <= |k'| < k + 1/2} |u_k'|^2 / 2``.

    Args:
        u: ``(..., 3, n, n, n)``.

    Returns:
        ``(k, E)``: ``k = 0, 1, ..., n/2`` ``(n/2 + 1,)`` and ``E`` ``(..., n/2 + 1)``, so that
        ``E.sum(-1)`` is the energy ``<|u|^2> / 2`` up to the corner modes ``|k| >= n/2 + 1/2``
        (the order is the plotting order: ``plt.loglog(*energy_spectrum(u))`` for one field).
    """
    u = _check_velocity(u)
    n = u.shape[-1]
    ops = _Spectral(n, u.dtype, u.device)
    uh = ops.forward(u)
    density = 0.5 * ops.weight * (uh.real**2 + uh.imag**2).sum(-4)  # (..., n, n, n//2+1)
    shell = torch.round(ops.kmag).long().flatten()
    keep = shell <= n // 2
    flat = density.flatten(-3)[..., keep]
    spectrum = torch.zeros(*density.shape[:-3], n // 2 + 1, dtype=u.dtype, device=u.device)
    spectrum = spectrum.index_add(-1, shell[keep], flat)
    k = torch.arange(n // 2 + 1, dtype=u.dtype, device=u.device)
    return k, spectrum


def flow_statistics(u: Tensor, viscosity: float) -> dict[str, float]:
    """Standard single-point statistics of isotropic turbulence, averaged over the leading dims.

    Args:
        u: ``(..., 3, n, n, n)`` on ``[0, 2 pi)^3``.
        viscosity: ``nu``.

    Returns:
        ``energy`` ``E = <|u|^2>/2``, ``u_rms`` ``u' = sqrt(2 E / 3)``, ``dissipation``
        ``epsilon = 2 nu sum_k |k|^2 E_k``, ``taylor_microscale`` ``lambda = sqrt(15 nu u'^2 /
        epsilon)``, ``re_lambda`` ``u' lambda / nu``, ``kolmogorov_scale`` ``eta = (nu^3 /
        epsilon)^(1/4)``, ``kmax_eta`` ``(n / 3) eta`` (resolved when >= 1),
        ``integral_scale`` ``L = pi / (2 u'^2) sum_k E(k) / k`` and ``eddy_turnover`` ``L / u'``
        (Pope 2000, ch. 6).
    """
    u = _check_velocity(u)
    nu = check_float(viscosity, "viscosity", positive=True)
    n = u.shape[-1]
    ops = _Spectral(n, u.dtype, u.device)
    uh = ops.forward(u)
    density = 0.5 * ops.weight * (uh.real**2 + uh.imag**2).sum(-4)
    energy = float(density.sum(_DIMS).mean())
    eps = float(2 * nu * (ops.k2 * density).sum(_DIMS).mean())
    k, spec = energy_spectrum(u)
    urms2 = 2 * energy / 3
    integral = float(math.pi / (2 * urms2) * (spec[..., 1:] / k[1:]).sum(-1).mean())
    lam = math.sqrt(15 * nu * urms2 / eps)
    eta = (nu**3 / eps) ** 0.25
    return {
        "energy": energy,
        "u_rms": math.sqrt(urms2),
        "dissipation": eps,
        "taylor_microscale": lam,
        "re_lambda": math.sqrt(urms2) * lam / nu,
        "kolmogorov_scale": eta,
        "kmax_eta": n / 3 * eta,
        "integral_scale": integral,
        "eddy_turnover": integral / math.sqrt(urms2),
    }


# --------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def initial_field(
    config: TurbulenceConfig, seed: int, *, device: torch.device | str | None = None
) -> Tensor:
    """The random initial velocity ``(3, n, n, n)``: Gaussian white noise (drawn on the CPU from
    ``seed``, so every device gets the same field), projected onto divergence-free fields,
    truncated by the 2/3 rule and shaped to ``E(k) ~ k^4 exp(-2 (k / k_0)^2)`` (each mode
    scaled by ``sqrt(E(|k|) / (4 pi |k|^2))``; random phases), normalised to
    ``config.initial_energy``."""
    config = check_instance(config, "config", TurbulenceConfig)
    seed = check_int(seed, "seed")
    n, dtype = config.size, config.dtype
    ops = _Spectral(n, dtype, device)
    noise = torch.randn(3, n, n, n, generator=_generator(seed), dtype=torch.float64)
    uh = ops.forward(noise.to(dtype=dtype, device=device))
    k = ops.kmag
    shape = k**4 * torch.exp(-2 * (k / config.peak_wavenumber) ** 2)
    amplitude = torch.sqrt(shape / (4 * math.pi * k.clamp_min(1.0) ** 2)) * (k > 0)
    uh = ops.project(uh * amplitude * ops.dealias)
    uh = uh * math.sqrt(config.initial_energy / float(ops.energy(uh)))
    return ops.inverse(uh)


def _rhs(uh: Tensor, ops: _Spectral, power: float, band: Tensor) -> Tensor:
    """The projected, dealiased Lamb vector ``P T(u x omega)`` plus the forcing ``A u_k`` on the
    band: ``(..., 3, n, n, n//2+1)``."""
    fields = ops.inverse(torch.cat([uh, ops.curl(uh)], dim=-4))
    lamb = torch.linalg.cross(fields[..., :3, :, :, :], fields[..., 3:, :, :, :], dim=-4)
    out = ops.project(ops.forward(lamb) * ops.dealias)
    if power > 0:
        e_band = ops.energy(uh, band)[..., None, None, None, None]
        out = out + (power / (2 * e_band)) * band * uh
    return out


def _step(
    uh: Tensor, ops: _Spectral, dt: float, decay: tuple[Tensor, Tensor], power: float, band: Tensor
) -> Tensor:
    """One IF-RK4 step: the classical Runge-Kutta scheme on ``v = exp(nu |k|^2 t) u_k``, written
    with the factors ``exp(-nu |k|^2 dt / 2)`` and ``exp(-nu |k|^2 dt)`` (viscosity exact)."""
    half, full = decay
    k1 = _rhs(uh, ops, power, band)
    k2 = _rhs(half * (uh + 0.5 * dt * k1), ops, power, band)
    k3 = _rhs(half * uh + 0.5 * dt * k2, ops, power, band)
    k4 = _rhs(full * uh + dt * half * k3, ops, power, band)
    return full * uh + dt / 6 * (full * k1 + 2 * half * (k2 + k3) + k4)


def evolve_turbulence(u0: Tensor, config: TurbulenceConfig) -> Tensor:
    """Integrate the forced Navier-Stokes equations of the module docstring from ``u0``.

    ``u0`` is first truncated by the 2/3 rule and projected onto divergence-free fields. Then
    ``config.spinup_steps`` steps, then one frame every ``config.steps_per_frame`` steps
    (``config.size``, ``dtype`` and the seed are not used: the grid and dtype are ``u0``'s).

    Args:
        u0: ``(..., 3, n, n, n)`` on ``[0, 2 pi)^3``, float32 or float64, on any device; the
            leading dims are independent flows.
        config: the :class:`TurbulenceConfig`.

    Returns:
        ``(..., n_frames, 3, n, n, n)``.

    Raises:
        TypeError / ValueError: for a wrong ``u0`` or ``config``.
        RuntimeError: if the simulation blows up (``dt`` too large).
    """
    u0 = _check_velocity(u0, "u0")
    config = check_instance(config, "config", TurbulenceConfig)
    n, dt = u0.shape[-1], config.dt
    if n % 2 or n < 4:
        raise ValueError(f"`u0` must be on an even grid n >= 4, got n = {n}")
    ops = _Spectral(n, u0.dtype, u0.device)
    decay = (
        torch.exp(-config.viscosity * ops.k2 * dt / 2),
        torch.exp(-config.viscosity * ops.k2 * dt),
    )
    band = ((ops.kmag > 0) & (ops.kmag <= config.forcing_wavenumber)).to(u0.dtype)
    uh = ops.project(ops.forward(u0) * ops.dealias)
    frames = []
    dx = 2 * math.pi / n
    for step in range(config.spinup_steps + (config.n_frames - 1) * config.steps_per_frame + 1):
        record = step >= config.spinup_steps and (
            (step - config.spinup_steps) % config.steps_per_frame == 0
        )
        if record:
            u = ops.inverse(uh)
            if not bool(torch.isfinite(u).all()):
                raise RuntimeError(
                    f"the simulation diverged before step {step}; lower `dt` ({dt}) or raise "
                    f"`viscosity` ({config.viscosity})"
                )
            courant = float(u.abs().sum(-4).amax()) * dt / dx
            if courant > 1.0:
                _log.warning("Courant number %.2f > 1 at step %d: lower `dt`", courant, step)
            frames.append(u)
            if len(frames) == config.n_frames:
                break
        uh = _step(uh, ops, dt, decay, config.forcing_power, band)
    return torch.stack(frames, dim=-5)


def simulate_turbulence(
    config: TurbulenceConfig, seed: int, *, device: torch.device | str | None = None
) -> Tensor:
    """One trajectory of forced isotropic turbulence (the pseudo-spectral solver of the module
    docstring) from the random initial field of ``seed`` (:func:`initial_field`).

    Args:
        config: the :class:`TurbulenceConfig`.
        seed: the seed of the initial field (the only randomness).
        device: where to compute (default CPU).

    Returns:
        ``(n_frames, 3, n, n, n)`` in ``config.dtype``: the velocity after ``spinup_steps +
        t * steps_per_frame`` steps, t = 0 .. n_frames - 1; divergence-free and 2/3-truncated
        to rounding.

    Raises:
        TypeError / ValueError: for a wrong ``config`` or ``seed``.
        RuntimeError: if the simulation blows up (``dt`` too large).

    Example::

        cfg = TurbulenceConfig(size=16, spinup_steps=5, steps_per_frame=2, n_frames=3)
        u = simulate_turbulence(cfg, seed=0)  # (3, 3, 16, 16, 16)
    """
    return evolve_turbulence(initial_field(config, seed, device=device), config)


# --------------------------------------------------------------------------------------------
# coarse-graining and rotations
# --------------------------------------------------------------------------------------------


def downsample(u: Tensor, factor: int) -> Tensor:
    """Box average over ``factor^3`` cells: ``(..., C, n, n, n) -> (..., C, n/f, n/f, n/f)``.

    Commutes with :func:`rotate_velocity` (the blocks are mapped onto blocks by the 24
    rotations of the grid about its centre).

    Raises:
        ValueError: if ``factor`` does not divide ``n``.
    """
    u = check_instance(u, "u", Tensor)
    f = check_int(factor, "factor", minimum=1)
    if u.dim() < 3:
        raise ValueError(f"`u` must have shape (..., n, n, n), got {tuple(u.shape)}")
    n = u.shape[-1]
    if u.shape[-3:] != (n, n, n) or n % f:
        raise ValueError(
            f"`factor` must divide the side of the cubic grid of `u`, got factor {f} and grid "
            f"{tuple(u.shape[-3:])}"
        )
    m = n // f
    lead = u.shape[:-3]
    return u.reshape(*lead, m, f, m, f, m, f).mean(dim=(-5, -3, -1))


def rotate_velocity(u: Tensor, g: int) -> Tensor:
    """Rotate ``F`` stacked vector fields by the octahedral rotation ``g``:
    ``u'(p) = R_g u(R_g^-1 p)``.

    Args:
        u: ``(..., 3F, n, n, n)``, channel ``3f + i`` the component of field ``f`` along dim
            ``i`` of ``(D, H, W)``.
        g: index into :data:`~ella.layers.octahedral.OCTAHEDRAL_ROTATIONS`.

    Returns:
        The rotated fields, same shape: the grid by
        :func:`~ella.layers.octahedral.rotate_volume` (the point at centred position ``p``
        moves to ``R_g p``), the components by ``R_g`` (a signed permutation, exact).
        ``rotate_velocity(rotate_velocity(u, h), g) == rotate_velocity(u, g h)``.

    Raises:
        TypeError / ValueError: for a wrong ``u`` or ``g`` outside ``[0, 24)``.
    """
    u = _check_velocity(u, fields=True)
    g = check_int(g, "g")
    if not 0 <= g < OCTAHEDRAL_ORDER:
        raise ValueError(f"`g` must be a group element index in [0, {OCTAHEDRAL_ORDER}), got {g}")
    r = OCTAHEDRAL_ROTATIONS[g]
    source = r.abs().argmax(dim=1)  # u'_i = sign_i * u_{source_i}
    sign = r.gather(1, source[:, None])[:, 0]
    n_fields = u.shape[-4] // 3
    index = (3 * torch.arange(n_fields)[:, None] + source[None, :]).flatten().to(u.device)
    signs = sign.repeat(n_fields).to(dtype=u.dtype, device=u.device)[:, None, None, None]
    return rotate_volume(u.index_select(-4, index) * signs, g)


# --------------------------------------------------------------------------------------------
# the super-resolution data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SuperResolutionData:
    """The super-resolution task, normalised, float32.

    ``train``, ``val``, ``test`` are ``(x, y)``: ``x`` ``(B, 9, m, m, m)`` the box-averaged
    frames ``t - 1, t, t + 1`` (channel ``3f + i``, f = 0, 1, 2), ``y`` ``(B, 3, n, n, n)`` the
    fine frame ``t``; both divided by ``scale``, the rms of the training targets (one number for
    all components, so the rotations commute with the normalisation). ``factor = n / m``.
    """

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    scale: float
    factor: int

    def __repr__(self) -> str:
        return summary_repr(self)


def _split_counts(total: int, split: tuple[float, float, float]) -> tuple[int, int, int]:
    n_val = max(1, round(split[1] * total))
    n_test = max(1, round(split[2] * total))
    return total - n_val - n_test, n_val, n_test


def superresolution_data(
    config: TurbulenceConfig,
    n_trajectories: int,
    factor: int = 4,
    seed: int = 0,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    *,
    fine_size: int | None = None,
) -> SuperResolutionData:
    """The paper's super-resolution task on generated turbulence.

    ``n_trajectories`` trajectories are simulated (:func:`simulate_turbulence` with seeds
    ``seed, seed + 1, ...``); each gives ``n_frames - 2`` samples, one per triple of consecutive
    frames. The trajectories are split, whole, by a permutation seeded with ``seed``:
    ``round(split[1] * n_trajectories)`` (at least 1) to validation, as many by ``split[2]`` to
    test, the rest to training, so the three sets share no frame. Inputs and targets are divided
    by the rms of the training targets and returned as float32.

    Args:
        config: the simulation (``config.size`` divisible by ``factor``; ``n_frames >= 3``).
        n_trajectories: number of independent trajectories (>= 3).
        factor: the resolution ratio ``n / m`` (the paper: 4).
        seed: first simulation seed and seed of the split.
        split: fractions (train, val, test), positive, summing to 1.
        fine_size: the target resolution ``n``; the simulated ``config.size^3`` fields are first
            box-averaged to it (:func:`downsample`), as the paper averaged the 1024^3 simulation
            to its 64^3 targets, so the targets come from a resolved simulation. ``None``: the
            simulation's own grid.

    Returns:
        :class:`SuperResolutionData`.

    Raises:
        TypeError / ValueError: naming the argument.
    """
    config = check_instance(config, "config", TurbulenceConfig)
    n_traj = check_int(n_trajectories, "n_trajectories", minimum=3)
    factor = check_int(factor, "factor", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    split = check_instance(split, "split", (tuple, list))
    if len(split) != 3:
        raise ValueError(f"`split` must be 3 fractions (train, val, test), got {split!r}")
    split = tuple(check_float(s, "split", positive=True) for s in split)
    if abs(sum(split) - 1) > 1e-9:
        raise ValueError(f"`split` must sum to 1, got {split!r} (sum {sum(split)})")
    fine = config.size if fine_size is None else check_int(fine_size, "fine_size", minimum=1)
    if config.size % fine:
        raise ValueError(f"`fine_size` must divide config.size {config.size}, got {fine}")
    if fine % factor:
        raise ValueError(f"`factor` must divide the fine size {fine}, got {factor}")
    if config.n_frames < 3:
        raise ValueError(f"config.n_frames must be >= 3 for frame triples, got {config.n_frames}")
    counts = _split_counts(n_traj, split)
    if counts[0] < 1:
        raise ValueError(
            f"`n_trajectories` {n_traj} leaves no training trajectory with split {split}"
        )
    xs, ys = [], []
    for j in range(n_traj):
        u = downsample(simulate_turbulence(config, seed + j), config.size // fine)  # (T, 3, n^3)
        coarse = downsample(u, factor)
        x = torch.cat([coarse[:-2], coarse[1:-1], coarse[2:]], dim=1)  # (T - 2, 9, m, m, m)
        xs.append(x)
        ys.append(u[1:-1])
    order = torch.randperm(n_traj, generator=_generator(seed)).tolist()
    parts, start = [], 0
    for count in counts:
        idx = order[start : start + count]
        start += count
        parts.append((torch.cat([xs[i] for i in idx]), torch.cat([ys[i] for i in idx])))
    scale = float(parts[0][1].square().mean().sqrt())
    train, val, test = (
        ((x / scale).to(torch.float32), (y / scale).to(torch.float32)) for x, y in parts
    )
    return SuperResolutionData(train=train, val=val, test=test, scale=scale, factor=factor)

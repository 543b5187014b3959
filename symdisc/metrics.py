"""Scores of a learned symmetry on held-out samples (paper 002, section 4; appendix B).

All functions take tensors over N held-out samples: the learned fields v (N, k, P) from
:func:`symdisc.objective.tangent_fields`, the loss gradients (N, P), and where a known symmetry is
the reference, its tangent basis (N, r, P) from :mod:`symdisc.known`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import ParamLoss
from symdisc.objective import tangent_fields
from symdisc.sampler import Samples

__all__ = [
    "invariance_errors",
    "quantiles",
    "cos_to_tangent",
    "energy_outside",
    "principal_angles",
    "identity_error",
    "associativity_error",
    "flow",
    "flow_profile",
    "flow_drift",
    "evaluate",
]

_EPS = 1e-30


def invariance_errors(fields: Tensor, grad: Tensor) -> Tensor:
    """Normalised invariance error ``|<grad L, v>| / (||grad L|| ||v||)``: (N, k) in [0, 1].

    0 means v is exactly tangent to the loss's level set; a random direction in P dimensions
    scores about ``sqrt(2 / (pi P))``.
    """
    dot = torch.einsum("np,nkp->nk", grad, fields).abs()
    return dot / (grad.norm(dim=-1, keepdim=True) * fields.norm(dim=-1)).clamp_min(_EPS)


def quantiles(values: Tensor) -> dict[str, float]:
    """Median and 90th percentile of a tensor of errors."""
    flat = values.reshape(-1).double()
    return {"median": float(flat.median()), "p90": float(torch.quantile(flat, 0.9))}


def cos_to_tangent(fields: Tensor, tangent: Tensor) -> Tensor:
    """``|cos(v, t)|`` against a one-dimensional known tangent t (N, P): (N, k)."""
    dot = torch.einsum("np,nkp->nk", tangent, fields).abs()
    return dot / (tangent.norm(dim=-1, keepdim=True) * fields.norm(dim=-1)).clamp_min(_EPS)


def _orthonormal(basis: Tensor, rtol: float = 1e-6) -> Tensor:
    """Orthonormal columns (N, P, r) spanning the rows of basis (N, r, P), rank-revealing."""
    U, S, _ = torch.linalg.svd(basis.transpose(1, 2), full_matrices=False)
    keep = S > rtol * S[:, :1].clamp_min(_EPS)
    return U * keep[:, None, :]  # directions of negligible weight are zeroed


def energy_outside(fields: Tensor, basis: Tensor) -> float:
    """Fraction of ``sum ||v||^2`` that lies outside the known tangent spaces span(basis).

    ``sum_{n,j} ||(I - Q_n Q_n^T) v_nj||^2 / sum_{n,j} ||v_nj||^2`` with Q_n an orthonormal basis
    of the known tangent space at sample n: 0 when every learned field is a known symmetry.
    """
    Q = _orthonormal(basis)
    inside = torch.einsum("npr,nkp->nkr", Q, fields)
    total = (fields**2).sum()
    return float((total - (inside**2).sum()) / total.clamp_min(_EPS))


def principal_angles(fields: Tensor, basis: Tensor) -> Tensor:
    """Principal angles (radians) between span(v_1..v_k) and the known span, per sample.

    Shapes: fields (N, k, P), basis (N, r, P) -> (N, min(k, r)), ascending.
    """
    Qv = _orthonormal(fields)
    Qt = _orthonormal(basis)
    s = torch.linalg.svdvals(Qv.transpose(1, 2) @ Qt).clamp(0.0, 1.0)
    return torch.arccos(s[:, : min(fields.shape[1], basis.shape[1])])


def identity_error(action: Action, samples: Samples) -> float:
    """Mean relative identity error ``||a_X(I, theta) - theta|| / ||theta||``."""
    eye = torch.eye(action.d, dtype=samples.theta.dtype, device=samples.theta.device)
    with torch.no_grad():
        moved = torch.vmap(lambda t, x: action(eye, t, x))(samples.theta, samples.X)
    return float(((moved - samples.theta).norm(dim=1) / samples.theta.norm(dim=1)).mean())


def associativity_error(
    action: Action, h: Tensor, samples: Samples, *, t_scale: float = 0.5, seed: int = 0
) -> float:
    """Mean relative ``||a(g2, a(g1, theta)) - a(g2 g1, theta)|| / ||theta||``, g = exp(t h_j).

    t is uniform in [-t_scale, t_scale] and the generators of g1 and g2 are drawn at random.
    """
    gen = torch.Generator().manual_seed(seed)
    N, k = samples.theta.shape[0], h.shape[0]
    t = ((2 * torch.rand(2, N, generator=gen) - 1) * t_scale).to(h)
    j = torch.randint(0, k, (2, N), generator=gen).to(h.device)
    g1 = torch.linalg.matrix_exp(t[0, :, None, None] * h[j[0]])
    g2 = torch.linalg.matrix_exp(t[1, :, None, None] * h[j[1]])
    act = torch.vmap(action)
    with torch.no_grad():
        lhs = act(g2, act(g1, samples.theta, samples.X), samples.X)
        rhs = act(g2 @ g1, samples.theta, samples.X)
    return float(((lhs - rhs).norm(dim=1) / samples.theta.norm(dim=1)).mean())


def flow(
    action: Action, h_j: Tensor, theta: Tensor, X: Tensor, *, tau: float, steps: int = 20
) -> Tensor:
    """Integrate the unit-speed learned field ``d theta / dt = v / ||v||`` to path length tau.

    Classical RK4 with ``steps`` steps, vmapped over samples; X stays fixed along the flow.
    Shapes: h_j (d, d), theta (N, P), X (N, ...) -> path (steps + 1, N, P).
    """

    def field(t: Tensor) -> Tensor:
        v = tangent_fields(action, h_j[None], t, X)[:, 0]
        return v / v.norm(dim=1, keepdim=True).clamp_min(_EPS)

    dt = tau / steps
    path = [theta]
    with torch.no_grad():
        for _ in range(steps):
            t = path[-1]
            k1 = field(t)
            k2 = field(t + dt / 2 * k1)
            k3 = field(t + dt / 2 * k2)
            k4 = field(t + dt * k3)
            path.append(t + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    return torch.stack(path)


def flow_profile(
    loss: ParamLoss,
    action: Action,
    h_j: Tensor,
    samples: Samples,
    *,
    tau: float = 0.5,
    steps: int = 20,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Relative loss change ``|L(theta_t) - L(theta)| / |L(theta)|`` along a learned flow and
    along straight random directions (uniform on the sphere), at path lengths t in [0, tau].

    Returns ``t`` (steps + 1,), ``flow`` and ``random`` (steps + 1, N).
    """
    base = samples.loss.abs().clamp_min(_EPS)
    value = torch.vmap(torch.vmap(loss.flat), in_dims=(0, None, None))  # over t and samples
    path = flow(action, h_j, samples.theta, samples.X, tau=tau, steps=steps)
    t = torch.linspace(0, tau, steps + 1, dtype=samples.theta.dtype, device=samples.theta.device)
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(samples.theta.shape, generator=gen).to(samples.theta)
    d = d / d.norm(dim=1, keepdim=True)
    line = samples.theta + t[:, None, None] * d
    with torch.no_grad():
        along = (value(path, samples.X, samples.Y) - samples.loss).abs() / base
        rand = (value(line, samples.X, samples.Y) - samples.loss).abs() / base
    return {"t": t, "flow": along, "random": rand}


def flow_drift(
    loss: ParamLoss,
    action: Action,
    h: Tensor,
    samples: Samples,
    *,
    tau: float = 0.5,
    steps: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Relative loss change at the end of the learned flows, against random directions.

    ``ratio`` is the median of ``|L(theta_tau) - L(theta)| / |L(theta)|`` over samples and
    generators, following each unit-speed flow for a path length tau, divided by the median over
    samples of the same quantity after a straight step of length tau in a random direction: near
    0 for a symmetry, near 1 for no better than chance.
    """
    ends = [
        flow_profile(loss, action, h[j], samples, tau=tau, steps=steps, seed=seed)
        for j in range(h.shape[0])
    ]
    along = torch.stack([e["flow"][-1] for e in ends]).median()
    rand = ends[0]["random"][-1].median()
    return {
        "ratio": float(along / rand.clamp_min(_EPS)),
        "flow_rel_change": float(along),
        "random_rel_change": float(rand),
    }


def evaluate(
    loss: ParamLoss,
    action: Action,
    h: Tensor,
    samples: Samples,
    *,
    known_basis: Tensor | None = None,
    tau: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Every score of a learned symmetry on held-out ``samples``, under the issue's metric names.

    Returns ``invariance_median``, ``invariance_p90``, ``v_norm_mean``, ``flow_drift_ratio``,
    ``identity_error``, ``associativity_error`` and, given the known tangent basis (N, r, P),
    ``energy_outside``, ``principal_angle_max`` (radians, median over samples) and, when r = 1,
    ``cos_true`` (mean |cos| between the fields and the known tangent).
    """
    with torch.no_grad():
        fields = tangent_fields(action, h, samples.theta, samples.X)
    inv = quantiles(invariance_errors(fields, samples.grad))
    scores = {
        "invariance_median": inv["median"],
        "invariance_p90": inv["p90"],
        "v_norm_mean": float(fields.norm(dim=-1).mean()),
        "flow_drift_ratio": flow_drift(loss, action, h, samples, tau=tau, seed=seed)["ratio"],
        "identity_error": identity_error(action, samples),
        "associativity_error": associativity_error(action, h, samples, seed=seed),
    }
    if known_basis is not None:
        scores["energy_outside"] = energy_outside(fields, known_basis)
        scores["principal_angle_max"] = float(principal_angles(fields, known_basis)[:, -1].median())
        if known_basis.shape[1] == 1:
            scores["cos_true"] = float(cos_to_tangent(fields, known_basis[:, 0]).mean())
    return scores

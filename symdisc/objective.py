"""The discovery objectives of paper 002: infinitesimal (eqs. 2-4) and exponentiated (app. B.2).

Both are functions of an :class:`~symdisc.actions.Action`, the generators h (k, d, d) and a batch
of :class:`~symdisc.sampler.Samples`; they return the weighted total and every term, so a trainer
can log each one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import ParamLoss
from symdisc.sampler import Samples

ObjectiveKind = Literal["infinitesimal", "exponential"]

__all__ = [
    "ObjectiveKind",
    "Weights",
    "tangent_fields",
    "identity_residual",
    "orthogonality",
    "infinitesimal_objective",
    "exponential_objective",
]


@dataclass(frozen=True)
class Weights:
    """The weights gamma of the loss terms of eq. (4), and the target norm beta of L_reg_id.

    Defaults follow section 4.1 (invariance 10, identity and orthogonality 1, sparsity 0.1), and
    the norm term, whose weight the paper does not give, matches the invariance term at 10: with
    1 the fields shrink (||v|| ~ 0.07 for beta = 1 on the 1x1 linear net after 2000 steps)
    because a small v is the cheapest way to a small invariance term.
    """

    invariance: float = 10.0
    identity: float = 1.0
    reg_id: float = 10.0
    orth: float = 1.0
    sparse: float = 0.1
    assoc: float = 1.0
    beta: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def tangent_fields(action: Action, h: Tensor, theta: Tensor, X: Tensor) -> Tensor:
    """The infinitesimal action ``v_j = D_g a_X|_(I, theta)(h_j)`` for every sample and generator.

    Computed in forward mode by :meth:`~symdisc.actions.Action.tangents` (a ``jvp`` in g at the
    identity with tangent h_j, paper 002, Theorem B.1, over all samples and generators).

    Shapes: h (k, d, d), theta (B, P), X (B, ...) -> (B, k, P).
    """
    return action.tangents(h, theta, X)[1]


def identity_residual(action: Action, theta: Tensor, X: Tensor) -> Tensor:
    """``||a_X(I, theta) - theta||`` per sample (eq. 3): (B,)."""
    eye = torch.eye(action.d, dtype=theta.dtype, device=theta.device)
    moved = torch.vmap(lambda t, x: action(eye, t, x))(theta, X)
    return (moved - theta).norm(dim=-1)


def orthogonality(h: Tensor) -> Tensor:
    """``sum_{i<j} |cos(h_i, h_j)|`` over the flattened generators (zero for k = 1)."""
    flat = h.reshape(h.shape[0], -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    return torch.triu(cos, diagonal=1).abs().sum()


def infinitesimal_objective(
    action: Action, h: Tensor, batch: Samples, weights: Weights
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. (4): gamma-weighted sum of L_invariance, L_id, L_reg_id, L_orth and L_sparse.

    * L_invariance = mean_{i,j} |<grad_theta L(theta_i, X_i), v_ij>|  (eq. 2)
    * L_id = mean_i ||a_X(I, theta_i) - theta_i||                      (eq. 3)
    * L_reg_id = mean_{i,j} |beta - ||v_ij|||
    * L_orth = sum_{i<j} |cos(h_i, h_j)|,  L_sparse = sum |h|

    Returns:
        ``(total, terms)`` with ``terms`` a dict of the unweighted scalar terms.
    """
    moved, v = action.tangents(h, batch.theta, batch.X)  # a_X(I, theta) (B, P), v (B, k, P)
    terms = {
        "invariance": torch.einsum("bp,bkp->bk", batch.grad, v).abs().mean(),
        "identity": (moved - batch.theta).norm(dim=-1).mean(),
        "reg_id": (weights.beta - v.norm(dim=-1)).abs().mean(),
        "orth": orthogonality(h),
        "sparse": h.abs().sum(),
    }
    return _weighted(terms, weights), terms


def exponential_objective(
    action: Action,
    h: Tensor,
    batch: Samples,
    loss: ParamLoss,
    weights: Weights,
    *,
    t_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The exponentiated objective of appendix B.2, with the regularisers of eq. (4).

    With ``t ~ U[-t_scale, t_scale]`` per sample and generator and ``g = exp(t h_j)``
    (``torch.linalg.matrix_exp``):

    * L_invariance_int = mean |L(a_X(g, theta), X) - L(theta, X)|
    * L_id_int = mean ||a_X(I, theta) - theta||
    * L_assoc_int = mean ||a_X(g2, a_X(g1, theta)) - a_X(g2 g1, theta)||, g1, g2 from two
      independent draws of t and of the generator.

    The finite objective alone is solved by the trivial action; the norm, orthogonality and
    sparsity terms of eq. (4) (L_reg_id on the infinitesimal action) are added to rule it out.
    """
    B, k = batch.theta.shape[0], h.shape[0]
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def uniform(*shape: int) -> Tensor:
        u = torch.rand(shape, generator=generator, device=gen_device, dtype=h.dtype)
        return ((2 * u - 1) * t_scale).to(h.device)

    g = torch.linalg.matrix_exp(uniform(B, k)[..., None, None] * h)  # (B, k, d, d)
    pick = torch.randint(0, k, (2, B), generator=generator, device=gen_device).to(h.device)
    t2 = uniform(2, B)
    g1 = torch.linalg.matrix_exp(t2[0, :, None, None] * h[pick[0]])  # (B, d, d)
    g2 = torch.linalg.matrix_exp(t2[1, :, None, None] * h[pick[1]])
    act = torch.vmap(action)  # over samples
    act_k = torch.vmap(torch.vmap(action, in_dims=(0, None, None)))  # over samples and generators
    moved = act_k(g, batch.theta, batch.X)  # (B, k, P)
    loss_moved = torch.vmap(torch.vmap(loss.flat, in_dims=(0, None, None)))(moved, batch.X, batch.Y)
    assoc = act(g2, act(g1, batch.theta, batch.X), batch.X) - act(g2 @ g1, batch.theta, batch.X)
    v = tangent_fields(action, h, batch.theta, batch.X)
    terms = {
        "invariance": (loss_moved - batch.loss[:, None]).abs().mean(),
        "identity": identity_residual(action, batch.theta, batch.X).mean(),
        "assoc": assoc.norm(dim=-1).mean(),
        "reg_id": (weights.beta - v.norm(dim=-1)).abs().mean(),
        "orth": orthogonality(h),
        "sparse": h.abs().sum(),
    }
    return _weighted(terms, weights), terms


def _weighted(terms: dict[str, Tensor], weights: Weights) -> Tensor:
    gammas = weights.as_dict()
    return sum(gammas[name] * value for name, value in terms.items())

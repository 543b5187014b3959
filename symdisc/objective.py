"""The discovery objectives of paper 002: infinitesimal (eqs. 2-4) and exponentiated (app. B.2).

Both are functions of an :class:`~symdisc.actions.Action`, the generators h (k, d, d) and a batch
of :class:`~symdisc.sampler.Samples`; they return the weighted total and every term, so a trainer
can log each one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import ParamLoss
from symdisc.runtime.checks import check_choice, check_float, check_instance
from symdisc.sampler import Samples
from symdisc.validation import check_algebra, check_loss, check_samples, check_tensor

ObjectiveKind = Literal["infinitesimal", "exponential"]
FormKind = Literal["fields", "paper"]

__all__ = [
    "ObjectiveKind",
    "FormKind",
    "Weights",
    "tangent_fields",
    "identity_residual",
    "orthogonality",
    "field_orthogonality",
    "infinitesimal_objective",
    "exponential_objective",
]


@dataclass(frozen=True)
class Weights:
    """The weights gamma of the loss terms of eq. (4), the target norm beta, and the form.

    ``form`` picks what the terms measure (see :func:`infinitesimal_objective`):

    * ``"fields"`` (the default): scale-free invariance ``|cos(grad L, v)|``, the norm term
      ``(||v|| - beta)^2`` and orthogonality of the k *fields* at each sample. With the paper's
      form, ``|<grad L, v>|`` grows with ||v|| and ||grad L|| (median ||grad L|| is 67 on a deep
      leaky-ReLU net), so shrinking v is the cheapest way down and the fields collapse (norm ~4e-6
      there); and orthogonality of the generators h does not keep the fields apart, because the
      MLP action may map different h to the same field (the k fields of ``linear_h2`` and
      ``relu_h3`` coincided, |cos| 0.99999). The fields form removes both failure modes.
    * ``"paper"``: eq. (4) as written: ``|<grad L, v>|``, ``|beta - ||v|||`` and
      ``sum_{i<j} |cos(h_i, h_j)|`` on the generators. Section 4.1's weights (invariance 10,
      identity and orthogonality 1, sparsity 0.1) with the norm term at 10, which the paper does
      not give: at 1 the fields shrink to ||v|| ~ 0.07 on the 1x1 linear net. Use
      :meth:`paper`.

    The defaults are the fields form's: invariance 100, identity 1, norm 10, orthogonality 1,
    sparsity 0.01 (on h; h and the action's first layer trade scale, so a weak pull suffices).
    The scale-free invariance term is ~||grad L|| times smaller than the paper's, hence 100
    (measured on ``relu_h3``, k = 3, 5000 steps: invariance weight 10 left the fields orthogonal
    but far from invariant, median |cos| 0.10; 100 reached 0.03), and the norm term 10 (at 1 the
    fields of ``linear_1x1`` ended at ||v|| = 0.21 for beta = 1).
    """

    invariance: float = 100.0
    identity: float = 1.0
    reg_id: float = 10.0
    orth: float = 1.0
    sparse: float = 0.01
    assoc: float = 1.0
    beta: float = 1.0
    form: FormKind = "fields"

    def __post_init__(self) -> None:
        for name in ("invariance", "identity", "reg_id", "orth", "sparse", "assoc"):
            check_float(getattr(self, name), name, nonnegative=True)
        check_float(self.beta, "beta", positive=True)
        check_choice(self.form, "form", FormKind)

    @classmethod
    def paper(cls, **overrides: float) -> Weights:
        """The paper's objective (eq. 4) with its section 4.1 weights; ``overrides`` replace any."""
        base = dict(invariance=10.0, identity=1.0, reg_id=10.0, orth=1.0, sparse=0.1, form="paper")
        return cls(**(base | overrides))

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def tangent_fields(action: Action, h: Tensor, theta: Tensor, X: Tensor) -> Tensor:
    """The infinitesimal action ``v_j = D_g a_X|_(I, theta)(h_j)`` for every sample and generator.

    Computed in forward mode by :meth:`~symdisc.actions.Action.tangents` (a ``jvp`` in g at the
    identity with tangent h_j, paper 002, Theorem B.1, over all samples and generators).

    Shapes: h (k, d, d), theta (B, P), X (B, ...) -> (B, k, P).
    """
    check_instance(action, "action", Action)
    return action.tangents(h, theta, X)[1]


def identity_residual(action: Action, theta: Tensor, X: Tensor) -> Tensor:
    """``||a_X(I, theta) - theta||`` per sample (eq. 3): (B,)."""
    check_instance(action, "action", Action)
    check_tensor(theta, "theta", ndim=2, floating=True)
    check_instance(X, "X", Tensor)
    if X.ndim == 0 or X.shape[0] != theta.shape[0]:
        raise ValueError(f"`X` must be ({theta.shape[0]}, ...), got {tuple(X.shape)}")
    eye = torch.eye(action.d, dtype=theta.dtype, device=theta.device)
    moved = torch.vmap(lambda t, x: action(eye, t, x))(theta, X)
    return (moved - theta).norm(dim=-1)


def orthogonality(h: Tensor) -> Tensor:
    """``sum_{i<j} |cos(h_i, h_j)|`` over the flattened generators (zero for k = 1)."""
    check_tensor(h, "h", floating=True)
    if h.ndim < 2 or h.shape[0] == 0:
        raise ValueError(f"`h` must be (k, ...) with k >= 1 generators, got {tuple(h.shape)}")
    if h.shape[0] == 1:  # no pair: the sum is empty (its gradient too)
        return h.new_zeros(())
    flat = h.reshape(h.shape[0], -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit.T
    return torch.triu(cos, diagonal=1).abs().sum()


def field_orthogonality(v: Tensor, eps: float = 1e-3) -> Tensor:
    """``-mean_b log det(U_b U_b^T + eps I) / det((1 + eps) I)`` of the unit fields U_b (k, P).

    U_b holds the k fields at sample b (v (B, k, P)) scaled to unit norm, so ``U_b U_b^T`` is the
    matrix of their cosines. The term is 0 when the fields are orthonormal at every sample and
    grows like ``-log`` of the squared volume they span: unlike ``sum cos^2`` (whose gradient
    vanishes when two fields coincide, so coinciding fields stay stuck), it pushes hardest
    where fields are closest to coinciding. ``eps`` bounds it at ``k log((1 + eps) / eps)``.
    """
    check_tensor(v, "v", ndim=3, floating=True)
    eps = check_float(eps, "eps", positive=True)
    k = v.shape[1]
    unit = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    eye = torch.eye(k, dtype=v.dtype, device=v.device)
    gram = unit @ unit.transpose(1, 2) + eps * eye  # (B, k, k)
    return (k * math.log1p(eps) - torch.linalg.slogdet(gram)[1]).mean()


def _invariance(grad: Tensor, v: Tensor, form: FormKind, v_norm: Tensor | None = None) -> Tensor:
    """L_invariance from grad (B, P), v (B, k, P) and, if at hand, ||v|| (B, k)."""
    dot = (grad[:, None, :] * v).sum(-1)  # (B, k)
    if form == "paper":
        return dot.abs().mean()
    v_norm = v.norm(dim=-1) if v_norm is None else v_norm
    norms = grad.norm(dim=-1, keepdim=True) * v_norm
    return (dot.abs() / norms.clamp_min(1e-12)).mean()


def _norm_term(v_norm: Tensor, beta: float, form: FormKind) -> Tensor:
    """L_reg_id from the field norms ||v_bj|| (B, k)."""
    if form == "paper":
        return (beta - v_norm).abs().mean()
    return (v_norm - beta).pow(2).mean()


def _orth_term(h: Tensor, v: Tensor, form: FormKind) -> Tensor:
    return orthogonality(h) if form == "paper" else field_orthogonality(v)


def infinitesimal_objective(
    action: Action, h: Tensor, batch: Samples, weights: Weights
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. (4): gamma-weighted sum of L_invariance, L_id, L_reg_id, L_orth and L_sparse.

    With v_bj = D_g a_X(h_j) (B, k, P) and g_b = grad_theta L(theta_b, X_b) (B, P):

    * form "paper" (eq. 4 as written):
      L_invariance = mean_{b,j} |<g_b, v_bj>| (eq. 2), L_reg_id = mean |beta - ||v_bj|||,
      L_orth = sum_{i<j} |cos(h_i, h_j)| on the generators.
    * form "fields" (the default, see :class:`Weights`):
      L_invariance = mean_{b,j} |<g_b, v_bj>| / (||g_b|| ||v_bj||) (scale-free),
      L_reg_id = mean (||v_bj|| - beta)^2,
      L_orth = :func:`field_orthogonality` of the fields at each sample.
    * both: L_id = mean_b ||a_X(I, theta_b) - theta_b|| (eq. 3), L_sparse = sum |h|.

    Returns:
        ``(total, terms)`` with ``terms`` a dict of the unweighted scalar terms.
    """
    _check_objective_args(action, batch, weights)
    moved, v = action.tangents(h, batch.theta, batch.X)  # a_X(I, theta) (B, P), v (B, k, P)
    form, v_norm = weights.form, v.norm(dim=-1)
    terms = {
        "invariance": _invariance(batch.grad, v, form, v_norm),
        "identity": (moved - batch.theta).norm(dim=-1).mean(),
        "reg_id": _norm_term(v_norm, weights.beta, form),
        "orth": _orth_term(h, v, form),
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
    sparsity terms of eq. (4) (L_reg_id on the infinitesimal action) are added to rule it out, in
    the form ``weights.form`` picks (as in :func:`infinitesimal_objective`). The finite
    invariance term stays as written: a loss difference, not a field.
    """
    _check_objective_args(action, batch, weights, loss)
    check_algebra(h, "h", action.d, finite=False)
    t_scale = check_float(t_scale, "t_scale", positive=True)
    if generator is not None:
        check_instance(generator, "generator", torch.Generator)
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
        "reg_id": _norm_term(v.norm(dim=-1), weights.beta, weights.form),
        "orth": _orth_term(h, v, weights.form),
        "sparse": h.abs().sum(),
    }
    return _weighted(terms, weights), terms


def _check_objective_args(
    action: object, batch: object, weights: object, loss: object | None = None
) -> None:
    check_instance(action, "action", Action)
    if loss is not None:
        check_loss(loss)
    check_samples(batch, "batch", loss=loss)  # type: ignore[arg-type]
    check_instance(weights, "weights", Weights)


def _weighted(terms: dict[str, Tensor], weights: Weights) -> Tensor:
    """``sum_name gamma_name * term_name`` as one dot product (one autograd node per step)."""
    values = torch.stack(list(terms.values()))
    gammas = torch.tensor([getattr(weights, name) for name in terms], dtype=values.dtype)
    return values @ gammas.to(values.device, non_blocking=True)

"""The Laplace approximation of an invariant model on fixed draws, and the eta-gradient of its
marginal likelihood by the method of paper 001, section 4.3 (eq. 20)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ella.invariance.kfac import _augmented_batch, _averaged_layers, augmented_kfac
from ella.invariance.models import InvariantModel
from ella.laplace import Laplace, PriorPrecision, Structure
from symdisc.curvature import ggn_rows
from symdisc.curvature.losses import loss_value

__all__ = ["invariant_laplace", "eta_gradient"]


def _split(x: Tensor, eps: Tensor, y: Tensor, batch_size: int) -> list[tuple[Tensor, ...]]:
    return [
        (x[i : i + batch_size], eps[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, x.shape[0], batch_size)
    ]


def invariant_laplace(
    model: InvariantModel,
    data: Iterable[tuple[Tensor, Tensor, Tensor]],
    likelihood: str,
    structure: Structure,
    *,
    differentiable: bool = False,
    sigma: float = 1.0,
    temperature: float = 1.0,
    per_tensor: bool = False,
) -> Laplace:
    """A :class:`~ella.laplace.Laplace` of the invariant model fitted on fixed draws.

    ``data`` yields ``(x, eps, y)`` batches (eps (B, S, k) from
    :meth:`Augmentation.sample_eps`); the likelihood uses ``f_hat`` on these draws, ``"full"``
    and ``"diag"`` the GGN with averaged Jacobians (eq. 17), ``"kron"`` :func:`augmented_kfac`
    (eq. 19). With ``differentiable=True`` the augmented inputs keep their graph to eta, and the
    marginal likelihood is differentiable in eta (one graph over all the data: eq. 15 by plain
    backpropagation, for small problems; see :func:`eta_gradient` for large ones).
    """
    aug = model.augmentation
    with torch.set_grad_enabled(differentiable and aug.eta.requires_grad):
        batches = [(aug.apply(x, eps), y) for x, eps, y in data]
    if not differentiable:
        batches = [(x.detach(), y) for x, y in batches]
    return Laplace(
        model.averaged(),
        likelihood,  # type: ignore[arg-type]
        structure,
        sigma=sigma,
        temperature=temperature,
        per_tensor=per_tensor,
        kron_factors=augmented_kfac,
    ).fit(batches)


def _preconditioner(laplace: Laplace, deltas: dict[str, Tensor]) -> object:
    """The fixed weights W of eq. (20): ``d log det = <W, dH>`` for a change dH of the
    (untempered) curvature. Full: ``K^-1 / T`` with ``K = H/T + diag(delta)``; diag: its
    diagonal; kron: per block ``(W_A, W_G)`` with ``W_A = Q_A diag(v) Q_A^T``,
    ``v_i = sum_j (g_j/T) / (a_i g_j/T + delta)`` (and W_G likewise), the derivative of
    ``sum_ij log(a_i g_j/T + delta)`` through the eigenvalues ``a_i = q_i^T A q_i``."""
    T = laplace.temperature
    if laplace.structure == "full":
        K = laplace.curvature.detach() / T + torch.diag(laplace._per_parameter(deltas).detach())
        return torch.cholesky_inverse(torch.linalg.cholesky(K)) / T
    if laplace.structure == "diag":
        return 1.0 / (laplace.curvature.detach() + T * laplace._per_parameter(deltas).detach())
    out = {}
    for key, (a, qa, g, qg) in laplace.eigendecompositions.items():
        a, qa, g, qg = a.detach(), qa.detach(), g.detach(), qg.detach()
        delta = deltas[laplace._block_groups[key]].detach()
        ac, gc = a.clamp_min(0), g.clamp_min(0)
        denom = torch.outer(ac, gc) / T + delta  # (d_A, d_G)
        v = (gc[None, :] / T / denom).sum(1) * (a >= 0)
        w = (ac[:, None] / T / denom).sum(0) * (g >= 0)
        out[key] = ((qa * v) @ qa.T, (qg * w) @ qg.T)
    return out


def eta_gradient(
    laplace: Laplace,
    prior_precision: PriorPrecision,
    model: InvariantModel,
    data: Iterable[tuple[Tensor, Tensor, Tensor]],
    *,
    n_total: int,
) -> Tensor:
    """The gradient in eta of ``-log p(D | delta, eta)`` by the method of section 4.3.

    By eq. (20), ``d/d eta log det(H/T + delta) = sum_pq [(H/T + delta)^-1]_pq d/d eta
    [sum_n H_n / T]_pq``: the inverse (the *preconditioner*) is accumulated once over all the
    data (``laplace``, fitted without a graph on the same draws), and the derivative of the sum
    over examples splits into per-batch terms, each taken with a graph of one batch only. The
    log-likelihood term splits the same way. With ``data`` covering M of the ``n_total``
    examples, the per-batch terms are scaled by ``n_total / M``: an unbiased estimate of the
    sum for a random subset, and the exact full-batch gradient (at the same draws) when the
    batches cover all the data.

    Args:
        laplace: :func:`invariant_laplace` of ``model`` on all ``n_total`` examples and draws.
        prior_precision: as for :meth:`Laplace.log_marginal_likelihood`.
        model: the invariant model (its augmentation's eta requires a gradient).
        data: ``(x, eps, y)`` batches (the draws of these examples in ``laplace``'s fit).
        n_total: N, the number of examples ``laplace`` was fitted on.

    Returns:
        (k,) the gradient, in eta's dtype.
    """
    laplace._require_fit()
    eta = model.augmentation.eta
    if not eta.requires_grad:
        raise ValueError("the augmentation's `eta` must require a gradient")
    deltas = laplace.precisions(prior_precision)
    weights = _preconditioner(laplace, deltas)
    avg = model.averaged()
    loss = laplace.loss
    T = laplace.temperature
    scale_h = laplace.output_hessian_scale
    fn, params = None, None
    if laplace.structure != "kron":
        from symdisc.curvature import functional

        fn, params = functional(avg, laplace.names)
    else:
        layers = _averaged_layers(avg)
        point = {n: p.detach().requires_grad_(True) for n, p in avg.named_parameters()}
    grad = torch.zeros_like(eta)
    seen = 0
    for x, eps, y in data:
        with torch.enable_grad():
            inputs = model.augmentation.apply(x, eps)
            if laplace.structure == "kron":
                outputs, parts = _augmented_batch(avg, layers, point, inputs, loss, True)
                term = 0.0
                for key, (w_a, w_g) in weights.items():
                    aa, r, gg = parts[key][:3]
                    rows_total = r / x.shape[0] * n_total  # A is normalised over all N L rows
                    term = term + (w_a * aa).sum() / rows_total + scale_h * (w_g * gg).sum()
            else:
                outputs = fn(params, inputs)
                rows = ggn_rows(fn, params, inputs, loss=loss, reduction="sum", outputs=outputs)
                if laplace.structure == "full":
                    term = scale_h * ((rows @ weights) * rows).sum()
                else:
                    term = scale_h * (rows.pow(2).sum(0) * weights).sum()
            value = loss_value(outputs, y, loss, "sum")
            if laplace.likelihood == "classification":
                nll = value
            else:
                nll = value / (2.0 * laplace.sigma**2)
            objective = nll / T + 0.5 * term
            (part,) = torch.autograd.grad(objective, eta)
        grad = grad + part
        seen += x.shape[0]
    if seen == 0:
        raise ValueError("`data` must yield at least one (x, eps, y) batch")
    return grad * (n_total / seen)

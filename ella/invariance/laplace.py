"""The Laplace approximation of an invariant model on fixed draws (paper 001, section 4.1, eq. 17
and section 4.2, eq. 19), and the eta-gradient of its marginal likelihood by the method of
section 4.3 (eq. 20)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from ella.invariance.kfac import AugmentedKFAC
from ella.invariance.models import InvariantModel
from ella.laplace import Laplace, Likelihood, PriorPrecision, Structure
from symdisc.curvature import loss_value
from symdisc.runtime import NonFiniteLossError, check_bool, check_instance, check_int

__all__ = ["invariant_laplace", "eta_gradient"]


def _split(x: Tensor, eps: Tensor, y: Tensor, batch_size: int) -> list[tuple[Tensor, ...]]:
    return [
        (x[i : i + batch_size], eps[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, x.shape[0], batch_size)
    ]


def _triples(data: object, name: str = "data") -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The ``(x, eps, y)`` batches of ``data``, each checked to be a triple of tensors as it is
    read.

    Raises:
        TypeError: for a ``data`` that is not an iterable of batches (a single triple of
            tensors included: it must be wrapped in a list), or a batch that is not a triple of
            tensors, naming ``name`` and the batch's position.
    """
    is_triple = isinstance(data, (tuple, list)) and len(data) == 3
    if isinstance(data, (Tensor, str, bytes)) or (
        is_triple and all(isinstance(t, Tensor) for t in data)
    ):
        raise TypeError(
            f"`{name}` must be an iterable of (x, eps, y) batches, got "
            + (
                "a single (x, eps, y) triple: pass [(x, eps, y)]"
                if is_triple
                else type(data).__name__
            )
        )
    try:
        iterator = iter(data)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"`{name}` must be an iterable of (x, eps, y) batches, got {type(data).__name__}"
        ) from None
    for i, batch in enumerate(iterator):
        if not (
            isinstance(batch, (tuple, list))
            and len(batch) == 3
            and all(isinstance(t, Tensor) for t in batch)
        ):
            size = f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            raise TypeError(
                f"`{name}` must yield (x, eps, y) triples of tensors (eps from "
                f"`augmentation.sample_eps`); batch {i} is a {type(batch).__name__}{size}"
            )
        yield batch[0], batch[1], batch[2]


def invariant_laplace(
    model: InvariantModel,
    data: Iterable[tuple[Tensor, Tensor, Tensor]],
    likelihood: Likelihood,
    structure: Structure,
    *,
    differentiable: bool = False,
    sigma: float = 1.0,
    temperature: float = 1.0,
    per_tensor: bool = False,
) -> Laplace:
    """A :class:`~ella.laplace.Laplace` of the invariant model fitted on fixed draws.

    ``data`` yields ``(x, eps, y)`` batches (eps (B, S, k) from
    :meth:`Augmentation.sample_eps`); the likelihood uses ``f_hat`` on these draws (the
    :class:`DrawAverage` of ``model``), the exact-GGN structures the GGN with averaged Jacobians
    (eq. 17), ``"kron"`` the augmented KFAC (:class:`AugmentedKFAC`, eq. 19). ``data`` is
    streamed: read once, each batch augmented as the fit reads it, nothing held beyond a batch
    unless ``differentiable``. With ``differentiable=True`` the augmented inputs keep their
    graph to eta, and the marginal likelihood is differentiable in eta (one graph over all the
    data: eq. 15 by plain backpropagation, for small problems; see :func:`eta_gradient` for
    large ones).

    Raises:
        TypeError: for a ``model`` that is not an :class:`InvariantModel` or a non-bool
            ``differentiable``; otherwise as :class:`~ella.laplace.Laplace`.
    """
    check_instance(model, "model", InvariantModel)
    check_bool(differentiable, "differentiable")
    return Laplace(
        model.averaged(),
        likelihood,
        structure,
        sigma=sigma,
        temperature=temperature,
        per_tensor=per_tensor,
        kron_factors=AugmentedKFAC(),
    ).fit(_augmented(model, data, differentiable))


def _augmented(
    model: InvariantModel, data: Iterable[tuple[Tensor, Tensor, Tensor]], differentiable: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    """The ``(g(x, eps; eta) (B, S, ...), y)`` batches of ``data``, made one at a time as the
    fit reads them (with a graph to eta only if ``differentiable`` and eta requires one)."""
    aug = model.augmentation
    keep = differentiable and aug.eta.requires_grad
    for x, eps, y in _triples(data):
        with torch.set_grad_enabled(keep):
            inputs = aug.apply(x, eps)
        yield (inputs if keep else inputs.detach()), y


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
    [sum_n H_n / T]_pq``: the inverse (the *preconditioner*,
    :meth:`Laplace.preconditioner`) is accumulated once over all the data (``laplace``, fitted
    without a graph on the same draws), and the derivative of the sum over examples splits into
    per-batch terms (:meth:`Laplace.curvature_pairing`), each taken with a graph of one batch
    only. The log-likelihood term splits the same way. With ``data`` covering M of the
    ``n_total`` examples, the per-batch terms are scaled by ``n_total / M``: an unbiased
    estimate of the sum for a random subset, and the exact full-batch gradient (at the same
    draws) when the batches cover all the data.

    Args:
        laplace: :func:`invariant_laplace` of ``model`` on all ``n_total`` examples and draws.
        prior_precision: as for :meth:`Laplace.log_marginal_likelihood`.
        model: the invariant model (its augmentation's eta requires a gradient).
        data: ``(x, eps, y)`` batches (the draws of these examples in ``laplace``'s fit).
        n_total: N, the number of examples ``laplace`` was fitted on.

    Returns:
        (k,) the gradient, in eta's dtype.

    Raises:
        RuntimeError: for an unfitted ``laplace`` (the message says to call ``fit``).
        NonFiniteLossError: for a gradient that is not finite (NaN in the data or the draws).
        TypeError: for a ``laplace`` or ``model`` of the wrong type, a non-int ``n_total``.
        ValueError: for an eta that does not require a gradient, a non-positive ``n_total`` or
            no data.
    """
    check_instance(laplace, "laplace", Laplace)
    check_instance(model, "model", InvariantModel)
    check_int(n_total, "n_total", minimum=1)
    eta = model.augmentation.eta
    if not eta.requires_grad:
        raise ValueError("the augmentation's `eta` must require a gradient")
    weights = laplace.preconditioner(prior_precision)
    loss = laplace.loss
    T = laplace.temperature
    grad = torch.zeros_like(eta)
    seen = 0
    for x, eps, y in _triples(data):
        with torch.enable_grad():
            inputs = model.augmentation.apply(x, eps)
            outputs, term = laplace.curvature_pairing(weights, inputs, n_total=n_total)
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
        raise ValueError("`data` must yield at least one (x, eps, y) batch, got none")
    if not torch.isfinite(grad).all():
        raise NonFiniteLossError(
            f"the eta-gradient of the marginal likelihood must be finite, got {grad.tolist()} "
            f"(check `data` and `prior_precision` for NaN or infinite values)"
        )
    return grad * (n_total / seen)

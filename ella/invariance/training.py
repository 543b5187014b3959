"""Invariance learning (paper 001, section 4, eq. 14): the marginal-likelihood loop of
:mod:`ella.marglik` with the augmentation parameters eta as hyperparameters, and the Augerino
baseline (Benton et al., 2020)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ella.invariance.laplace import _split, eta_gradient, invariant_laplace
from ella.invariance.models import DrawAverage, InvariantModel
from ella.laplace import Laplace
from ella.marglik import (
    MarglikConfig,
    MarglikResult,
    _check_choice,
    _check_data,
    _check_floats,
    _check_ints,
    _nll,
    _Run,
)

__all__ = ["InvarianceMethod", "InvarianceConfig", "InvarianceResult", "train_invariant"]

logger = logging.getLogger(__name__)

InvarianceMethod = Literal["lila", "augerino", "none"]
EtaGradient = Literal["full", "stochastic"]


@dataclass(frozen=True)
class InvarianceConfig:
    """How eta is learned by :func:`train_invariant` (the rest of the schedule is a
    :class:`ella.marglik.MarglikConfig`).

    Attributes:
        method: ``"lila"``: eta by the Laplace marginal likelihood (section 4, eq. 14), jointly
            with the prior precisions; ``"augerino"``: eta by the training loss minus
            ``augerino_weight * ||eta||^2`` with a fixed weight decay (Benton et al., 2020; no
            prior precisions are learned and the MAP objective has no prior term);
            ``"none"``: eta stays at its initial value (the non-invariant baseline for eta = 0).
        n_samples: S, draws per example for the weight steps and the marginal likelihood.
        lr_eta: Adam learning rate of eta, cosine-annealed to ``lr_eta_min`` over all eta steps.
        lr_eta_min: final learning rate of eta.
        eta_burn_in: epochs before the first eta step (lila; Augerino steps from the start).
        n_eta_steps: eta steps per marginal-likelihood epoch (lila).
        eta_gradient: ``"full"``: every eta step backpropagates through one graph of the whole
            Laplace approximation (refit at the current eta; for small problems), together
            with one step on the log prior precisions; ``"stochastic"``: section 4.3, the
            preconditioner fitted once per marginal-likelihood epoch and per-step gradients
            from ``eta_batch_size`` random examples (:func:`eta_gradient`).
        eta_batch_size: M, examples per stochastic eta step (None: all N).
        augerino_weight: weight of ``-||eta||^2`` in the Augerino loss.
        augerino_weight_decay: Adam weight decay of the weights for Augerino.
        seed: seed of the augmentation draws (the minibatch order uses the MarglikConfig's).
    """

    method: InvarianceMethod = "lila"
    n_samples: int = 16
    lr_eta: float = 0.05
    lr_eta_min: float = 0.0
    eta_burn_in: int = 10
    n_eta_steps: int = 1
    eta_gradient: EtaGradient = "full"
    eta_batch_size: int | None = None
    augerino_weight: float = 1e-2
    augerino_weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice(self, "method", InvarianceMethod)
        _check_choice(self, "eta_gradient", EtaGradient)
        _check_ints(self, ("n_samples", "n_eta_steps"), minimum=1)
        _check_ints(self, ("eta_burn_in", "seed"), minimum=0)
        if self.eta_batch_size is not None and (
            isinstance(self.eta_batch_size, bool)
            or not isinstance(self.eta_batch_size, int)
            or self.eta_batch_size < 1
        ):
            raise ValueError(
                f"`eta_batch_size` must be a positive int or None, got {self.eta_batch_size!r}"
            )
        _check_floats(
            self, ("lr_eta", "augerino_weight", "augerino_weight_decay", "lr_eta_min"), zero=True
        )


@dataclass
class InvarianceResult(MarglikResult):
    """:class:`ella.marglik.MarglikResult` plus eta: ``best_eta`` (with the best state; the
    final eta when the marginal likelihood was never evaluated) and ``eta`` (final). History
    records carry ``eta/{component}`` after every epoch."""

    best_eta: list[float] | None = None
    eta: list[float] | None = None


def _eta_steps_total(config: MarglikConfig, inv: InvarianceConfig, steps_per_epoch: int) -> int:
    if inv.method == "augerino":
        return config.epochs * steps_per_epoch
    if inv.method == "none":
        return 1
    epochs = [e for e in range(1, config.epochs + 1) if config.is_marglik_epoch(e)]
    return max(1, sum(inv.n_eta_steps for e in epochs if e > inv.eta_burn_in))


def train_invariant(
    model: InvariantModel,
    train_data: tuple[Tensor, Tensor],
    config: MarglikConfig,
    invariance: InvarianceConfig,
    *,
    resume: str | Path | None = None,
) -> InvarianceResult:
    """Train an invariant model's weights, prior precisions and augmentation parameters eta.

    Weight steps are those of :func:`ella.marglik.train_marglik` on ``f_hat`` with fresh draws
    per minibatch (``invariance.n_samples`` per example), eta detached except for Augerino.
    After every marginal-likelihood epoch (``config.is_marglik_epoch``), for ``"lila"``:

    1. with ``eta_gradient="full"``, after ``invariance.eta_burn_in`` epochs,
       ``n_eta_steps`` Adam steps on eta (own optimiser and cosine schedule) with the gradient
       of ``-log p(D | delta, eta) / N``, each through a differentiable refit (also stepping
       the log precisions);
    2. the Laplace approximation is fitted at the current eta on fresh fixed draws and
       ``config.n_hyper_steps`` refit-free Adam steps are taken on the log precisions (as in
       ``train_marglik``); its ``-log p(D | delta, eta)`` after them selects the best state
       (saved with the eta it was computed at);
    3. with ``eta_gradient="stochastic"``, after the burn-in, ``n_eta_steps`` Adam steps on
       eta by section 4.3, the fit of step 2 being the preconditioner and each step's
       per-example terms coming from ``eta_batch_size`` random examples.

    ``"none"`` does step 2 only (eta frozen); ``"augerino"`` learns eta in the weight steps and
    evaluates no marginal likelihood (its result is the final state). NaN stop, checkpoints
    (including eta, its optimiser and the draws' random state), resume, tqdm and the
    best-by-marginal-likelihood state behave as in ``train_marglik``.

    Raises:
        TypeError, ValueError: for a model that is not an :class:`InvariantModel` or malformed
            data.
        NonFiniteLossError: as in ``train_marglik`` (eta is restored with the model).
    """
    if not isinstance(model, InvariantModel):
        raise TypeError(f"`model` must be an InvariantModel, got {type(model).__name__}")
    if not isinstance(invariance, InvarianceConfig):
        raise TypeError("`invariance` must be an InvarianceConfig")
    x, y = _check_data(train_data)
    n = x.shape[0]
    aug = model.augmentation
    eta = aug.eta
    learn_eta = invariance.method in ("lila", "augerino")
    if learn_eta and not eta.requires_grad:
        raise ValueError(f"method {invariance.method!r} needs an augmentation with learnable eta")
    lila = invariance.method == "lila"
    augerino = invariance.method == "augerino"
    n_hyper = config.n_marglik_epochs() * (
        config.n_hyper_steps + (invariance.n_eta_steps if lila else 0)
    )
    run = _Run(
        model,
        config,
        n,
        learn_hyper=config.learn_hyper and not augerino,
        hyper_steps=n_hyper,
        weight_decay=invariance.augerino_weight_decay if augerino else 0.0,
        log=logger,
    )
    eta_optimizer = torch.optim.Adam([eta], lr=max(invariance.lr_eta, 1e-12))
    eta_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        eta_optimizer,
        T_max=_eta_steps_total(config, invariance, run.steps_per_epoch),
        eta_min=invariance.lr_eta_min,
    )
    draws = torch.Generator().manual_seed(invariance.seed)

    def eta_list() -> list[float]:
        return [float(v) for v in eta.detach()]

    run.carry(
        stateful={"eta_optimizer": eta_optimizer, "eta_scheduler": eta_scheduler},
        tensors={"eta": eta},
        generators={"rng_draws": draws},
        settings={"invariance": invariance},
        best={"eta": eta_list},
    )
    if resume is not None:
        run.load(resume)

    def batch_loss(index: Tensor, prec: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        eps = aug.sample_eps(index.numel(), invariance.n_samples, draws)
        use = eta if augerino else eta.detach()
        out = DrawAverage.forward(model, aug.apply(x[index], eps, use))
        nll = _nll(out, y[index], config)
        if augerino:
            return nll - invariance.augerino_weight * eta.pow(2).sum(), nll
        return run.map_loss(nll, prec), nll

    def after_step() -> None:
        if augerino:
            eta_optimizer.step()
            eta_scheduler.step()
        eta.grad = None

    def fresh_draws() -> list[tuple[Tensor, ...]]:
        eps_all = aug.sample_eps(n, invariance.n_samples, draws)
        return _split(x, eps_all, y, config.batch_size)

    def eta_steps(data, epoch: int, laplace: Laplace | None = None) -> dict[str, float]:
        return _eta_steps(
            run, data, x, y, invariance, eta_optimizer, eta_scheduler, draws, epoch, laplace
        )

    bar = run.epochs(f"invariance ({invariance.method})")
    for epoch in bar:
        record = run.weight_epoch(epoch, x.device, batch_loss, leaves=[eta], after_step=after_step)
        if config.is_marglik_epoch(epoch) and not augerino:
            data = fresh_draws()
            eta_now = lila and epoch > invariance.eta_burn_in
            if eta_now and invariance.eta_gradient == "full":
                record.update(eta_steps(data, epoch))
                data = fresh_draws()
            # fitted at the current eta, without a graph
            laplace = _fit(run, data, False, epoch)
            record.update(run.hyper_steps(laplace, epoch))
            run.consider(record["neg_log_marglik"], epoch)
            if eta_now and invariance.eta_gradient == "stochastic":
                # section 4.3: the fit just made (at the updated precisions) is the
                # preconditioner of this epoch's stochastic eta steps
                record.update(eta_steps(data, epoch, laplace))
        for name, v in zip(aug.names, eta_list()):
            record[f"eta/{name}"] = v
        record["lr_eta"] = eta_scheduler.get_last_lr()[0]
        run.end_epoch(epoch, record, bar)
    return run.result(InvarianceResult)


def _fit(run: _Run, data, differentiable: bool, epoch: int) -> Laplace:
    config = run.config
    return run.fit(
        lambda: invariant_laplace(
            run.model,
            data,
            config.likelihood,
            config.structure,
            differentiable=differentiable,
            sigma=config.sigma,
            temperature=config.temperature,
        ),
        epoch,
    )


def _eta_steps(
    run: _Run,
    data,
    x,
    y,
    inv: InvarianceConfig,
    eta_optimizer,
    eta_scheduler,
    draws,
    epoch: int,
    laplace: Laplace | None,
) -> dict:
    """``n_eta_steps`` Adam steps on eta (section 4, eq. 14); ``laplace``: the fit without a
    graph on ``data`` that preconditions the stochastic steps (section 4.3)."""
    model, config, n = run.model, run.config, run.n
    aug = model.augmentation
    eta = aug.eta
    leaves = list(run.log_prec.values())
    out: dict[str, float] = {}
    if inv.eta_gradient == "stochastic":
        assert laplace is not None
        prec = {g: v.detach().exp() for g, v in run.log_prec.items()}
    for step in range(inv.n_eta_steps):
        if inv.eta_gradient == "full":
            laplace = _fit(run, data, True, epoch)
            objective = run.neg_log_marglik(laplace) / n
            if not math.isfinite(float(objective.detach())):
                run.stop(epoch, "the marginal-likelihood objective is not finite")
            wrt = [eta] + (leaves if run.learn_hyper else [])
            grads = torch.autograd.grad(objective, wrt)
            eta.grad = grads[0]
            if run.learn_hyper:
                run.step_precisions(grads[1:])
            if step == 0:
                out["neg_log_marglik_eta"] = float(objective.detach()) * n
        else:
            m = n if inv.eta_batch_size is None else min(inv.eta_batch_size, n)
            if m < n:
                index = torch.randperm(n, generator=draws)[:m].to(x.device)
                eps = torch.cat([b[1] for b in data])[index]
                subset = _split(x[index], eps, y[index], config.batch_size)
            else:
                subset = data
            grad = eta_gradient(laplace, prec, model, subset, n_total=n) / n
            if not bool(torch.isfinite(grad).all()):
                run.stop(epoch, "the eta-gradient is not finite")
            eta.grad = grad
        eta_optimizer.step()
        eta_scheduler.step()
        eta.grad = None
    return out

"""Invariance learning (paper 001, section 4, eq. 14, and section 4.3, eq. 20): the
marginal-likelihood loop of :mod:`ella.marglik` (:class:`~ella.marglik.MarglikLoop`) with the
augmentation parameters eta as hyperparameters, and the Augerino baseline (Benton et al., 2020).

One class per method says what differs between them: :class:`_Fixed` (``"none"``: eta frozen,
the marginal likelihood evaluated for the precisions and the best state), :class:`_Lila`
(eta learned by the marginal likelihood, by full backpropagation or by the stochastic estimator
of section 4.3) and :class:`_Augerino` (eta learned in the weight steps).

Learning invariances on one's own data: the defaults of :class:`InvarianceConfig` are the
settings that move eta on rotated MNIST digits (the section-4.3 estimator with 12 eta steps of
M = 100 examples per marginal-likelihood epoch, S = 8, learning rate 0.1 cosine-annealed to
0.01). A run whose schedule gives eta fewer than :data:`MIN_ETA_STEPS` steps warns
(:class:`FewEtaStepsWarning`): eta then barely leaves its initial value. The progress bar
(``MarglikConfig(progress=True)``) shows eta; a ``MarglikConfig(checkpoint=path)`` without
``checkpoint_every`` checkpoints after every epoch, so a stopped run continues with
``train_invariant(..., resume=path)``. A component of eta beyond its augmentation's meaningful
range (:attr:`~ella.invariance.Augmentation.limits`) is reported once in the log and in
``InvarianceResult.eta_diverged`` (and, with ``InvarianceConfig(clamp_eta=True)``, projected
back after every eta step).

Training data come in the two forms of :func:`ella.marglik.train_marglik` (a pair of tensors, or
a re-iterable of ``(x, y)`` batches such as a ``DataLoader``), read through the same
:func:`ella.marglik.as_source`; :func:`train_invariant` says what streams and what is held.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

import symdisc.runtime as runtime
from ella.invariance.laplace import eta_gradient, invariant_laplace
from ella.invariance.models import DrawAverage, InvariantModel
from ella.laplace import Laplace
from ella.laplace.base import Batch
from ella.marglik import (
    MarglikConfig,
    MarglikLoop,
    MarglikResult,
    StreamSource,
    TensorSource,
    TrainData,
    as_source,
    model_device,
)
from ella.summary import summary_repr

__all__ = [
    "InvarianceMethod",
    "InvarianceConfig",
    "InvarianceResult",
    "train_invariant",
    "FewEtaStepsWarning",
    "MIN_ETA_STEPS",
    "count_eta_steps",
]

logger = logging.getLogger(__name__)

MIN_ETA_STEPS = 50
"""Fewer eta steps in a whole run than this make :func:`train_invariant` warn
(:class:`FewEtaStepsWarning`). A floor, not a guarantee: measured on rotated MNIST digits with
an MLP and the default learning rate 0.1, 60 steps took the rotation component from 0 to 1.2
rad (N = 200, 14x14 pixels, 12 epochs) and 216 steps to 0.9 rad (N = 500, 28x28, 100 epochs),
while 48 steps in 30 epochs left it at 0.01 (N = 500), as the old defaults' 4 steps left it at
0.11."""


class FewEtaStepsWarning(UserWarning):
    """:func:`train_invariant` was given a schedule with fewer than :data:`MIN_ETA_STEPS` eta
    steps (:func:`count_eta_steps`): eta will barely move from its initial value.

    Silence it with ``warnings.simplefilter("ignore", FewEtaStepsWarning)`` where a short run
    is meant (tests, quick checks)."""


InvarianceMethod = Literal["lila", "augerino", "none"]
EtaGradient = Literal["full", "stochastic"]

Draws = Iterable[tuple[Tensor, Tensor, Tensor]]
"""``(x, eps, y)`` batches: inputs (B, ...), draws eps (B, S, k), targets (B, ...)."""


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
        n_samples: S, draws per example for the weight steps and the marginal likelihood
            (the cost of every pass grows linearly with it).
        lr_eta: Adam learning rate of eta, cosine-annealed to ``lr_eta_min`` over all eta steps.
        lr_eta_min: final learning rate of eta.
        eta_burn_in: epochs before the first eta step (lila; Augerino steps from the start).
            The eta steps come after marginal-likelihood epochs only, so the
            ``MarglikConfig.burn_in`` delays them too.
        n_eta_steps: eta steps per marginal-likelihood epoch (lila). A whole lila run takes
            ``n_eta_steps`` times the marginal-likelihood epochs after ``eta_burn_in``
            (:func:`count_eta_steps`); fewer than :data:`MIN_ETA_STEPS` warn.
        eta_gradient: ``"full"``: every eta step backpropagates through one graph of the whole
            Laplace approximation (refit at the current eta; for small problems), together
            with one step on the log prior precisions; ``"stochastic"``: section 4.3, the
            preconditioner fitted once per marginal-likelihood epoch and per-step gradients
            from ``eta_batch_size`` random examples (:func:`eta_gradient`).
        eta_batch_size: M, examples per stochastic eta step (None: all N); a random subset of
            the training set drawn anew for every step (:func:`train_invariant`).
        augerino_weight: weight of ``-||eta||^2`` in the Augerino loss.
        augerino_weight_decay: Adam weight decay of the weights for Augerino.
        seed: seed of the augmentation draws (the minibatch order uses the MarglikConfig's).
        clamp_eta: project eta into the augmentation's meaningful ranges
            ``[-limit_i, limit_i]`` (:attr:`~ella.invariance.Augmentation.limits`) after every
            eta step, for every method. Off by default: the paper's Augerino keeps only its
            regulariser, and a component beyond its range is then reported
            (``InvarianceResult.eta_diverged``), not bounded.

    Defaults (changed in issue 15 from ``n_samples=16, lr_eta=0.05, lr_eta_min=0,
    n_eta_steps=1, eta_gradient="full", eta_batch_size=None``, with which eta reached 0.11 rad
    in 30 epochs on rotated digits): the settings of ``experiments/transformed_digits.py``,
    which move eta on rotated MNIST. With the ``MarglikConfig`` defaults (100 epochs, a
    marginal likelihood every 5 after 10) a lila run takes 18 * 12 = 216 eta steps.

    A resume requires every setting equal to the checkpoint's.

    Raises:
        TypeError: for a setting of the wrong type; ValueError: for a value out of range.
    """

    method: InvarianceMethod = "lila"
    n_samples: int = 8
    lr_eta: float = 0.1
    lr_eta_min: float = 0.01
    eta_burn_in: int = 10
    n_eta_steps: int = 12
    eta_gradient: EtaGradient = "stochastic"
    eta_batch_size: int | None = 100
    augerino_weight: float = 1e-2
    augerino_weight_decay: float = 1e-4
    seed: int = 0
    clamp_eta: bool = False

    def __post_init__(self) -> None:
        runtime.check_choice(self.method, "method", InvarianceMethod)
        runtime.check_choice(self.eta_gradient, "eta_gradient", EtaGradient)
        runtime.check_int(self.n_samples, "n_samples", minimum=1)
        runtime.check_int(self.n_eta_steps, "n_eta_steps", minimum=1)
        runtime.check_int(self.eta_burn_in, "eta_burn_in", minimum=0)
        runtime.check_int(self.seed, "seed", minimum=0)
        runtime.check_optional_int(self.eta_batch_size, "eta_batch_size", minimum=1)
        runtime.check_bool(self.clamp_eta, "clamp_eta")
        for name in ("lr_eta", "augerino_weight", "augerino_weight_decay", "lr_eta_min"):
            runtime.check_float(getattr(self, name), name, nonnegative=True)


@dataclass(repr=False)
class InvarianceResult(MarglikResult):
    """:class:`ella.marglik.MarglikResult` plus eta: ``best_eta`` (with the best state; the
    final eta when the marginal likelihood was never evaluated), ``eta`` (final) and
    ``eta_diverged``: the components whose ``|eta_i|`` went beyond their augmentation's
    meaningful range (:attr:`~ella.invariance.Augmentation.limits`) at some point of the run,
    in the order they did (empty when none did; with ``clamp_eta`` they were projected back).
    History records carry ``eta/{component}`` and ``lr_eta`` after every epoch, and
    ``eta_diverged`` (the components that first went beyond their range in that epoch) in an
    epoch where one did."""

    best_eta: list[float] | None = None
    eta: list[float] | None = None
    eta_diverged: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return summary_repr(self)


def count_eta_steps(
    config: MarglikConfig, invariance: InvarianceConfig, steps_per_epoch: int
) -> int:
    """The eta steps a whole :func:`train_invariant` run takes: for ``"lila"``,
    ``n_eta_steps`` times the marginal-likelihood epochs after ``eta_burn_in``; for
    ``"augerino"``, one per weight step (``epochs * steps_per_epoch``, the minibatches per
    epoch); 0 for ``"none"``.

    Example:
        >>> count_eta_steps(MarglikConfig(epochs=30), InvarianceConfig(n_eta_steps=1), 4)
        4
    """
    runtime.check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
    if invariance.method == "augerino":
        return config.epochs * steps_per_epoch
    if invariance.method == "none":
        return 0
    epochs = range(invariance.eta_burn_in + 1, config.epochs + 1)
    return sum(config.is_marglik_epoch(e) for e in epochs) * invariance.n_eta_steps


def _warn_few_eta_steps(
    config: MarglikConfig, invariance: InvarianceConfig, steps_per_epoch: int
) -> None:
    """:class:`FewEtaStepsWarning` when the run's eta steps are below :data:`MIN_ETA_STEPS`."""
    steps = count_eta_steps(config, invariance, steps_per_epoch)
    if invariance.method == "none" or steps >= MIN_ETA_STEPS:
        return
    if invariance.method == "lila":
        how = (
            f"lila steps eta n_eta_steps={invariance.n_eta_steps} times after each "
            f"marginal-likelihood epoch after eta_burn_in={invariance.eta_burn_in} "
            f"(epochs={config.epochs}, burn_in={config.burn_in}, "
            f"marglik_every={config.marglik_every}); raise epochs or n_eta_steps, or lower "
            f"marglik_every, burn_in or eta_burn_in"
        )
    else:
        how = (
            f"augerino steps eta once per minibatch (epochs={config.epochs} times "
            f"{steps_per_epoch} minibatches); raise epochs or lower batch_size"
        )
    warnings.warn(
        f"train_invariant will take only {steps} eta steps (fewer than "
        f"MIN_ETA_STEPS={MIN_ETA_STEPS}), so eta will barely move from its initial value: {how}",
        FewEtaStepsWarning,
        stacklevel=3,
    )


def train_invariant(
    model: InvariantModel,
    train_data: TrainData,
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
    (including ``eta``, ``eta_optimizer``, ``eta_scheduler``, the draws' random state
    ``rng_draws``, ``eta_diverged`` and the ``invariance`` settings), resume, tqdm and the
    best-by-marginal-likelihood state behave as in ``train_marglik``, except:

    * a ``config.checkpoint`` with ``checkpoint_every=0`` is written after every epoch (in
      ``train_marglik`` it would never be written), and the log says where it goes; a run
      stopped by any exception (``KeyboardInterrupt`` included) logs the last checkpoint
      written, which ``resume=`` continues bit for bit (for tensors);
    * the progress bar shows eta (``eta=...``, :func:`ella.marglik.MarglikLoop`'s postfix);
    * before the first epoch, a schedule with fewer than :data:`MIN_ETA_STEPS` eta steps
      (:func:`count_eta_steps`) warns with a :class:`FewEtaStepsWarning` naming the settings
      that raise it;
    * after every epoch, a component with ``|eta_i|`` beyond its augmentation's limit
      (:attr:`~ella.invariance.Augmentation.limits`; checked after every eta step) is logged
      once as a warning and recorded (``InvarianceResult.eta_diverged``); with
      ``invariance.clamp_eta`` eta is also projected back into the limits after every eta
      step.

    Training data, the two forms of :func:`ella.marglik.train_marglik` (the same N, batches
    per epoch, checks, device moves and checkpointed ``DataLoader`` generator):

    * ``(inputs (N, ...), targets (N, ...))`` tensors: weight minibatches of
      ``config.batch_size`` in a fresh seeded permutation per epoch, fits in data order;
    * any re-iterable of ``(inputs (B, ...), targets (B, ...))`` batches (a list, a
      ``DataLoader``): the weight steps take its batches in its order, and a loader that
      yields the same minibatches in the same order as the tensors' permutations gives the
      same result.

    What streams and what is held. Every pass below reads the batches one at a time:

    * weight steps: one pass per epoch, draws made per batch, nothing held;
    * the fits of steps 2 (and 1): one pass each. The fixed draws eps (N, S, k) of a fit are
      drawn at once for all N examples and held (N * S * k numbers, small beside the data);
      the b-th batch of a pass gets the next B rows, so a pass pairs draws with examples by
      position. A fit without a graph (step 2, ``"none"``, the section-4.3 preconditioner)
      holds nothing beyond a batch; the differentiable refit of step 1 (``"full"``) keeps
      every batch's graph to eta until its step is taken (all N examples times S draws of
      activations: for small problems; use ``"stochastic"`` for large ones);
    * stochastic eta steps (step 3): with ``eta_batch_size=None`` each step is one more pass
      (one batch's graph at a time). With M < N, each step draws M distinct positions of a
      pass uniformly at random (``torch.randperm(N)[:M]`` from the draws' generator), reads
      one pass and keeps the examples at those positions with their rows of eps (M examples
      held), in the order drawn, in minibatches of ``config.batch_size``. Any re-iterable
      works (no map-style data set is needed), and every pass visiting the N examples once
      makes the subset uniformly random. For tensors (and any iterable that repeats its
      order) the positions are examples and eps their draws of the fit, as in section 4.3; a
      loader that reshuffles every pass pairs the preconditioner's fit, the subset and the
      draws differently in each pass (each pairing is an equally valid independent draw, but
      the M = N gradient is then not exactly the full-batch one at the fit's draws).

    A pass that yields more or fewer than N points raises ValueError.

    Raises:
        TypeError, ValueError: for a model that is not an :class:`InvariantModel`, malformed
            data (as ``train_marglik``), a learning method without a learnable eta, or a
            ``resume`` checkpoint that does not fit (before anything changes).
        NonFiniteLossError: as in ``train_marglik``, or for a non-finite eta-gradient (eta is
            restored with the model).
    """
    runtime.check_instance(model, "model", InvariantModel)
    runtime.check_instance(config, "config", MarglikConfig)
    runtime.check_instance(invariance, "invariance", InvarianceConfig)
    source = as_source(train_data, config.batch_size, model_device(model))
    if invariance.method != "none" and not model.augmentation.eta.requires_grad:
        raise ValueError(f"method {invariance.method!r} needs an augmentation with learnable eta")
    if config.checkpoint is not None and config.checkpoint_every == 0:
        config = dataclasses.replace(config, checkpoint_every=1)
    training = _METHODS[invariance.method](model, source, config, invariance)
    if resume is not None:
        training.run.resume(resume)
    _warn_few_eta_steps(config, invariance, source.steps_per_epoch)
    if config.checkpoint is not None:
        logger.info(
            "train_invariant: checkpoint every %d epoch(s) to %s (continue a stopped run with "
            "resume=%r)",
            config.checkpoint_every,
            config.checkpoint,
            str(config.checkpoint),
        )
    try:
        for epoch in training.run:
            training.run.end_epoch(training.epoch(epoch))
    except BaseException:
        _log_stop(training.run, config)
        raise
    result = training.run.result(InvarianceResult)
    result.eta_diverged = list(training.diverged)  # type: ignore[attr-defined]
    return result  # type: ignore[return-value]


def _log_stop(run: MarglikLoop, config: MarglikConfig) -> None:
    """Log where a stopped run can be continued from."""
    if config.checkpoint is None:
        logger.warning(
            "train_invariant stopped in epoch %d; no checkpoint was set (pass "
            "MarglikConfig(checkpoint=path) to be able to continue a stopped run)",
            run.loop.current,
        )
    elif not Path(config.checkpoint).exists():
        logger.warning(
            "train_invariant stopped in epoch %d before any checkpoint was written",
            run.loop.current,
        )
    else:
        logger.warning(
            "train_invariant stopped in epoch %d; the last checkpoint is %s: continue with "
            "train_invariant(..., resume=%r)",
            run.loop.current,
            config.checkpoint,
            str(config.checkpoint),
        )


def _with_draws(x: Tensor, eps: Tensor, y: Tensor, batch_size: int) -> list[tuple[Tensor, ...]]:
    """``(x, eps, y)`` batches of ``batch_size`` in data order."""
    return [
        (x[i : i + batch_size], eps[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, x.shape[0], batch_size)
    ]


class _FixedDraws:
    """The training data with fixed draws ``eps`` (N, S, k): every iteration is one pass of
    ``source.fit_batches()``, its b-th batch ``(x (B, ...), y)`` paired with the next B rows of
    ``eps`` as ``(x, eps (B, S, k), y)`` (re-iterable; nothing held beyond a batch)."""

    def __init__(self, source: TensorSource | StreamSource, eps: Tensor) -> None:
        self.source, self.eps = source, eps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        n, pos = self.eps.shape[0], 0
        for x, y in self.source.fit_batches():
            end = pos + x.shape[0]
            if end > n:
                raise ValueError(f"`train_data` yielded more than its N = {n} points in a pass")
            yield x, self.eps[pos:end], y
            pos = end
        if pos != n:
            raise ValueError(f"`train_data` yielded {pos} points in a pass, not its N = {n}")


class _Fixed:
    """Method ``"none"``, and what every method shares: the :class:`MarglikLoop` ``run`` with
    eta, its Adam optimiser and cosine schedule and the draws' generator checkpointed along;
    weight steps on fresh draws with eta detached; after every marginal-likelihood epoch the
    Laplace fit at the current eta on fresh draws, the precision steps and the best state."""

    def __init__(
        self,
        model: InvariantModel,
        source: TensorSource | StreamSource,
        config: MarglikConfig,
        inv: InvarianceConfig,
    ) -> None:
        self.model, self.source, self.config, self.inv = model, source, config, inv
        self.aug = model.augmentation
        self.eta = self.aug.eta
        self.run = MarglikLoop(
            model,
            config,
            source.n,
            steps_per_epoch=source.steps_per_epoch,
            desc=f"invariance ({inv.method})",
            learn_hyper=self.learns_precisions(),
            hyper_steps=config.n_marglik_epochs() * self.hyper_steps_per_epoch(),
            weight_decay=self.weight_decay(),
            settings={"invariance": inv},
            log=logger,
        )
        self.eta_optimizer = torch.optim.Adam([self.eta], lr=max(inv.lr_eta, 1e-12))
        self.eta_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.eta_optimizer, T_max=self.eta_steps(), eta_min=inv.lr_eta_min
        )
        self.draws = torch.Generator().manual_seed(inv.seed)
        self.run.track(
            eta_optimizer=self.eta_optimizer,
            eta_scheduler=self.eta_scheduler,
            eta=self.eta,
            rng_draws=self.draws,
        )
        if source.generator is not None:
            self.run.track(rng_loader=source.generator)
        self.run.keep_with_best(eta=self.eta_values)
        limits = self.aug.limits
        if limits is None:
            limits = (float("inf"),) * self.aug.k
        if len(limits) != self.aug.k:
            raise ValueError(
                f"the augmentation's `limits` must have one entry per component of eta "
                f"({self.aug.k}), got {len(limits)}"
            )
        self.limits = torch.tensor(limits, dtype=self.eta.dtype, device=self.eta.device)
        self.beyond = torch.zeros(self.aug.k, dtype=torch.bool, device=self.eta.device)
        self.run.loop.values["eta_diverged"] = []

    @property
    def diverged(self) -> list[str]:
        """The components of eta that went beyond their limits so far, in order."""
        return self.run.loop.values["eta_diverged"]

    # -- what differs between the methods ------------------------------------------------

    def learns_precisions(self) -> bool:
        return self.config.learn_hyper

    def hyper_steps_per_epoch(self) -> int:
        """Steps on the log precisions per marginal-likelihood epoch (their schedule's
        length)."""
        return self.config.n_hyper_steps

    def weight_decay(self) -> float:
        return 0.0

    def eta_steps(self) -> int:
        """Length of eta's cosine schedule: the run's eta steps (:func:`count_eta_steps`), at
        least 1."""
        return max(1, count_eta_steps(self.config, self.inv, self.source.steps_per_epoch))

    def batch_loss(self, batch: Batch, prec: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(loss, nll)`` of the minibatch ``(x, y)`` on fresh draws, eta detached."""
        x, y = batch
        nll = self.run.nll(self.draw_average(x, self.eta.detach()), y)
        return self.run.map_loss(nll, prec), nll

    def after_step(self) -> None:
        self.eta.grad = None

    def eta_moved(self) -> None:
        """After every eta step: note the components beyond their limits (without a device
        sync) and, with ``clamp_eta``, project eta back into them."""
        with torch.no_grad():
            self.beyond |= self.eta.abs() > self.limits
            if self.inv.clamp_eta:
                self.eta.copy_(torch.maximum(torch.minimum(self.eta, self.limits), -self.limits))

    def check_limits(self) -> list[str]:
        """At the end of an epoch: the components newly beyond their limits (logged once as
        a warning and added to :attr:`diverged`)."""
        with torch.no_grad():
            self.beyond |= self.eta.abs() > self.limits
        new = [
            name
            for name, out in zip(self.aug.names, self.beyond.tolist())
            if out and name not in self.diverged
        ]
        if new:
            self.diverged.extend(new)
            limits = {name: float(v) for name, v in zip(self.aug.names, self.limits)}
            logger.warning(
                "eta diverged in epoch %d: |eta| of %s went beyond the meaningful range %s "
                "(eta now %s)%s",
                self.run.loop.current,
                ", ".join(new),
                {name: round(limits[name], 4) for name in new},
                dict(zip(self.aug.names, (round(v, 4) for v in self.eta_values()))),
                "; projected back (clamp_eta)" if self.inv.clamp_eta else "",
            )
        return new

    def marglik_epoch(self, epoch: int) -> dict[str, float]:
        """Fit at the current eta on fresh draws, precision steps, best state; the record's
        entries."""
        return self.fit_and_step(self.fresh_draws())[1]

    # -- shared steps --------------------------------------------------------------------

    def epoch(self, epoch: int) -> dict[str, float]:
        """One epoch: weight steps, then the marginal-likelihood steps when due; its record."""
        record = self.run.weight_epoch(
            self.batch_loss,
            batches=self.source.epoch(self.run),
            leaves=[self.eta],
            after_step=self.after_step,
        )
        if self.config.is_marglik_epoch(epoch):
            record.update(self.marglik_epoch(epoch))
        for name, v in zip(self.aug.names, self.eta_values()):
            record[f"eta/{name}"] = v
        record["lr_eta"] = self.eta_scheduler.get_last_lr()[0]
        new = self.check_limits()
        if new:
            record["eta_diverged"] = new  # type: ignore[assignment]
        return record

    def eta_values(self) -> list[float]:
        return [float(v) for v in self.eta.detach()]

    def draw_average(self, x: Tensor, eta: Tensor) -> Tensor:
        """``f_hat`` of the inputs ``x`` (B, ...) on ``n_samples`` fresh draws at ``eta``."""
        eps = self.aug.sample_eps(x.shape[0], self.inv.n_samples, self.draws)
        return DrawAverage.forward(self.model, self.aug.apply(x, eps, eta))

    def fresh_draws(self) -> _FixedDraws:
        """The N examples with ``n_samples`` fresh draws each (drawn now, held), streamed."""
        eps = self.aug.sample_eps(self.source.n, self.inv.n_samples, self.draws)
        return _FixedDraws(self.source, eps)

    def fit(self, data: Draws, *, differentiable: bool) -> Laplace:
        """:func:`invariant_laplace` on ``data`` (with a graph to eta if ``differentiable``)."""
        c = self.config
        return self.run.fit_laplace(
            lambda: invariant_laplace(
                self.model,
                data,
                c.likelihood,
                c.structure,
                differentiable=differentiable,
                sigma=c.sigma,
                temperature=c.temperature,
            )
        )

    def fit_and_step(self, data: Draws) -> tuple[Laplace, dict[str, float]]:
        """The fit at the current eta (without a graph), the precision steps and the best
        state; the fit and the record's entries."""
        laplace = self.fit(data, differentiable=False)
        out = self.run.hyper_steps(laplace)
        self.run.consider(out["neg_log_marglik"])
        return laplace, out

    def step_eta(self, grad: Tensor | None = None) -> None:
        """One Adam step on eta with this gradient (None: the one backpropagated into
        ``eta.grad``), the schedule's step, and the limits' check (:meth:`eta_moved`)."""
        if grad is not None:
            self.eta.grad = grad
        self.eta_optimizer.step()
        self.eta_scheduler.step()
        self.eta.grad = None
        self.eta_moved()


class _Lila(_Fixed):
    """Method ``"lila"``: eta by the marginal likelihood (section 4, eq. 14) after
    ``eta_burn_in`` epochs, by full backpropagation through a refit before the fit of the
    epoch or by the section-4.3 estimator after it."""

    def hyper_steps_per_epoch(self) -> int:
        return self.config.n_hyper_steps + self.inv.n_eta_steps

    def marglik_epoch(self, epoch: int) -> dict[str, float]:
        if epoch <= self.inv.eta_burn_in:
            return super().marglik_epoch(epoch)
        out: dict[str, float] = {}
        data = self.fresh_draws()
        if self.inv.eta_gradient == "full":
            out.update(self.full_eta_steps(data))
            data = self.fresh_draws()
        laplace, fitted = self.fit_and_step(data)
        out.update(fitted)
        if self.inv.eta_gradient == "stochastic":
            # section 4.3: the fit just made (at the updated precisions) is the preconditioner
            # of this epoch's stochastic eta steps
            self.stochastic_eta_steps(data, laplace)
        return out

    def full_eta_steps(self, data: _FixedDraws) -> dict[str, float]:
        """``n_eta_steps`` Adam steps on eta, each with the gradient of ``-log p(D | delta,
        eta) / N`` through a differentiable refit on ``data`` (one pass, whose graph is held
        until the step; and one step on the log precisions with theirs when they are learned);
        the first objective's value."""
        run, n = self.run, self.run.n
        wrt = [self.eta] + (list(run.log_prec.values()) if run.learn_hyper else [])
        out: dict[str, float] = {}
        for step in range(self.inv.n_eta_steps):
            laplace = self.fit(data, differentiable=True)
            objective = run.neg_log_marglik(laplace) / n
            run.loop.check_finite(objective, "the marginal-likelihood objective")
            grads = torch.autograd.grad(objective, wrt)
            if run.learn_hyper:
                run.step_precisions(grads[1:])
            if step == 0:
                out["neg_log_marglik_eta"] = float(objective.detach()) * n
            self.step_eta(grads[0])
        return out

    def stochastic_eta_steps(self, data: _FixedDraws, laplace: Laplace) -> None:
        """``n_eta_steps`` Adam steps on eta by :func:`eta_gradient` (section 4.3, eq. 20),
        preconditioned by ``laplace`` (fitted without a graph on ``data``), each from
        ``eta_batch_size`` random examples of ``data`` (all of them, streamed, for None)."""
        n = self.run.n
        prec = self.run.precisions()
        m = n if self.inv.eta_batch_size is None else min(self.inv.eta_batch_size, n)
        for _ in range(self.inv.n_eta_steps):
            subset = data if m == n else self.random_subset(data, m)
            grad = eta_gradient(laplace, prec, self.model, subset, n_total=n) / n
            self.run.loop.check_finite(grad, "the eta-gradient")
            self.step_eta(grad)

    def random_subset(self, data: _FixedDraws, m: int) -> list[tuple[Tensor, ...]]:
        """``m`` random examples of ``data`` with their draws: the positions
        ``torch.randperm(N, generator=draws)[:m]`` of one pass, kept while it streams, in the
        order drawn and in minibatches of ``config.batch_size`` (:func:`train_invariant`)."""
        n = self.run.n
        index = torch.randperm(n, generator=self.draws)[:m]
        rank = torch.full((n,), -1, dtype=torch.long)
        rank[index] = torch.arange(m)
        ranks, xs, epss, ys = [], [], [], []
        pos = 0
        for x, eps, y in data:
            r = rank[pos : pos + x.shape[0]]
            pos += x.shape[0]
            keep = r >= 0
            if bool(keep.any()):
                ranks.append(r[keep])
                xs.append(x[keep.to(x.device)])
                epss.append(eps[keep.to(eps.device)])
                ys.append(y[keep.to(y.device)])
        order = torch.argsort(torch.cat(ranks))
        x, eps, y = (torch.cat(parts)[order.to(parts[0].device)] for parts in (xs, epss, ys))
        return _with_draws(x, eps, y, self.config.batch_size)


class _Augerino(_Fixed):
    """Method ``"augerino"`` (Benton et al., 2020): eta in the weight steps by the training
    loss minus ``augerino_weight * ||eta||^2``, weight decay instead of a prior, no marginal
    likelihood."""

    def learns_precisions(self) -> bool:
        return False

    def weight_decay(self) -> float:
        return self.inv.augerino_weight_decay

    def batch_loss(self, batch: Batch, prec: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        nll = self.run.nll(self.draw_average(x, self.eta), y)
        return nll - self.inv.augerino_weight * self.eta.pow(2).sum(), nll

    def after_step(self) -> None:
        self.step_eta()

    def marglik_epoch(self, epoch: int) -> dict[str, float]:
        return {}


_METHODS: dict[str, type[_Fixed]] = {"none": _Fixed, "lila": _Lila, "augerino": _Augerino}

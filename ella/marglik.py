"""Online marginal-likelihood optimisation of per-layer, per-path prior precisions (paper 000,
section 4 and appendices D.2, F.6).

:func:`train_marglik` alternates, as in section 4 of paper 000,

* MAP steps on the weights theta over minibatches, minimising the negative log joint
  ``L_theta = -log p(D | theta) / T - log p(theta | delta)`` with one Gaussian prior
  ``N(0, 1/delta_g I)`` per prior group g (:func:`ella.laplace.prior_groups`), and
* every ``marglik_every`` epochs after a burn-in, ``n_hyper_steps`` Adam steps on the log prior
  precisions ``eta_g = log delta_g`` minimising ``-log p(D | delta) / N``, the Laplace-GGN log
  marginal likelihood (eq. 9) of a :class:`ella.laplace.Laplace` fitted once at the current
  weights (refit-free in the precisions).

:class:`MarglikLoop` is that loop's state and steps, on the shared
:class:`symdisc.runtime.TrainingLoop` (checkpoints, validated resume, NaN stop, progress bar);
:func:`ella.invariance.train_invariant` builds on it too.

:func:`effective_parameters` and :func:`learned_layer_report` measure the outcome (appendix D.2,
table 4): MacKay's effective number of parameters of every group.

Scaling of the weight objective: per minibatch B of the N training points the loss is the
unbiased estimate of ``L_theta / N``,

    mean_{n in B} NLL(x_n, y_n) / T + 1/(2N) sum_g delta_g ||theta_g||^2,

i.e. ``N * mean NLL / T + 1/2 sum_g delta_g ||theta_g||^2`` divided by N, so that learning rates
do not depend on the data set size. The NLL includes its normaliser (for regression
``||y - f||^2 / (2 sigma^2) + C/2 log(2 pi sigma^2)`` per point), which changes no gradient.

Training data (:func:`train_marglik`): a pair of tensors held in memory, or any re-iterable of
``(x, y)`` minibatches (a ``torch.utils.data.DataLoader`` included) that is streamed, never
collected: the MAP epochs read one pass each, every Laplace fit one more (section 6 and F.6 of
paper 000 train on CIFAR-10 in minibatches of 128 with augmented MAP steps; ``augment``).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

import symdisc.runtime as runtime
from ella.laplace import (
    ROOT_GROUP,
    Laplace,
    Likelihood,
    PriorPrecision,
    Structure,
    layer_paths,
    prior_groups,
)
from ella.laplace.base import Batch, iter_batches
from ella.summary import summary_repr
from symdisc.curvature import loss_value
from symdisc.runtime import NonFiniteLossError

__all__ = [
    "MarglikConfig",
    "MarglikLoop",
    "MarglikResult",
    "NonFiniteLossError",
    "train_marglik",
    "TrainData",
    "TensorSource",
    "StreamSource",
    "as_source",
    "model_device",
    "effective_parameters",
    "relative_effective_parameters",
    "learned_layer_report",
]

logger = logging.getLogger(__name__)

OptimizerName = Literal["adam", "sgd"]

TrainData = tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]]
"""What :func:`train_marglik` trains on: ``(inputs (N, ...), targets (N, ...))`` in memory, or a
re-iterable of ``(inputs (B, ...), targets (B, ...))`` minibatches."""


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarglikConfig:
    """Settings of :func:`train_marglik` (defaults: paper 000, appendix F.6).

    Attributes:
        epochs: passes over the training data (a resumed run continues up to this count).
        batch_size: points per minibatch; every epoch visits all N points in the order of
            ``torch.randperm(N, generator=g)`` with ``g = torch.Generator().manual_seed(seed)``
            drawn once per epoch (the last minibatch may be smaller). Used for training data
            held as tensors; an iterable of batches brings its own batches and order.
        optimizer: ``"adam"`` (default betas) or ``"sgd"`` (with ``momentum``, default none)
            for the weights.
        momentum: heavy-ball momentum of ``"sgd"`` in [0, 1) (paper 001, appendix B.3: 0.9 for
            the CIFAR-10 ResNets); must stay 0 with ``"adam"``.
        nesterov: Nesterov momentum for ``"sgd"`` (needs ``momentum > 0``).
        lr: learning rate of the weights, cosine-annealed to 0 over all ``epochs * ceil(N /
            batch_size)`` steps (``CosineAnnealingLR``, stepped once per minibatch; for an
            iterable of batches ``epochs`` times its number of batches per epoch).
        lr_hyper: Adam learning rate of the log prior precisions, cosine-annealed to 0 over all
            hyperparameter steps of the run.
        n_hyper_steps: Adam steps on the log precisions per marginal-likelihood evaluation.
        marglik_every: F; the Laplace approximation is fitted after epoch e (1-based) when
            ``e > burn_in`` and ``(e - burn_in) % F == 0``.
        burn_in: epochs of MAP training before the first marginal-likelihood evaluation.
        structure: curvature of the Laplace approximation: ``"kron"``, ``"full"`` or ``"diag"``.
        likelihood: ``"classification"`` or ``"regression"`` (see :class:`ella.laplace.Laplace`).
        sigma: observation noise of the regression likelihood.
        temperature: T of the tempered likelihood, in both the weight objective and the Laplace
            approximation.
        learn_hyper: ``False``: MAP training with the precisions frozen at
            ``init_prior_precision`` (the marginal likelihood is still evaluated on the same
            schedule, for model selection and logging, without changing any weight).
        init_prior_precision: initial delta of every group (1: unit prior variances).
        checkpoint_every: epochs between checkpoints (0: none).
        checkpoint: path of the checkpoint file (written atomically, read by ``resume``).
        seed: seed of the minibatch order (training data held as tensors).
        progress: show a tqdm progress bar over epochs.

    On resume, every setting must equal the checkpoint's except ``epochs`` (the schedules keep
    their saved length), ``progress``, ``checkpoint`` and ``checkpoint_every``.

    Raises:
        TypeError: for a setting of the wrong type (a bool is not an int).
        ValueError: for a value out of range, an unknown option, or ``checkpoint_every > 0``
            without a ``checkpoint``.
    """

    epochs: int = 100
    batch_size: int = 128
    optimizer: OptimizerName = "adam"
    momentum: float = 0.0
    nesterov: bool = False
    lr: float = 0.01
    lr_hyper: float = 0.1
    n_hyper_steps: int = 100
    marglik_every: int = 5
    burn_in: int = 10
    structure: Structure = "kron"
    likelihood: Likelihood = "classification"
    sigma: float = 1.0
    temperature: float = 1.0
    learn_hyper: bool = True
    init_prior_precision: float = 1.0
    checkpoint_every: int = 0
    checkpoint: str | None = None
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "n_hyper_steps", "marglik_every"):
            runtime.check_int(getattr(self, name), name, minimum=1)
        for name in ("burn_in", "checkpoint_every", "seed"):
            runtime.check_int(getattr(self, name), name, minimum=0)
        for name in ("lr", "lr_hyper", "sigma", "temperature", "init_prior_precision"):
            runtime.check_float(getattr(self, name), name, positive=True)
        runtime.check_choice(self.optimizer, "optimizer", OptimizerName)
        runtime.check_float(self.momentum, "momentum", nonnegative=True)
        runtime.check_bool(self.nesterov, "nesterov")
        if self.momentum >= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum!r}")
        if self.optimizer != "sgd" and (self.momentum or self.nesterov):
            raise ValueError(
                f"`momentum` and `nesterov` apply to optimizer='sgd' only, got "
                f"optimizer={self.optimizer!r} with momentum={self.momentum!r}, "
                f"nesterov={self.nesterov!r}"
            )
        if self.nesterov and not self.momentum:
            raise ValueError("`nesterov` needs `momentum` > 0, got momentum=0")
        runtime.check_choice(self.structure, "structure", Structure)
        runtime.check_choice(self.likelihood, "likelihood", Likelihood)
        runtime.check_bool(self.learn_hyper, "learn_hyper")
        runtime.check_bool(self.progress, "progress")
        if self.checkpoint is not None:
            runtime.check_instance(self.checkpoint, "checkpoint", (str, os.PathLike))
        elif self.checkpoint_every:
            raise ValueError("`checkpoint` must name a file when `checkpoint_every` > 0")

    def is_marglik_epoch(self, epoch: int) -> bool:
        """Whether the marginal likelihood is evaluated after ``epoch`` (1-based)."""
        return epoch > self.burn_in and (epoch - self.burn_in) % self.marglik_every == 0

    def n_marglik_epochs(self) -> int:
        """Number of marginal-likelihood evaluations in a full run."""
        return max(0, (self.epochs - self.burn_in) // self.marglik_every)


@dataclass(repr=False)
class MarglikResult:
    """What :func:`train_marglik` returns (the model itself holds the *final* weights).

    Attributes:
        best_state: ``state_dict`` copy of the model at its best (lowest) negative log marginal
            likelihood; the final state if the marginal likelihood was never evaluated.
        best_neg_log_marglik: that ``-log p(D | delta)`` (whole data set, not divided by N);
            ``None`` if never evaluated.
        best_epoch: epoch of the best state (the last epoch if never evaluated).
        best_precisions: ``{group: delta_g}`` that went with the best state.
        precisions: ``{group: delta_g}`` at the end of training.
        history: one dict per epoch: ``epoch``, ``train_loss`` (mean minibatch objective),
            ``nll`` (mean minibatch NLL), ``lr``; after a marginal-likelihood evaluation also
            ``neg_log_marglik_init`` (at the precisions before the hyperparameter steps),
            ``neg_log_marglik`` (after them) and ``prior_precision/{group}``.
    """

    best_state: dict[str, Tensor]
    best_neg_log_marglik: float | None
    best_epoch: int
    best_precisions: dict[str, float]
    precisions: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)

    def __repr__(self) -> str:
        return summary_repr(self)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def train_marglik(
    model: nn.Module,
    train_data: TrainData,
    config: MarglikConfig,
    *,
    resume: str | Path | None = None,
    augment: Callable[[Tensor], Tensor] | None = None,
) -> MarglikResult:
    """Train ``model`` by MAP and its prior precisions by the Laplace marginal likelihood.

    See the module docstring for the objectives and :class:`MarglikConfig` for the schedule.
    After every epoch the history gets one record; after a marginal-likelihood epoch a
    :class:`~ella.laplace.Laplace` is fitted once on the whole training set (with the model in
    ``eval()`` mode) and, if ``config.learn_hyper``, ``n_hyper_steps`` Adam steps are taken on
    the log precisions. The state with the lowest negative log marginal likelihood (after the
    steps) is kept.

    Training data, two forms:

    * ``(inputs (N, ...), targets (N, ...))`` tensors: moved to the model's device once;
      minibatches of ``config.batch_size`` in a fresh seeded permutation every epoch; the
      Laplace fit in minibatches of ``batch_size`` in data order.
    * any re-iterable of ``(inputs (B, ...), targets (B, ...))`` batches (a list, a
      ``torch.utils.data.DataLoader``, an object whose ``__iter__`` produces batches lazily;
      not a one-shot iterator such as a generator): streamed, never collected; each batch is
      checked and moved to the model's device as it is read. Every epoch's weight steps take
      the batches in the iterable's own order (``config.batch_size`` and ``config.seed`` play no
      part), and every Laplace fit is one more pass. N (the objective's scaling, the
      marginal likelihood's data set) and the batches per epoch (the cosine schedule's length)
      are, for a ``DataLoader`` over a map-style data set with its default batch sampler and
      ``drop_last=False``, ``len(loader.sampler)`` (``len(loader.dataset)`` with
      ``shuffle=True`` or ``False``) and ``len(loader)``, without reading any data; for any
      other iterable they are counted in a first pass over it (which also checks every batch,
      and advances whatever random state the iterable uses).

    ``augment(inputs) -> inputs`` (e.g. :func:`ella.data.flip_shift`, paper 000, F.6) is applied
    to the inputs of every MAP weight step (after the move to the model's device), never to
    the Laplace fit. Its randomness is its own (not in the checkpoint).

    With ``resume``, the model, both optimisers and schedulers, the precisions, the minibatch
    random state, the history and the best state are restored from a checkpoint (contents:
    :class:`MarglikLoop`) and training continues to ``config.epochs``. For tensors this gives
    the same result as an uninterrupted run, bit for bit. For an iterable the order of the
    batches after the resume is the iterable's: the checkpoint also holds a ``DataLoader``'s
    own ``generator`` (``DataLoader(..., generator=g)``, which drives ``shuffle=True``), so a
    deterministic iterable or such a loader gives the uninterrupted run again; randomness the
    checkpoint does not hold (a loader without a generator draws its shuffling from the global
    RNG, a sampler's own generator, the augmentation's) continues correctly but not in the
    uninterrupted run's order.

    Raises:
        TypeError, ValueError: for malformed ``train_data`` (naming it: not a pair of tensors
            nor an iterable, a one-shot iterator, no batch, a batch that is not a pair of
            tensors, batches of different shapes; an iterable's batch is checked when it is
            read); a non-callable ``augment`` or one that does not return a tensor of as many
            inputs; ValueError for a ``resume`` checkpoint that does not fit the model or the
            config, before anything changes.
        NonFiniteLossError: when a minibatch loss, the weights before a Laplace fit, its
            log-likelihood or the marginal likelihood are NaN or infinite (the message names
            the epoch). The checkpoint file is not overwritten and the model, optimisers,
            precisions and random state are restored to the last checkpointed state if there
            is one.
    """
    runtime.check_instance(model, "model", nn.Module)
    runtime.check_instance(config, "config", MarglikConfig)
    if augment is not None and not callable(augment):
        raise TypeError(f"`augment` must be callable, got {type(augment).__name__}")
    device = model_device(model)
    source = as_source(train_data, config.batch_size, device)
    run = MarglikLoop(model, config, source.n, steps_per_epoch=source.steps_per_epoch)
    if source.generator is not None:
        run.track(rng_loader=source.generator)
    if resume is not None:
        run.resume(resume)

    def batch_loss(batch: Batch, prec: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        inputs, targets = batch
        if augment is not None:
            inputs = _augmented(augment, inputs)
        nll = run.nll(model(inputs), targets)
        return run.map_loss(nll, prec), nll

    for epoch in run:
        record = run.weight_epoch(batch_loss, batches=source.epoch(run))
        if config.is_marglik_epoch(epoch):
            laplace = run.fit_laplace(
                lambda: Laplace(
                    model,
                    config.likelihood,
                    config.structure,
                    sigma=config.sigma,
                    temperature=config.temperature,
                ).fit(source.fit_batches())
            )
            record.update(run.hyper_steps(laplace))
            run.consider(record["neg_log_marglik"])
        run.end_epoch(record)
    return run.result(MarglikResult)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without any)."""
    first = next(iter(model.parameters()), None)
    return torch.device("cpu") if first is None else first.device


def _augmented(augment: Callable[[Tensor], Tensor], inputs: Tensor) -> Tensor:
    out = augment(inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"`augment` must return a tensor, got {type(out).__name__}")
    if out.ndim == 0 or out.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"`augment` must return as many inputs as it got ({inputs.shape[0]}), got shape "
            f"{tuple(out.shape)}"
        )
    return out


class TensorSource:
    """Training data held as ``(x (N, ...), y (N, ...))`` on the model's device (one of the
    two forms of :func:`as_source`).

    Attributes:
        n: N, the number of training points.
        steps_per_epoch: ``ceil(N / batch_size)`` weight steps per epoch.
        generator: None (the minibatch order is the :class:`MarglikLoop`'s ``gen``).
    """

    generator = None

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> None:
        self.x, self.y, self.batch_size = x.to(device), y.to(device), batch_size
        self.n = x.shape[0]
        self.steps_per_epoch = math.ceil(self.n / batch_size)

    def epoch(self, run: MarglikLoop) -> Iterator[Batch]:
        """One epoch's ``(x (B, ...), y (B, ...))`` minibatches: :meth:`MarglikLoop.
        index_batches` of ``run`` (a fresh seeded permutation)."""
        for index in run.index_batches(self.x.device):
            yield self.x[index], self.y[index]

    def fit_batches(self) -> Iterator[Batch]:
        """One pass in data order, in slices of ``batch_size`` (for a Laplace fit)."""
        size = self.batch_size
        for i in range(0, self.n, size):
            yield self.x[i : i + size], self.y[i : i + size]


class StreamSource:
    """Training data as a re-iterable of ``(x, y)`` batches, streamed in its own order, each
    batch checked and moved to ``device`` as it is read (:func:`ella.laplace.base.
    iter_batches`); nothing is held. One of the two forms of :func:`as_source`.

    Attributes:
        n, steps_per_epoch: N and the batches per epoch (:func:`train_marglik` says how they
            are found: a DataLoader's lengths, or a first counting pass).
        generator: a ``DataLoader``'s own ``generator`` (to checkpoint), else None.
    """

    def __init__(self, data: Iterable[Batch], device: torch.device) -> None:
        self.data, self.device = data, device
        self.generator = data.generator if isinstance(data, DataLoader) else None
        sized = _loader_size(data)
        if sized is None:
            n = steps = 0
            for x, _ in iter_batches(data, "train_data"):
                n, steps = n + x.shape[0], steps + 1
            sized = (n, steps)
        self.n, self.steps_per_epoch = sized

    def epoch(self, run: MarglikLoop) -> Iterator[Batch]:
        """One pass over the batches (``run`` plays no part: the order is the iterable's)."""
        return iter_batches(self.data, "train_data", device=self.device)

    def fit_batches(self) -> Iterator[Batch]:
        """One more pass over the batches (for a Laplace fit)."""
        return iter_batches(self.data, "train_data", device=self.device)


def _loader_size(data: object) -> tuple[int, int] | None:
    """``(points, batches)`` per epoch of a DataLoader that visits ``len(sampler)`` points
    in ``len(loader)`` batches (map-style data set, default batch sampler, no ``drop_last``);
    None for anything else."""
    if not isinstance(data, DataLoader) or isinstance(data.dataset, IterableDataset):
        return None
    if data.batch_size is None or data.drop_last:
        return None
    try:
        n, steps = len(data.sampler), len(data)  # type: ignore[arg-type]
    except TypeError:  # a sampler without a length
        return None
    return (n, steps) if n > 0 else None


def as_source(data: object, batch_size: int, device: torch.device) -> TensorSource | StreamSource:
    """The training data of :func:`train_marglik` (and :func:`ella.invariance.train_invariant`)
    in one of its two forms, checked: a :class:`TensorSource` for a pair of tensors (minibatches
    of ``batch_size``), a :class:`StreamSource` for a re-iterable of batches. Both give ``n``,
    ``steps_per_epoch``, ``generator``, ``epoch(run)`` (one epoch's batches for the weight
    steps) and ``fit_batches()`` (one pass for a Laplace fit), batches on ``device``.

    Raises:
        TypeError, ValueError: for malformed data, as :func:`train_marglik`.
    """
    if isinstance(data, (tuple, list)) and any(isinstance(t, Tensor) for t in data):
        x, y = runtime.check_train_data(data)
        return TensorSource(x, y, batch_size, device)
    iterable = isinstance(data, Iterable) and not isinstance(data, (Tensor, str, bytes))
    if not iterable:
        raise TypeError(
            f"`train_data` must be a tuple (inputs, targets) of tensors or a re-iterable of "
            f"(inputs, targets) batches, got {type(data).__name__}"
        )
    if isinstance(data, Iterator):  # a generator, an iterator: one pass only
        raise TypeError(
            f"`train_data` must be re-iterable (a DataLoader, a list of batches, an object "
            f"whose __iter__ starts a new pass), got a one-shot iterator "
            f"({type(data).__name__}), which would be empty after the first epoch"
        )
    return StreamSource(data, device)  # type: ignore[arg-type]


_POSTFIX_ETA = 6
"""At most this many components of eta on the progress bar (the largest in magnitude)."""


def _progress_postfix(record: Mapping[str, float]) -> dict[str, str]:
    """The tqdm postfix of an epoch's history record: ``loss``, ``nlml`` after a
    marginal-likelihood epoch, and for records with ``eta/{component}`` entries
    (:func:`ella.invariance.train_invariant`) ``eta``: every component's value to 2 decimals
    in the record's order (``0.12,0.00,1.57``), or, for more than 6 components, the 6 largest
    in magnitude with their names (``rotate=1.57,scale_x=0.40,...``)."""
    post = {"loss": f"{record['train_loss']:.3g}"}
    if "neg_log_marglik" in record:
        post["nlml"] = f"{record['neg_log_marglik']:.4g}"
    eta = {k[4:]: float(v) for k, v in record.items() if k.startswith("eta/")}
    if len(eta) > _POSTFIX_ETA:
        top = sorted(eta, key=lambda k: -abs(eta[k]))[:_POSTFIX_ETA]
        post["eta"] = ",".join(f"{k}={eta[k]:.2f}" for k in top) + ",..."
    elif eta:
        post["eta"] = ",".join(f"{v:.2f}" for v in eta.values())
    return post


class MarglikLoop:
    """One online marginal-likelihood training run (paper 000, section 4): the weights'
    optimiser and cosine schedule, the log prior precisions with theirs, and the steps that
    :func:`train_marglik` and :func:`ella.invariance.train_invariant` share: MAP weight
    epochs, the Laplace fit, the refit-free precision steps, the best state by the marginal
    likelihood and the result. Position, history, progress bar, checkpoints, resume and the
    NaN stop are those of its :class:`symdisc.runtime.TrainingLoop` (``loop``).

    Iterating over it gives the epochs still to run (1-based); each ends with
    :meth:`end_epoch`. A checkpoint holds ``model``, ``optimizer``, ``scheduler``,
    ``hyper_optimizer``, ``hyper_scheduler``, ``log_prior_precision`` (``{group: log
    delta_g}``), ``rng`` (the minibatch order), the objects added by :meth:`track`, ``best``
    (the best state so far, with the values of :meth:`keep_with_best`), ``history``, ``epoch``,
    ``config`` and the further ``settings``.

    Args:
        model: the network; its trainable parameters are the weights.
        config: the schedule.
        n: N, the number of training points.
        steps_per_epoch: weight steps per epoch (the cosine schedule's length is ``epochs``
            times it); default ``ceil(N / config.batch_size)``, the index minibatches of
            :meth:`index_batches`.
        desc: label of the progress bar.
        learn_hyper: whether the hyper steps change the precisions (default
            ``config.learn_hyper``).
        hyper_steps: length of the precisions' cosine schedule (default: all hyper steps of a
            full run).
        weight_decay: the weights' optimiser's weight decay (None: the optimiser's default).
        settings: further settings dataclasses saved (and validated on resume) by name.
        log: logs every epoch's record at DEBUG level.

    Attributes:
        log_prec: ``{group: 0-d tensor}``, the log prior precisions (leaves that require a
            gradient when ``learn_hyper``).
        optimizer, scheduler: the weights' optimiser and its cosine schedule (per minibatch).
        hyper_optimizer, hyper_scheduler: Adam on ``log_prec`` and its cosine schedule.
        gen: the generator of the minibatch order of :meth:`index_batches`.
        steps_per_epoch: weight steps per epoch.
        loop: the shared loop state.
    """

    def __init__(
        self,
        model: nn.Module,
        config: MarglikConfig,
        n: int,
        *,
        steps_per_epoch: int | None = None,
        desc: str = "marglik",
        learn_hyper: bool | None = None,
        hyper_steps: int | None = None,
        weight_decay: float | None = None,
        settings: Mapping[str, Any] | None = None,
        log: logging.Logger = logger,
    ) -> None:
        self.model, self.config, self.n = model, config, n
        self.learn_hyper = config.learn_hyper if learn_hyper is None else learn_hyper
        if hyper_steps is None:
            hyper_steps = config.n_marglik_epochs() * config.n_hyper_steps
        self.groups = prior_groups(model)
        self.named = dict(model.named_parameters())
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("`model` must have a parameter that requires a gradient")
        dtype, device = params[0].dtype, params[0].device
        self.log_prec = {
            g: torch.tensor(
                math.log(config.init_prior_precision), dtype=dtype, device=device
            ).requires_grad_(self.learn_hyper)
            for g in self.groups
        }
        # None keeps the optimiser's own default (the int 0 in its saved param_groups)
        decay = {} if weight_decay is None else {"weight_decay": weight_decay}
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, **decay)
        else:
            self.optimizer = torch.optim.SGD(
                params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, **decay
            )
        if steps_per_epoch is None:
            steps_per_epoch = math.ceil(n / config.batch_size)
        self.steps_per_epoch = runtime.check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs * self.steps_per_epoch, eta_min=0.0
        )
        self.hyper_optimizer = torch.optim.Adam(list(self.log_prec.values()), lr=config.lr_hyper)
        self.hyper_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.hyper_optimizer, T_max=max(1, hyper_steps), eta_min=0.0
        )
        self.gen = torch.Generator().manual_seed(config.seed)
        extra = {name: asdict(s) for name, s in (settings or {}).items()}
        self.loop = runtime.TrainingLoop(
            config.epochs,
            unit="epoch",
            settings={"config": asdict(config), **extra},
            checkpoint=config.checkpoint,
            checkpoint_every=config.checkpoint_every,
            progress=config.progress,
            desc=desc,
            postfix=_progress_postfix,
            logger=log,
        )
        self.loop.track(
            model=model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            hyper_optimizer=self.hyper_optimizer,
            hyper_scheduler=self.hyper_scheduler,
            log_prior_precision=self.log_prec,
            rng=self.gen,
        )
        self._best_extras: dict[str, Callable[[], object]] = {}
        self.loop.values["best"] = {"value": None, "state": None, "epoch": 0, "precisions": None}

    # -- set-up --------------------------------------------------------------------------

    def track(self, **objects: Any) -> None:
        """Checkpoint further state (:meth:`symdisc.runtime.TrainingLoop.track`: optimisers,
        schedulers, tensors restored in place, generators); call before :meth:`resume`."""
        self.loop.track(**objects)

    def keep_with_best(self, **getters: Callable[[], object]) -> None:
        """Save ``getter()`` with every new best state; :meth:`result` returns it as
        ``best_{key}`` and the final value as ``{key}``."""
        self._best_extras.update(getters)
        self.best.update(dict.fromkeys(getters))

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint (validated before anything changes: ValueError)."""
        self.loop.resume(path)

    # -- state ---------------------------------------------------------------------------

    @property
    def history(self) -> list[dict[str, float]]:
        return self.loop.history

    @property
    def best(self) -> dict[str, Any]:
        """``value`` (-log p(D | delta)), ``state``, ``epoch``, ``precisions`` and the values of
        :meth:`keep_with_best` at the best marginal likelihood so far."""
        return self.loop.values["best"]

    def __iter__(self) -> Iterator[int]:
        return iter(self.loop)

    def precisions(self) -> dict[str, Tensor]:
        """``{group: delta_g}`` now, detached."""
        return {g: v.detach().exp() for g, v in self.log_prec.items()}

    def deltas(self) -> dict[str, float]:
        """``{group: delta_g}`` now, as floats."""
        return {g: float(d) for g, d in self.precisions().items()}

    # -- steps ---------------------------------------------------------------------------

    def nll(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Mean per-point negative log-likelihood of (B, C) ``outputs``, normalisers
        included (module docstring)."""
        if self.config.likelihood == "classification":
            # checked: (B,) long class indices within the outputs' C classes (ValueError)
            return loss_value(outputs, targets, "cross_entropy", "mean")
        if outputs.shape != targets.shape:
            raise ValueError(
                f"regression outputs {tuple(outputs.shape)} and targets "
                f"{tuple(targets.shape)} must have the same shape"
            )
        s2 = self.config.sigma**2
        per_point = (targets - outputs).pow(2).flatten(1).sum(1) / (2.0 * s2)
        c = outputs[0].numel()
        return per_point.mean() + 0.5 * c * math.log(2.0 * math.pi * s2)

    def map_loss(self, nll: Tensor, prec: Mapping[str, Tensor]) -> Tensor:
        """The minibatch estimate of ``L_theta / N`` (module docstring)."""
        prior = sum(
            0.5 * prec[g] * sum(self.named[name].pow(2).sum() for name in names)
            for g, names in self.groups.items()
        )
        return nll / self.config.temperature + prior / self.n

    def index_batches(self, device: torch.device | str) -> Iterator[Tensor]:
        """The index minibatches (B,) of one epoch on ``device``: consecutive slices of
        ``config.batch_size`` of ``torch.randperm(N, generator=gen)`` (drawn when the first one
        is read; the last may be smaller)."""
        n, size = self.n, self.config.batch_size
        order = torch.randperm(n, generator=self.gen).to(device)
        for i in range(0, n, size):
            yield order[i : i + size]

    def weight_epoch(
        self,
        batch_loss: Callable[[Any, dict[str, Tensor]], tuple[Tensor, Tensor]],
        *,
        batches: Iterable[Any] | None = None,
        device: torch.device | str | None = None,
        leaves: Sequence[Tensor] = (),
        after_step: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """One pass of weight steps over the minibatches of ``batches``, by default
        :meth:`index_batches` on ``device`` (a fresh permutation).

        ``batch_loss(batch, precisions)`` gives a minibatch's ``(loss, nll)``; a minibatch's
        number of points is the length of its first dimension (an index tensor (B,), or the
        first tensor of a tuple such as ``(inputs (B, ...), targets)``), and the record's
        means are weighted by it. ``leaves`` lose their gradient before each backward pass and
        ``after_step`` runs after each step. Returns the epoch's history record.

        Raises:
            ValueError: for neither ``batches`` nor ``device``, or no minibatch.
            NonFiniteLossError: for a non-finite minibatch loss (the NaN stop).
        """
        if batches is None:
            if device is None:
                raise ValueError("`weight_epoch` needs `batches` or the `device` of the indices")
            batches = self.index_batches(device)
        self.model.train()
        total_loss = total_nll = 0.0
        seen = 0
        prec = self.precisions()
        for batch in batches:
            size = (batch if isinstance(batch, Tensor) else batch[0]).shape[0]
            loss, nll = batch_loss(batch, prec)
            self.loop.check_finite(loss, "the minibatch loss")
            self.optimizer.zero_grad(set_to_none=True)
            for leaf in leaves:
                leaf.grad = None
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if after_step is not None:
                after_step()
            total_loss += float(loss.detach()) * size
            total_nll += float(nll.detach()) * size
            seen += size
        if seen == 0:
            raise ValueError("the epoch had no minibatch")
        return {
            "epoch": self.loop.current,
            "train_loss": total_loss / seen,
            "nll": total_nll / seen,
            "lr": self.scheduler.get_last_lr()[0],
        }

    def fit_laplace(self, fit: Callable[[], Laplace]) -> Laplace:
        """``fit()`` with the model in ``eval()`` mode.

        Raises:
            NonFiniteLossError: the NaN stop, when the weights are not finite before the fit
                or the fit raises :class:`NonFiniteLossError` (:meth:`Laplace.fit
                <ella.laplace.Laplace.fit>` does for a likelihood that is not finite).
        """
        bad = runtime.non_finite(self.named)
        if bad:
            self.stop(f"the weights {bad} are not finite before the Laplace fit")
        was_training = self.model.training
        self.model.eval()
        try:
            return fit()
        except NonFiniteLossError as err:
            self.stop(f"the Laplace fit failed: {err}")
        finally:
            self.model.train(was_training)

    def neg_log_marglik(self, laplace: Laplace) -> Tensor:
        """``-log p(D | delta)`` of a fitted ``laplace`` at the current precisions (0-d, with
        its graph to ``log_prec``)."""
        return -laplace.log_marginal_likelihood({g: v.exp() for g, v in self.log_prec.items()})

    def step_precisions(self, grads: Sequence[Tensor]) -> None:
        """One Adam step on the log precisions with these gradients."""
        for leaf, grad in zip(self.log_prec.values(), grads):
            leaf.grad = grad
        self.hyper_optimizer.step()
        self.hyper_scheduler.step()

    def hyper_steps(self, laplace: Laplace) -> dict[str, float]:
        """The refit-free Adam steps on the log precisions of a fitted ``laplace`` (if
        ``learn_hyper``); returns the history entries of a marginal-likelihood epoch.

        Raises:
            NonFiniteLossError: for a non-finite marginal likelihood (the NaN stop).
        """
        out: dict[str, float] = {}
        with torch.no_grad():
            init = float(self.neg_log_marglik(laplace))
        self.loop.check_finite(init, "the negative log marginal likelihood")
        out["neg_log_marglik_init"] = init
        if self.learn_hyper:
            leaves = list(self.log_prec.values())
            for _ in range(self.config.n_hyper_steps):
                objective = self.neg_log_marglik(laplace) / self.n
                self.loop.check_finite(objective, "the marginal-likelihood objective")
                self.step_precisions(torch.autograd.grad(objective, leaves))
            with torch.no_grad():
                value = float(self.neg_log_marglik(laplace))
            self.loop.check_finite(value, "the negative log marginal likelihood")
        else:
            value = init
        out["neg_log_marglik"] = value
        out["lr_hyper"] = self.hyper_scheduler.get_last_lr()[0]
        for g, v in self.log_prec.items():
            out[f"prior_precision/{g}"] = float(v.detach().exp())
        return out

    def consider(self, value: float) -> None:
        """Keep the current state as the best if ``value`` (-log p(D | delta)) is the lowest."""
        best = self.best
        if best["value"] is None or value < best["value"]:
            self.loop.values["best"] = {
                "value": value,
                "state": copy.deepcopy(self.model.state_dict()),
                "epoch": self.loop.current,
                "precisions": self.deltas(),
                **{key: get() for key, get in self._best_extras.items()},
            }

    def end_epoch(self, record: dict[str, float]) -> None:
        """Close the epoch: history, progress bar, scheduled checkpoint."""
        self.loop.end(record)

    def stop(self, what: str) -> NoReturn:
        """The NaN stop (:meth:`symdisc.runtime.TrainingLoop.stop`)."""
        self.loop.stop(what)

    def result(self, cls: type[MarglikResult]) -> MarglikResult:
        """``cls`` of the best state (the final one if the marginal likelihood was never
        evaluated), with ``best_{key}`` and ``{key}`` of every value of
        :meth:`keep_with_best`."""
        final = self.deltas()
        now = {key: get() for key, get in self._best_extras.items()}
        b = self.best
        if b["state"] is None:
            head = (copy.deepcopy(self.model.state_dict()), None, self.config.epochs, final)
            best = {f"best_{key}": get() for key, get in self._best_extras.items()}
        else:
            head = (b["state"], b["value"], b["epoch"], b["precisions"])
            best = {f"best_{key}": b[key] for key in self._best_extras}
        return cls(*head, final, self.history, **best, **now)


# --------------------------------------------------------------------------------------------
# effective number of parameters (appendix D.2)
# --------------------------------------------------------------------------------------------


def _eigen_fractions(laplace: Laplace, deltas: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{group: lambda / (lambda + delta_g)}`` over the curvature eigenvalues of every group
    (:meth:`Laplace.group_eigenvalues`)."""
    return {g: lam / (lam + deltas[g]) for g, lam in laplace.group_eigenvalues().items()}


def effective_parameters(laplace: Laplace, prior_precision: PriorPrecision) -> dict[str, float]:
    """MacKay's effective number of parameters of every prior group (paper 000, app. D.2):

        gamma_g = sum_p lambda_p / (lambda_p + delta_g) = P_g - delta_g Tr((H_g + delta_g I)^-1),

    over the eigenvalues ``lambda_p`` of the group's block ``H_g`` of the tempered GGN
    ``H / T`` of a fitted ``laplace`` (:meth:`Laplace.group_eigenvalues`):

    * ``"full"``: the eigenvalues of the (P_g, P_g) sub-block of the dense GGN on the group's
      parameters, i.e. the block-diagonal approximation that ignores the curvature coupling
      between groups (exact for a single group);
    * ``"diag"``: the GGN's diagonal entries of the group;
    * ``"kron"``: the products ``a_i g_j`` of the eigenvalues of every Kronecker block of the
      group (the paper's formula).

    Eigenvalues are clamped at 0 against round-off. gamma_g tends to the number of non-zero
    eigenvalues of the group as delta_g -> 0 and to 0 as delta_g -> infinity.

    Args:
        laplace: a fitted :class:`~ella.laplace.Laplace`.
        prior_precision: as for :meth:`Laplace.log_marginal_likelihood`.

    Returns:
        ``{group: gamma_g}`` in the order of ``laplace.groups``.

    Raises:
        TypeError: for a ``laplace`` that is not a :class:`~ella.laplace.Laplace`.
        RuntimeError: for an unfitted ``laplace`` (the message says to call ``fit``).
        ValueError: for a ``prior_precision`` that is not positive and finite.
    """
    runtime.check_instance(laplace, "laplace", Laplace)
    fractions = _eigen_fractions(laplace, laplace.precisions(prior_precision))
    return {g: float(f.detach().sum()) for g, f in fractions.items()}


def relative_effective_parameters(
    laplace: Laplace, prior_precision: PriorPrecision
) -> dict[str, float]:
    """``{group: gamma_g / P_g}`` in [0, 1] (the paper's 'normalised effective number of
    parameters', appendix D.2); see :func:`effective_parameters`."""
    gamma = effective_parameters(laplace, prior_precision)
    return {g: v / laplace.group_sizes[g] for g, v in gamma.items()}


def learned_layer_report(
    model: nn.Module, laplace: Laplace, precisions: PriorPrecision
) -> list[dict[str, object]]:
    """One row per prior group, like table 4 of paper 000, sorted by relaxed layer (module
    order).

    Each row is a plain dict with ``layer`` (the relaxed layer, :func:`ella.laplace.layer_paths`:
    a :class:`~ella.layers.PathSum` and all its paths are one layer; for an untagged group the
    group itself, :data:`~ella.laplace.ROOT_GROUP` for the model's own parameters), ``path``
    (the path, ``None`` for an untagged group), ``module`` (the module that holds the group's
    parameters: a path's sub-layer such as ``"0.layers.1"``; the group for an untagged one),
    ``group``, ``n_params`` (P_g), ``prior_precision`` (delta_g), ``sq_norm``
    (``||theta_g||^2`` at the fitted weights), ``effective_parameters`` (gamma_g),
    ``relative_effective_parameters`` (gamma_g / P_g) and ``path_share``: the paper's 'relative
    effective number of parameters' ``(gamma_g / P_g) / sum_h (gamma_h / P_h)`` over the
    groups h of the same relaxed layer (1 for a layer with one group; NaN when all of the
    layer's gamma are 0).

    Args:
        model: the model ``laplace`` was fitted to (for the layer and path tags).
        laplace: a fitted :class:`~ella.laplace.Laplace`.
        precisions: ``{group: delta_g}`` (or one shared value).
    """
    deltas = laplace.precisions(precisions)
    gamma = effective_parameters(laplace, deltas)
    tags = layer_paths(model)
    module_order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows = []
    for position, (g, names) in enumerate(laplace.groups.items()):
        if names[0] in tags:
            layer, module, tag = tags[names[0]]
            path: str | None = str(tag)
        else:
            layer, module, path = g, g, None
        key = "" if layer == ROOT_GROUP else layer
        rows.append(
            {
                "layer": layer,
                "path": path,
                "module": module,
                "group": g,
                "n_params": laplace.group_sizes[g],
                "prior_precision": float(deltas[g].detach()),
                "sq_norm": float(laplace.sq_norms[g]),
                "effective_parameters": gamma[g],
                "relative_effective_parameters": gamma[g] / laplace.group_sizes[g],
                "_order": (module_order.get(key, len(module_order)), position),
            }
        )
    rows.sort(key=lambda r: r["_order"])
    per_layer: dict[str, float] = {}
    for r in rows:
        per_layer[r["layer"]] = per_layer.get(r["layer"], 0.0) + r["relative_effective_parameters"]
    for r in rows:
        del r["_order"]
        total = per_layer[r["layer"]]
        r["path_share"] = r["relative_effective_parameters"] / total if total > 0 else math.nan
    return rows

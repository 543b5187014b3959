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

:func:`effective_parameters` and :func:`learned_layer_report` measure the outcome (appendix D.2,
table 4): MacKay's effective number of parameters of every group.

Scaling of the weight objective: per minibatch B of the N training points the loss is the
unbiased estimate of ``L_theta / N``,

    mean_{n in B} NLL(x_n, y_n) / T + 1/(2N) sum_g delta_g ||theta_g||^2,

i.e. ``N * mean NLL / T + 1/2 sum_g delta_g ||theta_g||^2`` divided by N, so that learning rates
do not depend on the data set size. The NLL includes its normaliser (for regression
``||y - f||^2 / (2 sigma^2) + C/2 log(2 pi sigma^2)`` per point), which changes no gradient.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.laplace import ROOT_GROUP, Laplace, Likelihood, PriorPrecision, Structure, prior_groups
from ella.layers._base import parameter_paths

__all__ = [
    "MarglikConfig",
    "MarglikResult",
    "NonFiniteLossError",
    "train_marglik",
    "effective_parameters",
    "relative_effective_parameters",
    "learned_layer_report",
]

logger = logging.getLogger(__name__)

OptimizerName = Literal["adam", "sgd"]


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss or the marginal likelihood becomes NaN or infinite; the
    last good checkpoint is kept (never overwritten) and restored into the model."""


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


def _check_ints(config: object, names: Sequence[str], *, minimum: int) -> None:
    """``ValueError`` unless every named attribute is an int (not a bool) >= ``minimum``."""
    kind = {0: "non-negative", 1: "positive"}[minimum]
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{name}` must be a {kind} int, got {value!r}")


def _check_floats(config: object, names: Sequence[str], *, zero: bool) -> None:
    """``ValueError`` unless every named attribute is a finite number (not a bool) > 0, or >= 0
    with ``zero``."""
    kind = "non-negative" if zero else "positive"
    for name in names:
        value = getattr(config, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and (value >= 0 if zero else value > 0))
        ):
            raise ValueError(f"`{name}` must be a {kind} finite float, got {value!r}")


def _check_choice(config: object, name: str, choices: object) -> None:
    """``ValueError`` unless the named attribute is one of the ``Literal`` type ``choices``."""
    value = getattr(config, name)
    if value not in get_args(choices):
        raise ValueError(f"`{name}` must be one of {get_args(choices)}, got {value!r}")


@dataclass(frozen=True)
class MarglikConfig:
    """Settings of :func:`train_marglik` (defaults: paper 000, appendix F.6).

    Attributes:
        epochs: passes over the training data (a resumed run continues up to this count).
        batch_size: points per minibatch; every epoch visits all N points in the order of
            ``torch.randperm(N, generator=g)`` with ``g = torch.Generator().manual_seed(seed)``
            drawn once per epoch (the last minibatch may be smaller).
        optimizer: ``"adam"`` (default betas) or ``"sgd"`` (plain, no momentum) for the weights.
        lr: learning rate of the weights, cosine-annealed to 0 over all ``epochs * ceil(N /
            batch_size)`` steps (``CosineAnnealingLR``, stepped once per minibatch).
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
        seed: seed of the minibatch order.
        progress: show a tqdm progress bar over epochs.
    """

    epochs: int = 100
    batch_size: int = 128
    optimizer: OptimizerName = "adam"
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
        _check_ints(self, ("epochs", "batch_size", "n_hyper_steps", "marglik_every"), minimum=1)
        _check_ints(self, ("burn_in", "checkpoint_every", "seed"), minimum=0)
        _check_floats(
            self, ("lr", "lr_hyper", "sigma", "temperature", "init_prior_precision"), zero=False
        )
        _check_choice(self, "optimizer", OptimizerName)
        _check_choice(self, "structure", Structure)
        _check_choice(self, "likelihood", Likelihood)
        for name in ("learn_hyper", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        if self.checkpoint_every and self.checkpoint is None:
            raise ValueError("`checkpoint` must name a file when `checkpoint_every` > 0")

    def is_marglik_epoch(self, epoch: int) -> bool:
        """Whether the marginal likelihood is evaluated after ``epoch`` (1-based)."""
        return epoch > self.burn_in and (epoch - self.burn_in) % self.marglik_every == 0

    def n_marglik_epochs(self) -> int:
        """Number of marginal-likelihood evaluations in a full run."""
        return max(0, (self.epochs - self.burn_in) // self.marglik_every)


@dataclass
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


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _nll(outputs: Tensor, targets: Tensor, config: MarglikConfig) -> Tensor:
    """Mean per-point negative log-likelihood, normalisers included."""
    if config.likelihood == "classification":
        return F.cross_entropy(outputs, targets, reduction="mean")
    if outputs.shape != targets.shape:
        raise ValueError(
            f"regression outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
            f"must have the same shape"
        )
    s2 = config.sigma**2
    per_point = (targets - outputs).pow(2).flatten(1).sum(1) / (2.0 * s2)
    c = outputs[0].numel()
    return per_point.mean() + 0.5 * c * math.log(2.0 * math.pi * s2)


def _check_data(train_data: object) -> tuple[Tensor, Tensor]:
    if not (isinstance(train_data, (tuple, list)) and len(train_data) == 2):
        raise TypeError("`train_data` must be a tuple (inputs, targets) of tensors")
    x, y = train_data
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise TypeError("`train_data` must be a tuple (inputs, targets) of tensors")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"inputs and targets must share a non-empty first dimension, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def _batches(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]


def train_marglik(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor],
    config: MarglikConfig,
    *,
    resume: str | Path | None = None,
) -> MarglikResult:
    """Train ``model`` by MAP and its prior precisions by the Laplace marginal likelihood.

    See the module docstring for the objectives and :class:`MarglikConfig` for the schedule.
    After every epoch the history gets one record; after a marginal-likelihood epoch a
    :class:`~ella.laplace.Laplace` is fitted once on the whole training set (in minibatches of
    ``batch_size``, in data order, with the model in ``eval()`` mode) and, if
    ``config.learn_hyper``, ``n_hyper_steps`` Adam steps are taken on the log precisions. The
    state with the lowest negative log marginal likelihood (after the steps) is kept.

    With ``resume``, the model, both optimisers and schedulers, the precisions, the minibatch
    random state, the history and the best state are restored from a checkpoint and training
    continues to ``config.epochs``, giving the same result as an uninterrupted run.

    Raises:
        TypeError, ValueError: for malformed ``train_data``.
        NonFiniteLossError: when a minibatch loss or the marginal likelihood is NaN or infinite
            (the message names the epoch). The checkpoint file is not overwritten and the
            model is restored to the last checkpointed state if there is one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    x, y = _check_data(train_data)
    n = x.shape[0]
    run = _Run(
        model,
        config,
        n,
        learn_hyper=config.learn_hyper,
        hyper_steps=config.n_marglik_epochs() * config.n_hyper_steps,
    )
    if resume is not None:
        run.load(resume)

    def batch_loss(index: Tensor, prec: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        nll = _nll(model(x[index]), y[index], config)
        return run.map_loss(nll, prec), nll

    bar = run.epochs("marglik")
    for epoch in bar:
        record = run.weight_epoch(epoch, x.device, batch_loss)
        if config.is_marglik_epoch(epoch):
            laplace = run.fit(
                lambda: Laplace(
                    model,
                    config.likelihood,
                    config.structure,
                    sigma=config.sigma,
                    temperature=config.temperature,
                ).fit(_batches(x, y, config.batch_size)),
                epoch,
            )
            record.update(run.hyper_steps(laplace, epoch))
            run.consider(record["neg_log_marglik"], epoch)
        run.end_epoch(epoch, record, bar)
    return run.result(MarglikResult)


def _progress_postfix(record: Mapping[str, float]) -> dict[str, str]:
    """The tqdm postfix of an epoch's history record."""
    post = {"loss": f"{record['train_loss']:.3g}"}
    if "neg_log_marglik" in record:
        post["nlml"] = f"{record['neg_log_marglik']:.4g}"
    return post


class _Run:
    """One marginal-likelihood training loop: its optimisers, checkpointed state and the
    bookkeeping that :func:`train_marglik` and :func:`ella.invariance.train_invariant` share
    (MAP weight epochs, the refit-free precision steps, best-state tracking, history,
    progress bar, checkpoints, resume, the NaN stop and the result).

    A checkpoint holds, in this order: ``model``, ``optimizer``, ``scheduler``,
    ``hyper_optimizer``, ``hyper_scheduler``, the further stateful objects of :meth:`carry`,
    ``log_prior_precision``, the further tensors (restored in place), ``rng``, the further
    generators, ``history``, ``epoch``, ``best``, ``config`` and the further settings (all
    dataclasses, saved with ``asdict``).
    """

    def __init__(
        self,
        model: nn.Module,
        config: MarglikConfig,
        n: int,
        *,
        learn_hyper: bool,
        hyper_steps: int,
        weight_decay: float | None = None,
        log: logging.Logger = logger,
    ) -> None:
        self.model, self.config, self.n = model, config, n
        self.learn_hyper, self.log = learn_hyper, log
        self.groups = prior_groups(model)
        self.named = dict(model.named_parameters())
        params = [p for p in model.parameters() if p.requires_grad]
        dtype, device = params[0].dtype, params[0].device
        self.log_prec = {
            g: torch.tensor(
                math.log(config.init_prior_precision), dtype=dtype, device=device
            ).requires_grad_(learn_hyper)
            for g in self.groups
        }
        # None keeps the optimiser's own default (the int 0 in its saved param_groups)
        decay = {} if weight_decay is None else {"weight_decay": weight_decay}
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, **decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr, **decay)
        self.steps_per_epoch = math.ceil(n / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs * self.steps_per_epoch, eta_min=0.0
        )
        self.hyper_optimizer = torch.optim.Adam(list(self.log_prec.values()), lr=config.lr_hyper)
        self.hyper_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.hyper_optimizer, T_max=max(1, hyper_steps), eta_min=0.0
        )
        self.gen = torch.Generator().manual_seed(config.seed)
        self.stateful: dict[str, Any] = {}
        self.tensors: dict[str, Tensor] = {}
        self.generators: dict[str, torch.Generator] = {}
        self.settings: dict[str, object] = {}
        self.best_extras: dict[str, Callable[[], object]] = {}
        self.history: list[dict[str, float]] = []
        self.best: dict = {"value": None, "state": None, "epoch": 0, "precisions": None}
        self.start = 0

    def carry(
        self,
        *,
        stateful: Mapping[str, Any],
        tensors: Mapping[str, Tensor],
        generators: Mapping[str, torch.Generator],
        settings: Mapping[str, object],
        best: Mapping[str, Callable[[], object]],
    ) -> None:
        """Checkpoint further state under these keys: objects with a ``state_dict``, tensors
        copied back in place on resume and on a NaN stop, random generators, settings
        dataclasses, and ``best``: values (by function) saved with the best state, returned as
        ``best_{key}`` and ``{key}`` (now) in the result."""
        self.stateful.update(stateful)
        self.tensors.update(tensors)
        self.generators.update(generators)
        self.settings.update(settings)
        self.best_extras.update(best)
        self.best.update(dict.fromkeys(best))

    def deltas(self) -> dict[str, float]:
        return {g: float(v.detach().exp()) for g, v in self.log_prec.items()}

    def epochs(self, desc: str) -> Iterable[int]:
        """The epochs still to run, under a tqdm bar with ``config.progress``."""
        epochs = range(self.start + 1, self.config.epochs + 1)
        if not self.config.progress:
            return epochs
        from tqdm.auto import tqdm

        return tqdm(epochs, desc=desc, initial=self.start, total=self.config.epochs)

    def map_loss(self, nll: Tensor, prec: Mapping[str, Tensor]) -> Tensor:
        """The minibatch estimate of ``L_theta / N`` (module docstring)."""
        prior = sum(
            0.5 * prec[g] * sum(self.named[name].pow(2).sum() for name in names)
            for g, names in self.groups.items()
        )
        return nll / self.config.temperature + prior / self.n

    def weight_epoch(
        self,
        epoch: int,
        device: torch.device,
        batch_loss: Callable[[Tensor, dict[str, Tensor]], tuple[Tensor, Tensor]],
        *,
        leaves: Sequence[Tensor] = (),
        after_step: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """One pass of weight steps over the minibatches of a fresh permutation;
        ``batch_loss(index, precisions)`` gives a minibatch's ``(loss, nll)``, ``leaves`` lose
        their gradient before each backward pass and ``after_step`` runs after each step.
        Returns the epoch's history record."""
        self.model.train()
        n, size = self.n, self.config.batch_size
        order = torch.randperm(n, generator=self.gen).to(device)
        total_loss = total_nll = 0.0
        prec = {g: v.detach().exp() for g, v in self.log_prec.items()}
        for i in range(0, n, size):
            index = order[i : i + size]
            loss, nll = batch_loss(index, prec)
            if not math.isfinite(float(loss.detach())):
                self.stop(epoch, f"the minibatch loss is {float(loss.detach())}")
            self.optimizer.zero_grad(set_to_none=True)
            for leaf in leaves:
                leaf.grad = None
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if after_step is not None:
                after_step()
            total_loss += float(loss.detach()) * index.numel()
            total_nll += float(nll.detach()) * index.numel()
        return {
            "epoch": epoch,
            "train_loss": total_loss / n,
            "nll": total_nll / n,
            "lr": self.scheduler.get_last_lr()[0],
        }

    def fit(self, fit: Callable[[], Laplace], epoch: int) -> Laplace:
        """``fit()`` with the model in ``eval()`` mode; a non-finite fit stops training."""
        was_training = self.model.training
        self.model.eval()
        try:
            return fit()
        except ValueError as err:
            if "finite" in str(err):
                self.stop(epoch, f"the Laplace fit failed: {err}")
            raise
        finally:
            self.model.train(was_training)

    def neg_log_marglik(self, laplace: Laplace) -> Tensor:
        return -laplace.log_marginal_likelihood({g: v.exp() for g, v in self.log_prec.items()})

    def step_precisions(self, grads: Sequence[Tensor]) -> None:
        """One Adam step on the log precisions with these gradients."""
        for leaf, grad in zip(self.log_prec.values(), grads):
            leaf.grad = grad
        self.hyper_optimizer.step()
        self.hyper_scheduler.step()

    def hyper_steps(self, laplace: Laplace, epoch: int) -> dict[str, float]:
        """The refit-free Adam steps on the log precisions of a fitted ``laplace`` (if
        ``learn_hyper``); returns the history entries of a marginal-likelihood epoch."""
        out: dict[str, float] = {}
        with torch.no_grad():
            init = float(self.neg_log_marglik(laplace))
        if not math.isfinite(init):
            self.stop(epoch, f"the negative log marginal likelihood is {init}")
        out["neg_log_marglik_init"] = init
        if self.learn_hyper:
            leaves = list(self.log_prec.values())
            for _ in range(self.config.n_hyper_steps):
                objective = self.neg_log_marglik(laplace) / self.n
                if not math.isfinite(float(objective.detach())):
                    self.stop(epoch, "the marginal-likelihood objective is not finite")
                self.step_precisions(torch.autograd.grad(objective, leaves))
            with torch.no_grad():
                value = float(self.neg_log_marglik(laplace))
            if not math.isfinite(value):
                self.stop(epoch, f"the negative log marginal likelihood is {value}")
        else:
            value = init
        out["neg_log_marglik"] = value
        out["lr_hyper"] = self.hyper_scheduler.get_last_lr()[0]
        for g, v in self.log_prec.items():
            out[f"prior_precision/{g}"] = float(v.detach().exp())
        return out

    def consider(self, value: float, epoch: int) -> None:
        """Keep the current state as the best if ``value`` (-log p(D | delta)) is the lowest."""
        if self.best["value"] is None or value < self.best["value"]:
            self.best = {
                "value": value,
                "state": copy.deepcopy(self.model.state_dict()),
                "epoch": epoch,
                "precisions": self.deltas(),
                **{key: get() for key, get in self.best_extras.items()},
            }

    def end_epoch(self, epoch: int, record: dict[str, float], bar: Iterable[int]) -> None:
        """Log the record, show it on the progress bar and write the scheduled checkpoint."""
        self.history.append(record)
        self.log.debug("epoch %d: %s", epoch, record)
        if self.config.progress:
            bar.set_postfix(_progress_postfix(record))
        if self.config.checkpoint_every and epoch % self.config.checkpoint_every == 0:
            _save_atomic(self.checkpoint(epoch), self.config.checkpoint)

    def checkpoint(self, epoch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "hyper_optimizer": self.hyper_optimizer.state_dict(),
            "hyper_scheduler": self.hyper_scheduler.state_dict(),
            **{key: obj.state_dict() for key, obj in self.stateful.items()},
            "log_prior_precision": {g: v.detach().clone() for g, v in self.log_prec.items()},
            **{key: t.detach().clone() for key, t in self.tensors.items()},
            "rng": self.gen.get_state(),
            **{key: gen.get_state() for key, gen in self.generators.items()},
            "history": self.history,
            "epoch": epoch,
            "best": self.best,
            "config": asdict(self.config),
            **{key: asdict(s) for key, s in self.settings.items()},
        }

    def _restore(self, state: dict) -> None:
        """Model and further tensors from a checkpoint's ``state``."""
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            for key, t in self.tensors.items():
                t.copy_(state[key])

    def load(self, path: str | Path) -> None:
        """Resume: everything :meth:`checkpoint` saved."""
        state = torch.load(path, weights_only=False)
        self._restore(state)
        objects = {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "hyper_optimizer": self.hyper_optimizer,
            "hyper_scheduler": self.hyper_scheduler,
            **self.stateful,
        }
        for key, obj in objects.items():
            obj.load_state_dict(state[key])
        with torch.no_grad():
            for g, v in state["log_prior_precision"].items():
                self.log_prec[g].copy_(v)
        for key, gen in {"rng": self.gen, **self.generators}.items():
            gen.set_state(state[key])
        self.history, self.start, self.best = state["history"], state["epoch"], state["best"]

    def stop(self, epoch: int, what: str) -> NoReturn:
        """Restore the last checkpoint (if any) and raise :class:`NonFiniteLossError`."""
        where = "no checkpoint was written"
        path = self.config.checkpoint
        if path and Path(path).exists():
            state = torch.load(path, weights_only=False)
            self._restore(state)
            where = f"restored the last good checkpoint {path} (epoch {state['epoch']})"
        raise NonFiniteLossError(f"training stopped in epoch {epoch}: {what}; {where}")

    def result(self, cls: type[MarglikResult]) -> MarglikResult:
        """``cls`` of the best state (the final one if the marginal likelihood was never
        evaluated), with ``best_{key}`` and ``{key}`` of every further best value."""
        final = self.deltas()
        now = {key: get() for key, get in self.best_extras.items()}
        if self.best["state"] is None:
            head = (copy.deepcopy(self.model.state_dict()), None, self.config.epochs, final)
            best = {f"best_{key}": get() for key, get in self.best_extras.items()}
        else:
            b = self.best
            head = (b["state"], b["value"], b["epoch"], b["precisions"])
            best = {f"best_{key}": b[key] for key in self.best_extras}
        return cls(*head, final, self.history, **best, **now)


def _save_atomic(state: dict, path: str) -> None:
    """``torch.save`` through a temporary file: a crash mid-write never leaves a broken file."""
    tmp = Path(f"{path}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# effective number of parameters (appendix D.2)
# --------------------------------------------------------------------------------------------


def _eigen_fractions(laplace: Laplace, deltas: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{group: lambda / (lambda + delta_g)}`` over the curvature eigenvalues of every group."""
    laplace._require_fit()
    T = laplace.temperature
    out: dict[str, list[Tensor]] = {g: [] for g in laplace.groups}
    if laplace.structure == "kron":
        group_of = {p: g for g, names in laplace.groups.items() for p in names}
        for key, (a, _, g_eig, _) in laplace.eigendecompositions.items():
            group = group_of[laplace.curvature[key].params[0]]
            lam = torch.outer(g_eig.clamp_min(0), a.clamp_min(0)).flatten() / T
            out[group].append(lam)
    else:
        offsets, start = {}, 0
        for name in laplace.names:
            offsets[name] = (start, start + laplace.numels[name])
            start += laplace.numels[name]
        for g, names in laplace.groups.items():
            idx = torch.cat([torch.arange(*offsets[nm], device=laplace.device) for nm in names])
            if laplace.structure == "diag":
                lam = laplace.curvature[idx]
            else:
                block = laplace.curvature[idx][:, idx]
                lam = torch.linalg.eigvalsh(0.5 * (block + block.T))
            out[g].append(lam.clamp_min(0) / T)
    fractions = {}
    for g, parts in out.items():
        lam = torch.cat(parts)
        fractions[g] = lam / (lam + deltas[g])
    return fractions


def _precisions(laplace: Laplace, prior_precision: PriorPrecision) -> dict[str, Tensor]:
    """``laplace.precisions`` with Python floats made tensors of the curvature's dtype first
    (``torch.as_tensor`` of a float would round it to float32)."""
    laplace._require_fit()

    def exact(v: object) -> object:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return torch.tensor(float(v), dtype=laplace.dtype, device=laplace.device)
        return v

    if isinstance(prior_precision, Mapping):
        prior_precision = {g: exact(v) for g, v in prior_precision.items()}
    else:
        prior_precision = exact(prior_precision)
    return laplace.precisions(prior_precision)


def effective_parameters(laplace: Laplace, prior_precision: PriorPrecision) -> dict[str, float]:
    """MacKay's effective number of parameters of every prior group (paper 000, app. D.2):

        gamma_g = sum_p lambda_p / (lambda_p + delta_g) = P_g - delta_g Tr((H_g + delta_g I)^-1),

    over the eigenvalues ``lambda_p`` of the group's block ``H_g`` of the tempered GGN
    ``H / T`` of a fitted ``laplace``:

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
    """
    fractions = _eigen_fractions(laplace, _precisions(laplace, prior_precision))
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
    """One row per prior group, like table 4 of paper 000, sorted by layer (module order).

    Each row is a plain dict with ``layer`` (module name, :data:`~ella.laplace.ROOT_GROUP` for
    the model's own parameters), ``path`` (the relaxed layer's path, ``None`` for an untagged
    group), ``group``, ``n_params`` (P_g), ``prior_precision`` (delta_g), ``sq_norm``
    (``||theta_g||^2`` at the fitted weights), ``effective_parameters`` (gamma_g),
    ``relative_effective_parameters`` (gamma_g / P_g) and ``path_share``: the paper's 'relative
    effective number of parameters' ``(gamma_g / P_g) / sum_paths (gamma_h / P_h)`` over the
    groups of the same layer (1 for a layer with one group; NaN when all of the layer's
    gamma are 0).

    Args:
        model: the model ``laplace`` was fitted to (for the layer and path tags).
        laplace: a fitted :class:`~ella.laplace.Laplace`.
        precisions: ``{group: delta_g}`` (or one shared value).
    """
    deltas = _precisions(laplace, precisions)
    gamma = effective_parameters(laplace, deltas)
    tags = parameter_paths(model)
    module_order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows = []
    for position, (g, names) in enumerate(laplace.groups.items()):
        if names[0] in tags:
            layer, path = tags[names[0]]
            path = str(path)
        else:
            layer, path = g, None
        key = "" if layer == ROOT_GROUP else layer
        rows.append(
            {
                "layer": layer,
                "path": path,
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

"""Training a group action and its generators (paper 002, section 4.1): Adam with step decay
on the discovery objective (eqs. 2-4, or appendix B.2), on the shared loop of
:mod:`symdisc.runtime` (checkpoints, validated resume, NaN stop, progress bar)."""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from symdisc import runtime
from symdisc.actions import Action
from symdisc.generators import Generators
from symdisc.losses import ParamLoss
from symdisc.metrics import RANK_RTOL, field_rank
from symdisc.objective import (
    ObjectiveKind,
    Weights,
    exponential_objective,
    infinitesimal_objective,
    tangent_fields,
)
from symdisc.runtime import NonFiniteLossError
from symdisc.sampler import Samples
from symdisc.validation import check_loss, check_samples

__all__ = [
    "Discovery",
    "TrainConfig",
    "NonFiniteLossError",
    "FieldCollapseWarning",
    "field_health",
    "train",
]

COLLAPSE_RATIO = 0.1  # mean ||v|| below this fraction of beta: the fields have collapsed


class FieldCollapseWarning(UserWarning):
    """The learned fields vanish (mean ||v|| far below beta) or coincide (rank below k)."""


class Discovery(nn.Module):
    """What discovery learns: an action ``a_X(g, theta)`` and k generators of gl(d)."""

    def __init__(self, action: Action, generators: Generators) -> None:
        super().__init__()
        runtime.check_instance(action, "action", Action)
        runtime.check_instance(generators, "generators", Generators)
        if action.d != generators.d:
            raise ValueError(
                f"`generators` must live in gl(d) with the action's d={action.d}, "
                f"got d={generators.d}"
            )
        self.action = action
        self.generators = generators

    def fields(self, samples: Samples) -> Tensor:
        """Tangent fields ``v`` of every generator at every sample: (N, k, P)."""
        return tangent_fields(self.action, self.generators(), samples.theta, samples.X)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (defaults: paper 002, section 4.1).

    Attributes:
        steps: optimisation steps in total (a resumed run continues up to this count).
        batch_size: samples per minibatch, drawn without replacement each epoch.
        lr: Adam's learning rate; multiplied by ``decay`` every ``decay_every`` steps.
        objective: ``"infinitesimal"`` (eqs. 2-4) or ``"exponential"`` (appendix B.2).
        weights: the gamma weights, beta and the form of the terms (default the "fields" form:
            scale-free invariance, per-sample field orthogonality, squared norm term; see
            :class:`~symdisc.objective.Weights`; ``Weights.paper()`` for eq. 4 as written).
        t_scale: range of t for the exponential objective.
        checkpoint_every: steps between checkpoints (0: none).
        checkpoint: path of the checkpoint file (written atomically, read by ``resume``).
        seed: seed of the minibatch order and of the objective's random draws.
        progress: show a tqdm progress bar.
        compile: run the objective through ``torch.compile`` (infinitesimal objective only).
            The first step then takes seconds to compile and the following ones about 1.5x less
            time on CPU (``experiments/bench_discovery.py``); worth it for long runs.
        check_fields: at the end, warn with :class:`FieldCollapseWarning` when the fields have
            collapsed or coincide (:func:`field_health`).
    """

    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    decay: float = 0.6
    decay_every: int = 1000
    objective: ObjectiveKind = "infinitesimal"
    weights: Weights = field(default_factory=Weights)
    t_scale: float = 1.0
    checkpoint_every: int = 0
    checkpoint: str | None = None
    seed: int = 0
    progress: bool = False
    compile: bool = False
    check_fields: bool = True

    def __post_init__(self) -> None:
        runtime.check_int(self.steps, "steps", minimum=1)
        runtime.check_int(self.batch_size, "batch_size", minimum=1)
        runtime.check_float(self.lr, "lr", positive=True)
        if runtime.check_float(self.decay, "decay", positive=True) > 1.0:
            raise ValueError(
                f"`decay` must be in (0, 1] (the factor of the learning rate every "
                f"`decay_every` steps), got {self.decay!r}"
            )
        runtime.check_int(self.decay_every, "decay_every", minimum=1)
        runtime.check_choice(self.objective, "objective", ObjectiveKind)
        runtime.check_instance(self.weights, "weights", Weights)
        runtime.check_float(self.t_scale, "t_scale", positive=True)
        runtime.check_int(self.checkpoint_every, "checkpoint_every", minimum=0)
        if self.checkpoint is not None:
            runtime.check_instance(self.checkpoint, "checkpoint", (str, os.PathLike))
        elif self.checkpoint_every:
            raise ValueError("`checkpoint` must name a file when `checkpoint_every` > 0")
        runtime.check_int(self.seed, "seed", minimum=0)
        runtime.check_bool(self.progress, "progress")
        runtime.check_bool(self.compile, "compile")
        runtime.check_bool(self.check_fields, "check_fields")
        if self.compile and self.objective != "infinitesimal":
            raise ValueError("`compile` supports the 'infinitesimal' objective only")


# Besides the run's length, progress bar and checkpoint file, a resume may switch compilation.
_MAY_CHANGE = runtime.MAY_CHANGE_ON_RESUME | {"compile", "check_fields"}


def field_health(
    discovery: Discovery, samples: Samples, beta: float, *, max_samples: int = 1024
) -> dict[str, float]:
    """Whether the learned fields are alive and distinct on (up to ``max_samples`` of) ``samples``.

    Returns ``v_norm_mean`` (mean ||v_j|| over samples and generators) and ``field_rank``: the
    median over samples of the numerical rank of the k fields (singular values of the (k, P)
    matrix above ``RANK_RTOL`` of the largest, :func:`symdisc.metrics.field_rank`), and ``k``.
    Warns with :class:`FieldCollapseWarning` when ``v_norm_mean < COLLAPSE_RATIO * beta``
    (the fields vanish: the norm term lost to the invariance term) or ``field_rank < k`` (some
    fields are combinations of others: e.g. two generators the action maps to the same direction).

    Raises:
        TypeError, ValueError: for a ``discovery`` that is not a Discovery, empty ``samples``,
            a ``beta`` that is not positive and finite or ``max_samples`` below 1.
    """
    runtime.check_instance(discovery, "discovery", Discovery)
    check_samples(samples)
    beta = runtime.check_float(beta, "beta", positive=True)
    runtime.check_int(max_samples, "max_samples", minimum=1)
    index = torch.arange(min(len(samples), max_samples), device=samples.theta.device)
    with torch.no_grad():
        v = discovery.fields(samples.batch(index))  # (N, k, P)
    k = v.shape[1]
    rank = field_rank(v, rtol=RANK_RTOL)
    health = {"v_norm_mean": float(v.norm(dim=-1).mean()), "field_rank": rank, "k": k}
    if health["v_norm_mean"] < COLLAPSE_RATIO * beta:
        warnings.warn(
            f"the learned fields have collapsed: mean ||v|| = {health['v_norm_mean']:.3g} against "
            f"beta = {beta:g}; they carry no symmetry. Train longer, raise the norm weight "
            f"(Weights.reg_id) or use the scale-free 'fields' form of the objective.",
            FieldCollapseWarning,
            stacklevel=3,
        )
    if health["field_rank"] < k:
        warnings.warn(
            f"the k = {k} learned fields span only {health['field_rank']:g} dimensions (median "
            f"numerical rank over samples): some coincide. Train longer, use the 'fields' form "
            f"of the objective (orthogonality of the fields) or a smaller k.",
            FieldCollapseWarning,
            stacklevel=3,
        )
    return health


def _check_train_args(
    discovery: object,
    loss: object,
    samples: object,
    config: object,
    resume: object,
    held_out: object,
) -> None:
    runtime.check_instance(discovery, "discovery", Discovery)
    check_loss(loss)
    if isinstance(config, dict):
        raise TypeError("`config` must be a TrainConfig, got dict: pass TrainConfig(**settings)")
    runtime.check_instance(config, "config", TrainConfig)
    assert isinstance(discovery, Discovery) and isinstance(loss, ParamLoss)
    check_samples(samples, "samples", loss=loss)
    if held_out is not None:
        check_samples(held_out, "held_out", loss=loss)
    P = getattr(discovery.action, "num_params", None)
    if P is not None and P != loss.num_params:
        raise ValueError(
            f"`discovery` acts on {P} parameters, but `loss` {loss.name!r} has "
            f"{loss.num_params}: build the action from this loss"
        )
    if resume is not None:
        runtime.check_instance(resume, "resume", (str, os.PathLike))
        if not Path(resume).is_file():
            raise FileNotFoundError(f"`resume` checkpoint {str(resume)!r} does not exist")


def _postfix(record: dict[str, float]) -> dict[str, str]:
    return {"total": f"{record['total']:.3g}", "inv": f"{record['invariance']:.3g}"}


def train(
    discovery: Discovery,
    loss: ParamLoss,
    samples: Samples,
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    held_out: Samples | None = None,
) -> list[dict[str, float]]:
    """Minimise the discovery objective over minibatches of ``samples``.

    Every step logs each unweighted loss term, the total and the learning rate; the history (one
    dict per step) is returned and saved in checkpoints. A checkpoint (``config.checkpoint``,
    every ``config.checkpoint_every`` steps) holds ``model``, ``optimizer``, ``scheduler``,
    ``rng`` (the minibatch order and the exponential objective's draws), ``order`` (the
    indices of the current pass not yet drawn), ``history``, ``step`` and ``config``. With
    ``resume``, all of it is restored and training continues to ``config.steps``, giving the
    same result as an uninterrupted run; the checkpoint must fit (the model's parameter names
    and shapes, and every setting but ``steps``, ``progress``, ``compile``, ``checkpoint``,
    ``checkpoint_every`` and ``check_fields``).

    With ``config.check_fields``, the fields are checked at the end by :func:`field_health` on
    ``held_out`` (default: the training samples), which warns when they vanish or coincide.

    Raises:
        TypeError: for arguments of the wrong type (a ``config`` that is not a TrainConfig:
            build one with ``TrainConfig(**settings)``).
        ValueError: for samples drawn for another loss, an action whose parameter count is not
            the loss's, or a ``resume`` checkpoint that does not fit, before anything changes.
        FileNotFoundError: for a ``resume`` path that does not exist.
        NonFiniteLossError: when the total loss is NaN or infinite. The checkpoint file is not
            overwritten, and the model, optimiser, scheduler and random state are restored to
            the last checkpointed state if there is one.
    """
    _check_train_args(discovery, loss, samples, config, resume, held_out)
    params = [p for p in discovery.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.decay_every, config.decay)
    gen = torch.Generator().manual_seed(config.seed)
    loop = runtime.TrainingLoop(
        config.steps,
        unit="step",
        settings={"config": asdict(config)},
        may_change=_MAY_CHANGE,
        checkpoint=config.checkpoint,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        desc=loss.name,
        postfix=_postfix,
    )
    loop.track(model=discovery, optimizer=optimizer, scheduler=scheduler, rng=gen)
    loop.values["order"] = torch.empty(0, dtype=torch.long)
    if resume is not None:
        loop.resume(resume)
    infinitesimal = (
        torch.compile(infinitesimal_objective) if config.compile else infinitesimal_objective
    )
    for step in loop:
        order = loop.values["order"]
        if order.numel() < config.batch_size:
            order = torch.randperm(len(samples), generator=gen)
        index, loop.values["order"] = order[: config.batch_size], order[config.batch_size :]
        batch = samples.batch(index.to(samples.theta.device))
        h = discovery.generators()
        if config.objective == "infinitesimal":
            total, terms = infinitesimal(discovery.action, h, batch, config.weights)
        else:
            total, terms = exponential_objective(
                discovery.action,
                h,
                batch,
                loss,
                config.weights,
                t_scale=config.t_scale,
                generator=gen,
            )
        if not runtime.is_finite(total):
            loop.stop(f"loss terms {runtime.non_finite(terms)} are not finite")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        record = {name: float(v.detach()) for name, v in terms.items()}
        record.update(step=step, total=float(total.detach()), lr=scheduler.get_last_lr()[0])
        loop.end(record)
    if config.check_fields:
        field_health(discovery, held_out if held_out is not None else samples, config.weights.beta)
    return loop.history

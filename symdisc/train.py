"""Training a group action and its generators: Adam with step decay, checkpoints, NaN stop."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from symdisc.actions import Action
from symdisc.generators import Generators
from symdisc.losses import ParamLoss
from symdisc.objective import (
    ObjectiveKind,
    Weights,
    exponential_objective,
    infinitesimal_objective,
    tangent_fields,
)
from symdisc.sampler import Samples

__all__ = ["Discovery", "TrainConfig", "NonFiniteLossError", "train"]

logger = logging.getLogger(__name__)


class Discovery(nn.Module):
    """What discovery learns: an action ``a_X(g, theta)`` and k generators of gl(d)."""

    def __init__(self, action: Action, generators: Generators) -> None:
        super().__init__()
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
        weights: the gamma weights and beta.
        t_scale: range of t for the exponential objective.
        checkpoint_every: steps between checkpoints (0: none).
        checkpoint: path of the checkpoint file (written atomically, read by ``resume``).
        seed: seed of the minibatch order and of the objective's random draws.
        progress: show a tqdm progress bar.
        compile: run the objective through ``torch.compile`` (infinitesimal objective only).
            The first step then takes seconds to compile and the following ones about 1.5x less
            time on CPU (``experiments/bench_discovery.py``); worth it for long runs.
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

    def __post_init__(self) -> None:
        if self.objective not in ("infinitesimal", "exponential"):
            raise ValueError(
                f"`objective` must be 'infinitesimal' or 'exponential', got {self.objective!r}"
            )
        for name in ("steps", "batch_size", "decay_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if self.checkpoint_every and self.checkpoint is None:
            raise ValueError("`checkpoint` must name a file when `checkpoint_every` > 0")
        if self.compile and self.objective != "infinitesimal":
            raise ValueError("`compile` supports the 'infinitesimal' objective only")


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term becomes NaN or infinite; the last good checkpoint is kept."""


def train(
    discovery: Discovery,
    loss: ParamLoss,
    samples: Samples,
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
) -> list[dict[str, float]]:
    """Minimise the discovery objective over minibatches of ``samples``.

    Every step logs each unweighted loss term, the total and the learning rate; the history (one
    dict per step) is returned and saved in checkpoints. With ``resume``, the model, optimiser,
    scheduler, random state and history are restored from a checkpoint and training continues to
    ``config.steps``.

    Raises:
        NonFiniteLossError: when the total loss is NaN or infinite. The checkpoint file is not
            overwritten, and ``discovery`` is restored to the last checkpointed state if there is
            one.
    """
    params = [p for p in discovery.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.decay_every, config.decay)
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start = 0
    if resume is not None:
        state = torch.load(resume, weights_only=False)
        discovery.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"])
        history, start = state["history"], state["step"]
    infinitesimal = (
        torch.compile(infinitesimal_objective) if config.compile else infinitesimal_objective
    )
    order = torch.empty(0, dtype=torch.long)
    steps = range(start, config.steps)
    if config.progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=loss.name, initial=start, total=config.steps)
    for step in steps:
        if order.numel() < config.batch_size:
            order = torch.randperm(len(samples), generator=gen)
        index, order = order[: config.batch_size], order[config.batch_size :]
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
        if not math.isfinite(float(total.detach())):
            _stop(discovery, config, step, terms)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        record = {name: float(v.detach()) for name, v in terms.items()}
        record.update(step=step + 1, total=float(total.detach()), lr=scheduler.get_last_lr()[0])
        history.append(record)
        if config.progress:
            steps.set_postfix(total=f"{record['total']:.3g}", inv=f"{record['invariance']:.3g}")
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            _save(
                config.checkpoint, discovery, optimizer, scheduler, gen, history, step + 1, config
            )
    return history


def _save(path, discovery, optimizer, scheduler, gen, history, step, config) -> None:
    state = {
        "model": discovery.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": gen.get_state(),
        "history": history,
        "step": step,
        "config": {k: v for k, v in asdict(config).items() if k != "weights"},
    }
    tmp = Path(f"{path}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a broken checkpoint


def _stop(discovery: Discovery, config: TrainConfig, step: int, terms: dict[str, Tensor]) -> None:
    bad = [name for name, v in terms.items() if not math.isfinite(float(v.detach()))]
    where = "no checkpoint was written"
    if config.checkpoint and Path(config.checkpoint).exists():
        state = torch.load(config.checkpoint, weights_only=False)
        discovery.load_state_dict(state["model"])
        where = f"restored the last good checkpoint {config.checkpoint} (step {state['step']})"
    raise NonFiniteLossError(
        f"training stopped at step {step + 1}: loss terms {bad} are not finite; {where}"
    )

"""The loop state every trainer shares (infrastructure; no paper): position, history, progress
bar, scheduled checkpoints, validated resume and the NaN stop.

A trainer owns its steps; :class:`TrainingLoop` owns everything around them::

    loop = TrainingLoop(config.steps, unit="step", settings={"config": asdict(config)},
                        checkpoint=config.checkpoint, checkpoint_every=config.checkpoint_every,
                        progress=config.progress, desc="discovery")
    loop.track(model=model, optimizer=optimizer, scheduler=scheduler, rng=generator)
    if resume is not None:
        loop.resume(resume)  # validated before anything changes
    for step in loop:  # 1-based, continuing after a resume
        loss = ...
        loop.check_finite(loss, "the minibatch loss")  # the NaN stop
        ...
        loop.end({"loss": float(loss)})  # history, progress bar, scheduled checkpoint
    return loop.history

A checkpoint holds the state of every tracked object under its name (kinds:
:mod:`symdisc.runtime.checkpoint`), the settings, the ``history``, the trainer's further
picklable :attr:`~TrainingLoop.values` (e.g. the best state so far) and the position under the
unit's name (``"step"`` or ``"epoch"``: the number completed).

Imports only torch (and tqdm, when a progress bar is asked for).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
from torch import Tensor

from symdisc.runtime.checkpoint import (
    MAY_CHANGE_ON_RESUME,
    capture,
    checkpoint_mismatches,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from symdisc.runtime.checks import check_bool, check_choice, check_instance, check_int
from symdisc.runtime.errors import CheckpointError, NonFiniteLossError

__all__ = ["TrainingLoop", "Unit", "is_finite", "non_finite"]

Unit = Literal["step", "epoch"]


def is_finite(value: Tensor | float) -> bool:
    """Whether a number, or every entry of a tensor, is finite (neither NaN nor infinite).

    Raises:
        TypeError: for anything but a tensor or a real number.
    """
    if isinstance(value, Tensor):
        return bool(torch.isfinite(value.detach()).all())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`value` must be a Tensor or a real number, got {type(value).__name__}")
    return math.isfinite(value)


def non_finite(values: Mapping[str, Tensor | float]) -> list[str]:
    """The names of the ``values`` that are not finite (:func:`is_finite`), in order."""
    check_instance(values, "values", Mapping)
    return [name for name, v in values.items() if not is_finite(v)]


class TrainingLoop:
    """Position, history, progress bar, checkpoints, resume and the NaN stop of one run.

    Args:
        total: steps or epochs of the whole run; iteration runs from the position after the
            last completed one up to ``total``.
        unit: ``"step"`` or ``"epoch"``: how positions are named in checkpoints and messages.
        settings: ``{name: {setting: value}}`` saved with every checkpoint; a resume requires
            them equal except for the settings in ``may_change``.
        may_change: settings that may differ on resume (default
            :data:`~symdisc.runtime.checkpoint.MAY_CHANGE_ON_RESUME`).
        checkpoint: the checkpoint file (written atomically; the NaN stop restores from it).
        checkpoint_every: write a checkpoint after every ``checkpoint_every``-th step or epoch
            (0: never).
        progress: show a tqdm progress bar.
        desc: the progress bar's label.
        postfix: ``postfix(record) -> {label: text}`` shown on the bar after each record.
        logger: logs every record at DEBUG level when given.

    Attributes:
        position: steps or epochs completed.
        current: the step or epoch being run (1-based), ``position`` outside an iteration.
        history: one record per completed step or epoch (a trainer may put a first record,
            e.g. of the initial model, before the loop).
        values: the trainer's further picklable state, checkpointed and restored as is; every
            key set before :meth:`resume` must be in the checkpoint.

    Raises:
        TypeError, ValueError: for malformed arguments; ``checkpoint_every > 0`` needs a
            ``checkpoint``.
    """

    def __init__(
        self,
        total: int,
        *,
        unit: Unit = "epoch",
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        may_change: Collection[str] = MAY_CHANGE_ON_RESUME,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        progress: bool = False,
        desc: str | None = None,
        postfix: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total = check_int(total, "total", minimum=0)
        self.unit: Unit = check_choice(unit, "unit", Unit)
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=0)
        if checkpoint is not None:
            check_instance(checkpoint, "checkpoint", (str, os.PathLike))
        elif self.checkpoint_every:
            raise ValueError("`checkpoint` must name a file when `checkpoint_every` > 0")
        self.checkpoint = checkpoint
        self.progress = check_bool(progress, "progress")
        if settings is not None:
            check_instance(settings, "settings", Mapping)
            for name, s in settings.items():
                check_instance(s, f"settings[{name!r}]", Mapping)
        if desc is not None:
            check_instance(desc, "desc", str)
        if postfix is not None and not callable(postfix):
            raise TypeError(f"`postfix` must be callable or None, got {type(postfix).__name__}")
        if logger is not None:
            check_instance(logger, "logger", logging.Logger)
        if isinstance(may_change, (str, bytes)):
            raise TypeError("`may_change` must be a collection of setting names, got a str")
        self.settings = {name: dict(s) for name, s in (settings or {}).items()}
        self.may_change = frozenset(may_change)
        self.desc, self.postfix, self.logger = desc, postfix, logger
        self.objects: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        self.history: list[Any] = []
        self.position = 0
        self.current = 0
        self._bar: Any = None

    # -- what is checkpointed ------------------------------------------------------------

    def _reserved(self) -> set[str]:
        return {"history", self.unit, *self.settings, *self.objects, *self.values}

    def track(self, **objects: Any) -> None:
        """Checkpoint these objects under their keyword names: modules, optimisers,
        schedulers (anything with ``state_dict``/``load_state_dict``), ``torch.Generator``\\ s,
        tensors and dicts of tensors (restored in place). Call before :meth:`resume`.

        Raises:
            ValueError: for a name already in use.
        """
        for name, obj in objects.items():
            if name in self._reserved():
                raise ValueError(f"`{name}` is already checkpointed")
            is_state = hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")
            tensors = isinstance(obj, Mapping) and all(isinstance(v, Tensor) for v in obj.values())
            if not (is_state or tensors or isinstance(obj, (torch.Generator, Tensor))):
                raise TypeError(
                    f"`{name}` must have a state_dict, or be a generator, a tensor or a dict of "
                    f"tensors, got {type(obj).__name__}"
                )
            self.objects[name] = obj

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the run as it is now.

        Raises:
            ValueError: for a key of :attr:`values` that names something else checkpointed.
        """
        clash = set(self.values) & {"history", self.unit, *self.settings, *self.objects}
        if clash:
            raise ValueError(f"`values` must not use the checkpointed names {sorted(clash)}")
        state = {name: capture(obj) for name, obj in self.objects.items()}
        state.update(self.values)
        state.update(history=self.history, **{self.unit: self.position})
        state.update(self.settings)
        return state

    def mismatches(self, state: Mapping[str, Any]) -> list[str]:
        """Every way a checkpoint ``state`` does not fit this run (empty if it fits)."""
        return checkpoint_mismatches(
            state,
            self.objects,
            settings=self.settings,
            may_change=self.may_change,
            keys=("history", self.unit, *self.values),
        )

    def _load(self, state: Mapping[str, Any]) -> None:
        for name, obj in self.objects.items():
            restore(obj, state[name])
        for name in self.values:
            self.values[name] = state[name]
        self.history, self.position = state["history"], state[self.unit]
        self.current = self.position

    def resume(self, path: str | os.PathLike) -> None:
        """Continue from the checkpoint at ``path``: every tracked object, the values, the
        history and the position.

        Raises:
            ValueError: naming every way the checkpoint does not fit (the modules' keys and
                shapes, the optimisers' structure, the settings, ...), before anything is
                changed.
        """
        state = read_checkpoint(path)
        problems = self.mismatches(state)
        if problems:
            raise ValueError(f"checkpoint {path} does not fit this run: " + "; ".join(problems))
        self._load(state)

    def save(self) -> None:
        """Write the checkpoint now (atomically)."""
        if self.checkpoint is None:
            raise ValueError("`checkpoint` must name a file to save to")
        save_checkpoint(self.state_dict(), self.checkpoint)

    # -- the run -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[int]:
        """The steps or epochs still to run, 1-based (under a tqdm bar with ``progress``)."""
        numbers: Any = range(self.position + 1, self.total + 1)
        if self.progress:
            from tqdm.auto import tqdm

            numbers = self._bar = tqdm(
                numbers, desc=self.desc, initial=self.position, total=self.total
            )
        for n in numbers:
            self.current = n
            yield n

    def end(self, record: Any) -> None:
        """Close the current step or epoch: append ``record`` to the history, show it on the
        progress bar and write the checkpoint when one is due."""
        self.history.append(record)
        self.position = self.current
        if self.logger is not None:
            self.logger.debug("%s %d: %s", self.unit, self.position, record)
        if self._bar is not None and self.postfix is not None:
            self._bar.set_postfix(self.postfix(record))
        if self.checkpoint_every and self.position % self.checkpoint_every == 0:
            self.save()

    # -- the NaN stop --------------------------------------------------------------------

    def check_finite(self, value: Tensor | float, what: str) -> None:
        """The NaN stop (:meth:`stop`) unless ``value`` (a number or every entry of a tensor)
        is finite; ``what`` names it in the message."""
        check_instance(what, "what", str)
        if is_finite(value):
            return
        if isinstance(value, Tensor):
            if value.numel() != 1:
                self.stop(f"{what} is not finite")
            value = float(value.detach())
        self.stop(f"{what} is {value}")

    def stop(self, what: str) -> NoReturn:
        """Stop the run: restore the last good checkpoint, if one was written and fits, into
        every tracked object (the values, history and position with it) and raise.

        Raises:
            NonFiniteLossError: always, saying at which step or epoch the run stopped,
                ``what`` was not finite and what was restored. The checkpoint file is left
                as it is.
        """
        path, where = self.checkpoint, f"{self.unit} {self.current}"
        if self._bar is not None:
            self._bar.close()
        if path is None:
            done = "no checkpoint file was set, nothing was restored"
        elif not Path(path).exists():
            done = "no checkpoint was written, nothing was restored"
        else:
            try:
                state = read_checkpoint(path)
            except CheckpointError as error:  # reported in the NonFiniteLossError below
                state, problems = None, [str(error)]
            else:
                problems = self.mismatches(state)
            if problems:
                done = f"the checkpoint {path} does not fit, nothing was restored: " + "; ".join(
                    problems
                )
            else:
                self._load(state)
                names = ", ".join([*self.objects, *self.values, "history"])
                done = (
                    f"restored {names} from the last good checkpoint {path} "
                    f"({self.unit} {state[self.unit]})"
                )
        raise NonFiniteLossError(f"training stopped at {where}: {what}; {done}")

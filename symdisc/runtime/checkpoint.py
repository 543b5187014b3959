"""Atomic checkpoints and a resume that is validated before it changes anything (infrastructure
shared by every trainer; no paper).

A checkpoint is one ``torch.save``-d dict. Each trainer stores its objects under names of its
choosing; this module knows how to capture, validate and restore each kind of object:

=========================  ===================================  ===============================
kind                       saved                                validated on resume
=========================  ===================================  ===============================
``nn.Module``              ``state_dict()``                     the same keys, every tensor of
                                                                the same shape
``torch.optim.Optimizer``  ``state_dict()``                     the same number of parameter
                                                                groups and of parameters in
                                                                each; per-parameter state
                                                                tensors of the parameter's
                                                                shape (element-wise optimisers)
``torch.Generator``        ``get_state()``                      a state of the same size
``Tensor``                 a detached copy; restored in place   the same shape and dtype
``Mapping[str, Tensor]``   detached copies; restored in place   the same keys, shapes, dtypes
anything with              ``state_dict()``                     the same keys (e.g. one kind
``state_dict`` and                                              of learning-rate scheduler)
``load_state_dict``
=========================  ===================================  ===============================

Settings (a trainer's configuration as a dict, e.g. ``dataclasses.asdict(config)``) are saved
too, and a resume requires every setting to be equal except those in ``may_change``; by default
:data:`MAY_CHANGE_ON_RESUME`: the length of the run (``steps``, ``epochs``: a resumed run
continues up to the new count, its schedules keeping their saved state), whether a progress bar
is shown (``progress``) and where and how often checkpoints are written (``checkpoint``,
``checkpoint_every``).

:func:`load_checkpoint` reads a file, checks *all* of the above and raises one ``ValueError``
listing every difference before it restores a single object; only then does it restore them
all. Checkpoints are unpickled (``weights_only=False``: they hold histories and settings): load
only files you trust.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from symdisc.runtime.checks import check_instance, check_path
from symdisc.runtime.errors import CheckpointError

__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "capture",
    "checkpoint_mismatches",
    "load_checkpoint",
    "read_checkpoint",
    "restore",
    "save_checkpoint",
]

MAY_CHANGE_ON_RESUME = frozenset({"steps", "epochs", "progress", "checkpoint", "checkpoint_every"})
"""Settings that may differ between a checkpoint and the run that resumes from it."""

_SHOWN = 4  # differences listed per object before "and N more"


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``torch.save(state)`` to ``path`` through ``{path}.tmp`` and an atomic rename: a crash
    mid-write never leaves a broken checkpoint (the previous one stays whole).

    Raises:
        TypeError: for a ``state`` that is not a dict or a ``path`` that is not a str or path.
    """
    check_instance(state, "state", Mapping)
    path = check_path(path, "path")
    tmp = Path(f"{os.fspath(path)}.tmp")
    torch.save(dict(state), tmp)
    tmp.replace(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The dict saved at ``path``.

    Raises:
        TypeError: for a ``path`` that is not a str or path.
        FileNotFoundError: for a missing file.
        CheckpointError: (a ``ValueError``) for a truncated or corrupted file, or one that
            ``torch.save`` did not write.
        ValueError: for a file that does not hold a checkpoint dict.
    """
    path = check_path(path, "path", exists=True)
    try:
        state = torch.load(path, weights_only=False)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"`path` {str(path)!r} is not a readable checkpoint (truncated, corrupted or not "
            f"written by torch.save): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} must hold a dict, got {type(state).__name__}")
    return state


def capture(obj: Any) -> Any:
    """What a checkpoint saves of ``obj`` (see the module docstring for the kinds)."""
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, Mapping):
        return {k: v.detach().clone() for k, v in obj.items()}
    return obj.state_dict()


def restore(obj: Any, saved: Any) -> None:
    """Put the ``saved`` state (from :func:`capture`) back into ``obj``; tensors in place."""
    if isinstance(obj, torch.Generator):
        obj.set_state(saved)
    elif isinstance(obj, Tensor):
        with torch.no_grad():
            obj.copy_(saved)
    elif isinstance(obj, Mapping):
        with torch.no_grad():
            for k, v in obj.items():
                v.copy_(saved[k])
    else:
        obj.load_state_dict(saved)


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def _capped(name: str, problems: list[str]) -> list[str]:
    shown = [f"{name}: {p}" for p in problems[:_SHOWN]]
    if len(problems) > _SHOWN:
        shown.append(f"{name}: and {len(problems) - _SHOWN} more differences")
    return shown


def _key_problems(saved: Collection[str], current: Collection[str]) -> list[str]:
    missing = [k for k in current if k not in saved]
    extra = [k for k in saved if k not in current]
    out = []
    if missing:
        out.append(f"missing from the checkpoint: {missing}")
    if extra:
        out.append(f"in the checkpoint only: {extra}")
    return out


def _tensor_problems(saved: Mapping[str, Any], current: Mapping[str, Tensor]) -> list[str]:
    out = _key_problems(saved, current)
    for key, now in current.items():
        if key not in saved:
            continue
        old = saved[key]
        if not isinstance(old, Tensor) or old.shape != now.shape:
            out.append(f"`{key}` has shape {_shape(old)} in the checkpoint, {_shape(now)} here")
        elif old.dtype != now.dtype:
            out.append(f"`{key}` has dtype {old.dtype} in the checkpoint, {now.dtype} here")
    return out


def _optimizer_problems(saved: Any, optimizer: torch.optim.Optimizer) -> list[str]:
    if not (isinstance(saved, Mapping) and {"state", "param_groups"} <= set(saved)):
        return ["not an optimiser state"]
    old, now = saved["param_groups"], optimizer.param_groups
    if len(old) != len(now):
        return [f"{len(old)} parameter groups in the checkpoint, {len(now)} here"]
    out = []
    params = []
    for i, (a, b) in enumerate(zip(old, now)):
        if len(a["params"]) != len(b["params"]):
            out.append(
                f"group {i} has {len(a['params'])} parameters in the checkpoint, "
                f"{len(b['params'])} here"
            )
        params.extend(zip(a["params"], b["params"]))
    if out or isinstance(optimizer, torch.optim.LBFGS):  # LBFGS keeps flat vectors
        return out
    for index, p in params:
        for key, value in saved["state"].get(index, {}).items():
            if isinstance(value, Tensor) and value.ndim > 0 and value.shape != p.shape:
                out.append(
                    f"state `{key}` of parameter {index} has shape {tuple(value.shape)} in the "
                    f"checkpoint, the parameter {tuple(p.shape)} here"
                )
    return out


def _problems(saved: Any, obj: Any) -> list[str]:
    """How the ``saved`` state does not fit ``obj`` (empty if it fits)."""
    if isinstance(obj, nn.Module):
        if not isinstance(saved, Mapping):
            return ["not a state_dict"]
        return _tensor_problems(saved, obj.state_dict())
    if isinstance(obj, torch.optim.Optimizer):
        return _optimizer_problems(saved, obj)
    if isinstance(obj, torch.Generator):
        now = obj.get_state()
        if not isinstance(saved, Tensor) or saved.dtype != now.dtype or saved.shape != now.shape:
            return [f"a generator state {_shape(saved)} in the checkpoint, {_shape(now)} here"]
        return []
    if isinstance(obj, Tensor):
        return _tensor_problems({"tensor": saved}, {"tensor": obj.detach()})
    if isinstance(obj, Mapping):
        if not isinstance(saved, Mapping):
            return ["not a dict of tensors"]
        return _tensor_problems(saved, {k: v.detach() for k, v in obj.items()})
    if not isinstance(saved, Mapping):
        return ["not a state_dict"]
    return _key_problems(saved, obj.state_dict())


def _settings_problems(
    saved: Any, current: Mapping[str, Any], may_change: Collection[str]
) -> list[str]:
    if not isinstance(saved, Mapping):
        return ["not a dict of settings"]
    out = _key_problems(saved, current)
    for key, now in current.items():
        if key in saved and key not in may_change and saved[key] != now:
            out.append(f"`{key}` is {saved[key]!r} in the checkpoint, {now!r} here")
    return out


def checkpoint_mismatches(
    state: Mapping[str, Any],
    objects: Mapping[str, Any],
    *,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    may_change: Collection[str] = MAY_CHANGE_ON_RESUME,
    keys: Collection[str] = (),
) -> list[str]:
    """Every way the checkpoint ``state`` does not fit the ``objects`` and ``settings`` of this
    run (empty when it fits); ``keys`` are further entries that must be present.

    Args:
        state: a checkpoint dict (:func:`read_checkpoint`).
        objects: ``{name: object}`` saved under ``name`` (kinds: module docstring).
        settings: ``{name: {setting: value}}`` saved under ``name``; every setting not in
            ``may_change`` must be equal.
        may_change: settings that may differ.
        keys: names of further saved values (a history, a position) that must be present.
    """
    check_instance(state, "state", Mapping)
    check_instance(objects, "objects", Mapping)
    if settings is not None:
        check_instance(settings, "settings", Mapping)
    out = []
    settings = settings or {}
    for name in (*objects, *settings, *keys):
        if name not in state:
            out.append(f"no `{name}` in the checkpoint")
    for name, obj in objects.items():
        if name in state:
            out.extend(_capped(name, _problems(state[name], obj)))
    for name, current in settings.items():
        if name in state:
            out.extend(_capped(name, _settings_problems(state[name], current, may_change)))
    return out


def load_checkpoint(
    path: str | os.PathLike,
    objects: Mapping[str, Any],
    *,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    may_change: Collection[str] = MAY_CHANGE_ON_RESUME,
    keys: Collection[str] = (),
) -> dict[str, Any]:
    """Read the checkpoint at ``path``, check that it fits (:func:`checkpoint_mismatches`), and
    only then restore every object of ``objects`` from it.

    Returns:
        the whole checkpoint dict (for the caller's plain values, e.g. ``state["history"]``).

    Raises:
        TypeError: for ``objects`` that is not a dict.
        FileNotFoundError, CheckpointError: as :func:`read_checkpoint`.
        ValueError: naming every difference, before any object is changed.
    """
    check_instance(objects, "objects", Mapping)
    state = read_checkpoint(path)
    problems = checkpoint_mismatches(
        state, objects, settings=settings, may_change=may_change, keys=keys
    )
    if problems:
        raise ValueError(f"checkpoint {path} does not fit this run: " + "; ".join(problems))
    for name, obj in objects.items():
        restore(obj, state[name])
    return state

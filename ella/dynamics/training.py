"""Training on the next-frame task of :mod:`ella.dynamics.plume` (paper 003, section 4: the
models are trained with Adam on the mean squared next-frame error; the curvature is measured
early in training and at the best validation error), on the shared loop of
:mod:`symdisc.runtime` (checkpoints, validated resume, NaN stop, progress bar)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from ella.dynamics.plume import NextFrameData
from ella.summary import summary_repr
from symdisc.runtime import (
    TrainingLoop,
    check_bool,
    check_float,
    check_instance,
    check_int,
)

__all__ = ["rmse", "FitResult", "fit_next_frame"]

_SPLITS = ("train", "val", "test")


def check_pair(x: object, y: object, names: tuple[str, str] = ("x", "y")) -> tuple[Tensor, Tensor]:
    """``(x, y)`` if both are tensors with the same non-zero number of examples (dim 0)."""
    x = check_instance(x, names[0], Tensor)
    y = check_instance(y, names[1], Tensor)
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must share a non-empty first dimension, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def check_splits(data: object, name: str = "data") -> None:
    """``data`` has ``train``, ``val`` and ``test`` pairs of tensors (:func:`check_pair`)."""
    for split in _SPLITS:
        if not hasattr(data, split):
            raise TypeError(
                f"`{name}` must have `train`, `val` and `test` pairs (x, y) (e.g. NextFrameData), "
                f"got {type(data).__name__} without `{split}`"
            )
        pair = getattr(data, split)
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"`{name}.{split}` must be a pair (x, y) of tensors")
        check_pair(*pair, names=(f"{name}.{split}[0]", f"{name}.{split}[1]"))


def rmse(model: torch.nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Root mean squared error ``sqrt(mean (model(x) - y)^2)`` over all entries.

    Raises:
        TypeError, ValueError: for a ``model`` that is not a module, ``x`` and ``y`` that are
            not tensors of the same non-zero number of examples, or a ``batch_size`` < 1.
    """
    check_instance(model, "model", torch.nn.Module)
    x, y = check_pair(x, y)
    check_int(batch_size, "batch_size", minimum=1)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            d = model(x[i : i + batch_size]) - y[i : i + batch_size]
            total += float(d.double().pow(2).sum())
            count += d.numel()
    return math.sqrt(total / count)


@dataclass(repr=False)
class FitResult:
    """What :func:`fit_next_frame` returns.

    Attributes:
        history: per epoch (1-based, index 0 the initial model) ``train_rmse``, ``val_rmse``,
            ``test_rmse``.
        best_epoch: the epoch of the lowest validation RMSE.
        early_epoch: the epoch of the ``"early"`` weights.
        checkpoints: ``{"early": state, "best": state}``, detached copies of the state dict at
            ``early_epoch`` and at ``best_epoch``.
    """

    history: dict[str, list[float]]
    best_epoch: int
    early_epoch: int
    checkpoints: dict[str, dict[str, Tensor]]

    def __repr__(self) -> str:
        return summary_repr(self)


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _postfix(record: dict[str, float]) -> dict[str, str]:
    return {"val_rmse": f"{record['val_rmse']:.3g}"}


def fit_next_frame(
    model: torch.nn.Module,
    data: NextFrameData,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    early_epoch: int = 3,
    penalty: float = 0.0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 0,
    resume: str | os.PathLike | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``model`` with Adam on the mean squared next-frame error (plus ``penalty`` times
    :func:`~ella.layers.relaxation_penalty`), one seeded shuffle per epoch, and keep the
    weights of epoch ``early_epoch`` and of the epoch with the lowest validation RMSE.

    Every ``checkpoint_every`` epochs a checkpoint is written atomically to ``checkpoint``:
    ``model``, ``optimizer``, ``rng`` (the shuffles), ``best_epoch``, ``snapshots`` (the
    early and best weights so far), ``history`` (one record per epoch, the initial model's
    first), ``epoch`` and ``config`` (``epochs``, ``lr``, ``batch_size``, ``seed``,
    ``early_epoch``, ``penalty``). With ``resume``, all of it is restored from such a
    checkpoint and training continues to ``epochs``, giving the same result as an
    uninterrupted run; the checkpoint must fit the model and every setting but ``epochs``.

    Args:
        model: the network, trained in place.
        data: the next-frame data (its train split is trained on, all three are recorded).
        epochs: epochs in total.
        lr: Adam's learning rate.
        batch_size: pairs per minibatch.
        seed: seed of the shuffles (a generator on the data's device).
        early_epoch: the epoch whose weights are kept as ``"early"``, in ``[1, epochs]``.
        penalty: weight of the relaxation penalty (0: none).
        checkpoint: the checkpoint file.
        checkpoint_every: epochs between checkpoints (0: none).
        resume: a checkpoint to continue from.
        progress: show a tqdm progress bar over epochs.

    Raises:
        TypeError, ValueError: for malformed arguments (a ``data`` without ``train``, ``val``,
            ``test`` pairs of tensors, ``early_epoch`` not in ``[1, epochs]``,
            ``checkpoint_every > 0`` without a ``checkpoint``), or a ``resume`` checkpoint that
            does not fit (before anything changes).
        NonFiniteLossError: for a non-finite minibatch loss (e.g. NaN in the training data)
            or a non-finite RMSE (the initial model's validation or test RMSE, before any step,
            or any RMSE after an epoch: e.g. NaN in the validation data); the model,
            optimiser and shuffles are restored to the last checkpoint if there is one, and
            the checkpoint file is kept.
    """
    from ella.layers import relaxation_penalty

    check_instance(model, "model", torch.nn.Module)
    check_int(epochs, "epochs", minimum=1)
    check_int(early_epoch, "early_epoch", minimum=1)
    if early_epoch > epochs:
        raise ValueError(f"`early_epoch` must be an int in [1, {epochs}], got {early_epoch!r}")
    check_float(lr, "lr", positive=True)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(seed, "seed", minimum=0)
    check_float(penalty, "penalty", nonnegative=True)
    check_bool(progress, "progress")
    check_splits(data)
    x, y = data.train
    gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    config = dict(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        early_epoch=early_epoch,
        penalty=penalty,
    )
    loop = TrainingLoop(
        epochs,
        unit="epoch",
        settings={"config": config},
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        progress=progress,
        desc="next frame",
        postfix=_postfix,
    )
    loop.track(model=model, optimizer=opt, rng=gen)
    loop.values.update(best_epoch=0, snapshots={})

    def record() -> dict[str, float]:
        return {f"{s}_rmse": rmse(model, *getattr(data, s)) for s in _SPLITS}

    if resume is not None:
        loop.resume(resume)
    else:
        first = record()
        for key in ("val_rmse", "test_rmse"):  # NaN in a held-out split: stop before a step
            loop.check_finite(first[key], f"the initial {key}")
        loop.history.append(first)
        loop.values["snapshots"]["best"] = _snapshot(model)
    for epoch in loop:
        order = torch.randperm(len(x), generator=gen, device=x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            if penalty:
                loss = loss + penalty * relaxation_penalty(model)
            loop.check_finite(loss, "the minibatch loss")
            opt.zero_grad()
            loss.backward()
            opt.step()
        now = record()
        for key, value in now.items():
            loop.check_finite(value, f"the {key}")
        snapshots = loop.values["snapshots"]
        if epoch == early_epoch:
            snapshots["early"] = _snapshot(model)
        if now["val_rmse"] < loop.history[loop.values["best_epoch"]]["val_rmse"]:
            loop.values["best_epoch"] = epoch
            snapshots["best"] = _snapshot(model)
        loop.end(now)
    history = {f"{s}_rmse": [r[f"{s}_rmse"] for r in loop.history] for s in _SPLITS}
    return FitResult(history, loop.values["best_epoch"], early_epoch, loop.values["snapshots"])

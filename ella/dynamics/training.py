"""Training on the next-frame task of :mod:`ella.dynamics.plume` (paper 003)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ella.dynamics.plume import NextFrameData

__all__ = ["rmse", "FitResult", "fit_next_frame"]


def rmse(model: torch.nn.Module, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Root mean squared error ``sqrt(mean (model(x) - y)^2)`` over all entries."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            d = model(x[i : i + batch_size]) - y[i : i + batch_size]
            total += float(d.double().pow(2).sum())
            count += d.numel()
    return math.sqrt(total / count)


@dataclass
class FitResult:
    """What :func:`fit_next_frame` returns.

    Attributes:
        history: per epoch (1-based, index 0 the initial model) ``train_rmse``, ``val_rmse``,
            ``test_rmse``.
        best_epoch: the epoch of the lowest validation RMSE.
        checkpoints: ``{"early": state, "best": state}``, detached copies of the state dict at
            ``early_epoch`` and at ``best_epoch``.
    """

    history: dict[str, list[float]]
    best_epoch: int
    early_epoch: int
    checkpoints: dict[str, dict[str, Tensor]]


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
    progress=None,
) -> FitResult:
    """Train ``model`` with Adam on the mean squared next-frame error (plus ``penalty`` times
    :func:`~ella.layers.relaxation_penalty`), one seeded shuffle per epoch, and keep the
    weights of epoch ``early_epoch`` and of the epoch with the lowest validation RMSE.

    ``progress`` is an optional callable ``progress(epoch, history)`` (e.g. a tqdm update).

    Raises:
        ValueError: for ``epochs < 1`` or ``early_epoch`` not in ``[1, epochs]``.
    """
    from ella.layers import relaxation_penalty

    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive int, got {epochs!r}")
    if not isinstance(early_epoch, int) or not 1 <= early_epoch <= epochs:
        raise ValueError(f"`early_epoch` must be an int in [1, {epochs}], got {early_epoch!r}")
    x, y = data.train
    gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"train_rmse": [], "val_rmse": [], "test_rmse": []}

    def record() -> None:
        history["train_rmse"].append(rmse(model, *data.train))
        history["val_rmse"].append(rmse(model, *data.val))
        history["test_rmse"].append(rmse(model, *data.test))

    def snapshot() -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    record()
    best_epoch, checkpoints = 0, {"best": snapshot()}
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=gen, device=x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            if penalty:
                loss = loss + penalty * relaxation_penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
        record()
        if epoch == early_epoch:
            checkpoints["early"] = snapshot()
        if history["val_rmse"][-1] < history["val_rmse"][best_epoch]:
            best_epoch, checkpoints["best"] = epoch, snapshot()
        if progress is not None:
            progress(epoch, history)
    return FitResult(history, best_epoch, early_epoch, checkpoints)

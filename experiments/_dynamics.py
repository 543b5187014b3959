"""What the scripts of paper 003 (``training_dynamics.py``, ``superresolution.py``) share: the two
checkpoints (an early epoch and the best validation epoch), the curvature measures taken at each
(:func:`ella.dynamics.curvature_measures`), their summary over seeds, and moving a data set's
splits to a device. No maths here: the measures are in :mod:`ella.dynamics.measures`.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable

import torch

from ella.dynamics import curvature_measures

CHECKPOINTS = ("early", "best")


def mean_se(values: list) -> tuple[float | None, float | None]:
    """Mean and standard error over seeds of the values that are not None (None, None when there
    are none; a standard error of 0 for one)."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def measure_checkpoints(
    model: torch.nn.Module,
    fit,
    train: tuple[torch.Tensor, torch.Tensor],
    settings: dict,
    seed: int,
    dense: bool,
    *,
    test_metric: str,
    extra: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], dict],
) -> dict:
    """The curvature measures of ``model`` at both checkpoints of ``fit``.

    ``settings["measure_pairs"]`` training pairs, drawn with ``seed``, enter the measures (with
    the settings ``radii``, ``directions``, ``hessian_samples``, ``top_k``, ``slq_steps``);
    ``dense`` adds the full spectrum. Each checkpoint's record also holds its ``epoch``, the
    ``test_metric`` of ``fit.history`` at that epoch, and what ``extra(model, x, y)`` returns
    (called with the checkpoint loaded and the measured pairs).

    Returns:
        ``{"seed", "history", "best_epoch", "early": {...}, "best": {...}}``.
    """
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train[0]), generator=gen)[: settings["measure_pairs"]]
    pick = pick.to(train[0].device)
    xm, ym = train[0][pick], train[1][pick]
    run: dict = {"seed": seed, "history": fit.history, "best_epoch": fit.best_epoch}
    for name in CHECKPOINTS:
        model.load_state_dict(fit.checkpoints[name])
        epoch = fit.best_epoch if name == "best" else fit.early_epoch
        m = curvature_measures(
            model,
            xm,
            ym,
            radii=settings["radii"],
            directions=settings["directions"],
            hessian_samples=settings["hessian_samples"],
            top_k=settings["top_k"],
            slq_steps=settings["slq_steps"],
            dense=dense,
            seed=seed,
        )
        m["epoch"] = epoch
        m[test_metric] = fit.history[test_metric][epoch]
        m.update(extra(model, xm, ym))
        run[name] = m
    return run


def summarise_checkpoints(runs: list[dict], metrics: dict[str, Callable[[dict], object]]) -> dict:
    """Case metrics over seeds: for each ``key: read`` of ``metrics``, the mean of
    ``read(record)`` and its standard error ``<key>_se``; best-epoch values at top level,
    early-epoch ones with suffix ``_early``; plus ``n_seeds``, ``params``, ``top_eigs``, the
    number of seeds with a dense spectrum ``n_dense_seeds`` and the mean ``train_s``."""
    out: dict = {"n_seeds": len(runs), "params": runs[0]["best"]["params"]}
    for ckpt in CHECKPOINTS:
        suffix = "" if ckpt == "best" else "_early"
        rows = [r[ckpt] for r in runs]
        for key, read in metrics.items():
            out[key + suffix], out[f"{key}_se{suffix}"] = mean_se([read(m) for m in rows])
        out["top_eigs" + suffix] = [m["top_eigs"] for m in rows]
        out["n_dense_seeds" + suffix] = sum(m["n_negative"] is not None for m in rows)
    out["train_s"] = statistics.fmean(r["train_s"] for r in runs)
    return out


def to_device(data, device: str):
    """A data set (a NamedTuple or dataclass with ``train``, ``val``, ``test`` pairs) with its
    pairs moved to ``device``; other fields unchanged."""

    def move(pair: tuple) -> tuple:
        return tuple(t.to(device) for t in pair)

    moved = {k: move(getattr(data, k)) for k in ("train", "val", "test")}
    if dataclasses.is_dataclass(data):
        return dataclasses.replace(data, **moved)
    return data._replace(**moved)

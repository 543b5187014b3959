"""A loss over chosen parameters of any ``nn.Module`` ("bring your own model").

Paper 002's discovery (section 4, eqs. 2-4) needs only a loss of parameters and data; a
:class:`ModuleLoss` gives it one for an arbitrary network, with its own data sampler, so that the
pipeline runs unchanged on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from symdisc.curvature import Params
from symdisc.losses.base import ParamLoss
from symdisc.runtime.checks import check_choice, check_instance

__all__ = ["DataSampler", "ModuleLoss", "module_loss", "ThetaScaleKind"]

ThetaScaleKind = Literal["module", "unit"]

DataSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class ModuleLoss(ParamLoss):
    """``loss_fn(model(X), Y)`` as a loss of chosen parameters of ``model`` (:func:`module_loss`).

    Attributes:
        model: the network; never modified.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        data_sampler: ``data_sampler(n, generator) -> (X (n, *x_shape), Y (n, *y_shape))``;
            :func:`symdisc.sampler.sample` draws data through it.
        param_scale: (P,) standard deviation of each entry of theta for
            :func:`symdisc.sampler.sample` (times its ``theta_scale``), or None for 1.
    """

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    data_sampler: DataSampler
    param_scale: Tensor | None = field(default=None, compare=False)


def module_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data_sampler: DataSampler,
    params: Sequence[str | nn.Module],
    *,
    name: str = "module",
    theta_scale: ThetaScaleKind = "module",
) -> ModuleLoss:
    """A :class:`ModuleLoss` over chosen parameters of any ``nn.Module``.

    One sample is ``(theta, X, Y)``: theta the chosen parameters, flattened in the order given,
    and a batch ``X`` of inputs with targets ``Y`` as the model takes them; the loss is
    ``loss_fn(model(X), Y)`` evaluated with ``torch.func.functional_call``, every other parameter
    fixed at the module's value. The module itself is never modified.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        data_sampler: ``data_sampler(n, generator) -> (X (n, *x_shape), Y (n, *y_shape))``,
            n samples of one batch each; :func:`symdisc.sampler.sample` draws data through it.
        params: the parameters to act on, each named explicitly: an exact name from
            ``model.named_parameters()`` or a submodule (all of its own parameters). Never a
            substring pattern.
        name: a label for results and plots.
        theta_scale: how :func:`symdisc.sampler.sample` draws theta. ``"module"`` (default):
            ``N(0, s_t^2)`` per entry with s_t proportional to the root mean square of the
            module's own tensor t (a tensor that is all zeros takes the mean of the others), so
            each tensor is drawn at its scale relative to the others (e.g. ``1 / sqrt(fan_in)``
            for freshly initialised ``nn.Linear`` layers), and normalised so that theta as a whole
            has root mean square 1 (times ``sample``'s ``theta_scale``). ``"unit"``: ``N(0, 1)``
            for every entry, as paper 002 draws them, whatever the layers' widths. The overall
            scale is kept at 1 rather than the module's absolute one: drawn at the init scale of
            ``nn.Linear`` (rms 0.3-0.4 for fan-ins 2 and 3), the 2-3-1 leaky-ReLU net's loss
            hardly depends on the first layer (median gradient norm 0.6 there against 3.8 on the
            output bias), fields along it look invariant without being symmetries, and discovery
            put 70% of the field outside the rescaling space (0.05% at scale 1).
    Raises:
        TypeError: for a ``model`` that is not an ``nn.Module``, or a ``params`` entry that is
            neither a name nor a module.
        ValueError: for a name that is not a parameter of ``model``, a module that is not one of
            its submodules, a parameter named twice, or a sampler that does not return a pair of
            tensors with a leading dimension n.
    """
    check_instance(model, "model", nn.Module)
    named = dict(model.named_parameters())
    owner = {id(m): prefix for prefix, m in model.named_modules()}
    chosen: list[str] = []
    for item in params:
        if isinstance(item, nn.Module):
            if id(item) not in owner:
                raise ValueError(
                    f"`params` names a module that is not a submodule of `model`: {item}"
                )
            prefix = owner[id(item)]
            chosen += [
                f"{prefix}.{n}" if prefix else n for n, _ in item.named_parameters(recurse=False)
            ]
        elif isinstance(item, str):
            if item not in named:
                raise ValueError(
                    f"`params` must name parameters of `model`; {item!r} is not among "
                    f"{sorted(named)}"
                )
            chosen.append(item)
        else:
            raise TypeError(
                f"`params` entries must be parameter names or modules, got {type(item).__name__}"
            )
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"`params` must select each parameter once and at least one, got {chosen}")
    fixed = {n: p.detach() for n, p in named.items() if n not in chosen}
    X1, Y1 = _check_sampler(data_sampler)

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        return loss_fn(torch.func.functional_call(model, {**fixed, **p}, (X,)), Y)

    shapes = {n: tuple(named[n].shape) for n in chosen}
    x_shape, y_shape = tuple(X1.shape[1:]), tuple(Y1.shape[1:])
    check_choice(theta_scale, "theta_scale", ThetaScaleKind)
    scale = (
        _module_scale({n: named[n].detach() for n in chosen}) if theta_scale == "module" else None
    )
    return ModuleLoss(name, fn, shapes, x_shape, y_shape, model, loss_fn, data_sampler, scale)


def _module_scale(tensors: dict[str, Tensor]) -> Tensor:
    """(P,) per entry: the root mean square of its tensor (zeros: the mean of the others, or 1),
    normalised to a root mean square of 1 over all P entries."""
    rms = {n: float(t.double().pow(2).mean().sqrt()) for n, t in tensors.items()}
    alive = [r for r in rms.values() if r > 0]
    fallback = sum(alive) / len(alive) if alive else 1.0
    scale = torch.cat(
        [torch.full((t.numel(),), rms[n] if rms[n] > 0 else fallback) for n, t in tensors.items()]
    )
    return scale / scale.pow(2).mean().sqrt()


def _check_sampler(sampler: DataSampler) -> tuple[Tensor, Tensor]:
    out = sampler(1, torch.Generator().manual_seed(0))
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise ValueError("`data_sampler(n, generator)` must return a pair of tensors (X, Y)")
    if out[0].shape[0] != 1 or out[1].shape[0] != 1:
        raise ValueError(
            f"`data_sampler(n, generator)` must return tensors with leading dimension n, got "
            f"shapes {tuple(out[0].shape)} and {tuple(out[1].shape)} for n = 1"
        )
    return out

"""A loss over chosen parameters of any ``nn.Module`` ("bring your own model").

Paper 002's discovery (section 4, eqs. 2-4) needs only a loss of parameters and data; a
:class:`ModuleLoss` gives it one for an arbitrary network, with its own data sampler, so that the
pipeline runs unchanged on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from symdisc.curvature import Params
from symdisc.losses.base import ParamLoss
from symdisc.runtime.checks import check_instance

__all__ = ["DataSampler", "ModuleLoss", "module_loss"]

DataSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class ModuleLoss(ParamLoss):
    """``loss_fn(model(X), Y)`` as a loss of chosen parameters of ``model`` (:func:`module_loss`).

    Attributes:
        model: the network; never modified.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        data_sampler: ``data_sampler(n, generator) -> (X (n, *x_shape), Y (n, *y_shape))``;
            :func:`symdisc.sampler.sample` draws data through it.
    """

    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    data_sampler: DataSampler


def module_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data_sampler: DataSampler,
    params: Sequence[str | nn.Module],
    *,
    name: str = "module",
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
    return ModuleLoss(name, fn, shapes, x_shape, y_shape, model, loss_fn, data_sampler)


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

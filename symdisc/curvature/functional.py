"""Modules as pure functions of a parameter dict, and flat views of parameter dicts.

Infrastructure of the shared curvature layer (no equation of the papers).

Every routine of :mod:`symdisc.curvature` takes parameters as ``dict[str, Tensor]`` (the form
:func:`torch.func.functional_call` accepts). A flat vector appears only inside a numerical routine
that needs one (Lanczos, a dense matrix); :func:`flatten` and :func:`unflatten` are the one pair of
helpers that convert, in the dict's insertion order and row-major within each tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
ModelFn = Callable[..., Tensor]

__all__ = ["Params", "ModelFn", "functional", "flatten", "unflatten", "num_params", "check_params"]


def functional(module: nn.Module, names: Iterable[str] | None = None) -> tuple[ModelFn, Params]:
    """Turn ``module`` into a pure function ``f(params, *inputs)`` and a copy of its parameters.

    Args:
        module: any ``nn.Module``; its buffers (e.g. BatchNorm statistics) are read, never written
            by the returned function as long as the module is in ``eval()`` mode.
        names: the parameters to expose, by their exact names in ``module.named_parameters()``.
            The others stay fixed at the module's values. Default: every parameter that requires
            a gradient.

    Returns:
        ``(f, params)``: ``f(params, *inputs) == module(*inputs)`` evaluated with ``params`` in
        place of the module's parameters, and ``params``, detached clones of the module's
        parameters. Nothing that is done to ``params`` can reach the module.

    Raises:
        TypeError: if ``module`` is not an ``nn.Module``.
        ValueError: if a name in ``names`` is not a parameter of ``module``.

    Example:
        >>> f, params = functional(nn.Linear(3, 2))
        >>> f(params, torch.ones(4, 3)).shape
        torch.Size([4, 2])
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` must be an nn.Module, got {type(module).__name__}")
    available = dict(module.named_parameters())
    if names is None:
        selected = [n for n, p in available.items() if p.requires_grad]
    else:
        selected = list(names)
        unknown = [n for n in selected if n not in available]
        if unknown:
            raise ValueError(
                f"`names` must name parameters of the module; {unknown} are not among "
                f"{sorted(available)}"
            )
    params = {n: available[n].detach().clone() for n in selected}

    def f(params: Mapping[str, Tensor], *inputs: Tensor) -> Tensor:
        return torch.func.functional_call(module, dict(params), inputs)

    return f, params


def check_params(params: object, name: str = "params") -> Params:
    """Check that ``params`` is a non-empty ``dict[str, Tensor]`` of one dtype and device."""
    if not isinstance(params, Mapping) or not params:
        raise TypeError(
            f"`{name}` must be a non-empty dict[str, Tensor], got {type(params).__name__}"
        )
    bad = [k for k, v in params.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"`{name}` must map names to tensors; entries {bad} are not tensors")
    kinds = {(v.dtype, v.device) for v in params.values()}
    if len(kinds) > 1:
        raise ValueError(f"`{name}` must share one dtype and device, got {sorted(map(str, kinds))}")
    return dict(params)


def num_params(params: Mapping[str, Tensor]) -> int:
    """Total number of entries P of a parameter dict."""
    return sum(v.numel() for v in params.values())


def flatten(params: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a parameter dict into one vector of shape (P,), row-major per tensor.

    Inverse of :func:`unflatten`. Under :func:`torch.vmap` it flattens each batch element.
    """
    return torch.cat([v.reshape(-1) for v in params.values()])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> Params:
    """Split a vector of shape (..., P) into a dict shaped like ``like``: entries (..., *shape).

    Inverse of :func:`flatten`; leading dimensions of ``vector`` become leading dimensions of
    every entry (a block of k vectors of shape (k, P) gives entries of shape (k, *shape)).

    Raises:
        ValueError: if the last dimension of ``vector`` is not P.
    """
    total = num_params(like)
    if vector.ndim == 0 or vector.shape[-1] != total:
        raise ValueError(
            f"`vector` must have last dimension P={total} (the size of the parameters), "
            f"got shape {tuple(vector.shape)}"
        )
    batch = vector.shape[:-1]
    out: Params = {}
    start = 0
    for name, ref in like.items():
        stop = start + ref.numel()
        out[name] = vector[..., start:stop].reshape((*batch, *ref.shape))
        start = stop
    return out

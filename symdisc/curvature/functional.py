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

__all__ = [
    "Params",
    "ModelFn",
    "functional",
    "flatten",
    "unflatten",
    "num_params",
    "check_params",
    "check_eval_mode",
]


def check_eval_mode(module: nn.Module, name: str = "model") -> None:
    """Raise when a submodule of ``module`` would update running statistics when called.

    A BatchNorm (or an instance norm with ``track_running_stats``) in training mode writes its
    running mean and variance on every forward pass; inside ``torch.func`` transforms that is an
    in-place update of a captured tensor, which torch rejects with a message about in-place
    operations, and outside them it changes the module. Curvature is taken at a fixed model:
    call ``.eval()`` first.

    Raises:
        ValueError: naming the submodules in training mode.
    """
    stateful = [
        n or type(m).__name__
        for n, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats
    ]
    if stateful:
        raise ValueError(
            f"`{name}` must be in eval mode: {stateful} update their running statistics in "
            f"training mode (BatchNorm), which the curvature layer cannot differentiate through; "
            f"call `{name}.eval()` first"
        )


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
        ValueError: if a name in ``names`` is not a parameter of ``module``; when ``f`` is called
            with a BatchNorm of ``module`` in training mode (:func:`check_eval_mode`).

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
        if isinstance(names, str) or not isinstance(names, Iterable):
            raise TypeError(
                f"`names` must be an iterable of parameter names (e.g. a list), got "
                f"{type(names).__name__}"
            )
        selected = list(names)
        unknown = [n for n in selected if n not in available]
        if unknown:
            raise ValueError(
                f"`names` must name parameters of the module; {unknown} are not among "
                f"{sorted(available)}"
            )
    params = {n: available[n].detach().clone() for n in selected}

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]

    def f(params: Mapping[str, Tensor], *inputs: Tensor) -> Tensor:
        if any(m.training and m.track_running_stats for m in norms):
            check_eval_mode(module, "module")
        return torch.func.functional_call(module, dict(params), inputs)

    return f, params


def check_params(params: object, name: str = "params") -> Params:
    """Check that ``params`` is a non-empty ``dict[str, Tensor]`` of one floating dtype and one
    device.

    Raises:
        TypeError: for anything but a dict of tensors (e.g. a list of tensors, as from
            ``module.parameters()``: pass ``dict(module.named_parameters())``), or tensors that
            are not floating point.
        ValueError: for an empty dict, or tensors of several dtypes or devices.
    """
    if not isinstance(params, Mapping):
        hint = (
            " (use dict(module.named_parameters()) or symdisc.curvature.functional)"
            if isinstance(params, (list, tuple, Iterable)) and not isinstance(params, str)
            else ""
        )
        raise TypeError(
            f"`{name}` must be a non-empty dict[str, Tensor], got {type(params).__name__}{hint}"
        )
    if not params:
        raise ValueError(f"`{name}` must be a non-empty dict[str, Tensor], got an empty dict")
    bad = [k for k, v in params.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"`{name}` must map names to tensors; entries {bad} are not tensors")
    ints = [k for k, v in params.items() if not (v.is_floating_point() or v.is_complex())]
    if ints:
        raise TypeError(
            f"`{name}` must hold floating-point tensors; entries {ints} have dtype "
            f"{params[ints[0]].dtype}"
        )
    kinds = {(v.dtype, v.device) for v in params.values()}
    if len(kinds) > 1:
        raise ValueError(f"`{name}` must share one dtype and device, got {sorted(map(str, kinds))}")
    return dict(params)


def num_params(params: Mapping[str, Tensor]) -> int:
    """Total number of entries P of a parameter dict."""
    _check_mapping(params, "params")
    return sum(v.numel() for v in params.values())


def flatten(params: Mapping[str, Tensor]) -> Tensor:
    """Concatenate a parameter dict into one vector of shape (P,), row-major per tensor.

    Inverse of :func:`unflatten`. Under :func:`torch.vmap` it flattens each batch element.

    Raises:
        TypeError: for anything but a dict of tensors; ValueError: for an empty dict.
    """
    _check_mapping(params, "params")
    return torch.cat([v.reshape(-1) for v in params.values()])


def unflatten(vector: Tensor, like: Mapping[str, Tensor]) -> Params:
    """Split a vector of shape (..., P) into a dict shaped like ``like``: entries (..., *shape).

    Inverse of :func:`flatten`; leading dimensions of ``vector`` become leading dimensions of
    every entry (a block of k vectors of shape (k, P) gives entries of shape (k, *shape)).

    Raises:
        TypeError: for a ``vector`` that is not a tensor or a ``like`` that is not a dict of
            tensors.
        ValueError: if the last dimension of ``vector`` is not P.
    """
    if not isinstance(vector, Tensor):
        raise TypeError(f"`vector` must be a Tensor (..., P), got {type(vector).__name__}")
    _check_mapping(like, "like")
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


def _check_mapping(params: object, name: str) -> None:
    """The light check of the flat-view helpers (they run under ``vmap``): a non-empty dict of
    tensors."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"`{name}` must be a non-empty dict[str, Tensor], got {type(params).__name__}"
        )
    if not params:
        raise ValueError(f"`{name}` must be a non-empty dict[str, Tensor], got an empty dict")
    if not all(isinstance(v, Tensor) for v in params.values()):
        raise TypeError(f"`{name}` must map names to tensors")

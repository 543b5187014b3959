"""Checks of the tensors and objects a user passes to the discovery API (infrastructure).

The checks of plain values (ints, floats, choices, types) are :mod:`symdisc.runtime.checks`;
these read tensors: their type, dimensions, shapes against a loss, dtype and values. Messages
name the argument, what was expected and what came: "`theta` must be (N, 4), got (N, 3)".
Shape checks read shapes only, so they hold under ``torch.vmap``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from symdisc.runtime.checks import check_instance

__all__ = [
    "check_tensor",
    "check_loss",
    "check_samples",
    "check_algebra",
    "check_invertible",
    "check_fields",
    "check_rows",
]

if TYPE_CHECKING:
    from symdisc.losses import ParamLoss
    from symdisc.sampler import Samples


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def check_tensor(
    value: object,
    name: str,
    *,
    ndim: int | None = None,
    floating: bool = False,
    finite: bool = False,
    nonempty: bool = False,
) -> Tensor:
    """``value`` if it is a tensor with ``ndim`` dimensions, of a floating dtype with
    ``floating``, with no NaN or infinity with ``finite``, with at least one entry with
    ``nonempty``.

    Raises:
        TypeError: for a non-tensor, or a non-floating dtype with ``floating``.
        ValueError: for the wrong number of dimensions, an empty tensor or non-finite values.
    """
    check_instance(value, name, Tensor)
    assert isinstance(value, Tensor)
    if ndim is not None and value.ndim != ndim:
        raise ValueError(
            f"`{name}` must be a {ndim}-d tensor, got shape {tuple(value.shape)} ({value.ndim}-d)"
        )
    if floating and not value.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {value.dtype}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"`{name}` must not be empty, got shape {tuple(value.shape)}")
    if finite and not _under_vmap(value) and not bool(torch.isfinite(value).all()):
        raise ValueError(f"`{name}` must be finite, got NaN or infinite entries")
    return value


def _under_vmap(value: Tensor) -> bool:
    return torch._C._functorch.is_batchedtensor(value) or torch._C._functorch.is_gradtrackingtensor(
        value
    )


def check_loss(value: Any, name: str = "loss") -> ParamLoss:
    """``value`` if it is a :class:`~symdisc.losses.ParamLoss`; else TypeError."""
    from symdisc.losses import ParamLoss

    return check_instance(value, name, ParamLoss)


def check_samples(value: Any, name: str = "samples", *, loss: ParamLoss | None = None) -> Samples:
    """``value`` if it is non-empty :class:`~symdisc.sampler.Samples` (of ``loss``, when given:
    theta (N, P), X (N, *x_shape), Y (N, *y_shape)).

    Raises:
        TypeError: for anything but Samples.
        ValueError: for no samples, or samples drawn for another loss (naming both shapes).
    """
    from symdisc.sampler import Samples

    check_instance(value, name, Samples)
    if value.theta.ndim != 2 or value.theta.shape[0] == 0:
        raise ValueError(
            f"`{name}` must hold at least one sample with theta (N, P), "
            f"got theta {tuple(value.theta.shape)}"
        )
    if loss is not None:
        n = value.theta.shape[0]
        want = {
            "theta": (n, loss.num_params),
            "X": (n, *loss.x_shape),
            "Y": (n, *loss.y_shape),
        }
        for part, shape in want.items():
            got = tuple(getattr(value, part).shape)
            if got != shape:
                raise ValueError(
                    f"`{name}` must be drawn for `loss` {loss.name!r}: {part} must be {shape}, "
                    f"got {got} (samples of another loss?)"
                )
    return value


def check_algebra(
    value: object, name: str, d: int | None = None, *, single: bool = False, finite: bool = True
) -> Tensor:
    """``value`` if it is k elements of gl(d), (k, d, d) (one (d, d) element with ``single``),
    floating, and finite with ``finite``.

    Raises:
        TypeError: for a non-tensor or an integer dtype.
        ValueError: for the wrong shape or non-finite entries.
    """
    ndim = 2 if single else 3
    check_tensor(value, name)
    assert isinstance(value, Tensor)
    square = value.ndim == ndim and value.shape[-1] == value.shape[-2]
    if not square or (d is not None and value.shape[-1] != d) or (not single and len(value) == 0):
        want = f"({d or 'd'}, {d or 'd'})" if single else f"(k, {d or 'd'}, {d or 'd'}), k >= 1"
        raise ValueError(f"`{name}` must be {want}, got {_shape(value)}")
    return check_tensor(value, name, floating=True, finite=finite)


def check_invertible(value: Tensor, name: str) -> Tensor:
    """``value`` (..., d, d) if every matrix in it is invertible (an element of GL(d)).

    Raises:
        ValueError: naming the first singular element.
    """
    if _under_vmap(value) or not value.is_floating_point():
        return value
    info = torch.linalg.inv_ex(value.detach())[1]
    bad = torch.nonzero(info.reshape(-1)).reshape(-1)
    if bad.numel():
        where = "" if value.ndim == 2 else f" (element {int(bad[0])})"
        raise ValueError(
            f"`{name}` must be invertible, an element of GL({value.shape[-1]}), "
            f"got a singular matrix{where}"
        )
    return value


def check_fields(value: object, name: str = "fields") -> Tensor:
    """``value`` if it is a floating (N, k, P) tensor of fields with N, k, P >= 1."""
    check_tensor(value, name, ndim=3, floating=True)
    assert isinstance(value, Tensor)
    if value.numel() == 0:
        raise ValueError(f"`{name}` must be (N, k, P) with N, k, P >= 1, got {_shape(value)}")
    return value


def check_rows(value: object, name: str, n: int, p: int, *, ndim: int = 2) -> Tensor:
    """``value`` if it is a floating tensor (n, p) (ndim 2) or (n, r, p) (ndim 3), r >= 1."""
    check_tensor(value, name, ndim=ndim, floating=True)
    assert isinstance(value, Tensor)
    ok = value.shape[0] == n and value.shape[-1] == p and value.numel() > 0
    if not ok:
        want = f"({n}, {p})" if ndim == 2 else f"({n}, r, {p})"
        raise ValueError(f"`{name}` must be {want}, got {_shape(value)}")
    return value

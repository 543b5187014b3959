"""Checks of equivariance and invariance for tests and notebooks (infrastructure: it implements
no equation; it measures the strict equivariance that paper 000, section 3, and paper 003 claim
for their layers).

A model f is equivariant to a transformation g when ``f(g_in(x)) == g_out(f(x))``; it is invariant
when ``g_out`` is the identity. :func:`assert_equivariant` measures the largest violation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from symdisc.runtime import check_float, check_instance

__all__ = ["assert_equivariant"]


def assert_equivariant(
    model: Callable[[Tensor], Tensor] | nn.Module,
    transform: Callable[[Tensor], Tensor],
    inverse_transform: Callable[[Tensor], Tensor] | None = None,
    *,
    inputs: Tensor,
    output_transform: Callable[[Tensor], Tensor] | None = None,
    atol: float = 1e-5,
) -> float:
    """Measure ``max |model(transform(x)) - output_transform(model(x))|`` and fail above ``atol``.

    Args:
        model: maps ``inputs`` (any shape, e.g. (B, C, H, W)) to outputs.
        transform: the input transformation g_in.
        inverse_transform: optional inverse of g_in. When given, the check is done the other way
            round as well, ``model(inverse_transform(x))`` vs ``output_transform`` applied to
            ``model(x)`` pulled back by the inverse, i.e. it is also checked that
            ``model(x) == output_transform(model(inverse_transform(x)))``.
        inputs: the tensor x the check is evaluated at (the whole batch at once).
        output_transform: the output transformation g_out; default ``transform`` (same action on
            inputs and outputs). Pass ``lambda y: y`` to check invariance.
        atol: the largest absolute error accepted.

    Returns:
        The measured maximal absolute error (a float).

    Raises:
        TypeError: if ``inputs`` is not a tensor, a transformation is not callable or ``atol`` is
            not a number.
        ValueError: for empty ``inputs``, a negative or non-finite ``atol``, or outputs of
            ``model(transform(x))`` and ``output_transform(model(x))`` (or of the inverse check)
            that differ in shape (they are compared entry by entry, never broadcast).
        AssertionError: if the error exceeds ``atol`` or is not finite (the message gives the
            error).
    """
    check_instance(inputs, "inputs", Tensor)
    if inputs.numel() == 0:
        raise ValueError(f"`inputs` must not be empty, got shape {tuple(inputs.shape)}")
    for name, fn in (
        ("model", model),
        ("transform", transform),
        ("inverse_transform", inverse_transform),
        ("output_transform", output_transform),
    ):
        if (fn is not None or name in ("model", "transform")) and not callable(fn):
            raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}")
    atol = check_float(atol, "atol", nonnegative=True)
    g_out = transform if output_transform is None else output_transform
    with torch.no_grad():
        y = model(inputs)
        error = _max_error(model(transform(inputs)), g_out(y), "model(transform(inputs))")
        if inverse_transform is not None:
            y_inv = model(inverse_transform(inputs))
            error = max(error, _max_error(g_out(y_inv), y, "output_transform(model(inverse))"))
    if not error <= atol:
        what = "is not finite (NaN or Inf in the outputs)" if not math.isfinite(error) else ""
        raise AssertionError(f"equivariance error {error:.3e} {what or f'exceeds atol={atol:.1e}'}")
    return error


def _max_error(a: Tensor, b: Tensor, what: str) -> float:
    """``max |a - b|`` of two outputs of one shape (ValueError naming ``output_transform``
    otherwise: broadcasting would compare the wrong entries)."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape:
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (a, b)]
        raise ValueError(
            f"{what} and the transformed output must have one shape (check `output_transform`: "
            f"the default is `transform`), got {shapes[0]} and {shapes[1]}"
        )
    return (a - b).abs().max().item()

"""Short ``__repr__`` of the result classes of ``ella`` (infrastructure): a tensor prints as
its shape, a state dict as its number of tensors, a long list or dict as its length, never in
full. A leaf module: it imports nothing of ``ella``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["summary_repr"]

_MAX_ITEMS = 6
"""At most this many entries of a dict or list are shown."""


def _short(value: Any, depth: int = 0) -> str:
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return f"{value.item():.4g}"
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        if any(isinstance(v, Tensor) and v.numel() > 1 for v in value.values()):
            return f"<{len(value)} tensors>"
        if depth >= 1 or len(value) > _MAX_ITEMS:
            return f"<dict of {len(value)}>"
        inner = ", ".join(f"{k!r}: {_short(v, depth + 1)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS or depth >= 1 or any(isinstance(v, Mapping) for v in value):
            return f"<{len(value)} items>"
        inner = ", ".join(_short(v, depth + 1) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    return repr(value)


def summary_repr(obj: Any) -> str:
    """``Class(field=summary, ...)`` of a dataclass, every field shortened (:func:`_short`)."""
    parts = [f"{f.name}={_short(getattr(obj, f.name))}" for f in dataclasses.fields(obj)]
    return f"{type(obj).__name__}({', '.join(parts)})"

"""The errors every trainer of ``symdisc`` and ``ella`` raises (infrastructure)."""

from __future__ import annotations

__all__ = ["NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss (or a marginal likelihood, or a gradient a trainer steps with) became NaN or
    infinite. The trainer stops; the last good checkpoint is kept (never overwritten) and
    restored into the model, and the message says where training stopped and what was
    restored."""

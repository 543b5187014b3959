"""The errors every trainer of ``symdisc`` and ``ella`` raises (infrastructure)."""

from __future__ import annotations

__all__ = ["CheckpointError", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss (or a marginal likelihood, or a gradient a trainer steps with) became NaN or
    infinite. The trainer stops; the last good checkpoint is kept (never overwritten) and
    restored into the model, and the message says where training stopped and what was
    restored."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a checkpoint: truncated, corrupted, or not
    written by ``torch.save`` (a foreign file). A ``ValueError``, so callers that catch
    ``ValueError`` still do; a missing file raises ``FileNotFoundError`` instead."""

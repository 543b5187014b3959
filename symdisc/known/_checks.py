"""Shape checks of one sample, shared by the known symmetries (infrastructure).

They read shapes only, never tensor values, so that they hold under ``torch.vmap``.
"""

from __future__ import annotations

from torch import Tensor

from symdisc.losses import ParamLoss


def _got(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def check_theta(loss: ParamLoss, theta: object) -> Tensor:
    """``theta`` if it is one flat parameter vector (P,) of ``loss``; else ValueError."""
    if not isinstance(theta, Tensor) or tuple(theta.shape) != (loss.num_params,):
        raise ValueError(
            f"`theta` must be one flat parameter vector of shape ({loss.num_params},) "
            f"(lift batches with torch.vmap), got {_got(theta)}"
        )
    return theta


def check_sample(loss: ParamLoss, theta: object, X: object) -> None:
    """theta (P,) and X of ``loss.x_shape``: one sample; else ValueError."""
    check_theta(loss, theta)
    if not isinstance(X, Tensor) or tuple(X.shape) != tuple(loss.x_shape):
        raise ValueError(
            f"`X` must be one data sample of shape {tuple(loss.x_shape)}, got {_got(X)}"
        )


def check_element(name: str, value: object, shape: tuple[int, ...]) -> None:
    """A group or algebra element of the given shape; else ValueError naming ``name``."""
    if not isinstance(value, Tensor) or tuple(value.shape) != shape:
        raise ValueError(f"`{name}` must have shape {shape}, got {_got(value)}")

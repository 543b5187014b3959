"""Argument checks shared by every public call of ``symdisc`` and ``ella`` (infrastructure).

Each check returns the value it accepted (converted where that is exact: an int given for a float
becomes a float) and raises with a message that names the argument, what was expected and what
came (DESIGN.md, conventions):

* a value of the wrong *type* raises ``TypeError``: ``"`lr` must be a float, got str"``;
* a value of the right type that is out of range or not among the choices raises ``ValueError``:
  ``"`epochs` must be a positive int, got 0"``.

``bool`` is never accepted as a number (``True`` is an ``int`` in Python, never in an option).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

from torch import Tensor

__all__ = [
    "check_batches",
    "check_bool",
    "check_choice",
    "check_float",
    "check_instance",
    "check_int",
    "check_optional_int",
    "check_output_path",
    "check_path",
    "check_train_data",
]

_INT_KIND = {0: "non-negative", 1: "positive"}


def check_int(value: object, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (not a bool), at least ``minimum`` when given.

    Raises:
        TypeError: for a non-int (a bool included).
        ValueError: for an int below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        kind = _INT_KIND.get(minimum, f">= {minimum}")
        what = f"a {kind} int" if minimum in _INT_KIND else f"an int {kind}"
        raise ValueError(f"`{name}` must be {what}, got {value}")
    return value


def check_optional_int(value: object, name: str, *, minimum: int | None = None) -> int | None:
    """``None``, or :func:`check_int` of ``value``."""
    return None if value is None else check_int(value, name, minimum=minimum)


def check_float(
    value: object, name: str, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """``value`` as a finite float (an int is accepted, a bool is not), > 0 with ``positive``,
    >= 0 with ``nonnegative``.

    Raises:
        TypeError: for a value that is not a real number.
        ValueError: for NaN, an infinity, or a value outside the asked range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a float, got {type(value).__name__}")
    value = float(value)
    kind = "positive " if positive else "non-negative " if nonnegative else ""
    if not math.isfinite(value) or (positive and value <= 0) or (nonnegative and value < 0):
        raise ValueError(f"`{name}` must be a {kind}finite float, got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool.

    Raises:
        TypeError: for anything else (``1`` and ``0`` included).
    """
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def check_choice(value: Any, name: str, choices: Any) -> Any:
    """``value`` if it is one of ``choices``: a ``Literal[...]`` type or an iterable of options.

    Raises:
        ValueError: naming the options and what came.
    """
    options = get_args(choices) or tuple(choices)
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options}, got {value!r}")
    return value


def check_instance(value: Any, name: str, types: type | tuple[type, ...]) -> Any:
    """``value`` if it is an instance of ``types``.

    Raises:
        TypeError: naming the expected and the given type.
    """
    if not isinstance(value, types):
        wanted = _type_names(types if isinstance(types, tuple) else (types,))
        raise TypeError(f"`{name}` must be {wanted}, got {type(value).__name__}")
    return value


def check_train_data(value: object, name: str = "train_data") -> tuple[Tensor, Tensor]:
    """``value`` as ``(inputs, targets)``: a tuple or list of two tensors that share a non-empty
    first dimension N, e.g. (N, D) inputs and (N,) class labels.

    Raises:
        TypeError: for anything but a pair of tensors.
        ValueError: for 0-d tensors, an empty data set or different first dimensions.
    """
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"`{name}` must be a tuple (inputs, targets) of tensors")
    x, y = value
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise TypeError(f"`{name}` must be a tuple (inputs, targets) of tensors")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"`{name}` inputs and targets must share a non-empty first dimension, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def check_batches(value: object, name: str = "data") -> Iterable[Any]:
    """``value`` if it can be an iterable of ``(inputs, targets)`` batches (a list, a
    DataLoader, a generator).

    A single batch, a pair of tensors, is the commonest slip: it is rejected with a message that
    says to wrap it in a list (iterating over it would unpack rows of the inputs instead).

    Raises:
        TypeError: for a single ``(inputs, targets)`` pair, a lone tensor or a non-iterable.
    """
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, Tensor) for v in value)
    ):
        raise TypeError(
            f"`{name}` must be an iterable of (inputs, targets) batches, got a single batch "
            f"(a {type(value).__name__} of two tensors); wrap it in a list: [(inputs, targets)]"
        )
    if isinstance(value, (Tensor, str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"`{name}` must be an iterable of (inputs, targets) batches, got {type(value).__name__}"
        )
    return value


def check_path(value: object, name: str = "path", *, exists: bool = False) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path``; with ``exists`` it must be a file.

    Raises:
        TypeError: for anything but a str or a path.
        FileNotFoundError: with ``exists``, for a path that does not exist.
        ValueError: with ``exists``, for a path that is a directory.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a str or os.PathLike, got {type(value).__name__}")
    path = Path(value)
    if exists:
        if not path.exists():
            raise FileNotFoundError(f"`{name}` must name an existing file, got {str(path)!r}")
        if path.is_dir():
            raise ValueError(f"`{name}` must name a file, got the directory {str(path)!r}")
    return path


def check_output_path(
    value: object, name: str = "path", *, suffixes: Iterable[str] | None = None
) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path`` a file can be written to: its
    directory exists, it is not itself a directory, and its suffix (lower case, without the dot)
    is one of ``suffixes`` when given.

    Raises:
        TypeError: for anything but a str or a path.
        FileNotFoundError: for a path whose directory does not exist (nothing is created).
        ValueError: for a directory, or a suffix that is not one of ``suffixes``.
    """
    path = check_path(value, name)
    if path.is_dir():
        raise ValueError(f"`{name}` must name a file to write, got the directory {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"`{name}`: the directory {str(path.parent)!r} of {str(path)!r} does not exist; "
            "create it first"
        )
    if suffixes is not None:
        allowed = sorted(suffixes)
        if path.suffix.lower().lstrip(".") not in allowed:
            raise ValueError(
                f"`{name}` must end in one of {', '.join('.' + s for s in allowed)}, got "
                f"{str(path)!r}"
            )
    return path


def _type_names(types: Iterable[type]) -> str:
    names = [
        f"a {t.__name__}" if t.__name__[0] not in "AEIOU" else f"an {t.__name__}" for t in types
    ]
    return " or ".join(names)

"""Symmetric matrices known through their products: the base of every curvature operator.

Infrastructure of the shared curvature layer (no equation of the papers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from symdisc.curvature.functional import Params, flatten, num_params, unflatten
from symdisc.runtime.checks import check_int, check_optional_int

__all__ = [
    "CurvatureOperator",
    "ParameterOperator",
    "SymmetricOperator",
    "check_finite_product",
    "check_square",
    "check_vector_block",
]


@runtime_checkable
class SymmetricOperator(Protocol):
    """Anything with a square ``shape``, a ``dtype``, a ``device`` and ``@`` on (P,) and (P, k).

    A dense ``torch.Tensor`` of shape (P, P) qualifies, so every estimator runs on dense matrices
    as well as on matrix-free operators.
    """

    shape: tuple[int, ...] | torch.Size
    dtype: torch.dtype
    device: torch.device

    def __matmul__(self, other: Tensor) -> Tensor: ...


def check_square(A: object, name: str = "A") -> int:
    """Return P for a square operator or matrix, else raise a clear error."""
    shape = getattr(A, "shape", None)
    if shape is None or not hasattr(A, "__matmul__"):
        raise TypeError(
            f"`{name}` must be a square operator or matrix with `@`, got {type(A).__name__}"
        )
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {tuple(shape)}")
    dtype = getattr(A, "dtype", None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"`{name}` must have a floating dtype (e.g. cast an integer matrix with "
            f"`.to(torch.float64)`), got {dtype}"
        )
    if shape[0] == 0:
        raise ValueError(f"`{name}` must not be empty, got shape {tuple(shape)}")
    return int(shape[0])


def check_finite_product(product: Tensor, name: str = "A") -> Tensor:
    """``product`` (of ``name`` with probe vectors) if every entry is finite.

    Raises:
        NonFiniteCurvatureError: (a ``ValueError``) naming the operator, instead of letting NaN
            or an infinity reach an estimate.
    """
    if not bool(torch.isfinite(product).all()):
        from symdisc.curvature.hessian import NonFiniteCurvatureError

        raise NonFiniteCurvatureError(
            f"`{name}` must produce finite products, got NaN or infinite entries in `{name} @ v` "
            f"(check the matrix, or the loss and parameters the operator was built at)"
        )
    return product


def check_vector_block(v: object, dim: int, name: str = "v") -> Tensor:
    """Check that ``v`` is a (P,) vector or a (P, k) block of vectors."""
    if not isinstance(v, Tensor):
        raise TypeError(
            f"`{name}` must be a Tensor of shape (P,) or (P, k), got {type(v).__name__}"
        )
    if v.ndim not in (1, 2) or v.shape[0] != dim:
        raise ValueError(f"`{name}` must have shape ({dim},) or ({dim}, k), got {tuple(v.shape)}")
    return v


class CurvatureOperator:
    """A symmetric P x P matrix known through products, with ``@`` and ``to_dense``.

    Subclasses implement :meth:`_matmat` on a block of row vectors (k, P) -> (k, P) and set
    ``shape``, ``dtype`` and ``device``. ``A @ v`` takes a vector (P,) or a block (P, k) and returns
    the same shape, in the operator's dtype.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def _matmat(self, V: Tensor) -> Tensor:  # (k, P) -> (k, P)
        raise NotImplementedError

    def __matmul__(self, v: Tensor) -> Tensor:
        v = check_vector_block(v, self.shape[0])
        if v.dtype != self.dtype or v.device != self.device:
            raise ValueError(
                f"`v` must have dtype {self.dtype} on {self.device} like the operator, "
                f"got {v.dtype} on {v.device}"
            )
        if v.ndim == 1:
            return self._matmat(v[None])[0]
        return self._matmat(v.T).T

    def to_dense(self, block_size: int = 256) -> Tensor:
        """The dense (P, P) matrix, built ``block_size`` columns at a time from products.

        Memory beyond the result is that of one block product, so ``block_size`` trades speed
        for memory.
        """
        check_int(block_size, "block_size", minimum=1)
        dim = self.shape[0]
        out = torch.empty(dim, dim, dtype=self.dtype, device=self.device)
        eye = torch.eye(dim, dtype=self.dtype, device=self.device)
        for start in range(0, dim, block_size):
            stop = min(start + block_size, dim)
            out[start:stop] = self._matmat(eye[start:stop])  # rows = columns by symmetry
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(P={self.shape[0]}, dtype={self.dtype}, device={self.device})"


ChunkSize = int | None | Literal["auto"]


def auto_block_chunk(params: Params) -> int:
    """The vectors per vmapped chunk of a block product that ``chunk_size="auto"`` picks.

    1 (a loop) for parameters with convolution kernels (a tensor of more than 2 dimensions) on
    a CPU, else 8. Measured on a 2-core CPU (issue 19): 100 Hessian products on the ResNet of
    the benchmark took 19.7 s in chunks of 1, 23.7 s in chunks of 4 and 32.5 s in chunks of 8
    (vmapping the convolutions' double backward leaves the caches), against 0.20 s, 0.14 s and
    0.15 s on the 3,253-parameter MLP, whose small products gain from batching. On a GPU
    larger chunks pay off: pass an int or None (the whole block).
    """
    first = next(iter(params.values()))
    convolutional = any(p.ndim > 2 for p in params.values())
    return 1 if convolutional and first.device.type == "cpu" else 8


class ParameterOperator(CurvatureOperator):
    """An operator on parameter space given by a product on parameter dicts, ``v -> M v``.

    Flattens and unflattens at the boundary; a block of k vectors is vmapped over in chunks of
    ``chunk_size`` vectors (``None``: the whole block at once; ``"auto"``: chosen by
    :func:`auto_block_chunk`, the int is then :attr:`chunk_size`).
    """

    def __init__(
        self, params: Params, product: Callable[[Params], Params], chunk_size: ChunkSize
    ) -> None:
        check_chunk_size(chunk_size)
        first = next(iter(params.values()))
        self.shape = (num_params(params), num_params(params))
        self.dtype, self.device = first.dtype, first.device
        self.chunk_size = auto_block_chunk(params) if chunk_size == "auto" else chunk_size
        self._params = params
        self._product = product

    def _matmat(self, V: Tensor) -> Tensor:
        if V.shape[0] == 1 or self.chunk_size == 1:  # a loop: no vmap over one vector
            return torch.stack([flatten(self._product(unflatten(v, self._params))) for v in V])
        products = torch.vmap(self._product, chunk_size=self.chunk_size)(unflatten(V, self._params))
        return torch.cat([products[k].reshape(V.shape[0], -1) for k in self._params], dim=1)


def check_chunk_size(chunk_size: object) -> None:
    """``chunk_size`` of a block product: an int >= 1, None or ``"auto"``."""
    if isinstance(chunk_size, str):
        if chunk_size != "auto":
            raise ValueError(
                f"`chunk_size` must be an int >= 1, None or 'auto', got {chunk_size!r}"
            )
        return
    check_optional_int(chunk_size, "chunk_size", minimum=1)


def short_values(x: Tensor, shown: int = 4) -> str:
    """At most ``shown`` entries of a tensor (result reprs), in 4 significant digits."""
    values = [f"{float(v):.4g}" for v in x.reshape(-1)[:shown]]
    more = f", ... ({x.numel()} in all)" if x.numel() > shown else ""
    return "[" + ", ".join(values) + more + "]"

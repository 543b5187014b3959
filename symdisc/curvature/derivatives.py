"""First derivatives of a model's outputs in its parameters: per-sample Jacobians, JVP and VJP.

Infrastructure of the shared curvature layer: the Jacobians ``J_n`` from which the GGN of the
Laplace approximations is built (paper 000, eq. 9; paper 001, eqs. 7 and 17).

The model is a pure function ``f(params, inputs) -> outputs`` over a batch (see
:func:`symdisc.curvature.functional`). Per-sample quantities are written for one sample (a batch
of one) and lifted with :func:`torch.vmap`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.curvature.functional import ModelFn, Params, check_params
from symdisc.runtime.checks import check_optional_int

__all__ = ["per_sample_jacobian", "jacobian_vector_product", "vector_jacobian_product"]


def per_sample_jacobian(
    model_fn: ModelFn, params: Params, inputs: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """Jacobians of every sample's outputs in the parameters, flattened: (N, *out, P).

    ``J[n] = d f(params, inputs[n:n+1])[0] / d params``, computed by ``vmap(jacrev)``: reverse
    mode because a sample's outputs are far fewer than the parameters.

    Args:
        model_fn: ``f(params, inputs)`` on a batch.
        params: the parameters, ``dict[str, Tensor]``.
        inputs: a batch (N, ...).
        chunk_size: samples per vmap chunk, to bound memory (default: all at once).

    Returns:
        (N, *out_shape, P), the last axis in the order of :func:`flatten`.
    """
    check_callable(model_fn, "model_fn")
    params = check_params(params)
    check_inputs(inputs)
    check_optional_int(chunk_size, "chunk_size", minimum=1)

    def one(x: Tensor) -> Tensor:
        jac = torch.func.jacrev(lambda p: model_fn(p, x[None])[0])(params)
        out_ndim = next(iter(jac.values())).ndim - next(iter(params.values())).ndim
        return torch.cat([j.flatten(start_dim=out_ndim) for j in jac.values()], dim=-1)

    return torch.vmap(one, chunk_size=chunk_size)(inputs)


def jacobian_vector_product(
    model_fn: ModelFn, params: Params, inputs: Tensor, tangent: Params
) -> tuple[Tensor, Tensor]:
    """``(f(params, inputs), J v)`` in forward mode; ``tangent`` is shaped like ``params``."""
    check_callable(model_fn, "model_fn")
    params = check_params(params)
    check_inputs(inputs)
    _check_like(tangent, params, "tangent")
    return torch.func.jvp(lambda p: model_fn(p, inputs), (params,), (tangent,))


def vector_jacobian_product(
    model_fn: ModelFn, params: Params, inputs: Tensor, cotangent: Tensor
) -> Params:
    """``J^T u`` as a parameter dict, for ``u`` shaped like the outputs ``f(params, inputs)``."""
    check_callable(model_fn, "model_fn")
    params = check_params(params)
    check_inputs(inputs)
    if not isinstance(cotangent, Tensor):
        raise TypeError(f"`cotangent` must be a Tensor, got {type(cotangent).__name__}")
    outputs, vjp_fn = torch.func.vjp(lambda p: model_fn(p, inputs), params)
    if cotangent.shape != outputs.shape:
        raise ValueError(
            f"`cotangent` must have the outputs' shape {tuple(outputs.shape)}, "
            f"got {tuple(cotangent.shape)}"
        )
    return vjp_fn(cotangent)[0]


def check_callable(fn: object, name: str) -> None:
    """Raise a TypeError unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}")


def check_inputs(inputs: object, name: str = "inputs") -> Tensor:
    """``inputs`` if it is a non-empty batch (N, ...) of a tensor.

    Raises:
        TypeError: for a non-tensor.
        ValueError: for a 0-d tensor or an empty batch.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"`{name}` must be a batched Tensor (N, ...), got {type(inputs).__name__}")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty batch (N, ...) with N >= 1, got shape "
            f"{tuple(inputs.shape)}"
        )
    return inputs


def _check_like(tree: object, params: Params, name: str) -> None:
    if not isinstance(tree, dict):
        raise TypeError(
            f"`{name}` must be a dict with the keys of `params` {sorted(params)}, got "
            f"{type(tree).__name__}"
        )
    if tree.keys() != params.keys():
        raise ValueError(
            f"`{name}` must have the keys of `params` {sorted(params)}, got {sorted(tree)}"
        )
    for k, v in tree.items():
        if not isinstance(v, Tensor):
            raise TypeError(f"`{name}[{k!r}]` must be a Tensor, got {type(v).__name__}")
        if v.shape != params[k].shape:
            raise ValueError(
                f"`{name}[{k!r}]` must have shape {tuple(params[k].shape)}, got {tuple(v.shape)}"
            )

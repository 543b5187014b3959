"""The loss zoo: pure losses ``L(params, X, Y)`` of one sample, with the shapes they expect.

A :class:`ParamLoss` is the object symmetry discovery works on (paper 002, section 2): a loss of
parameters ``theta`` and one data sample ``(X, Y)``, where X holds k data points as columns. The
discovery code moves parameters as one flat vector theta (P,) per sample; :meth:`ParamLoss.flat`
evaluates the loss on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symdisc.curvature import Params, flatten, unflatten

Activation = Literal["identity", "relu", "leaky_relu", "sigmoid", "tanh"]
LEAKY_SLOPE = 0.1

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "ParamLoss",
    "two_layer",
    "three_layer_tanh_skip",
    "mlp",
    "module_loss",
    "activation_fn",
]


def _leaky_relu(z: Tensor) -> Tensor:
    return F.leaky_relu(z, LEAKY_SLOPE)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda z: z,
    "relu": torch.relu,
    "leaky_relu": _leaky_relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def activation_fn(name: str) -> Callable[[Tensor], Tensor]:
    """The elementwise activation called ``name`` (one of :data:`Activation`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {get_args(Activation)}, got {name!r}")
    return ACTIVATIONS[name]


@dataclass(frozen=True)
class ParamLoss:
    """A pure loss of parameters and one data sample, with the shapes it expects.

    Attributes:
        name: a short identifier, e.g. ``"two_layer_relu_m1h3n1k1"``.
        fn: ``fn(params, X, Y) -> scalar`` for one sample; ``params`` is ``dict[str, Tensor]``.
        param_shapes: the shape of every parameter, in the order of the flat vector theta.
        x_shape, y_shape: shapes of one sample's X and Y.
        activation: the activation between the layers, where there is one.
        bias: whether the layers carry biases.
    """

    name: str
    fn: Callable[[Params, Tensor, Tensor], Tensor]
    param_shapes: dict[str, tuple[int, ...]]
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    activation: str | None = None
    bias: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        """P, the length of the flat parameter vector."""
        return sum(int(torch.Size(s).numel()) for s in self.param_shapes.values())

    def _like(self, theta: Tensor) -> Params:
        return {k: theta.new_empty(s) for k, s in self.param_shapes.items()}

    def unflatten(self, theta: Tensor) -> Params:
        """The parameter dict of a flat theta (..., P)."""
        return unflatten(theta, self._like(theta))

    def flatten(self, params: Params) -> Tensor:
        """The flat theta (P,) of a parameter dict."""
        return flatten({k: params[k] for k in self.param_shapes})

    def flat(self, theta: Tensor, X: Tensor, Y: Tensor) -> Tensor:
        """The loss of one sample at a flat theta (P,)."""
        return self.fn(self.unflatten(theta), X, Y)

    def __call__(self, params: Params, X: Tensor, Y: Tensor) -> Tensor:
        return self.fn(params, X, Y)


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def two_layer(
    activation: Activation = "identity",
    m: int = 1,
    h: int = 1,
    n: int = 1,
    k: int = 1,
    *,
    bias: bool = False,
    output: Literal["mse", "cross_entropy"] = "mse",
) -> ParamLoss:
    """``L(W1, W2, X, Y) = ||W2 s(W1 X) - Y||^2`` (paper 002, section 4.1).

    Shapes: W1 (h, n), W2 (m, h), X (n, k), Y (m, k); with ``bias``, ``s(W1 X + b1)`` and
    ``+ b2`` with b1 (h,), b2 (m,). ``output="cross_entropy"`` replaces the squared error by the
    softmax cross-entropy of the columns of ``W2 s(W1 X) + b2`` against the target distributions
    in the columns of Y (the loss of the softmax logit-shift symmetry).
    """
    _check_dims(m=m, h=h, n=n, k=k)
    act = activation_fn(activation)
    if output not in ("mse", "cross_entropy"):
        raise ValueError(f"`output` must be 'mse' or 'cross_entropy', got {output!r}")
    shapes: dict[str, tuple[int, ...]] = {"W1": (h, n), "W2": (m, h)}
    if bias:
        shapes.update(b1=(h,), b2=(m,))

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        pre = p["W1"] @ X + (p["b1"][:, None] if bias else 0.0)
        out = p["W2"] @ act(pre) + (p["b2"][:, None] if bias else 0.0)
        if output == "mse":
            return ((out - Y) ** 2).sum()
        return -(Y * torch.log_softmax(out, dim=0)).sum()

    tag = "b" if bias else ""
    name = f"two_layer_{activation}{tag}_m{m}h{h}n{n}k{k}" + ("_ce" if output != "mse" else "")
    return ParamLoss(name, fn, shapes, (n, k), (m, k), activation, bias, {"output": output})


def three_layer_tanh_skip(n: int = 2, h: int = 2, m: int = 1, k: int = 1) -> ParamLoss:
    """The three-layer tanh network with a skip connection of paper 002, section 4.2 (Fig. 4).

    ``H1 = tanh(W1 X)``, ``H2 = tanh(W2 H1) + H1`` (the skip around the second layer), and
    ``L = ||W3 H2 - Y||^2``; W1 (h, n), W2 (h, h), W3 (m, h), X (n, k), Y (m, k). The defaults are
    the paper's sizes (W1, W2 in R^{2x2}, W3 in R^{2x1}, a 2-dimensional input, a scalar target).
    """
    _check_dims(m=m, h=h, n=n, k=k)
    shapes = {"W1": (h, n), "W2": (h, h), "W3": (m, h)}

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        h1 = torch.tanh(p["W1"] @ X)
        h2 = torch.tanh(p["W2"] @ h1) + h1
        return ((p["W3"] @ h2 - Y) ** 2).sum()

    return ParamLoss(f"tanh_skip_m{m}h{h}n{n}k{k}", fn, shapes, (n, k), (m, k), "tanh")


def mlp(activation: Activation, widths: Sequence[int], k: int = 1) -> ParamLoss:
    """A deep network ``||W_L s(W_{L-1} ... s(W_1 X)) - Y||^2`` without biases.

    ``widths = (n, h_1, ..., h_{L-1}, m)``; W_i has shape (widths[i], widths[i-1]), X (n, k),
    Y (m, k). The activation follows every layer but the last. The larger networks of paper 002,
    section 3 (corollary C.2) are of this form.
    """
    widths = list(widths)
    if len(widths) < 3:
        raise ValueError(
            f"`widths` must list at least an input, a hidden and an output width, got {widths}"
        )
    _check_dims(k=k, **{f"widths[{i}]": w for i, w in enumerate(widths)})
    act = activation_fn(activation)
    shapes = {f"W{i}": (widths[i], widths[i - 1]) for i in range(1, len(widths))}

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        return ((mlp_forward(p, X, act, len(widths) - 1) - Y) ** 2).sum()

    name = f"mlp_{activation}_{'-'.join(map(str, widths))}_k{k}"
    return ParamLoss(
        name,
        fn,
        shapes,
        (widths[0], k),
        (widths[-1], k),
        activation,
        False,
        {"output": "mse", "widths": tuple(widths)},
    )


def mlp_forward(p: Params, X: Tensor, act: Callable[[Tensor], Tensor], layers: int) -> Tensor:
    """``W_layers s(... s(W_1 X))``: the first ``layers`` layers of :func:`mlp`, with the
    activation after every layer but the last one applied."""
    out = X
    for i in range(1, layers + 1):
        out = p[f"W{i}"] @ out
        if i < layers:
            out = act(out)
    return out


def module_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data_sampler: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
    params: Sequence[str | nn.Module],
    *,
    name: str = "module",
) -> ParamLoss:
    """A :class:`ParamLoss` over chosen parameters of any ``nn.Module`` ("bring your own model").

    One sample is ``(theta, X, Y)``: theta the chosen parameters, flattened in the order given,
    and a batch ``X`` of inputs with targets ``Y`` as the model takes them; the loss is
    ``loss_fn(model(X), Y)`` evaluated with ``torch.func.functional_call``, every other parameter
    fixed at the module's value. The module itself is never modified.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        data_sampler: ``data_sampler(n, generator) -> (X (n, *x_shape), Y (n, *y_shape))``,
            n samples of one batch each; :func:`symdisc.sampler.sample` draws data through it.
        params: the parameters to act on, each named explicitly: an exact name from
            ``model.named_parameters()`` or a submodule (all of its own parameters). Never a
            substring pattern.
        name: a label for results and plots.

    Raises:
        ValueError: for a name that is not a parameter of ``model``, a module that is not one of
            its submodules, a parameter named twice, or a sampler that does not return a pair of
            tensors with a leading dimension n.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    named = dict(model.named_parameters())
    owner = {id(m): prefix for prefix, m in model.named_modules()}
    chosen: list[str] = []
    for item in params:
        if isinstance(item, nn.Module):
            if id(item) not in owner:
                raise ValueError(
                    f"`params` names a module that is not a submodule of `model`: {item}"
                )
            prefix = owner[id(item)]
            chosen += [
                f"{prefix}.{n}" if prefix else n for n, _ in item.named_parameters(recurse=False)
            ]
        elif isinstance(item, str):
            if item not in named:
                raise ValueError(
                    f"`params` must name parameters of `model`; {item!r} is not among "
                    f"{sorted(named)}"
                )
            chosen.append(item)
        else:
            raise TypeError(
                f"`params` entries must be parameter names or modules, got {type(item).__name__}"
            )
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"`params` must select each parameter once and at least one, got {chosen}")
    fixed = {n: p.detach() for n, p in named.items() if n not in chosen}
    X1, Y1 = _check_sampler(data_sampler)

    def fn(p: Params, X: Tensor, Y: Tensor) -> Tensor:
        return loss_fn(torch.func.functional_call(model, {**fixed, **p}, (X,)), Y)

    shapes = {n: tuple(named[n].shape) for n in chosen}
    return ParamLoss(
        name,
        fn,
        shapes,
        tuple(X1.shape[1:]),
        tuple(Y1.shape[1:]),
        None,
        any(named[n].ndim == 1 for n in chosen),
        {"output": "custom", "data_sampler": data_sampler},
    )


def _check_sampler(sampler: Callable) -> tuple[Tensor, Tensor]:
    out = sampler(1, torch.Generator().manual_seed(0))
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)):
        raise ValueError("`data_sampler(n, generator)` must return a pair of tensors (X, Y)")
    if out[0].shape[0] != 1 or out[1].shape[0] != 1:
        raise ValueError(
            f"`data_sampler(n, generator)` must return tensors with leading dimension n, got "
            f"shapes {tuple(out[0].shape)} and {tuple(out[1].shape)} for n = 1"
        )
    return out

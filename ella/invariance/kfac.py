"""KFAC of an invariant model as a Kronecker product of expectations (paper 001, section 4.2,
eq. 19)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from torch import Tensor, nn

from ella.invariance.models import DrawAverage
from symdisc.curvature import KronFactors, output_hessian_sqrt
from symdisc.curvature.hessian import check_finite_loss
from symdisc.curvature.kfac import forward_with_layer_inputs, kfac_rule_for, layer_terms
from symdisc.curvature.losses import Loss, check_loss, loss_value, reduction_scale

__all__ = ["augmented_kfac"]


def _averaged_layers(model: nn.Module) -> dict[str, nn.Module]:
    if not isinstance(model, DrawAverage):
        raise TypeError(
            f"`model` must be a DrawAverage (inputs (B, S, ...)), got {type(model).__name__}"
        )
    layers = {n: m for n, m in model.named_modules() if kfac_rule_for(m) is not None}
    if not layers:
        raise ValueError("`model` has no layer with a KFAC rule")
    return layers


def _augmented_batch(
    model: nn.Module,
    layers: dict[str, nn.Module],
    point: dict[str, Tensor],
    inputs: Tensor,
    loss: Loss,
    create_graph: bool,
) -> tuple[Tensor, dict[str, tuple[Tensor, int, Tensor, tuple[str, ...], bool]]]:
    """One batch's outputs (B, C) and ``{key: (sum_r abar abar^T, rows, sum gbar gbar^T, names,
    bias)}`` with abar, gbar the draw-averaged a' and g' (eq. 19), summed over the batch."""
    if inputs.ndim < 3:
        raise ValueError(f"inputs must have shape (B, S, ...), got {tuple(inputs.shape)}")
    b, s = inputs.shape[:2]
    outputs, captured = forward_with_layer_inputs(model, layers, point, inputs, create_graph)
    at = outputs if create_graph else outputs.detach()
    columns = output_hessian_sqrt(at, loss, "sum")  # (B, C, K): Lambda(f_hat) = S S^T
    n_cols = columns.shape[2]
    result = {}
    # backpropagating S's columns through the mean over draws gives (1/S) g'_s per draw
    for name, terms in layer_terms(layers, outputs, captured, columns, create_graph).items():
        for j, term in enumerate(terms):
            key = name if len(terms) == 1 else f"{name}:{j}"
            a, g = term.a, term.g
            if a.ndim != 2 or g.ndim != 2:
                raise ValueError(
                    f"augmented KFAC needs 2-D (rows, d) a and g, but the KFAC rule of layer "
                    f"{name!r} ({type(layers[name]).__name__}) gives a {tuple(a.shape)} and g "
                    f"{tuple(g.shape)}"
                )
            if a.shape[0] % (b * s) or g.shape[0] % (n_cols * b * s):
                raise ValueError(
                    f"the KFAC rule of layer {name!r} ({type(layers[name]).__name__}) gives "
                    f"{a.shape[0]} rows of a and {g.shape[0]} of g, not multiples of the "
                    f"B*S = {b * s} augmented samples: augmented KFAC needs rows ordered "
                    f"(column, sample, draw, position)"
                )
            abar = a.reshape(b, s, -1, a.shape[-1]).mean(1).reshape(-1, a.shape[-1])
            gbar = g.reshape(n_cols, b, s, -1, g.shape[-1]).sum(2).reshape(-1, g.shape[-1])
            full = tuple(f"{name}.{p}" if name else p for p in term.params)
            result[key] = (abar.T @ abar, abar.shape[0], gbar.T @ gbar, full, term.bias)
    return outputs, result


def augmented_kfac(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    loss: Loss,
    reduction: Literal["sum", "mean"] = "sum",
    params: Mapping[str, Tensor] | None = None,
    create_graph: bool = False,
    bias: Literal["folded", "separate"] = "folded",
) -> dict[str, KronFactors]:
    """KFAC of an invariant model, a Kronecker product of expectations (section 4.2, eq. 19).

    For example n with draws s and a layer with inputs a'_ns and backpropagated output-Hessian
    columns g'_ns (the Jacobian of the network output at the draw in the layer output, times a
    square root of ``Lambda(f_hat_n)``), eq. (19) replaces ``E[a' (x) g'] Lambda E[..]^T`` by

        E_s[a'_ns] E_s[a'_ns]^T  (x)  E_s[g'_ns] Lambda_n E_s[g'_ns]^T,

    and the per-example factors are summed (G) and averaged (A) over examples (and over the
    positions of a convolution, the *expand* setting), as in :func:`symdisc.curvature.kfac`:

        A = 1/(N L) sum_{n, l} abar_nl abar_nl^T,   G = sum_{n, l} gbar_nl gbar_nl^T.

    With one draw (S = 1) this is the ordinary KFAC; for a single linear layer and one example
    it equals the GGN with averaged Jacobians (eq. 17) exactly.

    Called like :func:`symdisc.curvature.kfac` (so that it can be passed to
    :class:`ella.laplace.Laplace` as ``kron_factors``): ``model`` is a :class:`DrawAverage`,
    the batches' inputs are draws (B, S, ...). Works with any KFAC rule whose rows are ordered
    (output-Hessian column, sample, position), such as those of ``nn.Linear`` and ``nn.Conv2d``.

    Args:
        model: a :class:`DrawAverage`.
        data: ``(inputs (B, S, ...), targets)`` batches.
        loss: ``"cross_entropy"`` or ``"mse"``; reduction ``"sum"`` or ``"mean"`` (G scaled).
        params: evaluate at these parameters (full names) instead of the module's.
        create_graph: keep the graph (factors differentiable in the inputs, hence in eta).
        bias: ``"folded"`` or ``"separate"`` (as in :func:`symdisc.curvature.kfac`).

    Raises:
        TypeError: for a model that is not a :class:`DrawAverage`.
        ValueError: for no data, a non-finite loss, unknown options, or a rule whose rows are
            not ordered as above.
    """
    check_loss(loss, reduction)
    if bias not in ("folded", "separate"):
        raise ValueError(f"`bias` must be 'folded' or 'separate', got {bias!r}")
    layers = _averaged_layers(model)
    point = {n: p.detach() for n, p in model.named_parameters()}
    if params is not None:
        point.update(params)
    point = {n: p.detach().requires_grad_(True) for n, p in point.items()}
    a_sum: dict[str, Tensor] = {}
    rows: dict[str, int] = {}
    g_sum: dict[str, Tensor] = {}
    meta: dict[str, tuple[tuple[str, ...], bool]] = {}
    n_total, out_shape = 0, None
    for inputs, targets in data:
        outputs, parts = _augmented_batch(model, layers, point, inputs, loss, create_graph)
        check_finite_loss(loss_value(outputs.detach(), targets, loss, reduction))
        for key, (aa, r, gg, names, has_bias) in parts.items():
            a_sum[key] = a_sum.get(key, 0) + aa
            rows[key] = rows.get(key, 0) + r
            g_sum[key] = g_sum.get(key, 0) + gg
            meta[key] = (names, has_bias)
        n_total += outputs.shape[0]
        out_shape = tuple(outputs.shape[1:])
    if out_shape is None:
        raise ValueError("`data` must yield at least one (inputs, targets) batch")
    scale = reduction_scale((n_total, *out_shape), loss, reduction)
    out: dict[str, KronFactors] = {}
    for key in a_sum:
        A, G = a_sum[key] / rows[key], scale * g_sum[key]
        names, has_bias = meta[key]
        if bias == "separate" and has_bias:
            out[key] = KronFactors(A[:-1, :-1], G, names[:-1], False)
            out[f"{key}.bias" if key else "bias"] = KronFactors(A[-1:, -1:], G, names[-1:], False)
        else:
            out[key] = KronFactors(A, G, names, has_bias)
    return out

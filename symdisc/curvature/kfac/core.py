"""Kronecker-factored approximate curvature (KFAC) of the GGN, per layer.

For a layer ``s = W a`` (bias folded in as a last column of W and a constant 1 in a), the GGN block
of sample n is ``sum_c (g_nc g_nc^T) (x) (a_n a_n^T)`` in the row-major flattening of W, with
``g_nc = J_s^T S_n e_c`` the backpropagated columns of a square root of the output Hessian. KFAC
swaps the sum over samples and the Kronecker product (Martens and Grosse, 2015; paper 000,
appendix C):

    G_block ~= A (x) G,   A = (1/R) sum_r a_r a_r^T,   G = sum_{r,c} g_rc g_rc^T,

where r runs over samples and, in the *expand* setting of Grosse and Martens (2016) and
Eschenhagen et al. (2023), over the positions that share the weights (patches of a convolution,
tokens of a sequence). For one sample and no weight sharing the approximation is exact. In the
flattening of :func:`symdisc.curvature.flatten` (row-major, output index first) the block is
``torch.kron(G, A)``; :meth:`KronFactors.to_dense` returns it in the order of the parameters.
With ``bias="separate"`` the folded block is split after accumulation into a weight block
``A[:-1, :-1] (x) G`` and a bias block ``1 (x) G`` (laplace-torch's and BackPACK's layout).

Layers are handled by *rules*, looked up by module type along the MRO; ``nn.Linear`` and
``nn.Conv2d`` have rules here, and other packages add theirs with :func:`register_kfac_rule`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from symdisc.curvature._random import SeedLike, as_generator
from symdisc.curvature.functional import Params, check_params
from symdisc.curvature.hessian import check_finite_loss
from symdisc.curvature.losses import (
    Loss,
    Reduction,
    check_loss,
    loss_value,
    output_hessian_sqrt,
    reduction_scale,
    sample_output_gradients,
)

FisherType = Literal["type2", "mc"]
BiasHandling = Literal["folded", "separate"]

__all__ = [
    "FisherType",
    "BiasHandling",
    "KronFactors",
    "KronTerms",
    "KFACRule",
    "kfac",
    "kfac_with_loss",
    "row_gram",
    "forward_with_layer_inputs",
    "layer_terms",
    "register_kfac_rule",
    "kfac_rule_for",
]


@dataclass(frozen=True)
class KronTerms:
    """What a layer rule extracts from one batch for one Kronecker-factored block.

    Attributes:
        params: names, inside the module, of the parameters the block covers: a weight whose
            shape flattens to (d_G, d_A') and, if ``bias`` is true, a bias of shape (d_G,).
        a: (R, d_A) rows whose mean outer product is the A factor (R samples x shared positions).
        g: (R', d_G) rows whose summed outer product is the G factor (all output-Hessian columns).
        bias: whether the last coordinate of ``a`` is the constant 1 of a bias.

    Either of ``a`` and ``g`` may instead be *block rows* of shape (R, K, d): shorthand for the
    R K rows ``e_k (x) x[r, k]`` of length K d, each non-zero in one block only, whose outer
    product sum is the block-diagonal ``block_diag_k(sum_r x[r, k] x[r, k]^T)``
    (:func:`row_gram`). A factored layer's input expanded over a channel axis has this form;
    the short form saves a factor K of memory and K^2 of time.
    """

    params: tuple[str, ...]
    a: Tensor
    g: Tensor
    bias: bool


def row_gram(rows: Tensor) -> tuple[Tensor, int]:
    """The outer-product sum of the rows of a :class:`KronTerms` factor, and their count.

    Args:
        rows: (R, d) rows, or (R, K, d) block rows (see :class:`KronTerms`).

    Returns:
        ``(sum_r x_r x_r^T, R)`` of shape (d, d) for plain rows; for block rows the
        block-diagonal (K d, K d) matrix ``block_diag_k(sum_r x[r, k] x[r, k]^T)`` and R K.

    Raises:
        ValueError: for rows that are neither 2-D nor 3-D.
    """
    if rows.ndim == 2:
        return rows.T @ rows, rows.shape[0]
    if rows.ndim == 3:
        blocks = torch.einsum("rkd,rke->kde", rows, rows)  # (K, d, d)
        return torch.block_diag(*blocks), rows.shape[0] * rows.shape[1]
    raise ValueError(f"KFAC rows must be (R, d) or (R, K, d), got shape {tuple(rows.shape)}")


KFACRule = Callable[[nn.Module, Tensor, Sequence[Tensor]], list[KronTerms]]
"""``rule(module, layer_input, output_grads) -> [KronTerms]``; ``output_grads`` holds one
tensor shaped like the layer's output per output-Hessian column."""

_RULES: dict[type, KFACRule] = {}


def register_kfac_rule(module_type: type) -> Callable[[KFACRule], KFACRule]:
    """Decorator that registers the KFAC rule of a module type (and of its subclasses).

    Example:
        >>> @register_kfac_rule(MyLayer)
        ... def _my_layer(module, layer_input, output_grads):
        ...     return [KronTerms(("weight",), a=..., g=..., bias=False)]
    """
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"`module_type` must be an nn.Module subclass, got {module_type!r}")

    def register(rule: KFACRule) -> KFACRule:
        _RULES[module_type] = rule
        return rule

    return register


def kfac_rule_for(module: nn.Module) -> KFACRule | None:
    """The rule registered for the module's type or its nearest base class, or None."""
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def _with_ones(a: Tensor) -> Tensor:
    return torch.cat([a, torch.ones_like(a[:, :1])], dim=1)


@register_kfac_rule(nn.Linear)
def _linear_rule(module: nn.Linear, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a = x.reshape(-1, module.in_features)
    has_bias = module.bias is not None
    g = torch.cat([gr.reshape(-1, module.out_features) for gr in grads])
    names = ("weight", "bias") if has_bias else ("weight",)
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]


@register_kfac_rule(nn.Conv2d)
def _conv2d_rule(module: nn.Conv2d, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    if module.groups != 1:
        raise ValueError(f"KFAC for nn.Conv2d needs groups=1, got groups={module.groups}")
    if isinstance(module.padding, str):
        raise ValueError("KFAC for nn.Conv2d needs numeric padding, got padding='same'/'valid'")
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding: tuple[int, ...] | int = 0
    else:
        padding = module.padding
    patches = F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)
    a = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (N * L, C_in * kh * kw)
    has_bias = module.bias is not None
    g = torch.cat([gr.flatten(2).transpose(1, 2).reshape(-1, module.out_channels) for gr in grads])
    names = ("weight", "bias") if has_bias else ("weight",)
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]


@dataclass(frozen=True)
class KronFactors:
    """The KFAC block ``A (x) G`` of one layer.

    Attributes:
        A: (d_A, d_A) input factor, d_A = fan-in (+1 with a bias).
        G: (d_G, d_G) output factor, d_G = fan-out.
        params: full names of the covered parameters, weight first.
        bias: whether the last row/column of A belongs to a separate bias parameter.
    """

    A: Tensor
    G: Tensor
    params: tuple[str, ...]
    bias: bool

    def to_dense(self) -> Tensor:
        """The block as a dense matrix, ordered like ``flatten({weight, bias})``.

        In row-major order of the augmented weight ``[W | b]`` the block is ``kron(G, A)``; the
        bias column is then moved behind the weight entries.
        """
        dense = torch.kron(self.G, self.A)
        if not self.bias:
            return dense
        d_g, d_a = self.G.shape[0], self.A.shape[0]
        grid = torch.arange(d_g * d_a, device=dense.device).reshape(d_g, d_a)
        order = torch.cat([grid[:, :-1].reshape(-1), grid[:, -1]])
        return dense[order][:, order]


def kfac(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    loss: Loss,
    reduction: Reduction = "mean",
    fisher: FisherType = "type2",
    mc_samples: int = 1,
    generator: SeedLike = None,
    params: Params | None = None,
    modules: Sequence[str] | None = None,
    create_graph: bool = False,
    bias: BiasHandling = "folded",
) -> dict[str, KronFactors]:
    """KFAC factors of every supported layer, accumulated over the batches of ``data``.

    Args:
        model: an ``nn.Module`` mapping inputs (N, ...) to outputs (N, C).
        data: an iterable of ``(inputs, targets)`` batches (a list, a DataLoader); the loss is
            the reduction over all of them, so the result does not depend on how the data are
            batched.
        loss, reduction: as in :func:`symdisc.curvature.ggn`.
        fisher: ``"type2"`` backpropagates all C columns of an exact square root of the output
            Hessian (the GGN); ``"mc"`` backpropagates ``mc_samples`` gradients at targets drawn
            from the model's predictive distribution (the Monte-Carlo Fisher, an unbiased
            estimate of the same G, cheaper when C is large).
        mc_samples: draws per sample for ``fisher="mc"``.
        generator: seed or ``torch.Generator`` for ``fisher="mc"``.
        params: evaluate at these parameters (``dict[str, Tensor]`` by full name) instead of the
            module's own; the module is never modified.
        modules: names of the layers to cover (default: every submodule with a rule). Layers are
            chosen by exact name, never by substring.
        create_graph: keep the autograd graph, so that A and G are differentiable in whatever
            the outputs depend on besides the parameters (the inputs, hyperparameters of the
            model): the captured layer inputs and the output Hessian are not detached and the
            backpropagated columns are computed with ``create_graph=True``. Default False: the
            factors are detached, as before.
        bias: ``"folded"`` (default): a bias shares the block of its weight through the
            constant 1 appended to the layer input, ``A = mean([a; 1][a; 1]^T)``, (d_A, d_A)
            with d_A = fan-in + 1. ``"separate"``: after accumulation, every block whose rule
            reports a bias is split into a weight block ``A[:-1, :-1] (x) G`` and a bias
            block ``A[-1:, -1:] (x) G = 1 (x) G`` (the mean of 1 * 1 is 1), both with
            ``bias=False``; the dropped off-diagonal ``A[:-1, -1]`` couples weight and bias.
            The two blocks equal the diagonal sub-blocks of the folded block's
            :meth:`KronFactors.to_dense`. Use it to give weight and bias their own prior
            precision in a Kronecker-factored Laplace approximation.

    Returns:
        ``{layer_name: KronFactors}`` (a layer with several blocks adds ``":i"`` to its name);
        with ``bias="separate"`` the bias block of the block keyed ``k`` is keyed
        ``f"{k}.bias"`` (``"bias"`` for a model that is itself the layer) and the weight block
        keeps ``k``.

    Raises:
        ValueError: for unknown options, a named module that has no rule, no data, or a loss
            that is not finite.
    """
    factors, _ = kfac_with_loss(
        model,
        data,
        loss=loss,
        reduction=reduction,
        fisher=fisher,
        mc_samples=mc_samples,
        generator=generator,
        params=params,
        modules=modules,
        create_graph=create_graph,
        bias=bias,
    )
    return factors


def kfac_with_loss(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    loss: Loss,
    reduction: Reduction = "mean",
    fisher: FisherType = "type2",
    mc_samples: int = 1,
    generator: SeedLike = None,
    params: Params | None = None,
    modules: Sequence[str] | None = None,
    create_graph: bool = False,
    bias: BiasHandling = "folded",
) -> tuple[dict[str, KronFactors], Tensor]:
    """:func:`kfac`, and the loss over all batches from the same forward passes.

    Arguments, factors and errors as in :func:`kfac`. The loss is the 0-d ``reduction`` of
    ``loss`` over all batches at the evaluation point (``scale * sum_b loss_b`` with the
    summed per-batch losses); with ``create_graph=True`` it keeps its graph to the inputs,
    otherwise it is detached. Saves the extra forward pass of a caller that needs both (the
    Laplace approximation needs the log-likelihood and the curvature).
    """
    check_loss(loss, reduction)
    if fisher not in get_args(FisherType):
        raise ValueError(f"`fisher` must be one of {get_args(FisherType)}, got {fisher!r}")
    if not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"`mc_samples` must be a positive int, got {mc_samples!r}")
    if not isinstance(create_graph, bool):
        raise TypeError(f"`create_graph` must be a bool, got {type(create_graph).__name__}")
    if bias not in get_args(BiasHandling):
        raise ValueError(f"`bias` must be one of {get_args(BiasHandling)}, got {bias!r}")
    gen = as_generator(generator)
    layers = _select_layers(model, modules)
    point = {n: p.detach() for n, p in model.named_parameters()}
    if params is not None:
        point.update(check_params(params))
    point = {n: p.detach().requires_grad_(True) for n, p in point.items()}

    a_sum: dict[str, Tensor] = {}
    rows: dict[str, int] = {}
    g_sum: dict[str, Tensor] = {}
    meta: dict[str, tuple[tuple[str, ...], bool]] = {}
    n_total = 0
    out_shape: tuple[int, ...] | None = None
    loss_sum: Tensor | None = None
    for inputs, targets in data:
        outputs, captured = forward_with_layer_inputs(model, layers, point, inputs, create_graph)
        at = outputs if create_graph else outputs.detach()
        value = loss_value(at, targets, loss, "sum")
        check_finite_loss(value.detach())
        loss_sum = value if loss_sum is None else loss_sum + value
        if fisher == "type2" and loss == "cross_entropy" and at.shape[-1] > 1:
            # the softmax Hessian has rank C - 1: one backward pass fewer, same G
            columns = _softmax_root_rank_reduced(at)
        elif fisher == "type2":
            columns = output_hessian_sqrt(at, loss, "sum")
        else:
            columns = sample_output_gradients(at, loss, "sum", mc_samples, gen)
        for name, terms in layer_terms(layers, outputs, captured, columns, create_graph).items():
            for j, term in enumerate(terms):
                key = name if len(terms) == 1 else f"{name}:{j}"
                a_gram, n_rows = row_gram(term.a)
                a_sum[key] = a_sum.get(key, 0) + a_gram
                rows[key] = rows.get(key, 0) + n_rows
                g_sum[key] = g_sum.get(key, 0) + row_gram(term.g)[0]
                meta[key] = (tuple(f"{name}.{p}" if name else p for p in term.params), term.bias)
        n_total += outputs.shape[0]
        out_shape = tuple(outputs.shape[1:])
    if out_shape is None or loss_sum is None:
        raise ValueError("`data` must yield at least one (inputs, targets) batch")
    scale = reduction_scale((n_total, *out_shape), loss, reduction)
    out: dict[str, KronFactors] = {}
    for key in a_sum:
        factors = KronFactors(a_sum[key] / rows[key], scale * g_sum[key], *meta[key])
        if bias == "separate" and factors.bias:
            out.update(_split_bias(key, factors))
        else:
            out[key] = factors
    return out, scale * loss_sum


def _split_bias(key: str, factors: KronFactors) -> dict[str, KronFactors]:
    """The weight block ``A[:-1, :-1] (x) G`` and the bias block ``A[-1:, -1:] (x) G`` of a
    folded block (A: (d_A, d_A), its last coordinate the bias's constant 1)."""
    A, G, params = factors.A, factors.G, factors.params
    return {
        key: KronFactors(A[:-1, :-1], G, params[:-1], False),
        f"{key}.bias" if key else "bias": KronFactors(A[-1:, -1:], G, params[-1:], False),
    }


def _softmax(outputs: Tensor) -> Tensor:
    """softmax over the classes of (N, C) logits, taken over dim 0 of the transpose: torch's CPU
    kernel then vectorises across samples (measured 7x faster than ``dim=-1`` for C = 3)."""
    return torch.softmax(outputs.mT, dim=0).mT


def _softmax_root_rank_reduced(outputs: Tensor) -> Tensor:
    """(N, C, C - 1) columns with ``S'_n S'_n^T = diag(p_n) - p_n p_n^T``: the root ``S_n =
    diag(sqrt p_n) - p_n sqrt(p_n)^T`` of :func:`symdisc.curvature.losses.output_hessian_sqrt`
    (summed cross-entropy) with its null direction dropped by :func:`drop_softmax_null`."""
    p = _softmax(outputs)
    root = p.sqrt()
    S = torch.diag_embed(root) - p[:, :, None] * root[:, None, :]
    return drop_softmax_null(S, outputs, dim=2, probabilities=p)


def drop_softmax_null(
    x: Tensor, outputs: Tensor, dim: int, *, probabilities: Tensor | None = None
) -> Tensor:
    """Drop the direction of ``x`` that the cross-entropy output Hessian annihilates.

    The root ``S_n = diag(sqrt p_n) - p_n sqrt(p_n)^T`` of ``H_n = diag(p_n) - p_n p_n^T``
    (:func:`symdisc.curvature.losses.output_hessian_sqrt`) has rank C - 1: ``S_n u_n = 0`` for
    the unit vector ``u_n = sqrt(p_n)``. With the Householder reflection
    ``Q_n = I - 2 v v^T / (v^T v)``, ``v = u_n + e_C`` (so ``Q_n u_n = -e_C``; ``v^T v >= 2``,
    stable), the last column of ``S_n Q_n`` is ``-S_n u_n = 0`` and ``(S_n Q_n)(S_n Q_n)^T =
    H_n``. So the C columns of ``S_n`` (``dim`` indexing them) or the C rows ``S_n^T J_n`` of a
    GGN factor can be replaced by C - 1 with the same outer-product sum.

    Args:
        x: (N, ..., C, ...) with the root's column index at ``dim`` (dim >= 1).
        outputs: (N, C) logits, p_n = softmax(outputs_n).
        probabilities: softmax(outputs) (N, C) when the caller has it already.

    Returns:
        ``x`` reflected along ``dim`` by ``Q_n``, with the last (zero) index dropped: C - 1 there.
    """
    n, c = outputs.shape
    p = _softmax(outputs) if probabilities is None else probabilities
    u = p.sqrt()  # (N, C), unit norm: sum_c p_c = 1
    v = u + torch.eye(c, dtype=u.dtype, device=u.device)[-1]  # u_n + e_C
    shape = [n] + [1] * (x.ndim - 1)
    shape[dim] = c
    v = v.reshape(shape)
    coef = 2.0 / (v * v).sum(dim, keepdim=True)
    reflected = x - coef * v * (v * x).sum(dim, keepdim=True)
    return reflected.narrow(dim, 0, c - 1)


def _select_layers(model: nn.Module, modules: Sequence[str] | None) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if modules is None:
        layers = {n: m for n, m in named.items() if kfac_rule_for(m) is not None}
        if not layers:
            raise ValueError(
                f"`model` has no layer with a KFAC rule (rules exist for {_rule_names()})"
            )
        return layers
    missing = [n for n in modules if n not in named]
    if missing:
        raise ValueError(f"`modules` must name submodules of `model`; {missing} are not among them")
    ruleless = [n for n in modules if kfac_rule_for(named[n]) is None]
    if ruleless:
        raise ValueError(
            f"`modules` {ruleless} have no KFAC rule (rules exist for {_rule_names()})"
        )
    return {n: named[n] for n in modules}


def _rule_names() -> list[str]:
    return sorted(t.__name__ for t in _RULES)


def forward_with_layer_inputs(
    model: nn.Module,
    layers: dict[str, nn.Module],
    point: dict[str, Tensor],
    inputs: Tensor,
    keep_graph: bool,
) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """The model's outputs at ``point`` and ``{layer: (layer input, layer output)}``.

    The layer inputs are detached unless ``keep_graph`` (then the factors built from them stay
    differentiable in whatever the inputs depend on); the layer outputs keep their graph, for
    :func:`layer_terms`.
    """
    captured: dict[str, tuple[Tensor, Tensor]] = {}

    def capture(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
            captured[name] = (args[0] if keep_graph else args[0].detach(), output)

        return hook

    handles = [m.register_forward_hook(capture(n)) for n, m in layers.items()]
    try:
        with torch.enable_grad():
            outputs = torch.func.functional_call(model, point, (inputs,))
    finally:
        for h in handles:
            h.remove()
    return outputs, captured


def layer_terms(
    layers: dict[str, nn.Module],
    outputs: Tensor,
    captured: dict[str, tuple[Tensor, Tensor]],
    columns: Tensor,
    create_graph: bool,
) -> dict[str, list[KronTerms]]:
    """Every layer's :class:`KronTerms` for one batch.

    Backpropagates each column ``columns[:, :, k]`` (N, C) of an output-Hessian root (or of
    sampled output gradients) from ``outputs`` (N, C) to the captured layer outputs of
    :func:`forward_with_layer_inputs`, one backward pass per column, and applies each layer's
    rule to its input and those output gradients (detached unless ``create_graph``).
    """
    names = list(captured)
    layer_outputs = [captured[n][1] for n in names]
    per_column = [
        torch.autograd.grad(
            outputs, layer_outputs, columns[:, :, k], retain_graph=True, create_graph=create_graph
        )
        for k in range(columns.shape[2])
    ]
    out: dict[str, list[KronTerms]] = {}
    for i, name in enumerate(names):
        grads = [col[i] if create_graph else col[i].detach() for col in per_column]
        rule = kfac_rule_for(layers[name])
        assert rule is not None  # layers are selected by having a rule
        out[name] = rule(layers[name], captured[name][0], grads)
    return out

"""Kronecker-factored approximate curvature (KFAC) of the GGN, per layer: one accumulation core
(paper 000, appendix C) and its variants.

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

One core does the accumulation (:func:`accumulate_kfac`, one batch at a time by
:func:`kfac_batch`): a forward pass that captures every layer's input, the backpropagation of the
output-Hessian columns to the layer outputs, the layer rules (:mod:`.registry`, :mod:`.rules`),
the Gram matrices of the rows, the key naming, the sums over batches, the reduction's scale and
the bias split. What differs between variants of KFAC is a :class:`KFACVariant`: which columns
are backpropagated and how a batch's rows are mapped before their Gram matrix.
:class:`StandardKFAC` is the KFAC of :func:`kfac`; the augmented KFAC of paper 001 (eq. 19,
``ella.invariance.augmented_kfac``) is another variant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from symdisc.curvature._random import SeedLike, as_generator
from symdisc.curvature.derivatives import check_inputs
from symdisc.curvature.functional import Params, check_eval_mode, check_params
from symdisc.curvature.hessian import check_finite_loss
from symdisc.curvature.kfac.registry import KronTerms, kfac_layers, kfac_rule_for
from symdisc.curvature.losses import (
    Loss,
    Reduction,
    check_loss,
    loss_value,
    output_hessian_sqrt,
    reduction_scale,
    sample_output_gradients,
    softmax_root,
)
from symdisc.runtime.checks import (
    check_batches,
    check_bool,
    check_choice,
    check_instance,
    check_int,
    check_optional_int,
)

FisherType = Literal["type2", "mc"]
BiasHandling = Literal["folded", "separate"]

__all__ = [
    "FisherType",
    "BiasHandling",
    "KronFactors",
    "BlockSums",
    "LayerBatch",
    "KFACVariant",
    "StandardKFAC",
    "kfac",
    "kfac_with_loss",
    "accumulate_kfac",
    "kfac_batch",
    "row_gram",
    "drop_softmax_null",
    "forward_with_layer_inputs",
    "layer_terms",
]


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
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

    def __repr__(self) -> str:
        return (
            f"KronFactors(A={tuple(self.A.shape)}, G={tuple(self.G.shape)}, "
            f"params={self.params}, bias={self.bias})"
        )

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


@dataclass(frozen=True, repr=False)
class BlockSums:
    """One batch's contribution to one Kronecker-factored block, before normalisation.

    Attributes:
        aa: (d_A, d_A) ``sum_r a_r a_r^T`` over the batch's (mapped) rows of a.
        rows: R, the number of those rows (A of the whole data is the sum of ``aa`` over
            batches divided by the sum of ``rows``).
        gg: (d_G, d_G) ``sum g g^T`` over the batch's (mapped) rows of g, unscaled by the
            reduction.
        params: full names of the covered parameters, weight first.
        bias: whether the last coordinate of a is a bias's constant 1.
    """

    aa: Tensor
    rows: int
    gg: Tensor
    params: tuple[str, ...]
    bias: bool

    def __repr__(self) -> str:
        return (
            f"BlockSums(aa={tuple(self.aa.shape)}, rows={self.rows}, gg={tuple(self.gg.shape)}, "
            f"params={self.params}, bias={self.bias})"
        )


@dataclass(frozen=True, repr=False)
class LayerBatch:
    """Where one block's rows come from: a layer in a batch (for :meth:`KFACVariant.factor_rows`).

    Attributes:
        inputs: the batch's model inputs (N, ...).
        n_columns: K, the number of backpropagated output-Hessian columns.
        layer: the layer's name.
        module: the layer's module.
    """

    inputs: Tensor
    n_columns: int
    layer: str
    module: nn.Module

    def __repr__(self) -> str:
        return (
            f"LayerBatch(inputs={tuple(self.inputs.shape)}, n_columns={self.n_columns}, "
            f"layer={self.layer!r}, module={type(self.module).__name__})"
        )

    def describe(self) -> str:
        """``"layer 'name' (ModuleType)"``, for messages."""
        return f"layer {self.layer!r} ({type(self.module).__name__})"


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


# --------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------


class KFACVariant(ABC):
    """What distinguishes one KFAC from another inside the accumulation core.

    Per batch the core backpropagates the columns of :meth:`output_columns` to every layer,
    applies the layer's rule and passes each :class:`KronTerms` through :meth:`factor_rows`
    before it takes the Gram matrices of the rows. A variant is called like :func:`kfac`
    without the Fisher options (``variant(model, data, loss=..., ...)``, see
    :func:`accumulate_kfac`), so that it can stand wherever such a function is expected.
    """

    def check_model(self, model: nn.Module) -> None:  # noqa: B027  (optional hook)
        """Raise if the variant does not apply to ``model``; the default accepts any model."""

    @abstractmethod
    def output_columns(self, outputs: Tensor, loss: Loss) -> Tensor:
        """(N, C, K) columns whose outer products sum to (an estimate of) the Hessian of the
        summed ``loss`` in the outputs (N, C); one backward pass per column."""

    def factor_rows(self, term: KronTerms, batch: LayerBatch) -> tuple[Tensor, Tensor]:
        """The rows ``(a, g)`` whose Gram matrices enter A and G for one block of one batch.

        Args:
            term: the layer rule's rows for the batch.
            batch: the batch's inputs, the number of output-Hessian columns and the layer.

        The default keeps the rule's rows.
        """
        return term.a, term.g

    def __call__(
        self, model: nn.Module, data: Iterable[tuple[Tensor, Tensor]], **options: Any
    ) -> dict[str, KronFactors]:
        """The factors of this variant: ``accumulate_kfac(model, data, self, **options)[0]``."""
        return accumulate_kfac(model, data, self, **options)[0]


class StandardKFAC(KFACVariant):
    """The KFAC of :func:`kfac`: the exact output-Hessian root or Monte-Carlo gradients.

    Args:
        fisher: ``"type2"`` backpropagates all C columns of an exact square root of the output
            Hessian (the GGN; for cross-entropy the C - 1 columns left after dropping the
            softmax Hessian's null direction, :func:`drop_softmax_null`: one backward pass
            fewer, the same G); ``"mc"`` backpropagates ``mc_samples`` gradients at targets
            drawn from the model's predictive distribution (the Monte-Carlo Fisher, an unbiased
            estimate of the same G, cheaper when C is large).
        mc_samples: draws per sample for ``fisher="mc"``.
        generator: seed or ``torch.Generator`` for ``fisher="mc"``.

    Raises:
        ValueError: for an unknown ``fisher`` or a ``mc_samples`` that is not a positive int.
        TypeError: for a ``generator`` that is neither a generator, an int nor None.
    """

    def __init__(
        self, fisher: FisherType = "type2", mc_samples: int = 1, generator: SeedLike = None
    ) -> None:
        check_choice(fisher, "fisher", FisherType)
        check_int(mc_samples, "mc_samples", minimum=1)
        self.fisher: FisherType = fisher
        self.mc_samples = mc_samples
        self.generator = as_generator(generator)

    def output_columns(self, outputs: Tensor, loss: Loss) -> Tensor:
        if self.fisher == "type2" and loss == "cross_entropy" and outputs.shape[-1] > 1:
            # the softmax Hessian has rank C - 1: one backward pass fewer, same G
            return _softmax_root_rank_reduced(outputs)
        if self.fisher == "type2":
            return output_hessian_sqrt(outputs, loss, "sum")
        return sample_output_gradients(outputs, loss, "sum", self.mc_samples, self.generator)


# --------------------------------------------------------------------------------------------
# the accumulation core
# --------------------------------------------------------------------------------------------


def kfac(
    model: nn.Module, data: Iterable[tuple[Tensor, Tensor]], **options: Any
) -> dict[str, KronFactors]:
    """KFAC factors of every supported layer, accumulated over the batches of ``data``.

    ``kfac(model, data, **options)`` is ``kfac_with_loss(model, data, **options)[0]``.

    Args:
        model: an ``nn.Module`` mapping inputs (N, ...) to outputs (N, C).
        data: an iterable of ``(inputs, targets)`` batches (a list, a DataLoader); the loss is
            the reduction over all of them, so the result does not depend on how the data are
            batched.

    Keyword options (all keyword-only; ``loss`` is required):
        loss, reduction: as in :func:`symdisc.curvature.ggn` (``reduction`` default
            ``"mean"``).
        fisher: ``"type2"`` (default) or ``"mc"``; mc_samples: draws per sample for
            ``"mc"`` (default 1); generator: seed or ``torch.Generator`` for ``"mc"``
            (see :class:`StandardKFAC`).
        params: evaluate at these parameters (``dict[str, Tensor]`` by full name) instead of the
            module's own; the module is never modified.
        modules: names of the layers to cover (default: every submodule with a rule). Layers are
            chosen by exact name, never by substring.
        create_graph: keep the autograd graph, so that A and G are differentiable in whatever
            the outputs depend on besides the parameters (the inputs, hyperparameters of the
            model): the captured layer inputs and the output Hessian are not detached and the
            backpropagated columns are computed with ``create_graph=True``. Default False: the
            factors are detached.
        bias: ``"folded"`` (default): a bias shares the block of its weight through the
            constant 1 appended to the layer input, ``A = mean([a; 1][a; 1]^T)``, (d_A, d_A)
            with d_A = fan-in + 1. ``"separate"``: after accumulation, every block whose rule
            reports a bias is split into a weight block ``A[:-1, :-1] (x) G`` and a bias
            block ``A[-1:, -1:] (x) G = 1 (x) G`` (the mean of 1 * 1 is 1), both with
            ``bias=False``; the dropped off-diagonal ``A[:-1, -1]`` couples weight and bias.
            The two blocks equal the diagonal sub-blocks of the folded block's
            :meth:`KronFactors.to_dense`. Use it to give weight and bias their own prior
            precision in a Kronecker-factored Laplace approximation.
        chunk_size: samples per forward-backward pass. Every backpropagated column's
            gradients at every layer output are held together until the layers' rows are
            formed, K times the activations of a batch (K <= C columns): unchunked, a ResNet on
            512 CIFAR-shaped samples peaked at 820 MB against 190-200 MB for laplace-torch
            (ASDL) and curvlinops, whose hooks reduce each column as it passes. The default
            None sizes the chunks from a one-sample forward pass so that they hold at most
            ``KFAC_CHUNK_ENTRIES`` (2^24) such entries and at most ``KFAC_CHUNK_SAMPLES``
            (1024) samples: chunks of up to 1024 samples for an MLP, of tens of samples for a
            CNN. The factors are the same
            sums over the samples whatever the chunks (up to rounding; with ``fisher="mc"``
            the draws are made chunk by chunk).

    Returns:
        ``{layer_name: KronFactors}`` (a layer with several blocks adds ``":i"`` to its name);
        with ``bias="separate"`` the bias block of the block keyed ``k`` is keyed
        ``f"{k}.bias"`` (``"bias"`` for a model that is itself the layer) and the weight block
        keeps ``k``.

    Raises:
        ValueError: for unknown options, a named module that has no rule, no data, an empty
            batch, ``params`` keyed by names that are not parameters of ``model`` (a subset is
            fine) or of other shapes, class targets out of range, a BatchNorm in training mode
            (call ``model.eval()``), or a loss that is not finite
            (:class:`~symdisc.curvature.NonFiniteCurvatureError`).
        TypeError: for a missing ``loss``, an unknown keyword, a non-bool ``create_graph``, a
            single ``(inputs, targets)`` batch where an iterable of batches is expected (wrap it
            in a list) or a batch that is not a pair of tensors.
    """
    return kfac_with_loss(model, data, **options)[0]


def kfac_with_loss(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    fisher: FisherType = "type2",
    mc_samples: int = 1,
    generator: SeedLike = None,
    **options: Any,
) -> tuple[dict[str, KronFactors], Tensor]:
    """:func:`kfac`, and the loss over all batches from the same forward passes.

    ``fisher``, ``mc_samples`` and ``generator`` choose the :class:`StandardKFAC`; the other
    options go to :func:`accumulate_kfac`. Arguments, factors and errors as in :func:`kfac`.
    The loss is the 0-d ``reduction`` of ``loss`` over all batches at the evaluation point; it
    saves the extra forward pass of a caller that needs both (the Laplace approximation needs
    the log-likelihood and the curvature).
    """
    variant = StandardKFAC(fisher, mc_samples, generator)
    return accumulate_kfac(model, data, variant, **options)


def accumulate_kfac(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    variant: KFACVariant,
    *,
    loss: Loss,
    reduction: Reduction = "mean",
    params: Params | None = None,
    modules: Sequence[str] | None = None,
    create_graph: bool = False,
    bias: BiasHandling = "folded",
    chunk_size: int | None = None,
) -> tuple[dict[str, KronFactors], Tensor]:
    """The accumulation core: ``variant``'s KFAC factors and the loss over all batches.

    Per batch (:func:`kfac_batch`): the forward pass with the layer inputs captured, the summed
    loss (checked finite), ``variant.output_columns`` backpropagated to the layer outputs, the
    rules' rows through ``variant.factor_rows`` and their Gram matrices. Over the batches with
    R rows of a in all, N samples and the reduction's scale s (1, 1/N or 1/(N C)):

        A = (1/R) sum_batches aa,   G = s sum_batches gg,   loss = s sum_batches loss_b.

    Options (``loss``, ``reduction``, ``params``, ``modules``, ``create_graph``, ``bias``,
    ``chunk_size``) and the returned factors as in :func:`kfac`. The loss is 0-d; with
    ``create_graph=True`` it keeps its graph to the inputs, otherwise it is detached.

    Raises:
        TypeError: for a ``variant`` that is not a :class:`KFACVariant`, a non-bool
            ``create_graph``, or a model the variant rejects.
        ValueError: as :func:`kfac`.
    """
    check_instance(model, "model", nn.Module)
    check_batches(data, "data")
    check_loss(loss, reduction)
    check_bool(create_graph, "create_graph")
    check_choice(bias, "bias", BiasHandling)
    check_optional_int(chunk_size, "chunk_size", minimum=1)
    if modules is not None and (isinstance(modules, str) or not isinstance(modules, Iterable)):
        raise TypeError(
            f"`modules` must be a list of layer names, got {type(modules).__name__}"
            + (f" (write [{modules!r}])" if isinstance(modules, str) else "")
        )
    _check_variant(variant, model)
    check_eval_mode(model, "model")
    layers = kfac_layers(model, None if modules is None else list(modules))
    point = {n: p.detach() for n, p in model.named_parameters()}
    if params is not None:
        point.update(_check_point(params, point))
    point = {n: p.detach().requires_grad_(True) for n, p in point.items()}

    a_sum: dict[str, Tensor] = {}
    rows: dict[str, int] = {}
    g_sum: dict[str, Tensor] = {}
    meta: dict[str, tuple[tuple[str, ...], bool]] = {}
    n_total = 0
    out_shape: tuple[int, ...] | None = None
    loss_sum: Tensor | None = None
    for index, batch in enumerate(data):
        inputs, targets = _check_batch(batch, index)
        if chunk_size is None:
            chunk_size = _auto_chunk_size(model, layers, point, inputs)
        step = chunk_size
        for start in range(0, inputs.shape[0], step):
            outputs, value, blocks = _batch(
                model,
                layers,
                point,
                inputs[start : start + step],
                targets[start : start + step],
                variant,
                loss,
                create_graph,
                release_graph=not create_graph,
            )
            loss_sum = value if loss_sum is None else loss_sum + value
            for key, part in blocks.items():
                a_sum[key] = a_sum.get(key, 0) + part.aa
                rows[key] = rows.get(key, 0) + part.rows
                g_sum[key] = g_sum.get(key, 0) + part.gg
                meta[key] = (part.params, part.bias)
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


def kfac_batch(
    model: nn.Module,
    inputs: Tensor,
    variant: KFACVariant,
    *,
    loss: Loss,
    create_graph: bool = False,
) -> tuple[Tensor, dict[str, BlockSums]]:
    """One batch of the accumulation core at the model's own parameters, without targets.

    Returns the outputs (N, C) (with their graph) and ``{block key: BlockSums}`` of every layer
    with a rule (keys as in :func:`kfac`, folded biases): the per-batch pieces that sum to the
    factors of :func:`accumulate_kfac`, e.g. for a derivative of a sum over examples taken one
    batch's graph at a time (paper 001, section 4.3).

    Raises:
        TypeError, ValueError: as :func:`accumulate_kfac`.
    """
    check_instance(model, "model", nn.Module)
    check_inputs(inputs)
    check_loss(loss, "sum")
    check_bool(create_graph, "create_graph")
    _check_variant(variant, model)
    check_eval_mode(model, "model")
    layers = kfac_layers(model)
    point = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()}
    outputs, _, blocks = _batch(model, layers, point, inputs, None, variant, loss, create_graph)
    return outputs, blocks


def _check_point(params: object, own: dict[str, Tensor]) -> dict[str, Tensor]:
    """``params`` if every entry names a parameter of the model with its shape (a subset may be
    given: the others stay at the module's values)."""
    params = check_params(params)
    unknown = [k for k in params if k not in own]
    if unknown:
        raise ValueError(
            f"`params` must be keyed by full parameter names of `model`; {unknown} are not among "
            f"{list(own)}"
        )
    wrong = [
        f"{k!r} {tuple(v.shape)} (the model's is {tuple(own[k].shape)})"
        for k, v in params.items()
        if v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"`params` must have the shapes of the model's parameters, got {wrong}")
    return params


def _check_batch(batch: object, index: int) -> tuple[Tensor, Tensor]:
    """Batch ``index`` of ``data`` as ``(inputs, targets)``: two tensors of one non-empty N."""
    name = f"data[{index}]"
    if not (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and all(isinstance(t, Tensor) for t in batch)
    ):
        got = (
            f"a {type(batch).__name__} of {len(batch)}"
            if isinstance(batch, (tuple, list))
            else type(batch).__name__
        )
        raise TypeError(
            f"`{name}` must be an (inputs, targets) pair of tensors, got {got}; `data` is an "
            f"iterable of such batches (wrap a single batch in a list)"
        )
    inputs, targets = batch
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty batch, got inputs {tuple(inputs.shape)} and targets "
            f"{tuple(targets.shape)}"
        )
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"`{name}` inputs and targets must share their first dimension, got "
            f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    return inputs, targets


def _check_variant(variant: object, model: nn.Module) -> None:
    if not isinstance(variant, KFACVariant):
        raise TypeError(f"`variant` must be a KFACVariant, got {type(variant).__name__}")
    variant.check_model(model)


def _batch(
    model: nn.Module,
    layers: dict[str, nn.Module],
    point: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor | None,
    variant: KFACVariant,
    loss: Loss,
    create_graph: bool,
    *,
    release_graph: bool = False,
) -> tuple[Tensor, Tensor | None, dict[str, BlockSums]]:
    """Outputs, summed loss (None without targets) and block sums of one batch.

    The layers are reduced to their block sums one at a time, each layer's rows and output
    gradients released before the next layer's are formed; ``release_graph`` frees the graph of
    the outputs with the last backpropagated column (when nothing is differentiated later).
    """
    outputs, captured = forward_with_layer_inputs(model, layers, point, inputs, create_graph)
    at = outputs if create_graph else outputs.detach()
    value = None
    if targets is not None:
        value = loss_value(at, targets, loss, "sum")
        check_finite_loss(value.detach())
    columns = variant.output_columns(at, loss)
    n_columns = columns.shape[2]
    blocks: dict[str, BlockSums] = {}
    terms_of = _iter_layer_terms(layers, outputs, captured, columns, create_graph, release_graph)
    del captured  # popped layer by layer by the iterator
    for name, terms in terms_of:
        for j, term in enumerate(terms):
            key = name if len(terms) == 1 else f"{name}:{j}"
            a, g = variant.factor_rows(term, LayerBatch(inputs, n_columns, name, layers[name]))
            aa, n_rows = row_gram(a)
            gg = row_gram(g)[0]
            full = tuple(f"{name}.{p}" if name else p for p in term.params)
            blocks[key] = BlockSums(aa, n_rows, gg, full, term.bias)
    return outputs, value, blocks


KFAC_CHUNK_ENTRIES = 2**24
"""Most output-gradient entries (columns x samples x layer-output entries) one pass of the
KFAC accumulation holds when ``chunk_size`` is left to :func:`_auto_chunk_size`: 64 MB in
float32."""
KFAC_CHUNK_SAMPLES = 1024
"""Most samples per pass when ``chunk_size`` is left to :func:`_auto_chunk_size`: on the
benchmark MLP (N = 2000, 3 outputs) chunks of 1000 took 3.5 ms and 2.3 MB against 3.9 ms and
4.1 MB for the whole batch (chunks of 500: 5.0 ms). A trade-off: the kron Laplace fit of the
same MLP (separate bias blocks) took 10.5 ms against 8.5 ms in one chunk."""


def _auto_chunk_size(
    model: nn.Module, layers: dict[str, nn.Module], point: dict[str, Tensor], inputs: Tensor
) -> int:
    """Samples per pass whose output gradients stay within :data:`KFAC_CHUNK_ENTRIES`.

    A forward pass on the first sample of ``inputs`` (N, ...) gives the C outputs and the
    entries of every covered layer's output per sample, E; the chunk is
    ``max(1, KFAC_CHUNK_ENTRIES // (C E))`` samples (C bounds the K columns of the type-2
    factorisation; the estimate ignores the layers' transient rows), at most
    :data:`KFAC_CHUNK_SAMPLES`.
    """
    outputs, captured = forward_with_layer_inputs(model, layers, point, inputs[:1], False)
    entries = sum(out.numel() for _, out in captured.values() if isinstance(out, Tensor))
    by_entries = KFAC_CHUNK_ENTRIES // max(1, outputs[0].numel() * entries)
    return max(1, min(KFAC_CHUNK_SAMPLES, by_entries))


def _split_bias(key: str, factors: KronFactors) -> dict[str, KronFactors]:
    """The weight block ``A[:-1, :-1] (x) G`` and the bias block ``A[-1:, -1:] (x) G`` of a
    folded block (A: (d_A, d_A), its last coordinate the bias's constant 1)."""
    A, G, params = factors.A, factors.G, factors.params
    return {
        key: KronFactors(A[:-1, :-1], G, params[:-1], False),
        f"{key}.bias" if key else "bias": KronFactors(A[-1:, -1:], G, params[-1:], False),
    }


# --------------------------------------------------------------------------------------------
# forward and backward of one batch
# --------------------------------------------------------------------------------------------


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
    return dict(_iter_layer_terms(layers, outputs, dict(captured), columns, create_graph, False))


def _iter_layer_terms(
    layers: dict[str, nn.Module],
    outputs: Tensor,
    captured: dict[str, tuple[Tensor, Tensor]],
    columns: Tensor,
    create_graph: bool,
    release_graph: bool,
) -> Iterator[tuple[str, list[KronTerms]]]:
    """:func:`layer_terms` one layer at a time, popping the layer's entry from ``captured`` and
    dropping its output gradients once its rule has run (so that a caller that reduces each
    layer's rows before asking for the next holds one layer's rows at a time);
    ``release_graph`` frees the outputs' graph with the last column."""
    names = list(captured)
    n_columns = columns.shape[2]
    per_column = [
        _backpropagate(
            outputs,
            [captured[n][1] for n in names],
            columns[:, :, k],
            release_graph and k == n_columns - 1,
            create_graph,
        )
        for k in range(n_columns)
    ]
    per_layer = [
        [col[i] if create_graph else col[i].detach() for col in per_column]
        for i in range(len(names))
    ]
    del per_column
    for i, name in enumerate(names):
        grads, per_layer[i] = per_layer[i], []
        layer_input = captured.pop(name)[0]
        rule = kfac_rule_for(layers[name])
        if rule is None:  # layers are selected by having a rule
            raise ValueError(f"layer {name!r} ({type(layers[name]).__name__}) has no KFAC rule")
        terms = rule(layers[name], layer_input, grads)
        del grads, layer_input
        yield name, terms


def _backpropagate(
    outputs: Tensor, layer_outputs: list[Tensor], column: Tensor, last: bool, create_graph: bool
) -> tuple[Tensor, ...]:
    """``J_l^T c`` for every layer output l: one backward pass of the column c (N, C) from the
    outputs (N, C).

    Without ``create_graph`` it is the gradient of the scalar ``<outputs, c>`` with c detached:
    the same numbers as ``grad_outputs=c`` (the product's backward passes c on unchanged), and
    no tensor ``grad_outputs``, whose shape check in ``torch.autograd.grad`` goes through
    ``torch.fx``'s symbolic shapes: its first use in a process imports sympy, about 32 MB of
    resident memory, more than the whole KFAC fit of the benchmark MLP (40 -> 8 MB measured).
    The graph is freed after the last column. With ``create_graph`` the column keeps its own
    graph (to the inputs, through the outputs), so it must be a ``grad_outputs``: the scalar
    form would differentiate it too.
    """
    if create_graph:
        return torch.autograd.grad(
            outputs, layer_outputs, column, retain_graph=True, create_graph=True
        )
    return torch.autograd.grad(
        (outputs * column.detach()).sum(), layer_outputs, retain_graph=not last
    )


# --------------------------------------------------------------------------------------------
# the cross-entropy output-Hessian root without its null direction
# --------------------------------------------------------------------------------------------


def _softmax(outputs: Tensor) -> Tensor:
    """softmax over the classes of (N, C) logits, taken over dim 0 of the transpose: torch's CPU
    kernel then vectorises across samples (measured 7x faster than ``dim=-1`` for C = 3)."""
    return torch.softmax(outputs.mT, dim=0).mT


def _softmax_root_rank_reduced(outputs: Tensor) -> Tensor:
    """(N, C, C - 1) columns with ``S'_n S'_n^T = diag(p_n) - p_n p_n^T``: the root ``S_n =
    diag(sqrt p_n) - p_n sqrt(p_n)^T`` of :func:`symdisc.curvature.output_hessian_sqrt`
    (summed cross-entropy) with its null direction dropped by :func:`drop_softmax_null`."""
    p = _softmax(outputs)
    root = softmax_root(outputs)
    S = torch.diag_embed(root) - p[:, :, None] * root[:, None, :]
    return drop_softmax_null(S, outputs, dim=2, root=root)


def drop_softmax_null(
    x: Tensor, outputs: Tensor, dim: int, *, root: Tensor | None = None
) -> Tensor:
    """Drop the direction of ``x`` that the cross-entropy output Hessian annihilates.

    The root ``S_n = diag(sqrt p_n) - p_n sqrt(p_n)^T`` of ``H_n = diag(p_n) - p_n p_n^T``
    (:func:`symdisc.curvature.output_hessian_sqrt`) has rank C - 1: ``S_n u_n = 0`` for
    the unit vector ``u_n = sqrt(p_n)``. With the Householder reflection
    ``Q_n = I - 2 v v^T / (v^T v)``, ``v = u_n + e_C`` (so ``Q_n u_n = -e_C``; ``v^T v >= 2``,
    stable), the last column of ``S_n Q_n`` is ``-S_n u_n = 0`` and ``(S_n Q_n)(S_n Q_n)^T =
    H_n``. So the C columns of ``S_n`` (``dim`` indexing them) or the C rows ``S_n^T J_n`` of a
    GGN factor can be replaced by C - 1 with the same outer-product sum.

    Args:
        x: (N, ..., C, ...) with the root's column index at ``dim`` (dim >= 1).
        outputs: (N, C) logits, p_n = softmax(outputs_n).
        root: ``sqrt(softmax(outputs))`` (N, C) (:func:`symdisc.curvature.losses.softmax_root`)
            when the caller has it already.

    Returns:
        ``x`` reflected along ``dim`` by ``Q_n``, with the last (zero) index dropped: C - 1 there.
    """
    n, c = outputs.shape
    u = softmax_root(outputs) if root is None else root  # (N, C), unit norm: sum_c p_c = 1
    v = u + torch.eye(c, dtype=u.dtype, device=u.device)[-1]  # u_n + e_C
    shape = [n] + [1] * (x.ndim - 1)
    shape[dim] = c
    v = v.reshape(shape)
    coef = 2.0 / (v * v).sum(dim, keepdim=True)
    reflected = x - coef * v * (v * x).sum(dim, keepdim=True)
    return reflected.narrow(dim, 0, c - 1)

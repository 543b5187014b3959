"""KFAC of an invariant model as a Kronecker product of expectations (paper 001, section 4.2,
eq. 19): a variant of the KFAC accumulation core of :mod:`symdisc.curvature`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from torch import Tensor, nn

from ella.invariance.models import DrawAverage
from symdisc.curvature import (
    KFACVariant,
    KronFactors,
    KronTerms,
    LayerBatch,
    Loss,
    output_hessian_sqrt,
)

__all__ = ["AugmentedKFAC", "augmented_kfac"]


class AugmentedKFAC(KFACVariant):
    """The KFAC variant of eq. (19) for a :class:`DrawAverage` on draws (B, S, ...).

    Backpropagates all C columns of the output-Hessian root of ``f_hat``
    (:func:`symdisc.curvature.output_hessian_sqrt`); through the mean over draws each draw s
    receives ``(1/S) g'_s``. Before the Gram matrices the rows of a are averaged over the draws
    (``abar = E_s[a'_s]``) and the rows of g summed over them (``gbar = sum_s (1/S) g'_s =
    E_s[g'_s]``), per output-Hessian column, sample and position: the rule's rows must be ordered
    (column, sample, draw, position), as those of ``nn.Linear`` and ``nn.Conv2d`` are.
    """

    def check_model(self, model: nn.Module) -> None:
        if not isinstance(model, DrawAverage):
            raise TypeError(
                f"`model` must be a DrawAverage (inputs (B, S, ...)), got {type(model).__name__}"
            )

    def output_columns(self, outputs: Tensor, loss: Loss) -> Tensor:
        return output_hessian_sqrt(outputs, loss, "sum")  # (B, C, K): Lambda(f_hat) = S S^T

    def factor_rows(self, term: KronTerms, batch: LayerBatch) -> tuple[Tensor, Tensor]:
        """``(abar, gbar)``: a (B S L, d_A) averaged to (B L, d_A) over the draws, g
        (K B S L, d_G) summed to (K B L, d_G)."""
        b, s = batch.inputs.shape[:2]
        k = batch.n_columns
        a, g = term.a, term.g
        if a.ndim != 2 or g.ndim != 2:
            raise ValueError(
                f"augmented KFAC needs 2-D (rows, d) a and g, but the KFAC rule of "
                f"{batch.describe()} gives a {tuple(a.shape)} and g {tuple(g.shape)}"
            )
        if a.shape[0] % (b * s) or g.shape[0] % (k * b * s):
            raise ValueError(
                f"the KFAC rule of {batch.describe()} gives {a.shape[0]} rows of a and "
                f"{g.shape[0]} of g, not multiples of the B*S = {b * s} augmented samples: "
                f"augmented KFAC needs rows ordered (column, sample, draw, position)"
            )
        abar = a.reshape(b, s, -1, a.shape[-1]).mean(1).reshape(-1, a.shape[-1])
        gbar = g.reshape(k, b, s, -1, g.shape[-1]).sum(2).reshape(-1, g.shape[-1])
        return abar, gbar


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
    it equals the GGN with averaged Jacobians (eq. 17) exactly. It is the accumulation core
    :func:`symdisc.curvature.accumulate_kfac` with the variant :class:`AugmentedKFAC`
    (which :func:`ella.invariance.invariant_laplace` passes to :class:`ella.laplace.Laplace` as
    ``kron_factors``).

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
    return AugmentedKFAC()(
        model,
        data,
        loss=loss,
        reduction=reduction,
        params=params,
        create_graph=create_graph,
        bias=bias,
    )

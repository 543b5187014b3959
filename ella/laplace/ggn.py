"""What the two exact-GGN structures (full and diag) share: the GGN from per-sample Jacobians
(paper 000, eq. 9; paper 001, eq. 7 and, for a draw average, eq. 17).

Per batch the rows ``M = [S_n^T J_n]_n`` of a factor of the GGN (``M^T M = sum_n J_n^T H_n J_n``,
:func:`symdisc.curvature.ggn_rows`) are formed and reduced by the structure: the dense ``M^T M``
(``"full"``) or its diagonal (``"diag"``). For classification the softmax Hessian has rank
C - 1, so its null direction is dropped first (:func:`symdisc.curvature.drop_softmax_null`):
N (C - 1) rows give the same GGN.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ella.laplace.base import Batch, Laplace
from symdisc.curvature import ModelFn, Params, drop_softmax_null, functional, ggn_rows

__all__: list[str] = []


class _ExactGGNLaplace(Laplace):
    """Base of :class:`~ella.laplace.FullLaplace` and :class:`~ella.laplace.DiagLaplace`: the
    curvature is a reduction of the GGN rows (:meth:`_reduce_rows`) summed over batches."""

    def _fit_curvature(
        self, batches: Iterator[Batch], model_fn: ModelFn, params: Params, *, keep_graph: bool
    ) -> Tensor:
        # one batch at a time: its rows (R, P) are reduced before the next batch is read (the
        # graph to the inputs, when they require a gradient, follows from autograd alone)
        log_lik = torch.zeros((), dtype=self.dtype, device=self.device)
        dense: Tensor | None = None
        for inputs, targets in batches:
            outputs, part_lik = self._batch_log_lik(model_fn, params, inputs, targets)
            log_lik = log_lik + part_lik
            rows = math.sqrt(self.output_hessian_scale) * ggn_rows(
                model_fn, params, inputs, loss=self.loss, reduction="sum", outputs=outputs
            )
            if self.likelihood == "classification" and outputs.shape[-1] > 1:
                # the softmax Hessian has rank C - 1: N (C - 1) rows give the same GGN
                n, c = outputs.shape
                rows = drop_softmax_null(rows.reshape(n, c, -1), outputs, dim=1)
                rows = rows.reshape(n * (c - 1), -1)
            part = self._reduce_rows(rows)
            dense = part if dense is None else dense + part
        assert dense is not None  # fit checks that there is a batch
        self.curvature = dense
        return log_lik

    @abstractmethod
    def _reduce_rows(self, rows: Tensor) -> Tensor:
        """The structure's curvature of one batch from its GGN rows (R, P)."""

    @abstractmethod
    def _pair_rows(self, rows: Tensor, weights: Tensor) -> Tensor:
        """0-d ``<W, rows^T rows>`` in the structure (without the output-Hessian scale)."""

    def _group_index(self, group: str) -> Tensor:
        """(P_g,) positions of the group's parameters in the flattened parameters."""
        offsets, start = {}, 0
        for name in self.names:
            offsets[name] = (start, start + self.numels[name])
            start += self.numels[name]
        names = self.groups[group]
        return torch.cat([torch.arange(*offsets[nm], device=self.device) for nm in names])

    def _curvature_state(self) -> Any:
        return self.curvature.detach().clone()

    def _load_curvature(self, state: Any) -> None:
        self.curvature = state.to(dtype=self.dtype, device=self.device)

    def curvature_pairing(
        self, weights: Any, inputs: Tensor, *, n_total: int
    ) -> tuple[Tensor, Tensor]:
        """``scale * <W, M^T M>`` with the batch's GGN rows M (C columns of the output-Hessian
        root per example; ``n_total`` is not needed: the GGN is a plain sum)."""
        self._require_fit()
        fn, params = functional(self.model, self.names)
        outputs = fn(params, inputs)
        rows = ggn_rows(fn, params, inputs, loss=self.loss, reduction="sum", outputs=outputs)
        return outputs, self.output_hessian_scale * self._pair_rows(rows, weights)

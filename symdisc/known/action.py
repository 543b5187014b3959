"""A known continuous symmetry as an Action, so it goes wherever learned actions go.

Paper 002, section 3: the induced actions of Proposition 3.1 (:mod:`symdisc.compose`) lift the
known symmetries of a two-layer net (:mod:`symdisc.known.continuous`) into larger networks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.known.continuous import group_action
from symdisc.losses import TwoLayerLoss

__all__ = ["KnownAction"]


class KnownAction(Action):
    """A known continuous symmetry as an :class:`~symdisc.actions.Action` of GL(h) matrices.

    ``forward(g (h, h), theta (P,), X (n, k)) -> theta' (P,)`` applies
    :func:`~symdisc.known.group_action`; for "rescaling" the group is the positive diagonal
    matrices and the diagonal of g is used, so that ``D_g a|_I(A)`` is the rescaling tangent of
    ``diag(A)``. Lets known symmetries go wherever learned actions go (:mod:`symdisc.compose`,
    :mod:`symdisc.metrics`). "softmax_shift" is not a matrix group and is not offered.

    Raises:
        TypeError: if ``loss`` is not a TwoLayerLoss.
        ValueError: if the symmetry does not apply to ``loss``, or is "softmax_shift".
    """

    data_dependent = True

    def __init__(self, loss: TwoLayerLoss, symmetry: str, *, alpha: float | None = None) -> None:
        super().__init__()
        if symmetry == "softmax_shift":
            raise ValueError("`symmetry` 'softmax_shift' is additive, not a matrix group")
        self._act = group_action(loss, symmetry, alpha=alpha)
        self.symmetry = symmetry
        self.d = loss.h

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        element = torch.diagonal(g) if self.symmetry == "rescaling" else g
        return self._act(theta, X, element)

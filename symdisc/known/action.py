"""A known continuous symmetry as an Action, so it goes wherever learned actions go.

Paper 002, section 3: the induced actions of Proposition 3.1 (:mod:`symdisc.compose`) lift the
known symmetries of a two-layer net (:mod:`symdisc.known.continuous`) into larger networks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.known.continuous import group_action
from symdisc.known.deep import deep_net
from symdisc.losses import MLPLoss, ModuleLoss, TwoLayerLoss
from symdisc.runtime.checks import check_instance
from symdisc.validation import check_invertible

__all__ = ["KnownAction"]


class KnownAction(Action):
    """A known continuous symmetry as an :class:`~symdisc.actions.Action` of GL(h) matrices.

    ``forward(g (h, h), theta (P,), X (n, k)) -> theta' (P,)`` applies
    :func:`~symdisc.known.group_action`; for "rescaling" the group is the positive diagonal
    matrices and the diagonal of g is used, so that ``D_g a|_I(A)`` is the rescaling tangent of
    ``diag(A)``. Lets known symmetries go wherever learned actions go (:mod:`symdisc.compose`,
    :mod:`symdisc.metrics`). "softmax_shift" is not a matrix group and is not offered.

    A deep net (an MLPLoss, or a ModuleLoss as in :func:`~symdisc.known.tangent_basis`) with
    hidden widths h_1 .. h_{L-1} acts through g (d, d), d = sum_l h_l: its diagonal for
    "rescaling", its diagonal blocks g_l (h_l, h_l) for "gl" (the product of the GL(h_l) as the
    block-diagonal matrices of GL(d); the rest of g is not used).

    Raises:
        TypeError: if ``loss`` is not a TwoLayerLoss, an MLPLoss or a ModuleLoss.
        ValueError: if the symmetry does not apply to ``loss``, or is "softmax_shift".
    """

    data_dependent = True

    def __init__(
        self,
        loss: TwoLayerLoss | MLPLoss | ModuleLoss,
        symmetry: str,
        *,
        alpha: float | None = None,
    ) -> None:
        super().__init__()
        check_instance(loss, "loss", (TwoLayerLoss, MLPLoss, ModuleLoss))
        if symmetry == "softmax_shift":
            raise ValueError("`symmetry` 'softmax_shift' is additive, not a matrix group")
        self._act = group_action(loss, symmetry, alpha=alpha)
        self.symmetry = symmetry
        self._hidden: tuple[int, ...] | None = None
        if isinstance(loss, TwoLayerLoss):
            self.d = loss.h
        else:
            self._hidden = deep_net(loss).hidden
            self.d = sum(self._hidden)

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        check_instance(g, "g", Tensor)
        want = theta.dtype if isinstance(theta, Tensor) and theta.is_floating_point() else None
        if not g.is_floating_point() or (want is not None and g.dtype != want):
            raise TypeError(
                f"`g` must be a floating tensor of theta's dtype {want}, got {g.dtype} "
                f"(convert it with `g.to(theta.dtype)`)"
            )
        if tuple(g.shape) != (self.d, self.d):
            raise ValueError(f"`g` must be ({self.d}, {self.d}), got {tuple(g.shape)}")
        check_invertible(g, "g")  # outside vmap only: it reads values
        if self.symmetry == "rescaling":
            element = torch.diagonal(g)
        elif self._hidden is not None:  # a deep net's GL: the diagonal blocks, row-major
            blocks, start = [], 0
            for h in self._hidden:
                blocks.append(g[start : start + h, start : start + h].reshape(-1))
                start += h
            element = torch.cat(blocks)
        else:
            element = g
        return self._act(theta, X, element)

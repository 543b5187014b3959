"""Relaxed-equivariance layers for 2-D translations (paper 000, section 3, eqs. 1-7).

Every layer maps feature maps (B, C, H, W) -> (B, C', H', W') with square maps H = W = ``in_size``
and H' = W' = ``out_size`` in {``in_size``, ``in_size // 2``}, and tags each of its parameters with
its path ("fc": not equivariant, "conv": strictly translation-equivariant):

=========  =========  ======================================================================
layer      equation   parameters (tag)
=========  =========  ======================================================================
``FC``     (1)        weight (C'H'W', CHW), bias (C'H'W',)  ("fc")
``CONV``   (3)        weight (C', C, S, S), bias (C',)  ("conv"); circular padding, then
                      polyphase pooling when the layer halves the resolution (App. F.2)
``FFC``    (5)        theta1 (C', C, H', W'), theta2 (C', C, H, W), bias (C',)  ("fc")
``SFC``    (7)        anchor values u1 (C', C, M1) on the output domain, u2 (C', C, M2) on the
                      input domain, lengthscales omega1 (M1,), omega2 (M2,), bias (C',)
                      ("fc"); positions z1 (M1, 2), z2 (M2, 2) are buffers unless learnable
``SCONV``  (6)        anchor values u (C', C, M), lengthscales omega (M,), bias (C',)  ("conv");
                      positions z (M, 2) a buffer unless learnable
=========  =========  ======================================================================

Sparse layers induce their weights from M anchors with the basis of eq. (6),
``phi_j(p) = exp(-omega_j^2 |p - z_j|^2)``: ``theta(c', c, p) = sum_j u(c', c, j) phi_j(p)``.
``omega`` is stored as the real number of eq. (6) (the paper's prior N(omega | 0, sigma^2) of
section 3.2 is centred at 0); only ``omega^2`` enters, so the basis precision is non-negative
without a softplus, and ``omega = 0`` is the flat basis. The induced weights are recomputed in
every forward pass from (u, z, omega); nothing is cached.

Where the prior sits in a sparse layer (section 3.2; ``prior_on``, recorded as
``prior_target``; :meth:`SFC.prior_parameters` names the parameters that carry the Laplace prior
and form the posterior, every other trainable parameter stays at its MAP, see
:func:`ella.laplace.posterior_parameters`):

==================  ============================================================================
``prior_on``        prior N(0, sigma^2 I) and Laplace posterior over (table 2 row)
==================  ============================================================================
``"anchors"``       the anchor values u (u1, u2) and the bias (rows "u", the default); omega and
                    learnable z are point estimates
``"lengthscales"``  the lengthscales omega (omega1, omega2) and, when ``learn_positions``, the
                    positions z (z1, z2) (rows "omega"); u and the bias are point estimates
``"weights"``       the induced weights theta (S-FC: the factors theta1, theta2; S-CONV: the
                    filter) and the bias; omega and learnable z are point estimates. u is then
                    stored in an orthonormal basis of the span of eq. (6)'s basis
                    (:func:`orthonormal_basis`): ``theta = Psi^T u`` with ``Psi Psi^T = I``, so
                    ``||theta||^2 = ||u||^2`` and the prior on theta *is* the isotropic prior on
                    u, exactly (the same functions as with phi; only u's coordinates differ)
==================  ============================================================================

Reading of the paper (section 3.2, appendix C.2). It places the prior on *one* tensor per
layer and path -- N(u | 0, sigma^2 I) or N(omega | 0, sigma^2 I) -- and says nothing of the others;
the Gaussian integral of eq. (9) needs a proper prior on every parameter it integrates over, so
the others are point estimates: trained at the MAP of the likelihood alone (no prior term, so
no weight decay), held fixed in the Laplace approximation. With the prior on omega the paper
counts the anchor positions among the learnable parameters of the basis (section 3.1, "C'CP +
2P"); they share omega's group and its N(0, sigma^2) (for S-CONV, centred filter coordinates:
sigma -> 0 pulls the anchors to the filter's centre; omega -> 0 alone already gives a constant
basis, i.e. strict equivariance, eq. 8). The prior on theta for a layer whose weights are a
function theta(u, omega, z) is taken as the prior on theta restricted to the span that u moves
it in (a linear map for fixed omega, z), which the orthonormal coordinates make exact: the
Jacobian of the output in u is then the CONV / F-FC Jacobian projected on Psi (appendix C.2
with Psi for phi), and no Jacobian through omega or z is needed.

``PathSum`` adds paths with equal shapes (FC+CONV, F-FC+CONV, S-FC+S-CONV, eq. 4).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ella.layers._base import (
    Path,
    RelaxedLayer,
    check_kernel_size,
    check_out_size,
    check_shape,
    circular_conv,
)
from ella.layers.pooling import Subsampling, subsample
from symdisc.runtime import check_choice, check_instance, check_int

PriorTarget = Literal["weights", "anchors", "lengthscales"]

__all__ = [
    "PriorTarget",
    "FC",
    "CONV",
    "FFC",
    "SFC",
    "SCONV",
    "PathSum",
    "rbf_basis",
    "rbf_basis_derivatives",
    "orthonormal_basis",
]


# --------------------------------------------------------------------------------------------
# shared shapes and helpers
# --------------------------------------------------------------------------------------------


class _Shaped(RelaxedLayer):
    """Stores and checks the shapes (C, in_size) -> (C', out_size) common to every layer."""

    prior_target: PriorTarget = "weights"

    def __init__(self, in_channels: int, out_channels: int, in_size: int, out_size: int) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.in_size = check_int(in_size, "in_size", minimum=1)
        self.out_size = check_int(out_size, "out_size", minimum=1)
        check_out_size(in_size, out_size)

    @property
    def halves(self) -> bool:
        """Whether the layer halves the resolution."""
        return self.out_size != self.in_size

    def _check_input(self, x: Tensor) -> None:
        check_shape(
            x, (self.in_channels, self.in_size, self.in_size), type(self).__name__, module=self
        )

    def _add_anchors(
        self, suffix: str, size: int, m: int, centred: bool, learn: bool, path: Path
    ) -> None:
        """Register the basis of eq. (6) on a size x size domain: the buffer ``points<suffix>``
        (size^2, 2) (:func:`_domain_points`), the anchor positions ``z<suffix>`` (M, 2) on a
        regular grid (:func:`_anchor_grid`; a parameter when ``learn``, else a buffer) and the
        lengthscales ``omega<suffix>`` (M,) = 1 / grid spacing; parameters tagged ``path``."""
        anchors, spacing = _anchor_grid(size, m, centred=centred)
        self.register_buffer(f"points{suffix}", torch.tensor(_domain_points(size, centred)))
        z = torch.tensor(anchors)
        if learn:
            self.register_parameter(f"z{suffix}", nn.Parameter(z))
            self.tag(f"z{suffix}", path)
        else:
            self.register_buffer(f"z{suffix}", z)
        self.register_parameter(f"omega{suffix}", nn.Parameter(torch.full((m,), 1.0 / spacing)))
        self.tag(f"omega{suffix}", path)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}x{self.in_size}x{self.in_size} -> "
            f"{self.out_channels}x{self.out_size}x{self.out_size}"
        )


def _factored(x: Tensor, theta1: Tensor, theta2: Tensor) -> Tensor:
    """Eq. (5): y(b, c', x', y') = sum_c theta1(c', c, x', y') sum_{x,y} theta2(c', c, x, y)
    x(b, c, x, y).

    Shapes: x (B, C, H, W), theta1 (C', C, H', W'), theta2 (C', C, H, W) -> (B, C', H', W').
    Cost O(B C C' (HW + H'W')): contract (x, y) first to (B, C', C), then expand over (x', y').
    """
    z = torch.einsum("bchw,ochw->boc", x, theta2)
    return torch.einsum("boc,ocpq->bopq", z, theta1)


def _domain_points(size: int, centred: bool) -> list[tuple[float, float]]:
    """Row-major coordinates of a size x size grid: pixel indices 0..size-1, or offsets
    -(size-1)/2..(size-1)/2 (a filter's relative coordinates) when ``centred``."""
    shift = (size - 1) / 2 if centred else 0.0
    return [(r - shift, c - shift) for r in range(size) for c in range(size)]


def _anchor_grid(size: int, m: int, centred: bool) -> tuple[list[tuple[float, float]], float]:
    """M anchor positions spread regularly over a size x size domain, and their spacing.

    A g x g grid with g = ceil(sqrt(M)) spans the domain's bounding box; M of its g^2 points are
    kept at evenly spaced row-major indices round(linspace(0, g^2 - 1, M)). With M = size^2 the
    anchors are exactly the domain's points; with M = 5 on a 3 x 3 filter they are the centre
    and the four corners.
    """
    g = math.ceil(math.sqrt(m))
    lo = -(size - 1) / 2 if centred else 0.0
    hi = lo + size - 1
    axis = [lo + (hi - lo) * i / (g - 1) for i in range(g)] if g > 1 else [(lo + hi) / 2]
    grid = [(r, c) for r in axis for c in axis]
    if m == 1:
        keep = [len(grid) // 2]
    else:
        keep = [round(i * (len(grid) - 1) / (m - 1)) for i in range(m)]
    spacing = (hi - lo) / (g - 1) if g > 1 else 1.0
    return [grid[k] for k in keep], max(spacing, 1e-12)


def rbf_basis(points: Tensor, anchors: Tensor, omega: Tensor) -> Tensor:
    """Basis of eq. (6): phi(j, k) = exp(-omega_j^2 |points_k - anchors_j|^2).

    Shapes: points (K, 2), anchors (M, 2), omega (M,) -> (M, K).

    Raises:
        TypeError, ValueError: for arguments that are not tensors of these shapes.
    """
    for value, name in ((points, "points"), (anchors, "anchors"), (omega, "omega")):
        check_instance(value, name, Tensor)
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"`points` must have shape (K, 2), got {tuple(points.shape)}")
    if anchors.dim() != 2 or anchors.shape[1] != 2:
        raise ValueError(f"`anchors` must have shape (M, 2), got {tuple(anchors.shape)}")
    if omega.shape != anchors.shape[:1]:
        raise ValueError(f"`omega` must have shape ({anchors.shape[0]},), got {tuple(omega.shape)}")
    d2 = (anchors[:, None, :] - points[None, :, :]).pow(2).sum(-1)
    return torch.exp(-omega.pow(2)[:, None] * d2)


def rbf_basis_derivatives(points: Tensor, anchors: Tensor, omega: Tensor) -> tuple[Tensor, Tensor]:
    """Derivatives of :func:`rbf_basis` in its own lengthscale and position (anchor j only
    enters row j of phi): with ``d(j, k) = points_k - anchors_j``,

        d phi(j, k) / d omega_j = -2 omega_j |d(j, k)|^2 phi(j, k),
        d phi(j, k) / d anchors(j, e) = 2 omega_j^2 d(j, k)_e phi(j, k).

    Shapes: points (K, 2), anchors (M, 2), omega (M,) -> (M, K) and (M, 2, K).
    """
    diff = points[None, :, :] - anchors[:, None, :]  # (M, K, 2)
    d2 = diff.pow(2).sum(-1)
    phi = torch.exp(-omega.pow(2)[:, None] * d2)
    d_omega = -2.0 * omega[:, None] * d2 * phi
    d_anchors = 2.0 * omega.pow(2)[:, None, None] * diff.transpose(1, 2) * phi[:, None, :]
    return d_omega, d_anchors


def orthonormal_basis(phi: Tensor) -> Tensor:
    """Orthonormal rows spanning the rows of ``phi`` (M, K), M <= K: ``Psi = L^{-1} phi`` with
    the Cholesky factor ``L L^T = phi phi^T`` (M, M), so ``Psi Psi^T = I`` and ``phi^T u =
    Psi^T (L^T u)``: the same span, isometric coordinates. Differentiable in phi.

    Raises:
        torch.linalg.LinAlgError: when ``phi phi^T`` is singular in the dtype (e.g. all
            lengthscales 0: every row the same constant).
    """
    chol = torch.linalg.cholesky(phi @ phi.T)
    return torch.linalg.solve_triangular(chol, phi, upper=False)


def _check_anchors(value: object, name: str, n: int) -> int:
    m = check_int(value, name, minimum=1)
    if m > n:
        raise ValueError(f"`{name}` must be at most the domain size {n}, got {m}")
    return m


class _Convolution(_Shaped):
    """Shared by CONV and SCONV: an odd S x S filter (:meth:`filter`) applied with circular
    padding (eq. 3), then, when the layer halves the resolution,
    :func:`~ella.layers.pooling.subsample` with ``subsampling``: ``"polyphase"`` (default;
    :func:`~ella.layers.pooling.polyphase_pool`, strictly equivariant to every circular shift)
    or ``"stride"`` (component (0, 0), equivariant to shifts by even amounts)."""

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, kernel_size: int,
        subsampling: Subsampling = "polyphase",
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, in_size, out_size)
        self.kernel_size = check_kernel_size(kernel_size)
        self.subsampling: Subsampling = check_choice(subsampling, "subsampling", Subsampling)

    def filter(self) -> Tensor:
        """The filter (C', C, S, S)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        y = circular_conv(x, self.filter(), self.bias)
        return subsample(y, self.subsampling) if self.halves else y  # type: ignore[return-value]


class _Sparse:
    """What S-FC and S-CONV share: the basis of their anchor values and where the prior sits
    (module docstring). ``_domains`` are the suffixes of the anchor sets ("" or "1", "2")."""

    prior_target: PriorTarget
    _domains: tuple[str, ...]

    def basis(self, domain: str = "") -> Tensor:
        """The basis (M, K) that maps the anchor values u<domain> to the induced weights,
        ``theta = u @ basis``: eq. (6)'s ``phi = rbf_basis(points, z, omega)``, or its
        :func:`orthonormal_basis` ``Psi`` when the prior is on the weights."""
        phi = rbf_basis(
            getattr(self, f"points{domain}"),
            getattr(self, f"z{domain}"),
            getattr(self, f"omega{domain}"),
        )
        return orthonormal_basis(phi) if self.prior_target == "weights" else phi

    def prior_parameters(self) -> tuple[str, ...]:
        """Names (inside this layer) of the parameters that carry the Laplace prior of section
        3.2 and are integrated over by the Laplace approximation, in registration order:
        ``"lengthscales"``: omega<d> and the learnable z<d>; otherwise the anchor values u<d>
        and the bias (for ``"weights"`` u holds the coordinates of theta, see
        :meth:`basis`). The layer's other parameters are point estimates (their MAP)."""
        if self.prior_target == "lengthscales":
            keep = {f"{p}{d}" for d in self._domains for p in ("omega", "z")}
        else:
            keep = {f"u{d}" for d in self._domains} | {"bias"}
        own = self.named_parameters(recurse=False)  # type: ignore[attr-defined]
        return tuple(n for n, _ in own if n in keep)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


class FC(_Shaped):
    """Fully connected layer, eq. (1): weight (C'H'W', CHW), bias (C'H'W',), tagged "fc".

    Maps directly to the output resolution (no pooling).
    """

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, *, bias: bool = True
    ) -> None:
        super().__init__(in_channels, out_channels, in_size, out_size)
        n_in = in_channels * in_size * in_size
        n_out = out_channels * out_size * out_size
        self.init_parameter("weight", (n_out, n_in), n_in, "fc")
        self.init_bias(bias, (n_out,), n_in, "fc")

    def dense_weight(self) -> Tensor:
        """The weight (C'H'W', CHW) (for a uniform interface with :class:`FFC` and :class:`SFC`)."""
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        y = F.linear(x.flatten(1), self.weight, self.bias)
        return y.view(x.shape[0], self.out_channels, self.out_size, self.out_size)


class CONV(_Convolution):
    """Convolution with circular padding, eq. (3): weight (C', C, S, S), bias (C',), tagged
    "conv"; followed by :func:`~ella.layers.pooling.polyphase_pool` when it halves the
    resolution, so it stays strictly equivariant to circular translations (or, with
    ``subsampling="stride"``, by component (0, 0): equivariant to even shifts only).
    """

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, *,
        kernel_size: int = 3, bias: bool = True, subsampling: Subsampling = "polyphase",
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, in_size, out_size, kernel_size, subsampling)
        k = self.kernel_size
        fan_in = in_channels * k * k
        self.init_parameter("weight", (out_channels, in_channels, k, k), fan_in, "conv")
        self.init_bias(bias, (out_channels,), fan_in, "conv")

    def filter(self) -> Tensor:
        """The filter ``weight`` (C', C, S, S)."""
        return self.weight


class FFC(_Shaped):
    """Factored fully connected layer (F-FC), eq. (5): theta1 (C', C, H', W'), theta2
    (C', C, H, W) and bias (C',), all tagged "fc".

    ``y(c', x', y') = sum_c theta1(c', c, x', y') sum_{x,y} theta2(c', c, x, y) x(c, x, y)``,
    computed in O(B C C' (HW + H'W')) without forming the dense weight (see :meth:`dense_weight`).
    Initialisation: theta2 ~ U(+-1/sqrt(HW)), theta1 ~ U(+-1/sqrt(C)), bias ~ U(+-1/sqrt(CHW)).

    The bias is one per output channel, (C',), like a convolution's and unlike :class:`FC`'s
    (C'H'W',): with it the counts of table 2 and table 7 of the paper are reproduced by one rule,
    every parameter counted (see :mod:`ella.models`); a (C'H'W',) bias would make the F-FC row
    1.6 M and the S-FC row 0.9 M instead of 1.5 M and 0.8 M.
    """

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, *, bias: bool = True
    ) -> None:
        super().__init__(in_channels, out_channels, in_size, out_size)
        c_out, c_in, s_in, s_out = out_channels, in_channels, in_size, out_size
        self.init_parameter("theta1", (c_out, c_in, s_out, s_out), c_in, "fc")
        self.init_parameter("theta2", (c_out, c_in, s_in, s_in), s_in * s_in, "fc")
        self.init_bias(bias, (c_out,), c_in * s_in * s_in, "fc")

    def factors(self) -> tuple[Tensor, Tensor]:
        """``(theta1, theta2)`` of eq. (5), shapes (C', C, H', W') and (C', C, H, W)."""
        return self.theta1, self.theta2

    def dense_weight(self) -> Tensor:
        """The equivalent FC weight of eq. (1), shape (C'H'W', CHW):
        ``w(c', x', y', c, x, y) = theta1(c', c, x', y') theta2(c', c, x, y)``. For tests and
        inspection only (it has C'H'W'CHW entries)."""
        theta1, theta2 = self.factors()
        w = torch.einsum("ocpq,ochw->opqchw", theta1, theta2)
        return w.reshape(self.out_channels * self.out_size**2, self.in_channels * self.in_size**2)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        theta1, theta2 = self.factors()
        y = _factored(x, theta1, theta2)
        if self.bias is not None:
            y = y + self.bias.view(self.out_channels, 1, 1)
        return y


class SFC(_Sparse, FFC):
    """Sparsified factored fully connected layer (S-FC), eq. (7).

    theta1 (C', C, H', W') is induced by M1 anchors on the output domain (x', y') and theta2
    (C', C, H, W) by M2 anchors on the input domain (x, y), both with the basis of eq. (6):
    ``theta1(c', c, p) = sum_j u1(c', c, j) exp(-omega1_j^2 |p - z1_j|^2)`` (pixel coordinates).
    By default M1 = ceil(H'W' / 2) and M2 = ceil(HW / 2): half of the F-FC count H'W' + HW per
    channel pair, rounded up on each domain (App. F.4).

    Parameters (all tagged "fc"): ``u1`` (C', C, M1), ``u2`` (C', C, M2), ``omega1`` (M1,),
    ``omega2`` (M2,), ``bias`` (C',) (as in :class:`FFC`), and ``z1`` (M1, 2), ``z2`` (M2, 2) when
    ``learn_positions``; otherwise the positions are buffers on a regular grid.

    Args:
        n_anchors: ``(M1, M2)``; default the App. F.4 counts above.
        learn_positions: make the anchor positions parameters.
        prior_on: where the Laplace prior of section 3.2 sits and what the Laplace posterior
            is over (recorded as ``prior_target``; :meth:`prior_parameters`; module docstring):
            "anchors" (u1, u2, bias; default), "lengthscales" (omega1, omega2 and learnable z1,
            z2) or "weights" (the induced theta1, theta2 and the bias; u1, u2 then hold
            theta's coordinates in :func:`orthonormal_basis` of each basis).
    """

    _domains = ("1", "2")

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, *,
        bias: bool = True, n_anchors: tuple[int, int] | None = None,
        learn_positions: bool = False, prior_on: PriorTarget = "anchors",
    ) -> None:  # fmt: skip
        _Shaped.__init__(self, in_channels, out_channels, in_size, out_size)
        self.prior_target = check_choice(prior_on, "prior_on", PriorTarget)
        n1, n2 = out_size * out_size, in_size * in_size
        if n_anchors is None:
            n_anchors = (math.ceil(n1 / 2), math.ceil(n2 / 2))
        if not isinstance(n_anchors, tuple) or len(n_anchors) != 2:
            raise TypeError(f"`n_anchors` must be a tuple (M1, M2), got {n_anchors!r}")
        m1 = _check_anchors(n_anchors[0], "n_anchors[0]", n1)
        m2 = _check_anchors(n_anchors[1], "n_anchors[1]", n2)
        self.n_anchors = (m1, m2)
        self._add_anchors("1", out_size, m1, False, learn_positions, "fc")
        self._add_anchors("2", in_size, m2, False, learn_positions, "fc")
        # anchors carry the scale of the F-FC factors they induce
        c_out, c_in = out_channels, in_channels
        self.init_parameter("u1", (c_out, c_in, m1), c_in, "fc")
        self.init_parameter("u2", (c_out, c_in, m2), m2, "fc")
        self.init_bias(bias, (c_out,), c_in * in_size * in_size, "fc")

    def factors(self) -> tuple[Tensor, Tensor]:
        """Induced ``(theta1, theta2)`` of eq. (7), shapes (C', C, H', W') and (C', C, H, W)."""
        phi1, phi2 = self.basis("1"), self.basis("2")  # (M1, H'W'), (M2, HW)
        c_out, c_in = self.out_channels, self.in_channels
        theta1 = (self.u1 @ phi1).view(c_out, c_in, self.out_size, self.out_size)
        theta2 = (self.u2 @ phi2).view(c_out, c_in, self.in_size, self.in_size)
        return theta1, theta2


class SCONV(_Sparse, _Convolution):
    """Sparsified convolution (S-CONV), eq. (6): the S x S filter is induced by M anchors,
    ``theta(c', c, p) = sum_j u(c', c, j) exp(-omega_j^2 |p - z_j|^2)`` over relative
    coordinates p in [-(S-1)/2, (S-1)/2]^2, then applied like :class:`CONV` (circular padding,
    polyphase pooling when halving). Default M = ceil(S^2 / 2) (5 for 3 x 3, App. F.4).

    Parameters (all tagged "conv"): ``u`` (C', C, M), ``omega`` (M,), ``bias`` (C',), and ``z``
    (M, 2) when ``learn_positions``; otherwise ``z`` is a buffer on a regular grid (centre and
    corners for M = 5 on 3 x 3; the filter grid itself for M = S^2).

    Args:
        n_anchors: M; default ceil(S^2 / 2).
        learn_positions: make the anchor positions parameters.
        prior_on: as in :class:`SFC`: "anchors" (u, bias; default), "lengthscales" (omega and
            learnable z) or "weights" (the induced filter and the bias; u then holds the
            filter's coordinates in :func:`orthonormal_basis` of the basis).
        subsampling: as in :class:`CONV`.
    """

    _domains = ("",)

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, *,
        kernel_size: int = 3, bias: bool = True, n_anchors: int | None = None,
        learn_positions: bool = False, prior_on: PriorTarget = "anchors",
        subsampling: Subsampling = "polyphase",
    ) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, in_size, out_size, kernel_size, subsampling)
        self.prior_target = check_choice(prior_on, "prior_on", PriorTarget)
        k = self.kernel_size
        n = k * k
        m = _check_anchors(math.ceil(n / 2) if n_anchors is None else n_anchors, "n_anchors", n)
        self.n_anchors = m
        self._add_anchors("", k, m, True, learn_positions, "conv")
        self.init_parameter("u", (out_channels, in_channels, m), in_channels * m, "conv")
        self.init_bias(bias, (out_channels,), in_channels * k * k, "conv")

    def filter(self) -> Tensor:
        """The induced filter (C', C, S, S), recomputed from (u, z, omega) on every call."""
        phi = self.basis()  # (M, S*S)
        s = self.kernel_size
        return (self.u @ phi).view(self.out_channels, self.in_channels, s, s)


class PathSum(RelaxedLayer):
    """Sum of paths with identical shapes (eq. 4): FC+CONV, F-FC+CONV, S-FC+S-CONV, ...

    The paths are the children ``layers.0``, ``layers.1``, ... (an ``nn.ModuleList``); each keeps
    its own tags, which :func:`~ella.layers.parameter_paths` finds. Any module with attributes
    ``in_channels``, ``out_channels``, ``in_size`` and ``out_size`` can be a path.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        if not layers:
            raise ValueError("`layers` must hold at least one layer, got none")
        attrs = ("in_channels", "out_channels", "in_size", "out_size")
        shapes = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.Module) or not all(hasattr(layer, a) for a in attrs):
                raise TypeError(
                    f"`layers[{i}]` must be a module with attributes {attrs} (a relaxed layer), "
                    f"got {type(layer).__name__}"
                )
            shapes.append(tuple(getattr(layer, a) for a in attrs))
        if len(set(shapes)) != 1:
            raise ValueError(
                "`layers` must all map the same shapes (in_channels, out_channels, in_size, "
                f"out_size), got {shapes}"
            )
        self.in_channels, self.out_channels, self.in_size, self.out_size = shapes[0]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers[0](x)
        for layer in self.layers[1:]:
            out = out + layer(x)
        return out

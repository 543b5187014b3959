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

``PathSum`` adds paths with equal shapes (FC+CONV, F-FC+CONV, S-FC+S-CONV, eq. 4).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ella.layers._base import RelaxedLayer
from ella.layers.pooling import polyphase_pool

PriorTarget = Literal["weights", "anchors", "lengthscales"]

__all__ = ["PriorTarget", "FC", "CONV", "FFC", "SFC", "SCONV", "PathSum", "rbf_basis"]


# --------------------------------------------------------------------------------------------
# shared checks and helpers
# --------------------------------------------------------------------------------------------


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value}")
    return value


class _Shaped(RelaxedLayer):
    """Stores and checks the shapes (C, in_size) -> (C', out_size) common to every layer."""

    prior_target: PriorTarget = "weights"

    def __init__(
        self, in_channels: int, out_channels: int, in_size: int, out_size: int, kernel_size: int
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.in_size = _positive_int(in_size, "in_size")
        self.out_size = _positive_int(out_size, "out_size")
        self.kernel_size = _positive_int(kernel_size, "kernel_size")
        if out_size not in (in_size, in_size // 2) or (out_size != in_size and in_size % 2):
            raise ValueError(
                f"`out_size` must be in_size={in_size} or in_size // 2 with an even in_size, "
                f"got out_size={out_size}"
            )

    @property
    def halves(self) -> bool:
        """Whether the layer halves the resolution."""
        return self.out_size != self.in_size

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}")
        expected = (self.in_channels, self.in_size, self.in_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, C, H, W) = (B, "
                f"{', '.join(map(str, expected))}), got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}x{self.in_size}x{self.in_size} -> "
            f"{self.out_channels}x{self.out_size}x{self.out_size}"
        )


def _uniform_(tensor: Tensor, fan_in: int) -> Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) in place (the ``nn.Linear`` default scale)."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def _circular_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """S x S convolution with circular padding (eq. 3, odd S): same spatial size out."""
    pad = weight.shape[-1] // 2
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="circular")
    return F.conv2d(x, weight, bias)


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
    """
    d2 = (anchors[:, None, :] - points[None, :, :]).pow(2).sum(-1)
    return torch.exp(-omega.pow(2)[:, None] * d2)


def _check_prior_on(prior_on: object) -> PriorTarget:
    if prior_on not in get_args(PriorTarget):
        raise ValueError(f"`prior_on` must be one of {get_args(PriorTarget)}, got {prior_on!r}")
    return prior_on  # type: ignore[return-value]


def _check_anchors(value: object, name: str, n: int) -> int:
    m = _positive_int(value, name)
    if m > n:
        raise ValueError(f"`{name}` must be at most the domain size {n}, got {m}")
    return m


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


class FC(_Shaped):
    """Fully connected layer, eq. (1): weight (C'H'W', CHW), bias (C'H'W',), tagged "fc".

    Maps directly to the output resolution (no pooling); ``kernel_size`` is accepted for a common
    signature and unused.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        *,
        kernel_size: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, in_size, out_size, kernel_size)
        n_in = in_channels * in_size * in_size
        n_out = out_channels * out_size * out_size
        self.weight = nn.Parameter(_uniform_(torch.empty(n_out, n_in), n_in))
        self.tag("weight", "fc")
        self.bias = nn.Parameter(_uniform_(torch.empty(n_out), n_in)) if bias else None
        if bias:
            self.tag("bias", "fc")

    def dense_weight(self) -> Tensor:
        """The weight (C'H'W', CHW) (for a uniform interface with :class:`FFC` and :class:`SFC`)."""
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        y = F.linear(x.flatten(1), self.weight, self.bias)
        return y.view(x.shape[0], self.out_channels, self.out_size, self.out_size)


class CONV(_Shaped):
    """Convolution with circular padding, eq. (3): weight (C', C, S, S), bias (C',), tagged
    "conv"; followed by :func:`~ella.layers.pooling.polyphase_pool` when it halves the
    resolution, so it stays strictly equivariant to circular translations.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        *,
        kernel_size: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, in_size, out_size, kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
        fan_in = in_channels * kernel_size * kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(_uniform_(torch.empty(shape), fan_in))
        self.tag("weight", "conv")
        self.bias = nn.Parameter(_uniform_(torch.empty(out_channels), fan_in)) if bias else None
        if bias:
            self.tag("bias", "conv")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        y = _circular_conv(x, self.weight, self.bias)
        return polyphase_pool(y) if self.halves else y  # type: ignore[return-value]


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
        self,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        *,
        kernel_size: int = 3,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, in_size, out_size, kernel_size)
        c_out, c_in, s_in, s_out = out_channels, in_channels, in_size, out_size
        self.theta1 = nn.Parameter(_uniform_(torch.empty(c_out, c_in, s_out, s_out), c_in))
        self.theta2 = nn.Parameter(_uniform_(torch.empty(c_out, c_in, s_in, s_in), s_in * s_in))
        self.tag("theta1", "fc")
        self.tag("theta2", "fc")
        self.bias = (
            nn.Parameter(_uniform_(torch.empty(c_out), c_in * s_in * s_in)) if bias else None
        )
        if bias:
            self.tag("bias", "fc")

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


class SFC(FFC):
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
        prior_on: which tensor the Laplace prior of section 3.2 regularises ("weights": the
            induced theta1, theta2; "anchors": u1, u2; "lengthscales": omega1, omega2). Recorded
            as ``prior_target``; it changes nothing in this layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        *,
        kernel_size: int = 3,
        bias: bool = True,
        n_anchors: tuple[int, int] | None = None,
        learn_positions: bool = False,
        prior_on: PriorTarget = "anchors",
    ) -> None:
        _Shaped.__init__(self, in_channels, out_channels, in_size, out_size, kernel_size)
        self.prior_target = _check_prior_on(prior_on)
        n1, n2 = out_size * out_size, in_size * in_size
        if n_anchors is None:
            n_anchors = (math.ceil(n1 / 2), math.ceil(n2 / 2))
        if not isinstance(n_anchors, tuple) or len(n_anchors) != 2:
            raise TypeError(f"`n_anchors` must be a tuple (M1, M2), got {n_anchors!r}")
        m1 = _check_anchors(n_anchors[0], "n_anchors[0]", n1)
        m2 = _check_anchors(n_anchors[1], "n_anchors[1]", n2)
        self.n_anchors = (m1, m2)
        c_out, c_in = out_channels, in_channels
        for k, (size, m) in enumerate(((out_size, m1), (in_size, m2)), start=1):
            anchors, spacing = _anchor_grid(size, m, centred=False)
            self.register_buffer(f"points{k}", torch.tensor(_domain_points(size, False)))
            z = torch.tensor(anchors)
            if learn_positions:
                setattr(self, f"z{k}", nn.Parameter(z))
                self.tag(f"z{k}", "fc")
            else:
                self.register_buffer(f"z{k}", z)
            setattr(self, f"omega{k}", nn.Parameter(torch.full((m,), 1.0 / spacing)))
            self.tag(f"omega{k}", "fc")
        # anchors carry the scale of the F-FC factors they induce
        self.u1 = nn.Parameter(_uniform_(torch.empty(c_out, c_in, m1), c_in))
        self.u2 = nn.Parameter(_uniform_(torch.empty(c_out, c_in, m2), m2))
        self.tag("u1", "fc")
        self.tag("u2", "fc")
        self.bias = (
            nn.Parameter(_uniform_(torch.empty(c_out), c_in * in_size * in_size)) if bias else None
        )
        if bias:
            self.tag("bias", "fc")

    def factors(self) -> tuple[Tensor, Tensor]:
        """Induced ``(theta1, theta2)`` of eq. (7), shapes (C', C, H', W') and (C', C, H, W)."""
        phi1 = rbf_basis(self.points1, self.z1, self.omega1)  # (M1, H'W')
        phi2 = rbf_basis(self.points2, self.z2, self.omega2)  # (M2, HW)
        c_out, c_in = self.out_channels, self.in_channels
        theta1 = (self.u1 @ phi1).view(c_out, c_in, self.out_size, self.out_size)
        theta2 = (self.u2 @ phi2).view(c_out, c_in, self.in_size, self.in_size)
        return theta1, theta2


class SCONV(_Shaped):
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
        prior_on: recorded as ``prior_target`` (see :class:`SFC`); changes nothing here.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        *,
        kernel_size: int = 3,
        bias: bool = True,
        n_anchors: int | None = None,
        learn_positions: bool = False,
        prior_on: PriorTarget = "anchors",
    ) -> None:
        super().__init__(in_channels, out_channels, in_size, out_size, kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {kernel_size}")
        self.prior_target = _check_prior_on(prior_on)
        n = kernel_size * kernel_size
        m = _check_anchors(math.ceil(n / 2) if n_anchors is None else n_anchors, "n_anchors", n)
        self.n_anchors = m
        anchors, spacing = _anchor_grid(kernel_size, m, centred=True)
        self.register_buffer("points", torch.tensor(_domain_points(kernel_size, True)))
        if learn_positions:
            self.z = nn.Parameter(torch.tensor(anchors))
            self.tag("z", "conv")
        else:
            self.register_buffer("z", torch.tensor(anchors))
        self.omega = nn.Parameter(torch.full((m,), 1.0 / spacing))
        self.tag("omega", "conv")
        self.u = nn.Parameter(_uniform_(torch.empty(out_channels, in_channels, m), in_channels * m))
        self.tag("u", "conv")
        fan_in = in_channels * kernel_size * kernel_size
        self.bias = nn.Parameter(_uniform_(torch.empty(out_channels), fan_in)) if bias else None
        if bias:
            self.tag("bias", "conv")

    def filter(self) -> Tensor:
        """The induced filter (C', C, S, S), recomputed from (u, z, omega) on every call."""
        phi = rbf_basis(self.points, self.z, self.omega)  # (M, S*S)
        s = self.kernel_size
        return (self.u @ phi).view(self.out_channels, self.in_channels, s, s)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        y = _circular_conv(x, self.filter(), self.bias)
        return polyphase_pool(y) if self.halves else y  # type: ignore[return-value]


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

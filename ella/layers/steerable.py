"""Steerable and relaxed steerable convolutions for the cyclic group C_N (paper 003, sections
"Steerable G-CNN" and "Relaxed steerable G-CNN"; the paper numbers no equations. The strict
layer is Weiler and Cesa's steerable CNN, 2019, the relaxed one Wang, Walters and Yu's "rsteer",
2022).

We do not depend on ``e2cnn``: it is unmaintained, pulls in sympy and scipy and caches its bases
on disk, while the kernel basis for C_N is a few dozen lines below. Owning it lets us test it
exactly, and keeps every filter a differentiable function of the parameters built by plain
tensor contractions (Hessian-vector products need double backward; no ``grid_sample`` anywhere).

Representations and field types
-------------------------------
A representation of C_N (element ``g`` in ``0..N-1``, the rotation by ``theta_g = 2 pi g / N``)
is named by a string: ``"trivial"`` (``[1]``), ``"irrep<k>"`` for ``1 <= k <= N // 2`` (the
``2 x 2`` rotation by ``k theta_g``; for ``k = N / 2`` with N even the ``1 x 1`` sign
``(-1)^g``) and ``"regular"`` (the ``N x N`` cyclic permutation ``e_j -> e_{j+g mod N}``). All are
real orthogonal. A :class:`FieldType` is a direct sum of them: channel layout = the
concatenation of the fields' channels.

Coordinates: a kernel offset / position ``x = (x_0, x_1)`` has ``x_0`` along dim -2 (rows) and
``x_1`` along dim -1 (columns), polar angle ``phi = atan2(x_1, x_0)``; ``R_g`` rotates by
``theta_g`` in the ``(x_0, x_1)`` plane. The quarter turn ``R = [[0, -1], [1, 0]]`` is
``torch.rot90(x, 1, dims=(-2, -1))`` on the grid and ``(u_0, u_1) -> (-u_1, u_0)`` on vectors,
the convention of :func:`ella.dynamics.plume.rotate_fields`: ``"irrep1"`` of C_4 is the plume
velocity. A field map ``f (B, C, H, W)`` transforms as ``(g f)(x) = rho(g) f(R_g^-1 x)``
(:func:`rotate_field`, exact on the grid for multiples of 90 degrees).

Steerable kernel basis
----------------------
The convolution ``y(x) = sum_d kappa(d) f(x + d)`` commutes with the action iff
``kappa(R_g d) = rho_out(g) kappa(d) rho_in(g)^-1`` for all g. We expand ``kappa`` in continuous
functions ``F_i`` with matrix coefficients ``C_i`` (``c_out x c_in``)::

    F_{j,m}(r, phi) = exp(-(r - r_j)^2 / (2 sigma^2)) * (cos(m phi), sin(m phi))

on rings ``r_j = 0, 1, ..., (k - 1) / 2`` of a ``k x k`` kernel, ``sigma = 0.6``, frequencies
``0 <= m <= 2 r_j`` (only ``m = 0`` on the ring at 0; the highest frequency a ring of radius
``r_j`` carries without aliasing on the ``~ 8 r_j`` pixels around it; e2cnn's default cutoff is
of the same kind). Functions with ``m > 0`` are 0 at the origin, where the angle is undefined.
Rotating the argument acts on each pair by a rotation matrix: ``F(R_g x) = B(g) F(x)`` with
``B = [[cos m theta, -sin m theta], [sin m theta, cos m theta]]``, so the constraint reads
``sum_i B_ij(g) C_i = rho_out(g) C_j rho_in(g)^T`` for all j, i.e. ``vec C`` is fixed by the
orthogonal representation ``U_g = B(g) (x) rho_out(g) (x) rho_in(g)``. The basis is the
eigenspace at 1 of the projector ``P = mean_g U_g`` (``eigh``, float64), its dimension
``mean_g tr B(g) chi_out(g) chi_in(g)``; each element is sampled on the ``k x k`` grid and scaled
to unit Frobenius norm there (:func:`steerable_basis`). The sampled kernels satisfy the
constraint exactly for the rotations that map the grid to itself (the C4 subgroup); for N = 8
the 45 degree rotations hold for the continuous kernel only.

Layers
------
:class:`SteerableConv`: parameters = basis coefficients per pair of (output field, input field),
filters = the basis contracted with them on every forward (nothing that depends on parameters is
cached), circular padding (the plume grid is periodic), a bias on the fields that contain the
trivial representation (one value per ``"trivial"`` or ``"regular"`` output field, shared by the
regular field's N channels, which the permutations fix), none on irreps.
:class:`RelaxedSteerableConv` (rsteer): the coefficient of every basis kernel also depends on
the kernel offset ``d``, ``Psi(d) = sum_b w_b(d) psi_b(d)``; initialised equal over ``d`` so the
layer starts as the :class:`SteerableConv` drawn with the same seed (exactly equivariant), with
the regulariser :func:`steerable_relaxation_penalty`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ella.layers._base import check_input_dtype, check_kernel_size, circular_conv
from symdisc.runtime import check_bool, check_choice, check_float, check_instance, check_int

__all__ = [
    "RING_SIGMA",
    "rep_dim",
    "rep_matrix",
    "FieldType",
    "kernel_functions",
    "steerable_kernel",
    "steerable_basis",
    "basis_dimension",
    "rotate_field",
    "field_action",
    "SteerableConv",
    "RelaxedSteerableConv",
    "steerable_relaxation_penalty",
]

RING_SIGMA = 0.6  # width of the Gaussian radial rings, in pixels


# --------------------------------------------------------------------------------------------
# representations of C_N
# --------------------------------------------------------------------------------------------


def _parse_rep(name: object, order: int, arg: str = "name") -> tuple[str, int]:
    """``(kind, frequency)`` of a representation name; ValueError for an unknown one, naming
    the caller's argument ``arg``."""
    check_int(order, "order", minimum=1)
    check_instance(name, arg, str)
    if name in ("trivial", "regular"):
        return name, 0
    if name.startswith("irrep") and name[5:].isdigit():
        k = int(name[5:])
        if 1 <= k <= order // 2:
            return "irrep", k
    raise ValueError(
        f"`{arg}` must be 'trivial', 'regular' or 'irrep<k>' with 1 <= k <= {order // 2} "
        f"for C_{order}, got {name!r}"
    )


def rep_dim(name: str, order: int) -> int:
    """The dimension of representation ``name`` of C_``order``.

    Raises:
        TypeError: for a ``name`` that is not a str or an ``order`` that is not an int.
        ValueError: for an unknown ``name`` or an ``order`` below 1.
    """
    kind, k = _parse_rep(name, order)
    if kind == "trivial":
        return 1
    if kind == "regular":
        return order
    return 1 if 2 * k == order else 2


def _cos_sin(numerator: int, order: int) -> tuple[float, float]:
    """``cos, sin`` of ``2 pi numerator / order``, exact (0, +-1) at multiples of 90 degrees."""
    n = numerator % order
    if (4 * n) % order == 0:
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[4 * n // order]
    angle = 2 * math.pi * n / order
    return math.cos(angle), math.sin(angle)


def rep_matrix(name: str, order: int, g: int) -> Tensor:
    """``rho(g)`` of representation ``name`` of C_``order`` as a float64 matrix ``(d, d)``.

    Raises:
        TypeError, ValueError: as :func:`rep_dim`, or for a ``g`` that is not an int.
    """
    kind, k = _parse_rep(name, order)
    g = check_int(g, "g") % order
    if kind == "trivial":
        return torch.ones(1, 1, dtype=torch.float64)
    if kind == "regular":
        return torch.roll(torch.eye(order, dtype=torch.float64), g, dims=0)
    if 2 * k == order:
        return torch.full((1, 1), -1.0 if g % 2 else 1.0, dtype=torch.float64)
    c, s = _cos_sin(k * g, order)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


@dataclass(frozen=True)
class FieldType:
    """A direct sum of representations of C_``order``: ``reps`` names the fields in channel
    order (e.g. ``FieldType(4, ("trivial", "irrep1"))`` is a plume state: density, velocity).

    Raises:
        TypeError, ValueError: for a bad order or an unknown representation name.
    """

    order: int
    reps: tuple[str, ...]

    def __post_init__(self) -> None:
        check_int(self.order, "order", minimum=1)
        reps = tuple(check_instance(self.reps, "reps", (tuple, list)))
        if not reps:
            raise ValueError("`reps` must name at least one field, got none")
        for name in reps:
            _parse_rep(name, self.order, "reps")
        object.__setattr__(self, "reps", reps)

    @property
    def dims(self) -> tuple[int, ...]:
        """The channels of each field."""
        return tuple(rep_dim(r, self.order) for r in self.reps)

    @property
    def size(self) -> int:
        """The number of channels ``C``."""
        return sum(self.dims)

    def matrix(self, g: int) -> Tensor:
        """``rho(g)`` of the direct sum, block diagonal, float64 ``(C, C)``."""
        return torch.block_diag(*(rep_matrix(r, self.order, g) for r in self.reps))


# --------------------------------------------------------------------------------------------
# the kernel basis
# --------------------------------------------------------------------------------------------


def _angular_terms(kernel_size: int) -> list[tuple[float, int]]:
    """``(ring radius, frequency)`` of every pair of functions (one function for m = 0)."""
    rings = [float(j) for j in range(kernel_size // 2 + 1)]
    return [(r, m) for r in rings for m in range(int(math.floor(2 * r)) + 1)]


def kernel_functions(points: Tensor, kernel_size: int, sigma: float = RING_SIGMA) -> Tensor:
    """The continuous functions ``F_i`` at ``points`` ``(P, 2)`` (``(x_0, x_1)``): ``(F, P)``,
    ordered by ring, then frequency, cos before sin (m = 0: cos only).

    Raises:
        TypeError: for ``points`` that are not a floating tensor, a non-int ``kernel_size``.
        ValueError: for ``points`` not (P, 2) or not finite, an even or non-positive
            ``kernel_size``, a non-positive ``sigma``.
    """
    k = check_kernel_size(kernel_size)
    check_instance(points, "points", Tensor)
    if not points.is_floating_point():
        raise TypeError(f"`points` must be a floating tensor (P, 2), got {points.dtype}")
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"`points` must have shape (P, 2), got {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise ValueError("`points` must be finite, got NaN or Inf entries")
    sigma = check_float(sigma, "sigma", positive=True)
    r = points.norm(dim=-1)
    phi = torch.atan2(points[:, 1], points[:, 0])
    at_origin = r == 0
    rows = []
    for ring, m in _angular_terms(k):
        radial = torch.exp(-((r - ring) ** 2) / (2 * sigma**2))
        if m == 0:
            rows.append(radial)
        else:
            radial = torch.where(at_origin, torch.zeros_like(radial), radial)
            rows += [radial * torch.cos(m * phi), radial * torch.sin(m * phi)]
    return torch.stack(rows)


def _function_rotation(kernel_size: int, order: int, g: int) -> Tensor:
    """``B(g)`` with ``F(R_g x) = B(g) F(x)``, block diagonal ``(F, F)``, float64."""
    blocks = []
    for _, m in _angular_terms(kernel_size):
        if m == 0:
            blocks.append(torch.ones(1, 1, dtype=torch.float64))
        else:
            c, s = _cos_sin(m * g, order)
            blocks.append(torch.tensor([[c, -s], [s, c]], dtype=torch.float64))
    return torch.block_diag(*blocks)


def _coefficient_basis(order: int, rep_out: str, rep_in: str, kernel_size: int) -> Tensor:
    """Orthonormal basis ``(n, F, d_out, d_in)`` of the coefficients fixed by every ``U_g``."""
    d_o, d_i = rep_dim(rep_out, order), rep_dim(rep_in, order)
    n_f = len(_function_rotation(kernel_size, order, 0))
    projector = (
        sum(
            torch.kron(
                torch.kron(
                    _function_rotation(kernel_size, order, g), rep_matrix(rep_out, order, g)
                ),
                rep_matrix(rep_in, order, g),
            )
            for g in range(order)
        )
        / order
    )
    projector = (projector + projector.T) / 2
    values, vectors = torch.linalg.eigh(projector)
    fixed = vectors[:, values > 0.5]  # a projector: eigenvalues 0 or 1
    return fixed.T.reshape(-1, n_f, d_o, d_i)


def basis_dimension(order: int, rep_out: str, rep_in: str, kernel_size: int) -> int:
    """The dimension of the steerable basis by characters: ``mean_g tr B(g) chi_out(g)
    chi_in(g)`` (independent of the eigen-decomposition :func:`steerable_basis` uses).

    Raises:
        TypeError, ValueError: as :func:`steerable_basis`.
    """
    check_kernel_size(kernel_size)
    check_int(order, "order", minimum=1)
    total = sum(
        float(torch.trace(_function_rotation(kernel_size, order, g)))
        * float(torch.trace(rep_matrix(rep_out, order, g)))
        * float(torch.trace(rep_matrix(rep_in, order, g)))
        for g in range(order)
    )
    return round(total / order)


def steerable_kernel(
    order: int, rep_out: str, rep_in: str, points: Tensor, kernel_size: int = 3
) -> Tensor:
    """The basis kernels evaluated at arbitrary ``points`` ``(P, 2)``, unnormalised:
    ``(n, d_out, d_in, P)``, float64. Each satisfies ``kappa(R_g x) = rho_out(g) kappa(x)
    rho_in(g)^T`` for every g in C_N at every point.

    Raises:
        TypeError, ValueError: as :func:`steerable_basis` and :func:`kernel_functions`.
    """
    check_kernel_size(kernel_size)
    check_int(order, "order", minimum=1)
    check_instance(points, "points", Tensor)
    coeff = _coefficient_basis(order, rep_out, rep_in, kernel_size)  # (n, F, d_o, d_i)
    funcs = kernel_functions(points.to(torch.float64), kernel_size)  # (F, P)
    return torch.einsum("nfoi,fp->noip", coeff, funcs)


def _grid(kernel_size: int) -> Tensor:
    """The offsets ``(k * k, 2)`` of a ``k x k`` kernel, row-major: ``(a - c, b - c)``."""
    c = kernel_size // 2
    ax = torch.arange(kernel_size, dtype=torch.float64) - c
    return torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)


def steerable_basis(order: int, rep_out: str, rep_in: str, kernel_size: int = 3) -> Tensor:
    """The steerable basis sampled on the ``k x k`` grid, each element of unit Frobenius norm:
    ``(n, d_out, d_in, k, k)``, float64; ``n`` may be 0. Entry ``[..., a, b]`` is the kernel at
    offset ``(a - k // 2, b - k // 2)``, the ``conv2d`` filter layout.

    Raises:
        TypeError: for a non-int ``order`` or ``kernel_size``, non-str representation names.
        ValueError: for an ``order`` below 1, an even or non-positive ``kernel_size``, or an
            unknown representation name (:func:`rep_dim`).
    """
    k = check_kernel_size(kernel_size)
    check_int(order, "order", minimum=1)
    basis = steerable_kernel(order, rep_out, rep_in, _grid(k), k)
    basis = basis.reshape(*basis.shape[:3], k, k)
    norms = basis.flatten(1).norm(dim=1)
    return basis / norms.clamp_min(1e-300)[:, None, None, None, None]


# --------------------------------------------------------------------------------------------
# the action on field maps
# --------------------------------------------------------------------------------------------


def rotate_field(x: Tensor, field_type: FieldType, g: int) -> Tensor:
    """``(g x)(p) = rho(g) x(R_g^-1 p)`` for field maps ``(..., C, H, W)`` of ``field_type``;
    ``g`` must be a multiple of 90 degrees (``4 g`` divisible by N), so the grid maps to itself
    (``torch.rot90``) and the result is exact.

    Raises:
        TypeError: for an ``x`` that is not a tensor, a ``field_type`` that is not a FieldType
            or a non-int ``g``.
        ValueError: for another rotation, or a channel count other than ``field_type.size``.
    """
    check_instance(x, "x", Tensor)
    check_instance(field_type, "field_type", FieldType)
    n = field_type.order
    g = check_int(g, "g") % n
    if (4 * g) % n:
        raise ValueError(
            f"`g` must be a multiple of 90 degrees (4 g divisible by N = {n}) to rotate on the "
            f"grid, got g = {g}"
        )
    if x.dim() < 3 or x.shape[-3] != field_type.size:
        raise ValueError(
            f"`x` must have shape (..., {field_type.size}, H, W), got {tuple(x.shape)}"
        )
    y = torch.rot90(x, 4 * g // n, dims=(-2, -1))
    rho = field_type.matrix(g).to(dtype=x.dtype, device=x.device)
    return torch.einsum("ij,...jhw->...ihw", rho, y)


def field_action(field_type: FieldType):
    """``lambda x, g: rotate_field(x, field_type, g)``, for :func:`equivariance_error`."""
    check_instance(field_type, "field_type", FieldType)
    return lambda x, g: rotate_field(x, field_type, g)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


class _SteerableBase(nn.Module):
    """Shared constructor: the basis per pair of representation kinds (buffers), coefficients
    per pair of (output field, input field) of those kinds, bias, channel permutations."""

    relaxed = False

    def __init__(
        self, in_type: FieldType, out_type: FieldType, kernel_size: int = 3, *, bias: bool = True
    ) -> None:
        super().__init__()
        check_bool(bias, "bias")
        self.in_type = check_instance(in_type, "in_type", FieldType)
        self.out_type = check_instance(out_type, "out_type", FieldType)
        if in_type.order != out_type.order:
            raise ValueError(
                f"`out_type` must be of the same group as `in_type` (C_{in_type.order}), got "
                f"C_{out_type.order}"
            )
        self.kernel_size = k = check_kernel_size(kernel_size)
        self.order = n = in_type.order
        kinds_in = sorted(set(in_type.reps))
        kinds_out = sorted(set(out_type.reps))
        self._kinds_in, self._kinds_out = kinds_in, kinds_out
        self._pairs: list[tuple[str, str, int]] = []  # (out kind, in kind, basis size)
        shapes = {}
        for ko in kinds_out:
            for ki in kinds_in:
                basis = steerable_basis(n, ko, ki, k)
                if len(basis):
                    key = f"{ko}_{ki}"
                    # in the default dtype, like the parameters (a float32 model rounds it anyway)
                    basis = basis.to(torch.get_default_dtype())
                    self.register_buffer(f"basis_{key}", basis, persistent=False)
                    shapes[key] = (out_type.reps.count(ko), in_type.reps.count(ki), len(basis))
                self._pairs.append((ko, ki, len(basis)))
        if not shapes:
            raise ValueError(
                f"`out_type` {list(out_type.reps)} admits no equivariant {k} x {k} kernel from "
                f"`in_type` {list(in_type.reps)} (an empty basis)"
            )
        n_terms = {
            ko: sum(nb * in_type.reps.count(i) for o, i, nb in self._pairs if o == ko)
            for ko in kinds_out
        }
        # coefficients U(+-sqrt(d_out / n_terms)) on unit-norm basis kernels: every output
        # channel gets the variance of a default Conv2d output (n_terms basis kernels per field)
        weights = {}
        for key, shape in shapes.items():
            ko = key.split("_")[0]
            bound = math.sqrt(rep_dim(ko, n) / n_terms[ko])
            w = torch.empty(shape).uniform_(-bound, bound)
            if self.relaxed:  # equal over the offsets: the strict layer of the same seed
                w = w[..., None].expand(*shape, k * k).clone()
            weights[key] = nn.Parameter(w)
        self.weights = nn.ParameterDict(weights)
        biased = [i for i, r in enumerate(out_type.reps) if r in ("trivial", "regular")]
        if bias and biased:
            fan_in = in_type.size * k * k
            bound = 1 / math.sqrt(fan_in)
            self.bias = nn.Parameter(torch.empty(len(biased)).uniform_(-bound, bound))
            slot = {f: j for j, f in enumerate(biased)}
            index = [
                slot.get(f, len(biased)) for f, d in enumerate(out_type.dims) for _ in range(d)
            ]
            self.register_buffer("bias_index", torch.tensor(index), persistent=False)
        else:
            self.register_parameter("bias", None)
        self.register_buffer("perm_in", _unsort(in_type), persistent=False)
        self.register_buffer("perm_out", _unsort(out_type), persistent=False)

    def _block(self, weight: Tensor, basis: Tensor) -> Tensor:
        """One block of filters ``(n_o d_o, n_i d_i, k, k)`` from coefficients and basis."""
        n_o, n_i = weight.shape[:2]
        _, d_o, d_i, k, _ = basis.shape
        # the parameters set the dtype (curvature measures call a float32 module with float64
        # parameters through torch.func.functional_call)
        basis = basis.to(weight.dtype)
        if self.relaxed:  # w (n_o, n_i, nb, k*k): the coefficient of psi_b at every offset
            filt = torch.einsum("aibd,bpqd->apiqd", weight, basis.flatten(3))
        else:
            filt = torch.einsum("aib,bpqd->apiqd", weight, basis.flatten(3))
        return filt.reshape(n_o * d_o, n_i * d_i, k, k)

    def expanded_weight(self) -> Tensor:
        """The ``conv2d`` filters ``(C_out, C_in, k, k)`` built from the current parameters."""
        k, n = self.kernel_size, self.order
        ref = next(iter(self.weights.values()))
        rows = []
        for ko in self._kinds_out:
            cols = []
            n_o = self.out_type.reps.count(ko) * rep_dim(ko, n)
            for ki in self._kinds_in:
                key = f"{ko}_{ki}"
                if key in self.weights:
                    cols.append(self._block(self.weights[key], getattr(self, f"basis_{key}")))
                else:
                    n_i = self.in_type.reps.count(ki) * rep_dim(ki, n)
                    cols.append(ref.new_zeros(n_o, n_i, k, k))
            rows.append(torch.cat(cols, 1))
        filt = torch.cat(rows, 0)
        return filt.index_select(0, self.perm_out).index_select(1, self.perm_in)

    def expanded_bias(self) -> Tensor | None:
        """The bias per output channel ``(C_out,)`` (0 on irreducible fields), or None."""
        if self.bias is None:
            return None
        return torch.cat([self.bias, self.bias.new_zeros(1)])[self.bias_index]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H, W)``, circular padding."""
        x = check_instance(x, "x", Tensor)
        if x.dim() != 4 or x.shape[1] != self.in_type.size:
            raise ValueError(
                f"{type(self).__name__}: `x` must have shape (B, {self.in_type.size}, H, W), "
                f"got {tuple(x.shape)}"
            )
        check_input_dtype(x, type(self).__name__, self)
        return circular_conv(x, self.expanded_weight(), self.expanded_bias())

    def extra_repr(self) -> str:
        return (
            f"C_{self.order}: {list(self.in_type.reps)} -> {list(self.out_type.reps)}, "
            f"kernel_size={self.kernel_size}, bias={self.bias is not None}"
        )


def _unsort(field_type: FieldType) -> Tensor:
    """Index ``(C,)`` taking channels from the layout grouped by representation kind (sorted
    names, fields in order within a kind) back to the layout of ``field_type``."""
    starts = [0]
    for d in field_type.dims:
        starts.append(starts[-1] + d)
    grouped = [
        c
        for kind in sorted(set(field_type.reps))
        for f, r in enumerate(field_type.reps)
        if r == kind
        for c in range(starts[f], starts[f + 1])
    ]
    return torch.argsort(torch.tensor(grouped))


class SteerableConv(_SteerableBase):
    """Steerable convolution for C_N between field types (paper 003, "Steerable G-CNN";
    Weiler and Cesa, 2019): ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    The filter block of output field ``a`` (kind ``ko``) and input field ``i`` (kind ``ki``) is
    ``sum_b w[a, i, b] psi_b`` with ``psi_b`` the :func:`steerable_basis` of ``(ko, ki)``; so
    ``layer(rotate_field(x, in_type, g)) == rotate_field(layer(x), out_type, g)`` exactly for
    the quarter turns in C_N (and for every g of C_N up to the sampling of the kernels).

    Parameters: ``weights["<ko>_<ki>"]`` ``(n_out_fields_ko, n_in_fields_ki, n_basis)`` for each
    pair of kinds with a non-empty basis; ``bias`` ``(n_biased_fields,)``: one per ``"trivial"``
    or ``"regular"`` output field (a regular field's N channels share it).

    Args:
        in_type, out_type: :class:`FieldType` of the same order N.
        kernel_size: odd ``k``.
        bias: learn the bias (only fields containing the trivial representation get one).

    Raises:
        TypeError, ValueError: for arguments of the wrong type or value (the message names it).
    """


class RelaxedSteerableConv(_SteerableBase):
    """Relaxed steerable convolution (paper 003, "Relaxed steerable G-CNN"; Wang, Walters and
    Yu, 2022, rsteer): ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    The coefficient of every basis kernel depends on the kernel offset ``d`` (the variable of
    integration of the steerable convolution): ``Psi_{a,i}(d) = sum_b w[a, i, b, d] psi_b(d)``.
    ``w`` is initialised equal over ``d`` to the coefficients a :class:`SteerableConv` with the
    same arguments draws from the same seed, so the layer starts identical to it (exactly
    equivariant) and stops being equivariant once ``w`` varies over ``d``; see
    :func:`steerable_relaxation_penalty`.

    Parameters: ``weights["<ko>_<ki>"]`` ``(n_out_fields, n_in_fields, n_basis, k * k)`` (offsets
    row-major), ``bias`` as :class:`SteerableConv`.

    Args: as :class:`SteerableConv`.
    """

    relaxed = True


def steerable_relaxation_penalty(model: nn.Module, order: int = 1) -> Tensor:
    """The equivariance regulariser of the relaxed steerable layers of ``model``:
    ``sum_layers sum_{a,i,b} sum_d |w[a,i,b,d] - mean_d' w[a,i,b,d']|^p`` (``p = order``, 1 or
    2). Zero exactly when every coefficient is constant over the offsets (each layer is then the
    strict :class:`SteerableConv`); zero for models without relaxed steerable layers.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if ``order`` is not 1 or 2.
    """
    check_instance(model, "model", nn.Module)
    check_choice(order, "order", (1, 2))
    terms = [
        (w - w.mean(-1, keepdim=True)).abs().pow(order).sum()
        for m in model.modules()
        if isinstance(m, RelaxedSteerableConv)
        for w in m.weights.values()
    ]
    if not terms:
        p = next(model.parameters(), None)
        return torch.zeros((), dtype=p.dtype if p is not None else torch.float32)
    return torch.stack(terms).sum()

"""Invariance learning with the differentiable Laplace marginal likelihood (paper 001, LILA).

==========================  ==================================================================
piece                       paper 001
==========================  ==================================================================
:class:`AffineAugmentation`  section 3.4 and appendix A: ``x' = g(x, eps; eta)``, per example
                            and per draw ``eps ~ U[-1, 1]^6``, the matrix exponential of
                            ``sum_i eps_i eta_i G_i`` over the six affine generators, bilinear
                            resampling; differentiable in eta by reparameterisation
:class:`PointRotation`      the same for 2-D points: a rotation about the origin by ``eps eta``
:class:`InvariantModel`     eq. (16): ``f_hat(x) = 1/S sum_s f(g(x, eps_s; eta))`` (logits
                            averaged), at training and test time
:class:`DrawAverage`        ``f_hat`` on draws made beforehand, ``(B, S, ...) -> (B, C)``: the
                            module the Laplace approximation integrates over
:func:`augmented_kfac`      section 4.2, eq. (19): KFAC of the invariant model with the
                            *Kronecker product of expectations* ``E[a'] E[a']^T (x)
                            E[g'] Lambda E[g']^T``
full GGN                    eq. (17): :func:`symdisc.curvature.ggn_rows` of a
                            :class:`DrawAverage` is the GGN with averaged Jacobians (the
                            Jacobian of the average is the average of the Jacobians)
:func:`eta_gradient`        section 4.3, eq. (20): the eta-gradient of the log marginal
                            likelihood from a preconditioner accumulated once and per-batch
                            (stochastic) terms
:func:`train_invariant`     the marginal-likelihood loop of :mod:`ella.marglik` with eta as a
                            hyperparameter (own optimiser, learning rate, burn-in), and the
                            Augerino baseline (Benton et al., 2020)
==========================  ==================================================================

The augmentation parameters eta are *not* parameters of the model: an augmentation holds them
as a plain tensor attribute (a leaf that requires a gradient), so the Laplace approximation,
which integrates over the model's trainable parameters, never integrates over them, and they
enter the marginal likelihood through the augmented inputs ``x'`` (which then require a
gradient, so :class:`ella.laplace.Laplace` keeps the graph).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.laplace import Laplace, PriorPrecision, Structure
from ella.marglik import (
    MarglikConfig,
    MarglikResult,
    _check_choice,
    _check_data,
    _check_floats,
    _check_ints,
    _nll,
    _Run,
)
from symdisc.curvature import KronFactors, ggn_rows, output_hessian_sqrt
from symdisc.curvature._losses import Loss, check_loss, loss_value, reduction_scale
from symdisc.curvature.hessian import check_finite_loss
from symdisc.curvature.kfac import forward_with_layer_inputs, kfac_rule_for, layer_terms

__all__ = [
    "AFFINE_GENERATORS",
    "AFFINE_NAMES",
    "Augmentation",
    "AffineAugmentation",
    "PointRotation",
    "DrawAverage",
    "InvariantModel",
    "affine_matrices",
    "affine_transform",
    "augmented_kfac",
    "invariant_laplace",
    "eta_gradient",
    "InvarianceMethod",
    "InvarianceConfig",
    "InvarianceResult",
    "train_invariant",
]

logger = logging.getLogger(__name__)

AFFINE_NAMES = ("translate_x", "translate_y", "rotate", "scale_x", "scale_y", "shear")
"""The components of eta for images, in the order of appendix A."""


def _generators() -> Tensor:
    g = torch.zeros(6, 3, 3, dtype=torch.float64)
    g[0, 0, 2] = 1.0  # horizontal translation
    g[1, 1, 2] = 1.0  # vertical translation
    g[2, 0, 1], g[2, 1, 0] = -1.0, 1.0  # rotation
    g[3, 0, 0] = 1.0  # horizontal scale
    g[4, 1, 1] = 1.0  # vertical scale
    g[5, 0, 1], g[5, 1, 0] = 1.0, 1.0  # shear
    return g


AFFINE_GENERATORS = _generators()
"""(6, 3, 3) float64: the generators G_1..G_6 of appendix A acting on homogeneous coordinates
``(x, y, 1)`` (x horizontal, y vertical, in the normalised coordinates [-1, 1] of
``F.affine_grid``)."""


# --------------------------------------------------------------------------------------------
# augmentation distributions
# --------------------------------------------------------------------------------------------


def affine_matrices(eta: Tensor, eps: Tensor) -> Tensor:
    """``exp(sum_i eps_i eta_i G_i)``: (..., 3, 3) from eta (6,) and draws eps (..., 6)."""
    gens = AFFINE_GENERATORS.to(dtype=eta.dtype, device=eta.device)
    algebra = torch.einsum("...k,k,kij->...ij", eps.to(eta.dtype), eta, gens)
    return torch.linalg.matrix_exp(algebra)


def affine_transform(images: Tensor, matrices: Tensor, *, inverse: Tensor | None = None) -> Tensor:
    """Resample images (N, C, H, W) under forward affine maps (N, 3, 3) (eqs. 22-23).

    The output pixel at ``p'`` takes the bilinearly interpolated input at ``T^-1 p'`` (zeros
    outside the image), so ``T`` moves content from ``p`` to ``T p``; coordinates are those of
    ``F.affine_grid`` with ``align_corners=False``. ``inverse`` may pass ``T^-1`` when it is
    known exactly (``exp(-M)`` for ``T = exp(M)``); otherwise it is ``torch.linalg.inv(T)``.
    """
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape (N, C, H, W), got {tuple(images.shape)}")
    if matrices.shape != (images.shape[0], 3, 3):
        raise ValueError(
            f"`matrices` must have shape ({images.shape[0]}, 3, 3), got {tuple(matrices.shape)}"
        )
    inv = torch.linalg.inv(matrices) if inverse is None else inverse
    theta = inv[:, :2, :].to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Augmentation:
    """A reparameterised augmentation distribution ``x' = g(x, eps; eta)``, eps ~ U[-1, 1]^k.

    ``eta`` is a plain tensor (k,), a leaf that requires a gradient unless ``learnable=False``;
    it is deliberately not an ``nn.Parameter`` of any model (see the module docstring).
    Subclasses define :attr:`names` and :meth:`apply`.
    """

    names: tuple[str, ...] = ()

    def __init__(
        self,
        eta: Tensor | Sequence[float] | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        learnable: bool = True,
    ) -> None:
        k = len(self.names)
        if eta is None:
            value = torch.zeros(k, dtype=dtype, device=device)
        else:
            value = torch.as_tensor(eta, dtype=dtype, device=device).detach().clone()
        if value.shape != (k,):
            raise ValueError(f"`eta` must have shape ({k},), got {tuple(value.shape)}")
        if not isinstance(learnable, bool):
            raise TypeError(f"`learnable` must be a bool, got {type(learnable).__name__}")
        self.eta = value.requires_grad_(learnable)

    @property
    def k(self) -> int:
        """Number of components of eta."""
        return len(self.names)

    def sample_eps(
        self, n: int, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draws eps ~ U[-1, 1]^k, independent per example and per draw: (n, S, k), drawn on
        the CPU with ``generator`` (so the same seed gives the same draws everywhere)."""
        if n_samples < 1:
            raise ValueError(f"`n_samples` must be a positive int, got {n_samples}")
        eps = torch.rand(n, n_samples, self.k, generator=generator, dtype=self.eta.dtype)
        return (2.0 * eps - 1.0).to(self.eta.device)

    def apply(self, x: Tensor, eps: Tensor, eta: Tensor | None = None) -> Tensor:
        """The augmented inputs ``g(x_b, eps_bs; eta)``: (B, S, *x.shape[1:])."""
        raise NotImplementedError

    def __call__(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``apply(x, sample_eps(len(x), n_samples, generator))``: (B, S, ...)."""
        return self.apply(x, self.sample_eps(x.shape[0], n_samples, generator))

    def _check_eps(self, x: Tensor, eps: Tensor) -> None:
        if eps.ndim != 3 or eps.shape[0] != x.shape[0] or eps.shape[2] != self.k:
            raise ValueError(
                f"`eps` must have shape ({x.shape[0]}, S, {self.k}), got {tuple(eps.shape)}"
            )

    def extent(self) -> dict[str, float]:
        """``{component: |eta_i|}``: the half-width of the learned uniform distribution."""
        return {n: abs(float(v)) for n, v in zip(self.names, self.eta.detach())}


class AffineAugmentation(Augmentation):
    """Affine augmentation of images (appendix A): eta in R^6 over translation x, y, rotation,
    scale x, y and shear (:data:`AFFINE_NAMES`).

    Per example and draw, ``T = exp(sum_i eps_i eta_i G_i)`` and ``x'(p') = x(T^-1 p')`` by
    bilinear sampling (:func:`affine_transform`), differentiable in eta.

    Example:
        >>> aug = AffineAugmentation(dtype=torch.float64)
        >>> aug(torch.rand(4, 1, 16, 16, dtype=torch.float64), 8).shape
        torch.Size([4, 8, 1, 16, 16])
    """

    names = AFFINE_NAMES

    def apply(self, x: Tensor, eps: Tensor, eta: Tensor | None = None) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"`x` must be images of shape (B, C, H, W), got {tuple(x.shape)}")
        self._check_eps(x, eps)
        b, s = eps.shape[:2]
        # exp(M)^-1 = exp(-M) exactly: no matrix inversion (which fails in float32 once a
        # large scale component makes exp(M) numerically singular)
        inverse = affine_matrices(self.eta if eta is None else eta, -eps).reshape(b * s, 3, 3)
        src = x[:, None].expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        return affine_transform(src, inverse, inverse=inverse).reshape(b, s, *x.shape[1:])

    def flow(self, eps: Tensor, points: Tensor) -> Tensor:
        """Displacements ``T p - p`` (n, P, 2) of points (P, 2) under the maps of eps (n, 6)."""
        mats = affine_matrices(self.eta.detach().cpu(), eps.cpu())  # (n, 3, 3), on the CPU
        points = points.cpu().to(mats.dtype)
        homo = torch.cat([points, torch.ones_like(points[:, :1])], 1)
        return torch.einsum("nij,pj->npi", mats[:, :2], homo) - points


class PointRotation(Augmentation):
    """Rotation of 2-D points about the origin by ``eps * eta`` (one component, radians).

    ``x' = R(eps eta) x``, the matrix exponential of ``eps eta [[0, -1], [1, 0]]``.
    """

    names = ("rotate",)

    def apply(self, x: Tensor, eps: Tensor, eta: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"`x` must be 2-D points of shape (B, 2), got {tuple(x.shape)}")
        self._check_eps(x, eps)
        angle = (eps[..., 0] * (self.eta if eta is None else eta)[0]).to(x.dtype)  # (B, S)
        c, s = torch.cos(angle), torch.sin(angle)
        x0, x1 = x[:, None, 0], x[:, None, 1]
        return torch.stack([c * x0 - s * x1, s * x0 + c * x1], dim=-1)


# --------------------------------------------------------------------------------------------
# invariant models
# --------------------------------------------------------------------------------------------


class DrawAverage(nn.Module):
    """``f_hat`` on given draws (eq. 16): inputs (B, S, *D) -> mean over S of ``net`` (B, C).

    Its parameters are the network's (named ``net.*``); nothing random happens inside, so it is
    a pure function of the parameters and the augmented inputs (``vmap``-able).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"`net` must be an nn.Module, got {type(net).__name__}")
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 3:
            raise ValueError(f"inputs must have shape (B, S, ...), got {tuple(x.shape)}")
        b, s = x.shape[:2]
        return self.net(x.flatten(0, 1)).unflatten(0, (b, s)).mean(1)


class InvariantModel(DrawAverage):
    """The invariant network ``f_hat(x) = 1/S sum_s f(g(x, eps_s; eta))`` (eqs. 12, 16).

    ``forward(x)`` draws ``n_samples`` fresh eps per example (from ``generator`` if given);
    :meth:`averaged` is the same network on draws made beforehand (for the Laplace
    approximation, where likelihood and curvature must see the same draws). The augmentation
    (and its eta) is a plain attribute, not a submodule: eta is not in ``parameters()`` nor in
    ``state_dict()``.
    """

    def __init__(self, net: nn.Module, augmentation: Augmentation, n_samples: int) -> None:
        super().__init__(net)
        if not isinstance(augmentation, Augmentation):
            raise TypeError(
                f"`augmentation` must be an Augmentation, got {type(augmentation).__name__}"
            )
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"`n_samples` must be a positive int, got {n_samples!r}")
        self.augmentation = augmentation
        self.n_samples = n_samples

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return super().forward(self.augmentation(x, n_samples or self.n_samples, generator))

    def averaged(self) -> DrawAverage:
        """A :class:`DrawAverage` sharing this model's network (same parameter names)."""
        return DrawAverage(self.net)


# --------------------------------------------------------------------------------------------
# augmented KFAC (section 4.2)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# the Laplace approximation of an invariant model and its eta-gradient (section 4.3)
# --------------------------------------------------------------------------------------------


def _split(x: Tensor, eps: Tensor, y: Tensor, batch_size: int) -> list[tuple[Tensor, ...]]:
    return [
        (x[i : i + batch_size], eps[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, x.shape[0], batch_size)
    ]


def invariant_laplace(
    model: InvariantModel,
    data: Iterable[tuple[Tensor, Tensor, Tensor]],
    likelihood: str,
    structure: Structure,
    *,
    differentiable: bool = False,
    sigma: float = 1.0,
    temperature: float = 1.0,
    per_tensor: bool = False,
) -> Laplace:
    """A :class:`~ella.laplace.Laplace` of the invariant model fitted on fixed draws.

    ``data`` yields ``(x, eps, y)`` batches (eps (B, S, k) from
    :meth:`Augmentation.sample_eps`); the likelihood uses ``f_hat`` on these draws, ``"full"``
    and ``"diag"`` the GGN with averaged Jacobians (eq. 17), ``"kron"`` :func:`augmented_kfac`
    (eq. 19). With ``differentiable=True`` the augmented inputs keep their graph to eta, and the
    marginal likelihood is differentiable in eta (one graph over all the data: eq. 15 by plain
    backpropagation, for small problems; see :func:`eta_gradient` for large ones).
    """
    aug = model.augmentation
    with torch.set_grad_enabled(differentiable and aug.eta.requires_grad):
        batches = [(aug.apply(x, eps), y) for x, eps, y in data]
    if not differentiable:
        batches = [(x.detach(), y) for x, y in batches]
    return Laplace(
        model.averaged(),
        likelihood,  # type: ignore[arg-type]
        structure,
        sigma=sigma,
        temperature=temperature,
        per_tensor=per_tensor,
        kron_factors=augmented_kfac,
    ).fit(batches)


def _preconditioner(laplace: Laplace, deltas: dict[str, Tensor]) -> object:
    """The fixed weights W of eq. (20): ``d log det = <W, dH>`` for a change dH of the
    (untempered) curvature. Full: ``K^-1 / T`` with ``K = H/T + diag(delta)``; diag: its
    diagonal; kron: per block ``(W_A, W_G)`` with ``W_A = Q_A diag(v) Q_A^T``,
    ``v_i = sum_j (g_j/T) / (a_i g_j/T + delta)`` (and W_G likewise), the derivative of
    ``sum_ij log(a_i g_j/T + delta)`` through the eigenvalues ``a_i = q_i^T A q_i``."""
    T = laplace.temperature
    if laplace.structure == "full":
        K = laplace.curvature.detach() / T + torch.diag(laplace._per_parameter(deltas).detach())
        return torch.cholesky_inverse(torch.linalg.cholesky(K)) / T
    if laplace.structure == "diag":
        return 1.0 / (laplace.curvature.detach() + T * laplace._per_parameter(deltas).detach())
    out = {}
    for key, (a, qa, g, qg) in laplace.eigendecompositions.items():
        a, qa, g, qg = a.detach(), qa.detach(), g.detach(), qg.detach()
        delta = deltas[laplace._block_groups[key]].detach()
        ac, gc = a.clamp_min(0), g.clamp_min(0)
        denom = torch.outer(ac, gc) / T + delta  # (d_A, d_G)
        v = (gc[None, :] / T / denom).sum(1) * (a >= 0)
        w = (ac[:, None] / T / denom).sum(0) * (g >= 0)
        out[key] = ((qa * v) @ qa.T, (qg * w) @ qg.T)
    return out


def eta_gradient(
    laplace: Laplace,
    prior_precision: PriorPrecision,
    model: InvariantModel,
    data: Iterable[tuple[Tensor, Tensor, Tensor]],
    *,
    n_total: int,
) -> Tensor:
    """The gradient in eta of ``-log p(D | delta, eta)`` by the method of section 4.3.

    By eq. (20), ``d/d eta log det(H/T + delta) = sum_pq [(H/T + delta)^-1]_pq d/d eta
    [sum_n H_n / T]_pq``: the inverse (the *preconditioner*) is accumulated once over all the
    data (``laplace``, fitted without a graph on the same draws), and the derivative of the sum
    over examples splits into per-batch terms, each taken with a graph of one batch only. The
    log-likelihood term splits the same way. With ``data`` covering M of the ``n_total``
    examples, the per-batch terms are scaled by ``n_total / M``: an unbiased estimate of the
    sum for a random subset, and the exact full-batch gradient (at the same draws) when the
    batches cover all the data.

    Args:
        laplace: :func:`invariant_laplace` of ``model`` on all ``n_total`` examples and draws.
        prior_precision: as for :meth:`Laplace.log_marginal_likelihood`.
        model: the invariant model (its augmentation's eta requires a gradient).
        data: ``(x, eps, y)`` batches (the draws of these examples in ``laplace``'s fit).
        n_total: N, the number of examples ``laplace`` was fitted on.

    Returns:
        (k,) the gradient, in eta's dtype.
    """
    laplace._require_fit()
    eta = model.augmentation.eta
    if not eta.requires_grad:
        raise ValueError("the augmentation's `eta` must require a gradient")
    deltas = laplace.precisions(prior_precision)
    weights = _preconditioner(laplace, deltas)
    avg = model.averaged()
    loss = laplace.loss
    T = laplace.temperature
    scale_h = laplace.output_hessian_scale
    fn, params = None, None
    if laplace.structure != "kron":
        from symdisc.curvature import functional

        fn, params = functional(avg, laplace.names)
    else:
        layers = _averaged_layers(avg)
        point = {n: p.detach().requires_grad_(True) for n, p in avg.named_parameters()}
    grad = torch.zeros_like(eta)
    seen = 0
    for x, eps, y in data:
        with torch.enable_grad():
            inputs = model.augmentation.apply(x, eps)
            if laplace.structure == "kron":
                outputs, parts = _augmented_batch(avg, layers, point, inputs, loss, True)
                term = 0.0
                for key, (w_a, w_g) in weights.items():
                    aa, r, gg = parts[key][:3]
                    rows_total = r / x.shape[0] * n_total  # A is normalised over all N L rows
                    term = term + (w_a * aa).sum() / rows_total + scale_h * (w_g * gg).sum()
            else:
                outputs = fn(params, inputs)
                rows = ggn_rows(fn, params, inputs, loss=loss, reduction="sum", outputs=outputs)
                if laplace.structure == "full":
                    term = scale_h * ((rows @ weights) * rows).sum()
                else:
                    term = scale_h * (rows.pow(2).sum(0) * weights).sum()
            value = loss_value(outputs, y, loss, "sum")
            if laplace.likelihood == "classification":
                nll = value
            else:
                nll = value / (2.0 * laplace.sigma**2)
            objective = nll / T + 0.5 * term
            (part,) = torch.autograd.grad(objective, eta)
        grad = grad + part
        seen += x.shape[0]
    if seen == 0:
        raise ValueError("`data` must yield at least one (x, eps, y) batch")
    return grad * (n_total / seen)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

InvarianceMethod = Literal["lila", "augerino", "none"]
EtaGradient = Literal["full", "stochastic"]


@dataclass(frozen=True)
class InvarianceConfig:
    """How eta is learned by :func:`train_invariant` (the rest of the schedule is a
    :class:`ella.marglik.MarglikConfig`).

    Attributes:
        method: ``"lila"``: eta by the Laplace marginal likelihood (section 4, eq. 14), jointly
            with the prior precisions; ``"augerino"``: eta by the training loss minus
            ``augerino_weight * ||eta||^2`` with a fixed weight decay (Benton et al., 2020; no
            prior precisions are learned and the MAP objective has no prior term);
            ``"none"``: eta stays at its initial value (the non-invariant baseline for eta = 0).
        n_samples: S, draws per example for the weight steps and the marginal likelihood.
        lr_eta: Adam learning rate of eta, cosine-annealed to ``lr_eta_min`` over all eta steps.
        lr_eta_min: final learning rate of eta.
        eta_burn_in: epochs before the first eta step (lila; Augerino steps from the start).
        n_eta_steps: eta steps per marginal-likelihood epoch (lila).
        eta_gradient: ``"full"``: every eta step backpropagates through one graph of the whole
            Laplace approximation (refit at the current eta; for small problems), together
            with one step on the log prior precisions; ``"stochastic"``: section 4.3, the
            preconditioner fitted once per marginal-likelihood epoch and per-step gradients
            from ``eta_batch_size`` random examples (:func:`eta_gradient`).
        eta_batch_size: M, examples per stochastic eta step (None: all N).
        augerino_weight: weight of ``-||eta||^2`` in the Augerino loss.
        augerino_weight_decay: Adam weight decay of the weights for Augerino.
        seed: seed of the augmentation draws (the minibatch order uses the MarglikConfig's).
    """

    method: InvarianceMethod = "lila"
    n_samples: int = 16
    lr_eta: float = 0.05
    lr_eta_min: float = 0.0
    eta_burn_in: int = 10
    n_eta_steps: int = 1
    eta_gradient: EtaGradient = "full"
    eta_batch_size: int | None = None
    augerino_weight: float = 1e-2
    augerino_weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice(self, "method", InvarianceMethod)
        _check_choice(self, "eta_gradient", EtaGradient)
        _check_ints(self, ("n_samples", "n_eta_steps"), minimum=1)
        _check_ints(self, ("eta_burn_in", "seed"), minimum=0)
        if self.eta_batch_size is not None and (
            isinstance(self.eta_batch_size, bool)
            or not isinstance(self.eta_batch_size, int)
            or self.eta_batch_size < 1
        ):
            raise ValueError(
                f"`eta_batch_size` must be a positive int or None, got {self.eta_batch_size!r}"
            )
        _check_floats(
            self, ("lr_eta", "augerino_weight", "augerino_weight_decay", "lr_eta_min"), zero=True
        )


@dataclass
class InvarianceResult(MarglikResult):
    """:class:`ella.marglik.MarglikResult` plus eta: ``best_eta`` (with the best state; the
    final eta when the marginal likelihood was never evaluated) and ``eta`` (final). History
    records carry ``eta/{component}`` after every epoch."""

    best_eta: list[float] | None = None
    eta: list[float] | None = None


def _eta_steps_total(config: MarglikConfig, inv: InvarianceConfig, steps_per_epoch: int) -> int:
    if inv.method == "augerino":
        return config.epochs * steps_per_epoch
    if inv.method == "none":
        return 1
    epochs = [e for e in range(1, config.epochs + 1) if config.is_marglik_epoch(e)]
    return max(1, sum(inv.n_eta_steps for e in epochs if e > inv.eta_burn_in))


def train_invariant(
    model: InvariantModel,
    train_data: tuple[Tensor, Tensor],
    config: MarglikConfig,
    invariance: InvarianceConfig,
    *,
    resume: str | Path | None = None,
) -> InvarianceResult:
    """Train an invariant model's weights, prior precisions and augmentation parameters eta.

    Weight steps are those of :func:`ella.marglik.train_marglik` on ``f_hat`` with fresh draws
    per minibatch (``invariance.n_samples`` per example), eta detached except for Augerino.
    After every marginal-likelihood epoch (``config.is_marglik_epoch``), for ``"lila"``:

    1. with ``eta_gradient="full"``, after ``invariance.eta_burn_in`` epochs,
       ``n_eta_steps`` Adam steps on eta (own optimiser and cosine schedule) with the gradient
       of ``-log p(D | delta, eta) / N``, each through a differentiable refit (also stepping
       the log precisions);
    2. the Laplace approximation is fitted at the current eta on fresh fixed draws and
       ``config.n_hyper_steps`` refit-free Adam steps are taken on the log precisions (as in
       ``train_marglik``); its ``-log p(D | delta, eta)`` after them selects the best state
       (saved with the eta it was computed at);
    3. with ``eta_gradient="stochastic"``, after the burn-in, ``n_eta_steps`` Adam steps on
       eta by section 4.3, the fit of step 2 being the preconditioner and each step's
       per-example terms coming from ``eta_batch_size`` random examples.

    ``"none"`` does step 2 only (eta frozen); ``"augerino"`` learns eta in the weight steps and
    evaluates no marginal likelihood (its result is the final state). NaN stop, checkpoints
    (including eta, its optimiser and the draws' random state), resume, tqdm and the
    best-by-marginal-likelihood state behave as in ``train_marglik``.

    Raises:
        TypeError, ValueError: for a model that is not an :class:`InvariantModel` or malformed
            data.
        NonFiniteLossError: as in ``train_marglik`` (eta is restored with the model).
    """
    if not isinstance(model, InvariantModel):
        raise TypeError(f"`model` must be an InvariantModel, got {type(model).__name__}")
    if not isinstance(invariance, InvarianceConfig):
        raise TypeError("`invariance` must be an InvarianceConfig")
    x, y = _check_data(train_data)
    n = x.shape[0]
    aug = model.augmentation
    eta = aug.eta
    learn_eta = invariance.method in ("lila", "augerino")
    if learn_eta and not eta.requires_grad:
        raise ValueError(f"method {invariance.method!r} needs an augmentation with learnable eta")
    lila = invariance.method == "lila"
    augerino = invariance.method == "augerino"
    n_hyper = config.n_marglik_epochs() * (
        config.n_hyper_steps + (invariance.n_eta_steps if lila else 0)
    )
    run = _Run(
        model,
        config,
        n,
        learn_hyper=config.learn_hyper and not augerino,
        hyper_steps=n_hyper,
        weight_decay=invariance.augerino_weight_decay if augerino else 0.0,
        log=logger,
    )
    eta_optimizer = torch.optim.Adam([eta], lr=max(invariance.lr_eta, 1e-12))
    eta_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        eta_optimizer,
        T_max=_eta_steps_total(config, invariance, run.steps_per_epoch),
        eta_min=invariance.lr_eta_min,
    )
    draws = torch.Generator().manual_seed(invariance.seed)

    def eta_list() -> list[float]:
        return [float(v) for v in eta.detach()]

    run.carry(
        stateful={"eta_optimizer": eta_optimizer, "eta_scheduler": eta_scheduler},
        tensors={"eta": eta},
        generators={"rng_draws": draws},
        settings={"invariance": invariance},
        best={"eta": eta_list},
    )
    if resume is not None:
        run.load(resume)

    def batch_loss(index: Tensor, prec: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        eps = aug.sample_eps(index.numel(), invariance.n_samples, draws)
        use = eta if augerino else eta.detach()
        out = DrawAverage.forward(model, aug.apply(x[index], eps, use))
        nll = _nll(out, y[index], config)
        if augerino:
            return nll - invariance.augerino_weight * eta.pow(2).sum(), nll
        return run.map_loss(nll, prec), nll

    def after_step() -> None:
        if augerino:
            eta_optimizer.step()
            eta_scheduler.step()
        eta.grad = None

    def fresh_draws() -> list[tuple[Tensor, ...]]:
        eps_all = aug.sample_eps(n, invariance.n_samples, draws)
        return _split(x, eps_all, y, config.batch_size)

    def eta_steps(data, epoch: int, laplace: Laplace | None = None) -> dict[str, float]:
        return _eta_steps(
            run, data, x, y, invariance, eta_optimizer, eta_scheduler, draws, epoch, laplace
        )

    bar = run.epochs(f"invariance ({invariance.method})")
    for epoch in bar:
        record = run.weight_epoch(epoch, x.device, batch_loss, leaves=[eta], after_step=after_step)
        if config.is_marglik_epoch(epoch) and not augerino:
            data = fresh_draws()
            eta_now = lila and epoch > invariance.eta_burn_in
            if eta_now and invariance.eta_gradient == "full":
                record.update(eta_steps(data, epoch))
                data = fresh_draws()
            # fitted at the current eta, without a graph
            laplace = _fit(run, data, False, epoch)
            record.update(run.hyper_steps(laplace, epoch))
            run.consider(record["neg_log_marglik"], epoch)
            if eta_now and invariance.eta_gradient == "stochastic":
                # section 4.3: the fit just made (at the updated precisions) is the
                # preconditioner of this epoch's stochastic eta steps
                record.update(eta_steps(data, epoch, laplace))
        for name, v in zip(aug.names, eta_list()):
            record[f"eta/{name}"] = v
        record["lr_eta"] = eta_scheduler.get_last_lr()[0]
        run.end_epoch(epoch, record, bar)
    return run.result(InvarianceResult)


def _fit(run: _Run, data, differentiable: bool, epoch: int) -> Laplace:
    config = run.config
    return run.fit(
        lambda: invariant_laplace(
            run.model,
            data,
            config.likelihood,
            config.structure,
            differentiable=differentiable,
            sigma=config.sigma,
            temperature=config.temperature,
        ),
        epoch,
    )


def _eta_steps(
    run: _Run,
    data,
    x,
    y,
    inv: InvarianceConfig,
    eta_optimizer,
    eta_scheduler,
    draws,
    epoch: int,
    laplace: Laplace | None,
) -> dict:
    """``n_eta_steps`` Adam steps on eta (section 4, eq. 14); ``laplace``: the fit without a
    graph on ``data`` that preconditions the stochastic steps (section 4.3)."""
    model, config, n = run.model, run.config, run.n
    aug = model.augmentation
    eta = aug.eta
    leaves = list(run.log_prec.values())
    out: dict[str, float] = {}
    if inv.eta_gradient == "stochastic":
        assert laplace is not None
        prec = {g: v.detach().exp() for g, v in run.log_prec.items()}
    for step in range(inv.n_eta_steps):
        if inv.eta_gradient == "full":
            laplace = _fit(run, data, True, epoch)
            objective = run.neg_log_marglik(laplace) / n
            if not math.isfinite(float(objective.detach())):
                run.stop(epoch, "the marginal-likelihood objective is not finite")
            wrt = [eta] + (leaves if run.learn_hyper else [])
            grads = torch.autograd.grad(objective, wrt)
            eta.grad = grads[0]
            if run.learn_hyper:
                run.step_precisions(grads[1:])
            if step == 0:
                out["neg_log_marglik_eta"] = float(objective.detach()) * n
        else:
            m = n if inv.eta_batch_size is None else min(inv.eta_batch_size, n)
            if m < n:
                index = torch.randperm(n, generator=draws)[:m].to(x.device)
                eps = torch.cat([b[1] for b in data])[index]
                subset = _split(x[index], eps, y[index], config.batch_size)
            else:
                subset = data
            grad = eta_gradient(laplace, prec, model, subset, n_total=n) / n
            if not bool(torch.isfinite(grad).all()):
                run.stop(epoch, "the eta-gradient is not finite")
            eta.grad = grad
        eta_optimizer.step()
        eta_scheduler.step()
        eta.grad = None
    return out

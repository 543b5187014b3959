"""KFAC rules for the relaxed-equivariance layers (paper 000, section 5 and appendix C).

Importing this module registers, with :func:`symdisc.curvature.register_kfac_rule`, the rules
that let :func:`symdisc.curvature.kfac` (and so ``ella.laplace.Laplace(..., "kron")``) cover

==========  =====================================================================================
layer       Kronecker block (``a`` rows: mean outer product A; ``g`` rows: summed outer product G)
==========  =====================================================================================
``FC``      like ``nn.Linear`` on the flattened input: ``a = [x.flatten(1), 1]`` (CHW + 1),
            ``g`` = output gradients flattened (C'H'W'); params ``("weight", "bias")``. Exact for
            one sample (no weight sharing).
``CONV``    expand-KFAC of a circularly padded convolution: ``a = [patch, 1]`` (C S S + 1) at
            every position the layer *outputs*, ``g`` = output gradients there (C'); params
            ``("weight", "bias")``. When the layer halves the resolution, the output is the
            polyphase component chosen per sample (:func:`~ella.layers.pooling.polyphase_pool`),
            so only the patches of the positions of that component enter A (the discarded
            positions do not influence the output and have no gradient).
``SCONV``   the CONV block projected on the basis of eq. (6) (appendix C.2): with
            ``w(c', c, s) = sum_m u(c', c, m) phi(m, s)`` the layer is linear in u with input
            ``patch (C, S S) @ phi^T -> (C M)``, so ``a = [patch @ phi^T, 1]`` (C M + 1), ``g`` as
            for CONV; params ``("u", "bias")``.
``FFC``     three blocks (appendix C.1; see :func:`_ffc_terms`): theta1 (expand over c', stored with
            the roles of A and G swapped), theta2 (expand over c), bias (exact). Exact for
            C = C' = 1 and one sample.
``SFC``     as FFC with u1, u2 projected on their bases (appendix C.2).
==========  =====================================================================================

Not covered (no Kronecker block): the lengthscales ``omega`` (SCONV) / ``omega1``, ``omega2``
(SFC) and learnable anchor positions ``z``. The GGN in them is not of the form ``A (x) G``;
``Laplace(..., "kron")`` raises for a model in which they are trainable (they lie in no block),
so freeze them (``layer.omega.requires_grad_(False)``) or use the ``full``/``diag`` structures.
The group layers have no rule here.

The rules receive the module, not the parameters passed as ``params=`` to
:func:`symdisc.curvature.kfac`: the polyphase selection of a halving CONV/SCONV, the induced
filter / basis of SCONV/SFC and the intermediate ``z`` and ``theta1`` of FFC/SFC are recomputed
from the module's *own* parameters. This is what ``Laplace`` does (it evaluates at the module's
own parameters); with other ``params`` those parts of the factors are taken at the module's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ella.layers.pooling import polyphase_pool
from ella.layers.relaxed import CONV, FC, FFC, SCONV, SFC, rbf_basis
from symdisc.curvature import KronTerms, register_kfac_rule

__all__ = ["conv_patches"]


def _with_ones(a: Tensor) -> Tensor:
    return torch.cat([a, torch.ones_like(a[:, :1])], dim=1)


def _names(module: torch.nn.Module, weight: str) -> tuple[tuple[str, ...], bool]:
    has_bias = getattr(module, "bias", None) is not None
    return ((weight, "bias") if has_bias else (weight,)), has_bias


@register_kfac_rule(FC)
def _fc_rule(module: FC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a = x.reshape(x.shape[0], -1)
    n_out = module.weight.shape[0]
    g = torch.cat([gr.reshape(-1, n_out) for gr in grads])
    names, has_bias = _names(module, "weight")
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]


def conv_patches(x: Tensor, kernel_size: int) -> Tensor:
    """Patches (B, H W, C S S) of a circularly padded S x S convolution of x (B, C, H, W), at
    every pre-pool output position in row-major order (channel-major inside a patch, like
    ``F.unfold`` and the flattening of a (C', C, S, S) weight)."""
    pad = kernel_size // 2
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="circular")
    return F.unfold(x, kernel_size).transpose(1, 2)  # (B, H W, C S S)


def _selected(patches: Tensor, size: int, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The patches (B, size/2 * size/2, D) of the polyphase component the layer outputs.

    The pre-pool output ``patches @ weight^T + bias`` is recomputed (the bias changes the
    l-infinity norms, so it is included) and :func:`polyphase_pool` chooses the component per
    sample, exactly as in the forward pass.
    """
    b, _, d = patches.shape
    with torch.no_grad():
        pre = patches @ weight.reshape(weight.shape[0], -1).T  # (B, H W, C')
        if bias is not None:
            pre = pre + bias
        pre = pre.transpose(1, 2).reshape(b, -1, size, size)
        _, index = polyphase_pool(pre, return_index=True)  # (B,)
    grid = patches.transpose(1, 2).reshape(b, d, size, size)
    comps = torch.stack([grid[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)], dim=1)
    h2 = size // 2
    chosen = comps.gather(1, index.view(b, 1, 1, 1, 1).expand(b, 1, d, h2, h2)).squeeze(1)
    return chosen.flatten(2).transpose(1, 2)  # (B, h2 * h2, D)


def _conv_like(
    module: CONV | SCONV, x: Tensor, grads: Sequence[Tensor], weight: Tensor
) -> tuple[Tensor, Tensor]:
    """(patch rows at the output positions (R, C S S), output-gradient rows (R', C'))."""
    patches = conv_patches(x, module.kernel_size)
    if module.halves:
        bias = module.bias.detach() if module.bias is not None else None
        patches = _selected(patches, module.in_size, weight.detach(), bias)
    a = patches.reshape(-1, patches.shape[-1])
    c_out = module.out_channels
    g = torch.cat([gr.flatten(2).transpose(1, 2).reshape(-1, c_out) for gr in grads])
    return a, g


@register_kfac_rule(CONV)
def _conv_rule(module: CONV, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a, g = _conv_like(module, x, grads, module.weight)
    names, has_bias = _names(module, "weight")
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]


@register_kfac_rule(SCONV)
def _sconv_rule(module: SCONV, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    with torch.no_grad():
        weight = module.filter()
        phi = rbf_basis(module.points, module.z, module.omega)  # (M, S S)
    a, g = _conv_like(module, x, grads, weight)
    c = module.in_channels
    phi = phi.to(a.dtype)
    a_u = (a.reshape(a.shape[0], c, -1) @ phi.T).reshape(a.shape[0], -1)  # (R, C M)
    names, has_bias = _names(module, "u")
    return [KronTerms(names, _with_ones(a_u) if has_bias else a_u, g, has_bias)]


def _ffc_terms(
    module: FFC, x: Tensor, grads: Sequence[Tensor], phi1: Tensor | None, phi2: Tensor | None
) -> list[KronTerms]:
    """Blocks of theta1 (or u1), theta2 (or u2) and the bias of an F-FC (S-FC) layer.

    With ``z(c', c) = sum_q theta2(c', c, q) x(c, q)`` and ``y(c', p) = sum_c theta1(c', c, p)
    z(c', c) + b(c')`` (eq. 5; appendix C.1):

    * theta2, flattened row-major to (C', C H W), maps the block-expanded input
      ``a_c = e_c (x) x(c, :)`` (C H W) to ``z(:, c)``: expand-KFAC over c, with
      ``g_c = dz(:, c) = sum_p theta1(:, c, p) dy(:, p)`` (C'). Exact for C = 1 and one sample.
    * theta1 maps ``a_c' = e_c' (x) z(c', :)`` (C' C) to ``y(c', :)`` with ``g_c' = dy(c', :)``
      (H'W'), expand-KFAC over c'. Its row-major flattening is (C' C, H'W'), the transpose of the
      (d_G, d_A) layout of :class:`~symdisc.curvature.KronTerms`, so the roles are swapped: the
      term's ``g`` rows are the inputs ``a_c'`` and its ``a`` rows the output gradients, times
      sqrt(K) (K output-Hessian columns) so that the mean over the K times more rows gives the
      right scale. The returned ``KronFactors.A`` of this block is then the *output* factor
      (H'W') and ``G`` the input factor (C' C) -- the product (and its eigenvalues) is right.
      Exact for C' = 1 and one sample.
    * the bias (C',) is a (C', 1) weight with input 1 and ``g = sum_p dy(:, p)``: exact per
      sample.

    For S-FC (``phi1`` (M1, H'W'), ``phi2`` (M2, H W)), u2 takes the input ``x(c, :) @ phi2^T``
    and u1 the output gradients ``dy(c', :) @ phi1^T`` (appendix C.2). The factors read the
    module's own theta1 / theta2 (see the module docstring on ``params=``).
    """
    theta1, theta2 = (t.detach() for t in module.factors())
    b, c, c_out = x.shape[0], module.in_channels, module.out_channels
    xf = x.reshape(b, c, -1)  # (B, C, H W)
    t1 = theta1.reshape(c_out, c, -1)  # (C', C, H'W')
    z = torch.einsum("bcq,ocq->boc", xf, theta2.reshape(c_out, c, -1))  # (B, C', C)
    dys = [gr.reshape(b, c_out, -1) for gr in grads]  # (B, C', H'W') each
    k = len(dys)

    x_in = xf if phi2 is None else xf @ phi2.T  # (B, C, D2)
    eye_c = torch.eye(c, dtype=x.dtype, device=x.device)
    a2 = torch.einsum("cd,bcq->bcdq", eye_c, x_in).reshape(b * c, -1)  # (B C, C D2)
    g2 = torch.cat([torch.einsum("bop,ocp->bco", dy, t1).reshape(b * c, c_out) for dy in dys])

    eye_o = torch.eye(c_out, dtype=x.dtype, device=x.device)
    a1 = torch.einsum("oe,boc->boec", eye_o, z).reshape(b * c_out, c_out * c)  # (B C', C' C)
    g1 = torch.cat([(dy if phi1 is None else dy @ phi1.T).reshape(b * c_out, -1) for dy in dys])

    name1, name2 = ("theta1", "theta2") if phi1 is None else ("u1", "u2")
    terms = [
        KronTerms((name1,), a=math.sqrt(k) * g1, g=a1, bias=False),
        KronTerms((name2,), a=a2, g=g2, bias=False),
    ]
    if module.bias is not None:
        ones = torch.ones(b, 1, dtype=x.dtype, device=x.device)
        terms.append(
            KronTerms(("bias",), a=ones, g=torch.cat([dy.sum(-1) for dy in dys]), bias=False)
        )
    return terms


@register_kfac_rule(FFC)
def _ffc_rule(module: FFC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    return _ffc_terms(module, x, grads, None, None)


@register_kfac_rule(SFC)
def _sfc_rule(module: SFC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    with torch.no_grad():
        phi1 = rbf_basis(module.points1, module.z1, module.omega1).to(x.dtype)
        phi2 = rbf_basis(module.points2, module.z2, module.omega2).to(x.dtype)
    return _ffc_terms(module, x, grads, phi1, phi2)

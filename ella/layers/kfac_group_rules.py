"""KFAC rules for the relaxed group convolutions of paper 003 ("Relaxed G-CNN"): the C4 layers of
:mod:`ella.layers.relaxed_group` and the octahedral layers of :mod:`ella.layers.octahedral`,
relaxed and tied (issue 16: the relaxation learned by the marginal likelihood of paper 000,
section 4; KFAC as in paper 000, appendix C).

Importing this module (``ella.layers.kfac_rules`` does) registers, with
:func:`symdisc.curvature.register_kfac_rule`, one rule for each of ``RelaxedLiftingConv``,
``RelaxedGroupConv``, ``OctahedralLiftingConv`` and ``OctahedralGroupConv``:

=========================  ======================================================================
block                      Kronecker block
=========================  ======================================================================
``("weight", "bias")``     expand-KFAC over the shared (group element g, position p) pairs. For
                           fixed combination weights ``w_l(h) = relaxed_weights[l] +
                           relaxation[l, h]`` the layer is linear in its filter banks:
                           ``out(c', g, p) = sum_l <psi_l(c'), a_{l,g,p}> + b(c')`` with
                           ``a_{l,g,p}`` the input patch transformed by g^-1 and re-weighted by
                           w_l (:func:`relaxed_group_patches`). ``a = [a_{1,g,p}, ...,
                           a_{L,g,p}, 1]`` (L D + 1; D = C k^n for a lifting, C |G| k^n for a
                           group convolution), ``g`` = output gradients at (g, p) (C'). The
                           block is in the order (c', l, d) of ``weight.transpose(0, 1)``
                           (``weight`` is stored (L, C', ...)); the Laplace approximation only
                           needs its eigenvalues, so the order is immaterial there. Exact for
                           one sample when every pair has the same row and the loss reads one
                           pair: a map of one position (1 x 1 (x 1)) constant over the group,
                           and combination weights constant over the group (``relaxation``
                           constant over h, as at initialisation).
``("relaxed_weights",)``   the exact GGN block (L x L), written ``a = [1]`` per sample and ``g``
                           the per-sample Jacobian-vector rows ``J_n^T dy_nk`` (as the scalar
                           rules of :mod:`ella.layers.fixup`): exact for any number of samples.
``("relaxation",)``        the exact GGN block (L |G| x L |G|), likewise (only untied layers).
=========================  ======================================================================

The combination-weight rows. ``out`` is linear in the weights ``w (L, |G|)``; with ``u`` the
un-weighted patches (:func:`relaxed_group_patches` with ``weighted=False``), the derivative of
``<dy, out>`` in ``w_l(h)`` is

* lifting (``w_l(r)`` weighs the output rotation r):
  ``sum_{c', p} dy(c', h, p) <psi_l(c'), u_{h,p}>``;
* group (``w_l(h)`` weighs the input element h = g s, s the relative element of the filter):
  ``sum_{c', g, p} sum_{s: g s = h} sum_{c, e} dy(c', g, p) psi_l(c', c, s, e) u_{g,p}(c, s, e)``,

and since ``w_l(h) = relaxed_weights[l] + relaxation[l, h]`` the rows are that derivative
(relaxation, flattened (l, h) row-major) and its sum over h (relaxed_weights). The three blocks
are separate (their cross terms are dropped, as between any two KFAC blocks); ``weight``,
``relaxed_weights`` and ``bias`` share the prior group ``"{layer}:gconv"`` and ``relaxation`` has
its own, ``"{layer}:relaxation"`` (:func:`ella.layers.relaxed_group.prior_paths`), so that every
block lies in one group, as ``Laplace(..., "kron")`` requires.

The rules read the module's own parameters (the patches are re-weighted by the module's current
combination weights and contracted with its filter banks), as ``Laplace`` evaluates them.

Cost per sample and output-Hessian column: the patches of a group convolution hold |G|^2 C k^n
numbers per position (octahedral: 576 C k^3); they are formed once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.layers._base import GROUP_ORDER, circular_pad
from ella.layers.group import rotate_p4
from ella.layers.octahedral import (
    OCTAHEDRAL_INVERSE,
    OCTAHEDRAL_ORDER,
    OCTAHEDRAL_PRODUCT,
    OctahedralGroupConv,
    OctahedralLiftingConv,
    _rotate,
)
from ella.layers.relaxed_group import RelaxedGroupConv, RelaxedLiftingConv
from symdisc.curvature import KronTerms, register_kfac_rule

__all__ = ["relaxed_group_patches", "combination_gradients"]

RelaxedGroupLayer = (
    RelaxedLiftingConv | RelaxedGroupConv | OctahedralLiftingConv | OctahedralGroupConv
)


def _order(module: nn.Module) -> int:
    return (
        OCTAHEDRAL_ORDER
        if isinstance(module, (OctahedralLiftingConv, OctahedralGroupConv))
        else GROUP_ORDER
    )


def _is_group(module: nn.Module) -> bool:
    return isinstance(module, (RelaxedGroupConv, OctahedralGroupConv))


def _product(module: nn.Module, device: torch.device) -> Tensor:
    """``(|G|, |G|)`` Cayley table ``[g, s]`` = index of ``g s``."""
    if isinstance(module, OctahedralGroupConv):
        return OCTAHEDRAL_PRODUCT.to(device)
    r = torch.arange(GROUP_ORDER, device=device)
    return (r[:, None] + r[None, :]) % GROUP_ORDER


def _c4_lifting_patches(x: Tensor, k: int) -> Tensor:
    """(B, C, S S, 4, H W): ``u[:, c, d, r, p]`` is the patch of ``R^{-r} x`` at ``R^{-r} p``,
    lined up with output (r, p) (as :func:`ella.layers.kfac_rules.p4_patches`)."""
    b, c, h, w = x.shape
    maps = []
    for r in range(GROUP_ORDER):
        u = circular_pad(torch.rot90(x, -r, dims=(-2, -1)), k)
        patch = F.unfold(u, k).reshape(b, c * k * k, u.shape[-2] - k + 1, u.shape[-1] - k + 1)
        maps.append(torch.rot90(patch, r, dims=(-2, -1)))
    return torch.stack(maps, dim=2).reshape(b, c, k * k, GROUP_ORDER, h * w)


def _c4_group_patches(x: Tensor, k: int) -> Tensor:
    """(B, C, 4 [s], S S, 4 [r'], H W): ``u[:, c, s, d, r', p]`` is the patch of
    ``rotate_p4(x, -r')`` (rotation slot s holding input rotation r' + s) at ``R^{-r'} p``."""
    b, c, n, h, w = x.shape
    maps = []
    for r in range(GROUP_ORDER):
        u = circular_pad(rotate_p4(x, -r).flatten(1, 2), k)
        patch = F.unfold(u, k).reshape(b, c * n * k * k, u.shape[-2] - k + 1, u.shape[-1] - k + 1)
        maps.append(torch.rot90(patch, r, dims=(-2, -1)))
    return torch.stack(maps, dim=2).reshape(b, c, n, k * k, GROUP_ORDER, h * w)


def _volume_patches(x: Tensor, k: int) -> Tensor:
    """Zero-padded k^3 patches of ``x`` (..., D, H, W) as (..., D, H, W, k, k, k)."""
    pad = k // 2
    u = F.pad(x, (pad,) * 6)
    return u.unfold(-3, k, 1).unfold(-3, k, 1).unfold(-3, k, 1)


def _o_lifting_patches(x: Tensor, k: int) -> Tensor:
    """(B, C, k^3, 24, D H W): ``u[:, c, e, r, p] = x(c, p + R_r e)``, the patch at p rotated
    by r^-1 (``(R_r psi)(d) = psi(R_r^-1 d)``, so ``sum_d x(p + d) (R_r psi)(d) =
    sum_e x(p + R_r e) psi(e)``)."""
    b, c = x.shape[:2]
    patches = _volume_patches(x, k).flatten(2, 4)  # (B, C, P, k, k, k)
    rotated = [_rotate(patches, int(OCTAHEDRAL_INVERSE[r])) for r in range(OCTAHEDRAL_ORDER)]
    return torch.stack(rotated, dim=2).flatten(-3).permute(0, 1, 4, 2, 3)  # (B, C, E, 24, P)


def _o_group_patches(x: Tensor, k: int) -> Tensor:
    """(B, C, 24 [s], k^3, 24 [r'], D H W): ``u[:, c, s, e, r', p] = x(c, r' s, p + R_{r'} e)``
    (the group convolution ``sum_{c, r, d} x(c, r, p + d) psi(c, r'^-1 r, R_{r'}^-1 d)`` with
    ``r = r' s``, ``d = R_{r'} e``)."""
    patches = _volume_patches(x, k).flatten(3, 5)  # (B, C, 24 [t], P, k, k, k)
    out = []
    for r in range(OCTAHEDRAL_ORDER):
        sel = patches.index_select(2, OCTAHEDRAL_PRODUCT[r].to(x.device))  # t = r s
        out.append(_rotate(sel, int(OCTAHEDRAL_INVERSE[r])).flatten(-3))  # (B, C, 24, P, E)
    return torch.stack(out, dim=3).permute(0, 1, 2, 5, 3, 4)  # (B, C, 24, E, 24, P)


def _unweighted(module: RelaxedGroupLayer, x: Tensor) -> Tensor:
    k = module.kernel_size
    if isinstance(module, RelaxedLiftingConv):
        return _c4_lifting_patches(x, k)
    if isinstance(module, RelaxedGroupConv):
        return _c4_group_patches(x, k)
    if isinstance(module, OctahedralLiftingConv):
        return _o_lifting_patches(x, k)
    if isinstance(module, OctahedralGroupConv):
        return _o_group_patches(x, k)
    raise TypeError(
        "`module` must be a RelaxedLiftingConv, RelaxedGroupConv, OctahedralLiftingConv or "
        f"OctahedralGroupConv, got {type(module).__name__}"
    )


def _bank_factors(module: RelaxedGroupLayer, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The combination weight of every patch entry: lifting ``(L, |G| [r])`` = ``w_l(r)``;
    group ``(L, |G| [g], |G| [s])`` = ``w_l(g s)``. Detached, from the module's parameters."""
    w = module.combination_weights().detach().to(dtype)
    if not _is_group(module):
        return w
    return w[:, _product(module, device)]


def _weighted(module: RelaxedGroupLayer, u: Tensor) -> Tensor:
    """The KFAC input rows ``(B, |G|, P, L D)`` from the un-weighted patches ``u``."""
    w = _bank_factors(module, u.dtype, u.device)
    if _is_group(module):  # u (B, C, S, E, G, P), w (L, G, S)
        a = torch.einsum("bcsegp,lgs->bgplcse", u, w)
    else:  # u (B, C, E, G, P), w (L, G)
        a = torch.einsum("bcegp,lg->bgplce", u, w)
    return a.reshape(*a.shape[:3], -1)


def relaxed_group_patches(module: RelaxedGroupLayer, x: Tensor, weighted: bool = True) -> Tensor:
    """The transformed input patches of a relaxed group convolution, lined up with its output.

    Args:
        module: a :class:`~ella.layers.RelaxedLiftingConv`, :class:`~ella.layers.
            RelaxedGroupConv`, :class:`~ella.layers.OctahedralLiftingConv` or
            :class:`~ella.layers.OctahedralGroupConv` (relaxed or tied).
        x: its input: ``(B, C, H, W)``, ``(B, C, 4, H, W)``, ``(B, C, D, H, W)`` or
            ``(B, C, 24, D, H, W)``.
        weighted: re-weight the patches by the module's combination weights (the ``a`` rows
            of KFAC), or not (``u``, shared by the banks).

    Returns:
        weighted: ``(B, |G|, P, L D)`` with ``out(c', g, p) = sum_l <weight[l, c'].flatten(),
        a[:, g, p, l D:(l + 1) D]> + bias[c']`` (P positions in row-major order);
        not weighted: lifting ``(B, C, E, |G| [g], P)``, group ``(B, C, |G| [s], E, |G| [g], P)``
        (E = k^n entries of a filter; s the relative element, the filter's group axis).

    Raises:
        TypeError: for another module type.
    """
    u = _unweighted(module, x)
    return _weighted(module, u) if weighted else u


def combination_gradients(
    module: RelaxedGroupLayer, x: Tensor, grads: Sequence[Tensor], patches: Tensor | None = None
) -> Tensor:
    """Per-sample, per-column gradients ``(K, B, L, |G|)`` of ``<dy_k, out_n>`` in the
    combination weights ``w_l(h)``, for output cotangents ``grads`` (K tensors shaped like the
    output); the module docstring derives them.

    ``patches``: the un-weighted patches of :func:`relaxed_group_patches` (computed if None).
    """
    u = _unweighted(module, x) if patches is None else patches
    b, n_out, n = x.shape[0], module.out_channels, _order(module)
    dy = torch.stack([gr.reshape(b, n_out, n, -1) for gr in grads]).to(u.dtype)  # (K,B,C',G,P)
    psi = module.weight.detach().to(u.dtype)
    if not _is_group(module):  # psi (L, C', C, *k), u (B, C, E, G, P)
        m = torch.einsum("kbogp,bcegp->kbogce", dy, u)
        return torch.einsum("kbogce,loce->kblg", m, psi.flatten(3))
    # psi (L, C', C, S, *k), u (B, C, S, E, G, P): v(l, g, s) is the derivative in w_l(g s)
    m = torch.einsum("kbogp,bcsegp->kbogcse", dy, u)
    v = torch.einsum("kbogcse,locse->kblgs", m, psi.flatten(4))
    prod = _product(module, u.device)
    onehot = (prod[:, :, None] == torch.arange(n, device=u.device)).to(u.dtype)  # (G, S, H)
    return torch.einsum("kblgs,gsh->kblh", v, onehot)


@register_kfac_rule(RelaxedLiftingConv)
@register_kfac_rule(RelaxedGroupConv)
@register_kfac_rule(OctahedralLiftingConv)
@register_kfac_rule(OctahedralGroupConv)
def _relaxed_group_rule(
    module: RelaxedGroupLayer, x: Tensor, grads: Sequence[Tensor]
) -> list[KronTerms]:
    u = _unweighted(module, x)
    a = _weighted(module, u)
    a = a.reshape(-1, a.shape[-1])  # (B |G| P, L D)
    b, n_out = x.shape[0], module.out_channels
    g = torch.cat([gr.reshape(b, n_out, -1).transpose(1, 2).reshape(-1, n_out) for gr in grads])
    has_bias = module.bias is not None
    if has_bias:
        a = torch.cat([a, torch.ones_like(a[:, :1])], dim=1)
    terms = [KronTerms(("weight", "bias") if has_bias else ("weight",), a, g.to(a.dtype), has_bias)]
    gw = combination_gradients(module, x, grads, u)  # (K, B, L, |G|)
    ones = torch.ones(b, 1, dtype=u.dtype, device=u.device)
    if module.relaxed_weights.requires_grad:
        terms.append(KronTerms(("relaxed_weights",), ones, gw.sum(-1).flatten(0, 1), False))
    if module.relaxation is not None and module.relaxation.requires_grad:
        terms.append(KronTerms(("relaxation",), ones, gw.flatten(0, 1).flatten(1), False))
    return terms

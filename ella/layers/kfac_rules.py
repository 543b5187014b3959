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
            for CONV; params ``("u", "bias")`` (prior on the anchors). Prior on the weights: the
            same with the orthonormal basis Psi in place of phi (u holds theta's coordinates in
            it). Prior on the lengthscales: the exact blocks of omega and learnable z below.
``FFC``     three blocks (appendix C.1; see :func:`_ffc_terms`): theta1 (expand over c', stored with
            the roles of A and G swapped), theta2 (expand over c), bias (exact). Exact for
            C = C' = 1 and one sample.
``SFC``     as FFC with u1, u2 projected on their bases (appendix C.2; phi, or Psi for the prior
            on the weights), or, prior on the lengthscales, the exact blocks of omega1, omega2
            and learnable z1, z2 below.
==========  =====================================================================================

and the layers on p4 feature maps (B, C, 4, H, W) of :mod:`ella.layers.group` and
:mod:`ella.layers.group_paths` (the ``neyshabur`` variants "gconv", "pointwise_gconv", "gffc",
"ffc+conv+gconv"; appendices A, B and F.3):

======================  =========================================================================
layer                   Kronecker block
======================  =========================================================================
``LiftingConv``,        expand-KFAC with the (rotation r, position p) pairs as shared positions.
``GroupConv``,          The layer is linear in its base filter w: ``out(c', r, p) = <w(c'),
``PointwiseGroupConv``  a_{r,p}> + b(c')``, with ``a_{r,p}`` the patch at ``R^{-r} p`` of the
(GCONV)                 input transformed by the inverse of r (:func:`p4_patches`; lifting:
                        ``R^{-r} x``; group: ``rotate_p4(x, -r)``, rotated and shifted by -r on the
                        rotation axis; pointwise: ``R^{-r} x(:, r)``). ``a = [a_{r,p}, 1]``
                        (C S S + 1, group: C 4 S S + 1), ``g`` = output gradients at (r, p) (C');
                        params ``("weight", "bias")`` (the bias is shared over r and p). Exact for
                        one sample when every pair has the same patch (a 1 x 1 map constant over
                        the rotations) and the loss reads one pair.
``FoldedConv`` (CONV    the CONV block of a planar convolution over the (C 4) folded channels:
path on the group)      ``a = [patch, 1]`` (C 4 S S + 1), ``g`` (C' 4); params
                        ``("weight", "bias")``.
``GroupFC``             like FC on the flattened (C 4 H W) input; exact for one sample.
``GroupFFC``            the theta1 / theta2 blocks of FFC with Q = 4 H W, P = 4 H'W'; its bias
                        has one entry per output (C' 4 H'W'): a (C' 4 H'W', 1) weight on the input
                        1, exact per sample. Exact for C = C' = 1 and one sample.
======================  =========================================================================

and the relaxed group convolutions of paper 003 (:mod:`ella.layers.relaxed_group`,
:mod:`ella.layers.octahedral`; rules in :mod:`ella.layers.kfac_group_rules`, registered when this
module is imported):

======================  =========================================================================
layer                   Kronecker blocks
======================  =========================================================================
``RelaxedLiftingConv``, ``("weight", "bias")``: expand-KFAC over the (group element g, position p)
``RelaxedGroupConv``,   pairs with ``a = [a_{1,g,p}, ..., a_{L,g,p}, 1]`` (L D + 1), ``a_{l,g,p}``
``OctahedralLifting     the patch transformed by g^-1 and re-weighted by the combination weights
Conv``,                 ``w_l(h) = relaxed_weights[l] + relaxation[l, h]``; ``g`` = output
``OctahedralGroupConv`` gradients at (g, p) (C'); block order (c', l, d). Exact for one sample on
(relaxed or tied)       one position constant over the group, w constant over h, one pair read.
                        ``("relaxed_weights",)`` (L) and ``("relaxation",)`` (L |G|, untied
                        only): exact GGN blocks, ``a = [1]``, ``g`` the per-sample Jacobian rows.
======================  =========================================================================

GroupFC and GroupFFC are the *unconstrained* FC / F-FC paths on the group (not equivariant, no
weights shared over orbits), so their blocks are those of FC / FFC on the flattened group map.

The group modules do not subsample: their wrappers (``GroupPath``, ``GroupPathSum``)
polyphase-pool their output (or the sum of all pooled paths) per sample, and the rules are
registered on the modules that own the parameters (a rule on the wrapper as well would count
them twice). Such a rule sees the output gradients before the pooling; they vanish exactly on the
three discarded components, so it keeps the (rotation, position) pairs of the component that has
gradients, as CONV keeps its polyphase component (:func:`_read_component`). A module whose output
is read everywhere has gradients on all four components and keeps every pair. The one misreading:
an output that is read everywhere but whose gradients vanish exactly (every channel, rotation and
output-Hessian column) on three components of every sample would count as pooled.

Lengthscales and anchor positions (S-CONV, S-FC with ``prior_on="lengthscales"``). The induced
weights ``theta(c', c, q) = sum_j u(c', c, j) phi(j, q)`` depend on omega_j and z_j only through
row j of phi, and the layer is linear in theta. For one sample n and one column lambda_k of the
output-Hessian root, ``gtheta_nk`` (C', C, K) is the per-sample weight gradient that KFAC's
factors are built from (CONV: ``sum_p dy_nk(:, p) (x) patch_n(p)``; F-FC: ``dy (x) z`` for
theta1, ``dz (x) x`` for theta2), and the chain rule gives the Jacobian-vector row

    g_nk(omega_j) = sum_q [sum_{c', c} gtheta_nk(c', c, q) u(c', c, j)] dphi(j, q)/domega_j

(z_{j,e} likewise with dphi(j, q)/dz_{j,e} = 2 omega_j^2 (p_q - z_j)_e phi(j, q);
dphi/domega_j = -2 omega_j |p_q - z_j|^2 phi(j, q)). The block of omega (M,) is then the exact
GGN block ``sum_n J_n^T Lambda_n J_n = sum_{n,k} g_nk g_nk^T`` -- a full M x M matrix, written
as a Kronecker block with ``A = [1]`` (rows ``a = 1``) and ``G = sum g g^T``, exact for any
number of samples (no Kronecker approximation; M is at most the domain size H W). omega1,
omega2, z1, z2 are separate blocks (their cross terms are dropped, as between any two KFAC
blocks). No extra backward pass; S-CONV forms its per-sample filter gradients (B K C' C S S),
S-FC never forms its own (outer products, contracted with u and the basis derivatives first:
O(B K (C' P + C Q) M)).

With the prior on the anchors or the weights, omega and learnable z are point estimates outside
the posterior, and with the prior on the lengthscales u and the bias are
(:meth:`~ella.layers.SFC.prior_parameters`, :func:`ella.laplace.posterior_parameters`): a rule
emits blocks for the posterior's parameters only, which is what ``Laplace(..., "kron")`` needs.

The rules receive the module, not the parameters passed as ``params=`` to
:func:`symdisc.curvature.kfac`: the polyphase selection of a halving CONV/SCONV, the induced
filter / basis (and its derivatives) of SCONV/SFC and the intermediate ``z`` and ``theta1`` of
FFC/SFC/GroupFFC are recomputed from the module's *own* parameters (so is the fallback
component of a group layer, :func:`_read_component`). This is what ``Laplace`` does (it
evaluates at the module's own parameters); with other ``params`` those parts of the factors
are taken at the module's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.layers._base import GROUP_ORDER, circular_pad
from ella.layers.group import (
    GroupConv,
    GroupFC,
    GroupFFC,
    LiftingConv,
    PointwiseGroupConv,
    rotate_p4,
)
from ella.layers.group_paths import FoldedConv
from ella.layers.pooling import Subsampling, polyphase_pool, subsample
from ella.layers.relaxed import CONV, FC, FFC, SCONV, SFC, rbf_basis_derivatives
from symdisc.curvature import KronTerms, register_kfac_rule

__all__ = ["conv_patches", "p4_patches"]


def _with_ones(a: Tensor) -> Tensor:
    return torch.cat([a, torch.ones_like(a[:, :1])], dim=1)


def _linear_terms(module: nn.Module, weight: str, a: Tensor, g: Tensor) -> list[KronTerms]:
    """The block of a layer linear in ``weight`` (and its bias, if any) with input rows ``a``
    (R, D) and output-gradient rows ``g`` (R', C'): ``a`` gets a column of ones for the bias."""
    has_bias = getattr(module, "bias", None) is not None
    names = (weight, "bias") if has_bias else (weight,)
    return [KronTerms(names, _with_ones(a) if has_bias else a, g, has_bias)]


@register_kfac_rule(FC)
def _fc_rule(module: FC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a = x.reshape(x.shape[0], -1)
    n_out = module.weight.shape[0]
    g = torch.cat([gr.reshape(-1, n_out) for gr in grads])
    return _linear_terms(module, "weight", a, g)


def conv_patches(x: Tensor, kernel_size: int) -> Tensor:
    """Patches (B, H W, C S S) of a circularly padded S x S convolution of x (B, C, H, W), at
    every pre-pool output position in row-major order (channel-major inside a patch, like
    ``F.unfold`` and the flattening of a (C', C, S, S) weight)."""
    return F.unfold(circular_pad(x, kernel_size), kernel_size).transpose(1, 2)  # (B, H W, C S S)


def _selected(
    patches: Tensor, size: int, weight: Tensor, bias: Tensor | None, mode: Subsampling
) -> Tensor:
    """The patches (B, size/2 * size/2, D) of the polyphase component the layer outputs.

    The pre-pool output ``patches @ weight^T + bias`` is recomputed (the bias changes the
    l-infinity norms, so it is included) and :func:`subsample` chooses the component per
    sample in the layer's ``mode``, exactly as in the forward pass.
    """
    b, _, d = patches.shape
    with torch.no_grad():
        pre = patches @ weight.reshape(weight.shape[0], -1).T  # (B, H W, C')
        if bias is not None:
            pre = pre + bias
        pre = pre.transpose(1, 2).reshape(b, -1, size, size)
        _, index = subsample(pre, mode, return_index=True)  # (B,)
    chosen = _component(patches.transpose(1, 2).reshape(b, d, size, size), index)
    return chosen.flatten(2).transpose(1, 2)  # (B, size/2 * size/2, D)


def _conv_like(
    module: CONV | SCONV, x: Tensor, grads: Sequence[Tensor], weight: Tensor
) -> tuple[Tensor, Tensor]:
    """(patch rows at the output positions (R, C S S), output-gradient rows (R', C'))."""
    patches = conv_patches(x, module.kernel_size)
    if module.halves:
        bias = module.bias.detach() if module.bias is not None else None
        patches = _selected(patches, module.in_size, weight.detach(), bias, module.subsampling)
    a = patches.reshape(-1, patches.shape[-1])
    c_out = module.out_channels
    g = torch.cat([gr.flatten(2).transpose(1, 2).reshape(-1, c_out) for gr in grads])
    return a, g


@register_kfac_rule(CONV)
def _conv_rule(module: CONV, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a, g = _conv_like(module, x, grads, module.weight)
    return _linear_terms(module, "weight", a, g)


@register_kfac_rule(SCONV)
def _sconv_rule(module: SCONV, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    with torch.no_grad():
        weight = module.filter()
        basis = module.basis()  # (M, S S): phi, or Psi when the prior is on the weights
    a, g = _conv_like(module, x, grads, weight)
    basis = basis.to(a.dtype)
    c = module.in_channels
    if module.prior_target != "lengthscales":
        a_u = (a.reshape(a.shape[0], c, -1) @ basis.T).reshape(a.shape[0], -1)  # (R, C M)
        return _linear_terms(module, "u", a_u, g)
    # per-sample, per-column gradients of the induced filter (K B, C', C, S S): small (S S)
    b, k = x.shape[0], len(grads)
    a_b = a.reshape(b, -1, a.shape[-1])  # (B, P, C S S)
    g_b = g.reshape(k, b, -1, g.shape[-1])  # (K, B, P, C')
    grad_w = torch.einsum("kbpo,bpd->kbod", g_b, a_b).flatten(0, 1)
    grad_w = grad_w.reshape(k * b, module.out_channels, c, -1)
    u = module.u.detach().to(a.dtype)
    v = torch.einsum("rocq,ocj->rjq", grad_w, u)  # (K B, M, S S)
    return _basis_terms(module, "", lambda d: torch.einsum("rjq,jeq->rje", v, d), x)


def _basis_terms(
    module: SCONV | SFC, domain: str, rows: Callable[[Tensor], Tensor], x: Tensor
) -> list[KronTerms]:
    """Exact GGN blocks of the lengthscales ``omega<domain>`` (M,) and, when they are trainable
    parameters, the positions ``z<domain>`` (M, 2) of one basis of eq. (6) (the prior on the
    lengthscales; the module docstring derives them).

    ``rows(D)`` maps derivatives ``D`` (M, E, K) of the basis, ``D(j, e, q) = dphi(j, q) /
    dparam(j, e)`` (:func:`~ella.layers.relaxed.rbf_basis_derivatives`; E = 1 for omega, 2 for
    z), to the R = K_cols B rows (R, M, E)

        g_r(j, e) = sum_{c', c, q} gtheta_r(c', c, q) u(c', c, j) D(j, e, q)

    with ``gtheta_r`` the per-sample, per-output-Hessian-column gradient of the induced weights
    ``theta = u @ phi`` (each layer contracts it in its cheapest order). Each block is ``a = [1]``
    per sample (A = 1) and ``g = g_r`` flattened (G = sum_r g_r g_r^T). Only parameters that
    require a gradient get a block.
    """
    omega = getattr(module, f"omega{domain}")
    z = getattr(module, f"z{domain}")
    points = getattr(module, f"points{domain}")
    with torch.no_grad():
        d_omega, d_z = rbf_basis_derivatives(points, z, omega)
    ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    terms = []
    if omega.requires_grad:
        g_omega = rows(d_omega.to(x.dtype)[:, None, :]).flatten(1)  # (R, M)
        terms.append(KronTerms((f"omega{domain}",), a=ones, g=g_omega, bias=False))
    if isinstance(z, nn.Parameter) and z.requires_grad:
        g_z = rows(d_z.to(x.dtype)).flatten(1)  # (R, 2 M), z's row-major order
        terms.append(KronTerms((f"z{domain}",), a=ones, g=g_z, bias=False))
    return terms


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
    b = x.shape[0]
    dys = [gr.reshape(b, module.out_channels, -1) for gr in grads]  # (B, C', H'W') each
    names = ("theta1", "theta2") if phi1 is None else ("u1", "u2")
    terms = _factored_terms(x, theta1, theta2, dys, phi1, phi2, names)
    if module.bias is not None:
        ones = torch.ones(b, 1, dtype=x.dtype, device=x.device)
        terms.append(
            KronTerms(("bias",), a=ones, g=torch.cat([dy.sum(-1) for dy in dys]), bias=False)
        )
    return terms


def _factored_terms(
    x: Tensor,
    theta1: Tensor,
    theta2: Tensor,
    dys: Sequence[Tensor],
    phi1: Tensor | None,
    phi2: Tensor | None,
    names: tuple[str, str],
) -> list[KronTerms]:
    """The theta1 and theta2 blocks of a factored FC map (see :func:`_ffc_terms`).

    ``x`` (B, C, ...) is flattened to (B, C, Q), ``theta1`` (C', C, ...) to (C', C, P),
    ``theta2`` (C', C, ...) to (C', C, Q); ``dys`` are the output gradients (B, C', P), one per
    output-Hessian column. Shared by F-FC / S-FC (Q = H W, P = H'W') and the F-FC on the group,
    :class:`~ella.layers.group.GroupFFC` (Q = 4 H W, P = 4 H'W').
    """
    b, c_out, c = x.shape[0], theta1.shape[0], theta1.shape[1]
    xf = x.reshape(b, c, -1)  # (B, C, Q)
    t1 = theta1.reshape(c_out, c, -1)  # (C', C, P)
    z = torch.einsum("bcq,ocq->boc", xf, theta2.reshape(c_out, c, -1))  # (B, C', C)
    k = len(dys)

    x_in = xf if phi2 is None else xf @ phi2.T  # (B, C, D2)
    a2 = x_in  # block rows (B, C, D2): the B C rows e_c (x) x_in(c, :) of length C D2
    g2 = torch.cat([torch.einsum("bop,ocp->bco", dy, t1).reshape(b * c, c_out) for dy in dys])

    a1 = z  # block rows (B, C', C): the B C' rows e_c' (x) z(c', :) of length C' C
    g1 = torch.cat([(dy if phi1 is None else dy @ phi1.T).reshape(b * c_out, -1) for dy in dys])

    return [
        KronTerms((names[0],), a=math.sqrt(k) * g1, g=a1, bias=False),
        KronTerms((names[1],), a=a2, g=g2, bias=False),
    ]


@register_kfac_rule(FFC)
def _ffc_rule(module: FFC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    return _ffc_terms(module, x, grads, None, None)


@register_kfac_rule(SFC)
def _sfc_rule(module: SFC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    with torch.no_grad():  # phi, or Psi when the prior is on the weights
        basis1 = module.basis("1").to(x.dtype)
        basis2 = module.basis("2").to(x.dtype)
    if module.prior_target != "lengthscales":
        return _ffc_terms(module, x, grads, basis1, basis2)
    # the per-sample gradients of the induced factors are outer products, never formed:
    # gtheta1(c', c, p) = dy(c', p) z(c', c), gtheta2(c', c, q) = dz(c', c) x(c, q)
    theta1, theta2 = (t.detach() for t in module.factors())
    u1, u2 = module.u1.detach().to(x.dtype), module.u2.detach().to(x.dtype)
    b, c_out, c = x.shape[0], module.out_channels, module.in_channels
    xf = x.reshape(b, c, -1)  # (B, C, Q)
    z = torch.einsum("bcq,ocq->boc", xf, theta2.reshape(c_out, c, -1))  # (B, C', C)
    dy = torch.stack([gr.reshape(b, c_out, -1) for gr in grads])  # (K, B, C', P)
    dz = torch.einsum("kbop,ocp->kboc", dy, theta1.reshape(c_out, c, -1))  # (K, B, C', C)
    zu = torch.einsum("boc,ocj->boj", z, u1)  # (B, C', M1)
    dzu = torch.einsum("kboc,ocj->kbcj", dz, u2)  # (K, B, C, M2)

    def rows1(
        d: Tensor,
    ) -> Tensor:  # sum_{c', p} dy(c', p) d(j, e, p) [sum_c z(c', c) u1(c', c, j)]
        return torch.einsum("kbop,jep,boj->kbje", dy, d, zu).flatten(0, 1)

    def rows2(d: Tensor) -> Tensor:  # sum_{c, q} [sum_c' dz(c', c) u2(c', c, j)] x(c, q) d(j, e, q)
        xd = torch.einsum("bcq,jeq->bcje", xf, d)  # (B, C, M2, E)
        return torch.einsum("kbcj,bcje->kbje", dzu, xd).flatten(0, 1)

    return _basis_terms(module, "1", rows1, x) + _basis_terms(module, "2", rows2, x)


# --------------------------------------------------------------------------------------------
# layers on p4 feature maps (ella.layers.group, ella.layers.group_paths)
# --------------------------------------------------------------------------------------------


def _patch_map(u: Tensor, kernel_size: int) -> Tensor:
    """Circular S x S patches of u (B, D, H, W) as a map (B, D S S, H, W)."""
    b, _, h, w = u.shape
    return conv_patches(u, kernel_size).transpose(1, 2).reshape(b, -1, h, w)


def _rotated_patches(inputs: Sequence[Tensor], kernel_size: int) -> Tensor:
    """Patches (B, D S S, 4, H, W) of a p4 convolution with an unrotated filter.

    ``inputs[r]`` (B, D, ., .) is the input as output rotation r sees it *after* transforming it
    by the inverse rotation R^{-r}. By ``x ⋆ R^r w = R^r((R^{-r} x) ⋆ w)`` (circular padding, odd
    S) output (r, p) is ``<w, patch of inputs[r] at R^{-r} p>``, so the patch map of
    ``inputs[r]`` is rotated back by R^r to line up with the output positions.
    """
    maps = [torch.rot90(_patch_map(u, kernel_size), r, dims=(-2, -1)) for r, u in enumerate(inputs)]
    return torch.stack(maps, dim=2)


def _component(t: Tensor, index: Tensor) -> Tensor:
    """Polyphase component ``index[b]`` of every sample of t (B, ..., H, W) -> (B, ..., H/2, W/2),
    in the order of :func:`~ella.layers.pooling.polyphase_pool`."""
    comps = torch.stack([t[..., i::2, j::2] for i in (0, 1) for j in (0, 1)], dim=1)
    idx = index.view(-1, *([1] * (comps.dim() - 1))).expand(-1, 1, *comps.shape[2:])
    return comps.gather(1, idx).squeeze(1)


def _read_component(module: nn.Module, x: Tensor, grads: Sequence[Tensor]) -> Tensor | None:
    """The polyphase component (B,) of the module's output that the network reads, or None when
    it reads every position.

    The group modules do not subsample themselves: their wrappers
    (:class:`~ella.layers.group_paths.GroupPath`, :class:`~ella.layers.group_paths.GroupPathSum`)
    polyphase-pool their output, or the sum of several paths' outputs, per sample. The pooling is
    a gather, so the output gradients vanish *exactly* on the three discarded components (for
    every channel, rotation and output-Hessian column), while an output that is read everywhere
    has gradients on all four. The layer counts as pooled when no sample has gradients on more
    than one component and some sample has them on exactly one; a sample whose gradients vanish
    everywhere (all paths dead; it adds nothing to G) then takes the component of the module's
    own output, as :class:`~ella.layers.group_paths.GroupPath` chooses it.
    """
    h, w = grads[0].shape[-2:]
    if h % 2 or w % 2:
        return None
    b = grads[0].shape[0]
    mass = sum(gr.detach().abs().reshape(b, -1, h, w).sum(1) for gr in grads)  # (B, H, W)
    comps = torch.stack([mass[:, i::2, j::2].sum((-2, -1)) for i in (0, 1) for j in (0, 1)], 1)
    live = (comps > 0).sum(1)  # (B,)
    if bool((live > 1).any()) or not bool((live == 1).any()):
        return None
    index = comps.argmax(1)
    dead = live == 0
    if bool(dead.any()):
        with torch.no_grad():
            out = module(x[dead].detach())  # (B_dead, C', 4, H, W)
            _, own = polyphase_pool(out.flatten(1, -3), return_index=True)
        index = index.masked_scatter(dead, own)
    return index


def _group_rows(
    module: nn.Module, x: Tensor, grads: Sequence[Tensor], a_map: Tensor
) -> tuple[Tensor, Tensor]:
    """(a rows (R, D), g rows (R', C')) of a convolution whose output (B, C', [4,] H, W) is
    ``<w[c'], a_map[:, :, [r,] p]>`` with a_map (B, D, [4,] H, W): every (rotation, position)
    pair that the network reads is a shared position (see :func:`_read_component`)."""
    index = _read_component(module, x, grads)
    if index is not None:
        a_map = _component(a_map, index)
        grads = [_component(gr, index) for gr in grads]
    a = a_map.movedim(1, -1).reshape(-1, a_map.shape[1])
    g = torch.cat([gr.movedim(1, -1).reshape(-1, gr.shape[1]) for gr in grads])
    return a, g


def p4_patches(module: LiftingConv | GroupConv | PointwiseGroupConv, x: Tensor) -> Tensor:
    """Transformed input patches (B, D, 4, H, W) of a p4 convolution, lined up with its output
    (B, C', 4, H, W): ``out[:, c', r, p] = <weight[c'].flatten(), patches[:, :, r, p]> + bias[c']``.

    The patch of output (r, p) is the patch of the input transformed by the inverse of the group
    element r (the filter is not rotated):

    * :class:`~ella.layers.group.LiftingConv`: ``R^{-r} x`` (D = C S S);
    * :class:`~ella.layers.group.GroupConv`: ``rotate_p4(x, -r)`` -- rotated in space and shifted
      by -r along the rotation axis -- with (channel, relative rotation) as channels
      (D = C 4 S S, the layout of ``weight`` (C', C, 4, S, S));
    * :class:`~ella.layers.group.PointwiseGroupConv`: ``R^{-r} x[:, :, r]`` (D = C S S).

    Raises:
        TypeError: for another module type.
    """
    k, n = module.kernel_size, GROUP_ORDER
    if isinstance(module, LiftingConv):
        inputs = [torch.rot90(x, -r, dims=(-2, -1)) for r in range(n)]
    elif isinstance(module, GroupConv):
        inputs = [rotate_p4(x, -r).flatten(1, 2) for r in range(n)]
    elif isinstance(module, PointwiseGroupConv):
        inputs = [torch.rot90(x[:, :, r], -r, dims=(-2, -1)) for r in range(n)]
    else:
        raise TypeError(
            "`module` must be a LiftingConv, GroupConv or PointwiseGroupConv, "
            f"got {type(module).__name__}"
        )
    return _rotated_patches(inputs, k)


@register_kfac_rule(LiftingConv)
@register_kfac_rule(GroupConv)
@register_kfac_rule(PointwiseGroupConv)
def _p4_conv_rule(
    module: LiftingConv | GroupConv | PointwiseGroupConv, x: Tensor, grads: Sequence[Tensor]
) -> list[KronTerms]:
    a, g = _group_rows(module, x, grads, p4_patches(module, x))
    return _linear_terms(module, "weight", a, g)


@register_kfac_rule(FoldedConv)
def _folded_conv_rule(module: FoldedConv, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    b, c, n, h, w = x.shape
    a_map = _patch_map(x.reshape(b, c * n, h, w), module.kernel_size)  # (B, C 4 S S, H, W)
    a, g = _group_rows(module, x, [gr.flatten(1, 2) for gr in grads], a_map)
    return _linear_terms(module, "weight", a, g)


@register_kfac_rule(GroupFC)
def _group_fc_rule(module: GroupFC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    a = x.reshape(x.shape[0], -1)
    g = torch.cat([gr.reshape(gr.shape[0], -1) for gr in grads])
    return _linear_terms(module, "weight", a, g)


@register_kfac_rule(GroupFFC)
def _group_ffc_rule(module: GroupFFC, x: Tensor, grads: Sequence[Tensor]) -> list[KronTerms]:
    b, c_out = x.shape[0], module.out_channels
    dys = [gr.reshape(b, c_out, -1) for gr in grads]  # (B, C', 4 H'W') each
    theta1, theta2 = module.theta1.detach(), module.theta2.detach()
    terms = _factored_terms(x, theta1, theta2, dys, None, None, ("theta1", "theta2"))
    if module.bias is not None:  # one bias per output entry: a (C' 4 H'W', 1) weight on input 1
        ones = torch.ones(b, 1, dtype=x.dtype, device=x.device)
        terms.append(
            KronTerms(("bias",), a=ones, g=torch.cat([dy.flatten(1) for dy in dys]), bias=False)
        )
    return terms


from ella.layers import kfac_group_rules  # noqa: E402,F401  (registers the relaxed group rules)

"""Reparameterised augmentation distributions ``x' = g(x, eps; eta)`` (paper 001, section 3.4
and appendix A): affine maps of images and rotations of 2-D points, differentiable in eta."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ella.affine import AFFINE_NAMES, affine_matrices, affine_transform
from symdisc.runtime import check_bool, check_instance, check_int

__all__ = ["Augmentation", "AffineAugmentation", "PointRotation"]


class Augmentation:
    """A reparameterised augmentation distribution ``x' = g(x, eps; eta)``, eps ~ U[-1, 1]^k.

    ``eta`` is a plain tensor (k,), a leaf that requires a gradient unless ``learnable=False``;
    it is deliberately not an ``nn.Parameter`` of any model (see the module docstring).
    Subclasses define :attr:`names` and :meth:`apply`, and may define :attr:`limits`.

    Attributes:
        names: the components of eta, in order.
        limits: per component, the largest meaningful extent ``|eta_i|`` (same order as
            ``names``): beyond it the distribution stops describing a symmetry a model could
            use (it wraps around, or moves the content out of the frame).
            :func:`ella.invariance.train_invariant` reports a component whose ``|eta_i|``
            exceeds its limit (``InvarianceResult.eta_diverged``) and can project eta back
            (``InvarianceConfig.clamp_eta``). None: no limits (every component unbounded).
    """

    names: tuple[str, ...] = ()
    limits: tuple[float, ...] | None = None

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
        if not value.is_floating_point():
            raise TypeError(f"`dtype` must be a floating dtype, got {value.dtype}")
        if not torch.isfinite(value).all():
            raise ValueError(f"`eta` must be finite, got {value.tolist()}")
        self.eta = value.requires_grad_(check_bool(learnable, "learnable"))

    @property
    def k(self) -> int:
        """Number of components of eta."""
        return len(self.names)

    def sample_eps(
        self, n: int, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draws eps ~ U[-1, 1]^k, independent per example and per draw: (n, S, k), drawn on
        the CPU with ``generator`` (so the same seed gives the same draws everywhere)."""
        check_int(n, "n", minimum=0)
        check_int(n_samples, "n_samples", minimum=1)
        eps = torch.rand(n, n_samples, self.k, generator=generator, dtype=self.eta.dtype)
        return (2.0 * eps - 1.0).to(self.eta.device)

    def apply(self, x: Tensor, eps: Tensor, eta: Tensor | None = None) -> Tensor:
        """The augmented inputs ``g(x_b, eps_bs; eta)``: (B, S, *x.shape[1:])."""
        raise NotImplementedError

    def __call__(
        self, x: Tensor, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``apply(x, sample_eps(len(x), n_samples, generator))``: (B, S, ...)."""
        x = check_instance(x, "x", Tensor)
        if x.ndim == 0:
            raise ValueError("`x` must have a batch dimension (B, ...), got a 0-d tensor")
        return self.apply(x, self.sample_eps(x.shape[0], n_samples, generator))

    def _check_eps(self, x: Tensor, eps: Tensor) -> None:
        if eps.ndim != 3 or eps.shape[0] != x.shape[0] or eps.shape[2] != self.k:
            raise ValueError(
                f"`eps` must have shape ({x.shape[0]}, S, {self.k}), got {tuple(eps.shape)}"
            )

    def extent(self) -> dict[str, float]:
        """``{component: |eta_i|}``: the half-width of the learned uniform distribution."""
        return {n: abs(float(v)) for n, v in zip(self.names, self.eta.detach())}


def _check_inputs(x: object, name: str, eps: object) -> Tensor:
    """``x`` if it is a floating tensor, with ``eps`` a floating tensor."""
    x = check_instance(x, name, Tensor)
    check_instance(eps, "eps", Tensor)
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor, got dtype {x.dtype}")
    if not eps.is_floating_point():
        raise TypeError(f"`eps` must be a floating tensor, got dtype {eps.dtype}")
    return x


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
    limits = (1.0, 1.0, 2 * math.pi, math.log(4.0), math.log(4.0), math.log(4.0))
    """Meaningful extents (:attr:`Augmentation.limits`), in the coordinates of
    :func:`affine_transform` (the image spans [-1, 1], so a shift of 2 is the whole side):

    * ``translate_x``, ``translate_y``: 1.0, half the side: at ``eps = +-1`` the image centre
      reaches the border and the content leaves the frame (an extent beyond it mostly shows
      empty images);
    * ``rotate``: 2 pi: at pi ``eps * eta`` covers every angle once; between pi and 2 pi the
      angles wrap around (a legitimate, non-uniform distribution over the circle, which lila
      may cross on its way to pi); at 2 pi every angle is covered exactly twice, and an extent
      growing beyond it (as Augerino's regulariser can drive it) only approaches the uniform
      distribution the extent pi already gives;
    * ``scale_x``, ``scale_y``: log 4: factors ``exp(eps * eta)`` from 1/4 to 4 (a 28-pixel
      digit shrunk to 7 pixels, or a quarter of it filling the frame);
    * ``shear``: log 4: its generator ``[[0, 1], [1, 0]]`` stretches one diagonal by
      ``exp(eps * eta)`` and squeezes the other by its inverse, so the same factors as scale.
    """

    def apply(self, x: Tensor, eps: Tensor, eta: Tensor | None = None) -> Tensor:
        x = _check_inputs(x, "x", eps)
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
    limits = (2 * math.pi,)
    """2 pi, as the rotation of :class:`AffineAugmentation` (:attr:`Augmentation.limits`)."""

    def apply(self, x: Tensor, eps: Tensor, eta: Tensor | None = None) -> Tensor:
        x = _check_inputs(x, "x", eps)
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"`x` must be 2-D points of shape (B, 2), got {tuple(x.shape)}")
        self._check_eps(x, eps)
        angle = (eps[..., 0] * (self.eta if eta is None else eta)[0]).to(x.dtype)  # (B, S)
        c, s = torch.cos(angle), torch.sin(angle)
        x0, x1 = x[:, None, 0], x[:, None, 1]
        return torch.stack([c * x0 - s * x1, s * x0 + c * x1], dim=-1)

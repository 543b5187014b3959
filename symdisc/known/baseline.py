"""The closed-form null-space baseline of symmetry discovery (paper 002, Theorem B.1, eq. 6).

Given a linear ansatz ``A -> T_A(theta, X)`` of candidate tangents, the generators that are
infinitesimal symmetries on a set of samples are the A with ``<grad L_i, T_A(theta_i, X_i)> = 0``
for every sample i: the null space of the stacked rows ``r_i = d/dA <grad L_i, T_A>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from symdisc.known.continuous import Ansatz
from symdisc.known.deep import deep_net
from symdisc.losses import MLPLoss, ModuleLoss, ParamLoss, TanhSkipLoss, TwoLayerLoss
from symdisc.runtime.checks import check_float, check_instance
from symdisc.sampler import Samples
from symdisc.validation import check_samples

__all__ = ["NullSpace", "null_space"]


@dataclass(frozen=True)
class NullSpace:
    """The generators A of a linear ansatz orthogonal to the loss gradient on every sample.

    Attributes:
        singular_values: (numel(A),) of the stacked rows ``r_i``, descending (zeros appended
            where there are fewer samples than numel(A)).
        dim: the null-space dimension, the number of singular values ``<= rtol * largest``
            (all of them when the largest itself is ``<= rtol * scale``).
        basis: (dim, numel(A)) orthonormal rows spanning the null space (A flattened row-major).
        a_shape: the shape of A; ``basis.reshape(dim, *a_shape)`` are the generators.
        scale: the size the singular values would have if no generator were a symmetry,
            ``sqrt(sum_i ||grad L_i||^2 ||dT/dA (theta_i, X_i)||_F^2 / numel(A))`` (estimated
            with one Gaussian A per sample). It sets the threshold when every singular value is
            round-off (an ansatz that is a symmetry throughout, e.g. GL(h) of a linear net):
            relative to the largest alone, the null space would then come out empty.
    """

    singular_values: Tensor
    dim: int
    basis: Tensor
    a_shape: tuple[int, ...]
    scale: float

    def __repr__(self) -> str:
        top = float(self.singular_values[0]) if self.singular_values.numel() else 0.0
        return (
            f"NullSpace(dim={self.dim}, a_shape={self.a_shape}, "
            f"basis={tuple(self.basis.shape)}, largest_singular_value={top:.3g}, "
            f"scale={self.scale:.3g})"
        )

    @property
    def generators(self) -> Tensor:
        """The null-space basis as generators, (dim, *a_shape)."""
        return self.basis.reshape(self.dim, *self.a_shape)


def _default_a_shape(loss: ParamLoss) -> tuple[int, ...]:
    if isinstance(loss, (TwoLayerLoss, TanhSkipLoss)):
        return (loss.h, loss.h)
    why = ""
    if isinstance(loss, (MLPLoss, ModuleLoss)):
        try:
            return deep_net(loss).gl_shape()
        except (TypeError, ValueError) as err:
            why = f" ({err})"
    raise ValueError(
        f"`a_shape` must be given for {type(loss).__name__} (the default is (h, h) for a "
        f"TwoLayerLoss or a TanhSkipLoss, (sum_l h_l^2,) for a deep net{why}), got None"
    )


def null_space(
    loss: ParamLoss,
    samples: Samples,
    ansatz: Ansatz,
    *,
    a_shape: tuple[int, ...] | None = None,
    rtol: float = 1e-6,
) -> NullSpace:
    """Closed-form baseline: the A with ``<grad L_i, T_A(theta_i, X_i)> = 0`` for all samples i.

    Stacks the rows ``r_i = d/dA <grad L_i, T_A(theta_i, X_i)>`` (N, numel(A)) — one
    vector-Jacobian product of ``A -> T_A`` at ``A = 0`` with cotangent ``grad L_i`` per sample,
    vmapped — and takes their SVD; the right singular vectors of the (relatively) zero singular
    values span the generators satisfying Theorem B.1 of paper 002 (eq. 6) on every sample.

    Args:
        loss: the ParamLoss the samples were drawn for.
        samples: :class:`symdisc.sampler.Samples` (``.theta`` (N, P), ``.X``, ``.grad`` (N, P)).
        ansatz: ``(theta (P,), X, A) -> (P,)``, linear in A, e.g. :func:`gl_ansatz` or
            :func:`infinitesimal_action`.
        a_shape: the shape of A; default ``(h, h)`` for a two-layer or a tanh-skip net (h its
            hidden width), ``(sum_l h_l^2,)`` for a deep net (the deep :func:`gl_ansatz`; an
            MLPLoss or a ModuleLoss of a supported ``nn.Sequential``, see
            :func:`~symdisc.known.tangent_basis`); required for other kinds of loss.
        rtol: singular values ``<= rtol * largest`` count as zero; all do when the largest is
            ``<= rtol * scale`` (see :class:`NullSpace`).

    Raises:
        TypeError: for a ``loss``, ``samples``, ``ansatz`` or ``rtol`` of the wrong type.
        ValueError: for a non-positive ``rtol``, a missing ``a_shape`` for a loss without a
            default, samples of another loss, or an ansatz that does not return (P,).
    """
    check_instance(loss, "loss", ParamLoss)
    check_samples(samples, loss=loss)
    if not callable(ansatz):
        raise TypeError(
            f"`ansatz` must be callable (theta, X, A) -> (P,), got {type(ansatz).__name__}"
        )
    check_float(rtol, "rtol", positive=True)
    if a_shape is None:
        a_shape = _default_a_shape(loss)
    a_shape = tuple(int(d) for d in a_shape)
    P = loss.num_params
    if tuple(samples.theta.shape[1:]) != (P,) or tuple(samples.X.shape[1:]) != tuple(loss.x_shape):
        raise ValueError(
            f"`samples` must be drawn for `loss` (theta (N, {P}), X (N, *{tuple(loss.x_shape)})), "
            f"got theta {tuple(samples.theta.shape)} and X {tuple(samples.X.shape)}"
        )
    zero = samples.theta.new_zeros(a_shape)
    out = ansatz(samples.theta[0], samples.X[0], zero)
    if not isinstance(out, Tensor) or tuple(out.shape) != (P,):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"`ansatz` must return a tangent of shape ({P},), got {got}")

    def row(theta: Tensor, X: Tensor, grad: Tensor) -> Tensor:
        _, vjp = torch.func.vjp(lambda A: ansatz(theta, X, A), zero)
        return vjp(grad)[0].reshape(-1)

    def size(theta: Tensor, X: Tensor, grad: Tensor, a: Tensor) -> Tensor:
        return grad.square().sum() * ansatz(theta, X, a).square().sum()

    rows = torch.vmap(row)(samples.theta, samples.X, samples.grad)  # (N, q)
    q = rows.shape[1]
    # The scale of the rows had no generator been a symmetry: sum_i ||g_i||^2 ||J_i||_F^2 / q,
    # with ||J_i||_F^2 = E ||T_a||^2 for a ~ N(0, I) (one draw per sample, fixed seed).
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(len(samples), *a_shape, generator=gen, dtype=rows.dtype).to(rows.device)
    sizes = torch.vmap(size)(samples.theta, samples.X, samples.grad, a)
    scale = float(sizes.sum().div(max(q, 1)).sqrt())
    if rows.shape[0] < q:  # pad with zero rows so that Vh is the full (q, q)
        rows = torch.cat([rows, rows.new_zeros(q - rows.shape[0], q)])
    _, S, Vh = torch.linalg.svd(rows, full_matrices=False)
    largest = float(S[0]) if q else 0.0
    # rtol * largest, unless the largest is itself round-off against the scale (all null).
    tol = rtol * largest if largest > rtol * scale else rtol * scale
    dim = int((S <= tol).sum())
    return NullSpace(S, dim, Vh[q - dim :], a_shape, scale)

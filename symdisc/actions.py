"""Group actions ``a_X(g, theta)`` of GL(d) on a loss's flat parameter vector (paper 002, sec. 4).

An action maps a group element g (d, d), parameters theta (P,) and one data sample X to new
parameters theta' (P,). Actions are written for one sample and lifted with :func:`torch.vmap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from symdisc.losses import ParamLoss
from symdisc.runtime.checks import check_bool, check_instance, check_int
from symdisc.validation import check_algebra, check_invertible, check_tensor

__all__ = ["Action", "MLPAction", "LinearAction", "CentredAction"]


class Action(nn.Module):
    """Base class: ``forward(g (d, d), theta (P,), X) -> theta' (P,)`` for one sample."""

    d: int
    data_dependent: bool

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def tangents(self, h: Tensor, theta: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        """``a_X(I, theta)`` and the infinitesimal action ``D_g a_X|_(I, theta)(h_j)``.

        The generic path: one ``torch.func.jvp`` in g at the identity per sample and generator,
        vmapped over both (paper 002, Theorem B.1). Subclasses may override it with a faster
        formulation that gives the same numbers.

        Shapes: h (k, d, d), theta (B, P), X (B, ...) -> ((B, P), (B, k, P)).
        """
        _check_tangent_args(self, h, theta, X)
        eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)

        def one(theta_i: Tensor, X_i: Tensor, h_j: Tensor) -> tuple[Tensor, Tensor]:
            return torch.func.jvp(lambda g: self(g, theta_i, X_i), (eye,), (h_j,))

        over_generators = torch.vmap(one, in_dims=(None, None, 0))
        primal, v = torch.vmap(over_generators, in_dims=(0, 0, None))(theta, X, h)
        return primal[:, 0], v


def _check_tangent_args(action: Action, h: Tensor, theta: Tensor, X: Tensor) -> None:
    check_algebra(h, "h", action.d, finite=False)  # a NaN h is the trainer's to stop
    check_tensor(theta, "theta", ndim=2, floating=True)
    weight = next(action.parameters(), None)
    if weight is not None and weight.dtype != theta.dtype:
        raise TypeError(
            f"`theta` must have the action's dtype {weight.dtype}, got {theta.dtype}: cast the "
            f"action (e.g. action.double()) or draw the samples with sample(dtype=...)"
        )
    P = getattr(action, "num_params", None)
    if P is not None and theta.shape[1] != P:
        raise ValueError(f"`theta` must be (B, {P}) for this action, got {tuple(theta.shape)}")
    check_instance(X, "X", Tensor)
    x_shape = getattr(action, "x_shape", None) if action.data_dependent else None
    want = (theta.shape[0], *x_shape) if x_shape is not None else None
    if X.ndim == 0 or X.shape[0] != theta.shape[0] or (want and tuple(X.shape) != want):
        what = want or f"({theta.shape[0]}, ...)"
        raise ValueError(f"`X` must be {what}, one sample per row of theta, got {tuple(X.shape)}")


def _check_one(action: Action, g: Tensor, theta: Tensor, X: Tensor | None) -> None:
    """Shapes of one sample (g (d, d), theta (P,), X of the loss's shape); vmap-safe."""
    for name, value in (("g", g), ("theta", theta)):
        check_instance(value, name, Tensor)
    if tuple(g.shape) != (action.d, action.d):
        raise ValueError(f"`g` must be ({action.d}, {action.d}), got {tuple(g.shape)}")
    P = getattr(action, "num_params", None)
    if P is not None and tuple(theta.shape) != (P,):
        raise ValueError(
            f"`theta` must be one parameter vector ({P},) (lift batches with torch.vmap), "
            f"got {tuple(theta.shape)}"
        )
    x_shape = getattr(action, "x_shape", None)
    if X is not None and action.data_dependent and x_shape is not None:
        check_instance(X, "X", Tensor)
        if tuple(X.shape) != x_shape:
            raise ValueError(f"`X` must be one sample {x_shape}, got {tuple(X.shape)}")


class MLPAction(Action):
    """A learned action: ``a_X(g, theta) = theta + MLP([g - I, theta, X])``.

    The MLP (hidden sizes 64, 64, 64 by default, as in the paper) reads the flattened group
    element, the parameters and, for a data-dependent action, the flattened data; it writes a
    displacement of theta. Feeding ``g - I`` and adding theta makes the identity axiom easy to meet
    (``MLP(0, theta, X) = 0``) without imposing it: the identity loss still measures it.

    Args:
        loss: the loss whose parameters the action moves (gives P and the data shape).
        d: the group is GL(d).
        hidden: hidden layer sizes.
        data_dependent: whether the action reads X (the rescaling experiments of section 4.1 use a
            data-independent action).

    Raises:
        TypeError: for a ``loss`` that is not a ParamLoss, or a non-int ``d`` or hidden size.
        ValueError: for ``d`` or a hidden size below 1, or no hidden layer.
    """

    def __init__(
        self,
        loss: ParamLoss,
        d: int,
        hidden: Sequence[int] = (64, 64, 64),
        *,
        data_dependent: bool = True,
    ) -> None:
        super().__init__()
        check_instance(loss, "loss", ParamLoss)
        check_int(d, "d", minimum=1)
        if not hidden:
            raise ValueError(f"`hidden` must be a non-empty list of positive ints, got {hidden!r}")
        for i, w in enumerate(hidden):
            check_int(w, f"hidden[{i}]", minimum=1)
        self.d, self.data_dependent = d, check_bool(data_dependent, "data_dependent")
        self.num_params, self.x_shape = loss.num_params, tuple(loss.x_shape)
        x_dim = int(torch.Size(loss.x_shape).numel()) if data_dependent else 0
        sizes = [d * d + self.num_params + x_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(sizes[-1], self.num_params))
        self.net = nn.Sequential(*layers)

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        _check_one(self, g, theta, X)
        eye = torch.eye(self.d, dtype=g.dtype, device=g.device)
        parts = [(g - eye).reshape(-1), theta]
        if self.data_dependent:
            parts.append(X.reshape(-1))
        return theta + self.net(torch.cat(parts))

    def tangents(self, h: Tensor, theta: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
        """Forward-mode derivative in g at the identity, written out for the whole batch.

        At g = I the group input of the MLP is zero, so the first layer's tangent
        ``W_g vec(h_j)`` is one (k, width) tensor shared by all samples; every later layer maps
        tangents as ``t <- (silu'(z) * t) W^T`` (no bias). The same numbers as the generic
        vmapped ``jvp`` (tested in float64), without its per-sample tangent copies and
        zero-tangent products of the weights.

        Under plain autograd the pass runs as one :class:`torch.autograd.Function` with its
        backward written out (:class:`_SiLUTangents`: fewer, fused kernels than autograd's
        record of the same pass, tested against autograd in float64; under ``create_graph=True``
        its backward is recorded by autograd, so higher derivatives hold too).
        Under ``torch.func`` transforms or ``torch.compile`` it runs as plain tensor operations,
        which those differentiate, batch or fuse themselves.
        """
        _check_tangent_args(self, h, theta, X)
        B, k = theta.shape[0], h.shape[0]
        inputs = [theta] + ([X.reshape(B, -1)] if self.data_dependent else [])
        x = torch.cat(inputs, dim=1) if len(inputs) > 1 else theta
        first, *rest = [layer for layer in self.net if isinstance(layer, nn.Linear)]
        dd = self.d * self.d
        weights = (first.weight[:, dd:], first.weight[:, :dd], first.bias)
        later = [p for layer in rest for p in (layer.weight, layer.bias)]
        run = _SiLUTangents.apply if _plain_autograd() else _silu_tangents
        z, t = run(x, h.reshape(k, dd), *weights, *later)  # (B, P), (k, B, P)
        return theta + z, t.transpose(0, 1)


def _plain_autograd() -> bool:
    """True outside ``torch.func`` transforms, forward-mode AD and ``torch.compile`` tracing."""
    return not (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch.autograd.forward_ad._current_level >= 0
    )


def _silu_tangents(
    x: Tensor, hx: Tensor, w_x: Tensor, w_g: Tensor, b_1: Tensor, *later: Tensor
) -> tuple[Tensor, Tensor]:
    """The MLP of :class:`MLPAction` at g = I and its tangents, as plain tensor operations.

    ``x`` (B, n_in) holds [theta, X] per sample, ``hx`` (k, d*d) the flattened generators, the
    first layer is split into its columns for x (``w_x``) and for g (``w_g``), and ``later``
    holds (weight, bias) of every later layer. Returns z (B, P), the MLP's output at g = I,
    and the tangents t (k, B, P) of the output along each generator.
    """
    z = torch.addmm(b_1, x, w_x.T)  # (B, width)
    t = (hx @ w_g.T)[:, None, :]  # (k, 1, width): shared by all samples
    for weight, bias in zip(later[0::2], later[1::2]):
        sig = torch.sigmoid(z)
        t = t * (sig * (1 + z * (1 - sig)))  # silu'(z) * t, (k, B, width)
        z = torch.addmm(bias, z * sig, weight.T)
        t = t @ weight.T
    return z, t


class _SiLUTangents(torch.autograd.Function):
    """:func:`_silu_tangents` with its backward written out (autograd's record of it under
    ``create_graph=True``, for higher derivatives).

    Forward per hidden layer, with sigma = sigmoid(z): ``y = silu(z) = z sigma``,
    ``q = silu'(z) = sigma + y (1 - sigma)``, ``s = q * tau`` (tau (k, B, w) the tangent before
    the activation), then ``z' = y W^T + b`` and ``tau' = s W^T``. Backward, with gz', gtau' the
    incoming gradients: ``gW = gz'^T y + sum_j gtau'_j^T s_j``, ``gb = sum_b gz'``,
    ``gs = gtau' W``, ``gtau = q * gs`` and
    ``gz = q * (gz' W) + silu''(z) * sum_j gs_j * tau_j`` with
    ``silu''(z) = sigma (1 - sigma) (2 + z - 2 y)``.
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, hx: Tensor, w_x: Tensor, w_g: Tensor, b_1: Tensor, *later: Tensor
    ) -> tuple[Tensor, Tensor]:
        z = torch.addmm(b_1, x, w_x.T)
        tau = (hx @ w_g.T)[:, None, :]
        saved: list[Tensor] = []
        for weight, bias in zip(later[0::2], later[1::2]):
            sig = torch.sigmoid(z)
            y = z * sig
            q = torch.addcmul(sig, y, 1 - sig)  # silu'(z)
            s = tau * q
            saved += [z, sig, y, q, tau, s]
            z = torch.addmm(bias, y, weight.T)
            tau = s @ weight.T
        ctx.save_for_backward(x, hx, w_x, w_g, b_1, *later, *saved)
        ctx.layers = len(later) // 2
        return z, tau

    @staticmethod
    def backward(ctx: Any, g_z: Tensor, g_tau: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: a backward that is itself differentiable
            return _SiLUTangents._recorded_backward(ctx, g_z, g_tau)
        n = ctx.layers
        g_tau = g_tau.contiguous()  # the gradient of a transposed view: one copy, not two
        x, hx, w_x, w_g, _, *rest = ctx.saved_tensors
        later, saved = rest[: 2 * n], rest[2 * n :]
        grads: list[Tensor | None] = [None] * (2 * n)
        for i in reversed(range(n)):
            weight = later[2 * i]
            z, sig, y, q, tau, s = saved[6 * i : 6 * i + 6]
            width = weight.shape[1]
            g_flat = g_tau.reshape(-1, weight.shape[0])
            grads[2 * i] = torch.addmm(g_z.T @ y, g_flat.T, s.reshape(-1, width))
            grads[2 * i + 1] = g_z.sum(0)
            g_s = g_tau @ weight  # (k, B, width)
            g_q = g_s[0] * tau[0]  # sum_j gs_j * tau_j, without a (k, B, width) temporary
            for j in range(1, len(g_s)):
                g_q.addcmul_(g_s[j], tau[j])
            g_q.mul_(torch.add(z, y, alpha=-2).add_(2))
            g_z = torch.ops.aten.sigmoid_backward(g_q, sig).addcmul_(g_z @ weight, q)
            g_tau = g_s.mul_(q)
        g_a = g_tau.sum(1)  # (k, width): the first tangent is shared by all samples
        need = ctx.needs_input_grad
        return (
            g_z @ w_x if need[0] else None,
            g_a @ w_g if need[1] else None,
            g_z.T @ x if need[2] else None,
            g_a.T @ hx if need[3] else None,
            g_z.sum(0) if need[4] else None,
            *grads,
        )

    @staticmethod
    def _recorded_backward(ctx: Any, g_z: Tensor, g_tau: Tensor) -> tuple[Tensor | None, ...]:
        """The vector-Jacobian product of :func:`_silu_tangents` recorded by autograd (for
        higher derivatives: the saved inputs carry their history under ``create_graph``)."""
        inputs = ctx.saved_tensors[: 5 + 2 * ctx.layers]
        wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
        out = _silu_tangents(*inputs)
        grads = torch.autograd.grad(
            out, [inputs[i] for i in wanted], (g_z, g_tau), create_graph=True, allow_unused=True
        )
        full: list[Tensor | None] = [None] * len(inputs)
        for i, g in zip(wanted, grads):
            full[i] = g
        return tuple(full)


class LinearAction(Action):
    """The closed-form linear action ``a(g, theta) = g theta`` on a block of theta.

    The block (indices into theta, a multiple of d long) is reshaped to (d, -1) and multiplied by
    g; the other entries stay. Data-independent, and an action by construction (identity and
    associativity hold exactly), so it is the baseline against which learned actions are read.

    Args:
        loss: the loss whose parameters the action moves.
        d: the group is GL(d).
        block: indices of theta the group acts on (default: all of theta, which needs P = d * c).

    Raises:
        TypeError: for a ``loss`` that is not a ParamLoss or a non-int ``d``.
        ValueError: for ``d < 1`` or a block that is not a non-zero multiple of d indices of theta.
    """

    data_dependent = False

    def __init__(self, loss: ParamLoss, d: int, block: Sequence[int] | None = None) -> None:
        super().__init__()
        check_instance(loss, "loss", ParamLoss)
        check_int(d, "d", minimum=1)
        P = loss.num_params
        index = torch.arange(P) if block is None else torch.as_tensor(list(block), dtype=torch.long)
        if index.numel() == 0 or index.numel() % d or bool((index < 0).any() | (index >= P).any()):
            raise ValueError(
                f"`block` must hold a non-zero multiple of d={d} indices in [0, {P}), "
                f"got {index.numel()} indices"
            )
        self.d, self.num_params = d, P
        self.register_buffer("index", index)

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        """``g theta`` on the block; ValueError naming ``g`` for a singular g (an element of
        GL(d) is invertible). The check reads values, so it runs where g is an ordinary tensor
        (called directly, or with g unbatched under ``torch.vmap``); a g batched by vmap is not
        checked (vmap forbids reading values): check such a batch with
        :func:`symdisc.validation.check_invertible` before the vmap."""
        _check_one(self, g, theta, None)
        check_invertible(g, "g")
        moved = (g @ theta[self.index].reshape(self.d, -1)).reshape(-1)
        return theta.index_put((self.index,), moved)


class CentredAction(Action):
    """``a(g, theta, X) - a(I, theta, X) + theta``: any action made to fix theta at g = I.

    The identity axiom of paper 002 (``a_X(I, theta) = theta``) holds exactly, whatever the
    wrapped action; an untrained :class:`MLPAction` wrapped this way moves theta only as far as g
    moves, with no jump at the identity (the control of ``experiments/teleport.py``).
    """

    def __init__(self, action: Action) -> None:
        super().__init__()
        check_instance(action, "action", Action)
        self.inner, self.d, self.data_dependent = action, action.d, action.data_dependent

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        eye = torch.eye(self.d, dtype=g.dtype, device=g.device)
        return self.inner(g, theta, X) - self.inner(eye, theta, X) + theta

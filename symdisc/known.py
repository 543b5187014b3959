"""Known parameter-space symmetries of the loss zoo, as tangent vectors and as finite actions.

Paper 002 (section 2, appendix B.1): a symmetry is a (possibly data-dependent) group action
``a_X(g, theta)`` with ``L(a_X(g, theta), X) = L(theta, X)``; its infinitesimal form is a tangent
vector ``t = D_g a_X|_{I, theta}(A)`` per Lie algebra element A, with ``<grad_theta L, t> = 0``
(Theorem B.1). This module gives, for the two-layer nets of :func:`symdisc.losses.two_layer`:

==========================  ==============================  ======================  ============
symmetry                    applies to                      generator A             r
==========================  ==============================  ======================  ============
``"gl"``                    identity activation             (h, h)                  h^2
``"rescaling"``             identity, relu, leaky_relu      (h,) (diagonal)         h
``"data_dependent_gl"``     identity, leaky_relu, sigmoid,  (h, h)                  h^2
                            tanh; no biases; k <= n
``"softmax_shift"``         biases, cross-entropy output    () (a scalar)           1
==========================  ==============================  ======================  ============

and the discrete symmetries :func:`permute_hidden` and :func:`flip_signs`. Every per-sample
function takes ONE sample, theta (P,) and X (n, k), and is meant to be lifted with
:func:`torch.vmap`; nothing writes into its inputs. :func:`null_space` is the closed-form
baseline: the generators of a linear ansatz that are orthogonal to the gradient on every sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from symdisc.actions import Action
from symdisc.losses import LEAKY_SLOPE, ParamLoss, activation_fn
from symdisc.sampler import Samples

__all__ = [
    "SYMMETRIES",
    "NullSpace",
    "algebra_shape",
    "exp_map",
    "flip_signs",
    "gl_ansatz",
    "group_action",
    "infinitesimal_action",
    "KnownAction",
    "null_space",
    "permute_hidden",
    "tangent_basis",
]

SYMMETRIES: tuple[str, ...] = ("gl", "rescaling", "data_dependent_gl", "softmax_shift")

Ansatz = Callable[[Tensor, Tensor, Tensor], Tensor]

# Degree alpha of positive homogeneity, s(c z) = c^alpha s(z) for c > 0.
_HOMOGENEOUS: dict[str, float] = {"identity": 1.0, "relu": 1.0, "leaky_relu": 1.0}
_INVERTIBLE = ("identity", "leaky_relu", "sigmoid", "tanh")
_ODD = ("identity", "tanh")
_TWO_LAYER_KEYS = (("W1", "W2"), ("W1", "W2", "b1", "b2"))
_SKIP_KEYS = ("W1", "W2", "W3")


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_loss(loss: object) -> ParamLoss:
    if not isinstance(loss, ParamLoss):
        raise TypeError(f"`loss` must be a symdisc.losses.ParamLoss, got {type(loss).__name__}")
    return loss


def _structure(loss: ParamLoss) -> str | None:
    """``"two_layer"``, ``"tanh_skip"`` or None, read from the parameter names and shapes."""
    keys = tuple(loss.param_shapes)
    if keys in _TWO_LAYER_KEYS:
        return "two_layer"
    if keys == _SKIP_KEYS and loss.activation == "tanh":
        (h, _), w2 = loss.param_shapes["W1"], loss.param_shapes["W2"]
        if tuple(w2) == (h, h):
            return "tanh_skip"
    return None


def _require_two_layer(loss: ParamLoss, what: str) -> None:
    if _structure(loss) != "two_layer":
        raise ValueError(
            f"`loss` must be a two-layer net (parameters W1, W2 and optionally b1, b2) for "
            f"{what}, got parameters {list(loss.param_shapes)}"
        )


def _hidden(loss: ParamLoss) -> int:
    return int(loss.param_shapes["W1"][0])


def _output(loss: ParamLoss) -> str:
    return str(loss.extra.get("output", "mse"))


def _check_symmetry(symmetry: object) -> str:
    if not isinstance(symmetry, str) or symmetry not in SYMMETRIES:
        raise ValueError(f"`symmetry` must be one of {SYMMETRIES}, got {symmetry!r}")
    return symmetry


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise TypeError(f"`alpha` must be a finite real number, got {alpha!r}")
    return float(alpha)


def _check_sample(loss: ParamLoss, theta: Tensor, X: Tensor) -> None:
    """Shape checks only (no tensor values), so that they hold under ``vmap``."""
    if not isinstance(theta, Tensor) or tuple(theta.shape) != (loss.num_params,):
        got = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(
            f"`theta` must be one flat parameter vector of shape ({loss.num_params},) "
            f"(lift batches with torch.vmap), got {got}"
        )
    if not isinstance(X, Tensor) or tuple(X.shape) != tuple(loss.x_shape):
        got = tuple(X.shape) if isinstance(X, Tensor) else type(X).__name__
        raise ValueError(f"`X` must be one data sample of shape {tuple(loss.x_shape)}, got {got}")


def _check_element(name: str, value: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(value, Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"`{name}` must have shape {shape}, got {got}")


# --------------------------------------------------------------------------------------------
# Activations: derivative and inverse, for the invertible ones
# --------------------------------------------------------------------------------------------


def _act_derivative(name: str, z: Tensor, s: Tensor) -> Tensor:
    """s'(z), given also s = s(z)."""
    if name == "identity":
        return torch.ones_like(z)
    if name == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))
    if name == "sigmoid":
        return s * (1 - s)
    return 1 - s * s


def _act_inverse(name: str, y: Tensor) -> Tensor:
    """s^{-1}(y) for y in the range of s."""
    if name == "identity":
        return y
    if name == "leaky_relu":
        return torch.where(y >= 0, y, y / LEAKY_SLOPE)
    if name == "sigmoid":
        return torch.logit(y)
    return torch.atanh(y)


# --------------------------------------------------------------------------------------------
# The continuous symmetries: (generator shape, infinitesimal action, finite action)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    a_shape: tuple[int, ...]
    tangent: Ansatz  # (theta, X, A) -> (P,), linear in A
    action: Ansatz  # (theta, X, g) -> (P,)


def _gl_tangent(loss: ParamLoss) -> Ansatz:
    h = _hidden(loss)

    def tangent(theta: Tensor, X: Tensor, A: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("A", A, (h, h))
        p = loss.unflatten(theta)
        d = {"W1": A @ p["W1"], "W2": -(p["W2"] @ A)}
        if loss.bias:
            d["b1"] = A @ p["b1"]
            d["b2"] = torch.zeros_like(p["b2"])
        return loss.flatten(d)

    return tangent


def _gl_spec(loss: ParamLoss) -> _Spec:
    if loss.activation != "identity":
        raise ValueError(
            f"`loss` must be a two-layer net with the identity activation for 'gl', "
            f"got activation {loss.activation!r}"
        )
    h = _hidden(loss)

    def action(theta: Tensor, X: Tensor, g: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("g", g, (h, h))
        p = loss.unflatten(theta)
        # W2 g^-1 by inv: the jvp of linalg.solve(left=False) gives NaN under nested vmap
        q = {"W1": g @ p["W1"], "W2": p["W2"] @ torch.linalg.inv(g)}
        if loss.bias:
            q["b1"] = g @ p["b1"]
            q["b2"] = p["b2"]
        return loss.flatten(q)

    return _Spec((h, h), _gl_tangent(loss), action)


def _rescaling_spec(loss: ParamLoss, alpha: float | None) -> _Spec:
    if loss.activation not in _HOMOGENEOUS:
        raise ValueError(
            f"`loss` must be a two-layer net with a positively homogeneous activation "
            f"{tuple(_HOMOGENEOUS)} for 'rescaling', got activation {loss.activation!r}"
        )
    a = _HOMOGENEOUS[loss.activation] if alpha is None else _check_alpha(alpha)
    h = _hidden(loss)

    def tangent(theta: Tensor, X: Tensor, c: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("A", c, (h,))
        p = loss.unflatten(theta)
        d = {"W1": c[:, None] * p["W1"], "W2": -a * (p["W2"] * c[None, :])}
        if loss.bias:
            d["b1"] = c * p["b1"]
            d["b2"] = torch.zeros_like(p["b2"])
        return loss.flatten(d)

    def action(theta: Tensor, X: Tensor, c: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("g", c, (h,))
        p = loss.unflatten(theta)
        q = {"W1": c[:, None] * p["W1"], "W2": p["W2"] * torch.pow(c, -a)[None, :]}
        if loss.bias:
            q["b1"] = c * p["b1"]
            q["b2"] = p["b2"]
        return loss.flatten(q)

    return _Spec((h,), tangent, action)


def _data_dependent_gl_spec(loss: ParamLoss) -> _Spec:
    act = str(loss.activation)
    if act not in _INVERTIBLE:
        raise ValueError(
            f"`loss` must be a two-layer net with an invertible activation {_INVERTIBLE} for "
            f"'data_dependent_gl', got activation {loss.activation!r}"
        )
    if loss.bias:
        raise ValueError(
            "`loss` must be a two-layer net without biases for 'data_dependent_gl', got bias=True"
        )
    n, k = loss.x_shape
    if k > n:
        raise ValueError(
            f"`loss` must take k <= n data points (X of shape (n, k)) for 'data_dependent_gl', "
            f"got X of shape {tuple(loss.x_shape)}"
        )
    h = _hidden(loss)

    def tangent(theta: Tensor, X: Tensor, A: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("A", A, (h, h))
        p = loss.unflatten(theta)
        H = p["W1"] @ X
        S = activation_fn(act)(H)
        dW1 = ((A @ S) / _act_derivative(act, H, S)) @ torch.linalg.pinv(X)
        return loss.flatten({"W1": dW1, "W2": -(p["W2"] @ A)})

    def action(theta: Tensor, X: Tensor, g: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("g", g, (h, h))
        p = loss.unflatten(theta)
        H = p["W1"] @ X
        W1 = p["W1"] + (_act_inverse(act, g @ activation_fn(act)(H)) - H) @ torch.linalg.pinv(X)
        return loss.flatten({"W1": W1, "W2": p["W2"] @ torch.linalg.inv(g)})

    return _Spec((h, h), tangent, action)


def _softmax_shift_spec(loss: ParamLoss) -> _Spec:
    if not (loss.bias and _output(loss) == "cross_entropy"):
        raise ValueError(
            "`loss` must be a two-layer net with biases and output='cross_entropy' for "
            f"'softmax_shift', got bias={loss.bias} and output={_output(loss)!r}"
        )

    def tangent(theta: Tensor, X: Tensor, c: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("A", c, ())
        p = loss.unflatten(theta)
        d = {name: torch.zeros_like(v) for name, v in p.items()}
        d["b2"] = c * torch.ones_like(p["b2"])
        return loss.flatten(d)

    def action(theta: Tensor, X: Tensor, c: Tensor) -> Tensor:
        _check_sample(loss, theta, X)
        _check_element("g", c, ())
        p = loss.unflatten(theta)
        return loss.flatten({**p, "b2": p["b2"] + c})

    return _Spec((), tangent, action)


def _spec(loss: object, symmetry: object, alpha: float | None = None) -> _Spec:
    loss = _check_loss(loss)
    symmetry = _check_symmetry(symmetry)
    if alpha is not None and symmetry != "rescaling":
        raise TypeError(f"`alpha` applies only to 'rescaling', got it for {symmetry!r}")
    _require_two_layer(loss, repr(symmetry))
    if symmetry == "gl":
        return _gl_spec(loss)
    if symmetry == "rescaling":
        return _rescaling_spec(loss, alpha)
    if symmetry == "data_dependent_gl":
        return _data_dependent_gl_spec(loss)
    return _softmax_shift_spec(loss)


def algebra_shape(loss: ParamLoss, symmetry: str) -> tuple[int, ...]:
    """Shape of one Lie algebra element A of ``symmetry`` on ``loss``.

    ``(h, h)`` for ``"gl"`` and ``"data_dependent_gl"``, ``(h,)`` (the diagonal) for
    ``"rescaling"``, ``()`` for ``"softmax_shift"``; r = numel of this shape (paper 002, B.1).

    Raises:
        ValueError: if the symmetry does not apply to ``loss`` (see :func:`tangent_basis`).
    """
    return _spec(loss, symmetry).a_shape


def infinitesimal_action(loss: ParamLoss, symmetry: str, *, alpha: float | None = None) -> Ansatz:
    """The per-sample tangent ``(theta (P,), X (n, k), A) -> t (P,)``, linear in A.

    ``t = D_g a_X|_{I, theta}(A)`` (paper 002, Theorem B.1), with A of shape
    :func:`algebra_shape`; for "gl": ``(A W1, -W2 A[, A b1, 0])``; for "rescaling" with
    ``c = A``: ``(diag(c) W1, -alpha W2 diag(c)[, c * b1, 0])``; for "data_dependent_gl":
    ``([(A s(H)) / s'(H)] X^+, -W2 A)`` with ``H = W1 X``; for "softmax_shift": ``db2 = A 1``.
    Usable as the ``ansatz`` of :func:`null_space`.

    Raises:
        ValueError: if the symmetry does not apply to ``loss`` (see :func:`tangent_basis`).
    """
    return _spec(loss, symmetry, alpha).tangent


def group_action(loss: ParamLoss, symmetry: str, *, alpha: float | None = None) -> Ansatz:
    """The per-sample finite action ``(theta (P,), X (n, k), g) -> theta' (P,)``.

    "gl": ``(g W1, W2 g^{-1}[, g b1, b2])``, g (h, h) invertible; "rescaling": ``(diag(c) W1,
    W2 diag(c)^{-alpha}[, c * b1, b2])``, c (h,) positive; "data_dependent_gl": ``(W1 +
    [s^{-1}(g s(H)) - H] X^+, W2 g^{-1})`` with ``H = W1 X``, defined where ``g s(H)`` lies in
    the range of s; "softmax_shift": ``b2 + c`` for a scalar c (the additive group).
    Loss-invariant: ``L(a_X(g, theta), X) = L(theta, X)`` (paper 002, section 2).

    For "data_dependent_gl" this is the paper's ``(s^{-1}(g s(W1 X)) X^+, W2 g^{-1})`` plus the
    part ``W1 (I - X X^+)`` of W1 that X does not see: the same loss, the same tangent and
    ``W1' X``, and equal to it when k = n; unlike it, it fixes theta at ``g = I`` and composes,
    ``a(g2, a(g1, theta)) = a(g2 g1, theta)``, also for k < n. Group elements are not
    range-checked (that would need Python control flow on tensor values).

    Raises:
        ValueError: if the symmetry does not apply to ``loss`` (see :func:`tangent_basis`).
    """
    return _spec(loss, symmetry, alpha).action


def exp_map(symmetry: str, A: Tensor) -> Tensor:
    """The group element ``exp(A)`` of a Lie algebra element A of ``symmetry``.

    ``matrix_exp(A)`` for "gl" and "data_dependent_gl" (A (h, h)), the elementwise ``exp(A)``
    for "rescaling" (A (h,)), and ``A`` itself for the additive "softmax_shift" (paper 002, B.1:
    ``gamma(t) = a_X(exp(t A), theta)``, ``gamma'(0) = D_g a_X|_{I, theta}(A)``).
    """
    symmetry = _check_symmetry(symmetry)
    if not isinstance(A, Tensor):
        raise TypeError(f"`A` must be a Tensor, got {type(A).__name__}")
    if symmetry in ("gl", "data_dependent_gl"):
        return torch.linalg.matrix_exp(A)
    if symmetry == "rescaling":
        return torch.exp(A)
    return A


def tangent_basis(
    loss: ParamLoss, symmetry: str, *, alpha: float | None = None
) -> Callable[[Tensor, Tensor], Tensor]:
    """The per-sample tangent basis ``(theta (P,), X (n, k)) -> T (r, P)`` of a known symmetry.

    Row q of T is :func:`infinitesimal_action` at the q-th unit generator (``E_ij`` in row-major
    order for "gl" and "data_dependent_gl", ``E_jj`` for "rescaling", ``1`` for
    "softmax_shift"); the rows span the tangent space of the orbit at theta and satisfy
    ``T grad_theta L(theta, X) = 0`` (paper 002, Theorem B.1). ``r`` is h^2, h^2, h and 1.

    Args:
        loss: a net of :func:`symdisc.losses.two_layer`; h is read from ``loss.param_shapes``.
        symmetry: one of :data:`SYMMETRIES`.
        alpha: "rescaling" only: the degree in ``W2 -> W2 diag(c)^{-alpha}``; default the
            activation's degree of positive homogeneity (1 for identity, relu, leaky_relu).

    Raises:
        TypeError: if ``loss`` is not a ParamLoss, or ``alpha`` is given for another symmetry.
        ValueError: if ``symmetry`` is unknown or does not apply: "gl" needs the identity
            activation; "rescaling" a positively homogeneous one; "data_dependent_gl" an
            invertible one, no biases and k <= n; "softmax_shift" biases and the cross-entropy
            output; all need a two-layer net.
    """
    spec = _spec(loss, symmetry, alpha)
    numel = math.prod(spec.a_shape)

    def basis(theta: Tensor, X: Tensor) -> Tensor:
        E = torch.eye(numel, dtype=theta.dtype, device=theta.device).reshape(numel, *spec.a_shape)
        return torch.vmap(lambda A: spec.tangent(theta, X, A))(E)

    return basis


def gl_ansatz(loss: ParamLoss) -> Ansatz:
    """The data-independent GL(h) ansatz ``(theta (P,), X, A (h, h)) -> T_A (P,)``, any 2-layer net.

    ``T_A = (A W1, -W2 A[, A b1, 0])``, the "gl" tangent of a linear net, for every activation,
    as the ``ansatz`` of :func:`null_space`: there, only the A with ``<grad L, T_A> = 0`` on all
    samples survive (all of gl(h) for identity, the diagonal for relu and leaky_relu, none for
    sigmoid and tanh; paper 002, section 4.1 and appendix A).

    Raises:
        TypeError: if ``loss`` is not a ParamLoss.
        ValueError: if ``loss`` is not a two-layer net.
    """
    loss = _check_loss(loss)
    _require_two_layer(loss, "'gl_ansatz'")
    return _gl_tangent(loss)


# --------------------------------------------------------------------------------------------
# Discrete symmetries
# --------------------------------------------------------------------------------------------


def _discrete_structure(loss: object, what: str) -> tuple[ParamLoss, str]:
    loss = _check_loss(loss)
    kind = _structure(loss)
    if kind is None:
        raise ValueError(
            f"`loss` must be a two-layer net (W1, W2[, b1, b2]) or the three-layer tanh net with "
            f"a skip connection (W1, W2, W3) for {what}, got parameters {list(loss.param_shapes)}"
        )
    return loss, kind


def _check_theta(loss: ParamLoss, theta: object) -> Tensor:
    if not isinstance(theta, Tensor) or tuple(theta.shape) != (loss.num_params,):
        got = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        raise ValueError(
            f"`theta` must be one flat parameter vector of shape ({loss.num_params},), got {got}"
        )
    return theta


def permute_hidden(loss: ParamLoss, theta: Tensor, perm: Tensor | Sequence[int]) -> Tensor:
    """Permute the hidden units: theta (P,) -> theta' (P,) with ``L(theta', X) = L(theta, X)``.

    Two-layer net: ``W1 -> P W1``, ``b1 -> P b1``, ``W2 -> W2 P^T`` (rows of W1 and b1 and
    columns of W2 taken in the order ``perm``), for every activation; the three-layer tanh net
    with a skip: ``W1 -> P W1``, ``W2 -> P W2 P^T``, ``W3 -> W3 P^T`` (the skip ties the two
    hidden layers to one permutation). Paper 002, appendix A. Vmappable in theta (not in perm).

    Raises:
        TypeError: if ``loss`` is not a ParamLoss, or ``perm`` is not integer.
        ValueError: if ``perm`` is not a permutation of ``range(h)``, or the net is neither.
    """
    loss, kind = _discrete_structure(loss, "'permute_hidden'")
    theta = _check_theta(loss, theta)
    h = _hidden(loss)
    idx = torch.as_tensor(perm)
    if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"`perm` must hold integers, got dtype {idx.dtype}")
    if idx.shape != (h,) or sorted(idx.tolist()) != list(range(h)):
        raise ValueError(
            f"`perm` must be a permutation of range({h}) (the hidden units), got {idx.tolist()}"
        )
    idx = idx.to(device=theta.device, dtype=torch.long)
    p = loss.unflatten(theta)
    q = dict(p)
    q["W1"] = p["W1"][idx]
    if kind == "two_layer":
        q["W2"] = p["W2"][:, idx]
        if loss.bias:
            q["b1"] = p["b1"][idx]
    else:
        q["W2"] = p["W2"][idx][:, idx]
        q["W3"] = p["W3"][:, idx]
    return loss.flatten(q)


def flip_signs(loss: ParamLoss, theta: Tensor, signs: Tensor | Sequence[float]) -> Tensor:
    """Flip the signs of hidden units: theta (P,) -> theta' (P,), for odd activations.

    With ``S = diag(signs)``, signs in {+1, -1}^h and ``s(-z) = -s(z)``: two-layer net
    ``W1 -> S W1``, ``b1 -> S b1``, ``W2 -> W2 S``; three-layer tanh net with a skip
    ``W1 -> S W1``, ``W2 -> S W2 S``, ``W3 -> W3 S``. ``L(theta', X) = L(theta, X)`` exactly
    (paper 002, appendix A). Vmappable in theta (not in signs).

    Raises:
        TypeError: if ``loss`` is not a ParamLoss.
        ValueError: if the activation is not odd (identity, tanh), ``signs`` is not in
            {+1, -1}^h, or the net is neither of the two.
    """
    loss, kind = _discrete_structure(loss, "'flip_signs'")
    if loss.activation not in _ODD:
        raise ValueError(
            f"`loss` must have an odd activation {_ODD} for 'flip_signs', "
            f"got activation {loss.activation!r}"
        )
    theta = _check_theta(loss, theta)
    h = _hidden(loss)
    s = torch.as_tensor(signs)
    if s.shape != (h,) or not all(v in (1, -1) for v in s.tolist()):
        raise ValueError(
            f"`signs` must be {h} entries in {{+1, -1}} (one per hidden unit), got {s.tolist()}"
        )
    s = s.to(device=theta.device, dtype=theta.dtype)
    p = loss.unflatten(theta)
    q = dict(p)
    q["W1"] = s[:, None] * p["W1"]
    if kind == "two_layer":
        q["W2"] = p["W2"] * s[None, :]
        if loss.bias:
            q["b1"] = s * p["b1"]
    else:
        q["W2"] = s[:, None] * p["W2"] * s[None, :]
        q["W3"] = p["W3"] * s[None, :]
    return loss.flatten(q)


# --------------------------------------------------------------------------------------------
# Closed-form null-space baseline
# --------------------------------------------------------------------------------------------


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

    @property
    def generators(self) -> Tensor:
        """The null-space basis as generators, (dim, *a_shape)."""
        return self.basis.reshape(self.dim, *self.a_shape)


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
        a_shape: the shape of A; default ``(h, h)`` with h the rows of ``W1``.
        rtol: singular values ``<= rtol * largest`` count as zero; all do when the largest is
            ``<= rtol * scale`` (see :class:`NullSpace`).

    Raises:
        TypeError: for a ``loss``, ``samples`` or ``ansatz`` of the wrong type.
        ValueError: for a non-positive ``rtol``, a missing ``a_shape`` (no ``W1``), samples of
            another loss, or an ansatz that does not return (P,).
    """
    loss = _check_loss(loss)
    if not isinstance(samples, Samples):
        raise TypeError(
            f"`samples` must be a symdisc.sampler.Samples, got {type(samples).__name__}"
        )
    if not callable(ansatz):
        raise TypeError(
            f"`ansatz` must be callable (theta, X, A) -> (P,), got {type(ansatz).__name__}"
        )
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0:
        raise ValueError(f"`rtol` must be a positive number, got {rtol!r}")
    if a_shape is None:
        if "W1" not in loss.param_shapes:
            raise ValueError(
                f"`a_shape` must be given for a loss without W1, got None for parameters "
                f"{list(loss.param_shapes)}"
            )
        a_shape = (_hidden(loss), _hidden(loss))
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


class KnownAction(Action):
    """A known continuous symmetry as an :class:`~symdisc.actions.Action` of GL(h) matrices.

    ``forward(g (h, h), theta, X)`` applies :func:`group_action`; for "rescaling" the group is the
    positive diagonal matrices and the diagonal of g is used, so that ``D_g a|_I(A)`` is the
    rescaling tangent of ``diag(A)``. Lets known symmetries go wherever learned actions go
    (:mod:`symdisc.compose`, :mod:`symdisc.metrics`). "softmax_shift" is not a matrix group and
    is not offered.

    Raises:
        ValueError: if the symmetry does not apply to ``loss``, or is "softmax_shift".
    """

    data_dependent = True

    def __init__(self, loss: ParamLoss, symmetry: str, *, alpha: float | None = None) -> None:
        super().__init__()
        if symmetry == "softmax_shift":
            raise ValueError("`symmetry` 'softmax_shift' is additive, not a matrix group")
        self._act = group_action(loss, symmetry, alpha=alpha)
        self.symmetry = symmetry
        self.d = _hidden(loss)

    def forward(self, g: Tensor, theta: Tensor, X: Tensor) -> Tensor:
        element = torch.diagonal(g) if self.symmetry == "rescaling" else g
        return self._act(theta, X, element)

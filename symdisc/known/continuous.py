"""Known continuous symmetries of two-layer nets, as tangent vectors and as finite actions.

Paper 002, section 2 and appendix B.1: a symmetry is a (possibly data-dependent) group action
``a_X(g, theta)`` with ``L(a_X(g, theta), X) = L(theta, X)``; its infinitesimal form is the
tangent ``t = D_g a_X|_{I, theta}(A)`` per Lie algebra element A, with ``<grad_theta L, t> = 0``
(Theorem B.1). For a :class:`~symdisc.losses.TwoLayerLoss` (sections 4.1 and 4.2, appendix A):

==========================  ==============================  ======================  ============
symmetry                    applies to                      generator A             r
==========================  ==============================  ======================  ============
``"gl"``                    identity activation             (h, h)                  h^2
``"rescaling"``             identity, relu, leaky_relu      (h,) (diagonal)         h
``"data_dependent_gl"``     identity, leaky_relu, sigmoid,  (h, h)                  h^2
                            tanh; no biases; k <= n
``"softmax_shift"``         biases, cross-entropy output    () (a scalar)           1
==========================  ==============================  ======================  ============

Deep nets (:mod:`symdisc.known.deep`: an :class:`~symdisc.losses.MLPLoss`, or a
:class:`~symdisc.losses.ModuleLoss` of an ``nn.Sequential`` of ``nn.Linear`` layers with
``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Identity`` or nothing between them, with or without biases)
have the two-layer symmetries at every hidden layer l (width h_l), between the linear layers l and
l + 1 (paper 002, section 3); the names mean the same, applied to every hidden layer at once:

==========================  ==============================  ======================  ============
symmetry                    applies to                      generator A             r
==========================  ==============================  ======================  ============
``"gl"``                    identity after every hidden     (sum_l h_l^2,): A_l     sum_l h_l^2
                            layer                           (h_l, h_l) row-major,
                                                            concatenated
``"rescaling"``             positively homogeneous after    (sum_l h_l,): c_l       sum_l h_l
                            every hidden layer              concatenated
==========================  ==============================  ======================  ============

No continuous symmetry is known here for the other kinds of loss; asking for one raises a
TypeError naming the kind. Every per-sample function takes ONE sample, theta (P,) and X (n, k),
and is meant to be lifted with :func:`torch.vmap`; nothing writes into its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import singledispatch

import torch
from torch import Tensor

from symdisc.curvature import Params
from symdisc.known._checks import check_element, check_sample
from symdisc.known.deep import DeepNet, deep_net, inverse
from symdisc.losses import (
    HOMOGENEOUS,
    INVERTIBLE,
    MLPLoss,
    ModuleLoss,
    ParamLoss,
    TwoLayerLoss,
    activation_derivative,
    activation_fn,
    activation_inverse,
)
from symdisc.runtime.checks import check_choice, check_float, check_instance, check_int
from symdisc.validation import check_tensor

__all__ = [
    "SYMMETRIES",
    "Ansatz",
    "algebra_shape",
    "exp_map",
    "gl_ansatz",
    "group_action",
    "infinitesimal_action",
    "tangent_basis",
    "unit_generators",
]

SYMMETRIES: tuple[str, ...] = ("gl", "rescaling", "data_dependent_gl", "softmax_shift")

Ansatz = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(theta (P,), X, A) -> (P,)``: a tangent per algebra element A, or a finite action per g."""

_Map = Callable[[Params, Tensor, Tensor], Params]


@dataclass(frozen=True)
class _Spec:
    """One symmetry on one loss: the element shape and the two maps on parameter dicts."""

    loss: ParamLoss
    a_shape: tuple[int, ...]
    tangent_map: _Map  # (params, X, A) -> tangent dict, linear in A
    action_map: _Map  # (params, X, g) -> moved params

    def tangent(self, theta: Tensor, X: Tensor, A: Tensor) -> Tensor:
        """The tangent (P,) at theta (P,), X of element A."""
        return self._apply(self.tangent_map, "A", theta, X, A)

    def action(self, theta: Tensor, X: Tensor, g: Tensor) -> Tensor:
        """The moved theta' (P,) of theta (P,), X by group element g."""
        return self._apply(self.action_map, "g", theta, X, g)

    def _apply(self, fn: _Map, name: str, theta: Tensor, X: Tensor, element: Tensor) -> Tensor:
        check_sample(self.loss, theta, X)
        check_element(name, element, self.a_shape)
        return self.loss.flatten(fn(self.loss.unflatten(theta), X, element))


# --------------------------------------------------------------------------------------------
# The symmetries of a two-layer net (their conditions are checked by the dispatcher below)
# --------------------------------------------------------------------------------------------


def _gl(loss: TwoLayerLoss) -> _Spec:
    def tangent(p: Params, X: Tensor, A: Tensor) -> Params:
        d = {"W1": A @ p["W1"], "W2": -(p["W2"] @ A)}
        if loss.bias:
            d["b1"] = A @ p["b1"]
            d["b2"] = torch.zeros_like(p["b2"])
        return d

    def action(p: Params, X: Tensor, g: Tensor) -> Params:
        # W2 g^-1 by inv: the jvp of linalg.solve(left=False) gives NaN under nested vmap
        q = {"W1": g @ p["W1"], "W2": p["W2"] @ inverse(g)}
        if loss.bias:
            q["b1"] = g @ p["b1"]
            q["b2"] = p["b2"]
        return q

    return _Spec(loss, (loss.h, loss.h), tangent, action)


def _rescaling(loss: TwoLayerLoss, a: float) -> _Spec:
    def tangent(p: Params, X: Tensor, c: Tensor) -> Params:
        d = {"W1": c[:, None] * p["W1"], "W2": -a * (p["W2"] * c[None, :])}
        if loss.bias:
            d["b1"] = c * p["b1"]
            d["b2"] = torch.zeros_like(p["b2"])
        return d

    def action(p: Params, X: Tensor, c: Tensor) -> Params:
        q = {"W1": c[:, None] * p["W1"], "W2": p["W2"] * torch.pow(c, -a)[None, :]}
        if loss.bias:
            q["b1"] = c * p["b1"]
            q["b2"] = p["b2"]
        return q

    return _Spec(loss, (loss.h,), tangent, action)


def _data_dependent_gl(loss: TwoLayerLoss) -> _Spec:
    act = loss.activation
    s = activation_fn(act)

    def tangent(p: Params, X: Tensor, A: Tensor) -> Params:
        H = p["W1"] @ X
        S = s(H)
        dW1 = ((A @ S) / activation_derivative(act, H, S)) @ torch.linalg.pinv(X)
        return {"W1": dW1, "W2": -(p["W2"] @ A)}

    def action(p: Params, X: Tensor, g: Tensor) -> Params:
        H = p["W1"] @ X
        W1 = p["W1"] + (activation_inverse(act, g @ s(H)) - H) @ torch.linalg.pinv(X)
        return {"W1": W1, "W2": p["W2"] @ inverse(g)}

    return _Spec(loss, (loss.h, loss.h), tangent, action)


def _softmax_shift(loss: TwoLayerLoss) -> _Spec:
    def tangent(p: Params, X: Tensor, c: Tensor) -> Params:
        d = {name: torch.zeros_like(v) for name, v in p.items()}
        d["b2"] = c * torch.ones_like(p["b2"])
        return d

    def action(p: Params, X: Tensor, c: Tensor) -> Params:
        return {**p, "b2": p["b2"] + c}

    return _Spec(loss, (), tangent, action)


@singledispatch
def _spec(loss: ParamLoss, symmetry: str, alpha: float | None) -> _Spec:
    raise TypeError(
        f"`loss` must be a TwoLayerLoss, an MLPLoss or a ModuleLoss for {symmetry!r}: no "
        f"continuous symmetry is known for {type(loss).__name__}"
    )


@_spec.register(TwoLayerLoss)
def _two_layer_spec(loss: TwoLayerLoss, symmetry: str, alpha: float | None) -> _Spec:
    activation = loss.activation
    if symmetry == "gl":
        if activation != "identity":
            raise ValueError(
                f"`loss` must be a two-layer net with the identity activation for 'gl', "
                f"got activation {activation!r}"
            )
        return _gl(loss)
    if symmetry == "rescaling":
        if activation not in HOMOGENEOUS:
            raise ValueError(
                f"`loss` must be a two-layer net with a positively homogeneous activation "
                f"{tuple(HOMOGENEOUS)} for 'rescaling', got activation {activation!r}"
            )
        return _rescaling(loss, HOMOGENEOUS[activation] if alpha is None else alpha)
    if symmetry == "data_dependent_gl":
        if activation not in INVERTIBLE:
            raise ValueError(
                f"`loss` must be a two-layer net with an invertible activation {INVERTIBLE} for "
                f"'data_dependent_gl', got activation {activation!r}"
            )
        if loss.bias:
            raise ValueError(
                "`loss` must be a two-layer net without biases for 'data_dependent_gl', "
                "got bias=True"
            )
        if loss.k > loss.n:
            raise ValueError(
                f"`loss` must take k <= n data points (X of shape (n, k)) for "
                f"'data_dependent_gl', got X of shape {tuple(loss.x_shape)}"
            )
        return _data_dependent_gl(loss)
    if not (loss.bias and loss.output == "cross_entropy"):
        raise ValueError(
            "`loss` must be a two-layer net with biases and output='cross_entropy' for "
            f"'softmax_shift', got bias={loss.bias} and output={loss.output!r}"
        )
    return _softmax_shift(loss)


@_spec.register(MLPLoss)
@_spec.register(ModuleLoss)
def _deep_spec(loss: MLPLoss | ModuleLoss, symmetry: str, alpha: float | None) -> _Spec:
    net = deep_net(loss)
    # symmetry -> (which hidden layers admit it, what they need, (tangent, action), algebra shape)
    kinds = {
        "rescaling": (
            net.homogeneous,
            f"positively homogeneous activations {tuple(HOMOGENEOUS)}",
            lambda: net.rescaling_maps(1.0 if alpha is None else alpha),
            net.rescaling_shape,
        ),
        "gl": (net.identity, "the identity activation", net.gl_maps, net.gl_shape),
    }
    if symmetry in kinds:
        admits, needs, maps, shape = kinds[symmetry]
        bad = [i for i, ok in enumerate(admits, 1) if not ok]
        if bad:
            raise ValueError(
                f"`loss` must be a deep net with {needs} for {symmetry!r}, "
                f"got {_activations(net, bad)}"
            )
        tangent, action = maps()
        return _Spec(loss, shape(), tangent, action)
    raise ValueError(
        f"`symmetry` must be 'gl' or 'rescaling' for a deep net ({net.kind}), got {symmetry!r}"
    )


def _activations(net: DeepNet, layers: list[int]) -> str:
    return ", ".join(f"activation {net.activations[i - 1]!r} after layer {i}" for i in layers)


def _known(loss: object, symmetry: object, alpha: object = None) -> _Spec:
    check_instance(loss, "loss", ParamLoss)
    check_choice(symmetry, "symmetry", SYMMETRIES)
    if alpha is not None:
        if symmetry != "rescaling":
            raise TypeError(f"`alpha` applies only to 'rescaling', got it for {symmetry!r}")
        alpha = check_float(alpha, "alpha")
    return _spec(loss, symmetry, alpha)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def algebra_shape(loss: ParamLoss, symmetry: str) -> tuple[int, ...]:
    """Shape of one Lie algebra element A of ``symmetry`` on ``loss``.

    ``(h, h)`` for ``"gl"`` and ``"data_dependent_gl"``, ``(h,)`` (the diagonal) for
    ``"rescaling"``, ``()`` for ``"softmax_shift"``; r = numel of this shape (paper 002, B.1).
    For a deep net with hidden widths h_1 .. h_{L-1}: ``(sum_l h_l^2,)`` for ``"gl"`` (the A_l
    flattened row-major and concatenated) and ``(sum_l h_l,)`` for ``"rescaling"``.

    Raises:
        TypeError, ValueError: if the symmetry does not apply to ``loss`` (see
            :func:`tangent_basis`).
    """
    return _known(loss, symmetry).a_shape


def unit_generators(loss: ParamLoss, symmetry: str, d: int) -> Tensor | None:
    """The unit generators of a known matrix symmetry embedded in gl(d), for figures.

    ``E_ij`` (i, j < h, row-major) for ``"gl"`` and ``"data_dependent_gl"`` on h hidden units
    (GL(h), paper 002, section 4.1), ``E_jj`` (j < h) for ``"rescaling"`` (its diagonal
    subgroup), as a (r, d, d) tensor to show next to learned generators (Figs. 2-5). Learned
    generators live in the coordinates the learned action chose, so the comparison is up to a
    change of basis of gl(d).

    Returns:
        (r, d, d) float32, or None when the symmetry is not a matrix group of one hidden layer
        (``"softmax_shift"``, deep nets) or does not fit in gl(d) (h > d).

    Raises:
        TypeError, ValueError: as :func:`algebra_shape`, and for ``d`` < 1.
    """
    d = check_int(d, "d", minimum=1)
    shape = algebra_shape(loss, symmetry)
    if symmetry in ("gl", "data_dependent_gl") and len(shape) == 2 and shape[0] <= d:
        pairs = [(i, j) for i in range(shape[0]) for j in range(shape[1])]
    elif symmetry == "rescaling" and len(shape) == 1 and shape[0] <= d and not _is_deep(loss):
        pairs = [(j, j) for j in range(shape[0])]
    else:
        return None
    out = torch.zeros(len(pairs), d, d)
    for n, (i, j) in enumerate(pairs):
        out[n, i, j] = 1.0
    return out


def _is_deep(loss: ParamLoss) -> bool:
    return isinstance(loss, (MLPLoss, ModuleLoss))


def infinitesimal_action(loss: ParamLoss, symmetry: str, *, alpha: float | None = None) -> Ansatz:
    """The per-sample tangent ``(theta (P,), X (n, k), A) -> t (P,)``, linear in A.

    ``t = D_g a_X|_{I, theta}(A)`` (paper 002, Theorem B.1), with A of shape
    :func:`algebra_shape`; for "gl": ``(A W1, -W2 A[, A b1, 0])``; for "rescaling" with
    ``c = A``: ``(diag(c) W1, -alpha W2 diag(c)[, c * b1, 0])``; for "data_dependent_gl":
    ``([(A s(H)) / s'(H)] X^+, -W2 A)`` with ``H = W1 X``; for "softmax_shift": ``db2 = A 1``.
    Deep nets: the sum over hidden layers l of the two-layer tangent of layers l and l + 1, e.g.
    "gl": ``dW_l += A_l W_l``, ``db_l += A_l b_l``, ``dW_{l+1} -= W_{l+1} A_l``.
    Usable as the ``ansatz`` of :func:`symdisc.known.null_space`.

    Raises:
        TypeError, ValueError: if the symmetry does not apply to ``loss`` (see
            :func:`tangent_basis`).
    """
    return _known(loss, symmetry, alpha).tangent


def group_action(loss: ParamLoss, symmetry: str, *, alpha: float | None = None) -> Ansatz:
    """The per-sample finite action ``(theta (P,), X (n, k), g) -> theta' (P,)``.

    "gl": ``(g W1, W2 g^{-1}[, g b1, b2])``, g (h, h) invertible; "rescaling": ``(diag(c) W1,
    W2 diag(c)^{-alpha}[, c * b1, b2])``, c (h,) positive; "data_dependent_gl": ``(W1 +
    [s^{-1}(g s(H)) - H] X^+, W2 g^{-1})`` with ``H = W1 X``, defined where ``g s(H)`` lies in
    the range of s; "softmax_shift": ``b2 + c`` for a scalar c (the additive group). Deep
    nets: ``W_l -> g_l W_l g_{l-1}^{-1}``, ``b_l -> g_l b_l`` for "gl", with g (sum_l h_l^2,)
    the g_l flattened row-major and concatenated (exponentiate each block A_l with
    ``torch.linalg.matrix_exp``: :func:`exp_map` does not know the blocks); ``W_l -> diag(c_l)
    W_l diag(c_{l-1})^{-alpha}``, ``b_l -> c_l * b_l`` for "rescaling" (``c_0 = c_L = 1``).
    Loss-invariant: ``L(a_X(g, theta), X) = L(theta, X)`` (paper 002, section 2).

    For "data_dependent_gl" this is the paper's ``(s^{-1}(g s(W1 X)) X^+, W2 g^{-1})`` plus the
    part ``W1 (I - X X^+)`` of W1 that X does not see: the same loss, the same tangent and
    ``W1' X``, and equal to it when k = n; unlike it, it fixes theta at ``g = I`` and composes,
    ``a(g2, a(g1, theta)) = a(g2 g1, theta)``, also for k < n. Group elements are not
    range-checked (that would need Python control flow on tensor values), except that the
    inverse of a singular g of "gl" and "data_dependent_gl" fails with a ValueError naming
    ``g``, also for one element of a vmapped batch.

    Raises:
        TypeError, ValueError: if the symmetry does not apply to ``loss`` (see
            :func:`tangent_basis`). The returned function raises ValueError for theta, X or g
            of the wrong shape, and for a singular g of "gl" or "data_dependent_gl" (a singular
            block g_l of a deep net's "gl"), under :func:`torch.vmap` too.
    """
    return _known(loss, symmetry, alpha).action


def exp_map(symmetry: str, A: Tensor) -> Tensor:
    """The group element ``exp(A)`` of a Lie algebra element A of ``symmetry``.

    ``matrix_exp(A)`` for "gl" and "data_dependent_gl" (A (h, h)), the elementwise ``exp(A)``
    for "rescaling" (A (h,)), and ``A`` itself for the additive "softmax_shift" (paper 002, B.1:
    ``gamma(t) = a_X(exp(t A), theta)``, ``gamma'(0) = D_g a_X|_{I, theta}(A)``).

    Raises:
        TypeError: for an ``A`` that is not a floating tensor.
        ValueError: for an unknown ``symmetry``, an ``A`` that is not square for "gl" and
            "data_dependent_gl", or with NaN or Inf entries.
    """
    check_choice(symmetry, "symmetry", SYMMETRIES)
    check_tensor(A, "A", floating=True, finite=True)
    if symmetry in ("gl", "data_dependent_gl") and (A.ndim < 2 or A.shape[-1] != A.shape[-2]):
        raise ValueError(
            f"`A` of {symmetry!r} must be a square matrix (h, h) (or a batch (..., h, h)), got "
            f"shape {tuple(A.shape)}"
        )
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

    For a deep net (hidden widths h_1 .. h_{L-1}) the rows go hidden layer by hidden layer:
    "rescaling" has one row per hidden unit j of layer l, ``(+ row j of W_l and b_l[j], - column
    j of W_{l+1})`` (r = sum_l h_l); "gl" has the rows of ``E_ij`` (row-major) of each layer in
    turn, ``(E_ij W_l, E_ij b_l, -W_{l+1} E_ij)`` (r = sum_l h_l^2). For a ModuleLoss the row is
    laid out in the loss's flat parameter order (``loss.param_shapes``).

    Example (a 2-3-3-1 ReLU net with biases; r = 3 + 3 = 6, P = 9 + 12 + 4 = 25)::

        net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(),
                            nn.Linear(3, 1))
        loss = module_loss(net, loss_fn, data, list(net))
        T = torch.vmap(tangent_basis(loss, "rescaling"))(samples.theta, samples.X)  # (N, 6, 25)

    Args:
        loss: a :class:`~symdisc.losses.TwoLayerLoss` (:func:`symdisc.losses.two_layer`), an
            :class:`~symdisc.losses.MLPLoss` (:func:`symdisc.losses.mlp`), or a
            :class:`~symdisc.losses.ModuleLoss` of an ``nn.Sequential`` of ``nn.Linear``
            layers with ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Identity`` or nothing between them,
            acting on all of their weights and biases.
        symmetry: one of :data:`SYMMETRIES` ("gl" or "rescaling" for a deep net).
        alpha: "rescaling" only: the degree in ``W2 -> W2 diag(c)^{-alpha}``; default the
            activation's degree of positive homogeneity (1 for identity, relu, leaky_relu).

    Raises:
        TypeError: if ``loss`` is not a ParamLoss, is a kind of loss without known continuous
            symmetries (a TanhSkipLoss), is a ModuleLoss of a module other than an
            ``nn.Sequential`` of the layers above (the message names the module), or ``alpha``
            is given for another symmetry or is not a real number.
        ValueError: if ``symmetry`` is unknown or does not apply: "gl" needs the identity
            activation (after every hidden layer of a deep net); "rescaling" a positively
            homogeneous one; "data_dependent_gl" an invertible one, no biases and k <= n;
            "softmax_shift" biases and the cross-entropy output; a deep net has only "gl" and
            "rescaling", at least two linear layers, and a ModuleLoss must act on every weight
            and bias of its linear layers.
    """
    spec = _known(loss, symmetry, alpha)
    numel = math.prod(spec.a_shape)

    def basis(theta: Tensor, X: Tensor) -> Tensor:
        E = torch.eye(numel, dtype=theta.dtype, device=theta.device).reshape(numel, *spec.a_shape)
        return torch.vmap(lambda A: spec.tangent(theta, X, A))(E)

    return basis


def gl_ansatz(loss: TwoLayerLoss | MLPLoss | ModuleLoss) -> Ansatz:
    """The data-independent GL(h) ansatz ``(theta (P,), X, A (h, h)) -> T_A (P,)``, any 2-layer net.

    ``T_A = (A W1, -W2 A[, A b1, 0])``, the "gl" tangent of a linear net, for every activation,
    as the ``ansatz`` of :func:`symdisc.known.null_space`: there, only the A with
    ``<grad L, T_A> = 0`` on all samples survive (all of gl(h) for identity, the diagonal for
    relu and leaky_relu, none for sigmoid and tanh; paper 002, section 4.1 and appendix A).

    For a deep net (an MLPLoss, or a ModuleLoss as in :func:`tangent_basis`), the deep "gl"
    tangent for every activation, A of shape ``(sum_l h_l^2,)`` (see :func:`algebra_shape`;
    the default ``a_shape`` of :func:`symdisc.known.null_space`): the null space is then the
    per-layer diagonals (sum_l h_l) for relu and leaky_relu, everything for identity.

    Raises:
        TypeError: if ``loss`` is not a TwoLayerLoss, an MLPLoss or a ModuleLoss, or is a
            ModuleLoss of another module than in :func:`tangent_basis`.
        ValueError: see :func:`tangent_basis` for a deep net's structure.
    """
    if isinstance(loss, (MLPLoss, ModuleLoss)):
        net = deep_net(loss)
        return _Spec(loss, net.gl_shape(), *net.gl_maps()).tangent
    check_instance(loss, "loss", TwoLayerLoss)
    return _gl(loss).tangent

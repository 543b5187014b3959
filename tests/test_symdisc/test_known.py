"""Known symmetries of the loss zoo: loss invariance of tangents and finite actions, their
agreement by finite differences, discrete symmetries, the null-space baseline, and errors.

Everything in float64; per-sample functions are lifted with ``torch.vmap`` over ~20 samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from symdisc.known import (
    SYMMETRIES,
    NullSpace,
    algebra_shape,
    exp_map,
    flip_signs,
    gl_ansatz,
    group_action,
    infinitesimal_action,
    null_space,
    permute_hidden,
    tangent_basis,
)
from symdisc.losses import (
    LEAKY_SLOPE,
    ParamLoss,
    mlp,
    module_loss,
    three_layer_tanh_skip,
    two_layer,
)
from symdisc.sampler import sample

DT = torch.float64
N = 20


@dataclass(frozen=True)
class Case:
    symmetry: str
    activation: str
    bias: bool
    output: str
    shape: tuple[int, int, int, int]  # (m, h, n, k)

    @property
    def loss(self) -> ParamLoss:
        m, h, n, k = self.shape
        return two_layer(self.activation, m, h, n, k, bias=self.bias, output=self.output)

    @property
    def id(self) -> str:
        m, h, n, k = self.shape
        tag = "b" if self.bias else "nob"
        return f"{self.symmetry}-{self.activation}-{tag}-{self.output}-m{m}h{h}n{n}k{k}"


CASES = (
    [
        Case("gl", "identity", False, "mse", (1, 1, 1, 1)),
        Case("gl", "identity", False, "mse", (2, 3, 4, 5)),
        Case("gl", "identity", True, "mse", (3, 2, 1, 4)),
        Case("gl", "identity", True, "cross_entropy", (3, 2, 4, 5)),
    ]
    + [
        Case("rescaling", a, b, "mse", s)
        for a in ("identity", "relu", "leaky_relu")
        for b, s in ((False, (2, 3, 4, 5)), (True, (3, 2, 1, 4)))
    ]
    + [
        Case("rescaling", "relu", False, "mse", (1, 1, 1, 1)),
        Case("rescaling", "leaky_relu", True, "cross_entropy", (3, 2, 4, 5)),
    ]
    + [
        Case("data_dependent_gl", a, False, "mse", s)
        for a in ("identity", "leaky_relu", "sigmoid", "tanh")
        for s in ((2, 3, 4, 2), (1, 3, 3, 3))
    ]
    + [
        Case("data_dependent_gl", "identity", False, "mse", (1, 1, 1, 1)),
        Case("data_dependent_gl", "tanh", False, "mse", (3, 2, 5, 1)),
        Case("data_dependent_gl", "sigmoid", False, "cross_entropy", (2, 3, 4, 2)),
    ]
    + [
        Case("softmax_shift", a, True, "cross_entropy", s)
        for a, s in (
            ("identity", (3, 2, 4, 5)),
            ("relu", (2, 3, 1, 1)),
            ("leaky_relu", (3, 2, 4, 5)),
            ("sigmoid", (3, 2, 4, 5)),
            ("tanh", (4, 3, 2, 1)),
        )
    ]
)
EXPECTED_R = {
    "gl": lambda h: h * h,
    "rescaling": lambda h: h,
    "data_dependent_gl": lambda h: h * h,
    "softmax_shift": lambda h: 1,
}


def _seed(case: Case) -> int:
    return sum(map(ord, case.id)) % 10_000


def _samples(case: Case, n: int):
    """Samples; smaller for the data-dependent action, whose s^-1 is steep near saturation."""
    scale = 0.5 if case.symmetry == "data_dependent_gl" else 1.0
    return sample(case.loss, n, theta_scale=scale, x_scale=scale, dtype=DT, seed=_seed(case))


def _generators(case: Case, n: int, scale: float) -> Tensor:
    g = torch.Generator().manual_seed(_seed(case) + 1)
    return scale * torch.randn(n, *algebra_shape(case.loss, case.symmetry), generator=g, dtype=DT)


def _cosines(grad: Tensor, directions: Tensor) -> Tensor:
    """|<g_i, t_ir>| / (||g_i|| ||t_ir||) for grad (N, P) and directions (N, r, P)."""
    dots = torch.einsum("np,nrp->nr", grad, directions)
    return dots.abs() / (grad.norm(dim=1)[:, None] * directions.norm(dim=2))


# --------------------------------------------------------------------------------------------
# Continuous symmetries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_tangents_are_orthogonal_to_the_gradient(case: Case) -> None:
    loss = case.loss
    s = _samples(case, N)
    T = torch.vmap(tangent_basis(loss, case.symmetry))(s.theta, s.X)
    h = case.shape[1]
    assert T.shape == (N, EXPECTED_R[case.symmetry](h), loss.num_params)
    assert (T.norm(dim=2) > 0).all()
    live = s.grad.norm(dim=1) > 0  # a ReLU net with all units dead has no gradient
    assert live.double().mean() >= 0.3
    assert _cosines(s.grad[live], T[live]).max() < 1e-10
    # Control: the same measure on random directions is far from zero.
    v = torch.randn(N, 1, loss.num_params, generator=torch.Generator().manual_seed(7), dtype=DT)
    assert (_cosines(s.grad[live], v[live])[:, 0] > 1e-3).double().mean() >= 0.8


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_tangents_match_finite_differences_of_the_action(case: Case) -> None:
    loss, sym = case.loss, case.symmetry
    s = _samples(case, 6)
    theta0, X0 = s.theta.clone(), s.X.clone()
    A = _generators(case, 6, 1.0)
    act, eps = group_action(loss, sym), 1e-5

    def central(theta: Tensor, X: Tensor, a: Tensor) -> Tensor:
        plus = act(theta, X, exp_map(sym, eps * a))
        minus = act(theta, X, exp_map(sym, -eps * a))
        return (plus - minus) / (2 * eps)

    fd = torch.vmap(central)(s.theta, s.X, A)
    T = torch.vmap(tangent_basis(loss, sym))(s.theta, s.X)
    predicted = torch.einsum("nr,nrp->np", A.reshape(6, -1), T)
    direct = torch.vmap(infinitesimal_action(loss, sym))(s.theta, s.X, A)
    torch.testing.assert_close(direct, predicted, rtol=1e-12, atol=1e-12)
    err = (fd - predicted).norm(dim=1) / predicted.norm(dim=1)
    assert err.max() < 1e-6
    assert torch.equal(s.theta, theta0) and torch.equal(s.X, X0)  # inputs untouched


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_finite_action_is_loss_invariant_and_a_group_action(case: Case) -> None:
    loss, sym = case.loss, case.symmetry
    s = _samples(case, N)
    act = group_action(loss, sym)
    scale = 0.1 if sym == "data_dependent_gl" else 0.5
    A1, A2 = _generators(case, N, scale), _generators(case, N, scale).flip(0)
    g1, g2 = exp_map(sym, A1), exp_map(sym, A2)
    moved = torch.vmap(act)(s.theta, s.X, g1)
    if sym == "data_dependent_gl":  # where g s(H) leaves the range of s, the action is undefined
        ok = torch.isfinite(moved).all(dim=1)
        assert ok.double().mean() >= 0.5
    else:
        ok = torch.ones(N, dtype=torch.bool)
    assert (moved[ok] - s.theta[ok]).norm(dim=1).median() > 1e-2  # it moves
    after = torch.vmap(loss.flat)(moved[ok], s.X[ok], s.Y[ok])
    torch.testing.assert_close(after, s.loss[ok], rtol=1e-8, atol=1e-8)
    # Axioms: a(I, theta) = theta and a(g2, a(g1, theta)) = a(g2 g1, theta).
    identity = exp_map(sym, torch.zeros_like(A1))
    torch.testing.assert_close(torch.vmap(act)(s.theta, s.X, identity), s.theta)
    g21 = g2 * g1 if sym == "rescaling" else g2 + g1 if sym == "softmax_shift" else g2 @ g1
    twice = torch.vmap(act)(moved, s.X, g2)
    once = torch.vmap(act)(s.theta, s.X, g21)
    fine = ok & torch.isfinite(twice).all(dim=1) & torch.isfinite(once).all(dim=1)
    assert fine.double().mean() >= 0.5
    torch.testing.assert_close(twice[fine], once[fine], rtol=1e-8, atol=1e-8)


def _literal_inverse(activation: str, y: Tensor) -> Tensor:
    if activation == "sigmoid":
        return torch.log(y / (1 - y))
    if activation == "tanh":
        return 0.5 * torch.log((1 + y) / (1 - y))
    if activation == "leaky_relu":
        return torch.where(y >= 0, y, y / LEAKY_SLOPE)
    return y


def _in_range(activation: str, y: Tensor) -> Tensor:
    if activation == "sigmoid":
        return ((y > 0) & (y < 1)).all()
    if activation == "tanh":
        return (y.abs() < 1).all()
    return torch.ones((), dtype=torch.bool)


@pytest.mark.parametrize("activation", ["identity", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(2, 3, 3, 3), (1, 3, 4, 2), (2, 2, 5, 1)], ids=str)
def test_data_dependent_gl_literal_formula_is_loss_invariant(activation, shape) -> None:
    """The paper's ``(s^-1(g s(W1 X)) X^+, W2 g^-1)``, written out here, keeps the loss."""
    m, h, n, k = shape
    loss = two_layer(activation, m, h, n, k)
    s = sample(loss, N, theta_scale=0.5, x_scale=0.5, dtype=DT, seed=3)
    gen = torch.Generator().manual_seed(4)
    A = 0.1 * torch.randn(N, h, h, generator=gen, dtype=DT)
    act_fn = {
        "identity": lambda z: z,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, LEAKY_SLOPE),
    }[activation]
    kept, differ = 0, 0
    for i in range(N):  # literal, sample by sample
        p = loss.unflatten(s.theta[i])
        X, g = s.X[i], torch.linalg.matrix_exp(A[i])
        gS = g @ act_fn(p["W1"] @ X)
        if not _in_range(activation, gS):
            continue
        W1 = _literal_inverse(activation, gS) @ torch.linalg.pinv(X)
        W2 = p["W2"] @ torch.linalg.inv(g)
        new = loss.fn({"W1": W1, "W2": W2}, X, s.Y[i])
        assert abs(float(new - s.loss[i])) <= 1e-8 * max(1.0, abs(float(s.loss[i])))
        kept += 1
        ours = group_action(loss, "data_dependent_gl")(s.theta[i], X, g)
        literal = loss.flatten({"W1": W1, "W2": W2})
        if k == n:  # the module's action is the literal formula when X is square
            torch.testing.assert_close(ours, literal, rtol=1e-8, atol=1e-8)
        else:  # it keeps the part of W1 that X does not see; W1' X and the loss agree
            differ += int(not torch.allclose(ours, literal))
    assert kept >= N // 2
    if k < n:
        assert differ == kept
        # ... which the literal formula drops even at g = I: it is no group action for k < n.
        W1, X = loss.unflatten(s.theta[0])["W1"], s.X[0]
        assert not torch.allclose(W1 @ X @ torch.linalg.pinv(X), W1)


def test_rescaling_alpha_is_passed_through() -> None:
    """alpha = 2 on a ReLU net: the tangent of its own action, and (control) no symmetry."""
    loss = two_layer("relu", 2, 3, 4, 5, bias=True)
    s = sample(loss, N, dtype=DT, seed=11)
    T = torch.vmap(tangent_basis(loss, "rescaling", alpha=2.0))(s.theta, s.X)
    assert (_cosines(s.grad, T) > 1e-3).double().mean() >= 0.8
    T1 = torch.vmap(tangent_basis(loss, "rescaling"))(s.theta, s.X)
    W2 = slice(12, 18)  # W1 (3, 4) comes first, then W2 (2, 3)
    torch.testing.assert_close(T[..., W2], 2 * T1[..., W2])
    c = torch.exp(torch.randn(3, dtype=DT) * 1e-5)
    act2 = group_action(loss, "rescaling", alpha=2.0)
    p = loss.unflatten(act2(s.theta[0], s.X[0], c))
    torch.testing.assert_close(p["W2"], loss.unflatten(s.theta[0])["W2"] * c**-2)


def test_tangent_basis_rows_follow_the_unit_generators() -> None:
    """Row q of the basis is the tangent of the q-th unit generator (E_ij row-major for GL)."""
    loss = two_layer("identity", 2, 3, 4, 5, bias=True)
    s = sample(loss, 1, dtype=DT, seed=0)
    T = tangent_basis(loss, "gl")(s.theta[0], s.X[0])
    p = loss.unflatten(s.theta[0])
    i, j = 1, 2
    E = torch.zeros(3, 3, dtype=DT)
    E[i, j] = 1.0
    expected = loss.flatten(
        {"W1": E @ p["W1"], "W2": -p["W2"] @ E, "b1": E @ p["b1"], "b2": torch.zeros(2, dtype=DT)}
    )
    torch.testing.assert_close(T[3 * i + j], expected)
    ss = tangent_basis(
        two_layer("tanh", 3, 2, 4, 5, bias=True, output="cross_entropy"), "softmax_shift"
    )
    theta = torch.randn(2 * 4 + 3 * 2 + 2 + 3, dtype=DT)
    torch.testing.assert_close(
        ss(theta, torch.randn(4, 5, dtype=DT)),
        torch.cat([torch.zeros(16, dtype=DT), torch.ones(3, dtype=DT)])[None],
    )


# --------------------------------------------------------------------------------------------
# Discrete symmetries
# --------------------------------------------------------------------------------------------


def _relative_change(loss: ParamLoss, s, theta: Tensor) -> Tensor:
    after = torch.vmap(loss.flat)(theta, s.X, s.Y)
    return (after - s.loss).abs() / s.loss.abs().clamp_min(1e-300)


DISCRETE_LOSSES = {
    f"{a}-{'b' if b else 'nob'}-{o}": (a, b, o)
    for a in ("identity", "relu", "leaky_relu", "sigmoid", "tanh")
    for b, o in ((False, "mse"), (True, "cross_entropy"))
}


@pytest.mark.parametrize("key", sorted(DISCRETE_LOSSES))
def test_permute_hidden_leaves_the_loss_unchanged(key: str) -> None:
    a, b, o = DISCRETE_LOSSES[key]
    loss = two_layer(a, 2, 4, 3, 5, bias=b, output=o)
    s = sample(loss, N, dtype=DT, seed=5)
    perm = torch.tensor([2, 0, 3, 1])
    moved = torch.vmap(lambda t: permute_hidden(loss, t, perm))(s.theta)
    assert _relative_change(loss, s, moved).max() < 1e-12
    assert (moved - s.theta).norm(dim=1).min() > 1e-3
    back = torch.vmap(lambda t: permute_hidden(loss, t, torch.argsort(perm)))(moved)
    assert torch.equal(back, s.theta)
    # Control: permuting the rows of W1 alone changes the loss.
    p = loss.unflatten(s.theta)  # batched: W1 (N, 4, 3) is the first 12 entries of theta
    wrong = torch.cat([p["W1"][:, perm].reshape(N, -1), s.theta[:, 12:]], dim=1)
    assert (_relative_change(loss, s, wrong) > 1e-6).double().mean() >= 0.8


@pytest.mark.parametrize(
    "key", [k for k in sorted(DISCRETE_LOSSES) if DISCRETE_LOSSES[k][0] in ("identity", "tanh")]
)
def test_flip_signs_leaves_the_loss_unchanged_for_odd_activations(key: str) -> None:
    a, b, o = DISCRETE_LOSSES[key]
    loss = two_layer(a, 2, 4, 3, 5, bias=b, output=o)
    s = sample(loss, N, dtype=DT, seed=6)
    signs = [1, -1, -1, 1]
    moved = torch.vmap(lambda t: flip_signs(loss, t, signs))(s.theta)
    assert _relative_change(loss, s, moved).max() < 1e-12
    assert (moved - s.theta).norm(dim=1).min() > 1e-3
    assert torch.equal(torch.vmap(lambda t: flip_signs(loss, t, signs))(moved), s.theta)
    assert torch.equal(torch.vmap(lambda t: flip_signs(loss, t, [1] * 4))(s.theta), s.theta)


def test_discrete_symmetries_of_the_tanh_skip_net() -> None:
    loss = three_layer_tanh_skip(n=3, h=4, m=2, k=5)
    s = sample(loss, N, dtype=DT, seed=8)
    perm, signs = torch.tensor([3, 1, 0, 2]), torch.tensor([-1.0, 1.0, -1.0, -1.0])
    permuted = torch.vmap(lambda t: permute_hidden(loss, t, perm))(s.theta)
    flipped = torch.vmap(lambda t: flip_signs(loss, t, signs))(s.theta)
    for moved in (permuted, flipped):
        assert _relative_change(loss, s, moved).max() < 1e-12
        assert (moved - s.theta).norm(dim=1).min() > 1e-3


def test_sign_flips_are_refused_for_non_odd_activations() -> None:
    for a in ("sigmoid", "relu", "leaky_relu"):
        loss = two_layer(a, 1, 2, 2, 1)
        with pytest.raises(
            ValueError, match=f"`loss` must have an odd activation.*got activation '{a}'"
        ):
            flip_signs(loss, torch.zeros(loss.num_params, dtype=DT), [1, -1])
    # Control: flipping a sigmoid net by the odd-activation formula does change its loss.
    loss = two_layer("sigmoid", 2, 4, 3, 5)
    s = sample(loss, N, dtype=DT, seed=9)
    p, S = loss.unflatten(s.theta), torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=DT)
    wrong = torch.cat([(S[:, None] * p["W1"]).reshape(N, -1), (p["W2"] * S).reshape(N, -1)], 1)
    assert (_relative_change(loss, s, wrong) > 1e-6).double().mean() >= 0.8


@pytest.mark.parametrize(
    "perm, error, pattern",
    [
        ([0, 0, 1, 2], ValueError, r"`perm` must be a permutation of range\(4\).*\[0, 0, 1, 2\]"),
        ([0, 1, 2], ValueError, r"`perm` must be a permutation of range\(4\)"),
        ([0, 1, 2, 4], ValueError, r"`perm` must be a permutation"),
        (
            torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=DT),
            TypeError,
            r"`perm` must hold integers.*float64",
        ),
    ],
    ids=["repeat", "short", "out-of-range", "float"],
)
def test_invalid_permutations_are_refused(perm, error, pattern) -> None:
    loss = two_layer("relu", 2, 4, 3, 5)
    with pytest.raises(error, match=pattern):
        permute_hidden(loss, torch.zeros(loss.num_params, dtype=DT), perm)


def test_invalid_signs_and_thetas_are_refused() -> None:
    loss = two_layer("tanh", 2, 4, 3, 5)
    theta = torch.zeros(loss.num_params, dtype=DT)
    with pytest.raises(ValueError, match=r"`signs` must be 4 entries in \{\+1, -1\}"):
        flip_signs(loss, theta, [1, 0, -1, 1])
    with pytest.raises(ValueError, match=r"`signs` must be 4 entries"):
        flip_signs(loss, theta, [1, -1])
    with pytest.raises(
        ValueError, match=r"`theta` must be one flat parameter vector of shape \(20,\)"
    ):
        permute_hidden(loss, torch.zeros(3, loss.num_params), [0, 1, 2, 3])


# --------------------------------------------------------------------------------------------
# The null-space baseline
# --------------------------------------------------------------------------------------------


def _diagonal_basis(h: int) -> Tensor:
    return torch.stack([torch.diag(torch.eye(h, dtype=DT)[j]).reshape(-1) for j in range(h)])


@pytest.mark.parametrize(
    "activation, bias, expected",
    [
        ("identity", False, 9),
        ("identity", True, 9),
        ("relu", False, 3),
        ("relu", True, 3),
        ("leaky_relu", False, 3),
        ("tanh", False, 0),
        ("sigmoid", True, 0),
    ],
)
def test_gl_ansatz_null_space_dimension(activation: str, bias: bool, expected: int) -> None:
    loss = two_layer(activation, 2, 3, 4, 5, bias=bias)
    s = sample(loss, 500, dtype=DT, seed=12)
    ns = null_space(loss, s, gl_ansatz(loss))
    assert isinstance(ns, NullSpace)
    assert ns.dim == expected
    assert ns.a_shape == (3, 3) and ns.basis.shape == (expected, 9)
    assert ns.generators.shape == (expected, 3, 3)
    S = ns.singular_values
    assert S.shape == (9,) and (S[:-1] >= S[1:]).all()
    torch.testing.assert_close(ns.basis @ ns.basis.T, torch.eye(expected, dtype=DT))
    if 0 < expected < 9:  # a clear gap, not a threshold accident
        assert S[9 - expected] < 1e-9 * S[0] and S[8 - expected] > 1e-3 * S[0]
    elif expected == 0:
        assert S[-1] > 1e-3 * S[0]
    if activation in ("relu", "leaky_relu"):  # the null space is the diagonal matrices
        cos = torch.linalg.svdvals(ns.basis @ _diagonal_basis(3).T)
        torch.testing.assert_close(cos, torch.ones(3, dtype=DT), rtol=0, atol=1e-8)


def test_null_space_with_other_ansatzes() -> None:
    loss = two_layer("sigmoid", 1, 3, 4, 2)
    s = sample(loss, 200, dtype=DT, seed=13)
    ns = null_space(loss, s, infinitesimal_action(loss, "data_dependent_gl"))
    assert ns.dim == 9  # every data-dependent generator is a symmetry
    relu = two_layer("relu", 2, 3, 4, 5, bias=True)
    s = sample(relu, 200, dtype=DT, seed=14)
    ns = null_space(relu, s, infinitesimal_action(relu, "rescaling"), a_shape=(3,))
    assert ns.dim == 3 and ns.basis.shape == (3, 3)
    wrong = null_space(relu, s, infinitesimal_action(relu, "rescaling", alpha=2.0), a_shape=(3,))
    assert wrong.dim == 0


def test_null_space_with_fewer_samples_than_generators() -> None:
    loss = two_layer("tanh", 2, 3, 4, 5)
    s = sample(loss, 3, dtype=DT, seed=15)
    ns = null_space(loss, s, gl_ansatz(loss))
    assert ns.singular_values.shape == (9,) and ns.dim == 6  # 9 unknowns, 3 equations
    rows = torch.vmap(
        lambda t, X, g: torch.func.vjp(
            lambda A: gl_ansatz(loss)(t, X, A), torch.zeros(3, 3, dtype=DT)
        )[1](g)[0].reshape(-1)
    )(s.theta, s.X, s.grad)
    assert (rows @ ns.basis.T).abs().max() < 1e-10 * rows.abs().max()


def test_null_space_errors() -> None:
    loss = two_layer("relu", 2, 3, 4, 5)
    s = sample(loss, 10, dtype=DT, seed=0)
    with pytest.raises(ValueError, match="`rtol` must be a positive finite float, got 0"):
        null_space(loss, s, gl_ansatz(loss), rtol=0)
    with pytest.raises(TypeError, match="`samples` must be a Samples, got dict"):
        null_space(loss, {}, gl_ansatz(loss))
    with pytest.raises(TypeError, match="`ansatz` must be callable"):
        null_space(loss, s, None)
    with pytest.raises(
        ValueError, match=r"`ansatz` must return a tangent of shape \(18,\), got \(3, 5\)"
    ):
        null_space(loss, s, lambda theta, X, A: A @ X[:3])
    other = two_layer("relu", 2, 3, 4, 6)
    with pytest.raises(ValueError, match="`samples` must be drawn for `loss`"):
        null_space(other, s, gl_ansatz(other))
    other = _module_named_like_a_two_layer_net()
    with pytest.raises(
        ValueError, match=r"`a_shape` must be given for ModuleLoss .*nn.Sequential.*got Net"
    ):
        null_space(other, sample(other, 10, dtype=DT), lambda theta, X, A: theta)
    deep = mlp("relu", [4, 3, 2], k=5)  # a deep net's default: its per-layer GL, (9,)
    assert null_space(deep, sample(deep, 10, dtype=DT), gl_ansatz(deep)).a_shape == (9,)


# --------------------------------------------------------------------------------------------
# Errors for inapplicable symmetries
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, symmetry, pattern",
    [
        (
            two_layer("relu", 2, 3, 4, 5),
            "gl",
            r"`loss` must be a two-layer net with the identity activation for 'gl', "
            r"got activation 'relu'",
        ),
        (
            two_layer("sigmoid", 2, 3, 4, 5),
            "rescaling",
            r"`loss` must be .*positively homogeneous.*'rescaling', got activation 'sigmoid'",
        ),
        (
            two_layer("relu", 2, 3, 4, 2),
            "data_dependent_gl",
            r"`loss` must be .*invertible activation.*'data_dependent_gl', got activation 'relu'",
        ),
        (
            two_layer("tanh", 2, 3, 4, 2, bias=True),
            "data_dependent_gl",
            r"`loss` must be a two-layer net without biases .*got bias=True",
        ),
        (
            two_layer("tanh", 2, 3, 2, 3),
            "data_dependent_gl",
            r"`loss` must take k <= n .*got X of shape \(2, 3\)",
        ),
        (
            two_layer("tanh", 2, 3, 4, 5, bias=True),
            "softmax_shift",
            r"`loss` must be .*output='cross_entropy' for 'softmax_shift', "
            r"got bias=True and output='mse'",
        ),
        (
            two_layer("tanh", 2, 3, 4, 5, output="cross_entropy"),
            "softmax_shift",
            r"`loss` must be .*biases.*got bias=False",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_inapplicable_symmetries_are_refused(loss: ParamLoss, symmetry: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        tangent_basis(loss, symmetry)
    with pytest.raises(ValueError, match=pattern):
        group_action(loss, symmetry)


def _module_named_like_a_two_layer_net() -> ParamLoss:
    """A module loss whose parameters happen to be called W1 and W2: not a two-layer net."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W1 = torch.nn.Parameter(torch.randn(3, 4))
            self.W2 = torch.nn.Parameter(torch.randn(2, 3))

        def forward(self, X: Tensor) -> Tensor:
            return self.W2 @ torch.sin(self.W1 @ X)

    def data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return torch.randn(n, 4, 5, generator=g), torch.randn(n, 2, 5, generator=g)

    net = Net()
    return module_loss(net, lambda out, y: ((out - y) ** 2).sum(), data, ["W1", "W2"])


OTHER_KINDS = {
    "TanhSkipLoss": three_layer_tanh_skip,
    "MLPLoss": lambda: mlp("identity", [4, 3, 2], k=5),
    "ModuleLoss": _module_named_like_a_two_layer_net,
}


@pytest.mark.parametrize("symmetry", SYMMETRIES)
def test_continuous_symmetries_of_other_kinds_of_loss_are_refused_by_type(symmetry):
    """Dispatch is on the loss's type, never on its parameter names: a module whose parameters
    are called W1 and W2 is no two-layer net (deep nets: tests/test_symdisc/test_known_deep.py)."""
    loss = three_layer_tanh_skip()
    pattern = (
        rf"`loss` must be a TwoLayerLoss, an MLPLoss or a ModuleLoss for '{symmetry}': "
        r".* is known for TanhSkipLoss"
    )
    for build in (tangent_basis, group_action, algebra_shape):
        with pytest.raises(TypeError, match=pattern):
            build(loss, symmetry)
    with pytest.raises(TypeError, match="`loss` must be a TwoLayerLoss, got TanhSkipLoss"):
        gl_ansatz(loss)
    module = _module_named_like_a_two_layer_net()
    for build in (tangent_basis, group_action, algebra_shape):
        with pytest.raises(TypeError, match=r"`loss.model` must be an nn.Sequential .*got Net"):
            build(module, symmetry)


@pytest.mark.parametrize("kind", ["MLPLoss", "ModuleLoss"])
def test_discrete_symmetries_of_other_kinds_of_loss_are_refused_by_type(kind):
    loss = OTHER_KINDS[kind]()
    theta = torch.zeros(loss.num_params)
    for name, fn, arg in (
        ("permute_hidden", permute_hidden, [1, 0, 2]),
        ("flip_signs", flip_signs, [1, -1, 1]),
    ):
        with pytest.raises(TypeError, match=rf"TanhSkipLoss for '{name}': .* is known for {kind}"):
            fn(loss, theta, arg)


def test_argument_errors() -> None:
    loss = two_layer("identity", 2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"`symmetry` must be one of \('gl'.*got 'scaling'"):
        tangent_basis(loss, "scaling")
    with pytest.raises(TypeError, match="`loss` must be a ParamLoss, got function"):
        tangent_basis(lambda p, X, Y: 0.0, "gl")
    with pytest.raises(TypeError, match="`alpha` applies only to 'rescaling', got it for 'gl'"):
        tangent_basis(loss, "gl", alpha=2.0)
    with pytest.raises(TypeError, match="`alpha` must be a float, got str"):
        tangent_basis(loss, "rescaling", alpha="two")
    with pytest.raises(TypeError, match="`loss` must be a TwoLayerLoss, got TanhSkipLoss"):
        gl_ansatz(three_layer_tanh_skip())
    basis = tangent_basis(loss, "gl")
    with pytest.raises(
        ValueError, match=r"`theta` must be one flat parameter vector of shape \(18,\)"
    ):
        basis(torch.zeros(5, 18, dtype=DT), torch.zeros(4, 5, dtype=DT))
    with pytest.raises(
        ValueError, match=r"`X` must be one data sample of shape \(4, 5\), got \(5, 4\)"
    ):
        basis(torch.zeros(18, dtype=DT), torch.zeros(5, 4, dtype=DT))
    with pytest.raises(ValueError, match=r"`g` must have shape \(3, 3\), got \(3,\)"):
        group_action(loss, "gl")(
            torch.zeros(18, dtype=DT), torch.zeros(4, 5, dtype=DT), torch.ones(3, dtype=DT)
        )
    assert algebra_shape(loss, "gl") == (3, 3) and algebra_shape(loss, "rescaling") == (3,)
    assert (
        math.prod(
            algebra_shape(
                two_layer("relu", 2, 3, 4, 5, bias=True, output="cross_entropy"), "softmax_shift"
            )
        )
        == 1
    )


def test_unit_generators_embed_the_known_algebra_in_gl_d() -> None:
    from symdisc.known import unit_generators

    gl = unit_generators(two_layer("identity", 2, 2, 2, 2), "gl", 3)
    assert gl.shape == (4, 3, 3) and torch.equal(gl.sum(0)[:2, :2], torch.ones(2, 2))
    assert gl[:, 2].abs().sum() == 0 and gl[:, :, 2].abs().sum() == 0  # only the h x h block
    resc = unit_generators(two_layer("relu", 2, 3, 2, 2), "rescaling", 3)
    assert torch.equal(resc.sum(0), torch.eye(3))
    assert unit_generators(two_layer("identity", 2, 3, 2, 2), "gl", 2) is None  # h > d
    with pytest.raises(ValueError, match="`d`"):
        unit_generators(two_layer("relu", 2, 3, 2, 2), "rescaling", 0)

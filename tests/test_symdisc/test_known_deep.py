"""Known symmetries of deep nets: ``mlp(...)`` and ``module_loss`` of an ``nn.Sequential``.

Per hidden layer l (width h_l): positive rescaling of every hidden unit (relu, leaky_relu,
identity; r = sum_l h_l) and GL(h_l) between consecutive linear layers (identity; r = sum_l
h_l^2). Everything in float64: the directional derivative of the loss along every basis vector
is 0 to 1e-10, the finite flow keeps the loss, its derivative is the tangent, the bases of
``mlp`` and the equivalent ``module_loss`` agree up to the parameter order, and what is not
supported is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from symdisc.known import (
    KnownAction,
    algebra_shape,
    gl_ansatz,
    group_action,
    infinitesimal_action,
    null_space,
    tangent_basis,
)
from symdisc.losses import MLPLoss, ParamLoss, mlp, module_loss, three_layer_tanh_skip
from symdisc.losses.activations import activation_fn
from symdisc.sampler import Samples

DT = torch.float64
N = 16
BATCH = 6  # data points per sample


# --------------------------------------------------------------------------------------------
# The case registry
# --------------------------------------------------------------------------------------------


def _biased_mlp(activation: str, widths: tuple[int, ...], k: int) -> MLPLoss:
    """An MLPLoss with a bias ``b{i}`` (widths[i],) per layer, as :func:`mlp` would name it."""
    act = activation_fn(activation)
    L = len(widths) - 1
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(1, L + 1):
        shapes[f"W{i}"] = (widths[i], widths[i - 1])
        shapes[f"b{i}"] = (widths[i],)

    def fn(p: dict[str, Tensor], X: Tensor, Y: Tensor) -> Tensor:
        out = X
        for i in range(1, L + 1):
            out = p[f"W{i}"] @ out + p[f"b{i}"][:, None]
            if i < L:
                out = act(out)
        return ((out - Y) ** 2).sum()

    name = f"mlp_bias_{activation}_{'-'.join(map(str, widths))}_k{k}"
    return MLPLoss(name, fn, shapes, (widths[0], k), (widths[-1], k), activation, widths)


_MODULES = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "identity": nn.Identity,
    "none": None,
}


def _sequential(widths: tuple[int, ...], between: str | tuple[str, ...], bias: bool):
    kinds = (between,) * (len(widths) - 2) if isinstance(between, str) else between
    mods: list[nn.Module] = []
    for i in range(1, len(widths)):
        mods.append(nn.Linear(widths[i - 1], widths[i], bias=bias))
        if i < len(widths) - 1 and _MODULES[kinds[i - 1]] is not None:
            mods.append(_MODULES[kinds[i - 1]]())
    return nn.Sequential(*mods)


def _sampler(n_in: int, n_out: int, cross_entropy: bool = False):
    def data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        X = torch.randn(n, BATCH, n_in, generator=g, dtype=DT)
        if cross_entropy:
            return X, torch.randint(0, n_out, (n, BATCH), generator=g)
        return X, torch.randn(n, BATCH, n_out, generator=g, dtype=DT)

    return data


def _mse(out: Tensor, y: Tensor) -> Tensor:
    return ((out - y) ** 2).sum()


@dataclass(frozen=True)
class DeepCase:
    kind: str  # "mlp" or "module"
    symmetry: str
    between: str | tuple[str, ...]  # the activation (mlp) or the modules between linear layers
    bias: bool
    widths: tuple[int, ...]
    order: str = "natural"  # module: "natural" or "shuffled" parameter order
    output: str = "mse"

    @property
    def id(self) -> str:
        b = "b" if self.bias else "nob"
        between = self.between if isinstance(self.between, str) else "+".join(self.between)
        w = "-".join(map(str, self.widths))
        return f"{self.kind}-{self.symmetry}-{between}-{b}-{w}-{self.order}-{self.output}"

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.widths[1:-1]

    @property
    def r(self) -> int:
        return sum(h * h if self.symmetry == "gl" else h for h in self.hidden)

    def loss(self) -> ParamLoss:
        if self.kind == "mlp":
            if self.bias:
                return _biased_mlp(self.between, self.widths, k=BATCH)
            return mlp(self.between, self.widths, k=BATCH)
        torch.manual_seed(0)
        net = _sequential(self.widths, self.between, self.bias)
        names = [n for n, _ in net.named_parameters()]
        if self.order == "shuffled":  # biases first, layers backwards: not the module's order
            names = sorted(names, key=lambda n: (n.endswith("weight"), -int(n.split(".")[0])))
        ce = self.output == "cross_entropy"
        loss_fn = nn.functional.cross_entropy if ce else _mse
        data = _sampler(self.widths[0], self.widths[-1], ce)
        return module_loss(net, loss_fn, data, names, name=self.id)


DEEP_CASES = [
    DeepCase("mlp", "rescaling", a, b, w)
    for a in ("relu", "leaky_relu", "identity")
    for b, w in ((False, (2, 3, 3, 1)), (True, (3, 4, 2, 3, 2)))
] + [
    DeepCase("mlp", "gl", "identity", False, (2, 3, 3, 1)),
    DeepCase("mlp", "gl", "identity", True, (3, 4, 2, 3, 2)),
    DeepCase("mlp", "rescaling", "relu", False, (1, 1, 1, 1)),
    DeepCase("module", "rescaling", "relu", True, (2, 3, 3, 1)),  # relu_deep of experiments
    DeepCase("module", "rescaling", "relu", True, (2, 3, 3, 1), "shuffled"),
    DeepCase("module", "rescaling", "relu", False, (3, 4, 2, 3, 2)),
    DeepCase("module", "rescaling", "leaky_relu", True, (3, 4, 2, 3, 2)),
    DeepCase("module", "rescaling", ("relu", "none", "leaky_relu"), True, (3, 4, 2, 3, 2)),
    DeepCase("module", "rescaling", "relu", True, (4, 5, 3), "natural", "cross_entropy"),
    DeepCase("module", "gl", "none", True, (2, 3, 3, 1)),
    DeepCase("module", "gl", "identity", False, (3, 4, 2, 3, 2), "shuffled"),
    DeepCase("module", "gl", ("none", "identity"), True, (3, 2, 4, 2), "natural", "cross_entropy"),
]


def _seed(case: DeepCase) -> int:
    return sum(map(ord, case.id)) % 10_000


def _draw(loss: ParamLoss, n: int, seed: int) -> Samples:
    """theta ~ N(0, 1) (P,) and data per sample, with the float64 gradient of the loss."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, loss.num_params, generator=g, dtype=DT)
    if hasattr(loss, "data_sampler"):
        X, Y = loss.data_sampler(n, g)
    else:
        X = torch.randn(n, *loss.x_shape, generator=g, dtype=DT)
        Y = torch.randn(n, *loss.y_shape, generator=g, dtype=DT)
    grad, value = torch.vmap(torch.func.grad_and_value(loss.flat))(theta, X, Y)
    return Samples(theta, X, Y, grad, value)


def _directional(loss: ParamLoss, s: Samples, T: Tensor) -> Tensor:
    """d/dt L(theta + t T_r) at t = 0 by forward mode (N, r), independent of ``s.grad``."""

    def one(theta: Tensor, X: Tensor, Y: Tensor, t: Tensor) -> Tensor:
        return torch.func.jvp(lambda th: loss.flat(th, X, Y), (theta,), (t,))[1]

    per_row = torch.vmap(one, in_dims=(None, None, None, 0))
    return torch.vmap(per_row)(s.theta, s.X, s.Y, T)


def _exp(symmetry: str, loss: ParamLoss, A: Tensor) -> Tensor:
    """The group element of a deep algebra element: exp per unit, or matrix_exp per block."""
    if symmetry == "rescaling":
        return torch.exp(A)
    blocks, start = [], 0
    for h in _hidden(loss):
        blocks.append(torch.linalg.matrix_exp(A[start : start + h * h].reshape(h, h)).reshape(-1))
        start += h * h
    return torch.cat(blocks)


def _hidden(loss: ParamLoss) -> tuple[int, ...]:
    if isinstance(loss, MLPLoss):
        return loss.widths[1:-1]
    return tuple(m.out_features for m in loss.model if isinstance(m, nn.Linear))[:-1]


# --------------------------------------------------------------------------------------------
# Tangents
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", DEEP_CASES, ids=lambda c: c.id)
def test_deep_tangents_are_symmetries_of_the_expected_dimension(case: DeepCase) -> None:
    loss = case.loss()
    s = _draw(loss, N, _seed(case))
    T = torch.vmap(tangent_basis(loss, case.symmetry))(s.theta, s.X)
    assert algebra_shape(loss, case.symmetry) == (case.r,)
    assert T.shape == (N, case.r, loss.num_params)
    # r independent directions at every sample (the whole algebra, not a part of it), unless
    # GL has a stabiliser: a layer l with fewer inputs (+1 for a bias) than units,
    # A_l [W_l b_l] = 0 for A_l != 0 (e.g. 2-3-3-1 without biases: orbit dimension 16 of 18)
    rank = torch.linalg.matrix_rank(T)
    w, b = case.widths, int(case.bias)
    if case.symmetry == "rescaling" or all(w[i - 1] + b >= w[i] for i in range(1, len(w) - 1)):
        assert (rank == case.r).all()
    else:
        assert ((rank < case.r) & (rank >= case.r - case.hidden[0] ** 2)).all()
    dd = _directional(loss, s, T)
    scale = s.grad.norm(dim=1)[:, None] * T.norm(dim=2)
    live = s.grad.norm(dim=1) > 0
    assert live.double().mean() >= 0.3  # a ReLU net with all units dead has no gradient
    assert (dd.abs() / scale)[live].max() < 1e-10
    assert (dd - torch.einsum("np,nrp->nr", s.grad, T)).abs().max() < 1e-10 * scale.max()
    # Control: random directions of the same size have a far-from-zero directional derivative.
    v = torch.randn(T.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
    cos = _directional(loss, s, v).abs() / (s.grad.norm(dim=1)[:, None] * v.norm(dim=2))
    assert (cos[live] > 1e-3).double().mean() >= 0.8


@pytest.mark.parametrize("case", DEEP_CASES, ids=lambda c: c.id)
def test_deep_finite_flow_keeps_the_loss_and_its_derivative_is_the_tangent(case) -> None:
    loss, sym = case.loss(), case.symmetry
    s = _draw(loss, 4, _seed(case))
    act = group_action(loss, sym)
    T = torch.vmap(tangent_basis(loss, sym))(s.theta, s.X)
    eye = torch.eye(case.r, dtype=DT)
    for q in range(case.r):  # the flow exp(t E_q) along every generator
        for t in (0.7, -0.4):
            g = _exp(sym, loss, t * eye[q])
            moved = torch.vmap(act, in_dims=(0, 0, None))(s.theta, s.X, g)
            assert ((moved - s.theta).norm(dim=1) > 1e-3 * s.theta.norm(dim=1)).all()
            after = torch.vmap(loss.flat)(moved, s.X, s.Y)
            torch.testing.assert_close(after, s.loss, rtol=1e-10, atol=1e-10)
        eps = 1e-5
        plus = torch.vmap(act, in_dims=(0, 0, None))(s.theta, s.X, _exp(sym, loss, eps * eye[q]))
        minus = torch.vmap(act, in_dims=(0, 0, None))(s.theta, s.X, _exp(sym, loss, -eps * eye[q]))
        fd = (plus - minus) / (2 * eps)
        err = (fd - T[:, q]).norm(dim=1) / T[:, q].norm(dim=1)
        assert err.max() < 1e-7
    # A random element: the action and the tangent are linear/multiplicative in it.
    A = torch.randn(4, case.r, generator=torch.Generator().manual_seed(2), dtype=DT)
    direct = torch.vmap(infinitesimal_action(loss, sym))(s.theta, s.X, A)
    torch.testing.assert_close(direct, torch.einsum("nr,nrp->np", A, T), rtol=1e-12, atol=1e-12)


def _literal_rescaling(widths, theta_dict: dict[str, Tensor], names, c: Tensor):
    """Scale unit j of hidden layer l by c: its row (and bias) of layer l, 1/c its column of l+1."""
    out = {k: v.clone() for k, v in theta_dict.items()}
    start = 0
    for layer, h in enumerate(widths[1:-1]):
        w_in, b_in, w_out = names[layer][0], names[layer][1], names[layer + 1][0]
        for j in range(h):
            out[w_in][j, :] *= c[start + j]
            if b_in is not None:
                out[b_in][j] *= c[start + j]
            out[w_out][:, j] /= c[start + j]
        start += h
    return out


@pytest.mark.parametrize(
    "case",
    [c for c in DEEP_CASES if c.symmetry == "rescaling" and c.bias],
    ids=lambda c: c.id,
)
def test_deep_rescaling_matches_a_unit_by_unit_reference(case: DeepCase) -> None:
    """The vectorised action against a per-unit Python loop, then the exp-scaling flow."""
    loss = case.loss()
    s = _draw(loss, 3, _seed(case))
    L = len(case.widths) - 1
    if case.kind == "mlp":
        names = [(f"W{i}", f"b{i}") for i in range(1, L + 1)]
    else:
        idx = [i for i, m in enumerate(loss.model) if isinstance(m, nn.Linear)]
        names = [(f"{i}.weight", f"{i}.bias") for i in idx]
    c = torch.exp(torch.randn(case.r, generator=torch.Generator().manual_seed(3), dtype=DT))
    for i in range(3):
        ours = group_action(loss, "rescaling")(s.theta[i], s.X[i], c)
        ref = _literal_rescaling(case.widths, loss.unflatten(s.theta[i]), names, c)
        torch.testing.assert_close(ours, loss.flatten(ref), rtol=1e-14, atol=1e-14)
        assert abs(float(loss.flat(ours, s.X[i], s.Y[i]) - s.loss[i])) < 1e-10 * (1 + s.loss[i])


def test_deep_basis_rows_follow_the_hidden_units_in_the_flat_parameter_order() -> None:
    """Row 3 + j of relu_deep's basis is unit j of hidden layer 2: (+row of 2.weight and
    2.bias, -column of 4.weight), laid out in the loss's own (shuffled) parameter order."""
    case = DeepCase("module", "rescaling", "relu", True, (2, 3, 3, 1), "shuffled")
    loss = case.loss()
    assert list(loss.param_shapes)[0] == "4.bias"  # not the module's order
    s = _draw(loss, 1, 0)
    T = tangent_basis(loss, "rescaling")(s.theta[0], s.X[0])
    p = loss.unflatten(s.theta[0])
    j = 1
    expected = {k: torch.zeros_like(v) for k, v in p.items()}
    expected["2.weight"][j] = p["2.weight"][j]
    expected["2.bias"][j] = p["2.bias"][j]
    expected["4.weight"][:, j] = -p["4.weight"][:, j]
    torch.testing.assert_close(T[3 + j], loss.flatten(expected))
    G = tangent_basis(DeepCase("mlp", "gl", "identity", False, (2, 3, 2, 1)).loss(), "gl")
    q = DeepCase("mlp", "gl", "identity", False, (2, 3, 2, 1)).loss()
    theta = torch.randn(q.num_params, dtype=DT)
    pq = q.unflatten(theta)
    E = torch.zeros(2, 2, dtype=DT)
    E[0, 1] = 1.0  # layer 2's E_01: after the 9 generators of layer 1
    row = {"W1": torch.zeros(3, 2, dtype=DT), "W2": E @ pq["W2"], "W3": -pq["W3"] @ E}
    torch.testing.assert_close(G(theta, torch.randn(2, BATCH, dtype=DT))[9 + 1], q.flatten(row))


@pytest.mark.parametrize(
    "activation, symmetry",
    [
        ("relu", "rescaling"),
        ("leaky_relu", "rescaling"),
        ("identity", "rescaling"),
        ("identity", "gl"),
    ],
)
def test_mlp_and_the_equivalent_sequential_have_the_same_basis(activation, symmetry) -> None:
    widths = (3, 4, 2, 2)
    m = mlp(activation, widths, k=BATCH)
    slope = 0.1  # symdisc's LEAKY_SLOPE
    make = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(slope), "identity": nn.Identity}
    net = nn.Sequential(
        nn.Linear(3, 4, bias=False),
        make[activation](),
        nn.Linear(4, 2, bias=False),
        make[activation](),
        nn.Linear(2, 2, bias=False),
    )
    to_module = {"W1": "0.weight", "W2": "2.weight", "W3": "4.weight"}
    # the module loss takes X (BATCH, n) row-wise; the MLP X (n, BATCH) column-wise
    ml = module_loss(
        net,
        _mse,
        _sampler(3, 2),
        ["4.weight", "0.weight", "2.weight"],  # another order than the MLP's
    )
    s = _draw(m, N, 5)
    theta_mod = torch.vmap(
        lambda th: ml.flatten({to_module[k]: v for k, v in m.unflatten(th).items()})
    )(s.theta)
    X_mod, Y_mod = s.X.transpose(1, 2), s.Y.transpose(1, 2)
    torch.testing.assert_close(
        torch.vmap(ml.flat)(theta_mod, X_mod, Y_mod), s.loss, rtol=1e-12, atol=1e-12
    )  # the same network
    T_mlp = torch.vmap(tangent_basis(m, symmetry))(s.theta, s.X)
    T_mod = torch.vmap(tangent_basis(ml, symmetry))(theta_mod, X_mod)
    back = {v: k for k, v in to_module.items()}

    def to_mlp_order(t: Tensor) -> Tensor:
        return m.flatten({back[k]: v for k, v in ml.unflatten(t).items()})

    mapped = torch.vmap(torch.vmap(to_mlp_order))(T_mod)
    r = 4 + 2 if symmetry == "rescaling" else 16 + 4
    assert T_mlp.shape == mapped.shape == (N, r, 12 + 8 + 4)
    torch.testing.assert_close(mapped, T_mlp, rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------------------------
# The null-space baseline on deep nets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, expected",
    [
        (DeepCase("module", "rescaling", "relu", True, (2, 3, 3, 1)), 6),  # relu_deep
        (DeepCase("mlp", "rescaling", "leaky_relu", False, (2, 3, 2, 1)), 5),
        (DeepCase("mlp", "gl", "identity", False, (2, 3, 2, 1)), 13),
    ],
    ids=lambda v: v.id if isinstance(v, DeepCase) else str(v),
)
def test_null_space_of_the_deep_gl_ansatz_is_the_known_algebra(case, expected) -> None:
    """The per-layer GL ansatz: the per-unit diagonals survive for relu, everything for linear."""
    loss = case.loss()
    s = _draw(loss, 120, _seed(case))
    ns = null_space(loss, s, gl_ansatz(loss))
    assert ns.a_shape == (sum(h * h for h in case.hidden),)
    assert ns.dim == expected
    # the null space is the known algebra: rescaling = the diagonals of the blocks
    if case.symmetry == "rescaling":
        start, rows = 0, []
        for h in case.hidden:
            for j in range(h):
                e = torch.zeros(ns.a_shape[0], dtype=DT)
                e[start + j * h + j] = 1.0
                rows.append(e)
            start += h * h
        known = torch.stack(rows)
        residual = ns.basis - ns.basis @ known.T @ known
        assert residual.norm() < 1e-8


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


class _NotSequential(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(3, 1)

    def forward(self, X: Tensor) -> Tensor:
        return self.b(torch.relu(self.a(X)))


def _ml(net: nn.Module, params=None) -> ParamLoss:
    params = [n for n, _ in net.named_parameters()] if params is None else params
    return module_loss(net, _mse, _sampler(2, 1), params)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (
            lambda: _ml(_NotSequential()),
            TypeError,
            r"`loss.model` must be an nn.Sequential of nn.Linear layers with nn.ReLU, "
            r"nn.LeakyReLU, nn.Identity or nothing between them .*got _NotSequential",
        ),
        (
            lambda: _ml(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))),
            TypeError,
            r"module 1 is a Tanh",
        ),
        (
            lambda: _ml(
                nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3, 1))
            ),
            TypeError,
            r"module 2 is a Dropout",
        ),
        (
            lambda: _ml(nn.Sequential(nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Linear(3, 1))),
            TypeError,
            r"module 0 is a Sequential",
        ),
        (
            lambda: _ml(nn.Sequential(nn.ReLU(), nn.Linear(2, 1))),
            ValueError,
            r"at least two nn.Linear layers .*got 1",
        ),
        (
            lambda: _ml(
                nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)),
                ["0.weight", "2.weight", "2.bias"],
            ),
            ValueError,
            r"must act on every parameter of the linear layers .*\['0.bias'\] are fixed",
        ),
    ],
    ids=["not-sequential", "tanh", "dropout", "nested", "one-linear", "fixed-bias"],
)
def test_unsupported_modules_are_refused_naming_what_is_not_supported(make, error, pattern):
    loss = make()
    for symmetry in ("rescaling", "gl"):
        for build in (tangent_basis, group_action, algebra_shape, infinitesimal_action):
            with pytest.raises(error, match=pattern):
                build(loss, symmetry)
    with pytest.raises(error, match=pattern):
        gl_ansatz(loss)


@pytest.mark.parametrize(
    "make, symmetry, pattern",
    [
        (
            lambda: mlp("tanh", [2, 3, 3, 1]),
            "rescaling",
            r"positively homogeneous activations .* got activation 'tanh' after layer 1, "
            r"activation 'tanh' after layer 2",
        ),
        (
            lambda: mlp("relu", [2, 3, 1]),
            "gl",
            r"the identity activation for 'gl', got activation 'relu' after layer 1",
        ),
        (
            lambda: _ml(
                nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 3), nn.LeakyReLU(), nn.Linear(3, 1))
            ),
            "gl",
            r"the identity activation for 'gl', got activation 'LeakyReLU' after layer 2",
        ),
        (
            lambda: mlp("identity", [2, 3, 1]),
            "data_dependent_gl",
            r"`symmetry` must be 'gl' or 'rescaling' for a deep net \(MLPLoss\), "
            r"got 'data_dependent_gl'",
        ),
        (
            lambda: _ml(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))),
            "softmax_shift",
            r"`symmetry` must be 'gl' or 'rescaling' for a deep net \(ModuleLoss\)",
        ),
    ],
    ids=["mlp-tanh-rescaling", "mlp-relu-gl", "module-leaky-gl", "mlp-ddgl", "module-shift"],
)
def test_inapplicable_deep_symmetries_are_refused(make, symmetry, pattern) -> None:
    loss = make()
    for build in (tangent_basis, group_action, algebra_shape):
        with pytest.raises(ValueError, match=pattern):
            build(loss, symmetry)


def test_a_deep_basis_checks_its_sample() -> None:
    loss = mlp("relu", [2, 3, 3, 1], k=4)
    basis = tangent_basis(loss, "rescaling")
    with pytest.raises(ValueError, match=r"`theta` must be one flat parameter vector of shape"):
        basis(torch.zeros(5, 18, dtype=DT), torch.zeros(2, 4, dtype=DT))
    with pytest.raises(ValueError, match=r"`X` must be one data sample of shape \(2, 4\)"):
        basis(torch.zeros(18, dtype=DT), torch.zeros(4, 2, dtype=DT))
    with pytest.raises(ValueError, match=r"`g` must have shape \(6,\), got \(3,\)"):
        group_action(loss, "rescaling")(
            torch.zeros(18, dtype=DT), torch.zeros(2, 4, dtype=DT), torch.ones(3, dtype=DT)
        )


@pytest.mark.parametrize(
    "case",
    [
        DeepCase("module", "rescaling", "relu", True, (2, 3, 3, 1)),
        DeepCase("mlp", "gl", "identity", True, (3, 4, 2, 3, 2)),
    ],
    ids=lambda c: c.id,
)
def test_known_action_of_a_deep_net_acts_through_one_matrix(case: DeepCase) -> None:
    """g (d, d), d = sum h_l: its diagonal (rescaling) or its diagonal blocks (GL) act."""
    loss = case.loss()
    action = KnownAction(loss, case.symmetry)
    d = sum(case.hidden)
    assert action.d == d
    s = _draw(loss, 3, _seed(case))
    T = torch.vmap(tangent_basis(loss, case.symmetry))(s.theta, s.X)
    # unit generators of the algebra, as (d, d) matrices, in the basis's row order
    units = []
    start = 0
    for h in case.hidden:
        for i in range(h):
            for j in range(h) if case.symmetry == "gl" else (i,):
                E = torch.zeros(d, d, dtype=DT)
                E[start + i, start + j] = 1.0
                units.append(E)
        start += h
    primal, V = action.tangents(torch.stack(units), s.theta, s.X)
    torch.testing.assert_close(primal, s.theta)
    torch.testing.assert_close(V, T, rtol=1e-12, atol=1e-12)
    # what lies off the diagonal (blocks) does not act
    off = torch.zeros(1, d, d, dtype=DT)
    off[0, 0, d - 1] = 1.0
    assert action.tangents(off, s.theta, s.X)[1].abs().max() == 0
    g = torch.linalg.matrix_exp(0.3 * torch.stack(units).sum(0))
    moved = torch.vmap(action, in_dims=(None, 0, 0))(g, s.theta, s.X)
    torch.testing.assert_close(torch.vmap(loss.flat)(moved, s.X, s.Y), s.loss)
    with pytest.raises(TypeError, match=r"`loss` must be .*got TanhSkipLoss"):
        KnownAction(three_layer_tanh_skip(), "gl")

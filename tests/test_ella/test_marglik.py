"""ella.marglik: online marginal-likelihood training and effective parameters (float64)."""

import math

import pytest
import torch
from torch import nn

from conftest import DTYPE
from ella.laplace import Laplace
from ella.layers import CONV, FC, PathSum
from ella.marglik import (
    MarglikConfig,
    NonFiniteLossError,
    effective_parameters,
    learned_layer_report,
    relative_effective_parameters,
    train_marglik,
)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3)).to(DTYPE)


def data(n=60, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=DTYPE)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def config(**kw):
    base = dict(
        epochs=6,
        batch_size=16,
        lr=0.02,
        lr_hyper=0.1,
        n_hyper_steps=20,
        marglik_every=2,
        burn_in=1,
        structure="full",
        seed=3,
    )
    base.update(kw)
    return MarglikConfig(**base)


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(epochs=0),
        dict(batch_size=-1),
        dict(optimizer="rmsprop"),
        dict(lr=0.0),
        dict(lr_hyper=math.nan),
        dict(n_hyper_steps=0),
        dict(marglik_every=0),
        dict(burn_in=-1),
        dict(structure="block"),
        dict(likelihood="poisson"),
        dict(sigma=-1.0),
        dict(temperature=0),
        dict(init_prior_precision=0.0),
        dict(checkpoint_every=2),
    ],
)
def test_config_rejects(kw):
    with pytest.raises(ValueError):
        MarglikConfig(**kw)


@pytest.mark.parametrize(
    "kw", [dict(learn_hyper=1), dict(epochs=2.0), dict(lr="0.1"), dict(seed=True)]
)
def test_config_rejects_wrong_types(kw):
    (name,) = kw
    with pytest.raises(TypeError, match=f"`{name}`"):
        MarglikConfig(**kw)


# -- training -----------------------------------------------------------------------------


@pytest.mark.parametrize("structure", ["full", "kron"])
def test_learn_hyper_improves_marglik(structure):
    model = mlp()
    result = train_marglik(model, data(), config(structure=structure))
    evals = [h for h in result.history if "neg_log_marglik" in h]
    assert [h["epoch"] for h in evals] == [3, 5]
    assert result.best_neg_log_marglik == min(h["neg_log_marglik"] for h in evals)
    assert result.best_neg_log_marglik < evals[0]["neg_log_marglik_init"]
    assert set(result.precisions) == {"0", "2"}
    assert all(v != 1.0 and v > 0 for v in result.precisions.values())
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    assert set(result.best_state) == set(model.state_dict())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_map_training_equals_manual_loop(optimizer):
    x, y = data()
    cfg = config(
        epochs=2,
        burn_in=0,
        marglik_every=1,
        learn_hyper=False,
        optimizer=optimizer,
        init_prior_precision=0.7,
    )
    model = mlp()
    result = train_marglik(model, (x, y), cfg)
    assert result.precisions == {"0": pytest.approx(0.7, abs=1e-15), "2": pytest.approx(0.7)}
    assert all(h["prior_precision/0"] == result.precisions["0"] for h in result.history)

    ref = mlp()
    params = list(ref.parameters())
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(params, lr=cfg.lr)
    steps = 2 * math.ceil(len(x) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(2):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = nn.functional.cross_entropy(ref(x[idx]), y[idx])
            loss = loss + 0.5 * 0.7 * sum(p.pow(2).sum() for p in params) / len(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-10, rtol=0, msg=name)


class Interrupt(Exception):
    pass


class Trap(nn.Module):
    """Wraps a model; on its `at`-th forward call in training mode, runs `action`."""

    def __init__(self, inner, at, action):
        super().__init__()
        self.inner, self.at, self.action, self.calls = inner, at, action, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                self.action(self)
        return self.inner(x)


def test_resume_equals_uninterrupted(tmp_path):
    x, y = data()
    ckpt = tmp_path / "run.pt"
    cfg = config(checkpoint_every=2, checkpoint=str(ckpt))
    full = train_marglik(Trap(mlp(), 0, None), (x, y), cfg)
    full_state = full.best_state

    def boom(_):
        raise Interrupt

    # 4 minibatches per epoch: the 15th forward call is inside epoch 4
    with pytest.raises(Interrupt):
        train_marglik(Trap(mlp(), 15, boom), (x, y), cfg)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    fresh = Trap(mlp(seed=9), 0, None)
    resumed = train_marglik(fresh, (x, y), cfg, resume=ckpt)
    assert resumed.history == full.history
    assert resumed.precisions == full.precisions
    assert resumed.best_epoch == full.best_epoch
    for k in full_state:
        torch.testing.assert_close(resumed.best_state[k], full_state[k], atol=0, rtol=0)


def test_nan_stops_and_keeps_checkpoint(tmp_path):
    x, y = data()
    ckpt = tmp_path / "run.pt"
    cfg = config(checkpoint_every=1, checkpoint=str(ckpt), burn_in=10)

    def poison(trap):
        with torch.no_grad():
            trap.inner[0].weight[0, 0] = math.nan

    model = Trap(mlp(), 10, poison)  # the 10th forward: epoch 3
    with pytest.raises(NonFiniteLossError, match="epoch 3"):
        train_marglik(model, (x, y), cfg)
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # the model is restored to the last good checkpoint
    assert torch.isfinite(model.inner[0].weight).all()
    assert not (tmp_path / "run.pt.tmp").exists()


class NaNWhenEvaluated(nn.Module):
    """The identity in training mode, NaN outputs in ``eval()`` mode (the mode of the Laplace
    fit): the weights and the minibatch losses stay finite, the fit's likelihood is NaN."""

    def forward(self, x):
        return x if self.training else x * math.nan


@pytest.mark.parametrize("structure", ["full", "kron", "diag"])
def test_non_finite_outputs_at_a_laplace_fit_stop_and_restore(tmp_path, structure):
    x, y = data()
    ckpt = tmp_path / "run.pt"
    cfg = config(
        structure=structure, burn_in=2, checkpoint_every=1, checkpoint=str(ckpt), marglik_every=1
    )
    model = nn.Sequential(mlp(), NaNWhenEvaluated())
    with pytest.raises(NonFiniteLossError, match="epoch 3: the Laplace fit failed: .*finite"):
        train_marglik(model, (x, y), cfg)
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 2
    # the weights after epoch 3's steps are replaced by those of the last checkpoint
    assert model.state_dict().keys() == state["model"].keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state["model"][name]), name


# -- effective parameters -------------------------------------------------------------------


def fitted(structure, seed=0):
    model = mlp(seed)
    x, y = data(40)
    return model, Laplace(model, "classification", structure, temperature=1.3).fit(
        [(x[:20], y[:20]), (x[20:], y[20:])]
    )


@pytest.mark.parametrize("structure", ["full", "kron", "diag"])
def test_effective_parameters_limits(structure):
    _, la = fitted(structure)
    # genuine eigenvalues are >= 1e-8 here, round-off ones ~1e-15: delta = 1e-12 separates them
    small = effective_parameters(la, 1e-12)
    huge = effective_parameters(la, 1e12)
    for g in la.groups:
        lam = _eigs(la, g)
        nonzero = int((lam > 1e-10).sum())
        assert small[g] == pytest.approx(nonzero, abs=0.05)
        assert 0 <= huge[g] < 1e-8
        assert 0 < nonzero <= la.group_sizes[g]
    rel = relative_effective_parameters(la, {"0": 2.0, "2": 0.5})
    gam = effective_parameters(la, {"0": 2.0, "2": 0.5})
    assert rel == {g: pytest.approx(gam[g] / la.group_sizes[g]) for g in gam}


def _eigs(la, group):
    """Independent eigenvalues of the group's tempered curvature block."""
    T = la.temperature
    if la.structure == "kron":
        out = []
        for key, f in la.curvature.items():
            if f.params[0] in la.groups[group]:
                out.append(torch.linalg.eigvalsh(torch.kron(f.G, f.A)))
        return torch.cat(out) / T
    idx, start = [], 0
    for name in la.names:
        if name in la.groups[group]:
            idx += range(start, start + la.numels[name])
        start += la.numels[name]
    if la.structure == "diag":
        return la.curvature[idx] / T
    return torch.linalg.eigvalsh(la.curvature[idx][:, idx]) / T


def test_effective_parameters_full_equals_direct_trace():
    _, la = fitted("full")
    deltas = {"0": 0.3, "2": 4.0}
    gamma = effective_parameters(la, deltas)
    start, idx = 0, {g: [] for g in la.groups}
    for name in la.names:
        g = next(g for g, ns in la.groups.items() if name in ns)
        idx[g] += range(start, start + la.numels[name])
        start += la.numels[name]
    for g, d in deltas.items():
        block = la.curvature[idx[g]][:, idx[g]] / la.temperature
        eye = torch.eye(len(idx[g]), dtype=DTYPE)
        direct = len(idx[g]) - d * torch.linalg.inv(block + d * eye).trace()  # MacKay, D.2
        assert gamma[g] == pytest.approx(float(direct), abs=1e-9)


def test_learned_layer_report():
    model, la = fitted("kron")
    rows = learned_layer_report(model, la, {"0": 2.0, "2": 0.5})
    assert [r["layer"] for r in rows] == ["0", "2"]
    gamma = effective_parameters(la, {"0": 2.0, "2": 0.5})
    for r in rows:
        assert r["path"] is None
        assert r["n_params"] == {"0": 24, "2": 27}[r["layer"]]
        assert r["effective_parameters"] == gamma[r["group"]]
        assert r["relative_effective_parameters"] == pytest.approx(
            gamma[r["group"]] / r["n_params"]
        )
        assert r["path_share"] == 1.0
    assert rows[0]["prior_precision"] == 2.0


def path_sum_model(seed):
    """PathSum(FC, CONV) on (1, 4, 4) inputs, then tanh and a linear layer to 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        PathSum(FC(1, 2, 4, 4), CONV(1, 2, 4, 4)), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)
    ).to(DTYPE)


def test_learned_layer_report_relaxed_paths():
    model = path_sum_model(0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 1, 4, 4, generator=g, dtype=DTYPE)
    y = torch.randint(0, 3, (12,), generator=g)
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    deltas = {grp: torch.tensor(1.0 + i, dtype=DTYPE) for i, grp in enumerate(la.groups)}
    rows = learned_layer_report(model, la, deltas)
    assert len(rows) == len(la.groups) and len(rows) >= 3
    assert sum(r["n_params"] for r in rows) == la.n_params
    tagged = [r for r in rows if r["path"] is not None]
    # the PathSum "0" is one relaxed layer; its paths are its sub-layers' tagged paths
    assert [(r["layer"], r["path"], r["module"]) for r in tagged] == [
        ("0", "fc", "0.layers.0"),
        ("0", "conv", "0.layers.1"),
    ]
    shares = [r["path_share"] for r in tagged]
    assert all(0 < share < 1 for share in shares)
    assert sum(shares) == pytest.approx(1.0)
    rel = [r["relative_effective_parameters"] for r in tagged]
    assert shares == [pytest.approx(v / sum(rel)) for v in rel]
    assert rows[-1]["layer"] == "3" and rows[-1]["path"] is None
    assert rows[-1]["module"] == "3" and rows[-1]["path_share"] == 1.0
    for r in rows:
        assert 0 <= r["relative_effective_parameters"] <= 1


def test_learned_layer_report_shares_the_trained_paths_of_a_path_sum():
    """After marginal-likelihood training of both paths of PathSum(FC, CONV), the report gives
    the PathSum one layer whose two paths split it: each share strictly between 0 and 1."""
    model = path_sum_model(2)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 1, 4, 4, generator=g, dtype=DTYPE)
    y = (x.flatten(1)[:, :8].sum(1) > 0).long() + (x.flatten(1)[:, 8].sign() > 0).long()
    result = train_marglik(
        model, (x, y), config(structure="kron", epochs=3, burn_in=0, marglik_every=1)
    )
    assert all(p.requires_grad for p in model[0].parameters())
    la = Laplace(model, "classification", "kron").fit([(x, y)])
    rows = learned_layer_report(model, la, result.precisions)
    paths = [r for r in rows if r["layer"] == "0"]
    assert [r["path"] for r in paths] == ["fc", "conv"]
    assert all(0 < r["path_share"] < 1 for r in paths)
    assert sum(r["path_share"] for r in paths) == pytest.approx(1.0)


def test_regression_diag_and_bad_data():
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    y = torch.sin(x)
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 2)).to(DTYPE)
    cfg = config(structure="diag", likelihood="regression", sigma=0.5, epochs=3, burn_in=0)
    result = train_marglik(model, (x, y), cfg)
    assert result.best_neg_log_marglik is not None and math.isfinite(result.best_neg_log_marglik)
    with pytest.raises(ValueError, match="first dimension"):
        train_marglik(model, (x, y[:5]), cfg)
    with pytest.raises(TypeError):
        train_marglik(model, [x], cfg)

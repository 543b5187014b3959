"""train_invariant on an iterable of batches (a DataLoader, a list): the same result as tensors
when the batches are the same minibatches in the same order (float64, lila with both
eta-gradients and a random subset, Augerino), the passes each step makes, and the checks."""

from __future__ import annotations

import pytest
import torch
from test_invariance import _Interrupt, _StopAfterCheckpoint  # the same interruption
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import DTYPE
from ella.invariance import (
    AffineAugmentation,
    InvarianceConfig,
    InvariantModel,
    invariant_laplace,
    train_invariant,
)
from ella.marglik import MarglikConfig

# the training runs here are deliberately tiny (a handful of eta steps)
pytestmark = pytest.mark.filterwarnings("ignore::ella.invariance.FewEtaStepsWarning")

N, BATCH = 24, 8


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, 6, 6, generator=g, dtype=DTYPE)
    return x, torch.arange(N) % 3


def _model(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 6), nn.Tanh(), nn.Linear(6, 3)).to(DTYPE)
    return InvariantModel(net, AffineAugmentation(dtype=DTYPE), 2)


def _config(**kw):
    base = dict(
        epochs=3,
        batch_size=BATCH,
        lr=0.05,
        lr_hyper=0.1,
        n_hyper_steps=2,
        marglik_every=1,
        burn_in=0,
        structure="kron",
    )
    return MarglikConfig(**(base | kw))


class _Scripted:
    """A batch sampler that plays one scripted order of the N indices per pass (in batches of
    BATCH) and records how many passes were read."""

    def __init__(self, orders):
        self.orders, self.passes = orders, 0

    def __iter__(self):
        order = self.orders[self.passes]
        self.passes += 1
        return iter(order[i : i + BATCH].tolist() for i in range(0, N, BATCH))


def _tensor_orders(config, extra_passes):
    """The tensor path's passes: a counting pass, then per epoch its seeded permutation (the
    weight steps) and ``extra_passes(epoch)`` passes in data order (fits, eta steps)."""
    gen = torch.Generator().manual_seed(config.seed)
    ident = torch.arange(N)
    orders = [ident]
    for epoch in range(1, config.epochs + 1):
        orders.append(torch.randperm(N, generator=gen))
        orders += [ident] * extra_passes(epoch)
    return orders


def _assert_same(a, b):
    assert a.eta == b.eta and a.best_eta == b.best_eta
    assert a.precisions == b.precisions and a.best_precisions == b.best_precisions
    assert a.best_neg_log_marglik == b.best_neg_log_marglik and a.history == b.history
    for name, value in a.best_state.items():
        assert torch.equal(value, b.best_state[name]), name


# (invariance settings, passes after an epoch's weight pass)
CASES = {
    # epoch 1: burn-in, one fit; then 2 differentiable refits and the fit
    "lila-full": (
        dict(method="lila", eta_gradient="full", n_eta_steps=2, eta_burn_in=1),
        lambda e: 1 if e <= 1 else 3,
    ),
    # the fit, then one streamed pass per eta step (M = N)
    "lila-stochastic": (
        dict(method="lila", eta_gradient="stochastic", n_eta_steps=2, eta_burn_in=0),
        lambda e: 3,
    ),
    # the fit, then one pass per eta step that keeps M = 10 random examples
    "lila-subset": (
        dict(
            method="lila",
            eta_gradient="stochastic",
            n_eta_steps=2,
            eta_burn_in=0,
            eta_batch_size=10,
        ),
        lambda e: 3,
    ),
    "augerino": (dict(method="augerino", augerino_weight=1.0), lambda e: 0),
    "none": (dict(method="none"), lambda e: 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loader_with_the_same_minibatches_gives_the_tensor_result(case):
    settings, extra = CASES[case]
    inv = InvarianceConfig(n_samples=3, lr_eta=0.1, **settings)
    config = _config()
    x, y = _data()
    want = train_invariant(_model(), (x, y), config, inv)
    sampler = _Scripted(_tensor_orders(config, extra))
    loader = DataLoader(TensorDataset(x, y), batch_sampler=sampler)
    got = train_invariant(_model(), loader, config, inv)
    assert sampler.passes == len(sampler.orders)  # exactly the passes described
    _assert_same(got, want)
    if settings["method"] != "none":
        assert got.eta != [0.0] * 6  # eta moved


def test_list_of_batches_equals_an_unshuffled_loader():
    x, y = _data()
    inv = InvarianceConfig(
        method="lila", n_samples=2, eta_gradient="stochastic", eta_batch_size=7, eta_burn_in=0
    )
    batches = [(x[i : i + 5], y[i : i + 5]) for i in range(0, N, 5)]
    a = train_invariant(_model(), batches, _config(), inv)
    loader = DataLoader(TensorDataset(x, y), batch_size=5, shuffle=False)
    b = train_invariant(_model(), loader, _config(), inv)
    _assert_same(a, b)
    assert len(a.history) == 3 and a.best_neg_log_marglik is not None


def test_shuffled_loader_with_a_generator_resumes_to_the_uninterrupted_run(tmp_path):
    x, y = _data()
    inv = InvarianceConfig(
        method="lila", n_samples=2, eta_gradient="stochastic", eta_batch_size=9, eta_burn_in=0
    )
    ckpt = tmp_path / "ckpt.pt"
    cfg = _config(checkpoint=str(ckpt), checkpoint_every=2)

    def loader():
        g = torch.Generator().manual_seed(3)
        return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=g)

    def model(seed, path):
        m = _model(seed)
        m.net = _StopAfterCheckpoint(m.net, path)
        return m

    full = train_invariant(model(0, None), loader(), cfg, inv)
    ckpt.unlink()
    with pytest.raises(_Interrupt):
        train_invariant(model(0, ckpt), loader(), cfg, inv)
    assert "rng_loader" in torch.load(ckpt, weights_only=False)
    resumed = train_invariant(model(7, None), loader(), cfg, inv, resume=ckpt)
    _assert_same(resumed, full)


class _Shrinking:
    """A re-iterable whose second and later passes lose the last batch."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches if self.passes == 1 else self.batches[:-1])


def test_a_pass_with_another_number_of_points_is_an_error():
    x, y = _data()
    batches = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, N, BATCH)]
    inv = InvarianceConfig(method="none", n_samples=2)
    with pytest.raises(ValueError, match=f"16 points in a pass, not its N = {N}"):
        train_invariant(_model(), _Shrinking(batches), _config(), inv)


def test_malformed_iterables_are_rejected():
    x, y = _data()
    inv = InvarianceConfig(method="none", n_samples=2)
    one_shot = ((x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, N, BATCH))
    with pytest.raises(TypeError, match="one-shot iterator"):
        train_invariant(_model(), one_shot, _config(), inv)
    with pytest.raises(TypeError, match="train_data"):
        train_invariant(_model(), 3, _config(), inv)
    with pytest.raises(TypeError, match="batch 0"):
        train_invariant(_model(), [(x, y, y)], _config(), inv)


def test_invariant_laplace_streams_a_one_shot_generator_lazily():
    x, y = _data()
    model = _model()
    eps = model.augmentation.sample_eps(N, 3, torch.Generator().manual_seed(0))
    parts = [(x[i : i + 5], eps[i : i + 5], y[i : i + 5]) for i in range(0, N, 5)]
    read = []

    def lazy():
        for p in parts:
            read.append(p)
            yield p

    want = invariant_laplace(model, parts, "classification", "kron")
    got = invariant_laplace(model, lazy(), "classification", "kron")
    assert len(read) == len(parts)
    torch.testing.assert_close(
        got.log_marginal_likelihood(0.5), want.log_marginal_likelihood(0.5), rtol=0, atol=0
    )

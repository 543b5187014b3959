"""Training at scale: streamed data for Laplace.fit and train_marglik, the MAP-step augmentation
hook, and ella.data.flip_shift (paper 000, section 6 and appendix F.6; float64)."""

import math
import weakref

import pytest
import torch
from test_marglik import config as marglik_config
from test_marglik import data, mlp  # the same tiny classifier and data
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from conftest import DTYPE
from ella.data import flip_shift
from ella.laplace import Laplace
from ella.laplace.base import iter_batches
from ella.marglik import train_marglik

STRUCTURES = ["full", "kron", "diag"]


def config(**kw):
    """test_marglik's settings, shorter and with KFAC."""
    return marglik_config(**(dict(epochs=5, n_hyper_steps=10, structure="kron") | kw))


class Lazy:
    """A re-iterable whose batches are made only when asked for; it counts them and how many
    of its batches are alive at once (weakly referenced), and tracks passes."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size = x, y, size
        self.made = self.passes = 0
        self.alive = []
        self.max_alive = 0

    def __iter__(self):
        self.passes += 1
        for i in range(0, self.x.shape[0], self.size):
            # a fresh copy per batch, so that holding it shows in the weak references
            xb, yb = self.x[i : i + self.size].clone(), self.y[i : i + self.size].clone()
            self.made += 1
            self.alive = [r for r in self.alive if r() is not None] + [weakref.ref(xb)]
            self.max_alive = max(self.max_alive, len(self.alive))
            yield xb, yb
            del xb, yb


class PermSampler(Sampler):
    """The tensor path's orders: in the weight steps (model in training mode)
    ``torch.randperm(N, generator=g)`` per epoch with g seeded, in the Laplace fits (eval mode)
    data order."""

    def __init__(self, n, seed, model):
        self.n, self.gen, self.model = n, torch.Generator().manual_seed(seed), model

    def __len__(self):
        return self.n

    def __iter__(self):
        if not self.model.training:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=self.gen).tolist())


# -- Laplace.fit on streamed data ---------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_loader_and_tensors_give_the_same_marglik(structure, likelihood):
    x, y = data(40)
    if likelihood == "regression":
        y = torch.sin(3 * x[:, :1]).repeat(1, 3)
    model = mlp()
    prec = {"0": 0.7, "2": 2.0}
    whole = Laplace(model, likelihood, structure, sigma=0.4).fit([(x, y)])
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True)
    streamed = Laplace(model, likelihood, structure, sigma=0.4).fit(loader)
    assert streamed.log_likelihood.dtype == DTYPE
    torch.testing.assert_close(streamed.log_likelihood, whole.log_likelihood, rtol=1e-12, atol=0)
    for la in (whole, streamed):
        assert torch.isfinite(la.log_marginal_likelihood(prec))
    torch.testing.assert_close(
        streamed.log_marginal_likelihood(prec),
        whole.log_marginal_likelihood(prec),
        rtol=1e-12,
        atol=0,
    )


@pytest.mark.parametrize("structure", STRUCTURES)
def test_fit_streams_one_pass_holding_one_batch(structure):
    x, y = data(60)
    source = Lazy(x, y, 5)
    la = Laplace(mlp(), "classification", structure).fit(source)
    assert source.passes == 1 and source.made == 12
    assert source.max_alive <= 2  # the batch in use (and the next being made), never all 12
    ref = Laplace(mlp(), "classification", structure).fit([(x, y)])
    torch.testing.assert_close(la.log_marginal_likelihood(1.0), ref.log_marginal_likelihood(1.0))
    # a one-shot generator is enough for a fit
    gen = ((x[i : i + 9], y[i : i + 9]) for i in range(0, 60, 9))
    one = Laplace(mlp(), "classification", structure).fit(gen)
    torch.testing.assert_close(one.log_marginal_likelihood(1.0), ref.log_marginal_likelihood(1.0))


def test_fit_keeps_the_graph_of_inputs_that_require_grad():
    # paper 001's invariance learning differentiates through the inputs: streamed or not
    x, y = data(20)
    scale = torch.tensor(1.3, dtype=DTYPE, requires_grad=True)
    for structure in STRUCTURES:
        batches = ((scale * x[i : i + 8], y[i : i + 8]) for i in range(0, 20, 8))
        la = Laplace(mlp(), "classification", structure).fit(batches)
        (grad,) = torch.autograd.grad(la.log_marginal_likelihood(1.0), scale)
        assert torch.isfinite(grad) and grad != 0
    mixed = [(scale * x[:10], y[:10]), (x[10:], y[10:])]
    with pytest.raises(ValueError, match="`data`.*require a gradient"):
        Laplace(mlp(), "classification", "kron").fit(mixed)


def test_fit_bad_data():
    x, y = data(20)
    la = Laplace(mlp(), "classification", "full")
    with pytest.raises(ValueError, match="`data` must yield at least one"):
        la.fit(iter([]))
    with pytest.raises(TypeError, match="`data` must be an iterable"):
        la.fit(3)
    with pytest.raises(TypeError, match="`data` must be an iterable"):
        la.fit(x)
    with pytest.raises(
        TypeError, match=r"`data` must yield \(inputs, targets\).*batch 1 is a dict"
    ):
        la.fit([(x, y), {"x": x, "y": y}])
    with pytest.raises(TypeError, match="batch 0 is a tuple of 3"):
        la.fit([(x, y, y)])
    with pytest.raises(ValueError, match="`data` batches must share their shapes.*batch 1"):
        la.fit([(x[:10], y[:10]), (x[10:, :1], y[10:])])
    with pytest.raises(ValueError, match="`data` batch 0: inputs and targets"):
        la.fit([(x, y[:3])])
    assert not la._fitted


def test_iter_batches_moves_to_device():
    x, y = data(10)
    (xb, yb), *_ = list(iter_batches([(x, y)], device="meta"))
    assert xb.device.type == "meta" and yb.device.type == "meta"


# -- train_marglik on streamed data --------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_loader_in_the_tensor_order_gives_the_same_training(structure):
    # a loader that visits the points in the tensor path's orders trains to the same bits
    x, y = data(50)
    cfg = config(structure=structure)
    ref_model, model = mlp(), mlp()
    ref = train_marglik(ref_model, (x, y), cfg)
    sampler = PermSampler(50, cfg.seed, model)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, sampler=sampler)
    out = train_marglik(model, loader, cfg)
    assert out.history == ref.history
    assert out.precisions == ref.precisions and out.best_epoch == ref.best_epoch
    assert any("neg_log_marglik" in r for r in ref.history)
    for k, v in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
        assert torch.equal(out.best_state[k], ref.best_state[k])


def test_unshuffled_loader_equals_a_list_of_its_batches_and_is_streamed():
    x, y = data(50)
    cfg = config(structure="full")
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 50, 8)]
    lazy = Lazy(x, y, 8)
    results = []
    for train_data in (loader, batches, lazy):
        model = mlp()
        results.append((train_marglik(model, train_data, cfg), model.state_dict()))
    (a, sa), (b, sb), (c, sc) = results
    assert a.history == b.history == c.history
    assert a.precisions == b.precisions == c.precisions
    for k in sa:
        assert torch.equal(sa[k], sb[k]) and torch.equal(sa[k], sc[k])
    # the lazy one: a counting pass, 5 epochs, 2 Laplace fits, never more than a batch or two
    assert lazy.passes == 1 + 5 + 2
    assert lazy.made == 7 * lazy.passes
    assert lazy.max_alive <= 2
    # 7 batches per epoch: the cosine schedule ends at 0 after 5 * 7 steps
    assert a.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_n_of_a_loader_and_of_a_counting_pass():
    x, y = data(50)
    cfg = config(epochs=2, burn_in=0, marglik_every=1, learn_hyper=False, batch_size=50)
    ref = train_marglik(mlp(), (x, y), cfg)
    loader = DataLoader(TensorDataset(x, y), batch_size=50)
    out = train_marglik(mlp(), loader, cfg)
    # one full batch per epoch (permuted or not: equal up to round-off): N = 50 from
    # len(sampler) gives the same objective and marginal likelihood as the tensors' N
    assert out.history[0]["neg_log_marglik"] == pytest.approx(
        ref.history[0]["neg_log_marglik"], rel=1e-12
    )
    # drop_last: the 2 full batches of 20 are what an epoch visits; N is counted as 40
    model = mlp()
    dropped = DataLoader(TensorDataset(x, y), batch_size=20, drop_last=True)
    res = train_marglik(model, dropped, cfg)
    model.eval()
    la = Laplace(model, "classification", "kron").fit([(x[:40], y[:40])])
    assert res.history[-1]["neg_log_marglik"] == pytest.approx(
        -float(la.log_marginal_likelihood(1.0)), rel=1e-10
    )


def test_resume_with_a_shuffling_loader_equals_uninterrupted(tmp_path):
    x, y = data(50)
    ckpt = tmp_path / "run.pt"
    cfg = config(checkpoint_every=2, checkpoint=str(ckpt), epochs=4)

    def loader(seed):
        g = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g)

    model = mlp()
    full = train_marglik(model, loader(5), cfg)

    class Stop(Exception):
        pass

    calls = []

    def interrupt(inputs):
        calls.append(1)
        if len(calls) == 10:  # inside epoch 3 (4 minibatches per epoch)
            raise Stop
        return inputs

    with pytest.raises(Stop):
        train_marglik(mlp(), loader(5), cfg, augment=interrupt)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    fresh = mlp(seed=7)
    resumed = train_marglik(fresh, loader(123), cfg, resume=ckpt)  # the generator is restored
    assert resumed.history == full.history
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_train_data_errors():
    x, y = data(20)
    cfg = config(epochs=1)
    gen = ((x[i : i + 5], y[i : i + 5]) for i in range(0, 20, 5))
    with pytest.raises(TypeError, match="`train_data` must be re-iterable"):
        train_marglik(mlp(), gen, cfg)
    with pytest.raises(ValueError, match="`train_data` must yield at least one"):
        train_marglik(mlp(), [], cfg)
    with pytest.raises(TypeError, match="`train_data` must be a tuple"):
        train_marglik(mlp(), 5, cfg)
    with pytest.raises(TypeError, match="`train_data` must be a tuple"):
        train_marglik(mlp(), [x], cfg)
    with pytest.raises(TypeError, match="`train_data` must be a tuple"):
        train_marglik(mlp(), [x[:5], x[5:10], x[10:]], cfg)  # tensors: the pair form
    with pytest.raises(TypeError, match=r"`train_data` must yield.*batch 1 is a list of 1"):
        train_marglik(mlp(), [(x, y), [x]], cfg)
    with pytest.raises(ValueError, match="`train_data` batches must share their shapes"):
        train_marglik(mlp(), [(x[:10], y[:10]), (x[10:].repeat(1, 2), y[10:])], cfg)
    with pytest.raises(ValueError, match="first dimension"):
        train_marglik(mlp(), (x, y[:5]), cfg)
    with pytest.raises(TypeError, match="`augment` must be callable"):
        train_marglik(mlp(), (x, y), cfg, augment=3)
    with pytest.raises(TypeError, match="`augment` must return a tensor"):
        train_marglik(mlp(), (x, y), cfg, augment=lambda v: None)
    with pytest.raises(ValueError, match="`augment` must return as many inputs"):
        train_marglik(mlp(), (x, y), cfg, augment=lambda v: v[:1])


# -- the augmentation hook ----------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_augment_never_reaches_the_laplace_fit(structure):
    x, y = data(50)
    # epochs 2 and 4 fit the Laplace approximation; epoch 4's fit is at the final weights
    cfg = config(structure=structure, learn_hyper=False, epochs=4, burn_in=2, marglik_every=2)
    calls = []
    model = None

    def augment(inputs):
        # NaN if it were ever used while the model is in eval mode (the Laplace fit's mode)
        calls.append((model.training, inputs.shape[0]))
        return -inputs if model.training else torch.full_like(inputs, math.nan)

    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    for train_data in ((x, y), loader):
        calls.clear()
        model = mlp()
        result = train_marglik(model, train_data, cfg, augment=augment)
        # once per weight step, always in training mode, on the minibatch's inputs
        assert len(calls) == 4 * 4 and all(training for training, _ in calls)
        assert sorted(n for _, n in calls[:4]) == [2, 16, 16, 16]
        # the last marginal likelihood is the un-augmented data's at the final weights, to the
        # bit (the same batches of 16 in data order)
        model.eval()
        la = Laplace(model, "classification", structure).fit(
            [(x[i : i + 16], y[i : i + 16]) for i in range(0, 50, 16)]
        )
        assert result.history[-1]["neg_log_marglik"] == -float(la.log_marginal_likelihood(1.0))
    # the augmentation is applied: it changes the weight steps
    plain = mlp()
    train_marglik(plain, (x, y), cfg)
    assert not torch.equal(plain[0].weight, model[0].weight)


# -- flip_shift ---------------------------------------------------------------------------


def reference_flip_shift(x, seed, shift, flip):
    """Per image, the documented draws, ``flip(-1)`` and ``torch.roll`` with zero fill."""
    g = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    flips = torch.rand(b, generator=g) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    moves = torch.randint(-shift, shift + 1, (2, b), generator=g) if shift else None
    out = []
    for i in range(b):
        img = x[i].flip(-1) if flips[i] else x[i]
        if moves is not None:
            dy, dx = int(moves[0, i]), int(moves[1, i])
            img = torch.roll(img, (dy, dx), dims=(-2, -1)).clone()
            h, w = img.shape[-2:]
            if dy > 0:
                img[..., :dy, :] = 0
            elif dy < 0:
                img[..., h + dy :, :] = 0
            if dx > 0:
                img[..., :dx] = 0
            elif dx < 0:
                img[..., w + dx :] = 0
        out.append(img)
    return torch.stack(out), flips, moves


@pytest.mark.parametrize("shape", [(40, 3, 8, 6), (30, 5, 7), (12, 2, 3, 9, 9)])
@pytest.mark.parametrize("shift,flip", [(4, True), (2, False), (0, True), (1, True)])
def test_flip_shift_equals_the_per_image_reference(shape, shift, flip):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    out = flip_shift(x, torch.Generator().manual_seed(11), shift=shift, flip=flip)
    ref, flips, moves = reference_flip_shift(x, 11, shift, flip)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, ref)
    if flip:  # both outcomes occur in 30+ images
        assert 0 < int(flips.sum()) < shape[0]
    if shift:
        assert int(moves.abs().max()) == shift and int(moves.min()) == -shift


def test_flip_shift_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 10, 10, generator=g, dtype=DTYPE)
    a = flip_shift(x, torch.Generator().manual_seed(1))
    b = flip_shift(x, torch.Generator().manual_seed(1))
    c = flip_shift(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # no shift and no flip: the images themselves; flip only: each image or its mirror image
    assert torch.equal(flip_shift(x, g, shift=0, flip=False), x)
    f = flip_shift(x, g, shift=0)
    same = (f == x).flatten(1).all(1)
    mirrored = (f == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()
    # shifts keep the pixel values: every output is a zero-padded window of the flipped image
    s = flip_shift(x, g, shift=4)
    assert bool((s.abs().sum((1, 2, 3)) > 0).all())
    assert s.abs().sum() < x.abs().sum()  # zero padding removed some pixels
    # differentiable in the images
    xr = x.clone().requires_grad_(True)
    flip_shift(xr, g).sum().backward()
    assert set(xr.grad.unique().tolist()) <= {0.0, 1.0}


def test_flip_shift_errors():
    x = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match="`x` must be"):
        flip_shift(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="`shift`"):
        flip_shift(x, shift=-1)
    with pytest.raises(TypeError, match="`shift`"):
        flip_shift(x, shift=1.5)
    with pytest.raises(TypeError, match="`generator`"):
        flip_shift(x, 3)
    with pytest.raises(TypeError, match="`flip`"):
        flip_shift(x, flip=1)
    with pytest.raises(TypeError, match="`x`"):
        flip_shift([[1.0]])


def test_flip_shift_as_the_marglik_augmentation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 1, 6, 6, generator=g, dtype=DTYPE)
    y = torch.randint(0, 2, (24,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 2))
    model = model.to(DTYPE)
    aug = torch.Generator().manual_seed(4)
    cfg = config(epochs=3, burn_in=1, marglik_every=2, batch_size=8)
    result = train_marglik(model, (x, y), cfg, augment=lambda v: flip_shift(v, aug, shift=1))
    assert math.isfinite(result.history[2]["neg_log_marglik"])

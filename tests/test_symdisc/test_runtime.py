"""symdisc.runtime: argument checks, atomic checkpoints, the validated resume and the NaN stop of
the shared training loop, and the trainers built on it (discovery, marginal likelihood,
next-frame training)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from symdisc.runtime import (
    NonFiniteLossError,
    TrainingLoop,
    check_bool,
    check_choice,
    check_float,
    check_instance,
    check_int,
    check_optional_int,
    check_train_data,
    is_finite,
    load_checkpoint,
    non_finite,
    read_checkpoint,
    save_checkpoint,
)

F64 = torch.float64


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: check_int(True, "epochs"), TypeError, "`epochs` must be an int, got bool"),
        (lambda: check_int(2.0, "epochs"), TypeError, "`epochs` must be an int, got float"),
        (lambda: check_int(0, "epochs", minimum=1), ValueError, "`epochs` must be a positive"),
        (lambda: check_int(-1, "seed", minimum=0), ValueError, "`seed` must be a non-negative"),
        (lambda: check_int(2, "k", minimum=3), ValueError, "`k` must be an int >= 3, got 2"),
        (lambda: check_optional_int(False, "m"), TypeError, "`m` must be an int, got bool"),
        (lambda: check_float(True, "lr"), TypeError, "`lr` must be a float, got bool"),
        (lambda: check_float("1", "lr"), TypeError, "`lr` must be a float, got str"),
        (lambda: check_float(math.nan, "lr"), ValueError, "`lr` must be a finite float"),
        (lambda: check_float(0.0, "lr", positive=True), ValueError, "`lr` must be a positive"),
        (lambda: check_float(-1, "w", nonnegative=True), ValueError, "`w` must be a non-neg"),
        (lambda: check_bool(1, "progress"), TypeError, "`progress` must be a bool, got int"),
        (lambda: check_choice("x", "kind", ("a", "b")), ValueError, "`kind` must be one of"),
        (lambda: check_instance(3, "model", nn.Module), TypeError, "`model` must be a Module"),
        (lambda: check_train_data([1], "data"), TypeError, "`data` must be a tuple"),
        (
            lambda: check_train_data((torch.zeros(3, 2), torch.zeros(2)), "data"),
            ValueError,
            "`data` inputs and targets must share a non-empty first dimension",
        ),
    ],
)
def test_checks_name_the_argument_and_reject_bools_as_numbers(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


def test_checks_return_what_they_accept():
    assert check_int(3, "n", minimum=1) == 3 and check_optional_int(None, "m") is None
    assert check_float(2, "lr") == 2.0 and isinstance(check_float(2, "lr"), float)
    assert check_bool(False, "b") is False and check_choice("a", "k", ("a",)) == "a"
    x, y = torch.zeros(4, 2), torch.zeros(4)
    assert check_train_data((x, y)) == (x, y)


def test_finiteness_is_a_check_of_values():
    assert is_finite(1.0) and not is_finite(math.inf) and not is_finite(torch.tensor(math.nan))
    assert is_finite(torch.ones(3)) and not is_finite(torch.tensor([1.0, math.inf]))
    assert non_finite({"a": 1.0, "b": torch.tensor(math.nan), "c": torch.zeros(2)}) == ["b"]


# -- atomic checkpoints ----------------------------------------------------------------------


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1, "w": torch.arange(3)}, path)
    saved = path.read_bytes()
    assert read_checkpoint(path)["step"] == 1 and not (tmp_path / "ckpt.pt.tmp").exists()

    def crash(obj, f):  # dies halfway through writing
        with open(f, "wb") as out:
            out.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == saved  # the previous checkpoint is whole


def test_read_checkpoint_rejects_a_non_dict(tmp_path):
    torch.save([1, 2], tmp_path / "x.pt")
    with pytest.raises(ValueError, match="must hold a dict"):
        read_checkpoint(tmp_path / "x.pt")


# -- the loop --------------------------------------------------------------------------------


def _tiny(seed=0, width=3):
    torch.manual_seed(seed)
    model = nn.Linear(2, width).to(F64)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    scale = torch.ones(2, dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    return model, opt, sched, scale, gen


def _tiny_loop(total, path, model, opt, sched, scale, gen, every=2, lr=0.1):
    loop = TrainingLoop(
        total,
        unit="step",
        settings={"config": {"steps": total, "lr": lr}},
        checkpoint=path,
        checkpoint_every=every,
    )
    loop.track(model=model, optimizer=opt, scheduler=sched, scale=scale, rng=gen)
    loop.values["best"] = None
    return loop


def _tiny_loss(model, scale, gen):
    """The tiny run's loss on a fresh batch of inputs drawn at the current scale."""
    x = torch.randn(5, 2, generator=gen, dtype=F64) * scale
    return model(x).pow(2).mean()


def _tiny_step(loss, opt, sched, scale):
    """One optimiser and schedule step on ``loss``; then the inputs' scale grows by 10%."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    with torch.no_grad():
        scale.mul_(1.1)


def _tiny_run(loop, model, opt, sched, scale, gen):
    for step in loop:
        loss = _tiny_loss(model, scale, gen)
        loop.check_finite(loss, "the loss")
        _tiny_step(loss, opt, sched, scale)
        loop.values["best"] = step
        loop.end({"step": step, "loss": float(loss.detach())})
    return loop.history


def test_loop_resume_equals_an_uninterrupted_run(tmp_path):
    whole = _tiny()
    history = _tiny_run(_tiny_loop(6, None, *whole, every=0), *whole)
    assert [r["step"] for r in history] == list(range(1, 7))

    part = _tiny()
    path = tmp_path / "ckpt.pt"
    _tiny_run(_tiny_loop(4, path, *part), *part)
    assert read_checkpoint(path)["step"] == 4
    fresh = _tiny(seed=5)
    loop = _tiny_loop(6, None, *fresh, every=0)  # epochs and the checkpoint may change
    loop.resume(path)
    assert loop.position == 4 and loop.values["best"] == 4
    assert _tiny_run(loop, *fresh) == history
    _assert_same(_params(fresh[0]), _params(whole[0]))
    assert torch.equal(fresh[3], whole[3])


def test_loop_rejects_a_checkpoint_that_does_not_fit_before_changing_anything(tmp_path):
    path = tmp_path / "ckpt.pt"
    part = _tiny()
    _tiny_run(_tiny_loop(2, path, *part), *part)
    for kw, message in [
        (dict(width=4), r"model: `weight` has shape \(3, 2\) in the checkpoint, \(4, 2\) here"),
        (dict(), r"config: `lr` is 0.1 in the checkpoint, 0.2 here"),
    ]:
        model, opt, sched, scale, gen = objects = _tiny(seed=7, **kw)
        loop = _tiny_loop(4, None, *objects, every=0, lr=0.2 if not kw else 0.1)
        before = _params(model), opt.state_dict(), sched.state_dict(), scale.clone()
        state = gen.get_state()
        with pytest.raises(ValueError, match=message):
            loop.resume(path)
        _assert_same(_params(model), before[0])
        assert opt.state_dict() == before[1] and sched.state_dict() == before[2]
        assert torch.equal(scale, before[3]) and torch.equal(gen.get_state(), state)
        assert loop.position == 0 and loop.history == [] and loop.values["best"] is None


def test_load_checkpoint_names_every_difference(tmp_path):
    path = tmp_path / "ckpt.pt"
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    other = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1), nn.Linear(1, 1))
    other_opt = torch.optim.SGD([*other.parameters()][:2], lr=0.1)
    before = _params(other)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, {"model": other, "optimizer": other_opt, "rng": torch.Generator()})
    text = str(info.value)
    assert "model: missing from the checkpoint: ['2.weight', '2.bias']" in text
    assert "optimizer: group 0 has 4 parameters in the checkpoint, 2 here" in text
    assert "no `rng` in the checkpoint" in text
    _assert_same(_params(other), before)
    fitting = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    load_checkpoint(path, {"model": fitting})
    _assert_same(_params(fitting), _params(model))


def test_nan_stop_restores_the_last_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    objects = _tiny()
    loop = _tiny_loop(6, path, *objects)
    model, opt, sched, scale, gen = objects

    def poison_at_step_5(step):
        if step == 5:
            with torch.no_grad():
                model.weight[0, 0] = math.nan

    good = {}
    for step in loop:
        poison_at_step_5(step)
        loss = _tiny_loss(model, scale, gen)
        if step < 5:
            loop.check_finite(loss, "the loss")
        else:
            saved = path.read_bytes()
            with pytest.raises(NonFiniteLossError) as info:
                loop.check_finite(loss, "the loss")
            break
        _tiny_step(loss, opt, sched, scale)
        loop.end({"step": step, "loss": float(loss.detach())})
        if step == 4:
            good = _params(model), sched.state_dict(), scale.clone(), gen.get_state()
    text = str(info.value)
    assert text.startswith("training stopped at step 5: the loss is nan; restored model, ")
    assert text.endswith(f"from the last good checkpoint {path} (step 4)")
    assert path.read_bytes() == saved
    _assert_same(_params(model), good[0])
    assert sched.state_dict() == good[1] and torch.equal(scale, good[2])
    assert torch.equal(gen.get_state(), good[3])
    assert loop.position == 4 and len(loop.history) == 4


def test_nan_stop_without_a_checkpoint_says_so():
    loop = TrainingLoop(3, unit="epoch")
    for _ in loop:
        with pytest.raises(NonFiniteLossError, match="epoch 1: the grad is not finite; no chec"):
            loop.check_finite(torch.tensor([1.0, math.nan]), "the grad")
        break


def test_loop_arguments():
    with pytest.raises(ValueError, match="`checkpoint` must name a file"):
        TrainingLoop(3, checkpoint_every=1)
    with pytest.raises(TypeError, match="`total` must be an int, got bool"):
        TrainingLoop(True)
    with pytest.raises(ValueError, match="`unit`"):
        TrainingLoop(3, unit="batch")
    loop = TrainingLoop(3)
    loop.track(model=nn.Linear(1, 1))
    with pytest.raises(ValueError, match="`model` is already checkpointed"):
        loop.track(model=nn.Linear(1, 1))
    with pytest.raises(ValueError, match="`history` is already"):
        loop.track(history=torch.zeros(1))
    with pytest.raises(TypeError, match="`x` must have a state_dict"):
        loop.track(x=3)


# -- discovery: resume rejected before any parameter changes --------------------------------


@pytest.mark.filterwarnings("ignore::symdisc.trainer.FieldCollapseWarning")  # a few steps only
def test_discovery_resume_rejects_another_model_or_config_untouched(tmp_path):
    from symdisc.actions import MLPAction
    from symdisc.generators import Generators
    from symdisc.losses import two_layer
    from symdisc.sampler import sample
    from symdisc.trainer import Discovery, TrainConfig, train

    loss = two_layer("identity")
    samples = sample(loss, 100, seed=0)
    ckpt = str(tmp_path / "ckpt.pt")

    def make(hidden=(16, 16), seed=0):
        torch.manual_seed(seed)
        return Discovery(MLPAction(loss, 2, hidden, data_dependent=False), Generators(1, 2))

    cfg = dict(steps=4, batch_size=50, checkpoint_every=2, checkpoint=ckpt)
    train(make(), loss, samples, TrainConfig(**cfg))
    for model, config, message in [
        (make((16, 8)), TrainConfig(steps=6, batch_size=50), "model: `action.net"),
        (make(seed=3), TrainConfig(steps=6, batch_size=50, lr=2e-3), "`lr` is 0.001 in the"),
        (make(seed=3), TrainConfig(steps=6, batch_size=25), "`batch_size` is 50 in the"),
    ]:
        before = _params(model)
        with pytest.raises(ValueError, match=f"checkpoint {ckpt} does not fit.*{message}"):
            train(model, loss, samples, config, resume=ckpt)
        _assert_same(_params(model), before)
    # steps, progress and the checkpoint settings may change
    history = train(make(seed=3), loss, samples, TrainConfig(steps=6, batch_size=50), resume=ckpt)
    assert [r["step"] for r in history] == list(range(1, 7))


def test_discovery_resume_mid_pass_equals_an_uninterrupted_run(tmp_path):
    """The minibatch order of a pass is checkpointed: resuming between its batches is exact."""
    from symdisc.actions import MLPAction
    from symdisc.generators import Generators
    from symdisc.losses import two_layer
    from symdisc.sampler import sample
    from symdisc.trainer import Discovery, TrainConfig, train

    loss = two_layer("identity")
    samples = sample(loss, 200, seed=0)
    ckpt = str(tmp_path / "ckpt.pt")

    def make(seed=0):
        torch.manual_seed(seed)
        return Discovery(MLPAction(loss, 2, (8,), data_dependent=False), Generators(1, 2))

    whole = make()
    h_whole = train(whole, loss, samples, TrainConfig(steps=7, batch_size=64))
    cfg = TrainConfig(steps=5, batch_size=64, checkpoint_every=5, checkpoint=ckpt)
    train(make(), loss, samples, cfg)
    resumed = make(seed=1)
    h = train(resumed, loss, samples, TrainConfig(steps=7, batch_size=64), resume=ckpt)
    assert h == h_whole
    _assert_same(_params(resumed), _params(whole))


# -- marginal likelihood: resume rejected before any parameter changes ----------------------


def test_marglik_resume_rejects_another_model_or_config_untouched(tmp_path):
    from ella.marglik import MarglikConfig, train_marglik

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g, dtype=F64)
    y = (x[:, 0] > 0).long()
    ckpt = str(tmp_path / "run.pt")
    base = dict(epochs=2, batch_size=20, n_hyper_steps=2, marglik_every=1, burn_in=0)
    base |= dict(structure="full", checkpoint_every=2, checkpoint=ckpt)

    def mlp(width=6, seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2)).to(F64)

    train_marglik(mlp(), (x, y), MarglikConfig(**base))
    later = base | dict(epochs=3, checkpoint_every=0, checkpoint=None)
    for model, config, message in [
        (mlp(width=5), later, r"model: `0.weight` has shape \(6, 2\) in the checkpoint"),
        (mlp(seed=1), later | dict(lr=0.02), "config: `lr` is 0.01 in the checkpoint, 0.02"),
        (mlp(seed=1), later | dict(structure="kron"), "`structure` is 'full' in the"),
    ]:
        before = _params(model)
        with pytest.raises(ValueError, match=message):
            train_marglik(model, (x, y), MarglikConfig(**config), resume=ckpt)
        _assert_same(_params(model), before)
    result = train_marglik(mlp(seed=1), (x, y), MarglikConfig(**later), resume=ckpt)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


# -- next-frame training: checkpoints, resume and the NaN stop ------------------------------


def _plume():
    from ella.dynamics.plume import PlumeConfig, next_frame_data, plume_dataset

    config = PlumeConfig(size=8, n_plumes=1, n_frames=5)
    return next_frame_data(plume_dataset("symmetric", config, 0), seed=0)


def _conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))


class _Trap(nn.Module):
    """Wraps a model; on its ``at``-th forward call with a gradient, runs ``action``."""

    def __init__(self, inner, at=0, action=None):
        super().__init__()
        self.inner, self.at, self.action, self.calls = inner, at, action, 0

    def forward(self, x):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at:
                self.action(self)
        return self.inner(x)


class _Interrupt(Exception):
    pass


def _interrupt(_):
    raise _Interrupt


def test_next_frame_training_is_the_plain_adam_loop():
    from ella.dynamics import fit_next_frame, rmse

    data = _plume()
    model = _conv()
    fit = fit_next_frame(model, data, epochs=3, lr=1e-2, batch_size=3, seed=4, early_epoch=2)
    ref = _conv()
    x, y = data.train
    gen = torch.Generator().manual_seed(4)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    val = [rmse(ref, *data.val)]
    for _ in range(3):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 3):
            idx = order[i : i + 3]
            loss = nn.functional.mse_loss(ref(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val.append(rmse(ref, *data.val))
    assert fit.history["val_rmse"] == val and len(fit.history["train_rmse"]) == 4
    assert fit.best_epoch == min(range(4), key=val.__getitem__)
    _assert_same(_params(model), _params(ref))
    assert set(fit.checkpoints) == {"best", "early"}


def test_next_frame_resume_equals_an_uninterrupted_run(tmp_path):
    from ella.dynamics import fit_next_frame

    data = _plume()
    ckpt = tmp_path / "fit.pt"
    kw = dict(epochs=5, lr=1e-2, batch_size=3, seed=1, early_epoch=1)
    whole = _Trap(_conv())
    full = fit_next_frame(whole, data, **kw)
    # 3 minibatches per epoch: the 10th forward with a gradient is in epoch 4
    trap = _Trap(_conv(), 10, _interrupt)
    with pytest.raises(_Interrupt):
        fit_next_frame(trap, data, checkpoint=ckpt, checkpoint_every=3, **kw)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 3
    fresh = _Trap(_conv(seed=8))
    resumed = fit_next_frame(fresh, data, resume=ckpt, **kw)
    assert resumed.history == full.history and resumed.best_epoch == full.best_epoch
    for name in ("early", "best"):
        _assert_same(resumed.checkpoints[name], full.checkpoints[name])
    _assert_same(_params(fresh), _params(whole))
    with pytest.raises(ValueError, match="config: `lr` is 0.01 in the checkpoint, 0.02 here"):
        fit_next_frame(_Trap(_conv()), data, resume=ckpt, **(kw | dict(lr=2e-2)))


def test_next_frame_nan_stops_and_restores_the_last_checkpoint(tmp_path):
    from ella.dynamics import fit_next_frame

    data = _plume()
    ckpt = tmp_path / "fit.pt"
    kw = dict(epochs=5, lr=1e-2, batch_size=3, seed=1, early_epoch=1)

    def poison(trap):
        with torch.no_grad():
            trap.inner[0].weight[0, 0, 0, 0] = math.nan

    whole = _Trap(_conv())
    fit_next_frame(whole, data, **(kw | dict(epochs=2)))  # the state after epoch 2
    model = _Trap(_conv(), 7, poison)  # the 7th forward with a gradient: epoch 3
    with pytest.raises(NonFiniteLossError, match=r"epoch 3: the minibatch loss is nan; restor"):
        fit_next_frame(model, data, checkpoint=ckpt, checkpoint_every=2, **kw)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    _assert_same(_params(model), _params(whole))
    # NaN in the data: no checkpoint to restore
    x, y = data.train
    x = x.clone()
    x[2, 0, 0, 0] = math.nan
    data = dataclasses.replace(data, train=(x, y))
    with pytest.raises(NonFiniteLossError, match="epoch 1: the minibatch loss is nan; no check"):
        fit_next_frame(_conv(), data, **kw)

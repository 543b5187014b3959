"""train_invariant for a new user (issue 15): the defaults, the warning for too few eta steps,
eta on the progress bar, the default checkpoint and its bit-for-bit resume, and the report (and
optional projection) of an eta beyond its augmentation's meaningful range."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import pytest
import torch
from test_invariance import _Interrupt, _StopAfterCheckpoint  # the same interruption
from torch import nn

from conftest import DTYPE
from ella.invariance import (
    MIN_ETA_STEPS,
    AffineAugmentation,
    FewEtaStepsWarning,
    InvarianceConfig,
    InvariantModel,
    PointRotation,
    affine_matrices,
    count_eta_steps,
    train_invariant,
)
from ella.marglik import MarglikConfig, _progress_postfix

LOGGER = "ella.invariance.training"

# the training runs here are deliberately tiny (pytest.warns still sees the warning)
pytestmark = pytest.mark.filterwarnings("ignore::ella.invariance.FewEtaStepsWarning")


def _points(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=DTYPE)
    return x, (x.norm(dim=1) > 1.1).long()


def _point_model(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(DTYPE)
    return InvariantModel(net, PointRotation(dtype=DTYPE), 2)


def _images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g, dtype=DTYPE), torch.arange(n) % 3


def _image_model(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 6), nn.Tanh(), nn.Linear(6, 3)).to(DTYPE)
    return InvariantModel(net, AffineAugmentation(dtype=DTYPE), 2)


def _config(**kw):
    base = dict(epochs=3, batch_size=8, lr=0.05, n_hyper_steps=2, marglik_every=1, burn_in=0)
    return MarglikConfig(**(base | kw))


# --------------------------------------------------------------------------------------------
# defaults and the warning
# --------------------------------------------------------------------------------------------


def test_defaults_give_eta_enough_steps_with_the_default_schedule():
    inv = InvarianceConfig()
    assert (inv.method, inv.eta_gradient, inv.n_eta_steps, inv.eta_batch_size) == (
        "lila",
        "stochastic",
        12,
        100,
    )
    assert (inv.n_samples, inv.lr_eta, inv.lr_eta_min, inv.clamp_eta) == (8, 0.1, 0.01, False)
    # MarglikConfig(): marginal likelihood after epochs 15, 20, ..., 100 (18 of them)
    assert count_eta_steps(MarglikConfig(), inv, 4) == 18 * 12 >= MIN_ETA_STEPS
    # the run: 30 epochs with the old n_eta_steps=1 -> epochs 15, 20, 25, 30
    old = InvarianceConfig(n_eta_steps=1, eta_gradient="full", eta_batch_size=None)
    assert count_eta_steps(MarglikConfig(epochs=30), old, 4) == 4
    assert count_eta_steps(MarglikConfig(epochs=30), inv, 4) == 48 < MIN_ETA_STEPS
    # eta_burn_in counts epochs, not marginal-likelihood epochs
    late = InvarianceConfig(eta_burn_in=20, n_eta_steps=1)
    assert count_eta_steps(MarglikConfig(epochs=30), late, 4) == 2
    assert count_eta_steps(MarglikConfig(epochs=7), InvarianceConfig(method="augerino"), 9) == 63
    assert count_eta_steps(MarglikConfig(), InvarianceConfig(method="none"), 4) == 0
    with pytest.raises(TypeError, match="clamp_eta"):
        InvarianceConfig(clamp_eta=1)


def test_few_eta_steps_warn_with_the_count_and_the_settings_that_raise_it():
    inv = InvarianceConfig(n_samples=2, n_eta_steps=2, eta_burn_in=1, eta_batch_size=None)
    with pytest.warns(FewEtaStepsWarning) as caught:
        train_invariant(_point_model(), _points(), _config(batch_size=20), inv)
    (w,) = caught
    message = str(w.message)
    assert "only 4 eta steps" in message and f"MIN_ETA_STEPS={MIN_ETA_STEPS}" in message
    for setting in ("epochs=3", "marglik_every=1", "burn_in=0", "eta_burn_in=1", "n_eta_steps=2"):
        assert setting in message, setting
    assert w.filename == __file__  # points at the caller of train_invariant
    aug = InvarianceConfig(method="augerino", n_samples=2)
    with pytest.warns(FewEtaStepsWarning, match=r"only 6 eta steps.*3 times 2 minibatches"):
        train_invariant(_point_model(), _points(), _config(batch_size=20), aug)


def test_enough_eta_steps_and_the_baseline_do_not_warn():
    # augerino with 20 minibatches per epoch for 3 epochs: 60 >= 50 eta steps
    aug = InvarianceConfig(method="augerino", n_samples=2)
    none = InvarianceConfig(method="none", n_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewEtaStepsWarning)
        train_invariant(_point_model(), _points(), _config(batch_size=2), aug)
        train_invariant(_point_model(), _points(), _config(batch_size=20), none)


# --------------------------------------------------------------------------------------------
# the progress bar
# --------------------------------------------------------------------------------------------


def test_progress_postfix_shows_eta_compactly():
    record = {"train_loss": 0.5, "neg_log_marglik": 1234.5678}
    assert _progress_postfix(record) == {"loss": "0.5", "nlml": "1235"}
    record |= {"eta/a": 0.123, "eta/b": -0.004, "eta/c": math.pi / 2, "lr_eta": 0.1}
    assert _progress_postfix(record)["eta"] == "0.12,-0.00,1.57"
    many = {"train_loss": 1.0} | {f"eta/c{i}": 0.1 * i * (-1) ** i for i in range(8)}
    assert _progress_postfix(many)["eta"] == (
        "c7=-0.70,c6=0.60,c5=-0.50,c4=0.40,c3=-0.30,c2=0.20,..."
    )


def test_progress_bar_shows_eta(capsys):
    pytest.importorskip("tqdm")
    inv = InvarianceConfig(method="none", n_samples=2)
    train_invariant(_point_model(), _points(), _config(batch_size=20, progress=True), inv)
    assert "eta=0.00" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def _wrapped(seed, path, build=_image_model):
    model = build(seed)
    model.net = _StopAfterCheckpoint(model.net, path)
    return model


def test_a_checkpoint_path_alone_checkpoints_every_epoch_and_resumes_bit_for_bit(tmp_path, caplog):
    data = _images()
    inv = InvarianceConfig(n_samples=2, eta_burn_in=0, n_eta_steps=2, eta_batch_size=10)
    ckpt = tmp_path / "run.pt"
    cfg = _config(checkpoint=str(ckpt))  # checkpoint_every left at 0
    full = train_invariant(_wrapped(0, None), data, cfg, inv)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 3
    ckpt.unlink()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(_Interrupt):
            train_invariant(_wrapped(0, ckpt), data, cfg, inv)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    assert f"checkpoint every 1 epoch(s) to {ckpt}" in caplog.text
    assert "stopped in epoch 2; the last checkpoint is" in caplog.text
    assert f"resume={str(ckpt)!r}" in caplog.text
    resumed = train_invariant(_wrapped(5, None), data, cfg, inv, resume=ckpt)
    assert resumed.eta == full.eta and resumed.best_eta == full.best_eta
    assert resumed.history == full.history and resumed.precisions == full.precisions
    assert resumed.best_neg_log_marglik == full.best_neg_log_marglik
    for name, value in full.best_state.items():
        assert torch.equal(value, resumed.best_state[name]), name


def test_a_stopped_run_without_a_checkpoint_says_how_to_get_one(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with pytest.raises(_Interrupt):
            train_invariant(
                _wrapped(0, Path(__file__)),  # exists: raises on the first forward
                _images(),
                _config(),
                InvarianceConfig(n_samples=2),
            )
    assert "no checkpoint was set" in caplog.text and "MarglikConfig(checkpoint=" in caplog.text


# --------------------------------------------------------------------------------------------
# eta beyond its meaningful range
# --------------------------------------------------------------------------------------------


def test_augmentation_limits_are_where_the_distribution_stops_being_meaningful():
    aug = AffineAugmentation(dtype=DTYPE)
    limits = dict(zip(aug.names, aug.limits))
    assert PointRotation.limits == (2 * math.pi,) and limits["rotate"] == 2 * math.pi
    # rotation: at eta = 2 pi the extreme draws eps = +-1 are the identity (every angle of
    # U[-2 pi, 2 pi] is covered exactly twice), and at eta = pi the same map (the angles wrap)
    for eta_rot, want in ((2 * math.pi, torch.eye(3, dtype=DTYPE)), (math.pi, None)):
        eta = torch.tensor([0, 0, eta_rot, 0, 0, 0], dtype=DTYPE)
        ends = affine_matrices(eta, torch.tensor([[0, 0, 1.0, 0, 0, 0], [0, 0, -1.0, 0, 0, 0]]))
        torch.testing.assert_close(ends[0], ends[1])
        if want is not None:
            torch.testing.assert_close(ends[0], want)
    # translation: at eta = 1 the extreme draw moves the image centre onto the border
    eta = torch.tensor([limits["translate_x"], 0, 0, 0, 0, 0], dtype=DTYPE)
    centre = affine_matrices(eta, torch.tensor([1.0, 0, 0, 0, 0, 0])) @ torch.tensor(
        [0.0, 0, 1], dtype=DTYPE
    )
    torch.testing.assert_close(centre[:2], torch.tensor([1.0, 0.0], dtype=DTYPE))
    # scale and shear: factors from 1/4 to 4 at the extreme draws
    for i, name in ((3, "scale_x"), (5, "shear")):
        eta = torch.zeros(6, dtype=DTYPE)
        eta[i] = limits[name]
        eps = torch.zeros(6, dtype=DTYPE)
        eps[i] = 1.0
        values = torch.linalg.eigvalsh(affine_matrices(eta, eps)[:2, :2])
        assert float(values.max()) == pytest.approx(4.0)
        assert float(values.min()) == pytest.approx(0.25 if name == "shear" else 1.0)


def _diverging(clamp=False, **kw):
    return InvarianceConfig(
        method="augerino", n_samples=2, lr_eta=3.0, augerino_weight=10.0, clamp_eta=clamp, **kw
    )


@pytest.mark.parametrize("clamp", [False, True])
def test_augerino_beyond_its_range_is_reported_once_and_clamp_keeps_it_inside(clamp, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        res = train_invariant(_point_model(), _points(), _config(batch_size=20), _diverging(clamp))
    assert res.eta_diverged == ["rotate"]
    flagged = [r["epoch"] for r in res.history if "eta_diverged" in r]
    assert len(flagged) == 1 and res.history[flagged[0] - 1]["eta_diverged"] == ["rotate"]
    assert caplog.text.count("eta diverged") == 1 and "rotate" in caplog.text
    rotations = [abs(r["eta/rotate"]) for r in res.history]
    if clamp:
        assert max(rotations) <= 2 * math.pi and abs(res.eta[0]) == pytest.approx(2 * math.pi)
        assert "projected back" in caplog.text
    else:
        assert abs(res.eta[0]) > 2 * math.pi


def test_a_run_within_range_reports_nothing_and_divergence_survives_a_resume(tmp_path):
    calm = InvarianceConfig(method="augerino", n_samples=2, lr_eta=0.01)
    res = train_invariant(_point_model(), _points(), _config(batch_size=20), calm)
    assert res.eta_diverged == [] and not any("eta_diverged" in r for r in res.history)
    ckpt = tmp_path / "ckpt.pt"
    cfg = _config(batch_size=20, checkpoint=str(ckpt))
    full = train_invariant(_wrapped(0, None, _point_model), _points(), cfg, _diverging())
    ckpt.unlink()
    with pytest.raises(_Interrupt):
        train_invariant(_wrapped(0, ckpt, _point_model), _points(), cfg, _diverging())
    fresh = _wrapped(3, None, _point_model)
    resumed = train_invariant(fresh, _points(), cfg, _diverging(), resume=ckpt)
    assert full.eta_diverged == resumed.eta_diverged == ["rotate"]
    assert resumed.history == full.history and resumed.eta == full.eta


def test_limits_must_match_the_components():
    class Bad(PointRotation):
        limits = (1.0, 2.0)

    torch.manual_seed(0)
    model = InvariantModel(nn.Linear(2, 2).to(DTYPE), Bad(dtype=DTYPE), 2)
    with pytest.raises(ValueError, match="limits"):
        train_invariant(model, _points(), _config(), InvarianceConfig(method="none"))

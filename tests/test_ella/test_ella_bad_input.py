"""Issue 18: bad inputs a user plausibly passes to the public calls of ``ella`` fail at the
boundary with the documented exception, and the message names the argument (`name`).

Each case of :data:`CASES` is one bad call; the tests after it check that failed calls leave
the caller's inputs and modules unchanged, and that results print a short summary.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from ella import data as edata
from ella import dynamics, invariance, layers, marglik, models
from ella import laplace as elaplace
from ella.dynamics import (
    FieldCNN,
    FitResult,
    NextFrameData,
    PlumeConfig,
    fit_next_frame,
    fit_superresolution,
    rmse,
    simulate,
)
from ella.invariance import (
    AffineAugmentation,
    InvarianceConfig,
    InvariantModel,
    PointRotation,
    eta_gradient,
    invariant_laplace,
)
from ella.laplace import Laplace
from ella.marglik import MarglikConfig, MarglikResult, train_marglik
from symdisc.runtime import NonFiniteLossError

torch.set_num_threads(1)

NAN, INF = math.nan, math.inf


def _mlp(out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, out))


def _xy(n: int = 8, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


def _fitted(structure: str = "kron") -> Laplace:
    x, y = _xy()
    return Laplace(_mlp(), "classification", structure).fit([(x, y)])


def _frames(n: int = 4) -> NextFrameData:
    g = torch.Generator().manual_seed(0)

    def pair() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 3, 6, 6, generator=g), torch.randn(n, 3, 6, 6, generator=g)

    return NextFrameData(pair(), pair(), pair(), (1.0, 1.0))


def _with_nan(data: NextFrameData, split: str) -> NextFrameData:
    x, y = getattr(data, split)
    x = x.clone()
    x[0, 0, 0, 0] = NAN
    parts = {s: getattr(data, s) for s in ("train", "val", "test")}
    parts[split] = (x, y)
    return NextFrameData(parts["train"], parts["val"], parts["test"], data.scale)


def _state() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(3, 8, 8, dtype=torch.float64), torch.zeros(8, 8, dtype=torch.float64)


def _inv_model() -> InvariantModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    return InvariantModel(net, PointRotation([0.3]), 2)


def _fc() -> nn.Module:
    return layers.FC(2, 3, 4, 4)


# (call, exception type, the argument's name as it appears in the message)
CASES = [
    # -- ella.invariance: augmentations ----------------------------------------------------
    pytest.param(lambda: AffineAugmentation([NAN] * 6), ValueError, "eta", id="affine-eta-nan"),
    pytest.param(
        lambda: AffineAugmentation([INF] + [0.0] * 5), ValueError, "eta", id="affine-eta-inf"
    ),
    pytest.param(lambda: AffineAugmentation([0.1] * 5), ValueError, "eta", id="affine-eta-short"),
    pytest.param(lambda: AffineAugmentation([[0.1] * 6]), ValueError, "eta", id="affine-eta-2d"),
    pytest.param(
        lambda: AffineAugmentation(learnable=1), TypeError, "learnable", id="affine-learnable-int"
    ),
    pytest.param(
        lambda: AffineAugmentation(dtype=torch.long), TypeError, "dtype", id="affine-dtype-long"
    ),
    pytest.param(lambda: PointRotation([NAN]), ValueError, "eta", id="rotation-eta-nan"),
    pytest.param(lambda: PointRotation([0.1, 0.2]), ValueError, "eta", id="rotation-eta-long"),
    pytest.param(
        lambda: AffineAugmentation()(torch.rand(2, 1, 8, 8), 0),
        ValueError,
        "n_samples",
        id="affine-n-samples-0",
    ),
    pytest.param(
        lambda: AffineAugmentation()(torch.rand(2, 1, 8, 8), 2.0),
        TypeError,
        "n_samples",
        id="affine-n-samples-float",
    ),
    pytest.param(
        lambda: AffineAugmentation()(torch.rand(2, 8, 8), 2), ValueError, "x", id="affine-x-3d"
    ),
    pytest.param(lambda: AffineAugmentation()([[1.0]], 2), TypeError, "x", id="affine-x-list"),
    pytest.param(
        lambda: AffineAugmentation()(torch.ones(2, 1, 8, 8, dtype=torch.long), 2),
        TypeError,
        "x",
        id="affine-x-int",
    ),
    pytest.param(
        lambda: AffineAugmentation().apply(torch.rand(2, 1, 8, 8), torch.zeros(2, 3, 5)),
        ValueError,
        "eps",
        id="affine-eps-shape",
    ),
    pytest.param(
        lambda: AffineAugmentation().apply(torch.rand(2, 1, 8, 8), [0.0]),
        TypeError,
        "eps",
        id="affine-eps-list",
    ),
    pytest.param(
        lambda: PointRotation()(torch.rand(3, 3), 2), ValueError, "x", id="rotation-x-3-columns"
    ),
    pytest.param(
        lambda: PointRotation().sample_eps(-1, 2), ValueError, "n", id="rotation-sample-n-negative"
    ),
    pytest.param(
        lambda: InvariantModel(nn.Linear(2, 2), PointRotation(), 0),
        ValueError,
        "n_samples",
        id="invariant-n-samples-0",
    ),
    pytest.param(
        lambda: InvariantModel(nn.Linear(2, 2), "rotation", 2),
        TypeError,
        "augmentation",
        id="invariant-augmentation-str",
    ),
    pytest.param(
        lambda: InvariantModel("net", PointRotation(), 2), TypeError, "net", id="invariant-net-str"
    ),
    # -- ella.invariance: eta gradient, invariant laplace, config --------------------------
    pytest.param(
        lambda: eta_gradient(_fitted(), 1.0, _inv_model(), [], n_total=0),
        ValueError,
        "n_total",
        id="eta-gradient-n-total-0",
    ),
    pytest.param(
        lambda: eta_gradient(_fitted(), 1.0, _inv_model(), [], n_total=2.0),
        TypeError,
        "n_total",
        id="eta-gradient-n-total-float",
    ),
    pytest.param(
        lambda: eta_gradient("laplace", 1.0, _inv_model(), [], n_total=2),
        TypeError,
        "laplace",
        id="eta-gradient-laplace-str",
    ),
    pytest.param(
        lambda: eta_gradient(_fitted(), 1.0, nn.Linear(2, 2), [], n_total=2),
        TypeError,
        "model",
        id="eta-gradient-model-plain",
    ),
    pytest.param(
        lambda: invariant_laplace(nn.Linear(2, 2), [], "classification", "kron"),
        TypeError,
        "model",
        id="invariant-laplace-model",
    ),
    pytest.param(
        lambda: invariant_laplace(_inv_model(), [], "classification", "kron", differentiable=1),
        TypeError,
        "differentiable",
        id="invariant-laplace-differentiable",
    ),
    pytest.param(
        lambda: invariant_laplace(
            _inv_model(),
            [(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))],
            "classification",
            "kron",
        ),
        TypeError,
        "data",
        id="invariant-laplace-pairs",
    ),
    pytest.param(
        lambda: invariant_laplace(
            _inv_model(),
            (torch.zeros(3, 2), torch.zeros(3, 2, 1), torch.zeros(3, dtype=torch.long)),
            "classification",
            "kron",
        ),
        TypeError,
        "data",
        id="invariant-laplace-single-triple",
    ),
    pytest.param(
        lambda: eta_gradient(_fitted(), 1.0, _inv_model(), 5, n_total=2),
        TypeError,
        "data",
        id="eta-gradient-data-int",
    ),
    pytest.param(
        lambda: InvarianceConfig(method="lilla"), ValueError, "method", id="invariance-method"
    ),
    pytest.param(
        lambda: InvarianceConfig(n_samples=0), ValueError, "n_samples", id="invariance-n-samples"
    ),
    pytest.param(
        lambda: InvarianceConfig(lr_eta=NAN), ValueError, "lr_eta", id="invariance-lr-eta-nan"
    ),
    pytest.param(
        lambda: InvarianceConfig(lr_eta="0.1"), TypeError, "lr_eta", id="invariance-lr-eta-str"
    ),
    pytest.param(lambda: InvarianceConfig(seed=-1), ValueError, "seed", id="invariance-seed"),
    pytest.param(
        lambda: InvarianceConfig(clamp_eta="yes"), TypeError, "clamp_eta", id="invariance-clamp-eta"
    ),
    pytest.param(
        lambda: InvarianceConfig(eta_batch_size=0),
        ValueError,
        "eta_batch_size",
        id="invariance-eta-batch-size",
    ),
    # -- ella.data --------------------------------------------------------------------------
    pytest.param(
        lambda: edata.transformed_digits("rotated", 0, n_train=5000),
        ValueError,
        "n_train",
        id="digits-n-train-5000",
    ),
    pytest.param(
        lambda: edata.transformed_digits("rotated", 0, n_train=0),
        ValueError,
        "n_train",
        id="digits-n-train-0",
    ),
    pytest.param(
        lambda: edata.transformed_digits("rotated", 0, n_train=10.0),
        TypeError,
        "n_train",
        id="digits-n-train-float",
    ),
    pytest.param(
        lambda: edata.transformed_digits("rotatd", 0), ValueError, "version", id="digits-version"
    ),
    pytest.param(
        lambda: edata.transformed_digits("rotated", "0"), TypeError, "seed", id="digits-seed-str"
    ),
    pytest.param(
        lambda: edata.transformed_digits("rotated", 0, n_train=1797, source="sklearn"),
        ValueError,
        "n_train",
        id="digits-sklearn-n-train",
    ),
    pytest.param(
        lambda: edata.digits_images(source="cifar"), ValueError, "source", id="digits-source"
    ),
    pytest.param(
        lambda: edata.imposed_eta("rotatd"), ValueError, "version", id="imposed-eta-version"
    ),
    pytest.param(lambda: edata.rotation_toy(0, 0), ValueError, "n", id="toy-n-0"),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_classes=0),
        ValueError,
        "n_classes",
        id="toy-n-classes-0",
    ),
    pytest.param(
        lambda: edata.mnist_split(n_train=0), ValueError, "n_train", id="mnist-split-n-train"
    ),
    pytest.param(
        lambda: edata.mnist_split(standardised="yes"),
        TypeError,
        "standardised",
        id="mnist-split-standardised",
    ),
    pytest.param(lambda: edata.quadrant_digits("upper", 0), ValueError, "task", id="quadrant-task"),
    pytest.param(lambda: edata.flip_shift(torch.rand(8, 8)), ValueError, "x", id="flip-shift-2d"),
    pytest.param(
        lambda: edata.flip_shift(torch.rand(2, 1, 8, 8), shift=-1),
        ValueError,
        "shift",
        id="flip-shift-negative",
    ),
    pytest.param(
        lambda: edata.read_idx("/nonexistent/file.idx"),
        FileNotFoundError,
        "file.idx",
        id="read-idx-missing",
    ),
    pytest.param(
        lambda: edata.load_mnist("/nonexistent", split="val"),
        ValueError,
        "split",
        id="load-mnist-split",
    ),
    # -- ella.dynamics: plume ------------------------------------------------------------------
    pytest.param(
        lambda: simulate(*_state(), [0.2], 3),
        ValueError,
        "buoyancy",
        id="simulate-buoyancy-one-value",
    ),
    pytest.param(
        lambda: simulate(*_state(), [0.2, 0.1, 0.0], 3),
        ValueError,
        "buoyancy",
        id="simulate-buoyancy-three",
    ),
    pytest.param(
        lambda: simulate(*_state(), 0.2, 3), TypeError, "buoyancy", id="simulate-buoyancy-scalar"
    ),
    pytest.param(
        lambda: simulate(*_state(), [NAN, 0.0], 3),
        ValueError,
        "buoyancy",
        id="simulate-buoyancy-nan",
    ),
    pytest.param(
        lambda: simulate(*_state(), torch.zeros(5, 2), 3),
        ValueError,
        "buoyancy",
        id="simulate-buoyancy-batch",
    ),
    pytest.param(
        lambda: simulate(_state()[0], torch.zeros(4, 4), [0.0, 0.2], 3),
        ValueError,
        "source",
        id="simulate-source-grid",
    ),
    pytest.param(
        lambda: simulate(_state()[0], [0.0], [0.0, 0.2], 3),
        TypeError,
        "source",
        id="simulate-source-list",
    ),
    pytest.param(
        lambda: simulate(torch.zeros(2, 8, 8), _state()[1], [0.0, 0.2], 3),
        ValueError,
        "state",
        id="simulate-state-channels",
    ),
    pytest.param(
        lambda: simulate(torch.zeros(3, 8, 8, dtype=torch.long), _state()[1], [0.0, 0.2], 3),
        TypeError,
        "state",
        id="simulate-state-int",
    ),
    pytest.param(
        lambda: simulate(*_state(), [0.0, 0.2], 0), ValueError, "n_frames", id="simulate-n-frames-0"
    ),
    pytest.param(
        lambda: simulate(*_state(), [0.0, 0.2], 3, dt=0.0), ValueError, "dt", id="simulate-dt-0"
    ),
    pytest.param(
        lambda: simulate(*_state(), [0.0, 0.2], 3, substeps=0),
        ValueError,
        "substeps",
        id="simulate-substeps-0",
    ),
    pytest.param(lambda: PlumeConfig(size=0), ValueError, "size", id="plume-size-0"),
    pytest.param(lambda: PlumeConfig(size=8.0), TypeError, "size", id="plume-size-float"),
    pytest.param(lambda: PlumeConfig(n_plumes=0), ValueError, "n_plumes", id="plume-n-plumes-0"),
    pytest.param(lambda: PlumeConfig(n_frames=0), ValueError, "n_frames", id="plume-n-frames-0"),
    pytest.param(lambda: PlumeConfig(dt=-0.5), ValueError, "dt", id="plume-dt-negative"),
    pytest.param(
        lambda: PlumeConfig(strength=NAN), ValueError, "strength", id="plume-strength-nan"
    ),
    pytest.param(
        lambda: PlumeConfig(factors=(1.0, 0.5)), ValueError, "factors", id="plume-factors-short"
    ),
    pytest.param(
        lambda: PlumeConfig(source_radius=(2.0, 1.0)),
        ValueError,
        "source_radius",
        id="plume-radius-order",
    ),
    pytest.param(
        lambda: PlumeConfig(velocity_scale=-1.0),
        ValueError,
        "velocity_scale",
        id="plume-velocity-negative",
    ),
    pytest.param(lambda: PlumeConfig(dtype=torch.long), ValueError, "dtype", id="plume-dtype-long"),
    pytest.param(
        lambda: dynamics.plume_dataset("symmetrical", PlumeConfig(), 0),
        ValueError,
        "kind",
        id="plume-dataset-kind",
    ),
    pytest.param(
        lambda: dynamics.plume_dataset("symmetric", {"size": 8}, 0),
        TypeError,
        "config",
        id="plume-dataset-config-dict",
    ),
    pytest.param(
        lambda: dynamics.next_frame_data(torch.zeros(2, 3, 3, 4, 4)),
        ValueError,
        "sequences",
        id="next-frame-short",
    ),
    pytest.param(
        lambda: dynamics.next_frame_data([1.0]), TypeError, "sequences", id="next-frame-list"
    ),
    pytest.param(
        lambda: dynamics.next_frame_data(torch.zeros(2, 6, 3, 4, 4), (0.9, 0.1)),
        ValueError,
        "fractions",
        id="next-frame-fractions",
    ),
    pytest.param(
        lambda: dynamics.next_frame_data(torch.zeros(2, 6, 3, 4, 4), (0.5,)),
        ValueError,
        "fractions",
        id="next-frame-fractions-one",
    ),
    # -- ella.dynamics: training ---------------------------------------------------------------
    pytest.param(
        lambda: rmse(FieldCNN(), torch.zeros(0, 3, 6, 6), torch.zeros(0, 3, 6, 6)),
        ValueError,
        "x",
        id="rmse-empty",
    ),
    pytest.param(
        lambda: rmse(FieldCNN(), torch.zeros(2, 3, 6, 6), torch.zeros(3, 3, 6, 6)),
        ValueError,
        "y",
        id="rmse-lengths",
    ),
    pytest.param(
        lambda: rmse(FieldCNN(), torch.zeros(2, 3, 6, 6), torch.zeros(2, 3, 6, 6), 0),
        ValueError,
        "batch_size",
        id="rmse-batch-size",
    ),
    pytest.param(
        lambda: rmse("model", torch.zeros(2, 3, 6, 6), torch.zeros(2, 3, 6, 6)),
        TypeError,
        "model",
        id="rmse-model-str",
    ),
    pytest.param(
        lambda: rmse(FieldCNN(), [0.0], torch.zeros(2, 3, 6, 6)), TypeError, "x", id="rmse-x-list"
    ),
    pytest.param(
        lambda: dynamics.superres.mae(FieldCNN(), torch.zeros(0, 3, 6, 6), torch.zeros(0, 3, 6, 6)),
        ValueError,
        "x",
        id="mae-empty",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _frames(), epochs=0),
        ValueError,
        "epochs",
        id="next-frame-epochs-0",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _frames(), epochs=2, early_epoch=1, lr=NAN),
        ValueError,
        "lr",
        id="next-frame-lr-nan",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _frames(), epochs=2, early_epoch=3),
        ValueError,
        "early_epoch",
        id="next-frame-early-epoch",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _frames(), epochs=2, early_epoch=1, batch_size=0),
        ValueError,
        "batch_size",
        id="next-frame-batch-size",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _frames(), epochs=2, early_epoch=1, penalty=-1.0),
        ValueError,
        "penalty",
        id="next-frame-penalty",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), {"train": 1}, epochs=2, early_epoch=1),
        TypeError,
        "data",
        id="next-frame-data-dict",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _with_nan(_frames(), "train"), epochs=1, early_epoch=1),
        NonFiniteLossError,
        "minibatch loss",
        id="next-frame-nan-train",
    ),
    pytest.param(
        lambda: fit_next_frame(FieldCNN(), _with_nan(_frames(), "val"), epochs=1, early_epoch=1),
        NonFiniteLossError,
        "val_rmse",
        id="next-frame-nan-val",
    ),
    pytest.param(
        lambda: fit_superresolution(FieldCNN(), _frames(), epochs=0),
        ValueError,
        "epochs",
        id="superres-epochs-0",
    ),
    pytest.param(
        lambda: fit_superresolution(FieldCNN(), _frames(), epochs=1, early_epoch=1, lr=0.0),
        ValueError,
        "lr",
        id="superres-lr-0",
    ),
    pytest.param(
        lambda: fit_superresolution(FieldCNN(), (1, 2), epochs=1, early_epoch=1),
        TypeError,
        "data",
        id="superres-data-tuple",
    ),
    pytest.param(
        lambda: fit_superresolution(
            FieldCNN(), _with_nan(_frames(), "train"), epochs=1, early_epoch=1
        ),
        NonFiniteLossError,
        "minibatch loss",
        id="superres-nan-train",
    ),
    pytest.param(
        lambda: fit_superresolution(
            FieldCNN(), _with_nan(_frames(), "test"), epochs=1, early_epoch=1
        ),
        NonFiniteLossError,
        "test_mae",
        id="superres-nan-test",
    ),
    pytest.param(lambda: FieldCNN(width=0), ValueError, "width", id="field-cnn-width"),
    pytest.param(
        lambda: FieldCNN(activation="gelu"), ValueError, "activation", id="field-cnn-activation"
    ),
    pytest.param(
        lambda: dynamics.TurbulenceConfig(size=7), ValueError, "size", id="turbulence-size-odd"
    ),
    pytest.param(
        lambda: dynamics.TurbulenceConfig(viscosity=0.0),
        ValueError,
        "viscosity",
        id="turbulence-viscosity",
    ),
    pytest.param(
        lambda: dynamics.upsample(torch.zeros(1, 3, 2, 2, 2), 0),
        ValueError,
        "factor",
        id="upsample-factor",
    ),
    # -- ella.layers ---------------------------------------------------------------------------
    pytest.param(
        lambda: _fc()(torch.ones(2, 2, 4, 4, dtype=torch.long)), TypeError, "x", id="fc-x-int"
    ),
    pytest.param(
        lambda: _fc()(torch.ones(2, 2, 4, 4, dtype=torch.float16)), TypeError, "x", id="fc-x-half"
    ),
    pytest.param(
        lambda: _fc()(torch.ones(2, 2, 4, 4, dtype=torch.float64)), TypeError, "x", id="fc-x-double"
    ),
    pytest.param(lambda: _fc()(torch.ones(2, 3, 4, 4)), ValueError, "input", id="fc-x-channels"),
    pytest.param(lambda: _fc()([1.0]), TypeError, "x", id="fc-x-list"),
    pytest.param(
        lambda: layers.CONV(2, 3, 4, 4)(torch.ones(2, 2, 4, 4, dtype=torch.int32)),
        TypeError,
        "x",
        id="conv-x-int",
    ),
    pytest.param(
        lambda: layers.SCONV(2, 3, 4, 4)(torch.ones(2, 2, 4, 4, dtype=torch.float16)),
        TypeError,
        "x",
        id="sconv-x-half",
    ),
    pytest.param(
        lambda: layers.LiftingConv(2, 3)(torch.ones(2, 2, 5, 5, dtype=torch.long)),
        TypeError,
        "x",
        id="lifting-x-int",
    ),
    pytest.param(
        lambda: layers.GroupConv(2, 3)(torch.ones(2, 2, 4, 5, 5, dtype=torch.float16)),
        TypeError,
        "x",
        id="gconv-x-half",
    ),
    pytest.param(
        lambda: layers.RelaxedGroupConv(2, 3)(torch.ones(2, 2, 4, 5, 5, dtype=torch.long)),
        TypeError,
        "x",
        id="relaxed-gconv-x-int",
    ),
    pytest.param(
        lambda: layers.RelaxedLiftingConv(2, 3)(torch.ones(2, 2, 5, 5, dtype=torch.bfloat16)),
        TypeError,
        "x",
        id="relaxed-lifting-x-bf16",
    ),
    pytest.param(lambda: layers.FC(0, 3, 4, 4), ValueError, "in_channels", id="fc-in-channels-0"),
    pytest.param(
        lambda: layers.CONV(2, 3, 4, 4, subsampling="avg"),
        ValueError,
        "subsampling",
        id="conv-subsampling",
    ),
    pytest.param(
        lambda: layers.CONV(2, 3, 4, 4, kernel_size=2),
        ValueError,
        "kernel_size",
        id="conv-kernel-even",
    ),
    pytest.param(
        lambda: layers.group_pool(torch.zeros(1, 2, 4, 3, 3), "sum"),
        ValueError,
        "mode",
        id="group-pool-mode",
    ),
    pytest.param(
        lambda: layers.rotate_p4(torch.zeros(1, 2, 4, 3, 3), 1.5),
        TypeError,
        "k",
        id="rotate-p4-k-float",
    ),
    pytest.param(
        lambda: layers.relaxation_penalty(nn.Linear(2, 2), order=0),
        ValueError,
        "order",
        id="relaxation-order",
    ),
    # -- ella.laplace ----------------------------------------------------------------------------
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron").fit([(_xy()[0], _xy()[1] + 5)]),
        ValueError,
        "targets",
        id="laplace-kron-labels-high",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "full").fit([(_xy()[0], _xy()[1] + 5)]),
        ValueError,
        "targets",
        id="laplace-full-labels-high",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "diag").fit([(_xy()[0], _xy()[1] - 5)]),
        ValueError,
        "targets",
        id="laplace-diag-labels-negative",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron").fit(_xy()),
        TypeError,
        "data",
        id="laplace-single-batch",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "full").fit(list(_xy())),
        TypeError,
        "data",
        id="laplace-single-batch-list",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron").fit([]),
        ValueError,
        "data",
        id="laplace-kron-empty",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron").fit(
            [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
        ),
        ValueError,
        "data",
        id="laplace-kron-empty-batch",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron").fit(42),
        TypeError,
        "data",
        id="laplace-data-int",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron").log_marginal_likelihood(1.0),
        RuntimeError,
        "fit",
        id="laplace-unfitted-marglik",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "diag").state_dict(),
        RuntimeError,
        "fit",
        id="laplace-unfitted-state",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classif", "kron"),
        ValueError,
        "likelihood",
        id="laplace-likelihood",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kfac"),
        ValueError,
        "structure",
        id="laplace-structure",
    ),
    pytest.param(
        lambda: Laplace("model", "classification", "kron"),
        TypeError,
        "model",
        id="laplace-model-str",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "regression", "kron", sigma=0.0),
        ValueError,
        "sigma",
        id="laplace-sigma-0",
    ),
    pytest.param(
        lambda: Laplace(_mlp(), "classification", "kron", temperature=NAN),
        ValueError,
        "temperature",
        id="laplace-temperature-nan",
    ),
    pytest.param(
        lambda: _fitted().log_marginal_likelihood(-1.0),
        ValueError,
        "prior_precision",
        id="laplace-prior-negative",
    ),
    pytest.param(
        lambda: _fitted("full").log_marginal_likelihood(NAN),
        ValueError,
        "prior_precision",
        id="laplace-prior-nan",
    ),
    pytest.param(
        lambda: _fitted().predictive(torch.zeros(2, 5), 1.0),
        ValueError,
        "x",
        id="laplace-predictive-shape",
    ),
    pytest.param(
        lambda: elaplace.expected_calibration_error(
            torch.full((4, 3), 1 / 3), torch.zeros(4, dtype=torch.long), n_bins=0
        ),
        ValueError,
        "n_bins",
        id="ece-n-bins",
    ),
    pytest.param(
        lambda: elaplace.negative_log_likelihood(torch.full((4, 3), 1 / 3), torch.full((4,), 5)),
        ValueError,
        "targets",
        id="nll-targets-range",
    ),
    pytest.param(
        lambda: elaplace.optimize_prior_precision(_fitted(), "grid_search"),
        ValueError,
        "method",
        id="tuning-method",
    ),
    # -- ella.marglik ----------------------------------------------------------------------------
    pytest.param(
        lambda: train_marglik(
            _mlp(), (_xy()[0], _xy()[1] + 5), MarglikConfig(epochs=1, batch_size=4)
        ),
        ValueError,
        "targets",
        id="marglik-labels-high",
    ),
    pytest.param(
        lambda: train_marglik(_mlp(), _xy(), {"epochs": 1}),
        TypeError,
        "config",
        id="marglik-config-dict",
    ),
    pytest.param(
        lambda: train_marglik(_mlp(), _xy()[0], MarglikConfig(epochs=1)),
        TypeError,
        "train_data",
        id="marglik-data-tensor",
    ),
    pytest.param(
        lambda: train_marglik(_mlp(), (_xy()[0], _xy()[1][:3]), MarglikConfig(epochs=1)),
        ValueError,
        "train_data",
        id="marglik-data-lengths",
    ),
    pytest.param(
        lambda: train_marglik(_mlp(), iter([_xy()]), MarglikConfig(epochs=1)),
        TypeError,
        "train_data",
        id="marglik-data-iterator",
    ),
    pytest.param(
        lambda: train_marglik(_mlp(), _xy(), MarglikConfig(epochs=1), augment=3),
        TypeError,
        "augment",
        id="marglik-augment",
    ),
    pytest.param(lambda: MarglikConfig(epochs=0), ValueError, "epochs", id="marglik-epochs-0"),
    pytest.param(lambda: MarglikConfig(lr=-1.0), ValueError, "lr", id="marglik-lr-negative"),
    pytest.param(
        lambda: MarglikConfig(structure="kfac"), ValueError, "structure", id="marglik-structure"
    ),
    pytest.param(
        lambda: MarglikConfig(optimizer="adamw"), ValueError, "optimizer", id="marglik-optimizer"
    ),
    pytest.param(
        lambda: MarglikConfig(batch_size=0), ValueError, "batch_size", id="marglik-batch-size"
    ),
    pytest.param(
        lambda: MarglikConfig(marglik_every=0), ValueError, "marglik_every", id="marglik-every-0"
    ),
    # -- more boundaries: data, layers, models, laplace, dynamics ------------------------------
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=(2.0, 1.0)),
        ValueError,
        "radius",
        id="toy-radius-order",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, max_angle_deg=NAN),
        ValueError,
        "max_angle_deg",
        id="toy-angle-nan",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, jitter_deg="2"),
        TypeError,
        "jitter_deg",
        id="toy-jitter-str",
    ),
    # rotation_toy: every count, the seed, the angles, the radius and the dtype (issue 18)
    pytest.param(lambda: edata.rotation_toy(-1, 0), ValueError, "`n`", id="toy-n-negative"),
    pytest.param(lambda: edata.rotation_toy(10.0, 0), TypeError, "`n`", id="toy-n-float"),
    pytest.param(lambda: edata.rotation_toy("10", 0), TypeError, "`n`", id="toy-n-str"),
    pytest.param(lambda: edata.rotation_toy(True, 0), TypeError, "`n`", id="toy-n-bool"),
    pytest.param(lambda: edata.rotation_toy(10, "0"), TypeError, "`seed`", id="toy-seed-str"),
    pytest.param(lambda: edata.rotation_toy(10, 0.5), TypeError, "`seed`", id="toy-seed-float"),
    pytest.param(lambda: edata.rotation_toy(10, None), TypeError, "`seed`", id="toy-seed-none"),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_sectors=0),
        ValueError,
        "`n_sectors`",
        id="toy-n-sectors-0",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_sectors=2.0),
        TypeError,
        "`n_sectors`",
        id="toy-n-sectors-float",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_rings=0), ValueError, "`n_rings`", id="toy-n-rings-0"
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_rings=2.5),
        TypeError,
        "`n_rings`",
        id="toy-n-rings-float",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_classes=2.0),
        TypeError,
        "`n_classes`",
        id="toy-n-classes-float",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, n_classes=1),
        ValueError,
        "`n_classes`",
        id="toy-n-classes-1",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, max_angle_deg=INF),
        ValueError,
        "`max_angle_deg`",
        id="toy-angle-inf",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, max_angle_deg=-10.0),
        ValueError,
        "`max_angle_deg`",
        id="toy-angle-negative",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, max_angle_deg=True),
        TypeError,
        "`max_angle_deg`",
        id="toy-angle-bool",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, jitter_deg=NAN),
        ValueError,
        "`jitter_deg`",
        id="toy-jitter-nan",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=(-1.0, 2.0)),
        ValueError,
        "`radius`",
        id="toy-radius-negative",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=(1.0, 1.0)),
        ValueError,
        "`radius`",
        id="toy-radius-empty-band",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=(0.5, 1.0, 2.0)),
        ValueError,
        "`radius`",
        id="toy-radius-three",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=2.0), TypeError, "`radius`", id="toy-radius-scalar"
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=torch.tensor([0.5, 2.0])),
        TypeError,
        "`radius`",
        id="toy-radius-tensor",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=("a", 2.0)),
        TypeError,
        "`radius[0]`",
        id="toy-radius-str",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=(0.5, INF)),
        ValueError,
        "`radius[1]`",
        id="toy-radius-inf",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, radius=(False, True)),
        TypeError,
        "`radius[0]`",
        id="toy-radius-bool",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, dtype=torch.long),
        ValueError,
        "`dtype`",
        id="toy-dtype-long",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, dtype=torch.complex64),
        ValueError,
        "`dtype`",
        id="toy-dtype-complex",
    ),
    pytest.param(
        lambda: edata.rotation_toy(10, 0, dtype="float64"),
        TypeError,
        "`dtype`",
        id="toy-dtype-str",
    ),
    # flip_shift: images, shift, flip, generator
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(0, 1, 8, 8)), ValueError, "`x`", id="flip-shift-empty"
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 0, 8)),
        ValueError,
        "`x`",
        id="flip-shift-height-0",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 8, 8), shift=8),
        ValueError,
        "`shift`",
        id="flip-shift-whole-side",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 16, 3)),
        ValueError,
        "`shift`",
        id="flip-shift-default-on-narrow-images",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 8, 8), shift=2.0),
        TypeError,
        "`shift`",
        id="flip-shift-float",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 8, 8), shift=True),
        TypeError,
        "`shift`",
        id="flip-shift-bool",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 8, 8), flip=1),
        TypeError,
        "`flip`",
        id="flip-shift-flip-int",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(2, 1, 8, 8), 0),
        TypeError,
        "`generator`",
        id="flip-shift-generator-seed",
    ),
    pytest.param(
        lambda: edata.flip_shift(torch.zeros(8, 8).numpy()),
        TypeError,
        "`x`",
        id="flip-shift-numpy",
    ),
    # digits_images: size and source
    pytest.param(lambda: edata.digits_images(0), ValueError, "`size`", id="digits-size-0"),
    pytest.param(lambda: edata.digits_images(-28), ValueError, "`size`", id="digits-size-negative"),
    pytest.param(lambda: edata.digits_images(28.0), TypeError, "`size`", id="digits-size-float"),
    pytest.param(lambda: edata.digits_images("28"), TypeError, "`size`", id="digits-size-str"),
    pytest.param(lambda: edata.digits_images(True), TypeError, "`size`", id="digits-size-bool"),
    pytest.param(
        lambda: edata.digits_images(source="MNIST"),
        ValueError,
        "`source`",
        id="digits-source-case",
    ),
    pytest.param(
        lambda: edata.digits_images(source=None), ValueError, "`source`", id="digits-source-none"
    ),
    pytest.param(lambda: edata.standardise([1.0]), TypeError, "train", id="standardise-list"),
    pytest.param(
        lambda: edata.standardise(torch.zeros(0, 3)), ValueError, "train", id="standardise-empty"
    ),
    pytest.param(
        lambda: edata.standardise(torch.ones(4, 3)), ValueError, "train", id="standardise-constant"
    ),
    pytest.param(
        lambda: edata.standardise(torch.rand(4, 3), [1.0]),
        TypeError,
        "others[0]",
        id="standardise-others-list",
    ),
    pytest.param(
        lambda: edata.transform_images([1.0], "rotated", 0),
        TypeError,
        "images",
        id="transform-images-list",
    ),
    pytest.param(
        lambda: edata.transform_images(torch.zeros(2, 8, 8), "rotated", 0),
        ValueError,
        "images",
        id="transform-images-3d",
    ),
    pytest.param(
        lambda: edata.transform_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "rotated", 0),
        TypeError,
        "images",
        id="transform-images-uint8",
    ),
    pytest.param(
        lambda: layers.polyphase_pool(torch.zeros(1, 2, 5, 4)), ValueError, "x", id="polyphase-odd"
    ),
    pytest.param(
        lambda: layers.rbf_basis(torch.zeros(4, 3), torch.zeros(2, 2), torch.ones(2)),
        ValueError,
        "points",
        id="rbf-points-shape",
    ),
    pytest.param(
        lambda: layers.rbf_basis(torch.zeros(4, 2), torch.zeros(2, 2), torch.ones(3)),
        ValueError,
        "omega",
        id="rbf-omega-shape",
    ),
    pytest.param(
        lambda: layers.rbf_basis([0.0], torch.zeros(2, 2), torch.ones(2)),
        TypeError,
        "points",
        id="rbf-points-list",
    ),
    pytest.param(
        lambda: models.he_rescale(nn.Linear(2, 2)), TypeError, "model", id="he-rescale-model"
    ),
    pytest.param(
        lambda: models.he_rescale(models.neyshabur("fc", alpha=1), n_probe=0),
        ValueError,
        "n_probe",
        id="he-rescale-n-probe",
    ),
    pytest.param(
        lambda: elaplace.share_prior(nn.Linear(2, 2), path=""),
        ValueError,
        "path",
        id="share-prior-path-empty",
    ),
    pytest.param(
        lambda: _fitted().predictive(torch.ones(2, 4, dtype=torch.long), 1.0),
        TypeError,
        "x",
        id="laplace-predictive-x-int",
    ),
    pytest.param(lambda: _fitted().sample(0, 1.0), ValueError, "n", id="laplace-sample-n-0"),
    pytest.param(
        lambda: marglik.effective_parameters("laplace", 1.0),
        TypeError,
        "laplace",
        id="effective-parameters-laplace",
    ),
    pytest.param(
        lambda: marglik.effective_parameters(_fitted(), -1.0),
        ValueError,
        "prior_precision",
        id="effective-parameters-prior",
    ),
    pytest.param(
        lambda: dynamics.curvature_measures(
            FieldCNN(), torch.zeros(0, 3, 6, 6), torch.zeros(0, 3, 6, 6)
        ),
        ValueError,
        "x",
        id="curvature-measures-empty",
    ),
    pytest.param(
        lambda: dynamics.curvature_measures(
            FieldCNN(), torch.zeros(2, 3, 6, 6), torch.zeros(2, 3, 6, 6), radii=[NAN]
        ),
        ValueError,
        "radii",
        id="curvature-measures-radii-nan",
    ),
    pytest.param(
        lambda: dynamics.curvature_measures(
            FieldCNN(), torch.zeros(2, 3, 6, 6), torch.zeros(2, 3, 6, 6), directions=0
        ),
        ValueError,
        "directions",
        id="curvature-measures-directions",
    ),
    pytest.param(lambda: dynamics.cnn_width_for(0), ValueError, "n_params", id="cnn-width-for-0"),
    pytest.param(
        lambda: FieldCNN()(torch.zeros(1, 3, 6, 6, dtype=torch.long)),
        TypeError,
        "x",
        id="field-cnn-x-int",
    ),
    pytest.param(
        lambda: dynamics.FieldGCNN()(torch.zeros(1, 3, 6, 6, dtype=torch.float16)),
        TypeError,
        "x",
        id="field-gcnn-x-half",
    ),
    pytest.param(
        lambda: dynamics.SuperResCNN(width=2, factor=2)(
            torch.zeros(1, 9, 2, 2, 2, dtype=torch.long)
        ),
        TypeError,
        "x",
        id="superres-cnn-x-int",
    ),
    # -- ella.models -------------------------------------------------------------------------------
    pytest.param(lambda: models.neyshabur("MLP"), ValueError, "layer", id="neyshabur-layer"),
    pytest.param(
        lambda: models.neyshabur("fc", alpha=0), ValueError, "alpha", id="neyshabur-alpha-0"
    ),
    pytest.param(lambda: models.quadrant_model("cnn2", 2), ValueError, "kind", id="quadrant-kind"),
    pytest.param(lambda: models.fixup_resnet(depth=13), ValueError, "depth", id="fixup-depth"),
]


@pytest.mark.parametrize(("call", "error", "name"), CASES)
def test_bad_input_fails_clearly(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert re.search(re.escape(name), str(info.value)), str(info.value)


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100


# -- failed calls change nothing -------------------------------------------------------------


def _state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_marglik_resume_into_another_shape_leaves_the_model_unchanged(tmp_path):
    x, y = _xy(16)
    ckpt = tmp_path / "marglik.pt"
    config = MarglikConfig(epochs=1, batch_size=8, checkpoint=str(ckpt), checkpoint_every=1)
    train_marglik(_mlp(), (x, y), config)
    other = _mlp(out=4)  # the last layer has another shape
    before = _state_of(other)
    with pytest.raises(ValueError, match="does not fit"):
        train_marglik(other, (x, y.clamp(max=3)), config, resume=str(ckpt))
    assert _same(before, _state_of(other))


def test_failed_laplace_fit_leaves_model_and_data_unchanged():
    model = _mlp()
    x, y = _xy()
    bad = y + 5
    before, x0, y0 = _state_of(model), x.clone(), bad.clone()
    with pytest.raises(ValueError, match="`targets`"):
        Laplace(model, "classification", "kron").fit([(x, bad)])
    assert _same(before, _state_of(model))
    assert torch.equal(x, x0) and torch.equal(bad, y0)


def test_failed_marglik_leaves_model_unchanged():
    model = _mlp()
    before = _state_of(model)
    x, y = _xy()
    with pytest.raises(ValueError, match="`targets`"):
        train_marglik(model, (x, y + 5), MarglikConfig(epochs=1, batch_size=8))
    assert _same(before, _state_of(model))


def test_failed_layer_call_leaves_input_and_layer_unchanged():
    layer = _fc()
    before = _state_of(layer)
    x = torch.ones(2, 2, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="`x`.*torch.float32.*torch.int64"):
        layer(x)
    assert _same(before, _state_of(layer))
    assert torch.equal(x, torch.ones(2, 2, 4, 4, dtype=torch.long))


def test_simulate_rejects_one_buoyancy_value_and_keeps_the_state():
    state, source = _state()
    state[0, 2, 2] = 1.0
    copy = state.clone()
    with pytest.raises(ValueError, match="`buoyancy`.*one value per velocity component"):
        simulate(state, source, [0.2], 3)
    assert torch.equal(state, copy)


def test_next_frame_nan_in_validation_stops_before_any_step():
    model = FieldCNN()
    before = _state_of(model)
    with pytest.raises(NonFiniteLossError, match="initial val_rmse is nan"):
        fit_next_frame(model, _with_nan(_frames(), "val"), epochs=2, early_epoch=1)
    assert _same(before, _state_of(model))


def test_superresolution_nan_stops_with_the_last_good_weights():
    model = FieldCNN()
    # NaN in a training pair: no step is taken with a NaN loss, the weights stay finite
    with pytest.raises(NonFiniteLossError, match="minibatch loss is nan"):
        fit_superresolution(model, _with_nan(_frames(), "train"), epochs=2, early_epoch=1)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    # NaN in the held-out split: stopped before any step, the model untouched
    before = _state_of(model)
    with pytest.raises(NonFiniteLossError, match="initial model: the val_mae is nan"):
        fit_superresolution(model, _with_nan(_frames(), "val"), epochs=2, early_epoch=1)
    assert _same(before, _state_of(model))


def test_superresolution_nan_after_an_epoch_restores_the_previous_weights():
    class Exploding(nn.Module):
        """Finite until its weights moved; then NaN outputs (NaN in the validation MAE)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = FieldCNN()
            self.start = _state_of(self.inner)
            self.calls = 0

        def forward(self, x):
            out = self.inner(x)
            if not self.training and not _same(self.start, _state_of(self.inner)):
                return out * NAN
            return out

    model = Exploding()
    model.eval()  # records (and steps) go through the same path
    start = _state_of(model.inner)
    with pytest.raises(NonFiniteLossError, match="epoch 1: the .*_mae is nan; restored"):
        fit_superresolution(model, _frames(), epochs=2, early_epoch=1)
    assert _same(start, _state_of(model.inner))


def test_eta_gradient_of_nan_data_raises():
    model = _inv_model()
    x = torch.randn(4, 2)
    y = torch.randint(0, 2, (4,))
    eps = model.augmentation.sample_eps(4, 2, torch.Generator().manual_seed(0))
    lap = invariant_laplace(model, [(x, eps, y)], "classification", "kron")
    bad = x.clone()
    bad[0, 0] = NAN
    with pytest.raises(NonFiniteLossError, match="eta-gradient"):
        eta_gradient(lap, 1.0, model, [(bad, eps, y)], n_total=4)
    assert torch.isnan(bad[0, 0]) and torch.equal(bad[1:], x[1:])


def test_full_laplace_on_a_singular_posterior_names_prior_precision():
    x, y = _xy()
    lap = Laplace(_mlp(), "classification", "full").fit([(torch.zeros_like(x), y)])
    with pytest.raises(ValueError, match="`prior_precision`"):
        lap.log_marginal_likelihood(1e-30)


# -- results print a short summary ---------------------------------------------------------------


def test_results_print_short_summaries():
    x, y = _xy(16)
    result = train_marglik(_mlp(), (x, y), MarglikConfig(epochs=1, batch_size=8))
    assert isinstance(result, MarglikResult)
    text = repr(result)
    assert text.startswith("MarglikResult(best_state=<4 tensors>") and "tensor([" not in text
    assert len(text) < 400
    fit = FitResult({"train_rmse": [1.0, 0.5]}, 1, 1, {"best": _state_of(FieldCNN())})
    assert "tensor([" not in repr(fit) and len(repr(fit)) < 300
    frames = repr(_frames())
    assert frames.startswith("NextFrameData(train=(tensor(4, 3, 6, 6)") and len(frames) < 300
    inv = invariance.InvarianceResult({"w": torch.zeros(5, 5)}, 1.0, 1, {}, {}, [], [0.1], [0.2])
    assert repr(inv).startswith("InvarianceResult(best_state=<1 tensors>")

"""Bad inputs to the discovery API of symdisc (issue 18): each call fails with the documented
exception, and the message names the argument; a failed call changes nothing it was given."""

from __future__ import annotations

import math

import pytest
import torch

from symdisc import plot
from symdisc.actions import CentredAction, LinearAction, MLPAction
from symdisc.compose import batch_embedding, depth_embedding, width_embedding
from symdisc.dimension import dimension_step, estimate_dimension, lie_closure
from symdisc.discovery import discover
from symdisc.generators import Generators
from symdisc.known import (
    KnownAction,
    exp_map,
    flip_signs,
    gl_ansatz,
    group_action,
    null_space,
    permute_hidden,
    unit_generators,
)
from symdisc.losses import mlp, two_layer
from symdisc.metrics import (
    associativity_error,
    cos_to_tangent,
    coverage,
    energy_outside,
    evaluate,
    field_rank,
    flow,
    flow_drift,
    flow_profile,
    identity_error,
    invariance_errors,
    principal_angles,
    quantiles,
    random_invariance,
    singular_values,
    verdict,
)
from symdisc.objective import (
    Weights,
    exponential_objective,
    field_orthogonality,
    identity_residual,
    infinitesimal_objective,
    orthogonality,
    tangent_fields,
)
from symdisc.sampler import Samples, sample
from symdisc.teleport import gradient_descent, teleport
from symdisc.testing import assert_loss_invariant
from symdisc.trainer import Discovery, TrainConfig, field_health, train

torch.set_num_threads(1)
F64 = torch.float64
NAN, INF = math.nan, math.inf

LOSS = two_layer("identity", h=2)  # P = 4, X (1, 1), Y (1, 1)
OTHER = two_layer("relu", h=3)  # P = 6
S = sample(LOSS, 8, dtype=F64)
S_OTHER = sample(OTHER, 8, dtype=F64)
S32 = sample(LOSS, 8)
ACTION = MLPAction(LOSS, 2, (8,)).double()
GL = KnownAction(LOSS, "gl")
H = torch.randn(1, 2, 2, dtype=F64)
FIELDS = torch.randn(8, 1, 4, dtype=F64)
GRAD = torch.randn(8, 4, dtype=F64)
BASIS = torch.randn(8, 2, 4, dtype=F64)
THETA, X1, Y1 = S.theta[0], S.X[0], S.Y[0]


def _disc() -> Discovery:
    return Discovery(MLPAction(LOSS, 2, (8,)), Generators(1, 2))


SMALL = TrainConfig(steps=2, batch_size=4, check_fields=False)

# (id, call, exception, the argument the message must name)
CASES = [
    # sample
    ("sample-loss-str", lambda: sample("two_layer", 4), TypeError, "loss"),
    ("sample-n-0", lambda: sample(LOSS, 0), ValueError, "n"),
    ("sample-n-float", lambda: sample(LOSS, 2.5), TypeError, "n"),
    ("sample-theta-inf", lambda: sample(LOSS, 4, theta_scale=INF), ValueError, "theta_scale"),
    ("sample-theta-nan", lambda: sample(LOSS, 4, theta_scale=NAN), ValueError, "theta_scale"),
    ("sample-theta-0", lambda: sample(LOSS, 4, theta_scale=0.0), ValueError, "theta_scale"),
    ("sample-x-neg", lambda: sample(LOSS, 4, x_scale=-1.0), ValueError, "x_scale"),
    ("sample-y-str", lambda: sample(LOSS, 4, y_scale="1"), TypeError, "y_scale"),
    ("sample-huge-scale", lambda: sample(LOSS, 4, theta_scale=1e30), ValueError, "theta_scale"),
    ("sample-seed-neg", lambda: sample(LOSS, 4, seed=-1), ValueError, "seed"),
    ("sample-seed-float", lambda: sample(LOSS, 4, seed=0.5), TypeError, "seed"),
    ("sample-dtype-int", lambda: sample(LOSS, 4, dtype=torch.int64), TypeError, "dtype"),
    ("sample-dtype-str", lambda: sample(LOSS, 4, dtype="float32"), TypeError, "dtype"),
    ("sample-device-int", lambda: sample(LOSS, 4, device=0.5), TypeError, "device"),
    ("samples-batch-list", lambda: S.batch([0, 1]), TypeError, "index"),
    # ParamLoss.flat
    ("flat-theta-shape", lambda: LOSS.flat(S.theta[0, :3], X1, Y1), ValueError, "theta"),
    ("flat-theta-batch", lambda: LOSS.flat(S.theta, X1, Y1), ValueError, "theta"),
    ("flat-x-shape", lambda: LOSS.flat(THETA, S.X, Y1), ValueError, "X"),
    ("flat-y-shape", lambda: LOSS.flat(THETA, X1, S.Y), ValueError, "Y"),
    ("flat-theta-list", lambda: LOSS.flat([0.0] * 4, X1, Y1), TypeError, "theta"),
    ("flat-other-samples", lambda: LOSS.flat(S_OTHER.theta[0], X1, Y1), ValueError, "theta"),
    # actions and generators
    ("mlp-action-loss", lambda: MLPAction("loss", 2), TypeError, "loss"),
    ("mlp-action-d-0", lambda: MLPAction(LOSS, 0), ValueError, "d"),
    ("mlp-action-d-float", lambda: MLPAction(LOSS, 2.0), TypeError, "d"),
    ("mlp-action-hidden-empty", lambda: MLPAction(LOSS, 2, ()), ValueError, "hidden"),
    ("mlp-action-hidden-0", lambda: MLPAction(LOSS, 2, (8, 0)), ValueError, r"hidden\[1\]"),
    ("mlp-action-dd-int", lambda: MLPAction(LOSS, 2, data_dependent=1), TypeError, "data_"),
    ("linear-action-d-0", lambda: LinearAction(LOSS, 0), ValueError, "d"),
    ("linear-action-d-3", lambda: LinearAction(LOSS, 3), ValueError, "block"),
    ("linear-action-block-out", lambda: LinearAction(LOSS, 2, [0, 9]), ValueError, "block"),
    ("linear-action-loss", lambda: LinearAction(None, 2), TypeError, "loss"),
    ("centred-action", lambda: CentredAction("action"), TypeError, "action"),
    ("action-g-shape", lambda: ACTION(torch.eye(3, dtype=F64), THETA, X1), ValueError, "g"),
    (
        "action-theta-shape",
        lambda: ACTION(torch.eye(2, dtype=F64), S.theta, X1),
        ValueError,
        "theta",
    ),
    ("action-x-shape", lambda: ACTION(torch.eye(2, dtype=F64), THETA, S.X), ValueError, "X"),
    ("linear-g-shape", lambda: LinearAction(LOSS, 2)(torch.eye(4), THETA, X1), ValueError, "g"),
    (
        "tangents-h-shape",
        lambda: ACTION.tangents(torch.zeros(1, 3, 3, dtype=F64), S.theta, S.X),
        ValueError,
        "h",
    ),
    (
        "tangents-h-int",
        lambda: ACTION.tangents(torch.zeros(1, 2, 2, dtype=torch.long), S.theta, S.X),
        TypeError,
        "h",
    ),
    ("tangents-theta-other", lambda: ACTION.tangents(H, S_OTHER.theta, S.X), ValueError, "theta"),
    ("tangents-x-rows", lambda: ACTION.tangents(H, S.theta, S.X[:3]), ValueError, "X"),
    ("generators-k-0", lambda: Generators(0, 2), ValueError, "k"),
    ("generators-d-neg", lambda: Generators(1, -2), ValueError, "d"),
    ("generators-k-str", lambda: Generators("1", 2), TypeError, "k"),
    ("generators-scale-nan", lambda: Generators(1, 2, init_scale=NAN), ValueError, "init_scale"),
    ("generators-scale-0", lambda: Generators(1, 2, init_scale=0), ValueError, "init_scale"),
    ("generators-seed", lambda: Generators(1, 2, seed=-3), ValueError, "seed"),
    ("generators-exp-t", lambda: Generators(2, 2).exp(torch.zeros(3)), ValueError, "t"),
    ("generators-exp-list", lambda: Generators(2, 2).exp([0.0, 1.0]), TypeError, "t"),
    # objective
    ("weights-neg", lambda: Weights(invariance=-1.0), ValueError, "invariance"),
    ("weights-nan", lambda: Weights(orth=NAN), ValueError, "orth"),
    ("weights-beta-0", lambda: Weights(beta=0.0), ValueError, "beta"),
    ("weights-form", lambda: Weights(form="paper2"), ValueError, "form"),
    ("weights-str", lambda: Weights(sparse="0.1"), TypeError, "sparse"),
    ("tangent-fields-action", lambda: tangent_fields("a", H, S.theta, S.X), TypeError, "action"),
    (
        "identity-residual-theta",
        lambda: identity_residual(ACTION, S.theta[0], S.X),
        ValueError,
        "theta",
    ),
    ("identity-residual-x", lambda: identity_residual(ACTION, S.theta, S.X[:2]), ValueError, "X"),
    ("orthogonality-h", lambda: orthogonality(torch.zeros(0, 2, 2)), ValueError, "h"),
    ("orthogonality-list", lambda: orthogonality([[1.0]]), TypeError, "h"),
    ("field-orth-v", lambda: field_orthogonality(torch.zeros(4, 2)), ValueError, "v"),
    ("field-orth-eps", lambda: field_orthogonality(FIELDS, eps=0.0), ValueError, "eps"),
    (
        "inf-objective-batch",
        lambda: infinitesimal_objective(ACTION, H, (S.theta,), Weights()),
        TypeError,
        "batch",
    ),
    (
        "inf-objective-weights",
        lambda: infinitesimal_objective(ACTION, H, S, {"beta": 1.0}),
        TypeError,
        "weights",
    ),
    (
        "inf-objective-action",
        lambda: infinitesimal_objective(None, H, S, Weights()),
        TypeError,
        "action",
    ),
    (
        "exp-objective-other",
        lambda: exponential_objective(ACTION, H, S_OTHER, OTHER, Weights()),
        ValueError,
        "theta",
    ),
    (
        "exp-objective-samples",
        lambda: exponential_objective(ACTION, H, S_OTHER, LOSS, Weights()),
        ValueError,
        "batch",
    ),
    (
        "exp-objective-t-scale",
        lambda: exponential_objective(ACTION, H, S, LOSS, Weights(), t_scale=-1.0),
        ValueError,
        "t_scale",
    ),
    (
        "exp-objective-h",
        lambda: exponential_objective(ACTION, H[0], S, LOSS, Weights()),
        ValueError,
        "h",
    ),
    (
        "exp-objective-gen",
        lambda: exponential_objective(ACTION, H, S, LOSS, Weights(), generator=0),
        TypeError,
        "generator",
    ),
    # TrainConfig: every field
    ("config-lr-0", lambda: TrainConfig(lr=0), ValueError, "lr"),
    ("config-lr-neg", lambda: TrainConfig(lr=-1e-3), ValueError, "lr"),
    ("config-lr-nan", lambda: TrainConfig(lr=NAN), ValueError, "lr"),
    ("config-lr-str", lambda: TrainConfig(lr="1e-3"), TypeError, "lr"),
    ("config-decay-neg", lambda: TrainConfig(decay=-0.5), ValueError, "decay"),
    ("config-decay-0", lambda: TrainConfig(decay=0.0), ValueError, "decay"),
    ("config-decay-2", lambda: TrainConfig(decay=2.0), ValueError, "decay"),
    ("config-decay-every-0", lambda: TrainConfig(decay_every=0), ValueError, "decay_every"),
    ("config-steps-0", lambda: TrainConfig(steps=0), ValueError, "steps"),
    ("config-steps-float", lambda: TrainConfig(steps=10.0), TypeError, "steps"),
    ("config-batch-0", lambda: TrainConfig(batch_size=0), ValueError, "batch_size"),
    ("config-objective", lambda: TrainConfig(objective="exp"), ValueError, "objective"),
    ("config-weights-dict", lambda: TrainConfig(weights={"beta": 1.0}), TypeError, "weights"),
    ("config-t-scale", lambda: TrainConfig(t_scale=INF), ValueError, "t_scale"),
    (
        "config-ckpt-every-neg",
        lambda: TrainConfig(checkpoint_every=-1),
        ValueError,
        "checkpoint_every",
    ),
    ("config-ckpt-missing", lambda: TrainConfig(checkpoint_every=5), ValueError, "checkpoint"),
    ("config-ckpt-int", lambda: TrainConfig(checkpoint=3), TypeError, "checkpoint"),
    ("config-seed-neg", lambda: TrainConfig(seed=-1), ValueError, "seed"),
    ("config-progress-int", lambda: TrainConfig(progress=1), TypeError, "progress"),
    (
        "config-compile-exp",
        lambda: TrainConfig(compile=True, objective="exponential"),
        ValueError,
        "compile",
    ),
    ("config-check-fields", lambda: TrainConfig(check_fields="yes"), TypeError, "check_fields"),
    # Discovery, train, discover
    (
        "discovery-d-mismatch",
        lambda: Discovery(MLPAction(LOSS, 2, (8,)), Generators(1, 3)),
        ValueError,
        "generators",
    ),
    ("discovery-action", lambda: Discovery("action", Generators(1, 2)), TypeError, "action"),
    ("discovery-generators", lambda: Discovery(ACTION, H), TypeError, "generators"),
    (
        "train-config-dict",
        lambda: train(_disc(), LOSS, S.to("cpu"), {"lr": 1e-3}),
        TypeError,
        "config",
    ),
    ("train-config-none", lambda: train(_disc(), LOSS, S, None), TypeError, "config"),
    ("train-discovery", lambda: train(ACTION, LOSS, S, SMALL), TypeError, "discovery"),
    ("train-loss", lambda: train(_disc(), "loss", S, SMALL), TypeError, "loss"),
    ("train-samples-other", lambda: train(_disc(), LOSS, S_OTHER, SMALL), ValueError, "samples"),
    (
        "train-samples-tuple",
        lambda: train(_disc(), LOSS, (S.theta, S.X), SMALL),
        TypeError,
        "samples",
    ),
    (
        "train-held-out-other",
        lambda: train(_disc(), LOSS, S, SMALL, held_out=S_OTHER),
        ValueError,
        "held_out",
    ),
    (
        "train-action-other-loss",
        lambda: train(_disc(), OTHER, S_OTHER, SMALL),
        ValueError,
        "discovery",
    ),
    (
        "train-resume-missing",
        lambda: train(_disc(), LOSS, S, SMALL, resume="/nonexistent/ck.pt"),
        FileNotFoundError,
        "resume",
    ),
    ("train-resume-int", lambda: train(_disc(), LOSS, S, SMALL, resume=3), TypeError, "resume"),
    ("discover-config-dict", lambda: discover(LOSS, d=2, config={"lr": 1e-3}), TypeError, "config"),
    (
        "discover-scales-typo",
        lambda: discover(LOSS, d=2, scales={"theta": 1.0}),
        ValueError,
        "scales",
    ),
    ("discover-scales-list", lambda: discover(LOSS, d=2, scales=[1.0]), TypeError, "scales"),
    ("discover-n-train-0", lambda: discover(LOSS, d=2, n_train=0), ValueError, "n_train"),
    ("discover-n-test-0", lambda: discover(LOSS, d=2, n_test=0), ValueError, "n_test"),
    ("discover-loss", lambda: discover("loss", d=2), TypeError, "loss"),
    ("discover-seed", lambda: discover(LOSS, d=2, seed=-1), ValueError, "seed"),
    ("discover-d-0", lambda: discover(LOSS, d=0, n_train=4, n_test=4), ValueError, "d"),
    ("discover-k-0", lambda: discover(LOSS, d=2, k=0, n_train=4, n_test=4), ValueError, "k"),
    # metrics
    ("flow-drift-tau-0", lambda: flow_drift(LOSS, ACTION, H, S, tau=0), ValueError, "tau"),
    ("flow-drift-tau-neg", lambda: flow_drift(LOSS, ACTION, H, S, tau=-0.5), ValueError, "tau"),
    ("flow-drift-tau-nan", lambda: flow_drift(LOSS, ACTION, H, S, tau=NAN), ValueError, "tau"),
    ("flow-drift-steps-0", lambda: flow_drift(LOSS, ACTION, H, S, steps=0), ValueError, "steps"),
    ("flow-drift-other", lambda: flow_drift(LOSS, ACTION, H, S_OTHER), ValueError, "samples"),
    ("flow-drift-h", lambda: flow_drift(LOSS, ACTION, H[0], S), ValueError, "h"),
    ("flow-drift-h-nan", lambda: flow_drift(LOSS, ACTION, H * NAN, S), ValueError, "h"),
    ("flow-profile-seed", lambda: flow_profile(LOSS, ACTION, H[0], S, seed=-1), ValueError, "seed"),
    ("flow-profile-loss", lambda: flow_profile(None, ACTION, H[0], S), TypeError, "loss"),
    ("flow-h-j", lambda: flow(ACTION, H, S.theta, S.X, tau=0.5), ValueError, "h_j"),
    ("flow-steps", lambda: flow(ACTION, H[0], S.theta, S.X, tau=0.5, steps=0), ValueError, "steps"),
    ("invariance-errors-grad", lambda: invariance_errors(FIELDS, GRAD[:, :3]), ValueError, "grad"),
    ("invariance-errors-fields", lambda: invariance_errors(FIELDS[0], GRAD), ValueError, "fields"),
    ("invariance-errors-int", lambda: invariance_errors(FIELDS.long(), GRAD), TypeError, "fields"),
    ("quantiles-empty", lambda: quantiles(torch.zeros(0)), ValueError, "values"),
    ("quantiles-nan", lambda: quantiles(torch.tensor([1.0, NAN])), ValueError, "values"),
    ("quantiles-list", lambda: quantiles([1.0, 2.0]), TypeError, "values"),
    ("cos-to-tangent", lambda: cos_to_tangent(FIELDS, GRAD[:4]), ValueError, "tangent"),
    ("energy-outside", lambda: energy_outside(FIELDS, GRAD), ValueError, "basis"),
    ("principal-angles", lambda: principal_angles(FIELDS, BASIS[:, :, :2]), ValueError, "basis"),
    ("singular-values", lambda: singular_values(GRAD), ValueError, "fields"),
    ("field-rank-rtol", lambda: field_rank(FIELDS, rtol=0.0), ValueError, "rtol"),
    ("field-rank-empty", lambda: field_rank(torch.zeros(0, 1, 4)), ValueError, "fields"),
    ("coverage-basis", lambda: coverage(FIELDS, BASIS[:3]), ValueError, "basis"),
    ("identity-error-samples", lambda: identity_error(ACTION, S.theta), TypeError, "samples"),
    ("identity-error-action", lambda: identity_error(LOSS, S), TypeError, "action"),
    (
        "assoc-t-scale",
        lambda: associativity_error(ACTION, H, S, t_scale=0.0),
        ValueError,
        "t_scale",
    ),
    (
        "assoc-h",
        lambda: associativity_error(ACTION, torch.zeros(1, 3, 3, dtype=F64), S),
        ValueError,
        "h",
    ),
    ("assoc-seed", lambda: associativity_error(ACTION, H, S, seed=-1), ValueError, "seed"),
    (
        "evaluate-basis",
        lambda: evaluate(LOSS, ACTION, H, S, known_basis=BASIS[:2]),
        ValueError,
        "known_basis",
    ),
    ("evaluate-other", lambda: evaluate(LOSS, ACTION, H, S_OTHER), ValueError, "samples"),
    ("random-invariance-0", lambda: random_invariance(0), ValueError, "P"),
    ("verdict-scores", lambda: verdict([0.1], 4), TypeError, "scores"),
    ("verdict-beta", lambda: verdict({}, 4, beta=0.0), ValueError, "beta"),
    ("field-health-beta", lambda: field_health(_disc(), S32, NAN), ValueError, "beta"),
    (
        "field-health-max",
        lambda: field_health(_disc(), S32, 1.0, max_samples=0),
        ValueError,
        "max_samples",
    ),
    ("field-health-samples", lambda: field_health(_disc(), None, 1.0), TypeError, "samples"),
    ("field-health-dtype", lambda: field_health(_disc(), S, 1.0), TypeError, "theta"),
    (
        "tangents-dtype",
        lambda: MLPAction(LOSS, 2, (8,)).tangents(H, S.theta, S.X),
        TypeError,
        "theta",
    ),
    # teleport
    ("teleport-theta", lambda: teleport(LOSS, GL, H, S.theta, X1, Y1), ValueError, "theta"),
    ("teleport-x", lambda: teleport(LOSS, GL, H, THETA, S.X, Y1), ValueError, "X"),
    ("teleport-y", lambda: teleport(LOSS, GL, H, THETA, X1, S.Y), ValueError, "Y"),
    (
        "teleport-generators",
        lambda: teleport(LOSS, GL, H[0], THETA, X1, Y1),
        ValueError,
        "generators",
    ),
    ("teleport-theta-nan", lambda: teleport(LOSS, GL, H, THETA * NAN, X1, Y1), ValueError, "theta"),
    (
        "teleport-step-size",
        lambda: teleport(LOSS, GL, H, THETA, X1, Y1, step_size=0),
        ValueError,
        "step_size",
    ),
    (
        "teleport-max-gain",
        lambda: teleport(LOSS, GL, H, THETA, X1, Y1, max_gain=0.5),
        ValueError,
        "max_gain",
    ),
    ("teleport-action", lambda: teleport(LOSS, "gl", H, THETA, X1, Y1), TypeError, "action"),
    ("gd-lr", lambda: gradient_descent(LOSS, THETA, X1, Y1, lr=-1.0, steps=3), ValueError, "lr"),
    (
        "gd-theta",
        lambda: gradient_descent(LOSS, S.theta, X1, Y1, lr=0.1, steps=3),
        ValueError,
        "theta",
    ),
    (
        "gd-x-list",
        lambda: gradient_descent(LOSS, THETA, [1.0], Y1, lr=0.1, steps=3),
        TypeError,
        "X",
    ),
    # testing
    (
        "invariant-singular-g",
        lambda: assert_loss_invariant(LOSS, GL, torch.zeros(2, 2, dtype=F64), S),
        ValueError,
        "g",
    ),
    (
        "invariant-singular-per-sample",
        lambda: assert_loss_invariant(
            LOSS,
            GL,
            torch.eye(2, dtype=F64).repeat(8, 1, 1) * torch.arange(8.0)[:, None, None],
            S,
            per_sample=True,
        ),
        ValueError,
        "g",
    ),
    (
        "invariant-g-shape",
        lambda: assert_loss_invariant(LOSS, GL, torch.eye(3, dtype=F64), S),
        ValueError,
        "g",
    ),
    (
        "invariant-g-nan",
        lambda: assert_loss_invariant(LOSS, GL, torch.full((2, 2), NAN), S),
        ValueError,
        "g",
    ),
    (
        "invariant-g-int",
        lambda: assert_loss_invariant(LOSS, GL, torch.eye(2).long(), S),
        TypeError,
        "g",
    ),
    (
        "invariant-other",
        lambda: assert_loss_invariant(LOSS, GL, torch.eye(2), S_OTHER),
        ValueError,
        "samples",
    ),
    (
        "invariant-action",
        lambda: assert_loss_invariant(LOSS, 3, torch.eye(2), S),
        TypeError,
        "action",
    ),
    (
        "invariant-rtol",
        lambda: assert_loss_invariant(LOSS, GL, torch.eye(2, dtype=F64), S, rtol=-1.0),
        ValueError,
        "rtol",
    ),
    # dimension
    ("lie-closure-shape", lambda: lie_closure(torch.zeros(2, 2, 3)), ValueError, "h"),
    ("lie-closure-nan", lambda: lie_closure(torch.full((1, 2, 2), NAN)), ValueError, "h"),
    ("lie-closure-rtol", lambda: lie_closure(H, rtol=-1.0), ValueError, "rtol"),
    ("dim-step-grad", lambda: dimension_step(FIELDS, GRAD[:3]), ValueError, "grad"),
    ("dim-step-fields-nan", lambda: dimension_step(FIELDS * NAN, GRAD), ValueError, "fields"),
    (
        "dim-step-drift-len",
        lambda: dimension_step(FIELDS, GRAD, drift=[0.1, 0.2]),
        ValueError,
        "drift",
    ),
    (
        "dim-step-drift-nan",
        lambda: dimension_step(FIELDS, GRAD, drift=[NAN]),
        ValueError,
        r"drift\[0\]",
    ),
    (
        "dim-step-threshold",
        lambda: dimension_step(FIELDS, GRAD, invariance_threshold=0),
        ValueError,
        "invariance_threshold",
    ),
    ("estimate-k-max", lambda: estimate_dimension(LOSS, d=2, k_max=0), ValueError, "k_max"),
    ("estimate-no-d", lambda: estimate_dimension(LOSS), ValueError, "d"),
    ("estimate-fit", lambda: estimate_dimension(fit=3), TypeError, "fit"),
    # known, compose, plot
    ("known-action-symmetry", lambda: KnownAction(LOSS, "softmax_shift"), ValueError, "symmetry"),
    ("known-action-singular", lambda: GL(torch.zeros(2, 2, dtype=F64), THETA, X1), ValueError, "g"),
    ("known-action-g-shape", lambda: GL(torch.eye(3, dtype=F64), THETA, X1), ValueError, "g"),
    ("known-action-loss", lambda: KnownAction("loss", "gl"), TypeError, "loss"),
    ("group-action-symmetry", lambda: group_action(LOSS, "glx"), ValueError, "symmetry"),
    ("exp-map-A", lambda: exp_map("gl", [[0.0]]), TypeError, "A"),
    ("permute-theta", lambda: permute_hidden(LOSS, S.theta, [1, 0]), ValueError, "theta"),
    ("permute-perm", lambda: permute_hidden(LOSS, THETA, [0, 0]), ValueError, "perm"),
    ("flip-signs", lambda: flip_signs(LOSS, THETA, [1.0, 2.0]), ValueError, "signs"),
    ("null-space-other", lambda: null_space(LOSS, S_OTHER, gl_ansatz(LOSS)), ValueError, "samples"),
    ("unit-generators-d", lambda: unit_generators(LOSS, "gl", 0), ValueError, "d"),
    ("width-embedding-small", lambda: width_embedding(ACTION, LOSS, [0]), TypeError, "small"),
    (
        "depth-embedding-layer",
        lambda: depth_embedding(LOSS, mlp("relu", [1, 2, 2, 1]), 7),
        ValueError,
        "layer",
    ),
    ("batch-embedding-big", lambda: batch_embedding(LOSS, "big"), TypeError, "big"),
    ("plot-generators-shape", lambda: plot.generators(torch.zeros(2, 2)), ValueError, "h"),
]


@pytest.mark.parametrize(
    ("call", "error", "name"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=f"`{name}"):
        call()


def test_enough_cases():
    assert len(CASES) >= 100
    assert len({c[0] for c in CASES}) == len(CASES)


# -- a failed call changes nothing ----------------------------------------------------------


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    now = module.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


def _samples_copy(s: Samples) -> Samples:
    return Samples(*(t.clone() for t in (s.theta, s.X, s.Y, s.grad, s.loss)))


def _same_samples(a: Samples, b: Samples) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip((a.theta, a.X, a.Y, a.grad, a.loss), (b.theta, b.X, b.Y, b.grad, b.loss))
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[str, TrainConfig]:
    path = str(tmp_path_factory.mktemp("ckpt") / "discovery.pt")
    config = TrainConfig(
        steps=3, batch_size=4, checkpoint=path, checkpoint_every=1, check_fields=False
    )
    torch.manual_seed(0)
    train(_disc(), LOSS, S32, config)
    return path, config


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("wider-action", lambda: Discovery(MLPAction(LOSS, 2, (16,)), Generators(1, 2))),
        ("deeper-action", lambda: Discovery(MLPAction(LOSS, 2, (8, 8)), Generators(1, 2))),
        ("more-generators", lambda: Discovery(MLPAction(LOSS, 2, (8,)), Generators(2, 2))),
        (
            "data-independent",
            lambda: Discovery(MLPAction(LOSS, 2, (8,), data_dependent=False), Generators(1, 2)),
        ),
    ],
)
def test_resume_into_another_shape_changes_nothing(checkpoint, name, build):
    path, config = checkpoint
    torch.manual_seed(1)
    discovery = build()
    before = _state(discovery)
    samples = _samples_copy(S32)
    with pytest.raises(ValueError, match="does not fit"):
        train(discovery, LOSS, samples, config, resume=path)
    assert _same_state(discovery, before)
    assert _same_samples(samples, S32)


def test_resume_with_other_settings_changes_nothing(checkpoint):
    path, config = checkpoint
    discovery = _disc()
    before = _state(discovery)
    other = TrainConfig(**{**config.__dict__, "lr": 0.5})
    with pytest.raises(ValueError, match="lr"):
        train(discovery, LOSS, S32, other, resume=path)
    assert _same_state(discovery, before)


def test_resume_from_a_truncated_checkpoint_changes_nothing(checkpoint, tmp_path):
    path, config = checkpoint
    broken = tmp_path / "broken.pt"
    with open(path, "rb") as f:
        broken.write_bytes(f.read()[:100])
    discovery = _disc()
    before = _state(discovery)
    with pytest.raises(ValueError, match="broken.pt"):
        train(discovery, LOSS, S32, config, resume=broken)
    assert _same_state(discovery, before)


@pytest.mark.parametrize(
    "call",
    [
        lambda d, s: train(d, OTHER, S_OTHER, SMALL),
        lambda d, s: train(d, LOSS, s, {"lr": 1e-3}),
        lambda d, s: train(d, LOSS, s, SMALL, held_out=S_OTHER),
        lambda d, s: train(d, LOSS, s, SMALL, resume="/nonexistent/ck.pt"),
        lambda d, s: field_health(d, s, NAN),
        lambda d, s: flow_drift(LOSS, d.action, d.generators(), s, tau=0),
    ],
    ids=["other-loss", "config-dict", "held-out", "resume-missing", "field-health", "flow-drift"],
)
def test_failed_training_calls_leave_model_and_samples_unchanged(call):
    discovery = _disc()
    before = _state(discovery)
    samples = _samples_copy(S32)
    with pytest.raises((TypeError, ValueError, FileNotFoundError)):
        call(discovery, samples)
    assert _same_state(discovery, before)
    assert _same_samples(samples, S32)
    assert all(p.grad is None for p in discovery.parameters())


def test_failed_teleport_and_invariance_checks_leave_inputs_unchanged():
    theta, X, Y, h = THETA.clone(), X1.clone(), Y1.clone(), H.clone()
    with pytest.raises(ValueError, match="`theta`"):
        teleport(LOSS, GL, h, theta * NAN, X, Y)
    with pytest.raises(ValueError, match="`X`"):
        teleport(LOSS, GL, h, theta, X[None], Y)
    assert torch.equal(theta, THETA) and torch.equal(X, X1) and torch.equal(h, H)
    samples, g = _samples_copy(S), torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="`g` must be invertible"):
        assert_loss_invariant(LOSS, GL, g, samples)
    assert _same_samples(samples, S) and not g.any()
    action = MLPAction(LOSS, 2, (8,)).double()
    before = _state(action)
    with pytest.raises(ValueError, match="`h`"):
        flow_drift(LOSS, action, H * NAN, samples)
    assert _same_state(action, before)


def test_flow_drift_of_a_constant_loss_is_an_error_not_a_perfect_symmetry():
    from symdisc.losses import ParamLoss

    const = ParamLoss("const", lambda p, X, Y: (p["w"] * 0).sum() + 1.0, {"w": (2,)}, (1,), (1,))
    s = sample(const, 8, dtype=F64)
    action = LinearAction(const, 2).double()
    with pytest.raises(ValueError, match="`tau`"):
        flow_drift(const, action, torch.eye(2, dtype=F64)[None], s)


def test_results_print_a_short_summary():
    text = repr(S)
    assert "theta=(8, 4)" in text and "tensor(" not in text
    from symdisc.teleport import TeleportResult

    result = TeleportResult(THETA, 1.0, 1.0, 0.0, 1.0, 2.0, 2.0, 3, 1e-4)
    assert "tensor(" not in repr(result) and "steps_taken=3" in repr(result)
    assert "tensor(" not in repr(lie_closure(H))
    ns = null_space(LOSS, S, gl_ansatz(LOSS))
    assert "tensor(" not in repr(ns) and "dim=" in repr(ns)
    run = discover(
        LOSS,
        d=2,
        hidden=(8,),
        n_train=16,
        n_test=8,
        data_dependent=False,
        config=TrainConfig(steps=2, batch_size=4, check_fields=False),
    )
    assert "tensor(" not in repr(run) and "steps=2" in repr(run)

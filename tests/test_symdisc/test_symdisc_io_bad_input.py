"""Issue 18, second part for ``symdisc``: bad inputs to the figures (:mod:`symdisc.plot`), the
composition of symmetries (:mod:`symdisc.compose`) and the known symmetries
(:mod:`symdisc.known`) fail at the boundary with the documented exception, and the message names
the argument; ``symdisc.discover`` and ``symdisc.train`` are the functions of ``__all__``; failed
calls change nothing they were given.
"""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys

import matplotlib.figure
import pytest
import torch

import symdisc
from symdisc import plot
from symdisc.compose import (
    Embedding,
    InducedAction,
    batch_embedding,
    depth_embedding,
    width_embedding,
)
from symdisc.curvature import slq_density
from symdisc.known import (
    KnownAction,
    algebra_shape,
    exp_map,
    flip_signs,
    gl_ansatz,
    group_action,
    infinitesimal_action,
    null_space,
    permute_hidden,
    tangent_basis,
    unit_generators,
)
from symdisc.losses import mlp, two_layer
from symdisc.sampler import sample

torch.set_num_threads(1)
F64 = torch.float64
NAN, INF = math.nan, math.inf
FIG = matplotlib.figure.Figure

SMALL = two_layer("identity", h=2)  # P = 4
BIG = two_layer("identity", h=4)  # P = 8
WIDE_K = two_layer("identity", h=2, k=4)
NARROW_K = two_layer("identity", h=2, k=2)
DEEP = mlp("relu", [1, 2, 2, 1])
S = sample(SMALL, 4, dtype=F64)
S_BIG = sample(BIG, 4, dtype=F64)
THETA, X1 = S.theta[0], S.X[0]
EMB = width_embedding(SMALL, BIG, [0, 1])
GEN = torch.randn(2, 3, 3, dtype=F64)
PROFILE = {"t": torch.linspace(0, 1, 3), "flow": torch.zeros(3, 2), "random": torch.zeros(3, 2)}
DENSITY = slq_density(torch.diag(torch.arange(6.0, dtype=F64)), n_steps=4, n_probes=1)
DD_GL = two_layer("tanh", h=2)  # data_dependent_gl: invertible activation, no biases, k <= n
S_DD = sample(DD_GL, 4, dtype=F64)
DEEP_ID = mlp("identity", [1, 2, 2, 1])  # deep "gl": g (8,), the blocks g_1, g_2 (2, 2)
S_DEEP = sample(DEEP_ID, 4, dtype=F64)


def _singular(n: int = 4, d: int = 2) -> torch.Tensor:
    """n group elements (n, d, d): the identity, but element 1 is the zero matrix."""
    g = torch.eye(d, dtype=F64).repeat(n, 1, 1)
    g[1] = 0.0
    return g


def _deep_singular() -> torch.Tensor:
    """4 deep "gl" elements (4, 8): identity blocks, but block g_2 of element 1 is zero."""
    g = torch.eye(2, dtype=F64).reshape(-1).repeat(4, 2)
    g[1, 4:] = 0.0
    return g


def _ax():
    return FIG().add_subplot()


# (id, call(tmp_path), exception, the argument the message must name)
CASES = [
    # symdisc.plot.save
    ("save-fig-str", lambda d: plot.save("fig", d / "f.png"), TypeError, "fig"),
    ("save-path-int", lambda d: plot.save(FIG(), 3), TypeError, "path"),
    ("save-dir-missing", lambda d: plot.save(FIG(), d / "a" / "f.png"), FileNotFoundError, "path"),
    ("save-path-dir", lambda d: plot.save(FIG(), d), ValueError, "path"),
    ("save-suffix", lambda d: plot.save(FIG(), d / "f.docx"), ValueError, "path"),
    # canonical, generators
    ("canonical-list", lambda d: plot.canonical([[[1.0]]]), TypeError, "h"),
    ("canonical-2d", lambda d: plot.canonical(torch.eye(2)), ValueError, "h"),
    ("canonical-not-square", lambda d: plot.canonical(torch.zeros(1, 2, 3)), ValueError, "h"),
    ("canonical-empty", lambda d: plot.canonical(torch.zeros(0, 2, 2)), ValueError, "h"),
    (
        "canonical-int",
        lambda d: plot.canonical(torch.zeros(1, 2, 2, dtype=torch.long)),
        TypeError,
        "h",
    ),
    ("canonical-nan", lambda d: plot.canonical(torch.full((1, 2, 2), NAN)), ValueError, "h"),
    ("generators-list", lambda d: plot.generators([[[1.0]]]), TypeError, "h"),
    ("generators-inf", lambda d: plot.generators(GEN * INF), ValueError, "h"),
    (
        "generators-known-d",
        lambda d: plot.generators(GEN, known=torch.zeros(1, 2, 2)),
        ValueError,
        "known",
    ),
    (
        "generators-known-2d",
        lambda d: plot.generators(GEN, known=torch.eye(3)),
        ValueError,
        "known",
    ),
    ("generators-known-list", lambda d: plot.generators(GEN, known=[1.0]), TypeError, "known"),
    # history, flow_losses, invariance_distributions
    ("history-empty", lambda d: plot.history([]), ValueError, "records"),
    ("history-no-step", lambda d: plot.history([{"loss": 1.0}]), ValueError, "records[0]"),
    ("history-dict", lambda d: plot.history({"step": 0}), TypeError, "records"),
    ("history-str", lambda d: plot.history("history.json"), TypeError, "records"),
    ("history-row-list", lambda d: plot.history([{"step": 0}, [1.0]]), ValueError, "records[1]"),
    ("flow-losses-list", lambda d: plot.flow_losses([PROFILE]), TypeError, "profile"),
    ("flow-losses-key", lambda d: plot.flow_losses({"t": PROFILE["t"]}), ValueError, "profile"),
    (
        "flow-losses-shape",
        lambda d: plot.flow_losses({**PROFILE, "flow": torch.zeros(4, 2)}),
        ValueError,
        "profile['flow']",
    ),
    (
        "flow-losses-1d",
        lambda d: plot.flow_losses({**PROFILE, "random": torch.zeros(3)}),
        ValueError,
        "profile['random']",
    ),
    ("invariance-empty", lambda d: plot.invariance_distributions({}), ValueError, "errors"),
    ("invariance-list", lambda d: plot.invariance_distributions([1.0]), TypeError, "errors"),
    (
        "invariance-value-list",
        lambda d: plot.invariance_distributions({"a": [1.0]}),
        TypeError,
        "errors['a']",
    ),
    (
        "invariance-value-empty",
        lambda d: plot.invariance_distributions({"a": torch.zeros(0)}),
        ValueError,
        "errors['a']",
    ),
    # plot_spectral_density
    ("spectral-density-list", lambda d: plot.plot_spectral_density([1.0]), TypeError, "density"),
    ("spectral-ax", lambda d: plot.plot_spectral_density(DENSITY, ax="ax"), TypeError, "ax"),
    ("spectral-bins-0", lambda d: plot.plot_spectral_density(DENSITY, bins=0), ValueError, "bins"),
    ("spectral-log-int", lambda d: plot.plot_spectral_density(DENSITY, log=1), TypeError, "log"),
    (
        "spectral-reference-2d",
        lambda d: plot.plot_spectral_density(DENSITY, torch.zeros(2, 2)),
        ValueError,
        "reference_eigenvalues",
    ),
    (
        "spectral-reference-list",
        lambda d: plot.plot_spectral_density(DENSITY, [1.0, 2.0]),
        ValueError,
        "reference_eigenvalues",
    ),
    (
        "spectral-reference-empty",
        lambda d: plot.plot_spectral_density(DENSITY, torch.zeros(0)),
        ValueError,
        "reference_eigenvalues",
    ),
    (
        "spectral-reference-nan",
        lambda d: plot.plot_spectral_density(DENSITY, torch.tensor([1.0, NAN])),
        ValueError,
        "reference_eigenvalues",
    ),
    # compose: width_embedding, depth_embedding, batch_embedding
    ("width-units-float", lambda d: width_embedding(SMALL, BIG, [0.5, 1.5]), TypeError, "units"),
    ("width-units-str", lambda d: width_embedding(SMALL, BIG, "01"), TypeError, "units"),
    (
        "width-units-tensor",
        lambda d: width_embedding(SMALL, BIG, torch.tensor([0, 1])),
        TypeError,
        "units",
    ),
    ("width-units-bool", lambda d: width_embedding(SMALL, BIG, [True, False]), TypeError, "units"),
    ("width-units-range", lambda d: width_embedding(SMALL, BIG, [0, 4]), ValueError, "units"),
    ("width-units-negative", lambda d: width_embedding(SMALL, BIG, [-1, 0]), ValueError, "units"),
    ("width-units-count", lambda d: width_embedding(SMALL, BIG, [0, 1, 2]), ValueError, "units"),
    ("width-units-repeat", lambda d: width_embedding(SMALL, BIG, [1, 1]), ValueError, "units"),
    ("width-big-str", lambda d: width_embedding(SMALL, "big", [0, 1]), TypeError, "big"),
    ("width-big-deep", lambda d: width_embedding(SMALL, DEEP, [0, 1]), TypeError, "big"),
    (
        "width-activation",
        lambda d: width_embedding(SMALL, two_layer("relu", h=4), [0, 1]),
        ValueError,
        "activation",
    ),
    ("depth-deep-str", lambda d: depth_embedding(SMALL, "deep", 1), TypeError, "deep"),
    ("depth-small-deep", lambda d: depth_embedding(DEEP, DEEP, 1), TypeError, "small"),
    (
        "depth-layer-0",
        lambda d: depth_embedding(two_layer("relu", h=2), DEEP, 0),
        ValueError,
        "layer",
    ),
    (
        "depth-layer-float",
        lambda d: depth_embedding(two_layer("relu", h=2), DEEP, 1.0),
        TypeError,
        "layer",
    ),
    (
        "depth-units-range",
        lambda d: depth_embedding(two_layer("relu", h=2), DEEP, 1, [0, 5]),
        ValueError,
        "units",
    ),
    (
        "batch-seed-negative",
        lambda d: batch_embedding(WIDE_K, NARROW_K, seed=-1),
        ValueError,
        "seed",
    ),
    ("batch-seed-float", lambda d: batch_embedding(WIDE_K, NARROW_K, seed=0.5), TypeError, "seed"),
    ("batch-big-more", lambda d: batch_embedding(NARROW_K, WIDE_K), ValueError, "big"),
    ("batch-small-str", lambda d: batch_embedding("small", NARROW_K), TypeError, "small"),
    # compose: Embedding, its check, InducedAction
    (
        "embedding-small-str",
        lambda d: Embedding("small", BIG, torch.arange(4), EMB.context),
        TypeError,
        "small",
    ),
    (
        "embedding-index-list",
        lambda d: Embedding(SMALL, BIG, [0, 1, 2, 3], EMB.context),
        TypeError,
        "index",
    ),
    (
        "embedding-index-float",
        lambda d: Embedding(SMALL, BIG, torch.arange(4.0), EMB.context),
        ValueError,
        "index",
    ),
    (
        "embedding-index-range",
        lambda d: Embedding(SMALL, BIG, torch.tensor([0, 1, 2, 8]), EMB.context),
        ValueError,
        "index",
    ),
    (
        "embedding-index-repeat",
        lambda d: Embedding(SMALL, BIG, torch.tensor([0, 1, 1, 2]), EMB.context),
        ValueError,
        "index",
    ),
    (
        "embedding-context",
        lambda d: Embedding(SMALL, BIG, torch.arange(4), None),
        TypeError,
        "context",
    ),
    ("check-theta-1d", lambda d: EMB.check(S_BIG.theta[0], S_BIG.X), ValueError, "theta"),
    ("check-theta-small", lambda d: EMB.check(S.theta, S_BIG.X), ValueError, "theta"),
    ("check-theta-int", lambda d: EMB.check(S_BIG.theta.long(), S_BIG.X), TypeError, "theta"),
    ("check-x-batch", lambda d: EMB.check(S_BIG.theta, S_BIG.X[:2]), ValueError, "X"),
    ("check-x-list", lambda d: EMB.check(S_BIG.theta, [1.0]), TypeError, "X"),
    ("check-theta-empty", lambda d: EMB.check(S_BIG.theta[:0], S_BIG.X[:0]), ValueError, "theta"),
    (
        "check-atol-negative",
        lambda d: EMB.check(S_BIG.theta, S_BIG.X, atol=-1.0),
        ValueError,
        "atol",
    ),
    ("induced-action-str", lambda d: InducedAction("action", EMB), TypeError, "action"),
    (
        "induced-embedding-str",
        lambda d: InducedAction(KnownAction(SMALL, "gl"), "embedding"),
        TypeError,
        "embedding",
    ),
    (
        "induced-theta-small",
        lambda d: InducedAction(KnownAction(SMALL, "gl"), EMB)(torch.eye(2, dtype=F64), THETA, X1),
        ValueError,
        "theta",
    ),
    (
        "induced-x-shape",
        lambda d: InducedAction(KnownAction(SMALL, "gl"), EMB)(
            torch.eye(2, dtype=F64), S_BIG.theta[0], S_BIG.X
        ),
        ValueError,
        "X",
    ),
    # known
    ("exp-map-nan", lambda d: exp_map("gl", torch.full((2, 2), NAN)), ValueError, "A"),
    ("exp-map-inf", lambda d: exp_map("rescaling", torch.tensor([INF, 0.0])), ValueError, "A"),
    ("exp-map-not-square", lambda d: exp_map("gl", torch.zeros(2, 3)), ValueError, "A"),
    ("exp-map-vector-gl", lambda d: exp_map("data_dependent_gl", torch.zeros(2)), ValueError, "A"),
    ("exp-map-int", lambda d: exp_map("gl", torch.zeros(2, 2, dtype=torch.long)), TypeError, "A"),
    ("exp-map-symmetry", lambda d: exp_map("GL", torch.zeros(2, 2)), ValueError, "symmetry"),
    ("algebra-shape-loss", lambda d: algebra_shape("loss", "gl"), TypeError, "loss"),
    ("algebra-shape-symmetry", lambda d: algebra_shape(SMALL, "scaling"), ValueError, "symmetry"),
    ("unit-generators-d-float", lambda d: unit_generators(SMALL, "gl", 2.0), TypeError, "d"),
    (
        "unit-generators-symmetry",
        lambda d: unit_generators(SMALL, "rotation", 2),
        ValueError,
        "symmetry",
    ),
    ("tangent-basis-symmetry", lambda d: tangent_basis(SMALL, "glx"), ValueError, "symmetry"),
    ("tangent-basis-loss", lambda d: tangent_basis(None, "gl"), TypeError, "loss"),
    ("tangent-basis-alpha-gl", lambda d: tangent_basis(SMALL, "gl", alpha=0.1), TypeError, "alpha"),
    ("infinitesimal-symmetry", lambda d: infinitesimal_action(SMALL, 1), ValueError, "symmetry"),
    ("group-action-loss", lambda d: group_action("loss", "gl"), TypeError, "loss"),
    ("gl-ansatz-loss", lambda d: gl_ansatz(None), TypeError, "loss"),
    ("null-space-ansatz", lambda d: null_space(SMALL, S, "gl"), TypeError, "ansatz"),
    (
        "null-space-samples",
        lambda d: null_space(SMALL, S.theta, gl_ansatz(SMALL)),
        TypeError,
        "samples",
    ),
    (
        "null-space-rtol",
        lambda d: null_space(SMALL, S, gl_ansatz(SMALL), rtol=-1.0),
        ValueError,
        "rtol",
    ),
    ("known-action-symmetry-int", lambda d: KnownAction(SMALL, 3), ValueError, "symmetry"),
    ("known-action-softmax", lambda d: KnownAction(SMALL, "softmax_shift"), ValueError, "symmetry"),
    (
        "known-action-g-int",
        lambda d: KnownAction(SMALL, "gl")(torch.eye(2).long(), THETA, X1),
        TypeError,
        "g",
    ),
    # a singular group element: plain, and one element of a torch.vmap batch (issue 18)
    (
        "group-action-singular-g",
        lambda d: group_action(SMALL, "gl")(THETA, X1, torch.zeros(2, 2, dtype=F64)),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "group-action-vmap-singular-g",
        lambda d: torch.vmap(group_action(SMALL, "gl"))(S.theta, S.X, _singular()),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "group-action-vmap-jacrev-singular-g",
        lambda d: torch.vmap(torch.func.jacrev(group_action(SMALL, "gl")))(
            S.theta, S.X, _singular()
        ),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "group-action-nested-vmap-singular-g",
        lambda d: torch.vmap(torch.vmap(group_action(SMALL, "gl"), in_dims=(None, None, 0)))(
            S.theta, S.X, _singular()[None].expand(4, 4, 2, 2)
        ),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "known-action-vmap-singular-g",
        lambda d: torch.vmap(KnownAction(SMALL, "gl"))(_singular(), S.theta, S.X),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "ddgl-singular-g",
        lambda d: group_action(DD_GL, "data_dependent_gl")(
            S_DD.theta[0], S_DD.X[0], torch.zeros(2, 2, dtype=F64)
        ),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "ddgl-vmap-singular-g",
        lambda d: torch.vmap(group_action(DD_GL, "data_dependent_gl"))(
            S_DD.theta, S_DD.X, _singular()
        ),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "deep-gl-singular-g",
        lambda d: group_action(DEEP_ID, "gl")(S_DEEP.theta[1], S_DEEP.X[1], _deep_singular()[1]),
        ValueError,
        "`g` must be invertible, an element of GL(2) (block g_2",
    ),
    (
        "deep-gl-vmap-singular-g",
        lambda d: torch.vmap(group_action(DEEP_ID, "gl"))(S_DEEP.theta, S_DEEP.X, _deep_singular()),
        ValueError,
        "`g` must be invertible",
    ),
    (
        "deep-known-action-vmap-singular-g",
        lambda d: torch.vmap(KnownAction(DEEP_ID, "gl"))(_singular(d=4), S_DEEP.theta, S_DEEP.X),
        ValueError,
        "`g` must be invertible",
    ),
    ("permute-float", lambda d: permute_hidden(SMALL, THETA, [0.5, 1]), TypeError, "perm"),
    ("permute-length", lambda d: permute_hidden(SMALL, THETA, [0, 1, 2]), ValueError, "perm"),
    ("permute-theta-list", lambda d: permute_hidden(SMALL, [0.0] * 4, [1, 0]), ValueError, "theta"),
    ("flip-zero", lambda d: flip_signs(SMALL, THETA, [1.0, 0.0]), ValueError, "signs"),
    ("flip-length", lambda d: flip_signs(SMALL, THETA, [1.0]), ValueError, "signs"),
]


@pytest.mark.parametrize(
    ("call", "error", "name"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_fails_clearly(tmp_path, call, error, name):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert re.search(re.escape(name), str(info.value)), str(info.value)


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# -- symdisc.discover and symdisc.train are the functions ----------------------------------------


def test_package_attributes_are_the_functions_of_all():
    """The functions live in modules of other names (``discovery``, ``trainer``), so importing
    the modules can never shadow them."""
    from symdisc.discovery import discover
    from symdisc.trainer import train

    importlib.import_module("symdisc.discovery")
    importlib.import_module("symdisc.trainer")
    assert symdisc.discover is discover and symdisc.train is train
    assert symdisc.discovery is sys.modules["symdisc.discovery"]
    assert symdisc.trainer.TrainConfig is symdisc.TrainConfig
    assert not set(symdisc.__all__) & {"discovery", "trainer"}


def test_a_fresh_interpreter_gets_the_discover_function():
    """In a new process where another module imported the submodules first (as
    ``symdisc.dimension`` does), ``symdisc.discover`` is still the function, and it fails on a
    bad argument with a named error (not ``'module' object is not callable``)."""
    script = (
        "import symdisc.dimension, symdisc.discovery, symdisc.trainer, types, symdisc\n"
        "from symdisc import discover, train\n"
        "for f in (symdisc.discover, discover, symdisc.train, train):\n"
        "    assert not isinstance(f, types.ModuleType), f\n"
        "try:\n"
        "    symdisc.discover('loss', d=1)\n"
        "except TypeError as err:\n"
        "    assert '`loss`' in str(err), err\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr


# -- failed calls change nothing -----------------------------------------------------------------


def test_failed_save_writes_nothing(tmp_path):
    fig = FIG()
    fig.subplots().plot([0, 1], [1, 0])
    for path in (tmp_path / "a" / "f.png", tmp_path / "f.docx"):
        with pytest.raises((FileNotFoundError, ValueError), match="`path`"):
            plot.save(fig, path)
    assert list(tmp_path.iterdir()) == []
    plot.save(fig, tmp_path / "f.pdf")
    assert (tmp_path / "f.pdf").stat().st_size > 0


def test_failed_compose_calls_leave_their_inputs_unchanged():
    theta, X = S_BIG.theta.clone(), S_BIG.X.clone()
    units = [0, 0]
    with pytest.raises(ValueError, match="`units`"):
        width_embedding(SMALL, BIG, units)
    assert units == [0, 0]
    with pytest.raises(ValueError, match="`X`"):
        EMB.check(S_BIG.theta, S_BIG.X[:2])
    action = InducedAction(KnownAction(SMALL, "gl"), EMB)
    with pytest.raises(ValueError, match="`theta`"):
        action(torch.eye(2, dtype=F64), S_BIG.theta[0, :5], S_BIG.X[0])
    assert torch.equal(S_BIG.theta, theta) and torch.equal(S_BIG.X, X)
    # and the same calls with good inputs work
    assert EMB.check(S_BIG.theta, S_BIG.X) == 0.0
    moved = action(torch.eye(2, dtype=F64), S_BIG.theta[0], S_BIG.X[0])
    torch.testing.assert_close(moved, S_BIG.theta[0], rtol=0, atol=1e-12)


def test_failed_exp_map_leaves_a_unchanged():
    A = torch.tensor([[0.1, NAN], [0.0, 0.2]], dtype=F64)
    copy = A.clone()
    with pytest.raises(ValueError, match="`A` must be finite"):
        exp_map("gl", A)
    assert torch.equal(A.isnan(), copy.isnan()) and torch.equal(A.nan_to_num(), copy.nan_to_num())

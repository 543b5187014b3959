"""The discovery objective, actions, trainer and metrics of symdisc (paper 002)."""

import math
import warnings

import pytest
import torch

from symdisc.actions import LinearAction, MLPAction
from symdisc.generators import Generators
from symdisc.known import tangent_basis
from symdisc.losses import three_layer_tanh_skip, two_layer
from symdisc.metrics import (
    associativity_error,
    energy_outside,
    evaluate,
    identity_error,
    invariance_errors,
    principal_angles,
)
from symdisc.objective import (
    Weights,
    exponential_objective,
    field_orthogonality,
    infinitesimal_objective,
    tangent_fields,
)
from symdisc.sampler import sample
from symdisc.trainer import (
    Discovery,
    FieldCollapseWarning,
    NonFiniteLossError,
    TrainConfig,
    field_health,
    train,
)

F64 = torch.float64


def loop_objective(action, h, batch, loss, weights):
    """Eq. (4) one sample at a time with torch.autograd.grad (double-backward for the JVP), in
    the paper's form or the fields form (scale-free invariance, squared norm term, log-volume
    of the unit fields at each sample)."""
    eye = torch.eye(h.shape[-1], dtype=F64)
    paper = weights.form == "paper"
    inv, reg, ident, vols = [], [], [], []
    for i in range(batch.theta.shape[0]):
        theta, X, Y = batch.theta[i], batch.X[i], batch.Y[i]
        t = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss.flat(t, X, Y), t)
        units = []
        for j in range(h.shape[0]):
            g = eye.clone().requires_grad_(True)
            out = action(g, theta, X)
            u = torch.zeros_like(out, requires_grad=True)
            (w,) = torch.autograd.grad(out, g, grad_outputs=u, create_graph=True)
            (v,) = torch.autograd.grad((w * h[j]).sum(), u, create_graph=True)
            if paper:
                inv.append((grad * v).sum().abs())
                reg.append((weights.beta - v.norm()).abs())
            else:
                inv.append((grad * v).sum().abs() / (grad.norm() * v.norm()))
                reg.append((v.norm() - weights.beta) ** 2)
            units.append(v / v.norm())
        U = torch.stack(units)
        gram = U @ U.T + 1e-3 * torch.eye(len(units), dtype=F64)
        vols.append(len(units) * math.log(1 + 1e-3) - torch.logdet(gram))
        ident.append((action(eye, theta, X) - theta).norm())
    flat = h.reshape(h.shape[0], -1)
    cos = [
        (flat[a] @ flat[b]).abs() / (flat[a].norm() * flat[b].norm())
        for a in range(len(flat))
        for b in range(a + 1, len(flat))
    ]
    terms = {
        "invariance": torch.stack(inv).mean(),
        "identity": torch.stack(ident).mean(),
        "reg_id": torch.stack(reg).mean(),
        "orth": (torch.stack(cos).sum() if cos else torch.zeros((), dtype=F64))
        if paper
        else torch.stack(vols).mean(),
        "sparse": h.abs().sum(),
    }
    gammas = weights.as_dict()
    return sum(gammas[k] * v for k, v in terms.items()), terms


@pytest.mark.parametrize("weights", [Weights(), Weights.paper()], ids=["fields", "paper"])
@pytest.mark.parametrize(
    "loss_builder,d,data_dependent",
    [
        (lambda: two_layer("sigmoid", m=1, h=3, n=3, k=1), 3, True),
        (lambda: two_layer("relu", m=2, h=2, n=2, k=2, bias=True), 2, False),
        (lambda: three_layer_tanh_skip(), 2, True),
    ],
)
def test_vmapped_objective_equals_per_sample_loop(loss_builder, d, data_dependent, weights):
    loss = loss_builder()
    torch.manual_seed(0)
    action = MLPAction(loss, d, (16, 16), data_dependent=data_dependent).double()
    gens = Generators(3, d, seed=1).double()
    batch = sample(loss, 5, seed=2, dtype=F64)
    total, terms = infinitesimal_objective(action, gens(), batch, weights)
    ref_total, ref_terms = loop_objective(action, gens(), batch, loss, weights)
    for name in ref_terms:
        torch.testing.assert_close(terms[name], ref_terms[name], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(total, ref_total, rtol=1e-10, atol=1e-12)
    # and their gradients in the action's and the generators' parameters agree
    params = list(action.parameters()) + list(gens.parameters())
    g_fast = torch.autograd.grad(total, params)
    g_loop = torch.autograd.grad(ref_total, params)
    for a, b in zip(g_fast, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def rescaling_linear_action():
    """The exact rescaling symmetry of the 1x1 linear net as a LinearAction with h = diag(1, -1)."""
    loss = two_layer("identity")
    action = LinearAction(loss, 2).double()
    h = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]], dtype=F64)
    return loss, action, h


def test_metrics_of_an_exact_symmetry_and_of_a_wrong_one():
    loss, action, h = rescaling_linear_action()
    samples = sample(loss, 400, seed=0, dtype=F64)
    basis = torch.vmap(tangent_basis(loss, "gl"))(samples.theta, samples.X)
    good = evaluate(loss, action, h, samples, known_basis=basis)
    assert good["invariance_median"] < 1e-12 and good["cos_true"] > 1 - 1e-12
    assert good["energy_outside"] < 1e-20 and good["identity_error"] == 0
    assert good["associativity_error"] < 1e-12 and good["flow_drift_ratio"] < 1e-6
    wrong = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=F64)  # scales both layers up
    bad = evaluate(loss, action, wrong, samples, known_basis=basis)
    assert bad["invariance_median"] > 0.5 and bad["energy_outside"] > 0.3
    assert bad["flow_drift_ratio"] > 0.5


def test_energy_outside_and_principal_angles():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(50, 2, 6, generator=g, dtype=F64)
    coef = torch.randn(50, 3, 2, generator=g, dtype=F64)
    inside = coef @ basis  # (50, 3, 6) in the span
    assert energy_outside(inside, basis) < 1e-20
    assert principal_angles(inside, basis).max() < 1e-6
    normal = torch.linalg.svd(basis, full_matrices=True).Vh[:, 2:]  # orthogonal complement
    assert energy_outside(normal[:, :3], basis) > 1 - 1e-12
    torch.testing.assert_close(
        principal_angles(normal[:, :2], basis), torch.full((50, 2), math.pi / 2, dtype=F64)
    )
    mixed = inside + normal[:, :3]
    frac = (normal[:, :3] ** 2).sum() / (mixed**2).sum()
    assert abs(energy_outside(mixed, basis) - float(frac)) < 1e-10


def test_linear_action_is_a_group_action():
    loss, action, _ = rescaling_linear_action()
    samples = sample(loss, 20, seed=1, dtype=F64)
    h = torch.randn(3, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    assert identity_error(action, samples) == 0
    assert associativity_error(action, h, samples) < 1e-13
    v = tangent_fields(action, h, samples.theta, samples.X)
    torch.testing.assert_close(v, torch.einsum("kab,nb->nka", h, samples.theta))


def test_exponential_objective_vanishes_for_the_exact_symmetry():
    loss, action, h = rescaling_linear_action()
    batch = sample(loss, 64, seed=3, dtype=F64)
    _, terms = exponential_objective(
        action, h, batch, loss, Weights(), generator=torch.Generator().manual_seed(0)
    )
    assert terms["invariance"] < 1e-12 and terms["assoc"] < 1e-12 and terms["identity"] == 0
    _, wrong = exponential_objective(
        action,
        torch.eye(2, dtype=F64)[None],
        batch,
        loss,
        Weights(),
        generator=torch.Generator().manual_seed(0),
    )
    assert wrong["invariance"] > 1e-2


def make_discovery(loss, seed=0):
    torch.manual_seed(seed)
    return Discovery(
        MLPAction(loss, 2, (16, 16), data_dependent=False), Generators(1, 2, seed=seed)
    )


@pytest.mark.filterwarnings("ignore::symdisc.trainer.FieldCollapseWarning")  # a few steps only
def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    loss = two_layer("identity")
    samples = sample(loss, 300, seed=0)
    ckpt = str(tmp_path / "ckpt.pt")
    whole = make_discovery(loss)
    h_whole = train(whole, loss, samples, TrainConfig(steps=12, batch_size=64, decay_every=5))
    part = make_discovery(loss)
    train(
        part,
        loss,
        samples,
        TrainConfig(steps=8, batch_size=64, decay_every=5, checkpoint_every=4, checkpoint=ckpt),
    )
    resumed = make_discovery(loss, seed=99)  # different init: everything must come from the file
    h_resumed = train(
        resumed, loss, samples, TrainConfig(steps=12, batch_size=64, decay_every=5), resume=ckpt
    )
    assert [r["step"] for r in h_resumed] == list(range(1, 13))
    assert h_resumed[-1]["total"] == pytest.approx(h_whole[-1]["total"], rel=1e-5)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::symdisc.trainer.FieldCollapseWarning")  # a few steps only
def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    loss = two_layer("identity")
    samples = sample(loss, 200, seed=0)
    ckpt = tmp_path / "ckpt.pt"
    disc = make_discovery(loss)
    train(
        disc,
        loss,
        samples,
        TrainConfig(steps=4, batch_size=50, checkpoint_every=2, checkpoint=str(ckpt)),
    )
    good = {k: v.clone() for k, v in disc.state_dict().items()}
    saved = ckpt.read_bytes()
    with torch.no_grad():
        disc.generators.h.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"step 1: .*not finite.*restored.*\(step 4\)"):
        train(
            disc,
            loss,
            samples,
            TrainConfig(steps=8, batch_size=50, checkpoint_every=2, checkpoint=str(ckpt)),
        )
    assert ckpt.read_bytes() == saved
    for k, v in disc.state_dict().items():
        torch.testing.assert_close(v, good[k])


def test_short_training_finds_the_rescaling_of_the_scalar_linear_net(one_thread):
    loss = two_layer("identity")
    samples = sample(loss, 4000, seed=0)
    held = sample(loss, 500, seed=1)
    torch.manual_seed(0)
    disc = Discovery(MLPAction(loss, 2, data_dependent=False), Generators(1, 2))
    train(disc, loss, samples, TrainConfig(steps=600, batch_size=128, lr=3e-3))
    basis = torch.vmap(tangent_basis(loss, "gl"))(held.theta, held.X)
    scores = evaluate(loss, disc.action, disc.generators().detach(), held, known_basis=basis)
    assert scores["cos_true"] >= 0.95, scores
    assert scores["invariance_median"] < 0.1, scores


def test_invariance_errors_of_random_fields_are_not_small():
    loss = two_layer("tanh", m=2, h=3, n=2, k=2)
    samples = sample(loss, 300, seed=0, dtype=F64)
    fields = torch.randn(300, 2, loss.num_params, dtype=F64)
    assert invariance_errors(fields, samples.grad).median() > 0.05


def test_config_and_action_errors():
    loss = two_layer("identity")
    with pytest.raises(ValueError, match="`objective`"):
        TrainConfig(objective="adversarial")
    with pytest.raises(ValueError, match="`checkpoint` must name a file"):
        TrainConfig(checkpoint_every=10)
    with pytest.raises(ValueError, match="`block`"):
        LinearAction(loss, 3)
    with pytest.raises(ValueError, match="`d`"):
        MLPAction(loss, 0)
    with pytest.raises(ValueError, match="gl\\(d\\)"):
        Discovery(MLPAction(loss, 2), Generators(1, 3))
    with pytest.raises(ValueError, match="`n`"):
        sample(loss, 0)


@pytest.mark.parametrize("data_dependent", [True, False])
def test_mlp_action_batched_tangents_equal_the_vmapped_jvp(data_dependent):
    from symdisc.actions import Action

    loss = two_layer("tanh", m=2, h=3, n=2, k=2, bias=True)
    torch.manual_seed(0)
    action = MLPAction(loss, 3, (8, 8, 8), data_dependent=data_dependent).double()
    samples = sample(loss, 6, seed=0, dtype=F64)
    h = torch.randn(4, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    fast = action.tangents(h, samples.theta, samples.X)
    slow = Action.tangents(action, h, samples.theta, samples.X)  # the generic vmapped jvp
    eye = torch.eye(3, dtype=F64)
    primal = torch.stack([action(eye, t, x) for t, x in zip(samples.theta, samples.X)])
    torch.testing.assert_close(fast[0], primal, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-12, atol=1e-13)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::symdisc.trainer.FieldCollapseWarning")  # a few steps only
def test_compiled_training_matches_eager():
    loss = two_layer("sigmoid", m=1, h=2, n=2, k=1)
    samples = sample(loss, 256, seed=0)
    eager, compiled = make_discovery(loss), make_discovery(loss)
    compiled.load_state_dict(eager.state_dict())
    h_eager = train(eager, loss, samples, TrainConfig(steps=5, batch_size=64))
    h_compiled = train(compiled, loss, samples, TrainConfig(steps=5, batch_size=64, compile=True))
    for a, b in zip(h_eager, h_compiled):
        assert b["total"] == pytest.approx(a["total"], rel=1e-4)
    for a, b in zip(eager.state_dict().values(), compiled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_short_fields_run_finds_three_distinct_fields_on_relu_h3(one_thread):
    """The default ("fields") objective keeps k = 3 fields apart where the paper's form gave
    three copies of one field (field_rank 1, issue 13)."""
    loss = two_layer("relu", 2, 3, 2, 2)
    samples = sample(loss, 2000, seed=0)
    held = sample(loss, 300, seed=1)
    torch.manual_seed(0)
    disc = Discovery(MLPAction(loss, 3, (32, 32), data_dependent=False), Generators(3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FieldCollapseWarning)  # neither vanishing nor coinciding
        train(disc, loss, samples, TrainConfig(steps=300, batch_size=128, lr=3e-3), held_out=held)
    health = field_health(disc, held, beta=1.0)
    assert health["field_rank"] == 3 and 0.5 < health["v_norm_mean"] < 1.5, health


def test_field_health_warns_on_collapsed_and_on_coinciding_fields():
    loss, action, _ = rescaling_linear_action()
    held = sample(loss, 50, seed=0, dtype=F64)
    same = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]] * 2, dtype=F64)  # two copies of one field
    disc = Discovery(action, Generators(2, 2).double())
    with torch.no_grad():
        disc.generators.h.copy_(same)
    with pytest.warns(FieldCollapseWarning, match="span only 1 dimensions"):
        assert field_health(disc, held, beta=1.0)["field_rank"] == 1
    with torch.no_grad():
        disc.generators.h.copy_(1e-4 * torch.stack([same[0], torch.eye(2, dtype=F64)]))
    with pytest.warns(FieldCollapseWarning, match="collapsed"):
        health = field_health(disc, held, beta=1.0)
    assert health["field_rank"] == 2 and health["v_norm_mean"] < 1e-3
    with torch.no_grad():
        disc.generators.h.copy_(torch.stack([same[0], torch.eye(2, dtype=F64)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FieldCollapseWarning)
        assert field_health(disc, held, beta=1.0)["field_rank"] == 2


def test_field_orthogonality_is_zero_for_orthonormal_fields_and_grows_as_they_meet():
    eye = torch.eye(3, 5, dtype=F64)[None]  # three orthonormal fields at one sample
    assert abs(float(field_orthogonality(eye))) < 1e-12
    assert abs(float(field_orthogonality(7.0 * eye))) < 1e-12  # scale-free
    values = []
    for a in (0.5, 0.9, 0.99, 1.0):
        v = eye.clone()
        v[0, 1] = a * eye[0, 0] + math.sqrt(1 - a * a) * eye[0, 1]
        values.append(float(field_orthogonality(v)))
    assert values == sorted(values) and values[-1] > 5
    assert field_orthogonality(eye[:, :1]).abs() < 1e-12  # one field: nothing to keep apart


def test_weights_forms_and_checks():
    assert Weights().form == "fields" and Weights.paper().form == "paper"
    assert Weights.paper(invariance=30.0).invariance == 30.0
    with pytest.raises(ValueError, match="`form`"):
        Weights(form="other")
    with pytest.raises(ValueError, match="`beta`"):
        Weights(beta=0.0)
    with pytest.raises(TypeError, match="`orth`"):
        Weights(orth="1")


def test_centred_action_fixes_theta_at_the_identity_and_moves_with_g():
    from symdisc.actions import CentredAction
    from symdisc.sampler import sample

    loss = two_layer("tanh", 1, 2, 2, 1)
    inner = MLPAction(loss, 2, (16, 16), data_dependent=False).double()
    centred = CentredAction(inner).requires_grad_(False)
    s = sample(loss, 4, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    g = eye + 0.1 * torch.randn(2, 2, generator=torch.Generator().manual_seed(0), dtype=eye.dtype)
    at_identity = torch.vmap(centred, in_dims=(None, 0, 0))(eye, s.theta, s.X)
    torch.testing.assert_close(at_identity, s.theta, rtol=0, atol=1e-14)
    assert (
        abs(float(inner(eye, s.theta[0], s.X[0]).sub(s.theta[0]).norm())) > 1e-3
    )  # inner does not
    moved = torch.vmap(centred, in_dims=(None, 0, 0))(g, s.theta, s.X)
    assert (moved - s.theta).norm(dim=1).min() > 0

"""Benchmark of ``ella.laplace`` against laplace-torch 0.3 with each of its GGN backends.

Workloads (``--workload {mlp,resnet,all}``, default all; every row carries ``workload``): those
of ``bench_curvature.py`` (``_workloads.py``). ``resnet``: the Fixup-style ResNet without
BatchNorm (P = 77,706 in 22 tensors of 11 Conv2d/Linear layers) trained for 30 Adam steps on
N = 512 CIFAR-shaped Gaussian images, 10 classes; on it run ``gradient`` and ``kron_marglik``
(the per-tensor prior precisions cycle through the MLP's six values below), its reference the
explicit float64 KFAC factors of ``_workloads.explicit_kfac`` (hooks and ``torch.autograd``; A
the mean over samples and positions of the unfolded inputs, G over samples, positions and
output-Hessian columns, times N for the summed loss) with the log-determinant of every block
from the factors' eigenvalues, ``log det(G (x) A_w + delta I) = sum_ij log(g_i a_j + delta)``
(weight) and ``log det(G + delta I)`` (bias), exact where a dense block (up to 18,496 rows)
would not fit the budget. ``--quick`` shrinks it to widths 4-6-8 on 8x8 images with N = 16.
The task ``gradient`` (torch_autograd: one full-batch gradient of the mean cross-entropy) is the
unit of every row's ``gradients`` (its median over the gradient's of the same workload).

MLP: the workload of ``bench_curvature.py`` (fixed seed, ``_workloads.py``): an MLP 10-50-50-3
with tanh (P = 3253 parameters in 6 tensors W1, b1, W2, b2, W3, b3) trained for 300 full-batch
Adam steps on N = 2000 Gaussian inputs labelled by a random linear teacher. The likelihood is
categorical, negative log-likelihood the *summed* cross-entropy, temperature 1, prior mean 0, and
one prior precision per parameter tensor, ``delta = [1, 2, 0.5, 1.5, 3, 0.8]``. ``--quick`` runs the
same on an MLP 10-8-8-3 with N = 200, one timed repeat, in seconds.

Every timed method works on the float32 model; the log marginal likelihood

    log p(D | delta) ~= log p(D | theta*) - 1/2 sum_g delta_g ||theta*_g||^2
                        + 1/2 sum_g P_g log delta_g - 1/2 log det(GGN + diag(delta))

is compared with a float64 reference per structure, built by brute force without ``ella`` and
without the curvature routines of ``symdisc``: the dense GGN ``sum_n J_n^T (diag p_n - p_n
p_n^T) J_n`` from ``torch.func`` per-sample Jacobians (full; the tests' twin
``symdisc.curvature.reference.dense_ggn``), or, for kron, per layer ``A = mean [x; 1][x;
1]^T`` from the layer inputs and ``G = sum_n J_sn^T H_n J_sn`` from the Jacobian of the output
in the layer's pre-activation, the explicit blocks ``torch.kron(G, A[:-1, :-1])`` (weight) and
``A[-1, -1] G`` (bias) in a dense block-diagonal matrix; ``slogdet`` in both cases. Our own
float64 answer is checked against it too (recorded in ``workload.reference``).

Tasks (one row per task and method):

================  ====================================================================
``kron_marglik``  build the Laplace object, fit the KFAC curvature, evaluate the marglik
``full_marglik``  the same with the full (P, P) GGN
``kron_reeval``   on an already fitted kron Laplace: marglik at new precisions
                  ``[0.7, 1.3, 2.2, 0.9, 0.4, 1.7]`` and its gradient in them (backward)
================  ====================================================================

and the tasks of the predictive API (issue 17):

=========================  ===========================================================
``glm_predictive``         on an already fitted kron Laplace: the GLM probit predictive
                           probabilities ``softmax(f / sqrt(1 + pi/8 diag(J S J^T)))``
                           on 1000 standard-normal test inputs (100 on ``--quick``)
``glm_predictive_full``    the same with the full posterior
``last_layer_fit``         build and fit a kron Laplace of the last layer (W3, b3; the
                           rest at the MAP) and evaluate its marglik at a shared
                           precision 2.0
=========================  ===========================================================

Their references: the dense float64 posterior (explicit KFAC blocks or the dense GGN plus
diag(delta), inverted) and ``torch.func`` Jacobians for the probabilities, judged by the
largest difference of a probability (agreement 1e-4); the last two explicit KFAC blocks for
``last_layer_fit`` (nats). Measured on the quick and full workloads: every laplace-torch backend
agrees to 3e-15 in float64 and 1.4e-6 in float32 (curvlinops' full: 3e-8 in float64, its dense
GGN multiplies a float32 identity).

Methods: ``ours`` = ``ella.laplace.Laplace(model, "classification", structure,
per_tensor=True)`` (kron: weight and bias blocks separate, ``bias="separate"`` in
``symdisc.curvature.kfac``); ``laplace_<backend>`` = ``laplace.Laplace(model,
"classification", subset_of_weights="all", hessian_structure=..., backend=<Backend>GGN)`` for
every GGN backend of ``laplace.curvature`` (backpack, asdl, curvlinops, asdfghjkl, and any
other ``*GGN`` class it exports). A backend that is not installed or fails gets a row with
``"error"``.

Conventions checked (the float64 runs of every backend agree with the reference to ~1e-12):
laplace-torch's ``log_marginal_likelihood`` is ``log_lik - 1/2 (log det P - log det P_0 +
scatter)``, the same quantity (no constant dropped on either side; the 2 pi terms cancel);
its curvature uses ``CrossEntropyLoss(reduction="sum")`` and its Kronecker factors are
rescaled by ``M / N = 1`` for one full batch; a prior precision vector of length
``n_layers`` (= number of parameter tensors, 6) is per tensor; ``KronLaplace`` has one block
``[G, A]`` per weight and a separate block ``[G]`` per bias (what ours' ``bias="separate"``
gives; laplace-torch has no folded-bias option); ``damping=False`` (default), temperature 1;
curvlinops' KFAC defaults to ``kfac_approx="expand"``, which for an MLP equals "reduce".
Differences that remain: laplace-torch decomposes the factors in float32 (``symeig``), ours
in float64; it does not clamp negative round-off eigenvalues, ours clamps them at 0.

laplace-torch's ``fit`` takes a loader with a ``.dataset`` (for N); both sides get the one
full batch, laplace-torch through a minimal loader object (no DataLoader collation is timed).

Time: after one untimed call per method, the methods of a task take turns for ``repeats``
timed calls (wall clock; the process CPU time is recorded as well, ``cpu_runs_s``, because a
shared machine inflates wall-clock times); median and all runs are reported. Untimed per
method: a copy of the model (BackPACK extends the modules it sees) and, for kron_reeval, the
fit. Peak memory is measured as in ``bench_curvature.py``: the rise of the resident set while
the timed part runs once in a fresh child process (on ``--quick`` for ours' rows only).

Targets: ours' median <= 0.5x the fastest laplace-torch backend's for kron_marglik (on both
workloads), <= 0.8x
for full_marglik, <= 1.0x for kron_reeval and the three predictive tasks (issue 17: "no slower
than laplace-torch's fastest backend"; not judged on --quick). Ours must agree with the
reference within max(1e-3 nats, 1e-6 x |reference|) (float32 rounding of a large value; exit
status 1 otherwise); peers are held to the same bound, and their errors are reported.

Peers are optional; install them without their dependencies, which would replace torch::

    pip install --no-deps -r experiments/requirements-bench.txt

Usage::

    python experiments/bench_laplace.py --out DIR [--workload mlp|resnet|all] [--seed 0]
        [--device cpu|cuda] [--quick] [--threads N]

Budget: the default full run (both workloads) takes about 10 min on the 2-core CPU when run
alone.

writes ``DIR/bench_laplace.json`` and ``DIR/bench_laplace.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from _bench import (
    WORKLOAD_FILE_FLAG,
    BenchmarkRun,
    Row,
    against_ours,
    child_method,
    environment_text,
    fmt,
    mark_agreement,
    markdown_report,
    measure_peaks,
    peers_unavailable,
    print_peak,
    say,
    timed,
)
from _cli import check_device, child_flags, parser, setup
from _results import check_targets
from _workloads import KINDS, Workload, explicit_kfac, load_workload, train_workload
from ella.laplace import Laplace
from symdisc.curvature.reference import dense_ggn

PRIOR = (1.0, 2.0, 0.5, 1.5, 3.0, 0.8)  # W1, b1, W2, b2, W3, b3 (cycled on the ResNet)
NEW_PRIOR = (0.7, 1.3, 2.2, 0.9, 0.4, 1.7)  # for kron_reeval
LL_PRIOR = 2.0  # last_layer_fit: one precision shared by W3 and b3
N_TEST = 1000  # glm_predictive*: test inputs (--quick: N_TEST_QUICK)
N_TEST_QUICK = 100
AGREEMENT_NATS = 1e-3
#: the agreement of a log marginal likelihood is max(AGREEMENT_NATS, this x |reference|): the
#: float32 rounding of a large value (a ulp of the ResNet's -3652 nats is 2.4e-4; laplace-torch
#: sums its 77,706 log-eigenvalues in float32 and lands 2.4e-3 nats off)
AGREEMENT_RELATIVE = 1e-6
AGREEMENT_PROB = 1e-4  # glm_predictive*: largest difference of a predictive probability
SELF_CHECK_NATS = 1e-6  # ours in float64 against the brute-force reference
REPEATS_MIN = 3  # timed calls per method at least (full run)
MARGLIK_TASKS = ("kron_marglik", "full_marglik", "kron_reeval")
#: the tasks of ella's predictive API (issue 17)
PREDICTIVE_TASKS = ("glm_predictive", "glm_predictive_full", "last_layer_fit")
TASKS = ("gradient", *MARGLIK_TASKS, *PREDICTIVE_TASKS)
#: the tasks run on the ResNet (every task runs on the MLP)
RESNET_TASKS = ("gradient", "kron_marglik")
KFAC_CHUNK = 32  # samples per chunk of the explicit KFAC reference
#: task -> ours' median_s / fastest laplace-torch backend's median_s must be <= this
TARGETS = {
    "kron_marglik": 0.5,
    "full_marglik": 0.8,
    "kron_reeval": 1.0,
    "glm_predictive": 1.0,
    "glm_predictive_full": 1.0,
    "last_layer_fit": 1.0,
}

#: laplace-torch GGN backends: name -> (module of laplace.curvature, class, module it needs)
BACKENDS = {
    "backpack": ("laplace.curvature.backpack", "BackPackGGN", "backpack"),
    "asdl": ("laplace.curvature.asdl", "AsdlGGN", "asdl"),
    "curvlinops": ("laplace.curvature.curvlinops", "CurvlinopsGGN", "curvlinops"),
    "asdfghjkl": ("laplace.curvature.asdfghjkl", "AsdfghjklGGN", "asdfghjkl"),
}
#: distributions whose versions the JSON records
DISTRIBUTIONS = {
    "laplace": "laplace-torch",
    "backpack": "backpack-for-pytorch",
    "asdl": "asdfghjkl",
    "curvlinops": "curvlinops-for-pytorch",
}

# BackPACK and ASDL register full backward hooks; torch warns about them on every call.
warnings.filterwarnings("ignore", message=".*backward hook.*")
warnings.filterwarnings("ignore", message=".*non-full backward hook.*")


def discover_backends() -> dict[str, tuple[str, str, str]]:
    """:data:`BACKENDS`, plus any other ``*GGN`` class that ``laplace.curvature`` exports."""
    backends = dict(BACKENDS)
    try:
        curvature = importlib.import_module("laplace.curvature")
    except Exception:  # laplace-torch missing or broken: its rows say so
        return backends
    known = {cls for _, cls, _ in backends.values()}
    for name in getattr(curvature, "__all__", []):
        if name.endswith("GGN") and name not in known and name != "GGNInterface":
            module = getattr(curvature, name).__module__
            backends[name[: -len("GGN")].lower()] = (module, name, module.split(".")[0])
    return backends


def precisions(values: Sequence[float], dtype: torch.dtype, device) -> Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def prior_for(model: nn.Module) -> tuple[float, ...]:
    """Per-tensor prior precisions: :data:`PRIOR` cycled over the model's parameter tensors
    (exactly PRIOR for the MLP's six)."""
    return tuple(PRIOR[i % len(PRIOR)] for i, _ in enumerate(model.parameters()))


def tasks_for(kind: str) -> tuple[str, ...]:
    return TASKS if kind == "mlp" else RESNET_TASKS


# --------------------------------------------------------------------------------------------
# the float64 brute-force reference (no ella; of symdisc only the dense twins of
# symdisc.curvature.reference)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Float64 values per structure, and the kron gradient in the new precisions; with the
    predictive tasks, the GLM probit probabilities (N_test, C) per structure and the
    last-layer kron marginal likelihood."""

    kron: float
    full: float | None = None  # MLP only, as everything below
    kron_new: float | None = None
    kron_new_grad: list[float] | None = None
    glm: dict[str, Tensor] | None = field(default=None, repr=False)  # kept off the log
    last_layer: float | None = None

    def expected(self, task: str) -> float | Tensor | None:
        """The reference value of ``task``'s output (None for ``gradient``: the unit)."""
        if task == "gradient":
            return None
        if task.startswith("glm_predictive"):
            assert self.glm is not None
            return self.glm["full" if task.endswith("_full") else "kron"]
        if task == "last_layer_fit":
            assert self.last_layer is not None
            return self.last_layer
        return {"kron_marglik": self.kron, "full_marglik": self.full}.get(task, self.kron_new)


def test_inputs(wl: Workload) -> Tensor:
    """The glm_predictive tasks' test inputs (N_TEST, d_in), standard normal, seeded by the
    workload's seed (drawn in float32, cast to the workload's dtype)."""
    n = N_TEST_QUICK if wl.X.shape[0] < 1000 else N_TEST
    g = torch.Generator().manual_seed(wl.seed + 1)
    return torch.randn(n, wl.X.shape[1], generator=g).to(wl.X.device, wl.X.dtype)


def _log_lik_and_prior(model: nn.Sequential, X: Tensor, y: Tensor, delta: Tensor) -> Tensor:
    """``log p(D | theta*) - 1/2 sum_g delta_g ||theta_g||^2 + 1/2 sum_g P_g log delta_g``."""
    with torch.no_grad():
        log_lik = -nn.functional.cross_entropy(model(X), y, reduction="sum")
    params = [p.detach() for p in model.parameters()]
    scatter = sum(d * p.pow(2).sum() for d, p in zip(delta, params))
    log_det_prior = sum(p.numel() * torch.log(d) for d, p in zip(delta, params))
    return log_lik - 0.5 * scatter + 0.5 * log_det_prior


def _output_hessians(outputs: Tensor) -> Tensor:
    """(N, C, C) Hessians ``diag(p) - p p^T`` of the summed cross-entropy in the logits."""
    p = torch.softmax(outputs, dim=-1)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def _per_tensor_delta(model: nn.Module, delta: Tensor) -> Tensor:
    return torch.cat([d.expand(p.numel()) for d, p in zip(delta, model.parameters())])


def brute_ggn(model: nn.Sequential, X: Tensor) -> Tensor:
    """Dense GGN (P, P) from per-sample ``torch.func`` Jacobians
    (:func:`symdisc.curvature.reference.dense_ggn`)."""

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(model, p, (x,))

    params = dict(model.named_parameters())
    return dense_ggn(f, params, X, _output_hessians(model(X).detach()))


def brute_full(model: nn.Sequential, X: Tensor, y: Tensor, delta: Tensor) -> Tensor:
    """Dense GGN (:func:`brute_ggn`) plus diag(delta), slogdet."""
    ggn = brute_ggn(model, X)
    sign, log_det = torch.linalg.slogdet(ggn + torch.diag(_per_tensor_delta(model, delta)))
    if sign <= 0:
        raise AssertionError("the full posterior precision is not positive definite")
    return _log_lik_and_prior(model, X, y, delta) - 0.5 * log_det


def brute_kron_blocks(model: nn.Sequential, X: Tensor) -> list[Tensor]:
    """Explicit dense KFAC blocks, one per parameter tensor, in parameter order.

    For Linear layer l with input x_n and pre-activation s_n: ``A = mean_n [x_n; 1][x_n; 1]^T``,
    ``G = sum_n J_n^T H_n J_n`` with ``J_n = d f_n / d s_n`` (``torch.func.jacrev`` of the rest
    of the network); weight block ``kron(G, A[:-1, :-1])``, bias block ``A[-1, -1] G``.
    """
    layers = list(model)
    H = _output_hessians(model(X).detach())
    blocks: list[Tensor] = []
    h = X
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Linear):
            h = layer(h)
            continue
        a = torch.cat([h, torch.ones_like(h[:, :1])], dim=1).detach()
        A = a.T @ a / a.shape[0]
        s = layer(h).detach()
        tail = nn.Sequential(*layers[i + 1 :])
        J = torch.func.vmap(torch.func.jacrev(lambda v: tail(v[None])[0]))(s)  # (N, C, d_out)
        G = torch.einsum("nca,ncd,ndb->ab", J, H, J)
        blocks += [torch.kron(G.contiguous(), A[:-1, :-1].contiguous()), A[-1, -1] * G]
        h = s
    return blocks


def brute_kron(blocks: list[Tensor], model: nn.Sequential, X, y, delta: Tensor) -> Tensor:
    """Block-diagonal dense KFAC plus diag(delta), slogdet; differentiable in delta."""
    dense = torch.block_diag(*blocks)
    sign, log_det = torch.linalg.slogdet(dense + torch.diag(_per_tensor_delta(model, delta)))
    if sign <= 0:
        raise AssertionError("the kron posterior precision is not positive definite")
    return _log_lik_and_prior(model, X, y, delta) - 0.5 * log_det


def brute_glm(model: nn.Sequential, Xt: Tensor, precision: Tensor) -> Tensor:
    """GLM probit probabilities (N_test, C): ``softmax(f / sqrt(1 + pi/8 diag(J S J^T)))`` with
    ``S = precision^-1`` (dense inverse) and per-sample Jacobians J by ``torch.func.jacrev``."""

    def f(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(model, p, (x,))

    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = torch.func.jacrev(f)(params, Xt)
    J = torch.cat([j.reshape(*j.shape[:2], -1) for j in jac.values()], dim=2)  # (M, C, P)
    var = torch.einsum("mcp,pq,mcq->mc", J, torch.linalg.inv(precision), J)
    return torch.softmax(f(params, Xt).detach() / torch.sqrt(1 + math.pi / 8 * var), dim=-1)


def brute_last_layer(blocks: list[Tensor], model: nn.Sequential, X: Tensor, y: Tensor) -> float:
    """Last-layer kron marginal likelihood: the last two blocks (W3, b3), precision LL_PRIOR,
    the other weights at their MAP (neither prior nor log-determinant)."""
    with torch.no_grad():
        log_lik = -nn.functional.cross_entropy(model(X), y, reduction="sum")
    head = [p.detach() for p in list(model.parameters())[-2:]]
    dense = torch.block_diag(*blocks[-2:])
    size = dense.shape[0]
    eye = torch.eye(size, dtype=dense.dtype, device=dense.device)
    _, log_det = torch.linalg.slogdet(dense + LL_PRIOR * eye)
    scatter = sum(p.pow(2).sum() for p in head)
    value = log_lik - 0.5 * LL_PRIOR * scatter + 0.5 * size * math.log(LL_PRIOR) - 0.5 * log_det
    return float(value)


def compute_reference(wl64: Workload) -> tuple[Reference, dict[str, float]]:
    """The brute-force reference, and how far ours in float64 is from it (nats)."""
    m, X, y = wl64.model, wl64.X, wl64.y
    dev = X.device
    delta = precisions(PRIOR, torch.float64, dev)
    blocks = brute_kron_blocks(m, X)
    kron = brute_kron(blocks, m, X, y, delta)
    new = precisions(NEW_PRIOR, torch.float64, dev).requires_grad_(True)
    kron_new = brute_kron(blocks, m, X, y, new)
    (grad,) = torch.autograd.grad(kron_new, new)
    full = brute_full(m, X, y, delta)
    Xt = test_inputs(wl64)
    diag = torch.diag(_per_tensor_delta(m, delta))
    glm = {
        "kron": brute_glm(m, Xt, torch.block_diag(*blocks) + diag),
        "full": brute_glm(m, Xt, brute_ggn(m, X) + diag),
    }
    last_layer = brute_last_layer(blocks, m, X, y)
    ref = Reference(
        kron.item(), full.item(), kron_new.detach().item(), grad.tolist(), glm, last_layer
    )

    checks = {}
    for structure, value in (("kron", ref.kron), ("full", ref.full)):
        la = Laplace(m, "classification", structure, per_tensor=True).fit([(X, y)])
        ours = la.log_marginal_likelihood(dict(zip(la.groups, delta)))
        checks[f"ours64_{structure}_abs_error"] = abs(ours.item() - value)
    la = Laplace(m, "classification", "kron", per_tensor=True).fit([(X, y)])
    new64 = precisions(NEW_PRIOR, torch.float64, dev).requires_grad_(True)
    value = la.log_marginal_likelihood(dict(zip(la.groups, new64)))
    (g64,) = torch.autograd.grad(value, new64)
    checks["ours64_kron_reeval_abs_error"] = abs(value.item() - ref.kron_new)
    checks["ours64_kron_reeval_grad_error"] = float((g64 - grad).abs().max())
    for structure in ("kron", "full"):
        state = _ours_fitted_glm(structure)(wl64)
        probs, _ = _ours_glm(state)
        task = "glm_predictive" + ("_full" if structure == "full" else "")
        error = float((probs - ref.expected(task)).abs().max())
        checks[f"ours64_glm_{structure}_abs_error"] = error
    value, _ = _ours_last_layer(_ours_prepare(wl64))
    checks["ours64_last_layer_abs_error"] = abs(float(value) - ref.last_layer)
    return ref, checks


def compute_reference_resnet(wl64: Workload) -> tuple[Reference, dict[str, float]]:
    """The ResNet's kron reference from the explicit float64 factors (module docstring), and
    how far ours in float64 is from it (nats)."""
    m, X, y = wl64.model, wl64.X, wl64.y
    delta = precisions(prior_for(m), torch.float64, X.device)
    factors = explicit_kfac(m, X, KFAC_CHUNK)
    log_det = torch.zeros((), dtype=torch.float64)
    tensors = iter(delta)
    for A, G in factors.values():
        g = torch.linalg.eigvalsh(G * X.shape[0]).cpu()  # the summed loss
        a = torch.linalg.eigvalsh(A[:-1, :-1]).cpu()
        d_weight, d_bias = float(next(tensors)), float(next(tensors))
        log_det = log_det + torch.log((g[:, None] * a[None, :]).clamp_min(0) + d_weight).sum()
        log_det = log_det + torch.log(g.clamp_min(0) * float(A[-1, -1]) + d_bias).sum()
    kron = float(_log_lik_and_prior(m, X, y, delta).cpu() - 0.5 * log_det)
    la = Laplace(m, "classification", "kron", per_tensor=True).fit([(X, y)])
    ours = la.log_marginal_likelihood(dict(zip(la.groups, delta)))
    return Reference(kron), {"ours64_kron_abs_error": abs(ours.item() - kron)}


# --------------------------------------------------------------------------------------------
# methods: `prepare` is untimed, `run` is timed and returns (value, gradient or None)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    task: str
    name: str
    prepare: Callable[[Workload], Any]
    run: Callable[[Any], tuple[Tensor, Tensor | None]]
    peers: tuple[str, ...] = ()  # modules a peer needs (imported before any timing)


def _gradient(wl: Workload) -> tuple[Tensor, None]:
    """One full-batch gradient of the mean cross-entropy (plain ``torch.autograd``): the unit."""
    params = [p for p in wl.model.parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(wl.model(wl.X), wl.y)
    torch.autograd.grad(loss, params)
    return loss.detach(), None


class _OneBatch:
    """What laplace-torch's ``fit`` reads from a loader: iteration and ``len(.dataset)``."""

    def __init__(self, X: Tensor, y: Tensor) -> None:
        self.dataset, self._batches = X, [(X, y)]

    def __iter__(self):
        return iter(self._batches)


def _ours_prepare(wl: Workload) -> tuple[Workload, nn.Module]:
    return wl, copy.deepcopy(wl.model)


def _ours_marglik(structure: str) -> Callable[[Any], tuple[Tensor, None]]:
    def run(state: tuple[Workload, nn.Module]) -> tuple[Tensor, None]:
        wl, model = state
        la = Laplace(model, "classification", structure, per_tensor=True).fit([(wl.X, wl.y)])
        delta = precisions(prior_for(model), wl.X.dtype, wl.X.device)
        return la.log_marginal_likelihood(dict(zip(la.groups, delta))).detach(), None

    return run


def _ours_fitted(wl: Workload) -> tuple[Workload, Laplace]:
    model = copy.deepcopy(wl.model)
    return wl, Laplace(model, "classification", "kron", per_tensor=True).fit([(wl.X, wl.y)])


def _ours_reeval(state: tuple[Workload, Laplace]) -> tuple[Tensor, Tensor]:
    wl, la = state
    delta = precisions(NEW_PRIOR, wl.X.dtype, wl.X.device).requires_grad_(True)
    value = la.log_marginal_likelihood(dict(zip(la.groups, delta)))
    value.backward()
    return value.detach(), delta.grad


def _backend_class(backend: str) -> type:
    module, cls, _ = discover_backends()[backend]
    return getattr(importlib.import_module(module), cls)


def _peer_laplace(wl: Workload, model: nn.Module, structure: str, backend: str) -> Any:
    from laplace import Laplace as PeerLaplace

    return PeerLaplace(
        model,
        "classification",
        subset_of_weights="all",
        hessian_structure=structure,
        backend=_backend_class(backend),
        prior_precision=precisions(prior_for(model), wl.X.dtype, wl.X.device),
    )


def _peer_prepare(wl: Workload) -> tuple[Workload, nn.Module]:
    return wl, copy.deepcopy(wl.model)  # BackPACK extends the modules it is given


def _peer_marglik(structure: str, backend: str) -> Callable[[Any], tuple[Tensor, None]]:
    def run(state: tuple[Workload, nn.Module]) -> tuple[Tensor, None]:
        wl, model = state
        la = _peer_laplace(wl, model, structure, backend)
        la.fit(_OneBatch(wl.X, wl.y))
        delta = precisions(prior_for(model), wl.X.dtype, wl.X.device)
        return la.log_marginal_likelihood(delta).detach(), None

    return run


def _peer_fitted(backend: str) -> Callable[[Workload], Any]:
    def prepare(wl: Workload) -> tuple[Workload, Any]:
        la = _peer_laplace(wl, copy.deepcopy(wl.model), "kron", backend)
        la.fit(_OneBatch(wl.X, wl.y))
        return wl, la

    return prepare


def _peer_reeval(state: tuple[Workload, Any]) -> tuple[Tensor, Tensor]:
    wl, la = state
    delta = precisions(NEW_PRIOR, wl.X.dtype, wl.X.device).requires_grad_(True)
    value = la.log_marginal_likelihood(delta)
    value.backward()
    return value.detach(), delta.grad


def _ours_fitted_glm(structure: str) -> Callable[[Workload], Any]:
    def prepare(wl: Workload) -> tuple[Laplace, dict[str, Tensor], Tensor]:
        model = copy.deepcopy(wl.model)
        la = Laplace(model, "classification", structure, per_tensor=True).fit([(wl.X, wl.y)])
        delta = precisions(PRIOR, wl.X.dtype, wl.X.device)
        return la, dict(zip(la.groups, delta)), test_inputs(wl)

    return prepare


def _ours_glm(state: tuple[Laplace, dict[str, Tensor], Tensor]) -> tuple[Tensor, None]:
    la, prior, Xt = state
    return la.predictive(Xt, prior, method="glm", link="probit").detach(), None


def _ours_last_layer(state: tuple[Workload, nn.Module]) -> tuple[Tensor, None]:
    wl, model = state
    la = Laplace(model, "classification", "kron", subset="last_layer", per_tensor=True)
    la.fit([(wl.X, wl.y)])
    return la.log_marginal_likelihood(LL_PRIOR).detach(), None


def _peer_fitted_glm(structure: str, backend: str) -> Callable[[Workload], Any]:
    def prepare(wl: Workload) -> tuple[Any, Tensor]:
        la = _peer_laplace(wl, copy.deepcopy(wl.model), structure, backend)
        la.fit(_OneBatch(wl.X, wl.y))
        return la, test_inputs(wl)

    return prepare


def _peer_glm(state: tuple[Any, Tensor]) -> tuple[Tensor, None]:
    la, Xt = state
    return la(Xt, pred_type="glm", link_approx="probit").detach(), None


def _peer_last_layer(backend: str) -> Callable[[Any], tuple[Tensor, None]]:
    def run(state: tuple[Workload, nn.Module]) -> tuple[Tensor, None]:
        from laplace import Laplace as PeerLaplace

        wl, model = state
        la = PeerLaplace(
            model,
            "classification",
            subset_of_weights="last_layer",
            hessian_structure="kron",
            backend=_backend_class(backend),
            prior_precision=LL_PRIOR,
        )
        la.fit(_OneBatch(wl.X, wl.y))
        return la.log_marginal_likelihood().detach(), None

    return run


def build_methods() -> list[Method]:
    methods = [
        Method("gradient", "torch_autograd", lambda wl: wl, _gradient),
        Method("kron_marglik", "ours", _ours_prepare, _ours_marglik("kron")),
        Method("full_marglik", "ours", _ours_prepare, _ours_marglik("full")),
        Method("kron_reeval", "ours", _ours_fitted, _ours_reeval),
        Method("glm_predictive", "ours", _ours_fitted_glm("kron"), _ours_glm),
        Method("glm_predictive_full", "ours", _ours_fitted_glm("full"), _ours_glm),
        Method("last_layer_fit", "ours", _ours_prepare, _ours_last_layer),
    ]
    for backend, (_, _, needs) in discover_backends().items():
        peers = ("laplace", needs)
        name = f"laplace_{backend}"
        methods += [
            Method("kron_marglik", name, _peer_prepare, _peer_marglik("kron", backend), peers),
            Method("full_marglik", name, _peer_prepare, _peer_marglik("full", backend), peers),
            Method("kron_reeval", name, _peer_fitted(backend), _peer_reeval, peers),
            Method("glm_predictive", name, _peer_fitted_glm("kron", backend), _peer_glm, peers),
            Method(
                "glm_predictive_full", name, _peer_fitted_glm("full", backend), _peer_glm, peers
            ),
            Method("last_layer_fit", name, _peer_prepare, _peer_last_layer(backend), peers),
        ]
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted([m for m in methods if m.task in order], key=lambda m: order[m.task])


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def _timed(method: Method, state: Any, device: torch.device) -> tuple[Any, float, float]:
    return timed(lambda: method.run(state), device)


def repeats_for(first_s: float, quick: bool, base: int) -> int:
    """1 on --quick; else enough calls for about 2 s per method, between ``base`` and 50."""
    if quick:
        return 1
    return max(base, min(50, math.ceil(2.0 / max(first_s, 1e-6))))


def bench_task(
    task: str, methods: list[Method], wl: Workload, ref: Reference, quick: bool
) -> list[Row]:
    """Warm every method of a task once, then let them take turns at the timed calls."""
    rows: dict[str, Row] = {}
    states: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    first: dict[str, float] = {}
    device = wl.X.device
    for method in methods:
        row: Row = {"workload": wl.kind, "task": task, "method": method.name}
        rows[method.name] = row
        unavailable = peers_unavailable(method.peers)
        if unavailable is not None:
            row["error"] = unavailable
            continue
        try:
            states[method.name] = method.prepare(wl)
            outputs[method.name], first[method.name], _ = _timed(
                method, states[method.name], device
            )
        except Exception as exc:  # a failing method is a result, recorded in its row
            row["error"] = f"{type(exc).__name__}: {exc}".strip()
            say(f"{task}/{method.name} failed: {row['error']}")
            states.pop(method.name, None)
    live = [m for m in methods if m.name in states]
    if not live:
        return list(rows.values())
    n = repeats_for(max(first.values()), quick, REPEATS_MIN)
    wall: dict[str, list[float]] = {m.name: [] for m in live}
    cpu: dict[str, list[float]] = {m.name: [] for m in live}
    for _ in range(n):
        for method in live:
            try:
                out, w, c = _timed(method, states[method.name], device)
            except Exception as exc:
                rows[method.name]["error"] = f"{type(exc).__name__}: {exc}".strip()
                continue
            outputs[method.name] = out
            wall[method.name].append(w)
            cpu[method.name].append(c)
    for method in live:
        row = rows[method.name]
        if "error" in row:
            continue
        value, grad = outputs[method.name]
        row["median_s"] = statistics.median(wall[method.name])
        row["runs_s"] = wall[method.name]
        row["cpu_median_s"] = statistics.median(cpu[method.name])
        row["cpu_runs_s"] = cpu[method.name]
        expected = ref.expected(task)
        if expected is None:  # the gradient: the unit, no answer to check
            continue
        if isinstance(expected, Tensor):  # probabilities: the largest difference
            row["abs_error"] = float((value.double().cpu() - expected.cpu()).abs().max())
        else:
            row["value"] = float(value)
            row["abs_error"] = abs(float(value) - expected)
        if grad is not None:
            row["grad"] = grad.double().cpu().tolist()
            row["grad_error"] = float(
                (grad.double().cpu() - torch.tensor(ref.kron_new_grad)).abs().max()
            )
    return list(rows.values())


# --------------------------------------------------------------------------------------------
# peak memory in a fresh child process
# --------------------------------------------------------------------------------------------


def child_main(args: argparse.Namespace) -> None:
    """Hidden entry point: prepare one method, run its timed part once, print the peak."""
    method = child_method(build_methods(), args.child)
    wl = load_workload(args.workload_file, args.quick, args.seed, args.device)
    unavailable = peers_unavailable(method.peers)  # imports the peers before the baseline
    state = method.prepare(wl) if unavailable is None else None
    print_peak(wl.X.device, lambda: method.run(state), unavailable)


# --------------------------------------------------------------------------------------------
# agreement, targets, report
# --------------------------------------------------------------------------------------------


def evaluate_targets(rows: list[Row], quick: bool) -> list[Row]:
    """Ours' median over the fastest laplace-torch backend's, per workload and task, via
    check_targets."""
    out: list[Row] = []
    for kind in dict.fromkeys(r["workload"] for r in rows):
        kind_rows = [r for r in rows if r["workload"] == kind]
        for entry in evaluate_workload_targets(kind_rows, tasks_for(kind), quick):
            out.append({"workload": kind, **entry})
    return out


def evaluate_workload_targets(rows: list[Row], tasks: Sequence[str], quick: bool) -> list[Row]:
    """:func:`evaluate_targets` on the rows of one workload."""
    scores: dict[str, float] = {}
    out: list[Row] = []
    for task, bound in TARGETS.items():
        if task not in tasks:
            continue
        by_method = {r["method"]: r for r in rows if r["task"] == task}
        ours = by_method.get("ours", {}).get("median_s")
        peers = {
            n: r["median_s"]
            for n, r in by_method.items()
            if n != "ours" and r.get("median_s") is not None and r.get("agrees", True)
        }
        fastest = min(peers, key=peers.get) if peers else None
        entry: Row = {
            "task": task,
            "criterion": f"ours median_s <= {bound:g} x fastest laplace-torch backend's"
            + (f" ({fastest})" if fastest else ""),
            "value": None,
            "pass": None,
            "fastest_peer": fastest,
        }
        if ours is None or fastest is None:
            entry["note"] = "no time for " + ("ours" if ours is None else "any backend")
        else:
            scores[task] = ours / peers[fastest]
            entry["value"] = scores[task]
            cpu_ours = by_method["ours"].get("cpu_median_s")
            cpu_peer = by_method[fastest].get("cpu_median_s")
            if cpu_ours and cpu_peer:
                entry["cpu_ratio"] = cpu_ours / cpu_peer
        out.append(entry)
    verdicts = check_targets(scores, {t: ("<=", TARGETS[t]) for t in scores})
    for entry in out:
        if entry["task"] in verdicts:
            if quick:
                entry["note"] = "ratio not judged on the --quick workload"
            else:
                entry["pass"] = verdicts[entry["task"]]["pass"]
            if "cpu_ratio" in entry:
                note = f"CPU-time ratio {entry['cpu_ratio']:.2f}"
                entry["note"] = f"{entry['note']}; {note}" if entry.get("note") else note
    return out


def markdown(report: dict[str, Any]) -> str:
    env, workloads = report["environment"], report["workload"]
    load = env.get("loadavg_1min", [None, None])
    rows = [
        (
            r["workload"],
            r["task"],
            r["method"],
            fmt(time_s, ".4g"),
            fmt(r.get("gradients"), ".2f"),
            fmt(ratio, ".2f"),
            fmt(r.get("cpu_median_s"), ".4g"),
            fmt(r.get("abs_error"), ".2e"),
            fmt(r.get("grad_error"), ".2e"),
            fmt(r.get("peak_mb"), ".1f"),
            note.replace("|", "/"),
        )
        for r, time_s, ratio, note in against_ours(report["rows"])
    ]
    columns = (
        "workload",
        "task",
        "method",
        "median s",
        "gradients",
        "x ours",
        "CPU median s",
        "abs error",
    )
    described = "; ".join(f"{w['model']}, N={w['N']}, P={w['P']}" for w in workloads.values())
    references = "; ".join(
        f"{kind}: kron {w['reference']['kron']:.6f}"
        + (
            f", full {w['reference']['full']:.6f}, kron at the new precisions "
            f"{w['reference']['kron_new']:.6f}"
            if w["reference"].get("full") is not None
            else ""
        )
        for kind, w in workloads.items()
    )
    return markdown_report(
        report,
        f"Laplace marginal-likelihood benchmark ({described})",
        [
            f"{environment_text(env)}, laplace-torch {env['peers'].get('laplace')}; float32 "
            f"model; per-tensor prior precisions {list(PRIOR)} (cycled over the ResNet's 22 "
            "tensors); median of up to 50 warm runs "
            f"taken in turns; peak memory in a fresh process per row; 1-min load average "
            f"{load[0]} at the start, {load[1]} at the end (a busy machine inflates wall-clock "
            f"times, see the CPU column); total {report['timings']['total_s']:.0f} s.",
            f"Reference (float64, brute force), nats: {references}.",
        ],
        (*columns, "grad error", "peak MB", "note"),
        rows,
        [
            "x ours: the row's median over ours' (above 1: slower than ours). gradients: the "
            "row's median over gradient/torch_autograd's of the same workload. Targets divide "
            "ours' median by the fastest laplace-torch backend's that agrees with the reference. "
            "abs error: nats for the marginal likelihoods, the largest difference of a "
            "probability for glm_predictive*."
        ],
    )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--workload", choices=(*KINDS, "all"), default="all", help="which workloads to run"
    )
    p.add_argument("--child", help=argparse.SUPPRESS)  # task:method, internal
    p.add_argument(WORKLOAD_FILE_FLAG, help=argparse.SUPPRESS)  # internal
    args = p.parse_args(argv)
    check_device(p, args)
    return args


def run_workload(
    kind: str, args: argparse.Namespace, run: BenchmarkRun
) -> tuple[dict[str, Any], list[Row], list[str], set[str]]:
    """Train, reference, time and measure one workload: its description, rows, failures (ours
    off the reference) and how peak memory was measured."""
    with run.phase(f"{kind}_train_s"):
        trained = train_workload(kind, args.quick, args.seed)
        wl = trained.build(args.device)

    with run.phase(f"{kind}_reference_s"):
        wl64 = trained.build(args.device, torch.float64)
        ref, self_check = (compute_reference if kind == "mlp" else compute_reference_resnet)(wl64)
    say(
        f"{kind} reference: {ref} ({run.timings[f'{kind}_reference_s']:.1f} s); ours in "
        f"float64: {self_check}"
    )
    failures = [
        f"{kind}: ours in float64 is {v:.3g} off the brute-force reference ({k})"
        for k, v in self_check.items()
        if v > SELF_CHECK_NATS * max(1.0, abs(ref.kron))
    ]

    tasks = tasks_for(kind)
    rows: list[Row] = []
    with run.phase(f"{kind}_timing_s"):
        methods = build_methods()
        for task in tasks:
            rows += bench_task(task, [m for m in methods if m.task == task], wl, ref, args.quick)
            times = [
                f"{r['method']} {r.get('median_s', 'error')}" for r in rows if r["task"] == task
            ]
            say(f"{kind}/{task}: " + ", ".join(times))

    # Peak memory, each row in a fresh process, one at a time (they would disturb each other);
    # on --quick only ours' rows, side by side as far as the cores allow (a child spends most
    # of its time importing the peers)
    with run.phase(f"{kind}_memory_s"):
        memory_how = measure_peaks(
            __file__,
            [r for r in rows if "error" not in r and (r["method"] == "ours" or not args.quick)],
            trained.record(),
            child_flags(args),
            side_by_side=args.quick,
        )

    agreement = {
        task: AGREEMENT_PROB
        if task.startswith("glm_")
        else max(AGREEMENT_NATS, AGREEMENT_RELATIVE * abs(float(ref.expected(task))))
        for task in tasks
        if task != "gradient"
    }
    failures += mark_agreement(rows, "abs_error", agreement)
    names = [
        n.replace(".weight", " W").replace(".bias", " b") for n, _ in wl.model.named_parameters()
    ]
    described = {
        **trained.describe(),
        "likelihood": "classification (summed cross-entropy), temperature 1",
        "prior_precision": {
            "tensors": ["W1", "b1", "W2", "b2", "W3", "b3"] if kind == "mlp" else names,
            "values": list(prior_for(wl.model)),
            **({"new_values": list(NEW_PRIOR)} if kind == "mlp" else {}),
        },
        "reference": {
            "kron": ref.kron,
            "full": ref.full,
            "kron_new": ref.kron_new,
            "kron_new_grad": ref.kron_new_grad,
            "last_layer": ref.last_layer,
            "n_test": None if ref.glm is None else len(ref.glm["kron"]),
            "how": "float64 brute force: dense GGN / explicit torch.kron blocks, slogdet"
            if kind == "mlp"
            else "float64 explicit KFAC factors (_workloads.explicit_kfac), log-determinants "
            "from the factors' eigenvalues",
            **self_check,
        },
    }
    return described, rows, failures, memory_how


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        child_main(args)
        return 0
    setup(args)
    run = BenchmarkRun(__file__, args.out, args.device)
    kinds = KINDS if args.workload == "all" else (args.workload,)
    workloads, rows, failures, memory_how = run.run_workloads(
        kinds, lambda kind: run_workload(kind, args, run), ("gradient", "torch_autograd")
    )
    targets = evaluate_targets(rows, args.quick)

    report = run.report(
        workload=workloads,
        config={
            "seed": args.seed,
            "quick": args.quick,
            "workloads": list(kinds),
            "dtype": "float32",
            "repeats_min": 1 if args.quick else REPEATS_MIN,
            "agreement_nats": AGREEMENT_NATS,
            "agreement_relative": AGREEMENT_RELATIVE,
            "agreement_prob": AGREEMENT_PROB,
            "tasks": list(TASKS),
            "resnet_tasks": list(RESNET_TASKS),
            "last_layer_prior": LL_PRIOR,
            "targets": TARGETS,
            "peak_memory": sorted(memory_how),
            "peak_memory_rows": "ours only (--quick)" if args.quick else "all",
            "laplace_backends": {k: v[1] for k, v in discover_backends().items()},
        },
        rows=rows,
        targets=targets,
        peers=DISTRIBUTIONS,
    )
    return run.finish(report, markdown(report), failures, "ours disagrees with the reference")


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the discovery objective of paper 002, eq. (4): training steps per second.

One step evaluates the weighted objective (invariance, identity, reg_id, orth and sparse terms,
weights ``Weights.paper()``: eq. (4) as written, the form the references implement) on a fixed
batch of samples, back-propagates it to the action's and the generators' parameters and takes
a fused Adam step (``torch.optim.Adam(fused=True)``, lr 1e-3, the same for every method).
Workload (fixed seed): a batch of 1000 samples from :func:`symdisc.sampler.sample`, an
:class:`~symdisc.actions.MLPAction` with hidden sizes (64, 64, 64) and
:class:`~symdisc.generators.Generators`.

Tasks:

===============  ==========================================================================
``linear_1x1``   ``two_layer("identity")``, d = 2, data-independent action, 1 generator
``sigmoid_3x3``  ``two_layer("sigmoid", m=1, h=3, n=3, k=1)``, d = 3, data-dependent, 2 generators
===============  ==========================================================================

Methods (the two peers are the formulations of the tangent fields people write by hand):

* ``ours``: :func:`symdisc.objective.infinitesimal_objective` as it is: the MLP action's forward
  pass at g = I and its tangents along all generators, written out for the whole batch
  (:meth:`symdisc.actions.MLPAction.tangents`, the same numbers as the vmapped ``torch.func.jvp``
  in g at the identity), with its backward written out as one ``torch.autograd.Function``.
* ``ours_compiled``: the same through ``torch.compile`` (compiled once, at the warm-up; there
  the tangents run as plain tensor operations that Inductor fuses).
* ``loop_autograd``: a Python loop over samples and generators as in public research code: the
  JVP in g by the double-backward trick on one sample at a time, and the loss gradient of each
  sample recomputed with ``torch.autograd.grad`` on every step.
* ``batched_autograd``: the best batched formulation without ``torch.func``: the action's MLP
  (``action.net``) run on the whole batch at once, the double-backward trick once per generator
  over the batch, the loss gradients precomputed once (``Samples.grad``, as ours has them).

All methods start from deep copies of one initialisation and see the same batch. Before any
timing, their objective values and parameter gradients are compared with ours in float32 and,
once more, in float64 (on a float64 copy of the weights and float64 samples); the script exits
with status 1 if they disagree beyond the bounds in ``BOUNDS``. Each method then runs ``warmup``
untimed steps, and the methods of a task take turns at ``repeats`` timed blocks of ``S`` steps
(fewer for the loop), so that load from other processes hits them alike; a block's wall-clock
time over S is one run (``runs_s``; the process CPU time is kept as ``median_cpu_s``), and the
median run gives ``steps_per_s``. ``speedup_vs_ours`` of a row is ours' steps/s over the row's
steps/s (how many times faster ours is). Targets, per task: ours >= 20x loop_autograd and
>= 1.5x batched_autograd (reported, never asserted; not judged on --quick).

Usage::

    python experiments/bench_discovery.py --out DIR [--seed 0] [--device cpu|cuda] [--quick]
        [--threads 1]

writes ``DIR/bench_discovery.json`` and ``DIR/bench_discovery.md`` and prints the table.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from _bench import (
    BenchmarkRun,
    Row,
    environment_text,
    fmt,
    markdown_report,
    ratio_target,
    time_interleaved,
)
from _cli import check_device, parser, setup
from symdisc.actions import MLPAction
from symdisc.generators import Generators
from symdisc.losses import ParamLoss, two_layer
from symdisc.objective import Weights, infinitesimal_objective, orthogonality
from symdisc.sampler import Samples, sample

Objective = Callable[[MLPAction, Tensor, Samples, ParamLoss, Weights], tuple[Tensor, dict]]

HIDDEN = (64, 64, 64)
LR = 1e-3
#: relative error bounds against ours (objective value, and the norm of the gradient difference
#: over the norm of ours' gradient, all parameters flattened together)
BOUNDS = {"float32": 1e-4, "float64": 1e-9}
#: steps/s of ours over the peer's, at least
TARGETS = {"loop_autograd": 20.0, "batched_autograd": 1.5}


@dataclass(frozen=True)
class Task:
    loss: Callable[[], ParamLoss]
    d: int
    k: int
    data_dependent: bool


TASKS = {
    "linear_1x1": Task(lambda: two_layer("identity"), d=2, k=1, data_dependent=False),
    "sigmoid_3x3": Task(
        lambda: two_layer("sigmoid", m=1, h=3, n=3, k=1), d=3, k=2, data_dependent=True
    ),
}
METHODS = ("ours", "ours_compiled", "loop_autograd", "batched_autograd")


@dataclass(frozen=True)
class Config:
    """Sizes of the workload and of the timed blocks."""

    batch: int
    repeats: int
    warmup: int
    steps: int  # steps per timed block, ours and batched_autograd
    loop_steps: int  # steps per timed block, loop_autograd
    loop_warmup: int


#: 7 blocks: on a shared machine the median of 3 moved the ratios by +-0.2 between runs
FULL = Config(batch=1000, repeats=7, warmup=3, steps=20, loop_steps=2, loop_warmup=1)
QUICK = Config(batch=64, repeats=2, warmup=1, steps=3, loop_steps=1, loop_warmup=1)


# --------------------------------------------------------------------------------------------
# the three formulations of eq. (4)
# --------------------------------------------------------------------------------------------


def _weighted(terms: dict[str, Tensor], weights: Weights) -> Tensor:
    gammas = weights.as_dict()
    return sum(gammas[name] * value for name, value in terms.items())


def ours(action: MLPAction, h: Tensor, batch: Samples, loss: ParamLoss, weights: Weights):
    return infinitesimal_objective(action, h, batch, weights)


_compiled_objective = torch.compile(infinitesimal_objective)


def ours_compiled(action: MLPAction, h: Tensor, batch: Samples, loss: ParamLoss, weights: Weights):
    """Ours through ``torch.compile`` (``TrainConfig(compile=True)``); compiled at the warm-up."""
    return _compiled_objective(action, h, batch, weights)


def loop_autograd(action: MLPAction, h: Tensor, batch: Samples, loss: ParamLoss, weights: Weights):
    """One sample and one generator at a time, JVPs by double backward, gradients recomputed."""
    eye = torch.eye(action.d, dtype=h.dtype, device=h.device)
    inv, ident, reg = [], [], []
    for i in range(batch.theta.shape[0]):
        theta, X, Y = batch.theta[i], batch.X[i], batch.Y[i]
        t = theta.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss.flat(t, X, Y), t)
        for j in range(h.shape[0]):
            g = eye.clone().requires_grad_(True)
            out = action(g, theta, X)
            if j == 0:  # g = I: the identity residual comes with the forward pass
                ident.append((out - theta).norm())
            u = torch.zeros_like(out, requires_grad=True)
            (w,) = torch.autograd.grad(out, g, grad_outputs=u, create_graph=True)
            (v,) = torch.autograd.grad((w * h[j]).sum(), u, create_graph=True)
            inv.append((grad * v).sum().abs())
            reg.append((weights.beta - v.norm()).abs())
    terms = {
        "invariance": torch.stack(inv).mean(),
        "identity": torch.stack(ident).mean(),
        "reg_id": torch.stack(reg).mean(),
        "orth": orthogonality(h),
        "sparse": h.abs().sum(),
    }
    return _weighted(terms, weights), terms


def batched_autograd(
    action: MLPAction, h: Tensor, batch: Samples, loss: ParamLoss, weights: Weights
):
    """The action's MLP on the whole batch, one double backward per generator."""
    B, d = batch.theta.shape[0], action.d
    eye = torch.eye(d, dtype=h.dtype, device=h.device)
    g = eye.expand(B, d, d).clone().requires_grad_(True)
    parts = [(g - eye).reshape(B, -1), batch.theta]
    if action.data_dependent:
        parts.append(batch.X.reshape(B, -1))
    out = batch.theta + action.net(torch.cat(parts, dim=1))  # (B, P), at g = I
    u = torch.zeros_like(out, requires_grad=True)
    (w,) = torch.autograd.grad(out, g, grad_outputs=u, create_graph=True)  # (B, d, d)
    v = torch.stack(
        [torch.autograd.grad((w * h[j]).sum(), u, create_graph=True)[0] for j in range(len(h))],
        dim=1,
    )  # (B, k, P)
    terms = {
        "invariance": (batch.grad[:, None, :] * v).sum(-1).abs().mean(),
        "identity": (out - batch.theta).norm(dim=-1).mean(),
        "reg_id": (weights.beta - v.norm(dim=-1)).abs().mean(),
        "orth": orthogonality(h),
        "sparse": h.abs().sum(),
    }
    return _weighted(terms, weights), terms


OBJECTIVES: dict[str, Objective] = {
    "ours": ours,
    "ours_compiled": ours_compiled,
    "loop_autograd": loop_autograd,
    "batched_autograd": batched_autograd,
}


# --------------------------------------------------------------------------------------------
# workload, agreement, timing
# --------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """One task's loss, batch and initial weights (every method works on deep copies)."""

    loss: ParamLoss
    batch: Samples
    action: MLPAction
    generators: Generators


def make_setup(task: Task, batch: int, seed: int, device: str, dtype: torch.dtype) -> Setup:
    loss = task.loss()
    samples = sample(loss, batch, seed=seed, dtype=dtype, device=device)
    torch.manual_seed(seed)  # the MLP's initialisation
    action = MLPAction(loss, task.d, HIDDEN, data_dependent=task.data_dependent)
    generators = Generators(task.k, task.d, seed=seed)
    return Setup(loss, samples, action.to(device, dtype), generators.to(device, dtype))


def _copies(s: Setup) -> tuple[MLPAction, Generators, list[Tensor]]:
    action, generators = copy.deepcopy(s.action), copy.deepcopy(s.generators)
    return action, generators, [*action.parameters(), *generators.parameters()]


def objective_and_gradient(method: str, s: Setup, weights: Weights) -> tuple[float, Tensor]:
    """The objective at the initial weights and its gradient (all parameters, flattened)."""
    action, generators, params = _copies(s)
    total, _ = OBJECTIVES[method](action, generators(), s.batch, s.loss, weights)
    grads = torch.autograd.grad(total, params)
    return float(total.detach()), torch.cat([g.reshape(-1) for g in grads]).detach()


def agreement(
    s32: Setup, s64: Setup, weights: Weights, methods: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per method: objective (float32) and relative errors against ours in both precisions."""
    out: dict[str, dict[str, float]] = {}
    for dtype, s in (("float32", s32), ("float64", s64)):
        ref_value, ref_grad = objective_and_gradient("ours", s, weights)
        for method in methods:
            value, grad = (
                (ref_value, ref_grad)
                if method == "ours"
                else objective_and_gradient(method, s, weights)
            )
            rec = out.setdefault(method, {})
            if dtype == "float32":
                rec["objective"] = value
            rec[f"objective_rel_err_{dtype}"] = abs(value - ref_value) / abs(ref_value)
            rec[f"grad_rel_err_{dtype}"] = float((grad - ref_grad).norm() / ref_grad.norm())
    return out


def make_step(method: str, s: Setup, weights: Weights) -> Callable[[], None]:
    """One training step of ``method`` on its own copies of the weights and its own Adam."""
    action, generators, params = _copies(s)
    optimizer = torch.optim.Adam(params, lr=LR, fused=True)  # the same fused Adam for every method
    objective = OBJECTIVES[method]

    def step() -> None:
        total, _ = objective(action, generators(), s.batch, s.loss, weights)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    return step


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def check_agreement(rows: Sequence[Row]) -> list[str]:
    failures = []
    for r in rows:
        for dtype, bound in BOUNDS.items():
            for what in ("objective", "grad"):
                err = r[f"{what}_rel_err_{dtype}"]
                if not err <= bound:  # NaN fails too
                    failures.append(
                        f"{r['task']}/{r['method']}: {what} rel. error {err:.3g} > {bound:g} "
                        f"({dtype})"
                    )
    return failures


def evaluate_targets(rows: Sequence[Row], quick: bool) -> list[Row]:
    out = []
    for task in TASKS:
        by_method = {r["method"]: r for r in rows if r["task"] == task}
        mines = [m for m in ("ours", "ours_compiled") if m in by_method]
        for (peer, factor), mine in itertools.product(TARGETS.items(), mines):
            out.append(
                ratio_target(
                    task,
                    f"{mine} >= {factor:g}x {peer}",
                    by_method[mine].get("steps_per_s"),
                    by_method[peer].get("steps_per_s"),
                    lambda ratio: ratio >= factor,
                    quick=quick,
                    missing="not timed",
                )
            )
    return out


def markdown(report: dict[str, Any]) -> str:
    env, wl, cfg = report["environment"], report["workload"], report["config"]
    rows = [
        (
            r["task"],
            r["method"],
            fmt(r.get("steps_per_s"), ".3g"),
            fmt(r.get("speedup_vs_ours"), ".2f"),
            format(r["objective"], ".6g"),
        )
        for r in report["rows"]
    ]
    return markdown_report(
        report,
        f"Discovery objective benchmark (batch {wl['batch']}, MLP action "
        f"{'-'.join(map(str, wl['hidden']))})",
        [
            f"{environment_text(env)}; one step = objective + backward + fused Adam; median of "
            f"{cfg['repeats']} blocks of {cfg['steps']} steps ({cfg['loop_steps']} for the loop); "
            f"total {report['timings']['total_s']:.0f} s."
        ],
        ("task", "method", "steps/s", "ratio ours/method", "objective"),
        rows,
    )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    args = p.parse_args(argv)
    check_device(p, args)
    setup(args)
    run = BenchmarkRun(__file__, args.out, args.device)
    config = QUICK if args.quick else FULL
    # compiling takes seconds per task and dtype: the quick run leaves the compiled row out
    methods = [m for m in METHODS if not (args.quick and m == "ours_compiled")]
    device = torch.device(args.device)
    weights = Weights.paper()  # eq. (4) as written: the form the references implement
    rows: list[Row] = []
    workload_tasks: dict[str, Any] = {}

    # answers first: nothing is timed unless the three formulations agree
    setups: dict[str, Setup] = {}
    with run.phase("agreement_s"):
        for name, task in TASKS.items():
            s32 = make_setup(task, config.batch, args.seed, args.device, torch.float32)
            s64 = make_setup(task, config.batch, args.seed, args.device, torch.float64)
            setups[name] = s32
            workload_tasks[name] = {
                "loss": s32.loss.name,
                "P": s32.loss.num_params,
                "d": task.d,
                "k": task.k,
                "data_dependent": task.data_dependent,
                "action_params": sum(p.numel() for p in s32.action.parameters()),
            }
            for method, rec in agreement(s32, s64, weights, methods).items():
                rows.append({"task": name, "method": method, **rec})
    failures = check_agreement(rows)

    if not failures:
        with run.phase("timing_s"):
            for task in TASKS:
                task_rows = [r for r in rows if r["task"] == task]
                blocks = {}
                for row in task_rows:
                    loop = row["method"] == "loop_autograd"
                    blocks[row["method"]] = (
                        make_step(row["method"], setups[task], weights),
                        config.loop_steps if loop else config.steps,
                        config.loop_warmup if loop else config.warmup,
                    )
                runs = time_interleaved(blocks, config.repeats, device)
                for row in task_rows:
                    wall, cpu = runs[row["method"]]["wall"], runs[row["method"]]["cpu"]
                    row["median_s"] = statistics.median(wall)
                    row["runs_s"] = wall
                    row["median_cpu_s"] = statistics.median(cpu)
                    row["steps_per_s"] = 1.0 / row["median_s"]
                    print(
                        f"{task}/{row['method']}: {row['steps_per_s']:.3g} steps/s",
                        file=sys.stderr,
                    )
        ours_rate = {r["task"]: r["steps_per_s"] for r in rows if r["method"] == "ours"}
        for row in rows:
            row["speedup_vs_ours"] = ours_rate[row["task"]] / row["steps_per_s"]

    report = run.report(
        workload={"batch": config.batch, "hidden": list(HIDDEN), "tasks": workload_tasks},
        config={
            "seed": args.seed,
            "quick": args.quick,
            **asdict(config),
            "dtype": "float32",
            "lr": LR,
            "weights": weights.as_dict(),
            "agreement_bounds": BOUNDS,
            "targets": {f"ours / {peer}": f">= {f:g}" for peer, f in TARGETS.items()},
        },
        rows=rows,
        targets=evaluate_targets(rows, args.quick),
    )
    return run.finish(
        report, markdown(report), failures, "the formulations disagree (nothing timed)"
    )


if __name__ == "__main__":
    sys.exit(main())

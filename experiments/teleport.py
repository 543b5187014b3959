"""Symmetry teleportation with a learned action (paper 002; Zhao et al. 2022) on a linear net.

A data-independent action of GL(h) and k generators are learned on the two-layer linear
regression net ``two_layer("identity", m, h, n, k_data)`` with :func:`symdisc.discovery.discover`.
Then, from the same random starts (theta, X, Y ~ N(0, 1), one sample each), in float64:

* ``plain``: gradient descent with a fixed learning rate;
* ``known``: one teleport at step 0 along the known GL(h) action ``W1 -> g W1, W2 -> W2 g^-1``
  with the basis E_ij of gl(h), then the same gradient descent;
* ``learned``: the same with the learned action and generators;
* ``untrained``: a control, the same with an untrained MLP action of the same architecture
  (centred so that g = I fixes theta) and random generators: what the level-set projection and
  the ascent achieve without a learned symmetry.

The teleport (:func:`symdisc.teleport.teleport`) ascends ``--objective``: ``lookahead`` (minus
the log loss after ``--horizon`` gradient-descent steps of the run's learning rate) or
``grad_norm`` (the gradient norm of Zhao et al., which with a fixed learning rate moves to sharp
points where descent diverges), projecting every step back onto the level set unless
``--no-project``. Metrics per case: ``steps_to_threshold`` (mean over starts of the steps until
the loss falls below ``--threshold`` times its starting value; a run that never does counts as
``--max-steps``), its median and the fraction of starts that reached it; for the teleport cases
``loss_change_at_teleport`` (relative, the largest over starts), ``grad_norm_gain`` (mean over
starts of ||grad|| after / before), ``drift_before_projection`` (the largest relative loss change
of one ascent step before its projection: how far the action itself is from a symmetry),
``steps_ratio`` (the case's mean steps over plain's) and, for ``learned``, the issue's targets.
Writes ``results.json`` and ``teleport_losses.png`` (median relative loss curves). Usage::

    python experiments/teleport.py --out results [--seed 0] [--starts 16] [--quick]
"""

from __future__ import annotations

import copy
import logging
import statistics
import time

import torch

from _cli import check_device, parser, run_config, setup
from _results import check_targets, write_results
from symdisc.actions import CentredAction, MLPAction
from symdisc.discovery import discover
from symdisc.known import KnownAction
from symdisc.losses import two_layer
from symdisc.teleport import gradient_descent, teleport
from symdisc.trainer import TrainConfig

CASES = ("plain", "known", "learned", "untrained")
TARGETS = {"steps_ratio": ("<=", 0.8), "loss_change_at_teleport": ("<=", 1e-3)}


def steps_to(losses: torch.Tensor, bound: float, cap: int) -> int:
    """The first step at which ``losses`` is below ``bound`` (``cap`` if never)."""
    below = (losses < bound).nonzero()
    return int(below[0]) if len(below) else cap


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], threads=1)
    p.add_argument("--m", type=int, default=2)
    p.add_argument("--h", type=int, default=2)
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--k-data", type=int, default=2, help="data columns per sample")
    p.add_argument("--k", type=int, default=4, help="learned generators")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--starts", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--threshold", type=float, default=1e-2, help="relative to the start loss")
    p.add_argument("--objective", choices=("lookahead", "grad_norm"), default="lookahead")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--teleport-steps", type=int, default=60)
    p.add_argument("--step-size", type=float, default=0.2)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--no-project", action="store_true", help="no level-set projection")
    args = p.parse_args()
    check_device(p, args)
    setup(args)
    log = logging.getLogger("teleport")
    train_steps = 30 if args.quick else args.train_steps
    n_train, n_test = (512, 256) if args.quick else (10_000, 2_000)
    starts = 3 if args.quick else args.starts
    max_steps = 100 if args.quick else args.max_steps
    horizon, teleport_steps = (10, 5) if args.quick else (args.horizon, args.teleport_steps)
    start = time.perf_counter()

    loss = two_layer("identity", m=args.m, h=args.h, n=args.n, k=args.k_data)
    run = discover(
        loss,
        d=args.h,
        k=args.k,
        data_dependent=False,
        n_train=n_train,
        n_test=n_test,
        config=TrainConfig(steps=train_steps, seed=args.seed),
        seed=args.seed,
        device=args.device,
    )
    timings = {"learn_s": time.perf_counter() - start}
    torch.manual_seed(args.seed + 3)  # the control: the same architecture, not trained
    untrained = MLPAction(loss, args.h, data_dependent=False)
    random_h = torch.randn(args.k, args.h, args.h)
    f64 = torch.float64
    actions = {
        "known": (
            KnownAction(loss, "gl"),
            torch.eye(args.h**2, dtype=f64).reshape(-1, args.h, args.h),
        ),
        "learned": (
            copy.deepcopy(run.discovery.action).cpu().to(f64).requires_grad_(False),
            run.discovery.generators().detach().cpu().to(f64),
        ),
        "untrained": (CentredAction(untrained).to(f64).requires_grad_(False), random_h.to(f64)),
    }
    settings = dict(
        steps=teleport_steps,
        step_size=args.step_size,
        tol=args.tol,
        project=not args.no_project,
        lookahead=args.lr if args.objective == "lookahead" else None,
        horizon=horizon,
    )

    gen = torch.Generator().manual_seed(args.seed + 2)
    steps = {case: [] for case in CASES}
    curves = {case: [] for case in CASES}
    changes = {case: [] for case in CASES[1:]}
    drifts = {case: [] for case in CASES[1:]}
    gains = {case: [] for case in CASES[1:]}
    taken = {case: [] for case in CASES[1:]}
    for _ in range(starts):
        theta = torch.randn(loss.num_params, generator=gen, dtype=f64)
        X = torch.randn(loss.x_shape, generator=gen, dtype=f64)
        Y = torch.randn(loss.y_shape, generator=gen, dtype=f64)
        starts_at = {"plain": theta}
        for case, (action, h) in actions.items():
            result = teleport(loss, action, h, theta, X, Y, **settings)
            starts_at[case] = result.theta
            changes[case].append(result.loss_change)
            drifts[case].append(result.max_drift)
            gains[case].append(result.grad_norm_gain)
            taken[case].append(result.steps_taken)
        for case, at in starts_at.items():
            losses = gradient_descent(loss, at, X, Y, lr=args.lr, steps=max_steps)
            bound = args.threshold * float(loss.flat(theta, X, Y))
            steps[case].append(steps_to(losses, bound, max_steps))
            curves[case].append(losses / losses[0])
    timings["teleport_and_descent_s"] = time.perf_counter() - start - timings["learn_s"]

    plain_mean = statistics.fmean(steps["plain"])
    cases: dict[str, dict] = {}
    for case in CASES:
        scores: dict[str, object] = {
            "steps_to_threshold": statistics.fmean(steps[case]),
            "steps_to_threshold_median": float(statistics.median(steps[case])),
            "reached_fraction": sum(s < max_steps for s in steps[case]) / starts,
            "steps_per_start": steps[case],
        }
        if case != "plain":
            scores |= {
                "loss_change_at_teleport": max(changes[case]),
                "loss_change_at_teleport_mean": statistics.fmean(changes[case]),
                "drift_before_projection": max(drifts[case]),
                "drift_before_projection_median": float(statistics.median(drifts[case])),
                "grad_norm_gain": statistics.fmean(gains[case]),
                "teleport_steps_taken": statistics.fmean(taken[case]),
                "steps_ratio": scores["steps_to_threshold"] / plain_mean,
            }
        if case == "learned":
            scores["targets"] = check_targets(scores, TARGETS)
        cases[case] = scores
        log.info("%s: %s", case, {k: v for k, v in scores.items() if k != "steps_per_start"})
    timings["total_s"] = time.perf_counter() - start

    save_plot(curves, args.threshold, args.out / "teleport_losses.png")
    config = {
        **run_config(args),
        "loss": loss.name,
        "d": args.h,
        "k": args.k,
        "train_steps": train_steps,
        "n_train": n_train,
        "starts": starts,
        "lr": args.lr,
        "max_steps": max_steps,
        "threshold": args.threshold,
        "objective": args.objective,
        "teleport": {k: v for k, v in settings.items()},
        "final_train_record": run.history[-1] if run.history else {},
    }
    log.info("wrote %s", write_results(args.out, "teleport", config, cases, timings))


def save_plot(curves: dict[str, list[torch.Tensor]], threshold: float, path) -> None:
    """Median (over starts) loss relative to the start, per case, on a log scale."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    for case, rows in curves.items():
        median = torch.stack(rows).clamp_max(1e6).median(dim=0).values
        ax.semilogy(median.numpy(), label=case)
    ax.axhline(threshold, color="grey", ls=":", lw=1, label="threshold")
    ax.set_xlabel("gradient-descent step")
    ax.set_ylabel("loss / starting loss (median)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

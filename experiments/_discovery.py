"""The main of the discovery scripts of paper 002, section 4 (``rescaling.py``,
``data_dependent.py``): learn each case's symmetry with :func:`symdisc.discovery.discover`, score
it with :func:`symdisc.metrics.evaluate`, draw its figures and write results.json.

Plumbing, no maths: the learning and the scores are library calls. It stays a helper of the
scripts (not a library function of ``symdisc``) because what it adds is the scripts' part: the
command line, the file names of the figures in the output folder and the config record of
results.json. Only :func:`discovery_experiment` reads the command line; :func:`discovery_job`
takes plain values. :func:`relu_deep` is the one user network that ``rescaling.py`` and
``symmetry_dimension.py`` share.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from _cli import add_grid_flags, grid_options, parser, run_config, setup
from _grid import run_grid
from _results import check_targets, write_results
from symdisc import plot
from symdisc.discovery import discover
from symdisc.known import tangent_basis, unit_generators
from symdisc.losses import ModuleLoss, module_loss
from symdisc.metrics import evaluate, flow_profile
from symdisc.objective import Weights
from symdisc.trainer import TrainConfig


def _batches(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples, each a batch of 8 inputs in R^2 with scalar targets."""
    return torch.randn(n, 8, 2, generator=generator), torch.randn(n, 8, 1, generator=generator)


def _squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).mean()


def relu_deep() -> ModuleLoss:
    """The ``relu_deep`` case: a user's own 2-3-3-1 ReLU ``nn.Sequential`` with biases (seed 0),
    every parameter acted on, through ``module_loss`` with its defaults."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    return module_loss(
        model, _squared_error, _batches, [model[0], model[2], model[4]], name="relu_deep"
    )


def discovery_job(
    name: str,
    spec: dict,
    config: TrainConfig,
    seed: int,
    device: str,
    out: Path,
    data_dependent: bool,
    n_train: int,
    n_test: int,
    targets: dict,
) -> tuple[dict, float]:
    """One job of a discovery grid (``_grid.run_grid``): learn one case's symmetry at ``seed``,
    score it on held-out samples against ``targets`` and draw its figures; returns
    ``(scores, seconds)``.

    ``spec`` holds ``loss`` (a zero-argument builder of the ParamLoss), ``d``, ``k`` and
    optionally ``known`` (a symmetry of :mod:`symdisc.known` to score against) and ``weights``
    (a :class:`Weights` that replaces ``config.weights`` for this case). Writes
    ``<name>_generators.png``, ``<name>_training.png`` and ``<name>_flow.png`` into ``out``.
    """
    tic = time.perf_counter()
    loss = spec["loss"]()
    run = discover(
        loss,
        d=spec["d"],
        k=spec["k"],
        data_dependent=data_dependent,
        n_train=n_train,
        n_test=n_test,
        config=replace(config, weights=spec["weights"]) if "weights" in spec else config,
        seed=seed,
        device=device,
    )
    test = run.test_samples
    basis = known = None
    if spec.get("known"):
        basis = torch.vmap(tangent_basis(loss, spec["known"]))(test.theta, test.X)
        known = unit_generators(loss, spec["known"], spec["d"])
    action, h = run.discovery.action, run.discovery.generators().detach()
    scores = evaluate(loss, action, h, test, known_basis=basis, seed=seed)
    plot.save(plot.generators(h, known=known, title=name), out / f"{name}_generators.png")
    plot.save(plot.history(run.history, title=name), out / f"{name}_training.png")
    profile = flow_profile(loss, action, h[0], test, seed=seed)
    plot.save(plot.flow_losses(profile, title=name), out / f"{name}_flow.png")
    scores["targets"] = check_targets(scores, targets)
    return scores, time.perf_counter() - tic


def discovery_experiment(
    experiment: str,
    doc: str,
    cases: dict,
    targets: dict,
    *,
    data_dependent: bool,
    steps: int,
    weights: Weights | None = None,
) -> None:
    """The main of a discovery script: parse the flags, run every case as one job of the grid
    (the grid flags of ``_cli.add_grid_flags``: here or on a Slurm cluster), write results.json.

        ``cases`` maps a case name to a spec with ``loss`` (a zero-argument builder of the
        ParamLoss), ``d``, ``k`` and optionally ``known``; ``targets`` maps case names to
        :func:`check_targets` targets. ``--quick`` trains 40 steps on 512 samples.
    """
    p = parser(doc.split("\n\n")[0], threads=1)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
    add_grid_flags(p)
    args = p.parse_args()
    setup(args)
    options = grid_options(p, args)
    log = logging.getLogger(experiment)
    steps = 40 if args.quick else args.steps
    n_train, n_test = (512, 256) if args.quick else (10_000, 2_000)
    config = TrainConfig(steps=steps, seed=args.seed, progress=True, weights=weights or Weights())
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = {
        (name, args.seed): (
            name,
            cases[name],
            config,
            args.seed,
            args.device,
            args.out,
            data_dependent,
            n_train,
            n_test,
            targets.get(name, {}),
        )
        for name in args.cases
    }
    done = run_grid(discovery_job, jobs, options, desc=experiment)
    results, timings = {}, {}
    for (name, _), (scores, seconds) in done.items():
        results[name] = scores
        timings[f"{name}_s"] = seconds
        log.info("%s: %s", name, {k: v for k, v in scores.items() if k != "targets"})
    timings["total_s"] = time.perf_counter() - start
    record = {
        **run_config(args),
        "steps": steps,
        "n_train": n_train,
        "n_test": n_test,
        "data_dependent": data_dependent,
        "cases": {
            n: {k: v for k, v in cases[n].items() if k not in ("loss", "weights")}
            | {"loss": cases[n]["loss"]().name}
            | ({"weights": cases[n]["weights"].as_dict()} if "weights" in cases[n] else {})
            for n in args.cases
        },
        "weights": config.weights.as_dict(),
        "lr": config.lr,
        "batch_size": config.batch_size,
    }
    log.info("wrote %s", write_results(args.out, experiment, record, results, timings))

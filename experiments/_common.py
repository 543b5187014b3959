"""What every experiment script shares: arguments, environment record, results.json, logging.

No maths lives here; scripts call the library and use these helpers for their plumbing.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch


def parser(description: str, *, threads: int | None = None) -> argparse.ArgumentParser:
    """An argument parser with the flags every experiment takes (see DESIGN.md).

    ``threads`` is the default of ``--threads`` (None: torch's default). Scripts that train tiny
    networks default to 1: their ops are so small that a second thread only adds
    synchronisation (measured 10x slower with 2 threads on a loaded 2-core machine).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=threads, help="torch threads")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="a run of seconds, for tests")
    return p


def environment(device: str) -> dict[str, object]:
    """Versions and threads, recorded with every result."""
    return {
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
    }


def write_results(out: Path, experiment: str, config: dict, cases: dict, timings: dict) -> Path:
    """Write ``out/results.json`` in the format of DESIGN.md and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    record = {
        "experiment": experiment,
        "config": config,
        "environment": environment(config.get("device", "cpu")),
        "cases": cases,
        "timings": timings,
    }
    path.write_text(json.dumps(record, indent=2))
    return path


def setup(args: argparse.Namespace) -> None:
    """Logging to stderr, and the thread count the arguments ask for."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def check_targets(scores: dict[str, float], targets: dict[str, tuple[str, float]]) -> dict:
    """``{metric: {"want": ">= 0.99", "pass": bool}}`` for the targets an issue sets.

    A target is ``(op, bound)`` with op ``">="`` or ``"<="``, or ``("within", (centre, rel))``
    for ``|value - centre| <= rel * centre``.
    """
    out = {}
    for metric, (op, bound) in targets.items():
        value = scores[metric]
        if op == "within":
            centre, rel = bound
            ok, want = abs(value - centre) <= rel * centre, f"within {rel:.0%} of {centre}"
        else:
            ok, want = (value >= bound if op == ">=" else value <= bound), f"{op} {bound}"
        out[metric] = {"want": want, "pass": bool(ok)}
    return out


def discovery_case(
    name: str, loss, spec: dict, args, config, *, data_dependent: bool, n_train: int, n_test: int
) -> dict[str, float]:
    """Learn one case's symmetry, score it on held-out samples and draw its figures.

    ``spec`` holds ``d``, ``k`` and optionally ``known`` (a symmetry of :mod:`symdisc.known`
    to score against). Writes ``<name>_generators.png``, ``<name>_training.png`` and
    ``<name>_flow.png`` into ``args.out``.
    """
    from symdisc import plot
    from symdisc.discover import discover
    from symdisc.known import tangent_basis
    from symdisc.metrics import evaluate, flow_profile

    run = discover(
        loss,
        d=spec["d"],
        k=spec["k"],
        data_dependent=data_dependent,
        n_train=n_train,
        n_test=n_test,
        config=config,
        seed=args.seed,
        device=args.device,
    )
    test = run.test_samples
    basis = None
    if spec.get("known"):
        basis = torch.vmap(tangent_basis(loss, spec["known"]))(test.theta, test.X)
    action, h = run.discovery.action, run.discovery.generators().detach()
    scores = evaluate(loss, action, h, test, known_basis=basis, seed=args.seed)
    plot.save(plot.generators(h, title=name), args.out / f"{name}_generators.png")
    plot.save(plot.history(run.history, title=name), args.out / f"{name}_training.png")
    profile = flow_profile(loss, action, h[0], test, seed=args.seed)
    plot.save(plot.flow_losses(profile, title=name), args.out / f"{name}_flow.png")
    return scores


def discovery_experiment(
    experiment: str,
    doc: str,
    cases: dict,
    targets: dict,
    *,
    data_dependent: bool,
    steps: int,
    weights=None,
) -> None:
    """The main of a discovery script: parse the flags, run every case, write results.json.

    ``cases`` maps a case name to a spec with ``loss`` (a zero-argument builder of the
    ParamLoss), ``d``, ``k`` and optionally ``known``; ``targets`` maps case names to
    :func:`check_targets` targets. ``--quick`` trains 40 steps on 512 samples.
    """
    from symdisc.objective import Weights
    from symdisc.train import TrainConfig

    p = parser(doc.split("\n\n")[0], threads=1)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
    args = p.parse_args()
    setup(args)
    log = logging.getLogger(experiment)
    steps = 40 if args.quick else args.steps
    n_train, n_test = (512, 256) if args.quick else (10_000, 2_000)
    config = TrainConfig(steps=steps, seed=args.seed, progress=True, weights=weights or Weights())
    args.out.mkdir(parents=True, exist_ok=True)
    results, timings, start = {}, {}, time.perf_counter()
    for name in args.cases:
        spec = cases[name]
        tic = time.perf_counter()
        scores = discovery_case(
            name,
            spec["loss"](),
            spec,
            args,
            config,
            data_dependent=data_dependent,
            n_train=n_train,
            n_test=n_test,
        )
        scores["targets"] = check_targets(scores, targets.get(name, {}))
        results[name] = scores
        timings[f"{name}_s"] = time.perf_counter() - tic
        log.info("%s: %s", name, {k: v for k, v in scores.items() if k != "targets"})
    timings["total_s"] = time.perf_counter() - start
    record = {
        "seed": args.seed,
        "quick": args.quick,
        "device": args.device,
        "threads": args.threads,
        "steps": steps,
        "n_train": n_train,
        "n_test": n_test,
        "data_dependent": data_dependent,
        "cases": {
            n: {k: v for k, v in cases[n].items() if k != "loss"}
            | {"loss": cases[n]["loss"]().name}
            for n in args.cases
        },
        "weights": config.weights.as_dict(),
        "lr": config.lr,
        "batch_size": config.batch_size,
    }
    log.info("wrote %s", write_results(args.out, experiment, record, results, timings))


def fmt(value: object, spec: str) -> str:
    """``format(value, spec)``, or an empty cell for None."""
    return "" if value is None else format(value, spec)


def targets_table(targets: list[dict]) -> list[str]:
    """Markdown lines of a benchmark's target verdicts (task, criterion, value, pass)."""
    lines = ["", "| task | target | value | pass |", "|---|---|---:|---|"]
    for t in targets:
        verdict = {True: "pass", False: "FAIL", None: "-"}[t["pass"]]
        if t.get("note"):
            verdict += f" ({t['note']})"
        lines.append(f"| {t['task']} | {t['criterion']} | {fmt(t['value'], '.3g')} | {verdict} |")
    return lines


def finish_benchmark(
    out: Path, name: str, report: dict, table: str, failures: list[str], what: str
) -> int:
    """Write ``out/<name>.json`` and ``out/<name>.md``, print the table, and return the exit
    status: 1 (with the reasons on stderr) when ``failures`` says the answers disagree."""
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(table)
    print(table)
    if failures:
        print(f"{what}:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0

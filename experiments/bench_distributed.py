"""Benchmark of data-parallel curvature (``symdisc.curvature.distributed``): 1 rank against 2.

Workload: the MLP of ``bench_curvature.py`` (``_workloads.py``: 10-50-50-3 tanh, P = 3253,
N = 2000, mean cross-entropy; ``--quick``: 10-8-8-3, N = 200), float32. With W ranks every rank
holds a contiguous shard of the data (N / W examples) and the same model; the curvature is
combined by ``torch.distributed`` all-reduces (gloo on CPU, NCCL on CUDA).

Tasks (each rank runs the same code on its shard; the time is rank 0's, between barriers):

====================  ==========================================================================
``hvp``               one Hessian-vector product ``H @ v`` of an operator built beforehand
                      (:class:`~symdisc.curvature.distributed.DistributedOperator` of a
                      ``HessianOperator``): the rank's backward pass and one all-reduce
``kfac_factors``      :func:`~symdisc.curvature.distributed.distributed_kfac` (type-2, folded)
``kron_marglik``      ``Laplace(model, "classification", "kron").fit(shard, group=...)`` and
                      the log marginal likelihood at precision 1
``trace_100``         build the operator, Hutchinson with 100 Rademacher probes (seeded)
``top5_eigenvalues``  build the operator, Lanczos for the 5 largest eigenvalues (seeded)
====================  ==========================================================================

Methods: ``1_rank`` and ``2_ranks`` (``<W>_ranks`` under ``torchrun``): a process group of that
size, started by this script (1 rank: this process; more: ``torch.multiprocessing``; each rank
gets ``threads / W`` torch threads), or by ``torchrun`` (the script then measures the world
size it was given).
``rel_error``: the largest difference from one plain process over all the data (no process
group, the same float32 code), relative to the largest entry of that answer.

On this 2-core machine the 2 ranks share the 2 cores that 1 rank uses with 2 threads, so
2 ranks cannot be faster here: the rows measure the overhead of the reductions and the
correctness of the combination, not a speed-up (which needs a device or a machine per rank).
The two methods run in separate process groups one after the other, so they are not
interleaved: the load of the machine can differ between them.

Run: ``python experiments/bench_distributed.py --out DIR`` (``--quick`` in seconds), or
``torchrun --standalone --nproc_per_node=2 experiments/bench_distributed.py --out DIR``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _bench import BenchmarkRun, Row, fmt, markdown_report, say
from _cli import check_device, parser, run_config
from _workloads import Trained, train_workload
from ella.laplace import Laplace
from symdisc.curvature import (
    HessianOperator,
    functional,
    hutchinson,
    kfac,
    lanczos,
    supervised_loss,
)
from symdisc.curvature.distributed import DistributedOperator, distributed_kfac

TASKS = ("hvp", "kfac_factors", "kron_marglik", "trace_100", "top5_eigenvalues")
WORLD_SIZES = (1, 2)


def method_name(world: int) -> str:
    """``1_rank``, ``2_ranks``, ..."""
    return f"{world}_rank" + ("s" if world > 1 else "")


def shard(trained: Trained, rank: int, world: int, device: str) -> tuple[Any, Any, Any]:
    """The model (float32, on ``device``) and this rank's contiguous shard of the data."""
    wl = trained.build(device)
    bounds = torch.linspace(0, wl.X.shape[0], world + 1).round().long().tolist()
    lo, hi = bounds[rank], bounds[rank + 1]
    return wl.model, wl.X[lo:hi], wl.y[lo:hi]


def task_functions(
    model: Any, x: Any, y: Any, group: Any, seed: int
) -> dict[str, Callable[[], torch.Tensor]]:
    """Every task as a function returning its answer (a tensor), on this rank's shard; with
    ``group=False`` the plain single-process computation (the reference)."""
    f, params = functional(model)
    params = {k: v.detach() for k, v in params.items()}
    L = supervised_loss(f, "cross_entropy")
    plain = group is False
    world = None if plain else group

    def operator() -> Any:
        H = HessianOperator(L, params, x, y)
        return H if plain else DistributedOperator(H, n_local=x.shape[0], group=world)

    H = operator()
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(seed)).to(x)

    def kfac_factors() -> torch.Tensor:
        if plain:
            factors = kfac(model, [(x, y)], loss="cross_entropy")
        else:
            factors = distributed_kfac(model, [(x, y)], loss="cross_entropy", group=world)
        return torch.cat([t.reshape(-1) for fa in factors.values() for t in (fa.A, fa.G)])

    def kron_marglik() -> torch.Tensor:
        la = Laplace(model, "classification", "kron")
        la.fit([(x, y)], group=None if plain else (world or dist.group.WORLD))
        return la.log_marginal_likelihood(1.0).detach().reshape(1)

    return {
        "hvp": lambda: H @ v,
        "kfac_factors": kfac_factors,
        "kron_marglik": kron_marglik,
        "trace_100": lambda: hutchinson(operator(), 100, generator=seed).value.reshape(1),
        "top5_eigenvalues": lambda: lanczos(operator(), k=5, generator=seed).eigenvalues,
    }


def measure(
    trained: Trained, rank: int, world: int, device: str, repeats: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """Rank 0's seconds per run of every task, and the answers (collective: every rank calls)."""
    model, x, y = shard(trained, rank, world, device)
    tasks = task_functions(model, x, y, None, seed)
    runs: dict[str, list[float]] = {}
    answers: dict[str, torch.Tensor] = {}
    for name, fn in tasks.items():
        answers[name] = fn().detach().cpu()  # untimed warm-up
        runs[name] = []
        for _ in range(repeats):
            dist.barrier()
            _sync(device)
            tick = time.perf_counter()
            fn()
            _sync(device)
            dist.barrier()
            runs[name].append(time.perf_counter() - tick)
    return runs, answers


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reference(trained: Trained, device: str, seed: int) -> dict[str, torch.Tensor]:
    """The answers of one plain process over all the data."""
    model, x, y = shard(trained, 0, 1, device)
    return {k: fn().detach().cpu() for k, fn in task_functions(model, x, y, False, seed).items()}


def rows_of(world: int, runs: dict[str, list[float]], answers: dict, ref: dict) -> list[Row]:
    rows = []
    for task in TASKS:
        diff = (answers[task] - ref[task]).abs().max() / ref[task].abs().max().clamp_min(1e-30)
        rows.append(
            {
                "task": task,
                "method": method_name(world),
                "median_s": statistics.median(runs[task]),
                "runs_s": runs[task],
                "rel_error": float(diff),
            }
        )
    return rows


def _rank_main(
    rank: int, world: int, init: str, record: str, device: str, threads: int, cfg: dict
) -> None:
    """One rank of a process group started by :func:`main` (in this process for 1 rank, else by
    ``torch.multiprocessing``)."""
    torch.set_num_threads(threads)
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    try:
        trained = torch.load(record, weights_only=False)  # this run's own file
        runs, answers = measure(trained, rank, world, device, cfg["repeats"], cfg["seed"])
        if rank == 0:
            torch.save({"runs": runs, "answers": answers}, cfg["result"])
        dist.barrier()
    finally:
        dist.destroy_process_group()
    if world > 1:  # a spawned rank: its result is written
        _exit_now(0)


def _exit_now(status: int) -> None:
    """End this rank's process without the interpreter's finalisation, where gloo's worker
    threads can abort it (SIGABRT, "terminate called without an active exception", seen in
    about 1 of 15 runs on a loaded machine after every collective had completed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--ranks", default="1,2", help="world sizes to measure, comma-separated (default 1,2)"
    )
    args = p.parse_args(argv)
    check_device(p, args)
    try:
        args.world_sizes = sorted({int(w) for w in args.ranks.split(",")})
    except ValueError:
        p.error(f"--ranks must be comma-separated positive ints, got {args.ranks!r}")
    if not args.world_sizes or min(args.world_sizes) < 1:
        p.error(f"--ranks must be comma-separated positive ints, got {args.ranks!r}")
    return args


def report(run: BenchmarkRun, args: argparse.Namespace, trained: Trained, rows: list[Row],
           threads: dict[int, int], launcher: str) -> int:  # fmt: skip
    failures = [
        f"{r['task']} {r['method']}: rel_error {r['rel_error']:.2g} > 1e-4"
        for r in rows
        if r["rel_error"] > 1e-4
    ]
    record = run.report(
        workload={**trained.describe(), "dtype": "float32", "loss": "mean cross-entropy"},
        config={
            **run_config(args),
            "repeats": args.repeats,
            "world_sizes": sorted(threads),
            "threads_per_rank": {str(w): t for w, t in threads.items()},
            "launcher": launcher,
            "backend": "nccl" if args.device == "cuda" else "gloo",
        },
        rows=rows,
        targets=[],
    )
    cells = [
        (r["task"], r["method"], fmt(r["median_s"], ".4f"), fmt(r["rel_error"], ".1e"))
        for r in rows
    ]
    text = markdown_report(
        record,
        "Data-parallel curvature on torch.distributed",
        [
            f"{record['environment']['device']}, workload {record['workload']['model']}, "
            f"N = {record['workload']['N']}, P = {record['workload']['P']}; "
            f"{args.repeats} timed runs per task; threads per rank {threads}.",
            "On a 2-core machine 2 ranks share the cores of 1 rank: the rows show the cost of the "
            "reductions and that the answers agree, not a speed-up.",
        ],
        ("task", "method", "median_s", "rel_error"),
        cells,
    )
    return run.finish(record, text, failures, "the ranks' answers disagree")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.repeats = 2 if args.quick else 5
    total_threads = args.threads or torch.get_num_threads()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return torchrun_main(args, total_threads)
    run = BenchmarkRun(__file__, args.out, args.device)
    with run.phase("train_s"):
        trained = train_workload("mlp", args.quick, args.seed)
    with run.phase("reference_s"):
        ref = reference(trained, args.device, args.seed)
    rows: list[Row] = []
    threads: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as tmp, run.phase("timing_s"):
        record = str(Path(tmp) / "trained.pt")
        torch.save(trained, record)
        for world in args.world_sizes:
            threads[world] = max(1, total_threads // world)
            result = str(Path(tmp) / f"result{world}.pt")
            cfg = {"repeats": args.repeats, "seed": args.seed, "result": result}
            init = f"tcp://127.0.0.1:{_free_port()}"
            rank_args = (world, init, record, args.device, threads[world], cfg)
            if world == 1:  # a group of one: this process (no start-up of another)
                _rank_main(0, *rank_args)
                torch.set_num_threads(total_threads)
            else:
                mp.spawn(_rank_main, args=rank_args, nprocs=world)
            out = torch.load(result, weights_only=False)
            rows += rows_of(world, out["runs"], out["answers"], ref)
            say(", ".join(f"{r['task']} {r['median_s']:.4f} s" for r in rows[-len(TASKS) :]))
    rows.sort(key=lambda r: (TASKS.index(r["task"]), r["method"]))
    return report(run, args, trained, rows, threads, "torch.multiprocessing")


def torchrun_main(args: argparse.Namespace, total_threads: int) -> int:
    """Under ``torchrun``: this process is one rank of the group torchrun set up; rank 0 writes
    the report of this world size."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    threads = max(1, total_threads // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    torch.set_num_threads(threads)
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    try:
        run = BenchmarkRun(__file__, args.out, args.device) if rank == 0 else None
        trained = train_workload("mlp", args.quick, args.seed)  # the same on every rank
        runs, answers = measure(trained, rank, world, args.device, args.repeats, args.seed)
        status = 0
        if run is not None:
            ref = reference(trained, args.device, args.seed)
            rows = rows_of(world, runs, answers, ref)
            status = report(run, args, trained, rows, {world: threads}, "torchrun")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    _exit_now(status)
    return status  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())

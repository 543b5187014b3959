"""The command line every experiment and benchmark script shares (infrastructure, no paper).

The flags of DESIGN.md (``--out --seed --device --quick``, and ``--threads``), logging and the
thread count, the config entries every results.json starts with, and the hidden flags through
which a benchmark starts a copy of itself as a peak-memory child. Only this module and the
scripts' ``main`` read the argparse namespace; the helpers of the other modules take plain
values.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import torch

from _grid import EXECUTORS, GridOptions


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


def setup(args: argparse.Namespace) -> None:
    """Logging to stderr, and the thread count the arguments ask for."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def run_config(args: argparse.Namespace, seeds: list[int] | None = None) -> dict[str, object]:
    """The entries every results.json config starts with: seed (and ``seeds``, the seeds of a
    multi-seed run, when given), quick, device and threads; ``executor`` for a script with the
    grid flags (:func:`add_grid_flags`)."""
    config: dict[str, object] = {"seed": args.seed}
    if seeds is not None:
        config["seeds"] = seeds
    config |= {"quick": args.quick, "device": args.device, "threads": args.threads}
    if hasattr(args, "executor"):
        config["executor"] = args.executor
    return config


def add_grid_flags(p: argparse.ArgumentParser, *, workers: int = 1) -> None:
    """The flags of a script whose seed x case grid can run on a cluster (``_grid.run_grid``):
    ``--executor {sequential,local,slurm}``, ``--workers`` (jobs at once on this machine;
    default ``workers``), ``--jobs-dir`` (submitit's logs; default OUT/jobs) and the Slurm
    resources of one job: ``--slurm-partition``, ``--slurm-time`` (minutes; also the local
    executor's timeout), ``--slurm-gpus``, ``--slurm-cpus`` (default: --threads or 1) and
    ``--slurm-mem`` (GB)."""
    g = p.add_argument_group(
        "experiment grid", "one job per (case, seed); see experiments/_grid.py"
    )
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="sequential",
        help="sequential: on this machine without submitit; local: submitit's local executor, "
        "one process per job; slurm: one Slurm array task per job",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=workers,
        help="jobs at once on this machine (sequential: worker processes when > 1; local)",
    )
    g.add_argument("--jobs-dir", type=Path, default=None, help="submitit's folder (OUT/jobs)")
    g.add_argument("--slurm-partition", default=None, help="Slurm partition")
    g.add_argument("--slurm-time", type=int, default=60, help="minutes per job")
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job")
    g.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per job")
    g.add_argument("--slurm-mem", type=int, default=None, help="GB of memory per job")


def grid_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> GridOptions:
    """The :class:`_grid.GridOptions` of the grid flags; a usage error for flags that do not
    go together (a count out of range, Slurm flags with another executor, submitit missing)."""
    if args.executor == "slurm" and args.device == "cuda" and args.slurm_gpus < 1:
        p.error("--device cuda with --executor slurm needs --slurm-gpus >= 1")
    if args.executor != "sequential":
        try:
            import submitit  # noqa: F401  (optional: the experiments extra)
        except ImportError:
            p.error(f"--executor {args.executor} needs submitit: pip install submitit")
    if args.executor == "slurm" and shutil.which("srun") is None:
        p.error("--executor slurm: no srun here; run the script on a Slurm login node")
    try:
        return GridOptions(
            executor=args.executor,
            threads=args.threads,
            workers=args.workers,
            jobs_dir=args.jobs_dir or args.out / "jobs",
            slurm_partition=args.slurm_partition,
            slurm_time=args.slurm_time,
            slurm_gpus=args.slurm_gpus,
            slurm_cpus=args.slurm_cpus,
            slurm_mem=args.slurm_mem,
        )
    except ValueError as err:
        flag = str(err).split("`")[1] if "`" in str(err) else ""
        p.error(f"--{flag.replace('_', '-')}: {err}" if flag else str(err))


def check_device(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error when ``--device cuda`` asks for CUDA that is not there (not for
    ``--executor slurm``: the jobs run on the cluster's nodes, not here)."""
    if getattr(args, "executor", None) == "slurm":
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")


def child_flags(args: argparse.Namespace) -> list[str]:
    """The flags a peak-memory child gets from this run: ``--seed``, ``--device``, ``--quick``
    (when set) and ``--threads`` (when the script has it and it is set)."""
    flags = ["--seed", str(args.seed), "--device", args.device]
    flags += ["--quick"] if args.quick else []
    threads = getattr(args, "threads", None)  # bench_curvature has no --threads
    return flags + (["--threads", str(threads)] if threads is not None else [])

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
import sys
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


def setup(args: argparse.Namespace) -> None:
    """Logging to stderr, and the thread count the arguments ask for."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def run_config(args: argparse.Namespace, seeds: list[int] | None = None) -> dict[str, object]:
    """The entries every results.json config starts with: seed (and ``seeds``, the seeds of a
    multi-seed run, when given), quick, device and threads."""
    config: dict[str, object] = {"seed": args.seed}
    if seeds is not None:
        config["seeds"] = seeds
    return config | {"quick": args.quick, "device": args.device, "threads": args.threads}


def check_device(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error when ``--device cuda`` asks for CUDA that is not there."""
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")


def add_child_flags(p: argparse.ArgumentParser) -> None:
    """The hidden flags of a benchmark's peak-memory child: ``--child TASK:METHOD`` and
    ``--workload FILE`` (see :func:`_bench.measure_peaks`)."""
    p.add_argument("--child", help=argparse.SUPPRESS)  # task:method, internal
    p.add_argument("--workload", help=argparse.SUPPRESS)  # internal


def child_flags(args: argparse.Namespace) -> list[str]:
    """The flags a peak-memory child gets from this run: ``--seed``, ``--device``, ``--quick``
    (when set) and ``--threads`` (when the script has it and it is set)."""
    flags = ["--seed", str(args.seed), "--device", args.device]
    flags += ["--quick"] if args.quick else []
    threads = getattr(args, "threads", None)  # bench_curvature has no --threads
    return flags + (["--threads", str(threads)] if threads is not None else [])

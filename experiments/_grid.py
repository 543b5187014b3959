"""The seed x case grids of the experiment scripts, run here or on a cluster (infrastructure, no
paper).

A grid is a mapping ``{key: args}``: one job per key (a ``(case, seed)`` pair, or whatever the
script's unit of work is), computed as ``job(*args)``. :func:`run_grid` runs every job with one
of three executors and returns ``{key: job's return value}`` in the order of the keys given, so
the script aggregates and writes ``results.json`` exactly as it would after a loop:

* ``sequential``: on this machine without submitit; one job after another in this process, or,
  with ``workers > 1``, in that many spawned worker processes;
* ``local``: submitit's local executor, one process per job, at most ``workers`` at once (the
  same code path as Slurm, on this machine: how the cluster mode is tested);
* ``slurm``: submitit's Slurm executor, one array task per job, on ``slurm_partition`` with
  ``slurm_time`` minutes, ``slurm_gpus`` GPUs, ``slurm_cpus`` CPUs and ``slurm_mem`` GB each;
  submitit's logs and pickles go to ``jobs_dir``.

Jobs must be top-level functions of picklable arguments (submitit pickles them with
cloudpickle; a function of the script run as ``__main__`` travels by value, the ``experiments/``
helpers and the packages by reference: the job's process gets ``experiments/`` on its
``PYTHONPATH``), must take every seed as an argument (a job gives the same numbers in any
process and any order), and return plain data (numbers, lists, dicts, tensors). Every job runs
with the ``threads`` torch threads of the run. A job that raises stops the grid: the other jobs
are cancelled and :class:`GridJobError` names the job, its error and, for submitit, its log.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
from tqdm.auto import tqdm

from symdisc.runtime.checks import check_bool, check_choice, check_instance, check_int

EXECUTORS = ("sequential", "local", "slurm")
#: seconds between two looks at the state of submitit's jobs
POLL_S = 0.25
log = logging.getLogger("grid")


class GridJobError(RuntimeError):
    """A job of a grid failed; ``key`` is the job's key and ``log_path`` its submitit log (None
    for the sequential executor)."""

    def __init__(self, key: Hashable, error: str, log_path: Path | None = None) -> None:
        where = f" (log: {log_path})" if log_path is not None else ""
        super().__init__(f"grid job {key!r} failed: {error}{where}")
        self.key, self.error, self.log_path = key, error, log_path


@dataclass(frozen=True)
class GridOptions:
    """Where and how the jobs of a grid run (see the module docstring).

    ``threads``: torch threads of every job (None: torch's default in the job's process);
    ``workers``: jobs at once on this machine (sequential and local executors); ``jobs_dir``:
    submitit's folder (local and slurm; required there); ``slurm_time``: minutes per job (also
    the local executor's timeout); ``slurm_partition``, ``slurm_gpus``, ``slurm_cpus`` (None:
    ``threads`` or 1), ``slurm_mem`` (GB, None: the partition's default): Slurm only.

    Raises:
        TypeError: a count that is not an int (a bool included), a ``jobs_dir`` that is not a
            str or path, or a ``slurm_partition`` that is not a str.
        ValueError: an unknown executor, a count below its minimum, no ``jobs_dir`` for
            submitit, or Slurm options with another executor.
    """

    executor: str = "sequential"
    threads: int | None = None
    workers: int = 1
    jobs_dir: Path | None = None
    slurm_partition: str | None = None
    slurm_time: int = 60
    slurm_gpus: int = 0
    slurm_cpus: int | None = None
    slurm_mem: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.executor, "executor", EXECUTORS)
        minima = {
            "threads": (self.threads, 1),
            "workers": (self.workers, 1),
            "slurm_time": (self.slurm_time, 1),
            "slurm_gpus": (self.slurm_gpus, 0),
            "slurm_cpus": (self.slurm_cpus, 1),
            "slurm_mem": (self.slurm_mem, 1),
        }
        for name, (value, least) in minima.items():
            if value is not None and check_int(value, name) < least:
                raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}")
        if self.jobs_dir is not None:
            check_instance(self.jobs_dir, "jobs_dir", (str, os.PathLike))
        if self.slurm_partition is not None:
            check_instance(self.slurm_partition, "slurm_partition", str)
        if self.executor != "sequential" and self.jobs_dir is None:
            raise ValueError(f"the {self.executor} executor needs `jobs_dir`, got None")
        if self.executor != "slurm":
            given = [
                name
                for name, default in (
                    ("slurm_partition", None),
                    ("slurm_gpus", 0),
                    ("slurm_cpus", None),
                    ("slurm_mem", None),
                )
                if getattr(self, name) != default
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} apply to the slurm executor only, got executor "
                    f"{self.executor!r}"
                )


def run_grid(
    job: Callable[..., object],
    jobs: Mapping[Hashable, tuple],
    options: GridOptions,
    *,
    desc: str = "jobs",
    progress: bool = True,
) -> dict[Hashable, object]:
    """Every ``job(*args)`` of ``jobs = {key: args}`` with ``options``' executor; ``{key:
    result}`` in the order of ``jobs`` whatever the order they finish in. ``progress``: a tqdm
    bar over finished jobs (``desc``).

    Raises:
        TypeError: ``job`` is not callable, ``jobs`` is not a mapping or one of its entries is
            not a tuple, ``options`` is not a :class:`GridOptions`, ``desc`` is not a str or
            ``progress`` is not a bool.
        GridJobError: a job raised (the others are cancelled first).
        ImportError: submitit is not installed (local and slurm executors).
    """
    if not callable(job):
        raise TypeError(f"`job` must be a callable, got {type(job).__name__}")
    check_instance(jobs, "jobs", Mapping)
    for key, args in jobs.items():
        if not isinstance(args, tuple):
            raise TypeError(
                f"`jobs[{key!r}]` must be a tuple of arguments, got {type(args).__name__}"
            )
    check_instance(options, "options", GridOptions)
    check_instance(desc, "desc", str)
    check_bool(progress, "progress")
    if not jobs:
        return {}
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    try:
        if options.executor == "sequential" and options.workers == 1:
            done = _run_here(job, jobs, options.threads, bar)
        elif options.executor == "sequential":
            done = _run_pool(job, jobs, options, bar)
        else:
            done = _run_submitit(job, jobs, options, bar, desc)
    finally:
        bar.close()
    return {key: done[key] for key in jobs}


def call_job(job: Callable[..., object], args: tuple, threads: int | None) -> object:
    """``job(*args)`` with ``threads`` torch threads (what runs in a job's process)."""
    if threads is not None:
        torch.set_num_threads(threads)
    return job(*args)


def _run_here(job, jobs: Mapping, threads: int | None, bar) -> dict:
    """One job after another in this process."""
    done = {}
    before = torch.get_num_threads()
    try:
        for key, args in jobs.items():
            try:
                done[key] = call_job(job, args, threads)
            except Exception as err:
                raise GridJobError(key, f"{type(err).__name__}: {err}") from err
            bar.update()
    finally:
        torch.set_num_threads(before)
    return done


def _run_pool(job, jobs: Mapping, options: GridOptions, bar) -> dict:
    """``options.workers`` spawned worker processes on this machine (no submitit)."""
    done = {}
    with ProcessPoolExecutor(options.workers, mp_context=get_context("spawn")) as pool:
        futures = {
            pool.submit(call_job, job, args, options.threads): key for key, args in jobs.items()
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                key = futures[future]
                err = future.exception()
                if err is not None:
                    for other in pending:
                        other.cancel()
                    raise GridJobError(key, f"{type(err).__name__}: {err}") from err
                done[key] = future.result()
                bar.update()
    return done


def _executor(options: GridOptions, name: str = "grid"):
    """submitit's executor for ``options`` (local or slurm; Slurm jobs named ``name``), with
    ``experiments/`` on the jobs' ``PYTHONPATH`` so that the helpers a job refers to import
    there."""
    try:
        import submitit
    except ImportError as err:  # an optional dependency: the experiments extra
        raise ImportError(
            f"the {options.executor} executor needs submitit: pip install 'symdisc[experiments]'"
        ) from err
    here = Path(__file__).resolve().parent
    setup = [f"export PYTHONPATH={shlex.quote(str(here))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    executor = submitit.AutoExecutor(folder=options.jobs_dir, cluster=options.executor)
    params: dict[str, object] = {"timeout_min": options.slurm_time, "name": name}
    if options.executor == "slurm":
        params |= {
            "gpus_per_node": options.slurm_gpus,
            "cpus_per_task": options.slurm_cpus or options.threads or 1,
            "slurm_setup": setup,
        }
        if options.slurm_partition is not None:
            params["slurm_partition"] = options.slurm_partition
        if options.slurm_mem is not None:
            params["mem_gb"] = options.slurm_mem
    else:
        # submitit's local jobs would see no GPU (it sets CUDA_VISIBLE_DEVICES to the GPUs it
        # hands out, none here): give them this process's GPUs
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        gpus = (
            "unset CUDA_VISIBLE_DEVICES"
            if visible is None
            else f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}"
        )
        params["local_setup"] = [*setup, gpus]
    executor.update_parameters(**params)
    return executor


def _failure(handle) -> str:
    """A failed submitit job's error: the last line of the traceback it reports (between
    submitit's dashed rules), else its whole message."""
    text = str(handle.exception())
    parts = [part for part in text.split("-" * 22) if "Traceback" in part]
    lines = [line for line in (parts[0] if parts else text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(handle.exception()).__name__


def _run_submitit(job, jobs: Mapping, options: GridOptions, bar, name: str) -> dict:
    """Through submitit: on Slurm every job at once (one array); locally at most
    ``options.workers`` processes at once, the next started as one finishes."""
    executor = _executor(options, name)
    waiting = list(jobs.items())
    running: dict = {}
    done: dict = {}
    if options.executor == "slurm":
        with executor.batch():
            handles = [
                executor.submit(call_job, job, args, options.threads) for _, args in jobs.items()
            ]
        running = dict(zip(jobs, handles))
        waiting = []
        log.info("submitted %d jobs to slurm: %s", len(running), handles[0].job_id.split("_")[0])
    try:
        while waiting or running:
            while waiting and len(running) < options.workers:
                key, args = waiting.pop(0)
                running[key] = executor.submit(call_job, job, args, options.threads)
            for key, handle in list(running.items()):
                if not handle.done():
                    continue
                del running[key]
                if handle.exception() is not None:
                    raise GridJobError(key, _failure(handle), handle.paths.stderr)
                done[key] = handle.result()
                bar.update()
            if running:
                time.sleep(POLL_S)
    except BaseException:
        for handle in running.values():
            handle.cancel(check=False)
        raise
    return done

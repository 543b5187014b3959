"""What every experiment script shares: arguments, environment record, results.json, logging;
and the benchmark scripts' harness: timing, peers, peak memory in a fresh child process, report.

No maths lives here; scripts call the library and use these helpers for their plumbing.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the `experiments` extra; run without a progress bar
    tqdm = None


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


def run_config(args: argparse.Namespace, seeds: list[int] | None = None) -> dict[str, object]:
    """The entries every results.json config starts with: seed (and ``seeds``, the seeds of a
    multi-seed run, when given), quick, device and threads."""
    config: dict[str, object] = {"seed": args.seed}
    if seeds is not None:
        config["seeds"] = seeds
    return config | {"quick": args.quick, "device": args.device, "threads": args.threads}


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
        **run_config(args),
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


# --------------------------------------------------------------------------------------------
# benchmark harness: console, machine load, timing, peers, peak memory in a child process
# --------------------------------------------------------------------------------------------

Row = dict[str, Any]


def say(message: str) -> None:
    """Console message on stderr that does not break a progress bar."""
    if tqdm is not None:
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def progress(items: Iterable[Any], total: int, desc: str) -> Iterator[Any]:
    """``items`` behind a progress bar on stderr (as they are where tqdm is missing)."""
    if tqdm is None:
        return iter(items)
    return iter(tqdm(items, total=total, desc=desc, file=sys.stderr))


def check_device(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error when ``--device cuda`` asks for CUDA that is not there."""
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")


def start_benchmark(out: Path) -> tuple[float, float]:
    """Create ``out``; when the run starts (``time.perf_counter``) and the 1-minute load average
    then, with a warning when the machine is busy."""
    start = time.perf_counter()
    load = os.getloadavg()[0]
    if load > 0.5:
        say(f"the machine is busy (1-min load average {load:.2f}): timings may be inflated")
    out.mkdir(parents=True, exist_ok=True)
    return start, load


def bench_environment(
    device: str, load_start: float, peers: dict[str, str | None] | None = None
) -> dict[str, object]:
    """:func:`environment`, the peers' versions (when given) and the 1-minute load average when
    the run started and now: other work on the machine inflates and scatters the timings."""
    env = environment(device)
    if peers is not None:
        env["peers"] = peers
    env["loadavg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return env


def versions(distributions: dict[str, str]) -> dict[str, str | None]:
    """``{module: version of its distribution, or None where it is not installed}``."""
    out: dict[str, str | None] = {}
    for module, dist in distributions.items():
        try:
            out[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[module] = None
    return out


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, float]:
    """``fn()``, its wall-clock seconds and the process's CPU seconds, the device synchronised
    on both sides."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def time_interleaved(
    blocks: dict[str, tuple[Callable[[], None], int, int]], repeats: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Seconds per step of every method: ``{method: {"wall": [...], "cpu": [...]}}``.

    ``blocks`` maps a method to ``(step, steps per block, warm-up steps)``. After each method's
    untimed warm-up, the timed blocks take turns (first, second, ..., first, ...), so that other
    work on the machine slows every method alike rather than whichever ran during a burst. Each
    run is a block's wall-clock time over its step count; the process's CPU time is kept too.
    """
    for step, _, warmup in blocks.values():
        for _ in range(warmup):
            step()
    runs: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in blocks}
    for _ in range(repeats):
        for method, (step, steps, _) in blocks.items():

            def block(step=step, steps=steps) -> None:
                for _ in range(steps):
                    step()

            _, wall, cpu = timed(block, device)
            runs[method]["wall"].append(wall / steps)
            runs[method]["cpu"].append(cpu / steps)
    return runs


_PEER_STATUS: dict[str, str | None] = {}


def peer_unavailable(module: str | None) -> str | None:
    """None if the peer imports, else the row's error ("not installed: ..." or the exception)."""
    if module is None:
        return None
    if module not in _PEER_STATUS:
        try:
            importlib.import_module(module)
            _PEER_STATUS[module] = None
        except ImportError as exc:
            _PEER_STATUS[module] = f"not installed: {module}"
            say(f"peer {module} skipped: not installed ({exc})")
        except Exception as exc:  # a peer that is installed but broken
            _PEER_STATUS[module] = f"{type(exc).__name__}: {exc}"
            say(f"peer {module} skipped: import failed ({type(exc).__name__}: {exc})")
    return _PEER_STATUS[module]


def peers_unavailable(modules: Sequence[str]) -> str | None:
    """The first of ``modules`` that does not import, as :func:`peer_unavailable` says it."""
    for module in modules:
        reason = peer_unavailable(module)
        if reason is not None:
            return reason
    return None


def against_ours(rows: Sequence[Row]) -> Iterator[tuple[Row, float | None, float | None, str]]:
    """Each row with its median time, that time over ours' on the same task (None where either
    is missing) and the first line of its error or note: the common cells of a table row."""
    ours_time = {r["task"]: r.get("median_s") for r in rows if r["method"] == "ours"}
    for r in rows:
        base, time_s = ours_time.get(r["task"]), r.get("median_s")
        ratio = time_s / base if time_s is not None and base else None
        yield r, time_s, ratio, (r.get("error") or r.get("note") or "").split("\n", 1)[0]


class PeakMemoryProbe:
    """Peak memory of what runs between construction and :meth:`peak_mb`, in MiB.

    CPU: the kernel's resident-set high-water mark ``VmHWM``, reset by writing 5 to
    ``/proc/self/clear_refs``, minus ``VmRSS`` at the reset; where that file is not writable,
    the rise of ``ru_maxrss`` (which only sees memory beyond the process's earlier peak).
    CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated at the start.
    """

    def __init__(self, device: torch.device) -> None:
        gc.collect()
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.source, self.how = "cuda", "cuda max_memory_allocated"
            self.baseline = torch.cuda.memory_allocated(device) / 2**20
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.source, self.how = "hwm", "VmHWM after /proc/self/clear_refs reset, minus VmRSS"
            self.baseline = self._status_mb("VmRSS")
        except OSError:
            self.source = "maxrss"
            self.how = "ru_maxrss rise (clear_refs not writable: a lower bound)"
            self.baseline = self._maxrss_mb()

    @staticmethod
    def _status_mb(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
        raise RuntimeError(f"{key} not in /proc/self/status")

    @staticmethod
    def _maxrss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    def peak_mb(self) -> float:
        if self.source == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.baseline
        if self.source == "hwm":
            return self._status_mb("VmHWM") - self.baseline
        return self._maxrss_mb() - self.baseline


def print_peak(device: torch.device, run: Callable[[], object], unavailable: str | None) -> None:
    """In a peak-memory child: print ``{"error": unavailable}``, or else the peak memory of one
    call of ``run`` and how it was measured, as JSON on the last line of stdout."""
    if unavailable is not None:
        print(json.dumps({"error": unavailable}))
        return
    probe = PeakMemoryProbe(device)
    run()
    print(json.dumps({"peak_mb": probe.peak_mb(), "how": probe.how}))


def run_child(
    script: str, child: str, workload: Path, args: argparse.Namespace, timeout: float
) -> dict[str, Any]:
    """Run ``script --child CHILD --workload FILE`` with this run's seed, device, ``--quick``
    and ``--threads`` in a fresh interpreter: the JSON of its last line, or ``{"error": ...}``."""
    cmd = [
        sys.executable,
        str(Path(script).resolve()),
        "--child",
        child,
        "--workload",
        str(workload),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
    ]
    cmd += ["--quick"] if args.quick else []
    threads = getattr(args, "threads", None)  # bench_curvature has no --threads
    cmd += ["--threads", str(threads)] if threads is not None else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"error": tail[0]}
    return json.loads(lines[-1])


def measure_peaks(
    script: str, rows: Sequence[Row], workload: dict, args: argparse.Namespace, timeout: float
) -> set[str]:
    """Peak memory of every row's method, each in a fresh child (``script --child task:method``
    reading ``workload`` from a file): sets the rows' ``peak_mb`` and returns how it was taken.

    The --quick rows are small enough to run side by side as long as their threads do not
    outnumber the cores (oversubscribed torch threads slow every op by orders of magnitude); the
    full ones run one at a time (they would disturb each other, and may need gigabytes each).
    """
    how: set[str] = set()
    workers = max(1, (os.cpu_count() or 1) // torch.get_num_threads()) if args.quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        workload_file = Path(tmp) / "workload.pt"
        torch.save(workload, workload_file)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(
                    run_child, script, f"{r['task']}:{r['method']}", workload_file, args, timeout
                ): r
                for r in rows
            }
            for future in progress(as_completed(futures), len(futures), "peak memory"):
                row, result = futures[future], future.result()
                if "peak_mb" in result:
                    row["peak_mb"] = result["peak_mb"]
                    how.add(result["how"])
                else:
                    say(f"peak memory of {row['task']}/{row['method']}: {result['error']}")
    return how

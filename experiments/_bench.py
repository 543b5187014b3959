"""The benchmark scripts' harness (infrastructure, no paper): console, machine load, timing,
peers, peak memory in a fresh child process, agreement with a reference and targets on ratios,
the report (JSON and markdown tables), and a run from its start to its report.

Every benchmark ``experiments/bench_<name>.py`` runs as a :class:`BenchmarkRun`, which writes
``OUT/bench_<name>.json`` and ``OUT/bench_<name>.md``, the file names taken from the script's own
name. Nothing here reads the command line: a peak-memory child gets the flags of its parent run
as a list (:func:`_cli.child_flags`).
"""

from __future__ import annotations

import gc
import importlib
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from _results import environment

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the `experiments` extra; run without a progress bar
    tqdm = None

# --------------------------------------------------------------------------------------------
# console, machine load, timing, peers
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


def bench_environment(
    device: str, load_start: float, peers: dict[str, str] | None = None
) -> dict[str, object]:
    """:func:`environment`, the peers' versions (when given, ``{module: distribution}``: see
    :func:`versions`) and the 1-minute load average when the run started and now: other work on
    the machine inflates and scatters the timings."""
    env = environment(device)
    if peers is not None:
        env["peers"] = versions(peers)
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


def _peer_unavailable(module: str) -> str | None:
    """None if the peer imports, else the row's error ("not installed: ..." or the exception)."""
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
    """None if every one of ``modules`` (the peers a row needs; none for ours) imports, else the
    row's error for the first that does not: "not installed: <module>" or the exception. Each
    module is tried once per process."""
    for module in modules:
        reason = _peer_unavailable(module)
        if reason is not None:
            return reason
    return None


def against_ours(rows: Sequence[Row]) -> Iterator[tuple[Row, float | None, float | None, str]]:
    """Each row with its median time, that time over ours' on the same task (and workload, where
    rows carry one; None where either is missing) and the first line of its error or note: the
    common cells of a table row."""
    ours_time = {
        (r.get("workload"), r["task"]): r.get("median_s") for r in rows if r["method"] == "ours"
    }
    for r in rows:
        base, time_s = ours_time.get((r.get("workload"), r["task"])), r.get("median_s")
        ratio = time_s / base if time_s is not None and base else None
        yield r, time_s, ratio, (r.get("error") or r.get("note") or "").split("\n", 1)[0]


# --------------------------------------------------------------------------------------------
# peak memory in a fresh child process
# --------------------------------------------------------------------------------------------


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


#: seconds a peak-memory child may take
CHILD_TIMEOUT_S = 900


class TaskMethod(Protocol):
    """A benchmark's method: the row of one task."""

    @property
    def task(self) -> str: ...

    @property
    def name(self) -> str: ...


M = TypeVar("M", bound=TaskMethod)


def child_method(methods: Iterable[M], child: str) -> M:
    """The method a peak-memory child runs: ``child`` is its ``--child`` flag, ``TASK:METHOD``
    (as :func:`measure_peaks` writes it)."""
    task, name = child.split(":")
    for method in methods:
        if (method.task, method.name) == (task, name):
            return method
    raise KeyError(f"no method {name!r} for task {task!r}")


#: the hidden flag that hands a peak-memory child the file of its workload
WORKLOAD_FILE_FLAG = "--workload-file"


def run_child(script: str, child: str, workload: Path, flags: Sequence[str], timeout: float) -> Row:
    """Run ``script --child CHILD --workload-file FILE FLAGS`` in a fresh interpreter: the JSON
    of its last line, or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(script).resolve()), "--child", child]
    cmd += [WORKLOAD_FILE_FLAG, str(workload), *flags]
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
    script: str,
    rows: Sequence[Row],
    workload: dict,
    flags: Sequence[str],
    *,
    side_by_side: bool,
    timeout: float = CHILD_TIMEOUT_S,
) -> set[str]:
    """Peak memory of every row's method, each in a fresh child (``script --child task:method
    --workload-file FILE``, the file holding ``workload``, with ``flags``, stopped after
    ``timeout`` seconds): sets the rows' ``peak_mb`` and returns how it was taken.

    ``side_by_side`` (the --quick rows) runs the children in parallel as long as their threads
    do not outnumber the cores (oversubscribed torch threads slow every op by orders of
    magnitude); otherwise they run one at a time (they would disturb each other, and may need
    gigabytes each).
    """
    how: set[str] = set()
    workers = max(1, (os.cpu_count() or 1) // torch.get_num_threads()) if side_by_side else 1
    with tempfile.TemporaryDirectory() as tmp:
        workload_file = Path(tmp) / "workload.pt"
        torch.save(workload, workload_file)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(
                    run_child, script, f"{r['task']}:{r['method']}", workload_file, flags, timeout
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


# --------------------------------------------------------------------------------------------
# agreement with a reference, and targets on ratios
# --------------------------------------------------------------------------------------------


def mark_agreement(
    rows: Sequence[Row],
    key: str,
    bounds: Mapping[str, float],
    *,
    unit: str = "",
    asserted: Container[str] | None = None,
) -> list[str]:
    """Mark every row's agreement with the reference, ``row[key] <= bounds[task]`` (rows of
    tasks without a bound, or without ``key``, are left alone): ``row["agrees"]``, and a note on
    a peer's row that disagrees. Returns ours' failures as messages: an error in one of ours'
    rows, or a disagreement of ours on a task in ``asserted`` (None: every task)."""
    failures = []
    for row in rows:
        bound = bounds.get(row["task"])
        name = f"{row['workload']}/{row['task']}" if "workload" in row else row["task"]
        if row["method"] == "ours" and "error" in row:
            failures.append(f"{name}/ours raised {row['error']}")
        if bound is None or row.get(key) is None:
            continue
        row["agrees"] = row[key] <= bound
        if row["agrees"]:
            continue
        message = f"{key} {row[key]:.3g}{unit} > {bound:g}"
        if row["method"] == "ours" and (asserted is None or row["task"] in asserted):
            failures.append(f"{name}/ours {message}")
        else:
            row["note"] = f"off the reference: {message}"
    return failures


def ratio_target(
    task: str,
    criterion: str,
    mine: float | None,
    theirs: float | None,
    passes: Callable[[float], bool],
    *,
    quick: bool,
    missing: str,
) -> Row:
    """A target on ``mine / theirs``: ``{"task", "criterion", "value", "pass"}``, the value None
    where either is missing (or ``theirs`` is 0); not judged (``pass`` None, with a ``note``: the
    --quick one, else ``missing``) on --quick or without a value."""
    target: Row = {"task": task, "criterion": criterion}
    target["value"] = mine / theirs if mine is not None and theirs else None
    if quick or target["value"] is None:
        target["pass"] = None
        target["note"] = "not judged on --quick" if quick else missing
    else:
        target["pass"] = bool(passes(target["value"]))
    return target


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


#: columns of a markdown table that hold text (left-aligned); the others hold numbers
TEXT_COLUMNS = frozenset({"workload", "task", "method", "target", "pass", "note"})


def fmt(value: object, spec: str) -> str:
    """``format(value, spec)``, or an empty cell for None."""
    return "" if value is None else format(value, spec)


def environment_text(env: dict) -> str:
    """``torch 2.13.0, 2 threads, cpu, python 3.11.7``: how a report's summary opens."""
    return (
        f"torch {env['torch']}, {env['threads']} threads, {env['device']}, python {env['python']}"
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Markdown lines of a table; :data:`TEXT_COLUMNS` left-aligned, the others right."""
    align = ["---" if c in TEXT_COLUMNS else "---:" for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(map(str, cells)) + " |" for cells in rows]


def targets_table(targets: list[dict]) -> list[str]:
    """Markdown lines of a benchmark's target verdicts (task, criterion, value, pass), with a
    first column ``workload`` where the targets carry one."""
    with_workload = any("workload" in t for t in targets)
    rows = []
    for t in targets:
        verdict = {True: "pass", False: "FAIL", None: "-"}[t["pass"]]
        if t.get("note"):
            verdict += f" ({t['note']})"
        cells = (t["task"], t["criterion"], fmt(t["value"], ".3g"), verdict)
        rows.append((t.get("workload", ""), *cells) if with_workload else cells)
    columns = ("task", "target", "value", "pass")
    return ["", *table(("workload", *columns) if with_workload else columns, rows)]


def markdown_report(
    report: dict,
    title: str,
    paragraphs: Sequence[str],
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    notes: Sequence[str] = (),
) -> str:
    """The markdown of a benchmark's ``report``: ``# title``, the paragraphs, the table of the
    rows (one sequence of cells each), the table of the report's targets, then the notes."""
    lines = [f"# {title}"]
    for paragraph in paragraphs:
        lines += ["", paragraph]
    lines += ["", *table(columns, rows), *targets_table(report["targets"])]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def add_gradients(rows: Sequence[Row], unit: tuple[str, str]) -> None:
    """Every timed row's ``gradients``: its median over the median of the ``unit`` row
    ``(task, method)`` of the same workload (curvlinops' convention)."""
    units = {r["workload"]: r.get("median_s") for r in rows if (r["task"], r["method"]) == unit}
    for r in rows:
        per_unit = units.get(r["workload"])
        if r.get("median_s") is not None and per_unit:
            r["gradients"] = r["median_s"] / per_unit


#: what a benchmark's ``run_workload(kind)`` returns: the workload's description, its rows,
#: the reasons its answers disagree with the reference, and how its peak memory was measured
WorkloadRun = tuple[dict, list[Row], list[str], set[str]]


# --------------------------------------------------------------------------------------------
# a run, from its start to its report
# --------------------------------------------------------------------------------------------


class BenchmarkRun:
    """One run of the benchmark ``script`` (its ``__file__``), writing into ``out``.

    Constructed when the run starts: notes the time and the 1-minute load average (with a
    warning when the machine is busy) and creates ``out``. :meth:`phase` times the parts of the
    run into :attr:`timings`, :meth:`report` closes the run into the report's record and
    :meth:`finish` writes it.
    """

    def __init__(self, script: str, out: Path, device: str) -> None:
        self.start = time.perf_counter()
        self.load_start = os.getloadavg()[0]
        if self.load_start > 0.5:
            say(
                f"the machine is busy (1-min load average {self.load_start:.2f}): timings may be "
                "inflated"
            )
        out.mkdir(parents=True, exist_ok=True)
        self.script, self.out, self.device = script, out, device
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, key: str) -> Iterator[None]:
        """Time the ``with`` block: its seconds go to ``timings[key]``."""
        tick = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - tick

    def run_workloads(
        self, kinds: Sequence[str], run_workload: Callable[[str], WorkloadRun], unit: tuple
    ) -> tuple[dict[str, dict], list[Row], list[str], set[str]]:
        """Every workload of ``kinds`` in turn: ``{kind: description}``, all rows (with their
        time in ``unit`` rows, :func:`add_gradients`), all failures and the peak-memory
        methods used."""
        workloads: dict[str, dict] = {}
        rows: list[Row] = []
        failures: list[str] = []
        memory_how: set[str] = set()
        for kind in kinds:
            described, kind_rows, kind_failures, how = run_workload(kind)
            workloads[kind] = described
            rows += kind_rows
            failures += kind_failures
            memory_how |= how
        add_gradients(rows, unit)
        return workloads, rows, failures, memory_how

    def report(
        self,
        *,
        workload: dict,
        config: dict,
        rows: list[Row],
        targets: list[Row],
        peers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The run's record, its total time (``timings["total_s"]``) taken now: ``benchmark``
        (the script's name without ``bench_``), ``environment`` (:func:`bench_environment`, with
        the versions of the ``peers``' distributions when given), ``workload``, ``config``,
        ``rows``, ``targets`` and ``timings``, in this order."""
        self.timings["total_s"] = time.perf_counter() - self.start
        return {
            "benchmark": Path(self.script).stem.removeprefix("bench_"),
            "environment": bench_environment(self.device, self.load_start, peers),
            "workload": workload,
            "config": config,
            "rows": rows,
            "targets": targets,
            "timings": self.timings,
        }

    def finish(self, report: dict, table: str, failures: Sequence[str], what: str) -> int:
        """Write ``out/<name>.json`` (the ``report``) and ``out/<name>.md`` (its markdown
        ``table``), ``<name>`` the script's file name without ``.py``, print the table, and
        return the exit status: 1 (with ``what`` and the reasons on stderr) when ``failures``
        says the answers disagree."""
        name = Path(self.script).stem
        (self.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (self.out / f"{name}.md").write_text(table)
        print(table)
        if failures:
            print(f"{what}:\n  " + "\n  ".join(failures), file=sys.stderr)
            return 1
        return 0

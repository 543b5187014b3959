"""Benchmark of ``symdisc.curvature`` against PyHessian, curvlinops and hessian-eigenthings.

Workload (fixed seed): an MLP 10-50-50-3 with tanh (P = 3253 parameters) trained for 300
full-batch Adam steps (lr 1e-2) on the mean cross-entropy of N = 2000 Gaussian inputs labelled by
the argmax of a random linear teacher, i.e. close to a minimum. Every timed method works on the
float32 model; the reference is the dense float64 Hessian of a float64 copy of the model
(``symdisc.curvature.hessian``) and its ``eigvalsh``: top-5 eigenvalues, trace, full spectrum.
``--quick`` runs the same structure on an MLP 10-8-8-3, N = 200, 50 Adam steps, in seconds.

Tasks and methods (one row each in the outputs):

=====================  ====================================================================
``top5_eigenvalues``   ours (``lanczos``, k=5), pyhessian (power iteration with deflation),
                       curvlinops (``HessianLinearOperator`` + scipy ``eigsh``)
``trace_100``          ours (``hutchinson``), pyhessian (``trace``), curvlinops
                       (``hutchinson_trace``), 100 Rademacher probes each
``slq_100``            ours (``slq_density``), hessian_eigenthings (``spectral_density``),
                       pyhessian (``density``), 100 Lanczos steps, one probe
``full_spectrum``      ours (dense ``hessian`` + ``eigvalsh``), torch_func_hessian
                       (``torch.func.hessian`` of the loss in the flat parameters + ``eigvalsh``)
``sharpness``          ours only: 32 directions x 5 radii
=====================  ====================================================================

Each method, its operator construction included, is called once untimed and then timed
``repeats`` times (median and all runs are reported); peak memory is the rise of the resident set
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``) while the method runs once in a
fresh child process that loads the same trained weights and data from a file. Before the timings
are compared, our answers are checked against the reference (the script exits with status 1 if
they disagree); the peers' errors are reported, not asserted.

Peers are optional; install them without their dependencies, which would replace torch::

    pip install --no-deps -r experiments/requirements-bench.txt

A peer that is not installed is skipped: its rows carry ``"error": "not installed: <module>"``.

Usage::

    python experiments/bench_curvature.py --out DIR [--seed 0] [--device cpu|cuda] [--quick]

writes ``DIR/bench_curvature.json``, ``DIR/bench_curvature.md`` and ``DIR/spectrum.png``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from _common import (
    against_ours,
    bench_environment,
    check_device,
    finish_benchmark,
    fmt,
    measure_peaks,
    peer_unavailable,
    print_peak,
    progress,
    say,
    start_benchmark,
    targets_table,
    timed,
    versions,
)
from symdisc.curvature import (
    HessianOperator,
    SpectralDensity,
    functional,
    hessian,
    hutchinson,
    lanczos,
    sharpness,
    slq_density,
    supervised_loss,
)

Row = dict[str, Any]

#: peer module -> distribution name on the package index (for the version in the JSON)
PEERS = {
    "pyhessian": "PyHessian",
    "curvlinops": "curvlinops-for-pytorch",
    "hessian_eigenthings": "hessian-eigenthings",
}
FULL_P = 3253
CHILD_TIMEOUT_S = 900

# PyHessian builds its gradient graph with `loss.backward(create_graph=True)`; torch warns about
# the reference cycle on every construction. It is the peer's design, not a problem of this run.
warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")


# --------------------------------------------------------------------------------------------
# workload
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes of the workload and of every task."""

    widths: tuple[int, ...]
    n_samples: int
    train_steps: int
    lr: float = 1e-2
    top_k: int = 5
    n_probes: int = 100
    slq_steps: int = 100
    radii: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    directions: int = 32
    repeats: int = 3


FULL = Config(widths=(10, 50, 50, 3), n_samples=2000, train_steps=300)
QUICK = Config(widths=(10, 8, 8, 3), n_samples=200, train_steps=50)


def make_mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with tanh between them."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


@dataclass
class Workload:
    """The trained float32 model, its data and the loss, on the benchmark's device."""

    model: nn.Module
    X: Tensor
    y: Tensor
    config: Config
    seed: int
    criterion: nn.CrossEntropyLoss

    @property
    def device(self) -> torch.device:
        return self.X.device

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def train_workload(config: Config, seed: int) -> tuple[dict[str, Tensor], Tensor, Tensor, float]:
    """Draw the data and train the MLP on CPU; returns (state_dict, X, y, final loss)."""
    torch.manual_seed(seed)
    model = make_mlp(config.widths)
    num_params = sum(p.numel() for p in model.parameters())
    if config == FULL and num_params != FULL_P:
        raise AssertionError(f"the workload must have P={FULL_P} parameters, got {num_params}")
    X = torch.randn(config.n_samples, config.widths[0])
    teacher = torch.randn(config.widths[0], config.widths[-1])
    y = (X @ teacher).argmax(dim=1)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.train_steps):
        optimizer.zero_grad(set_to_none=True)
        criterion(model(X), y).backward()
        optimizer.step()
    with torch.no_grad():
        final_loss = float(criterion(model(X), y))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, X, y, final_loss


def make_workload(
    state: dict[str, Tensor], X: Tensor, y: Tensor, config: Config, seed: int, device: str
) -> Workload:
    """Build the model from trained weights and move model and data to ``device``."""
    model = make_mlp(config.widths)
    model.load_state_dict(state)
    model.to(device).eval()
    return Workload(model, X.to(device), y.to(device), config, seed, nn.CrossEntropyLoss())


def describe_workload(config: Config, num_params: int, final_loss: float) -> dict[str, Any]:
    """The report's record of the workload: model, N, P, final training loss, steps."""
    return {
        "model": "mlp " + "-".join(map(str, config.widths)) + " tanh",
        "N": config.n_samples,
        "P": num_params,
        "final_loss": final_loss,
        "train_steps": config.train_steps,
    }


def load_workload(path: Path, config: Config, seed: int, device: str) -> Workload:
    saved = torch.load(path, weights_only=True)
    return make_workload(saved["state_dict"], saved["X"], saved["y"], config, seed, device)


@dataclass(frozen=True)
class Reference:
    """Exact answers from the dense float64 Hessian."""

    eigenvalues: Tensor  # (P,) ascending, float64
    trace: float

    @property
    def top(self) -> Tensor:
        return self.eigenvalues.flip(0)


def compute_reference(wl: Workload) -> Reference:
    """Dense Hessian of a float64 copy of the model (``symdisc.curvature.hessian``) and eigvalsh."""
    f, params = functional(copy.deepcopy(wl.model).double())
    loss = supervised_loss(f, "cross_entropy", "mean")
    dense = hessian(loss, params, wl.X.double(), wl.y)
    return Reference(torch.linalg.eigvalsh(dense).cpu(), float(torch.trace(dense)))


# --------------------------------------------------------------------------------------------
# methods: `run` is what is timed (operator construction included), `extract` turns its raw
# output into the task's answer outside the timed region
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A method's answer in the task's form.

    ``value``: top-k eigenvalues (descending) for top5_eigenvalues, all eigenvalues (ascending)
    for full_spectrum, the trace for trace_100, the first moment of the density (an estimate of
    trace / P) for slq_100, None for sharpness. ``n_iter``: products or iterations spent.
    """

    value: Tensor | float | None
    n_iter: int | None = None


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: ``run`` is timed, ``extract`` reads its output untimed."""

    task: str
    name: str
    run: Callable[[Workload], Any]
    extract: Callable[[Any], Answer]
    peer: str | None = None  # the module a peer needs; None for ours and plain torch


def _ours_loss(wl: Workload) -> tuple[Callable[..., Tensor], dict[str, Tensor]]:
    f, params = functional(wl.model)
    return supervised_loss(f, "cross_entropy", "mean"), params


def _ours_operator(wl: Workload) -> HessianOperator:
    loss, params = _ours_loss(wl)
    return HessianOperator(loss, params, wl.X, wl.y)


def _first_moment(nodes: Any, weights: Any) -> float:
    """First moment of a peer's quadrature, by the library's definition (SpectralDensity)."""
    nodes_t = torch.as_tensor(np.asarray(nodes, dtype=np.float64)).reshape(1, -1)
    weights_t = torch.as_tensor(np.asarray(weights, dtype=np.float64)).reshape(1, -1)
    empty = torch.empty(0, dtype=torch.float64)
    return SpectralDensity(empty, empty, nodes_t, weights_t, float("nan")).moment(1)


def _descending(values: Any) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).sort(descending=True).values


def _pyhessian(wl: Workload) -> Any:
    from pyhessian import hessian as pyhessian_hessian

    wl.model.zero_grad(set_to_none=True)  # its constructor accumulates into .grad
    return pyhessian_hessian(
        wl.model, wl.criterion, data=(wl.X, wl.y), cuda=wl.device.type == "cuda"
    )


def _curvlinops_operator(wl: Workload) -> Any:
    from curvlinops import HessianLinearOperator

    params = [p for p in wl.model.parameters() if p.requires_grad]
    # check_deterministic (two extra gradients and products) is a safeguard, not part of the
    # work; ours has no counterpart, so it is off.
    return HessianLinearOperator(
        wl.model, wl.criterion, params, [(wl.X, wl.y)], check_deterministic=False
    )


def _ours_top(wl: Workload) -> Any:
    return lanczos(_ours_operator(wl), wl.config.top_k, which="LA", generator=wl.seed)


def _pyhessian_top(wl: Workload) -> Any:
    torch.manual_seed(wl.seed)  # its start vectors come from the global generator
    return _pyhessian(wl).eigenvalues(top_n=wl.config.top_k)


def _curvlinops_top(wl: Workload) -> Any:
    from scipy.sparse.linalg import eigsh

    op = _curvlinops_operator(wl)
    v0 = np.random.default_rng(wl.seed).standard_normal(op.shape[0])
    return eigsh(op.to_scipy(), k=wl.config.top_k, which="LA", v0=v0)


def _ours_trace(wl: Workload) -> Any:
    return hutchinson(_ours_operator(wl), wl.config.n_probes, generator=wl.seed)


def _pyhessian_trace(wl: Workload) -> Any:
    torch.manual_seed(wl.seed)
    return _pyhessian(wl).trace(maxIter=wl.config.n_probes, tol=0.0)  # tol=0: no early stop


def _curvlinops_trace(wl: Workload) -> Any:
    from curvlinops import hutchinson_trace

    torch.manual_seed(wl.seed)
    return hutchinson_trace(_curvlinops_operator(wl), wl.config.n_probes)


def _ours_slq(wl: Workload) -> Any:
    return slq_density(
        _ours_operator(wl), n_steps=wl.config.slq_steps, n_probes=1, generator=wl.seed
    )


def _eigenthings_slq(wl: Workload) -> Any:
    import hessian_eigenthings as he

    op = he.HessianOperator(wl.model, [(wl.X, wl.y)], he.supervised_loss(wl.criterion))
    return he.spectral_density(op, num_runs=1, lanczos_steps=wl.config.slq_steps, seed=wl.seed)


def _pyhessian_slq(wl: Workload) -> Any:
    torch.manual_seed(wl.seed)
    return _pyhessian(wl).density(iter=wl.config.slq_steps, n_v=1)


def _ours_full(wl: Workload) -> Any:
    loss, params = _ours_loss(wl)
    return torch.linalg.eigvalsh(hessian(loss, params, wl.X, wl.y))


def _torch_func_full(wl: Workload) -> Any:
    """``torch.func.hessian`` of the loss as a function of the flat parameter vector."""
    named = dict(wl.model.named_parameters())
    shapes = [p.shape for p in named.values()]
    sizes = [p.numel() for p in named.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in named.values()])

    def loss_of_flat(theta: Tensor) -> Tensor:
        parts = [t.view(s) for t, s in zip(theta.split(sizes), shapes)]
        outputs = torch.func.functional_call(wl.model, dict(zip(named, parts)), (wl.X,))
        return wl.criterion(outputs, wl.y)

    dense = torch.func.hessian(loss_of_flat)(flat).reshape(flat.numel(), flat.numel())
    return torch.linalg.eigvalsh(dense)


def _ours_sharpness(wl: Workload) -> Any:
    loss, params = _ours_loss(wl)
    c = wl.config
    return sharpness(
        loss, params, wl.X, wl.y, radii=list(c.radii), directions=c.directions, generator=wl.seed
    )


METHODS: tuple[Method, ...] = (
    Method("top5_eigenvalues", "ours", _ours_top, lambda r: Answer(r.eigenvalues.cpu(), r.n_iter)),
    Method(
        "top5_eigenvalues",
        "pyhessian",
        _pyhessian_top,
        lambda r: Answer(_descending(r[0])),
        peer="pyhessian",
    ),
    Method(
        "top5_eigenvalues",
        "curvlinops",
        _curvlinops_top,
        lambda r: Answer(_descending(r[0])),
        peer="curvlinops",
    ),
    Method("trace_100", "ours", _ours_trace, lambda r: Answer(float(r.value), r.n_matvecs)),
    Method(
        "trace_100",
        "pyhessian",
        _pyhessian_trace,
        lambda r: Answer(float(np.mean(r)), len(r)),
        peer="pyhessian",
    ),
    Method(
        "trace_100", "curvlinops", _curvlinops_trace, lambda r: Answer(float(r)), peer="curvlinops"
    ),
    Method("slq_100", "ours", _ours_slq, lambda r: Answer(r.moment(1))),
    Method(
        "slq_100",
        "hessian_eigenthings",
        _eigenthings_slq,
        lambda r: Answer(_first_moment(r.raw_eigenvalues.cpu(), r.raw_weights.cpu())),
        peer="hessian_eigenthings",
    ),
    Method(
        "slq_100",
        "pyhessian",
        _pyhessian_slq,
        lambda r: Answer(_first_moment(r[0], r[1])),
        peer="pyhessian",
    ),
    Method("full_spectrum", "ours", _ours_full, lambda r: Answer(r.double().cpu())),
    Method(
        "full_spectrum", "torch_func_hessian", _torch_func_full, lambda r: Answer(r.double().cpu())
    ),
    Method("sharpness", "ours", _ours_sharpness, lambda r: Answer(None)),
)


def find_method(task: str, name: str) -> Method:
    for method in METHODS:
        if (method.task, method.name) == (task, name):
            return method
    raise KeyError(f"no method {name!r} for task {task!r}")


# --------------------------------------------------------------------------------------------
# errors against the reference, and the agreement bounds
# --------------------------------------------------------------------------------------------

#: rel_error bound per task: asserted for ours (exit status 1 beyond it), noted for peers.
#: slq_100 estimates trace / P from a single probe: reported, and only noted when far off.
BOUNDS = {"top5_eigenvalues": 1e-5, "trace_100": 0.5, "slq_100": 0.5, "full_spectrum": 1e-4}
ASSERTED = ("top5_eigenvalues", "trace_100", "full_spectrum")


def relative_error(task: str, answer: Answer, ref: Reference) -> float | None:
    """The task's error measure of an answer against the dense reference."""
    value = answer.value
    if task == "top5_eigenvalues":
        assert isinstance(value, Tensor)
        top = ref.top[: value.numel()]
        return float(((value - top).abs() / top.abs()).max())
    if task == "trace_100":
        return abs(float(value) - ref.trace) / abs(ref.trace)
    if task == "slq_100":
        per_param = ref.trace / ref.eigenvalues.numel()
        return abs(float(value) - per_param) / abs(per_param)
    if task == "full_spectrum":
        assert isinstance(value, Tensor)
        exact = ref.eigenvalues
        return float((value.sort().values - exact).abs().max() / exact.abs().max())
    return None


# --------------------------------------------------------------------------------------------
# timing and peak memory
# --------------------------------------------------------------------------------------------


def time_calls(
    fn: Callable[[], Any], repeats: int, device: torch.device
) -> tuple[Any, list[float]]:
    """One untimed warm-up call, then ``repeats`` timed calls; the last output and the times."""
    fn()
    runs: list[float] = []
    out = None
    for _ in range(repeats):
        out = None  # free the previous output before the next call
        out, wall, _ = timed(fn, device)
        runs.append(wall)
    return out, runs


def bench_method(method: Method, wl: Workload, ref: Reference) -> tuple[Row, Any]:
    """Time one method and score its answer: the row, and the raw output (None on error)."""
    row: Row = {"task": method.task, "method": method.name}
    unavailable = peer_unavailable(method.peer)
    if unavailable is not None:
        row["error"] = unavailable
        return row, None
    try:
        raw, runs = time_calls(lambda: method.run(wl), wl.config.repeats, wl.device)
        answer = method.extract(raw)
    except Exception as exc:  # a failing method is a result, recorded in its row
        row["error"] = f"{type(exc).__name__}: {exc}"
        say(f"{method.task}/{method.name} failed: {row['error']}")
        return row, None
    row["median_s"] = statistics.median(runs)
    row["runs_s"] = runs
    row["rel_error"] = relative_error(method.task, answer, ref)
    if answer.n_iter is not None:
        row["n_iter"] = answer.n_iter
    return row, raw


def child_main(args: argparse.Namespace) -> None:
    """Hidden entry point: run one method once in this fresh process and print its peak memory."""
    task, name = args.child.split(":")
    method = find_method(task, name)
    config = QUICK if args.quick else FULL
    wl = load_workload(Path(args.workload), config, args.seed, args.device)
    unavailable = peer_unavailable(method.peer)  # imports the peer before the baseline
    print_peak(wl.device, lambda: method.run(wl), unavailable)


# --------------------------------------------------------------------------------------------
# targets, reports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """``ours[quantity] / peer[quantity] <= threshold`` (or ours' rel_error when peer is None)."""

    task: str
    quantity: str
    threshold: float
    peer: str | None = None

    @property
    def criterion(self) -> str:
        if self.peer is None:
            return f"ours {self.quantity} <= {self.threshold:g}"
        return f"ours {self.quantity} <= {self.threshold:g} x {self.peer}'s"


TARGETS = (
    Target("top5_eigenvalues", "rel_error", 1e-5),
    Target("top5_eigenvalues", "median_s", 0.5, "pyhessian"),
    Target("trace_100", "median_s", 0.8, "pyhessian"),
    Target("slq_100", "median_s", 0.6, "hessian_eigenthings"),
    Target("full_spectrum", "median_s", 0.4, "torch_func_hessian"),
    Target("full_spectrum", "peak_mb", 0.1, "torch_func_hessian"),
)


def evaluate_target(target: Target, rows: Sequence[Row], quick: bool) -> Row:
    by_method = {r["method"]: r for r in rows if r["task"] == target.task}
    out: Row = {"task": target.task, "criterion": target.criterion, "value": None, "pass": None}
    ours = by_method["ours"].get(target.quantity)
    if target.peer is None:
        out["value"] = ours
        out["pass"] = ours is not None and ours <= target.threshold
        return out
    theirs = by_method.get(target.peer, {}).get(target.quantity)
    if ours is None or not theirs:
        out["note"] = f"no {target.quantity} for " + ("ours" if ours is None else target.peer)
        return out
    out["value"] = ours / theirs
    if quick:
        out["note"] = "ratio not judged on the --quick workload"
    else:
        out["pass"] = out["value"] <= target.threshold
    return out


def check_agreement(rows: list[Row]) -> list[str]:
    """Mark each row's agreement with the reference; the failures of ours, as messages."""
    failures = []
    for row in rows:
        bound = BOUNDS.get(row["task"])
        if row["method"] == "ours" and "error" in row:
            failures.append(f"{row['task']}/ours raised {row['error']}")
        if bound is None or row.get("rel_error") is None:
            continue
        row["agrees"] = row["rel_error"] <= bound
        if row["agrees"]:
            continue
        message = f"rel_error {row['rel_error']:.3g} > {bound:g}"
        if row["method"] == "ours" and row["task"] in ASSERTED:
            failures.append(f"{row['task']}/ours {message}")
        else:
            row["note"] = f"off the reference: {message}"
    return failures


def markdown(report: dict[str, Any]) -> str:
    """The rows and targets of a report as markdown tables."""
    env, wl = report["environment"], report["workload"]
    lines = [
        f"# Curvature benchmark ({wl['model']}, N={wl['N']}, P={wl['P']})",
        "",
        f"torch {env['torch']}, {env['threads']} threads, {env['device']}, python {env['python']}; "
        f"median of {report['config']['repeats']} warm runs; peak memory in a fresh process "
        f"per row; total {report['timings']['total_s']:.0f} s.",
        "",
        "| task | method | median s | x ours | rel error | peak MB | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r, time_s, ratio, note in against_ours(report["rows"]):
        if "n_iter" in r:
            note = f"{r['n_iter']} iterations" + (f"; {note}" if note else "")
        lines.append(
            f"| {r['task']} | {r['method']} | {fmt(time_s, '.4f')} | {fmt(ratio, '.2f')} | "
            f"{fmt(r.get('rel_error'), '.2e')} | {fmt(r.get('peak_mb'), '.1f')} | "
            f"{note.replace('|', '/')} |"
        )
    lines += targets_table(report["targets"])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="small workload, runs in seconds")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # task:method, internal
    parser.add_argument("--workload", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.child is None and args.out is None:
        parser.error("--out is required")
    check_device(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        child_main(args)
        return 0
    start, load_start = start_benchmark(args.out)
    config = QUICK if args.quick else FULL
    timings: dict[str, float] = {}

    state, X, y, final_loss = train_workload(config, args.seed)
    wl = make_workload(state, X, y, config, args.seed, args.device)
    timings["train_s"] = time.perf_counter() - start

    tick = time.perf_counter()
    ref = compute_reference(wl)
    timings["reference_s"] = time.perf_counter() - tick
    say(
        f"workload: P={wl.num_params}, final loss {final_loss:.3g}, reference lambda_max "
        f"{float(ref.top[0]):.4g}, trace {ref.trace:.4g} ({timings['reference_s']:.1f} s)"
    )

    tick = time.perf_counter()
    rows: list[Row] = []
    raw_outputs: dict[tuple[str, str], Any] = {}
    for method in progress(METHODS, len(METHODS), "timing"):
        row, raw = bench_method(method, wl, ref)
        rows.append(row)
        raw_outputs[(method.task, method.name)] = raw
    timings["timing_s"] = time.perf_counter() - tick

    # peak memory, each row in a fresh process (side by side on --quick)
    tick = time.perf_counter()
    memory_methods = measure_peaks(
        __file__,
        [r for r in rows if "error" not in r],
        {"state_dict": state, "X": X, "y": y},
        args,
        CHILD_TIMEOUT_S,
    )
    timings["memory_s"] = time.perf_counter() - tick

    failures = check_agreement(rows)
    targets = [evaluate_target(t, rows, args.quick) for t in TARGETS]

    density = raw_outputs.get(("slq_100", "ours"))
    if density is not None:
        # imported here: matplotlib would add half a second to every peak-memory child
        from symdisc.plot import plot_spectral_density

        fig, _ = plot_spectral_density(density, ref.eigenvalues)
        fig.savefig(args.out / "spectrum.png", dpi=120)
    timings["total_s"] = time.perf_counter() - start

    report = {
        "benchmark": "curvature",
        "environment": bench_environment(args.device, load_start, versions(PEERS)),
        "workload": {
            **describe_workload(config, wl.num_params, final_loss),
            "reference_top5": ref.top[: config.top_k].tolist(),
            "reference_trace": ref.trace,
        },
        "config": {
            "seed": args.seed,
            "quick": args.quick,
            **{k: v for k, v in asdict(config).items() if k not in ("widths", "n_samples")},
            "dtype": "float32",
            "peak_memory": sorted(memory_methods),
            "curvlinops_check_deterministic": False,
            "agreement_bounds": BOUNDS,
        },
        "rows": rows,
        "targets": targets,
        "timings": timings,
    }
    return finish_benchmark(
        args.out,
        "bench_curvature",
        report,
        markdown(report),
        failures,
        "ours disagrees with the reference",
    )


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of ``symdisc.curvature`` against PyHessian, curvlinops and hessian-eigenthings.

Workload (fixed seed, ``_workloads.py``, shared with ``bench_laplace.py``): an MLP 10-50-50-3
with tanh (P = 3253 parameters) trained for 300 full-batch Adam steps (lr 1e-2) on the mean
cross-entropy of N = 2000 Gaussian inputs labelled by the argmax of a random linear teacher,
i.e. close to a minimum. Every timed method works on the
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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from _bench import (
    BenchmarkRun,
    Row,
    against_ours,
    child_method,
    environment_text,
    fmt,
    mark_agreement,
    markdown_report,
    measure_peaks,
    peers_unavailable,
    print_peak,
    progress,
    say,
    timed,
)
from _cli import add_child_flags, check_device, child_flags
from _workloads import Workload, load_workload, train_workload
from symdisc.curvature import (
    HessianOperator,
    SpectralDensity,
    flatten,
    functional,
    hessian,
    hutchinson,
    lanczos,
    sharpness,
    slq_density,
    supervised_loss,
    unflatten,
)

#: peer module -> distribution name on the package index (for the version in the JSON)
PEERS = {
    "pyhessian": "PyHessian",
    "curvlinops": "curvlinops-for-pytorch",
    "hessian_eigenthings": "hessian-eigenthings",
}

# PyHessian builds its gradient graph with `loss.backward(create_graph=True)`; torch warns about
# the reference cycle on every construction. It is the peer's design, not a problem of this run.
warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")


# --------------------------------------------------------------------------------------------
# task sizes and the reference (the workload is in _workloads.py)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Sizes of every task: the same on --quick, where only the workload shrinks."""

    top_k: int = 5
    n_probes: int = 100
    slq_steps: int = 100
    radii: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    directions: int = 32
    repeats: int = 3


SIZES = Sizes()


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
    peers: tuple[str, ...] = ()  # the module a peer needs; none for ours and plain torch


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
    return lanczos(_ours_operator(wl), SIZES.top_k, which="LA", generator=wl.seed)


def _pyhessian_top(wl: Workload) -> Any:
    torch.manual_seed(wl.seed)  # its start vectors come from the global generator
    return _pyhessian(wl).eigenvalues(top_n=SIZES.top_k)


def _curvlinops_top(wl: Workload) -> Any:
    from scipy.sparse.linalg import eigsh

    op = _curvlinops_operator(wl)
    v0 = np.random.default_rng(wl.seed).standard_normal(op.shape[0])
    return eigsh(op.to_scipy(), k=SIZES.top_k, which="LA", v0=v0)


def _ours_trace(wl: Workload) -> Any:
    return hutchinson(_ours_operator(wl), SIZES.n_probes, generator=wl.seed)


def _pyhessian_trace(wl: Workload) -> Any:
    torch.manual_seed(wl.seed)
    return _pyhessian(wl).trace(maxIter=SIZES.n_probes, tol=0.0)  # tol=0: no early stop


def _curvlinops_trace(wl: Workload) -> Any:
    from curvlinops import hutchinson_trace

    torch.manual_seed(wl.seed)
    return hutchinson_trace(_curvlinops_operator(wl), SIZES.n_probes)


def _ours_slq(wl: Workload) -> Any:
    return slq_density(_ours_operator(wl), n_steps=SIZES.slq_steps, n_probes=1, generator=wl.seed)


def _eigenthings_slq(wl: Workload) -> Any:
    import hessian_eigenthings as he

    op = he.HessianOperator(wl.model, [(wl.X, wl.y)], he.supervised_loss(wl.criterion))
    return he.spectral_density(op, num_runs=1, lanczos_steps=SIZES.slq_steps, seed=wl.seed)


def _pyhessian_slq(wl: Workload) -> Any:
    torch.manual_seed(wl.seed)
    return _pyhessian(wl).density(iter=SIZES.slq_steps, n_v=1)


def _ours_full(wl: Workload) -> Any:
    loss, params = _ours_loss(wl)
    return torch.linalg.eigvalsh(hessian(loss, params, wl.X, wl.y))


def _torch_func_full(wl: Workload) -> Any:
    """``torch.func.hessian`` of the loss as a function of the flat parameter vector."""
    params = {name: p.detach() for name, p in wl.model.named_parameters()}

    def loss(theta: Tensor) -> Tensor:
        outputs = torch.func.functional_call(wl.model, unflatten(theta, params), (wl.X,))
        return wl.criterion(outputs, wl.y)

    return torch.linalg.eigvalsh(torch.func.hessian(loss)(flatten(params)))


def _ours_sharpness(wl: Workload) -> Any:
    loss, params = _ours_loss(wl)
    return sharpness(
        loss,
        params,
        wl.X,
        wl.y,
        radii=list(SIZES.radii),
        directions=SIZES.directions,
        generator=wl.seed,
    )


def _peer(task: str, module: str, run: Callable[[Workload], Any], extract) -> Method:
    """A peer's row: named after the module it needs."""
    return Method(task, module, run, extract, peers=(module,))


def _top(r: Any) -> Answer:
    return Answer(_descending(r[0]))


def _spectrum(r: Tensor) -> Answer:
    return Answer(r.double().cpu())


METHODS: tuple[Method, ...] = (
    Method("top5_eigenvalues", "ours", _ours_top, lambda r: Answer(r.eigenvalues.cpu(), r.n_iter)),
    _peer("top5_eigenvalues", "pyhessian", _pyhessian_top, _top),
    _peer("top5_eigenvalues", "curvlinops", _curvlinops_top, _top),
    Method("trace_100", "ours", _ours_trace, lambda r: Answer(float(r.value), r.n_matvecs)),
    _peer("trace_100", "pyhessian", _pyhessian_trace, lambda r: Answer(float(np.mean(r)), len(r))),
    _peer("trace_100", "curvlinops", _curvlinops_trace, lambda r: Answer(float(r))),
    Method("slq_100", "ours", _ours_slq, lambda r: Answer(r.moment(1))),
    _peer(
        "slq_100",
        "hessian_eigenthings",
        _eigenthings_slq,
        lambda r: Answer(_first_moment(r.raw_eigenvalues.cpu(), r.raw_weights.cpu())),
    ),
    _peer("slq_100", "pyhessian", _pyhessian_slq, lambda r: Answer(_first_moment(r[0], r[1]))),
    Method("full_spectrum", "ours", _ours_full, _spectrum),
    Method("full_spectrum", "torch_func_hessian", _torch_func_full, _spectrum),
    Method("sharpness", "ours", _ours_sharpness, lambda r: Answer(None)),
)


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
    unavailable = peers_unavailable(method.peers)
    if unavailable is not None:
        row["error"] = unavailable
        return row, None
    try:
        raw, runs = time_calls(lambda: method.run(wl), SIZES.repeats, wl.device)
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
    method = child_method(METHODS, args.child)
    wl = load_workload(args.workload, args.quick, args.seed, args.device)
    unavailable = peers_unavailable(method.peers)  # imports the peer before the baseline
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


def markdown(report: dict[str, Any]) -> str:
    """The rows and targets of a report as markdown tables."""
    env, wl = report["environment"], report["workload"]
    rows = []
    for r, time_s, ratio, note in against_ours(report["rows"]):
        if "n_iter" in r:
            note = f"{r['n_iter']} iterations" + (f"; {note}" if note else "")
        rows.append(
            (
                r["task"],
                r["method"],
                fmt(time_s, ".4f"),
                fmt(ratio, ".2f"),
                fmt(r.get("rel_error"), ".2e"),
                fmt(r.get("peak_mb"), ".1f"),
                note.replace("|", "/"),
            )
        )
    return markdown_report(
        report,
        f"Curvature benchmark ({wl['model']}, N={wl['N']}, P={wl['P']})",
        [
            f"{environment_text(env)}; median of {report['config']['repeats']} warm runs; peak "
            f"memory in a fresh process per row; total {report['timings']['total_s']:.0f} s."
        ],
        ("task", "method", "median s", "x ours", "rel error", "peak MB", "note"),
        rows,
    )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="small workload, runs in seconds")
    add_child_flags(parser)
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
    run = BenchmarkRun(__file__, args.out, args.device)

    with run.phase("train_s"):
        trained = train_workload(args.quick, args.seed)
        wl = trained.build(args.device)

    with run.phase("reference_s"):
        ref = compute_reference(wl)
    say(
        f"workload: P={wl.num_params}, final loss {trained.final_loss:.3g}, reference lambda_max "
        f"{float(ref.top[0]):.4g}, trace {ref.trace:.4g} ({run.timings['reference_s']:.1f} s)"
    )

    rows: list[Row] = []
    raw_outputs: dict[tuple[str, str], Any] = {}
    with run.phase("timing_s"):
        for method in progress(METHODS, len(METHODS), "timing"):
            row, raw = bench_method(method, wl, ref)
            rows.append(row)
            raw_outputs[(method.task, method.name)] = raw

    # peak memory, each row in a fresh process (side by side on --quick)
    with run.phase("memory_s"):
        memory_methods = measure_peaks(
            __file__,
            [r for r in rows if "error" not in r],
            trained.record(),
            child_flags(args),
            side_by_side=args.quick,
        )

    failures = mark_agreement(rows, "rel_error", BOUNDS, asserted=ASSERTED)
    targets = [evaluate_target(t, rows, args.quick) for t in TARGETS]

    density = raw_outputs.get(("slq_100", "ours"))
    if density is not None:
        # imported here: matplotlib would add half a second to every peak-memory child
        from symdisc.plot import plot_spectral_density

        fig, _ = plot_spectral_density(density, ref.eigenvalues)
        fig.savefig(args.out / "spectrum.png", dpi=120)

    report = run.report(
        workload={
            **trained.describe(),
            "reference_top5": ref.top[: SIZES.top_k].tolist(),
            "reference_trace": ref.trace,
        },
        config={
            "seed": args.seed,
            "quick": args.quick,
            "train_steps": trained.config.train_steps,
            "lr": trained.config.lr,
            **asdict(SIZES),
            "dtype": "float32",
            "peak_memory": sorted(memory_methods),
            "curvlinops_check_deterministic": False,
            "agreement_bounds": BOUNDS,
        },
        rows=rows,
        targets=targets,
        peers=PEERS,
    )
    return run.finish(report, markdown(report), failures, "ours disagrees with the reference")


if __name__ == "__main__":
    sys.exit(main())

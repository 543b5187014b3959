"""Benchmark of the relaxed layers of paper 000: forward+backward time and peak memory.

Two kinds of tasks, all in float32 on the CPU (or ``--device cuda`` for the timings):

* ``<layer>_fwd_bwd``, method ``ours``, for every name in :data:`ella.models.LAYERS` at the time
  the script runs (names used as they are, e.g. ``ffc+conv_fwd_bwd``): the network
  ``neyshabur(layer, alpha=4, in_channels=3, n_classes=10, image_size=32)`` on a batch of 128
  random inputs with random labels; one step = forward, cross-entropy loss, backward (gradients
  set to None before each step; no optimizer).
* ``ffc_layer_fwd_bwd`` (layer 2 of that network: 4 x 32 x 32 -> 8 x 16 x 16) and
  ``ffc_layer1_fwd_bwd`` (layer 1: 3 x 32 x 32 -> 4 x 32 x 32): ONE :class:`~ella.layers.FFC`
  layer, batch 128, the input requiring grad (as inside a network), one step = forward and
  ``y.backward(g)`` with a fixed random ``g``. Two methods with the same parameters:

  - ``ours``: ``FFC.forward`` (eq. 5 factorised: contract (x, y) to (B, C', C), then expand).
  - ``block_diag``: the same map through a block-diagonal (expanded) input, the formulation the
    factorisation avoids. Eq. (5) is ``vec(y) = W vec(x)`` with the C' x C blocks
    ``W[c', c] = vec(theta1[c', c]) vec(theta2[c', c])^T``; the contraction with theta2 is the
    block-diagonal product ``diag_{c'}(x_flat^T) vec(theta2)`` per (c', c) block. Its nonzero
    blocks are materialised: ``X_bd`` (B, C', C*H*W) holds one copy of the input per output
    channel, is multiplied elementwise by theta2 reshaped to (C', C*H*W) and summed over (x, y)
    per (c', c) to ``z`` (B, C', C); then ``z`` is expanded the same way to (B, C', C, H'*W'),
    multiplied by theta1 and summed over c. Memory O(B C' C (HW + H'W')) instead of
    O(B (C HW + C' H'W') + B C' C).

  Before any timing the two are compared in float64 (output and the gradients of theta1,
  theta2, bias and the input, relative error of the norm of the difference <= 1e-10); the
  script exits with status 1 if they disagree.

Time: after ``warmup`` untimed steps, the methods of a task take turns at ``repeats`` timed
blocks of ``steps`` steps; a block's wall-clock time over its step count is one run
(``runs_s``), the median is ``median_s``.

Peak memory (``peak_mb``): one step in a fresh child process (this script with a hidden flag).
The child builds the module and the batch, runs one untimed step on a batch of 1 (thread pools
and other one-time allocations), sets the gradients to None, resets the resident-set
high-water mark by writing "5" to ``/proc/self/clear_refs``, reads ``VmRSS`` (the baseline),
runs one full step and reads ``VmHWM``: ``peak_mb = (VmHWM - baseline) / 2^20``, i.e. the
memory the step itself needs on top of the parameters and the batch (gradients, activations,
workspaces). glibc's malloc is pinned to mmap every block over 128 KiB and to give freed memory
back at once (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``), so that the resident set
follows what is allocated. Where ``clear_refs`` cannot be written, the child falls back to
``ru_maxrss`` (a peak since the process started, so it includes start-up and construction) and
the JSON says so (``config.peak_memory.source``). Peak memory is a CPU measurement: with
``--device cuda`` the children still run on the CPU.

Targets (F-FC layer tasks): ours' ``peak_mb`` <= 0.25x block_diag's, and ours' ``median_s``
<= block_diag's; reported, never asserted; not judged on --quick.

``--quick``: alpha 1, batch 8, layer types "conv" and "ffc" only, F-FC layer tasks at the sizes
of that network (1 x 32 x 32 -> 2 x 16 x 16 and 3 x 32 x 32 -> 1 x 32 x 32), fewer repeats;
peak memory children still run (a few seconds).

Usage::

    python experiments/bench_layers.py --out DIR [--seed 0] [--device cpu|cuda] [--quick]
        [--threads N]

writes ``DIR/bench_layers.json`` and ``DIR/bench_layers.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from _bench import (
    BenchmarkRun,
    Row,
    environment_text,
    fmt,
    markdown_report,
    ratio_target,
    time_interleaved,
)
from _cli import check_device, parser, setup
from ella.layers.relaxed import FFC
from ella.models import LAYERS, neyshabur

Step = Callable[[], None]

IN_CHANNELS, N_CLASSES, IMAGE_SIZE = 3, 10, 32
#: float64 agreement bound of block_diag against ours (relative error of every tensor compared)
BOUND = 1e-10
#: ours' peak memory over block_diag's, at most; ours' time over block_diag's, at most
MEMORY_TARGET, TIME_TARGET = 0.25, 1.0
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
FFC_METHODS = ("ours", "block_diag")


@dataclass(frozen=True)
class Config:
    alpha: int
    batch: int
    layers: tuple[str, ...] | None  # None: every name in LAYERS
    warmup: int
    repeats: int
    net_steps: int  # steps per timed block, networks
    ffc_steps: int  # steps per timed block, single F-FC layer


FULL = Config(alpha=4, batch=128, layers=None, warmup=1, repeats=5, net_steps=1, ffc_steps=10)
QUICK = Config(
    alpha=1, batch=8, layers=("conv", "ffc"), warmup=1, repeats=3, net_steps=1, ffc_steps=2
)


def ffc_shapes(alpha: int) -> dict[str, tuple[int, int, int, int]]:
    """(C, C', H, H') of the F-FC layer tasks: layers 2 and 1 of the alpha network."""
    return {
        "ffc_layer_fwd_bwd": (alpha, 2 * alpha, IMAGE_SIZE, IMAGE_SIZE // 2),
        "ffc_layer1_fwd_bwd": (IN_CHANNELS, alpha, IMAGE_SIZE, IMAGE_SIZE),
    }


# --------------------------------------------------------------------------------------------
# the two F-FC formulations
# --------------------------------------------------------------------------------------------


def block_diag_forward(layer: FFC, x: Tensor) -> Tensor:
    """``layer(x)`` through the materialised block-diagonal input (module docstring)."""
    theta1, theta2 = layer.factors()
    B, C, H, W = x.shape
    Co, So = layer.out_channels, layer.out_size
    # the C' diagonal blocks of diag_{c'}(x_flat^T): one copy of the input per output channel
    x_bd = x.reshape(B, 1, C * H * W).expand(B, Co, C * H * W).contiguous()
    z = (x_bd * theta2.reshape(1, Co, C * H * W)).reshape(B, Co, C, H * W).sum(-1)  # (B,C',C)
    # the same expansion on the output side: one copy of z(b, c', c) per output pixel
    z_bd = z.reshape(B, Co, C, 1).expand(B, Co, C, So * So).contiguous()
    y = (z_bd * theta1.reshape(1, Co, C, So * So)).sum(2).reshape(B, Co, So, So)
    if layer.bias is not None:
        y = y + layer.bias.view(Co, 1, 1)
    return y


FORWARDS: dict[str, Callable[[FFC, Tensor], Tensor]] = {
    "ours": lambda layer, x: layer(x),
    "block_diag": block_diag_forward,
}


def ffc_outputs(method: str, layer: FFC, x: Tensor, g: Tensor) -> list[Tensor]:
    """Output, and the gradients of theta1, theta2, bias and x for ``y.backward(g)``."""
    x = x.detach().clone().requires_grad_(True)
    y = FORWARDS[method](layer, x)
    grads = torch.autograd.grad(y, [layer.theta1, layer.theta2, layer.bias, x], g)
    return [y.detach(), *grads]


def ffc_agreement(shape: tuple[int, int, int, int], batch: int, seed: int) -> dict[str, float]:
    """Largest relative error of block_diag against ours over output and gradients (float64)."""
    layer, x, g = make_ffc(shape, batch, seed, "cpu", torch.float64)
    ref = ffc_outputs("ours", layer, x, g)
    out = ffc_outputs("block_diag", layer, x, g)
    names = ("output", "grad_theta1", "grad_theta2", "grad_bias", "grad_input")
    return {n: float((o - r).norm() / r.norm()) for n, o, r in zip(names, out, ref, strict=True)}


# --------------------------------------------------------------------------------------------
# workloads: a spec (JSON-able, so that a child process can rebuild it) -> a step
# --------------------------------------------------------------------------------------------


def make_ffc(
    shape: tuple[int, int, int, int], batch: int, seed: int, device: str, dtype: torch.dtype
) -> tuple[FFC, Tensor, Tensor]:
    """One F-FC layer (seeded initialisation), an input and an output gradient."""
    c, co, s, so = shape
    torch.manual_seed(seed)
    layer = FFC(c, co, s, so).to(device, dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, c, s, s, generator=gen, dtype=dtype).to(device)
    g = torch.randn(batch, co, so, so, generator=gen, dtype=dtype).to(device)
    return layer, x, g


def build(spec: dict[str, Any], device: str) -> tuple[nn.Module, Callable[[int], Step]]:
    """The module of ``spec`` and ``step_for(batch)``: one forward+backward on a fixed batch."""
    seed = spec["seed"]
    if spec["kind"] == "network":
        torch.manual_seed(seed)
        model = neyshabur(spec["layer"], spec["alpha"], IN_CHANNELS, N_CLASSES, IMAGE_SIZE)
        model = model.to(device)

        def step_for(batch: int) -> Step:
            gen = torch.Generator().manual_seed(seed + 1)
            x = torch.randn(batch, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
            labels = torch.randint(0, N_CLASSES, (batch,), generator=gen).to(device)

            def step() -> None:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), labels).backward()

            return step

        return model, step_for

    layer, _, _ = make_ffc(tuple(spec["shape"]), 1, seed, device, torch.float32)
    forward = FORWARDS[spec["method"]]

    def ffc_step_for(batch: int) -> Step:
        _, x, g = make_ffc(tuple(spec["shape"]), batch, seed, device, torch.float32)
        x.requires_grad_(True)

        def step() -> None:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            forward(layer, x).backward(g)

        return step

    return layer, ffc_step_for


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------
# peak memory in a child process
# --------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child: the memory one step needs on top of its module and batch (MiB)."""
    module, step_for = build(spec, "cpu")
    step_for(1)()  # one-time allocations (thread pools, kernels' lazy state)
    module.zero_grad(set_to_none=True)
    step = step_for(spec["batch"])
    try:
        Path("/proc/self/clear_refs").write_text("5")
        source = "VmHWM after clear_refs"
    except OSError:
        source = "ru_maxrss (clear_refs not writable: includes start-up and construction)"
    baseline = _status_kb("VmRSS")
    step()
    if source.startswith("VmHWM"):
        peak = _status_kb("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "peak_mb": (peak - baseline) / 1024,
        "rss_baseline_mb": baseline / 1024,
        "source": source,
    }


def measure_peak(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    env = {**os.environ, **MALLOC_ENV}
    proc = subprocess.run(
        [sys.executable, __file__, "--peak-child", json.dumps(spec), "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory child failed for {spec}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def evaluate_targets(rows: Sequence[Row], tasks: Sequence[str], quick: bool) -> list[Row]:
    out = []
    for task in tasks:
        by = {r["method"]: r for r in rows if r["task"] == task}
        for key, factor, what in (
            ("peak_mb", MEMORY_TARGET, "peak memory"),
            ("median_s", TIME_TARGET, "time"),
        ):
            out.append(
                ratio_target(
                    task,
                    f"ours {what} <= {factor:g}x block_diag",
                    by["ours"].get(key),
                    by["block_diag"].get(key),
                    lambda ratio: ratio <= factor,
                    quick=quick,
                    missing="not measured",
                )
            )
    return out


def markdown(report: dict[str, Any]) -> str:
    env, wl, cfg = report["environment"], report["workload"], report["config"]
    rows = []
    for r in report["rows"]:
        ms = None if r.get("median_s") is None else 1e3 * r["median_s"]
        rows.append(
            (
                r["task"],
                r["method"],
                f"{r['params']:,}",
                fmt(ms, ".3g"),
                fmt(r.get("peak_mb"), ".1f"),
            )
        )
    return markdown_report(
        report,
        f"Relaxed layers: forward+backward (alpha {wl['alpha']}, {wl['image_size']} x "
        f"{wl['image_size']}, batch {wl['batch']})",
        [
            f"{environment_text(env)}; time: median of {cfg['repeats']} blocks "
            f"({cfg['net_steps']} step(s) per network block, {cfg['ffc_steps']} per F-FC layer "
            f"block); peak memory: one step in a fresh process, {cfg['peak_memory']['source']}, "
            f"above the resident set of module + batch; total "
            f"{report['timings']['total_s']:.0f} s."
        ],
        ("task", "method", "params", "median ms", "peak MB"),
        rows,
    )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.peak_child is not None:  # the child of measure_peak: one step, peak memory to stdout
        setup(args)
        print(json.dumps(peak_child(json.loads(args.peak_child))))
        return 0
    check_device(p, args)
    setup(args)
    run = BenchmarkRun(__file__, args.out, args.device)
    config = QUICK if args.quick else FULL
    layers = list(LAYERS) if config.layers is None else [n for n in config.layers if n in LAYERS]
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    rows: list[Row] = []
    shapes = ffc_shapes(config.alpha)

    # answers first: nothing is timed unless the two F-FC formulations agree
    with run.phase("agreement_s"):
        agreement = {
            task: ffc_agreement(shape, config.batch, args.seed) for task, shape in shapes.items()
        }
    failures = [
        f"{task}: block_diag {what} rel. error {err:.3g} > {BOUND:g} (float64)"
        for task, errs in agreement.items()
        for what, err in errs.items()
        if not err <= BOUND  # NaN fails too
    ]

    specs: dict[tuple[str, str], dict[str, Any]] = {}
    for name in layers:
        specs[(f"{name}_fwd_bwd", "ours")] = {
            "kind": "network",
            "layer": name,
            "alpha": config.alpha,
            "batch": config.batch,
            "seed": args.seed,
        }
    if not failures:
        for task, shape in shapes.items():
            for method in FFC_METHODS:
                specs[(task, method)] = {
                    "kind": "ffc",
                    "shape": list(shape),
                    "method": method,
                    "batch": config.batch,
                    "seed": args.seed,
                }

    # time: the networks one by one, the F-FC methods of a task interleaved
    groups: dict[str, list[str]] = {}
    for task, method in specs:
        groups.setdefault(task, []).append(method)
    with run.phase("timing_s"):
        for task, methods in groups.items():
            blocks, params = {}, {}
            for method in methods:
                spec = specs[(task, method)]
                module, step_for = build(spec, args.device)
                steps = config.net_steps if spec["kind"] == "network" else config.ffc_steps
                blocks[method] = (step_for(config.batch), steps, config.warmup)
                params[method] = n_params(module)
            runs = time_interleaved(blocks, config.repeats, device)
            for method in methods:
                wall = runs[method]["wall"]
                rows.append(
                    {
                        "task": task,
                        "method": method,
                        "median_s": statistics.median(wall),
                        "runs_s": wall,
                        "peak_mb": None,
                        "params": params[method],
                    }
                )
                print(f"{task}/{method}: {1e3 * rows[-1]['median_s']:.3g} ms", file=sys.stderr)
            del blocks

    # peak memory, one fresh child per row
    sources = set()
    with run.phase("peak_memory_s"):
        for row in rows:
            rec = measure_peak(specs[(row["task"], row["method"])], threads)
            row["peak_mb"], row["rss_baseline_mb"] = rec["peak_mb"], rec["rss_baseline_mb"]
            sources.add(rec["source"])
            print(f"{row['task']}/{row['method']}: {row['peak_mb']:.1f} MB", file=sys.stderr)

    report = run.report(
        workload={
            "alpha": config.alpha,
            "batch": config.batch,
            "image_size": IMAGE_SIZE,
            "in_channels": IN_CHANNELS,
            "n_classes": N_CLASSES,
            "layers": layers,
            "ffc_layer_shapes": {
                t: dict(zip(("C", "C_out", "H", "H_out"), s, strict=True))
                for t, s in shapes.items()
            },
            "loss": "cross_entropy (networks); y.backward(g), g ~ N(0, 1) (F-FC layer)",
        },
        config={
            "seed": args.seed,
            "quick": args.quick,
            "threads_arg": args.threads,
            **asdict(config),
            "dtype": "float32",
            "peak_memory": {
                "source": " / ".join(sorted(sources)) or "not measured",
                "child_env": MALLOC_ENV,
                "what": "VmHWM - VmRSS before one step, in a fresh process after a batch-1 "
                "warm-up step; MiB",
            },
            "agreement_bound_float64": BOUND,
            "agreement": agreement,
            "targets": {
                "ours peak_mb / block_diag": f"<= {MEMORY_TARGET:g}",
                "ours median_s / block_diag": f"<= {TIME_TARGET:g}",
            },
        },
        rows=rows,
        targets=evaluate_targets(rows, list(shapes) if not failures else [], args.quick),
    )
    return run.finish(
        report,
        markdown(report),
        failures,
        "the F-FC formulations disagree (F-FC layer not timed)",
    )


if __name__ == "__main__":
    sys.exit(main())

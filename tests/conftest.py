"""Shared test cases: small networks in float64, each built from a seed, with data and a loss.

Every test that needs a network takes ``case`` (parametrised over the registry below) and gets a
:class:`Case`. Tensors are built in float64 explicitly; no test changes torch's global default
dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from symdisc.curvature import functional, supervised_loss
from symdisc.curvature.reference import dense_hessian

DTYPE = torch.float64
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@dataclass
class Case:
    """A loss ``loss_fn(params, inputs, targets)`` at ``params``, with the model behind it."""

    name: str
    params: dict[str, Tensor]
    inputs: Tensor
    targets: Tensor
    loss_fn: Callable[..., Tensor]
    model: nn.Module | None = None
    model_fn: Callable[..., Tensor] | None = None
    loss: str | None = None  # "mse" / "cross_entropy" for model cases


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model_case(
    name: str, model: nn.Module, input_shape: tuple[int, ...], seed: int, loss: str
) -> Case:
    """A model case: inputs of ``input_shape`` and 3-class targets (labels for cross-entropy,
    Gaussian for mse) drawn from one generator seeded with ``seed``."""
    g = _generator(seed)
    x = torch.randn(*input_shape, generator=g, dtype=DTYPE)
    if loss == "cross_entropy":
        y = torch.randint(0, 3, (input_shape[0],), generator=g)
    else:
        y = torch.randn(input_shape[0], 3, generator=g, dtype=DTYPE)
    f, params = functional(model)
    return Case(name, params, x, y, supervised_loss(f, loss), model, f, loss)


def mlp_case(seed: int = 0, loss: str = "cross_entropy", n: int = 6) -> Case:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3)
    )
    return _model_case("mlp", model.to(DTYPE), (n, 3), seed, loss)


def cnn_case(seed: int = 0, loss: str = "cross_entropy", n: int = 4) -> Case:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 2, 3, stride=2, padding=1, padding_mode="circular"),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 3),
    ).to(DTYPE)
    return _model_case("cnn", model, (n, 2, 5, 5), seed, loss)


def custom_case(seed: int = 0, n: int = 7) -> Case:
    """A network written as a pure function with a custom loss: log-cosh plus a quartic penalty."""
    g = _generator(seed)
    params = {
        "W1": torch.randn(4, 3, generator=g, dtype=DTYPE) * 0.7,
        "b1": torch.randn(4, generator=g, dtype=DTYPE) * 0.1,
        "w2": torch.randn(4, generator=g, dtype=DTYPE),
    }
    x = torch.randn(n, 3, generator=g, dtype=DTYPE)
    y = torch.randn(n, generator=g, dtype=DTYPE)

    def loss_fn(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        h = torch.nn.functional.softplus(x @ p["W1"].T + p["b1"])
        r = h @ p["w2"] - y
        return torch.log(torch.cosh(r)).mean() + 0.01 * (p["W1"] ** 4).sum()

    return Case("custom", params, x, y, loss_fn)


CASES = {"mlp": mlp_case, "cnn": cnn_case, "custom": custom_case}
MODEL_CASES = {"mlp": mlp_case, "cnn": cnn_case}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]()


@pytest.fixture(params=sorted(MODEL_CASES))
def model_case_builder(request: pytest.FixtureRequest) -> Callable[..., Case]:
    return MODEL_CASES[request.param]


def brute_force_hessian(case: Case) -> Tensor:
    """Dense Hessian (P, P) of the case's loss by a loop of double-backward passes
    (:func:`symdisc.curvature.reference.dense_hessian`)."""
    return dense_hessian(case.loss_fn, case.params, case.inputs, case.targets)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny training loops), restoring the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_quick(
    script: str, out, timeout: int = 300, *, args: Sequence[str] = (), python: Sequence[str] = ()
) -> tuple[dict, str]:
    """Run ``python [PYTHON] experiments/<script>.py --quick [ARGS] --out out`` in a fresh
    interpreter, assert that it exits cleanly, and return the JSON it wrote (``results.json`` or
    ``<script>.json``) with its standard output."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script_path = str(root / "experiments" / f"{script}.py")
    proc = subprocess.run(
        [sys.executable, *python, script_path, "--quick", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(out) / (f"{script}.json" if script.startswith("bench_") else "results.json")
    return json.loads(path.read_text()), proc.stdout


#: the keys of every benchmark's JSON (DESIGN.md, output formats)
BENCH_KEYS = {"benchmark", "environment", "workload", "config", "rows", "targets", "timings"}


def check_bench_report(report: dict, benchmark: str) -> None:
    """What every benchmark's --quick JSON holds: exactly :data:`BENCH_KEYS`, its name, a
    --quick config, the environment's threads and the total time."""
    assert set(report) == BENCH_KEYS
    assert report["benchmark"] == benchmark
    assert report["config"]["quick"] is True
    assert "threads" in report["environment"]
    assert "total_s" in report["timings"]


# --------------------------------------------------------------------------------------------
# data-parallel checks: ranks of a gloo group on this machine
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, init: str, out_dir: str, checks: Callable) -> None:
    import json
    import os
    from pathlib import Path

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(checks(rank)))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # the results are written: skip the interpreter's finalisation, where gloo's worker threads
    # can abort the process (SIGABRT, "terminate called without an active exception"; seen in 1
    # of ~15 runs on a loaded machine, after every collective had completed)
    os._exit(0)


def run_ranks(checks: Callable[[int], dict], out_dir, world: int = 2) -> list[dict]:
    """``checks(rank)`` on every rank of a ``world``-process gloo group (one thread each), each
    rank's JSON-able result written to ``out_dir`` and returned in rank order. ``checks`` must be
    a top-level function of a test module (the spawned processes import it)."""
    import json
    from pathlib import Path

    import torch.multiprocessing as mp

    init = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(_rank_worker, args=(world, init, str(out_dir), checks), nprocs=world, join=True)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world)]

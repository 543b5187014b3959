"""Shared test cases: small networks in float64, each built from a seed, with data and a loss.

Every test that needs a network takes ``case`` (parametrised over the registry below) and gets a
:class:`Case`. Tensors are built in float64 explicitly; no test changes torch's global default
dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from symdisc.curvature import functional, supervised_loss

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


def mlp_case(seed: int = 0, loss: str = "cross_entropy", n: int = 6) -> Case:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3)
    )
    model = model.to(DTYPE)
    g = _generator(seed)
    x = torch.randn(n, 3, generator=g, dtype=DTYPE)
    if loss == "cross_entropy":
        y = torch.randint(0, 3, (n,), generator=g)
    else:
        y = torch.randn(n, 3, generator=g, dtype=DTYPE)
    f, params = functional(model)
    return Case("mlp", params, x, y, supervised_loss(f, loss), model, f, loss)


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
    g = _generator(seed)
    x = torch.randn(n, 2, 5, 5, generator=g, dtype=DTYPE)
    if loss == "cross_entropy":
        y = torch.randint(0, 3, (n,), generator=g)
    else:
        y = torch.randn(n, 3, generator=g, dtype=DTYPE)
    f, params = functional(model)
    return Case("cnn", params, x, y, supervised_loss(f, loss), model, f, loss)


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


def flat_loss(case: Case) -> Callable[[Tensor], Tensor]:
    """The loss as a function of the flat parameter vector (for brute-force references)."""
    from symdisc.curvature import unflatten

    return lambda theta: case.loss_fn(unflatten(theta, case.params), case.inputs, case.targets)


def brute_force_hessian(case: Case) -> Tensor:
    """Dense Hessian by a Python loop of double-backward passes, one row per parameter entry."""
    from symdisc.curvature import flatten

    theta = flatten(case.params).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(flat_loss(case)(theta), theta, create_graph=True)
    rows = [torch.autograd.grad(grad[i], theta, retain_graph=True)[0] for i in range(theta.numel())]
    return torch.stack(rows)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny training loops), restoring the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_quick(script: str, out, timeout: int = 300) -> tuple[dict, str]:
    """Run ``experiments/<script>.py --quick --out out`` in a fresh interpreter, assert that it
    exits cleanly, and return the JSON it wrote (``results.json`` or ``<script>.json``) with its
    standard output."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "experiments" / f"{script}.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(out) / (f"{script}.json" if script.startswith("bench_") else "results.json")
    return json.loads(path.read_text()), proc.stdout

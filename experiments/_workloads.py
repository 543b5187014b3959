"""The MLP workload that ``bench_curvature.py`` and ``bench_laplace.py`` share (infrastructure,
no paper): a tanh MLP trained close to a minimum of the mean cross-entropy on Gaussian inputs
labelled by a random linear teacher.

Full: MLP 10-50-50-3 (P = 3253 parameters in 6 tensors W1, b1, W2, b2, W3, b3), N = 2000, 300
full-batch Adam steps (lr 1e-2); ``--quick``: MLP 10-8-8-3, N = 200, 50 steps. The data are drawn
and the network trained on the CPU from one seed; a peak-memory child rebuilds the same
:class:`Workload` from :func:`workload_record` saved to a file (:func:`load_workload`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of the workload: layer widths, number of samples N, Adam steps and their lr."""

    widths: tuple[int, ...]
    n_samples: int
    train_steps: int
    lr: float = 1e-2


FULL = MLPConfig(widths=(10, 50, 50, 3), n_samples=2000, train_steps=300)
QUICK = MLPConfig(widths=(10, 8, 8, 3), n_samples=200, train_steps=50)
FULL_P = 3253


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
    """The trained model (float32 unless a reference asks for float64), its data and the mean
    cross-entropy, on the benchmark's device."""

    model: nn.Sequential
    X: Tensor
    y: Tensor
    config: MLPConfig
    seed: int
    criterion: nn.CrossEntropyLoss = field(default_factory=nn.CrossEntropyLoss)

    @property
    def device(self) -> torch.device:
        return self.X.device

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class TrainedMLP:
    """The trained weights and the data (CPU), from which every :class:`Workload` is built."""

    config: MLPConfig
    seed: int
    state: dict[str, Tensor]
    X: Tensor  # (N, d_in)
    y: Tensor  # (N,) labels
    final_loss: float

    def build(self, device: str, dtype: torch.dtype = torch.float32) -> Workload:
        """The model from the trained weights; model and inputs in ``dtype`` on ``device``."""
        return _build(self.state, self.X, self.y, self.config, self.seed, device, dtype)

    def record(self) -> dict[str, Any]:
        """What a peak-memory child needs to rebuild the workload (:func:`load_workload`)."""
        return {"state_dict": self.state, "X": self.X, "y": self.y}

    def describe(self) -> dict[str, Any]:
        """The report's record of the workload: model, N, P, final training loss, steps."""
        return {
            "model": "mlp " + "-".join(map(str, self.config.widths)) + " tanh",
            "N": self.config.n_samples,
            "P": sum(v.numel() for v in self.state.values()),
            "final_loss": self.final_loss,
            "train_steps": self.config.train_steps,
        }


def workload_config(quick: bool) -> MLPConfig:
    """:data:`QUICK` for a --quick run, else :data:`FULL`."""
    return QUICK if quick else FULL


def train_workload(quick: bool, seed: int) -> TrainedMLP:
    """Draw the data and train the MLP on CPU (:func:`workload_config` sizes)."""
    config = workload_config(quick)
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
    return TrainedMLP(config, seed, state, X, y, final_loss)


def _build(
    state: dict[str, Tensor],
    X: Tensor,
    y: Tensor,
    config: MLPConfig,
    seed: int,
    device: str,
    dtype: torch.dtype,
) -> Workload:
    model = make_mlp(config.widths)
    model.load_state_dict(state)
    model = model.to(device=device, dtype=dtype).eval()
    return Workload(model, X.to(device=device, dtype=dtype), y.to(device), config, seed)


def load_workload(path: str | Path, quick: bool, seed: int, device: str) -> Workload:
    """In a peak-memory child: the float32 workload from a file of :meth:`TrainedMLP.record`."""
    saved = torch.load(path, weights_only=True)
    config = workload_config(quick)
    return _build(saved["state_dict"], saved["X"], saved["y"], config, seed, device, torch.float32)

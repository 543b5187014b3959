"""The workloads that ``bench_curvature.py`` and ``bench_laplace.py`` share (infrastructure, no
paper): a tanh MLP and a small ResNet, each trained on random data labelled by a random linear
teacher, with the mean cross-entropy.

``mlp`` (full): MLP 10-50-50-3 (P = 3253 parameters in 6 tensors W1, b1, W2, b2, W3, b3),
N = 2000 Gaussian inputs, 300 full-batch Adam steps (lr 1e-2), i.e. close to a minimum;
``--quick``: MLP 10-8-8-3, N = 200, 50 steps.

``resnet`` (full; the network of issue 19, shared with the library's own measurements):
CIFAR-shaped inputs X ~ N(0, 1) of shape (N, 3, 32, 32), N = 512, 10 classes from the argmax of a
random linear map of the flattened image. No BatchNorm, Fixup-style (paper 001's ResNets):

    stem   Conv2d(3, 16, 3, stride 2, padding 1) + ReLU          (32x32 -> 16x16)
    block1 BasicBlock(16 -> 16, stride 1)                        (16x16)
    block2 BasicBlock(16 -> 32, stride 2), 1x1 conv shortcut     (-> 8x8)
    block3 BasicBlock(32 -> 64, stride 2), 1x1 conv shortcut     (-> 4x4)
    AdaptiveAvgPool2d(1), Flatten, Linear(64, 10)

with ``BasicBlock``: conv3x3(stride) -> ReLU -> conv3x3 -> + shortcut(x) -> ReLU, every conv with
a bias; P = 77,706 in 22 tensors (11 Conv2d/Linear layers). Initialisation: He (fan-in, ReLU gain)
for every conv and the head, scaled by L^(-1/2) (L = 3 blocks) on the first conv of each residual
branch; the last conv of each branch zero (weight and bias); biases zero. Then 30 full-batch Adam
steps (lr 1e-2), so that the network is not at its initialisation. ``--quick``: widths 4-6-8 on
8x8 images, N = 16, 10 steps (P = 1,478).

The data are drawn and the networks trained on the CPU from one seed; a peak-memory child rebuilds
the same :class:`Workload` from :meth:`Trained.record` saved to a file (:func:`load_workload`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

Kind = Literal["mlp", "resnet"]
KINDS: tuple[Kind, ...] = ("mlp", "resnet")


@dataclass(frozen=True)
class MLPConfig:
    """Sizes of the MLP workload: layer widths, number of samples N, Adam steps and their lr."""

    widths: tuple[int, ...]
    n_samples: int
    train_steps: int
    lr: float = 1e-2
    kind: Kind = "mlp"


@dataclass(frozen=True)
class ResNetConfig:
    """Sizes of the ResNet workload: channel widths of the stem/block1, block2 and block3, the
    image side, the number of classes, N, Adam steps and their lr."""

    widths: tuple[int, int, int]
    image: int
    classes: int
    n_samples: int
    train_steps: int
    lr: float = 1e-2
    kind: Kind = "resnet"


Config = MLPConfig | ResNetConfig

FULL = MLPConfig(widths=(10, 50, 50, 3), n_samples=2000, train_steps=300)
QUICK = MLPConfig(widths=(10, 8, 8, 3), n_samples=200, train_steps=50)
FULL_P = 3253
RESNET_FULL = ResNetConfig(widths=(16, 32, 64), image=32, classes=10, n_samples=512, train_steps=30)
RESNET_QUICK = ResNetConfig(widths=(4, 6, 8), image=8, classes=10, n_samples=16, train_steps=10)
RESNET_FULL_P = 77706


def make_mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with tanh between them."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """``relu(conv2(relu(conv1(x))) + shortcut(x))``: two 3x3 convs (the first with the stride),
    the shortcut a 1x1 conv with the stride when the shape changes, else the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = (
            nn.Conv2d(c_in, c_out, 1, stride=stride)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:  # (N, c_in, H, W) -> (N, c_out, H/s, W/s)
        return self.relu2(self.conv2(self.relu1(self.conv1(x))) + self.shortcut(x))


def make_resnet(widths: Sequence[int], classes: int) -> nn.Sequential:
    """The ResNet of the module docstring with Fixup-style initialisation."""
    w1, w2, w3 = widths
    blocks = [BasicBlock(w1, w1, 1), BasicBlock(w1, w2, 2), BasicBlock(w2, w3, 2)]
    model = nn.Sequential(
        nn.Conv2d(3, w1, 3, stride=2, padding=1),
        nn.ReLU(),
        *blocks,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(w3, classes),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    with torch.no_grad():
        for block in blocks:
            block.conv1.weight.mul_(len(blocks) ** -0.5)
            block.conv2.weight.zero_()
    return model


def make_model(config: Config) -> nn.Sequential:
    """The (untrained) network of a configuration."""
    if isinstance(config, ResNetConfig):
        return make_resnet(config.widths, config.classes)
    return make_mlp(config.widths)


@dataclass
class Workload:
    """The trained model (float32 unless a reference asks for float64), its data and the mean
    cross-entropy, on the benchmark's device."""

    model: nn.Sequential
    X: Tensor
    y: Tensor
    config: Config
    seed: int
    criterion: nn.CrossEntropyLoss = field(default_factory=nn.CrossEntropyLoss)

    @property
    def kind(self) -> Kind:
        return self.config.kind

    @property
    def device(self) -> torch.device:
        return self.X.device

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True)
class Trained:
    """The trained weights and the data (CPU), from which every :class:`Workload` is built."""

    config: Config
    seed: int
    state: dict[str, Tensor]
    X: Tensor  # (N, d_in) or (N, 3, image, image)
    y: Tensor  # (N,) labels
    final_loss: float

    @property
    def kind(self) -> Kind:
        return self.config.kind

    def build(self, device: str, dtype: torch.dtype = torch.float32) -> Workload:
        """The model from the trained weights; model and inputs in ``dtype`` on ``device``."""
        return _build(self.state, self.X, self.y, self.config, self.seed, device, dtype)

    def record(self) -> dict[str, Any]:
        """What a peak-memory child needs to rebuild the workload (:func:`load_workload`)."""
        return {"kind": self.kind, "state_dict": self.state, "X": self.X, "y": self.y}

    def describe(self) -> dict[str, Any]:
        """The report's record of the workload: model, N, P, final training loss, steps."""
        c = self.config
        if isinstance(c, ResNetConfig):
            model = (
                f"resnet fixup {'-'.join(map(str, c.widths))} (3 basic blocks, no BatchNorm), "
                f"{c.image}x{c.image} inputs, {c.classes} classes"
            )
        else:
            model = "mlp " + "-".join(map(str, c.widths)) + " tanh"
        return {
            "model": model,
            "N": c.n_samples,
            "P": sum(v.numel() for v in self.state.values()),
            "final_loss": self.final_loss,
            "train_steps": c.train_steps,
        }


def workload_config(kind: Kind, quick: bool) -> Config:
    """The sizes of workload ``kind``: the quick ones for a --quick run, else the full ones."""
    if kind == "resnet":
        return RESNET_QUICK if quick else RESNET_FULL
    if kind == "mlp":
        return QUICK if quick else FULL
    raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")


def _data(config: Config) -> tuple[Tensor, Tensor]:
    """Inputs from N(0, 1) and labels from the argmax of a random linear teacher (global RNG)."""
    if isinstance(config, ResNetConfig):
        X = torch.randn(config.n_samples, 3, config.image, config.image)
        teacher = torch.randn(X[0].numel(), config.classes) / math.sqrt(X[0].numel())
        return X, (X.flatten(1) @ teacher).argmax(dim=1)
    X = torch.randn(config.n_samples, config.widths[0])
    teacher = torch.randn(config.widths[0], config.widths[-1])
    return X, (X @ teacher).argmax(dim=1)


def train_workload(kind: Kind, quick: bool, seed: int) -> Trained:
    """Draw the data and train the network of ``kind`` on CPU (:func:`workload_config` sizes)."""
    config = workload_config(kind, quick)
    torch.manual_seed(seed)
    model = make_model(config)
    num_params = sum(p.numel() for p in model.parameters())
    expected = {FULL: FULL_P, RESNET_FULL: RESNET_FULL_P}.get(config)
    if expected is not None and num_params != expected:
        raise AssertionError(f"the workload must have P={expected} parameters, got {num_params}")
    X, y = _data(config)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.train_steps):
        optimizer.zero_grad(set_to_none=True)
        criterion(model(X), y).backward()
        optimizer.step()
    with torch.no_grad():
        final_loss = float(criterion(model(X), y))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Trained(config, seed, state, X, y, final_loss)


# --------------------------------------------------------------------------------------------
# the brute-force KFAC reference both benchmarks share
# --------------------------------------------------------------------------------------------


def kfac_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d and Linear layers of a model by name, in order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _input_rows(module: nn.Module, x: Tensor) -> Tensor:
    """A layer's input rows [a; 1] (one per sample and position)."""
    if isinstance(module, nn.Conv2d):
        patches = nn.functional.unfold(
            x, module.kernel_size, module.dilation, module.padding, module.stride
        )
        a = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    else:
        a = x.reshape(-1, module.in_features)
    return torch.cat([a, torch.ones_like(a[:, :1])], dim=1)


def explicit_kfac(model: nn.Module, X: Tensor, chunk: int) -> dict[str, tuple[Tensor, Tensor]]:
    """The benchmarks' reference KFAC (no ``symdisc``): type-2 factors ``(A, G)`` of the mean
    cross-entropy for every Conv2d/Linear layer, in the dtype of the model (float64 for a
    reference).

    A (d_in + 1, d_in + 1) is the mean over samples and positions of the layer's input rows
    [a; 1] (unfolded patches for a conv: the *expand* setting); G (d_out, d_out) the sum over
    samples, positions and the K columns of a square root S_n of each sample's output Hessian
    ``(diag p_n - p_n p_n^T) / N`` of the backpropagated rows g g^T, by forward hooks and
    ``torch.autograd.grad``. Chunks of ``chunk`` samples: the networks have no BatchNorm, so a
    chunk's backward is the sum of its samples' own. For the summed loss multiply G by N.
    """
    N = X.shape[0]
    layers = kfac_layers(model)
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(name: str):
        def capture(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[name], outputs[name] = args[0].detach(), out

        return capture

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    aa = {n: 0.0 for n in layers}
    gg = {n: 0.0 for n in layers}
    rows = dict.fromkeys(layers, 0)
    try:
        for start in range(0, N, chunk):
            f = model(X[start : start + chunk])  # (n, C)
            p = torch.softmax(f.detach(), dim=-1)
            H = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / N
            evals, evecs = torch.linalg.eigh(H)
            roots = evecs * evals.clamp_min(0).sqrt()[:, None, :]  # (n, C, K): H = S S^T
            for name, module in layers.items():
                a = _input_rows(module, inputs[name])
                aa[name] = aa[name] + a.T @ a
                rows[name] += a.shape[0]
            for k in range(roots.shape[2]):
                grads = torch.autograd.grad(
                    f, [outputs[n] for n in layers], roots[:, :, k], retain_graph=True
                )
                for name, g in zip(layers, grads):
                    g = g.flatten(2).transpose(1, 2) if g.ndim == 4 else g
                    g = g.reshape(-1, g.shape[-1])
                    gg[name] = gg[name] + g.T @ g
    finally:
        for h in handles:
            h.remove()
    return {n: (aa[n].cpu() / rows[n], gg[n].cpu()) for n in layers}


def _build(
    state: dict[str, Tensor],
    X: Tensor,
    y: Tensor,
    config: Config,
    seed: int,
    device: str,
    dtype: torch.dtype,
) -> Workload:
    model = make_model(config)
    model.load_state_dict(state)
    model = model.to(device=device, dtype=dtype).eval()
    return Workload(model, X.to(device=device, dtype=dtype), y.to(device), config, seed)


def load_workload(path: str | Path, quick: bool, seed: int, device: str) -> Workload:
    """In a peak-memory child: the float32 workload from a file of :meth:`Trained.record`."""
    saved = torch.load(path, weights_only=True)
    config = workload_config(saved["kind"], quick)
    return _build(saved["state_dict"], saved["X"], saved["y"], config, seed, device, torch.float32)

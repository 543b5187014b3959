"""Networks for 3-D super-resolution of velocity fields (paper 003, "Super Resolution": the CNN,
regular G-CNN and relaxed G-CNN it takes from Wang, Walters and Smidt 2023, their Fig. 1): three
coarse consecutive frames of a 3-D velocity field in, the middle frame at ``factor`` times the
resolution out, on the octahedral group O of :mod:`ella.layers.octahedral`.

Fields
------
A stack of ``F`` velocity fields is ``(B, 3F, D, H, W)``, channel ``3f + i`` the component of
field ``f`` along spatial dim ``i`` of ``(D, H, W)``. A rotation ``g`` acts on it by
``u'(p) = R_g u(R_g^-1 p)`` (grid and components; ``rotate_velocity`` of
:mod:`ella.dynamics.turbulence`). :func:`vector_to_octahedral` writes the fields as group feature
maps ``v(f, g, p) = <R_g e_0, u_f(p)>`` on which ``g`` acts by :func:`~ella.layers.rotate_o`, and
:func:`octahedral_to_vector` maps back.

Architecture (Wang et al. 2023, Fig. 1: encoder at the coarse resolution, upsampling, decoder at
the fine resolution)
-----------------------------------------------------------------------------------------------
:class:`SuperResGCNN`: the three frames lifted by :func:`vector_to_octahedral` (3 input channels
of a group map), ``depth`` :class:`~ella.layers.OctahedralGroupConv` with ``k x k x k`` filters at
the coarse resolution (the encoder), trilinear upsampling of the group map by ``factor``
(:func:`upsample`, which commutes with the 24 rotations), two ``1 x 1 x 1`` group convolutions at
the fine resolution (the decoder, kept pointwise in space: a ``3 x 3 x 3`` group convolution at
``32^3`` voxels costs ``27 * 24^2 * C * C'`` multiply-adds per voxel, out of the CPU budget),
:func:`octahedral_to_vector`, plus a residual: the trilinear upsampling of the coarse middle
frame. ELU after every convolution but the last. With ``relaxed=False`` the combination weights
are tied (the regular G-CNN) and ``model(rotate_velocity(x, g)) == rotate_velocity(model(x), g)``
exactly for all 24 ``g``; the relaxed G-CNN (``relaxed=True``, weights per group element) is
exactly equivariant at initialisation only. :class:`SuperResCNN` is the same layout with
``nn.Conv3d``; :func:`superres_cnn_width` matches its size to a G-CNN's.

Padding is zero padding in both (the octahedral layers are exactly equivariant on cubes with it);
the turbulence is periodic, so circular padding would fit the data better, but the octahedral
layers do not offer it.

Training (:func:`fit_superresolution`): Adam on the mean squared error (smooth, so that the
Hessian measures of :func:`ella.dynamics.curvature_measures`, taken on the same loss, exist),
recording the mean absolute error (the paper's metric) per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ella.dynamics.training import check_pair, check_splits
from ella.layers import OctahedralGroupConv
from ella.layers.octahedral import OCTAHEDRAL_ORDER, OCTAHEDRAL_ROTATIONS
from ella.summary import summary_repr
from symdisc.runtime import (
    NonFiniteLossError,
    check_bool,
    check_float,
    check_instance,
    check_int,
)

__all__ = [
    "vector_to_octahedral",
    "octahedral_to_vector",
    "upsample",
    "SuperResGCNN",
    "SuperResCNN",
    "superres_cnn_width",
    "mae",
    "SuperResFit",
    "fit_superresolution",
]


def _axis_directions(like: Tensor) -> Tensor:
    """``R_g e_0`` for the 24 rotations, ``(24, 3)``, on the device and dtype of ``like``."""
    return OCTAHEDRAL_ROTATIONS[:, :, 0].to(device=like.device, dtype=like.dtype)


def vector_to_octahedral(u: Tensor) -> Tensor:
    """``F`` stacked 3-D vector fields as group feature maps: ``v(f, g, p) = <R_g e_0, u_f(p)>``.

    Args:
        u: ``(B, 3F, D, H, W)``, channel ``3f + i`` the component of field ``f`` along spatial
            dim ``i``.

    Returns:
        ``(B, F, 24, D, H, W)``.

    Equivariance: for ``u'(p) = R_h u(R_h^-1 p)`` (``rotate_velocity``),
    ``v'(g, p) = <R_g e_0, R_h u(R_h^-1 p)> = <R_h^-1 R_g e_0, u(R_h^-1 p)>
    = v(h^-1 g, R_h^-1 p)`` (``R_h`` orthogonal), which is ``rotate_o(v, h)``.

    Raises:
        TypeError: if ``u`` is not a Tensor.
        ValueError: if ``u`` is not ``(B, 3F, D, H, W)``.
    """
    u = check_instance(u, "u", Tensor)
    if u.dim() != 5 or u.shape[1] % 3 != 0 or u.shape[1] == 0:
        raise ValueError(
            f"`u` must be stacked vector fields of shape (B, 3F, D, H, W), got {tuple(u.shape)}"
        )
    b, c = u.shape[:2]
    fields = u.reshape(b, c // 3, 3, *u.shape[2:])
    return torch.einsum("gi,bfi...->bfg...", _axis_directions(u), fields)


def octahedral_to_vector(v: Tensor) -> Tensor:
    """Group feature maps back to vector fields: ``u_f(p) = (3/24) sum_g v(f, g, p) R_g e_0``.

    Args:
        v: ``(B, F, 24, D, H, W)``.

    Returns:
        ``(B, 3F, D, H, W)``.

    A left inverse of :func:`vector_to_octahedral`: ``R_g e_0`` runs over the six signed axes,
    four times each, so ``sum_g R_g e_0 (R_g e_0)^T = 4 * 2 I = 8 I``. Equivariant: for
    ``v' = rotate_o(v, h)``, ``sum_g v(h^-1 g, R_h^-1 p) R_g e_0 = R_h sum_g' v(g', R_h^-1 p)
    R_g' e_0`` (substituting ``g = h g'``).

    Raises:
        TypeError: if ``v`` is not a Tensor.
        ValueError: if ``v`` is not ``(B, F, 24, D, H, W)``.
    """
    v = check_instance(v, "v", Tensor)
    if v.dim() != 6 or v.shape[2] != OCTAHEDRAL_ORDER:
        raise ValueError(
            f"`v` must be group feature maps of shape (B, F, {OCTAHEDRAL_ORDER}, D, H, W), "
            f"got {tuple(v.shape)}"
        )
    u = torch.einsum("gi,bfg...->bfi...", _axis_directions(v), v) * (3 / OCTAHEDRAL_ORDER)
    return u.flatten(1, 2)


def upsample(x: Tensor, factor: int) -> Tensor:
    """Trilinear upsampling (``align_corners=False``) of a volume ``(B, C, D, H, W)`` or a
    group feature map ``(B, C, 24, D, H, W)`` by an integer ``factor`` in every spatial dim.

    It commutes with :func:`~ella.layers.rotate_volume` and :func:`~ella.layers.rotate_o`:
    trilinear interpolation is separable and the same along every axis (so it commutes with
    axis permutations), and with ``align_corners=False`` the sample position of output voxel
    ``j`` is ``(j + 1/2) / factor - 1/2``, mirror symmetric about the centre of the volume, with
    the edge clamping symmetric too (so it commutes with flips).
    """
    factor = check_int(factor, "factor", minimum=1)
    if x.dim() == 6:
        y = F.interpolate(x.flatten(1, 2), scale_factor=factor, mode="trilinear")
        return y.unflatten(1, x.shape[1:3])
    if x.dim() != 5:
        raise ValueError(
            f"`x` must be (B, C, D, H, W) or (B, C, 24, D, H, W), got shape {tuple(x.shape)}"
        )
    return F.interpolate(x, scale_factor=factor, mode="trilinear")


def _check_frames(x: Tensor, frames: int) -> Tensor:
    x = check_instance(x, "x", Tensor)
    if x.dim() != 5 or x.shape[1] != 3 * frames:
        raise ValueError(
            f"`x` must be {frames} stacked velocity frames of shape (B, {3 * frames}, m, m, m), "
            f"got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"`x` must be a floating tensor, got dtype {x.dtype}")
    return x


class SuperResGCNN(nn.Module):
    """The (relaxed) octahedral regular G-CNN for super-resolution, ``(B, 9, m, m, m) ->
    (B, 3, factor m, factor m, factor m)`` (three coarse frames in, the fine middle frame out).

    Layers: :func:`vector_to_octahedral` of the frames (3 channels), encoder ``OctahedralGroupConv
    3 -> C -> ... -> C`` (``depth`` layers, ``k x k x k``), :func:`upsample`, decoder
    ``OctahedralGroupConv C -> C -> 1`` (``1 x 1 x 1``), :func:`octahedral_to_vector`, plus
    :func:`upsample` of the middle frame ``x[:, 3:6]``; ELU in between.

    Args:
        width: channels ``C`` of the hidden group maps.
        depth: encoder group convolutions (>= 1).
        n_filter_banks: filter banks ``L`` of every layer.
        relaxed: per-group-element combination weights (the relaxed G-CNN, equivariant at
            initialisation); False ties them (the regular G-CNN, exactly equivariant).
        factor: the upsampling factor.
        kernel_size: odd encoder filter size.

    Raises:
        TypeError, ValueError: for malformed arguments; in ``forward`` for an input not
            ``(B, 9, m, m, m)``.
    """

    frames = 3

    def __init__(
        self, width: int = 4, depth: int = 2, n_filter_banks: int = 2, relaxed: bool = True, *,
        factor: int = 4, kernel_size: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        check_int(width, "width", minimum=1)
        check_int(depth, "depth", minimum=1)
        check_bool(relaxed, "relaxed")
        self.factor = check_int(factor, "factor", minimum=1)
        opts = dict(n_filter_banks=n_filter_banks, tied=not relaxed)
        chans = [self.frames] + [width] * depth
        self.encoder = nn.ModuleList(
            OctahedralGroupConv(a, b, kernel_size, **opts) for a, b in zip(chans[:-1], chans[1:])
        )
        self.decoder = nn.ModuleList(
            [OctahedralGroupConv(width, width, 1, **opts), OctahedralGroupConv(width, 1, 1, **opts)]
        )
        self.act = nn.ELU()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 9, m, m, m) -> (B, 3, factor m, factor m, factor m)``."""
        x = _check_frames(x, self.frames)
        h = vector_to_octahedral(x)
        for layer in self.encoder:
            h = self.act(layer(h))
        h = upsample(h, self.factor)
        h = self.decoder[1](self.act(self.decoder[0](h)))
        return upsample(x[:, 3:6], self.factor) + octahedral_to_vector(h)


class SuperResCNN(nn.Module):
    """The plain 3-D CNN with the layout of :class:`SuperResGCNN`: encoder ``nn.Conv3d 9 -> W ->
    ... -> W`` (``depth`` layers, ``k x k x k``, zero padding) at the coarse resolution,
    :func:`upsample`, decoder ``nn.Conv3d W -> W -> 3`` (``1 x 1 x 1``), plus the upsampled
    middle frame; ELU in between.

    Args:
        width: hidden channels ``W`` (:func:`superres_cnn_width` matches a parameter budget).
        depth: encoder convolutions (>= 1).
        factor: the upsampling factor.
        kernel_size: odd encoder filter size.
    """

    frames = 3

    def __init__(
        self, width: int = 16, depth: int = 2, *, factor: int = 4, kernel_size: int = 3
    ) -> None:
        super().__init__()
        check_int(width, "width", minimum=1)
        check_int(depth, "depth", minimum=1)
        k = check_int(kernel_size, "kernel_size", minimum=1)
        if k % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd, got {k}")
        self.factor = check_int(factor, "factor", minimum=1)
        chans = [3 * self.frames] + [width] * depth
        self.encoder = nn.ModuleList(
            nn.Conv3d(a, b, k, padding=k // 2) for a, b in zip(chans[:-1], chans[1:])
        )
        self.decoder = nn.ModuleList([nn.Conv3d(width, width, 1), nn.Conv3d(width, 3, 1)])
        self.act = nn.ELU()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 9, m, m, m) -> (B, 3, factor m, factor m, factor m)``."""
        x = _check_frames(x, self.frames)
        h = x
        for layer in self.encoder:
            h = self.act(layer(h))
        h = upsample(h, self.factor)
        h = self.decoder[1](self.act(self.decoder[0](h)))
        return upsample(x[:, 3:6], self.factor) + h


def _cnn_count(width: int, depth: int, k: int) -> int:
    """Parameters of :class:`SuperResCNN` (biased convolutions)."""
    enc = 9 * width * k**3 + width + (depth - 1) * (width * width * k**3 + width)
    return enc + width * width + width + width * 3 + 3


def superres_cnn_width(n_params: int, depth: int = 2, kernel_size: int = 3) -> int:
    """The width of :class:`SuperResCNN` whose parameter count is closest to ``n_params`` (the
    smaller on a tie).

    Raises:
        TypeError, ValueError: for non-int or non-positive arguments.
    """
    n_params = check_int(n_params, "n_params", minimum=1)
    depth = check_int(depth, "depth", minimum=1)
    k = check_int(kernel_size, "kernel_size", minimum=1)
    best, width = 1, 1
    while _cnn_count(width, depth, k) < n_params:
        width += 1
        if abs(_cnn_count(width, depth, k) - n_params) < abs(_cnn_count(best, depth, k) - n_params):
            best = width
    return best


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def mae(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 16) -> float:
    """Mean absolute error ``mean |model(x) - y|`` over all entries (no gradients).

    Raises:
        TypeError, ValueError: as :func:`ella.dynamics.rmse`.
    """
    check_instance(model, "model", nn.Module)
    x, y = check_pair(x, y)
    check_int(batch_size, "batch_size", minimum=1)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            d = model(x[i : i + batch_size]) - y[i : i + batch_size]
            total += float(d.double().abs().sum())
            count += d.numel()
    return total / count


@dataclass(repr=False)
class SuperResFit:
    """What :func:`fit_superresolution` returns.

    Attributes:
        history: per epoch (index 0: the initial model) ``train_mae``, ``val_mae``, ``test_mae``.
        best_epoch: the epoch of the lowest validation MAE.
        early_epoch: the epoch of the ``"early"`` weights.
        checkpoints: ``{"early": state, "best": state}``, detached copies of the state dict.
    """

    history: dict[str, list[float]]
    best_epoch: int
    early_epoch: int
    checkpoints: dict[str, dict[str, Tensor]]

    def __repr__(self) -> str:
        return summary_repr(self)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit_superresolution(
    model: nn.Module, data, *, epochs: int, lr: float = 3e-3, batch_size: int = 8,
    seed: int = 0, early_epoch: int = 3,
) -> SuperResFit:  # fmt: skip
    """Train ``model`` with Adam on the mean squared error of the fine frame, one seeded
    shuffle per epoch; record the MAE of every split per epoch and keep the weights of epoch
    ``early_epoch`` and of the epoch with the lowest validation MAE (paper 003, "Super
    Resolution": checkpoints at epoch 3 and at the best epoch).

    Args:
        model: the network, trained in place.
        data: anything with ``train``, ``val``, ``test`` pairs ``(x, y)`` (e.g.
            ``SuperResolutionData`` of :mod:`ella.dynamics.turbulence`).
        epochs: epochs in total.
        lr: Adam's learning rate.
        batch_size: samples per minibatch.
        seed: seed of the shuffles (a generator on the data's device).
        early_epoch: the epoch of the ``"early"`` weights, in ``[1, epochs]``.

    Raises:
        TypeError, ValueError: for malformed arguments (a ``data`` without ``train``, ``val``,
            ``test`` pairs of tensors, ``early_epoch`` not in ``[1, epochs]``).
        NonFiniteLossError: (a ``FloatingPointError``) for a non-finite minibatch loss (e.g.
            NaN in the training data) or a non-finite MAE (the initial model's validation or
            test MAE, before any step, or any MAE after an epoch); the model is left at the
            weights of its last finite step (the step of a non-finite loss is not taken; after
            a non-finite MAE the weights of the previous epoch are restored).
    """
    check_instance(model, "model", nn.Module)
    epochs = check_int(epochs, "epochs", minimum=1)
    early_epoch = check_int(early_epoch, "early_epoch", minimum=1)
    if early_epoch > epochs:
        raise ValueError(f"`early_epoch` must be an int in [1, {epochs}], got {early_epoch}")
    check_float(lr, "lr", positive=True)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    check_splits(data)
    x, y = data.train
    gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    splits = ("train", "val", "test")

    def record() -> dict[str, float]:
        return {f"{s}_mae": mae(model, *getattr(data, s)) for s in splits}

    def check_record(now: dict[str, float], epoch: int, keys: tuple[str, ...]) -> None:
        for key in keys:
            if not math.isfinite(now[key]):
                if epoch:
                    model.load_state_dict(good)
                where = f"epoch {epoch}" if epoch else "the initial model"
                done = "restored the weights of the previous epoch" if epoch else "no step taken"
                raise NonFiniteLossError(
                    f"training stopped at {where}: the {key} is {now[key]}; {done}"
                )

    history = [record()]
    check_record(history[0], 0, ("val_mae", "test_mae"))
    best, snapshots = 0, {"best": _snapshot(model)}
    for epoch in range(1, epochs + 1):
        good = _snapshot(model)
        order = torch.randperm(len(x), generator=gen, device=x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = F.mse_loss(model(x[idx]), y[idx])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"training stopped at epoch {epoch}: the minibatch loss is {value}; "
                    f"the model keeps the weights of its last finite step"
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append(record())
        check_record(history[-1], epoch, tuple(history[-1]))
        if epoch == early_epoch:
            snapshots["early"] = _snapshot(model)
        if history[-1]["val_mae"] < history[best]["val_mae"]:
            best, snapshots["best"] = epoch, _snapshot(model)
    out = {f"{s}_mae": [r[f"{s}_mae"] for r in history] for s in splits}
    return SuperResFit(out, best, early_epoch, snapshots)

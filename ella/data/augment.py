"""Data augmentation of the MAP weight steps (paper 000, appendix F.6: "standard data
augmentation consisting of horizontal flips and 4-pixel random shifts", never applied when the
marginal likelihood is estimated; pass it as ``train_marglik(..., augment=...)``)."""

from __future__ import annotations

import torch
from torch import Tensor

from symdisc.runtime import check_bool, check_instance, check_int

__all__ = ["flip_shift"]


def flip_shift(
    x: Tensor, generator: torch.Generator | None = None, *, shift: int = 4, flip: bool = True
) -> Tensor:
    """A random horizontal flip and a random shift of every image, with zero padding (F.6).

    Image b is first mirrored along its width (``x[b].flip(-1)``) with probability 1/2 (when
    ``flip``), then shifted by ``dy_b`` rows and ``dx_b`` columns, each uniform in
    ``[-shift, shift]``: ``out[b, ..., i, j] = img[..., i - dy_b, j - dx_b]``, 0 where that
    falls outside the image (``torch.roll`` with zeros instead of the wrapped pixels). One
    gather over a zero-padded copy; no loop over images.

    The draws, in this order, from ``generator`` (None: the global RNG) on the generator's
    device (CPU for None): ``torch.rand(B) < 0.5`` (only when ``flip``), then
    ``torch.randint(-shift, shift + 1, (2, B))`` (rows dy, then dx; only when ``shift > 0``);
    they are moved to ``x``'s device, so a CPU generator serves CUDA images too.

    Args:
        x: (B, ..., H, W) images, at least 3 dimensions (e.g. (B, C, H, W)); any dtype and
            device.
        generator: the random state.
        shift: the largest shift in pixels along each axis (0: no shift), below the images'
            height and width.
        flip: whether to flip.

    Returns:
        (B, ..., H, W), like ``x`` (a new tensor; differentiable in ``x``).

    Raises:
        TypeError: for a non-tensor ``x``, a ``generator`` that is not a ``torch.Generator``, a
            non-int ``shift`` or a non-bool ``flip``.
        ValueError: for ``x`` of fewer than 3 dimensions or with no elements (a dimension of
            size 0), or a ``shift`` that is negative or not below min(H, W).
    """
    check_instance(x, "x", Tensor)
    if generator is not None:
        check_instance(generator, "generator", torch.Generator)
    check_int(shift, "shift", minimum=0)
    check_bool(flip, "flip")
    if x.ndim < 3 or x.numel() == 0:
        raise ValueError(
            f"`x` must be (B, ..., H, W) images, at least one, none of their dimensions 0, got "
            f"shape {tuple(x.shape)}"
        )
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    if shift >= min(h, w):
        raise ValueError(
            f"`shift` must be below the images' side min(H, W) = {min(h, w)} (a shift by a "
            f"whole side leaves a blank image), got {shift}"
        )
    draw_device = torch.device("cpu") if generator is None else generator.device
    draw = {"generator": generator, "device": draw_device}
    mirrored = torch.zeros(b, dtype=torch.bool, device=x.device)
    if flip:
        mirrored = (torch.rand(b, **draw) < 0.5).to(x.device)
    moves = torch.zeros(2, b, dtype=torch.long, device=x.device)
    if shift > 0:
        moves = torch.randint(-shift, shift + 1, (2, b), **draw).to(x.device)
    if not flip and shift == 0:
        return x.clone()
    s = shift
    padded = torch.nn.functional.pad(x.reshape(b, -1, h, w), (s, s, s, s))  # (B, K, H+2s, W+2s)
    rows = torch.arange(h, device=x.device) - moves[0][:, None]  # (B, H) source row, unpadded
    cols = torch.arange(w, device=x.device) - moves[1][:, None]  # (B, W) source col in img
    cols = torch.where(mirrored[:, None], w - 1 - cols, cols)  # img = x flipped: col -> W-1-col
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, (rows + s)[:, :, None], (cols + s)[:, None, :]]  # (B, H, W, K)
    return out.permute(0, 3, 1, 2).reshape(x.shape)

"""Figures of curvature results and of discovery, drawn without pyplot or a global backend.

The figures of paper 002 (learned generators, Figs. 2-6; training curves; the loss along a learned
flow) and spectral densities of the curvature layer; infrastructure, no equation.

Figures are made with :class:`matplotlib.figure.Figure` directly, so importing this module never
selects a backend or touches pyplot's global state; ``fig.savefig(path)`` writes a file with
matplotlib's default (Agg) renderer, on machines without a display as well.
"""

from __future__ import annotations

import matplotlib.figure
import matplotlib.image
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from symdisc.curvature.spectrum import SpectralDensity
from symdisc.runtime.checks import (
    check_bool,
    check_instance,
    check_int,
    check_output_path,
)

__all__ = [
    "plot_spectral_density",
    "generators",
    "history",
    "flow_losses",
    "save",
    "canonical",
    "invariance_distributions",
]


def plot_spectral_density(
    density: SpectralDensity,
    reference_eigenvalues: Tensor | None = None,
    ax: Axes | None = None,
    *,
    bins: int = 100,
    log: bool = True,
) -> tuple[matplotlib.figure.Figure, Axes]:
    """Draw an SLQ eigenvalue density, optionally over a histogram of exact eigenvalues.

    Args:
        density: a :class:`~symdisc.curvature.SpectralDensity` (from
            :func:`~symdisc.curvature.slq_density`), drawn as a line.
        reference_eigenvalues: (P,) exact eigenvalues (e.g. from a dense Hessian), drawn as a
            histogram normalised to unit area, the same normalisation as the density.
        ax: axes to draw into; default: a new :class:`~matplotlib.figure.Figure` with one axes.
        bins: number of histogram bins over the range of the reference eigenvalues.
        log: logarithmic y axis, which shows the bulk near zero and the few outliers together.
            Its lower limit is set a million times below the largest value shown, so that the
            Gaussian tails of the density do not stretch the axis over hundreds of decades.

    Returns:
        ``(figure, axes)``.

    Raises:
        TypeError: for a ``density`` that is not a SpectralDensity, ``ax`` that is not
            matplotlib axes, non-int ``bins`` or non-bool ``log``.
        ValueError: if ``reference_eigenvalues`` is not a non-empty, finite 1-D tensor, or
            ``bins < 1``.

    Example:
        >>> fig, ax = plot_spectral_density(slq_density(torch.diag(torch.arange(50.0)), n_steps=20))
        >>> fig.savefig("spectrum.png")
    """
    check_instance(density, "density", SpectralDensity)
    if ax is not None:
        check_instance(ax, "ax", Axes)
    check_int(bins, "bins", minimum=1)
    check_bool(log, "log")
    if ax is None:
        fig = matplotlib.figure.Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()
    top = float(density.density.max())
    if reference_eigenvalues is not None:
        if not isinstance(reference_eigenvalues, Tensor) or reference_eigenvalues.ndim != 1:
            what = (
                f"shape {tuple(reference_eigenvalues.shape)}"
                if isinstance(reference_eigenvalues, Tensor)
                else type(reference_eigenvalues).__name__
            )
            raise ValueError(
                f"`reference_eigenvalues` must be a 1-D tensor of eigenvalues, got {what}"
            )
        if reference_eigenvalues.numel() == 0:
            raise ValueError("`reference_eigenvalues` must not be empty, got shape (0,)")
        if not torch.isfinite(reference_eigenvalues).all():
            raise ValueError("`reference_eigenvalues` must be finite, got NaN or Inf entries")
        values = reference_eigenvalues.detach().to(torch.float64).cpu().numpy()
        heights, _, _ = ax.hist(
            values,
            bins=bins,
            density=True,
            color="0.75",
            label=f"exact eigenvalues (P={values.size})",
        )
        top = max(top, float(np.max(heights)))
    grid = density.grid.detach().cpu().numpy()
    ax.plot(grid, density.density.detach().cpu().numpy(), color="C0", lw=1.2, label="SLQ density")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=top * 1e-6, top=top * 3)
    ax.legend(loc="upper right")
    return fig, ax


def save(fig: matplotlib.figure.Figure, path) -> None:
    """Write a figure to ``path`` (PNG by its suffix) with tight bounds.

    Raises:
        TypeError: for a ``fig`` that is not a matplotlib Figure or a ``path`` that is not a
            str or path.
        FileNotFoundError: when the directory of ``path`` does not exist.
        ValueError: for a ``path`` that is a directory or whose suffix is not a format
            matplotlib writes (``.png``, ``.pdf``, ``.svg``, ...).
    """
    check_instance(fig, "fig", matplotlib.figure.Figure)
    path = check_output_path(path, "path", suffixes=fig.canvas.get_supported_filetypes())
    fig.savefig(path, dpi=120, bbox_inches="tight")


def canonical(h: Tensor) -> Tensor:
    """Generators rescaled to a largest absolute entry of 1, with that entry made positive.

    A Lie algebra element is only defined up to scale (and, for one-parameter groups, sign), so
    heatmaps are drawn after this canonicalisation (paper 002, Figs. 2-5). Shapes: (k, d, d).

    Raises:
        TypeError: for an ``h`` that is not a floating tensor.
        ValueError: for an ``h`` that is not (k, d, d), or with NaN or Inf entries.
    """
    _check_generators(h, "h")
    flat = h.detach().reshape(h.shape[0], -1)
    idx = flat.abs().argmax(dim=1, keepdim=True)
    peak = flat.gather(1, idx)
    return (flat / torch.where(peak == 0, torch.ones_like(peak), peak)).reshape(h.shape)


def _check_generators(value: object, name: str) -> Tensor:
    """``value`` if it is a finite floating (k, d, d) tensor."""
    check_instance(value, name, Tensor)
    if not value.is_floating_point():
        raise TypeError(f"`{name}` must be a floating tensor of generators, got {value.dtype}")
    if value.ndim != 3 or value.shape[1] != value.shape[2] or value.shape[0] == 0:
        shape = tuple(value.shape)
        raise ValueError(f"`{name}` must be a (k, d, d) tensor of generators, k >= 1, got {shape}")
    if not torch.isfinite(value).all():
        raise ValueError(f"`{name}` must be finite, got NaN or Inf entries (a diverged run?)")
    return value


def _heatmap(ax: Axes, m: np.ndarray, label: str, *, numbers: bool) -> matplotlib.image.AxesImage:
    """One canonical generator as a heatmap with its entries written in, rows and columns from 1."""
    d = m.shape[0]
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
    if numbers:
        size = 10 if d <= 3 else 8
        for (r, c), value in np.ndenumerate(m):
            text = "0" if abs(value) < 5e-3 else f"{value:.2f}"
            color = "white" if abs(value) > 0.6 else "black"
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color=color)
    ticks = np.arange(d)
    ax.set_xticks(ticks, [str(i + 1) for i in ticks], fontsize=9)
    ax.set_yticks(ticks, [str(i + 1) for i in ticks], fontsize=9)
    ax.set_xlabel("column j", fontsize=9)
    ax.set_title(label, fontsize=11)
    return im


def generators(
    h: Tensor,
    *,
    known: Tensor | None = None,
    title: str = "",
    known_title: str = "known",
) -> matplotlib.figure.Figure:
    """Heatmaps of k generators (k, d, d) after :func:`canonical`, on one colour scale [-1, 1].

    Paper 002, Figs. 2-5. Each panel is labelled ``h_j`` (learned) and, with ``known`` (r, d, d),
    a second row shows the known generators ``A_q``, canonicalised the same way, so the two can
    be compared entry by entry. Axes count rows i and columns j from 1; entries are written in
    (for d <= 6), with ``0`` for entries below 0.005 in size. There is no title above the panels:
    ``title`` (e.g. the case name) and ``known_title`` label the rows at their left, so they never
    cover the panel labels.

    Raises:
        TypeError: if h or known is not a floating tensor.
        ValueError: if h or known is not (k, d, d) with finite entries, or their d differ.
    """
    for name, m in (("h", h), ("known", known)):
        if m is not None:
            _check_generators(m, name)
    if known is not None and known.shape[1] != h.shape[1]:
        raise ValueError(
            f"`known` must be generators of the same gl(d) as `h` (d = {h.shape[1]}), "
            f"got d = {known.shape[1]}"
        )
    rows = [(canonical(h).cpu().double().numpy(), "h", title or "learned")]
    if known is not None:
        rows.append((canonical(known).cpu().double().numpy(), "A", known_title))
    cols = max(m.shape[0] for m, _, _ in rows)
    d = h.shape[1]
    panel = 1.9 if d <= 3 else 2.3
    fig = matplotlib.figure.Figure(
        figsize=(panel * cols + 1.4, (panel + 0.5) * len(rows)), layout="constrained"
    )
    axes = fig.subplots(len(rows), cols, squeeze=False)
    im = None
    for r, (mats, symbol, row_label) in enumerate(rows):
        for j in range(cols):
            ax = axes[r, j]
            if j >= mats.shape[0]:
                ax.set_axis_off()
                continue
            im = _heatmap(ax, mats[j], f"${symbol}_{{{j + 1}}}$", numbers=d <= 6)
            if j == 0:
                ax.set_ylabel(f"{row_label}\nrow i", fontsize=10)
    cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    cbar.set_label("entry / largest entry", fontsize=9)
    cbar.ax.tick_params(labelsize=9)
    return fig


def history(records: list[dict[str, float]], *, title: str = "") -> matplotlib.figure.Figure:
    """Training curves: every logged loss term against the step, on a log scale (Fig. 6).

    Args:
        records: the history of :func:`symdisc.trainer.train` (``Discovery.history``): dicts with
            ``step`` and the loss terms.

    Raises:
        TypeError: for ``records`` that is not a list of dicts.
        ValueError: for no record, or a record without ``step``.
    """
    if isinstance(records, (str, dict)) or not isinstance(records, (list, tuple)):
        raise TypeError(f"`records` must be a list of dicts, got {type(records).__name__}")
    if not records:
        raise ValueError("`records` must hold at least one record, got an empty list")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "step" not in r:
            raise ValueError(f"`records[{i}]` must be a dict with a 'step', got {r!r:.80}")
    fig = matplotlib.figure.Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    steps = [r["step"] for r in records]
    skip = {"step", "lr"}
    for name in [k for k in records[0] if k not in skip] if records else []:
        values = np.abs([r[name] for r in records])
        if np.any(values > 0):
            ax.plot(steps, values, label=name, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss term (unweighted)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    return fig


def flow_losses(profile: dict[str, Tensor], *, title: str = "") -> matplotlib.figure.Figure:
    """Relative loss change along the learned flow and along random directions (medians, IQR).

    Args:
        profile: :func:`symdisc.metrics.flow_profile`'s dict: ``t`` (T,), and ``flow`` and
            ``random`` (T, n) relative loss changes.

    Raises:
        TypeError: for ``profile`` that is not a dict of tensors.
        ValueError: for a missing key, or ``flow`` / ``random`` not (T, n) with T = len(t).
    """
    check_instance(profile, "profile", dict)
    for key in ("t", "flow", "random"):
        if not isinstance(profile.get(key), Tensor):
            raise ValueError(
                f"`profile` must hold tensors 't', 'flow' and 'random' "
                f"(symdisc.metrics.flow_profile), got {key!r}: {type(profile.get(key)).__name__}"
            )
    n_t = profile["t"].numel()
    for key in ("flow", "random"):
        if profile[key].ndim != 2 or profile[key].shape[0] != n_t or profile[key].shape[1] == 0:
            raise ValueError(
                f"`profile[{key!r}]` must be (T, n) with T = {n_t} (the length of 't'), n >= 1, "
                f"got {tuple(profile[key].shape)}"
            )
    fig = matplotlib.figure.Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    t = profile["t"].cpu().numpy()
    for key, label, color in (("flow", "learned flow", "C0"), ("random", "random direction", "C3")):
        values = profile[key].double().cpu()
        q = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=1)
        ax.plot(t, q[1].numpy(), color=color, label=label)
        ax.fill_between(t, q[0].numpy(), q[2].numpy(), color=color, alpha=0.2)
    ax.set_xlabel("path length")
    ax.set_ylabel("|L(theta_t) - L(theta)| / |L(theta)|")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def invariance_distributions(
    errors: dict[str, Tensor], *, title: str = ""
) -> matplotlib.figure.Figure:
    """Histograms (log-spaced bins) of normalised invariance errors, one per case.

    Raises:
        TypeError: for ``errors`` that is not a dict of tensors.
        ValueError: for no case, or a case without values.
    """
    check_instance(errors, "errors", dict)
    if not errors:
        raise ValueError("`errors` must hold at least one case {name: errors}, got an empty dict")
    for k, v in errors.items():
        check_instance(v, f"errors[{k!r}]", Tensor)
        if v.numel() == 0:
            raise ValueError(f"`errors[{k!r}]` must not be empty, got shape {tuple(v.shape)}")
    fig = matplotlib.figure.Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    values = {
        k: v.detach().double().cpu().reshape(-1).clamp_min(1e-12).numpy() for k, v in errors.items()
    }
    lo = min(float(np.quantile(v, 0.01)) for v in values.values())
    bins = np.logspace(np.log10(lo), 0, 40)
    for name, v in values.items():
        ax.hist(v, bins=bins, histtype="step", label=f"{name} (median {np.median(v):.2g})")
    ax.set_xscale("log")
    ax.set_xlabel("|<grad L, v>| / (||grad L|| ||v||)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig

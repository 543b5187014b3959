"""Figures of curvature results and of discovery, drawn without pyplot or a global backend.

The figures of paper 002 (learned generators, Figs. 2-6; training curves; the loss along a learned
flow) and spectral densities of the curvature layer; infrastructure, no equation.

Figures are made with :class:`matplotlib.figure.Figure` directly, so importing this module never
selects a backend or touches pyplot's global state; ``fig.savefig(path)`` writes a file with
matplotlib's default (Agg) renderer, on machines without a display as well.
"""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from symdisc.curvature.spectrum import SpectralDensity
from symdisc.runtime.checks import check_int

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
        ValueError: if ``reference_eigenvalues`` is not a non-empty 1-D tensor, or ``bins < 1``.

    Example:
        >>> fig, ax = plot_spectral_density(slq_density(torch.diag(torch.arange(50.0)), n_steps=20))
        >>> fig.savefig("spectrum.png")
    """
    check_int(bins, "bins", minimum=1)
    if ax is None:
        fig = matplotlib.figure.Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()
    top = float(density.density.max())
    if reference_eigenvalues is not None:
        if not isinstance(reference_eigenvalues, Tensor) or reference_eigenvalues.ndim != 1:
            raise ValueError("`reference_eigenvalues` must be a 1-D tensor of eigenvalues")
        if reference_eigenvalues.numel() == 0:
            raise ValueError("`reference_eigenvalues` must not be empty")
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
    """Write a figure to ``path`` (PNG by its suffix) with tight bounds."""
    fig.savefig(path, dpi=120, bbox_inches="tight")


def canonical(h: Tensor) -> Tensor:
    """Generators rescaled to a largest absolute entry of 1, with that entry made positive.

    A Lie algebra element is only defined up to scale (and, for one-parameter groups, sign), so
    heatmaps are drawn after this canonicalisation (paper 002, Figs. 2-5). Shapes: (k, d, d).
    """
    flat = h.detach().reshape(h.shape[0], -1)
    idx = flat.abs().argmax(dim=1, keepdim=True)
    peak = flat.gather(1, idx)
    return (flat / torch.where(peak == 0, torch.ones_like(peak), peak)).reshape(h.shape)


def generators(h: Tensor, *, title: str = "") -> matplotlib.figure.Figure:
    """Heatmaps of k generators (k, d, d) after :func:`canonical`, on one colour scale [-1, 1]."""
    h = canonical(h).cpu().numpy()
    k, d = h.shape[0], h.shape[1]
    fig = matplotlib.figure.Figure(figsize=(2.2 * k + 0.8, 2.4))
    axes = fig.subplots(1, k, squeeze=False)[0]
    for j, ax in enumerate(axes):
        im = ax.imshow(h[j], cmap="RdBu_r", vmin=-1, vmax=1)
        if d <= 6:
            for (r, c), value in np.ndenumerate(h[j]):
                ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"$h_{j + 1}$")
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def history(records: list[dict[str, float]], *, title: str = "") -> matplotlib.figure.Figure:
    """Training curves: every logged loss term against the step, on a log scale (Fig. 6)."""
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
    """Relative loss change along the learned flow and along random directions (medians, IQR)."""
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
    """Histograms (log-spaced bins) of normalised invariance errors, one per case."""
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

"""Figures of curvature results, drawn without pyplot or a global backend.

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

__all__ = ["plot_spectral_density"]


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
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"`bins` must be a positive int, got {bins!r}")
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

"""Figures of the ella experiments, drawn without pyplot or a global backend (infrastructure: no
equation; the figures of paper 001, Figs. 1-4, of paper 003, Figs. 5-13, and paper 000's
learned-paths chart, Fig. 3: every function names the figure it draws).

Figures are made with :class:`matplotlib.figure.Figure` directly (``fig.savefig`` renders with
Agg), so importing this module never selects a backend or touches pyplot's global state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.figure
import matplotlib.ticker
import numpy as np
import torch
from torch import Tensor

from symdisc.runtime import check_float, check_instance, check_int, check_output_path

__all__ = [
    "save",
    "accuracy_vs_size",
    "decision_boundaries",
    "eta_trajectories",
    "flow_fields",
    "reliability_diagram",
]


def save(fig: matplotlib.figure.Figure, path) -> None:
    """Write ``fig`` to ``path`` (PNG by its suffix) at 120 dpi.

    Raises:
        TypeError: for a ``fig`` that is not a matplotlib Figure or a ``path`` that is not a
            str or path.
        FileNotFoundError: when the directory of ``path`` does not exist.
        ValueError: for a ``path`` that is a directory or whose suffix is not a format
            matplotlib writes (``.png``, ``.pdf``, ``.svg``, ...).
    """
    check_instance(fig, "fig", matplotlib.figure.Figure)
    path = check_output_path(path, "path", suffixes=fig.canvas.get_supported_filetypes())
    fig.savefig(path, dpi=120)


def _panels(value: object, name: str, what: str) -> Mapping:
    """``value`` if it is a non-empty mapping (``what`` describes its entries)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"`{name}` must be a mapping {what}, got {type(value).__name__}")
    if not value:
        raise ValueError(f"`{name}` must hold at least one entry {what}, got an empty mapping")
    return value


def _array(value: object, name: str, ndim: int) -> np.ndarray:
    """``value`` (a tensor, array or nested sequence) as a non-empty float64 array of ``ndim``
    dimensions (ragged per-seed rows rejected)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`{name}` must be {'a list of equally long lists' if ndim == 2 else 'a list'} of "
            f"numbers, got {type(value).__name__} ({err})"
        ) from None
    if a.ndim != ndim or a.size == 0:
        raise ValueError(
            f"`{name}` must be a non-empty {ndim}-D list of numbers"
            f"{' (one row per seed)' if ndim == 2 else ''}, got shape {a.shape}"
        )
    return a


def decision_boundaries(
    panels: Mapping[str, dict],
    x: Tensor,
    y: Tensor,
    *,
    limit: float = 2.2,
    resolution: int = 120,
) -> matplotlib.figure.Figure:
    """Predicted classes over the plane, one panel per case (paper 001, Figs. 1-2).

    Args:
        panels: ``{title: {"predict": f, "angle_deg": float | None, "subtitle": str}}`` with
            ``f(points (M, 2)) -> class probabilities (M, C)``; a learned rotation extent is
            drawn as a wedge of +-angle around the positive x axis.
        x, y: the training points (N, 2) and labels (N,), drawn on every panel.
        limit: the half-width of the square drawn.
        resolution: grid points per axis (at least 2).

    Raises:
        TypeError: for ``panels`` that is not a mapping of dicts with a callable ``predict``,
            ``x`` or ``y`` that are not tensors (floating, integer).
        ValueError: for no panel, ``x`` not (N, 2) with N >= 1, ``y`` not (N,), a
            non-positive ``limit`` or ``resolution`` below 2, or a ``predict`` that does not
            return (M, C) probabilities for M points.
    """
    _panels(panels, "panels", "{title: {'predict': f, ...}}")
    for title, panel in panels.items():
        if not isinstance(panel, Mapping) or not callable(panel.get("predict")):
            raise TypeError(
                f"`panels[{title!r}]` must be a dict with a callable 'predict' (points (M, 2) -> "
                f"probabilities (M, C)), got {panel!r:.80}"
            )
    check_instance(x, "x", Tensor)
    check_instance(y, "y", Tensor)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0 or not x.is_floating_point():
        raise ValueError(
            f"`x` must be a floating (N, 2) tensor, N >= 1, got {x.dtype} {tuple(x.shape)}"
        )
    if y.shape != x.shape[:1] or y.is_floating_point():
        raise ValueError(
            f"`y` must be an integer (N,) tensor of labels with N = {x.shape[0]}, got "
            f"{y.dtype} {tuple(y.shape)}"
        )
    limit = check_float(limit, "limit", positive=True)
    check_int(resolution, "resolution", minimum=2)
    fig = matplotlib.figure.Figure(figsize=(3.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    grid = np.linspace(-limit, limit, resolution)
    gx, gy = np.meshgrid(grid, grid)
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=x.dtype)
    n_classes = int(y.max()) + 1
    cmap = matplotlib.colormaps["tab10"]
    for ax, (title, panel) in zip(axes, panels.items()):
        with torch.no_grad():
            probs = panel["predict"](points)
        if not isinstance(probs, Tensor) or probs.ndim != 2 or len(probs) != len(points):
            shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
            raise ValueError(
                f"`panels[{title!r}]['predict']` must return (M, C) probabilities for M = "
                f"{len(points)} points, got {shape}"
            )
        probs = probs.detach().cpu().numpy()
        label = probs.argmax(1).reshape(gx.shape)
        conf = probs.max(1).reshape(gx.shape)
        ax.contourf(
            gx,
            gy,
            label,
            levels=np.arange(n_classes + 1) - 0.5,
            cmap="tab10",
            vmin=0,
            vmax=9,
            alpha=0.25,
        )
        ax.contour(gx, gy, conf, levels=[0.5, 0.8], colors="k", linewidths=0.5, alpha=0.5)
        ax.scatter(x[:, 0], x[:, 1], c=[cmap(int(c)) for c in y], s=6, edgecolors="none")
        angle = panel.get("angle_deg")
        if angle:
            r = 0.9 * limit
            for a in (-angle, angle):
                ax.plot(
                    [0, r * math.cos(math.radians(a))],
                    [0, r * math.sin(math.radians(a))],
                    "k--",
                    lw=1,
                )
            t = np.linspace(-math.radians(angle), math.radians(angle), 50)
            ax.plot(0.5 * np.cos(t), 0.5 * np.sin(t), "k-", lw=1)
        ax.set_title(
            title + ("\n" + panel["subtitle"] if panel.get("subtitle") else ""), fontsize=9
        )
        ax.set_aspect("equal")
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def eta_trajectories(
    runs: Mapping[str, list[dict[str, float]]],
    names: Sequence[str],
    *,
    reference: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "",
) -> matplotlib.figure.Figure:
    """|eta_i| over training epochs, one panel per run (paper 001, Fig. 3).

    Args:
        runs: ``{panel title: history}`` with records holding ``epoch`` and ``eta/{name}``.
        names: the components of eta (e.g. :data:`ella.invariance.AFFINE_NAMES`).
        reference: ``{panel title: {component: imposed extent}}``, drawn dashed.

    Raises:
        TypeError: for ``runs`` or ``reference`` that are not mappings, ``names`` that is not
            a list of str (a single str included).
        ValueError: for no run, no name, or a record without ``epoch``.
    """
    _panels(runs, "runs", "{panel title: history}")
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(f"`names` must be a list of str (components of eta), got {names!r:.80}")
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"`names` must be a non-empty list of str, got {list(names)!r:.80}")
    if reference is not None:
        check_instance(reference, "reference", Mapping)
    for panel, history in runs.items():
        if isinstance(history, (str, Mapping)) or not isinstance(history, Sequence):
            raise TypeError(f"`runs[{panel!r}]` must be a list of records, got {history!r:.80}")
        if not all(isinstance(r, Mapping) and "epoch" in r for r in history):
            raise ValueError(f"`runs[{panel!r}]`: every record must be a dict with an 'epoch'")
    fig = matplotlib.figure.Figure(figsize=(3.0 * len(runs), 2.8), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    colors = matplotlib.colormaps["tab10"]
    for ax, (panel, history) in zip(axes, runs.items()):
        epochs = [r["epoch"] for r in history]
        for i, name in enumerate(names):
            values = [abs(r.get(f"eta/{name}", float("nan"))) for r in history]
            ax.plot(epochs, values, color=colors(i), label=name)
            ref = (reference or {}).get(panel, {}).get(name)
            if ref is not None:
                ax.axhline(abs(ref), color=colors(i), ls="--", lw=1)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel(r"$|\eta_i|$")
    axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def flow_fields(
    panels: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    *,
    n_draws: int = 2,
    seed: int = 0,
    k: int = 6,
    grid: int = 9,
) -> matplotlib.figure.Figure:
    """Sampled flow fields of learned augmentation distributions (paper 001, Fig. 4).

    Args:
        panels: ``{title: flow}`` with ``flow(eps (n, k), points (P, 2)) -> displacements
            (n, P, 2)`` (e.g. :meth:`ella.invariance.AffineAugmentation.flow`).
        n_draws: sampled transformations per panel (one row each).
        seed: seed of the sampled ``eps``.
        k: the columns of ``eps`` (the dimension of the augmentation's parameters).
        grid: arrows per axis (at least 2).

    Raises:
        TypeError: for ``panels`` that is not a mapping of callables, non-int counts.
        ValueError: for no panel, counts below 1 (``grid`` below 2), or a flow that does not
            return (n_draws, P, 2) displacements.
    """
    _panels(panels, "panels", "{title: flow}")
    for title, flow in panels.items():
        if not callable(flow):
            raise TypeError(f"`panels[{title!r}]` must be callable (eps, points) -> displacements")
    check_int(n_draws, "n_draws", minimum=1)
    check_int(seed, "seed")
    check_int(k, "k", minimum=1)
    check_int(grid, "grid", minimum=2)
    fig = matplotlib.figure.Figure(figsize=(2.2 * len(panels), 2.2 * n_draws), layout="constrained")
    axes = fig.subplots(n_draws, len(panels), squeeze=False)
    g = torch.Generator().manual_seed(seed)
    eps = 2 * torch.rand(n_draws, k, generator=g, dtype=torch.float64) - 1
    lin = torch.linspace(-0.8, 0.8, grid, dtype=torch.float64)
    px, py = torch.meshgrid(lin, lin, indexing="xy")
    points = torch.stack([px.reshape(-1), py.reshape(-1)], 1)
    for j, (title, flow) in enumerate(panels.items()):
        disp = flow(eps, points)
        if not isinstance(disp, Tensor) or tuple(disp.shape) != (n_draws, len(points), 2):
            shape = tuple(disp.shape) if isinstance(disp, Tensor) else type(disp).__name__
            raise ValueError(
                f"`panels[{title!r}]` must return displacements (n_draws, P, 2) = "
                f"{(n_draws, len(points), 2)}, got {shape}"
            )
        disp = disp.detach()
        for i in range(n_draws):
            ax = axes[i, j]
            ax.quiver(
                points[:, 0],
                -points[:, 1],
                disp[i, :, 0],
                -disp[i, :, 1],
                angles="xy",
                scale_units="xy",
                scale=1,
                width=0.006,
            )
            ax.set_xlim(-1.1, 1.1)
            ax.set_ylim(-1.1, 1.1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
    return fig


def accuracy_vs_size(
    curves: Mapping[str, Mapping[int, Sequence[float]]],
    *,
    title: str = "",
) -> matplotlib.figure.Figure:
    """Test accuracy against the training-set size, mean over seeds with error bars of one
    standard error, log-scaled sizes (paper 001, section 5.4, Fig. 5).

    Args:
        curves: ``{method: {n_train: per-seed test accuracies (%)}}``.

    Raises:
        TypeError: for ``curves`` that is not a mapping of mappings.
        ValueError: for no method, a method without sizes, a size that is not a positive int,
            or no accuracy for a size.
    """
    _panels(curves, "curves", "{method: {n_train: accuracies}}")
    for method, by_size in curves.items():
        _panels(by_size, f"curves[{method!r}]", "{n_train: per-seed accuracies}")
        for n, values in by_size.items():
            check_int(n, f"curves[{method!r}] key (n_train)", minimum=1)
            _array(values, f"curves[{method!r}][{n}]", 1)
    fig = matplotlib.figure.Figure(figsize=(4.2, 3.2), layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    for i, (method, by_size) in enumerate(curves.items()):
        sizes = sorted(by_size)
        stats = [_mean_se([[v] for v in by_size[n]]) for n in sizes]
        mean = np.array([m[0] for m, _ in stats])
        se = np.array([e[0] for _, e in stats])
        ax.errorbar(
            sizes, mean, yerr=se, color=colors(i), marker="o", ms=3, capsize=3, lw=1.2, label=method
        )
    ax.set_xscale("log")
    ax.set_xticks(sorted({n for by_size in curves.values() for n in by_size}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# paper 003: training dynamics of relaxed and strict group CNNs
# --------------------------------------------------------------------------------------------


def _mean_se(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(rows, dtype=float)
    se = a.std(0, ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.zeros(a.shape[1])
    return a.mean(0), se


def rmse_curves(
    panels: Mapping[str, Mapping[str, Mapping[str, Sequence[Sequence[float]]]]],
    *,
    title: str = "",
) -> matplotlib.figure.Figure:
    """Train (dashed) and validation (solid) RMSE per epoch, mean over seeds with a band of one
    standard error; one panel per data set (paper 003, Figs. 5-6).

    Args:
        panels: ``{panel: {model: {"train": per-seed curves, "val": per-seed curves}}}``; each
            curve is a list over epochs (index 0: the initial model).

    Raises:
        TypeError: for ``panels`` or its entries that are not mappings.
        ValueError: for no panel, no model, or curves that are empty or of different lengths.
    """
    _panels(panels, "panels", "{panel: {model: curves}}")
    for panel, models in panels.items():
        _panels(models, f"panels[{panel!r}]", "{model: {'train': ..., 'val': ...}}")
        for model, curves in models.items():
            check_instance(curves, f"panels[{panel!r}][{model!r}]", Mapping)
            for split in ("train", "val"):
                if split in curves:
                    _array(curves[split], f"panels[{panel!r}][{model!r}][{split!r}]", 2)
    fig = matplotlib.figure.Figure(figsize=(4.0 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = matplotlib.colormaps["tab10"]
    for ax, (panel, models) in zip(axes, panels.items()):
        for i, (model, curves) in enumerate(models.items()):
            for split, style in (("train", "--"), ("val", "-")):
                if split not in curves:
                    continue
                mean, se = _mean_se(curves[split])
                epochs = np.arange(len(mean))
                ax.plot(epochs, mean, style, color=colors(i), lw=1.2, label=f"{model} ({split})")
                ax.fill_between(epochs, mean - se, mean + se, color=colors(i), alpha=0.2)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("RMSE")
        ax.set_title(panel, fontsize=9)
    axes[-1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def sharpness_bars(
    panels: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]],
    *,
    ylabel: str = "sharpness",
    log: bool | None = None,
) -> matplotlib.figure.Figure:
    """Grouped bars with error bars: one group per checkpoint (e.g. early, best), one bar per
    model, one panel per data set (paper 003, Figs. 8 and 13).

    Args:
        panels: ``{panel: {model: {checkpoint: (mean, standard error)}}}``.
        log: logarithmic y axis; default: where every mean of the panel is positive.

    Raises:
        TypeError: for ``panels`` or its entries that are not mappings.
        ValueError: for no panel or model, models of one panel with different checkpoints, or
            a value that is not a ``(mean, standard error)`` pair.
    """
    _panels(panels, "panels", "{panel: {model: {checkpoint: (mean, se)}}}")
    for panel, models in panels.items():
        _panels(models, f"panels[{panel!r}]", "{model: {checkpoint: (mean, se)}}")
        first = None
        for model, values in models.items():
            name = f"panels[{panel!r}][{model!r}]"
            _panels(values, name, "{checkpoint: (mean, se)}")
            if first is not None and set(values) != first:
                raise ValueError(
                    f"`{name}` must have the checkpoints {sorted(first)} of the panel's first "
                    f"model, got {sorted(values)}"
                )
            first = set(values)
            for c, pair in values.items():
                if _array(pair, f"{name}[{c!r}]", 1).shape != (2,):
                    raise ValueError(f"`{name}[{c!r}]` must be a (mean, se) pair, got {pair!r}")
    fig = matplotlib.figure.Figure(figsize=(4.0 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colors = matplotlib.colormaps["tab10"]
    for ax, (panel, models) in zip(axes, panels.items()):
        checkpoints = list(next(iter(models.values())))
        width = 0.8 / len(models)
        xs = np.arange(len(checkpoints))
        for i, (model, values) in enumerate(models.items()):
            means = [values[c][0] for c in checkpoints]
            ses = [values[c][1] for c in checkpoints]
            ax.bar(
                xs + (i - (len(models) - 1) / 2) * width,
                means,
                width,
                yerr=ses,
                capsize=3,
                color=colors(i),
                label=model,
            )
        ax.set_xticks(xs, checkpoints)
        positive = all(v[c][0] > 0 for v in models.values() for c in checkpoints)
        if log or (log is None and positive):
            ax.set_yscale("log")
        else:
            ax.axhline(0.0, color="k", lw=0.5)
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=9)
    axes[-1].legend(fontsize=7)
    return fig


def spectral_densities(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
) -> matplotlib.figure.Figure:
    """Hessian eigenvalue densities (SLQ), one line per model, one panel per data set and
    checkpoint, logarithmic density axis (paper 003, Figs. 9-10).

    Args:
        panels: ``{panel: {model: (grid, density)}}``.

    Raises:
        TypeError: for ``panels`` or its entries that are not mappings.
        ValueError: for no panel or model, or a grid and density that are not 1-D of one
            length.
    """
    _panels(panels, "panels", "{panel: {model: (grid, density)}}")
    for panel, models in panels.items():
        _panels(models, f"panels[{panel!r}]", "{model: (grid, density)}")
        for model, entry in models.items():
            name = f"panels[{panel!r}][{model!r}]"
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise TypeError(f"`{name}` must be a (grid, density) pair, got {entry!r:.80}")
            grid, density = (_array(a, name, 1) for a in entry)
            if grid.shape != density.shape:
                raise ValueError(
                    f"`{name}`: grid and density must have one length, got {len(grid)} and "
                    f"{len(density)}"
                )
    n = len(panels)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = matplotlib.figure.Figure(figsize=(3.6 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = matplotlib.colormaps["tab10"]
    for ax, (panel, models) in zip(axes, panels.items()):
        top = 0.0
        for i, (model, (grid, density)) in enumerate(models.items()):
            d = np.asarray(density, dtype=float)
            top = max(top, float(d.max()))
            ax.plot(grid, np.clip(d, 1e-300, None), color=colors(i), lw=1, label=model)
        ax.set_yscale("log")
        if top > 0:
            ax.set_ylim(top * 1e-6, top * 2)
        ax.axvline(0.0, color="k", lw=0.5)
        ax.set_xlabel("eigenvalue")
        ax.set_title(panel, fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    return fig


def top_eigenvalue_distributions(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
) -> matplotlib.figure.Figure:
    """Box plots of the top Hessian eigenvalues (over seeds and the k largest) per model, one
    panel per data set and checkpoint, with the individual values as points.

    Args:
        panels: ``{panel: {model: eigenvalues}}``.

    Raises:
        TypeError: for ``panels`` or its entries that are not mappings.
        ValueError: for no panel or model, or a model without eigenvalues.
    """
    _panels(panels, "panels", "{panel: {model: eigenvalues}}")
    for panel, models in panels.items():
        _panels(models, f"panels[{panel!r}]", "{model: eigenvalues}")
        for model, values in models.items():
            _array(values, f"panels[{panel!r}][{model!r}]", 1)
    n = len(panels)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = matplotlib.figure.Figure(figsize=(3.4 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (panel, models) in zip(axes, panels.items()):
        data = [np.asarray(v, dtype=float) for v in models.values()]
        ax.boxplot(data, showfliers=False)
        for i, v in enumerate(data):
            jitter = np.linspace(-0.15, 0.15, len(v)) if len(v) > 1 else np.zeros(1)
            ax.scatter(i + 1 + jitter, v, s=6, color="k", alpha=0.6)
        ax.set_xticks(np.arange(1, len(data) + 1), list(models), fontsize=7)
        ax.set_yscale("log")
        top = max((float(v.max()) for v in data if v.size), default=0.0)
        if top > 0:  # values far below the largest (a stalled run) are clipped to the edge
            ax.set_ylim(top * 1e-3, top * 2)
        ax.set_title(panel, fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].set_ylabel("top Hessian eigenvalues")
    return fig


__all__ += ["rmse_curves", "sharpness_bars", "spectral_densities", "top_eigenvalue_distributions"]


#: default bar colours of the learned-paths chart by path tag (others: the tab10 cycle)
PATH_COLORS = {"fc": "tab:orange", "conv": "tab:blue", "gconv": "tab:green"}


def learned_paths(
    reports: Mapping[str, Sequence[Mapping[str, object]]] | Sequence[Mapping[str, object]],
    *,
    value: str = "path_share",
    error: str | None = None,
    labels: Mapping[str, str] | None = None,
    ylabel: str | None = None,
) -> matplotlib.figure.Figure:
    """The learned-paths bar chart (paper 000, figure 3 and table 4's analogue): per relaxed
    layer, one bar per path with the path's share of the layer.

    Args:
        reports: one report, a list of rows of :func:`ella.marglik.learned_layer_report` (or
            any rows with ``layer``, ``path`` and ``value``; e.g. averaged over seeds), drawn in
            one panel; or ``{title: report}``, one panel per entry. Rows whose ``path`` is
            None (untagged groups, such as the plain 1 x 1 layers of ``neyshabur``) are left
            out. Layers are drawn in their order of first appearance and numbered from 1
            (``layer 1``, ...); paths in their order of first appearance, missing bars are 0.
        value: the row entry the bars show: ``"path_share"`` (default; the paper's 'relative
            effective number of parameters' ``(gamma_g / P_g) / sum_h gamma_h / P_h``, summing
            to 1 per layer) or ``"relative_effective_parameters"`` (gamma_g / P_g).
        error: a row entry drawn as error bars (e.g. ``"path_share_std"``); None: none.
        labels: legend names by path tag (default: the tag in capitals, ``fc`` -> ``FC``).
        ylabel: the y-axis label (default: from ``value``).

    Returns:
        The figure (save it with :func:`save`); its axes hold the bars in the order panel,
        path, layer (``ax.containers[k]`` is path k's bars).

    Raises:
        TypeError: for ``reports`` that is neither a list of rows nor a mapping of them.
        ValueError: for no panel, an empty report (no row with a path) or a row without
            ``value``.
    """
    if isinstance(reports, Mapping):
        panels = dict(_panels(reports, "reports", "{title: report}"))
    elif isinstance(reports, Sequence) and not isinstance(reports, str):
        panels = {"": reports}
    else:
        raise TypeError(
            f"`reports` must be a list of rows or a mapping {{title: rows}}, got "
            f"{type(reports).__name__}"
        )
    for title, report in panels.items():
        if not all(isinstance(r, Mapping) for r in report):
            raise TypeError(f"`reports` panel {title!r}: every row must be a dict")
    fig = matplotlib.figure.Figure(figsize=(4.5 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    names = {"path_share": "path share", "relative_effective_parameters": r"$\gamma_g / P_g$"}
    cycle = matplotlib.colormaps["tab10"]
    for ax, (title, report) in zip(axes, panels.items()):
        rows = [r for r in report if r.get("path") is not None]
        if not rows:
            raise ValueError(f"`reports` panel {title!r} has no row with a path")
        if any(value not in r for r in rows):
            raise ValueError(f"every row must have `value` {value!r}")
        layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
        paths = list(dict.fromkeys(str(r["path"]) for r in rows))
        xs = np.arange(len(layers))
        width = 0.8 / len(paths)
        for k, path in enumerate(paths):
            sel = {str(r["layer"]): r for r in rows if r["path"] == path}
            heights = [float(sel[lay][value]) if lay in sel else 0.0 for lay in layers]
            yerr = None
            if error is not None:
                yerr = [float(sel[lay].get(error, 0.0)) if lay in sel else 0.0 for lay in layers]
            ax.bar(
                xs + (k - (len(paths) - 1) / 2) * width,
                heights,
                width,
                yerr=yerr,
                label=(labels or {}).get(path, path.upper()),
                color=PATH_COLORS.get(path, cycle(k)),
            )
        ax.set_xticks(xs, [f"layer {i + 1}" for i in range(len(layers))], fontsize=7)
        if title:
            ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(ylabel or names.get(value, value))
    return fig


__all__ += ["learned_paths"]


def reliability_diagram(
    results: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[int]]],
    *,
    title: str = "",
) -> matplotlib.figure.Figure:
    """Reliability diagram: accuracy over mean confidence per confidence bin, one line per
    method, with the diagonal of perfect calibration; below, the share of examples per bin
    (issue 17; the bins of :func:`ella.laplace.calibration.reliability_bins`).

    Every method's legend entry carries its expected calibration error recomputed from the
    bins, ``sum_b (n_b / N) |acc_b - conf_b|``. Empty bins are left out of the upper panel.

    Args:
        results: ``{method: (confidence (B,), accuracy (B,), count (B,))}`` over the same B
            equal-width bins of [0, 1] for every method (tensors, arrays or sequences);
            confidence and accuracy in [0, 1] where the count is positive (anything, NaN
            included, where it is 0), counts non-negative integers with a positive sum.
        title: the figure's title.

    Returns:
        A figure of two axes: the diagram (one line per method after the diagonal) and the
        share of examples per bin (one step line per method, at the bins' centres).

    Raises:
        TypeError: for a ``results`` that is not a mapping or an entry that is not a triple.
        ValueError: for no method, arrays that are not 1-D of one length B >= 1 (the same for
            every method), counts that are negative, fractional or all 0, or confidence or
            accuracy outside [0, 1] in a non-empty bin, naming the method.
    """
    if not isinstance(results, Mapping):
        raise TypeError(
            f"`results` must be a mapping {{method: (confidence, accuracy, count)}}, got "
            f"{type(results).__name__}"
        )
    if not results:
        raise ValueError("`results` must hold at least one method, got none")
    curves = {name: _reliability_entry(name, entry) for name, entry in results.items()}
    sizes = {name: len(c[0]) for name, c in curves.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"`results`: every method must have the same number of bins, got {sizes}")
    n_bins = next(iter(sizes.values()))
    centres = (np.arange(n_bins) + 0.5) / n_bins
    fig = matplotlib.figure.Figure(figsize=(4.2, 5.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    colors = matplotlib.colormaps["tab10"]
    for i, (name, (conf, acc, count)) in enumerate(curves.items()):
        filled = count > 0
        share = count / count.sum()
        ece = float((share[filled] * np.abs(acc[filled] - conf[filled])).sum())
        top.plot(
            conf[filled],
            acc[filled],
            "o-",
            color=colors(i % 10),
            ms=3,
            label=f"{name} (ECE {ece:.3f})",
        )
        bottom.plot(centres, share, drawstyle="steps-mid", color=colors(i % 10), label=name)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(fontsize=7, loc="upper left")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("share")
    bottom.set_ylim(bottom=0)
    if title:
        top.set_title(title, fontsize=9)
    return fig


def _reliability_entry(name: str, entry: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One method's ``(confidence, accuracy, count)`` as float64 arrays, checked."""
    if not isinstance(entry, (tuple, list)) or len(entry) != 3:
        raise TypeError(
            f"`results[{name!r}]` must be a (confidence, accuracy, count) triple, got "
            f"{type(entry).__name__}"
        )
    conf, acc, count = (
        np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
        for a in entry
    )
    if not (conf.ndim == acc.ndim == count.ndim == 1) or not (
        len(conf) == len(acc) == len(count) >= 1
    ):
        raise ValueError(
            f"`results[{name!r}]`: confidence, accuracy and count must be 1-D of one length "
            f"B >= 1, got shapes {conf.shape}, {acc.shape}, {count.shape}"
        )
    if (count < 0).any() or (count != np.round(count)).any() or count.sum() <= 0:
        raise ValueError(
            f"`results[{name!r}]`: counts must be non-negative integers with a positive sum, "
            f"got {count.tolist()}"
        )
    filled = count > 0
    for label, values in (("confidence", conf), ("accuracy", acc)):
        inside = values[filled]
        if not ((inside >= 0) & (inside <= 1)).all():
            raise ValueError(
                f"`results[{name!r}]`: {label} must lie in [0, 1] in every non-empty bin, got "
                f"{inside.tolist()}"
            )
    return conf, acc, count

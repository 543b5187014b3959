"""The curvature measures of paper 003 ("Training Dynamics Evaluation"): sharpness (its
"Sharpness" paragraph: the mean loss change over random unit directions and displacements, an
unnumbered equation), Lanczos top eigenvalues, SLQ densities and dense spectra of the mean
squared next-frame loss, all from :mod:`symdisc.curvature`.

Everything runs on the device of the model and data (the random draws of the measures on a
generator of that device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from symdisc.runtime import check_bool, check_float, check_instance, check_int

__all__ = ["curvature_measures"]


def curvature_measures(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    radii: Sequence[float] = (0.005, 0.01, 0.02),
    directions: int = 8,
    hessian_samples: int = 32,
    top_k: int = 5,
    slq_steps: int = 30,
    dense: bool = True,
    seed: int = 0,
) -> dict[str, object]:
    """Sharpness and Hessian spectra of the mean squared next-frame loss at the model's weights.

    The loss ``L(theta) = mean (f_theta(x) - y)^2`` is taken as a pure function of the
    parameters (:func:`symdisc.curvature.functional`), in float64, on the pairs ``(x, y)`` (for
    sharpness) and on their first ``hessian_samples`` (for every Hessian measure), so that the
    module itself is never modified. Measures (paper 003, "Training Dynamics Evaluation"):

    * ``sharpness``: :func:`symdisc.curvature.sharpness` over ``directions`` unit directions
      uniform on the sphere and radii relative to ``||theta||``: ``abs`` = mean |dL| and
      ``rel`` = mean dL / L averaged over the radii (``*_se``: the standard error over
      directions, averaged over radii), and per radius;
    * ``sharpness_filter``: the same with filter-normalised directions (Li et al. 2018);
    * ``top_eigs``: the ``top_k`` largest Hessian eigenvalues by Lanczos;
    * ``slq``: the spectral density by stochastic Lanczos quadrature (``slq_steps`` steps, one
      probe), as ``grid`` and ``density`` lists;
    * ``n_negative_slq``: the SLQ estimate of the number of clearly negative eigenvalues,
      ``P`` times the quadrature weight on Ritz values below ``-1e-3 * lambda_max`` (Ghorbani
      et al. 2019; a coarse estimate for models too large for the dense spectrum: an interior
      Ritz value stands for a cluster of eigenvalues on both of its sides, so the near-zero bulk
      is not counted);
    * with ``dense``: ``eigenvalues`` (the full spectrum, ascending), ``n_negative`` (eigenvalues
      below ``-1e-8 * lambda_max``, a margin for rounding) and ``min_eig``; otherwise None.
    """
    from ella.dynamics.training import check_pair
    from symdisc.curvature import (
        HessianOperator,
        eigenvalues,
        functional,
        lanczos,
        random_directions,
        sharpness,
        slq_density,
    )

    check_instance(model, "model", torch.nn.Module)
    x, y = check_pair(x, y)
    check_int(directions, "directions", minimum=1)
    check_int(hessian_samples, "hessian_samples", minimum=1)
    check_int(top_k, "top_k", minimum=1)
    check_int(slq_steps, "slq_steps", minimum=1)
    check_bool(dense, "dense")
    check_int(seed, "seed", minimum=0)
    if not isinstance(radii, (tuple, list)) or not radii:
        raise TypeError(f"`radii` must be a non-empty sequence of floats, got {radii!r}")
    for i, r in enumerate(radii):
        check_float(r, f"radii[{i}]", positive=True)
    f, params = functional(model)
    params = {k: v.to(torch.float64) for k, v in params.items()}
    x, y = x.to(torch.float64), y.to(torch.float64)

    def loss_fn(p: dict[str, Tensor], a: Tensor, b: Tensor) -> Tensor:
        return torch.nn.functional.mse_loss(f(p, a), b)

    gen = torch.Generator(device=x.device).manual_seed(seed)
    out: dict[str, object] = {"params": sum(v.numel() for v in params.values())}
    for key, kind in (("sharpness", "sphere"), ("sharpness_filter", "filter")):
        d = random_directions(params, directions, kind=kind, generator=gen)
        s = sharpness(loss_fn, params, x, y, radii=radii, directions=d, radius="relative")
        out[key] = {
            "abs": float(s.mean_abs.mean()),
            "abs_se": float(s.mean_abs_se.mean()),
            "rel": float(s.mean_rel.mean()),
            "rel_se": float(s.mean_rel_se.mean()),
            "abs_per_radius": s.mean_abs.tolist(),
            "rel_per_radius": s.mean_rel.tolist(),
            "loss": float(s.loss),
        }
    xh, yh = x[:hessian_samples], y[:hessian_samples]
    H = HessianOperator(loss_fn, params, xh, yh)
    top = lanczos(H, top_k, which="LA", tol=1e-6, max_iter=80, generator=gen)
    out["top_eigs"] = top.eigenvalues.tolist()
    slq = slq_density(H, n_steps=min(slq_steps, H.shape[0]), generator=gen, grid=400)
    out["slq"] = {"grid": slq.grid.tolist(), "density": slq.density.tolist()}
    nodes = torch.nan_to_num(slq.nodes, nan=0.0)
    cut = -1e-3 * max(float(nodes.abs().max()), out["top_eigs"][0])
    negative_mass = float((slq.weights * (nodes < cut)).sum(1).mean())
    out["n_negative_slq"] = negative_mass * out["params"]
    out["eigenvalues"] = out["n_negative"] = out["min_eig"] = None
    if dense:
        ev = eigenvalues(H)
        tol = 1e-8 * float(ev.abs().max())
        out["eigenvalues"] = ev.tolist()
        out["n_negative"] = int((ev < -tol).sum())
        out["min_eig"] = float(ev[0])
    return out

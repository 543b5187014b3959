"""Gaussian priors grouped per layer and path (paper 000, section 4: one prior precision per
layer and path; paper 001, section 3.2), and the parsing of prior precisions.

A prior group g holds P_g parameters with the prior ``N(0, 1/delta_g I)``. Parameters tagged by a
relaxed layer (:func:`ella.layers.parameter_paths`) are grouped by layer and path, untagged ones
by the module that owns them (:func:`prior_groups`). :func:`layer_paths` names the *relaxed
layer* of every tagged parameter: the outermost relaxed layer around the module that holds it (a
:class:`ella.layers.PathSum` and its paths are one relaxed layer), for reports per layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ella.layers import Path, RelaxedLayer, parameter_paths
from symdisc.runtime import check_bool, check_instance

Likelihood = Literal["classification", "regression"]
Structure = Literal["full", "kron", "diag"]
PriorPrecision = Mapping[str, Tensor | float] | Tensor | float

ROOT_GROUP = "<model>"
"""Group name of the untagged parameters that belong directly to the model itself."""

__all__ = [
    "Likelihood",
    "Structure",
    "PriorPrecision",
    "ROOT_GROUP",
    "prior_groups",
    "share_prior",
    "posterior_parameters",
    "map_parameters",
    "layer_paths",
    "precision_vector",
]


def posterior_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that carry a prior and that the Laplace approximation integrates
    over (paper 000, section 3.2 and eq. 9), in ``named_parameters`` order.

    Every parameter that requires a gradient, except those a layer keeps as point estimates: a
    module with a ``prior_parameters()`` method (the sparse layers :class:`ella.layers.SFC` and
    :class:`ella.layers.SCONV`) contributes only the parameters it names there, according to
    its ``prior_on`` (anchors: u and the bias; lengthscales: omega and learnable z; weights: u
    in its orthonormal basis, i.e. the induced weights, and the bias).

    The other trainable parameters (:func:`map_parameters`) stay at their MAP: they have no
    prior term (the MAP objective of :mod:`ella.marglik` regularises only the groups of
    :func:`prior_groups`), no curvature block and no share in the log-determinant; the
    marginal likelihood is then that of the posterior parameters with the point estimates
    held fixed, as for any hyperparameter set by optimisation.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    check_instance(model, "model", nn.Module)
    own: set[str] = set()
    inside: set[str] = set()
    for prefix, module in model.named_modules():
        select = getattr(module, "prior_parameters", None)
        if callable(select):
            dot = f"{prefix}." if prefix else ""
            own.update(dot + n for n, _ in module.named_parameters(recurse=False))
            inside.update(dot + n for n in select())
    return [
        n for n, p in model.named_parameters() if p.requires_grad and (n not in own or n in inside)
    ]


def map_parameters(model: nn.Module) -> list[str]:
    """Names of the trainable parameters outside the posterior (point estimates, no prior):
    those that require a gradient but are not in :func:`posterior_parameters`.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    inside = set(posterior_parameters(model))
    return [n for n, p in model.named_parameters() if p.requires_grad and n not in inside]


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    """``{name: parameter}`` of :func:`posterior_parameters` (at least one)."""
    named = dict(model.named_parameters())
    params = {n: named[n] for n in posterior_parameters(model)}
    if not params:
        raise ValueError(
            "`model` must have at least one parameter that requires a gradient and carries a "
            "prior (see ella.laplace.posterior_parameters)"
        )
    return params


def prior_groups(model: nn.Module, per_tensor: bool = False) -> dict[str, list[str]]:
    """The prior groups of ``model``: ``{group name: [parameter names]}``, one precision each.

    A parameter tagged by a relaxed layer (see :func:`ella.layers.parameter_paths`) joins the
    group of its layer *and path*, named ``"{layer}:{path}"`` (paper 000, section 4: one prior per
    layer and path). An untagged parameter joins the group of the module that owns it, named
    after the module (all parameters of a plain ``nn.Linear`` share one group; parameters of the
    model itself form :data:`ROOT_GROUP`). With ``per_tensor=True`` every parameter tensor is a
    group of its own, named after the parameter.

    Only the parameters of :func:`posterior_parameters` are grouped (they require a gradient
    and are the ones the Laplace approximation integrates over); groups and their members follow
    ``named_parameters`` order. For the sparse layers this reflects their ``prior_on``
    (``prior_target``): the group ``"{layer}:{path}"`` of an S-FC / S-CONV holds u and the bias
    (``"anchors"``, ``"weights"``) or omega and the learnable z (``"lengthscales"``); its other
    parameters are in no group and stay at their MAP (:func:`map_parameters`).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module`` or ``per_tensor`` not a bool.
        ValueError: if ``model`` has no trainable parameter in the posterior.
    """
    check_instance(model, "model", nn.Module)
    check_bool(per_tensor, "per_tensor")
    tags = parameter_paths(model)
    groups: dict[str, list[str]] = {}
    for name in _trainable(model):
        if per_tensor:
            key = name
        elif name in tags:
            layer, path = tags[name]
            key = f"{layer}:{path}" if layer else path
        else:
            key = name.rsplit(".", 1)[0] if "." in name else ROOT_GROUP
        groups.setdefault(key, []).append(name)
    return groups


def share_prior(module: nn.Module, path: str = "shared") -> nn.Module:
    """Give all parameters of ``module`` one prior precision, and return ``module``.

    Tags every parameter of ``module`` (and of its submodules) with ``path``, as the relaxed
    layers tag theirs (:func:`ella.layers.parameter_paths`), so that :func:`prior_groups` of any
    model containing ``module`` puts them in one group, ``"{module's name}:{path}"`` (``path``
    for the model itself), instead of one group per layer. Paper 001, appendix B.4: "a single
    prior precision" for the toy network.

    Raises:
        TypeError: for a ``module`` that is not an ``nn.Module`` or a ``path`` not a str.
        ValueError: if a submodule already tags its parameters (a relaxed layer keeps its own
            groups per path).
    """
    check_instance(module, "module", nn.Module)
    check_instance(path, "path", str)
    if not path:
        raise ValueError("`path` must be a non-empty str (the group's suffix), got ''")
    tagged = [n for n, m in module.named_modules() if m is not module and getattr(m, "paths", None)]
    if tagged:
        raise ValueError(
            f"`module` contains layers that tag their own prior paths ({', '.join(tagged)}); "
            f"share_prior would override them: tag a module without relaxed layers"
        )
    module.paths = {name: path for name, _ in module.named_parameters()}
    return module


def layer_paths(model: nn.Module) -> dict[str, tuple[str, str, Path]]:
    """``{parameter name: (relaxed layer, module, path)}`` for every tagged parameter.

    ``module`` is the module whose tag the parameter carries (as in
    :func:`ella.layers.parameter_paths`); ``relaxed layer`` is the outermost
    :class:`ella.layers.RelaxedLayer` that contains that module (the module itself when none
    contains it): for ``PathSum(FFC, CONV)`` at ``"0"`` the parameters of ``"0.layers.0"`` (path
    ``"fc"``) and ``"0.layers.1"`` (path ``"conv"``) both belong to the relaxed layer ``"0"``.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """
    check_instance(model, "model", nn.Module)
    outermost: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, RelaxedLayer) and not any(_within(name, r) for r in outermost):
            outermost.append(name)
    out: dict[str, tuple[str, str, Path]] = {}
    for param, (module, path) in parameter_paths(model).items():
        layer = next((r for r in outermost if _within(module, r)), module)
        out[param] = (layer, module, path)
    return out


def _within(name: str, outer: str) -> bool:
    """Whether the module ``name`` is the module ``outer`` or inside it."""
    return outer == "" or name == outer or name.startswith(outer + ".")


def precision_vector(
    groups: Sequence[str],
    prior_precision: PriorPrecision,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """(n_groups,) precisions in the order of ``groups``, checked.

    Args:
        groups: the prior groups' names.
        prior_precision: a positive float or 0-d tensor shared by all groups, or
            ``{group: float | 0-d tensor}`` with one entry per group. Floats go straight to
            ``dtype`` (a float32 detour would round 0.3 for float64); tensors are moved there
            with their graph.
        dtype, device: of the result.

    Raises:
        TypeError: for another type.
        ValueError: for a dict whose keys are not the groups, a tensor that is not 0-d, or a
            precision that is not positive and finite (naming the group).
    """
    groups = list(groups)
    if isinstance(prior_precision, Mapping):
        missing = [g for g in groups if g not in prior_precision]
        unknown = [k for k in prior_precision if k not in groups]
        if missing or unknown:
            raise ValueError(
                f"`prior_precision` must have one entry per prior group {groups}; "
                f"missing {missing}, unknown {unknown}"
            )
        named = True
        vector = torch.stack([_one_precision(prior_precision[g], g, dtype, device) for g in groups])
    else:
        named = False
        vector = _one_precision(prior_precision, None, dtype, device).expand(len(groups))
    values = vector.detach()
    bad = ~(torch.isfinite(values) & (values > 0))
    if bad.any():  # one check for all groups; the message names the first offender
        i = int(bad.nonzero()[0, 0])
        where = f"`prior_precision[{groups[i]!r}]`" if named else "`prior_precision`"
        raise ValueError(f"{where} must be positive and finite, got {float(values[i])}")
    return vector


def _one_precision(
    value: object, group: str | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    where = "`prior_precision`" if group is None else f"`prior_precision[{group!r}]`"
    if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
        raise TypeError(f"{where} must be a float or a 0-d tensor, got {type(value).__name__}")
    if isinstance(value, Tensor):
        t = value.to(dtype=dtype, device=device)
    else:  # straight to the model's dtype: a float32 detour would round 0.3 for float64
        t = torch.tensor(float(value), dtype=dtype, device=device)
    if t.ndim != 0:
        raise ValueError(f"{where} must be a 0-d tensor, got shape {tuple(t.shape)}")
    return t

"""Laplace-GGN log marginal likelihoods with one prior precision per layer and path (paper 000,
section 4, eq. 9; paper 001, sections 3.2-3.3, eqs. 7 and 15).

With a Gaussian prior ``N(0, 1/delta_g I)`` on every prior group g of P_g parameters, a tempered
likelihood ``p(D | theta)^(1/T)`` and the GGN ``H`` of the negative log-likelihood at the MAP
``theta*``, the Laplace approximation of eq. (9) of paper 000 (eq. 7 of paper 001) reads

    log p(D | delta) ~= log p(D | theta*) / T + log p(theta* | delta) + P/2 log(2 pi)
                        - 1/2 log det(H / T + diag(delta))

    = log p(D | theta*) / T - 1/2 sum_g delta_g ||theta*_g||^2 + 1/2 sum_g P_g log delta_g
      - 1/2 log det(H / T + diag(delta)),

because the prior's normaliser ``-P/2 log(2 pi)`` and the Gaussian integral's ``+P/2 log(2 pi)``
cancel exactly: nothing else is dropped. ``log p(D | theta*)`` is the full log-likelihood,
normalisers included (``-N C/2 log(2 pi sigma^2)`` for regression).

:class:`Laplace` computes the likelihood, the squared norms of the groups and the curvature once
(:meth:`Laplace.fit`, at the model's current parameters) and then evaluates the approximation for
any prior precisions without refitting (:meth:`Laplace.log_marginal_likelihood`), differentiably in
the precisions and in everything the model's outputs depend on besides its parameters (e.g. the
inputs).

==========  ====================================================================================
structure   log det(H / T + diag(delta))
==========  ====================================================================================
``full``    Cholesky of the dense (P, P) GGN plus the diagonal of precisions
``diag``    ``sum_p log(H_pp / T + delta_p)`` with the exact GGN diagonal (from the per-sample
            Jacobians, without forming H)
``kron``    per layer, KFAC ``H_l ~= kron(G_l, A_l)`` (:func:`symdisc.curvature.kfac`); with the
            eigenvalues a_i of A_l and g_j of G_l and one precision delta_l for the block,
            ``log det(kron(G, A) / T + delta I) = sum_{i,j} log(a_i g_j / T + delta)``; with
            ``per_tensor=True`` one block per tensor (weight ``A[:-1, :-1]``, bias ``1``)
==========  ====================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ella.layers._base import parameter_paths
from symdisc.curvature import (
    KronFactors,
    functional,
    ggn_rows,
    kfac,
)
from symdisc.curvature.kfac import drop_softmax_null, kfac_rule_for, kfac_with_loss
from symdisc.curvature.losses import loss_value

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
    "Laplace",
]


# --------------------------------------------------------------------------------------------
# prior groups
# --------------------------------------------------------------------------------------------


def _check_module(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    return model


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("`model` must have at least one parameter that requires a gradient")
    return params


def prior_groups(model: nn.Module, per_tensor: bool = False) -> dict[str, list[str]]:
    """The prior groups of ``model``: ``{group name: [parameter names]}``, one precision each.

    A parameter tagged by a relaxed layer (see :func:`ella.layers.parameter_paths`) joins the
    group of its layer *and path*, named ``"{layer}:{path}"`` (paper 000, section 4: one prior per
    layer and path). An untagged parameter joins the group of the module that owns it, named
    after the module (all parameters of a plain ``nn.Linear`` share one group; parameters of the
    model itself form :data:`ROOT_GROUP`). With ``per_tensor=True`` every parameter tensor is a
    group of its own, named after the parameter.

    Only parameters that require a gradient are grouped (they are the ones the Laplace
    approximation integrates over); groups and their members follow ``named_parameters`` order.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module`` or ``per_tensor`` not a bool.
        ValueError: if ``model`` has no trainable parameter.
    """
    _check_module(model)
    if not isinstance(per_tensor, bool):
        raise TypeError(f"`per_tensor` must be a bool, got {type(per_tensor).__name__}")
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


# --------------------------------------------------------------------------------------------
# curvature helpers
# --------------------------------------------------------------------------------------------


def _ruleless_layers(model: nn.Module) -> list[str]:
    """Modules that own trainable parameters directly but have no KFAC rule."""
    out = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and kfac_rule_for(module) is None:
            out.append(f"{name or ROOT_GROUP!s} ({type(module).__name__})")
    return out


# --------------------------------------------------------------------------------------------
# the Laplace approximation
# --------------------------------------------------------------------------------------------


class Laplace:
    """Laplace-GGN approximation of the log marginal likelihood, refit-free in the prior.

    Args:
        model: an ``nn.Module`` mapping inputs (N, ...) to outputs (N, C), at its MAP parameters
            when :meth:`fit` is called. It is never modified; its buffers are read as they are
            (put it in ``eval()`` mode if it has batch statistics).
        likelihood: ``"classification"``: categorical on softmax(f) with class-index targets
            (N,), negative log-likelihood ``sum_n CE(f_n, y_n)``; ``"regression"``: Gaussian
            ``N(y | f, sigma^2 I)`` with targets (N, C), negative log-likelihood
            ``sum ||y - f||^2 / (2 sigma^2) + N C/2 log(2 pi sigma^2)``.
        structure: ``"full"``, ``"diag"`` or ``"kron"`` (see the module docstring).
        sigma: observation noise standard deviation of the regression likelihood (ignored for
            classification).
        temperature: T of the tempered likelihood ``p(D | theta)^(1/T)``; divides the
            log-likelihood and the GGN.
        per_tensor: one prior group per parameter tensor instead of one per layer and path
            (see :func:`prior_groups`). With ``structure="kron"`` the KFAC blocks are then
            taken with ``bias="separate"`` (:func:`symdisc.curvature.kfac`): a layer's weight
            ``A[:-1, :-1] (x) G`` and bias ``1 (x) G`` are blocks of their own, each with its
            precision, and the weight-bias coupling ``A[:-1, -1]`` is dropped.
        kron_factors: the function that computes the Kronecker factors for ``"kron"``, called
            like :func:`symdisc.curvature.kfac` (default); e.g.
            :func:`ella.invariance.augmented_kfac` for an invariant model (paper 001,
            section 4.2).

    Attributes (after :meth:`fit`):
        groups: ``{group: [parameter names]}``.
        n_params: P, the number of parameters integrated over.
        group_sizes: ``{group: P_g}``.
        sq_norms: ``{group: ||theta*_g||^2}`` (0-d tensors, detached: theta* is a constant).
        log_likelihood: 0-d ``log p(D | theta*)`` (untempered), with its graph to the inputs.
        curvature: the GGN of the untempered negative log-likelihood: (P, P) for ``"full"``,
            its diagonal (P,) for ``"diag"``, ``{layer: KronFactors}`` for ``"kron"`` (G scaled
            by the likelihood's output Hessian, see :meth:`fit`).
        eigendecompositions: for ``"kron"``, ``{layer: (a, Q_A, g, Q_G)}`` from
            ``torch.linalg.eigh`` of A (ascending eigenvalues a, eigenvectors Q_A) and of G,
            computed in float64 on the symmetrised factor and cast to the model's dtype.

    Raises:
        TypeError: for a non-module ``model`` or a non-bool ``per_tensor``.
        ValueError: for an unknown ``likelihood`` or ``structure``, a non-positive ``sigma`` or
            ``temperature``, or, with ``structure="kron"``, a layer with parameters but no KFAC
            rule (named in the message).

    Example:
        >>> la = Laplace(model, "classification", "kron").fit([(x, y)])
        >>> la.log_marginal_likelihood({g: torch.tensor(1.0) for g in la.groups})
    """

    def __init__(
        self,
        model: nn.Module,
        likelihood: Likelihood,
        structure: Structure,
        *,
        sigma: float = 1.0,
        temperature: float = 1.0,
        per_tensor: bool = False,
        kron_factors: Callable[..., dict[str, KronFactors]] | None = None,
    ) -> None:
        self.model = _check_module(model)
        if likelihood not in get_args(Likelihood):
            raise ValueError(
                f"`likelihood` must be one of {get_args(Likelihood)}, got {likelihood!r}"
            )
        if structure not in get_args(Structure):
            raise ValueError(f"`structure` must be one of {get_args(Structure)}, got {structure!r}")
        self.likelihood: Likelihood = likelihood
        self.structure: Structure = structure
        self.sigma = _positive_float(sigma, "sigma")
        self.temperature = _positive_float(temperature, "temperature")
        self.groups = prior_groups(model, per_tensor)
        self.per_tensor = per_tensor
        if kron_factors is not None and not callable(kron_factors):
            raise TypeError(f"`kron_factors` must be callable, got {type(kron_factors).__name__}")
        self._kron_factors = kfac if kron_factors is None else kron_factors
        self._default_kron_factors = kron_factors is None
        self._group_of = {p: g for g, names in self.groups.items() for p in names}
        if structure == "kron":
            ruleless = _ruleless_layers(model)
            if ruleless:
                raise ValueError(
                    f"structure='kron' needs a KFAC rule for every layer with parameters; "
                    f"{ruleless} have none (register one with "
                    f"symdisc.curvature.register_kfac_rule, or use structure='full'/'diag')"
                )
        self._fitted = False

    # -- fitting ---------------------------------------------------------------------------

    @property
    def loss(self) -> str:
        """The ``symdisc.curvature`` loss whose summed form is the negative log-likelihood
        (up to a scale and a constant for regression)."""
        return "cross_entropy" if self.likelihood == "classification" else "mse"

    @property
    def output_hessian_scale(self) -> float:
        """Factor from the ``symdisc`` summed loss's GGN to the negative log-likelihood's GGN.

        Cross-entropy: 1. Mse: the summed ``F.mse_loss`` has output Hessian 2 I and the Gaussian
        negative log-likelihood ``||y - f||^2 / (2 sigma^2)`` has ``I / sigma^2``: 1/(2 sigma^2).
        """
        return 1.0 if self.likelihood == "classification" else 1.0 / (2.0 * self.sigma**2)

    def fit(self, data: Iterable[tuple[Tensor, Tensor]]) -> Laplace:
        """Compute, once, everything the approximation needs at the current parameters.

        Args:
            data: an iterable of ``(inputs, targets)`` batches (read into a list, so one pass
                over a DataLoader). Inputs that require a gradient keep their graph: the
                likelihood and the curvature (and so the marginal likelihood) are differentiable
                in them.

        Returns:
            ``self``.

        Raises:
            ValueError: for no data, a non-finite likelihood, wrongly shaped outputs or targets,
                or, with ``structure="kron"``, prior groups that split a Kronecker block or
                parameters outside every block.
        """
        batches = list(data)
        if not batches:
            raise ValueError("`data` must yield at least one (inputs, targets) batch, got none")
        model_fn, params = functional(self.model, list(_trainable(self.model)))
        first = next(iter(params.values()))
        self.dtype, self.device = first.dtype, first.device
        self.names = list(params)
        self.numels = {n: p.numel() for n, p in params.items()}
        self.n_params = sum(self.numels.values())
        self.group_sizes = {g: sum(self.numels[n] for n in ns) for g, ns in self.groups.items()}
        self.sq_norms = {
            g: sum(params[n].pow(2).sum() for n in ns) for g, ns in self.groups.items()
        }

        # kron with the default factors: the KFAC forward passes give the likelihood too (one
        # forward instead of two)
        fused = self.structure == "kron" and self._default_kron_factors
        log_lik = torch.zeros((), dtype=self.dtype, device=self.device)
        dense: Tensor | None = None
        for inputs, targets in [] if fused else batches:
            outputs = model_fn(params, inputs)
            value = loss_value(outputs, targets, self.loss, "sum")
            log_lik = log_lik + self._log_lik_of_loss(value, outputs.numel())
            if self.structure != "kron":
                rows = math.sqrt(self.output_hessian_scale) * ggn_rows(
                    model_fn, params, inputs, loss=self.loss, reduction="sum", outputs=outputs
                )
                if self.likelihood == "classification" and outputs.shape[-1] > 1:
                    # the softmax Hessian has rank C - 1: N (C - 1) rows give the same GGN
                    n, c = outputs.shape
                    rows = drop_softmax_null(rows.reshape(n, c, -1), outputs, dim=1)
                    rows = rows.reshape(n * (c - 1), -1)
                part = _gram(rows) if self.structure == "full" else rows.pow(2).sum(0)
                dense = part if dense is None else dense + part

        if self.structure == "kron":
            keep = torch.is_grad_enabled() and any(
                isinstance(x, Tensor) and x.requires_grad for x, _ in batches
            )
            # per-tensor groups give weight and bias their own precision, so their Kronecker
            # blocks must be separate (the folded block's log-det needs one shared delta)
            options = {
                "loss": self.loss,
                "reduction": "sum",
                "params": params,
                "create_graph": keep,
                "bias": "separate" if self.per_tensor else "folded",
            }
            if fused:
                factors, value = kfac_with_loss(self.model, batches, **options)
                n_entries = sum(t.numel() for _, t in batches)  # regression targets: (N, C)
                log_lik = self._log_lik_of_loss(value, n_entries)
            else:
                factors = self._kron_factors(self.model, batches, **options)
        if not torch.isfinite(log_lik.detach()):
            raise ValueError(f"the log-likelihood at the parameters must be finite, got {log_lik}")
        self._log_likelihood = log_lik

        if self.structure == "kron":
            scale = self.output_hessian_scale
            # the blocks split off one layer share their factor tensors (the G of weight and
            # bias): scale and decompose each distinct tensor once
            scaled: dict[int, Tensor] = {}
            self.curvature = {}
            for k, f in factors.items():
                if id(f.G) not in scaled:
                    scaled[id(f.G)] = f.G if scale == 1.0 else scale * f.G
                G = scaled[id(f.G)]
                self.curvature[k] = KronFactors(f.A, G, f.params, f.bias)
            self._block_groups = self._check_blocks(self.curvature)
            eigh: dict[int, tuple[Tensor, Tensor]] = {}
            self.eigendecompositions = {}
            for k, f in self.curvature.items():
                for factor in (f.A, f.G):
                    if id(factor) not in eigh:
                        eigh[id(factor)] = _symmetric_eigh(factor)
                self.eigendecompositions[k] = (*eigh[id(f.A)], *eigh[id(f.G)])
        else:
            self.curvature = dense
        self._fitted = True
        self._prepare_evaluation()
        return self

    def _log_lik_of_loss(self, value: Tensor, n_entries: int) -> Tensor:
        """``log p(y | f)`` from the summed symdisc loss over ``n_entries`` outputs: ``-CE`` for
        classification, ``-sum (y - f)^2 / (2 sigma^2) - n_entries/2 log(2 pi sigma^2)``."""
        if self.likelihood == "classification":
            return -value
        norm = 0.5 * n_entries * math.log(2.0 * math.pi * self.sigma**2)
        return -value / (2.0 * self.sigma**2) - norm

    def _check_blocks(self, factors: dict[str, KronFactors]) -> dict[str, str]:
        """The one prior group of every Kronecker block; ValueError if a block spans several."""
        out: dict[str, str] = {}
        covered: set[str] = set()
        for key, f in factors.items():
            groups = list(dict.fromkeys(self._group_of[p] for p in f.params))
            if len(groups) != 1:
                raise ValueError(
                    f"structure='kron' needs one prior precision per Kronecker block, but the "
                    f"block of layer {key!r} (parameters {list(f.params)}) is split over the "
                    f"groups {groups}: its log-determinant sum log(a_i g_j / T + delta) holds "
                    f"only for a precision shared by the whole block (use per_tensor=False)"
                )
            out[key] = groups[0]
            covered.update(f.params)
        outside = [n for n in self.names if n not in covered]
        if outside:
            raise ValueError(
                f"structure='kron' needs every parameter in a Kronecker block; {outside} are in "
                f"none (use structure='full'/'diag')"
            )
        return out

    def _require_fit(self) -> None:
        if not self._fitted:
            raise RuntimeError("call `fit(data)` before evaluating the Laplace approximation")

    @property
    def log_likelihood(self) -> Tensor:
        """0-d ``log p(D | theta*)`` of the untempered likelihood, normalisers included."""
        self._require_fit()
        return self._log_likelihood

    # -- evaluation ------------------------------------------------------------------------

    def precisions(self, prior_precision: PriorPrecision) -> dict[str, Tensor]:
        """``{group: 0-d delta_g}`` from a shared float / 0-d tensor or a dict over the groups.

        Raises:
            TypeError: for another type.
            ValueError: for a dict whose keys are not the groups, a tensor that is not 0-d, or a
                precision that is not positive and finite (naming the group).
        """
        return dict(zip(self.groups, self._precision_vector(prior_precision).unbind()))

    def _precision_vector(self, prior_precision: PriorPrecision) -> Tensor:
        """(n_groups,) precisions in the order of :attr:`groups`, checked (see precisions)."""
        self._require_fit()
        if isinstance(prior_precision, Mapping):
            keys = list(prior_precision)
            missing = [g for g in self.groups if g not in prior_precision]
            unknown = [k for k in keys if k not in self.groups]
            if missing or unknown:
                raise ValueError(
                    f"`prior_precision` must have one entry per prior group {list(self.groups)}; "
                    f"missing {missing}, unknown {unknown}"
                )
            named = True
            vector = torch.stack([self._one_precision(prior_precision[g], g) for g in self.groups])
        else:
            named = False
            vector = self._one_precision(prior_precision, None).expand(len(self.groups))
        values = vector.detach()
        bad = ~(torch.isfinite(values) & (values > 0))
        if bad.any():  # one check for all groups; the message names the first offender
            i = int(bad.nonzero()[0, 0])
            group = list(self.groups)[i]
            where = f"`prior_precision[{group!r}]`" if named else "`prior_precision`"
            raise ValueError(f"{where} must be positive and finite, got {float(values[i])}")
        return vector

    def _one_precision(self, value: object, group: str | None) -> Tensor:
        where = "`prior_precision`" if group is None else f"`prior_precision[{group!r}]`"
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            raise TypeError(f"{where} must be a float or a 0-d tensor, got {type(value).__name__}")
        if isinstance(value, Tensor):
            t = value.to(dtype=self.dtype, device=self.device)
        else:  # straight to the model's dtype: a float32 detour would round 0.3 for float64
            t = torch.tensor(float(value), dtype=self.dtype, device=self.device)
        if t.ndim != 0:
            raise ValueError(f"{where} must be a 0-d tensor, got shape {tuple(t.shape)}")
        return t

    def _per_parameter(self, deltas: dict[str, Tensor]) -> Tensor:
        """delta expanded to (P,) in the order of the flattened parameters."""
        return torch.cat([deltas[self._group_of[n]].expand(self.numels[n]) for n in self.names])

    def _prepare_evaluation(self) -> None:
        """Everything that the evaluation needs and that does not depend on the precisions.

        ``_param_index`` (P,): the group (position in :attr:`groups`) of every flattened
        parameter; ``_sq_norm_vector``, ``_size_vector`` (n_groups,); for ``"kron"``
        ``_kron_products``: per group (by position), the ``a_i g_j / T`` of all its blocks
        (eigenvalues clamped at 0), flattened and concatenated.
        """
        position = {g: i for i, g in enumerate(self.groups)}
        ints = {"dtype": torch.long, "device": self.device}
        self._param_index = torch.cat(
            [torch.full((self.numels[n],), position[self._group_of[n]], **ints) for n in self.names]
        )
        self._sq_norm_vector = torch.stack([self.sq_norms[g] for g in self.groups])
        self._size_vector = torch.tensor(
            [float(self.group_sizes[g]) for g in self.groups], dtype=self.dtype, device=self.device
        )
        if self.structure != "kron":
            return
        per_group: dict[int, list[Tensor]] = {}
        for key, (a, _, g, _) in self.eigendecompositions.items():
            block = torch.outer(g.clamp_min(0), a.clamp_min(0)).reshape(-1) / self.temperature
            per_group.setdefault(position[self._block_groups[key]], []).append(block)
        self._kron_products = [
            (i, blocks[0] if len(blocks) == 1 else torch.cat(blocks))
            for i, blocks in per_group.items()
        ]

    def log_det_posterior_precision(self, prior_precision: PriorPrecision) -> Tensor:
        """0-d ``log det(H / T + diag(delta))`` in the chosen structure (see module docstring).

        For ``"kron"`` this is ``sum_l sum_{i,j} log(a_i g_j / T + delta_l)`` with the
        eigenvalues (clamped at 0 against round-off) of every layer's A and G.
        """
        return self._log_det(self._precision_vector(prior_precision))

    def _log_det(self, vector: Tensor) -> Tensor:
        T = self.temperature
        if self.structure == "full":
            assert isinstance(self.curvature, Tensor)
            H = self.curvature / T + torch.diag(vector[self._param_index])
            chol = torch.linalg.cholesky(H)
            return 2.0 * chol.diagonal().log().sum()
        if self.structure == "diag":
            assert isinstance(self.curvature, Tensor)
            return torch.log(self.curvature / T + vector[self._param_index]).sum()
        # one reduction per group (not a gather over all entries: the gather's backward adds
        # the entries' 1 / (a_i g_j / T + delta) one by one, losing float32 accuracy)
        return torch.stack(
            [torch.log(products + vector[i]).sum() for i, products in self._kron_products]
        ).sum()

    def log_prior(self, prior_precision: PriorPrecision) -> Tensor:
        """0-d ``-1/2 sum_g delta_g ||theta*_g||^2 + 1/2 sum_g P_g log delta_g``: the log prior
        density at theta* without its ``-P/2 log(2 pi)``, which cancels against the Gaussian
        integral's ``+P/2 log(2 pi)``."""
        return self._log_prior(self._precision_vector(prior_precision))

    def _log_prior(self, vector: Tensor) -> Tensor:
        return 0.5 * (self._size_vector * vector.log() - vector * self._sq_norm_vector).sum()

    def log_marginal_likelihood(self, prior_precision: PriorPrecision) -> Tensor:
        """0-d Laplace-GGN ``log p(D | delta)`` (paper 000, eq. 9; paper 001, eq. 7), exact up to
        nothing (the ``2 pi`` terms cancel):

            log p(D | theta*) / T - 1/2 sum_g delta_g ||theta*_g||^2
            + 1/2 sum_g P_g log delta_g - 1/2 log det(H / T + diag(delta)).

        Uses only what :meth:`fit` computed; differentiable in the precisions (and, through the
        likelihood and H, in whatever required a gradient during :meth:`fit`).

        Args:
            prior_precision: a positive float or 0-d tensor shared by all groups, or
                ``{group: float | 0-d tensor}`` with one entry per group of :attr:`groups`.
        """
        vector = self._precision_vector(prior_precision)
        return (
            self._log_likelihood / self.temperature
            + self._log_prior(vector)
            - 0.5 * self._log_det(vector)
        )


def _gram(rows: Tensor, block: int = 512) -> Tensor:
    """``rows^T rows`` (P, P) for rows (R, P), from its upper block triangle.

    The product is symmetric, so only the blocks ``rows[:, i]^T rows[:, i:]`` of ``block``
    columns are multiplied (about half the flops of one ``rows.T @ rows`` for P >> block) and
    the lower triangle is their transpose. Differentiable; no in-place writes.
    """
    P = rows.shape[1]
    if P <= 2 * block:
        return rows.T @ rows
    starts = list(range(0, P, block))
    uppers = [rows[:, i : i + block].T @ rows[:, i:] for i in starts]  # (b_i, P - i)
    lines = []
    for k, i in enumerate(starts):
        width = uppers[k].shape[0]
        left = [uppers[j][:, i - starts[j] : i - starts[j] + width].T for j in range(k)]
        lines.append(torch.cat([*left, uppers[k]], dim=1))
    return torch.cat(lines, dim=0)


def _symmetric_eigh(factor: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of ``(M + M^T) / 2`` in float64, cast back to ``M``'s dtype.

    M: (d, d). Returns ascending eigenvalues (d,) and eigenvectors (d, d) as columns. float32
    ``eigh`` of a KFAC factor sometimes fails to converge (seen in marglik training); float64
    does not, and the casts keep the result differentiable in M.
    """
    if factor.shape[-1] == 1:  # a bias block's A = [[1]]: nothing to decompose
        return factor.reshape(1), torch.ones_like(factor)
    sym = 0.5 * (factor + factor.mT)
    values, vectors = torch.linalg.eigh(sym.to(torch.float64))
    return values.to(factor.dtype), vectors.to(factor.dtype)


def _positive_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a positive float, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive float, got {value}")
    return float(value)

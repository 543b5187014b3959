"""The interface of the Laplace-GGN log marginal likelihood (paper 000, section 4, eq. 9; paper
001, sections 3.2-3.3, eqs. 7 and 15) and the ``Laplace(...)`` factory.

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

:class:`Laplace` holds what every structure shares: the likelihood, the prior groups, the fit of
everything that does not depend on the curvature's structure, and the evaluation (log prior,
log marginal likelihood, precisions). A structure is one subclass (:mod:`.full`, :mod:`.diag`,
:mod:`.kron`) that fits its curvature and supplies the log-determinant, the eigenvalues of every
group's curvature block (for effective parameters), the preconditioner of paper 001's eq. (20)
and the pairing of that preconditioner with one batch's curvature (paper 001, section 4.3).
``Laplace(model, likelihood, structure, **options)`` builds the structure's class.
"""

from __future__ import annotations

import math
import zlib
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ella.laplace.predictive import (
    LinkApproximation,
    PredictiveMethod,
    Subset,
    covered_parameters,
    probit,
    sample_softmax,
    standard_normal,
)
from ella.laplace.priors import (
    Likelihood,
    PriorPrecision,
    Structure,
    precision_vector,
    prior_groups,
)
from symdisc.curvature import (
    KronFactors,
    Loss,
    ModelFn,
    NonFiniteCurvatureError,
    Params,
    all_reduce_sum,
    check_group,
    check_replicated,
    flatten,
    functional,
    loss_value,
    per_sample_jacobian,
    shard_sizes,
    unflatten,
)
from symdisc.runtime import (
    NonFiniteLossError,
    check_choice,
    check_float,
    check_instance,
    check_int,
)

__all__ = ["Laplace", "iter_batches"]

Batch = tuple[Tensor, Tensor]
"""``(inputs (N, ...), targets)``: one batch of data."""


def iter_batches(
    data: Iterable[Batch], name: str = "data", *, device: torch.device | str | None = None
) -> Iterator[Batch]:
    """The ``(inputs, targets)`` batches of ``data``, checked one at a time as they stream and
    moved to ``device`` (when given); nothing is held beyond the current batch.

    Every batch must be a tuple or list (a DataLoader's default collation) of two tensors
    ``(inputs (B, ...), targets (B, ...))`` with the same non-zero B, and every batch must
    share the first one's shapes beyond B (inputs and targets separately).

    Args:
        data: any iterable of batches (a list, a generator, a ``torch.utils.data.DataLoader``);
            iterated once.
        name: the argument's name in the error messages.
        device: where to move the tensors (``Tensor.to``: differentiable, a no-op where they
            already are).

    Raises:
        TypeError: at once for a ``data`` that is not iterable or is a single ``(inputs,
            targets)`` pair (to be wrapped in a list); while streaming, for a batch
            that is not such a pair of tensors (naming ``name`` and the batch's position).
        ValueError: while streaming, for a batch of 0-d tensors, different or zero B, or
            shapes unlike the first batch's; after the last batch, for no batch at all.
    """
    if isinstance(data, (Tensor, str, bytes)):
        raise TypeError(
            f"`{name}` must be an iterable of (inputs, targets) batches, got {type(data).__name__}"
        )
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if all(isinstance(t, Tensor) for t in data):
            raise TypeError(
                f"`{name}` must be an iterable of (inputs, targets) batches, got a single "
                f"(inputs, targets) pair of tensors: pass it as a list of one batch, [(x, y)]"
            )
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError(
            f"`{name}` must be an iterable of (inputs, targets) batches, got {type(data).__name__}"
        ) from None
    return _checked(iterator, name, device)


def _checked(
    iterator: Iterator[Any], name: str, device: torch.device | str | None
) -> Iterator[Batch]:
    shapes: tuple[torch.Size, torch.Size] | None = None
    for i, batch in enumerate(iterator):
        pair = isinstance(batch, (tuple, list)) and len(batch) == 2
        if not (pair and all(isinstance(t, Tensor) for t in batch)):
            what = type(batch).__name__
            if isinstance(batch, (tuple, list)):
                what += f" of {len(batch)} ({', '.join(type(t).__name__ for t in batch)})"
            raise TypeError(
                f"`{name}` must yield (inputs, targets) pairs of tensors; batch {i} is a {what}"
            )
        x, y = batch
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"`{name}` batch {i}: inputs and targets must share a non-empty first "
                f"dimension, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if shapes is None:
            shapes = (x.shape[1:], y.shape[1:])
        elif (x.shape[1:], y.shape[1:]) != shapes:
            raise ValueError(
                f"`{name}` batches must share their shapes beyond the first dimension: batch 0 "
                f"has inputs (B, {', '.join(map(str, shapes[0]))}) and targets "
                f"(B, {', '.join(map(str, shapes[1]))}), batch {i} {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
        if device is not None:
            x, y = x.to(device), y.to(device)
        yield x, y
    if shapes is None:
        raise ValueError(f"`{name}` must yield at least one (inputs, targets) batch, got none")


_STRUCTURES: dict[str, type[Laplace]] = {}


class _Factory(ABCMeta):
    """Makes ``Laplace(model, likelihood, structure, **options)`` build the structure's class;
    a structure's class itself is called without ``structure``."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Laplace:
            return _build(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def _build(
    model: nn.Module,
    likelihood: Likelihood,
    structure: Structure,
    *,
    kron_factors: Callable[..., dict[str, KronFactors]] | None = None,
    **options: Any,
) -> Laplace:
    """The structure's class on the shared ``options`` and the factory options it takes."""
    check_choice(structure, "structure", Structure)
    cls = _STRUCTURES[structure]
    extras = {"kron_factors": kron_factors}
    own = {k: v for k, v in extras.items() if k in cls.factory_options}
    return cls(model, likelihood, **options, **own)


class Laplace(metaclass=_Factory):
    """Laplace-GGN approximation of the log marginal likelihood, refit-free in the prior.

    ``Laplace(model, likelihood, structure, **options)`` returns the class of ``structure``:
    :class:`~ella.laplace.FullLaplace` (``"full"``), :class:`~ella.laplace.KronLaplace`
    (``"kron"``) or :class:`~ella.laplace.DiagLaplace` (``"diag"``), all with this interface.

    Args:
        model: an ``nn.Module`` mapping inputs (N, ...) to outputs (N, C), at its MAP parameters
            when :meth:`fit` is called. It is never modified; its buffers are read as they are
            (put it in ``eval()`` mode if it has batch statistics).
        likelihood: ``"classification"``: categorical on softmax(f) with class-index targets
            (N,), negative log-likelihood ``sum_n CE(f_n, y_n)``; ``"regression"``: Gaussian
            ``N(y | f, sigma^2 I)`` with targets (N, C), negative log-likelihood
            ``sum ||y - f||^2 / (2 sigma^2) + N C/2 log(2 pi sigma^2)``.
        structure: ``"full"``, ``"kron"`` or ``"diag"`` (factory only).
        sigma: observation noise standard deviation of the regression likelihood (ignored for
            classification).
        temperature: T of the tempered likelihood ``p(D | theta)^(1/T)``; divides the
            log-likelihood and the GGN.
        per_tensor: one prior group per parameter tensor instead of one per layer and path
            (see :func:`~ella.laplace.prior_groups`).
        subset: which weights the posterior covers (:func:`~ella.laplace.covered_parameters`):
            ``"all"``, ``"last_layer"`` (the last module that owns a posterior parameter) or a
            list of module names, exact names of ``model.named_modules()`` (a module covers its
            submodules; never substrings). Only the covered weights enter the curvature, the
            prior groups (a group keeps its name and loses its uncovered members), the log
            marginal likelihood and the predictive; the others stay at the model's values.
        kron_factors: (factory; used by ``"kron"`` only, ignored by the exact-GGN structures)
            see :class:`~ella.laplace.KronLaplace`.

    Attributes:
        covered: the names of the covered parameters (``named_parameters`` order).
        subset_modules: the covered modules (None for ``subset="all"``).

    Attributes (after :meth:`fit`):
        groups: ``{group: [parameter names]}`` (covered parameters only).
        n_params: P, the number of parameters integrated over.
        names, numels: the parameters' names and sizes, in the order of the flattening.
        group_sizes: ``{group: P_g}``.
        sq_norms: ``{group: ||theta*_g||^2}`` (0-d tensors, detached: theta* is a constant).
        log_likelihood: 0-d ``log p(D | theta*)`` (untempered), with its graph to the inputs.
        curvature: the structure's GGN of the untempered negative log-likelihood.

    Predicting (after :meth:`fit`): :meth:`functional_variance`, :meth:`predictive` (GLM with
    probit or Monte-Carlo link, or network Monte-Carlo), :meth:`sample`; saving:
    :meth:`state_dict` / :meth:`load_state_dict`.

    Raises:
        TypeError: for a non-module ``model``, a non-bool ``per_tensor``, a non-number
            ``sigma`` / ``temperature`` or a ``subset`` of another type.
        ValueError: for an unknown ``likelihood`` or ``structure``, a non-positive ``sigma`` or
            ``temperature``, or a ``subset`` naming no module of ``model`` (listing the valid
            names) or one without posterior parameters.

    Example:
        >>> la = Laplace(model, "classification", "kron").fit([(x, y)])
        >>> la.log_marginal_likelihood({g: torch.tensor(1.0) for g in la.groups})
        >>> probs = la.predictive(x_test, 1.0)  # (N, C), GLM predictive with probit
    """

    structure: ClassVar[Structure]
    factory_options: ClassVar[tuple[str, ...]] = ()
    """Options of the factory that this structure's class takes besides the shared ones."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "structure" in cls.__dict__:
            _STRUCTURES[cls.structure] = cls

    def __init__(
        self,
        model: nn.Module,
        likelihood: Likelihood,
        *,
        sigma: float = 1.0,
        temperature: float = 1.0,
        per_tensor: bool = False,
        subset: Subset = "all",
    ) -> None:
        self.model = check_instance(model, "model", nn.Module)
        self.likelihood: Likelihood = check_choice(likelihood, "likelihood", Likelihood)
        self.sigma = check_float(sigma, "sigma", positive=True)
        self.temperature = check_float(temperature, "temperature", positive=True)
        self.per_tensor = per_tensor
        covered, self.subset_modules = covered_parameters(model, subset)
        self.covered = covered
        inside = set(covered)
        groups = prior_groups(model, per_tensor)
        self.groups = {
            g: [n for n in ns if n in inside] for g, ns in groups.items() if set(ns) & inside
        }
        self._group_of = {p: g for g, names in self.groups.items() for p in names}
        self._fitted = False

    # -- the likelihood --------------------------------------------------------------------

    @property
    def loss(self) -> Loss:
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

    def _log_lik_of_loss(self, value: Tensor, n_entries: int) -> Tensor:
        """``log p(y | f)`` from the summed symdisc loss over ``n_entries`` outputs: ``-CE`` for
        classification, ``-sum (y - f)^2 / (2 sigma^2) - n_entries/2 log(2 pi sigma^2)``."""
        if self.likelihood == "classification":
            return -value
        norm = 0.5 * n_entries * math.log(2.0 * math.pi * self.sigma**2)
        return -value / (2.0 * self.sigma**2) - norm

    def _batch_log_lik(
        self, model_fn: ModelFn, params: Params, inputs: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One batch's outputs (N, C) and 0-d log-likelihood."""
        outputs = model_fn(params, inputs)
        value = loss_value(outputs, targets, self.loss, "sum")
        return outputs, self._log_lik_of_loss(value, outputs.numel())

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, data: Iterable[Batch], *, group: Any = None) -> Laplace:
        """Compute, once, everything the approximation needs at the current parameters.

        ``data`` is streamed: one pass, each batch checked (:func:`iter_batches`), moved to the
        model's device and reduced into the log-likelihood and the curvature before the next
        one is read; nothing is held beyond one batch and the running sums, so a DataLoader
        over a data set larger than memory is fine. The exception: inputs that require a
        gradient (with gradients enabled; paper 001's invariance learning differentiates the
        marginal likelihood through the augmented inputs, :func:`ella.invariance.
        invariant_laplace` with ``differentiable=True``) keep their graph, and that graph holds
        every batch's activations until the result is released. Whether the inputs require a
        gradient is read from the first batch; every batch must agree.

        Args:
            data: any iterable of ``(inputs, targets)`` batches (a list, a generator, a
                ``torch.utils.data.DataLoader``), iterated once. Inputs that require a gradient
                keep their graph: the likelihood and the curvature (and so the marginal
                likelihood) are differentiable in them.
            group: data-parallel fit (:mod:`symdisc.curvature.distributed`): a
                ``torch.distributed`` process group (``None``, the default, fits on this
                process's ``data`` alone; pass ``torch.distributed.group.WORLD`` for the
                default group), every rank holding a shard of the data as its ``data`` and
                the same model at the same parameters. Every rank then ends with the fit of
                all the ranks' data together: the log-likelihood and the curvature are
                fitted on the shard and all-reduced, sums over examples summed and means over
                examples (KFAC's A, a mean over the rows of a layer's inputs) combined with the
                weights ``n_r / N`` of the shard sizes. Reductions: one ``all_gather`` of the
                shard sizes, one ``all_reduce`` of a fingerprint of the parameters and input
                shape, one of the log-likelihood and one of the curvature (packed). Inputs
                that require a gradient are refused (the all-reduce does not carry a graph).

        Returns:
            ``self``.

        Raises:
            NonFiniteLossError: for a likelihood that is not finite (NaN or infinite outputs
                or log-likelihood), as every trainer's NaN stop
                (:class:`symdisc.runtime.NonFiniteLossError`).
            TypeError: for a ``data`` that is not iterable or a batch that is not a pair of
                tensors (naming ``data``).
            ValueError: for no data, batches of different shapes, some but not all inputs
                requiring a gradient, wrongly shaped outputs or targets, or what the structure
                rejects (see its class); with ``group``: no initialised process group, a rank
                without data (raised on every rank), parameters or input shapes that differ
                between ranks, or inputs that require a gradient.
        """
        if group is not None:
            check_group(group)
        model_fn, params = functional(self.model, self.covered)
        first = next(iter(params.values()))
        self.dtype, self.device = first.dtype, first.device
        if group is None:
            return self._fit_local(data, model_fn, params)
        counted = {"n": 0}

        def counting(batches: Iterable[Batch]) -> Iterator[Batch]:
            for x, y in iter_batches(batches, "data", device=self.device):
                counted["n"] += x.shape[0]
                yield x, y

        try:
            self._fit_local(counting(data), model_fn, params, distributed=True)
        except Exception:
            # the other ranks wait in the first collective: tell them, as a shard of size 0,
            # that this rank failed, then raise this rank's own error
            try:
                shard_sizes(0, group, device=self.device)
            except ValueError:
                pass
            raise
        self._fitted = False
        self._reduce_fit(group, counted["n"])
        self._fitted = True
        return self

    def _fit_local(
        self, data: Iterable[Batch], model_fn: ModelFn, params: Params, distributed: bool = False
    ) -> Laplace:
        """:meth:`fit` on this process's ``data`` (``distributed``: refuse inputs that require a
        gradient, and leave the curvature's derived quantities to :meth:`_reduce_fit`)."""
        batches = iter_batches(data, "data", device=self.device)
        head = next(batches, None)
        if head is None:  # pragma: no cover  (iter_batches raises for no batch)
            raise ValueError("`data` must yield at least one (inputs, targets) batch, got none")
        self._input_shape = tuple(head[0].shape[1:])
        self._theta = flatten(params).detach()
        keep_graph = torch.is_grad_enabled() and head[0].requires_grad
        if distributed and keep_graph:
            raise ValueError(
                "`data`: inputs that require a gradient cannot be fitted with `group` (the "
                "all-reduce of the curvature does not carry its graph); detach them"
            )
        self.names = list(params)
        self.numels = {n: p.numel() for n, p in params.items()}
        self.n_params = sum(self.numels.values())
        self.group_sizes = {g: sum(self.numels[n] for n in ns) for g, ns in self.groups.items()}
        self.sq_norms = {
            g: sum(params[n].pow(2).sum() for n in ns) for g, ns in self.groups.items()
        }
        stream = _same_grad([head], batches, keep_graph)
        del head  # held by the stream only until it is consumed
        try:
            log_lik = self._fit_curvature(stream, model_fn, params, keep_graph=keep_graph)
        except NonFiniteCurvatureError as err:  # its loss is the negative log-likelihood
            raise NonFiniteLossError(
                f"the log-likelihood at the parameters must be finite ({err})"
            ) from err
        if not torch.isfinite(log_lik.detach()):
            raise NonFiniteLossError(
                f"the log-likelihood at the parameters must be finite, got {log_lik}"
            )
        self._log_likelihood = log_lik
        self._cholesky_cache = None  # the full structure's factor of the last precisions
        self._prepare_evaluation()
        self._prepare_curvature()
        self._fitted = True
        return self

    _state_means: ClassVar[frozenset[str]] = frozenset()
    """Keys of :meth:`_curvature_state`'s dicts whose tensors are means over examples (a
    structure declares its own, as the Kronecker one does its input factors A): a data-parallel
    fit combines them with the weights ``n_r / N``. Every other tensor of the state is a sum
    over examples (the GGN, its diagonal, KFAC's G of the summed loss) and is summed over the
    ranks."""

    def _reduce_fit(self, group: Any, n_local: int) -> None:
        """Turn this rank's fit of its shard into the fit of all ranks' data (see :meth:`fit`).

        The curvature goes through :meth:`_curvature_state` and :meth:`_load_curvature`, so
        every structure whose state is made of sums over examples and of the means named in
        :attr:`_state_means` needs nothing more.
        """
        sizes = shard_sizes(n_local, group, device=self.device)
        share = n_local / sum(sizes)
        theta = self._theta.to(torch.float64)
        shape = self._input_shape  # fixed-length marks: every rank sends as many numbers
        code = float(zlib.crc32(repr(shape).encode()))
        marks = torch.tensor(
            [theta.sum().item(), theta.pow(2).sum().item(), float(theta.numel()), code],
            dtype=torch.float64,
            device=self.device,
        )
        check_replicated(marks, "the model's parameters and the inputs' shape", group)
        self._log_likelihood = all_reduce_sum(self._log_likelihood.detach(), group)
        if not torch.isfinite(self._log_likelihood):
            raise NonFiniteLossError(
                f"the log-likelihood at the parameters must be finite, got {self._log_likelihood}"
            )
        state = self._curvature_state()
        leaves: list[tuple[Tensor, float]] = []
        _collect(state, self._state_means, share, leaves, mean=False)
        packed = all_reduce_sum(torch.cat([w * t.reshape(-1) for t, w in leaves]), group)
        summed = iter(packed.split([t.numel() for t, _ in leaves]))
        self._cholesky_cache = None
        self._load_curvature(_rebuild(state, summed))

    @abstractmethod
    def _fit_curvature(
        self, batches: Iterator[Batch], model_fn: ModelFn, params: Params, *, keep_graph: bool
    ) -> Tensor:
        """Fit the structure's curvature on ``batches`` (checked, on the model's device; an
        iterator to consume once, holding nothing beyond a batch) at ``params``; return the 0-d
        log-likelihood (with its graph to the inputs). ``keep_graph``: the inputs require a
        gradient and the curvature must stay differentiable in them."""

    def _prepare_curvature(self) -> None:  # noqa: B027  (optional hook)
        """Whatever the structure derives from its fitted curvature once, after the
        log-likelihood was checked finite (the default: nothing)."""

    def _prepare_evaluation(self) -> None:
        """Everything that the evaluation needs and that depends neither on the precisions nor
        on the structure: ``_param_index`` (P,), the group (position in :attr:`groups`) of every
        flattened parameter; ``_sq_norm_vector``, ``_size_vector`` (n_groups,)."""
        position = {g: i for i, g in enumerate(self.groups)}
        ints = {"dtype": torch.long, "device": self.device}
        self._param_index = torch.cat(
            [torch.full((self.numels[n],), position[self._group_of[n]], **ints) for n in self.names]
        )
        self._sq_norm_vector = torch.stack([self.sq_norms[g] for g in self.groups])
        self._size_vector = torch.tensor(
            [float(self.group_sizes[g]) for g in self.groups], dtype=self.dtype, device=self.device
        )

    def _require_fit(self) -> None:
        if not self._fitted:
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet: call `fit(data)` first (data: an "
                f"iterable of (inputs, targets) batches, e.g. [(x, y)]), or `load_state_dict` "
                f"of a fitted one"
            )

    @property
    def log_likelihood(self) -> Tensor:
        """0-d ``log p(D | theta*)`` of the untempered likelihood, normalisers included."""
        self._require_fit()
        return self._log_likelihood

    # -- evaluation ------------------------------------------------------------------------

    def precisions(self, prior_precision: PriorPrecision) -> dict[str, Tensor]:
        """``{group: 0-d delta_g}`` from a shared float / 0-d tensor or a dict over the groups.

        Raises:
            RuntimeError: before :meth:`fit`.
            TypeError: for another type.
            ValueError: for a dict whose keys are not the groups, a tensor that is not 0-d, or a
                precision that is not positive and finite (naming the group).
        """
        return dict(zip(self.groups, self._precision_vector(prior_precision).unbind()))

    def _precision_vector(self, prior_precision: PriorPrecision) -> Tensor:
        """(n_groups,) precisions in the order of :attr:`groups`, checked (see precisions)."""
        self._require_fit()
        return precision_vector(self.groups, prior_precision, self.dtype, self.device)

    def _per_parameter(self, deltas: dict[str, Tensor]) -> Tensor:
        """delta expanded to (P,) in the order of the flattened parameters."""
        return torch.cat([deltas[self._group_of[n]].expand(self.numels[n]) for n in self.names])

    def log_det_posterior_precision(self, prior_precision: PriorPrecision) -> Tensor:
        """0-d ``log det(H / T + diag(delta))`` in the structure's approximation of H."""
        return self._log_det(self._precision_vector(prior_precision))

    @abstractmethod
    def _log_det(self, vector: Tensor) -> Tensor:
        """0-d ``log det(H / T + diag(delta))`` for the (n_groups,) precisions ``vector``."""

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

    # -- the posterior predictive ----------------------------------------------------------

    def _check_inputs(self, x: object) -> Tensor:
        """``x`` (N, ...) on the model's device, with the fitted inputs' shape beyond N."""
        self._require_fit()
        if not isinstance(x, Tensor):
            raise TypeError(f"`x` must be a Tensor (N, ...), got {type(x).__name__}")
        if x.ndim < 1 or x.shape[0] == 0 or tuple(x.shape[1:]) != self._input_shape:
            raise ValueError(
                f"`x` must have shape (N, {', '.join(map(str, self._input_shape))}) with N > 0 "
                f"(the inputs the posterior was fitted on), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"`x` must be a floating tensor (the model's dtype {self.dtype}), got {x.dtype}"
            )
        return x.to(self.device)

    def _map_function(self) -> tuple[ModelFn, Params]:
        """The model as a function of the covered parameters, and those at the fitted MAP
        (the other parameters are the model's own, at their MAP)."""
        fn, params = functional(self.model, self.names)
        return fn, unflatten(self._theta, params)

    def _glm(self, x: Tensor, vector: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x; theta*) (N, C), J Sigma J^T (N, C, C))``, in chunks of examples such that a
        chunk's Jacobian (n, C, P) holds at most 2^24 entries."""
        fn, params = self._map_function()
        with torch.no_grad():
            n_out = fn(params, x[:1]).shape[-1]
        step = max(1, 2**24 // (n_out * self.n_params))
        means, covs = [], []
        for chunk in x.split(step):
            jac = per_sample_jacobian(fn, params, chunk)  # (n, C, P)
            if jac.ndim != 3:
                raise ValueError(
                    f"the predictive needs model outputs of shape (N, C), got per-example "
                    f"outputs of shape {tuple(jac.shape[1:-1])}"
                )
            with torch.no_grad():
                means.append(fn(params, chunk))
            covs.append(self._functional_covariance(jac.detach(), vector))
        return torch.cat(means), torch.cat(covs)

    def functional_variance(self, x: Tensor, prior_precision: PriorPrecision) -> Tensor:
        """(N, C, C) ``J(x) Sigma J(x)^T``: the covariance of the linearised model's outputs
        under the posterior ``N(theta*, Sigma)``, ``Sigma = (H / T + diag(delta))^-1`` on the
        covered weights in the structure's approximation of H (Immer et al. 2021, section 3).

        ``J(x)`` (C, P) is the Jacobian of ``model(x_n)`` in the covered weights at theta*
        (per example, :func:`symdisc.curvature.per_sample_jacobian`); for a model that averages
        its outputs over augmentation draws (:class:`ella.invariance.DrawAverage`, paper 001,
        eq. 16) it is the Jacobian of the average, i.e. the draw-averaged Jacobian.
        Differentiable in the precisions.

        Args:
            x: inputs (N, ...) shaped like the inputs of :meth:`fit` beyond N.
            prior_precision: as for :meth:`log_marginal_likelihood`.

        Raises:
            RuntimeError: before :meth:`fit`.
            TypeError, ValueError: for an ``x`` that is not a tensor of that shape (naming
                ``x``), or a bad ``prior_precision``.
        """
        x = self._check_inputs(x)
        return self._glm(x, self._precision_vector(prior_precision))[1]

    def predictive(
        self,
        x: Tensor,
        prior_precision: PriorPrecision,
        *,
        method: PredictiveMethod = "glm",
        link: LinkApproximation = "probit",
        n_samples: int = 100,
        generator: torch.Generator | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The posterior predictive at ``x`` (see :mod:`ella.laplace.predictive`).

        Args:
            x: inputs (N, ...) shaped like the inputs of :meth:`fit` beyond N.
            prior_precision: as for :meth:`log_marginal_likelihood`.
            method: ``"glm"``: the linearised model, ``f ~ N(f(x; theta*), J Sigma J^T)``;
                ``"mc"``: the network itself at ``n_samples`` posterior draws
                (:meth:`sample`).
            link: classification with ``method="glm"``: ``"probit"``, ``softmax(f / sqrt(1 +
                pi/8 diag(J Sigma J^T)))``, or ``"mc"``, the mean softmax of ``n_samples``
                draws of f. Ignored for regression and for ``method="mc"``.
            n_samples: draws of ``link="mc"`` or ``method="mc"``.
            generator: the random draws' generator (default: torch's global one).

        Returns:
            classification: probabilities (N, C). Regression: ``(mean (N, C), variance (N,
            C))``, the variance including the observation noise sigma^2; ``"glm"``:
            ``f(x; theta*)`` and ``diag(J Sigma J^T) + sigma^2``; ``"mc"``: the mean and the
            (unbiased) variance of ``f(x; theta_s)`` over the draws, plus sigma^2.

        Raises:
            RuntimeError: before :meth:`fit`.
            TypeError, ValueError: for a bad ``x`` (naming ``x``), ``method``, ``link``,
                ``n_samples`` (at least 2 for regression with ``method="mc"``) or
                ``generator``.
        """
        x = self._check_inputs(x)
        check_choice(method, "method", PredictiveMethod)
        check_choice(link, "link", LinkApproximation)
        n_samples = check_int(n_samples, "n_samples", minimum=1)
        if generator is not None:
            check_instance(generator, "generator", torch.Generator)
        vector = self._precision_vector(prior_precision)
        regression = self.likelihood == "regression"
        if method == "glm":
            mean, cov = self._glm(x, vector)
            var = cov.diagonal(dim1=-2, dim2=-1)
            if regression:
                return mean, var + self.sigma**2
            if link == "probit":
                return probit(mean, var)
            return sample_softmax(mean, cov, n_samples, generator)
        if regression and n_samples < 2:
            raise ValueError(
                f"`n_samples` must be at least 2 for a regression variance, got {n_samples}"
            )
        fn, params = self._map_function()
        draws = self._theta + self._sample_offsets(n_samples, vector, generator)
        chunk = max(1, min(n_samples, 2**22 // max(1, x.numel())))
        with torch.no_grad():
            outs = torch.vmap(lambda d: fn(unflatten(d, params), x), chunk_size=chunk)(
                draws.detach()
            )
        if regression:
            return outs.mean(0), outs.var(0) + self.sigma**2
        return torch.softmax(outs, dim=-1).mean(0)

    def sample(
        self,
        n: int,
        prior_precision: PriorPrecision,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(n, P) draws ``theta ~ N(theta*, Sigma)`` of the covered weights, flattened in the
        order of :attr:`names` (:func:`symdisc.curvature.unflatten` gives them their shapes).

        Raises:
            RuntimeError: before :meth:`fit`.
            TypeError, ValueError: for a bad ``n`` (at least 1), ``prior_precision`` or
                ``generator``.
        """
        self._require_fit()
        n = check_int(n, "n", minimum=1)
        if generator is not None:
            check_instance(generator, "generator", torch.Generator)
        vector = self._precision_vector(prior_precision)
        return self._theta + self._sample_offsets(n, vector, generator)

    def _normal(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """Standard normal draws on :attr:`device`, made on the generator's device (a CPU
        generator gives the same draws for a model on any device)."""
        return standard_normal(shape, self.dtype, self.device, generator)

    @abstractmethod
    def _functional_covariance(self, jac: Tensor, vector: Tensor) -> Tensor:
        """(N, C, C) ``J Sigma J^T`` for Jacobians ``jac`` (N, C, P) and the (n_groups,)
        precisions ``vector``."""

    @abstractmethod
    def _sample_offsets(self, n: int, vector: Tensor, generator: torch.Generator | None) -> Tensor:
        """(n, P) draws from ``N(0, Sigma)``."""

    # -- saving and loading ----------------------------------------------------------------

    def _fingerprint(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(p.shape) for n, p in self.model.named_parameters()}

    def _checksums(self) -> dict[str, tuple[float, float]]:
        """``{name: (sum, sum of squares)}`` of every parameter of the model, in float64."""
        out = {}
        for n, p in self.model.named_parameters():
            v = p.detach().to(torch.float64)
            out[n] = (float(v.sum()), float(v.pow(2).sum()))
        return out

    def _options(self) -> dict[str, Any]:
        return {
            "structure": self.structure,
            "likelihood": self.likelihood,
            "sigma": self.sigma if self.likelihood == "regression" else None,
            "temperature": self.temperature,
            "per_tensor": self.per_tensor,
            "covered parameters": list(self.covered),
            "groups": {g: list(ns) for g, ns in self.groups.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything a fitted posterior needs, detached, for ``torch.save``: the options, the
        covered parameters and groups, the model's fingerprint (parameter names, shapes and
        checksums), theta*, the log-likelihood, the squared norms and the curvature.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        self._require_fit()
        return {
            "format": 1,
            "options": self._options(),
            "fingerprint": self._fingerprint(),
            "checksums": self._checksums(),
            "input_shape": self._input_shape,
            "theta": self._theta.detach().clone(),
            "log_likelihood": self._log_likelihood.detach().clone(),
            "sq_norms": {g: v.detach().clone() for g, v in self.sq_norms.items()},
            "curvature": self._curvature_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> Laplace:
        """Restore a posterior saved by :meth:`state_dict` (of a Laplace built with the same
        options on the same model at the same parameters); the tensors are moved to the
        model's device and dtype. Returns ``self``, fitted.

        Raises:
            TypeError: for a ``state`` that is not such a dict.
            ValueError: naming what differs: the options (structure, likelihood, sigma,
                temperature, per_tensor, covered parameters, groups), the model's parameter
                names or shapes, or its parameter values.
        """
        keys = {"format", "options", "fingerprint", "checksums", "theta", "curvature"}
        if not isinstance(state, dict) or not keys <= state.keys():
            raise TypeError(
                f"`state` must be a dict from Laplace.state_dict(), got {type(state).__name__}"
                + (f" without {sorted(keys - state.keys())}" if isinstance(state, dict) else "")
            )
        mine, theirs = self._fingerprint(), state["fingerprint"]
        if mine != theirs:
            missing = [n for n in theirs if n not in mine]
            extra = [n for n in mine if n not in theirs]
            shapes = [
                f"{n}: saved {tuple(theirs[n])}, model {mine[n]}"
                for n in mine
                if n in theirs and tuple(theirs[n]) != mine[n]
            ]
            raise ValueError(
                f"`state` was saved for another model: parameters missing from the model "
                f"{missing}, not in the saved posterior {extra}, different shapes {shapes}"
            )
        options = self._options()
        differ = [k for k, v in options.items() if state["options"].get(k) != v]
        if differ:
            raise ValueError(
                "`state` was saved with other options: "
                + "; ".join(
                    f"{k}: saved {state['options'].get(k)!r}, here {options[k]!r}" for k in differ
                )
            )
        sums = self._checksums()
        changed = [
            n
            for n, (s, q) in state["checksums"].items()
            if not (
                math.isclose(s, sums[n][0], rel_tol=1e-6, abs_tol=1e-9)
                and math.isclose(q, sums[n][1], rel_tol=1e-6, abs_tol=1e-9)
            )
        ]
        if changed:
            raise ValueError(
                f"`state` was saved at other parameter values: the model's {changed} differ "
                f"from the saved posterior's MAP (load the model's own weights first)"
            )
        first = dict(self.model.named_parameters())[self.covered[0]]
        self.dtype, self.device = first.dtype, first.device
        like = {"dtype": self.dtype, "device": self.device}
        shapes = self._fingerprint()
        self.names = list(self.covered)
        self.numels = {n: math.prod(shapes[n]) for n in self.names}
        self.n_params = sum(self.numels.values())
        self.group_sizes = {g: sum(self.numels[n] for n in ns) for g, ns in self.groups.items()}
        self.sq_norms = {g: state["sq_norms"][g].to(**like) for g in self.groups}
        self._input_shape = tuple(state["input_shape"])
        self._theta = state["theta"].to(**like)
        self._log_likelihood = state["log_likelihood"].to(**like)
        self._load_curvature(state["curvature"])
        self._cholesky_cache = None
        self._prepare_evaluation()
        self._fitted = True
        return self

    @abstractmethod
    def _curvature_state(self) -> Any:
        """The fitted curvature, detached, of plain tensors, lists and dicts."""

    @abstractmethod
    def _load_curvature(self, state: Any) -> None:
        """Set the curvature (on :attr:`device`, in :attr:`dtype`) from
        :meth:`_curvature_state`'s form and derive what :meth:`_prepare_curvature` would."""

    # -- what effective parameters and the eta-gradient need ------------------------------

    @abstractmethod
    def group_eigenvalues(self) -> dict[str, Tensor]:
        """``{group: lambda}``: the eigenvalues (clamped at 0 against round-off) of every
        group's block of the tempered curvature ``H / T``, in the structure's approximation,
        in the order of :attr:`groups` (paper 000, appendix D.2: effective parameters)."""

    @abstractmethod
    def preconditioner(self, prior_precision: PriorPrecision) -> Any:
        """The fixed weights W of paper 001's eq. (20): ``d log det(H / T + diag(delta)) =
        <W, dH>`` for a change dH of the untempered curvature, detached (computed once over all
        the data); its form is the structure's, for :meth:`curvature_pairing`."""

    @abstractmethod
    def curvature_pairing(
        self, weights: Any, inputs: Tensor, *, n_total: int
    ) -> tuple[Tensor, Tensor]:
        """One batch's share of ``<W, H>`` with the graph of that batch only (paper 001,
        section 4.3).

        Args:
            weights: :meth:`preconditioner`'s result.
            inputs: the batch's inputs to :attr:`model` (B, ...), with whatever graph they have
                (e.g. to the augmentation's eta).
            n_total: N, the number of examples the curvature was fitted on (an average over
                all of them, such as KFAC's A, gets the batch's share of it).

        Returns:
            ``(outputs, term)``: the model's outputs (B, C) on ``inputs`` (for the batch's
            likelihood) and the 0-d term, whose sum over batches covering the data is
            ``<W, H>`` of the fitted curvature.
        """


def _same_grad(head: list[Batch], rest: Iterator[Batch], keep_graph: bool) -> Iterator[Batch]:
    """The one batch of ``head`` (taken out, so that nothing keeps it once it is consumed), then
    ``rest``, with ValueError for a batch whose inputs' ``requires_grad`` differs from the
    first batch's (when gradients are enabled)."""
    yield head.pop()
    for i, (x, y) in enumerate(rest, start=1):
        if torch.is_grad_enabled() and x.requires_grad != keep_graph:
            raise ValueError(
                f"`data`: the inputs of all batches or of none must require a gradient; batch "
                f"0 {'does' if keep_graph else 'does not'}, batch {i} "
                f"{'does' if x.requires_grad else 'does not'}"
            )
        yield x, y


def _collect(
    state: Any, means: frozenset[str], share: float, out: list[tuple[Tensor, float]], mean: bool
) -> None:
    """The tensors of a curvature state in traversal order, each with its weight: ``share`` for
    a mean over examples (under a key in ``means``), 1 for a sum."""
    if isinstance(state, Tensor):
        out.append((state, share if mean else 1.0))
    elif isinstance(state, dict):
        for key, value in state.items():
            _collect(value, means, share, out, mean or key in means)
    elif isinstance(state, (list, tuple)):
        for value in state:
            _collect(value, means, share, out, mean)


def _rebuild(state: Any, values: Iterator[Tensor]) -> Any:
    """``state`` with its tensors replaced, in :func:`_collect`'s order, by ``values``."""
    if isinstance(state, Tensor):
        return next(values).reshape(state.shape)
    if isinstance(state, dict):
        return {k: _rebuild(v, values) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_rebuild(v, values) for v in state)
    return state

"""Data-parallel curvature on ``torch.distributed``: every rank holds a shard of the data, the
results are those of one process over all the data.

Shared infrastructure (no equation of the papers). A loss over N examples split into shards of
n_r examples (rank r) is ``L = sum_r w_r L_r`` with ``w_r = n_r / N`` for a mean reduction and
``w_r = 1`` for a sum; its Hessian and GGN are ``sum_r w_r H_r``, so

* a product is the all-reduced (summed) weighted local product (:class:`DistributedOperator`);
  the estimators that take an operator (:func:`~symdisc.curvature.lanczos`,
  :func:`~symdisc.curvature.slq_density`, :func:`~symdisc.curvature.hutchinson`,
  :func:`~symdisc.curvature.hutchpp`, :func:`~symdisc.curvature.eigenvalues`) run unchanged on
  every rank, given the same seed or generator on every rank, and return the same result
  everywhere;
* KFAC's output factor G (the reduction's scale times a sum over examples) and the loss combine
  with the same weights, and the input factor A (a mean over the rows of the layer inputs) with
  ``n_r / N`` whatever the reduction (:func:`reduce_kfac`, :func:`distributed_kfac`): exact when
  every example contributes equally many rows, as for the ``nn.Linear`` and ``nn.Conv2d`` rules
  on inputs of one shape;
* sharpness's loss changes are linear in the loss, so they are all-reduced with the same
  weights before the means are taken (:func:`distributed_sharpness`).

Every collective is a ``torch.distributed.all_reduce`` (or ``all_gather`` of a few counts) on
the tensors' own device, so the same code runs with gloo on CPU tensors and NCCL on CUDA
tensors. Every rank must make the same calls in the same order (a rank that raises before a
collective leaves the others waiting until the process group's timeout). The Laplace fit takes
the process group itself (``ella.laplace.Laplace.fit(data, group=...)``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from symdisc.curvature._linop import (
    CurvatureOperator,
    ParameterOperator,
    SymmetricOperator,
    check_square,
)
from symdisc.curvature._random import SeedLike, as_generator
from symdisc.curvature.functional import Params, check_params, flatten
from symdisc.curvature.kfac import KronFactors, kfac_with_loss
from symdisc.curvature.losses import Reduction
from symdisc.curvature.sharpness import (
    SharpnessResult,
    check_sharpness_arguments,
    random_directions,
    sharpness,
)
from symdisc.runtime.checks import (
    check_batches,
    check_bool,
    check_choice,
    check_instance,
    check_int,
)

__all__ = [
    "DistributedOperator",
    "all_reduce_sum",
    "check_group",
    "check_replicated",
    "distributed_kfac",
    "distributed_kfac_with_loss",
    "distributed_sharpness",
    "reduce_kfac",
    "shard_sizes",
    "shard_weight",
]

ProcessGroup = Any  # torch.distributed.ProcessGroup, or None for the default group


def check_group(group: ProcessGroup) -> tuple[int, int]:
    """``(rank, world_size)`` of ``group`` (None: the default group) once it is usable.

    Raises:
        ValueError: when ``torch.distributed`` is not available or no process group is
            initialised (call ``torch.distributed.init_process_group`` first, e.g. under
            ``torchrun``), or when this process is not a member of ``group``.
        TypeError: for a ``group`` that is neither None nor a ``ProcessGroup``.
    """
    if not dist.is_available():
        raise ValueError("`group`: torch.distributed is not available in this build of torch")
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"`group` must be a torch.distributed.ProcessGroup or None (the default group), "
            f"got {type(group).__name__}"
        )
    if not dist.is_initialized():
        raise ValueError(
            "`group`: no process group is initialised; call "
            "torch.distributed.init_process_group(...) on every rank first (torchrun sets the "
            "environment for init_method='env://')"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("`group`: this process is not a member of the given process group")
    return rank, dist.get_world_size(group)


def all_reduce_sum(tensor: Tensor, group: ProcessGroup = None) -> Tensor:
    """``sum_r tensor_r`` over the ranks of ``group``, as a new tensor (the input is not
    modified); one ``all_reduce``.

    Raises:
        TypeError: for a ``tensor`` that is not a tensor, or a bad ``group``.
        ValueError: for a group that is not usable (:func:`check_group`).
    """
    check_instance(tensor, "tensor", Tensor)
    check_group(group)
    out = tensor.detach().clone(memory_format=torch.contiguous_format)
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def shard_sizes(n_local: int, group: ProcessGroup = None, *, device: Any = "cpu") -> list[int]:
    """Every rank's number of examples ``[n_0, n_1, ...]`` (one ``all_gather``).

    ``device``: where the count travels (a CUDA device for NCCL).

    Raises:
        TypeError: for an ``n_local`` that is not an int, a ``device`` that is not a str,
            ``torch.device`` or int, or a bad ``group``.
        ValueError: for a negative ``n_local`` or an unknown ``device`` (on this rank, before
            any reduction); on every rank when any rank's shard is empty (naming the ranks); or
            for a group that is not usable (:func:`check_group`).
    """
    check_int(n_local, "n_local", minimum=0)
    device = _check_device(device)
    _, world = check_group(group)
    mine = torch.tensor([n_local], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(counts, mine, group=group)
    sizes = [int(c.item()) for c in counts]
    empty = [r for r, n in enumerate(sizes) if n == 0]
    if empty:
        raise ValueError(
            f"`n_local`: every rank must hold at least one example, got shard sizes {sizes} "
            f"(0 on ranks {empty}: an empty shard, or a rank that failed before this reduction "
            f"and raised its own error)"
        )
    return sizes


def shard_weight(
    n_local: int, reduction: Reduction, group: ProcessGroup = None, *, device: Any = "cpu"
) -> tuple[float, int]:
    """``(w_r, N)``: this rank's weight in ``L = sum_r w_r L_r`` and the total number of
    examples; ``w_r = n_r / N`` for ``reduction="mean"``, 1 for ``"sum"``.

    Raises:
        ValueError: for an unknown reduction, or as :func:`shard_sizes`.
        TypeError: as :func:`shard_sizes`.
    """
    check_choice(reduction, "reduction", Reduction)
    total = sum(shard_sizes(n_local, group, device=device))
    return (n_local / total if reduction == "mean" else 1.0), total


def check_replicated(values: Tensor, what: str, group: ProcessGroup = None) -> None:
    """Raise on every rank unless ``values`` (a small 1-D float tensor) is equal on all ranks.

    One ``all_reduce`` (MAX of ``[values, -values]``): the maximum and the minimum over ranks
    must agree exactly, or to a relative 1e-6 for values that differ only by rounding.

    Raises:
        ValueError: naming ``what``; for a group that is not usable (:func:`check_group`).
        TypeError: for ``values`` that are not a real (not complex) tensor, a ``what`` that is
            not a str, or a bad ``group``.
    """
    check_instance(values, "values", Tensor)
    if values.is_complex():
        raise TypeError(f"`values` must be a real tensor, got dtype {values.dtype}")
    check_instance(what, "what", str)
    check_group(group)
    v = values.detach().reshape(-1).to(torch.float64)
    both = torch.cat([v, -v])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    high, low = both[: v.numel()], -both[v.numel() :]
    scale = torch.maximum(high.abs(), low.abs()).clamp_min(1e-300)
    if bool(((high - low) / scale > 1e-6).any()):
        raise ValueError(f"{what} must be the same on every rank, got different values")


def _check_device(device: object, name: str = "device") -> torch.device:
    """``device`` (a str, ``torch.device`` or CUDA index) as a ``torch.device``."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(f"`{name}` must be a str, torch.device or int, got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"`{name}` must name a device, e.g. 'cpu' or 'cuda:0', got {device!r}"
        ) from err


def _fingerprint(params: Params) -> Tensor:
    theta = flatten({k: v.detach() for k, v in params.items()}).to(torch.float64)
    return torch.stack([theta.sum(), theta.pow(2).sum(), theta.new_tensor(float(theta.numel()))])


class DistributedOperator(CurvatureOperator):
    """``A = sum_r w_r A_r``: one rank's operator on its shard, combined over the ranks.

    ``A @ V`` computes ``w_r A_r V`` on this rank and all-reduces (sums) it, so every rank gets
    the product of the whole data's curvature; with ``reduction="mean"``, ``w_r = n_r / N``
    (the mean loss over N examples is ``sum_r (n_r / N) L_r``), with ``"sum"``, ``w_r = 1``.
    Wrap a :class:`~symdisc.curvature.HessianOperator`, a
    :class:`~symdisc.curvature.GGNOperator` (built with the same ``reduction`` on this rank's
    shard) or a dense (P, P) tensor. Every rank must call ``@`` with the same vectors in the
    same order: estimators need the same seed or generator on every rank.

    Reductions: at construction one ``all_gather`` of the shard sizes and one ``all_reduce`` of
    a fingerprint of ``params`` (they must be the same on every rank), plus one ``all_reduce``
    of the weighted local loss when the local operator has a ``loss``; per product one
    ``all_reduce`` of the (P, k) block, which also carries a fingerprint of the vectors
    (``check_probes``) so that different vectors on different ranks raise instead of mixing.

    Args:
        local: this rank's operator (square, with ``@`` on (P,) and (P, k)).
        n_local: n_r, this rank's number of examples (>= 1 on every rank).
        reduction: ``"mean"`` or ``"sum"``: how ``local``'s loss reduces its examples.
        params: the parameters the local operator was built at, checked to be the same on every
            rank (None: those of a Hessian or GGN operator, nothing for a dense matrix).
        group: the process group (None: the default group).
        check_probes: check that every product's vectors are the same on every rank.

    Attributes:
        weight: w_r; ``n_total``: N; ``world_size``, ``rank``.
        loss: ``sum_r w_r loss_r`` (0-d) when ``local`` has a ``loss``, else None.

    Raises:
        TypeError: for a ``local`` that is not a square floating operator, a non-int
            ``n_local``, a non-bool ``check_probes``, ``params`` that are not a dict of
            tensors, or a bad ``group``.
        ValueError: for an unknown reduction, a negative ``n_local``, empty ``params``, an
            empty shard on any rank, an uninitialised process group, parameters that differ
            between ranks, and (per product) vectors that differ between ranks.

    Example:
        >>> H = DistributedOperator(HessianOperator(L, params, x_r, y_r), n_local=len(x_r))
        >>> top = lanczos(H, k=5, generator=0)  # the same on every rank
    """

    def __init__(
        self,
        local: SymmetricOperator,
        *,
        n_local: int,
        reduction: Reduction = "mean",
        params: Params | None = None,
        group: ProcessGroup = None,
        check_probes: bool = True,
    ) -> None:
        dim = check_square(local, "local")
        check_bool(check_probes, "check_probes")
        check_int(n_local, "n_local", minimum=0)  # 0 travels: every rank raises (shard_sizes)
        check_choice(reduction, "reduction", Reduction)
        if params is not None:
            params = check_params(params)
        self.rank, self.world_size = check_group(group)
        self.local, self.group, self.check_probes = local, group, check_probes
        self.shape = (dim, dim)
        self.dtype, self.device = local.dtype, local.device
        self.weight, self.n_total = shard_weight(n_local, reduction, group, device=self.device)
        if params is None and isinstance(local, ParameterOperator):
            params = local._params  # the Hessian's and GGN's point
        if params is not None:
            check_replicated(_fingerprint(check_params(params)), "`params`", group)
        loss = getattr(local, "loss", None)
        self.loss = (
            all_reduce_sum(self.weight * loss.detach(), group) if isinstance(loss, Tensor) else None
        )

    def _matmat(self, V: Tensor) -> Tensor:  # (k, P) -> (k, P)
        product = self.weight * (self.local @ V.T).T  # (k, P)
        if not self.check_probes:
            return all_reduce_sum(product, self.group)
        # a fingerprint f of V rides with the product: sum_r f_r and sum_r f_r^2 give the
        # spread of f over the ranks, 0 (up to rounding) when every rank has the same V
        ramp = torch.cos(torch.arange(V.numel(), device=V.device, dtype=V.dtype) * 0.7548776662)
        f = (V.reshape(-1) * (ramp + 1.5)).sum()
        packed = torch.cat([product.reshape(-1), torch.stack([f, f * f]).to(product.dtype)])
        packed = all_reduce_sum(packed, self.group)
        total, squares = packed[-2], packed[-1]
        mean = total / self.world_size
        spread = squares / self.world_size - mean * mean
        tol = 16 * self.world_size * torch.finfo(product.dtype).eps
        if float(spread) > tol * max(float(squares) / self.world_size, 1e-300):
            raise ValueError(
                "`V`: the vectors of a product must be the same on every rank, got different "
                "ones; give the estimator the same seed or torch.Generator state on every rank "
                "(a generator of None draws from each process's own global RNG)"
            )
        return packed[:-2].reshape(product.shape)


def _kfac_weights(
    n_local: int, reduction: Reduction, group: ProcessGroup, device: Any
) -> tuple[float, float]:
    """(weight of A_r, weight of G_r and the loss) on this rank."""
    share, _ = shard_weight(n_local, "mean", group, device=device)
    return share, (share if reduction == "mean" else 1.0)


def reduce_kfac(
    factors: dict[str, KronFactors],
    *,
    n_local: int,
    reduction: Reduction = "mean",
    loss: Tensor | None = None,
    group: ProcessGroup = None,
) -> tuple[dict[str, KronFactors], Tensor | None]:
    """The KFAC factors (and loss) of all the data from every rank's factors of its shard.

    :func:`~symdisc.curvature.kfac` returns ``A = (1/R) sum aa`` (a mean over the R rows of the
    layer inputs) and ``G = s sum gg`` (s the reduction's scale: 1/N, 1/(N C) or 1), and the loss
    ``s sum loss_n``. Over ranks with ``n_r`` examples each:

        A = sum_r (n_r / N) A_r,     G = sum_r w_r G_r,     loss = sum_r w_r loss_r,

    with ``w_r = n_r / N`` for ``"mean"`` and 1 for ``"sum"``. A's weights assume that every
    example contributes equally many rows to a layer (true for the ``nn.Linear`` and
    ``nn.Conv2d`` rules on inputs of one shape; a rule whose row count varies by example needs
    the raw sums). Bias blocks split with ``bias="separate"`` (A = [[1]]) stay exact.

    Reductions: one ``all_gather`` of the shard sizes and one ``all_reduce`` of all factors (and
    the loss) packed into one buffer. Every rank must pass the same block keys and shapes.

    Args:
        factors: this rank's ``{block: KronFactors}`` (from :func:`~symdisc.curvature.kfac` on
            its shard with ``reduction``).
        n_local: n_r, this rank's number of examples.
        reduction: the ``reduction`` the factors were computed with.
        loss: this rank's 0-d loss (from :func:`~symdisc.curvature.kfac_with_loss`), or None.
        group: the process group (None: the default group).

    Returns:
        ``(factors, loss)``, the same on every rank (loss None when none was given); detached.

    Raises:
        TypeError: for factors that are not a non-empty dict of :class:`KronFactors`, a
            ``loss`` that is not a tensor, or as :func:`shard_sizes`.
        ValueError: for an unknown reduction, a ``loss`` that is not a 0-d floating tensor, a
            negative ``n_local``, an empty shard, or blocks whose keys or shapes differ between
            ranks.
    """
    if not isinstance(factors, dict) or not factors:
        raise TypeError(
            f"`factors` must be a non-empty dict of KronFactors, got {type(factors).__name__}"
        )
    wrong = [k for k, f in factors.items() if not isinstance(f, KronFactors)]
    if wrong:
        raise TypeError(f"`factors` must hold KronFactors, got other values at {wrong[:3]}")
    check_choice(reduction, "reduction", Reduction)
    if loss is not None:
        check_instance(loss, "loss", Tensor)
        if loss.ndim != 0 or not loss.is_floating_point():
            raise ValueError(
                f"`loss` must be a 0-d floating tensor (from kfac_with_loss) or None, got shape "
                f"{tuple(loss.shape)} and dtype {loss.dtype}"
            )
    first = next(iter(factors.values())).A
    w_a, w_g = _kfac_weights(n_local, reduction, group, first.device)
    layout = [(k, tuple(f.A.shape), tuple(f.G.shape)) for k, f in factors.items()]
    code = float(zlib.crc32(repr(layout).encode()))
    check_replicated(
        torch.tensor([code, float(len(layout))], dtype=torch.float64, device=first.device),
        "`factors` (block keys and shapes)",
        group,
    )
    parts: list[Tensor] = []
    for f in factors.values():
        parts += [w_a * f.A.detach().reshape(-1), w_g * f.G.detach().reshape(-1)]
    if loss is not None:
        parts.append((w_g * loss.detach()).reshape(1).to(first.dtype))
    packed = all_reduce_sum(torch.cat(parts), group)
    out: dict[str, KronFactors] = {}
    start = 0
    for key, f in factors.items():
        a_numel, g_numel = f.A.numel(), f.G.numel()
        A = packed[start : start + a_numel].reshape(f.A.shape)
        G = packed[start + a_numel : start + a_numel + g_numel].reshape(f.G.shape)
        start += a_numel + g_numel
        out[key] = KronFactors(A, G, f.params, f.bias)
    return out, (packed[-1].to(loss.dtype) if loss is not None else None)


class _Counted:
    """An iterable of batches that counts the examples it yields (``n``)."""

    def __init__(self, data: Iterable[tuple[Tensor, Tensor]]) -> None:
        self.data, self.n = data, 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.data:
            if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
                self.n += int(batch[0].shape[0]) if batch[0].ndim else 0
            yield batch


def distributed_kfac_with_loss(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    group: ProcessGroup = None,
    **options: Any,
) -> tuple[dict[str, KronFactors], Tensor]:
    """:func:`~symdisc.curvature.kfac_with_loss` on this rank's ``data``, combined over the ranks
    (:func:`reduce_kfac`): the factors and the loss of all ranks' data together, on every rank.

    ``options`` as :func:`~symdisc.curvature.kfac` (``loss`` required, ``reduction`` default
    ``"mean"``). The factors come back detached (``create_graph=True`` is refused: the
    all-reduce does not carry the graph). With ``fisher="mc"`` every rank draws its own targets
    (pass a different generator per rank for independent draws): an unbiased estimate of the
    same G, not the single process's draws.

    Reductions: one ``all_gather`` of the shard sizes, one ``all_reduce`` of a layout
    fingerprint, one ``all_reduce`` of the packed factors and the loss.

    Raises:
        TypeError: for a ``model`` that is not an ``nn.Module``, ``data`` that is not an
            iterable of batches (a single batch included), a bad ``group``, or as
            :func:`~symdisc.curvature.kfac`.
        ValueError: for ``create_graph=True``, an unknown ``reduction``, an empty shard on any
            rank, or as :func:`~symdisc.curvature.kfac` and :func:`reduce_kfac`.
    """
    check_instance(model, "model", nn.Module)
    check_batches(data, "data")
    check_choice(options.get("reduction", "mean"), "reduction", Reduction)
    check_group(group)
    if options.get("create_graph", False):
        raise ValueError(
            "`create_graph` must be False for distributed KFAC: the all-reduce of the factors "
            "does not carry their graph"
        )
    counted = _Counted(check_batches(data, "data"))
    try:
        factors, loss = kfac_with_loss(model, counted, **options)
    except Exception:
        # the other ranks wait in the first collective: tell them, as a shard of size 0, that
        # this rank failed (an empty shard among others), then raise this rank's own error
        try:
            shard_sizes(0, group, device=_model_device(model))
        except ValueError:
            pass
        raise
    reduction = options.get("reduction", "mean")
    out, total = reduce_kfac(
        factors, n_local=counted.n, reduction=reduction, loss=loss, group=group
    )
    assert total is not None
    return out, total


def distributed_kfac(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    group: ProcessGroup = None,
    **options: Any,
) -> dict[str, KronFactors]:
    """The factors of :func:`distributed_kfac_with_loss`."""
    return distributed_kfac_with_loss(model, data, group=group, **options)[0]


def _model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def distributed_sharpness(
    loss_fn: Callable[..., Tensor],
    params: Params,
    *args: object,
    n_local: int,
    reduction: Reduction = "mean",
    radii: Any,
    directions: int | Tensor = 32,
    generator: SeedLike = None,
    group: ProcessGroup = None,
    **options: Any,
) -> SharpnessResult:
    """:func:`~symdisc.curvature.sharpness` of the loss over all ranks' data.

    The loss of all the data is ``L = sum_r w_r L_r`` (``w_r = n_r / N`` for ``"mean"``, 1 for
    ``"sum"``), and so are its changes ``dL(r, d)``: every rank evaluates its shard's loss at the
    same perturbations, ``loss`` and ``delta`` are all-reduced with these weights, and the means
    over directions (absolute and relative, with their standard errors) are taken afterwards.
    Directions drawn from ``directions`` (an int) use ``generator``, which must give the same
    draws on every rank (a seed); they are checked to be the same on every rank.

    Args:
        loss_fn, params, *args: as :func:`~symdisc.curvature.sharpness`, ``*args`` being this
            rank's shard.
        n_local: n_r, this rank's number of examples.
        reduction: how ``loss_fn`` reduces its examples.
        radii, directions, generator, **options: as :func:`~symdisc.curvature.sharpness`
            (``radius``, ``chunk_size``).
        group: the process group (None: the default group).

    Reductions: one ``all_gather`` of the shard sizes, one ``all_reduce`` of the fingerprints of
    the parameters and directions, one ``all_reduce`` of the loss and its changes.

    Raises:
        TypeError: as :func:`~symdisc.curvature.sharpness` (``loss_fn``, ``params``, ``radii``,
            ``directions``, ``generator``, ``chunk_size``), for a non-int ``n_local``, an option
            other than ``radius`` and ``chunk_size``, or a bad ``group``.
        ValueError: as :func:`~symdisc.curvature.sharpness`, for a negative ``n_local``, an
            unknown ``reduction``, an empty shard, or parameters or directions that differ
            between ranks.
    """
    # every argument that can be checked alone is checked before the first reduction
    unknown = sorted(set(options) - {"radius", "chunk_size"})
    if unknown:
        raise TypeError(
            f"`{unknown[0]}` is not an option of distributed_sharpness (radius, chunk_size), "
            f"got {unknown}"
        )
    params, _ = check_sharpness_arguments(
        loss_fn,
        params,
        radii,
        directions,
        options.get("radius", "absolute"),
        options.get("chunk_size"),
    )
    check_int(n_local, "n_local", minimum=0)  # 0 travels: every rank raises (shard_sizes)
    check_choice(reduction, "reduction", Reduction)
    if isinstance(directions, int):  # drawn here, after the first reduction: checked now
        check_int(directions, "directions", minimum=1)
        as_generator(generator)  # a seed or a torch.Generator (it draws the directions)
    first = next(iter(params.values()))
    weight, _ = shard_weight(n_local, reduction, group, device=first.device)
    if isinstance(directions, int):
        directions = random_directions(params, directions, generator=generator)
    if isinstance(directions, Tensor):
        d = directions.detach().to(torch.float64)
        marks = torch.stack([d.sum(), (d * d).sum(), d.abs().sum()])
        check_replicated(
            torch.cat([_fingerprint(params), marks]), "`params` and `directions`", group
        )
    local = sharpness(
        loss_fn, params, *args, radii=radii, directions=directions, generator=generator, **options
    )
    packed = torch.cat([local.loss.reshape(1).to(torch.float64), local.delta.reshape(-1)])
    packed = all_reduce_sum(weight * packed, group)
    base = packed[0].to(local.loss.dtype)
    change = packed[1:].reshape(local.delta.shape)
    return SharpnessResult.of_changes(local.radii, local.step, base, change)

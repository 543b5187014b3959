"""The Kronecker-factored (KFAC) Laplace approximation (paper 000, section 4 and appendix C;
paper 001, sections 4.2-4.3, eqs. 19-20).

Per layer the GGN block is ``H_l ~= kron(G_l, A_l)`` (:func:`symdisc.curvature.kfac`, or a
variant of its accumulation core such as the augmented KFAC of paper 001); with the eigenvalues
a_i of A_l and g_j of G_l and one precision delta_l for the block,

    log det(kron(G, A) / T + delta I) = sum_{i,j} log(a_i g_j / T + delta).

With ``per_tensor=True`` the blocks are taken with ``bias="separate"``: weight ``A[:-1, :-1]``
and bias ``1``, each with its own precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ella.laplace.base import Batch, Laplace
from ella.laplace.priors import ROOT_GROUP, Likelihood, PriorPrecision
from symdisc.curvature import (
    KFACVariant,
    KronFactors,
    ModelFn,
    Params,
    StandardKFAC,
    kfac_batch,
    kfac_layers,
    kfac_rule_for,
    kfac_with_loss,
)
from symdisc.runtime import check_optional_int

__all__ = ["KronLaplace"]


class KronLaplace(Laplace):
    """The Laplace approximation with KFAC blocks (``Laplace(..., "kron")``).

    Args:
        model, likelihood, sigma, temperature: as for :class:`~ella.laplace.Laplace`.
        per_tensor: one prior group per parameter tensor; the KFAC blocks are then taken with
            ``bias="separate"`` (:func:`symdisc.curvature.kfac`): a layer's weight
            ``A[:-1, :-1] (x) G`` and bias ``1 (x) G`` are blocks of their own, each with its
            precision, and the weight-bias coupling ``A[:-1, -1]`` is dropped.
        kron_factors: the function that computes the Kronecker factors, called like
            :func:`symdisc.curvature.kfac` with ``loss``, ``reduction``, ``params``,
            ``create_graph`` and ``bias``. Default (None): :func:`symdisc.curvature.kfac`, whose
            forward passes give the likelihood too. A :class:`symdisc.curvature.KFACVariant`
            (e.g. :class:`ella.invariance.AugmentedKFAC`, paper 001, section 4.2) is such a
            function, and the only kind :meth:`curvature_pairing` can take one batch of.
        chunk_size: samples per KFAC forward-backward pass, passed on as ``chunk_size`` of
            :func:`symdisc.curvature.kfac` (to ``kron_factors`` only when set). Default None:
            kfac's automatic chunks, at most 2^24 backpropagated output-gradient entries and
            1024 samples per pass (for a ResNet on 512 CIFAR-shaped images, chunks of 64 took
            the fit's peak from 820 to 135 MB, and its time down by a quarter); the same
            factors up to rounding.

    Attributes (after :meth:`fit`, besides those of :class:`~ella.laplace.Laplace`):
        curvature: ``{block: KronFactors}`` of the untempered negative log-likelihood (G scaled
            by the likelihood's output Hessian, see :attr:`output_hessian_scale`).
        block_groups: ``{block: group}``, the one prior group of every block.
        eigendecompositions: ``{block: (a, Q_A, g, Q_G)}`` from ``torch.linalg.eigh`` of A
            (ascending eigenvalues a, eigenvectors Q_A) and of G, computed in float64 on the
            symmetrised factor and cast to the model's dtype.

    Raises:
        TypeError: as :class:`~ella.laplace.Laplace`, or a ``kron_factors`` that is not
            callable.
        ValueError: as :class:`~ella.laplace.Laplace`, or a layer with parameters but no KFAC
            rule (named in the message); in :meth:`fit`, prior groups that split a Kronecker
            block or parameters outside every block.
    """

    structure = "kron"
    factory_options = ("kron_factors",)
    _state_means = frozenset({"A"})  # A is a mean over the rows of a layer's inputs

    def __init__(
        self,
        model: nn.Module,
        likelihood: Likelihood,
        *,
        kron_factors: Callable[..., dict[str, KronFactors]] | None = None,
        chunk_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, likelihood, **options)
        if kron_factors is not None and not callable(kron_factors):
            raise TypeError(f"`kron_factors` must be callable, got {type(kron_factors).__name__}")
        self.kron_factors = kron_factors
        self.chunk_size = check_optional_int(chunk_size, "chunk_size", minimum=1)
        ruleless = _ruleless_layers(model, set(self.covered))
        if ruleless:
            raise ValueError(
                f"structure='kron' needs a KFAC rule for every layer with parameters; "
                f"{ruleless} have none (register one with "
                f"symdisc.curvature.register_kfac_rule, or use structure='full'/'diag')"
            )

    # -- fitting ---------------------------------------------------------------------------

    def _fit_curvature(
        self, batches: Iterator[Batch], model_fn: ModelFn, params: Params, *, keep_graph: bool
    ) -> Tensor:
        # with the default factors the KFAC forward passes give the likelihood too (one forward
        # instead of two); with other factors each batch's likelihood is taken as the factor
        # function reads the batch, so that the data are still read once
        fused = self.kron_factors is None
        grad_mode = torch.is_grad_enabled()
        totals: dict[str, Any] = {
            "log_lik": torch.zeros((), dtype=self.dtype, device=self.device),
            "entries": 0,  # regression targets: (N, C)
        }

        def tap() -> Iterator[Batch]:
            for inputs, targets in batches:
                if not fused:
                    with torch.set_grad_enabled(grad_mode):
                        part = self._batch_log_lik(model_fn, params, inputs, targets)[1]
                    totals["log_lik"] = totals["log_lik"] + part
                totals["entries"] += targets.numel()
                yield inputs, targets

        # per-tensor groups give weight and bias their own precision, so their Kronecker
        # blocks must be separate (the folded block's log-det needs one shared delta)
        options = {
            "loss": self.loss,
            "reduction": "sum",
            "params": params,
            "create_graph": keep_graph,
            "bias": "separate" if self.per_tensor else "folded",
        }
        if self.chunk_size is not None:
            options["chunk_size"] = self.chunk_size
        if self.subset_modules is not None:  # only the layers of the covered modules
            options["modules"] = [
                name
                for name in kfac_layers(self.model)
                if any(
                    m == "" or name == m or name.startswith(m + ".") for m in self.subset_modules
                )
            ]
        if fused:
            factors, value = kfac_with_loss(self.model, tap(), **options)
            log_lik = self._log_lik_of_loss(value, totals["entries"])
        else:
            factors = self.kron_factors(self.model, tap(), **options)
            log_lik = totals["log_lik"]
        self._factors = factors
        return log_lik

    def _prepare_curvature(self) -> None:
        """G scaled by the output Hessian, the block groups, the eigendecompositions and, per
        group (by position), the ``a_i g_j / T`` of all its blocks (eigenvalues clamped at 0),
        flattened and concatenated."""
        scale = self.output_hessian_scale
        # the blocks split off one layer share their factor tensors (the G of weight and
        # bias): scale and decompose each distinct tensor once
        scaled: dict[int, Tensor] = {}
        self.curvature: dict[str, KronFactors] = {}
        for k, f in self._factors.items():
            if id(f.G) not in scaled:
                scaled[id(f.G)] = f.G if scale == 1.0 else scale * f.G
            G = scaled[id(f.G)]
            self.curvature[k] = KronFactors(f.A, G, f.params, f.bias)
        del self._factors
        self._derive()

    def _derive(self) -> None:
        """From :attr:`curvature` (G scaled): the block groups, the eigenvalues of every factor,
        the per-group eigenvalue products and a check that every block's size is its parameters'
        (their positions in the flattened parameters on first use, :attr:`_block_index`).

        Only the eigenvalues are computed here (``eigvalsh``, 2-5x faster than ``eigh`` on the
        factors' sizes, and all the log-determinant needs); the eigenvectors, for the predictive,
        posterior draws and the preconditioner, on the first read of
        :attr:`eigendecompositions`.
        """
        self.block_groups = self._check_blocks(self.curvature)
        values: dict[int, Tensor] = {}
        self._eigenvalues: dict[str, tuple[Tensor, Tensor]] = {}
        for k, f in self.curvature.items():
            for factor in (f.A, f.G):
                if id(factor) not in values:
                    values[id(factor)] = _symmetric_eigh(factor, vectors=False)[0]
            self._eigenvalues[k] = (values[id(f.A)], values[id(f.G)])
        self._eigendecompositions: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] | None = None
        position = {g: i for i, g in enumerate(self.groups)}
        per_group: dict[int, list[Tensor]] = {}
        for key, (a, g) in self._eigenvalues.items():
            block = torch.outer(g.clamp_min(0), a.clamp_min(0)).reshape(-1) / self.temperature
            per_group.setdefault(position[self.block_groups[key]], []).append(block)
        self._kron_products = [
            (i, blocks[0] if len(blocks) == 1 else torch.cat(blocks))
            for i, blocks in per_group.items()
        ]
        for k, f in self.curvature.items():
            d_g, d_a = f.G.shape[0], f.A.shape[0]
            size = sum(self.numels[p] for p in f.params)
            if size != d_g * d_a:
                raise ValueError(
                    f"the Kronecker block {k!r} has {d_g} x {d_a} entries but its parameters "
                    f"{list(f.params)} have {size}"
                )
        self._block_index_cache: dict[str, tuple[Tensor, Tensor]] | None = None

    @property
    def _block_index(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per block: the positions (D,) of its parameters in the flattened covered
        parameters, in KronFactors.to_dense order, and the permutation from that order to the
        row-major order of the augmented weight [W | b] (d_G, d_A), in which the block is
        kron(G, A); built on first use after a fit (the predictive and draws need it, the
        marginal likelihood does not)."""
        if self._block_index_cache is not None:
            return self._block_index_cache
        offsets, start = {}, 0
        for name in self.names:
            offsets[name] = start
            start += self.numels[name]
        out: dict[str, tuple[Tensor, Tensor]] = {}
        for k, f in self.curvature.items():
            index = torch.cat(
                [
                    torch.arange(offsets[p], offsets[p] + self.numels[p], device=self.device)
                    for p in f.params
                ]
            )
            d_g, d_a = f.G.shape[0], f.A.shape[0]
            grid = torch.arange(d_g * d_a, device=self.device).reshape(d_g, d_a)
            order = torch.cat([grid[:, :-1].reshape(-1), grid[:, -1]]) if f.bias else grid.flatten()
            out[k] = (index, order)
        self._block_index_cache = out
        return out

    @property
    def eigendecompositions(self) -> dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``{block: (a, Q_A, g, Q_G)}``: ``torch.linalg.eigh`` of every block's A and G (see the
        class), computed on the first read after a fit and kept until the next one."""
        self._require_fit()
        if self._eigendecompositions is None:
            eigh: dict[int, tuple[Tensor, Tensor]] = {}
            out = {}
            for k, f in self.curvature.items():
                for factor in (f.A, f.G):
                    if id(factor) not in eigh:
                        eigh[id(factor)] = _symmetric_eigh(factor)
                out[k] = (*eigh[id(f.A)], *eigh[id(f.G)])
            self._eigendecompositions = out
        return self._eigendecompositions

    def _block_precision(self, key: str, vector: Tensor) -> Tensor:
        """(d_G, d_A) ``g_i a_j / T + delta`` of the block (eigenvalues clamped at 0)."""
        a, g = self._eigenvalues[key]
        position = list(self.groups).index(self.block_groups[key])
        products = torch.outer(g.detach().clamp_min(0), a.detach().clamp_min(0))
        return products / self.temperature + vector[position]

    def _functional_covariance(self, jac: Tensor, vector: Tensor) -> Tensor:
        """Per block, with ``V`` the block's Jacobian as (N, C, d_G, d_A) in the row-major order
        of ``[W | b]`` and ``W = Q_G^T V Q_A``: ``sum_ij W_ci W_c'i / (g_i a_j / T + delta)``,
        since ``(kron(G, A) / T + delta I)^-1 = (Q_G (x) Q_A) diag(1 / (g (x) a / T + delta))
        (Q_G (x) Q_A)^T``."""
        n, c, _ = jac.shape
        out = jac.new_zeros(n, c, c)
        for key, (index, order) in self._block_index.items():
            _, qa, _, qg = (t.detach() for t in self.eigendecompositions[key])
            block = jac.new_empty(n, c, index.numel())
            block[..., order] = jac[..., index]
            v = block.reshape(n, c, qg.shape[0], qa.shape[0])
            w = qg.T @ v @ qa
            out = out + torch.einsum("ncij,ndij->ncd", w / self._block_precision(key, vector), w)
        return out

    def _sample_offsets(self, n: int, vector: Tensor, generator: torch.Generator | None) -> Tensor:
        """Per block the symmetric root of the block's covariance applied to E (d_G, d_A)
        standard normal, ``Q_G ((Q_G^T E Q_A) / sqrt(g_i a_j / T + delta)) Q_A^T``, put back in
        the parameters' order."""
        out = torch.zeros(n, self.n_params, dtype=self.dtype, device=self.device)
        for key, (index, order) in self._block_index.items():
            _, qa, _, qg = (t.detach() for t in self.eigendecompositions[key])
            scale = self._block_precision(key, vector).rsqrt()
            eps = self._normal((n, qg.shape[0], qa.shape[0]), generator)
            # the symmetric root: independent of the eigenvectors' signs and of the basis
            # chosen within repeated eigenvalues (the same draws on every device)
            draw = (qg @ ((qg.T @ eps @ qa) * scale) @ qa.T).reshape(n, -1)
            out[:, index] = draw[:, order]
        return out

    def _curvature_state(self) -> Any:
        return {
            k: {
                "A": f.A.detach().clone(),
                "G": f.G.detach().clone(),
                "params": list(f.params),
                "bias": f.bias,
            }
            for k, f in self.curvature.items()
        }

    def _load_curvature(self, state: Any) -> None:
        like = {"dtype": self.dtype, "device": self.device}
        self.curvature = {
            k: KronFactors(f["A"].to(**like), f["G"].to(**like), tuple(f["params"]), f["bias"])
            for k, f in state.items()
        }
        self._derive()

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

    # -- evaluation ------------------------------------------------------------------------

    def _log_det(self, vector: Tensor) -> Tensor:
        """``sum_l sum_{i,j} log(a_i g_j / T + delta_l)`` with the eigenvalues (clamped at 0
        against round-off) of every block's A and G."""
        # one reduction per group (not a gather over all entries: the gather's backward adds
        # the entries' 1 / (a_i g_j / T + delta) one by one, losing float32 accuracy), summed
        # in float64: a float32 sum of the ResNet benchmark's 77,706 logs was 7.8e-3 nats off
        # (2.2e-4 in float64, whatever the products' dtype)
        wide = torch.float64
        return (
            torch.stack(
                [
                    torch.log(products.to(wide) + vector[i].to(wide)).sum()
                    for i, products in self._kron_products
                ]
            )
            .sum()
            .to(vector.dtype)
        )

    def group_eigenvalues(self) -> dict[str, Tensor]:
        """The products ``a_i g_j / T`` of the eigenvalues of every Kronecker block of the
        group (paper 000, appendix D.2)."""
        self._require_fit()
        groups = list(self.groups)
        products = {groups[i]: p for i, p in self._kron_products}
        return {g: products[g] for g in groups}

    def preconditioner(self, prior_precision: PriorPrecision) -> Any:
        """Per block ``(W_A, W_G)``: ``W_A = Q_A diag(v) Q_A^T`` with
        ``v_i = sum_j (g_j/T) / (a_i g_j/T + delta)`` (and W_G likewise), the derivative of
        ``sum_ij log(a_i g_j/T + delta)`` through the eigenvalues ``a_i = q_i^T A q_i``."""
        deltas = self.precisions(prior_precision)
        T = self.temperature
        out = {}
        for key, (a, qa, g, qg) in self.eigendecompositions.items():
            a, qa, g, qg = a.detach(), qa.detach(), g.detach(), qg.detach()
            delta = deltas[self.block_groups[key]].detach()
            ac, gc = a.clamp_min(0), g.clamp_min(0)
            denom = torch.outer(ac, gc) / T + delta  # (d_A, d_G)
            v = (gc[None, :] / T / denom).sum(1) * (a >= 0)
            w = (ac[:, None] / T / denom).sum(0) * (g >= 0)
            out[key] = ((qa * v) @ qa.T, (qg * w) @ qg.T)
        return out

    def curvature_pairing(
        self, weights: Any, inputs: Tensor, *, n_total: int
    ) -> tuple[Tensor, Tensor]:
        """``sum_blocks <W_A, aa> / (R N / B) + scale <W_G, gg>`` with one batch's factor sums
        (:func:`symdisc.curvature.kfac_batch` of the fit's KFAC variant): A is a mean over all
        N L rows, so the batch's ``aa`` of R = B L rows enters divided by N L."""
        self._require_fit()
        variant = StandardKFAC() if self.kron_factors is None else self.kron_factors
        if not isinstance(variant, KFACVariant):
            raise TypeError(
                f"the batch pairing needs `kron_factors` to be a KFACVariant, got "
                f"{type(variant).__name__}"
            )
        outputs, parts = kfac_batch(self.model, inputs, variant, loss=self.loss, create_graph=True)
        scale_h = self.output_hessian_scale
        term: Tensor | float = 0.0
        for key, (w_a, w_g) in weights.items():
            part = parts[key]
            rows_total = part.rows / inputs.shape[0] * n_total  # A is normalised over N L rows
            term = term + (w_a * part.aa).sum() / rows_total + scale_h * (w_g * part.gg).sum()
        assert isinstance(term, Tensor)  # the model has at least one block
        return outputs, term


def _ruleless_layers(model: nn.Module, covered: set[str]) -> list[str]:
    """Modules that own covered parameters directly but have no KFAC rule."""
    out = []
    for name, module in model.named_modules():
        dot = f"{name}." if name else ""
        own = [p for p, _ in module.named_parameters(recurse=False) if dot + p in covered]
        if own and kfac_rule_for(module) is None:
            out.append(f"{name or ROOT_GROUP!s} ({type(module).__name__})")
    return out


def _diagonal_blocks(matrix: Tensor) -> list[int]:
    """Sizes of the contiguous diagonal blocks of ``matrix`` (d, d): the finest split such that
    every entry outside the blocks is exactly zero (``[d]`` for a matrix without zero blocks).

    The block ends are the i with ``max_{r <= i} last(r) = i`` and ``max_{c <= i} last'(c) =
    i``, ``last(r)`` the column of the last nonzero entry of row r (r itself if none) and
    ``last'`` the same for columns.
    """
    d = matrix.shape[-1]
    if d == 1 or bool(matrix[0, -1] != 0):  # row 0 reaches the last column: one block
        return [d]
    nonzero = matrix.detach() != 0
    index = torch.arange(d, device=matrix.device)
    last_row = torch.where(nonzero, index, -1).amax(dim=1).clamp_min(index)
    last_col = torch.where(nonzero, index[:, None], -1).amax(dim=0).clamp_min(index)
    reach = torch.maximum(last_row, last_col).cummax(dim=0).values
    ends = (index[reach == index] + 1).tolist()
    return [b - a for a, b in zip([0, *ends[:-1]], ends)]


def _eigh(sym: Tensor, vectors: bool = True) -> tuple[Tensor, Tensor | None]:
    """``torch.linalg.eigh`` of a symmetric float64 matrix (d, d) (``eigvalsh``, and None for
    the eigenvectors, when not ``vectors``), retried once on ``sym + j I`` (eigenvalues shifted
    back by j, ``j = 1e-12`` times the largest diagonal entry) when LAPACK fails to converge:
    seen on a rank-deficient 736 x 736 KFAC factor (rank 150 of a network whose augmentation had
    diverged) with one thread, and cured by any j >= 1e-14; the shift moves no eigenvector and
    the eigenvalues by j at most.

    Raises:
        ValueError: if the shifted matrix fails too (or holds NaN or Inf), naming its size.
    """

    def decompose(m: Tensor) -> tuple[Tensor, Tensor | None]:
        if vectors:
            return torch.linalg.eigh(m)
        return torch.linalg.eigvalsh(m), None

    try:
        return decompose(sym)
    except torch.linalg.LinAlgError:
        pass
    jitter = 1e-12 * float(sym.diagonal().abs().max().clamp_min(1e-300))
    eye = torch.eye(sym.shape[-1], dtype=sym.dtype, device=sym.device)
    try:
        values, vecs = decompose(sym + jitter * eye)
    except torch.linalg.LinAlgError as err:
        finite = bool(torch.isfinite(sym).all())
        raise ValueError(
            f"the eigendecomposition of a {tuple(sym.shape)} KFAC factor failed to converge, "
            f"also shifted by {jitter:.3g} I (entries {'finite' if finite else 'not finite'}): "
            f"the network's activations or output gradients are degenerate"
        ) from err
    return values - jitter, vecs


def _symmetric_eigh(factor: Tensor, *, vectors: bool = True) -> tuple[Tensor, Tensor | None]:
    """``torch.linalg.eigh`` of ``(M + M^T) / 2`` in float64, cast back to ``M``'s dtype.

    M: (d, d). Returns ascending eigenvalues (d,) and eigenvectors (d, d) as columns (None
    without ``vectors``: then only the eigenvalues are computed, by ``eigvalsh``). float32
    ``eigh`` of a KFAC factor sometimes fails to converge (seen in marglik training); float64
    does not, and the casts keep the result differentiable in M.

    A factor that is block diagonal (the expanded-input factors of F-FC and S-FC, ``e_c (x)
    x(c, :)``, are C blocks of H W) is decomposed block by block (:func:`_diagonal_blocks`):
    the same eigenpairs at a C^2-th of the cost (a 2048 x 2048 factor of 8 blocks took 3.3 s
    whole on one core).
    """
    if factor.shape[-1] == 1:  # a bias block's A = [[1]]: nothing to decompose
        return factor.reshape(1), torch.ones_like(factor) if vectors else None
    sym = (0.5 * (factor + factor.mT)).to(torch.float64)
    sizes = _diagonal_blocks(sym)
    if len(sizes) == 1:
        values, vecs = _eigh(sym, vectors)
    else:
        parts, start = [], 0
        for size in sizes:
            parts.append(_eigh(sym[start : start + size, start : start + size], vectors))
            start += size
        values, order = torch.cat([v for v, _ in parts]).sort()
        vecs = torch.block_diag(*[u for _, u in parts])[:, order] if vectors else None
    return values.to(factor.dtype), None if vecs is None else vecs.to(factor.dtype)

"""The data-parallel Laplace fit (``fit(data, group=...)``): 2 gloo ranks on CPU, unequal shards
of several batches, against one process over all the data, to 1e-10 in float64.

One spawn runs every structure and likelihood; the ranks write their relative differences and
the parent asserts them.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import run_ranks
from ella.laplace import Laplace

SHARDS = (7, 12)
TOL = 1e-10
STRUCTURES = (("kron", False), ("kron", True), ("full", False), ("diag", False))


def _case(likelihood: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(sum(SHARDS), 3, dtype=torch.float64)
    if likelihood == "classification":
        return model, x, torch.randint(0, 2, (x.shape[0],))
    return model, x, torch.randn(x.shape[0], 2, dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _checks(rank: int) -> dict:
    out: dict = {}
    world = dist.group.WORLD
    for likelihood in ("classification", "regression"):
        model, x, y = _case(likelihood)
        start = sum(SHARDS[:rank])
        xr, yr = x[start : start + SHARDS[rank]], y[start : start + SHARDS[rank]]
        shard = [(xr[:3], yr[:3]), (xr[3:], yr[3:])]  # several batches per rank
        for structure, per_tensor in STRUCTURES:
            opts = {"sigma": 0.7, "temperature": 1.3, "per_tensor": per_tensor}
            ref = Laplace(model, likelihood, structure, **opts).fit([(x, y)])
            got = Laplace(model, likelihood, structure, **opts).fit(shard, group=world)
            name = f"{likelihood}_{structure}{'_tensor' if per_tensor else ''}"
            out[f"{name}_loglik"] = _rel(got.log_likelihood, ref.log_likelihood)
            for delta in (0.5, 3.0):
                out[f"{name}_marglik_{delta}"] = _rel(
                    got.log_marginal_likelihood(delta), ref.log_marginal_likelihood(delta)
                )
            eig_got, eig_ref = got.group_eigenvalues(), ref.group_eigenvalues()
            out[f"{name}_eigenvalues"] = max(_rel(eig_got[g], eig_ref[g]) for g in eig_ref)
            out[f"{name}_variance"] = _rel(
                got.functional_variance(x[:4], 1.0), ref.functional_variance(x[:4], 1.0)
            )
    model, x, y = _case("classification")
    errors = {}
    xr = x[:5].clone().requires_grad_(rank == 1)
    try:
        Laplace(model, "classification", "kron").fit([(xr, y[:5])], group=world)
    except ValueError as err:
        errors["graph"] = str(err)
    moved = _case("classification")[0]
    with torch.no_grad():
        moved[0].weight.add_(rank)
    try:
        Laplace(moved, "classification", "full").fit([(x[:5], y[:5])], group=world)
    except ValueError as err:
        errors["params"] = str(err)
    out["errors"] = errors
    return out


def test_distributed_laplace_matches_one_process(tmp_path):
    for rank, result in enumerate(run_ranks(_checks, tmp_path)):
        errors = result.pop("errors")
        bad = {k: v for k, v in result.items() if not v <= TOL}
        assert not bad, f"rank {rank}: {bad}"
        assert len(result) == 2 * 4 * 5
        assert set(errors) == {"graph", "params"}, errors
        assert "`params`" not in errors["params"] and "parameters" in errors["params"]
    assert (
        "require a gradient" in json.loads((tmp_path / "rank1.json").read_text())["errors"]["graph"]
    )


def test_fit_with_a_group_that_is_not_a_process_group_is_named():
    """``group=None`` is the one-process fit; anything else must be a ProcessGroup (whose
    existence implies an initialised torch.distributed)."""
    model, x, y = _case("classification")
    la = Laplace(model, "classification", "full")
    with pytest.raises(TypeError, match="`group` must be a torch.distributed.ProcessGroup"):
        la.fit([(x, y)], group=object())
    assert la.fit([(x, y)], group=None).log_marginal_likelihood(1.0).isfinite()

"""Data-parallel curvature: 2 gloo ranks on CPU against one process over all the data.

One spawn runs every check (a spawn costs seconds): each rank computes the distributed result
on its shard (unequal shards, 5 and 8 examples) and the single-process reference on all the data,
and writes the relative differences; the parent asserts them to 1e-10 in float64. Error paths
that need a group run in the same spawn; the others run in the parent.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import run_ranks
from symdisc.curvature import (
    GGNOperator,
    HessianOperator,
    eigenvalues,
    functional,
    hutchinson,
    hutchpp,
    kfac,
    kfac_with_loss,
    lanczos,
    sharpness,
    slq_density,
    supervised_loss,
)
from symdisc.curvature.distributed import (
    DistributedOperator,
    check_group,
    distributed_kfac,
    distributed_kfac_with_loss,
    distributed_sharpness,
    reduce_kfac,
)

SHARDS = (5, 8)
TOL = 1e-10


def _data(n: int = sum(SHARDS)) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (n,))
    return model, x, y


def _conv_data(n: int = sum(SHARDS)) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)
    ).double()
    x = torch.randn(n, 1, 5, 5, dtype=torch.float64)
    return model, x, torch.randint(0, 3, (n,))


def _shard(rank: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    start = sum(SHARDS[:rank])
    return [t[start : start + SHARDS[rank]] for t in tensors]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _checks(rank: int) -> dict[str, float]:
    out: dict[str, float] = {}
    model, x, y = _data()
    xr, yr = _shard(rank, x, y)
    n_r = xr.shape[0]
    f, params = functional(model)
    for reduction in ("mean", "sum"):
        L = supervised_loss(f, "cross_entropy", reduction)
        H_all = HessianOperator(L, params, x, y)
        H = DistributedOperator(
            HessianOperator(L, params, xr, yr), n_local=n_r, reduction=reduction, params=params
        )
        V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
        out[f"hessian_block_{reduction}"] = _rel(H @ V, H_all @ V)
        out[f"hessian_vector_{reduction}"] = _rel(H @ V[:, 0], H_all @ V[:, 0])
        out[f"hessian_loss_{reduction}"] = _rel(H.loss, H_all.loss)
        G_all = GGNOperator(f, params, x, y, loss="cross_entropy", reduction=reduction)
        local = GGNOperator(f, params, xr, yr, loss="cross_entropy", reduction=reduction)
        G = DistributedOperator(local, n_local=n_r, reduction=reduction)
        out[f"ggn_block_{reduction}"] = _rel(G @ V, G_all @ V)
    L = supervised_loss(f, "cross_entropy")
    H_all = HessianOperator(L, params, x, y)
    H = DistributedOperator(HessianOperator(L, params, xr, yr), n_local=n_r)
    out["eigenvalues"] = _rel(eigenvalues(H), eigenvalues(H_all))
    out["lanczos"] = _rel(
        lanczos(H, k=3, generator=0).eigenvalues, lanczos(H_all, k=3, generator=0).eigenvalues
    )
    slq, slq_all = (slq_density(A, n_steps=8, n_probes=2, generator=1) for A in (H, H_all))
    out["slq_density"] = _rel(slq.density, slq_all.density)
    out["slq_nodes"] = _rel(slq.nodes, slq_all.nodes)
    out["hutchinson"] = _rel(
        hutchinson(H, 20, generator=2).value, hutchinson(H_all, 20, generator=2).value
    )
    out["hutchpp"] = _rel(hutchpp(H, 12, generator=3).value, hutchpp(H_all, 12, generator=3).value)

    # sharpness: the loss changes of all the data
    for reduction in ("mean", "sum"):
        L = supervised_loss(f, "cross_entropy", reduction)
        radii = [1e-2, 1e-1]
        ref = sharpness(L, params, x, y, radii=radii, directions=4, generator=4)
        got = distributed_sharpness(
            L, params, xr, yr, n_local=n_r, reduction=reduction, radii=radii, directions=4,
            generator=4,
        )  # fmt: skip
        for field in ("loss", "delta", "mean_abs", "mean_rel", "mean_rel_se"):
            out[f"sharpness_{field}_{reduction}"] = _rel(getattr(got, field), getattr(ref, field))

    # KFAC: mean and sum, folded and separate biases, an MLP and a conv net
    for name, (m, xx, yy) in {"mlp": (model, x, y), "conv": _conv_data()}.items():
        xs, ys = _shard(rank, xx, yy)
        for reduction, bias in (("mean", "folded"), ("sum", "separate")):
            opts = {"loss": "cross_entropy", "reduction": reduction, "bias": bias}
            ref, ref_loss = kfac_with_loss(m, [(xx, yy)], **opts)
            batches = [(xs[:2], ys[:2]), (xs[2:], ys[2:])]
            got, got_loss = distributed_kfac_with_loss(m, batches, **opts)
            assert got.keys() == ref.keys()
            for key in ref:
                out[f"kfac_{name}_{reduction}_{key}_A"] = _rel(got[key].A, ref[key].A)
                out[f"kfac_{name}_{reduction}_{key}_G"] = _rel(got[key].G, ref[key].G)
            out[f"kfac_{name}_{reduction}_loss"] = _rel(got_loss, ref_loss)
    factors = kfac(model, [(xr, yr)], loss="cross_entropy")
    again, none = reduce_kfac(factors, n_local=n_r)
    ref = kfac(model, [(x, y)], loss="cross_entropy")
    out["reduce_kfac_A"] = max(_rel(again[k].A, ref[k].A) for k in ref)
    out["reduce_kfac_loss_none"] = float(none is not None)

    # errors raised on every rank, with the group left usable
    errors: dict[str, str] = {}
    try:  # different probes on the ranks
        hutchinson(H, 4, generator=rank)
    except ValueError as err:
        errors["probes"] = str(err)
    moved = {k: v + rank for k, v in params.items()}
    try:
        DistributedOperator(HessianOperator(L, moved, xr, yr), n_local=n_r, params=moved)
    except ValueError as err:
        errors["params"] = str(err)
    try:
        DistributedOperator(HessianOperator(L, params, xr, yr), n_local=n_r if rank else 0)
    except ValueError as err:
        errors["empty"] = str(err)
    try:
        distributed_kfac(model, [(xr, yr)] if rank == 0 else [], loss="cross_entropy")
    except ValueError as err:
        errors["kfac_empty"] = str(err)
    out["errors"] = errors  # type: ignore[assignment]
    return out


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    return run_ranks(_checks, tmp)


def test_distributed_matches_one_process(spawned):
    for rank, result in enumerate(spawned):
        errors = result.pop("errors")
        assert result.pop("reduce_kfac_loss_none") == 0.0
        bad = {k: v for k, v in result.items() if not v <= TOL}
        assert not bad, f"rank {rank}: {bad}"
        assert len(result) >= 50
        assert set(errors) == {"probes", "params", "empty", "kfac_empty"}, errors
        assert "same on every rank" in errors["probes"]
        assert "`params`" in errors["params"]
        assert "ranks [0]" in errors["empty"]
        assert "ranks [1]" in errors["kfac_empty"] or "at least one" in errors["kfac_empty"]
    # both ranks end with the same numbers
    assert spawned[0].keys() == spawned[1].keys()


def test_without_a_process_group_errors_are_clear():
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is initialised in this process")
    model, x, y = _data()
    f, params = functional(model)
    H = HessianOperator(supervised_loss(f), params, x, y)
    with pytest.raises(ValueError, match="init_process_group"):
        DistributedOperator(H, n_local=x.shape[0])
    with pytest.raises(ValueError, match="init_process_group"):
        check_group(None)
    with pytest.raises(ValueError, match="init_process_group"):
        distributed_kfac(model, [(x, y)], loss="cross_entropy")


def test_bad_arguments_in_a_one_rank_group(tmp_path):
    if dist.is_initialized():  # pragma: no cover
        pytest.skip("a process group is initialised in this process")
    os.environ.pop("TORCHELASTIC_RUN_ID", None)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        model, x, y = _data()
        f, params = functional(model)
        H_local = HessianOperator(supervised_loss(f), params, x, y)
        with pytest.raises(TypeError, match="`group`"):
            DistributedOperator(H_local, n_local=3, group="world")
        with pytest.raises(TypeError, match="`local`"):
            DistributedOperator("H", n_local=3)
        with pytest.raises(ValueError, match="`reduction`"):
            DistributedOperator(H_local, n_local=3, reduction="max")
        with pytest.raises(ValueError, match="`n_local`"):
            DistributedOperator(H_local, n_local=0)
        with pytest.raises(TypeError, match="`n_local`"):
            DistributedOperator(H_local, n_local=2.5)
        with pytest.raises(TypeError, match="KronFactors"):
            reduce_kfac({"a": 1}, n_local=3)
        with pytest.raises(ValueError, match="create_graph"):
            distributed_kfac(model, [(x, y)], loss="cross_entropy", create_graph=True)
        with pytest.raises(TypeError, match="single"):
            distributed_kfac(model, (x, y), loss="cross_entropy")
        # one rank is one process: the same numbers as without the wrapper
        H = DistributedOperator(H_local, n_local=x.shape[0])
        v = torch.randn(H.shape[0], dtype=torch.float64)
        assert torch.allclose(H @ v, H_local @ v, rtol=1e-14, atol=0)
    finally:
        dist.destroy_process_group()

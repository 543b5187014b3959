"""experiments/_grid.py and the grid flags of experiments/_cli.py: job order, failures that
name the job (and its submitit log), bad options and flags, and the submitit local executor."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))

grid = pytest.importorskip("_grid")
cli = pytest.importorskip("_cli")


def _threads_and_square(x: int) -> tuple[int, int]:
    return torch.get_num_threads(), x * x


def test_sequential_returns_results_in_the_order_of_the_jobs_with_the_run_threads():
    before = torch.get_num_threads()
    jobs = {("b", 1): (3,), ("a", 0): (2,), ("c", 2): (5,)}
    done = grid.run_grid(_threads_and_square, jobs, grid.GridOptions(threads=1), progress=False)
    assert list(done) == list(jobs)
    assert done == {("b", 1): (1, 9), ("a", 0): (1, 4), ("c", 2): (1, 25)}
    assert torch.get_num_threads() == before  # the run's threads are given back


def test_sequential_failure_names_the_job_and_its_error():
    jobs = {("ok", 0): (4, 2), ("bad", 1): (1, 0), ("never", 2): (1, 1)}
    with pytest.raises(grid.GridJobError, match=r"\('bad', 1\).*ZeroDivisionError") as info:
        grid.run_grid(divmod, jobs, grid.GridOptions(), progress=False)
    assert info.value.key == ("bad", 1) and info.value.log_path is None


def test_jobs_must_be_tuples_and_the_job_callable():
    with pytest.raises(TypeError, match=r"`jobs\[0\]` must be a tuple"):
        grid.run_grid(divmod, {0: [1, 2]}, grid.GridOptions(), progress=False)
    with pytest.raises(TypeError, match="`job` must be a callable"):
        grid.run_grid("divmod", {0: (1, 2)}, grid.GridOptions(), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(executor="ray"), "`executor` must be one of"),
        (dict(workers=0), "`workers` must be an integer >= 1, got 0"),
        (dict(threads=0), "`threads` must be an integer >= 1"),
        (dict(executor="slurm", jobs_dir=Path("j"), slurm_time=0), "`slurm_time`"),
        (dict(executor="slurm", jobs_dir=Path("j"), slurm_gpus=-1), "`slurm_gpus`"),
        (dict(executor="local"), "needs `jobs_dir`"),
        (dict(executor="local", jobs_dir=Path("j"), slurm_partition="gpu"), "slurm executor only"),
        (dict(slurm_gpus=1), "slurm_gpus apply to the slurm executor only"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grid.GridOptions(**kwargs)


_SLURM = dict(executor="slurm", jobs_dir=Path("j"))

# (id, call, exception, the argument the message must name): every bad argument of GridOptions
# and run_grid fails before any job runs, with the argument's name in backticks (issue 18)
BAD_CALLS = [
    ("executor-ray", lambda: grid.GridOptions(executor="ray"), ValueError, "`executor`"),
    ("executor-none", lambda: grid.GridOptions(executor=None), ValueError, "`executor`"),
    (
        "executor-capitalised",
        lambda: grid.GridOptions(executor="Local", jobs_dir=Path("j")),
        ValueError,
        "`executor`",
    ),
    ("workers-0", lambda: grid.GridOptions(workers=0), ValueError, "`workers`"),
    ("workers-negative", lambda: grid.GridOptions(workers=-2), ValueError, "`workers`"),
    ("workers-float", lambda: grid.GridOptions(workers=2.0), TypeError, "`workers`"),
    ("workers-bool", lambda: grid.GridOptions(workers=True), TypeError, "`workers`"),
    ("workers-str", lambda: grid.GridOptions(workers="4"), TypeError, "`workers`"),
    ("threads-float", lambda: grid.GridOptions(threads=1.5), TypeError, "`threads`"),
    (
        "slurm-time-str",
        lambda: grid.GridOptions(**_SLURM, slurm_time="60"),
        TypeError,
        "`slurm_time`",
    ),
    ("slurm-mem-0", lambda: grid.GridOptions(**_SLURM, slurm_mem=0), ValueError, "`slurm_mem`"),
    ("slurm-cpus-0", lambda: grid.GridOptions(**_SLURM, slurm_cpus=0), ValueError, "`slurm_cpus`"),
    (
        "slurm-gpus-float",
        lambda: grid.GridOptions(**_SLURM, slurm_gpus=1.0),
        TypeError,
        "`slurm_gpus`",
    ),
    (
        "jobs-dir-int",
        lambda: grid.GridOptions(executor="local", jobs_dir=3),
        TypeError,
        "`jobs_dir`",
    ),
    ("local-no-jobs-dir", lambda: grid.GridOptions(executor="local"), ValueError, "`jobs_dir`"),
    (
        "slurm-partition-int",
        lambda: grid.GridOptions(**_SLURM, slurm_partition=3),
        TypeError,
        "`slurm_partition`",
    ),
    (
        "run-job-str",
        lambda: grid.run_grid("divmod", {0: (1, 2)}, grid.GridOptions(), progress=False),
        TypeError,
        "`job`",
    ),
    (
        "run-job-none",
        lambda: grid.run_grid(None, {0: (1, 2)}, grid.GridOptions(), progress=False),
        TypeError,
        "`job`",
    ),
    (
        "run-jobs-list",
        lambda: grid.run_grid(divmod, [(1, 2)], grid.GridOptions(), progress=False),
        TypeError,
        "`jobs`",
    ),
    (
        "run-jobs-none",
        lambda: grid.run_grid(divmod, None, grid.GridOptions(), progress=False),
        TypeError,
        "`jobs`",
    ),
    (
        "run-jobs-entry-list",
        lambda: grid.run_grid(divmod, {0: [1, 2]}, grid.GridOptions(), progress=False),
        TypeError,
        "`jobs[0]`",
    ),
    (
        "run-jobs-entry-int",
        lambda: grid.run_grid(abs, {"a": -3}, grid.GridOptions(), progress=False),
        TypeError,
        "`jobs['a']`",
    ),
    (
        "run-options-dict",
        lambda: grid.run_grid(divmod, {0: (1, 2)}, {"executor": "sequential"}, progress=False),
        TypeError,
        "`options`",
    ),
    (
        "run-options-none-no-jobs",
        lambda: grid.run_grid(divmod, {}, None, progress=False),
        TypeError,
        "`options`",
    ),
    (
        "run-options-executor-name",
        lambda: grid.run_grid(divmod, {0: (1, 2)}, "sequential", progress=False),
        TypeError,
        "`options`",
    ),
    (
        "run-desc-int",
        lambda: grid.run_grid(divmod, {0: (1, 2)}, grid.GridOptions(), desc=3, progress=False),
        TypeError,
        "`desc`",
    ),
    (
        "run-progress-int",
        lambda: grid.run_grid(divmod, {0: (1, 2)}, grid.GridOptions(), progress=0),
        TypeError,
        "`progress`",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "name"), [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_grid_arguments_fail_clearly(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert name in str(info.value), str(info.value)


def test_bad_call_ids_are_unique():
    ids = [c[0] for c in BAD_CALLS]
    assert len(ids) == len(set(ids))


def _fake_srun(monkeypatch, tmp_path: Path) -> None:
    """An ``srun`` on the PATH, which submitit's Slurm executor looks for."""
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}:{os.environ['PATH']}")


def _grid_parser():
    p = cli.parser("test")
    cli.add_grid_flags(p)
    return p


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--executor", "ray"], "invalid choice: 'ray'"),
        (["--workers", "0"], "--workers: `workers` must be an integer >= 1"),
        (["--executor", "local", "--slurm-partition", "gpu"], "slurm executor only"),
        (["--executor", "slurm", "--device", "cuda"], "needs --slurm-gpus >= 1"),
        (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time: `slurm_time`"),
        (["--executor", "slurm"], "no srun here"),
    ],
)
def test_bad_grid_flags_are_usage_errors(argv, message, capsys, monkeypatch, tmp_path):
    if message != "no srun here":
        _fake_srun(monkeypatch, tmp_path)
    else:
        monkeypatch.setenv("PATH", str(tmp_path))
    p = _grid_parser()
    with pytest.raises(SystemExit):
        cli.grid_options(p, p.parse_args(argv))
    assert message in capsys.readouterr().err


def test_grid_flags_give_options_and_the_executor_in_the_config(tmp_path, monkeypatch):
    _fake_srun(monkeypatch, tmp_path)
    p = _grid_parser()
    args = p.parse_args(["--executor", "slurm", "--out", str(tmp_path), "--slurm-gpus", "1"])
    options = cli.grid_options(p, args)
    assert options == grid.GridOptions(
        executor="slurm", jobs_dir=tmp_path / "jobs", slurm_gpus=1, slurm_time=60
    )
    assert cli.run_config(args)["executor"] == "slurm"


def test_slurm_job_script_asks_for_the_flags_resources(tmp_path, monkeypatch):
    """The sbatch script submitit writes for the Slurm options (rendered through submitit's
    own writer, without a cluster): partition, minutes, GPUs, CPUs, memory, job name, and
    experiments/ on the PYTHONPATH."""
    pytest.importorskip("submitit")
    _fake_srun(monkeypatch, tmp_path)
    options = grid.GridOptions(
        executor="slurm",
        jobs_dir=tmp_path / "jobs",
        threads=2,
        slurm_partition="gpu",
        slurm_time=30,
        slurm_gpus=1,
        slurm_mem=16,
    )
    executor = grid._executor(options, "toy_rotation")
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=30",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=2",  # --slurm-cpus defaults to --threads
        "#SBATCH --mem=16GB",
        "#SBATCH --job-name=toy_rotation",
        f"export PYTHONPATH={ROOT / 'experiments'}$",
    ):
        assert line in script, line


def test_local_executor_runs_the_jobs_and_names_a_failed_job_with_its_log(tmp_path):
    """submitit's local executor (one process per job, two at once): results in the order of
    the jobs; a failure names the job, its error and its log file."""
    pytest.importorskip("submitit")
    options = grid.GridOptions(executor="local", jobs_dir=tmp_path, workers=2, threads=1)
    jobs = {("b", 1): (7, 2), ("a", 0): (9, 4)}
    done = grid.run_grid(divmod, jobs, options, progress=False)
    assert list(done) == list(jobs) and done == {("b", 1): (3, 1), ("a", 0): (2, 1)}
    with pytest.raises(grid.GridJobError, match=r"\('bad', 1\).*ZeroDivisionError") as info:
        grid.run_grid(divmod, {("bad", 1): (1, 0)}, options, progress=False)
    assert info.value.log_path is not None and Path(info.value.log_path).exists()
    assert "ZeroDivisionError" in Path(info.value.log_path).read_text()


def _without_timings(value):
    """``value`` without the wall times a job measures (``train_s``)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "train_s"}
    return value


def test_local_executor_writes_the_results_of_a_sequential_run(tmp_path):
    """toy_rotation --quick, one job per (case, seed) through submitit's local executor: the
    same cases, targets and config (but the executor) as the sequential run, to the bit."""
    pytest.importorskip("submitit")
    from conftest import run_quick

    args = ["--seeds", "2", "--cases", "lila_kron"]
    seq, _ = run_quick("toy_rotation", tmp_path / "seq", args=args)
    local, _ = run_quick(
        "toy_rotation", tmp_path / "local", args=[*args, "--executor", "local", "--workers", "2"]
    )
    assert seq["config"].pop("executor") == "sequential"
    assert local["config"].pop("executor") == "local"
    assert local["config"] == seq["config"]
    assert _without_timings(local["cases"]) == _without_timings(seq["cases"])
    assert local["targets"] == seq["targets"]
    assert set(local["timings"]) == set(seq["timings"])
    assert len(list((tmp_path / "local" / "jobs").glob("*_log.err"))) == 2  # one per job


def test_discovery_script_on_the_local_executor_matches_the_sequential_run(tmp_path):
    """rescaling --quick on two cases, one job per (case, seed) through submitit's local
    executor: the same scores (to the bit), targets and figures as the sequential run."""
    pytest.importorskip("submitit")
    from conftest import run_quick

    args = ["--cases", "linear_1x1", "linear_fig5", "--threads", "1"]
    seq, _ = run_quick("rescaling", tmp_path / "seq", args=args)
    local, _ = run_quick(
        "rescaling", tmp_path / "local", args=[*args, "--executor", "local", "--workers", "2"]
    )
    assert seq["config"].pop("executor") == "sequential"
    assert local["config"].pop("executor") == "local"
    assert local["config"] == seq["config"]
    assert local["cases"] == seq["cases"] and list(local["cases"]) == ["linear_1x1", "linear_fig5"]
    assert set(local["timings"]) == set(seq["timings"])
    assert sorted(p.name for p in (tmp_path / "local").glob("*.png")) == sorted(
        p.name for p in (tmp_path / "seq").glob("*.png")
    )

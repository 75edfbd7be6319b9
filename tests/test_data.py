"""Tests of hwnas.data: digits, mnist (real t10k files when present, synthetic IDX otherwise), errors, loaders."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hwnas.data import DATASETS, Splits, _split_indices, load_dataset, make_loader
from hwnas.errors import ConfigError, DataError, HwnasError

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
T10K = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    return np.array([magic, *arr.shape], dtype=">u4").tobytes() + arr.astype(np.uint8).tobytes()


def _write_pair(folder: Path, prefix: tuple[str, str], n: int, *, gz: bool = True, n_labels: int | None = None,
                image_magic: int | None = None) -> tuple[Path, Path]:
    """Write a synthetic IDX image/label pair (n images, labels cycling 0..9) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n if n_labels is None else n_labels) % 10
    paths = []
    for stem, blob in zip(prefix, (_idx_bytes(images, image_magic), _idx_bytes(labels)), strict=True):
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(blob) if gz else blob)
        paths.append(path)
    return paths[0], paths[1]


def _sizes(s: Splits) -> tuple[int, int, int]:
    return len(s.train), len(s.val), len(s.test)


def _classes(ds) -> set[int]:
    return set(ds.tensors[1].tolist())


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def shared_mnist() -> Path:
    if not all((SHARED_MNIST / f"{stem}.gz").is_file() for stem in T10K):
        pytest.skip(f"MNIST t10k files not found under {SHARED_MNIST} (shared test data absent on this machine)")
    return SHARED_MNIST


def test_registry_names_and_unknown_name():
    assert DATASETS.names() == ["cifar10", "digits", "fake", "imagefolder", "mnist", "npz", "torchvision"]
    with pytest.raises(HwnasError, match="unknown dataset 'nope'.*digits"):
        load_dataset("nope")


def test_digits_shapes_and_sizes(digits):
    assert _sizes(digits) == (1077, 360, 360) and sum(_sizes(digits)) == 1797
    assert digits.input_shape == (1, 28, 28) and digits.num_classes == 10 and digits.name == "digits"
    assert "1077/360/360" in digits.description and "1x28x28" in digits.description
    for ds in (digits.train, digits.val, digits.test):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
        assert _classes(ds) == set(range(10))


def test_digits_split_is_disjoint_and_complete():
    from sklearn.datasets import load_digits

    parts = _split_indices(load_digits().target, (1077, 360, 360))
    assert [len(p) for p in parts] == [1077, 360, 360]
    joined = np.concatenate(parts)
    assert len(set(joined.tolist())) == 1797 and sorted(joined.tolist()) == list(range(1797))


def test_digits_deterministic_and_independent_of_seed(digits):
    again = load_dataset("digits", seed=123)
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test), strict=True):
        assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])


def test_digits_normalised(digits):
    x = digits.train.tensors[0]
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    for ds in (digits.val, digits.test):
        assert abs(ds.tensors[0].mean().item()) < 0.15 and abs(ds.tensors[0].std().item() - 1) < 0.15


def test_digits_input_shape_and_limit():
    s = load_dataset("digits", input_shape=(1, 16, 16), limit=50)
    assert s.input_shape == (1, 16, 16) and _sizes(s) == (50, 50, 50)
    with pytest.raises(ConfigError, match="channel"):
        load_dataset("digits", input_shape=(3, 28, 28))
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=0)


def test_mnist_shared_t10k_only(shared_mnist):
    s = load_dataset("mnist", root=shared_mnist)
    assert _sizes(s) == (6000, 2000, 2000) and s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert "t10k only" in s.description
    for ds in (s.train, s.val, s.test):
        assert _classes(ds) == set(range(10))
    counts = sum(torch.bincount(ds.tensors[1], minlength=10) for ds in (s.train, s.val, s.test))
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(s.train.tensors[0].mean().item()) < 0.1 and abs(s.train.tensors[0].std().item() - 1) < 0.1


def test_mnist_torchvision_layout_and_raw_files(shared_mnist, tmp_path):
    ref = load_dataset("mnist", root=shared_mnist, limit=300)
    raw_dir = tmp_path / "tv" / "MNIST" / "raw"
    raw_dir.mkdir(parents=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    for stem in T10K:
        (raw_dir / f"{stem}.gz").symlink_to(shared_mnist / f"{stem}.gz")
        with gzip.open(shared_mnist / f"{stem}.gz") as fh:
            (plain / stem).write_bytes(fh.read())
    for root in (tmp_path / "tv", plain):
        got = load_dataset("mnist", root=root, limit=300)
        for a, b in zip((ref.train, ref.val, ref.test), (got.train, got.val, got.test), strict=True):
            assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])


def test_mnist_train_and_t10k_files(tmp_path):
    _write_pair(tmp_path, TRAIN, 1200, gz=False)
    _write_pair(tmp_path / "MNIST" / "raw", T10K, 200)
    s = load_dataset("mnist", root=tmp_path)
    assert _sizes(s) == (1100, 100, 200) and "train/t10k" in s.description
    assert _classes(s.val) == set(range(10))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_missing_root(dataset, tmp_path):
    with pytest.raises(DataError, match=f"--data-root is required for {dataset}.*'digits'"):
        load_dataset(dataset)
    with pytest.raises(DataError, match="does not exist") as err:
        load_dataset(dataset, root=tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)


def test_mnist_root_without_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg and str(tmp_path) in msg and str(tmp_path / "MNIST" / "raw") in msg


def test_mnist_half_a_pair(tmp_path):
    images, labels = _write_pair(tmp_path, T10K, 100)
    labels.unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        load_dataset("mnist", root=tmp_path)
    assert str(images) in str(err.value)  # says what it did find


def test_mnist_truncated_gz(tmp_path):
    images, _ = _write_pair(tmp_path, T10K, 100)
    images.write_bytes(images.read_bytes()[:2000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*truncated or corrupt"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_truncated_raw(tmp_path):
    images, _ = _write_pair(tmp_path, T10K, 100, gz=False)
    images.write_bytes(images.read_bytes()[:-28])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*header promises"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_wrong_magic(tmp_path):
    _write_pair(tmp_path, T10K, 100, image_magic=2049)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz has IDX magic number 2049, expected 2051"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_mismatched_counts(tmp_path):
    _write_pair(tmp_path, T10K, 100, n_labels=90)
    with pytest.raises(DataError, match="100 images.*t10k-labels-idx1-ubyte.gz holds 90 labels"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_download_failure_and_success(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried ...")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(DataError, match="could not download MNIST.*place the IDX files under"):
        load_dataset("mnist", root=tmp_path / "new", download=True)

    class Fetches:
        def __init__(self, root, train=True, download=False):
            _write_pair(Path(root) / "MNIST" / "raw", T10K, 100)

    monkeypatch.setattr(torchvision.datasets, "MNIST", Fetches)
    assert _sizes(load_dataset("mnist", root=tmp_path / "new", download=True)) == (60, 20, 20)


def test_cifar10_root_without_batches(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py lacks data_batch_1.*test_batch"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_corrupt_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="could not read the CIFAR-10 batches in .*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path)


def test_fake_shape_and_reproducible():
    a = load_dataset("fake", input_shape=(3, 12, 10), seed=1)
    assert a.input_shape == (3, 12, 10) and a.train.tensors[0].shape == (512, 3, 12, 10)
    assert _sizes(a) == (512, 128, 128) and a.train.tensors[1].dtype == torch.int64
    assert load_dataset("fake").input_shape == (1, 28, 28)
    b, c = load_dataset("fake", input_shape=(3, 12, 10), seed=1), load_dataset("fake", input_shape=(3, 12, 10), seed=2)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0]) and torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])


def test_make_loader_deterministic_shuffle(digits):
    def order(seed: int) -> list[int]:
        return torch.cat([y for _, y in make_loader(digits.train, 64, shuffle=True, seed=seed)]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    batches = list(make_loader(digits.train, 100, shuffle=False, drop_last=True))
    assert len(batches) == 10 and batches[0][0].shape == (100, 1, 28, 28)
    assert torch.equal(batches[0][1], digits.train.tensors[1][:100])
    with pytest.raises(ConfigError):
        make_loader(digits.train, 0, shuffle=False)


def test_shared_copy_untouched(shared_mnist, tmp_path):
    # copying (not symlinking) the shared files works too, and the loader never writes next to them
    for stem in T10K:
        shutil.copy(shared_mnist / f"{stem}.gz", tmp_path)
    assert _sizes(load_dataset("mnist", root=tmp_path, limit=10)) == (10, 10, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.gz" for s in T10K)


def test_a_process_reads_the_same_files_once_and_again_when_they_change(tmp_path, monkeypatch):
    """A pooled Ray worker runs shards one after another: the second load of unchanged files is the
    cached one (not read again); a rewritten file is read again."""
    import hwnas.data as data

    _write_pair(tmp_path, T10K, 200, gz=False)
    reads: list[str] = []
    real = DATASETS.get("mnist")
    monkeypatch.setitem(DATASETS._items, "mnist", lambda **kw: reads.append("mnist") or real(**kw))
    first = load_dataset("mnist", root=tmp_path)
    again = load_dataset("mnist", root=tmp_path, limit=50)
    assert reads == ["mnist"] and torch.equal(again.train.tensors[0], first.train.tensors[0][:50])
    _write_pair(tmp_path, T10K, 300, gz=False)  # new files at the same paths
    assert _sizes(load_dataset("mnist", root=tmp_path)) != _sizes(first) and reads == ["mnist", "mnist"]
    assert len(data._CACHE) == 1

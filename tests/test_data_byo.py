"""Bring your own data (issue 18): imagefolder (PNGs the tests write), npz, torchvision:NAME, CIFAR-10 batches read
by the restricted unpickler (with a planted payload), normalisation carried in Splits, and augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from hwnas.config import SearchConfig
from hwnas.data import Augment, augment_batches, augment_for, load_dataset, make_loader
from hwnas.errors import ConfigError, DataError
from hwnas.preflight import check_data


def _one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def _png(path: Path, value: int, size=(8, 8), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    h, w = size
    arr = np.clip(rng.normal(value, 20, (h, w) if mode == "L" else (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr, mode).save(path)


def _folder(root: Path, classes=("cat", "dog", "fox"), n=10, size=(8, 8), mode="L", offset=0) -> Path:
    for i, c in enumerate(classes):
        for j in range(n):
            _png(root / c / f"{j:03d}.png", 40 + 80 * i + j + offset, size, mode)
    return root


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_flat_fixed_stratified_split(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("not an image: skipped")
    s = load_dataset("imagefolder", root=root)
    assert (len(s.train), len(s.val), len(s.test)) == (20, 5, 5) and s.input_shape == (1, 8, 8)
    assert s.num_classes == 3 and s.class_names == ("cat", "dog", "fox") and s.value_range == (0.0, 1.0)
    x = s.train.tensors[0]
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 0.05  # normalised by train statistics
    assert len(s.mean) == 1 and len(s.std) == 1 and 0 < s.mean[0] < 1 and s.resize == "none"
    again = load_dataset("imagefolder", root=root, seed=7)  # fixed: the seed does not move the split
    assert torch.equal(again.test.tensors[0], s.test.tensors[0]) and torch.equal(again.val.tensors[1], s.val.tensors[1])


def test_imagefolder_split_folders_rgb_and_given_stats(tmp_path):
    root = tmp_path / "imgs"
    _folder(root / "train", n=10, mode="RGB")
    _folder(root / "test", n=3)  # grayscale here, RGB in train: every image becomes RGB
    s = load_dataset("imagefolder", root=root, normalize_mean=[0.5] * 3, normalize_std=[0.25] * 3)
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 9) and s.input_shape == (3, 8, 8)
    assert s.mean == (0.5, 0.5, 0.5) and s.std == (0.25, 0.25, 0.25)
    assert s.test.tensors[0].min() >= -2.0 - 1e-6 and s.test.tensors[0].max() <= 2.0 + 1e-6
    _folder(root / "val", n=2)
    s = load_dataset("imagefolder", root=root)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 6, 9) and "train/val/test folders" in s.description
    with pytest.raises(ConfigError, match="channel"):
        load_dataset("imagefolder", root=root, normalize_mean=[0.5], normalize_std=[0.25])


def test_imagefolder_mixed_sizes_need_a_resize_rule(tmp_path):
    root = _folder(tmp_path / "imgs")
    _png(root / "dog" / "big.png", 100, size=(12, 10))
    with pytest.raises(DataError) as err:
        load_dataset("imagefolder", root=root)
    _one_line(err, str(root / "dog" / "big.png"), "12x10", "--input-size")
    s = load_dataset("imagefolder", root=root, input_size=(6, 6))
    assert s.input_shape == (1, 6, 6) and "6x6" in s.resize


@pytest.mark.parametrize("case", ["empty_class", "no_classes", "missing_in_test", "corrupt", "half_layout"])
def test_imagefolder_errors_name_the_file_and_fix(tmp_path, case):
    root = tmp_path / "imgs"
    if case == "empty_class":
        _folder(root)
        (root / "emu").mkdir()
        bad, fix = root / "emu", "add images"
    elif case == "no_classes":
        root.mkdir()
        _png(root / "loose.png", 5)
        bad, fix = root, "CLASS/IMAGE"
    elif case == "missing_in_test":
        _folder(root / "train")
        _folder(root / "test", classes=("cat", "dog"))
        bad, fix = root / "test", "fox"
    elif case == "corrupt":
        _folder(root)
        bad, fix = root / "fox" / "005.png", "replace or delete"
        bad.write_bytes(bad.read_bytes()[:40])
    else:
        _folder(root / "train")
        bad, fix = root, "no test/"
    with pytest.raises(DataError) as err:
        load_dataset("imagefolder", root=root)
    _one_line(err, str(bad), fix)
    cfg = SearchConfig(dataset="imagefolder", data_root=str(root))
    with pytest.raises(DataError) as err:  # preflight finds it before any training
        check_data(cfg)
    _one_line(err, str(bad))


# ---------------------------------------------------------------- npz


def test_npz_xy_and_split_arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    y = np.arange(40) % 4
    np.savez(tmp_path / "a.npz", x=x, y=y, class_names=np.array(["w", "x", "y", "z"]))
    s = load_dataset("npz", root=tmp_path / "a.npz")
    assert (len(s.train), len(s.val), len(s.test)) == (28, 6, 6) and s.input_shape == (3, 6, 5)
    assert s.class_names == ("w", "x", "y", "z") and s.value_range == (0.0, 1.0) and len(s.mean) == 3
    xf = rng.normal(size=(30, 1, 7, 7)).astype(np.float32)  # (N, C, H, W) float: taken as it is
    np.savez(tmp_path / "b.npz", x_train=xf[:20], y_train=np.arange(20) % 2, x_test=xf[20:], y_test=np.arange(10) % 2)
    s = load_dataset("npz", root=tmp_path / "b.npz", input_size=(4, 4))
    assert (len(s.train), len(s.val), len(s.test)) == (18, 2, 10) and s.input_shape == (1, 4, 4)
    assert s.class_names == ("0", "1") and s.value_range[0] < 0 < s.value_range[1]


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"x": np.zeros((4, 3, 8, 3), np.uint8), "y": np.zeros(4, int)}, "cannot tell"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, int)}, "4 samples in x but 3 labels"),
    ({"x": np.zeros((4, 8, 8), np.uint8)}, "lacks y"),
    ({"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.zeros(4, int)}, "lacks x_test"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, int), "class_names": np.array([{"a": 1}], dtype=object)},
     "pickle"),
])
def test_npz_errors(tmp_path, arrays, fragment):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        load_dataset("npz", root=path)
    _one_line(err, str(path), fragment)


def test_npz_not_an_archive_caught_by_preflight(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"hello")
    with pytest.raises(DataError) as err:
        check_data(SearchConfig(dataset="npz", data_root=str(path)))
    _one_line(err, str(path), "np.savez")


# ---------------------------------------------------------------- CIFAR-10 batches


def _cifar(root: Path, n: int = 20, protocol: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in np.arange(n) % 10],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_fabricated_batches(tmp_path, protocol):
    _cifar(tmp_path, protocol=protocol)
    s = load_dataset("cifar10", root=tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20) and s.input_shape == (3, 32, 32)
    assert s.class_names[:2] == ("plane", "car") and len(s.class_names) == 10
    assert s.mean == (0.4914, 0.4822, 0.4465) and s.std == (0.2470, 0.2435, 0.2616)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())[b"data"]
    want = (torch.from_numpy(raw[0].reshape(3, 32, 32)).float() / 255 - 0.4914) / 0.2470
    assert torch.allclose(s.test.tensors[0][0, 0], want[0], atol=1e-5)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_cifar10_payload_is_refused_and_never_runs(tmp_path):
    folder = _cifar(tmp_path)
    marker = tmp_path / "marker"
    batch = {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8), b"x": _Payload(marker)}
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path)
    _one_line(err, "data_batch_3", "pathlib")
    assert not marker.exists()


# ---------------------------------------------------------------- torchvision:NAME


def _idx(path: Path, arr: np.ndarray) -> None:
    magic = 2051 if arr.ndim == 3 else 2049
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.array([magic, *arr.shape], dtype=">u4").tobytes() + arr.astype(np.uint8).tobytes())


def test_torchvision_missing_files_name_download(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("torchvision:FashionMNIST", root=tmp_path)
    _one_line(err, "--download", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("torchvision:CIFAR100", root=tmp_path)
    _one_line(err, "--download", "cifar-100-python")
    with pytest.raises(ConfigError, match="torchvision has no dataset 'Nope'"):
        load_dataset("torchvision:Nope", root=tmp_path)
    with pytest.raises(ConfigError, match="torchvision:NAME"):
        SearchConfig(dataset="torchvision")


def test_torchvision_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 50), ("t10k", 20)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    s = load_dataset("torchvision:MNIST", root=tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (45, 5, 20) and s.input_shape == (1, 28, 28)
    assert s.num_classes == 10 and s.class_names[0].startswith("0")


# ---------------------------------------------------------------- augmentation


def test_augmentation_off_by_default_and_deterministic(tmp_path):
    s = load_dataset("digits", limit=64)
    cfg = SearchConfig()
    assert augment_for(cfg, s.mean, s.std) is None
    loader = make_loader(s.train, 16, shuffle=True, seed=3)
    assert augment_batches(loader, None, 3) is loader  # off: exactly the loader of before

    def batches(aug, seed):
        return [x for x, _ in augment_batches(make_loader(s.train, 16, shuffle=True, seed=seed), aug, seed)]

    plain = batches(None, 3)
    aug = augment_for(SearchConfig(augment_crop=2, augment_flip=True), s.mean, s.std)
    assert aug == Augment(2, True, (-s.mean[0] / s.std[0],))
    a, b, c = batches(aug, 3), batches(aug, 3), batches(aug, 4)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))  # same seed, same batches
    assert not all(torch.equal(u, v) for u, v in zip(a, plain, strict=True))
    assert a[0].shape == plain[0].shape and not torch.equal(torch.cat(a), torch.cat(c))
    flipped = Augment(0, True)(plain[0], torch.Generator().manual_seed(0))
    assert all(torch.equal(f, p) or torch.equal(f, p.flip(2)) for f, p in zip(flipped, plain[0], strict=True))
    padded = Augment(1, False, (-9.0,))(plain[0], torch.Generator().manual_seed(0))
    assert (padded == -9.0).any()  # some windows reach into the padding


def test_config_keys_validated():
    for bad in ({"augment_crop": -1}, {"input_size": [8]}, {"normalize_mean": [0.5]},
                {"normalize_mean": [0.5], "normalize_std": [0.0]}, {"augment_flip": "yes"}):
        with pytest.raises(ConfigError):
            SearchConfig(**bad)
    cfg = SearchConfig(augment_crop=4, augment_flip=True, input_size=[32, 32])
    t = cfg.train_config(epochs=1, lr=0.1)
    assert (t.augment_crop, t.augment_flip, t.input_size) == (4, True, [32, 32])


def test_search_with_augmentation_runs_and_differs():
    from hwnas.search.loop import run_search

    base = {"epochs": 1, "warmup_epochs": 0, "data_limit": 64, "batch_size": 32, "threads": 1}
    a = run_search(SearchConfig(**base), None, progress=False)
    b = run_search(SearchConfig(**base, augment_crop=2, augment_flip=True), None, progress=False)
    c = run_search(SearchConfig(**base, augment_crop=2, augment_flip=True), None, progress=False)
    assert a.history[0]["train_loss"] != b.history[0]["train_loss"]
    assert b.history[0]["train_loss"] == c.history[0]["train_loss"]


# ---------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_search_on_an_image_folder(tmp_path):
    root = _folder(tmp_path / "imgs", classes=tuple(f"c{i}" for i in range(10)), n=6, size=(28, 28))
    out = tmp_path / "run"
    r = run_cli("search", "--dataset", "imagefolder", "--data-root", str(root), "--epochs", "1", "--warmup-epochs", "0",
                "--batch-size", "8", "--threads", "1", "--augment-flip", "--out", str(out), "--no-progress",
                timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "config.yaml").is_file() and "imagefolder" in (out / "config.yaml").read_text()
    bad = run_cli("search", "--dataset", "imagefolder", "--data-root", str(tmp_path / "nope"), "--out",
                  str(tmp_path / "r2"), "--no-progress")
    assert bad.returncode == 2 and "nope" in bad.stderr.strip().splitlines()[-1]

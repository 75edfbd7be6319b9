"""Datasets: ``digits`` (built in), ``mnist`` (IDX files), ``cifar10`` (torchvision root), ``fake``.

Every loader yields normalised float32 images ``(N, C, H, W)`` and int64 labels ``(N,)`` split into
train/val/test. Real-data splits are fixed (they never depend on ``seed``); ``seed`` only drives the
``fake`` tensors and the shuffling in :func:`make_loader`.
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .errors import ConfigError, DataError
from .registry import Registry

Shape = tuple[int, int, int]
_Part = tuple[torch.Tensor, torch.Tensor]  # x (N, C, H, W) float32, y (N,) int64

_MNIST_STATS = (0.1307, 0.3081)
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_EXPECTED = (
    "a folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz (or only the t10k-* pair; .gz or raw, directly or under MNIST/raw/)"
)
_CIFAR_EXPECTED = "the folder that contains cifar-10-batches-py/ (torchvision's CIFAR-10 layout)"


@dataclass(frozen=True)
class Splits:
    """A dataset split three ways, ready for training.

    Each split is a ``TensorDataset(x, y)`` with ``x`` float32 ``(N, C, H, W)`` (normalised) and ``y``
    int64 ``(N,)`` in ``0..num_classes-1``; ``input_shape`` is ``(C, H, W)``.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    input_shape: Shape
    num_classes: int
    name: str
    description: str


@dataclass(frozen=True)
class _Loaded:
    """What a registered loader returns before ``limit`` is applied."""

    parts: tuple[_Part, _Part, _Part]  # train, val, test
    num_classes: int
    source: str  # the tail of ``Splits.description``


DATASETS: Registry[Callable[..., _Loaded]] = Registry("dataset")


_CACHE: dict[tuple, _Loaded] = {}  # this process's last loaded dataset (a pooled Ray worker's next shard)


def _signature(root: Path | None) -> tuple:
    """The files under ``root`` (three levels deep) with their sizes and mtimes: a changed file reloads."""
    if root is None or not root.is_dir():
        return ()
    files = [p for depth in ("*", "*/*", "*/*/*") for p in root.glob(depth) if p.is_file()]
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def _cached(name: str, root: Path | None, seed: int, input_shape: Shape | None, download: bool) -> _Loaded:
    """``DATASETS[name](...)``, kept for the next call with the same arguments and files: a pooled shard
    worker runs shards one after another and reads (and resizes) its data once."""
    key = (name, None if root is None else str(root.resolve()), seed, input_shape, download, _signature(root))
    if key not in _CACHE:
        loaded = DATASETS.get(name)(root=root, seed=seed, input_shape=input_shape, download=download)
        _CACHE.clear()
        _CACHE[key] = loaded
    return _CACHE[key]


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    input_shape: Shape | None = None,
    download: bool = False,
    limit: int | None = None,
) -> Splits:
    """Load a registered dataset as normalised train/val/test tensors.

    Args:
        name: a name in ``DATASETS`` (``digits``, ``mnist``, ``cifar10``, ``fake``).
        root: data folder for ``mnist``/``cifar10`` (ignored by ``digits`` and ``fake``).
        seed: seeds the ``fake`` tensors; real-data splits are fixed and ignore it.
        input_shape: ``(C, H, W)``; ``fake`` generates it, real data is resized bilinearly to ``(H, W)``
            (``C`` must match). ``None`` keeps the native shape (``digits``: 1x28x28).
        download: let torchvision download ``mnist``/``cifar10`` into ``root`` when files are missing.
        limit: keep at most this many samples of each split (the first ones; for quick tests).

    Returns:
        The ``Splits``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        DataError: the data is missing, unreadable or malformed (the message names the file/folder).
        ConfigError: ``input_shape`` or ``limit`` cannot work.
    """
    DATASETS.get(name)  # an unknown name fails before anything else
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(f"input_shape must be three positive ints (C, H, W), got {input_shape}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of samples per split, got {limit}")
    path = None if root is None else Path(root).expanduser()
    loaded = _cached(name, path, seed, input_shape, download)
    parts = [(x[:limit].clone(), y[:limit].clone()) if limit else (x, y) for x, y in loaded.parts]
    sizes = "/".join(str(len(y)) for _, y in parts)
    c, h, w = (int(v) for v in parts[0][0].shape[1:])
    desc = f"{name}: {sizes} train/val/test, {c}x{h}x{w}, {loaded.source}"
    if limit:
        desc += f" (limit {limit} per split)"
    train, val, test = (TensorDataset(x, y) for x, y in parts)
    return Splits(train, val, test, (c, h, w), loaded.num_classes, name, desc)


def make_loader(
    ds: TensorDataset, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """A single-process ``DataLoader`` whose shuffling order depends only on ``seed``.

    Args:
        ds: the dataset (e.g. ``Splits.train``).
        batch_size: samples per batch (>= 1).
        shuffle: reshuffle every epoch, from a ``torch.Generator`` seeded with ``seed``.
        seed: the shuffling seed; the same seed gives the same sequence of epochs.
        drop_last: drop the last incomplete batch.

    Returns:
        A ``DataLoader`` yielding ``(x (B, C, H, W), y (B,))``.

    Raises:
        ConfigError: ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last)


def _split_indices(labels: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Fixed (seed 0) stratified split of ``range(len(labels))`` into parts of ``sizes`` (summing to N)."""
    from sklearn.model_selection import train_test_split

    rest, tail = np.arange(len(labels)), []
    for size in reversed(sizes[1:]):
        try:
            rest, part = train_test_split(rest, test_size=size, stratify=labels[rest], random_state=0)
        except ValueError:  # a class too small to stratify: fall back to a fixed permutation
            perm = np.random.default_rng(0).permutation(rest)
            rest, part = perm[size:], perm[:size]
        tail.append(part)
    return [rest, *reversed(tail)]


def _split(x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, ...]) -> list[_Part]:
    return [(x[idx], y[idx]) for idx in map(torch.from_numpy, _split_indices(y.numpy(), sizes))]


def _fit_shape(x: torch.Tensor, shape: Shape | None, name: str) -> torch.Tensor:
    """Resize ``x`` (N, C, H, W) bilinearly to ``shape[1:]``; the channel count must already match."""
    if shape is None:
        return x
    if shape[0] != x.shape[1]:
        raise ConfigError(f"{name} images have {x.shape[1]} channel(s) but input_shape asks for {shape[0]}; "
                          f"use input_shape=({x.shape[1]}, H, W)")
    if tuple(shape[1:]) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
    return x


def _require_root(root: Path | None, name: str, expected: str, download: bool) -> Path:
    if root is None:
        raise DataError(f"--data-root is required for {name}: point it at {expected}; "
                        "the built-in dataset is 'digits'")
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: point --data-root at {expected}")
    if not root.exists() and not download:
        raise DataError(f"data root {root} does not exist: point --data-root at {expected}")
    return root


def _reason(err: Exception) -> str:
    """The last non-empty line of an exception (torchvision's download errors end with the real cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    shape = (1, len(mean), 1, 1)
    return x.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


@DATASETS.register("digits")
def _load_digits(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool) -> _Loaded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    x = _fit_shape(x, input_shape or (1, 28, 28), "digits")  # (1797, 1, H, W)
    y = torch.from_numpy(bunch.target).long()  # (1797,)
    n_eval = math.ceil(0.2 * len(y))  # 360 val, 360 test
    parts = _split(x, y, (len(y) - 2 * n_eval, n_eval, n_eval))
    xtr = parts[0][0]
    mean, std = xtr.mean(dim=(0, 2, 3)).tolist(), xtr.std(dim=(0, 2, 3)).tolist()
    parts = [(_normalise(xs, mean, std), ys) for xs, ys in parts]
    return _Loaded(tuple(parts), 10, "sklearn load_digits upsampled")  # type: ignore[arg-type]


def _idx_dims(path: Path, head: bytes, magic: int) -> tuple[int, ...]:
    """The dims an IDX header declares (images: magic 2051, (N, rows, cols); labels: 2049, (N,))."""
    ndim = 3 if magic == 2051 else 1
    header = 4 * (1 + ndim)
    if len(head) < header:
        raise DataError(f"{path} is truncated ({len(head)} bytes, less than its {header}-byte IDX header); "
                        "replace it with a fresh copy")
    got, *dims = (int(v) for v in np.frombuffer(head, dtype=">u4", count=1 + ndim))
    if got != magic:
        raise DataError(f"{path} has IDX magic number {got}, expected {magic} "
                        f"({'images' if ndim == 3 else 'labels'}); check that the file is the one its name says")
    return tuple(dims)


def _check_idx_size(path: Path, data_bytes: int, dims: tuple[int, ...]) -> None:
    if data_bytes != math.prod(dims):
        raise DataError(f"{path} holds {data_bytes} data bytes but its header promises "
                        f"{math.prod(dims)} ({'x'.join(map(str, dims))}); the file is truncated or corrupt: "
                        "replace it with a fresh copy")


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(f"cannot read {path} ({err}); the file is truncated or corrupt: "
                     f"replace it with a fresh copy of {path.name}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: images (magic 2051, (N, rows, cols)) or labels (2049, (N,))."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise _unreadable(path, err) from None
    dims = _idx_dims(path, raw, magic)
    header = 4 * (1 + len(dims))
    _check_idx_size(path, len(raw) - header, dims)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def check_idx(path: Path, magic: int) -> tuple[int, ...]:
    """Check an IDX file (raw or ``.gz``; magic 2051 images, 2049 labels) as ``_read_idx`` would, without
    keeping its data; returns the dims of its header. A ``.gz`` is decompressed in chunks (checks its CRC).

    Raises:
        DataError: unreadable, truncated, corrupt or the wrong kind of IDX file (the message names it).
    """
    header = 4 * (4 if magic == 2051 else 2)
    try:
        if path.suffix != ".gz":
            with path.open("rb") as fh:
                dims = _idx_dims(path, fh.read(header), magic)
            size = path.stat().st_size - header
        else:
            with gzip.open(path) as fh:
                dims = _idx_dims(path, fh.read(header), magic)
                size = 0
                while chunk := fh.read(1 << 20):
                    size += len(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise _unreadable(path, err) from None
    _check_idx_size(path, size, dims)
    return dims


def check_mnist_pair(images: Path, labels: Path, n_images: int, n_labels: int) -> None:
    """An images/labels pair must hold as many labels as images, and some."""
    if n_images != n_labels or n_labels == 0:
        raise DataError(f"{images} holds {n_images} images but {labels} holds {n_labels} labels; "
                        "replace them with a matching, non-empty pair")


def _read_mnist_pair(images: Path, labels: Path) -> _Part:
    x, y = _read_idx(images, 2051), _read_idx(labels, 2049)
    check_mnist_pair(images, labels, len(x), len(y))
    if y.max() > 9:
        raise DataError(f"{labels} has labels up to {y.max()}, MNIST needs 0..9; replace it with a fresh copy")
    xt = torch.from_numpy(x.astype(np.float32)).div_(255.0).unsqueeze(1)  # (N, 1, rows, cols) in [0, 1]
    return _normalise(xt, _MNIST_STATS[:1], _MNIST_STATS[1:]), torch.from_numpy(y.astype(np.int64))


def _find_mnist(root: Path) -> dict[str, Path | None]:
    """Each of the four MNIST stems -> its first existing file (raw before .gz; root before MNIST/raw)."""
    folders = (root, root / "MNIST" / "raw")
    stems = [s for pair in _MNIST_FILES.values() for s in pair]
    cands = {s: [f / n for f in folders for n in (s, s + ".gz")] for s in stems}
    return {s: next((p for p in cands[s] if p.is_file()), None) for s in stems}


def _download_mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    try:
        MNIST(str(root), train=True, download=True)
    except Exception as err:  # offline: URLError, RuntimeError, ... all mean the same to the user
        raise DataError(f"could not download MNIST into {root / 'MNIST' / 'raw'} ({_reason(err)}); without internet, "
                        f"place the IDX files under {root}: {_MNIST_EXPECTED}") from None


def _usable_mnist(files: dict[str, Path | None]) -> bool:
    train = [files.get(s) for s in _MNIST_FILES["train"]]
    return all(files.get(s) for s in _MNIST_FILES["t10k"]) and (all(train) or not any(train))


def mnist_files(root: Path | None, *, download: bool = False) -> dict[str, tuple[Path, Path]]:
    """The MNIST IDX files the ``mnist`` loader reads under ``root`` (``hwnas.preflight`` checks the same ones).

    Each of ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte`` is looked up raw, then ``.gz``, in ``root`` and then ``root/MNIST/raw``; the
    ``t10k`` pair is required, the ``train`` pair optional (both or neither).

    Args:
        root: the data root (``--data-root``).
        download: let torchvision fetch the files into ``root`` when they are missing.

    Returns:
        ``{"t10k": (images, labels)}``, plus ``"train"`` when that pair is there.

    Raises:
        DataError: no root, a root that is a file or missing, or no usable set of files (names what it found).
    """
    root = _require_root(root, "mnist", _MNIST_EXPECTED, download)
    found = _find_mnist(root) if root.is_dir() else {}
    if not _usable_mnist(found) and download:
        _download_mnist(root)
        found = _find_mnist(root)
    if not _usable_mnist(found):
        have = ", ".join(str(p) for p in found.values() if p) or "none of them"
        raise DataError(f"mnist: no usable IDX files under {root}: looked for {' + '.join(_MNIST_FILES['train'])} "
                        f"(optional) and {' + '.join(_MNIST_FILES['t10k'])} (each raw or .gz) in {root} and "
                        f"{root / 'MNIST' / 'raw'}, found {have}; place the missing files there")
    return {split: (found[images], found[labels]) for split, (images, labels) in _MNIST_FILES.items()
            if found[images]}  # type: ignore[misc]


@DATASETS.register("mnist")
def _load_mnist(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool) -> _Loaded:
    files = mnist_files(root, download=download)
    test = _read_mnist_pair(*files["t10k"])
    if "train" in files:
        x, y = _read_mnist_pair(*files["train"])
        if x.shape[1:] != test[0].shape[1:]:
            raise DataError(f"MNIST train images under {root} are {tuple(x.shape[2:])} but t10k images are "
                            f"{tuple(test[0].shape[2:])}; replace them with files from one distribution")
        n_val = len(y) // 12  # 60,000 -> 55,000 / 5,000
        parts, source = [*_split(x, y, (len(y) - n_val, n_val)), test], "MNIST IDX train/t10k"
    else:
        x, y = test
        n_eval = len(y) // 5  # 10,000 -> 6,000 / 2,000 / 2,000
        parts = _split(x, y, (len(y) - 2 * n_eval, n_eval, n_eval))
        source = "MNIST t10k only (no train-* files: the 10,000 test images split 60/20/20, stratified)"
    parts = [(_fit_shape(xs, input_shape, "mnist"), ys) for xs, ys in parts]
    return _Loaded(tuple(parts), 10, source)  # type: ignore[arg-type]


def cifar10_files(root: Path | None, *, download: bool = False) -> list[Path]:
    """The batches the ``cifar10`` loader reads: ``root/cifar-10-batches-py/`` ``data_batch_1..5``, ``test_batch``.

    Raises:
        DataError: no root, a root that is a file or missing, or (unless ``download``) a missing batch.
    """
    root = _require_root(root, "cifar10", _CIFAR_EXPECTED, download)
    folder = root / "cifar-10-batches-py"
    files = [folder / n for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]]
    missing = [p.name for p in files if not p.is_file()]
    if missing and not download:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)} (needs data_batch_1..5 and test_batch): "
                        f"point --data-root at {_CIFAR_EXPECTED}, e.g. unpack cifar-10-python.tar.gz into {root}")
    return files


@DATASETS.register("cifar10")
def _load_cifar10(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool) -> _Loaded:
    files = cifar10_files(root, download=download)
    folder, missing = files[0].parent, not all(p.is_file() for p in files)
    root = folder.parent
    from torchvision.datasets import CIFAR10

    try:
        sets = [CIFAR10(str(root), train=train, download=download) for train in (True, False)]
    except Exception as err:  # corrupt pickles, failed md5 checks, or no network for download=True
        what = "download CIFAR-10 into" if missing else "read the CIFAR-10 batches in"
        raise DataError(f"could not {what} {folder} ({_reason(err)}); place an intact copy of cifar-10-batches-py/ "
                        f"(from cifar-10-python.tar.gz) under {root}") from None
    parts = []
    for ds in sets:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous().float().div_(255.0)  # (N, 3, 32, 32)
        parts.append((_normalise(x, _CIFAR_MEAN, _CIFAR_STD), torch.tensor(ds.targets, dtype=torch.int64)))
    x, y = parts[0]
    n_val = len(y) // 10  # 50,000 -> 45,000 / 5,000
    parts = [*_split(x, y, (len(y) - n_val, n_val)), parts[1]]
    parts = [(_fit_shape(xs, input_shape, "cifar10"), ys) for xs, ys in parts]
    return _Loaded(tuple(parts), 10, "CIFAR-10 (torchvision batches)")  # type: ignore[arg-type]


@DATASETS.register("fake")
def _load_fake(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool) -> _Loaded:
    shape = input_shape or (1, 28, 28)
    gen = torch.Generator().manual_seed(seed)
    parts = tuple((torch.randn((n, *shape), generator=gen), torch.randint(0, 10, (n,), generator=gen))
                  for n in (512, 128, 128))  # x (n, C, H, W) ~ N(0, 1), y (n,) uniform over 10 classes
    return _Loaded(parts, 10, f"random N(0,1) tensors, seed {seed}")  # type: ignore[arg-type]

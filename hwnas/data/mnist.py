"""``mnist``: the four IDX files (raw or ``.gz``, in the root or torchvision's ``MNIST/raw``), and the IDX
checks ``hwnas.preflight`` shares."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .core import (
    DATASETS,
    DIGIT_NAMES,
    DataOptions,
    Loaded,
    Part,
    Shape,
    as_options,
    fit_parts,
    normalise,
    reason,
    require_root,
    split,
    stats_for,
)

MNIST_STATS = (0.1307, 0.3081)
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_EXPECTED = (
    "a folder with train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz (or only the t10k-* pair; .gz or raw, directly or under MNIST/raw/)"
)


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


def _read_mnist_pair(images: Path, labels: Path) -> Part:
    """The pair as raw ``x`` (N, 1, rows, cols) in [0, 1] and ``y`` (N,) int64."""
    x, y = _read_idx(images, 2051), _read_idx(labels, 2049)
    check_mnist_pair(images, labels, len(x), len(y))
    if y.max() > 9:
        raise DataError(f"{labels} has labels up to {y.max()}, MNIST needs 0..9; replace it with a fresh copy")
    xt = torch.from_numpy(x.astype(np.float32)).div_(255.0).unsqueeze(1)  # (N, 1, rows, cols) in [0, 1]
    return xt, torch.from_numpy(y.astype(np.int64))


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
        raise DataError(f"could not download MNIST into {root / 'MNIST' / 'raw'} ({reason(err)}); without internet, "
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
    root = require_root(root, "mnist", _MNIST_EXPECTED, download)
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
def _load_mnist(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
                options: DataOptions | None = None) -> Loaded:
    options = as_options(options)
    files = mnist_files(root, download=download)
    test = _read_mnist_pair(*files["t10k"])
    if "train" in files:
        x, y = _read_mnist_pair(*files["train"])
        if x.shape[1:] != test[0].shape[1:]:
            raise DataError(f"MNIST train images under {root} are {tuple(x.shape[2:])} but t10k images are "
                            f"{tuple(test[0].shape[2:])}; replace them with files from one distribution")
        n_val = len(y) // 12  # 60,000 -> 55,000 / 5,000
        parts, source = [*split(x, y, (len(y) - n_val, n_val)), test], "MNIST IDX train/t10k"
    else:
        x, y = test
        n_eval = len(y) // 5  # 10,000 -> 6,000 / 2,000 / 2,000
        parts = split(x, y, (len(y) - 2 * n_eval, n_eval, n_eval))
        source = "MNIST t10k only (no train-* files: the 10,000 test images split 60/20/20, stratified)"
    mean, std = stats_for(options, 1, (MNIST_STATS[:1], MNIST_STATS[1:]), None, "mnist")
    parts = [(normalise(xs, mean, std), ys) for xs, ys in parts]
    size = (1, *options.input_size) if options.input_size else None
    parts, resize = fit_parts(parts, input_shape or size, "mnist")
    return Loaded(tuple(parts), 10, source, mean, std, DIGIT_NAMES, (0.0, 1.0), resize)  # type: ignore[arg-type]

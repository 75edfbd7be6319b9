"""The dataset contract: ``Splits``, the ``DATASETS`` registry, ``load_dataset``, ``make_loader`` and the
helpers every loader shares (fixed stratified splits, resizing, normalisation, the per-process cache).

A registered loader is called as ``loader(root=, seed=, input_shape=, download=, options=)`` (plus ``arg=``
for a parametrised name such as ``torchvision:FashionMNIST``) and returns a ``Loaded``: the three parts,
normalised, and what an export needs to ship the model (mean, std, class names, value range, resize rule).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ..errors import ConfigError, DataError
from ..registry import Registry

Shape = tuple[int, int, int]
Part = tuple[torch.Tensor, torch.Tensor]  # x (N, C, H, W) float32, y (N,) int64
_Part = Part

PARAMETRISED = {"torchvision"}  # families named ``FAMILY:NAME`` (the loader takes ``arg=NAME``)
DIGIT_NAMES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class Splits:
    """A dataset split three ways, ready for training.

    Each split is a ``TensorDataset(x, y)`` with ``x`` float32 ``(N, C, H, W)`` (normalised) and ``y``
    int64 ``(N,)`` in ``0..num_classes-1``; ``input_shape`` is ``(C, H, W)``.

    What an export needs to ship the model: a raw input ``r`` (in ``value_range``, after the ``resize`` rule)
    is fed to the model as ``(r - mean[c]) / std[c]`` per channel ``c``; output ``k`` is ``class_names[k]``.
    ``value_range`` is None where the data has none (``fake``: N(0, 1) tensors fed as they are).
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    input_shape: Shape
    num_classes: int
    name: str
    description: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = (0.0, 1.0)
    resize: str = "none"


@dataclass(frozen=True)
class Loaded:
    """What a registered loader returns before ``limit`` is applied."""

    parts: tuple[Part, Part, Part]  # train, val, test, normalised
    num_classes: int
    source: str  # the tail of ``Splits.description``
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = (0.0, 1.0)
    resize: str = "none"


_Loaded = Loaded


@dataclass(frozen=True)
class DataOptions:
    """Config-given data settings every loader honours (hashable: part of the cache key).

    ``input_size``: ``(H, W)`` every image is resized to (bilinear); ``mean``/``std``: the per-channel
    normalisation to apply instead of the dataset's known or computed statistics.
    """

    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


DATASETS: Registry[Callable[..., Loaded]] = Registry("dataset")


def dataset_loader(name: str) -> Callable[..., Loaded]:
    """The loader of ``name``: a registered name, or ``FAMILY:NAME`` for a parametrised family.

    Raises:
        UnknownNameError: an unknown name or family (lists the known ones).
        ConfigError: a family used without its ``:NAME``, or a plain dataset given one.
    """
    family, sep, arg = name.partition(":")
    loader = DATASETS.get(family if sep else name)
    if family in PARAMETRISED:
        if not arg:
            raise ConfigError(f"dataset {family!r} needs a dataset name: --dataset {family}:NAME, e.g. "
                              f"{family}:FashionMNIST")
        return functools.partial(loader, arg=arg)
    if sep:
        raise ConfigError(f"dataset {family!r} takes no ':{arg}'; use --dataset {family}")
    return loader


_CACHE: dict[tuple, Loaded] = {}  # this process's last loaded dataset (a pooled Ray worker's next shard)


def _signature(root: Path | None) -> tuple:
    """The files under ``root`` (three levels deep; or the file ``root``) with sizes and mtimes: a changed
    file reloads."""
    if root is None or not root.exists():
        return ()
    files = [root] if root.is_file() else [p for d in ("*", "*/*", "*/*/*") for p in root.glob(d) if p.is_file()]
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def _cached(name: str, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
            options: DataOptions) -> Loaded:
    """``dataset_loader(name)(...)``, kept for the next call with the same arguments and files: a pooled shard
    worker runs shards one after another and reads (and resizes) its data once."""
    key = (name, None if root is None else str(root.resolve()), seed, input_shape, download, options,
           _signature(root))
    if key not in _CACHE:
        kw = {"options": options} if options != DataOptions() else {}
        loaded = dataset_loader(name)(root=root, seed=seed, input_shape=input_shape, download=download, **kw)
        _CACHE.clear()
        _CACHE[key] = loaded
    return _CACHE[key]


def _options(input_size: Sequence[int] | None, mean: Sequence[float] | None,
             std: Sequence[float] | None) -> DataOptions:
    if input_size is not None:
        input_size = tuple(int(v) for v in input_size)
        if len(input_size) != 2 or min(input_size) < 1:
            raise ConfigError(f"input_size must be two positive ints [H, W], got {list(input_size)}; "
                              "e.g. --input-size 32x32")
    if (mean is None) != (std is None):
        raise ConfigError("normalize_mean and normalize_std go together: give both (one value per channel)")
    if mean is not None and std is not None:
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(mean) != len(std) or not mean or min(std) <= 0:
            raise ConfigError(f"normalize_mean {list(mean)} and normalize_std {list(std)} must list one value per "
                              "channel each, std > 0")
    return DataOptions(input_size, mean, std)  # type: ignore[arg-type]


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    seed: int = 0,
    input_shape: Shape | None = None,
    download: bool = False,
    limit: int | None = None,
    input_size: Sequence[int] | None = None,
    normalize_mean: Sequence[float] | None = None,
    normalize_std: Sequence[float] | None = None,
) -> Splits:
    """Load a registered dataset as normalised train/val/test tensors.

    Args:
        name: a name in ``DATASETS`` (``digits``, ``mnist``, ``cifar10``, ``fake``, ``imagefolder``, ``npz``)
            or ``torchvision:NAME``.
        root: data folder (or ``.npz`` file) of the file-based datasets (ignored by ``digits`` and ``fake``).
        seed: seeds the ``fake`` tensors; real-data splits are fixed and ignore it.
        input_shape: ``(C, H, W)``; ``fake`` generates it, real data is resized bilinearly to ``(H, W)``
            (``C`` must match). ``None`` keeps the native shape (``digits``: 1x28x28).
        download: let torchvision download ``mnist``/``cifar10``/``torchvision:NAME`` into ``root``.
        limit: keep at most this many samples of each split (the first ones; for quick tests).
        input_size: ``(H, W)`` every image is resized to (``imagefolder`` needs it for mixed sizes).
        normalize_mean: per-channel mean to normalise with (with ``normalize_std``) instead of the dataset's
            known statistics or those of its training split.
        normalize_std: per-channel standard deviation (> 0).

    Returns:
        The ``Splits``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        DataError: the data is missing, unreadable or malformed (the message names the file/folder).
        ConfigError: ``input_shape``, ``input_size``, the normalisation or ``limit`` cannot work.
    """
    dataset_loader(name)  # an unknown name fails before anything else
    if input_shape is not None:
        input_shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(f"input_shape must be three positive ints (C, H, W), got {input_shape}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of samples per split, got {limit}")
    options = _options(input_size, normalize_mean, normalize_std)
    path = None if root is None else Path(root).expanduser()
    ld = _cached(name, path, seed, input_shape, download, options)
    parts = [(x[:limit].clone(), y[:limit].clone()) if limit else (x, y) for x, y in ld.parts]
    sizes = "/".join(str(len(y)) for _, y in parts)
    c, h, w = (int(v) for v in parts[0][0].shape[1:])
    desc = f"{name}: {sizes} train/val/test, {c}x{h}x{w}, {ld.source}"
    if limit:
        desc += f" (limit {limit} per split)"
    train, val, test = (TensorDataset(x, y) for x, y in parts)
    return Splits(train, val, test, (c, h, w), ld.num_classes, name, desc, tuple(ld.mean), tuple(ld.std),
                  tuple(ld.class_names), ld.value_range, ld.resize)


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
        A ``DataLoader`` yielding ``(x (B, C, H, W), y (B,))`` (``hwnas.data.augment_batches`` augments them).

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


def split(x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, ...]) -> list[Part]:
    """``(x, y)`` split by ``_split_indices`` (fixed, stratified) into parts of ``sizes``."""
    return [(x[idx], y[idx]) for idx in map(torch.from_numpy, _split_indices(y.numpy(), sizes))]


_split = split


def split_three(x: torch.Tensor, y: torch.Tensor, what: str) -> list[Part]:
    """All of a dataset split 70/15/15 (fixed, stratified; val and test at least one sample each)."""
    n = len(y)
    if n < 3:
        raise DataError(f"{what} holds {n} sample(s), too few to split into train/val/test; add more (>= 3)")
    n_eval = max(1, math.ceil(0.15 * n))
    return split(x, y, (n - 2 * n_eval, n_eval, n_eval))


def split_val(train: Part, test: Part, what: str) -> list[Part]:
    """A given train/test pair with a validation split (10%, fixed, stratified) taken from train."""
    x, y = train
    if len(y) < 2:
        raise DataError(f"{what}: the train split holds {len(y)} sample(s), too few to take a validation split "
                        "from; add more (>= 2)")
    n_val = max(1, math.ceil(0.1 * len(y)))
    return [*split(x, y, (len(y) - n_val, n_val)), test]


def fit_shape(x: torch.Tensor, shape: Shape | None, name: str) -> torch.Tensor:
    """Resize ``x`` (N, C, H, W) bilinearly to ``shape[1:]``; the channel count must already match."""
    if shape is None:
        return x
    if shape[0] != x.shape[1]:
        raise ConfigError(f"{name} images have {x.shape[1]} channel(s) but input_shape asks for {shape[0]}; "
                          f"use input_shape=({x.shape[1]}, H, W)")
    if tuple(shape[1:]) != tuple(x.shape[2:]):
        x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
    return x


_fit_shape = fit_shape


def fit_parts(parts: Sequence[Part], shape: Shape | None, name: str, resize: str = "none") -> tuple[list[Part], str]:
    """Every part resized by ``fit_shape``, and the resize rule with that step added."""
    before = tuple(parts[0][0].shape[2:])
    out = [(fit_shape(x, shape, name), y) for x, y in parts]
    if shape is not None and tuple(shape[1:]) != before:
        step = f"bilinear to {shape[1]}x{shape[2]}"
        resize = step if resize == "none" else f"{resize}, then {step}"
    return out, resize


def resize_to(x: torch.Tensor, size: tuple[int, int] | None) -> tuple[torch.Tensor, str]:
    """``x`` (N, C, H, W) resized bilinearly to ``size`` (H, W) when given and different, with the rule."""
    if size is None or tuple(x.shape[2:]) == tuple(size):
        return x, "none"
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False), f"bilinear to {size[0]}x{size[1]}"


def require_root(root: Path | None, name: str, expected: str, download: bool) -> Path:
    if root is None:
        raise DataError(f"--data-root is required for {name}: point it at {expected}; "
                        "the built-in dataset is 'digits'")
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: point --data-root at {expected}")
    if not root.exists() and not download:
        raise DataError(f"data root {root} does not exist: point --data-root at {expected}")
    return root


_require_root = require_root


def reason(err: Exception) -> str:
    """The last non-empty line of an exception (torchvision's download errors end with the real cause)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


_reason = reason


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean[c]) / std[c]`` per channel, in place; ``x`` is (N, C, H, W)."""
    shape = (1, len(mean), 1, 1)
    return x.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


_normalise = normalise


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``x`` (N, C, H, W); a constant channel gets std 1."""
    mean = x.mean(dim=(0, 2, 3), dtype=torch.float64)
    std = x.double().std(dim=(0, 2, 3))
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def stats_for(options: DataOptions, channels: int, known: tuple[Sequence[float], Sequence[float]] | None,
              train_x: torch.Tensor | None, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation to apply: the config's (``options``), else ``known``, else ``train_x``'s statistics.

    Raises:
        ConfigError: the config's lists do not have one value per channel.
    """
    if options.mean is not None and options.std is not None:
        if len(options.mean) != channels:
            raise ConfigError(f"normalize_mean/normalize_std list {len(options.mean)} value(s) but {name} images have "
                              f"{channels} channel(s); give one value per channel")
        return options.mean, options.std
    if known is not None:
        return tuple(known[0]), tuple(known[1])
    assert train_x is not None
    return channel_stats(train_x)


def finish(parts: Sequence[Part], options: DataOptions, name: str, *, num_classes: int, source: str,
           class_names: Sequence[str], value_range: tuple[float, float] | None, resize: str,
           known: tuple[Sequence[float], Sequence[float]] | None = None) -> Loaded:
    """Normalise raw ``parts`` (train statistics unless ``options`` or ``known`` give them) into a ``Loaded``."""
    train_x = parts[0][0]
    mean, std = stats_for(options, int(train_x.shape[1]), known, train_x, name)
    done = tuple((normalise(x, mean, std), y) for x, y in parts)
    return Loaded(done, num_classes, source, mean, std, tuple(class_names), value_range, resize)  # type: ignore[arg-type]


def as_options(options: DataOptions | None) -> DataOptions:
    return options if options is not None else DataOptions()

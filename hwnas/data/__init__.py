"""Datasets: ``digits`` (built in), ``mnist`` (IDX files), ``cifar10`` (python batches), ``fake``, and bring your
own: ``imagefolder`` (class-per-folder images), ``npz`` (arrays) and ``torchvision:NAME``.

Every loader yields normalised float32 images ``(N, C, H, W)`` and int64 labels ``(N,)`` split into
train/val/test, with what an export needs (``Splits.mean``/``std``/``class_names``/``value_range``/``resize``).
Real-data splits are fixed (they never depend on ``seed``); ``seed`` only drives the ``fake`` tensors, the
shuffling in :func:`make_loader` and the training-batch augmentation (:func:`augment_batches`).

One module per source: ``core`` (the contract, registry, splits, cache), ``builtin`` (digits, fake), ``mnist``,
``cifar``, ``imagefolder``, ``npz``, ``torchvision_any``; ``augment`` (crop/flip of training batches).
"""

from __future__ import annotations

from . import builtin, cifar, imagefolder, mnist, npz, torchvision_any  # noqa: F401 (register the datasets)
from .augment import Augment, augment_batches, augment_for
from .cifar import SafeUnpickler, cifar10_files
from .core import (
    _CACHE,
    DATASETS,
    DataOptions,
    Splits,
    _split_indices,
    dataset_loader,
    load_dataset,
    make_loader,
)
from .imagefolder import check_headers, scan
from .mnist import check_idx, check_mnist_pair, mnist_files
from .npz import open_npz

__all__ = [
    "DATASETS", "Augment", "DataOptions", "SafeUnpickler", "Splits", "_CACHE", "_split_indices", "augment_batches",
    "augment_for", "check_dataset", "check_headers", "check_idx", "check_mnist_pair", "cifar10_files",
    "data_options", "dataset_loader", "load_dataset", "make_loader", "mnist_files", "open_npz", "scan",
]


def check_dataset(name: str) -> None:
    """Fail early on a dataset name no loader takes (``UnknownNameError``/``ConfigError``); loads nothing."""
    dataset_loader(name)
    if name.startswith("torchvision:"):
        torchvision_any.dataset_class(name.partition(":")[2])


def data_options(cfg) -> dict:
    """The ``load_dataset`` keywords a config (``SearchConfig``/``TrainConfig``, or its dict) sets beyond the
    dataset, root, seed and limit: ``download``, ``input_size``, ``normalize_mean``, ``normalize_std``."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    return {"download": bool(get("download", False)), "input_size": get("input_size"),
            "normalize_mean": get("normalize_mean"), "normalize_std": get("normalize_std")}

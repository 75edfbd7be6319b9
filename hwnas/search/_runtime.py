"""Run-time plumbing shared by search and retraining: devices, seeds, threads, evaluation."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda:0`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader,
             device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``forward`` over ``loader``."""
    loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = forward(x)
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return loss / max(n, 1), correct / max(n, 1)


def load_for(space, dataset: str, root, seed: int, limit, **options):
    """Load ``dataset`` for ``space``; ``fake`` data takes the space's input shape.

    ``options``: more ``load_dataset`` keywords (``hwnas.data.data_options(cfg)``: download, input_size,
    normalize_mean, normalize_std).
    """
    from ..data import load_dataset

    shape = space.input_shape if dataset == "fake" else None
    splits = load_dataset(dataset, root=root, seed=seed, input_shape=shape, limit=limit, **options)
    check_data_fits(space, splits)
    return splits


def check_data_fits(space, splits) -> None:
    """The space and the dataset must agree on input shape and number of classes."""
    if tuple(splits.input_shape) != tuple(space.input_shape) or splits.num_classes != space.num_classes:
        shape = "x".join(map(str, space.input_shape))
        fixes = []
        if tuple(splits.input_shape[1:]) != tuple(space.input_shape[1:]):
            fixes.append(f"resize with --input-size {space.input_shape[1]}x{space.input_shape[2]}")
        if splits.input_shape[0] != space.input_shape[0]:
            fixes.append(f"use a space that takes {splits.input_shape[0]}-channel images (seed-cnn: 1, mbconv: 3)")
        if splits.num_classes != space.num_classes:
            fixes.append(f"set the class count where the space takes one (a config with space: mbconv and "
                         f"space_args: {{num_classes: {splits.num_classes}}})")
        raise ConfigError(
            f"space {space.name!r} takes {shape} inputs and {space.num_classes} classes, but dataset "
            f"{splits.name!r} gives {'x'.join(map(str, splits.input_shape))} and {splits.num_classes}; "
            f"{'; '.join(fixes)}; or pick a matching dataset (seed-cnn: digits, mnist; mbconv: cifar10)")

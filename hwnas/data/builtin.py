"""The datasets that need no files: ``digits`` (scikit-learn's 8x8 digits, upsampled) and ``fake`` (noise)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .core import (
    DATASETS,
    DIGIT_NAMES,
    DataOptions,
    Loaded,
    Shape,
    as_options,
    fit_shape,
    normalise,
    split,
    stats_for,
)


@DATASETS.register("digits")
def _load_digits(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
                 options: DataOptions | None = None) -> Loaded:
    from sklearn.datasets import load_digits

    options = as_options(options)
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    size = (1, *options.input_size) if options.input_size else (1, 28, 28)
    x = fit_shape(x, input_shape or size, "digits")  # (1797, 1, H, W)
    y = torch.from_numpy(bunch.target).long()  # (1797,)
    n_eval = math.ceil(0.2 * len(y))  # 360 val, 360 test
    parts = split(x, y, (len(y) - 2 * n_eval, n_eval, n_eval))
    xtr = parts[0][0]
    if options.mean is not None and options.std is not None:
        mean, std = stats_for(options, 1, None, xtr, "digits")
    else:
        mean, std = xtr.mean(dim=(0, 2, 3)).tolist(), xtr.std(dim=(0, 2, 3)).tolist()
    parts = [(normalise(xs, mean, std), ys) for xs, ys in parts]
    h, w = x.shape[2:]
    return Loaded(tuple(parts), 10, "sklearn load_digits upsampled", tuple(mean), tuple(std),  # type: ignore[arg-type]
                  DIGIT_NAMES, (0.0, 1.0), f"bilinear 8x8 to {h}x{w} (align_corners=False)")


@DATASETS.register("fake")
def _load_fake(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
               options: DataOptions | None = None) -> Loaded:
    options = as_options(options)
    shape = input_shape or ((1, *options.input_size) if options.input_size else (1, 28, 28))
    gen = torch.Generator().manual_seed(seed)
    parts = tuple((torch.randn((n, *shape), generator=gen), torch.randint(0, 10, (n,), generator=gen))
                  for n in (512, 128, 128))  # x (n, C, H, W) ~ N(0, 1), y (n,) uniform over 10 classes
    c = shape[0]
    return Loaded(parts, 10, f"random N(0,1) tensors, seed {seed}", (0.0,) * c, (1.0,) * c,  # type: ignore[arg-type]
                  DIGIT_NAMES, None, "none")

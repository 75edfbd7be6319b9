"""Training-batch augmentation: random crop with padding and horizontal flip, off by default.

Applied to the train split's batches only (the search's weight steps and retraining), on the normalised
tensors: a crop pads each image by ``crop`` pixels of raw value 0 (``-mean/std`` once normalised, as
torchvision's ``RandomCrop(padding=crop)`` before ``Normalize``) and cuts a random ``H x W`` window; a flip
mirrors each image left-right with probability 1/2. The draws come from their own ``torch.Generator`` seeded
with ``seed + AUGMENT_SEED_OFFSET``: the same seed gives the same augmented batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

AUGMENT_SEED_OFFSET = 104729  # keeps the augmentation's stream apart from the shuffling stream of the same seed


@dataclass(frozen=True)
class Augment:
    """What to do to a training batch: ``crop`` pixels of padding (0: no crop), ``flip`` left-right; ``fill`` is
    the per-channel value of the padding (normalised raw 0)."""

    crop: int = 0
    flip: bool = False
    fill: tuple[float, ...] = ()

    @property
    def active(self) -> bool:
        return self.crop > 0 or self.flip

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``x`` (B, C, H, W) augmented with draws from ``gen``; returns a new tensor."""
        b, c, h, w = x.shape
        if self.crop > 0:
            p = self.crop
            fill = torch.tensor(self.fill or (0.0,) * c, dtype=x.dtype).view(1, c, 1, 1)
            canvas = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()  # (B, C, H + 2p, W + 2p)
            canvas[:, :, p:p + h, p:p + w] = x
            oy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=gen)
            rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
            cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
            x = canvas.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            mask = torch.rand(b, generator=gen) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x.contiguous()


def augment_for(cfg: Any, mean: Sequence[float] = (), std: Sequence[float] = ()) -> Augment | None:
    """The ``Augment`` of a config's ``augment_crop``/``augment_flip`` (None when both are off); the crop's
    padding is raw 0 under the normalisation ``mean``/``std`` (``Splits.mean``/``Splits.std``)."""
    crop, flip = int(getattr(cfg, "augment_crop", 0) or 0), bool(getattr(cfg, "augment_flip", False))
    if not (crop or flip):
        return None
    fill = tuple(-m / s for m, s in zip(mean, std, strict=True)) if mean and std else ()
    return Augment(crop, flip, fill)


class _Augmented:
    """A loader whose batches pass through ``aug``; ``len`` is the loader's."""

    def __init__(self, loader, aug: Augment, seed: int) -> None:
        self.loader, self.aug, self.seed = loader, aug, seed

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed + AUGMENT_SEED_OFFSET)
        for x, y in self.loader:
            yield self.aug(x, gen), y


def augment_batches(loader, aug: Augment | None, seed: int):
    """``loader`` itself when ``aug`` is None or does nothing, else a loader of augmented batches whose draws
    depend only on ``seed`` (each pass over it starts the same stream again)."""
    if aug is None or not aug.active:
        return loader
    return _Augmented(loader, aug, seed)

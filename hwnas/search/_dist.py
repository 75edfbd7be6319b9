"""Data parallelism for one supernet: the same search on every rank, each rank on its slice of a batch.

Every rank draws the same architecture sample (the Gumbel generator is seeded identically), computes
gradients on ``batch[rank::world]`` and averages them with an all-reduce before each optimiser step,
so weights, architecture logits, the hardware term's lambda and every optimiser state stay identical on
all ranks: the ranks cannot derive different archs. ``check_identical`` verifies it each epoch.

``SINGLE`` is the one-process case (no collective calls); ``DataParallel`` needs an initialised
``torch.distributed`` process group (gloo on CPU, nccl on GPU), which Ray Train sets up.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as tdist
from torch import nn


class Single:
    """One process: every operation is the identity."""

    rank, world = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tensors

    def average_grads(self, params: Iterable[nn.Parameter]) -> None:
        pass

    def mean(self, value: float) -> float:
        return value

    def average_buffers(self, module: nn.Module) -> None:
        pass

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        pass

    def check_identical(self, tensors: Iterable[torch.Tensor], what: str) -> float:
        return 0.0


SINGLE = Single()


class DataParallel(Single):
    """Ranks of the current ``torch.distributed`` process group."""

    def __init__(self) -> None:
        if not tdist.is_available() or not tdist.is_initialized():
            raise RuntimeError("DataParallel needs an initialised torch.distributed process group")
        self.rank, self.world = tdist.get_rank(), tdist.get_world_size()

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's rows of each batch tensor (strided, so every rank gets a share of every class)."""
        return tuple(t[self.rank::self.world] for t in tensors)

    def average_grads(self, params: Iterable[nn.Parameter]) -> None:
        """All-reduce the mean of the gradients that exist (every rank ran the same sample, so the same set)."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        tdist.all_reduce(t)
        return float(t) / self.world

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics saw different sub-batches)."""
        for b in module.buffers():
            if b.is_floating_point():
                tdist.all_reduce(b)
                b /= self.world

    def broadcast(self, tensors: Iterable[torch.Tensor]) -> None:
        """Copy rank 0's values into every rank's tensors (start of a run, after a resume)."""
        with torch.no_grad():
            for t in tensors:
                tdist.broadcast(t.data, src=0)

    def check_identical(self, tensors: Iterable[torch.Tensor], what: str) -> float:
        """The largest difference of any rank's ``tensors`` from rank 0's: 0.0, else this raises."""
        mine = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        ref = mine.clone()
        tdist.broadcast(ref, src=0)
        diff = (mine - ref).abs().max().reshape(1)
        tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
        if float(diff) != 0.0:
            raise RuntimeError(f"{what} diverged across the {self.world} data-parallel ranks (max |diff| "
                               f"{float(diff):.3g}); this is a bug in hwnas, please report it")
        return float(diff)

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")

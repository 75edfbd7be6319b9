"""``--runner local``: this host, in-process, on one quiet pinned core (``quiet.py``), as ``hwnas profile``
always did."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

import onnxruntime as ort

from ..protocol import Protocol, Result, host_info
from ..quiet import measure_batch, pinned
from .base import Item, OnResults, Runner


class LocalRunner(Runner):
    """Times models on this host: one core (``protocol.pin_core`` or the idlest), quiet batches."""

    spec = "local"

    def _fingerprint(self, protocol: Protocol) -> dict[str, Any]:
        return {**host_info(protocol), "os": platform.platform(), "providers": list(ort.get_available_providers()),
                "pinning": True}

    def where(self) -> str:
        return "this host"

    def measure(self, items: Sequence[Item], protocol: Protocol, *, job: str, batch: int = 8,
                on_results: OnResults | None = None) -> dict[str, Result]:
        out: dict[str, Result] = {}
        with pinned(protocol.pin_core) as core:
            for s in range(0, len(items), batch):
                chunk = items[s:s + batch]
                models = [build() for _, build in chunk]
                rows = [(name, Result(r.median_ms, r.spread, r.trial_ms))
                        for (name, _), r in zip(chunk, measure_batch(models, protocol, core), strict=True)]
                out.update(rows)
                if on_results is not None:
                    on_results(rows)
        return out

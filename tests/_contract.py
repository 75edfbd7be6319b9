"""The space a contract test (parametrised over the registry) builds: small enough for a CPU test.

``proxyless`` is ImageNet-sized (3x224x224, 1000 classes): its contract tests build it at 32x32 with 10
classes (same choices, layers and units; a forward at 224 takes seconds per path on this CPU).
"""

from __future__ import annotations

from hwnas.space import SearchSpace, get_space

CONTRACT_ARGS = {"proxyless": {"input_size": 32, "num_classes": 10}}


def contract_space(name: str) -> SearchSpace:
    """``get_space(name)`` at the contract tests' size (``CONTRACT_ARGS``)."""
    return get_space(name, **CONTRACT_ARGS.get(name, {}))

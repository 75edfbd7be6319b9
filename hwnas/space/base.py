"""The search-space contract: labelled choices + a chain of layer specs, declared once.

Everything else (plain modules, the supernet, latency units, enumeration, sampling, ids, JSON)
derives from one ``SearchSpace`` object.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import random
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import HwnasError
from .ops import Spec

Arch = dict[str, Any]


class ArchError(HwnasError, ValueError):
    """An arch that does not belong to its space (unknown label, value outside its choice, ...)."""


_MISSING = object()


def _same_choice(value: Any, choice: Any) -> bool:
    """``value`` is ``choice`` for an arch: equal and of the same kind (``64.0``/``True`` are not ``64``/``1``)."""
    if isinstance(choice, bool) or isinstance(value, bool):
        return type(value) is type(choice) and value == choice
    if isinstance(choice, numbers.Integral):
        return isinstance(value, numbers.Integral) and value == choice
    if isinstance(choice, float):
        return isinstance(value, numbers.Real) and value == choice
    return type(value) is type(choice) and value == choice


@dataclass(frozen=True)
class Choice:
    """A discrete, labelled choice: ``label`` takes one of ``values``."""

    label: str
    values: tuple

    def __post_init__(self) -> None:
        if len(self.values) < 1 or len(set(self.values)) != len(self.values):
            raise ValueError(f"choice {self.label!r} needs distinct values, got {self.values!r}")


@dataclass(frozen=True)
class Continuous:
    """A continuous hyperparameter in ``[low, high]``, learned by gradient descent when enabled."""

    label: str
    low: float
    high: float
    init: float


@dataclass(frozen=True)
class Unit:
    """A latency unit: consecutive layers timed together, keyed by the labels it depends on.

    ``labels`` holds the unit's own choices and those that set its input shape, sorted.
    """

    name: str
    layers: tuple[str, ...]
    labels: tuple[str, ...]

    def key(self, arch: Mapping[str, Any]) -> str:
        """Table key of this unit for ``arch``: ``'conv2|C_i=16,C_o=32,k=3'`` (``'stem'`` if no labels)."""
        if not self.labels:
            return self.name
        return self.name + "|" + ",".join(f"{lab}={arch[lab]}" for lab in self.labels)


@dataclass(frozen=True)
class SearchSpace:
    """A chain network whose layers read labelled choices.

    Args:
        name: registry name (part of every arch id).
        input_shape: ``(C, H, W)`` of one sample.
        num_classes: size of the output.
        choices: the discrete choices, in declaration order.
        layers: the chain of layer specs; parameters may be ``Ref(label)``.
        units: ``(unit name, layer names)`` groups used for latency tables; together they cover every
            layer with parameters or cost, in order.
        continuous: optional continuous hyperparameters (off unless enabled in the search config).
        description: one line for ``hwnas spaces``.
        args: the factory arguments (``space_args``) that built it, those equal to a default left out; part
            of every arch id, so the same arch of ``mbconv()`` and ``mbconv(widths=...)`` get different ids.
        latency_args: None when latency tables describe this space as built; else the factory arguments
            (over ``args``) of the deployment geometry they describe, with the same choices: ``proxyless``
            trained at 32x32 on 10 classes still predicts latency at 224x224 on 1000 (``latency_space``).
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    choices: tuple[Choice, ...]
    layers: tuple[Spec, ...]
    units: tuple[tuple[str, tuple[str, ...]], ...]
    continuous: tuple[Continuous, ...] = ()
    description: str = ""
    args: dict[str, Any] = field(default_factory=dict)  # factory arguments that differ from its defaults
    latency_args: dict[str, Any] | None = None  # factory arguments of the geometry its latency tables describe
    _by_label: dict[str, Choice] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_label.update({c.label: c for c in self.choices})
        used = set().union(*(s.labels() for s in self.layers))
        if used - set(self._by_label):
            raise ValueError(f"space {self.name}: layers read undeclared labels {sorted(used - set(self._by_label))}")
        names = [s.name for s in self.layers]
        covered = [n for _, layer_names in self.units for n in layer_names]
        if covered != names:
            raise ValueError(f"space {self.name}: units must cover the layers in order: {covered} != {names}")

    # ---- choices -----------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.choices]

    def choice(self, label: str) -> Choice:
        return self._by_label[label]

    @property
    def size(self) -> int:
        """Number of distinct archs."""
        return math.prod(len(c.values) for c in self.choices)

    def enumerate(self) -> Iterator[Arch]:
        """Yield every arch, in a fixed order (lazily: mbconv spaces are large)."""
        for combo in itertools.product(*(c.values for c in self.choices)):
            yield dict(zip(self.labels, combo, strict=True))

    def split(self, parts: int) -> list[dict[str, list[Any]]]:
        """``parts`` disjoint sub-spaces that cover the space, as ``{label: values}`` restrictions.

        The label with the most values (the first such) is cut into ``parts`` contiguous groups of
        near-equal size; with values ordered small to large, each part is a cheaper or costlier region.
        """
        if parts == 1:
            return [{}]
        widest = max(self.choices, key=lambda c: len(c.values))
        n = len(widest.values)
        if parts > n:
            raise ValueError(f"space {self.name} splits into at most {n} parts (label {widest.label!r} has "
                             f"{n} values); got {parts}")
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        return [{widest.label: list(widest.values[bounds[i]:bounds[i + 1]])} for i in range(parts)]

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random arch."""
        return {c.label: rng.choice(c.values) for c in self.choices}

    def validate(self, arch: Mapping[str, Any]) -> Arch:
        """Check ``arch`` against the space and return it in declaration order.

        A value must be a choice of the same kind: ``64.0`` or ``True`` is not the int choice ``64`` or ``1``
        (other integer types, e.g. numpy's, are; the returned arch holds the declared values).

        Raises:
            ArchError: unknown or missing label, or a value outside its choice.
        """
        unknown = sorted(set(arch) - set(self._by_label))
        if unknown:
            raise ArchError(f"arch has label(s) {unknown} that space {self.name!r} does not declare; "
                            f"its labels are {self.labels}")
        missing = [lab for lab in self.labels if lab not in arch]
        if missing:
            raise ArchError(f"arch is missing label(s) {missing} of space {self.name!r}")
        out = {}
        for c in self.choices:
            v = arch[c.label]
            match = next((x for x in c.values if _same_choice(v, x)), _MISSING)
            if match is _MISSING:
                kinds = sorted({type(x).__name__ for x in c.values})
                kind = (f" (a {type(v).__name__}; the values of {c.label} are {' or '.join(kinds)})"
                        if any(v == x for x in c.values) else "")
                raise ArchError(f"{c.label}={v!r} is not a choice of space {self.name!r}{kind}; "
                                f"pick one of {list(c.values)}")
            out[c.label] = match
        return out

    # ---- ids and JSON ------------------------------------------------------------------------------
    def arch_id(self, arch: Mapping[str, Any]) -> str:
        """Stable id: first 12 hex digits of sha256 over the space name, its ``args`` (when any) and the sorted arch."""
        key = {"space": self.name, "arch": self.validate(arch), **({"args": self.args} if self.args else {})}
        payload = json.dumps(key, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def to_json(self, arch: Mapping[str, Any], hparams: Mapping[str, float] | None = None, **extra: Any) -> dict:
        """The arch file format: ``{"space", "space_args", "arch", "arch_id", "hparams", ...extra}``."""
        arch = self.validate(arch)
        return {"space": self.name, "space_args": dict(self.args), "arch": arch, "arch_id": self.arch_id(arch), "hparams": dict(hparams or {}), **extra}

    def from_json(self, obj: Mapping[str, Any]) -> tuple[Arch, dict[str, float]]:
        """Parse the arch file format. Raises ArchError when it belongs to another space or is invalid."""
        if obj.get("space") != self.name:
            raise ArchError(f"arch file is for space {obj.get('space')!r}, not {self.name!r}")
        if not isinstance(obj.get("arch"), dict):
            raise ArchError("arch file has no 'arch' object")
        known = ", ".join(f"{c.label} in [{c.low:g}, {c.high:g}]" for c in self.continuous) or "none"
        raw = obj.get("hparams") or {}
        if not isinstance(raw, dict):
            raise ArchError(f"arch file 'hparams' must be a mapping of name to number, got {raw!r}; the "
                            f"hyperparameters of space {self.name!r}: {known}")
        hparams = {}
        for k, v in raw.items():
            spec = next((c for c in self.continuous if c.label == k), None)
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if spec is None or not number or not spec.low <= v <= spec.high:
                raise ArchError(f"hyperparameter {k}={v!r} is not in space {self.name!r}; its hyperparameters "
                                f"(finite numbers): {known}")
            hparams[k] = float(v)
        return self.validate(obj["arch"]), hparams

    # ---- shapes and modules ------------------------------------------------------------------------
    def shapes(self, arch: Mapping[str, Any]) -> list[tuple[int, ...]]:
        """Input shape of every layer, then the output shape (len(layers) + 1 entries)."""
        shape: tuple[int, ...] = self.input_shape
        out = [shape]
        for spec in self.layers:
            shape = spec.out_shape(arch, shape)
            out.append(shape)
        return out

    def build(self, arch: Mapping[str, Any], hparams: Mapping[str, float] | None = None) -> nn.Sequential:
        """The plain network for ``arch``: an ``nn.Sequential`` whose children are named after the layers."""
        arch = self.validate(arch)
        shapes = self.shapes(arch)
        mods = OrderedDict((s.name, s.build(arch, shapes[i], hparams or {})) for i, s in enumerate(self.layers))
        return nn.Sequential(mods)

    # ---- latency units -----------------------------------------------------------------------------
    def latency_space(self) -> SearchSpace:
        """The space whose latency tables this one's archs are predicted with: itself, or the same choices
        at the geometry ``latency_args`` gives (the space's training size and class count aside).

        Raises:
            ValueError: ``latency_args`` build a space with other choices (a factory bug).
        """
        if self.latency_args is None:
            return self
        from . import get_space

        target = get_space(self.name, **{**self.args, **self.latency_args})
        if [(c.label, c.values) for c in target.choices] != [(c.label, c.values) for c in self.choices]:
            raise ValueError(f"space {self.name}: latency_args {self.latency_args} change its choices")
        return target

    def latency_units(self) -> list[Unit]:
        """Units with the labels each depends on: its own, plus those that set its input shape.

        Input-shape dependencies are tracked through the chain: channel dependencies are replaced by a
        layer that sets the width, spatial ones accumulate until flattened or pooled away.
        """
        layer_idx = {s.name: i for i, s in enumerate(self.layers)}
        deps_in = self.input_deps()
        units = []
        for name, layer_names in self.units:
            first = layer_idx[layer_names[0]]
            labs = set(deps_in[first]).union(*(self.layers[layer_idx[n]].labels() for n in layer_names))
            units.append(Unit(name, tuple(layer_names), tuple(sorted(labs))))
        return units

    def input_deps(self) -> list[frozenset[str]]:
        """For each layer, the labels its input shape depends on (channels and spatial size)."""
        deps: list[frozenset[str]] = []
        chan: set[str] = set()
        spatial: set[str] = set()
        for spec in self.layers:
            deps.append(frozenset(chan | spatial))
            chan, spatial = spec.propagate(chan, spatial)
        return deps

    def input_shapes(self, i: int) -> set[tuple[int, ...]]:
        """Every input shape layer ``i`` can see, over all values of the labels that set it."""
        labels = sorted(self.input_deps()[i])
        base = {c.label: c.values[0] for c in self.choices}
        out = set()
        for combo in itertools.product(*(self.choice(lab).values for lab in labels)):
            out.add(self.shapes({**base, **dict(zip(labels, combo, strict=True))})[i])
        return out

    def unit_entries(self, unit: Unit) -> Iterator[dict[str, Any]]:
        """Every assignment of the unit's labels (the rows of its latency table)."""
        for combo in itertools.product(*(self.choice(lab).values for lab in unit.labels)):
            yield dict(zip(unit.labels, combo, strict=True))

    def build_unit(self, unit: Unit, values: Mapping[str, Any]) -> tuple[nn.Sequential, tuple[int, ...]]:
        """The plain layers of ``unit`` for the given label values and the input shape they take."""
        arch = {c.label: values.get(c.label, c.values[0]) for c in self.choices}
        full = self.build(arch)
        shapes = self.shapes(arch)
        idx = [i for i, s in enumerate(self.layers) if s.name in unit.layers]
        mods = OrderedDict((self.layers[i].name, full[i]) for i in idx)
        return nn.Sequential(mods), shapes[idx[0]]

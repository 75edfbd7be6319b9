"""Configs as dataclasses, validated in ``__post_init__`` with messages that say what to do.

YAML files and CLI flags only fill these; ``to_dict`` gives the resolved form written to
``RUN_DIR/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from ._checks import (
    Count,
    FieldError,
    Fraction,
    LearningRate,
    NonNegative,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    check_fields,
    check_space_args,
)
from .errors import ConfigError

DATA_KEYS = ("download", "input_size", "normalize_mean", "normalize_std", "augment_crop", "augment_flip")


def check_data_keys(cfg: Any) -> None:
    """The dataset name and the data keys shared by ``SearchConfig`` and ``TrainConfig`` fit together.

    Raises:
        FieldError: an unknown dataset, ``input_size`` not ``[H, W]``, or a normalisation without one value per
            channel in both lists.
    """
    from .data import check_dataset

    check_dataset(cfg.dataset)
    if cfg.input_size is not None and len(cfg.input_size) != 2:
        raise FieldError("input_size", f"input_size must be [H, W] (two whole numbers > 0), got {cfg.input_size}",
                         "e.g. input_size: [32, 32] or --input-size 32x32")
    mean, std = cfg.normalize_mean, cfg.normalize_std
    if (mean is None) != (std is None) or (mean is not None and (len(mean) != len(std) or not mean)):
        key = "normalize_std" if mean is not None else "normalize_mean"
        raise FieldError(key, f"normalize_mean {mean} and normalize_std {std} must both be given, one value per "
                         "channel each", "e.g. --normalize-mean 0.5,0.5,0.5 --normalize-std 0.25,0.25,0.25")


@dataclass
class SearchConfig:
    """One search (one shard): space, data, relaxation and optimiser settings.

    Weights are trained with SGD (momentum, cosine schedule) on the train split; architecture
    logits with Adam on the validation split; the first ``warmup_epochs`` train weights only.
    """

    space: str = "seed-cnn"
    space_args: dict[str, Any] = field(default_factory=dict)  # factory kwargs, e.g. mbconv widths
    subspace: dict[str, list[Any]] | None = None  # search only these values of some labels (a shard's part)
    dataset: str = "digits"
    data_root: str | None = None
    data_limit: PositiveInt | None = None  # keep at most this many samples per split (quick runs)
    # ---- data: bring your own (imagefolder, npz, torchvision:NAME), normalisation, augmentation ----
    download: bool = False  # let torchvision fetch mnist/cifar10/torchvision:NAME into data_root (needs internet)
    input_size: list[PositiveInt] | None = None  # [H, W]: resize every image to this (bilinear); mixed sizes need it
    normalize_mean: list[float] | None = None  # per-channel mean to normalise with (with normalize_std) instead of
    normalize_std: list[PositiveFloat] | None = None  # the dataset's known statistics or its train split's
    augment_crop: Count = 0  # train batches only: pad this many pixels, then crop back at random (0: off)
    augment_flip: bool = False  # train batches only: mirror left-right with probability 1/2
    relaxation: str = "gumbel"
    epochs: PositiveInt = 10
    warmup_epochs: Count = 2
    batch_size: PositiveInt = 64
    seed: Seed = 0
    lr: LearningRate = 0.05  # weight learning rate (SGD, cosine to 0)
    momentum: Fraction = 0.9
    weight_decay: NonNegative = 3e-4
    weight_grad_clip: PositiveFloat = 5.0  # weight step: clip the gradient's global L2 norm to this
    arch_lr: LearningRate = 0.05  # Adam on architecture logits (short searches need a brisk rate)
    arch_weight_decay: NonNegative = 1e-3
    arch_beta1: Fraction = 0.5  # Adam betas of the architecture step (DARTS: 0.5, 0.999)
    arch_beta2: Fraction = 0.999
    tau_max: PositiveFloat | None = None  # temperature schedule; None = the relaxation's default
    tau_min: PositiveFloat | None = None
    learn_dropout: bool = False  # learn the space's continuous dropout rate on the validation loss
    hypergrad_lr: LearningRate = 0.05  # learn_dropout: Adam rate of the dropout rate's hypergradient step
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: PositiveInt | None = None  # torch intra-op threads (None: torch's default)
    # seeds derived from ``seed``: epoch e shuffles the train split with seed * data_seed_stride + e and the
    # validation split with that + val_seed_offset; the hypergradient's dropout noise of architecture step
    # s uses seed * hypergrad_seed_stride + s
    data_seed_stride: PositiveInt = 1009
    val_seed_offset: Count = 7919
    hypergrad_seed_stride: PositiveInt = 7
    # ---- hardware-aware search (needs a latency table) ----
    latency_table: str | None = None  # table JSON; None with a target/hw_loss: the shipped table for this machine
    precision: str = "fp32"  # fp32 | int8: the latency (table, budget, measurement) of the fp32 or the int8 model
    hw_loss: str | None = None  # mul (FBNet) | add (ProxylessNAS) | budget (dual ascent); None: budget if target
    target_ms: PositiveFloat | None = None  # latency budget; the derived arch is predicted <= it
    # several targets ("DEVICE_TABLE:BUDGET_MS" or {table, budget_ms}), primary first: every budget is kept
    # (hwnas.search.targets); the first is latency_table/target_ms, the one a sweep's targets vary
    latency_targets: list[dict[str, Any]] | None = None
    hw_lambda: NonNegative | None = None  # add: weight of E[T]/T_ref (0.1); budget: initial multiplier (0)
    fbnet_a: PositiveFloat = 0.2  # mul: L = CE * a * log(E[T] / 1us) ** b (FBNet's a and b)
    fbnet_b: PositiveFloat = 0.6
    dual_lr: PositiveFloat = 0.2  # budget: dual-ascent step on lambda per architecture step
    dual_margin: Fraction = 0.02  # budget: lambda grows until E[T] <= target * (1 - margin)
    fine_tune_epochs: Count = 3  # sweeps: fine-tune each derived arch from the supernet before scoring it
    verify_k: PositiveInt = 3  # sweeps: fine-tune the k most probable archs within the budget, keep the best on val
    fine_tune_lr_factor: PositiveFloat = 0.4  # sweeps: the fine-tune's peak lr is lr * this

    def __post_init__(self) -> None:
        from .relax import RELAXATIONS
        from .search.hardware import HW_LOSSES
        from .space import SPACES

        self._check_targets()
        check_fields(self)
        if self.hw_loss is not None:
            HW_LOSSES.get(self.hw_loss)
        if self.hw_loss == "budget" and self.target_ms is None:
            raise FieldError("hw_loss", "hw_loss 'budget' needs target_ms",
                             "pass --target-ms with the latency budget in ms")
        SPACES.get(self.space)
        check_space_args(self.space, self.space_args)
        relax = RELAXATIONS.get(self.relaxation)
        check_data_keys(self)
        if self.warmup_epochs >= self.epochs:
            raise FieldError("warmup_epochs", f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})",
                             "otherwise the architecture is never trained")
        defaults = {k: p.default for k, p in inspect.signature(relax).parameters.items()}
        tau_max = self.tau_max if self.tau_max is not None else defaults.get("tau_max")
        tau_min = self.tau_min if self.tau_min is not None else defaults.get("tau_min")
        if isinstance(tau_max, float) and isinstance(tau_min, float) and tau_max < tau_min:
            given = "tau_max" if self.tau_max is not None else "tau_min"
            default = {"tau_max": self.tau_max, "tau_min": self.tau_min}
            shown = ", ".join(f"{k} {v:g}" + (f" ({self.relaxation}'s default)" if default[k] is None else "")
                              for k, v in (("tau_max", tau_max), ("tau_min", tau_min)))
            raise FieldError(given, f"tau_max must be >= tau_min (the temperature anneals from tau_max down to "
                             f"tau_min), got {shown}", "pass both --tau-max and --tau-min, tau_max the larger")
        if self.precision not in ("fp32", "int8"):
            raise FieldError("precision", f"precision must be fp32 or int8, got {self.precision!r}",
                             "int8 searches with an int8 latency table (`hwnas profile --precision int8`)")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise FieldError("device", f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def _check_targets(self) -> None:
        """Parse ``latency_targets`` into ``{table, budget_ms}`` and make the first one ``latency_table``/
        ``target_ms`` (which must agree with it when given too)."""
        from .search.targets import EXAMPLE, parse_target

        if self.latency_targets is None:
            return
        if not isinstance(self.latency_targets, list) or not self.latency_targets:
            raise FieldError("latency_targets", f"latency_targets must list DEVICE_TABLE:BUDGET_MS targets, got "
                             f"{self.latency_targets!r}", f"e.g. {EXAMPLE}")
        try:
            self.latency_targets = [parse_target(t) for t in self.latency_targets]
        except ConfigError as err:
            raise FieldError("latency_targets", str(err)) from None
        first = self.latency_targets[0]
        for key, mine in (("latency_table", "table"), ("target_ms", "budget_ms")):
            if getattr(self, key) is None:
                setattr(self, key, first[mine])
            elif getattr(self, key) != first[mine]:
                raise FieldError(key, f"{key} {getattr(self, key)!r} disagrees with the first latency target "
                                 f"{first[mine]!r}", "give the primary target once: --target DEVICE_TABLE:BUDGET_MS "
                                 "(first) or --latency-table/--target-ms, not both")
        if len(self.latency_targets) > 1 and self.hw_loss not in (None, "budget"):
            raise FieldError("hw_loss", f"hw_loss {self.hw_loss!r} weighs one latency, but {len(self.latency_targets)}"
                             " latency targets are given", "drop --hw-loss (several targets use budget)")

    @property
    def hardware_aware(self) -> bool:
        return self.latency_table is not None or self.target_ms is not None or self.hw_loss is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

    def train_config(self, *, epochs: int, lr: float, seed: int | None = None) -> TrainConfig:
        """Training one arch on this search's data and runtime settings (a shard's fine-tune, final training)."""
        return TrainConfig(dataset=self.dataset, data_root=self.data_root, data_limit=self.data_limit, epochs=epochs,
                           batch_size=self.batch_size, lr=lr, seed=self.seed if seed is None else seed,
                           device=self.device, threads=self.threads, data_seed_stride=self.data_seed_stride,
                           **{k: getattr(self, k) for k in DATA_KEYS})


@dataclass
class TrainConfig:
    """Retraining (or fine-tuning) one fixed arch."""

    dataset: str = "digits"
    data_root: str | None = None
    data_limit: PositiveInt | None = None
    epochs: PositiveInt = 15
    batch_size: PositiveInt = 64
    lr: LearningRate = 0.05  # peak of the one-cycle schedule
    momentum: Fraction = 0.9
    weight_decay: NonNegative = 5e-4
    seed: Seed = 0
    device: str = "auto"
    threads: PositiveInt | None = None
    data_seed_stride: PositiveInt = 1009  # epoch e shuffles the train split with seed * data_seed_stride + e
    # ---- data: bring your own (imagefolder, npz, torchvision:NAME), normalisation, augmentation ----
    download: bool = False  # let torchvision fetch mnist/cifar10/torchvision:NAME into data_root (needs internet)
    input_size: list[PositiveInt] | None = None  # [H, W]: resize every image to this (bilinear); mixed sizes need it
    normalize_mean: list[float] | None = None  # per-channel mean to normalise with (with normalize_std) instead of
    normalize_std: list[PositiveFloat] | None = None  # the dataset's known statistics or its train split's
    augment_crop: Count = 0  # train batches only: pad this many pixels, then crop back at random (0: off)
    augment_flip: bool = False  # train batches only: mirror left-right with probability 1/2

    def __post_init__(self) -> None:
        check_fields(self)
        check_data_keys(self)


@dataclass
class FinalConfig:
    """Final training (``hwnas finalize``, or a sweep's ``final:`` block): every candidate retrained from
    scratch on the training split with each seed, scored on the test split."""

    epochs: PositiveInt = 15
    seeds: list[Seed] = field(default_factory=lambda: [0, 1, 2])
    lr: LearningRate = 0.05  # peak of the one-cycle schedule (as hwnas train)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise FieldError("seeds", f"final seeds must list distinct seeds, got {self.seeds}")


@dataclass
class SweepConfig:
    """Which shards a run has: one search per latency target x seed x part of the space."""

    targets: list[PositiveFloat | None] = field(default_factory=lambda: [None])  # latency budgets (ms)
    seeds: list[Seed] = field(default_factory=lambda: [0])
    shards_per_target: PositiveInt = 1  # > 1 splits the space's widest label into this many sub-spaces
    final: FinalConfig | None = None  # set: the sweep ends with final training (``hwnas finalize``)

    def __post_init__(self) -> None:
        check_fields(self)
        for key in ("targets", "seeds"):
            values = getattr(self, key)
            if not values:
                raise FieldError(key, f"{key} must list at least one value, got {values}")
            if len(set(values)) != len(values):
                raise FieldError(key, f"{key} must not repeat, got {values}")


@dataclass
class RayConfig:
    """How shards run on Ray: resources per shard, restarts, which cluster.

    A shard is one Ray actor; with ``workers_per_shard`` > 1 it trains its supernet data-parallel across
    that many Ray Train workers. ``cpus_per_shard``/``gpus_per_shard`` are what each worker asks for.
    """

    enabled: bool = True  # False: shards run one after another in this process (no Ray)
    address: str | None = None  # auto | HOST:PORT | ray://... | local; None: $RAY_ADDRESS or hwnas cluster up
    workers_per_shard: PositiveInt = 1
    cpus_per_shard: PositiveFloat = 1.0
    gpus_per_shard: NonNegative = 0.0
    max_restarts: Count = 3  # actor restarts (a shard resumes from its last epoch checkpoint)
    max_failures: Count = 3  # Ray Train worker-group restarts of a data-parallel shard
    # a sweep that makes no progress (nothing placed, started, advanced or finished) for this long while
    # the cluster has room is an error; shards waiting for busy resources wait as long as it takes
    schedule_timeout_s: PositiveFloat = 600.0
    autoscaling: bool = False  # the cluster adds nodes on demand: skip the up-front fit check (the timeout stays)
    storage: str | None = None  # URI (s3://, gs://, file://) for shard folders; None: under the run folder
    num_cpus: PositiveInt | None = None  # size of a local cluster hwnas starts (None: all cores)
    # object store of a local cluster (only paths and small dicts go through it); Ray's minimum is 75 MiB
    object_store_mb: Annotated[int, Range(80)] = 150
    dashboard: bool = False  # a local cluster hwnas starts: Ray dashboard (and metrics) on 127.0.0.1

    def __post_init__(self) -> None:
        check_fields(self)
        if self.gpus_per_shard > 1 and self.gpus_per_shard != int(self.gpus_per_shard):
            raise FieldError("gpus_per_shard", f"gpus_per_shard above 1 must be a whole number (Ray's rule), got "
                             f"{self.gpus_per_shard}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RayConfig:
        return dataclasses.replace(self, **changes)


SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepConfig))


def split_run_dict(data: dict[str, Any], where: str, *, flags: Collection[str] = ()
                   ) -> tuple[SearchConfig, SweepConfig, RayConfig]:
    """A run's YAML: search keys at the top level, plus targets/seeds/shards_per_target and a ``ray:`` section.

    ``flags`` names the keys set by command-line flags (``ray.KEY`` for the ray section): errors in them say
    "flags" instead of ``where``.
    """
    data = dict(data)
    ray_part = data.pop("ray", None) or {}
    if not isinstance(ray_part, dict):
        raise ConfigError(f"'ray' in {where} must be a mapping of RayConfig keys (e.g. ray: {{cpus_per_shard: 1}}), "
                          f"got {ray_part!r}")
    sweep_part = {k: data.pop(k) for k in SWEEP_KEYS if k in data and data[k] is not None}
    ray_flags = {k.removeprefix("ray.") for k in flags if k.startswith("ray.")}
    return (from_dict(SearchConfig, data, where, flags=flags), from_dict(SweepConfig, sweep_part, where, flags=flags),
            from_dict(RayConfig, ray_part, f"the ray: section of {where}", flags=ray_flags))


def from_dict(cls: type, data: dict[str, Any], where: str = "config", *, flags: Collection[str] = ()) -> Any:
    """Build config dataclass ``cls`` from ``data``; unknown keys are an error that lists the known ones.

    Args:
        cls: a config dataclass.
        data: its keys and values.
        where: where ``data`` came from (a YAML path, "flags"), named in every error.
        flags: the keys of ``data`` that command-line flags set (errors in them say "flags").

    Raises:
        ConfigError: an unknown key, or a value ``cls`` refuses (``FieldError``, with ``where`` filled in).
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {where}; known keys: {sorted(known)}")
    try:
        return cls(**data)
    except FieldError as err:
        raise FieldError(err.key, err.problem, err.fix, "flags" if err.key in flags else where) from None


def write_yaml(path: Path, obj: dict[str, Any]) -> None:
    """Write YAML atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    tmp.replace(path)


def read_yaml(path: str | Path) -> dict[str, Any]:
    from .shipped import resolve_config

    p = resolve_config(path)  # a file, or a shipped config by name (`--config mnist` in any folder)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not a text file (not UTF-8); pass a YAML config") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML{where} ({problem}); fix that line") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return data

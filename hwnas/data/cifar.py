"""``cifar10`` (and CIFAR-100 for ``torchvision:CIFAR100``): the python-version batches, read by a restricted
unpickler that builds only dicts, lists, str, bytes, numbers and numpy arrays, and refuses anything else.

A CIFAR batch is a pickle; plain ``pickle.load`` (torchvision's reader) runs whatever a planted file names.
``SafeUnpickler.find_class`` allows only the numpy array/dtype/scalar reconstructors (old ``numpy.core`` and
new ``numpy._core`` paths) and ``_codecs.encode`` (protocol <= 2 bytes); any other global is a ``DataError``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .core import (
    DATASETS,
    DataOptions,
    Loaded,
    Part,
    Shape,
    as_options,
    fit_parts,
    normalise,
    reason,
    require_root,
    split,
    stats_for,
)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_EXPECTED = "the folder that contains cifar-10-batches-py/ (torchvision's CIFAR-10 layout)"
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles data only: numpy arrays, dicts, lists, tuples, str, bytes and numbers."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED or (module.startswith("numpy.dtypes") and name.endswith("DType")):
            return super().find_class(module, name)
        raise DataError(f"{self.path} is not plain CIFAR data: its pickle asks for {module}.{name}, which hwnas "
                        f"never loads (a batch holds only arrays, lists and strings); replace it with an intact copy")


def safe_load(path: Path) -> dict:
    """The dict pickled in ``path`` (keys as str), loaded by ``SafeUnpickler``.

    Raises:
        DataError: unreadable, not a pickle of a dict, or a pickle that names anything but plain data.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}); replace it with an intact copy") from None
    try:
        obj = SafeUnpickler(io.BytesIO(raw), path).load()
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 (truncated, not a pickle: UnpicklingError, EOFError, ValueError, ...)
        raise DataError(f"{path} is not a readable CIFAR batch ({reason(err)}); replace it with an intact copy") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch (a dict); replace it with an intact copy")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values) -> tuple[str, ...]:
    return tuple(v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values)


def read_batches(paths: list[Path], label_key: str) -> Part:
    """Batches concatenated: ``x`` (N, 3, 32, 32) float32 in [0, 1], ``y`` (N,) int64."""
    xs, ys = [], []
    for path in paths:
        batch = safe_load(path)
        data, labels = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or labels is None:
            raise DataError(f"{path} lacks 'data' (an array) or {label_key!r}; replace it with an intact copy")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise DataError(f"{path} holds data {data.dtype} {data.shape} with {len(labels)} labels, expected uint8 "
                            "(N, 3072) and N labels; replace it with an intact copy")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    x = torch.from_numpy(np.concatenate(xs)).float().div_(255.0)  # (N, 3, 32, 32) in [0, 1]
    return x, torch.from_numpy(np.concatenate(ys))


def read_meta(path: Path, key: str, count: int, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Class names from a ``batches.meta``/``meta`` file (``default`` when it is absent)."""
    if not path.is_file():
        return default or tuple(str(i) for i in range(count))
    names = _names(safe_load(path).get(key) or ())
    if len(names) < count:
        raise DataError(f"{path} names {len(names)} classes under {key!r} but the labels need {count}; "
                        "replace it with an intact copy")
    return names


def cifar10_files(root: Path | None, *, download: bool = False) -> list[Path]:
    """The batches the ``cifar10`` loader reads: ``root/cifar-10-batches-py/`` ``data_batch_1..5``, ``test_batch``.

    Raises:
        DataError: no root, a root that is a file or missing, or (unless ``download``) a missing batch.
    """
    root = require_root(root, "cifar10", _CIFAR_EXPECTED, download)
    folder = root / "cifar-10-batches-py"
    files = [folder / n for n in [*_TRAIN, "test_batch"]]
    missing = [p.name for p in files if not p.is_file()]
    if missing and not download:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)} (needs data_batch_1..5 and test_batch): "
                        f"point --data-root at {_CIFAR_EXPECTED}, e.g. unpack cifar-10-python.tar.gz into {root}")
    return files


def download_archive(cls, root: Path, what: str) -> None:
    """Fetch and unpack torchvision's archive of ``cls`` (CIFAR10/CIFAR100) into ``root``; nothing is unpickled."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as err:  # noqa: BLE001 (offline: URLError, RuntimeError, ... all mean the same to the user)
        raise DataError(f"could not download {what} into {root} ({reason(err)}); without internet, unpack "
                        f"{cls.filename} into {root}") from None


@DATASETS.register("cifar10")
def _load_cifar10(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
                  options: DataOptions | None = None) -> Loaded:
    options = as_options(options)
    files = cifar10_files(root, download=download)
    folder = files[0].parent
    if not all(p.is_file() for p in files):
        from torchvision.datasets import CIFAR10

        download_archive(CIFAR10, folder.parent, "CIFAR-10")
    try:
        train, test = read_batches(files[:5], "labels"), read_batches(files[5:], "labels")
        names = read_meta(folder / "batches.meta", "label_names", 10, CIFAR10_NAMES)[:10]
    except DataError as err:
        raise DataError(f"could not read the CIFAR-10 batches in {folder} ({err}); place an intact copy of "
                        f"cifar-10-batches-py/ (from cifar-10-python.tar.gz) under {folder.parent}") from None
    mean, std = stats_for(options, 3, (CIFAR_MEAN, CIFAR_STD), None, "cifar10")
    x, y = normalise(train[0], mean, std), train[1]
    n_val = len(y) // 10  # 50,000 -> 45,000 / 5,000
    parts = [*split(x, y, (len(y) - n_val, n_val)), (normalise(test[0], mean, std), test[1])]
    size = (3, *options.input_size) if options.input_size else None
    parts, resize = fit_parts(parts, input_shape or size, "cifar10")
    return Loaded(tuple(parts), 10, "CIFAR-10 (python batches)", mean, std, names,  # type: ignore[arg-type]
                  (0.0, 1.0), resize)

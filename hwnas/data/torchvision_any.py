"""``torchvision:NAME``: any dataset class of ``torchvision.datasets`` that has a train and a test split
(``train=`` or ``split=``), read from ``--data-root`` (``--download`` fetches it there first).

CIFAR-10/100 are read by hwnas's restricted unpickler (``hwnas.data.cifar``), never by torchvision's plain
``pickle.load``. Others: the dataset's ``data``/``targets`` arrays when it has them (the MNIST family), else its
images one by one (PIL). Train gives 10% to val (fixed, stratified); normalisation: train statistics unless
``normalize_mean``/``normalize_std`` are given.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .cifar import download_archive, read_batches, read_meta
from .core import (
    DATASETS,
    DataOptions,
    Loaded,
    Part,
    Shape,
    as_options,
    finish,
    fit_parts,
    reason,
    resize_to,
    split_val,
)

_CIFAR = {  # class name -> folder, train files, test files, label key, meta file, names key
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                "batches.meta", "label_names"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}


def dataset_class(name: str):
    """``torchvision.datasets.<name>``.

    Raises:
        ConfigError: not a dataset class of torchvision.
    """
    import torchvision.datasets as tvd
    from torchvision.datasets.vision import VisionDataset

    cls = getattr(tvd, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, VisionDataset)):
        raise ConfigError(f"torchvision has no dataset {name!r}; use a class name of torchvision.datasets, e.g. "
                          "--dataset torchvision:FashionMNIST or torchvision:CIFAR100 (case matters)")
    return cls


def need_root(root: Path | None, name: str, download: bool) -> Path:
    if root is None:
        raise DataError(f"--data-root is required for torchvision:{name}: point it at the folder torchvision keeps "
                        f"{name} in (with --download, where to fetch it)")
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: point --data-root at the folder of torchvision:{name}")
    if not root.exists() and not download:
        raise DataError(f"data root {root} does not exist: pass --download (needs internet) to fetch torchvision:{name} "
                        "there, or point --data-root at a folder that holds it")
    return root


def _cifar(cls, name: str, root: Path, download: bool) -> tuple[Part, Part, tuple[str, ...]]:
    folder, train, test, key, meta, names_key = _CIFAR[name]
    files = [root / folder / f for f in [*train, *test]]
    if not all(p.is_file() for p in files):
        if not download:
            missing = ", ".join(str(p) for p in files if not p.is_file())
            raise DataError(f"torchvision:{name}: no {missing}; pass --download (needs internet) to fetch it into "
                            f"{root}, or unpack {cls.filename} there")
        download_archive(cls, root, name)
    x_train, x_test = read_batches(files[:len(train)], key), read_batches(files[len(train):], key)
    count = int(max(x_train[1].max(), x_test[1].max())) + 1
    return x_train, x_test, read_meta(root / folder / meta, names_key, count)


def _split_kwargs(cls, name: str) -> tuple[dict, dict]:
    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        return {"train": True}, {"train": False}
    if "split" in params:
        return {"split": "train"}, {"split": "test"}
    raise ConfigError(f"torchvision:{name} takes neither train= nor split=, so hwnas cannot tell its train split "
                      "from its test split; save it as an .npz (--dataset npz) or an image folder (--dataset imagefolder)")


def _construct(cls, name: str, root: Path, download: bool, kwargs: dict):
    if "download" in inspect.signature(cls.__init__).parameters:
        kwargs = {**kwargs, "download": download}
    try:
        return cls(str(root), **kwargs)
    except Exception as err:  # noqa: BLE001 (missing files, failed checksums, no network: one message)
        if download:
            raise DataError(f"could not download torchvision:{name} into {root} ({reason(err)}); without internet, "
                            "place torchvision's files for it there") from None
        raise DataError(f"torchvision:{name}: no usable files under {root} ({reason(err)}); pass --download (needs "
                        "internet) to fetch them, or place torchvision's files there") from None


def _as_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    return x.transpose(0, 3, 1, 2) if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3) else x


def _to_part(ds, name: str, size: tuple[int, int] | None) -> Part:
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    labels = getattr(ds, "labels", None) if labels is None else labels
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim in (3, 4) and labels is not None:
        x = torch.from_numpy(np.ascontiguousarray(_as_nchw(data))).float().div_(255.0)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        return resize_to(x, size)[0], y
    from PIL import Image

    images, ys = [], []
    for i in range(len(ds)):
        img, label = ds[i]
        if not isinstance(img, Image.Image):
            raise DataError(f"torchvision:{name} gives {type(img).__name__} samples, not images; save it as an .npz")
        img = img.convert("L" if img.mode in ("1", "L") else "RGB")
        if size is not None:
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        images.append(arr[:, :, None] if arr.ndim == 2 else arr)
        ys.append(int(label))
    if len({a.shape for a in images}) > 1:
        raise DataError(f"torchvision:{name} images have different sizes or modes; give a resize rule: --input-size HxW")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(), torch.tensor(ys, dtype=torch.int64)


@DATASETS.register("torchvision")
def _load_torchvision(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool, arg: str,
                      options: DataOptions | None = None) -> Loaded:
    options = as_options(options)
    cls = dataset_class(arg)
    root = need_root(root, arg, download)
    if arg in _CIFAR:
        train, test, names = _cifar(cls, arg, root, download)
        train, test = ((resize_to(x, options.input_size)[0], y) for x, y in (train, test))
    else:
        train_kw, test_kw = _split_kwargs(cls, arg)
        sets = [_construct(cls, arg, root, download, kw) for kw in (train_kw, test_kw)]
        train, test = (_to_part(ds, arg, options.input_size) for ds in sets)
        names = tuple(str(c) for c in getattr(sets[0], "classes", ()) or ())
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DataError(f"torchvision:{arg} train images are {tuple(train[0].shape[1:])} but test images are "
                        f"{tuple(test[0].shape[1:])}; give a resize rule: --input-size HxW")
    count = int(max(train[1].max(), test[1].max())) + 1
    names = names if len(names) >= count else tuple(str(i) for i in range(count))
    resize = "none" if options.input_size is None else f"bilinear to {options.input_size[0]}x{options.input_size[1]}"
    parts, resize = fit_parts(split_val(train, test, f"torchvision:{arg}"), input_shape, f"torchvision:{arg}", resize)
    return finish(parts, options, f"torchvision:{arg}", num_classes=len(names), source=f"torchvision {arg} under {root}",
                  class_names=names, value_range=(0.0, 1.0), resize=resize)

"""``imagefolder``: class-per-folder images, as torchvision's ``ImageFolder`` (``ROOT/CLASS/IMAGE``).

Layout: ``ROOT/train/CLASS/*``, ``ROOT/test/CLASS/*`` and optionally ``ROOT/val/CLASS/*`` (no ``val/``: 10% of
train, fixed and stratified); or ``ROOT/CLASS/*`` alone (split 70/15/15, fixed and stratified). Classes are the
sorted folder names of ``train/`` (or ``ROOT``); files with an image extension PIL knows are read (others, and
hidden entries, are skipped). Images are converted to ``L`` when every image is grayscale (``1``/``L``), else to
``RGB``; they must all have one size unless ``input_size`` (``--input-size HxW``) resizes them (bilinear).
Normalisation: per-channel statistics of the train split unless ``normalize_mean``/``normalize_std`` are given.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    finish,
    fit_parts,
    reason,
    split_three,
    split_val,
)

SPLITS = ("train", "val", "test")
_GRAY = {"1", "L"}
_EXPECTED = "a folder of class folders of images (ROOT/CLASS/IMAGE), or of train/ and test/ (and val/) holding them"


@dataclass(frozen=True)
class Layout:
    """The files of an image folder: ``splits`` maps ``train``/``val``/``test`` (those present, or ``all``) to
    ``(path, class index)`` lists, sorted."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, list[tuple[Path, int]]]


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir()]


def _files(folder: Path, label: int, suffixes: set[str]) -> list[tuple[Path, int]]:
    files = [(p, label) for p in _visible(folder) if p.is_file() and p.suffix.lower() in suffixes]
    if not files:
        raise DataError(f"imagefolder: class folder {folder} holds no images (PIL-readable files such as .png, "
                        ".jpg); add images to it or remove the folder")
    return files


def scan(root: Path | None) -> Layout:
    """The layout of the image folder ``root``, without reading any image.

    Raises:
        DataError: no root, no class folders, an empty class folder, half a train/test layout, or a split
            folder whose classes differ from ``train/``'s (names the folder and the fix).
    """
    if root is None:
        raise DataError(f"--data-root is required for imagefolder: point it at {_EXPECTED}")
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"data root {root} {what}: point --data-root at {_EXPECTED}")
    suffixes = _image_suffixes()
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and not {"train", "test"} <= set(present):
        need = "test" if "train" in present else "train"
        raise DataError(f"imagefolder: {root} has {'/, '.join(present)}/ but no {need}/; add {root / need} with the "
                        "same class folders, or drop the split folders and keep ROOT/CLASS/IMAGE only")
    top = root / "train" if present else root
    classes = tuple(p.name for p in _class_dirs(top))
    if not classes:
        raise DataError(f"imagefolder: {top} holds no class folders; put each class's images in a folder named "
                        f"after it ({top}/CLASS/IMAGE)")
    splits = {}
    for name in present or ["all"]:
        folder = root / name if present else root
        have = tuple(p.name for p in _class_dirs(folder))
        if have != classes:
            missing, extra = sorted(set(classes) - set(have)), sorted(set(have) - set(classes))
            what = (f"lacks class folder(s) {', '.join(missing)} that train/ has" if missing
                    else f"has class folder(s) {', '.join(extra)} that train/ lacks")
            raise DataError(f"imagefolder: {folder} {what}; every split folder needs the same class folders "
                            f"({', '.join(classes)}): add or remove them")
        splits[name] = [f for i, c in enumerate(classes) for f in _files(folder / c, i, suffixes)]
    return Layout(root, classes, splits)


def _open(path: Path, *, verify: bool = False):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        if verify:
            img.verify()
            img = Image.open(path)
        else:
            img.load()
        return img
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"imagefolder: cannot read image {path} ({reason(err)}); replace or delete the file") from None


def check_headers(layout: Layout, sample: int = 64) -> None:
    """Open (header and checksum: ``PIL.Image.verify``) up to ``sample`` files spread over every split.

    Raises:
        DataError: a file PIL cannot read (names it).
    """
    for files in layout.splits.values():
        step = max(1, len(files) // max(1, sample // len(layout.splits)))
        for path, _ in files[::step]:
            _open(path, verify=True)


def _read(files: list[tuple[Path, int]], mode: str, size: tuple[int, int] | None, first: dict) -> np.ndarray:
    """The images as uint8 ``(N, H, W, C)``; ``first`` remembers the first size seen (for the mixed-size error)."""
    from PIL import Image

    out = []
    for path, _ in files:
        img = _open(path)
        if img.mode != mode:
            img = img.convert(mode)
        if size is not None:
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
        elif "size" not in first:
            first.update(size=img.size, path=path)
        elif img.size != first["size"]:
            (w0, h0), (w1, h1) = first["size"], img.size
            raise DataError(f"imagefolder: {path} is {h1}x{w1} (HxW) but {first['path']} is {h0}x{w0}; give a "
                            "resize rule: --input-size HxW (config input_size: [H, W]), or resize the images to one size")
        arr = np.asarray(img, dtype=np.uint8)
        out.append(arr[:, :, None] if arr.ndim == 2 else arr)
    return np.stack(out)


def _mode(layout: Layout) -> str:
    from PIL import Image

    for files in layout.splits.values():
        for path, _ in files:
            try:
                with Image.open(path) as img:
                    if img.mode not in _GRAY:
                        return "RGB"
            except Exception:  # noqa: BLE001 (reported with its name by _read)
                _open(path)
    return "L"


def _tensors(files: list[tuple[Path, int]], mode: str, size: tuple[int, int] | None, first: dict) -> Part:
    x = torch.from_numpy(_read(files, mode, size, first)).permute(0, 3, 1, 2).float().div_(255.0)  # (N, C, H, W)
    return x.contiguous(), torch.tensor([label for _, label in files], dtype=torch.int64)


@DATASETS.register("imagefolder")
def _load_imagefolder(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
                      options: DataOptions | None = None) -> Loaded:
    options = as_options(options)
    layout = scan(root)
    mode, first = _mode(layout), {}
    parts = {name: _tensors(files, mode, options.input_size, first) for name, files in layout.splits.items()}
    if "all" in parts:
        split_parts, how = split_three(*parts["all"], f"imagefolder {root}"), "split 70/15/15, stratified"
    elif "val" in parts:
        split_parts, how = [parts["train"], parts["val"], parts["test"]], "train/val/test folders"
    else:
        split_parts = split_val(parts["train"], parts["test"], f"imagefolder {root}")
        how = "train/test folders, val 10% of train (stratified)"
    resize = "none" if options.input_size is None else f"PIL bilinear to {options.input_size[0]}x{options.input_size[1]}"
    split_parts, resize = fit_parts(split_parts, input_shape, "imagefolder", resize)
    return finish(split_parts, options, "imagefolder", num_classes=len(layout.classes),
                  source=f"image folder {root} ({mode}, {how})", class_names=layout.classes,
                  value_range=(0.0, 1.0), resize=resize)

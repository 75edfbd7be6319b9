"""``npz``: arrays in one ``.npz`` file, loaded with ``np.load(allow_pickle=False)`` (no pickle, ever).

Keys: ``x`` and ``y`` (all the data, split 70/15/15, fixed and stratified), or ``x_train``/``y_train`` and
``x_test``/``y_test`` with optional ``x_val``/``y_val`` (no val: 10% of train, fixed and stratified); optional
``class_names`` (str array, one per class). ``y``: integer labels ``0..K-1``.

Layout of ``x``: 3-D is ``(N, H, W)`` (one channel); 4-D is ``(N, H, W, C)`` when only the last axis is 1 or 3,
``(N, C, H, W)`` when only axis 1 is; anything else (both or neither) is ambiguous and refused. ``uint8`` is
scaled to [0, 1]; float arrays are taken as they are (``value_range``: their min and max over train).
"""

from __future__ import annotations

import zipfile
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
    resize_to,
    split_three,
    split_val,
)

_CHANNELS = (1, 3)
_FORM = "x and y, or x_train/y_train and x_test/y_test (optional x_val/y_val)"


def open_npz(path: Path | None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file ``path`` (no pickle).

    Raises:
        DataError: no path, a missing/unreadable file, not an npz, an object (pickled) array, or keys that
            form neither ``x``/``y`` nor the split arrays, or mismatched lengths.
    """
    if path is None:
        raise DataError(f"--data-root is required for npz: point it at a .npz file holding {_FORM}")
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(f"npz: {path} {what}; point --data-root at a .npz file holding {_FORM}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz: {path} is not an .npz archive (a zip of .npy arrays); save the arrays with np.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise DataError(f"npz: {path} holds an object array (needs pickle, which hwnas never loads); save numbers "
                            "as numeric arrays and class_names as np.array(names, dtype=str)") from None
        raise DataError(f"npz: cannot read {path} ({reason(err)}); save it with np.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"npz: cannot read {path} ({reason(err)}); is it a .npz? save it with np.savez") from None
    _check_keys(path, arrays)
    return arrays


def _check_keys(path: Path, arrays: dict[str, np.ndarray]) -> None:
    split_keys = [k for k in arrays if k.startswith(("x_", "y_"))]
    if "x" in arrays and split_keys:
        raise DataError(f"npz: {path} has both x and {split_keys[0]}; keep one form: {_FORM}")
    pairs = [("x", "y")] if "x" in arrays else [(f"x_{s}", f"y_{s}") for s in ("train", "val", "test")
                                                  if f"x_{s}" in arrays or s != "val"]
    for xk, yk in pairs:
        if xk not in arrays or yk not in arrays:
            have = ", ".join(sorted(arrays)) or "no arrays"
            raise DataError(f"npz: {path} lacks {xk if xk not in arrays else yk} (has {have}); it needs {_FORM}")
        if len(arrays[xk]) != len(arrays[yk]):
            raise DataError(f"npz: {path} has {len(arrays[xk])} samples in {xk} but {len(arrays[yk])} labels in {yk}; "
                            "save one label per sample")


def _images(path: Path, key: str, x: np.ndarray) -> torch.Tensor:
    """``x`` as float32 (N, C, H, W), by the layout rule of this module."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        last, first = x.shape[3] in _CHANNELS, x.shape[1] in _CHANNELS
        if last == first:
            raise DataError(f"npz: {path} {key} has shape {x.shape}: cannot tell (N, H, W, C) from (N, C, H, W) "
                            f"(channels are 1 or 3 on exactly one of axes 1 and 3); save it as (N, H, W, C) with C "
                            f"1 or 3, or (N, H, W) for grayscale")
        if last:
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"npz: {path} {key} has shape {x.shape}; save images as (N, H, W), (N, H, W, C) or "
                        "(N, C, H, W)")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if x.dtype.kind != "f":
        raise DataError(f"npz: {path} {key} has dtype {x.dtype}; save uint8 (0..255) or float images")
    if not np.isfinite(x).all():
        raise DataError(f"npz: {path} {key} holds NaN or infinite values; replace them")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _labels(path: Path, key: str, y: np.ndarray) -> torch.Tensor:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"npz: {path} {key} is {y.dtype} {y.shape}; save labels as a 1-D integer array")
    if len(y) and y.min() < 0:
        raise DataError(f"npz: {path} {key} has negative label {y.min()}; labels are 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


@DATASETS.register("npz")
def _load_npz(*, root: Path | None, seed: int, input_shape: Shape | None, download: bool,
              options: DataOptions | None = None) -> Loaded:
    options = as_options(options)
    arrays = open_npz(root)
    keys = ["x"] if "x" in arrays else [k for k in ("train", "val", "test") if f"x_{k}" in arrays]
    got: dict[str, Part] = {}
    for k in keys:
        xk, yk = ("x", "y") if k == "x" else (f"x_{k}", f"y_{k}")
        got[k] = (_images(root, xk, arrays[xk]), _labels(root, yk, arrays[yk]))  # type: ignore[arg-type]
    shapes = {k: tuple(x.shape[1:]) for k, (x, _) in got.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"npz: {root} splits have different image shapes {shapes}; save them at one shape")
    what = f"npz {root}"
    if "x" in got:
        parts, how = split_three(*got["x"], what), "x/y split 70/15/15, stratified"
    elif "val" in got:
        parts, how = [got["train"], got["val"], got["test"]], "train/val/test arrays"
    else:
        parts, how = split_val(got["train"], got["test"], what), "train/test arrays, val 10% of train (stratified)"
    resized = [resize_to(x, options.input_size) for x, _ in parts]
    parts = [(x, y) for (x, _), (_, y) in zip(resized, parts, strict=True)]
    parts, resize = fit_parts(parts, input_shape, "npz", resized[0][1])
    num_classes = int(max(int(y.max()) for _, y in parts if len(y))) + 1
    names = tuple(str(v) for v in arrays["class_names"].reshape(-1)) if "class_names" in arrays else ()
    if names and len(names) < num_classes:
        raise DataError(f"npz: {root} class_names lists {len(names)} names but the labels go up to {num_classes - 1}; "
                        "give one name per class")
    num_classes = max(num_classes, len(names))
    names = names or tuple(str(i) for i in range(num_classes))
    uint8 = all(arrays[k].dtype == np.uint8 for k in arrays if k.startswith("x"))
    xtr = parts[0][0]
    value_range = (0.0, 1.0) if uint8 else (float(xtr.min()), float(xtr.max()))
    return finish(parts, options, "npz", num_classes=num_classes, source=f"npz {root.name} ({how})",  # type: ignore[union-attr]
                  class_names=names, value_range=value_range, resize=resize)

"""Checkpoints as data, never code: tensors in a safetensors table, everything else as JSON beside them.

``torch.load`` with ``weights_only`` off unpickles, and unpickling runs whatever the file names (an
``os.system`` call included), so a checkpoint planted in a run folder, at a storage URI or passed as
``--weights`` would run code as the user. hwnas therefore writes and reads only this format and refuses
pickles (``torch.save`` zip files and raw pickles), which it recognises by their first bytes.

A file is an ordinary safetensors file. Its tensor table holds every tensor of the state, named by its
path in the structure (``net/stem.conv.weight``; a ``"weights"`` file is therefore a plain safetensors
state dict other tools can read). Its metadata holds one key, ``"hwnas"``, whose value is the JSON text
``{"format": "hwnas.checkpoint", "version": 1, "kind": ..., "meta": ..., "state": ...}``; ``state`` is
the structure with each container tagged (``{"dict": [[key, value], ...]}``, ``{"list": [...]}``,
``{"tuple": [...]}``), each tensor a reference ``{"tensor": name}`` and each non-finite float
``{"float": "nan"|"inf"|"-inf"}``, so int keys, tuples and floats come back exactly as they were saved.

Kinds: ``"search"`` (a search's whole state, ``SearchState.state_dict()``, in ``RUN/checkpoint.safetensors``)
and ``"weights"`` (a plain module state dict written by ``hwnas train --save``; meta: space, space_args,
arch, hparams, data: the TrainConfig data settings it was trained on, absent in older files).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import HwnasError

FORMAT, VERSION = "hwnas.checkpoint", 1
KEY = "hwnas"  # the one safetensors metadata key this format uses
KINDS = {"search": "a search checkpoint", "weights": "a weights file (`hwnas train --save`)"}

_MAX_HEADER = 100_000_000  # safetensors' own limit on the header size
PICKLED = ("is a pickled checkpoint (written by an older hwnas, or not by hwnas); hwnas never loads pickles "
           "because they can run code")


def save_state(path: str | Path, state: Any, *, kind: str, meta: Any = None) -> Path:
    """Write ``state`` to ``path`` as a checkpoint of ``kind``, atomically (temp file beside it, fsync, rename).

    Args:
        path: the file to write (its folder is created).
        state: nested dicts (str or int keys), lists, tuples, tensors (any device; saved as contiguous CPU
            copies with their dtype), ints, floats (NaN and infinities included), bools, str and None.
        kind: ``"search"`` or ``"weights"`` (what ``load_state`` will insist on).
        meta: a small JSON value stored beside the state (e.g. the space and arch of a weights file).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: an unknown ``kind``.
        TypeError: a value of another type somewhere in ``state`` (its path is named), or a ``meta`` that
            is not JSON.
    """
    import safetensors.torch

    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; one of {sorted(KINDS)}")
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, (), tensors)
    try:
        header = json.dumps({"format": FORMAT, "version": VERSION, "kind": kind, "meta": meta, "state": tree},
                            allow_nan=False, separators=(",", ":"))
    except ValueError as err:  # NaN in meta (the state's floats are tagged)
        raise TypeError(f"checkpoint meta is not plain JSON ({err})") from None
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    safetensors.torch.save_file(tensors, str(tmp), metadata={KEY: header})
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(p)
    return p


def load_state(path: str | Path, *, kind: str, what: str, fix: str,
               map_location: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Read a checkpoint of ``kind`` written by ``save_state``; never unpickles anything.

    Args:
        path: the file.
        kind: the kind it must be (``"search"`` or ``"weights"``).
        what: how the user named it, for messages (``"checkpoint"``, ``"--weights"``).
        fix: what the user should do when it cannot be read; ends every message.
        map_location: device for the tensors (default: the CPU).

    Returns:
        ``(state, meta)``: the structure as saved (tensors as tensors) and the meta value.

    Raises:
        HwnasError: one line (``what``, the path, the problem, ``fix``) for a missing file, a pickle
            (``torch.save`` or older hwnas), a truncated, corrupted or non-safetensors file, or a checkpoint
            of another format, version or kind.
    """
    import safetensors.torch

    p = Path(path)

    def fail(problem: str) -> HwnasError:
        return HwnasError(f"{what} {p} {problem}; {fix}")

    if p.is_dir():
        raise fail("is a folder, not a checkpoint file")
    if not p.is_file():
        raise fail("does not exist")
    try:
        data = p.read_bytes()
    except OSError as err:
        raise fail(f"cannot be read ({err.strerror or err})") from None
    info = _read_header(data, fail)
    if info["kind"] != kind:
        raise fail(f"is {KINDS[info['kind']]}, not {KINDS[kind]}")
    try:
        tensors = safetensors.torch.load(data)
        if str(map_location) != "cpu":
            tensors = {k: t.to(map_location) for k, t in tensors.items()}
        return _decode(info["state"], tensors), info.get("meta")
    except _Bad as err:
        raise fail(f"is corrupted or not an hwnas checkpoint ({err})") from None
    except RecursionError:
        raise fail("is corrupted or not an hwnas checkpoint (its structure is nested too deeply)") from None
    except Exception as err:  # noqa: BLE001 - safetensors' Rust errors (truncated data, bad offsets, dtypes)
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise fail(f"is corrupted or truncated ({msg})") from None


def checkpoint_kind(path: str | Path) -> str | None:
    """The kind of the hwnas checkpoint at ``path`` (reading only its header), or None when it is none."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            data = head + (f.read(n) if 2 <= n <= _MAX_HEADER else b"")
    except OSError:
        return None
    try:
        return _read_header(data, HwnasError)["kind"]
    except HwnasError:
        return None


# ---- the file ------------------------------------------------------------------------------------------

def _read_header(data: bytes, fail: Callable[[str], HwnasError]) -> dict[str, Any]:
    """The hwnas record in the safetensors header at the start of ``data`` (the tensor data may follow);
    ``fail(problem)`` builds the error for anything else."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    looks = 2 <= n <= _MAX_HEADER and data[8:9] == b"{"
    if not (looks and len(data) >= 8 + n):
        if data[:4] == b"PK\x03\x04" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
            raise fail(PICKLED)
        if looks:
            raise fail(f"is truncated (its header announces {n} bytes, the file has {len(data) - 8})")
        raise fail("is corrupted or not an hwnas checkpoint (not a safetensors file)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
        record = header["__metadata__"][KEY] if isinstance(header, dict) else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise fail("is corrupted or not an hwnas checkpoint (its safetensors header is not JSON)") from None
    except (KeyError, TypeError):
        raise fail("is a safetensors file but not an hwnas checkpoint (no 'hwnas' metadata)") from None
    try:
        info = json.loads(record) if isinstance(record, str) else None
    except (ValueError, RecursionError):
        info = None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise fail("is a safetensors file but not an hwnas checkpoint (its 'hwnas' metadata is not a "
                   f"{FORMAT} record)")
    if info.get("version") != VERSION:
        raise fail(f"has checkpoint format version {info.get('version')!r}; this hwnas reads version {VERSION} "
                   "(use the hwnas version that wrote it)")
    got = info.get("kind")
    if got not in KINDS:
        raise fail(f"is an hwnas checkpoint of unknown kind {got!r}")
    if "state" not in info:
        raise fail("is corrupted or not an hwnas checkpoint (no state)")
    return info


class _Bad(ValueError):
    """A state structure that this format cannot have written."""


def _encode(obj: Any, path: tuple[str, ...], tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else {"float": repr(float(obj))}
    if isinstance(obj, torch.Tensor):
        name = "/".join(path) or "tensor"
        if name in tensors:
            name = next(f"{name}#{i}" for i in range(2, len(tensors) + 3) if f"{name}#{i}" not in tensors)
        tensors[name] = obj.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        return {"tensor": name}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {k!r} at {'/'.join(path) or 'the top'} is a "
                                f"{type(k).__name__}; only str and int keys are stored")
            items.append([k if isinstance(k, str) else int(k), _encode(v, (*path, str(k)), tensors)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list":
                [_encode(v, (*path, str(i)), tensors) for i, v in enumerate(obj)]}
    raise TypeError(f"checkpoint value at {'/'.join(path) or 'the top'} is a {type(obj).__name__}; only dicts, "
                    "lists, tuples, tensors, numbers, bools, str and None are stored")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((tag, v),) = node.items()
        if tag == "dict" and isinstance(v, list):
            out: dict[Any, Any] = {}
            for item in v:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
                        and not isinstance(item[0], bool)):
                    raise _Bad("a dict entry is not a [str or int key, value] pair")
                out[item[0]] = _decode(item[1], tensors)
            return out
        if tag in ("list", "tuple") and isinstance(v, list):
            seq = [_decode(x, tensors) for x in v]
            return tuple(seq) if tag == "tuple" else seq
        if tag == "float" and v in ("nan", "inf", "-inf"):
            return float(v)
        if tag == "tensor" and isinstance(v, str):
            if v not in tensors:
                raise _Bad(f"tensor {v!r} is missing from its tensor table")
            return tensors[v]
    raise _Bad(f"unexpected node {json.dumps(node)[:60]}")

"""File I/O: atomic writes (nothing already computed is lost when a process dies mid-write) and JSON reads
whose errors name the file and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: str | Path, what: str) -> Any:
    """Load a JSON file, turning a missing or broken file into a one-line ``HwnasError`` naming ``what``."""
    from .errors import HwnasError

    p = Path(path)
    if not p.is_file():
        raise HwnasError(f"{what} {p} does not exist; check the path")
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HwnasError(f"{what} {p} is not valid JSON ({err}); regenerate it (rerun the command that wrote it)") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(p)


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())

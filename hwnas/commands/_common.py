"""Helpers shared by the command modules: reading arch files, printing JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import HwnasError


def read_json(path: str | Path, what: str) -> Any:
    """Load a JSON file, turning a missing or broken file into a one-line HwnasError."""
    p = Path(path)
    if not p.is_file():
        raise HwnasError(f"{what} {p} does not exist; check the path")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HwnasError(f"{what} {p} is not valid JSON ({err}); regenerate it") from None


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))

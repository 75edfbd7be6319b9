"""Optional parts of hwnas and the pip extra that installs each (``pip install 'hwnas[ray]'``).

The core (torch, numpy, onnx, onnxruntime) runs a local search, training and export; Ray sweeps need
``[ray]`` and the report's figures ``[report]``. A missing extra is a one-line error naming the extra and
what to do without it, never an ImportError traceback.
"""

from __future__ import annotations

import importlib.util

from .errors import ConfigError

EXTRAS = {"ray": "ray", "matplotlib": "report"}  # module -> the extra that installs it


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken parent
        return False


def missing_note(module: str, purpose: str) -> str:
    """``"<purpose> needs <module>, which is not installed: pip install 'hwnas[<extra>]'"``."""
    return f"{purpose} needs {module}, which is not installed: pip install 'hwnas[{EXTRAS[module]}]'"


def require(module: str, purpose: str, alternative: str = "") -> None:
    """Raise a one-line ``ConfigError`` when ``module`` is missing (``alternative``: what works without it)."""
    if not installed(module):
        raise ConfigError(missing_note(module, purpose) + (f" ({alternative})" if alternative else ""))

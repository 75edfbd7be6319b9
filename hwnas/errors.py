"""The one exception family the CLI turns into a one-line message (no traceback) and exit code 2.

Every error a user can cause (bad names, bad files, missing data, impossible budgets) is a
``HwnasError`` whose message names the problem and the fix.
"""

from __future__ import annotations


class HwnasError(Exception):
    """Base of user-facing errors. ``str(err)`` is the whole message shown to the user."""


class ConfigError(HwnasError, ValueError):
    """A config value or flag that cannot work; the message says which values would."""


class DataError(HwnasError, FileNotFoundError):
    """A dataset folder that is missing or malformed; the message says what was expected where."""

"""Runners: how hwnas reaches a device to time ONNX models there (``hwnas profile --runner R``).

* ``local``: this host, in-process, one quiet pinned core;
* ``ssh://user@host[:port][?python=...&dir=...&identity=...&known_hosts=...&strict=...]``: a board or phone
  with Python, numpy and onnxruntime (``ssh``/``scp``; resumes after a dropped connection);
* ``adb[:SERIAL][?bin=...|python=...]``: an Android phone, with ``onnxruntime_perf_test`` or the Python kit;
* ``offline:FOLDER``: an air-gapped device (carry the folder there and back).
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import EPS, Runner, RunnerError, check_provider, provider_name
from .local import LocalRunner

EXAMPLES = ("local", "ssh://pi@192.168.1.20", "adb:R58M123ABC", "offline:kits/pixel7")


def get_runner(spec: str, ssh_options: Sequence[str] = ()) -> Runner:
    """The runner a ``--runner`` value names (see the module docstring).

    Raises:
        RunnerError: an unknown or malformed spec (the message lists the forms).
    """
    if spec == "local":
        return LocalRunner()
    if spec.startswith("ssh://"):
        from .ssh import SshRunner

        return SshRunner(spec, ssh_options)
    if spec == "adb" or spec.startswith(("adb:", "adb?")):
        from .adb import AdbKitRunner, AdbPerfTestRunner, parse_spec

        return AdbKitRunner(spec) if "python" in parse_spec(spec)[1] else AdbPerfTestRunner(spec)
    if spec.startswith("offline:"):
        from .offline import OfflineRunner

        return OfflineRunner(spec)
    raise RunnerError(f"unknown runner {spec!r}; use one of: {', '.join(EXAMPLES)}")


__all__ = ["EPS", "LocalRunner", "Runner", "RunnerError", "check_provider", "get_runner", "provider_name"]

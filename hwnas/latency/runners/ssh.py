"""``--runner ssh://user@host[:port][?python=...&dir=...&identity=...&known_hosts=...&strict=...]``: a board
or phone with Python, numpy and onnxruntime, reached with the system ``ssh`` and ``scp`` (no extra Python
package). Query parameters:

* ``python``: the device's Python (default ``python3``); ``dir``: work dir there (default ``/tmp/hwnas-kit``);
* ``identity``: private key file (``ssh -i``); ``known_hosts``: known-hosts file (``UserKnownHostsFile``);
* ``strict``: ``StrictHostKeyChecking`` = ``yes`` (default), ``accept-new`` or ``no``.

More ssh options with ``--ssh-option NAME=VALUE`` (repeatable, ``ssh -o``); ssh never prompts
(``BatchMode=yes``): use a key.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .base import RunnerError
from .remote import KitRunner

STRICT = ("yes", "accept-new", "no")
QUERY = ("python", "dir", "identity", "known_hosts", "strict")


def _query(spec: str, query: str) -> dict[str, str]:
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(params) - set(QUERY))
    if unknown:
        raise RunnerError(f"unknown option {unknown[0]!r} in runner {spec!r}; use {', '.join(QUERY)} "
                          "(e.g. ssh://pi@board?python=/usr/bin/python3&dir=/tmp/hwnas-kit)")
    return params


class SshRunner(KitRunner):
    """Drives the kit over ssh/scp (``BatchMode``, ``ConnectTimeout`` 15 s, keepalives)."""

    def __init__(self, spec: str, ssh_options: Sequence[str] = ()) -> None:
        super().__init__()
        url = urlsplit(spec)
        if url.scheme != "ssh" or not url.hostname:
            raise RunnerError(f"runner {spec!r} is not ssh://[user@]host[:port][?python=...&dir=...]")
        try:
            self.port = url.port or 22
        except ValueError:
            raise RunnerError(f"runner {spec!r} has an invalid port") from None
        q = _query(spec, url.query)
        self.spec = spec
        self.target = f"{url.username}@{url.hostname}" if url.username else url.hostname
        self.python, self.dir = q.get("python", "python3"), q.get("dir", "/tmp/hwnas-kit")
        strict = q.get("strict", "yes")
        if strict not in STRICT:
            raise RunnerError(f"runner {spec!r}: strict={strict!r}; use one of {', '.join(STRICT)}")
        opts = ["BatchMode=yes", "ConnectTimeout=15", "ServerAliveInterval=10", "ServerAliveCountMax=3",
                f"StrictHostKeyChecking={strict}"]
        if "known_hosts" in q:
            opts.append(f"UserKnownHostsFile={Path(q['known_hosts']).expanduser()}")
        for o in ssh_options:
            if "=" not in o:
                raise RunnerError(f"--ssh-option {o!r} is not NAME=VALUE (e.g. --ssh-option ConnectTimeout=30)")
            opts.append(o)
        self.opts = [a for o in opts for a in ("-o", o)]
        if "identity" in q:
            self.opts += ["-i", str(Path(q["identity"]).expanduser())]
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise RunnerError(f"`{tool}` is not installed on this host; install OpenSSH's client "
                                  "(apt-get install openssh-client) to use an ssh:// runner")

    def where(self) -> str:
        return f"{self.target}:{self.port}"

    def _argv(self, command: str) -> list[str]:
        return ["ssh", *self.opts, "-p", str(self.port), self.target, command]

    def _push(self, local: Path, remote_parent: str) -> None:
        argv = ["scp", "-q", "-r", *self.opts, "-P", str(self.port), str(local), f"{self.target}:{remote_parent}/"]
        proc = self._run_push(argv)
        if proc.returncode != 0:
            raise RunnerError(f"copying {local.name} to {self.where()}:{remote_parent} failed: "
                              f"{proc.stderr.strip()[-300:]}; run the same command again (it resumes)")

    def _run_push(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RunnerError(f"cannot copy to {self.where()} ({err}); run the same command again (it resumes)") from None

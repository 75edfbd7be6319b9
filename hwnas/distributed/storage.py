"""Shard folders on shared storage named by a URI (``s3://``, ``gs://``, ``abfs://``, ``hdfs://``, ``file://``).

Without a URI a run folder on a shared mount (NFS, EFS, a ReadWriteMany PVC) is enough and this module is
not used. With one, each shard works in a local scratch folder that it pulls from the URI when it starts
(so a restarted actor, on any node, resumes from the last pushed checkpoint) and pushes back after every
epoch checkpoint and at the end. Each file is uploaded under a temporary name and moved into place, so a
shard killed mid-upload never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow
import pyarrow.fs as pfs

from ..errors import ConfigError


class Storage:
    """``<uri>/shards/<key>/...`` through a pyarrow filesystem."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            self.fs, self.root = pfs.FileSystem.from_uri(uri)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, ValueError, OSError) as err:
            raise ConfigError(f"storage URI {uri!r} cannot be opened ({err}); use s3://bucket/path, gs://..., "
                              "file:///abs/path, or drop --storage and put --out on a shared mount") from None
        self.root = self.root.rstrip("/")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def read_text(self, *parts: str) -> str | None:
        """A file's text, or None when it does not exist."""
        path = self._path(*parts)
        if self.fs.get_file_info(path).type != pfs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read().decode()

    def pull(self, key: str, local: Path) -> None:
        """Copy ``shards/<key>/`` into ``local`` (nothing happens for a shard not started yet)."""
        remote = self._path("shards", key)
        local.mkdir(parents=True, exist_ok=True)
        for info in self.fs.get_file_info(pfs.FileSelector(remote, allow_not_found=True, recursive=True)):
            if info.type != pfs.FileType.File or info.path.endswith(".part"):
                continue
            dest = local / info.path[len(remote) + 1:]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(info.path) as src, open(dest, "wb") as out:
                out.write(src.read())

    def push(self, local: Path, key: str) -> None:
        """Upload every file of ``local`` to ``shards/<key>/`` (temporary name, then moved into place)."""
        remote = self._path("shards", key)
        self.fs.create_dir(remote, recursive=True)
        for p in sorted(local.rglob("*")):
            if not p.is_file() or p.suffix == ".tmp":
                continue
            dest = f"{remote}/{p.relative_to(local).as_posix()}"
            self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(dest + ".part") as out:
                out.write(p.read_bytes())
            self.fs.move(dest + ".part", dest)

    def write_text(self, name: str, text: str) -> None:
        """A run-level file (config.yaml, pareto.json) at the root of the URI."""
        self.fs.create_dir(self.root, recursive=True)
        with self.fs.open_output_stream(self._path(name) + ".part") as out:
            out.write(text.encode())
        self.fs.move(self._path(name) + ".part", self._path(name))


def working_folder(key: str, shard_dir: Path, uri: str | None, tag: str = "") -> tuple[Path, Callable[[], None] | None]:
    """Where a shard process works, and what saves its progress after each checkpoint.

    Without a URI: ``shard_dir`` itself (on storage every node mounts), nothing to upload. With one: a fresh
    scratch folder pulled from the URI, and the function that uploads it back.
    """
    if not uri:
        shard_dir.mkdir(parents=True, exist_ok=True)
        return shard_dir, None
    storage = Storage(uri)
    local = Path(tempfile.mkdtemp(prefix=f"hwnas-{key}{tag}-"))
    storage.pull(key, local)
    return local, lambda: storage.push(local, key)

"""Preflight: what a search or sweep checks before it builds, schedules or starts anything.

A sweep used to find a missing ``--data-root`` only after Ray had started (once per shard) and an
unreachable ``--ray-address`` only after ``ray.init`` had retried for minutes. ``preflight`` checks, in this
process and within seconds, that the dataset's files are there and sound (present, readable, headers that
match their sizes), that the Ray cluster to join answers, and that the run folder can be written. Each
failure is one ``HwnasError`` line naming the problem and the fix.

This module never imports ``ray`` (only ``hwnas.distributed`` does): the cluster check is a TCP connect
and one read-only gRPC call to the service the address names.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ._extras import require
from .config import RayConfig, SearchConfig
from .data import check_headers, check_idx, check_mnist_pair, cifar10_files, mnist_files, open_npz, scan
from .errors import ConfigError, DataError
from .run import RunFolder

# a read-only call of each Ray service a run can join (client: ray://), its name, and a hint for a swapped port
_RAY_SERVICES = {
    False: ("/ray.rpc.NodeInfoGcsService/GetClusterId", "Ray's GCS", "the client server's port (10001) needs ray://"),
    True: ("/ray.rpc.RayletDriver/ClusterInfo", "Ray's client server", "the GCS port (6379) takes no ray://"),
}
_ADDRESS_FORMS = "auto, HOST:6379 or ray://HOST:10001"


def preflight(cfg: SearchConfig, ray_cfg: RayConfig, run_dir: str | Path | None = None) -> None:
    """Run every check that applies to a search or sweep, before anything is scheduled or Ray starts.

    Checks, in order: the data of ``cfg`` (``check_data``; shards differ only in target, seed and sub-space,
    so this covers every shard), the Ray cluster the run will join (``check_ray_address``; only with Ray
    enabled, an address given and no Ray session already open in this process), and that ``run_dir`` can be
    created and locked (``check_run_dir``; it is created, as the run would a moment later).

    With a Ray Client address (``ray://``) the data is not checked: the driver's files are not the
    cluster's, and the shards read the data root on the cluster's nodes.

    Raises:
        HwnasError: one line naming the problem and the fix (``DataError``, ``ConfigError``).
    """
    if ray_cfg.enabled:
        require("ray", "a sweep on Ray", "or pass --no-ray to run its shards here, one after another")
    address = ray_address(ray_cfg) if ray_cfg.enabled and not _ray_session_open() else None
    if not (address or "").startswith("ray://"):
        check_data(cfg)
    if address:
        source = "--ray-address" if ray_cfg.address and address == ray_cfg.address else "$RAY_ADDRESS"
        check_ray_address(address, source=source)
    if run_dir is not None:
        check_run_dir(run_dir)


# ---------------------------------------------------------------- data


def check_data(cfg: SearchConfig) -> None:
    """Check the files of ``cfg.dataset`` under ``cfg.data_root`` without loading them.

    ``mnist``: the IDX files the loader would read (``hwnas.data.mnist_files``: raw or ``.gz``, in the root or
    under ``MNIST/raw``) are readable, have the right magic number (2051 images, 2049 labels) and a size that
    matches their header, pairs agree on the count, and train and t10k images on the size. ``cifar10``:
    the batches of torchvision's ``cifar-10-batches-py/`` and ``batches.meta`` are there, non-empty and
    match torchvision's checksums (nothing is unpickled). ``imagefolder``: the folder structure
    (``hwnas.data.scan``: class folders, none empty, the same classes in every split folder) and the header
    and checksum of a sample of the images. ``npz``: the archive opens without pickle and has ``x``/``y`` (or
    the split arrays) of matching lengths. ``torchvision:NAME``: the name is a torchvision dataset and the
    root exists (unless ``download``). ``digits`` and ``fake`` need no files; with ``download``, ``mnist`` and
    ``cifar10`` fetch what is missing.

    Raises:
        DataError: the file or folder that is missing or bad, what was expected, and the fix.
    """
    check = _DATA_CHECKS.get(cfg.dataset.partition(":")[0])
    if check is not None:
        root = None if cfg.data_root is None else Path(cfg.data_root).expanduser()
        if cfg.dataset.startswith("torchvision:"):
            _check_torchvision(root, cfg.dataset.partition(":")[2], bool(getattr(cfg, "download", False)))
        elif cfg.dataset in ("mnist", "cifar10") and getattr(cfg, "download", False):
            return  # the loader fetches what is missing
        else:
            check(root)


def _check_mnist(root: Path | None) -> None:
    shapes = {}
    for split, (images, labels) in mnist_files(root).items():
        dims_x, dims_y = check_idx(images, 2051), check_idx(labels, 2049)
        check_mnist_pair(images, labels, dims_x[0], dims_y[0])
        shapes[split] = dims_x[1:]
    if len(set(shapes.values())) > 1:
        raise DataError(f"MNIST train images under {root} are {shapes['train']} but t10k images are {shapes['t10k']}; "
                        "replace them with files from one distribution")


def _check_cifar10(root: Path | None) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import calculate_md5

    folder = cifar10_files(root)[0].parent  # the batches the loader names, present
    fix = f"place an intact copy of cifar-10-batches-py/ (unpack cifar-10-python.tar.gz) under {folder.parent}"
    expected = [*CIFAR10.train_list, *CIFAR10.test_list, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]
    missing = [name for name, _ in expected if not (folder / name).is_file()]
    if missing:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)} (torchvision reads it beside the batches); "
                        f"{fix}")
    for name, md5 in expected:
        path = folder / name
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"cifar10: {path} is empty; {fix}")
        try:
            digest = calculate_md5(str(path))
        except OSError as err:
            raise DataError(f"cifar10: cannot read {path} ({err.strerror}); {fix}") from None
        if digest != md5:
            raise DataError(f"cifar10: {path} ({size} bytes) does not match CIFAR-10's checksum (truncated, corrupt "
                            f"or another file); {fix}")


def _check_imagefolder(root: Path | None) -> None:
    check_headers(scan(root))


def _check_torchvision(root: Path | None, name: str, download: bool) -> None:
    from .data.torchvision_any import dataset_class, need_root

    dataset_class(name)
    need_root(root, name, download)


_DATA_CHECKS: dict[str, Callable[[Path | None], None]] = {
    "mnist": _check_mnist, "cifar10": _check_cifar10, "imagefolder": _check_imagefolder, "npz": open_npz,
    "torchvision": lambda root: None,  # (check_data calls _check_torchvision with the name)
}


# ---------------------------------------------------------------- the Ray cluster


def ray_address(ray_cfg: RayConfig) -> str | None:
    """The cluster a sweep joins, picked as ``hwnas.distributed.cluster.ray_session`` does: ``ray_cfg.address``,
    else ``$RAY_ADDRESS``; None means the head ``hwnas cluster up`` runs (``ray_session`` checks it) or else a
    new local cluster, and so does ``local`` (always a new one). As in ``ray.init``, ``auto`` yields to a set
    ``$RAY_ADDRESS``."""
    env = os.environ.get("RAY_ADDRESS") or None
    address = ray_cfg.address or env
    return env if address == "auto" and env else address


def check_ray_address(address: str, timeout_s: float = 5.0, *, source: str = "--ray-address") -> None:
    """Check that the Ray cluster at ``address`` answers, waiting at most ``timeout_s`` per step (resolving the
    host, connecting, the answer), so that an unreachable cluster fails in seconds, not after minutes of retries.

    ``HOST:PORT`` (the GCS) and ``ray://HOST:PORT`` (the Ray Client server) get a TCP connect and one read-only
    gRPC call to that service (``_ray_rpc``; with ``$RAY_USE_TLS`` only the connect). ``auto`` checks the
    address that ``ray start`` left in ``ray_current_cluster`` under Ray's temp dir (``$RAY_TMPDIR``,
    ``$TMPDIR`` or ``/tmp``, then ``ray/``). ``local`` starts a new cluster: nothing to check. ``http(s)://``
    (the dashboard and Jobs API) cannot be joined by ``ray.init`` and is refused; other ``scheme://``
    addresses (custom Ray Client builders) are left to Ray.

    Args:
        address: the address as given (``--ray-address`` or ``$RAY_ADDRESS``).
        timeout_s: the most each step waits.
        source: where the address came from, for the message.

    Raises:
        ConfigError: one line naming the address, the cause (refused, timed out, unknown host, no running
            cluster for ``auto``, not a Ray port) and the fix.
    """
    unset = "; or unset RAY_ADDRESS to start a local cluster" if source == "$RAY_ADDRESS" else ""
    fix = f"start the head with `ray start --head`, or check {source} ({_ADDRESS_FORMS}){unset}"
    if address.startswith(("http://", "https://")):
        raise ConfigError(f"{source} {address} is an HTTP address (Ray's dashboard and Jobs API), which a sweep "
                          f"cannot join: pass the cluster's address ({_ADDRESS_FORMS}), or submit the sweep as a job "
                          f"with `ray job submit --address {address} -- hwnas search ...`{unset}")
    if address == "local" or ("://" in address and not address.startswith("ray://")):
        return
    label, target = f"{source} {address}", address.removeprefix("ray://")
    if address == "auto":
        target, found_in = _auto_address(source, fix)
        label = f"{source} auto ({target}, from {found_in})"
    host, port = _host_port(target, label, fix)
    problem = _connect(host, port, timeout_s)
    if problem is None and os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        problem = _ray_rpc(host, port, address.startswith("ray://"), timeout_s)
    if problem:
        raise ConfigError(f"cannot reach the Ray cluster at {label}: {problem}; {fix}")


def _ray_session_open() -> bool:
    """A Ray session already open in this process (a notebook, a test): ``ray_session`` reuses it."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(getattr(ray, "is_initialized", lambda: False)())


def _ray_address_file() -> Path:
    """Where ``ray start`` writes the current cluster's address (``ray._common.utils.get_ray_address_file``)."""
    tmp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return Path(tmp or "/tmp") / "ray" / "ray_current_cluster"


def _auto_address(source: str, fix: str) -> tuple[str, Path]:
    path = _ray_address_file()
    try:
        address = path.read_text().strip()
    except FileNotFoundError:
        address = ""
    except OSError as err:
        raise ConfigError(f"{source} auto: cannot read {path} ({err.strerror}); {fix}") from None
    if not address:
        raise ConfigError(f"{source} auto found no running Ray cluster on this machine (no {path}, which "
                          f"`ray start --head` writes); {fix}")
    return address, path


def _host_port(address: str, label: str, fix: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{label} is not HOST:PORT (a host and a port number); {fix}")
    return host, int(port)


def _connect(host: str, port: int, timeout_s: float) -> str | None:
    """Why a TCP connection to ``host:port`` fails (unknown host, refused, timed out), or None."""
    problem = _resolve(host, port, timeout_s)
    if problem:
        return problem
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except ConnectionRefusedError:
        return f"{host}:{port} refused the connection (nothing listens there)"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s (timed out: a wrong or firewalled address?)"
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    return None


def _resolve(host: str, port: int, timeout_s: float) -> str | None:
    """Why ``host`` cannot be resolved within ``timeout_s`` (getaddrinfo has no timeout of its own), or None."""
    outcome: list[OSError | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        return f"could not resolve the host {host!r} within {timeout_s:g} s (timed out: no DNS answer)"
    if outcome[0] is not None:
        return f"unknown host {host!r} ({outcome[0].strerror or outcome[0]})"
    return None


def _ray_rpc(host: str, port: int, client: bool, timeout_s: float) -> str | None:
    """Why ``host:port`` is not the Ray service it should be (GCS, or the client server for ``ray://``), or None.

    One read-only call (``GetClusterId`` / ``ClusterInfo``) with an empty request, through ``grpc`` (which
    ``ray[default]`` brings; not ``ray``). Any answer of the service counts, a refusal too (``UNAUTHENTICATED``
    without the cluster's token); a server without that service (another gRPC server, an HTTP/2 proxy)
    answers ``UNIMPLEMENTED``. Without ``grpc`` (a minimal Ray install cannot join clusters anyway) the connect
    is all that is checked.
    """
    try:
        import grpc
    except ImportError:
        return None
    method, what, hint = _RAY_SERVICES[client]
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary(method)(b"", timeout=timeout_s)
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return (f"{target} accepted the connection but did not answer within {timeout_s:g} s "
                        "(timed out: not a Ray port?)")
            if code == grpc.StatusCode.UNAVAILABLE:
                return f"{target} does not answer as a gRPC server ({details})"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return f"{target} answers, but is not {what}{f' ({details})' if details else ''}; {hint}"
    return None


# ---------------------------------------------------------------- the run folder


def check_run_dir(run_dir: str | Path) -> None:
    """Check that the run folder can be created and its writer lock taken, as the run is about to do
    (``hwnas.run.RunFolder.writer``: same checks, same one-line errors); leaves the folder created and the
    lock released.

    Raises:
        HwnasError: ``run_dir`` is a file, under a file, not writable, or being written by another process.
    """
    with RunFolder(run_dir).writer("hwnas search (preflight)"):
        pass

"""A checkpoint is data, never code: a pickle payload planted wherever hwnas reads checkpoints never runs.

Each payload is a ``torch.save`` file holding an object whose unpickling touches a marker file; the setup
proves it live (a plain ``torch.load(weights_only=False)`` creates the marker). It is planted under the
legacy name (``checkpoint.pt``, what older hwnas wrote) and under the new one (``checkpoint.safetensors``),
then every entry point must fail with exit 2 and one ``hwnas: error:`` line, and the marker must not exist.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import hwnas
from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.run import CHECKPOINT, LEGACY_CHECKPOINT

NAMES = [LEGACY_CHECKPOINT, CHECKPOINT]
# a tiny single search; the reruns below pass the same flags so the run folder is resumed, not refused
SEARCH = ["--relaxation", "single-path", "--epochs", "2", "--warmup-epochs", "1", "--data-limit", "100",
          "--threads", "1", "--no-progress"]
API = dict(relaxation="single-path", epochs=2, warmup_epochs=1, data_limit=100, threads=1)


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def plant(path: Path, marker: Path) -> Path:
    """Write a live payload to ``path`` (whatever its name says) and prove that torch.load would run it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"net": Payload(marker), "state_dict": Payload(marker), "epoch": 0}, path)
    assert not marker.exists()
    with open(path, "rb") as f:  # a file object: recent torch hands a *.safetensors *path* to safetensors
        torch.load(f, map_location="cpu", weights_only=False)
    assert marker.exists(), "the payload is live: a plain torch.load runs it"
    marker.unlink()
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PAYLOAD-RAN"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    assert main(["search", *SEARCH, "--out", str(run)]) == 0
    assert (run / CHECKPOINT).is_file() and (run / "arch.json").is_file()
    return run


def victim(base_run: Path, tmp_path: Path, name: str, marker: Path) -> Path:
    """A copy of the finished run whose checkpoint is replaced by a payload named ``name``."""
    run = Path(shutil.copytree(base_run, tmp_path / "run"))
    (run / CHECKPOINT).unlink()
    plant(run / name, marker)
    return run


def refused(capsys, argv: list[str], marker: Path) -> str:
    """The command exits 2 with one ``hwnas: error:`` line about a pickle, and the payload did not run."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), "the payload ran"
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("hwnas: error:") and "Traceback" not in err, err
    assert "pickled checkpoint" in err and "never loads pickles" in err, err
    return err


def api_refused(fn, marker: Path, *args, **kw) -> None:
    with pytest.raises(HwnasError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in msg and "pickled checkpoint" in msg, msg


# ---- the CLI ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_export_run(base_run, tmp_path, capsys, marker, name):
    run = victim(base_run, tmp_path, name, marker)
    err = refused(capsys, ["export", str(run), "--out", str(tmp_path / "exp")], marker)
    assert name in err and not (tmp_path / "exp").exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_export_weights(base_run, tmp_path, capsys, marker, suffix):
    weights = plant(tmp_path / f"weights{suffix}", marker)
    err = refused(capsys, ["export", str(base_run), "--weights", str(weights), "--out", str(tmp_path / "exp")],
                  marker)
    assert "--weights" in err and "hwnas train" in err


@pytest.mark.parametrize("name", NAMES)
def test_search_rerun_and_resume(base_run, tmp_path, capsys, marker, name):
    run = victim(base_run, tmp_path, name, marker)
    refused(capsys, ["search", *SEARCH, "--out", str(run)], marker)
    refused(capsys, ["search", "--resume", str(run), "--no-progress"], marker)
    assert (run / name).is_file(), "the planted file is left for the user to inspect"


@pytest.mark.parametrize("name", NAMES)
def test_train_inherit(base_run, tmp_path, capsys, marker, name):
    run = victim(base_run, tmp_path, name, marker)
    refused(capsys, ["train", str(run / "arch.json"), "--inherit", str(run), "--epochs", "1", "--data-limit", "100",
                     "--threads", "1", "--no-progress"], marker)


# ---- the Python API --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_python_api(base_run, tmp_path, marker, name):
    run = victim(base_run, tmp_path, name, marker)
    api_refused(hwnas.export, marker, run, tmp_path / "exp")
    api_refused(hwnas.search, marker, out=run, **API)
    import json

    api_refused(hwnas.train, marker, json.loads((run / "arch.json").read_text()), inherit=run, epochs=1,
                data_limit=100, threads=1)
    weights = plant(tmp_path / "w.pt", marker)
    api_refused(hwnas.export, marker, base_run, tmp_path / "exp", weights=weights)


# ---- a Ray shard actor reading its shard folder from a storage URI ---------------------------------------

ray = pytest.importorskip("ray")
from test_distributed import local_ray  # noqa: E402,F401 - the module's real local Ray cluster


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_shard_actor_on_a_storage_uri(local_ray, tmp_path, capsys, marker):  # noqa: F811
    """Two shards whose folders at a ``file://`` URI hold a payload (one per name); each actor pulls its
    folder into a scratch folder and must refuse it, and the driver reports both as one line."""
    bucket, run = tmp_path / "bucket", tmp_path / "run"
    for key, name in zip(("s0", "s1"), NAMES, strict=True):
        plant(bucket / "shards" / key / name, marker)
    err = refused(capsys, ["search", *SEARCH, "--seeds", "0,1", "--fine-tune-epochs", "0", "--no-report",
                           "--storage", f"file://{bucket}", "--out", str(run)], marker)
    assert "2 shard(s) failed" in err and LEGACY_CHECKPOINT in err and CHECKPOINT in err, err

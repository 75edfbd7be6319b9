"""Device kit: the exported runner works with only numpy + onnxruntime, and its results become a table."""

from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
from conftest_latency import assert_one_line_error, run_hwnas

from hwnas.latency import KitError, LatencyModel, export_kit, import_results, load_table
from hwnas.latency.protocol import KIT_VERSION
from hwnas.space import get_space

BLOCKER = textwrap.dedent("""\
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "hwnas"):
                raise ImportError(name + " is not available on this device")
            return None

    sys.meta_path.insert(0, _Block())
""")


@pytest.fixture(scope="module")
def kit_results(tmp_path_factory):
    """Export an mbconv kit, run run_kit.py where torch and hwnas cannot be imported, return paths."""
    root = tmp_path_factory.mktemp("kit")
    kit, blocker = root / "kit", root / "blocker"
    manifest = export_kit(get_space("mbconv"), kit)
    for pkg in ("torch", "hwnas"):
        (blocker / pkg).mkdir(parents=True)
        (blocker / pkg / "__init__.py").write_text(f"raise ImportError('{pkg} is not available on this device')\n")
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(blocker), "OMP_NUM_THREADS": "1"}
    for mod in ("torch", "hwnas"):
        probe = subprocess.run([sys.executable, "-c", f"import {mod}"], env=env, cwd=kit, capture_output=True)
        assert probe.returncode != 0, f"{mod} should not be importable in the device environment"
    proc = subprocess.run([sys.executable, "run_kit.py", "--out", "results.json", "--runs", "3", "--trials", "1",
                           "--warmup-runs", "1", "--warmup-s", "0"], env=env, cwd=kit, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return manifest, kit / "results.json"


def test_kit_has_manifest_models_and_standalone_runner(kit_results):
    manifest_path, _ = kit_results
    manifest = json.loads(manifest_path.read_text())
    kit = manifest_path.parent
    space = get_space("mbconv")
    assert manifest["kit_version"] == KIT_VERSION and manifest["space"] == "mbconv"
    assert len(manifest["units"]) == 50 and all((kit / u["file"]).is_file() for u in manifest["units"].values())
    assert (kit / manifest["identity"]["file"]).is_file()
    assert set(manifest["units"]) == {u.key(v) for u in space.latency_units() for v in space.unit_entries(u)}
    tree = ast.parse((kit / "run_kit.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {"numpy", "onnxruntime"} <= imported and not imported & {"torch", "hwnas", "onnx"}


def test_results_import_into_a_table_that_predicts(kit_results, tmp_path):
    _, results = kit_results
    res = json.loads(results.read_text())
    assert res["protocol"]["runs"] == 3 and res["device"]["onnxruntime"]
    table, out = import_results(results, "phone-1t", tmp_path / "phone.json")
    assert out.is_file() and table.source == "devicekit" and table.device["name"] == "phone-1t"
    loaded = load_table(out, check_host=False)
    assert loaded.entries == table.entries and loaded.overhead_ms == res["overhead_ms"]
    space = get_space("mbconv")
    model = LatencyModel(space, loaded)
    arch = space.sample(random.Random(0))
    assert model.predict(arch) > 0
    with pytest.raises(KitError, match="already exists"):
        import_results(results, "phone-1t", out)


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r.update(kit_version=KIT_VERSION + 1), f"device kit version {KIT_VERSION + 1}"),
    (lambda r: r.update(space="seed-cnn"), "another version of space 'seed-cnn'"),
    (lambda r: r["entries"].pop(sorted(r["entries"])[0]), "python run_kit.py"),
    (lambda r: r.pop("kit_version"), "not a device-kit results file"),
])
def test_bad_results_are_clear_errors(kit_results, tmp_path, change, fragment):
    _, results = kit_results
    res = json.loads(results.read_text())
    change(res)
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(res))
    out = tmp_path / "t.json"
    with pytest.raises(KitError, match=fragment.replace("(", r"\(")):
        import_results(bad, "phone-1t", out)
    assert not out.exists()


def test_cli_import_and_export_errors(kit_results, tmp_path):
    _, results = kit_results
    out = tmp_path / "cli.json"
    proc = run_hwnas("devicekit", "import", str(results), "--device", "phone-1t", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "50 units" in proc.stdout and load_table(out, check_host=False).device["name"] == "phone-1t"
    res = json.loads(results.read_text())
    res["kit_version"] = 0
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(res))
    assert_one_line_error(run_hwnas("devicekit", "import", str(bad), "--device", "x-1t", "--out", str(tmp_path / "y")),
                          "device kit version 0", "hwnas devicekit export")


def test_export_refuses_a_folder_with_another_spaces_kit(kit_results):
    manifest, _ = kit_results
    with pytest.raises(KitError, match="kit of space 'mbconv'"):
        export_kit(get_space("seed-cnn"), manifest.parent)

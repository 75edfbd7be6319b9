"""Exports a mobile team can ship: metadata in every file, a model card, one operator config per artefact,
every artefact timed and the ``.ort`` style chosen, NNAPI/CoreML readiness, and a foreign device's export
that records predictions only. Real torch export, real onnxruntime sessions, a tiny digits search."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT

import hwnas
from hwnas.export import LatencyGapWarning, card, export, metadata
from hwnas.latency.protocol import Protocol
from hwnas.latency.table import save_table
from hwnas.space import get_space

FAST = Protocol(runs=30, trials=2, warmup_runs=3, warmup_s=0.01)
TINY = dict(relaxation="single-path", epochs=2, warmup_epochs=1, threads=1, data_limit=200)
PHONE = "pixel1-1t"
SHIPPED = ROOT / "latency_tables" / "amd-epyc-1t" / "seed-cnn.json"
pytestmark = [pytest.mark.filterwarnings("ignore::hwnas.export.LatencyGapWarning"),
              pytest.mark.filterwarnings("ignore::hwnas.latency.table.TableWarning")]


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ship") / "run"
    hwnas.search(out=out, **TINY)
    return out


@pytest.fixture(scope="module")
def here(seed_run, tmp_path_factory) -> tuple[Path, dict]:
    """--ort --int8 with a table of this host (synthetic, this host's fingerprint): everything is timed."""
    from conftest_latency import synthetic_table

    d = tmp_path_factory.mktemp("here")
    table = save_table(synthetic_table(get_space("seed-cnn"), device="here-1t"), d / "here-1t" / "seed-cnn.json")
    out = d / "exp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyGapWarning)
        return out, export(seed_run, out, ort=True, int8=True, latency_table=table, protocol=FAST)


@pytest.fixture(scope="module")
def phone(seed_run, tmp_path_factory) -> tuple[Path, dict]:
    """--ort --int8 with another device's table (the shipped one renamed to a phone's)."""
    obj = json.loads(SHIPPED.read_text())
    obj["device"].update(name=PHONE, cpu_model="Pixel 1 (imported)")
    obj["protocol"].update(runs=30, trials=2, warmup_runs=3, warmup_s=0.01)
    d = tmp_path_factory.mktemp("phone")
    table = d / PHONE / "seed-cnn.json"
    table.parent.mkdir()
    table.write_text(json.dumps(obj))
    out = d / "exp"
    return out, export(seed_run, out, ort=True, int8=True, latency_table=table)


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def test_metadata_in_every_file_matches_the_manifest(here):
    out, m = here
    assert set(m["artefacts"]) == {"model.onnx", "model.int8.onnx", "model.ort", "model.int8.ort"}
    for name in m["artefacts"]:
        props = metadata.read(out / name)  # .ort: through an onnxruntime session
        assert props == m["metadata_props"], name
    p = m["metadata_props"]
    assert json.loads(p["hwnas.preprocess"]) == m["preprocess"] and json.loads(p["hwnas.labels"]) == m["labels"]
    assert json.loads(p["hwnas.device"])["name"] == "here-1t" and p["author"] == "hwnas export"
    assert json.loads(p["hwnas.arch"])["arch_id"] == m["arch_id"]
    assert json.loads(p["hwnas.latency"]) == {f: a["latency"] for f, a in m["artefacts"].items()}


def test_preprocessing_is_what_the_loader_used(seed_run, here):
    from hwnas.search._runtime import load_for

    _, m = here
    splits = load_for(get_space("seed-cnn"), "digits", None, 0, 200)
    p = m["preprocess"]
    assert p["mean"] == pytest.approx(list(splits.mean)) and p["std"] == pytest.approx(list(splits.std))
    assert p["layout"] == "NCHW" and p["shape"] == [1, *splits.input_shape]
    assert p["value_range"] == list(splits.value_range) and p["resize"] == splits.resize
    assert m["labels"] == list(splits.class_names) == [str(i) for i in range(10)]
    # a raw test image normalised by the manifest's rule is exactly what the loader fed the network
    x = splits.test.tensors[0][:4].numpy()
    raw = x * np.array(p["std"]).reshape(1, -1, 1, 1) + np.array(p["mean"]).reshape(1, -1, 1, 1)
    assert raw.min() >= p["value_range"][0] - 1e-5 and raw.max() <= p["value_range"][1] + 1e-5


def test_model_card_has_every_section_and_no_absolute_path(here, tmp_path, monkeypatch):
    out, m = here
    text = (out / "README.md").read_text()
    for section in ("## Architecture", "## Accuracy", "## Latency", "## Operators", "## Mobile readiness",
                    "## Input, preprocessing and labels", "## How to run it", "## Limitations"):
        assert section in text, section
    assert m["arch_id"] in text and all(f"`{k}`" in text for k in m["arch"])
    assert "ai.onnxruntime" in text and "OrtSession" in text and "onnxruntime_cxx_api.h" in text
    assert "Batch 1 only" in text and f"int8 accuracy was measured on {m['int8']['accuracy_samples']}" in text
    assert "| `model.ort` |" in text and "measured" in text and "here-1t" in text
    assert "README.md" in m["files"]
    for s in (text, *_strings(m)):
        assert not re.search(r"(^|[\s`'\"(])/(tmp|work|home|root|usr|var)\b", s), s[:200]
        assert str(out.parent) not in s and ".tmp-" not in s
    # the card's Python snippet runs as written, in the export folder
    code = text.split("```python\n", 1)[1].split("```", 1)[0].replace("LABELS[", "labels[")
    monkeypatch.chdir(out)
    scope = {"labels": m["labels"]}
    exec(code, scope)  # noqa: S102  our own card
    assert scope["logits"].shape == (1, 10) and scope["label"] in m["labels"]


def test_card_shows_the_finalized_interval_and_seeds(here):
    _, m = here
    fin = {"accuracy": 0.91, "kind": "test accuracy, mean of 3 seeds trained from scratch for 5 epochs",
           "ci95": [0.88, 0.94], "seeds": 3, "runs": [0.9, 0.91, 0.92]}
    text = card.render({**m, "candidate_accuracy": fin})
    assert "95% interval [88.00%, 94.00%]" in text and "over 3 seed(s)" in text and "mean of 3 seeds" in text


def test_one_operator_config_per_artefact(here):
    out, m = here
    fp32 = (out / "model.required_operators.config").read_text()
    q = (out / "model.int8.required_operators.config").read_text()
    assert not (out / "required_operators.config").exists()
    assert m["ort"]["required_operators"] == "model.required_operators.config"
    assert m["int8"]["ort"]["required_operators"] == "model.int8.required_operators.config"
    for text, name in ((fp32, "model.ort"), (q, "model.int8.ort")):
        header = [line for line in text.splitlines() if line.startswith("#")]
        assert header == ["# Generated from model/s:", f"# - {name}"]
    assert "QLinearConv" in q or {"QuantizeLinear", "DequantizeLinear"} <= set(re.split(r"[;,\n]", q))
    assert not re.search(r"Quantize|QLinear|QGemm", fp32) and "Conv" in fp32
    ops = m["artefacts"]["model.int8.ort"]["operators"]
    assert any("QLinearConv" in v or "QuantizeLinear" in v for v in ops.values())


def test_ort_style_is_chosen_by_timing_both(here):
    out, m = here
    for entry in (m["ort"], m["int8"]["ort"]):
        choice = entry["style_choice"]
        cands = choice["candidates"]
        assert set(cands) == {"Fixed", "Runtime"}
        assert all(c["latency_ms"] > 0 and c["source"] == "measured" and c["device"] == "here-1t"
                   for c in cands.values())
        assert choice["chosen"] == min(cands, key=lambda s: cands[s]["latency_ms"]) == entry["optimization_style"]
        assert choice["chosen"] in choice["reason"] and "faster" in choice["reason"]
        assert entry["session_config"] == ({"session.enable_saved_runtime_optimizations": "1"}
                                           if choice["chosen"] == "Runtime" else {})
        lat = m["artefacts"][entry["file"]]["latency"]
        assert lat["latency_ms"] == cands[choice["chosen"]]["latency_ms"] and lat["source"] == "measured"
        assert entry["max_abs_err_vs_onnx"] <= 1e-3 or "int8" in entry["file"]
    for name in ("model.onnx", "model.int8.onnx"):
        lat = m["artefacts"][name]["latency"]
        assert lat["source"] == "measured" and lat["latency_ms"] > 0 and lat["device"] == "here-1t"
    x = np.zeros((1, 1, 28, 28), np.float32)
    so = ort.SessionOptions()
    for k, v in m["int8"]["ort"]["session_config"].items():
        so.add_session_config_entry(k, v)
    assert ort.InferenceSession(str(out / "model.int8.ort"), so).run(["y"], {"x": x})[0].shape == (1, 10)


def test_mobile_usability_per_onnx_file(here):
    out, m = here
    for name in ("model.onnx", "model.int8.onnx"):
        u = m["artefacts"][name]["mobile_usability"]
        for ep in ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram"):
            assert u[ep]["suitability"] in {"YES", "MAYBE", "NO"}
            assert 0 <= u[ep]["supported_nodes"] <= u[ep]["nodes"] and u[ep]["partitions"] >= 0
        assert u["dynamic_inputs"] == [] and u["recommendation"]
    assert "ai.onnx:QuantizeLinear" in m["artefacts"]["model.int8.onnx"]["mobile_usability"]["coreml_mlprogram"][
        "unsupported_ops"]
    assert "| `model.int8.onnx` |" in (out / "README.md").read_text()


def test_foreign_device_records_predictions_only(phone):
    out, m = phone
    dev = m["device"]
    assert dev["name"] == PHONE and not dev["this_host"] and dev["fingerprint"]["cpu_model"] == "Pixel 1 (imported)"
    assert dev["table"] == f"{PHONE}/seed-cnn.json" and m["latency_source"] == "predicted"
    assert m["measured_latency_ms"] is None
    for name, a in m["artefacts"].items():
        lat = a["latency"]
        assert lat["device"] == PHONE and lat["source"] in ("predicted", None), name
        assert not {"spread", "noisy", "host_latency_ms"} & set(lat)
    for name in ("model.onnx", "model.int8.onnx"):  # this host's timing only apart, labelled as such
        assert m["artefacts"][name]["host_latency_ms"] > 0 and "not on" in m["artefacts"][name]["host_note"]
    assert m["artefacts"]["model.onnx"]["latency"]["latency_ms"] == pytest.approx(m["predicted_latency_ms"])
    assert m["artefacts"]["model.ort"]["latency"]["latency_ms"] is None
    for entry in (m["ort"], m["int8"]["ort"]):  # nothing timed for the phone: the documented default
        assert entry["optimization_style"] == "Fixed" and entry["style_choice"]["candidates"] == {}
        assert "another device" in entry["style_choice"]["reason"] and entry["target_platform"] is None
    assert json.loads(metadata.read(out / "model.ort")["hwnas.device"])["name"] == PHONE
    text = (out / "README.md").read_text()
    assert f"**{PHONE}**" in text and "| `model.onnx` |" in text and "predicted" in text

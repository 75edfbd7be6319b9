"""A latency table of another device (a phone table made with the device kit): calibrate and validate refuse
it, export labels its prediction and never compares it with this host's timing, and the report labels the
front, tables and axes by the device each number belongs to."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from conftest import ROOT

import hwnas
from hwnas.cli import main
from hwnas.export import LatencyGapWarning
from hwnas.latency.calibrate import foreign_reasons
from hwnas.latency.model import LatencyModel
from hwnas.latency.table import read_table
from hwnas.report import load_run, plots, write_report
from hwnas.report.load import latency_source, measured_on, prediction_errors, source_label
from hwnas.run import read_candidate, write_candidate, write_front

PHONE = "pixel1-1t"
SHIPPED = ROOT / "latency_tables" / "amd-epyc-1t" / "seed-cnn.json"
TINY = dict(relaxation="single-path", epochs=2, warmup_epochs=1, threads=1, data_limit=100, fine_tune_epochs=0)
FAST = dict(runs=30, trials=2, warmup_runs=3, warmup_s=0.01)  # the table's protocol: export times with it
pytestmark = pytest.mark.filterwarnings("ignore::hwnas.latency.table.TableWarning")  # expected: a phone's table


@pytest.fixture(scope="module")
def phone_table(tmp_path_factory) -> Path:
    """The shipped seed-cnn table renamed to a phone's (device name and CPU model), fast protocol."""
    obj = json.loads(SHIPPED.read_text())
    obj["device"].update(name=PHONE, cpu_model="Pixel 1 (imported)")
    obj["protocol"].update(FAST)
    path = tmp_path_factory.mktemp("tables") / PHONE / "seed-cnn.json"
    path.parent.mkdir()
    path.write_text(json.dumps(obj, indent=1))
    return path


@pytest.fixture(scope="module")
def phone_sweep(phone_table, tmp_path_factory) -> Path:
    """A tiny two-target sweep (no Ray) searched with the phone table; its candidates and front are written
    as a foreign-table sweep records them: predicted for the phone, nothing measured."""
    run = tmp_path_factory.mktemp("sweep") / "run"
    hwnas.search(out=run, targets=[0.02, 0.05], latency_table=str(phone_table), ray=False, **TINY)
    cands = []
    for shard in sorted((run / "shards").iterdir()):
        c = read_candidate(shard)
        c = {k: v for k, v in c.items() if k != "measurement"}
        c.update(latency_source="predicted", latency_device=PHONE, measured_latency_ms=None)
        write_candidate(shard, c)
        cands.append(c)
    write_front(run, cands)
    return run


def test_phone_table_is_foreign(phone_table):
    assert foreign_reasons(read_table(phone_table)), "a table measured on 'Pixel 1 (imported)' matched this host"


@pytest.mark.parametrize("action", ["calibrate", "validate"])
def test_calibrate_and_validate_refuse_another_devices_table(phone_table, action, capsys):
    before = phone_table.read_bytes()
    rc = main(["latency", action, "--table", str(phone_table), "--samples", "3", "--seed", "7", "--no-progress"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert f"{action} refused" in err[0] and repr(PHONE) in err[0] and "hwnas devicekit export" in err[0]
    assert "hwnas devicekit import" in err[0] and "nothing was measured or written" in err[0]
    assert phone_table.read_bytes() == before


def test_export_labels_the_prediction_and_never_compares(phone_sweep, phone_table, tmp_path, capsys):
    obj = json.loads(phone_table.read_text())
    obj["calibration"]["c0"] += 5.0  # far from anything this host measures: a comparison would warn
    table = tmp_path / PHONE / "seed-cnn.json"
    table.parent.mkdir()
    table.write_text(json.dumps(obj))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyGapWarning)
        assert main(["export", str(phone_sweep), "--latency-table", str(table), "--out", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    expected = LatencyModel.load(table).predict(m["arch"])
    assert m["latency_source"] == "predicted" and m["latency_device"] == PHONE
    assert m["predicted_latency_ms"] == pytest.approx(expected) and m["predicted_latency_ms"] > 5.0
    assert m["measured_latency_ms"] is None and "measured_spread" not in m
    assert not {"latency_gap", "latency_warning"} & set(m)
    assert m["host_latency_ms"] > 0 and m["host_measurement"]["fingerprint"]["cpu_model"] != "Pixel 1 (imported)"
    assert f"not measured: this host is not {PHONE}" in m["latency_note"]
    line = next(s for s in out.splitlines() if s.startswith("arch "))
    assert f"predicted {m['predicted_latency_ms']:.4f} ms on {PHONE} (not measured: this host is not {PHONE})" in line
    assert "warning" not in out and "recalibrate" not in out


@pytest.mark.filterwarnings("ignore::hwnas.export.LatencyGapWarning")  # a synthetic table's predictions are random
def test_export_with_this_hosts_table_is_measured_on_its_device(phone_sweep, tmp_path):
    from conftest_latency import synthetic_table

    from hwnas.export import export
    from hwnas.latency.protocol import Protocol
    from hwnas.latency.table import save_table
    from hwnas.space import get_space

    table = save_table(synthetic_table(get_space("seed-cnn"), device="here-1t"), tmp_path / "here.json")
    assert not foreign_reasons(read_table(table))
    m = export(phone_sweep, tmp_path / "exp", latency_table=table, protocol=Protocol(**FAST))
    assert m["latency_source"] == "measured" and m["latency_device"] == "here-1t" and m["measured_latency_ms"] > 0
    assert m["measurement"]["spread"] == m["measured_spread"] and isinstance(m["measurement"]["noisy"], bool)
    assert "host_latency_ms" not in m and m["latency_gap"] >= 0


def test_report_labels_predicted_latencies(phone_sweep, tmp_path, monkeypatch):
    labels: dict[str, list[tuple[str, str]]] = {}
    save = plots.save

    def spy(fig, path):
        labels[path.stem] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
        return save(fig, path)

    monkeypatch.setattr(plots, "save", spy)
    run_dir = Path(shutil.copytree(phone_sweep, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint.*")))
    text = write_report(run_dir).read_text()
    assert "| latency source |" in text and f"| predicted (device {PHONE}) |" in text
    assert f"predicted on {PHONE} by the latency table (not measured: this host is not {PHONE})" in text
    assert "measured (device" not in text
    assert labels["pareto"][0][0].startswith(f"predicted latency on {PHONE} (ms)")
    assert (f"latency on {PHONE} (ms)") in {y for _, y in labels["latency"]}
    assert "predicted_vs_measured" not in labels and "predictions for pixel1-1t" in text
    assert not (run_dir / "report" / "predicted_vs_measured.png").exists()


def _cand(i: int, **kw) -> dict:
    return {"arch": {"c": i}, "arch_id": f"a{i}", "shard": f"s{i}", "accuracy": 0.5 + i / 10,
            "predicted_latency_ms": 1.0 + i, **kw}


def test_old_runs_noisy_marks_and_the_comparison_uses_only_the_tables_device():
    old = _cand(0, measured_latency_ms=1.1)  # written before latency_source: measured on the recorded device
    noisy = _cand(1, measured_latency_ms=2.3, latency_source="measured", latency_device="amd-epyc-1t",
                  measurement={"host": {"cpu_model": "AMD EPYC"}, "noisy": True, "spread": 0.07})
    other = _cand(2, measured_latency_ms=9.0, latency_source="measured", latency_device=PHONE)
    pred = _cand(3, latency_source="predicted", latency_device=PHONE, measured_latency_ms=None)
    assert [latency_source(c) for c in (old, noisy, other, pred)] == ["measured"] * 3 + ["predicted"]
    assert source_label(old, "amd-epyc-1t") == "measured (device amd-epyc-1t)"
    assert source_label(noisy) == "measured (device amd-epyc-1t), noisy ±7.0%"
    assert source_label(pred) == f"predicted (device {PHONE})"
    assert measured_on([old, noisy, other, pred], "amd-epyc-1t") == [old, noisy]
    assert prediction_errors([old, noisy, other, pred], "amd-epyc-1t") == pytest.approx([0.1 / 1.1, 0.3 / 2.3])
    assert plots.axis_label([pred], PHONE).startswith(f"predicted latency on {PHONE} (ms)")
    assert plots.axis_label([old, noisy], "amd-epyc-1t").startswith("measured latency on amd-epyc-1t (ms")


def test_old_run_folder_without_the_new_fields_still_reports(phone_sweep, tmp_path):
    run_dir = Path(shutil.copytree(phone_sweep, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint.*")))
    cands = []
    for shard in sorted((run_dir / "shards").iterdir()):
        c = {k: v for k, v in read_candidate(shard).items() if k not in ("latency_source", "latency_device")}
        c["measured_latency_ms"] = 1.02 * c["predicted_latency_ms"]
        write_candidate(shard, c)
        cands.append(c)
    write_front(run_dir, cands)
    run = load_run(run_dir)
    assert all(latency_source(c) == "measured" for c in run.candidates)
    text = write_report(run_dir).read_text()
    assert "| measured (device" in text and (run_dir / "report" / "predicted_vs_measured.png").is_file()

"""What an exported file says about itself: preprocessing, labels, arch, target device, latency per artefact.

The same dict goes to ``manifest.json`` (``metadata_props``) and into every ONNX file's ``metadata_props``
(each value a JSON string under an ``hwnas.*`` key, plus the plain-text ``author``/``description``
entries model viewers show); a ``.ort`` converted from such an ONNX carries them too
(``InferenceSession.get_modelmeta().custom_metadata_map``). Paths are relative: a table is named by its
``latency_tables/<device>/<space>.json`` tail, never by where it lay on the exporting machine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PREFIX = "hwnas."
AUTHOR = "hwnas export"
# the device fields that identify a host to onnxruntime's kernels (``latency.fingerprint.mismatches``)
FINGERPRINT_KEYS = ("cpu_model", "isa", "cache", "cpu_count", "machine", "system", "onnxruntime", "provider",
                    "threads", "opt_level")


def preprocess(splits: Any) -> dict[str, Any]:
    """How a raw input becomes the model's ``x``, from the ``Splits`` the run's loader returned.

    ``x[c] = (r[c] - mean[c]) / std[c]`` for a raw image ``r`` (NCHW, float32, values in ``value_range``,
    after the ``resize`` rule).
    """
    c, h, w = (int(v) for v in splits.input_shape)
    return {"layout": "NCHW", "shape": [1, c, h, w], "dtype": "float32",
            "value_range": list(splits.value_range) if splits.value_range is not None else None,
            "resize": splits.resize, "mean": [float(v) for v in splits.mean], "std": [float(v) for v in splits.std],
            "formula": "x[c] = (r[c] - mean[c]) / std[c], r = raw image in value_range after the resize rule"}


def relative_table(path: str | Path | None) -> str | None:
    """``latency_tables/<device>/<space>.json`` (or ``<folder>/<file>``) of a table path: never absolute."""
    if path is None:
        return None
    p = Path(path)
    parts = p.parts
    if "latency_tables" in parts:
        i = len(parts) - 1 - parts[::-1].index("latency_tables")
        return "/".join(parts[i:])
    return "/".join(parts[-2:]) if len(parts) >= 2 else p.name


def device(lat_model: Any, table_path: str | Path | None, foreign: list[str]) -> dict[str, Any]:
    """The target device: name and fingerprint from the table's provenance, whether it is this host.

    Without a table the device is this host, unnamed (``name`` None); nothing is predicted.
    """
    if lat_model is None:
        return {"name": None, "fingerprint": None, "fingerprint_sha256": None, "table": None, "this_host": True,
                "note": "no latency table: timings are this host's, under no device name"}
    dev = lat_model.table.device
    finger = {k: dev[k] for k in FINGERPRINT_KEYS if k in dev}
    digest = hashlib.sha256(json.dumps(finger, sort_keys=True).encode()).hexdigest()
    out = {"name": dev.get("name"), "fingerprint": finger, "fingerprint_sha256": digest,
           "table": relative_table(table_path), "table_source": lat_model.table.source, "this_host": not foreign}
    if foreign:
        out["not_this_host"] = foreign[0]
    return out


def props(manifest: dict[str, Any], latency: dict[str, Any] | None) -> dict[str, str]:
    """``metadata_props`` of every ONNX file of an export (string -> string; ``hwnas.*`` values are JSON)."""
    dev = manifest["device"]
    arch = {"space": manifest["space"], "space_args": manifest["space_args"], "arch_id": manifest["arch_id"],
            "arch": manifest["arch"]}
    out = {
        "author": AUTHOR,
        "description": (f"hwnas arch {manifest['arch_id']} ({manifest['space']}) for {manifest['dataset']}; input "
                        f"{manifest['input']['name']} NCHW float32 normalised per hwnas.preprocess, output "
                        f"{manifest['output']['name']} = logits over hwnas.labels"),
        f"{PREFIX}format": json.dumps({"format": manifest["format"], "version": manifest["version"]}),
        f"{PREFIX}arch": json.dumps(arch, sort_keys=True),
        f"{PREFIX}input": json.dumps(manifest["input"]),
        f"{PREFIX}output": json.dumps(manifest["output"]),
        f"{PREFIX}preprocess": json.dumps(manifest["preprocess"]),
        f"{PREFIX}labels": json.dumps(manifest["labels"]),
        f"{PREFIX}device": json.dumps(dev, sort_keys=True),
    }
    if latency is not None:
        out[f"{PREFIX}latency"] = json.dumps(latency, sort_keys=True)
    return out


def write(path: Path, values: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX file ``path`` with ``values`` (the graph is untouched)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, values)
    model.doc_string = values.get("description", "")
    onnx.save(model, str(path))


def read(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (``.onnx``) or, through onnxruntime, of a ``.ort`` file."""
    if path.suffix == ".ort":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map)
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}

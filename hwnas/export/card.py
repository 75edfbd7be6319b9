"""The model card (``README.md`` of an export folder), rendered from the manifest only: arch, accuracy,
latency per artefact and device with its source, operators, mobile readiness, preprocessing, labels, how to
run it (Python, Android Java/Kotlin, C++) and its limitations. No absolute paths: everything it names is
in the export folder or relative to it."""

from __future__ import annotations

import json
from typing import Any


def _ms(v: Any) -> str:
    return f"{v:.4f} ms" if isinstance(v, (int, float)) else "n/a"


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def _accuracy(m: dict[str, Any]) -> list[str]:
    lines = ["## Accuracy", "",
             f"- **{_pct(m['accuracy'])}**: {m['accuracy_kind']}, {m['accuracy_samples']} images "
             "(this file, these weights)."]
    q = m.get("int8")
    if q:
        lines.append(f"- int8 (`{q['file']}`): {_pct(q['accuracy'])} on the same {q['accuracy_samples']} test images; "
                     f"same top-1 as fp32 on {_pct(q['agreement_with_fp32'])} of them.")
    c = m.get("candidate_accuracy")
    if c:
        ci = c.get("ci95")
        interval = f", 95% interval [{_pct(ci[0])}, {_pct(ci[1])}]" if isinstance(ci, list) and None not in ci else ""
        seeds = f" over {c['seeds']} seed(s)" if c.get("seeds") else ""
        lines.append(f"- The run's record of this arch: {_pct(c['accuracy'])}{interval}{seeds} "
                     f"({c.get('kind') or 'search accuracy'}); it describes the arch as the run trained it, "
                     "which may differ from the weights in this folder.")
    return [*lines, ""]


def _latency(m: dict[str, Any]) -> list[str]:
    dev = m["device"]
    name = dev.get("name") or "this host (no latency table)"
    lines = ["## Latency", "",
             f"Target device: **{name}**" + (f" (fingerprint sha256 {dev['fingerprint_sha256'][:16]}, table "
                                            f"`{dev['table']}`)" if dev.get("fingerprint_sha256") else "") + ".",
             f"Protocol: {m['latency_protocol']['threads']} thread(s), {m['latency_protocol']['graph_optimization_level']}, "
             f"batch 1, median of {m['latency_protocol']['trials']} trials x {m['latency_protocol']['runs']} runs.", "",
             "| file | latency | source | note |", "| --- | --- | --- | --- |"]
    for file, a in m["artefacts"].items():
        lat = a["latency"]
        note = lat.get("note", "")
        if a.get("host_latency_ms") is not None:
            note += f" (this host, not the device: {_ms(a['host_latency_ms'])})"
        if lat.get("predicted_ms") is not None:
            note += f"table predicts {_ms(lat['predicted_ms'])}"
        lines.append(f"| `{file}` | {_ms(lat.get('latency_ms'))} | {lat.get('source') or 'none'} | {note.strip()} |")
    q = m.get("int8") or {}
    if q.get("summary"):  # the run searched under an int8 budget (``int8_target.check``)
        lines += ["", f"Searched for int8: `{q['file']}` {q['summary']} (int8 table `{q['int8_table']}`)."]
    for key in ("ort",):
        for entry in (m.get(key), (m.get("int8") or {}).get(key)):
            if entry:
                lines += ["", f"`{entry['file']}`: optimisation style **{entry['optimization_style']}** (target platform "
                          f"{entry['target_platform'] or 'portable'}). {entry['style_choice']['reason']}."]
                if entry["session_config"]:
                    lines.append(f"Load it with the session config entries {entry['session_config']}.")
    return [*lines, ""]


def _operators(m: dict[str, Any]) -> list[str]:
    lines = ["## Operators", ""]
    for file, a in m["artefacts"].items():
        ops = a["operators"]
        if isinstance(next(iter(ops.values()), None), list):  # a .ort: from its reduced-build config
            text = "; ".join(f"{k}: {', '.join(v)}" for k, v in ops.items())
            lines.append(f"- `{file}` (reduced build: `{a['required_operators']}`): {text}")
        else:
            lines.append(f"- `{file}`: " + ", ".join(f"{k} x{v}" for k, v in ops.items()))
    lines += ["", "## Mobile readiness (onnxruntime mobile usability check)", "",
              "| file | NNAPI | CoreML NeuralNetwork | CoreML MLProgram | unsupported ops |",
              "| --- | --- | --- | --- | --- |"]
    for file, a in m["artefacts"].items():
        u = a.get("mobile_usability")
        if not u:
            continue
        eps = [u[k] for k in ("nnapi", "coreml_neuralnetwork", "coreml_mlprogram")]
        cells = [f"{e['suitability']} ({e['supported_nodes']}/{e['nodes']} nodes, {e['partitions']} partition(s))"
                 for e in eps]
        unsupported = sorted({op for e in eps for op in e["unsupported_ops"]})
        lines.append(f"| `{file}` | {' | '.join(cells)} | {', '.join(unsupported) or 'none'} |")
    return [*lines, ""]


def _preprocess(m: dict[str, Any]) -> list[str]:
    p = m["preprocess"]
    labels = m["labels"]
    return ["## Input, preprocessing and labels", "",
            f"- Input `{m['input']['name']}`: {m['input']['dtype']}, layout {p['layout']}, shape {m['input']['shape']}.",
            f"- Raw values in {p['value_range']}; resize: {p['resize']}.",
            f"- Normalise per channel: `{p['formula']}` with mean {p['mean']} and std {p['std']}.",
            f"- Output `{m['output']['name']}`: {m['output']['shape']} {m['output']['meaning']}; index k is label k.",
            f"- Labels ({len(labels)}): {json.dumps(labels)}.",
            "- The same data is in every ONNX/ORT file's metadata (`hwnas.preprocess`, `hwnas.labels`, ...).", ""]


def _usage(m: dict[str, Any]) -> list[str]:
    name, out = m["input"]["name"], m["output"]["name"]
    shape = [1 if d == "batch" else d for d in m["input"]["shape"]]
    n = 1
    for d in shape:
        n *= d
    p = m["preprocess"]
    ort_file = (m.get("ort") or {}).get("file")
    mobile = ort_file or "model.onnx"
    replay = (m.get("ort") or {}).get("session_config") or {}
    py_cfg = "".join(f"\nso.add_session_config_entry({k!r}, {v!r})" for k, v in replay.items())
    java_cfg = "".join(f'\nopts.addConfigEntry("{k}", "{v}");' for k, v in replay.items())
    cpp_cfg = "".join(f'\nopts.AddConfigEntry("{k}", "{v}");' for k, v in replay.items())
    dims = ", ".join(str(d) for d in shape)
    return ["## How to run it", "", "Python (`pip install onnxruntime numpy`):", "", "```python",
            "import numpy as np", "import onnxruntime as ort", "",
            f"mean = np.array({p['mean']}, np.float32).reshape(1, -1, 1, 1)",
            f"std = np.array({p['std']}, np.float32).reshape(1, -1, 1, 1)",
            "so = ort.SessionOptions()", "so.intra_op_num_threads = 1" + py_cfg,
            f'sess = ort.InferenceSession("{mobile}", so, providers=["CPUExecutionProvider"])',
            f"raw = np.zeros(({dims}), np.float32)  # your image, NCHW, values in {p['value_range']}",
            f'logits = sess.run(["{out}"], {{"{name}": (raw - mean) / std}})[0]',
            "label = LABELS[int(logits.argmax())]  # LABELS: the list under 'Labels' above", "```", "",
            "Android, Kotlin/Java (`com.microsoft.onnxruntime:onnxruntime-android`, package `ai.onnxruntime`):", "",
            "```java", "import ai.onnxruntime.*;", "import java.nio.FloatBuffer;", "import java.util.Collections;", "",
            "OrtEnvironment env = OrtEnvironment.getEnvironment();",
            "OrtSession.SessionOptions opts = new OrtSession.SessionOptions();",
            "opts.setIntraOpNumThreads(1);" + java_cfg,
            f"OrtSession session = env.createSession(modelBytes /* assets/{mobile} */, opts);",
            f"float[] x = new float[{n}];  // normalised: (raw - mean[c]) / std[c], NCHW",
            f"long[] shape = {{{dims}}};",
            "try (OnnxTensor t = OnnxTensor.createTensor(env, FloatBuffer.wrap(x), shape);",
            f'     OrtSession.Result r = session.run(Collections.singletonMap("{name}", t))) {{',
            "    float[][] logits = (float[][]) r.get(0).getValue();  // argmax -> label index", "}", "```", "",
            "C++ (`onnxruntime_cxx_api.h`):", "", "```cpp", "#include <onnxruntime_cxx_api.h>", "#include <array>",
            "", 'Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "hwnas");', "Ort::SessionOptions opts;",
            "opts.SetIntraOpNumThreads(1);" + cpp_cfg,
            f'Ort::Session session(env, "{mobile}", opts);  // ORTCHAR_T path (wide string on Windows)',
            f"std::array<float, {n}> x{{}};  // normalised input, NCHW", f"std::array<int64_t, {len(shape)}> shape{{{dims}}};",
            "auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);",
            "Ort::Value in = Ort::Value::CreateTensor<float>(mem, x.data(), x.size(), shape.data(), shape.size());",
            f'const char* in_names[] = {{"{name}"}};', f'const char* out_names[] = {{"{out}"}};',
            "auto outs = session.Run(Ort::RunOptions{nullptr}, in_names, &in, 1, out_names, 1);",
            "const float* logits = outs[0].GetTensorData<float>();  // argmax -> label index", "```", ""]


def _limitations(m: dict[str, Any]) -> list[str]:
    dev = m["device"].get("name") or "this host"
    threads = m["latency_protocol"]["threads"]
    lines = ["## Limitations", "",
             ("- Batch: dynamic (`batch` axis)." if m["dynamic_batch"] else
              "- Batch 1 only (fixed shapes); export with `--dynamic-batch` for other batch sizes."),
             f"- Latencies hold for {dev} with {threads} thread(s) and the protocol above only; other devices, "
             "thread counts or execution providers (NNAPI, CoreML, XNNPACK) need their own measurement.",
             "- Predicted latencies come from the device's latency table, not from running these files there."]
    q = m.get("int8")
    if q:
        lines.append(f"- int8 accuracy was measured on {q['accuracy_samples']} test images only; calibration: "
                     f"{q['calibration']}.")
    if m.get("ort", {}).get("target_platform") == "amd64":
        lines.append("- The `.ort` files bake in x86-64 NCHWc kernels: they run on x86-64 CPUs like the target, "
                     "not on ARM phones; re-export with an ARM device's table for those.")
    return [*lines, ""]


def _arch_line(m: dict[str, Any]) -> str:
    if m.get("arch_source"):  # an arch outside a run (an arch file or a named arch)
        return (f"Arch id `{m['arch_id']}` ({m['arch_source']}); weights: {m['weights']}; test data: "
                f"{m['data_source']}.")
    return f"Arch id `{m['arch_id']}`; weights: {m['weights']}."


def render(m: dict[str, Any]) -> str:
    """The model card of the export described by manifest ``m`` (Markdown)."""
    arch = "\n".join(f"| `{k}` | `{v}` |" for k, v in m["arch"].items())
    files = ", ".join(f"`{f}`" for f in m["artefacts"])
    head = [f"# hwnas model {m['arch_id']}", "",
            f"Space `{m['space']}`, dataset {m['dataset']}. Files: {files}, `manifest.json` (every number below, "
            "with provenance and sha256 of each file).", "", "## Architecture", "",
            _arch_line(m), "", "| choice | value |", "| --- | --- |", arch, ""]
    body = [*head, *_accuracy(m), *_latency(m), *_operators(m), *_preprocess(m), *_usage(m), *_limitations(m)]
    return "\n".join(body)

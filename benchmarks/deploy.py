"""Deployment variants of bnconvert's export (issue 18): float32, float16 and two int8 in onnxruntime.

    python benchmarks/deploy.py                       # ResNet50 and MobileNetV2; writes its part of RESULTS.md
    python benchmarks/deploy.py --models MobileNetV2 --size 96 --budget 5 --output /tmp/d.md   # a quick try

Per model (Keras Applications, ``weights=None``, 224x224x3, seeded as ``benchmarks/run.py`` builds
them, random BN gamma and beta; the BN moving mean and variance are those of the layer's input on 32
synthetic images, as training leaves them, not random: with random ones the network forgets its
input, every image gets the same class, and top-1 agreement would say nothing):

* **the images**: deterministic synthetic pictures, not uniform noise (colour gradients, a few
  soft-edged ellipses of random colours, a low-frequency texture and a little pixel noise, 0..255,
  then the model's own ``preprocess_input``): 64 to calibrate int8 (seed 10) and 128 *other* ones
  (seed 20), held out, on which every variant is compared with Keras and timed;
* **the variants**, each made by ``bnconvert export`` in its own process and timed as a user runs
  it: ``fp32`` (plain ``export``, its TensorFlow-free check included), ``fp16`` (``--fp16``:
  float16 weights and compute, float32 inputs and outputs), ``int8`` (``--int8 --calibration``:
  static QDQ, int8 weights per channel and int8 activations, S8S8, calibrated on the 64
  calibration images) and ``int8-u8`` (the same with ``--int8-activations uint8``: uint8
  activations, U8S8);
* **agreement with Keras 3** (``model.predict``, float32, on the held-out images): max and mean
  relative error ``|x - keras| / max|keras|``, top-1 agreement, and top-5 agreement (the share of
  samples whose Keras top-1 class is in the variant's top 5); with the number of distinct Keras
  top-1 classes and the median top-1/top-2 margin, which say how hard that agreement is;
* **latency** in onnxruntime (CPU provider, 2 intra-op threads, default optimisation level) at
  batch 1 and batch 32: the four files' runs interleaved in rounds (the order rotating), so that
  all four see the same shared machine; medians, and the median over the rounds of each variant's
  time over float32's (the paired ratio). Rounds run until a time budget is spent (``--budget``
  seconds per model and batch size; at least 5 rounds, at most 200);
* **file size** of each variant.

Everything lands in ``benchmarks/out/deploy/`` (not committed) and the table between the
``deploy:start/end`` markers of RESULTS.md. Needs the test extras (TensorFlow, Keras 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ENV, OUT, ROOT, bnconvert, write_results  # noqa: E402  (benchmarks/run.py)

DEPLOY = OUT / "deploy"
MODELS = ["ResNet50", "MobileNetV2"]
#: each variant and the options of ``bnconvert export`` that make it (besides ``-o FILE --json``)
VARIANTS: dict[str, list[str]] = {
    "fp32": [],
    "fp16": ["--fp16"],
    "int8": ["--int8", "--calibration", "{calibration}"],
    "int8-u8": ["--int8", "--calibration", "{calibration}", "--int8-activations", "uint8"],
}
#: the variants as the table's rows name them, and in plain words
ROWS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8 (int8 activations)", "int8-u8": "int8 (uint8 activations)"}
LABELS = {
    "fp32": "float32",
    "fp16": "float16 weights and compute, float32 inputs and outputs",
    "int8": "int8 weights per channel and int8 activations (S8S8, the default)",
    "int8-u8": "int8 weights per channel and uint8 activations (U8S8)",
}
CALIBRATION, HELD_OUT = 64, 128
START, END = "<!-- deploy:start -->", "<!-- deploy:end -->"

#: build the model as benchmarks/run.py does (same seeds, same random BN statistics), make the
#: synthetic images, and save the Keras outputs on the held-out ones
BUILD = r"""
import json, sys, numpy as np, keras, tensorflow as tf
from keras import applications as A
name, size, h5, data, calib = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
n_cal, n_held = int(sys.argv[6]), int(sys.argv[7])
L = keras.layers

keras.utils.set_random_seed(0)  # benchmarks/run.py's model: weights=None, random gamma and beta
model = getattr(A, name)(weights=None, input_shape=(size, size, 3))
rng = np.random.default_rng(0)
bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
for layer in bns:
    n = layer.get_weights()[-1].shape
    new = []
    if layer.scale: new.append(rng.uniform(0.5, 1.5, n))
    if layer.center: new.append(rng.normal(0, 0.2, n))
    new += [rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)]
    layer.set_weights([a.astype('float32') for a in new])


def images(n, size, seed):
    # pictures rather than noise: a colour gradient, 3-6 soft ellipses, a low-frequency texture,
    # pixel noise of sigma 6; values 0..255 like decoded image files
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, size, size, 3), np.float32)
    for k in range(n):
        a, b, c = r.uniform(0, 255, 3), r.uniform(-120, 120, 3), r.uniform(-120, 120, 3)
        img = a + b * xx[..., None] + c * yy[..., None]
        for _ in range(r.integers(3, 7)):
            cy, cx = r.uniform(0, 1, 2)
            ry, rx = r.uniform(0.05, 0.4, 2)
            d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
            w = 1 / (1 + np.exp((d - 1) * r.uniform(4, 20)))  # soft edge
            img = img * (1 - w[..., None]) + r.uniform(0, 255, 3) * w[..., None]
        f = r.uniform(1, 6, 2)
        img = img + r.uniform(5, 30) * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + r.uniform(0, 6.3))[..., None]
        out[k] = np.clip(img + r.normal(0, 6, img.shape), 0, 255)
    return out


family = {'ResNet50': A.resnet50, 'MobileNetV2': A.mobilenet_v2}[name]
x_cal = family.preprocess_input(images(n_cal, size, 10)).astype('float32')
x_held = family.preprocess_input(images(n_held, size, 20)).astype('float32')
# The moving mean and variance: run.py draws them at random, which makes a random network forget its
# input (every image then gets the same class, and top-1 agreement would say nothing). Here they are
# the statistics of a third set of images (seed 30), as training leaves them: one forward pass in
# training mode with momentum 0 sets each BN's moving statistics to those of its own input, layer
# after layer. gamma and beta stay random; the held-out images play no part.
for layer in bns:
    layer.momentum = 0.0
model(family.preprocess_input(images(32, size, 30)).astype('float32'), training=True)
for layer in bns:
    layer.momentum = 0.99
model.save(h5)
y = model.predict(x_held, batch_size=32, verbose=0)
np.savez(data, x=x_held, y=y)
np.savez(calib, x=x_cal)
print(json.dumps(dict(params=int(model.count_params()), keras=keras.__version__, tensorflow=tf.__version__,
                      input_range=[float(x_held.min()), float(x_held.max())])))
"""

COMPARE = r"""
import json, os, sys, time, numpy as np, onnxruntime as ort
paths, data, budget = json.loads(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
x, y = data['x'], data['y'].astype(np.float64)
scale = float(np.abs(y).max())
top = y.argmax(1)
ordered = np.sort(y, axis=1)
out = {'keras': {'distinct_top1': int(len(np.unique(top))), 'samples': int(len(x)),
                 'median_margin': float(np.median(ordered[:, -1] - ordered[:, -2])),
                 'median_top1': float(np.median(ordered[:, -1]))}}
sessions = {}
for variant, path in paths.items():
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2  # default graph optimisation level (ORT_ENABLE_ALL)
    sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    inp = sess.get_inputs()[0]
    dtype = np.float16 if inp.type == 'tensor(float16)' else np.float32
    xs = x.astype(dtype)
    got = np.concatenate([sess.run(None, {inp.name: xs[i:i + 32]})[0] for i in range(0, len(xs), 32)]).astype(np.float64)
    got = got.reshape(y.shape)
    diff = np.abs(got - y)
    top5 = np.argsort(-got, axis=1, kind='stable')[:, :5]
    out[variant] = dict(max_rel_err=float(diff.max() / scale), mean_rel_err=float(diff.mean() / scale),
                        top1=float(np.mean(got.argmax(1) == top)), top5=float(np.mean((top5 == top[:, None]).any(1))),
                        finite=bool(np.isfinite(got).all()), input_type=inp.type, bytes=os.path.getsize(path))
    sessions[variant] = (sess, inp.name, xs)
order = list(sessions)
for batch in (1, 32):
    feeds = {v: {name: xs[:batch]} for v, (sess, name, xs) in sessions.items()}
    for v in order:  # warm-up: 3 runs each
        for _ in range(3):
            sessions[v][0].run(None, feeds[v])
    times = {v: [] for v in order}
    start, rounds = time.perf_counter(), 0
    while rounds < 200 and (rounds < 5 or time.perf_counter() - start < budget):  # until the budget is spent
        k = rounds % len(order)
        for v in order[k:] + order[:k]:  # interleaved, the order rotating: all files see the same machine
            t = time.perf_counter(); sessions[v][0].run(None, feeds[v]); times[v].append(time.perf_counter() - t)
        rounds += 1
    base = np.array(times[order[0]])
    for v in order:
        ts = np.array(times[v])
        out[v][f'b{batch}'] = dict(ms=float(np.median(ts) * 1000), p10_ms=float(np.percentile(ts, 10) * 1000),
                                   ratio=float(np.median(ts / base)), rounds=rounds)
print(json.dumps(out))
"""


def _child(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, *args]


def _json_tail(argv: list[str], what: str) -> dict[str, Any]:
    out = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _timed_json(argv: list[str], output: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The time and exit of one ``bnconvert export ... --json``, and its JSON report (None if none)."""
    output.unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        print(f"  ! {' '.join(argv[:3])}... exited {proc.returncode}: {proc.stderr[-800:]}", file=sys.stderr)
        return {"seconds": seconds, "exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}, None
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    return {"seconds": seconds, "exit": 0, "error": ""}, report


def _check(check: dict[str, Any] | None) -> dict[str, Any] | None:
    """The built-in check of a CLI export, in brief: status, error, tolerance, what ran the reference."""
    if not check:
        return None
    return {k: check.get(k) for k in ("status", "error", "atol", "rtol")} | {
        "reference": (check.get("reference") or {}).get("kind")}


def run_model(name: str, size: int, budget: float) -> dict[str, Any]:
    DEPLOY.mkdir(parents=True, exist_ok=True)
    h5, data, calib = DEPLOY / f"{name}.h5", DEPLOY / f"{name}.heldout.npz", DEPLOY / f"{name}.calibration.npz"
    files = {v: DEPLOY / f"{name}.{v}.onnx" for v in VARIANTS}
    print(f"{name}: building with Keras, synthetic images, Keras outputs", file=sys.stderr)
    t = time.perf_counter()
    row: dict[str, Any] = {"model": name, "size": size, **_json_tail(
        _child(BUILD, name, str(size), str(h5), str(data), str(calib), str(CALIBRATION), str(HELD_OUT)), f"building {name}")}
    row["build_s"] = time.perf_counter() - t
    row["convert"], row["how"] = {}, {}
    for v, options in VARIANTS.items():
        extra = [o.format(calibration=calib) for o in options]
        print(f"{name}: {v} (bnconvert export {' '.join(extra)})", file=sys.stderr)
        row["convert"][v], cli = _timed_json(bnconvert("export", str(h5), "-o", str(files[v]), *extra, "--json"), files[v])
        row["how"][v] = " ".join(["`bnconvert export", *options]).replace("{calibration}", "CAL.npz") + "`"
        row[f"{v}_check"] = _check((cli or {}).get("check"))
        if v != "fp32":
            row[f"{v}_report"] = (cli or {}).get(v.split("-")[0])
    paths = {v: str(p) for v, p in files.items() if p.exists() and row["convert"][v]["exit"] == 0}
    print(f"{name}: onnxruntime ({', '.join(paths)})", file=sys.stderr)
    row["load_before"] = os.getloadavg()
    row["ort"] = _json_tail(_child(COMPARE, json.dumps(paths), str(data), str(budget)), f"comparing {name}")
    row["load_after"] = os.getloadavg()
    return row


# -- report ---------------------------------------------------------------------------------------
def _header(rows: list[dict[str, Any]], command: str, seconds: float) -> list[str]:
    import numpy
    import onnx
    import onnxruntime

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")))
    except (OSError, StopIteration):
        cpu, flags = platform.processor() or platform.machine(), set()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_int8", "f16c")
                    if f in flags) or "unknown"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    keras = next((f"TensorFlow {r['tensorflow']}, Keras {r['keras']}" for r in rows if "keras" in r), "")
    loads = [v for r in rows for v in (r["load_before"][0], r["load_after"][0])]
    return [
        f"Machine: {cpu} ({isa}), {os.cpu_count()} cores shared with other work, Linux {platform.release()}, "
        f"Python {platform.python_version()}; {keras}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"numpy {numpy.__version__}; bnconvert at {commit or 'unknown commit'} (plus working tree).",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} in {seconds / 60:.1f} min; "
        f"1-minute load average during the latency runs {min(loads):.1f} to {max(loads):.1f} (2 cores).",
    ]


REFERENCE = {"reference": "bnconvert's float64 reference (no TensorFlow)", "keras": "Keras"}


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mb(n: Any) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    held = next((r["ort"]["keras"]["samples"] for r in rows if "ort" in r), HELD_OUT)
    lines = [*header, "",
             f"Agreement with Keras 3 (`model.predict`, float32) on the {held} held-out synthetic images; relative errors "
             "are `|x - keras| / max|keras|` on the softmax output; top-5: the share of images whose Keras top-1 "
             "class is in the variant's top 5. Latency: onnxruntime CPU, 2 intra-op threads, default optimisation, "
             "the four files interleaved; median (ms) and in brackets the median paired ratio to float32.",
             "",
             "| model | variant | file MB | convert s | max rel err | mean rel err | top-1 | top-5 "
             "| batch 1 ms (ratio) | batch 32 ms (ratio) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ort = r.get("ort", {})
        for v in VARIANTS:
            o, c = ort.get(v), r["convert"].get(v, {})
            if o is None:
                lines.append(f"| {r['model']} | {ROWS[v]} | - | {c.get('seconds', 0):.1f} | failed: {' '.join(c.get('error') or [])} "
                             "| | | | | |")
                continue
            b1, b32 = o["b1"], o["b32"]
            lines.append(f"| {r['model']} | {ROWS[v]} | {_mb(o['bytes'])} | {c['seconds']:.1f} | {o['max_rel_err']:.2e} "
                         f"| {o['mean_rel_err']:.2e} | {_pct(o['top1'])} | {_pct(o['top5'])} "
                         f"| {b1['ms']:.1f} ({b1['ratio']:.2f}) | {b32['ms']:.0f} ({b32['ratio']:.2f}) |")
    lines += ["", "How each variant was made, and the rounds of the latency runs:", ""]
    for r in rows:
        ort = r.get("ort", {})
        k = ort.get("keras", {})
        rounds = ort.get("fp32", {})
        made = "; ".join(f"{ROWS[v]} = {LABELS[v]} ({how})" for v, how in r["how"].items())
        lines.append(f"- **{r['model']}** ({r['params']:,} parameters, {r['size']}x{r['size']}x3, inputs after "
                     f"`preprocess_input` in [{r['input_range'][0]:.3g}, {r['input_range'][1]:.3g}]): {made}; "
                     f"{rounds.get('b1', {}).get('rounds', '-')} rounds at batch 1, {rounds.get('b32', {}).get('rounds', '-')} "
                     f"at batch 32. Keras' top-1 class on the held-out images: {k.get('distinct_top1', '-')} distinct "
                     f"classes of 1000, median top-1 probability {k.get('median_top1', 0):.3g}, median margin to the "
                     f"second {k.get('median_margin', 0):.2g}.")
        what = {"fp32": "float32", "fp16": "float16", "int8": "int8 (`export --int8` checks the float32 file it quantises)",
                "int8-u8": "int8 with uint8 activations (the same)"}
        checks = [f"{what[v]} {c['status']}, error {c['error']:.2g} against {REFERENCE.get(c['reference'], c['reference'])} "
                  f"(rule {c['atol']:g} + {c['rtol']:g} x max)"
                  for v in VARIANTS if (c := r.get(f"{v}_check")) and c.get("error") is not None]
        if checks:
            lines.append(f"  bnconvert's own check of each export: {'; '.join(checks)}.")
        fp16 = r.get("fp16_report")
        if fp16:
            kept = fp16.get("kept_float32", [])
            lines.append(f"  float16: {fp16['float16_initializers']} weights float16, {fp16['float32_initializers']} "
                         f"float32, {fp16['casts']} Casts; {len(kept)} layer(s) kept in float32"
                         + (": " + ", ".join(k['layer'] for k in kept) if kept else "") + ".")
        for v in ("int8", "int8-u8"):
            int8 = r.get(f"{v}_report")
            if not int8:
                continue
            outs = int8.get("outputs", [])
            agree = "; ".join(f"top-1 {_pct(o.get('top1'))}, top-5 {_pct(o.get('top5'))}, rel err {o['rel']:.2g}"
                              for o in outs)
            lines.append(f"  {ROWS[v]}: activations {int8.get('activations', '?')}, {int8['quantize_nodes']} "
                         f"QuantizeLinear, {int8['dequantize_nodes']} DequantizeLinear; against the float32 model on "
                         f"its own calibration images: {agree}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS, help=f"default: {' '.join(MODELS)}")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--budget", type=float, default=45.0,
                        help="seconds of latency runs per model and batch size (sets the rounds; at least 5)")
    parser.add_argument("--output", default=None, help="Markdown file (default: RESULTS.md for the default set)")
    parser.add_argument("--report", action="store_true", help="only re-render from benchmarks/out/deploy/results.json")
    args = parser.parse_args()
    saved = DEPLOY / "results.json"
    if args.report:
        stored = json.loads(saved.read_text())
        rows, header = stored["rows"], stored["header"]
    else:
        start = time.perf_counter()
        DEPLOY.mkdir(parents=True, exist_ok=True)
        # the bytecode caches are written before anything is timed
        subprocess.run(bnconvert("export", "--help"), env=ENV, capture_output=True, check=True)
        rows = [run_model(name, args.size, args.budget) for name in args.models]
        command = "python benchmarks/deploy.py " + " ".join(sys.argv[1:])
        header = _header(rows, command.strip(), time.perf_counter() - start)
        saved.write_text(json.dumps({"rows": rows, "header": header}, indent=2))
    table = markdown(rows, header)
    default = args.models == MODELS and args.size == 224
    output = args.output or (str(HERE / "RESULTS.md") if default else None)
    if output:
        write_results(Path(output), table, START, END)
    print(table)


if __name__ == "__main__":
    main()

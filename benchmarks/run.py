"""bnconvert against tf2onnx on Keras Applications models, each tool in its own process.

    python benchmarks/run.py --scaling --large    # everything; writes benchmarks/RESULTS.md
    python benchmarks/run.py --models ResNet50    # a subset (no RESULTS.md unless --output)
    python benchmarks/run.py --sequences          # the two sequence models only; writes their part of RESULTS.md

Needs the test extras (TensorFlow, Keras 3) and tf2onnx (``pip install tf2onnx``). Models are
built at run time (``weights=None``, random BN statistics) into ``benchmarks/out/`` (not committed).

For every model: wall time and peak memory (``ru_maxrss`` of that one child, from ``os.wait4``)
of ``bnconvert export`` (run with TensorFlow made unimportable, as a user without the ``keras``
extra has it, so its built-in check is the TensorFlow-free one) and of the tf2onnx path users
take with Keras 3 (load with Keras, ``tf2onnx.convert.from_function``); ONNX node counts;
onnxruntime latency of both files (batch 1, 2 threads, default optimisation, runs of the two
files interleaved so that both see the same machine); max relative error of both against the
same Keras outputs (and against the model run in float64). Also ``inspect`` and ``fold`` alone;
with ``--scaling`` a series of growing models (export time and peak memory against parameter
count, with a tiny model as the memory baseline); with ``--large`` a 2.2 GB model (external data).
With ``--sequences`` two token-id models at sequence length 200 (an LSTM text classifier and a
bidirectional GRU tagger, both with ``mask_zero`` and padded rows), the same measurements with
latency at batch 1 and 32, in their own part of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
STANDARD = ["ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121", "InceptionV3", "Xception"]
SCALING = ["ResNet50", "ResNet101", "ResNet152", "EfficientNetB0", "EfficientNetB1", "EfficientNetB2",
           "EfficientNetB3", "EfficientNetB4"]
#: the children run like an installed package: bytecode may be cached (the first, untimed run
#: writes it), TensorFlow is quiet and on CPU
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV.update(TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
NO_TF = (
    "import sys\n"
    "for m in ('tensorflow', 'keras', 'tf_keras'): sys.modules[m] = None\n"
    "from bnconvert.cli import main\n"
    "sys.argv = ['bnconvert'] + sys.argv[1:]\n"
    "main()\n"
)
SAMPLES = 8  # inputs compared against Keras
LATENCY_RUNS = 200
#: the sequence models (``--sequences``): the issue's two, token ids of length 200 from a 20,000 word vocabulary
SEQUENCES = ["TextLSTM", "BiGRUTagger"]
SEQ_LEN, VOCAB = 200, 20000
SEQ_SAMPLES = 32  # token rows compared against Keras; also the larger latency batch
#: (batch, interleaved runs of each file): a batch of 32 rows of 200 steps takes some 10-50 ms a run
SEQ_LATENCY = [(1, LATENCY_RUNS), (SEQ_SAMPLES, 60)]


def bnconvert(*args: str) -> list[str]:
    return [sys.executable, "-c", NO_TF, *args]


def _run_child(argv: list[str]) -> tuple[int, Any, bytes, bytes]:
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    return status, usage, out, err


def timed(argv: list[str], repeat: int = 1, output: Path | None = None) -> dict[str, Any]:
    """Run a command ``repeat`` times, each as one child reaped by ``os.wait4`` (so ``ru_maxrss`` is
    that child's own peak); median wall time (s), largest peak RSS (MB), exit code. ``output``
    (and its ``.data``) is deleted before each run: every tool writes a new file, none pays for
    replacing an old one."""
    seconds, cpu, peaks, code, error = [], [], [], 0, ""
    for _ in range(repeat):
        if output is not None:
            for old in (output, output.with_name(output.name + ".data")):
                old.unlink(missing_ok=True)
        os.sync()  # no run pays for the disk writeback of the one before
        start = time.perf_counter()
        status, usage, out, err = _run_child(argv)
        seconds.append(time.perf_counter() - start)
        cpu.append(usage.ru_utime + usage.ru_stime)
        peaks.append(usage.ru_maxrss / 1024)
        code = os.waitstatus_to_exitcode(status)
        if code:
            text = (err or out).decode(errors="replace")
            print(f"  ! {' '.join(argv[:4])}... exited {code}: {text[-600:]}", file=sys.stderr)
            error = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
            break
    return {"seconds": statistics.median(seconds), "runs": [round(s, 3) for s in seconds], "peak_mb": max(peaks), "exit": code,
            "cpu_seconds": statistics.median(cpu), "error": error}


BUILD = """
import json, sys, numpy as np, keras
from keras import applications as A
name, size, h5, ref, samples = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
L = keras.layers


def make(name):
    if name == 'Tiny':  # the baseline: imports, onnxruntime, two sessions, no weights to speak of
        x = keras.Input((32, 32, 3))
        y = L.Flatten()(L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3)(x))))
        return keras.Model(x, L.Dense(10, activation='softmax')(y), name='tiny')
    if name == 'WideMLP':  # past 2 GB: Dense 2048 -> 21504 -> 21504 -> 2048 -> 1000, each with BN
        x = y = keras.Input((2048,))
        for i, units in enumerate((21504, 21504, 2048)):
            y = L.ReLU()(L.BatchNormalization()(L.Dense(units)(y)))
        return keras.Model(x, L.Dense(1000, activation='softmax')(y), name='wide_mlp')
    kw = dict(weights=None)
    if size: kw['input_shape'] = (size, size, 3)
    return getattr(A, name)(**kw)


keras.utils.set_random_seed(0)  # the same model every run (weights=None draws the kernels)
model = make(name)
rng = np.random.default_rng(0)
for layer in model.layers:  # random, non-trivial BN statistics (the 1/0 defaults would hide errors)
    if isinstance(layer, L.BatchNormalization):
        n = layer.get_weights()[-1].shape
        new = []
        if layer.scale: new.append(rng.uniform(0.5, 1.5, n))
        if layer.center: new.append(rng.normal(0, 0.2, n))
        new += [rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)]
        layer.set_weights([a.astype('float32') for a in new])
model.save(h5)
shape = tuple(model.inputs[0].shape[1:])
x = np.random.default_rng(1).uniform(0, 1, (samples,) + shape).astype('float32')
y = model.predict(x, batch_size=samples, verbose=0)
arrays = dict(x=x, y=y)
if name != 'WideMLP':  # the same model in float64 (too big for WideMLP): true outputs, to judge float32 error
    keras.config.set_dtype_policy('float64')
    model64 = make(name)
    model64.set_weights([w.astype('float64') for w in model.get_weights()])
    arrays['y64'] = model64.predict(x.astype('float64'), batch_size=samples, verbose=0)
    keras.config.set_dtype_policy('float32')
for layer in model.layers:  # tf2onnx leaves a Normalization layer's mean and variance as graph inputs
    if isinstance(layer, L.Normalization) and 'norm_mean' not in arrays:
        arrays.update(norm_mean=np.asarray(layer.mean), norm_var=np.asarray(layer.variance))
np.savez(ref, **arrays)
print(json.dumps(dict(params=int(model.count_params()), layers=len(model.layers), input=list(shape))))
"""


def build(name: str, size: int | None) -> dict[str, Any]:
    """Build, randomise BN statistics, save .h5; save Keras outputs on fixed inputs (child process)."""
    h5, ref = OUT / f"{name}.h5", OUT / f"{name}.ref.npz"
    argv = [sys.executable, "-c", BUILD, name, str(size or 0), str(h5), str(ref), str(SAMPLES)]
    out = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"building {name} failed:\n{out.stderr[-2000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info["file_mb"] = h5.stat().st_size / 1e6
    return info


#: the input's own dtype: float32 images, int32 token ids (the sequence models)
TF2ONNX = """
import sys, tensorflow as tf, keras, tf2onnx
model = keras.models.load_model(sys.argv[1], compile=False)
spec = [tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.as_dtype(model.inputs[0].dtype), name='input')]
fn = tf.function(lambda x: model(x, training=False))
tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=sys.argv[2])
"""


COMPARE = """
import json, sys, time, collections, numpy as np, onnx, onnxruntime as ort
paths, ref, batches = json.loads(sys.argv[1]), np.load(sys.argv[2]), json.loads(sys.argv[3])  # [[batch, runs], ...]
DTYPES = {'tensor(float)': np.float32, 'tensor(double)': np.float64, 'tensor(int32)': np.int32, 'tensor(int64)': np.int64}
x, y_ref = ref['x'], ref['y']
y64 = ref['y64'] if 'y64' in ref.files else None
scale = float(np.max(np.abs(y_ref)))
keras_err64 = None if y64 is None else float(np.max(np.abs(y_ref.astype(np.float64) - y64)) / np.max(np.abs(y64)))
out, sessions = {}, {}
def extra_inputs(sess):  # inputs beyond the image: a Normalization layer's mean/variance (tf2onnx)
    feeds = {}
    for i in sess.get_inputs()[1:]:
        key = 'norm_mean' if i.name.endswith('Sub/y:0') else 'norm_var' if i.name.endswith('Sqrt/x:0') else None
        if key is None or key not in ref.files:
            raise SystemExit(f'cannot feed extra input {i.name}')
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = ref[key].astype(np.float32).reshape(shape)
    return feeds
for tool, path in paths.items():
    proto = onnx.load(path, load_external_data=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2  # default graph optimisation level (ORT_ENABLE_ALL)
    sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    first = sess.get_inputs()[0]
    name, xs = first.name, x.astype(DTYPES[first.type])  # token ids: each file takes its own integer type
    extra = extra_inputs(sess)
    y = sess.run(None, {name: xs, **extra})[0].reshape(y_ref.shape)
    diff = np.abs(y.astype(np.float64) - y_ref)
    out[tool] = dict(nodes=len(proto.graph.node), ops=dict(collections.Counter(n.op_type for n in proto.graph.node)),
                     max_rel_err=float(diff.max() / scale), mean_rel_err=float(diff.mean() / scale),
                     keras_err64=keras_err64, extra_inputs=sorted(extra), input_type=first.type)
    if y64 is not None:
        diff64 = np.abs(y.astype(np.float64) - y64)
        out[tool].update(max_rel_err64=float(diff64.max() / np.max(np.abs(y64))),
                         mean_rel_err64=float(diff64.mean() / np.max(np.abs(y64))))
    sessions[tool] = (sess, name, xs, extra)
order = list(sessions)
for batch, runs in batches:  # keys latency_ms... at batch 1, latency_b<batch>_ms... at the others
    if batch > len(x):
        raise SystemExit(f'latency at batch {batch} needs {batch} inputs, the reference has {len(x)}')
    key = 'latency' if batch == 1 else f'latency_b{batch}'
    feeds = {tool: {name: xs[:batch], **extra} for tool, (sess, name, xs, extra) in sessions.items()}
    times = {tool: [] for tool in sessions}
    for tool in order:
        for _ in range(10):
            sessions[tool][0].run(None, feeds[tool])
    for r in range(runs):  # interleaved, alternating order: both files see the same machine
        for tool in (order if r % 2 == 0 else order[::-1]):
            sess = sessions[tool][0]
            t = time.perf_counter(); sess.run(None, feeds[tool]); times[tool].append(time.perf_counter() - t)
    for tool, ts in times.items():
        ts = np.array(ts) * 1000
        out[tool].update({f'{key}_ms': float(np.median(ts)), f'{key}_p10_ms': float(np.percentile(ts, 10))})
    if len(times) == 2:  # runs r of the two files were back to back: their ratio cancels the machine's drift;
        # the geometric mean of the two orders' medians cancels any advantage of going first or second
        a, b = (np.array(times[tool]) for tool in order)
        r = a / b
        out[order[0]][f'{key}_ratio'] = float(np.sqrt(np.median(r[0::2]) * np.median(r[1::2])))
print(json.dumps(out))
"""


def compare(paths: dict[str, Path], ref: Path,
            batches: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Node counts, errors against Keras and interleaved latency of the ONNX files (child process);
    ``batches``: (batch, runs) pairs, default batch 1 only, ``LATENCY_RUNS`` runs."""
    existing = {tool: str(p) for tool, p in paths.items() if p.exists()}
    if not existing:
        return {}
    argv = [sys.executable, "-c", COMPARE, json.dumps(existing), str(ref), json.dumps(batches or [(1, LATENCY_RUNS)])]
    out = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if out.returncode:
        print(f"  ! comparing {list(existing)} failed: {out.stderr[-600:]}", file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_model(name: str, size: int | None, repeat: int, with_tf2onnx: bool) -> dict[str, Any]:
    print(f"{name}: building", file=sys.stderr)
    row: dict[str, Any] = {"model": name, **build(name, size)}
    h5, bn_onnx, tf_onnx = OUT / f"{name}.h5", OUT / f"{name}.bnconvert.onnx", OUT / f"{name}.tf2onnx.onnx"
    print(f"{name}: bnconvert export, inspect, fold", file=sys.stderr)
    folded = OUT / f"{name}.folded.h5"
    row["inspect"] = timed(bnconvert("inspect", str(h5), "--json"), 3 * repeat)  # short: more runs
    row["bnconvert"] = timed(bnconvert("export", str(h5), "-o", str(bn_onnx)), repeat, output=bn_onnx)
    row["fold"] = timed(bnconvert("fold", str(h5), "-o", str(folded)), repeat, output=folded)
    row["no_check"] = _no_check(h5, repeat)
    row["check_cost"] = _check_cost(h5, repeat)
    paths = {"bnconvert": bn_onnx} if row["bnconvert"]["exit"] == 0 else {}
    if with_tf2onnx:
        print(f"{name}: tf2onnx", file=sys.stderr)
        row["tf2onnx"] = timed([sys.executable, "-c", TF2ONNX, str(h5), str(tf_onnx)], output=tf_onnx)
        if row["tf2onnx"]["exit"] == 0:
            paths["tf2onnx"] = tf_onnx
    print(f"{name}: onnxruntime", file=sys.stderr)
    for tool, stats in compare(paths, OUT / f"{name}.ref.npz").items():
        row[tool].update(stats)
    return row


def _no_check(h5: Path, repeat: int) -> dict[str, Any]:
    """``export --no-check``: the conversion alone (read, fold, export, validate, write), whose cost
    follows the weights; the check adds two inferences, whose cost follows the FLOPs."""
    out = h5.with_suffix(".nocheck.onnx")
    return timed(bnconvert("export", str(h5), "-o", str(out), "--no-check"), repeat, output=out)


def _check_cost(h5: Path, repeat: int) -> dict[str, Any]:
    """What the TensorFlow-free check costs: ``export`` and ``export --no-check`` run back to back
    ``repeat`` times (alternating which goes first), and the median over the pairs of the ratio
    of their wall times and of their CPU times: a pair sees the same machine, so the ratio
    cancels most of the drift of a shared one, which the separate medians do not."""
    checked, bare = h5.with_suffix(".paired.onnx"), h5.with_suffix(".paired-nocheck.onnx")
    runs = {"check": bnconvert("export", str(h5), "-o", str(checked)),
            "no_check": bnconvert("export", str(h5), "-o", str(bare), "--no-check")}
    outputs = {"check": checked, "no_check": bare}
    wall, cpu, pairs = [], [], []
    for k in range(repeat):
        got = {}
        for kind in (("check", "no_check") if k % 2 == 0 else ("no_check", "check")):
            got[kind] = timed(runs[kind], 1, output=outputs[kind])
        wall.append(got["check"]["seconds"] / got["no_check"]["seconds"])
        cpu.append(got["check"]["cpu_seconds"] / got["no_check"]["cpu_seconds"])
        pairs.append({kind: [round(got[kind]["seconds"], 3), round(got[kind]["cpu_seconds"], 3)] for kind in got})
    return {"wall_ratio": statistics.median(wall), "cpu_ratio": statistics.median(cpu),
            "wall_ratios": [round(x, 3) for x in wall], "cpu_ratios": [round(x, 3) for x in cpu], "pairs": pairs}


def run_scaling(name: str, size: int | None, repeat: int, compare_onnx: bool = False) -> dict[str, Any]:
    """``bnconvert export`` alone (scaling series, the baseline and the model past 2 GB)."""
    print(f"{name}: building (scaling)", file=sys.stderr)
    info = build(name, size)
    h5, onnx_path = OUT / f"{name}.h5", OUT / f"{name}.bnconvert.onnx"
    row = {"model": name, **info, "bnconvert": timed(bnconvert("export", str(h5), "-o", str(onnx_path)), repeat, output=onnx_path)}
    row["no_check"] = _no_check(h5, repeat)
    if compare_onnx and row["bnconvert"]["exit"] == 0:
        row["onnx"] = compare({"bnconvert": onnx_path}, OUT / f"{name}.ref.npz").get("bnconvert", {})
    return row


# -- sequence models ------------------------------------------------------------------------------
BUILD_SEQ = """
import json, sys, numpy as np, keras
name, keras_path, h5, ref = sys.argv[1:5]
samples, T, vocab = (int(a) for a in sys.argv[5:8])
L = keras.layers


def make(name):
    x = keras.Input((T,), dtype='int32', name='tokens')
    embed = L.Embedding(vocab, 128, mask_zero=True, name='embedding')
    if name == 'TextLSTM':  # a sentiment / topic classifier, the tutorials' Sequential: the last state of an
        # LSTM over the padded text
        return keras.Sequential([x, embed, L.LSTM(128, name='lstm'), L.Dense(4, activation='softmax', name='classes')],
                                name='text_lstm')
    if name == 'BiGRUTagger':  # a sequence tagger, functional: a tag distribution per token (Keras 3.15 writes
        # the Embedding's mask as a NotEqual operation of its own, passed to the next layer as its mask argument)
        y = L.Bidirectional(L.GRU(64, return_sequences=True, name='gru'), name='bigru')(embed(x))
        y = L.TimeDistributed(L.Dense(17, activation='softmax', name='tag'), name='tags')(y)
        return keras.Model(x, y, name='bigru_tagger')
    raise SystemExit(f'unknown sequence model {name}')


keras.utils.set_random_seed(0)  # the same model every run: Keras' initializers draw the kernels
model = make(name)
rng = np.random.default_rng(0)
for v in model.weights:  # non-trivial biases (zeros, or LSTM's forget-gate ones, by default) and
    # embeddings of the size trained ones have (the default +-0.05 would leave every gate near 0.5)
    if v.path.endswith('bias'):
        v.assign(rng.normal(0, 0.3, v.shape).astype('float32'))
    elif v.path.endswith('embeddings'):
        v.assign(rng.normal(0, 0.6, v.shape).astype('float32'))
model.save(keras_path)
model.save(h5)
# token rows as a tokenizer and pad_sequences give them: ids in [1, vocab), 0 the padding; a quarter
# full length, the rest 10 to T-1 tokens, padded in front (pad_sequences' default) or behind
rng = np.random.default_rng(1)
x = rng.integers(1, vocab, (samples, T)).astype('int32')
for i in range(samples):
    n = int(rng.integers(10, T))
    if i % 4 in (1, 3):
        x[i, :T - n] = 0
    elif i % 4 == 2:
        x[i, n:] = 0
y = model.predict(x, batch_size=samples, verbose=0)
arrays = dict(x=x, y=y)
keras.config.set_dtype_policy('float64')  # the same model in float64: the true outputs
model64 = make(name)
model64.set_weights([w.astype('float64') for w in model.get_weights()])
arrays['y64'] = model64.predict(x, batch_size=samples, verbose=0)
np.savez(ref, **arrays)
print(json.dumps(dict(params=int(model.count_params()), layers=len(model.layers), input=[T],
                      padded_rows=int((x == 0).any(axis=1).sum()))))
"""


def build_sequence(name: str) -> dict[str, Any]:
    """Build a sequence model with Keras 3, save it as .keras and .h5 and Keras' float32 and float64
    outputs on padded token rows (child process)."""
    paths = [OUT / f"{name}.keras", OUT / f"{name}.h5", OUT / f"{name}.ref.npz"]
    argv = [sys.executable, "-c", BUILD_SEQ, name, *map(str, paths), str(SEQ_SAMPLES), str(SEQ_LEN), str(VOCAB)]
    out = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"building {name} failed:\n{out.stderr[-2000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info["file_mb"] = paths[0].stat().st_size / 1e6
    return info


def interleaved(commands: dict[str, tuple[list[str], Path]], repeat: int) -> dict[str, dict[str, Any]]:
    """:func:`timed` for several commands, run in rounds (each command once per round, the order
    rotating from round to round) so that all of them see the same machine: a disturbance of a
    shared machine hits one round of every command, not a block of runs of one. A command that
    fails is not run again. Also ``ratios``: per round, each command's time over the last one's."""
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in commands}
    keys = list(commands)
    for k in range(repeat):
        for key in keys[k % len(keys):] + keys[:k % len(keys)]:
            if not runs[key] or runs[key][-1]["exit"] == 0:
                argv, output = commands[key]
                runs[key].append(timed(argv, 1, output=output))
    out = {}
    for key, got in runs.items():
        out[key] = {"seconds": statistics.median(r["seconds"] for r in got), "runs": [r["runs"][0] for r in got],
                    "peak_mb": max(r["peak_mb"] for r in got), "exit": got[-1]["exit"],
                    "cpu_seconds": statistics.median(r["cpu_seconds"] for r in got), "error": got[-1]["error"]}
    last = keys[-1]
    for key in keys[:-1]:
        pairs = list(zip(runs[key], runs[last]))
        if pairs and all(a["exit"] == 0 and b["exit"] == 0 for a, b in pairs):
            out[key]["paired_ratio"] = statistics.median(a["seconds"] / b["seconds"] for a, b in pairs)
    return out


def run_sequence(name: str, repeat: int, with_tf2onnx: bool) -> dict[str, Any]:
    """One sequence model: bnconvert ``export`` of the ``.keras`` file (check included, and
    ``--no-check``), of the ``.h5`` file too (the other format Keras 3 writes), tf2onnx on the
    ``.keras`` file, then both ONNX files at batch 1 and 32."""
    print(f"{name}: building", file=sys.stderr)
    row: dict[str, Any] = {"model": name, **build_sequence(name)}
    src, h5 = OUT / f"{name}.keras", OUT / f"{name}.h5"
    bn_onnx, tf_onnx = OUT / f"{name}.bnconvert.onnx", OUT / f"{name}.tf2onnx.onnx"
    bare, h5_onnx = src.with_suffix(".nocheck.onnx"), OUT / f"{name}.h5.bnconvert.onnx"
    commands = {"bnconvert": (bnconvert("export", str(src), "-o", str(bn_onnx)), bn_onnx),
                "no_check": (bnconvert("export", str(src), "-o", str(bare), "--no-check"), bare),
                "h5": (bnconvert("export", str(h5), "-o", str(h5_onnx)), h5_onnx)}
    if with_tf2onnx:  # as many runs as bnconvert's, in the same rounds: the time ratio is paired
        commands["tf2onnx"] = ([sys.executable, "-c", TF2ONNX, str(src), str(tf_onnx)], tf_onnx)
    print(f"{name}: bnconvert export (.keras, --no-check, .h5){' and tf2onnx' * with_tf2onnx}, "
          f"{repeat} rounds", file=sys.stderr)
    row.update(interleaved(commands, repeat))
    paths = {"bnconvert": bn_onnx} if row["bnconvert"]["exit"] == 0 else {}
    if not paths and row["no_check"]["exit"] == 0:  # the check failed, not the conversion: the file is still
        # measured (and said to be the unchecked one)
        paths, row["onnx_from"] = {"bnconvert": bare}, "export --no-check"
    if with_tf2onnx and row["tf2onnx"]["exit"] == 0:
        paths["tf2onnx"] = tf_onnx
    print(f"{name}: onnxruntime", file=sys.stderr)
    for tool, stats in compare(paths, OUT / f"{name}.ref.npz", SEQ_LATENCY).items():
        row[tool].update(stats)
    return row


# -- report ---------------------------------------------------------------------------------------
def _versions() -> str:
    import numpy
    import onnx
    import onnxruntime

    try:
        import keras
        import tensorflow as tf
        import tf2onnx

        ml = f"TensorFlow {tf.__version__}, Keras {keras.__version__}, tf2onnx {tf2onnx.__version__}"
    except ImportError:
        ml = "TensorFlow not importable"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"Machine: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}; "
            f"{ml}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}; "
            f"bnconvert at {commit or 'unknown commit'} (plus working tree). Load average at the end: {load}.")


def _f(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.3f}" if a is not None and b else "-"


def _fit(rows: list[dict[str, Any]], key: str = "bnconvert", layers: bool = False) -> tuple[list[float], float] | None:
    """Least squares ``seconds = a + b * Mparams (+ c * layers)`` over rows (``row[key]['seconds']``):
    the coefficients and R^2."""
    import numpy as np

    pts = [r for r in rows if r.get(key) and (not layers or r.get("layers"))]
    if len(pts) < (4 if layers else 3):
        return None
    x = np.array([[1.0, r["params"] / 1e6] + ([float(r["layers"])] if layers else []) for r in pts])
    y = np.array([r[key]["seconds"] for r in pts])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    r2 = 1 - float(((y - x @ coef) ** 2).sum()) / (float(((y - y.mean()) ** 2).sum()) or 1.0)
    return [float(c) for c in coef], r2


def _fit_text(fit: tuple[list[float], float] | None, what: str) -> str:
    if fit is None:
        return ""
    coef, r2 = fit
    layers = f" + {coef[2]:.4f} x layers" if len(coef) > 2 else ""
    return f"{what}: seconds = {coef[0]:.2f} + {coef[1]:.4f} x (million parameters){layers}, R^2 = {r2:.3f}."


#: "error no worse": both files are within a float32 rounding step or two of the float64 values
#: (the outputs are softmax probabilities of about 1e-3, where one step is about 5e-8 of the largest
#: one), so the mean error may exceed tf2onnx's by half a step at the largest output's scale, at
#: the least: 2^-25 relative
ROUNDING = 2.0**-25
#: "latency no worse": the paired ratio may exceed 1 by this much, the spread of repeated
#: measurements of one and the same file on this kind of (shared, 2-core) machine
LATENCY_NOISE = 0.05


def targets(rows: list[dict[str, Any]], scaling: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with the measured value and met / NOT met."""
    by = {r["model"]: r for r in rows}
    out = ["| target | measured | |", "|---|---|---|"]

    def line(what: str, measured: str, ok: bool | None) -> None:
        out.append(f"| {what} | {measured} | {'-' if ok is None else 'met' if ok else '**NOT met**'} |")

    r50 = by.get("ResNet50")
    if r50 and r50.get("tf2onnx", {}).get("seconds"):
        b, t = r50["bnconvert"], r50["tf2onnx"]
        line("ResNet50 export time <= 1/20 of tf2onnx (check included)", f"{b['seconds']:.2f} s / {t['seconds']:.1f} s = "
             f"{b['seconds'] / t['seconds']:.3f}", b["seconds"] / t["seconds"] <= 0.05)
        line("ResNet50 peak memory <= 1/10 of tf2onnx", f"{b['peak_mb']:.0f} MB / {t['peak_mb']:.0f} MB = "
             f"{b['peak_mb'] / t['peak_mb']:.3f}", b["peak_mb"] / t["peak_mb"] <= 0.10)
    compared = [r for r in rows if r.get("tf2onnx", {}).get("nodes") and r["bnconvert"].get("nodes")]
    if compared:
        nodes = [(r["model"], r["bnconvert"]["nodes"], r["tf2onnx"]["nodes"]) for r in compared]
        line("node count <= tf2onnx's, every model", ", ".join(f"{m} {a}/{b}" for m, a, b in nodes),
             all(a <= b for _, a, b in nodes))
        lat = [(r["model"], r["bnconvert"].get("latency_ratio")) for r in compared]
        if all(x is not None for _, x in lat):
            line(f"onnxruntime latency no worse (paired ratio <= 1 + {LATENCY_NOISE:g})",
                 ", ".join(f"{m} {x:.3f}" for m, x in lat), all(x <= 1 + LATENCY_NOISE for _, x in lat))
        err = [(r["model"], r["bnconvert"].get("mean_rel_err64"), r["tf2onnx"].get("mean_rel_err64")) for r in compared]
        if all(a is not None and b is not None for _, a, b in err):
            line("error no worse (mean relative error against float64, within half a float32 rounding step: "
                 f"{ROUNDING:.1e})", ", ".join(f"{m} {a:.2e}/{b:.2e}" for m, a, b in err),
                 all(a <= b + ROUNDING for _, a, b in err))
    if r50 and r50.get("check_cost"):
        b, n, c = r50["bnconvert"], r50["no_check"], r50["check_cost"]
        line("ResNet50 export with its TensorFlow-free check (float64 reference) <= 2x `--no-check` "
             "(median of back-to-back pairs)",
             f"wall {c['wall_ratio']:.2f}x, CPU {c['cpu_ratio']:.2f}x (medians alone: {b['seconds']:.2f} s / "
             f"{n['seconds']:.2f} s)", c["wall_ratio"] <= 2.0)
    if r50:
        line("`inspect` on ResNet50 under 0.5 s", f"{r50['inspect']['seconds']:.2f} s (median)", r50["inspect"]["seconds"] < 0.5)
    series = [r for r in scaling if r["model"] != "Tiny"]
    fit = _fit(series, "no_check")
    if fit is not None:
        line("cost linear in parameters (conversion alone, `--no-check`)",
             f"R^2 = {fit[1]:.3f} over {len(series)} models, {min(r['params'] for r in series) / 1e6:.0f}M to "
             f"{max(r['params'] for r in series) / 1e6:.0f}M parameters", fit[1] >= 0.95)
    base = next((r["bnconvert"]["peak_mb"] for r in scaling if r["model"] == "Tiny"), None)
    large = next((r for r in scaling if r["model"] == "WideMLP"), None)
    if large and base is not None:
        copies = (large["bnconvert"]["peak_mb"] - base) / (large["params"] * 4 / 1e6)
        line("a model past 2 GB exports (external data), <= about two copies of its weights",
             f"{large['params'] * 4 / 1e9:.2f} GB of weights: exit {large['bnconvert']['exit']}, {copies:.2f} copies",
             large["bnconvert"]["exit"] == 0 and copies <= 2.2)
    return out


def _header(command: str) -> list[str]:
    """Machine, versions, command and date: recorded with the results, so a re-rendered report
    still says where and when they were measured."""
    return [_versions(), f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}; "
            "times are medians of the bnconvert runs (one tf2onnx run each), peaks are the largest."]


def _seq_header(command: str, repeat: int) -> list[str]:
    return [_versions(), f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}; times are medians of "
            f"{repeat} runs of each command, run in rounds (each command once a round, the order rotating), "
            "peaks the largest; the time target is judged on the median over the rounds of bnconvert's time "
            "over tf2onnx's."]


def markdown(rows: list[dict[str, Any]], scaling: list[dict[str, Any]], command: str,
             header: list[str] | None = None) -> str:
    lines = [
        *(header or _header(command)),
        "",
        "Targets:",
        "",
        *targets(rows, scaling),
        "",
        "Conversion (`.h5` -> verified ONNX for bnconvert, `.h5` -> ONNX for tf2onnx):",
        "",
        "| model | params | export s: bnconvert / tf2onnx (ratio) | peak MB: bnconvert / tf2onnx (ratio) "
        "| export --no-check s | inspect s | fold s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b, t = r["bnconvert"], r.get("tf2onnx", {})
        lines.append(
            f"| {r['model']} | {r['params']:,} "
            f"| {b['seconds']:.2f} / {_f(t.get('seconds'), '.1f')} ({_ratio(b['seconds'], t.get('seconds'))}) "
            f"| {b['peak_mb']:.0f} / {_f(t.get('peak_mb'), '.0f')} ({_ratio(b['peak_mb'], t.get('peak_mb'))}) "
            f"| {_f(r.get('no_check', {}).get('seconds'), '.2f')} | {r['inspect']['seconds']:.2f} | {r['fold']['seconds']:.2f} |"
        )
    lines += [
        "",
        "The ONNX files (onnxruntime, default optimisation, 2 threads). Latency: median of "
        f"{LATENCY_RUNS} runs at batch 1, the two files' runs interleaved; the paired ratio is the median of "
        "bnconvert/tf2onnx over back-to-back pairs (geometric mean of the two orders). Errors: |onnx - ref| / max |ref| over "
        f"{SAMPLES} inputs, max and mean, against the float32 Keras outputs and against the same model run "
        "in float64 by Keras (the true values; float32 Keras is itself off by a few 1e-7):",
        "",
        "| model | nodes: bn / tf2onnx | latency ms: bn / tf2onnx (paired ratio) | max rel err vs Keras f32: bn / tf2onnx "
        "| max rel err vs float64: bn / tf2onnx / Keras f32 | mean rel err vs float64: bn / tf2onnx |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        b, t = r["bnconvert"], r.get("tf2onnx", {})
        for tool, d in (("bnconvert", b), ("tf2onnx", t)):
            if d.get("extra_inputs"):
                notes.append(f"{r['model']}: the {tool} file has {len(d['extra_inputs'])} inputs besides the image "
                             f"({', '.join(d['extra_inputs'])}, a Normalization layer's statistics left as graph "
                             "inputs); they were fed with Keras' values to measure error and latency.")
        lines.append(
            f"| {r['model']} | {_f(b.get('nodes'), 'd')} / {_f(t.get('nodes'), 'd')} "
            f"| {_f(b.get('latency_ms'), '.1f')} / {_f(t.get('latency_ms'), '.1f')} ({_f(b.get('latency_ratio'), '.3f')}) "
            f"| {_f(b.get('max_rel_err'), '.1e')} / {_f(t.get('max_rel_err'), '.1e')} "
            f"| {_f(b.get('max_rel_err64'), '.1e')} / {_f(t.get('max_rel_err64'), '.1e')} / {_f(b.get('keras_err64'), '.1e')} "
            f"| {_f(b.get('mean_rel_err64'), '.2e')} / {_f(t.get('mean_rel_err64'), '.2e')} |"
        )
    if notes:
        lines += [""] + [f"Note: {n}" for n in notes]
    if scaling:
        base = next((r["bnconvert"]["peak_mb"] for r in scaling if r["model"] == "Tiny"), None)
        lines += ["", "Scaling (`bnconvert export`, TensorFlow-free check included, and `--no-check`; weights MB = "
                  "4 bytes per parameter; copies = (peak - peak of Tiny) / weights MB: how many copies of the "
                  "weights the process held at its peak, activations of the check's inferences included):", "",
                  "| model | params | weights MB | seconds | --no-check seconds | s per million params | peak MB | copies |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(scaling, key=lambda r: r["params"]):
            b, mb = r["bnconvert"], r["params"] * 4 / 1e6
            copies = "-" if base is None or r["model"] == "Tiny" else f"{(b['peak_mb'] - base) / mb:.2f}"
            lines.append(f"| {r['model']} | {r['params']:,} | {mb:.0f} | {b['seconds']:.2f} "
                         f"| {_f(r.get('no_check', {}).get('seconds'), '.2f')} "
                         f"| {b['seconds'] / (r['params'] / 1e6):.3f} | {b['peak_mb']:.0f} | {copies} |")
        series = [r for r in scaling if r["model"] != "Tiny"]
        apps = [r for r in series if r["model"] != "WideMLP"]
        fits = [_fit_text(_fit(series, "no_check"), "Conversion alone (`--no-check`), every model, least squares"),
                _fit_text(_fit(apps, "no_check", layers=True), "Conversion alone, the Keras Applications only "
                          "(5M to 60M parameters, where a fixed cost per layer still shows)"),
                _fit_text(_fit(series), "With the check, every model")]
        lines += [""] + [f for f in fits if f]
        for r in scaling:
            o = r.get("onnx")
            if o:
                lines += ["", f"{r['model']} ({r['file_mb'] / 1e3:.1f} GB .h5): its ONNX file (weights in external data) "
                          f"has {o['nodes']} nodes, max rel err vs Keras {o['max_rel_err']:.1e}, latency "
                          f"{o['latency_ms']:.1f} ms at batch 1; tf2onnx was not run on it."]
    return "\n".join(lines) + "\n"


#: the sequence models' targets (issue 15): conversion at most a tenth of tf2onnx's time, the
#: check included; their outputs within 1e-5 (max abs difference / max abs output) of Keras'
SEQ_TIME_RATIO = 0.1
SEQ_TOLERANCE = 1e-5


def _failure(d: dict[str, Any], what: str) -> str:
    """Why a tool gave no number: its exit code and last line (or that it was not run)."""
    if not d:
        return f"{what} not run"
    error = (d.get("error") or "(no message)").replace("|", "\\|")  # inside a Markdown table
    return f"{what} exited {d['exit']}: `{error}`"


def sequence_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for the sequence models, one line per target and model, met or not; a
    target a tool gave no number for is not met, and the line says why."""
    out = ["| target | measured | |", "|---|---|---|"]

    def line(what: str, measured: str, ok: bool) -> None:
        out.append(f"| {what} | {measured} | {'met' if ok else '**NOT met**'} |")

    for r in rows:
        m, b, n, t = r["model"], r["bnconvert"], r.get("no_check", {}), r.get("tf2onnx", {})
        unchecked = f" (the `{r['onnx_from']}` file: `export` failed)" if r.get("onnx_from") else ""
        what = f"{m}: export time <= {SEQ_TIME_RATIO:g} x tf2onnx's (check included)"
        if b["exit"] or not t or t["exit"]:
            line(what, _failure(b, "bnconvert") if b["exit"] else _failure(t, "tf2onnx"), False)
        else:
            bare = f"; `--no-check` {n['seconds']:.2f} s = {n['seconds'] / t['seconds']:.3f}" if n and not n["exit"] else ""
            cpu = f"; CPU time {b['cpu_seconds']:.2f} s / {t['cpu_seconds']:.2f} s = {b['cpu_seconds'] / t['cpu_seconds']:.3f}"
            ratio = b.get("paired_ratio", b["seconds"] / t["seconds"])  # older runs: the medians' ratio
            paired = f", median of the rounds' ratios {b['paired_ratio']:.3f}" if "paired_ratio" in b else ""
            line(what, f"{b['seconds']:.2f} s / {t['seconds']:.2f} s = {b['seconds'] / t['seconds']:.3f}{paired}{bare}{cpu}",
                 ratio <= SEQ_TIME_RATIO)
        for batch in (1, SEQ_SAMPLES):
            key = "latency" if batch == 1 else f"latency_b{batch}"
            what = f"{m}: onnxruntime latency at batch {batch} no worse than tf2onnx's (paired ratio <= 1 + {LATENCY_NOISE:g})"
            ratio = b.get(f"{key}_ratio")
            if ratio is None:
                line(what, _failure(t, "tf2onnx") if not t or t["exit"] else _failure(b, "bnconvert"), False)
            else:
                line(what, f"{b[f'{key}_ms']:.2f} ms / {t[f'{key}_ms']:.2f} ms, paired ratio {ratio:.3f}{unchecked}",
                     ratio <= 1 + LATENCY_NOISE)
        what = f"{m}: max relative error against Keras float32 <= {SEQ_TOLERANCE:g}"
        if b.get("max_rel_err") is None:
            line(what, _failure(b, "bnconvert"), False)
        else:
            theirs = f" (tf2onnx {t['max_rel_err']:.1e})" if t.get("max_rel_err") is not None else ""
            line(what, f"{b['max_rel_err']:.1e}{theirs}{unchecked}", b["max_rel_err"] <= SEQ_TOLERANCE)
    return out


def sequence_markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    """The "Sequence models" part of RESULTS.md: targets, conversion, the ONNX files."""
    lines = [
        *header,
        "",
        "Targets:",
        "",
        *sequence_targets(rows),
        "",
        "Conversion (the `.keras` file -> verified ONNX for bnconvert, -> ONNX for tf2onnx; medians, largest peak):",
        "",
        "| model | params | export s: bnconvert / tf2onnx (ratio) | export --no-check s (ratio) | export of the .h5 s "
        "| peak MB: bnconvert / tf2onnx (ratio) | nodes: bnconvert / tf2onnx |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        b, n, h, t = r["bnconvert"], r.get("no_check", {}), r.get("h5", {}), r.get("tf2onnx", {})
        ok = {k: d.get("seconds") if d and not d["exit"] else None for k, d in (("b", b), ("n", n), ("h", h), ("t", t))}
        peak = {k: d.get("peak_mb") if d and not d["exit"] else None for k, d in (("b", b), ("t", t))}
        lines.append(
            f"| {r['model']} | {r['params']:,} "
            f"| {_f(ok['b'], '.2f')} / {_f(ok['t'], '.2f')} ({_ratio(ok['b'], ok['t'])}) "
            f"| {_f(ok['n'], '.2f')} ({_ratio(ok['n'], ok['t'])}) | {_f(ok['h'], '.2f')} "
            f"| {_f(peak['b'], '.0f')} / {_f(peak['t'], '.0f')} ({_ratio(peak['b'], peak['t'])}) "
            f"| {_f(b.get('nodes'), 'd')} / {_f(t.get('nodes'), 'd')} |"
        )
        for what, d in (("`bnconvert export` (.keras)", b), ("`bnconvert export --no-check`", n),
                        ("`bnconvert export` (.h5)", h), ("tf2onnx", t)):
            if d and d["exit"]:
                notes.append(f"{r['model']}: {_failure(d, what)}")
    lines += [
        "",
        f"The ONNX files (onnxruntime, default optimisation, 2 threads). Latency: medians of {SEQ_LATENCY[0][1]} runs "
        f"at batch 1 and {SEQ_LATENCY[1][1]} at batch {SEQ_LATENCY[1][0]}, the two files' runs interleaved; paired ratio "
        "as above. Errors: max |onnx - ref| / max |ref| over the same "
        f"{SEQ_SAMPLES} token rows (a quarter full length, the rest padded in front or behind), against Keras 3's "
        "float32 outputs and against the same model run by Keras in float64:",
        "",
        f"| model | latency ms at batch 1: bn / tf2onnx (paired ratio) | at batch {SEQ_SAMPLES}: bn / tf2onnx (paired ratio) "
        "| max rel err vs Keras f32: bn / tf2onnx | max rel err vs float64: bn / tf2onnx / Keras f32 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        b, t = r["bnconvert"], r.get("tf2onnx", {})
        lat = []
        for key in ("latency", f"latency_b{SEQ_SAMPLES}"):
            lat.append(f"{_f(b.get(f'{key}_ms'), '.2f')} / {_f(t.get(f'{key}_ms'), '.2f')} "
                       f"({_f(b.get(f'{key}_ratio'), '.3f')})")
        lines.append(
            f"| {r['model']} | {lat[0]} | {lat[1]} | {_f(b.get('max_rel_err'), '.1e')} / {_f(t.get('max_rel_err'), '.1e')} "
            f"| {_f(b.get('max_rel_err64'), '.1e')} / {_f(t.get('max_rel_err64'), '.1e')} "
            f"/ {_f((b if b.get('keras_err64') is not None else t).get('keras_err64'), '.1e')} |"
        )
    ops = []
    for r in rows:
        for tool in ("bnconvert", "tf2onnx"):
            counts = r.get(tool, {}).get("ops")
            if counts:
                ops.append(f"{r['model']}, {tool} ({r[tool]['nodes']} nodes, input {r[tool].get('input_type', '?')}): "
                           + ", ".join(f"{op} {k}" for op, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    if ops:
        lines += ["", "Operators:", ""] + [f"- {o}" for o in ops]
    notes += [f"{r['model']}: bnconvert's ONNX file measured above is the one `{r['onnx_from']}` wrote, since "
              "`export` with its check failed" for r in rows if r.get("onnx_from")]
    if notes:
        lines += [""] + [f"Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
SEQ_START, SEQ_END = "<!-- sequences:start -->", "<!-- sequences:end -->"


def write_results(path: Path, table: str, start: str = START, end: str = END) -> None:
    """Replace the generated part of ``path`` between the markers ``start`` and ``end``, keeping the
    text around it (and the other generated part); a file without them gets the part appended."""
    block = f"{start}\n{table}{end}"
    if path.exists() and start in (text := path.read_text()) and end in text:
        head, rest = text.split(start, 1)
        path.write_text(head + block + rest.split(end, 1)[1])
    elif path.exists():
        path.write_text(text.rstrip("\n") + f"\n\n{block}\n")
    else:
        path.write_text(f"# Benchmark results\n\n{block}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help=f"default: {' '.join(STANDARD)}")
    parser.add_argument("--scaling", action="store_true", help="also the scaling series (time vs parameters)")
    parser.add_argument("--size", type=int, default=None, help="input size (default: each model's own)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each bnconvert command (median; of tf2onnx "
                        "too for the sequence models)")
    parser.add_argument("--no-tf2onnx", action="store_true", help="skip tf2onnx (quick runs)")
    parser.add_argument("--large", action="store_true", help="also a 2.2 GB model (bnconvert only; needs ~5 GB RAM "
                        "for bnconvert and ~7 GB to build it)")
    parser.add_argument("--output", default=None, help="Markdown file (default: RESULTS.md for the full set)")
    parser.add_argument("--sequences", action="store_true", help=f"the sequence models ({', '.join(SEQUENCES)}); "
                        "alone unless --models, --scaling or --large ask for the others too")
    parser.add_argument("--report", action="store_true", help="only re-render RESULTS.md from the last run's "
                        "benchmarks/out/results.json and sequences.json (after a change to the report, not to what "
                        "is measured)")
    args = parser.parse_args()
    if args.report:
        path, done = Path(args.output or HERE / "RESULTS.md"), False
        if (OUT / "results.json").exists():
            saved = json.loads((OUT / "results.json").read_text())
            table = markdown(saved["rows"], saved["scaling"], saved.get("command", "python benchmarks/run.py"),
                             saved.get("header"))
            write_results(path, table)
            print(table)
            done = True
        if (OUT / "sequences.json").exists():
            saved = json.loads((OUT / "sequences.json").read_text())
            table = sequence_markdown(saved["rows"], saved["header"])
            write_results(path, table, SEQ_START, SEQ_END)
            print(table)
            done = True
        if not done:
            raise SystemExit(f"nothing to re-render: no results.json or sequences.json in {OUT}")
        return
    OUT.mkdir(exist_ok=True)
    subprocess.run(bnconvert("--help"), env=ENV, capture_output=True)  # untimed: writes bytecode caches
    if args.sequences:
        seq_rows = [run_sequence(name, args.repeat, not args.no_tf2onnx) for name in SEQUENCES]
        command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
        header = _seq_header(command, args.repeat)
        table = sequence_markdown(seq_rows, header)
        (OUT / "sequences.json").write_text(json.dumps({"rows": seq_rows, "command": command, "header": header}, indent=2))
        write_results(Path(args.output or HERE / "RESULTS.md"), table, SEQ_START, SEQ_END)
        print(table)
        if args.models is None and not (args.scaling or args.large):
            return
    models = args.models if args.models is not None else STANDARD
    rows = [run_model(name, args.size, args.repeat, not args.no_tf2onnx) for name in models]
    done = {r["model"]: r for r in rows}
    scaling = []
    if args.scaling or args.large:
        scaling.append(run_scaling("Tiny", None, args.repeat))
    if args.scaling:
        for name in SCALING:
            if name in done:
                scaling.append({k: done[name][k] for k in ("model", "params", "layers", "file_mb", "bnconvert", "no_check")})
            else:
                scaling.append(run_scaling(name, args.size, args.repeat))
    if args.large:
        scaling.append(run_scaling("WideMLP", None, 1, compare_onnx=True))
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    header = _header(command)
    table = markdown(rows, scaling, command, header)
    (OUT / "results.json").write_text(json.dumps({"rows": rows, "scaling": scaling, "command": command,
                                                  "header": header}, indent=2))
    output = args.output or (str(HERE / "RESULTS.md") if args.models is None else None)
    if output:
        write_results(Path(output), table)
    print(table)


if __name__ == "__main__":
    main()

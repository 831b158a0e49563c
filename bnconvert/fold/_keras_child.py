"""Run two Keras files on the same seeded inputs, in a child process (``python -m``).

Usage: ``python -m bnconvert.fold._keras_child LIB REFERENCE CANDIDATE OUT.npz SEED BATCH``
with LIB ``keras`` (Keras 3) or ``tf_keras``. Prints one JSON line: ``{"ok": true, "runtime": ...}``
or ``{"ok": false, "stage": "reference"|"candidate", "error": ...}`` (the stage that failed to
load or run); on success OUT.npz
holds ``ref_<i>`` and ``new_<i>`` for every model output. Runs in its own process so Keras 3
and tf-keras never share an interpreter and TensorFlow's memory goes away with it. Models are
loaded with ``compile=False`` (and ``safe_mode=True`` in Keras 3); the parent refuses files
with Lambda layers before it gets here, so no code from a model file ever runs.
"""

from __future__ import annotations

import json
import os
import sys

#: a spatial dimension the file leaves open is run at this size
OPEN_DIM = 16


def _load(lib: str, path: str):  # noqa: ANN202 - Keras types are not importable here
    if lib == "keras":
        import keras

        return keras.models.load_model(path, compile=False, safe_mode=True), f"Keras {keras.__version__}"
    import tf_keras

    return tf_keras.models.load_model(path, compile=False), f"tf-keras {tf_keras.__version__}"


def _inputs(model, seed: int, batch: int):  # noqa: ANN001, ANN202
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for tensor in model.inputs:
        shape = [batch] + [OPEN_DIM if d is None else int(d) for d in tuple(tensor.shape)[1:]]
        out.append(rng.uniform(0.0, 1.0, shape).astype("float32"))  # Polygraphy's default data
    return out


def _run(model, xs):  # noqa: ANN001, ANN202
    import numpy as np

    x = xs if len(xs) > 1 else xs[0]
    try:
        y = model(x, training=False)
    except Exception as exc:  # noqa: BLE001
        if "Unimplemented" not in type(exc).__name__:
            raise
        # TensorFlow's CPU kernels lack channels_first convolutions; XLA compiles them
        import tensorflow as tf

        y = tf.function(lambda t: model(t, training=False), jit_compile=True)(x)
    if isinstance(y, dict):
        y = [y[k] for k in sorted(y)]
    if not isinstance(y, (list, tuple)):
        y = [y]
    return [np.asarray(v, dtype=np.float64) for v in y]


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    lib, reference, candidate, out, seed, batch = argv
    import numpy as np

    stage = "reference"
    try:
        ref, runtime = _load(lib, reference)
        xs = _inputs(ref, int(seed), int(batch))
        ys_ref = _run(ref, xs)
        stage = "candidate"
        new, _ = _load(lib, candidate)
        ys_new = _run(new, xs)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as data
        print(json.dumps({"ok": False, "stage": stage, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}))
        return 0
    arrays = {f"ref_{i}": y for i, y in enumerate(ys_ref)} | {f"new_{i}": y for i, y in enumerate(ys_new)}
    np.savez(out, **arrays)
    print(json.dumps({"ok": True, "runtime": runtime, "outputs": len(ys_ref)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

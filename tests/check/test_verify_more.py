"""verify (issue 18): two batch sizes when the batch is dynamic, top-class agreement, a folder
of .npy inputs, --regimes. ONNX models made with onnx.helper and bnconvert's own exports of the
fixtures, run against the float64 reference: no TensorFlow, a few seconds in all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bnconvert.check.agreement import top_agreement
from bnconvert.check.runs import companion_batch
from bnconvert.cli import main
from bnconvert.errors import BnconvertError, FormatError
from bnconvert.pipeline import verify

from ..conftest import fixture_file
from .onnx_models import conv_bn_onnx, save


def classifier(w: np.ndarray, *, reshape: list[int] | None = None, after: list[int] | None = None,
               batch: int | str = "N", act: str | None = None) -> onnx.ModelProto:
    """x (batch, 3, 5, 5) -> [act] -> Reshape(``reshape``, default [-1, 75]) -> MatMul(w) ->
    [Reshape(``after``)] -> logits."""
    inits = [numpy_helper.from_array(w.astype(np.float32), "W"),
             numpy_helper.from_array(np.array(reshape or [-1, 75], dtype=np.int64), "shape")]
    nodes, src = [], "x"
    if act is not None:
        nodes.append(helper.make_node(act, ["x"], ["a"], name="act"))
        src = "a"
    nodes += [helper.make_node("Reshape", [src, "shape"], ["flat"], name="flatten"),
              helper.make_node("MatMul", ["flat", "W"], ["dense" if after else "logits"], name="dense")]
    if after:
        inits.append(numpy_helper.from_array(np.array(after, dtype=np.int64), "after"))
        nodes.append(helper.make_node("Reshape", ["dense", "after"], ["logits"], name="baked"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 5, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, w.shape[1]])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def direct(path: str, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("verify_more")
    rng = np.random.default_rng(18)
    w, w1000 = rng.normal(size=(75, 10)), rng.normal(size=(75, 1000))
    made = {
        "a": classifier(w),
        "b": classifier(w + rng.normal(scale=0.3, size=w.shape)),  # some top classes change
        "baked_reshape": classifier(w, after=[1, -1]),  # runs at any batch, the wrong shape past 1
        "baked_size": classifier(w, reshape=[1, 75]),  # fails to run past batch 1
        "fixed_input": classifier(w, batch=1),  # the batch written into the input
        "a1000": classifier(w1000),
        "b1000": classifier(w1000 + rng.normal(scale=0.5, size=w1000.shape)),
        "relu": classifier(w, act="Relu"),
        "abs": classifier(w, act="Abs"),
        "conv": conv_bn_onnx(rng),
    }
    return {name: save(m, tmp / f"{name}.onnx") for name, m in made.items()}


# ----------------------------------------------------------------------------- two batch sizes
def test_companion_batch() -> None:
    assert [companion_batch(b) for b in (1, 2, 3, 32)] == [3, 1, 1, 1]


def test_dynamic_batch_runs_at_two_sizes(models: dict[str, str]) -> None:
    result = verify(models["a"], models["a"])
    assert result and [(r.label, r.batch) for r in result.runs] == [("batch 1", 1), ("batch 3", 3)]
    assert [r.inputs[0]["shape"][0] for r in result.runs] == [1, 3]
    assert "the batch is dynamic in both models: compared at batch 1 and 3" in result.notes
    text = result.summary()
    assert "run 2/2 (batch 3): uniform [0, 1) from seed 1" in text and "EQUIVALENT in all 2 runs" in text
    assert [r.batch for r in verify(models["a"], models["a"], batch=4).runs] == [4, 1]
    assert [r.batch for r in verify(models["a"], models["a"], batches=[2]).runs] == [2]
    assert [r.batch for r in verify(models["a"], models["a"], batches=[1, 8, 5]).runs] == [1, 8, 5]


def test_bnconvert_export_of_a_fixture_passes_at_both_sizes(tmp_path: Path) -> None:
    from bnconvert.pipeline import export_file

    out = tmp_path / "chain.onnx"
    export_file(fixture_file("k3_chain.keras"), out, check=False)
    result = verify(fixture_file("k3_chain.keras"), out, reference="float64")
    assert result, result.summary()
    assert [r.batch for r in result.runs] == [1, 3] and all(r.comparison.normalized_error < 1e-5 for r in result.runs)
    assert [g.samples for r in result.runs for g in r.agreement] == [1, 3]  # dense_1 (N, 2): classifier-shaped


def test_a_batch_baked_into_the_graph_fails_at_the_second_size(models: dict[str, str]) -> None:
    result = verify(models["a"], models["baked_size"], locate=True)
    first, second = result.runs
    assert not result and first and not second and second.comparison is None
    assert second.message.startswith("B fails to run at batch 3, although it declares the batch dynamic: ")
    assert "onnxruntime failed to run it" in second.message
    text = result.summary()
    line = next(t for t in text.splitlines() if t.startswith("FAILED: B fails to run at batch 3"))
    assert "\n" not in line and "Traceback" not in text
    assert text.endswith("NOT EQUIVALENT: batch 3 failed (1 of 2 runs)")
    assert result.located is not None and result.located.first is None and "no layer to locate" in result.located.message
    report = json.loads(json.dumps(result.to_dict()))
    assert report["passed"] is False and report["runs"][1]["comparison"] is None
    assert report["comparison"]["passed"] is True  # the first run's, where it always was


def test_a_batch_baked_into_a_reshape_changes_the_output_shape(models: dict[str, str]) -> None:
    result = verify(models["a"], models["baked_reshape"], locate=True)
    first, second = result.runs
    assert first and not second and "shapes differ" in second.comparison.outputs[0].message
    assert second.message.startswith("at batch 3 B's outputs do not have A's shapes")
    assert "=> at batch 3 B's outputs do not have A's shapes" in result.summary()
    assert result.located_run == "batch 3"  # traced on the inputs of the run that failed
    assert result.located.skipped == [("logits", "shapes do not match: A (3, 10), B (1, 30)")]


def test_a_batch_fixed_in_b_inputs_is_said(models: dict[str, str]) -> None:
    result = verify(models["a"], models["fixed_input"])
    assert result and [r.batch for r in result.runs] == [1]
    assert "B fixes the batch of 'x' at 1 where A leaves it dynamic: checked at that batch only" in result.notes
    assert [r.batch for r in verify(models["fixed_input"], models["a"]).runs] == [1]


# ------------------------------------------------------------------------- top-class agreement
def test_top1_agreement_matches_numpy(models: dict[str, str]) -> None:
    result = verify(models["a"], models["b"], batches=[64], seed=3)
    x = np.random.default_rng(3).uniform(0, 1, (64, 3, 5, 5)).astype(np.float32)
    a, b = direct(models["a"], x), direct(models["b"], x)
    expected = int(np.count_nonzero(a.argmax(1) == b.argmax(1)))
    (g,) = result.runs[0].agreement
    assert (g.output, g.samples, g.classes, g.top1, g.top5) == ("logits", 64, 10, expected, None)
    assert 0 < expected < 64  # the perturbation changes some top classes, not all
    assert not result  # the pass rule decides; agreement is information
    assert f"top class agrees on {expected}/64 samples ({100 * expected / 64:.1f}%)".replace(".0%", "%") in result.summary()
    entry = result.to_dict()["runs"][0]["comparison"]["outputs"][0]
    assert entry["top1_agreement"] == pytest.approx(expected / 64) and entry["top5_agreement"] is None
    assert result.to_dict()["agreement"][0]["top1"] == expected


def test_top5_for_a_1000_class_head_matches_numpy(models: dict[str, str]) -> None:
    result = verify(models["a1000"], models["b1000"], batches=[32], seed=4)
    x = np.random.default_rng(4).uniform(0, 1, (32, 3, 5, 5)).astype(np.float32)
    a, b = direct(models["a1000"], x), direct(models["b1000"], x)
    top5 = np.argsort(b, axis=1)[:, -5:]
    expected5 = int(sum(a[i].argmax() in top5[i] for i in range(32)))
    (g,) = result.runs[0].agreement
    assert g.top1 == int(np.count_nonzero(a.argmax(1) == b.argmax(1))) and g.top5 == expected5
    assert g.top1 <= g.top5 and "A's top class in B's top 5 on" in result.summary()


def test_agreement_ties_nan_and_shapes() -> None:
    a = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [np.nan, 0.0, 0.0]])
    b = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    g = top_agreement(a, b)
    assert g is not None and (g.samples, g.top1) == (3, 1)  # a tie met on class 1; row 2 differs; NaN never agrees
    assert top_agreement(a[:, :1], b[:, :1]) is None  # one class: not a classifier
    assert top_agreement(a[None], b[None]) is None and top_agreement(a, b[:2]) is None


# ------------------------------------------------------------------------------- folder of .npy
def test_a_folder_of_npy_files(models: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    x = np.random.default_rng(5).normal(size=(4, 3, 5, 5)).astype(np.float32)
    np.save(folder / "x.npy", x)
    result = verify(models["a"], models["b"], inputs=folder)
    assert [r.label for r in result.runs] == ["file"] and result.input_source == "folder inputs"
    assert result.inputs[0]["shape"] == [4, 3, 5, 5]
    a, b = direct(models["a"], x), direct(models["b"], x)
    assert result.comparison.outputs[0].abs.max == pytest.approx(float(np.abs(a.astype(np.float64) - b).max()))
    (folder / "x.npy").rename(folder / "anything.npy")  # one input: the only .npy, whatever its name
    assert verify(models["a"], models["a"], inputs=folder).inputs[0]["shape"] == [4, 3, 5, 5]
    np.save(folder / "other.npy", x)
    with pytest.raises(BnconvertError, match=r"no array for inputs \['x'\] \(file holds \['anything', 'other'\]\)"):
        verify(models["a"], models["a"], inputs=folder)


def test_a_folder_for_two_inputs_and_its_refusals(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["left", "right"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("left", "right")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "add.onnx")
    folder = tmp_path / "two"
    folder.mkdir()
    np.save(folder / "left.npy", np.ones((2, 4), np.float32))
    np.save(folder / "right.npy", np.arange(8, dtype=np.float64).reshape(2, 4))
    (folder / "notes.txt").write_text("not an array")
    result = verify(model, model, inputs=folder)
    assert result and [i["name"] for i in result.inputs] == ["left", "right"] and result.inputs[1]["dtype"] == "float32"
    (folder / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"\x00" * 8)  # checked before any model loads
    with pytest.raises(FormatError, match=r"bad\.npy: cannot read inputs"):
        verify(model, model, inputs=folder)
    np.save(folder / "bad.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="object arrays are never unpickled"):
        verify(model, model, inputs=folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError, match=r"an inputs folder without \.npy files"):
        verify(model, model, inputs=empty)


# -------------------------------------------------------------------------------------- regimes
def test_regimes_each_reported_and_normal_inputs_catch_relu_against_abs(models: dict[str, str]) -> None:
    uniform_only = verify(models["relu"], models["abs"])
    assert uniform_only  # inputs in [0, 1): ReLU and abs agree
    result = verify(models["relu"], models["abs"], regimes=True)
    assert [(r.label, r.regime, r.passed) for r in result.runs] == [
        ("batch 1", "uniform", True), ("batch 3", "uniform", True), ("normal", "normal", False),
        ("constant", "constant", True),
    ]
    assert not result
    assert [r.input_source for r in result.runs][2:] == ["normal (mean 0, std 1) from seed 1", "constant 0.5"]
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32)
    assert result.runs[2].comparison.outputs[0].abs.max == pytest.approx(
        float(np.abs(direct(models["relu"], x).astype(np.float64) - direct(models["abs"], x)).max()))
    text = result.summary()
    assert "run 3/4 (normal): normal (mean 0, std 1) from seed 1" in text and "run 4/4 (constant): constant 0.5" in text
    assert text.endswith("NOT EQUIVALENT: normal failed (1 of 4 runs)")
    report = json.loads(json.dumps(result.to_dict()))
    assert [r["regime"] for r in report["runs"]] == ["uniform", "uniform", "normal", "constant"]
    assert {"label", "passed", "batch", "regime", "inputs", "input_source", "message", "agreement",
            "comparison"} <= set(report["runs"][0])
    constant = verify(models["relu"], models["relu"], regimes=True, value_range=(-1.0, 3.0)).runs[-1]
    assert constant.input_source == "constant 1"


def test_regimes_keep_integer_inputs_uniform(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["y"], name="cast", to=TensorProto.FLOAT)], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "ids.onnx")
    result = verify(model, model, regimes=True, value_range=(0.0, 9.0))
    assert result and [r.label for r in result.runs] == ["batch 1", "batch 3", "normal", "constant"]
    assert "inputs ['ids']: token ids, integers and booleans are drawn as in the uniform regime in every regime" in result.notes


def test_regimes_and_batches_refused_with_an_inputs_file(models: dict[str, str], tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(BnconvertError, match="--regimes draws random inputs"):
        verify(models["a"], models["a"], inputs=tmp_path / "x.npy", regimes=True)
    with pytest.raises(BnconvertError, match="with --inputs the file sets it"):
        verify(models["a"], models["a"], inputs=tmp_path / "x.npy", batches=[2])


# ------------------------------------------------------------------------------------------ CLI
def test_cli_batches_regimes_and_folder(models: dict[str, str], tmp_path: Path) -> None:
    def invoke(*args: str) -> tuple[int, str, str]:
        r = CliRunner().invoke(main, ["verify", *args])
        return r.exit_code, r.stdout, r.stderr

    code, out, _ = invoke(models["conv"], models["conv"], "--batches", "2,5", "--regimes", "--json")
    report = json.loads(out)
    assert code == 0 and [(r["label"], r["inputs"][0]["shape"][0]) for r in report["runs"]] == [
        ("batch 2", 2), ("batch 5", 5), ("normal", 2), ("constant", 2)]
    assert report["runs"][0]["agreement"] == []  # (N, 3, 5, 5): not classifier-shaped
    code, out, _ = invoke(models["a"], models["baked_size"])
    assert code == 1 and "FAILED: B fails to run at batch 3" in out
    code, _, err = invoke(models["a"], models["a"], "--batches", "1,x")
    assert code == 2 and err == "bnconvert: error: --batches '1,x': expected batch sizes separated by commas, e.g. 1,8\n"
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "x.npy", np.ones((2, 3, 5, 5), np.float32))
    code, out, _ = invoke(models["a"], models["a"], "--inputs", str(folder))
    assert code == 0 and "x [2x3x5x5] float32: folder in" in out
    code, _, err = invoke(models["a"], models["a"], "--inputs", str(folder), "--regimes")
    assert code == 2 and err.count("\n") == 1 and "--regimes draws random inputs" in err

"""Embedding tables as int8 with per-row scales (calib/qdq.py quantize_embeddings; issue 14, Memory): the error bound
per row, what the rewrite leaves alone, the smaller `--target ort` file, `--embeddings float`, and predictions kept."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from debx.calib.calibrate import CalibrateConfig, calibrate
from debx.calib.qdq import embedding_tables, quantize_embeddings, quantize_rows
from debx.errors import ConfigError

WORD = "deberta.embeddings.word_embeddings.weight"


def test_per_row_error_is_at_most_half_a_step_of_that_row():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 24)).astype(np.float32) * rng.uniform(1e-4, 30, size=(300, 1)).astype(np.float32)
    table[7] = 0.0  # an all-zero row: exact, no division by zero
    table[8, 3] = -1e3  # one outlier only coarsens its own row
    q, scale = quantize_rows(table)
    assert q.dtype == np.int8 and scale.shape == (300, 1) and scale.dtype == np.float32
    assert q.min() >= -127
    err = np.abs(q.astype(np.float32) * scale - table).max(axis=1)
    bound = np.abs(table).max(axis=1) / 254
    assert (err <= bound * (1 + 1e-5) + 1e-12).all()
    assert err[7] == 0 and np.abs(q[8]).max() == 127
    others = np.delete(np.arange(300), 8)
    # the outlier's coarse step (1000 / 254) did not spread to the other rows
    assert err[others].max() <= np.abs(table[others]).max() / 254 * (1 + 1e-5) < 1000 / 254 / 4


def _gather_graph(extra_reader: bool = False, rows: int = 600, cols: int = 128):
    """ids -> Gather(table) [-> also MatMul(x, table^T) when extra_reader] and a 2-row type table."""
    rng = np.random.default_rng(1)
    table = rng.normal(size=(rows, cols)).astype(np.float32)
    types = rng.normal(size=(2, cols)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="word"),
             helper.make_node("Gather", ["types", "tt"], ["temb"], name="type"),
             helper.make_node("Add", ["emb", "temb"], ["out"], name="add")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "n", cols])]
    if extra_reader:
        nodes.append(helper.make_node("MatMul", ["out", "table_t"], ["logits"], name="decoder"))
        nodes.insert(0, helper.make_node("Transpose", ["table"], ["table_t"], name="tie"))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "n", rows]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "n"]),
                     helper.make_tensor_value_info("tt", TensorProto.INT64, ["b", "n"])], outputs,
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(types, "types")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table, types


def test_rewrite_dequantizes_only_the_gathered_rows_under_the_same_name():
    import onnxruntime as ort

    model, table, types = _gather_graph()
    before = model.SerializeToString()
    out, summary = quantize_embeddings(model)
    assert model.SerializeToString() == before, "the input model is not modified"
    assert list(summary["tables"]) == ["table"] and "types" in summary["float"]  # 2 rows: left float
    inits = {t.name: t for t in out.graph.initializer}
    assert "table" not in inits and inits["table_int8"].data_type == TensorProto.INT8
    assert list(inits["table_row_scale"].dims) == [600, 1] and inits["types"].data_type == TensorProto.FLOAT
    onnx.checker.check_model(out)
    ids = np.array([[0, 5, 599, 5], [17, 1, 2, 3]], np.int64)
    tt = np.array([[0, 1, 0, 1], [1, 1, 0, 0]], np.int64)
    got = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["out"], {"ids": ids, "tt": tt})[0]
    want = table[ids] + types[tt]
    bound = np.abs(table).max(axis=1)[ids][..., None] / 254
    assert (np.abs(got - want) <= bound * (1 + 1e-5)).all()
    assert summary["tables"]["table"]["max_abs_error"] <= np.abs(table).max() / 254


def test_tables_other_ops_read_stay_float():
    model, _, _ = _gather_graph(extra_reader=True)  # a masked-LM decoder tied to the word embeddings
    tables, skipped = embedding_tables(model)
    assert not tables and "other ops" in skipped["table"]
    out, summary = quantize_embeddings(model)
    assert out is model and not summary["tables"]


def _cfg(exports, glue_dir, out, **kw):
    return CalibrateConfig(model=exports["v3"], output=out, task="sst2", data_dir=glue_dir, method="minmax",
                           num_samples=16, threads=1, **kw)


def _table_types(path) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in onnx.load(str(path)).graph.initializer
            if t.name.startswith(WORD)}


def test_target_ort_file_shrinks_and_float_option_keeps_the_table(exports, glue_dir, tmp_path):
    q = calibrate(_cfg(exports, glue_dir, tmp_path / "q.onnx", target="ort"))
    f = calibrate(_cfg(exports, glue_dir, tmp_path / "f.onnx", target="ort", embeddings="float"))
    rows, cols = _table_types(f.output)[WORD][1]
    assert _table_types(f.output) == {WORD: (TensorProto.FLOAT, [rows, cols])}
    assert _table_types(q.output) == {WORD + "_int8": (TensorProto.INT8, [rows, cols]),
                                      WORD + "_row_scale": (TensorProto.FLOAT, [rows, 1])}
    saved = f.output.stat().st_size - q.output.stat().st_size
    assert saved >= 0.99 * (3 * rows * cols - 4 * rows), (saved, rows, cols)  # 4 bytes -> 1 byte + a scale per row
    side_q, side_f = (json.loads(r.sidecar.read_text())["quantization"]["embeddings"] for r in (q, f))
    assert side_q["tables"][WORD]["shape"] == [rows, cols] and side_f == {"format": "float", "tables": {}}
    assert q.metadata["parity"]["argmax_agreement"] >= 0.9


def test_embeddings_option_checks(exports, glue_dir, tmp_path):
    assert _cfg(exports, glue_dir, tmp_path / "a.onnx", target="ort").embeddings == "int8"
    assert _cfg(exports, glue_dir, tmp_path / "a.onnx").embeddings == "float"  # TensorRT target: unchanged
    with pytest.raises(ConfigError, match="--embeddings int8 applies to --target ort"):
        _cfg(exports, glue_dir, tmp_path / "a.onnx", embeddings="int8")
    with pytest.raises(ConfigError, match="--embeddings 'fp8'"):
        _cfg(exports, glue_dir, tmp_path / "a.onnx", target="ort", embeddings="fp8")


def test_cli_embeddings_refused_for_trt_in_one_line(exports, glue_dir, tmp_path, monkeypatch, capsys):
    from cli_helpers import run_main

    code, _, err = run_main(monkeypatch, capsys, "calibrate", exports["v3"], "-t", "sst2", "-o", tmp_path / "x.onnx",
                            "--data-dir", glue_dir, "--embeddings", "int8")
    assert code == 2 and err.startswith("debx: error: --embeddings int8 applies to --target ort")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.onnx").exists()


def test_predictions_kept_on_a_trained_like_model(trained_like_checkpoints, glue_dir, tmp_path):
    """The quickstart recipe (debx attention, --target ort) on trained-like weights: int8 embeddings change no
    prediction on 128 SST-2 dev rows compared with the same file with float embeddings."""
    from debx.evaluate import EvalConfig, evaluate
    from debx.exporters.export import ExportConfig, export_onnx

    fp32 = export_onnx(ExportConfig(trained_like_checkpoints["v3"], tmp_path / "v3.onnx", attention="debx",
                                    validate=False)).output
    preds = {}
    for emb in ("int8", "float"):
        out = calibrate(CalibrateConfig(model=fp32, output=tmp_path / f"v3.{emb}.onnx", task="sst2",
                                        data_dir=glue_dir, method="minmax", num_samples=16, threads=1, target="ort",
                                        embeddings=emb)).output
        preds[emb] = evaluate(EvalConfig(task="sst2", engine=out, data_dir=glue_dir, limit=128,
                                         progress=False)).predictions
    assert len(preds["int8"]) == 128
    assert (np.asarray(preds["int8"]) == np.asarray(preds["float"])).mean() >= 0.99

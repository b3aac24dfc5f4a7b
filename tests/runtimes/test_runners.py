"""The runner registry, backend selection, the torch and ONNX Runtime runners, and the comparator."""

from __future__ import annotations

import numpy as np
import pytest

from debx.errors import ConfigError, MissingDependencyError
from debx.runtimes import HEAD_OUTPUTS, RUNNERS, backend_for, runner_class, runner_for
from debx.runtimes.compare import Case, Comparator


def _feeds(with_types=False):
    ids = np.array([[1, 206, 297, 347, 2], [1, 845, 2, 0, 0]], dtype=np.int64)  # < every fixture's vocab
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)}
    if with_types:
        feeds["token_type_ids"] = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=np.int64)
    return feeds


def test_registry_entries_name_a_module_and_class():
    assert set(RUNNERS) == {"torch", "onnxruntime", "tensorrt"}
    assert RUNNERS["tensorrt"] == "debx.runtimes.tensorrt:TensorRTRunner"
    for backend in ("torch", "onnxruntime"):
        cls = runner_class(backend)
        assert cls.name == backend
    with pytest.raises(ConfigError, match="unknown runtime"):
        runner_class("tvm")


def test_backend_is_picked_by_what_the_path_is(tmp_path, tiny_checkpoints):
    assert backend_for(tiny_checkpoints["v3"]) == "torch"
    for name, backend in [("m.onnx", "onnxruntime"), ("m.plan", "tensorrt"), ("m.engine", "tensorrt")]:
        assert backend_for(tmp_path / name) == backend
    (tmp_path / "m.pt").write_text("x")
    with pytest.raises(ConfigError, match="cannot tell the runtime"):
        backend_for(tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="no such file"):
        backend_for(tmp_path / "missing.bin")


def test_options_that_do_not_apply_are_refused(tiny_checkpoints):
    assert runner_for(tiny_checkpoints["v3"], threads=1, provider=None, plugins=[]).name == "torch"
    with pytest.raises(ConfigError, match="provider"):
        runner_for(tiny_checkpoints["v3"], provider="cuda")


@pytest.mark.parametrize("head", list(HEAD_OUTPUTS))
def test_torch_runner_outputs_float32_by_head_name(tiny_head_checkpoints, head):
    from debx.runtimes.torch import TorchRunner

    with TorchRunner(tiny_head_checkpoints[head], head=head) as r:
        out = r.infer(_feeds())
    name, token_level = HEAD_OUTPUTS[head]
    assert list(out) == [name] and out[name].dtype == np.float32
    assert out[name].shape[:2] == ((2, 5) if token_level else (2,) + out[name].shape[1:2])
    assert r.describe()["head"] == head


def test_torch_runner_uses_token_types_only_when_the_model_has_them(tiny_checkpoints):
    from debx.runtimes.torch import TorchRunner

    with TorchRunner(tiny_checkpoints["v2"]) as r2, TorchRunner(tiny_checkpoints["v3"]) as r3:
        assert r2.input_names == ["input_ids", "attention_mask", "token_type_ids"]
        assert r3.input_names == ["input_ids", "attention_mask"]
        a = r2.infer(_feeds(True))["logits"]
        b = r2.infer({**_feeds(True), "token_type_ids": np.zeros((2, 5), np.int64)})["logits"]
        assert np.abs(a - b).max() > 1e-4


def test_onnxruntime_runner_and_comparator(tmp_path, tiny_checkpoints, glue_dir):
    from debx.exporters.export import ExportConfig, export_onnx

    onnx_file = tmp_path / "v2.debx.onnx"  # custom nodes: the runner registers the references by itself
    export_onnx(ExportConfig(tiny_checkpoints["v2"], onnx_file, attention="debx", data_dir=glue_dir))
    ref, cand = runner_for(tiny_checkpoints["v2"]), runner_for(onnx_file, threads=1)
    assert cand.name == "onnxruntime"
    with ref, cand:
        assert cand.input_names == ref.input_names and cand.output_names == ["logits"]
        diffs = Comparator(ref, cand).run([Case("two rows", _feeds(True))], {"logits": "rows"})["onnxruntime"]
        assert cand.describe()["attention"] == "debx" and cand.describe()["provider"] == "CPUExecutionProvider"
    (d,) = diffs
    assert d.shape == d.ref_shape == (2, 2) and d.max_abs_diff <= 1e-4 and d.argmax_same == d.argmax_total == 2
    with pytest.raises(ConfigError, match="missing inputs"):
        with runner_for(onnx_file) as r:
            r.infer({"input_ids": _feeds()["input_ids"]})


def test_gpu_providers_need_onnxruntime_gpu(tmp_path, tiny_checkpoints):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner

    (tmp_path / "m.onnx").write_bytes(b"")
    for provider in ("cuda", "tensorrt"):
        with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
            OnnxRuntimeRunner(tmp_path / "m.onnx", provider=provider).activate()
    with pytest.raises(ConfigError, match="unknown provider"):
        OnnxRuntimeRunner(tmp_path / "m.onnx", provider="rocm").activate()


def test_not_an_onnx_file_is_a_clear_error(tmp_path):
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner

    (tmp_path / "m.onnx").write_text("not a model")
    with pytest.raises(ConfigError, match="not a readable ONNX model"):
        OnnxRuntimeRunner(tmp_path / "m.onnx").activate()

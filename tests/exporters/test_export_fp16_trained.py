"""`debx export --fp16` on checkpoints that look like users' (tests/conftest.py: trained_like_checkpoints, written by
transformers' save_pretrained with trained-like LayerNorm, bias and embedding weights).

Issue 11: every such export failed validation (`onnx.checker: Inferred elem type differs from existing elem type:
(1) vs (10)`) because the converter retyped the value_info of LayerNorm weights to float16 while the weights stayed
FP32; freshly initialised fixtures hid it (their all-ones LayerNorm weights are de-duplicated and renamed).
Parity is measured against transformers' own logits in a plain onnxruntime.InferenceSession.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from debx.variants import VARIANTS
from debx.exporters.attention import MODES, supported_modes
from debx.exporters.export import ExportConfig, export_onnx

HF_VARIANTS = [v for v in VARIANTS if not VARIANTS[v].gated]  # transformers has no giMLP
FP16_ATOL = 2e-2


@pytest.fixture(scope="session")
def fp16_exports(tmp_path_factory, trained_like_checkpoints, glue_dir):
    """export(variant, mode, opset=None) -> ExportResult of a validated --fp16 export (cached per session)."""
    root = tmp_path_factory.mktemp("fp16-trained")
    cache: dict = {}

    def export(variant: str, mode: str, opset: int | None = None):
        key = (variant, mode, opset)
        if key not in cache:
            out = root / f"{variant}.{mode}.{opset or 'default'}.fp16.onnx"
            cache[key] = export_onnx(ExportConfig(checkpoint=Path(trained_like_checkpoints[variant]), output=out,
                                                  attention=mode, fp16=True, opset=opset, data_dir=glue_dir))
        return cache[key]

    return export


def _modes(checkpoint) -> tuple[str, ...]:
    from debx.checkpoint import load_model

    return supported_modes(load_model(checkpoint)[1].config)


def _no_value_info_on_initializers(path: Path) -> None:
    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t.data_type for t in m.graph.initializer}
    clash = [vi.name for vi in m.graph.value_info if vi.name in inits]
    assert not clash, f"value_info entries for initializers: {clash[:3]}"


@pytest.mark.parametrize("variant, mode", [(v, m) for v in VARIANTS for m in MODES])
def test_fp16_export_of_a_trained_like_checkpoint_validates(fp16_exports, trained_like_checkpoints, variant, mode):
    if mode not in _modes(trained_like_checkpoints[variant]):
        pytest.skip(f"--attention {mode} does not represent {variant} (refusal tested in test_export.py)")
    res = fp16_exports(variant, mode)  # export_onnx raises ValidationFailed when the file does not validate
    assert res.report.ok and res.report.precision == "fp16"
    assert res.report.max_abs_diff <= FP16_ATOL
    _no_value_info_on_initializers(res.output)
    model = onnx.load(str(res.output))
    fp32_norm_weights = [t for t in model.graph.initializer if "LayerNorm" in t.name and t.data_type == 1]
    assert fp32_norm_weights and not any(np.all(onnx.numpy_helper.to_array(t) == 1) for t in fp32_norm_weights
                                         if t.name.endswith("weight")), "the fixture must have trained-like norms"


@pytest.mark.parametrize("opset", [18, 19, 20])
@pytest.mark.parametrize("mode", ["onnx", "fast"])
def test_fp16_export_at_every_opset(fp16_exports, opset, mode):
    res = fp16_exports("v3", mode, opset)
    assert res.report.ok and res.report.max_abs_diff <= FP16_ATOL
    assert {o.domain: o.version for o in onnx.load(str(res.output)).opset_import}[""] == opset


@pytest.mark.parametrize("variant", HF_VARIANTS)
@pytest.mark.parametrize("mode", ["onnx", "fast", "debx"])
def test_fp16_parity_with_transformers(fp16_exports, trained_like_checkpoints, glue_dir, hf_glue_logits, variant,
                                      mode):
    """FP16 logits vs transformers' FP32 logits: a plain ONNX Runtime session for the standard-op modes; the debx
    custom op needs its library registered (debx's session helper does only that)."""
    import onnxruntime as ort

    from debx.runtimes.onnxruntime import session_for_model

    ckpt = trained_like_checkpoints[variant]
    res = fp16_exports(variant, mode)
    if mode == "debx":
        session = session_for_model(onnx.load(str(res.output)))
    else:
        session = ort.InferenceSession(str(res.output), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    worst = 0.0
    for feeds, ref in hf_glue_logits(ckpt, glue_dir, "token_type_ids" in names):
        got = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
        assert got.dtype == np.float32 and got.shape == ref.shape
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst <= FP16_ATOL, f"{variant} --attention {mode} --fp16: max |diff| vs transformers {worst:.3g}"

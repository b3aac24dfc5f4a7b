"""Activation ranges from ONNX Runtime's calibrators: minmax is the true extreme, histogram methods clip inside it,
only the policy's tensors are measured, JSON round trip."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from debx.calib.ranges import Ranges, RangeConfig, TensorRange, compute_ranges
from debx.errors import ConfigError


@pytest.fixture(scope="module")
def model(exports):
    return onnx.load(str(exports["v3"]))


@pytest.fixture(scope="module")
def minmax(model, calib_batches, tmp_path_factory):
    return compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path_factory.mktemp("mm"))


def _true_extremes(model, batches, names):
    from debx.runtimes.onnxruntime import session_for_model

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for n in names:
        probe.graph.output.append(onnx.ValueInfoProto(name=n))
    s = session_for_model(probe)
    lo, hi = {n: np.inf for n in names}, {n: -np.inf for n in names}
    for b in batches:
        for n, v in zip([o.name for o in s.get_outputs()], s.run(None, b)):
            if n in lo:
                lo[n], hi[n] = min(lo[n], v.min()), max(hi[n], v.max())
    return lo, hi


def test_minmax_is_the_symmetric_true_extreme(model, minmax, calib_batches):
    names = sorted(minmax.tensors)[:8]
    lo, hi = _true_extremes(model, calib_batches.batches, names)
    for n in names:
        amax = max(abs(lo[n]), abs(hi[n]))
        assert minmax.tensors[n].amax == pytest.approx(amax, rel=1e-6)
        assert minmax.tensors[n].lo == pytest.approx(-amax, rel=1e-6)  # symmetric ranges (TensorRT INT8)
        assert minmax.tensors[n].scale == pytest.approx(amax / 127, rel=1e-6)


def test_only_matmul_and_gemm_tensors_are_measured(model, minmax):
    wanted = set()
    inits = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            wanted.update(t for t in [*node.input, *node.output] if t and t not in inits)
    assert set(minmax.tensors) <= wanted and len(minmax.tensors) >= 0.9 * len(wanted)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_clip_inside_minmax(model, minmax, calib_batches, tmp_path, method):
    cfg = RangeConfig(method, percentile=99.0, num_bins=256 if method == "entropy" else 2048)
    ranges = compute_ranges(model, calib_batches.batches, cfg, tmp_path)
    assert set(ranges.tensors) == set(minmax.tensors)
    ratios = [ranges.tensors[n].amax / minmax.tensors[n].amax for n in ranges.tensors if minmax.tensors[n].amax > 0]
    assert max(ratios) <= 1.0 + 1e-5
    assert min(ratios) < 0.99  # some outliers were clipped
    assert ranges.settings["method"] == method and ranges.num_batches == len(calib_batches.batches)


def test_plugin_graph_is_calibrated_on_the_reference_op(exports, calib_batches, tmp_path):
    model = onnx.load(str(exports["v3-debx"]))
    ranges = compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path)
    produced = {o for n in model.graph.node for o in n.output}
    assert ranges.tensors and set(ranges.tensors) <= produced | {i.name for i in model.graph.input}


def test_json_round_trip_and_bad_files(minmax, tmp_path):
    path = tmp_path / "m.onnx.ranges.json"
    minmax.save(path)
    back = Ranges.load(path)
    assert back.tensors == minmax.tensors and back.method == "minmax"
    assert set(back.to_tensors_data().data) == set(minmax.tensors)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="ranges"):
        Ranges.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="--method"):
        RangeConfig("kl")
    with pytest.raises(ConfigError, match="--percentile"):
        RangeConfig("percentile", percentile=0)
    assert TensorRange(-3.0, 1.5).amax == 3.0

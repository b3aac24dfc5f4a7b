"""TensorRT calibration cache text: header, big-endian hex scales, version codes, round trip, bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from debx.calib.ranges import Ranges, TensorRange
from debx.calib.trt_cache import (format_cache, hex_to_scale, parse_cache, read_cache, scale_to_hex, scales_from_ranges,
                             version_code, write_cache)
from debx.errors import ConfigError


def test_hex_is_the_big_endian_float32_bit_pattern():
    # the worked example NVIDIA gives for its cache files: 3c92aa10 <-> 0.0179033577
    assert scale_to_hex(0.0179033577) == "3c92aa10"
    assert hex_to_scale("3c92aa10") == pytest.approx(0.0179033577, rel=1e-7)
    assert scale_to_hex(1.0) == "3f800000"
    assert scale_to_hex(1.0) == struct.pack(">f", 1.0).hex()


@pytest.mark.parametrize("version, code", [("10.14.1", 101401), ("10.0.0", 100000), ("8.6.1", 8601), ("7.0.0", 7000)])
def test_version_codes_follow_tensorrt(version, code):
    assert version_code(version) == code


def test_header_and_sorted_lines():
    text = format_cache({"b": 0.5, "a/x:0": 1.0 / 127})
    lines = text.splitlines()
    assert lines[0] == "TRT-101401-EntropyCalibration2"
    assert lines[1].startswith("a/x:0: ") and lines[2] == "b: 3f000000"
    assert text.endswith("\n")


def test_round_trip_through_a_file(tmp_path):
    rng = np.random.default_rng(0)
    scales = {f"/encoder/layer.{i}/attention/self/MatMul_output_0": float(s)
              for i, s in enumerate(rng.uniform(1e-4, 10, 50).astype(np.float32))}
    path = tmp_path / "model.int8.onnx.calib.cache"
    write_cache(path, scales, version="8.6.1")
    code, algorithm, back = read_cache(path)
    assert (code, algorithm) == (8601, "EntropyCalibration2")
    assert back == scales  # float32 values survive bit-exactly


def test_scales_from_ranges_are_amax_over_127():
    ranges = Ranges("minmax", {"x": TensorRange(-2.54, 1.0), "y": TensorRange(0.0, 0.0), "z": TensorRange(-1, 12.7)})
    scales = scales_from_ranges(ranges)
    assert scales == pytest.approx({"x": 0.02, "z": 0.1})  # an all-zero tensor has no usable scale: left out


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("hello\n", "first line"),
    ("TRT-8601-EntropyCalibration2\nx: 3c92aa1\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\nx 3c92aa10\n", "line 2"),
])
def test_bad_caches_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_cache(text)


def test_bad_inputs_to_the_writer():
    with pytest.raises(ConfigError, match="version"):
        format_cache({"x": 1.0}, version="ten")
    with pytest.raises(ConfigError, match="invalid INT8 scale"):
        format_cache({"x": float("nan")})
    with pytest.raises(ConfigError, match="algorithm"):
        format_cache({"x": 1.0}, algorithm="Magic")

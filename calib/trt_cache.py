"""TensorRT INT8 calibration cache (text form), for users of TensorRT's implicit quantization.

The file TensorRT's calibrators write and read back (`IInt8Calibrator::readCalibrationCache`,
`trtexec --calib=FILE`):

    TRT-<version>-EntropyCalibration2
    <tensor name>: <scale>
    ...

* <version> is TensorRT's integer version code: major*10000 + minor*100 + patch from TensorRT 10 on
  (10.14.1 -> 101401), major*1000 + minor*100 + patch before (8.6.1 -> 8601).
* <scale> is the per-tensor INT8 scale amax / 127 as the 8 hex digits of its IEEE-754 float32 bit pattern,
  most significant byte first (0.0179033577 -> 3c92aa10).
* Tensor names are the ONNX tensor names: TensorRT's ONNX parser names each network tensor after the ONNX value.

ONNX Runtime's `write_calibration_table` writes a different text file (`name amax`, decimal) for its TensorRT
execution provider; this module writes the TensorRT format itself. Implicit quantization is deprecated in
TensorRT 10 in favour of the explicit Q/DQ model `debx calibrate` writes; the cache serves older pipelines.
A tensor absent from the cache (the cache covers the tensors the Q/DQ policy calibrates: MatMul/Gemm inputs and
outputs) has no INT8 range, so TensorRT keeps the layers that need it in FP16/FP32.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

from debx.errors import ConfigError

DEFAULT_TRT_VERSION = "10.14.1"  # the TensorRT headers debx builds its plugins against
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_LINE = re.compile(r"^(.*): ([0-9a-fA-F]{8})$")


def version_code(version: str) -> int:
    """'10.14.1' -> 101401; '8.6.1' -> 8601 (TensorRT's NV_TENSORRT_VERSION for that release)."""
    parts = version.split(".")
    try:
        major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    except ValueError:
        raise ConfigError(f"TensorRT version {version!r}: expected MAJOR.MINOR.PATCH, e.g. 10.14.1") from None
    if not (0 <= minor < 100 and 0 <= patch < 100) or major < 1:
        raise ConfigError(f"TensorRT version {version!r}: out of range")
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def format_cache(scales: dict[str, float], version: str = DEFAULT_TRT_VERSION,
                 algorithm: str = "EntropyCalibration2") -> str:
    """The cache text for per-tensor scales (amax / 127)."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown TensorRT calibration algorithm {algorithm!r} (choose one of {', '.join(ALGORITHMS)})")
    lines = [f"TRT-{version_code(version)}-{algorithm}"]
    for name in sorted(scales):
        scale = float(scales[name])
        if not math.isfinite(scale) or scale < 0:
            raise ConfigError(f"tensor {name!r}: invalid INT8 scale {scale}")
        if "\n" in name or name.endswith(" "):
            raise ConfigError(f"tensor name {name!r} cannot be written to a TensorRT calibration cache")
        lines.append(f"{name}: {scale_to_hex(scale)}")
    return "\n".join(lines) + "\n"


def write_cache(path: str | Path, scales: dict[str, float], version: str = DEFAULT_TRT_VERSION,
                algorithm: str = "EntropyCalibration2") -> None:
    Path(path).write_text(format_cache(scales, version, algorithm))


def parse_cache(text: str) -> tuple[int, str, dict[str, float]]:
    """(version code, algorithm, {tensor: scale}) of a cache's text. ConfigError on anything else."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError("empty TensorRT calibration cache")
    head = _HEADER.match(lines[0])
    if head is None:
        raise ConfigError(f"not a TensorRT calibration cache: first line {lines[0][:60]!r} is not TRT-<version>-<algorithm>")
    scales = {}
    for lineno, line in enumerate(lines[1:], start=2):
        m = _LINE.match(line)
        if m is None:
            raise ConfigError(f"TensorRT calibration cache line {lineno}: expected '<tensor>: <8 hex digits>', got {line[:60]!r}")
        scales[m.group(1)] = hex_to_scale(m.group(2))
    return int(head.group(1)), head.group(2), scales


def read_cache(path: str | Path) -> tuple[int, str, dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such calibration cache")
    return parse_cache(path.read_text())


def scales_from_ranges(ranges) -> dict[str, float]:
    """debx.calib.ranges.Ranges -> {tensor: amax / 127}; tensors that never saw a non-zero value are left out."""
    return {name: r.scale for name, r in ranges.tensors.items() if r.amax > 0}

"""Activation ranges measured with ONNX Runtime's calibrators, and the JSON file that holds them.

Methods (onnxruntime.quantization.calibrate):
  minmax      MinMaxCalibrater: the largest |x| seen (ReduceMin/ReduceMax inserted into the graph)
  entropy     EntropyCalibrater: the clipping threshold that minimises the KL divergence between the histogram and
              its 128-level quantized copy (the TensorRT "EntropyCalibration2" idea). ORT's search is a Python loop
              whose cost grows with the square of the bin count: 256 bins by default (0.1 s per tensor), settable.
  percentile  PercentileCalibrater: the given percentile of |x| (2048 bins)

Histograms are collected one batch per `collect_data` call: batches have their own (dynamic) lengths, and ORT
stacks the outputs of one call into one array. Graphs with custom attention nodes are calibrated on the
CPU references (debx.runtimes.reference_ops), in a session this module creates for the calibrator.

`<model>.ranges.json`:
    {"format": "debx-ranges/1", "method": ..., "settings": {...}, "num_batches": ...,
     "tensors": {name: {"min": lo, "max": hi, "amax": max(|lo|, |hi|), "scale": amax / 127}}}
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from debx.artifacts import weights_bytes  # noqa: F401  (re-exported for debx.calib.qdq)
from debx.contract import INLINE_WEIGHTS_LIMIT
from debx.errors import ConfigError

METHODS = ("entropy", "percentile", "minmax")
RANGES_FORMAT = "debx-ranges/1"
INT8_MAX = 127


@dataclass
class RangeConfig:
    method: str = "entropy"
    percentile: float = 99.99  # percentile method: the share of |x| kept inside the range, in percent
    num_bins: int | None = None  # histogram bins; None: 256 for entropy, 2048 for percentile
    symmetric: bool = True  # symmetric ranges (zero-point 0): what TensorRT's INT8 needs
    op_types: tuple[str, ...] | None = ("MatMul", "Gemm")  # tensors at these ops' inputs/outputs; None: every float tensor

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.num_bins is not None and self.num_bins < 128:
            raise ConfigError(f"--num-bins must be >= 128 (the 8-bit levels), got {self.num_bins}")

    @property
    def bins(self) -> int:
        if self.num_bins is not None:
            return self.num_bins
        return 256 if self.method == "entropy" else 2048


@dataclass(frozen=True)
class TensorRange:
    lo: float
    hi: float

    @property
    def amax(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def scale(self) -> float:
        """Symmetric INT8 scale: amax / 127 (the value TensorRT's calibration cache stores)."""
        return self.amax / INT8_MAX


@dataclass
class Ranges:
    method: str
    tensors: dict[str, TensorRange]
    settings: dict = field(default_factory=dict)
    num_batches: int = 0

    def to_dict(self) -> dict:
        return {
            "format": RANGES_FORMAT,
            "method": self.method,
            "settings": self.settings,
            "num_batches": self.num_batches,
            "tensors": {k: {"min": r.lo, "max": r.hi, "amax": r.amax, "scale": r.scale}
                        for k, r in sorted(self.tensors.items())},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Ranges":
        if d.get("format") != RANGES_FORMAT:
            raise ConfigError(f"not a debx ranges file (format {d.get('format')!r}, expected {RANGES_FORMAT!r})")
        tensors = {k: TensorRange(float(v["min"]), float(v["max"])) for k, v in d["tensors"].items()}
        return cls(d["method"], tensors, dict(d.get("settings") or {}), int(d.get("num_batches", 0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Ranges":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable ranges file ({e})") from None

    def restricted(self, names) -> "Ranges":
        names = set(names)
        return Ranges(self.method, {k: v for k, v in self.tensors.items() if k in names}, self.settings,
                      self.num_batches)

    def to_tensors_data(self):
        """ORT's TensorsData (lowest/highest per tensor), for quantize_static's calibration cache."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                  "minmax": CalibrationMethod.MinMax}[self.method]
        data = {k: TensorData(lowest=np.float32(r.lo), highest=np.float32(r.hi)) for k, r in self.tensors.items()}
        return TensorsData(method, data)


# ---------------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------------


def _calibrator(cfg: RangeConfig, model_path: Path, augmented_path: Path, large: bool):
    from onnxruntime.quantization.calibrate import EntropyCalibrater, MinMaxCalibrater, PercentileCalibrater

    op_types = list(cfg.op_types) if cfg.op_types else None
    common = dict(symmetric=cfg.symmetric, use_external_data_format=large)
    if cfg.method == "minmax":
        return MinMaxCalibrater(model_path, op_types, str(augmented_path), **common)
    if cfg.method == "entropy":
        return EntropyCalibrater(model_path, op_types, str(augmented_path), num_bins=cfg.bins, num_quantized_bins=128,
                                 **common)
    return PercentileCalibrater(model_path, op_types, str(augmented_path), num_bins=cfg.bins,
                                percentile=cfg.percentile, **common)


LARGE_MODEL_BYTES = INLINE_WEIGHTS_LIMIT  # above this, weights go to an external data file (debx.contract)


def save_model_copy(model, path: str | Path, data_name: str | None = None) -> bool:
    """Write `model` to `path` without touching the in-memory proto (onnx.save with external data rewrites the
    tensors it saves); weights go to `data_name` (default `<path>.data`) beside it when the model is large. Returns
    True when they did."""
    from debx.artifacts import save_onnx_model

    if weights_bytes(model) <= LARGE_MODEL_BYTES:
        save_onnx_model(model, path)
        return False
    save_onnx_model(model, path, data_name or Path(path).name + ".data", copy=True)
    return True


def _session(augmented_path: Path, custom_ops: bool, threads: int | None):
    """The calibrator's session: no graph optimisation (every measured tensor must survive), custom ops registered."""
    import onnxruntime as ort

    from debx.runtimes.onnxruntime import session_options

    so = session_options(threads, custom_ops=custom_ops)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(augmented_path), so, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def quiet():
    """ORT's quantization tools print progress to stdout and warn through logging; keep the CLI output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def compute_ranges(model, batches: list[dict[str, np.ndarray]], cfg: RangeConfig, work_dir: str | Path,
                   threads: int | None = None) -> Ranges:
    """Ranges of the float tensors of `model` (onnx.ModelProto) over `batches`, with ORT's calibrator of cfg.method.

    work_dir: a scratch folder (the calibrator writes the model and its augmented copy there)."""

    from debx.calib.data import as_calibration_reader
    from debx.runtimes.onnxruntime import native_ops_enabled
    from debx.runtimes.reference_ops import adapt_for_ort, custom_nodes

    if not batches:
        raise ConfigError("no calibration batches")
    work_dir = Path(work_dir)
    custom = bool(custom_nodes(model))
    runnable = adapt_for_ort(model, native=native_ops_enabled()) if custom else model
    model_path = work_dir / "calibrate_input.onnx"
    large = save_model_copy(runnable, model_path)
    with quiet():
        calibrator = _calibrator(cfg, model_path, work_dir / "calibrate_augmented.onnx", large)
        calibrator.augment_graph()
        calibrator.infer_session = _session(work_dir / "calibrate_augmented.onnx", custom, threads)
        for batch in batches:  # one call per batch: lengths differ between batches
            calibrator.collect_data(as_calibration_reader([batch]))
        data = calibrator.compute_data()
    known = _tensor_names(model)  # drop helper tensors of the custom-op adapter
    tensors = {}
    for name, value in data.data.items():
        if name not in known:
            continue
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in value.range_value)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(f"calibration saw non-finite values in tensor {name!r}: the FP32 model overflows")
        tensors[name] = TensorRange(lo, hi)
    settings = {k: v for k, v in asdict(cfg).items() if k != "op_types"}
    settings.update(num_bins=cfg.bins if cfg.method != "minmax" else None,
                    op_types=list(cfg.op_types) if cfg.op_types else None)
    return Ranges(cfg.method, tensors, settings, num_batches=len(batches))


def _tensor_names(model) -> set[str]:
    names = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        names.update(node.output)
    return names

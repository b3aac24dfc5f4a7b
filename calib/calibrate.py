"""`debx calibrate`: an FP32 ONNX model -> an INT8 (explicit Q/DQ) or FP16 model, with the files that go with it.

Artifacts, all named after the output file OUT (e.g. model.int8.onnx):
    OUT                   the model (OUT.<id>.data beside it when the weights exceed 2 GB; <id> is new each write)
    OUT.json              sidecar: the input's source/variant/attention entries, the precision, the calibration
                          record (task, split, rows, method, ...), the Q/DQ placement or the FP16 keep list, the
                          parity against the input on the calibration batches, the --auto steps
    OUT.ranges.json       per-tensor activation ranges (calib/ranges.py)
    OUT.calib.cache       INT8 only: TensorRT calibration cache text for implicit quantization (calib/trt_cache.py)
Everything is staged in a temporary folder next to OUT and committed as one unit at the end (debx.artifacts.
publish: the graph last, interrupts held back, the previous set restored if a rename fails); nothing is left
behind when a step fails.

When calibrating on dev, the sidecar's calibration.rows lists the dev rows used, and `debx eval` of OUT leaves
them out (debx.evaluate.excluded_rows) and says so in its report.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from debx.artifacts import (
    Source,
    artifact_source,
    check_writable,
    file_digest,
    package_versions,
    publish,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from debx.calib.data import CalibDataConfig
from debx.calib.fp16 import FP16Config
from debx.calib.qdq import QDQPolicy
from debx.calib.ranges import METHODS, RangeConfig
from debx.calib.sensitivity import AutoConfig
from debx.calib.trt_cache import DEFAULT_TRT_VERSION
from debx.errors import ConfigError, GateFailed
from debx.tasks import get_task

PRECISIONS = ("int8", "fp16")
TARGETS = ("trt", "ort")  # trt: symmetric int8 activations (TensorRT and ONNX Runtime); ort: ONNX Runtime CPU only
TARGET_ACTIVATIONS = {"trt": "int8", "ort": "uint8"}
EMBEDDINGS = ("int8", "float")  # int8: embedding tables with per-row scales (calib/qdq.py quantize_embeddings)
RANGES_SUFFIX = ".ranges.json"
TRT_CACHE_SUFFIX = ".calib.cache"


@dataclass
class CalibrateConfig:
    model: Path  # FP32 ONNX input
    output: Path  # e.g. model.int8.onnx
    task: str
    data_dir: Path | None = None
    precision: str = "int8"
    method: str = "entropy"
    percentile: float = 99.99
    num_bins: int | None = None
    num_samples: int = 256
    calib_split: str = "train"
    seed: int = 0
    batch_size: int = 8
    max_seq_len: int | None = None
    tokenizer: Path | None = None  # default: the input sidecar's source checkpoint
    policy: QDQPolicy = field(default_factory=QDQPolicy)
    fp16: FP16Config = field(default_factory=FP16Config)
    auto: bool = False  # needs an evaluator: calibrate(cfg, evaluator=...)
    auto_cfg: AutoConfig = field(default_factory=AutoConfig)
    reference: Path | None = None  # --auto: the FP32 reference; default the input model
    trt_version: str = DEFAULT_TRT_VERSION
    threads: int | None = None
    # trt: the policy's activation type (default symmetric int8); ort: uint8 activations unless `activations` says
    # otherwise, and the written model is optimised offline for ONNX Runtime's CPU provider (exporters/ort_optimize.py)
    target: str = "trt"
    activations: str | None = None  # explicit --activations: wins over the target's default
    # embedding tables (word, absolute position): int8 with per-row scales, or float; default int8 for --target ort,
    # float otherwise (TensorRT files keep them float)
    embeddings: str | None = None

    def __post_init__(self) -> None:
        self.model, self.output = Path(self.model), Path(self.output)
        check_writable(self.output, "-o")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.target not in TARGETS:
            raise ConfigError(f"--target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if self.target == "ort" and self.precision != "int8":
            raise ConfigError("--target ort applies to --precision int8 (uint8 activations for ONNX Runtime CPU)")
        act = self.activations or (TARGET_ACTIVATIONS["ort"] if self.target == "ort" else None)
        if act is not None and act != self.policy.activation_type:
            self.policy = replace(self.policy, activation_type=act)
        if self.embeddings is None:
            self.embeddings = "int8" if self.target == "ort" else "float"
        elif self.embeddings not in EMBEDDINGS:
            raise ConfigError(f"--embeddings {self.embeddings!r}: choose one of {', '.join(EMBEDDINGS)}")
        elif self.embeddings == "int8" and self.target != "ort":
            raise ConfigError("--embeddings int8 applies to --target ort (ONNX Runtime CPU); TensorRT files keep "
                              "their embedding tables in float")
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")


@dataclass
class CalibrateResult:
    output: Path
    sidecar: Path
    ranges: Path
    trt_cache: Path | None
    metadata: dict


# ---------------------------------------------------------------------------------------------------------------------
# Checks and inputs
# ---------------------------------------------------------------------------------------------------------------------


def artifact_paths(output: Path) -> dict[str, Path]:
    """The files named after OUT (its weights, when large, are named per write: see the sidecar's external_data)."""
    return {"model": output, "sidecar": sidecar_path(output),
            "ranges": output.with_name(output.name + RANGES_SUFFIX),
            "trt_cache": output.with_name(output.name + TRT_CACHE_SUFFIX)}


def _check_paths(cfg: CalibrateConfig) -> None:
    if not cfg.model.exists():
        raise ConfigError(f"{cfg.model}: no such ONNX file")
    if not cfg.model.is_file() or cfg.model.suffix.lower() != ".onnx":
        raise ConfigError(f"{cfg.model}: expected a .onnx file")
    if cfg.output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {cfg.output}: the output file must end in .onnx")
    if cfg.output.is_dir():
        raise ConfigError(f"-o {cfg.output}: is a folder, expected a .onnx file name")
    if cfg.output.resolve() == cfg.model.resolve():
        raise ConfigError("-o must differ from the input model")


def load_input(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf/onnx raise many kinds for a corrupt file
        raise ConfigError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:120]})") from None


def _check_float32(model, sidecar: dict, path: Path) -> None:
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "MatMulInteger"}:
        raise ConfigError(f"{path}: already quantized; calibrate the FP32 export")
    fp16 = any(t.data_type == 10 for t in model.graph.initializer)
    if fp16 or sidecar.get("precision") not in (None, "fp32"):
        raise ConfigError(f"{path}: is a {sidecar.get('precision') or 'fp16'} model; calibrate the FP32 export "
                          "(debx export without --fp16)")


def _check_int8_attention(cfg: CalibrateConfig, custom: list) -> None:
    """--int8-attention names attention matmuls to quantize; refuse it where there are none to quantize (an FP16
    output, or attention inside custom nodes, which stay float: see calib/qdq.py) instead of succeeding silently."""
    if not cfg.policy.attention:
        return
    flag = f"--int8-attention {','.join(cfg.policy.attention)}"
    if cfg.precision != "int8":
        raise ConfigError(f"{flag} applies to --precision int8, not {cfg.precision}")
    if custom:
        ops = sorted({n.op_type for n in custom})
        raise ConfigError(f"{flag}: {cfg.model.name} computes attention inside {len(custom)} custom {'/'.join(ops)} "
                          "node(s), which stay float (nothing inside the op can be quantized); export with "
                          "--attention onnx or fast to quantize attention matmuls, or drop --int8-attention")


def _tokenizer_and_limit(cfg: CalibrateConfig, sidecar: dict):
    from debx.checkpoint import read_config
    from debx.tokenizer import load_tokenizer

    src = artifact_source(cfg.model, sidecar).checkpoint
    tok_src = cfg.tokenizer or src
    if tok_src is None:
        raise ConfigError(f"{cfg.model}: no sidecar names its source checkpoint; pass --tokenizer CKPT_DIR")
    if not Path(tok_src).exists():
        raise ConfigError(f"tokenizer source {tok_src} does not exist (the model's source checkpoint moved? "
                          "pass --tokenizer CKPT_DIR)")
    limit = (sidecar.get("shapes") or {}).get("max_seq_len")
    if not isinstance(limit, int) and src is not None and (Path(src) / "config.json").is_file():
        limit = read_config(src)[0].max_position_embeddings
    return load_tokenizer(tok_src), int(limit) if isinstance(limit, int) else 512


# ---------------------------------------------------------------------------------------------------------------------
# Parity and evaluation helpers
# ---------------------------------------------------------------------------------------------------------------------


def parity(reference_model, candidate_model, batches, threads: int | None = None) -> dict:
    """Candidate vs reference outputs on the calibration batches (max abs diff, argmax agreement)."""
    from debx.runtimes.onnxruntime import session_for_model

    a = session_for_model(reference_model, threads=threads)
    b = session_for_model(candidate_model, threads=threads)
    names = [i.name for i in a.get_inputs()]
    diff, agree, total = 0.0, 0, 0
    for feeds in batches:
        x = {k: feeds[k] for k in names}
        ya, yb = a.run(None, x)[0], b.run(None, x)[0]
        diff = max(diff, float(np.abs(ya.astype(np.float32) - yb.astype(np.float32)).max()))
        if ya.ndim == 2 and ya.shape[1] > 1:
            agree += int((ya.argmax(-1) == yb.argmax(-1)).sum())
            total += ya.shape[0]
    out = {"against": "input model", "data": "calibration batches", "max_abs_diff": diff}
    if total:
        out["argmax_agreement"] = agree / total
    return out


class Evaluator(Protocol):
    """What --auto scores candidates with (the CLI injects debx.evaluate.CandidateGate): `evaluator(path)` evaluates
    the model file at `path` (its sidecar beside it) and gates it against the reference -> a debx.gate.GateResult
    (passed, metric, reference, candidate, delta, ci_low, ci_high, allowed_drop, changed, verdict, to_dict())."""

    mode: str  # the gate's name, recorded in the sidecar

    def __call__(self, candidate: Path): ...


class _Candidates:
    """--auto: write each candidate model (with the sidecar it would ship with) to the scratch folder, score it with
    the injected evaluator, and remove it again."""

    def __init__(self, evaluator: Evaluator, sidecar: dict, work: Path):
        self.evaluator, self.sidecar, self.work = evaluator, sidecar, work
        self.count = 0

    def __call__(self, model):
        from debx.calib.ranges import save_model_copy

        self.count += 1
        path = self.work / f"auto_candidate_{self.count}.onnx"
        save_model_copy(model, path)
        write_sidecar(path, self.sidecar)
        result = self.evaluator(path)
        for p in (path, sidecar_path(path), path.with_name(path.name + ".data")):
            p.unlink(missing_ok=True)
        return result


# ---------------------------------------------------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------------------------------------------------


def calibrate(cfg: CalibrateConfig, log: Callable[[str], None] = lambda s: None,
              evaluator: Evaluator | None = None) -> CalibrateResult:
    """Measure, convert, check, (fall back,) and write OUT + its sidecar, ranges and TensorRT cache atomically.
    `evaluator`: what --auto (cfg.auto) gates candidates with; the caller builds it (debx.evaluate.candidate_gate)."""
    from debx.calib.data import calibration_data, model_input_names
    from debx.calib.ranges import compute_ranges, save_model_copy
    from debx.runtimes.reference_ops import custom_nodes

    if cfg.auto and evaluator is None:
        raise ValueError("calibrate: cfg.auto needs an evaluator (debx.evaluate.candidate_gate(cfg, gate_cfg))")
    _check_paths(cfg)
    task = get_task(cfg.task)
    model = load_input(cfg.model)
    sidecar_in = read_sidecar(cfg.model)
    _check_float32(model, sidecar_in, cfg.model)
    _check_int8_attention(cfg, custom_nodes(model))
    tokenizer, max_len = _tokenizer_and_limit(cfg, sidecar_in)
    data_cfg = CalibDataConfig(task=task.name if task.spec_dir is None else cfg.task, data_dir=cfg.data_dir,
                               split=cfg.calib_split, num_samples=cfg.num_samples, seed=cfg.seed,
                               batch_size=cfg.batch_size, max_seq_len=cfg.max_seq_len)
    data = calibration_data(data_cfg, tokenizer, model_input_names(model), max_len)
    log(f"calibration data: {data.num_samples} rows of {task.name} {data.split} in {len(data.batches)} batches")

    out = cfg.output.resolve()
    paths = artifact_paths(out)
    with publish(out) as st:  # committed as one unit at the end of the block; nothing is left on failure
        scratch = st.dir / "scratch"
        scratch.mkdir()
        meta: dict = {}
        if cfg.precision == "int8":
            # embedding tables first: ranges, placement and --auto's candidates all see the graph that ships
            base, embeddings = _embeddings(cfg, model, log)
            range_cfg = RangeConfig(method=cfg.method, percentile=cfg.percentile, num_bins=cfg.num_bins,
                                    op_types=cfg.policy.op_types)
            ranges = compute_ranges(base, data.batches, range_cfg, scratch, cfg.threads)
            log(f"ranges: {len(ranges.tensors)} tensors ({cfg.method})")
            result_model, int8_meta = _int8(cfg, base, ranges, data, sidecar_in, scratch, log, evaluator)
            del base
            int8_meta["quantization"]["embeddings"] = embeddings
            meta.update(int8_meta)
        else:
            ranges = compute_ranges(model, data.batches, RangeConfig(method="minmax", op_types=None), scratch,
                                    cfg.threads)
            result_model, fp16_meta = _fp16(cfg, model, data, sidecar_in, scratch, log, evaluator)
            meta.update(fp16_meta)
        meta["parity"] = parity(model, result_model, data.batches, cfg.threads)

        data_name = st.onnx_data_name()  # weights (large models) under a name unique to this write
        if cfg.target == "ort":
            large, meta["ort_optimized"] = _optimize_for_ort(result_model, st.primary, scratch, data_name)
            log(f"optimised for ONNX Runtime CPU: {meta['ort_optimized']}")
        else:
            large = save_model_copy(result_model, st.primary, data_name)
        meta["target"] = cfg.target
        ranges.save(st.add(paths["ranges"]))
        cache = None
        if cfg.precision == "int8":
            from debx.calib.trt_cache import scales_from_ranges, write_cache

            cache = paths["trt_cache"]
            write_cache(st.add(cache), scales_from_ranges(ranges), cfg.trt_version)
        else:
            st.stale(paths["trt_cache"])
        sidecar = _sidecar(cfg, sidecar_in, out, data_name if large else None, data, ranges, meta,
                          custom=bool(custom_nodes(model)))
        st.sidecar = sidecar  # into place as one unit: ranges, cache, weights, sidecar, then the graph
    return CalibrateResult(out, paths["sidecar"], paths["ranges"], cache, sidecar)


def _optimize_for_ort(model, staged: Path, scratch: Path, data_name: str) -> tuple[bool, dict]:
    """Write `model` to `staged` through debx.exporters.ort_optimize.optimized_model (ORT EXTENDED + bias folding,
    outputs bit-identical). Returns (weights in `data_name` beside `staged`, what the rewrite did)."""
    from debx.calib.ranges import save_model_copy
    from debx.exporters.ort_optimize import optimized_model

    plain = scratch / "unoptimized.onnx"
    save_model_copy(model, plain)
    optimized, stats = optimized_model(plain, scratch)
    return save_model_copy(optimized, staged, data_name), {"level": "ORT_ENABLE_EXTENDED", **stats}


def _embeddings(cfg, model, log):
    """(the model whose matmuls get quantized, what happened to its embedding tables for the sidecar)."""
    if cfg.embeddings != "int8":
        return model, {"format": "float", "tables": {}}
    from debx.calib.qdq import quantize_embeddings

    quantized, summary = quantize_embeddings(model)
    for name, t in summary["tables"].items():
        log(f"embeddings: {name} {t['shape'][0]}x{t['shape'][1]} int8 with per-row scales "
            f"({t['float_bytes'] / 2**20:.1f} -> {t['int8_bytes'] / 2**20:.1f} MiB, max |error| {t['max_abs_error']:.2g})")
    return quantized, summary


def _int8(cfg, model, ranges, data, sidecar_in, scratch, log, evaluator: Evaluator | None):
    from debx.calib.qdq import qdq_summary, quantize_int8
    from debx.calib.sensitivity import auto_fallback

    meta: dict = {}
    if cfg.auto:
        candidates = _Candidates(evaluator, {**sidecar_in, "precision": "int8", "calibration": data.record(cfg.seed)},
                                 scratch)
        auto = auto_fallback(model, ranges, cfg.policy, data.batches, candidates, cfg.auto_cfg, scratch,
                             cfg.threads, log)
        meta["auto"] = {**auto.to_dict(), "gate": evaluator.mode, "eval_split": cfg.auto_cfg.eval_split,
                        "reference": str(cfg.reference or cfg.model)}
        if not auto.passed:
            last = auto.steps[-1]
            raise GateFailed(f"--auto: the {evaluator.mode} gate still fails after {len(auto.steps) - 1} fallback "
                             f"step(s) ({len(last['float_nodes'])} matmuls back in float, {last['metric']} delta "
                             f"{last['delta']:+.2f}, allowed drop {last['allowed_drop']:.2f}); no model written")
        quantized, placement, policy = auto.model, auto.placement, auto.policy
    else:
        quantized, placement = quantize_int8(model, ranges, cfg.policy, scratch)
        policy = cfg.policy
    summary = qdq_summary(quantized)
    log(f"int8: {len(placement.quantize)} matmuls quantized, {len(placement.float_nodes)} kept in float, "
        f"{summary['QuantizeLinear']} QuantizeLinear / {summary['DequantizeLinear']} DequantizeLinear")
    meta["quantization"] = {"format": "QDQ", "policy": policy.to_dict(), "placement": placement.to_dict(),
                            "summary": summary}
    return quantized, meta


def _fp16(cfg, model, data, sidecar_in, scratch, log, evaluator: Evaluator | None):
    from debx.calib.fp16 import make_fp16

    half, plan, stats = make_fp16(model, data.batches, cfg.fp16, cfg.threads, scratch)
    kept = plan.to_list(model)
    log(f"fp16: {len(kept)} nodes kept in FP32")
    meta = {"fp16": {"kept": kept, "keep_op_types": list(plan.keep_op_types),
                     "overflow_margin": cfg.fp16.overflow_margin, "underflow_share": cfg.fp16.underflow_share,
                     "largest": sorted(({"tensor": k, "amax": s.amax} for k, s in stats.items()),
                                       key=lambda d: -d["amax"])[:10]}}
    if cfg.auto:
        candidates = _Candidates(evaluator, {**sidecar_in, "precision": "fp16", "calibration": data.record(cfg.seed)},
                                 scratch)
        result = candidates(half)
        meta["auto"] = {"passed": result.passed, "gate": evaluator.mode, "steps": [result.to_dict()]}
        log(f"--auto: fp16 {result.metric} {result.candidate:.2f} vs {result.reference:.2f} "
            f"(delta {result.delta:+.2f}) {result.verdict}")
        if not result.passed:
            raise GateFailed(f"--auto: the FP16 model fails the {evaluator.mode} gate (delta {result.delta:+.2f}, "
                             f"allowed drop {result.allowed_drop:.2f}); --auto falls back only INT8 layers; "
                             "no model written")
    return half, meta


def _sidecar(cfg, sidecar_in, out, data_name: str | None, data, ranges, meta, custom: bool) -> dict:
    paths = artifact_paths(out)
    carried = {k: v for k, v in sidecar_in.items()
               if k not in ("file", "external_data", "precision", "parity", "created", "versions", "keep_fp32",
                            "calibration", "quantization", "fp16", "auto", "target", "ort_optimized")}
    if not carried.get("source") and cfg.tokenizer is not None:
        carried["source"] = Source(Path(cfg.tokenizer).resolve(), None).to_entry()
    calibration = {**data.record(cfg.seed), "method": ranges.method if cfg.precision == "int8" else "minmax",
                   "settings": ranges.settings, "tensors": len(ranges.tensors),
                   "ranges_file": paths["ranges"].name,
                   "trt_cache": paths["trt_cache"].name if cfg.precision == "int8" else None,
                   "trt_version": cfg.trt_version if cfg.precision == "int8" else None}
    side = {
        "format": sidecar_in.get("format", "debx-onnx/1"),
        **carried,
        "file": out.name,
        "external_data": data_name,
        "precision": cfg.precision,
        "parent": {"file": str(cfg.model.resolve()), "digest": file_digest(cfg.model),
                   "precision": sidecar_in.get("precision", "fp32")},
        "calibration": calibration,
        **meta,
        "versions": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if custom:
        side["custom_nodes"] = ("custom attention nodes keep their precision: no Q/DQ pairs at their inputs or "
                                "outputs; TensorRT runs the plugin in FP32 or FP16 between the INT8 projections")
    return side

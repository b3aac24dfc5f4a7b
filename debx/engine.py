"""TensorRT engines: `debx build model.onnx -o model.plan`.

Everything that decides *what* to build is a pure function that needs no GPU and no TensorRT, so it is unit-tested
here: the optimization profile (`make_profiles`), the builder/network flags for TensorRT 10 and for TensorRT 11+
(`select_builder_flags`, `resolve_flags`), the plugin attributes of the debx attention node (`plugin_attributes`,
`plugin_fields`) and the plan's JSON sidecar (`plan_sidecar`). `build_engine` then imports TensorRT (lazily) and
runs the builder.

Precision on TensorRT 10 comes from builder flags (weakly typed network) unless --strongly-typed; TensorRT 11
removed weak typing, so there the network is always strongly typed and the precision comes from the ONNX itself:
an FP16 export for FP16, Q/DQ nodes (debx calibrate) for INT8.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import debx
from debx.artifacts import check_writable, file_digest, read_onnx, read_sidecar, stale_reason
from debx.contract import DEBX_ATTENTION, TRT_ATTENTION
from debx.errors import ConfigError, DebxError, MissingDependencyError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
Shape = tuple  # (batch, sequence)

TRT_MISSING = ("TensorRT Python package not found: pip install 'debx[trt]' on a machine with an NVIDIA GPU "
               "(TensorRT 10 or later; or use NVIDIA's TensorRT container, see the Dockerfile)")
NO_GPU = ("no CUDA GPU: TensorRT is installed but cannot reach an NVIDIA GPU (check the driver, "
          "nvidia-smi and CUDA_VISIBLE_DEVICES)")
DEBX_PLUGIN_OP = DEBX_ATTENTION.name
NVIDIA_PLUGIN_OP = TRT_ATTENTION.name


@dataclass
class BuildConfig:
    onnx: Path
    output: Path | None = None  # default: the ONNX path with the suffix .plan
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8
    strongly_typed: bool = False
    plugins: list[Path] = field(default_factory=list)  # default: $DEBX_PLUGINS when set
    min_shape: Shape = (1, 1)  # (batch, sequence)
    opt_shape: Shape = (8, 128)
    max_shape: Shape = (32, 512)
    workspace_mib: int = 4096

    @property
    def plan_path(self) -> Path:
        return Path(self.output) if self.output is not None else Path(self.onnx).with_suffix(".plan")


# ---------------------------------------------------------------------------------------------------------------------
# Pure parts: shapes, profiles, flags, plugin attributes, sidecar
# ---------------------------------------------------------------------------------------------------------------------


def parse_shape(text: str, what: str = "shape") -> Shape:
    """'8x128' -> (8, 128)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"{what} {text!r}: expected BATCHxSEQUENCE, e.g. 8x128")
    shape = (int(m.group(1)), int(m.group(2)))
    if min(shape) < 1:
        raise ConfigError(f"{what} {text!r}: batch and sequence must be >= 1")
    return shape


def validate_config(config: BuildConfig) -> None:
    """User errors in the settings, before anything heavy happens."""
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision {config.precision!r}: choose one of {', '.join(PRECISIONS)}")
    for name in ("min_shape", "opt_shape", "max_shape"):
        shape = tuple(getattr(config, name))
        if len(shape) != 2 or any(int(x) < 1 for x in shape):
            raise ConfigError(f"--{name.split('_')[0]} {shape}: batch and sequence must be >= 1")
    lo, opt, hi = (tuple(map(int, s)) for s in (config.min_shape, config.opt_shape, config.max_shape))
    for k, axis in enumerate(("batch", "sequence")):
        if not lo[k] <= opt[k] <= hi[k]:
            raise ConfigError(f"profile {axis}: need min <= opt <= max, got {lo[k]} / {opt[k]} / {hi[k]} "
                              f"(--min {lo[0]}x{lo[1]} --opt {opt[0]}x{opt[1]} --max {hi[0]}x{hi[1]})")
    if int(config.workspace_mib) < 1:
        raise ConfigError(f"--workspace {config.workspace_mib}: must be >= 1 MiB")
    onnx = Path(config.onnx)
    if not onnx.is_file():
        raise ConfigError(f"{onnx}: no such ONNX file")
    for lib in config.plugins:
        if not Path(lib).is_file():
            raise ConfigError(f"--plugins {lib}: no such plugin library (build it with plugins/ci_compile.sh)")
    if config.plan_path.resolve() == onnx.resolve():
        raise ConfigError(f"--output {config.plan_path}: would overwrite the ONNX model")
    check_writable(config.plan_path, "--output")


def make_profiles(config: BuildConfig, input_names: Sequence[str]) -> list[tuple[str, Shape, Shape, Shape]]:
    """One optimization profile over dynamic batch and length: every debx input is (batch, sequence)."""
    if not input_names:
        raise ConfigError(f"{config.onnx}: the model has no inputs")
    lo, opt, hi = (tuple(int(x) for x in s) for s in (config.min_shape, config.opt_shape, config.max_shape))
    return [(name, lo, opt, hi) for name in input_names]


@dataclass(frozen=True)
class OnnxFacts:
    """What the builder needs to know about the graph (read without loading weights)."""

    input_names: tuple[str, ...]
    float_types: frozenset[str]  # element types of graph inputs, outputs and initializers: float32, float16, bfloat16
    has_qdq: bool  # QuantizeLinear / DequantizeLinear nodes (explicit INT8)
    plugin_ops: frozenset[str]  # custom ops that need a plugin library: DebxDisentangledAttention, ...


@dataclass(frozen=True)
class FlagSelection:
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    builder_flags: tuple[str, ...]  # BuilderFlag member names
    notes: tuple[str, ...] = ()


_PRECISION_FLAGS_TRT10 = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",), "int8": ("INT8", "FP16")}
_ONNX_TYPE_OF = {"fp16": "float16", "bf16": "bfloat16"}


def _check_onnx_precision(precision: str, facts: OnnxFacts | None, why: str) -> None:
    """Strongly typed builds take precision from the graph: make sure the graph carries the requested one."""
    if facts is None or precision == "fp32":
        return
    if precision == "int8" and not facts.has_qdq:
        raise ConfigError(f"--int8 with {why}: the ONNX has no QuantizeLinear/DequantizeLinear nodes; quantize it "
                          "first (debx calibrate) and build the Q/DQ model")
    wanted = _ONNX_TYPE_OF.get(precision)
    if wanted is not None and wanted not in facts.float_types:
        flag = {"fp16": "--fp16", "bf16": "--bf16"}[precision]
        raise ConfigError(f"{flag} with {why}: the ONNX has no {wanted} tensors; export it in that precision "
                          f"(debx export --fp16) instead of asking the builder")


def select_builder_flags(config: BuildConfig, trt_major: int, facts: OnnxFacts | None = None) -> FlagSelection:
    """Network and builder flags for a TensorRT major version.

    TensorRT 10: weakly typed by default, precision from BuilderFlag FP16 / BF16 / INT8 (+FP16 for the layers Q/DQ
    leaves in float); --strongly-typed uses the ONNX types and no precision flags. TensorRT 11+: strongly typed only.
    """
    if config.precision not in PRECISIONS:
        raise ConfigError(f"precision {config.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if trt_major < 10:
        raise ConfigError(f"TensorRT {trt_major} is too old: debx builds with TensorRT 10 or later (IPluginV3)")
    if trt_major >= 11:
        _check_onnx_precision(config.precision, facts, f"TensorRT {trt_major} (strongly typed networks only)")
        notes = ()
        if not config.strongly_typed:
            notes = (f"TensorRT {trt_major} removed weakly typed networks: building strongly typed, precision from "
                     "the ONNX types and Q/DQ nodes",)
        return FlagSelection(True, (), notes)
    if config.strongly_typed:
        if config.precision != "fp32" and facts is None:
            raise ConfigError(f"--strongly-typed takes precision from the ONNX types, not from --{config.precision}: "
                              "drop the flag and build an ONNX exported in that precision")
        _check_onnx_precision(config.precision, facts, "--strongly-typed")
        return FlagSelection(True, ())
    if config.precision == "int8" and facts is not None and not facts.has_qdq:
        raise ConfigError("--int8: the ONNX has no QuantizeLinear/DequantizeLinear nodes; debx builds INT8 engines "
                          "from explicit Q/DQ models only (debx calibrate), not with TensorRT's implicit calibrator")
    return FlagSelection(False, _PRECISION_FLAGS_TRT10[config.precision])


def resolve_flags(selection: FlagSelection, trt: Any) -> tuple[int, list]:
    """(create_network flags bitmask, [trt.BuilderFlag members]) for a tensorrt module (or a look-alike)."""
    network_flags = 0
    if selection.strongly_typed:
        creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
        member = getattr(creation, "STRONGLY_TYPED", None) if creation is not None else None
        if member is not None:  # TensorRT 11 may make strong typing the default and drop the flag
            network_flags |= 1 << int(member)
    builder_flags = []
    for name in selection.builder_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is None:
            raise ConfigError(f"this TensorRT has no BuilderFlag.{name}: use a strongly typed build "
                              "(--strongly-typed) with an ONNX in the wanted precision")
        builder_flags.append(member)
    return network_flags, builder_flags


def _cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def plugin_attributes(cfg: Any) -> dict[str, int | float]:
    """Attributes of the DebxDisentangledAttention node (and plugin fields) for a model config.

    cfg: a Hugging Face DeBERTa / DeBERTa-v2 config (object or dict: model_type, hidden_size, num_attention_heads,
    relative_attention, pos_att_type, position_buckets, max_relative_positions, max_position_embeddings).
    """
    heads = int(_cfg_get(cfg, "num_attention_heads", 0))
    hidden = int(_cfg_get(cfg, "hidden_size", 0))
    if heads <= 0 or hidden <= 0 or hidden % heads:
        raise ConfigError(f"hidden_size {hidden} must be a positive multiple of num_attention_heads {heads}")
    if not _cfg_get(cfg, "relative_attention", False):
        raise ConfigError("the model has no relative (disentangled) attention: the DebxDisentangledAttention plugin "
                          "does not apply")
    pos = _cfg_get(cfg, "pos_att_type", None) or ()
    if isinstance(pos, str):  # v1 configs: "c2p|p2c"
        pos = [p.strip() for p in pos.lower().split("|") if p.strip()]
    pos = {p.lower() for p in pos}
    unknown = pos - {"c2p", "p2c"}
    if unknown:
        raise ConfigError(f"pos_att_type {sorted(unknown)} is not supported by the plugin (c2p and p2c only)")
    c2p, p2c = int("c2p" in pos), int("p2c" in pos)
    max_rel = int(_cfg_get(cfg, "max_relative_positions", -1) or -1)
    if max_rel < 1:
        max_rel = int(_cfg_get(cfg, "max_position_embeddings", 512))
    v1 = str(_cfg_get(cfg, "model_type", "deberta-v2")) == "deberta"
    buckets = int(_cfg_get(cfg, "position_buckets", -1) or -1)
    buckets = 0 if v1 or buckets <= 0 else buckets  # 0 = linear positions, as debx.model and the exporter write it
    span = buckets if buckets > 0 else max_rel
    if buckets > 0 and max_rel - 1 <= buckets // 2:
        raise ConfigError(f"max_relative_positions {max_rel} must exceed position_buckets/2 + 1 ({buckets // 2 + 1})")
    head_size = hidden // heads
    return {"num_heads": heads, "scale": 1.0 / math.sqrt(head_size * (1 + c2p + p2c)), "span": span,
            "position_buckets": buckets, "max_relative_positions": max_rel, "c2p": c2p, "p2c": p2c}


def plugin_fields(attributes: Mapping[str, int | float], trt: Any):
    """A trt.PluginFieldCollection for attributes (ints as INT32, floats as FLOAT32, like TensorRT's ONNX parser)."""
    import numpy as np

    fields = []
    for name, value in attributes.items():
        if isinstance(value, float):
            fields.append(trt.PluginField(name, np.array([value], dtype=np.float32), trt.PluginFieldType.FLOAT32))
        else:
            fields.append(trt.PluginField(name, np.array([int(value)], dtype=np.int32), trt.PluginFieldType.INT32))
    return trt.PluginFieldCollection(fields)


def onnx_facts(path: str | Path) -> OnnxFacts:
    """Inputs, float types, Q/DQ and plugin ops of an ONNX file (weights are not loaded)."""
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("the onnx package is needed to read the model: pip install 'debx[onnx]'") from None
    model = read_onnx(path)  # one line for a truncated file or missing external data
    g = model.graph
    initializers = {t.name for t in g.initializer}
    inputs = tuple(i.name for i in g.input if i.name not in initializers)
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16"}
    types = {names[v.type.tensor_type.elem_type] for v in list(g.input) + list(g.output) + list(g.value_info)
             if v.type.tensor_type.elem_type in names}
    types |= {names[t.data_type] for t in g.initializer if t.data_type in names}
    ops = {n.op_type for n in g.node}
    for n in g.node:  # Constant nodes carry tensors too
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in names:
                types.add(names[a.t.data_type])
    return OnnxFacts(input_names=inputs, float_types=frozenset(types),
                     has_qdq=bool(ops & {"QuantizeLinear", "DequantizeLinear"}),
                     plugin_ops=frozenset(ops & {DEBX_PLUGIN_OP, NVIDIA_PLUGIN_OP}))


def default_plugins(config: BuildConfig) -> list[Path]:
    """--plugins, else $DEBX_PLUGINS (os.pathsep-separated), else none."""
    if config.plugins:
        return [Path(p) for p in config.plugins]
    env = os.environ.get("DEBX_PLUGINS", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def check_plugins(facts: OnnxFacts, plugins: Sequence[Path]) -> None:
    if DEBX_PLUGIN_OP in facts.plugin_ops and not plugins:
        raise ConfigError(f"the ONNX has {DEBX_PLUGIN_OP} nodes (--attention debx): pass "
                          "--plugins path/to/libdebx_plugins.so (built by plugins/ci_compile.sh) or set $DEBX_PLUGINS")


def sha256_of(path: str | Path) -> str:
    return file_digest(path, None)


def check_calibration_target(onnx: Path, sidecar: Mapping) -> None:
    """An INT8 model calibrated with `debx calibrate --target ort` (uint8 activations, ORT-fused ops) is not for
    TensorRT, which needs symmetric int8 activations."""
    if sidecar.get("target") == "ort":
        raise ConfigError(f"{onnx}: calibrated for ONNX Runtime CPU (uint8 activations); recalibrate with "
                          "--target trt for TensorRT")


def plan_sidecar(config: BuildConfig, selection: FlagSelection, profiles, versions: Mapping[str, str],
                 plugins: Sequence[Path], onnx_sha256: str | None = None, onnx_sidecar: Mapping | None = None) -> dict:
    """What the plan's `<plan>.json` records: enough to reproduce the build and to evaluate the plan."""
    onnx_sidecar = dict(onnx_sidecar or {})
    side = {
        "format": "debx-plan/1",
        "onnx": {"path": str(config.onnx), "sha256": onnx_sha256},
        "precision": config.precision,
        "strongly_typed": selection.strongly_typed,
        "builder_flags": list(selection.builder_flags),
        "notes": list(selection.notes),
        "profiles": [{"input": n, "min": list(lo), "opt": list(opt), "max": list(hi)} for n, lo, opt, hi in profiles],
        "inputs": [p[0] for p in profiles],
        "plugins": [str(Path(p).resolve()) for p in plugins],
        "workspace_mib": int(config.workspace_mib),
        "versions": dict(versions),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for key in ("source", "attention", "calibration", "task", "labels", "head"):  # carried over for `debx eval`
        if key in onnx_sidecar:
            side[key] = onnx_sidecar[key]
    return side


def write_plan(plan_path: Path, plan: bytes, sidecar: Mapping) -> Path:
    """The plan and its sidecar (`<plan>.json`) as one unit (debx.artifacts.publish): never a new plan beside the
    previous plan's sidecar (its profiles, plugins, source). Returns the sidecar path."""
    from debx.artifacts import publish, sidecar_path

    with publish(plan_path) as pub:
        pub.primary.write_bytes(bytes(plan))
        pub.sidecar = sidecar
    return sidecar_path(plan_path)


# ---------------------------------------------------------------------------------------------------------------------
# TensorRT (lazy)
# ---------------------------------------------------------------------------------------------------------------------


def import_tensorrt():
    """The tensorrt module, or MissingDependencyError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependencyError(TRT_MISSING) from None
    except Exception as e:  # the wheel is there but cannot load libnvinfer / CUDA
        raise MissingDependencyError(f"TensorRT Python package cannot load ({str(e).splitlines()[0][:160]}): "
                                     f"{NO_GPU}") from None
    return tensorrt


def trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        raise MissingDependencyError(f"cannot read the TensorRT version ({getattr(trt, '__version__', '?')})") from None


def make_logger(trt: Any):
    """A trt.ILogger that keeps errors (for one-line messages) and prints warnings."""

    class RecordingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            elif severity == trt.ILogger.Severity.WARNING:
                print(f"[TensorRT] {msg}")

    return RecordingLogger()


def load_plugins(trt: Any, registry: Any, logger: Any, plugins: Iterable[Path]) -> None:
    """NVIDIA's plugins (DisentangledAttention_TRT for --attention trt graphs) and ours (libdebx_plugins.so)."""
    init = getattr(trt, "init_libnvinfer_plugins", None)
    if init is not None:
        init(logger, "")
    for lib in plugins:
        handle = registry.load_library(str(lib))
        if handle is None:
            raise ConfigError(f"--plugins {lib}: TensorRT could not load this library ({'; '.join(logger.errors[-1:])})")


@dataclass
class BuildResult:
    plan: Path
    sidecar: Path
    selection: FlagSelection
    profiles: list
    tensorrt_version: str


def build_engine(config: BuildConfig, log: Callable[[str], None] = lambda s: None) -> BuildResult:
    """ONNX -> serialized TensorRT engine (+ JSON sidecar), written atomically. `log` gets warnings (a stale ONNX)."""
    validate_config(config)
    facts = onnx_facts(config.onnx)
    plugins = default_plugins(config)
    for lib in plugins:
        if not lib.is_file():
            raise ConfigError(f"plugin library {lib}: no such file (from $DEBX_PLUGINS)")
    check_plugins(facts, plugins)
    check_calibration_target(config.onnx, read_sidecar(config.onnx))
    profiles = make_profiles(config, facts.input_names)
    stale = stale_reason(config.onnx)  # against the checkpoint the sidecar names, as it is now
    if stale:
        log(f"warning: {stale}")

    trt = import_tensorrt()
    selection = select_builder_flags(config, trt_major(trt), facts)
    network_flags, builder_flags = resolve_flags(selection, trt)
    logger = make_logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as e:
        raise MissingDependencyError(f"{NO_GPU} ({str(e).splitlines()[0][:120]})") from None
    if builder is None:
        raise MissingDependencyError(NO_GPU)
    load_plugins(trt, builder.get_plugin_registry(), logger, plugins)

    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(config.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ConfigError(f"{config.onnx}: TensorRT cannot parse the model: {errors[0] if errors else 'unknown error'}")

    bconfig = builder.create_builder_config()
    bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mib) << 20)
    for flag in builder_flags:
        bconfig.set_flag(flag)
    profile = builder.create_optimization_profile()
    for name, lo, opt, hi in profiles:
        profile.set_shape(name, lo, opt, hi)
    bconfig.add_optimization_profile(profile)

    plan = builder.build_serialized_network(network, bconfig)
    if plan is None:
        reason = logger.errors[-1] if logger.errors else "see the TensorRT log above"
        raise DebxError(f"TensorRT could not build the engine: {reason}")
    sidecar = plan_sidecar(config, selection, profiles, {"tensorrt": str(trt.__version__), "debx": debx.__version__},
                           plugins, sha256_of(config.onnx), read_sidecar(config.onnx))
    side_path = write_plan(config.plan_path, bytes(plan), sidecar)
    return BuildResult(config.plan_path, side_path, selection, profiles, str(trt.__version__))

"""Explicit INT8 quantization: where Q/DQ pairs go (one policy, one function) and the quantized model.

What the policy produces (the same file serves ONNX Runtime's CPU provider and TensorRT's explicit-precision path):

* MatMul/Gemm inputs only. Weights: symmetric INT8, one scale per output channel (MatMul B (K, N): axis 1; Gemm with
  transB=1, B (N, K): axis 0; constant tables of rank 3: the last axis). Activations: one scale per tensor,
  symmetric INT8 (zero-point 0), which TensorRT requires; `activation_type="uint8"` gives ORT-only asymmetric
  UINT8 activations instead. Biases and outputs stay float (no INT32 bias, no Q/DQ after the matmul): TensorRT
  fuses DQ -> MatMul and keeps the bias Add in the output precision; ONNX Runtime fuses the same pattern into
  MatMulIntegerToFloat.
* Every other op stays in float: LayerNormalization, Softmax, the GELU, the embedding Gather and the
  disentangled-position gathers (GatherElements) never see a Q/DQ pair.
* Attention matmuls are classified by `matmul_kind` and quantized only when the policy names their kind:
      scores    Q . K^T                      (activation x activation)
      position  Q . pos_key^T, K . pos_query^T  (one side is a position table folded into a constant)
      context   softmax(scores) . V          (the probabilities are in [0, 1])
  The default keeps them in float (the safe starting point of `--auto`); the Speed issue can switch them on
  (`QDQPolicy(attention=("scores", "position", "context"))`) and let the gate decide.
* Embedding tables (`quantize_embeddings`, `debx calibrate --target ort`; `--embeddings float` turns it off): a
  float table that only Gathers read (the word embeddings, absolute position embeddings) becomes int8 with one
  symmetric scale per row: Gather(int8 table, ids) -> Cast -> Mul by Gather(row scales, ids), under the original
  output name. Only the gathered rows are dequantized, so ONNX Runtime never holds the float table (the 128100 x 768
  word embeddings of v3-base: 394 MB -> 98 MB); the error of every element is at most half its row's step
  (max |row| / 254). TensorRT files (`--target trt`) keep float tables.
* Custom attention nodes (`debx::DebxDisentangledAttention`, `DisentangledAttention_TRT`) are never quantized:
  their inputs come from the float bias Adds of the projections, and their float output is quantized only as the
  input of the next matmul (the attention output projection; a QuantizeLinear, as for any activation). TensorRT
  runs such a plugin in a float format it advertises (FP32, or FP16 when the builder allows it) and executes the
  following Q as its own layer unless the plugin advertises INT8 outputs, which debx's plugin does not; so the
  plugin keeps its precision and only the projections around it run in INT8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from debx.errors import ConfigError

ATTENTION_KINDS = ("scores", "position", "context")
ACTIVATION_TYPES = ("int8", "uint8")
# ops whose output is constant when their data input (input 0) is, whatever their shape/index inputs are
_DATA_ONLY = ("Transpose", "Reshape", "Unsqueeze", "Squeeze", "Cast", "Identity", "Slice", "Expand", "Gather")
# ops whose output is constant when all their inputs are
_ALL_INPUTS = ("Mul", "Div", "Add", "Sub")
_PASS_THROUGH = _DATA_ONLY + ("Mul", "Div")


@dataclass
class QDQPolicy:
    """Which matmuls get Q/DQ pairs, and how. The one place that decides (see the module doc)."""

    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    linear: bool = True  # MatMul/Gemm against a constant 2-D weight: projections, FFN, pooler, classifier
    attention: tuple[str, ...] = ()  # attention matmul kinds to quantize: subset of ATTENTION_KINDS
    per_channel: bool = True  # weights: one scale per output channel
    activation_type: str = "int8"  # int8 (symmetric; ORT and TensorRT) | uint8 (asymmetric; ORT CPU only)
    exclude: tuple[str, ...] = ()  # node names kept in float (the --auto fallback grows this list)
    exclude_patterns: tuple[str, ...] = ()  # node-name substrings kept in float, e.g. "classifier"

    def __post_init__(self) -> None:
        self.attention = tuple(ATTENTION_KINDS if self.attention in ("all", ("all",)) else self.attention)
        bad = [k for k in self.attention if k not in ATTENTION_KINDS]
        if bad:
            raise ConfigError(f"unknown attention matmul kind {bad[0]!r} (choose from {', '.join(ATTENTION_KINDS)})")
        if self.activation_type not in ACTIVATION_TYPES:
            raise ConfigError(f"activation type {self.activation_type!r}: choose one of {', '.join(ACTIVATION_TYPES)}")
        self.exclude = tuple(self.exclude)
        self.exclude_patterns = tuple(self.exclude_patterns)

    def with_excluded(self, names) -> "QDQPolicy":
        return QDQPolicy(**{**asdict(self), "exclude": tuple(dict.fromkeys([*self.exclude, *names]))})

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass
class Placement:
    """The outcome of the policy on one graph."""

    quantize: list[str] = field(default_factory=list)  # node names that get Q/DQ on their inputs
    kinds: dict[str, str] = field(default_factory=dict)  # node name -> linear | scores | position | context
    float_nodes: dict[str, str] = field(default_factory=dict)  # candidate node name -> why it stays in float
    weight_axes: dict[str, int] = field(default_factory=dict)  # weight initializer -> per-channel axis
    untouched_ops: dict[str, int] = field(default_factory=dict)  # op type -> count of nodes left in float

    def to_dict(self) -> dict:
        return {"quantized": list(self.quantize), "kinds": dict(self.kinds), "float": dict(self.float_nodes),
                "weight_axes": dict(self.weight_axes), "untouched_ops": dict(self.untouched_ops)}


# ---------------------------------------------------------------------------------------------------------------------
# Classifying matmuls
# ---------------------------------------------------------------------------------------------------------------------


class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper  # noqa: F401  (onnx must be importable)

        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {}
        for node in model.graph.node:
            for out in node.output:
                self.producer[out] = node
            if node.op_type == "Constant":
                for out in node.output:
                    self.inits.setdefault(out, None)

    def is_constant(self, name: str, depth: int = 6) -> bool:
        """Derived from an initializer/Constant only: through Transpose/Reshape/Slice/... of a constant (whatever
        their shape or index inputs) and arithmetic between constants."""
        if name in self.inits:
            return True
        node = self.producer.get(name)
        if node is None or depth == 0:
            return False
        if node.op_type in _DATA_ONLY:
            return self.is_constant(node.input[0], depth - 1)
        if node.op_type in _ALL_INPUTS:
            return all(self.is_constant(i, depth - 1) for i in node.input if i)
        return False

    def comes_from(self, name: str, op_type: str, depth: int = 4) -> bool:
        node = self.producer.get(name)
        if node is None or depth == 0:
            return False
        if node.op_type == op_type:
            return True
        return node.op_type in _PASS_THROUGH and bool(node.input) and self.comes_from(node.input[0], op_type, depth - 1)

    def rank(self, name: str) -> int | None:
        t = self.inits.get(name)
        return len(t.dims) if t is not None else None


def matmul_kind(node, graph: _Graph) -> str:
    """linear | scores | position | context (see the module doc)."""
    a, b = node.input[0], node.input[1]
    if node.op_type == "Gemm" and b in graph.inits:
        return "linear"
    if b in graph.inits and graph.rank(b) == 2:
        return "linear"
    if graph.is_constant(a) or graph.is_constant(b):
        return "position"
    if graph.comes_from(a, "Softmax"):
        return "context"
    return "scores"


def _weight_axis(node, graph: _Graph) -> int | None:
    """The output-channel axis of the node's constant input, or None when it has no initializer weight."""
    b = node.input[1]
    if b not in graph.inits or graph.inits[b] is None:
        return None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return len(graph.inits[b].dims) - 1


def place_qdq(model, policy: QDQPolicy) -> Placement:
    """Apply `policy` to `model` (onnx.ModelProto): which nodes get Q/DQ, which stay float and why."""
    graph = _Graph(model)
    out = Placement()
    for node in model.graph.node:
        if node.op_type not in policy.op_types:
            if node.op_type in ("LayerNormalization", "Softmax", "Gather", "GatherElements", "Erf", "Add"):
                out.untouched_ops[node.op_type] = out.untouched_ops.get(node.op_type, 0) + 1
            continue
        name = node.name or node.output[0]
        kind = matmul_kind(node, graph)
        out.kinds[name] = kind
        if name in policy.exclude:
            out.float_nodes[name] = "excluded (kept in float)"
        elif any(p in name for p in policy.exclude_patterns):
            out.float_nodes[name] = "excluded by name pattern"
        elif kind == "linear" and not policy.linear:
            out.float_nodes[name] = "linear layers are not quantized by this policy"
        elif kind != "linear" and kind not in policy.attention:
            out.float_nodes[name] = f"attention matmul ({kind}) kept in float by the policy"
        else:
            out.quantize.append(name)
            axis = _weight_axis(node, graph) if policy.per_channel else None
            if axis is not None:
                out.weight_axes[node.input[1]] = axis
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Quantizing
# ---------------------------------------------------------------------------------------------------------------------


def _unnamed_nodes_named(model) -> None:
    """ORT's quantizer addresses nodes by name: give every unnamed node its first output's name."""
    for node in model.graph.node:
        if not node.name:
            node.name = node.output[0]


def quantize_int8(model, ranges, policy: QDQPolicy, work_dir: str | Path):
    """(quantized onnx.ModelProto, Placement). `ranges`: debx.calib.ranges.Ranges of this model's float tensors.

    The Q/DQ pairs are written by onnxruntime.quantization.quantize_static (QDQ format) from our measured ranges
    (handed over as its calibration cache, so it does not calibrate again) and our placement."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod, save_tensors_data

    from debx.calib.ranges import LARGE_MODEL_BYTES, quiet, weights_bytes

    work_dir = Path(work_dir)
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    _unnamed_nodes_named(model_copy)
    placement = place_qdq(model_copy, policy)
    if not placement.quantize:
        return model_copy, placement
    missing = _missing_ranges(model_copy, placement, ranges)
    if missing:
        raise ConfigError(f"no calibration range for tensor {missing[0]!r} (and {len(missing) - 1} more): "
                          "the ranges do not belong to this model")
    cache = work_dir / "ort_calibration_cache.json"
    save_tensors_data(ranges.to_tensors_data(), cache)
    method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
              "minmax": CalibrationMethod.MinMax}[ranges.method]
    symmetric_act = policy.activation_type == "int8"
    extra = {
        "ActivationSymmetric": symmetric_act,
        "WeightSymmetric": True,
        "DedicatedQDQPair": True,  # one Q/DQ pair per consumer: ORT fuses DQ -> MatMul only when the DQ has one consumer
        "QuantizeBias": False,  # biases stay float: no INT32 DequantizeLinear (TensorRT has none)
        "OpTypesToExcludeOutputQuantization": list(policy.op_types),  # Q/DQ on inputs only
        "TensorQuantOverrides": {w: [{"axis": axis, "symmetric": True}] for w, axis in placement.weight_axes.items()},
    }
    out_path = work_dir / "quantized.onnx"
    with quiet():
        quantize_static(
            model_copy, str(out_path), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(policy.op_types),
            per_channel=policy.per_channel, activation_type=QuantType.QInt8 if symmetric_act else QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_quantize=list(placement.quantize), calibrate_method=method,
            extra_options=extra, calibration_cache_path=str(cache),
            use_external_data_format=weights_bytes(model_copy) > LARGE_MODEL_BYTES,
        )
    quantized = onnx.load(str(out_path))
    _strip_quantizer_metadata(quantized, model)
    return quantized, placement


def _missing_ranges(model, placement: Placement, ranges) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    wanted = []
    by_name = {n.name: n for n in model.graph.node}
    for name in placement.quantize:
        for i in by_name[name].input[:2]:
            if i and i not in inits and i not in ranges.tensors:
                wanted.append(i)
    return wanted


def _strip_quantizer_metadata(quantized, original) -> None:
    """Keep the exporter's graph name and metadata; ORT adds its own only as opset imports."""
    quantized.graph.name = original.graph.name
    del quantized.metadata_props[:]
    for p in original.metadata_props:
        quantized.metadata_props.add().CopyFrom(p)


# ---------------------------------------------------------------------------------------------------------------------
# Inspecting a quantized graph
# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# Embedding tables: int8 rows with per-row scales
# ---------------------------------------------------------------------------------------------------------------------

EMBEDDING_MIN_ELEMENTS = 1 << 16  # smaller tables (token types: 2 rows) stay float: nothing to gain
EMBEDDING_SUFFIX, ROW_SCALE_SUFFIX = "_int8", "_row_scale"


def quantize_rows(table):
    """(int8 table, float32 scales of shape (rows, 1)): symmetric per-row int8, scale = max |row| / 127 (1 for an
    all-zero row). Every element dequantizes to within scale / 2 of its value."""
    import numpy as np

    table = np.asarray(table, dtype=np.float32)
    amax = np.abs(table).max(axis=1, keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    return q, scale


def embedding_tables(model, min_elements: int = EMBEDDING_MIN_ELEMENTS) -> tuple[dict[str, list], dict[str, str]]:
    """({table name: the Gather nodes that read it}, {table name: why it stays float}) for the 2-D float32
    initializers that Gathers index along axis 0; a table any other node reads (e.g. tied to a masked-LM decoder)
    stays float."""
    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, list] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in inits:
                users.setdefault(name, []).append((node, i))
    tables, skipped = {}, {}
    for name, uses in users.items():
        if not any(n.op_type == "Gather" and i == 0 for n, i in uses):
            continue
        t = inits[name]
        axis_0 = all(n.op_type == "Gather" and i == 0 and n.domain in ("", "ai.onnx")
                     and next((a.i for a in n.attribute if a.name == "axis"), 0) == 0 for n, i in uses)
        if t.data_type != 1 or len(t.dims) != 2:
            skipped[name] = "not a 2-D float32 table"
        elif not axis_0:
            skipped[name] = "also read by other ops than a row Gather"
        elif t.dims[0] * t.dims[1] < min_elements:
            skipped[name] = f"small ({t.dims[0]}x{t.dims[1]})"
        else:
            tables[name] = [n for n, _ in uses]
    return tables, skipped


def quantize_embeddings(model, min_elements: int = EMBEDDING_MIN_ELEMENTS):
    """(a copy of `model` with its embedding tables int8 with per-row scales, summary for the sidecar). See the
    module doc; the Gathers' outputs keep their names, so the rest of the graph (and its calibration ranges) is
    unchanged."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    tables, skipped = embedding_tables(model, min_elements)
    summary = {"format": "int8, symmetric, one scale per row", "tables": {}, "float": skipped}
    if not tables:
        return model, summary
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    used = {n for node in graph.node for n in (*node.input, *node.output)} | set(inits)
    rewritten: dict[int, list] = {}  # index of a Gather in graph.node -> the nodes that follow it
    for name, gathers in tables.items():
        table = numpy_helper.to_array(inits[name])
        q, scale = quantize_rows(table)
        err = float(np.abs(q.astype(np.float32) * scale - table).max())
        q_name, s_name = _fresh(name + EMBEDDING_SUFFIX, used), _fresh(name + ROW_SCALE_SUFFIX, used)
        graph.initializer.remove(inits[name])
        graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
        del table
        for k, node in enumerate(graph.node):
            if node.op_type != "Gather" or node.input[0] != name:  # every reader of the table is such a Gather
                continue
            tag, result, ids = node.name or node.output[0], node.output[0], node.input[1]
            rows, rows_f, row_scale = (_fresh(f"{result}{sfx}", used) for sfx in ("_int8", "_float", "_scale"))
            node.input[0], node.output[0] = q_name, rows
            rewritten[k] = [
                helper.make_node("Cast", [rows], [rows_f], name=_fresh(f"{tag}/dequantize/cast", used),
                                 to=onnx.TensorProto.FLOAT),
                helper.make_node("Gather", [s_name, ids], [row_scale], name=_fresh(f"{tag}/dequantize/scale", used),
                                 axis=0),
                helper.make_node("Mul", [rows_f, row_scale], [result], name=_fresh(f"{tag}/dequantize/mul", used)),
            ]
        summary["tables"][name] = {"shape": [int(d) for d in q.shape], "gathers": len(gathers), "int8": q_name,
                                   "row_scales": s_name, "float_bytes": int(q.size) * 4,
                                   "int8_bytes": int(q.size) + int(scale.size) * 4, "max_abs_error": err}
    nodes = []
    for k, node in enumerate(graph.node):
        nodes.append(node)
        nodes.extend(rewritten.get(k, []))
    del graph.node[:]
    graph.node.extend(nodes)
    return out, summary


def _fresh(name: str, used: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... when the graph already uses it; the result is marked as used."""
    out, i = name, 2
    while out in used:
        out, i = f"{name}_{i}", i + 1
    used.add(out)
    return out


def qdq_summary(model) -> dict:
    """Counts of Q/DQ nodes and the quantized weights of a QDQ graph (for the sidecar and the tests)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    per_channel = 0
    for n in dq:
        if n.input[0] in inits and n.input[1] in inits and numpy_helper.to_array(inits[n.input[1]]).size > 1:
            per_channel += 1
    return {"QuantizeLinear": len(q), "DequantizeLinear": len(dq), "per_channel_weights": per_channel,
            "int8_weights": sum(1 for n in dq if n.input[0] in inits)}

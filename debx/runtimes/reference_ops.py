"""Reference implementations of the two custom attention ops debx graphs may contain, runnable in ONNX Runtime on CPU.

* `debx::DebxDisentangledAttention` (our op; contract in plugins/disentangledAttention/README.md): the whole
  attention of a layer.
* `DisentangledAttention_TRT` (domain "", the op of TensorRT's own plugin library): the summed and scaled score
  matrix (c2c + gathered c2p + gathered p2c) * factor, with TensorRT's log-bucket index math.

Both are written in NumPy from their contracts, independently of `debx.model` (tests check them against it), and
registered with ONNX Runtime as onnxruntime-extensions Python custom ops. Python custom ops live in one domain
(`ai.onnx.contrib`) and have fixed input types, so `adapt_for_ort` rewrites a model *in memory* for ONNX Runtime:
each custom node moves to that domain, its float inputs are cast to float32 and its output is cast back to the
input's type (CastLike), so FP32 and FP16 graphs run on the same float32 reference. The file on disk is unchanged.
"""

from __future__ import annotations

import numpy as np

from debx.contract import CUSTOM_OPS, DEBX_ATTENTION, TRT_ATTENTION
from debx.errors import MissingDependencyError

# the ops' identity is debx.contract's (held against the C++ registrations by tests/test_contract.py)
DEBX_DOMAIN = DEBX_ATTENTION.domain
DEBX_OP = DEBX_ATTENTION.name
DEBX_OP_VERSION = DEBX_ATTENTION.version
TRT_DOMAIN = TRT_ATTENTION.domain
TRT_OP = TRT_ATTENTION.name
TRT_PLUGIN_VERSION = TRT_ATTENTION.plugin_version
ORT_DOMAIN = "ai.onnx.contrib"  # the domain of onnxruntime-extensions Python ops
MASK_FILL = np.float32(-65504.0)

# (domain, op_type) of every custom node debx emits -> the float input indices cast to float32 for the reference
CUSTOM_NODES: dict[tuple[str, str], tuple[int, ...]] = {op.key: op.float_inputs for op in CUSTOM_OPS}
# attributes the references take (those graph files carry), with their ONNX kinds ("i" int, "f" float)
_ATTRS = {op.name: op.attribute_kinds(in_files_only=True) for op in CUSTOM_OPS}


# ---------------------------------------------------------------------------------------------------------------------
# Index math
# ---------------------------------------------------------------------------------------------------------------------


def spec_relative_index(n: int, span: int, position_buckets: int, max_relative_positions: int) -> np.ndarray:
    """(N, N) slot index idx[i, j] into the (2*span, HD) position tables, as the op contract defines it (float32
    log math, Hugging Face's make_log_bucket_position)."""
    ar = np.arange(n)
    r = ar[:, None] - ar[None, :]  # (N, N) i - j
    if position_buckets > 0:
        mid = position_buckets // 2
        a = np.abs(r)
        with np.errstate(divide="ignore"):
            ratio = np.log(np.where(a < mid, mid, a).astype(np.float32) / np.float32(mid))
        log_part = np.ceil(ratio / np.log(np.float32((max_relative_positions - 1) / mid)) * np.float32(mid - 1)) + mid
        r = np.where(a <= mid, r, np.sign(r) * log_part.astype(np.int64))
    return np.clip(r + span, 0, 2 * span - 1)


def trt_relative_index(n: int, span: int, width: int) -> np.ndarray:
    """(N, N) index TensorRT's DisentangledAttention plugin (log-bucket build) uses for c2p[i, :]: bucket(i - j) + span.

    The plugin derives the log range from the table width (`width` = 2*span): it equals Hugging Face's log bucket
    only when max_relative_positions == 2 * position_buckets (true for every released v2/v3 checkpoint).
    """
    mid = span // 2
    ar = np.arange(n)
    r = ar[:, None] - ar[None, :]  # (N, N)
    a = np.abs(r)
    log_mid = np.log(np.float32(mid))
    factor = np.float32(mid - 1) / (np.log(np.float32(width - 1)) - log_mid) * np.float32(1 - np.float32(1e-7))
    with np.errstate(divide="ignore"):
        logs = np.log(np.maximum(a, 1).astype(np.float32))
    bucket = np.where(a <= mid, r, np.sign(r) * (np.ceil((logs - log_mid) * factor).astype(np.int64) + mid))
    return np.clip(bucket + span, 0, 2 * span - 1)


# ---------------------------------------------------------------------------------------------------------------------
# The references
# ---------------------------------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def debx_attention_reference(query, key, value, pos_key, pos_query, mask, *, num_heads: int, scale: float, span: int,
                             position_buckets: int, max_relative_positions: int, c2p: int, p2c: int) -> np.ndarray:
    """DebxDisentangledAttention per its contract, float32 NumPy. (B, N, HD) x3, (P, HD) x2, (B, N) -> (B, N, HD)."""
    q, k, v = (np.asarray(t, dtype=np.float32) for t in (query, key, value))
    B, N, HD = q.shape
    H = int(num_heads)
    D = HD // H
    heads = lambda t: t.reshape(B, N, H, D).transpose(0, 2, 1, 3)  # noqa: E731  (B, H, N, D)
    qh, kh, vh = heads(q), heads(k), heads(v)
    scores = qh @ kh.transpose(0, 1, 3, 2)  # (B, H, N, N)
    if c2p or p2c:
        idx = spec_relative_index(N, int(span), int(position_buckets), int(max_relative_positions))  # (N, N)
        rows, cols = np.arange(N)[:, None], np.arange(N)[None, :]  # (N, 1) i, (1, N) j
    if c2p:
        pk = np.asarray(pos_key, dtype=np.float32).reshape(-1, H, D).transpose(1, 0, 2)  # (H, P, D)
        all_c2p = qh @ pk.transpose(0, 2, 1)[None]  # (B, H, N, P)
        scores = scores + all_c2p[:, :, rows, idx]  # c2p[i, j] = q_i . pk[idx(i, j)]
    if p2c:
        pq = np.asarray(pos_query, dtype=np.float32).reshape(-1, H, D).transpose(1, 0, 2)  # (H, P, D)
        all_p2c = kh @ pq.transpose(0, 2, 1)[None]  # (B, H, N, P): key j against every slot
        scores = scores + all_p2c[:, :, cols, idx]  # p2c[i, j] = k_j . pq[idx(i, j)]
    scores = scores * np.float32(scale)
    keep = np.asarray(mask) != 0  # (B, N)
    keep = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, N, N)
    probs = _softmax(np.where(keep, scores, MASK_FILL))
    out = probs @ vh  # (B, H, N, D)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3).reshape(B, N, HD), dtype=np.float32)


def trt_disentangled_reference(c2c, c2p, p2c, *, span: int, factor: float) -> np.ndarray:
    """DisentangledAttention_TRT: (c2c[i,j] + c2p[i, t(i-j)] + p2c[j, t(i-j)]) * factor, t = TensorRT's bucket index.

    c2c (BH, N, N), c2p (BH, N, 2k), p2c (BH, N, 2k) -> (BH, N, N).
    """
    c2c, c2p, p2c = (np.asarray(t, dtype=np.float32) for t in (c2c, c2p, p2c))
    _, N, _ = c2c.shape
    if c2p.shape[-1] != 2 * span or p2c.shape[-1] != 2 * span:
        raise ValueError(f"{TRT_OP}: c2p/p2c last dim {c2p.shape[-1]}/{p2c.shape[-1]} != 2*span={2 * span}")
    idx = trt_relative_index(N, int(span), c2p.shape[-1])  # (N, N)
    rows, cols = np.arange(N)[:, None], np.arange(N)[None, :]  # (N, 1) i, (1, N) j
    gathered_c2p = c2p[:, rows, idx]  # (BH, N, N): [b, i, j] = c2p[b, i, idx(i, j)]
    gathered_p2c = p2c[:, cols, idx]  # (BH, N, N): [b, i, j] = p2c[b, j, idx(i, j)]
    return np.ascontiguousarray((c2c + gathered_c2p + gathered_p2c) * np.float32(factor), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# ONNX Runtime registration
# ---------------------------------------------------------------------------------------------------------------------

_registered = False


def register() -> str:
    """Register both references as onnxruntime-extensions Python ops (once per process); returns the library path
    for `SessionOptions.register_custom_ops_library`."""
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError:
        raise MissingDependencyError("graphs with custom attention nodes need onnxruntime-extensions for their CPU "
                                     "reference: pip install 'debx[onnx]'") from None
    if not _registered:
        kinds = {"i": PyCustomOpDef.dt_int64, "f": PyCustomOpDef.dt_float}
        f32, i32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32

        @onnx_op(op_type=DEBX_OP, inputs=[f32] * 5 + [i32], outputs=[f32],
                 attrs={k: kinds[v] for k, v in _ATTRS[DEBX_OP].items()})
        def _debx(query, key, value, pos_key, pos_query, mask, **attrs):
            return debx_attention_reference(query, key, value, pos_key, pos_query, mask, **attrs)

        @onnx_op(op_type=TRT_OP, inputs=[f32] * 3, outputs=[f32], attrs={k: kinds[v] for k, v in _ATTRS[TRT_OP].items()})
        def _trt(c2c, c2p, p2c, **attrs):
            return trt_disentangled_reference(c2c, c2p, p2c, **attrs)

        _registered = True
    return get_library_path()


def custom_nodes(model) -> list:
    """The debx/TensorRT custom attention nodes of an onnx.ModelProto."""
    return [n for n in model.graph.node if (n.domain, n.op_type) in CUSTOM_NODES]


def is_float32(model, name: str) -> bool:
    """True when `name` is known to be a float32 tensor (an initializer, graph input, typed value, or the output of a
    Cast to float32, such as the casts `adapt_in_place` puts before a node)."""
    from onnx import TensorProto

    for t in model.graph.initializer:
        if t.name == name:
            return t.data_type == TensorProto.FLOAT
    for vi in list(model.graph.input) + list(model.graph.value_info):
        if vi.name == name and vi.type.HasField("tensor_type"):
            return vi.type.tensor_type.elem_type == TensorProto.FLOAT
    for node in model.graph.node:
        if node.op_type == "Cast" and node.domain in ("", "ai.onnx") and name in node.output:
            return any(a.name == "to" and a.i == TensorProto.FLOAT for a in node.attribute)
    return False


def runs_natively_as_is(model, node) -> bool:
    """True for a float32 debx attention node: the native library (debx.runtimes.native_ops) runs it unchanged."""
    return (node.domain, node.op_type) == (DEBX_DOMAIN, DEBX_OP) and is_float32(model, node.input[3])


def needs_adapting(model, node, native: bool) -> str | None:
    """How `adapt_in_place` changes a custom node: "casts" (an FP16 debx node: float32 casts around the native op),
    "reference" (onto the NumPy reference: TensorRT's node, or any node when native=False), or None (runs as is, or
    not a custom node)."""
    key = (node.domain, node.op_type)
    if key not in CUSTOM_NODES or (native and runs_natively_as_is(model, node)):
        return None
    return "casts" if native and key == (DEBX_DOMAIN, DEBX_OP) else "reference"


def adapt_in_place(model, native: bool = False, only: str | None = None) -> int:
    """Adapt `model`'s custom attention nodes for ONNX Runtime, in place (see the module doc); returns how many.

    native=True: `debx` nodes run on the native library (debx.runtimes.native_ops): FP32 nodes stay exactly as they
    are; FP16 ones get the same float32 casts around them, but keep their domain. only: "casts" or "reference" to
    adapt just those nodes (needs_adapting)."""
    from onnx import TensorProto, helper

    nodes, adapted = [], 0
    for node in model.graph.node:
        how = needs_adapting(model, node, native)
        if how is None or (only is not None and how != only):
            nodes.append(node)
            continue
        adapted += 1
        tag = node.name or node.output[0]
        inputs = list(node.input)
        for i in CUSTOM_NODES[(node.domain, node.op_type)]:  # float inputs -> float32 (a no-op Cast in FP32 graphs)
            cast = f"{tag}/ref_in{i}"
            nodes.append(helper.make_node("Cast", [inputs[i]], [cast], to=TensorProto.FLOAT, name=cast))
            inputs[i] = cast
        raw = f"{tag}/ref_out"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in _ATTRS[node.op_type]}
        domain = DEBX_DOMAIN if how == "casts" else ORT_DOMAIN
        nodes.append(helper.make_node(node.op_type, inputs, [raw], name=f"{tag}/ref", domain=domain, **attrs))
        nodes.append(helper.make_node("CastLike", [raw, node.input[0]], [node.output[0]], name=f"{tag}/ref_cast"))
    if not adapted:
        return 0
    kept = [type(n)() for n in nodes]  # copies first: clearing the field drops the nodes still listed in `nodes`
    for dst, src in zip(kept, nodes):
        dst.CopyFrom(src)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    if not any(o.domain == ORT_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ORT_DOMAIN, 1))
    return adapted


def adapt_for_ort(model, native: bool = False):
    """A copy of `model` whose custom attention nodes run on the registered references or the native library
    (`adapt_in_place`); the caller's model is left as it is."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    adapt_in_place(out, native=native)
    return out

"""INT8 graphs onto debx's AMX matmul ops, in memory, on CPUs that have AMX-INT8 tiles.

`debx calibrate --target ort` writes standard ONNX Runtime INT8 ops (com.microsoft MatMulIntegerToFloat with
QuantizeLinear between layers). When the native library is loaded and the CPU has AMX-INT8 (Intel Sapphire Rapids and
later), the ONNX Runtime runner rewrites a copy of the graph before opening the session:

- MatMulIntegerToFloat (constant symmetric per-column int8 weights)         -> debx::DebxMatMulInt8
- that, when its only consumer is a two-input Sum (the residual add)        -> debx::DebxMatMulInt8Add
- that, followed by Gelu and QuantizeLinear (the FFN's first half)          -> debx::DebxMatMulInt8GeluQuantize

The integer sums are exact, so the ops agree with the graph as written to float rounding (and the fused quantize to
the rounding of GELU's last bit, see tests/runtimes/test_amx_int8.py). The file on disk keeps the standard ops and runs
anywhere. `DEBX_AMX=0` turns the rewrite off.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

MATMUL = ("com.microsoft", "MatMulIntegerToFloat")
OPS = ("DebxMatMulInt8", "DebxMatMulInt8Add", "DebxMatMulInt8GeluQuantize")


def switched_off() -> bool:
    return os.environ.get("DEBX_AMX", "1") == "0"


def available() -> bool:
    """True when the rewrite can run here: native library built, AMX-INT8 granted, not switched off."""
    if switched_off():
        return False
    from debx.runtimes import native_ops

    return native_ops.available() and native_ops.amx_available()


def wants(graph) -> bool:
    """Whether open_session should rewrite this graph (it has MatMulIntegerToFloat and the rewrite can run)."""
    return any((n.domain, n.op_type) == MATMUL for n in graph.graph.node) and available()


def _is_gelu(node) -> bool:
    if (node.domain, node.op_type) == ("com.microsoft", "Gelu"):
        return True
    if node.domain in ("", "ai.onnx") and node.op_type == "Gelu":
        approx = next((a.s.decode() for a in node.attribute if a.name == "approximate"), "none")
        return approx == "none"
    return False


def rewrite(model) -> dict[str, int]:
    """Rewrite `model` (an onnx.ModelProto with its weights loaded) in place; returns how many of each op it made."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                consumers[name].append(node)

    def scalar(name: str, dtype: int) -> bool:
        t = inits.get(name)
        return t is not None and t.data_type == dtype and math.prod(t.dims) == 1

    def convertible(node) -> bool:
        if (node.domain, node.op_type) != MATMUL or len(node.input) != 7 or not node.input[6]:
            return False
        b, b_scale, b_zero = (inits.get(node.input[i]) for i in (1, 3, 5))
        if b is None or b_scale is None or b_zero is None or b.data_type != TensorProto.INT8 or len(b.dims) != 2:
            return False
        n = b.dims[1]
        return (b_scale.data_type == TensorProto.FLOAT and list(b_scale.dims) == [n]
                and b_zero.data_type == TensorProto.INT8 and list(b_zero.dims) == [n]
                and not numpy_helper.to_array(b_zero).any()
                and scalar(node.input[2], TensorProto.FLOAT) and scalar(node.input[4], TensorProto.UINT8))

    def only_user(name: str):
        users = consumers[name]
        return users[0] if len(users) == 1 and name not in graph_outputs else None

    counts = dict.fromkeys(OPS, 0)
    fused_at: dict[int, object] = {}  # id(node the fused op takes the place of) -> fused node
    dropped: set[int] = set()
    for node in graph.node:
        if not convertible(node):
            continue
        op = "DebxMatMulInt8"
        user = only_user(node.output[0])
        if user is not None and id(user) in fused_at:  # a Sum of two matmuls: the other one took it
            user = None
        if user is not None and _is_gelu(user):
            quant = only_user(user.output[0])
            if (quant is not None and quant.domain in ("", "ai.onnx") and quant.op_type == "QuantizeLinear"
                    and len(quant.input) == 3 and scalar(quant.input[1], TensorProto.FLOAT)
                    and scalar(quant.input[2], TensorProto.UINT8)):
                op = "DebxMatMulInt8GeluQuantize"
                node.input.extend(quant.input[1:])
                node.output[0] = quant.output[0]
                dropped |= {id(node), id(user)}
                fused_at[id(quant)] = node
        elif (user is not None and user.domain in ("", "ai.onnx") and user.op_type == "Sum" and len(user.input) == 2
              and user.input[0] != user.input[1]):
            op = "DebxMatMulInt8Add"
            node.input.append(user.input[1] if user.input[0] == node.output[0] else user.input[0])
            node.output[0] = user.output[0]
            dropped.add(id(node))
            fused_at[id(user)] = node  # where the residual is sure to exist already
        node.domain, node.op_type = "debx", op
        counts[op] += 1
    if fused_at:
        order = []
        for node in graph.node:
            if id(node) in fused_at:
                order.append(fused_at[id(node)])
            elif id(node) not in dropped:
                order.append(node)
        kept = [type(order[0])() for _ in order]
        for dst, src in zip(kept, order):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(kept)
    if any(counts.values()) and not any(o.domain == "debx" for o in model.opset_import):
        model.opset_import.add(domain="debx", version=1)
    return counts

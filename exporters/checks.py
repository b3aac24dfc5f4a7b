"""Structural checks of an exported graph: what TensorRT and FP16 deployments need, checked on the file itself.

Each check returns a list of problems (strings); an empty list means the graph passes. `graph_problems` runs all.
"""

from __future__ import annotations

from collections import Counter

from debx.runtimes.reference_ops import CUSTOM_NODES, DEBX_DOMAIN, DEBX_OP, TRT_OP

FORBIDDEN_OPS = ("If", "Loop", "Scan", "SequenceConstruct", "SplitToSequence", "ATen")
FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
BOOL, UINT8 = 9, 2


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and len(attr.g.node):
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


SMALL_INITIALIZER = 4096  # bytes: kept with their values for inference (shapes, axes); larger ones become inputs


def skeleton(model):
    """A copy of `model` without its large weights: initializers over SMALL_INITIALIZER bytes (or stored outside)
    become typed graph inputs. Inference and the checker need types and shapes, not weight values."""
    import onnx
    from onnx import helper

    g = model.graph
    sk = onnx.GraphProto(name=g.name)
    sk.node.extend(g.node)
    sk.input.extend(g.input)
    sk.output.extend(g.output)
    sk.value_info.extend(g.value_info)
    for t in g.initializer:
        if len(t.raw_data) <= SMALL_INITIALIZER and not t.external_data:
            sk.initializer.append(t)
        else:
            sk.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    out = onnx.ModelProto(ir_version=model.ir_version, graph=sk, producer_name=model.producer_name)
    out.opset_import.extend(model.opset_import)
    return out


def inferred_value_info(model) -> list:
    """ONNX shape/type inference of any size of model: it runs on a skeleton of the graph in which the large
    initializers are typed inputs (inference needs their types and shapes, not their values), so a model over
    protobuf's 2 GB limit is inferred without serializing its weights. Custom nodes keep any value_info given."""
    import onnx

    skeleton_model = skeleton(model)
    try:
        return list(onnx.shape_inference.infer_shapes(skeleton_model, strict_mode=False).graph.value_info)
    except Exception:  # best effort: an op inference cannot handle leaves what was known
        return list(model.graph.value_info)


def _elem_types(model) -> dict[str, int]:
    """Element type of every named tensor (inputs, outputs, inferred value_info, initializers, Constant nodes)."""
    g = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *inferred_value_info(model)]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:  # Constant nodes
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def onnx_checker(model) -> list[str]:
    """onnx.checker (full check, with strict shape inference) on the graph. TensorRT's DisentangledAttention_TRT
    has no ONNX schema by design (TensorRT resolves it as a plugin), so it is checked as a custom-domain op."""
    import onnx
    from onnx import helper

    m = skeleton(model)
    trt = [n for n in m.graph.node if (n.domain, n.op_type) == ("", TRT_OP)]
    for n in trt:
        n.domain = "trt.plugins"
    if trt:
        m.opset_import.append(helper.make_opsetid("trt.plugins", 1))
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError with multi-line context
        return [f"onnx.checker: {str(e).strip().splitlines()[0][:200]}"]
    return []


def control_flow(model) -> list[str]:
    bad = Counter(n.op_type for n in _all_nodes(model.graph) if n.op_type in FORBIDDEN_OPS)
    return [f"graph has {count} {op} node(s) (no control flow/ATen ops allowed)" for op, count in sorted(bad.items())]


def uint8_tensors(model, types: dict[str, int]) -> list[str]:
    problems = [f"tensor {name!r} is uint8" for name, t in types.items() if t == UINT8]
    for node in _all_nodes(model.graph):
        if node.op_type == "Cast" and any(a.name == "to" and a.i == UINT8 for a in node.attribute):
            problems.append(f"node {node.name!r} casts to uint8")
    return problems


def bool_to_number(model, types: dict[str, int]) -> list[str]:
    """Masks must stay boolean and select with Where; a Cast of a bool to a number means mask arithmetic."""
    return [f"node {n.name!r} casts a bool mask to a number (mask arithmetic); use Where"
            for n in _all_nodes(model.graph)
            if n.op_type == "Cast" and types.get(n.input[0]) == BOOL
            and any(a.name == "to" and a.i != BOOL for a in n.attribute)]


def axes(model, expected: dict[str, dict[int, str | int]]) -> list[str]:
    """Each graph input/output axis is the named dynamic axis or the pinned size it should be."""
    problems = []
    vis = {vi.name: vi for vi in [*model.graph.input, *model.graph.output]}
    for name, want in expected.items():
        if name not in vis:
            problems.append(f"graph has no input/output {name!r}")
            continue
        dims = vis[name].type.tensor_type.shape.dim
        for axis, value in want.items():
            if axis >= len(dims):
                problems.append(f"{name} has rank {len(dims)}, expected an axis {axis}")
                continue
            got = dims[axis].dim_param or dims[axis].dim_value
            if got != value:
                problems.append(f"{name} axis {axis} is {got!r}, expected {value!r}")
    return problems


def attention_nodes(model, mode: str, num_layers: int) -> list[str]:
    """The attention mode is what the graph holds: one custom node per layer, or none and only standard ops."""
    counts = Counter((n.domain, n.op_type) for n in model.graph.node)
    want = {"debx": (DEBX_DOMAIN, DEBX_OP), "trt": ("", TRT_OP)}.get(mode)
    problems = []
    for key in CUSTOM_NODES:
        n = counts.get(key, 0)
        expected = num_layers if key == want else 0
        if n != expected:
            problems.append(f"--attention {mode}: graph has {n} {key[1]} node(s), expected {expected}")
    if mode in ("onnx", "fast"):  # standard ops only
        odd = sorted({f"{d}::{t}" for (d, t) in counts if d not in ("", "ai.onnx")})
        if odd:
            problems.append(f"--attention {mode} graph has non-standard ops: {', '.join(odd)}")
    return problems


def folded_position_tables(model) -> list[str]:
    """The raw relative embeddings must be gone (folded into per-layer tables); no LayerNorm runs on constants."""
    problems = []
    names = {t.name for t in model.graph.initializer}
    if any(n.endswith("rel_embeddings.weight") for n in names):
        problems.append("relative embeddings are still in the graph (position tables not folded)")
    consts = names | {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for n in model.graph.node:
        if n.op_type == "LayerNormalization" and n.input[0] in consts:
            problems.append(f"node {n.name!r} normalises a constant (should be folded)")
    return problems


def graph_problems(model, *, mode: str, num_layers: int, expected_axes: dict) -> list[str]:
    types = _elem_types(model)
    return [
        *onnx_checker(model),
        *control_flow(model),
        *uint8_tensors(model, types),
        *bool_to_number(model, types),
        *axes(model, expected_axes),
        *attention_nodes(model, mode, num_layers),
        *folded_position_tables(model),
    ]

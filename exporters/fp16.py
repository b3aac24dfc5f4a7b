"""FP16 conversion of an exported graph: FP16 weights and compute, FP32 inputs/outputs, a keep-in-FP32 list.

Built on ONNX Runtime's maintained converter (`onnxruntime.transformers.float16`, the successor of
onnxconverter-common's), which works on any opset; debx adds what DeBERTa graphs need around it:

* numerically safe defaults: LayerNormalization stays FP32 (its variance overflows FP16 on large activations);
  softmax runs in FP16 on scores that are already scaled and masked with the finite -65504 (max-subtracted, so
  it cannot overflow); the attention scale is applied before the score products (exporters/attention.py);
* initializers shared between an FP32-kept node and an FP16 node (the exporter de-duplicates equal tensors, e.g.
  all-ones LayerNorm weights) are given one copy per side, so each node gets the type it needs;
* custom attention nodes (debx / TensorRT) run in FP16 like the ops around them; their outputs get type info so the
  converter can see through them;
* value_info only for intermediate tensors, before and after the conversion: the converter retypes every float
  entry it meets to float16, so an entry naming an initializer kept in FP32 (trained LayerNorm weights, not
  de-duplicated) would contradict the initializer, and onnx.checker rejects the file; after it, the stale entries
  it leaves are replaced by freshly inferred ones;
* the graph is sorted topologically afterwards (the converter appends its Cast nodes at the end);
* a tensor between two FP32-kept nodes stays FP32 (the converter would send it through FP16 and back);
* `convert_to_fp16` is the one conversion: `debx export --fp16` keeps op types, `debx calibrate --precision fp16`
  (calib/fp16.py) adds the nodes its measurements keep;
* `overflow_problems` runs the converted graph on real inputs with every intermediate exposed and reports any
  tensor that holds inf or NaN.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

KEEP_FP32: tuple[str, ...] = ("LayerNormalization",)


def convert_to_fp16(model, keep_fp32: tuple[str, ...] | None = None, keep_nodes=()):
    """An FP16 copy of `model` (onnx.ModelProto) with FP32 graph inputs/outputs.

    keep_fp32: op types kept in FP32 (None: KEEP_FP32); keep_nodes: names of further nodes kept in FP32 (calib/fp16.py
    keeps what overflows on real data). The one conversion behind `debx export --fp16` and `debx calibrate
    --precision fp16`."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    keep = tuple(KEEP_FP32 if keep_fp32 is None else keep_fp32)
    keep_nodes = list(keep_nodes)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    name_nodes(work)
    unshare_initializers(work, set(keep), set(keep_nodes))
    type_custom_outputs(work)
    # the converter retypes every float value_info entry of an FP16 node's tensors, initializers included; an
    # initializer that stays FP32 (LayerNorm weights) would then carry a float16 value_info that contradicts it
    # (onnx.checker: "Inferred elem type differs from existing elem type"). Initializers and graph inputs/outputs
    # carry their own types: only intermediate tensors get value_info.
    _set_value_info(work, _inferred_intermediates(work))
    out = convert_float_to_float16(work, keep_io_types=True, disable_shape_infer=True,
                                   op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep], node_block_list=keep_nodes)
    topological_sort(out.graph)  # the converter appends its Casts at the end; type inference needs producers first
    # what the converter left in value_info is partly stale (entries of renamed tensors, FP32 types of tensors now
    # FP16): keep the declared types of custom nodes' outputs (no schema to infer them from), infer the rest afresh
    _set_value_info(out, _custom_output_info(out))
    drop_fp16_round_trips(out)
    _set_value_info(out, _inferred_intermediates(out))
    return out


def name_nodes(model) -> None:
    """Give every unnamed node its first output's name (the converter's node_block_list works by name)."""
    for node in model.graph.node:
        if not node.name:
            node.name = node.output[0]


def _custom_output_info(model) -> list:
    """The value_info entries of custom (schema-less) nodes' outputs: their declared types are all there is."""
    from debx.runtimes.reference_ops import custom_nodes

    declared = {o for n in custom_nodes(model) for o in n.output}
    return [vi for vi in model.graph.value_info if vi.name in declared]


def _set_value_info(model, entries) -> None:
    copies = []
    for vi in entries:
        c = type(vi)()
        c.CopyFrom(vi)
        copies.append(c)
    del model.graph.value_info[:]
    model.graph.value_info.extend(copies)


def _inferred_intermediates(model) -> list:
    """Inferred value_info (debx.exporters.checks.inferred_value_info: any model size) of intermediate tensors only:
    no entries for initializers, graph inputs or outputs, whose types are their own."""
    from debx.exporters.checks import inferred_value_info

    own = {t.name for t in model.graph.initializer} | {v.name for v in [*model.graph.input, *model.graph.output]}
    return [vi for vi in inferred_value_info(model) if vi.name not in own]


def drop_fp16_round_trips(model) -> None:
    """ORT's converter wraps every FP32-kept node in Casts, so a tensor between two kept nodes still passes
    through FP16 (Cast to float16, then back to float), where a value over 65504 becomes inf. Bypass each such
    round trip: Cast(float16 -> float) of a Cast(float -> float16) becomes an Identity of the original FP32 tensor;
    a Cast to float16 left without consumers is removed."""
    from onnx import TensorProto, helper

    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in [*_inferred_intermediates(model), *model.graph.input, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {o: n for n in model.graph.node for o in n.output}
    nodes = list(model.graph.node)
    for i, node in enumerate(nodes):
        if cast_to(node) != TensorProto.FLOAT:
            continue
        down = producer.get(node.input[0])
        if down is None or cast_to(down) != TensorProto.FLOAT16 or types.get(down.input[0]) != TensorProto.FLOAT:
            continue
        nodes[i] = helper.make_node("Identity", [down.input[0]], list(node.output), name=node.name)
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    nodes = [n for n in nodes if not (cast_to(n) == TensorProto.FLOAT16 and not any(o in used for o in n.output))]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def unshare_initializers(model, keep_types: set[str], keep_nodes: set[str] = frozenset()) -> None:
    """Give nodes kept in FP32 (by op type or by name) their own copy of any initializer they share with others.

    One copy per kept use, even when every use is kept: ORT's converter otherwise emits one Cast per use of a shared
    initializer, all with the same node name."""
    consumers = defaultdict(list)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers[name].append((node, i))
    inits = {t.name: t for t in model.graph.initializer}
    for name, uses in consumers.items():
        if name not in inits or len(uses) < 2:
            continue
        kept = [(n, i) for n, i in uses if n.op_type in keep_types or n.name in keep_nodes]
        if not kept:
            continue
        for k, (node, i) in enumerate(kept):
            copy = model.graph.initializer.add()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}.fp32.{k}"
            node.input[i] = copy.name
        if len(kept) == len(uses):
            model.graph.initializer.remove(inits[name])


def type_custom_outputs(model) -> None:
    """Custom attention nodes have no ONNX schema, so inference stops at them: declare each one's output as the
    type of its first input, layer after layer (each pass of inference reaches the next custom node)."""
    from onnx import helper

    from debx.runtimes.reference_ops import custom_nodes
    from debx.exporters.checks import inferred_value_info

    pending = [n for n in custom_nodes(model) if n.output[0] not in {vi.name for vi in model.graph.value_info}]
    while pending:
        known = {vi.name: vi for vi in [*inferred_value_info(model), *model.graph.input]}
        typed = [n for n in pending if n.input[0] in known]
        if not typed:
            return  # nothing more can be inferred; the converter will treat the rest as untyped
        for node in typed:
            elem = known[node.input[0]].type.tensor_type.elem_type
            model.graph.value_info.append(helper.make_tensor_value_info(node.output[0], elem, None))
        pending = [n for n in pending if n not in typed]


def topological_sort(graph) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (stable otherwise)."""
    produced_by = {}
    for idx, node in enumerate(graph.node):
        for out in node.output:
            produced_by[out] = idx
    order, state = [], {}

    def visit(idx: int) -> None:
        stack = [(idx, False)]
        while stack:
            i, done = stack.pop()
            if done:
                state[i] = 2
                order.append(i)
                continue
            if state.get(i):
                continue
            state[i] = 1
            stack.append((i, True))
            for name in reversed(graph.node[i].input):
                j = produced_by.get(name)
                if j is not None and not state.get(j):
                    stack.append((j, False))

    for i in range(len(graph.node)):
        if not state.get(i):
            visit(i)
    nodes = [graph.node[i] for i in order]
    copies = []
    for n in nodes:
        c = type(n)()
        c.CopyFrom(n)
        copies.append(c)
    del graph.node[:]
    graph.node.extend(copies)


def expose_intermediates(model):
    """A copy of `model` (onnx.ModelProto) whose every non-constant node output is also a graph output."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    consts = {t.name for t in probe.graph.initializer}
    for node in probe.graph.node:
        if node.op_type == "Constant":
            consts.update(node.output)
            continue
        for name in node.output:
            if name and name not in outputs and name not in consts:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                outputs.add(name)
    return probe


def overflow_problems(model, feeds_list: list[dict[str, np.ndarray]], limit: int = 5, model_dir=None) -> list[str]:
    """Run `model` (FP16 onnx.ModelProto) with every float intermediate as an output; report inf/NaN tensors.

    model_dir: folder of the model's external data files, when its weights are not inside the proto."""
    from debx.runtimes.onnxruntime import session_for_model

    session = session_for_model(expose_intermediates(model), model_dir=model_dir)
    names = [o.name for o in session.get_outputs()]
    bad: dict[str, int] = {}
    for feeds in feeds_list:
        values = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
        for name, value in zip(names, values):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                bad[name] = bad.get(name, 0) + int((~np.isfinite(value)).sum())
    problems = [f"FP16 overflow: {name} has {n} inf/NaN value(s) on real inputs" for name, n in list(bad.items())[:limit]]
    if len(bad) > limit:
        problems.append(f"FP16 overflow: {len(bad) - limit} more tensors with inf/NaN")
    return problems

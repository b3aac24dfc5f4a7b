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
* the graph is sorted topologically afterwards (the converter appends its Cast nodes at the end);
* `overflow_problems` runs the converted graph on real inputs with every intermediate exposed and reports any
  tensor that holds inf or NaN.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

KEEP_FP32: tuple[str, ...] = ("LayerNormalization",)


def convert_to_fp16(model, keep_fp32: tuple[str, ...] | None = None):
    """An FP16 copy of `model` (onnx.ModelProto) with FP32 graph inputs/outputs."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    keep = tuple(KEEP_FP32 if keep_fp32 is None else keep_fp32)
    from exporters.checks import inferred_value_info

    work = onnx.ModelProto()
    work.CopyFrom(model)
    unshare_initializers(work, set(keep))
    type_custom_outputs(work)
    typed = inferred_value_info(work)  # works past 2 GB, unlike the converter's own inference
    del work.graph.value_info[:]
    work.graph.value_info.extend(typed)
    out = convert_float_to_float16(work, keep_io_types=True, disable_shape_infer=True,
                                   op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep])
    topological_sort(out.graph)
    return out


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
    from exporters.checks import inferred_value_info

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

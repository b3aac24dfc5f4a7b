"""Per-node INT8 sensitivity and the step-by-step fallback of `debx calibrate --auto`.

Sensitivity of a quantized MatMul/Gemm is its *local* output error on the calibration batches: the node's inputs
are taken from the FP32 model, quantized with exactly the scales the Q/DQ model holds (symmetric per-tensor
activations, per-channel weights), multiplied, and compared with the FP32 product:

    error(node) = ||Y_int8 - Y_fp32||_F / ||Y_fp32||_F        over all calibration batches

Local error ranks nodes by what their own quantization costs, without the error accumulated upstream (which would
rank every late layer worst).

`auto_fallback`: quantize with the full policy, evaluate on the dev split, gate against the FP32 reference; while
the gate fails, move the `step` most sensitive quantized nodes back to float and try again. Every attempt is one
record in the sidecar's `auto.steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from debx.errors import ConfigError


# ---------------------------------------------------------------------------------------------------------------------
# Local quantization error
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Operand:
    kind: str  # "weight" (dequantized constant) | "activation" (float tensor quantized at run time) | "float"
    tensor: str | None = None  # activation: the FP32 tensor; float: the tensor as-is
    value: np.ndarray | None = None  # weight: dequantized values
    scale: float = 1.0
    zero_point: int = 0
    qmin: int = -128
    qmax: int = 127


def _array(inits, name):
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def _dequantize_weight(dq, inits) -> np.ndarray:
    q = _array(inits, dq.input[0]).astype(np.float32)
    scale = _array(inits, dq.input[1]).astype(np.float32)
    zp = _array(inits, dq.input[2]).astype(np.float32) if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale)
    if scale.size > 1:
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q - zp) * scale


def _operands(qdq_model, node_name: str) -> list[_Operand]:
    """How each of the first two inputs of a quantized node is formed in the Q/DQ graph."""
    inits = {t.name: t for t in qdq_model.graph.initializer}
    producer = {o: n for n in qdq_model.graph.node for o in n.output}
    node = next((n for n in qdq_model.graph.node if n.name == node_name), None)
    if node is None:
        raise ConfigError(f"node {node_name!r} is not in the quantized model")
    ops = []
    for name in node.input[:2]:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            ops.append(_Operand("float", tensor=name))
            continue
        if dq.input[0] in inits:
            ops.append(_Operand("weight", value=_dequantize_weight(dq, inits)))
            continue
        q = producer[dq.input[0]]
        zp_t = inits[q.input[2]] if len(q.input) > 2 and q.input[2] else None
        unsigned = zp_t is not None and zp_t.data_type == 2  # UINT8
        ops.append(_Operand("activation", tensor=q.input[0], scale=float(_array(inits, q.input[1])),
                            zero_point=int(_array(inits, q.input[2])) if zp_t is not None else 0,
                            qmin=0 if unsigned else -128, qmax=255 if unsigned else 127))
    return ops


def fake_quantize(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    return (np.clip(np.round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale


def _product(node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if node.op_type == "Gemm":
        attrs = {x.name: x.i for x in node.attribute if x.name in ("transA", "transB")}
        a = a.T if attrs.get("transA") else a
        b = b.T if attrs.get("transB") else b
    return np.matmul(a, b)


def node_errors(fp32_model, qdq_model, quantized: list[str], batches: list[dict[str, np.ndarray]],
                threads: int | None = None) -> dict[str, float]:
    """Local relative INT8 error of every node in `quantized` (see the module doc)."""
    import onnx

    from debx.runtimes.onnxruntime import session_for_model

    plans = {name: _operands(qdq_model, name) for name in quantized}
    nodes = {n.name: n for n in fp32_model.graph.node}
    fp32_inits = {t.name: t for t in fp32_model.graph.initializer}
    needed = sorted({op.tensor for ops in plans.values() for op in ops if op.tensor and op.tensor not in fp32_inits})
    probe = onnx.ModelProto()
    probe.CopyFrom(fp32_model)
    have = {o.name for o in probe.graph.output}
    for name in needed:
        if name not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = session_for_model(probe, threads=threads)
    out_names = [o.name for o in session.get_outputs()]
    in_names = [i.name for i in session.get_inputs()]
    err = {name: 0.0 for name in quantized}
    ref = {name: 0.0 for name in quantized}
    for feeds in batches:
        values = dict(zip(out_names, session.run(None, {k: feeds[k] for k in in_names})))
        for name, ops in plans.items():
            exact, approx = [], []
            for op, original in zip(ops, nodes[name].input[:2]):
                if op.kind == "weight":
                    exact.append(_array(fp32_inits, original).astype(np.float32))
                    approx.append(op.value)
                else:
                    x = _array(fp32_inits, op.tensor) if op.tensor in fp32_inits else values[op.tensor]
                    exact.append(x)
                    approx.append(x if op.kind == "float" else
                                  fake_quantize(x, op.scale, op.zero_point, op.qmin, op.qmax))
            y = _product(nodes[name], *exact)
            yq = _product(nodes[name], *approx)
            err[name] += float(np.sum((yq - y) ** 2, dtype=np.float64))
            ref[name] += float(np.sum(y.astype(np.float64) ** 2))
    return {name: float(np.sqrt(err[name] / ref[name])) if ref[name] > 0 else 0.0 for name in quantized}


# ---------------------------------------------------------------------------------------------------------------------
# The --auto fallback
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class AutoConfig:
    max_steps: int = 20  # fallback steps after the first attempt
    step: int = 1  # nodes moved back to float per step
    eval_split: str = "dev"
    eval_limit: int | None = None  # score only the first N rows (tests)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.max_steps < 0 or self.step < 1:
            raise ConfigError("--auto needs max steps >= 0 and a step of >= 1 node")


@dataclass
class AutoResult:
    passed: bool
    policy: object  # the QDQPolicy of the last attempt
    model: object  # its quantized onnx.ModelProto
    placement: object
    steps: list[dict] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        ranked = sorted(self.errors.items(), key=lambda kv: -kv[1])
        return {"passed": self.passed, "steps": self.steps,
                "sensitivity": [{"node": k, "relative_error": v} for k, v in ranked]}


def auto_fallback(fp32_model, ranges, policy, batches, evaluate_candidate: Callable, cfg: AutoConfig,
                  work_dir: Path, threads: int | None = None, log: Callable[[str], None] = lambda s: None) -> AutoResult:
    """Quantize, evaluate (evaluate_candidate(model) -> GateResult), fall back node by node until the gate passes."""
    from debx.calib.qdq import quantize_int8

    model, placement = quantize_int8(fp32_model, ranges, policy, work_dir)
    errors = node_errors(fp32_model, model, placement.quantize, batches, threads) if placement.quantize else {}
    order = [n for n, _ in sorted(errors.items(), key=lambda kv: -kv[1])]
    steps: list[dict] = []
    moved: list[str] = []
    just_moved: list[str] = []
    for step in range(cfg.max_steps + 1):
        result = evaluate_candidate(model)
        record = {"step": step, "moved_to_float": list(just_moved), "float_nodes": list(moved),
                  "quantized_nodes": len(placement.quantize), "metric": result.metric,
                  "reference": result.reference, "candidate": result.candidate, "delta": result.delta,
                  "ci": [result.ci_low, result.ci_high], "allowed_drop": result.allowed_drop,
                  "changed": result.changed, "passed": result.passed}
        steps.append(record)
        log(f"--auto step {step}: {len(placement.quantize)} int8 matmuls, {result.metric} {result.candidate:.2f} vs "
            f"{result.reference:.2f} (delta {result.delta:+.2f}) {result.verdict}")
        if result.passed:
            return AutoResult(True, policy, model, placement, steps, errors)
        remaining = [n for n in order if n not in moved]
        if not remaining or step == cfg.max_steps:
            break
        just_moved = remaining[:cfg.step]
        moved += just_moved
        policy = policy.with_excluded(just_moved)
        model, placement = quantize_int8(fp32_model, ranges, policy, work_dir)
    return AutoResult(False, policy, model, placement, steps, errors)

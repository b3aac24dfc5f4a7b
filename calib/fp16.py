"""FP16 from measurement: run the FP32 model on the calibration batches with every intermediate exposed, and keep
in FP32 every node that touches a tensor FP16 cannot carry.

Rules (each kept node is reported with its reason):
  policy     op types FP16 is unsafe for by construction (exporters.fp16.KEEP_FP32: LayerNormalization, whose
             variance overflows FP16 on large activations)
  overflow   a tensor whose largest |x| exceeds 65504 / margin (margin 4 by default: head room for inputs
             larger than any calibration row); the FP16-safe mask fill -65504 is exact in FP16 and not counted
  underflow  a tensor most of whose non-zero values (share >= underflow_share) lie below FP16's smallest normal
             number 2^-14 ~ 6.1e-5, where FP16 keeps few significant bits or flushes to zero
  weights    an initializer with |w| > 65504 (it would be clamped)
A tensor at risk keeps both its producer and its consumers in FP32 (ONNX Runtime's converter puts Casts at the
borders). After the conversion the FP16 model runs on the same batches; any tensor holding inf/NaN sends its
producer back to FP32 and the conversion is repeated (a few rounds at most).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from debx.errors import DebxError

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14
MASK_FILL = 65504.0  # |debx.model.MASK_FILL|: exact in FP16, written only by the masking Where


class FP16Failed(DebxError):
    """The FP16 model still overflows after keeping the offending nodes in FP32."""


@dataclass
class FP16Config:
    overflow_margin: float = 4.0
    underflow_share: float = 0.5
    keep_op_types: tuple[str, ...] | None = None  # None: exporters.fp16.KEEP_FP32
    max_rounds: int = 3


@dataclass
class TensorStats:
    amax: float = 0.0  # largest finite |x| other than the mask fill
    nonzero: int = 0
    tiny: int = 0  # non-zero values below FP16_MIN_NORMAL
    nonfinite: int = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        finite = np.isfinite(x)
        self.nonfinite += int(x.size - finite.sum())
        a = np.abs(x[finite])
        a = a[a != MASK_FILL]
        if a.size:
            self.amax = max(self.amax, float(a.max()))
            nz = a[a > 0]
            self.nonzero += int(nz.size)
            self.tiny += int((nz < FP16_MIN_NORMAL).sum())

    @property
    def tiny_share(self) -> float:
        return self.tiny / self.nonzero if self.nonzero else 0.0


@dataclass
class FP16Plan:
    kept: dict[str, str] = field(default_factory=dict)  # node name -> reason
    keep_op_types: tuple[str, ...] = ()

    def to_list(self, model) -> list[dict]:
        ops = {n.name: n.op_type for n in model.graph.node}
        out = [{"node": k, "op": ops.get(k, "?"), "reason": v} for k, v in self.kept.items()]
        return out


def _named(model) -> None:
    for node in model.graph.node:
        if not node.name:
            node.name = node.output[0]


def tensor_stats(model, batches: list[dict[str, np.ndarray]], threads: int | None = None) -> dict[str, TensorStats]:
    """Statistics of every float node output of `model` (onnx.ModelProto) over `batches`."""
    from debx.runtimes.onnxruntime import session_for_model
    from exporters.fp16 import expose_intermediates

    session = session_for_model(expose_intermediates(model), threads=threads)
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    stats: dict[str, TensorStats] = {}
    for feeds in batches:
        for name, value in zip(names, session.run(None, {k: feeds[k] for k in inputs})):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                stats.setdefault(name, TensorStats()).update(value)
    return stats


def plan_fp16(model, stats: dict[str, TensorStats], cfg: FP16Config) -> FP16Plan:
    """Which nodes stay in FP32, and why (see the module doc)."""
    from onnx import numpy_helper

    from exporters.fp16 import KEEP_FP32

    keep_types = tuple(KEEP_FP32 if cfg.keep_op_types is None else cfg.keep_op_types)
    plan = FP16Plan(keep_op_types=keep_types)
    limit = FP16_MAX / cfg.overflow_margin
    inits = {t.name: t for t in model.graph.initializer}
    big_weights = {}
    for node in model.graph.node:
        for i in node.input:
            if i in inits and i not in big_weights and inits[i].data_type == 1:
                w = numpy_helper.to_array(inits[i])
                big_weights[i] = float(np.abs(w).max()) if w.size else 0.0
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        if node.op_type in keep_types:
            plan.kept[node.name] = f"policy: {node.op_type} is kept in FP32"
            continue
        reason = None
        for t in [*node.input, *node.output]:
            s = stats.get(t)
            if t in inits and big_weights.get(t, 0.0) > FP16_MAX:
                reason = f"weights: {t} holds |w| = {big_weights[t]:.4g} > 65504"
            elif s is not None and s.amax > limit:
                reason = f"overflow: {t} reaches |x| = {s.amax:.4g} (> 65504/{cfg.overflow_margin:g})"
            elif s is not None and s.nonzero and s.tiny_share >= cfg.underflow_share:
                reason = (f"underflow: {100 * s.tiny_share:.0f}% of the non-zero values of {t} are below "
                          f"FP16's smallest normal 6.1e-5")
            if reason:
                break
        if reason:
            plan.kept[node.name] = reason
    return plan


def convert(model, plan: FP16Plan):
    """FP16 copy of `model` with plan.kept nodes and plan.keep_op_types in FP32, FP32 graph inputs/outputs."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from calib.ranges import quiet
    from exporters.fp16 import topological_sort, type_custom_outputs, unshare_initializers

    work = onnx.ModelProto()
    work.CopyFrom(model)
    _named(work)
    unshare_initializers(work, set(plan.keep_op_types), set(plan.kept))
    type_custom_outputs(work)
    with quiet():
        out = convert_float_to_float16(work, keep_io_types=True,
                                       op_block_list=[*DEFAULT_OP_BLOCK_LIST, *plan.keep_op_types],
                                       node_block_list=list(plan.kept))
    topological_sort(out.graph)  # the converter appends its Casts at the end; type inference needs producers first
    _drop_fp16_round_trips(out)
    return out


def _drop_fp16_round_trips(model) -> None:
    """ORT's converter wraps every FP32-kept node in Casts, so a tensor between two kept nodes still passes
    through FP16 (Cast to float16, then back to float). Bypass each such round trip: Cast(float16 -> float) of a
    Cast(float -> float16) becomes an Identity of the original FP32 tensor; a Cast to float16 left without
    consumers is removed."""
    import onnx
    from onnx import TensorProto, helper

    types = {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    # the converter leaves stale FP32 entries behind: infer every type afresh, except the outputs of custom nodes
    # (no schema: their declared type is all there is)
    from debx.runtimes.reference_ops import custom_nodes

    declared = {o for n in custom_nodes(probe) for o in n.output}
    keep = [vi for vi in probe.graph.value_info if vi.name in declared]
    del probe.graph.value_info[:]
    probe.graph.value_info.extend(keep)
    inferred = onnx.shape_inference.infer_shapes(probe, strict_mode=False)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for t in model.graph.initializer:
        types[t.name] = t.data_type

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


def make_fp16(model, batches: list[dict[str, np.ndarray]], cfg: FP16Config | None = None,
              threads: int | None = None):
    """(FP16 onnx.ModelProto, FP16Plan, stats of the FP32 run): measure, plan, convert, re-check."""
    cfg = cfg or FP16Config()
    work = type(model)()
    work.CopyFrom(model)
    _named(work)
    stats = tensor_stats(work, batches, threads)
    bad = {k: s for k, s in stats.items() if s.nonfinite}
    if bad:
        name = next(iter(bad))
        raise FP16Failed(f"the FP32 model itself produces inf/NaN in {name} on the calibration data")
    plan = plan_fp16(work, stats, cfg)
    original = {n.name for n in work.graph.node}
    for _ in range(cfg.max_rounds + 1):
        half = convert(work, plan)
        after = tensor_stats(half, batches, threads)
        bad = sorted(t for t, s in after.items() if s.nonfinite)
        if not bad:
            return half, plan, stats
        culprits = _culprits(half, bad, original, set(plan.kept))
        if not culprits:
            break
        for node, t in culprits.items():
            plan.kept[node] = f"overflow: {t} became inf/NaN in FP16 on the calibration data"
    raise FP16Failed(f"the FP16 model still produces inf/NaN (e.g. in {bad[0]}) after keeping "
                     f"{len(plan.kept)} nodes in FP32")


def _culprits(half, bad: list[str], original: set[str], kept: set[str]) -> dict[str, str]:
    """Nodes to move to FP32 for tensors that hold inf/NaN in the FP16 run: the (original, FP16) node that wrote
    the tensor; or, when a converter Cast wrote it (an FP32 value too large for FP16 on its way to FP16 nodes),
    the FP16 nodes that read it."""
    producer = {o: n for n in half.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in half.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {}
    for t in bad:
        p = producer.get(t)
        if p is not None and p.name in original:
            if p.name not in kept:
                out[p.name] = t
        elif p is not None and p.op_type == "Cast":
            for c in consumers.get(t, []):
                if c.name in original and c.name not in kept:
                    out[c.name] = t
    return out

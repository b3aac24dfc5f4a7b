"""INT8 graphs onto debx's native CPU ops, in memory, when the ONNX Runtime runner opens them.

`debx calibrate --target ort` writes standard ONNX Runtime INT8 ops (com.microsoft MatMulIntegerToFloat, with
LayerNormalization -> QuantizeLinear between layers). When the native library (debx.runtimes.native_ops) is loaded,
the runner rewrites the graph before opening the session, in three named steps of debx.runtimes.rewrites (int8-matmul,
layernorm-quantize, attention-bf16; `debx rewrite` writes them into a file ahead of time):

- LayerNormalization -> QuantizeLinear [-> DequantizeLinear]               -> debx::DebxLayerNormQuantize (one pass)
- and where a native INT8 matmul kernel family runs (AMX-INT8 tiles on Intel Sapphire Rapids and later, else AVX-512
  VNNI on Ice Lake / Cascade Lake Xeons and AMD Zen 4 and later, else AVX-VNNI on Alder Lake and later client CPUs,
  else AVX2 on any x86-64 CPU since Haswell / AMD Zen 1):
  MatMulIntegerToFloat (constant symmetric per-column int8 weights)         -> debx::DebxMatMulInt8
  that, when its only consumer is a two-input Sum (the residual add)        -> debx::DebxMatMulInt8Add
  that, followed by Gelu and QuantizeLinear (the FFN's first half)          -> debx::DebxMatMulInt8GeluQuantize
  each with the attribute family = the kernel family chosen here (kernel_family(): amx > avx512-vnni > avx-vnni >
  avx2 > ort, by CPUID; on CPUs without AVX2 + FMA the matmuls stay on ONNX Runtime's own INT8 kernels: "ort");
- and on CPUs with AMX-BF16 or AVX-512 BF16: debx::DebxDisentangledAttention gets its mixed-precision mode (QK^T, the
  c2p / p2c products and P . V on bfloat16 operands with float32 accumulation; scores and softmax stay float32), its
  `bf16` attribute naming the instruction family (attention_mode(): amx-bf16 on AMX tiles, else avx512-bf16 on
  VDPBF16PS; "float32" where neither runs). Only INT8 graphs get it: their activations are already 8-bit, and the
  gate of `debx eval` measures this recipe as a whole.

The integer sums are exact, so the matmuls agree with the graph as written to float rounding (every family); the fused
quantizations agree up to one step where a value lands on a rounding boundary; the bf16 attention to about 1e-2 of its
output scale (tests/runtimes/test_int8_cpu.py). The file on disk keeps the standard ops and runs anywhere
(unless `debx rewrite` wrote it).

Switches: `DEBX_CPU_KERNELS=ort|avx2|avx-vnni|avx512-vnni|amx` forces a matmul family (for tests and measurements; a
family this CPU cannot run is an error; the attention follows it: amx-bf16 or avx512-bf16 with amx, avx512-bf16 with
avx512-vnni, float32 with the others); `DEBX_AMX=0` turns the AMX family off (matmuls and the amx-bf16 attention: the
best other family runs); `DEBX_CPU_ATTENTION=float32|amx-bf16|avx512-bf16|avx512-bf16-emulated` forces the
attention's mode (the last, avx512-bf16's code with its two bf16 instructions in software, runs on any AVX-512 CPU and
is never chosen otherwise); `DEBX_NATIVE_OPS=0` turns every native op off.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from debx.contract import DEBX_ATTENTION
from debx.errors import ConfigError
from debx.runtimes import native_ops

MATMUL = ("com.microsoft", "MatMulIntegerToFloat")
MATMUL_OPS = ("DebxMatMulInt8", "DebxMatMulInt8Add", "DebxMatMulInt8GeluQuantize")
NORM_OP = "DebxLayerNormQuantize"
OPS = (*MATMUL_OPS, NORM_OP)
BF16_ATTENTION = f"{DEBX_ATTENTION.name}(bf16)"  # a count key: attention nodes switched to the mixed mode
# the attention's one runtime-only attribute in the contract (set in memory or by `debx rewrite`, never by the exporter)
(BF16_ATTRIBUTE,) = (a.name for a in DEBX_ATTENTION.attributes if not a.in_files)
DOMAIN = DEBX_ATTENTION.domain  # debx's ops share the attention op's domain (plugins/ortOps registers them there)


def native() -> bool:
    return native_ops.available()


FAMILIES = ("ort", "avx512-vnni", "amx", "avx2", "avx-vnni")  # the index is the op's `family` attribute (matMulInt8Cpu.h)
BEST_FIRST = ("amx", "avx512-vnni", "avx-vnni")  # the order kernel_family() tries them in
# Runs only when forced ($DEBX_CPU_KERNELS=avx2): exact (int16 VPMADDWD, no saturation) but measured 4-6x slower than
# ONNX Runtime's own INT8 matmul on an AVX-512 VNNI CPU, and ONNX Runtime's AVX2 kernel (VPMADDUBSW) does ~2x the
# multiply-adds per instruction of ours, so on AVX2-only CPUs "ort" stays the default until a measurement says otherwise
OPT_IN = ("avx2",)
FAMILY_ENV = "DEBX_CPU_KERNELS"
# the CPUID features (and OS state) each native family needs, for the error that forcing one names
NEEDS = {"amx": "AMX_TILE + AMX_INT8, granted by the OS", "avx512-vnni": "AVX512F/BW/VL/DQ + AVX512_VNNI",
         "avx-vnni": "AVX2 + FMA + AVX_VNNI", "avx2": "AVX2 + FMA"}


def family_available(name: str) -> bool:
    """True when this machine runs the matmul kernel family `name` (the native library says so); "ort" always."""
    if name == "ort":
        return True
    if not native():
        return False
    return native_ops.int8_family_available(FAMILIES.index(name))


def _forced() -> str | None:
    name = os.environ.get(FAMILY_ENV, "").strip()
    if not name:
        return None
    if name not in FAMILIES:
        raise ConfigError(f"{FAMILY_ENV}={name}: unknown kernel family (choose from {', '.join(('ort', *BEST_FIRST, *OPT_IN))})")
    if not family_available(name):
        why = ("the native ops are unavailable: " + native_ops.unavailable_reason() if not native()
               else f"this CPU (or OS) lacks its instructions ({NEEDS[name]})")
        raise ConfigError(f"{FAMILY_ENV}={name}: cannot run here, {why}")
    return name


def kernel_family() -> str:
    """The INT8 matmul kernel family the rewrite uses here: $DEBX_CPU_KERNELS when set, else the best this CPU runs
    (amx unless $DEBX_AMX=0, then avx512-vnni, avx-vnni), else "ort" (ONNX Runtime's own kernels; avx2 only when
    forced, see OPT_IN)."""
    forced = _forced()
    if forced is not None:
        return forced
    for name in BEST_FIRST:
        if name == "amx" and os.environ.get("DEBX_AMX", "1") == "0":
            continue
        if family_available(name):
            return name
    return "ort"


def amx() -> bool:
    """True when the AMX matmul ops run here: native library built, AMX-INT8 granted, not switched off."""
    return kernel_family() == "amx"


# the attention's modes in INT8 graphs, each the value of the op's bf16 attribute (disentangledAttentionBf16.h
# Bf16Family; 1 = "the best bf16 family here" is for hand-written graphs, the rewrite names one)
ATTENTION_MODES = {"float32": 0, "amx-bf16": 2, "avx512-bf16": 3, "avx512-bf16-emulated": 4}
ATTENTION_ENV = "DEBX_CPU_ATTENTION"
ATTENTION_NEEDS = {"amx-bf16": "AMX_TILE + AMX_BF16, granted by the OS", "avx512-bf16": "AVX512F/BW/VL + AVX512_BF16",
                   "avx512-bf16-emulated": "AVX512F/BW/VL/DQ"}
# the bf16 modes that go with each matmul family, best first (never the emulation: only $DEBX_CPU_ATTENTION picks it)
_ATTENTION_WITH = {"amx": ("amx-bf16", "avx512-bf16"), "avx512-vnni": ("avx512-bf16",)}


def attention_mode_available(name: str) -> bool:
    """True when the attention's mode `name` (a key of ATTENTION_MODES) runs here; "float32" always."""
    if name == "float32":
        return True
    return native() and native_ops.attention_bf16_available(ATTENTION_MODES[name])


def attention_mode(family: str | None = None) -> str:
    """The attention's mode in INT8 graphs here: $DEBX_CPU_ATTENTION when set, else the best bf16 mode that goes
    with the matmul kernel family (default kernel_family(): amx -> amx-bf16, else avx512-bf16; avx512-vnni ->
    avx512-bf16; amx-bf16 never with $DEBX_AMX=0), else "float32"."""
    name = os.environ.get(ATTENTION_ENV, "").strip()
    if name:
        if name not in ATTENTION_MODES:
            raise ConfigError(f"{ATTENTION_ENV}={name}: unknown attention mode (choose from "
                              f"{', '.join(ATTENTION_MODES)})")
        if not attention_mode_available(name):
            why = ("the native ops are unavailable: " + native_ops.unavailable_reason() if not native()
                   else f"this CPU (or OS) lacks its instructions ({ATTENTION_NEEDS[name]}), or DEBX_CPU_ISA=baseline")
            raise ConfigError(f"{ATTENTION_ENV}={name}: cannot run here, {why}")
        return name
    for name in _ATTENTION_WITH.get(kernel_family() if family is None else family, ()):
        if name == "amx-bf16" and os.environ.get("DEBX_AMX", "1") == "0":
            continue
        if attention_mode_available(name):
            return name
    return "float32"


def amx_bf16() -> bool:
    """True when the INT8 rewrite runs the attention's bf16 mode on AMX-BF16 tiles here."""
    return attention_mode() == "amx-bf16"


def attention_mode_in(graph) -> str | None:
    """The mode debx's attention nodes of `graph` run in (a key of ATTENTION_MODES, by their bf16 attribute; 1, "the
    best bf16 family here", as the library resolves it); None when it has none."""
    values = {next((a.i for a in n.attribute if a.name == BF16_ATTRIBUTE), 0) for n in graph.graph.node
              if (n.domain, n.op_type) == DEBX_ATTENTION.key}
    if not values:
        return None
    value = max(values)
    if value == 1:
        return next((m for m in ("amx-bf16", "avx512-bf16") if attention_mode_available(m)), "float32")
    return next((m for m, v in ATTENTION_MODES.items() if v == value), f"bf16 = {value}")


def kernel_summary(described: dict) -> str | None:
    """One line for reports: which INT8 matmul kernel family ran an engine (amx, avx512-vnni, avx-vnni, avx2, or ort:
    ONNX Runtime's own), the mode of debx's attention op (amx-bf16, avx512-bf16, float32; when the graph has it) and
    which debx native INT8 CPU ops its graph ran on (made at load or by `debx rewrite`); None when it ran no INT8 graph on the CPU.
    `described`: a runner's describe() (keys int8_kernels, attention_kernels, native_int8_ops)."""
    family, ops = described.get("int8_kernels"), described.get("native_int8_ops")
    if not (family or ops):
        return None
    line = f"INT8 matmul kernels {family or 'ort'}"
    if described.get("attention_kernels"):
        line += f"; attention {described['attention_kernels']}"
    if ops:
        line += "; debx native INT8 CPU ops " + ", ".join(f"{k} ×{v}" for k, v in ops.items())
    return line


def is_int8(graph) -> bool:
    """Whether `graph` (an onnx.ModelProto) is an INT8 graph of `debx calibrate --target ort` (MatMulIntegerToFloat),
    as written or already moved onto debx's native INT8 ops (`debx rewrite`)."""
    return any((n.domain, n.op_type) == MATMUL or (n.domain == DOMAIN and n.op_type in OPS) for n in graph.graph.node)


def native_ops_in(graph) -> tuple[dict[str, int], str | None]:
    """The debx native INT8 CPU ops in `graph` (op -> count, the bf16 attention nodes under BF16_ATTENTION) and the
    matmul kernel family their `family` attribute names (None when it has no native matmul op)."""
    counts: dict[str, int] = {}
    family = None
    for n in graph.graph.node:
        if n.domain != DOMAIN:
            continue
        if n.op_type in OPS:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
            if n.op_type in MATMUL_OPS:
                value = next((a.i for a in n.attribute if a.name == "family"), None)
                family = FAMILIES[value] if value is not None and 0 <= value < len(FAMILIES) else family or "best"
        elif (n.domain, n.op_type) == DEBX_ATTENTION.key and any(a.name == BF16_ATTRIBUTE and a.i for a in n.attribute):
            counts[BF16_ATTENTION] = counts.get(BF16_ATTENTION, 0) + 1
    return counts, family


def wants(graph) -> bool:
    """Whether open_session should rewrite this graph: it is an INT8 graph and the native library is there."""
    return is_int8(graph) and native()


def _standard(node, op_type: str) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type == op_type


def _is_gelu(node) -> bool:
    if (node.domain, node.op_type) == ("com.microsoft", "Gelu"):
        return True
    if _standard(node, "Gelu"):
        approx = next((a.s.decode() for a in node.attribute if a.name == "approximate"), "none")
        return approx == "none"
    return False


class _Graph:
    """Consumers, initializers and the node-order bookkeeping the rewrites share."""

    def __init__(self, model, base_dir: str | None = None) -> None:
        self.model = model
        self.base_dir = base_dir or ""  # where the weights of a graph with external data are
        self.inits = {t.name: t for t in model.graph.initializer}
        self.outputs = {o.name for o in model.graph.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.replace_at: dict[int, object] = {}  # id(node) -> the fused node that takes its place
        self.dropped: set[int] = set()

    def scalar(self, name: str, dtype: int) -> bool:
        t = self.inits.get(name)
        return t is not None and t.data_type == dtype and math.prod(t.dims) == 1

    def only_user(self, name: str):
        users = self.consumers[name]
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def quantize_to_u8(self, node) -> bool:
        from onnx import TensorProto

        return (node is not None and _standard(node, "QuantizeLinear") and len(node.input) == 3
                and self.scalar(node.input[1], TensorProto.FLOAT) and self.scalar(node.input[2], TensorProto.UINT8))

    def commit(self) -> None:
        if not self.replace_at and not self.dropped:
            return
        graph = self.model.graph
        order = []
        for node in graph.node:
            if id(node) in self.replace_at:
                order.append(self.replace_at[id(node)])
            elif id(node) not in self.dropped:
                order.append(node)
        kept = [type(n)() for n in order]
        for dst, src in zip(kept, order):
            dst.CopyFrom(src)
        del graph.node[:]
        graph.node.extend(kept)


def _convertible(g: _Graph, node) -> bool:
    """A MatMulIntegerToFloat the native ops run: constant symmetric per-column int8 weights, scalar activations."""
    from onnx import TensorProto, numpy_helper

    if (node.domain, node.op_type) != MATMUL or len(node.input) != 7 or not node.input[6]:
        return False
    b, b_scale, b_zero = (g.inits.get(node.input[i]) for i in (1, 3, 5))
    if b is None or b_scale is None or b_zero is None or b.data_type != TensorProto.INT8 or len(b.dims) != 2:
        return False
    n = b.dims[1]
    return (b_scale.data_type == TensorProto.FLOAT and list(b_scale.dims) == [n]
            and b_zero.data_type == TensorProto.INT8 and list(b_zero.dims) == [n]
            and not numpy_helper.to_array(b_zero, base_dir=g.base_dir).any()
            and g.scalar(node.input[2], TensorProto.FLOAT) and g.scalar(node.input[4], TensorProto.UINT8))


def _matmuls(g: _Graph, counts: dict[str, int], family: str) -> None:
    from onnx import helper

    for node in g.model.graph.node:
        if not _convertible(g, node):
            continue
        op = "DebxMatMulInt8"
        user = g.only_user(node.output[0])
        if user is not None and id(user) in g.replace_at:  # a Sum of two matmuls: the other one took it
            user = None
        if user is not None and _is_gelu(user):
            quant = g.only_user(user.output[0])
            if g.quantize_to_u8(quant):
                op = "DebxMatMulInt8GeluQuantize"
                node.input.extend(quant.input[1:])
                node.output[0] = quant.output[0]
                g.dropped |= {id(node), id(user)}
                g.replace_at[id(quant)] = node
        elif user is not None and _standard(user, "Sum") and len(user.input) == 2 and user.input[0] != user.input[1]:
            op = "DebxMatMulInt8Add"
            node.input.append(user.input[1] if user.input[0] == node.output[0] else user.input[0])
            node.output[0] = user.output[0]
            g.dropped.add(id(node))
            g.replace_at[id(user)] = node  # where the residual is sure to exist already
        node.domain, node.op_type = DOMAIN, op
        node.attribute.append(helper.make_attribute("family", FAMILIES.index(family)))
        counts[op] += 1


def _norms(g: _Graph, counts: dict[str, int]) -> None:
    from onnx import TensorProto, helper

    for node in g.model.graph.node:
        if not _standard(node, "LayerNormalization") or len(node.input) != 3 or len(node.output) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        gamma, beta = g.inits.get(node.input[1]), g.inits.get(node.input[2])
        if (attrs.get("axis", -1) != -1 or attrs.get("stash_type", 1) != 1 or gamma is None or beta is None
                or gamma.data_type != TensorProto.FLOAT or len(gamma.dims) != 1 or list(beta.dims) != list(gamma.dims)):
            continue
        y = node.output[0]
        quants = [u for u in g.consumers[y] if g.quantize_to_u8(u)]
        if len(quants) != 1 or id(quants[0]) in g.replace_at:
            continue
        quant = quants[0]
        float_out, dequantized = y, 0
        others = [u for u in g.consumers[y] if u is not quant]
        deq = [u for u in g.consumers[quant.output[0]]
               if _standard(u, "DequantizeLinear") and list(u.input) == [quant.output[0], *quant.input[1:]]]
        if not others and y not in g.outputs and len(deq) == 1:
            float_out, dequantized = deq[0].output[0], 1  # the residual reads DequantizeLinear(q): made here
            g.dropped.add(id(deq[0]))
        fused = helper.make_node(NORM_OP, [node.input[0], node.input[1], node.input[2], *quant.input[1:]],
                                 [quant.output[0], float_out], domain=DOMAIN,
                                 epsilon=float(attrs.get("epsilon", 1e-5)), dequantized=dequantized)
        g.replace_at[id(node)] = fused
        g.dropped.add(id(quant))
        counts[NORM_OP] += 1


def _bf16_attention(g: _Graph, counts: dict[str, int], mode: str) -> None:
    from onnx import helper

    if mode not in ATTENTION_MODES or mode == "float32":
        raise ValueError(f"unknown attention bf16 mode {mode!r}")
    for node in g.model.graph.node:
        if (node.domain, node.op_type) == DEBX_ATTENTION.key \
                and not any(a.name == BF16_ATTRIBUTE for a in node.attribute):
            node.attribute.append(helper.make_attribute(BF16_ATTRIBUTE, ATTENTION_MODES[mode]))
            counts[BF16_ATTENTION] += 1


def rewrite(model, family: str | None = None, attention: str | None = None) -> dict[str, int]:
    """Rewrite `model` (an onnx.ModelProto with its weights loaded) in place; returns how many of each op it made.

    family: the matmul kernel family, one of FAMILIES ("ort" leaves the matmuls as written; default: kernel_family()).
    attention: the mode of debx attention nodes, a key of ATTENTION_MODES (default: attention_mode(family))."""
    g = _Graph(model)
    counts = dict.fromkeys((*OPS, BF16_ATTENTION), 0)
    family = kernel_family() if family is None else family
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}")
    attention = attention_mode(family) if attention is None else attention
    if attention not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {attention!r}")
    if family != "ort":
        _matmuls(g, counts, family)
    _norms(g, counts)
    if attention != "float32":
        _bf16_attention(g, counts, attention)
    g.commit()
    _declare_domain(model, counts)
    return counts


def _declare_domain(model, counts: dict[str, int]) -> None:
    if any(counts.values()) and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.add(domain=DOMAIN, version=DEBX_ATTENTION.version)


# The three parts of `rewrite` on their own: the named steps of debx.runtimes.rewrites (each commits its changes).


def matmul_candidates(model, base_dir: str | None = None) -> int:
    """How many MatMulIntegerToFloat nodes of `model` the native matmul ops can run (0 once they are rewritten).
    base_dir: the folder of the graph's external weights, when it has some (small tensors are read from there)."""
    g = _Graph(model, base_dir)
    return sum(_convertible(g, n) for n in model.graph.node)


def rewrite_matmuls(model, family: str, base_dir: str | None = None) -> dict[str, int]:
    """MatMulIntegerToFloat [+ Sum | + Gelu + QuantizeLinear] -> the debx INT8 matmul ops on kernel family `family`."""
    if family not in FAMILIES or family == "ort":
        raise ValueError(f"no native matmul kernel family {family!r} (one of {', '.join(FAMILIES[1:])})")
    g = _Graph(model, base_dir)
    counts = dict.fromkeys(MATMUL_OPS, 0)
    _matmuls(g, counts, family)
    g.commit()
    _declare_domain(model, counts)
    return counts


def norm_candidates(model) -> int:
    """LayerNormalization nodes with a uint8 QuantizeLinear after them: what rewrite_norms looks at."""
    g = _Graph(model)
    return sum(1 for n in model.graph.node if _standard(n, "LayerNormalization")
               and any(g.quantize_to_u8(u) for u in g.consumers[n.output[0]]))


def rewrite_norms(model) -> dict[str, int]:
    """LayerNormalization -> QuantizeLinear [-> DequantizeLinear] -> debx::DebxLayerNormQuantize."""
    g = _Graph(model)
    counts = {NORM_OP: 0}
    _norms(g, counts)
    g.commit()
    _declare_domain(model, counts)
    return counts


def bf16_candidates(model) -> int:
    """debx attention nodes not yet switched to (or explicitly kept off) the bf16 mode."""
    return sum(1 for n in model.graph.node if (n.domain, n.op_type) == DEBX_ATTENTION.key
               and not any(a.name == BF16_ATTRIBUTE for a in n.attribute))


def switch_bf16(model, mode: str) -> dict[str, int]:
    """debx attention nodes -> their bf16 mode `mode` (a key of ATTENTION_MODES but float32: the bf16 attribute)."""
    counts = {BF16_ATTENTION: 0}
    _bf16_attention(_Graph(model), counts, mode)
    return counts

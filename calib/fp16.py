"""FP16 from measurement: run the FP32 model on the calibration batches with every intermediate exposed, and keep
in FP32 every node that touches a tensor FP16 cannot carry.

Rules (each kept node is reported with its reason):
  policy     op types FP16 is unsafe for by construction (debx.exporters.fp16.KEEP_FP32: LayerNormalization, whose
             variance overflows FP16 on large activations)
  overflow   a tensor whose largest |x| exceeds 65504 / margin (margin 4 by default: head room for inputs
             larger than any calibration row); the FP16-safe mask fill -65504 is exact in FP16 and not counted
  underflow  a tensor most of whose non-zero values (share >= underflow_share) lie below FP16's smallest normal
             number 2^-14 ~ 6.1e-5, where FP16 keeps few significant bits or flushes to zero
  weights    an initializer with |w| > 65504 (it would be clamped)
A tensor at risk keeps both its producer and its consumers in FP32 (ONNX Runtime's converter puts Casts at the
borders). After the conversion the FP16 model runs on the same batches; any tensor holding inf/NaN sends its
producer back to FP32 and the conversion is repeated (a few rounds at most).

Every converted model is first loaded by ONNX Runtime in a child process (`session_crash`): some mixes of FP32 and
FP16 regions crash ONNX Runtime's graph optimiser (a segmentation fault in session creation, seen with ORT 1.32 on
models whose activations exceed FP16's range in consecutive layers). Such a model is refused with one line
(FP16Failed) instead of killing the calibration, or a later user of the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    keep_op_types: tuple[str, ...] | None = None  # None: debx.exporters.fp16.KEEP_FP32
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


def tensor_stats(model, batches: list[dict[str, np.ndarray]], threads: int | None = None) -> dict[str, TensorStats]:
    """Statistics of every float node output of `model` (onnx.ModelProto) over `batches`."""
    from debx.runtimes.onnxruntime import session_for_model
    from debx.exporters.fp16 import expose_intermediates

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

    from debx.exporters.fp16 import KEEP_FP32

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
    """FP16 copy of `model` with plan.kept nodes and plan.keep_op_types in FP32, FP32 graph inputs/outputs
    (debx.exporters.fp16.convert_to_fp16, the conversion `debx export --fp16` uses)."""
    from debx.calib.ranges import quiet
    from debx.exporters.fp16 import convert_to_fp16

    with quiet():
        return convert_to_fp16(model, plan.keep_op_types, list(plan.kept))


def session_crash(model, folder: str | Path | None = None) -> str | None:
    """Create ONNX Runtime sessions for `model` and for its copy with every intermediate exposed (what
    tensor_stats runs) in a child process. None when both load (or fail with an ordinary Python error, which the
    caller meets again in-process); else a few words on how the child died (e.g. "SIGSEGV").

    folder: where to write the model for the child (default: the system's temporary folder)."""
    import signal
    import subprocess
    import sys
    import tempfile

    from debx.calib.ranges import save_model_copy
    from debx.exporters.fp16 import expose_intermediates

    code = ("import sys, onnx\n"
            "from debx.runtimes.onnxruntime import session_for_model\n"
            "for p in sys.argv[1:]:\n"
            "    session_for_model(onnx.load(p))\n")
    root = str(Path(__file__).resolve().parents[1])  # this tree's debx, calib and exporters
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix=".debx-fp16-probe-", dir=None if folder is None else str(folder)) as d:
        paths = [Path(d) / "fp16.onnx", Path(d) / "fp16-exposed.onnx"]
        save_model_copy(model, paths[0])
        save_model_copy(expose_intermediates(model), paths[1])
        res = subprocess.run([sys.executable, "-c", code, *map(str, paths)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    if res.returncode >= 0:
        return None
    try:
        return signal.Signals(-res.returncode).name
    except ValueError:
        return f"signal {-res.returncode}"


def make_fp16(model, batches: list[dict[str, np.ndarray]], cfg: FP16Config | None = None,
              threads: int | None = None, scratch: str | Path | None = None):
    """(FP16 onnx.ModelProto, FP16Plan, stats of the FP32 run): measure, plan, convert, re-check.

    scratch: a folder for the models the crash check writes (default: the system's temporary folder)."""
    cfg = cfg or FP16Config()
    from debx.exporters.fp16 import name_nodes

    work = type(model)()
    work.CopyFrom(model)
    name_nodes(work)
    stats = tensor_stats(work, batches, threads)
    bad = {k: s for k, s in stats.items() if s.nonfinite}
    if bad:
        name = next(iter(bad))
        raise FP16Failed(f"the FP32 model itself produces inf/NaN in {name} on the calibration data")
    plan = plan_fp16(work, stats, cfg)
    original = {n.name for n in work.graph.node}
    for _ in range(cfg.max_rounds + 1):
        half = convert(work, plan)
        crash = session_crash(half, scratch)
        if crash:
            import onnxruntime

            raise FP16Failed(
                f"ONNX Runtime {onnxruntime.__version__} crashes ({crash}) while loading the FP16 model, which keeps "
                f"{len(plan.kept)} nodes in FP32 ({_kept_summary(plan)}); this model's activations do not fit "
                "FP16: deploy it in FP32 or INT8")
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


def _kept_summary(plan: FP16Plan) -> str:
    """e.g. "5 by policy, 6 for overflow": how many nodes each rule keeps in FP32."""
    from collections import Counter

    counts = Counter(reason.split(":")[0] for reason in plan.kept.values())
    return ", ".join(f"{n} {'by policy' if rule == 'policy' else 'for ' + rule}" for rule, n in counts.items())


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

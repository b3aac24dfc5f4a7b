"""The graph rewrites ONNX Runtime sessions get, as named steps (in the manner of Polygraphy's loaders).

What runs is the file on disk plus exactly the steps listed here, applied in this order when a session opens
(debx.runtimes.onnxruntime.open_session) or ahead of time into a new file (`debx rewrite IN -o OUT`, `write()` here):

    int8-matmul         MatMulIntegerToFloat [+ Sum | + Gelu + QuantizeLinear] -> debx::DebxMatMulInt8[Add|GeluQuantize]
                        on the INT8 matmul kernel family chosen here (amx > avx512-vnni > avx-vnni > avx2 by CPUID;
                        DEBX_CPU_KERNELS forces one, DEBX_AMX=0 skips amx; "ort" keeps ONNX Runtime's own kernels:
                        the step is off)
    layernorm-quantize  LayerNormalization -> QuantizeLinear [-> DequantizeLinear] -> debx::DebxLayerNormQuantize
    attention-bf16      debx attention nodes of INT8 graphs -> their bf16 mixed-precision mode, on CPUs with AMX-BF16
                        (amx-bf16) or AVX-512 BF16 (avx512-bf16); it follows the matmul family (DEBX_AMX=0: no
                        amx-bf16; a forced family without AVX-512: off); DEBX_CPU_ATTENTION forces a mode
    attention-casts     FP16 debx attention nodes -> float32 casts around the native (float32) kernel
    reference-ops       custom attention nodes no native kernel runs (TensorRT's node; debx's where the native library
                        cannot be built, or DEBX_NATIVE_OPS=0) -> the NumPy references (onnxruntime-extensions ops)

The first three need the native library (debx.runtimes.native_ops) and an INT8 graph on the CPU provider. Each step
`finds` what it would change in a graph (nothing, once it has been applied: a rewritten file runs as it is) and says
whether it is `enabled` here and why (the choice an environment variable or the CPU made); `apply` changes the graph
in place and returns counts. `plan()` lists what would run; `apply()` runs it and returns `Applied` records, which the
runner's describe(), the eval report and `debx bench` show (summary()).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from debx.artifacts import (check_writable, file_digest, package_versions, publish, read_onnx, read_sidecar,
                            refuse_overwriting_inputs, save_onnx_model, sidecar_path, weights_bytes)
from debx.contract import DEBX_ATTENTION, INLINE_WEIGHTS_LIMIT
from debx.errors import ConfigError
from debx.runtimes import int8_cpu, native_ops

# ---------------------------------------------------------------------------------------------------------------------
# Where the session runs: what the steps' choices depend on
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """The machine and runtime a rewritten graph is for (what `enabled` looks at). Built by `here()`."""

    provider: str = "cpu"
    base_dir: str | None = None  # the folder of the graph's external weights (small tensors are read from there)
    _cache: dict = field(default_factory=dict, repr=False)

    def _once(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def native(self) -> bool:
        return self._once("native", native_ops.available)

    def native_reason(self) -> str:
        return native_ops.unavailable_reason()

    def family(self) -> tuple[str, str]:
        """The INT8 matmul kernel family and why (the environment variable that chose it, or the CPU)."""
        return self._once("family", _family_choice)

    def attention(self) -> tuple[str, str]:
        """The attention's mode in INT8 graphs (int8_cpu.ATTENTION_MODES) and why."""
        return self._once("attention", _attention_choice)


def here(provider: str = "cpu", base_dir: str | Path | None = None) -> Target:
    return Target(provider=provider, base_dir=None if base_dir is None else str(base_dir))


def _family_choice() -> tuple[str, str]:
    family = int8_cpu.kernel_family()  # raises ConfigError for a DEBX_CPU_KERNELS this machine cannot run
    forced = os.environ.get(int8_cpu.FAMILY_ENV, "").strip()
    if forced:
        return family, f"{int8_cpu.FAMILY_ENV}={forced}"
    amx_off = os.environ.get("DEBX_AMX", "1") == "0"
    if family == "ort":
        why = "no native INT8 family runs on this CPU" if int8_cpu.native() else "native ops unavailable"
        return family, ("DEBX_AMX=0; " if amx_off else "") + why
    return family, "DEBX_AMX=0, best other family on this CPU" if amx_off else "best on this CPU, by CPUID"


def _attention_choice() -> tuple[str, str]:
    mode = int8_cpu.attention_mode()  # raises ConfigError for a DEBX_CPU_ATTENTION this machine cannot run
    forced = os.environ.get(int8_cpu.ATTENTION_ENV, "").strip()
    if forced:
        return mode, f"{int8_cpu.ATTENTION_ENV}={forced}"
    amx_off = "DEBX_AMX=0, " if os.environ.get("DEBX_AMX", "1") == "0" else ""
    if mode == "amx-bf16":
        return mode, "AMX-BF16 on this CPU"
    if mode == "avx512-bf16":
        return mode, amx_off + "AVX-512 BF16 on this CPU"
    family = os.environ.get(int8_cpu.FAMILY_ENV, "").strip()
    if family and family not in ("amx", "avx512-vnni"):
        return mode, f"{int8_cpu.FAMILY_ENV}={family}"
    return mode, amx_off + "no AMX-BF16 or AVX-512 BF16 on this CPU"


# ---------------------------------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    does: str  # one line: what it changes
    finds: Callable  # (model, target) -> int: how many places it would change (0: nothing to do, or already applied)
    enabled: Callable  # (target) -> (bool, str): whether it runs here, and why (the choice made)
    apply: Callable  # (model, target) -> dict[str, int]: changes the model in place, returns counts

    def applies(self, model, target: Target) -> bool:
        return self.enabled(target)[0] and self.finds(model, target) > 0


def _int8_cpu(target: Target) -> tuple[bool, str]:
    """The native INT8 CPU steps' common condition: the CPU provider and the native library."""
    if target.provider != "cpu":
        return False, f"provider {target.provider}"
    if not target.native:
        return False, f"native ops unavailable: {target.native_reason()}"
    return True, ""


def _matmul_enabled(target: Target) -> tuple[bool, str]:
    ok, why = _int8_cpu(target)
    if not ok:
        return ok, why
    family, why = target.family()
    return family != "ort", f"family {family}: {why}"


def _int8_graph(finds: Callable) -> Callable:
    def wrapped(model, target):
        return finds(model, target) if int8_cpu.is_int8(model) else 0

    return wrapped


def _matmul_finds(model, target):
    return int8_cpu.matmul_candidates(model, target.base_dir)


def _matmul_apply(model, target):
    return int8_cpu.rewrite_matmuls(model, target.family()[0], target.base_dir)


def _norm_enabled(target: Target) -> tuple[bool, str]:
    ok, why = _int8_cpu(target)
    return ok, why or "native ops available"


def _bf16_enabled(target: Target) -> tuple[bool, str]:
    ok, why = _int8_cpu(target)
    if not ok:
        return ok, why
    mode, why = target.attention()
    return mode != "float32", f"mode {mode}: {why}"


def _bf16_apply(model, target: Target) -> dict[str, int]:
    return int8_cpu.switch_bf16(model, target.attention()[0])


def _native_enabled(target: Target) -> tuple[bool, str]:
    return (True, "native ops available") if target.native else (False, target.native_reason())


def _reference_enabled(target: Target) -> tuple[bool, str]:
    if target.native:
        return True, "TensorRT's attention node has no native CPU kernel"
    return True, f"native ops unavailable: {target.native_reason()}"


def _adapt_finds(how: str) -> Callable:
    def finds(model, target):
        from debx.runtimes.reference_ops import needs_adapting

        return sum(needs_adapting(model, n, target.native) == how for n in model.graph.node)

    return finds


def _adapt_apply(how: str, key: str) -> Callable:
    def apply(model, target):
        from debx.runtimes.reference_ops import adapt_in_place

        return {key: adapt_in_place(model, native=target.native, only=how)}

    return apply


def _model_only(fn: Callable) -> Callable:
    """A step function that needs only the model: (model, target) -> fn(model)."""
    return lambda model, target=None: fn(model)


STEPS: tuple[Step, ...] = (
    Step("int8-matmul", "MatMulIntegerToFloat [+ Sum | + Gelu + QuantizeLinear] -> debx's fused INT8 matmul ops",
         _int8_graph(_matmul_finds), _matmul_enabled, _matmul_apply),
    Step("layernorm-quantize", "LayerNormalization -> QuantizeLinear -> debx::DebxLayerNormQuantize (one pass)",
         _int8_graph(_model_only(int8_cpu.norm_candidates)), _norm_enabled, _model_only(int8_cpu.rewrite_norms)),
    Step("attention-bf16", "debx attention of INT8 graphs -> its bf16 mixed-precision mode",
         _int8_graph(_model_only(int8_cpu.bf16_candidates)), _bf16_enabled, _bf16_apply),
    Step("attention-casts", "FP16 debx attention -> float32 casts around the native kernel",
         _adapt_finds("casts"), _native_enabled, _adapt_apply("casts", f"{DEBX_ATTENTION.name}(casts)")),
    Step("reference-ops", "custom attention nodes -> the NumPy reference ops (onnxruntime-extensions)",
         _adapt_finds("reference"), _reference_enabled, _adapt_apply("reference", "reference nodes")),
)
NAMES = tuple(s.name for s in STEPS)


def step(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    raise ConfigError(f"unknown rewrite step {name!r} (steps: {', '.join(NAMES)})")


# ---------------------------------------------------------------------------------------------------------------------
# Planning and applying
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Applied:
    """One step that changed the graph: its name, what it made (op or node kind -> count) and the choice behind it."""

    step: str
    counts: dict[str, int]
    choice: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    run: list[Step]
    skipped: dict[str, str]  # step -> why it does not run here although the graph has something for it


def plan(model, target: Target, names: list[str] | tuple[str, ...] | None = None) -> Plan:
    """The steps that would change `model` for `target`, in registry order. names: only these (the `--steps` of
    `debx rewrite`); a named step must be enabled here (else ConfigError saying why)."""
    wanted = [step(n) for n in names] if names is not None else list(STEPS)
    run, skipped = [], {}
    for s in STEPS:
        if s not in wanted or not s.finds(model, target):
            continue
        ok, why = s.enabled(target)
        if ok:
            run.append(s)
        elif names is not None:
            raise ConfigError(f"rewrite step {s.name} cannot run here: {why}")
        else:
            skipped[s.name] = why
    return Plan(run, skipped)


def apply(steps: Plan | list[Step], model, target: Target) -> list[Applied]:
    """Run the steps on `model` in place; the steps that changed something, with their counts."""
    done = []
    for s in steps.run if isinstance(steps, Plan) else steps:
        counts = {k: v for k, v in s.apply(model, target).items() if v}
        if counts:
            done.append(Applied(s.name, counts, s.enabled(target)[1]))
    return done


def summary(described: dict) -> str | None:
    """One line for reports: the rewrite steps that ran when the runner opened the file (and those written into the
    file ahead of time, from its sidecar). `described`: a runner's describe() (keys rewrites, rewrites_skipped,
    rewritten_ahead); None for runners that do not rewrite (PyTorch, TensorRT)."""
    if "rewrites" not in described:
        return None
    ran = described.get("rewrites") or []
    parts = [f"{r['step']} (" + ", ".join(f"{k} ×{v}" for k, v in r["counts"].items()) + f"; {r['choice']})"
             for r in ran]
    line = "graph rewrites at load: " + ("; ".join(parts) if parts else "none (the file runs as written)")
    ahead = described.get("rewritten_ahead")
    if ahead:
        line += "; applied ahead of time (sidecar): " + ", ".join(r.get("step", "?") for r in ahead)
    skipped = described.get("rewrites_skipped") or {}
    if skipped:
        line += "; off: " + ", ".join(f"{k} ({v})" for k, v in skipped.items())
    return line


# ---------------------------------------------------------------------------------------------------------------------
# Ahead of time: `debx rewrite IN -o OUT`
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RewriteResult:
    output: Path
    sidecar: Path
    applied: list[Applied]
    skipped: dict[str, str]
    external_data: Path | None = None


def rewrite_file(source: str | Path, output: str | Path, steps: list[str] | tuple[str, ...] | None = None,
                 provider: str = "cpu") -> RewriteResult:
    """Write `source` with the rewrite steps applied (default: those the runner would apply on this machine; `steps`:
    only these, each of which must be enabled here) to `output`, with a sidecar (the input's, plus "rewrites": the
    steps with their counts and choices, and "rewritten_from"). Graph, weights and sidecar are committed as one unit.
    Opening `output` then runs it as it is: every step finds it already applied."""
    source, output = Path(source), Path(output)
    if output.is_dir() or str(output).endswith("/"):
        raise ConfigError(f"--output {output}: a folder; name the .onnx file to write")
    refuse_overwriting_inputs({"--output": output}, [source])
    check_writable(output)
    side_in = read_sidecar(source)
    model = read_onnx(source, load_external_data=True)
    target = here(provider)
    todo = plan(model, target, steps)
    applied = apply(todo, model, target)
    if not applied:
        off = "; ".join(f"{k}: {v}" for k, v in todo.skipped.items())
        raise ConfigError(f"{source}: no rewrite step changes it here ({off or 'it already runs as it is'})")
    out = output.resolve()
    large = weights_bytes(model) > INLINE_WEIGHTS_LIMIT
    with publish(out) as st:  # graph, weights (when large) and sidecar as one unit
        data_name = st.onnx_data_name() if large else None
        save_onnx_model(model, st.primary, data_name=data_name, copy=False)
        del model
        carried = {k: v for k, v in side_in.items() if k not in ("file", "external_data", "versions")}
        st.sidecar = {"format": side_in.get("format", "debx-onnx/1"), **carried, "file": out.name,
                      "external_data": data_name,
                      "rewrites": [a.to_dict() for a in applied],
                      "rewritten_from": {"file": str(source.resolve()), "digest": file_digest(source)},
                      "versions": package_versions()}
    return RewriteResult(out, sidecar_path(out), applied, dict(todo.skipped), out.with_name(data_name) if data_name else None)

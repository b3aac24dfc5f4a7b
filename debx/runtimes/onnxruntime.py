"""OnnxRuntimeRunner: an exported .onnx file in ONNX Runtime (CPU here; CUDA / TensorRT execution providers when
onnxruntime-gpu is installed). Graphs with custom attention nodes get them registered automatically: debx nodes run on
the native fused CPU kernel (debx.runtimes.native_ops, built on first use), TensorRT's node, and debx nodes where no
C++ compiler is available, on the NumPy references of debx.runtimes.reference_ops."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from debx.artifacts import Sidecar, external_data_problem, read_onnx, read_sidecar, weights_bytes
from debx.contract import DEBX_ATTENTION, INLINE_WEIGHTS_LIMIT
from debx.errors import ConfigError, MissingDependencyError, check_at_least
from debx.runtimes import int8_cpu, native_ops, rewrites
from debx.runtimes.base import Runner
from debx.runtimes.native_ops import library_path

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
IN_MEMORY_LIMIT = INLINE_WEIGHTS_LIMIT  # the writers' rule (debx.contract): weights inside the file up to this
INT8_STEPS = ("int8-matmul", "layernorm-quantize", "attention-bf16")  # optional: a too large file runs without
# ONNX Runtime >= 1.21 (the pyproject floor): where the external data of a graph loaded from bytes lies
EXTERNAL_FOLDER = "session.model_external_initializers_file_folder_path"


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("ONNX Runtime is not installed: pip install 'debx[onnx]'") from None
    return onnxruntime


def session_options(threads: int | None = None, custom_ops: bool = False, graph=None):
    """threads: intra-op threads (default: $OMP_NUM_THREADS when set, else ONNX Runtime's choice). custom_ops:
    register debx's op libraries, the native one and the NumPy references (onnxruntime-extensions Python ops).
    graph: the onnx.ModelProto the session will run; given, the references are registered only when it has nodes
    that run on them: onnxruntime-extensions imports transformers and PyTorch (about 230 MB resident), which a graph
    on the native ops never needs."""
    check_at_least("--threads", threads)
    ort = _ort()
    so = ort.SessionOptions()
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if custom_ops:
        from debx.runtimes.reference_ops import ORT_DOMAIN, register

        if graph is None or any(n.domain == ORT_DOMAIN for n in graph.graph.node):
            so.register_custom_ops_library(register())
        if native_ops_enabled():
            so.register_custom_ops_library(str(library_path()))
    return so


_warned_native = False


def native_ops_enabled() -> bool:
    """Whether debx nodes run on the native kernel (else on the NumPy reference, with a one-time warning)."""
    global _warned_native
    if native_ops.available():
        return True
    if not _warned_native:
        import warnings

        warnings.warn(f"debx attention nodes run on the slow NumPy reference: {native_ops.unavailable_reason()}",
                      stacklevel=2)
        _warned_native = True
    return False


def check_provider_name(provider: str | None) -> str:
    provider = (provider or "cpu").strip().lower()
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    return provider


def providers_for(provider: str, available: list[str] | None = None) -> list[str]:
    """The execution providers to ask ONNX Runtime for, the wanted one first. available: what this ONNX Runtime
    offers (default: ort.get_available_providers())."""
    provider = check_provider_name(provider)
    if available is None:
        available = _ort().get_available_providers()
    wanted = PROVIDERS[provider][0]
    if wanted not in available:
        raise MissingDependencyError(
            f"--provider {provider} needs {wanted}, which this ONNX Runtime lacks (available: {', '.join(available)}); "
            "install onnxruntime-gpu (pip install 'debx[gpu]') on a machine with an NVIDIA GPU")
    return [p for p in PROVIDERS[provider] if p in available]


def check_session_provider(session, provider: str, path: str | Path | None = None) -> None:
    """ONNX Runtime falls back to the CPU, with a warning only, when a GPU provider fails to start (no driver,
    a missing CUDA/cuDNN/TensorRT library): refuse a session that does not run on the provider asked for."""
    wanted = PROVIDERS[check_provider_name(provider)][0]
    got = list(session.get_providers())
    if wanted not in got:
        where = f"{Path(path).name}: " if path is not None else ""
        raise MissingDependencyError(
            f"{where}ONNX Runtime could not start {wanted} (the session fell back to {', '.join(got) or 'nothing'}); "
            "check the NVIDIA driver and the CUDA/cuDNN (and TensorRT) libraries onnxruntime-gpu needs")


def session_for_model(model, provider: str = "cpu", threads: int | None = None, model_dir: str | Path | None = None):
    """An InferenceSession for an in-memory onnx.ModelProto; custom attention nodes run on the references.

    model_dir: where the model's external data files are (when its weights are not inside the proto).
    """
    from debx.runtimes.reference_ops import adapt_for_ort, custom_nodes

    ort = _ort()
    if custom_nodes(model):
        model = adapt_for_ort(model, native=native_ops_enabled())  # a copy: the caller's model is left as it is
    so = session_options(threads, custom_ops=uses_custom_ops(model), graph=model)
    if model_dir is not None:  # external data is read from beside the model file
        so.add_session_config_entry(EXTERNAL_FOLDER, str(Path(model_dir).resolve()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=providers_for(provider))


def _uses_external_data(model) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


def _fits_in_memory(path: Path, graph) -> bool:
    """Whether a rewritten graph can be handed to ONNX Runtime as one protobuf (else the file runs as written): the
    weights inside the file are within the limit every debx writer keeps inline, which leaves the graph (and what the
    rewrite adds) its room under protobuf's 2 GiB. Weights in an external data file stay there (only the graph is
    rewritten and handed over; ONNX Runtime reads the weights from beside the file)."""
    if weights_bytes(graph) <= IN_MEMORY_LIMIT:
        return True
    import warnings

    warnings.warn(f"{path.name}: too large for debx's in-memory graph rewrites; running it as written "
                  "(ONNX Runtime's own INT8 kernels)", stacklevel=3)
    return False


def uses_custom_ops(graph) -> bool:
    """Whether a session for `graph` needs debx's op libraries: nodes of the debx domain (the native library) or of
    onnxruntime-extensions' (the NumPy references), or custom attention nodes still to be adapted."""
    from debx.runtimes.reference_ops import CUSTOM_NODES, ORT_DOMAIN

    return any(n.domain in (DEBX_ATTENTION.domain, ORT_DOMAIN) or (n.domain, n.op_type) in CUSTOM_NODES
               for n in graph.graph.node)


# ---------------------------------------------------------------------------------------------------------------------
# Reading a graph without its inline weights (what deciding the rewrite steps needs)
# ---------------------------------------------------------------------------------------------------------------------

_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9  # field numbers in onnx.proto
_LIGHT_MIN = 1 << 20  # initializers of at least this many bytes are read without their data


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf, start: int, end: int):
    """(field number, wire type, start of the field's bytes, start of its payload, end) for each field in buf[start:end]."""
    pos = start
    while pos < end:
        begin = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            payload = begin
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == 2:
            length, payload = _varint(buf, pos)
            pos = payload + length
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
        if pos > end:
            raise ValueError("truncated")
        yield number, wire, begin, payload, pos


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def read_graph(path: Path):
    """The graph of an ONNX file with its large inline initializers (1 MiB or more) turned into references to where
    their data lies in the file itself (external data: location = the file, offset, length). The file is mapped, not
    read: the weights' pages are never touched, so deciding and applying the rewrite steps costs megabytes, not the
    model's size twice (onnx.load reads the file, then parses it), and ONNX Runtime, given the rewritten graph as
    bytes and the file's folder (EXTERNAL_FOLDER), reads the weights from the file as it would open it directly. A file
    this reader does not understand is read by debx.artifacts.read_onnx, which also gives the one-line errors."""
    import mmap

    import onnx

    try:
        spans: dict[int, tuple[int, int]] = {}  # index among the initializers -> (offset, length) of its data
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            out, graph = bytearray(), bytearray()
            for number, wire, begin, payload, end in _fields(buf, 0, len(buf)):
                if number != _MODEL_GRAPH or wire != 2:
                    out += buf[begin:end]
                    continue
                n_init = 0
                for g_number, g_wire, g_begin, g_payload, g_end in _fields(buf, payload, end):
                    big = g_number == _GRAPH_INITIALIZER and g_wire == 2 and g_end - g_payload >= _LIGHT_MIN
                    if g_number == _GRAPH_INITIALIZER:
                        n_init += 1
                    if not big:
                        graph += buf[g_begin:g_end]
                        continue
                    tensor = bytearray()
                    for t_number, t_wire, t_begin, t_payload, t_end in _fields(buf, g_payload, g_end):
                        if t_number == _TENSOR_RAW_DATA and t_wire == 2:
                            spans[n_init - 1] = (t_payload, t_end - t_payload)
                        else:
                            tensor += buf[t_begin:t_end]
                    graph += _len_field(_GRAPH_INITIALIZER, bytes(tensor))
                out += _len_field(_MODEL_GRAPH, bytes(graph))
        model = onnx.ModelProto()
        model.ParseFromString(bytes(out))
        if not model.graph.node:
            raise ValueError("no nodes")
        for i, (offset, length) in spans.items():
            t = model.graph.initializer[i]
            t.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", path.name), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
    except Exception:  # not a file this reader understands (or not ONNX): the full reader, and its errors
        return read_onnx(path)
    problem = external_data_problem(path, model)
    if problem:
        raise ConfigError(problem)
    return model


def _check_native_ops(path: Path, family: str | None, attention: str | None = None) -> None:
    """A graph written with debx's native INT8 ops runs only where the native library, and the matmul kernel family
    its nodes name, do: say so in one line rather than as ONNX Runtime's kernel-creation error."""
    if not native_ops.available():
        raise ConfigError(f"{path.name}: has debx's native INT8 CPU ops (written by `debx rewrite`), and the native "
                          f"library is unavailable here ({native_ops.unavailable_reason()}); run the file it was "
                          "rewritten from")
    if family not in (None, "best") and not int8_cpu.family_available(family):
        raise ConfigError(f"{path.name}: was rewritten for the {family} INT8 kernels, which this CPU cannot run; run "
                          "the file it was rewritten from, or `debx rewrite` that file on this machine")
    if attention is not None and not int8_cpu.attention_mode_available(attention):
        raise ConfigError(f"{path.name}: was rewritten for the {attention} attention, which this CPU cannot run; run "
                          "the file it was rewritten from, or `debx rewrite` that file on this machine")


def _reads_in_place(graph, path: Path) -> bool:
    """Whether read_graph left weights of `path` in the file (then the graph is handed over with references to them:
    ONNX Runtime maps them instead of copying them out of a parsed file)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    return any(uses_external_data(t) and ExternalDataInfo(t).location == path.name for t in graph.graph.initializer)


def open_session(path: str | Path, provider: str = "cpu", threads: int | None = None, info: dict | None = None):
    """An InferenceSession for a .onnx file: the file, plus the rewrite steps of debx.runtimes.rewrites that apply
    here (none for a plain file, or one `debx rewrite` wrote: it runs as it is, with no copy in memory).

    On the CPU the graph is read without its large inline weights (read_graph): they stay in the file, and ONNX Runtime
    gets the graph (rewritten in place, when steps apply) as bytes with references to them, which it maps rather than
    copies; weights in an external data file stay there too. Nothing holds the model twice.

    info: when given, receives "rewrites" = the steps that ran (debx.runtimes.rewrites.Applied.to_dict(), [] when
    none), "rewrites_skipped" = step -> why it did not run although the graph had something for it, and for INT8
    graphs on the CPU "int8_kernels" = the matmul kernel family that runs them (amx, avx512-vnni, avx-vnni, avx2,
    or ort: ONNX Runtime's own), "attention_kernels" = the mode of debx's attention op when the graph has it
    (amx-bf16, avx512-bf16, avx512-bf16-emulated, float32) and "int8_cpu" = the debx native INT8 CPU ops in the graph
    that runs (op -> count)."""
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        read_onnx(path)  # the one-line error
    # on the CPU, large weights stay in the file (external data pointing into it, read in place by ONNX Runtime)
    graph = read_graph(path) if provider == "cpu" else read_onnx(path)
    target = rewrites.here(provider, base_dir=path.parent)
    plan = rewrites.plan(graph, target)
    if any(s.name in INT8_STEPS for s in plan.run) and not _fits_in_memory(path, graph):
        plan = rewrites.Plan([s for s in plan.run if s.name not in INT8_STEPS],
                             {**plan.skipped, **{s.name: "too large" for s in plan.run if s.name in INT8_STEPS}})
    applied = rewrites.apply(plan, graph, target)
    ops, family = int8_cpu.native_ops_in(graph)
    attention = int8_cpu.attention_mode_in(graph)
    if ops:  # rewritten here, or by `debx rewrite`: the native ops (and kernel family, attention mode) must run here
        _check_native_ops(path, family, attention)
    if info is not None:
        info["rewrites"] = [a.to_dict() for a in applied]
        info["rewrites_skipped"] = dict(plan.skipped)
        if provider == "cpu" and int8_cpu.is_int8(graph):
            info["int8_kernels"] = family or "ort"
            if attention is not None:
                info["attention_kernels"] = attention
            if ops:
                info["int8_cpu"] = ops
    so = session_options(threads, custom_ops=uses_custom_ops(graph), graph=graph)
    providers = providers_for(provider)
    if not applied and not _reads_in_place(graph, path):
        del graph
        return ort.InferenceSession(str(path), so, providers=providers)  # the file as it is
    if _uses_external_data(graph):
        so.add_session_config_entry(EXTERNAL_FOLDER, str(path.parent.resolve()))
    data = graph.SerializeToString()
    del graph  # the one copy ONNX Runtime gets: the parsed graph is gone before it parses
    return ort.InferenceSession(data, so, providers=providers)


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: str | Path, provider: str | None = None, threads: int | None = None) -> None:
        """provider: cpu (default), cuda or tensorrt (the last two need onnxruntime-gpu)."""
        super().__init__()
        check_at_least("--threads", threads)
        self.path = Path(path)
        self.provider = check_provider_name(provider)
        self.threads = threads
        self.session = None
        self.kernels: dict = {}

    def activate_impl(self) -> None:
        self.kernels = {}
        self.session = open_session(self.path, self.provider, self.threads, info=self.kernels)
        check_session_provider(self.session, self.provider, self.path)

    def deactivate_impl(self) -> None:
        self.session = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ConfigError(f"{self.path.name}: missing inputs {', '.join(missing)}")
        args = {n: np.ascontiguousarray(feeds[n], dtype=np.int64) for n in self.input_names}
        values = self.session.run(None, args)
        return {n: np.asarray(v, dtype=np.float32) for n, v in zip(self.output_names, values)}

    def sidecar(self) -> Sidecar:
        """The artifact's sidecar (<file>.json); empty when there is none."""
        return read_sidecar(self.path)

    def describe(self) -> dict:
        ort = _ort()
        meta = self.sidecar()
        provider = self.session.get_providers()[0] if self.session else PROVIDERS[self.provider][0]
        return {"runner": self.name, "backend": f"onnxruntime {ort.__version__}", "file": str(self.path),
                "provider": provider, "device": "cpu" if provider == "CPUExecutionProvider" else "cuda",
                "precision": meta.get("precision"), "attention": meta.get("attention"),
                "native_int8_ops": {k: v for k, v in self.kernels.get("int8_cpu", {}).items() if v} or None,
                "int8_kernels": self.kernels.get("int8_kernels"),
                "attention_kernels": self.kernels.get("attention_kernels"),
                # what ran the debx nodes (the native library, with its path, or the NumPy reference)
                "debx_ops": native_ops.in_sessions() if self.session is not None and (
                    meta.get("attention") == "debx" or self.kernels.get("int8_cpu") or meta.get("rewrites")) else None,
                # the graph rewrites that ran as the session opened (debx.runtimes.rewrites), and those the file's
                # sidecar says `debx rewrite` applied ahead of time
                "rewrites": self.kernels.get("rewrites", []), "rewrites_skipped": self.kernels.get("rewrites_skipped", {}),
                "rewritten_ahead": meta.get("rewrites")}

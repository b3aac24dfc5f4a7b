"""OnnxRuntimeRunner: an exported .onnx file in ONNX Runtime (CPU here; CUDA / TensorRT execution providers when
onnxruntime-gpu is installed). Graphs with custom attention nodes get them registered automatically: debx nodes run on
the native fused CPU kernel (debx.runtimes.native_ops, built on first use), TensorRT's node, and debx nodes where no
C++ compiler is available, on the NumPy references of debx.runtimes.reference_ops."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from debx.artifacts import read_onnx, read_sidecar, weights_bytes
from debx.contract import INLINE_WEIGHTS_LIMIT
from debx.errors import ConfigError, MissingDependencyError, check_at_least
from debx.runtimes import int8_cpu, native_ops
from debx.runtimes.base import Runner
from debx.runtimes.native_ops import library_path

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError("ONNX Runtime is not installed: pip install 'debx[onnx]'") from None
    return onnxruntime


def session_options(threads: int | None = None, custom_ops: bool = False):
    """threads: intra-op threads (default: $OMP_NUM_THREADS when set, else ONNX Runtime's choice)."""
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
        from debx.runtimes.reference_ops import register

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
    import onnx

    from debx.runtimes.reference_ops import adapt_for_ort, custom_nodes

    ort = _ort()
    custom = bool(custom_nodes(model))
    if custom:
        model = adapt_for_ort(model, native=native_ops_enabled())
    native_int8 = any(n.domain == "debx" and n.op_type in int8_cpu.OPS for n in model.graph.node)
    so = session_options(threads, custom_ops=custom or native_int8)
    providers = providers_for(provider)
    if model_dir is None:
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    # external data is resolved relative to the model file: write the graph next to it for the session to read
    fd, tmp = tempfile.mkstemp(prefix=".debx-ort-", suffix=".onnx", dir=str(model_dir))
    os.close(fd)
    try:
        onnx.save_model(model, tmp)
        return ort.InferenceSession(tmp, so, providers=providers)
    finally:
        os.unlink(tmp)


def _uses_external_data(model) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


IN_MEMORY_LIMIT = INLINE_WEIGHTS_LIMIT  # the writers' rule (debx.contract): weights inside the file up to this


def _fits_in_memory(path: Path, graph) -> bool:
    """Whether a rewritten copy can be handed to ONNX Runtime as one protobuf (else the file runs as written): the
    weights are inside the file and within the limit every debx writer keeps inline, which leaves the graph (and what
    the rewrite adds) its room under protobuf's 2 GiB. A file debx wrote inline is rewritten; one it wrote with an
    external data file is not."""
    if not _uses_external_data(graph) and weights_bytes(graph) <= IN_MEMORY_LIMIT:
        return True
    import warnings

    warnings.warn(f"{path.name}: too large for debx's in-memory INT8 rewrite; running it as written "
                  "(ONNX Runtime's own INT8 kernels)", stacklevel=3)
    return False


def open_session(path: str | Path, provider: str = "cpu", threads: int | None = None, info: dict | None = None):
    """An InferenceSession for a .onnx file (plain when it has only standard ops).

    info: when given, receives "int8_cpu" = the counts of debx.runtimes.int8_cpu.rewrite when the INT8 graph was
    moved onto debx's native CPU ops (absent otherwise), and for INT8 graphs on the CPU "int8_kernels" = the matmul
    kernel family that runs them (amx, avx512-vnni, or ort: ONNX Runtime's own)."""
    from debx.runtimes.reference_ops import custom_nodes, runs_natively_as_is

    ort = _ort()
    path = Path(path)
    graph = read_onnx(path)  # one line for a missing, truncated or foreign file, or missing external data
    if provider == "cpu" and int8_cpu.wants(graph) and _fits_in_memory(path, graph):
        # INT8 graphs onto debx's native CPU ops, rewritten in memory (the file keeps the standard ops). The weights
        # are inside the file (_fits_in_memory), so `graph` holds them; a rewrite that finds nothing changes nothing.
        family = int8_cpu.kernel_family()
        counts = int8_cpu.rewrite(graph, family=family)
        if any(counts.values()):
            if info is not None:
                info["int8_cpu"] = counts
                info["int8_kernels"] = family if any(counts[op] for op in int8_cpu.MATMUL_OPS) else "ort"
            return session_for_model(graph, provider, threads)
    if info is not None and provider == "cpu" and int8_cpu.is_int8(graph):
        info["int8_kernels"] = "ort"
    if not custom_nodes(graph):
        return ort.InferenceSession(str(path), session_options(threads), providers=providers_for(provider))
    if native_ops_enabled() and all(runs_natively_as_is(graph, n) for n in custom_nodes(graph)):
        # the file runs as it is: no in-memory copy
        return ort.InferenceSession(str(path), session_options(threads, custom_ops=True),
                                    providers=providers_for(provider))
    return session_for_model(graph, provider, threads, model_dir=path.parent if _uses_external_data(graph) else None)


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

    def sidecar(self) -> dict:
        """The artifact's sidecar (<file>.json) when there is one."""
        return read_sidecar(self.path)

    def describe(self) -> dict:
        ort = _ort()
        meta = self.sidecar()
        provider = self.session.get_providers()[0] if self.session else PROVIDERS[self.provider][0]
        return {"runner": self.name, "backend": f"onnxruntime {ort.__version__}", "file": str(self.path),
                "provider": provider, "device": "cpu" if provider == "CPUExecutionProvider" else "cuda",
                "precision": meta.get("precision"), "attention": meta.get("attention"),
                "native_int8_ops": {k: v for k, v in self.kernels.get("int8_cpu", {}).items() if v} or None,
                "int8_kernels": self.kernels.get("int8_kernels")}

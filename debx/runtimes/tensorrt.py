"""TensorRTRunner: a plan built by `debx build`, run with TensorRT's Python API on an NVIDIA GPU.

Same feeds and outputs as the other runners (int64 input_ids / attention_mask / token_type_ids in, float32 NumPy
out). Device memory and the CUDA stream come from PyTorch (a CUDA build); every infer() is CUDA-synchronised and
records its GPU time (CUDA events) in `last_latency_ms` for `debx bench`. Plugin libraries are loaded before the
plan is deserialized: --plugins, else the plan sidecar's list, else $DEBX_PLUGINS.

Without TensorRT or without a GPU, activate() raises MissingDependencyError saying what is missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from debx.errors import ConfigError, MissingDependencyError
from debx.artifacts import Sidecar, read_sidecar, sidecar_path
from debx.runtimes.base import Runner

NO_TORCH_CUDA = ("no CUDA GPU visible to PyTorch: the TensorRT runner needs an NVIDIA GPU, its driver and a CUDA "
                 "build of torch (pip install torch from the CUDA index)")


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: str | Path, plugins: Sequence[str | Path] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.plugins = [Path(p) for p in plugins or []]
        self.last_latency_ms: float | None = None
        self._trt = self._torch = None
        self._engine = self._context = self._stream = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    # -- helpers -------------------------------------------------------------------------------------------------
    def sidecar(self) -> Sidecar:
        """The artifact's sidecar (<file>.json); empty when there is none."""
        return read_sidecar(self.path)

    def plugin_libraries(self) -> list[Path]:
        if self.plugins:
            return self.plugins
        listed = [Path(p) for p in self.sidecar().get("plugins", [])]
        if listed:
            return listed
        return [Path(p) for p in os.environ.get("DEBX_PLUGINS", "").split(os.pathsep) if p]

    def _torch_dtype(self, trt_dtype):
        trt, torch = self._trt, self._torch
        table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
                 trt.DataType.INT64: torch.int64, trt.DataType.BOOL: torch.bool}
        if hasattr(trt.DataType, "BF16"):
            table[trt.DataType.BF16] = torch.bfloat16
        if trt_dtype not in table:
            raise ConfigError(f"{self.path.name}: tensor type {trt_dtype} is not supported by the runner")
        return table[trt_dtype]

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        from debx.engine import import_tensorrt, load_plugins, make_logger

        if not self.path.is_file():
            raise ConfigError(f"{self.path}: no such TensorRT plan")
        trt = import_tensorrt()
        try:
            import torch
        except ImportError:
            raise MissingDependencyError(NO_TORCH_CUDA) from None
        if not torch.cuda.is_available():
            raise MissingDependencyError(NO_TORCH_CUDA)
        self._trt, self._torch = trt, torch
        logger = make_logger(trt)
        runtime = trt.Runtime(logger)
        if runtime is None:
            raise MissingDependencyError("TensorRT cannot create a runtime: no usable CUDA GPU")
        for lib in self.plugin_libraries():
            if not lib.is_file():
                raise ConfigError(f"plugin library {lib}: no such file")
        load_plugins(trt, runtime.get_plugin_registry(), logger, self.plugin_libraries())
        engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            reason = logger.errors[-1] if logger.errors else "built by another TensorRT version or for another GPU?"
            raise ConfigError(f"{self.path}: cannot deserialize the plan ({reason})")
        self._runtime, self._engine = runtime, engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def deactivate_impl(self) -> None:
        self._context = self._engine = self._runtime = self._stream = None

    @property
    def input_names(self) -> list[str]:
        if self._engine is None:
            return list(self.sidecar().get("inputs", []))
        return list(self._inputs)

    # -- inference -----------------------------------------------------------------------------------------------
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, ctx, engine = self._torch, self._context, self._engine
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise ConfigError(f"{self.path.name}: missing inputs {', '.join(missing)}")
        keep = []  # device tensors must outlive the launch
        for name in self._inputs:
            host = np.ascontiguousarray(feeds[name])
            dev = torch.from_numpy(host).to(device="cuda", dtype=self._torch_dtype(engine.get_tensor_dtype(name)))
            if not ctx.set_input_shape(name, tuple(host.shape)):
                raise ConfigError(f"{self.path.name}: input {name} shape {tuple(host.shape)} is outside the plan's "
                                  f"optimization profile (see {sidecar_path(self.path).name})")
            ctx.set_tensor_address(name, dev.data_ptr())
            keep.append(dev)
        outputs = {}
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._torch_dtype(engine.get_tensor_dtype(name)), device="cuda")
            ctx.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.current_stream().synchronize()  # inputs copied before the engine reads them
        start.record(self._stream)
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise ConfigError(f"{self.path.name}: TensorRT execution failed")
        end.record(self._stream)
        self._stream.synchronize()
        self.last_latency_ms = float(start.elapsed_time(end))
        return {name: out.float().cpu().numpy() for name, out in outputs.items()}

    def describe(self) -> dict:
        meta = self.sidecar()
        version = getattr(self._trt, "__version__", None) or (meta.get("versions") or {}).get("tensorrt")
        return {"runner": self.name, "backend": f"tensorrt {version}" if version else "tensorrt",
                "file": str(self.path), "precision": meta.get("precision"), "strongly_typed": meta.get("strongly_typed"),
                "plugins": [str(p) for p in self.plugin_libraries()], "synchronized": True}

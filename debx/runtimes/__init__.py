"""Runtimes: one Runner per backend (see base.py), registered here and imported lazily.

    RUNNERS      backend name -> "module:Class"
    runner_for   pick a backend from what the user points at: a checkpoint folder (torch), a .onnx file
                 (onnxruntime) or a .plan/.engine file (tensorrt)
    HEAD_OUTPUTS the output each model head produces, by name (the same in every backend)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from debx.contract import HEAD_OUTPUTS  # noqa: F401  (head -> (output name, token-level), debx.contract's; re-exported)
from debx.errors import ConfigError

RUNNERS: dict[str, str] = {
    "torch": "debx.runtimes.torch:TorchRunner",
    "onnxruntime": "debx.runtimes.onnxruntime:OnnxRuntimeRunner",
    "tensorrt": "debx.runtimes.tensorrt:TensorRTRunner",
}

SUFFIX_BACKENDS = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt"}


def runner_class(backend: str):
    """The Runner class of a backend name (imports its module now)."""
    if backend not in RUNNERS:
        raise ConfigError(f"unknown runtime {backend!r}: choose one of {', '.join(RUNNERS)}")
    module, cls = RUNNERS[backend].split(":")
    return getattr(importlib.import_module(module), cls)


def backend_for(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return "torch"
    if path.suffix.lower() in SUFFIX_BACKENDS:
        return SUFFIX_BACKENDS[path.suffix.lower()]
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    raise ConfigError(f"{path}: cannot tell the runtime (expected a checkpoint folder, a .onnx file or a "
                      f".plan/.engine file)")


def runner_for(path_or_ckpt, *, where_taken: tuple[str, ...] = (), **opts):
    """A (not yet activated) runner for a checkpoint folder, a .onnx file or a TensorRT plan.

    opts go to the runner; unset ones (None, empty) are dropped, and a set option the backend does not take (e.g.
    provider="cuda" for a checkpoint folder) is a ConfigError, except the options named in `where_taken`, which
    apply where the backend takes them (e.g. `debx bench --threads` for every engine that has CPU threads: a
    TensorRT plan runs on the GPU and has none).
    """
    import inspect
    import os

    target = path_or_ckpt
    if not isinstance(path_or_ckpt, (str, os.PathLike)):  # a debx.checkpoint.Checkpoint (imports PyTorch: not for a file)
        from debx.checkpoint import Checkpoint

        target = path_or_ckpt.path if isinstance(path_or_ckpt, Checkpoint) else path_or_ckpt
    backend = backend_for(target)
    cls = runner_class(backend)
    opts = {k: v for k, v in opts.items() if v is not None and not (isinstance(v, (list, tuple)) and not v)}
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        opts = {k: v for k, v in opts.items() if k in params or k not in where_taken}
        unknown = sorted(k for k in opts if k not in params)
        if unknown:
            raise ConfigError(f"option(s) {', '.join(unknown)} do not apply to the {backend} runtime ({target})")
    return cls(target, **opts)

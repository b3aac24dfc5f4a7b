"""debx: DeBERTa from PyTorch to fast, quantized deployments whose accuracy is proven.

The Python API (debx/api.py; each call imports its stack only when used, so `import debx` stays cheap):

    from debx import export, calibrate, evaluate, load_runner, ops_library

    export(checkpoint, output, **ExportConfig fields)           -> ExportResult
    calibrate(model, output, task, **CalibrateConfig fields)     -> CalibrateResult
    evaluate(task, engine, **EvalConfig fields)                  -> EvalResult
    load_runner(path, **runner options)                          -> Model (predict(texts), infer(feeds))
    ops_library()                                                -> path of libdebx_ort_ops.so
"""

__version__ = "0.1.0"

# debx.exporters and debx.calib: installed, they are folders inside this package (pyproject.toml maps them there);
# in a source checkout they stay the top-level folders exporters/ and calib/ beside debx/ (the repository's layout),
# reached by searching the checkout root for this package's subpackages after debx/ itself. Only those two are
# imported that way (scripts/import_graph.py maps the folders to these names).
from pathlib import Path as _Path

_here = _Path(__file__).resolve().parent
if not (_here / "exporters").is_dir() and (_here.parent / "exporters" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821  (the package's own __path__)
del _Path, _here

__all__ = ["__version__", "export", "calibrate", "evaluate", "load_runner", "ops_library"]

_API = ("export", "calibrate", "load_runner", "ops_library", "Model")


def __getattr__(name: str):
    # `evaluate` is also the module debx.evaluate: that module is callable (it forwards to debx.api.evaluate), so
    # `from debx import evaluate` works whether or not the module was imported before
    import importlib

    if name == "evaluate":
        return importlib.import_module("debx.evaluate")
    if name in _API:  # by name: the API sits above every other layer (scripts/import_graph.py)
        return getattr(importlib.import_module("debx.api"), name)
    raise AttributeError(f"module 'debx' has no attribute {name!r}")

"""The Python API: the commands' steps as functions, `from debx import export, calibrate, evaluate, load_runner`.

Each function is a thin wrapper around the dataclass config + function the CLI calls (keyword arguments are the
config's fields, so everything a flag sets can be set here), and imports its stack only when called: `import debx`
loads neither torch nor onnx. Errors a user can cause raise `debx.errors.DebxError` subclasses (ConfigError,
CheckpointError, DataError, MissingDependencyError; GateFailed), with the same one-line messages the CLI prints.

    from debx import export, calibrate, evaluate, load_runner

    onnx = export("runs/sst2", "runs/sst2.onnx", attention="debx")          # ExportConfig fields as keywords
    int8 = calibrate(onnx.output, "runs/sst2.int8.onnx", task="sst2", target="ort")
    result = evaluate("sst2", int8.output)                                    # EvalConfig fields as keywords
    print(result.metrics)
    with load_runner(int8.output) as model:                                   # a debx.runtimes Runner
        print(model.predict(["a gripping, funny film", "dull and lifeless"]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from debx.errors import ConfigError
from debx.runtimes import native_ops, runner_for
from debx.verbosity import info, say


def export(checkpoint: str | Path, output: str | Path, **options):
    """Export a checkpoint folder to ONNX, validated against PyTorch (debx.exporters.export.ExportConfig fields as
    keywords: attention="onnx|fast|trt|debx", fp16, opset, optimum_axes, ...). `output`: a .onnx file, or a folder
    ("dir/" or an existing folder) that Optimum's ORTModel*.from_pretrained loads. Returns an ExportResult
    (.output, .sidecar, .metadata, .report); raises ValidationFailed (no file written) when validation fails."""
    from debx.exporters.export import ExportConfig, export_onnx

    return export_onnx(ExportConfig(checkpoint=Path(checkpoint), output=output, **options))


def calibrate(model: str | Path, output: str | Path, task: str, **options):
    """Quantize an FP32 ONNX export to INT8 (or FP16) with calibration data from `task` (debx.calib.calibrate.
    CalibrateConfig fields as keywords: precision, method, target="trt|ort", num_samples, auto, ...). With auto=True,
    `gate` (a debx.gate.GateConfig or its mode: paper, relative, none) and `tolerance` set the gate the candidates
    must pass, as `debx calibrate --auto --gate --tolerance`. Returns a CalibrateResult (.output, .sidecar, .ranges,
    .metadata); progress lines go to stderr (silenced by DEBX_VERBOSITY=-1, the CLI's -q)."""
    from debx.calib.calibrate import CalibrateConfig
    from debx.calib.calibrate import calibrate as run
    from debx.gate import GateConfig

    gate, tolerance = options.pop("gate", None), options.pop("tolerance", None)
    gate_cfg = gate if isinstance(gate, GateConfig) else GateConfig(mode=gate or "paper", tolerance=tolerance)
    cfg = CalibrateConfig(model=Path(model), output=Path(output), task=task, **options)
    evaluator = None
    if cfg.auto:  # the evaluator is built up here and handed down (calib/ does not import evaluation)
        from debx.evaluate import candidate_gate

        evaluator = candidate_gate(cfg, gate_cfg)
    return run(cfg, log=say, evaluator=evaluator)


def evaluate(task: str | Path, engine: str | Path, **options):
    """Score `engine` (a checkpoint folder, a .onnx file or a TensorRT plan) on a task's split (debx.evaluate.
    EvalConfig fields as keywords: split, limit, batch_size, provider, ...). Returns an EvalResult (.metrics,
    .predictions, .labels, .guids, .report). Progress is off unless progress=True."""
    from debx.evaluate import evaluate_task

    return evaluate_task(task, engine, **options)


class Model:
    """A runner with its tokenizer: `predict(texts)` for text in, `infer(feeds)` for token ids in.

    Use it as a context manager (or call close()): the session/engine is released on exit."""

    def __init__(self, runner, tokenizer, max_len: int):
        self.runner, self.tokenizer, self.max_len = runner, tokenizer, max_len

    def infer(self, feeds) -> dict:
        """The runner's outputs ({"logits": ...}) for padded NumPy feeds (input_ids, attention_mask, ...)."""
        return self.runner.infer(self.runner.select_feeds(feeds))

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict:
        """Padded int64 feeds for `texts` (and the second sentences `pairs`), truncated to the model's length."""
        from debx.tokenizer import encode

        enc = encode(self.tokenizer, list(texts), list(pairs) if pairs is not None else None, self.max_len)
        return enc.batch(slice(None), pad_id=self.tokenizer.pad_token_id or 0)

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None):
        """The first output for `texts` (logits of a classification model: (len(texts), num_labels))."""
        out = self.infer(self.tokenize(texts, pairs))
        return next(iter(out.values()))

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_runner(path: str | Path, *, tokenizer: str | Path | None = None, max_seq_len: int | None = None,
                **options) -> Model:
    """Open a checkpoint folder (PyTorch), a .onnx file (ONNX Runtime) or a TensorRT plan, activated and ready:
    a `Model` with `predict(texts)` / `infer(feeds)` (options go to the runner: provider, threads, device, ...).
    The tokenizer comes from the checkpoint, the folder of a folder export, or the artifact's source checkpoint
    (its sidecar); `tokenizer=` overrides. `max_seq_len`: truncation length (default: the exported limit)."""
    from debx.artifacts import artifact_source, read_sidecar
    from debx.tokenizer import load_tokenizer

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    runner = runner_for(path, **options)  # an unknown kind of file fails here, in one line
    side = read_sidecar(path)
    if tokenizer is None:
        if path.is_dir():
            tokenizer = path
        elif (path.parent / "config.json").is_file() and side.get("folder"):
            tokenizer = path.parent
        else:
            tokenizer = artifact_source(path, side).checkpoint
        if tokenizer is None:
            raise ConfigError(f"{path}: no sidecar names its source checkpoint; pass tokenizer=CKPT_DIR")
    if max_seq_len is None:
        max_seq_len = side.max_seq_len
        if max_seq_len is None:
            import json

            cfg = Path(tokenizer) / "config.json"
            max_seq_len = json.loads(cfg.read_text()).get("max_position_embeddings", 512) if cfg.is_file() else 512
    tok = load_tokenizer(tokenizer)
    return Model(runner.activate(), tok, max_seq_len)


def ops_library(rebuild: bool = False) -> Path:
    """The path of libdebx_ort_ops.so, the ONNX Runtime library of debx's custom nodes, built with CMake on first
    use (one progress line on stderr; CMake's progress too under -v; `rebuild`: build it again, showing CMake's
    progress unless -q): `onnxruntime.SessionOptions().register_custom_ops_library(str(ops_library()))`."""
    if rebuild:
        return native_ops.build(force=True, verbose=info())
    return native_ops.library_path()

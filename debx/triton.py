"""`debx package --triton DIR`: a Triton Inference Server model repository for an exported ONNX model.

    DIR/<name>_model/config.pbtxt        the ONNX model (onnxruntime_onnx): dynamic batching, its inputs/outputs, and
    DIR/<name>_model/1/model.onnx        for graphs with debx nodes the op library (model_operations)
    DIR/<name>_tokenizer/config.pbtxt    tokenization as a Python-backend model: TEXT (+ TEXT_PAIR) -> token ids,
    DIR/<name>_tokenizer/1/model.py      padded to a fixed length so that the ONNX model's dynamic batcher can batch
    DIR/<name>_tokenizer/1/tokenizer/    requests together (Triton batches only requests of equal shapes)
    DIR/<name>/config.pbtxt              the ensemble clients call: TEXT in, the model's output out
    DIR/<name>/1/                        (an ensemble has no files, but Triton wants its version folder)

The repository is written in a temporary sibling and swapped into place (debx.artifacts.atomic_dir).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from debx.contract import DEBX_ATTENTION, TOKENIZER_FILES
from debx.errors import ConfigError

DEFAULT_OPS_LIBRARY = "/opt/debx/lib/libdebx_ort_ops.so"  # where the Dockerfile installs it

# the Python-backend model: transformers' tokenizer from the files beside it, one padded batch per request
TOKENIZER_MODEL = '''"""Triton Python-backend model written by `debx package --triton`: text -> token ids for {model}."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

SETTINGS = {settings}


def _texts(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)]


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"] / "tokenizer"
        self.tokenizer = AutoTokenizer.from_pretrained(str(here))
        self.outputs = SETTINGS["outputs"]
        self.pad_to = SETTINGS["pad_to"]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                texts, pairs = _texts(request, "TEXT"), _texts(request, "TEXT_PAIR")
                if texts is None:
                    raise ValueError("the request has no TEXT input")
                enc = self.tokenizer(texts, pairs, padding="max_length", truncation=True, max_length=self.pad_to,
                                     return_token_type_ids=True, return_tensors="np")
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(enc[name], dtype=np.int64))
                           for name in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as e:  # one bad request gets its error; the others are answered
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses

    def finalize(self):
        self.tokenizer = None
'''


@dataclass
class TritonConfig:
    model: Path  # an ONNX export (its sidecar names the checkpoint the tokenizer comes from)
    output: Path  # the repository folder (replaced as a whole)
    name: str = "debx"
    max_batch_size: int = 32
    pad_to: int | None = None  # tokens per request row (default: min(128, the export's max_seq_len))
    max_queue_delay_us: int = 1000  # how long the dynamic batcher waits to fill a batch
    ops_library: str = DEFAULT_OPS_LIBRARY  # the server's path of libdebx_ort_ops.so (graphs with debx nodes)
    tokenizer: Path | None = None  # default: the export's source checkpoint (sidecar)

    def __post_init__(self) -> None:
        from debx.artifacts import check_writable
        from debx.errors import check_at_least

        self.model, self.output = Path(self.model), Path(self.output)
        check_at_least("--max-batch-size", self.max_batch_size)
        check_at_least("--pad-to", self.pad_to, 3)
        check_at_least("--max-queue-delay-us", self.max_queue_delay_us, 0)
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"--name {self.name!r}: letters, digits, - and _ only (it names model folders)")
        check_writable(self.output, "--triton")


@dataclass
class TritonResult:
    repository: Path
    models: list[str]
    pad_to: int
    custom_ops: bool


# ---------------------------------------------------------------------------------------------------------------------
# protobuf text (Triton's ModelConfig): written from plain Python values
# ---------------------------------------------------------------------------------------------------------------------


class Enum(str):
    """An enum value (written bare: TYPE_INT64), not a string."""


def pbtxt(fields: dict, indent: int = 0) -> str:
    """`fields` as protobuf text: dict -> message, list -> repeated field, Enum -> bare name, str -> quoted."""
    pad = "  " * indent
    lines = []
    for key, value in fields.items():
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and value and not isinstance(value[0], dict):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
            continue
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{\n{pbtxt(item, indent + 1)}\n{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(lines)


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32"}


def _io(value_info) -> dict:
    """Triton's input/output entry for a graph value: its type and the dims after the batch axis (-1: dynamic)."""
    t = value_info.type.tensor_type
    if t.elem_type not in ONNX_TYPES:
        raise ConfigError(f"graph value {value_info.name}: element type {t.elem_type} has no Triton type here")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim][1:]
    return {"name": value_info.name, "data_type": Enum(ONNX_TYPES[t.elem_type]), "dims": dims or [1]}


def model_config(name: str, graph, cfg: TritonConfig, custom_ops: bool) -> dict:
    out = {"name": name, "platform": "onnxruntime_onnx", "max_batch_size": cfg.max_batch_size,
           "input": [_io(v) for v in graph.input], "output": [_io(v) for v in graph.output],
           "dynamic_batching": {"max_queue_delay_microseconds": cfg.max_queue_delay_us}}
    if custom_ops:
        out["model_operations"] = {"op_library_filename": [cfg.ops_library]}
    return out


def tokenizer_config(name: str, inputs: list[str], pad_to: int, cfg: TritonConfig) -> dict:
    return {"name": name, "backend": "python", "max_batch_size": cfg.max_batch_size,
            "input": [{"name": "TEXT", "data_type": Enum("TYPE_STRING"), "dims": [1]},
                      {"name": "TEXT_PAIR", "data_type": Enum("TYPE_STRING"), "dims": [1], "optional": True}],
            "output": [{"name": n, "data_type": Enum("TYPE_INT64"), "dims": [pad_to]} for n in inputs],
            "dynamic_batching": {"max_queue_delay_microseconds": cfg.max_queue_delay_us}}


def ensemble_config(cfg: TritonConfig, inputs: list[str], outputs: list[dict], tok: str, model: str) -> dict:
    return {"name": cfg.name, "platform": "ensemble", "max_batch_size": cfg.max_batch_size,
            "input": [{"name": "TEXT", "data_type": Enum("TYPE_STRING"), "dims": [1]},
                      {"name": "TEXT_PAIR", "data_type": Enum("TYPE_STRING"), "dims": [1], "optional": True}],
            "output": outputs,
            "ensemble_scheduling": {"step": [
                {"model_name": tok, "model_version": -1,
                 "input_map": [{"key": "TEXT", "value": "TEXT"}, {"key": "TEXT_PAIR", "value": "TEXT_PAIR"}],
                 "output_map": [{"key": n, "value": n} for n in inputs]},
                {"model_name": model, "model_version": -1,
                 "input_map": [{"key": n, "value": n} for n in inputs],
                 "output_map": [{"key": o["name"], "value": o["name"]} for o in outputs]},
            ]}}


# ---------------------------------------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------------------------------------


def package_triton(cfg: TritonConfig) -> TritonResult:
    """Write the model repository of `cfg.model` (see the module docstring); ConfigError for what cannot be served."""
    from debx.artifacts import (
        artifact_source,
        atomic_dir,
        input_files,
        read_onnx,
        read_sidecar,
        refuse_overwriting_inputs,
        write_sidecar,
    )

    if cfg.model.suffix.lower() != ".onnx":
        raise ConfigError(f"{cfg.model}: debx package --triton takes an ONNX export (.onnx)")
    graph = read_onnx(cfg.model).graph  # one line for a missing, truncated or foreign file
    side = read_sidecar(cfg.model)
    tokenizer = cfg.tokenizer or (cfg.model.parent if side.get("folder") else artifact_source(cfg.model, side).checkpoint)
    if tokenizer is None:
        raise ConfigError(f"{cfg.model}: no sidecar names its source checkpoint; pass --tokenizer CKPT_DIR")
    tok_files = [n for n in ("config.json", *TOKENIZER_FILES) if (Path(tokenizer) / n).is_file()]
    if not any(n in TOKENIZER_FILES for n in tok_files):
        raise ConfigError(f"{tokenizer}: no tokenizer files (tokenizer.json, spm.model, ...) to serve with the model")
    refuse_overwriting_inputs({"--triton": cfg.output}, [cfg.model, tokenizer])
    for f in input_files(cfg.model):
        if cfg.output.resolve() in f.resolve().parents:
            raise ConfigError(f"--triton {cfg.output}: holds the input {f}; choose another folder")
    if cfg.output.exists() and any(cfg.output.iterdir()) and \
            not (cfg.output / f"{cfg.name}_model" / "config.pbtxt").is_file():
        raise ConfigError(f"--triton {cfg.output}: a folder that is not a debx repository for {cfg.name!r} (it would "
                          "be replaced as a whole); choose an empty or new folder")
    inputs = [v.name for v in graph.input]
    limit = side.max_seq_len
    pad_to = cfg.pad_to or min(128, limit or 128)
    if limit is not None and pad_to > limit:
        raise ConfigError(f"--pad-to {pad_to} exceeds the export's max_seq_len {limit}")
    custom = any(n.domain == DEBX_ATTENTION.domain for n in graph.node)
    tok_name, model_name = f"{cfg.name}_tokenizer", f"{cfg.name}_model"
    mcfg = model_config(model_name, graph, cfg, custom)

    with atomic_dir(cfg.output) as repo:
        # the model, its weights file (named as the graph refers to it) and its sidecar
        mdir = repo / model_name / "1"
        mdir.mkdir(parents=True)
        shutil.copyfile(cfg.model, mdir / "model.onnx")
        if side.external_data:
            shutil.copyfile(cfg.model.with_name(side.external_data), mdir / side.external_data)
        if side:
            write_sidecar(mdir / "model.onnx", side)
        (repo / model_name / "config.pbtxt").write_text(pbtxt(mcfg) + "\n")
        # tokenization
        tdir = repo / tok_name / "1"
        (tdir / "tokenizer").mkdir(parents=True)
        for n in tok_files:
            shutil.copyfile(Path(tokenizer) / n, tdir / "tokenizer" / n)
        if (tdir / "tokenizer" / "tokenizer_config.json").is_file():  # transformers 4.x reads it too (Triton images)
            import json

            from debx.exporters.export import portable_tokenizer_config

            conf = tdir / "tokenizer" / "tokenizer_config.json"
            conf.write_text(json.dumps(portable_tokenizer_config(json.loads(conf.read_text())), indent=2) + "\n")
        settings = {"outputs": inputs, "pad_to": pad_to}
        (tdir / "model.py").write_text(TOKENIZER_MODEL.format(model=cfg.model.name, settings=repr(settings)))
        (repo / tok_name / "config.pbtxt").write_text(pbtxt(tokenizer_config(tok_name, inputs, pad_to, cfg)) + "\n")
        # the ensemble
        (repo / cfg.name / "1").mkdir(parents=True)
        (repo / cfg.name / "config.pbtxt").write_text(
            pbtxt(ensemble_config(cfg, inputs, mcfg["output"], tok_name, model_name)) + "\n")
    return TritonResult(repository=cfg.output, models=[cfg.name, tok_name, model_name], pad_to=pad_to,
                        custom_ops=custom)

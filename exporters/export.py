"""`debx export`: a checkpoint folder -> a validated ONNX file (+ JSON sidecar), FP32 or FP16, in one of three
attention modes (see exporters/attention.py).

Flow: load the debx model -> trace it inside `export_patches` (every export-only change, in one place) -> tidy the
graph (onnxscript optimizer, names, metadata) -> optional FP16 conversion (exporters/fp16.py) -> write it to a
temporary folder next to the output -> graph checks and validation against PyTorch (exporters/checks.py,
exporters/validate.py) -> commit the graph, its weights and the sidecar as one unit (debx.artifacts.publish:
weights under a name unique to this write, the graph last). Any failure leaves no output file behind, and an
interrupted commit leaves the previous export complete.

Exporter choice: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. Our model is written for tracing
(no data-dependent control flow), so tracing loses nothing, and this exporter (1) writes custom nodes exactly as
`autograd.Function.symbolic` says, with typed attributes and no extra wrapping, (2) names dynamic axes directly,
(3) writes opset 17 natively (the dynamo exporter builds opset 18 and down-converts), and (4) exports a model in
about a second, which keeps the test matrix (every variant x mode x precision x opset) fast. The graph checks below
hold either exporter to the same standard.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

import debx.model as dm
from debx import __version__
from debx.artifacts import (
    check_writable,
    package_versions,
    publish,
    save_onnx_model,
    sidecar_path,
    weights_bytes,
    write_json_atomic,
)
from debx.contract import DEBX_ATTENTION, INLINE_WEIGHTS_LIMIT, TOKENIZER_FILES
from debx.errors import CheckpointError, ConfigError
from debx.exporters.attention import MODES, check_supported, emitter
from debx.exporters.onnx_config import BATCH_AXIS, HEADS, OPTIMUM_AXES, SEQUENCE_AXIS, onnx_config_for
from debx.runtimes.native_ops import LIBRARY

FOLDER_MODEL = "model.onnx"  # the graph's name in a folder target (the name Optimum's from_pretrained looks for)
EXTERNAL_DATA_THRESHOLD = INLINE_WEIGHTS_LIMIT  # protobuf's 2 GB limit, minus room for the graph (debx.contract)


@dataclass
class ExportConfig:
    checkpoint: Path
    output: Path  # a .onnx file, or a folder target: a path ending in "/" or an existing folder (see `folder`)
    attention: str = "onnx"  # onnx | trt | debx | fast
    fp16: bool = False
    opset: int | None = None  # None: the architecture's default (17)
    max_seq_len: int | None = None  # longest length validated (None: max_position_embeddings); the graph takes any
    # length unless the model has absolute position embeddings (position_biased_input: at most max_position_embeddings)
    batch: int | None = None  # None: dynamic "batch" axis; an int pins it
    seq: int | None = None  # None: dynamic "sequence" axis; an int pins it
    head: str | None = None  # None: the checkpoint's own head
    validate: bool = True
    data_dir: Path | None = None  # GLUE folder for validation sentences (default: $GLUE_DIR / ../shared/glue)
    keep_fp32: tuple[str, ...] | None = None  # --fp16: op types kept in FP32 (None: debx.exporters.fp16.KEEP_FP32)
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD  # bytes of weights above which weights go to <output>.data
    gi_max_scope: str | None = None  # giMLP threshold: "batch" | "example" (None: the checkpoint's config.json)
    # a folder target: <output>/model.onnx with config.json and the tokenizer files beside it, the layout Optimum's
    # ORTModel*.from_pretrained and pipeline() load. None: a folder when `output` ends in "/" or is an existing folder
    folder: bool | None = None
    optimum_axes: bool = False  # name the dynamic axes as Optimum does (batch_size, sequence_length)

    def __post_init__(self) -> None:
        self.checkpoint = Path(self.checkpoint)
        raw = str(self.output)
        self.output = Path(self.output)
        if self.folder is None:
            self.folder = raw.endswith(("/", os.sep)) or self.output.is_dir()
        check_writable(self.output, "--output")
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    @property
    def onnx_path(self) -> Path:
        """The graph file: `output`, or <output>/model.onnx for a folder target."""
        return self.output / FOLDER_MODEL if self.folder else self.output

    @property
    def axis_names(self) -> tuple[str, str]:
        return OPTIMUM_AXES if self.optimum_axes else (BATCH_AXIS, SEQUENCE_AXIS)


@dataclass
class ExportResult:
    output: Path
    sidecar: Path
    metadata: dict
    external_data: Path | None = None
    folder_files: list[Path] = field(default_factory=list)  # folder target: config.json and tokenizer files written
    report: object | None = None  # debx.exporters.validate.ValidationReport when validated
    warnings: list[str] = field(default_factory=list)  # for the user, one line each (the CLI prints them)


# ---------------------------------------------------------------------------------------------------------------------
# Export-only patches
# ---------------------------------------------------------------------------------------------------------------------


def _encoder(model: torch.nn.Module) -> dm.Encoder:
    return model.deberta.encoder


def fold_position_tables(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (pos_key, pos_query) tables: rel_embeddings through LayerNorm and the layer's projections,
    computed once now (they depend on no input). (P, HD) each; an unused side is a (1, HD) zero table."""
    enc = _encoder(model)
    rel = enc.rel_embedding()  # (P, C) or None
    tables = []
    with torch.no_grad():
        for layer in enc.layer:
            attn = layer.attention.self
            HD = attn.num_heads * attn.cfg.head_size
            if rel is None or not (attn.c2p or attn.p2c):
                pk = pq = torch.zeros(1, HD)
            else:
                pk, pq = attn.position_tables(rel)
                pk = pk if attn.c2p else torch.zeros(1, HD)
                pq = pq if attn.p2c else torch.zeros(1, HD)
            tables.append((pk.detach().clone().contiguous(), pq.detach().clone().contiguous()))
    return tables


@contextlib.contextmanager
def export_patches(model: torch.nn.Module, mode: str, max_seq_len: int | None = None) -> Iterator[torch.nn.Module]:
    """Every export-only change, undone on exit:

    * each layer's position tables become buffers (ONNX initializers named `...attention.self.pos_key_table` /
      `pos_query_table`), computed once here instead of per call;
    * the attention core of this model's attention modules (their `core` attribute) becomes the emission of `mode`
      (exporters/attention.py); other models in the process keep theirs.

    `max_seq_len` is accepted for callers' sake and changes nothing: the graph takes any sequence length (models
    with absolute position embeddings excepted, whose table ends at max_position_embeddings).
    """
    enc = _encoder(model)
    emit = emitter(mode)
    tables = fold_position_tables(model)
    saved_table = getattr(enc, "rel_index_table", None)  # None: no relative attention
    attns = [layer.attention.self for layer in enc.layer]
    try:
        for attn, (pk, pq) in zip(attns, tables):
            attn.register_buffer("pos_key_table", pk)
            attn.register_buffer("pos_query_table", pq)
            attn.position_tables = lambda rel, a=attn: (a.pos_key_table, a.pos_query_table)
        if saved_table is not None:
            # the raw embeddings are no longer needed in the graph: the folded tables replace them
            enc.rel_embedding = lambda: enc.rel_embeddings.weight[:1]
            # the relative index table stays as the model holds it (up to where the slot saturates): the graph
            # computes the (N, N) index from the sequence length through a clamp of the distance, for any N
        for attn in attns:
            attn.core = emit
        yield model
    finally:
        for attn in attns:
            attn.__dict__.pop("core", None)  # back to the class default: debx.model.attention_core
            attn.__dict__.pop("position_tables", None)
            for name in ("pos_key_table", "pos_query_table"):
                attn._buffers.pop(name, None)
        enc.__dict__.pop("rel_embedding", None)


def trace_to_onnx(model: torch.nn.Module, model_cfg: dm.DebertaConfig, head: str, path: Path, *, mode: str,
                  opset: int, max_seq_len: int, batch: int | None, seq: int | None,
                  axis_names: tuple[str, str] = (BATCH_AXIS, SEQUENCE_AXIS)) -> None:
    """torch.onnx.export (TorchScript) of `model` under `export_patches` into `path`."""
    oc = onnx_config_for(model_cfg)
    names = oc.input_names(model_cfg)
    dummy = oc.dummy_inputs(model_cfg, batch or 2, seq or min(11, max_seq_len))
    with export_patches(model, mode, max_seq_len), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python ints and the deprecation notice of this exporter
        torch.onnx.export(
            model, tuple(dummy[n] for n in names), str(path), input_names=names, output_names=oc.output_names(head),
            dynamic_axes=oc.dynamic_axes(model_cfg, head, batch, seq, axis_names), opset_version=opset, dynamo=False,
            do_constant_folding=True,
            custom_opsets={DEBX_ATTENTION.domain: DEBX_ATTENTION.version} if mode == "debx" else None,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Graph finishing and writing
# ---------------------------------------------------------------------------------------------------------------------


def tidy_graph(model, *, name: str, metadata: dict[str, str]):
    """Fold what tracing left behind (shape arithmetic on constants, Identity chains) with onnxscript's optimizer,
    name anonymous initializers after the node that uses them, and record what the file is in its metadata."""
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(model)
    users: dict[str, list] = {}
    for node in model.graph.node:
        for i, inp in enumerate(node.input):
            users.setdefault(inp, []).append((node, i))
    for t in model.graph.initializer:
        if not t.name.startswith("onnx::") or len(users.get(t.name, [])) != 1:
            continue
        node, i = users[t.name][0]
        new = node.name.strip("/").replace("/", ".") + f".input{i}"
        node.input[i] = new
        t.name = new
    model.graph.name = name
    model.producer_name = "debx"

    model.producer_version = __version__
    del model.metadata_props[:]
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"debx.{k}", str(v)
    return model


def save_onnx(model, path: Path, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
              data_name: str | None = None) -> Path | None:
    """Write `model` to `path`; weights go to a file beside it (`data_name`, default `<path>.data`) when they exceed
    the threshold (protobuf cannot hold more than 2 GB). Returns the data file, or None. `model` is rewritten to
    point at the data file (the caller drops it)."""
    if weights_bytes(model) > external_data_threshold:
        return save_onnx_model(model, path, data_name or path.name + ".data", copy=False)
    return save_onnx_model(model, path)


def custom_ops_entry(mode: str) -> dict | None:
    """The sidecar's note of the custom-op library a graph of attention `mode` needs outside debx (None: standard
    ops only, or TensorRT's own DisentangledAttention_TRT plugin)."""
    if mode != "debx":
        return None

    return {"domain": DEBX_ATTENTION.domain, "ops": [DEBX_ATTENTION.name], "onnxruntime_library": LIBRARY,
            "tensorrt_library": "libdebx_plugins.so",
            "path": "`debx ops-path` prints it (built on first use), or debx.ops_library() in Python",
            "usage": "onnxruntime.SessionOptions().register_custom_ops_library(path)"}


def portable_tokenizer_config(config: dict) -> dict:
    """tokenizer_config.json as transformers 4.x reads it too (Optimum's environment pins transformers < 4.58):
    transformers 5 writes `extra_special_tokens` as a list, which 4.x takes for a {name: token} map and fails on.
    The list becomes 4.x's `additional_special_tokens` (which 5.x reads as well), less the tokens the config
    already names (pad, cls, ...)."""
    extra = config.get("extra_special_tokens")
    if not isinstance(extra, list):
        return config
    out = {k: v for k, v in config.items() if k != "extra_special_tokens"}
    named = {v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    more = [t for t in extra if t not in named and t not in out.get("additional_special_tokens", [])]
    if more:
        out["additional_special_tokens"] = [*out.get("additional_special_tokens", []), *more]
    return out


def stage_folder_files(st, checkpoint: Path, folder: Path, sidecar: dict) -> list[Path]:
    """A folder target's files beside the graph: the checkpoint's config.json and tokenizer files, staged in `st`
    (committed with the graph as one unit) and listed in `sidecar["folder"]`. Files the previous export there
    listed and this one does not write are deleted at the commit."""
    from debx.artifacts import read_sidecar

    names = ["config.json", *(n for n in TOKENIZER_FILES if (checkpoint / n).is_file())]
    written = []
    for name in names:
        staged = st.add(folder / name)
        if name == "tokenizer_config.json":
            try:
                config = json.loads((checkpoint / name).read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{checkpoint / name}: invalid JSON ({e})") from None
            write_json_atomic(staged, portable_tokenizer_config(config) if isinstance(config, dict) else config)
        else:
            shutil.copyfile(checkpoint / name, staged)
        written.append(folder / name)
    try:
        before = read_sidecar(folder / FOLDER_MODEL).get("folder", {})
    except ConfigError:  # the export being replaced has a broken sidecar: its folder files are not known
        before = {}
    listed = before.get("files", []) if isinstance(before, dict) else []
    st.stale(*(folder / n for n in listed if isinstance(n, str) and n in ("config.json", *TOKENIZER_FILES)))
    sidecar["folder"] = {"layout": "optimum", "files": names}
    return written


# ---------------------------------------------------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------------------------------------------------


# modes whose FP32 graphs are meant for ONNX Runtime's CPU provider
CPU_SPEED_MODES = ("fast", "debx")


def _check_request(cfg: ExportConfig) -> None:
    if cfg.attention not in MODES:
        raise ConfigError(f"--attention {cfg.attention!r}: choose one of {', '.join(MODES)}")
    if cfg.head is not None and cfg.head not in HEADS:
        raise ConfigError(f"--head {cfg.head!r}: choose one of {', '.join(HEADS)}")
    if cfg.folder:
        if cfg.output.exists() and not cfg.output.is_dir():
            raise ConfigError(f"-o {cfg.output}/: is a file, expected a folder (or a .onnx file name without the "
                              "trailing /)")
        if cfg.onnx_path.is_dir():
            raise ConfigError(f"-o {cfg.output}/: {cfg.onnx_path} is a folder")
    elif cfg.output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {cfg.output}: the output file must end in .onnx (or name a folder: end it with /)")
    for flag, value in (("--batch", cfg.batch), ("--seq", cfg.seq), ("--max-seq-len", cfg.max_seq_len)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")


def export_onnx(cfg: ExportConfig) -> ExportResult:
    """Export, check, (convert,) validate and write `cfg.output` + `<output>.json`. Nothing is written on failure."""
    import onnx

    from debx.contract import HEAD_OUTPUTS
    from debx.exporters import checks
    from debx.exporters.fp16 import KEEP_FP32
    from debx.exporters.validate import ValidationFailed, expected_axes, validate_onnx
    from debx.runtimes.torch import load_for_head
    from debx.variants import describe_variant

    _check_request(cfg)
    model, ckpt, head = load_for_head(cfg.checkpoint, cfg.head)
    mcfg = ckpt.config
    if cfg.gi_max_scope is not None:
        mcfg.set_gi_max_scope(cfg.gi_max_scope)  # the model's layers read it from this config
    gi_scope = mcfg.gi_max_scope if mcfg.gated_layers() else None
    oc = onnx_config_for(mcfg)
    check_supported(cfg.attention, mcfg)
    opset = oc.check_opset(cfg.opset if cfg.opset is not None else oc.default_opset)
    # relative positions take any length; only absolute position embeddings (position_biased_input) set a limit.
    # max_len is the longest sequence validated (and the default truncation length downstream)
    max_len = cfg.max_seq_len or cfg.seq or mcfg.max_position_embeddings
    mcfg.check_length(max_len, "--max-seq-len" if cfg.max_seq_len else "--seq")
    if cfg.seq is not None and cfg.seq > max_len:
        raise ConfigError(f"--seq {cfg.seq} exceeds --max-seq-len {max_len}")
    variant = describe_variant(mcfg)
    shapes = {"batch": cfg.batch or "dynamic", "sequence": cfg.seq or "dynamic", "max_seq_len": max_len}
    if cfg.optimum_axes:
        shapes["axis_names"] = list(cfg.axis_names)
    meta = {"attention": cfg.attention, "precision": cfg.precision, "head": head, "variant": variant,
            "source_fingerprint": ckpt.fingerprint, "opset": opset, "max_seq_len": max_len}
    if gi_scope is not None:
        meta["gi_max_scope"] = gi_scope

    out = cfg.onnx_path.resolve()
    if cfg.folder and out.parent == ckpt.path.resolve():
        raise ConfigError(f"-o {cfg.output}/: is the checkpoint folder itself; choose another folder")
    with publish(out) as st:  # committed as one unit at the end of the block; nothing is left on failure
        work = st.dir
        traced = work / "traced.onnx"
        trace_to_onnx(model, mcfg, head, traced, mode=cfg.attention, opset=opset, max_seq_len=max_len,
                      batch=cfg.batch, seq=cfg.seq, axis_names=cfg.axis_names)
        graph = tidy_graph(onnx.load(str(traced)), name=f"debx-{variant}-{head}", metadata=meta)
        if cfg.attention in CPU_SPEED_MODES and not cfg.fp16:
            from debx.exporters.ort_optimize import residual_adds_as_sum

            residual_adds_as_sum(graph)  # keeps ONNX Runtime from fusing them into its slower SkipLayerNormalization
        if cfg.fp16:
            from debx.exporters.fp16 import convert_to_fp16

            graph = convert_to_fp16(graph, cfg.keep_fp32)
        staged = st.primary
        data = save_onnx(graph, staged, cfg.external_data_threshold, data_name=st.onnx_data_name())
        del graph
        if cfg.validate:
            report = validate_onnx(staged, model=model, ckpt=ckpt, head=head, precision=cfg.precision,
                                   attention=cfg.attention, max_seq_len=max_len, batch=cfg.batch, seq=cfg.seq,
                                   data_dir=cfg.data_dir, axis_names=cfg.axis_names)
        else:  # the structural checks always run
            report = None
            out_name, token_level = HEAD_OUTPUTS[head]
            problems = checks.graph_problems(
                onnx.load(str(staged), load_external_data=False), mode=cfg.attention,
                num_layers=mcfg.num_hidden_layers,
                expected_axes=expected_axes(oc.input_names(mcfg), out_name, token_level, cfg.batch, cfg.seq,
                                            cfg.axis_names))
            if problems:
                raise ValidationFailed(f"graph checks failed ({len(problems)}): " + "; ".join(problems))
        sidecar = {
            "format": "debx-onnx/1",
            "file": out.name,
            "external_data": data.name if data else None,
            "source": {"checkpoint": str(ckpt.path.resolve()), "fingerprint": ckpt.fingerprint,
                       "model_type": mcfg.model_type},
            "variant": variant,
            "head": head,
            "inputs": oc.input_names(mcfg),
            "outputs": oc.output_names(head),
            "opset": opset,
            "attention": cfg.attention,
            "precision": cfg.precision,
            "keep_fp32": list(KEEP_FP32 if cfg.keep_fp32 is None else cfg.keep_fp32) if cfg.fp16 else [],
            "shapes": shapes,
            "gi_max_scope": gi_scope,
            "custom_ops": custom_ops_entry(cfg.attention),
            "versions": package_versions(),
            "parity": report.to_dict() if report else None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        # into place as one unit: the folder files, the weights (a new name), the sidecar, then the graph
        folder_files = stage_folder_files(st, ckpt.path, out.parent, sidecar) if cfg.folder else []
        st.sidecar = sidecar
    warnings = []
    if cfg.folder and not any(f.name in TOKENIZER_FILES for f in folder_files):
        warnings.append(f"{ckpt.path} has no tokenizer files: {cfg.output}/ loads as a model, but pipeline() and "
                        "AutoTokenizer need a tokenizer beside it")
    if gi_scope == "batch":
        warnings.append("this giMLP graph thresholds its gates with the maximum over the whole batch (gi_max_scope "
                        "batch, as the reference code): a request's output depends on the others batched with it; "
                        "for serving, export with --gi-max-scope example (measure its cost with debx eval "
                        "--gi-max-scope example --reference CKPT)")
    return ExportResult(output=out, sidecar=sidecar_path(out), metadata=sidecar,
                        external_data=out.with_name(data.name) if data else None, folder_files=folder_files,
                        report=report, warnings=warnings)

"""The contracts every floor of debx shares, on the ground floor (this module imports nothing of debx).

    DEBX_ATTENTION  debx::DebxDisentangledAttention: domain, op name, opset version, inputs, outputs and attributes
                    (name, ONNX kind, default). The exporter writes nodes from it, the NumPy reference ops and the
                    ONNX Runtime runner register it, `debx build` names it; the C++ registrations (the TensorRT
                    plugin creator, plugins/disentangledAttention/, and the ONNX Runtime custom op, plugins/ortOps/)
                    are held to it by tests/test_contract.py. Prose contract: plugins/disentangledAttention/README.md.
    TRT_ATTENTION   DisentangledAttention_TRT, the op of TensorRT's own plugin library (the `--attention trt` mode).
    WEIGHT_FILES, TOKENIZER_FILES   the files of a checkpoint folder.
    INPUT_NAMES, input_names, HEAD_OUTPUTS   a model's inputs (every backend, every exported file) and the output of each
                    head.
    PROTOBUF_LIMIT, INLINE_WEIGHTS_LIMIT   the one size rule for ONNX files: every writer (export, calibrate, the ORT
                    optimisation) keeps weights inside the file up to INLINE_WEIGHTS_LIMIT and puts them in a data file
                    beside it above; the runner rewrites a graph in memory when its inline weights are within the
                    limit (weights in a data file stay there: only the graph is rewritten).
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------------------
# Custom ops
# ---------------------------------------------------------------------------------------------------------------------

ATTRIBUTE_KINDS = {"i": int, "f": float, "s": str}  # ONNX attribute kinds: INT, FLOAT, STRING


@dataclass(frozen=True)
class Attribute:
    name: str
    kind: str  # "i" | "f" | "s" (ONNX INT / FLOAT / STRING)
    default: int | float | str | None = None  # None: required
    in_files: bool = True  # False: set only in memory by a runtime (never written to a file: TensorRT never sees it)

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class OpContract:
    domain: str  # "" = the ONNX default domain
    name: str  # op_type
    version: int  # opset version of the domain (custom_opsets at export)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[Attribute, ...]
    float_inputs: tuple[int, ...]  # input indices that carry the float data (cast to float32 for the reference)
    plugin_version: str = "1"  # TensorRT: the plugin creator's version (the parser's default lookup key)

    @property
    def key(self) -> tuple[str, str]:
        """(domain, op_type) as a node has them."""
        return self.domain, self.name

    @property
    def qualified_name(self) -> str:
        """`domain::name` for torch's g.op (no prefix in the default domain)."""
        return f"{self.domain}::{self.name}" if self.domain else self.name

    def file_attributes(self) -> tuple[Attribute, ...]:
        """The attributes a graph file carries (what the exporter writes and TensorRT reads)."""
        return tuple(a for a in self.attributes if a.in_files)

    def attribute_kinds(self, *, in_files_only: bool = False) -> dict[str, str]:
        return {a.name: a.kind for a in (self.file_attributes() if in_files_only else self.attributes)}

    def symbolic_attributes(self, **values) -> dict:
        """g.op keyword arguments (`num_heads_i=...`) for exactly the file attributes, in contract order: a missing
        required one or an unknown name is an error here, not a node TensorRT or ONNX Runtime refuses later."""
        known = {a.name: a for a in self.file_attributes()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {unknown} (contract: {', '.join(known)})")
        out = {}
        for a in known.values():
            if a.name in values:
                value = values[a.name]
            elif a.required:
                raise ValueError(f"{self.name}: required attribute {a.name!r} not given")
            else:
                value = a.default
            out[f"{a.name}_{a.kind}"] = ATTRIBUTE_KINDS[a.kind](value)
        return out


DEBX_ATTENTION = OpContract(
    domain="debx",
    name="DebxDisentangledAttention",
    version=1,
    inputs=("query", "key", "value", "pos_key", "pos_query", "mask"),  # (B,N,HD) x3, (P,HD) x2, (B,N) int32
    outputs=("context",),  # (B, N, HD), the query's type
    attributes=(
        Attribute("num_heads", "i"),
        Attribute("scale", "f"),
        Attribute("span", "i"),
        Attribute("position_buckets", "i", default=-1),  # <= 0: linear positions
        Attribute("max_relative_positions", "i", default=-1),
        Attribute("c2p", "i"),
        Attribute("p2c", "i"),
        # ONNX Runtime CPU op only: the mixed-precision mode (its instruction family) the INT8 runner sets in memory
        Attribute("bf16", "i", default=0, in_files=False),
    ),
    float_inputs=(0, 1, 2, 3, 4),
)

TRT_ATTENTION = OpContract(
    domain="",  # TensorRT's ONNX parser finds plugins by op_type; the node stays in the default domain
    name="DisentangledAttention_TRT",
    version=1,
    inputs=("c2c", "c2p", "p2c"),  # (BH, N, N), (BH, N, 2k), (BH, N, 2k)
    outputs=("scores",),  # (BH, N, N)
    attributes=(Attribute("span", "i"), Attribute("factor", "f")),
    float_inputs=(0, 1, 2),
    plugin_version="1",  # DisentangledAttentionPlugin (IPluginV2DynamicExt); TensorRT 10 also registers "2" (IPluginV3)
)

CUSTOM_OPS: tuple[OpContract, ...] = (DEBX_ATTENTION, TRT_ATTENTION)

# ---------------------------------------------------------------------------------------------------------------------
# Model inputs and outputs
# ---------------------------------------------------------------------------------------------------------------------

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # every input a debx model may take, in this order


def input_names(type_vocab_size: int) -> list[str]:
    """The inputs of a model, by name and order: token_type_ids only when it has token types (type_vocab_size > 0)."""
    return list(INPUT_NAMES if type_vocab_size > 0 else INPUT_NAMES[:2])


# head -> (output name, token-level output: (B, N, ...) rather than (B, ...)); the same in every backend
HEAD_OUTPUTS: dict[str, tuple[str, bool]] = {
    "classification": ("logits", False),  # (B, num_labels)
    "regression": ("logits", False),  # (B, 1)
    "embeddings": ("last_hidden_state", True),  # (B, N, C)
    "masked-lm": ("logits", True),  # (B, N, vocab)
}

# ---------------------------------------------------------------------------------------------------------------------
# Size limits of ONNX files
# ---------------------------------------------------------------------------------------------------------------------

PROTOBUF_LIMIT = 2**31  # bytes: one protobuf message (an ONNX file with its weights inside) cannot pass 2 GiB
GRAPH_ROOM = 64 * 2**20  # bytes kept for the graph itself (nodes, names, attributes, what a rewrite adds)
INLINE_WEIGHTS_LIMIT = PROTOBUF_LIMIT - GRAPH_ROOM  # weights above this go to an external data file beside the graph

# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint folders
# ---------------------------------------------------------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spm.model", "vocab.json",
                   "merges.txt", "bpe_encoder.bin", "added_tokens.json")

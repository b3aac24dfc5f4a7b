"""Hugging Face checkpoint folders in and out: config.json, model.safetensors | pytorch_model.bin, tokenizer, labels.

A debx checkpoint *is* a Hugging Face checkpoint: `transformers.AutoModelForSequenceClassification.from_pretrained`
loads what `save_checkpoint` writes, and `load_model` reads what `save_pretrained` writes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from debx.artifacts import atomic_dir, fingerprint, weight_files  # noqa: F401  (re-exported: provenance is theirs)
from debx.contract import TOKENIZER_FILES, WEIGHT_FILES  # noqa: F401  (the checkpoint folder's files; re-exported)
from debx.errors import CheckpointError, ConfigError
from debx.model import HEADS, DebertaConfig, check_fits_in_memory

# (model_type, head) -> the Hugging Face class name written to config.json "architectures"
ARCHITECTURES = {
    ("deberta-v2", "classification"): "DebertaV2ForSequenceClassification",
    ("deberta-v2", "masked-lm"): "DebertaV2ForMaskedLM",
    ("deberta-v2", "embeddings"): "DebertaV2Model",
    ("deberta", "classification"): "DebertaForSequenceClassification",
    ("deberta", "masked-lm"): "DebertaForMaskedLM",
    ("deberta", "embeddings"): "DebertaModel",
}
HEAD_OF_ARCHITECTURE = {v: k[1] for k, v in ARCHITECTURES.items()}
# keys a checkpoint may carry that no debx head uses
IGNORED_KEY_PARTS = ("position_ids", "mask_predictions.", "lm_predictions.lm_head.dense.bias_ignored")


@dataclass
class Checkpoint:
    path: Path
    config: DebertaConfig
    head: str
    fingerprint: str


def _fail(path: Path, msg: str) -> CheckpointError:
    return CheckpointError(f"{path}: {msg}")


def read_config(path: str | Path) -> tuple[DebertaConfig, dict]:
    """Read config.json; clear errors for a missing folder, a non-checkpoint folder or an unsupported model_type."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file or directory")
    if not path.is_dir():
        raise _fail(path, "not a checkpoint folder (expected a folder with config.json and model weights)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise _fail(path, "not a checkpoint folder: config.json is missing")
    try:
        raw = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(cfg_file, f"invalid JSON ({e})") from None
    mt = raw.get("model_type")
    if mt not in ("deberta", "deberta-v2"):
        raise _fail(path, f"unsupported model_type {mt!r}: debx supports 'deberta' (v1) and 'deberta-v2' (v2, v3, mDeBERTa)")
    if raw.get("talking_head"):
        raise _fail(path, "talking_head attention is not supported")
    try:
        return DebertaConfig.from_hf_dict(raw), raw
    except (TypeError, ValueError, ConfigError) as e:
        raise _fail(cfg_file, f"invalid config: {e}") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint; .bin files are loaded with weights_only=True (no pickled code runs)."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(str(f)))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # safetensors/torch raise many kinds for a corrupt file
            raise _fail(f, f"cannot read weights (corrupt or truncated file?): {str(e).splitlines()[0][:160]}") from None
    return state


def _normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Base-model checkpoints (DebertaModel) have no 'deberta.' prefix; every debx head has it."""
    heads = ("deberta.", "cls.", "lm_predictions.", "pooler.", "classifier.")
    out = {}
    for k, v in state.items():
        if any(p in k for p in IGNORED_KEY_PARTS):
            continue
        out[k if k.startswith(heads) else "deberta." + k] = v
    return out


def _gated_layers(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    layers = set()
    for k in state:
        if ".attention.self.inhibition_" in k:
            layers.add(int(k.split(".encoder.layer.")[1].split(".")[0]))
    return tuple(sorted(layers))


def load_model(
    path: str | Path,
    head: str | None = None,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    problem_type: str | None = None,
    new_head_ok: bool = False,
) -> tuple[torch.nn.Module, Checkpoint]:
    """Load a Hugging Face DeBERTa checkpoint folder into a debx model (eval mode).

    head: "classification" | "masked-lm" | "embeddings"; default from config.json "architectures".
    new_head_ok: allow a freshly initialised classification head (fine-tuning a pre-trained encoder).
    """
    path = Path(path)
    cfg, raw = read_config(path)
    arch = (raw.get("architectures") or [None])[0]
    head = head or HEAD_OF_ARCHITECTURE.get(arch, "embeddings")
    if head not in HEADS:
        raise CheckpointError(f"unknown head {head!r}: choose one of {', '.join(HEADS)}")
    if num_labels is not None:
        cfg.num_labels = num_labels
    if id2label is not None:
        cfg.id2label = dict(id2label)
    if problem_type is not None:
        cfg.problem_type = problem_type
    try:
        check_fits_in_memory(cfg, head)  # before reading (or allocating) any weights
    except ConfigError as e:
        raise _fail(path, str(e)) from None
    state = _normalise_keys(read_state_dict(path))
    gated = _gated_layers(state)
    if gated:
        cfg.gi_layers = gated
        if not (cfg.gi_key_side or cfg.gi_query_side):
            raise _fail(path, "weights have gate-with-inhibition layers but config.json enables neither gi_key_side nor gi_query_side")
    model = HEADS[head](cfg)
    # tied/aliased parameters: only one of each group needs to be present
    aliases = [
        ("cls.predictions.decoder.weight", "deberta.embeddings.word_embeddings.weight"),
        ("cls.predictions.decoder.bias", "cls.predictions.bias"),
    ]
    for a, b in aliases:
        if a in state and b not in state:
            state[b] = state[a]
        if b in state and a not in state and a in model.state_dict():
            state[a] = state[b]
    expected = model.state_dict()
    if head == "classification" and "classifier.weight" in state and num_labels is not None:
        if state["classifier.weight"].shape[0] != num_labels:
            if not new_head_ok:
                raise _fail(path, f"classifier has {state['classifier.weight'].shape[0]} labels, task needs {num_labels}")
            state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "pooler."))}
    unexpected = [k for k in state if k not in expected and not k.startswith(("cls.", "lm_predictions.", "pooler.", "classifier."))]
    missing = [k for k in expected if k not in state]
    if new_head_ok:
        missing = [k for k in missing if not k.startswith(("classifier.", "pooler."))]
    if unexpected:
        raise _fail(path, f"weights do not match config.json: unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    if missing:
        raise _fail(path, f"weights do not match config.json: missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    for k, v in state.items():
        if k in expected and expected[k].shape != v.shape:
            raise _fail(path, f"weight {k} has shape {tuple(v.shape)}, config.json implies {tuple(expected[k].shape)}")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.eval()
    return model, Checkpoint(path=path, config=cfg, head=head, fingerprint=fingerprint(path))


def save_checkpoint(model: torch.nn.Module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Save in Hugging Face format (safetensors + config.json [+ tokenizer files]), atomically."""
    from safetensors.torch import save_file

    cfg: DebertaConfig = model.config
    head = getattr(model, "head", "embeddings")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        d = cfg.to_hf_dict()
        d["architectures"] = [ARCHITECTURES[(cfg.model_type, head)]]
        d["torch_dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        state.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings
        state.pop("cls.predictions.decoder.bias", None)  # same tensor as cls.predictions.bias
        if head == "embeddings":  # HF base models have no prefix
            state = {k.removeprefix("deberta."): v for k, v in state.items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out_dir

"""Per-architecture export configs (in the spirit of Optimum's OnnxConfig): inputs, named dynamic axes, dummy inputs,
opsets, output names per head, tolerances per precision.

Two architectures: `deberta` (v1) and `deberta-v2` (v2, v3, mDeBERTa, giMLP). They share the I/O contract of the
runners (debx.runtimes.base); they differ in which attention modes can represent them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from debx.errors import ConfigError
from debx.model import DebertaConfig
from debx.contract import HEAD_OUTPUTS, input_names
from debx.exporters.attention import supported_modes

MIN_OPSET = 17  # LayerNormalization is a single op from opset 17 (FP16-safe with stash_type=float32)
DEFAULT_OPSET = 17
MAX_OPSET = 20  # newest opset the TorchScript exporter writes
BATCH_AXIS, SEQUENCE_AXIS = "batch", "sequence"
OPTIMUM_AXES = ("batch_size", "sequence_length")  # the dynamic axis names Optimum's ONNX exports use

HEADS = tuple(HEAD_OUTPUTS)


@dataclass(frozen=True)
class Tolerance:
    """Parity of an exported model against the PyTorch model on the same inputs."""

    atol: float  # max abs difference per output value
    argmax_agreement: float  # fraction of examples (classification) or tokens (masked LM) whose argmax must match


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, argmax_agreement=1.0),
    "fp16": Tolerance(atol=2e-2, argmax_agreement=0.995),
}


@dataclass(frozen=True)
class OnnxConfig:
    model_type: str
    default_opset: int = DEFAULT_OPSET
    min_opset: int = MIN_OPSET

    # -- inputs ----------------------------------------------------------------------------------------------------
    def input_names(self, cfg: DebertaConfig) -> list[str]:
        return input_names(cfg.type_vocab_size)

    def output_names(self, head: str) -> list[str]:
        return [HEAD_OUTPUTS[head][0]]

    def dynamic_axes(self, cfg: DebertaConfig, head: str, batch: int | None, seq: int | None,
                     names: tuple[str, str] = (BATCH_AXIS, SEQUENCE_AXIS)) -> dict[str, dict[int, str]]:
        """Named axes for every input/output axis that is not pinned (batch/seq None = dynamic); `names`: the
        (batch, sequence) axis names (OPTIMUM_AXES for Optimum's)."""
        io_axes = {}
        if batch is None:
            io_axes[0] = names[0]
        if seq is None:
            io_axes[1] = names[1]
        axes = {name: dict(io_axes) for name in self.input_names(cfg)}
        out_name, token_level = HEAD_OUTPUTS[head]
        axes[out_name] = dict(io_axes) if token_level else {k: v for k, v in io_axes.items() if k == 0}
        return {k: v for k, v in axes.items() if v}

    def dummy_inputs(self, cfg: DebertaConfig, batch: int, seq: int) -> dict[str, torch.Tensor]:
        """Trace inputs: real-looking ids with a padded row (the values do not shape the graph: nothing is
        data-dependent), sizes chosen to collide with no model dimension."""
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(5, max(6, min(cfg.vocab_size, 1000)), (batch, seq), generator=g)
        ids[:, 0] = 1
        mask = torch.ones(batch, seq, dtype=torch.int64)
        if batch > 1 and seq > 2:
            mask[-1, seq // 2:] = 0
            ids[-1, seq // 2:] = cfg.pad_token_id
        feeds = {"input_ids": ids, "attention_mask": mask}
        if cfg.type_vocab_size > 0:
            tt = torch.zeros(batch, seq, dtype=torch.int64)
            tt[:, seq // 2:] = 1
            feeds["token_type_ids"] = tt * mask
        return feeds

    # -- attention ---------------------------------------------------------------------------------------------------
    def attention_modes(self, cfg: DebertaConfig) -> tuple[str, ...]:
        return supported_modes(cfg)

    def check_opset(self, opset: int) -> int:
        if not self.min_opset <= opset <= MAX_OPSET:
            raise ConfigError(f"--opset {opset} is not supported: choose {self.min_opset}..{MAX_OPSET}")
        return opset


ONNX_CONFIGS: dict[str, OnnxConfig] = {
    "deberta": OnnxConfig("deberta"),  # v1
    "deberta-v2": OnnxConfig("deberta-v2"),  # v2, v3, mDeBERTa, giMLP
}


def onnx_config_for(cfg: DebertaConfig) -> OnnxConfig:
    if cfg.model_type not in ONNX_CONFIGS:
        raise ConfigError(f"no ONNX export config for model_type {cfg.model_type!r}")
    return ONNX_CONFIGS[cfg.model_type]


def tolerance_for(precision: str) -> Tolerance:
    if precision not in TOLERANCES:
        raise ConfigError(f"unknown precision {precision!r}: choose one of {', '.join(TOLERANCES)}")
    return TOLERANCES[precision]

"""TorchRunner: the debx PyTorch model of a checkpoint folder (the reference every other backend is compared with)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from debx.errors import ConfigError, check_at_least
from debx.contract import HEAD_OUTPUTS, input_names
from debx.runtimes.base import Runner


def resolve_head(cfg, checkpoint_head: str, head: str | None) -> str:
    """The runner/export head: the one asked for, else the checkpoint's own; a 1-label classifier is "regression"."""
    head = head or checkpoint_head
    if head not in HEAD_OUTPUTS:
        raise ConfigError(f"unknown head {head!r}: choose one of {', '.join(HEAD_OUTPUTS)}")
    if head == "classification" and cfg.is_regression:
        head = "regression"
    if head == "regression" and not cfg.is_regression:
        raise ConfigError(f"head 'regression' needs a checkpoint with one label; this one has {cfg.num_labels}")
    return head


def load_for_head(path: str | Path, head: str | None = None):
    """(model, checkpoint, head): the model built for `head` (regression uses the classification module)."""
    from debx.checkpoint import load_model

    if head is not None and head not in HEAD_OUTPUTS:
        raise ConfigError(f"unknown head {head!r}: choose one of {', '.join(HEAD_OUTPUTS)}")
    model, ckpt = load_model(path, "classification" if head == "regression" else head)
    return model, ckpt, resolve_head(ckpt.config, ckpt.head, head)


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, path: str | Path, head: str | None = None, threads: int | None = None, model=None,
                 checkpoint=None, device: str | None = None, gi_max_scope: str | None = None) -> None:
        """path: checkpoint folder. model/checkpoint: an already loaded (model, Checkpoint) to reuse.
        device: cpu (default), cuda, cuda:N or auto (cuda when PyTorch sees a GPU, else cpu).
        gi_max_scope: giMLP models, "batch" | "example" in place of the checkpoint's own (debx.model)."""
        super().__init__()
        from debx.device import check_device_name

        check_at_least("--threads", threads)
        self.path = Path(path)
        self.head = head
        self.threads = threads
        self.model, self.checkpoint = model, checkpoint
        self.device_name = check_device_name(device or "cpu")
        self.device = None  # the torch.device, once activated
        self.gi_max_scope = gi_max_scope

    def activate_impl(self) -> None:
        import torch

        from debx.device import resolve_device

        self.device = resolve_device(self.device_name)
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.model is None:
            self.model, self.checkpoint, self.head = load_for_head(self.path, self.head)
        else:
            self.head = resolve_head(self.checkpoint.config, self.checkpoint.head, self.head)
        if self.gi_max_scope is not None:
            self.checkpoint.config.set_gi_max_scope(self.gi_max_scope)
        self.model = self.model.to(self.device).eval()

    @property
    def config(self):
        return self.checkpoint.config

    @property
    def input_names(self) -> list[str]:
        return input_names(self.config.type_vocab_size)

    @property
    def output_names(self) -> list[str]:
        return [HEAD_OUTPUTS[self.head][0]]

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)).to(self.device)
                for k, v in self.select_feeds(feeds).items()}
        with torch.inference_mode():
            out = self.model(args["input_ids"], args["attention_mask"], args.get("token_type_ids"))
        return {self.output_names[0]: out.float().cpu().numpy()}

    def describe(self) -> dict:
        import torch

        from debx.device import describe_device

        return {"runner": self.name, "backend": f"torch {torch.__version__}", "precision": "fp32",
                "device": describe_device(self.device) if self.device is not None else self.device_name,
                "checkpoint": str(self.path), "head": self.head,
                **({"gi_max_scope": self.config.gi_max_scope} if self.checkpoint and self.config.gated_layers() else {})}

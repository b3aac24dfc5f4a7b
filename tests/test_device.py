"""debx on CUDA machines, checked on the CPU: device resolution, the DDP backend/device choice, autocast training,
the ONNX Runtime provider refusal, and that everything the model builds follows the model's device.

Tests that need a real GPU are marked @pytest.mark.gpu (deselected in CI); scripts/gpu_smoke.sh is the end-to-end
check on a GPU machine.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _MixedDevices(TorchDispatchMode):
    """Records every aten op whose tensor arguments sit on more than one device (0-dim CPU scalars excepted, as
    PyTorch itself allows them next to CUDA tensors)."""

    def __init__(self):
        super().__init__()
        self.mixed: list[tuple[str, set[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        devices = {t.device.type for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if len(devices) > 1:
            self.mixed.append((str(func), devices))
        return func(*args, **kwargs)


def test_model_builds_everything_on_its_own_device():
    """On the meta device (a stand-in for cuda here), no op of the forward pass mixes in a CPU-made tensor:
    relative index tables, masks and position ids follow the model. Before the fix, disentangled_attention without a
    precomputed index gathered with a CPU index (a device error on CUDA)."""
    from debx.model import DebertaForSequenceClassification, disentangled_attention
    from debx.presets import preset

    cfg = preset("tiny", vocab_size=100, num_labels=2)
    model = DebertaForSequenceClassification(cfg).to("meta")
    ids = torch.ones(2, 7, dtype=torch.long, device="meta")
    q = torch.empty(2, 7, cfg.hidden_size, device="meta")
    pos = torch.empty(2 * cfg.span, cfg.hidden_size, device="meta")
    with _MixedDevices() as mode:
        logits = model(ids, torch.ones_like(ids), torch.zeros_like(ids))
        out = disentangled_attention(q, q, q, pos, pos, torch.ones(2, 7, device="meta"),
                                     num_heads=cfg.num_attention_heads, scale=1.0, span=cfg.span,
                                     position_buckets=cfg.buckets, max_relative_positions=cfg.max_relative)
    assert mode.mixed == []
    assert logits.device.type == "meta" and out.device.type == "meta"
